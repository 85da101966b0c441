/* daemon_replicas.c: the worker's part of checkpoint replication (checkpoint/ckpt_repl.h): its
 * shard server (serving its state dir and its runs' checkpoint roots), the copies the
 * coordinator orders (made on the replicator thread, confirmed once verified), and where a plan
 * that restores from a checkpoint finds each shard: the writer's dir when this host has it and
 * it verifies, else this worker's copy, fetched from a live holder when missing or corrupt.
 * Copies live in <state dir>/runs/<run>/replicas/shard-<replica>-<stage>-<ep rank>/step-<n>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "daemon_int.h"
#include "fsutil.h"
#include "log.h"
#include "name.h"

#define S_FETCH_TIMEOUT_MS 3000 /* a holder silent this long is passed over */
#define S_DEFAULT_KEEP 3        /* copies kept per shard when the run's spec is not known */

shoal_err_t daemon_replicas_start(daemon_t *d, const char *data_endpoint, char *out, size_t cap)
{
    /* the interface of the data endpoint, an ephemeral port */
    char host[256] = "127.0.0.1";
    const char *h = strncmp(data_endpoint, "tcp://", 6) == 0 ? data_endpoint + 6 : NULL;
    const char *colon = h ? strrchr(h, ':') : NULL;
    if (colon && (size_t)(colon - h) < sizeof host) {
        memcpy(host, h, (size_t)(colon - h));
        host[colon - h] = 0;
    }
    const int loopback = strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0;
    shoal_err_t rc = ckpt_server_new(loopback ? "tcp://127.0.0.1:0" : "tcp://*:0", host,
                                     d->state.path, &d->shards);
    if (rc != SHOAL_OK)
        return rc;
    if (!(d->repl = ckpt_replicator_new(S_FETCH_TIMEOUT_MS)))
        return shoal_fail(SHOAL_ERR_IO, "checkpoint replicator not started");
    snprintf(out, cap, "%s", ckpt_server_endpoint(d->shards));
    log_info("checkpoint shard server on %s%s", out,
             d->vouch ? " (CURVE: admits the keys the coordinator vouches for)" : "");
    return SHOAL_OK;
}

void daemon_replicas_stop(daemon_t *d)
{
    ckpt_replicator_destroy(&d->repl);
    ckpt_server_destroy(&d->shards);
}

/* This worker's copy of a shard of `run`: "<state>/runs/<run>/replicas/shard-r-s-e/step-n". */
static shoal_err_t s_copy_dir(const daemon_t *d, const char *run, const sess_shard_t *k,
                              int64_t step, char *out, size_t cap, char *parent, size_t pcap)
{
    if (!name_ok(run))
        return shoal_fail(SHOAL_ERR_INVALID, "run id '%s' is not a safe directory name", run);
    shoal_err_t rc = fsutil_path(parent, pcap, "%s/runs/%s/replicas/shard-%u-%u-%u", d->state.path,
                                 run, k->replica, k->stage, k->ep_rank);
    char name[64];
    if (rc == SHOAL_OK && (rc = ckpt_step_dir_name(step, name, sizeof name)) == SHOAL_OK)
        rc = fsutil_path(out, cap, "%s/%s", parent, name);
    return rc;
}

void daemon_replicas_order(daemon_t *d, const sess_event_t *ev)
{
    if (!d->repl)
        return;
    const int keep = d->tr && strcmp(d->tr_run, ev->run_id) == 0 && d->spec->checkpoint_keep > 0
                         ? d->spec->checkpoint_keep
                         : S_DEFAULT_KEEP;
    ckpt_repl_job_t *job = malloc(sizeof *job);
    if (!job) {
        log_error("replication of checkpoint %lld: out of memory", (long long)ev->step);
        return;
    }
    for (int i = 0; i < ev->n_copies; i++) {
        const sess_shard_t *k = &ev->copies[i];
        memset(job, 0, sizeof *job);
        if (s_copy_dir(d, ev->run_id, k, ev->step, job->dest, sizeof job->dest, job->prune_dir,
                       sizeof job->prune_dir) != SHOAL_OK) {
            log_warn("replication of %s's shard refused: %s", k->writer, shoal_errmsg());
            continue;
        }
        /* the tag carries what the confirmation needs: run, writer and cell */
        snprintf(job->tag, sizeof job->tag, "%s %s %u %u %u", ev->run_id, k->writer, k->replica,
                 k->stage, k->ep_rank);
        job->step = ev->step;
        job->n_src = k->n_src;
        memcpy(job->src, k->src, sizeof job->src);
        job->want = k->want;
        job->keep = keep;
        if (ckpt_replicator_submit(d->repl, job) != SHOAL_OK)
            log_error("replication of %s's shard: %s", k->writer, shoal_errmsg());
        else
            log_info("checkpoint %lld: copying %s's shard (cell %u/%u/%u) in the background%s",
                     (long long)ev->step, k->writer, k->replica, k->stage, k->ep_rank,
                     d->copies_held ? " once this worker has trained under its new plan" : "");
    }
    free(job);
}

/* Tells the coordinator that `holder`'s copy of `writer`'s shard of `step` (at path, "" when
 * unknown) failed its digests here: it stops counting that copy and orders another. */
