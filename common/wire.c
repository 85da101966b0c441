/* wire.c: Envelope framing over ZeroMQ with bounds and type/body checks (see wire.h). Every
 * unpacked envelope is freed in the function that unpacked it. */
#include "wire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "numparse.h"
#include "zsec.h"

typedef struct {
    int type;
    Shoal__Envelope__BodyCase body;
    const char *name;
} wire_type_info_t;

/* The one table of message types: number, body it carries, name in logs. */
static const wire_type_info_t s_types[] = {
    {SHOAL__MSG_TYPE__MSG_REGISTER, SHOAL__ENVELOPE__BODY_REG, "register"},
    {SHOAL__MSG_TYPE__MSG_REGISTER_REPLY, SHOAL__ENVELOPE__BODY_REG_REPLY, "register_reply"},
    {SHOAL__MSG_TYPE__MSG_ASSIGNMENT, SHOAL__ENVELOPE__BODY_ASSIGNMENT, "assignment"},
    {SHOAL__MSG_TYPE__MSG_HEARTBEAT, SHOAL__ENVELOPE__BODY_HEARTBEAT, "heartbeat"},
    {SHOAL__MSG_TYPE__MSG_STEP_REPORT, SHOAL__ENVELOPE__BODY_STEP_REPORT, "step_report"},
    {SHOAL__MSG_TYPE__MSG_CKPT_SHARD, SHOAL__ENVELOPE__BODY_CKPT_SHARD, "ckpt_shard"},
    {SHOAL__MSG_TYPE__MSG_LEAVE, SHOAL__ENVELOPE__BODY_LEAVE, "leave"},
    {SHOAL__MSG_TYPE__MSG_DRAIN, SHOAL__ENVELOPE__BODY_DRAIN, "drain"},
    {SHOAL__MSG_TYPE__MSG_ACK, SHOAL__ENVELOPE__BODY_ACK, "ack"},
    {SHOAL__MSG_TYPE__MSG_ERROR, SHOAL__ENVELOPE__BODY_ERROR, "error"},
    {SHOAL__MSG_TYPE__MSG_STEP_COMMIT, SHOAL__ENVELOPE__BODY_STEP_COMMIT, "step_commit"},
    {SHOAL__MSG_TYPE__MSG_GET_ASSIGNMENT, SHOAL__ENVELOPE__BODY_GET_ASSIGNMENT, "get_assignment"},
    {SHOAL__MSG_TYPE__MSG_COMM_ID, SHOAL__ENVELOPE__BODY_COMM_ID, "comm_id"},
    {SHOAL__MSG_TYPE__MSG_RUN_CONTROL, SHOAL__ENVELOPE__BODY_RUN_CONTROL, "run_control"},
    {SHOAL__MSG_TYPE__MSG_REPLICATE, SHOAL__ENVELOPE__BODY_REPLICATE, "replicate"},
    {SHOAL__MSG_TYPE__MSG_SHARD_HELD, SHOAL__ENVELOPE__BODY_CKPT_SHARD, "shard_held"},
    {SHOAL__MSG_TYPE__MSG_SHARD_CORRUPT, SHOAL__ENVELOPE__BODY_CKPT_SHARD, "shard_corrupt"},
    {SHOAL__MSG_TYPE__MSG_KEY_QUERY, SHOAL__ENVELOPE__BODY_KEY_QUERY, "key_query"},
    {SHOAL__MSG_TYPE__MSG_KEY_ANSWER, SHOAL__ENVELOPE__BODY_KEY_ANSWER, "key_answer"},
    {SHOAL__MSG_TYPE__MSG_RELAY_CLOSED, SHOAL__ENVELOPE__BODY_RELAY_CLOSED, "relay_closed"},
    {SHOAL__MSG_TYPE__MSG_RELAY_BATCH, SHOAL__ENVELOPE__BODY_RELAY_BATCH, "relay_batch"},
    {SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, SHOAL__ENVELOPE__BODY_CTL_SUBMIT, "ctl_submit"},
    {SHOAL__MSG_TYPE__MSG_CTL_STATUS, SHOAL__ENVELOPE__BODY_CTL_STATUS, "ctl_status"},
    {SHOAL__MSG_TYPE__MSG_CTL_WORKERS, SHOAL__ENVELOPE__BODY_CTL_WORKERS, "ctl_workers"},
    {SHOAL__MSG_TYPE__MSG_CTL_KEYS_RELOAD, SHOAL__ENVELOPE__BODY_CTL_WORKERS, "ctl_keys_reload"},
    {SHOAL__MSG_TYPE__MSG_CTL_DRAIN, SHOAL__ENVELOPE__BODY_CTL_WORKER, "ctl_drain"},
    {SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN, SHOAL__ENVELOPE__BODY_CTL_WORKER, "ctl_undrain"},
    {SHOAL__MSG_TYPE__MSG_CTL_PAUSE, SHOAL__ENVELOPE__BODY_CTL_RUN, "ctl_pause"},
    {SHOAL__MSG_TYPE__MSG_CTL_RESUME, SHOAL__ENVELOPE__BODY_CTL_RUN, "ctl_resume"},
    {SHOAL__MSG_TYPE__MSG_CTL_CANCEL, SHOAL__ENVELOPE__BODY_CTL_RUN, "ctl_cancel"},
    {SHOAL__MSG_TYPE__MSG_CTL_EVENTS, SHOAL__ENVELOPE__BODY_CTL_EVENTS, "ctl_events"},
    {SHOAL__MSG_TYPE__MSG_CTL_HISTORY, SHOAL__ENVELOPE__BODY_CTL_EVENTS, "ctl_history"},
    {SHOAL__MSG_TYPE__MSG_CTL_VERIFY, SHOAL__ENVELOPE__BODY_CTL_RUN, "ctl_verify"},
    {SHOAL__MSG_TYPE__MSG_CTL_PLAN, SHOAL__ENVELOPE__BODY_CTL_PLAN, "ctl_plan"},
    {SHOAL__MSG_TYPE__MSG_CTL_MANIFEST, SHOAL__ENVELOPE__BODY_CTL_MANIFEST, "ctl_manifest"},
    {SHOAL__MSG_TYPE__MSG_CTL_EXPERTS, SHOAL__ENVELOPE__BODY_CTL_EXPERTS, "ctl_experts"},
    {SHOAL__MSG_TYPE__MSG_CTL_REPLY, SHOAL__ENVELOPE__BODY_CTL_REPLY, "ctl_reply"},
};

