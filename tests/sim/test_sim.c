/* test_sim: the simulator at small N against the real coordinator: 200 shoal-sim workers (real
 * DEALER sockets, the real protocol) train a pp 2 x ep 2 x dp 40 run with 40 spares while one
 * worker a second dies, joins or drains (seeded). Every simulated death must be declared dead by
 * the coordinator and, when the worker held a cell, followed by a plan without it; the run must
 * keep committing steps and checkpoints; the ledger must verify. Prints the detection latencies
 * (never asserted: timing is the benchmark's business). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord_testlib.h"
#include "ctl_client.h"
#include "sim_check.h"

static const char *s_spec = "name: sim\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/dev/null]\n"
                            "train:\n  steps: 100000\n  global_batch: 160\n  seq_len: 64\n"
                            "  micro_batch: 1\n  lr: 1e-3\n"
                            "checkpoint:\n  every_steps: 10\n"
                            "parallel:\n  pipeline_stages: 2\n  expert_parallel: 2\n"
                            "  data_parallel: 40\n";

/* Hot experts (issue 13): the simulated stages' Zipf-skewed loads reached the coordinator; its
 * decayed loads rank the experts as the simulator skews them (rank k of layer l is expert
 * (7k + 3l) mod 8, shoal_sim.c), and the EPLB placement with a redundant slot per rank is more
 * even than the plan's contiguous split. */
static void s_check_experts(const char *dir, const char *run)
{
    char ep[300];
    tc_control_endpoint(dir, ep, sizeof ep);
    ctl_client_t *c = ctl_client_new(ep, 5000);
    assert_non_null(c);
    ctl_reply_t reply = {0};
    assert_int_equal(ctl_client_experts(c, run, 0, 0, 1, &reply), SHOAL_OK);
    if (!reply.ok)
        fail_msg("experts: %s", reply.message);
    json_t *doc = json_loads(reply.json, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(tc_jint(doc, "ep"), 2);
    assert_int_equal(tc_jint(doc, "dropped"), 0);
    const json_t *layers = json_object_get(doc, "layers");
    assert_int_equal(json_array_size(layers), 3); /* tiny: layers 1-3 are MoE */
    size_t i;
    const json_t *l;
    json_array_foreach(layers, i, l)
    {
        const json_int_t layer = tc_jint(l, "layer");
        const json_t *hot = json_object_get(l, "hottest");
        for (int k = 0; k < 3; k++)
            assert_int_equal(tc_jint(json_array_get(hot, (size_t)k), "expert"),
                             (7 * k + 3 * layer) % 8);
        const double contig = json_number_value(json_object_get(l, "contiguous_imbalance"));
        const double placed =
            json_number_value(json_object_get(json_object_get(l, "eplb"), "imbalance"));
        printf("sim: layer %lld at step %lld: contiguous imbalance %.3f, eplb (1 redundant) %.3f\n",
               (long long)layer, (long long)tc_jint(l, "step"), contig, placed);
        assert_true(tc_jint(l, "step") >= 20);
        assert_true(placed < contig);
    }
    json_decref(doc);
    ctl_reply_fini(&reply);
    ctl_client_destroy(&c);
}

/* Deaths the coordinator's log declares by a closed connection (not by silence). */
static int s_closed_deaths(const char *dir)
{
    char path[512], line[2048];
    snprintf(path, sizeof path, "%s/coordinator.log", dir);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, "connection closed") && strstr(line, "no message since") ? 1 : 0;
    if (f)
        fclose(f);
    return n;
}

