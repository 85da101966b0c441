/* test_safetensors: safetensors round trip of every dtype, float conversions, truncated and
 * hostile files; and the sha256 and fsutil helpers the checkpoint format relies on. */
/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "safetensors.h"
#include "sha256.h"

static char s_dir[64];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "/tmp/shoal-st-XXXXXX");
    return mkdtemp(s_dir) ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    return fsutil_remove_tree(s_dir) == SHOAL_OK ? 0 : -1;
}

static void s_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", s_dir, name);
}

static void s_write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static uint32_t s_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- round trip ------------------------------------------------------------------------ */

static void test_round_trip_all_dtypes(void **state)
{
    (void)state;
    double f64[6] = {1.0 / 3.0, -2.5, 1e300, -0.0, 3.25, 1e-40};
    float f32[7] = {1.5f, -0.0f, 3.4e38f, 1e-42f, INFINITY, 0.1f, 0.0f};
    uint32_t nan_payload = 0x7fc01234u; /* a NaN with a payload must survive bit for bit */
    memcpy(&f32[6], &nan_payload, 4);
    uint16_t f16[4] = {st_f32_to_f16(1.0f), st_f32_to_f16(-65504.0f), 0x0001, 0x7c00};
    uint16_t bf16[3] = {st_f32_to_bf16(3.140625f), st_f32_to_bf16(-1e30f), 0x8000};
    int64_t i64[2] = {-((int64_t)1 << 40), 3};
    int32_t i32[2] = {1, -2};
    int16_t i16[1] = {-300};
    int8_t i8[3] = {-128, 0, 127};
    uint8_t u8[3] = {0, 255, 7};
    uint8_t bools[2] = {1, 0};
    float scalar = 42.0f;
    st_tensor_t t[] = {
        {"f64", ST_F64, 2, {2, 3}, f64},     {"f32", ST_F32, 1, {7}, f32},
        {"f16", ST_F16, 2, {2, 2}, f16},     {"bf16", ST_BF16, 1, {3}, bf16},
        {"i64", ST_I64, 1, {2}, i64},        {"i32", ST_I32, 2, {1, 2}, i32},
        {"i16", ST_I16, 1, {1}, i16},        {"i8", ST_I8, 1, {3}, i8},
        {"u8", ST_U8, 1, {3}, u8},           {"bool", ST_BOOL, 1, {2}, bools},
        {"scalar", ST_F32, 0, {0}, &scalar}, {"empty", ST_F32, 2, {0, 5}, NULL},
    };
    int n = (int)(sizeof t / sizeof t[0]);
    char path[256];
    s_path(path, sizeof path, "all.safetensors");
    const char *meta[] = {"format", "pt", "producer", "test \"quoted\" \xc3\xa9", NULL};
    assert_int_equal(st_write_file(path, t, n, meta), SHOAL_OK);

    /* header length is a multiple of 8 and no temp file is left */
    uint8_t *raw;
    size_t len;
    assert_int_equal(fsutil_read_file(path, &raw, &len), SHOAL_OK);
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    assert_int_equal(hlen % 8, 0);
    assert_true(8 + hlen <= len);
    free(raw);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);

    st_file_t *f = NULL;
    assert_int_equal(st_open(path, &f), SHOAL_OK);
    assert_int_equal(st_count(f), n);
    assert_string_equal(st_metadata(f, "format"), "pt");
    assert_string_equal(st_metadata(f, "producer"), "test \"quoted\" \xc3\xa9");
    assert_null(st_metadata(f, "nope"));
    for (int i = 0; i < n; i++) {
        /* data in the order given; zero-size tensors sort before the one at the same offset */
        st_info_t in;
        assert_int_equal(st_info(f, t[i].name, &in), SHOAL_OK);
        assert_int_equal(in.dtype, t[i].dtype);
        assert_int_equal(in.ndim, t[i].ndim);
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            assert_int_equal(in.shape[d], t[i].shape[d]);
            numel *= t[i].shape[d];
        }
        assert_int_equal(in.numel, numel);
        assert_int_equal(in.nbytes, (uint64_t)numel * st_dtype_size(t[i].dtype));
        const void *data;
        uint64_t nb;
        assert_int_equal(st_data(f, t[i].name, &data, &nb), SHOAL_OK);
        assert_int_equal(nb, in.nbytes);
        if (nb)
            assert_memory_equal(data, t[i].data, nb);
    }
    for (int i = 0; i < n; i++)
        assert_string_equal(st_name(f, i), t[i].name);
    assert_null(st_name(f, n));

    float out[8];
    assert_int_equal(st_read_f32(f, "f32", out, 7), SHOAL_OK);
    for (int i = 0; i < 7; i++)
        assert_int_equal(s_bits(out[i]), s_bits(f32[i]));
    assert_int_equal(st_read_f32(f, "f64", out, 6), SHOAL_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(s_bits(out[i]), s_bits((float)f64[i]));
    assert_int_equal(st_read_f32(f, "f16", out, 4), SHOAL_OK);
    assert_true(out[0] == 1.0f && out[1] == -65504.0f && out[2] == 0x1p-24f && isinf(out[3]));
    assert_int_equal(st_read_f32(f, "bf16", out, 3), SHOAL_OK);
    assert_true(out[0] == 3.140625f && out[1] == st_bf16_to_f32(bf16[1]));
    assert_int_equal(s_bits(out[2]), 0x80000000u);
    assert_int_equal(st_read_f32(f, "scalar", out, 1), SHOAL_OK);
    assert_true(out[0] == 42.0f);
    assert_int_equal(st_read_f32(f, "empty", out, 0), SHOAL_OK);

    /* errors name the file and the tensor */
    assert_int_equal(st_read_f32(f, "f32", out, 6), SHOAL_ERR_FORMAT);
    assert_non_null(strstr(shoal_errmsg(), path));
    assert_non_null(strstr(shoal_errmsg(), "f32"));
    assert_non_null(strstr(shoal_errmsg(), "[7]"));
    assert_int_equal(st_read_f32(f, "i32", out, 2), SHOAL_ERR_FORMAT);
    assert_non_null(strstr(shoal_errmsg(), "i32"));
    st_info_t in;
    assert_int_equal(st_info(f, "missing.weight", &in), SHOAL_ERR_NOTFOUND);
    assert_non_null(strstr(shoal_errmsg(), "missing.weight"));
    assert_non_null(strstr(shoal_errmsg(), path));
    assert_false(st_has(f, "missing.weight"));
    st_close(&f);
    assert_null(f);
    st_close(&f); /* idempotent */

    /* overwrite atomically with a different content */
    assert_int_equal(st_write_file(path, t, 1, NULL), SHOAL_OK);
    assert_int_equal(st_open(path, &f), SHOAL_OK);
    assert_int_equal(st_count(f), 1);
    assert_null(st_metadata(f, "format"));
    st_close(&f);
}

