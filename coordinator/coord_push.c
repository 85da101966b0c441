/* coord_push.c: what the coordinator sends to workers: replies (Error, Ack) and pushes
 * (Assignment with the plan in protobuf form, RunControl, StepCommit, Drain). */
#include "coord_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "log.h"

/* An answer that announces no state: it may go out even after a fail-stop. */
static int s_is_refusal(const Shoal__Envelope *env)
{
    return env->type == SHOAL__MSG_TYPE__MSG_ERROR ||
           (env->type == SHOAL__MSG_TYPE__MSG_CTL_REPLY && !env->ctl_reply->ok);
}

static void s_send_now(void *sock, const wire_route_t *route, uint8_t **buf, size_t len)
{
    shoal_err_t rc = wire_send_packed(sock, route, buf, len, ZMQ_DONTWAIT);
    if (rc != SHOAL_OK)
        log_debug("send: %s", shoal_errmsg());
}

/* Queues packed message buf (owned from here) behind what the outbox holds; after a fail-stop
 * only a refusal goes out, at once. */
static void s_enqueue(coord_t *c, void *sock, const wire_route_t *route, uint8_t *buf, size_t len,
                      const Shoal__Envelope *env)
{
    if (c->fail_stopped) {
        if (s_is_refusal(env))
            s_send_now(sock, route, &buf, len);
        free(buf);
        return;
    }
    if (c->n_out == c->cap_out) {
        size_t cap = c->cap_out ? 2 * c->cap_out : 16;
        coord_outmsg_t *grown = realloc(c->outbox, cap * sizeof *grown);
        if (!grown) {
            /* cannot hold it back: dropping is safe (the peer asks again), sending early not */
            log_error("send %s: out of memory: dropped", wire_type_name((int)env->type));
            free(buf);
            return;
        }
        c->outbox = grown;
        c->cap_out = cap;
    }
    coord_outmsg_t *m = &c->outbox[c->n_out++];
    m->sock = sock;
    m->route.n = 0;
    if (route)
        m->route = *route;
    m->buf = buf;
    m->len = len;
}

void coord_send(coord_t *c, void *sock, const wire_route_t *route, Shoal__Envelope *env)
{
    if (env->type != SHOAL__MSG_TYPE__MSG_CTL_REPLY)
        env->seq = ++c->seq;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (wire_pack(env, &buf, &len) != SHOAL_OK) {
        log_error("send %s: %s", wire_type_name((int)env->type), shoal_errmsg());
        return;
    }
    s_enqueue(c, sock, route, buf, len, env);
}

/* A message for a worker behind a host relay: [relay][slot] on the worker socket. */
static int s_relayed(const coord_t *c, const coord_outmsg_t *m)
{
    uint32_t slot;
    return m->buf && m->sock == c->wsock && m->route.n == 2 &&
           wire_relay_slot_get(m->route.data[1], m->route.len[1], &slot);
}

#define S_RELAY_BATCH_MAX_BYTES (16u << 20) /* a batch past this goes, the rest in the next */

/* outbox[i] and every later message to the same relay, in their order, as RelayBatches: a relay
 * gets the answers to its batch in one message, not one per worker (ops/CAPACITY.md). */
