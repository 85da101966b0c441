/* test_zsec.c: common/zsec: key files (0600 secret, never overwritten, a secret others may read
 * refused, a key.public of another pair refused), the allow-list file (entries, comments, '#'
 * inside a key, errors as FILE:LINE, duplicates), and the ZAP handler over real CURVE sockets
 * (a listed key gets its User-Id, an unlisted key no connection, a list replaced while running;
 * a holding domain: an unknown key held until a list admits it, or refused after the hold). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "zsec.h"

static char s_dir[64];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "/tmp/shoal-zsec-XXXXXX");
    return mkdtemp(s_dir) ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void s_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_key_files(void **state)
{
    (void)state;
    char dir[128], other[128], path[160];
    snprintf(dir, sizeof dir, "%s/k", s_dir);
    snprintf(other, sizeof other, "%s/other", s_dir);
    zsec_keys_t k, k2, got;
    assert_int_equal(zsec_keys_generate(&k), SHOAL_OK);
    assert_true(zsec_key_valid(k.public_key));
    assert_int_equal(zsec_keys_write(dir, &k), SHOAL_OK);
    snprintf(path, sizeof path, "%s/key.secret", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(zsec_keys_write(dir, &k), SHOAL_ERR_STATE); /* never overwritten */
    assert_int_equal(zsec_keys_load(dir, &got), SHOAL_OK);
    assert_string_equal(got.public_key, k.public_key);
    assert_string_equal(got.secret_key, k.secret_key);
    chmod(path, 0644);
    assert_int_equal(zsec_keys_load(dir, &got), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "chmod 600"));
    chmod(path, 0600);
    /* a key.public that is not the secret's */
    assert_int_equal(zsec_keys_generate(&k2), SHOAL_OK);
    assert_int_equal(zsec_keys_write(other, &k2), SHOAL_OK);
    char pub[160];
    snprintf(pub, sizeof pub, "%s/key.public", dir);
    s_write(pub, k2.public_key);
    assert_int_equal(zsec_keys_load(dir, &got), SHOAL_ERR_INVALID);
    snprintf(path, sizeof path, "%s/missing", s_dir);
    assert_int_equal(zsec_keys_load(path, &got), SHOAL_ERR_NOTFOUND);
    s_write(pub, "not a key\n");
    char key[ZSEC_KEY_LEN + 1];
    assert_int_equal(zsec_public_load(pub, key), SHOAL_ERR_INVALID);
}

static void test_allow_list(void **state)
{
    (void)state;
    zsec_keys_t a, b, c;
    assert_int_equal(zsec_keys_generate(&a), SHOAL_OK);
    assert_int_equal(zsec_keys_generate(&b), SHOAL_OK);
    /* a key holding '#' (a Z85 character) must survive the comment rule */
    do
        assert_int_equal(zsec_keys_generate(&c), SHOAL_OK);
    while (!strchr(c.public_key, '#'));
    char path[128], text[1024];
    snprintf(path, sizeof path, "%s/allow", s_dir);
    snprintf(text, sizeof text,
             "# institutions\n\nworker uni-a %s   # a comment\n  operator read alice %s\n"
             "operator admin bob %s\n",
             a.public_key, b.public_key, c.public_key);
    s_write(path, text);
    zsec_allow_t al = {NULL, 0};
    assert_int_equal(zsec_allow_load(path, &al), SHOAL_OK);
    assert_int_equal(al.n, 3);
    const zsec_entry_t *e = zsec_allow_find(&al, a.public_key);
    assert_non_null(e);
    assert_int_equal(e->kind, ZSEC_WORKER);
    assert_string_equal(e->name, "uni-a");
    assert_int_equal(zsec_allow_find(&al, b.public_key)->kind, ZSEC_OPERATOR_READ);
    assert_int_equal(zsec_allow_find(&al, c.public_key)->kind, ZSEC_OPERATOR_ADMIN);
    const struct {
        const char *line, *want;
    } bad[] = {
        {"worker uni-a short\n", ":1: 'short' is not a CURVE public key"},
        {"operator root x %s\n", ":1: operator role 'root'"},
        {"worker bad/name %s\n", ":1: name 'bad/name'"},
        {"worker uni-a %s\nworker uni-b %s\n", ":2: key already listed (as worker uni-a)"},
        {"hello\n", ":1: expected"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, bad[i].line, a.public_key, a.public_key);
        s_write(path, text);
        assert_int_equal(zsec_allow_load(path, &al), SHOAL_ERR_INVALID);
        if (!strstr(shoal_errmsg(), bad[i].want)) {
            fprintf(stderr, "case %zu: %s\n", i, shoal_errmsg());
            fail();
        }
        assert_int_equal(al.n, 3); /* a refused file leaves the list as it was */
    }
    zsec_allow_fini(&al);
}

/* Sends "x" from a CURVE client with `client` to the server; returns the User-Id the server saw
 * or "-" when nothing arrived within 1 s. */
