/* log.h: the logging module. Levels are checked before the arguments are evaluated; one write per
 * line to stderr, in one of three forms:
 *   plain    "<time> <LEVEL> <component>: message"
 *   journal  "<N><component>: message" (N the syslog priority: journald stores it as the entry's
 *            PRIORITY and adds its own timestamp); chosen by log_format_auto() when stderr is the
 *            stream systemd names in $JOURNAL_STREAM
 *   json     {"ts":"2026-12-01T13:10:30.123Z","level":"info","component":"coordinator",
 *            "msg":"..."} (--log-format json), for log shippers. */
#ifndef SHOAL_LOG_H
#define SHOAL_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG } log_level_t;
typedef enum { LOG_FORMAT_PLAIN = 0, LOG_FORMAT_JOURNAL, LOG_FORMAT_JSON } log_format_t;

extern log_level_t log_threshold;

/* Name shown in every line ("coordinator", "worker w3"); copied. */
void log_set_component(const char *name);
void log_set_level(log_level_t level);
/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int log_level_parse(const char *name);
/* Parses "plain", "json" (the --log-format values); returns -1 when unknown. "plain" means
 * log_format_auto(): journal prefixes when stderr goes to the journal. */
int log_format_parse(const char *name);
void log_set_format(log_format_t format);
/* LOG_FORMAT_JOURNAL when $JOURNAL_STREAM ("DEV:INODE") names the file stderr is (systemd sets it
 * for units whose stderr is the journal; a child whose stderr was redirected does not match),
 * else LOG_FORMAT_PLAIN. */
log_format_t log_format_auto(void);
void log_emit(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_AT(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) <= log_threshold)                                                                \
            log_emit((lvl), __VA_ARGS__);                                                          \
    } while (0)
#define log_error(...) LOG_AT(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_LVL_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
