/* safetensors.c: validating mmap reader and fsync'd writer of safetensors files; JSON headers
 * are parsed and built with jansson. The host is assumed little-endian (as the format). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

static const struct {
    const char *name;
    size_t size;
} s_dtypes[ST_DTYPE__COUNT] = {
    [ST_F64] = {"F64", 8}, [ST_F32] = {"F32", 4},   [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},   [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_BOOL] = {"BOOL", 1},
};

const char *st_dtype_name(st_dtype_t dtype)
{
    return (unsigned)dtype < ST_DTYPE__COUNT ? s_dtypes[dtype].name : NULL;
}

size_t st_dtype_size(st_dtype_t dtype)
{
    return (unsigned)dtype < ST_DTYPE__COUNT ? s_dtypes[dtype].size : 0;
}

shoal_err_t st_dtype_parse(const char *name, st_dtype_t *dtype)
{
    for (int i = 0; i < ST_DTYPE__COUNT; i++)
        if (strcmp(name, s_dtypes[i].name) == 0) {
            *dtype = (st_dtype_t)i;
            return SHOAL_OK;
        }
    return SHOAL_ERR_NOTFOUND;
}

/* ---- half-precision conversions -------------------------------------------------------- */

float st_bf16_to_f32(uint16_t b)
{
    uint32_t x = (uint32_t)b << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t st_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40); /* NaN stays NaN (quiet) */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in float32 */
        float v = (float)man * 0x1p-24f;
        memcpy(&bits, &v, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t st_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* Inf, NaN (kept quiet) */
        return sign | 0x7c00u | (ax > 0x7f800000u ? (0x200u | ((ax >> 13) & 0x3ffu)) : 0u);
    if (ax >= 0x477ff000u) /* >= 65520 rounds to Inf */
        return sign | 0x7c00u;
    if (ax <= 0x33000000u) /* <= 2^-25 rounds to zero (the tie goes to even 0) */
        return sign;
    uint32_t e = ax >> 23;
    if (e < 113) { /* subnormal half: units of 2^-24 */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return sign | (uint16_t)q;
    }
    uint32_t h = ((e - 112) << 10) | ((ax & 0x7fffffu) >> 13);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return sign | (uint16_t)h;
}

/* ---- reader ---------------------------------------------------------------------------- */

typedef struct {
    char *name;
    st_info_t info;
    uint64_t begin, end;
} s_entry_t;

struct st_file {
    char *path;
    uint8_t *map;
    size_t map_len;
    int borrowed; /* map is the caller's buffer (st_open_buffer), not an mmap */
    const uint8_t *data; /* start of the data section */
    uint64_t data_len;
    s_entry_t *ent; /* sorted by data offset */
    int n;
    s_entry_t **by_name; /* the entries sorted by name */
    char **meta_key, **meta_val;
    int n_meta;
};

static int s_cmp_offset(const void *a, const void *b)
{
    const s_entry_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static int s_cmp_name(const void *a, const void *b)
{
    return strcmp((*(s_entry_t *const *)a)->name, (*(s_entry_t *const *)b)->name);
}

static int s_find(const st_file_t *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0)
            return (int)(f->by_name[mid] - f->ent);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static shoal_err_t s_parse_metadata(st_file_t *f, json_t *meta)
{
    if (json_is_null(meta)) /* the Python readers take null as "no metadata" */
        return SHOAL_OK;
    if (!json_is_object(meta))
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: __metadata__ is not a JSON object", f->path);
    size_t n = json_object_size(meta);
    f->meta_key = calloc(n + 1, sizeof *f->meta_key);
    f->meta_val = calloc(n + 1, sizeof *f->meta_val);
    if (!f->meta_key || !f->meta_val)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", f->path);
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v)
    {
        if (!json_is_string(v))
            return shoal_fail(SHOAL_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string",
                              f->path, k);
        f->meta_key[f->n_meta] = strdup(k);
        f->meta_val[f->n_meta] = strdup(json_string_value(v));
        if (!f->meta_key[f->n_meta] || !f->meta_val[f->n_meta])
            return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", f->path);
        f->n_meta++;
    }
    return SHOAL_OK;
}

