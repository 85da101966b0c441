/* test_runspec: the RUN.yaml parser: every key, defaults, errors with line:column, round trips,
 * the embedded default vs examples/, README table sync, hostile input. `--describe` prints the
 * README key table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runspec.h"

#define ORIGIN "t.yaml"

/* The smallest valid spec: only the required keys. */
static const char *const s_minimal = "name: t\n"
                                     "data:\n"
                                     "  files: [a.txt]\n"
                                     "train:\n"
                                     "  steps: 10\n"
                                     "  global_batch: 4\n"
                                     "  seq_len: 16\n"
                                     "  lr: 0.001\n";

/* Every key set to a value other than its default. */
static const char *const s_every_key = "name: every_key-1.0\n"
                                       "model:\n"
                                       "  preset: small\n"
                                       "  vocab_size: 300\n"
                                       "  hidden_size: 64\n"
                                       "  num_hidden_layers: 3\n"
                                       "  num_attention_heads: 2\n"
                                       "  intermediate_size: 100\n"
                                       "  moe_intermediate_size: 48\n"
                                       "  n_routed_experts: 12\n"
                                       "  n_shared_experts: 0\n"
                                       "  num_experts_per_tok: 3\n"
                                       "  n_group: 3\n"
                                       "  topk_group: 2\n"
                                       "  first_k_dense_replace: 2\n"
                                       "  routed_scaling_factor: 2.5\n"
                                       "  rms_norm_eps: 1e-5\n"
                                       "  rope_theta: 500000\n"
                                       "  max_position_embeddings: 512\n"
                                       "  bias_update_speed: 0.01\n"
                                       "data:\n"
                                       "  files:\n"
                                       "    - /data/one.txt\n"
                                       "    - rel/two\n"
                                       "    - \"with space: and # hash\"\n"
                                       "  seed: 18446744073709551615\n"
                                       "train:\n"
                                       "  steps: 1000\n"
                                       "  global_batch: 64\n"
                                       "  seq_len: 256\n"
                                       "  micro_batch: 8\n"
                                       "  lr: 6e-4\n"
                                       "  min_lr: 6.0e-5\n"
                                       "  warmup_steps: 50\n"
                                       "  weight_decay: 0.05\n"
                                       "  clip_grad_norm: 0\n"
                                       "  beta1: 0.8\n"
                                       "  beta2: 0.999\n"
                                       "  eps: 1.5E-7\n"
                                       "  init_seed: 42\n"
                                       "  threads: 4\n"
                                       "checkpoint:\n"
                                       "  dir: /var/lib/shoal/ckpt\n"
                                       "  every_steps: 25\n"
                                       "  keep: 7\n";

/* Compares two specs field by field; prints the first difference. */
static int s_spec_equal(const runspec_t *a, const runspec_t *b)
{
#define S_DIFF(cond, what)                                                                         \
    if (cond) {                                                                                    \
        fprintf(stderr, "specs differ in %s\n", what);                                             \
        return 0;                                                                                  \
    }
    S_DIFF(strcmp(a->name, b->name), "name");
    S_DIFF(strcmp(a->model_preset, b->model_preset), "model.preset");
    S_DIFF(!model_config_equal(&a->model, &b->model), "model");
    S_DIFF(a->n_data_files != b->n_data_files, "n_data_files");
    for (int i = 0; i < a->n_data_files; i++)
        S_DIFF(strcmp(a->data_files[i], b->data_files[i]), "data.files");
    S_DIFF(a->data_seed != b->data_seed, "data.seed");
    S_DIFF(a->steps != b->steps, "steps");
    S_DIFF(a->global_batch != b->global_batch, "global_batch");
    S_DIFF(a->seq_len != b->seq_len, "seq_len");
    S_DIFF(a->micro_batch != b->micro_batch, "micro_batch");
    S_DIFF(a->lr != b->lr, "lr");
    S_DIFF(a->min_lr != b->min_lr, "min_lr");
    S_DIFF(a->warmup_steps != b->warmup_steps, "warmup_steps");
    S_DIFF(a->weight_decay != b->weight_decay, "weight_decay");
    S_DIFF(a->clip_grad_norm != b->clip_grad_norm, "clip_grad_norm");
    S_DIFF(a->beta1 != b->beta1, "beta1");
    S_DIFF(a->beta2 != b->beta2, "beta2");
    S_DIFF(a->adam_eps != b->adam_eps, "eps");
    S_DIFF(a->init_seed != b->init_seed, "init_seed");
    S_DIFF(a->threads != b->threads, "threads");
    S_DIFF(strcmp(a->checkpoint_dir, b->checkpoint_dir), "checkpoint.dir");
    S_DIFF(a->checkpoint_every != b->checkpoint_every, "checkpoint.every_steps");
    S_DIFF(a->checkpoint_keep != b->checkpoint_keep, "checkpoint.keep");
    S_DIFF(a->checkpoint_replicas != b->checkpoint_replicas, "checkpoint.replicas");
    S_DIFF(a->pp != b->pp || a->ep != b->ep || a->dp != b->dp, "parallel");
#undef S_DIFF
    return 1;
}

static runspec_t *s_new_spec(void)
{
    runspec_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    return s;
}

/* Asserts that `yaml` fails with INVALID, the message starting with "t.yaml:<where>: " and
 * containing `needle`. */
static void s_expect_error(const char *yaml, const char *where, const char *needle)
{
    runspec_t *s = s_new_spec();
    shoal_err_t rc = runspec_load_string(yaml, ORIGIN, s);
    const char *msg = shoal_errmsg();
    char prefix[64];
    snprintf(prefix, sizeof prefix, ORIGIN ":%s: ", where);
    if (rc != SHOAL_ERR_INVALID || strncmp(msg, prefix, strlen(prefix)) != 0 ||
        !strstr(msg, needle)) {
        fprintf(stderr, "input:\n%.400s\nrc %d, message: %s\nwanted prefix '%s' and '%s'\n", yaml,
                rc, rc ? msg : "(none)", prefix, needle);
        fail();
    }
    free(s);
}

