/* The training-side pipeline: normalization statistics, the train/validation
 * split and the mini-batch iterator with CIFAR-style augmentation.
 *
 * All randomness comes from the caller's sstc_rng, drawn serially in sample
 * order, so a run is reproducible from the seed and resumable from the rng
 * state saved at an epoch boundary. */
#include "data/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/error.h"

int sstc_dataset_channel_stats(const sstc_dataset *ds, const int *idx, int count, sstc_normalizer *out) {
    if (!ds || !out || !ds->pixels) return sstc_fail(SSTC_EINVAL, "sstc_dataset_channel_stats: NULL argument");
    if (ds->c < 1 || ds->c > 4)
        return sstc_fail(SSTC_EINVAL, "sstc_dataset_channel_stats: %d channels, expected 1 to 4", ds->c);
    if (!idx) count = ds->n;
    if (count <= 0) return sstc_fail(SSTC_EINVAL, "sstc_dataset_channel_stats: no samples");
    size_t hw = (size_t)ds->h * ds->w;
    memset(out, 0, sizeof *out);
    out->c = ds->c;
    for (int ch = 0; ch < ds->c; ch++) {
        /* Integer sums are exact, so the result does not depend on order. */
        uint64_t s = 0, s2 = 0;
        for (int i = 0; i < count; i++) {
            int k = idx ? idx[i] : i;
            if (k < 0 || k >= ds->n)
                return sstc_fail(SSTC_EINVAL, "sstc_dataset_channel_stats: index %d at position %d, expected 0..%d",
                                 k, i, ds->n - 1);
            const uint8_t *p = ds->pixels + ((size_t)k * ds->c + (size_t)ch) * hw;
            uint32_t a = 0, a2 = 0; /* 255^2 * hw fits while hw < 66051 */
            if (hw < 66000) {
                for (size_t j = 0; j < hw; j++) a += p[j], a2 += (uint32_t)p[j] * p[j];
                s += a, s2 += a2;
            } else {
                for (size_t j = 0; j < hw; j++) s += p[j], s2 += (uint64_t)p[j] * p[j];
            }
        }
        double m = (double)count * (double)hw;
        double mean = (double)s / m;
        double var = (double)s2 / m - mean * mean;
        if (var < 0) var = 0;
        out->mean[ch] = (float)(mean / 255.0);
        out->std[ch] = (float)(sqrt(var) / 255.0);
    }
    return 0;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int sstc_dataset_split(int n, int val_count, sstc_rng *rng, int **train_idx, int **val_idx) {
    if (!train_idx || !val_idx) return sstc_fail(SSTC_EINVAL, "sstc_dataset_split: NULL output");
    *train_idx = NULL;
    *val_idx = NULL;
    if (n <= 0 || val_count < 0 || val_count >= n)
        return sstc_fail(SSTC_EINVAL, "sstc_dataset_split: %d validation samples out of %d, expected 0..%d", val_count,
                         n, n - 1);
    if (val_count > 0 && !rng) return sstc_fail(SSTC_EINVAL, "sstc_dataset_split: NULL rng");
    int *perm = malloc(sizeof(int) * (size_t)n);
    int *val = val_count ? malloc(sizeof(int) * (size_t)val_count) : NULL;
    int *train = malloc(sizeof(int) * (size_t)(n - val_count));
    if (!perm || !train || (val_count && !val)) {
        free(perm), free(val), free(train);
        return sstc_fail(SSTC_ENOMEM, "sstc_dataset_split: out of memory");
    }
    for (int i = 0; i < n; i++) perm[i] = i;
    if (val_count) sstc_rng_shuffle(rng, perm, n);
    if (val_count) memcpy(val, perm, sizeof(int) * (size_t)val_count);
    memcpy(train, perm + val_count, sizeof(int) * (size_t)(n - val_count));
    free(perm);
    if (val_count) qsort(val, (size_t)val_count, sizeof(int), cmp_int);
    qsort(train, (size_t)(n - val_count), sizeof(int), cmp_int);
    *train_idx = train;
    *val_idx = val;
    return 0;
}

int sstc_batcher_init(sstc_batcher *b, const sstc_dataset *ds, const int *indices, int count, int batch_size,
                      int shuffle, int drop_last, const sstc_normalizer *norm, const sstc_augment *aug,
                      sstc_rng *rng) {
    if (!b) return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: NULL batcher");
    memset(b, 0, sizeof *b);
    if (!ds || !ds->pixels || ds->n <= 0) return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: empty dataset");
    if (ds->c < 1 || ds->c > 4)
        return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: %d channels, expected 1 to 4", ds->c);
    if (batch_size <= 0) return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: batch size %d, expected > 0", batch_size);
    if (!indices) count = ds->n;
    if (count <= 0) return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: %d samples, expected > 0", count);
    if (norm && norm->c != ds->c)
        return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: normalizer has %d channels, dataset has %d", norm->c, ds->c);
    int augmenting = aug && (aug->pad_crop > 0 || aug->hflip || aug->cutout > 0);
    if (aug && (aug->pad_crop < 0 || aug->pad_crop > ds->h || aug->pad_crop > ds->w))
        return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: crop padding %d, expected 0..%d", aug->pad_crop,
                         ds->h < ds->w ? ds->h : ds->w);
    if (aug && (aug->cutout < 0 || aug->cutout > ds->h || aug->cutout > ds->w))
        return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: cutout size %d, expected 0..%d", aug->cutout,
                         ds->h < ds->w ? ds->h : ds->w);
    if ((shuffle || augmenting) && !rng)
        return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: shuffling or augmentation needs an rng");
    for (int ch = 0; ch < ds->c; ch++) {
        float mean = norm ? norm->mean[ch] : 0.0f, sd = norm ? norm->std[ch] : 1.0f;
        if (!(sd > 0.0f) || !isfinite(sd) || !isfinite(mean))
            return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: channel %d has std %g and mean %g, expected a finite "
                             "std > 0",
                             ch, (double)sd, (double)mean);
        for (int p = 0; p < 256; p++) b->lut[ch][p] = ((float)p / 255.0f - mean) / sd;
    }
    b->base = malloc(sizeof(int) * (size_t)count);
    b->order = malloc(sizeof(int) * (size_t)count);
    if (!b->base || !b->order) {
        sstc_batcher_free(b);
        return sstc_fail(SSTC_ENOMEM, "sstc_batcher_init: out of memory");
    }
    for (int i = 0; i < count; i++) {
        int k = indices ? indices[i] : i;
        if (k < 0 || k >= ds->n) {
            sstc_batcher_free(b);
            return sstc_fail(SSTC_EINVAL, "sstc_batcher_init: index %d at position %d, expected 0..%d", k, i,
                             ds->n - 1);
        }
        b->base[i] = k;
    }
    memcpy(b->order, b->base, sizeof(int) * (size_t)count);
    b->ds = ds;
    b->count = count;
    b->batch_size = batch_size;
    b->shuffle = shuffle;
    b->drop_last = drop_last;
    if (aug) b->aug = *aug;
    b->rng = rng;
    return 0;
}