static void s_send_relay_batches(coord_t *c, size_t i)
{
    const coord_outmsg_t *first = &c->outbox[i];
    wire_route_t relay = first->route;
    relay.n = 1;
    size_t n = 0, cap = 0, bytes = 0;
    Shoal__RelayItem *items = NULL;
    coord_outmsg_t **taken = NULL;
    for (size_t j = i; j <= c->n_out; j++) {
        coord_outmsg_t *m = j < c->n_out ? &c->outbox[j] : NULL;
        const int mine = m && s_relayed(c, m) && m->route.len[0] == relay.len[0] &&
                         memcmp(m->route.data[0], relay.data[0], relay.len[0]) == 0;
        if (n > 0 && (!m || (mine && bytes + m->len > S_RELAY_BATCH_MAX_BYTES))) {
            Shoal__RelayItem **ptrs = malloc(n * sizeof *ptrs);
            Shoal__RelayBatch batch = SHOAL__RELAY_BATCH__INIT;
            Shoal__Envelope env;
            wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_RELAY_BATCH, "", COORD_SENDER, 0,
                               ++c->seq);
            env.body_case = SHOAL__ENVELOPE__BODY_RELAY_BATCH;
            env.relay_batch = &batch;
            uint8_t *buf = NULL;
            size_t len = 0;
            if (ptrs) {
                for (size_t k = 0; k < n; k++)
                    ptrs[k] = &items[k];
                batch.n_items = n;
                batch.items = ptrs;
                if (wire_pack(&env, &buf, &len) == SHOAL_OK)
                    s_send_now(c->wsock, &relay, &buf, len);
                else
                    log_warn("relay batch of %zu answers: %s: dropped", n, shoal_errmsg());
            }
            free(ptrs);
            for (size_t k = 0; k < n; k++) {
                free(taken[k]->buf);
                taken[k]->buf = NULL;
            }
            n = 0;
            bytes = 0;
        }
        if (!m || !mine)
            continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            Shoal__RelayItem *gi = realloc(items, nc * sizeof *gi);
            if (gi)
                items = gi;
            coord_outmsg_t **gt = gi ? realloc(taken, nc * sizeof *gt) : NULL;
            if (gt)
                taken = gt;
            if (!gi || !gt) { /* out of memory: this one alone, as a routed push */
                s_send_now(m->sock, &m->route, &m->buf, m->len);
                continue;
            }
            cap = nc;
        }
        shoal__relay_item__init(&items[n]);
        (void)wire_relay_slot_get(m->route.data[1], m->route.len[1], &items[n].slot);
        items[n].envelope.data = m->buf;
        items[n].envelope.len = m->len;
        taken[n++] = m;
        bytes += m->len;
    }
    free(items);
    free(taken);
}

void coord_outbox_flush(coord_t *c)
{
    for (size_t i = 0; i < c->n_out; i++) {
        if (!c->outbox[i].buf)
            continue; /* went in a relay's batch */
        if (s_relayed(c, &c->outbox[i]))
            s_send_relay_batches(c, i);
        else
            s_send_now(c->outbox[i].sock, &c->outbox[i].route, &c->outbox[i].buf,
                       c->outbox[i].len);
    }
    c->n_out = 0;
}

void coord_outbox_discard(coord_t *c)
{
    for (size_t i = 0; i < c->n_out; i++)
        free(c->outbox[i].buf);
    if (c->n_out)
        log_warn("%zu message(s) not sent: the state they follow is not on disk", c->n_out);
    c->n_out = 0;
}

void coord_send_worker(coord_t *c, coord_worker_t *w, Shoal__Envelope *env)
{
    if (w->has_route)
        coord_send(c, c->wsock, &w->route, env);
}

void coord_reply_error(coord_t *c, const wire_route_t *route, Shoal__ErrorCode code,
                       const Shoal__Envelope *about, const coord_run_t *r, const char *fmt, ...)
{
    const uint64_t generation = r ? r->generation : 0;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Shoal__Error e = SHOAL__ERROR__INIT;
    e.code = code;
    e.message = msg;
    e.generation = generation;
    if (about) {
        e.about_type = about->type;
        e.about_seq = about->seq;
    }
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_ERROR, r ? r->id : "", COORD_SENDER, generation,
                       0);
    env.body_case = SHOAL__ENVELOPE__BODY_ERROR;
    env.error = &e;
    coord_send(c, c->wsock, route, &env);
}
/* The envelope of a push about run r (NULL: none) of `type`, whose body (which the caller points
 * at) is `body_case`. */
static Shoal__Envelope s_run_envelope(const coord_run_t *r, Shoal__MsgType type,
                                      Shoal__Envelope__BodyCase body_case)
{
    Shoal__Envelope env;
    wire_envelope_init(&env, type, r ? r->id : "", COORD_SENDER, r ? r->generation : 0, 0);
    env.body_case = body_case;
    return env;
}

