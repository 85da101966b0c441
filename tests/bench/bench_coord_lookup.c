/* bench_coord_lookup: the coordinator's per-message lookups at 10,000 workers, indexed
 * (common/idmap: coord_plan_member, coord_plan_is_spare, the rate-limit bucket by route id)
 * against the linear scans they replaced (plan_find_worker, plan_is_spare, a memcmp per known
 * connection), in the same run: ns per lookup and the ratio; and the re-plan check's eligible
 * list (built at every cron) by a scan of the list against the plan index. CPU only: the ratio
 * holds on a loaded machine, where the absolute figures do not.
 *
 *   bench_coord_lookup [WORKERS=10000] [CELLS=2048]
 *
 * Label bench. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "coord_int.h"
#include "idmap.h"

#define S_ROUTE_LEN 5 /* a ZeroMQ ROUTER's generated id: a zero byte and a uint32 */

static uint64_t s_rng = 88172645463325252ull;

static uint32_t s_rand(uint32_t n)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (uint32_t)(s_rng % n);
}

/* The rate-limit lookup as it was: a memcmp per known connection. */
static const unsigned char *s_scan_route(unsigned char (*routes)[S_ROUTE_LEN], int n,
                                         const unsigned char *id)
{
    for (int j = 0; j < n; j++)
        if (memcmp(routes[j], id, S_ROUTE_LEN) == 0)
            return routes[j];
    return NULL;
}

/* The eligible list of a re-plan check (every cron) as it was: the run's active members, then
 * every other active worker not in the list yet, found by a scan of the list (O(workers x
 * list)). Returns its length. */
static uint32_t s_eligible_scan(coord_worker_t **ws, int n, const coord_run_t *r,
                                coord_worker_t **out)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->plan.n_peers; i++)
        if (ws[i]->state == WORKER_ACTIVE && strcmp(ws[i]->run, r->id) == 0)
            out[k++] = ws[i];
    for (int i = 0; i < n; i++) {
        coord_worker_t *w = ws[i];
        int listed = 0;
        for (uint32_t j = 0; j < k && !listed; j++)
            listed = out[j] == w;
        if (w->state == WORKER_ACTIVE && (!w->run[0] || strcmp(w->run, r->id) == 0) && !listed)
            out[k++] = w;
    }
    return k;
}

/* The same list as coord_sched.c builds it now: "listed" is "an active member holding the
 * run", asked of the plan index. */
static uint32_t s_eligible_index(coord_worker_t **ws, int n, const coord_run_t *r,
                                 coord_worker_t **out)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->plan.n_peers; i++)
        if (ws[i]->state == WORKER_ACTIVE && strcmp(ws[i]->run, r->id) == 0)
            out[k++] = ws[i];
    for (int i = 0; i < n; i++) {
        coord_worker_t *w = ws[i];
        const int listed = w->state == WORKER_ACTIVE && strcmp(w->run, r->id) == 0 &&
                           coord_plan_member(r, w->id) != NULL;
        if (w->state == WORKER_ACTIVE && (!w->run[0] || strcmp(w->run, r->id) == 0) && !listed)
            out[k++] = w;
    }
    return k;
}

/* ns per call of `what` over `n` random workers; `sink` keeps the results alive. */
#define S_TIME(ns, n, expr)                                                                       \
    do {                                                                                          \
        const uint64_t t0_ = clock_mono_ns();                                                     \
        for (int k_ = 0; k_ < (n); k_++) {                                                        \
            const int i = (int)s_rand((uint32_t)workers);                                         \
            sink += (expr) ? 1 : 0;                                                               \
        }                                                                                         \
        ns = (double)(clock_mono_ns() - t0_) / (n);                                               \
    } while (0)