/* relay: the workers of each host of 8 share one connection, as behind `shoal-worker relay`. */
static void s_sim_churn(int relay)
{
    char dir[256], ep[300], events[300], log[300];
    assert_int_equal(tc_tmpdir_make(dir, sizeof dir, "shoal-sim"), 0);
    tc_pid = tc_start(dir, "heartbeat_interval_ms: 100\ndead_after_ms: 3000\nlog_level: info\n");
    tc_reply_t r;
    assert_int_equal(tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r), 0);
    if (!r.ok)
        fail_msg("submit: %s", r.message);
    char run[128];
    snprintf(run, sizeof run, "%s", tc_jstr(r.json, "id"));
    tc_reply_fini(&r);
    tc_worker_endpoint(dir, ep, sizeof ep);
    snprintf(events, sizeof events, "%s/events.txt", dir);
    snprintf(log, sizeof log, "%s/sim.log", dir);
    /* churn from 3 s to 13 s; the drivers run on (heartbeating, training) until every death is
     * seen through, at most 40 s */
    char *argv[] = {"shoal-sim", "--connect", ep, "--workers", "200", "--seconds", "40",
                    "--hb-ms", "100", "--step-ms", "100", "--ckpt-every", "10", "--churn-ms",
                    "1000", "--churn-offset-ms", "3000", "--quiet-after-ms", "27000", "--seed",
                    "13", "--events", events, "--experts", "8", "--first-moe", "1", "--relay",
                    relay ? "1" : "0", NULL};
    pid_t sim = sim_spawn(SHOAL_SIM_BIN, argv, log);
    assert_true(sim > 0);
    sim_event_t *ev = NULL;
    json_t *rl = NULL, *cl = NULL;
    sim_deaths_t d = {0};
    int n = 0, st = 0, exited = 0;
    tc_sleep_ms(13000);
    for (;;) {
        exited = waitpid(sim, &st, WNOHANG) == sim;
        free(ev);
        json_decref(rl);
        json_decref(cl);
        sim_deaths_fini(&d);
        n = sim_events_load(events, &ev);
        rl = sim_ledger(dir, run);
        cl = sim_ledger(dir, "cluster");
        assert_true(n > 0);
        assert_non_null(rl);
        assert_non_null(cl);
        sim_check_deaths(ev, n, rl, cl, &d);
        if (exited || (!d.first_missing[0] && d.deaths >= 3))
            break;
        tc_sleep_ms(1000);
    }
    if (!exited) {
        kill(sim, SIGTERM);
        assert_int_equal(waitpid(sim, &st, 0), sim);
    }
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    double p50 = sim_quantile(d.latency_ms, d.detected, 0.5);
    double p99 = sim_quantile(d.latency_ms, d.detected, 0.99);
    printf("sim: %d events, %d deaths (%d held cells), detected %d, re-planned %d; detection "
           "p50 %.0f ms, p99 %.0f ms\n", n, d.deaths, d.members, d.detected, d.replanned, p50,
           p99);
    if (d.first_missing[0])
        fail_msg("%s", d.first_missing);
    assert_true(d.deaths >= 3);
    assert_int_equal(d.detected, d.deaths);
    assert_true(d.members >= 1);
    assert_int_equal(d.replanned, d.members);
    /* a relayed worker's death reaches the coordinator as its relay's RelayClosed: declared by
     * the closed connection, within its grace, never by 3 s of silence */
    const int closed = s_closed_deaths(dir);
    printf("sim: %d deaths declared by a closed connection%s\n", closed,
           relay ? " (relayed)" : "");
    assert_true(closed >= d.deaths);

    /* the run went on: steps and checkpoints committed under churn */
    json_t *rs = tc_run_status(dir, run);
    assert_non_null(rs);
    printf("sim: run %s at step %lld, checkpoint %lld, generation %lld\n", tc_jstr(rs, "state"),
           (long long)tc_jint(rs, "step"), (long long)tc_jint(rs, "checkpoint_step"),
           (long long)tc_jint(rs, "generation"));
    assert_string_equal(tc_jstr(rs, "state"), "running");
    assert_true(tc_jint(rs, "step") >= 20);
    assert_true(tc_jint(rs, "checkpoint_step") >= 10);
    json_decref(rs);

    assert_int_equal(tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_VERIFY, run, 0, &r), 0);
    assert_true(r.ok);
    assert_true(json_is_true(json_object_get(r.json, "ok")));
    tc_reply_fini(&r);
    s_check_experts(dir, run);

    sim_deaths_fini(&d);
    json_decref(rl);
    json_decref(cl);
    free(ev);
    tc_stop(tc_pid, SIGTERM);
    tc_pid = 0;
    tc_tmpdir_remove(dir);
}

static void test_sim_churn(void **state)
{
    (void)state;
    s_sim_churn(0);
}

/* The same churn with every host's 8 workers on one connection (shoal-worker relay's framing
 * and queue, worker/relay.h). */
static void test_sim_churn_relay(void **state)
{
    (void)state;
    s_sim_churn(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sim_churn, tc_kill_leftover),
        cmocka_unit_test_teardown(test_sim_churn_relay, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
