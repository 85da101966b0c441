/* test_ckpt: step checkpoints: bit-exact round trip, keep pruning, stale temp dirs, latest step,
 * every kind of damage (truncation, flipped byte, missing tensor, wrong shape, wrong config),
 * SIGKILL in the middle of writing, the asynchronous writer, and shards of a subset of tensors
 * reassembled from several dirs. */
/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt.h"
#include "ckpt_testutil.h"
#include "clock.h"
#include "log.h"
#include "sha256.h"

static char *s_root;
static model_config_t s_cfg;
static int64_t s_n;

typedef struct {
    float *p, *m, *v;
} s_state_t;

static void s_state_new(s_state_t *s, uint32_t seed)
{
    s->p = malloc((size_t)s_n * sizeof(float));
    s->m = malloc((size_t)s_n * sizeof(float));
    s->v = malloc((size_t)s_n * sizeof(float));
    tu_fill(s->p, s_n, seed);
    tu_fill(s->m, s_n, seed + 100);
    tu_fill(s->v, s_n, seed + 200);
    for (int64_t i = 0; i < s_n; i++)
        s->v[i] *= s->v[i]; /* second moments are >= 0 */
}

static void s_state_free(s_state_t *s)
{
    free(s->p);
    free(s->m);
    free(s->v);
}

static int s_setup(void **state)
{
    (void)state;
    log_set_level(LOG_LVL_ERROR);
    tu_small_config(&s_cfg);
    s_n = model_dir_param_count(&s_cfg);
    s_root = tu_mkdtemp("ckpt");
    return s_root ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    int rc = fsutil_remove_tree(s_root) == SHOAL_OK ? 0 : -1;
    free(s_root);
    return rc;
}

static void s_sub(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", s_root, name);
}

static void s_expect_msg(const char *a, const char *b)
{
    if (!strstr(shoal_errmsg(), a) || (b && !strstr(shoal_errmsg(), b)))
        fail_msg("message '%s' lacks '%s' or '%s'", shoal_errmsg(), a, b ? b : "");
}

static int s_count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* True when bias slots of m and v are 0 and all other values equal the reference. */
static void s_check_moments(const float *got, const float *want)
{
    int n = model_tensor_list(&s_cfg, NULL, 0);
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    model_tensor_list(&s_cfg, t, n);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = model_tensor_numel(&t[i]);
        for (int64_t j = 0; j < numel; j++) {
            if (t[i].is_bias)
                assert_true(got[off + j] == 0.0f);
            else
                assert_memory_equal(&got[off + j], &want[off + j], sizeof(float));
        }
        off += numel;
    }
    free(t);
}

