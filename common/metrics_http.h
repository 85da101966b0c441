/* metrics_http.h: serves GET /metrics (Prometheus text format 0.0.4) over HTTP with
 * libmicrohttpd on its own thread. The daemon's loop renders its state (prom_text.h) and
 * publishes the text here; the HTTP thread only copies the last published text under a lock,
 * so it never reads the daemon's state. */
#ifndef SHOAL_METRICS_HTTP_H
#define SHOAL_METRICS_HTTP_H

#include <stddef.h>

#include "err.h"

typedef struct metrics_http metrics_http_t;

/* Listens on "ADDR:PORT" (ADDR an IPv4 address, "localhost", or "*" / "0.0.0.0" for every
 * interface; PORT 0 picks a free port, see metrics_http_port). SHOAL_ERR_INVALID for a bad
 * address, SHOAL_ERR_IO when it cannot listen (port taken), SHOAL_ERR_STATE when built
 * without libmicrohttpd. *out is NULL on failure. Until the first publish /metrics answers 503. */
shoal_err_t metrics_http_start(const char *listen, metrics_http_t **out);

/* The port it listens on. */
unsigned metrics_http_port(const metrics_http_t *m);

/* Replaces the served text with a copy of text[0..len). SHOAL_ERR_NOMEM (the old text stays). */
shoal_err_t metrics_http_publish(metrics_http_t *m, const char *text, size_t len);

/* Stops the thread and frees; idempotent, nulls *self_p. */
void metrics_http_stop(metrics_http_t **self_p);

#endif
