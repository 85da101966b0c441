/* release_card.c: a release's data manifest (files, sizes, SHA-256, seed), its check against
 * this machine's files, and the model card (README.md) written from everything released. */
#include "release.h"

#include <dirent.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "datafiles.h"
#include "fsutil.h"
#include "sha256.h"

static shoal_err_t s_file_digest(const char *path, char hex[SHA256_HEX_LEN + 1], uint64_t *size)
{
    uint8_t d[SHA256_LEN];
    shoal_err_t rc = sha256_file(path, d, size);
    if (rc == SHOAL_OK)
        sha256_hex(d, hex);
    return rc;
}

shoal_err_t release_data_manifest(const runspec_t *spec, json_t **out)
{
    const char *paths[RUNSPEC_MAX_FILES];
    for (int i = 0; i < spec->n_data_files; i++)
        paths[i] = spec->data_files[i];
    datafiles_t files;
    shoal_err_t rc = datafiles_list(paths, spec->n_data_files, &files);
    json_t *arr = json_array();
    uint64_t total = 0;
    if (rc == SHOAL_OK && !arr)
        rc = shoal_fail(SHOAL_ERR_NOMEM, "data manifest: out of memory");
    for (int i = 0; rc == SHOAL_OK && i < files.n; i++) {
        char hex[SHA256_HEX_LEN + 1];
        uint64_t size = 0;
        if ((rc = s_file_digest(files.paths[i], hex, &size)) != SHOAL_OK)
            break;
        total += size;
        if (json_array_append_new(arr, json_pack("{s:s, s:I, s:s}", "path", files.paths[i],
                                                 "size", (json_int_t)size, "sha256", hex)) != 0)
            rc = shoal_fail(SHOAL_ERR_NOMEM, "data manifest: out of memory");
    }
    datafiles_fini(&files);
    if (rc == SHOAL_OK &&
        !(*out = json_pack("{s:I, s:I, s:I, s:O}", "seed", (json_int_t)spec->data_seed,
                           "total_bytes", (json_int_t)total, "n_files", (json_int_t)json_array_size(arr),
                           "files", arr)))
        rc = shoal_fail(SHOAL_ERR_NOMEM, "data manifest: out of memory");
    json_decref(arr);
    return rc;
}

shoal_err_t release_check_data(const runspec_t *spec, const json_t *manifest)
{
    json_t *here = NULL;
    shoal_err_t rc = release_data_manifest(spec, &here);
    if (rc != SHOAL_OK)
        return rc;
    const json_t *want = json_object_get(manifest, "files"), *got = json_object_get(here, "files");
    const json_t *seed = json_object_get(manifest, "seed");
    if (!json_is_integer(seed) || (uint64_t)json_integer_value(seed) != spec->data_seed)
        rc = shoal_fail(SHOAL_ERR_FORMAT, "data manifest: seed differs from the spec's data.seed "
                        "%" PRIu64, spec->data_seed);
    else if (!json_is_array(want) || json_array_size(want) != json_array_size(got))
        rc = shoal_fail(SHOAL_ERR_FORMAT, "data manifest lists %zu file(s), the spec's data.files "
                        "name %zu here", json_array_size(want), json_array_size(got));
    for (size_t i = 0; rc == SHOAL_OK && i < json_array_size(got); i++) {
        const json_t *w = json_array_get(want, i), *g = json_array_get(got, i);
        const char *wp = json_string_value(json_object_get(w, "path"));
        const char *ws = json_string_value(json_object_get(w, "sha256"));
        if (!wp || !ws || strcmp(wp, json_string_value(json_object_get(g, "path"))) != 0)
            rc = shoal_fail(SHOAL_ERR_FORMAT, "data manifest file %zu is %s, here %s", i + 1,
                            wp ? wp : "(none)", json_string_value(json_object_get(g, "path")));
        else if (!json_equal(json_object_get(w, "size"), json_object_get(g, "size")) ||
                 strcasecmp(ws, json_string_value(json_object_get(g, "sha256"))) != 0)
            rc = shoal_fail(SHOAL_ERR_FORMAT, "data file %s differs from the release's (size or "
                            "SHA-256)", wp);
    }
    json_decref(here);
    return rc;
}

