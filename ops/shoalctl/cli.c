/* cli.c: shoalctl's shared mechanics: option parsing, error reporting with exit codes, JSON
 * field access and output, aligned tables. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsutil.h"
#include "numparse.h"
#include "shoalctl.h"

int ctl_usage_error(const ctl_opts_t *o, const char *usage, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "shoalctl%s%s: ", o->verb ? " " : "", o->verb ? o->verb : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage ? usage : "");
    return CTL_EXIT_USAGE;
}

int ctl_error(const ctl_opts_t *o, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "shoalctl%s%s: ", o->verb ? " " : "", o->verb ? o->verb : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CTL_EXIT_ERROR;
}

static bool s_parse_timeout(const char *s, int *ms)
{
    double v;
    if (numparse_double(s, &v) != SHOAL_OK || !(v > 0) || v > 86400)
        return false;
    *ms = (int)ceil(v * 1000.0);
    return true;
}

/* Matches "--name" or "--name=value"; *inline_val is set for the second form. */
static bool s_match(const char *arg, const char *name, const char **inline_val)
{
    size_t n = strlen(name);
    if (strncmp(arg, "--", 2) != 0 || strncmp(arg + 2, name, n) != 0)
        return false;
    if (arg[2 + n] == '\0') {
        *inline_val = NULL;
        return true;
    }
    if (arg[2 + n] == '=') {
        *inline_val = arg + 3 + n;
        return true;
    }
    return false;
}

int ctl_parse_args(ctl_opts_t *o, int argc, char **argv, const ctl_optdef_t *defs,
                   const char *usage, const char **pos, int max_pos, int *n_pos)
{
    *n_pos = 0;
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (*n_pos >= max_pos)
                return ctl_usage_error(o, usage, "unexpected argument '%s'", a);
            pos[(*n_pos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return -1;
        }
        if (s_match(a, "json", &val) && !val) {
            o->json = true;
            continue;
        }
        if (s_match(a, "insecure", &val) && !val) {
            o->insecure = true;
            continue;
        }
        /* Options with a value: the value is inline (--x=v) or the next argument. */
        const ctl_optdef_t *d = NULL;
        bool global_control = s_match(a, "control", &val);
        bool global_timeout = !global_control && s_match(a, "timeout", &val);
        bool global_keys = !global_control && !global_timeout && s_match(a, "keys", &val);
        if (!global_control && !global_timeout && !global_keys) {
            for (const ctl_optdef_t *p = defs; p && p->name; p++)
                if (s_match(a, p->name, &val)) {
                    d = p;
                    break;
                }
            if (!d)
                return ctl_usage_error(o, usage, "unknown option '%s'", a);
            if (!d->has_arg) {
                if (val)
                    return ctl_usage_error(o, usage, "option --%s takes no value", d->name);
                *d->flag = true;
                continue;
            }
        }
        if (!val) {
            if (i + 1 >= argc)
                return ctl_usage_error(o, usage, "option '%s' needs a value", a);
            val = argv[++i];
        }
        if (global_control) {
            if (!*val)
                return ctl_usage_error(o, usage, "--control: empty endpoint");
            o->endpoint = val;
        } else if (global_keys) {
            o->keys_dir = val;
        } else if (global_timeout) {
            if (!s_parse_timeout(val, &o->timeout_ms))
                return ctl_usage_error(
                    o, usage, "--timeout: expected seconds > 0 (e.g. 5 or 0.5), got '%s'", val);
        } else {
            *d->value = val;
        }
    }
    return CTL_EXIT_OK;
}

