/* bench_parallel: training tokens/s of one model split over 1, 2 and 4 worker processes as
 * pipeline stages x expert shards x data replicas (pp, ep, dp), against the single-process
 * trainer measured in the same run, and the fraction of each step spent in comm.
 * Run: build/bin/bench_parallel [--quick] [--model tiny|wide] [--steps N] [--grad-sum M]
 *   --grad-sum exact|float|both: train.grad_sum (default exact, the run spec's default); both
 *   measures every topology with float then exact sums and ends with the cost of exactness:
 *   exact step time / float step time per topology, in the same run
 *   (label bench: not part of the default ctest; the whole table takes ~3 minutes on 2 cores)
 * Every cell is its own process with one BLAS thread, bound to ipc://DIR/cell-<plan rank>, so
 * every cell knows every endpoint without talking; the stage split is the planner's
 * (plan_balance_stages). Each cell reports its per-step figures to this process through a pipe:
 *   tokens/s  = tokens of the global batch / median over timed steps of the slowest cell's step
 *   vs 1 proc = that / the single process's tokens/s (trainer_compute + trainer_apply)
 *   comm      = mean over cells and timed steps of comm_seconds / step_seconds
 * Losses are checked against the single process (loosely: test_cell_equiv is the equivalence
 * test; here a wrong loss means the figures are not of the same training). */
#define _DEFAULT_SOURCE /* getloadavg */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cell_comms.h"
#include "clock.h"
#include "fsutil.h"
#include "plan.h"
#include "runspec.h"
#include "trainer.h"

#define S_MAX_CELLS 4
#define S_MAX_STEPS 64
#define S_WARMUP 2
#define S_COMM_TIMEOUT_MS 120000
#define S_DEADLINE_S 600.0 /* one topology, every cell */
#define S_LOSS_TOL 1e-3
#define S_DATA "/usr/share/games/fortunes"

typedef struct {
    const char *name, *desc;
    const char *model_yaml; /* the lines under model: */
    int seq_len, micro_batch;
    int timed; /* timed steps: a few seconds of each topology */
} s_model_t;

/* tiny: the preset. wide: 4x the width and 2x the depth and experts; fine-grained experts
 * (fe = d/4, as DeepSeek's ratio) keep a full replica near 40M parameters, so four replicas fit
 * the shared machine's memory. G 16 in micro-batches of 2 sequences: 8 per step, enough for
 * dp x ep = 4 and for a 4-stage pipeline to fill. */
static const s_model_t s_models[] = {
    {"tiny", "the preset: d 128, 4 layers, H 4, f 384, N 8 experts of fe 128, K 2",
     "  preset: tiny\n", 128, 2, 12},
    {"wide", "tiny with d 512, 8 layers, H 8, f 1024, N 16 experts of fe 128, K 2",
     "  preset: tiny\n"
     "  hidden_size: 512\n"
     "  num_hidden_layers: 8\n"
     "  num_attention_heads: 8\n"
     "  intermediate_size: 1024\n"
     "  moe_intermediate_size: 128\n"
     "  n_routed_experts: 16\n",
     64, 2, 4},
};
#define S_N_MODELS ((int)(sizeof s_models / sizeof s_models[0]))

static const char s_yaml[] = "name: bench-parallel\n"
                             "model:\n"
                             "%s"
                             "data:\n"
                             "  files:\n"
                             "    - " S_DATA "\n"
                             "  seed: 3\n"
                             "train:\n"
                             "  steps: %d\n"
                             "  global_batch: 16\n"
                             "  seq_len: %d\n"
                             "  micro_batch: %d\n"
                             "  lr: 3e-3\n"
                             "  warmup_steps: 1\n"
                             "  grad_sum: %s\n"
                             "checkpoint:\n"
                             "  dir: unused\n";

typedef struct {
    int pp, ep, dp;
} s_topo_t;

