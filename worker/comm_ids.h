/* comm_ids.h: the NCCL unique ids a worker received through the coordinator (CommId messages,
 * group "<generation>/<tag>"), kept until the creation of that group's communicator takes them.
 * Rank 0 of a group makes the id (comm_nccl_id_new) and sends it with session_send_comm_id; the
 * coordinator forwards it to the plan's other workers, whose session thread puts it here; their
 * training thread waits for it with the comm timeout. Thread-safe (one mutex, one condition
 * variable); no CUDA, so CPU builds have it too. */
#ifndef SHOAL_WORKER_COMM_IDS_H
#define SHOAL_WORKER_COMM_IDS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest id kept (WIRE_MAX_COMM_ID; an NCCL id is 128 bytes). */
#define COMM_IDS_MAX_BYTES 256
/* Ids held at once; the oldest generation's go first when full. */
#define COMM_IDS_MAX 128

typedef struct comm_ids comm_ids_t;

/* SHOAL_ERR_NOMEM. *out owns the table (free with comm_ids_destroy). */
shoal_err_t comm_ids_new(comm_ids_t **out);

/* Wakes waiters (they fail with SHOAL_ERR_ABORTED) and frees. Idempotent; nulls *t. The
 * caller makes sure nobody waits any more when it frees. */
void comm_ids_destroy(comm_ids_t **t);

/* Keeps the id of `group` ("<generation>/<tag>", wire_comm_group_parse) and wakes its waiters.
 * An id for a generation older than the newest forgotten (comm_ids_forget_before) is dropped
 * (SHOAL_OK: a late message, not an error). A second id for the same group replaces the first
 * (rank 0 made a new one). Errors: SHOAL_ERR_FORMAT (malformed group), SHOAL_ERR_INVALID (id of
 * 0 or more than COMM_IDS_MAX_BYTES bytes). */
shoal_err_t comm_ids_put(comm_ids_t *t, const char *group, const uint8_t *id, size_t len);

/* Waits up to timeout_ms for the id of (generation, tag) and copies it into id[0..cap); *len
 * gets its size. The id stays (every waiter of the group may take it). Errors:
 * SHOAL_ERR_TIMEOUT ("no CommId for group 3/17 within 30000 ms: its rank 0 did not send one"),
 * SHOAL_ERR_ABORTED (comm_ids_cancel), SHOAL_ERR_INVALID (cap too small). */
shoal_err_t comm_ids_wait(comm_ids_t *t, uint64_t generation, uint32_t tag, int timeout_ms,
                          uint8_t *id, size_t cap, size_t *len);

/* Drops the ids of generations below `generation`, and every later one that arrives for them. */
void comm_ids_forget_before(comm_ids_t *t, uint64_t generation);

/* Drops every id and the floor (another run: its generations start again). */
void comm_ids_reset(comm_ids_t *t);

/* Makes the current waits return SHOAL_ERR_ABORTED (a newer plan, a stop); later waits are
 * unaffected. */
void comm_ids_cancel(comm_ids_t *t);

/* Ids held now (for tests and logs). */
int comm_ids_count(comm_ids_t *t);

#ifdef __cplusplus
}
#endif
#endif
