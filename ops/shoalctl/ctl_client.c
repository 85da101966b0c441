/* ctl_client.c: Ctl* requests to the coordinator's control endpoint over a ZeroMQ REQ socket,
 * one envelope each way (common/wire.h), every request bounded by the client's timeout. */
#include "ctl_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zmq.h>

#include "clock.h"
#include "wire.h"
#include "zsec.h"

struct ctl_client {
    char *endpoint;
    int timeout_ms;
    void *ctx;
    void *sock; /* REQ, connected lazily; closed and reopened after a timeout */
    uint64_t seq;
    int curve; /* an operator key: keys, server_key */
    zsec_keys_t keys;
    char server_key[ZSEC_KEY_LEN + 1];
    int insecure; /* plaintext TCP allowed (ctl_client_set_insecure or SHOAL_INSECURE=1) */
};

/* What the receive handler extracts from the (borrowed) reply envelope. */
typedef struct {
    bool got;
    ctl_reply_t reply;
    shoal_err_t rc;
} s_recv_t;

void ctl_reply_fini(ctl_reply_t *r)
{
    if (!r)
        return;
    free(r->message);
    free(r->json);
    r->message = NULL;
    r->json = NULL;
}

const char *ctl_code_name(int code)
{
    switch (code) {
    case SHOAL__ERROR_CODE__ERR_NONE:
        return "none";
    case SHOAL__ERROR_CODE__ERR_BAD_MESSAGE:
        return "bad message";
    case SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE:
        return "unknown message type";
    case SHOAL__ERROR_CODE__ERR_STALE_GENERATION:
        return "stale generation";
    case SHOAL__ERROR_CODE__ERR_WRONG_RUN:
        return "wrong run";
    case SHOAL__ERROR_CODE__ERR_UNKNOWN_WORKER:
        return "unknown worker";
    case SHOAL__ERROR_CODE__ERR_NOT_FOUND:
        return "not found";
    case SHOAL__ERROR_CODE__ERR_INVALID:
        return "invalid";
    case SHOAL__ERROR_CODE__ERR_STATE:
        return "not valid in the current state";
    case SHOAL__ERROR_CODE__ERR_INTERNAL:
        return "internal error";
    case SHOAL__ERROR_CODE__ERR_FORBIDDEN:
        return "forbidden for this operator key";
    default:
        return "unknown error";
    }
}

ctl_client_t *ctl_client_new(const char *endpoint, int timeout_ms)
{
    if (!endpoint || timeout_ms <= 0)
        return NULL;
    ctl_client_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->endpoint = strdup(endpoint);
    c->ctx = zmq_ctx_new();
    if (!c->endpoint || !c->ctx) {
        ctl_client_destroy(&c);
        return NULL;
    }
    c->timeout_ms = timeout_ms;
    const char *env = getenv("SHOAL_INSECURE");
    c->insecure = env && strcmp(env, "1") == 0;
    return c;
}

static void s_close_socket(ctl_client_t *c);

shoal_err_t ctl_client_set_curve(ctl_client_t *c, const zsec_keys_t *keys,
                                 const char *server_key)
{
    if (!zsec_key_valid(server_key))
        return shoal_fail(SHOAL_ERR_INVALID, "the coordinator's public key is not a CURVE key");
    s_close_socket(c);
    c->keys = *keys;
    snprintf(c->server_key, sizeof c->server_key, "%s", server_key);
    c->curve = 1;
    return SHOAL_OK;
}

void ctl_client_set_insecure(ctl_client_t *c)
{
    c->insecure = 1;
}

static void s_close_socket(ctl_client_t *c)
{
    if (c->sock) {
        zmq_close(c->sock);
        c->sock = NULL;
    }
}

void ctl_client_destroy(ctl_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ctl_client_t *c = *self_p;
    s_close_socket(c);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c->endpoint);
    free(c);
    *self_p = NULL;
}

const char *ctl_client_endpoint(const ctl_client_t *c)
{
    return c->endpoint;
}

static shoal_err_t s_connect(ctl_client_t *c)
{
    if (c->sock)
        return SHOAL_OK;
    c->sock = zmq_socket(c->ctx, ZMQ_REQ);
    if (!c->sock)
        return shoal_fail(SHOAL_ERR_IO, "control socket: %s", zmq_strerror(zmq_errno()));
    shoal_err_t rc = wire_socket_limits(c->sock);
    if (rc != SHOAL_OK)
        goto out_close;
    if (c->curve) {
        if ((rc = zsec_client(c->sock, &c->keys, c->server_key)) != SHOAL_OK)
            goto out_close;
    } else if (strncmp(c->endpoint, "tcp://", 6) == 0 && !c->insecure) {
        rc = shoal_fail(SHOAL_ERR_INVALID,
                        "control endpoint %s is TCP: give an operator key (--keys DIR or "
                        "$SHOAL_KEYS: key.secret, coordinator.public) or --insecure",
                        c->endpoint);
        goto out_close;
    }
    if (zmq_connect(c->sock, c->endpoint) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "control endpoint '%s': %s", c->endpoint,
                        zmq_strerror(zmq_errno()));
        goto out_close;
    }
    return SHOAL_OK;
