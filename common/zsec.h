/* zsec.h: ZeroMQ CURVE for shoal's TCP sockets: key pairs in files, socket setup, the allow-list
 * file of the coordinator, and a ZAP handler (RFC 27) that admits keys per domain.
 *
 * Keys are Z85 text (40 characters, zmq_z85_encode of 32 bytes). A key directory holds
 * key.secret (mode 0600) and key.public; zsec_keys_new writes them, zsec_keys_load reads them
 * (refusing a secret readable by group or others) and derives the public key from the secret.
 *
 * The ZAP handler answers the requests libzmq sends to inproc://zeromq.zap.01 of one context
 * while a CURVE server socket of that context handshakes. Per ZAP domain it either admits the
 * keys of a list (each with the User-Id it is given) or any key (User-Id = the key's Z85 text);
 * requests of other domains are denied; a domain may hold unknown keys for a while
 * (zsec_zap_hold). The receiver reads a message's User-Id with
 * zsec_msg_user. Lists are replaced atomically (zsec_zap_set) while the handler runs. */
#ifndef SHOAL_ZSEC_H
#define SHOAL_ZSEC_H

#include <stdbool.h>
#include <stddef.h>

#include <zmq.h>

#include "err.h"

#define ZSEC_KEY_LEN 40          /* Z85 characters of a key */
#define ZSEC_USER_MAX 128        /* User-Id bytes kept, with the NUL */
#define ZSEC_SECRET_FILE "key.secret"
#define ZSEC_PUBLIC_FILE "key.public"

typedef struct {
    char public_key[ZSEC_KEY_LEN + 1];
    char secret_key[ZSEC_KEY_LEN + 1];
} zsec_keys_t;

/* Whether `text` is a well-formed Z85 key (exactly 40 characters of the Z85 alphabet). */
bool zsec_key_valid(const char *text);

/* A fresh key pair. SHOAL_ERR_IO when libzmq lacks CURVE. */
shoal_err_t zsec_keys_generate(zsec_keys_t *keys);

/* Writes `keys` as DIR/key.secret (0600) and DIR/key.public (0644), creating DIR (0700) when
 * missing. Refuses (SHOAL_ERR_STATE) to overwrite an existing key.secret. */
shoal_err_t zsec_keys_write(const char *dir, const zsec_keys_t *keys);

/* Reads DIR/key.secret, derives the public key and, when DIR/key.public exists, checks that it
 * matches. SHOAL_ERR_INVALID for a secret readable by group or others, a malformed key or a
 * mismatch; SHOAL_ERR_NOTFOUND when key.secret is missing. */
shoal_err_t zsec_keys_load(const char *dir, zsec_keys_t *keys);

/* Reads one public key (a file holding its Z85 text, surrounding blanks ignored) into out. */
shoal_err_t zsec_public_load(const char *path, char out[ZSEC_KEY_LEN + 1]);

/* Makes `sock` a CURVE server with `keys`, its handshakes sent to the ZAP domain `domain`.
 * Call before bind. */
shoal_err_t zsec_server(void *sock, const zsec_keys_t *keys, const char *domain);

/* Makes `sock` a CURVE client with `keys` that accepts only a server holding the secret of
 * `server_public`. Call before connect. */
shoal_err_t zsec_client(void *sock, const zsec_keys_t *keys, const char *server_public);

/* The User-Id the ZAP handler gave the connection a received message came on ("" when none:
 * plaintext or ipc without CURVE). Copies at most ZSEC_USER_MAX - 1 bytes. */
void zsec_msg_user(zmq_msg_t *msg, char out[ZSEC_USER_MAX]);

/* ---- the allow-list file -------------------------------------------------------------------
 * One entry a line; a '#' that starts a word starts a comment (Z85 keys may hold '#'):
 *   worker   INSTITUTION KEY      a worker key, grouped by institution
 *   operator ROLE NAME KEY        an operator key; ROLE is read or admin
 * Names are 1..63 characters of [A-Za-z0-9._-]. A key may be listed once. */
typedef enum { ZSEC_WORKER = 1, ZSEC_OPERATOR_READ, ZSEC_OPERATOR_ADMIN } zsec_kind_t;

typedef struct {
    zsec_kind_t kind;
    char name[64]; /* institution (workers) or operator name */
    char key[ZSEC_KEY_LEN + 1];
} zsec_entry_t;

typedef struct {
    zsec_entry_t *entries;
    int n;
} zsec_allow_t;

/* Parses the file at path into *out (replaced only on success; the caller frees it with
 * zsec_allow_fini). Errors name PATH:LINE. */
shoal_err_t zsec_allow_load(const char *path, zsec_allow_t *out);
void zsec_allow_fini(zsec_allow_t *a);
/* The entry of `key`, or NULL. */
const zsec_entry_t *zsec_allow_find(const zsec_allow_t *a, const char *key);
/* "read" or "admin" for an operator, "worker" otherwise. */
const char *zsec_kind_name(zsec_kind_t kind);

/* ---- the ZAP handler ------------------------------------------------------------------------ */
typedef struct zsec_zap zsec_zap_t;

/* One admitted key and the User-Id its connections get. */
typedef struct {
    char key[ZSEC_KEY_LEN + 1];
    char user[ZSEC_USER_MAX];
} zsec_rule_t;

/* Starts the handler thread on `zctx` (binds inproc://zeromq.zap.01: one handler a context).
 * Destroy it before terminating the context. */
shoal_err_t zsec_zap_new(void *zctx, zsec_zap_t **out);
/* Stops the thread; idempotent, nulls *z. */
void zsec_zap_destroy(zsec_zap_t **z);
/* Replaces the rules of `domain` (copied; n = 0 admits nobody). */
shoal_err_t zsec_zap_set(zsec_zap_t *z, const char *domain, const zsec_rule_t *rules, int n);
/* Admits any CURVE key in `domain`, with User-Id = its Z85 text. */
shoal_err_t zsec_zap_allow_any(zsec_zap_t *z, const char *domain);
/* Most handshakes held at once (zsec_zap_hold); more are denied at once. */
#define ZSEC_HOLD_MAX 64
/* In `domain`, a handshake whose key is not (yet) on the list is held for up to hold_ms, waiting
 * for a zsec_zap_set that admits it, then denied (0: denied at once, the default). libzmq never
 * retries a refused handshake, so a listener whose list follows a plan holds a peer that dialled
 * before the plan reached it (libzmq's handshake timeout, 30 s, bounds hold_ms). */
shoal_err_t zsec_zap_hold(zsec_zap_t *z, const char *domain, int hold_ms);
/* What a voucher says of a key the domain's list does not name. */
typedef enum { ZSEC_VOUCH_UNKNOWN = 0, ZSEC_VOUCH_ADMIT, ZSEC_VOUCH_DENY } zsec_vouch_t;
/* Asked, on the handler thread, about a key (Z85) not on the domain's list: ADMIT (the User-Id
 * written to user), DENY (denied at once, even in a holding domain), or UNKNOWN (held while the
 * domain holds, asked again every 50 ms until the hold ends). Must not call zsec_zap_*. */
typedef zsec_vouch_t (*zsec_vouch_fn)(void *arg, const char *key, char *user, size_t cap);
/* Consults fn(arg, ...) for the keys of `domain` its list does not admit (NULL: no voucher). */
shoal_err_t zsec_zap_vouch(zsec_zap_t *z, const char *domain, zsec_vouch_fn fn, void *arg);
/* Handshakes denied so far (each denial is logged once per key per minute). */
unsigned long long zsec_zap_denied(const zsec_zap_t *z);

#endif
