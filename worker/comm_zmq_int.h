/* comm_zmq_int.h: what the files of the ZeroMQ comm backend share (never included outside
 * worker/comm_zmq*.c): the wire header, the listener with its connections and stash, the comm, and
 * the operation engine that drives every operation through one table of callbacks per kind.
 *
 * comm_zmq.c        listener (tcp + same-host ipc), shared connections, stash, comm lifetime
 * comm_zmq_engine.c frames (build, parse, drop), routing by (generation, group, tag), progress loop
 * comm_zmq_coll.c   all-reduce, reduce-scatter, all-gather, broadcast, barrier
 * comm_zmq_p2p.c    send/recv and all-to-all(v)
 * comm_zmq_shm.c    the same-host shared-memory path of large all-reduce, reduce-scatter,
 *                   all-gather and broadcast (segments: comm_shm.c) */
#ifndef SHOAL_COMM_ZMQ_INT_H
#define SHOAL_COMM_ZMQ_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "comm.h"
#include "comm_shm.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "comm_zmq writes its wire header in host order and assumes a little-endian host"
#endif

#define WIRE_MAGIC 0x4d434853u /* "SHCM" */
#define WIRE_VERSION 3 /* 2: the group tag in the last word, point to point, all-to-all;
                          * 3: SHM_IN and SHM_OUT carry the sender's segment nonce */
/* wire_hdr_t.flags of reduction frames (AR_RS, AR_AG, SHM_IN, SHM_OUT): the element type and
 * the fold; 0 is an f32 sum. Every other kind carries 0. */
#define WIRE_FLAG_I64 1u /* elements are int64 (8 bytes) */
#define WIRE_FLAG_MAX 2u /* fold by maximum instead of sum (int64 only) */
/* Bytes of held messages (next op, later point-to-point messages, comms not created yet) a
 * listener keeps before dropping more. */
#define STASH_MAX_BYTES ((size_t)1 << 30)
/* Longest a healthy comm's last messages may linger after comm_destroy. */
#define FLUSH_MAX_MS 1000
/* Most (generation, group) pairs created in one generation on a listener. */
#define GROUPS_USED_MAX 256

/* Numbered once, never reused. */
enum {
    KIND_AR_RS = 1, /* reduction: a rank's contribution to a piece, to the piece's owner */
    KIND_AR_AG,     /* reduction: a reduced piece, from its owner to every rank */
    KIND_BC_DATA,   /* broadcast: a piece from the root */
    KIND_BC_ACK,    /* broadcast: pieces received so far, to the root */
    KIND_BARRIER,   /* barrier token */
    KIND_BC_DONE,   /* broadcast: every rank has everything (root to every rank) */
    KIND_P2P,       /* point to point: a piece of message `seq` of its (src, dst) pair */
    KIND_A2A,       /* all-to-all: a piece of the sender's block for the receiver */
    KIND_RS_ACK,    /* reduce-scatter: the owner has every rank's contributions */
    KIND_SHM_IN,    /* shm: a contribution to a piece is in the sender's segment, to its owner;
                     * payload: the segment's nonce */
    KIND_SHM_OUT,   /* shm: the owner's piece is final (reduced or copied in), to every rank;
                     * payload: the segment's nonce */
    KIND_SHM_ACK,   /* shm: the sender has read all of the receiver's pieces (no payload) */
    KIND_SHM_DONE,  /* shm broadcast: every rank has everything (root to every rank) */
    KIND_GIVE_UP,   /* the sender gave the comm up (comm_give_up): every op on it fails at once
                     * (no payload; routed by generation and group whatever the op) */
    KIND__END
};

