/* zsec.c: CURVE key files, socket setup, the allow-list file and the ZAP handler thread (zsec.h).
 */
#include "zsec.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "fsutil.h"
#include "log.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_DOMAINS 8
#define ZAP_DOMAIN_MAX 32

static const char s_z85_chars[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  ".-:+=^!/*?&<>()[]{}@%$#";

bool zsec_key_valid(const char *text)
{
    if (!text || strlen(text) != ZSEC_KEY_LEN)
        return false;
    for (int i = 0; i < ZSEC_KEY_LEN; i++)
        if (!strchr(s_z85_chars, text[i]))
            return false;
    uint8_t raw[32];
    return zmq_z85_decode(raw, text) != NULL;
}

shoal_err_t zsec_keys_generate(zsec_keys_t *keys)
{
    if (!zmq_has("curve"))
        return shoal_fail(SHOAL_ERR_IO, "this libzmq is built without CURVE (libsodium)");
    if (zmq_curve_keypair(keys->public_key, keys->secret_key) != 0)
        return shoal_fail(SHOAL_ERR_IO, "zmq_curve_keypair: %s", zmq_strerror(errno));
    return SHOAL_OK;
}

/* Writes text + "\n" to path with `mode`, never over an existing file (O_EXCL). */
static shoal_err_t s_write_new(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return shoal_fail(errno == EEXIST ? SHOAL_ERR_STATE : SHOAL_ERR_IO, "%s: %s%s", path,
                          strerror(errno), errno == EEXIST ? " (a key is never overwritten)" : "");
    char line[ZSEC_KEY_LEN + 2];
    snprintf(line, sizeof line, "%s\n", text);
    shoal_err_t rc = fsutil_write_all(fd, line, strlen(line), path);
    /* the umask may have narrowed the mode; the secret must not be wider either way */
    if (rc == SHOAL_OK && fchmod(fd, mode) != 0)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: chmod: %s", path, strerror(errno));
    if (rc == SHOAL_OK && fsync(fd) != 0)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: fsync: %s", path, strerror(errno));
    close(fd);
    return rc;
}

shoal_err_t zsec_keys_write(const char *dir, const zsec_keys_t *keys)
{
    char secret[4096], public[4096];
    shoal_err_t rc = fsutil_mkdir_p(dir);
    if (rc != SHOAL_OK)
        return rc;
    if (fsutil_path(secret, sizeof secret, "%s/%s", dir, ZSEC_SECRET_FILE) != SHOAL_OK ||
        fsutil_path(public, sizeof public, "%s/%s", dir, ZSEC_PUBLIC_FILE) != SHOAL_OK)
        return SHOAL_ERR_INVALID;
    if ((rc = s_write_new(secret, keys->secret_key, 0600)) != SHOAL_OK)
        return rc;
    unlink(public); /* a stale public key of no secret */
    if ((rc = s_write_new(public, keys->public_key, 0644)) != SHOAL_OK)
        return rc;
    return fsutil_fsync_dir(dir);
}

/* Reads a file holding one key (blanks around it ignored) into out. */
static shoal_err_t s_key_file(const char *path, char out[ZSEC_KEY_LEN + 1])
{
    uint8_t *data = NULL;
    size_t len = 0;
    shoal_err_t rc = fsutil_read_file(path, &data, &len);
    if (rc != SHOAL_OK)
        return rc;
    size_t a = 0, b = len;
    while (a < b && strchr(" \t\r\n", data[a]))
        a++;
    while (b > a && strchr(" \t\r\n", data[b - 1]))
        b--;
    char text[ZSEC_KEY_LEN + 1] = "";
    if (b - a == ZSEC_KEY_LEN)
        memcpy(text, data + a, ZSEC_KEY_LEN);
    free(data);
    if (!zsec_key_valid(text))
        return shoal_fail(SHOAL_ERR_INVALID, "%s: not a CURVE key (40 Z85 characters)", path);
    memcpy(out, text, ZSEC_KEY_LEN + 1);
    return SHOAL_OK;
}

shoal_err_t zsec_public_load(const char *path, char out[ZSEC_KEY_LEN + 1])
{
    return s_key_file(path, out);
}

shoal_err_t zsec_keys_load(const char *dir, zsec_keys_t *keys)
{
    char secret[4096], public[4096];
    if (fsutil_path(secret, sizeof secret, "%s/%s", dir, ZSEC_SECRET_FILE) != SHOAL_OK ||
        fsutil_path(public, sizeof public, "%s/%s", dir, ZSEC_PUBLIC_FILE) != SHOAL_OK)
        return SHOAL_ERR_INVALID;
    struct stat st;
    if (stat(secret, &st) != 0)
        return shoal_fail(errno == ENOENT ? SHOAL_ERR_NOTFOUND : SHOAL_ERR_IO,
                          "%s: %s (create a key pair with 'shoalctl keys new --out %s')", secret,
                          strerror(errno), dir);
    if (st.st_mode & 077)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "%s: mode %03o lets others read the secret key (chmod 600 it)", secret,
                          (unsigned)(st.st_mode & 0777));
    shoal_err_t rc = s_key_file(secret, keys->secret_key);
    if (rc != SHOAL_OK)
        return rc;
    if (zmq_curve_public(keys->public_key, keys->secret_key) != 0)
        return shoal_fail(SHOAL_ERR_IO, "%s: deriving the public key: %s", secret,
                          zmq_strerror(errno));
    char listed[ZSEC_KEY_LEN + 1];
    if (access(public, F_OK) == 0) {
        if ((rc = s_key_file(public, listed)) != SHOAL_OK)
            return rc;
        if (strcmp(listed, keys->public_key) != 0)
            return shoal_fail(SHOAL_ERR_INVALID, "%s does not belong to %s", public, secret);
    }
    return SHOAL_OK;
}