/* The Ack of every worker message, with what the worker should do next. */
void coord_reply_ack(coord_t *c, const wire_route_t *route, const Shoal__Envelope *about,
                     coord_worker_t *w, coord_run_t *r)
{
    Shoal__Ack ack = SHOAL__ACK__INIT;
    ack.acked_type = about->type;
    ack.acked_seq = about->seq;
    ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_NONE;
    if (r) {
        ack.generation = r->generation;
        ack.committed_step = r->committed_step;
        ack.lease = r->lease;
    }
    if (w && (w->state == WORKER_DRAINING || w->state == WORKER_DRAINED ||
              w->state == WORKER_QUARANTINED) && !r)
        ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_DRAIN;
    else if (r && (strcmp(about->run_id, r->id) != 0 || about->generation != r->generation) &&
             !(strcmp(about->run_id, r->id) == 0 && about->generation < r->generation &&
               coord_assignment_in_flight(c, r, w)))
        ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_FETCH_ASSIGNMENT;
    else if (r && r->state == RUN_PAUSED)
        ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_PAUSE;
    else if (!r && about->run_id[0])
        ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_STOP;
    Shoal__Envelope env = s_run_envelope(r, SHOAL__MSG_TYPE__MSG_ACK, SHOAL__ENVELOPE__BODY_ACK);
    env.ack = &ack;
    coord_send(c, c->wsock, route, &env);
}

/* Protobuf form of a plan; arrays owned here, freed by s_plan_pb_free(). */
typedef struct {
    Shoal__Plan plan;
    Shoal__Topology topo;
    Shoal__CheckpointRef ckpt;
    Shoal__StageLayers *stages, **stage_ptrs;
    Shoal__ExpertShard *experts, **expert_ptrs;
    uint32_t *expert_ids;
    Shoal__Peer *peers, **peer_ptrs;
    Shoal__Cell *cells;
    Shoal__CheckpointShard *shards, **shard_ptrs;
    Shoal__Cell *shard_cells;
    Shoal__Handover *handovers, **handover_ptrs;
} s_plan_pb_t;

static void s_plan_pb_free(s_plan_pb_t *pb)
{
    free(pb->stages);
    free(pb->stage_ptrs);
    free(pb->experts);
    free(pb->expert_ptrs);
    free(pb->expert_ids);
    free(pb->peers);
    free(pb->peer_ptrs);
    free(pb->cells);
    free(pb->shards);
    free(pb->shard_ptrs);
    free(pb->shard_cells);
    free(pb->handovers);
    free(pb->handover_ptrs);
}

/* A worker's CURVE key ("" when unknown or without CURVE), borrowed. */
static char *s_worker_key(coord_t *c, const char *id)
{
    const coord_worker_t *w = id ? coord_worker_by_id(c, id) : NULL;
    return w ? (char *)w->public_key : (char *)"";
}

/* The protobuf form of hand-over h of plan p (strings borrowed from p and the workers). */
static Shoal__Handover s_handover_pb(coord_t *c, const plan_t *p, const plan_handover_t *h)
{
    Shoal__Handover ho = SHOAL__HANDOVER__INIT;
    const int to_known = h->to_rank < p->n_peers;
    ho.to_rank = h->to_rank;
    ho.from_worker = (char *)h->from_worker;
    ho.from_endpoint = (char *)h->from_endpoint;
    ho.to_endpoint = to_known ? (char *)p->peers[h->to_rank].endpoint : "";
    ho.from_public_key = s_worker_key(c, h->from_worker);
    ho.to_public_key = to_known ? s_worker_key(c, p->peers[h->to_rank].worker_id) : "";
    ho.step = p->start_step - 1;
    ho.generation = p->generation;
    return ho;
}

static Shoal__Cell s_cell_pb(plan_cell_t c)
{
    Shoal__Cell cell = SHOAL__CELL__INIT;
    cell.replica = c.replica;
    cell.stage = c.stage;
    cell.ep_rank = c.ep_rank;
    return cell;
}