shoal_err_t ctl_client_for(const ctl_opts_t *o, ctl_client_t **out)
{
    ctl_client_t *c = ctl_client_new(o->endpoint, o->timeout_ms);
    *out = NULL;
    if (!c)
        return shoal_fail(SHOAL_ERR_NOMEM, "cannot create a client for %s (out of memory)",
                          o->endpoint);
    const char *env = getenv("SHOAL_KEYS");
    const char *dir = o->keys_dir ? o->keys_dir : env && *env ? env : NULL;
    if (dir && strncmp(o->endpoint, "tcp://", 6) == 0) {
        zsec_keys_t keys;
        char path[4096], server[ZSEC_KEY_LEN + 1];
        shoal_err_t rc = zsec_keys_load(dir, &keys);
        if (rc == SHOAL_OK)
            rc = fsutil_path(path, sizeof path, "%s/coordinator.public", dir);
        if (rc == SHOAL_OK)
            rc = zsec_public_load(path, server);
        if (rc == SHOAL_OK)
            rc = ctl_client_set_curve(c, &keys, server);
        memset(&keys, 0, sizeof keys);
        if (rc != SHOAL_OK) {
            ctl_client_destroy(&c);
            return shoal_fail_context(rc, "operator key %s", dir);
        }
    } else if (o->insecure) {
        ctl_client_set_insecure(c);
        if (strncmp(o->endpoint, "tcp://", 6) == 0)
            fprintf(stderr, "shoalctl: --insecure: plaintext TCP to %s\n", o->endpoint);
    }
    *out = c;
    return SHOAL_OK;
}

ctl_client_t *ctl_connect(const ctl_opts_t *o)
{
    ctl_client_t *c = NULL;
    if (ctl_client_for(o, &c) != SHOAL_OK)
        ctl_error(o, "%s", shoal_errmsg());
    return c;
}

int ctl_check_reply(const ctl_opts_t *o, shoal_err_t rc, const ctl_reply_t *reply)
{
    if (rc != SHOAL_OK)
        return ctl_error(o, "%s", shoal_errmsg());
    if (!reply->ok) {
        if (reply->message[0])
            return ctl_error(o, "refused by the coordinator: %s (%s)", reply->message,
                             ctl_code_name(reply->code));
        return ctl_error(o, "refused by the coordinator (%s)", ctl_code_name(reply->code));
    }
    return CTL_EXIT_OK;
}

json_t *ctl_reply_doc(const ctl_opts_t *o, const ctl_reply_t *reply)
{
    if (!reply->json || !reply->json[0])
        return json_object();
    json_error_t jerr;
    json_t *doc = json_loads(reply->json, 0, &jerr);
    if (!doc)
        ctl_error(o, "the coordinator's answer is not JSON (line %d, column %d: %s)", jerr.line,
                  jerr.column, jerr.text);
    return doc;
}

void ctl_print_json(const json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
    fflush(stdout);
}

long long ctl_json_int(const json_t *obj, const char *key, long long def)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    return def;
}

double ctl_json_real(const json_t *obj, const char *key, double def)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_number(v) ? json_number_value(v) : def;
}

const char *ctl_json_str(const json_t *obj, const char *key, const char *def)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : def;
}

json_t *ctl_json_number_or_null(const json_t *obj, const char *key)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (json_is_integer(v))
        return json_integer(json_integer_value(v));
    if (json_is_real(v) && isfinite(json_real_value(v)))
        return json_real(json_real_value(v));
    return json_null();
}

struct ctl_table {
    int n_cols;
    int n_rows; /* header included */
    int cap;
    char **cells; /* n_rows * n_cols */
};

ctl_table_t *ctl_table_new(int n_cols, const char *const *header)
{
    ctl_table_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->n_cols = n_cols;
    if (!ctl_table_add(t, header))
        ctl_table_destroy(&t);
    return t;
}

bool ctl_table_add(ctl_table_t *t, const char *const *cells)
{
    if (t->n_rows == t->cap) {
        int cap = t->cap ? t->cap * 2 : 16;
        char **p = realloc(t->cells, (size_t)cap * (size_t)t->n_cols * sizeof(*p));
        if (!p)
            return false;
        t->cells = p;
        t->cap = cap;
    }
    char **row = t->cells + (size_t)t->n_rows * (size_t)t->n_cols;
    for (int j = 0; j < t->n_cols; j++) {
        row[j] = strdup(cells[j] ? cells[j] : "-");
        if (!row[j]) {
            for (int k = 0; k < j; k++)
                free(row[k]);
            return false;
        }
    }
    t->n_rows++;
    return true;
}