int main(int argc, char **argv)
{
    const int workers = argc > 1 ? atoi(argv[1]) : 10000;
    const int cells = argc > 2 ? atoi(argv[2]) : 2048;
    if (workers < 1 || cells < 1 || cells > workers) {
        fprintf(stderr, "usage: bench_coord_lookup [WORKERS] [CELLS <= WORKERS]\n");
        return 2;
    }
    char(*ids)[PLAN_ID_MAX] = calloc((size_t)workers, sizeof *ids);
    unsigned char(*routes)[S_ROUTE_LEN] = calloc((size_t)workers, sizeof *routes);
    coord_run_t *r = calloc(1, sizeof *r);
    r->plan.peers = calloc((size_t)cells, sizeof *r->plan.peers);
    r->plan.spares = calloc((size_t)(workers - cells), sizeof *r->plan.spares);
    idmap_t rates = {0};
    if (!ids || !routes || !r->plan.peers || (workers > cells && !r->plan.spares))
        return 1;
    for (int i = 0; i < workers; i++) {
        snprintf(ids[i], sizeof ids[i], "w%d", i + 1);
        const uint32_t conn = 0x6b8b4567u + (uint32_t)i;
        routes[i][0] = 0;
        memcpy(&routes[i][1], &conn, 4);
        if (idmap_put(&rates, routes[i], S_ROUTE_LEN, routes[i]) != SHOAL_OK)
            return 1;
        if (i < cells) {
            snprintf(r->plan.peers[i].worker_id, PLAN_ID_MAX, "%s", ids[i]);
            r->plan.peers[i].rank = (uint32_t)i;
        } else {
            snprintf(r->plan.spares[i - cells].worker_id, PLAN_ID_MAX, "%s", ids[i]);
        }
    }
    r->plan.n_peers = (uint32_t)cells;
    r->plan.n_spares = (uint32_t)(workers - cells);
    coord_run_index_plan(r);

    unsigned long long sink = 0;
    const int n_scan = 20000, n_hash = 2000000;
    double scan_member, hash_member, scan_spare, hash_spare, scan_rate, hash_rate;
    S_TIME(scan_member, n_scan, plan_find_worker(&r->plan, ids[i]));
    S_TIME(hash_member, n_hash, coord_plan_member(r, ids[i]));
    S_TIME(scan_spare, n_scan, plan_is_spare(&r->plan, ids[i]));
    S_TIME(hash_spare, n_hash, coord_plan_is_spare(r, ids[i]));
    S_TIME(scan_rate, n_scan, s_scan_route(routes, workers, routes[i]));
    S_TIME(hash_rate, n_hash, idmap_get(&rates, routes[i], S_ROUTE_LEN));
    printf("coordinator lookups: %d workers, %d cells (the rest spares), random worker each "
           "call; sink %llu\n", workers, cells, sink);
    printf("%-34s %10s %10s %8s\n", "lookup", "scan ns", "index ns", "ratio");
    printf("%-34s %10.1f %10.1f %7.0fx\n", "cell of a worker (step report)", scan_member,
           hash_member, scan_member / hash_member);
    printf("%-34s %10.1f %10.1f %7.0fx\n", "spare? (status, workers --json)", scan_spare,
           hash_spare, scan_spare / hash_spare);
    printf("%-34s %10.1f %10.1f %7.0fx\n", "rate bucket by route (every msg)", scan_rate,
           hash_rate, scan_rate / hash_rate);
    printf("status over %d workers: %.1f ms scanning, %.2f ms indexed (the standby count)\n",
           workers, scan_spare * workers / 1e6, hash_spare * workers / 1e6);
    /* the re-plan check's eligible list, every cron (20 a second), every worker active, the
     * first `cells` the plan's members */
    coord_worker_t **ws = calloc((size_t)workers, sizeof *ws), **list = calloc((size_t)workers,
                                                                                sizeof *list);
    if (!ws || !list)
        return 1;
    snprintf(r->id, sizeof r->id, "r1");
    for (int i = 0; i < workers; i++) {
        if (!(ws[i] = calloc(1, sizeof *ws[i])))
            return 1;
        snprintf(ws[i]->id, sizeof ws[i]->id, "%s", ids[i]);
        ws[i]->state = WORKER_ACTIVE;
        snprintf(ws[i]->run, sizeof ws[i]->run, "%s", i < cells ? "r1" : "");
    }
    uint64_t t0 = clock_mono_ns();
    const uint32_t n_scan_list = s_eligible_scan(ws, workers, r, list);
    const double elig_scan = (double)(clock_mono_ns() - t0) / 1e6;
    const int reps = 20;
    uint32_t n_index_list = 0;
    t0 = clock_mono_ns();
    for (int k = 0; k < reps; k++)
        n_index_list = s_eligible_index(ws, workers, r, list);
    const double elig_index = (double)(clock_mono_ns() - t0) / 1e6 / reps;
    printf("eligible list (every cron, 20/s): %.1f ms scanning, %.3f ms indexed (%ux; %u and %u "
           "workers listed): %.2f vs %.4f cores at 20 crons a second\n",
           elig_scan, elig_index, (unsigned)(elig_scan / elig_index), n_scan_list, n_index_list,
           elig_scan * 20 / 1000, elig_index * 20 / 1000);
    sink += n_scan_list == n_index_list;
    for (int i = 0; i < workers; i++)
        free(ws[i]);
    free(ws);
    free(list);
    idmap_fini(&rates);
    coord_run_free(r);
    free(ids);
    free(routes);
    return sink ? 0 : 1;
}
