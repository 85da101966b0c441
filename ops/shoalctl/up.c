/* up.c: `shoalctl up [--workers N] [RUN.yaml]`: a whole shoal cluster on this machine for one
 * run: a coordinator and N workers as children in a temporary state dir, the run submitted and
 * followed to its end, the final model copied out, everything stopped and removed. The child
 * processes themselves (spawn, reap, signals, logs) are child.c's. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "child.h"
#include "ckpt.h"
#include "ckpt_export.h"
#include "clock.h"
#include "ctl_reply.h"
#include "fsutil.h"
#include "model_dir.h"
#include "numparse.h"
#include "shoalctl.h"
#include "zsec.h"

static const char s_usage[] =
    "usage: shoalctl up [--workers N] [--out DIR] [--keep] [--time-limit SECONDS] [RUN.yaml]\n"
    "  Starts shoal-coordinator and N shoal-worker processes (found next to shoalctl) in a\n"
    "  temporary state dir, submits RUN.yaml (default: the embedded tiny-fortunes run), shows\n"
    "  progress until the run ends, copies the final model to DIR (default\n"
    "  ./shoal-out/<run name>), stops everything and removes the state dir.\n"
    "  --workers N          worker processes (default 2, at most 64)\n"
    "  --out DIR            where the final model directory goes\n"
    "  --keep               keep the state dir (RocksDB, checkpoints, logs) afterwards\n"
    "  --time-limit SECONDS stop and fail if the run has not ended by then (default: none)\n"
    "  Ctrl-C stops the cluster cleanly. Exit 0 when the run is done, 1 otherwise.\n";

#define UP_MAX_WORKERS 64
#define UP_POLL_MS 500
#define UP_START_WAIT_MS 15000 /* coordinator answering its control socket */
#define UP_STOP_WAIT_MS 20000  /* children after SIGTERM; > the worker's grace period */

static volatile sig_atomic_t s_interrupted;

static void s_on_signal(int sig)
{
    (void)sig;
    s_interrupted = 1;
}

typedef struct {
    ctl_opts_t *o;
    char bindir[PATH_MAX];
    char tmp[PATH_MAX];
    char control[PATH_MAX];
    char listen[64];
    int n_workers;
    child_t coord;
    child_t workers[UP_MAX_WORKERS];
} s_up_t;

/* The directory of this executable: the daemons are installed (and built) beside it. */
static shoal_err_t s_bindir(char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return shoal_fail(SHOAL_ERR_IO, "/proc/self/exe: %s", strerror(errno));
    self[n] = '\0';
    fsutil_dirname(self, out, cap);
    return SHOAL_OK;
}

/* A TCP port free right now on 127.0.0.1 (the kernel's pick; the coordinator binds it next). */
/* Key pairs for a local cluster under root: root/coordinator, root/worker-<i> (each with the
 * coordinator's key as coordinator.public), the allow-list (institution "local") and the
 * coordinator's config naming them, whose path goes to cfg_path. */
