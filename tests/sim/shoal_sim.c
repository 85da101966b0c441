/* shoal-sim: many simulated workers in one process, each a DEALER of its own speaking the real
 * protocol (proto/shoal.proto, as worker/session.c does) to a real coordinator: they register
 * with a host, an institution and GPU memory (80 GB; --memory-gb 0: undeclared), heartbeat,
 * "train" (report each step up to their lease), report checkpoint shards, and die, join and drain on a seeded schedule. No
 * training, no data plane: what the coordinator sees of N workers, at a fraction of the cost.
 *
 *   shoal-sim --connect EP --workers N [--first K] [--hosts-of 8] [--institutions 4]
 *             [--hb-ms 100] [--step-ms 200] [--ckpt-every 0] [--seconds 30] [--seed 1]
 *             [--churn-ms 0] [--churn-offset-ms 0] [--events FILE] [--quiet-after-ms 0]
 *             [--memory-gb 80] [--ramp-ms 0]
 *             [--experts N --first-moe K [--zipf 1.0] [--expert-tokens 8192]]
 *             [--relay 0|1 [--hold-ms 100]]
 *
 * Worker i (global index K + i) is named sim-<K+i> on host h<(K+i)/hosts-of>, institution
 * inst-<host % institutions>. With --churn-ms P every P ms (from --churn-offset-ms) one event
 * drawn from the seed: a death (the socket closed at once, as a SIGKILL closes it), a join (a
 * new worker registers) or a drain (Leave with drain_first: the worker finishes at the
 * boundary, then leaves). --quiet-after-ms stops the churn that long before the end so the
 * coordinator's answers to the last events can be seen. --ramp-ms spreads the first
 * registrations over that long (a cluster comes up gradually); an unanswered Register is sent
 * again after 2 s, doubling up to 30 s. Each event is a line of FILE:
 * "<kind> <name> <worker id> <wall ms>". With --experts N, replica 0 / ep rank 0 of each stage
 * reports with each step the loads of the stage's MoE layers (from --first-moe): Zipf-skewed,
 * the expert at rank k of layer l being sim_expert_at_rank(k, l, N). Each second a progress
 * line goes to stdout, "sim: at <CLOCK_MONOTONIC ms> acks N sent N" (a bench counts the answers
 * of a window with it); at the end the summary lines "sim: sent N acks N registered N deaths N
 * joins N drains N" and "sim: plans full N (B bytes) deltas N (B bytes) deltas_refused N".
 * Assignments are held as a worker holds them (plan_delta.h): a plan delta applies on the peer
 * table of the generation held, checked against its digest, or the full plan is fetched (each
 * refusal is a line on stderr: worker, the delta's generation and base, what it holds, why).
 * With --relay 1 the workers of a host share one connection, as behind `shoal-worker relay`
 * (worker/relay.h): their messages go up in the relay's batches (common/relay_hold.h, heartbeats
 * held up to --hold-ms), the coordinator's batches of answers are handed to each worker by its
 * slot, and a death is the relay's RelayClosed on the worker's route.
 * Exit 0, or 1 on a setup error. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <zmq.h>

#include "clock.h"
#include "plan_delta.h"
#include "relay_hold.h"
#include "wire.h"

#define S_GETASSIGN_MIN_MS 300
#define S_REGISTER_RETRY_MS 2000 /* first retry of an unanswered Register, doubling ... */
#define S_REGISTER_RETRY_MAX_MS 30000 /* ... up to this (a slow coordinator is not flooded) */

typedef enum { S_OFF = 0, S_REGISTERING, S_REGISTERED, S_LEAVING } s_state_t;

/* A plan's peer table held by simulated workers, shared by the workers of this process that
 * hold the same one (2,048 peers do not fit 10,000 times): the base a plan delta applies to. */
typedef struct {
    plan_peers_t t;
    int refs;
} s_table_t;
#define S_TABLES_KEPT 4 /* recent tables a worker's delta may turn out to rebuild */

/* --relay: one connection per simulated host, as `shoal-worker relay` carries a host's workers
 * (worker/relay.h): each worker's messages go up with its slot frame through the relay's own
 * queue (relay_hold.h), and a death is the relay's RelayClosed on the worker's route. */
typedef struct {
    void *sock; /* NULL: not opened yet */
    int zfd, ready;
    int64_t timer_at; /* due time of its flush timer entry (0: none) */
    relay_hold_t hold;
    int *by_slot; /* slot -> worker index (-1: closed) */
    uint32_t n_slots, cap_slots;
} s_link_t;

typedef struct {
    void *sock; /* its DEALER; with --relay its host's link's (NULL: closed) */
    s_link_t *link; /* --relay: its host's connection (NULL: a connection of its own) */
    uint32_t slot;
    s_state_t state;
    char name[32], id[WIRE_MAX_ID_LEN + 1], host[24], inst[24], endpoint[64];
    char run[WIRE_MAX_ID_LEN + 1];
    uint64_t gen, seq;
    uint32_t rank, replica, stage, ep_rank;
    uint32_t first_layer, n_layers; /* its stage's layers (the Assignment's plan) */
    int64_t step, lease;
    int paused, drain_asked;
    int64_t next_hb_ms, next_step_ms, reg_sent_ms, reg_retry_ms, getassign_ms;
    /* the event loop: the due time of its live timer entry (0: none), whether it is in the
     * ready list, its socket's ZMQ_FD in the epoll set */
    int64_t timer_at;
    int ready, zfd;
    s_table_t *held; /* the peer table of (run, gen) (NULL: none) */
} s_worker_t;

/* A timer: worker `w` needs a tick at `at` (stale when the worker's timer_at moved since). */
typedef struct {
    int64_t at;
    int w;
} s_timer_t;

typedef struct {
    const char *connect;
    int n_workers, first, hosts_of, institutions, hb_ms, step_ms, ckpt_every, seconds;
    unsigned seed;
    int churn_ms, churn_offset_ms, quiet_after_ms, memory_gb, ramp_ms;
    int relay, hold_ms; /* --relay: a connection per host; --hold-ms: its heartbeats' wait */
    const char *events_path;
    /* hot experts: routed experts per MoE layer (0: no loads reported), the first MoE layer,
     * the Zipf exponent of the skew and the routed tokens x top-k of a layer's step */
    int experts, first_moe, expert_tokens;
    double zipf;
} s_opts_t;

