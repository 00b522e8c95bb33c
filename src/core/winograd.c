/* Winograd convolution F(2x2, 3x3) for 3x3 stride-1 convolutions (Lavin &
 * Gray, 2016): each 2x2 block of outputs ("tile") is computed from the 4x4
 * input patch under it as
 *
 *     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d Bᵀᵀ) ] A,
 *
 * where the elementwise product, summed over input channels, is 16 matrix
 * products per group of tiles: for each of the 16 elements e of a
 * transformed tile, M_e (OC x P) = U_e (OC x C) · V_e (C x P), P tiles. That
 * is 16·C multiply-adds per 4 outputs and input channel instead of 36.
 *
 * The backward pass runs the same chain in reverse:
 *     dM = A dY Aᵀ,  dV_e = U_eᵀ dM_e,  dd = B dV Bᵀ (added into the
 *     overlapping 4x4 input patches),  dU_e = Σ_tiles dM_e V_eᵀ,  dg = Gᵀ dU G.
 *
 * Work is split as on the image-parallel im2col path: each thread takes whole
 * groups of images (enough tiles per sgemm, at most B/T images so that every
 * thread has work), with single-threaded sgemms into its own buffers; weight
 * gradients are summed per thread and added in thread order afterwards, so a
 * given thread count gives identical results every run. */
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "internal.h"

enum { WE = 16 }; /* elements of a transformed tile */

#ifndef WINO_GROUP_TILES
#define WINO_GROUP_TILES 128 /* tiles per sgemm (columns), at least; 64 to 1024 measured alike */
#endif
#ifndef WINO_MIN_CHANNELS
#define WINO_MIN_CHANNELS 32 /* auto: Winograd for C and OC at least this */
#endif

/* ---- choosing the algorithm ------------------------------------------- */

static int conv_algo = -1; /* -1: not read yet */

void sstc_conv_set_algo(sstc_conv_algo a) { conv_algo = (int)a; }

sstc_conv_algo sstc_conv_get_algo(void) {
    if (conv_algo < 0) {
        const char *s = getenv("SSTC_CONV");
        conv_algo = SSTC_CONV_AUTO;
        if (s && !strcmp(s, "im2col")) conv_algo = SSTC_CONV_IM2COL;
        else if (s && !strcmp(s, "winograd")) conv_algo = SSTC_CONV_WINOGRAD;
    }
    return (sstc_conv_algo)conv_algo;
}

int sstc_wino_applies(int C, int OC, int KH, int KW, int stride, int pad) {
    if (KH != 3 || KW != 3 || stride != 1 || pad > 1) return 0;
    switch (sstc_conv_get_algo()) {
    case SSTC_CONV_WINOGRAD: return 1;
    case SSTC_CONV_IM2COL: return 0;
    default: return C >= WINO_MIN_CHANNELS && OC >= WINO_MIN_CHANNELS;
    }
}

/* ---- the transforms of one tile (row-major 4x4, 3x3, 2x2) -------------- */

