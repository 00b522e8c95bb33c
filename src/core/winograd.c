/* Winograd convolution F(m x m, 3x3), m = 2 or 4, for 3x3 stride-1
 * convolutions (Lavin & Gray, 2016): each m x m block of outputs ("tile") is
 * computed from the a x a input patch under it (a = m + 2) as
 *
 *     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,
 *
 * where the elementwise product, summed over input channels, is a² matrix
 * products per group of tiles: for each of the E = a² elements e of a
 * transformed tile, M_e (OC x P) = U_e (OC x C) · V_e (C x P), P tiles. That
 * is 16 (m = 2) or 36 (m = 4) multiply-adds per m² outputs and input channel
 * instead of 9 m², 2.25x or 4x fewer. F(4x4) rounds about ten times more
 * (its transforms weigh values by up to 5 and 8, F(2x2)'s by 1); they stay
 * within 1e-4 and 1e-5 of the magnitude of the sums (tests).
 *
 * The backward pass runs the same chain in reverse:
 *     dM = A dY Aᵀ,  dV_e = U_eᵀ dM_e,  dd = B dV Bᵀ (added into the
 *     overlapping input patches),  dU_e = Σ_tiles dM_e V_eᵀ,  dg = Gᵀ dU G.
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

enum { WMAX_E = 36 }; /* elements of the largest transformed tile */

#ifndef WINO_GROUP_TILES
#define WINO_GROUP_TILES 128 /* tiles per sgemm (columns), at least; 64 to 1024 measured alike */
#endif
/* auto (measured with build/bench_conv, docs/performance.md): F(4x4) on
 * output planes of at least 8x8 with C and OC >= WINO_MIN_CHANNELS4, F(2x2)
 * on smaller planes with C and OC >= WINO_MIN_CHANNELS2, im2col otherwise
 * (the first layer of an image network, 3 channels, stays on im2col) */
#ifndef WINO_MIN_CHANNELS4
#define WINO_MIN_CHANNELS4 16
#endif
#ifndef WINO_MIN_CHANNELS2
#define WINO_MIN_CHANNELS2 64
#endif

/* ---- choosing the algorithm ------------------------------------------- */

static int conv_algo = -1; /* -1: not read yet */
static int forced_tile;    /* 0: by shape */

void sstc_conv_set_algo(sstc_conv_algo a) { conv_algo = (int)a; }

void sstc_wino_set_tile(int m) { forced_tile = m == 2 || m == 4 ? m : 0; }
int sstc_wino_tile(void) { return forced_tile; }

sstc_conv_algo sstc_conv_get_algo(void) {
    if (conv_algo < 0) {
        const char *s = getenv("SSTC_CONV");
        conv_algo = SSTC_CONV_AUTO;
        if (s && !strcmp(s, "im2col")) conv_algo = SSTC_CONV_IM2COL;
        else if (s && !strncmp(s, "winograd", 8)) {
            conv_algo = SSTC_CONV_WINOGRAD;
            if (!strcmp(s + 8, "2")) forced_tile = 2;
            else if (!strcmp(s + 8, "4")) forced_tile = 4;
        }
    }
    return (sstc_conv_algo)conv_algo;
}

int sstc_wino_applies(int C, int OC, int OH, int OW, int KH, int KW, int stride, int pad) {
    if (KH != 3 || KW != 3 || stride != 1 || pad > 1) return 0;
    int big = OH >= 8 && OW >= 8;
    switch (sstc_conv_get_algo()) {
    case SSTC_CONV_WINOGRAD: return forced_tile ? forced_tile : big ? 4 : 2;
    case SSTC_CONV_IM2COL: return 0;
    default:
        if (big) return C >= WINO_MIN_CHANNELS4 && OC >= WINO_MIN_CHANNELS4 ? 4 : 0;
        return C >= WINO_MIN_CHANNELS2 && OC >= WINO_MIN_CHANNELS2 ? 2 : 0;
    }
}