/* s_minimal with `extra` appended (a section's keys must come in a new section block). */
static char *s_with(const char *extra)
{
    size_t n = strlen(s_minimal) + strlen(extra) + 1;
    char *y = malloc(n);
    assert_non_null(y);
    snprintf(y, n, "%s%s", s_minimal, extra);
    return y;
}

static void test_every_key(void **state)
{
    (void)state;
    runspec_t *s = s_new_spec();
    assert_int_equal(runspec_load_string(s_every_key, ORIGIN, s), SHOAL_OK);
    assert_string_equal(s->name, "every_key-1.0");
    assert_string_equal(s->model_preset, "small");
    const model_config_t *m = &s->model;
    assert_int_equal(m->vocab_size, 300);
    assert_int_equal(m->hidden_size, 64);
    assert_int_equal(m->num_hidden_layers, 3);
    assert_int_equal(m->num_attention_heads, 2);
    assert_int_equal(m->intermediate_size, 100);
    assert_int_equal(m->moe_intermediate_size, 48);
    assert_int_equal(m->n_routed_experts, 12);
    assert_int_equal(m->n_shared_experts, 0);
    assert_int_equal(m->num_experts_per_tok, 3);
    assert_int_equal(m->n_group, 3);
    assert_int_equal(m->topk_group, 2);
    assert_int_equal(m->first_k_dense_replace, 2);
    assert_true(m->routed_scaling_factor == 2.5);
    assert_true(m->rms_norm_eps == 1e-5);
    assert_true(m->rope_theta == 500000.0);
    assert_int_equal(m->max_position_embeddings, 512);
    assert_true(m->bias_update_speed == 0.01);
    assert_int_equal(s->n_data_files, 3);
    assert_string_equal(s->data_files[0], "/data/one.txt");
    assert_string_equal(s->data_files[1], "rel/two"); /* from a string: left as written */
    assert_string_equal(s->data_files[2], "with space: and # hash");
    assert_true(s->data_seed == UINT64_MAX);
    assert_int_equal(s->steps, 1000);
    assert_int_equal(s->global_batch, 64);
    assert_int_equal(s->seq_len, 256);
    assert_int_equal(s->micro_batch, 8);
    assert_true(s->lr == 6e-4);
    assert_true(s->min_lr == 6e-5);
    assert_int_equal(s->warmup_steps, 50);
    assert_true(s->weight_decay == 0.05);
    assert_true(s->clip_grad_norm == 0.0);
    assert_true(s->beta1 == 0.8);
    assert_true(s->beta2 == 0.999);
    assert_true(s->adam_eps == 1.5e-7);
    assert_true(s->init_seed == 42);
    assert_int_equal(s->threads, 4);
    assert_string_equal(s->checkpoint_dir, "/var/lib/shoal/ckpt");
    assert_int_equal(s->checkpoint_every, 25);
    assert_int_equal(s->checkpoint_keep, 7);
    assert_int_equal(runspec_validate(s), SHOAL_OK);
    free(s);
}

static void test_defaults(void **state)
{
    (void)state;
    runspec_t *s = s_new_spec();
    assert_int_equal(runspec_load_string(s_minimal, ORIGIN, s), SHOAL_OK);
    model_config_t tiny;
    model_config_tiny(&tiny);
    assert_string_equal(s->model_preset, "tiny");
    assert_true(model_config_equal(&s->model, &tiny));
    assert_int_equal(s->n_data_files, 1);
    assert_string_equal(s->data_files[0], "a.txt");
    assert_true(s->data_seed == 0);
    assert_int_equal(s->micro_batch, 4);  /* 4 x 16 tokens <= 1024: the whole batch */
    assert_int_equal(runspec_default_micro_batch(16, 128), 8);
    assert_int_equal(runspec_default_micro_batch(6, 512), 2);
    assert_int_equal(runspec_default_micro_batch(5, 2048), 1);
    assert_int_equal(runspec_default_micro_batch(7, 100), 7);
    assert_int_equal(s->warmup_steps, 1); /* = steps / 10 */
    assert_true(s->min_lr == 0.0);
    assert_true(s->weight_decay == 0.1);
    assert_true(s->clip_grad_norm == 1.0);
    assert_true(s->beta1 == 0.9);
    assert_true(s->beta2 == 0.95);
    assert_true(s->adam_eps == 1e-8);
    assert_true(s->init_seed == 1);
    assert_int_equal(s->threads, 1);
    assert_string_equal(s->checkpoint_dir, "checkpoints");
    assert_int_equal(s->checkpoint_every, 0);
    assert_int_equal(s->checkpoint_keep, 3);
    assert_int_equal(s->checkpoint_replicas, 2);

    /* runspec_defaults: the same optional defaults, required keys unset. */
    runspec_t *d = s_new_spec();
    memset(d, 0x5a, sizeof *d);
    runspec_defaults(d);
    assert_string_equal(d->name, "");
    assert_int_equal(d->steps, 0);
    assert_int_equal(d->n_data_files, 0);
    assert_true(d->beta2 == 0.95);
    assert_true(model_config_equal(&d->model, &tiny));
    assert_string_equal(d->checkpoint_dir, "checkpoints");
    assert_int_equal(runspec_validate(d), SHOAL_ERR_INVALID); /* name is required */

    /* CRLF line ends and a UTF-8 byte order mark */
    assert_int_equal(runspec_load_string("\xef\xbb\xbfname: crlf\r\ndata:\r\n  files: [a]\r\n"
                                         "train:\r\n  steps: 20\r\n  global_batch: 2\r\n"
                                         "  seq_len: 4\r\n  lr: 0.5\r\n",
                                         ORIGIN, s),
                     SHOAL_OK);
    assert_string_equal(s->name, "crlf");
    assert_int_equal(s->warmup_steps, 2);
    s_expect_error("\xef\xbb\xbfname: x\r\ntrain:\r\n  steps: q\r\n", "3:10", "train.steps");

    /* A single string for data.files, an empty (null) checkpoint section. */
    char *y = s_with("checkpoint:\n");
    assert_int_equal(
        runspec_load_string("name: x\ndata: {files: /one/file}\ntrain: {steps: 5, global_batch: 2, "
                            "seq_len: 8, lr: 1}\n",
                            ORIGIN, s),
        SHOAL_OK);
    assert_int_equal(s->n_data_files, 1);
    assert_string_equal(s->data_files[0], "/one/file");
    assert_int_equal(s->warmup_steps, 0);
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_int_equal(s->checkpoint_keep, 3);
    free(y);
    free(d);
    free(s);
}

