/* numparse.c: strict decimal parsing (numparse.h). The grammar is checked by hand first, so that
 * strtoll/strtod never see what they would quietly accept (spaces, hex, "inf"). */
#include "numparse.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

/* Skips one optional sign (a '-' only when `minus` allows it); then requires digits only. */
static int s_digits_only(const char *s, int minus)
{
    if (*s == '+' || (minus && *s == '-'))
        s++;
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

shoal_err_t numparse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s_digits_only(s, 1))
        return shoal_fail(SHOAL_ERR_INVALID, "'%s' is not an integer", s);
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return shoal_fail(SHOAL_ERR_NUMERIC, "%s is out of range [%" PRId64 ", %" PRId64 "]", s,
                          min, max);
    if (v < min || v > max)
        return shoal_fail(SHOAL_ERR_NUMERIC, "%lld is out of range [%" PRId64 ", %" PRId64 "]", v,
                          min, max);
    *out = (int64_t)v;
    return SHOAL_OK;
}

shoal_err_t numparse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s_digits_only(s, 0))
        return shoal_fail(SHOAL_ERR_INVALID, "'%s' is not a non-negative integer", s);
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE)
        return shoal_fail(SHOAL_ERR_NUMERIC, "%s is out of range [0, %" PRIu64 "]", s, max);
    if (v > max)
        return shoal_fail(SHOAL_ERR_NUMERIC, "%llu is out of range [0, %" PRIu64 "]", v, max);
    *out = (uint64_t)v;
    return SHOAL_OK;
}

shoal_err_t numparse_int(const char *s, int min, int max, int *out)
{
    /* read only on SHOAL_OK; set anyway because gcc -O3 cannot see that shoal_fail's result is
     * never SHOAL_OK and reports v as maybe-uninitialized */
    int64_t v = 0;
    shoal_err_t rc = numparse_i64(s, min, max, &v);
    if (rc == SHOAL_OK)
        *out = (int)v;
    return rc;
}

static int s_decimal(const char *p)
{
    int digits = 0;
    if (*p == '+' || *p == '-')
        p++;
    for (; *p >= '0' && *p <= '9'; p++)
        digits++;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            digits++;
    if (!digits)
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

shoal_err_t numparse_double(const char *s, double *out)
{
    if (!s_decimal(s))
        return shoal_fail(SHOAL_ERR_INVALID, "'%s' is not a number", s);
    double v = strtod(s, NULL);
    if (!isfinite(v))
        return shoal_fail(SHOAL_ERR_NUMERIC, "%s is out of range", s);
    *out = v;
    return SHOAL_OK;
}
