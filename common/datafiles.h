/* datafiles.h: the files a run's data.files names, in the order the trainer reads them: a path
 * that is a file is itself; a directory contributes its regular files (not hidden, not ending in
 * .dat or .u8) in name order. One rule for the corpus (worker/data.c) and the data manifest of a
 * release (shoalctl release), so that what is published is what was read. */
#ifndef SHOAL_DATAFILES_H
#define SHOAL_DATAFILES_H

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int n;
    char **paths; /* n malloc'd paths, owned */
} datafiles_t;

/* Expands paths[0..n_paths) into *out (which the caller finis, also after an error).
 * SHOAL_ERR_NOTFOUND names a path that does not exist or a directory without text files;
 * SHOAL_ERR_NOMEM on out of memory. */
shoal_err_t datafiles_list(const char *const *paths, int n_paths, datafiles_t *out);

/* Frees the list; idempotent. */
void datafiles_fini(datafiles_t *f);

#ifdef __cplusplus
}
#endif
#endif
