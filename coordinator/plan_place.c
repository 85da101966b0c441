/* plan_place.c: the planner: how many replicas, which worker holds which cell (device kind,
 * then locality, then memory), the spares, and raising pp when a cell does not fit.
 * Deterministic: workers are sorted before anything looks at them, so the input order never
 * shows in the plan. */
#include "plan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_or_empty(const char *s)
{
    return s ? s : "";
}

/* Worker ids "w<N>" compare by number: shorter first, then bytes. */
static int s_id_cmp(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    return la != lb ? (la < lb ? -1 : 1) : strcmp(a, b);
}

int plan_device_is_gpu(const char *device)
{
    return device && strncmp(device, "cuda", 4) == 0;
}

int plan_device_cpu_bf16(const char *device)
{
    if (!device || strncmp(device, "cpu", 3) != 0)
        return 0;
    for (const char *p = device + 3; (p = strstr(p, "bf16")) != NULL; p += 4)
        if (p[-1] == ' ' && (p[4] == '\0' || p[4] == ' '))
            return 1;
    return 0;
}

plan_precision_t plan_precision_from_name(const char *name)
{
    if (name && strcmp(name, "fp32") == 0)
        return PLAN_PRECISION_FP32;
    if (name && strcmp(name, "bf16") == 0)
        return PLAN_PRECISION_BF16;
    return PLAN_PRECISION_AUTO;
}

/* Kinds of workers an attempt may place (bit mask). */
enum { S_GPU = 1, S_CPU = 2 };

typedef struct {
    const plan_worker_t *w;
    int gpu;
    int out;   /* of a kind this attempt does not place: last, a spare */
    int unfit; /* declared memory below the smallest cell: placed last, so spare first */
} s_cand_t;

static int s_cand_cmp(const void *pa, const void *pb)
{
    const s_cand_t *a = pa, *b = pb;
    int c;
    if (a->out != b->out)
        return a->out - b->out;
    if (a->gpu != b->gpu) /* GPU groups and replicas first: the faster ones */
        return b->gpu - a->gpu;
    if (a->unfit != b->unfit)
        return a->unfit - b->unfit;
    if ((c = strcmp(s_or_empty(a->w->institution), s_or_empty(b->w->institution))) != 0)
        return c;
    if ((c = strcmp(s_or_empty(a->w->host), s_or_empty(b->w->host))) != 0)
        return c;
    return s_id_cmp(a->w->worker_id, b->w->worker_id);
}

static int s_same(const char *a, const char *b)
{
    return strcmp(s_or_empty(a), s_or_empty(b)) == 0;
}

/* One attempt at a fixed pp and set of kinds. */
typedef struct {
    const plan_request_t *req;
    s_cand_t *cand; /* n, sorted */
    uint32_t n;
    unsigned kinds;    /* S_GPU | S_CPU: which workers this attempt places */
    uint32_t n_gpu_in; /* placeable GPU workers: cand[0, n_gpu_in) after sorting */
    uint32_t n_cpu_in; /* placeable CPU workers: the next n_cpu_in */
    uint32_t *group;   /* group g's members: group[g * ep + k], indices into cand */
    uint32_t n_groups; /* formed */
    uint32_t *replica; /* replica r's groups: replica[r * pp + k], indices into group */
    uint32_t n_replicas;
    uint64_t *need; /* per stage */
} s_try_t;

/* Appends the groups of ep consecutive members of `pool` (indices into cand); returns how many
 * members were left over (at the end of pool, moved to its front). */
static uint32_t s_chunk(s_try_t *t, uint32_t ep, uint32_t *pool, uint32_t n)
{
    uint32_t whole = n / ep * ep;
    for (uint32_t i = 0; i < whole; i++)
        t->group[t->n_groups * ep + i] = pool[i];
    t->n_groups += whole / ep;
    memmove(pool, pool + whole, (n - whole) * sizeof *pool);
    return n - whole;
}

/* ep groups of the workers cand[lo, hi) (one kind): per institution, first whole groups within
 * one host, then the institution's remaining workers (one institution, several hosts); what is
 * left of every institution is grouped at the end (groups that span institutions). */