static shoal_err_t s_plan_pb(coord_t *c, const plan_t *p, s_plan_pb_t *pb)
{
    memset(pb, 0, sizeof *pb);
    Shoal__Plan plan = SHOAL__PLAN__INIT;
    Shoal__Topology topo = SHOAL__TOPOLOGY__INIT;
    Shoal__CheckpointRef ck = SHOAL__CHECKPOINT_REF__INIT;
    pb->plan = plan;
    pb->topo = topo;
    pb->ckpt = ck;
    size_t n_ids = 0;
    for (uint32_t e = 0; e < p->n_experts; e++)
        n_ids += p->experts[e].count;
    pb->stages = calloc(p->pp + 1, sizeof *pb->stages);
    pb->stage_ptrs = calloc(p->pp + 1, sizeof *pb->stage_ptrs);
    pb->experts = calloc(p->n_experts + 1, sizeof *pb->experts);
    pb->expert_ptrs = calloc(p->n_experts + 1, sizeof *pb->expert_ptrs);
    pb->expert_ids = calloc(n_ids + 1, sizeof *pb->expert_ids);
    pb->peers = calloc(p->n_peers + 1, sizeof *pb->peers);
    pb->peer_ptrs = calloc(p->n_peers + 1, sizeof *pb->peer_ptrs);
    pb->cells = calloc(p->n_peers + 1, sizeof *pb->cells);
    if (!pb->stages || !pb->stage_ptrs || !pb->experts || !pb->expert_ptrs || !pb->expert_ids ||
        !pb->peers || !pb->peer_ptrs || !pb->cells) {
        s_plan_pb_free(pb);
        return shoal_fail(SHOAL_ERR_NOMEM, "plan message");
    }
    pb->plan.run_id = (char *)p->run_id;
    pb->plan.generation = p->generation;
    pb->topo.dp = p->dp;
    pb->topo.pp = p->pp;
    pb->topo.ep = p->ep;
    pb->plan.topology = &pb->topo;
    for (uint32_t s = 0; s < p->pp; s++) {
        Shoal__StageLayers st = SHOAL__STAGE_LAYERS__INIT;
        st.stage = s;
        st.first_layer = p->stages[s].first_layer;
        st.n_layers = p->stages[s].n_layers;
        st.has_embedding = p->stages[s].has_embedding;
        st.has_head = p->stages[s].has_head;
        pb->stages[s] = st;
        pb->stage_ptrs[s] = &pb->stages[s];
    }
    pb->plan.stages = pb->stage_ptrs;
    pb->plan.n_stages = p->pp;
    size_t at = 0;
    for (uint32_t e = 0; e < p->n_experts; e++) {
        Shoal__ExpertShard ex = SHOAL__EXPERT_SHARD__INIT;
        ex.ep_rank = p->experts[e].ep_rank;
        ex.experts = &pb->expert_ids[at];
        ex.n_experts = p->experts[e].count;
        for (uint32_t k = 0; k < p->experts[e].count; k++)
            pb->expert_ids[at++] = p->experts[e].first + k;
        pb->experts[e] = ex;
        pb->expert_ptrs[e] = &pb->experts[e];
    }
    pb->plan.experts = pb->expert_ptrs;
    pb->plan.n_experts = p->n_experts;
    for (uint32_t i = 0; i < p->n_peers; i++) {
        Shoal__Peer peer = SHOAL__PEER__INIT;
        pb->cells[i] = s_cell_pb(p->peers[i].cell);
        peer.worker_id = (char *)p->peers[i].worker_id;
        peer.rank = p->peers[i].rank;
        peer.cell = &pb->cells[i];
        peer.data_endpoint = (char *)p->peers[i].endpoint;
        peer.public_key = s_worker_key(c, p->peers[i].worker_id);
        pb->peers[i] = peer;
        pb->peer_ptrs[i] = &pb->peers[i];
    }
    pb->plan.peers = pb->peer_ptrs;
    pb->plan.n_peers = p->n_peers;
    pb->plan.start_step = p->start_step;
    pb->plan.source = (Shoal__StateSource)p->source;
    if (p->source == PLAN_SOURCE_CHECKPOINT) {
        pb->ckpt.step = p->ckpt_step;
        pb->ckpt.path = (char *)p->ckpt_path;
        pb->plan.checkpoint = &pb->ckpt;
    }
    pb->plan.source_rank = p->source_rank;
    if (p->n_ckpt_shards) {
        pb->shards = calloc(p->n_ckpt_shards, sizeof *pb->shards);
        pb->shard_ptrs = calloc(p->n_ckpt_shards, sizeof *pb->shard_ptrs);
        pb->shard_cells = calloc(p->n_ckpt_shards, sizeof *pb->shard_cells);
        if (!pb->shards || !pb->shard_ptrs || !pb->shard_cells) {
            s_plan_pb_free(pb);
            return shoal_fail(SHOAL_ERR_NOMEM, "plan message");
        }
        for (uint32_t i = 0; i < p->n_ckpt_shards; i++) {
            Shoal__CheckpointShard sh = SHOAL__CHECKPOINT_SHARD__INIT;
            pb->shard_cells[i] = s_cell_pb(p->ckpt_shards[i].cell);
            sh.cell = &pb->shard_cells[i];
            sh.path = (char *)p->ckpt_shards[i].path;
            pb->shards[i] = sh;
            pb->shard_ptrs[i] = &pb->shards[i];
        }
        pb->plan.ckpt_shards = pb->shard_ptrs;
        pb->plan.n_ckpt_shards = p->n_ckpt_shards;
    }
    if (p->n_handovers) {
        pb->handovers = calloc(p->n_handovers, sizeof *pb->handovers);
        pb->handover_ptrs = calloc(p->n_handovers, sizeof *pb->handover_ptrs);
        if (!pb->handovers || !pb->handover_ptrs) {
            s_plan_pb_free(pb);
            return shoal_fail(SHOAL_ERR_NOMEM, "plan message");
        }
        for (uint32_t i = 0; i < p->n_handovers; i++) {
            pb->handovers[i] = s_handover_pb(c, p, &p->handovers[i]);
            pb->handover_ptrs[i] = &pb->handovers[i];
        }
        pb->plan.handovers = pb->handover_ptrs;
        pb->plan.n_handovers = p->n_handovers;
    }
    return SHOAL_OK;
}