static const char *s_exchange(void *ctx, void *server, const char *ep, const zsec_keys_t *client,
                              const char *server_pub)
{
    static char user[ZSEC_USER_MAX];
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 0, t = 1000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zsec_client(s, client, server_pub), SHOAL_OK);
    assert_int_equal(zmq_connect(s, ep), 0);
    zmq_send(s, "x", 1, ZMQ_DONTWAIT);
    zmq_setsockopt(server, ZMQ_RCVTIMEO, &t, sizeof t);
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, server, 0) < 0)
        snprintf(user, sizeof user, "-");
    else
        zsec_msg_user(&m, user);
    zmq_msg_close(&m);
    zmq_close(s);
    return user;
}

static void test_zap(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    zsec_zap_t *zap = NULL;
    assert_int_equal(zsec_zap_new(ctx, &zap), SHOAL_OK);
    zsec_keys_t srv, a, b;
    assert_int_equal(zsec_keys_generate(&srv), SHOAL_OK);
    assert_int_equal(zsec_keys_generate(&a), SHOAL_OK);
    assert_int_equal(zsec_keys_generate(&b), SHOAL_OK);
    zsec_rule_t rule;
    snprintf(rule.key, sizeof rule.key, "%s", a.public_key);
    snprintf(rule.user, sizeof rule.user, "admin:alice");
    assert_int_equal(zsec_zap_set(zap, "d", &rule, 1), SHOAL_OK);
    void *server = zmq_socket(ctx, ZMQ_PULL);
    int linger = 0;
    zmq_setsockopt(server, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zsec_server(server, &srv, "d"), SHOAL_OK);
    assert_int_equal(zmq_bind(server, "tcp://127.0.0.1:*"), 0);
    char ep[64];
    size_t len = sizeof ep;
    zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, ep, &len);
    assert_string_equal(s_exchange(ctx, server, ep, &a, srv.public_key), "admin:alice");
    assert_string_equal(s_exchange(ctx, server, ep, &b, srv.public_key), "-");
    assert_true(zsec_zap_denied(zap) >= 1);
    /* a client that expects another server key gets nowhere either */
    assert_string_equal(s_exchange(ctx, server, ep, &a, b.public_key), "-");
    /* the list replaced while the handler runs; then any key with User-Id = the key */
    snprintf(rule.key, sizeof rule.key, "%s", b.public_key);
    snprintf(rule.user, sizeof rule.user, "read:bob");
    assert_int_equal(zsec_zap_set(zap, "d", &rule, 1), SHOAL_OK);
    assert_string_equal(s_exchange(ctx, server, ep, &b, srv.public_key), "read:bob");
    assert_string_equal(s_exchange(ctx, server, ep, &a, srv.public_key), "-");
    assert_int_equal(zsec_zap_allow_any(zap, "d"), SHOAL_OK);
    assert_string_equal(s_exchange(ctx, server, ep, &a, srv.public_key), a.public_key);

    /* a holding domain: an unknown key waits for a list that admits it (its message then
     * arrives), and is refused once the hold is over */
    assert_int_equal(zsec_zap_set(zap, "h", NULL, 0), SHOAL_OK);
    assert_int_equal(zsec_zap_hold(zap, "h", 400), SHOAL_OK);
    void *held = zmq_socket(ctx, ZMQ_PULL);
    zmq_setsockopt(held, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zsec_server(held, &srv, "h"), SHOAL_OK);
    assert_int_equal(zmq_bind(held, "tcp://127.0.0.1:*"), 0);
    len = sizeof ep;
    zmq_getsockopt(held, ZMQ_LAST_ENDPOINT, ep, &len);
    unsigned long long denied = zsec_zap_denied(zap);
    assert_string_equal(s_exchange(ctx, held, ep, &b, srv.public_key), "-");
    assert_int_equal(zsec_zap_denied(zap), denied + 1);
    void *c = zmq_socket(ctx, ZMQ_PUSH);
    zmq_setsockopt(c, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zsec_client(c, &a, srv.public_key), SHOAL_OK);
    assert_int_equal(zmq_connect(c, ep), 0);
    zmq_send(c, "x", 1, ZMQ_DONTWAIT);
    usleep(150 * 1000); /* the handshake is held now */
    snprintf(rule.key, sizeof rule.key, "%s", a.public_key);
    snprintf(rule.user, sizeof rule.user, "plan:a");
    assert_int_equal(zsec_zap_set(zap, "h", &rule, 1), SHOAL_OK);
    int t = 2000;
    zmq_setsockopt(held, ZMQ_RCVTIMEO, &t, sizeof t);
    zmq_msg_t m;
    zmq_msg_init(&m);
    assert_int_equal(zmq_msg_recv(&m, held, 0), 1);
    char user[ZSEC_USER_MAX];
    zsec_msg_user(&m, user);
    assert_string_equal(user, "plan:a");
    zmq_msg_close(&m);
    assert_int_equal(zsec_zap_denied(zap), denied + 1);
    zmq_close(c);
    zmq_close(held);
    zmq_close(server);
    zsec_zap_destroy(&zap);
    assert_null(zap);
    zmq_ctx_term(ctx);
}

int main(void)
{
    if (!zmq_has("curve")) {
        printf("libzmq without CURVE: skip\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_allow_list),
        cmocka_unit_test(test_zap),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
