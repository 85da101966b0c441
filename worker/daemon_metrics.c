/* daemon_metrics.c: the worker's Prometheus /metrics (--metrics-listen). The training thread
 * renders its status at every change (daemon_status) and publishes the text to metrics_http,
 * whose thread serves the last snapshot. Names match the coordinator's per-worker series
 * (ops/OPERATIONS.md "Metrics"). */
#include "daemon_int.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

shoal_err_t daemon_metrics_start(daemon_t *d)
{
    prom_text_init(&d->http_text);
    if (!d->cfg.metrics_listen || !d->cfg.metrics_listen[0])
        return SHOAL_OK;
    shoal_err_t rc = metrics_http_start(d->cfg.metrics_listen, &d->http);
    if (rc != SHOAL_OK)
        return shoal_fail_context(rc, "--metrics-listen");
    log_info("metrics on http://%s/metrics (port %u)", d->cfg.metrics_listen,
             metrics_http_port(d->http));
    return SHOAL_OK;
}

void daemon_metrics_stop(daemon_t *d)
{
    metrics_http_stop(&d->http);
    prom_text_fini(&d->http_text);
}

void daemon_metrics_publish(daemon_t *d)
{
    if (!d->http)
        return;
    static const char *const activities[] = {"idle",    "loading",       "training",
                                             "waiting", "checkpointing", "draining",
                                             "failed",  "state_missing"};
    prom_text_t *t = &d->http_text;
    prom_text_reset(t);
    const char *run = d->plan ? d->plan->run_id : "";
    prom_family(t, "shoal_worker_activity", "gauge", "1 for what the worker is doing now");
    for (int a = 0; a < (int)(sizeof activities / sizeof activities[0]); a++)
        prom_sample(t, "shoal_worker_activity", d->activity == (sess_activity_t)a, "worker",
                    d->name, "activity", activities[a], NULL);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"shoal_worker_step", "gauge", "last step the worker completed"},
        {"shoal_worker_loss", "gauge", "loss of the worker's last step"},
        {"shoal_worker_tokens_per_second", "gauge", "tokens per second of the last step"},
        {"shoal_worker_step_seconds", "gauge", "wall time of the worker's last step"},
        {"shoal_worker_comm_wait_ratio", "gauge",
         "fraction of the last step spent inside collectives (waiting included)"},
        {"shoal_worker_plan_generation", "gauge", "generation of the plan the worker trains"},
        {"shoal_worker_steps_total", "counter", "steps this process trained"},
        {"shoal_worker_comm_forged_frames_total", "counter",
         "data-plane frames dropped: their connection's CURVE key was not the claimed rank's"},
        {"shoal_worker_denied_handshakes_total", "counter",
         "data-plane CURVE handshakes refused: a key of no plan this worker holds"},
        {"shoal_worker_shard_denied_handshakes_total", "counter",
         "shard-server CURVE handshakes refused: a key the coordinator does not vouch for"},
    };
    double v[] = {
        (double)d->status_step,
        d->last_loss,
        d->tokens_per_s,
        d->last_step_s,
        d->last_step_s > 0 ? d->last_comm_s / d->last_step_s : 0,
        d->plan ? (double)d->plan->generation : 0,
        (double)d->steps_trained,
        (double)comm_dropped_frames(),
        (double)comm_listener_denied_handshakes(d->listener),
        (double)ckpt_server_denied_handshakes(d->shards),
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        prom_family(t, fam[f].name, fam[f].type, fam[f].help);
        prom_sample(t, fam[f].name, v[f], "worker", d->name, "run", run, NULL);
    }
    if (t->oom || metrics_http_publish(d->http, t->buf, t->len) != SHOAL_OK)
        log_debug("metrics snapshot not published (out of memory)");
}

void daemon_report_bad_frames(daemon_t *d)
{
    comm_bad_sender_t bad[COMM_BAD_SENDERS_MAX];
    int n = comm_listener_take_bad_senders(d->listener, bad, COMM_BAD_SENDERS_MAX);
    for (int i = 0; i < n && d->plan; i++) {
        log_warn("data plane: %u bad frame(s) from the connection of key %s (%s): reported to "
                 "the coordinator",
                 bad[i].frames, bad[i].key, bad[i].why);
        sess_req_t *r = sess_req_new(SESS_REQ_BAD_FRAMES, d->plan->run_id, d->plan->generation);
        if (!r)
            continue;
        _Static_assert(sizeof r->bad_key == sizeof bad[i].key, "a key fits as it is");
        memcpy(r->bad_key, bad[i].key, sizeof r->bad_key);
        r->bad_key[sizeof r->bad_key - 1] = 0;
        r->bad_frames = bad[i].frames;
        snprintf(r->detail, sizeof r->detail, "%s", bad[i].why);
        session_post(d->sess, &r);
    }
}