shoal_err_t zsec_server(void *sock, const zsec_keys_t *keys, const char *domain)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, keys->secret_key, ZSEC_KEY_LEN + 1) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) != 0)
        return shoal_fail(SHOAL_ERR_IO, "CURVE server setup (%s): %s", domain,
                          zmq_strerror(errno));
    return SHOAL_OK;
}

shoal_err_t zsec_client(void *sock, const zsec_keys_t *keys, const char *server_public)
{
    if (!zsec_key_valid(server_public))
        return shoal_fail(SHOAL_ERR_INVALID, "the server's public key is not a CURVE key");
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_public, ZSEC_KEY_LEN + 1) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, keys->public_key, ZSEC_KEY_LEN + 1) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, keys->secret_key, ZSEC_KEY_LEN + 1) != 0)
        return shoal_fail(SHOAL_ERR_IO, "CURVE client setup: %s", zmq_strerror(errno));
    return SHOAL_OK;
}

void zsec_msg_user(zmq_msg_t *msg, char out[ZSEC_USER_MAX])
{
    const char *u = zmq_msg_gets(msg, "User-Id");
    snprintf(out, ZSEC_USER_MAX, "%s", u ? u : "");
}

/* ---- the allow-list file ------------------------------------------------------------------ */

static bool s_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '.' || s[i] == '_' || s[i] == '-' || (s[i] >= '0' && s[i] <= '9') ||
              (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    return true;
}

const char *zsec_kind_name(zsec_kind_t kind)
{
    return kind == ZSEC_OPERATOR_ADMIN ? "admin" : kind == ZSEC_OPERATOR_READ ? "read" : "worker";
}

const zsec_entry_t *zsec_allow_find(const zsec_allow_t *a, const char *key)
{
    for (int i = 0; a && i < a->n; i++)
        if (strcmp(a->entries[i].key, key) == 0)
            return &a->entries[i];
    return NULL;
}

void zsec_allow_fini(zsec_allow_t *a)
{
    free(a->entries);
    a->entries = NULL;
    a->n = 0;
}

