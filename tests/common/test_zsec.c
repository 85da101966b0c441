/* test_zsec.c: common/zsec: key files (0600 secret, never overwritten, a secret others may read
 * refused, a key.public of another pair refused), the allow-list file (entries, comments, '#'
 * inside a key, errors as FILE:LINE, duplicates), and the ZAP handler over real CURVE sockets
 * (a listed key gets its User-Id, an unlisted key no connection, a list replaced while running;
 * a holding domain: an unknown key held until a list admits it, or refused after the hold; a
 * voucher's domain: held until vouched for, a refused key denied at once), and the vouch cache. */
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

#include "vouch.h"
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

/* A CURVE client with `client` dialling ep, "x" queued on it (sent once the handshake is done). */
static void *s_dial(void *ctx, const char *ep, const zsec_keys_t *client, const char *server_pub)
{
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zsec_client(s, client, server_pub), SHOAL_OK);
    assert_int_equal(zmq_connect(s, ep), 0);
    zmq_send(s, "x", 1, ZMQ_DONTWAIT);
    return s;
}

/* The server receives "x" within 2 s, on a connection whose User-Id is `want`. */
static void s_expect_user(void *server, const char *want)
{
    int t = 2000;
    zmq_setsockopt(server, ZMQ_RCVTIMEO, &t, sizeof t);
    zmq_msg_t m;
    zmq_msg_init(&m);
    assert_int_equal(zmq_msg_recv(&m, server, 0), 1);
    char user[ZSEC_USER_MAX];
    zsec_msg_user(&m, user);
    assert_string_equal(user, want);
    zmq_msg_close(&m);
}

/* Sends "x" from a CURVE client with `client` to the server; returns the User-Id the server saw
 * or "-" when nothing arrived within 1 s. */
static const char *s_exchange(void *ctx, void *server, const char *ep, const zsec_keys_t *client,
                              const char *server_pub)
{
    static char user[ZSEC_USER_MAX];
    void *s = s_dial(ctx, ep, client, server_pub);
    int t = 1000;
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
    void *c = s_dial(ctx, ep, &a, srv.public_key);
    usleep(150 * 1000); /* the handshake is held now */
    snprintf(rule.key, sizeof rule.key, "%s", a.public_key);
    snprintf(rule.user, sizeof rule.user, "plan:a");
    assert_int_equal(zsec_zap_set(zap, "h", &rule, 1), SHOAL_OK);
    s_expect_user(held, "plan:a");
    assert_int_equal(zsec_zap_denied(zap), denied + 1);
    zmq_close(c);
    zmq_close(held);
    zmq_close(server);
    zsec_zap_destroy(&zap);
    assert_null(zap);
    zmq_ctx_term(ctx);
}

/* common/vouch: answers stand for the ttl then the key is wanted again; an admission nobody
 * asked for is ignored, a refusal (a revocation) always filed; the table stays bounded. */
