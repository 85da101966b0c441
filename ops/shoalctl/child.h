/* child.h: child processes of shoalctl (the daemons `shoalctl up` runs): spawned with their
 * output appended to a log file, in their own process group and with SIGTERM as their
 * parent-death signal; reaped without blocking; stopped with signals and deadlines. Which
 * children stop first, and how long each may take, is the caller's policy. */
#ifndef SHOAL_SHOALCTL_CHILD_H
#define SHOAL_SHOALCTL_CHILD_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

typedef struct {
    pid_t pid;  /* > 0 once spawned (a caller may negate it to mark an exit reported) */
    int status; /* waitpid status, valid once exited */
    bool exited;
    char name[32];      /* for messages */
    char log[PATH_MAX]; /* stdout and stderr are appended here */
} child_t;

/* Starts argv[0] (argv NULL-terminated) with stdin from /dev/null and stdout/stderr appended to
 * c->log, in its own process group (Ctrl-C at the terminal reaches only shoalctl, which stops
 * the children in order) and with SIGTERM as its parent-death signal (a killed shoalctl leaves
 * no orphans). An exec failure is written to the log, prefixed by `who`, and the child exits
 * 127. Errors: SHOAL_ERR_IO (log file, fork). */
shoal_err_t child_spawn(child_t *c, char *const argv[], const char *who);

/* Reaps the child if it has exited (never blocks); true when it is gone (or never started). */
bool child_reap(child_t *c);

/* How an exited child ended: "exited with status N", "killed by signal N" or "ended". */
void child_describe_exit(const child_t *c, char *out, size_t cap);

/* Prints the last `lines` lines of the child's log to stderr, to explain a failure. */
void child_print_log_tail(const child_t *c, int lines);

/* Sends `sig` to the child unless it has exited. */
void child_signal(child_t *c, int sig);

/* Reaps kids[0..n) every 20 ms until all are gone (true) or clock_mono_ms() passes until_ms
 * (false). */
bool child_wait_all(child_t *const *kids, int n, int64_t until_ms);

/* SIGKILLs and reaps each child of kids[0..n) still running, saying on stderr, prefixed by
 * `who`, that it did not stop within waited_s seconds. */
void child_kill_rest(child_t *const *kids, int n, const char *who, int waited_s);

#endif
