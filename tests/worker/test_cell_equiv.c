/* test_cell_equiv: a model split into pipeline stages and expert shards trains like the single
 * process. Every cell of a dp x pp x ep plan is a thread with its own trainer, listener and
 * group comms over real ZeroMQ sockets on loopback; the per-step losses must match the
 * single-process trainer within 1e-4 relative, every cell must see the same loss, replicas must
 * hold identical parameters, and the cells' checkpoint shards, exported as one model
 * directory, must match the single-process parameters within 1e-4 and, the gradients being
 * summed exactly (train.grad_sum: exact), bit for bit.
 *
 *   test_cell_equiv PP EP DP STEPS
 *   test_cell_equiv PP EP DP STEPS --reshard PP2 EP2 DP2 AT
 *       trains AT steps under (PP, EP, DP), checkpoints, resumes from those shards under
 *       (PP2, EP2, DP2) and trains to STEPS: the losses continue as the uninterrupted run's.
 *   ... --bf16 (last): the same in train.precision bf16 (kernels/kgemm.h), single process
 *       included; skips (77) where the CPU or the build has no bf16.
 */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cell_comms.h"
#include "ckpt.h"
#include "ckpt_export.h"
#include "fsutil.h"
#include "kgemm.h"
#include "model.h"
#include "model_dir.h"
#include "runspec.h"
#include "trainer.h"

#define S_MAX_STEPS 64
#define S_MAX_CELLS 16

static const char s_yaml[] = "name: equiv\n"
                             "model:\n"
                             "  preset: tiny\n"
                             "data:\n"
                             "  files:\n"
                             "    - /usr/share/games/fortunes\n"
                             "  seed: 3\n"
                             "train:\n"
                             "  steps: %d\n"
                             "  global_batch: 8\n"
                             "  seq_len: 32\n"
                             "  micro_batch: 1\n"
                             "  lr: 3e-3\n"
                             "  warmup_steps: 3\n"
                             "  clip_grad_norm: 0.5\n"
                             "  precision: %s\n"
                             "checkpoint:\n"
                             "  dir: unused\n"
                             "  keep: 2\n";

static runspec_t s_spec;
static char s_tmp[256];

typedef struct {
    trainer_cell_t cell;
    comm_listener_t *l;
    const char *const *endpoints;
    int from, to;               /* steps [from, to) */
    const char *const *load;    /* shard dirs to resume from (NULL: fresh) */
    int n_load;
    char root[512];
    double loss[S_MAX_STEPS];
    shoal_err_t rc;
    char err[512];
} s_cell_t;

static void s_die(const char *what)
{
    fprintf(stderr, "FAIL: %s: %s\n", what, shoal_errmsg());
    exit(1);
}

/* The part of cell (stage, ep_rank): layers split as the planner's even split (remainder to
 * the first stages), experts N/ep each. */
static void s_cell_init(trainer_cell_t *c, int pp, int ep, int dp, int r, int s, int e)
{
    const model_config_t *m = &s_spec.model;
    const int L = m->num_hidden_layers, N = m->n_routed_experts;
    int first = 0;
    for (int k = 0; k < s; k++)
        first += L / pp + (k < L % pp);
    *c = (trainer_cell_t){.dp = dp, .pp = pp, .ep = ep, .replica = r, .stage = s, .ep_rank = e};
    c->part = (model_part_t){.first_layer = first,
                             .n_layers = L / pp + (s < L % pp),
                             .has_embedding = s == 0,
                             .has_head = s == pp - 1,
                             .expert_first = e * (N / ep),
                             .expert_count = N / ep};
}

static void *s_cell_main(void *arg)
{
    s_cell_t *x = arg;
    trainer_t *t = NULL;
    cell_comms_t cc = {0};
    openblas_set_num_threads(1);
    shoal_err_t rc = trainer_new_cell(&s_spec, x->root, &x->cell, &t);
    if (rc == SHOAL_OK)
        rc = x->load ? trainer_load_checkpoint_dirs(t, x->load, x->n_load) : trainer_init_fresh(t);
    if (rc == SHOAL_OK && trainer_next_step(t) != x->from)
        rc = shoal_fail(SHOAL_ERR_STATE, "resumed at step %lld, expected %d",
                        (long long)trainer_next_step(t), x->from);
    if (rc == SHOAL_OK)
        rc = cell_comms_new(x->l, &x->cell, x->endpoints, 1, 60000, &cc);
    for (int k = x->from; rc == SHOAL_OK && k < x->to; k++) {
        trainer_step_info_t info;
        if ((rc = trainer_step(t, &cc.g, &info)) == SHOAL_OK)
            x->loss[k] = info.loss;
    }
    if (rc == SHOAL_OK && (rc = trainer_checkpoint_async(t)) == SHOAL_OK)
        rc = trainer_checkpoint_wait(t);
    if (rc != SHOAL_OK)
        snprintf(x->err, sizeof x->err, "%s", shoal_errmsg());
    cell_comms_destroy(&cc);
    trainer_destroy(&t);
    x->rc = rc;
    return NULL;
}

