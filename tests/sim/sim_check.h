/* sim_check.h: what the simulator's test and benchmark read back from a coordinator driven by
 * shoal-sim: the events the drivers wrote, the ledger, and for every simulated death whether
 * (and how fast) the coordinator declared it dead and placed a plan without it. */
#ifndef SHOAL_SIM_CHECK_H
#define SHOAL_SIM_CHECK_H

#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

typedef struct {
    char kind[16]; /* death, join, drain, left */
    char name[32];
    char id[72];
    int64_t wall_ms;
} sim_event_t;

/* Reads "<kind> <name> <id> <wall ms>" lines; returns how many (*out: malloc'd), -1 when the
 * file cannot be read. */
int sim_events_load(const char *path, sim_event_t **out);

/* Every ledger entry of `chain` (a run id, or "cluster") from the coordinator in `dir`, as a new
 * array (paged through CTL_EVENTS), or NULL. */
json_t *sim_ledger(const char *dir, const char *chain);

typedef struct {
    int deaths;     /* simulated deaths */
    int detected;   /* ... declared dead by the coordinator (worker_state -> dead) */
    int members;    /* ... that held a cell of the run's plan when they died */
    int replanned;  /* ... members followed by a plan without them */
    double *latency_ms; /* detection latency of each detected death (kill to ledger entry) */
    char first_missing[256]; /* the first death not detected or not re-planned ("" = none) */
} sim_deaths_t;

/* Matches each death of ev[0..n) with the ledgers (run chain and cluster chain). */
void sim_check_deaths(const sim_event_t *ev, int n, const json_t *run_ledger,
                      const json_t *cluster_ledger, sim_deaths_t *out);
void sim_deaths_fini(sim_deaths_t *d);

/* The q-quantile (0..1) of v[0..n) (sorted in place); 0 when n == 0. */
double sim_quantile(double *v, int n, double q);

/* Starts shoal-sim (`bin`) with argv (argv[0] included, NULL-terminated), stdout to `log`. */
pid_t sim_spawn(const char *bin, char *const argv[], const char *log);

#endif
