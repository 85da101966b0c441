/* bench_coordinator_msgs: heartbeats + acks per second that one coordinator (the real
 * coord_* loop, in a child process pinned to one core) handles from many simulated workers
 * (DEALER sockets over ipc://, each keeping a window of heartbeats in flight).
 *
 *   bench_coordinator_msgs [WORKERS=64] [SECONDS=3] [WINDOW=16] [--curve]
 *
 * --curve: the same load over loopback TCP twice in one run, plaintext then CURVE (every worker
 * with its own allow-listed key), and the CURVE rate as a fraction of the plaintext one.
 *
 * Prints the figure; exits 1 if the coordinator did not answer. Label bench (not run by
 * default). */
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zmq.h>

#include "clock.h"
#include "config.h"
#include "coord.h"
#include "log.h"
#include "wire.h"
#include "zsec.h"

/* Transports measured: the default ipc, and loopback TCP without and with CURVE (--curve). */
typedef enum { S_IPC, S_TCP, S_CURVE } s_mode_t;

static volatile sig_atomic_t s_stop;

static void s_on_term(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void s_pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)sched_setaffinity(0, sizeof set, &set);
}

/* CPU seconds (user + system) used so far by process `pid`, from /proc. */
static double s_cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int s_coordinator(const char *dir, const char *listen)
{
    s_pin(0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_term;
    sigaction(SIGTERM, &sa, NULL);
    log_set_component("coordinator");
    log_set_level(LOG_LVL_WARN);
    coord_config_t cfg;
    config_defaults(&cfg);
    char keys[300], allow[300];
    snprintf(keys, sizeof keys, "%s/keys/coord", dir);
    snprintf(allow, sizeof allow, "%s/keys/allow", dir);
    const int curve = access(allow, R_OK) == 0;
    if ((curve && (config_set(&cfg, "keys_dir", keys, "bench") != SHOAL_OK ||
                   config_set(&cfg, "allow_list", allow, "bench") != SHOAL_OK)) ||
        (!curve && config_set(&cfg, "insecure", "1", "bench") != SHOAL_OK) ||
        config_set(&cfg, "state_dir", dir, "bench") != SHOAL_OK ||
        config_set(&cfg, "listen", listen, "bench") != SHOAL_OK ||
        config_set(&cfg, "dead_after_ms", "600000", "bench") != SHOAL_OK ||
        /* the raw throughput: no per-connection rate limit (a simulated worker sends thousands
         * a second) */
        config_set(&cfg, "rate_limit_msgs_per_s", "0", "bench") != SHOAL_OK ||
        config_finish(&cfg) != SHOAL_OK) {
        fprintf(stderr, "config: %s\n", shoal_errmsg());
        return 1;
    }
    coord_t *c = NULL;
    if (coord_new(&cfg, &c) != SHOAL_OK) {
        fprintf(stderr, "coordinator: %s\n", shoal_errmsg());
        return 1;
    }
    shoal_err_t rc = coord_run(c, &s_stop);
    unsigned long long handled, dropped;
    coord_counters(c, &handled, &dropped);
    fprintf(stderr, "coordinator: %llu messages handled, %llu dropped\n", handled, dropped);
    coord_destroy(&c);
    return rc == SHOAL_OK ? 0 : 1;
}

typedef struct {
    char id[64];
    int ok;
} s_reg_t;

static void s_on_reg(const Shoal__Envelope *env, void *ctx)
{
    s_reg_t *r = ctx;
    if (env->type == SHOAL__MSG_TYPE__MSG_REGISTER_REPLY && env->reg_reply->accepted) {
        snprintf(r->id, sizeof r->id, "%s", env->reg_reply->worker_id);
        r->ok = 1;
    }
}

/* A free loopback TCP port. */
static int s_free_port(void)
{
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
    char last[64] = "";
    size_t len = sizeof last;
    int port = 0;
    if (zmq_bind(s, "tcp://127.0.0.1:*") == 0 &&
        zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, last, &len) == 0 && strrchr(last, ':'))
        port = atoi(strrchr(last, ':') + 1);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return port;
}

