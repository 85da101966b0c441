/* coord_testlib.h: test-side helpers for the coordinator tests: start/kill the real
 * shoal-coordinator binary, a control client, and a fake-but-real worker (a DEALER speaking the
 * protocol). */
#ifndef SHOAL_COORD_TESTLIB_H
#define SHOAL_COORD_TESTLIB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "wire.h"

typedef struct {
    int ok;
    int code;
    char message[2048];
    json_t *json; /* parsed reply JSON (NULL when empty); caller json_decref()s */
} tc_reply_t;

/* Starts shoal-coordinator on ipc sockets in `dir` with a config file holding `yaml` (may be
 * NULL) and waits until it answers a status request. Returns the pid (exits the test on failure).
 */
pid_t tc_start(const char *dir, const char *yaml);
/* tc_start with another coordinator binary; returns -1 (no exit) when it does not come up. */
pid_t tc_start_bin(const char *bin, const char *dir, const char *yaml);
/* tc_start_bin of shoal-coordinator with the worker endpoint `listen` (e.g. tcp://127.0.0.1:PORT,
 * for CURVE). */
pid_t tc_start_listen(const char *dir, const char *listen, const char *yaml);
/* Sends `sig` and reaps; returns the wait status. */
int tc_stop(pid_t pid, int sig);
int tc_alive(pid_t pid);

void tc_worker_endpoint(const char *dir, char *buf, size_t cap);
void tc_control_endpoint(const char *dir, char *buf, size_t cap);

/* One control request; arg is the run/worker/yaml per type, flag is dry_run/since. Returns 0
 * when a CtlReply came back within 3 s. */
int tc_ctl(const char *dir, Shoal__MsgType type, const char *arg, uint64_t flag, tc_reply_t *out);
/* tc_ctl with a page size (CtlEvents.limit) for the paged requests (events, history). */
int tc_ctl_page(const char *dir, Shoal__MsgType type, const char *arg, uint64_t flag,
                unsigned limit, tc_reply_t *out);
/* Status JSON of one run ("" = all) as a new reference, or NULL. */
json_t *tc_run_status(const char *dir, const char *run);
void tc_reply_fini(tc_reply_t *r);

typedef struct {
    void *ctx, *sock;
    char name[64], id[64], run[64];
    uint64_t gen, seq;
    int rank, source, source_rank;
    uint32_t dp, n_assignments;
    int64_t start_step, lease, committed;
    int last_error; /* ErrorCode of the last Error answer, 0 = none */
    int last_directive;
    int run_command; /* last RunControl command */
    int drained;     /* a Drain arrived */
    /* envelope run id and generation of the last Drain, RunControl and Error received */
    char drain_run[64], control_run[64], error_run[64];
    uint64_t drain_gen, control_gen, error_gen;
    /* the most this worker was ever told: highest plan generation, highest committed step,
     * and whether a STOP of its run arrived (the durability test compares them with the disk) */
    uint64_t max_gen;
    int64_t max_committed;
    int got_stop;
    /* CommIds relayed to this worker: how many, and the last one's group, sender and bytes */
    int n_comm_ids;
    char comm_group[64], comm_sender[64];
    uint8_t comm_id[256];
    size_t comm_id_len;
    /* checkpoint replication: the shard server endpoint sent at registration ("" = none; set
     * after tc_worker_open), Replicate orders received, and the last one's run, step and
     * first copy (its writer and files, what tc_worker_shard_held confirms) */
    char shard_endpoint[96];
    int n_replicates;
    char repl_run[64], repl_writer[64];
    int64_t repl_step;
    int n_repl_files;
    char repl_file[4][64], repl_sha[4][65];
    uint64_t repl_size[4];
    /* when set, called with every Assignment received (decoded, borrowed) and its size */
    void (*on_assignment)(void *arg, const Shoal__Envelope *env, size_t bytes);
    void *on_assignment_arg;
} tc_worker_t;

