/* coord_testlib.c: start/stop the real coordinator, control client, fake worker (see .h). */
#include "coord_testlib.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "clock.h"

static void *s_ctx;

static void *s_zctx(void)
{
    if (!s_ctx)
        s_ctx = zmq_ctx_new();
    return s_ctx;
}

void tc_sleep_ms(int ms)
{
    clock_sleep_ms(ms);
}

void tc_worker_endpoint(const char *dir, char *buf, size_t cap)
{
    snprintf(buf, cap, "ipc://%s/w.sock", dir);
}

void tc_control_endpoint(const char *dir, char *buf, size_t cap)
{
    snprintf(buf, cap, "ipc://%s/control.sock", dir);
}

pid_t tc_start(const char *dir, const char *yaml)
{
    pid_t pid = tc_start_bin(SHOAL_COORDINATOR_BIN, dir, yaml);
    if (pid < 0)
        exit(1);
    return pid;
}

static pid_t s_start(const char *bin, const char *dir, const char *listen, const char *yaml);

pid_t tc_start_bin(const char *bin, const char *dir, const char *yaml)
{
    char listen[300];
    tc_worker_endpoint(dir, listen, sizeof listen);
    return s_start(bin, dir, listen, yaml);
}

pid_t tc_start_listen(const char *dir, const char *listen, const char *yaml)
{
    return s_start(SHOAL_COORDINATOR_BIN, dir, listen, yaml);
}

