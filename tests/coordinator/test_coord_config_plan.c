/* test_coord_config_plan: the coordinator's config table (defaults, YAML file errors with
 * FILE:LINE:COLUMN, flag precedence, ipc path bounds) and the planner (stage and expert layout
 * for pp/ep, the data-parallel plan, the JSON round trip and its rejection of bad documents). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "plan.h"

static char s_path[64];

static void s_write(const char *text)
{
    snprintf(s_path, sizeof s_path, "/tmp/shoal-cfg-%d.yaml", (int)getpid());
    FILE *f = fopen(s_path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_config_defaults_and_file(void **state)
{
    (void)state;
    coord_config_t c;
    config_defaults(&c);
    assert_string_equal(c.listen, "tcp://*:7400");
    assert_string_equal(c.state_dir, "/var/lib/shoal/coordinator");
    assert_int_equal(c.heartbeat_interval_ms, 500);
    assert_int_equal(c.dead_after_ms, 3000);
    assert_int_equal(c.quarantine_after_failures, 3);
    assert_int_equal(c.replan_backoff_ms, 1000);
    assert_int_equal(c.replan_backoff_max_ms, 30000);
    /* the default TCP endpoint needs CURVE keys, or an explicit insecure */
    assert_int_equal(config_finish(&c), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "TCP endpoints need CURVE"));
    assert_int_equal(config_set(&c, "insecure", "1", "--insecure"), SHOAL_OK);
    assert_int_equal(config_finish(&c), SHOAL_OK);
    assert_string_equal(c.control, "ipc:///var/lib/shoal/coordinator/control.sock");

    config_defaults(&c);
    s_write("# comment\nstate_dir: /tmp/x\nheartbeat_interval_ms: 250\ndead_after_ms: 1000\n"
            "listen: tcp://127.0.0.1:7499\n");
    assert_int_equal(config_load_file(&c, s_path), SHOAL_OK);
    /* a flag wins over the file */
    assert_int_equal(config_set(&c, "listen", "ipc:///tmp/x/w.sock", "--listen"), SHOAL_OK);
    assert_int_equal(config_finish(&c), SHOAL_OK);
    assert_int_equal(c.heartbeat_interval_ms, 250);
    assert_string_equal(c.listen, "ipc:///tmp/x/w.sock");
    assert_string_equal(c.control, "ipc:///tmp/x/control.sock");

    struct {
        const char *yaml, *expect;
    } bad[] = {
        {"listen: a\nbogus: 1\n", ":2:1: unknown key 'bogus'"},
        {"dead_after_ms: 10\n", ":1:16: dead_after_ms: 10 is out of range"},
        {"dead_after_ms: soon\n", ":1:16: dead_after_ms: 'soon' is not an integer"},
        {"listen: a\nlisten: b\n", ":2:1: duplicate key 'listen'"},
        {"listen: [a, b]\n", ":1:9: listen: expected a scalar value, not a list"},
        {"log_level: loud\n", ":1:12: log_level: 'loud' is not one of"},
        {"listen: {a: 1}\n", ":1:9:"},
        {"- a\n- b\n", ":1:1:"},
        {"listen: 'unterminated\n", ":"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        config_defaults(&c);
        s_write(bad[i].yaml);
        assert_int_not_equal(config_load_file(&c, s_path), SHOAL_OK);
        if (!strstr(shoal_errmsg(), bad[i].expect) || !strstr(shoal_errmsg(), s_path))
            fail_msg("case %zu: got '%s', want '%s'", i, shoal_errmsg(), bad[i].expect);
    }
    assert_int_equal(config_load_file(&c, "/nonexistent/c.yaml"), SHOAL_ERR_IO);
    unlink(s_path);

    /* timeouts must make sense together; ipc paths must fit */
    config_defaults(&c);
    assert_int_equal(config_set(&c, "dead_after_ms", "400", "--x"), SHOAL_OK);
    assert_int_equal(config_finish(&c), SHOAL_ERR_INVALID);
    config_defaults(&c);
    char longdir[200];
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = 0;
    assert_int_equal(config_set(&c, "state_dir", longdir, "--state-dir"), SHOAL_OK);
    assert_int_equal(config_set(&c, "insecure", "1", "--insecure"), SHOAL_OK);
    assert_int_equal(config_finish(&c), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "too long"));
    assert_int_equal(config_set(&c, "nope", "1", "--nope"), SHOAL_ERR_NOTFOUND);
    /* the failure back-off: its cap must not be below its start; quarantine may be off */
    config_defaults(&c);
    assert_int_equal(config_set(&c, "quarantine_after_failures", "0", "--x"), SHOAL_OK);
    assert_int_equal(config_set(&c, "quarantine_after_failures", "-1", "--x"), SHOAL_ERR_INVALID);
    assert_int_equal(config_set(&c, "replan_backoff_ms", "5000", "--x"), SHOAL_OK);
    assert_int_equal(config_set(&c, "replan_backoff_max_ms", "2000", "--x"), SHOAL_OK);
    assert_int_equal(config_finish(&c), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "replan_backoff_max_ms"));
}

