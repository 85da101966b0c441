/* test_wire: round trip of every envelope kind through pack/decode and a real ROUTER/DEALER pair;
 * truncated, garbage, oversized, unknown-type and inconsistent input is rejected, never crashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "wire.h"

typedef struct {
    int calls;
    Shoal__MsgType type;
    char run_id[80], sender[80];
    uint64_t generation, seq;
    char text[256]; /* a body string picked per test */
    int64_t num;    /* a body number picked per test */
    size_t count;   /* a body repeated count */
} seen_t;

static void s_capture(const Shoal__Envelope *env, void *ctx)
{
    seen_t *s = ctx;
    s->calls++;
    s->type = env->type;
    snprintf(s->run_id, sizeof s->run_id, "%s", env->run_id);
    snprintf(s->sender, sizeof s->sender, "%s", env->sender);
    s->generation = env->generation;
    s->seq = env->seq;
    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_REG:
        snprintf(s->text, sizeof s->text, "%s|%s|%s", env->reg->name, env->reg->institution,
                 env->reg->data_endpoint);
        s->num = (int64_t)env->reg->memory_bytes;
        s->count = env->reg->n_devices;
        break;
    case SHOAL__ENVELOPE__BODY_ASSIGNMENT: {
        const Shoal__Plan *p = env->assignment->plan;
        snprintf(s->text, sizeof s->text, "%s|%s|%u.%u.%u|%u.%u.%u", p->peers[1]->data_endpoint,
                 p->checkpoint->path, p->topology->dp, p->topology->pp, p->topology->ep,
                 env->assignment->cell->replica, env->assignment->cell->stage,
                 env->assignment->cell->ep_rank);
        s->num = p->start_step;
        s->count = p->n_peers * 100 + p->n_stages * 10 + p->experts[1]->n_experts;
        break;
    }
    case SHOAL__ENVELOPE__BODY_CKPT_SHARD:
        snprintf(s->text, sizeof s->text, "%s|%s", env->ckpt_shard->files[0]->sha256,
                 env->ckpt_shard->holder);
        s->num = (int64_t)env->ckpt_shard->files[0]->size;
        s->count = env->ckpt_shard->n_files;
        break;
    case SHOAL__ENVELOPE__BODY_HEARTBEAT:
        s->num = env->heartbeat->step;
        break;
    case SHOAL__ENVELOPE__BODY_ACK:
        s->num = env->ack->committed_step;
        break;
    case SHOAL__ENVELOPE__BODY_CTL_REPLY:
        snprintf(s->text, sizeof s->text, "%s", env->ctl_reply->json);
        s->num = env->ctl_reply->ok;
        break;
    case SHOAL__ENVELOPE__BODY_CTL_WORKERS:
        s->num = -5;
        break;
    default:
        break;
    }
}

/* With SHOAL_WIRE_CORPUS=DIR every round-tripped envelope is also written to DIR: the seeds
 * of tests/fuzz/corpus/wire are made this way. */
static void s_save_seed(const uint8_t *buf, size_t len, int type)
{
    static int n;
    const char *dir = getenv("SHOAL_WIRE_CORPUS");
    if (!dir || !*dir)
        return;
    char path[512];
    snprintf(path, sizeof path, "%s/%s-%d.bin", dir, wire_type_name(type), n++);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

static void s_roundtrip(const Shoal__Envelope *env, seen_t *seen)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(wire_pack(env, &buf, &len), SHOAL_OK);
    s_save_seed(buf, len, (int)env->type);
    memset(seen, 0, sizeof *seen);
    assert_int_equal(wire_decode(buf, len, s_capture, seen), SHOAL_OK);
    assert_int_equal(seen->calls, 1);
    /* every strict prefix is rejected: the body is the last field and must be complete */
    for (size_t cut = 1; cut < len; cut++) {
        seen_t other = {0};
        assert_int_not_equal(wire_decode(buf, cut, s_capture, &other), SHOAL_OK);
        assert_int_equal(other.calls, 0);
    }
    free(buf);
}

