/* Helpers for the inference tests: random coded networks that use every layer
 * kind, and a straightforward reference forward pass (decoded weights
 * scale*T, plain loops in double) to check the engine against. Header-only. */
#ifndef SSTC_TESTS_INFER_HELPERS_H
#define SSTC_TESTS_INFER_HELPERS_H

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/error.h"
#include "sstc/infer.h"
#include "sstc/rng.h"
#include "sstc/sst.h"

/* A random ternary matrix whose every group of N is a valid (N,K) code. */
static inline void ti_random_ternary(sstc_rng *r, int8_t *T, int rows, int cols, int N, int K) {
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

/* Random values of a sensible size: a coded row's scale ~ 1/sqrt(fan_in). */
static inline void ti_fill_layer(sstc_rng *r, sstc_sst_layer *L) {
    cr_assert_eq(sstc_sst_layer_alloc(L), SSTC_OK, "%s", sstc_errmsg());
    size_t out = (size_t)(L->out > 0 ? L->out : 0), fan_in = sstc_sst_fan_in(L);
    if (L->kind == SSTC_SST_PERMUTE) {
        for (size_t i = 0; i < out; i++) L->perm[i] = (uint32_t)i;
        for (size_t i = out; i > 1; i--) {
            size_t j = sstc_rng_below(r, (uint32_t)i);
            uint32_t t = L->perm[i - 1];
            L->perm[i - 1] = L->perm[j], L->perm[j] = t;
        }
        return;
    }
    if (L->kind == SSTC_SST_BATCHNORM) {
        for (size_t i = 0; i < out; i++) {
            L->scale[i] = 0.5f + sstc_rng_uniform(r);
            L->bias[i] = 0.3f * sstc_rng_normal(r);
        }
        return;
    }
    if (L->kind != SSTC_SST_FC && L->kind != SSTC_SST_CONV) return;
    float s = 1.5f / sqrtf((float)fan_in);
    for (size_t i = 0; i < out; i++) L->bias[i] = 0.2f * sstc_rng_normal(r);
    if (!L->coded) {
        for (size_t i = 0; i < out * fan_in; i++) L->weight[i] = s * sstc_rng_normal(r);
        return;
    }
    for (size_t i = 0; i < (L->per_row_delta ? out : 1); i++) L->delta[i] = 0.05f + 0.1f * sstc_rng_uniform(r);
    for (size_t i = 0; i < out; i++) L->scale[i] = s * (1.0f + sstc_rng_uniform(r));
    int8_t *T = malloc(out * fan_in);
    ti_random_ternary(r, T, (int)out, (int)fan_in, L->N, L->K);
    cr_assert_eq(sstc_sst_layer_set_ternary(L, T), SSTC_OK, "%s", sstc_errmsg());
    free(T);
}

static inline sstc_sst_model *ti_finish(sstc_rng *r, sstc_sst_model *m) {
    for (int c = 0; c < m->in_c && c < 4; c++) {
        m->in_mean[c] = 0.2f + 0.1f * (float)c;
        m->in_std[c] = 0.25f + 0.1f * sstc_rng_uniform(r);
    }
    for (int i = 0; i < m->n_layers; i++) ti_fill_layer(r, &m->layers[i]);
    cr_assert_eq(sstc_sst_validate(m), SSTC_OK, "%s", sstc_errmsg());
    return m;
}

#define TI_CODED(n, k, pr) .coded = 1, .N = (n), .K = (k), .per_row_delta = (pr)

/* 1x6x6 -> fc 40 -> bn -> relu -> dropout -> fc 24 -> relu -> fc 10 (float
 * when last_float). Every fan_in (36, 40, 24) leaves a padded group for N = 16. */
static inline sstc_sst_model *ti_mlp(sstc_rng *r, int N, int K, int last_float) {
    sstc_sst_model *m = sstc_sst_model_new(7);
    m->in_c = 1, m->in_h = 6, m->in_w = 6, m->num_classes = 10;
    sstc_sst_layer *L = m->layers;
    L[0] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 40, .in = 36, TI_CODED(N, K, 0)};
    L[1] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 40};
    L[2] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[3] = (sstc_sst_layer){.kind = SSTC_SST_DROPOUT, .p = 0.5f};
    L[4] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 24, .in = 40, TI_CODED(N, K, 1)};
    L[5] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[6] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 10, .in = 24};
    if (!last_float) L[6] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 10, .in = 24, TI_CODED(N, K, 0)};
    return ti_finish(r, m);
}