out_close:
    s_close_socket(c);
    return rc;
}

static char *s_dup(const char *s)
{
    return strdup(s ? s : "");
}

static void s_on_reply(const Shoal__Envelope *env, void *ctx)
{
    s_recv_t *r = ctx;
    /* No seq check: a REQ socket only ever delivers the reply to its last request. */
    if (env->type == SHOAL__MSG_TYPE__MSG_CTL_REPLY) {
        const Shoal__CtlReply *cr = env->ctl_reply;
        r->reply.ok = cr->ok;
        r->reply.code = cr->code;
        r->reply.message = s_dup(cr->message);
        r->reply.json = s_dup(cr->json);
    } else if (env->type == SHOAL__MSG_TYPE__MSG_ERROR) {
        /* The coordinator rejected the envelope itself (bad message, unknown type). */
        r->reply.ok = false;
        r->reply.code = env->error->code;
        r->reply.message = s_dup(env->error->message);
        r->reply.json = s_dup("");
    } else {
        r->rc = shoal_fail(SHOAL_ERR_FORMAT, "unexpected %s message in answer to a request",
                           wire_type_name(env->type));
        return;
    }
    if (!r->reply.message || !r->reply.json) {
        ctl_reply_fini(&r->reply);
        r->rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory reading the reply");
        return;
    }
    r->got = true;
    r->rc = SHOAL_OK;
}

/* Explains a timeout; for ipc:// says whether the socket file is there at all. */
static shoal_err_t s_timeout_error(const ctl_client_t *c)
{
    double secs = c->timeout_ms / 1000.0;
    if (strncmp(c->endpoint, "ipc://", 6) == 0) {
        struct stat st;
        if (stat(c->endpoint + 6, &st) != 0)
            return shoal_fail(SHOAL_ERR_TIMEOUT,
                              "coordinator unreachable at %s: no answer within %.1f s (%s: %s; "
                              "is shoal-coordinator running? set --control or $SHOAL_CONTROL)",
                              c->endpoint, secs, c->endpoint + 6, strerror(errno));
    }
    return shoal_fail(SHOAL_ERR_TIMEOUT,
                      "coordinator unreachable at %s: no answer within %.1f s (is "
                      "shoal-coordinator running? set --control or $SHOAL_CONTROL)",
                      c->endpoint, secs);
}

/* The envelope of a request: `type`, its body (which the caller points at) `body_case`. */
static Shoal__Envelope s_envelope(Shoal__MsgType type, Shoal__Envelope__BodyCase body_case)
{
    Shoal__Envelope env;
    wire_envelope_init(&env, type, "", "ctl", 0, 0);
    env.body_case = body_case;
    return env;
}

/* Sends `env` (header filled here) and waits for its reply until the deadline; returns `checked`
 * (the check of the request's arguments) without sending when it is not SHOAL_OK. */
static shoal_err_t s_request(ctl_client_t *c, Shoal__Envelope *env, shoal_err_t checked,
                             ctl_reply_t *reply)
{
    if (checked != SHOAL_OK)
        return checked;
    memset(reply, 0, sizeof(*reply));
    shoal_err_t rc = s_connect(c);
    if (rc != SHOAL_OK)
        return rc;
    int64_t deadline = clock_mono_ms() + c->timeout_ms;
    uint64_t seq = ++c->seq;
    env->run_id = (char *)"";
    env->sender = (char *)"ctl";
    env->generation = 0;
    env->seq = seq;

    int to = c->timeout_ms;
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &to, sizeof(to));
    rc = wire_send(c->sock, NULL, env, 0);
    if (rc == SHOAL_ERR_TIMEOUT) {
        s_close_socket(c);
        return s_timeout_error(c);
    }
    if (rc != SHOAL_OK) {
        /* A REQ socket that failed to send is still usable, but reset it to be sure. */
        s_close_socket(c);
        return shoal_fail_context(rc, "sending to %s", c->endpoint);
    }
    for (;;) {
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t item = {.socket = c->sock, .events = ZMQ_POLLIN};
        int n = zmq_poll(&item, 1, (long)left);
        if (n < 0) {
            /* Only a handled signal interrupts (shoalctl handles just the ones that mean
             * "stop"): give up on this request rather than make Ctrl-C wait for the timeout. */
            if (zmq_errno() == EINTR) {
                s_close_socket(c);
                return shoal_fail(SHOAL_ERR_ABORTED, "interrupted while waiting for %s",
                                  c->endpoint);
            }
            rc = shoal_fail(SHOAL_ERR_IO, "waiting for %s: %s", c->endpoint,
                            zmq_strerror(zmq_errno()));
            s_close_socket(c);
            return rc;
        }
        if (n == 0)
            break;
        s_recv_t r = {.rc = SHOAL_ERR_FORMAT};
        wire_route_t route;
        rc = wire_recv(c->sock, ZMQ_DONTWAIT, &route, s_on_reply, &r);
        if (rc == SHOAL_ERR_TIMEOUT)
            continue;
        if (rc == SHOAL_OK)
            rc = r.rc;
        if (rc == SHOAL_OK && r.got) {
            *reply = r.reply;
            return SHOAL_OK;
        }
        /* A REQ socket takes exactly one reply per request: after a bad one, start afresh. */
        s_close_socket(c);
        return shoal_fail_context(rc, "reading the answer of %s", c->endpoint);
    }
    /* REQ is stuck waiting for this reply: a fresh socket lets the client be used again. */
    s_close_socket(c);
    return s_timeout_error(c);
}

