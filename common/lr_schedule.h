/* lr_schedule.h: the learning-rate schedule of docs/MODEL.md, in common so that tools that never
 * train (shoalctl release writing per-step metrics from the coordinator's history) give the
 * very figure the trainers used. */
#ifndef SHOAL_COMMON_LR_SCHEDULE_H
#define SHOAL_COMMON_LR_SCHEDULE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* LR of optimizer step k (0-based) of `steps`: lr·k/warmup for k < warmup, then cosine from lr
 * at k = warmup to min_lr at k = steps − 1. */
double lr_at(int64_t k, int64_t steps, double lr, int64_t warmup, double min_lr);

#ifdef __cplusplus
}
#endif

#endif
