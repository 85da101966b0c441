/* cfgtable.c: the descriptor-table settings layer (cfgtable.h): defaults, text setters, one
 * libyaml event loop with positions in every error, validation and the docs' range words. */
#include "cfgtable.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "name.h"
#include "numparse.h"

/* ---- fields and words ------------------------------------------------------------------- */

static void *s_field(void *obj, const cfg_desc_t *d)
{
    return (char *)obj + d->offset;
}

static const void *s_cfield(const void *obj, const cfg_desc_t *d)
{
    return (const char *)obj + d->offset;
}

int cfgtable_find(const cfgtable_t *t, const char *key)
{
    for (int i = 0; i < t->n_desc; i++)
        if (strcmp(t->desc[i].key, key) == 0)
            return i;
    return -1;
}

int cfgtable_section_of(const cfgtable_t *t, const char *key)
{
    const char *dot = strchr(key, '.');
    if (!dot || t->n_sections < 2)
        return 0;
    for (int k = 1; k < t->n_sections; k++)
        if (strlen(t->sections[k]) == (size_t)(dot - key) &&
            strncmp(t->sections[k], key, (size_t)(dot - key)) == 0)
            return k;
    return -1; /* not reached: every table key names a known section */
}

const char *cfgtable_leaf(const char *key)
{
    const char *dot = strchr(key, '.');
    return dot ? dot + 1 : key;
}

void cfgtable_range_text(const cfg_desc_t *d, char *buf, size_t cap)
{
    char lo[32], hi[32];
    snprintf(lo, sizeof lo, "%s %.15g", (d->flags & CFG_MIN_OPEN) ? ">" : ">=", d->min);
    snprintf(hi, sizeof hi, "%s %.15g", (d->flags & CFG_MAX_OPEN) ? "<" : "<=", d->max);
    snprintf(buf, cap, "%s, %s", lo, hi);
}

static int s_in_range(const cfg_desc_t *d, double v)
{
    if (!isfinite(v))
        return 0;
    if ((d->flags & CFG_MIN_OPEN) ? !(v > d->min) : !(v >= d->min))
        return 0;
    if ((d->flags & CFG_MAX_OPEN) ? !(v < d->max) : !(v <= d->max))
        return 0;
    return 1;
}

void cfgtable_format_real(double v, char *buf, size_t cap)
{
    double a = fabs(v);
    if (isfinite(v) && (a == 0 || (a >= 1e-4 && a < 1e15))) {
        for (int dec = 1; dec <= 20; dec++) {
            snprintf(buf, cap, "%.*f", dec, v);
            if (strtod(buf, NULL) == v)
                return;
        }
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (isfinite(v) && !strpbrk(buf, ".eE")) {
        size_t n = strlen(buf);
        if (n + 2 < cap)
            memcpy(buf + n, ".0", 3);
    }
}

/* A string's own constraints. Returns 1 when valid, else 0 with `msg` ("must be ..."). */
static int s_check_string(const cfg_desc_t *d, const char *s, char *msg, size_t cap)
{
    if ((d->flags & CFG_NONEMPTY) && !*s) {
        snprintf(msg, cap, "must not be empty");
        return 0;
    }
    if ((d->flags & CFG_NAME) && !name_ok(s)) {
        snprintf(msg, cap,
                 "must be made of letters, digits, '.', '_' and '-', not starting "
                 "with '.'");
        return 0;
    }
    return d->check ? d->check(s, msg, cap) : 1;
}

/* ---- text values (flags, defaults, text_values tables) ---------------------------------- */

shoal_err_t cfgtable_set(const cfgtable_t *t, void *obj, const char *key, const char *text,
                         const char *where)
{
    int i = cfgtable_find(t, key);
    if (i < 0)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: unknown key '%s'", where, key);
    const cfg_desc_t *d = &t->desc[i];
    void *dst = s_field(obj, d);
    char msg[512];
    shoal_err_t rc = SHOAL_OK;
    switch (d->type) {
    case CFG_STR:
        if (!s_check_string(d, text, msg, sizeof msg))
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s: %s", where, key, msg);
        if (strlen(text) >= d->size)
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s: value longer than %zu bytes", where, key,
                              d->size - 1);
        memcpy(dst, text, strlen(text) + 1);
        return SHOAL_OK;
    case CFG_INT:
        rc = numparse_int(text, (int)d->min, (int)d->max, dst);
        break;
    case CFG_U64:
        rc = numparse_u64(text, UINT64_MAX, dst);
        break;
    case CFG_REAL: {
        double v;
        rc = numparse_double(text, &v);
        if (rc == SHOAL_OK && !s_in_range(d, v))
            rc = shoal_fail(SHOAL_ERR_NUMERIC, "%s is out of range %c%.15g, %.15g%c", text,
                            (d->flags & CFG_MIN_OPEN) ? '(' : '[', d->min, d->max,
                            (d->flags & CFG_MAX_OPEN) ? ')' : ']');
        if (rc == SHOAL_OK)
            *(double *)dst = v;
        break;
    }
    case CFG_STRLIST:
        if (strlen(text) >= d->size)
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s: value longer than %zu bytes", where, key,
                              d->size - 1);
        memcpy(dst, text, strlen(text) + 1);
        *(int *)((char *)obj + d->count_offset) = 1;
        return SHOAL_OK;
    }
    if (rc != SHOAL_OK)
        return shoal_fail_context(SHOAL_ERR_INVALID, "%s: %s", where, key);
    return SHOAL_OK;
}