/* ti_mlp's network after a permute layer (fan-in interleaving of fc 1). */
static inline sstc_sst_model *ti_mlp_permuted(sstc_rng *r, int N, int K) {
    sstc_sst_model *m = sstc_sst_model_new(8);
    m->in_c = 1, m->in_h = 6, m->in_w = 6, m->num_classes = 10;
    sstc_sst_layer *L = m->layers;
    L[0] = (sstc_sst_layer){.kind = SSTC_SST_PERMUTE, .out = 36, .in = 36};
    L[1] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 40, .in = 36, TI_CODED(N, K, 0)};
    L[2] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 40};
    L[3] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[4] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 24, .in = 40, TI_CODED(N, K, 1)};
    L[5] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[6] = (sstc_sst_layer){.kind = SSTC_SST_DROPOUT, .p = 0.5f};
    L[7] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 10, .in = 24, TI_CODED(N, K, 0)};
    return ti_finish(r, m);
}

/* 3x9x9 -> conv 8 k3 s1 p1 (coded) -> bn -> relu -> maxpool 2/2 -> conv 6 k3
 * s1 p1 (float) -> relu -> bn (cannot fold: a ReLU is between) -> avgpool 3/1
 * p1 -> conv 5 k2 s2 p0 (coded) -> flatten -> fc 12 (coded) -> bn -> relu ->
 * fc 7 (coded). */
static inline sstc_sst_model *ti_cnn(sstc_rng *r, int N, int K) {
    sstc_sst_model *m = sstc_sst_model_new(15);
    m->in_c = 3, m->in_h = 9, m->in_w = 9, m->num_classes = 7;
    sstc_sst_layer *L = m->layers;
    L[0] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 8, .in = 3, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
                            TI_CODED(N, K, 1)};
    L[1] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 8};
    L[2] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[3] = (sstc_sst_layer){.kind = SSTC_SST_MAXPOOL, .kh = 2, .kw = 2, .stride = 2};
    L[4] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 6, .in = 8, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    L[5] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[6] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 6};
    L[7] = (sstc_sst_layer){.kind = SSTC_SST_AVGPOOL, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    L[8] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 5, .in = 6, .kh = 2, .kw = 2, .stride = 2, .pad = 0,
                            TI_CODED(N, K, 0)};
    L[9] = (sstc_sst_layer){.kind = SSTC_SST_FLATTEN};
    L[10] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 12, .in = 20, TI_CODED(N, K, 0)};
    L[11] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 12};
    L[12] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[13] = (sstc_sst_layer){.kind = SSTC_SST_DROPOUT, .p = 0.1f};
    L[14] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 7, .in = 12, TI_CODED(N, K, 0)};
    return ti_finish(r, m);
}

/* Networks with skip connections, in the shape of ResNet-20's blocks: an
 * identity block (conv-bn-relu-conv-bn, shortcut from the block's input,
 * relu), a downsampling block whose shortcut adds a 1x1 stride-2 projection
 * conv + bn (reached through a one-source route back to the block's input),
 * a route concatenating two branches, global average pooling and fc.
 * 3x8x8 ->
 *  0 conv 3->4 k3 p1 (coded)   1 bn   2 relu                         (stem)
 *  3 conv 4->4 k3 p1 (coded)   4 bn   5 relu   6 conv 4->4 (coded)   7 bn
 *  8 shortcut from 2, relu                                           (identity)
 *  9 conv 4->6 k3 s2 p1 (coded)  10 bn  11 relu  12 conv 6->6 (coded) 13 bn
 * 14 route [8]   15 conv 4->6 k1 s2 (float)   16 bn                   (projection)
 * 17 shortcut from 13, relu                                          (downsampling)
 * 18 route [17, 11]  (12x4x4)   19 globalavgpool   20 fc 12->7 (coded). */
