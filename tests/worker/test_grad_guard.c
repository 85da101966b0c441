/* test_grad_guard: gradient sanity and trimmed mean across data-parallel replicas.
 *
 * First the pure decision (grad_sanity.h) on hand-made reports. Then real training: dp 3
 * replicas as threads, each with its own trainer, listener and group comm over ZeroMQ on
 * loopback; replica 1 sabotages its own gradients through the trainer's hook (what
 * shoal-worker-attack does): NaN, or x100. Asserted:
 *  - with sanity on (train.grad_sanity_k 10) every replica leaves replica 1 out of every step
 *    (the same rejected mask everywhere), the replicas keep identical parameters, and the final
 *    loss is within 5% of the clean run's;
 *  - with sanity off, NaN fails the first step on every replica (SHOAL_ERR_NUMERIC) and x100
 *    changes the trained parameters (the attack reaches the sum);
 *  - trimmed_mean with sanity off holds the x100 attacker within 5% of the clean loss.
 * Prints each final loss as a ratio to the clean run's (the figures of ops/SECURITY.md).
 *
 *   test_grad_guard [STEPS=30]     everything (about 25 s of training per run on one core)
 *   test_grad_guard unit           the decision and the trimmed mean only */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cell_comms.h"
#include "fsutil.h"
#include "grad_sanity.h"
#include "runspec.h"
#include "trainer.h"

#define S_DP 3
#define S_ATTACKER 1

static int s_steps = 30;
static char s_tmp[256];
static int s_mode; /* 0 none, 1 nan, 2 x100 */
static int s_failures;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            s_failures++;                                                                      \
        }                                                                                      \
    } while (0)

static void s_attack(float *g, int64_t n, int replica, int64_t step)
{
    (void)step;
    if (replica != S_ATTACKER || !s_mode)
        return;
    for (int64_t i = 0; i < n; i++)
        g[i] = s_mode == 1 ? NAN : 100.0f * g[i];
}

/* ---- the decision alone ------------------------------------------------------------------- */

/* the checks are opt-in (train.grad_sanity_k 0 by default) */
#define S_ON "  grad_sanity_k: 10\n"

static void s_test_decide(void)
{
    grad_sanity_t s;
    uint64_t rej;
    char why[160];
    grad_report_t r3[3] = {{1, 1.0, 2}, {1, 100.0, 2}, {1, 1.2, 2}};
    grad_sanity_reset(&s, 10, 7);
    CHECK(grad_sanity_decide(&s, r3, 3, &rej, why, sizeof why) == SHOAL_OK, "decide");
    CHECK(rej == 2, "x100 replica rejected: mask %llx", (unsigned long long)rej);
    CHECK(strstr(why, "replica 1") != NULL, "why names replica 1: '%s'", why);
    CHECK(s.n_hist == 2, "two accepted norms in the history, got %d", s.n_hist);
    /* two replicas and no history: no reference yet, only the finite test; after
     * GRAD_SANITY_MIN_HISTORY accepted norms the lower median keeps the honest norm as the
     * reference */
    grad_report_t r2[2] = {{1, 1.0, 1}, {1, 100.0, 1}}, h2[2] = {{1, 1.0, 1}, {1, 1.1, 1}};
    grad_sanity_reset(&s, 10, 1);
    CHECK(grad_sanity_decide(&s, r2, 2, &rej, why, sizeof why) == SHOAL_OK && rej == 0,
          "dp 2 without history: no norm test, mask %llx", (unsigned long long)rej);
    grad_sanity_reset(&s, 10, 1);
    for (int i = 0; i < GRAD_SANITY_MIN_HISTORY / 2; i++)
        (void)grad_sanity_decide(&s, h2, 2, &rej, why, sizeof why);
    CHECK(grad_sanity_decide(&s, r2, 2, &rej, why, sizeof why) == SHOAL_OK && rej == 2,
          "dp 2 with history: x100 rejected, mask %llx", (unsigned long long)rej);
    /* non-finite, and a replica without data is neither checked nor in the statistics */
    grad_report_t rn[3] = {{0, 0.0, 2}, {1, 5.0, 2}, {1, 1e9, 0}};
    grad_sanity_reset(&s, 10, 1);
    CHECK(grad_sanity_decide(&s, rn, 3, &rej, why, sizeof why) == SHOAL_OK && rej == 1,
          "NaN rejected, no-data replica ignored: mask %llx", (unsigned long long)rej);
    CHECK(strstr(why, "non-finite") != NULL, "why: '%s'", why);
    /* the history: after honest steps near 1, a step where every replica jumps x50 together is
     * the run's own spike (clipping bounds it), accepted; one replica jumping x50 is not */
    grad_sanity_reset(&s, 10, 1);
    grad_report_t ok[3] = {{1, 1.0, 1}, {1, 1.1, 1}, {1, 0.9, 1}};
    for (int i = 0; i < 30; i++)
        (void)grad_sanity_decide(&s, ok, 3, &rej, why, sizeof why);
    grad_report_t jump[3] = {{1, 50.0, 1}, {1, 55.0, 1}, {1, 60.0, 1}};
    CHECK(grad_sanity_decide(&s, jump, 3, &rej, why, sizeof why) == SHOAL_OK && rej == 0,
          "every replica far above the running median together: accepted, mask %llx",
          (unsigned long long)rej);
    grad_report_t one_jump[3] = {{1, 1.0, 1}, {1, 50.0, 1}, {1, 1.1, 1}};
    CHECK(grad_sanity_decide(&s, one_jump, 3, &rej, why, sizeof why) == SHOAL_OK && rej == 2,
          "one replica x50 over its peers and the history: rejected, mask %llx",
          (unsigned long long)rej);
    grad_report_t spike2[2] = {{1, 40.0, 1}, {1, 45.0, 1}};
    CHECK(grad_sanity_decide(&s, spike2, 2, &rej, why, sizeof why) == SHOAL_OK && rej == 0,
          "dp 2, both replicas spike together: accepted, mask %llx", (unsigned long long)rej);
    /* off: everything accepted */
    grad_sanity_reset(&s, 0, 1);
    CHECK(grad_sanity_decide(&s, rn, 3, &rej, why, sizeof why) == SHOAL_OK && rej == 0,
          "k 0 accepts everything");
    CHECK(grad_sanity_decide(&s, rn, 0, &rej, why, sizeof why) == SHOAL_ERR_INVALID, "n 0");
}