static pid_t s_start(const char *bin, const char *dir, const char *listen, const char *yaml)
{
    char cfg[512], log[512];
    snprintf(cfg, sizeof cfg, "%s/coordinator.yaml", dir);
    FILE *f = fopen(cfg, "w");
    if (!f) {
        perror(cfg);
        exit(1);
    }
    fputs(yaml ? yaml : "", f);
    fclose(f);
    snprintf(log, sizeof log, "%s/coordinator.log", dir);
    pid_t pid = fork();
    if (pid == 0) {
        /* never outlive the test (a failed assertion jumps past tc_stop), and never hold the
         * test's stdout open (ctest waits for it) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, "shoal-coordinator", "--state-dir", dir, "--listen", listen, "--config", cfg,
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        tc_reply_t r;
        if (tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_STATUS, "", 0, &r) == 0) {
            tc_reply_fini(&r);
            return pid;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "coordinator exited during start (see %s)\n", log);
            return -1;
        }
    }
    fprintf(stderr, "coordinator did not answer (see %s)\n", log);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

int tc_stop(pid_t pid, int sig)
{
    int st = 0;
    kill(pid, sig);
    waitpid(pid, &st, 0);
    return st;
}

int tc_alive(pid_t pid)
{
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

void tc_reply_fini(tc_reply_t *r)
{
    json_decref(r->json);
    r->json = NULL;
}

typedef struct {
    tc_reply_t *out;
    int got;
} s_ctl_ctx_t;

static void s_on_ctl_reply(const Shoal__Envelope *env, void *ctxp)
{
    s_ctl_ctx_t *ctx = ctxp;
    if (env->type != SHOAL__MSG_TYPE__MSG_CTL_REPLY)
        return;
    ctx->got = 1;
    ctx->out->ok = env->ctl_reply->ok;
    ctx->out->code = env->ctl_reply->code;
    snprintf(ctx->out->message, sizeof ctx->out->message, "%s", env->ctl_reply->message);
    ctx->out->json = env->ctl_reply->json[0] ? json_loads(env->ctl_reply->json, 0, NULL) : NULL;
}

int tc_ctl(const char *dir, Shoal__MsgType type, const char *arg, uint64_t flag, tc_reply_t *out)
{
    return tc_ctl_page(dir, type, arg, flag, 0, out);
}

int tc_ctl_page(const char *dir, Shoal__MsgType type, const char *arg, uint64_t flag,
                unsigned limit, tc_reply_t *out)
{
    memset(out, 0, sizeof *out);
    char ep[300];
    tc_control_endpoint(dir, ep, sizeof ep);
    void *s = zmq_socket(s_zctx(), ZMQ_DEALER);
    int t = 3000, linger = 0;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &t, sizeof t);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &t, sizeof t);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(s, ep);
    Shoal__Envelope env;
    wire_envelope_init(&env, type, "", "ctl", 0, 1);
    Shoal__CtlSubmit sub = SHOAL__CTL_SUBMIT__INIT;
    Shoal__CtlStatus st = SHOAL__CTL_STATUS__INIT;
    Shoal__CtlWorkers wk = SHOAL__CTL_WORKERS__INIT;
    Shoal__CtlWorker one = SHOAL__CTL_WORKER__INIT;
    Shoal__CtlRun run = SHOAL__CTL_RUN__INIT;
    Shoal__CtlEvents ev = SHOAL__CTL_EVENTS__INIT;
    Shoal__CtlPlan pl = SHOAL__CTL_PLAN__INIT;
    env.body_case = wire_body_for_type(type);
    switch (env.body_case) {
    case SHOAL__ENVELOPE__BODY_CTL_SUBMIT:
        sub.spec_yaml = (char *)arg;
        sub.origin = "test.yaml";
        env.ctl_submit = &sub;
        break;
    case SHOAL__ENVELOPE__BODY_CTL_STATUS:
        st.run = (char *)arg;
        env.ctl_status = &st;
        break;
    case SHOAL__ENVELOPE__BODY_CTL_WORKERS:
        env.ctl_workers = &wk;
        break;
    case SHOAL__ENVELOPE__BODY_CTL_WORKER:
        one.worker = (char *)arg;
        env.ctl_worker = &one;
        break;
    case SHOAL__ENVELOPE__BODY_CTL_RUN:
        run.run = (char *)arg;
        env.ctl_run = &run;
        break;
    case SHOAL__ENVELOPE__BODY_CTL_EVENTS:
        ev.run = (char *)arg;
        ev.since = flag;
        ev.limit = limit;
        env.ctl_events = &ev;
        break;
    case SHOAL__ENVELOPE__BODY_CTL_PLAN:
        pl.run = (char *)arg;
        pl.dry_run = flag != 0;
        env.ctl_plan = &pl;
        break;
    default:
        zmq_close(s);
        return -1;
    }
    int rc = -1;
    if (wire_send(s, NULL, &env, 0) == SHOAL_OK) {
        wire_route_t route;
        s_ctl_ctx_t ctx = {out, 0};
        if (wire_recv(s, 0, &route, s_on_ctl_reply, &ctx) == SHOAL_OK && ctx.got)
            rc = 0;
    }
    zmq_close(s);
    return rc;
}

json_t *tc_run_status(const char *dir, const char *run)
{
    tc_reply_t r;
    if (tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_STATUS, run, 0, &r) != 0 || !r.ok || !r.json)
        return NULL;
    json_t *one = json_incref(json_array_get(json_object_get(r.json, "runs"), 0));
    tc_reply_fini(&r);
    return one;
}

/* ---- fake worker ----------------------------------------------------------------------- */

int tc_worker_open(tc_worker_t *w, const char *dir, const char *name)
{
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", name);
    char ep[300];
    tc_worker_endpoint(dir, ep, sizeof ep);
    w->sock = zmq_socket(s_zctx(), ZMQ_DEALER);
    int linger = 0, ivl = 50;
    zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    w->rank = -1;
    return zmq_connect(w->sock, ep);
}

void tc_worker_close(tc_worker_t *w)
{
    if (w->sock)
        zmq_close(w->sock);
    w->sock = NULL;
}

typedef struct {
    tc_worker_t *w;
    uint64_t want_seq;
    int answered; /* 1 ack, 2 error */
    int code;
} s_wctx_t;

static void s_on_worker_push(const Shoal__Envelope *env, void *ctxp)
{
    s_wctx_t *ctx = ctxp;
    tc_worker_t *w = ctx->w;
    switch (env->type) {
    case SHOAL__MSG_TYPE__MSG_REGISTER_REPLY:
        if (env->reg_reply->accepted)
            snprintf(w->id, sizeof w->id, "%s", env->reg_reply->worker_id);
        ctx->answered = env->reg_reply->accepted ? 1 : 2;
        break;
    case SHOAL__MSG_TYPE__MSG_ASSIGNMENT: {
        const Shoal__Assignment *a = env->assignment;
        snprintf(w->run, sizeof w->run, "%s", env->run_id);
        w->gen = a->plan->generation;
        w->rank = (int)a->rank;
        w->dp = a->plan->topology->dp;
        w->start_step = a->plan->start_step;
        w->source = a->plan->source;
        w->source_rank = (int)a->plan->source_rank;
        w->lease = a->lease;
        w->n_assignments++;
        if (w->gen > w->max_gen)
            w->max_gen = w->gen;
        if (w->on_assignment)
            w->on_assignment(w->on_assignment_arg, env, shoal__envelope__get_packed_size(env));
        if (ctx->want_seq == (uint64_t)-1)
            ctx->answered = 1;
        break;
    }
    case SHOAL__MSG_TYPE__MSG_STEP_COMMIT:
        if (strcmp(env->run_id, w->run) == 0 && env->generation == w->gen) {
            w->committed = env->step_commit->step;
            w->lease = env->step_commit->lease;
            if (w->committed > w->max_committed)
                w->max_committed = w->committed;
        }
        break;
    case SHOAL__MSG_TYPE__MSG_RUN_CONTROL:
        w->run_command = env->run_control->command;
        snprintf(w->control_run, sizeof w->control_run, "%s", env->run_id);
        w->control_gen = env->generation;
        if (env->run_control->command == SHOAL__RUN_COMMAND__RUN_CMD_STOP &&
            strcmp(env->run_id, w->run) == 0) {
            w->got_stop = 1;
            w->run[0] = 0;
            w->rank = -1;
        }
        break;
    case SHOAL__MSG_TYPE__MSG_COMM_ID:
        w->n_comm_ids++;
        snprintf(w->comm_group, sizeof w->comm_group, "%s", env->comm_id->group);
        snprintf(w->comm_sender, sizeof w->comm_sender, "%s", env->sender);
        w->comm_id_len = env->comm_id->id.len <= sizeof w->comm_id ? env->comm_id->id.len : 0;
        memcpy(w->comm_id, env->comm_id->id.data, w->comm_id_len);
        break;
    case SHOAL__MSG_TYPE__MSG_REPLICATE: {
        const Shoal__Replicate *rp = env->replicate;
        w->n_replicates++;
        snprintf(w->repl_run, sizeof w->repl_run, "%s", env->run_id);
        w->repl_step = rp->step;
        w->n_repl_files = 0;
        if (rp->n_copies) {
            const Shoal__ReplicaCopy *k = rp->copies[0];
            snprintf(w->repl_writer, sizeof w->repl_writer, "%s", k->writer);
            for (size_t i = 0; i < k->n_files && i < 4; i++, w->n_repl_files++) {
                snprintf(w->repl_file[i], sizeof w->repl_file[i], "%s", k->files[i]->name);
                snprintf(w->repl_sha[i], sizeof w->repl_sha[i], "%s", k->files[i]->sha256);
                w->repl_size[i] = k->files[i]->size;
            }
        }
        break;
    }
    case SHOAL__MSG_TYPE__MSG_DRAIN:
        w->drained = 1;
        snprintf(w->drain_run, sizeof w->drain_run, "%s", env->run_id);
        w->drain_gen = env->generation;
        break;
    case SHOAL__MSG_TYPE__MSG_ACK:
        w->last_directive = env->ack->directive;
        if (env->ack->acked_seq == ctx->want_seq)
            ctx->answered = 1;
        break;
    case SHOAL__MSG_TYPE__MSG_ERROR:
        if (env->error->about_seq == ctx->want_seq || env->error->about_seq == 0) {
            ctx->answered = 2;
            ctx->code = env->error->code;
            w->last_error = env->error->code;
            snprintf(w->error_run, sizeof w->error_run, "%s", env->run_id);
            w->error_gen = env->generation;
        }
        break;
    default:
        break;
    }
}

static void s_pump_until(tc_worker_t *w, s_wctx_t *ctx, int ms)
{
    int64_t until = clock_mono_ms() + ms;
    while (!ctx->answered) {
        int64_t left = until - clock_mono_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t it = {w->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)left) <= 0)
            continue;
        wire_route_t route;
        while (wire_recv(w->sock, ZMQ_DONTWAIT, &route, s_on_worker_push, ctx) !=
                   SHOAL_ERR_TIMEOUT &&
               !ctx->answered)
            ;
    }
}