static void test_model_overrides_any_order(void **state)
{
    (void)state;
    runspec_t *a = s_new_spec(), *b = s_new_spec(), *c = s_new_spec();
    char *ya = s_with("model:\n  preset: small\n  num_attention_heads: 4\n  n_group: 2\n");
    char *yb = s_with("model:\n  n_group: 2\n  num_attention_heads: 4\n  preset: small\n");
    /* the model section before every other section */
    const char *yc = "model: {n_group: 2, num_attention_heads: 4, preset: small}\n"
                     "name: t\ndata: {files: [a.txt]}\n"
                     "train: {steps: 10, global_batch: 4, seq_len: 16, lr: 0.001}\n";
    assert_int_equal(runspec_load_string(ya, ORIGIN, a), SHOAL_OK);
    assert_int_equal(runspec_load_string(yb, ORIGIN, b), SHOAL_OK);
    assert_int_equal(runspec_load_string(yc, ORIGIN, c), SHOAL_OK);
    model_config_t want;
    assert_int_equal(model_config_preset("small", &want), SHOAL_OK);
    want.num_attention_heads = 4;
    want.n_group = 2;
    assert_true(model_config_equal(&a->model, &want));
    assert_true(s_spec_equal(a, b));
    assert_true(s_spec_equal(a, c));
    /* an override that only validates over its preset: small's 16 experts in 4 groups */
    char *yd = s_with("model:\n  topk_group: 3\n  preset: small\n");
    assert_int_equal(runspec_load_string(yd, ORIGIN, a), SHOAL_OK);
    assert_int_equal(a->model.topk_group, 3);
    assert_int_equal(a->model.n_group, 4);
    free(ya);
    free(yb);
    free(yd);
    free(a);
    free(b);
    free(c);
}

static void test_round_trip(void **state)
{
    (void)state;
    const char *inputs[] = {s_every_key, s_minimal, runspec_default_yaml(),
                            "name: q\ndata: {files: [\"tab\\there\", \"quote\\\" back\\\\slash\", "
                            "\"\\u00e9t\\u00e9 \\U0001F600\", \"- dash\", \"'single'\"]}\n"
                            "train: {steps: 3, global_batch: 3, seq_len: 1, lr: 0.1, "
                            "min_lr: 0.030000000000000002, beta2: 0.1}\n"
                            "checkpoint: {dir: \"# not a comment: {x}\"}\n"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        runspec_t *a = s_new_spec(), *b = s_new_spec();
        assert_int_equal(runspec_load_string(inputs[i], ORIGIN, a), SHOAL_OK);
        char *text = runspec_to_yaml(a);
        assert_non_null(text);
        if (runspec_load_string(text, "out.yaml", b) != SHOAL_OK || !s_spec_equal(a, b)) {
            fprintf(stderr, "round trip %zu failed: %s\n%s", i, shoal_errmsg(), text);
            fail();
        }
        /* every key is written */
        assert_non_null(strstr(text, "rope_theta: "));
        assert_non_null(strstr(text, "  eps: "));
        free(text);
        free(a);
        free(b);
    }
}

static void test_default_matches_example(void **state)
{
    (void)state;
    runspec_t *a = s_new_spec(), *b = s_new_spec();
    assert_int_equal(runspec_load_string(runspec_default_yaml(), "default", a), SHOAL_OK);
    if (runspec_load_file(SHOAL_SOURCE_DIR "/examples/tiny-fortunes.yaml", b) != SHOAL_OK) {
        fprintf(stderr, "%s\n", shoal_errmsg());
        fail();
    }
    assert_true(s_spec_equal(a, b));
    assert_string_equal(a->name, "tiny-fortunes");
    assert_string_equal(a->model_preset, "tiny");
    assert_int_equal(a->n_data_files, 1);
    assert_string_equal(a->data_files[0], "/usr/share/games/fortunes");
    assert_true(a->data_seed == 1);
    assert_int_equal(a->steps, 300);
    assert_int_equal(a->global_batch, 16);
    assert_int_equal(a->seq_len, 128);
    assert_int_equal(a->micro_batch, 8);
    assert_true(a->lr == 3e-3);
    assert_true(a->min_lr == 0);
    assert_int_equal(a->warmup_steps, 30);
    assert_true(a->weight_decay == 0.1);
    assert_true(a->clip_grad_norm == 1.0);
    assert_string_equal(a->checkpoint_dir, "checkpoints");
    assert_int_equal(a->checkpoint_every, 100);
    assert_int_equal(a->checkpoint_keep, 3);
    /* the split example is the same run in 2 stages x 2 expert ranks */
    if (runspec_load_file(SHOAL_SOURCE_DIR "/examples/tiny-pipeline-experts.yaml", b) != SHOAL_OK) {
        fprintf(stderr, "%s\n", shoal_errmsg());
        fail();
    }
    assert_int_equal(b->pp, 2);
    assert_int_equal(b->ep, 2);
    assert_int_equal(b->dp, 0);
    assert_int_equal(b->global_batch, a->global_batch);
    free(a);
    free(b);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    /* unclosed flow sequence: libyaml reports where it gave up */
    s_expect_error("name: x\ndata:\n  files: [a, b\n", "4:1",
                   "YAML syntax error: did not find expected ',' or ']' (while parsing a flow "
                   "sequence at 3:10)");
    /* a tab for indentation */
    s_expect_error("name: x\ntrain:\n\tsteps: 1\n", "3:1", "YAML syntax error");
    /* a mapping value where none can be */
    s_expect_error("name: a: b\n", "1:8", "mapping values are not allowed");
    /* invalid UTF-8: the reader reports a byte offset, shown as line:column */
    s_expect_error("name: x\ntrain:\n  steps: \xff\n", "3:10", "YAML syntax error: invalid");
    s_expect_error("name: \"unterminated\n", "2:1", "YAML syntax error");
}

