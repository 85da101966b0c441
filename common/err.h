/* err.h: the one result type of shoal, and a per-thread detail message for the last failure.
 *
 * Functions return shoal_err_t; the layer that detects a failure records what and where with
 * shoal_fail() (file name, tensor name, line:column, ...) and returns the code. The layer that
 * knows what to do reports it once, reading shoal_errmsg(). */
#ifndef SHOAL_ERR_H
#define SHOAL_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SHOAL_OK = 0,
    SHOAL_ERR_INVALID,  /* bad argument or bad input (config, CLI, message) */
    SHOAL_ERR_IO,       /* file system or socket I/O failed */
    SHOAL_ERR_FORMAT,   /* a file or message is malformed (truncated, wrong header, ...) */
    SHOAL_ERR_NOTFOUND, /* a file, tensor, key or worker does not exist */
    SHOAL_ERR_NOMEM,    /* allocation failed */
    SHOAL_ERR_TIMEOUT,  /* a peer did not answer in time */
    SHOAL_ERR_STATE,    /* the operation is not valid in the current state */
    SHOAL_ERR_DB,       /* RocksDB reported an error */
    SHOAL_ERR_CUDA,     /* a CUDA or NCCL call failed */
    SHOAL_ERR_ABORTED,  /* the operation was cancelled (signal, abort of a collective) */
    SHOAL_ERR_NUMERIC,  /* NaN/Inf or an out-of-range value in tensors */
    SHOAL_ERR__COUNT
} shoal_err_t;

/* Static name of a code, e.g. "invalid input". Never NULL. */
const char *shoal_strerror(shoal_err_t err);

/* Records a formatted detail message for this thread and returns `err` unchanged, so that
 * `return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s: ...", path, name);` reads naturally. */
shoal_err_t shoal_fail(shoal_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The detail message of this thread's last shoal_fail(), or the code's name if none was set
 * since shoal_err_clear(). Valid until the next shoal_fail() on this thread. */
const char *shoal_errmsg(void);

/* Prefixes this thread's detail message with more context ("loading checkpoint X: ..."). */
shoal_err_t shoal_fail_context(shoal_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void shoal_err_clear(void);

/* Jump to `label` with `rc` set when `call` fails. The jump is visible in the name. */
#define SHOAL_CHECK_GOTO(call, rc, label)                                                     \
    do {                                                                                      \
        (rc) = (call);                                                                        \
        if ((rc) != SHOAL_OK)                                                                 \
            goto label;                                                                       \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