static void test_round_trip(void **state)
{
    (void)state;
    char root[512], dir[600];
    s_sub(root, sizeof root, "rt/a/b"); /* created with parents */
    s_state_t s;
    s_state_new(&s, 1);
    uint32_t nan_bits = 0x7fa00001u; /* a signalling-NaN payload must survive too */
    memcpy(&s.p[3], &nan_bits, 4);
    const char *st = "{\"step\": 20, \"adam_t\": 20, \"data\": {\"pos\": 123456789012}, "
                     "\"rng\": [1, 2, 3]}";
    assert_int_equal(ckpt_save(root, 20, &s_cfg, s.p, s.m, s.v, st, 0), SHOAL_OK);
    int64_t step = -1;
    assert_int_equal(ckpt_latest(root, &step, dir, sizeof dir), SHOAL_OK);
    assert_int_equal(step, 20);
    char want[600];
    snprintf(want, sizeof want, "%s/step-00000020", root);
    assert_string_equal(dir, want);

    s_state_t b;
    s_state_new(&b, 99);
    char *state_json = NULL;
    assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, &state_json), SHOAL_OK);
    assert_memory_equal(b.p, s.p, (size_t)s_n * sizeof(float));
    s_check_moments(b.m, s.m);
    s_check_moments(b.v, s.v);
    assert_string_equal(state_json, st);
    free(state_json);

    /* the step dir is a model dir in its own right */
    model_config_t c;
    float *p2 = NULL;
    int64_t n2 = 0;
    assert_int_equal(model_dir_load(dir, &c, &p2, &n2), SHOAL_OK);
    assert_int_equal(n2, s_n);
    assert_memory_equal(p2, s.p, (size_t)s_n * sizeof(float));
    free(p2);

    /* any output may be skipped */
    assert_int_equal(ckpt_load(dir, &s_cfg, NULL, NULL, NULL, NULL), SHOAL_OK);
    memset(b.m, 0xff, (size_t)s_n * sizeof(float));
    assert_int_equal(ckpt_load(dir, &s_cfg, NULL, b.m, NULL, NULL), SHOAL_OK);
    s_check_moments(b.m, s.m);

    /* optimizer.safetensors holds NAME.exp_avg / NAME.exp_avg_sq of non-bias tensors only */
    char p[700];
    snprintf(p, sizeof p, "%s/optimizer.safetensors", dir);
    st_file_t *f = NULL;
    assert_int_equal(st_open(p, &f), SHOAL_OK);
    int n = model_tensor_list(&s_cfg, NULL, 0), biases = 0;
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    model_tensor_list(&s_cfg, t, n);
    for (int i = 0; i < n; i++)
        biases += t[i].is_bias;
    assert_int_equal(st_count(f), 2 * (n - biases));
    char nm[160];
    snprintf(nm, sizeof nm, "%s.exp_avg_sq", t[0].name);
    assert_true(st_has(f, nm));
    st_close(&f);
    free(t);

    /* saving the same step again replaces it atomically */
    assert_int_equal(ckpt_save(root, 20, &s_cfg, b.p, s.m, s.v, NULL, 0), SHOAL_OK);
    assert_int_equal(ckpt_load(dir, &s_cfg, s.p, NULL, NULL, &state_json), SHOAL_OK);
    assert_memory_equal(s.p, b.p, (size_t)s_n * sizeof(float));
    assert_string_equal(state_json, "{}");
    free(state_json);
    assert_int_equal(s_count_entries(root, ".tmp-"), 0);
    assert_int_equal(s_count_entries(root, "step-"), 1);

    /* bad arguments */
    assert_int_equal(ckpt_save(root, 21, &s_cfg, s.p, s.m, s.v, "{not json", 0), SHOAL_ERR_INVALID);
    assert_int_equal(ckpt_save(root, -1, &s_cfg, s.p, s.m, s.v, NULL, 0), SHOAL_ERR_INVALID);
    assert_int_equal(ckpt_save(root, 21, &s_cfg, s.p, NULL, s.v, NULL, 0), SHOAL_ERR_INVALID);
    char file_root[600];
    snprintf(file_root, sizeof file_root, "%s/step-00000020/config.json", root);
    assert_int_equal(ckpt_save(file_root, 1, &s_cfg, s.p, s.m, s.v, NULL, 0), SHOAL_ERR_IO);
    s_expect_msg(file_root, "step 1");
    s_state_free(&b);
    s_state_free(&s);
}

static void test_keep_and_latest(void **state)
{
    (void)state;
    char root[512], dir[600];
    s_state_t s;
    s_state_new(&s, 2);
    int64_t step;
    s_sub(root, sizeof root, "keep");
    assert_int_equal(ckpt_latest(root, &step, dir, sizeof dir), SHOAL_ERR_NOTFOUND);
    s_expect_msg(root, NULL);
    for (int k = 1; k <= 5; k++)
        assert_int_equal(ckpt_save(root, k * 10, &s_cfg, s.p, s.m, s.v, NULL, 2), SHOAL_OK);
    int64_t steps[8];
    int count = 0;
    assert_int_equal(ckpt_list(root, steps, 8, &count), SHOAL_OK);
    assert_int_equal(count, 2);
    assert_int_equal(steps[0], 40);
    assert_int_equal(steps[1], 50);
    assert_int_equal(s_count_entries(root, ".tmp-"), 0);

    /* keep <= 0 keeps everything; latest is the highest step, not the newest write */
    s_sub(root, sizeof root, "all");
    int64_t order[] = {3, 12, 7, 123456789, 100};
    for (int k = 0; k < 5; k++)
        assert_int_equal(ckpt_save(root, order[k], &s_cfg, s.p, s.m, s.v, NULL, 0), SHOAL_OK);
    assert_int_equal(ckpt_list(root, steps, 8, &count), SHOAL_OK);
    assert_int_equal(count, 5);
    assert_int_equal(steps[0], 3);
    assert_int_equal(steps[4], 123456789);
    assert_int_equal(ckpt_latest(root, &step, dir, sizeof dir), SHOAL_OK);
    assert_int_equal(step, 123456789);
    assert_non_null(strstr(dir, "/step-123456789"));
    assert_int_equal(ckpt_load(dir, &s_cfg, s.p, NULL, NULL, NULL), SHOAL_OK);
    /* a commit below the highest step (a run restarted from an older checkpoint) is never the
     * one pruned: keep 2 leaves it and the highest other step */
    assert_int_equal(ckpt_save(root, 8, &s_cfg, s.p, s.m, s.v, NULL, 2), SHOAL_OK);
    assert_int_equal(ckpt_list(root, steps, 8, &count), SHOAL_OK);
    assert_int_equal(count, 2);
    assert_int_equal(steps[0], 8);
    assert_int_equal(steps[1], 123456789);
    assert_int_equal(ckpt_save(root, 9, &s_cfg, s.p, s.m, s.v, NULL, 1), SHOAL_OK);
    assert_int_equal(ckpt_list(root, steps, 8, &count), SHOAL_OK);
    assert_int_equal(count, 1);
    assert_int_equal(steps[0], 9);
    assert_int_equal(s_count_entries(root, ".tmp-"), 0);
    s_state_free(&s);
}

