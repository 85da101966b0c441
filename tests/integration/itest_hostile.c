/* itest_hostile.c: hostile peers for the integration tests.
 *   itest_hostile proxy FRONT BACK SECONDS  - relays one worker's session (ROUTER FRONT, the
 *       worker connects here) to the coordinator (DEALER to BACK) and, every 40 ms once the
 *       worker has an assignment, slips in a hostile message: random bytes, a truncated
 *       envelope, an unknown type, a RunControl STOP / Assignment / StepCommit of a wrong run,
 *       of an old generation. Prints "injected N" at the end.
 *   itest_hostile data ENDPOINT SECONDS     - pushes garbage at a worker's data endpoint:
 *       random bytes, bad headers, headers of old, current and future generations with
 *       out-of-range pieces.
 * A worker that obeys any of it stops training or hangs, and the run does not complete. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "shoal.pb-c.h"
#include "wire.h"

typedef struct {
    char run_id[80];
    uint64_t generation;
    char worker[80];
} s_seen_t;

static void s_on_env(const Shoal__Envelope *env, void *ctx)
{
    s_seen_t *seen = ctx;
    if (env->type == SHOAL__MSG_TYPE__MSG_ASSIGNMENT && env->assignment->plan) {
        snprintf(seen->run_id, sizeof seen->run_id, "%s", env->assignment->plan->run_id);
        seen->generation = env->assignment->plan->generation;
        const Shoal__Plan *p = env->assignment->plan;
        if (env->assignment->rank < p->n_peers)
            snprintf(seen->worker, sizeof seen->worker, "%s",
                     p->peers[env->assignment->rank]->worker_id);
    }
}

/* Sends an envelope packed without wire_check (so unknown types get through). */
static void s_send_raw(void *front, const zmq_msg_t *id, const Shoal__Envelope *env)
{
    size_t n = shoal__envelope__get_packed_size(env);
    uint8_t *buf = malloc(n + 1);
    shoal__envelope__pack(env, buf);
    zmq_send(front, zmq_msg_data((zmq_msg_t *)id), zmq_msg_size(id), ZMQ_SNDMORE);
    zmq_send(front, buf, n, 0);
    free(buf);
}

