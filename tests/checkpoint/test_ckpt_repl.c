/* test_ckpt_repl.c: checkpoint shard replication (ckpt_repl.h) over real ZeroMQ sockets on
 * loopback: a multi-MiB shard copied in chunks and verified; bad requests refused while the
 * server keeps serving; a corrupt local copy and a corrupt or dead holder replaced by another
 * holder's copy; the background replicator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "ckpt_repl.h"
#include "ckpt_testutil.h"
#include "clock.h"
#include "sha256.h"
#include "shoal.pb-c.h"

static char *s_root;
static model_config_t s_cfg;
static char s_shard[PATH_MAX]; /* <root>/a/step-00000007: the writer's committed shard */
static ckpt_digests_t s_want;
static void *s_zctx;

/* A shard whose model file spans several chunks (~3.3 MiB) so transfers use the window. */
static int s_setup(void **state)
{
    (void)state;
    tu_small_config(&s_cfg);
    s_cfg.vocab_size = 4096;
    s_cfg.hidden_size = 96;
    s_cfg.max_position_embeddings = 64;
    s_root = tu_mkdtemp("repl");
    assert_non_null(s_root);
    const int64_t n = model_dir_param_count(&s_cfg);
    float *p = malloc((size_t)n * sizeof *p), *m = malloc((size_t)n * sizeof *m);
    tu_fill(p, n, 1);
    tu_fill(m, n, 2);
    char a[PATH_MAX / 2];
    snprintf(a, sizeof a, "%s/a", s_root);
    assert_int_equal(ckpt_save(a, 7, &s_cfg, p, m, m, "{\"step\":7}", 2), SHOAL_OK);
    free(p);
    free(m);
    snprintf(s_shard, sizeof s_shard, "%s/step-00000007", a);
    assert_int_equal(ckpt_repl_digests(s_shard, &s_want), SHOAL_OK);
    uint64_t model_size = 0;
    for (int i = 0; i < s_want.n_files; i++)
        if (strcmp(s_want.files[i].name, "model.safetensors") == 0)
            model_size = s_want.files[i].size;
    assert_true(model_size > 3 * CKPT_REPL_CHUNK);
    s_zctx = zmq_ctx_new();
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    zmq_ctx_term(s_zctx);
    fsutil_remove_tree(s_root);
    free(s_root);
    return 0;
}

static void s_source(ckpt_source_t *src, const char *worker, const ckpt_server_t *srv,
                     const char *path)
{
    memset(src, 0, sizeof *src);
    snprintf(src->worker, sizeof src->worker, "%s", worker);
    snprintf(src->endpoint, sizeof src->endpoint, "%s",
             srv ? ckpt_server_endpoint(srv) : "tcp://127.0.0.1:1");
    snprintf(src->path, sizeof src->path, "%s", path);
}

static void s_flip_byte(const char *path, off_t at)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseeko(f, at, SEEK_SET);
    int c = fgetc(f);
    fseeko(f, at, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

static int s_same_file(const char *a, const char *b)
{
    uint8_t da[SHA256_LEN], db[SHA256_LEN];
    return sha256_file(a, da, NULL) == SHOAL_OK && sha256_file(b, db, NULL) == SHOAL_OK &&
           memcmp(da, db, SHA256_LEN) == 0;
}

/* Sends one raw request, returns the unpacked reply (caller frees) or NULL after 3 s. */
static Shoal__ShardReply *s_ask(void *sock, const char *path, const char *file, uint64_t offset,
                                uint64_t id)
{
    Shoal__ShardRequest q = SHOAL__SHARD_REQUEST__INIT;
    q.id = id;
    q.path = (char *)path;
    q.file = (char *)file;
    q.offset = offset;
    uint8_t buf[8192];
    size_t n = shoal__shard_request__get_packed_size(&q);
    shoal__shard_request__pack(&q, buf);
    assert_true(zmq_send(sock, buf, n, 0) >= 0);
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 3000) <= 0)
        return NULL;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    assert_true(zmq_msg_recv(&msg, sock, 0) >= 0);
    Shoal__ShardReply *r = shoal__shard_reply__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
    zmq_msg_close(&msg);
    return r;
}

static void s_expect_refused(void *sock, const char *path, const char *file, uint64_t offset,
                             Shoal__ErrorCode code, const char *needle)
{
    static uint64_t id = 100;
    Shoal__ShardReply *r = s_ask(sock, path, file, offset, ++id);
    assert_non_null(r);
    if (r->code != code || !strstr(r->message, needle))
        fail_msg("%s / %s @%llu: code %d '%s', wanted code %d with '%s'", path, file,
                 (unsigned long long)offset, r->code, r->message, code, needle);
    assert_int_equal(r->id, id);
    assert_int_equal(r->data.len, 0);
    shoal__shard_reply__free_unpacked(r, NULL);
}

