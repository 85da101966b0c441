/* bench_plan_v3: the planner at DeepSeek-V3 shape (tests/sim/v3_shape.h) over 2,048 GPUs:
 * the plan's time (target < 1 s), the re-plan after one host dies (plan_build + keeping
 * survivors on their cells, then whether peers hold every part; target < 100 ms, moving only the dead host's cells), with a spare
 * host and without one, and EPLB hot-expert placement of every MoE layer from skewed loads.
 *
 *   bench_plan_v3 [REPEATS=5]
 *
 * Prints medians of REPEATS and the moved cells; exits 1 when a plan fails. Label bench. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "plan.h"
#include "v3_shape.h"

static model_config_t s_m;

static double s_median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

/* One plan over the cluster (n_hosts, skip_host), its ms in *ms. */
static int s_plan(plan_t *p, uint32_t n_hosts, int skip_host, uint64_t memory, double *ms)
{
    plan_request_t req = v3_request(&s_m);
    v3_cluster_t *c = v3_cluster_new(n_hosts, skip_host, memory);
    if (!c)
        return -1;
    uint32_t n;
    const plan_worker_t *w = v3_cluster_workers(c, &n);
    uint64_t t0 = clock_mono_ns();
    shoal_err_t rc = plan_build(p, "v3", 1, &req, w, n);
    *ms = (double)(clock_mono_ns() - t0) / 1e6;
    v3_cluster_free(&c);
    if (rc != SHOAL_OK && memory == 0) {
        fprintf(stderr, "plan: %s\n", shoal_errmsg());
        return -1;
    }
    return 0;
}

/* The host of rank 777 dies; the re-plan over the others keeps survivors on their cells.
 * Returns the cells moved (-1 on failure), the re-plan's ms in *ms. */
static int s_replan(const plan_t *old, uint32_t n_hosts, double *ms)
{
    char dead[PLAN_HOST_MAX];
    snprintf(dead, sizeof dead, "%s", old->peers[777].site.host);
    plan_request_t req = v3_request(&s_m);
    v3_cluster_t *c = v3_cluster_new(n_hosts, atoi(dead + 1), 0);
    plan_survivor_t *sv = calloc(old->n_peers, sizeof *sv);
    if (!c || !sv)
        return -1;
    uint32_t n, n_sv = 0;
    const plan_worker_t *w = v3_cluster_workers(c, &n);
    for (uint32_t i = 0; i < old->n_peers; i++)
        if (strcmp(old->peers[i].site.host, dead) != 0)
            sv[n_sv++] = (plan_survivor_t){old->peers[i].worker_id, 10};
    plan_t p = {0};
    uint64_t t0 = clock_mono_ns();
    shoal_err_t rc = plan_build(&p, "v3", 2, &req, w, n);
    uint32_t src = 0;
    int held = 0;
    if (rc == SHOAL_OK) {
        plan_keep_holders(&p, old, sv, n_sv);
        held = plan_parts_held(&p, old, sv, n_sv, 10, &src);
    }
    *ms = (double)(clock_mono_ns() - t0) / 1e6;
    int moved = rc == SHOAL_OK ? (int)plan_cells_moved(old, &p) : -1;
    if (rc == SHOAL_OK && !held && p.dp == old->dp) {
        fprintf(stderr, "re-plan: a part of the model held by no survivor\n");
        moved = -1;
    }
    if (rc == SHOAL_OK && moved >= 0 && p.dp != old->dp)
        printf("  (dp %u -> %u: %u cells kept, %u spares)\n", old->dp, p.dp,
               p.n_peers - (uint32_t)moved, p.n_spares);
    plan_fini(&p);
    free(sv);
    v3_cluster_free(&c);
    return moved;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    if (reps < 1 || reps > 100)
        reps = 5;
    v3_model(&s_m);
    double t[100], t80[100], tr[100], trn[100], te[100];
    plan_t p = {0}, p257 = {0};
    int moved = -1, moved_nospare = -1;
    for (int i = 0; i < reps; i++) {
        plan_t tmp = {0};
        if (s_plan(&p, 256, -1, 0, &t[i]) || s_plan(&tmp, 256, -1, V3_GPU_BYTES, &t80[i]) ||
            s_plan(&p257, 257, -1, 0, &tr[i]))
            return 1;
        plan_fini(&tmp);
        moved = s_replan(&p257, 257, &tr[i]);
        moved_nospare = s_replan(&p, 256, &trn[i]);
        if (moved < 0 || moved_nospare < 0)
            return 1;
        /* EPLB: every MoE layer of one replica's stages, 1 redundant slot a rank */
        double load[256];
        uint64_t t0 = clock_mono_ns();
        uint32_t worst_hosts = 0;
        double worst_ratio = 0;
        for (int l = s_m.first_k_dense_replace; l < s_m.num_hidden_layers; l++) {
            v3_expert_loads(load, 256, (uint32_t)l);
            uint32_t stage = 0;
            while (stage + 1 < p.pp && p.stages[stage + 1].first_layer <= (uint32_t)l)
                stage++;
            plan_eplb_t e = {0};
            if (plan_eplb_place(&e, load, 256, 8, plan_ep_hosts(&p, 0, stage), 64, 1) != SHOAL_OK)
                return 1;
            uint32_t h = plan_eplb_token_hosts(&e, 8, 4);
            worst_hosts = h > worst_hosts ? h : worst_hosts;
            if (e.max_rank_load / e.mean_rank_load > worst_ratio)
                worst_ratio = e.max_rank_load / e.mean_rank_load;
            plan_eplb_fini(&e);
        }
        te[i] = (double)(clock_mono_ns() - t0) / 1e6;
        if (i == reps - 1)
            printf("eplb: 58 MoE layers, ep 64 on %u hosts, 1 redundant slot a rank: hottest "
                   "rank / mean <= %.3f, a token's experts on <= %u hosts\n",
                   plan_ep_hosts(&p, 0, 0), worst_ratio, worst_hosts);
    }
    printf("plan v3 (2048 GPUs, dp %u x pp %u x ep %u): %.1f ms median of %d\n", p.dp, p.pp,
           p.ep, s_median(t, reps), reps);
    printf("plan v3 with 80 GB declared (shoal's trainer does not fit; pp raised until refused): "
           "%.1f ms\n", s_median(t80, reps));
    printf("re-plan after a host dies, one spare host: %.1f ms, %d cells moved\n",
           s_median(tr, reps), moved);
    printf("re-plan after a host dies, no spare: %.1f ms, %d cells moved\n", s_median(trn, reps),
           moved_nospare);
    printf("eplb of 58 layers: %.2f ms\n", s_median(te, reps));
    plan_fini(&p);
    plan_fini(&p257);
    return 0;
}
