/* shoalctl.h: what shoalctl's verbs share: global options, the option parser, exit codes,
 * reporting of client errors and refused requests, aligned tables and JSON output (cli.c), and
 * one entry point per verb (one file each). */
#ifndef SHOAL_SHOALCTL_H
#define SHOAL_SHOALCTL_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

#include "ckpt_export.h"
#include "ctl_client.h"
#include "runspec.h"

#define CTL_EXIT_OK 0
#define CTL_EXIT_ERROR 1 /* unreachable coordinator, refused request, failed verification */
#define CTL_EXIT_USAGE 2

/* Options every verb accepts (before or after the verb). */
typedef struct {
    const char *endpoint; /* --control, else $SHOAL_CONTROL, else CTL_DEFAULT_ENDPOINT */
    int timeout_ms;       /* --timeout SECONDS */
    bool json;            /* --json */
    const char *verb;
    const char *keys_dir; /* --keys DIR, else $SHOAL_KEYS: operator key for a TCP endpoint */
    bool insecure;        /* --insecure: plaintext TCP */
} ctl_opts_t;

/* One verb-specific option: --name VALUE (has_arg) or --name (flag, sets *flag = true). */
typedef struct {
    const char *name;
    bool has_arg;
    const char **value; /* has_arg */
    bool *flag;         /* !has_arg */
} ctl_optdef_t;

/* Parses argv[1..argc) of a verb: the global options, `defs` (terminated by {NULL}), -h/--help
 * and positional arguments (into pos[], at most max_pos; n_pos receives how many).
 * Returns -1 after printing `usage` to stdout for --help, CTL_EXIT_USAGE after printing the
 * problem and `usage` to stderr, CTL_EXIT_OK otherwise. */
int ctl_parse_args(ctl_opts_t *o, int argc, char **argv, const ctl_optdef_t *defs,
                   const char *usage, const char **pos, int max_pos, int *n_pos);

/* ctl_parse_args for a verb with at most one positional argument, its target: `what` names a
 * required one ("RUN": a usage error without it), NULL an optional one (*target NULL when
 * absent). Returns as ctl_parse_args. */
int ctl_parse_target(ctl_opts_t *o, int argc, char **argv, const ctl_optdef_t *defs,
                     const char *usage, const char *what, const char **target);