static void s_form_groups(s_try_t *t, uint32_t ep, uint32_t lo, uint32_t hi, uint32_t *pool,
                          uint32_t *spill)
{
    uint32_t n_spill = 0;
    for (uint32_t i = lo; i < hi;) {
        uint32_t inst_end = i;
        while (inst_end < hi && t->cand[inst_end].unfit == t->cand[i].unfit &&
               s_same(t->cand[inst_end].w->institution, t->cand[i].w->institution))
            inst_end++;
        uint32_t n_pool = 0;
        for (uint32_t h = i; h < inst_end;) {
            uint32_t host_end = h, n_host = 0;
            while (host_end < inst_end && s_same(t->cand[host_end].w->host, t->cand[h].w->host))
                host_end++;
            uint32_t *host_pool = pool + n_pool;
            for (uint32_t k = h; k < host_end; k++)
                host_pool[n_host++] = k;
            n_pool += s_chunk(t, ep, host_pool, n_host);
            h = host_end;
        }
        uint32_t rest = s_chunk(t, ep, pool, n_pool);
        memcpy(spill + n_spill, pool, rest * sizeof *pool);
        n_spill += rest;
        i = inst_end;
    }
    (void)s_chunk(t, ep, spill, n_spill);
}

/* The institution of a group (its first member's), for grouping replicas. */
static const char *s_group_inst(const s_try_t *t, uint32_t ep, uint32_t g)
{
    return s_or_empty(t->cand[t->group[g * ep]].w->institution);
}

/* Replicas of pp groups among groups [lo, hi) (one kind): whole replicas within one institution
 * first, then the rest. */
static void s_form_replicas(s_try_t *t, uint32_t pp, uint32_t ep, uint32_t lo, uint32_t hi,
                            uint32_t *spill)
{
    uint32_t n_spill = 0;
    for (uint32_t g = lo; g < hi;) {
        uint32_t end = g;
        while (end < hi && strcmp(s_group_inst(t, ep, end), s_group_inst(t, ep, g)) == 0)
            end++;
        uint32_t whole = (end - g) / pp * pp;
        for (uint32_t k = 0; k < whole; k++)
            t->replica[t->n_replicas * pp + k] = g + k;
        t->n_replicas += whole / pp;
        for (uint32_t k = g + whole; k < end; k++)
            spill[n_spill++] = k;
        g = end;
    }
    for (uint32_t k = 0; k + pp <= n_spill; k += pp) {
        memcpy(&t->replica[t->n_replicas * pp], spill + k, pp * sizeof *spill);
        t->n_replicas++;
    }
}

/* The least declared memory of a group (UINT64_MAX: every member unknown). */
static uint64_t s_group_mem(const s_try_t *t, uint32_t ep, uint32_t g)
{
    uint64_t m = UINT64_MAX;
    for (uint32_t k = 0; k < ep; k++) {
        uint64_t b = t->cand[t->group[g * ep + k]].w->memory_bytes;
        if (b && b < m)
            m = b;
    }
    return m;
}

static void s_site(plan_site_t *s, const plan_worker_t *w)
{
    snprintf(s->host, sizeof s->host, "%s", s_or_empty(w->host));
    snprintf(s->institution, sizeof s->institution, "%s", s_or_empty(w->institution));
    s->memory_bytes = w->memory_bytes;
    s->gpu = plan_device_is_gpu(w->device);
}

/* Places replicas [0, dp) into p (stages set). Within a replica the stage that needs the most
 * bytes gets the group with the most memory. Returns SHOAL_OK, or SHOAL_ERR_STATE when a cell
 * does not fit, with `why` naming the worker, the cell and the bytes. */
