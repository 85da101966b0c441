/* data.h: the training corpus as bytes (V = 256 tokens) and the batch order of MODEL.md: which
 * sequences form step k's batch is a pure function of (data, seed, k, j). */
#ifndef SHOAL_WORKER_DATA_H
#define SHOAL_WORKER_DATA_H

#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct data data_t;

/* Reads every path (a file, or a directory: its regular files not ending in .dat or .u8, in
 * name order) and concatenates the bytes. The corpus is cut into sequences of T+1 bytes.
 * Errors name the path (missing, unreadable, empty, shorter than one sequence, or a byte
 * >= vocab_size). */
shoal_err_t data_open(const char *const *paths, int n_paths, int T, int vocab_size,
                      uint64_t seed, data_t **out);
void data_destroy(data_t **d);

int64_t data_num_sequences(const data_t *d);
int64_t data_num_bytes(const data_t *d);

/* Sequence number of global position i = k·G + j. seed 0: i mod M (the oracle's order);
 * otherwise epoch e = i / M is a seeded permutation of all M sequences. */
int64_t data_sequence_index(data_t *d, int64_t i);

/* Fills T inputs and T targets of sequence n (bytes [n(T+1), (n+1)(T+1))). */
void data_sequence(const data_t *d, int64_t n, int32_t *tok, int32_t *tgt);

#ifdef __cplusplus
}
#endif
#endif