/* ---- model card ------------------------------------------------------------------------ */

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The digest table of the release dir's files (README.md itself excepted). */
static shoal_err_t s_files_table(FILE *f, const char *dir)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return shoal_fail(SHOAL_ERR_IO, "release dir %s: cannot list", dir);
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL && n < 64)
        if (e->d_name[0] != '.' && strcmp(e->d_name, RELEASE_CARD) != 0)
            names[n++] = strdup(e->d_name);
    closedir(dp);
    shoal_err_t rc = SHOAL_OK;
    for (int i = 0; i < n; i++)
        if (!names[i])
            rc = shoal_fail(SHOAL_ERR_NOMEM, "release dir: out of memory");
    if (rc == SHOAL_OK)
        qsort(names, (size_t)n, sizeof *names, s_cmp_str);
    fprintf(f, "| file | bytes | SHA-256 |\n| --- | ---: | --- |\n");
    for (int i = 0; rc == SHOAL_OK && i < n; i++) {
        char path[PATH_MAX], hex[SHA256_HEX_LEN + 1];
        uint64_t size = 0;
        if ((rc = fsutil_path(path, sizeof path, "%s/%s", dir, names[i])) == SHOAL_OK &&
            (rc = s_file_digest(path, hex, &size)) == SHOAL_OK)
            fprintf(f, "| `%s` | %" PRIu64 " | `%s` |\n", names[i], size, hex);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    return rc;
}

static void s_card_results(FILE *f, const runlog_t *log)
{
    if (log->n_points == 0) {
        fprintf(f, "No per-step metrics were given to the release.\n\n");
        return;
    }
    const runlog_point_t *first = &log->points[0], *last = &log->points[log->n_points - 1];
    double tps = 0;
    for (int i = 0; i < log->n_points; i++)
        tps += log->points[i].tokens_per_s;
    fprintf(f,
            "| | |\n| --- | --- |\n| steps with metrics | %d (%lld to %lld) |\n"
            "| loss at step %lld | %.4f |\n| loss at step %lld | %.4f |\n"
            "| mean throughput | %.0f tokens/s |\n\n",
            log->n_points, first->step, last->step, first->step, first->loss, last->step,
            last->loss, tps / log->n_points);
    if (runlog_has_times(log)) { /* the coordinator's history: every row has its commit time */
        char took[48];
        ctl_format_duration((double)(last->time_ms - first->time_ms) / 1000.0, took, sizeof took);
        fprintf(f, "Steps %lld to %lld took %s of wall time (the coordinator's commit times, in "
                   "`" RELEASE_METRICS_JSONL "` as `time_ms`).\n\n",
                first->step, last->step, took);
    }
}

static void s_card_plans(FILE *f, const json_t *plans)
{
    fprintf(f, "| generation | from step | dp x pp x ep | workers | reason |\n"
               "| ---: | ---: | --- | --- | --- |\n");
    size_t i;
    const json_t *e;
    json_array_foreach(plans, i, e)
    {
        const json_t *d = json_object_get(e, "detail");
        char *workers = json_dumps(json_object_get(d, "workers"), JSON_COMPACT | JSON_ENCODE_ANY);
        const char *reason = json_string_value(json_object_get(d, "reason"));
        fprintf(f, "| %lld | %lld | %lld x %lld x %lld | %s | %s |\n",
                (long long)json_integer_value(json_object_get(d, "generation")),
                (long long)json_integer_value(json_object_get(d, "start_step")),
                (long long)json_integer_value(json_object_get(d, "dp")),
                (long long)json_integer_value(json_object_get(d, "pp")),
                (long long)json_integer_value(json_object_get(d, "ep")),
                workers ? workers : "[]", reason ? reason : "");
        free(workers);
    }
    fprintf(f, "\n");
}