/* Runs steps [from, to) under (pp, ep, dp); fills loss (checked equal on every cell) and the
 * checkpoint dirs of step `to` of every cell into dirs. */
static int s_run(int pp, int ep, int dp, int from, int to, const char *const *load, int n_load,
                 const char *tag, double *loss, char dirs[][600], int *n_dirs)
{
    const int n = pp * ep * dp;
    s_cell_t *cells = calloc((size_t)n, sizeof *cells);
    comm_listener_t *ls[S_MAX_CELLS] = {0};
    const char *eps[S_MAX_CELLS];
    pthread_t th[S_MAX_CELLS];
    for (int i = 0; i < n; i++) {
        if (comm_listener_new("tcp://127.0.0.1:0", &ls[i]) != SHOAL_OK)
            s_die("listener");
        eps[i] = comm_listener_endpoint(ls[i]);
    }
    for (int r = 0; r < dp; r++)
        for (int s = 0; s < pp; s++)
            for (int e = 0; e < ep; e++) {
                const int i = cell_rank(pp, ep, r, s, e);
                s_cell_t *x = &cells[i];
                s_cell_init(&x->cell, pp, ep, dp, r, s, e);
                x->l = ls[i];
                x->endpoints = eps;
                x->from = from;
                x->to = to;
                x->load = load;
                x->n_load = n_load;
                snprintf(x->root, sizeof x->root, "%s/%s-r%d-s%d-e%d", s_tmp, tag, r, s, e);
            }
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, s_cell_main, &cells[i]);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (cells[i].rc != SHOAL_OK) {
            fprintf(stderr, "FAIL: %s cell %d: %s\n", tag, i, cells[i].err);
            bad = 1;
            continue;
        }
        for (int k = from; k < to; k++)
            if (cells[i].loss[k] != cells[0].loss[k]) {
                fprintf(stderr, "FAIL: %s step %d: cell %d sees loss %.9g, cell 0 %.9g\n", tag,
                        k, i, cells[i].loss[k], cells[0].loss[k]);
                bad = 1;
            }
        ckpt_step_dir(cells[i].root, to, dirs[i], sizeof dirs[i]);
    }
    for (int k = from; k < to; k++)
        loss[k] = cells[0].loss[k];
    *n_dirs = n;
    for (int i = 0; i < n; i++)
        comm_listener_destroy(&ls[i]);
    free(cells);
    return bad;
}

/* The single-process reference: losses of every step, and its checkpoint at `ckpt_at`. */
static void s_reference(int steps, double *loss, float **params, int64_t *np)
{
    trainer_t *t = NULL;
    char root[512];
    snprintf(root, sizeof root, "%s/ref", s_tmp);
    if (trainer_new(&s_spec, root, &t) != SHOAL_OK || trainer_init_fresh(t) != SHOAL_OK)
        s_die("reference trainer");
    for (int k = 0; k < steps; k++) {
        trainer_step_info_t info;
        if (trainer_compute(t, 0, 1) != SHOAL_OK || trainer_apply(t, &info) != SHOAL_OK)
            s_die("reference step");
        loss[k] = info.loss;
    }
    const float *p = trainer_params(t, np);
    *params = malloc(sizeof(float) * (size_t)*np);
    memcpy(*params, p, sizeof(float) * (size_t)*np);
    trainer_destroy(&t);
}

static int s_compare_losses(const char *tag, const double *got, const double *want, int from,
                            int to)
{
    int bad = 0;
    double worst = 0;
    for (int k = from; k < to; k++) {
        const double rel = fabs(got[k] - want[k]) / fabs(want[k]);
        worst = rel > worst ? rel : worst;
        if (!(rel <= 1e-4)) {
            fprintf(stderr, "FAIL: %s step %d: loss %.9g, single process %.9g (rel %.2e)\n", tag,
                    k, got[k], want[k], rel);
            bad = 1;
        }
    }
    printf("%s: steps %d..%d, worst relative loss difference %.2e\n", tag, from, to - 1, worst);
    return bad;
}

/* The cells' shards of the last step, exported as one model directory, against the
 * single-process parameters. */
