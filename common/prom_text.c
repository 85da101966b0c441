/* prom_text.c: Prometheus text exposition builder (prom_text.h). */
#include "prom_text.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void prom_text_init(prom_text_t *t)
{
    memset(t, 0, sizeof *t);
}

void prom_text_fini(prom_text_t *t)
{
    free(t->buf);
    memset(t, 0, sizeof *t);
}

void prom_text_reset(prom_text_t *t)
{
    t->len = 0;
    t->oom = 0;
    if (t->buf)
        t->buf[0] = 0;
}

static int s_reserve(prom_text_t *t, size_t more)
{
    if (t->oom)
        return 0;
    if (t->len + more + 1 <= t->cap)
        return 1;
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + more + 1)
        cap *= 2;
    char *b = realloc(t->buf, cap);
    if (!b) {
        t->oom = 1;
        return 0;
    }
    t->buf = b;
    t->cap = cap;
    return 1;
}

static void s_put(prom_text_t *t, const char *s, size_t n)
{
    if (!s_reserve(t, n))
        return;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
}

static void s_puts(prom_text_t *t, const char *s)
{
    s_put(t, s, strlen(s));
}

/* s with \ and newline escaped, and " too when quoted (label values; HELP text keeps quotes) */
static void s_put_escaped(prom_text_t *t, const char *s, int quoted)
{
    for (; *s; s++) {
        if (*s == '\\')
            s_puts(t, "\\\\");
        else if (*s == '\n')
            s_puts(t, "\\n");
        else if (*s == '"' && quoted)
            s_puts(t, "\\\"");
        else
            s_put(t, s, 1);
    }
}

void prom_family(prom_text_t *t, const char *name, const char *type, const char *help)
{
    s_puts(t, "# HELP ");
    s_puts(t, name);
    s_puts(t, " ");
    s_put_escaped(t, help, 0);
    s_puts(t, "\n# TYPE ");
    s_puts(t, name);
    s_puts(t, " ");
    s_puts(t, type);
    s_puts(t, "\n");
}

void prom_sample(prom_text_t *t, const char *name, double value, ...)
{
    s_puts(t, name);
    va_list ap;
    va_start(ap, value);
    int n_labels = 0;
    for (const char *key = va_arg(ap, const char *); key; key = va_arg(ap, const char *)) {
        const char *val = va_arg(ap, const char *);
        s_puts(t, n_labels++ ? "," : "{");
        s_puts(t, key);
        s_puts(t, "=\"");
        s_put_escaped(t, val ? val : "", 1);
        s_puts(t, "\"");
    }
    va_end(ap);
    if (n_labels)
        s_puts(t, "}");
    char num[40];
    if (isnan(value))
        snprintf(num, sizeof num, "NaN");
    else if (isinf(value))
        snprintf(num, sizeof num, value > 0 ? "+Inf" : "-Inf");
    else if (value == floor(value) && fabs(value) <= 9007199254740992.0)
        snprintf(num, sizeof num, "%.0f", value);
    else
        snprintf(num, sizeof num, "%.9g", value);
    s_puts(t, " ");
    s_puts(t, num);
    s_puts(t, "\n");
}