static void test_half_conversions(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = st_f16_to_f32((uint16_t)h);
        if (isnan(f))
            assert_true(st_f32_to_f16(f) == (uint16_t)(h | 0x200));
        else
            assert_int_equal(st_f32_to_f16(f), h);
        float b = st_bf16_to_f32((uint16_t)h);
        if (!isnan(b))
            assert_int_equal(st_f32_to_bf16(b), h);
        assert_int_equal(s_bits(b), h << 16);
    }
    assert_int_equal(st_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(st_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(st_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(st_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(st_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(st_f32_to_f16(0x1p-25f), 0x0000); /* tie to even: 0 */
    assert_int_equal(st_f32_to_f16(0x1.8p-25f), 0x0001);
    assert_int_equal(st_f32_to_f16(0x3p-25f), 0x0002);        /* 1.5 units: tie to even 2 */
    assert_int_equal(st_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie: stays even */
    assert_int_equal(st_f32_to_f16(1.0f + 0x3p-11f), 0x3c02);
    assert_int_equal(st_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(st_f32_to_f16(0x1.ffcp-15f), 0x0400);    /* rounds up into the normals */
    assert_int_equal(st_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie to even */
    assert_int_equal(st_f32_to_bf16(1.0f + 0x3p-8f), 0x3f82);
}

/* ---- damaged and hostile files --------------------------------------------------------- */

static void test_truncated_every_cut(void **state)
{
    (void)state;
    float a[5] = {1, 2, 3, 4, 5};
    int64_t b[2] = {7, 8};
    st_tensor_t t[] = {{"a", ST_F32, 1, {5}, a}, {"b", ST_I64, 2, {1, 2}, b}};
    char path[256], cut[256];
    s_path(path, sizeof path, "small.safetensors");
    s_path(cut, sizeof cut, "cut.safetensors");
    const char *meta[] = {"format", "pt", NULL};
    assert_int_equal(st_write_file(path, t, 2, meta), SHOAL_OK);
    uint8_t *raw;
    size_t len;
    assert_int_equal(fsutil_read_file(path, &raw, &len), SHOAL_OK);
    for (size_t n = 0; n < len; n++) {
        s_write_bytes(cut, raw, n);
        st_file_t *f = NULL;
        shoal_err_t rc = st_open(cut, &f);
        if (rc != SHOAL_ERR_FORMAT)
            fail_msg("cut at %zu of %zu: got %d (%s)", n, len, rc, shoal_errmsg());
        assert_null(f);
        assert_non_null(strstr(shoal_errmsg(), cut));
    }
    /* one trailing byte is damage too */
    uint8_t *more = malloc(len + 1);
    memcpy(more, raw, len);
    more[len] = 0;
    s_write_bytes(cut, more, len + 1);
    st_file_t *f = NULL;
    assert_int_equal(st_open(cut, &f), SHOAL_ERR_FORMAT);
    free(more);
    free(raw);
    char missing[256];
    s_path(missing, sizeof missing, "no-such.safetensors");
    assert_int_equal(st_open(missing, &f), SHOAL_ERR_NOTFOUND);
    assert_non_null(strstr(shoal_errmsg(), missing));
}

/* Writes a file with the given header length field, header text and `ndata` data bytes. */
static shoal_err_t s_open_raw(uint64_t hlen, const char *header, size_t ndata, const char *want)
{
    char path[256];
    s_path(path, sizeof path, "hostile.safetensors");
    size_t hl = strlen(header);
    size_t n = 8 + hl + ndata;
    uint8_t *buf = calloc(1, n);
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, header, hl);
    s_write_bytes(path, buf, n);
    free(buf);
    st_file_t *f = NULL;
    shoal_err_t rc = st_open(path, &f);
    if (rc == SHOAL_OK) {
        st_close(&f);
        fail_msg("accepted hostile header: %s", header);
    }
    if (!strstr(shoal_errmsg(), path) || (want && !strstr(shoal_errmsg(), want)))
        fail_msg("message '%s' lacks the path or '%s'", shoal_errmsg(), want ? want : "");
    return rc;
}

#define HOSTILE(hdr, ndata, want)                                                                  \
    assert_int_equal(s_open_raw(strlen(hdr), (hdr), (ndata), (want)), SHOAL_ERR_FORMAT)

static void test_hostile_headers(void **state)
{
    (void)state;
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    /* lengths: huge, "negative" as int64, beyond the file, zero */
    assert_int_equal(s_open_raw(UINT64_MAX, ok, 8, "header length"), SHOAL_ERR_FORMAT);
    assert_int_equal(s_open_raw((uint64_t)1 << 63, ok, 8, "header length"), SHOAL_ERR_FORMAT);
    assert_int_equal(s_open_raw(strlen(ok) + 9, ok, 8, "header length"), SHOAL_ERR_FORMAT);
    assert_int_equal(s_open_raw(0, ok, 8, NULL), SHOAL_ERR_FORMAT);
    /* the same header is fine with the right length: the harness itself is sound */
    {
        char path[256];
        s_path(path, sizeof path, "fine.safetensors");
        uint8_t buf[8 + 64 + 8] = {0};
        uint64_t hl = strlen(ok);
        memcpy(buf, &hl, 8);
        memcpy(buf + 8, ok, hl);
        s_write_bytes(path, buf, 8 + hl + 8);
        st_file_t *f = NULL;
        assert_int_equal(st_open(path, &f), SHOAL_OK);
        st_close(&f);
    }
    HOSTILE("[]", 0, "not an object");
    HOSTILE("{", 0, "invalid JSON");
    HOSTILE("{\"a\":1}", 0, "tensor a");
    HOSTILE("{\"a\":[]}", 0, "tensor a");
    HOSTILE("{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "F99");
    HOSTILE("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor a");
    HOSTILE("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":\"x\",\"data_offsets\":[0,4]}}", 4, "shape");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
            "dimensions");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],"
            "\"data_offsets\":[0,4]}}",
            4, "overflow");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}}", 4,
            "data_offsets");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "data_offsets");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "data_offsets");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "needs 8");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 4, "past");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
            "\"data_offsets\":[9223372036854775803,9223372036854775807]}}",
            4, "tensor a");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
            12, "overlaps");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
            4, "overlaps");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            8, "invalid JSON"); /* duplicate key */
    HOSTILE("{\"__metadata__\":[1]}", 0, "__metadata__");
    HOSTILE("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__");
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}\xff", 4,
            "invalid JSON"); /* bad UTF-8 */
    HOSTILE("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}xx", 4,
            "invalid JSON"); /* trailing garbage */
    HOSTILE("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
            "invalid JSON"); /* NUL in a name */
    /* trailing spaces (the padding), null metadata and no tensors are fine */
    char path[256];
    s_path(path, sizeof path, "pad.safetensors");
    const char *pad = "{\"__metadata__\":null}   ";
    uint8_t buf[32];
    uint64_t hl = strlen(pad);
    assert_int_equal(hl, 24);
    memcpy(buf, &hl, 8);
    memcpy(buf + 8, pad, hl);
    s_write_bytes(path, buf, 8 + hl);
    st_file_t *f = NULL;
    assert_int_equal(st_open(path, &f), SHOAL_OK);
    assert_int_equal(st_count(f), 0);
    assert_null(st_metadata(f, "format"));
    st_close(&f);
}