/* A multi-MiB shard arrives in chunks, byte-identical and verified; a valid copy is kept. */
static void test_chunked_copy(void **state)
{
    (void)state;
    char a[PATH_MAX], dest[PATH_MAX];
    snprintf(a, sizeof a, "%s/a", s_root);
    snprintf(dest, sizeof dest, "%s/b/replicas/shard-0-0-0/step-00000007", s_root);
    ckpt_server_t *srv = NULL;
    assert_int_equal(ckpt_server_new("tcp://127.0.0.1:0", NULL, a, &srv), SHOAL_OK);
    ckpt_source_t src;
    s_source(&src, "w1", srv, s_shard);
    int used = -2;
    assert_int_equal(ckpt_repl_fetch(s_zctx, &src, 1, &s_want, dest, 3000, &used), SHOAL_OK);
    assert_int_equal(used, 0);
    uint64_t served, refused;
    ckpt_server_counts(srv, &served, &refused);
    assert_true(served >= 4 + (uint64_t)s_want.n_files - 1); /* the model file alone: >= 4 */
    assert_int_equal(refused, 0);
    for (int i = 0; i < s_want.n_files; i++) {
        char x[PATH_MAX * 2], y[PATH_MAX * 2];
        snprintf(x, sizeof x, "%s/%s", s_shard, s_want.files[i].name);
        snprintf(y, sizeof y, "%s/%s", dest, s_want.files[i].name);
        assert_true(s_same_file(x, y));
    }
    assert_int_equal(ckpt_manifest_verify(dest), SHOAL_OK);
    /* already valid: kept, nothing fetched */
    assert_int_equal(ckpt_repl_fetch(s_zctx, &src, 1, &s_want, dest, 3000, &used), SHOAL_OK);
    assert_int_equal(used, -1);
    /* the copy is servable in turn (a holder's replica) once its dir is a root */
    assert_int_equal(ckpt_server_allow(srv, dest), SHOAL_OK);
    ckpt_server_destroy(&srv);
    assert_null(srv);
    ckpt_server_destroy(&srv); /* idempotent */
}

/* Hostile requests get error replies; the server answers a good request afterwards. */
static void test_bad_requests(void **state)
{
    (void)state;
    char a[PATH_MAX], p[PATH_MAX * 2];
    snprintf(a, sizeof a, "%s/a", s_root);
    ckpt_server_t *srv = NULL;
    assert_int_equal(ckpt_server_new("tcp://127.0.0.1:0", NULL, a, &srv), SHOAL_OK);
    void *sock = zmq_socket(s_zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(sock, ckpt_server_endpoint(srv)), 0);
    /* path traversal out of the store, by the dir and by the file */
    snprintf(p, sizeof p, "%s/../../../../etc", s_shard);
    s_expect_refused(sock, p, "model.safetensors", 0, SHOAL__ERROR_CODE__ERR_INVALID,
                     "outside the shard store");
    s_expect_refused(sock, "/etc", "passwd", 0, SHOAL__ERROR_CODE__ERR_INVALID,
                     "outside the shard store");
    s_expect_refused(sock, s_shard, "../../../../../../etc/passwd", 0,
                     SHOAL__ERROR_CODE__ERR_INVALID, "not a plain file name");
    s_expect_refused(sock, "relative/step-00000007", "manifest.json", 0,
                     SHOAL__ERROR_CODE__ERR_INVALID, "not an absolute");
    /* a dir of the store that is not a step dir, a file no manifest lists */
    snprintf(p, sizeof p, "%s/notes", a);
    assert_int_equal(fsutil_mkdir_p(p), SHOAL_OK);
    s_expect_refused(sock, p, "manifest.json", 0, SHOAL__ERROR_CODE__ERR_INVALID,
                     "not a checkpoint step dir");
    s_expect_refused(sock, a, "manifest.json", 0, SHOAL__ERROR_CODE__ERR_INVALID,
                     "outside the shard store"); /* a root itself is not below it */
    s_expect_refused(sock, s_shard, "secret.txt", 0, SHOAL__ERROR_CODE__ERR_NOT_FOUND,
                     "not a file of a committed checkpoint");
    /* an unknown step, an uncommitted one (no manifest) */
    snprintf(p, sizeof p, "%s/step-00000099", a);
    s_expect_refused(sock, p, "model.safetensors", 0, SHOAL__ERROR_CODE__ERR_NOT_FOUND,
                     "no such shard dir");
    snprintf(p, sizeof p, "%s/step-00000098", a);
    assert_int_equal(mkdir(p, 0755), 0);
    s_expect_refused(sock, p, "model.safetensors", 0, SHOAL__ERROR_CODE__ERR_NOT_FOUND,
                     "not a file of a committed checkpoint");
    rmdir(p);
    /* offsets: past the end refused, at the end an empty chunk */
    uint64_t msize = 0;
    snprintf(p, sizeof p, "%s/model.safetensors", s_shard);
    assert_int_equal(fsutil_file_size(p, &msize), SHOAL_OK);
    s_expect_refused(sock, s_shard, "model.safetensors", msize + 1, SHOAL__ERROR_CODE__ERR_INVALID,
                     "offset past the end");
    Shoal__ShardReply *r = s_ask(sock, s_shard, "model.safetensors", msize, 500);
    assert_non_null(r);
    assert_int_equal(r->code, SHOAL__ERROR_CODE__ERR_NONE);
    assert_int_equal(r->data.len, 0);
    assert_int_equal(r->file_size, msize);
    shoal__shard_reply__free_unpacked(r, NULL);
    /* garbage bytes */
    assert_true(zmq_send(sock, "\xff\xff\xff\xff\x0f", 5, 0) == 5);
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, 3000), 1);
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    assert_true(zmq_msg_recv(&msg, sock, 0) >= 0);
    r = shoal__shard_reply__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
    zmq_msg_close(&msg);
    assert_non_null(r);
    assert_int_equal(r->code, SHOAL__ERROR_CODE__ERR_BAD_MESSAGE);
    shoal__shard_reply__free_unpacked(r, NULL);
    /* still serving: a good chunk, the bytes of the file */
    r = s_ask(sock, s_shard, "model.safetensors", 0, 501);
    assert_non_null(r);
    assert_int_equal(r->code, SHOAL__ERROR_CODE__ERR_NONE);
    assert_int_equal(r->data.len, CKPT_REPL_CHUNK);
    shoal__shard_reply__free_unpacked(r, NULL);
    uint64_t served, refused;
    ckpt_server_counts(srv, &served, &refused);
    assert_int_equal(refused, 11);
    zmq_close(sock);
    ckpt_server_destroy(&srv);
}