static pid_t s_dead_pid(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    waitpid(pid, NULL, 0);
    return pid;
}

static void test_stale_tmp(void **state)
{
    (void)state;
    char root[512], p[700], live[700], foreign[700];
    s_state_t s;
    s_state_new(&s, 3);
    s_sub(root, sizeof root, "stale");
    assert_int_equal(ckpt_save(root, 5, &s_cfg, s.p, s.m, s.v, NULL, 0), SHOAL_OK);
    /* a crashed writer's leftovers: a newer step, half written */
    snprintf(p, sizeof p, "%s/.tmp-step-00000009-%d", root, (int)s_dead_pid());
    assert_int_equal(fsutil_mkdir_p(p), SHOAL_OK);
    snprintf(p + strlen(p), sizeof p - strlen(p), "/model.safetensors.tmp");
    assert_int_equal(fsutil_write_file(p, "partial", 7), SHOAL_OK);
    /* a live process's write in progress is left alone */
    snprintf(live, sizeof live, "%s/.tmp-step-00000010-%d", root, (int)getppid());
    assert_int_equal(fsutil_mkdir_p(live), SHOAL_OK);
    /* a step-* dir without manifest was not made by ckpt_save: ignored */
    snprintf(foreign, sizeof foreign, "%s/step-00000099", root);
    assert_int_equal(fsutil_mkdir_p(foreign), SHOAL_OK);

    int64_t step;
    char dir[600];
    assert_int_equal(ckpt_latest(root, &step, dir, sizeof dir), SHOAL_OK);
    assert_int_equal(step, 5);
    assert_int_equal(s_count_entries(root, ".tmp-"), 2);
    assert_int_equal(ckpt_save(root, 6, &s_cfg, s.p, s.m, s.v, NULL, 0), SHOAL_OK);
    assert_int_equal(s_count_entries(root, ".tmp-"), 1); /* the dead one is gone */
    assert_int_equal(access(live, F_OK), 0);
    assert_int_equal(ckpt_latest(root, &step, dir, sizeof dir), SHOAL_OK);
    assert_int_equal(step, 6);
    /* a leftover with our own pid (an earlier process with the same pid) is stale too */
    snprintf(p, sizeof p, "%s/.tmp-step-00000011-%d", root, (int)getpid());
    assert_int_equal(fsutil_mkdir_p(p), SHOAL_OK);
    assert_int_equal(ckpt_save(root, 7, &s_cfg, s.p, s.m, s.v, NULL, 0), SHOAL_OK);
    assert_int_equal(access(p, F_OK), -1);
    s_state_free(&s);
}

/* Recomputes manifest.json of `dir` so that deliberate damage passes the digest check. */
static void s_rewrite_manifest(const char *dir)
{
    const char *files[] = {"config.json", "model.safetensors", "optimizer.safetensors",
                           "trainer_state.json"};
    json_t *arr = json_array();
    for (int i = 0; i < 4; i++) {
        char p[700], hex[SHA256_HEX_LEN + 1];
        uint8_t d[SHA256_LEN];
        uint64_t size;
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        assert_int_equal(sha256_file(p, d, &size), SHOAL_OK);
        sha256_hex(d, hex);
        json_array_append_new(arr, json_pack("{s:s,s:I,s:s}", "name", files[i], "size",
                                             (json_int_t)size, "sha256", hex));
    }
    json_t *root = json_pack("{s:s,s:I,s:o}", "format", "shoal-checkpoint-v1", "step",
                             (json_int_t)1, "files", arr);
    char p[700];
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    assert_int_equal(json_dump_file(root, p, 0), 0);
    json_decref(root);
}

/* A fresh committed checkpoint at <root>/damage/<name>/step-00000001; its dir into out. */
static void s_fresh(const s_state_t *s, const char *name, char *out, size_t cap)
{
    char root[512];
    snprintf(root, sizeof root, "%s/damage/%s", s_root, name);
    assert_int_equal(ckpt_save(root, 1, &s_cfg, s->p, s->m, s->v, "{\"step\": 1}", 0), SHOAL_OK);
    snprintf(out, cap, "%s/step-00000001", root);
}

static void s_flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

