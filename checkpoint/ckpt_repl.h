/* ckpt_repl.h: checkpoint shards without a shared file system. A shard server serves the
 * committed shard dirs under its roots over a ZeroMQ ROUTER of its own thread, in chunks; a
 * fetcher copies a shard from any of its holders into a temp dir, verifies every file's SHA-256
 * against the digests the coordinator recorded, and renames it into place; a replicator runs
 * fetches on a background thread so that the training thread never waits for one.
 *
 * Wire: proto/shoal.proto ShardRequest / ShardReply (not enveloped). Ownership and threads are
 * stated per function; errors are shoal_err_t with shoal_errmsg() naming what and where. */
#ifndef SHOAL_CKPT_REPL_H
#define SHOAL_CKPT_REPL_H

#include <limits.h>
#include <stdint.h>

#include "ckpt.h"
#include "vouch.h"
#include "zsec.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKPT_REPL_CHUNK (1u << 20) /* bytes of one ShardReply at most */
#define CKPT_REPL_WINDOW 4         /* chunk requests a fetcher keeps in flight */
#define CKPT_REPL_MAX_ROOTS 8      /* directories one server serves from */
#define CKPT_REPL_MAX_SOURCES 8    /* holders tried for one shard */
#define CKPT_REPL_ENDPOINT_MAX 256

/* CURVE for the shard servers created and the fetches made after this call in this process
 * (call it once at start; keys copied): a server is a CURVE server with `keys` (admitting the
 * keys of ckpt_repl_set_vouch; what a fetcher gets it verifies against the coordinator's
 * digests either way), a fetch dials a
 * holder with the holder's ckpt_source_t.public_key (a source without one fails). NULL:
 * plaintext. */
void ckpt_repl_set_curve(const zsec_keys_t *keys);

/* Which keys the CURVE shard servers created after this call admit: those `v` vouches for (the
 * coordinator's answers, common/vouch.h), a key not yet known held up to CKPT_REPL_VOUCH_HOLD_MS
 * while it is asked about. NULL (the default): any CURVE key. `v` must outlive the servers. */
void ckpt_repl_set_vouch(vouch_t *v);
#define CKPT_REPL_VOUCH_HOLD_MS 20000

/* ---- server ----------------------------------------------------------------------------- */

typedef struct ckpt_server ckpt_server_t;

/* Binds a ROUTER on `bind` (e.g. "tcp://127.0.0.1:0" or a wildcard tcp address) and starts the
 * server thread. `root` (may be NULL) is the first directory served from; the endpoint peers
 * connect to is the bound one, a wildcard address replaced by advertise_host (NULL: 127.0.0.1). A
 * request is served only for a committed step dir (step-<n>/ with manifest.json) below a root, and
 * a file its manifest lists (or manifest.json); anything else gets an error reply. *out is the
 * caller's (ckpt_server_destroy). Errors: SHOAL_ERR_IO (bind, thread). */
shoal_err_t ckpt_server_new(const char *bind, const char *advertise_host, const char *root,
                            ckpt_server_t **out);

/* The endpoint peers connect to (valid until destroy). */
const char *ckpt_server_endpoint(const ckpt_server_t *s);

/* Adds a directory to serve from (a run's absolute checkpoint.dir); one already served is
 * ignored. Thread-safe. SHOAL_ERR_INVALID when it does not resolve or the table is full. */
shoal_err_t ckpt_server_allow(ckpt_server_t *s, const char *root);

/* Requests answered (ok, refused) so far; for tests and logs. */
void ckpt_server_counts(ckpt_server_t *s, uint64_t *served, uint64_t *refused);
/* CURVE handshakes refused so far (a key nobody vouched for; each logged once a minute). */
unsigned long long ckpt_server_denied_handshakes(const ckpt_server_t *s);

/* Stops the thread, closes the socket, frees; idempotent, NULLs *s. */
void ckpt_server_destroy(ckpt_server_t **s);

/* ---- fetch ------------------------------------------------------------------------------ */

/* A holder of a shard: its worker id, its shard server, the shard dir on that holder. */
typedef struct {
    char worker[64];
    char endpoint[CKPT_REPL_ENDPOINT_MAX];
    char path[PATH_MAX];
    char public_key[ZSEC_KEY_LEN + 1]; /* the holder's CURVE key ("" plaintext) */
} ckpt_source_t;

/* The files a shard dir holds (manifest.json among them) as the coordinator recorded them. */
typedef struct {
    int n_files;
    ckpt_file_t files[CKPT_MANIFEST_MAX_FILES + 1];
} ckpt_digests_t;

