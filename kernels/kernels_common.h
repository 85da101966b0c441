/* kernels_common.h: conventions shared by every kernel.
 *
 * Layout: activations are row-major [M, width] with M = tokens (B·T, sequence-major: token
 * (b, t) is row b·T + t). Weights are [out, in] row-major and applied as y = x W^T (MODEL.md).
 * Shape arguments come in one fixed order: tokens (M or B, T), then widths (d, f, ...), then
 * experts (N, K). Backward functions ACCUMULATE (+=) into weight gradients and into input
 * gradients named `dx_acc`; outputs named without `_acc` are overwritten.
 * All functions are fp32 on the CPU, single-threaded except inside OpenBLAS. */
#ifndef SHOAL_KERNELS_COMMON_H
#define SHOAL_KERNELS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