static shoal_err_t s_up_keys(const char *root, int n_workers, char *cfg_path, size_t cap)
{
    zsec_keys_t coord, w;
    char dir[PATH_MAX], path[PATH_MAX + 32], allow[PATH_MAX + 32];
    shoal_err_t rc = zsec_keys_generate(&coord);
    if (rc == SHOAL_OK)
        rc = fsutil_path(dir, sizeof dir, "%s/coordinator", root);
    if (rc == SHOAL_OK)
        rc = zsec_keys_write(dir, &coord);
    if (rc == SHOAL_OK)
        rc = fsutil_path(allow, sizeof allow, "%s/allow_list", root);
    FILE *f = rc == SHOAL_OK ? fopen(allow, "w") : NULL;
    if (rc == SHOAL_OK && !f)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: %s", allow, strerror(errno));
    for (int i = 0; rc == SHOAL_OK && i < n_workers; i++) {
        rc = zsec_keys_generate(&w);
        if (rc == SHOAL_OK)
            rc = fsutil_path(dir, sizeof dir, "%s/worker-%d", root, i + 1);
        if (rc == SHOAL_OK)
            rc = zsec_keys_write(dir, &w);
        if (rc == SHOAL_OK)
            rc = fsutil_path(path, sizeof path, "%s/coordinator.public", dir);
        if (rc == SHOAL_OK)
            rc = fsutil_write_file(path, coord.public_key, ZSEC_KEY_LEN);
        if (rc == SHOAL_OK)
            fprintf(f, "worker local %s\n", w.public_key);
    }
    if (f && fclose(f) != 0 && rc == SHOAL_OK)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: %s", allow, strerror(errno));
    if (rc == SHOAL_OK)
        rc = fsutil_path(cfg_path, cap, "%s/coordinator.yaml", root);
    char yaml[2 * PATH_MAX + 64];
    if (rc == SHOAL_OK) {
        int n = snprintf(yaml, sizeof yaml, "keys_dir: %s/coordinator\nallow_list: %s\n", root,
                         allow);
        rc = n > 0 && (size_t)n < sizeof yaml
                 ? fsutil_write_file(cfg_path, yaml, (size_t)n)
                 : shoal_fail(SHOAL_ERR_INVALID, "%s: path too long for the config", root);
    }
    memset(&coord, 0, sizeof coord);
    memset(&w, 0, sizeof w);
    return rc == SHOAL_OK ? SHOAL_OK : shoal_fail_context(rc, "shoalctl up: CURVE keys");
}

static shoal_err_t s_free_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return shoal_fail(SHOAL_ERR_IO, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    shoal_err_t rc = SHOAL_OK;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        rc = shoal_fail(SHOAL_ERR_IO, "finding a free port on 127.0.0.1: %s", strerror(errno));
    else
        *port = ntohs(a.sin_port);
    close(fd);
    return rc;
}

/* A short temp dir: the control socket path inside it must stay under ~100 bytes. */
static shoal_err_t s_make_tmp(char *out, size_t cap)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base || strlen(base) > 60)
        base = "/tmp";
    if (fsutil_path(out, cap, "%s/shoal-up-XXXXXX", base) != SHOAL_OK || !mkdtemp(out))
        return shoal_fail(SHOAL_ERR_IO, "creating a temp dir in %s: %s", base, strerror(errno));
    return SHOAL_OK;
}

/* SIGTERM to every live child (workers first: they leave the run cleanly while the coordinator
 * still answers; then the coordinator), wait up to UP_STOP_WAIT_MS in all, then SIGKILL
 * whoever is left. */
static void s_stop_all(s_up_t *u)
{
    const int64_t start = clock_mono_ms();
    child_t *children[UP_MAX_WORKERS + 1];
    children[0] = &u->coord;
    for (int i = 0; i < u->n_workers; i++) {
        children[i + 1] = &u->workers[i];
        child_signal(&u->workers[i], SIGTERM);
    }
    child_wait_all(children + 1, u->n_workers, start + UP_STOP_WAIT_MS * 3 / 4);
    child_signal(&u->coord, SIGTERM);
    if (!child_wait_all(children, u->n_workers + 1, start + UP_STOP_WAIT_MS))
        child_kill_rest(children, u->n_workers + 1, "shoalctl up", UP_STOP_WAIT_MS / 1000);
}

/* Candidate checkpoint directories under `dir` (at most `depth` levels down): step dirs (as
 * ckpt.h names them) holding config.json and model.safetensors. With step > 0 only those of that
 * step; otherwise those of the newest step seen (the list restarts when a newer step turns up). */
#define S_MAX_CANDIDATES 256 /* cells whose shards one export reads */

typedef struct {
    int n;
    long long step;
    char path[S_MAX_CANDIDATES][PATH_MAX];
} s_candidates_t;

static void s_find_model_dirs(const char *dir, int depth, long long step, s_candidates_t *cand)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX], probe[PATH_MAX];
        struct stat st;
        int64_t s;
        if (e->d_name[0] == '.' ||
            fsutil_path(path, sizeof(path), "%s/%s", dir, e->d_name) != SHOAL_OK ||
            lstat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (!ckpt_step_dir_parse(e->d_name, &s)) {
            if (depth > 0)
                s_find_model_dirs(path, depth - 1, step, cand);
            continue;
        }
        if (fsutil_path(probe, sizeof(probe), "%s/config.json", path) != SHOAL_OK ||
            access(probe, R_OK) != 0 ||
            fsutil_path(probe, sizeof(probe), "%s/model.safetensors", path) != SHOAL_OK ||
            access(probe, R_OK) != 0)
            continue;
        if (step > 0 ? s != step : s < cand->step)
            continue;
        if (s > cand->step) {
            cand->n = 0;
            cand->step = s;
        }
        if (cand->n < S_MAX_CANDIDATES)
            snprintf(cand->path[cand->n++], PATH_MAX, "%s", path);
    }
    closedir(d);
}

