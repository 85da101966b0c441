/* cfgtable.h: one descriptor table per settings file drives its defaults, bounds, YAML parsing
 * (libyaml events, errors as "FILE:LINE:COLUMN: ..."), command-line overrides and docs. Used by
 * the run spec (runspec.c), the coordinator's config (coordinator/config.c) and the worker
 * daemon's flags (worker/daemon_config.c).
 *
 * A table describes fields of one C struct (`obj`) by offset. Keys are "section.leaf"
 * ("train.lr") in a sectioned table, plain ("listen") in a flat one. Values arrive two ways:
 *   - typed YAML (text_values = 0, the run spec): YAML types matter, a quoted "300" is a string
 *     and an integer key refuses it: "train.steps: expected an integer, got a quoted string '300'";
 *     bounds as "must be >= 1, <= 1024, got 0";
 *   - text, as on a command line (cfgtable_set, and YAML with text_values = 1): every value is a
 *     string parsed by common/numparse: "WHERE: dead_after_ms: 10 is out of range [50, 86400000]".
 */
#ifndef SHOAL_CFGTABLE_H
#define SHOAL_CFGTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CFG_STR,     /* char[size] */
    CFG_INT,     /* int within [min, max] */
    CFG_U64,     /* uint64_t (bounds unused: 0 .. 2^64-1) */
    CFG_REAL,    /* double, finite, within [min, max] (CFG_MIN_OPEN/CFG_MAX_OPEN) */
    CFG_STRLIST, /* char[list_max][size] plus an int count at count_offset: one string or a
                  * sequence of strings (typed YAML only) */
} cfg_type_t;

enum {
    CFG_REQUIRED = 1u << 0, /* a file must set it */
    CFG_MIN_OPEN = 1u << 1, /* > min instead of >= min */
    CFG_MAX_OPEN = 1u << 2, /* < max instead of <= max */
    CFG_NAME = 1u << 3,     /* CFG_STR: follows common/name.h */
    CFG_NONEMPTY = 1u << 4, /* CFG_STR: not "" */
    CFG_PATH = 1u << 5,     /* CFG_STR/CFG_STRLIST: relative paths join the file's directory */
    CFG_DEFERRED = 1u << 6, /* CFG_INT/CFG_REAL: parsed without bounds and kept in the reader
                             * (cfg_reader_deferred) for the table's finish hook to apply */
};

typedef struct {
    const char *key;
    cfg_type_t type;
    size_t offset; /* of the field in obj */
    size_t size;   /* CFG_STR, CFG_STRLIST: bytes of one string, NUL included */
    unsigned flags;
    double min, max; /* CFG_INT, CFG_REAL */
    /* CFG_STR: an extra check of a parsed value; returns 1 when valid, else 0 with `msg` */
    int (*check)(const char *value, char *msg, size_t cap);
    size_t count_offset; /* CFG_STRLIST: the int count */
    int list_max;        /* CFG_STRLIST: most entries */
    const char *def;     /* default as text (applied by cfgtable_defaults); NULL: none */
    const char *def_doc; /* the default in words when `def` is NULL (docs) */
    const char *rule;    /* a rule between keys (docs; the table's finish hook checks it) */
    const char *help;
} cfg_desc_t;

typedef struct cfg_reader cfg_reader_t;

typedef struct {
    const cfg_desc_t *desc;
    int n_desc;
    /* Sections in file order, [0] = "" (the top level); a flat table has just {""}. */
    const char *const *sections;
    int n_sections;
    const char *what; /* the file in words for messages: "run spec", "coordinator config" */
    int allow_empty;  /* an empty document sets nothing (else it is an error) */
    int text_values;  /* YAML values are text applied like flags (see the top of this file) */
    /* Called after the document, once required keys are known present: derived defaults and
     * rules between keys. May be NULL. Fail through cfg_reader_fail. */
    shoal_err_t (*finish)(cfg_reader_t *r, void *obj);
} cfgtable_t;

/* Zeroes obj (the whole struct of `obj_size` bytes) and applies every `def`. */
void cfgtable_defaults(const cfgtable_t *t, void *obj, size_t obj_size);

/* Index of `key` in the table, -1 when absent. */
int cfgtable_find(const cfgtable_t *t, const char *key);

/* Sets one key from text (a flag, a default); `where` ("--listen", "FILE:LINE:COL") prefixes
 * errors: "WHERE: KEY: 'x' is not an integer". SHOAL_ERR_NOTFOUND for an unknown key,
 * SHOAL_ERR_INVALID for a bad value. */
shoal_err_t cfgtable_set(const cfgtable_t *t, void *obj, const char *key, const char *text,
                         const char *where);

/* Parses a YAML document over obj (which holds the defaults). Unknown and duplicate keys,
 * wrong types, bounds, missing required keys, aliases and YAML syntax errors fail with
 * SHOAL_ERR_INVALID and "ORIGIN:LINE:COLUMN: ..."; obj is then partly written. `base_dir`
 * joins relative CFG_PATH values (NULL: kept as written). */
shoal_err_t cfgtable_load_string(const cfgtable_t *t, void *obj, const char *text, size_t len,
                                 const char *origin, const char *base_dir);

/* Same from a file (at most 4 MiB); CFG_PATH values are joined to the file's directory.
 * SHOAL_ERR_IO when it cannot be read. */
shoal_err_t cfgtable_load_file(const cfgtable_t *t, void *obj, const char *path);

/* Checks every key's own constraints on a struct built in code: "KEY: must be ..., got X". */
shoal_err_t cfgtable_validate(const cfgtable_t *t, const void *obj);

/* The bounds of a CFG_INT/CFG_REAL key in words: ">= 1, <= 1024", "> 0, < 1". */
void cfgtable_range_text(const cfg_desc_t *d, char *buf, size_t cap);

/* Shortest text that reads back to the same double, always with a '.' or an exponent. */
void cfgtable_format_real(double v, char *buf, size_t cap);

/* "section.leaf" -> section index (0 for a key without a dot); the leaf after the dot. */
int cfgtable_section_of(const cfgtable_t *t, const char *key);
const char *cfgtable_leaf(const char *key);

/* ---- for finish hooks ---- */

/* Whether descriptor i was written in the file. */
int cfg_reader_has(const cfg_reader_t *r, int i);
/* The value of a CFG_DEFERRED descriptor (valid when cfg_reader_has). */
double cfg_reader_deferred(const cfg_reader_t *r, int i);
/* Fails at the value of `key`, else of `key2`, else at its section, else the document:
 * "ORIGIN:LINE:COL: <message>". Returns SHOAL_ERR_INVALID. */
shoal_err_t cfg_reader_fail(const cfg_reader_t *r, const char *key, const char *key2,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Fails at where the mapping of section `sec` starts (else the document). */
shoal_err_t cfg_reader_fail_section(const cfg_reader_t *r, int sec, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