static int s_compare_export(const char *tag, char dirs[][600], int n_dirs, const float *want,
                            int64_t np, int bitwise)
{
    const char *d[S_MAX_CELLS];
    for (int i = 0; i < n_dirs; i++)
        d[i] = dirs[i];
    char out[512];
    snprintf(out, sizeof out, "%s/%s-export", s_tmp, tag);
    if (ckpt_export(d, n_dirs, out, NULL) != SHOAL_OK)
        s_die("export");
    model_config_t cfg;
    float *got = NULL;
    int64_t n = 0;
    if (model_dir_load(out, &cfg, &got, &n) != SHOAL_OK)
        s_die("loading the export");
    int bad = n != np;
    double worst = 0;
    for (int64_t i = 0; !bad && i < n; i++) {
        const double diff = fabs((double)got[i] - want[i]);
        worst = diff > worst ? diff : worst;
        if (!(diff <= 1e-4)) {
            fprintf(stderr, "FAIL: %s: exported parameter %lld is %.9g, single process %.9g\n",
                    tag, (long long)i, got[i], want[i]);
            bad = 1;
        }
    }
    printf("%s: exported %lld parameters, worst absolute difference %.2e\n", tag, (long long)n,
           worst);
    if (!bad && bitwise) {
        int64_t differ = 0, first = -1;
        for (int64_t i = 0; i < n; i++)
            if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && differ++ == 0)
                first = i;
        if (differ) {
            fprintf(stderr, "FAIL: %s: %lld of %lld parameters differ in their bits from the "
                    "single process (exact sums); the first, %lld: %a vs %a\n", tag,
                    (long long)differ, (long long)n, (long long)first, (double)got[first],
                    (double)want[first]);
            bad = 1;
        } else {
            printf("%s: bitwise identical to the single process\n", tag);
        }
    }
    free(got);
    return bad;
}

int main(int argc, char **argv)
{
    const int bf16 = argc > 1 && strcmp(argv[argc - 1], "--bf16") == 0;
    argc -= bf16;
    if (argc != 5 && argc != 10) {
        fprintf(stderr, "usage: %s PP EP DP STEPS [--reshard PP2 EP2 DP2 AT] [--bf16]\n",
                argv[0]);
        return 2;
    }
    const int pp = atoi(argv[1]), ep = atoi(argv[2]), dp = atoi(argv[3]), steps = atoi(argv[4]);
    if (steps < 1 || steps > S_MAX_STEPS || pp * ep * dp > S_MAX_CELLS) {
        fprintf(stderr, "steps 1..%d, at most %d cells\n", S_MAX_STEPS, S_MAX_CELLS);
        return 2;
    }
    if (access("/usr/share/games/fortunes", R_OK) != 0) {
        printf("SKIP: /usr/share/games/fortunes missing (Debian package fortunes)\n");
        return 77;
    }
    if (bf16 && kgemm_check(KGEMM_BF16) != SHOAL_OK) {
        printf("SKIP: %s\n", shoal_errmsg());
        return 77;
    }
    char yaml[sizeof s_yaml + 32];
    snprintf(yaml, sizeof yaml, s_yaml, steps, bf16 ? "bf16" : "fp32");
    if (runspec_load_string(yaml, "test spec", &s_spec) != SHOAL_OK)
        s_die("spec");
    snprintf(s_tmp, sizeof s_tmp, "/tmp/shoal-equiv-XXXXXX");
    if (!mkdtemp(s_tmp))
        return 1;
    openblas_set_num_threads(1);
    double ref[S_MAX_STEPS], got[S_MAX_STEPS];
    float *ref_params = NULL;
    int64_t np = 0;
    s_reference(steps, ref, &ref_params, &np);
    static char dirs[S_MAX_CELLS][600], dirs2[S_MAX_CELLS][600];
    int n_dirs = 0, n_dirs2 = 0, bad = 0;
    char tag[64];
    snprintf(tag, sizeof tag, "pp%d-ep%d-dp%d%s", pp, ep, dp, bf16 ? "-bf16" : "");
    if (argc == 5) {
        bad |= s_run(pp, ep, dp, 0, steps, NULL, 0, tag, got, dirs, &n_dirs);
        if (!bad)
            bad |= s_compare_losses(tag, got, ref, 0, steps);
        if (!bad)
            bad |= s_compare_export(tag, dirs, n_dirs, ref_params, np, 1);
    } else {
        const int pp2 = atoi(argv[6]), ep2 = atoi(argv[7]), dp2 = atoi(argv[8]);
        const int at = atoi(argv[9]);
        if (strcmp(argv[5], "--reshard") != 0 || at < 1 || at >= steps ||
            pp2 * ep2 * dp2 > S_MAX_CELLS) {
            fprintf(stderr, "bad --reshard arguments\n");
            return 2;
        }
        bad |= s_run(pp, ep, dp, 0, at, NULL, 0, tag, got, dirs, &n_dirs);
        const char *load[S_MAX_CELLS];
        for (int i = 0; i < n_dirs; i++)
            load[i] = dirs[i];
        char tag2[96];
        snprintf(tag2, sizeof tag2, "%s-then-pp%d-ep%d-dp%d", tag, pp2, ep2, dp2);
        if (!bad)
            bad |= s_run(pp2, ep2, dp2, at, steps, load, n_dirs, tag2, got, dirs2, &n_dirs2);
        if (!bad)
            bad |= s_compare_losses(tag2, got, ref, 0, steps);
        if (!bad)
            bad |= s_compare_export(tag2, dirs2, n_dirs2, ref_params, np, 1);
    }
    free(ref_params);
    if (!bad)
        fsutil_remove_tree(s_tmp);
    else
        fprintf(stderr, "kept %s\n", s_tmp);
    printf(bad ? "FAIL\n" : "PASS\n");
    return bad;
}
