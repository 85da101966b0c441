/* test_comm_lib.h: the harness of the comm tests (test_comm*.c): forked ranks over real sockets on
 * 127.0.0.1, each reporting one record per checked operation to the parent; inputs of (seed, rank,
 * index) whose rank-ordered float sum differs from other orders. Include after cmocka.h. */
#ifndef SHOAL_TEST_COMM_LIB_H
#define SHOAL_TEST_COMM_LIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm.h"

#define MAX_RANKS 4
#define MAX_REC 64
#define EP_LEN 128

/* What a forked rank reports to the parent: one record per checked operation. */
typedef struct {
    int nrec;
    int rc[MAX_REC];          /* shoal_err_t of the operation */
    int ok[MAX_REC];          /* the rank's own check of its output (1 = pass) */
    uint64_t digest[MAX_REC]; /* FNV-1a of the output, compared across ranks */
    double ms[MAX_REC];
    char msg[MAX_REC][240];
    int finished;
} result_t;

typedef struct {
    int rank, nranks;
    comm_listener_t *l;
    const char *eps[MAX_RANKS];
    char ep[MAX_RANKS][EP_LEN];
} rank_ctx_t;

typedef void (*rank_fn)(rank_ctx_t *ctx, result_t *res, void *arg);
/* Runs in the parent after every rank reported its endpoint, before the ranks start. */
typedef void (*before_fn)(char eps[][EP_LEN], int nranks, void *arg);


/* Milliseconds with the sub-millisecond part: collectives of small buffers take less than 1 ms. */
double ct_ms(void);
/* FNV-1a of n bytes. */
uint64_t ct_fnv(const void *p, size_t n);
/* Input of (seed, rank, index), and the documented sum ((x_0 + x_1) + x_2) + ... of it. */
float ct_input(uint64_t seed, int rank, size_t i);
void ct_fill(float *buf, size_t n, uint64_t seed, int rank);
void ct_expected(float *out, size_t n, uint64_t seed, int nranks);
/* Appends a record (the detail message of a failed rc). */
void ct_rec(result_t *res, int rc, int ok, uint64_t digest, double ms);
/* The comm of one generation over all the ranks (group 0); exits the rank on failure. */
comm_t *ct_comm(rank_ctx_t *ctx, uint64_t gen, int timeout_ms, size_t chunk);
/* The comm of (gen, group) over the given ranks (ascending; group ranks are their indices), or
 * NULL when this rank is not a member. Exits the rank on failure. */
comm_t *ct_comm_group(rank_ctx_t *ctx, uint64_t gen, uint32_t group, const int *members,
                      int nmembers, int timeout_ms);
/* Makes comm_abort(c) run from a SIGALRM handler `usec` microseconds from now. */
void ct_abort_on_alarm(comm_t *c, long usec);
/* A pthread start routine: comm_abort(arg) 100 ms after it starts. */
void *ct_abort_thread(void *arg);

/* Ranks (bit r: rank r) whose listener has the same-host shared-memory path off
 * (SHOAL_COMM_NO_SHM=1 in that rank), for the ct_run_group calls that follow; 0 by default. */
extern unsigned ct_no_shm_mask;

/* Forks nranks ranks; each binds a listener, the parent relays the endpoint list (as the
 * coordinator does), runs `before`, then collects one result per rank. got[r] tells whether rank
 * r reported (a rank killed on purpose does not); status[r] is its wait status. */
void ct_run_group(int nranks, rank_fn fn, void *arg, before_fn before, void *before_arg,
                  result_t *res, bool *got, int *status);
/* ct_run_group for a test where rank `killed` SIGKILLs itself: asserts it did and that every other
 * rank reported. */
void ct_run_killed(int nranks, rank_fn fn, void *arg, int killed, result_t *res);
/* ct_run_group without a `before` hook, then ct_check_all. */
void ct_run_all(int nranks, rank_fn fn, void *arg, result_t *res);
/* Asserts every rank reported, every record passed, and digests agree across ranks. */
void ct_check_all(const result_t *res, const bool *got, const int *status, int nranks);

#endif
