/* err.c: error names and the per-thread detail message. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char s_msg[1024];
static _Thread_local shoal_err_t s_code;

static const char *const s_names[SHOAL_ERR__COUNT] = {
    [SHOAL_OK] = "ok",
    [SHOAL_ERR_INVALID] = "invalid input",
    [SHOAL_ERR_IO] = "I/O error",
    [SHOAL_ERR_FORMAT] = "malformed data",
    [SHOAL_ERR_NOTFOUND] = "not found",
    [SHOAL_ERR_NOMEM] = "out of memory",
    [SHOAL_ERR_TIMEOUT] = "timed out",
    [SHOAL_ERR_STATE] = "invalid state",
    [SHOAL_ERR_DB] = "database error",
    [SHOAL_ERR_CUDA] = "CUDA error",
    [SHOAL_ERR_ABORTED] = "aborted",
    [SHOAL_ERR_NUMERIC] = "numeric error",
};

const char *shoal_strerror(shoal_err_t err)
{
    if ((unsigned)err >= SHOAL_ERR__COUNT)
        return "unknown error";
    return s_names[err];
}

shoal_err_t shoal_fail(shoal_err_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s_msg, sizeof s_msg, fmt, ap);
    va_end(ap);
    s_code = err;
    return err;
}

shoal_err_t shoal_fail_context(shoal_err_t err, const char *fmt, ...)
{
    char prefix[512], old[sizeof s_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, shoal_errmsg(), sizeof old);
    old[sizeof old - 1] = '\0';
    size_t n = strlen(prefix);
    if (n > sizeof s_msg - 3)
        n = sizeof s_msg - 3;
    memcpy(s_msg, prefix, n);
    memcpy(s_msg + n, ": ", 2);
    size_t room = sizeof s_msg - n - 3;
    size_t m = strnlen(old, room);
    memcpy(s_msg + n + 2, old, m);
    s_msg[n + 2 + m] = '\0';
    s_code = err;
    return err;
}

const char *shoal_errmsg(void)
{
    if (s_msg[0] == '\0')
        return shoal_strerror(s_code);
    return s_msg;
}

void shoal_err_clear(void)
{
    s_msg[0] = '\0';
    s_code = SHOAL_OK;
}
