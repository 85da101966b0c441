/* release.c: `shoalctl release RUN --out DIR --spec RUN.yaml [--metrics FILES]`: the fully open
 * release of a finished run in one directory: the final weights as a Hugging Face model
 * (export), the run spec (checked against the ledger's digest of what was submitted), the data
 * manifest, per-step metrics (JSONL and CSV, from the coordinator's per-step history with each
 * step's commit time, or from the workers' --metrics files), the plan history, the ledger as
 * verified by the coordinator, and a model card written from all of these. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "ctl_reply.h"
#include "fsutil.h"
#include "ledger_chain.h"
#include "lr_schedule.h"
#include "release.h"
#include "sha256.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl release RUN --out DIR --spec RUN.yaml [--metrics FILE[,FILE...]] [--json]\n"
    "  Writes the open release of the finished run RUN to DIR (which must not exist):\n"
    "  model.safetensors and config.json (its last committed checkpoint, F32), spec.yaml,\n"
    "  data_manifest.json (every data file with its size and SHA-256, and the data order's\n"
    "  seed), metrics.jsonl and metrics.csv (one row a committed step with its wall time,\n"
    "  from the coordinator's history; --metrics merges the workers' --metrics files\n"
    "  instead, rows without time), plan_history.json, ledger.jsonl with\n"
    "  ledger_verification.json (the coordinator's check of the hash chain: a broken ledger\n"
    "  is refused), and README.md.\n"
    "  --spec is the file RUN was submitted from; its SHA-256 must match the ledger's.\n"
    "  The checkpoint's shard dirs and the data files are read from this machine.\n";

typedef struct {
    const ctl_opts_t *o;
    char run_id[64], run_name[128];
    long long step;
    runspec_t spec;
    char *spec_text;
    json_t *events, *verify, *plans, *data;
    char pubkey_hex[2 * LEDGER_PUBKEY_LEN + 1];
    runlog_t log;
} s_release_t;

int release_fetch_ledger(const ctl_opts_t *o, const char *run, json_t **events)
{
    ctl_client_t *c = ctl_connect(o);
    if (!c || !(*events = json_array())) {
        ctl_client_destroy(&c);
        return CTL_EXIT_ERROR;
    }
    uint64_t since = 0;
    int ex = CTL_EXIT_OK;
    for (size_t got = 1000; ex == CTL_EXIT_OK && got >= 1000;) {
        json_t *doc = NULL;
        ex = ctl_events_page(o, c, run, since, 0, &doc);
        const json_t *page = json_object_get(doc, CTL_F_EVENTS);
        got = json_array_size(page);
        size_t i;
        json_t *e;
        json_array_foreach(page, i, e)
        {
            json_array_append(*events, e);
            since = (uint64_t)ctl_json_int(e, CTL_F_SEQ, (long long)since);
        }
        json_decref(doc);
    }
    ctl_client_destroy(&c);
    return ex;
}

/* The run: finished, with a committed checkpoint. */
static int s_fetch_run(s_release_t *r, const char *run)
{
    ctl_reply_t reply = {0};
    json_t *doc = NULL, *norm = NULL;
    int ex = ctl_request(r->o, ctl_client_status, run, &reply, &doc);
    ctl_reply_fini(&reply);
    if (ex != CTL_EXIT_OK)
        return ex;
    const json_t *st = (norm = status_doc_normalise(doc))
                           ? json_array_get(json_object_get(norm, CTL_F_RUNS), 0)
                           : NULL;
    const char *state = ctl_json_str(st, CTL_F_STATE, "");
    snprintf(r->run_id, sizeof r->run_id, "%s", ctl_json_str(st, CTL_F_ID, ""));
    snprintf(r->run_name, sizeof r->run_name, "%s", ctl_json_str(st, CTL_F_NAME, ""));
    r->step = ctl_json_int(st, CTL_F_CHECKPOINT_STEP, 0);
    if (!st || !r->run_id[0])
        ex = ctl_error(r->o, "run %s: the coordinator sent no status", run);
    else if (strcmp(state, "done") != 0)
        ex = ctl_error(r->o, "run %s is %s: only a finished (done) run is released", r->run_id,
                       state);
    else if (r->step <= 0)
        ex = ctl_error(r->o, "run %s has no committed checkpoint", r->run_id);
    json_decref(norm);
    json_decref(doc);
    return ex;
}