void cfgtable_defaults(const cfgtable_t *t, void *obj, size_t obj_size)
{
    memset(obj, 0, obj_size);
    for (int i = 0; i < t->n_desc; i++)
        if (t->desc[i].def) {
            shoal_err_t rc = cfgtable_set(t, obj, t->desc[i].key, t->desc[i].def, "default");
            (void)rc; /* a table's defaults are valid by construction (each table's test) */
        }
}

shoal_err_t cfgtable_validate(const cfgtable_t *t, const void *obj)
{
    char msg[512], range[80];
    for (int i = 0; i < t->n_desc; i++) {
        const cfg_desc_t *d = &t->desc[i];
        const void *p = s_cfield(obj, d);
        if (d->flags & CFG_DEFERRED)
            continue;
        switch (d->type) {
        case CFG_INT:
        case CFG_REAL: {
            double v = d->type == CFG_INT ? *(const int *)p : *(const double *)p;
            if (s_in_range(d, v))
                break;
            cfgtable_range_text(d, range, sizeof range);
            return shoal_fail(SHOAL_ERR_INVALID, "%s: must be %s, got %.17g", d->key, range, v);
        }
        case CFG_STR:
            if (strnlen(p, d->size) == d->size)
                return shoal_fail(SHOAL_ERR_INVALID, "%s: is not terminated within %zu bytes",
                                  d->key, d->size);
            if (!s_check_string(d, p, msg, sizeof msg))
                return shoal_fail(SHOAL_ERR_INVALID, "%s: %s", d->key, msg);
            break;
        case CFG_STRLIST: {
            int n = *(const int *)((const char *)obj + d->count_offset);
            if (n < 1 || n > d->list_max)
                return shoal_fail(SHOAL_ERR_INVALID, "%s: needs 1 to %d paths, got %d", d->key,
                                  d->list_max, n);
            for (int k = 0; k < n; k++) {
                size_t len = strnlen((const char *)p + (size_t)k * d->size, d->size);
                if (len == 0 || len == d->size)
                    return shoal_fail(SHOAL_ERR_INVALID, "%s: entry %d is empty or too long",
                                      d->key, k);
            }
            break;
        }
        case CFG_U64:
            break;
        }
    }
    return SHOAL_OK;
}

/* ---- the YAML reader -------------------------------------------------------------------- */

typedef struct {
    int line, col; /* 1-based; line 0 = not seen */
} s_mark_t;