static shoal_err_t s_parse_entry(st_file_t *f, const char *name, json_t *obj, s_entry_t *e)
{
    const char *p = f->path;
    if (!json_is_object(obj))
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: header entry is not a JSON object", p,
                          name);
    json_t *jd = json_object_get(obj, "dtype");
    json_t *js = json_object_get(obj, "shape");
    json_t *jo = json_object_get(obj, "data_offsets");
    if (!json_is_string(jd))
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: dtype missing or not a string", p,
                          name);
    if (st_dtype_parse(json_string_value(jd), &e->info.dtype) != SHOAL_OK)
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: unknown dtype '%s'", p, name,
                          json_string_value(jd));
    if (!json_is_array(js))
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: shape missing or not an array", p,
                          name);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_NDIM)
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: %zu dimensions (at most %d)", p, name,
                          nd, ST_MAX_NDIM);
    int64_t numel = 1;
    e->info.ndim = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return shoal_fail(SHOAL_ERR_FORMAT,
                              "%s: tensor %s: shape[%zu] is not a non-negative integer", p, name,
                              i);
        e->info.shape[i] = (int64_t)json_integer_value(d);
        if (__builtin_mul_overflow(numel, e->info.shape[i], &numel))
            return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: shape overflows", p, name);
    }
    e->info.numel = numel;
    uint64_t nbytes;
    if (__builtin_mul_overflow((uint64_t)numel, (uint64_t)st_dtype_size(e->info.dtype), &nbytes))
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: shape overflows", p, name);
    e->info.nbytes = nbytes;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return shoal_fail(SHOAL_ERR_FORMAT,
                          "%s: tensor %s: data_offsets is not an array of two integers", p, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0));
    json_int_t en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < b)
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: bad data_offsets [%lld, %lld]", p, name,
                          (long long)b, (long long)en);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    if (e->end - e->begin != nbytes)
        return shoal_fail(SHOAL_ERR_FORMAT,
                          "%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes but %s "
                          "shape of %lld elements needs %llu",
                          p, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                          (unsigned long long)(e->end - e->begin), st_dtype_name(e->info.dtype),
                          (long long)numel, (unsigned long long)nbytes);
    if (e->end > f->data_len)
        return shoal_fail(SHOAL_ERR_FORMAT,
                          "%s: tensor %s: data_offsets end %llu is past the %llu data bytes of "
                          "the file (truncated?)",
                          p, name, (unsigned long long)e->end, (unsigned long long)f->data_len);
    e->name = strdup(name);
    if (!e->name)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", p);
    return SHOAL_OK;
}

static shoal_err_t s_parse_header(st_file_t *f)
{
    const char *p = f->path;
    if (f->map_len < 8)
        return shoal_fail(SHOAL_ERR_FORMAT,
                          "%s: %zu bytes is too short for a safetensors file (8-byte header "
                          "length missing)",
                          p, f->map_len);
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > f->map_len - 8)
        return shoal_fail(SHOAL_ERR_FORMAT,
                          "%s: header length %llu exceeds the file size %zu (truncated?)", p,
                          (unsigned long long)hlen, f->map_len);
    if (hlen > ST_MAX_HEADER)
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: header length %llu is above the limit %u", p,
                          (unsigned long long)hlen, ST_MAX_HEADER);
    f->data = f->map + 8 + hlen;
    f->data_len = f->map_len - 8 - hlen;

    json_error_t jerr;
    json_t *root =
        json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: invalid JSON header at byte %d: %s", p,
                          jerr.position, jerr.text);
    shoal_err_t rc = SHOAL_OK;
    if (!json_is_object(root)) {
        rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: JSON header is not an object", p);
        goto out;
    }
    size_t total = json_object_size(root);
    f->ent = calloc(total + 1, sizeof *f->ent);
    f->by_name = calloc(total + 1, sizeof *f->by_name);
    if (!f->ent || !f->by_name) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", p);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            rc = s_parse_metadata(f, val);
        } else {
            rc = s_parse_entry(f, key, val, &f->ent[f->n]);
            if (rc == SHOAL_OK)
                f->n++;
        }
        if (rc != SHOAL_OK)
            goto out;
    }
    /* The data section must be covered exactly once, as the reference implementation checks:
     * overlaps would alias tensors, gaps or trailing bytes mean a damaged or foreign file. */
    qsort(f->ent, (size_t)f->n, sizeof *f->ent, s_cmp_offset);
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        const s_entry_t *e = &f->ent[i];
        if (e->begin < at) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: data [%llu, %llu) overlaps tensor %s",
                            p, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                            f->ent[i - 1].name);
            goto out;
        }
        if (e->begin > at) {
            rc = shoal_fail(SHOAL_ERR_FORMAT,
                            "%s: tensor %s: data starts at %llu, leaving a gap after byte %llu", p,
                            e->name, (unsigned long long)e->begin, (unsigned long long)at);
            goto out;
        }
        at = e->end;
    }
    if (at != f->data_len) {
        rc = shoal_fail(SHOAL_ERR_FORMAT,
                        "%s: tensors cover %llu data bytes but the file holds %llu", p,
                        (unsigned long long)at, (unsigned long long)f->data_len);
        goto out;
    }
    for (int i = 0; i < f->n; i++)
        f->by_name[i] = &f->ent[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, s_cmp_name);
