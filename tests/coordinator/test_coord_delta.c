/* test_coord_delta: plan deltas (issue 13) with the real shoal-coordinator and fake DEALER
 * workers that hold their peer tables as a worker does (plan_delta.h). After a re-plan a member
 * sent the previous generation gets a delta much smaller than the full plan, and the table it
 * rebuilds equals the full plan's peer for peer; a member that does not hold the delta's base
 * refuses it and pulls the full plan; a tampered delta is refused; messages a member sent
 * before its new assignment arrived cause no full pull (test_stale_pull); a member that
 * restarted gets the full plan, not a delta on what its previous process was sent
 * (test_restart_full). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "clock.h"
#include "coord_testlib.h"
#include "plan_delta.h"

#define N_FIRST 8 /* members of the first plan; one more joins */
#define WAIT_MS 30000

static const char *s_spec = "name: delta\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/usr/share/games/fortunes]\n"
                            "train:\n  steps: 1000\n  global_batch: 4\n  seq_len: 32\n  lr: 1e-3\n"
                            "checkpoint:\n  every_steps: 100\n";

/* A fake worker and the peer table it holds, kept as shoal-worker's session keeps it. */
typedef struct {
    tc_worker_t w;
    plan_peers_t held;
    int fulls, deltas, refused, want_full;
    size_t full_bytes, delta_bytes; /* of the last of each */
    uint64_t delta_base;            /* base_generation of the last delta */
    Shoal__Envelope *last_delta;    /* a copy of the last delta received (tamper test) */
} s_member_t;

static void s_on_assignment(void *arg, const Shoal__Envelope *env, size_t bytes)
{
    s_member_t *m = arg;
    const Shoal__Assignment *a = env->assignment;
    if (!a->base_generation) {
        m->fulls++;
        m->full_bytes = bytes;
        assert_int_equal(plan_peers_copy(&m->held, a->plan->run_id, a->plan->generation,
                                         a->plan->peers, a->plan->n_peers),
                         SHOAL_OK);
        return;
    }
    m->deltas++;
    m->delta_bytes = bytes;
    m->delta_base = a->base_generation;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(wire_pack(env, &buf, &len), SHOAL_OK);
    if (m->last_delta)
        shoal__envelope__free_unpacked(m->last_delta, NULL);
    m->last_delta = shoal__envelope__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(m->last_delta);
    plan_peers_t rebuilt = {0};
    const char *why = NULL;
    if (plan_peers_apply(&m->held, env->run_id, a, &rebuilt, &why) != SHOAL_OK) {
        m->refused++;
        m->want_full = 1; /* as a worker does: pull the full assignment */
        return;
    }
    plan_peers_clear(&m->held);
    m->held = rebuilt;
}

static char s_root[128], s_dir[160];

static int s_setup(void **state)
{
    (void)state;
    return tc_tmpdir_make_with(s_root, sizeof s_root, s_dir, sizeof s_dir, "shoal-cd");
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_root);
}

static s_member_t s_m[N_FIRST];

/* Heartbeats members [0, n) for `ms`; pulls the full assignment for those that refused a
 * delta. */
static void s_beat(int n, int ms)
{
    for (int64_t end = clock_mono_ms() + ms; clock_mono_ms() < end;) {
        for (int i = 0; i < n; i++) {
            tc_worker_t *w = &s_m[i].w;
            (void)tc_worker_heartbeat(w, 0);
            if (s_m[i].want_full) {
                s_m[i].want_full = 0;
                (void)tc_worker_get_assignment(w);
            }
        }
        tc_worker_pump(&s_m[0].w, 30);
    }
}

/* Opens and registers member i, named prefix<i>, with the coordinator of `dir`. */
static void s_open_in(const char *dir, const char *prefix, int i)
{
    char name[32];
    snprintf(name, sizeof name, "%s%d", prefix, i);
    assert_int_equal(tc_worker_open(&s_m[i].w, dir, name), 0);
    s_m[i].w.on_assignment = s_on_assignment;
    s_m[i].w.on_assignment_arg = &s_m[i];
    assert_int_equal(tc_worker_register(&s_m[i].w), 0);
}

/* Frees members [0, n) and closes the first n - 1 (the last one died already), then stops the
 * coordinator, which must exit cleanly. */