/* The ledger verified by the coordinator (whatever its document holds: chain, signatures). */
static int s_fetch_verify(s_release_t *r)
{
    ctl_reply_t reply = {0};
    int ex = ctl_request(r->o, ctl_client_verify, r->run_id, &reply, &r->verify);
    ctl_reply_fini(&reply);
    ctl_verify_t v;
    if (ex == CTL_EXIT_OK && ctl_verify_decode(r->verify, &v) != SHOAL_OK)
        ex = ctl_error(r->o, "%s", shoal_errmsg());
    else if (ex == CTL_EXIT_OK && !v.ok)
        ex = ctl_error(r->o, "run %s: ledger BROKEN at entry %llu: %s: not released", r->run_id,
                       (unsigned long long)v.first_bad, v.reason);
    return ex;
}

/* The run's entries checked here, in shoalctl, against the coordinator's Ed25519 public key as
 * its last start recorded it in the cluster ledger: the result goes into the verification
 * document ("signatures") and the key into *pubkey_hex ("" when no start recorded one). A
 * failure is recorded, not fatal: entries from before signing verify by hash chain only. */
static int s_check_signatures(s_release_t *r, char pubkey_hex[2 * LEDGER_PUBKEY_LEN + 1])
{
    json_t *cluster = NULL;
    pubkey_hex[0] = 0;
    int ex = release_fetch_ledger(r->o, "cluster", &cluster);
    size_t i;
    const json_t *e;
    json_array_foreach(cluster, i, e)
    {
        const char *pk = ctl_json_str(json_object_get(e, CTL_F_DETAIL), "ledger_pubkey", "");
        if (strcmp(ctl_json_str(e, CTL_F_KIND, ""), "coordinator_start") == 0 && pk[0])
            snprintf(pubkey_hex, 2 * LEDGER_PUBKEY_LEN + 1, "%s", pk);
    }
    json_decref(cluster);
    if (ex != CTL_EXIT_OK || !pubkey_hex[0])
        return ex;
    uint8_t pk[LEDGER_PUBKEY_LEN];
    uint64_t n = 0, bad = 0;
    char reason[256] = "";
    if (ledger_pubkey_parse(pubkey_hex, pk) != SHOAL_OK)
        snprintf(reason, sizeof reason, "%s", shoal_errmsg());
    else
        ledger_chain_check_array(r->events, pk, true, &n, &bad, reason, sizeof reason);
    json_object_set_new(r->verify, "signatures",
                        json_pack("{s:s, s:b, s:I, s:I, s:s}", "pubkey", pubkey_hex, "ok",
                                  !reason[0], "entries", (json_int_t)n, "first_bad",
                                  (json_int_t)bad, "reason", reason));
    if (reason[0])
        fprintf(stderr, "shoalctl release: run %s: not every ledger entry is signed by %s (%s): "
                "published with the hash chain verified\n", r->run_id, pubkey_hex, reason);
    return CTL_EXIT_OK;
}

/* The spec file, as submit sends it, must hash to the ledger's submit entry. */
static int s_load_spec(s_release_t *r, const char *path)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    if (fsutil_read_file(path, &raw, &len) != SHOAL_OK ||
        runspec_load_file(path, &r->spec) != SHOAL_OK) {
        free(raw);
        return ctl_error(r->o, "%s", shoal_errmsg());
    }
    r->spec_text = submit_spec_text(path, (const char *)raw, &r->spec);
    free(raw);
    if (!r->spec_text)
        return ctl_error(r->o, "out of memory");
    uint8_t d[SHA256_LEN];
    char hex[SHA256_HEX_LEN + 1] = "";
    if (sha256_buf(r->spec_text, strlen(r->spec_text), d) == SHOAL_OK)
        sha256_hex(d, hex);
    size_t i;
    const json_t *e;
    json_array_foreach(r->events, i, e)
    {
        if (strcmp(ctl_json_str(e, CTL_F_KIND, ""), "submit") != 0)
            continue;
        const char *want = ctl_json_str(json_object_get(e, CTL_F_DETAIL), "spec_sha256", "");
        if (strcasecmp(want, hex) == 0)
            return CTL_EXIT_OK;
        return ctl_error(r->o, "%s is not the spec run %s was submitted with (SHA-256 %s, the "
                         "ledger records %s)", path, r->run_id, hex, want);
    }
    return ctl_error(r->o, "run %s: no submit entry in its ledger", r->run_id);
}

static shoal_err_t s_write_json(const char *dir, const char *name, const json_t *v)
{
    char path[PATH_MAX];
    shoal_err_t rc = fsutil_path(path, sizeof path, "%s/%s", dir, name);
    char *s = rc == SHOAL_OK ? json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (rc == SHOAL_OK && !s)
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", name);
    if (rc == SHOAL_OK) {
        size_t n = strlen(s);
        s[n] = '\n'; /* over the terminator: the length says where the text ends */
        rc = fsutil_write_file(path, s, n + 1);
    }
    free(s);
    return rc;
}

