/* bench_replication.c: what background checkpoint replication costs a training step. A real
 * trainer (tiny model, CPU) steps on this thread while, in alternating windows of the same run,
 * the replicator (checkpoint/ckpt_repl.h) copies a checkpoint shard of that model over loopback
 * ZeroMQ from a shard server, one copy after another, verified by SHA-256 each time. Prints the
 * median and worst step time of the quiet and the copying windows and their ratio; the copies
 * never hold the step (the replicator only queues on this thread).
 * Usage: bench_replication [ROUNDS] [STEPS_PER_WINDOW]   (defaults 3, 8) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_repl.h"
#include "clock.h"
#include "fsutil.h"
#include "runspec.h"
#include "trainer.h"

static const char s_spec[] = "name: bench\n"
                             "model:\n  preset: tiny\n"
                             "data:\n  files: [/usr/share/games/fortunes]\n"
                             "train:\n  steps: 100000\n  global_batch: 8\n  seq_len: 64\n"
                             "  micro_batch: 4\n  lr: 1e-3\n";

static int s_cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double s_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, s_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double s_max(const double *v, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 3, per = argc > 2 ? atoi(argv[2]) : 8;
    if (access("/usr/share/games/fortunes", R_OK) != 0) {
        printf("bench_replication: no /usr/share/games/fortunes: skip\n");
        return 77;
    }
    char dir[] = "/tmp/shoal-bench-repl-XXXXXX", root[64], shard[96];
    if (!mkdtemp(dir) || rounds < 1 || per < 1)
        return 1;
    snprintf(root, sizeof root, "%s/ckpt", dir);
    runspec_t *spec = calloc(1, sizeof *spec);
    trainer_t *t = NULL;
    ckpt_server_t *srv = NULL;
    ckpt_replicator_t *rep = NULL;
    ckpt_repl_job_t *job = calloc(1, sizeof *job);
    double *quiet = calloc((size_t)(rounds * per), sizeof *quiet);
    double *busy = calloc((size_t)(rounds * per), sizeof *busy);
    int nq = 0, nb = 0, copies = 0, rc = 1;
    if (!spec || !job || !quiet || !busy ||
        runspec_load_string(s_spec, "bench", spec) != SHOAL_OK ||
        trainer_new(spec, root, &t) != SHOAL_OK || trainer_init_fresh(t) != SHOAL_OK)
        goto out;
    /* the shard to copy: this trainer's checkpoint (the whole tiny model: params + moments) */
    if (trainer_checkpoint_async(t) != SHOAL_OK || trainer_checkpoint_wait(t) != SHOAL_OK ||
        ckpt_latest(root, &(int64_t){0}, shard, sizeof shard) != SHOAL_OK)
        goto out;
    if (ckpt_server_new("tcp://127.0.0.1:0", NULL, dir, &srv) != SHOAL_OK ||
        !(rep = ckpt_replicator_new(5000)) || ckpt_repl_digests(shard, &job->want) != SHOAL_OK)
        goto out;
    uint64_t bytes = 0;
    for (int i = 0; i < job->want.n_files; i++)
        bytes += job->want.files[i].size;
    job->n_src = 1;
    snprintf(job->src[0].worker, sizeof job->src[0].worker, "bench");
    snprintf(job->src[0].endpoint, sizeof job->src[0].endpoint, "%s", ckpt_server_endpoint(srv));
    snprintf(job->src[0].path, sizeof job->src[0].path, "%s", shard);
    for (int r = 0; r < rounds; r++)
        for (int copying = 0; copying < 2; copying++)
            for (int s = 0; s < per; s++) {
                ckpt_repl_done_t done;
                while (ckpt_replicator_poll(rep, &done))
                    copies += done.rc == SHOAL_OK;
                if (copying && ckpt_replicator_busy(rep) == 0) {
                    /* a fresh destination each time: a valid copy would be kept, not fetched */
                    snprintf(job->dest, sizeof job->dest, "%s/copy-%d/step-00000000", dir, nb);
                    fsutil_remove_tree(job->dest);
                    ckpt_replicator_submit(rep, job);
                }
                trainer_step_info_t info;
                const double t0 = clock_mono_s();
                if (trainer_compute(t, 0, 1) != SHOAL_OK || trainer_apply(t, &info) != SHOAL_OK)
                    goto out; /* the single-process step (shoal-worker train) */
                (copying ? busy : quiet)[copying ? nb++ : nq++] = clock_mono_s() - t0;
            }
    while (ckpt_replicator_busy(rep))
        clock_sleep_ms(10);
    for (ckpt_repl_done_t done; ckpt_replicator_poll(rep, &done);)
        copies += done.rc == SHOAL_OK;
    const double mq = s_median(quiet, nq), mb = s_median(busy, nb);
    printf("bench_replication: shard of %.1f MiB, %d verified copies during %d steps\n",
           (double)bytes / (1 << 20), copies, nb);
    printf("step seconds quiet:   median %.4f  max %.4f  (%d steps)\n", mq, s_max(quiet, nq), nq);
    printf("step seconds copying: median %.4f  max %.4f  (%d steps)\n", mb, s_max(busy, nb), nb);
    printf("ratio copying/quiet (median): %.3f\n", mb / mq);
    rc = copies > 0 ? 0 : 1;
out:
    if (rc)
        fprintf(stderr, "bench_replication: %s\n", shoal_errmsg());
    ckpt_replicator_destroy(&rep);
    ckpt_server_destroy(&srv);
    trainer_destroy(&t);
    fsutil_remove_tree(dir);
    free(quiet);
    free(busy);
    free(job);
    free(spec);
    return rc;
}