/* Parses one non-blank line into e. */
static shoal_err_t s_allow_line(char *line, const char *path, int lineno, zsec_entry_t *e)
{
    char *words[5];
    int n = 0;
    for (char *save = NULL, *w = strtok_r(line, " \t\r", &save); w;
         w = strtok_r(NULL, " \t\r", &save)) {
        if (n == 5)
            break;
        words[n++] = w;
    }
    memset(e, 0, sizeof *e);
    const char *key = NULL, *name = NULL;
    if (n == 3 && strcmp(words[0], "worker") == 0) {
        e->kind = ZSEC_WORKER;
        name = words[1];
        key = words[2];
    } else if (n == 4 && strcmp(words[0], "operator") == 0) {
        if (strcmp(words[1], "read") == 0)
            e->kind = ZSEC_OPERATOR_READ;
        else if (strcmp(words[1], "admin") == 0)
            e->kind = ZSEC_OPERATOR_ADMIN;
        else
            return shoal_fail(SHOAL_ERR_INVALID, "%s:%d: operator role '%s' is not read or admin",
                              path, lineno, words[1]);
        name = words[2];
        key = words[3];
    } else {
        return shoal_fail(SHOAL_ERR_INVALID,
                          "%s:%d: expected 'worker INSTITUTION KEY' or 'operator read|admin "
                          "NAME KEY'",
                          path, lineno);
    }
    if (!s_name_ok(name))
        return shoal_fail(SHOAL_ERR_INVALID, "%s:%d: name '%s' is not 1-63 of [A-Za-z0-9._-]",
                          path, lineno, name);
    if (!zsec_key_valid(key))
        return shoal_fail(SHOAL_ERR_INVALID, "%s:%d: '%s' is not a CURVE public key (40 Z85 "
                                             "characters)",
                          path, lineno, key);
    snprintf(e->name, sizeof e->name, "%s", name);
    memcpy(e->key, key, ZSEC_KEY_LEN + 1);
    return SHOAL_OK;
}

shoal_err_t zsec_allow_load(const char *path, zsec_allow_t *out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    shoal_err_t rc = fsutil_read_file(path, &data, &len);
    if (rc != SHOAL_OK)
        return rc;
    zsec_allow_t a = {NULL, 0};
    int cap = 0, lineno = 0;
    char *text = (char *)data, *save = NULL;
    if (memchr(data, '\0', len)) {
        free(data);
        return shoal_fail(SHOAL_ERR_INVALID, "%s: binary data (a NUL byte)", path);
    }
    char *buf = malloc(len + 1);
    if (!buf) {
        free(data);
        return shoal_fail(SHOAL_ERR_NOMEM, "%s", path);
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    free(data);
    /* strtok_r would skip empty lines and lose the numbering: walk by hand */
    for (char *line = buf; line && rc == SHOAL_OK; line = save) {
        save = strchr(line, '\n');
        if (save)
            *save++ = '\0';
        lineno++;
        /* '#' is a Z85 character too: a comment starts only where a word would */
        for (char *p = line; *p; p++)
            if (*p == '#' && (p == line || p[-1] == ' ' || p[-1] == '\t')) {
                *p = '\0';
                break;
            }
        if (strspn(line, " \t\r") == strlen(line))
            continue;
        zsec_entry_t e;
        if ((rc = s_allow_line(line, path, lineno, &e)) != SHOAL_OK)
            break;
        const zsec_entry_t *dup = zsec_allow_find(&a, e.key);
        if (dup) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "%s:%d: key already listed (as %s %s)", path,
                            lineno, zsec_kind_name(dup->kind), dup->name);
            break;
        }
        if (a.n == cap) {
            cap = cap ? 2 * cap : 16;
            zsec_entry_t *v = realloc(a.entries, (size_t)cap * sizeof *v);
            if (!v) {
                rc = shoal_fail(SHOAL_ERR_NOMEM, "%s", path);
                break;
            }
            a.entries = v;
        }
        a.entries[a.n++] = e;
    }
    free(buf);
    if (rc != SHOAL_OK) {
        zsec_allow_fini(&a);
        return rc;
    }
    zsec_allow_fini(out);
    *out = a;
    return SHOAL_OK;
}

/* ---- the ZAP handler ---------------------------------------------------------------------- */

/* Held handshakes are looked at again this often (a new list, or their deadline). */
#define ZAP_HOLD_TICK_MS 50
/* Keys whose denial was logged in the last minute (older ones are forgotten first). */
#define ZAP_LOGGED_MAX 64
#define ZAP_LOG_EVERY_MS 60000

