/* comm_ids.c: the table of relayed NCCL unique ids (comm_ids.h). */
#include "comm_ids.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wire.h"

typedef struct {
    uint64_t generation;
    uint32_t tag;
    size_t len; /* 0: free slot */
    uint8_t id[COMM_IDS_MAX_BYTES];
} s_entry_t;

struct comm_ids {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t floor;    /* ids below this generation are dropped */
    uint64_t cancels;  /* comm_ids_cancel calls: a waiter that sees it change gives up */
    int closing;
    s_entry_t e[COMM_IDS_MAX];
};

shoal_err_t comm_ids_new(comm_ids_t **out)
{
    comm_ids_t *t = calloc(1, sizeof *t);
    if (!t)
        return shoal_fail(SHOAL_ERR_NOMEM, "comm ids: out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timeouts immune to clock changes */
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = t;
    return SHOAL_OK;
}

void comm_ids_destroy(comm_ids_t **tp)
{
    if (!tp || !*tp)
        return;
    comm_ids_t *t = *tp;
    *tp = NULL;
    pthread_mutex_lock(&t->mu);
    t->closing = 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static s_entry_t *s_find(comm_ids_t *t, uint64_t generation, uint32_t tag)
{
    for (int i = 0; i < COMM_IDS_MAX; i++)
        if (t->e[i].len && t->e[i].generation == generation && t->e[i].tag == tag)
            return &t->e[i];
    return NULL;
}

/* A free slot, or the one of the oldest generation (a full table keeps the newest plans). */
static s_entry_t *s_slot(comm_ids_t *t)
{
    s_entry_t *oldest = &t->e[0];
    for (int i = 0; i < COMM_IDS_MAX; i++) {
        if (!t->e[i].len)
            return &t->e[i];
        if (t->e[i].generation < oldest->generation)
            oldest = &t->e[i];
    }
    return oldest;
}

shoal_err_t comm_ids_put(comm_ids_t *t, const char *group, const uint8_t *id, size_t len)
{
    uint64_t gen;
    uint32_t tag;
    shoal_err_t rc = wire_comm_group_parse(group, &gen, &tag);
    if (rc != SHOAL_OK)
        return rc;
    if (!id || len == 0 || len > COMM_IDS_MAX_BYTES)
        return shoal_fail(SHOAL_ERR_INVALID, "comm id of group %s: %zu bytes (1 .. %d)", group,
                          len, COMM_IDS_MAX_BYTES);
    pthread_mutex_lock(&t->mu);
    if (gen >= t->floor) {
        s_entry_t *e = s_find(t, gen, tag);
        if (!e)
            e = s_slot(t);
        e->generation = gen;
        e->tag = tag;
        e->len = len;
        memcpy(e->id, id, len);
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return SHOAL_OK;
}

shoal_err_t comm_ids_wait(comm_ids_t *t, uint64_t generation, uint32_t tag, int timeout_ms,
                          uint8_t *id, size_t cap, size_t *len)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    shoal_err_t rc = SHOAL_OK;
    pthread_mutex_lock(&t->mu);
    const uint64_t cancels = t->cancels;
    s_entry_t *e;
    while (!(e = s_find(t, generation, tag))) {
        if (t->closing || t->cancels != cancels) {
            rc = shoal_fail(SHOAL_ERR_ABORTED, "waiting for the CommId of group %" PRIu64
                            "/%" PRIu32 ": cancelled", generation, tag);
            goto out;
        }
        if (pthread_cond_timedwait(&t->cv, &t->mu, &until) != 0 && !s_find(t, generation, tag)) {
            rc = shoal_fail(SHOAL_ERR_TIMEOUT, "no CommId for group %" PRIu64 "/%" PRIu32
                            " within %d ms: its rank 0 did not send one (or the coordinator "
                            "did not relay it)", generation, tag, timeout_ms);
            goto out;
        }
    }
    if (e->len > cap) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "CommId of group %" PRIu64 "/%" PRIu32 ": %zu bytes, "
                        "room for %zu", generation, tag, e->len, cap);
        goto out;
    }
    memcpy(id, e->id, e->len);
    *len = e->len;
out:
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void comm_ids_forget_before(comm_ids_t *t, uint64_t generation)
{
    pthread_mutex_lock(&t->mu);
    if (generation > t->floor)
        t->floor = generation;
    for (int i = 0; i < COMM_IDS_MAX; i++)
        if (t->e[i].len && t->e[i].generation < t->floor)
            t->e[i].len = 0;
    pthread_mutex_unlock(&t->mu);
}

void comm_ids_reset(comm_ids_t *t)
{
    pthread_mutex_lock(&t->mu);
    t->floor = 0;
    for (int i = 0; i < COMM_IDS_MAX; i++)
        t->e[i].len = 0;
    pthread_mutex_unlock(&t->mu);
}

void comm_ids_cancel(comm_ids_t *t)
{
    pthread_mutex_lock(&t->mu);
    t->cancels++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

int comm_ids_count(comm_ids_t *t)
{
    int n = 0;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < COMM_IDS_MAX; i++)
        n += t->e[i].len != 0;
    pthread_mutex_unlock(&t->mu);
    return n;
}
