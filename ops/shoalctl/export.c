/* export.c: `shoalctl export RUN --step K --out DIR`: the committed checkpoint of step K of a
 * run, assembled from its shard dirs (the paths the coordinator's manifest records, read on this
 * machine) into one Hugging Face model directory (checkpoint/ckpt_export.h). */
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ckpt.h"
#include "ckpt_export.h"
#include "ctl_reply.h"
#include "fsutil.h"
#include "numparse.h"
#include "sha256.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl export RUN --step K --out DIR [--dtype f32|bf16] [--max-shard-bytes N]\n"
    "                      [--json]\n"
    "  Writes the committed checkpoint of step K (or 'latest') of RUN as a Hugging Face model\n"
    "  directory: config.json and model.safetensors, or model-0000i-of-0000n.safetensors with\n"
    "  model.safetensors.index.json when the weights pass --max-shard-bytes (default 5000000000).\n"
    "  --dtype f32 (default) keeps the trained values bit for bit; bf16 rounds to nearest even\n"
    "  (the balancing biases stay F32). Every shard dir of the step's manifest is read from this\n"
    "  machine's file system and verified against the manifest first. DIR must not exist (or be\n"
    "  empty); it appears complete or not at all.\n";

/* The shard dir `dir` is the one the coordinator committed: every file it recorded has the
 * recorded size and SHA-256 (the manifest by its digest, the others as the dir's manifest lists
 * them; ckpt_export then checks them against it). */
static shoal_err_t s_check_recorded(const char *dir, const json_t *files, ckpt_manifest_t *m)
{
    shoal_err_t rc = ckpt_manifest_read(dir, m);
    size_t i;
    const json_t *f;
    json_array_foreach(files, i, f)
    {
        if (rc != SHOAL_OK)
            break;
        const char *name = ctl_json_str(f, "name", "");
        const char *want = ctl_json_str(f, "sha256", "");
        long long size = ctl_json_int(f, "size", -1);
        char hex[SHA256_HEX_LEN + 1] = "", path[PATH_MAX];
        uint64_t got_size = 0;
        if (strcmp(name, CKPT_MANIFEST_NAME) == 0) {
            uint8_t d[SHA256_LEN];
            if ((rc = fsutil_path(path, sizeof path, "%s/%s", dir, name)) != SHOAL_OK ||
                (rc = sha256_file(path, d, &got_size)) != SHOAL_OK)
                break;
            sha256_hex(d, hex);
        }
        for (int k = 0; !hex[0] && k < m->n_files; k++)
            if (strcmp(m->files[k].name, name) == 0) {
                snprintf(hex, sizeof hex, "%s", m->files[k].sha256);
                got_size = m->files[k].size;
            }
        if (!hex[0] || strcasecmp(hex, want) != 0 || (long long)got_size != size)
            rc = shoal_fail(SHOAL_ERR_FORMAT,
                            "%s/%s is not the file the coordinator committed (size or SHA-256 "
                            "differ: the step was written again?)",
                            dir, name);
    }
    return rc;
}

/* The distinct shard dirs of a manifest, in its order, each checked; *dirs malloc'd (borrowed
 * strings from the manifest). Returns the exit code. */
static int s_shard_dirs(const ctl_opts_t *o, const json_t *manifest, const char ***dirs, int *n)
{
    const json_t *shards = json_object_get(manifest, CTL_F_SHARDS);
    ckpt_manifest_t *m = malloc(sizeof *m);
    *n = 0;
    *dirs = calloc(json_array_size(shards) + 1, sizeof **dirs);
    if (!m || !*dirs) {
        free(m);
        return ctl_error(o, "out of memory");
    }
    int ex = json_array_size(shards) ? CTL_EXIT_OK
                                     : ctl_error(o, "the manifest lists no shards");
    size_t i;
    const json_t *s;
    json_array_foreach(shards, i, s)
    {
        const char *path = ctl_json_str(s, CTL_F_PATH, "");
        const json_t *cell = json_object_get(s, CTL_F_CELL);
        int seen = 0;
        for (int k = 0; k < *n; k++)
            seen |= strcmp((*dirs)[k], path) == 0;
        if (ex != CTL_EXIT_OK || seen)
            continue;
        if (path[0] != '/' || access(path, R_OK | X_OK) != 0) {
            ex = ctl_error(o,
                           "shard of %s (cell r%lld/s%lld/e%lld) is at %s on its holder %s, not "
                           "readable here: export reads the shard dirs from this machine's "
                           "file system",
                           ctl_json_str(s, CTL_F_WORKER, "?"), ctl_json_int(cell, CTL_F_REPLICA, -1),
                           ctl_json_int(cell, CTL_F_STAGE, -1), ctl_json_int(cell, CTL_F_EP_RANK, -1),
                           path[0] ? path : "(no path)", ctl_json_str(s, CTL_F_HOLDER, "?"));
            continue;
        }
        if (s_check_recorded(path, json_object_get(s, "files"), m) != SHOAL_OK) {
            ex = ctl_error(o, "%s", shoal_errmsg());
            continue;
        }
        (*dirs)[(*n)++] = path;
    }
    free(m);
    return ex;
}