typedef struct {
    uint32_t magic;
    uint8_t version;
    uint8_t kind;
    uint16_t flags;  /* WIRE_FLAG_* on reduction frames, else 0 */
    uint32_t src;    /* sender's rank in the group */
    uint32_t nranks; /* sender's group size */
    uint64_t generation;
    uint64_t step;
    uint64_t seq;    /* op sequence number in the comm, from 1; P2P: message number of the pair */
    uint64_t total;  /* floats (reduction), bytes (broadcast, P2P message, A2A block); 0 barrier */
    uint64_t offset; /* first float/byte of the piece; BC_ACK: pieces received */
    uint32_t count;  /* floats/bytes in the piece */
    uint32_t root;   /* broadcast root, else 0 */
    uint32_t chunk;  /* sender's chunk_bytes */
    uint32_t group;  /* group tag of the comm */
} wire_hdr_t;
_Static_assert(sizeof(wire_hdr_t) == 72, "wire header must be 72 bytes without padding");
#define HDR_SIZE sizeof(wire_hdr_t)

/* A received message kept for later: the parsed header and the frame. */
typedef struct {
    wire_hdr_t h;
    zmq_msg_t msg;
} held_t;

/* One PUSH connection to a peer listener, shared by every live comm that has that peer. */
typedef struct {
    char *endpoint; /* as the comms name it (the key) */
    char *target;   /* what was connected: the peer's same-host ipc socket, or endpoint */
    char key[ZSEC_KEY_LEN + 1]; /* CURVE: the peer's public key ("" plaintext); part of the key */
    void *push;
    int refs;
} conn_t;

typedef struct comm_op op_t;

struct comm_listener {
    void *ctx;
    void *pull;
    char endpoint[256];
    char host[160];     /* advertised host of a tcp listener, "" otherwise */
    char ipc_dir[96];   /* "" with no_ipc */
    char ipc_path[128]; /* our bound same-host socket, "" if none */
    bool no_shm;        /* comm_listener_opts_t.no_shm or SHOAL_COMM_NO_SHM */
    char shm_id[COMM_SHM_NAME_MAX / 2]; /* our identity in shm segment names, "" without ipc */
    comm_t *comms[COMM_MAX_GROUPS]; /* live comms, all of generation `generation` */
    int ncomms;
    bool used; /* a comm existed: generations must not go back */
    uint64_t generation;
    uint32_t groups_used[GROUPS_USED_MAX]; /* groups created in `generation` */
    int ngroups_used;
    conn_t **conns;
    int nconns, cap_conns;
    held_t **stash; /* held messages, arrival order */
    size_t nstash, cap_stash, stash_bytes;
    /* CURVE (opts.keys): our pair, the ZAP handler of ctx (the plans' keys, User-Id = the key) and the
     * plan's key of each peer endpoint */
    bool curve;
    zsec_keys_t keys;
    zsec_zap_t *zap;
    char **key_eps, **key_vals;
    int nkeys, cap_keys;
    /* the keys of the last plan (comm_listener_peer_keys), admitted with the next one's */
    zsec_rule_t *admit_prev;
    int n_admit_prev;
    /* bad frames per sending key since the last comm_listener_take_bad_senders */
    pthread_mutex_t bad_lock;
    comm_bad_sender_t bad[COMM_BAD_SENDERS_MAX];
    int nbad;
};

typedef struct {
    conn_t *conn;
    char key[ZSEC_KEY_LEN + 1]; /* CURVE: the key its frames must arrive with ("" plaintext) */
    zmq_msg_t out; /* built but not yet accepted by zmq (EAGAIN) */
    bool has_out;
    uint64_t p2p_sent, p2p_recvd; /* point-to-point messages to / from this peer so far */
    /* per operation */
    unsigned heard;   /* messages accepted from this peer */
    size_t rs_next;   /* pieces sent to it (reduction contributions, broadcast, A2A) */
    size_t ag_next;   /* reduction: index into done[] of the next reduced piece to send it */
    size_t ag_got;    /* reduction: pieces of its range received */
    size_t rs_got;    /* reduction: its contributions received; A2A, P2P: pieces received */
    size_t got_bytes; /* A2A, P2P: bytes received */
    size_t acked;     /* bcast root: pieces it acknowledged */
    size_t ack_sent;  /* bcast receiver (peer = root): pieces acknowledged so far */
    bool sent_token, got_token; /* barrier token; broadcast DONE; RS_ACK; empty AG range */
    /* shm path */
    comm_shm_seg_t seg; /* its segment, mapped read-only once needed */
    unsigned seg_k;     /* which of its segments seg is (comm_t.shm_k numbering) */
    /* the nonce its last SHM_IN / SHM_OUT announced: its segment must carry it */
    unsigned char seg_nonce[COMM_SHM_NONCE_BYTES];
} peer_t;