static inline sstc_sst_model *ti_resnet(sstc_rng *r, int N, int K) {
    sstc_sst_model *m = sstc_sst_model_new(21);
    m->in_c = 3, m->in_h = 8, m->in_w = 8, m->num_classes = 7;
    sstc_sst_layer *L = m->layers;
#define TI_CONV(o, i, k, s, p) .kind = SSTC_SST_CONV, .out = (o), .in = (i), .kh = (k), .kw = (k), .stride = (s), .pad = (p)
    L[0] = (sstc_sst_layer){TI_CONV(4, 3, 3, 1, 1), TI_CODED(N, K, 1)};
    L[1] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 4};
    L[2] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[3] = (sstc_sst_layer){TI_CONV(4, 4, 3, 1, 1), TI_CODED(N, K, 0)};
    L[4] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 4};
    L[5] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[6] = (sstc_sst_layer){TI_CONV(4, 4, 3, 1, 1), TI_CODED(N, K, 0)};
    L[7] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 4};
    L[8] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = 2, .activation = SSTC_SST_ACT_RELU};
    L[9] = (sstc_sst_layer){TI_CONV(6, 4, 3, 2, 1), TI_CODED(N, K, 1)};
    L[10] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 6};
    L[11] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[12] = (sstc_sst_layer){TI_CONV(6, 6, 3, 1, 1), TI_CODED(N, K, 0)};
    L[13] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 6};
    L[14] = (sstc_sst_layer){.kind = SSTC_SST_ROUTE, .n_route = 1, .route = {8}};
    L[15] = (sstc_sst_layer){TI_CONV(6, 4, 1, 2, 0)};
    L[16] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 6};
    L[17] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = 13, .activation = SSTC_SST_ACT_RELU};
    L[18] = (sstc_sst_layer){.kind = SSTC_SST_ROUTE, .n_route = 2, .route = {17, 11}};
    L[19] = (sstc_sst_layer){.kind = SSTC_SST_GLOBALAVGPOOL};
    L[20] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 7, .in = 12, TI_CODED(N, K, 0)};
#undef TI_CONV
    return ti_finish(r, m);
}

/* Skip connections that read what the engine would otherwise fold or fuse
 * away, and the network input: 2x6x6 ->
 *  0 conv 2->4 k3 p1 (coded)   1 bn   2 relu   3 conv 4->4 k3 p1 (float)
 *  4 shortcut from 0 (the conv's output before its batch norm), linear
 *  5 relu   6 flatten   7 dropout
 *  8 shortcut from 6 (the flattened relu output, 144x1x1), relu
 *  9 route [input, 0]: the input (2x6x6) next to conv 0 (4x6x6)
 * 10 conv 6->2 k1 (coded)   11 shortcut from the input, linear
 * 12 globalavgpool   13 fc 2->3 (float). */
static inline sstc_sst_model *ti_taps(sstc_rng *r, int N, int K) {
    sstc_sst_model *m = sstc_sst_model_new(14);
    m->in_c = 2, m->in_h = 6, m->in_w = 6, m->num_classes = 3;
    sstc_sst_layer *L = m->layers;
    L[0] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 4, .in = 2, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
                            TI_CODED(N, K, 0)};
    L[1] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 4};
    L[2] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[3] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 4, .in = 4, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    L[4] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = 0, .activation = SSTC_SST_ACT_LINEAR};
    L[5] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[6] = (sstc_sst_layer){.kind = SSTC_SST_FLATTEN};
    L[7] = (sstc_sst_layer){.kind = SSTC_SST_DROPOUT, .p = 0.3f};
    L[8] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = 6, .activation = SSTC_SST_ACT_RELU};
    L[9] = (sstc_sst_layer){.kind = SSTC_SST_ROUTE, .n_route = 2, .route = {SSTC_SST_INPUT, 0}};
    L[10] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 2, .in = 6, .kh = 1, .kw = 1, .stride = 1, .pad = 0,
                             TI_CODED(N, K, 1)};
    L[11] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = SSTC_SST_INPUT, .activation = SSTC_SST_ACT_LINEAR};
    L[12] = (sstc_sst_layer){.kind = SSTC_SST_GLOBALAVGPOOL};
    L[13] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 3, .in = 2};
    return ti_finish(r, m);
}

