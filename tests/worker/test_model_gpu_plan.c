/* test_model_gpu_plan: the host plan of the device model (worker/model_gpu_plan.h), which runs
 * without a GPU: tensor offsets agree with the layout and with the adjacency the device code
 * relies on (q|k|v, gate|up), the fused AdamW segments cover every trainable element exactly
 * once and skip the balancing biases, and adamw_update_segments over them gives bitwise what the
 * CPU trainer's per-tensor loop (grad_scale, then adamw_update per tensor) gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "model_gpu_plan.h"
#include "optim.h"

static int64_t s_off(const model_layout_t *lay, const char *fmt, int l, int e)
{
    char name[96];
    snprintf(name, sizeof name, fmt, l, e);
    const int i = model_layout_find(lay, name);
    assert_true(i >= 0);
    return lay->offsets[i];
}

/* Offsets and adjacency for one config. */
static void s_check_offsets(const model_config_t *cfg)
{
    model_layout_t lay;
    model_gpu_plan_t p;
    assert_int_equal(model_layout_init(&lay, cfg), SHOAL_OK);
    assert_int_equal(model_gpu_plan_init(&p, &lay), SHOAL_OK);
    const int64_t d = cfg->hidden_size, f = cfg->intermediate_size, fe = cfg->moe_intermediate_size;
    assert_int_equal(p.embed, 0);
    assert_int_equal(p.head, lay.offsets[lay.n_tensors - 1]);
    assert_int_equal(p.norm_f, lay.offsets[lay.n_tensors - 2]);
    int n_moe = 0;
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        const model_gpu_layer_t *w = &p.layers[l];
        assert_int_equal(w->is_moe, model_config_is_moe_layer(cfg, l));
        /* attention_forward reads w_qkv as one [3d, d] block */
        assert_int_equal(w->w_qkv + d * d, s_off(&lay, "model.layers.%d.self_attn.k_proj.weight", l, 0));
        assert_int_equal(w->w_qkv + 2 * d * d,
                         s_off(&lay, "model.layers.%d.self_attn.v_proj.weight", l, 0));
        if (!w->is_moe) {
            assert_int_equal(w->w_gu + f * d, s_off(&lay, "model.layers.%d.mlp.up_proj.weight", l, 0));
            continue;
        }
        assert_int_equal(p.bias_of_moe[n_moe++], w->bias);
        for (int e = 0; e < cfg->n_routed_experts; e++) {
            assert_int_equal(w->expert_gu[e] + fe * d,
                             s_off(&lay, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e));
            assert_int_equal(w->expert_d[e],
                             s_off(&lay, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e));
        }
        assert_true((w->shared_gu >= 0) == (cfg->n_shared_experts > 0));
    }
    assert_int_equal(n_moe, p.n_moe);
    assert_int_equal(n_moe, lay.n_moe_layers);

    /* segments: every element either in exactly one segment (with its tensor's decay flag) or
     * a bias; packed positions consecutive */
    unsigned char *seen = calloc((size_t)lay.n_params, 1);
    assert_non_null(seen);
    int64_t packed = 0;
    for (int s = 0; s < p.n_segments; s++) {
        assert_int_equal(p.segments[s].packed, packed);
        packed += p.segments[s].n;
        for (int64_t i = 0; i < p.segments[s].n; i++)
            seen[p.segments[s].start + i] += (unsigned char)(1 + p.segments[s].decay);
    }
    assert_int_equal(packed, p.n_trainable);
    int64_t n_bias = 0;
    for (int t = 0; t < lay.n_tensors; t++) {
        const model_tensor_info_t *ti = &lay.tensors[t];
        const unsigned char want = ti->is_bias ? 0 : (unsigned char)(1 + (ti->ndim == 2));
        n_bias += ti->is_bias ? model_tensor_numel(ti) : 0;
        for (int64_t i = 0; i < model_tensor_numel(ti); i++)
            assert_int_equal(seen[lay.offsets[t] + i], want);
    }
    assert_int_equal(p.n_trainable + n_bias, lay.n_params);
    /* merging: far fewer segments than tensors (norm weights break the runs) */
    assert_true(p.n_segments < lay.n_tensors);
    free(seen);
    model_gpu_plan_fini(&p);
    model_gpu_plan_fini(&p); /* idempotent */
    model_layout_fini(&lay);
}

