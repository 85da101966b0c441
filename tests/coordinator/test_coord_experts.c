/* test_coord_experts: the real shoal-coordinator folds the per-expert loads a fake worker
 * reports with its steps (issue 13, hot experts): the decayed load is exactly
 * load * 2^(-steps/half_life) + counts, a retried step is folded once, the hottest expert is the
 * skewed one, the EPLB placement with a redundant slot is more even than the contiguous split,
 * loads that do not fit the model (a dense layer, a wrong expert count) are dropped and counted
 * while the step itself is taken, the persisted loads survive a SIGKILL (read back from the
 * store), and an ep that does not divide the experts is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "coord_testlib.h"
#include "ctl_client.h"
#include "wire.h"
#ifdef SHOAL_TEST_METRICS
#include "http_get.h"
#endif

#define HB_MS 100
#define WAIT_MS 30000
#define N_EXPERTS 8 /* the tiny preset: 4 layers, layer 0 dense, 8 routed experts, top-2 */
#define HALF_LIFE 4

static const char *s_spec = "name: hot\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/usr/share/games/fortunes]\n"
                            "train:\n  steps: 40\n  global_batch: 4\n  seq_len: 16\n  lr: 1e-3\n";
static char s_cfg[256];

static char s_root[128], s_dir[160];

static unsigned s_port; /* metrics_listen (0: built without /metrics) */

static int s_setup(void **state)
{
    (void)state;
#ifdef SHOAL_TEST_METRICS
    s_port = test_free_port();
#endif
    int n = snprintf(s_cfg, sizeof s_cfg, "heartbeat_interval_ms: 100\ndead_after_ms: 60000\n"
                                          "expert_load_half_life_steps: 4\n");
    if (s_port)
        snprintf(s_cfg + n, sizeof s_cfg - (size_t)n, "metrics_listen: 127.0.0.1:%u\n", s_port);
    if (tc_tmpdir_make(s_root, sizeof s_root, "shoal-cx") != 0)
        return -1;
    snprintf(s_dir, sizeof s_dir, "%s/c", s_root);
    return mkdir(s_dir, 0755);
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_root);
}

/* The step's counts of layer l: expert 5 takes `hot` tokens, the others 10 + l + x. */
static void s_counts(uint32_t l, uint64_t hot, uint64_t *out)
{
    for (uint32_t x = 0; x < N_EXPERTS; x++)
        out[x] = x == 5 ? hot : 10 + l + x;
}

/* A StepReport of `step` with the loads of layers [first, first + n) (n_experts counts each). */
static int s_report(tc_worker_t *w, int64_t step, uint32_t first, uint32_t n, uint32_t n_experts,
                    uint64_t hot)
{
    Shoal__ExpertLoad el[4], *elp[4];
    uint64_t counts[4][N_EXPERTS + 1];
    for (uint32_t i = 0; i < n; i++) {
        shoal__expert_load__init(&el[i]);
        s_counts(first + i, hot, counts[i]);
        counts[i][N_EXPERTS] = 1;
        el[i].layer = first + i;
        el[i].n_counts = n_experts;
        el[i].counts = counts[i];
        elp[i] = &el[i];
    }
    Shoal__StepReport sr = SHOAL__STEP_REPORT__INIT;
    sr.step = step;
    sr.loss = 3.0f;
    sr.tokens = 64;
    sr.n_expert_loads = n;
    sr.expert_loads = elp;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_STEP_REPORT, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_STEP_REPORT;
    env.step_report = &sr;
    return tc_worker_call(w, &env);
}

/* The CtlExperts reply document (NULL on an error reply; *code its ErrorCode). */
static json_t *s_experts(const char *run, uint32_t ep, uint32_t redundant, int *code)
{
    char ep_s[256];
    tc_control_endpoint(s_dir, ep_s, sizeof ep_s);
    ctl_client_t *c = ctl_client_new(ep_s, 3000);
    assert_non_null(c);
    ctl_reply_t reply = {0};
    assert_int_equal(ctl_client_experts(c, run, ep, 0, redundant, &reply), SHOAL_OK);
    *code = reply.code;
    json_t *doc = reply.ok ? json_loads(reply.json, 0, NULL) : NULL;
    ctl_reply_fini(&reply);
    ctl_client_destroy(&c);
    return doc;
}

static const json_t *s_layer(const json_t *doc, int layer)
{
    size_t i;
    const json_t *l;
    json_array_foreach(json_object_get(doc, "layers"), i, l) if (tc_jint(l, "layer") == layer)
        return l;
    return NULL;
}

/* /metrics: shoal_expert_load_imbalance{run="hot",layer="L"} is max/mean of layer L's loads (the
 * plan has ep 1: one expert a rank), once the snapshot (every 500 ms) has them. */
static void s_check_metric(const json_t *jl)
{
#ifdef SHOAL_TEST_METRICS
    const json_t *load = json_object_get(jl, "load");
    double max = 0, sum = 0;
    for (size_t x = 0; x < json_array_size(load); x++) {
        const double v = json_number_value(json_array_get(load, x));
        sum += v;
        max = v > max ? v : max;
    }
    const double want = max / (sum / (double)json_array_size(load));
    char series[96];
    snprintf(series, sizeof series, "shoal_expert_load_imbalance{run=\"hot\",layer=\"%d\"} ",
             (int)tc_jint(jl, "layer"));
    static char page[1 << 20];
    double got = -1;
    for (int64_t end = clock_mono_ms() + 5000; clock_mono_ms() < end; tc_sleep_ms(100)) {
        assert_int_equal(test_http(s_port, "GET", "/metrics", page, sizeof page), 200);
        const char *at = strstr(page, series);
        if (at && (got = strtod(at + strlen(series), NULL)) > 0)
            break;
    }
    print_message("%s= %.4f (want %.4f)\n", series, got, want);
    assert_true(fabs(got - want) < 1e-3 * want);
#else
    (void)jl;
#endif
}

