/* test_coord_replicas.c: where the coordinator puts checkpoint shard copies
 * (coord_replicas_choose): live workers with a shard server, other hosts first, then other
 * institutions, then the worker ids after the writer's; never the writer, never more than
 * asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "coord_int.h"

static coord_worker_t s_w[8];
static coord_worker_t *s_list[8];

/* worker i: id w<i+1>, the given host and institution, live with a shard server */
static void s_worker(int i, const char *host, const char *inst)
{
    coord_worker_t *w = &s_w[i];
    memset(w, 0, sizeof *w);
    snprintf(w->id, sizeof w->id, "w%d", i + 1);
    snprintf(w->host, sizeof w->host, "%s", host);
    snprintf(w->institution, sizeof w->institution, "%s", inst);
    snprintf(w->shard_endpoint, sizeof w->shard_endpoint, "tcp://%s:%d", host, 7600 + i);
    w->state = WORKER_ACTIVE;
    s_list[i] = w;
}

static coord_t s_cluster(int n)
{
    coord_t c;
    memset(&c, 0, sizeof c);
    c.workers = s_list;
    c.n_workers = n;
    c.next_worker = (uint64_t)n + 1;
    return c;
}

static void s_expect(coord_t *c, int writer, int n, const char *want)
{
    coord_worker_t *out[8];
    char got[64] = "";
    const int k = coord_replicas_choose(c, &s_w[writer], n, out);
    for (int i = 0; i < k; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? " " : "", out[i]->id);
    if (strcmp(got, want) != 0)
        fail_msg("copies of w%d's shard (%d asked): got '%s', want '%s'", writer + 1, n, got, want);
}

/* Other hosts first, then other institutions, then ids after the writer's. */
static void test_preferences(void **state)
{
    (void)state;
    s_worker(0, "a", "uni-x"); /* w1 */
    s_worker(1, "a", "uni-x"); /* w2: the writer's host */
    s_worker(2, "b", "uni-x"); /* w3: another host, same institution */
    s_worker(3, "c", "uni-y"); /* w4: another host and institution */
    s_worker(4, "d", "uni-x"); /* w5 */
    s_worker(5, "a", "uni-y"); /* w6: same host, other institution */
    coord_t c = s_cluster(6);
    s_expect(&c, 0, 2, "w4 w3");          /* other host + other institution first */
    s_expect(&c, 0, 5, "w4 w3 w5 w6 w2"); /* the same host last, other institution before */
    s_expect(&c, 4, 3, "w6 w4 w1");       /* w5 on d: w1..w3 share its institution; w6 follows w5 */
    s_expect(&c, 0, 0, "");
}

/* Ties (one host each, one institution) go to the ids after the writer's, so copies spread. */
static void test_spread_and_liveness(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++) {
        char h[8];
        snprintf(h, sizeof h, "h%d", i);
        s_worker(i, h, "uni");
    }
    coord_t c = s_cluster(5);
    s_expect(&c, 0, 2, "w2 w3");
    s_expect(&c, 3, 2, "w5 w1");
    s_expect(&c, 4, 9, "w1 w2 w3 w4"); /* never the writer, never more than there are */
    s_w[1].state = WORKER_DEAD;        /* dead, departed or without a shard server: skipped */
    s_w[2].state = WORKER_LEFT;
    s_w[3].shard_endpoint[0] = 0;
    s_expect(&c, 0, 2, "w5");
    s_w[3].shard_endpoint[0] = 't';
    s_w[3].state = WORKER_DRAINED; /* drained workers are alive and keep copies */
    s_expect(&c, 0, 2, "w4 w5");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preferences),
        cmocka_unit_test(test_spread_and_liveness),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