static const wire_type_info_t *s_type_info(int type)
{
    for (size_t i = 0; i < sizeof s_types / sizeof s_types[0]; i++)
        if (s_types[i].type == type)
            return &s_types[i];
    return NULL;
}

const char *wire_type_name(int type)
{
    const wire_type_info_t *t = s_type_info(type);
    return t ? t->name : "unknown";
}

Shoal__Envelope__BodyCase wire_body_for_type(int type)
{
    const wire_type_info_t *t = s_type_info(type);
    return t ? t->body : SHOAL__ENVELOPE__BODY__NOT_SET;
}

void wire_envelope_init(Shoal__Envelope *env, Shoal__MsgType type, const char *run_id,
                        const char *sender, uint64_t generation, uint64_t seq)
{
    Shoal__Envelope init = SHOAL__ENVELOPE__INIT;
    *env = init;
    env->type = type;
    env->run_id = (char *)(run_id ? run_id : "");
    env->sender = (char *)(sender ? sender : "");
    env->generation = generation;
    env->seq = seq;
}

/* ---- validation ------------------------------------------------------------------------ */

static shoal_err_t s_str(const char *s, size_t max, const char *field)
{
    if (!s)
        return shoal_fail(SHOAL_ERR_FORMAT, "field %s missing", field);
    size_t n = strnlen(s, max + 1);
    if (n > max)
        return shoal_fail(SHOAL_ERR_FORMAT, "field %s longer than %zu bytes", field, max);
    return SHOAL_OK;
}

static shoal_err_t s_count(size_t n, const char *field)
{
    if (n > WIRE_MAX_REPEATED)
        return shoal_fail(SHOAL_ERR_FORMAT, "field %s has %zu elements (max %d)", field, n,
                          WIRE_MAX_REPEATED);
    return SHOAL_OK;
}

#define WIRE_CHECK_GOTO(call, rc, label) SHOAL_CHECK_GOTO(call, rc, label)

static shoal_err_t s_check_handover(const Shoal__Handover *h, const char *where)
{
    shoal_err_t rc = s_str(h->from_worker, WIRE_MAX_ID_LEN, where);
    if (rc == SHOAL_OK)
        rc = s_str(h->from_endpoint, WIRE_MAX_TEXT_LEN, where);
    if (rc == SHOAL_OK)
        rc = s_str(h->to_endpoint, WIRE_MAX_TEXT_LEN, where);
    return rc;
}

/* A checkpoint shard's file digests and holders (plan.ckpt_shards, replicate.copies). */
static shoal_err_t s_check_files(size_t n, Shoal__FileDigest *const *f, const char *where)
{
    shoal_err_t rc = s_count(n, where);
    for (size_t i = 0; rc == SHOAL_OK && i < n; i++)
        if ((rc = s_str(f[i]->name, WIRE_MAX_TEXT_LEN, where)) == SHOAL_OK)
            rc = s_str(f[i]->sha256, 64, where);
    return rc;
}