static shoal_err_t s_check_text(const char *what, const char *s, size_t max)
{
    if (!s)
        return shoal_fail(SHOAL_ERR_INVALID, "%s: missing", what);
    if (strlen(s) > max)
        return shoal_fail(SHOAL_ERR_INVALID, "%s: longer than %zu bytes", what, max);
    return SHOAL_OK;
}

shoal_err_t ctl_client_submit(ctl_client_t *c, const char *spec_yaml, const char *origin,
                              ctl_reply_t *reply)
{
    shoal_err_t rc = s_check_text("run spec", spec_yaml, WIRE_MAX_SPEC_LEN);
    if (rc == SHOAL_OK)
        rc = s_check_text("run spec name", origin ? origin : "", WIRE_MAX_TEXT_LEN);
    Shoal__CtlSubmit body = SHOAL__CTL_SUBMIT__INIT;
    body.spec_yaml = (char *)spec_yaml;
    body.origin = (char *)(origin ? origin : "");
    Shoal__Envelope env =
        s_envelope(SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, SHOAL__ENVELOPE__BODY_CTL_SUBMIT);
    env.ctl_submit = &body;
    return s_request(c, &env, rc, reply);
}

/* A run argument: an id or a name (WIRE_MAX_ID_LEN + 64: names are longer than ids). */
static shoal_err_t s_check_run(const char *run)
{
    return s_check_text("run", run, WIRE_MAX_ID_LEN + 64);
}

shoal_err_t ctl_client_status(ctl_client_t *c, const char *run, ctl_reply_t *reply)
{
    Shoal__CtlStatus body = SHOAL__CTL_STATUS__INIT;
    body.run = (char *)(run ? run : "");
    Shoal__Envelope env =
        s_envelope(SHOAL__MSG_TYPE__MSG_CTL_STATUS, SHOAL__ENVELOPE__BODY_CTL_STATUS);
    env.ctl_status = &body;
    return s_request(c, &env, s_check_run(body.run), reply);
}

/* A request without arguments (its body is the empty CtlWorkers). */
static shoal_err_t s_bare_request(ctl_client_t *c, Shoal__MsgType type, ctl_reply_t *reply)
{
    Shoal__CtlWorkers body = SHOAL__CTL_WORKERS__INIT;
    Shoal__Envelope env = s_envelope(type, SHOAL__ENVELOPE__BODY_CTL_WORKERS);
    env.ctl_workers = &body;
    return s_request(c, &env, SHOAL_OK, reply);
}

shoal_err_t ctl_client_workers(ctl_client_t *c, ctl_reply_t *reply)
{
    return s_bare_request(c, SHOAL__MSG_TYPE__MSG_CTL_WORKERS, reply);
}

shoal_err_t ctl_client_keys_reload(ctl_client_t *c, ctl_reply_t *reply)
{
    return s_bare_request(c, SHOAL__MSG_TYPE__MSG_CTL_KEYS_RELOAD, reply);
}

static shoal_err_t s_worker_request(ctl_client_t *c, Shoal__MsgType type, const char *worker,
                                    ctl_reply_t *reply)
{
    Shoal__CtlWorker body = SHOAL__CTL_WORKER__INIT;
    body.worker = (char *)worker;
    Shoal__Envelope env = s_envelope(type, SHOAL__ENVELOPE__BODY_CTL_WORKER);
    env.ctl_worker = &body;
    return s_request(c, &env, s_check_text("worker", worker, WIRE_MAX_ID_LEN), reply);
}

shoal_err_t ctl_client_drain(ctl_client_t *c, const char *worker, ctl_reply_t *reply)
{
    return s_worker_request(c, SHOAL__MSG_TYPE__MSG_CTL_DRAIN, worker, reply);
}