static void test_key_errors(void **state)
{
    (void)state;
    s_expect_error("name: x\ntrain:\n  steps: 1\n  lrr: 1\n", "4:3",
                   "unknown key 'train.lrr' (valid train keys: steps, global_batch, seq_len, "
                   "micro_batch, lr, min_lr, warmup_steps");
    s_expect_error("name: x\nmodels:\n  preset: tiny\n", "2:1",
                   "unknown key 'models' (valid top-level keys: name, model, data, train, "
                   "parallel, checkpoint)");
    s_expect_error("name: x\nmodel:\n  hiden_size: 3\n", "3:3", "unknown key 'model.hiden_size'");
    /* a dotted key at the top level is not a shortcut */
    s_expect_error("name: x\ntrain.lr: 1\n", "2:1", "unknown key 'train.lr'");
    s_expect_error("name: x\n? [a, b]\n: 1\n", "2:3", "keys must be plain strings");
    /* duplicates, of a leaf and of a section */
    s_expect_error("name: x\ntrain:\n  lr: 1\n  steps: 2\n  lr: 3\n", "5:3",
                   "duplicate key 'train.lr' (first at 3:3)");
    s_expect_error("name: x\ntrain: {}\ndata: {}\ntrain: {}\n", "4:1",
                   "duplicate key 'train' (first at 2:1)");
    s_expect_error("name: x\nname: y\n", "2:1", "duplicate key 'name' (first at 1:1)");
    /* missing required keys: at the section when it exists, else the top-level mapping */
    s_expect_error("data: {files: a}\n", "1:1", "missing required key 'name'");
    s_expect_error("name: x\ndata: {files: a}\n\n\ntrain:\n  steps: 1\n  global_batch: 1\n"
                   "  seq_len: 1\n",
                   "5:1", "missing required key 'train.lr'");
    s_expect_error("name: x\ntrain: {steps: 1, global_batch: 1, seq_len: 1, lr: 1}\n", "1:1",
                   "missing required key 'data.files'");
}

static void test_type_errors(void **state)
{
    (void)state;
    char *y;
#define S_BAD(extra, where, needle)                                                                \
    y = s_with(extra);                                                                             \
    s_expect_error(y, where, needle);                                                              \
    free(y)
    /* s_minimal has 8 lines; the extra text starts on line 9 */
    S_BAD("checkpoint:\n  keep: abc\n", "10:9", "checkpoint.keep: expected an integer, got 'abc'");
    S_BAD("checkpoint:\n  keep: 1.5\n", "10:9", "expected an integer, got '1.5'");
    S_BAD("checkpoint:\n  keep: 3x\n", "10:9", "expected an integer, got '3x'");
    S_BAD("checkpoint:\n  keep: 0x10\n", "10:9", "expected an integer");
    S_BAD("checkpoint:\n  keep: 1e3\n", "10:9", "expected an integer");
    S_BAD("checkpoint:\n  keep: \"3\"\n", "10:9", "got a quoted string '3'");
    S_BAD("checkpoint:\n  keep:\n", "10:8", "expected an integer, got an empty value");
    S_BAD("checkpoint:\n  keep: [3]\n", "10:9", "expected an integer, got a sequence");
    S_BAD("checkpoint:\n  keep: {a: 1}\n", "10:9", "expected an integer, got a mapping");
    S_BAD("checkpoint:\n  keep: 99999999999999999999\n", "10:9", "out of range");
    S_BAD("train2:\n", "9:1", "unknown key");
    S_BAD("model:\n  rope_theta: 1e4x\n", "10:15", "model.rope_theta: expected a number");
    S_BAD("model:\n  rope_theta: .inf\n", "10:15", "model.rope_theta: expected a number");
    S_BAD("model:\n  rope_theta: 1e999\n", "10:15", "out of range");
    S_BAD("model:\n  rope_theta: nan\n", "10:15", "expected a number");
    S_BAD("model:\n  hidden_size: 1.5\n", "10:16", "model.hidden_size: expected an integer");
    S_BAD("model:\n  preset: [tiny]\n", "10:11", "model.preset: expected a string, got a sequence");
    S_BAD("data2: 1\n", "9:1", "unknown key 'data2'");
    S_BAD("checkpoint: 5\n", "9:13",
          "checkpoint: expected a mapping of checkpoint.* keys, got '5'");
    S_BAD("checkpoint:\n  dir: ~\n", "10:8",
          "checkpoint.dir: expected a string, got an empty value");
    S_BAD("checkpoint:\n  dir: \"a\\0b\"\n", "10:8", "contains a NUL");
#undef S_BAD
    s_expect_error("name: x\ndata:\n  files: [a, [b]]\n", "3:14",
                   "data.files[1]: expected a string, got a sequence");
    s_expect_error("name: x\ndata:\n  files: []\n", "3:10", "data.files: the list is empty");
    s_expect_error("name: x\ndata:\n  files: {a: 1}\n", "3:10",
                   "data.files: expected a path or a list of paths, got a mapping");
    s_expect_error("name: x\ndata:\n  files:\n    - a\n    -\n", "5:6",
                   "data.files[1]: expected a string, got an empty value");
    /* seeds: non-negative 64-bit */
    s_expect_error("name: x\ndata:\n  seed: -1\n", "3:9", "data.seed: expected a non-negative");
    s_expect_error("name: x\ndata:\n  seed: 18446744073709551616\n", "3:9", "out of range");
    /* reals accept integers and exponents; ints reject reals */
    runspec_t *s = s_new_spec();
    y = s_with("model:\n  rope_theta: 10000\n  rms_norm_eps: 3E-3\n  routed_scaling_factor: +.5\n");
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_true(s->model.rope_theta == 10000.0);
    assert_true(s->model.rms_norm_eps == 3e-3);
    assert_true(s->model.routed_scaling_factor == 0.5);
    free(y);
    free(s);
}