struct comm {
    comm_listener_t *l;
    int rank, nranks;
    uint32_t group;
    uint64_t generation;
    int timeout_ms;
    size_t chunk;
    peer_t *peers;
    zmq_pollitem_t *items;
    uint64_t seq;       /* of the last started collective */
    shoal_err_t broken; /* first failure; SHOAL_OK while healthy */
    atomic_int aborted;
    int given_up_by; /* 1 + the rank whose KIND_GIVE_UP aborted this comm; 0: none */
    bool gave_up;    /* comm_give_up queued frames: comm_destroy lets them leave */
    int wake[2]; /* comm_abort writes here to end a zmq_poll at once */
    /* Same-host shared-memory path (comm_zmq_shm.c): on when every peer is reached over ipc and
     * shm is not switched off. Every rank's segment k holds shm_bytes; all ranks grow theirs at
     * the same ops (the first one larger than shm_bytes), so k and the size need no message. */
    bool shm;
    unsigned shm_k;       /* segments grown so far; 0: none yet */
    size_t shm_bytes;     /* size of segment shm_k */
    comm_shm_seg_t seg;   /* our segment, created once an op writes into it */
    unsigned seg_k;       /* which of ours seg is */
    char shm_id[COMM_SHM_NAME_MAX / 2]; /* the listener's, kept for after its destruction */
};

/* What an operation kind does; the engine calls these (j is never this rank). */
typedef struct {
    /* Builds the next message owed to peer j into c->peers[j].out; false when there is none now
     * (or *rc is set on failure). */
    bool (*next_out)(comm_t *c, op_t *op, int j, shoal_err_t *rc);
    /* Applies a message of this op from h->src. On true it has consumed m (closed or moved it);
     * on false m is untouched, *why says why it is dropped, and op->fatal may be set. */
    bool (*accept)(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m, const char **why);
    bool (*waiting_on)(const comm_t *c, const op_t *op, int j); /* a message from j is owed */
    bool (*sent_all)(const comm_t *c, const op_t *op, int j);   /* nothing more to send to j */
    bool (*finished)(const comm_t *c, const op_t *op);          /* local work done */
} op_vt_t;

/* State of the operation in progress. */
struct comm_op {
    const op_vt_t *vt;
    const char *name;
    bool p2p; /* a receive: tagged by the pair's message number, not by an op number */
    uint64_t step, seq, total;
    int root;
    unsigned char *buf;
    size_t unit; /* chunk in elements: floats or int64 (reduction) or bytes */
    uint16_t wire_flags; /* reduction: WIRE_FLAG_* of its frames (element type and fold) */
    /* reduction */
    bool rs, ag;            /* phases: all-reduce has both, the contributions credited by AG */
    size_t own_lo, own_hi, own_np;
    int *next_rank;         /* per owned piece: next rank to fold */
    zmq_msg_t **held;       /* own_np x nranks out-of-order contributions */
    unsigned char *scratch; /* our own contribution to the owned range (rank >= 2) */
    size_t *done;           /* owned pieces finished, in completion order */
    size_t ndone;
    unsigned char *ag_have; /* per piece of all ranges (ag_base indexing) */
    size_t *ag_base;
    /* broadcast */
    size_t np;
    unsigned char *bc_have;
    size_t bc_got;
    int bc_acked_all; /* root: peers that acknowledged every piece */
    size_t window;    /* pieces in flight per peer (all-reduce, broadcast) */
    /* all-to-all */
    const unsigned char *sbuf;
    const size_t *sbytes, *soffs, *rbytes, *roffs;
    /* shm path: contributions announced per owned piece and rank (own_np x nranks) */
    unsigned char *in_have;
    size_t esz;  /* bytes per element: 4 (reduction) or 1 (broadcast) */
    size_t slot; /* reduction: elements per ring slot of a segment (window: slots per ring) */
    /* receive */
    int src;
    /* a hard error found while accepting (a size mismatch): ends the op */
    shoal_err_t fatal;
    /* diagnostics */
    unsigned dropped;
    char why[200];
};