typedef struct {
    s_opts_t o;
    void *zctx;
    s_worker_t *w;
    int n, cap, next_index;
    uint64_t rng;
    FILE *events;
    unsigned long long sent, acks, registered, deaths, joins, drains;
    unsigned long long full_plans, deltas, deltas_refused, delta_bytes, full_bytes;
    s_table_t *recent[S_TABLES_KEPT]; /* newest first, one reference each */
    s_worker_t *cur; /* the worker whose socket is being read */
    /* the event loop: one epoll set over every socket's ZMQ_FD (edge-triggered), a min-heap
     * of timers and the list of sockets to look at: a wake-up costs O(ready), not O(workers) */
    int epfd;
    s_timer_t *heap;
    int n_heap, cap_heap;
    int *ready;
    int n_ready;
    /* --relay: a link per host of this process's workers (host - first_host) */
    s_link_t *links;
    int n_links, first_host;
    int *link_ready;
    int n_link_ready;
} s_sim_t;

#define S_LINK_BIT 0x80000000u /* epoll data of a link: S_LINK_BIT | link index */

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static uint32_t s_rand(s_sim_t *s, uint32_t n)
{
    s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
    return n ? (uint32_t)((s->rng >> 33) % n) : 0;
}

static void s_event(s_sim_t *s, const char *kind, const s_worker_t *w)
{
    if (!s->events)
        return;
    fprintf(s->events, "%s %s %s %lld\n", kind, w->name, w->id[0] ? w->id : "-",
            (long long)clock_wall_ms());
    fflush(s->events);
}

/* The socket may hold input whose ZMQ_FD edge is gone (a send or a ZMQ_EVENTS read
 * processes the socket's commands, which resets the descriptor): it is looked at again. */
static void s_mark_link_ready(s_sim_t *s, s_link_t *l)
{
    if (l->ready || !l->sock)
        return;
    l->ready = 1;
    s->link_ready[s->n_link_ready++] = (int)(l - s->links);
}

static void s_heap_push_link(s_sim_t *s, s_link_t *l);

static void s_mark_ready(s_sim_t *s, s_worker_t *w)
{
    if (w->link) {
        s_mark_link_ready(s, w->link);
        return;
    }
    if (w->ready || !w->sock)
        return;
    w->ready = 1;
    s->ready[s->n_ready++] = (int)(w - s->w);
}

/* A relayed message: through the link's queue, as the relay sends it. */
static void s_send_relayed(s_sim_t *s, s_worker_t *w, const Shoal__Envelope *env)
{
    s_link_t *l = w->link;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (wire_pack(env, &buf, &len) != SHOAL_OK)
        return;
    const unsigned long long before = l->hold.sent + l->hold.dropped;
    if (relay_hold_send(&l->hold, l->sock, w->slot, buf, len, clock_mono_ms()) == SHOAL_OK)
        s->sent++;
    free(buf);
    if (l->hold.sent + l->hold.dropped != before)
        s_mark_link_ready(s, l); /* it sent: its descriptor's edge may be gone */
    if (l->hold.n > 0)
        s_heap_push_link(s, l);
}

static void s_send(s_sim_t *s, s_worker_t *w, Shoal__Envelope *env)
{
    if (w->link) {
        s_send_relayed(s, w, env);
        return;
    }
    if (wire_send(w->sock, NULL, env, ZMQ_DONTWAIT) == SHOAL_OK)
        s->sent++;
    s_mark_ready(s, w);
}

static void s_env(s_worker_t *w, Shoal__Envelope *env, Shoal__MsgType type)
{
    wire_envelope_init(env, type, w->run, w->id, w->gen, ++w->seq);
}

static void s_table_unref(s_table_t **tp)
{
    s_table_t *t = *tp;
    if (t && --t->refs == 0) {
        plan_peers_clear(&t->t);
        free(t);
    }
    *tp = NULL;
}

/* Keeps t (one more reference) among the recent tables, dropping the oldest. */
static s_table_t *s_table_keep(s_sim_t *s, s_table_t *t)
{
    s_table_unref(&s->recent[S_TABLES_KEPT - 1]);
    memmove(&s->recent[1], &s->recent[0], (S_TABLES_KEPT - 1) * sizeof s->recent[0]);
    s->recent[0] = t;
    t->refs++;
    return t;
}

/* w no longer holds a plan. */
static void s_drop_plan(s_worker_t *w)
{
    w->run[0] = 0;
    w->gen = 0;
    s_table_unref(&w->held);
}

/* The table of full assignment `a`: a recent one with the same rows, else a new copy. */
static s_table_t *s_table_of_full(s_sim_t *s, const Shoal__Assignment *a)
{
    const Shoal__Plan *p = a->plan;
    uint8_t digest[PLAN_DIGEST_LEN];
    plan_peers_digest(p->peers, p->n_peers, digest);
    for (int i = 0; i < S_TABLES_KEPT; i++) {
        s_table_t *t = s->recent[i];
        if (t && t->t.generation == p->generation && strcmp(t->t.run_id, p->run_id) == 0 &&
            memcmp(t->t.digest, digest, sizeof digest) == 0) {
            t->refs++;
            return t;
        }
    }
    s_table_t *t = calloc(1, sizeof *t);
    if (!t || plan_peers_copy(&t->t, p->run_id, p->generation, p->peers, p->n_peers) != SHOAL_OK) {
        free(t);
        return NULL;
    }
    t->refs = 1;
    return s_table_keep(s, t);
}

/* The first 4 bytes of digest d (len bytes) in hex, into out ("-" when shorter). */
static const char *s_digest_head(const uint8_t *d, size_t len, char out[9])
{
    if (len < 4)
        return "-";
    snprintf(out, 9, "%02x%02x%02x%02x", d[0], d[1], d[2], d[3]);
    return out;
}

/* A refused delta: one line on stderr with the generations and digests involved (each costs a
 * full pull, and may be a bug). */
static void s_refusal(const s_worker_t *w, const Shoal__Envelope *env, const char *why)
{
    const Shoal__Assignment *a = env->assignment;
    const plan_peers_t *h = w->held ? &w->held->t : NULL;
    char dd[9], hd[9];
    fprintf(stderr,
            "shoal-sim: %s (%s) refused delta seq %llu: generation %llu on %llu (%u peers, %zu "
            "listed, digest %s); holds run %s generation %llu (table %llu, %u peers, digest "
            "%s): %s\n",
            w->name, w->id, (unsigned long long)env->seq,
            (unsigned long long)a->plan->generation, (unsigned long long)a->base_generation,
            a->n_peers, a->plan->n_peers,
            s_digest_head(a->peers_digest.data, a->peers_digest.len, dd),
            w->run[0] ? w->run : "-", (unsigned long long)w->gen,
            h ? (unsigned long long)h->generation : 0ull, h ? h->n : 0u,
            h ? s_digest_head(h->digest, PLAN_DIGEST_LEN, hd) : "-", why);
}

