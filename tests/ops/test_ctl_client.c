/* test_ctl_client.c: shoalctl's client library and shared CLI mechanics: bounded requests to an
 * absent endpoint, replies (good, refused, hostile) from a ROUTER served by a thread, the option
 * parser's exit codes, the status/workers JSON normalisation and the table printer.
 * Run: build/bin/test_ctl_client */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "clock.h"
#include "shoalctl.h"
#include "wire.h"

/* ---- a ROUTER answering in a chosen way, on its own thread ---- */
typedef enum {
    ANSWER_OK,
    ANSWER_REFUSE,
    ANSWER_ERROR_ENV,
    ANSWER_GARBAGE,
    ANSWER_WRONG_TYPE
} answer_t;

typedef struct {
    void *ctx, *sock;
    char endpoint[128];
    answer_t answer;
    int n_requests;
    int last_type;
    char last_text[256];  /* the request's run/worker/origin */
    char last_sender[64]; /* cmocka asserts only on the main thread */
    pthread_t thread;
} server_t;

static void s_on_request(const Shoal__Envelope *env, void *ctx)
{
    server_t *s = ctx;
    s->last_type = env->type;
    const char *text = "";
    if (env->body_case == SHOAL__ENVELOPE__BODY_CTL_RUN)
        text = env->ctl_run->run;
    else if (env->body_case == SHOAL__ENVELOPE__BODY_CTL_WORKER)
        text = env->ctl_worker->worker;
    else if (env->body_case == SHOAL__ENVELOPE__BODY_CTL_SUBMIT)
        text = env->ctl_submit->origin;
    else if (env->body_case == SHOAL__ENVELOPE__BODY_CTL_STATUS)
        text = env->ctl_status->run;
    else if (env->body_case == SHOAL__ENVELOPE__BODY_CTL_EVENTS)
        text = env->ctl_events->run;
    else if (env->body_case == SHOAL__ENVELOPE__BODY_CTL_PLAN)
        text = env->ctl_plan->dry_run ? "dry" : "live";
    snprintf(s->last_text, sizeof(s->last_text), "%s", text);
    snprintf(s->last_sender, sizeof(s->last_sender), "%s", env->sender);
}

static void *s_serve_one(void *arg)
{
    server_t *s = arg;
    wire_route_t route;
    zmq_pollitem_t it = {.socket = s->sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, 3000) != 1)
        return NULL;
    if (wire_recv(s->sock, 0, &route, s_on_request, s) != SHOAL_OK)
        return NULL;
    s->n_requests++;
    Shoal__Envelope env;
    if (s->answer == ANSWER_GARBAGE) {
        for (int i = 0; i < route.n; i++)
            zmq_send(s->sock, route.data[i], route.len[i], ZMQ_SNDMORE);
        zmq_send(s->sock, "\xff\xff\xff\x01garbage", 11, 0);
    } else if (s->answer == ANSWER_ERROR_ENV) {
        Shoal__Error e = SHOAL__ERROR__INIT;
        e.code = SHOAL__ERROR_CODE__ERR_BAD_MESSAGE;
        e.message = (char *)"bad message";
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_ERROR, "", "coordinator", 0, 1);
        env.body_case = SHOAL__ENVELOPE__BODY_ERROR;
        env.error = &e;
        wire_send(s->sock, &route, &env, 0);
    } else if (s->answer == ANSWER_WRONG_TYPE) {
        Shoal__Ack a = SHOAL__ACK__INIT;
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_ACK, "", "coordinator", 0, 1);
        env.body_case = SHOAL__ENVELOPE__BODY_ACK;
        env.ack = &a;
        wire_send(s->sock, &route, &env, 0);
    } else {
        Shoal__CtlReply r = SHOAL__CTL_REPLY__INIT;
        r.ok = s->answer == ANSWER_OK;
        r.code = r.ok ? 0 : SHOAL__ERROR_CODE__ERR_NOT_FOUND;
        r.message = (char *)(r.ok ? "fine" : "no run with id or name 'x'");
        r.json = (char *)(r.ok ? "{\"runs\":[]}" : "");
        /* The coordinator numbers its own replies: the client must not expect an echo. */
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_CTL_REPLY, "", "coordinator", 0, 777);
        env.body_case = SHOAL__ENVELOPE__BODY_CTL_REPLY;
        env.ctl_reply = &r;
        wire_send(s->sock, &route, &env, 0);
    }
    return NULL;
}