/* Assembles the final model from the workers' checkpoint shards of `step` (the newest step any
 * holds when none was committed): ckpt_export takes each tensor from the first shard holding it,
 * so a data-parallel run (every shard whole) and a split one (each cell's part) both give one
 * Hugging Face model directory. It is built beside out_dir and swapped in, so a previous run's
 * output is replaced only by a complete one. */
static shoal_err_t s_export(const s_up_t *u, long long step, const char *out_dir,
                            long long *got_step)
{
    s_candidates_t *cand = calloc(1, sizeof(*cand));
    if (!cand)
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    cand->step = -1;
    s_find_model_dirs(u->tmp, 4, step, cand);
    if (cand->n == 0 && step > 0)
        s_find_model_dirs(u->tmp, 4, 0, cand);
    char fresh[PATH_MAX];
    const char *dirs[S_MAX_CANDIDATES];
    for (int i = 0; i < cand->n; i++)
        dirs[i] = cand->path[i];
    shoal_err_t rc;
    if (cand->n == 0)
        rc = shoal_fail(SHOAL_ERR_NOTFOUND, "no checkpoint holding a model under %s", u->tmp);
    else if ((rc = fsutil_path(fresh, sizeof(fresh), "%s.new-%ld", out_dir, (long)getpid())) ==
                 SHOAL_OK &&
             (rc = fsutil_mkdir_p(out_dir)) == SHOAL_OK &&
             (rc = ckpt_export(dirs, cand->n, fresh, NULL)) == SHOAL_OK &&
             (rc = fsutil_remove_tree(out_dir)) == SHOAL_OK) {
        if (rename(fresh, out_dir) != 0)
            rc = shoal_fail(SHOAL_ERR_IO, "%s -> %s: %s", fresh, out_dir, strerror(errno));
        else
            *got_step = cand->step;
    }
    free(cand);
    return rc;
}

/* Progress line: "[#####.....]  12/300  loss 3.2145  12.3k tok/s  ETA 1 min 02 s". */
static void s_progress(bool tty, long long step, long long total, const json_t *loss, double tok_s,
                       double eta_s, const char *state)
{
    char bar[32], l[32] = "-", rate[32] = "-", eta[32] = "-";
    int width = 24, fill = total > 0 ? (int)(width * step / total) : 0;
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    if (json_is_number(loss))
        snprintf(l, sizeof(l), "%.4f", json_number_value(loss));
    if (tok_s > 0)
        snprintf(rate, sizeof(rate), tok_s >= 1e4 ? "%.1fk" : "%.0f",
                 tok_s >= 1e4 ? tok_s / 1e3 : tok_s);
    if (eta_s >= 0)
        ctl_format_duration(eta_s, eta, sizeof(eta));
    if (tty)
        printf("\r[%s] %lld/%lld  loss %s  %s tok/s  ETA %s  %s\033[K", bar, step, total, l, rate,
               eta, state);
    else
        printf("step %lld/%lld  loss %s  %s tok/s  ETA %s  %s\n", step, total, l, rate, eta, state);
    fflush(stdout);
}

static const json_t *s_first_run(const json_t *st)
{
    return json_array_get(json_object_get(st, CTL_F_RUNS), 0);
}