#define S_MAX_DESC 64
#define S_MAX_SECT 8

struct cfg_reader {
    const cfgtable_t *t;
    void *obj;
    yaml_parser_t parser;
    yaml_event_t ev;
    int has_ev;
    const char *origin;
    const unsigned char *text;
    size_t len;
    const char *base_dir;
    s_mark_t key_mark[S_MAX_DESC], val_mark[S_MAX_DESC];
    s_mark_t sec_mark[S_MAX_SECT]; /* where each section's key (root: the mapping) is */
    s_mark_t sec_val[S_MAX_SECT];  /* where each section's mapping starts */
    double deferred[S_MAX_DESC];
};

static s_mark_t s_ev_mark(const yaml_event_t *ev)
{
    return (s_mark_t){(int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1};
}

static shoal_err_t s_vfail_at(const cfg_reader_t *r, s_mark_t m, const char *fmt, va_list ap)
{
    char msg[900];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return shoal_fail(SHOAL_ERR_INVALID, "%s:%d:%d: %s", r->origin, m.line, m.col, msg);
}

static shoal_err_t s_fail_at(const cfg_reader_t *r, s_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static shoal_err_t s_fail_at(const cfg_reader_t *r, s_mark_t m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    shoal_err_t rc = s_vfail_at(r, m, fmt, ap);
    va_end(ap);
    return rc;
}

/* A scalar's text for a message: at most 40 bytes, unprintable bytes as '?'. */
static void s_quote(const char *t, size_t len, char *buf, size_t cap)
{
    size_t n = 0, max = cap > 8 ? cap - 4 : 0;
    if (max > 40)
        max = 40;
    for (size_t i = 0; i < len && n < max; i++)
        buf[n++] = (t[i] >= 0x20 && t[i] < 0x7f) ? t[i] : '?';
    if (len > max && n + 3 < cap) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
}

/* Computes line:column of a byte offset (libyaml gives reader errors only as an offset). */
static s_mark_t s_offset_mark(const cfg_reader_t *r, size_t offset)
{
    s_mark_t m = {1, 1};
    if (offset > r->len)
        offset = r->len;
    for (size_t i = 0; i < offset; i++) {
        if (r->text[i] == '\n') {
            m.line++;
            m.col = 1;
        } else if ((r->text[i] & 0xc0) != 0x80) {
            m.col++; /* count characters, not UTF-8 continuation bytes */
        }
    }
    return m;
}

static shoal_err_t s_syntax_error(cfg_reader_t *r)
{
    yaml_parser_t *p = &r->parser;
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_MEMORY_ERROR)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory parsing YAML", r->origin);
    if (p->error == YAML_READER_ERROR) {
        s_mark_t m = s_offset_mark(r, p->problem_offset);
        if (p->problem_value != -1)
            return s_fail_at(r, m, "YAML syntax error: %s (byte 0x%02x)", problem,
                             (unsigned)p->problem_value & 0xffu);
        return s_fail_at(r, m, "YAML syntax error: %s", problem);
    }
    s_mark_t m = {(int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1};
    if (p->context)
        return s_fail_at(r, m, "YAML syntax error: %s (%s at %d:%d)", problem, p->context,
                         (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    return s_fail_at(r, m, "YAML syntax error: %s", problem);
}

static shoal_err_t s_next(cfg_reader_t *r)
{
    if (r->has_ev) {
        yaml_event_delete(&r->ev);
        r->has_ev = 0;
    }
    if (!yaml_parser_parse(&r->parser, &r->ev))
        return s_syntax_error(r);
    r->has_ev = 1;
    return SHOAL_OK;
}

static const char *s_kind(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    case YAML_SEQUENCE_START_EVENT:
        return "a sequence";
    case YAML_ALIAS_EVENT:
        return "an alias";
    case YAML_SCALAR_EVENT:
        return "a scalar";
    default:
        return "no value";
    }
}

static int s_is_null(const yaml_event_t *ev)
{
    if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *t = (const char *)ev->data.scalar.value;
    return ev->data.scalar.length == 0 || strcmp(t, "~") == 0 || strcmp(t, "null") == 0 ||
           strcmp(t, "Null") == 0 || strcmp(t, "NULL") == 0;
}

static const char *s_expected(const cfg_desc_t *d)
{
    switch (d->type) {
    case CFG_INT:
        return "an integer";
    case CFG_U64:
        return "a non-negative integer";
    case CFG_REAL:
        return "a number";
    case CFG_STRLIST:
        return "a path or a list of paths";
    case CFG_STR:
        return "a string";
    }
    return "a value";
}

/* Describes a value event for "expected X, got Y". */
static void s_got(const yaml_event_t *ev, char *buf, size_t cap)
{
    if (ev->type != YAML_SCALAR_EVENT) {
        snprintf(buf, cap, "%s", s_kind(ev));
        return;
    }
    if (s_is_null(ev)) {
        snprintf(buf, cap, "an empty value");
        return;
    }
    char q[64];
    s_quote((const char *)ev->data.scalar.value, ev->data.scalar.length, q, sizeof q);
    snprintf(buf, cap, "%s'%s'",
             ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? "" : "a quoted string ", q);
}

static shoal_err_t s_alias_error(const cfg_reader_t *r, s_mark_t m, const char *key)
{
    return s_fail_at(r, m, "%s: aliases (*name) are not supported in a %s", key, r->t->what);
}

/* Copies a string scalar into dst[cap], joining it to base_dir when asked and relative. */
static shoal_err_t s_take_string(cfg_reader_t *r, const char *key, char *dst, size_t cap,
                                 const char *base_dir)
{
    const yaml_event_t *ev = &r->ev;
    s_mark_t m = s_ev_mark(ev);
    char got[96];
    if (ev->type != YAML_SCALAR_EVENT || s_is_null(ev)) {
        s_got(ev, got, sizeof got);
        return s_fail_at(r, m, "%s: expected a string, got %s", key, got);
    }
    const char *t = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (memchr(t, '\0', len))
        return s_fail_at(r, m, "%s: contains a NUL character", key);
    int join = base_dir && t[0] != '/';
    size_t need = len + (join ? strlen(base_dir) + 1 : 0);
    if (need >= cap)
        return s_fail_at(r, m, "%s: too long (%zu bytes%s, at most %zu)", key, need,
                         join ? " with the file's directory" : "", cap - 1);
    if (join)
        snprintf(dst, cap, "%s/%s", base_dir, t);
    else
        memcpy(dst, t, len + 1);
    return SHOAL_OK;
}

/* data.files-like: one string or a sequence of strings. */
static shoal_err_t s_parse_list(cfg_reader_t *r, const cfg_desc_t *d)
{
    s_mark_t m = s_ev_mark(&r->ev);
    char *base = s_field(r->obj, d), got[96];
    int *count = (int *)((char *)r->obj + d->count_offset);
    const char *join = (d->flags & CFG_PATH) ? r->base_dir : NULL;
    shoal_err_t rc;
    *count = 0;
    if (r->ev.type == YAML_SCALAR_EVENT && !s_is_null(&r->ev)) {
        rc = s_take_string(r, d->key, base, d->size, join);
        if (rc == SHOAL_OK)
            *count = 1;
        return rc;
    }
    if (r->ev.type != YAML_SEQUENCE_START_EVENT) {
        s_got(&r->ev, got, sizeof got);
        return s_fail_at(r, m, "%s: expected a path or a list of paths, got %s", d->key, got);
    }
    for (;;) {
        if ((rc = s_next(r)) != SHOAL_OK)
            return rc;
        if (r->ev.type == YAML_SEQUENCE_END_EVENT)
            break;
        s_mark_t em = s_ev_mark(&r->ev);
        char ekey[80];
        snprintf(ekey, sizeof ekey, "%s[%d]", d->key, *count);
        if (r->ev.type == YAML_ALIAS_EVENT)
            return s_alias_error(r, em, ekey);
        if (*count == d->list_max)
            return s_fail_at(r, em, "%s: too many paths (at most %d)", d->key, d->list_max);
        rc = s_take_string(r, ekey, base + (size_t)*count * d->size, d->size, join);
        if (rc != SHOAL_OK)
            return rc;
        (*count)++;
    }
    if (*count == 0)
        return s_fail_at(r, m, "%s: the list is empty (give at least one path)", d->key);
    return SHOAL_OK;
}

/* A value of a text_values table: any scalar, applied as cfgtable_set applies a flag. */
static shoal_err_t s_parse_text_value(cfg_reader_t *r, const cfg_desc_t *d)
{
    s_mark_t m = s_ev_mark(&r->ev);
    if (r->ev.type == YAML_SEQUENCE_START_EVENT || r->ev.type == YAML_MAPPING_START_EVENT)
        return s_fail_at(r, m, "%s: expected a scalar value, not a %s", d->key,
                         r->ev.type == YAML_SEQUENCE_START_EVENT ? "list" : "mapping");
    char where[600];
    snprintf(where, sizeof where, "%s:%d:%d", r->origin, m.line, m.col);
    return cfgtable_set(r->t, r->obj, d->key, (const char *)r->ev.data.scalar.value, where);
}

/* Parses the value event (r->ev) of descriptor i. */
static shoal_err_t s_parse_value(cfg_reader_t *r, int i)
{
    const cfg_desc_t *d = &r->t->desc[i];
    void *dst = s_field(r->obj, d);
    s_mark_t m = s_ev_mark(&r->ev);
    char got[96], msg[512];
    shoal_err_t rc;

    if (r->ev.type == YAML_ALIAS_EVENT)
        return s_alias_error(r, m, d->key);
    if (r->t->text_values)
        return s_parse_text_value(r, d);
    if (d->type == CFG_STRLIST)
        return s_parse_list(r, d);
    if (r->ev.type != YAML_SCALAR_EVENT || s_is_null(&r->ev)) {
        s_got(&r->ev, got, sizeof got);
        return s_fail_at(r, m, "%s: expected %s, got %s", d->key, s_expected(d), got);
    }
    if (d->type == CFG_STR) {
        const char *join = (d->flags & CFG_PATH) ? r->base_dir : NULL;
        if ((rc = s_take_string(r, d->key, dst, d->size, join)) != SHOAL_OK)
            return rc;
        if (!s_check_string(d, dst, msg, sizeof msg))
            return s_fail_at(r, m, "%s: %s, got '%s'", d->key, msg, (char *)dst);
        return SHOAL_OK;
    }

    /* Numbers: plain scalars only ("300" in quotes is a string in YAML). */
    const char *t = (const char *)r->ev.data.scalar.value;
    s_got(&r->ev, got, sizeof got);
    if (r->ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE || strlen(t) != r->ev.data.scalar.length)
        return s_fail_at(r, m, "%s: expected %s, got %s", d->key, s_expected(d), got);
    int64_t ll = 0;
    uint64_t u = 0;
    double v = 0;
    if (d->type == CFG_INT)
        rc = numparse_i64(t, INT64_MIN, INT64_MAX, &ll);
    else if (d->type == CFG_U64)
        rc = numparse_u64(t, UINT64_MAX, &u);
    else
        rc = numparse_double(t, &v);
    if (rc == SHOAL_ERR_INVALID)
        return s_fail_at(r, m, "%s: expected %s, got %s", d->key, s_expected(d), got);
    if (rc != SHOAL_OK ||
        (d->type == CFG_INT && (d->flags & CFG_DEFERRED) && (ll < INT_MIN || ll > INT_MAX)))
        return s_fail_at(r, m, "%s: %s is out of range", d->key, got);
    if (d->type == CFG_U64) {
        *(uint64_t *)dst = u;
        return SHOAL_OK;
    }
    if (d->type == CFG_INT)
        v = (double)ll;
    if (d->flags & CFG_DEFERRED) {
        r->deferred[i] = v;
        return SHOAL_OK;
    }
    if (!s_in_range(d, v)) {
        cfgtable_range_text(d, msg, sizeof msg);
        if (d->type == CFG_INT)
            return s_fail_at(r, m, "%s: must be %s, got %lld", d->key, msg, (long long)ll);
        return s_fail_at(r, m, "%s: must be %s, got %s", d->key, msg, got);
    }
    if (d->type == CFG_INT)
        *(int *)dst = (int)ll;
    else
        *(double *)dst = v;
    return SHOAL_OK;
}

/* "steps, global_batch, ..." for the keys of section k (0: the top level and the sections). */
static void s_valid_keys(const cfgtable_t *t, int k, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < t->n_desc + t->n_sections - 1; i++) {
        const char *name;
        if (i < t->n_desc) {
            if (cfgtable_section_of(t, t->desc[i].key) != k)
                continue;
            name = cfgtable_leaf(t->desc[i].key);
            if (t->n_sections < 2)
                name = t->desc[i].key;
        } else if (k == 0) {
            name = t->sections[i - t->n_desc + 1];
        } else {
            break;
        }
        int w = snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", name);
        if (w < 0 || (size_t)w >= cap - n)
            break; /* truncated: the buffer is sized for the tables, never reached */
        n += (size_t)w;
    }
}

static shoal_err_t s_parse_mapping(cfg_reader_t *r, int k);

/* The value of a top-level section key: a mapping of its keys (or null, an empty section). */
static shoal_err_t s_parse_section(cfg_reader_t *r, int k)
{
    const char *sec = r->t->sections[k];
    s_mark_t m = s_ev_mark(&r->ev);
    r->sec_val[k] = m;
    if (r->ev.type == YAML_ALIAS_EVENT)
        return s_alias_error(r, m, sec);
    if (s_is_null(&r->ev))
        return SHOAL_OK;
    if (r->ev.type != YAML_MAPPING_START_EVENT) {
        char got[96];
        s_got(&r->ev, got, sizeof got);
        return s_fail_at(r, m, "%s: expected a mapping of %s.* keys, got %s", sec, sec, got);
    }
    return s_parse_mapping(r, k);
}

/* Index of a section named by a top-level key, 0 when it is not one. */
static int s_section_named(const cfgtable_t *t, const char *key)
{
    for (int j = 1; j < t->n_sections; j++)
        if (strcmp(key, t->sections[j]) == 0)
            return j;
    return 0;
}

/* Parses the keys of section k up to its MAPPING_END (r->ev is the MAPPING_START). */
static shoal_err_t s_parse_mapping(cfg_reader_t *r, int k)
{
    const cfgtable_t *t = r->t;
    const char *sec = t->sections[k];
    shoal_err_t rc;
    char list[700], q[64];
    for (;;) {
        if ((rc = s_next(r)) != SHOAL_OK)
            return rc;
        if (r->ev.type == YAML_MAPPING_END_EVENT)
            return SHOAL_OK;
        s_mark_t km = s_ev_mark(&r->ev);
        if (r->ev.type != YAML_SCALAR_EVENT)
            return s_fail_at(r, km, "%s%skeys must be plain strings, got %s", sec, k ? ": " : "",
                             s_kind(&r->ev));
        const char *key = (const char *)r->ev.data.scalar.value;
        size_t klen = r->ev.data.scalar.length;
        s_quote(key, klen, q, sizeof q);
        char full[160];
        int known = strlen(key) == klen && klen < 100;
        snprintf(full, sizeof full, "%s%s%s", sec, k ? "." : "", known ? key : "");
        int sub = k == 0 && known ? s_section_named(t, key) : 0;
        if (sub) {
            if (r->sec_mark[sub].line)
                return s_fail_at(r, km, "duplicate key '%s' (first at %d:%d)", key,
                                 r->sec_mark[sub].line, r->sec_mark[sub].col);
            r->sec_mark[sub] = km;
            if ((rc = s_next(r)) != SHOAL_OK) /* `key` is freed from here on */
                return rc;
            if ((rc = s_parse_section(r, sub)) != SHOAL_OK)
                return rc;
            continue;
        }
        int i = known ? cfgtable_find(t, full) : -1;
        if (i < 0 || cfgtable_section_of(t, t->desc[i].key) != k) {
            s_valid_keys(t, k, list, sizeof list);
            return s_fail_at(r, km, "unknown key '%s%s%s' (valid %s%skeys: %s)", sec, k ? "." : "",
                             q, sec, k ? " " : "top-level ", list);
        }
        if (r->key_mark[i].line)
            return s_fail_at(r, km, "duplicate key '%s' (first at %d:%d)", t->desc[i].key,
                             r->key_mark[i].line, r->key_mark[i].col);
        r->key_mark[i] = km;
        if ((rc = s_next(r)) != SHOAL_OK)
            return rc;
        r->val_mark[i] = s_ev_mark(&r->ev);
        if ((rc = s_parse_value(r, i)) != SHOAL_OK)
            return rc;
    }
}

static shoal_err_t s_check_required(const cfg_reader_t *r)
{
    const cfgtable_t *t = r->t;
    for (int i = 0; i < t->n_desc; i++) {
        if (!(t->desc[i].flags & CFG_REQUIRED) || r->key_mark[i].line)
            continue;
        int k = cfgtable_section_of(t, t->desc[i].key);
        s_mark_t m = k > 0 && r->sec_mark[k].line ? r->sec_mark[k] : r->sec_mark[0];
        return s_fail_at(r, m, "missing required key '%s'", t->desc[i].key);
    }
    return SHOAL_OK;
}

static shoal_err_t s_parse_document(cfg_reader_t *r)
{
    const cfgtable_t *t = r->t;
    shoal_err_t rc;
    char list[700], got[96];
    if ((rc = s_next(r)) != SHOAL_OK) /* STREAM_START */
        return rc;
    if ((rc = s_next(r)) != SHOAL_OK)
        return rc;
    s_valid_keys(t, 0, list, sizeof list);
    int empty = r->ev.type == YAML_STREAM_END_EVENT;
    if (!empty) {
        if ((rc = s_next(r)) != SHOAL_OK) /* the root node after DOCUMENT_START */
            return rc;
        s_mark_t m = s_ev_mark(&r->ev);
        empty = s_is_null(&r->ev);
        if (empty && !t->allow_empty)
            return s_fail_at(r, m, "empty %s (expected a mapping with keys %s)", t->what, list);
        if (!empty && r->ev.type != YAML_MAPPING_START_EVENT) {
            s_got(&r->ev, got, sizeof got);
            return s_fail_at(r, m, "a %s must be a mapping with keys %s, got %s", t->what, list,
                             got);
        }
        if (!empty) {
            r->sec_mark[0] = r->sec_val[0] = m;
            if ((rc = s_parse_mapping(r, 0)) != SHOAL_OK)
                return rc;
        }
        if ((rc = s_next(r)) != SHOAL_OK) /* DOCUMENT_END */
            return rc;
        if ((rc = s_next(r)) != SHOAL_OK)
            return rc;
        if (r->ev.type != YAML_STREAM_END_EVENT)
            return s_fail_at(r, s_ev_mark(&r->ev), "a second YAML document: a %s is one document",
                             t->what);
    } else if (!t->allow_empty) {
        return s_fail_at(r, (s_mark_t){1, 1}, "empty %s (expected a mapping with keys %s)", t->what,
                         list);
    }
    if ((rc = s_check_required(r)) != SHOAL_OK)
        return rc;
    return t->finish ? t->finish(r, r->obj) : SHOAL_OK;
}

shoal_err_t cfgtable_load_string(const cfgtable_t *t, void *obj, const char *text, size_t len,
                                 const char *origin, const char *base_dir)
{
    if (t->n_desc > S_MAX_DESC || t->n_sections > S_MAX_SECT)
        return shoal_fail(SHOAL_ERR_INVALID, "%s: table larger than the reader", origin);
    cfg_reader_t *r = calloc(1, sizeof *r);
    if (!r)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", origin);
    shoal_err_t rc = SHOAL_OK;
    if (!yaml_parser_initialize(&r->parser)) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory (YAML parser)", origin);
        goto out_free;
    }
    r->t = t;
    r->obj = obj;
    r->origin = origin;
    r->text = (const unsigned char *)text;
    r->len = len;
    r->base_dir = base_dir;
    r->sec_mark[0] = (s_mark_t){1, 1};
    yaml_parser_set_input_string(&r->parser, r->text, len);
    rc = s_parse_document(r);
    if (r->has_ev)
        yaml_event_delete(&r->ev);
    yaml_parser_delete(&r->parser);
out_free:
    free(r);
    return rc;
}

#define S_MAX_FILE_BYTES (4u << 20)

shoal_err_t cfgtable_load_file(const cfgtable_t *t, void *obj, const char *path)
{
    shoal_err_t rc = SHOAL_OK;
    char *text = NULL, *dir = NULL, *base = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return shoal_fail(SHOAL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    text = malloc(S_MAX_FILE_BYTES + 1);
    if (!text) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    size_t n = fread(text, 1, S_MAX_FILE_BYTES + 1, f);
    if (ferror(f)) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    if (n > S_MAX_FILE_BYTES) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "%s: larger than %u MiB, not a %s", path,
                        S_MAX_FILE_BYTES >> 20, t->what);
        goto out;
    }
    text[n] = '\0';
    /* Relative paths follow the file, wherever the command runs from. */
    dir = strdup(path);
    if (!dir) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        strcpy(dir, ".");
    base = realpath(dir, NULL);
    if (!base) {
        rc =
            shoal_fail(SHOAL_ERR_IO, "%s: cannot resolve its directory: %s", path, strerror(errno));
        goto out;
    }
    if (strcmp(base, "/") == 0)
        base[0] = '\0'; /* joins as "/file", not "//file" */
    rc = cfgtable_load_string(t, obj, text, n, path, base);
out:
    free(base);
    free(dir);
    free(text);
    fclose(f);
    return rc;
}