/* Writes the text `text` as dir/name. */
static shoal_err_t s_write_text(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    shoal_err_t rc = fsutil_path(path, sizeof path, "%s/%s", dir, name);
    return rc == SHOAL_OK ? fsutil_write_file(path, text, strlen(text)) : rc;
}

static shoal_err_t s_write_lines(s_release_t *r, const char *dir)
{
    char *jl = NULL, *csv = NULL, *ledger = NULL;
    size_t n1, n2, n3;
    FILE *fj = open_memstream(&jl, &n1), *fc = open_memstream(&csv, &n2),
         *fl = open_memstream(&ledger, &n3);
    shoal_err_t rc = fj && fc && fl ? SHOAL_OK : shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    if (fc)
        fputs(runlog_csv_header, fc);
    for (int i = 0; rc == SHOAL_OK && i < r->log.n_points; i++) {
        json_t *p = runlog_point_json(&r->log.points[i]);
        char *s = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER), line[512];
        if (s)
            fprintf(fj, "%s\n", s);
        free(s);
        json_decref(p);
        runlog_point_csv(&r->log.points[i], line, sizeof line);
        fputs(line, fc);
    }
    size_t i;
    const json_t *e;
    json_array_foreach(r->events, i, e)
    {
        char *s = fl ? json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (s)
            fprintf(fl, "%s\n", s);
        free(s);
    }
    if (fj && fclose(fj) != 0)
        rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    if (fc && fclose(fc) != 0)
        rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    if (fl && fclose(fl) != 0)
        rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    if (rc == SHOAL_OK && (rc = s_write_text(dir, RELEASE_METRICS_JSONL, jl)) == SHOAL_OK &&
        (rc = s_write_text(dir, RELEASE_METRICS_CSV, csv)) == SHOAL_OK)
        rc = s_write_text(dir, RELEASE_LEDGER, ledger);
    free(jl);
    free(csv);
    free(ledger);
    return rc;
}

/* ledger.json as `shoalctl events RUN --json` exports it (what `verify --ledger` reads), and the
 * coordinator's public key beside it when it signs. */
static shoal_err_t s_write_ledger_export(s_release_t *r, const char *dir)
{
    json_t *doc = json_pack("{s:s, s:O}", CTL_F_RUN, r->run_id, CTL_F_EVENTS, r->events);
    shoal_err_t rc = doc ? s_write_json(dir, RELEASE_LEDGER_EXPORT, doc)
                         : shoal_fail(SHOAL_ERR_NOMEM, "ledger export: out of memory");
    json_decref(doc);
    if (rc == SHOAL_OK && r->pubkey_hex[0]) {
        char line[2 * LEDGER_PUBKEY_LEN + 2];
        snprintf(line, sizeof line, "%s\n", r->pubkey_hex);
        rc = s_write_text(dir, RELEASE_PUBKEY, line);
    }
    return rc;
}

/* Everything beside the weights, then the model card, into `dir`. */
static shoal_err_t s_write_release(s_release_t *r, const char *dir)
{
    shoal_err_t rc;
    if ((rc = s_write_text(dir, RELEASE_SPEC, r->spec_text)) != SHOAL_OK ||
        (rc = s_write_json(dir, RELEASE_DATA_MANIFEST, r->data)) != SHOAL_OK ||
        (rc = s_write_json(dir, RELEASE_PLANS, r->plans)) != SHOAL_OK ||
        (rc = s_write_json(dir, RELEASE_VERIFY, r->verify)) != SHOAL_OK ||
        (rc = s_write_ledger_export(r, dir)) != SHOAL_OK ||
        (rc = s_write_lines(r, dir)) != SHOAL_OK)
        return rc;
    const json_t *last = json_array_get(r->events, json_array_size(r->events) - 1);
    release_card_t card = {
        .run_id = r->run_id, .run_name = r->run_name, .step = r->step, .spec = &r->spec,
        .data = r->data, .log = &r->log, .plans = r->plans, .verify = r->verify,
        .ledger_entries = (long long)json_array_size(r->events),
        .ledger_head = ctl_json_str(last, CTL_F_HASH, ""), .dir = dir,
        .pubkey_hex = r->pubkey_hex,
    };
    char *text = NULL;
    if ((rc = release_card_text(&card, &text)) == SHOAL_OK)
        rc = s_write_text(dir, RELEASE_CARD, text);
    free(text);
    return rc;
}