/* Waits until the coordinator answers a status request (or dies, or time runs out). */
static shoal_err_t s_wait_coordinator(s_up_t *u, ctl_client_t *c)
{
    int64_t deadline = clock_mono_ms() + UP_START_WAIT_MS;
    while (!s_interrupted) {
        if (child_reap(&u->coord)) {
            char how[64];
            child_describe_exit(&u->coord, how, sizeof(how));
            return shoal_fail(SHOAL_ERR_STATE, "shoal-coordinator %s before it was ready", how);
        }
        ctl_reply_t r = {0};
        shoal_err_t rc = ctl_client_status(c, "", &r);
        ctl_reply_fini(&r);
        if (rc == SHOAL_OK)
            return SHOAL_OK;
        if (clock_mono_ms() > deadline)
            return shoal_fail(SHOAL_ERR_TIMEOUT,
                              "shoal-coordinator did not answer on %s within %d s", u->control,
                              UP_START_WAIT_MS / 1000);
        clock_sleep_ms(100);
    }
    return shoal_fail(SHOAL_ERR_ABORTED, "interrupted");
}

typedef struct {
    long long step, total, ckpt_step;
    char state[32];
    char id[128];
    char reason[256]; /* the coordinator's reason for the last state change */
    double first_loss, last_loss;
    double elapsed_s;
} s_result_t;

/* Follows the run until it ends; SHOAL_OK with res->state set, or why it could not. */
static shoal_err_t s_follow(s_up_t *u, ctl_client_t *c, const char *run, long long tokens_per_step,
                            double time_limit_s, s_result_t *res)
{
    bool tty = isatty(STDOUT_FILENO);
    int64_t t0 = clock_mono_ms(), last_print = 0, rate_t0 = 0;
    long long rate_step0 = -1, printed_step = -1;
    int failures = 0;
    int workers_seen_dead = 0;
    shoal_err_t rc = SHOAL_OK;
    res->first_loss = res->last_loss = NAN;
    while (!s_interrupted) {
        if (child_reap(&u->coord)) {
            char how[64];
            child_describe_exit(&u->coord, how, sizeof(how));
            rc = shoal_fail(SHOAL_ERR_STATE, "shoal-coordinator %s during the run", how);
            break;
        }
        int dead = 0;
        for (int i = 0; i < u->n_workers; i++)
            dead += child_reap(&u->workers[i]) ? 1 : 0;
        if (dead > workers_seen_dead) {
            for (int i = 0; i < u->n_workers; i++)
                if (u->workers[i].exited && u->workers[i].pid > 0) {
                    char how[64];
                    child_describe_exit(&u->workers[i], how, sizeof(how));
                    fprintf(stderr, "%sshoalctl up: worker %s %s (log: %s)\n", tty ? "\n" : "",
                            u->workers[i].name, how, u->workers[i].log);
                    u->workers[i].pid = -u->workers[i].pid; /* reported once */
                }
            workers_seen_dead = dead;
        }
        ctl_reply_t r = {0};
        json_t *doc = NULL, *st = NULL;
        rc = ctl_client_status(c, run, &r);
        if (rc == SHOAL_OK && r.ok && r.json[0])
            doc = json_loads(r.json, 0, NULL);
        if (doc)
            st = status_doc_normalise(doc);
        const json_t *run_st = s_first_run(st);
        if (rc != SHOAL_OK || !r.ok || !run_st) {
            /* One slow answer is no reason to give up; a coordinator gone for a while is. */
            if (++failures * (int64_t)(u->o->timeout_ms + UP_POLL_MS) > 30000) {
                if (rc == SHOAL_OK)
                    rc = shoal_fail(SHOAL_ERR_STATE, "status of run %s: %s", run,
                                    r.message[0] ? r.message : "no such run in the answer");
                ctl_reply_fini(&r);
                json_decref(doc);
                json_decref(st);
                break;
            }
            rc = SHOAL_OK;
        } else {
            failures = 0;
            res->step = ctl_json_int(run_st, CTL_F_STEP, 0);
            res->total = ctl_json_int(run_st, CTL_F_TOTAL_STEPS, 0);
            res->ckpt_step = ctl_json_int(run_st, CTL_F_CHECKPOINT_STEP, 0);
            snprintf(res->state, sizeof(res->state), "%s", ctl_json_str(run_st, CTL_F_STATE, "?"));
            snprintf(res->id, sizeof(res->id), "%s", ctl_json_str(run_st, CTL_F_ID, run));
            snprintf(res->reason, sizeof(res->reason), "%s",
                     ctl_json_str(json_array_get(json_object_get(doc, CTL_F_RUNS), 0), CTL_F_REASON,
                                  ""));
            const json_t *loss = json_object_get(run_st, CTL_F_LOSS);
            if (json_is_number(loss)) {
                res->last_loss = json_number_value(loss);
                if (isnan(res->first_loss))
                    res->first_loss = res->last_loss;
            }
            int64_t now = clock_mono_ms();
            if (res->step > 0 && rate_step0 < 0) {
                rate_step0 = res->step;
                rate_t0 = now;
            }
            double steps_per_s =
                rate_step0 >= 0 && res->step > rate_step0 && now > rate_t0
                    ? (double)(res->step - rate_step0) * 1000.0 / (double)(now - rate_t0)
                    : 0.0;
            double eta = steps_per_s > 0 ? (double)(res->total - res->step) / steps_per_s : -1;
            bool ended = strcmp(res->state, "done") == 0 || strcmp(res->state, "failed") == 0 ||
                         strcmp(res->state, "cancelled") == 0;
            if (tty || ended || (res->step != printed_step && now - last_print >= 1000)) {
                s_progress(tty, res->step, res->total, loss, steps_per_s * (double)tokens_per_step,
                           ended ? 0 : eta, res->state);
                printed_step = res->step;
                last_print = now;
            }
            if (ended) {
                if (tty)
                    printf("\n");
                ctl_reply_fini(&r);
                json_decref(doc);
                json_decref(st);
                break;
            }
        }
        ctl_reply_fini(&r);
        json_decref(doc);
        json_decref(st);
        if (dead == u->n_workers) {
            if (tty)
                printf("\n");
            rc = shoal_fail(SHOAL_ERR_STATE, "every worker has exited; the run cannot go on");
            break;
        }
        if (time_limit_s > 0 && (double)(clock_mono_ms() - t0) / 1000.0 > time_limit_s) {
            if (tty)
                printf("\n");
            rc = shoal_fail(SHOAL_ERR_TIMEOUT, "the run did not end within --time-limit %.0f s",
                            time_limit_s);
            break;
        }
        clock_sleep_ms(UP_POLL_MS);
    }
    if (rc == SHOAL_OK && s_interrupted) {
        if (tty)
            printf("\n");
        rc = shoal_fail(SHOAL_ERR_ABORTED, "interrupted");
    }
    res->elapsed_s = (double)(clock_mono_ms() - t0) / 1000.0;
    return rc;
}