out:
    json_decref(root);
    return rc;
}

shoal_err_t st_open(const char *path, st_file_t **out)
{
    *out = NULL;
    st_file_t *f = calloc(1, sizeof *f);
    if (!f)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
    shoal_err_t rc = SHOAL_OK;
    int fd = -1;
    f->path = strdup(path);
    if (!f->path) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = shoal_fail(errno == ENOENT ? SHOAL_ERR_NOTFOUND : SHOAL_ERR_IO, "%s: %s", path,
                        strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: not a readable regular file", path);
        goto fail;
    }
    f->map_len = (size_t)st.st_size;
    if (f->map_len >= 8) {
        /* mmap instead of read: a multi-GiB shard is then never held twice in memory. */
        void *m = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = shoal_fail(SHOAL_ERR_IO, "%s: mmap: %s", path, strerror(errno));
            goto fail;
        }
        f->map = m;
    }
    close(fd);
    fd = -1;
    if ((rc = s_parse_header(f)) != SHOAL_OK)
        goto fail;
    *out = f;
    return SHOAL_OK;
fail:
    if (fd >= 0)
        close(fd);
    st_close(&f);
    return rc;
}

shoal_err_t st_open_buffer(const void *buf, size_t len, const char *origin, st_file_t **out)
{
    *out = NULL;
    st_file_t *f = calloc(1, sizeof *f);
    if (!f)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", origin);
    f->borrowed = 1;
    f->map = (uint8_t *)buf;
    f->map_len = len;
    shoal_err_t rc = SHOAL_OK;
    if (!(f->path = strdup(origin)))
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", origin);
    else
        rc = s_parse_header(f);
    if (rc == SHOAL_OK)
        *out = f;
    else
        st_close(&f);
    return rc;
}

void st_close(st_file_t **fp)
{
    if (!fp || !*fp)
        return;
    st_file_t *f = *fp;
    if (f->map && !f->borrowed)
        munmap(f->map, f->map_len);
    if (f->ent)
        for (int i = 0; i < f->n; i++)
            free(f->ent[i].name);
    free(f->ent);
    free(f->by_name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_key[i]);
        free(f->meta_val[i]);
    }
    /* a failed metadata parse may leave one half-filled pair */
    if (f->meta_key) {
        free(f->meta_key[f->n_meta]);
        free(f->meta_val[f->n_meta]);
    }
    free(f->meta_key);
    free(f->meta_val);
    free(f->path);
    free(f);
    *fp = NULL;
}

const char *st_path(const st_file_t *f)
{
    return f->path;
}

int st_count(const st_file_t *f)
{
    return f->n;
}

const char *st_name(const st_file_t *f, int i)
{
    return (i >= 0 && i < f->n) ? f->ent[i].name : NULL;
}

