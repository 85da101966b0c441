/* bench_coord_load: one coordinator (the real binary) under N simulated workers (tests/sim/
 * shoal-sim, P driver processes) at 100 ms heartbeats, running a DeepSeek-V3-shaped plan
 * (pp 16 x ep 64 x dp 2 = 2,048 cells, the rest spares) that reports every step and a checkpoint
 * every 10, with churn: one death, join or drain a second. Measures the coordinator's CPU
 * (/proc/PID/stat), memory (VmRSS, VmHWM), disk writes (/proc/PID/io: write syscalls and bytes,
 * RocksDB's WAL and tables), messages answered per second (the drivers' acks), detection
 * latency of the simulated deaths (kill to ledger entry), and `status` / `workers` latency
 * under load. Prints a table; never fails on timing (exit 1 only when nothing ran).
 *
 *   bench_coord_load [WORKERS=10000] [PROCS=4] [SECONDS=150] [RAMP_S=60] [HB_MS=100] [CHURN=1]
 *                    [DELTAS=1] [STEP_MS=1000] [RELAY=0] [HOLD_MS=relay's default]
 *
 * DELTAS 0: the coordinator's plan_deltas off (every member gets the full plan: the baseline).
 * RELAY 1: each host's 8 workers share one connection, as behind `shoal-worker relay` (worker/
 * relay.h): 1,250 connections at 10,000 workers, a host's heartbeats sent together.
 * CHURN 0: no deaths, joins or drains (the steady state: no re-plan in the window). Either way
 * it prints the coordinator's CPU seconds per answered message in the window (the drivers'
 * per-second progress lines count the window's answers), the figure that says what one core
 * answers a second, and how many assignments went out in full and as plan deltas (bytes).
 *
 * Registrations are spread over RAMP_S (each is a synced RocksDB write); churn starts 10 s after
 * the ramp and stops 10 s before the end; the measuring window is [RAMP_S + 15 s, end - 10 s).
 *
 * Label bench. The drivers share the machine with the coordinator: say so with the figures. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "coord_testlib.h"
#include "relay_hold.h"
#include "sim_check.h"

#define S_MAX_PROCS 16
#define S_MAX_SAMPLES 1024

static const char *s_spec = "name: v3-sim\n"
                            "model:\n  preset: tiny\n  vocab_size: 129280\n  hidden_size: 7168\n"
                            "  num_hidden_layers: 61\n  num_attention_heads: 128\n"
                            "  intermediate_size: 18432\n  moe_intermediate_size: 2048\n"
                            "  n_routed_experts: 256\n  n_shared_experts: 1\n"
                            "  num_experts_per_tok: 8\n  n_group: 8\n  topk_group: 4\n"
                            "  first_k_dense_replace: 3\n  max_position_embeddings: 4096\n"
                            "data:\n  files: [/dev/null]\n"
                            "train:\n  steps: 1000000\n  global_batch: 15360\n  seq_len: 4096\n"
                            "  micro_batch: 1\n  lr: 1e-4\n"
                            "checkpoint:\n  every_steps: 10\n"
                            "parallel:\n  pipeline_stages: 16\n  expert_parallel: 64\n"
                            "  data_parallel: 2\n";

typedef struct {
    double cpu_s;
    long rss_kb, hwm_kb;
    unsigned long long syscw, write_bytes, wchar;
} s_proc_t;

static void s_proc(pid_t pid, s_proc_t *p)
{
    memset(p, 0, sizeof *p);
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        char *q = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        if (q && sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            p->cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if ((f = fopen(path, "r"))) {
        while (fgets(buf, sizeof buf, f)) {
            sscanf(buf, "VmRSS: %ld", &p->rss_kb);
            sscanf(buf, "VmHWM: %ld", &p->hwm_kb);
        }
        fclose(f);
    }
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    if ((f = fopen(path, "r"))) {
        while (fgets(buf, sizeof buf, f)) {
            sscanf(buf, "syscw: %llu", &p->syscw);
            sscanf(buf, "write_bytes: %llu", &p->write_bytes);
            sscanf(buf, "wchar: %llu", &p->wchar);
        }
        fclose(f);
    }
}

/* One control request, its round trip in ms (-1: no answer within 3 s). */
static double s_ctl_ms(const char *dir, Shoal__MsgType type, size_t *rows)
{
    tc_reply_t r;
    uint64_t t0 = clock_mono_ns();
    int rc = tc_ctl(dir, type, "", 0, &r);
    double ms = (double)(clock_mono_ns() - t0) / 1e6;
    if (rows)
        *rows = rc == 0 ? json_array_size(json_object_get(r.json, "workers")) : 0;
    if (rc != 0 || !r.ok)
        fprintf(stderr, "bench_coord_load: %s after %.0f ms: %s\n",
                type == SHOAL__MSG_TYPE__MSG_CTL_STATUS ? "status" : "workers", ms,
                rc != 0 ? "no answer" : r.message);
    tc_reply_fini(&r);
    return rc == 0 && r.ok ? ms : -1;
}

