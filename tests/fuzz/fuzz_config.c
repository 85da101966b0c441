/* fuzz_config: the coordinator config YAML (coordinator/config.c over common/cfgtable.c), then
 * config_finish (derived values, ipc path bounds). */
#include "config.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    coord_config_t cfg;
    config_defaults(&cfg);
    if (config_load_string(&cfg, (const char *)data, size, "fuzz.yaml") == SHOAL_OK &&
        config_finish(&cfg) == SHOAL_OK) {
        /* every string setting stays NUL-terminated within its buffer */
        FUZZ_ASSERT(memchr(cfg.state_dir, 0, sizeof cfg.state_dir) != NULL);
        FUZZ_ASSERT(memchr(cfg.control, 0, sizeof cfg.control) != NULL);
        FUZZ_ASSERT(memchr(cfg.listen, 0, sizeof cfg.listen) != NULL);
    }
    return 0;
}