/* U = G g Gᵀ with G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1] */
static inline void tf_kernel(const float g[9], float u[16]) {
    float t[12];
    for (int j = 0; j < 3; j++) {
        t[0 + j] = g[j];
        t[3 + j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
        t[6 + j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
        t[9 + j] = g[6 + j];
    }
    for (int i = 0; i < 4; i++) {
        const float *r = t + 3 * i;
        u[4 * i + 0] = r[0];
        u[4 * i + 1] = 0.5f * (r[0] + r[1] + r[2]);
        u[4 * i + 2] = 0.5f * (r[0] - r[1] + r[2]);
        u[4 * i + 3] = r[2];
    }
}

/* dg = Gᵀ dU G, the adjoint of tf_kernel */
static inline void tf_kernel_adj(const float u[16], float g[9]) {
    float t[12];
    for (int j = 0; j < 4; j++) {
        float a = u[4 + j], b = u[8 + j];
        t[0 + j] = u[j] + 0.5f * (a + b);
        t[4 + j] = 0.5f * (a - b);
        t[8 + j] = 0.5f * (a + b) + u[12 + j];
    }
    for (int i = 0; i < 3; i++) {
        const float *r = t + 4 * i;
        float a = r[1], b = r[2];
        g[3 * i + 0] = r[0] + 0.5f * (a + b);
        g[3 * i + 1] = 0.5f * (a - b);
        g[3 * i + 2] = 0.5f * (a + b) + r[3];
    }
}

/* Y = Aᵀ m A with Aᵀ = [1 1 1 0; 0 1 -1 -1] */
static inline void tf_output(const float m[16], float y[4]) {
    float t[8];
    for (int j = 0; j < 4; j++) {
        t[j] = m[j] + m[4 + j] + m[8 + j];
        t[4 + j] = m[4 + j] - m[8 + j] - m[12 + j];
    }
    y[0] = t[0] + t[1] + t[2];
    y[1] = t[1] - t[2] - t[3];
    y[2] = t[4] + t[5] + t[6];
    y[3] = t[5] - t[6] - t[7];
}

/* ---- layout ------------------------------------------------------------ */

typedef struct {
    int B, C, H, W, OC, OH, OW, pad;
    int TH, TW;   /* tiles per column, per row */
    int Hp, Wp;   /* the padded plane: 2*TH + 2 rows, 2*TW + 2 columns */
    size_t tpi;   /* tiles per image */
    int G;        /* images per group */
    int groups;
    size_t P;     /* tiles of a full group */
} wino_shape;

static wino_shape wino_layout(const sstc_tensor *x, const sstc_tensor *w, int pad, int T) {
    wino_shape s;
    s.B = x->shape[0], s.C = x->shape[1], s.H = x->shape[2], s.W = x->shape[3];
    s.OC = w->shape[0], s.pad = pad;
    s.OH = s.H + 2 * pad - 2, s.OW = s.W + 2 * pad - 2;
    s.TH = (s.OH + 1) / 2, s.TW = (s.OW + 1) / 2;
    s.tpi = (size_t)s.TH * s.TW;
    s.Hp = 2 * s.TH + 2, s.Wp = 2 * s.TW + 2;
    size_t g = (WINO_GROUP_TILES + s.tpi - 1) / s.tpi;
    size_t per_thread = ((size_t)s.B + T - 1) / T; /* every thread gets images */
    if (g > per_thread) g = per_thread;
    if (g < 1) g = 1;
    s.G = (int)g;
    s.groups = (s.B + s.G - 1) / s.G;
    s.P = (size_t)s.G * s.tpi;
    return s;
}

/* Per-thread work space of the tile loops: a zero-padded plane (Hp x Wp,
 * tile (ty, tx) covers rows 2ty..2ty+3 and columns 2tx..2tx+3 of it) and
 * four rows of width Wp. */
static size_t plane_floats(const wino_shape *s) { return (size_t)(s->Hp + 4) * s->Wp; }

/* V[e][c][p] (leading dimension ld) of n images from xb: Bᵀ d B of every
 * 4x4 patch at (2ty - pad, 2tx - pad), zero outside the plane. The input is
 * copied into the padded plane (its border zeroed once: every channel writes
 * the same interior), then transformed a row of tiles at a time: Bᵀ on the
 * four rows over the whole width, then B on each tile's four columns (loops
 * over the tiles of the row, which vectorize). */
static void gather_input(const wino_shape *s, const float *xb, int n, float *V, size_t ld, float *pl) {
    size_t hw = (size_t)s->H * s->W, estride = (size_t)s->C * ld;
    int Wp = s->Wp, TW = s->TW;
    float *t = pl + (size_t)s->Hp * Wp;
    memset(pl, 0, (size_t)s->Hp * Wp * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int c = 0; c < s->C; c++) {
            const float *plane = xb + ((size_t)i * s->C + c) * hw;
            for (int y = 0; y < s->H; y++)
                memcpy(pl + (size_t)(y + s->pad) * Wp + s->pad, plane + (size_t)y * s->W, s->W * sizeof(float));
            float *vc = V + (size_t)c * ld + (size_t)i * s->tpi;
            for (int ty = 0; ty < s->TH; ty++) {
                const float *r0 = pl + (size_t)2 * ty * Wp, *r1 = r0 + Wp, *r2 = r1 + Wp, *r3 = r2 + Wp;
                float *restrict t0 = t, *restrict t1 = t + Wp, *restrict t2 = t + 2 * Wp, *restrict t3 = t + 3 * Wp;
                for (int j = 0; j < Wp; j++) {
                    t0[j] = r0[j] - r2[j];
                    t1[j] = r1[j] + r2[j];
                    t2[j] = r2[j] - r1[j];
                    t3[j] = r1[j] - r3[j];
                }
                float *out = vc + (size_t)ty * TW;
                for (int a = 0; a < 4; a++) {
                    const float *restrict ta = t + (size_t)a * Wp;
                    float *restrict o0 = out + (size_t)(4 * a) * estride, *restrict o1 = o0 + estride,
                                    *restrict o2 = o1 + estride, *restrict o3 = o2 + estride;
                    for (int tx = 0; tx < TW; tx++) {
                        const float *q = ta + 2 * tx;
                        o0[tx] = q[0] - q[2];
                        o1[tx] = q[1] + q[2];
                        o2[tx] = q[2] - q[1];
                        o3[tx] = q[1] - q[3];
                    }
                }
            }
        }
}

/* U[e][oc][c] of the weights (OC, C, 3, 3): rows [o0, o1) */
static void transform_kernels(const float *w, int C, int OC, int o0, int o1, float *U) {
    size_t estride = (size_t)OC * C;
    for (int oc = o0; oc < o1; oc++)
        for (int c = 0; c < C; c++) {
            float u[16];
            tf_kernel(w + ((size_t)oc * C + c) * 9, u);
            for (int e = 0; e < WE; e++) U[e * estride + (size_t)oc * C + c] = u[e];
        }
}

/* 16 sgemms: for every element e, C_e = op(A_e) · op(B_e) (+ beta C_e) */
static void sgemm16(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const float *a, int lda,
                    size_t sa, const float *b, int ldb, size_t sb, float beta, float *c, int ldc, size_t sc) {
    for (int e = 0; e < WE; e++)
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0f, a + e * sa, lda, b + e * sb, ldb, beta, c + e * sc,
                    ldc);
}

static int wino_threads(void) { return sstc_get_threads(); }

/* ---- forward ------------------------------------------------------------ */

int sstc_wino_forward(sstc_ctx *ctx, const sstc_tensor *x, const sstc_tensor *w, const sstc_tensor *bias,
                      sstc_tensor *y, int pad) {
    int T = wino_threads();
    wino_shape s = wino_layout(x, w, pad, T);
    if (T > s.groups) T = s.groups;
    size_t un = (size_t)WE * s.OC * s.C;
    size_t per = (size_t)WE * (s.C + s.OC) * s.P + plane_floats(&s);
    float *scr = sstc_ctx_scratch(ctx, (un + (size_t)T * per) * sizeof(float));
    if (!scr) return -1;
    float *U = scr;
    size_t chw = (size_t)s.C * s.H * s.W, ohw = (size_t)s.OH * s.OW;
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num();
        float *V = scr + un + (size_t)t * per, *M = V + (size_t)WE * s.C * s.P, *pl = M + (size_t)WE * s.OC * s.P;
#pragma omp for schedule(static)
        for (int oc = 0; oc < s.OC; oc++) transform_kernels(w->data, s.C, s.OC, oc, oc + 1, U);
#pragma omp for schedule(static)
        for (int gi = 0; gi < s.groups; gi++) {
            int b0 = gi * s.G, n = s.B - b0 < s.G ? s.B - b0 : s.G;
            size_t ld = (size_t)n * s.tpi;
            gather_input(&s, x->data + (size_t)b0 * chw, n, V, ld, pl);
            sgemm16(CblasNoTrans, CblasNoTrans, s.OC, (int)ld, s.C, U, s.C, (size_t)s.OC * s.C, V, (int)ld,
                    (size_t)s.C * ld, 0.0f, M, (int)ld, (size_t)s.OC * ld);
            size_t estride = (size_t)s.OC * ld;
            for (int i = 0; i < n; i++)
                for (int oc = 0; oc < s.OC; oc++) {
                    float *yp = y->data + ((size_t)(b0 + i) * s.OC + oc) * ohw;
                    const float *mo = M + (size_t)oc * ld + (size_t)i * s.tpi;
                    float bv = bias ? bias->data[oc] : 0.0f;
                    for (int ty = 0; ty < s.TH; ty++)
                        for (int tx = 0; tx < s.TW; tx++) {
                            size_t p = (size_t)ty * s.TW + tx;
                            float m[16], o[4];
                            for (int e = 0; e < WE; e++) m[e] = mo[e * estride + p];
                            tf_output(m, o);
                            int oy = 2 * ty, ox = 2 * tx;
                            float *r = yp + (size_t)oy * s.OW + ox;
                            int two_x = ox + 1 < s.OW, two_y = oy + 1 < s.OH;
                            r[0] = o[0] + bv;
                            if (two_x) r[1] = o[1] + bv;
                            if (two_y) {
                                r[s.OW] = o[2] + bv;
                                if (two_x) r[s.OW + 1] = o[3] + bv;
                            }
                        }
                }
        }
    }
    return 0;
}