/* A corrupt local copy is discarded; a holder serving a corrupt copy and a dead holder are
 * passed over for one with a valid copy, and only the corrupt one is flagged (the worker
 * reports it to the coordinator); with no valid holder the fetch fails saying why. */
static void test_corrupt_replaced(void **state)
{
    (void)state;
    char a[PATH_MAX], c[PATH_MAX / 2], cshard[PATH_MAX], dest[PATH_MAX], f[PATH_MAX * 2];
    snprintf(a, sizeof a, "%s/a", s_root);
    snprintf(c, sizeof c, "%s/c", s_root);
    snprintf(cshard, sizeof cshard, "%s/replicas/shard-0-0-0/step-00000007", c);
    snprintf(dest, sizeof dest, "%s/d/replicas/shard-0-0-0/step-00000007", s_root);
    ckpt_server_t *good = NULL, *bad = NULL;
    assert_int_equal(ckpt_server_new("tcp://127.0.0.1:0", NULL, a, &good), SHOAL_OK);
    ckpt_source_t src[3];
    s_source(&src[0], "w1", good, s_shard);
    /* holder c: a copy, then corrupted on its disk */
    assert_int_equal(ckpt_repl_fetch(s_zctx, src, 1, &s_want, cshard, 3000, NULL), SHOAL_OK);
    snprintf(f, sizeof f, "%s/optimizer.safetensors", cshard);
    s_flip_byte(f, 2 * CKPT_REPL_CHUNK + 17);
    assert_int_equal(ckpt_server_new("tcp://127.0.0.1:0", NULL, c, &bad), SHOAL_OK);
    /* the local copy: valid, then corrupted */
    assert_int_equal(ckpt_repl_fetch(s_zctx, src, 1, &s_want, dest, 3000, NULL), SHOAL_OK);
    snprintf(f, sizeof f, "%s/model.safetensors", dest);
    s_flip_byte(f, CKPT_REPL_CHUNK + 3);
    assert_int_equal(ckpt_repl_verify(dest, &s_want), SHOAL_ERR_FORMAT);
    s_source(&src[0], "w9", NULL, s_shard); /* dead: nothing listens there */
    s_source(&src[1], "w3", bad, cshard);
    s_source(&src[2], "w1", good, s_shard);
    int used = -2;
    uint32_t corrupt = 99;
    assert_int_equal(ckpt_repl_fetch_checked(s_zctx, src, 3, &s_want, dest, 500, &used, &corrupt),
                     SHOAL_OK);
    assert_int_equal(used, 2);
    assert_int_equal(corrupt, 1u << 1); /* w3 served a corrupt copy; w9 did not answer */
    assert_int_equal(ckpt_repl_verify(dest, &s_want), SHOAL_OK);
    assert_int_equal(ckpt_manifest_verify(dest), SHOAL_OK);
    /* only bad holders: refused, naming each */
    s_flip_byte(f, 5);
    assert_int_equal(ckpt_repl_fetch_checked(s_zctx, src, 2, &s_want, dest, 500, &used, &corrupt),
                     SHOAL_ERR_NOTFOUND);
    assert_int_equal(corrupt, 1u << 1);
    assert_non_null(strstr(shoal_errmsg(), "w9"));
    assert_non_null(strstr(shoal_errmsg(), "w3: "));
    assert_non_null(strstr(shoal_errmsg(), "corrupt"));
    struct stat st;
    assert_int_not_equal(stat(dest, &st), 0); /* the corrupt copy is gone, no temp dir left */
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.fetch-%ld", dest, (long)getpid());
    assert_int_not_equal(stat(tmp, &st), 0);
    ckpt_server_destroy(&bad);
    ckpt_server_destroy(&good);
}

