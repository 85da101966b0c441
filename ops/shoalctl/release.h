/* release.h: what `shoalctl release` and `shoalctl replay` share: the layout of a release
 * directory, its data manifest, and the model card written from the rest. */
#ifndef SHOAL_RELEASE_H
#define SHOAL_RELEASE_H

#include <jansson.h>

#include "err.h"
#include "runlog.h"
#include "runspec.h"
#include "shoalctl.h"

/* Files of a release directory (besides the exported config.json and model.safetensors). */
#define RELEASE_SPEC "spec.yaml"
#define RELEASE_DATA_MANIFEST "data_manifest.json"
#define RELEASE_METRICS_JSONL "metrics.jsonl"
#define RELEASE_METRICS_CSV "metrics.csv"
#define RELEASE_PLANS "plan_history.json"
#define RELEASE_LEDGER "ledger.jsonl"
#define RELEASE_VERIFY "ledger_verification.json"
#define RELEASE_LEDGER_EXPORT "ledger.json" /* {run, events}: what `verify --ledger` reads */
#define RELEASE_PUBKEY "ledger_signing.pub"  /* the coordinator's Ed25519 key (hex), if it signs */
#define RELEASE_CARD "README.md"
#define RELEASE_WEIGHTS "model.safetensors"
#define RELEASE_CONFIG "config.json"

/* The data manifest of `spec`: {"seed", "total_bytes", "files": [{"path", "size", "sha256"}]},
 * every file the trainer reads (common/datafiles.h), in its order. New reference in *out. */
shoal_err_t release_data_manifest(const runspec_t *spec, json_t **out);

/* Whether the files on this machine are the ones `manifest` lists (same paths in the same
 * order, sizes and SHA-256) and its seed is the spec's. SHOAL_ERR_FORMAT names the first
 * difference. */
shoal_err_t release_check_data(const runspec_t *spec, const json_t *manifest);

/* Every ledger entry of `run` (all pages) into *events (new array; caller decrefs, also after
 * an error). Returns the exit code after printing why it failed. */
int release_fetch_ledger(const ctl_opts_t *o, const char *run, json_t **events);

/* What the model card is written from. */
typedef struct {
    const char *run_id, *run_name;
    long long step;            /* the released checkpoint's */
    const runspec_t *spec;
    const json_t *data;        /* release_data_manifest's */
    const runlog_t *log;       /* metrics points */
    const json_t *plans;       /* plan entries */
    const json_t *verify;      /* the coordinator's verification document */
    long long ledger_entries;
    const char *ledger_head;   /* hash of the last entry */
    const char *dir;           /* the release dir being written: file digests are listed */
    const char *pubkey_hex;    /* the key the entries were checked against, "" if none */
} release_card_t;

/* README.md text (a Hugging Face model card with YAML front matter). Caller frees; NULL and
 * an error on failure. */
shoal_err_t release_card_text(const release_card_t *card, char **out);

#endif