static void test_range_errors(void **state)
{
    (void)state;
    char *y;
#define S_BAD(extra, where, needle)                                                                \
    y = s_with(extra);                                                                             \
    s_expect_error(y, where, needle);                                                              \
    free(y)
    S_BAD("checkpoint:\n  keep: 0\n", "10:9", "checkpoint.keep: must be >= 1, <= 1000000, got 0");
    S_BAD("checkpoint:\n  replicas: 17\n", "10:13",
          "checkpoint.replicas: must be >= 0, <= 16, got 17");
    S_BAD("checkpoint:\n  replicas: -1\n", "10:13", "checkpoint.replicas: must be >= 0");
    S_BAD("checkpoint:\n  every_steps: -1\n", "10:16", "checkpoint.every_steps: must be >= 0");
    S_BAD("checkpoint:\n  dir: \"\"\n", "10:8", "checkpoint.dir: must not be empty");
    S_BAD("model:\n  preset: huge\n", "10:11", "model.preset: unknown model preset");
    /* the model as a whole: blamed on the model section */
    S_BAD("model:\n  num_attention_heads: 3\n", "10:3", "num_attention_heads");
    S_BAD("model:\n  max_position_embeddings: 8\n", "7:12",
          "train.seq_len: must be <= model.max_position_embeddings (8), got 16");
    S_BAD("model:\n  hidden_size: 3000000000\n", "10:16", "out of range");
#undef S_BAD
    const char *head = "name: x\ndata: {files: a}\n";
    char buf[512];
#define S_TRAIN(body, where, needle)                                                               \
    snprintf(buf, sizeof buf, "%strain:\n%s", head, body);                                         \
    s_expect_error(buf, where, needle)
    S_TRAIN("  steps: 0\n", "4:10", "train.steps: must be >= 1, <= 1000000000, got 0");
    S_TRAIN("  steps: 1\n  global_batch: 0\n", "5:17", "train.global_batch: must be >= 1");
    S_TRAIN("  steps: 1\n  global_batch: 1\n  seq_len: 1\n  lr: 0\n", "7:7",
            "train.lr: must be > 0, <= 10, got '0'");
    S_TRAIN("  steps: 1\n  global_batch: 1\n  seq_len: 1\n  lr: -1e-3\n", "7:7",
            "train.lr: must be > 0");
    S_TRAIN("  beta1: 1\n", "4:10", "train.beta1: must be >= 0, < 1, got '1'");
    S_TRAIN("  beta2: -0.1\n", "4:10", "train.beta2: must be >= 0, < 1");
    S_TRAIN("  eps: 0\n", "4:8", "train.eps: must be > 0");
    S_TRAIN("  threads: 0\n", "4:12", "train.threads: must be >= 1, <= 1024");
    S_TRAIN("  weight_decay: -1\n", "4:17", "train.weight_decay: must be >= 0");
    S_TRAIN("  steps: 2147483648\n", "4:10", "train.steps: must be >= 1");
    /* rules between keys point at the key written in the file */
    S_TRAIN("  steps: 10\n  global_batch: 6\n  micro_batch: 4\n  seq_len: 8\n  lr: 1\n", "6:16",
            "train.micro_batch: must divide train.global_batch (6), got 4");
    S_TRAIN("  steps: 10\n  global_batch: 6\n  seq_len: 8\n  lr: 0.1\n  min_lr: 0.2\n", "8:11",
            "train.min_lr: must be <= train.lr (0.1), got 0.2");
    S_TRAIN("  steps: 10\n  global_batch: 6\n  seq_len: 8\n  lr: 0.1\n  warmup_steps: 11\n", "8:17",
            "train.warmup_steps: must be <= train.steps (10), got 11");
    S_TRAIN("  steps: 10\n  global_batch: 6\n  seq_len: 129\n  lr: 0.1\n", "6:12",
            "must be <= model.max_position_embeddings (128)");
#undef S_TRAIN
    s_expect_error("name: a/b\n", "1:7", "name: must be made of letters");
    s_expect_error("name: .hidden\n", "1:7", "not starting with '.'"); /* common/name.h */
    s_expect_error("name: ''\n", "1:7", "name: must not be empty");

    /* runspec_validate on a spec changed in code */
    runspec_t *s = s_new_spec();
    assert_int_equal(runspec_load_string(s_minimal, ORIGIN, s), SHOAL_OK);
    assert_int_equal(runspec_validate(s), SHOAL_OK);
    s->lr = 0;
    assert_int_equal(runspec_validate(s), SHOAL_ERR_INVALID);
    assert_string_equal(shoal_errmsg(), "train.lr: must be > 0, <= 10, got 0");
    s->lr = 1;
    s->micro_batch = 3;
    assert_int_equal(runspec_validate(s), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "train.micro_batch: must divide"));
    s->micro_batch = 2;
    s->model.n_group = 3;
    assert_int_equal(runspec_validate(s), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "model: "));
    free(s);
}

static void test_document_errors(void **state)
{
    (void)state;
    s_expect_error("", "1:1", "empty run spec");
    s_expect_error("# only a comment\n\n", "1:1", "empty run spec");
    s_expect_error("---\n", "2:1", "empty run spec");
    s_expect_error("- a\n- b\n", "1:1", "a run spec must be a mapping with keys name, model");
    s_expect_error("just text\n", "1:1", "got 'just text'");
    char *y = s_with("---\nname: y\n");
    s_expect_error(y, "9:1", "a second YAML document");
    free(y);
    /* anchors are harmless, aliases are refused where they are used */
    y = s_with("checkpoint:\n  dir: &d /x\n  every_steps: 3\n");
    runspec_t *s = s_new_spec();
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_string_equal(s->checkpoint_dir, "/x");
    free(y);
    free(s);
    s_expect_error("name: &n x\ncheckpoint:\n  dir: *n\n", "3:8",
                   "checkpoint.dir: aliases (*name) are not supported");
    s_expect_error("name: x\ndata: &d {files: a}\ntrain: *d\n", "3:8", "train: aliases");
    s_expect_error("name: x\ndata:\n  files: [a, *x]\n", "3:14", "data.files[1]: aliases");
    /* billion laughs: nothing is expanded */
    s_expect_error("name: x\ndata:\n  files: &a [x, x, x, x, x, x, x, x, x]\n"
                   "train:\n  steps: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n",
                   "5:10", "train.steps: expected an integer, got a sequence");
}