static void test_roundtrip_register(void **state)
{
    (void)state;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_REGISTER, "", "", 0, 7);
    Shoal__Register reg = SHOAL__REGISTER__INIT;
    char *devices[] = {"cpu", "cuda:0 NVIDIA H200"};
    reg.name = "node-a";
    reg.host = "a.example.org";
    reg.devices = devices;
    reg.n_devices = 2;
    reg.memory_bytes = 1ull << 40;
    reg.institution = "uni-x";
    reg.version = "0.1.0";
    reg.data_endpoint = "tcp://10.0.0.5:7501";
    env.body_case = SHOAL__ENVELOPE__BODY_REG;
    env.reg = &reg;
    seen_t seen;
    s_roundtrip(&env, &seen);
    assert_int_equal(seen.type, SHOAL__MSG_TYPE__MSG_REGISTER);
    assert_int_equal(seen.seq, 7);
    assert_string_equal(seen.text, "node-a|uni-x|tcp://10.0.0.5:7501");
    assert_int_equal(seen.num, (int64_t)(1ull << 40));
    assert_int_equal(seen.count, 2);
}

static void test_roundtrip_assignment(void **state)
{
    (void)state;
    Shoal__Cell cells[2] = {SHOAL__CELL__INIT, SHOAL__CELL__INIT};
    cells[1].replica = 1;
    Shoal__Peer peers[2] = {SHOAL__PEER__INIT, SHOAL__PEER__INIT};
    Shoal__Peer *pp[2] = {&peers[0], &peers[1]};
    peers[0].worker_id = "w1";
    peers[0].data_endpoint = "tcp://h1:7501";
    peers[0].cell = &cells[0];
    peers[1].worker_id = "w2";
    peers[1].rank = 1;
    peers[1].data_endpoint = "tcp://h2:7501";
    peers[1].cell = &cells[1];
    Shoal__Topology topo = SHOAL__TOPOLOGY__INIT;
    topo.dp = 2;
    topo.pp = 1;
    topo.ep = 2;
    Shoal__StageLayers st = SHOAL__STAGE_LAYERS__INIT;
    Shoal__StageLayers *stp[1] = {&st};
    st.n_layers = 4;
    st.has_embedding = st.has_head = 1;
    uint32_t e0[] = {0, 1, 2, 3}, e1[] = {4, 5, 6, 7, 0};
    Shoal__ExpertShard ex[2] = {SHOAL__EXPERT_SHARD__INIT, SHOAL__EXPERT_SHARD__INIT};
    Shoal__ExpertShard *exp_[2] = {&ex[0], &ex[1]};
    ex[0].experts = e0;
    ex[0].n_experts = 4;
    ex[1].ep_rank = 1;
    ex[1].experts = e1;
    ex[1].n_experts = 5;
    ex[1].layer_case_case = SHOAL__EXPERT_SHARD__LAYER_CASE_LAYER;
    ex[1].layer = 2;
    Shoal__CheckpointRef ck = SHOAL__CHECKPOINT_REF__INIT;
    ck.step = 40;
    ck.path = "/ckpt/run1/step-40";
    Shoal__Plan plan = SHOAL__PLAN__INIT;
    plan.run_id = "r1";
    plan.generation = 3;
    plan.topology = &topo;
    plan.stages = stp;
    plan.n_stages = 1;
    plan.experts = exp_;
    plan.n_experts = 2;
    plan.peers = pp;
    plan.n_peers = 2;
    plan.start_step = 41;
    plan.source = SHOAL__STATE_SOURCE__STATE_SOURCE_CHECKPOINT;
    plan.checkpoint = &ck;
    Shoal__Cell mine = SHOAL__CELL__INIT;
    mine.replica = 1;
    mine.ep_rank = 1;
    Shoal__Assignment a = SHOAL__ASSIGNMENT__INIT;
    a.plan = &plan;
    a.run_name = "tiny";
    a.spec_yaml = "name: tiny\n";
    a.cell = &mine;
    a.rank = 1;
    a.lease = 56;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_ASSIGNMENT, "r1", "coordinator", 3, 1);
    env.body_case = SHOAL__ENVELOPE__BODY_ASSIGNMENT;
    env.assignment = &a;
    seen_t seen;
    s_roundtrip(&env, &seen);
    assert_string_equal(seen.run_id, "r1");
    assert_int_equal(seen.generation, 3);
    assert_string_equal(seen.text, "tcp://h2:7501|/ckpt/run1/step-40|2.1.2|1.0.1");
    assert_int_equal(seen.num, 41);
    assert_int_equal(seen.count, 215);
}

