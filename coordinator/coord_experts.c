/* coord_experts.c: hot experts. The per-expert token counts workers report with each step
 * (StepReport.expert_loads: one report per pipeline stage, from replica 0 / ep rank 0, whose
 * counts cover the whole batch after the step's reduce) are folded per run into a decayed load
 * per (MoE layer, expert): load <- load * 2^(-steps / half_life) + counts, half_life the config
 * key expert_load_half_life_steps. From it come the imbalance of the plan's contiguous expert
 * split (metrics, shoalctl experts) and the EPLB placement plan_eplb_place would make. The loads
 * are persisted in the meta family ("experts/<run>", JSON) every COORD_EXPERTS_PERSIST_STEPS
 * folded steps and read back on first use after a restart. The trainer does not run redundant
 * copies yet: the placement is advisory (ops/CAPACITY.md "Hot experts"). */
#include "coord_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "log.h"
#include "runspec.h"

#define COORD_EXPERTS_PERSIST_STEPS 16 /* folded steps between two writes of the loads */
#define COORD_EXPERTS_HOTTEST 8        /* experts listed per layer */

struct coord_experts {
    uint32_t n_layers, n_experts;
    /* from the run's model (its spec, parsed once) */
    uint32_t first_moe, n_group, topk_group, top_k;
    double *load;        /* [n_layers][n_experts], decayed token counts; dense rows stay 0 */
    uint64_t *last;      /* [n_layers][n_experts], the newest folded step's counts */
    int64_t *layer_step; /* [n_layers], the newest step folded (0: none) */
    uint64_t *folded;    /* [n_layers], steps folded */
    uint64_t dropped;    /* reports whose loads did not fit the model */
    int64_t persisted_step, newest_step;
};

void coord_experts_free(coord_run_t *r)
{
    coord_experts_t *e = r->experts;
    if (!e)
        return;
    free(e->load);
    free(e->last);
    free(e->layer_step);
    free(e->folded);
    free(e);
    r->experts = NULL;
}

static void s_key(const coord_run_t *r, char *key, size_t n)
{
    snprintf(key, n, "experts/%s", r->id);
}

/* Reads back what a previous process persisted (missing or malformed: start empty, logged). */
static void s_load(coord_t *c, coord_run_t *r, coord_experts_t *e)
{
    char key[COORD_ID_MAX + 16], *v = NULL;
    s_key(r, key, sizeof key);
    if (store_get(c->st, STORE_CF_META, key, &v, NULL) != SHOAL_OK)
        return; /* none yet */
    json_error_t jerr;
    json_t *j = json_loads(v, 0, &jerr), *layers = j ? json_object_get(j, "layers") : NULL;
    free(v);
    if (!json_is_array(layers) || json_array_size(layers) != e->n_layers) {
        log_warn("run %s: stored expert loads unreadable or of another model: starting empty",
                 r->id);
        json_decref(j);
        return;
    }
    for (uint32_t l = 0; l < e->n_layers; l++) {
        json_t *row = json_array_get(layers, l);
        json_t *load = json_object_get(row, "load"), *last = json_object_get(row, "last");
        if (json_array_size(load) != e->n_experts || json_array_size(last) != e->n_experts)
            continue; /* a dense layer, or none folded */
        e->layer_step[l] = json_integer_value(json_object_get(row, "step"));
        e->folded[l] = (uint64_t)json_integer_value(json_object_get(row, "folded"));
        for (uint32_t x = 0; x < e->n_experts; x++) {
            e->load[(size_t)l * e->n_experts + x] = json_number_value(json_array_get(load, x));
            e->last[(size_t)l * e->n_experts + x] =
                (uint64_t)json_integer_value(json_array_get(last, x));
        }
        if (e->layer_step[l] > e->newest_step)
            e->newest_step = e->layer_step[l];
    }
    e->persisted_step = e->newest_step;
    json_decref(j);
}

/* The run's state, made (and read back from the store) on first use; NULL when the model has
 * no routed experts or memory ran out (logged). */