/* ---- backward ----------------------------------------------------------- */

/* dM[e][oc][p] of n images' output gradients gy: A dY Aᵀ of every 2x2
 * block, zero beyond an odd edge (gy copied into the padded plane, whose
 * border is zeroed once), a row of tiles at a time */
static void gather_output_grad(const wino_shape *s, const float *gy, int n, float *dM, size_t ld, float *pl) {
    size_t ohw = (size_t)s->OH * s->OW, estride = (size_t)s->OC * ld;
    int Wp = s->Wp, TW = s->TW;
    float *t = pl + (size_t)s->Hp * Wp;
    memset(pl, 0, (size_t)s->Hp * Wp * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int oc = 0; oc < s->OC; oc++) {
            const float *g = gy + ((size_t)i * s->OC + oc) * ohw;
            for (int y = 0; y < s->OH; y++)
                memcpy(pl + (size_t)y * Wp, g + (size_t)y * s->OW, s->OW * sizeof(float));
            float *mo = dM + (size_t)oc * ld + (size_t)i * s->tpi;
            for (int ty = 0; ty < s->TH; ty++) {
                const float *g0 = pl + (size_t)2 * ty * Wp, *g1 = g0 + Wp;
                float *restrict t0 = t, *restrict t1 = t + Wp, *restrict t2 = t + 2 * Wp, *restrict t3 = t + 3 * Wp;
                for (int j = 0; j < 2 * TW; j++) {
                    t0[j] = g0[j];
                    t1[j] = g0[j] + g1[j];
                    t2[j] = g0[j] - g1[j];
                    t3[j] = -g1[j];
                }
                float *out = mo + (size_t)ty * TW;
                for (int a = 0; a < 4; a++) {
                    const float *restrict ta = t + (size_t)a * Wp;
                    float *restrict o0 = out + (size_t)(4 * a) * estride, *restrict o1 = o0 + estride,
                                    *restrict o2 = o1 + estride, *restrict o3 = o2 + estride;
                    for (int tx = 0; tx < TW; tx++) {
                        float u = ta[2 * tx], v = ta[2 * tx + 1];
                        o0[tx] = u;
                        o1[tx] = u + v;
                        o2[tx] = u - v;
                        o3[tx] = -v;
                    }
                }
            }
        }
}