static shoal_err_t s_check_sources(size_t n, Shoal__ShardSource *const *src, const char *where)
{
    shoal_err_t rc = s_count(n, where);
    for (size_t i = 0; rc == SHOAL_OK && i < n; i++)
        if ((rc = s_str(src[i]->worker_id, WIRE_MAX_ID_LEN, where)) == SHOAL_OK &&
            (rc = s_str(src[i]->endpoint, WIRE_MAX_TEXT_LEN, where)) == SHOAL_OK &&
            (rc = s_str(src[i]->public_key, 40, where)) == SHOAL_OK)
            rc = s_str(src[i]->path, WIRE_MAX_TEXT_LEN, where);
    return rc;
}

/* Per-expert loads: bounded layers and experts (the coordinator checks them against the model). */
static shoal_err_t s_check_expert_loads(const Shoal__StepReport *sr)
{
    if (sr->n_expert_loads > WIRE_MAX_EXPERT_LAYERS)
        return shoal_fail(SHOAL_ERR_FORMAT, "field step_report.expert_loads has %zu layers (max %d)",
                          sr->n_expert_loads, WIRE_MAX_EXPERT_LAYERS);
    for (size_t i = 0; i < sr->n_expert_loads; i++) {
        if (!sr->expert_loads[i])
            return shoal_fail(SHOAL_ERR_FORMAT, "field step_report.expert_loads missing");
        if (sr->expert_loads[i]->n_counts > WIRE_MAX_EXPERTS)
            return shoal_fail(SHOAL_ERR_FORMAT, "field step_report.expert_loads.counts has %zu "
                              "experts (max %d)", sr->expert_loads[i]->n_counts, WIRE_MAX_EXPERTS);
    }
    return SHOAL_OK;
}

/* Heartbeat.bad_frames: a few entries, each a key and a short reason. */
static shoal_err_t s_check_bad_frames(const Shoal__Heartbeat *hb)
{
    if (hb->n_bad_frames > WIRE_MAX_BAD_SENDERS)
        return shoal_fail(SHOAL_ERR_FORMAT, "field heartbeat.bad_frames has %zu entries (max %d)",
                          hb->n_bad_frames, WIRE_MAX_BAD_SENDERS);
    shoal_err_t rc = SHOAL_OK;
    for (size_t i = 0; i < hb->n_bad_frames && rc == SHOAL_OK; i++) {
        if (!hb->bad_frames[i])
            return shoal_fail(SHOAL_ERR_FORMAT, "field heartbeat.bad_frames missing");
        rc = s_str(hb->bad_frames[i]->public_key, 40, "heartbeat.bad_frames.public_key");
        if (rc == SHOAL_OK)
            rc = s_str(hb->bad_frames[i]->why, 200, "heartbeat.bad_frames.why");
    }
    return rc;
}

static shoal_err_t s_check_plan(const Shoal__Plan *p)
{
    shoal_err_t rc = SHOAL_OK;
    WIRE_CHECK_GOTO(s_str(p->run_id, WIRE_MAX_ID_LEN, "plan.run_id"), rc, out);
    WIRE_CHECK_GOTO(s_count(p->n_stages, "plan.stages"), rc, out);
    WIRE_CHECK_GOTO(s_count(p->n_experts, "plan.experts"), rc, out);
    WIRE_CHECK_GOTO(s_count(p->n_peers, "plan.peers"), rc, out);
    for (size_t i = 0; i < p->n_experts; i++)
        WIRE_CHECK_GOTO(s_count(p->experts[i]->n_experts, "plan.experts.experts"), rc, out);
    for (size_t i = 0; i < p->n_peers; i++) {
        WIRE_CHECK_GOTO(s_str(p->peers[i]->worker_id, WIRE_MAX_ID_LEN, "plan.peers.worker_id"), rc,
                        out);
        WIRE_CHECK_GOTO(
            s_str(p->peers[i]->data_endpoint, WIRE_MAX_TEXT_LEN, "plan.peers.data_endpoint"), rc,
            out);
        WIRE_CHECK_GOTO(s_str(p->peers[i]->public_key, 40, "plan.peers.public_key"), rc, out);
    }
    if (p->checkpoint)
        WIRE_CHECK_GOTO(s_str(p->checkpoint->path, WIRE_MAX_TEXT_LEN, "plan.checkpoint.path"), rc,
                        out);
    WIRE_CHECK_GOTO(s_count(p->n_ckpt_shards, "plan.ckpt_shards"), rc, out);
    for (size_t i = 0; i < p->n_ckpt_shards; i++) {
        const Shoal__CheckpointShard *k = p->ckpt_shards[i];
        WIRE_CHECK_GOTO(s_str(k->path, WIRE_MAX_TEXT_LEN, "plan.ckpt_shards.path"), rc, out);
        WIRE_CHECK_GOTO(s_check_files(k->n_files, k->files, "plan.ckpt_shards.files"), rc, out);
        WIRE_CHECK_GOTO(s_check_sources(k->n_sources, k->sources, "plan.ckpt_shards.sources"), rc,
                        out);
    }
    WIRE_CHECK_GOTO(s_count(p->n_handovers, "plan.handovers"), rc, out);
    for (size_t i = 0; i < p->n_handovers; i++)
        WIRE_CHECK_GOTO(s_check_handover(p->handovers[i], "plan.handovers"), rc, out);
out:
    return rc;
}

