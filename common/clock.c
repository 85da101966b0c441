/* clock.c: monotonic and wall clocks over clock_gettime(2). */
#include "clock.h"

#include <time.h>

static struct timespec s_now(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts); /* cannot fail for these clock ids */
    return ts;
}

int64_t clock_mono_ms(void)
{
    struct timespec ts = s_now(CLOCK_MONOTONIC);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t clock_mono_ns(void)
{
    struct timespec ts = s_now(CLOCK_MONOTONIC);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double clock_mono_s(void)
{
    struct timespec ts = s_now(CLOCK_MONOTONIC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t clock_wall_ms(void)
{
    struct timespec ts = s_now(CLOCK_REALTIME);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void clock_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
