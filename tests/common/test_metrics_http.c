/* test_metrics_http: the Prometheus text builder (HELP/TYPE, label escaping, number forms) and
 * the /metrics server over a real loopback socket: 503 before the first publish, the published
 * bytes after, 404 elsewhere, 405 for POST, the newest text after a republish, bad listen
 * addresses refused and a taken port reported. */

/* cmocka.h needs these first */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_get.h"
#include "metrics_http.h"
#include "prom_text.h"

static void test_text_format(void **state)
{
    (void)state;
    prom_text_t t;
    prom_text_init(&t);
    prom_family(&t, "shoal_x_total", "counter", "a \\ help\nline");
    prom_sample(&t, "shoal_x_total", 3, NULL);
    prom_sample(&t, "shoal_x_total", 0.5, "worker", "a\"b\\c\nd", "run", "r", NULL);
    prom_sample(&t, "shoal_x_total", NAN, "k", "v", NULL);
    prom_sample(&t, "shoal_x_total", INFINITY, NULL);
    prom_sample(&t, "shoal_x_total", -INFINITY, NULL);
    prom_sample(&t, "shoal_x_total", 1e20, NULL);
    prom_sample(&t, "shoal_x_total", 12345678901.0, NULL);
    assert_false(t.oom);
    assert_string_equal(t.buf, "# HELP shoal_x_total a \\\\ help\\nline\n"
                               "# TYPE shoal_x_total counter\n"
                               "shoal_x_total 3\n"
                               "shoal_x_total{worker=\"a\\\"b\\\\c\\nd\",run=\"r\"} 0.5\n"
                               "shoal_x_total{k=\"v\"} NaN\n"
                               "shoal_x_total +Inf\n"
                               "shoal_x_total -Inf\n"
                               "shoal_x_total 1e+20\n"
                               "shoal_x_total 12345678901\n");
    assert_int_equal(t.len, strlen(t.buf));
    prom_text_reset(&t);
    assert_int_equal(t.len, 0);
    prom_sample(&t, "a", 1, NULL);
    assert_string_equal(t.buf, "a 1\n");
    prom_text_fini(&t);
}

static void test_server(void **state)
{
    (void)state;
    metrics_http_t *m = NULL;
    assert_int_equal(metrics_http_start("127.0.0.1:0", &m), SHOAL_OK);
    unsigned port = metrics_http_port(m);
    assert_true(port > 0);
    char body[4096];
    assert_int_equal(test_http(port, "GET", "/metrics", body, sizeof body), 503);
    const char text[] = "# HELP a b\n# TYPE a gauge\na 1\n";
    assert_int_equal(metrics_http_publish(m, text, sizeof text - 1), SHOAL_OK);
    assert_int_equal(test_http(port, "GET", "/metrics", body, sizeof body), 200);
    assert_string_equal(body, text);
    assert_int_equal(test_http(port, "GET", "/", body, sizeof body), 404);
    assert_int_equal(test_http(port, "POST", "/metrics", body, sizeof body), 405);
    assert_int_equal(metrics_http_publish(m, "b 2\n", 4), SHOAL_OK);
    assert_int_equal(test_http(port, "GET", "/metrics", body, sizeof body), 200);
    assert_string_equal(body, "b 2\n");
    /* the same port again: taken */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    metrics_http_t *m2 = NULL;
    assert_int_equal(metrics_http_start(addr, &m2), SHOAL_ERR_IO);
    assert_null(m2);
    metrics_http_stop(&m);
    assert_null(m);
    metrics_http_stop(&m); /* idempotent */
}

static void test_bad_listen(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",        "9100", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "host.example:9100",
        "1.2.3:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        metrics_http_t *m = (metrics_http_t *)&bad; /* must come back NULL */
        assert_int_equal(metrics_http_start(bad[i], &m), SHOAL_ERR_INVALID);
        assert_null(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_format),
        cmocka_unit_test(test_server),
        cmocka_unit_test(test_bad_listen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