/* ---- for finish hooks ------------------------------------------------------------------- */

int cfg_reader_has(const cfg_reader_t *r, int i)
{
    return i >= 0 && r->key_mark[i].line != 0;
}

double cfg_reader_deferred(const cfg_reader_t *r, int i)
{
    return r->deferred[i];
}

/* Where to point for `key`: its value, else key2's value, else its section, else the top. */
static s_mark_t s_blame_mark(const cfg_reader_t *r, const char *key, const char *key2)
{
    int i = cfgtable_find(r->t, key);
    if (i >= 0 && r->val_mark[i].line)
        return r->val_mark[i];
    if (key2) {
        int j = cfgtable_find(r->t, key2);
        if (j >= 0 && r->val_mark[j].line)
            return r->val_mark[j];
    }
    int k = i >= 0 ? cfgtable_section_of(r->t, key) : 0;
    if (k > 0 && r->sec_mark[k].line)
        return r->sec_mark[k];
    return r->sec_mark[0];
}

shoal_err_t cfg_reader_fail(const cfg_reader_t *r, const char *key, const char *key2,
                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    shoal_err_t rc = s_vfail_at(r, s_blame_mark(r, key, key2), fmt, ap);
    va_end(ap);
    return rc;
}

shoal_err_t cfg_reader_fail_section(const cfg_reader_t *r, int sec, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_mark_t m = r->sec_val[sec].line ? r->sec_val[sec] : r->sec_mark[0];
    shoal_err_t rc = s_vfail_at(r, m, fmt, ap);
    va_end(ap);
    return rc;
}
