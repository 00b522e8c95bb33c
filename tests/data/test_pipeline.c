/* The batch pipeline: statistics, the validation split, batching order,
 * normalization, augmentation and reproducibility from the rng state. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data_helpers.h"
#include "sstc/data.h"
#include "sstc/error.h"

/* n images of c x h x w with th_pixel values and labels i % k. */
static sstc_dataset make(int n, int c, int h, int w, int k) {
    sstc_dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.n = n, ds.c = c, ds.h = h, ds.w = w, ds.num_classes = k;
    ds.pixels = malloc((size_t)n * c * h * w);
    ds.labels = malloc(sizeof(int) * n);
    ds.class_names = calloc(k, sizeof(char *));
    for (int i = 0; i < k; i++) ds.class_names[i] = strdup(th_path("c%d", i));
    for (int i = 0; i < n; i++) {
        ds.labels[i] = i % k;
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) ds.pixels[(((size_t)i * c + ch) * h + y) * w + x] = th_pixel(i, ch, y, x);
    }
    return ds;
}

static uint8_t px(const sstc_dataset *ds, int i, int ch, int y, int x) {
    return ds->pixels[(((size_t)i * ds->c + ch) * ds->h + y) * ds->w + x];
}

Test(data_pipeline, channel_stats_match_a_direct_computation) {
    sstc_dataset ds = make(9, 3, 4, 5, 3);
    int idx[4] = {1, 4, 7, 8};
    sstc_normalizer nz;
    cr_assert_eq(sstc_dataset_channel_stats(&ds, idx, 4, &nz), 0, "%s", sstc_errmsg());
    cr_assert_eq(nz.c, 3);
    for (int ch = 0; ch < 3; ch++) {
        double s = 0, s2 = 0;
        for (int k = 0; k < 4; k++)
            for (int p = 0; p < 20; p++) {
                double v = px(&ds, idx[k], ch, p / 5, p % 5) / 255.0;
                s += v, s2 += v * v;
            }
        double mean = s / 80, sd = sqrt(s2 / 80 - mean * mean);
        cr_assert_float_eq(nz.mean[ch], mean, 1e-6);
        cr_assert_float_eq(nz.std[ch], sd, 1e-6);
    }
    cr_assert_eq(sstc_dataset_channel_stats(&ds, NULL, 0, &nz), 0);
    int bad[1] = {9};
    cr_assert_eq(sstc_dataset_channel_stats(&ds, bad, 1, &nz), SSTC_EINVAL);
    sstc_dataset_free(&ds);
}

Test(data_pipeline, split_partitions_indices_reproducibly) {
    sstc_rng r1, r2, r3;
    sstc_rng_seed(&r1, 5);
    sstc_rng_seed(&r2, 5);
    sstc_rng_seed(&r3, 6);
    int *tr, *va, *tr2, *va2, *tr3, *va3;
    cr_assert_eq(sstc_dataset_split(100, 20, &r1, &tr, &va), 0);
    cr_assert_eq(sstc_dataset_split(100, 20, &r2, &tr2, &va2), 0);
    cr_assert_eq(sstc_dataset_split(100, 20, &r3, &tr3, &va3), 0);
    int seen[100] = {0};
    for (int i = 0; i < 80; i++) seen[tr[i]]++;
    for (int i = 0; i < 20; i++) seen[va[i]] += 2;
    for (int i = 0; i < 100; i++) cr_assert(seen[i] == 1 || seen[i] == 2, "index %d in exactly one part", i);
    for (int i = 1; i < 80; i++) cr_assert_lt(tr[i - 1], tr[i], "ascending");
    for (int i = 1; i < 20; i++) cr_assert_lt(va[i - 1], va[i], "ascending");
    cr_assert_arr_eq(va, va2, 20 * sizeof(int), "same seed, same split");
    cr_assert(memcmp(va, va3, 20 * sizeof(int)) != 0, "another seed, another split");
    int *t0, *v0;
    cr_assert_eq(sstc_dataset_split(10, 0, NULL, &t0, &v0), 0);
    cr_assert_null(v0);
    for (int i = 0; i < 10; i++) cr_assert_eq(t0[i], i);
    free(t0);
    cr_assert_eq(sstc_dataset_split(10, 10, &r1, &t0, &v0), SSTC_EINVAL);
    cr_assert_null(t0);
    cr_assert_null(v0);
    free(tr), free(va), free(tr2), free(va2), free(tr3), free(va3);
}

