/* cmd_grads.c: `shoal-worker grads`, the verification entry of MODEL.md: the gradient of the
 * mean loss of one batch (no clipping, no optimizer step), written as safetensors. */
#include "commands.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas_select.h"
#include "model.h"
#include "model_dir.h"
#include "safetensors.h"

static void s_usage(FILE *f)
{
    fprintf(f, "usage: shoal-worker grads --model DIR --tokens FILE --batch B --seq T "
               "--out FILE.safetensors\n");
}

/* Reads the first B·(T+1) bytes of the token file into inputs and targets. */
static shoal_err_t s_read_tokens(const char *path, int B, int T, int V, int32_t *tok,
                                 int32_t *tgt)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: cannot open token file", path);
    const size_t need = (size_t)B * (T + 1);
    unsigned char *buf = malloc(need);
    size_t got = buf ? fread(buf, 1, need, f) : 0;
    fclose(f);
    shoal_err_t rc = SHOAL_OK;
    if (!buf) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
    } else if (got < need) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "%s: has %zu bytes, the batch needs B*(T+1) = %zu",
                        path, got, need);
    } else {
        for (int b = 0; b < B && rc == SHOAL_OK; b++) {
            const unsigned char *s = buf + (size_t)b * (T + 1);
            for (int t = 0; t < T; t++) {
                tok[b * T + t] = s[t];
                tgt[b * T + t] = s[t + 1];
            }
            for (int t = 0; t <= T; t++)
                if (s[t] >= V)
                    rc = shoal_fail(SHOAL_ERR_INVALID, "%s: byte %d is not in the vocabulary "
                                    "of %d", path, s[t], V);
        }
    }
    free(buf);
    return rc;
}

int cmd_grads(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokens", required_argument, 0, 't'},
        {"batch", required_argument, 0, 'b'}, {"seq", required_argument, 0, 's'},
        {"out", required_argument, 0, 'o'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model_dir = NULL, *tok_path = NULL, *out_path = NULL;
    int B = 0, T = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 't': tok_path = optarg; break;
        case 'b': B = commands_parse_count(optarg); break;
        case 's': T = commands_parse_count(optarg); break;
        case 'o': out_path = optarg; break;
        case 'h': s_usage(stdout); return 0;
        default: s_usage(stderr); return 2;
        }
    }
    if (!model_dir || !tok_path || !out_path || B < 1 || T < 1 || optind != argc) {
        s_usage(stderr);
        return 2;
    }
    blas_select_set_threads(1);
    blas_select_log("shoal-worker grads");
    model_config_t cfg;
    model_layout_t lay = {0};
    float *params = NULL, *grads = NULL;
    int32_t *tok = NULL, *tgt = NULL;
    int64_t *counts = NULL, n = 0;
    model_t *m = NULL;
    st_tensor_t *ts = NULL;
    int ret = 1;
    shoal_err_t rc;
    SHOAL_CHECK_GOTO(model_dir_load(model_dir, &cfg, &params, &n), rc, fail);
    SHOAL_CHECK_GOTO(model_layout_init(&lay, &cfg), rc, fail);
    if (T > cfg.max_position_embeddings) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "--seq %d exceeds max_position_embeddings %d", T,
                        cfg.max_position_embeddings);
        goto fail;
    }
    tok = malloc(sizeof(int32_t) * (size_t)B * T);
    tgt = malloc(sizeof(int32_t) * (size_t)B * T);
    grads = calloc((size_t)lay.n_params, sizeof(float));
    counts = calloc((size_t)lay.n_moe_layers * cfg.n_routed_experts + 1, sizeof(int64_t));
    ts = calloc((size_t)lay.n_tensors + 1, sizeof *ts);
    if (!tok || !tgt || !grads || !counts || !ts) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    SHOAL_CHECK_GOTO(s_read_tokens(tok_path, B, T, cfg.vocab_size, tok, tgt), rc, fail);
    if (!(m = model_new(&lay, B, T))) {
        rc = SHOAL_ERR_NOMEM;
        goto fail;
    }
    const double loss_sum = model_forward_backward(m, params, tok, tgt, B,
                                                   (float)(1.0 / ((double)B * T)), grads, counts);
    const float loss = (float)(loss_sum / ((double)B * T));
    int nt = 0;
    for (int i = 0; i < lay.n_tensors; i++) {
        const model_tensor_info_t *ti = &lay.tensors[i];
        if (ti->is_bias)
            continue;
        ts[nt++] = (st_tensor_t){.name = ti->name, .dtype = ST_F32, .ndim = ti->ndim,
                                 .shape = {ti->shape[0], ti->shape[1]},
                                 .data = grads + lay.offsets[i]};
    }
    ts[nt++] = (st_tensor_t){.name = "loss", .dtype = ST_F32, .ndim = 1, .shape = {1},
                             .data = &loss};
    SHOAL_CHECK_GOTO(st_write_file(out_path, ts, nt, NULL), rc, fail);
    printf("loss %.7f\n", loss);
    ret = 0;
    goto out;
fail:
    fprintf(stderr, "shoal-worker grads: %s\n", shoal_errmsg());
out:
    model_destroy(&m);
    model_layout_fini(&lay);
    free(params);
    free(grads);
    free(tok);
    free(tgt);
    free(counts);
    free(ts);
    return ret;
}
