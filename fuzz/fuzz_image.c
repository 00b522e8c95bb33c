/* libFuzzer target: the image decoding path used by the folder loader, from
 * memory: PNG through libpng (with stb_image as its fallback) and JPEG
 * through stb_image. */
#include <stdint.h>
#include <stddef.h>

#include "data/internal.h"
#include "sstc/data.h"

/* Images up to 256K pixels: enough for every code path, and it keeps a
 * forged header from making one run decode 16 million blank pixels. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    sstc_data_max_image_pixels = 1 << 18;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sstc_image img;
    if (sstc_image_decode(data, size, "fuzz", &img) == 0) {
        if (img.w <= 0 || img.h <= 0 || (img.c != 1 && img.c != 3)) __builtin_trap();
        size_t n = (size_t)img.w * img.h * img.c;
        unsigned acc = 0;
        for (size_t i = 0; i < n; i++) acc += img.pixels[i];
        (void)acc;
        sstc_image_free(&img);
    }
    return 0;
}