/* pp = 0: the single-process trainer. */
static const s_topo_t s_topos[] = {{0, 0, 0}, {1, 1, 1}, {2, 1, 1}, {1, 2, 1},
                                   {1, 1, 2}, {2, 2, 1}, {4, 1, 1}, {1, 4, 1},
                                   {1, 1, 4}, {2, 1, 2}, {1, 2, 2}};
#define S_N_TOPOS ((int)(sizeof s_topos / sizeof s_topos[0]))

/* What a cell reports after each step (one write, under PIPE_BUF: never interleaved). */
typedef struct {
    int step; /* -1: the cell failed; err says why */
    double step_s, comm_s, cpu_s, loss, tokens;
    char err[400];
} s_report_t;

/* A topology's figures, from the cells' reports. */
typedef struct {
    double step_s[S_MAX_CELLS][S_MAX_STEPS], comm_s[S_MAX_CELLS][S_MAX_STEPS];
    double cpu_s[S_MAX_CELLS][S_MAX_STEPS], loss[S_MAX_CELLS][S_MAX_STEPS], tokens;
    int got[S_MAX_CELLS];
    char err[512];
} s_result_t;

/* CPU seconds of this process, every thread (ZeroMQ's I/O threads included). */
static double s_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void s_report(int fd, int step, const trainer_step_info_t *info, double cpu_s)
{
    s_report_t r = {.step = step, .cpu_s = cpu_s};
    if (info) {
        r.step_s = info->step_seconds;
        r.comm_s = info->comm_seconds;
        r.loss = info->loss;
        r.tokens = info->tokens;
    } else {
        snprintf(r.err, sizeof r.err, "%s", shoal_errmsg());
    }
    (void)fsutil_write_all(fd, &r, sizeof r, "report pipe");
}

/* The cell of plan rank `rank`, its layers and experts as the planner splits them. */
static void s_cell_of(const plan_t *p, int rank, trainer_cell_t *c)
{
    const int ep_rank = rank % (int)p->ep, stage = rank / (int)p->ep % (int)p->pp;
    const plan_stage_t *st = &p->stages[stage];
    *c = (trainer_cell_t){.dp = (int)p->dp,
                          .pp = (int)p->pp,
                          .ep = (int)p->ep,
                          .replica = rank / (int)(p->ep * p->pp),
                          .stage = stage,
                          .ep_rank = ep_rank};
    c->part = (model_part_t){.first_layer = (int)st->first_layer,
                             .n_layers = (int)st->n_layers,
                             .has_embedding = st->has_embedding,
                             .has_head = st->has_head,
                             .expert_first = p->n_experts ? (int)p->experts[ep_rank].first : 0,
                             .expert_count = p->n_experts ? (int)p->experts[ep_rank].count : 0};
}

/* Child: the single-process trainer, every step reported. Never returns. */
static void s_single_main(const runspec_t *spec, const char *dir, int fd)
{
    trainer_t *t = NULL;
    char root[600];
    snprintf(root, sizeof root, "%s/single", dir);
    shoal_err_t rc = trainer_new(spec, root, &t);
    if (rc == SHOAL_OK)
        rc = trainer_init_fresh(t);
    for (int k = 0; rc == SHOAL_OK && k < spec->steps; k++) {
        trainer_step_info_t info;
        const double cpu0 = s_cpu_s();
        if ((rc = trainer_compute(t, 0, 1)) == SHOAL_OK &&
            (rc = trainer_apply(t, &info)) == SHOAL_OK)
            s_report(fd, k, &info, s_cpu_s() - cpu0);
    }
    if (rc != SHOAL_OK)
        s_report(fd, -1, NULL, 0);
    trainer_destroy(&t);
    _exit(rc != SHOAL_OK);
}