void tc_worker_pump(tc_worker_t *w, int ms)
{
    s_wctx_t ctx = {w, (uint64_t)-2, 0, 0};
    s_pump_until(w, &ctx, ms);
}

/* raw: packed as is, without wire_check (hostile input the coordinator must refuse) */
/* Fills env's run, sender, generation and seq from w and sends it; 0, or -1 when not sent. */
static int s_send_env(tc_worker_t *w, Shoal__Envelope *env, int raw)
{
    env->run_id = w->run;
    env->sender = w->id;
    env->generation = w->gen;
    env->seq = ++w->seq;
    if (raw) {
        size_t len = shoal__envelope__get_packed_size(env);
        uint8_t *buf = malloc(len + 1);
        if (!buf)
            return -1;
        shoal__envelope__pack(env, buf);
        int sent = zmq_send(w->sock, buf, len, 0);
        free(buf);
        if (sent < 0)
            return -1;
    } else if (wire_send(w->sock, NULL, env, 0) != SHOAL_OK) {
        return -1;
    }
    return 0;
}

static int s_call(tc_worker_t *w, Shoal__Envelope *env, int raw)
{
    if (s_send_env(w, env, raw) != 0)
        return -1;
    s_wctx_t ctx = {w, env->seq, 0, 0};
    if (env->type == SHOAL__MSG_TYPE__MSG_REGISTER)
        ctx.want_seq = (uint64_t)-3; /* answered by RegisterReply */
    if (env->type == SHOAL__MSG_TYPE__MSG_GET_ASSIGNMENT)
        ctx.want_seq = (uint64_t)-1; /* answered by an Assignment (or an Ack) */
    s_pump_until(w, &ctx, 2000);
    if (!ctx.answered && env->type == SHOAL__MSG_TYPE__MSG_GET_ASSIGNMENT)
        return -1;
    if (!ctx.answered)
        return -1;
    return ctx.answered == 1 ? 0 : (ctx.code ? ctx.code : 99);
}

