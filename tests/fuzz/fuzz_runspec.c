/* fuzz_runspec: run spec YAML (common/runspec.c) as `shoalctl submit` and the coordinator read
 * it. Invariant: a spec that loads serialises (runspec_to_yaml) to YAML that loads again. */
#include "fuzz_util.h"
#include "runspec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    if (!text || strlen(text) != size) { /* the loader takes a C string: no NUL inside */
        free(text);
        return 0;
    }
    runspec_t spec;
    if (runspec_load_string(text, "fuzz.yaml", &spec) == SHOAL_OK) {
        FUZZ_ASSERT(runspec_validate(&spec) == SHOAL_OK);
        char *again = runspec_to_yaml(&spec);
        FUZZ_ASSERT(again != NULL);
        runspec_t spec2;
        if (runspec_load_string(again, "again.yaml", &spec2) != SHOAL_OK) {
            fprintf(stderr, "%s\n--- serialised as ---\n%s\n", shoal_errmsg(), again);
            FUZZ_ASSERT(!"a loaded spec's YAML loads again");
        }
        free(again);
    }
    free(text);
    return 0;
}