/* The table delta `a` rebuilds on w's: a recent one it rebuilds exactly, else a new one
 * (NULL when refused: not w's base, or the digest differs). */
static s_table_t *s_table_of_delta(s_sim_t *s, s_worker_t *w, const Shoal__Envelope *env)
{
    const Shoal__Assignment *a = env->assignment;
    if (!w->held) {
        s_refusal(w, env, "no plan held");
        return NULL;
    }
    for (int i = 0; i < S_TABLES_KEPT; i++)
        if (s->recent[i] && plan_peers_delta_is(&w->held->t, env->run_id, a, &s->recent[i]->t)) {
            s->recent[i]->refs++;
            return s->recent[i];
        }
    s_table_t *t = calloc(1, sizeof *t);
    const char *why = NULL;
    if (!t || plan_peers_apply(&w->held->t, env->run_id, a, &t->t, &why) != SHOAL_OK) {
        s_refusal(w, env, why ? why : "out of memory");
        free(t);
        return NULL;
    }
    t->refs = 1;
    return s_table_keep(s, t);
}

static void s_send_register(s_sim_t *s, s_worker_t *w)
{
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_REGISTER, "", w->id, 0, ++w->seq);
    Shoal__Register reg = SHOAL__REGISTER__INIT;
    char *devices[1] = {"cuda:0 NVIDIA H100 80GB HBM3"};
    reg.name = w->name;
    reg.host = w->host;
    reg.n_devices = 1;
    reg.devices = devices;
    reg.memory_bytes = (uint64_t)s->o.memory_gb << 30;
    reg.institution = w->inst;
    reg.version = "sim";
    reg.data_endpoint = w->endpoint;
    reg.shard_endpoint = "";
    if (w->id[0]) {
        reg.prev_id_case_case = SHOAL__REGISTER__PREV_ID_CASE_PREV_ID;
        reg.prev_id = w->id;
    }
    env.body_case = SHOAL__ENVELOPE__BODY_REG;
    env.reg = &reg;
    if (w->state != S_REGISTERING)
        w->reg_retry_ms = S_REGISTER_RETRY_MS;
    w->state = S_REGISTERING;
    w->reg_sent_ms = clock_mono_ms();
    s_send(s, w, &env);
}

static void s_send_heartbeat(s_sim_t *s, s_worker_t *w)
{
    Shoal__Envelope env;
    s_env(w, &env, SHOAL__MSG_TYPE__MSG_HEARTBEAT);
    Shoal__Heartbeat hb = SHOAL__HEARTBEAT__INIT;
    hb.step = w->step;
    hb.loss = 2.0f;
    hb.tokens_per_s = w->run[0] ? 1000.0f : 0.0f;
    hb.activity = w->run[0] ? (w->step < w->lease ? SHOAL__WORKER_ACTIVITY__ACTIVITY_TRAINING
                                                  : SHOAL__WORKER_ACTIVITY__ACTIVITY_WAITING)
                            : SHOAL__WORKER_ACTIVITY__ACTIVITY_IDLE;
    hb.timestamp_ms = (uint64_t)clock_wall_ms();
    hb.detail = "";
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    s_send(s, w, &env);
}

static void s_send_get_assignment(s_sim_t *s, s_worker_t *w)
{
    int64_t now = clock_mono_ms();
    if (now - w->getassign_ms < S_GETASSIGN_MIN_MS)
        return;
    w->getassign_ms = now;
    Shoal__Envelope env;
    s_env(w, &env, SHOAL__MSG_TYPE__MSG_GET_ASSIGNMENT);
    Shoal__GetAssignment ga = SHOAL__GET_ASSIGNMENT__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_GET_ASSIGNMENT;
    env.get_assignment = &ga;
    s_send(s, w, &env);
}

/* The expert at Zipf rank k (0 = hottest) of MoE layer l: a different order each layer, the
 * same in every run (tests name the hot experts by it; --experts is no multiple of 7). */
static uint32_t sim_expert_at_rank(uint32_t k, uint32_t layer, uint32_t n_experts)
{
    return (uint32_t)((7ull * k + 3ull * layer) % n_experts);
}

/* A hash of (seed, step, layer, expert) (splitmix64): the loads' jitter draws nothing from the
 * simulator's random stream, so the churn schedule stays what the seed alone makes it. */