/* Usage error: prints "shoalctl VERB: <message>" and the usage to stderr; returns 2. */
int ctl_usage_error(const ctl_opts_t *o, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prints "shoalctl VERB: <message>" to stderr and returns 1. */
int ctl_error(const ctl_opts_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A client for o->endpoint; NULL (after printing why) on out of memory. */
ctl_client_t *ctl_connect(const ctl_opts_t *o);

/* Reports a request's outcome: rc != OK prints shoal_errmsg(); a refused reply prints its
 * message and code. Returns CTL_EXIT_OK only when rc == OK and reply->ok. */
int ctl_check_reply(const ctl_opts_t *o, shoal_err_t rc, const ctl_reply_t *reply);

/* Parses reply->json (an empty document is {}); NULL after printing why. Caller decrefs. */
json_t *ctl_reply_doc(const ctl_opts_t *o, const ctl_reply_t *reply);

/* Prints a JSON value to stdout (2-space indent, keys in insertion order, newline). */
void ctl_print_json(const json_t *v);

/* Field helpers tolerant of absent keys and wrong types: a number as int64 (def when absent
 * or not a number), a string (def when absent or not a string). */
long long ctl_json_int(const json_t *obj, const char *key, long long def);
double ctl_json_real(const json_t *obj, const char *key, double def);
const char *ctl_json_str(const json_t *obj, const char *key, const char *def);
/* A copy of obj[key] when it is a number (integers stay integers), else JSON null. New ref. */
json_t *ctl_json_number_or_null(const json_t *obj, const char *key);

/* Aligned text tables: add the header, then rows, then print (columns padded to the widest
 * cell, two spaces apart). Cells are copied. */
typedef struct ctl_table ctl_table_t;
ctl_table_t *ctl_table_new(int n_cols, const char *const *header);
/* Adds one row of n_cols cells (NULL prints as "-"). Returns false on out of memory. */
bool ctl_table_add(ctl_table_t *t, const char *const *cells);
void ctl_table_print(const ctl_table_t *t, FILE *out);
void ctl_table_destroy(ctl_table_t **self_p);

/* A wall clock in ms as "2026-01-02 03:04:05.678Z" (UTC); "-" for 0 or less. */
void ctl_format_time_ms(long long ms, char *out, size_t cap);

/* "1.2 s", "3 min 4 s", "2 h 05 min" */
void ctl_format_duration(double seconds, char *out, size_t cap);

/* The verbs. argv[0] is the verb; each returns an exit code. */
typedef shoal_err_t (*ctl_target_fn)(ctl_client_t *c, const char *target, ctl_reply_t *reply);

/* One request: connects to o->endpoint and calls fn(target) into *reply (caller finis it).
 * Returns the exchange's result (SHOAL_ERR_NOMEM when no client could be made). */
shoal_err_t ctl_call(const ctl_opts_t *o, ctl_target_fn fn, const char *target, ctl_reply_t *reply);

/* One page of `run`'s ledger (entries with seq > since, at most limit, 0 = the coordinator's
 * 1000) as the reply document {run, events} into *doc (caller decrefs). Returns CTL_EXIT_OK, or
 * the exit code after printing why. */
int ctl_events_page(const ctl_opts_t *o, ctl_client_t *c, const char *run, uint64_t since,
                    unsigned limit, json_t **doc);

/* The committed checkpoint manifest of `run` at `step` (0: the latest) as the reply document
 * into *doc (caller decrefs; *reply is the caller's to finish). Returns CTL_EXIT_OK, or the exit
 * code after printing why. */
int ctl_manifest_request(const ctl_opts_t *o, const char *run, int64_t step, ctl_reply_t *reply,
                         json_t **doc);

/* shoalctl keys new-signing --out DIR: an Ed25519 key pair that signs the ledger. */
int cmd_keys_new_signing(ctl_opts_t *o, int argc, char **argv);

/* ctl_call, ctl_check_reply, then (doc not NULL) ctl_reply_doc into *doc (caller decrefs).
 * Returns CTL_EXIT_OK, or the exit code after printing why. */
int ctl_request(const ctl_opts_t *o, ctl_target_fn fn, const char *target, ctl_reply_t *reply,
                json_t **doc);
/* ctl_request of a read verb, then the reply document printed as JSON (--json) or by `print`.
 * Returns the exit code. */
int ctl_show(const ctl_opts_t *o, ctl_target_fn fn, const char *target,
             void (*print)(const json_t *doc));

/* A verb that names one target (a worker or a run) and prints the coordinator's answer:
 * parses `VERB TARGET [--json]`, calls fn, prints "<noun> TARGET <done>: message" or the JSON
 * reply. Returns the exit code. */
int ctl_target_verb(ctl_opts_t *o, int argc, char **argv, const char *usage, ctl_target_fn fn,
                    const char *noun, const char *done);

int cmd_submit(ctl_opts_t *o, int argc, char **argv);
int cmd_status(ctl_opts_t *o, int argc, char **argv);
int cmd_workers(ctl_opts_t *o, int argc, char **argv);
int cmd_drain(ctl_opts_t *o, int argc, char **argv);
int cmd_undrain(ctl_opts_t *o, int argc, char **argv);
int cmd_pause(ctl_opts_t *o, int argc, char **argv);
int cmd_resume(ctl_opts_t *o, int argc, char **argv);
int cmd_cancel(ctl_opts_t *o, int argc, char **argv);
int cmd_events(ctl_opts_t *o, int argc, char **argv);
int cmd_verify(ctl_opts_t *o, int argc, char **argv);
int cmd_plan(ctl_opts_t *o, int argc, char **argv);
int cmd_experts(ctl_opts_t *o, int argc, char **argv);
int cmd_up(ctl_opts_t *o, int argc, char **argv);
int cmd_export(ctl_opts_t *o, int argc, char **argv);
int cmd_manifest(ctl_opts_t *o, int argc, char **argv);
/* keys.c: shoalctl keys new --out DIR (a CURVE key pair), keys reload (the allow-list). */
int cmd_keys_new(ctl_opts_t *o, int argc, char **argv);
int cmd_keys_reload(ctl_opts_t *o, int argc, char **argv);
/* A client for o->endpoint with the operator key (o->keys_dir or $SHOAL_KEYS) or --insecure
 * applied, in *out (NULL on failure). */
shoal_err_t ctl_client_for(const ctl_opts_t *o, ctl_client_t **out);
int cmd_release(ctl_opts_t *o, int argc, char **argv);
int cmd_replay(ctl_opts_t *o, int argc, char **argv);
int cmd_plot(ctl_opts_t *o, int argc, char **argv);
int cmd_history(ctl_opts_t *o, int argc, char **argv);

/* history.c: a run's per-step history from the coordinator, page by page: fn(row, ctx) for
 * every row with step >= from, in step order (a non-OK exit code from fn stops). run_id (may
 * be NULL) receives the run's id. Returns CTL_EXIT_OK, or the exit code after printing why. */
typedef int (*ctl_history_fn)(json_t *row, void *ctx);
int ctl_history_each(const ctl_opts_t *o, const char *run, int64_t from, ctl_history_fn fn,
                     void *ctx, char *run_id, size_t cap);
/* Every row of the history into a new array *rows (caller decrefs). */
int ctl_history_fetch(const ctl_opts_t *o, const char *run, json_t **rows, char *run_id,
                      size_t cap);

/* export.c: what ctl_export_step wrote. */
typedef struct {
    char run[64];    /* the run's id */
    long long step;  /* the step exported (the latest committed one for step 0) */
    int n_dirs;      /* shard dirs read */
} ctl_export_result_t;

/* Writes the committed checkpoint of `step` (0: the latest) of `run` to `out` as a Hugging Face
 * model directory (ckpt_export), after checking every shard dir against the coordinator's
 * manifest. Returns the exit code after printing why it failed; fills *res on success. */
int ctl_export_step(const ctl_opts_t *o, const char *run, int64_t step, const char *out,
                    const ckpt_export_opts_t *opts, ctl_export_result_t *res);

/* status.c: converts the coordinator's status document into the documented `status --json`
 * object {"runs": [{id, name, state, step, total_steps, loss, generation, checkpoint_step}]}.
 * New reference; NULL on out of memory. Shared with `up`, which polls it. */
json_t *status_doc_normalise(const json_t *doc);

/* submit.c: the spec text to send for the file `path` whose text is `raw` and whose parse
 * (runspec_load_file) is `resolved`: the file as written (comments and all, as the ledger should
 * record it) unless it names relative data files, which mean nothing on the coordinator's
 * machine: then the resolved spec. Caller frees; NULL on out of memory. */
char *submit_spec_text(const char *path, const char *raw, const runspec_t *resolved);

#endif