int coord_assignment_in_flight(const coord_t *c, const coord_run_t *r, const coord_worker_t *w)
{
    int64_t grace = 5 * (int64_t)c->cfg.heartbeat_interval_ms;
    if (grace < 1000)
        grace = 1000;
    return w && r && r->generation && w->sent_gen == r->generation &&
           clock_mono_ms() - w->sent_ms < grace;
}

/* What a push of assignments sends every member: the plan in protobuf form (with the
 * checkpoint's shard holders), built once; and, when a base table is given (the one last
 * pushed, or the one a pulling worker holds), the delta plan: the same plan with only the
 * changed peers. */
/* A plan packed once for every member it goes to (packing it per member was 3 passes over
 * 2,048 peers and a 76 KB buffer each: wire_check, size, pack). */
typedef struct {
    uint8_t *buf; /* NULL: not packed yet */
    size_t len;
    int checked; /* a whole envelope with it passed wire_check */
} s_packed_plan_t;

typedef struct coord_plan_msg {
    s_plan_pb_t pb;
    coord_shard_src_t *holders;
    int has_delta;
    uint64_t base_gen;
    Shoal__Plan delta;
    Shoal__Peer **changed;
    uint8_t digest[PLAN_DIGEST_LEN];
    s_packed_plan_t full_packed, delta_packed;
} s_plan_msg_t;

/* Protobuf's varint of v into out (room for 10); returns its length. */
static size_t s_varint(uint64_t v, uint8_t *out)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* The header (tag, length) of length-delimited field `num` of `len` bytes; returns its size. */
static size_t s_field_header(uint32_t num, size_t len, uint8_t out[20])
{
    const size_t n = s_varint((uint64_t)num << 3 | 2, out);
    return n + s_varint(len, out + n);
}

#define S_ENVELOPE_ASSIGNMENT 12 /* Envelope.assignment (proto/shoal.proto) */
#define S_ASSIGNMENT_PLAN 1      /* Assignment.plan */

/* Queues assignment envelope env (its assignment's plan is `plan`) with the plan's bytes packed
 * once (pp) spliced in: the envelope and the assignment are packed without the plan, and the
 * plan field is appended to the assignment (protobuf fields may come in any order), so every
 * member's message decodes as if packed whole. The first use of pp checks the whole envelope
 * (wire_check), as coord_send does for every message. */