static uint64_t s_jitter_hash(uint64_t seed, int64_t step, uint32_t layer, uint32_t x)
{
    uint64_t z = seed ^ ((uint64_t)step << 24) ^ ((uint64_t)layer << 12) ^ x;
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The step's loads of the MoE layers of w's stage, as a real worker's replica 0 / ep rank 0
 * reports them: expert at rank k gets expert_tokens x (k+1)^-zipf / H of the tokens, plus a
 * seeded jitter under 1%. Returns the layers filled (0: none, or out of memory). */
static size_t s_expert_loads(s_sim_t *s, const s_worker_t *w, Shoal__ExpertLoad **out,
                             uint64_t **counts_out)
{
    const uint32_t n = (uint32_t)s->o.experts;
    const uint32_t first = w->first_layer > (uint32_t)s->o.first_moe ? w->first_layer
                                                                     : (uint32_t)s->o.first_moe;
    const uint32_t end = w->first_layer + w->n_layers;
    if (!n || w->replica != 0 || w->ep_rank != 0 || first >= end)
        return 0;
    const size_t nl = end - first;
    Shoal__ExpertLoad *el = calloc(nl, sizeof *el);
    uint64_t *counts = calloc(nl * n, sizeof *counts);
    if (!el || !counts) {
        free(el);
        free(counts);
        return 0;
    }
    double h = 0;
    for (uint32_t k = 0; k < n; k++)
        h += pow(k + 1.0, -s->o.zipf);
    for (size_t i = 0; i < nl; i++) {
        shoal__expert_load__init(&el[i]);
        el[i].layer = first + (uint32_t)i;
        el[i].n_counts = n;
        el[i].counts = counts + i * n;
        for (uint32_t k = 0; k < n; k++) {
            const double want = s->o.expert_tokens * pow(k + 1.0, -s->o.zipf) / h;
            const uint32_t x = sim_expert_at_rank(k, el[i].layer, n);
            el[i].counts[x] = (uint64_t)want + s_jitter_hash(s->o.seed, w->step, el[i].layer, x) %
                                                   ((uint64_t)(want / 100) + 1);
        }
    }
    *out = el;
    *counts_out = counts;
    return nl;
}

static void s_send_step(s_sim_t *s, s_worker_t *w)
{
    Shoal__Envelope env;
    s_env(w, &env, SHOAL__MSG_TYPE__MSG_STEP_REPORT);
    Shoal__StepReport sr = SHOAL__STEP_REPORT__INIT;
    sr.step = w->step;
    sr.loss = 2.0f;
    sr.tokens = 4096;
    sr.duration_s = (float)s->o.step_ms / 1000.0f;
    sr.grad_norm = 1.0f;
    Shoal__ExpertLoad *el = NULL, *elp[WIRE_MAX_EXPERT_LAYERS];
    uint64_t *counts = NULL;
    sr.n_expert_loads = s_expert_loads(s, w, &el, &counts);
    for (size_t i = 0; i < sr.n_expert_loads && i < WIRE_MAX_EXPERT_LAYERS; i++)
        elp[i] = &el[i];
    sr.expert_loads = elp;
    env.body_case = SHOAL__ENVELOPE__BODY_STEP_REPORT;
    env.step_report = &sr;
    s_send(s, w, &env);
    free(el);
    free(counts);
}

/* The shard a real worker would have written: one file, its size and a digest (fixed: nothing
 * reads it back; the coordinator only records it). */
static void s_send_ckpt(s_sim_t *s, s_worker_t *w)
{
    char path[128];
    snprintf(path, sizeof path, "/sim/%s/step-%lld/rank-%u", w->run, (long long)w->step, w->rank);
    Shoal__FileDigest fd = SHOAL__FILE_DIGEST__INIT;
    Shoal__FileDigest *fdp[1] = {&fd};
    fd.name = "shard.safetensors";
    fd.size = 1ull << 30;
    fd.sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    Shoal__Cell cell = SHOAL__CELL__INIT;
    cell.replica = w->replica;
    cell.stage = w->stage;
    cell.ep_rank = w->ep_rank;
    Shoal__CheckpointShardReport ck = SHOAL__CHECKPOINT_SHARD_REPORT__INIT;
    ck.step = w->step;
    ck.path = path;
    ck.files = fdp;
    ck.n_files = 1;
    ck.holder = w->id;
    ck.cell = &cell;
    Shoal__Envelope env;
    s_env(w, &env, SHOAL__MSG_TYPE__MSG_CKPT_SHARD);
    env.body_case = SHOAL__ENVELOPE__BODY_CKPT_SHARD;
    env.ckpt_shard = &ck;
    s_send(s, w, &env);
}

static void s_send_leave(s_sim_t *s, s_worker_t *w, int drain_first)
{
    Shoal__Envelope env;
    s_env(w, &env, SHOAL__MSG_TYPE__MSG_LEAVE);
    Shoal__Leave lv = SHOAL__LEAVE__INIT;
    lv.reason = drain_first ? "simulated preemption" : "simulated drain done";
    lv.drain_first = drain_first;
    env.body_case = SHOAL__ENVELOPE__BODY_LEAVE;
    env.leave = &lv;
    s_send(s, w, &env);
}

static void s_close(s_sim_t *s, s_worker_t *w)
{
    if (w->link && w->sock) {
        /* what the relay does when a worker's connection to it closes */
        Shoal__Envelope env;
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_RELAY_CLOSED, "", "sim-relay", 0, 0);
        Shoal__RelayClosed rc = SHOAL__RELAY_CLOSED__INIT;
        rc.reason = "simulated death";
        env.body_case = SHOAL__ENVELOPE__BODY_RELAY_CLOSED;
        env.relay_closed = &rc;
        s_send_relayed(s, w, &env);
        w->link->by_slot[w->slot] = -1;
    } else {
        if (w->sock && w->zfd >= 0)
            (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, w->zfd, NULL);
        if (w->sock)
            zmq_close(w->sock); /* linger 0 (wire_socket_limits): the connection drops at once */
    }
    w->sock = NULL;
    w->state = S_OFF;
    s_table_unref(&w->held);
}

/* A drained worker, its cell handed on: a plain Leave, then gone. */
static void s_finish_drain(s_sim_t *s, s_worker_t *w)
{
    s_send_leave(s, w, 0);
    s_event(s, "left", w);
    w->state = S_LEAVING;
    w->next_hb_ms = clock_mono_ms() + 200; /* let the Leave go out before closing */
}