static shoal_err_t s_start_cluster(s_up_t *u)
{
    shoal_err_t rc = s_make_tmp(u->tmp, sizeof(u->tmp));
    if (rc != SHOAL_OK)
        return rc;
    char logs[PATH_MAX], coord_state[PATH_MAX], coord_bin[PATH_MAX], worker_bin[PATH_MAX];
    int port = 0;
    SHOAL_CHECK_GOTO(fsutil_path(logs, sizeof(logs), "%s/logs", u->tmp), rc, out);
    SHOAL_CHECK_GOTO(fsutil_mkdir_p(logs), rc, out);
    SHOAL_CHECK_GOTO(fsutil_path(coord_state, sizeof(coord_state), "%s/coordinator", u->tmp), rc,
                     out);
    SHOAL_CHECK_GOTO(fsutil_path(u->control, sizeof(u->control), "ipc://%s/ctl.sock", u->tmp), rc,
                     out);
    SHOAL_CHECK_GOTO(fsutil_path(coord_bin, sizeof(coord_bin), "%s/shoal-coordinator", u->bindir),
                     rc, out);
    SHOAL_CHECK_GOTO(fsutil_path(worker_bin, sizeof(worker_bin), "%s/shoal-worker", u->bindir), rc,
                     out);
    if (access(coord_bin, X_OK) != 0 || access(worker_bin, X_OK) != 0) {
        rc = shoal_fail(SHOAL_ERR_NOTFOUND,
                        "%s: %s (shoalctl up runs the daemons installed "
                        "beside it)",
                        access(coord_bin, X_OK) != 0 ? coord_bin : worker_bin, strerror(errno));
        goto out;
    }
    SHOAL_CHECK_GOTO(s_free_port(&port), rc, out);
    snprintf(u->listen, sizeof(u->listen), "tcp://127.0.0.1:%d", port);

    snprintf(u->coord.name, sizeof(u->coord.name), "coordinator");
    SHOAL_CHECK_GOTO(fsutil_path(u->coord.log, sizeof(u->coord.log), "%s/coordinator.log", logs),
                     rc, out);
    /* CURVE even on loopback: a key pair per daemon, the workers' keys on the allow-list */
    char keys_root[PATH_MAX], coord_cfg[PATH_MAX];
    SHOAL_CHECK_GOTO(fsutil_path(keys_root, sizeof(keys_root), "%s/keys", u->tmp), rc, out);
    SHOAL_CHECK_GOTO(s_up_keys(keys_root, u->n_workers, coord_cfg, sizeof coord_cfg), rc, out);
    char *cargv[] = {coord_bin, "--state-dir", coord_state, "--listen", u->listen,
                     "--control", u->control, "--config", coord_cfg, NULL};
    SHOAL_CHECK_GOTO(child_spawn(&u->coord, cargv, "shoalctl up"), rc, out);

    for (int i = 0; i < u->n_workers; i++) {
        child_t *w = &u->workers[i];
        char state[PATH_MAX];
        snprintf(w->name, sizeof(w->name), "local-%d", i + 1);
        SHOAL_CHECK_GOTO(fsutil_path(state, sizeof(state), "%s/%s", u->tmp, w->name), rc, out);
        SHOAL_CHECK_GOTO(fsutil_mkdir_p(state), rc, out);
        SHOAL_CHECK_GOTO(fsutil_path(w->log, sizeof(w->log), "%s/%s.log", logs, w->name), rc, out);
        char wkeys[PATH_MAX];
        SHOAL_CHECK_GOTO(fsutil_path(wkeys, sizeof(wkeys), "%s/worker-%d", keys_root, i + 1), rc,
                         out);
        char *wargv[] = {worker_bin, "--coordinator", u->listen, "--name", w->name,
                         "--state-dir", state, "--keys", wkeys, NULL};
        SHOAL_CHECK_GOTO(child_spawn(w, wargv, "shoalctl up"), rc, out);
    }
out:
    return rc;
}