typedef struct {
    char name[ZAP_DOMAIN_MAX];
    bool any;
    int hold_ms; /* > 0: an unknown key waits this long for a list that admits it */
    zsec_vouch_fn vouch; /* asked about keys the list does not name (NULL: none) */
    void *vouch_arg;
    zsec_rule_t *rules;
    int n;
} s_domain_t;

/* A ZAP request waiting for its answer (routing id and request id kept to address it). */
typedef struct {
    zmq_msg_t rid, reqid;
    char domain[ZAP_DOMAIN_MAX];
    uint8_t key[32];
    int64_t deadline_ms;
} s_held_t;

typedef struct {
    char key[ZSEC_KEY_LEN + 1];
    int64_t at_ms;
} s_logged_t;

struct zsec_zap {
    void *router;    /* bound to ZAP_ENDPOINT, used by the thread only */
    void *stop_tx;   /* destroy writes here */
    void *stop_rx;   /* the thread polls this */
    pthread_t thread;
    bool started;
    pthread_mutex_t lock; /* guards domains: set from the owner's thread, read by the handler */
    s_domain_t domains[ZAP_MAX_DOMAINS];
    int n_domains;
    atomic_ullong denied;
    /* the handler thread's own */
    s_held_t held[ZSEC_HOLD_MAX];
    int n_held;
    s_logged_t logged[ZAP_LOGGED_MAX];
};

typedef enum { S_DENY, S_ADMIT, S_HOLD } s_verdict_t;

/* The admission of `key` (32 bytes) in `domain`: on S_ADMIT the User-Id is written to user;
 * S_HOLD when the domain holds unknown keys (*hold_ms says how long). */
static s_verdict_t s_admit(zsec_zap_t *z, const char *domain, const uint8_t *key, char *user,
                           size_t cap, int *hold_ms)
{
    char text[ZSEC_KEY_LEN + 1];
    if (!zmq_z85_encode(text, key, 32))
        return S_DENY;
    s_verdict_t v = S_DENY;
    *hold_ms = 0;
    zsec_vouch_fn vouch = NULL;
    void *vouch_arg = NULL;
    int vouch_hold_ms = 0;
    pthread_mutex_lock(&z->lock);
    for (int i = 0; i < z->n_domains && v != S_ADMIT; i++) {
        s_domain_t *d = &z->domains[i];
        if (strcmp(d->name, domain) != 0)
            continue;
        if (d->any) {
            snprintf(user, cap, "%s", text);
            v = S_ADMIT;
        }
        for (int k = 0; k < d->n && v != S_ADMIT; k++)
            if (strcmp(d->rules[k].key, text) == 0) {
                snprintf(user, cap, "%s", d->rules[k].user);
                v = S_ADMIT;
            }
        if (v != S_ADMIT && d->vouch) {
            vouch = d->vouch;
            vouch_arg = d->vouch_arg;
            vouch_hold_ms = d->hold_ms;
        } else if (v != S_ADMIT && d->hold_ms > 0) {
            v = S_HOLD;
            *hold_ms = d->hold_ms;
        }
    }
    pthread_mutex_unlock(&z->lock);
    if (v == S_ADMIT || !vouch)
        return v;
    /* asked outside the lock: the voucher takes its own */
    switch (vouch(vouch_arg, text, user, cap)) {
    case ZSEC_VOUCH_ADMIT:
        return S_ADMIT;
    case ZSEC_VOUCH_DENY:
        return S_DENY;
    default:
        *hold_ms = vouch_hold_ms;
        return vouch_hold_ms > 0 ? S_HOLD : S_DENY;
    }
}

