/* main.c: shoal-worker. `train` and `grads` run in this process; the daemon mode serves a
 * coordinator. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas_select.h"
#include "commands.h"
#ifdef SHOAL_GRAD_ATTACK
#include "grad_attack.h"
#include "handover_stall.h"
#endif
#ifdef SHOAL_HAVE_NCCL
#include "comm_nccl.h"
#endif
#ifdef SHOAL_HAVE_CUDA
#include "gpu_module.h"
#endif
#include "numparse.h"
#include "shoal_version.h"

int commands_parse_count(const char *arg)
{
    int v;
    return numparse_int(arg, 1, 1 << 30, &v) == SHOAL_OK ? v : -1;
}

volatile sig_atomic_t commands_stop;

static void s_on_stop_signal(int sig)
{
    (void)sig;
    commands_stop = 1;
}

void commands_trap_stop(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: shoal-worker train RUN.yaml [options]     train in this process\n"
               "       shoal-worker grads --model DIR ...         gradients of one batch\n"
               "       shoal-worker --coordinator ENDPOINT ...    run as a worker daemon\n"
               "       shoal-worker relay --listen EP ...         a host relay to the coordinator\n"
               "       shoal-worker --version\n"
               "run a subcommand with --help for its options\n");
}

int main(int argc, char **argv)
{
    /* before anything else: this may re-execute the process with other BLAS kernels */
    blas_select_at_start(argv);
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
#ifdef SHOAL_GRAD_ATTACK
    if (grad_attack_install_from_env() != 0 || handover_stall_install_from_env() != 0)
        return 2;
#endif
    if (strcmp(argv[1], "train") == 0)
        return cmd_train(argc - 1, argv + 1);
    if (strcmp(argv[1], "grads") == 0)
        return cmd_grads(argc - 1, argv + 1);
    if (strcmp(argv[1], "relay") == 0)
        return cmd_relay(argc - 1, argv + 1);
    if (strcmp(argv[1], "--version") == 0) {
#ifdef SHOAL_HAVE_NCCL
        char libs[96];
        comm_nccl_versions(libs, sizeof libs);
        printf("shoal-worker %s (%s)\n", SHOAL_VERSION, libs);
#else
        printf("shoal-worker %s (CPU only: built without CUDA and NCCL)\n", SHOAL_VERSION);
#endif
        char blas[512];
        blas_select_describe(blas, sizeof blas);
        printf("BLAS %s\n", blas);
#ifdef SHOAL_HAVE_CUDA
        /* the GPU trainer is a module loaded only for --device cuda: say whether it loads */
        const gpu_module_t *gm;
        char path[4200], what[128];
        gpu_module_path(path, sizeof path);
        if (gpu_module_load(&gm) == SHOAL_OK) {
            gm->describe(what, sizeof what);
            printf("GPU module %s (%s)\n", path, what);
        } else
            printf("GPU module: none loads: %s\n", shoal_errmsg());
#endif
        return 0;
    }
    if (strncmp(argv[1], "--", 2) == 0 && strcmp(argv[1], "--help") != 0)
        return cmd_daemon(argc, argv);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        s_usage(stdout);
        return 0;
    }
    fprintf(stderr, "shoal-worker: unknown command '%s'\n", argv[1]);
    s_usage(stderr);
    return 2;
}