static char *s_repeat(const char *head, const char *unit, size_t count, const char *tail)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *buf = malloc(hl + ul * count + tl + 1);
    assert_non_null(buf);
    memcpy(buf, head, hl);
    for (size_t i = 0; i < count; i++)
        memcpy(buf + hl + i * ul, unit, ul);
    memcpy(buf + hl + ul * count, tail, tl + 1);
    return buf;
}

static void test_hostile_input(void **state)
{
    (void)state;
    runspec_t *s = s_new_spec();
    char *y;
    /* deep nesting, flow and block */
    y = s_repeat("", "[", 200000, "");
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_ERR_INVALID);
    free(y);
    y = s_repeat("name: x\ntrain:\n  steps: ", "[", 200000, "");
    s_expect_error(y, "3:10", "expected an integer, got a sequence");
    free(y);
    y = s_repeat("", "{a: ", 100000, "");
    s_expect_error(y, "1:2", "unknown key 'a'");
    free(y);
    y = s_repeat("name: x\ndata:\n  files:\n    ", "- ", 50000, "a\n");
    s_expect_error(y, "4:7", "data.files[0]: expected a string, got a sequence");
    free(y);
    y = s_repeat("name: x\ndata:\n  files: [", "[", 100000, "");
    s_expect_error(y, "3:11", "data.files[0]");
    free(y);
    /* very long strings and keys */
    y = s_repeat("name: ", "a", 1 << 20, "\n");
    s_expect_error(y, "1:7", "name: too long (1048576 bytes, at most 127)");
    free(y);
    y = s_repeat("", "k", 1000, ": 1\n");
    s_expect_error(y, "1:1", "unknown key 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...'");
    free(y);
    /* YAML keys end at 1024 characters: a longer one makes the line one plain scalar */
    y = s_repeat("", "k", 1 << 20, ": 1\n");
    s_expect_error(y, "1:1", "must be a mapping with keys name, model");
    free(y);
    y = s_repeat("name: x\ndata:\n  files:\n    - ", "p", RUNSPEC_PATH_MAX, "\n");
    s_expect_error(y, "4:7", "data.files[0]: too long");
    free(y);
    y = s_repeat("name: x\ndata:\n  files:\n", "    - f\n", RUNSPEC_MAX_FILES + 1, "");
    s_expect_error(y, "68:7", "data.files: too many paths (at most 64)");
    free(y);
    y = s_repeat("name: x\ncheckpoint:\n  keep: ", "9", 100000, "\n");
    s_expect_error(y, "3:9", "out of range");
    free(y);
    /* a NUL-free binary soup: every outcome is an error with a position, never a crash */
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    char buf[513];
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = (size_t)(iter % 512);
        for (size_t i = 0; i < n; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            buf[i] = (char)(1 + rng % 255);
        }
        buf[n] = '\0';
        shoal_err_t rc = runspec_load_string(buf, ORIGIN, s);
        assert_int_equal(rc, SHOAL_ERR_INVALID);
        assert_int_equal(strncmp(shoal_errmsg(), ORIGIN ":", strlen(ORIGIN) + 1), 0);
    }
    free(s);
}

/* Mutates the every-key spec at random: each result is either an error with a position or a
 * spec that validates and survives a round trip through runspec_to_yaml. */
static void test_mutations(void **state)
{
    (void)state;
    static const char alphabet[] = ":-[]{},#&*!|>'\"\n \t0123456789.eE+~?%@`\\\xc3\xa9\xff";
    runspec_t *a = s_new_spec(), *b = s_new_spec();
    size_t len = strlen(s_every_key);
    char *buf = malloc(len + 16);
    assert_non_null(buf);
    uint64_t rng = 12345;
    int ok = 0, bad = 0;
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(buf, s_every_key, len + 1);
        size_t n = len;
        int edits = 1 + iter % 3;
        for (int e = 0; e < edits; e++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            size_t pos = (size_t)(rng >> 20) % n;
            char ch = alphabet[(rng >> 8) % (sizeof alphabet - 1)];
            switch (rng % 3) {
            case 0:
                buf[pos] = ch;
                break;
            case 1: /* insert */
                memmove(buf + pos + 1, buf + pos, n - pos + 1);
                buf[pos] = ch;
                n++;
                break;
            default: /* delete */
                memmove(buf + pos, buf + pos + 1, n - pos);
                n--;
                break;
            }
        }
        shoal_err_t rc = runspec_load_string(buf, ORIGIN, a);
        if (rc != SHOAL_OK) {
            bad++;
            assert_int_equal(rc, SHOAL_ERR_INVALID);
            const char *msg = shoal_errmsg();
            int line = 0, col = 0;
            if (sscanf(msg, ORIGIN ":%d:%d: ", &line, &col) != 2 || line < 1 || col < 1) {
                fprintf(stderr, "no position: %s\n", msg);
                fail();
            }
            continue;
        }
        ok++;
        assert_int_equal(runspec_validate(a), SHOAL_OK);
        char *text = runspec_to_yaml(a);
        assert_non_null(text);
        if (runspec_load_string(text, "out.yaml", b) != SHOAL_OK || !s_spec_equal(a, b)) {
            fprintf(stderr, "round trip failed: %s\ninput:\n%s\noutput:\n%s\n", shoal_errmsg(), buf,
                    text);
            fail();
        }
        free(text);
    }
    assert_true(ok > 100 && bad > 100); /* both paths exercised */
    free(buf);
    free(a);
    free(b);
}