static shoal_err_t s_assign(s_try_t *t, plan_t *p, char *why, size_t cap)
{
    const uint32_t pp = p->pp, ep = p->ep;
    uint32_t *by_need = calloc(pp, sizeof *by_need), *by_mem = calloc(pp, sizeof *by_mem);
    uint8_t *placed = calloc(t->n + 1, 1);
    shoal_err_t rc = SHOAL_OK;
    if (!by_need || !by_mem || !placed) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "plan: placement");
        goto out;
    }
    for (uint32_t r = 0; r < p->dp; r++) {
        const uint32_t *groups = &t->replica[r * pp];
        /* insertion sorts, stable: ties keep stage order and group order */
        for (uint32_t i = 0; i < pp; i++) {
            uint32_t j = i;
            for (; j > 0 && t->need[by_need[j - 1]] < t->need[i]; j--)
                by_need[j] = by_need[j - 1];
            by_need[j] = i;
            j = i;
            for (; j > 0 && s_group_mem(t, ep, groups[by_mem[j - 1]]) < s_group_mem(t, ep, groups[i]);
                 j--)
                by_mem[j] = by_mem[j - 1];
            by_mem[j] = i;
        }
        for (uint32_t i = 0; i < pp; i++) {
            uint32_t s = by_need[i], g = groups[by_mem[i]];
            for (uint32_t e = 0; e < ep; e++) {
                const plan_worker_t *w = t->cand[t->group[g * ep + e]].w;
                plan_peer_t *q = &p->peers[(r * pp + s) * ep + e];
                placed[t->group[g * ep + e]] = 1;
                snprintf(q->worker_id, sizeof q->worker_id, "%s", w->worker_id);
                snprintf(q->endpoint, sizeof q->endpoint, "%s", s_or_empty(w->endpoint));
                s_site(&q->site, w);
                q->cell = (plan_cell_t){r, s, e};
                q->rank = plan_rank(p, q->cell);
                q->mem_est = t->need[s];
                if (w->memory_bytes && t->need[s] > w->memory_bytes && rc == SHOAL_OK) {
                    snprintf(why, cap,
                             "cell (replica %u, stage %u, ep_rank %u) needs %" PRIu64
                             " bytes, worker %s declares %" PRIu64,
                             r, s, e, t->need[s], w->worker_id, w->memory_bytes);
                    rc = SHOAL_ERR_STATE;
                }
            }
        }
    }
    p->n_spares = 0;
    for (uint32_t i = 0; i < t->n && rc == SHOAL_OK; i++)
        if (!placed[i]) {
            plan_spare_t *sp = &p->spares[p->n_spares++];
            snprintf(sp->worker_id, sizeof sp->worker_id, "%s", t->cand[i].w->worker_id);
            s_site(&sp->site, t->cand[i].w);
        }
out:
    free(by_need);
    free(by_mem);
    free(placed);
    return rc;
}

/* Whether replica r (formed) is on GPUs: its groups are of one kind. */
static int s_replica_gpu(const s_try_t *t, uint32_t pp, uint32_t ep, uint32_t r)
{
    return t->cand[t->group[t->replica[r * pp] * ep]].gpu;
}

/* The dp of an attempt: the fixed one, or among the dp whose dp * ep divides the step's
 * micro-batches the one with the most throughput, dp x the speed of the slowest of the first dp
 * replicas (GPU replicas come first; a tie keeps the larger dp). 0 when none. */
static uint32_t s_dp(const s_try_t *t, uint32_t pp, uint32_t ep)
{
    const plan_request_t *q = t->req;
    uint64_t n_micro = q->micro_batch ? q->global_batch / q->micro_batch : 1;
    if (q->dp)
        return t->n_replicas >= q->dp ? q->dp : 0;
    uint32_t best = 0;
    uint64_t best_rate = 0;
    for (uint32_t dp = 1; dp <= t->n_replicas; dp++) {
        if (ep > 1 && n_micro % ((uint64_t)dp * ep) != 0)
            continue;
        uint64_t slowest = s_replica_gpu(t, pp, ep, dp - 1) ? PLAN_GPU_SPEED : 1;
        if ((uint64_t)dp * slowest >= best_rate) {
            best_rate = (uint64_t)dp * slowest;
            best = dp;
        }
    }
    return best;
}

/* One attempt at `pp`: SHOAL_OK (p filled), SHOAL_ERR_STATE with `why` (too few workers or a
 * cell that does not fit), or another error. */