/* Child: cell `rank` of plan `p`, listening on ipc://dir/cell-<rank>. Never returns. */
static void s_cell_main(const runspec_t *spec, const plan_t *p, const char *dir, int rank, int fd)
{
    const int n = (int)(p->dp * p->pp * p->ep);
    char eps[S_MAX_CELLS][600], root[600];
    const char *ptrs[S_MAX_CELLS];
    for (int i = 0; i < n; i++) {
        snprintf(eps[i], sizeof eps[i], "ipc://%s/cell-%d", dir, i);
        ptrs[i] = eps[i];
    }
    snprintf(root, sizeof root, "%s/ckpt-%d", dir, rank);
    trainer_cell_t cell;
    s_cell_of(p, rank, &cell);
    comm_listener_t *l = NULL;
    trainer_t *t = NULL;
    cell_comms_t cc = {0};
    shoal_err_t rc = comm_listener_new(eps[rank], &l);
    if (rc == SHOAL_OK)
        rc = trainer_new_cell(spec, root, &cell, &t);
    if (rc == SHOAL_OK)
        rc = trainer_init_fresh(t);
    if (rc == SHOAL_OK)
        rc = cell_comms_new(l, &cell, ptrs, 1, S_COMM_TIMEOUT_MS, &cc);
    for (int k = 0; rc == SHOAL_OK && k < spec->steps; k++) {
        trainer_step_info_t info;
        const double cpu0 = s_cpu_s();
        if ((rc = trainer_step(t, &cc.g, &info)) == SHOAL_OK)
            s_report(fd, k, &info, s_cpu_s() - cpu0);
    }
    if (rc != SHOAL_OK)
        s_report(fd, -1, NULL, 0);
    cell_comms_destroy(&cc);
    trainer_destroy(&t);
    comm_listener_destroy(&l);
    _exit(rc != SHOAL_OK);
}

/* Reads every report of n cells (steps each) into res until all are in, a cell fails or exits
 * early, or the deadline passes. Returns 0 when every cell reported every step. */
static int s_collect(const int *fds, int n, int steps, s_result_t *res)
{
    const double deadline = clock_mono_s() + S_DEADLINE_S;
    int open = n;
    struct pollfd pf[S_MAX_CELLS];
    for (int i = 0; i < n; i++)
        pf[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    while (open > 0) {
        const int wait_ms = (int)((deadline - clock_mono_s()) * 1000);
        if (wait_ms <= 0) {
            snprintf(res->err, sizeof res->err, "no result within %.0f s", S_DEADLINE_S);
            return -1;
        }
        const int k = poll(pf, (nfds_t)n, wait_ms);
        if (k < 0 && errno == EINTR)
            continue;
        for (int i = 0; k > 0 && i < n; i++) {
            if (pf[i].fd < 0 || !pf[i].revents)
                continue;
            s_report_t r;
            const ssize_t got = read(pf[i].fd, &r, sizeof r);
            if (got == (ssize_t)sizeof r && r.step >= 0 && r.step < steps) {
                res->step_s[i][r.step] = r.step_s;
                res->comm_s[i][r.step] = r.comm_s;
                res->cpu_s[i][r.step] = r.cpu_s;
                res->loss[i][r.step] = r.loss;
                res->tokens = r.tokens;
                res->got[i]++;
                continue;
            }
            if (got == 0 && res->got[i] == steps) { /* done: the cell closed its pipe */
                pf[i].fd = -1;
                open--;
                continue;
            }
            if (got == (ssize_t)sizeof r && r.step == -1)
                snprintf(res->err, sizeof res->err, "cell %d: %s", i, r.err);
            else
                snprintf(res->err, sizeof res->err, "cell %d exited after %d of %d steps", i,
                         res->got[i], steps);
            return -1;
        }
    }
    return 0;
}

/* Runs one topology (pp 0: the single process) as forked processes; fills res. Returns 0 when
 * every cell ran every step. */
static int s_run(const runspec_t *spec, const plan_t *p, const char *dir, s_result_t *res)
{
    const int n = p ? (int)(p->dp * p->pp * p->ep) : 1;
    pid_t pids[S_MAX_CELLS];
    int fds[S_MAX_CELLS], started = 0;
    memset(res, 0, sizeof *res);
    fflush(NULL);
    for (; started < n; started++) {
        int pfd[2];
        if (pipe(pfd) != 0)
            break;
        const pid_t pid = fork();
        if (pid == 0) {
            close(pfd[0]);
            for (int i = 0; i < started; i++)
                close(fds[i]);
            openblas_set_num_threads(1);
            if (p)
                s_cell_main(spec, p, dir, started, pfd[1]);
            s_single_main(spec, dir, pfd[1]);
        }
        close(pfd[1]);
        if (pid < 0) {
            close(pfd[0]);
            break;
        }
        pids[started] = pid;
        fds[started] = pfd[0];
    }
    int bad = 0;
    if (started < n) {
        snprintf(res->err, sizeof res->err, "cannot start cell %d: %s", started, strerror(errno));
        bad = 1;
    } else {
        bad = s_collect(fds, n, spec->steps, res) != 0;
    }
    for (int i = 0; i < started; i++) {
        int st = 0;
        if (bad)
            kill(pids[i], SIGKILL);
        close(fds[i]);
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR) {
        }
        if (!bad && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            snprintf(res->err, sizeof res->err, "cell %d exited with status %d", i, st);
            bad = 1;
        }
    }
    return bad;
}