int ctl_export_step(const ctl_opts_t *o, const char *run, int64_t step, const char *out,
                    const ckpt_export_opts_t *opts, ctl_export_result_t *res)
{
    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    const char **dirs = NULL;
    int n = 0;
    int ex = ctl_manifest_request(o, run, step, &reply, &doc);
    if (ex != CTL_EXIT_OK)
        goto out;
    const json_t *manifest = json_object_get(doc, CTL_F_MANIFEST);
    if ((ex = s_shard_dirs(o, manifest, &dirs, &n)) != CTL_EXIT_OK)
        goto out;
    if (ckpt_export(dirs, n, out, opts) != SHOAL_OK) {
        ex = ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    res->step = ctl_json_int(doc, CTL_F_STEP, step);
    res->n_dirs = n;
    snprintf(res->run, sizeof res->run, "%s", ctl_json_str(doc, CTL_F_RUN, run));
out:
    free(dirs);
    json_decref(doc);
    ctl_reply_fini(&reply);
    return ex;
}

int cmd_export(ctl_opts_t *o, int argc, char **argv)
{
    const char *step_s = NULL, *out = NULL, *dtype = "f32", *max_s = NULL, *run = NULL;
    const ctl_optdef_t defs[] = {{"step", true, &step_s, NULL},
                                 {"out", true, &out, NULL},
                                 {"dtype", true, &dtype, NULL},
                                 {"max-shard-bytes", true, &max_s, NULL},
                                 {NULL, false, NULL, NULL}};
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, "RUN", &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    int64_t step = 0;
    ckpt_export_opts_t opts = {0};
    if (!step_s || (strcmp(step_s, "latest") != 0 &&
                    numparse_i64(step_s, 1, INT64_MAX, &step) != SHOAL_OK))
        return ctl_usage_error(o, s_usage, "--step: expected a step >= 1 or 'latest'");
    if (!out || !out[0])
        return ctl_usage_error(o, s_usage, "--out DIR is required");
    if (strcmp(dtype, "f32") != 0 && strcmp(dtype, "bf16") != 0)
        return ctl_usage_error(o, s_usage, "--dtype: expected f32 or bf16, got '%s'", dtype);
    opts.dtype = strcmp(dtype, "bf16") == 0 ? CKPT_EXPORT_BF16 : CKPT_EXPORT_F32;
    if (max_s && numparse_u64(max_s, UINT64_MAX, &opts.max_shard_bytes) != SHOAL_OK)
        return ctl_usage_error(o, s_usage, "--max-shard-bytes: expected a byte count");
    if (max_s && opts.max_shard_bytes == 0)
        return ctl_usage_error(o, s_usage, "--max-shard-bytes: must be > 0");

    ctl_export_result_t res = {0};
    if ((ex = ctl_export_step(o, run, step, out, &opts, &res)) != CTL_EXIT_OK)
        return ex;
    if (o->json) {
        json_t *doc = json_pack("{s:s, s:I, s:s, s:s, s:i}", CTL_F_RUN, res.run, CTL_F_STEP,
                                (json_int_t)res.step, "out", out, "dtype", dtype, CTL_F_SHARDS,
                                res.n_dirs);
        ctl_print_json(doc);
        json_decref(doc);
    } else {
        printf("exported run %s step %lld from %d shard dir(s) to %s (%s)\n", res.run,
               res.step, res.n_dirs, out, dtype);
    }
    return CTL_EXIT_OK;
}