/* The replicator copies in the background, reports the outcome once, and prunes old steps; a
 * job submitted while it is held (a worker recovering) waits, untouched, until the hold ends. */
static void test_replicator(void **state)
{
    (void)state;
    char a[PATH_MAX];
    snprintf(a, sizeof a, "%s/a", s_root);
    ckpt_server_t *srv = NULL;
    assert_int_equal(ckpt_server_new("tcp://127.0.0.1:0", NULL, a, &srv), SHOAL_OK);
    ckpt_replicator_t *r = ckpt_replicator_new(3000);
    assert_non_null(r);
    ckpt_repl_job_t *job = calloc(1, sizeof *job);
    snprintf(job->tag, sizeof job->tag, "w1/7");
    job->step = 7;
    job->n_src = 1;
    s_source(&job->src[0], "w1", srv, s_shard);
    job->want = s_want;
    snprintf(job->prune_dir, sizeof job->prune_dir, "%s/e/shard-0-0-0", s_root);
    snprintf(job->dest, sizeof job->dest, "%.3000s/step-00000007", job->prune_dir);
    job->keep = 1;
    /* an older replica that the keep of 1 removes */
    char old[PATH_MAX + 32];
    snprintf(old, sizeof old, "%s/step-00000003", job->prune_dir);
    assert_int_equal(fsutil_mkdir_p(old), SHOAL_OK);
    snprintf(old, sizeof old, "%s/step-00000003/manifest.json", job->prune_dir);
    assert_int_equal(fsutil_write_file(old, "{}", 2), SHOAL_OK);
    ckpt_replicator_hold(r, 1);
    assert_int_equal(ckpt_replicator_submit(r, job), SHOAL_OK);
    ckpt_repl_done_t done;
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.fetch-%ld", job->dest, (long)getpid());
    struct stat st;
    for (int i = 0; i < 25; i++) { /* 0.5 s: a started copy makes its temp dir at once */
        assert_int_equal(ckpt_replicator_poll(r, &done), 0);
        assert_int_not_equal(stat(tmp, &st), 0);
        assert_int_not_equal(stat(job->dest, &st), 0);
        clock_sleep_ms(20);
    }
    assert_int_equal(ckpt_replicator_busy(r), 1); /* queued, not dropped */
    ckpt_replicator_hold(r, 0);
    int got = 0;
    for (int i = 0; i < 300 && !got; i++) {
        got = ckpt_replicator_poll(r, &done);
        if (!got)
            clock_sleep_ms(20);
    }
    assert_true(got);
    assert_int_equal(done.rc, SHOAL_OK);
    assert_string_equal(done.tag, "w1/7");
    assert_int_equal(ckpt_replicator_poll(r, &done), 0);
    assert_int_equal(ckpt_replicator_busy(r), 0);
    assert_int_equal(ckpt_repl_verify(job->dest, &s_want), SHOAL_OK);
    snprintf(old, sizeof old, "%s/step-00000003", job->prune_dir);
    assert_int_not_equal(stat(old, &st), 0);
    ckpt_replicator_destroy(&r);
    assert_null(r);
    free(job);
    ckpt_server_destroy(&srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_copy),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_corrupt_replaced),
        cmocka_unit_test(test_replicator),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