/* The digests of the committed shard in `dir` as its writer reports them: every file its
 * manifest lists, then manifest.json itself (its size and SHA-256). Errors of
 * ckpt_manifest_read, of reading the manifest. */
shoal_err_t ckpt_repl_digests(const char *dir, ckpt_digests_t *out);

/* Whether `dir` holds exactly the files of `want` with their sizes and SHA-256 digests, and
 * its own manifest verifies (ckpt_manifest_verify). SHOAL_OK or the first mismatch
 * (SHOAL_ERR_FORMAT / SHOAL_ERR_NOTFOUND naming the file). Reads every file once. */
shoal_err_t ckpt_repl_verify(const char *dir, const ckpt_digests_t *want);

/* Makes `dest` a verified copy of the shard `want` describes. A dest that already verifies is
 * kept; one that does not is discarded. Otherwise tries src[0..n_src) in order: every file is
 * fetched in CKPT_REPL_CHUNK pieces (CKPT_REPL_WINDOW in flight) into a temp dir next to dest,
 * its size and SHA-256 checked, the dir fsynced and renamed to dest (dest's parent created).
 * A holder that fails (no answer within timeout_ms, an error reply, a corrupt copy) is logged
 * and the next one tried. *used (may be NULL) receives the index of the source copied from, -1
 * when dest was already valid. zctx: a ZeroMQ context (sockets are the calling thread's).
 * Errors: SHOAL_ERR_NOTFOUND when no holder gave a valid copy (the message lists each
 * holder's failure), SHOAL_ERR_INVALID for a bad `want` (a file name that is not plain). */
shoal_err_t ckpt_repl_fetch(void *zctx, const ckpt_source_t *src, int n_src,
                            const ckpt_digests_t *want, const char *dest, int timeout_ms,
                            int *used);
/* ckpt_repl_fetch that also tells which holders served a corrupt copy: bit i of *corrupt (may
 * be NULL) is set when src[i] answered but what it sent failed its sizes or SHA-256 digests (a
 * copy to report to the coordinator; a holder that did not answer is not corrupt). */
shoal_err_t ckpt_repl_fetch_checked(void *zctx, const ckpt_source_t *src, int n_src,
                                    const ckpt_digests_t *want, const char *dest, int timeout_ms,
                                    int *used, uint32_t *corrupt);

/* ---- replicator: fetches on a background thread ---------------------------------------- */

typedef struct ckpt_replicator ckpt_replicator_t;

/* One copy to make: the shard's identity (tag, opaque to the replicator), its holders, files
 * and the local dir to fill; prune_dir/keep: after the copy only `keep` step dirs stay in
 * prune_dir, this step's and the highest others (prune_dir "" or keep <= 0: none pruned). */
typedef struct {
    char tag[256];
    int64_t step;
    int n_src;
    ckpt_source_t src[CKPT_REPL_MAX_SOURCES];
    ckpt_digests_t want;
    char dest[PATH_MAX];
    char prune_dir[PATH_MAX];
    int keep;
} ckpt_repl_job_t;

/* The outcome of a job, taken by ckpt_replicator_poll. */
typedef struct {
    char tag[256];
    int64_t step;
    char dest[PATH_MAX];
    shoal_err_t rc;
    char message[512]; /* why it failed */
    double seconds;
    /* holders whose copy failed its digests (worker ids), whatever the outcome */
    int n_corrupt;
    char corrupt[CKPT_REPL_MAX_SOURCES][64];
} ckpt_repl_done_t;

/* Starts the replicator thread (its own ZeroMQ context). NULL on failure (logged). */
ckpt_replicator_t *ckpt_replicator_new(int timeout_ms);

/* Queues a copy of *job (copied); never blocks on I/O. SHOAL_ERR_NOMEM. Thread-safe. */
shoal_err_t ckpt_replicator_submit(ckpt_replicator_t *r, const ckpt_repl_job_t *job);

/* Takes one finished job into *out: 1 when there was one, 0 otherwise. Never blocks. */
int ckpt_replicator_poll(ckpt_replicator_t *r, ckpt_repl_done_t *out);

/* Nonzero: start no further job until called again with 0 (the one running goes on; queued
 * ones wait, nothing is dropped). A worker recovering from a death holds its copies: they would
 * take the CPU and disk its recovery needs (worker/daemon.c). Thread-safe. */
void ckpt_replicator_hold(ckpt_replicator_t *r, int hold);

/* Jobs queued or running. */
int ckpt_replicator_busy(ckpt_replicator_t *r);

/* Stops after the job in progress (queued ones are dropped), frees; idempotent, NULLs *r. */
void ckpt_replicator_destroy(ckpt_replicator_t **r);

#ifdef __cplusplus
}
#endif
#endif