/* ---- F(2x2, 3x3): the transforms of one tile (row-major 4x4, 3x3, 2x2) --- */

/* U = G g Gᵀ with G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1] */
static inline void tf_kernel2(const float g[9], float u[16]) {
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
static inline void tf_kernel_adj2(const float u[16], float g[9]) {
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
static inline void tf_output2(const float m[16], float y[4]) {
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

/* ---- F(4x4, 3x3): the transforms along one line of a tile ---------------
 * Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
 *       0 2 -1 -2 1 0; 0 4 0 -5 0 1],
 * G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
 * Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
 * A 2-D transform is the 1-D one on every row, then on every column. */

#define AI static inline __attribute__((always_inline))

/* o = Bᵀ d (d and o at strides ds, os) */
AI void bt4(const float *d, int ds, float *o, int os) {
    float d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
    o[0] = 4.0f * d0 - 5.0f * d2 + d4;
    o[os] = d3 + d4 - 4.0f * (d1 + d2);
    o[2 * os] = d4 - d3 + 4.0f * (d1 - d2);
    o[3 * os] = d4 - d2 + 2.0f * (d3 - d1);
    o[4 * os] = d4 - d2 + 2.0f * (d1 - d3);
    o[5 * os] = 4.0f * d1 - 5.0f * d3 + d5;
}

/* d = B v, the adjoint of bt4 */
AI void b4(const float *v, int vs, float *d, int ds) {
    float v0 = v[0], v1 = v[vs], v2 = v[2 * vs], v3 = v[3 * vs], v4 = v[4 * vs], v5 = v[5 * vs];
    d[0] = 4.0f * v0;
    d[ds] = 4.0f * (v2 - v1 + v5) + 2.0f * (v4 - v3);
    d[2 * ds] = -5.0f * v0 - 4.0f * (v1 + v2) - v3 - v4;
    d[3 * ds] = v1 - v2 + 2.0f * (v3 - v4) - 5.0f * v5;
    d[4 * ds] = v0 + v1 + v2 + v3 + v4;
    d[5 * ds] = v5;
}

/* y = Aᵀ m (6 -> 4) */
AI void at4(const float *m, int ms, float *y, int ys) {
    float m0 = m[0], m1 = m[ms], m2 = m[2 * ms], m3 = m[3 * ms], m4 = m[4 * ms], m5 = m[5 * ms];
    float p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
    y[0] = m0 + p12 + p34;
    y[ys] = n12 + 2.0f * n34;
    y[2 * ys] = p12 + 4.0f * p34;
    y[3 * ys] = n12 + 8.0f * n34 + m5;
}

/* m = A y (4 -> 6), the adjoint of at4 */
AI void a4(const float *y, int ys, float *m, int ms) {
    float y0 = y[0], y1 = y[ys], y2 = y[2 * ys], y3 = y[3 * ys];
    m[0] = y0;
    m[ms] = y0 + y1 + y2 + y3;
    m[2 * ms] = y0 - y1 + y2 - y3;
    m[3 * ms] = y0 + 2.0f * y1 + 4.0f * y2 + 8.0f * y3;
    m[4 * ms] = y0 - 2.0f * y1 + 4.0f * y2 - 8.0f * y3;
    m[5 * ms] = y3;
}

static const float G4[18] = {1.0f / 4,  0,          0,         -1.0f / 6, -1.0f / 6, -1.0f / 6,
                             -1.0f / 6, 1.0f / 6,   -1.0f / 6, 1.0f / 24, 1.0f / 12, 1.0f / 6,
                             1.0f / 24, -1.0f / 12, 1.0f / 6,  0,         0,         1};

/* U = G g Gᵀ of one kernel (6x6) */
static void tf_kernel4(const float g[9], float u[36]) {
    float t[18];
    for (int i = 0; i < 6; i++)
        for (int q = 0; q < 3; q++)
            t[i * 3 + q] = G4[i * 3] * g[q] + G4[i * 3 + 1] * g[3 + q] + G4[i * 3 + 2] * g[6 + q];
    for (int i = 0; i < 6; i++)
        for (int l = 0; l < 6; l++)
            u[i * 6 + l] = t[i * 3] * G4[l * 3] + t[i * 3 + 1] * G4[l * 3 + 1] + t[i * 3 + 2] * G4[l * 3 + 2];
}

/* dg = Gᵀ dU G, the adjoint of tf_kernel4 */
static void tf_kernel_adj4(const float u[36], float g[9]) {
    float t[18];
    for (int p = 0; p < 3; p++)
        for (int l = 0; l < 6; l++) {
            float acc = 0.0f;
            for (int i = 0; i < 6; i++) acc += G4[i * 3 + p] * u[i * 6 + l];
            t[p * 6 + l] = acc;
        }
    for (int p = 0; p < 3; p++)
        for (int q = 0; q < 3; q++) {
            float acc = 0.0f;
            for (int l = 0; l < 6; l++) acc += t[p * 6 + l] * G4[l * 3 + q];
            g[p * 3 + q] = acc;
        }
}

/* ---- layout ------------------------------------------------------------ */

typedef struct {
    int m, E;     /* output tile side (2 or 4); elements of a transformed tile, (m+2)² */
    int B, C, H, W, OC, OH, OW, pad;
    int TH, TW;   /* tiles per column, per row */
    int Hp, Wp;   /* the padded plane: m*TH + 2 rows, m*TW + 2 columns */
    size_t tpi;   /* tiles per image */
    int G;        /* images per group */
    int groups;
    size_t P;     /* tiles of a full group */
} wino_shape;

static wino_shape wino_layout(const sstc_tensor *x, const sstc_tensor *w, int pad, int T, int m) {
    wino_shape s;
    s.m = m == 4 ? 4 : 2, s.E = (s.m + 2) * (s.m + 2);
    s.B = x->shape[0], s.C = x->shape[1], s.H = x->shape[2], s.W = x->shape[3];
    s.OC = w->shape[0], s.pad = pad;
    s.OH = s.H + 2 * pad - 2, s.OW = s.W + 2 * pad - 2;
    s.TH = (s.OH + s.m - 1) / s.m, s.TW = (s.OW + s.m - 1) / s.m;
    s.tpi = (size_t)s.TH * s.TW;
    s.Hp = s.m * s.TH + 2, s.Wp = s.m * s.TW + 2;
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
 * tile (ty, tx) covers rows m·ty .. m·ty+m+1 and the same columns of it),
 * four rows of width Wp, and the E transformed values of every tile of one
 * plane (F(4x4)). */
static size_t plane_floats(const wino_shape *s) { return (size_t)(s->Hp + 4) * s->Wp + s->tpi * s->E; }

/* Short rows (4 to 34 floats on CIFAR planes): inline loops, not calls. */
static inline void copy_row(float *restrict dst, const float *restrict src, int n) {
    for (int j = 0; j < n; j++) dst[j] = src[j];
}
static inline void zero_floats(float *dst, size_t n) {
    for (size_t j = 0; j < n; j++) dst[j] = 0.0f;
}

/* V[e][c][p] (leading dimension ld) of n images from xb: Bᵀ d B of every
 * 4x4 patch at (2ty - pad, 2tx - pad), zero outside the plane. The input is
 * copied into the padded plane (its border zeroed once: every channel writes
 * the same interior), then transformed a row of tiles at a time: Bᵀ on the
 * four rows over the whole width, then B on each tile's four columns (loops
 * over the tiles of the row, which vectorize). */
static void gather_input2(const wino_shape *s, const float *xb, int n, float *V, size_t ld, float *pl) {
    size_t hw = (size_t)s->H * s->W, estride = (size_t)s->C * ld;
    int Wp = s->Wp, TW = s->TW;
    float *t = pl + (size_t)s->Hp * Wp;
    memset(pl, 0, (size_t)s->Hp * Wp * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int c = 0; c < s->C; c++) {
            const float *plane = xb + ((size_t)i * s->C + c) * hw;
            for (int y = 0; y < s->H; y++)
                copy_row(pl + (size_t)(y + s->pad) * Wp + s->pad, plane + (size_t)y * s->W, s->W);
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


/* ---- backward ----------------------------------------------------------- */

/* dM[e][oc][p] of n images' output gradients gy: A dY Aᵀ of every 2x2
 * block, zero beyond an odd edge (gy copied into the padded plane, whose
 * border is zeroed once), a row of tiles at a time */
static void gather_output_grad2(const wino_shape *s, const float *gy, int n, float *dM, size_t ld, float *pl) {
    size_t ohw = (size_t)s->OH * s->OW, estride = (size_t)s->OC * ld;
    int Wp = s->Wp, TW = s->TW;
    float *t = pl + (size_t)s->Hp * Wp;
    memset(pl, 0, (size_t)s->Hp * Wp * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int oc = 0; oc < s->OC; oc++) {
            const float *g = gy + ((size_t)i * s->OC + oc) * ohw;
            for (int y = 0; y < s->OH; y++)
                copy_row(pl + (size_t)y * Wp, g + (size_t)y * s->OW, s->OW);
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
static void scatter_input_grad2(const wino_shape *s, const float *dV, size_t ld, int n, float *dxb, int fresh,
                               float *pl) {
    size_t hw = (size_t)s->H * s->W, estride = (size_t)s->C * ld;
    int Wp = s->Wp, TW = s->TW;
    float *t = pl + (size_t)s->Hp * Wp;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < s->C; c++) {
            zero_floats(pl, (size_t)s->Hp * Wp);
            const float *vc = dV + (size_t)c * ld + (size_t)i * s->tpi;
            for (int ty = 0; ty < s->TH; ty++) {
                const float *in = vc + (size_t)ty * TW;
                zero_floats(t, (size_t)4 * Wp);
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
                    copy_row(o, q, s->W);
                else
                    for (int x = 0; x < s->W; x++) o[x] += q[x];
            }
        }
}

/* Y (+ bias) of n images from M[e][oc][p]: Aᵀ M A of every tile, clipped
 * at an odd edge */
static void scatter_output2(const wino_shape *s, const float *M, size_t ld, int n, float *yb, const float *bias) {
    size_t ohw = (size_t)s->OH * s->OW, estride = (size_t)s->OC * ld;
    for (int i = 0; i < n; i++)
        for (int oc = 0; oc < s->OC; oc++) {
            float *yp = yb + ((size_t)i * s->OC + oc) * ohw;
            const float *mo = M + (size_t)oc * ld + (size_t)i * s->tpi;
            float bv = bias ? bias[oc] : 0.0f;
            for (int ty = 0; ty < s->TH; ty++)
                for (int tx = 0; tx < s->TW; tx++) {
                    size_t p = (size_t)ty * s->TW + tx;
                    float m[16], o[4];
                    for (int e = 0; e < 16; e++) m[e] = mo[e * estride + p];
                    tf_output2(m, o);
                    int oy = 2 * ty, ox = 2 * tx;
                    float *r = yp + (size_t)oy * s->OW + ox;
                    int two_x = ox + 1 < s->OW, two_y = oy + 1 < s->OH;
                    r[0] = o[0] + bv;
                    if (two_x) r[1] = o[1] + bv;
                    if (two_y) {
                        r[s->OW] = o[2] + bv;
                        if (two_x) r[s->OW + 1] = o[3] + bv;
                    }
                }
        }
}

/* ---- F(4x4, 3x3) tile loops: per tile, on the padded plane as above ----
 * A plane's transformed tiles are collected in loc[e][p] first and moved to
 * (or from) the E matrices in one contiguous run per element: 36 scattered
 * stores per tile straight into the matrices (36 pages apart) cost more
 * than the transforms. */

/* 36 runs of n floats: dst[e·ds + j] = src[e·ss + j] (loops, not calls:
 * the runs are short, 1 to 64 floats on CIFAR planes) */
static inline void move_runs(float *restrict dst, size_t ds, const float *restrict src, size_t ss, size_t n) {
    for (int e = 0; e < 36; e++)
        for (size_t j = 0; j < n; j++) dst[e * ds + j] = src[e * ss + j];
}

static void gather_input4(const wino_shape *s, const float *xb, int n, float *V, size_t ld, float *pl) {
    size_t hw = (size_t)s->H * s->W, estride = (size_t)s->C * ld, tpi = s->tpi;
    int Wp = s->Wp;
    float *loc = pl + (size_t)(s->Hp + 4) * Wp;
    memset(pl, 0, (size_t)s->Hp * Wp * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int c = 0; c < s->C; c++) {
            const float *plane = xb + ((size_t)i * s->C + c) * hw;
            for (int y = 0; y < s->H; y++)
                copy_row(pl + (size_t)(y + s->pad) * Wp + s->pad, plane + (size_t)y * s->W, s->W);
            float *vc = V + (size_t)c * ld + (size_t)i * s->tpi;
            for (int ty = 0; ty < s->TH; ty++)
                for (int tx = 0; tx < s->TW; tx++) {
                    const float *d = pl + (size_t)4 * ty * Wp + 4 * tx;
                    float t[36];
                    size_t p = (size_t)ty * s->TW + tx;
                    for (int r = 0; r < 6; r++) bt4(d + (size_t)r * Wp, 1, t + 6 * r, 1); /* d B */
                    for (int l = 0; l < 6; l++) bt4(t + l, 6, loc + l * tpi + p, 6 * tpi); /* Bᵀ (d B) */
                }
            move_runs(vc, estride, loc, tpi, tpi);
        }
}

static void scatter_output4(const wino_shape *s, const float *M, size_t ld, int n, float *yb, const float *bias,
                            float *pl) {
    size_t ohw = (size_t)s->OH * s->OW, estride = (size_t)s->OC * ld, tpi = s->tpi;
    float *loc = pl + (size_t)(s->Hp + 4) * s->Wp;
    for (int i = 0; i < n; i++)
        for (int oc = 0; oc < s->OC; oc++) {
            float *yp = yb + ((size_t)i * s->OC + oc) * ohw;
            const float *mo = M + (size_t)oc * ld + (size_t)i * s->tpi;
            float bv = bias ? bias[oc] : 0.0f;
            move_runs(loc, tpi, mo, estride, tpi);
            for (int ty = 0; ty < s->TH; ty++)
                for (int tx = 0; tx < s->TW; tx++) {
                    size_t p = (size_t)ty * s->TW + tx;
                    float t[24], o[16];
                    for (int r = 0; r < 6; r++) at4(loc + 6 * r * tpi + p, (int)tpi, t + 4 * r, 1); /* M A */
                    for (int c = 0; c < 4; c++) at4(t + c, 4, o + c, 4);         /* Aᵀ (M A) */
                    int oy = 4 * ty, ox = 4 * tx;
                    int nr = s->OH - oy < 4 ? s->OH - oy : 4, nc = s->OW - ox < 4 ? s->OW - ox : 4;
                    float *r = yp + (size_t)oy * s->OW + ox;
                    for (int a = 0; a < nr; a++)
                        for (int b = 0; b < nc; b++) r[(size_t)a * s->OW + b] = o[4 * a + b] + bv;
                }
        }
}

static void gather_output_grad4(const wino_shape *s, const float *gy, int n, float *dM, size_t ld, float *pl) {
    size_t ohw = (size_t)s->OH * s->OW, estride = (size_t)s->OC * ld, tpi = s->tpi;
    int Wp = s->Wp;
    float *loc = pl + (size_t)(s->Hp + 4) * Wp;
    memset(pl, 0, (size_t)s->Hp * Wp * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int oc = 0; oc < s->OC; oc++) {
            const float *g = gy + ((size_t)i * s->OC + oc) * ohw;
            for (int y = 0; y < s->OH; y++) copy_row(pl + (size_t)y * Wp, g + (size_t)y * s->OW, s->OW);
            float *mo = dM + (size_t)oc * ld + (size_t)i * s->tpi;
            for (int ty = 0; ty < s->TH; ty++)
                for (int tx = 0; tx < s->TW; tx++) {
                    const float *d = pl + (size_t)4 * ty * Wp + 4 * tx;
                    float t[24];
                    size_t p = (size_t)ty * s->TW + tx;
                    for (int r = 0; r < 4; r++) a4(d + (size_t)r * Wp, 1, t + 6 * r, 1);    /* dY Aᵀ */
                    for (int l = 0; l < 6; l++) a4(t + l, 6, loc + l * tpi + p, 6 * (int)tpi); /* A (dY Aᵀ) */
                }
            move_runs(mo, estride, loc, tpi, tpi);
        }
}

static void scatter_input_grad4(const wino_shape *s, const float *dV, size_t ld, int n, float *dxb, int fresh,
                                float *pl) {
    size_t hw = (size_t)s->H * s->W, estride = (size_t)s->C * ld, tpi = s->tpi;
    int Wp = s->Wp;
    float *loc = pl + (size_t)(s->Hp + 4) * Wp;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < s->C; c++) {
            zero_floats(pl, (size_t)s->Hp * Wp);
            const float *vc = dV + (size_t)c * ld + (size_t)i * s->tpi;
            move_runs(loc, tpi, vc, estride, tpi);
            for (int ty = 0; ty < s->TH; ty++)
                for (int tx = 0; tx < s->TW; tx++) {
                    size_t p = (size_t)ty * s->TW + tx;
                    float t[36], d[36];
                    for (int r = 0; r < 6; r++) b4(loc + 6 * r * tpi + p, (int)tpi, t + 6 * r, 1); /* dV Bᵀ */
                    for (int q = 0; q < 6; q++) b4(t + q, 6, d + q, 6);         /* B (dV Bᵀ) */
                    float *o = pl + (size_t)4 * ty * Wp + 4 * tx;
                    for (int a = 0; a < 6; a++)
                        for (int b = 0; b < 6; b++) o[(size_t)a * Wp + b] += d[6 * a + b];
                }
            float *plane = dxb + ((size_t)i * s->C + c) * hw;
            for (int y = 0; y < s->H; y++) {
                float *restrict o = plane + (size_t)y * s->W;
                const float *restrict q = pl + (size_t)(y + s->pad) * Wp + s->pad;
                if (fresh)
                    copy_row(o, q, s->W);
                else
                    for (int x = 0; x < s->W; x++) o[x] += q[x];
            }
        }
}

/* ---- dispatch on the tile size ----------------------------------------- */

static void gather_input(const wino_shape *s, const float *xb, int n, float *V, size_t ld, float *pl) {
    if (s->m == 4) gather_input4(s, xb, n, V, ld, pl);
    else gather_input2(s, xb, n, V, ld, pl);
}
static void scatter_output(const wino_shape *s, const float *M, size_t ld, int n, float *yb, const float *bias,
                           float *pl) {
    if (s->m == 4) scatter_output4(s, M, ld, n, yb, bias, pl);
    else scatter_output2(s, M, ld, n, yb, bias);
}
static void gather_output_grad(const wino_shape *s, const float *gy, int n, float *dM, size_t ld, float *pl) {
    if (s->m == 4) gather_output_grad4(s, gy, n, dM, ld, pl);
    else gather_output_grad2(s, gy, n, dM, ld, pl);
}
static void scatter_input_grad(const wino_shape *s, const float *dV, size_t ld, int n, float *dxb, int fresh,
                               float *pl) {
    if (s->m == 4) scatter_input_grad4(s, dV, ld, n, dxb, fresh, pl);
    else scatter_input_grad2(s, dV, ld, n, dxb, fresh, pl);
}

/* U[e][oc][c] of the weights (OC, C, 3, 3): rows [o0, o1). A chunk of a
 * row's kernels is transformed into loc[e][c] first, then moved one run per
 * element (the E matrices lie OC·C floats apart). */
enum { KCHUNK = 64 };
static void transform_kernels(const wino_shape *s, const float *w, int o0, int o1, float *U) {
    size_t estride = (size_t)s->OC * s->C;
    float loc[WMAX_E * KCHUNK];
    for (int oc = o0; oc < o1; oc++)
        for (int c0 = 0; c0 < s->C; c0 += KCHUNK) {
            int nc = s->C - c0 < KCHUNK ? s->C - c0 : KCHUNK;
            for (int c = 0; c < nc; c++) {
                float u[WMAX_E];
                const float *g = w + ((size_t)oc * s->C + c0 + c) * 9;
                if (s->m == 4) tf_kernel4(g, u);
                else tf_kernel2(g, u);
                for (int e = 0; e < s->E; e++) loc[e * KCHUNK + c] = u[e];
            }
            for (int e = 0; e < s->E; e++)
                copy_row(U + e * estride + (size_t)oc * s->C + c0, loc + e * KCHUNK, nc);
        }
}

/* E sgemms: for every element e, C_e = op(A_e) · op(B_e) (+ beta C_e) */
static void sgemm_e(int E, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const float *a, int lda,
                    size_t sa, const float *b, int ldb, size_t sb, float beta, float *c, int ldc, size_t sc) {
    for (int e = 0; e < E; e++)
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0f, a + e * sa, lda, b + e * sb, ldb, beta, c + e * sc,
                    ldc);
}

/* ---- forward ------------------------------------------------------------ */
int sstc_wino_forward(sstc_ctx *ctx, const sstc_tensor *x, const sstc_tensor *w, const sstc_tensor *bias,
                      sstc_tensor *y, int pad, int m) {
    int T = sstc_get_threads();
    wino_shape s = wino_layout(x, w, pad, T, m);
    if (T > s.groups) T = s.groups;
    size_t un = (size_t)s.E * s.OC * s.C;
    size_t per = (size_t)s.E * (s.C + s.OC) * s.P + plane_floats(&s);
    float *scr = sstc_ctx_scratch(ctx, (un + (size_t)T * per) * sizeof(float));
    if (!scr) return -1;
    float *U = scr;
    size_t chw = (size_t)s.C * s.H * s.W, ohw = (size_t)s.OH * s.OW;
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num();
        float *V = scr + un + (size_t)t * per, *M = V + (size_t)s.E * s.C * s.P, *pl = M + (size_t)s.E * s.OC * s.P;
#pragma omp for schedule(static)
        for (int oc = 0; oc < s.OC; oc++) transform_kernels(&s, w->data, oc, oc + 1, U);
#pragma omp for schedule(static)
        for (int gi = 0; gi < s.groups; gi++) {
            int b0 = gi * s.G, n = s.B - b0 < s.G ? s.B - b0 : s.G;
            size_t ld = (size_t)n * s.tpi;
            gather_input(&s, x->data + (size_t)b0 * chw, n, V, ld, pl);
            sgemm_e(s.E, CblasNoTrans, CblasNoTrans, s.OC, (int)ld, s.C, U, s.C, (size_t)s.OC * s.C, V, (int)ld,
                    (size_t)s.C * ld, 0.0f, M, (int)ld, (size_t)s.OC * ld);
            scatter_output(&s, M, ld, n, y->data + (size_t)b0 * s.OC * ohw, bias ? bias->data : NULL, pl);
        }
    }
    return 0;
}

/* ---- backward (the chain in reverse) ---------------------------------- */

void sstc_wino_backward(sstc_ctx *ctx, sstc_tensor *y, int m) {
    sstc_tensor *x = y->src[0], *w = y->src[1];
    int pad = y->ip[1];
    int want_dw = w->requires_grad, want_dx = x->requires_grad;
    if (!want_dw && !want_dx) return;
    int T = sstc_get_threads();
    wino_shape s = wino_layout(x, w, pad, T, m);
    if (T > s.groups) T = s.groups;
    size_t un = (size_t)s.E * s.OC * s.C;
    /* per thread: its dU, V (reused for dV once dU has it), dM */
    size_t per = (want_dw ? un : 0) + (size_t)s.E * (s.C + s.OC) * s.P + plane_floats(&s);
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
        float *dU = slots + (size_t)t * per, *V = dU + (want_dw ? un : 0), *dM = V + (size_t)s.E * s.C * s.P;
        float *pl = dM + (size_t)s.E * s.OC * s.P;
        if (want_dw) memset(dU, 0, un * sizeof(float));
        if (want_dx) {
#pragma omp for schedule(static)
            for (int oc = 0; oc < s.OC; oc++) transform_kernels(&s, w->data, oc, oc + 1, U);
        }
#pragma omp for schedule(static)
        for (int gi = 0; gi < s.groups; gi++) {
            int b0 = gi * s.G, n = s.B - b0 < s.G ? s.B - b0 : s.G;
            size_t ld = (size_t)n * s.tpi;
            gather_output_grad(&s, y->grad + (size_t)b0 * s.OC * ohw, n, dM, ld, pl);
            if (want_dw) {
                gather_input(&s, x->data + (size_t)b0 * chw, n, V, ld, pl);
                /* dU_e (OC x C) += dM_e (OC x P) · V_eᵀ */
                sgemm_e(s.E, CblasNoTrans, CblasTrans, s.OC, s.C, (int)ld, dM, (int)ld, (size_t)s.OC * ld, V,
                        (int)ld, (size_t)s.C * ld, 1.0f, dU, s.C, (size_t)s.OC * s.C);
            }
            if (want_dx) {
                /* dV_e (C x P) = U_eᵀ · dM_e, into V's buffer */
                sgemm_e(s.E, CblasTrans, CblasNoTrans, s.C, (int)ld, s.OC, U, s.C, (size_t)s.OC * s.C, dM, (int)ld,
                        (size_t)s.OC * ld, 0.0f, V, (int)ld, (size_t)s.C * ld);
                scatter_input_grad(&s, V, ld, n, dx + (size_t)b0 * chw, fresh, pl);
            }
        }
        if (want_dw) {
            /* implicit barrier above: every thread's dU is complete; sum them
             * in thread order, then dW += Gᵀ dU G */
            size_t nk = (size_t)s.OC * s.C, est = nk;
            long chunks = (long)((nk + KCHUNK - 1) / KCHUNK);
#pragma omp for schedule(static)
            for (long ch = 0; ch < chunks; ch++) {
                size_t k0 = (size_t)ch * KCHUNK, kn = nk - k0 < KCHUNK ? nk - k0 : KCHUNK;
                float loc[WMAX_E * KCHUNK];
                for (int e = 0; e < s.E; e++) {
                    float *r = loc + e * KCHUNK;
                    copy_row(r, slots + e * est + k0, (int)kn);
                    for (int j = 1; j < team; j++) {
                        const float *o = slots + (size_t)j * per + e * est + k0;
                        for (size_t q = 0; q < kn; q++) r[q] += o[q];
                    }
                }
                for (size_t q = 0; q < kn; q++) {
                    float u[WMAX_E], g[9];
                    for (int e = 0; e < s.E; e++) u[e] = loc[e * KCHUNK + q];
                    if (s.m == 4) tf_kernel_adj4(u, g);
                    else tf_kernel_adj2(u, g);
                    float *d = dw + (k0 + q) * 9;
                    for (int i = 0; i < 9; i++) d[i] += g[i];
                }
            }
        }
    }
}