/* Logs a denial once per key per minute: a stranger that keeps dialling cannot flood the log. */
static void s_log_denied(zsec_zap_t *z, const uint8_t *key, const char *domain)
{
    char text[ZSEC_KEY_LEN + 1];
    if (!zmq_z85_encode(text, key, 32))
        return;
    int64_t now = clock_mono_ms();
    int slot = 0;
    for (int i = 0; i < ZAP_LOGGED_MAX; i++) {
        if (strcmp(z->logged[i].key, text) == 0) {
            if (now - z->logged[i].at_ms < ZAP_LOG_EVERY_MS)
                return;
            slot = i;
            break;
        }
        if (z->logged[i].at_ms < z->logged[slot].at_ms)
            slot = i; /* the oldest (or an empty one) */
    }
    snprintf(z->logged[slot].key, sizeof z->logged[slot].key, "%s", text);
    z->logged[slot].at_ms = now;
    log_warn("zap: denied CURVE key %s in domain '%s' (not on its allow-list; logged once a "
             "minute per key, %llu denied so far)",
             text, domain, (unsigned long long)atomic_load(&z->denied));
}

static void s_send_str(void *sock, const void *s, size_t n, int more)
{
    zmq_send(sock, s, n, more ? ZMQ_SNDMORE : 0);
}

/* Answers the request of routing id `rid` and request id `reqid`. */
static void s_reply(zsec_zap_t *z, zmq_msg_t *rid, zmq_msg_t *reqid, bool ok, const char *user)
{
    s_send_str(z->router, zmq_msg_data(rid), zmq_msg_size(rid), 1);
    s_send_str(z->router, "", 0, 1);
    s_send_str(z->router, "1.0", 3, 1);
    s_send_str(z->router, zmq_msg_data(reqid), zmq_msg_size(reqid), 1);
    s_send_str(z->router, ok ? "200" : "400", 3, 1);
    s_send_str(z->router, ok ? "OK" : "key not allowed", ok ? 2 : 15, 1);
    s_send_str(z->router, user, strlen(user), 1);
    s_send_str(z->router, "", 0, 0);
}

/* Answers a denial (counted and logged). */
static void s_deny(zsec_zap_t *z, zmq_msg_t *rid, zmq_msg_t *reqid, const uint8_t *key,
                   const char *domain)
{
    atomic_fetch_add(&z->denied, 1);
    if (key)
        s_log_denied(z, key, domain);
    s_reply(z, rid, reqid, false, "");
}

/* Reads one ZAP request (all its frames) and answers it, or holds it. */
static void s_zap_request(zsec_zap_t *z)
{
    /* routing id, delimiter, version, request id, domain, address, identity, mechanism,
     * credentials */
    enum { NFRAMES = 10 };
    zmq_msg_t f[NFRAMES];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, z->router, 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        if (n < NFRAMES) {
            zmq_msg_init(&f[n]);
            zmq_msg_move(&f[n++], &part);
        }
        zmq_msg_close(&part);
    }
    if (n < 4)
        goto out; /* not a ZAP request: nothing to address an answer to */
    char domain[ZAP_DOMAIN_MAX] = "", user[ZSEC_USER_MAX] = "";
    const uint8_t *key = NULL;
    if (n == 9 && zmq_msg_size(&f[7]) == 5 && memcmp(zmq_msg_data(&f[7]), "CURVE", 5) == 0 &&
        zmq_msg_size(&f[8]) == 32 && zmq_msg_size(&f[4]) < sizeof domain) {
        memcpy(domain, zmq_msg_data(&f[4]), zmq_msg_size(&f[4]));
        key = zmq_msg_data(&f[8]);
    }
    int hold_ms = 0;
    s_verdict_t v = key ? s_admit(z, domain, key, user, sizeof user, &hold_ms) : S_DENY;
    if (v == S_HOLD && z->n_held < ZSEC_HOLD_MAX) {
        s_held_t *h = &z->held[z->n_held++];
        zmq_msg_init(&h->rid);
        zmq_msg_init(&h->reqid);
        zmq_msg_move(&h->rid, &f[0]);
        zmq_msg_move(&h->reqid, &f[3]);
        snprintf(h->domain, sizeof h->domain, "%s", domain);
        memcpy(h->key, key, 32);
        h->deadline_ms = clock_mono_ms() + hold_ms;
    } else if (v == S_ADMIT) {
        s_reply(z, &f[0], &f[3], true, user);
    } else {
        s_deny(z, &f[0], &f[3], key, domain);
    }
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