static int s_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double s_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], s_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    double step_s; /* median over timed steps of the slowest cell's step */
    double cpu_s;  /* median over timed steps of the CPU seconds of all cells together */
    double comm;   /* mean over cells and timed steps of comm / step time */
} s_figures_t;

static s_figures_t s_figures(const s_result_t *res, int n, int steps)
{
    double worst[S_MAX_STEPS], cpu[S_MAX_STEPS], frac = 0;
    const int timed = steps - S_WARMUP;
    for (int k = S_WARMUP; k < steps; k++) {
        double w = 0, c = 0;
        for (int i = 0; i < n; i++) {
            w = res->step_s[i][k] > w ? res->step_s[i][k] : w;
            c += res->cpu_s[i][k];
            if (res->step_s[i][k] > 0)
                frac += res->comm_s[i][k] / res->step_s[i][k];
        }
        worst[k - S_WARMUP] = w;
        cpu[k - S_WARMUP] = c;
    }
    return (s_figures_t){.step_s = s_median(worst, timed),
                         .cpu_s = s_median(cpu, timed),
                         .comm = frac / (timed * n)};
}

/* The last-stage cells' losses (every cell reports the step's loss) against the single
 * process's; the worst relative difference. */
static double s_loss_dev(const s_result_t *res, int n, int steps, const s_result_t *single)
{
    double worst = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < steps; k++) {
            const double want = single->loss[0][k];
            const double rel = fabs(res->loss[i][k] - want) / fabs(want);
            worst = !(rel <= worst) ? rel : worst; /* NaN sticks */
        }
    return worst;
}

/* "3+5": layers per stage. */
static void s_stage_text(const plan_t *p, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = '\0';
    for (uint32_t s = 0; s < p->pp && off < cap; s++)
        off += (size_t)snprintf(out + off, cap - off, "%s%u", s ? "+" : "", p->stages[s].n_layers);
}

/* Why topology `t` cannot run `spec` (NULL: it can). */
static const char *s_unfit(const runspec_t *spec, const s_topo_t *t)
{
    if (t->pp > spec->model.num_hidden_layers)
        return "pp > layers";
    if (spec->model.n_routed_experts % t->ep != 0)
        return "ep does not divide the experts";
    if (t->ep > 1 && runspec_n_micro(spec) % (t->dp * t->ep) != 0)
        return "dp x ep does not divide the micro-batches";
    return NULL;
}

/* One model's rows of the table. Returns the number of failed topologies. */
/* Step time (slowest cell, median) per topology of the last s_bench_model, 0 if not run. */
static double s_step_ms[S_N_TOPOS];