static void test_roundtrip_misc(void **state)
{
    (void)state;
    Shoal__FileDigest fd = SHOAL__FILE_DIGEST__INIT;
    Shoal__FileDigest *fdp[1] = {&fd};
    fd.name = "shard-0.safetensors";
    fd.size = 123456789;
    fd.sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    Shoal__CheckpointShardReport ck = SHOAL__CHECKPOINT_SHARD_REPORT__INIT;
    ck.step = 10;
    ck.path = "/c/step-10";
    ck.files = fdp;
    ck.n_files = 1;
    ck.holder = "w2";
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_CKPT_SHARD, "r1", "w2", 2, 99);
    env.body_case = SHOAL__ENVELOPE__BODY_CKPT_SHARD;
    env.ckpt_shard = &ck;
    seen_t seen;
    s_roundtrip(&env, &seen);
    assert_string_equal(seen.text,
                        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08|w2");
    assert_int_equal(seen.num, 123456789);

    Shoal__CtlReply rep = SHOAL__CTL_REPLY__INIT;
    rep.ok = 1;
    rep.json = "{\"runs\":[]}";
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_CTL_REPLY, "", "coordinator", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_CTL_REPLY;
    env.ctl_reply = &rep;
    s_roundtrip(&env, &seen);
    assert_string_equal(seen.text, "{\"runs\":[]}");
    assert_int_equal(seen.num, 1);

    /* an empty body still travels (the oneof case is on the wire) */
    Shoal__CtlWorkers w = SHOAL__CTL_WORKERS__INIT;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_CTL_WORKERS, "", "ctl", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_CTL_WORKERS;
    env.ctl_workers = &w;
    s_roundtrip(&env, &seen);
    assert_int_equal(seen.num, -5);
    assert_string_equal(wire_type_name(SHOAL__MSG_TYPE__MSG_CTL_WORKERS), "ctl_workers");
}

/* Packs without wire_check, as a hostile peer would. */
static uint8_t *s_raw_pack(const Shoal__Envelope *env, size_t *len)
{
    *len = shoal__envelope__get_packed_size(env);
    uint8_t *buf = malloc(*len + 1);
    shoal__envelope__pack(env, buf);
    return buf;
}

static void test_rejects_inconsistent(void **state)
{
    (void)state;
    seen_t seen = {0};
    Shoal__Heartbeat hb = SHOAL__HEARTBEAT__INIT;
    Shoal__StepReport sr = SHOAL__STEP_REPORT__INIT;
    Shoal__Envelope env;
    size_t len;
    uint8_t *buf;

    /* unknown type */
    wire_envelope_init(&env, (Shoal__MsgType)77, "r1", "w1", 1, 1);
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    buf = s_raw_pack(&env, &len);
    assert_int_equal(wire_decode(buf, len, s_capture, &seen), SHOAL_ERR_INVALID);
    free(buf);
    assert_int_not_equal(wire_pack(&env, &buf, &len), SHOAL_OK);

    /* type / body mismatch */
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, "r1", "w1", 1, 1);
    env.body_case = SHOAL__ENVELOPE__BODY_STEP_REPORT;
    env.step_report = &sr;
    buf = s_raw_pack(&env, &len);
    assert_int_equal(wire_decode(buf, len, s_capture, &seen), SHOAL_ERR_FORMAT);
    assert_non_null(strstr(shoal_errmsg(), "heartbeat"));
    free(buf);

    /* no body at all */
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, "r1", "w1", 1, 1);
    buf = s_raw_pack(&env, &len);
    assert_int_equal(wire_decode(buf, len, s_capture, &seen), SHOAL_ERR_FORMAT);
    free(buf);

    /* over-long id */
    char longid[200];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, longid, "w1", 1, 1);
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    buf = s_raw_pack(&env, &len);
    assert_int_equal(wire_decode(buf, len, s_capture, &seen), SHOAL_ERR_FORMAT);
    assert_non_null(strstr(shoal_errmsg(), "run_id"));
    free(buf);

    /* oversized: rejected before anything is read */
    size_t big = (size_t)WIRE_MAX_MSG_BYTES + 1;
    uint8_t *huge = calloc(1, big);
    assert_non_null(huge);
    assert_int_equal(wire_decode(huge, big, s_capture, &seen), SHOAL_ERR_FORMAT);
    assert_non_null(strstr(shoal_errmsg(), "limit"));
    free(huge);
    assert_int_equal(wire_decode("", 0, s_capture, &seen), SHOAL_ERR_FORMAT);
    assert_int_equal(seen.calls, 0);
}