static coord_experts_t *s_get(coord_t *c, coord_run_t *r)
{
    if (r->experts || !r->n_experts || !r->n_layers)
        return r->experts;
    runspec_t *spec = malloc(sizeof *spec);
    coord_experts_t *e = calloc(1, sizeof *e);
    const size_t n = (size_t)r->n_layers * r->n_experts;
    if (e) {
        e->n_layers = r->n_layers;
        e->n_experts = r->n_experts;
        e->load = calloc(n, sizeof *e->load);
        e->last = calloc(n, sizeof *e->last);
        e->layer_step = calloc(r->n_layers, sizeof *e->layer_step);
        e->folded = calloc(r->n_layers, sizeof *e->folded);
    }
    if (!spec || !e || !e->load || !e->last || !e->layer_step || !e->folded) {
        log_error("run %s: no memory for its expert loads", r->id);
        free(spec);
        r->experts = e;
        coord_experts_free(r);
        return NULL;
    }
    /* the spec was checked at submit; a failure here leaves the defaults of a plain layout */
    e->n_group = e->topk_group = e->top_k = 1;
    if (runspec_load_string(r->spec_yaml, r->name, spec) == SHOAL_OK) {
        e->first_moe = (uint32_t)spec->model.first_k_dense_replace;
        e->n_group = (uint32_t)spec->model.n_group;
        e->topk_group = (uint32_t)spec->model.topk_group;
        e->top_k = (uint32_t)spec->model.num_experts_per_tok;
    } else {
        log_warn("run %s: spec unreadable for the expert loads: %s", r->id, shoal_errmsg());
    }
    free(spec);
    r->experts = e;
    s_load(c, r, e);
    return e;
}

static void s_persist(coord_t *c, coord_run_t *r, coord_experts_t *e)
{
    json_t *layers = json_array();
    for (uint32_t l = 0; layers && l < e->n_layers; l++) {
        json_t *load = json_array(), *last = json_array();
        for (uint32_t x = 0; e->layer_step[l] && x < e->n_experts; x++) {
            json_array_append_new(load, json_real(e->load[(size_t)l * e->n_experts + x]));
            json_array_append_new(last,
                                  json_integer((json_int_t)e->last[(size_t)l * e->n_experts + x]));
        }
        json_array_append_new(layers, json_pack("{s:I, s:I, s:o, s:o}", "step",
                                                (json_int_t)e->layer_step[l], "folded",
                                                (json_int_t)e->folded[l], "load", load, "last",
                                                last));
    }
    char key[COORD_ID_MAX + 16];
    s_key(r, key, sizeof key);
    coord_put_json(c, STORE_CF_META, key, layers ? json_pack("{s:o}", "layers", layers) : NULL);
    e->persisted_step = e->newest_step;
}

/* Why the loads of a report from the plan's stage `st` do not fit the run's model ("" = fit). */
static const char *s_misfit(const coord_experts_t *e, const plan_stage_t *st,
                            const Shoal__StepReport *sr)
{
    for (size_t i = 0; i < sr->n_expert_loads; i++) {
        const Shoal__ExpertLoad *el = sr->expert_loads[i];
        if (el->n_counts != e->n_experts)
            return "counts not one per routed expert";
        if (el->layer >= e->n_layers || el->layer < e->first_moe)
            return "layer not a MoE layer of the model";
        if (st && (el->layer < st->first_layer || el->layer >= st->first_layer + st->n_layers))
            return "layer outside the sender's stage";
        for (size_t j = 0; j < i; j++)
            if (sr->expert_loads[j]->layer == el->layer)
                return "layer reported twice";
    }
    return "";
}