static shoal_err_t s_try(s_try_t *t, plan_t *p, uint32_t pp, char *why, size_t cap)
{
    const plan_request_t *q = t->req;
    const uint32_t ep = q->ep, L = (uint32_t)q->model->num_hidden_layers;
    shoal_err_t rc = plan_layout(p, 1, pp, ep, L, (uint32_t)q->model->n_routed_experts);
    if (rc == SHOAL_OK)
        rc = plan_balance_stages(p, q->model, q->seq_len);
    if (rc != SHOAL_OK)
        return rc;
    uint32_t *pool = calloc(2 * (size_t)t->n + 1, sizeof *pool);
    t->need = calloc(pp, sizeof *t->need);
    t->group = calloc((size_t)t->n + 1, sizeof *t->group);
    t->replica = calloc((size_t)t->n + 1, sizeof *t->replica);
    if (!pool || !t->need || !t->group || !t->replica) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "plan: placement");
        goto out;
    }
    /* memory needs with the most replicas the count allows (fewer only means fewer in flight) */
    uint32_t dp_guess = q->dp ? q->dp : (t->n / (pp * ep) ? t->n / (pp * ep) : 1);
    p->dp = dp_guess;
    uint64_t least = UINT64_MAX;
    for (uint32_t s = 0; s < pp; s++) {
        t->need[s] = plan_cell_bytes(p, q, s);
        if (t->need[s] < least)
            least = t->need[s];
    }
    t->n_gpu_in = t->n_cpu_in = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        s_cand_t *c = &t->cand[i];
        c->unfit = c->w->memory_bytes && c->w->memory_bytes < least;
        c->gpu = plan_device_is_gpu(c->w->device);
        c->out = !(t->kinds & (c->gpu ? S_GPU : S_CPU)) ||
                 (!c->gpu && q->precision == PLAN_PRECISION_BF16 &&
                  !plan_device_cpu_bf16(c->w->device));
        if (!c->out)
            *(c->gpu ? &t->n_gpu_in : &t->n_cpu_in) += 1;
    }
    qsort(t->cand, t->n, sizeof *t->cand, s_cand_cmp);
    /* groups and replicas never mix kinds: GPU ones from cand[0, n_gpu_in), then CPU ones */
    t->n_groups = t->n_replicas = 0;
    s_form_groups(t, ep, 0, t->n_gpu_in, pool, pool + t->n);
    const uint32_t gpu_groups = t->n_groups;
    s_form_groups(t, ep, t->n_gpu_in, t->n_gpu_in + t->n_cpu_in, pool, pool + t->n);
    s_form_replicas(t, pp, ep, 0, gpu_groups, pool);
    s_form_replicas(t, pp, ep, gpu_groups, t->n_groups, pool);
    uint32_t dp = s_dp(t, pp, ep);
    if (dp == 0) {
        const uint32_t n_in = t->n_gpu_in + t->n_cpu_in;
        char kinds[96] = "";
        if (t->n_gpu_in && t->n_cpu_in)
            snprintf(kinds, sizeof kinds, " (%u GPU, %u CPU: a pipeline or ep group is all one "
                     "kind)", t->n_gpu_in, t->n_cpu_in);
        if (q->dp)
            snprintf(why, cap, "%u live workers%s, data_parallel %u x pp %u x ep %u needs %u",
                     n_in, kinds, q->dp, pp, ep, q->dp * pp * ep);
        else if (t->n_replicas)
            snprintf(why, cap, "%u whole replicas, none with dp x ep %u dividing the %u "
                     "micro-batches of a step", t->n_replicas, ep,
                     q->micro_batch ? q->global_batch / q->micro_batch : 1);
        else
            snprintf(why, cap, "%u live workers%s, one replica needs pp %u x ep %u = %u", n_in,
                     kinds, pp, ep, pp * ep);
        rc = SHOAL_ERR_STATE;
        goto out;
    }
    if (dp != dp_guess) { /* fewer replicas than guessed: more micro-batches each */
        p->dp = dp;
        for (uint32_t s = 0; s < pp; s++)
            t->need[s] = plan_cell_bytes(p, q, s);
    }
    p->dp = dp;
    p->n_peers = dp * pp * ep;
    free(p->peers);
    free(p->spares);
    p->peers = calloc(p->n_peers, sizeof *p->peers);
    p->spares = calloc((size_t)t->n + 1, sizeof *p->spares);
    if (!p->peers || !p->spares) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "plan: peers");
        goto out;
    }
    rc = s_assign(t, p, why, cap);
out:
    free(pool);
    free(t->need);
    free(t->group);
    free(t->replica);
    t->need = NULL;
    t->group = t->replica = NULL;
    return rc;
}