static int s_server_setup(void **state)
{
    server_t *s = calloc(1, sizeof(*s));
    s->ctx = zmq_ctx_new();
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    wire_socket_limits(s->sock);
    snprintf(s->endpoint, sizeof(s->endpoint), "ipc:///tmp/shoal-tcc-%d.sock", (int)getpid());
    assert_int_equal(zmq_bind(s->sock, s->endpoint), 0);
    *state = s;
    return 0;
}

static int s_server_teardown(void **state)
{
    server_t *s = *state;
    zmq_close(s->sock);
    zmq_ctx_term(s->ctx);
    unlink(s->endpoint + 6);
    free(s);
    return 0;
}

static void s_serve_async(server_t *s, answer_t a)
{
    s->answer = a;
    assert_int_equal(pthread_create(&s->thread, NULL, s_serve_one, s), 0);
}

/* ---- tests ---- */

static void test_absent_endpoint_times_out(void **state)
{
    (void)state;
    char ep[128];
    snprintf(ep, sizeof(ep), "ipc:///tmp/shoal-tcc-none-%d.sock", (int)getpid());
    ctl_client_t *c = ctl_client_new(ep, 300);
    assert_non_null(c);
    ctl_reply_t r = {0};
    int64_t t0 = clock_mono_ms();
    assert_int_equal(ctl_client_status(c, "", &r), SHOAL_ERR_TIMEOUT);
    int64_t dt = clock_mono_ms() - t0;
    assert_true(dt >= 250 && dt < 2000);
    assert_non_null(strstr(shoal_errmsg(), ep));
    assert_non_null(strstr(shoal_errmsg(), "unreachable"));
    assert_null(r.json);
    /* The client is usable again after a timeout (a fresh socket, same bound). */
    t0 = clock_mono_ms();
    assert_int_equal(ctl_client_workers(c, &r), SHOAL_ERR_TIMEOUT);
    assert_true(clock_mono_ms() - t0 < 2000);
    ctl_client_destroy(&c);
    ctl_client_destroy(&c); /* idempotent */
    assert_null(c);
}

static void test_bad_endpoint(void **state)
{
    (void)state;
    ctl_client_t *c = ctl_client_new("nonsense://x", 300);
    ctl_reply_t r = {0};
    assert_int_equal(ctl_client_status(c, "", &r), SHOAL_ERR_IO);
    assert_non_null(strstr(shoal_errmsg(), "nonsense://x"));
    ctl_client_destroy(&c);
    assert_null(ctl_client_new(NULL, 100));
    assert_null(ctl_client_new("ipc:///tmp/x", 0));
}

static void test_reply_ok_and_refused(void **state)
{
    server_t *s = *state;
    ctl_client_t *c = ctl_client_new(s->endpoint, 2000);
    ctl_reply_t r = {0};

    s_serve_async(s, ANSWER_OK);
    assert_int_equal(ctl_client_status(c, "r1", &r), SHOAL_OK);
    pthread_join(s->thread, NULL);
    assert_int_equal(s->last_type, SHOAL__MSG_TYPE__MSG_CTL_STATUS);
    assert_string_equal(s->last_text, "r1");
    assert_string_equal(s->last_sender, "ctl");
    assert_true(r.ok);
    assert_string_equal(r.message, "fine");
    assert_string_equal(r.json, "{\"runs\":[]}");
    ctl_reply_fini(&r);

    s_serve_async(s, ANSWER_REFUSE);
    assert_int_equal(ctl_client_drain(c, "w9", &r), SHOAL_OK);
    pthread_join(s->thread, NULL);
    assert_int_equal(s->last_type, SHOAL__MSG_TYPE__MSG_CTL_DRAIN);
    assert_string_equal(s->last_text, "w9");
    assert_false(r.ok);
    assert_int_equal(r.code, SHOAL__ERROR_CODE__ERR_NOT_FOUND);
    assert_string_equal(r.json, "");
    ctl_reply_fini(&r);

    /* Each verb sends its own type. */
    struct {
        int type;
        shoal_err_t (*fn)(ctl_client_t *, const char *, ctl_reply_t *);
    } verbs[] = {{SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN, ctl_client_undrain},
                 {SHOAL__MSG_TYPE__MSG_CTL_PAUSE, ctl_client_pause},
                 {SHOAL__MSG_TYPE__MSG_CTL_RESUME, ctl_client_resume},
                 {SHOAL__MSG_TYPE__MSG_CTL_CANCEL, ctl_client_cancel},
                 {SHOAL__MSG_TYPE__MSG_CTL_VERIFY, ctl_client_verify}};
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        s_serve_async(s, ANSWER_OK);
        assert_int_equal(verbs[i].fn(c, "x1", &r), SHOAL_OK);
        pthread_join(s->thread, NULL);
        assert_int_equal(s->last_type, verbs[i].type);
        assert_string_equal(s->last_text, "x1");
        ctl_reply_fini(&r);
    }
    s_serve_async(s, ANSWER_OK);
    assert_int_equal(ctl_client_plan(c, "r1", true, &r), SHOAL_OK);
    pthread_join(s->thread, NULL);
    assert_int_equal(s->last_type, SHOAL__MSG_TYPE__MSG_CTL_PLAN);
    assert_string_equal(s->last_text, "dry");
    ctl_reply_fini(&r);
    s_serve_async(s, ANSWER_OK);
    assert_int_equal(ctl_client_submit(c, "name: x\n", "x.yaml", &r), SHOAL_OK);
    pthread_join(s->thread, NULL);
    assert_string_equal(s->last_text, "x.yaml");
    ctl_reply_fini(&r);
    s_serve_async(s, ANSWER_OK);
    assert_int_equal(ctl_client_events(c, "r1", 5, 10, &r), SHOAL_OK);
    pthread_join(s->thread, NULL);
    assert_int_equal(s->last_type, SHOAL__MSG_TYPE__MSG_CTL_EVENTS);
    ctl_reply_fini(&r);
    ctl_client_destroy(&c);
}

