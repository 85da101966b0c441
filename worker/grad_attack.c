/* grad_attack.c: shoal-worker-attack only: a worker that sabotages its own gradients, to show
 * that gradient sanity catches it. SHOAL_GRAD_ATTACK=nan puts NaN in every gradient it sends,
 * =scale100 multiplies them by 100, =ascent100 by -100 (gradient ascent that outweighs the honest
 * peers: clipping and AdamW bound a mere x100, this one drives the loss up);
 * SHOAL_GRAD_ATTACK_FROM=N (default 1) starts at step N. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grad_attack.h"
#include "numparse.h"
#include "trainer.h"

static int s_mode; /* 1 nan, 2 scale100, 3 ascent100 */
static const char *const s_what[] = {"", "NaN", "x100", "x-100"};
static int64_t s_from = 1;

static void s_attack(float *grads, int64_t n, int replica, int64_t step)
{
    (void)replica;
    if (step < s_from)
        return;
    for (int64_t i = 0; i < n; i++)
        grads[i] = s_mode == 1 ? NAN : grads[i] * (s_mode == 2 ? 100.0f : -100.0f);
}

int grad_attack_install_from_env(void)
{
    const char *m = getenv("SHOAL_GRAD_ATTACK");
    if (!m || !m[0])
        return 0;
    if (strcmp(m, "nan") == 0)
        s_mode = 1;
    else if (strcmp(m, "scale100") == 0)
        s_mode = 2;
    else if (strcmp(m, "ascent100") == 0)
        s_mode = 3;
    else {
        fprintf(stderr,
                "shoal-worker-attack: SHOAL_GRAD_ATTACK must be nan, scale100 or ascent100\n");
        return -1;
    }
    const char *from = getenv("SHOAL_GRAD_ATTACK_FROM");
    int v;
    if (from && numparse_int(from, 1, 1 << 30, &v) == SHOAL_OK)
        s_from = v;
    fprintf(stderr, "shoal-worker-attack: gradients %s from step %lld\n",
            s_what[s_mode], (long long)s_from);
    trainer_set_grad_hook(s_attack);
    return 0;
}