/* Answers the held requests that the lists now admit or whose time is up. */
static void s_zap_review(zsec_zap_t *z)
{
    int64_t now = clock_mono_ms();
    int k = 0;
    for (int i = 0; i < z->n_held; i++) {
        s_held_t *h = &z->held[i];
        char user[ZSEC_USER_MAX] = "";
        int hold_ms;
        s_verdict_t v = s_admit(z, h->domain, h->key, user, sizeof user, &hold_ms);
        if (v == S_HOLD && now < h->deadline_ms) {
            if (k != i) {
                s_held_t *to = &z->held[k];
                zmq_msg_init(&to->rid);
                zmq_msg_init(&to->reqid);
                zmq_msg_move(&to->rid, &h->rid);
                zmq_msg_move(&to->reqid, &h->reqid);
                zmq_msg_close(&h->rid);
                zmq_msg_close(&h->reqid);
                memcpy(to->domain, h->domain, sizeof to->domain);
                memcpy(to->key, h->key, sizeof to->key);
                to->deadline_ms = h->deadline_ms;
            }
            k++;
            continue;
        }
        if (v == S_ADMIT)
            s_reply(z, &h->rid, &h->reqid, true, user);
        else
            s_deny(z, &h->rid, &h->reqid, h->key, h->domain);
        zmq_msg_close(&h->rid);
        zmq_msg_close(&h->reqid);
    }
    z->n_held = k;
}

