/* log.c: leveled logging to stderr, one write per line so concurrent processes do not interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

log_level_t log_threshold = LOG_LVL_INFO;
static char s_component[64] = "shoal";

void log_set_component(const char *name)
{
    snprintf(s_component, sizeof s_component, "%s", name);
}

void log_set_level(log_level_t level)
{
    log_threshold = level;
}

int log_level_parse(const char *name)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, names[i]) == 0)
            return i;
    return -1;
}

void log_emit(log_level_t level, const char *fmt, ...)
{
    static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[2048];
    int64_t now_ms = clock_wall_ms();
    time_t secs = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03d %-5s %s: ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(now_ms % 1000), tags[level], s_component);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