/* The plan with the workers of `kinds`: the spec's pp, raised while a cell does not fit (more
 * stages, fewer layers a cell). SHOAL_ERR_STATE with `why` (without the run) when these workers
 * cannot hold it; *pp_out is the pp placed, *raised_why why the spec's pp did not fit. */
static shoal_err_t s_build_kinds(s_try_t *t, plan_t *p, unsigned kinds, uint32_t *pp_out,
                                 char *why, size_t cap, char *raised_why, size_t raised_cap)
{
    const plan_request_t *req = t->req;
    const uint32_t L = (uint32_t)req->model->num_hidden_layers;
    char first_why[PLAN_NOTE_MAX] = "", last_why[PLAN_NOTE_MAX] = "";
    shoal_err_t rc = SHOAL_ERR_STATE;
    t->kinds = kinds;
    uint32_t pp = req->pp;
    for (; pp <= L; pp++) {
        last_why[0] = 0;
        rc = s_try(t, p, pp, last_why, sizeof last_why);
        if (rc != SHOAL_ERR_STATE)
            break;
        if (!first_why[0])
            snprintf(first_why, sizeof first_why, "%s", last_why);
        if (strncmp(last_why, "cell ", 5) != 0)
            break; /* too few workers: more stages need more still */
    }
    *pp_out = pp;
    if (rc == SHOAL_OK && pp != req->pp)
        snprintf(raised_why, raised_cap, "%s", first_why);
    if (rc != SHOAL_ERR_STATE)
        return rc;
    if (pp > L)
        snprintf(why, cap, "%s (and no pp up to the %u layers fits)", first_why, L);
    else if (pp == req->pp)
        snprintf(why, cap, "%s", last_why);
    else
        snprintf(why, cap, "%.200s; at pp %u: %.200s", first_why, pp, last_why);
    return rc;
}