static void s_write(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void test_load_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/shoal-rs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char real[PATH_MAX], sub[PATH_MAX + 8], path[PATH_MAX + 32], want[PATH_MAX + 256];
    assert_non_null(realpath(dir, real));
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/run.yaml", sub);
    const char *text = "name: f\n"
                       "data:\n"
                       "  files: [data.txt, /abs/x.txt, ../up, corpus/]\n"
                       "train: {steps: 4, global_batch: 2, seq_len: 8, lr: 0.5}\n"
                       "checkpoint: {dir: ckpt}\n";
    s_write(path, text, strlen(text));
    runspec_t *s = s_new_spec();
    assert_int_equal(runspec_load_file(path, s), SHOAL_OK);
    assert_int_equal(s->n_data_files, 4);
    snprintf(want, sizeof want, "%s/sub/data.txt", real);
    assert_string_equal(s->data_files[0], want);
    assert_string_equal(s->data_files[1], "/abs/x.txt");
    snprintf(want, sizeof want, "%s/sub/../up", real);
    assert_string_equal(s->data_files[2], want);
    snprintf(want, sizeof want, "%s/sub/corpus/", real);
    assert_string_equal(s->data_files[3], want);
    assert_string_equal(s->checkpoint_dir, "ckpt"); /* left as written */

    /* a path without a directory part resolves against the current directory */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(sub), 0);
    runspec_t *s2 = s_new_spec();
    shoal_err_t rc = runspec_load_file("run.yaml", s2);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, SHOAL_OK);
    assert_true(s_spec_equal(s, s2));

    /* errors name the file */
    const char *bad = "name: f\ntrain:\n  steps: x\n";
    s_write(path, bad, strlen(bad));
    assert_int_equal(runspec_load_file(path, s), SHOAL_ERR_INVALID);
    snprintf(want, sizeof want, "%s:3:10: train.steps: expected an integer, got 'x'", path);
    assert_string_equal(shoal_errmsg(), want);
    /* binary with NUL bytes */
    s_write(path, "name: \0\x01\x02", 9);
    assert_int_equal(runspec_load_file(path, s), SHOAL_ERR_INVALID);
    snprintf(want, sizeof want, "%s:1:7: YAML syntax error", path);
    assert_int_equal(strncmp(shoal_errmsg(), want, strlen(want)), 0);
    s_write(path, "", 0);
    assert_int_equal(runspec_load_file(path, s), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), ":1:1: empty run spec"));
    /* too large */
    size_t big = (4u << 20) + 1;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, '#', big);
    s_write(path, huge, big);
    free(huge);
    assert_int_equal(runspec_load_file(path, s), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "larger than 4 MiB"));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(runspec_load_file(path, s), SHOAL_ERR_IO);
    assert_non_null(strstr(shoal_errmsg(), path));
    assert_int_equal(runspec_load_file(sub, s), SHOAL_ERR_IO); /* a directory */
    assert_int_equal(rmdir(sub), 0);
    assert_int_equal(rmdir(dir), 0);
    free(s);
    free(s2);
}

/* The table in the README is the generated one. */
static void test_readme_table(void **state)
{
    (void)state;
    FILE *f = fopen(SHOAL_SOURCE_DIR "/README.md", "rb");
    assert_non_null(f);
    static char readme[1 << 18];
    size_t n = fread(readme, 1, sizeof readme - 1, f);
    fclose(f);
    readme[n] = '\0';
    const char *begin_tag = "<!-- runspec-keys:begin -->\n", *end_tag = "<!-- runspec-keys:end -->";
    char *begin = strstr(readme, begin_tag), *end = begin ? strstr(begin, end_tag) : NULL;
    assert_non_null(begin);
    assert_non_null(end);
    begin += strlen(begin_tag);
    *end = '\0';
    char *table = NULL;
    size_t size = 0;
    FILE *m = open_memstream(&table, &size);
    assert_non_null(m);
    runspec_describe(m);
    assert_int_equal(fclose(m), 0);
    if (strcmp(begin, table) != 0) {
        fprintf(stderr, "README.md key table is stale: regenerate it with "
                        "`build/bin/test_runspec --describe`\n");
        fail();
    }
    free(table);
}

/* s_expect_error on the minimal spec with `extra` appended. */
static void s_expect_with(const char *extra, const char *where, const char *needle)
{
    char *y = s_with(extra);
    s_expect_error(y, where, needle);
    free(y);
}

/* train.precision: auto by default, fp32 / bf16 accepted, anything else refused; bf16 holds
 * on both devices (the CPU trainer checks the CPU), auto resolves per device. */
static void test_precision_key(void **state)
{
    (void)state;
    runspec_t *s = s_new_spec();
    char *y = s_with("");
    int bf16 = -1;
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_string_equal(s->precision, "auto");
    assert_int_equal(runspec_precision_bf16(s, 1, &bf16), SHOAL_OK);
    assert_int_equal(bf16, 1);
    assert_int_equal(runspec_precision_bf16(s, 0, &bf16), SHOAL_OK);
    assert_int_equal(bf16, 0);
    free(y);
    y = s_with("  precision: bf16\n");
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_int_equal(runspec_precision_bf16(s, 1, &bf16), SHOAL_OK);
    assert_int_equal(bf16, 1);
    bf16 = -1;
    assert_int_equal(runspec_precision_bf16(s, 0, &bf16), SHOAL_OK);
    assert_int_equal(bf16, 1);
    free(y);
    y = s_with("  precision: fp32\n");
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_int_equal(runspec_precision_bf16(s, 1, &bf16), SHOAL_OK);
    assert_int_equal(bf16, 0);
    char *back = runspec_to_yaml(s);
    assert_non_null(back);
    assert_non_null(strstr(back, "precision: \"fp32\""));
    free(back);
    free(y);
    s_expect_with("  precision: fp16\n", "9:14", "must be `auto`, `fp32` or `bf16`");
    free(s);
}