static void test_damage(void **state)
{
    (void)state;
    s_state_t s, b;
    s_state_new(&s, 4);
    s_state_new(&b, 5);
    char dir[600], p[700];
    uint64_t size;
    const char *files[] = {"model.safetensors", "optimizer.safetensors", "config.json",
                           "trainer_state.json"};
    for (int i = 0; i < 4; i++) {
        /* truncated */
        char name[64];
        snprintf(name, sizeof name, "trunc-%d", i);
        s_fresh(&s, name, dir, sizeof dir);
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        assert_int_equal(fsutil_file_size(p, &size), SHOAL_OK);
        assert_int_equal(truncate(p, (off_t)(size / 2)), 0);
        assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_FORMAT);
        s_expect_msg(p, "truncated");
        /* one flipped byte, same size: the digest catches it */
        snprintf(name, sizeof name, "flip-%d", i);
        s_fresh(&s, name, dir, sizeof dir);
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        assert_int_equal(fsutil_file_size(p, &size), SHOAL_OK);
        s_flip_byte(p, (off_t)(size - 2));
        assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_FORMAT);
        s_expect_msg(p, "SHA-256");
        /* removed */
        snprintf(name, sizeof name, "gone-%d", i);
        s_fresh(&s, name, dir, sizeof dir);
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        assert_int_equal(unlink(p), 0);
        assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_FORMAT);
        s_expect_msg(p, NULL);
    }

    /* manifest missing or damaged */
    s_fresh(&s, "nomanifest", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_FORMAT);
    s_expect_msg(p, NULL);
    assert_int_equal(fsutil_write_file(p, "{\"files\": 3}", 12), SHOAL_OK);
    assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_FORMAT);
    s_expect_msg(p, NULL);
    snprintf(p, sizeof p, "%s/damage/none/step-00000001", s_root);
    assert_int_equal(ckpt_load(p, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_NOTFOUND);

    /* missing / misshapen tensors with a consistent manifest */
    int n = model_tensor_list(&s_cfg, NULL, 0);
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    model_tensor_list(&s_cfg, t, n);
    const char *victim = t[n - 2].name;
    s_fresh(&s, "model-missing", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    tu_variant_t v = {.dtype = ST_F32, .drop = victim};
    assert_int_equal(tu_write_model(p, &s_cfg, s.p, &v), SHOAL_OK);
    s_rewrite_manifest(dir);
    assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_NOTFOUND);
    s_expect_msg(p, victim);

    s_fresh(&s, "model-shape", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    v = (tu_variant_t){.dtype = ST_F32, .bad_shape = victim};
    assert_int_equal(tu_write_model(p, &s_cfg, s.p, &v), SHOAL_OK);
    s_rewrite_manifest(dir);
    assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_FORMAT);
    s_expect_msg(p, victim);

    /* optimizer file without one moment, or with the wrong shape */
    char opt_name[160];
    snprintf(opt_name, sizeof opt_name, "%s.exp_avg_sq", victim);
    s_fresh(&s, "opt-missing", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/optimizer.safetensors", dir);
    {
        st_file_t *f = NULL;
        assert_int_equal(st_open(p, &f), SHOAL_OK);
        int cnt = st_count(f), k = 0;
        st_tensor_t *keep = calloc((size_t)cnt, sizeof *keep);
        for (int i = 0; i < cnt; i++) {
            const char *nm = st_name(f, i);
            if (strcmp(nm, opt_name) == 0)
                continue;
            st_info_t in;
            uint64_t nb;
            st_info(f, nm, &in);
            keep[k] = (st_tensor_t){nm, in.dtype, in.ndim, {0}, NULL};
            memcpy(keep[k].shape, in.shape, sizeof in.shape);
            st_data(f, nm, &keep[k].data, &nb);
            k++;
        }
        char p2[720];
        snprintf(p2, sizeof p2, "%s.new", p);
        assert_int_equal(st_write_file(p2, keep, k, NULL), SHOAL_OK);
        /* and a second variant: the same tensor present with a transposed shape */
        char p3[720];
        snprintf(p3, sizeof p3, "%s.shape", p);
        /* victim is 1-D (model.norm.weight): the same elements as a [1, d] matrix */
        assert_int_equal(t[n - 2].ndim, 1);
        keep[k] = (st_tensor_t){opt_name, ST_F32, 2, {1, t[n - 2].shape[0]}, NULL};
        st_data(f, opt_name, &keep[k].data, &(uint64_t){0});
        assert_int_equal(st_write_file(p3, keep, k + 1, NULL), SHOAL_OK);
        st_close(&f);
        free(keep);
        assert_int_equal(rename(p2, p), 0);
        s_rewrite_manifest(dir);
        assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_NOTFOUND);
        s_expect_msg(p, opt_name);
        assert_int_equal(rename(p3, p), 0);
        s_rewrite_manifest(dir);
        assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_ERR_FORMAT);
        s_expect_msg(p, opt_name);
    }

    /* a config that differs from the run's: the key is named */
    s_fresh(&s, "config", dir, sizeof dir);
    model_config_t other = s_cfg;
    other.rope_theta = 5e5;
    assert_int_equal(ckpt_load(dir, &other, b.p, b.m, b.v, NULL), SHOAL_ERR_INVALID);
    s_expect_msg("config.json", "rope_theta");
    other = s_cfg;
    other.hidden_size = 64;
    assert_int_equal(ckpt_load(dir, &other, b.p, b.m, b.v, NULL), SHOAL_ERR_INVALID);
    s_expect_msg("config.json", "hidden_size");
    /* the intact copy still loads */
    assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, NULL), SHOAL_OK);
    free(t);
    s_state_free(&b);
    s_state_free(&s);
}

