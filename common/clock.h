/* clock.h: the one clock of shoal. Monotonic time for deadlines, timeouts and durations (never
 * jumps with NTP or the admin's `date`); wall time only for what a human or another machine
 * reads (log lines, timestamps in messages and the ledger). */
#ifndef SHOAL_CLOCK_H
#define SHOAL_CLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Monotonic milliseconds since an arbitrary origin (boot); only differences mean anything. */
int64_t clock_mono_ms(void);

/* Monotonic nanoseconds, same origin as clock_mono_ms(). */
uint64_t clock_mono_ns(void);

/* Monotonic seconds as a double (durations of compute, benchmarks). */
double clock_mono_s(void);

/* Wall-clock milliseconds since the Unix epoch (UTC). */
int64_t clock_wall_ms(void);

/* Sleeps `ms` milliseconds (<= 0: returns at once). A signal cuts the sleep short, which is
 * what a Ctrl-C or SIGTERM wants; callers that poll a deadline loop on clock_mono_ms(). */
void clock_sleep_ms(int64_t ms);

#ifdef __cplusplus
}
#endif
#endif
