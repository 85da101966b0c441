/* coord_metrics.c: the coordinator's Prometheus /metrics (--metrics-listen). The loop renders a
 * snapshot of its state every COORD_METRICS_EVERY_MS from the cron and publishes the text to
 * metrics_http, whose thread serves the last snapshot: the HTTP thread never reads coord_t.
 * Names and labels: ops/OPERATIONS.md "Metrics". */
#include "coord_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "log.h"

#define COORD_METRICS_EVERY_MS 500

shoal_err_t coord_metrics_start(coord_t *c)
{
    prom_text_init(&c->metrics_text);
    if (!c->cfg.metrics_listen[0])
        return SHOAL_OK;
    shoal_err_t rc = metrics_http_start(c->cfg.metrics_listen, &c->metrics_http);
    if (rc != SHOAL_OK)
        return rc;
    log_info("metrics on http://%s/metrics (port %u)", c->cfg.metrics_listen,
             metrics_http_port(c->metrics_http));
    coord_metrics_publish(c);
    return SHOAL_OK;
}

void coord_metrics_stop(coord_t *c)
{
    metrics_http_stop(&c->metrics_http);
    prom_text_fini(&c->metrics_text);
}

void coord_metrics_on_step_commit(coord_run_t *r)
{
    coord_step_time_t *st = &r->step_times[r->committed_step % COORD_STEP_TIMES];
    st->step = r->committed_step;
    st->wall_ms = clock_wall_ms();
}

/* When r committed `step` (wall ms), or 0 when that is no longer (or never was) known. */
static int64_t s_step_commit_ms(const coord_run_t *r, int64_t step)
{
    const coord_step_time_t *st = &r->step_times[step % COORD_STEP_TIMES];
    return st->step == step ? st->wall_ms : 0;
}

/* The newest committed checkpoint of r, read from its manifest. */
typedef struct {
    int found;
    int64_t committed_ms; /* wall */
    uint64_t bytes;
    int replicas; /* copies beyond the first that every shard has on live workers */
} s_ckpt_t;

static int s_live_holder(coord_t *c, const char *id)
{
    coord_worker_t *w = id ? coord_worker_by_id(c, id) : NULL;
    return w && coord_worker_is_live(w->state);
}

static s_ckpt_t s_checkpoint(coord_t *c, const coord_run_t *r)
{
    s_ckpt_t out = {0};
    if (r->checkpoint_step <= 0)
        return out;
    char key[160], *val = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "c/%s/%020" PRId64, r->id, r->checkpoint_step);
    if (store_get(c->st, STORE_CF_MANIFESTS, key, &val, &len) != SHOAL_OK)
        return out;
    json_t *m = json_loadb(val, len, 0, NULL);
    free(val);
    if (!m)
        return out;
    out.found = 1;
    out.committed_ms = json_integer_value(json_object_get(m, "committed_ms"));
    const json_t *shards = json_object_get(m, CTL_F_SHARDS);
    int least = shards && json_array_size(shards) ? INT32_MAX : 0;
    for (size_t i = 0; i < json_array_size(shards); i++) {
        const json_t *sh = json_array_get(shards, i);
        const json_t *files = json_object_get(sh, "files");
        for (size_t f = 0; f < json_array_size(files); f++)
            out.bytes +=
                (uint64_t)json_integer_value(json_object_get(json_array_get(files, f), "size"));
        /* live holders: the listed holders, else (before any copy) the writer alone */
        const json_t *holders = json_object_get(sh, CTL_F_HOLDERS);
        int live = 0;
        if (json_array_size(holders))
            for (size_t h = 0; h < json_array_size(holders); h++)
                live += s_live_holder(
                    c, json_string_value(json_object_get(json_array_get(holders, h), "worker")));
        else
            live = s_live_holder(c, json_string_value(json_object_get(sh, "worker")));
        if (live < least)
            least = live;
    }
    out.replicas = least > 0 ? least - 1 : 0;
    json_decref(m);
    return out;
}