static void s_on_msg(const Shoal__Envelope *env, void *ctx)
{
    s_sim_t *s = ctx;
    s_worker_t *w = s->cur;
    switch (env->type) {
    case SHOAL__MSG_TYPE__MSG_REGISTER_REPLY:
        if (env->reg_reply->accepted) {
            snprintf(w->id, sizeof w->id, "%s", env->reg_reply->worker_id);
            if (w->state == S_REGISTERING)
                s->registered++;
            w->state = S_REGISTERED;
            s_drop_plan(w);
        }
        break;
    case SHOAL__MSG_TYPE__MSG_ASSIGNMENT: {
        const Shoal__Assignment *a = env->assignment;
        if (!a->plan || (w->run[0] && strcmp(w->run, a->plan->run_id) == 0 &&
                         a->plan->generation < w->gen))
            break;
        /* like a worker: a delta on the table it holds, checked against the digest, or the
         * full plan fetched */
        const size_t bytes = shoal__envelope__get_packed_size(env);
        s_table_t *t = a->base_generation ? s_table_of_delta(s, w, env) : s_table_of_full(s, a);
        if (!t) {
            if (a->base_generation)
                s->deltas_refused++;
            w->getassign_ms = 0; /* at once */
            s_send_get_assignment(s, w);
            break;
        }
        if (a->base_generation) {
            s->deltas++;
            s->delta_bytes += bytes;
        } else {
            s->full_plans++;
            s->full_bytes += bytes;
        }
        s_table_unref(&w->held);
        w->held = t;
        snprintf(w->run, sizeof w->run, "%s", a->plan->run_id);
        w->gen = a->plan->generation;
        w->rank = a->rank;
        if (a->cell) {
            w->replica = a->cell->replica;
            w->stage = a->cell->stage;
            w->ep_rank = a->cell->ep_rank;
        }
        w->n_layers = 0;
        for (size_t i = 0; i < a->plan->n_stages; i++)
            if (a->plan->stages[i]->stage == w->stage) {
                w->first_layer = a->plan->stages[i]->first_layer;
                w->n_layers = a->plan->stages[i]->n_layers;
            }
        w->step = a->plan->start_step - 1; /* loads the state the plan names at once */
        w->lease = a->lease;
        w->next_step_ms = clock_mono_ms() + s->o.step_ms;
        break;
    }
    case SHOAL__MSG_TYPE__MSG_STEP_COMMIT:
        if (strcmp(env->run_id, w->run) == 0 && env->generation == w->gen &&
            env->step_commit->lease > w->lease)
            w->lease = env->step_commit->lease;
        break;
    case SHOAL__MSG_TYPE__MSG_RUN_CONTROL:
        if (strcmp(env->run_id, w->run) != 0)
            break;
        if (env->run_control->command == SHOAL__RUN_COMMAND__RUN_CMD_STOP) {
            s_drop_plan(w);
            if (w->drain_asked && w->state == S_REGISTERED)
                s_finish_drain(s, w);
        } else if (env->run_control->command == SHOAL__RUN_COMMAND__RUN_CMD_PAUSE) {
            w->paused = 1;
        } else if (env->run_control->command == SHOAL__RUN_COMMAND__RUN_CMD_RESUME) {
            w->paused = 0;
        }
        break;
    case SHOAL__MSG_TYPE__MSG_DRAIN:
        s_drop_plan(w);
        if (w->drain_asked && w->state == S_REGISTERED)
            s_finish_drain(s, w);
        break;
    case SHOAL__MSG_TYPE__MSG_ACK:
        s->acks++;
        /* once per loss: the answers to beats already in flight say the same again */
        if (env->ack->directive == SHOAL__DIRECTIVE__DIRECTIVE_REREGISTER &&
            w->state == S_REGISTERED)
            s_send_register(s, w);
        else if (env->ack->directive == SHOAL__DIRECTIVE__DIRECTIVE_FETCH_ASSIGNMENT)
            s_send_get_assignment(s, w);
        else if (env->ack->generation == w->gen && w->run[0] && env->ack->lease > w->lease)
            w->lease = env->ack->lease;
        break;
    case SHOAL__MSG_TYPE__MSG_ERROR:
        if (env->error->code == SHOAL__ERROR_CODE__ERR_UNKNOWN_WORKER && w->state == S_REGISTERED)
            s_send_register(s, w);
        else if (env->error->code == SHOAL__ERROR_CODE__ERR_STALE_GENERATION ||
                 env->error->code == SHOAL__ERROR_CODE__ERR_WRONG_RUN)
            s_send_get_assignment(s, w);
        break;
    default: /* Replicate, CommId: no state to copy, no comm to build */
        break;
    }
}

static int s_open_own(s_sim_t *s, s_worker_t *w);
static int s_link_attach(s_sim_t *s, s_worker_t *w, int host);

/* Opens worker `index`'s socket; it registers after `delay_ms` (0: now). */
static int s_open(s_sim_t *s, s_worker_t *w, int index, int delay_ms)
{
    memset(w, 0, sizeof *w);
    const int host = index / s->o.hosts_of;
    snprintf(w->name, sizeof w->name, "sim-%d", index);
    snprintf(w->host, sizeof w->host, "h%04d", host);
    snprintf(w->inst, sizeof w->inst, "inst-%d", host % s->o.institutions);
    snprintf(w->endpoint, sizeof w->endpoint, "tcp://%s:%d", w->host, 7500 + index % s->o.hosts_of);
    w->zfd = -1;
    if (s->o.relay) {
        if (s_link_attach(s, w, host) != 0)
            return -1;
    } else if (s_open_own(s, w) != 0) {
        return -1;
    }
    const int64_t now = clock_mono_ms();
    w->next_hb_ms = now + delay_ms + s_rand(s, (uint32_t)s->o.hb_ms); /* spread the beats */
    if (delay_ms == 0) {
        s_send_register(s, w);
    } else {
        w->state = S_REGISTERING; /* not sent yet: reg_sent_ms 0 */
        w->reg_retry_ms = S_REGISTER_RETRY_MS;
    }
    return 0;
}

/* The worker's own DEALER. */
static int s_open_own(s_sim_t *s, s_worker_t *w)
{
    w->sock = zmq_socket(s->zctx, ZMQ_DEALER);
    size_t fd_len = sizeof w->zfd;
    if (!w->sock || wire_socket_limits(w->sock) != SHOAL_OK ||
        zmq_connect(w->sock, s->o.connect) != 0 ||
        zmq_getsockopt(w->sock, ZMQ_FD, &w->zfd, &fd_len) != 0) {
        fprintf(stderr, "shoal-sim: worker %s: %s\n", w->name, zmq_strerror(errno));
        s_close(s, w);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)(w - s->w)};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, w->zfd, &ev) != 0) {
        fprintf(stderr, "shoal-sim: worker %s: epoll: %s\n", w->name, strerror(errno));
        s_close(s, w);
        return -1;
    }
    return 0;
}

/* --relay: w joins its host's link (opened by the host's first worker) under a new slot. */
static int s_link_attach(s_sim_t *s, s_worker_t *w, int host)
{
    const int li = host - s->first_host;
    if (li < 0 || li >= s->n_links)
        return -1;
    s_link_t *l = &s->links[li];
    if (!l->sock) {
        l->sock = zmq_socket(s->zctx, ZMQ_DEALER);
        size_t fd_len = sizeof l->zfd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = S_LINK_BIT | (uint32_t)li};
        if (!l->sock || wire_socket_limits(l->sock) != SHOAL_OK ||
            zmq_connect(l->sock, s->o.connect) != 0 ||
            zmq_getsockopt(l->sock, ZMQ_FD, &l->zfd, &fd_len) != 0 ||
            epoll_ctl(s->epfd, EPOLL_CTL_ADD, l->zfd, &ev) != 0) {
            fprintf(stderr, "shoal-sim: relay of host %d: %s\n", host, zmq_strerror(errno));
            return -1;
        }
        relay_hold_init(&l->hold, s->o.hold_ms, "sim-relay");
    }
    if (l->n_slots == l->cap_slots) {
        uint32_t cap = l->cap_slots ? 2 * l->cap_slots : 16;
        int *grown = realloc(l->by_slot, cap * sizeof *grown);
        if (!grown)
            return -1;
        l->by_slot = grown;
        l->cap_slots = cap;
    }
    w->link = l;
    w->slot = l->n_slots++;
    l->by_slot[w->slot] = (int)(w - s->w);
    w->sock = l->sock;
    return 0;
}