int tc_worker_open(tc_worker_t *w, const char *dir, const char *name);
void tc_worker_close(tc_worker_t *w);
/* Sends one message of `type` with `body` set by the caller via env (run/sender/generation
 * filled from w) and waits up to 2 s for its Ack or Error, handling pushes meanwhile.
 * Returns 0 on Ack, the ErrorCode (> 0) on Error, -1 on timeout. */
int tc_worker_call(tc_worker_t *w, Shoal__Envelope *env);
/* tc_worker_call of an envelope packed as is, without wire_check: hostile input. */
int tc_worker_call_raw(tc_worker_t *w, Shoal__Envelope *env);
int tc_worker_register(tc_worker_t *w);
int tc_worker_heartbeat(tc_worker_t *w, int64_t step);
int tc_worker_heartbeat_activity(tc_worker_t *w, int64_t step, int activity);
/* A heartbeat with the given activity and detail text. */
int tc_worker_heartbeat_detail(tc_worker_t *w, int64_t step, int activity, const char *detail);
int tc_worker_step(tc_worker_t *w, int64_t step, float loss);
/* A StepReport with the step's wall time and its time in collectives (metrics). */
int tc_worker_step_timed(tc_worker_t *w, int64_t step, float loss, float secs, float comm_secs);
/* A StepReport sent without waiting for its answer (tc_worker_pump reads it): 0, or -1. */
int tc_worker_step_send(tc_worker_t *w, int64_t step, float loss);
int tc_worker_ckpt(tc_worker_t *w, int64_t step);
int tc_worker_get_assignment(tc_worker_t *w);
/* MSG_SHARD_HELD confirming the first copy of the last Replicate received (its run, step,
 * writer and files). 0 on Ack. */
int tc_worker_shard_held(tc_worker_t *w);
/* MSG_SHARD_CORRUPT of w's run: the copy of `writer`'s shard of `step` that `holder` served
 * failed its digests. 0 on Ack. */
int tc_worker_shard_corrupt(tc_worker_t *w, int64_t step, const char *writer, const char *holder);
/* Handles pushed messages (assignments, step commits, run controls) for `ms`. */
void tc_worker_pump(tc_worker_t *w, int ms);

void tc_sleep_ms(int ms);

/* The coordinator of the running test (0: none). tc_kill_leftover, a cmocka teardown, kills it:
 * a failed assertion jumps past the test's own tc_stop(), and the next test needs the state dir
 * (and its RocksDB lock) back. */
extern pid_t tc_pid;
int tc_kill_leftover(void **state);

/* obj[k] as a string ("" when absent) or an integer (0 when absent). */
const char *tc_jstr(const json_t *obj, const char *k);
json_int_t tc_jint(const json_t *obj, const char *k);

/* The state of worker `id` in the workers reply of the coordinator in dir ("" when unknown).
 * Points into a static buffer. */
const char *tc_worker_state(const char *dir, const char *id);
/* The string `field` of worker `id` in that reply (e.g. "reason"; "" when absent). Points into a
 * static buffer (the same as tc_worker_state's). */
const char *tc_worker_field(const char *dir, const char *id, const char *field);

/* Heartbeats every worker in `ws` (NULL entries skipped) every hb_ms / 2 for `ms`, handling
 * pushes; with reregister, a worker declared dead (a slow test step) registers again, as a real
 * worker does. */
void tc_beat(tc_worker_t **ws, int n, int ms, int hb_ms, int64_t step, bool reregister);

/* A fresh temp dir "/tmp/<prefix>-XXXXXX" in buf (0, or -1 on failure), and its removal
 * (kept when SHOAL_KEEP_TEST_DIR is set, to look at the logs). */
int tc_tmpdir_make(char *buf, size_t cap, const char *prefix);
int tc_tmpdir_remove(const char *dir);
/* tc_tmpdir_make into root, and its state dir root/t (made) into dir: one coordinator's. */
int tc_tmpdir_make_with(char *root, size_t root_cap, char *dir, size_t dir_cap,
                        const char *prefix);

#endif