static void s_members_fini(int n)
{
    for (int i = 0; i < n; i++) {
        plan_peers_clear(&s_m[i].held);
        if (s_m[i].last_delta)
            shoal__envelope__free_unpacked(s_m[i].last_delta, NULL);
        if (i < n - 1)
            tc_worker_close(&s_m[i].w);
    }
    assert_int_equal(WEXITSTATUS(tc_stop(tc_pid, SIGTERM)), 0);
    tc_pid = 0;
}

/* Waits until members [0, n) hold a table of generation >= gen with `peers` peers. */
static void s_wait_gen(int n, uint64_t gen, uint32_t peers)
{
    int all = 0;
    for (int64_t end = clock_mono_ms() + WAIT_MS; !all && clock_mono_ms() < end;) {
        s_beat(n, 100);
        all = 1;
        for (int i = 0; i < n; i++)
            all = all && s_m[i].held.generation >= gen && s_m[i].held.n == peers;
    }
    assert_true(all);
}

/* Starts a coordinator in `dir` with config `yaml`, opens members [0, n) named prefix<i>,
 * submits the run and waits until every member holds its first plan of n peers. */
static void s_start_run(const char *dir, const char *yaml, const char *prefix, int n)
{
    tc_pid = tc_start(dir, yaml);
    for (int i = 0; i < n; i++)
        s_open_in(dir, prefix, i);
    s_beat(n, 200); /* all active before the run is placed: one plan of n */
    tc_reply_t r;
    assert_int_equal(tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    s_wait_gen(n, 1, n);
}

/* s_start_run in a fresh directory `sub` of the test root, with no members held yet. */
static void s_start_run_in(const char *sub, const char *yaml, const char *prefix, int n,
                           char *dir, size_t cap)
{
    snprintf(dir, cap, "%s/%s", s_root, sub);
    assert_int_equal(mkdir(dir, 0700), 0);
    memset(s_m, 0, sizeof s_m);
    s_start_run(dir, yaml, prefix, n);
}

static void s_assert_same_table(const plan_peers_t *a, const plan_peers_t *b)
{
    assert_int_equal(a->generation, b->generation);
    assert_int_equal(a->n, b->n);
    for (uint32_t i = 0; i < a->n; i++)
        assert_true(plan_peer_equal(a->ptrs[i], b->ptrs[i]));
    assert_memory_equal(a->digest, b->digest, PLAN_DIGEST_LEN);
}

static void test_delta(void **state)
{
    (void)state;
    s_start_run(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 1000\n", "cd-w", N_FIRST);
    const uint64_t gen = s_m[0].held.generation;
    for (int i = 0; i < N_FIRST; i++) {
        assert_int_equal(s_m[i].held.generation, gen); /* one plan, held by all */
        assert_int_equal(s_m[i].deltas, 0);           /* the first plan goes out in full */
        s_m[i].fulls = 0;
    }
    const size_t full_bytes = s_m[0].full_bytes;
    plan_peers_t base = {0}; /* generation gen's table, for the tamper checks */
    assert_int_equal(plan_peers_copy(&base, s_m[0].held.run_id, gen, s_m[0].held.ptrs,
                                     s_m[0].held.n), SHOAL_OK);
    /* member 1 lost its table: it must refuse the delta and pull the plan */
    plan_peers_clear(&s_m[1].held);
    /* the re-plan: the last member falls silent and dies */
    char dead_id[64];
    snprintf(dead_id, sizeof dead_id, "%s", s_m[N_FIRST - 1].w.id);
    tc_worker_close(&s_m[N_FIRST - 1].w);
    s_wait_gen(N_FIRST - 1, gen + 1, N_FIRST - 1);
    const uint64_t gen2 = s_m[0].held.generation;
    for (int i = 0; i < N_FIRST - 1; i++) {
        s_member_t *m = &s_m[i];
        printf("# member %d: full %d delta %d refused %d; full %zu B, delta %zu B\n", i, m->fulls,
               m->deltas, m->refused, full_bytes, m->delta_bytes);
        assert_int_equal(m->held.generation, gen2);
        for (uint32_t k = 0; k < m->held.n; k++)
            assert_string_not_equal(m->held.ptrs[k]->worker_id, dead_id);
        assert_int_equal(m->deltas, 1);
        assert_int_equal(m->delta_base, gen);
        assert_true(m->delta_bytes * 3 < full_bytes); /* much smaller than the full plan */
        if (i == 1) { /* no base: refused, pulled in full */
            assert_int_equal(m->refused, 1);
            assert_int_equal(m->fulls, 1);
        } else {
            assert_int_equal(m->refused, 0);
            assert_int_equal(m->fulls, 0);
        }
    }
    /* the rebuilt tables equal the full plan, peer for peer */
    for (int i = 0; i < N_FIRST - 1; i++) {
        plan_peers_t rebuilt = {0};
        assert_int_equal(plan_peers_copy(&rebuilt, s_m[i].held.run_id, s_m[i].held.generation,
                                         s_m[i].held.ptrs, s_m[i].held.n), SHOAL_OK);
        const int fulls = s_m[i].fulls;
        assert_int_equal(tc_worker_get_assignment(&s_m[i].w), 0); /* answered in full */
        assert_int_equal(s_m[i].fulls, fulls + 1);
        s_assert_same_table(&rebuilt, &s_m[i].held);
        plan_peers_clear(&rebuilt);
    }
    /* the real delta applies on its base; tampered ones are refused */
    Shoal__Envelope *d = s_m[0].last_delta;
    Shoal__Assignment *a = d->assignment;
    plan_peers_t out = {0};
    const char *why = NULL;
    assert_int_equal(plan_peers_apply(&base, d->run_id, a, &out, &why), SHOAL_OK);
    s_assert_same_table(&out, &s_m[0].held);
    /* delivered again to a worker that applied it (a push and a pull's answer crossed): the
     * table held is the result, not a refusal and a full fetch */
    plan_peers_t again = {0};
    assert_int_equal(plan_peers_apply(&out, d->run_id, a, &again, &why), SHOAL_OK);
    s_assert_same_table(&again, &s_m[0].held);
    plan_peers_clear(&again);
    a->peers_digest.data[0] ^= 1;
    assert_int_equal(plan_peers_apply(&base, d->run_id, a, &out, &why), SHOAL_ERR_INVALID);
    assert_non_null(strstr(why, "digest"));
    assert_int_equal(out.generation, 0);
    a->peers_digest.data[0] ^= 1;
    a->n_peers++; /* the dead worker's rank back from the base */
    assert_int_equal(plan_peers_apply(&base, d->run_id, a, &out, &why), SHOAL_ERR_INVALID);
    assert_non_null(strstr(why, "digest"));
    a->n_peers--;
    a->base_generation++;
    assert_int_equal(plan_peers_apply(&base, d->run_id, a, &out, &why), SHOAL_ERR_INVALID);
    assert_non_null(strstr(why, "base"));
    a->base_generation--;
    Shoal__Peer forged = SHOAL__PEER__INIT, *forged_p = &forged; /* a peer's endpoint replaced */
    forged = *base.ptrs[0];
    forged.data_endpoint = "tcp://203.0.113.9:7501";
    Shoal__Peer **listed = a->plan->peers;
    const size_t n_listed = a->plan->n_peers;
    assert_true(n_listed == 0 || a->plan->peers[0]->rank > 0);
    a->plan->peers = &forged_p;
    a->plan->n_peers = 1;
    assert_int_equal(plan_peers_apply(&base, d->run_id, a, &out, &why), SHOAL_ERR_INVALID);
    assert_non_null(strstr(why, "digest"));
    a->plan->peers = listed;
    a->plan->n_peers = n_listed;
    plan_peers_clear(&base);
    s_members_fini(N_FIRST);
}

/* A member's messages sent before its new assignment reached it (issue 13: half the full
 * assignments at 10,000 workers were pulls they caused): within a few heartbeat periods of the
 * push, a heartbeat naming the old generation is acked without FETCH_ASSIGNMENT (not refused
 * with ERR_STALE_GENERATION); a GetAssignment naming the old generation is answered with a
 * delta on it, and a second one (the worker refused the delta) in full; after the grace the old
 * generation is refused again. */
static void test_stale_pull(void **state)
{
    (void)state;
    enum { N = 4 };
    char dir[200];
    /* heartbeat 300 ms: the grace is 5 periods (1.5 s), room for a loaded test machine */
    s_start_run_in("stale", "heartbeat_interval_ms: 300\ndead_after_ms: 1500\n", "sp-w", N, dir,
                   sizeof dir);
    const uint64_t gen = s_m[0].held.generation;
    tc_worker_close(&s_m[N - 1].w); /* the re-plan */
    s_wait_gen(N - 1, gen + 1, N - 1);
    const int64_t got_ms = clock_mono_ms();
    const uint64_t gen2 = s_m[0].held.generation;
    tc_worker_t *w0 = &s_m[0].w;
    /* a heartbeat of the old generation, in flight when the assignment went out */
    w0->gen = gen;
    w0->last_directive = -1;
    assert_int_equal(tc_worker_heartbeat(w0, 0), 0); /* an Ack, not ERR_STALE_GENERATION */
    assert_int_equal(w0->last_directive, SHOAL__DIRECTIVE__DIRECTIVE_NONE);
    /* a pull naming the old generation: a delta on it */
    const int deltas = s_m[0].deltas, fulls = s_m[0].fulls;
    w0->gen = gen;
    assert_int_equal(tc_worker_get_assignment(w0), 0);
    assert_int_equal(s_m[0].deltas, deltas + 1);
    assert_int_equal(s_m[0].delta_base, gen);
    assert_int_equal(s_m[0].fulls, fulls);
    /* pulled again on the same base (it refused the delta): the full plan */
    w0->gen = gen;
    assert_int_equal(tc_worker_get_assignment(w0), 0);
    assert_int_equal(s_m[0].fulls, fulls + 1);
    assert_int_equal(s_m[0].deltas, deltas + 1);
    assert_int_equal(s_m[0].held.generation, gen2);
    const int64_t in_grace_ms = clock_mono_ms() - got_ms;
    printf("# old-generation messages answered %lld ms after the assignment arrived\n",
           (long long)in_grace_ms);
    assert_true(in_grace_ms < 1500); /* else the machine stalled: the checks above mean less */
    /* past the grace the old generation is refused (the assignment may have been lost) */
    while (clock_mono_ms() - got_ms < 1700)
        s_beat(N - 1, 100);
    tc_worker_t *w1 = &s_m[1].w;
    w1->gen = gen;
    assert_int_equal(tc_worker_heartbeat(w1, 0), SHOAL__ERROR_CODE__ERR_STALE_GENERATION);
    s_members_fini(N);
}

/* A member that restarts (its process gone, the same name registering again on a new socket)
 * holds no peer table: when the re-plan that follows places it again, it gets the full plan,
 * not a delta on the generation sent to its previous process (it would refuse that and pull:
 * shoal-sim counted such refusals under churn with false deaths). Survivors still get deltas. */
static void test_restart_full(void **state)
{
    (void)state;
    enum { N = 4 };
    char dir[200];
    s_start_run_in("restart", "heartbeat_interval_ms: 100\ndead_after_ms: 3000\n", "rs-w", N, dir,
                   sizeof dir);
    const uint64_t gen = s_m[0].held.generation;
    for (int i = 0; i < N; i++)
        s_m[i].fulls = s_m[i].deltas = s_m[i].refused = 0;
    /* member 0 restarts well within dead_after_ms: a new socket, nothing held, same name */
    char id[64];
    snprintf(id, sizeof id, "%s", s_m[0].w.id);
    tc_worker_close(&s_m[0].w);
    plan_peers_clear(&s_m[0].held);
    s_open_in(dir, "rs-w", 0);
    assert_string_equal(s_m[0].w.id, id); /* the same worker record: its cell is lost */
    s_wait_gen(N, gen + 1, N);            /* re-planned with it again */
    const uint64_t gen2 = s_m[0].held.generation;
    for (int i = 0; i < N; i++) {
        s_member_t *m = &s_m[i];
        printf("# member %d: full %d delta %d refused %d, generation %llu\n", i, m->fulls,
               m->deltas, m->refused, (unsigned long long)m->held.generation);
        assert_int_equal(m->held.generation, gen2);
        assert_int_equal(m->refused, 0);
    }
    assert_int_equal(s_m[0].deltas, 0); /* the restarted one: the full plan at once */
    assert_true(s_m[0].fulls >= 1);
    for (int i = 1; i < N; i++) { /* the survivors, sent gen (and only gen2 after it) */
        if (gen2 == gen + 1)
            assert_int_equal(s_m[i].deltas, 1);
        assert_int_equal(s_m[i].fulls, 0);
    }
    tc_worker_close(&s_m[N - 1].w); /* s_members_fini closes the others */
    s_members_fini(N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_delta, tc_kill_leftover),
        cmocka_unit_test_teardown(test_stale_pull, tc_kill_leftover),
        cmocka_unit_test_teardown(test_restart_full, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