/* Reference forward pass of one sample x (normalized, C*H*W) in double:
 * every record's output is kept, so shortcuts and routes read them. */
static inline void ti_reference(const sstc_sst_model *m, const float *x, double *logits) {
    int n0 = m->in_c * m->in_h * m->in_w;
    double *input = malloc((size_t)n0 * sizeof(double));
    for (int i = 0; i < n0; i++) input[i] = x[i];
    double **outs = calloc((size_t)m->n_layers, sizeof *outs);
    int (*sh)[3] = malloc((size_t)m->n_layers * sizeof *sh);
    for (int li = 0; li < m->n_layers; li++) {
        const sstc_sst_layer *L = &m->layers[li];
        const double *cur = li ? outs[li - 1] : input;
        int c = li ? sh[li - 1][0] : m->in_c, h = li ? sh[li - 1][1] : m->in_h, w = li ? sh[li - 1][2] : m->in_w;
        double *nxt = NULL;
        int oc = c, oh = h, ow = w;
        if (L->kind == SSTC_SST_FC || L->kind == SSTC_SST_CONV) {
            size_t fan_in = sstc_sst_fan_in(L);
            double *W = malloc((size_t)L->out * fan_in * sizeof(double));
            if (L->coded) {
                int8_t *T = malloc((size_t)L->out * fan_in);
                cr_assert_eq(sstc_sst_layer_ternary(L, T), SSTC_OK);
                for (int o = 0; o < L->out; o++)
                    for (size_t j = 0; j < fan_in; j++)
                        W[o * fan_in + j] = (double)L->scale[o] * T[o * fan_in + j];
                free(T);
            } else {
                for (size_t i = 0; i < (size_t)L->out * fan_in; i++) W[i] = L->weight[i];
            }
            if (L->kind == SSTC_SST_FC) {
                oc = L->out, oh = ow = 1;
                nxt = malloc((size_t)oc * sizeof(double));
                for (int o = 0; o < oc; o++) {
                    double s = L->bias[o];
                    for (size_t j = 0; j < fan_in; j++) s += W[o * fan_in + j] * cur[j];
                    nxt[o] = s;
                }
            } else {
                oc = L->out;
                oh = (h + 2 * L->pad - L->kh) / L->stride + 1;
                ow = (w + 2 * L->pad - L->kw) / L->stride + 1;
                nxt = malloc((size_t)oc * oh * ow * sizeof(double));
                for (int o = 0; o < oc; o++)
                    for (int oy = 0; oy < oh; oy++)
                        for (int ox = 0; ox < ow; ox++) {
                            double s = L->bias[o];
                            for (int ci = 0; ci < c; ci++)
                                for (int ky = 0; ky < L->kh; ky++)
                                    for (int kx = 0; kx < L->kw; kx++) {
                                        int iy = oy * L->stride - L->pad + ky, ix = ox * L->stride - L->pad + kx;
                                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                        s += W[o * fan_in + (size_t)(ci * L->kh + ky) * L->kw + kx] *
                                             cur[((size_t)ci * h + iy) * w + ix];
                                    }
                            nxt[((size_t)o * oh + oy) * ow + ox] = s;
                        }
            }
            free(W);
        } else if (L->kind == SSTC_SST_BATCHNORM || L->kind == SSTC_SST_RELU) {
            nxt = malloc((size_t)c * h * w * sizeof(double));
            for (int ci = 0; ci < c; ci++)
                for (int i = 0; i < h * w; i++) {
                    double v = cur[(size_t)ci * h * w + i];
                    nxt[(size_t)ci * h * w + i] =
                        L->kind == SSTC_SST_RELU ? (v < 0 ? 0 : v) : (double)L->scale[ci] * v + L->bias[ci];
                }
        } else if (L->kind == SSTC_SST_MAXPOOL || L->kind == SSTC_SST_AVGPOOL) {
            int k = L->kh;
            oh = (h + 2 * L->pad - k) / L->stride + 1;
            ow = (w + 2 * L->pad - k) / L->stride + 1;
            nxt = malloc((size_t)c * oh * ow * sizeof(double));
            for (int ci = 0; ci < c; ci++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) {
                        double mx = -INFINITY, s = 0;
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * L->stride - L->pad + ky, ix = ox * L->stride - L->pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                double v = cur[((size_t)ci * h + iy) * w + ix];
                                s += v;
                                if (v > mx) mx = v;
                            }
                        nxt[((size_t)ci * oh + oy) * ow + ox] = L->kind == SSTC_SST_MAXPOOL ? mx : s / (k * k);
                    }
        } else if (L->kind == SSTC_SST_PERMUTE) {
            oc = c * h * w, oh = ow = 1;
            nxt = malloc((size_t)oc * sizeof(double));
            for (int i = 0; i < oc; i++) nxt[i] = cur[L->perm[i]];
        } else if (L->kind == SSTC_SST_SHORTCUT) {
            const double *s = L->from < 0 ? input : outs[L->from];
            nxt = malloc((size_t)c * h * w * sizeof(double));
            for (int i = 0; i < c * h * w; i++) {
                double v = cur[i] + s[i];
                nxt[i] = L->activation == SSTC_SST_ACT_RELU && v < 0 ? 0 : v;
            }
        } else if (L->kind == SSTC_SST_ROUTE) {
            oc = 0;
            for (int k = 0; k < L->n_route; k++) {
                int src = L->route[k];
                oc += src < 0 ? m->in_c : sh[src][0];
                oh = src < 0 ? m->in_h : sh[src][1], ow = src < 0 ? m->in_w : sh[src][2];
            }
            nxt = malloc((size_t)oc * oh * ow * sizeof(double));
            int at = 0;
            for (int k = 0; k < L->n_route; k++) {
                int src = L->route[k], sc = src < 0 ? m->in_c : sh[src][0];
                const double *v = src < 0 ? input : outs[src];
                for (int ci = 0; ci < sc; ci++)
                    for (int i = 0; i < oh * ow; i++) nxt[((size_t)(at + ci)) * oh * ow + i] = v[(size_t)ci * oh * ow + i];
                at += sc;
            }
        } else if (L->kind == SSTC_SST_GLOBALAVGPOOL) {
            oh = ow = 1;
            nxt = malloc((size_t)c * sizeof(double));
            for (int ci = 0; ci < c; ci++) {
                double s = 0;
                for (int i = 0; i < h * w; i++) s += cur[(size_t)ci * h * w + i];
                nxt[ci] = s / (h * w);
            }
        } else { /* flatten (NCHW order is already flat), dropout */
            if (L->kind == SSTC_SST_FLATTEN) oc = c * h * w, oh = ow = 1;
            nxt = malloc((size_t)c * h * w * sizeof(double));
            memcpy(nxt, cur, (size_t)c * h * w * sizeof(double));
        }
        outs[li] = nxt;
        sh[li][0] = oc, sh[li][1] = oh, sh[li][2] = ow;
    }
    for (int i = 0; i < m->num_classes; i++) logits[i] = outs[m->n_layers - 1][i];
    for (int li = 0; li < m->n_layers; li++) free(outs[li]);
    free(outs), free(sh), free(input);
}

/* Random normalized inputs: pixels through the model's preprocessing. */
static inline void ti_random_pixels(sstc_rng *r, uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)sstc_rng_below(r, 256);
}
static inline void ti_normalize(const sstc_sst_model *m, const uint8_t *p, int batch, float *x) {
    size_t hw = (size_t)m->in_h * m->in_w;
    for (int b = 0; b < batch; b++)
        for (int c = 0; c < m->in_c; c++) {
            float mean = c < 4 ? m->in_mean[c] : 0.0f, sd = c < 4 ? m->in_std[c] : 1.0f;
            for (size_t i = 0; i < hw; i++) {
                size_t at = ((size_t)b * m->in_c + c) * hw + i;
                x[at] = ((float)p[at] / 255.0f - mean) / sd;
            }
        }
}

/* max over the row of |a - ref| <= tol * max(max |ref|, 1e-3). */
static inline void ti_assert_close(const float *a, const double *ref, int n, double tol, const char *what) {
    double mx = 1e-3, err = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    for (int i = 0; i < n; i++) err = fmax(err, fabs((double)a[i] - ref[i]));
    cr_assert_leq(err, tol * mx, "%s: max |diff| %g > %g * %g", what, err, tol, mx);
}

#endif