void coord_experts_note(coord_t *c, coord_run_t *r, coord_worker_t *w, int rank,
                        const Shoal__StepReport *sr)
{
    if (!sr->n_expert_loads)
        return;
    coord_experts_t *e = s_get(c, r);
    /* the sender's cell: peers[rank] when the plan lists peers by rank, else by id */
    const plan_peer_t *me = rank >= 0 && (uint32_t)rank < r->plan.n_peers &&
                                    strcmp(r->plan.peers[rank].worker_id, w->id) == 0
                                ? &r->plan.peers[rank]
                                : plan_find_worker(&r->plan, w->id);
    const plan_stage_t *st =
        me && me->cell.stage < r->plan.pp ? &r->plan.stages[me->cell.stage] : NULL;
    const char *why = e ? s_misfit(e, st, sr) : "the run's model has no routed experts";
    if (why[0]) {
        if (e)
            e->dropped++;
        c->dropped++;
        log_warn("run %s: expert loads of step %" PRId64 " from %s dropped: %s", r->id, sr->step,
                 w->id, why);
        coord_guard_strike(c, w, "step_report expert loads that do not fit the model");
        return;
    }
    const double half_life = c->cfg.expert_load_half_life_steps;
    for (size_t i = 0; i < sr->n_expert_loads; i++) {
        const Shoal__ExpertLoad *el = sr->expert_loads[i];
        const uint32_t l = el->layer;
        if (sr->step <= e->layer_step[l])
            continue; /* a retry, or another rank's report of a step already folded */
        const double decay =
            e->layer_step[l] ? exp2(-(double)(sr->step - e->layer_step[l]) / half_life) : 0.0;
        double *load = e->load + (size_t)l * e->n_experts;
        uint64_t *last = e->last + (size_t)l * e->n_experts;
        for (uint32_t x = 0; x < e->n_experts; x++) {
            load[x] = load[x] * decay + (double)el->counts[x];
            last[x] = el->counts[x];
        }
        e->layer_step[l] = sr->step;
        e->folded[l]++;
        if (sr->step > e->newest_step)
            e->newest_step = sr->step;
    }
    if (e->newest_step - e->persisted_step >= COORD_EXPERTS_PERSIST_STEPS ||
        (e->persisted_step == 0 && e->newest_step > 0))
        s_persist(c, r, e);
}

/* max / mean of the loads summed over `ep` equal contiguous blocks of experts (the plan's
 * split); 0 when nothing was routed. */
static double s_contiguous_imbalance(const double *load, uint32_t n, uint32_t ep)
{
    double max = 0, sum = 0;
    const uint32_t per = n / ep;
    for (uint32_t k = 0; k < ep; k++) {
        double s = 0;
        for (uint32_t x = k * per; x < (k + 1) * per; x++)
            s += load[x];
        sum += s;
        if (s > max)
            max = s;
    }
    return sum > 0 ? max / (sum / ep) : 0;
}

/* The ep a split of the run uses: the plan's (1 without one) or asked; per expert (ep = n)
 * when that is 1, so the figure still says how uneven the experts are. */
static uint32_t s_metric_ep(const coord_run_t *r, const coord_experts_t *e)
{
    const uint32_t ep = r->plan.ep > 1 ? r->plan.ep : e->n_experts;
    return e->n_experts % ep == 0 ? ep : e->n_experts;
}

void coord_experts_render(coord_t *c, prom_text_t *t)
{
    prom_family(t, "shoal_expert_load_imbalance", "gauge",
                "per MoE layer: max/mean decayed routed-token load per ep rank under the plan's "
                "contiguous expert split (per expert when the plan has ep 1)");
    for (int i = 0; i < c->n_runs; i++) {
        coord_run_t *r = c->runs[i];
        if (r->state != RUN_RUNNING && r->state != RUN_PAUSED)
            continue; /* bounded: live runs only */
        coord_experts_t *e = r->n_experts ? s_get(c, r) : NULL;
        for (uint32_t l = 0; e && l < e->n_layers; l++) {
            if (!e->layer_step[l])
                continue;
            char layer[16];
            snprintf(layer, sizeof layer, "%u", l);
            prom_sample(t, "shoal_expert_load_imbalance",
                        s_contiguous_imbalance(e->load + (size_t)l * e->n_experts, e->n_experts,
                                               s_metric_ep(r, e)),
                        "run", r->name, "layer", layer, NULL);
        }
    }
}

/* Experts by decreasing load (ties: lower index), the first k of them into top[]. */
static uint32_t s_hottest(const double *load, uint32_t n, uint32_t k, uint32_t *top)
{
    uint32_t m = 0;
    for (uint32_t x = 0; x < n; x++) {
        if (m == k && !(load[x] > load[top[k - 1]]))
            continue;
        uint32_t j = m < k ? m++ : k - 1;
        for (; j > 0 && load[top[j - 1]] < load[x]; j--)
            top[j] = top[j - 1];
        top[j] = x;
    }
    return m;
}

/* One layer's figures: loads, hottest experts, the contiguous split's imbalance and the EPLB
 * placement's (NULL on out of memory or a placement that cannot be made: shoal_fail set). */