int st_has(const st_file_t *f, const char *name)
{
    return s_find(f, name) >= 0;
}

shoal_err_t st_info(const st_file_t *f, const char *name, st_info_t *info)
{
    int i = s_find(f, name);
    if (i < 0)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: tensor %s not found", f->path, name);
    *info = f->ent[i].info;
    return SHOAL_OK;
}

shoal_err_t st_data(const st_file_t *f, const char *name, const void **data, uint64_t *nbytes)
{
    int i = s_find(f, name);
    if (i < 0)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: tensor %s not found", f->path, name);
    *data = f->data + f->ent[i].begin;
    *nbytes = f->ent[i].info.nbytes;
    return SHOAL_OK;
}

static void s_shape_str(const st_info_t *in, char *buf, size_t cap)
{
    size_t at = 0;
    at += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < in->ndim && at < cap; i++)
        at +=
            (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? ", " : "", (long long)in->shape[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, "]");
}

shoal_err_t st_read_f32(const st_file_t *f, const char *name, float *dst, int64_t numel_expected)
{
    int i = s_find(f, name);
    if (i < 0)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: tensor %s not found", f->path, name);
    const st_info_t *in = &f->ent[i].info;
    if (in->numel != numel_expected) {
        char shape[128];
        s_shape_str(in, shape, sizeof shape);
        return shoal_fail(SHOAL_ERR_FORMAT,
                          "%s: tensor %s: expected %lld elements, the file has shape %s "
                          "(%lld elements)",
                          f->path, name, (long long)numel_expected, shape, (long long)in->numel);
    }
    const uint8_t *src = f->data + f->ent[i].begin;
    size_t n = (size_t)in->numel;
    switch (in->dtype) {
    case ST_F32:
        if (n)
            memcpy(dst, src, n * 4);
        break;
    case ST_F64:
        for (size_t k = 0; k < n; k++) {
            double d;
            memcpy(&d, src + 8 * k, 8);
            dst[k] = (float)d;
        }
        break;
    case ST_BF16:
        for (size_t k = 0; k < n; k++) {
            uint16_t h;
            memcpy(&h, src + 2 * k, 2);
            dst[k] = st_bf16_to_f32(h);
        }
        break;
    case ST_F16:
        for (size_t k = 0; k < n; k++) {
            uint16_t h;
            memcpy(&h, src + 2 * k, 2);
            dst[k] = st_f16_to_f32(h);
        }
        break;
    default:
        return shoal_fail(SHOAL_ERR_FORMAT,
                          "%s: tensor %s: dtype %s cannot be read as float32 (F32, F64, BF16 or "
                          "F16 expected)",
                          f->path, name, st_dtype_name(in->dtype));
    }
    return SHOAL_OK;
}

const char *st_metadata(const st_file_t *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_key[i], key) == 0)
            return f->meta_val[i];
    return NULL;
}

/* ---- writer ---------------------------------------------------------------------------- */