/* dX of n images (written when fresh, added otherwise) from dV: B dV Bᵀ of
 * every tile added into its 4x4 patch of the padded plane (the patches of
 * neighbouring tiles overlap by two rows / columns), a row of tiles at a
 * time: Bᵀ's adjoint on each tile's columns into four rows of width Wp (the
 * even and the odd columns of a row in separate loops, each free of
 * overlaps), then on the rows; then the plane's interior goes to dX. */
static void scatter_input_grad(const wino_shape *s, const float *dV, size_t ld, int n, float *dxb, int fresh,
                               float *pl) {
    size_t hw = (size_t)s->H * s->W, estride = (size_t)s->C * ld;
    int Wp = s->Wp, TW = s->TW;
    float *t = pl + (size_t)s->Hp * Wp;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < s->C; c++) {
            memset(pl, 0, (size_t)s->Hp * Wp * sizeof(float));
            const float *vc = dV + (size_t)c * ld + (size_t)i * s->tpi;
            for (int ty = 0; ty < s->TH; ty++) {
                const float *in = vc + (size_t)ty * TW;
                memset(t, 0, (size_t)4 * Wp * sizeof(float));
                for (int a = 0; a < 4; a++) {
                    float *restrict ta = t + (size_t)a * Wp;
                    const float *restrict v0 = in + (size_t)(4 * a) * estride, *restrict v1 = v0 + estride,
                                          *restrict v2 = v1 + estride, *restrict v3 = v2 + estride;
                    for (int tx = 0; tx < TW; tx++) {
                        ta[2 * tx] += v0[tx];
                        ta[2 * tx + 1] += v1[tx] - v2[tx] + v3[tx];
                    }
                    for (int tx = 0; tx < TW; tx++) {
                        ta[2 * tx + 2] += v1[tx] + v2[tx] - v0[tx];
                        ta[2 * tx + 3] -= v3[tx];
                    }
                }
                float *restrict p0 = pl + (size_t)2 * ty * Wp, *restrict p1 = p0 + Wp, *restrict p2 = p1 + Wp,
                                *restrict p3 = p2 + Wp;
                const float *t0 = t, *t1 = t + Wp, *t2 = t + 2 * Wp, *t3 = t + 3 * Wp;
                for (int j = 0; j < Wp; j++) {
                    p0[j] += t0[j];
                    p1[j] += t1[j] - t2[j] + t3[j];
                    p2[j] += t1[j] + t2[j] - t0[j];
                    p3[j] -= t3[j];
                }
            }
            float *plane = dxb + ((size_t)i * s->C + c) * hw;
            for (int y = 0; y < s->H; y++) {
                float *restrict o = plane + (size_t)y * s->W;
                const float *restrict q = pl + (size_t)(y + s->pad) * Wp + s->pad;
                if (fresh)
                    memcpy(o, q, s->W * sizeof(float));
                else
                    for (int x = 0; x < s->W; x++) o[x] += q[x];
            }
        }
}

