/* child.c: shoalctl's child processes (child.h): spawn with a log file, reap, stop. */
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "fsutil.h"

shoal_err_t child_spawn(child_t *child, char *const argv[], const char *who)
{
    int fd = open(child->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return shoal_fail(SHOAL_ERR_IO, "%s: %s", child->log, strerror(errno));
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return shoal_fail(SHOAL_ERR_IO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execv(argv[0], argv);
        dprintf(STDERR_FILENO, "%s: exec %s: %s\n", who, argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    child->pid = pid;
    child->exited = false;
    return SHOAL_OK;
}

bool child_reap(child_t *child)
{
    if (child->pid <= 0 || child->exited)
        return true;
    int st;
    pid_t r = waitpid(child->pid, &st, WNOHANG);
    if (r == child->pid || (r < 0 && errno == ECHILD)) {
        child->exited = true;
        child->status = r == child->pid ? st : 0;
        return true;
    }
    return false;
}

void child_describe_exit(const child_t *child, char *out, size_t cap)
{
    if (WIFEXITED(child->status))
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(child->status));
    else if (WIFSIGNALED(child->status))
        snprintf(out, cap, "killed by signal %d", WTERMSIG(child->status));
    else
        snprintf(out, cap, "ended");
}

void child_print_log_tail(const child_t *child, int lines)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (fsutil_read_file(child->log, &data, &len) != SHOAL_OK || len == 0) {
        free(data);
        return;
    }
    size_t start = len;
    int seen = 0;
    while (start > 0) {
        if (data[start - 1] == '\n' && start != len && ++seen >= lines)
            break;
        start--;
    }
    fprintf(stderr, "---- last lines of %s ----\n%s%s", child->log, (const char *)data + start,
            data[len - 1] == '\n' ? "" : "\n");
    free(data);
}

void child_signal(child_t *c, int sig)
{
    if (!child_reap(c))
        kill(c->pid, sig);
}

bool child_wait_all(child_t *const *kids, int n, int64_t until_ms)
{
    for (;;) {
        bool all = true;
        for (int i = 0; i < n; i++)
            all = child_reap(kids[i]) && all;
        if (all)
            return true;
        if (clock_mono_ms() > until_ms)
            return false;
        clock_sleep_ms(20);
    }
}

void child_kill_rest(child_t *const *kids, int n, const char *who, int waited_s)
{
    for (int i = 0; i < n; i++) {
        child_t *ch = kids[i];
        if (!child_reap(ch)) {
            fprintf(stderr, "%s: %s (pid %d) did not stop within %d s: SIGKILL\n", who, ch->name,
                    (int)ch->pid, waited_s);
            kill(ch->pid, SIGKILL);
            waitpid(ch->pid, &ch->status, 0);
            ch->exited = true;
        }
    }
}
