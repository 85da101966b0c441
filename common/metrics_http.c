/* metrics_http.c: GET /metrics over libmicrohttpd (metrics_http.h). */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "numparse.h"

#ifdef SHOAL_HAVE_MHD
#include <microhttpd.h>

#define S_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_http {
    struct MHD_Daemon *daemon;
    unsigned port;
    pthread_mutex_t lock; /* guards text and len: the HTTP thread copies, the owner publishes */
    char *text;
    size_t len;
};

static enum MHD_Result s_reply(struct MHD_Connection *conn, unsigned status, const char *body,
                               size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free((void *)body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            status == MHD_HTTP_OK ? S_CONTENT_TYPE : "text/plain");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result s_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)con_cls;
    metrics_http_t *m = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "only GET /metrics\n";
        return s_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, msg, sizeof msg - 1,
                       MHD_RESPMEM_PERSISTENT);
    }
    if (*upload_data_size)
        return MHD_NO;
    if (strcmp(url, "/metrics") != 0) {
        static const char msg[] = "not found: the metrics are at /metrics\n";
        return s_reply(conn, MHD_HTTP_NOT_FOUND, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
    }
    pthread_mutex_lock(&m->lock);
    char *copy = m->text ? malloc(m->len ? m->len : 1) : NULL;
    size_t len = m->len;
    int have = m->text != NULL;
    if (copy)
        memcpy(copy, m->text, len);
    pthread_mutex_unlock(&m->lock);
    if (!have) {
        static const char msg[] = "no metrics published yet\n";
        return s_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, msg, sizeof msg - 1,
                       MHD_RESPMEM_PERSISTENT);
    }
    if (!copy)
        return MHD_NO;
    return s_reply(conn, MHD_HTTP_OK, copy, len, MHD_RESPMEM_MUST_FREE);
}

/* "ADDR:PORT" into sa. */
static shoal_err_t s_parse_listen(const char *listen, struct sockaddr_in *sa)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon - listen > 63)
        return shoal_fail(SHOAL_ERR_INVALID, "metrics listen '%s': expected ADDR:PORT", listen);
    char host[64];
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    uint64_t port;
    if (numparse_u64(colon + 1, 65535, &port) != SHOAL_OK)
        return shoal_fail(SHOAL_ERR_INVALID, "metrics listen '%s': bad port '%s'", listen,
                          colon + 1);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (!host[0] || strcmp(host, "*") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "metrics listen '%s': '%s' is not an IPv4 address, localhost or *",
                          listen, host);
    return SHOAL_OK;
}

shoal_err_t metrics_http_start(const char *listen, metrics_http_t **out)
{
    *out = NULL;
    struct sockaddr_in sa;
    shoal_err_t rc = s_parse_listen(listen, &sa);
    if (rc != SHOAL_OK)
        return rc;
    metrics_http_t *m = calloc(1, sizeof *m);
    if (!m)
        return shoal_fail(SHOAL_ERR_NOMEM, "metrics server");
    pthread_mutex_init(&m->lock, NULL);
    /* one internal thread with poll: a scrape is a memcpy, and Prometheus scrapes rarely */
    m->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL,
                                 s_on_request, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    if (!m->daemon) {
        pthread_mutex_destroy(&m->lock);
        free(m);
        return shoal_fail(SHOAL_ERR_IO, "metrics listen '%s': cannot listen (address in use?)",
                          listen);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : ntohs(sa.sin_port);
    *out = m;
    return SHOAL_OK;
}

unsigned metrics_http_port(const metrics_http_t *m)
{
    return m->port;
}

shoal_err_t metrics_http_publish(metrics_http_t *m, const char *text, size_t len)
{
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return shoal_fail(SHOAL_ERR_NOMEM, "metrics text of %zu bytes", len);
    memcpy(copy, text, len);
    pthread_mutex_lock(&m->lock);
    char *old = m->text;
    m->text = copy;
    m->len = len;
    pthread_mutex_unlock(&m->lock);
    free(old);
    return SHOAL_OK;
}

void metrics_http_stop(metrics_http_t **self_p)
{
    metrics_http_t *m = *self_p;
    if (!m)
        return;
    MHD_stop_daemon(m->daemon);
    pthread_mutex_destroy(&m->lock);
    free(m->text);
    free(m);
    *self_p = NULL;
}

#else /* built without libmicrohttpd */

struct metrics_http {
    int unused;
};

shoal_err_t metrics_http_start(const char *listen, metrics_http_t **out)
{
    *out = NULL;
    return shoal_fail(SHOAL_ERR_STATE,
                      "metrics listen '%s': shoal was built without libmicrohttpd "
                      "(install libmicrohttpd-dev and rebuild)",
                      listen);
}

unsigned metrics_http_port(const metrics_http_t *m)
{
    (void)m;
    return 0;
}

shoal_err_t metrics_http_publish(metrics_http_t *m, const char *text, size_t len)
{
    (void)m;
    (void)text;
    (void)len;
    return SHOAL_OK;
}

void metrics_http_stop(metrics_http_t **self_p)
{
    *self_p = NULL;
}
#endif
