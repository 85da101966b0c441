/* main.c: shoal-coordinator: parse flags, load the config file, start logging, serve until
 * SIGTERM/SIGINT. Everything else lives in coord.c (tests link it directly). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "control.h"
#include "coord.h"
#include "log.h"
#include "shoal_version.h"

static volatile sig_atomic_t s_stop, s_reload;

static void s_on_signal(int sig)
{
    if (sig == SIGHUP)
        s_reload = 1; /* the allow-list is re-read at the next cron */
    else
        s_stop = 1;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal-coordinator [--state-dir DIR] [--listen ENDPOINT] [--control ENDPOINT]\n"
            "                         [--config FILE] [--log-level L] [--log-format plain|json]\n"
            "                         [--metrics-listen ADDR:PORT] [--insecure] [--version]\n"
            "--insecure (or SHOAL_INSECURE=1 in the environment): plaintext TCP, no CURVE.\n"
            "SIGHUP reloads the allow-list.\n"
            "Flags take precedence over the config file (YAML, keys below).\nkeys:\n");
    config_print_keys(out);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"state-dir", required_argument, NULL, 's'},
        {"listen", required_argument, NULL, 'l'},
        {"control", required_argument, NULL, 'c'},
        {"config", required_argument, NULL, 'f'},
        {"log-level", required_argument, NULL, 'v'},
        {"log-format", required_argument, NULL, 'F'},
        {"metrics-listen", required_argument, NULL, 'M'},
        {"insecure", no_argument, NULL, 'I'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    /* flags are applied after the file so that they win */
    const char *flag_key[16], *flag_val[16], *flag_name[16];
    int n_flags = 0;
    const char *config_path = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *key = NULL, *name = NULL;
        switch (opt) {
        case 's':
            key = "state_dir";
            name = "--state-dir";
            break;
        case 'l':
            key = "listen";
            name = "--listen";
            break;
        case 'c':
            key = "control";
            name = "--control";
            break;
        case 'v':
            key = "log_level";
            name = "--log-level";
            break;
        case 'F':
            key = "log_format";
            name = "--log-format";
            break;
        case 'M':
            key = "metrics_listen";
            name = "--metrics-listen";
            break;
        case 'I':
            key = "insecure";
            name = "--insecure";
            optarg = (char *)"1";
            break;
        case 'f':
            config_path = optarg;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        case 'V':
            printf("shoal-coordinator %s\n", SHOAL_VERSION);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
        if (key && n_flags < 16) {
            flag_key[n_flags] = key;
            flag_val[n_flags] = optarg;
            flag_name[n_flags++] = name;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal-coordinator: unexpected argument '%s'\n", argv[optind]);
        s_usage(stderr);
        return 2;
    }
    log_set_component("coordinator");
    coord_config_t cfg;
    config_defaults(&cfg);
    if (config_path && config_load_file(&cfg, config_path) != SHOAL_OK) {
        fprintf(stderr, "shoal-coordinator: %s\n", shoal_errmsg());
        return 2;
    }
    const char *env_insecure = getenv("SHOAL_INSECURE");
    if (env_insecure && strcmp(env_insecure, "1") == 0)
        cfg.insecure = 1; /* test harnesses set it for every daemon they start */
    for (int i = 0; i < n_flags; i++)
        if (config_set(&cfg, flag_key[i], flag_val[i], flag_name[i]) != SHOAL_OK) {
            fprintf(stderr, "shoal-coordinator: %s\n", shoal_errmsg());
            return 2;
        }
    if (config_finish(&cfg) != SHOAL_OK) {
        fprintf(stderr, "shoal-coordinator: %s\n", shoal_errmsg());
        return 2;
    }
    log_set_level((log_level_t)log_level_parse(cfg.log_level));
    log_set_format((log_format_t)log_format_parse(cfg.log_format));

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    coord_t *c = NULL;
    if (coord_new(&cfg, &c) != SHOAL_OK) {
        log_error("cannot start: %s", shoal_errmsg());
        return 1;
    }
    control_attach(c);
    coord_set_reload_flag(c, &s_reload);
    shoal_err_t rc = coord_run(c, &s_stop);
    if (rc != SHOAL_OK)
        log_error("stopped on error: %s", shoal_errmsg());
    coord_destroy(&c);
    return rc == SHOAL_OK ? 0 : 1;
}
