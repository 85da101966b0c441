/* fuzz_util.h: what the libFuzzer targets share: the entry point's prototype and a NUL-terminated
 * copy of the input for parsers that take C strings. Each target is one fuzz_TARGET.c; built with
 * -DSHOAL_FUZZ=ON (clang) it links libFuzzer, otherwise fuzz_replay.c replays its corpus as a
 * ctest. A parser bug must end in a sanitizer report or FUZZ_ASSERT (abort), never a return. */
#ifndef SHOAL_FUZZ_UTIL_H
#define SHOAL_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant the parser promises: its violation is a finding. */
#define FUZZ_ASSERT(cond)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/* malloc'd copy of the input with a NUL after it (NULL when out of memory). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = 0;
    }
    return s;
}

#endif
