/* curve_send.c: a test tool that dials a CURVE data endpoint with the key pair of a key directory
 * and sends N short frames (shorter than a data-plane header: malformed), as a worker that holds
 * that key and sends garbage would. Usage: curve_send KEYDIR SERVER_PUBLIC_KEY ENDPOINT N */
#include <stdio.h>
#include <stdlib.h>

#include <zmq.h>

#include "zsec.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: curve_send KEYDIR SERVER_PUBLIC_KEY ENDPOINT N\n");
        return 2;
    }
    zsec_keys_t keys;
    if (zsec_keys_load(argv[1], &keys) != SHOAL_OK) {
        fprintf(stderr, "curve_send: %s\n", shoal_errmsg());
        return 1;
    }
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    if (zsec_client(s, &keys, argv[2]) != SHOAL_OK || zmq_connect(s, argv[3]) != 0) {
        fprintf(stderr, "curve_send: %s\n", shoal_errmsg());
        return 1;
    }
    int n = atoi(argv[4]);
    for (int i = 0; i < n; i++)
        zmq_send(s, "junk", 4, 0);
    int linger = 5000; /* until they left (the handshake first) */
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}