shoal_err_t release_card_text(const release_card_t *c, char **out)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return shoal_fail(SHOAL_ERR_NOMEM, "model card: out of memory");
    const runspec_t *s = c->spec;
    const model_config_t *m = &s->model;
    fprintf(f, "---\nlibrary_name: shoal\nlicense: other\ntags:\n- moe\n- deepseek-v3-style\n"
               "- fully-open\n---\n\n");
    fprintf(f, "# %s\n\nA Mixture-of-Experts language model trained by shoal in the open: this "
               "directory holds its weights, the run spec, the data manifest, the metrics of every "
               "step, the plan history and the verified ledger of every decision of run `%s`. "
               "Every figure below is generated from those files.\n\n", c->run_name, c->run_id);
    fprintf(f, "## Model\n\n| | |\n| --- | --- |\n| preset | %s |\n| layers | %d |\n"
               "| hidden size | %d |\n| attention heads | %d |\n| routed experts | %d (top %d) |\n"
               "| shared experts | %d |\n| vocabulary | %d (bytes) |\n"
               "| weights | `" RELEASE_WEIGHTS "` (F32), `" RELEASE_CONFIG "` |\n\n",
            s->model_preset, m->num_hidden_layers, m->hidden_size, m->num_attention_heads,
            m->n_routed_experts, m->num_experts_per_tok, m->n_shared_experts, m->vocab_size);
    fprintf(f, "## Training\n\n| | |\n| --- | --- |\n| steps | %d |\n| global batch | %d "
               "sequences of %d tokens |\n| learning rate | %g (min %g, warmup %d steps) |\n"
               "| init seed | %" PRIu64 " |\n| gradient sums | %s |\n| released checkpoint | step "
               "%lld |\n\nThe full spec is `" RELEASE_SPEC "`.\n\n",
            s->steps, s->global_batch, s->seq_len, s->lr, s->min_lr, s->warmup_steps,
            s->init_seed, s->grad_sum, c->step);
    fprintf(f, "## Data\n\nData order seed %" PRIu64 "; %lld file(s), %lld bytes "
               "(`" RELEASE_DATA_MANIFEST "` lists each with its SHA-256).\n\n"
               "| file | bytes | SHA-256 |\n| --- | ---: | --- |\n",
            s->data_seed, (long long)json_integer_value(json_object_get(c->data, "n_files")),
            (long long)json_integer_value(json_object_get(c->data, "total_bytes")));
    size_t i;
    const json_t *df;
    json_array_foreach(json_object_get(c->data, "files"), i, df)
    {
        if (i == 20) {
            fprintf(f, "| ... | | |\n");
            break;
        }
        fprintf(f, "| `%s` | %lld | `%s` |\n", json_string_value(json_object_get(df, "path")),
                (long long)json_integer_value(json_object_get(df, "size")),
                json_string_value(json_object_get(df, "sha256")));
    }
    fprintf(f, "\n## Results\n\nPer-step metrics: `" RELEASE_METRICS_JSONL "`, `" RELEASE_METRICS_CSV
               "`.\n\n");
    s_card_results(f, c->log);
    fprintf(f, "## Plan history\n\nEvery placement of the run (`" RELEASE_PLANS "`):\n\n");
    s_card_plans(f, c->plans);
    const json_t *ok = json_object_get(c->verify, "ok");
    fprintf(f, "## Ledger\n\n`" RELEASE_LEDGER "` holds the run's %lld ledger entries, each "
               "carrying the SHA-256 of the one before; the last is `%s`. The coordinator "
               "verified the chain at release: %s (`" RELEASE_VERIFY "`).\n\n",
            c->ledger_entries, c->ledger_head, json_is_true(ok) ? "intact" : "NOT intact");
    const json_t *sig = json_object_get(c->verify, "signatures");
    if (c->pubkey_hex && c->pubkey_hex[0])
        fprintf(f, "Every entry is signed by the coordinator (Ed25519, public key `%s` in "
                   "`" RELEASE_PUBKEY "`): %s at release. Anyone can check the chain and the "
                   "signatures offline:\n\n```\nshoalctl verify --ledger " RELEASE_LEDGER_EXPORT
                   " --pubkey " RELEASE_PUBKEY "\n```\n\n",
                c->pubkey_hex,
                json_is_true(json_object_get(sig, "ok")) ? "all verified"
                                                         : "NOT all verified (see the document)");
    fprintf(f, "## Reproduce\n\n```\nshoalctl replay DIR --workers N\n```\n\nretrains this run "
               "from `" RELEASE_SPEC "` on N local workers after checking the data files against "
               "the manifest, and checks that the weights are byte-identical to `" RELEASE_WEIGHTS
               "`. %s\n\n## Files\n\n",
            runspec_grad_sum_exact(s)
                ? "Any N: the gradient sums are exact, so the bytes do not depend on the topology."
                : "This run summed gradients in float (train.grad_sum: float): the bytes are "
                  "reproduced only with the run's own plan history.");
    shoal_err_t rc = s_files_table(f, c->dir);
    if (fclose(f) != 0 && rc == SHOAL_OK)
        rc = shoal_fail(SHOAL_ERR_NOMEM, "model card: out of memory");
    if (rc != SHOAL_OK) {
        free(text);
        return rc;
    }
    *out = text;
    return SHOAL_OK;
}