static void test_offsets_tiny(void **state)
{
    (void)state;
    model_config_t cfg;
    model_config_tiny(&cfg);
    s_check_offsets(&cfg);
}

/* No shared experts, two dense layers first, more experts. */
static void test_offsets_variant(void **state)
{
    (void)state;
    model_config_t cfg;
    model_config_tiny(&cfg);
    cfg.n_shared_experts = 0;
    cfg.first_k_dense_replace = 2;
    cfg.n_routed_experts = 12;
    cfg.num_experts_per_tok = 3;
    s_check_offsets(&cfg);
}

/* A pipeline stage's part is refused (the device model holds the whole model). */
static void test_part_refused(void **state)
{
    (void)state;
    model_config_t cfg;
    model_config_tiny(&cfg);
    model_part_t part;
    model_part_whole(&cfg, &part);
    part.n_layers = 2;
    part.has_head = 0;
    model_layout_t lay;
    model_gpu_plan_t p;
    assert_int_equal(model_layout_init_part(&lay, &cfg, &part), SHOAL_OK);
    assert_int_equal(model_gpu_plan_init(&p, &lay), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "whole model"));
    model_layout_fini(&lay);
}

/* The fused update equals the CPU trainer's loop, bitwise, with and without clipping. */
static void test_segments_update_bitwise(void **state)
{
    (void)state;
    model_config_t cfg;
    model_config_tiny(&cfg);
    model_layout_t lay;
    model_gpu_plan_t p;
    assert_int_equal(model_layout_init(&lay, &cfg), SHOAL_OK);
    assert_int_equal(model_gpu_plan_init(&p, &lay), SHOAL_OK);
    const size_t n = (size_t)lay.n_params;
    float *buf[2][4];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 4; j++) {
            buf[k][j] = malloc(sizeof(float) * n);
            assert_non_null(buf[k][j]);
        }
    uint64_t x = 12345;
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 4; j++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            float r = (float)((double)(x >> 11) / 9007199254740992.0) - 0.5f;
            buf[0][j][i] = buf[1][j][i] = j == 3 ? r * r : r; /* v >= 0 */
        }
    const adamw_hparams_t hp = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    const float coefs[2] = {1.0f, 0.37f};
    for (int c = 0; c < 2; c++) {
        /* reference: trainer.c's s_apply */
        if (coefs[c] < 1.0f)
            grad_scale(buf[0][1], (int64_t)n, coefs[c]);
        for (int i = 0; i < lay.n_tensors; i++) {
            const model_tensor_info_t *ti = &lay.tensors[i];
            if (ti->is_bias)
                continue;
            const int64_t o = lay.offsets[i];
            adamw_update(buf[0][0] + o, buf[0][1] + o, buf[0][2] + o, buf[0][3] + o,
                         model_tensor_numel(ti), 3e-3f, ti->ndim == 2, 2 + c, &hp);
        }
        adamw_update_segments(buf[1][0], buf[1][1], buf[1][2], buf[1][3], p.segments,
                              p.n_segments, 3e-3f, coefs[c], 2 + c, &hp);
        for (int j = 0; j < 4; j++) /* p, m, v (g is scratch: the CPU scales its biases too) */
            if (j != 1)
                assert_memory_equal(buf[0][j], buf[1][j], sizeof(float) * n);
    }
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 4; j++)
            free(buf[k][j]);
    model_gpu_plan_fini(&p);
    model_layout_fini(&lay);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offsets_tiny),
        cmocka_unit_test(test_offsets_variant),
        cmocka_unit_test(test_part_refused),
        cmocka_unit_test(test_segments_update_bitwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
