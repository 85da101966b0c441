/* wire.h: one shoal Envelope (proto/shoal.proto) per ZeroMQ message: build, check, pack, send,
 * and receive/unpack/validate with size bounds. Shared by the coordinator, workers and shoalctl.
 *
 * Framing: a message is [route frames...] [payload]. The payload is the last frame; every frame
 * before it is routing (the peer identity a ROUTER prepends, an empty REQ delimiter): the
 * receiver keeps them in a wire_route_t to address its reply.
 *
 * Ownership: received envelopes are *borrowed*. wire_recv()/wire_decode() unpack, validate,
 * call the handler with the envelope and free it before they return (every __unpack paired with
 * __free_unpacked in the same function). A handler copies what it keeps into its own plain C
 * structs; protobuf types never outlive the handler call. */
#ifndef SHOAL_WIRE_H
#define SHOAL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "shoal.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WIRE_MAX_MSG_BYTES (64u << 20) /* payload bound: larger messages are rejected */
#define WIRE_MAX_ROUTE_FRAMES 4
#define WIRE_MAX_ROUTE_BYTES 255     /* ZeroMQ identities are at most 255 bytes */
#define WIRE_MAX_ID_LEN 64           /* run ids, worker ids, names */
#define WIRE_MAX_TEXT_LEN 4096       /* reasons, messages, paths, endpoints */
#define WIRE_MAX_SPEC_LEN (1u << 20) /* run spec YAML */
#define WIRE_MAX_REPEATED 65536      /* elements of any repeated field */
#define WIRE_MAX_COMM_ID 256
#define WIRE_MAX_BAD_SENDERS 16      /* Heartbeat.bad_frames entries */
#define WIRE_MAX_EXPERT_LAYERS 1024 /* StepReport.expert_loads entries */
#define WIRE_MAX_EXPERTS 4096       /* counts of one ExpertLoad */

typedef struct {
    int n;
    size_t len[WIRE_MAX_ROUTE_FRAMES];
    unsigned char data[WIRE_MAX_ROUTE_FRAMES][WIRE_MAX_ROUTE_BYTES];
    int fd; /* the connection's file descriptor the message came on (-1: unknown, e.g. inproc),
             * to match socket-monitor events with peers */
    char user[128]; /* the ZAP User-Id of that connection (common/zsec.h); "" without CURVE */
} wire_route_t;

/* Called with a decoded, validated, borrowed envelope (freed right after the call). */
typedef void (*wire_handler_fn)(const Shoal__Envelope *env, void *ctx);

/* Initialises `env` (SHOAL__ENVELOPE__INIT) with the header fields. Strings are borrowed (not
 * copied): they must outlive the envelope's use. The caller sets body_case and the body. */
void wire_envelope_init(Shoal__Envelope *env, Shoal__MsgType type, const char *run_id,
                        const char *sender, uint64_t generation, uint64_t seq);

/* Static lower-case name of a type ("heartbeat", "ctl_status"); "unknown" when not a type. */
const char *wire_type_name(int type);

/* The body case a type must carry; SHOAL__ENVELOPE__BODY__NOT_SET when the type is unknown. */
Shoal__Envelope__BodyCase wire_body_for_type(int type);

/* Checks one envelope: known type, body case matching the type, every string and repeated
 * field within its bound. SHOAL_ERR_INVALID for an unknown type, SHOAL_ERR_FORMAT otherwise;
 * the message names the field. */
shoal_err_t wire_check(const Shoal__Envelope *env);

/* Checks and serialises `env` into a new buffer (*buf, *len) that the caller frees. */
shoal_err_t wire_pack(const Shoal__Envelope *env, uint8_t **buf, size_t *len);

/* Checks, packs and sends `env` on `sock` after the route frames (route may be NULL).
 * `flags` is 0 or ZMQ_DONTWAIT. SHOAL_ERR_TIMEOUT when the send would block (EAGAIN),
 * SHOAL_ERR_IO for other socket errors, the wire_check() error for an invalid envelope. */
shoal_err_t wire_send(void *sock, const wire_route_t *route, const Shoal__Envelope *env, int flags);

/* wire_send() of a message wire_pack() made earlier (held back until it may go out). Takes
 * ownership of *buf_p (freed or handed to ZeroMQ whatever happens) and nulls it. */
shoal_err_t wire_send_packed(void *sock, const wire_route_t *route, uint8_t **buf_p, size_t len,
                             int flags);

/* Unpacks `len` bytes, validates, and calls fn(env, ctx); frees the envelope before returning.
 * SHOAL_ERR_FORMAT for empty, oversized (> WIRE_MAX_MSG_BYTES), undecodable or inconsistent
 * input, SHOAL_ERR_INVALID for an unknown type; fn is not called then. Never crashes on
 * hostile input. */
shoal_err_t wire_decode(const void *buf, size_t len, wire_handler_fn fn, void *ctx);

/* Receives one whole multi-part message from `sock` (flags 0 or ZMQ_DONTWAIT), keeps its route
 * frames in *route and decodes the last frame as with wire_decode(). The route is filled even
 * when the payload is bad, so the caller can answer with an Error. Returns SHOAL_ERR_TIMEOUT
 * when nothing is waiting (ZMQ_DONTWAIT), SHOAL_ERR_IO on a socket error (route->n = 0),
 * SHOAL_ERR_FORMAT for too many or too large route frames, and wire_decode()'s result. */
shoal_err_t wire_recv(void *sock, int flags, wire_route_t *route, wire_handler_fn fn, void *ctx);

/* Whether two routes are the same (frames and bytes; fd and user are not compared). */
int wire_route_same(const wire_route_t *a, const wire_route_t *b);

/* A key naming a route's connection and, for a relayed worker, its slot: each frame as a length
 * byte and its bytes, cut at cap. Returns its length (0: no route). */
size_t wire_route_key(const wire_route_t *route, unsigned char *key, size_t cap);

/* Host relays (worker/relay.h): a relayed message carries the worker's slot on the relay as one
 * more route frame, 4 bytes big-endian. */
#define WIRE_RELAY_SLOT_LEN 4
void wire_relay_slot_put(unsigned char out[WIRE_RELAY_SLOT_LEN], uint32_t slot);
/* 1 and *slot when frame is a slot frame, else 0. */
int wire_relay_slot_get(const void *frame, size_t len, uint32_t *slot);

/* Reads one event of a socket monitor (the PAIR connected to zmq_socket_monitor's endpoint):
 * its ZMQ_EVENT_* and the descriptor it is about. 0 when none is waiting. */
int wire_monitor_event(void *mon, uint16_t *event, uint32_t *fd);

/* Sets the receive bounds on a socket: ZMQ_MAXMSGSIZE (peers sending larger frames are
 * disconnected by libzmq before anything is allocated) and ZMQ_LINGER 0. */
shoal_err_t wire_socket_limits(void *sock);

/* The group of a CommId (an NCCL unique id relayed by the coordinator): "<generation>/<group
 * tag>" in decimal, e.g. "3/17"; at most WIRE_COMM_GROUP_MAX - 1 characters. */
#define WIRE_COMM_GROUP_MAX 32
void wire_comm_group_format(char *buf, size_t cap, uint64_t generation, uint32_t tag);
/* Parses it strictly (decimal, no spaces, tag < 2^32). SHOAL_ERR_FORMAT quoting the text. */
shoal_err_t wire_comm_group_parse(const char *group, uint64_t *generation, uint32_t *tag);

#ifdef __cplusplus
}
#endif
#endif
