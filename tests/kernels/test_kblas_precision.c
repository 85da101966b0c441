/* test_kblas_precision: the per-handle matmul precision registry of the CUDA twins
 * (kernels_matmul_bf16_cuda, kernels_common.h). Pure host bookkeeping: runs without a GPU, on
 * handle values that are never dereferenced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kernels_common.h"

static struct cublasContext *s_h(uintptr_t i)
{
    return (struct cublasContext *)(0x1000 + 16 * i);
}

static void test_default_fp32(void **state)
{
    (void)state;
    assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(1)), 0);
    assert_int_equal(kernels_matmul_bf16_cuda(s_h(1), 0), SHOAL_OK); /* forgetting: a no-op */
    assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(1)), 0);
}

static void test_per_handle(void **state)
{
    (void)state;
    assert_int_equal(kernels_matmul_bf16_cuda(s_h(1), 1), SHOAL_OK);
    assert_int_equal(kernels_matmul_bf16_cuda(s_h(1), 1), SHOAL_OK); /* twice: one entry */
    assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(1)), 1);
    assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(2)), 0);
    assert_int_equal(kernels_matmul_bf16_cuda(s_h(2), 1), SHOAL_OK);
    assert_int_equal(kernels_matmul_bf16_cuda(s_h(1), 0), SHOAL_OK);
    assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(1)), 0);
    assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(2)), 1);
    assert_int_equal(kernels_matmul_bf16_cuda(s_h(2), 0), SHOAL_OK);
    assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(2)), 0);
}

/* 64 handles in bf16 at once; the 65th is refused with a message, the others unharmed. */
static void test_capacity(void **state)
{
    (void)state;
    for (uintptr_t i = 0; i < 64; i++)
        assert_int_equal(kernels_matmul_bf16_cuda(s_h(100 + i), 1), SHOAL_OK);
    assert_int_equal(kernels_matmul_bf16_cuda(s_h(500), 1), SHOAL_ERR_NOMEM);
    assert_non_null(strstr(shoal_errmsg(), "64"));
    assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(500)), 0);
    for (uintptr_t i = 0; i < 64; i++)
        assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(100 + i)), 1);
    for (uintptr_t i = 0; i < 64; i += 2) /* forget every other one: the rest stay */
        assert_int_equal(kernels_matmul_bf16_cuda(s_h(100 + i), 0), SHOAL_OK);
    for (uintptr_t i = 0; i < 64; i++)
        assert_int_equal(kernels_matmul_is_bf16_cuda(s_h(100 + i)), (int)(i % 2));
    for (uintptr_t i = 1; i < 64; i += 2)
        assert_int_equal(kernels_matmul_bf16_cuda(s_h(100 + i), 0), SHOAL_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_fp32),
        cmocka_unit_test(test_per_handle),
        cmocka_unit_test(test_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