static shoal_err_t s_check_body(const Shoal__Envelope *env)
{
    shoal_err_t rc = SHOAL_OK;
    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_REG: {
        const Shoal__Register *r = env->reg;
        WIRE_CHECK_GOTO(s_str(r->name, WIRE_MAX_ID_LEN, "register.name"), rc, out);
        WIRE_CHECK_GOTO(s_str(r->host, WIRE_MAX_TEXT_LEN, "register.host"), rc, out);
        WIRE_CHECK_GOTO(s_count(r->n_devices, "register.devices"), rc, out);
        for (size_t i = 0; i < r->n_devices; i++)
            WIRE_CHECK_GOTO(s_str(r->devices[i], WIRE_MAX_TEXT_LEN, "register.devices"), rc, out);
        WIRE_CHECK_GOTO(s_str(r->institution, WIRE_MAX_TEXT_LEN, "register.institution"), rc, out);
        WIRE_CHECK_GOTO(s_str(r->version, WIRE_MAX_TEXT_LEN, "register.version"), rc, out);
        WIRE_CHECK_GOTO(s_str(r->data_endpoint, WIRE_MAX_TEXT_LEN, "register.data_endpoint"), rc,
                        out);
        if (r->prev_id_case_case == SHOAL__REGISTER__PREV_ID_CASE_PREV_ID)
            WIRE_CHECK_GOTO(s_str(r->prev_id, WIRE_MAX_ID_LEN, "register.prev_id"), rc, out);
        WIRE_CHECK_GOTO(s_str(r->shard_endpoint, WIRE_MAX_TEXT_LEN, "register.shard_endpoint"), rc,
                        out);
        break;
    }
    case SHOAL__ENVELOPE__BODY_REG_REPLY:
        WIRE_CHECK_GOTO(s_str(env->reg_reply->worker_id, WIRE_MAX_ID_LEN, "reg_reply.worker_id"),
                        rc, out);
        WIRE_CHECK_GOTO(s_str(env->reg_reply->reason, WIRE_MAX_TEXT_LEN, "reg_reply.reason"), rc,
                        out);
        break;
    case SHOAL__ENVELOPE__BODY_ASSIGNMENT: {
        const Shoal__Assignment *a = env->assignment;
        if (!a->plan)
            return shoal_fail(SHOAL_ERR_FORMAT, "assignment without plan");
        WIRE_CHECK_GOTO(s_check_plan(a->plan), rc, out);
        WIRE_CHECK_GOTO(s_str(a->run_name, WIRE_MAX_ID_LEN, "assignment.run_name"), rc, out);
        WIRE_CHECK_GOTO(s_str(a->spec_yaml, WIRE_MAX_SPEC_LEN, "assignment.spec_yaml"), rc, out);
        /* a plan delta (plan_delta.h): the full table's count and its 32-byte digest */
        WIRE_CHECK_GOTO(s_count(a->n_peers, "assignment.n_peers"), rc, out);
        if (a->peers_digest.len != 0 && a->peers_digest.len != 32)
            return shoal_fail(SHOAL_ERR_FORMAT, "assignment.peers_digest of %zu bytes",
                              a->peers_digest.len);
        if (!a->cell)
            return shoal_fail(SHOAL_ERR_FORMAT, "assignment without cell");
        break;
    }
    case SHOAL__ENVELOPE__BODY_HEARTBEAT:
        WIRE_CHECK_GOTO(s_str(env->heartbeat->detail, WIRE_MAX_TEXT_LEN, "heartbeat.detail"), rc,
                        out);
        WIRE_CHECK_GOTO(s_check_bad_frames(env->heartbeat), rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_STEP_REPORT:
        WIRE_CHECK_GOTO(s_str(env->step_report->reject_detail, WIRE_MAX_TEXT_LEN,
                              "step_report.reject_detail"),
                        rc, out);
        WIRE_CHECK_GOTO(s_check_expert_loads(env->step_report), rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_CKPT_SHARD: {
        const Shoal__CheckpointShardReport *c = env->ckpt_shard;
        WIRE_CHECK_GOTO(s_str(c->path, WIRE_MAX_TEXT_LEN, "ckpt_shard.path"), rc, out);
        WIRE_CHECK_GOTO(s_str(c->holder, WIRE_MAX_ID_LEN, "ckpt_shard.holder"), rc, out);
        WIRE_CHECK_GOTO(s_str(c->replica_of, WIRE_MAX_ID_LEN, "ckpt_shard.replica_of"), rc, out);
        WIRE_CHECK_GOTO(s_check_files(c->n_files, c->files, "ckpt_shard.files"), rc, out);
        break;
    }
    case SHOAL__ENVELOPE__BODY_REPLICATE: {
        const Shoal__Replicate *rp = env->replicate;
        WIRE_CHECK_GOTO(s_count(rp->n_copies, "replicate.copies"), rc, out);
        for (size_t i = 0; i < rp->n_copies; i++) {
            const Shoal__ReplicaCopy *k = rp->copies[i];
            if (!k->cell)
                return shoal_fail(SHOAL_ERR_FORMAT, "replicate.copies without cell");
            WIRE_CHECK_GOTO(s_str(k->writer, WIRE_MAX_ID_LEN, "replicate.copies.writer"), rc, out);
            WIRE_CHECK_GOTO(s_check_files(k->n_files, k->files, "replicate.copies.files"), rc, out);
            WIRE_CHECK_GOTO(s_check_sources(k->n_sources, k->sources, "replicate.copies.sources"),
                            rc, out);
        }
        break;
    }
    case SHOAL__ENVELOPE__BODY_KEY_QUERY:
        WIRE_CHECK_GOTO(s_str(env->key_query->public_key, ZSEC_KEY_LEN, "key_query.public_key"),
                        rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_KEY_ANSWER:
        WIRE_CHECK_GOTO(s_str(env->key_answer->public_key, ZSEC_KEY_LEN, "key_answer.public_key"),
                        rc, out);
        WIRE_CHECK_GOTO(s_str(env->key_answer->worker_id, WIRE_MAX_ID_LEN, "key_answer.worker_id"),
                        rc, out);
        WIRE_CHECK_GOTO(s_str(env->key_answer->reason, WIRE_MAX_TEXT_LEN, "key_answer.reason"), rc,
                        out);
        break;
    case SHOAL__ENVELOPE__BODY_LEAVE:
        WIRE_CHECK_GOTO(s_str(env->leave->reason, WIRE_MAX_TEXT_LEN, "leave.reason"), rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_RELAY_BATCH:
        WIRE_CHECK_GOTO(s_count(env->relay_batch->n_items, "relay_batch.items"), rc, out);
        for (size_t i = 0; i < env->relay_batch->n_items; i++)
            if (!env->relay_batch->items[i]) {
                rc = shoal_fail(SHOAL_ERR_FORMAT, "relay_batch.items[%zu] missing", i);
                goto out;
            }
        break;
    case SHOAL__ENVELOPE__BODY_RELAY_CLOSED:
        WIRE_CHECK_GOTO(s_str(env->relay_closed->reason, WIRE_MAX_TEXT_LEN, "relay_closed.reason"),
                        rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_DRAIN:
        WIRE_CHECK_GOTO(s_str(env->drain->reason, WIRE_MAX_TEXT_LEN, "drain.reason"), rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_ERROR:
        WIRE_CHECK_GOTO(s_str(env->error->message, WIRE_MAX_TEXT_LEN, "error.message"), rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_COMM_ID: {
        WIRE_CHECK_GOTO(s_str(env->comm_id->group, WIRE_MAX_ID_LEN, "comm_id.group"), rc, out);
        uint64_t gen;
        uint32_t tag;
        WIRE_CHECK_GOTO(wire_comm_group_parse(env->comm_id->group, &gen, &tag), rc, out);
        if (env->comm_id->id.len == 0 || env->comm_id->id.len > WIRE_MAX_COMM_ID)
            return shoal_fail(SHOAL_ERR_FORMAT, "comm_id.id of %zu bytes (1 .. %d)",
                              env->comm_id->id.len, WIRE_MAX_COMM_ID);
        break;
    }
    case SHOAL__ENVELOPE__BODY_RUN_CONTROL:
        WIRE_CHECK_GOTO(s_str(env->run_control->reason, WIRE_MAX_TEXT_LEN, "run_control.reason"),
                        rc, out);
        if (env->run_control->handover)
            WIRE_CHECK_GOTO(s_check_handover(env->run_control->handover, "run_control.handover"),
                            rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_CTL_SUBMIT:
        WIRE_CHECK_GOTO(
            s_str(env->ctl_submit->spec_yaml, WIRE_MAX_SPEC_LEN, "ctl_submit.spec_yaml"), rc, out);
        WIRE_CHECK_GOTO(s_str(env->ctl_submit->origin, WIRE_MAX_TEXT_LEN, "ctl_submit.origin"), rc,
                        out);
        break;
    case SHOAL__ENVELOPE__BODY_CTL_STATUS:
        WIRE_CHECK_GOTO(s_str(env->ctl_status->run, WIRE_MAX_ID_LEN + 64, "ctl_status.run"), rc,
                        out);
        break;
    case SHOAL__ENVELOPE__BODY_CTL_WORKER:
        WIRE_CHECK_GOTO(s_str(env->ctl_worker->worker, WIRE_MAX_ID_LEN, "ctl_worker.worker"), rc,
                        out);
        break;
    case SHOAL__ENVELOPE__BODY_CTL_RUN:
        WIRE_CHECK_GOTO(s_str(env->ctl_run->run, WIRE_MAX_ID_LEN + 64, "ctl_run.run"), rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_CTL_EVENTS:
        WIRE_CHECK_GOTO(s_str(env->ctl_events->run, WIRE_MAX_ID_LEN + 64, "ctl_events.run"), rc,
                        out);
        break;
    case SHOAL__ENVELOPE__BODY_CTL_PLAN:
        WIRE_CHECK_GOTO(s_str(env->ctl_plan->run, WIRE_MAX_ID_LEN + 64, "ctl_plan.run"), rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_CTL_EXPERTS:
        WIRE_CHECK_GOTO(s_str(env->ctl_experts->run, WIRE_MAX_ID_LEN + 64, "ctl_experts.run"), rc,
                        out);
        break;
    case SHOAL__ENVELOPE__BODY_CTL_MANIFEST:
        WIRE_CHECK_GOTO(s_str(env->ctl_manifest->run, WIRE_MAX_ID_LEN + 64, "ctl_manifest.run"),
                        rc, out);
        break;
    case SHOAL__ENVELOPE__BODY_CTL_REPLY:
        WIRE_CHECK_GOTO(s_str(env->ctl_reply->message, WIRE_MAX_TEXT_LEN, "ctl_reply.message"), rc,
                        out);
        WIRE_CHECK_GOTO(s_str(env->ctl_reply->json, WIRE_MAX_MSG_BYTES, "ctl_reply.json"), rc, out);
        break;
    default: /* bodies with numbers and enums only */
        break;
    }
out:
    return rc;
}

shoal_err_t wire_check(const Shoal__Envelope *env)
{
    const wire_type_info_t *t = s_type_info((int)env->type);
    if (!t)
        return shoal_fail(SHOAL_ERR_INVALID, "unknown message type %d", (int)env->type);
    if (env->body_case != t->body)
        return shoal_fail(SHOAL_ERR_FORMAT, "message type %s carries body %d, expected %d", t->name,
                          (int)env->body_case, (int)t->body);
    /* a set oneof case always has a body after unpack; a hand-built envelope may not */
    if (!env->reg)
        return shoal_fail(SHOAL_ERR_FORMAT, "message type %s without body", t->name);
    shoal_err_t rc = s_str(env->run_id, WIRE_MAX_ID_LEN, "run_id");
    if (rc == SHOAL_OK)
        rc = s_str(env->sender, WIRE_MAX_ID_LEN, "sender");
    if (rc == SHOAL_OK)
        rc = s_check_body(env);
    if (rc != SHOAL_OK)
        return shoal_fail_context(rc, "%s", t->name);
    return SHOAL_OK;
}

/* ---- pack / send ------------------------------------------------------------------------ */

shoal_err_t wire_pack(const Shoal__Envelope *env, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    shoal_err_t rc = wire_check(env);
    if (rc != SHOAL_OK)
        return rc;
    size_t n = shoal__envelope__get_packed_size(env);
    if (n > WIRE_MAX_MSG_BYTES)
        return shoal_fail(SHOAL_ERR_INVALID, "%s message of %zu bytes exceeds the %u-byte limit",
                          wire_type_name((int)env->type), n, WIRE_MAX_MSG_BYTES);
    uint8_t *b = malloc(n ? n : 1);
    if (!b)
        return shoal_fail(SHOAL_ERR_NOMEM, "packing a %zu-byte message", n);
    shoal__envelope__pack(env, b);
    *buf = b;
    *len = n;
    return SHOAL_OK;
}

static void s_free_buf(void *data, void *hint)
{
    (void)hint;
    free(data);
}

static shoal_err_t s_errno_fail(int err, const char *what)
{
    if (err == EAGAIN)
        return shoal_fail(SHOAL_ERR_TIMEOUT, "%s: would block", what);
    return shoal_fail(SHOAL_ERR_IO, "%s: %s", what, zmq_strerror(err));
}

shoal_err_t wire_send(void *sock, const wire_route_t *route, const Shoal__Envelope *env, int flags)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    shoal_err_t rc = wire_pack(env, &buf, &len);
    if (rc != SHOAL_OK)
        return rc;
    return wire_send_packed(sock, route, &buf, len, flags);
}

shoal_err_t wire_send_packed(void *sock, const wire_route_t *route, uint8_t **buf_p, size_t len,
                             int flags)
{
    uint8_t *buf = *buf_p;
    *buf_p = NULL;
    shoal_err_t rc;
    int nroute = route ? route->n : 0;
    for (int i = 0; i < nroute; i++) {
        if (zmq_send(sock, route->data[i], route->len[i], flags | ZMQ_SNDMORE) < 0) {
            /* the first frame failing sends nothing; later ones cannot fail with EAGAIN */
            rc = s_errno_fail(errno, "sending route frame");
            goto out_free_buf;
        }
    }
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, buf, len, s_free_buf, NULL) != 0) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "zmq_msg_init_data");
        goto out_free_buf;
    }
    buf = NULL; /* owned by msg now */
    if (zmq_msg_send(&msg, sock, flags) < 0) {
        rc = s_errno_fail(errno, "sending message");
        zmq_msg_close(&msg);
        goto out_free_buf;
    }
    rc = SHOAL_OK;
out_free_buf:
    free(buf);
    return rc;
}

/* ---- receive / decode ------------------------------------------------------------------- */

/* Whether every field protobuf-c kept as unknown, in m and the messages it holds, has a valid
 * field number (1 .. 2^29 - 1). protobuf-c accepts a non-canonical tag varint for field 0 (e.g.
 * 82 00) and keeps it, then packs it canonically (02 00), which it refuses: found by fuzz_wire.
 * A field number 0 is malformed protobuf, so such a message is refused here. */
static int s_field_numbers_valid(const ProtobufCMessage *m, int depth)
{
    if (depth > 32)
        return 0;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0 || m->unknown_fields[i].tag > 0x1fffffffu)
            return 0;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) { /* members share one slot: the set one */
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *sub = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (sub[k] && !s_field_numbers_valid(sub[k], depth + 1))
                    return 0;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + f->offset);
            if (sub && !s_field_numbers_valid(sub, depth + 1))
                return 0;
        }
    }
    return 1;
}

