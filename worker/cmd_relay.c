/* cmd_relay.c: `shoal-worker relay`: the host relay (relay.h) in the foreground. */
#include "commands.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "numparse.h"
#include "relay.h"

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: shoal-worker relay --coordinator EP --listen EP --insecure [options]\n"
            "  carries this host's workers to the coordinator over one connection (start the\n"
            "  workers with --coordinator set to the relay's --listen endpoint)\n"
            "  --coordinator EP   the coordinator's worker endpoint (tcp://HOST:7400)\n"
            "  --listen EP        where this host's workers connect (ipc:///run/shoal/relay.sock)\n"
            "  --hold-ms N        longest a heartbeat waits to share a write (default %d, 0-1000)\n"
            "  --name NAME        names the relay in the coordinator's log (default\n"
            "                     relay@HOSTNAME)\n"
            "  --insecure         required: relays are plaintext (also SHOAL_INSECURE=1)\n"
            "  --log-level L      error|warn|info|debug (default info)\n",
            RELAY_DEFAULT_HOLD_MS);
}

static int s_endpoint(const char *flag, const char *v, char *out, size_t cap)
{
    if (strlen(v) >= cap || strstr(v, "://") == NULL) {
        fprintf(stderr, "shoal-worker relay: %s '%s': an endpoint such as tcp://HOST:PORT or "
                        "ipc://PATH (under %zu bytes)\n", flag, v, cap);
        return -1;
    }
    snprintf(out, cap, "%s", v);
    return 0;
}

int cmd_relay(int argc, char **argv)
{
    relay_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.hold_ms = RELAY_DEFAULT_HOLD_MS;
    char host[64] = "localhost";
    (void)gethostname(host, sizeof host - 1);
    snprintf(cfg.name, sizeof cfg.name, "relay@%.100s", host);
    int insecure = 0;
    static const struct option opts[] = {{"coordinator", required_argument, 0, 'c'},
                                         {"listen", required_argument, 0, 'l'},
                                         {"hold-ms", required_argument, 0, 'H'},
                                         {"name", required_argument, 0, 'n'},
                                         {"insecure", no_argument, 0, 'i'},
                                         {"log-level", required_argument, 0, 'L'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int o, level;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            if (s_endpoint("--coordinator", optarg, cfg.coordinator, sizeof cfg.coordinator))
                return 2;
            break;
        case 'l':
            if (s_endpoint("--listen", optarg, cfg.listen, sizeof cfg.listen))
                return 2;
            break;
        case 'H':
            if (numparse_int(optarg, 0, 1000, &cfg.hold_ms) != SHOAL_OK) {
                fprintf(stderr, "shoal-worker relay: --hold-ms '%s': milliseconds, 0-1000\n",
                        optarg);
                return 2;
            }
            break;
        case 'n':
            if (!optarg[0] || strlen(optarg) >= 64) {
                fprintf(stderr, "shoal-worker relay: --name: 1-63 bytes\n");
                return 2;
            }
            snprintf(cfg.name, sizeof cfg.name, "%s", optarg);
            break;
        case 'i':
            insecure = 1;
            break;
        case 'L':
            if ((level = log_level_parse(optarg)) < 0) {
                fprintf(stderr, "shoal-worker relay: --log-level '%s': error|warn|info|debug\n",
                        optarg);
                return 2;
            }
            log_set_level((log_level_t)level);
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !cfg.coordinator[0] || !cfg.listen[0]) {
        s_usage(stderr);
        return 2;
    }
    const char *env_insecure = getenv("SHOAL_INSECURE");
    if (env_insecure && strcmp(env_insecure, "1") == 0)
        insecure = 1;
    if (!insecure) {
        fprintf(stderr, "shoal-worker relay: a relay carries its workers in plaintext (with CURVE "
                        "each worker's key is its own connection's): pass --insecure, and run "
                        "the coordinator with --insecure\n");
        return 2;
    }
    log_set_component("shoal-relay");
    commands_trap_stop();
    relay_t *r = NULL;
    shoal_err_t rc = relay_open(&cfg, &r);
    if (rc != SHOAL_OK) {
        log_error("%s", shoal_errmsg());
        return 1;
    }
    log_warn("relaying %s -> %s in plaintext (heartbeats held up to %d ms)", cfg.listen,
             cfg.coordinator, cfg.hold_ms);
    rc = relay_run(r, &commands_stop);
    relay_stats_t st;
    relay_stats(r, &st);
    log_info("stopping: %llu messages up, %llu down, %llu worker connections closed, dropped "
             "%llu up and %llu down", st.up, st.down, st.closed, st.dropped_up, st.dropped_down);
    relay_close(r);
    if (rc != SHOAL_OK) {
        log_error("%s", shoal_errmsg());
        return 1;
    }
    return 0;
}