shoal_err_t ctl_client_undrain(ctl_client_t *c, const char *worker, ctl_reply_t *reply)
{
    return s_worker_request(c, SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN, worker, reply);
}

static shoal_err_t s_run_request(ctl_client_t *c, Shoal__MsgType type, const char *run,
                                 ctl_reply_t *reply)
{
    Shoal__CtlRun body = SHOAL__CTL_RUN__INIT;
    body.run = (char *)run;
    Shoal__Envelope env = s_envelope(type, SHOAL__ENVELOPE__BODY_CTL_RUN);
    env.ctl_run = &body;
    return s_request(c, &env, s_check_run(run), reply);
}

shoal_err_t ctl_client_pause(ctl_client_t *c, const char *run, ctl_reply_t *reply)
{
    return s_run_request(c, SHOAL__MSG_TYPE__MSG_CTL_PAUSE, run, reply);
}

shoal_err_t ctl_client_resume(ctl_client_t *c, const char *run, ctl_reply_t *reply)
{
    return s_run_request(c, SHOAL__MSG_TYPE__MSG_CTL_RESUME, run, reply);
}

shoal_err_t ctl_client_cancel(ctl_client_t *c, const char *run, ctl_reply_t *reply)
{
    return s_run_request(c, SHOAL__MSG_TYPE__MSG_CTL_CANCEL, run, reply);
}

shoal_err_t ctl_client_verify(ctl_client_t *c, const char *run, ctl_reply_t *reply)
{
    return s_run_request(c, SHOAL__MSG_TYPE__MSG_CTL_VERIFY, run, reply);
}

/* A paged request (body CtlEvents): events (since = a ledger seq), history (since = a step). */
static shoal_err_t s_page_request(ctl_client_t *c, Shoal__MsgType type, const char *run,
                                  uint64_t since, unsigned limit, ctl_reply_t *reply)
{
    Shoal__CtlEvents body = SHOAL__CTL_EVENTS__INIT;
    body.run = (char *)run;
    body.since = since;
    body.limit = limit;
    Shoal__Envelope env = s_envelope(type, SHOAL__ENVELOPE__BODY_CTL_EVENTS);
    env.ctl_events = &body;
    return s_request(c, &env, s_check_run(run), reply);
}

shoal_err_t ctl_client_events(ctl_client_t *c, const char *run, uint64_t since, unsigned limit,
                              ctl_reply_t *reply)
{
    return s_page_request(c, SHOAL__MSG_TYPE__MSG_CTL_EVENTS, run, since, limit, reply);
}

shoal_err_t ctl_client_history(ctl_client_t *c, const char *run, uint64_t since, unsigned limit,
                               ctl_reply_t *reply)
{
    return s_page_request(c, SHOAL__MSG_TYPE__MSG_CTL_HISTORY, run, since, limit, reply);
}

shoal_err_t ctl_client_plan(ctl_client_t *c, const char *run, bool dry_run, ctl_reply_t *reply)
{
    Shoal__CtlPlan body = SHOAL__CTL_PLAN__INIT;
    body.run = (char *)run;
    body.dry_run = dry_run;
    Shoal__Envelope env = s_envelope(SHOAL__MSG_TYPE__MSG_CTL_PLAN, SHOAL__ENVELOPE__BODY_CTL_PLAN);
    env.ctl_plan = &body;
    return s_request(c, &env, s_check_run(run), reply);
}

shoal_err_t ctl_client_experts(ctl_client_t *c, const char *run, uint32_t ep, uint32_t hosts,
                               uint32_t redundant, ctl_reply_t *reply)
{
    Shoal__CtlExperts body = SHOAL__CTL_EXPERTS__INIT;
    body.run = (char *)run;
    body.ep = ep;
    body.hosts = hosts;
    body.redundant = redundant;
    Shoal__Envelope env =
        s_envelope(SHOAL__MSG_TYPE__MSG_CTL_EXPERTS, SHOAL__ENVELOPE__BODY_CTL_EXPERTS);
    env.ctl_experts = &body;
    return s_request(c, &env, s_check_run(run), reply);
}

shoal_err_t ctl_client_manifest(ctl_client_t *c, const char *run, int64_t step,
                                ctl_reply_t *reply)
{
    Shoal__CtlManifest body = SHOAL__CTL_MANIFEST__INIT;
    body.run = (char *)run;
    body.step = step;
    Shoal__Envelope env =
        s_envelope(SHOAL__MSG_TYPE__MSG_CTL_MANIFEST, SHOAL__ENVELOPE__BODY_CTL_MANIFEST);
    env.ctl_manifest = &body;
    return s_request(c, &env, s_check_run(run), reply);
}
