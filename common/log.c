/* log.c: leveled logging to stderr, one write per line so that concurrent processes do not
 * interleave. */
#include "log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

log_level_t log_threshold = LOG_LVL_INFO;
static char s_component[64] = "shoal";
/* set once at start-up, before threads log (main.c), so read without a lock */
static log_format_t s_format = LOG_FORMAT_PLAIN;

static const char *const s_level_names[] = {"error", "warn", "info", "debug"};

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
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, s_level_names[i]) == 0)
            return i;
    return -1;
}

int log_format_parse(const char *name)
{
    if (strcasecmp(name, "plain") == 0)
        return (int)log_format_auto();
    if (strcasecmp(name, "json") == 0)
        return LOG_FORMAT_JSON;
    return -1;
}

void log_set_format(log_format_t format)
{
    s_format = format;
}

log_format_t log_format_auto(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0)
        return LOG_FORMAT_PLAIN;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino
               ? LOG_FORMAT_JOURNAL
               : LOG_FORMAT_PLAIN;
}

/* The message with its arguments, cut at cap - 1 bytes; returns its length. */
static size_t s_format_msg(char *buf, size_t cap, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, cap, fmt, ap);
    if (n < 0) {
        buf[0] = 0;
        return 0;
    }
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

static void s_write_line(char *line, size_t n, size_t cap)
{
    if (n > cap - 2)
        n = cap - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

/* Replaces every byte that is not part of a valid UTF-8 sequence with '?' (JSON needs UTF-8;
 * a worker name or a cut message may not be). */
static void s_utf8_sanitize(char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = (unsigned char)s[i];
        size_t len = b < 0x80           ? 1
                     : (b >> 5) == 0x6  ? 2
                     : (b >> 4) == 0xe  ? 3
                     : (b >> 3) == 0x1e ? 4
                                        : 0;
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] >> 6) == 0x2;
        if (!ok) {
            s[i++] = '?';
            continue;
        }
        i += len;
    }
}

/* One JSON object into line (NUL-terminated); a message too long once escaped is cut to a
 * quarter until it fits. Returns 0, or -1 when no line could be made. */
static int s_json_line(char *line, size_t cap, const struct tm *tm, int millis, log_level_t level,
                       char *msg, size_t mlen)
{
    char ts[48];
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm->tm_year + 1900,
             tm->tm_mon + 1, tm->tm_mday, tm->tm_hour, tm->tm_min, tm->tm_sec, millis);
    char component[sizeof s_component];
    snprintf(component, sizeof component, "%s", s_component);
    s_utf8_sanitize(component, strlen(component));
    s_utf8_sanitize(msg, mlen);
    for (;;) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s%}", "ts", ts, "level", s_level_names[level],
                              "component", component, "msg", msg, mlen);
        size_t n = j ? json_dumpb(j, line, cap - 2, JSON_COMPACT) : 0;
        json_decref(j);
        if (n > 0 && n <= cap - 2) {
            line[n] = 0;
            return 0;
        }
        if (!j || mlen == 0)
            return -1;
        mlen /= 4;
        while (mlen > 0 && ((unsigned char)msg[mlen] >> 6) == 0x2)
            mlen--; /* do not cut inside a character */
    }
}

void log_emit(log_level_t level, const char *fmt, ...)
{
    static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    /* syslog priorities: err, warning, info, debug */
    static const int priorities[] = {3, 4, 6, 7};
    char msg[2048], line[4096];
    va_list ap;
    va_start(ap, fmt);
    size_t mlen = s_format_msg(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int64_t now_ms = clock_wall_ms();
    time_t secs = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n;
    if (s_format == LOG_FORMAT_JSON) {
        if (s_json_line(line, sizeof line, &tm, (int)(now_ms % 1000), level, msg, mlen) != 0)
            return;
        n = (int)strlen(line);
    } else if (s_format == LOG_FORMAT_JOURNAL) {
        /* one entry per line: embedded newlines would start entries without a priority */
        for (size_t i = 0; i < mlen; i++)
            if (msg[i] == '\n')
                msg[i] = ' ';
        n = snprintf(line, sizeof line, "<%d>%s: %s", priorities[level], s_component, msg);
    } else {
        n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03d %-5s %s: %s", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(now_ms % 1000), tags[level], s_component, msg);
    }
    if (n < 0)
        return;
    s_write_line(line, (size_t)n, sizeof line);
}