static void s_send_spliced(coord_t *c, const wire_route_t *route, Shoal__Envelope *env,
                           const Shoal__Plan *plan, s_packed_plan_t *pp)
{
    Shoal__Assignment *a = env->assignment;
    env->seq = ++c->seq;
    a->plan = (Shoal__Plan *)plan;
    if (!pp->checked && wire_check(env) != SHOAL_OK) {
        log_error("send %s: %s", wire_type_name((int)env->type), shoal_errmsg());
        return;
    }
    pp->checked = 1;
    if (!pp->buf) {
        pp->len = shoal__plan__get_packed_size(plan);
        if (!(pp->buf = malloc(pp->len ? pp->len : 1))) {
            log_error("send %s: out of memory packing the plan", wire_type_name((int)env->type));
            return;
        }
        shoal__plan__pack(plan, pp->buf);
    }
    a->plan = NULL; /* packed apart */
    Shoal__Envelope bare = *env;
    bare.body_case = SHOAL__ENVELOPE__BODY__NOT_SET;
    const size_t e_len = shoal__envelope__get_packed_size(&bare);
    const size_t a_len = shoal__assignment__get_packed_size(a);
    uint8_t plan_hdr[20], asg_hdr[20];
    const size_t ph = s_field_header(S_ASSIGNMENT_PLAN, pp->len, plan_hdr);
    const size_t a_total = a_len + ph + pp->len;
    const size_t ah = s_field_header(S_ENVELOPE_ASSIGNMENT, a_total, asg_hdr);
    const size_t len = e_len + ah + a_total;
    uint8_t *buf = len <= WIRE_MAX_MSG_BYTES ? malloc(len) : NULL;
    a->plan = (Shoal__Plan *)plan;
    if (!buf) {
        log_error("send %s of %zu bytes: %s", wire_type_name((int)env->type), len,
                  len > WIRE_MAX_MSG_BYTES ? "over the message limit" : "out of memory");
        return;
    }
    uint8_t *at = buf;
    at += shoal__envelope__pack(&bare, at);
    memcpy(at, asg_hdr, ah);
    at += ah;
    a->plan = NULL;
    at += shoal__assignment__pack(a, at);
    a->plan = (Shoal__Plan *)plan;
    memcpy(at, plan_hdr, ph);
    at += ph;
    memcpy(at, pp->buf, pp->len);
    s_enqueue(c, c->wsock, route, buf, len, env);
}

static shoal_err_t s_plan_msg_build(coord_t *c, coord_run_t *r, const plan_peers_t *base,
                                    s_plan_msg_t *m)
{
    memset(m, 0, sizeof *m);
    if (s_plan_pb(c, &r->plan, &m->pb) != SHOAL_OK)
        return SHOAL_ERR_NOMEM;
    if (r->plan.source == PLAN_SOURCE_CHECKPOINT)
        coord_replicas_attach(c, r, r->plan.ckpt_step, &m->pb.plan, &m->holders);
    if (!base || !base->generation || base->generation >= r->plan.generation ||
        strcmp(base->run_id, r->id) != 0)
        return SHOAL_OK;
    const size_t n = m->pb.plan.n_peers;
    if (!(m->changed = calloc(n + 1, sizeof *m->changed)))
        return SHOAL_OK; /* full plans only */
    const size_t k = plan_peers_diff(base, m->pb.plan.peers, n, m->changed);
    if (2 * k >= n) /* no gain worth a second form */
        return SHOAL_OK;
    plan_peers_digest(m->pb.plan.peers, n, m->digest);
    m->delta = m->pb.plan;
    m->delta.peers = m->changed;
    m->delta.n_peers = k;
    m->has_delta = 1;
    m->base_gen = base->generation;
    return SHOAL_OK;
}

static void s_plan_msg_free(s_plan_msg_t *m)
{
    free(m->full_packed.buf);
    free(m->delta_packed.buf);
    coord_replicas_detach(&m->holders);
    free(m->changed);
    s_plan_pb_free(&m->pb);
}

