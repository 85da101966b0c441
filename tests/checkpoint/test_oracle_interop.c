/* test_oracle_interop: our safetensors, model dirs and checkpoints against a PyTorch reference
 * (tests/reference/moe_ref.py or an outside one with its interface): we load the reference's
 * init output (single file, 3 shards, bf16, f64) to the exact float32 values the reference itself
 * reads, and the reference reads what we write (model dirs, checkpoints, exports). Skips (77)
 * when /usr/bin/python3 cannot import torch. usage: test_oracle_interop PATH/moe_ref.py */
/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "ckpt_export.h"
#include "ckpt_testutil.h"
#include "log.h"

#define S_PYTHON "/usr/bin/python3"

static char *s_root;
static const char *s_oracle; /* path of moe_ref.py; tiny.json sits next to it */

/* Oracle side 1: init four model dirs and dump what the oracle loads, canonical order, f32. */
static const char s_py_init[] =
    "import os, sys\n"
    "sys.path.insert(0, os.path.dirname(sys.argv[1]))\n"
    "import torch, moe_ref as R\n"
    "out, cfgp = sys.argv[2], sys.argv[3]\n"
    "for name, extra in [('f32', []), ('sh3', ['--shards', '3']), ('bf16', ['--dtype', 'bf16']),\n"
    "                    ('f64', ['--dtype', 'f64'])]:\n"
    "    d = os.path.join(out, name)\n"
    "    R.main(['init', '--config', cfgp, '--out', d, '--seed', '1'] + extra)\n"
    "    cfg, P, b = R.load_model(d, torch.float32)\n"
    "    flat = [(b[n] if R.is_bias_name(n) else P[n]).reshape(-1) for n, _ in "
    "R.tensor_shapes(cfg)]\n"
    "    torch.cat(flat).numpy().astype('<f4').tofile(os.path.join(out, name + '.bin'))\n";

/* Oracle side 2: read what we wrote. */
static const char s_py_check[] =
    "import os, sys\n"
    "sys.path.insert(0, os.path.dirname(sys.argv[1]))\n"
    "import numpy as np, torch, moe_ref as R\n"
    "out = sys.argv[2]\n"
    "t, meta = R.st_read(os.path.join(out, 'dtypes.safetensors'))\n"
    "assert meta == {'format': 'pt', 'who': 'shoal'}, meta\n"
    "exp = {'f64': torch.tensor([[0.5, -1.25, 1e300]], dtype=torch.float64),\n"
    "       'f32': torch.tensor([1.5, -2.0, 3.25, 0.1], dtype=torch.float32),\n"
    "       'bf16': torch.tensor([1.0, -3.140625], dtype=torch.bfloat16),\n"
    "       'f16': torch.tensor([0.5, -65504.0], dtype=torch.float16),\n"
    "       'i64': torch.tensor([-(2 ** 40), 7], dtype=torch.int64),\n"
    "       'i32': torch.tensor([[1, -2], [3, 4]], dtype=torch.int32),\n"
    "       'u8': torch.tensor([0, 255], dtype=torch.uint8)}\n"
    "assert sorted(t) == sorted(exp), sorted(t)\n"
    "for k, v in exp.items():\n"
    "    assert t[k].dtype == v.dtype and t[k].shape == v.shape and torch.equal(t[k], v), k\n"
    "want = torch.from_numpy(np.fromfile(os.path.join(out, 'params.bin'), dtype='<f4'))\n"
    "for d in ['model', os.path.join('ckpt', 'step-00000042')]:\n"
    "    cfg, P, b = R.load_model(os.path.join(out, d), torch.float32)\n"
    "    flat = torch.cat([(b[n] if R.is_bias_name(n) else P[n]).reshape(-1)\n"
    "                      for n, _ in R.tensor_shapes(cfg)])\n"
    "    assert torch.equal(flat.view(torch.int32), want.view(torch.int32)), d\n"
    "opt, _ = R.st_read(os.path.join(out, 'ckpt', 'step-00000042', 'optimizer.safetensors'))\n"
    "names = [n for n, _ in R.tensor_shapes(cfg) if not R.is_bias_name(n)]\n"
    "assert sorted(opt) == sorted([n + s for n in names for s in ('.exp_avg', '.exp_avg_sq')])\n"
    "for n, shape in R.tensor_shapes(cfg):\n"
    "    if not R.is_bias_name(n):\n"
    "        assert list(opt[n + '.exp_avg'].shape) == shape, n\n"
    "assert os.path.exists(os.path.join(out, 'export-sh', 'model.safetensors.index.json'))\n"
    "for d, bf in [('export-sh', False), ('export-bf16', True)]:\n"
    "    cfg, P, b = R.load_model(os.path.join(out, d), torch.float32)\n"
    "    at = 0\n"
    "    for n, shape in R.tensor_shapes(cfg):\n"
    "        k = int(np.prod(shape))\n"
    "        w = want[at:at + k].reshape(shape)\n"
    "        at += k\n"
    "        if bf and not R.is_bias_name(n):\n"
    "            w = w.to(torch.bfloat16).float()\n"
    "        got = b[n] if R.is_bias_name(n) else P[n]\n"
    "        assert torch.equal(got.view(torch.int32), w.view(torch.int32)), (d, n)\n"
    "print('oracle read shoal files: OK')\n";