static void test_plan_layout(void **state)
{
    (void)state;
    plan_t p = {0};
    /* 10 layers over 4 stages: 3,3,2,2; 8 experts over 4 ranks: 2 each */
    assert_int_equal(plan_layout(&p, 2, 4, 4, 10, 8), SHOAL_OK);
    uint32_t total = 0;
    for (uint32_t s = 0; s < 4; s++) {
        assert_int_equal(p.stages[s].first_layer, total);
        total += p.stages[s].n_layers;
    }
    assert_int_equal(total, 10);
    assert_int_equal(p.stages[0].n_layers, 3);
    assert_int_equal(p.stages[3].n_layers, 2);
    assert_true(p.stages[0].has_embedding && !p.stages[0].has_head);
    assert_true(p.stages[3].has_head && !p.stages[3].has_embedding);
    assert_int_equal(p.n_experts, 4);
    assert_int_equal(p.experts[3].first, 6);
    assert_int_equal(p.experts[3].count, 2);
    plan_cell_t cell = {1, 2, 3};
    assert_int_equal(plan_rank(&p, cell), (1 * 4 + 2) * 4 + 3);
    assert_int_equal(plan_layout(&p, 1, 11, 1, 10, 8), SHOAL_ERR_INVALID);
    assert_int_equal(plan_layout(&p, 1, 1, 3, 10, 8), SHOAL_ERR_INVALID);
    assert_int_equal(plan_layout(&p, 0, 1, 1, 10, 8), SHOAL_ERR_INVALID);
    plan_fini(&p);
    plan_fini(&p); /* idempotent */
}

static void test_plan_dp_json_roundtrip(void **state)
{
    (void)state;
    plan_worker_t ws[3] = {{.worker_id = "w3", .endpoint = "tcp://a:1"},
                           {.worker_id = "w1", .endpoint = "tcp://b:2"},
                           {.worker_id = "w7", .endpoint = "tcp://c:3"}};
    plan_t p = {0}, q = {0};
    assert_int_equal(plan_build_dp(&p, "r1", 4, ws, 3, 4, 8), SHOAL_OK);
    p.start_step = 41;
    p.source = PLAN_SOURCE_PEER;
    p.source_rank = 2;
    assert_int_equal(p.dp, 3);
    assert_int_equal(p.pp, 1);
    assert_int_equal(p.ep, 1);
    assert_int_equal(p.n_peers, 3);
    assert_string_equal(p.peers[1].worker_id, "w1");
    assert_int_equal(p.peers[2].cell.replica, 2);
    assert_int_equal(p.peers[2].rank, 2);
    assert_non_null(plan_find_worker(&p, "w7"));
    assert_null(plan_find_worker(&p, "w2"));

    json_t *j = plan_to_json(&p);
    assert_non_null(j);
    assert_int_equal(plan_from_json(j, &q), SHOAL_OK);
    assert_string_equal(q.run_id, "r1");
    assert_int_equal(q.generation, 4);
    assert_int_equal(q.start_step, 41);
    assert_int_equal(q.source, PLAN_SOURCE_PEER);
    assert_int_equal(q.source_rank, 2);
    assert_int_equal(q.n_peers, 3);
    assert_string_equal(q.peers[2].endpoint, "tcp://c:3");
    assert_int_equal(q.stages[0].n_layers, 4);
    assert_int_equal(q.n_experts, 1);
    assert_int_equal(q.experts[0].count, 8);

    /* inconsistent documents are rejected, not trusted */
    json_t *bad = json_deep_copy(j);
    json_object_set_new(json_object_get(bad, "topology"), "dp", json_integer(5));
    assert_int_equal(plan_from_json(bad, &q), SHOAL_ERR_FORMAT);
    json_decref(bad);
    bad = json_deep_copy(j);
    json_object_set_new(json_array_get(json_object_get(bad, "peers"), 1), "rank", json_integer(0));
    assert_int_equal(plan_from_json(bad, &q), SHOAL_ERR_FORMAT);
    json_decref(bad);
    bad = json_deep_copy(j);
    json_object_set_new(bad, "source", json_string("magic"));
    assert_int_equal(plan_from_json(bad, &q), SHOAL_ERR_FORMAT);
    json_decref(bad);
    assert_int_equal(plan_from_json(json_object_get(j, "nothing"), &q), SHOAL_ERR_FORMAT);
    json_decref(j);

    assert_int_equal(plan_build_dp(&q, "r1", 1, ws, 0, 4, 8), SHOAL_ERR_INVALID);
    plan_fini(&p);
    plan_fini(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_and_file),
        cmocka_unit_test(test_plan_layout),
        cmocka_unit_test(test_plan_dp_json_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