static json_t *s_layer_json(const coord_experts_t *e, uint32_t l, uint32_t ep, uint32_t hosts,
                            uint32_t redundant)
{
    const double *load = e->load + (size_t)l * e->n_experts;
    const uint64_t *last = e->last + (size_t)l * e->n_experts;
    double sum = 0;
    uint64_t last_sum = 0;
    json_t *jl = json_array(), *jlast = json_array(), *hot = json_array();
    for (uint32_t x = 0; x < e->n_experts; x++) {
        sum += load[x];
        last_sum += last[x];
        json_array_append_new(jl, json_real(load[x]));
        json_array_append_new(jlast, json_integer((json_int_t)last[x]));
    }
    uint32_t top[COORD_EXPERTS_HOTTEST];
    const uint32_t k = s_hottest(load, e->n_experts, COORD_EXPERTS_HOTTEST, top);
    for (uint32_t i = 0; i < k; i++)
        json_array_append_new(hot, json_pack("{s:i, s:f}", "expert", (int)top[i], "share",
                                             sum > 0 ? load[top[i]] / sum : 0.0));
    plan_eplb_t pl = {0};
    if (plan_eplb_place(&pl, load, e->n_experts, e->n_group, hosts, ep, redundant) != SHOAL_OK) {
        json_decref(jl);
        json_decref(jlast);
        json_decref(hot);
        return NULL;
    }
    json_t *eplb = json_pack(
        "{s:f, s:i, s:b, s:i, s:i}", "imbalance",
        pl.mean_rank_load > 0 ? pl.max_rank_load / pl.mean_rank_load : 0.0, "token_hosts",
        (int)plan_eplb_token_hosts(&pl, e->n_group, e->topk_group), "node_limited",
        pl.node_limited, "hosts", (int)pl.n_nodes, "slots_per_rank", (int)pl.slots);
    json_t *reps = json_array();
    for (uint32_t x = 0; x < e->n_experts; x++)
        json_array_append_new(reps, json_integer(pl.replicas[x]));
    json_object_set_new(eplb, "replicas", reps);
    plan_eplb_fini(&pl);
    return json_pack("{s:i, s:I, s:I, s:I, s:f, s:o, s:o, s:o, s:f, s:o}", "layer", (int)l,
                     "step", (json_int_t)e->layer_step[l], "folded", (json_int_t)e->folded[l],
                     "last_total", (json_int_t)last_sum, "load_total", sum, "load", jl, "last",
                     jlast, "hottest", hot, "contiguous_imbalance",
                     s_contiguous_imbalance(load, e->n_experts, ep), "eplb", eplb);
}

json_t *coord_experts_json(coord_t *c, coord_run_t *r, uint32_t ep, uint32_t hosts,
                           uint32_t redundant)
{
    coord_experts_t *e = s_get(c, r);
    if (!e) {
        shoal_fail(SHOAL_ERR_STATE, "run %s: its model has no routed experts", r->id);
        return NULL;
    }
    const int plan_ep = ep == 0;
    if (plan_ep)
        ep = r->plan.ep ? r->plan.ep : 1;
    if (!hosts) {
        /* the plan's ep group of replica 0 at the first stage holding a MoE layer */
        uint32_t stage = 0;
        while (stage + 1 < r->plan.pp && r->plan.stages[stage].first_layer +
                                                 r->plan.stages[stage].n_layers <= e->first_moe)
            stage++;
        hosts = plan_ep && r->plan.n_peers ? plan_ep_hosts(&r->plan, 0, stage) : 1;
        if (!hosts || ep % hosts)
            hosts = 1;
    }
    if (e->n_experts % ep || ep % hosts) {
        shoal_fail(SHOAL_ERR_INVALID, "run %s: ep %u does not divide its %u experts, or %u hosts "
                   "do not divide ep %u", r->id, ep, e->n_experts, hosts, ep);
        return NULL;
    }
    json_t *layers = json_array();
    for (uint32_t l = 0; layers && l < e->n_layers; l++) {
        if (!e->layer_step[l])
            continue;
        json_t *jl = s_layer_json(e, l, ep, hosts, redundant);
        if (!jl) {
            json_decref(layers);
            return NULL;
        }
        json_array_append_new(layers, jl);
    }
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:I, s:o}", CTL_F_RUN, r->id,
                     "n_experts", (int)e->n_experts, "top_k", (int)e->top_k, "n_group",
                     (int)e->n_group, "topk_group", (int)e->topk_group, "ep", (int)ep, "hosts",
                     (int)hosts, "redundant", (int)redundant, "half_life_steps",
                     (double)c->cfg.expert_load_half_life_steps, "dropped",
                     (json_int_t)e->dropped, "layers", layers);
}