static int s_python_has_torch(void)
{
    if (access(s_oracle, R_OK) != 0 || access(S_PYTHON, X_OK) != 0)
        return 0;
    return system(S_PYTHON " -c 'import torch, numpy' >/dev/null 2>&1") == 0;
}

/* Runs a python script text with arguments; prints its output when it fails. */
static int s_run_py(const char *name, const char *script, const char *args)
{
    char spath[512], log[512], cmd[2048];
    snprintf(spath, sizeof spath, "%s/%s.py", s_root, name);
    snprintf(log, sizeof log, "%s/%s.log", s_root, name);
    assert_int_equal(fsutil_write_file(spath, script, strlen(script)), SHOAL_OK);
    snprintf(cmd, sizeof cmd, S_PYTHON " %s %s %s >%s 2>&1", spath, s_oracle, args, log);
    int rc = system(cmd);
    if (rc != 0) {
        uint8_t *text = NULL;
        size_t len = 0;
        if (fsutil_read_file(log, &text, &len) == SHOAL_OK)
            print_error("%s failed:\n%s\n", name, (char *)text);
        free(text);
    }
    return rc;
}

static void s_expect_file_equal(const char *bin, const float *p, int64_t n)
{
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(fsutil_read_file(bin, &data, &len), SHOAL_OK);
    assert_int_equal(len, (size_t)n * sizeof(float));
    assert_memory_equal(data, p, len); /* bit for bit */
    free(data);
}

static void test_we_read_the_oracle(void **state)
{
    (void)state;
    char cfgp[512], args[1024];
    snprintf(cfgp, sizeof cfgp, "%s/tiny.json", s_root);
    const char *oracle_dir_cfg = s_oracle;
    char src[512];
    snprintf(src, sizeof src, "%.*s/tiny.json",
             (int)(strrchr(oracle_dir_cfg, '/') - oracle_dir_cfg), oracle_dir_cfg);
    uint8_t *cfg_text = NULL;
    size_t cfg_len = 0;
    assert_int_equal(fsutil_read_file(src, &cfg_text, &cfg_len), SHOAL_OK);
    assert_int_equal(fsutil_write_file(cfgp, cfg_text, cfg_len), SHOAL_OK);
    free(cfg_text);
    snprintf(args, sizeof args, "%s %s", s_root, cfgp);
    assert_int_equal(s_run_py("init", s_py_init, args), 0);

    const char *names[] = {"f32", "sh3", "bf16", "f64"};
    for (int i = 0; i < 4; i++) {
        char dir[600], bin[600];
        snprintf(dir, sizeof dir, "%s/%s", s_root, names[i]);
        snprintf(bin, sizeof bin, "%s/%s.bin", s_root, names[i]);
        model_config_t cfg, tiny;
        float *p = NULL;
        int64_t n = 0;
        shoal_err_t rc = model_dir_load(dir, &cfg, &p, &n);
        if (rc != SHOAL_OK)
            fail_msg("%s: %s", dir, shoal_errmsg());
        model_config_tiny(&tiny);
        assert_true(model_config_equal(&cfg, &tiny));
        s_expect_file_equal(bin, p, n);
        free(p);
    }
    /* the sharded layout really is sharded */
    char p3[600];
    snprintf(p3, sizeof p3, "%s/sh3/model-00003-of-00003.safetensors", s_root);
    assert_int_equal(access(p3, R_OK), 0);
}