Test(data_pipeline, batches_follow_the_index_order_and_normalize_exactly) {
    sstc_dataset ds = make(7, 2, 3, 3, 4);
    sstc_normalizer nz = {2, {0.25f, 0.5f}, {0.5f, 0.125f}};
    int idx[5] = {6, 0, 3, 2, 5};
    sstc_batcher b;
    cr_assert_eq(sstc_batcher_init(&b, &ds, idx, 5, 2, 0, 0, &nz, NULL, NULL), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_batcher_num_batches(&b), 3);
    float x[2 * 18];
    int y[2];
    int pos = 0, n;
    int sizes[3] = {2, 2, 1}, nb = 0;
    while ((n = sstc_batcher_next(&b, x, y)) > 0) {
        cr_assert_eq(n, sizes[nb++]);
        for (int s = 0; s < n; s++, pos++) {
            int k = idx[pos];
            cr_assert_eq(y[s], k % 4);
            for (int ch = 0; ch < 2; ch++)
                for (int p = 0; p < 9; p++) {
                    float want = ((float)px(&ds, k, ch, p / 3, p % 3) / 255.0f - nz.mean[ch]) / nz.std[ch];
                    cr_assert_float_eq(x[s * 18 + ch * 9 + p], want, 1e-6, "sample %d ch %d p %d", k, ch, p);
                }
        }
    }
    cr_assert_eq(pos, 5);
    cr_assert_eq(sstc_batcher_next(&b, x, y), 0, "epoch over");
    sstc_batcher_free(&b);
    sstc_dataset_free(&ds);
}

Test(data_pipeline, drop_last_skips_the_short_batch) {
    sstc_dataset ds = make(10, 1, 2, 2, 2);
    sstc_batcher b;
    cr_assert_eq(sstc_batcher_init(&b, &ds, NULL, 0, 4, 0, 1, NULL, NULL, NULL), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_batcher_num_batches(&b), 2);
    float x[16];
    int y[4];
    cr_assert_eq(sstc_batcher_next(&b, x, y), 4);
    cr_assert_float_eq(x[0], px(&ds, 0, 0, 0, 0) / 255.0f, 1e-7, "no normalizer: [0,1]");
    cr_assert_eq(sstc_batcher_next(&b, x, y), 4);
    cr_assert_eq(sstc_batcher_next(&b, x, y), 0);
    sstc_batcher_start_epoch(&b);
    cr_assert_eq(sstc_batcher_next(&b, x, y), 4, "a new epoch starts over");
    sstc_batcher_free(&b);
    sstc_dataset_free(&ds);
}

/* Collects one epoch's label sequence (labels = index here, k = n). */
static void epoch_order(sstc_batcher *b, int *out, int n) {
    float x[8 * 4];
    int y[8], got, pos = 0;
    sstc_batcher_start_epoch(b);
    while ((got = sstc_batcher_next(b, x, y)) > 0)
        for (int i = 0; i < got; i++) out[pos++] = y[i];
    cr_assert_eq(pos, n);
}

Test(data_pipeline, shuffled_epochs_are_permutations_reproducible_from_the_rng_state) {
    sstc_dataset ds = make(50, 1, 2, 2, 50);
    sstc_rng rng;
    sstc_rng_seed(&rng, 42);
    sstc_batcher b;
    cr_assert_eq(sstc_batcher_init(&b, &ds, NULL, 0, 8, 1, 0, NULL, NULL, &rng), 0, "%s", sstc_errmsg());
    int e1[50], e2[50], again[50];
    epoch_order(&b, e1, 50);
    sstc_rng saved = rng; /* the whole pipeline state between epochs */
    epoch_order(&b, e2, 50);
    int seen[50] = {0};
    for (int i = 0; i < 50; i++) seen[e2[i]]++;
    for (int i = 0; i < 50; i++) cr_assert_eq(seen[i], 1, "sample %d once per epoch", i);
    cr_assert(memcmp(e1, e2, sizeof e1) != 0, "reshuffled each epoch");
    /* A fresh batcher resumed from the saved state replays epoch 2. */
    sstc_batcher b2;
    sstc_rng rng2 = saved;
    cr_assert_eq(sstc_batcher_init(&b2, &ds, NULL, 0, 8, 1, 0, NULL, NULL, &rng2), 0);
    epoch_order(&b2, again, 50);
    cr_assert_arr_eq(again, e2, sizeof e2);
    sstc_batcher_free(&b);
    sstc_batcher_free(&b2);
    sstc_dataset_free(&ds);
}

