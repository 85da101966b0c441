/* test_model_config: presets, validation messages, config.json round trip, tensor list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_config.h"

static void test_tiny_tensor_list(void **state)
{
    (void)state;
    model_config_t c;
    model_config_tiny(&c);
    assert_int_equal(model_config_validate(&c), SHOAL_OK);
    int n = model_tensor_list(&c, NULL, 0);
    /* embed + 4 layers x (2 norms + 4 attn) + dense mlp 3 + 3 MoE x (router, bias, 8x3, shared 3)
     * + norm + lm_head */
    assert_int_equal(n, 1 + 4 * 6 + 3 + 3 * (2 + 24 + 3) + 2);
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    assert_int_equal(model_tensor_list(&c, t, n), n);
    assert_string_equal(t[0].name, "model.embed_tokens.weight");
    assert_string_equal(t[n - 1].name, "lm_head.weight");
    int biases = 0;
    for (int i = 0; i < n; i++)
        biases += t[i].is_bias;
    assert_int_equal(biases, 3);
    free(t);
}

static void test_validate_rejects(void **state)
{
    (void)state;
    model_config_t c;
    model_config_tiny(&c);
    c.num_attention_heads = 3;
    assert_int_equal(model_config_validate(&c), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "num_attention_heads"));
    model_config_tiny(&c);
    c.n_group = 4;
    c.topk_group = 1;
    c.num_experts_per_tok = 3; /* only 2 experts eligible */
    assert_int_equal(model_config_validate(&c), SHOAL_ERR_INVALID);
    model_config_tiny(&c);
    assert_int_equal(model_config_set(&c, "hidden_size", 12.5), SHOAL_ERR_INVALID);
    assert_int_equal(model_config_set(&c, "no_such_key", 1), SHOAL_ERR_NOTFOUND);
}

static void test_json_round_trip(void **state)
{
    (void)state;
    char dir[] = "/tmp/shoal-mc-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    model_config_t a, b;
    model_config_tiny(&a);
    a.n_group = 2;
    a.routed_scaling_factor = 2.5;
    a.rms_norm_eps = 1e-5;
    assert_int_equal(model_config_save(&a, path), SHOAL_OK);
    assert_int_equal(model_config_load(path, &b), SHOAL_OK);
    assert_true(model_config_equal(&a, &b));
    b.rope_theta = 5000;
    assert_false(model_config_equal(&a, &b));

    FILE *f = fopen(path, "w");
    fputs("{\"hidden_size\": 128, \"scoring_func\": \"softmax\"}", f);
    fclose(f);
    assert_int_equal(model_config_load(path, &b), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "scoring_func"));
    f = fopen(path, "w");
    fputs("{\"hidden_size\": 128,", f);
    fclose(f);
    assert_int_equal(model_config_load(path, &b), SHOAL_ERR_FORMAT);
    assert_non_null(strstr(shoal_errmsg(), path));
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_tensor_list),
        cmocka_unit_test(test_validate_rejects),
        cmocka_unit_test(test_json_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