static void test_expert_loads(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, s_cfg);
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r), 0);
    assert_true(r.ok);
    char run[64];
    snprintf(run, sizeof run, "%s", tc_jstr(r.json, "id"));
    tc_reply_fini(&r);
    tc_worker_t w;
    tc_worker_t *all[1] = {&w};
    assert_int_equal(tc_worker_open(&w, s_dir, "xa"), 0);
    assert_int_equal(tc_worker_register(&w), 0);
    for (int64_t end = clock_mono_ms() + WAIT_MS; w.gen < 1 && clock_mono_ms() < end;)
        tc_beat(all, 1, 50, HB_MS, 0, false);
    assert_true(w.gen >= 1);

    /* steps 1 and 3 (a gap of 2), and a retry of step 3 with other counts: folded once */
    assert_int_equal(s_report(&w, 1, 1, 3, N_EXPERTS, 100), 0);
    assert_int_equal(s_report(&w, 2, 1, 0, N_EXPERTS, 0), 0);
    assert_int_equal(s_report(&w, 3, 1, 3, N_EXPERTS, 300), 0);
    assert_int_equal(s_report(&w, 3, 1, 3, N_EXPERTS, 999), 0);
    /* misfits: the dense layer 0, and a count per expert too many: steps taken, loads dropped */
    assert_int_equal(s_report(&w, 4, 0, 1, N_EXPERTS, 50), 0);
    assert_int_equal(s_report(&w, 5, 2, 1, N_EXPERTS + 1, 50), 0);

    int code = 0;
    json_t *doc = s_experts(run, 2, 1, &code);
    assert_non_null(doc);
    assert_int_equal(tc_jint(doc, "dropped"), 2);
    assert_int_equal(json_array_size(json_object_get(doc, "layers")), 3);
    assert_null(s_layer(doc, 0));
    const double decay = exp2(-2.0 / HALF_LIFE);
    for (int l = 1; l <= 3; l++) {
        const json_t *jl = s_layer(doc, l);
        assert_non_null(jl);
        assert_int_equal(tc_jint(jl, "step"), 3);
        assert_int_equal(tc_jint(jl, "folded"), 2);
        uint64_t a[N_EXPERTS], b[N_EXPERTS], total = 0;
        s_counts((uint32_t)l, 100, a);
        s_counts((uint32_t)l, 300, b);
        for (int x = 0; x < N_EXPERTS; x++) {
            const double want = (double)a[x] * decay + (double)b[x];
            const double got = json_number_value(json_array_get(json_object_get(jl, "load"), x));
            assert_true(fabs(got - want) < 1e-9 * want);
            assert_int_equal(json_integer_value(json_array_get(json_object_get(jl, "last"), x)),
                             b[x]);
            total += b[x];
        }
        assert_int_equal(tc_jint(jl, "last_total"), total);
        const json_t *hot = json_array_get(json_object_get(jl, "hottest"), 0);
        assert_int_equal(tc_jint(hot, "expert"), 5);
        /* ep 2: experts 4-7 (with the hot one) against 0-3; one redundant slot evens it out */
        const double contig = json_number_value(json_object_get(jl, "contiguous_imbalance"));
        const json_t *eplb = json_object_get(jl, "eplb");
        const double placed = json_number_value(json_object_get(eplb, "imbalance"));
        print_message("layer %d: contiguous %.3f, eplb %.3f\n", l, contig, placed);
        assert_true(contig > 1.3);
        assert_true(placed < contig - 0.2);
        /* both spare slots (10 slots, 8 experts) copy the hot expert */
        assert_int_equal(json_integer_value(json_array_get(json_object_get(eplb, "replicas"), 5)),
                         3);
        s_check_metric(jl);
    }
    json_decref(doc);

    /* SIGKILL: the loads come back from the store as last persisted (the first fold, then every
     * 16 steps: here step 1's) */
    tc_stop(tc_pid, SIGKILL);
    tc_worker_close(&w);
    tc_pid = tc_start(s_dir, s_cfg);
    doc = s_experts(run, 2, 0, &code);
    assert_non_null(doc);
    const json_t *jl = s_layer(doc, 2);
    assert_non_null(jl);
    assert_int_equal(tc_jint(jl, "step"), 1);
    uint64_t a[N_EXPERTS];
    s_counts(2, 100, a);
    for (int x = 0; x < N_EXPERTS; x++) {
        assert_int_equal(json_integer_value(json_array_get(json_object_get(jl, "last"), x)), a[x]);
        assert_true(json_number_value(json_array_get(json_object_get(jl, "load"), x)) ==
                    (double)a[x]);
    }
    json_decref(doc);
    /* an ep that does not divide the experts is refused */
    assert_null(s_experts(run, 3, 0, &code));
    assert_int_equal(code, SHOAL__ERROR_CODE__ERR_INVALID);
    assert_int_equal(tc_stop(tc_pid, SIGTERM) & 0x7f, 0);
    tc_pid = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_expert_loads, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