/* One churn event: a death, a join or a drain (2 : 1 : 1). */
static void s_churn(s_sim_t *s)
{
    uint32_t kind = s_rand(s, 4);
    if (kind == 2 && s->n < s->cap) {
        s_worker_t *w = &s->w[s->n];
        if (s_open(s, w, s->next_index++, 0) == 0) {
            s->n++;
            s->joins++;
            s_event(s, "join", w);
        }
        return;
    }
    /* a live registered worker, from a random start */
    uint32_t start = s_rand(s, (uint32_t)s->n);
    for (int k = 0; k < s->n; k++) {
        s_worker_t *w = &s->w[(start + (uint32_t)k) % (uint32_t)s->n];
        if (w->state != S_REGISTERED || w->drain_asked)
            continue;
        if (kind == 3) {
            w->drain_asked = 1;
            s_send_leave(s, w, 1);
            s->drains++;
            s_event(s, "drain", w);
        } else {
            s_event(s, "death", w);
            s_close(s, w);
            s->deaths++;
        }
        return;
    }
}

static void s_tick(s_sim_t *s, s_worker_t *w, int64_t now)
{
    if (w->state == S_LEAVING) {
        if (now >= w->next_hb_ms)
            s_close(s, w);
        return;
    }
    if (w->state == S_REGISTERING) {
        if (w->reg_sent_ms && now - w->reg_sent_ms > w->reg_retry_ms) {
            s_send_register(s, w);
            w->reg_retry_ms = 2 * w->reg_retry_ms < S_REGISTER_RETRY_MAX_MS
                                  ? 2 * w->reg_retry_ms
                                  : S_REGISTER_RETRY_MAX_MS;
        } else if (!w->reg_sent_ms && now >= w->next_hb_ms) {
            s_send_register(s, w); /* its turn in the ramp */
        }
        return;
    }
    if (now >= w->next_hb_ms) {
        s_send_heartbeat(s, w);
        w->next_hb_ms += s->o.hb_ms;
        if (w->next_hb_ms < now)
            w->next_hb_ms = now + s->o.hb_ms;
    }
    if (w->run[0] && !w->paused && w->step < w->lease && now >= w->next_step_ms) {
        w->step++;
        s_send_step(s, w);
        if (s->o.ckpt_every > 0 && w->step % s->o.ckpt_every == 0)
            s_send_ckpt(s, w);
        w->next_step_ms = now + s->o.step_ms;
    }
}

/* ---- the event loop: timers and ready sockets ---------------------------------------- */

static int s_heap_push(s_sim_t *s, int64_t at, int w)
{
    if (s->n_heap == s->cap_heap) {
        int cap = s->cap_heap ? 2 * s->cap_heap : 1024;
        s_timer_t *grown = realloc(s->heap, sizeof *grown * (size_t)cap);
        if (!grown)
            return -1;
        s->heap = grown;
        s->cap_heap = cap;
    }
    int i = s->n_heap++;
    while (i > 0 && s->heap[(i - 1) / 2].at > at) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = (s_timer_t){at, w};
    return 0;
}

static s_timer_t s_heap_pop(s_sim_t *s)
{
    s_timer_t top = s->heap[0], last = s->heap[--s->n_heap];
    int i = 0;
    for (;;) {
        int k = 2 * i + 1;
        if (k >= s->n_heap)
            break;
        if (k + 1 < s->n_heap && s->heap[k + 1].at < s->heap[k].at)
            k++;
        if (s->heap[k].at >= last.at)
            break;
        s->heap[i] = s->heap[k];
        i = k;
    }
    if (s->n_heap > 0)
        s->heap[i] = last;
    return top;
}

/* A flush timer for l's queue at its due time (none when one stands already). */
static void s_heap_push_link(s_sim_t *s, s_link_t *l)
{
    const int64_t at = clock_mono_ms() + relay_hold_due_in(&l->hold, clock_mono_ms());
    if (l->timer_at && l->timer_at <= at)
        return;
    if (s_heap_push(s, at, -1 - (int)(l - s->links)) == 0)
        l->timer_at = at;
}

/* When worker w next needs s_tick (INT64_MAX: never; a socketless worker is done). */
static int64_t s_due(const s_sim_t *s, const s_worker_t *w)
{
    (void)s;
    if (!w->sock)
        return INT64_MAX;
    if (w->state == S_REGISTERING)
        return w->reg_sent_ms ? w->reg_sent_ms + w->reg_retry_ms + 1 : w->next_hb_ms;
    int64_t at = w->next_hb_ms;
    if (w->state == S_REGISTERED && w->run[0] && !w->paused && w->step < w->lease &&
        w->next_step_ms < at)
        at = w->next_step_ms;
    return at;
}

/* Keeps a timer entry at w's due time: a new one when that is earlier than its live entry (the
 * later one goes stale); an entry that fires early only ticks a worker with nothing due. */
static void s_arm(s_sim_t *s, s_worker_t *w)
{
    const int64_t at = s_due(s, w);
    if (at == INT64_MAX || (w->timer_at && w->timer_at <= at))
        return;
    if (s_heap_push(s, at, (int)(w - s->w)) == 0)
        w->timer_at = at;
}

/* Reads what w's socket holds (up to a burst; more waits for the next round). */
static void s_service(s_sim_t *s, s_worker_t *w)
{
    w->ready = 0;
    s->cur = w;
    int m = 0;
    for (; m < 64 && w->sock; m++) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(w->sock, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN))
            break;
        wire_route_t route;
        if (wire_recv(w->sock, ZMQ_DONTWAIT, &route, s_on_msg, s) == SHOAL_ERR_TIMEOUT)
            break;
    }
    if (m == 64)
        s_mark_ready(s, w);
    s_arm(s, w); /* an answer may have moved its timers (a lease, a plan) */
}