int tc_worker_call(tc_worker_t *w, Shoal__Envelope *env)
{
    return s_call(w, env, 0);
}

int tc_worker_call_raw(tc_worker_t *w, Shoal__Envelope *env)
{
    return s_call(w, env, 1);
}

int tc_worker_register(tc_worker_t *w)
{
    Shoal__Register rg = SHOAL__REGISTER__INIT;
    char *devs[] = {"cpu"};
    rg.name = w->name;
    rg.host = "localhost";
    rg.devices = devs;
    rg.n_devices = 1;
    rg.memory_bytes = 1u << 30;
    rg.institution = "test";
    rg.version = "0.1.0";
    char ep[96];
    snprintf(ep, sizeof ep, "ipc:///tmp/%s-data.sock", w->name);
    rg.data_endpoint = ep;
    rg.shard_endpoint = w->shard_endpoint;
    if (w->id[0]) {
        rg.prev_id_case_case = SHOAL__REGISTER__PREV_ID_CASE_PREV_ID;
        rg.prev_id = w->id;
    }
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_REGISTER, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_REG;
    env.reg = &rg;
    int rc = tc_worker_call(w, &env);
    return rc;
}

int tc_worker_heartbeat(tc_worker_t *w, int64_t step)
{
    return tc_worker_heartbeat_activity(w, step, SHOAL__WORKER_ACTIVITY__ACTIVITY_TRAINING);
}

