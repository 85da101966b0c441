/* replay.c: `shoalctl replay DIR [--workers N]`: retrains a release from its spec on a local
 * cluster (`shoalctl up`, any number of workers) after checking the data files against the
 * release's manifest, and checks that the weights come out byte-identical to the published
 * ones. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "numparse.h"
#include "release.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl replay DIR [--workers N] [--time-limit SECONDS] [--keep]\n"
    "  Retrains the release in DIR (written by `shoalctl release`) from its spec.yaml on a\n"
    "  local coordinator and N workers (default 2; any number: with exact gradient sums the\n"
    "  bytes do not depend on it), after checking every data file against data_manifest.json,\n"
    "  then compares the new model.safetensors and config.json with DIR's byte for byte.\n"
    "  --keep keeps the retrained model (its path is printed). Exit 0 when identical, 1 when\n"
    "  not (the first differing byte is printed) or when the retraining failed.\n";

/* Whether two files hold the same bytes; *diff_at receives the first differing offset. */
static shoal_err_t s_same_bytes(const char *a, const char *b, int *same, size_t *diff_at)
{
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    shoal_err_t rc = fsutil_read_file(a, &x, &nx);
    if (rc == SHOAL_OK)
        rc = fsutil_read_file(b, &y, &ny);
    if (rc == SHOAL_OK) {
        size_t i = 0, n = nx < ny ? nx : ny;
        while (i < n && x[i] == y[i])
            i++;
        *same = nx == ny && i == n;
        *diff_at = i;
    }
    free(x);
    free(y);
    return rc;
}

/* DIR's spec, checked against the data manifest (*n_files: the files it lists). Returns the
 * exit code. */
static int s_check_release(const ctl_opts_t *o, const char *dir, runspec_t *spec,
                           char *spec_path, size_t cap, size_t *n_files)
{
    char manifest_path[PATH_MAX];
    if (fsutil_path(spec_path, cap, "%s/" RELEASE_SPEC, dir) != SHOAL_OK ||
        fsutil_path(manifest_path, sizeof manifest_path, "%s/" RELEASE_DATA_MANIFEST, dir) !=
            SHOAL_OK ||
        runspec_load_file(spec_path, spec) != SHOAL_OK)
        return ctl_error(o, "%s", shoal_errmsg());
    json_error_t jerr;
    json_t *manifest = json_load_file(manifest_path, 0, &jerr);
    if (!json_is_object(manifest)) {
        json_decref(manifest);
        return ctl_error(o, "%s:%d: %s", manifest_path, jerr.line,
                         jerr.text[0] ? jerr.text : "not a JSON object");
    }
    shoal_err_t rc = release_check_data(spec, manifest);
    *n_files = json_array_size(json_object_get(manifest, "files"));
    json_decref(manifest);
    if (rc != SHOAL_OK)
        return ctl_error(o, "%s", shoal_errmsg());
    return CTL_EXIT_OK;
}

int cmd_replay(ctl_opts_t *o, int argc, char **argv)
{
    const char *workers = "2", *limit = NULL, *dir = NULL;
    bool keep = false;
    const ctl_optdef_t defs[] = {{"workers", true, &workers, NULL},
                                 {"time-limit", true, &limit, NULL},
                                 {"keep", false, NULL, &keep},
                                 {NULL, false, NULL, NULL}};
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, "DIR", &dir);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    int64_t n_workers;
    if (numparse_i64(workers, 1, 64, &n_workers) != SHOAL_OK)
        return ctl_usage_error(o, s_usage, "--workers: expected 1..64, got '%s'", workers);

    runspec_t *spec = malloc(sizeof *spec);
    char spec_path[PATH_MAX], tmp[PATH_MAX] = "", model[PATH_MAX];
    if (!spec)
        return ctl_error(o, "out of memory");
    size_t n_files = 0;
    if ((ex = s_check_release(o, dir, spec, spec_path, sizeof spec_path, &n_files)) !=
        CTL_EXIT_OK)
        goto out;
    printf("replay: %zu data file(s) match the manifest; retraining run %s (%d steps) on %lld "
           "worker(s)\n", n_files, spec->name, spec->steps, (long long)n_workers);
    fflush(stdout);
    const char *base = getenv("TMPDIR");
    ex = CTL_EXIT_ERROR;
    if (fsutil_path(tmp, sizeof tmp, "%s/shoal-replay-XXXXXX",
                    base && *base && strlen(base) < 60 ? base : "/tmp") != SHOAL_OK ||
        !mkdtemp(tmp)) {
        ctl_error(o, "creating a temp dir: %s", strerror(errno));
        tmp[0] = 0;
        goto out;
    }
    if (fsutil_path(model, sizeof model, "%s/model", tmp) != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    /* `up` runs the cluster: the same code path a user's local run takes. */
    char nbuf[24];
    snprintf(nbuf, sizeof nbuf, "%lld", (long long)n_workers);
    char *up_argv[] = {"up", "--workers", nbuf, "--out", model, spec_path,
                       limit ? "--time-limit" : NULL, (char *)limit, NULL};
    ctl_opts_t up_o = *o;
    up_o.verb = "up";
    up_o.json = false;
    if ((ex = cmd_up(&up_o, limit ? 8 : 6, up_argv)) != CTL_EXIT_OK) {
        ctl_error(o, "retraining failed");
        goto out;
    }
    const char *names[] = {RELEASE_WEIGHTS, RELEASE_CONFIG};
    for (int i = 0; i < 2 && ex == CTL_EXIT_OK; i++) {
        char a[PATH_MAX], b[PATH_MAX];
        int same = 0;
        size_t at = 0;
        if (fsutil_path(a, sizeof a, "%s/%s", dir, names[i]) != SHOAL_OK ||
            fsutil_path(b, sizeof b, "%s/%s", model, names[i]) != SHOAL_OK ||
            s_same_bytes(a, b, &same, &at) != SHOAL_OK)
            ex = ctl_error(o, "%s", shoal_errmsg());
        else if (!same)
            ex = ctl_error(o, "%s differs from the release's: first at byte %zu", names[i], at);
        else
            printf("replay: %s byte-identical to the release's\n", names[i]);
    }
    if (ex == CTL_EXIT_OK)
        printf("replay: run %s reproduced on %lld worker(s)\n", spec->name, (long long)n_workers);
    if (keep)
        printf("replay: retrained model kept in %s\n", model);
out:
    if (tmp[0] && !keep)
        (void)fsutil_remove_tree(tmp);
    free(spec);
    return ex;
}
