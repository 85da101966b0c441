/* ctl_reply.c: encode and decode of the control reply bodies named in ctl_reply.h. */
#include "ctl_reply.h"

static const char *s_str(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static int64_t s_int(const json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

json_t *ctl_run_status_encode(const ctl_run_status_t *s)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:I, s:I, s:I, s:i, s:s}", CTL_F_ID, s->id,
                     CTL_F_NAME, s->name, CTL_F_STATE, s->state, CTL_F_STEP, (json_int_t)s->step,
                     CTL_F_TOTAL_STEPS, (json_int_t)s->total_steps, CTL_F_LOSS, s->loss,
                     CTL_F_GENERATION, (json_int_t)s->generation, CTL_F_CHECKPOINT_STEP,
                     (json_int_t)s->checkpoint_step, CTL_F_LEASE, (json_int_t)s->lease,
                     CTL_F_WORKERS, s->workers, CTL_F_REASON, s->reason);
}

void ctl_run_status_decode(const json_t *obj, ctl_run_status_t *out)
{
    const json_t *loss = json_object_get(obj, CTL_F_LOSS);
    *out = (ctl_run_status_t){
        .id = s_str(obj, CTL_F_ID),
        .name = s_str(obj, CTL_F_NAME),
        .state = s_str(obj, CTL_F_STATE),
        .reason = s_str(obj, CTL_F_REASON),
        .step = s_int(obj, CTL_F_STEP),
        .total_steps = s_int(obj, CTL_F_TOTAL_STEPS),
        .generation = s_int(obj, CTL_F_GENERATION),
        .checkpoint_step = s_int(obj, CTL_F_CHECKPOINT_STEP),
        .lease = s_int(obj, CTL_F_LEASE),
        .loss = json_number_value(loss),
        .has_loss = json_is_number(loss),
        .workers = (int)s_int(obj, CTL_F_WORKERS),
    };
}

json_t *ctl_verify_encode(const ctl_verify_t *v)
{
    return json_pack("{s:s, s:I, s:b, s:I, s:s}", CTL_F_RUN, v->run, CTL_F_ENTRIES,
                     (json_int_t)v->entries, CTL_F_OK, v->ok, CTL_F_FIRST_BAD,
                     (json_int_t)v->first_bad, CTL_F_REASON, v->reason);
}

shoal_err_t ctl_verify_decode(const json_t *doc, ctl_verify_t *out)
{
    const json_t *run = json_object_get(doc, CTL_F_RUN);
    const json_t *entries = json_object_get(doc, CTL_F_ENTRIES);
    const json_t *ok = json_object_get(doc, CTL_F_OK);
    const json_t *first_bad = json_object_get(doc, CTL_F_FIRST_BAD);
    const json_t *reason = json_object_get(doc, CTL_F_REASON);
    if (!json_is_string(run) || !json_is_integer(entries) || !json_is_boolean(ok) ||
        !json_is_integer(first_bad) || !json_is_string(reason))
        return shoal_fail(SHOAL_ERR_FORMAT, "verify reply: expected {%s, %s, %s, %s, %s}",
                          CTL_F_RUN, CTL_F_ENTRIES, CTL_F_OK, CTL_F_FIRST_BAD, CTL_F_REASON);
    *out = (ctl_verify_t){
        .run = json_string_value(run),
        .reason = json_string_value(reason),
        .entries = (uint64_t)json_integer_value(entries),
        .first_bad = (uint64_t)json_integer_value(first_bad),
        .ok = json_is_true(ok),
    };
    return SHOAL_OK;
}

json_t *ctl_worker_encode(const ctl_worker_t *w)
{
    json_t *cell = w->has_cell ? json_pack("{s:i, s:i, s:i}", CTL_F_REPLICA, w->replica,
                                           CTL_F_STAGE, w->stage, CTL_F_EP_RANK, w->ep_rank)
                               : json_null();
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:s, s:s, s:I, s:f, s:f, s:s}", CTL_F_ID,
                     w->id, CTL_F_NAME, w->name, CTL_F_STATE, w->state, CTL_F_RUN, w->run,
                     CTL_F_CELL, cell, CTL_F_LAST_HEARTBEAT_MS, (json_int_t)w->last_heartbeat_ms,
                     CTL_F_HOST, w->host, CTL_F_INSTITUTION, w->institution, CTL_F_STEP,
                     (json_int_t)w->step, CTL_F_LOSS, w->loss, CTL_F_TOKENS_PER_S, w->tokens_per_s,
                     CTL_F_REASON, w->reason ? w->reason : "");
}

void ctl_worker_decode(const json_t *obj, ctl_worker_t *out)
{
    const json_t *cell = json_object_get(obj, CTL_F_CELL);
    const json_t *hb = json_object_get(obj, CTL_F_LAST_HEARTBEAT_MS);
    *out = (ctl_worker_t){
        .id = s_str(obj, CTL_F_ID),
        .name = s_str(obj, CTL_F_NAME),
        .state = s_str(obj, CTL_F_STATE),
        .run = s_str(obj, CTL_F_RUN),
        .host = s_str(obj, CTL_F_HOST),
        .institution = s_str(obj, CTL_F_INSTITUTION),
        .has_cell = json_is_object(cell),
        .replica = (int)s_int(cell, CTL_F_REPLICA),
        .stage = (int)s_int(cell, CTL_F_STAGE),
        .ep_rank = (int)s_int(cell, CTL_F_EP_RANK),
        .last_heartbeat_ms = json_is_integer(hb) ? (int64_t)json_integer_value(hb) : -1,
        .step = s_int(obj, CTL_F_STEP),
        .loss = json_number_value(json_object_get(obj, CTL_F_LOSS)),
        .tokens_per_s = json_number_value(json_object_get(obj, CTL_F_TOKENS_PER_S)),
        .reason = s_str(obj, CTL_F_REASON),
    };
}
