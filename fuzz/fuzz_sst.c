/* libFuzzer target for the .sst reader (make fuzz).
 *
 * Each input is read twice: as given, and with its length field and crc32
 * rewritten, so that mutations get past the checksum into the layer parser.
 * Whatever the reader accepts must write back to the very same bytes and
 * decode to ternary matrices; anything else is a bug and traps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "sstc/sst.h"

static void check_accepted(const uint8_t *data, size_t size) {
    sstc_sst_model *m = NULL;
    if (sstc_sst_read_mem(data, size, &m)) {
        if (m) __builtin_trap(); /* no model may come back on failure */
        return;
    }
    uint8_t *buf = NULL;
    size_t n = 0;
    if (sstc_sst_write_mem(m, &buf, &n) || n != size || memcmp(buf, data, n)) __builtin_trap();
    free(buf);
    for (int i = 0; i < m->n_layers; i++) {
        const sstc_sst_layer *L = &m->layers[i];
        if (!L->coded) continue;
        int8_t *T = malloc((size_t)L->out * sstc_sst_fan_in(L) + 1);
        if (!T || sstc_sst_layer_ternary(L, T)) __builtin_trap();
        free(T);
    }
    sstc_sst_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_accepted(data, size);
    if (size < 40 || size > (1u << 22)) return 0;
    uint8_t *fixed = malloc(size);
    if (!fixed) return 0;
    memcpy(fixed, data, size);
    uint64_t n = size;
    for (int i = 0; i < 8; i++) fixed[8 + i] = (uint8_t)(n >> (8 * i));
    uint32_t crc = (uint32_t)crc32(0L, fixed, (uInt)(size - 4));
    for (int i = 0; i < 4; i++) fixed[size - 4 + i] = (uint8_t)(crc >> (8 * i));
    check_accepted(fixed, size);
    free(fixed);
    return 0;
}
