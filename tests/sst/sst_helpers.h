/* Helpers for the sst tests: random weights, random valid ternary codes, and
 * a small random network that uses every layer kind. Header-only. */
#ifndef SSTC_TESTS_SST_HELPERS_H
#define SSTC_TESTS_SST_HELPERS_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "sstc/error.h"
#include "sstc/rng.h"
#include "sstc/sst.h"

/* Laplacian(0, 1/sqrt(2)): unit variance, heavier tails than the Gaussian. */
static inline float th_laplace(sstc_rng *r) {
    float u = sstc_rng_uniform(r) - 0.5f;
    float a = 1.0f - 2.0f * fabsf(u);
    if (a < 1e-12f) a = 1e-12f;
    return (u < 0 ? 1.0f : -1.0f) * logf(a) / sqrtf(2.0f);
}

static inline void th_fill(sstc_rng *r, float *w, size_t n, int laplace, float scale) {
    for (size_t i = 0; i < n; i++) w[i] = scale * (laplace ? th_laplace(r) : sstc_rng_normal(r));
}

/* A random ternary matrix whose every group is a valid (N,K) code. */
static inline void th_random_ternary(sstc_rng *r, int8_t *T, int rows, int cols, int N, int K) {
    memset(T, 0, (size_t)rows * cols);
    for (int row = 0; row < rows; row++)
        for (int g = 0; g < cols; g += N) {
            int n = cols - g < N ? cols - g : N;
            int nnz = (int)sstc_rng_below(r, (uint64_t)(K < n ? K : n) + 1);
            for (int k = 0; k < nnz; k++) {
                int q;
                do q = (int)sstc_rng_below(r, (uint64_t)n);
                while (T[(size_t)row * cols + g + q]);
                T[(size_t)row * cols + g + q] = sstc_rng_below(r, 2) ? 1 : -1;
            }
        }
}

/* Fills a layer's arrays with random finite values and valid codes. */
static inline void th_fill_layer(sstc_rng *r, sstc_sst_layer *L) {
    cr_assert_eq(sstc_sst_layer_alloc(L), SSTC_OK, "%s", sstc_errmsg());
    size_t out = (size_t)(L->out > 0 ? L->out : 0), fan_in = sstc_sst_fan_in(L);
    if (L->kind == SSTC_SST_BATCHNORM) {
        for (size_t i = 0; i < out; i++) {
            L->scale[i] = 0.5f + sstc_rng_uniform(r);
            L->bias[i] = sstc_rng_normal(r);
        }
        return;
    }
    if (L->kind != SSTC_SST_FC && L->kind != SSTC_SST_CONV) return;
    for (size_t i = 0; i < out; i++) L->bias[i] = sstc_rng_normal(r);
    if (!L->coded) {
        th_fill(r, L->weight, out * fan_in, 0, 0.1f);
        return;
    }
    for (size_t i = 0; i < (L->per_row_delta ? out : 1); i++) L->delta[i] = 0.01f + 0.1f * sstc_rng_uniform(r);
    for (size_t i = 0; i < out; i++) L->scale[i] = 0.01f + sstc_rng_uniform(r);
    int8_t *T = malloc(out * fan_in);
    th_random_ternary(r, T, (int)out, (int)fan_in, L->N, L->K);
    cr_assert_eq(sstc_sst_layer_set_ternary(L, T), SSTC_OK, "%s", sstc_errmsg());
    free(T);
}

/* input 3x12x12 -> conv(6,k3,s1,p1) coded -> bn -> relu -> maxpool(2,2)
 * -> conv(5,k3,s2,p1) coded -> avgpool(3,1,1) -> flatten -> fc 45->20 coded
 * -> dropout -> relu -> fc 20->10 float. Every fan_in (27, 54, 45) leaves a
 * padded last group for N = 8 and 16. */
