/* comm_shm.h: POSIX shared-memory segments of the comm's same-host data path (internal to
 * shoal_comm, used by comm_zmq_shm.c): one writer creates a segment, its peers map it read-only.
 *
 * Each rank of a same-host comm writes only its own segment (contributions, reduced pieces,
 * broadcast data) and reads its peers'; the ZeroMQ frames of the op say when a region is ready
 * and when its readers are done with it, so no lock lives in the segment. */
#ifndef SHOAL_COMM_SHM_H
#define SHOAL_COMM_SHM_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* Longest segment name, with the leading '/' and the NUL. */
#define COMM_SHM_NAME_MAX 200
/* A segment's random nonce: the creator tells its peers over the comm's authenticated (CURVE)
 * connection, and an opener refuses a segment whose header holds another. */
#define COMM_SHM_NONCE_BYTES 16
/* The header before the data (magic, nonce), a page so that the data stays page-aligned. */
#define COMM_SHM_HDR_BYTES ((size_t)4096)

typedef struct {
    unsigned char *base; /* the data (after the header); NULL while nothing is mapped */
    size_t bytes;        /* data bytes */
    bool linked;         /* created here and its name not removed yet */
    char name[COMM_SHM_NAME_MAX];
    unsigned char nonce[COMM_SHM_NONCE_BYTES]; /* the segment's nonce (its header's) */
} comm_shm_seg_t;

/* Creates and maps (read-write) segment `name` ("/..." without another '/') with `bytes` of data,
 * mode 0600 (O_EXCL), its pages reserved up front so that a full /dev/shm is an error here, not a
 * SIGBUS later; its header gets a fresh random nonce (s->nonce). A leftover of the same name (a
 * dead process that held the same listener identity) is replaced. *s must be unmapped (zeroed or
 * closed). Errors: SHOAL_ERR_INVALID (name too long), SHOAL_ERR_IO. */
shoal_err_t comm_shm_create(comm_shm_seg_t *s, const char *name, size_t bytes);

/* Maps an existing segment read-only, prefaulted; it must hold at least min_bytes of data, belong
 * to this process's user with no access for group or others, and carry `nonce` in its header (the
 * nonce its creator announced): anything else is not the segment the peer made for this comm.
 * Errors: SHOAL_ERR_INVALID (name too long, segment too small, another owner, a wider mode, another
 * nonce), SHOAL_ERR_IO (absent, mmap). */
shoal_err_t comm_shm_open(comm_shm_seg_t *s, const char *name, size_t min_bytes,
                          const unsigned char nonce[COMM_SHM_NONCE_BYTES]);

/* Removes the name of a segment created here (mappings stay valid). Idempotent. */
void comm_shm_unlink(comm_shm_seg_t *s);

/* Unmaps, and removes the name if still linked. Idempotent; leaves *s zeroed. */
void comm_shm_close(comm_shm_seg_t *s);

/* Removes every segment named "<prefix>-..." (prefix without the '/'): the leftovers of a dead
 * process that held the same identity, which only the caller holds now. Linux (/dev/shm); a
 * no-op elsewhere. */
void comm_shm_sweep(const char *prefix);

#endif
