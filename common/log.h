/* log.h: the logging module. Levels are checked before the arguments are evaluated; lines go
 * to stderr (journald captures it) as "<time> <LEVEL> <component>: message". */
#ifndef SHOAL_LOG_H
#define SHOAL_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG } log_level_t;

extern log_level_t log_threshold;

/* Name shown in every line ("coordinator", "worker w3"); copied. */
void log_set_component(const char *name);
void log_set_level(log_level_t level);
/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int log_level_parse(const char *name);
void log_emit(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_AT(lvl, ...)                                                                      \
    do {                                                                                      \
        if ((lvl) <= log_threshold)                                                           \
            log_emit((lvl), __VA_ARGS__);                                                     \
    } while (0)
#define log_error(...) LOG_AT(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_LVL_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