void sstc_batcher_start_epoch(sstc_batcher *b) {
    memcpy(b->order, b->base, sizeof(int) * (size_t)b->count);
    if (b->shuffle) sstc_rng_shuffle(b->rng, b->order, b->count);
    b->pos = 0;
    b->started = 1;
}

int sstc_batcher_num_batches(const sstc_batcher *b) {
    return b->drop_last ? b->count / b->batch_size : (b->count + b->batch_size - 1) / b->batch_size;
}

/* One channel plane through the lookup table, shifted by (dy, dx) inside a
 * zero-padded frame and optionally mirrored. */
static void plane_augmented(const uint8_t *src, float *dst, int h, int w, int dy, int dx, int flip,
                            const float *lut) {
    float zero = lut[0];
    for (int y = 0; y < h; y++) {
        int sy = y + dy;
        float *out = dst + (size_t)y * w;
        if (sy < 0 || sy >= h) {
            for (int x = 0; x < w; x++) out[x] = zero;
            continue;
        }
        const uint8_t *row = src + (size_t)sy * w;
        /* Output column x reads source column x + dx, or (w-1-x) + dx when flipped. */
        for (int x = 0; x < w; x++) {
            int sx = (flip ? w - 1 - x : x) + dx;
            out[x] = (sx >= 0 && sx < w) ? lut[row[sx]] : zero;
        }
    }
}

int sstc_batcher_next(sstc_batcher *b, float *x, int *y) {
    if (!b->started) sstc_batcher_start_epoch(b);
    int left = b->count - b->pos;
    if (left <= 0 || (b->drop_last && left < b->batch_size)) return 0;
    int m = left < b->batch_size ? left : b->batch_size;
    const sstc_dataset *ds = b->ds;
    int c = ds->c, h = ds->h, w = ds->w;
    size_t hw = (size_t)h * w, per = (size_t)c * hw;
    int pad = b->aug.pad_crop;
    for (int i = 0; i < m; i++) {
        int k = b->order[b->pos + i];
        const uint8_t *src = ds->pixels + (size_t)k * per;
        float *dst = x + (size_t)i * per;
        if (y) y[i] = ds->labels[k];
        int dy = 0, dx = 0, flip = 0;
        if (pad > 0) {
            dy = (int)sstc_rng_below(b->rng, (uint64_t)(2 * pad + 1)) - pad;
            dx = (int)sstc_rng_below(b->rng, (uint64_t)(2 * pad + 1)) - pad;
        }
        if (b->aug.hflip) flip = (int)(sstc_rng_u64(b->rng) >> 63);
        if (dy == 0 && dx == 0 && !flip) {
            for (int ch = 0; ch < c; ch++) {
                const float *lut = b->lut[ch];
                const uint8_t *s = src + (size_t)ch * hw;
                float *d = dst + (size_t)ch * hw;
                for (size_t j = 0; j < hw; j++) d[j] = lut[s[j]];
            }
        } else {
            for (int ch = 0; ch < c; ch++)
                plane_augmented(src + (size_t)ch * hw, dst + (size_t)ch * hw, h, w, dy, dx, flip, b->lut[ch]);
        }
        if (b->aug.cutout > 0) {
            int side = b->aug.cutout;
            int cy = (int)sstc_rng_below(b->rng, (uint64_t)h), cx = (int)sstc_rng_below(b->rng, (uint64_t)w);
            int y0 = cy - side / 2, x0 = cx - side / 2, y1 = y0 + side, x1 = x0 + side;
            if (y0 < 0) y0 = 0;
            if (x0 < 0) x0 = 0;
            if (y1 > h) y1 = h;
            if (x1 > w) x1 = w;
            for (int ch = 0; ch < c; ch++)
                for (int yy = y0; yy < y1; yy++)
                    memset(dst + (size_t)ch * hw + (size_t)yy * w + x0, 0, sizeof(float) * (size_t)(x1 - x0));
        }
    }
    b->pos += m;
    return m;
}

void sstc_batcher_free(sstc_batcher *b) {
    if (!b) return;
    free(b->base);
    free(b->order);
    b->base = b->order = NULL;
    b->count = b->pos = 0;
}