/* StepReport.expert_loads: a round trip, and the bounds (layers, experts a layer, no NULL entry). */
static void test_expert_loads_bounds(void **state)
{
    (void)state;
    seen_t seen = {0};
    uint64_t counts[WIRE_MAX_EXPERTS + 1] = {0};
    counts[3] = 42;
    Shoal__ExpertLoad el = SHOAL__EXPERT_LOAD__INIT, *elp[WIRE_MAX_EXPERT_LAYERS + 1];
    el.layer = 7;
    el.counts = counts;
    el.n_counts = 8;
    for (size_t i = 0; i <= WIRE_MAX_EXPERT_LAYERS; i++)
        elp[i] = &el;
    Shoal__StepReport sr = SHOAL__STEP_REPORT__INIT;
    sr.step = 3;
    sr.reject_detail = "";
    sr.expert_loads = elp;
    sr.n_expert_loads = 2;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_STEP_REPORT, "r1", "w1", 1, 1);
    env.body_case = SHOAL__ENVELOPE__BODY_STEP_REPORT;
    env.step_report = &sr;
    size_t len;
    uint8_t *buf;
    assert_int_equal(wire_pack(&env, &buf, &len), SHOAL_OK);
    assert_int_equal(wire_decode(buf, len, s_capture, &seen), SHOAL_OK);
    free(buf);
    /* too many layers, too many experts in one: refused at decode */
    sr.n_expert_loads = WIRE_MAX_EXPERT_LAYERS + 1;
    buf = s_raw_pack(&env, &len);
    assert_int_equal(wire_decode(buf, len, s_capture, &seen), SHOAL_ERR_FORMAT);
    assert_non_null(strstr(shoal_errmsg(), "expert_loads"));
    free(buf);
    sr.n_expert_loads = 1;
    el.n_counts = WIRE_MAX_EXPERTS + 1;
    buf = s_raw_pack(&env, &len);
    assert_int_equal(wire_decode(buf, len, s_capture, &seen), SHOAL_ERR_FORMAT);
    assert_non_null(strstr(shoal_errmsg(), "expert_loads.counts"));
    free(buf);
    el.n_counts = WIRE_MAX_EXPERTS;
    buf = s_raw_pack(&env, &len);
    assert_int_equal(wire_decode(buf, len, s_capture, &seen), SHOAL_OK);
    free(buf);
}