/* The augmented sample must equal the source shifted by some (dy, dx) in
 * [-pad, pad] with zero padding, mirrored or not. */
static int matches_some_crop(const sstc_dataset *ds, int k, const float *x, int pad, int allow_flip, int *flipped) {
    int c = ds->c, h = ds->h, w = ds->w;
    for (int flip = 0; flip <= allow_flip; flip++)
        for (int dy = -pad; dy <= pad; dy++)
            for (int dx = -pad; dx <= pad; dx++) {
                int ok = 1;
                for (int ch = 0; ch < c && ok; ch++)
                    for (int y = 0; y < h && ok; y++)
                        for (int xx = 0; xx < w && ok; xx++) {
                            int sy = y + dy, sx = (flip ? w - 1 - xx : xx) + dx;
                            float want = (sy < 0 || sy >= h || sx < 0 || sx >= w) ? 0.0f : px(ds, k, ch, sy, sx) / 255.0f;
                            ok = fabsf(x[(ch * h + y) * w + xx] - want) < 1e-6f;
                        }
                if (ok) {
                    *flipped = flip;
                    return 1;
                }
            }
    return 0;
}

Test(data_pipeline, crop_and_flip_produce_shifted_mirrored_copies_of_the_source) {
    sstc_dataset ds = make(40, 3, 6, 7, 40);
    sstc_rng rng;
    sstc_rng_seed(&rng, 7);
    sstc_augment aug = {2, 1, 0};
    sstc_batcher b;
    cr_assert_eq(sstc_batcher_init(&b, &ds, NULL, 0, 40, 0, 0, NULL, &aug, &rng), 0, "%s", sstc_errmsg());
    float *x = malloc(sizeof(float) * 40 * 3 * 6 * 7);
    int y[40];
    cr_assert_eq(sstc_batcher_next(&b, x, y), 40);
    int flips = 0, unchanged = 0;
    for (int i = 0; i < 40; i++) {
        int f;
        cr_assert(matches_some_crop(&ds, y[i], x + (size_t)i * 126, 2, 1, &f), "sample %d is a crop", i);
        flips += f;
        int f0;
        unchanged += matches_some_crop(&ds, y[i], x + (size_t)i * 126, 0, 0, &f0);
    }
    cr_assert(flips > 5 && flips < 35, "about half flipped: %d", flips);
    cr_assert_lt(unchanged, 20, "most samples moved");
    /* Flip only: every sample is the source or its mirror image. */
    sstc_augment fo = {0, 1, 0};
    sstc_batcher b2;
    cr_assert_eq(sstc_batcher_init(&b2, &ds, NULL, 0, 40, 0, 0, NULL, &fo, &rng), 0);
    cr_assert_eq(sstc_batcher_next(&b2, x, y), 40);
    for (int i = 0; i < 40; i++) {
        int f;
        cr_assert(matches_some_crop(&ds, y[i], x + (size_t)i * 126, 0, 1, &f), "sample %d", i);
    }
    free(x);
    sstc_batcher_free(&b);
    sstc_batcher_free(&b2);
    sstc_dataset_free(&ds);
}

/* Cutout on a 3 x 9 x 10 dataset: each sample equals its source except for one
 * axis-aligned rectangle that is 0 in every channel, at most side x side,
 * exactly side x side when it lies inside the image, clipped otherwise. */