int tc_worker_heartbeat_activity(tc_worker_t *w, int64_t step, int activity)
{
    return tc_worker_heartbeat_detail(
        w, step, activity,
        activity == SHOAL__WORKER_ACTIVITY__ACTIVITY_FAILED ? "allreduce timed out" : "");
}

int tc_worker_heartbeat_detail(tc_worker_t *w, int64_t step, int activity, const char *detail)
{
    Shoal__Heartbeat hb = SHOAL__HEARTBEAT__INIT;
    hb.step = step;
    hb.loss = 2.5f;
    hb.tokens_per_s = 1000;
    hb.activity = (Shoal__WorkerActivity)activity;
    hb.detail = (char *)detail;
    hb.timestamp_ms = 1;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    return tc_worker_call(w, &env);
}

int tc_worker_step(tc_worker_t *w, int64_t step, float loss)
{
    return tc_worker_step_timed(w, step, loss, 0.01f, 0.0f);
}

/* A StepReport: sent and answered (wait), or only sent. */
static int s_step(tc_worker_t *w, int64_t step, float loss, float secs, float comm_secs, int wait)
{
    Shoal__StepReport sr = SHOAL__STEP_REPORT__INIT;
    sr.step = step;
    sr.loss = loss;
    sr.tokens = 2048;
    sr.duration_s = secs;
    sr.comm_seconds = comm_secs;
    sr.grad_norm = 1.0f;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_STEP_REPORT, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_STEP_REPORT;
    env.step_report = &sr;
    return wait ? tc_worker_call(w, &env) : s_send_env(w, &env, 0);
}

int tc_worker_step_timed(tc_worker_t *w, int64_t step, float loss, float secs, float comm_secs)
{
    return s_step(w, step, loss, secs, comm_secs, 1);
}

int tc_worker_step_send(tc_worker_t *w, int64_t step, float loss)
{
    return s_step(w, step, loss, 0.5f, 0.0f, 0);
}

int tc_worker_ckpt(tc_worker_t *w, int64_t step)
{
    char name[64], path[128];
    snprintf(name, sizeof name, "shard-%d.safetensors", w->rank);
    snprintf(path, sizeof path, "/ckpt/%s/step-%lld", w->run, (long long)step);
    Shoal__FileDigest fd = SHOAL__FILE_DIGEST__INIT;
    Shoal__FileDigest *fdp[1] = {&fd};
    fd.name = name;
    fd.size = 4096;
    fd.sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    Shoal__CheckpointShardReport ck = SHOAL__CHECKPOINT_SHARD_REPORT__INIT;
    ck.step = step;
    ck.path = path;
    ck.files = fdp;
    ck.n_files = 1;
    ck.holder = w->id;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_CKPT_SHARD, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_CKPT_SHARD;
    env.ckpt_shard = &ck;
    return tc_worker_call(w, &env);
}

int tc_worker_shard_held(tc_worker_t *w)
{
    char path[160];
    snprintf(path, sizeof path, "/copies/%s/step-%lld", w->repl_writer, (long long)w->repl_step);
    Shoal__FileDigest fd[4], *fdp[4];
    for (int i = 0; i < w->n_repl_files; i++) {
        Shoal__FileDigest init = SHOAL__FILE_DIGEST__INIT;
        fd[i] = init;
        fd[i].name = w->repl_file[i];
        fd[i].size = w->repl_size[i];
        fd[i].sha256 = w->repl_sha[i];
        fdp[i] = &fd[i];
    }
    Shoal__CheckpointShardReport ck = SHOAL__CHECKPOINT_SHARD_REPORT__INIT;
    ck.step = w->repl_step;
    ck.path = path;
    ck.files = fdp;
    ck.n_files = (size_t)w->n_repl_files;
    ck.holder = w->id;
    ck.replica_of = w->repl_writer;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_SHARD_HELD, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_CKPT_SHARD;
    env.ckpt_shard = &ck;
    char run[64];
    snprintf(run, sizeof run, "%s", w->run);
    snprintf(w->run, sizeof w->run, "%s", w->repl_run); /* a spare holds no run */
    int rc = tc_worker_call(w, &env);
    snprintf(w->run, sizeof w->run, "%s", run);
    return rc;
}