/* Member w's assignment: the delta when allowed and w holds its base (w was last sent it, or
 * it names it: held_gen), else the full plan. Returns whether a delta went. */
static int s_send_assignment(coord_t *c, coord_run_t *r, coord_worker_t *w, s_plan_msg_t *m,
                             uint64_t held_gen, int allow_delta)
{
    const plan_peer_t *me = coord_plan_member(r, w->id);
    if (!me || !w->has_route)
        return 0;
    Shoal__Cell cell = s_cell_pb(me->cell);
    Shoal__Assignment a = SHOAL__ASSIGNMENT__INIT;
    a.run_name = r->name;
    a.cell = &cell;
    a.rank = me->rank;
    a.lease = r->lease;
    const int delta = allow_delta && m->has_delta &&
                      (w->sent_gen == m->base_gen || held_gen == m->base_gen);
    if (delta) {
        a.plan = &m->delta;
        a.spec_yaml = ""; /* the base's */
        a.base_generation = m->base_gen;
        a.n_peers = (uint32_t)m->pb.plan.n_peers;
        a.peers_digest.data = m->digest;
        a.peers_digest.len = PLAN_DIGEST_LEN;
    } else {
        a.plan = &m->pb.plan;
        a.spec_yaml = r->spec_yaml;
    }
    Shoal__Envelope env =
        s_run_envelope(r, SHOAL__MSG_TYPE__MSG_ASSIGNMENT, SHOAL__ENVELOPE__BODY_ASSIGNMENT);
    env.assignment = &a;
    s_send_spliced(c, &w->route, &env, a.plan, delta ? &m->delta_packed : &m->full_packed);
    w->sent_gen = r->plan.generation;
    w->sent_ms = clock_mono_ms();
    return delta;
}

void coord_push_forget_pulls(coord_run_t *r)
{
    if (r->pull_msg) {
        s_plan_msg_free(r->pull_msg);
        free(r->pull_msg);
        r->pull_msg = NULL;
    }
}

void coord_push_assignment(coord_t *c, coord_run_t *r, coord_worker_t *w, uint64_t held_gen)
{
    /* the answer to pulls of this generation, built (and packed) once: at 2,048 cells a build
     * is the whole peer table and, for a plan from a checkpoint, its shards' holders (~100 ms),
     * and 10,000 workers pulled after each re-plan */
    s_plan_msg_t *m = r->pull_msg;
    if (m && (r->pull_msg_gen != r->plan.generation ||
              r->pull_msg_base != r->prev_peers.generation || r->pull_msg_stale))
        coord_push_forget_pulls(r);
    if (!r->pull_msg) {
        if (!(m = malloc(sizeof *m)) ||
            s_plan_msg_build(c, r, c->cfg.plan_deltas ? &r->prev_peers : NULL, m) != SHOAL_OK) {
            log_error("assignment for %s: %s", w->id, m ? shoal_errmsg() : "out of memory");
            free(m);
            return;
        }
        r->pull_msg = m;
        r->pull_msg_gen = r->plan.generation;
        r->pull_msg_base = r->prev_peers.generation;
        r->pull_msg_stale = 0;
    }
    /* a delta on the table pushed before the current one, when the worker names it and this
     * generation's pulls of w got no delta yet (one it refused is not sent again) */
    const int allow_delta = c->cfg.plan_deltas && held_gen &&
                            held_gen == r->prev_peers.generation &&
                            w->pull_delta_gen != r->plan.generation;
    if (s_send_assignment(c, r, w, r->pull_msg, held_gen, allow_delta))
        w->pull_delta_gen = r->plan.generation;
}

