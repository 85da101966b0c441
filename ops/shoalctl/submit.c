/* submit.c: `shoalctl submit RUN.yaml`: validates the spec here (errors as FILE:LINE:COLUMN
 * before anything is sent), then hands it to the coordinator. */
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "fsutil.h"
#include "runspec.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl submit RUN.yaml [--json]\n"
    "  Validates RUN.yaml and submits it; prints the new run's id and name.\n"
    "  Relative data.files are resolved against RUN.yaml's directory before sending.\n";

char *submit_spec_text(const char *path, const char *raw, const runspec_t *resolved)
{
    runspec_t *as_written = malloc(sizeof(*as_written));
    if (!as_written)
        return NULL;
    bool same = runspec_load_string(raw, path, as_written) == SHOAL_OK &&
                as_written->n_data_files == resolved->n_data_files;
    for (int i = 0; same && i < resolved->n_data_files; i++)
        same = strcmp(as_written->data_files[i], resolved->data_files[i]) == 0;
    free(as_written);
    return same ? strdup(raw) : runspec_to_yaml(resolved);
}

int cmd_submit(ctl_opts_t *o, int argc, char **argv)
{
    const char *path;
    int ex = ctl_parse_target(o, argc, argv, NULL, s_usage, "RUN.yaml", &path);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;

    uint8_t *raw = NULL;
    size_t len = 0;
    char *text = NULL;
    ctl_client_t *c = NULL;
    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    runspec_t *spec = malloc(sizeof(*spec));
    ex = CTL_EXIT_ERROR;
    if (!spec) {
        ctl_error(o, "out of memory");
        goto out;
    }
    if (runspec_load_file(path, spec) != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg()); /* already "FILE:LINE:COLUMN: ..." */
        goto out;
    }
    if (fsutil_read_file(path, &raw, &len) != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    text = submit_spec_text(path, (const char *)raw, spec);
    if (!text) {
        ctl_error(o, "out of memory");
        goto out;
    }
    if (!(c = ctl_connect(o)))
        goto out;
    shoal_err_t rc = ctl_client_submit(c, text, path, &reply);
    if ((ex = ctl_check_reply(o, rc, &reply)) != CTL_EXIT_OK)
        goto out;
    if (!(doc = ctl_reply_doc(o, &reply))) {
        ex = CTL_EXIT_ERROR;
        goto out;
    }
    if (o->json) {
        json_t *out =
            json_pack("{s:o, s:s}", CTL_F_ID, json_string(ctl_json_str(doc, CTL_F_ID, "")),
                      CTL_F_NAME, spec->name);
        if (out)
            ctl_print_json(out);
        json_decref(out);
    } else {
        const char *id = ctl_json_str(doc, CTL_F_ID, NULL);
        if (id)
            printf("submitted run %s (%s)\n", id, spec->name);
        else
            printf("submitted run %s%s%s\n", spec->name, reply.message[0] ? ": " : "",
                   reply.message);
    }
out:
    json_decref(doc);
    ctl_reply_fini(&reply);
    ctl_client_destroy(&c);
    free(text);
    free(raw);
    free(spec);
    return ex;
}