static void test_writer_rejects(void **state)
{
    (void)state;
    float a[2] = {1, 2};
    char path[256], tmp[300];
    s_path(path, sizeof path, "rejected.safetensors");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    st_tensor_t dup[] = {{"a", ST_F32, 1, {2}, a}, {"a", ST_F32, 1, {2}, a}};
    assert_int_equal(st_write_file(path, dup, 2, NULL), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "twice"));
    st_tensor_t bad[] = {
        {"", ST_F32, 1, {2}, a},     {"__metadata__", ST_F32, 1, {2}, a},
        {NULL, ST_F32, 1, {2}, a},   {"x", ST_F32, 9, {2}, a},
        {"x", ST_F32, 1, {-2}, a},   {"x", (st_dtype_t)99, 1, {2}, a},
        {"x", ST_F32, 1, {2}, NULL}, {"\xff", ST_F32, 1, {2}, a},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(st_write_file(path, &bad[i], 1, NULL), SHOAL_ERR_INVALID);
    const char *meta[] = {"k", NULL};
    assert_int_equal(st_write_file(path, dup, 1, meta), SHOAL_ERR_INVALID);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(access(tmp, F_OK), -1);
    /* a directory that does not exist: I/O error naming the file */
    assert_int_equal(st_write_file("/nonexistent-dir/x.safetensors", dup, 1, NULL), SHOAL_ERR_IO);
    assert_non_null(strstr(shoal_errmsg(), "/nonexistent-dir/x.safetensors"));
}

