/* lr_schedule.c: see lr_schedule.h. */
#include "lr_schedule.h"

#include <math.h>

double lr_at(int64_t k, int64_t steps, double lr, int64_t warmup, double min_lr)
{
    if (k < warmup)
        return lr * (double)k / (double)warmup;
    int64_t span = steps - 1 - warmup;
    double p = span <= 0 ? 1.0 : (double)(k - warmup) / (double)span;
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(M_PI * p));
}