shoal_err_t wire_decode(const void *buf, size_t len, wire_handler_fn fn, void *ctx)
{
    if (len == 0)
        return shoal_fail(SHOAL_ERR_FORMAT, "empty message");
    if (len > WIRE_MAX_MSG_BYTES)
        return shoal_fail(SHOAL_ERR_FORMAT, "message of %zu bytes exceeds the %u-byte limit", len,
                          WIRE_MAX_MSG_BYTES);
    Shoal__Envelope *env = shoal__envelope__unpack(NULL, len, buf);
    if (!env)
        return shoal_fail(SHOAL_ERR_FORMAT, "undecodable envelope (%zu bytes)", len);
    shoal_err_t rc = SHOAL_OK;
    if (!s_field_numbers_valid(&env->base, 0))
        rc = shoal_fail(SHOAL_ERR_FORMAT, "envelope holds an invalid field number (0)");
    else
        rc = wire_check(env);
    if (rc == SHOAL_OK && fn)
        fn(env, ctx);
    shoal__envelope__free_unpacked(env, NULL);
    return rc;
}

shoal_err_t wire_recv(void *sock, int flags, wire_route_t *route, wire_handler_fn fn, void *ctx)
{
    shoal_err_t rc = SHOAL_OK;
    int bad_route = 0, nframes = 0;
    route->n = 0;
    route->fd = -1;
    route->user[0] = '\0';
    zmq_msg_t part;
    for (;;) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, nframes == 0 ? flags : 0) < 0) {
            rc = s_errno_fail(errno, "receiving message");
            route->n = 0;
            goto out_close_part;
        }
        nframes++;
        if (!zmq_msg_more(&part))
            break; /* the payload */
        size_t n = zmq_msg_size(&part);
        if (route->n < WIRE_MAX_ROUTE_FRAMES && n <= WIRE_MAX_ROUTE_BYTES) {
            memcpy(route->data[route->n], zmq_msg_data(&part), n);
            route->len[route->n] = n;
            route->n++;
        } else {
            bad_route = 1; /* keep reading: the rest of the message must be consumed */
        }
        zmq_msg_close(&part);
    }
    route->fd = zmq_msg_get(&part, ZMQ_SRCFD);
    const char *user = zmq_msg_gets(&part, "User-Id");
    snprintf(route->user, sizeof route->user, "%s", user ? user : "");
    if (bad_route)
        rc = shoal_fail(SHOAL_ERR_FORMAT, "message of %d frames or an oversized route frame",
                        nframes);
    else
        rc = wire_decode(zmq_msg_data(&part), zmq_msg_size(&part), fn, ctx);
