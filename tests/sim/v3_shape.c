/* v3_shape.c: the DeepSeek-V3 model, layout and cluster of the planner's scale checks. */
#include "v3_shape.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

void v3_model(model_config_t *m)
{
    model_config_tiny(m);
    m->vocab_size = 129280;
    m->hidden_size = 7168;
    m->num_hidden_layers = 61;
    m->num_attention_heads = 128;
    m->intermediate_size = 18432;
    m->moe_intermediate_size = 2048;
    m->n_routed_experts = 256;
    m->n_shared_experts = 1;
    m->num_experts_per_tok = 8;
    m->n_group = 8;
    m->topk_group = 4;
    m->first_k_dense_replace = 3;
    m->routed_scaling_factor = 2.5;
    m->max_position_embeddings = 4096;
}

plan_request_t v3_request(const model_config_t *m)
{
    return (plan_request_t){.pp = 16, .ep = 64, .dp = 0, .model = m, .seq_len = 4096,
                            .micro_batch = 1, .global_batch = 15360,
                            .precision = PLAN_PRECISION_BF16};
}

struct v3_cluster {
    plan_worker_t *w;
    uint32_t n;
    char (*id)[16], (*host)[16], (*ep)[32];
};

static const char *const s_inst[V3_INSTITUTIONS] = {"inst-a", "inst-b", "inst-c", "inst-d"};

v3_cluster_t *v3_cluster_new(uint32_t n_hosts, int skip_host, uint64_t memory)
{
    v3_cluster_t *c = calloc(1, sizeof *c);
    const uint32_t cap = n_hosts * V3_GPUS_PER_HOST;
    if (!c || !(c->w = calloc(cap, sizeof *c->w)) || !(c->id = calloc(cap, sizeof *c->id)) ||
        !(c->host = calloc(cap, sizeof *c->host)) || !(c->ep = calloc(cap, sizeof *c->ep))) {
        v3_cluster_free(&c);
        return NULL;
    }
    for (uint32_t h = 0; h < n_hosts; h++)
        for (uint32_t g = 0; g < V3_GPUS_PER_HOST; g++) {
            uint32_t i = h * V3_GPUS_PER_HOST + g;
            if ((int)h == skip_host)
                continue;
            snprintf(c->id[c->n], sizeof c->id[0], "w%u", i + 1);
            snprintf(c->host[c->n], sizeof c->host[0], "h%03u", h);
            snprintf(c->ep[c->n], sizeof c->ep[0], "tcp://h%03u:%u", h, 7500 + g);
            c->w[c->n] = (plan_worker_t){.worker_id = c->id[c->n], .endpoint = c->ep[c->n],
                                         .host = c->host[c->n],
                                         .institution = s_inst[h % V3_INSTITUTIONS],
                                         .device = "cuda:0 NVIDIA H100",
                                         .memory_bytes = memory};
            c->n++;
        }
    return c;
}

const plan_worker_t *v3_cluster_workers(const v3_cluster_t *c, uint32_t *n)
{
    *n = c->n;
    return c->w;
}

void v3_cluster_free(v3_cluster_t **cp)
{
    v3_cluster_t *c = *cp;
    if (!c)
        return;
    free(c->w);
    free(c->id);
    free(c->host);
    free(c->ep);
    free(c);
    *cp = NULL;
}

void v3_expert_loads(double *load, uint32_t n, uint32_t seed)
{
    /* log-normal with sigma 1: the hottest of 256 carry ~10x the median (the spread EPLB's
     * authors report before balancing) */
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (uint32_t i = 0; i < n; i++) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            u[k] = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        }
        load[i] = 1000.0 * exp(sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]));
    }
}
