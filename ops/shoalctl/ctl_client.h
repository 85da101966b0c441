/* ctl_client.h: shoalctl's client of the coordinator's control endpoint: one Ctl* request per
 * call over a ZeroMQ REQ socket (common/wire framing), answered by one CtlReply, bounded by a
 * timeout so that an absent coordinator is an error, never a hang. */
#ifndef SHOAL_CTL_CLIENT_H
#define SHOAL_CTL_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "zsec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where the coordinator's control socket is when neither --control nor $SHOAL_CONTROL says:
 * the coordinator's default state dir (systemd StateDirectory=shoal/coordinator). */
#define CTL_DEFAULT_ENDPOINT "ipc:///var/lib/shoal/coordinator/control.sock"
#define CTL_DEFAULT_TIMEOUT_MS 5000

typedef struct ctl_client ctl_client_t;

/* The coordinator's answer. `message` and `json` are malloc'd and owned by the reply (never
 * NULL after a successful call: "" when the coordinator sent none); ctl_reply_fini frees them.
 * `code` is the proto ErrorCode (0 = none). */
typedef struct {
    bool ok;
    int code;
    char *message;
    char *json;
} ctl_reply_t;

void ctl_reply_fini(ctl_reply_t *r);

/* Static name of a proto ErrorCode ("not found", "invalid", ...). */
const char *ctl_code_name(int code);

/* A client for `endpoint` (copied) whose every request waits at most timeout_ms for its reply.
 * Connecting is lazy, so this only fails on out of memory or a bad argument (NULL). */
ctl_client_t *ctl_client_new(const char *endpoint, int timeout_ms);

/* Closes the socket and the ZeroMQ context; idempotent, NULLs *self_p. */
void ctl_client_destroy(ctl_client_t **self_p);

const char *ctl_client_endpoint(const ctl_client_t *c);

/* CURVE with an operator key pair and the coordinator's public key (copied), for a TCP control
 * endpoint. Without it a TCP endpoint is refused unless ctl_client_set_insecure was called or
 * the environment sets SHOAL_INSECURE=1. */
shoal_err_t ctl_client_set_curve(ctl_client_t *c, const zsec_keys_t *keys,
                                 const char *server_key);
void ctl_client_set_insecure(ctl_client_t *c);
/* Asks the coordinator to re-read its allow-list (admin keys only). */
shoal_err_t ctl_client_keys_reload(ctl_client_t *c, ctl_reply_t *reply);

/* Every request below returns SHOAL_OK when the coordinator answered (whether or not it
 * granted the request: see reply->ok), filling *reply (the caller finis it). Otherwise nothing
 * is left in *reply and:
 *   SHOAL_ERR_TIMEOUT  no answer within the timeout (message names the endpoint and the time);
 *                      the socket is reset so the client can be used again;
 *   SHOAL_ERR_IO       the endpoint is malformed or the socket failed;
 *   SHOAL_ERR_FORMAT   the answer was not a valid CtlReply/Error envelope;
 *   SHOAL_ERR_ABORTED  a signal with a handler interrupted the wait;
 *   SHOAL_ERR_INVALID  an argument is out of the wire bounds (too long, NULL). */
shoal_err_t ctl_client_submit(ctl_client_t *c, const char *spec_yaml, const char *origin,
                              ctl_reply_t *reply);
/* run: id or name, "" or NULL = every run. */
shoal_err_t ctl_client_status(ctl_client_t *c, const char *run, ctl_reply_t *reply);
shoal_err_t ctl_client_workers(ctl_client_t *c, ctl_reply_t *reply);
shoal_err_t ctl_client_drain(ctl_client_t *c, const char *worker, ctl_reply_t *reply);
shoal_err_t ctl_client_undrain(ctl_client_t *c, const char *worker, ctl_reply_t *reply);
shoal_err_t ctl_client_pause(ctl_client_t *c, const char *run, ctl_reply_t *reply);
shoal_err_t ctl_client_resume(ctl_client_t *c, const char *run, ctl_reply_t *reply);
shoal_err_t ctl_client_cancel(ctl_client_t *c, const char *run, ctl_reply_t *reply);
shoal_err_t ctl_client_verify(ctl_client_t *c, const char *run, ctl_reply_t *reply);
/* Ledger entries of `run` with seq > since, at most limit (0 = the coordinator's default). */
shoal_err_t ctl_client_events(ctl_client_t *c, const char *run, uint64_t since, unsigned limit,
                              ctl_reply_t *reply);
/* One page of `run`'s per-step history: rows with step > since, at most limit (0 = the
 * coordinator's 1000); the reply's "next" is the `since` of the next page (0: no more). */
shoal_err_t ctl_client_history(ctl_client_t *c, const char *run, uint64_t since, unsigned limit,
                               ctl_reply_t *reply);
/* The plan the coordinator would make now for `run`; dry_run = true stores nothing. */
shoal_err_t ctl_client_plan(ctl_client_t *c, const char *run, bool dry_run, ctl_reply_t *reply);
/* The observed per-expert loads of `run` and the EPLB placement for ep (0: the plan's) over
 * `hosts` (0: the plan's) with `redundant` extra slots per rank (shoalctl experts). */
shoal_err_t ctl_client_experts(ctl_client_t *c, const char *run, uint32_t ep, uint32_t hosts,
                               uint32_t redundant, ctl_reply_t *reply);
/* The committed checkpoint manifest of `run` at `step` (0 = the latest committed one). */
shoal_err_t ctl_client_manifest(ctl_client_t *c, const char *run, int64_t step,
                                ctl_reply_t *reply);

#ifdef __cplusplus
}
#endif
#endif