out_close_part:
    zmq_msg_close(&part);
    return rc;
}

shoal_err_t wire_socket_limits(void *sock)
{
    int64_t max = (int64_t)WIRE_MAX_MSG_BYTES;
    int linger = 0;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0 ||
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) != 0)
        return shoal_fail(SHOAL_ERR_IO, "setting socket limits: %s", zmq_strerror(errno));
    return SHOAL_OK;
}

void wire_comm_group_format(char *buf, size_t cap, uint64_t generation, uint32_t tag)
{
    snprintf(buf, cap, "%" PRIu64 "/%" PRIu32, generation, tag);
}

shoal_err_t wire_comm_group_parse(const char *group, uint64_t *generation, uint32_t *tag)
{
    const char *slash = group ? strchr(group, '/') : NULL;
    char gen_text[WIRE_COMM_GROUP_MAX];
    uint64_t t;
    if (!slash || (size_t)(slash - group) >= sizeof gen_text ||
        strlen(group) >= WIRE_COMM_GROUP_MAX)
        return shoal_fail(SHOAL_ERR_FORMAT, "comm_id.group '%.64s': expected GENERATION/TAG",
                          group ? group : "");
    memcpy(gen_text, group, (size_t)(slash - group));
    gen_text[slash - group] = 0;
    if (numparse_u64(gen_text, UINT64_MAX, generation) != SHOAL_OK ||
        numparse_u64(slash + 1, UINT32_MAX, &t) != SHOAL_OK)
        return shoal_fail(SHOAL_ERR_FORMAT, "comm_id.group '%s': expected GENERATION/TAG in "
                          "decimal", group);
    *tag = (uint32_t)t;
    return SHOAL_OK;
}

