/* curve_shard_fetch.c: a test tool that dials a worker's CURVE shard server with the key pair of
 * a key directory and asks for one file of a shard dir, as a fetcher (ckpt_repl_fetch) would,
 * watching its own handshake with a socket monitor.
 * Usage: curve_shard_fetch KEYDIR SERVER_PUBLIC_KEY ENDPOINT SHARD_DIR FILE TIMEOUT_MS
 * Exit: 0 the file's bytes came ("served N bytes"), 3 the handshake was refused
 * ("handshake refused"), 4 an error reply, 1 nothing within TIMEOUT_MS, 2 usage or setup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "clock.h"
#include "shoal.pb-c.h"
#include "zsec.h"

#define S_MON "inproc://curve-shard-fetch-monitor"

/* The event of one monitor message (0 when it is not one). */
static int s_monitor_event(void *mon)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    int ev = 0;
    if (zmq_msg_recv(&m, mon, 0) >= 0 && zmq_msg_size(&m) >= 2) {
        const unsigned char *d = zmq_msg_data(&m);
        ev = d[0] | d[1] << 8;
    }
    while (zmq_msg_more(&m)) { /* the endpoint frame */
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, mon, 0) < 0)
            break;
    }
    zmq_msg_close(&m);
    return ev;
}

/* Prints the reply in msg; its exit code. */
static int s_reply(zmq_msg_t *msg)
{
    Shoal__ShardReply *r = shoal__shard_reply__unpack(NULL, zmq_msg_size(msg), zmq_msg_data(msg));
    if (!r) {
        printf("undecodable reply\n");
        return 4;
    }
    int rc = 0;
    if (r->code != SHOAL__ERROR_CODE__ERR_NONE) {
        printf("error reply: %s\n", r->message);
        rc = 4;
    } else {
        printf("served %zu bytes\n", r->data.len);
    }
    shoal__shard_reply__free_unpacked(r, NULL);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: curve_shard_fetch KEYDIR SERVER_PUBLIC_KEY ENDPOINT SHARD_DIR "
                        "FILE TIMEOUT_MS\n");
        return 2;
    }
    zsec_keys_t keys;
    if (zsec_keys_load(argv[1], &keys) != SHOAL_OK) {
        fprintf(stderr, "curve_shard_fetch: %s\n", shoal_errmsg());
        return 2;
    }
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_socket_monitor(s, S_MON,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) != 0 ||
        zmq_connect(mon, S_MON) != 0 || zsec_client(s, &keys, argv[2]) != SHOAL_OK ||
        zmq_connect(s, argv[3]) != 0) {
        fprintf(stderr, "curve_shard_fetch: setup: %s\n", zmq_strerror(zmq_errno()));
        return 2;
    }
    Shoal__ShardRequest q = SHOAL__SHARD_REQUEST__INIT;
    q.id = 1;
    q.path = argv[4];
    q.file = argv[5];
    uint8_t buf[8192];
    const size_t n = shoal__shard_request__get_packed_size(&q);
    if (n > sizeof buf) {
        fprintf(stderr, "curve_shard_fetch: request too long\n");
        return 2;
    }
    shoal__shard_request__pack(&q, buf);
    zmq_send(s, buf, n, 0); /* queued until the handshake is done (or dropped with it) */
    const int64_t deadline = clock_mono_ms() + atoi(argv[6]);
    int rc = 1;
    for (int64_t now = clock_mono_ms(); rc == 1 && now < deadline; now = clock_mono_ms()) {
        zmq_pollitem_t it[2] = {{s, 0, ZMQ_POLLIN, 0}, {mon, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, (long)(deadline - now)) <= 0)
            continue;
        if (it[1].revents & ZMQ_POLLIN) {
            const int ev = s_monitor_event(mon);
            if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
                printf("handshake refused\n");
                rc = 3;
            } else if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
                printf("handshake admitted\n");
            }
        }
        if (rc == 1 && (it[0].revents & ZMQ_POLLIN)) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s, 0) >= 0)
                rc = s_reply(&m);
            zmq_msg_close(&m);
        }
    }
    if (rc == 1)
        printf("no reply within %s ms\n", argv[6]);
    zmq_socket_monitor(s, NULL, 0);
    zmq_close(mon);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return rc;
}