static void test_vouch_cache(void **state)
{
    (void)state;
    vouch_t *v = NULL;
    assert_int_equal(vouch_new(200, &v), SHOAL_OK);
    zsec_keys_t a, b;
    assert_int_equal(zsec_keys_generate(&a), SHOAL_OK);
    assert_int_equal(zsec_keys_generate(&b), SHOAL_OK);
    char user[64] = "", keys[4][ZSEC_KEY_LEN + 1];
    assert_int_equal(vouch_answer(v, a.public_key, 1, "w1"), 0); /* nobody asked */
    assert_int_equal(vouch_lookup(v, a.public_key, user, sizeof user), ZSEC_VOUCH_UNKNOWN);
    assert_int_equal(vouch_lookup(v, a.public_key, user, sizeof user), ZSEC_VOUCH_UNKNOWN);
    assert_int_equal(vouch_take_wanted(v, keys, 4), 1); /* asked once */
    assert_string_equal(keys[0], a.public_key);
    assert_int_equal(vouch_take_wanted(v, keys, 4), 0);
    assert_int_equal(vouch_answer(v, a.public_key, 1, "w1"), 1);
    assert_int_equal(vouch_lookup(v, a.public_key, user, sizeof user), ZSEC_VOUCH_ADMIT);
    assert_string_equal(user, "worker:w1");
    /* a revocation ends the admission before its time */
    assert_int_equal(vouch_answer(v, a.public_key, 0, ""), 1);
    assert_int_equal(vouch_lookup(v, a.public_key, user, sizeof user), ZSEC_VOUCH_DENY);
    assert_int_equal(vouch_refusals(v), 1);
    /* an undrain: the coordinator's admission over the cached refusal ends it at once */
    assert_int_equal(vouch_answer(v, a.public_key, 1, "w1"), 1);
    assert_int_equal(vouch_lookup(v, a.public_key, user, sizeof user), ZSEC_VOUCH_ADMIT);
    assert_string_equal(user, "worker:w1");
    assert_int_equal(vouch_answer(v, a.public_key, 1, "w1"), 0); /* over an admission: nothing */
    assert_int_equal(vouch_answer(v, a.public_key, 0, ""), 1);
    assert_int_equal(vouch_lookup(v, a.public_key, user, sizeof user), ZSEC_VOUCH_DENY);
    assert_int_equal(vouch_answer(v, b.public_key, 0, ""), 0); /* a key it never met */
    assert_int_equal(vouch_answer(v, b.public_key, 1, "w2"), 0);
    assert_int_equal(vouch_lookup(v, b.public_key, user, sizeof user), ZSEC_VOUCH_UNKNOWN);
    usleep(300 * 1000); /* past the ttl: asked again */
    assert_int_equal(vouch_lookup(v, a.public_key, user, sizeof user), ZSEC_VOUCH_UNKNOWN);
    assert_int_equal(vouch_take_wanted(v, keys, 4), 2); /* a again, and b (looked up above) */
    /* many strangers: the table stays at VOUCH_MAX keys */
    for (int i = 0; i < VOUCH_MAX + 40; i++) {
        zsec_keys_t k;
        assert_int_equal(zsec_keys_generate(&k), SHOAL_OK);
        vouch_lookup(v, k.public_key, user, sizeof user);
    }
    int n = 0, got;
    while ((got = vouch_take_wanted(v, keys, 4)) > 0)
        n += got;
    assert_true(n <= VOUCH_MAX);
    assert_true(n >= VOUCH_MAX - 1);
    vouch_destroy(&v);
    assert_null(v);
}

/* A ZAP domain with a voucher (common/vouch) over real CURVE sockets: an unknown key is held
 * until its admission is filed (its message then arrives with the vouched User-Id); a refused
 * key is denied at once, not held. */
static void test_zap_vouch(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    zsec_zap_t *zap = NULL;
    vouch_t *v = NULL;
    assert_int_equal(zsec_zap_new(ctx, &zap), SHOAL_OK);
    assert_int_equal(vouch_new(60000, &v), SHOAL_OK);
    assert_int_equal(zsec_zap_vouch(zap, "v", vouch_lookup, v), SHOAL_OK);
    assert_int_equal(zsec_zap_hold(zap, "v", 20000), SHOAL_OK);
    zsec_keys_t srv, a, b;
    assert_int_equal(zsec_keys_generate(&srv), SHOAL_OK);
    assert_int_equal(zsec_keys_generate(&a), SHOAL_OK);
    assert_int_equal(zsec_keys_generate(&b), SHOAL_OK);
    void *server = zmq_socket(ctx, ZMQ_PULL);
    int linger = 0;
    zmq_setsockopt(server, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zsec_server(server, &srv, "v"), SHOAL_OK);
    assert_int_equal(zmq_bind(server, "tcp://127.0.0.1:*"), 0);
    char ep[64], keys[4][ZSEC_KEY_LEN + 1];
    size_t len = sizeof ep;
    zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, ep, &len);
    /* a is asked about while its handshake is held, then admitted */
    void *c = s_dial(ctx, ep, &a, srv.public_key);
    int n = 0;
    for (int i = 0; i < 100 && n == 0; i++) {
        n = vouch_take_wanted(v, keys, 4);
        usleep(20 * 1000);
    }
    assert_int_equal(n, 1);
    assert_string_equal(keys[0], a.public_key);
    assert_int_equal(vouch_answer(v, a.public_key, 1, "w7"), 1);
    s_expect_user(server, "worker:w7");
    zmq_close(c);
    char user[ZSEC_USER_MAX];
    /* b refused: denied at once (the hold of 20 s would outlast the exchange's 1 s) */
    vouch_lookup(v, b.public_key, user, sizeof user);
    assert_int_equal(vouch_take_wanted(v, keys, 4), 1);
    assert_int_equal(vouch_answer(v, b.public_key, 0, ""), 1);
    const unsigned long long denied = zsec_zap_denied(zap);
    assert_string_equal(s_exchange(ctx, server, ep, &b, srv.public_key), "-");
    assert_true(zsec_zap_denied(zap) > denied);
    zmq_close(server);
    zsec_zap_destroy(&zap);
    vouch_destroy(&v);
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
        cmocka_unit_test(test_vouch_cache),
        cmocka_unit_test(test_zap_vouch),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