static void test_reply_hostile(void **state)
{
    server_t *s = *state;
    ctl_client_t *c = ctl_client_new(s->endpoint, 2000);
    ctl_reply_t r = {0};

    s_serve_async(s, ANSWER_GARBAGE);
    assert_int_equal(ctl_client_workers(c, &r), SHOAL_ERR_FORMAT);
    pthread_join(s->thread, NULL);
    assert_null(r.message);

    s_serve_async(s, ANSWER_WRONG_TYPE);
    assert_int_equal(ctl_client_workers(c, &r), SHOAL_ERR_FORMAT);
    pthread_join(s->thread, NULL);
    assert_non_null(strstr(shoal_errmsg(), "ack"));

    /* An Error envelope (the coordinator could not read the request) is a refusal. */
    s_serve_async(s, ANSWER_ERROR_ENV);
    assert_int_equal(ctl_client_workers(c, &r), SHOAL_OK);
    pthread_join(s->thread, NULL);
    assert_false(r.ok);
    assert_int_equal(r.code, SHOAL__ERROR_CODE__ERR_BAD_MESSAGE);
    assert_string_equal(r.message, "bad message");
    ctl_reply_fini(&r);

    /* After all that the client still works. */
    s_serve_async(s, ANSWER_OK);
    assert_int_equal(ctl_client_workers(c, &r), SHOAL_OK);
    pthread_join(s->thread, NULL);
    assert_true(r.ok);
    ctl_reply_fini(&r);

    /* Out-of-bounds arguments never reach the wire. */
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(ctl_client_drain(c, longname, &r), SHOAL_ERR_INVALID);
    assert_int_equal(ctl_client_pause(c, NULL, &r), SHOAL_ERR_INVALID);
    ctl_client_destroy(&c);
}

static void test_parse_args(void **state)
{
    (void)state;
    ctl_opts_t o = {.endpoint = "ipc:///x", .timeout_ms = 5000, .verb = "t"};
    const char *pos[2];
    int n;
    const char *val = NULL;
    bool flag = false;
    const ctl_optdef_t defs[] = {
        {"since", true, &val, NULL}, {"follow", false, NULL, &flag}, {NULL, false, NULL, NULL}};
    char *a1[] = {"t", "r1",       "--json", "--control=tcp://h:1", "--timeout", "0.25", "--since",
                  "7", "--follow", NULL};
    assert_int_equal(ctl_parse_args(&o, 9, a1, defs, "", pos, 2, &n), CTL_EXIT_OK);
    assert_int_equal(n, 1);
    assert_string_equal(pos[0], "r1");
    assert_true(o.json);
    assert_string_equal(o.endpoint, "tcp://h:1");
    assert_int_equal(o.timeout_ms, 250);
    assert_string_equal(val, "7");
    assert_true(flag);

    char *bad[][3] = {{"t", "--nope", NULL},       {"t", "--timeout", NULL},
                      {"t", "--timeout=-1", NULL}, {"t", "--timeout=abc", NULL},
                      {"t", "--follow=1", NULL},   {"t", "--control=", NULL}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ctl_parse_args(&o, 2, bad[i], defs, "", pos, 2, &n), CTL_EXIT_USAGE);
    char *many[] = {"t", "a", "b", "c", NULL};
    assert_int_equal(ctl_parse_args(&o, 4, many, defs, "", pos, 2, &n), CTL_EXIT_USAGE);
    char *dashdash[] = {"t", "--", "--json", NULL};
    o.json = false;
    assert_int_equal(ctl_parse_args(&o, 3, dashdash, defs, "", pos, 2, &n), CTL_EXIT_OK);
    assert_int_equal(n, 1);
    assert_string_equal(pos[0], "--json");
    assert_false(o.json);
}