static void test_garbage_never_crashes(void **state)
{
    (void)state;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    uint8_t buf[512];
    int accepted = 0;
    seen_t seen = {0};
    for (int it = 0; it < 20000; it++) {
        size_t len = 1 + (size_t)(it % 500);
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (uint8_t)x;
        }
        if (wire_decode(buf, len, s_capture, &seen) == SHOAL_OK)
            accepted++;
    }
    assert_int_equal(accepted, seen.calls);
    /* random bytes essentially never form a valid typed envelope */
    assert_true(accepted < 20);

    /* bit flips of a valid message: decode or reject, never crash */
    Shoal__Heartbeat hb = SHOAL__HEARTBEAT__INIT;
    hb.step = 12;
    hb.detail = "ok";
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, "r1", "w1", 4, 9);
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    uint8_t *p;
    size_t len;
    assert_int_equal(wire_pack(&env, &p, &len), SHOAL_OK);
    for (size_t i = 0; i < len; i++)
        for (int b = 0; b < 8; b++) {
            p[i] ^= (uint8_t)(1u << b);
            (void)wire_decode(p, len, s_capture, &seen);
            p[i] ^= (uint8_t)(1u << b);
        }
    free(p);
}

static void test_socket_roundtrip(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    assert_int_equal(wire_socket_limits(router), SHOAL_OK);
    assert_int_equal(wire_socket_limits(dealer), SHOAL_OK);
    assert_int_equal(zmq_bind(router, "inproc://wire-test"), 0);
    assert_int_equal(zmq_connect(dealer, "inproc://wire-test"), 0);
    int timeout = 2000;
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);

    Shoal__Heartbeat hb = SHOAL__HEARTBEAT__INIT;
    hb.step = 42;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, "r1", "w1", 2, 5);
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    assert_int_equal(wire_send(dealer, NULL, &env, 0), SHOAL_OK);

    wire_route_t route;
    seen_t seen = {0};
    assert_int_equal(wire_recv(router, 0, &route, s_capture, &seen), SHOAL_OK);
    assert_int_equal(route.n, 1);
    assert_int_equal(seen.num, 42);
    assert_string_equal(seen.sender, "w1");

    Shoal__Ack ack = SHOAL__ACK__INIT;
    ack.committed_step = 41;
    Shoal__Envelope rep;
    wire_envelope_init(&rep, SHOAL__MSG_TYPE__MSG_ACK, "r1", "coordinator", 2, 1);
    rep.body_case = SHOAL__ENVELOPE__BODY_ACK;
    rep.ack = &ack;
    assert_int_equal(wire_send(router, &route, &rep, ZMQ_DONTWAIT), SHOAL_OK);
    wire_route_t r2;
    memset(&seen, 0, sizeof seen);
    assert_int_equal(wire_recv(dealer, 0, &r2, s_capture, &seen), SHOAL_OK);
    assert_int_equal(r2.n, 0);
    assert_int_equal(seen.type, SHOAL__MSG_TYPE__MSG_ACK);
    assert_int_equal(seen.num, 41);

    /* garbage payload: error, but the route is kept so the caller can answer */
    zmq_send(dealer, "\xff\xff\xff", 3, 0);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(wire_recv(router, 0, &route, s_capture, &seen), SHOAL_ERR_FORMAT);
    assert_int_equal(route.n, 1);
    assert_int_equal(seen.calls, 0);

    /* too many frames: rejected whole, and the next message is read correctly */
    for (int i = 0; i < 6; i++)
        zmq_send(dealer, "x", 1, ZMQ_SNDMORE);
    zmq_send(dealer, "x", 1, 0);
    assert_int_equal(wire_recv(router, 0, &route, s_capture, &seen), SHOAL_ERR_FORMAT);
    assert_int_equal(wire_send(dealer, NULL, &env, 0), SHOAL_OK);
    assert_int_equal(wire_recv(router, 0, &route, s_capture, &seen), SHOAL_OK);
    assert_int_equal(seen.num, 42);

    /* nothing waiting */
    assert_int_equal(wire_recv(router, ZMQ_DONTWAIT, &route, s_capture, &seen), SHOAL_ERR_TIMEOUT);

    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_register),    cmocka_unit_test(test_roundtrip_assignment),
        cmocka_unit_test(test_roundtrip_misc),        cmocka_unit_test(test_rejects_inconsistent),
        cmocka_unit_test(test_garbage_never_crashes), cmocka_unit_test(test_socket_roundtrip),
        cmocka_unit_test(test_expert_loads_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