static void s_inject(void *front, const zmq_msg_t *id, const s_seen_t *seen, int kind,
                     const uint8_t *last, size_t last_len)
{
    Shoal__Envelope env;
    Shoal__RunControl rc = SHOAL__RUN_CONTROL__INIT;
    Shoal__StepCommit sc = SHOAL__STEP_COMMIT__INIT;
    Shoal__Assignment a = SHOAL__ASSIGNMENT__INIT;
    Shoal__Plan plan = SHOAL__PLAN__INIT;
    Shoal__Topology topo = SHOAL__TOPOLOGY__INIT;
    Shoal__Peer peer = SHOAL__PEER__INIT, *peers[1] = {&peer};
    Shoal__Cell cell = SHOAL__CELL__INIT;
    Shoal__StageLayers stage = SHOAL__STAGE_LAYERS__INIT, *stages[1] = {&stage};
    const uint64_t old_gen = seen->generation ? seen->generation - 1 : 0;
    switch (kind) {
    case 0: { /* random bytes */
        uint8_t junk[97];
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)rand();
        zmq_send(front, zmq_msg_data((zmq_msg_t *)id), zmq_msg_size(id), ZMQ_SNDMORE);
        zmq_send(front, junk, sizeof junk, 0);
        return;
    }
    case 1: /* a real message cut in half */
        if (last_len < 4)
            return;
        zmq_send(front, zmq_msg_data((zmq_msg_t *)id), zmq_msg_size(id), ZMQ_SNDMORE);
        zmq_send(front, last, last_len / 2, 0);
        return;
    case 2: /* unknown type */
        wire_envelope_init(&env, (Shoal__MsgType)77, seen->run_id, "coordinator",
                           seen->generation, 1);
        break;
    case 3: /* stop of another run */
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_RUN_CONTROL, "r999", "coordinator",
                           seen->generation, 2);
        rc.command = SHOAL__RUN_COMMAND__RUN_CMD_STOP;
        rc.reason = "hostile: wrong run";
        env.body_case = SHOAL__ENVELOPE__BODY_RUN_CONTROL;
        env.run_control = &rc;
        break;
    case 4: /* stop of an old generation */
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_RUN_CONTROL, seen->run_id, "coordinator",
                           old_gen, 3);
        rc.command = SHOAL__RUN_COMMAND__RUN_CMD_STOP;
        rc.reason = "hostile: old generation";
        env.body_case = SHOAL__ENVELOPE__BODY_RUN_CONTROL;
        env.run_control = &rc;
        break;
    case 5: /* a pause of another run */
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_RUN_CONTROL, "r999", "coordinator",
                           seen->generation + 5, 4);
        rc.command = SHOAL__RUN_COMMAND__RUN_CMD_PAUSE;
        rc.reason = "hostile: wrong run";
        env.body_case = SHOAL__ENVELOPE__BODY_RUN_CONTROL;
        env.run_control = &rc;
        break;
    case 6: /* step commit with a huge lease, old generation */
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_STEP_COMMIT, seen->run_id, "coordinator",
                           old_gen, 5);
        sc.step = 1000000;
        sc.lease = 1000000;
        env.body_case = SHOAL__ENVELOPE__BODY_STEP_COMMIT;
        env.step_commit = &sc;
        break;
    case 7: /* assignment of another run (a 1-rank plan: would take the worker away) */
    case 8: /* assignment of the current run, old generation */
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_ASSIGNMENT, kind == 7 ? "r999" : seen->run_id,
                           "coordinator", kind == 7 ? 9 : old_gen, 6);
        topo.dp = topo.pp = topo.ep = 1;
        peer.worker_id = (char *)seen->worker;
        peer.rank = 0;
        peer.cell = &cell;
        peer.data_endpoint = "tcp://127.0.0.1:1";
        plan.run_id = kind == 7 ? "r999" : (char *)seen->run_id;
        plan.generation = kind == 7 ? 9 : old_gen;
        plan.topology = &topo;
        plan.n_peers = 1;
        plan.peers = peers;
        plan.start_step = 1;
        stage.n_layers = 4; /* well formed in every part a worker checks before the run */
        stage.has_embedding = stage.has_head = 1;
        plan.n_stages = 1;
        plan.stages = stages;
        a.plan = &plan;
        a.run_name = "hostile";
        a.spec_yaml = "name: hostile\n";
        a.rank = 0;
        a.cell = &cell;
        a.lease = 1000000;
        env.body_case = SHOAL__ENVELOPE__BODY_ASSIGNMENT;
        env.assignment = &a;
        break;
    default:
        return;
    }
    s_send_raw(front, id, &env);
}

static int s_proxy(const char *front_ep, const char *back_ep, int seconds)
{
    void *ctx = zmq_ctx_new();
    void *front = zmq_socket(ctx, ZMQ_ROUTER), *back = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(front, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(back, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(front, front_ep) != 0 || zmq_connect(back, back_ep) != 0) {
        fprintf(stderr, "itest_hostile: bind %s / connect %s: %s\n", front_ep, back_ep,
                zmq_strerror(zmq_errno()));
        return 1;
    }
    zmq_msg_t id;
    zmq_msg_init(&id);
    int have_id = 0, injected = 0, kind = 0;
    uint8_t *last = NULL;
    size_t last_len = 0;
    s_seen_t seen = {0};
    const int64_t end = clock_mono_ms() + (int64_t)seconds * 1000;
    int64_t next_inject = 0;
    while (clock_mono_ms() < end) {
        zmq_pollitem_t items[2] = {{front, 0, ZMQ_POLLIN, 0}, {back, 0, ZMQ_POLLIN, 0}};
        zmq_poll(items, 2, 10);
        if (items[0].revents & ZMQ_POLLIN) { /* worker -> coordinator: [id][payload] */
            zmq_msg_t a, b;
            zmq_msg_init(&a);
            zmq_msg_init(&b);
            zmq_msg_recv(&a, front, 0);
            if (zmq_msg_more(&a) && zmq_msg_recv(&b, front, 0) >= 0) {
                zmq_msg_close(&id);
                zmq_msg_init(&id);
                zmq_msg_copy(&id, &a);
                have_id = 1;
                zmq_msg_send(&b, back, 0);
            }
            zmq_msg_close(&a);
            zmq_msg_close(&b);
        }
        if (items[1].revents & ZMQ_POLLIN) { /* coordinator -> worker: [payload] */
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, back, 0) >= 0 && have_id) {
                free(last);
                last_len = zmq_msg_size(&m);
                last = malloc(last_len + 1);
                memcpy(last, zmq_msg_data(&m), last_len);
                (void)wire_decode(last, last_len, s_on_env, &seen);
                zmq_send(front, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE);
                zmq_msg_send(&m, front, 0);
            }
            zmq_msg_close(&m);
        }
        if (have_id && seen.run_id[0] && clock_mono_ms() >= next_inject) {
            s_inject(front, &id, &seen, kind, last, last_len);
            kind = (kind + 1) % 9;
            injected++;
            next_inject = clock_mono_ms() + 40;
        }
    }
    printf("injected %d\n", injected);
    free(last);
    zmq_msg_close(&id);
    zmq_close(front);
    zmq_close(back);
    zmq_ctx_term(ctx);
    return 0;
}

