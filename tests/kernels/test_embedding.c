/* test_embedding: lookup copies rows exactly; backward against finite differences with
 * repeated tokens; accumulate semantics. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "embedding.h"
#include "kt_util.h"

static uint64_t s_seed;

typedef struct {
    int M, V, d;
    int32_t *tok;
    float *E, *out, *w;
} emb_case_t;

static double s_loss(void *ctx)
{
    emb_case_t *c = ctx;
    embedding_forward(c->tok, c->M, c->E, c->d, c->out);
    return kt_project(c->w, c->out, (size_t)c->M * c->d);
}

static void test_embedding_forward_backward(void **state)
{
    (void)state;
    kt_rng_t r = {s_seed};
    emb_case_t c = {.M = 12, .V = 7, .d = 5};
    size_t ne = (size_t)c.V * c.d, no = (size_t)c.M * c.d;
    c.tok = malloc((size_t)c.M * sizeof(int32_t));
    c.E = malloc(ne * 4), c.out = malloc(no * 4), c.w = malloc(no * 4);
    for (int m = 0; m < c.M; m++)
        c.tok[m] = kt_randint(&r, c.V - 1); /* token V-1 never used: its gradient stays 0 */
    c.tok[3] = c.tok[0];                    /* a repeated token for sure */
    kt_fill(&r, c.E, ne, -1, 1);
    kt_fill(&r, c.w, no, -1, 1);

    embedding_forward(c.tok, c.M, c.E, c.d, c.out);
    for (int m = 0; m < c.M; m++)
        assert_memory_equal(c.out + m * c.d, c.E + c.tok[m] * c.d, (size_t)c.d * 4);

    float *dE = calloc(ne, 4);
    double *num = malloc(ne * 8);
    embedding_backward(c.tok, c.M, c.w, c.d, dE);
    kt_fd(c.E, ne, 1e-2f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dE", num, dE, ne, 1e-5, 1e-5), 0);
    for (int j = 0; j < c.d; j++)
        assert_true(dE[(c.V - 1) * c.d + j] == 0.0f);

    /* accumulate into a non-zero buffer */
    float *acc = malloc(ne * 4), *acc0 = malloc(ne * 4), *diff = malloc(ne * 4);
    kt_fill(&r, acc, ne, -3, 3);
    memcpy(acc0, acc, ne * 4);
    embedding_backward(c.tok, c.M, c.w, c.d, acc);
    kt_sub(acc, acc0, diff, ne);
    assert_int_equal(kt_check_grad("dE_acc", num, diff, ne, 1e-5, 1e-5), 0);

    free(acc), free(acc0), free(diff), free(dE), free(num);
    free(c.tok), free(c.E), free(c.out), free(c.w);
}

int main(void)
{
    s_seed = kt_seed("test_embedding", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding_forward_backward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