/* A writer process killed at random moments never leaves a step-* dir that fails to load. */
static void test_sigkill_while_writing(void **state)
{
    (void)state;
    model_config_t big;
    model_config_tiny(&big); /* ~1.8M parameters: ~22 MB per checkpoint */
    int64_t n = model_dir_param_count(&big);
    char root[512];
    s_sub(root, sizeof root, "kill");
    float *p = malloc((size_t)n * sizeof *p);
    float *m = malloc((size_t)n * sizeof *m);
    float *v = malloc((size_t)n * sizeof *v);
    int mid_write = 0, committed = 0;
    const int delays_ms[] = {15, 40, 90, 160, 250, 30, 120, 70};
    int64_t next = 1;
    for (int round = 0; round < 8; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (int64_t step = next;; step++) {
                for (int64_t i = 0; i < n; i++)
                    p[i] = m[i] = v[i] = (float)step + (float)(i & 7);
                char st[64];
                snprintf(st, sizeof st, "{\"step\": %lld}", (long long)step);
                if (ckpt_save(root, step, &big, p, m, v, st, 2) != SHOAL_OK)
                    _exit(3);
            }
        }
        clock_sleep_ms(delays_ms[round]);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status)); /* it was still writing, not failed */
        mid_write += s_count_entries(root, ".tmp-") > 0;

        /* every committed step dir loads and holds the values of its own step */
        int64_t steps[16];
        int count = 0;
        assert_int_equal(ckpt_list(root, steps, 16, &count), SHOAL_OK);
        assert_true(count <= 3); /* keep 2, plus one being committed when killed */
        for (int k = 0; k < count; k++) {
            char dir[600];
            snprintf(dir, sizeof dir, "%s/step-%08lld", root, (long long)steps[k]);
            char *st = NULL;
            memset(p, 0, (size_t)n * sizeof *p);
            shoal_err_t rc = ckpt_load(dir, &big, p, m, v, &st);
            if (rc != SHOAL_OK)
                fail_msg("round %d: %s does not load: %s", round, dir, shoal_errmsg());
            for (int64_t i = 0; i < n; i += 4099)
                assert_true(p[i] == (float)steps[k] + (float)(i & 7));
            char want[64];
            snprintf(want, sizeof want, "{\"step\": %lld}", (long long)steps[k]);
            assert_string_equal(st, want);
            free(st);
        }
        int64_t latest = 0;
        if (ckpt_latest(root, &latest, NULL, 0) == SHOAL_OK) {
            committed++;
            next = latest + 1;
        }
    }
    print_message("sigkill: %d of 8 kills left a partial .tmp dir, %d rounds had a commit\n",
                  mid_write, committed);
    assert_true(mid_write >= 1);
    /* the next save cleans the dead writers' temp dirs */
    for (int64_t i = 0; i < n; i++)
        p[i] = m[i] = v[i] = 0.5f;
    assert_int_equal(ckpt_save(root, next, &big, p, m, v, NULL, 2), SHOAL_OK);
    assert_int_equal(s_count_entries(root, ".tmp-"), 0);
    free(p);
    free(m);
    free(v);
}

