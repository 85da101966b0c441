/* fuzz_safetensors: a safetensors file (8-byte header length, JSON header, data) through the
 * validating reader (common/safetensors.c, st_open_buffer). Invariant: every tensor of an
 * accepted file lies inside the buffer, and st_read_f32 of an F32 tensor reads within it. */
#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file_t *f = NULL;
    if (st_open_buffer(data, size, "fuzz.safetensors", &f) != SHOAL_OK)
        return 0;
    for (int i = 0; i < st_count(f); i++) {
        const char *name = st_name(f, i);
        st_info_t info;
        const void *p = NULL;
        uint64_t nbytes = 0;
        FUZZ_ASSERT(name && st_has(f, name));
        FUZZ_ASSERT(st_info(f, name, &info) == SHOAL_OK);
        FUZZ_ASSERT(st_data(f, name, &p, &nbytes) == SHOAL_OK);
        FUZZ_ASSERT(nbytes == info.nbytes);
        FUZZ_ASSERT((const uint8_t *)p >= data && (const uint8_t *)p + nbytes <= data + size);
        if (info.dtype == ST_F32 && info.numel <= 4096) {
            float out[4096];
            FUZZ_ASSERT(st_read_f32(f, name, out, info.numel) == SHOAL_OK);
        }
    }
    (void)st_metadata(f, "format");
    st_close(&f);
    return 0;
}
