/* cmd_daemon.c: `shoal-worker --coordinator ENDPOINT ...`: parses the daemon's flags, installs
 * the SIGTERM/SIGINT handler and runs daemon_run() (worker/daemon.h). */
#include "commands.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas_select.h"
#include "daemon.h"
#include "daemon_config.h"
#include "log.h"

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: shoal-worker --coordinator ENDPOINT [options]   run as a worker daemon\n"
            "  --coordinator EP     the coordinator's worker endpoint (tcp://HOST:7400)\n"
            "  --name NAME          unique worker name (default HOSTNAME-PID)\n"
            "  --state-dir DIR      checkpoints and lock (default $STATE_DIRECTORY or\n"
            "                       /var/lib/shoal/worker-NAME)\n"
            "  --data-endpoint EP   data-plane bind endpoint (default tcp://127.0.0.1:0 for a\n"
            "                       local coordinator, else tcp://*:0)\n"
            "  --advertise-host H   host peers dial for a wildcard data endpoint (hostname)\n"
            "  --institution I      institution reported to the coordinator\n"
            "  --device D           cpu, cuda:N or auto (a GPU when present, default auto)\n"
            "  --log-level L        error|warn|info|debug (default info)\n"
            "  --log-format F       plain (journald priority prefixes under systemd) or json\n"
            "  --metrics FILE       append one JSON line per step\n"
            "  --metrics-listen A:P serve Prometheus /metrics on ADDR:PORT\n"
            "  --keys DIR           CURVE keys: DIR/key.secret (0600), key.public and the\n"
            "                       coordinator's coordinator.public (ops/SECURITY.md)\n"
            "  --insecure           plaintext TCP (also SHOAL_INSECURE=1); logs a warning\n");
    daemon_config_print_flags(f);
}

/* "--threads" for the option whose getopt value is `val`. */
static const char *s_flag_name(const struct option *opts, int val)
{
    static char buf[64];
    for (; opts->name; opts++)
        if (opts->val == val) {
            snprintf(buf, sizeof buf, "--%s", opts->name);
            return buf;
        }
    return "";
}

int cmd_daemon(int argc, char **argv)
{
    static const struct option opts[] = {
        {"coordinator", required_argument, 0, 'c'}, {"name", required_argument, 0, 'n'},
        {"state-dir", required_argument, 0, 's'},   {"data-endpoint", required_argument, 0, 'd'},
        {"advertise-host", required_argument, 0, 'a'},
        {"institution", required_argument, 0, 'i'}, {"log-level", required_argument, 0, 'l'},
        {"grace-seconds", required_argument, 0, 'g'},
        {"comm-timeout-ms", required_argument, 0, 't'},
        {"threads", required_argument, 0, 'T'},     {"metrics", required_argument, 0, 'm'},
        {"device", required_argument, 0, 'D'},      {"log-format", required_argument, 0, 'F'},
        {"metrics-listen", required_argument, 0, 'M'},
        {"keys", required_argument, 0, 'K'},        {"insecure", no_argument, 0, 'I'},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
    daemon_config_t cfg = {.stop_flag = &commands_stop};
    daemon_config_defaults(&cfg);
    log_set_format(log_format_auto());
    int c;
    optind = 0; /* argv[0] is the program: reparse from argv[1] */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cfg.coordinator = optarg; break;
        case 'n': cfg.name = optarg; break;
        case 's': cfg.state_dir = optarg; break;
        case 'd': cfg.data_endpoint = optarg; break;
        case 'a': cfg.advertise_host = optarg; break;
        case 'i': cfg.institution = optarg; break;
        case 'm': cfg.metrics_path = optarg; break;
        case 'M': cfg.metrics_listen = optarg; break;
        case 'K': cfg.keys_dir = optarg; break;
        case 'I': cfg.insecure = 1; break;
        case 'D': cfg.device = optarg; break;
        case 'l': {
            int lvl = log_level_parse(optarg);
            if (lvl < 0) {
                fprintf(stderr, "shoal-worker: --log-level '%s': use error, warn, info or "
                        "debug\n", optarg);
                return 2;
            }
            log_set_level((log_level_t)lvl);
            break;
        }
        case 'F': {
            int fmt = log_format_parse(optarg);
            if (fmt < 0) {
                fprintf(stderr, "shoal-worker: --log-format '%s': use plain or json\n", optarg);
                return 2;
            }
            log_set_format((log_format_t)fmt);
            break;
        }
        case 'g':
        case 't':
        case 'T':
            if (daemon_config_set(&cfg, s_flag_name(opts, c), optarg) != SHOAL_OK) {
                fprintf(stderr, "%s\n", shoal_errmsg());
                return 2;
            }
            break;
        case 'h': s_usage(stdout); return 0;
        default: s_usage(stderr); return 2;
        }
    }
    if (optind < argc || !cfg.coordinator) {
        s_usage(stderr);
        return 2;
    }
    const char *env_insecure = getenv("SHOAL_INSECURE");
    if (env_insecure && strcmp(env_insecure, "1") == 0)
        cfg.insecure = 1; /* test harnesses set it for every daemon they start */
    log_set_component("shoal-worker"); /* the daemon switches to the worker name once checked */
    if (cfg.threads > 0)
        blas_select_set_threads(cfg.threads);
    blas_select_log("shoal-worker");
    commands_trap_stop();
    signal(SIGPIPE, SIG_IGN);
    shoal_err_t rc = daemon_run(&cfg);
    if (rc != SHOAL_OK) {
        log_error("%s", shoal_errmsg());
        return 1;
    }
    return 0;
}