void sstc_wino_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0], *w = y->src[1];
    int pad = y->ip[1];
    int want_dw = w->requires_grad, want_dx = x->requires_grad;
    if (!want_dw && !want_dx) return;
    int T = wino_threads();
    wino_shape s = wino_layout(x, w, pad, T);
    if (T > s.groups) T = s.groups;
    size_t un = (size_t)WE * s.OC * s.C;
    /* per thread: its dU, V (reused for dV once dU has it), dM */
    size_t per = (want_dw ? un : 0) + (size_t)WE * (s.C + s.OC) * s.P + plane_floats(&s);
    float *scr = sstc_ctx_scratch(ctx, ((want_dx ? un : 0) + (size_t)T * per) * sizeof(float));
    if (!scr) return;
    float *U = scr, *slots = scr + (want_dx ? un : 0);
    int fresh = 0;
    float *dx = want_dx ? sstc_ctx_grad_fresh(ctx, x, &fresh) : NULL;
    float *dw = want_dw ? sstc_ctx_grad(ctx, w) : NULL;
    size_t chw = (size_t)s.C * s.H * s.W, ohw = (size_t)s.OH * s.OW;
#pragma omp parallel num_threads(T)
    {
        /* the team may be smaller than T: only existing threads' slots are summed */
        int t = omp_get_thread_num(), team = omp_get_num_threads();
        float *dU = slots + (size_t)t * per, *V = dU + (want_dw ? un : 0), *dM = V + (size_t)WE * s.C * s.P;
        float *pl = dM + (size_t)WE * s.OC * s.P;
        if (want_dw) memset(dU, 0, un * sizeof(float));
        if (want_dx) {
#pragma omp for schedule(static)
            for (int oc = 0; oc < s.OC; oc++) transform_kernels(w->data, s.C, s.OC, oc, oc + 1, U);
        }
#pragma omp for schedule(static)
        for (int gi = 0; gi < s.groups; gi++) {
            int b0 = gi * s.G, n = s.B - b0 < s.G ? s.B - b0 : s.G;
            size_t ld = (size_t)n * s.tpi;
            gather_output_grad(&s, y->grad + (size_t)b0 * s.OC * ohw, n, dM, ld, pl);
            if (want_dw) {
                gather_input(&s, x->data + (size_t)b0 * chw, n, V, ld, pl);
                /* dU_e (OC x C) += dM_e (OC x P) · V_eᵀ */
                sgemm16(CblasNoTrans, CblasTrans, s.OC, s.C, (int)ld, dM, (int)ld, (size_t)s.OC * ld, V,
                        (int)ld, (size_t)s.C * ld, 1.0f, dU, s.C, (size_t)s.OC * s.C);
            }
            if (want_dx) {
                /* dV_e (C x P) = U_eᵀ · dM_e, into V's buffer */
                sgemm16(CblasTrans, CblasNoTrans, s.C, (int)ld, s.OC, U, s.C, (size_t)s.OC * s.C, dM, (int)ld,
                        (size_t)s.OC * ld, 0.0f, V, (int)ld, (size_t)s.C * ld);
                scatter_input_grad(&s, V, ld, n, dx + (size_t)b0 * chw, fresh, pl);
            }
        }
        if (want_dw) {
            /* implicit barrier above: every thread's dU is complete; sum them
             * in thread order, then dW += Gᵀ dU G */
#pragma omp for schedule(static)
            for (size_t k = 0; k < (size_t)s.OC * s.C; k++) {
                float u[16], g[9];
                for (int e = 0; e < WE; e++) {
                    float acc = 0.0f;
                    for (int j = 0; j < team; j++) acc += slots[(size_t)j * per + e * (size_t)s.OC * s.C + k];
                    u[e] = acc;
                }
                tf_kernel_adj(u, g);
                float *d = dw + k * 9;
                for (int q = 0; q < 9; q++) d[q] += g[q];
            }
        }
    }
}