static void test_async_writer(void **state)
{
    (void)state;
    char root[512], dir[600];
    s_sub(root, sizeof root, "async");
    s_state_t s, ref, b;
    s_state_new(&s, 6);
    s_state_new(&ref, 6);
    s_state_new(&b, 7);
    ckpt_writer_t *w = ckpt_writer_new();
    assert_non_null(w);
    assert_int_equal(ckpt_writer_last_step(w), -1);
    assert_int_equal(ckpt_writer_wait(w), SHOAL_OK); /* nothing in flight */
    assert_int_equal(ckpt_writer_submit(w, root, 1, &s_cfg, s.p, s.m, s.v, s_n, "{\"step\": 1}", 0),
                     SHOAL_OK);
    /* the caller's buffers are free again at once: the writer took a snapshot */
    tu_fill(s.p, s_n, 1234);
    assert_int_equal(ckpt_writer_submit(w, root, 2, &s_cfg, s.p, s.m, s.v, s_n, "{\"step\": 2}", 0),
                     SHOAL_OK);
    assert_int_equal(ckpt_writer_wait(w), SHOAL_OK);
    assert_int_equal(ckpt_writer_last_step(w), 2);
    snprintf(dir, sizeof dir, "%s/step-00000001", root);
    char *st = NULL;
    assert_int_equal(ckpt_load(dir, &s_cfg, b.p, b.m, b.v, &st), SHOAL_OK);
    assert_memory_equal(b.p, ref.p, (size_t)s_n * sizeof(float));
    s_check_moments(b.m, ref.m);
    assert_string_equal(st, "{\"step\": 1}");
    free(st);
    snprintf(dir, sizeof dir, "%s/step-00000002", root);
    assert_int_equal(ckpt_load(dir, &s_cfg, b.p, NULL, NULL, NULL), SHOAL_OK);
    assert_memory_equal(b.p, s.p, (size_t)s_n * sizeof(float));

    /* a failing write: reported once, message carried over from the writer thread */
    char bad_root[700];
    snprintf(bad_root, sizeof bad_root, "%s/step-00000002/config.json/sub", root);
    assert_int_equal(ckpt_writer_submit(w, bad_root, 3, &s_cfg, s.p, s.m, s.v, s_n, NULL, 0),
                     SHOAL_OK);
    assert_int_equal(ckpt_writer_wait(w), SHOAL_ERR_IO);
    s_expect_msg("config.json", "step 3");
    assert_int_equal(ckpt_writer_wait(w), SHOAL_OK);
    /* ...or by the next submit, which then starts nothing */
    assert_int_equal(ckpt_writer_submit(w, bad_root, 4, &s_cfg, s.p, s.m, s.v, s_n, NULL, 0),
                     SHOAL_OK);
    assert_int_equal(ckpt_writer_submit(w, root, 5, &s_cfg, s.p, s.m, s.v, s_n, NULL, 0),
                     SHOAL_ERR_IO);
    s_expect_msg("step 4", NULL);
    assert_int_equal(ckpt_writer_wait(w), SHOAL_OK);
    int64_t step;
    assert_int_equal(ckpt_latest(root, &step, NULL, 0), SHOAL_OK);
    assert_int_equal(step, 2);
    assert_int_equal(ckpt_writer_submit(w, root, 5, &s_cfg, s.p, s.m, s.v, s_n - 1, NULL, 0),
                     SHOAL_ERR_INVALID);
    assert_int_equal(ckpt_writer_submit(w, root, 5, &s_cfg, s.p, s.m, s.v, s_n, NULL, 1), SHOAL_OK);
    ckpt_writer_destroy(&w); /* waits for step 5 */
    assert_null(w);
    ckpt_writer_destroy(&w);
    assert_int_equal(ckpt_latest(root, &step, NULL, 0), SHOAL_OK);
    assert_int_equal(step, 5);
    int64_t steps[4];
    int count;
    assert_int_equal(ckpt_list(root, steps, 4, &count), SHOAL_OK);
    assert_int_equal(count, 1);
    s_state_free(&s);
    s_state_free(&ref);
    s_state_free(&b);
}