shoal_err_t plan_build(plan_t *p, const char *run_id, uint64_t generation,
                       const plan_request_t *req, const plan_worker_t *workers, uint32_t n)
{
    const model_config_t *m = req->model;
    const uint32_t L = (uint32_t)m->num_hidden_layers, N = (uint32_t)m->n_routed_experts;
    char why[PLAN_NOTE_MAX] = "", other_why[PLAN_NOTE_MAX] = "", raised[PLAN_NOTE_MAX] = "";
    shoal_err_t rc;
    plan_fini(p);
    if (req->pp == 0 || req->ep == 0 || req->pp > L || (N && N % req->ep))
        return shoal_fail(SHOAL_ERR_INVALID,
                          "plan for %s: pp %u, ep %u cannot split %u layers and %u experts",
                          run_id, req->pp, req->ep, L, N);
    if (n == 0)
        return shoal_fail(SHOAL_ERR_STATE, "plan for %s: no live workers", run_id);
    uint32_t n_gpu = 0, n_cpu_bf16 = 0;
    for (uint32_t i = 0; i < n; i++) {
        n_gpu += (uint32_t)plan_device_is_gpu(workers[i].device);
        n_cpu_bf16 += (uint32_t)plan_device_cpu_bf16(workers[i].device);
    }
    const unsigned have = (n_gpu ? S_GPU : 0) | (n_gpu < n ? S_CPU : 0);
    const int bf16 = req->precision == PLAN_PRECISION_BF16;
    if (bf16 && !n_gpu && !n_cpu_bf16)
        return shoal_fail(SHOAL_ERR_STATE, "plan for %s: train.precision bf16 needs GPU workers "
                          "or CPU workers that compute in bf16 (declared \"cpu bf16\": oneDNN "
                          "and AVX512_BF16 or AMX), and none of the %u live workers does",
                          run_id, n);
    /* which kinds to try, in order: fp32 is the same math on both, so they may share the
     * data-parallel groups; auto is bf16 on GPUs, fp32 on CPUs, and bf16 is cuBLAS on GPUs,
     * oneDNN on CPUs: one kind per plan */
    const unsigned bf16_have = (n_gpu ? S_GPU : 0) | (n_cpu_bf16 ? S_CPU : 0);
    unsigned tries[2] = {bf16 ? bf16_have : have, 0};
    if ((req->precision == PLAN_PRECISION_AUTO || bf16) && tries[0] == (S_GPU | S_CPU))
        tries[0] = S_GPU, tries[1] = S_CPU;
    s_try_t t = {.req = req, .n = n, .cand = calloc(n, sizeof(s_cand_t))};
    if (!t.cand)
        return shoal_fail(SHOAL_ERR_NOMEM, "plan: workers");
    for (uint32_t i = 0; i < n; i++)
        t.cand[i].w = &workers[i];
    uint32_t pp = req->pp;
    unsigned placed = tries[0];
    rc = s_build_kinds(&t, p, tries[0], &pp, why, sizeof why, raised, sizeof raised);
    if (rc == SHOAL_ERR_STATE && tries[1]) {
        placed = tries[1];
        rc = s_build_kinds(&t, p, tries[1], &pp, other_why, sizeof other_why, raised,
                           sizeof raised);
    }
    free(t.cand);
    if (rc == SHOAL_ERR_STATE && tries[1] && bf16)
        rc = shoal_fail(SHOAL_ERR_STATE, "plan for %s: GPU workers alone: %.180s; bf16 CPU "
                        "workers alone: %.180s; under train.precision bf16 GPU replicas (cuBLAS) "
                        "and CPU replicas (oneDNN) never share a data-parallel group",
                        run_id, why, other_why);
    else if (rc == SHOAL_ERR_STATE && tries[1])
        rc = shoal_fail(SHOAL_ERR_STATE, "plan for %s: GPU workers alone: %.180s; CPU workers "
                        "alone: %.180s; GPU replicas (bf16 under train.precision auto) and CPU "
                        "replicas (fp32) never share a data-parallel group: train.precision fp32 "
                        "lets them", run_id, why, other_why);
    else if (rc == SHOAL_ERR_STATE && bf16 && n_cpu_bf16 < n - n_gpu)
        rc = shoal_fail(SHOAL_ERR_STATE, "plan for %s: %s (under train.precision bf16 only GPU "
                        "workers and CPU workers declaring \"cpu bf16\" count: %u of %u)",
                        run_id, why, n_gpu + n_cpu_bf16, n);
    else if (rc == SHOAL_ERR_STATE)
        rc = shoal_fail(SHOAL_ERR_STATE, "plan for %s: %s", run_id, why);
    if (rc != SHOAL_OK)
        goto fail;
    snprintf(p->run_id, sizeof p->run_id, "%s", run_id);
    p->generation = generation;
    size_t at = 0;
    const uint32_t n_cpu_out = placed == S_GPU ? n - n_gpu : bf16 ? n - n_gpu - n_cpu_bf16 : 0;
    if (placed != have || n_cpu_out) {
        const int gpu_only = placed == S_GPU;
        const char *why_cpu =
            !bf16 ? "under train.precision auto GPUs compute in bf16 and CPUs in fp32, never in "
                    "one data-parallel group"
            : gpu_only && n_cpu_bf16 ? "under train.precision bf16 GPUs (cuBLAS) and CPUs (oneDNN) "
                                       "never share a data-parallel group"
                                     : "train.precision bf16 places CPU workers that declare "
                                       "\"cpu bf16\" only";
        if (gpu_only)
            at = (size_t)snprintf(p->note, sizeof p->note,
                                  "GPU workers only (the %u CPU workers are spares): %s", n_cpu_out,
                                  why_cpu);
        else if (!n_cpu_out)
            at = (size_t)snprintf(p->note, sizeof p->note,
                                  "CPU workers only (the %u GPU workers are spares): %s; GPU "
                                  "workers alone: %.160s", n_gpu, why_cpu, why);
        else
            at = (size_t)snprintf(p->note, sizeof p->note,
                                  "CPU workers that declare bf16 only (spares: %u GPU, %u CPU): "
                                  "%s%s%.160s", n_gpu, n_cpu_out, why_cpu,
                                  n_gpu ? "; GPU workers alone: " : "", n_gpu ? why : "");
        if (at >= sizeof p->note)
            at = sizeof p->note - 1;
    }
    if (pp != req->pp)
        snprintf(p->note + at, sizeof p->note - at, "%spp raised from %u to %u: at pp %u, %.300s",
                 at ? "; " : "", req->pp, pp, req->pp, raised);
    return SHOAL_OK;
fail:
    plan_fini(p);
    return rc;
}
