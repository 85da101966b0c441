/* test_log: the three line formats of common/log: plain, journald's "<N>" priority prefix (chosen
 * only when $JOURNAL_STREAM names stderr), and JSON objects that parse, with escaping and UTF-8
 * repair. stderr is redirected to a temporary file and read back. */

/* cmocka.h needs these first */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static char s_path[] = "/tmp/shoal-test-log-XXXXXX";
static int s_saved_stderr = -1;

/* stderr goes to a fresh temporary file */
static int s_setup(void **state)
{
    (void)state;
    strcpy(s_path, "/tmp/shoal-test-log-XXXXXX");
    int fd = mkstemp(s_path);
    if (fd < 0)
        return -1;
    s_saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    unsetenv("JOURNAL_STREAM");
    log_set_component("coordinator");
    log_set_level(LOG_LVL_INFO);
    log_set_format(LOG_FORMAT_PLAIN);
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    dup2(s_saved_stderr, STDERR_FILENO);
    close(s_saved_stderr);
    unlink(s_path);
    return 0;
}

/* What was written to stderr so far (caller frees). */
static char *s_read_back(void)
{
    FILE *f = fopen(s_path, "rb");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strdup(buf);
}

static void test_plain_line(void **state)
{
    (void)state;
    log_info("worker %s: %s -> %s", "w3", "active", "dead");
    log_debug("not shown at info");
    char *out = s_read_back();
    /* "HH:MM:SS.mmm INFO  coordinator: worker w3: active -> dead\n", nothing else */
    assert_int_equal(strlen(out), 13 + 6 + strlen("coordinator: worker w3: active -> dead") + 1);
    assert_int_equal(out[2], ':');
    assert_int_equal(out[8], '.');
    assert_memory_equal(out + 13, "INFO  coordinator: worker w3: active -> dead\n", 45);
    free(out);
}

static void test_journal_only_when_stream_matches(void **state)
{
    (void)state;
    /* a JOURNAL_STREAM naming another file: plain */
    setenv("JOURNAL_STREAM", "1:2", 1);
    assert_int_equal(log_format_auto(), LOG_FORMAT_PLAIN);
    assert_int_equal(log_format_parse("plain"), LOG_FORMAT_PLAIN);
    struct stat st;
    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    char js[64];
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    assert_int_equal(log_format_auto(), LOG_FORMAT_JOURNAL);
    /* --log-format plain under systemd means the journal's form; json stays json */
    assert_int_equal(log_format_parse("plain"), LOG_FORMAT_JOURNAL);
    assert_int_equal(log_format_parse("json"), LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("xml"), -1);
    log_set_format(LOG_FORMAT_JOURNAL);
    log_set_level(LOG_LVL_DEBUG);
    log_error("e %d", 1);
    log_warn("w");
    log_info("two\nlines");
    log_debug("d");
    char *out = s_read_back();
    assert_string_equal(out, "<3>coordinator: e 1\n<4>coordinator: w\n<6>coordinator: two lines\n"
                             "<7>coordinator: d\n");
    free(out);
}

static void test_json_lines_parse(void **state)
{
    (void)state;
    log_set_format(LOG_FORMAT_JSON);
    log_set_component("worker w\"1");
    log_warn("quote \" backslash \\ tab \t newline \n end");
    log_error("bad utf8 \xff\xfe here, good \xc3\xa9");
    log_info("%s", ""); /* empty message */
    char *out = s_read_back();
    char *save = NULL;
    const char *want_level[] = {"warn", "error", "info"};
    const char *want_msg[] = {"quote \" backslash \\ tab \t newline \n end",
                              "bad utf8 ?? here, good \xc3\xa9", ""};
    int n = 0;
    for (char *ln = strtok_r(out, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save), n++) {
        assert_true(n < 3);
        json_error_t err;
        json_t *j = json_loads(ln, 0, &err);
        assert_non_null(j);
        assert_int_equal(json_object_size(j), 4);
        assert_string_equal(json_string_value(json_object_get(j, "level")), want_level[n]);
        assert_string_equal(json_string_value(json_object_get(j, "component")), "worker w\"1");
        assert_string_equal(json_string_value(json_object_get(j, "msg")), want_msg[n]);
        const char *ts = json_string_value(json_object_get(j, "ts"));
        assert_non_null(ts);
        /* 2026-12-01T13:10:30.123Z */
        assert_int_equal(strlen(ts), 24);
        assert_int_equal(ts[10], 'T');
        assert_int_equal(ts[23], 'Z');
        json_decref(j);
    }
    assert_int_equal(n, 3);
    free(out);
}

static void test_json_long_message_fits(void **state)
{
    (void)state;
    log_set_format(LOG_FORMAT_JSON);
    /* control characters escape to six bytes each: the line must be cut, not dropped */
    char big[2000];
    memset(big, '\x01', sizeof big - 1);
    big[sizeof big - 1] = 0;
    log_info("%s", big);
    char *out = s_read_back();
    size_t len = strlen(out);
    assert_true(len > 100);
    assert_int_equal(out[len - 1], '\n');
    out[len - 1] = 0;
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    const char *msg = json_string_value(json_object_get(j, "msg"));
    assert_non_null(msg);
    assert_true(strlen(msg) > 0 && strlen(msg) < sizeof big - 1);
    json_decref(j);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plain_line, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_journal_only_when_stream_matches, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_json_lines_parse, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_json_long_message_fits, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
