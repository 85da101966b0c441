/* test_ckpt_export: checkpoint shards of a 2-stage x 2-ep run exported as one model directory:
 * f32 bit for bit, bf16 within bf16 rounding (biases exact), the sharded index form, a DP-only
 * run's single dir, and refusals (missing tensor named, corrupt shard named, target in use) that
 * leave nothing behind. Every export is read back with model_dir_load. */
/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "ckpt_export.h"
#include "ckpt_testutil.h"
#include "log.h"

static char *s_root;
static model_config_t s_cfg;
static int64_t s_n;
static int s_nt;
static model_tensor_info_t *s_info;
static float *s_p, *s_m, *s_v;
static char s_dirs[4][600];
static const char *s_dp[4];

static void s_expect_msg(const char *a, const char *b)
{
    if (!strstr(shoal_errmsg(), a) || (b && !strstr(shoal_errmsg(), b)))
        fail_msg("message '%s' lacks '%s' or '%s'", shoal_errmsg(), a, b ? b : "");
}

/* Four cell shards of step 9 (ckpt_testutil.h's cells) under s_root/shards. */
static int s_setup(void **state)
{
    (void)state;
    log_set_level(LOG_LVL_ERROR);
    tu_small_config(&s_cfg);
    s_n = model_dir_param_count(&s_cfg);
    s_nt = model_tensor_list(&s_cfg, NULL, 0);
    s_info = calloc((size_t)s_nt, sizeof *s_info);
    model_tensor_list(&s_cfg, s_info, s_nt);
    s_p = malloc((size_t)s_n * sizeof *s_p);
    s_m = malloc((size_t)s_n * sizeof *s_m);
    s_v = malloc((size_t)s_n * sizeof *s_v);
    tu_fill(s_p, s_n, 31);
    tu_fill(s_m, s_n, 32);
    tu_fill(s_v, s_n, 33);
    s_root = tu_mkdtemp("export");
    if (!s_root)
        return -1;
    ckpt_tensor_t *t = calloc((size_t)s_nt, sizeof *t);
    for (int c = 0; c < 4; c++) {
        char root[512];
        snprintf(root, sizeof root, "%s/shards/s%de%d", s_root, c / 2, c % 2);
        snprintf(s_dirs[c], sizeof s_dirs[c], "%s/step-00000009", root);
        s_dp[c] = s_dirs[c];
        int k = tu_cell_tensors(s_info, s_nt, s_p, s_m, s_v, c / 2, c % 2, t);
        if (ckpt_save_tensors(root, 9, &s_cfg, t, k, NULL, 0) != SHOAL_OK)
            return -1;
    }
    free(t);
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    int rc = fsutil_remove_tree(s_root) == SHOAL_OK ? 0 : -1;
    free(s_root);
    free(s_info);
    free(s_p);
    free(s_m);
    free(s_v);
    return rc;
}

static void s_out(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/out/%s", s_root, name);
}

/* model_dir_load of dir: the config is ours; the params into a malloc'd array. */
static float *s_load(const char *dir)
{
    model_config_t cfg;
    float *p = NULL;
    int64_t n = 0;
    if (model_dir_load(dir, &cfg, &p, &n) != SHOAL_OK)
        fail_msg("%s does not load: %s", dir, shoal_errmsg());
    assert_int_equal(n, s_n);
    assert_true(model_config_equal(&cfg, &s_cfg));
    return p;
}

static int s_exists(const char *dir, const char *name)
{
    char p[800];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

/* No "<out>.tmp-*" is left next to the outputs. */
static void s_expect_no_tmp(void)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/out", s_root);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp-"))
            fail_msg("left behind: %s", e->d_name);
    if (d)
        closedir(d);
}

static void test_f32_bit_exact(void **state)
{
    (void)state;
    char out[600];
    s_out(out, sizeof out, "f32");
    /* replicas in any order: the values are the same */
    const char *order[4] = {s_dirs[3], s_dirs[1], s_dirs[2], s_dirs[0]};
    assert_int_equal(ckpt_export(order, 4, out, NULL), SHOAL_OK);
    assert_true(s_exists(out, "model.safetensors"));
    assert_false(s_exists(out, "model.safetensors.index.json"));
    assert_false(s_exists(out, "optimizer.safetensors"));
    float *p = s_load(out);
    assert_memory_equal(p, s_p, (size_t)s_n * sizeof(float));
    free(p);
    /* the tensors are named and ordered as model_tensor_list */
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    st_file_t *f = NULL;
    assert_int_equal(st_open(path, &f), SHOAL_OK);
    assert_int_equal(st_count(f), s_nt);
    for (int i = 0; i < s_nt; i++)
        assert_string_equal(st_name(f, i), s_info[i].name);
    st_close(&f);
    /* the target is taken now: refused, and the first export is untouched */
    assert_int_equal(ckpt_export(s_dp, 4, out, NULL), SHOAL_ERR_STATE);
    s_expect_msg(out, "exists");
    s_expect_no_tmp();
}