static void s_render_runs(coord_t *c, prom_text_t *t)
{
    prom_family(t, "shoal_run_state", "gauge",
                "1 for the run's state (pending, running, paused, done, failed, cancelled)");
    for (int i = 0; i < c->n_runs; i++)
        for (int s = 0; s < RUN__COUNT; s++)
            prom_sample(t, "shoal_run_state", c->runs[i]->state == (run_state_t)s, "run",
                        c->runs[i]->name, "state", coord_run_state_name((run_state_t)s), NULL);
    prom_family(t, "shoal_run_unplaced", "gauge",
                "1 while the run is paused waiting for workers (no plan fits the live ones; "
                "`shoalctl status` says why), 0 otherwise (an operator's pause included)");
    for (int i = 0; i < c->n_runs; i++)
        prom_sample(t, "shoal_run_unplaced", c->runs[i]->state == RUN_PAUSED && c->runs[i]->unplaced,
                    "run", c->runs[i]->name, NULL);
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"shoal_run_step", "gauge", "last step every cell of the plan committed"},
        {"shoal_run_target_steps", "gauge", "steps the run spec asks for"},
        {"shoal_run_loss", "gauge", "mean training loss of the last committed step"},
        {"shoal_run_tokens_per_second", "gauge",
         "training throughput of the last committed step: its tokens (the global batch) over "
         "the slowest rank's step time (the history row's figure)"},
        {"shoal_run_plan_generation", "gauge", "generation of the run's current plan"},
        {"shoal_run_plan_workers", "gauge", "cells (workers) in the run's current plan"},
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        prom_family(t, fam[f].name, fam[f].type, fam[f].help);
        for (int i = 0; i < c->n_runs; i++) {
            coord_run_t *r = c->runs[i];
            double v[] = {
                (double)r->committed_step, (double)r->total_steps, r->loss,
                coord_history_tokens_per_s(c, r),  (double)r->generation,  (double)r->plan.n_peers};
            prom_sample(t, fam[f].name, v[f], "run", r->name, NULL);
        }
    }
    /* checkpoints: one manifest read per run that has one */
    s_ckpt_t *ck = calloc((size_t)c->n_runs + 1, sizeof *ck);
    if (!ck) {
        t->oom = 1;
        return;
    }
    for (int i = 0; i < c->n_runs; i++)
        ck[i] = s_checkpoint(c, c->runs[i]);
    int64_t now = clock_wall_ms();
    static const struct {
        const char *name, *help;
    } cfam[] = {
        {"shoal_checkpoint_step", "step of the newest committed checkpoint"},
        {"shoal_checkpoint_age_seconds", "seconds since the newest checkpoint was committed"},
        {"shoal_checkpoint_bytes", "bytes of the newest checkpoint (all shards)"},
        {"shoal_checkpoint_duration_seconds",
         "from the step's commit to its checkpoint's commit (snapshot, write, fsync, digests, "
         "reports)"},
        {"shoal_checkpoint_replicas",
         "copies beyond the first that every shard of the newest checkpoint has on live "
         "workers"},
    };
    for (size_t f = 0; f < sizeof cfam / sizeof cfam[0]; f++) {
        prom_family(t, cfam[f].name, "gauge", cfam[f].help);
        for (int i = 0; i < c->n_runs; i++) {
            const coord_run_t *r = c->runs[i];
            if (!ck[i].found)
                continue;
            int64_t step_ms = s_step_commit_ms(r, r->checkpoint_step);
            double v;
            switch (f) {
            case 0:
                v = (double)r->checkpoint_step;
                break;
            case 1:
                v = (double)(now - ck[i].committed_ms) / 1000.0;
                break;
            case 2:
                v = (double)ck[i].bytes;
                break;
            case 3:
                if (!step_ms) /* committed before this coordinator started */
                    continue;
                v = (double)(ck[i].committed_ms - step_ms) / 1000.0;
                if (v < 0)
                    v = 0;
                break;
            default:
                v = ck[i].replicas;
                break;
            }
            prom_sample(t, cfam[f].name, v, "run", r->name, NULL);
        }
    }
    free(ck);
}

static void s_render_workers(coord_t *c, prom_text_t *t)
{
    int64_t now = clock_mono_ms();
    prom_family(t, "shoal_worker_info", "gauge",
                "1 per known worker, with its id, host, institution and version");
    for (int i = 0; i < c->n_workers; i++) {
        const coord_worker_t *w = c->workers[i];
        prom_sample(t, "shoal_worker_info", 1, "worker", w->name, "id", w->id, "host", w->host,
                    "institution", w->institution, "version", w->version, NULL);
    }
    prom_family(t, "shoal_worker_state", "gauge",
                "1 for the worker's state (joining, active, draining, drained, dead, left)");
    for (int i = 0; i < c->n_workers; i++)
        for (int s = 0; s < WORKER__COUNT; s++)
            prom_sample(t, "shoal_worker_state", c->workers[i]->state == (worker_state_t)s,
                        "worker", c->workers[i]->name, "state",
                        coord_worker_state_name((worker_state_t)s), NULL);
    static const struct {
        const char *name, *help;
    } fam[] = {
        {"shoal_worker_heartbeat_age_seconds",
         "seconds since the coordinator last heard from the worker (live workers)"},
        {"shoal_worker_step", "last step the worker reported"},
        {"shoal_worker_loss", "loss the worker last reported"},
        {"shoal_worker_tokens_per_second", "tokens per second the worker last reported"},
        {"shoal_worker_step_seconds", "wall time of the worker's last step"},
        {"shoal_worker_comm_wait_ratio",
         "fraction of the worker's last step spent inside collectives (waiting included)"},
        {"shoal_worker_quarantined", "1 when the worker is quarantined"},
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        prom_family(t, fam[f].name, "gauge", fam[f].help);
        for (int i = 0; i < c->n_workers; i++) {
            const coord_worker_t *w = c->workers[i];
            int live = coord_worker_is_live(w->state);
            double v;
            switch (f) {
            case 0:
                if (!live || !w->last_seen_ms)
                    continue;
                v = (double)(now - w->last_seen_ms) / 1000.0;
                break;
            case 1:
                v = (double)w->step;
                break;
            case 2:
                v = w->loss;
                break;
            case 3:
                v = w->tokens_per_s;
                break;
            case 4:
                v = w->step_seconds;
                break;
            case 5:
                v = w->comm_wait_ratio;
                break;
            default:
                v = w->quarantine[0] != 0;
                break;
            }
            prom_sample(t, fam[f].name, v, "worker", w->name, NULL);
        }
    }
}