static void s_assert_keys(const json_t *obj, const char *const *keys, size_t n)
{
    assert_int_equal(json_object_size(obj), n);
    for (size_t i = 0; i < n; i++)
        assert_non_null(json_object_get(obj, keys[i]));
}

static void test_status_normalise(void **state)
{
    (void)state;
    json_t *doc = json_loads(
        "{\"runs\":[{\"id\":\"r1\",\"name\":\"a\",\"state\":\"running\",\"step\":3,"
        "\"total_steps\":10,\"loss\":2.5,\"generation\":2,\"checkpoint_step\":2,\"lease\":7,"
        "\"reason\":\"\"},{\"id\":\"r2\",\"name\":\"b\",\"state\":\"pending\",\"step\":0,"
        "\"total_steps\":4,\"loss\":0.0,\"generation\":0,\"checkpoint_step\":0,"
        "\"reason\":\"unplaced: no active worker to place\"}],"
        "\"active_workers\":2}",
        0, NULL);
    assert_non_null(doc);
    json_t *st = status_doc_normalise(doc);
    assert_non_null(st);
    static const char *const keys[] = {"id",          "name", "state",      "step",
                                       "total_steps", "loss", "generation", "checkpoint_step",
                                       "reason"};
    assert_int_equal(json_object_size(st), 1);
    const json_t *runs = json_object_get(st, "runs");
    assert_int_equal(json_array_size(runs), 2);
    const json_t *r1 = json_array_get(runs, 0), *r2 = json_array_get(runs, 1);
    s_assert_keys(r1, keys, 9);
    s_assert_keys(r2, keys, 9);
    assert_string_equal(ctl_json_str(r1, "reason", "?"), "");
    assert_string_equal(ctl_json_str(r2, "reason", ""), "unplaced: no active worker to place");
    assert_true(json_is_real(json_object_get(r1, "loss")));
    assert_true(json_is_null(json_object_get(r2, "loss"))); /* no step yet: no loss */
    assert_int_equal(ctl_json_int(r1, "step", -1), 3);
    assert_int_equal(ctl_json_int(r1, "total_steps", -1), 10);
    assert_string_equal(ctl_json_str(r2, "state", ""), "pending");
    json_decref(st);
    json_decref(doc);

    /* Missing and mistyped fields still give every documented key. */
    doc = json_loads("{\"runs\":[{\"id\":\"r3\",\"step\":\"x\"}]}", 0, NULL);
    st = status_doc_normalise(doc);
    s_assert_keys(json_array_get(json_object_get(st, "runs"), 0), keys, 9);
    json_decref(st);
    json_decref(doc);
    doc = json_object();
    st = status_doc_normalise(doc);
    assert_int_equal(json_array_size(json_object_get(st, "runs")), 0);
    json_decref(st);
    json_decref(doc);
}

static void test_table(void **state)
{
    (void)state;
    static const char *const head[] = {"ID", "NAME", "STATE"};
    ctl_table_t *t = ctl_table_new(3, head);
    const char *r1[] = {"w1", "a-long-name", "active"};
    const char *r2[] = {"w10", NULL, "dead"};
    assert_true(ctl_table_add(t, r1));
    assert_true(ctl_table_add(t, r2));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ctl_table_print(t, f);
    fclose(f);
    assert_string_equal(buf, "ID   NAME         STATE\n"
                             "w1   a-long-name  active\n"
                             "w10  -            dead\n");
    free(buf);
    ctl_table_destroy(&t);
    ctl_table_destroy(&t);
    char d[32];
    ctl_format_duration(2.25, d, sizeof(d));
    assert_string_equal(d, "2.2 s");
    ctl_format_duration(125, d, sizeof(d));
    assert_string_equal(d, "2 min 05 s");
    ctl_format_duration(7325, d, sizeof(d));
    assert_string_equal(d, "2 h 02 min");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent_endpoint_times_out),
        cmocka_unit_test(test_bad_endpoint),
        cmocka_unit_test_setup_teardown(test_reply_ok_and_refused, s_server_setup,
                                        s_server_teardown),
        cmocka_unit_test_setup_teardown(test_reply_hostile, s_server_setup, s_server_teardown),
        cmocka_unit_test(test_parse_args),
        cmocka_unit_test(test_status_normalise),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