static shoal_err_t s_build_header(const char *path, const st_tensor_t *t, int n,
                                  const char *const *meta_kv, uint64_t *nbytes, char **text)
{
    shoal_err_t rc = SHOAL_OK;
    json_t *root = json_object();
    if (!root)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
    if (meta_kv) {
        json_t *meta = json_object();
        if (!meta || json_object_set_new(root, "__metadata__", meta) != 0) {
            rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
            goto out;
        }
        for (int i = 0; meta_kv[i]; i += 2) {
            if (!meta_kv[i + 1]) {
                rc = shoal_fail(SHOAL_ERR_INVALID, "%s: metadata key '%s' has no value", path,
                                meta_kv[i]);
                goto out;
            }
            json_t *v = json_string(meta_kv[i + 1]);
            if (!v || json_object_set_new(meta, meta_kv[i], v) != 0) {
                rc = shoal_fail(SHOAL_ERR_INVALID, "%s: metadata '%s' is not valid UTF-8", path,
                                meta_kv[i]);
                goto out;
            }
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const st_tensor_t *x = &t[i];
        const char *nm = x->name ? x->name : "(null)";
        size_t isz = st_dtype_size(x->dtype);
        if (!x->name || !x->name[0] || strcmp(x->name, "__metadata__") == 0) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "%s: tensor %d has an invalid name '%s'", path, i,
                            nm);
            goto out;
        }
        if (json_object_get(root, x->name)) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "%s: tensor %s given twice", path, nm);
            goto out;
        }
        if (isz == 0 || x->ndim < 0 || x->ndim > ST_MAX_NDIM) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "%s: tensor %s: bad dtype or ndim %d", path, nm,
                            x->ndim);
            goto out;
        }
        uint64_t numel = 1;
        json_t *shape = json_array();
        json_t *ent = json_object();
        json_t *offs = json_array();
        int bad = !shape || !ent || !offs;
        if (!bad)
            bad = json_object_set_new(ent, "dtype", json_string(st_dtype_name(x->dtype))) ||
                  json_object_set(ent, "shape", shape) ||
                  json_object_set(ent, "data_offsets", offs) || json_object_set(root, x->name, ent);
        for (int d = 0; !bad && d < x->ndim; d++) {
            if (x->shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)x->shape[d], &numel)) {
                bad = 2;
                break;
            }
            bad = json_array_append_new(shape, json_integer(x->shape[d]));
        }
        uint64_t sz = 0;
        if (!bad && (__builtin_mul_overflow(numel, (uint64_t)isz, &sz) ||
                     __builtin_add_overflow(off, sz, &sz) || sz > (uint64_t)INT64_MAX))
            bad = 2;
        if (!bad)
            bad = json_array_append_new(offs, json_integer((json_int_t)off)) ||
                  json_array_append_new(offs, json_integer((json_int_t)sz));
        json_decref(shape);
        json_decref(ent);
        json_decref(offs);
        if (bad) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "%s: tensor %s: %s", path, nm,
                            bad == 2 ? "bad shape" : "name is not valid UTF-8 (or out of memory)");
            goto out;
        }
        if (sz > off && !x->data) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "%s: tensor %s: no data", path, nm);
            goto out;
        }
        off = sz;
    }
    *nbytes = off;
    *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!*text)
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: cannot format the JSON header", path);
out:
    json_decref(root);
    return rc;
}

shoal_err_t st_write_file(const char *path, const st_tensor_t *t, int n, const char *const *meta_kv)
{
    if (n < 0 || (n > 0 && !t))
        return shoal_fail(SHOAL_ERR_INVALID, "%s: bad tensor list", path);
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return shoal_fail(SHOAL_ERR_INVALID, "%s: path too long", path);
    char *text = NULL;
    uint8_t *head = NULL;
    uint64_t data_bytes = 0;
    int fd = -1;
    shoal_err_t rc = s_build_header(path, t, n, meta_kv, &data_bytes, &text);
    if (rc != SHOAL_OK)
        goto out;
    size_t len = strlen(text);
    size_t hlen = (len + 7) & ~(size_t)7; /* pad with spaces so the data starts 8-aligned */
    head = malloc(8 + hlen);
    if (!head) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    uint64_t hlen64 = hlen;
    memcpy(head, &hlen64, 8);
    memcpy(head + 8, text, len);
    memset(head + 8 + len, ' ', hlen - len);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    if ((rc = fsutil_write_all(fd, head, 8 + hlen, tmp)) != SHOAL_OK)
        goto out_unlink;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++)
            numel *= (uint64_t)t[i].shape[d];
        uint64_t nb = numel * st_dtype_size(t[i].dtype);
        if (nb && (rc = fsutil_write_all(fd, t[i].data, (size_t)nb, tmp)) != SHOAL_OK)
            goto out_unlink;
    }
    if (fsync(fd) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
        goto out_unlink;
    }
    int cr = close(fd);
    fd = -1;
    if (cr != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: close: %s", tmp, strerror(errno));
        goto out_unlink;
    }
    if ((rc = fsutil_rename(tmp, path)) != SHOAL_OK)
        goto out_unlink;
    goto out;
out_unlink:
    if (fd >= 0)
        close(fd);
    fd = -1;
    unlink(tmp);
out:
    free(head);
    free(text);
    return rc;
}
