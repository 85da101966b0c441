/* keys.c: `shoalctl keys new --out DIR` (a CURVE key pair for a coordinator, a worker or an
 * operator) and `shoalctl keys reload` (the coordinator re-reads its allow-list). ops/SECURITY.md.
 */
#include <stdio.h>
#include <string.h>

#include "shoalctl.h"
#include "zsec.h"

static const char s_new_usage[] =
    "usage: shoalctl keys new --out DIR [--json]\n"
    "  Writes DIR/" ZSEC_SECRET_FILE " (secret, mode 0600; never overwrites one) and\n"
    "  DIR/" ZSEC_PUBLIC_FILE " (public, 40 Z85 characters), and prints the public key.\n"
    "  List the public key in the coordinator's allow-list (worker INSTITUTION KEY, or\n"
    "  operator read|admin NAME KEY); give workers and operators the coordinator's\n"
    "  key.public as DIR/coordinator.public.\n";

static const char s_reload_usage[] =
    "usage: shoalctl keys reload [--json]\n"
    "  Makes the coordinator re-read its allow-list (as SIGHUP does). A bad file is refused\n"
    "  with its error and the previous list stays in force. Needs an admin key over TCP.\n";

int cmd_keys_new(ctl_opts_t *o, int argc, char **argv)
{
    const char *out = NULL;
    const ctl_optdef_t defs[] = {{"out", true, &out, NULL}, {NULL, false, NULL, NULL}};
    const char *pos[1];
    int n_pos = 0;
    int ex = ctl_parse_args(o, argc, argv, defs, s_new_usage, pos, 0, &n_pos);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    if (!out)
        return ctl_usage_error(o, s_new_usage, "--out DIR is required");
    zsec_keys_t keys;
    shoal_err_t rc = zsec_keys_generate(&keys);
    if (rc == SHOAL_OK)
        rc = zsec_keys_write(out, &keys);
    memset(keys.secret_key, 0, sizeof keys.secret_key);
    if (rc != SHOAL_OK)
        return ctl_error(o, "%s", shoal_errmsg());
    if (o->json) {
        json_t *doc = json_pack("{s:s, s:s}", "public_key", keys.public_key, "dir", out);
        ctl_print_json(doc);
        json_decref(doc);
    } else {
        printf("wrote %s/%s (secret, 0600) and %s/%s\npublic key %s\n", out, ZSEC_SECRET_FILE,
               out, ZSEC_PUBLIC_FILE, keys.public_key);
    }
    return CTL_EXIT_OK;
}

int cmd_keys_reload(ctl_opts_t *o, int argc, char **argv)
{
    const char *pos[1];
    int n_pos = 0;
    int ex = ctl_parse_args(o, argc, argv, NULL, s_reload_usage, pos, 0, &n_pos);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    ctl_client_t *c = ctl_connect(o);
    if (!c)
        return CTL_EXIT_ERROR;
    ctl_reply_t reply = {0};
    shoal_err_t rc = ctl_client_keys_reload(c, &reply);
    ctl_client_destroy(&c);
    ex = ctl_check_reply(o, rc, &reply);
    if (ex == CTL_EXIT_OK) {
        if (o->json)
            printf("%s\n", reply.json);
        else
            printf("%s\n", reply.message);
    }
    ctl_reply_fini(&reply);
    return ex;
}
