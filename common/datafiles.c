/* datafiles.c: expands a run's data.files into the ordered list of files the trainer reads. */
#include "datafiles.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int s_has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static shoal_err_t s_push(datafiles_t *f, int *cap, const char *path)
{
    if (f->n == *cap) {
        int ncap = *cap ? *cap * 2 : 64;
        char **np = realloc(f->paths, (size_t)ncap * sizeof *np);
        if (!np)
            return shoal_fail(SHOAL_ERR_NOMEM, "data files: out of memory");
        f->paths = np;
        *cap = ncap;
    }
    if (!(f->paths[f->n] = strdup(path)))
        return shoal_fail(SHOAL_ERR_NOMEM, "data files: out of memory");
    f->n++;
    return SHOAL_OK;
}

static shoal_err_t s_add_dir(datafiles_t *f, int *cap, const char *dir)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "data directory %s: %s", dir, strerror(errno));
    const int first = f->n;
    shoal_err_t rc = SHOAL_OK;
    struct dirent *e;
    while (rc == SHOAL_OK && (e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.' || s_has_suffix(e->d_name, ".dat") ||
            s_has_suffix(e->d_name, ".u8"))
            continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            rc = s_push(f, cap, path);
    }
    closedir(dp);
    if (rc == SHOAL_OK && f->n == first)
        rc = shoal_fail(SHOAL_ERR_NOTFOUND, "data directory %s: no text files", dir);
    if (rc == SHOAL_OK)
        qsort(f->paths + first, (size_t)(f->n - first), sizeof *f->paths, s_cmp_str);
    return rc;
}

shoal_err_t datafiles_list(const char *const *paths, int n_paths, datafiles_t *out)
{
    *out = (datafiles_t){0};
    int cap = 0;
    shoal_err_t rc = SHOAL_OK;
    for (int i = 0; i < n_paths && rc == SHOAL_OK; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0)
            rc = shoal_fail(SHOAL_ERR_NOTFOUND, "data file %s: %s", paths[i], strerror(errno));
        else if (S_ISDIR(st.st_mode))
            rc = s_add_dir(out, &cap, paths[i]);
        else
            rc = s_push(out, &cap, paths[i]);
    }
    return rc;
}

void datafiles_fini(datafiles_t *f)
{
    for (int i = 0; f && i < f->n; i++)
        free(f->paths[i]);
    if (f) {
        free(f->paths);
        *f = (datafiles_t){0};
    }
}
