/* cell_comms.h: the comms of one cell of a dp x pp x ep plan, built from the plan's endpoint
 * list: the world, its stage's dp·ep cells, its experts' dp holders, its (replica, stage)'s ep
 * ranks, and its (replica, ep_rank)'s pipeline. Every member derives the same groups from the
 * plan alone, so creating them needs no communication. */
#ifndef SHOAL_WORKER_CELL_COMMS_H
#define SHOAL_WORKER_CELL_COMMS_H

#include "comm.h"
#include "err.h"
#include "trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Group tags on the listener (comm_config_t.group). */
enum { CELL_GROUP_WORLD = 1, CELL_GROUP_STAGE, CELL_GROUP_EXPERT, CELL_GROUP_EP, CELL_GROUP_PIPE,
       CELL_GROUP_HANDOVER /* a leaving worker hands its cell over (daemon_handover.c) */ };

#define CELL_COMMS_MAX 5

typedef struct {
    trainer_comms_t g;           /* the groups (a group of one member is NULL; with pp = ep = 1
                                  * the stage group is the world) */
    comm_t *all[CELL_COMMS_MAX]; /* every distinct comm, for abort and destroy */
    int n;
} cell_comms_t;

/* Plan rank of a cell: (replica · pp + stage) · ep + ep_rank. */
int cell_rank(int pp, int ep, int replica, int stage, int ep_rank);

/* Creates the comms of `cell` on listener `l`; endpoints: the data endpoint of every plan rank
 * (dp·pp·ep entries). On failure nothing stays created. */
shoal_err_t cell_comms_new(comm_listener_t *l, const trainer_cell_t *cell,
                           const char *const *endpoints, uint64_t generation, int timeout_ms,
                           cell_comms_t *out);

/* Aborts every comm (safe from another thread, as comm_abort). */
void cell_comms_abort(cell_comms_t *c);

/* Destroys every comm and zeroes *c; idempotent. */
void cell_comms_destroy(cell_comms_t *c);

#ifdef __cplusplus
}
#endif
#endif