void coord_push_assignments(coord_t *c, coord_run_t *r, coord_worker_t **ws, uint32_t n)
{
    s_plan_msg_t m;
    if (s_plan_msg_build(c, r, c->cfg.plan_deltas ? &r->sent_peers : NULL, &m) != SHOAL_OK) {
        log_error("run %s: assignments of generation %" PRIu64 ": %s", r->id, r->plan.generation,
                  shoal_errmsg());
        return;
    }
    for (uint32_t i = 0; i < n; i++)
        s_send_assignment(c, r, ws[i], &m, 0, 1);
    if (m.has_delta)
        log_debug("run %s: generation %" PRIu64 ": delta of %zu of %zu peers", r->id,
                  r->plan.generation, m.delta.n_peers, m.pb.plan.n_peers);
    /* the next deltas' base (none when it cannot be kept: full plans then); the table it
     * replaces is the base of pulls from members whose copy of this push is not in yet */
    if (r->sent_peers.generation != r->plan.generation) {
        plan_peers_clear(&r->prev_peers);
        r->prev_peers = r->sent_peers;
        memset(&r->sent_peers, 0, sizeof r->sent_peers);
    }
    if (plan_peers_copy(&r->sent_peers, r->id, r->plan.generation, m.pb.plan.peers,
                        m.pb.plan.n_peers) != SHOAL_OK)
        log_warn("run %s: %s: the next re-plan sends full plans", r->id, shoal_errmsg());
    s_plan_msg_free(&m);
}

void coord_push_run_control_to(coord_t *c, coord_run_t *r, coord_worker_t *w, int command,
                               const char *reason)
{
    Shoal__RunControl rc = SHOAL__RUN_CONTROL__INIT;
    rc.command = (Shoal__RunCommand)command;
    rc.reason = (char *)reason;
    Shoal__Envelope env =
        s_run_envelope(r, SHOAL__MSG_TYPE__MSG_RUN_CONTROL, SHOAL__ENVELOPE__BODY_RUN_CONTROL);
    env.run_control = &rc;
    coord_send_worker(c, w, &env);
}

void coord_push_leave_plan(coord_t *c, coord_run_t *r, coord_worker_t *w)
{
    const plan_handover_t *h = NULL;
    for (uint32_t i = 0; i < r->plan.n_handovers && !h; i++)
        if (strcmp(r->plan.handovers[i].from_worker, w->id) == 0)
            h = &r->plan.handovers[i];
    Shoal__RunControl rc = SHOAL__RUN_CONTROL__INIT;
    rc.command = SHOAL__RUN_COMMAND__RUN_CMD_STOP;
    rc.reason = h ? "not in the new plan: hand the cell over" : "not in the new plan";
    Shoal__Handover ho;
    if (h) {
        ho = s_handover_pb(c, &r->plan, h);
        rc.handover = &ho;
        log_info("run %s: %s hands the state after step %" PRId64 " to rank %u (%s)", r->id,
                 w->id, ho.step, h->to_rank, ho.to_endpoint);
    }
    Shoal__Envelope env =
        s_run_envelope(r, SHOAL__MSG_TYPE__MSG_RUN_CONTROL, SHOAL__ENVELOPE__BODY_RUN_CONTROL);
    env.run_control = &rc;
    coord_send_worker(c, w, &env);
}

void coord_push_run_control(coord_t *c, coord_run_t *r, int command, const char *reason)
{
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = coord_worker_by_id(c, r->plan.peers[i].worker_id);
        if (w)
            coord_push_run_control_to(c, r, w, command, reason);
    }
}

void coord_push_step_commit(coord_t *c, coord_run_t *r)
{
    Shoal__StepCommit sc = SHOAL__STEP_COMMIT__INIT;
    sc.step = r->committed_step;
    sc.lease = r->lease;
    Shoal__Envelope env =
        s_run_envelope(r, SHOAL__MSG_TYPE__MSG_STEP_COMMIT, SHOAL__ENVELOPE__BODY_STEP_COMMIT);
    env.step_commit = &sc;
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = coord_worker_by_id(c, r->plan.peers[i].worker_id);
        if (w)
            coord_send_worker(c, w, &env);
    }
}

void coord_push_drain(coord_t *c, coord_worker_t *w, const char *reason)
{
    Shoal__Drain d = SHOAL__DRAIN__INIT;
    d.reason = (char *)reason;
    /* like every push: the worker's run and that run's current generation ("" and 0: none) */
    coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
    Shoal__Envelope env =
        s_run_envelope(r, SHOAL__MSG_TYPE__MSG_DRAIN, SHOAL__ENVELOPE__BODY_DRAIN);
    env.drain = &d;
    coord_send_worker(c, w, &env);
}
