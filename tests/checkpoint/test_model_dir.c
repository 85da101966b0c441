/* test_model_dir: model directories (single file and HF shards) to and from the flat float32
 * parameter array: exact round trip, dtype conversion, and every way a directory can be wrong. */
/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_testutil.h"

static char *s_root;
static model_config_t s_cfg;
static float *s_params;
static int64_t s_n;

static int s_setup(void **state)
{
    (void)state;
    tu_small_config(&s_cfg);
    if (model_config_validate(&s_cfg) != SHOAL_OK)
        return -1;
    s_n = model_dir_param_count(&s_cfg);
    s_params = malloc((size_t)s_n * sizeof *s_params);
    tu_fill(s_params, s_n, 7);
    s_root = tu_mkdtemp("md");
    return s_root ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    free(s_params);
    int rc = fsutil_remove_tree(s_root) == SHOAL_OK ? 0 : -1;
    free(s_root);
    return rc;
}

/* A fresh directory <root>/<name> with config.json of s_cfg. */
static void s_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", s_root, name);
    assert_int_equal(fsutil_mkdir_p(out), SHOAL_OK);
    char p[512];
    assert_true(snprintf(p, sizeof p, "%s/config.json", out) < (int)sizeof p);
    assert_int_equal(model_config_save(&s_cfg, p), SHOAL_OK);
}

static shoal_err_t s_load(const char *dir, float **p)
{
    model_config_t c;
    int64_t n = 0;
    shoal_err_t rc = model_dir_load(dir, &c, p, &n);
    if (rc == SHOAL_OK) {
        assert_true(model_config_equal(&c, &s_cfg));
        assert_int_equal(n, s_n);
    } else {
        assert_null(*p);
    }
    return rc;
}

static void s_expect_msg(const char *a, const char *b)
{
    if (!strstr(shoal_errmsg(), a) || (b && !strstr(shoal_errmsg(), b)))
        fail_msg("message '%s' lacks '%s' or '%s'", shoal_errmsg(), a, b ? b : "");
}

static void test_param_count(void **state)
{
    (void)state;
    int n = model_tensor_list(&s_cfg, NULL, 0);
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    model_tensor_list(&s_cfg, t, n);
    int64_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += model_tensor_numel(&t[i]);
    assert_int_equal(model_dir_param_count(&s_cfg), sum);
    free(t);
}

static void test_save_load_round_trip(void **state)
{
    (void)state;
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/saved/nested", s_root); /* save creates missing parents */
    assert_int_equal(model_dir_save(dir, &s_cfg, s_params), SHOAL_OK);
    float *back = NULL;
    assert_int_equal(s_load(dir, &back), SHOAL_OK);
    assert_memory_equal(back, s_params, (size_t)s_n * sizeof(float));
    free(back);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    st_file_t *f = NULL;
    assert_int_equal(st_open(p, &f), SHOAL_OK);
    assert_string_equal(st_metadata(f, "format"), "pt");
    assert_int_equal(st_count(f), model_tensor_list(&s_cfg, NULL, 0));
    /* canonical order in the file */
    model_tensor_info_t t0;
    model_tensor_list(&s_cfg, &t0, 1);
    assert_string_equal(st_name(f, 0), t0.name);
    st_close(&f);
}

static void test_dtype_conversion(void **state)
{
    (void)state;
    st_dtype_t dts[] = {ST_F64, ST_BF16, ST_F16};
    float *want = malloc((size_t)s_n * sizeof *want);
    for (int d = 0; d < 3; d++) {
        char dir[512], p[600];
        s_dir(dir, sizeof dir, st_dtype_name(dts[d]));
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        tu_variant_t v = {.dtype = dts[d]};
        assert_int_equal(tu_write_model(p, &s_cfg, s_params, &v), SHOAL_OK);
        for (int64_t i = 0; i < s_n; i++)
            want[i] = dts[d] == ST_F64    ? s_params[i]
                      : dts[d] == ST_BF16 ? st_bf16_to_f32(st_f32_to_bf16(s_params[i]))
                                          : st_f16_to_f32(st_f32_to_f16(s_params[i]));
        float *back = NULL;
        assert_int_equal(s_load(dir, &back), SHOAL_OK);
        assert_memory_equal(back, want, (size_t)s_n * sizeof(float));
        free(back);
    }
    free(want);
}