static void test_the_oracle_reads_us(void **state)
{
    (void)state;
    char path[600];
    double f64[3] = {0.5, -1.25, 1e300};
    float f32[4] = {1.5f, -2.0f, 3.25f, 0.1f};
    uint16_t bf16[2] = {st_f32_to_bf16(1.0f), st_f32_to_bf16(-3.140625f)};
    uint16_t f16[2] = {st_f32_to_f16(0.5f), st_f32_to_f16(-65504.0f)};
    int64_t i64[2] = {-((int64_t)1 << 40), 7};
    int32_t i32[4] = {1, -2, 3, 4};
    uint8_t u8[2] = {0, 255};
    st_tensor_t t[] = {
        {"f64", ST_F64, 2, {1, 3}, f64}, {"f32", ST_F32, 1, {4}, f32},
        {"bf16", ST_BF16, 1, {2}, bf16}, {"f16", ST_F16, 1, {2}, f16},
        {"i64", ST_I64, 1, {2}, i64},    {"i32", ST_I32, 2, {2, 2}, i32},
        {"u8", ST_U8, 1, {2}, u8},
    };
    const char *meta[] = {"format", "pt", "who", "shoal", NULL};
    snprintf(path, sizeof path, "%s/dtypes.safetensors", s_root);
    assert_int_equal(st_write_file(path, t, 7, meta), SHOAL_OK);

    model_config_t cfg;
    model_config_tiny(&cfg);
    int64_t n = model_dir_param_count(&cfg);
    float *p = malloc((size_t)n * sizeof *p);
    float *m = malloc((size_t)n * sizeof *m);
    float *v = malloc((size_t)n * sizeof *v);
    tu_fill(p, n, 11);
    tu_fill(m, n, 12);
    tu_fill(v, n, 13);
    snprintf(path, sizeof path, "%s/params.bin", s_root);
    assert_int_equal(fsutil_write_file(path, p, (size_t)n * sizeof *p), SHOAL_OK);
    snprintf(path, sizeof path, "%s/model", s_root);
    assert_int_equal(model_dir_save(path, &cfg, p), SHOAL_OK);
    snprintf(path, sizeof path, "%s/ckpt", s_root);
    assert_int_equal(ckpt_save(path, 42, &cfg, p, m, v, "{\"step\": 42}", 2), SHOAL_OK);
    /* shoalctl export's output, sharded and bf16 */
    char step_dir[600], out[600];
    snprintf(step_dir, sizeof step_dir, "%s/ckpt/step-00000042", s_root);
    const char *dirs[1] = {step_dir};
    snprintf(out, sizeof out, "%s/export-sh", s_root);
    ckpt_export_opts_t sharded = {.max_shard_bytes = 2000000};
    assert_int_equal(ckpt_export(dirs, 1, out, &sharded), SHOAL_OK);
    snprintf(out, sizeof out, "%s/export-bf16", s_root);
    ckpt_export_opts_t narrow = {.dtype = CKPT_EXPORT_BF16};
    assert_int_equal(ckpt_export(dirs, 1, out, &narrow), SHOAL_OK);
    free(p);
    free(m);
    free(v);
    assert_int_equal(s_run_py("check", s_py_check, s_root), 0);
}

static int s_setup(void **state)
{
    (void)state;
    log_set_level(LOG_LVL_ERROR);
    s_root = tu_mkdtemp("oracle");
    return s_root ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    int rc = fsutil_remove_tree(s_root) == SHOAL_OK ? 0 : -1;
    free(s_root);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2 || !strrchr(argv[1], '/')) {
        fprintf(stderr, "usage: test_oracle_interop PATH/moe_ref.py\n");
        return 2;
    }
    s_oracle = argv[1];
    if (!s_python_has_torch()) {
        fprintf(stderr,
                "test_oracle_interop: " S_PYTHON " cannot import torch (or %s is "
                "missing): skipped\n",
                s_oracle);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_we_read_the_oracle),
        cmocka_unit_test(test_the_oracle_reads_us),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