static void s_test_trimmed_mean(void)
{
    /* 4 rows x 3 columns, row stride 5; row 3 rejected, row 2 unused in column terms */
    const float rows[4 * 5] = {1, 10, -1, 0, 0,  2, 20, -2, 0, 0,  3, 1000, -3, 0, 0,
                               NAN, NAN, NAN, 0, 0};
    int use[4] = {1, 1, 1, 1};
    double scratch[4];
    float out[3];
    /* trim 0.34 of 3 accepted rows: one dropped at each end: the median */
    grad_trimmed_mean(rows, 4, 5, 3, use, 1ull << 3, 0.34, scratch, out);
    CHECK(out[0] == 2.0f && out[1] == 20.0f && out[2] == -2.0f, "median: %g %g %g", out[0],
          out[1], out[2]);
    /* trim 0: the plain mean */
    grad_trimmed_mean(rows, 4, 5, 3, use, 1ull << 3, 0.0, scratch, out);
    CHECK(fabsf(out[1] - 1030.0f / 3.0f) < 1e-3f && out[0] == 2.0f, "mean: %g %g", out[0],
          out[1]);
    use[0] = 0;
    grad_trimmed_mean(rows, 4, 5, 3, use, 1ull << 3, 0.0, scratch, out);
    CHECK(out[0] == 2.5f, "unused row left out: %g", out[0]);
}

/* ---- dp 3 training ------------------------------------------------------------------------ */

typedef struct {
    const runspec_t *spec;
    trainer_cell_t cell;
    comm_listener_t *l;
    const char *const *endpoints;
    char root[512];
    double loss;
    uint64_t rejected_or, rejected_and; /* over the steps */
    float *params;
    int64_t np;
    shoal_err_t rc;
    char err[512];
} s_rep_t;

