/* experts.c: `shoalctl experts RUN`: the per-expert loads the workers reported (decayed by the
 * coordinator), per MoE layer: the hottest experts, the imbalance of the plan's contiguous expert
 * split, and the EPLB placement (hot experts replicated, groups packed per host) those loads call
 * for, with its imbalance and hosts-per-token bound. Advisory: the trainer does not yet run
 * redundant expert copies (ops/CAPACITY.md "Hot experts"). */
#include <stdio.h>
#include <string.h>

#include "numparse.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl experts RUN [--json] [--ep E] [--hosts H] [--redundant R]\n"
    "  Per MoE layer: the step of the newest reported loads, the hottest experts (share of the\n"
    "  decayed load), the max/mean load per ep rank under the plan's contiguous split, and the\n"
    "  EPLB placement of the observed loads: its max/mean, the most hosts a token reaches.\n"
    "  --ep E          place over E ranks (default: the plan's ep)\n"
    "  --hosts H       the ep group spans H hosts (default: the plan's; 1 for another --ep)\n"
    "  --redundant R   R redundant expert slots per rank (default 0)\n"
    "  --json          the coordinator's document: per layer load[], last[] (the newest step's\n"
    "                  counts), last_total, hottest, contiguous_imbalance, eplb {imbalance,\n"
    "                  token_hosts, node_limited, hosts, slots_per_rank, replicas[]}\n";

static uint32_t s_ep, s_hosts, s_redundant;

static shoal_err_t s_ask(ctl_client_t *c, const char *run, ctl_reply_t *reply)
{
    return ctl_client_experts(c, run, s_ep, s_hosts, s_redundant, reply);
}

static void s_print(const json_t *doc)
{
    printf("run %s: %lld experts, top-%lld, %lld groups (keep %lld); placement over ep %lld on "
           "%lld host(s), %lld redundant slot(s) per rank; loads halve every %.0f steps\n",
           ctl_json_str(doc, "run", "?"), ctl_json_int(doc, "n_experts", 0),
           ctl_json_int(doc, "top_k", 0), ctl_json_int(doc, "n_group", 0),
           ctl_json_int(doc, "topk_group", 0), ctl_json_int(doc, "ep", 0),
           ctl_json_int(doc, "hosts", 0), ctl_json_int(doc, "redundant", 0),
           ctl_json_real(doc, "half_life_steps", 0));
    const json_t *layers = json_object_get(doc, "layers");
    if (json_array_size(layers) == 0) {
        printf("no expert loads reported yet\n");
        return;
    }
    static const char *const head[] = {"LAYER", "STEP", "HOTTEST (share)", "CONTIGUOUS",
                                       "EPLB",  "TOKEN_HOSTS"};
    ctl_table_t *t = ctl_table_new(6, head);
    size_t i;
    const json_t *l;
    json_array_foreach(layers, i, l)
    {
        char layer[16], step[24], hot[96] = "", contig[24], eplb[24], hosts[16];
        size_t k, at = 0;
        const json_t *h;
        json_array_foreach(json_object_get(l, "hottest"), k, h)
        {
            if (k == 3)
                break;
            at += (size_t)snprintf(hot + at, sizeof hot - at, "%s%lld (%.1f%%)", k ? ", " : "",
                                   ctl_json_int(h, "expert", 0),
                                   100.0 * ctl_json_real(h, "share", 0));
            if (at >= sizeof hot)
                break;
        }
        const json_t *e = json_object_get(l, "eplb");
        snprintf(layer, sizeof layer, "%lld", ctl_json_int(l, "layer", 0));
        snprintf(step, sizeof step, "%lld", ctl_json_int(l, "step", 0));
        snprintf(contig, sizeof contig, "%.3f", ctl_json_real(l, "contiguous_imbalance", 0));
        snprintf(eplb, sizeof eplb, "%.3f", ctl_json_real(e, "imbalance", 0));
        snprintf(hosts, sizeof hosts, "%lld", ctl_json_int(e, "token_hosts", 0));
        const char *cells[] = {layer, step, hot, contig, eplb, hosts};
        if (t)
            ctl_table_add(t, cells);
    }
    if (t)
        ctl_table_print(t, stdout);
    ctl_table_destroy(&t);
    if (ctl_json_int(doc, "dropped", 0) > 0)
        printf("%lld report(s) dropped: loads that did not fit the model\n",
               ctl_json_int(doc, "dropped", 0));
}

/* A --flag value of 0..max into *out (usage error message on a bad one). */
static int s_u32(ctl_opts_t *o, const char *flag, const char *v, uint32_t max, uint32_t *out)
{
    uint64_t n = 0;
    if (v && numparse_u64(v, max, &n) != SHOAL_OK)
        return ctl_usage_error(o, s_usage, "--%s: expected 0..%u, got '%s'", flag, max, v);
    *out = (uint32_t)n;
    return CTL_EXIT_OK;
}

int cmd_experts(ctl_opts_t *o, int argc, char **argv)
{
    const char *ep_s = NULL, *hosts_s = NULL, *red_s = NULL;
    const ctl_optdef_t defs[] = {{"ep", true, &ep_s, NULL},
                                 {"hosts", true, &hosts_s, NULL},
                                 {"redundant", true, &red_s, NULL},
                                 {NULL, false, NULL, NULL}};
    const char *run;
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, "RUN", &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    if ((ex = s_u32(o, "ep", ep_s, 65536, &s_ep)) != CTL_EXIT_OK ||
        (ex = s_u32(o, "hosts", hosts_s, 65536, &s_hosts)) != CTL_EXIT_OK ||
        (ex = s_u32(o, "redundant", red_s, 4096, &s_redundant)) != CTL_EXIT_OK)
        return ex;
    return ctl_show(o, s_ask, run, s_print);
}