static void s_render_coordinator(coord_t *c, prom_text_t *t)
{
    int by_state[WORKER__COUNT] = {0}, quarantined = 0;
    for (int i = 0; i < c->n_workers; i++) {
        if ((unsigned)c->workers[i]->state < WORKER__COUNT)
            by_state[c->workers[i]->state]++;
        quarantined += c->workers[i]->quarantine[0] != 0;
    }
    prom_family(t, "shoal_workers", "gauge", "known workers by state");
    for (int s = 0; s < WORKER__COUNT; s++)
        prom_sample(t, "shoal_workers", by_state[s], "state",
                    coord_worker_state_name((worker_state_t)s), NULL);
    prom_family(t, "shoal_workers_quarantined", "gauge", "workers held out of plans by quarantine");
    prom_sample(t, "shoal_workers_quarantined", quarantined, NULL);
    prom_family(t, "shoal_messages_handled_total", "counter",
                "messages from workers and shoalctl handled since the coordinator started");
    prom_sample(t, "shoal_messages_handled_total", (double)c->handled, NULL);
    prom_family(t, "shoal_messages_dropped_total", "counter",
                "messages dropped (stale generation, outside the lease, malformed, unknown "
                "sender) since the coordinator started");
    prom_sample(t, "shoal_messages_dropped_total", (double)c->dropped, NULL);
    prom_family(t, "shoal_relay_batches_total", "counter",
                "batches of relayed workers' messages from host relays (shoal-worker relay)");
    prom_sample(t, "shoal_relay_batches_total", (double)c->relay_batches, NULL);
    coord_guard_counters_t g;
    coord_guard_counters(c, &g);
    prom_family(t, "shoal_messages_rate_limited_total", "counter",
                "worker messages dropped over the per-connection rate limit");
    prom_sample(t, "shoal_messages_rate_limited_total", (double)g.rate_dropped, NULL);
    prom_family(t, "shoal_messages_bad_total", "counter",
                "malformed or out-of-plan worker messages (each a strike towards quarantine)");
    prom_sample(t, "shoal_messages_bad_total", (double)g.bad_messages, NULL);
    prom_family(t, "shoal_quarantines_total", "counter",
                "workers quarantined since the coordinator started");
    prom_sample(t, "shoal_quarantines_total", (double)g.quarantines, NULL);
    prom_family(t, "shoal_state_writes_total", "counter",
                "synced state writes (RocksDB batches) since the coordinator started: a burst of "
                "registrations, heartbeats, step and shard reports shares one");
    prom_sample(t, "shoal_state_writes_total", (double)c->state_writes, NULL);
    prom_family(t, "shoal_plan_generation", "gauge", "highest plan generation of any run");
    prom_sample(t, "shoal_plan_generation", (double)c->last_generation, NULL);
}

void coord_metrics_render(coord_t *c, prom_text_t *t)
{
    prom_text_reset(t);
    s_render_coordinator(c, t);
    s_render_runs(c, t);
    s_render_workers(c, t);
    coord_experts_render(c, t);
}

void coord_metrics_publish(coord_t *c)
{
    if (!c->metrics_http)
        return;
    coord_metrics_render(c, &c->metrics_text);
    if (c->metrics_text.oom) {
        log_warn("metrics: out of memory rendering the snapshot; the previous one stays");
        return;
    }
    if (metrics_http_publish(c->metrics_http, c->metrics_text.buf, c->metrics_text.len) != SHOAL_OK)
        log_warn("metrics: %s", shoal_errmsg());
}

void coord_metrics_cron(coord_t *c, int64_t now_mono_ms)
{
    if (!c->metrics_http || now_mono_ms < c->next_metrics_ms)
        return;
    c->next_metrics_ms = now_mono_ms + COORD_METRICS_EVERY_MS;
    coord_metrics_publish(c);
}
