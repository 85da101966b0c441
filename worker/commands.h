/* commands.h: the subcommands of shoal-worker (each returns the process exit code:
 * 0 ok, 1 error, 2 usage). */
#ifndef SHOAL_WORKER_COMMANDS_H
#define SHOAL_WORKER_COMMANDS_H
int cmd_train(int argc, char **argv);
int cmd_grads(int argc, char **argv);
#endif
