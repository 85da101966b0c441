/* coord_keys.c: the coordinator's CURVE side: its key pair, the allow-list of worker keys (by
 * institution) and operator keys (read or admin), the ZAP handler that admits only those, the
 * allow-list reload (SIGHUP, shoalctl keys reload) and the control roles. ops/SECURITY.md. */
#include "coord_int.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static int s_is_tcp(const char *endpoint)
{
    return strncmp(endpoint, "tcp://", 6) == 0;
}

/* Hands the allow-list to the ZAP handler: workers get their key as User-Id (the coordinator
 * publishes it in plans), operators "ROLE:NAME". */
static shoal_err_t s_zap_rules(coord_t *c, const zsec_allow_t *a)
{
    zsec_rule_t *rules = calloc((size_t)(a->n ? a->n : 1), sizeof *rules);
    if (!rules)
        return shoal_fail(SHOAL_ERR_NOMEM, "allow-list");
    int nw = 0, no = 0;
    for (int i = 0; i < a->n; i++)
        if (a->entries[i].kind == ZSEC_WORKER) {
            snprintf(rules[nw].key, sizeof rules[nw].key, "%s", a->entries[i].key);
            snprintf(rules[nw].user, sizeof rules[nw].user, "%s", a->entries[i].key);
            nw++;
        }
    shoal_err_t rc = zsec_zap_set(c->zap, COORD_ZAP_WORKERS, rules, nw);
    for (int i = 0; i < a->n; i++)
        if (a->entries[i].kind != ZSEC_WORKER) {
            snprintf(rules[no].key, sizeof rules[no].key, "%s", a->entries[i].key);
            snprintf(rules[no].user, sizeof rules[no].user, "%s:%s",
                     zsec_kind_name(a->entries[i].kind), a->entries[i].name);
            no++;
        }
    if (rc == SHOAL_OK)
        rc = zsec_zap_set(c->zap, COORD_ZAP_CONTROL, rules, no);
    free(rules);
    if (rc == SHOAL_OK)
        log_info("allow-list %s: %d worker key(s), %d operator key(s)", c->cfg.allow_list, nw,
                 no);
    return rc;
}

shoal_err_t coord_keys_open(coord_t *c)
{
    const coord_config_t *cfg = &c->cfg;
    const int tcp = s_is_tcp(cfg->listen) || s_is_tcp(cfg->control);
    /* keys, when configured, win over insecure (SHOAL_INSECURE=1 from a harness included) */
    if (cfg->insecure && !(cfg->keys_dir[0] && cfg->allow_list[0])) {
        if (tcp)
            log_warn("--insecure: plaintext TCP on %s%s%s: anyone who reaches these ports can "
                     "register a worker or send control requests",
                     s_is_tcp(cfg->listen) ? cfg->listen : "",
                     s_is_tcp(cfg->listen) && s_is_tcp(cfg->control) ? " and " : "",
                     s_is_tcp(cfg->control) ? cfg->control : "");
        return SHOAL_OK;
    }
    if (!cfg->keys_dir[0] && !cfg->allow_list[0])
        return SHOAL_OK; /* ipc only (config_finish refused TCP without keys) */
    if (!cfg->keys_dir[0] || !cfg->allow_list[0])
        return shoal_fail(SHOAL_ERR_INVALID, "CURVE needs both keys_dir and allow_list");
    shoal_err_t rc = zsec_keys_load(cfg->keys_dir, &c->keys);
    if (rc != SHOAL_OK)
        return shoal_fail_context(rc, "keys_dir");
    if ((rc = zsec_allow_load(cfg->allow_list, &c->allow)) != SHOAL_OK)
        return shoal_fail_context(rc, "allow_list");
    if ((rc = zsec_zap_new(c->zctx, &c->zap)) != SHOAL_OK)
        return rc;
    if ((rc = s_zap_rules(c, &c->allow)) != SHOAL_OK)
        return rc;
    if (s_is_tcp(cfg->listen) &&
        (rc = zsec_server(c->wsock, &c->keys, COORD_ZAP_WORKERS)) != SHOAL_OK)
        return rc;
    if (s_is_tcp(cfg->control) &&
        (rc = zsec_server(c->csock, &c->keys, COORD_ZAP_CONTROL)) != SHOAL_OK)
        return rc;
    log_info("CURVE on, public key %s (workers and shoalctl need it)", c->keys.public_key);
    return SHOAL_OK;
}

void coord_keys_close(coord_t *c)
{
    zsec_zap_destroy(&c->zap);
    zsec_allow_fini(&c->allow);
    memset(&c->keys, 0, sizeof c->keys);
}

shoal_err_t coord_keys_reload(coord_t *c)
{
    if (!c->zap)
        return shoal_fail(SHOAL_ERR_STATE, "no allow-list to reload: CURVE is off (%s)",
                          c->cfg.insecure ? "--insecure" : "no TCP endpoint");
    zsec_allow_t fresh = {NULL, 0};
    shoal_err_t rc = zsec_allow_load(c->cfg.allow_list, &fresh);
    if (rc == SHOAL_OK)
        rc = s_zap_rules(c, &fresh);
    if (rc != SHOAL_OK) {
        zsec_allow_fini(&fresh);
        /* a half-applied list is never left behind: put the old one back */
        (void)s_zap_rules(c, &c->allow);
        return shoal_fail_context(rc, "allow-list reload refused, the previous list stays");
    }
    for (int i = 0; i < c->allow.n; i++)
        if (c->allow.entries[i].kind == ZSEC_WORKER &&
            !zsec_allow_find(&fresh, c->allow.entries[i].key))
            coord_keys_revoke(c, c->allow.entries[i].key, "removed from the allow-list");
    zsec_allow_fini(&c->allow);
    c->allow = fresh;
    coord_ledger(c, "", "keys_reload",
                 json_pack("{s:s, s:i}", "allow_list", c->cfg.allow_list, "keys", fresh.n));
    (void)coord_txn_commit(c);
    return SHOAL_OK;
}

