/* commands.h: the subcommands of shoal-worker (each returns the process exit code:
 * 0 ok, 1 error, 2 usage). */
#ifndef SHOAL_WORKER_COMMANDS_H
#define SHOAL_WORKER_COMMANDS_H
#include <signal.h>
int cmd_train(int argc, char **argv);

/* A positive decimal count from a command-line argument (1 .. 2^30); -1 for anything else, which
 * the subcommands report as a usage error. */
int commands_parse_count(const char *arg);

/* Set by SIGTERM or SIGINT once commands_trap_stop() ran: the daemons' stop flag. */
extern volatile sig_atomic_t commands_stop;
void commands_trap_stop(void);
int cmd_grads(int argc, char **argv);
/* The host relay (relay.h): argv[0] is "relay". */
int cmd_relay(int argc, char **argv);
/* The daemon: argv[0] is the program name, flags from argv[1] (`--coordinator ...`). */
int cmd_daemon(int argc, char **argv);
#endif