int wire_route_same(const wire_route_t *a, const wire_route_t *b)
{
    if (a->n != b->n)
        return 0;
    for (int i = 0; i < a->n; i++)
        if (a->len[i] != b->len[i] || memcmp(a->data[i], b->data[i], a->len[i]) != 0)
            return 0;
    return 1;
}

size_t wire_route_key(const wire_route_t *route, unsigned char *key, size_t cap)
{
    size_t at = 0;
    for (int i = 0; route && i < route->n && at < cap; i++) {
        key[at++] = (unsigned char)route->len[i];
        size_t n = route->len[i] < cap - at ? route->len[i] : cap - at;
        memcpy(key + at, route->data[i], n);
        at += n;
    }
    return at;
}

void wire_relay_slot_put(unsigned char out[WIRE_RELAY_SLOT_LEN], uint32_t slot)
{
    out[0] = (unsigned char)(slot >> 24);
    out[1] = (unsigned char)(slot >> 16);
    out[2] = (unsigned char)(slot >> 8);
    out[3] = (unsigned char)slot;
}

int wire_relay_slot_get(const void *frame, size_t len, uint32_t *slot)
{
    if (len != WIRE_RELAY_SLOT_LEN)
        return 0;
    const unsigned char *b = frame;
    *slot = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    return 1;
}

int wire_monitor_event(void *mon, uint16_t *event, uint32_t *fd)
{
    zmq_msg_t ev, ep;
    zmq_msg_init(&ev);
    if (zmq_msg_recv(&ev, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&ev);
        return 0;
    }
    *event = 0;
    *fd = 0;
    if (zmq_msg_size(&ev) >= 6) {
        memcpy(event, zmq_msg_data(&ev), 2);
        memcpy(fd, (const char *)zmq_msg_data(&ev) + 2, 4);
    }
    const int more = zmq_msg_more(&ev);
    zmq_msg_close(&ev);
    if (more) { /* the endpoint's frame */
        zmq_msg_init(&ep);
        (void)zmq_msg_recv(&ep, mon, ZMQ_DONTWAIT);
        zmq_msg_close(&ep);
    }
    return 1;
}
