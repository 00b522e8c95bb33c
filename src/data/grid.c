/* A picture of a dataset: sample images in a grid, one row per class. */
#include <stdlib.h>
#include <string.h>

#include "sstc/data.h"
#include "sstc/error.h"
#include "sstc/rng.h"

int sstc_dataset_sample_grid(const sstc_dataset *ds, int per_class, uint64_t seed, int scale, uint8_t **img_out, int *w,
                             int *h, int *rows_out) {
    *img_out = NULL;
    if (!ds || ds->n < 1 || per_class < 1 || scale < 0)
        return sstc_fail(SSTC_EINVAL, "sample grid: need a non-empty dataset and per_class >= 1");
    int rows = ds->num_classes < 20 ? ds->num_classes : 20;
    int side = ds->h > ds->w ? ds->h : ds->w;
    if (!scale) scale = side >= 64 ? 1 : (64 + side - 1) / side;
    int gap = 2, cw = ds->w * scale, ch = ds->h * scale, C = ds->c;
    int W = gap + per_class * (cw + gap), H = gap + rows * (ch + gap);
    uint8_t *img = malloc((size_t)W * H * C);
    int *pick = malloc(sizeof(int) * (size_t)ds->n);
    if (!img || !pick) {
        free(img), free(pick);
        return sstc_fail(SSTC_ENOMEM, "out of memory for a %dx%d grid", W, H);
    }
    memset(img, 48, (size_t)W * H * C);
    for (int i = 0; i < ds->n; i++) pick[i] = i;
    sstc_rng rng;
    sstc_rng_seed(&rng, seed);
    sstc_rng_shuffle(&rng, pick, ds->n);
    size_t hw = (size_t)ds->h * ds->w;
    for (int r = 0; r < rows; r++) {
        int col = 0;
        for (int j = 0; j < ds->n && col < per_class; j++) {
            int k = pick[j];
            if (ds->labels[k] != r) continue;
            const uint8_t *src = ds->pixels + (size_t)k * C * hw;
            int x0 = gap + col * (cw + gap), y0 = gap + r * (ch + gap);
            for (int y = 0; y < ch; y++)
                for (int x = 0; x < cw; x++)
                    for (int c = 0; c < C; c++)
                        img[((size_t)(y0 + y) * W + (size_t)(x0 + x)) * C + c] =
                            src[(size_t)c * hw + (size_t)(y / scale) * ds->w + (size_t)(x / scale)];
            col++;
        }
    }
    free(pick);
    *img_out = img;
    *w = W;
    *h = H;
    *rows_out = rows;
    return 0;
}