/* --relay: what the coordinator sent a host's workers, each answer to the worker of its slot. */
typedef struct {
    s_sim_t *s;
    s_link_t *l;
    const wire_route_t *route;
    uint32_t slot; /* of the batch item being decoded */
} s_link_ctx_t;

/* One message for the worker of `slot` (dropped when it died, as the relay drops it). */
static void s_link_deliver(s_link_ctx_t *ctx, uint32_t slot, const Shoal__Envelope *env)
{
    if (slot >= ctx->l->n_slots || ctx->l->by_slot[slot] < 0)
        return;
    s_worker_t *w = &ctx->s->w[ctx->l->by_slot[slot]];
    ctx->s->cur = w;
    s_on_msg(env, ctx->s);
    s_arm(ctx->s, w);
}

static void s_on_link_item(const Shoal__Envelope *env, void *ctxp)
{
    s_link_ctx_t *ctx = ctxp;
    s_link_deliver(ctx, ctx->slot, env);
}

/* A RelayBatch of answers, or a push routed [slot][envelope]. */
static void s_on_link_msg(const Shoal__Envelope *env, void *ctxp)
{
    s_link_ctx_t *ctx = ctxp;
    uint32_t slot;
    if (ctx->route->n == 0 && env->type == SHOAL__MSG_TYPE__MSG_RELAY_BATCH) {
        for (size_t i = 0; i < env->relay_batch->n_items; i++) {
            const Shoal__RelayItem *it = env->relay_batch->items[i];
            ctx->slot = it->slot;
            (void)wire_decode(it->envelope.data, it->envelope.len, s_on_link_item, ctx);
        }
    } else if (ctx->route->n == 1 &&
               wire_relay_slot_get(ctx->route->data[0], ctx->route->len[0], &slot)) {
        s_link_deliver(ctx, slot, env);
    }
}

static void s_service_link(s_sim_t *s, s_link_t *l)
{
    l->ready = 0;
    int m = 0;
    for (; m < 512 && l->sock; m++) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(l->sock, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN))
            break;
        wire_route_t route;
        s_link_ctx_t ctx = {s, l, &route, 0};
        if (wire_recv(l->sock, ZMQ_DONTWAIT, &route, s_on_link_msg, &ctx) == SHOAL_ERR_TIMEOUT)
            break;
    }
    if (m == 512)
        s_mark_link_ready(s, l);
}

/* Every timer due by `now`: the worker ticks and gets its next entry. */
static void s_run_timers(s_sim_t *s, int64_t now)
{
    while (s->n_heap > 0 && s->heap[0].at <= now) {
        s_timer_t t = s_heap_pop(s);
        if (t.w < 0) { /* a link's queue is due */
            s_link_t *l = &s->links[-1 - t.w];
            if (l->timer_at != t.at)
                continue;
            l->timer_at = 0;
            relay_hold_flush(&l->hold, l->sock, now, 0);
            s_mark_link_ready(s, l);
            if (l->hold.n > 0)
                s_heap_push_link(s, l);
            continue;
        }
        s_worker_t *w = &s->w[t.w];
        if (w->timer_at != t.at)
            continue; /* stale: a newer entry stands */
        w->timer_at = 0;
        if (!w->sock)
            continue;
        s_tick(s, w, now);
        s_arm(s, w);
    }
}

/* Services every socket marked ready (those marked meanwhile wait for the next round). */
static void s_run_ready(s_sim_t *s)
{
    int n = s->n_ready;
    for (int k = 0; k < n; k++) {
        s_worker_t *w = &s->w[s->ready[k]];
        if (w->ready)
            s_service(s, w);
    }
    /* keep what was marked during the round */
    memmove(s->ready, s->ready + n, sizeof *s->ready * (size_t)(s->n_ready - n));
    s->n_ready -= n;
    n = s->n_link_ready;
    for (int k = 0; k < n; k++) {
        s_link_t *l = &s->links[s->link_ready[k]];
        if (l->ready)
            s_service_link(s, l);
    }
    memmove(s->link_ready, s->link_ready + n,
            sizeof *s->link_ready * (size_t)(s->n_link_ready - n));
    s->n_link_ready -= n;
}