static void test_bf16(void **state)
{
    (void)state;
    char out[600], path[700];
    s_out(out, sizeof out, "bf16");
    ckpt_export_opts_t o = {.dtype = CKPT_EXPORT_BF16};
    assert_int_equal(ckpt_export(s_dp, 4, out, &o), SHOAL_OK);
    float *p = s_load(out);
    int64_t off = 0;
    for (int i = 0; i < s_nt; i++) {
        for (int64_t j = off; j < off + model_tensor_numel(&s_info[i]); j++) {
            float want = s_info[i].is_bias ? s_p[j] : st_bf16_to_f32(st_f32_to_bf16(s_p[j]));
            assert_memory_equal(&p[j], &want, sizeof want); /* round to nearest even */
            assert_true(fabsf(p[j] - s_p[j]) <= fabsf(s_p[j]) * (1.0f / 256));
        }
        off += model_tensor_numel(&s_info[i]);
    }
    free(p);
    snprintf(path, sizeof path, "%s/config.json", out);
    json_t *cfg = json_load_file(path, 0, NULL);
    assert_non_null(cfg);
    assert_string_equal(json_string_value(json_object_get(cfg, "torch_dtype")), "bfloat16");
    json_decref(cfg);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    st_file_t *f = NULL;
    st_info_t in;
    assert_int_equal(st_open(path, &f), SHOAL_OK);
    assert_int_equal(st_info(f, s_info[0].name, &in), SHOAL_OK);
    assert_int_equal(in.dtype, ST_BF16);
    st_close(&f);
}

static void test_sharded_index(void **state)
{
    (void)state;
    char out[600], path[700];
    s_out(out, sizeof out, "sharded");
    const uint64_t max = 20000; /* the small model is ~160 KB in F32 */
    ckpt_export_opts_t o = {.max_shard_bytes = max};
    assert_int_equal(ckpt_export(s_dp, 4, out, &o), SHOAL_OK);
    assert_false(s_exists(out, "model.safetensors"));
    float *p = s_load(out);
    assert_memory_equal(p, s_p, (size_t)s_n * sizeof(float));
    free(p);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
    json_t *idx = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(idx);
    json_t *map = json_object_get(idx, "weight_map");
    assert_int_equal(json_object_size(map), s_nt);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(idx, "metadata"),
                                                        "total_size")),
                     s_n * 4);
    /* the files are model-0000i-of-0000n, each at most max bytes of data unless it holds a
     * single larger tensor; each tensor is where the map says */
    const char *last = json_string_value(json_object_get(map, s_info[s_nt - 1].name));
    int n_files = 0, of = 0;
    assert_int_equal(sscanf(last, "model-%05d-of-%05d.safetensors", &n_files, &of), 2);
    assert_int_equal(n_files, of);
    assert_true(n_files > 2);
    for (int k = 1; k <= n_files; k++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", out, k, n_files);
        st_file_t *f = NULL;
        assert_int_equal(st_open(path, &f), SHOAL_OK);
        uint64_t bytes = 0;
        for (int i = 0; i < st_count(f); i++) {
            st_info_t in;
            st_info(f, st_name(f, i), &in);
            bytes += in.nbytes;
            assert_string_equal(json_string_value(json_object_get(map, st_name(f, i))),
                                strrchr(path, '/') + 1);
        }
        assert_true(bytes <= max || st_count(f) == 1);
        st_close(&f);
    }
    json_decref(idx);
}

static void test_dp_only(void **state)
{
    (void)state;
    char root[600], dir[700], out[600];
    snprintf(root, sizeof root, "%s/whole", s_root);
    assert_int_equal(ckpt_save(root, 4, &s_cfg, s_p, s_m, s_v, NULL, 0), SHOAL_OK);
    snprintf(dir, sizeof dir, "%s/step-00000004", root);
    const char *one = dir;
    s_out(out, sizeof out, "dp");
    assert_int_equal(ckpt_export(&one, 1, out, NULL), SHOAL_OK);
    float *p = s_load(out);
    assert_memory_equal(p, s_p, (size_t)s_n * sizeof(float));
    free(p);
}

static void test_refusals(void **state)
{
    (void)state;
    char out[600], path[700], cmd[1400];
    /* stage 0's shards alone: the first tensor of stage 1 is named, nothing is written */
    s_out(out, sizeof out, "missing");
    assert_int_equal(ckpt_export(s_dp, 2, out, NULL), SHOAL_ERR_NOTFOUND);
    s_expect_msg("missing tensor model.layers.1.input_layernorm.weight", NULL);
    assert_int_equal(access(out, F_OK), -1);
    /* a bad dtype is refused */
    ckpt_export_opts_t o = {.dtype = (ckpt_export_dtype_t)7};
    assert_int_equal(ckpt_export(s_dp, 4, out, &o), SHOAL_ERR_INVALID);
    /* a corrupt shard (a copy, so that the other tests keep theirs): named by its digest */
    char copy[600];
    snprintf(copy, sizeof copy, "%s/corrupt", s_root);
    snprintf(cmd, sizeof cmd, "cp -r %s %s", s_dirs[3], copy);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", copy);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b = 0;
    assert_int_equal(pread(fd, &b, 1, 200), 1);
    b ^= 1;
    assert_int_equal(pwrite(fd, &b, 1, 200), 1);
    close(fd);
    const char *dirs[4] = {s_dirs[0], s_dirs[1], s_dirs[2], copy};
    s_out(out, sizeof out, "corrupt");
    assert_int_equal(ckpt_export(dirs, 4, out, NULL), SHOAL_ERR_FORMAT);
    s_expect_msg(path, "SHA-256");
    assert_int_equal(access(out, F_OK), -1);
    /* an empty target dir is fine (it is replaced) */
    s_out(out, sizeof out, "empty");
    assert_int_equal(fsutil_mkdir_p(out), SHOAL_OK);
    assert_int_equal(ckpt_export(s_dp, 4, out, NULL), SHOAL_OK);
    assert_true(s_exists(out, "model.safetensors"));
    s_expect_no_tmp();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32_bit_exact), cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_sharded_index), cmocka_unit_test(test_dp_only),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
