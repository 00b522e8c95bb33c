/* libFuzzer target: the IDX parser (plain and gzip) through the public
 * two-buffer entry point. Input layout: 2 bytes giving where the images part
 * ends (little-endian, modulo the remaining length), then the images file,
 * then the labels file. */
#include <stdint.h>
#include <stddef.h>

#include "sstc/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t rest = size - 2;
    size_t cut = rest ? ((size_t)data[0] | (size_t)data[1] << 8) % (rest + 1) : 0;
    const uint8_t *img = data + 2, *lab = data + 2 + cut;
    sstc_dataset ds;
    /* 0 classes: take them from the labels; 10: check the range. */
    int classes = (data[0] & 1) ? 10 : 0;
    if (sstc_dataset_from_idx_buffers(img, cut, "images", lab, rest - cut, "labels", classes, &ds) == 0) {
        /* Touch every byte so that ASan sees any short allocation. */
        size_t n = (size_t)ds.n * ds.c * ds.h * ds.w;
        unsigned acc = 0;
        for (size_t i = 0; i < n; i++) acc += ds.pixels[i];
        for (int i = 0; i < ds.n; i++)
            if (ds.labels[i] < 0 || ds.labels[i] >= ds.num_classes) __builtin_trap();
        (void)acc;
        sstc_dataset_free(&ds);
    }
    return 0;
}