int cmd_release(ctl_opts_t *o, int argc, char **argv)
{
    const char *out = NULL, *spec_path = NULL, *metrics = NULL, *run = NULL;
    const ctl_optdef_t defs[] = {{"out", true, &out, NULL},
                                 {"spec", true, &spec_path, NULL},
                                 {"metrics", true, &metrics, NULL},
                                 {NULL, false, NULL, NULL}};
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, "RUN", &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    if (!out || !out[0])
        return ctl_usage_error(o, s_usage, "--out DIR is required");
    if (!spec_path)
        return ctl_usage_error(o, s_usage, "--spec RUN.yaml is required (the file RUN was "
                                           "submitted from)");
    struct stat st;
    if (stat(out, &st) == 0)
        return ctl_error(o, "%s already exists: a release goes into a new directory", out);

    s_release_t *r = calloc(1, sizeof *r);
    char stage[PATH_MAX] = "";
    if (!r)
        return ctl_error(o, "out of memory");
    r->o = o;
    if ((ex = s_fetch_run(r, run)) != CTL_EXIT_OK || (ex = release_fetch_ledger(o, r->run_id, &r->events)) != CTL_EXIT_OK ||
        (ex = s_fetch_verify(r)) != CTL_EXIT_OK ||
        (ex = s_check_signatures(r, r->pubkey_hex)) != CTL_EXIT_OK ||
        (ex = s_load_spec(r, spec_path)) != CTL_EXIT_OK)
        goto out;
    ex = CTL_EXIT_ERROR;
    if (!(r->plans = runlog_plan_history(r->events))) {
        ctl_error(o, "out of memory");
        goto out;
    }
    json_t *rows = NULL;
    if (!metrics && (ex = ctl_history_fetch(o, r->run_id, &rows, NULL, 0)) != CTL_EXIT_OK)
        goto out;
    ex = CTL_EXIT_ERROR;
    shoal_err_t mrc = metrics ? runlog_read_metrics_list(&r->log, metrics, r->run_id)
                              : runlog_points_from_history(&r->log, rows);
    json_decref(rows);
    /* the coordinator is not told the LR: it is the spec's schedule at the row's step (a
     * history row's step is 1-based, the schedule's 0-based), exactly the trainers' figure */
    for (int i = 0; !metrics && mrc == SHOAL_OK && i < r->log.n_points; i++)
        r->log.points[i].lr = lr_at(r->log.points[i].step - 1, r->spec.steps, r->spec.lr,
                                    r->spec.warmup_steps, r->spec.min_lr);
    if (release_data_manifest(&r->spec, &r->data) != SHOAL_OK || mrc != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    if (r->log.n_points == 0) {
        ctl_error(o, "no per-step metrics of run %s in %s", r->run_id,
                  metrics ? metrics : "the coordinator's history");
        goto out;
    }
    /* Built beside DIR and renamed into place: a release appears complete or not at all. */
    if (fsutil_path(stage, sizeof stage, "%s.partial-XXXXXX", out) != SHOAL_OK ||
        !mkdtemp(stage)) {
        ctl_error(o, "creating %s.partial-*: %s", out, strerror(errno));
        stage[0] = 0;
        goto out;
    }
    ctl_export_result_t res = {0};
    ckpt_export_opts_t xo = {.dtype = CKPT_EXPORT_F32};
    if ((ex = ctl_export_step(o, r->run_id, r->step, stage, &xo, &res)) != CTL_EXIT_OK)
        goto out;
    ex = CTL_EXIT_ERROR;
    if (s_write_release(r, stage) != SHOAL_OK || fsutil_rename(stage, out) != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    stage[0] = 0;
    if (o->json) {
        json_t *doc = json_pack("{s:s, s:I, s:s, s:i, s:i}", CTL_F_RUN, r->run_id, CTL_F_STEP,
                                (json_int_t)r->step, "out", out, "metrics_steps", r->log.n_points,
                                "ledger_entries", (int)json_array_size(r->events));
        ctl_print_json(doc);
        json_decref(doc);
    } else {
        printf("released run %s (%s) step %lld to %s: %d steps of metrics, %zu plan(s), %zu "
               "ledger entries verified, %lld data file(s)\n",
               r->run_id, r->run_name, r->step, out, r->log.n_points, json_array_size(r->plans),
               json_array_size(r->events),
               (long long)json_integer_value(json_object_get(r->data, "n_files")));
    }
    ex = CTL_EXIT_OK;
out:
    if (stage[0])
        (void)fsutil_remove_tree(stage);
    runlog_fini(&r->log);
    json_decref(r->events);
    json_decref(r->verify);
    json_decref(r->plans);
    json_decref(r->data);
    free(r->spec_text);
    free(r);
    return ex;
}
