/* bench_coord_lookup: the coordinator's per-message lookups at 10,000 workers, indexed
 * (common/idmap: coord_plan_member, coord_plan_is_spare, the rate-limit bucket by route id)
 * against the linear scans they replaced (plan_find_worker, plan_is_spare, a memcmp per known
 * connection), in the same run: ns per lookup and the ratio. CPU only: the ratio holds on a
 * loaded machine, where the absolute figures do not.
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
    idmap_fini(&rates);
    coord_run_free(r);
    free(ids);
    free(routes);
    return sink ? 0 : 1;
}