static int s_bench_model(const s_model_t *m, int steps, const char *dir, const char *grad_sum)
{
    char yaml[2048];
    runspec_t spec;
    snprintf(yaml, sizeof yaml, s_yaml, m->model_yaml, steps, m->seq_len, m->micro_batch,
             grad_sum);
    for (int ti = 0; ti < S_N_TOPOS; ti++)
        s_step_ms[ti] = 0;
    if (runspec_load_string(yaml, m->name, &spec) != SHOAL_OK) {
        fprintf(stderr, "FAIL: %s: spec: %s\n", m->name, shoal_errmsg());
        return 1;
    }
    static s_result_t single, res;
    double single_tps = 0, single_cpu = 0;
    int failed = 0;
    for (int ti = 0; ti < S_N_TOPOS; ti++) {
        const s_topo_t *t = &s_topos[ti];
        const int n = t->pp ? t->pp * t->ep * t->dp : 1;
        char topo[32], stages[32] = "";
        plan_t plan = {0};
        if (t->pp)
            snprintf(topo, sizeof topo, "%d %d %d", t->pp, t->ep, t->dp);
        else
            snprintf(topo, sizeof topo, "single");
        const char *why = t->pp ? s_unfit(&spec, t) : NULL;
        if (!why && t->pp &&
            (plan_layout(&plan, (uint32_t)t->dp, (uint32_t)t->pp, (uint32_t)t->ep,
                         (uint32_t)spec.model.num_hidden_layers,
                         (uint32_t)spec.model.n_routed_experts) != SHOAL_OK ||
             plan_balance_stages(&plan, &spec.model, (uint32_t)spec.seq_len) != SHOAL_OK)) {
            fprintf(stderr, "FAIL: %s %s: plan: %s\n", m->name, topo, shoal_errmsg());
            plan_fini(&plan);
            failed++;
            continue;
        }
        if (why) {
            printf("%-5s %7d  %-8s  skipped: %s\n", m->name, n, topo, why);
            continue;
        }
        if (t->pp > 1)
            s_stage_text(&plan, stages, sizeof stages);
        s_result_t *r = t->pp ? &res : &single;
        const int bad = s_run(&spec, t->pp ? &plan : NULL, dir, r);
        plan_fini(&plan);
        if (bad) {
            fprintf(stderr, "FAIL: %s %s: %s\n", m->name, topo, r->err);
            printf("%-5s %7d  %-8s  FAILED: %s\n", m->name, n, topo, r->err);
            failed++;
            if (!t->pp)
                return failed + S_N_TOPOS - 1; /* nothing to compare against */
            continue;
        }
        const s_figures_t f = s_figures(r, n, steps);
        const double tps = r->tokens / f.step_s;
        if (!t->pp) {
            single_tps = tps;
            single_cpu = f.cpu_s;
        }
        const double dev = t->pp ? s_loss_dev(r, n, steps, &single) : 0;
        s_step_ms[ti] = f.step_s * 1e3;
        printf("%-5s %7d  %-8s %8.0f  %8.0f  %9.2f  %5.0f%%  %8.0f  %8.2f  %s\n", m->name, n,
               topo, f.step_s * 1e3, tps, tps / single_tps, t->pp ? f.comm * 100 : 0.0,
               f.cpu_s * 1e3, f.cpu_s / single_cpu, stages);
        if (!(dev <= S_LOSS_TOL)) {
            fprintf(stderr, "FAIL: %s %s: losses differ from the single process by %.2e "
                    "(relative)\n", m->name, topo, dev);
            failed++;
        }
        fflush(stdout);
    }
    return failed;
}

static void s_usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--quick] [--model tiny|wide] [--steps N] "
            "[--grad-sum exact|float|both]\n"
            "  --quick    the tiny model only, 3 timed steps\n"
            "  --model M  one model only (default: tiny and wide)\n"
            "  --steps N  timed steps after %d warm-up steps (default: tiny 12, wide 4; at most "
            "%d)\n"
            "  --grad-sum train.grad_sum of every run; both: float then exact, and their ratio\n",
            argv0, S_WARMUP, S_MAX_STEPS - S_WARMUP);
}

