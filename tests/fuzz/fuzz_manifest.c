/* fuzz_manifest: a checkpoint's manifest.json (checkpoint/ckpt_manifest.c) as a worker reads it
 * from its own disk or a peer's. Invariant: an accepted manifest lists plain file names (no
 * path, within bounds) with 64-hex digests. */
#include "ckpt.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ckpt_manifest_t m; /* large (CKPT_MANIFEST_MAX_FILES entries): not on the stack */
    if (ckpt_manifest_parse((const char *)data, size, "fuzz/manifest.json", &m) != SHOAL_OK)
        return 0;
    FUZZ_ASSERT(m.n_files >= 0 && m.n_files <= CKPT_MANIFEST_MAX_FILES);
    for (int i = 0; i < m.n_files; i++) {
        FUZZ_ASSERT(m.files[i].name[0] && !strchr(m.files[i].name, '/'));
        FUZZ_ASSERT(strlen(m.files[i].sha256) == 64);
    }
    return 0;
}