static void *s_rep_main(void *arg)
{
    s_rep_t *x = arg;
    trainer_t *t = NULL;
    cell_comms_t cc = {0};
    openblas_set_num_threads(1);
    x->rejected_and = ~0ull;
    shoal_err_t rc = trainer_new_cell(x->spec, x->root, &x->cell, &t);
    if (rc == SHOAL_OK)
        rc = trainer_init_fresh(t);
    if (rc == SHOAL_OK)
        rc = cell_comms_new(x->l, &x->cell, x->endpoints, 1, 60000, &cc);
    for (int k = 0; rc == SHOAL_OK && k < s_steps; k++) {
        trainer_step_info_t info;
        if ((rc = trainer_step(t, &cc.g, &info)) == SHOAL_OK) {
            x->loss = info.loss;
            x->rejected_or |= info.rejected_replicas;
            x->rejected_and &= info.rejected_replicas;
        }
    }
    if (rc == SHOAL_OK) {
        const float *p = trainer_params(t, &x->np);
        x->params = malloc(sizeof(float) * (size_t)x->np);
        memcpy(x->params, p, sizeof(float) * (size_t)x->np);
    } else {
        snprintf(x->err, sizeof x->err, "%s", shoal_errmsg());
    }
    cell_comms_destroy(&cc);
    trainer_destroy(&t);
    x->rc = rc;
    return NULL;
}

typedef struct {
    shoal_err_t rc[S_DP];
    double loss;
    uint64_t rejected_or, rejected_and;
    int same_params; /* every replica holds the same bits */
    float *params;   /* replica 0's (owned) */
    int64_t np;
} s_result_t;

static void s_train(const char *tag, const char *extra_yaml, int mode, s_result_t *res)
{
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "name: guard\nmodel:\n  preset: tiny\ndata:\n  files:\n    - /usr/share/games/fortunes\n"
             "  seed: 5\ntrain:\n  steps: %d\n  global_batch: 6\n  seq_len: 32\n"
             "  micro_batch: 1\n  lr: 3e-3\n  warmup_steps: 3\n  clip_grad_norm: 1.0\n%s"
             "checkpoint:\n  dir: unused\n",
             s_steps, extra_yaml);
    runspec_t spec;
    if (runspec_load_string(yaml, tag, &spec) != SHOAL_OK) {
        fprintf(stderr, "FAIL: %s: spec: %s\n", tag, shoal_errmsg());
        exit(1);
    }
    s_mode = mode;
    s_rep_t reps[S_DP];
    memset(reps, 0, sizeof reps);
    comm_listener_t *ls[S_DP] = {0};
    const char *eps[S_DP];
    pthread_t th[S_DP];
    for (int i = 0; i < S_DP; i++) {
        if (comm_listener_new("tcp://127.0.0.1:0", &ls[i]) != SHOAL_OK) {
            fprintf(stderr, "FAIL: listener: %s\n", shoal_errmsg());
            exit(1);
        }
        eps[i] = comm_listener_endpoint(ls[i]);
    }
    for (int r = 0; r < S_DP; r++) {
        s_rep_t *x = &reps[r];
        x->spec = &spec;
        trainer_cell_whole(&spec.model, &x->cell);
        x->cell.dp = S_DP;
        x->cell.replica = r;
        x->l = ls[r];
        x->endpoints = eps;
        snprintf(x->root, sizeof x->root, "%s/%s-r%d", s_tmp, tag, r);
    }
    for (int r = 0; r < S_DP; r++)
        pthread_create(&th[r], NULL, s_rep_main, &reps[r]);
    for (int r = 0; r < S_DP; r++)
        pthread_join(th[r], NULL);
    memset(res, 0, sizeof *res);
    res->same_params = 1;
    res->rejected_and = ~0ull;
    for (int r = 0; r < S_DP; r++) {
        res->rc[r] = reps[r].rc;
        if (reps[r].rc != SHOAL_OK) {
            fprintf(stderr, "%s: replica %d: %s\n", tag, r, reps[r].err);
            res->same_params = 0;
            continue;
        }
        res->rejected_or |= reps[r].rejected_or;
        res->rejected_and &= reps[r].rejected_and;
        if (reps[r].loss != reps[0].loss || reps[r].np != reps[0].np ||
            memcmp(reps[r].params, reps[0].params, sizeof(float) * (size_t)reps[0].np) != 0)
            res->same_params = 0;
    }
    res->loss = reps[0].loss;
    res->params = reps[0].params;
    res->np = reps[0].np;
    for (int r = 1; r < S_DP; r++)
        free(reps[r].params);
    for (int i = 0; i < S_DP; i++)
        comm_listener_destroy(&ls[i]);
    s_mode = 0;
}