Test(data_pipeline, cutout_zeroes_one_clipped_square_in_every_channel) {
    const int n = 200, c = 3, h = 9, w = 10, side = 4;
    sstc_dataset ds = make(n, c, h, w, n);
    for (size_t i = 0; i < (size_t)n * c * h * w; i++) ds.pixels[i] = (uint8_t)(1 + ds.pixels[i] % 255); /* no 0 */
    sstc_rng rng;
    sstc_rng_seed(&rng, 11);
    sstc_augment aug = {0, 0, side};
    sstc_batcher b;
    cr_assert_eq(sstc_batcher_init(&b, &ds, NULL, 0, n, 0, 0, NULL, &aug, &rng), 0, "%s", sstc_errmsg());
    float *x = malloc(sizeof(float) * n * c * h * w);
    int y[200];
    cr_assert_eq(sstc_batcher_next(&b, x, y), n);
    int full = 0, clipped = 0, corner_seen[2][2] = {{0}};
    for (int i = 0; i < n; i++) {
        const float *s = x + (size_t)i * c * h * w;
        int ymin = h, ymax = -1, xmin = w, xmax = -1, zeros = 0;
        for (int ch = 0; ch < c; ch++)
            for (int yy = 0; yy < h; yy++)
                for (int xx = 0; xx < w; xx++) {
                    float v = s[((size_t)ch * h + yy) * w + xx];
                    if (v == 0.0f) {
                        zeros++;
                        if (yy < ymin) ymin = yy;
                        if (yy > ymax) ymax = yy;
                        if (xx < xmin) xmin = xx;
                        if (xx > xmax) xmax = xx;
                    } else {
                        cr_assert_float_eq(v, px(&ds, y[i], ch, yy, xx) / 255.0f, 1e-6f, "sample %d (%d,%d,%d)", i,
                                           ch, yy, xx);
                    }
                }
        cr_assert_gt(zeros, 0, "sample %d has a cut square", i);
        int rh = ymax - ymin + 1, rw = xmax - xmin + 1;
        cr_assert_eq(zeros, c * rh * rw, "sample %d: the zeros form one rectangle in all %d channels", i, c);
        cr_assert(rh <= side && rw <= side, "sample %d: %d x %d within %d x %d", i, rh, rw, side, side);
        int inside = ymin > 0 && xmin > 0 && ymax < h - 1 && xmax < w - 1;
        if (inside) cr_assert(rh == side && rw == side, "sample %d: an unclipped square is %d x %d", i, rh, rw);
        if (rh == side && rw == side) full++;
        else clipped++;
        if (ymin == 0 && xmin == 0) corner_seen[0][0] = 1;
        if (ymax == h - 1 && xmax == w - 1) corner_seen[1][1] = 1;
    }
    cr_assert(full > 20 && clipped > 20, "both whole and clipped squares occur: %d, %d", full, clipped);
    cr_assert(corner_seen[0][0] && corner_seen[1][1], "squares reach both corners");
    free(x);
    sstc_batcher_free(&b);
    sstc_augment too_big = {0, 0, 10};
    cr_assert_eq(sstc_batcher_init(&b, &ds, NULL, 0, n, 0, 0, NULL, &too_big, &rng), SSTC_EINVAL);
    cr_assert(th_has(sstc_errmsg(), "cutout size 10, expected 0..9"), "%s", sstc_errmsg());
    sstc_dataset_free(&ds);
}

Test(data_pipeline, bad_arguments_are_refused_with_a_message) {
    sstc_dataset ds = make(4, 1, 2, 2, 2);
    sstc_batcher b;
    cr_assert_eq(sstc_batcher_init(&b, &ds, NULL, 0, 0, 0, 0, NULL, NULL, NULL), SSTC_EINVAL);
    cr_assert(th_has(sstc_errmsg(), "batch size 0"), "%s", sstc_errmsg());
    cr_assert_eq(sstc_batcher_init(&b, &ds, NULL, 0, 2, 1, 0, NULL, NULL, NULL), SSTC_EINVAL);
    cr_assert(th_has(sstc_errmsg(), "needs an rng"), "%s", sstc_errmsg());
    sstc_normalizer nz = {3, {0}, {1, 1, 1}};
    cr_assert_eq(sstc_batcher_init(&b, &ds, NULL, 0, 2, 0, 0, &nz, NULL, NULL), SSTC_EINVAL);
    sstc_normalizer zero = {1, {0}, {0}};
    cr_assert_eq(sstc_batcher_init(&b, &ds, NULL, 0, 2, 0, 0, &zero, NULL, NULL), SSTC_EINVAL);
    int idx[2] = {1, 4};
    cr_assert_eq(sstc_batcher_init(&b, &ds, idx, 2, 2, 0, 0, NULL, NULL, NULL), SSTC_EINVAL);
    cr_assert(th_has(sstc_errmsg(), "index 4 at position 1"), "%s", sstc_errmsg());
    sstc_dataset_free(&ds);
}