/* A frame's variable fields; the engine adds the comm's tags. */
typedef struct {
    int kind;
    uint64_t seq, total, offset;
    uint32_t count;
    const void *payload;
    size_t bytes;
} frame_t;

/* --- comm_zmq.c --- */
#define COMM_ZAP_DOMAIN "shoal-data"
/* Counts a frame dropped for arriving with another key than its rank's (comm_dropped_frames). */
unsigned long long comm_zmq_count_forged(void); /* the new count */
/* Records a dropped malformed or forged frame `m` against its connection's CURVE key (for the
 * coordinator: comm_listener_take_bad_senders). No-op without a key. */
void comm_zmq_note_bad(comm_listener_t *l, zmq_msg_t *m, const char *why);
/* Takes `msg` into the listener's stash (or drops it when the stash is full). */
void comm_zmq_stash_put(comm_listener_t *l, const wire_hdr_t *h, zmq_msg_t *msg);
/* The live comm of (generation, group) on l, or NULL. */
comm_t *comm_zmq_find(const comm_listener_t *l, uint64_t generation, uint32_t group);
/* Whether (generation, group) had a comm on l that is gone now. */
bool comm_zmq_group_gone(const comm_listener_t *l, uint64_t generation, uint32_t group);

/* Our listener identity in shm segment names, from a peer connection's ipc target (or our own
 * ipc path): its basename, which only one live listener on this host holds. False when the
 * target is not a same-host ipc socket. */
bool comm_zmq_shm_id(const char *ipc_target, char *out, size_t cap);

/* --- comm_zmq_shm.c --- */
/* Whether an op of `bytes` (elements of esz bytes, spread over every rank) takes the shm path. */
bool comm_zmq_shm_fits(const comm_t *c, size_t bytes, size_t esz);
/* The shm path of all-reduce (rs && ag), reduce-scatter (rs) and all-gather (ag), of floats or,
 * with WIRE_FLAG_I64 (| WIRE_FLAG_MAX), int64 sums (maxima). */
shoal_err_t comm_zmq_shm_reduction(comm_t *c, void *buf, size_t n, uint64_t step,
                                   const char *name, bool rs, bool ag, uint16_t wire_flags);
shoal_err_t comm_zmq_shm_broadcast(comm_t *c, void *buf, size_t bytes, int root, uint64_t step);
/* Rejects a frame that no case of an op's accept took: *why = otherwise, or, for a data frame of
 * the other path (shm vs sockets: the ranks disagree), fails the op (op->fatal, naming both
 * ranks' paths). Returns false (an op_vt_t.accept result). */
bool comm_zmq_reject(comm_t *c, op_t *op, const wire_hdr_t *h, const char **why,
                     const char *otherwise);
/* Unmaps the comm's segments (comm_destroy). */
void comm_zmq_shm_fini(comm_t *c);

/* --- comm_zmq_engine.c --- */
size_t comm_zmq_div_up(size_t a, size_t b);
/* An op_vt_t.finished for kinds with no local work. */
bool comm_zmq_true(const comm_t *c, const op_t *op);
/* Builds frame f of op (step, root) on comm c into m. */
shoal_err_t comm_zmq_build(const comm_t *c, const op_t *op, const frame_t *f, zmq_msg_t *m);
/* Common entry checks: NULL, aborted, broken, listener gone. */
shoal_err_t comm_zmq_usable(comm_t *c, const char *what);
/* Runs op to completion on c (sequence number, per-peer reset, progress, failure bookkeeping). */
shoal_err_t comm_zmq_run(comm_t *c, op_t *op);
/* Sends one frame to peer j now (point to point): waits for room only if zmq refuses it. */
shoal_err_t comm_zmq_send_now(comm_t *c, int j, zmq_msg_t *m, const char *what);

#endif