shoal_err_t coord_reload_keys(coord_t *c)
{
    return coord_keys_reload(c);
}

int coord_keys_may(const wire_route_t *route, int type)
{
    if (!route->user[0] || strncmp(route->user, "admin:", 6) == 0)
        return 1;
    if (strncmp(route->user, "read:", 5) != 0)
        return 0;
    switch (type) {
    case SHOAL__MSG_TYPE__MSG_CTL_STATUS:
    case SHOAL__MSG_TYPE__MSG_CTL_WORKERS:
    case SHOAL__MSG_TYPE__MSG_CTL_EVENTS:
    case SHOAL__MSG_TYPE__MSG_CTL_HISTORY:
    case SHOAL__MSG_TYPE__MSG_CTL_PLAN:
    case SHOAL__MSG_TYPE__MSG_CTL_VERIFY:
    case SHOAL__MSG_TYPE__MSG_CTL_EXPERTS:
        return 1;
    default:
        return 0;
    }
}

/* Why `key` may not fetch shards ("" when it may; *holder then the live worker holding it). */
static void s_key_refusal(coord_t *c, const char *key, const coord_worker_t **holder, char *why,
                          size_t cap)
{
    *holder = NULL;
    why[0] = 0;
    const zsec_entry_t *e = zsec_allow_find(&c->allow, key);
    if (!c->zap) {
        snprintf(why, cap, "CURVE is off at the coordinator");
        return;
    }
    if (!e || e->kind != ZSEC_WORKER) {
        snprintf(why, cap, "not a worker key of the allow-list");
        return;
    }
    /* a key may have served several worker records (a rename, a re-registration): any live
     * one quarantined refuses it */
    for (int i = 0; i < c->n_workers; i++) {
        const coord_worker_t *p = c->workers[i];
        if (!coord_worker_is_live(p->state) || strcmp(p->public_key, key) != 0)
            continue;
        if (p->state == WORKER_QUARANTINED) {
            snprintf(why, cap, "worker %s is quarantined", p->id);
            *holder = NULL;
            return;
        }
        *holder = p;
    }
    if (!*holder)
        snprintf(why, cap, "no live worker holds it");
}

/* A KeyAnswer envelope about `key` in *env (pointing at *a). */
static void s_key_answer(Shoal__Envelope *env, Shoal__KeyAnswer *a, const char *key,
                         const coord_worker_t *holder, const char *why)
{
    Shoal__KeyAnswer init = SHOAL__KEY_ANSWER__INIT;
    *a = init;
    a->public_key = (char *)key;
    a->admitted = holder != NULL;
    a->worker_id = holder ? (char *)holder->id : "";
    a->reason = (char *)why;
    wire_envelope_init(env, SHOAL__MSG_TYPE__MSG_KEY_ANSWER, "", COORD_SENDER, 0, 0);
    env->body_case = SHOAL__ENVELOPE__BODY_KEY_ANSWER;
    env->key_answer = a;
}

void coord_on_key_query(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                        coord_run_t *unused_r, const Shoal__Envelope *env)
{
    (void)unused_r;
    const char *key = env->key_query->public_key;
    const coord_worker_t *holder = NULL;
    char why[128];
    s_key_refusal(c, key, &holder, why, sizeof why);
    if (!holder)
        log_info("key query from %s: key %.40s refused: %s", w->id, key, why);
    Shoal__Envelope out;
    Shoal__KeyAnswer a;
    s_key_answer(&out, &a, key, holder, why);
    coord_send(c, c->wsock, route, &out);
}

/* Tells every live worker's shard server what the coordinator now says of key: refused
 * (holder NULL) or admitted as holder's. Returns how many were told. */
static int s_keys_push(coord_t *c, const char *key, const coord_worker_t *holder, const char *why)
{
    int told = 0;
    for (int i = 0; i < c->n_workers; i++) {
        coord_worker_t *w = c->workers[i];
        if (!coord_worker_is_live(w->state) || !w->shard_endpoint[0])
            continue;
        Shoal__Envelope out;
        Shoal__KeyAnswer a;
        s_key_answer(&out, &a, key, holder, why);
        coord_send_worker(c, w, &out);
        told++;
    }
    return told;
}

void coord_keys_revoke(coord_t *c, const char *key, const char *why)
{
    if (!c->zap || !zsec_key_valid(key))
        return;
    const int told = s_keys_push(c, key, NULL, why);
    log_info("key %s revoked for the shard servers (%s): %d worker(s) told", key, why, told);
}

void coord_keys_readmit(coord_t *c, const char *key)
{
    if (!c->zap || !zsec_key_valid(key))
        return;
    const coord_worker_t *holder = NULL;
    char why[128];
    s_key_refusal(c, key, &holder, why, sizeof why);
    if (!holder)
        return; /* still refused (another record of the key is quarantined, or it is unlisted) */
    const int told = s_keys_push(c, key, holder, "");
    log_info("key %s admitted again for the shard servers (worker %s): %d worker(s) told", key,
             holder->id, told);
}

void coord_keys_ipc_perms(const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return;
    const char *path = endpoint + 6;
    struct group *g = getgrnam("shoal");
    if (g && chown(path, (uid_t)-1, g->gr_gid) != 0)
        log_warn("%s: cannot give it to group shoal: %s", path, strerror(errno));
    if (chmod(path, 0660) != 0)
        log_warn("%s: chmod 0660: %s", path, strerror(errno));
}
