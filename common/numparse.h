/* numparse.h: strict number parsing for flags, config values and YAML scalars. The whole string
 * is the number: no leading or trailing space, no trailing junk, decimal only (no hex, octal,
 * "inf" or "nan"). Every failure records a message (shoal_errmsg) that quotes the text and says
 * what was wrong; callers prefix it with where it came from (shoal_fail_context).
 *
 * Return codes, the same for every function:
 *   SHOAL_OK           *out is set;
 *   SHOAL_ERR_INVALID  not a number of that kind ("'two' is not an integer");
 *   SHOAL_ERR_NUMERIC  a number, but outside the bounds or the type ("10 is out of range
 *                      [50, 86400000]", "1e999 is out of range"); *out is left alone. */
#ifndef SHOAL_NUMPARSE_H
#define SHOAL_NUMPARSE_H

#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* [+-]?[0-9]+ within [min, max]. */
shoal_err_t numparse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* [+]?[0-9]+ within [0, max] (a '-' is refused, never wrapped around). */
shoal_err_t numparse_u64(const char *s, uint64_t max, uint64_t *out);

/* numparse_i64 for an int within [min, max]. */
shoal_err_t numparse_int(const char *s, int min, int max, int *out);

/* [+-]?(D+[.D*]|.D+)([eE][+-]?D+)? and finite; bounds are the caller's (open or closed). A value
 * too small for a double reads as 0 or a subnormal, as strtod gives it. */
shoal_err_t numparse_double(const char *s, double *out);

#ifdef __cplusplus
}
#endif
#endif
