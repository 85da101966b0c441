/* safetensors.h: reader and writer of the safetensors format (Hugging Face): an 8-byte
 * little-endian header length N, N bytes of JSON header, then raw little-endian tensor data.
 * The header maps name -> {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to
 * the data start) plus an optional "__metadata__" object of string -> string. */
#ifndef SHOAL_SAFETENSORS_H
#define SHOAL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ST_MAX_NDIM 8
/* Largest JSON header accepted by the reader (the reference implementation's limit). */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

typedef enum {
    ST_F64,
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_I64,
    ST_I32,
    ST_I16,
    ST_I8,
    ST_U8,
    ST_BOOL,
    ST_DTYPE__COUNT
} st_dtype_t;

/* Header name of a dtype ("F32"), or NULL for an invalid value. */
const char *st_dtype_name(st_dtype_t dtype);
/* Bytes per element, or 0 for an invalid value. */
size_t st_dtype_size(st_dtype_t dtype);
/* Looks up a header name; SHOAL_ERR_NOTFOUND if unknown (no message recorded). */
shoal_err_t st_dtype_parse(const char *name, st_dtype_t *dtype);

/* ---- reader ---------------------------------------------------------------------------- */

typedef struct st_file st_file_t;

typedef struct {
    st_dtype_t dtype;
    int ndim; /* 0 = scalar */
    int64_t shape[ST_MAX_NDIM];
    int64_t numel;
    uint64_t nbytes;
} st_info_t;

/* Maps `path` read-only and validates the whole header: file shorter than 8 bytes, header
 * length beyond the file, invalid JSON or UTF-8, duplicate names, entries that are not objects,
 * unknown dtypes, bad shapes, data_offsets that do not match the shape, lie outside the data,
 * overlap or leave gaps or trailing bytes -> SHOAL_ERR_FORMAT with a message naming the file (and
 * the tensor). Missing file: SHOAL_ERR_NOTFOUND. On success *out is owned by the caller
 * (st_close). The file must not be truncated while open (it is mmap'd). */
shoal_err_t st_open(const char *path, st_file_t **out);

/* st_open over `len` bytes already in memory (borrowed: they must outlive *out); `origin`
 * names them in errors. The same validation, for files received or held in memory (and for
 * the fuzz target). */
shoal_err_t st_open_buffer(const void *buf, size_t len, const char *origin, st_file_t **out);

/* Closes and NULLs *f; idempotent. */
void st_close(st_file_t **f);

/* The path given to st_open. */
const char *st_path(const st_file_t *f);

/* Number of tensors (the metadata entry not counted). */
int st_count(const st_file_t *f);

/* Name of tensor i (0 <= i < st_count), in data-offset order; NULL if out of range. The string
 * lives as long as `f`. */
const char *st_name(const st_file_t *f, int i);

/* 1 if `name` is a tensor of the file, else 0. */
int st_has(const st_file_t *f, const char *name);

/* Fills `info` for `name`. SHOAL_ERR_NOTFOUND with a message naming the file and the tensor. */
shoal_err_t st_info(const st_file_t *f, const char *name, st_info_t *info);

/* Raw little-endian bytes of `name` (valid while `f` is open, possibly unaligned). */
shoal_err_t st_data(const st_file_t *f, const char *name, const void **data, uint64_t *nbytes);

/* Reads `name` into dst[numel_expected] as float32, converting from F32 (bit-exact), F64
 * (rounded to nearest), BF16 and F16 (exact). A different element count: SHOAL_ERR_FORMAT
 * naming file, tensor, expected count and the file's shape; other dtypes: SHOAL_ERR_FORMAT. */
shoal_err_t st_read_f32(const st_file_t *f, const char *name, float *dst, int64_t numel_expected);

/* Metadata value for `key`, or NULL. Lives as long as `f`. */
const char *st_metadata(const st_file_t *f, const char *key);

/* ---- writer ---------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_NDIM];
    const void *data; /* numel * itemsize little-endian bytes; may be NULL when numel == 0 */
} st_tensor_t;

/* Writes the tensors, data in the order given, header padded with spaces to a multiple of 8
 * (as moe_ref.py st_write). `meta_kv` is NULL or a NULL-terminated list of key, value strings
 * for "__metadata__". The file is written to `path`.tmp, fsynced, renamed to `path` and the
 * directory fsynced, so `path` is either the old file or the complete new one.
 * Bad names (empty, duplicate, "__metadata__"), dtypes or shapes: SHOAL_ERR_INVALID. */
shoal_err_t st_write_file(const char *path, const st_tensor_t *t, int n,
                          const char *const *meta_kv);

/* Half-precision helpers (exposed for tests and kernels). Round to nearest even. */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);
uint16_t st_f32_to_f16(float f);
uint16_t st_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