static int s_all_ok(const s_result_t *r)
{
    for (int i = 0; i < S_DP; i++)
        if (r->rc[i] != SHOAL_OK)
            return 0;
    return 1;
}

/* A run under attack that sanity (or the trimmed mean) must hold near the clean loss. */
static void s_expect_held(const char *tag, const char *yaml, int mode, double clean,
                          uint64_t want_rejected)
{
    s_result_t r;
    s_train(tag, yaml, mode, &r);
    CHECK(s_all_ok(&r), "%s: every replica trains", tag);
    CHECK(r.same_params, "%s: the replicas hold the same parameters", tag);
    CHECK(r.rejected_or == want_rejected && r.rejected_and == want_rejected,
          "%s: rejected mask on every step %llx (any step %llx), want %llx", tag,
          (unsigned long long)r.rejected_and, (unsigned long long)r.rejected_or,
          (unsigned long long)want_rejected);
    CHECK(fabs(r.loss / clean - 1.0) <= 0.05, "%s: final loss %.4f vs clean %.4f", tag, r.loss,
          clean);
    printf("%-34s final loss %.4f  ratio to clean %.4f  rejected mask %llx\n", tag, r.loss,
           r.loss / clean, (unsigned long long)r.rejected_and);
    free(r.params);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "unit") == 0) {
        s_test_decide();
        s_test_trimmed_mean();
        printf(s_failures ? "%d check(s) failed\n" : "ok\n", s_failures);
        return s_failures ? 1 : 0;
    }
    if (argc > 1)
        s_steps = atoi(argv[1]);
    if (s_steps < 5 || s_steps > 10000) {
        fprintf(stderr, "usage: test_grad_guard [STEPS (5..10000)]\n");
        return 2;
    }
    s_test_decide();
    s_test_trimmed_mean();
    snprintf(s_tmp, sizeof s_tmp, "/tmp/shoal-guard-XXXXXX");
    if (!mkdtemp(s_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    trainer_set_grad_hook(s_attack);

    s_result_t clean;
    s_train("clean", S_ON, 0, &clean);
    CHECK(s_all_ok(&clean) && clean.same_params && clean.rejected_or == 0,
          "clean run: trains, same parameters, nothing rejected (mask %llx)",
          (unsigned long long)clean.rejected_or);
    printf("%-34s final loss %.4f\n", "clean (sum, sanity k 10)", clean.loss);

    const uint64_t att = 1ull << S_ATTACKER;
    s_expect_held("nan, sanity on", S_ON, 1, clean.loss, att);
    s_expect_held("x100, sanity on", S_ON, 2, clean.loss, att);
    s_expect_held("x100, sanity on, float sums", S_ON "  grad_sum: float\n", 2, clean.loss, att);
    s_expect_held("x100, trimmed_mean, sanity off",
                  "  grad_sanity_k: 0\n  aggregation: trimmed_mean\n  trim: 0.34\n", 2,
                  clean.loss, 0);

    s_result_t r;
    s_train("nan, sanity off", "  grad_sanity_k: 0\n", 1, &r);
    for (int i = 0; i < S_DP; i++)
        CHECK(r.rc[i] == SHOAL_ERR_NUMERIC, "nan, sanity off: replica %d fails with a numeric "
              "error, got %s", i, shoal_strerror(r.rc[i]));
    printf("%-34s every replica fails step 1 (non-finite gradient norm)\n", "nan, sanity off");
    free(r.params);

    s_train("x100, sanity off", "  grad_sanity_k: 0\n", 2, &r);
    CHECK(s_all_ok(&r), "x100, sanity off: trains");
    double diff = 0.0;
    for (int64_t i = 0; i < r.np && i < clean.np; i++)
        diff += fabs((double)r.params[i] - (double)clean.params[i]);
    CHECK(r.np == clean.np && diff > 0, "x100, sanity off: the attack changes the parameters");
    printf("%-34s final loss %.4f  ratio to clean %.4f  mean |param - clean| %.3g\n",
           "x100, sanity off", r.loss, r.loss / clean.loss, diff / (double)(r.np ? r.np : 1));
    free(r.params);
    free(clean.params);

    fsutil_remove_tree(s_tmp);
    if (s_failures) {
        fprintf(stderr, "%d check(s) failed\n", s_failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