static void *s_zap_thread(void *arg)
{
    zsec_zap_t *z = arg;
    for (;;) {
        zmq_pollitem_t items[2] = {{z->router, 0, ZMQ_POLLIN, 0},
                                   {z->stop_rx, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, z->n_held ? ZAP_HOLD_TICK_MS : -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (items[1].revents & ZMQ_POLLIN)
            break;
        if (items[0].revents & ZMQ_POLLIN)
            s_zap_request(z);
        if (z->n_held)
            s_zap_review(z);
    }
    for (int i = 0; i < z->n_held; i++) {
        zmq_msg_close(&z->held[i].rid);
        zmq_msg_close(&z->held[i].reqid);
    }
    z->n_held = 0;
    zmq_close(z->router);
    zmq_close(z->stop_rx);
    return NULL;
}

shoal_err_t zsec_zap_new(void *zctx, zsec_zap_t **out)
{
    *out = NULL;
    zsec_zap_t *z = calloc(1, sizeof *z);
    if (!z)
        return shoal_fail(SHOAL_ERR_NOMEM, "zap handler");
    pthread_mutex_init(&z->lock, NULL);
    atomic_init(&z->denied, 0);
    char stop_ep[64];
    snprintf(stop_ep, sizeof stop_ep, "inproc://zsec-stop-%p", (void *)z);
    int linger = 0;
    z->router = zmq_socket(zctx, ZMQ_ROUTER);
    z->stop_rx = zmq_socket(zctx, ZMQ_PAIR);
    z->stop_tx = zmq_socket(zctx, ZMQ_PAIR);
    if (!z->router || !z->stop_rx || !z->stop_tx || zmq_bind(z->router, ZAP_ENDPOINT) != 0 ||
        zmq_bind(z->stop_rx, stop_ep) != 0 || zmq_connect(z->stop_tx, stop_ep) != 0) {
        shoal_err_t rc = shoal_fail(SHOAL_ERR_IO, "zap handler: %s", zmq_strerror(errno));
        if (z->router)
            zmq_close(z->router);
        if (z->stop_rx)
            zmq_close(z->stop_rx);
        z->router = z->stop_rx = NULL;
        zsec_zap_destroy(&z);
        return rc;
    }
    zmq_setsockopt(z->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(z->stop_tx, ZMQ_LINGER, &linger, sizeof linger);
    if (pthread_create(&z->thread, NULL, s_zap_thread, z) != 0) {
        zmq_close(z->router);
        zmq_close(z->stop_rx);
        z->router = z->stop_rx = NULL;
        zsec_zap_destroy(&z);
        return shoal_fail(SHOAL_ERR_IO, "zap handler: cannot start its thread");
    }
    z->started = true;
    *out = z;
    return SHOAL_OK;
}

void zsec_zap_destroy(zsec_zap_t **zp)
{
    zsec_zap_t *z = *zp;
    if (!z)
        return;
    if (z->started) {
        zmq_send(z->stop_tx, "", 0, 0);
        pthread_join(z->thread, NULL);
    }
    if (z->stop_tx)
        zmq_close(z->stop_tx);
    for (int i = 0; i < z->n_domains; i++)
        free(z->domains[i].rules);
    pthread_mutex_destroy(&z->lock);
    free(z);
    *zp = NULL;
}

/* The slot of `domain` (created when missing); NULL when the table is full. Under the lock. */
static s_domain_t *s_domain(zsec_zap_t *z, const char *domain)
{
    for (int i = 0; i < z->n_domains; i++)
        if (strcmp(z->domains[i].name, domain) == 0)
            return &z->domains[i];
    if (z->n_domains == ZAP_MAX_DOMAINS)
        return NULL;
    s_domain_t *d = &z->domains[z->n_domains++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", domain);
    return d;
}

shoal_err_t zsec_zap_set(zsec_zap_t *z, const char *domain, const zsec_rule_t *rules, int n)
{
    if (strlen(domain) >= ZAP_DOMAIN_MAX)
        return shoal_fail(SHOAL_ERR_INVALID, "zap domain '%s' too long", domain);
    zsec_rule_t *copy = n > 0 ? malloc((size_t)n * sizeof *copy) : NULL;
    if (n > 0 && !copy)
        return shoal_fail(SHOAL_ERR_NOMEM, "zap rules");
    if (n > 0)
        memcpy(copy, rules, (size_t)n * sizeof *copy);
    pthread_mutex_lock(&z->lock);
    s_domain_t *d = s_domain(z, domain);
    if (d) {
        free(d->rules);
        d->rules = copy;
        d->n = n;
        d->any = false;
    }
    pthread_mutex_unlock(&z->lock);
    if (!d) {
        free(copy);
        return shoal_fail(SHOAL_ERR_STATE, "zap: more than %d domains", ZAP_MAX_DOMAINS);
    }
    return SHOAL_OK;
}

/* Locks the handler's lists and gives the slot of `domain` (created when missing); on error
 * nothing is locked. */
static shoal_err_t s_domain_locked(zsec_zap_t *z, const char *domain, s_domain_t **out)
{
    if (strlen(domain) >= ZAP_DOMAIN_MAX)
        return shoal_fail(SHOAL_ERR_INVALID, "zap domain '%s' too long", domain);
    pthread_mutex_lock(&z->lock);
    if (!(*out = s_domain(z, domain))) {
        pthread_mutex_unlock(&z->lock);
        return shoal_fail(SHOAL_ERR_STATE, "zap: more than %d domains", ZAP_MAX_DOMAINS);
    }
    return SHOAL_OK;
}

shoal_err_t zsec_zap_allow_any(zsec_zap_t *z, const char *domain)
{
    s_domain_t *d;
    shoal_err_t rc = s_domain_locked(z, domain, &d);
    if (rc != SHOAL_OK)
        return rc;
    d->any = true;
    pthread_mutex_unlock(&z->lock);
    return SHOAL_OK;
}

shoal_err_t zsec_zap_hold(zsec_zap_t *z, const char *domain, int hold_ms)
{
    s_domain_t *d;
    shoal_err_t rc = s_domain_locked(z, domain, &d);
    if (rc != SHOAL_OK)
        return rc;
    d->hold_ms = hold_ms > 0 ? hold_ms : 0;
    pthread_mutex_unlock(&z->lock);
    return SHOAL_OK;
}

shoal_err_t zsec_zap_vouch(zsec_zap_t *z, const char *domain, zsec_vouch_fn fn, void *arg)
{
    s_domain_t *d;
    shoal_err_t rc = s_domain_locked(z, domain, &d);
    if (rc != SHOAL_OK)
        return rc;
    d->vouch = fn;
    d->vouch_arg = arg;
    pthread_mutex_unlock(&z->lock);
    return SHOAL_OK;
}

unsigned long long zsec_zap_denied(const zsec_zap_t *z)
{
    return atomic_load(&((zsec_zap_t *)z)->denied);
}