int tc_worker_shard_corrupt(tc_worker_t *w, int64_t step, const char *writer, const char *holder)
{
    Shoal__CheckpointShardReport ck = SHOAL__CHECKPOINT_SHARD_REPORT__INIT;
    ck.step = step;
    ck.path = "/copies/corrupt";
    ck.holder = (char *)holder;
    ck.replica_of = (char *)writer;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_SHARD_CORRUPT, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_CKPT_SHARD;
    env.ckpt_shard = &ck;
    return tc_worker_call(w, &env);
}

int tc_worker_get_assignment(tc_worker_t *w)
{
    Shoal__GetAssignment ga = SHOAL__GET_ASSIGNMENT__INIT;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_GET_ASSIGNMENT, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_GET_ASSIGNMENT;
    env.get_assignment = &ga;
    return tc_worker_call(w, &env);
}

int tc_tmpdir_make(char *buf, size_t cap, const char *prefix)
{
    if ((size_t)snprintf(buf, cap, "/tmp/%s-XXXXXX", prefix) >= cap)
        return -1;
    return mkdtemp(buf) ? 0 : -1;
}

int tc_tmpdir_make_with(char *root, size_t root_cap, char *dir, size_t dir_cap,
                        const char *prefix)
{
    if (tc_tmpdir_make(root, root_cap, prefix) != 0 ||
        (size_t)snprintf(dir, dir_cap, "%s/t", root) >= dir_cap)
        return -1;
    return mkdir(dir, 0755);
}

int tc_tmpdir_remove(const char *dir)
{
    if (getenv("SHOAL_KEEP_TEST_DIR"))
        return 0;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

pid_t tc_pid;

int tc_kill_leftover(void **state)
{
    (void)state;
    if (tc_pid > 0 && tc_alive(tc_pid))
        tc_stop(tc_pid, SIGKILL);
    tc_pid = 0;
    return 0;
}

const char *tc_jstr(const json_t *obj, const char *k)
{
    const char *v = json_string_value(json_object_get(obj, k));
    return v ? v : "";
}

json_int_t tc_jint(const json_t *obj, const char *k)
{
    return json_integer_value(json_object_get(obj, k));
}

const char *tc_worker_state(const char *dir, const char *id)
{
    return tc_worker_field(dir, id, "state");
}

const char *tc_worker_field(const char *dir, const char *id, const char *field)
{
    static char out[256];
    tc_reply_t r;
    out[0] = 0;
    if (tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_WORKERS, "", 0, &r) != 0)
        return out;
    json_t *arr = json_object_get(r.json, "workers");
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (strcmp(tc_jstr(json_array_get(arr, i), "id"), id) == 0)
            snprintf(out, sizeof out, "%s", tc_jstr(json_array_get(arr, i), field));
    tc_reply_fini(&r);
    return out;
}

void tc_beat(tc_worker_t **ws, int n, int ms, int hb_ms, int64_t step, bool reregister)
{
    for (int t = 0; t < ms; t += hb_ms / 2) {
        for (int i = 0; i < n; i++)
            if (ws[i]) {
                if (tc_worker_heartbeat(ws[i], step) == SHOAL__ERROR_CODE__ERR_UNKNOWN_WORKER &&
                    reregister)
                    (void)tc_worker_register(ws[i]);
                tc_worker_pump(ws[i], 1);
            }
        tc_sleep_ms(hb_ms / 2);
    }
}