/* The layout's names and the manifest reader (what the worker reports from a checkpoint). */
static void test_layout(void **state)
{
    (void)state;
    char name[32], dir[600], p[900];
    int64_t step = -1;
    assert_int_equal(ckpt_step_dir_name(20, name, sizeof name), SHOAL_OK);
    assert_string_equal(name, "step-00000020");
    assert_int_equal(ckpt_step_dir_name(123456789, name, sizeof name), SHOAL_OK);
    assert_string_equal(name, "step-123456789");
    assert_int_equal(ckpt_step_dir_name(-1, name, sizeof name), SHOAL_ERR_INVALID);
    assert_int_equal(ckpt_step_dir_name(20, name, 13), SHOAL_ERR_INVALID);
    assert_int_equal(ckpt_step_dir("/r", 7, p, sizeof p), SHOAL_OK);
    assert_string_equal(p, "/r/step-00000007");
    assert_int_equal(ckpt_step_dir("/r", 7, p, 16), SHOAL_ERR_INVALID);
    assert_true(ckpt_step_dir_parse("step-00000020", &step) && step == 20);
    assert_true(ckpt_step_dir_parse("step-123456789", &step) && step == 123456789);
    const char *bad[] = {"step-0000020",        "step-00000020x", "step-",
                         "step--0000020",       "Step-00000020",  "step-0000000000000000001",
                         ".tmp-step-00000020-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(ckpt_step_dir_parse(bad[i], &step));

    s_state_t s;
    s_state_new(&s, 6);
    s_fresh(&s, "layout", dir, sizeof dir);
    ckpt_manifest_t m;
    assert_int_equal(ckpt_manifest_read(dir, &m), SHOAL_OK);
    assert_int_equal(m.step, 1);
    assert_int_equal(m.n_files, 4);
    for (int i = 0; i < m.n_files; i++) {
        uint64_t size = 0;
        snprintf(p, sizeof p, "%s/%s", dir, m.files[i].name);
        assert_int_equal(fsutil_file_size(p, &size), SHOAL_OK);
        assert_int_equal(size, m.files[i].size);
        assert_int_equal(strlen(m.files[i].sha256), SHA256_HEX_LEN);
    }
    /* hostile manifests: each is refused, naming the manifest */
    const char *hostile[] = {
        "{\"format\": \"shoal-checkpoint-v1\", \"format\": \"x\", \"files\": []}",
        "{\"format\": \"shoal-checkpoint-v2\", \"files\": []}",
        "{\"format\": \"shoal-checkpoint-v1\", \"step\": -1, \"files\": []}",
        ("{\"format\": \"shoal-checkpoint-v1\", \"files\": [{\"name\": \"../x\", \"size\": 1, "
         "\"sha256\": \"00\"}]}"),
        "{\"format\": \"shoal-checkpoint-v1\", \"files\": []}", /* lists none of the files */
    };
    snprintf(p, sizeof p, "%s/" CKPT_MANIFEST_NAME, dir);
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        assert_int_equal(fsutil_write_file(p, hostile[i], strlen(hostile[i])), SHOAL_OK);
        assert_int_equal(ckpt_manifest_read(dir, &m), SHOAL_ERR_FORMAT);
        s_expect_msg(p, NULL);
    }
    json_t *files = json_array();
    for (int i = 0; i <= CKPT_MANIFEST_MAX_FILES; i++)
        json_array_append_new(files,
                              json_pack("{s:s,s:i,s:s}", "name", "config.json", "size", 1, "sha256",
                                        "0000000000000000000000000000000000000000"
                                        "000000000000000000000000"));
    json_t *root = json_pack("{s:s,s:o}", "format", "shoal-checkpoint-v1", "files", files);
    assert_int_equal(json_dump_file(root, p, 0), 0);
    json_decref(root);
    assert_int_equal(ckpt_manifest_read(dir, &m), SHOAL_ERR_FORMAT);
    snprintf(p, sizeof p, "%s/damage/nowhere", s_root);
    assert_int_equal(ckpt_manifest_read(p, &m), SHOAL_ERR_NOTFOUND);
    s_state_free(&s);
}

static void s_expect_files_equal(const char *a, const char *b)
{
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    assert_int_equal(fsutil_read_file(a, &x, &nx), SHOAL_OK);
    assert_int_equal(fsutil_read_file(b, &y, &ny), SHOAL_OK);
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    free(x);
    free(y);
}

/* Four cell shards (two stages x two expert ranks, one of them through the async writer)
 * reassemble the whole model bit for bit; the whole-model save is the shard holding everything
 * and writes what model_dir_save writes; a missing tensor and a corrupt shard are named. */