/* CURVE: the coordinator's pair, one pair a worker (keys[i]) and the allow-list, under dir. */
static int s_make_keys(const char *dir, int n, zsec_keys_t *keys, zsec_keys_t *coord)
{
    char path[300];
    snprintf(path, sizeof path, "%s/keys/coord", dir);
    if (zsec_keys_generate(coord) != SHOAL_OK || zsec_keys_write(path, coord) != SHOAL_OK)
        return -1;
    snprintf(path, sizeof path, "%s/keys/allow", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (int i = 0; i < n; i++) {
        if (zsec_keys_generate(&keys[i]) != SHOAL_OK) {
            fclose(f);
            return -1;
        }
        fprintf(f, "worker bench %s\n", keys[i].public_key);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* One measurement: heartbeat+ack per second over `mode`, or -1 on failure. */
static double s_measure(int n, double seconds, int window, s_mode_t mode)
{
    char dir[] = "/tmp/shoal-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return -1;
    }
    char ep[256];
    if (mode == S_IPC)
        snprintf(ep, sizeof ep, "ipc://%s/w.sock", dir);
    else
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", s_free_port());
    zsec_keys_t coord, *keys = calloc((size_t)n, sizeof *keys);
    if (!keys || (mode == S_CURVE && s_make_keys(dir, n, keys, &coord) != 0)) {
        fprintf(stderr, "keys: %s\n", shoal_errmsg());
        free(keys);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0)
        _exit(s_coordinator(dir, ep));
    s_pin(1);

    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, n + 16); /* the default stops at 1023 */
    void **socks = calloc((size_t)n, sizeof *socks);
    uint8_t **hb = calloc((size_t)n, sizeof *hb);
    size_t *hb_len = calloc((size_t)n, sizeof *hb_len);
    zmq_pollitem_t *items = calloc((size_t)n, sizeof *items);
    int *inflight = calloc((size_t)n, sizeof *inflight);
    double rate = -1;
    for (int i = 0; i < n; i++) {
        socks[i] = zmq_socket(ctx, ZMQ_DEALER);
        if (!socks[i]) {
            fprintf(stderr, "worker %d: zmq_socket: %s\n", i, zmq_strerror(zmq_errno()));
            goto out;
        }
        int t = 5000, linger = 0;
        zmq_setsockopt(socks[i], ZMQ_RCVTIMEO, &t, sizeof t);
        zmq_setsockopt(socks[i], ZMQ_LINGER, &linger, sizeof linger);
        if (mode == S_CURVE && zsec_client(socks[i], &keys[i], coord.public_key) != SHOAL_OK)
            goto out;
        zmq_connect(socks[i], ep);
        items[i] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
    }
    /* register everyone (the coordinator may still be starting: retry) */
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "bench-%d", i);
        Shoal__Register rg = SHOAL__REGISTER__INIT;
        rg.name = name;
        rg.host = "localhost";
        Shoal__Envelope env;
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_REGISTER, "", "", 0, 1);
        env.body_case = SHOAL__ENVELOPE__BODY_REG;
        env.reg = &rg;
        s_reg_t reg = {"", 0};
        wire_route_t route;
        /* the coordinator may still be starting: a few tries */
        for (int t = 0; t < 20 && !reg.ok; t++)
            if (wire_send(socks[i], NULL, &env, 0) != SHOAL_OK ||
                wire_recv(socks[i], 0, &route, s_on_reg, &reg) != SHOAL_OK)
                clock_sleep_ms(100);
        if (!reg.ok) {
            fprintf(stderr, "worker %d: registration failed\n", i);
            goto out;
        }
        Shoal__Heartbeat h = SHOAL__HEARTBEAT__INIT;
        h.activity = SHOAL__WORKER_ACTIVITY__ACTIVITY_IDLE;
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, "", reg.id, 0, 2);
        env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
        env.heartbeat = &h;
        if (wire_pack(&env, &hb[i], &hb_len[i]) != SHOAL_OK)
            goto out;
    }
    /* warm-up: each worker's first heartbeat makes it active (one synced write each) */
    for (int i = 0; i < n; i++) {
        char buf[256];
        zmq_send(socks[i], hb[i], hb_len[i], 0);
        if (zmq_recv(socks[i], buf, sizeof buf, 0) < 0) {
            fprintf(stderr, "worker %d: no ack\n", i);
            goto out;
        }
    }
    unsigned long long acks = 0;
    double t0 = clock_mono_s(), end = t0 + seconds, cpu0 = s_cpu_seconds(pid);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < window; k++) {
            zmq_send(socks[i], hb[i], hb_len[i], 0);
            inflight[i]++;
        }
    while (clock_mono_s() < end) {
        if (zmq_poll(items, n, 100) <= 0)
            continue;
        for (int i = 0; i < n; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            char buf[256];
            while (zmq_recv(socks[i], buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
                acks++;
                zmq_send(socks[i], hb[i], hb_len[i], 0);
            }
        }
    }
    double dt = clock_mono_s() - t0, cpu = s_cpu_seconds(pid) - cpu0;
    static const char *const names[] = {"ipc", "tcp", "tcp+curve"};
    printf("bench_coordinator_msgs: %s, %d workers, window %d, %.1f s: %llu heartbeat+ack, "
           "%.0f heartbeat+ack/s (coordinator pinned to one core, busy %.0f%%: %.0f/s per "
           "busy core-second)\n",
           names[mode], n, window, dt, acks, (double)acks / dt, 100.0 * cpu / dt,
           cpu > 0 ? (double)acks / cpu : 0.0);
    rate = acks > 0 ? (double)acks / dt : -1;
out:
    for (int i = 0; i < n; i++) {
        if (socks[i])
            zmq_close(socks[i]);
        free(hb[i]);
    }
    zmq_ctx_term(ctx);
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    free(socks);
    free(hb);
    free(hb_len);
    free(items);
    free(inflight);
    free(keys);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rate;
}

int main(int argc, char **argv)
{
    int curve = argc > 1 && strcmp(argv[argc - 1], "--curve") == 0;
    if (curve)
        argc--;
    int n = argc > 1 ? atoi(argv[1]) : 64;
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    int window = argc > 3 ? atoi(argv[3]) : 16;
    if (n < 1 || n > 4096 || seconds <= 0 || window < 1) {
        fprintf(stderr, "usage: bench_coordinator_msgs [WORKERS] [SECONDS] [WINDOW] [--curve]\n");
        return 2;
    }
    if (!curve)
        return s_measure(n, seconds, window, S_IPC) > 0 ? 0 : 1;
    double plain = s_measure(n, seconds, window, S_TCP);
    double sealed = s_measure(n, seconds, window, S_CURVE);
    if (plain <= 0 || sealed <= 0)
        return 1;
    printf("bench_coordinator_msgs: CURVE / plaintext TCP = %.2f (target >= 0.5)\n",
           sealed / plain);
    return 0;
}