static void test_single_file_errors(void **state)
{
    (void)state;
    int n = model_tensor_list(&s_cfg, NULL, 0);
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    model_tensor_list(&s_cfg, t, n);
    const char *victim = t[5].name;
    char dir[512], p[600];
    float *back = NULL;

    s_dir(dir, sizeof dir, "missing");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    tu_variant_t v = {.dtype = ST_F32, .drop = victim};
    assert_int_equal(tu_write_model(p, &s_cfg, s_params, &v), SHOAL_OK);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_NOTFOUND);
    s_expect_msg(p, victim);

    s_dir(dir, sizeof dir, "shape");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    v = (tu_variant_t){.dtype = ST_F32, .bad_shape = victim};
    assert_int_equal(tu_write_model(p, &s_cfg, s_params, &v), SHOAL_OK);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT);
    s_expect_msg(p, victim);
    s_expect_msg("shape", NULL);

    const char *bias = NULL;
    for (int i = 0; i < n; i++)
        if (t[i].is_bias)
            bias = t[i].name;
    s_dir(dir, sizeof dir, "shape1d");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    v = (tu_variant_t){.dtype = ST_F32, .bad_shape = bias};
    assert_int_equal(tu_write_model(p, &s_cfg, s_params, &v), SHOAL_OK);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT);
    s_expect_msg(p, bias);

    s_dir(dir, sizeof dir, "extra");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    v = (tu_variant_t){.dtype = ST_F32, .extra = "model.layers.9.extra.weight"};
    assert_int_equal(tu_write_model(p, &s_cfg, s_params, &v), SHOAL_OK);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT);
    s_expect_msg(p, "model.layers.9.extra.weight");

    s_dir(dir, sizeof dir, "int");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    v = (tu_variant_t){.dtype = ST_F32, .as_i64 = victim};
    assert_int_equal(tu_write_model(p, &s_cfg, s_params, &v), SHOAL_OK);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT);
    s_expect_msg(p, victim);

    /* truncated: every few hundred bytes, never a crash, always FORMAT naming the file */
    s_dir(dir, sizeof dir, "trunc");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    v = (tu_variant_t){.dtype = ST_F32};
    assert_int_equal(tu_write_model(p, &s_cfg, s_params, &v), SHOAL_OK);
    uint64_t size;
    assert_int_equal(fsutil_file_size(p, &size), SHOAL_OK);
    for (uint64_t cut = size - 1; cut > 0; cut = cut > 997 ? cut - 997 : 0) {
        assert_int_equal(truncate(p, (off_t)cut), 0);
        assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT);
        s_expect_msg(p, NULL);
    }

    s_dir(dir, sizeof dir, "empty");
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_NOTFOUND);
    s_expect_msg(dir, "model.safetensors");

    snprintf(dir, sizeof dir, "%s/no-such-dir", s_root);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT); /* config.json unreadable */
    s_expect_msg(dir, "config.json");
    free(t);
}

/* Writes the sharded layout: `nshards` files + index (optionally damaged by `index_json`). */
static void s_write_sharded(const char *dir, int nshards, const char *index_json)
{
    int n = model_tensor_list(&s_cfg, NULL, 0);
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    model_tensor_list(&s_cfg, t, n);
    int per = (n + nshards - 1) / nshards;
    char p[600];
    size_t cap = 65536, at = 0;
    char *idx = malloc(cap);
    at += (size_t)snprintf(idx + at, cap - at, "{\"metadata\": {}, \"weight_map\": {");
    for (int s = 0; s < nshards; s++) {
        char fn[64];
        snprintf(fn, sizeof fn, "model-%05d-of-%05d.safetensors", s + 1, nshards);
        snprintf(p, sizeof p, "%s/%s", dir, fn);
        tu_variant_t v = {.dtype = ST_F32, .first = s * per, .count = per};
        if (s == nshards - 1)
            v.count = n - s * per;
        assert_int_equal(tu_write_model(p, &s_cfg, s_params, &v), SHOAL_OK);
        for (int i = s * per; i < s * per + v.count; i++)
            at += (size_t)snprintf(idx + at, cap - at, "%s\"%s\": \"%s\"", i ? ", " : "", t[i].name,
                                   fn);
    }
    snprintf(idx + at, cap - at, "}}");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    const char *text = index_json ? index_json : idx;
    assert_int_equal(fsutil_write_file(p, text, strlen(text)), SHOAL_OK);
    free(idx);
    free(t);
}

static void test_sharded(void **state)
{
    (void)state;
    char dir[512], p[600];
    float *back = NULL;
    s_dir(dir, sizeof dir, "sharded");
    s_write_sharded(dir, 3, NULL);
    assert_int_equal(s_load(dir, &back), SHOAL_OK);
    assert_memory_equal(back, s_params, (size_t)s_n * sizeof(float));
    free(back);
    back = NULL;

    /* a shard file gone */
    snprintf(p, sizeof p, "%s/model-00002-of-00003.safetensors", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_NOTFOUND);
    s_expect_msg(p, NULL);

    /* index damage */
    model_tensor_info_t t0;
    model_tensor_list(&s_cfg, &t0, 1);
    char idx[512];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    s_dir(dir, sizeof dir, "sh-missing");
    s_write_sharded(dir, 2, "{\"weight_map\": {}}");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_NOTFOUND);
    s_expect_msg(p, t0.name);

    s_dir(dir, sizeof dir, "sh-escape");
    snprintf(idx, sizeof idx, "{\"weight_map\": {\"%s\": \"../sharded/model.safetensors\"}}",
             t0.name);
    s_write_sharded(dir, 2, idx);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT);
    s_expect_msg(p, t0.name);

    s_dir(dir, sizeof dir, "sh-extra");
    snprintf(idx, sizeof idx,
             "{\"weight_map\": {\"bogus.weight\": \"model-00001-of-00002.safetensors\"}}");
    s_write_sharded(dir, 2, idx);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT);
    s_expect_msg("bogus.weight", NULL);

    s_dir(dir, sizeof dir, "sh-json");
    s_write_sharded(dir, 2, "{\"weight_map\": [");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT);
    s_expect_msg(p, NULL);

    s_dir(dir, sizeof dir, "sh-type");
    s_write_sharded(dir, 2, "{\"weight_map\": 5}");
    assert_int_equal(s_load(dir, &back), SHOAL_ERR_FORMAT);
    s_expect_msg("weight_map", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_count),      cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_dtype_conversion), cmocka_unit_test(test_single_file_errors),
        cmocka_unit_test(test_sharded),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
