/* stop_at_rename.c: an LD_PRELOAD shim for resume_bitexact.sh. The process stops itself
 * (SIGSTOP, which stops every thread) at the rename() whose target ends in
 * $SHOAL_TEST_STOP_AT_RENAME, before renaming: the test then SIGKILLs it at a known point (a
 * checkpoint written but not committed) instead of racing a trainer that may finish first. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

int rename(const char *from, const char *to)
{
    static int (*real_rename)(const char *, const char *);
    if (!real_rename)
        real_rename = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    const char *suffix = getenv("SHOAL_TEST_STOP_AT_RENAME");
    const size_t n = suffix ? strlen(suffix) : 0, m = to ? strlen(to) : 0;
    if (n > 0 && m >= n && strcmp(to + m - n, suffix) == 0)
        raise(SIGSTOP);
    return real_rename(from, to);
}