int main(int argc, char **argv)
{
    int timed = 0, only = -1; /* 0: each model's own */
    const char *grad_sum = "exact";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            only = 0;
            timed = 3;
        } else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            only = -2;
            for (int k = 0; k < S_N_MODELS; k++)
                if (strcmp(argv[i + 1], s_models[k].name) == 0)
                    only = k;
            i++;
        } else if (strcmp(argv[i], "--grad-sum") == 0 && i + 1 < argc &&
                   (strcmp(argv[i + 1], "exact") == 0 || strcmp(argv[i + 1], "float") == 0 ||
                    strcmp(argv[i + 1], "both") == 0)) {
            grad_sum = argv[++i];
        } else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
            timed = atoi(argv[++i]);
            timed = timed ? timed : -1;
        } else {
            only = -2;
        }
        if (only == -2 || timed < 0 || timed > S_MAX_STEPS - S_WARMUP) {
            s_usage(argv[0]);
            return 2;
        }
    }
    if (access(S_DATA, R_OK) != 0) {
        printf("SKIP: %s missing (Debian package fortunes)\n", S_DATA);
        return 77;
    }
    /* No BLAS thread pool in the parent: the children fork from it. */
    openblas_set_num_threads(1);
    char dir[] = "/tmp/shoal-bench-parallel-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "FAIL: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double load[1] = {0};
    if (getloadavg(load, 1) != 1)
        load[0] = -1;
    printf("bench_parallel: G 16 sequences per step, micro-batches of 2, %d warm-up steps, one "
           "process per cell, one BLAS thread each, ipc sockets; %ld cores, load average %.1f "
           "at start\n",
           S_WARMUP, cores, load[0]);
    for (int k = 0; k < S_N_MODELS; k++)
        if (only < 0 || only == k)
            printf("  %s: %s; T %d, %d timed steps\n", s_models[k].name, s_models[k].desc,
                   s_models[k].seq_len, timed ? timed : s_models[k].timed);
    const int both = strcmp(grad_sum, "both") == 0;
    int failed = 0;
    for (int k = 0; k < S_N_MODELS; k++) {
        if (only >= 0 && only != k)
            continue;
        double float_ms[S_N_TOPOS] = {0};
        for (int pass = 0; pass < (both ? 2 : 1); pass++) {
            const char *mode = both ? (pass == 0 ? "float" : "exact") : grad_sum;
            printf("train.grad_sum: %s\n", mode);
            printf("%-5s %7s  %-8s %8s  %8s  %9s  %6s  %8s  %8s  %s\n", "model", "workers",
                   "pp ep dp", "step ms", "tokens/s", "vs 1 proc", "comm", "cpu ms", "cpu x",
                   "layers/stage");
            failed += s_bench_model(&s_models[k], S_WARMUP + (timed ? timed : s_models[k].timed),
                                    dir, mode);
            if (both && pass == 0)
                memcpy(float_ms, s_step_ms, sizeof float_ms);
        }
        if (!both)
            continue;
        printf("cost of exact sums (%s): step time exact / float, same run\n", s_models[k].name);
        for (int ti = 0; ti < S_N_TOPOS; ti++) {
            const s_topo_t *t = &s_topos[ti];
            if (float_ms[ti] <= 0 || s_step_ms[ti] <= 0)
                continue;
            char topo[32] = "single";
            if (t->pp)
                snprintf(topo, sizeof topo, "%d %d %d", t->pp, t->ep, t->dp);
            printf("  %-8s %8.0f ms / %8.0f ms = %5.2f\n", topo, s_step_ms[ti], float_ms[ti],
                   s_step_ms[ti] / float_ms[ti]);
        }
    }
    if (getloadavg(load, 1) != 1)
        load[0] = -1;
    printf("%ld cores: 4 processes time-share them with whatever else runs (load average %.1f at "
           "the end), so ratios above 1 need as many free cores as workers, and %ld-fold is the "
           "ceiling here\n",
           cores, load[0], cores);
    fsutil_remove_tree(dir);
    if (failed) {
        fprintf(stderr, "FAIL: %d topologies failed\n", failed);
        return 1;
    }
    return 0;
}
