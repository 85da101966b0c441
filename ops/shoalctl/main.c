/* main.c: shoalctl, the operator CLI of shoal: global options, then dispatch to one verb.
 * Exit codes: 0 ok, 1 error (unreachable coordinator, refused request, failed check), 2 usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoalctl.h"
#include "shoal_version.h"

static const char s_usage[] =
    "usage: shoalctl [--control ENDPOINT] [--timeout SECONDS] VERB [ARGS] [--json]\n"
    "\n"
    "verbs (RUN is a run's id or name, WORKER a worker's id or name):\n"
    "  submit RUN.yaml        validate a run spec and submit it\n"
    "  status [RUN]           runs with their state, step, loss, generation, checkpoint\n"
    "  workers                workers with their state, run, cell and last heartbeat\n"
    "  drain WORKER           take a worker out of its run at the next step boundary\n"
    "  undrain WORKER         let a drained worker be planned again\n"
    "  pause RUN | resume RUN | cancel RUN\n"
    "  events RUN             the run's ledger (--since SEQ, --limit N)\n"
    "  history RUN            the run's per-step history: time, loss, tokens/s, step time\n"
    "                         (--from STEP, --json, --csv)\n"
    "  verify RUN             check the ledger's hash chain (exit 1 when broken);\n"
    "                         --pubkey K checks every entry's signature here, --ledger FILE an\n"
    "                         exported ledger offline\n"
    "  keys new-signing --out DIR\n"
    "                         write the Ed25519 key pair that signs the ledger\n"
    "  keys new --out DIR     write a CURVE key pair (key.secret 0600, key.public)\n"
    "  keys reload            make the coordinator re-read its allow-list (admin key)\n"
    "  plan RUN               the placement the coordinator would make now (not applied)\n"
    "  experts RUN [--ep E] [--hosts H] [--redundant R]\n"
    "                         observed per-expert loads: hottest experts, imbalance, and the\n"
    "                         EPLB placement they call for\n"
    "  export RUN --step K --out DIR\n"
    "                         write a committed checkpoint as a Hugging Face model directory\n"
    "  manifest RUN [--step K]\n"
    "                         a committed checkpoint's shards and the workers holding each\n"
    "  up [--workers N] [RUN.yaml]\n"
    "                         start a local coordinator and N workers, run a job end to end\n"
    "  release RUN --out DIR --spec RUN.yaml [--metrics FILES]\n"
    "                         write the open release of a finished run (weights, data\n"
    "                         manifest, spec, per-step metrics from the coordinator's\n"
    "                         history, plans, verified ledger, model card)\n"
    "  replay DIR [--workers N]\n"
    "                         retrain a release locally and check its weights byte for byte\n"
    "  plot RUN|DIR --out FILE.png|svg\n"
    "                         loss and tokens/s over wall time, plan changes marked\n"
    "\n"
    "options:\n"
    "  --control ENDPOINT     control endpoint (default $SHOAL_CONTROL, else\n"
    "                         " CTL_DEFAULT_ENDPOINT ")\n"
    "  --timeout SECONDS      wait at most this long for each answer (default 5)\n"
    "  --keys DIR             operator key for a TCP endpoint (default $SHOAL_KEYS): DIR/key.secret\n"
    "                         and DIR/coordinator.public (ops/SECURITY.md)\n"
    "  --insecure             plaintext TCP (also SHOAL_INSECURE=1)\n"
    "  --json                 machine-readable output (read commands)\n"
    "  -h, --help             this help; VERB --help for a verb's options\n"
    "  --version              print shoalctl's version\n";

typedef struct {
    const char *name;
    int (*fn)(ctl_opts_t *o, int argc, char **argv);
} s_verb_t;

static const s_verb_t s_verbs[] = {
    {"submit", cmd_submit}, {"status", cmd_status},   {"workers", cmd_workers},
    {"drain", cmd_drain},   {"undrain", cmd_undrain}, {"pause", cmd_pause},
    {"resume", cmd_resume}, {"cancel", cmd_cancel},   {"events", cmd_events},
    {"verify", cmd_verify}, {"plan", cmd_plan},       {"up", cmd_up},
    {"export", cmd_export}, {"manifest", cmd_manifest},
    {"release", cmd_release}, {"replay", cmd_replay},  {"plot", cmd_plot},
    {"history", cmd_history},
    {"experts", cmd_experts},
};

int main(int argc, char **argv)
{
    ctl_opts_t o = {.timeout_ms = CTL_DEFAULT_TIMEOUT_MS};
    const char *env = getenv("SHOAL_CONTROL");
    o.endpoint = env && *env ? env : CTL_DEFAULT_ENDPOINT;

    /* Global options before the verb; the verbs accept them after it too. */
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(s_usage, stdout);
            return CTL_EXIT_OK;
        }
        if (strcmp(a, "--version") == 0) {
            printf("shoalctl %s\n", SHOAL_VERSION);
            return CTL_EXIT_OK;
        }
        const char *pos[1];
        int n_pos;
        int takes_value = (strcmp(a, "--control") == 0 || strcmp(a, "--timeout") == 0 ||
                           strcmp(a, "--keys") == 0);
        int n = takes_value ? 2 : 1;
        if (i + n > argc)
            return ctl_usage_error(&o, s_usage, "option '%s' needs a value", a);
        /* Reuse the verb parser on just this option (argv[i-1] stands in for argv[0]). */
        int rc = ctl_parse_args(&o, n + 1, argv + i - 1, NULL, s_usage, pos, 0, &n_pos);
        if (rc != CTL_EXIT_OK)
            return rc < 0 ? CTL_EXIT_OK : rc;
        i += n;
    }
    if (i >= argc)
        return ctl_usage_error(&o, s_usage, "no verb given");
    /* `keys new-signing` (the ledger's Ed25519 key) is a two-word verb of its own. */
    if (strcmp(argv[i], "keys") == 0 && i + 1 < argc && strcmp(argv[i + 1], "new-signing") == 0) {
        o.verb = "keys new-signing";
        return cmd_keys_new_signing(&o, argc - i - 1, argv + i + 1);
    }
    /* `keys new` (a CURVE key pair) and `keys reload` (the coordinator's allow-list) verbs. */
    if (strcmp(argv[i], "keys") == 0 && i + 1 < argc && strcmp(argv[i + 1], "new") == 0) {
        o.verb = "keys new";
        return cmd_keys_new(&o, argc - i - 1, argv + i + 1);
    }
    if (strcmp(argv[i], "keys") == 0 && i + 1 < argc && strcmp(argv[i + 1], "reload") == 0) {
        o.verb = "keys reload";
        return cmd_keys_reload(&o, argc - i - 1, argv + i + 1);
    }
    for (size_t v = 0; v < sizeof(s_verbs) / sizeof(s_verbs[0]); v++)
        if (strcmp(argv[i], s_verbs[v].name) == 0) {
            o.verb = s_verbs[v].name;
            return s_verbs[v].fn(&o, argc - i, argv + i);
        }
    return ctl_usage_error(&o, s_usage, "unknown verb '%s'", argv[i]);
}
