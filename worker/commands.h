/* commands.h: the subcommands of shoal-worker (each returns the process exit code:
 * 0 ok, 1 error, 2 usage). */
#ifndef SHOAL_WORKER_COMMANDS_H
#define SHOAL_WORKER_COMMANDS_H
int cmd_train(int argc, char **argv);
int cmd_grads(int argc, char **argv);
/* The daemon: argv[0] is the program name, flags from argv[1] (`--coordinator ...`). */
int cmd_daemon(int argc, char **argv);
#endif