/* /proc/loadavg's line ("" when unreadable). */
static void s_loadavg(char *out, size_t cap)
{
    out[0] = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f && fgets(out, (int)cap, f))
        out[strcspn(out, "\n")] = 0;
    if (f)
        fclose(f);
}

static void s_lat_line(const char *what, double *v, int n, int timeouts)
{
    const double p50 = sim_quantile(v, n, 0.5); /* sorts v */
    printf("%-28s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (%d samples, %d without answer)\n",
           what, p50, sim_quantile(v, n, 0.99), n ? v[n - 1] : 0.0, n,
           timeouts);
}

int main(int argc, char **argv)
{
    int workers = argc > 1 ? atoi(argv[1]) : 10000, procs = argc > 2 ? atoi(argv[2]) : 4;
    int seconds = argc > 3 ? atoi(argv[3]) : 150, ramp = argc > 4 ? atoi(argv[4]) : 60;
    const int hb = argc > 5 ? atoi(argv[5]) : 100;
    const int churn_on = argc > 6 ? atoi(argv[6]) : 1;
    const int deltas_on = argc > 7 ? atoi(argv[7]) : 1;
    const int step_ms = argc > 8 ? atoi(argv[8]) : 1000; /* each member's step (a StepReport) */
    const int relay_on = argc > 9 ? atoi(argv[9]) : 0;
    const int hold_ms = argc > 10 ? atoi(argv[10]) : RELAY_DEFAULT_HOLD_MS;
    char hold_txt[24];
    snprintf(hold_txt, sizeof hold_txt, "%d ms", hold_ms);
    if (workers < 1 || procs < 1 || procs > S_MAX_PROCS || ramp < 0 || seconds < ramp + 30 ||
        hb < 10 || hb > 10000 || step_ms < 10 || relay_on < 0 || relay_on > 1 ||
        hold_ms < 0 || hold_ms > 1000) {
        fprintf(stderr, "usage: bench_coord_load [WORKERS] [PROCS <= 16] [SECONDS >= RAMP_S + "
                        "30] [RAMP_S] [HB_MS] [CHURN 0|1] [DELTAS 0|1] [STEP_MS] [RELAY 0|1] [HOLD_MS]\n");
        return 2;
    }
    const int w0 = ramp + 15, w1 = seconds - 10; /* the measuring window, s */
    char dir[256], ep[300], events[300];
    if (tc_tmpdir_make(dir, sizeof dir, "shoal-load"))
        return 1;
    char cfg[200];
    snprintf(cfg, sizeof cfg,
             "heartbeat_interval_ms: %d\ndead_after_ms: %d\nlog_level: warn\nplan_deltas: %d\n",
             hb, hb * 6 > 3000 ? hb * 6 : 3000, deltas_on ? 1 : 0);
    char load0[128];
    s_loadavg(load0, sizeof load0); /* the machine is shared: how loaded it was */
    pid_t coord = tc_start(dir, cfg);
    tc_reply_t r;
    if (tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r) != 0 || !r.ok) {
        fprintf(stderr, "submit: %s\n", r.message);
        tc_stop(coord, SIGKILL);
        return 1;
    }
    char run[128];
    snprintf(run, sizeof run, "%s", tc_jstr(r.json, "id"));
    tc_reply_fini(&r);
    tc_worker_endpoint(dir, ep, sizeof ep);
    snprintf(events, sizeof events, "%s/events.txt", dir);
    /* churn starts 10 s after the ramp, one event a second over all drivers, and stops 10 s
     * before the end */
    pid_t sims[S_MAX_PROCS];
    char logs[S_MAX_PROCS][300];
    for (int i = 0; i < procs; i++) {
        char n[16], first[16], secs[16], churn[16], off[16], seed[16], ramp_ms[16], hbs[16],
            steps[16], hold[16];
        snprintf(n, sizeof n, "%d", workers / procs + (i < workers % procs));
        snprintf(first, sizeof first, "%d", i * (workers / procs) + (i < workers % procs ? i : workers % procs));
        snprintf(secs, sizeof secs, "%d", seconds);
        snprintf(churn, sizeof churn, "%d", churn_on ? procs * 1000 : 0);
        snprintf(off, sizeof off, "%d", (ramp + 10) * 1000 + i * 1000);
        snprintf(ramp_ms, sizeof ramp_ms, "%d", ramp * 1000);
        snprintf(hbs, sizeof hbs, "%d", hb);
        snprintf(steps, sizeof steps, "%d", step_ms);
        snprintf(seed, sizeof seed, "%d", i + 1);
        snprintf(hold, sizeof hold, "%d", hold_ms);
        snprintf(logs[i], sizeof logs[i], "%s/sim-%d.log", dir, i);
        char *av[] = {"shoal-sim", "--connect", ep, "--workers", n, "--first", first,
                      "--seconds", secs, "--hb-ms", hbs, "--step-ms", steps, "--ckpt-every",
                      "10", "--churn-ms", churn, "--churn-offset-ms", off, "--quiet-after-ms",
                      "10000", "--memory-gb", "0", "--ramp-ms", ramp_ms, "--seed", seed,
                      "--events", events, "--relay", relay_on ? "1" : "0", "--hold-ms", hold, NULL};
        sims[i] = sim_spawn(SHOAL_SIM_BIN, av, logs[i]);
    }
    /* samples every second; control latency every other second */
    static double st_ms[S_MAX_SAMPLES], wk_ms[S_MAX_SAMPLES];
    int n_st = 0, n_wk = 0, st_lost = 0, wk_lost = 0;
    size_t rows = 0;
    s_proc_t p0 = {0}, p1 = {0}, pn;
    const int64_t t0 = clock_mono_ms();
    long rss_max = 0;
    for (int s = 1; s <= seconds; s++) {
        while (clock_mono_ms() < t0 + s * 1000LL)
            tc_sleep_ms(50);
        s_proc(coord, &pn);
        if (pn.rss_kb > rss_max)
            rss_max = pn.rss_kb;
        if (s == w0)
            p0 = pn; /* the window: registered, running, churning */
        if (s == w1)
            p1 = pn;
        if (s >= w0 && s <= w1 && s % 2 == 0) {
            double ms = s_ctl_ms(dir, SHOAL__MSG_TYPE__MSG_CTL_STATUS, NULL);
            if (ms < 0)
                st_lost++;
            else
                st_ms[n_st++] = ms;
            size_t rw = 0;
            ms = s_ctl_ms(dir, SHOAL__MSG_TYPE__MSG_CTL_WORKERS, &rw);
            if (ms < 0)
                wk_lost++;
            else {
                wk_ms[n_wk++] = ms;
                rows = rw;
            }
        }
    }
    unsigned long long acks = 0, sent = 0, win_acks = 0;
    unsigned long long fulls = 0, full_b = 0, deltas = 0, delta_b = 0, refused = 0;
    double sim_cpu = 0;
    const long long win0_ms = t0 + w0 * 1000LL, win1_ms = t0 + w1 * 1000LL;
    for (int i = 0; i < procs; i++) {
        int st;
        struct rusage ru;
        if (wait4(sims[i], &st, 0, &ru) == sims[i])
            sim_cpu += (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
        FILE *f = fopen(logs[i], "r");
        char line[512];
        unsigned long long a, b, c, d, e;
        long long at;
        unsigned long long acks_w0 = 0, acks_w1 = 0; /* at the window's ends */
        while (f && fgets(line, sizeof line, f)) {
            if (sscanf(line, "sim: sent %llu acks %llu", &a, &b) == 2)
                sent += a, acks += b;
            if (sscanf(line, "sim: at %lld acks %llu", &at, &a) == 2) {
                if (at <= win0_ms)
                    acks_w0 = a;
                if (at <= win1_ms)
                    acks_w1 = a;
            }
            if (sscanf(line, "sim: plans full %llu (%llu bytes) deltas %llu (%llu bytes) "
                             "deltas_refused %llu", &a, &b, &c, &d, &e) == 5)
                fulls += a, full_b += b, deltas += c, delta_b += d, refused += e;
        }
        win_acks += acks_w1 - acks_w0;
        if (f)
            fclose(f);
    }
    s_proc(coord, &pn);
    sim_event_t *ev = NULL;
    int n_ev = sim_events_load(events, &ev);
    json_t *rl = sim_ledger(dir, run), *cl = sim_ledger(dir, "cluster");
    sim_deaths_t d = {0};
    if (n_ev > 0 && rl && cl)
        sim_check_deaths(ev, n_ev, rl, cl, &d);
    int plans = 0, ckpts = 0;
    size_t i;
    json_t *e;
    json_array_foreach(rl, i, e)
    {
        const char *k = json_string_value(json_object_get(e, "kind"));
        plans += k && !strcmp(k, "plan");
        ckpts += k && !strcmp(k, "checkpoint");
    }
    json_t *rs = tc_run_status(dir, run);
    const double win = (double)(w1 - w0);
    char load[128];
    s_loadavg(load, sizeof load);
    printf("coordinator load: %d simulated workers in %d drivers, %d s (registrations over the "
           "first %d s), %d ms heartbeats, V3 plan pp 16 x ep 64 x dp 2 (2048 cells), step %d ms, "
           "checkpoint every 10 steps, churn 1/s from %d s to %d s%s, plan deltas %s, %s%s, window %d s "
           ".. %d s; %ld CPUs online, loadavg at the start %s, at the end %s\n",
           workers, procs, seconds, ramp, hb, step_ms, ramp + 10, seconds - 10,
           churn_on ? "" : " (OFF)", deltas_on ? "on" : "off",
           relay_on ? "a relay per host of 8, heartbeats held up to " : "a connection per worker",
           relay_on ? hold_txt : "", w0, w1,
           sysconf(_SC_NPROCESSORS_ONLN), load0, load);
    printf("messages answered          %.0f /s over the run (acks the drivers got; they sent "
           "%.0f /s)\n", (double)acks / seconds, (double)sent / seconds);
    /* the target: every worker's heartbeat answered, N x 1000 / HB_MS a second (the ramp and
     * the quiet end are in the run's average too, so 1.0 is out of reach by their share) */
    printf("ratio to the target load   %.3f (answers/s over %d workers x %.0f beats/s)\n",
           (double)acks / seconds / (workers * 1000.0 / hb), workers, 1000.0 / hb);
    printf("coordinator CPU            %.2f cores in the window (%.1f CPU s over the run); the "
           "drivers used %.2f cores over the run\n", (p1.cpu_s - p0.cpu_s) / win, pn.cpu_s,
           sim_cpu / seconds);
 /* the CPU one answer costs, so what one core answers a second (its sockets' kernel time in) */
    const double cpu_per = win_acks ? (p1.cpu_s - p0.cpu_s) / (double)win_acks : 0;
    printf("coordinator CPU per answer %.2f us CPU per answered message in the window (%.0f "
           "answers/s%s): one core answers %.0f /s\n", cpu_per * 1e6, (double)win_acks / win,
           churn_on ? ", re-plans included" : ", steady state: no re-plan",
           cpu_per > 0 ? 1.0 / cpu_per : 0.0);
    printf("assignments                %llu full (%.0f KB each), %llu plan deltas (%.1f KB each), "
           "%llu deltas refused (fetched in full)\n", fulls,
           fulls ? (double)full_b / (double)fulls / 1e3 : 0.0, deltas,
           deltas ? (double)delta_b / (double)deltas / 1e3 : 0.0, refused);
    printf("coordinator memory         RSS %.1f MiB now, peak sampled %.1f MiB, VmHWM %.1f MiB\n",
           pn.rss_kb / 1024.0, rss_max / 1024.0, pn.hwm_kb / 1024.0);
    printf("coordinator writes         %.0f write calls/s (log lines and ZeroMQ's wake-ups too), "
           "%.2f MB/s to disk, %.2f MB/s written in all (sockets too) in the window\n",
           (double)(p1.syscw - p0.syscw) / win, (double)(p1.write_bytes - p0.write_bytes) / win / 1e6,
           (double)(p1.wchar - p0.wchar) / win / 1e6);
    printf("simulated deaths           %d (%d held cells), detected %d, re-planned %d%s%s\n",
           d.deaths, d.members, d.detected, d.replanned, d.first_missing[0] ? "; missing: " : "",
           d.first_missing);
    double *lat = d.latency_ms;
    printf("detection latency          p50 %.0f ms, p99 %.0f ms\n", sim_quantile(lat, d.detected, 0.5),
           sim_quantile(lat, d.detected, 0.99));
    s_lat_line("status latency", st_ms, n_st, st_lost);
    s_lat_line("workers latency", wk_ms, n_wk, wk_lost);
    printf("workers reply rows         %zu\n", rows);
    printf("run                        %s, step %lld, checkpoint %lld, %d plans, %d checkpoints "
           "committed\n", rs ? tc_jstr(rs, "state") : "?", rs ? (long long)tc_jint(rs, "step") : 0,
           rs ? (long long)tc_jint(rs, "checkpoint_step") : 0, plans, ckpts);
    json_decref(rs);
    json_decref(rl);
    json_decref(cl);
    sim_deaths_fini(&d);
    free(ev);
    tc_stop(coord, SIGTERM);
    tc_tmpdir_remove(dir);
    return acks ? 0 : 1;
}