/* train.grad_sum: exact by default, float accepted, anything else refused at its line. */
static void test_grad_sum_key(void **state)
{
    (void)state;
    runspec_t *s = s_new_spec();
    char *y = s_with("");
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_string_equal(s->grad_sum, "exact");
    assert_true(runspec_grad_sum_exact(s));
    free(y);
    y = s_with("  grad_sum: float\n");
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_false(runspec_grad_sum_exact(s));
    char *back = runspec_to_yaml(s);
    assert_non_null(back);
    assert_non_null(strstr(back, "grad_sum: \"float\""));
    free(back);
    free(y);
    s_expect_with("  grad_sum: fixed\n", "9:13", "must be `exact` or `float`");
    free(s);
}

/* parallel.*: defaults, auto or a number for dp, the rules between keys, the YAML round trip. */
static void test_parallel_keys(void **state)
{
    (void)state;
    runspec_t *s = s_new_spec(), *back = s_new_spec();
    char *y = s_with("");
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_int_equal(s->pp, 1);
    assert_int_equal(s->ep, 1);
    assert_int_equal(s->dp, 0);
    free(y);
    /* 8 sequences in micro-batches of 1: 8 micro-batches for 2 replicas x 4 ep ranks */
    y = s_with("  micro_batch: 1\nparallel:\n  pipeline_stages: 2\n  expert_parallel: 4\n"
               "  data_parallel: 2\n");
    y[strstr(y, "global_batch: 4") - y + strlen("global_batch: ")] = '8';
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_int_equal(s->pp, 2);
    assert_int_equal(s->ep, 4);
    assert_int_equal(s->dp, 2);
    assert_true(runspec_dp_fits(s, 1) && runspec_dp_fits(s, 2) && !runspec_dp_fits(s, 3));
    char *text = runspec_to_yaml(s);
    assert_non_null(text);
    assert_non_null(strstr(text, "  data_parallel: 2\n"));
    assert_int_equal(runspec_load_string(text, ORIGIN, back), SHOAL_OK);
    assert_true(s_spec_equal(s, back));
    free(text);
    free(y);
    y = s_with("parallel:\n  data_parallel: auto\n");
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_OK);
    assert_int_equal(s->dp, 0);
    free(y);
    s_expect_error("name: x\nparallel:\n  data_parallel: some\n", "3:18",
                   "parallel.data_parallel: must be `auto` or an integer >= 1");
    s_expect_error("name: x\nparallel:\n  data_parallel: 0\n", "3:18",
                   "parallel.data_parallel");
    s_expect_with("parallel:\n  pipeline_stages: 5\n", "10:20",
                  "parallel.pipeline_stages: must be <= model.num_hidden_layers (4)");
    s_expect_with("parallel:\n  expert_parallel: 3\n", "10:20",
                  "parallel.expert_parallel: must divide model.n_routed_experts (8)");
    /* 4 sequences in one micro-batch cannot be shared by 2 ep ranks */
    s_expect_with("parallel:\n  expert_parallel: 2\n", "10:20", "micro-batches of a step");
    s_expect_with("  micro_batch: 1\nparallel:\n  expert_parallel: 2\n  data_parallel: 3\n",
                  "12:18", "parallel.data_parallel: the 4 micro-batches of a step");
    s->dp = 3;
    s->ep = 2;
    assert_int_equal(runspec_validate(s), SHOAL_ERR_INVALID);
    free(s);
    free(back);
}

/* The model.* keys are exactly the numeric keys of config.json. */
static void test_model_keys_match_config(void **state)
{
    (void)state;
    model_config_t tiny;
    model_config_tiny(&tiny);
    char *text = model_config_to_json(&tiny);
    assert_non_null(text);
    json_t *root = json_loads(text, 0, NULL);
    assert_non_null(root);
    runspec_t *s = s_new_spec();
    const char *key;
    json_t *v;
    int numeric = 0;
    json_object_foreach(root, key, v)
    {
        if (!json_is_number(v))
            continue;
        numeric++;
        char extra[256];
        if (json_is_integer(v))
            snprintf(extra, sizeof extra, "model:\n  %s: %lld\n", key,
                     (long long)json_integer_value(v));
        else
            snprintf(extra, sizeof extra, "model:\n  %s: %.17g\n", key, json_real_value(v));
        char *y = s_with(extra);
        if (runspec_load_string(y, ORIGIN, s) != SHOAL_OK) {
            fprintf(stderr, "%s: %s\n", key, shoal_errmsg());
            fail();
        }
        assert_true(model_config_equal(&s->model, &tiny));
        free(y);
    }
    /* and the unknown-key message lists no other model key */
    char *y = s_with("model:\n  nope: 1\n");
    assert_int_equal(runspec_load_string(y, ORIGIN, s), SHOAL_ERR_INVALID);
    free(y);
    const char *list = strstr(shoal_errmsg(), "valid model keys: ");
    assert_non_null(list);
    char names[1024];
    snprintf(names, sizeof names, "%s", list + strlen("valid model keys: "));
    char *close = strchr(names, ')');
    assert_non_null(close);
    *close = '\0';
    int listed = 0;
    for (char *tok = strtok(names, ", "); tok; tok = strtok(NULL, ", ")) {
        if (strcmp(tok, "preset") == 0)
            continue;
        listed++;
        if (!json_is_number(json_object_get(root, tok))) {
            fprintf(stderr, "model.%s is not a config.json number key\n", tok);
            fail();
        }
    }
    assert_int_equal(listed, numeric);
    json_decref(root);
    free(text);
    free(s);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--describe") == 0) {
        runspec_describe(stdout);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_model_overrides_any_order),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_parallel_keys),
        cmocka_unit_test(test_precision_key),
        cmocka_unit_test(test_grad_sum_key),
        cmocka_unit_test(test_default_matches_example),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_key_errors),
        cmocka_unit_test(test_type_errors),
        cmocka_unit_test(test_range_errors),
        cmocka_unit_test(test_document_errors),
        cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_readme_table),
        cmocka_unit_test(test_model_keys_match_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