/* The 72-byte header of comm_zmq.c, written field by field (little-endian host). */
static void s_header(uint8_t *h, uint32_t magic, uint8_t kind, uint32_t src, uint32_t nranks,
                     uint64_t gen, uint64_t step, uint64_t seq, uint64_t total, uint64_t off,
                     uint32_t count)
{
    memset(h, 0, 72);
    memcpy(h, &magic, 4);
    h[4] = 1;
    h[5] = kind;
    memcpy(h + 8, &src, 4);
    memcpy(h + 12, &nranks, 4);
    memcpy(h + 16, &gen, 8);
    memcpy(h + 24, &step, 8);
    memcpy(h + 32, &seq, 8);
    memcpy(h + 40, &total, 8);
    memcpy(h + 48, &off, 8);
    memcpy(h + 56, &count, 4);
}

static int s_data(const char *ep, int seconds)
{
    void *ctx = zmq_ctx_new();
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 0;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(push, ep) != 0) {
        fprintf(stderr, "itest_hostile: connect %s: %s\n", ep, zmq_strerror(zmq_errno()));
        return 1;
    }
    const int64_t end = clock_mono_ms() + (int64_t)seconds * 1000;
    int sent = 0, kind = 0;
    uint8_t buf[72 + 64];
    while (clock_mono_ms() < end) {
        size_t n = sizeof buf;
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (uint8_t)rand();
        switch (kind) {
        case 0: n = 13; break;                                              /* short junk */
        case 1: s_header(buf, 0xdeadbeef, 1, 0, 3, 1, 1, 1, 10, 0, 16); break; /* bad magic */
        case 2: s_header(buf, 0x4d434853u, 1, 7, 3, 1, 1, 1, 1u << 30, 0, 16); break; /* rank 7 */
        case 3: s_header(buf, 0x4d434853u, 2, 0, 3, 0, 1, 1, 10, 9, 16); break; /* old gen, overrun */
        case 4: s_header(buf, 0x4d434853u, 1, 1, 3, 1, 3, 2, 1u << 20, 1u << 21, 16); break;
        case 5: s_header(buf, 0x4d434853u, 9, 0, 3, 1, 1, 1, 10, 0, 16); break; /* bad kind */
        case 6: s_header(buf, 0x4d434853u, 3, 0, 3, 1000, 1, 1, 64, 0, 999); break; /* count > payload */
        default: break;
        }
        zmq_send(push, buf, n, ZMQ_DONTWAIT);
        sent++;
        kind = (kind + 1) % 8;
        clock_sleep_ms(5);
    }
    printf("sent %d\n", sent);
    zmq_close(push);
    zmq_ctx_term(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    srand(7);
    if (argc == 5 && strcmp(argv[1], "proxy") == 0)
        return s_proxy(argv[2], argv[3], atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "data") == 0)
        return s_data(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: itest_hostile proxy FRONT BACK SECONDS | data ENDPOINT SECONDS\n");
    return 2;
}
