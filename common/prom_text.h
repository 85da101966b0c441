/* prom_text.h: builds a Prometheus text exposition (format 0.0.4): families with HELP and TYPE
 * lines, then samples with escaped label values. The daemons render a snapshot of their state
 * with it and hand the text to metrics_http. */
#ifndef SHOAL_PROM_TEXT_H
#define SHOAL_PROM_TEXT_H

#include <stddef.h>

typedef struct {
    char *buf; /* NUL-terminated text (NULL until something was written) */
    size_t len, cap;
    int oom; /* an allocation failed: the text is incomplete and must not be served */
} prom_text_t;

void prom_text_init(prom_text_t *t);
void prom_text_fini(prom_text_t *t);
/* Empties the text, keeping its buffer. */
void prom_text_reset(prom_text_t *t);

/* "# HELP name help" and "# TYPE name type" (type: gauge or counter); help is escaped. */
void prom_family(prom_text_t *t, const char *name, const char *type, const char *help);

/* One sample "name{k1="v1",...} value": the label pairs follow as const char * key, value, ...,
 * ended by NULL. Label values are escaped (\\, \", \n); values print as Prometheus reads them
 * (NaN, +Inf, -Inf, integers without exponent up to 2^53). */
void prom_sample(prom_text_t *t, const char *name, double value, ...) __attribute__((sentinel));

#endif
