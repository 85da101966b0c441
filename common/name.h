/* name.h: the one rule for names that become file and directory names (run names, worker
 * names, run ids): one or more of [A-Za-z0-9._-], not starting with '.'. So a name is never
 * ".", "..", a hidden file or a path, and reads the same in a shell, a URL and a log line.
 * Length is the holder's business (the size of its buffer or wire field). */
#ifndef SHOAL_NAME_H
#define SHOAL_NAME_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The rule in words, for error messages and help texts. */
#define NAME_RULE "[A-Za-z0-9._-]+, not starting with '.'"

/* Whether `s` (NUL-terminated, not NULL) follows the rule above. */
bool name_ok(const char *s);

/* Worker ids are "w" and digits (the coordinator assigns them); no worker NAME may take that
 * form, so that an operator's argument never means one worker's id and another's name. */
#define NAME_ID_FORM_RULE "a worker name must not have the form of a worker id (w followed by digits)"
bool name_has_id_form(const char *s);

#ifdef __cplusplus
}
#endif
#endif