/* ---- sha256 and fsutil ----------------------------------------------------------------- */

static void test_sha256(void **state)
{
    (void)state;
    uint8_t d[SHA256_LEN], d2[SHA256_LEN];
    char hex[SHA256_HEX_LEN + 1];
    assert_int_equal(sha256_buf("abc", 3, d), SHOAL_OK);
    sha256_hex(d, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(sha256_buf("", 0, d), SHOAL_OK);
    sha256_hex(d, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(sha256_from_hex(hex, d2), SHOAL_OK);
    assert_memory_equal(d, d2, SHA256_LEN);
    assert_int_equal(sha256_from_hex("xyz", d2), SHOAL_ERR_FORMAT);
    hex[5] = 'g';
    assert_int_equal(sha256_from_hex(hex, d2), SHOAL_ERR_FORMAT);

    /* streamed == one shot, for a file bigger than one read chunk */
    size_t n = (3u << 20) + 17;
    uint8_t *buf = malloc(n);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    char path[256];
    s_path(path, sizeof path, "blob");
    assert_int_equal(fsutil_write_file(path, buf, n), SHOAL_OK);
    uint64_t size = 0;
    assert_int_equal(sha256_file(path, d, &size), SHOAL_OK);
    assert_int_equal(size, n);
    assert_int_equal(sha256_buf(buf, n, d2), SHOAL_OK);
    assert_memory_equal(d, d2, SHA256_LEN);
    sha256_t *h = sha256_new();
    assert_non_null(h);
    assert_int_equal(sha256_update(h, buf, 1000), SHOAL_OK);
    assert_int_equal(sha256_update(h, buf + 1000, n - 1000), SHOAL_OK);
    assert_int_equal(sha256_final(h, d2), SHOAL_OK);
    sha256_destroy(&h);
    assert_null(h);
    assert_memory_equal(d, d2, SHA256_LEN);
    free(buf);
    s_path(path, sizeof path, "no-such-file");
    assert_int_equal(sha256_file(path, d, NULL), SHOAL_ERR_NOTFOUND);
    assert_non_null(strstr(shoal_errmsg(), path));
}

static void test_fsutil(void **state)
{
    (void)state;
    char p[320], q[256], target[256], link[300];
    s_path(p, sizeof p, "a/b/c/");
    assert_int_equal(fsutil_mkdir_p(p), SHOAL_OK);
    assert_int_equal(fsutil_mkdir_p(p), SHOAL_OK);
    s_path(q, sizeof q, "a/b/c/file.txt");
    assert_int_equal(fsutil_write_file_atomic(q, "hello", 5), SHOAL_OK);
    uint8_t *data;
    size_t len;
    assert_int_equal(fsutil_read_file(q, &data, &len), SHOAL_OK);
    assert_int_equal(len, 5);
    assert_string_equal((char *)data, "hello"); /* NUL-terminated */
    free(data);
    uint64_t size;
    assert_int_equal(fsutil_file_size(q, &size), SHOAL_OK);
    assert_int_equal(size, 5);
    snprintf(p, sizeof p, "%s/sub", q);
    assert_int_equal(fsutil_mkdir_p(p), SHOAL_ERR_IO); /* a file is in the way */
    s_path(p, sizeof p, "a/none");
    assert_int_equal(fsutil_read_file(p, &data, &len), SHOAL_ERR_NOTFOUND);
    assert_non_null(strstr(shoal_errmsg(), p));

    /* remove_tree does not follow symlinks out of the tree */
    s_path(target, sizeof target, "outside.txt");
    assert_int_equal(fsutil_write_file(target, "keep", 4), SHOAL_OK);
    s_path(link, sizeof link, "a/b/link");
    assert_int_equal(symlink(target, link), 0);
    s_path(p, sizeof p, "a/b/d");
    assert_int_equal(symlink(s_dir, p), 0); /* a link to a directory above */
    s_path(p, sizeof p, "a");
    assert_int_equal(fsutil_remove_tree(p), SHOAL_OK);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(access(target, F_OK), 0);
    assert_int_equal(fsutil_remove_tree(p), SHOAL_OK); /* missing is fine */

    char d[64];
    fsutil_dirname("/x/y/z", d, sizeof d);
    assert_string_equal(d, "/x/y");
    fsutil_dirname("z", d, sizeof d);
    assert_string_equal(d, ".");
    fsutil_dirname("/z", d, sizeof d);
    assert_string_equal(d, "/");
    char small[8];
    assert_int_equal(fsutil_path(small, sizeof small, "%s/%s", "abcd", "def"), SHOAL_ERR_INVALID);
    assert_int_equal(fsutil_path(small, sizeof small, "%s/%s", "ab", "c"), SHOAL_OK);
    assert_string_equal(small, "ab/c");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_all_dtypes),
        cmocka_unit_test(test_half_conversions),
        cmocka_unit_test(test_truncated_every_cut),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_fsutil),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