static void test_shards(void **state)
{
    (void)state;
    int n = model_tensor_list(&s_cfg, NULL, 0);
    model_tensor_info_t *info = calloc((size_t)n, sizeof *info);
    ckpt_tensor_t *t = calloc((size_t)n, sizeof *t);
    model_tensor_list(&s_cfg, info, n);
    s_state_t s, b;
    s_state_new(&s, 21);
    s_state_new(&b, 22);
    char roots[4][512], dirs[4][600], p[700], q[700];
    const char *dp[4];
    ckpt_writer_t *w = ckpt_writer_new();
    int covered = 0;
    for (int c = 0; c < 4; c++) {
        snprintf(roots[c], sizeof roots[c], "%s/shards/s%de%d", s_root, c / 2, c % 2);
        snprintf(dirs[c], sizeof dirs[c], "%s/step-00000007", roots[c]);
        dp[c] = dirs[c];
        int k = tu_cell_tensors(info, n, s.p, s.m, s.v, c / 2, c % 2, t);
        assert_true(k > 0 && k < n);
        covered += k;
        char st[32];
        snprintf(st, sizeof st, "{\"cell\": %d}", c);
        if (c == 3) {
            assert_int_equal(
                ckpt_writer_submit_tensors(w, roots[c], 7, &s_cfg, t, k, st, 0), SHOAL_OK);
            memset(t, 0, (size_t)k * sizeof *t); /* the writer holds its own copy */
            assert_int_equal(ckpt_writer_wait(w), SHOAL_OK);
        } else {
            assert_int_equal(ckpt_save_tensors(roots[c], 7, &s_cfg, t, k, st, 0), SHOAL_OK);
        }
    }
    ckpt_writer_destroy(&w);
    assert_true(covered > n); /* the non-expert tensors are held twice */

    /* all four: every tensor, its moments, dirs[0]'s trainer state */
    ckpt_tensors_flat(info, n, b.p, b.m, b.v, t);
    char *st = NULL;
    assert_int_equal(ckpt_load_tensors(dp, 4, &s_cfg, t, n, &st), SHOAL_OK);
    assert_string_equal(st, "{\"cell\": 0}");
    free(st);
    assert_memory_equal(b.p, s.p, (size_t)s_n * sizeof(float));
    for (int i = 0; i < n; i++)
        if (!info[i].is_bias) {
            size_t bytes = (size_t)model_tensor_numel(&info[i]) * sizeof(float);
            assert_memory_equal(t[i].m, s.m + (t[i].m - b.m), bytes);
            assert_memory_equal(t[i].v, s.v + (t[i].v - b.v), bytes);
        }
    /* a subset: only stage 1's tensors of ep rank 1, from the dirs in another order */
    const char *rev[4] = {dirs[3], dirs[2], dirs[1], dirs[0]};
    int k = tu_cell_tensors(info, n, b.p, b.m, b.v, 1, 1, t);
    memset(b.p, 0, (size_t)s_n * sizeof(float));
    assert_int_equal(ckpt_load_tensors(rev, 4, &s_cfg, t, k, NULL), SHOAL_OK);
    for (int i = 0; i < k; i++)
        assert_memory_equal(t[i].param, s.p + (t[i].param - b.p),
                            (size_t)model_tensor_numel(t[i].info) * sizeof(float));

    /* the stage-0 shards alone lack the first tensor of layer 1: named */
    ckpt_tensors_flat(info, n, b.p, NULL, NULL, t);
    assert_int_equal(ckpt_load_tensors(dp, 2, &s_cfg, t, n, NULL), SHOAL_ERR_NOTFOUND);
    s_expect_msg("missing tensor model.layers.1.input_layernorm.weight", NULL);
    /* a corrupt shard is refused by its digest, naming the file */
    snprintf(p, sizeof p, "%s/model.safetensors", dirs[2]);
    uint64_t size;
    assert_int_equal(fsutil_file_size(p, &size), SHOAL_OK);
    s_flip_byte(p, (off_t)(size - 3));
    assert_int_equal(ckpt_load_tensors(dp, 4, &s_cfg, t, n, NULL), SHOAL_ERR_FORMAT);
    s_expect_msg(p, "SHA-256");
    /* a tensor that is not the model's is refused before anything is written */
    model_tensor_info_t odd = info[0];
    odd.shape[0] += 1;
    ckpt_tensor_t bad = {&odd, s.p, s.m, s.v};
    snprintf(p, sizeof p, "%s/shards/bad", s_root);
    assert_int_equal(ckpt_save_tensors(p, 1, &s_cfg, &bad, 1, NULL, 0), SHOAL_ERR_INVALID);
    s_expect_msg(info[0].name, NULL);
    assert_int_equal(s_count_entries(p, "step-"), 0);

    /* the whole model is the shard holding everything: ckpt_save writes exactly that, and its
     * model file is byte for byte what model_dir_save writes */
    char whole[2][512];
    snprintf(whole[0], sizeof whole[0], "%s/shards/whole-a", s_root);
    snprintf(whole[1], sizeof whole[1], "%s/shards/whole-b", s_root);
    assert_int_equal(ckpt_save(whole[0], 3, &s_cfg, s.p, s.m, s.v, NULL, 0), SHOAL_OK);
    ckpt_tensors_flat(info, n, s.p, s.m, s.v, t);
    assert_int_equal(ckpt_save_tensors(whole[1], 3, &s_cfg, t, n, NULL, 0), SHOAL_OK);
    const char *files[] = {"config.json", "model.safetensors", "optimizer.safetensors",
                           "trainer_state.json", "manifest.json"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/step-00000003/%s", whole[0], files[i]);
        snprintf(q, sizeof q, "%s/step-00000003/%s", whole[1], files[i]);
        s_expect_files_equal(p, q);
    }
    snprintf(q, sizeof q, "%s/shards/model-dir", s_root);
    assert_int_equal(model_dir_save(q, &s_cfg, s.p), SHOAL_OK);
    snprintf(p, sizeof p, "%s/step-00000003/model.safetensors", whole[0]);
    snprintf(q, sizeof q, "%s/shards/model-dir/model.safetensors", s_root);
    s_expect_files_equal(p, q);
    free(t);
    free(info);
    s_state_free(&s);
    s_state_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_keep_and_latest),
        cmocka_unit_test(test_stale_tmp),    cmocka_unit_test(test_damage),
        cmocka_unit_test(test_async_writer), cmocka_unit_test(test_sigkill_while_writing),
        cmocka_unit_test(test_layout),       cmocka_unit_test(test_shards),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