int cmd_up(ctl_opts_t *o, int argc, char **argv)
{
    const char *workers_s = NULL, *out_s = NULL, *limit_s = NULL;
    bool keep = false;
    const ctl_optdef_t defs[] = {{"workers", true, &workers_s, NULL},
                                 {"out", true, &out_s, NULL},
                                 {"time-limit", true, &limit_s, NULL},
                                 {"keep", false, NULL, &keep},
                                 {NULL, false, NULL, NULL}};
    const char *spec_path;
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, NULL, &spec_path);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    s_up_t *u = calloc(1, sizeof(*u));
    if (!u)
        return ctl_error(o, "out of memory");
    u->o = o;
    u->n_workers = 2;
    double time_limit = 0;
    if (workers_s && numparse_int(workers_s, 1, UP_MAX_WORKERS, &u->n_workers) != SHOAL_OK) {
        free(u);
        return ctl_usage_error(o, s_usage, "--workers: expected 1..%d, got '%s'", UP_MAX_WORKERS,
                               workers_s);
    }
    if (limit_s && (numparse_double(limit_s, &time_limit) != SHOAL_OK || !(time_limit > 0))) {
        free(u);
        return ctl_usage_error(o, s_usage, "--time-limit: expected seconds > 0, got '%s'", limit_s);
    }

    runspec_t *spec = malloc(sizeof(*spec));
    char *text = NULL, out_dir[PATH_MAX] = "";
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    ctl_client_t *c = NULL;
    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    s_result_t res = {0};
    bool started = false;
    shoal_err_t rc;
    ex = CTL_EXIT_ERROR;
    if (!spec) {
        ctl_error(o, "out of memory");
        goto out;
    }
    /* The spec first: a typo should not cost a cluster start. */
    if (spec_path) {
        if (runspec_load_file(spec_path, spec) != SHOAL_OK ||
            fsutil_read_file(spec_path, &raw, &raw_len) != SHOAL_OK) {
            ctl_error(o, "%s", shoal_errmsg());
            goto out;
        }
        text = submit_spec_text(spec_path, (const char *)raw, spec);
    } else {
        if (runspec_load_string(runspec_default_yaml(), "<embedded tiny-fortunes>", spec) !=
            SHOAL_OK) {
            ctl_error(o, "%s", shoal_errmsg());
            goto out;
        }
        text = strdup(runspec_default_yaml());
    }
    if (!text) {
        ctl_error(o, "out of memory");
        goto out;
    }
    if (out_s)
        snprintf(out_dir, sizeof(out_dir), "%s", out_s);
    else
        snprintf(out_dir, sizeof(out_dir), "shoal-out/%s", spec->name);

    if (s_bindir(u->bindir, sizeof(u->bindir)) != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    started = true;
    if ((rc = s_start_cluster(u)) != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    printf("shoal up: coordinator on %s (control %s), %d worker%s, state in %s\n", u->listen,
           u->control, u->n_workers, u->n_workers == 1 ? "" : "s", u->tmp);
    fflush(stdout);
    if (!(c = ctl_client_new(u->control, o->timeout_ms))) {
        ctl_error(o, "out of memory");
        goto out;
    }
    if ((rc = s_wait_coordinator(u, c)) != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        child_print_log_tail(&u->coord, 15);
        goto out;
    }
    rc = ctl_client_submit(c, text, spec_path ? spec_path : "<embedded tiny-fortunes>", &reply);
    if (ctl_check_reply(o, rc, &reply) != CTL_EXIT_OK)
        goto out;
    doc = ctl_reply_doc(o, &reply);
    const char *run = ctl_json_str(doc, CTL_F_ID, spec->name);
    snprintf(res.id, sizeof(res.id), "%s", run);
    printf("shoal up: run %s (%s): %d steps of %d x %d tokens, model %s\n", spec->name, res.id,
           spec->steps, spec->global_batch, spec->seq_len, spec->model_preset);
    fflush(stdout);

    rc = s_follow(u, c, res.id, (long long)spec->global_batch * spec->seq_len, time_limit, &res);
    if (rc != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        for (int i = 0; i < u->n_workers; i++)
            if (u->workers[i].exited)
                child_print_log_tail(&u->workers[i], 8);
        if (u->coord.exited)
            child_print_log_tail(&u->coord, 15);
        goto out;
    }
    char took[32];
    ctl_format_duration(res.elapsed_s, took, sizeof(took));
    if (strcmp(res.state, "done") != 0) {
        ctl_error(o, "run %s ended %s at step %lld/%lld after %s%s%s (logs in %s/logs)", spec->name,
                  res.state, res.step, res.total, took, res.reason[0] ? ": " : "", res.reason,
                  u->tmp);
        keep = true; /* the logs are the only explanation */
        goto out;
    }
    printf("shoal up: run %s done: %lld steps in %s, loss %.4f -> %.4f\n", spec->name, res.step,
           took, res.first_loss, res.last_loss);
    ex = CTL_EXIT_OK;
out:
    if (started) {
        ctl_client_destroy(&c); /* before the coordinator goes: no lingering requests */
        s_stop_all(u);
    }
    if (ex == CTL_EXIT_OK) {
        long long got = -1;
        if (s_export(u, res.ckpt_step, out_dir, &got) == SHOAL_OK) {
            char *abs = realpath(out_dir, NULL);
            printf("shoal up: final model (checkpoint of step %lld) in %s/\n", got,
                   abs ? abs : out_dir);
            free(abs);
        } else {
            ctl_error(o, "copying the final model to %s: %s", out_dir, shoal_errmsg());
            keep = true;
            ex = CTL_EXIT_ERROR;
        }
    }
    if (started && u->tmp[0]) {
        if (keep)
            printf("shoal up: state dir kept: %s (logs in %s/logs)\n", u->tmp, u->tmp);
        else if (fsutil_remove_tree(u->tmp) != SHOAL_OK)
            ctl_error(o, "removing %s: %s", u->tmp, shoal_errmsg());
    }
    fflush(stdout);
    json_decref(doc);
    ctl_reply_fini(&reply);
    ctl_client_destroy(&c);
    free(text);
    free(raw);
    free(spec);
    free(u);
    return ex;
}