static int s_parse(int argc, char **argv, s_opts_t *o)
{
    *o = (s_opts_t){.n_workers = 0, .hosts_of = 8, .institutions = 4, .hb_ms = 100,
                    .step_ms = 200, .seconds = 30, .seed = 1, .memory_gb = 80,
                    .expert_tokens = 8192, .zipf = 1.0, .hold_ms = RELAY_DEFAULT_HOLD_MS};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        int n = atoi(v);
        if (!strcmp(k, "--connect"))
            o->connect = v;
        else if (!strcmp(k, "--events"))
            o->events_path = v;
        else if (!strcmp(k, "--workers"))
            o->n_workers = n;
        else if (!strcmp(k, "--first"))
            o->first = n;
        else if (!strcmp(k, "--hosts-of"))
            o->hosts_of = n;
        else if (!strcmp(k, "--institutions"))
            o->institutions = n;
        else if (!strcmp(k, "--hb-ms"))
            o->hb_ms = n;
        else if (!strcmp(k, "--step-ms"))
            o->step_ms = n;
        else if (!strcmp(k, "--ckpt-every"))
            o->ckpt_every = n;
        else if (!strcmp(k, "--seconds"))
            o->seconds = n;
        else if (!strcmp(k, "--seed"))
            o->seed = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--churn-ms"))
            o->churn_ms = n;
        else if (!strcmp(k, "--churn-offset-ms"))
            o->churn_offset_ms = n;
        else if (!strcmp(k, "--quiet-after-ms"))
            o->quiet_after_ms = n;
        else if (!strcmp(k, "--memory-gb"))
            o->memory_gb = n;
        else if (!strcmp(k, "--ramp-ms"))
            o->ramp_ms = n;
        else if (!strcmp(k, "--experts"))
            o->experts = n;
        else if (!strcmp(k, "--first-moe"))
            o->first_moe = n;
        else if (!strcmp(k, "--expert-tokens"))
            o->expert_tokens = n;
        else if (!strcmp(k, "--zipf"))
            o->zipf = atof(v);
        else if (!strcmp(k, "--relay"))
            o->relay = n;
        else if (!strcmp(k, "--hold-ms"))
            o->hold_ms = n;
        else {
            fprintf(stderr, "shoal-sim: unknown option %s\n", k);
            return -1;
        }
    }
    if (!o->connect || o->n_workers < 1 || o->n_workers > 20000 || o->hosts_of < 1 ||
        o->institutions < 1 || o->hb_ms < 1 || o->step_ms < 1 || o->seconds < 1 ||
        o->first < 0 || o->churn_ms < 0 || o->memory_gb < 0 || o->ramp_ms < 0 ||
        o->experts < 0 || o->experts > WIRE_MAX_EXPERTS || (o->experts && o->experts % 7 == 0) ||
        o->first_moe < 0 || o->expert_tokens < 1 || !(o->zipf >= 0 && o->zipf <= 10) ||
        o->relay < 0 || o->relay > 1 || o->hold_ms < 0 || o->hold_ms > 1000) {
        fprintf(stderr, "usage: shoal-sim --connect EP --workers N (1..20000) [--first K] "
                        "[--hosts-of 8] [--institutions 4] [--hb-ms 100] [--step-ms 200] "
                        "[--ckpt-every 0] [--seconds 30] [--seed 1] [--churn-ms 0] "
                        "[--churn-offset-ms 0] [--quiet-after-ms 0] [--memory-gb 80] [--ramp-ms 0] "
                        "[--events FILE] [--experts N --first-moe K --zipf 1.0 "
                        "--expert-tokens 8192] [--relay 0|1 [--hold-ms 100]]\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    s_sim_t s = {0};
    if (s_parse(argc, argv, &s.o))
        return 1;
    signal(SIGTERM, s_on_signal);
    signal(SIGINT, s_on_signal);
    /* a socket and its connection each hold descriptors */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    s.rng = s.o.seed * 0x9E3779B97F4A7C15ull + 1;
    s.cap = s.o.n_workers + (s.o.churn_ms ? s.o.seconds * 1000 / s.o.churn_ms + 1 : 0);
    s.w = calloc((size_t)s.cap, sizeof *s.w);
    /* a round's list plus what it marks again (each worker at most once in either) */
    s.ready = calloc(2 * (size_t)s.cap, sizeof *s.ready);
    s.first_host = s.o.first / s.o.hosts_of;
    s.n_links = s.o.relay ? (s.o.first + s.cap) / s.o.hosts_of - s.first_host + 1 : 0;
    s.links = calloc((size_t)s.n_links + 1, sizeof *s.links);
    s.link_ready = calloc(2 * (size_t)s.n_links + 1, sizeof *s.link_ready);
    s.zctx = zmq_ctx_new();
    s.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!s.w || !s.ready || !s.links || !s.link_ready || !s.zctx || s.epfd < 0 ||
        zmq_ctx_set(s.zctx, ZMQ_MAX_SOCKETS, s.cap + 16) != 0) {
        fprintf(stderr, "shoal-sim: out of memory for %d workers\n", s.cap);
        return 1;
    }
    if (s.o.events_path && !(s.events = fopen(s.o.events_path, "a"))) {
        fprintf(stderr, "shoal-sim: %s: %s\n", s.o.events_path, strerror(errno));
        return 1;
    }
    s.next_index = s.o.first;
    for (int i = 0; i < s.o.n_workers; i++) {
        if (s_open(&s, &s.w[s.n], s.next_index++,
                   (int)((int64_t)s.o.ramp_ms * i / s.o.n_workers)) != 0)
            return 1;
        s_arm(&s, &s.w[s.n]);
        s.n++;
    }
    const int64_t t0 = clock_mono_ms(), end = t0 + (int64_t)s.o.seconds * 1000;
    const int64_t churn_end = end - s.o.quiet_after_ms;
    int64_t next_churn = s.o.churn_ms ? t0 + s.o.churn_offset_ms + s.o.churn_ms : INT64_MAX;
    struct epoll_event evs[256];
    int64_t next_progress = t0 + 1000;
    while (!s_stop) {
        int64_t now = clock_mono_ms();
        if (now >= end)
            break;
        if (now >= next_progress) {
            printf("sim: at %lld acks %llu sent %llu\n", (long long)now, s.acks, s.sent);
            fflush(stdout);
            next_progress += 1000;
        }
        if (now >= next_churn) {
            if (now < churn_end) {
                const int n_before = s.n;
                s_churn(&s);
                if (s.n > n_before)
                    s_arm(&s, &s.w[s.n - 1]); /* a join */
            }
            next_churn += s.o.churn_ms;
        }
        s_run_timers(&s, now);
        s_run_ready(&s);
        /* sleep until the next timer, churn or the end, unless a socket is ready already */
        int64_t until = next_churn < end ? next_churn : end;
        if (s.n_heap > 0 && s.heap[0].at < until)
            until = s.heap[0].at;
        now = clock_mono_ms();
        int64_t wait_ms = s.n_ready || until <= now ? 0 : until - now;
        const int timeout = (int)(wait_ms < 1000 ? wait_ms : 1000);
        int n = epoll_wait(s.epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "shoal-sim: epoll_wait: %s\n", strerror(errno));
            break;
        }
        for (int k = 0; k < n; k++) {
            const uint32_t d = evs[k].data.u32;
            if (d & S_LINK_BIT)
                s_mark_link_ready(&s, &s.links[d & ~S_LINK_BIT]);
            else
                s_mark_ready(&s, &s.w[d]);
        }
    }
    printf("sim: sent %llu acks %llu registered %llu deaths %llu joins %llu drains %llu\n",
           s.sent, s.acks, s.registered, s.deaths, s.joins, s.drains);
    printf("sim: plans full %llu (%llu bytes) deltas %llu (%llu bytes) deltas_refused %llu\n",
           s.full_plans, s.full_bytes, s.deltas, s.delta_bytes, s.deltas_refused);
    for (int i = 0; i < s.n; i++)
        if (!s.w[i].link)
            s_close(&s, &s.w[i]);
    for (int i = 0; i < s.n_links; i++) {
        if (s.links[i].sock)
            zmq_close(s.links[i].sock);
        relay_hold_fini(&s.links[i].hold);
        free(s.links[i].by_slot);
    }
    free(s.links);
    free(s.link_ready);
    for (int i = 0; i < S_TABLES_KEPT; i++)
        s_table_unref(&s.recent[i]);
    zmq_ctx_term(s.zctx);
    if (s.events)
        fclose(s.events);
    close(s.epfd);
    free(s.ready);
    free(s.heap);
    free(s.w);
    return 0;
}