static void s_report_corrupt(daemon_t *d, const char *run, int64_t step, const char *writer,
                             const char *holder, const char *path)
{
    sess_req_t *r = sess_req_new(SESS_REQ_SHARD_CORRUPT, run, d->plan ? d->plan->generation : 0);
    if (!r) {
        log_error("checkpoint %lld: corrupt copy on %s not reported: out of memory",
                  (long long)step, holder);
        return;
    }
    r->step = step;
    snprintf(r->replica_of, sizeof r->replica_of, "%s", writer);
    snprintf(r->holder, sizeof r->holder, "%s", holder);
    snprintf(r->path, sizeof r->path, "%s", path);
    log_warn("checkpoint %lld: %s served a corrupt copy of %s's shard: reported", (long long)step,
             holder, writer);
    session_post(d->sess, &r);
}

void daemon_replicas_poll(daemon_t *d)
{
    if (!d->repl)
        return;
    /* a run's checkpoint root outside the state dir (absolute checkpoint.dir) is served too */
    if (d->ckpt_root[0] && strcmp(d->ckpt_root, d->served_root) != 0) {
        if (ckpt_server_allow(d->shards, d->ckpt_root) != SHOAL_OK)
            log_warn("shard server: %s", shoal_errmsg());
        snprintf(d->served_root, sizeof d->served_root, "%s", d->ckpt_root);
    }
    ckpt_repl_done_t done;
    while (ckpt_replicator_poll(d->repl, &done)) {
        char run[SESS_ID_MAX], writer[SESS_ID_MAX];
        unsigned rep, stage, ep;
        if (sscanf(done.tag, "%64s %64s %u %u %u", run, writer, &rep, &stage, &ep) != 5)
            continue;
        for (int i = 0; i < done.n_corrupt; i++)
            s_report_corrupt(d, run, done.step, writer, done.corrupt[i], "");
        if (done.rc != SHOAL_OK) {
            log_warn("checkpoint %lld: no copy of %s's shard: %s", (long long)done.step, writer,
                     done.message);
            continue;
        }
        sess_req_t *r = sess_req_new(SESS_REQ_SHARD_HELD, run, d->plan ? d->plan->generation : 0);
        ckpt_digests_t *dg = malloc(sizeof *dg);
        if (!r || !dg || ckpt_repl_digests(done.dest, dg) != SHOAL_OK ||
            dg->n_files > SESS_MAX_FILES) {
            log_error("checkpoint %lld: copy of %s's shard not confirmed: %s", (long long)done.step,
                      writer, r && dg ? shoal_errmsg() : "out of memory");
            free(r);
            free(dg);
            continue;
        }
        r->step = done.step;
        snprintf(r->path, sizeof r->path, "%s", done.dest);
        snprintf(r->replica_of, sizeof r->replica_of, "%s", writer);
        r->replica = rep;
        r->stage = stage;
        r->ep_rank = ep;
        for (int i = 0; i < dg->n_files; i++) {
            snprintf(r->files[i].name, sizeof r->files[i].name, "%s", dg->files[i].name);
            snprintf(r->files[i].sha256, sizeof r->files[i].sha256, "%s", dg->files[i].sha256);
            r->files[i].size = dg->files[i].size;
        }
        r->n_files = dg->n_files;
        free(dg);
        log_info("checkpoint %lld: holding a copy of %s's shard (%.2f s in the background)",
                 (long long)done.step, writer, done.seconds);
        session_post(d->sess, &r);
    }
}

const char *daemon_replicas_shard_dir(daemon_t *d, uint32_t i, char *buf, size_t cap)
{
    const sess_plan_t *p = d->plan;
    const char *writer_dir = p->ckpt_shards[i];
    const sess_shard_t *k = p->ckpt_shard_info ? &p->ckpt_shard_info[i] : NULL;
    struct stat st;
    if (!k || k->want.n_files == 0)
        return writer_dir; /* nothing recorded: the local path as before */
    if (stat(writer_dir, &st) == 0) {
        if (ckpt_repl_verify(writer_dir, &k->want) == SHOAL_OK)
            return writer_dir;
        log_warn("checkpoint shard %s unusable here: %s", writer_dir, shoal_errmsg());
    }
    char parent[PATH_MAX];
    if (s_copy_dir(d, p->run_id, k, p->ckpt_step, buf, cap, parent, sizeof parent) != SHOAL_OK)
        return writer_dir;
    const double t0 = clock_mono_s();
    int used = -1;
    uint32_t bad = 0;
    const shoal_err_t rc = ckpt_repl_fetch_checked(d->zctx, k->src, k->n_src, &k->want, buf,
                                                   S_FETCH_TIMEOUT_MS, &used, &bad);
    for (int h = 0; h < k->n_src; h++)
        if (bad & (1u << h))
            s_report_corrupt(d, p->run_id, p->ckpt_step, k->writer, k->src[h].worker,
                             k->src[h].path);
    if (rc != SHOAL_OK) {
        log_warn("checkpoint shard of cell %u/%u/%u (step %lld): %s", k->replica, k->stage,
                 k->ep_rank, (long long)p->ckpt_step, shoal_errmsg());
        return writer_dir; /* the load then fails naming what is missing */
    }
    if (used >= 0)
        log_info("checkpoint shard of cell %u/%u/%u (step %lld) fetched from %s in %.2f s",
                 k->replica, k->stage, k->ep_rank, (long long)p->ckpt_step, k->src[used].worker,
                 clock_mono_s() - t0);
    return buf;
}