static inline sstc_sst_model *th_random_net(sstc_rng *r, int N, int K, int per_row) {
    sstc_sst_model *m = sstc_sst_model_new(11);
    cr_assert_not_null(m);
    m->in_c = 3, m->in_h = 12, m->in_w = 12, m->num_classes = 10;
    for (int c = 0; c < 3; c++) {
        m->in_mean[c] = 0.3f + 0.1f * (float)c;
        m->in_std[c] = 0.2f + 0.05f * sstc_rng_uniform(r);
    }
    sstc_sst_layer *L = m->layers;
    L[0] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 6, .in = 3, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
                            .coded = 1, .N = N, .K = K, .per_row_delta = per_row};
    L[1] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 6};
    L[2] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[3] = (sstc_sst_layer){.kind = SSTC_SST_MAXPOOL, .kh = 2, .kw = 2, .stride = 2};
    L[4] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 5, .in = 6, .kh = 3, .kw = 3, .stride = 2, .pad = 1,
                            .coded = 1, .N = N, .K = K, .per_row_delta = !per_row};
    L[5] = (sstc_sst_layer){.kind = SSTC_SST_AVGPOOL, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    L[6] = (sstc_sst_layer){.kind = SSTC_SST_FLATTEN};
    L[7] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 20, .in = 45, .coded = 1, .N = N, .K = K,
                            .per_row_delta = per_row};
    L[8] = (sstc_sst_layer){.kind = SSTC_SST_DROPOUT, .p = 0.25f};
    L[9] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[10] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 10, .in = 20};
    for (int i = 0; i < m->n_layers; i++) th_fill_layer(r, &L[i]);
    return m;
}

/* A network with skip connections (a version-2 file): input 3x8x8 ->
 *  0 conv 3->3 k3 p1 (coded)      1 shortcut from input, linear
 *  2 route [input, 1] (6 ch.)     3 conv 6->4 k3 p1 (coded)     4 relu
 *  5 conv 4->4 k3 p1 (coded)      6 shortcut from 4, relu (identity block)
 *  7 conv 4->6 k3 s2 p1 (coded)   8 batchnorm 6
 *  9 route [6] (back to 4x8x8)   10 conv 4->6 k1 s2 (float, the projection)
 * 11 shortcut from 8, relu       12 route [11, 8] (12x4x4)
 * 13 globalavgpool               14 fc 12->5 (coded). */
static inline sstc_sst_model *th_graph_net(sstc_rng *r, int N, int K) {
    sstc_sst_model *m = sstc_sst_model_new(15);
    cr_assert_not_null(m);
    m->in_c = 3, m->in_h = 8, m->in_w = 8, m->num_classes = 5;
    sstc_sst_layer *L = m->layers;
#define TH_CONV(o, i, k, s, p, c) \
    (sstc_sst_layer) { .kind = SSTC_SST_CONV, .out = o, .in = i, .kh = k, .kw = k, .stride = s, .pad = p, .coded = c, .N = N, .K = K }
    L[0] = TH_CONV(3, 3, 3, 1, 1, 1);
    L[1] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = SSTC_SST_INPUT, .activation = SSTC_SST_ACT_LINEAR};
    L[2] = (sstc_sst_layer){.kind = SSTC_SST_ROUTE, .n_route = 2, .route = {SSTC_SST_INPUT, 1}};
    L[3] = TH_CONV(4, 6, 3, 1, 1, 1);
    L[4] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[5] = TH_CONV(4, 4, 3, 1, 1, 1);
    L[6] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = 4, .activation = SSTC_SST_ACT_RELU};
    L[7] = TH_CONV(6, 4, 3, 2, 1, 1);
    L[8] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 6};
    L[9] = (sstc_sst_layer){.kind = SSTC_SST_ROUTE, .n_route = 1, .route = {6}};
    L[10] = TH_CONV(6, 4, 1, 2, 0, 0);
    L[11] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = 8, .activation = SSTC_SST_ACT_RELU};
    L[12] = (sstc_sst_layer){.kind = SSTC_SST_ROUTE, .n_route = 2, .route = {11, 8}};
    L[13] = (sstc_sst_layer){.kind = SSTC_SST_GLOBALAVGPOOL};
    L[14] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 5, .in = 12, .coded = 1, .N = N, .K = K};
#undef TH_CONV
    for (int i = 0; i < m->n_layers; i++) th_fill_layer(r, &L[i]);
    return m;
}

/* Rewrites the trailing crc32 after a test patched the image. */
static inline void th_fix_crc(uint8_t *buf, size_t n) {
    uint32_t c = (uint32_t)crc32(0L, buf, (uInt)(n - 4));
    for (int i = 0; i < 4; i++) buf[n - 4 + i] = (uint8_t)(c >> (8 * i));
}

#endif