void ctl_table_print(const ctl_table_t *t, FILE *out)
{
    int width[64] = {0};
    int n = t->n_cols < 64 ? t->n_cols : 64;
    for (int i = 0; i < t->n_rows; i++)
        for (int j = 0; j < n; j++) {
            int w = (int)strlen(t->cells[(size_t)i * (size_t)t->n_cols + (size_t)j]);
            if (w > width[j])
                width[j] = w;
        }
    for (int i = 0; i < t->n_rows; i++) {
        for (int j = 0; j < n; j++) {
            const char *cell = t->cells[(size_t)i * (size_t)t->n_cols + (size_t)j];
            if (j == n - 1)
                fprintf(out, "%s\n", cell); /* no trailing blanks */
            else
                fprintf(out, "%-*s  ", width[j], cell);
        }
    }
    fflush(out);
}

void ctl_table_destroy(ctl_table_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ctl_table_t *t = *self_p;
    for (size_t i = 0; i < (size_t)t->n_rows * (size_t)t->n_cols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
    *self_p = NULL;
}

void ctl_format_time_ms(long long ms, char *out, size_t cap)
{
    if (ms <= 0) {
        snprintf(out, cap, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, cap, "%04d-%02d-%02d %02d:%02d:%02d.%03lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

void ctl_format_duration(double s, char *out, size_t cap)
{
    if (!(s >= 0) || !isfinite(s))
        snprintf(out, cap, "?");
    else if (s < 60)
        snprintf(out, cap, "%.1f s", s);
    else if (s < 3600)
        snprintf(out, cap, "%d min %02d s", (int)(s / 60), (int)fmod(s, 60));
    else
        snprintf(out, cap, "%d h %02d min", (int)(s / 3600), (int)fmod(s / 60, 60));
}

int ctl_parse_target(ctl_opts_t *o, int argc, char **argv, const ctl_optdef_t *defs,
                     const char *usage, const char *what, const char **target)
{
    const char *pos[1];
    int n_pos;
    *target = NULL; /* set on every path: gcc -O3 cannot see through ctl_parse_args */
    int ex = ctl_parse_args(o, argc, argv, defs, usage, pos, 1, &n_pos);
    if (ex != CTL_EXIT_OK)
        return ex;
    if (what && n_pos != 1)
        return ctl_usage_error(o, usage, "expected one %s", what);
    *target = n_pos ? pos[0] : NULL;
    return CTL_EXIT_OK;
}

shoal_err_t ctl_call(const ctl_opts_t *o, ctl_target_fn fn, const char *target, ctl_reply_t *reply)
{
    ctl_client_t *c = NULL;
    shoal_err_t rc = ctl_client_for(o, &c);
    if (rc != SHOAL_OK)
        return rc;
    rc = fn(c, target, reply);
    ctl_client_destroy(&c);
    return rc;
}

int ctl_request(const ctl_opts_t *o, ctl_target_fn fn, const char *target, ctl_reply_t *reply,
                json_t **doc)
{
    int ex = ctl_check_reply(o, ctl_call(o, fn, target, reply), reply);
    if (ex == CTL_EXIT_OK && doc && !(*doc = ctl_reply_doc(o, reply)))
        ex = CTL_EXIT_ERROR;
    return ex;
}

int ctl_show(const ctl_opts_t *o, ctl_target_fn fn, const char *target,
             void (*print)(const json_t *doc))
{
    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    int ex = ctl_request(o, fn, target, &reply, &doc);
    if (ex == CTL_EXIT_OK) {
        if (o->json)
            ctl_print_json(doc);
        else
            print(doc);
    }
    json_decref(doc);
    ctl_reply_fini(&reply);
    return ex;
}

int ctl_target_verb(ctl_opts_t *o, int argc, char **argv, const char *usage, ctl_target_fn fn,
                    const char *noun, const char *done)
{
    const char *target = NULL;
    int ex = ctl_parse_target(o, argc, argv, NULL, usage,
                              strcmp(noun, "run") == 0 ? "RUN" : "WORKER", &target);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    ex = ctl_request(o, fn, target, &reply, o->json ? &doc : NULL);
    if (ex == CTL_EXIT_OK && o->json)
        ctl_print_json(doc);
    else if (ex == CTL_EXIT_OK)
        printf("%s %s %s%s%s\n", noun, target, done, reply.message[0] ? ": " : "", reply.message);
    json_decref(doc);
    ctl_reply_fini(&reply);
    return ex;
}
