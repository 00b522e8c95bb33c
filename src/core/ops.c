/* Forward and backward rules of every op. Each op validates its inputs,
 * computes its output eagerly and, when a gradient is needed, records itself on
 * the context's tape; its backward rule accumulates into the sources' grads.
 * Sums are always taken in a fixed order (per output element, sequentially), so
 * results do not depend on the thread count's scheduling. */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "internal.h"

#define S(t) sstc_shape_str((t), sb_##t, sizeof sb_##t)
#define SHAPEBUF(t) char sb_##t[64]

static const char *const op_names[SSTC_OP_COUNT] = {
    "leaf",   "matmul",    "linear",    "add",       "bias_add", "mul",
    "scale",  "relu",      "conv2d",    "maxpool2d", "avgpool2d", "batchnorm",
    "dropout", "reshape",  "sum",       "mean",      "softmax_ce", "channel_scale",
    "concat", "global_avgpool", "distill",
};

const char *sstc_op_name(sstc_op op) {
    return (op >= 0 && op < SSTC_OP_COUNT) ? op_names[op] : "unknown";
}

/* A NULL input: if an earlier op failed its message stands; otherwise say which. */
static int null_args(const char *op, sstc_ctx *ctx, sstc_tensor *a, sstc_tensor *b) {
    if (!ctx) return sstc_fail(SSTC_EINVAL, "%s: NULL context", op), 1;
    if (!a || !b) {
        if (sstc_errcode() == 0) sstc_fail(SSTC_EINVAL, "%s: NULL input tensor", op);
        return 1;
    }
    return 0;
}

/* ---- matmul ----------------------------------------------------------- */

sstc_tensor *sstc_matmul(sstc_ctx *ctx, sstc_tensor *a, sstc_tensor *b) {
    if (null_args("matmul", ctx, a, b)) return NULL;
    if (a->ndim != 2 || b->ndim != 2 || a->shape[1] != b->shape[0]) {
        SHAPEBUF(a); SHAPEBUF(b);
        sstc_fail(SSTC_ESHAPE, "matmul: shapes %s and %s do not fit, expected (M,K) and (K,N)", S(a), S(b));
        return NULL;
    }
    int M = a->shape[0], K = a->shape[1], N = b->shape[1];
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_MATMUL, 2, (int[]){M, N}, a, b, NULL);
    if (!y) return NULL;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a->data, K, b->data, N,
                0.0f, y->data, N);
    return y;
}

static void matmul_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *a = y->src[0], *b = y->src[1];
    int M = a->shape[0], K = a->shape[1], N = b->shape[1];
    if (a->requires_grad)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, N, 1.0f, y->grad, N, b->data, N,
                    1.0f, sstc_ctx_grad(ctx, a), K);
    if (b->requires_grad)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, 1.0f, a->data, K, y->grad, N,
                    1.0f, sstc_ctx_grad(ctx, b), N);
}

/* ---- linear ----------------------------------------------------------- */

sstc_tensor *sstc_linear(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *w, sstc_tensor *bias) {
    if (null_args("linear", ctx, x, w)) return NULL;
    if (x->ndim != 2 || w->ndim != 2 || x->shape[1] != w->shape[1] ||
        (bias && (bias->size != (size_t)w->shape[0]))) {
        SHAPEBUF(x); SHAPEBUF(w); SHAPEBUF(bias);
        sstc_fail(SSTC_ESHAPE,
                  "linear: input %s, weight %s, bias %s do not fit, expected (B,in), (out,in), (out)",
                  S(x), S(w), S(bias));
        return NULL;
    }
    int B = x->shape[0], in = x->shape[1], out = w->shape[0];
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_LINEAR, 2, (int[]){B, out}, x, w, bias);
    if (!y) return NULL;
    if (bias) {
        for (int i = 0; i < B; i++) memcpy(y->data + (size_t)i * out, bias->data, out * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out, in, 1.0f, x->data, in, w->data, in,
                bias ? 1.0f : 0.0f, y->data, out);
    return y;
}

static void linear_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0], *w = y->src[1], *bias = y->src[2];
    int B = x->shape[0], in = x->shape[1], out = w->shape[0];
    if (x->requires_grad)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1.0f, y->grad, out, w->data,
                    in, 1.0f, sstc_ctx_grad(ctx, x), in);
    if (w->requires_grad)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, B, 1.0f, y->grad, out, x->data,
                    in, 1.0f, sstc_ctx_grad(ctx, w), in);
    if (bias && bias->requires_grad) {
        float *db = sstc_ctx_grad(ctx, bias);
        for (int i = 0; i < B; i++) {
            const float *g = y->grad + (size_t)i * out;
            for (int o = 0; o < out; o++) db[o] += g[o];
        }
    }
}

/* ---- elementwise ------------------------------------------------------ */

static int same_shape(const sstc_tensor *a, const sstc_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

static sstc_tensor *binary(sstc_ctx *ctx, sstc_op op, sstc_tensor *a, sstc_tensor *b) {
    const char *name = sstc_op_name(op);
    if (null_args(name, ctx, a, b)) return NULL;
    if (!same_shape(a, b)) {
        SHAPEBUF(a); SHAPEBUF(b);
        sstc_fail(SSTC_ESHAPE, "%s: shapes %s and %s differ, expected equal shapes", name, S(a), S(b));
        return NULL;
    }
    sstc_tensor *y = sstc_ctx_op_output(ctx, op, a->ndim, a->shape, a, b, NULL);
    if (!y) return NULL;
    size_t n = y->size;
    const float *pa = a->data, *pb = b->data;
    float *py = y->data;
    if (op == SSTC_OP_ADD) {
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
        for (size_t i = 0; i < n; i++) py[i] = pa[i] + pb[i];
    } else {
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
        for (size_t i = 0; i < n; i++) py[i] = pa[i] * pb[i];
    }
    return y;
}

sstc_tensor *sstc_add(sstc_ctx *ctx, sstc_tensor *a, sstc_tensor *b) { return binary(ctx, SSTC_OP_ADD, a, b); }
sstc_tensor *sstc_mul(sstc_ctx *ctx, sstc_tensor *a, sstc_tensor *b) { return binary(ctx, SSTC_OP_MUL, a, b); }

static void add_backward(sstc_ctx *ctx, sstc_tensor *y) {
    size_t n = y->size;
    for (int s = 0; s < 2; s++) {
        sstc_tensor *t = y->src[s];
        if (!t->requires_grad) continue;
        float *g = sstc_ctx_grad(ctx, t);
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
        for (size_t i = 0; i < n; i++) g[i] += y->grad[i];
    }
}

static void mul_backward(sstc_ctx *ctx, sstc_tensor *y) {
    size_t n = y->size;
    for (int s = 0; s < 2; s++) {
        sstc_tensor *t = y->src[s], *o = y->src[1 - s];
        if (!t->requires_grad) continue;
        float *g = sstc_ctx_grad(ctx, t);
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
        for (size_t i = 0; i < n; i++) g[i] += y->grad[i] * o->data[i];
    }
}

sstc_tensor *sstc_scale(sstc_ctx *ctx, sstc_tensor *a, float s) {
    if (null_args("scale", ctx, a, a)) return NULL;
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_SCALE, a->ndim, a->shape, a, NULL, NULL);
    if (!y) return NULL;
    y->fp[0] = s;
    size_t n = y->size;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (size_t i = 0; i < n; i++) y->data[i] = s * a->data[i];
    return y;
}

static void scale_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *a = y->src[0];
    if (!a->requires_grad) return;
    float *g = sstc_ctx_grad(ctx, a), s = y->fp[0];
    size_t n = y->size;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (size_t i = 0; i < n; i++) g[i] += s * y->grad[i];
}

sstc_tensor *sstc_relu(sstc_ctx *ctx, sstc_tensor *x) {
    if (null_args("relu", ctx, x, x)) return NULL;
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_RELU, x->ndim, x->shape, x, NULL, NULL);
    if (!y) return NULL;
    size_t n = y->size;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (size_t i = 0; i < n; i++) y->data[i] = x->data[i] <= 0.0f ? 0.0f : x->data[i]; /* NaN propagates */
    return y;
}

static void relu_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0];
    if (!x->requires_grad) return;
    int fresh;
    float *restrict g = sstc_ctx_grad_fresh(ctx, x, &fresh);
    const float *restrict xd = x->data, *restrict gy = y->grad;
    size_t n = y->size;
    if (fresh) {
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
        for (size_t i = 0; i < n; i++) {
            float v = gy[i]; /* loaded unconditionally: a branch-free, vectorized select */
            g[i] = xd[i] > 0.0f ? v : 0.0f;
        }
    } else {
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
        for (size_t i = 0; i < n; i++) {
            float v = gy[i];
            g[i] += xd[i] > 0.0f ? v : 0.0f;
        }
    }
}

/* ---- bias add --------------------------------------------------------- */

/* inner = product of the dims after axis 1 (1 for (B,C)). */
static size_t inner_size(const sstc_tensor *x) {
    size_t inner = 1;
    for (int i = 2; i < x->ndim; i++) inner *= (size_t)x->shape[i];
    return inner;
}

sstc_tensor *sstc_bias_add(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *bias) {
    if (null_args("bias_add", ctx, x, bias)) return NULL;
    if (x->ndim < 2 || bias->size != (size_t)x->shape[1]) {
        SHAPEBUF(x); SHAPEBUF(bias);
        sstc_fail(SSTC_ESHAPE, "bias_add: input %s and bias %s do not fit, expected (B,C,...) and (C)", S(x), S(bias));
        return NULL;
    }
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_BIAS_ADD, x->ndim, x->shape, x, bias, NULL);
    if (!y) return NULL;
    int B = x->shape[0], C = x->shape[1];
    size_t inner = inner_size(x);
#pragma omp parallel for collapse(2) if (x->size > PAR_MIN) schedule(static)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            size_t off = ((size_t)b * C + c) * inner;
            for (size_t i = 0; i < inner; i++) y->data[off + i] = x->data[off + i] + bias->data[c];
        }
    return y;
}

static void bias_add_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0], *bias = y->src[1];
    int B = x->shape[0], C = x->shape[1];
    size_t inner = inner_size(x);
    if (x->requires_grad) {
        float *g = sstc_ctx_grad(ctx, x);
        for (size_t i = 0; i < y->size; i++) g[i] += y->grad[i];
    }
    if (bias->requires_grad) {
        float *db = sstc_ctx_grad(ctx, bias);
#pragma omp parallel for if (x->size > PAR_MIN) schedule(static)
        for (int c = 0; c < C; c++) {
            float s = 0;
            for (int b = 0; b < B; b++) {
                const float *g = y->grad + ((size_t)b * C + c) * inner;
                for (size_t i = 0; i < inner; i++) s += g[i];
            }
            db[c] += s;
        }
    }
}

/* ---- channel scale ---------------------------------------------------- */

sstc_tensor *sstc_channel_scale(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *scale) {
    if (null_args("channel_scale", ctx, x, scale)) return NULL;
    if (x->ndim < 2 || scale->size != (size_t)x->shape[1]) {
        SHAPEBUF(x); SHAPEBUF(scale);
        sstc_fail(SSTC_ESHAPE, "channel_scale: input %s and scale %s do not fit, expected (B,C,...) and (C)", S(x), S(scale));
        return NULL;
    }
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_CHANNEL_SCALE, x->ndim, x->shape, x, scale, NULL);
    if (!y) return NULL;
    int B = x->shape[0], C = x->shape[1];
    size_t inner = inner_size(x);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            size_t off = ((size_t)b * C + c) * inner;
            float s = scale->data[c];
            for (size_t i = 0; i < inner; i++) y->data[off + i] = s * x->data[off + i];
        }
    return y;
}

static void channel_scale_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0], *scale = y->src[1];
    int B = x->shape[0], C = x->shape[1];
    size_t inner = inner_size(x);
    float *dx = x->requires_grad ? sstc_ctx_grad(ctx, x) : NULL;
    float *ds = scale->requires_grad ? sstc_ctx_grad(ctx, scale) : NULL;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            size_t off = ((size_t)b * C + c) * inner;
            float s = scale->data[c], acc = 0;
            for (size_t i = 0; i < inner; i++) {
                if (dx) dx[off + i] += s * y->grad[off + i];
                acc += x->data[off + i] * y->grad[off + i];
            }
            if (ds) ds[c] += acc;
        }
}

/* ---- conv2d ----------------------------------------------------------- */

/* Output columns ox whose input column ix = ox*stride - pad + kx lies in
 * [0, W): [*lo, *hi). Hoisting this out of the loops leaves branch-free,
 * vectorizable inner loops (a plain copy when stride is 1). */
static void valid_cols(int W, int OW, int stride, int pad, int kx, int *lo, int *hi) {
    int a = pad - kx; /* ox*stride >= a */
    int l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int b = W - 1 + pad - kx; /* ox*stride <= b */
    int h = b < 0 ? 0 : b / stride + 1;
    if (h > OW) h = OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* "Same" convolutions (stride 1, OW == W, OH == H: 2*pad == K-1) shift whole
 * planes: for a kernel tap at offset (dy, dx) the column row is the input plane
 * read at flat offset dy*W + dx, one contiguous run, except for the columns that
 * wrap around a row edge (ox + dx outside [0, W)), which are padding. */
static int conv_same(int H, int W, int OH, int OW, int stride) {
    return stride == 1 && OH == H && OW == W;
}

/* Of the flat positions [f0, f1), those whose source f + off lies in the plane
 * [0, hw): [*a, *b), a sub-range (possibly empty, then *a == *b). */
static void plane_run(size_t f0, size_t f1, ptrdiff_t off, size_t hw, size_t *a, size_t *b) {
    ptrdiff_t lo = (ptrdiff_t)f0, hi = (ptrdiff_t)f1;
    if (lo + off < 0) lo = -off;
    if (hi + off > (ptrdiff_t)hw) hi = (ptrdiff_t)hw - off;
    if (lo > (ptrdiff_t)f1) lo = (ptrdiff_t)f1;
    if (hi < lo) hi = lo;
    *a = (size_t)lo;
    *b = (size_t)hi;
}

/* Rows oy of a same convolution whose input row oy + dy exists: [*lo, *hi). */
static void same_rows(int H, int dy, int *lo, int *hi) {
    *lo = dy < 0 ? (-dy < H ? -dy : H) : 0;
    *hi = dy > 0 ? H - dy : H;
    if (*hi < *lo) *hi = *lo;
}

/* Zeroes the entries of rows [lo, hi) of a shifted plane whose column ox + dx
 * falls outside [0, W): where the flat run wrapped around a row edge. */
static void zero_wrapped(float *row, int W, int lo, int hi, int dx) {
    int a = dx < 0 ? 0 : (W - dx < 0 ? 0 : W - dx), b = dx < 0 ? (-dx < W ? -dx : W) : W;
    if (dx == 0) return;
    if (b - a == 1) {
        /* the usual case (3x3 kernels, |dx| = 1): one entry per row, stored
         * directly; the general loop below becomes a memset call per row */
        for (int oy = lo; oy < hi; oy++) row[(size_t)oy * W + a] = 0.0f;
        return;
    }
    for (int oy = lo; oy < hi; oy++)
        for (int ox = a; ox < b; ox++) row[(size_t)oy * W + ox] = 0.0f;
}

static void im2col_same(const float *x, int C, int H, int W, int KH, int KW, int pad, float *col,
                        size_t ld) {
    size_t hw = (size_t)H * W;
    for (int c = 0; c < C; c++)
        for (int ky = 0; ky < KH; ky++)
            for (int kx = 0; kx < KW; kx++) {
                float *restrict row = col + ((size_t)(c * KH + ky) * KW + kx) * ld;
                const float *plane = x + (size_t)c * hw;
                int dy = ky - pad, dx = kx - pad, lo, hi;
                same_rows(H, dy, &lo, &hi);
                size_t f0 = (size_t)lo * W, f1 = (size_t)hi * W;
                ptrdiff_t off = (ptrdiff_t)dy * W + dx;
                /* the run stays inside the plane; its ends wrap only at dx != 0 */
                size_t a, b;
                plane_run(f0, f1, off, hw, &a, &b);
                /* the zero runs are short (a row or two): loops, not calls */
                for (size_t f = 0; f < a; f++) row[f] = 0.0f;
                if (a < b) memcpy(row + a, plane + (ptrdiff_t)a + off, (b - a) * sizeof(float));
                for (size_t f = b; f < hw; f++) row[f] = 0.0f;
                zero_wrapped(row, W, lo, hi, dx);
            }
}

/* The adjoint of im2col_same. The column block is scratch: its wrapped
 * entries are zeroed first, so that one contiguous add per tap is exact. */
static void col2im_same(float *col, size_t ld, int C, int H, int W, int KH, int KW, int pad,
                        float *dx_) {
    size_t hw = (size_t)H * W;
    for (int c = 0; c < C; c++)
        for (int ky = 0; ky < KH; ky++)
            for (int kx = 0; kx < KW; kx++) {
                float *row = col + ((size_t)(c * KH + ky) * KW + kx) * ld;
                int dy = ky - pad, dx = kx - pad, lo, hi;
                same_rows(H, dy, &lo, &hi);
                zero_wrapped(row, W, lo, hi, dx);
                ptrdiff_t off = (ptrdiff_t)dy * W + dx;
                size_t a, b;
                plane_run((size_t)lo * W, (size_t)hi * W, off, hw, &a, &b);
                float *restrict xr = dx_ + (size_t)c * hw + off;
                const float *restrict r = row;
                for (size_t f = a; f < b; f++) xr[f] += r[f];
            }
}

/* Column block of one image: col[(c*KH+ky)*KW+kx][p] at leading dimension ld. */
static void im2col(const float *x, int C, int H, int W, int KH, int KW, int stride, int pad, int OH,
                   int OW, float *col, size_t ld) {
    if (conv_same(H, W, OH, OW, stride)) {
        im2col_same(x, C, H, W, KH, KW, pad, col, ld);
        return;
    }
    for (int c = 0; c < C; c++)
        for (int ky = 0; ky < KH; ky++)
            for (int kx = 0; kx < KW; kx++) {
                float *row = col + ((size_t)(c * KH + ky) * KW + kx) * ld;
                int lo, hi;
                valid_cols(W, OW, stride, pad, kx, &lo, &hi);
                for (int oy = 0; oy < OH; oy++) {
                    int iy = oy * stride - pad + ky;
                    float *r = row + (size_t)oy * OW;
                    if (iy < 0 || iy >= H) {
                        memset(r, 0, OW * sizeof(float));
                        continue;
                    }
                    const float *xr = x + ((size_t)c * H + iy) * W - pad + kx;
                    for (int ox = 0; ox < lo; ox++) r[ox] = 0.0f;
                    if (stride == 1) {
                        /* rows are short (8 to 32 floats here): an inline copy, not a memcpy call */
                        float *restrict rd = r;
                        const float *restrict rs = xr;
                        for (int ox = lo; ox < hi; ox++) rd[ox] = rs[ox];
                    } else
                        for (int ox = lo; ox < hi; ox++) r[ox] = xr[ox * stride];
                    for (int ox = hi; ox < OW; ox++) r[ox] = 0.0f;
                }
            }
}

static void col2im(float *col, size_t ld, int C, int H, int W, int KH, int KW, int stride,
                   int pad, int OH, int OW, float *dx) {
    if (conv_same(H, W, OH, OW, stride)) {
        col2im_same(col, ld, C, H, W, KH, KW, pad, dx);
        return;
    }
    for (int c = 0; c < C; c++)
        for (int ky = 0; ky < KH; ky++)
            for (int kx = 0; kx < KW; kx++) {
                const float *row = col + ((size_t)(c * KH + ky) * KW + kx) * ld;
                int lo, hi;
                valid_cols(W, OW, stride, pad, kx, &lo, &hi);
                for (int oy = 0; oy < OH; oy++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= H) continue;
                    float *xr = dx + ((size_t)c * H + iy) * W - pad + kx;
                    const float *r = row + (size_t)oy * OW;
                    if (stride == 1)
                        for (int ox = lo; ox < hi; ox++) xr[ox] += r[ox];
                    else
                        for (int ox = lo; ox < hi; ox++) xr[ox * stride] += r[ox];
                }
            }
}

/* Threads of the image-parallel conv path (one image per thread at a time,
 * single-threaded sgemms), or 0 for the batched path (one threaded sgemm per
 * chunk of images), which serves batches smaller than the thread count. */
static int conv_threads(int B) {
    int T = sstc_get_threads();
    return T > 1 && B >= T ? T : 0;
}

#ifndef CONV_GROUP_COLS
#define CONV_GROUP_COLS 256
#endif

/* A 1x1 convolution without stride or padding: the image is its own column block. */
static int conv_pointwise(int KH, int KW, int stride, int pad) {
    return KH == 1 && KW == 1 && stride == 1 && pad == 0;
}

/* Images per sgemm: enough columns to keep sgemm efficient, bounded scratch. */
static int conv_chunk(int B, size_t ckk, size_t ohw, size_t oc) {
    size_t per = (ckk + oc) * ohw;
    size_t target = (size_t)4 << 20; /* floats */
    size_t s = per ? target / per : 1;
    if (s < 1) s = 1;
    if (s > (size_t)B) s = (size_t)B;
    return (int)s;
}

sstc_tensor *sstc_conv2d(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *w, sstc_tensor *bias,
                         int stride, int pad) {
    if (null_args("conv2d", ctx, x, w)) return NULL;
    SHAPEBUF(x); SHAPEBUF(w);
    if (x->ndim != 4 || w->ndim != 4 || x->shape[1] != w->shape[1] ||
        (bias && bias->size != (size_t)w->shape[0])) {
        sstc_fail(SSTC_ESHAPE, "conv2d: input %s, weight %s do not fit, expected (B,C,H,W), (OC,C,KH,KW) and bias (OC)",
                  S(x), S(w));
        return NULL;
    }
    if (stride < 1 || pad < 0) {
        sstc_fail(SSTC_EINVAL, "conv2d: stride %d, pad %d; expected stride >= 1, pad >= 0", stride, pad);
        return NULL;
    }
    int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int OC = w->shape[0], KH = w->shape[2], KW = w->shape[3];
    int OH = (H + 2 * pad - KH) / stride + 1, OW = (W + 2 * pad - KW) / stride + 1;
    if (H + 2 * pad < KH || W + 2 * pad < KW || OH < 1 || OW < 1) {
        sstc_fail(SSTC_ESHAPE, "conv2d: kernel %dx%d larger than padded input %s (pad %d)", KH, KW, S(x), pad);
        return NULL;
    }
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_CONV2D, 4, (int[]){B, OC, OH, OW}, x, w, bias);
    if (!y) return NULL;
    y->ip[0] = stride;
    y->ip[1] = pad;
    int wino = sstc_wino_applies(C, OC, OH, OW, KH, KW, stride, pad);
    if (wino) return sstc_wino_forward(ctx, x, w, bias, y, pad, wino) ? NULL : y;
    size_t ckk = (size_t)C * KH * KW, ohw = (size_t)OH * OW;
    int T = conv_threads(B);
    if (T) {
        /* image-parallel: each thread lowers its images one at a time into its
         * own column block (which stays in its cache) and multiplies it with
         * a single-threaded sgemm straight into the output */
        int direct = conv_pointwise(KH, KW, stride, pad);
        /* small planes: G images per sgemm (at least CONV_GROUP_COLS columns),
         * so the weights are packed once per group, not once per image */
        int G = ohw >= CONV_GROUP_COLS ? 1 : (int)((CONV_GROUP_COLS + ohw - 1) / ohw);
        if (G > B) G = B;
        int groups = (B + G - 1) / G;
        size_t per = (direct && G == 1 ? 0 : ckk * G * ohw) + (G > 1 ? (size_t)OC * G * ohw : 0);
        float *cols = per ? sstc_ctx_scratch(ctx, (size_t)T * per * sizeof(float)) : NULL;
        if (per && !cols) return NULL;
#pragma omp parallel for num_threads(T) schedule(static)
        for (int gi = 0; gi < groups; gi++) {
            int b0 = gi * G, n = B - b0 < G ? B - b0 : G;
            size_t ld = (size_t)n * ohw;
            float *mine = cols ? cols + (size_t)omp_get_thread_num() * per : NULL;
            const float *col = x->data + (size_t)b0 * C * H * W;
            if (!direct || G > 1) {
                for (int s = 0; s < n; s++) {
                    const float *xb = x->data + (size_t)(b0 + s) * C * H * W;
                    if (direct)
                        for (size_t c = 0; c < ckk; c++)
                            memcpy(mine + c * ld + (size_t)s * ohw, xb + c * ohw, ohw * sizeof(float));
                    else
                        im2col(xb, C, H, W, KH, KW, stride, pad, OH, OW, mine + (size_t)s * ohw, ld);
                }
                col = mine;
            }
            float *out = G > 1 ? mine + ckk * G * ohw : y->data + (size_t)b0 * OC * ohw;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, (int)ld, (int)ckk, 1.0f, w->data,
                        (int)ckk, col, (int)ld, 0.0f, out, (int)ld);
            for (int s = 0; s < n; s++) {
                float *yb = y->data + (size_t)(b0 + s) * OC * ohw;
                for (int oc = 0; oc < OC; oc++) {
                    float bv = bias ? bias->data[oc] : 0.0f, *r = yb + (size_t)oc * ohw;
                    if (G > 1) {
                        const float *src = out + (size_t)oc * ld + (size_t)s * ohw;
                        for (size_t p = 0; p < ohw; p++) r[p] = src[p] + bv;
                    } else if (bias) {
                        for (size_t p = 0; p < ohw; p++) r[p] += bv;
                    }
                }
            }
        }
        return y;
    }
    int S = conv_chunk(B, ckk, ohw, OC);
    float *col = sstc_ctx_scratch(ctx, (ckk + OC) * S * ohw * sizeof(float));
    if (!col) return NULL;
    float *tmp = col + ckk * S * ohw;
    for (int b0 = 0; b0 < B; b0 += S) {
        int n = B - b0 < S ? B - b0 : S;
        size_t ld = (size_t)n * ohw;
#pragma omp parallel for if (n > 1) schedule(static)
        for (int s = 0; s < n; s++)
            im2col(x->data + (size_t)(b0 + s) * C * H * W, C, H, W, KH, KW, stride, pad, OH, OW,
                   col + (size_t)s * ohw, ld);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, (int)ld, (int)ckk, 1.0f, w->data,
                    (int)ckk, col, (int)ld, 0.0f, tmp, (int)ld);
#pragma omp parallel for collapse(2) if (n * OC > 8) schedule(static)
        for (int s = 0; s < n; s++)
            for (int oc = 0; oc < OC; oc++) {
                float *dst = y->data + ((size_t)(b0 + s) * OC + oc) * ohw;
                const float *src = tmp + (size_t)oc * ld + (size_t)s * ohw;
                float bv = bias ? bias->data[oc] : 0.0f;
                for (size_t p = 0; p < ohw; p++) dst[p] = src[p] + bv;
            }
    }
    return y;
}

/* The backward pass of the image-parallel path: per image, dW += dY·colᵀ into
 * the thread's own dW (summed in thread order afterwards, so a given thread
 * count gives the same result every time) and dX (below: a convolution with
 * the flipped kernel for same convolutions, col2im(Wᵀ·dY) otherwise). */
static void conv2d_backward_images(sstc_ctx *ctx, sstc_tensor *y, int T) {
    sstc_tensor *x = y->src[0], *w = y->src[1];
    int stride = y->ip[0], pad = y->ip[1];
    int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int OC = w->shape[0], KH = w->shape[2], KW = w->shape[3];
    int OH = y->shape[2], OW = y->shape[3];
    size_t ckk = (size_t)C * KH * KW, ohw = (size_t)OH * OW, wn = (size_t)OC * ckk;
    int direct = conv_pointwise(KH, KW, stride, pad);
    int want_dw = w->requires_grad, want_dx = x->requires_grad;
    /* For a same convolution dX is itself a same convolution of dY with the
     * kernel transposed and flipped, Wf[c][oc][ky][kx] = W[oc][c][K-1-ky][K-1-kx]:
     * lowering dY (OC·K·K rows) and one sgemm straight into dX replace the
     * col2im scatter and the larger column block of the adjoint form. */
    int flip = want_dx && !direct && conv_same(H, W, OH, OW, stride);
    size_t okk = (size_t)OC * KH * KW, rows = flip && okk > ckk ? okk : ckk;
    /* small planes: G images at a time, as in the forward pass, so that each
     * sgemm has at least CONV_GROUP_COLS columns (an 8x8 plane alone gives
     * sgemms of inner size 64, which run far below the kernel's speed); dY
     * and the dX of the group are gathered into / scattered from blocks of
     * leading dimension G*OH*OW */
    int G = ohw >= CONV_GROUP_COLS ? 1 : (int)((CONV_GROUP_COLS + ohw - 1) / ohw);
    if (G > B) G = B;
    int groups = (B + G - 1) / G;
    size_t L = (size_t)G * ohw;
    size_t colsz = direct && G == 1 ? 0 : rows * L, gysz = G > 1 ? (size_t)OC * L : 0;
    size_t dxsz = G > 1 && want_dx && (direct || flip) ? (size_t)C * L : 0;
    size_t per = (want_dw ? wn : 0) + colsz + gysz + dxsz, shared = flip ? wn : 0;
    float *scr = sstc_ctx_scratch(ctx, (shared + (size_t)T * per) * sizeof(float));
    if (!scr) return;
    float *wf = scr;
    if (flip)
        for (int oc = 0; oc < OC; oc++)
            for (int c = 0; c < C; c++)
                for (int ky = 0; ky < KH; ky++)
                    for (int kx = 0; kx < KW; kx++)
                        wf[(size_t)c * okk + ((size_t)oc * KH + ky) * KW + kx] =
                            w->data[(((size_t)oc * C + c) * KH + (KH - 1 - ky)) * KW + (KW - 1 - kx)];
    scr += shared;
    int fresh = 0;
    float *dx = want_dx ? sstc_ctx_grad_fresh(ctx, x, &fresh) : NULL;
    float *dw = want_dw ? sstc_ctx_grad(ctx, w) : NULL;
    size_t chw = (size_t)C * H * W;
#pragma omp parallel num_threads(T)
    {
        /* the team may be smaller than T (OMP_DYNAMIC, thread limits): only
         * the slots of threads that exist are summed */
        int t = omp_get_thread_num(), team = omp_get_num_threads();
        float *mydw = scr + (size_t)t * per, *col = mydw + (want_dw ? wn : 0);
        float *mygy = col + colsz, *mydx = mygy + gysz;
        if (want_dw) memset(mydw, 0, wn * sizeof(float));
#pragma omp for schedule(static)
        for (int gi = 0; gi < groups; gi++) {
            int b0 = gi * G, n = B - b0 < G ? B - b0 : G;
            size_t ld = (size_t)n * ohw;
            const float *gyg = y->grad + (size_t)b0 * OC * ohw;
            if (n > 1) {
                for (int s = 0; s < n; s++)
                    for (int oc = 0; oc < OC; oc++)
                        memcpy(mygy + (size_t)oc * ld + (size_t)s * ohw,
                               y->grad + ((size_t)(b0 + s) * OC + oc) * ohw, ohw * sizeof(float));
                gyg = mygy;
            }
            if (want_dw) {
                const float *cb = x->data + (size_t)b0 * chw;
                if (!direct || n > 1) {
                    for (int s = 0; s < n; s++) {
                        const float *xb = x->data + (size_t)(b0 + s) * chw;
                        if (direct)
                            for (size_t c = 0; c < ckk; c++)
                                memcpy(col + c * ld + (size_t)s * ohw, xb + c * ohw, ohw * sizeof(float));
                        else
                            im2col(xb, C, H, W, KH, KW, stride, pad, OH, OW, col + (size_t)s * ohw, ld);
                    }
                    cb = col;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, (int)ckk, (int)ld, 1.0f, gyg,
                            (int)ld, cb, (int)ld, 1.0f, mydw, (int)ckk);
            }
            if (want_dx) {
                if (direct || flip) {
                    /* one image: straight into dX (added unless fresh); a group: into
                     * mydx, then each image's planes are copied or added */
                    float *dst = n > 1 ? mydx : dx + (size_t)b0 * chw;
                    float beta = n == 1 && !fresh ? 1.0f : 0.0f;
                    if (direct) {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)ld, OC, 1.0f,
                                    w->data, (int)ckk, gyg, (int)ld, beta, dst, (int)ld);
                    } else {
                        for (int s = 0; s < n; s++)
                            im2col_same(y->grad + (size_t)(b0 + s) * OC * ohw, OC, OH, OW, KH, KW, pad,
                                        col + (size_t)s * ohw, ld);
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, (int)ld, (int)okk, 1.0f, wf,
                                    (int)okk, col, (int)ld, beta, dst, (int)ld);
                    }
                    if (n > 1)
                        for (int s = 0; s < n; s++)
                            for (int c = 0; c < C; c++) {
                                float *restrict o = dx + (size_t)(b0 + s) * chw + (size_t)c * ohw;
                                const float *restrict g = mydx + (size_t)c * ld + (size_t)s * ohw;
                                if (fresh)
                                    memcpy(o, g, ohw * sizeof(float));
                                else
                                    for (size_t p = 0; p < ohw; p++) o[p] += g[p];
                            }
                } else {
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)ld, OC, 1.0f, w->data,
                                (int)ckk, gyg, (int)ld, 0.0f, col, (int)ld);
                    for (int s = 0; s < n; s++) {
                        float *dxb = dx + (size_t)(b0 + s) * chw;
                        if (fresh) memset(dxb, 0, chw * sizeof(float));
                        col2im(col + (size_t)s * ohw, ld, C, H, W, KH, KW, stride, pad, OH, OW, dxb);
                    }
                }
            }
        }
        if (want_dw) {
            /* implicit barrier above: every thread's dW is complete */
#pragma omp for schedule(static)
            for (size_t i = 0; i < wn; i++) {
                float acc = dw[i];
                for (int k = 0; k < team; k++) acc += scr[(size_t)k * per + i];
                dw[i] = acc;
            }
        }
    }
}

static void conv2d_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0], *w = y->src[1], *bias = y->src[2];
    int stride = y->ip[0], pad = y->ip[1];
    int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int OC = w->shape[0], KH = w->shape[2], KW = w->shape[3];
    int OH = y->shape[2], OW = y->shape[3];
    size_t ckk = (size_t)C * KH * KW, ohw = (size_t)OH * OW;
    if (bias && bias->requires_grad) {
        float *db = sstc_ctx_grad(ctx, bias);
        for (int oc = 0; oc < OC; oc++) {
            float s = 0;
            for (int b = 0; b < B; b++) {
                const float *g = y->grad + ((size_t)b * OC + oc) * ohw;
                for (size_t p = 0; p < ohw; p++) s += g[p];
            }
            db[oc] += s;
        }
    }
    if (!x->requires_grad && !w->requires_grad) return;
    int wino = sstc_wino_applies(C, OC, OH, OW, KH, KW, stride, pad);
    if (wino) {
        sstc_wino_backward(ctx, y, wino);
        return;
    }
    int T = conv_threads(B);
    if (T) {
        conv2d_backward_images(ctx, y, T);
        return;
    }
    int S = conv_chunk(B, ckk, ohw, OC);
    float *col = sstc_ctx_scratch(ctx, (ckk + OC) * S * ohw * sizeof(float));
    if (!col) return;
    float *dtmp = col + ckk * S * ohw;
    /* a new dx is zeroed image by image in the parallel col2im loop, not serially here */
    int fresh = 0;
    float *dx = x->requires_grad ? sstc_ctx_grad_fresh(ctx, x, &fresh) : NULL;
    float *dw = w->requires_grad ? sstc_ctx_grad(ctx, w) : NULL;
    for (int b0 = 0; b0 < B; b0 += S) {
        int n = B - b0 < S ? B - b0 : S;
        size_t ld = (size_t)n * ohw;
#pragma omp parallel for collapse(2) if (n * OC > 8) schedule(static)
        for (int s = 0; s < n; s++)
            for (int oc = 0; oc < OC; oc++)
                memcpy(dtmp + (size_t)oc * ld + (size_t)s * ohw,
                       y->grad + ((size_t)(b0 + s) * OC + oc) * ohw, ohw * sizeof(float));
        if (dw) {
#pragma omp parallel for if (n > 1) schedule(static)
            for (int s = 0; s < n; s++)
                im2col(x->data + (size_t)(b0 + s) * C * H * W, C, H, W, KH, KW, stride, pad, OH, OW,
                       col + (size_t)s * ohw, ld);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, (int)ckk, (int)ld, 1.0f, dtmp,
                        (int)ld, col, (int)ld, 1.0f, dw, (int)ckk);
        }
        if (dx) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)ld, OC, 1.0f, w->data,
                        (int)ckk, dtmp, (int)ld, 0.0f, col, (int)ld);
#pragma omp parallel for if (n > 1) schedule(static)
            for (int s = 0; s < n; s++) {
                float *dxs = dx + (size_t)(b0 + s) * C * H * W;
                if (fresh) memset(dxs, 0, (size_t)C * H * W * sizeof(float));
                col2im(col + (size_t)s * ohw, ld, C, H, W, KH, KW, stride, pad, OH, OW, dxs);
            }
        }
    }
}

/* ---- pooling ---------------------------------------------------------- */

static sstc_tensor *pool(sstc_ctx *ctx, sstc_op op, sstc_tensor *x, int k, int stride, int pad) {
    const char *name = sstc_op_name(op);
    if (null_args(name, ctx, x, x)) return NULL;
    SHAPEBUF(x);
    if (x->ndim != 4) {
        sstc_fail(SSTC_ESHAPE, "%s: input %s, expected (B,C,H,W)", name, S(x));
        return NULL;
    }
    if (k < 1 || stride < 1 || pad < 0 || pad * 2 > k) {
        sstc_fail(SSTC_EINVAL, "%s: kernel %d, stride %d, pad %d; expected k >= 1, stride >= 1, 0 <= pad <= k/2",
                  name, k, stride, pad);
        return NULL;
    }
    int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int OH = (H + 2 * pad - k) / stride + 1, OW = (W + 2 * pad - k) / stride + 1;
    if (H + 2 * pad < k || W + 2 * pad < k) {
        sstc_fail(SSTC_ESHAPE, "%s: window %d larger than padded input %s", name, k, S(x));
        return NULL;
    }
    sstc_tensor *y = sstc_ctx_op_output(ctx, op, 4, (int[]){B, C, OH, OW}, x, NULL, NULL);
    if (!y) return NULL;
    y->ip[0] = k;
    y->ip[1] = stride;
    y->ip[2] = pad;
    int32_t *arg = NULL;
    if (op == SSTC_OP_MAXPOOL2D) {
        arg = sstc_ctx_alloc(ctx, y->size * sizeof(int32_t));
        if (!arg) return NULL;
        y->saved = arg;
    }
    int planes = B * C;
    if (op == SSTC_OP_MAXPOOL2D && k == 2 && stride == 2 && pad == 0) {
        /* the common 2x2 window: the generic loop below, unrolled (same
         * scan order, first maximum wins) */
#pragma omp parallel for if (x->size > PAR_MIN) schedule(static)
        for (int pl = 0; pl < planes; pl++) {
            const float *xp = x->data + (size_t)pl * H * W;
            float *yp = y->data + (size_t)pl * OH * OW;
            int32_t *ap = arg + (size_t)pl * OH * OW;
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    int i0 = 2 * oy * W + 2 * ox, i1 = i0 + 1, i2 = i0 + W, i3 = i2 + 1;
                    float m = -FLT_MAX;
                    int best = i0;
                    float v0 = xp[i0], v1 = xp[i1], v2 = xp[i2], v3 = xp[i3];
                    best = v0 > m ? i0 : best;
                    m = v0 > m ? v0 : m;
                    best = v1 > m ? i1 : best;
                    m = v1 > m ? v1 : m;
                    best = v2 > m ? i2 : best;
                    m = v2 > m ? v2 : m;
                    best = v3 > m ? i3 : best;
                    m = v3 > m ? v3 : m;
                    yp[(size_t)oy * OW + ox] = m;
                    ap[(size_t)oy * OW + ox] = best;
                }
        }
        return y;
    }
#pragma omp parallel for if (x->size > PAR_MIN) schedule(static)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x->data + (size_t)pl * H * W;
        float *yp = y->data + (size_t)pl * OH * OW;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int y0 = oy * stride - pad, x0 = ox * stride - pad;
                int ya = y0 < 0 ? 0 : y0, yb = y0 + k > H ? H : y0 + k;
                int xa = x0 < 0 ? 0 : x0, xb = x0 + k > W ? W : x0 + k;
                size_t o = (size_t)oy * OW + ox;
                if (op == SSTC_OP_MAXPOOL2D) {
                    float m = -FLT_MAX;
                    int best = ya * W + xa;
                    for (int iy = ya; iy < yb; iy++)
                        for (int ix = xa; ix < xb; ix++)
                            if (xp[iy * W + ix] > m) {
                                m = xp[iy * W + ix];
                                best = iy * W + ix;
                            }
                    yp[o] = m;
                    arg[(size_t)pl * OH * OW + o] = best;
                } else {
                    float s = 0;
                    for (int iy = ya; iy < yb; iy++)
                        for (int ix = xa; ix < xb; ix++) s += xp[iy * W + ix];
                    yp[o] = s / (float)(k * k);
                }
            }
    }
    return y;
}

sstc_tensor *sstc_maxpool2d(sstc_ctx *ctx, sstc_tensor *x, int k, int stride, int pad) {
    return pool(ctx, SSTC_OP_MAXPOOL2D, x, k, stride, pad);
}
sstc_tensor *sstc_avgpool2d(sstc_ctx *ctx, sstc_tensor *x, int k, int stride, int pad) {
    return pool(ctx, SSTC_OP_AVGPOOL2D, x, k, stride, pad);
}

static void pool_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0];
    if (!x->requires_grad) return;
    int fresh;
    float *dx = sstc_ctx_grad_fresh(ctx, x, &fresh); /* a new one is zeroed plane by plane below */
    int k = y->ip[0], stride = y->ip[1], pad = y->ip[2];
    int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int OH = y->shape[2], OW = y->shape[3];
    int planes = B * C;
    const int32_t *arg = y->saved;
#pragma omp parallel for if (x->size > PAR_MIN) schedule(static)
    for (int pl = 0; pl < planes; pl++) {
        float *dp = dx + (size_t)pl * H * W;
        if (fresh) memset(dp, 0, (size_t)H * W * sizeof(float));
        const float *gp = y->grad + (size_t)pl * OH * OW;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                size_t o = (size_t)oy * OW + ox;
                if (y->op == SSTC_OP_MAXPOOL2D) {
                    dp[arg[(size_t)pl * OH * OW + o]] += gp[o];
                } else {
                    int y0 = oy * stride - pad, x0 = ox * stride - pad;
                    int ya = y0 < 0 ? 0 : y0, yb = y0 + k > H ? H : y0 + k;
                    int xa = x0 < 0 ? 0 : x0, xb = x0 + k > W ? W : x0 + k;
                    float g = gp[o] / (float)(k * k);
                    for (int iy = ya; iy < yb; iy++)
                        for (int ix = xa; ix < xb; ix++) dp[iy * W + ix] += g;
                }
            }
    }
}

/* ---- batch norm ------------------------------------------------------- */

/* The fused form, batch norm followed by ReLU (y = max(bn(x), 0)), is the
 * same op with ip[1] = 1: the forward pass clamps as it writes, and the
 * backward pass masks dy with y > 0 as it reads it (y > 0 exactly where
 * bn(x) > 0; a NaN gets no gradient, as in relu_backward). It computes every
 * value as the pair of ops does, in the same order, without the batch norm's
 * output and its gradient in between. */
static int fuse_bn_relu = -1; /* -1: SSTC_FUSE not read yet */

void sstc_set_fuse(int on) { fuse_bn_relu = on ? 1 : 0; }

int sstc_fuse_enabled(void) {
    if (fuse_bn_relu < 0) {
        const char *s = getenv("SSTC_FUSE");
        fuse_bn_relu = !(s && !strcmp(s, "0"));
    }
    return fuse_bn_relu;
}

static sstc_tensor *batchnorm_op(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *gamma, sstc_tensor *beta,
                                 sstc_tensor *running_mean, sstc_tensor *running_var, float momentum, float eps,
                                 int relu) {
    if (null_args("batchnorm", ctx, x, gamma) || null_args("batchnorm", ctx, beta, running_mean) ||
        null_args("batchnorm", ctx, running_var, running_var))
        return NULL;
    SHAPEBUF(x);
    if ((x->ndim != 2 && x->ndim != 4)) {
        sstc_fail(SSTC_ESHAPE, "batchnorm: input %s, expected (B,C) or (B,C,H,W)", S(x));
        return NULL;
    }
    int B = x->shape[0], C = x->shape[1];
    if (gamma->size != (size_t)C || beta->size != (size_t)C || running_mean->size != (size_t)C ||
        running_var->size != (size_t)C) {
        sstc_fail(SSTC_ESHAPE, "batchnorm: input %s has %d channels but gamma/beta/running stats have %zu/%zu/%zu/%zu",
                  S(x), C, gamma->size, beta->size, running_mean->size, running_var->size);
        return NULL;
    }
    size_t inner = inner_size(x), m = (size_t)B * inner;
    int training = ctx->training;
    if (training && m < 2) {
        sstc_fail(SSTC_ESHAPE, "batchnorm: training mode needs more than one value per channel, input %s", S(x));
        return NULL;
    }
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_BATCHNORM, x->ndim, x->shape, x, gamma, beta);
    if (!y) return NULL;
    float *stats = sstc_ctx_alloc(ctx, 2 * (size_t)C * sizeof(float)); /* mean, invstd */
    if (!stats) return NULL;
    y->saved = stats;
    y->ip[0] = training;
    y->ip[1] = relu;
    float *mean = stats, *invstd = stats + C;
    if (training) {
        if (inner == 1) {
            /* (B,C): accumulate rows into per-channel sums (vectorizes over C). */
            double *acc = sstc_ctx_alloc(ctx, 2 * (size_t)C * sizeof(double));
            if (!acc) return NULL;
            double *s1 = acc, *s2 = acc + C;
            for (int c = 0; c < C; c++) s1[c] = s2[c] = 0;
            for (int b = 0; b < B; b++) {
                const float *r = x->data + (size_t)b * C;
                for (int c = 0; c < C; c++) s1[c] += r[c];
            }
            for (int c = 0; c < C; c++) mean[c] = (float)(s1[c] / (double)m);
            for (int b = 0; b < B; b++) {
                const float *r = x->data + (size_t)b * C;
                for (int c = 0; c < C; c++) {
                    double d = r[c] - mean[c];
                    s2[c] += d * d;
                }
            }
            for (int c = 0; c < C; c++) {
                double var = s2[c] / (double)m;
                invstd[c] = (float)(1.0 / sqrt(var + eps));
                running_var->data[c] = (1 - momentum) * running_var->data[c] +
                                       momentum * (float)(s2[c] / (double)(m - 1));
            }
        } else {
#pragma omp parallel for if (x->size > PAR_MIN) schedule(static)
            for (int c = 0; c < C; c++) {
                /* float sums over one plane (vectorized), double across planes */
                double s1 = 0, s2 = 0;
                for (int b = 0; b < B; b++) {
                    const float *p = x->data + ((size_t)b * C + c) * inner;
                    float r = 0;
#pragma omp simd reduction(+ : r)
                    for (size_t i = 0; i < inner; i++) r += p[i];
                    s1 += r;
                }
                double mu = s1 / (double)m;
                float muf = (float)mu;
                for (int b = 0; b < B; b++) {
                    const float *p = x->data + ((size_t)b * C + c) * inner;
                    float r = 0;
#pragma omp simd reduction(+ : r)
                    for (size_t i = 0; i < inner; i++) {
                        float d = p[i] - muf;
                        r += d * d;
                    }
                    s2 += r;
                }
                mean[c] = (float)mu;
                invstd[c] = (float)(1.0 / sqrt(s2 / (double)m + eps));
                running_var->data[c] =
                    (1 - momentum) * running_var->data[c] + momentum * (float)(s2 / (double)(m - 1));
            }
        }
        for (int c = 0; c < C; c++)
            running_mean->data[c] = (1 - momentum) * running_mean->data[c] + momentum * mean[c];
    } else {
        for (int c = 0; c < C; c++) {
            mean[c] = running_mean->data[c];
            invstd[c] = 1.0f / sqrtf(running_var->data[c] + eps);
        }
    }
#pragma omp parallel for collapse(2) if (x->size > PAR_MIN) schedule(static)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            size_t off = ((size_t)b * C + c) * inner;
            float a = gamma->data[c] * invstd[c], sh = beta->data[c] - a * mean[c];
            if (relu)
                for (size_t i = 0; i < inner; i++) {
                    float v = a * x->data[off + i] + sh;
                    y->data[off + i] = v <= 0.0f ? 0.0f : v; /* as sstc_relu: NaN propagates */
                }
            else
                for (size_t i = 0; i < inner; i++) y->data[off + i] = a * x->data[off + i] + sh;
        }
    return y;
}

sstc_tensor *sstc_batchnorm(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *gamma, sstc_tensor *beta,
                            sstc_tensor *running_mean, sstc_tensor *running_var, float momentum,
                            float eps) {
    return batchnorm_op(ctx, x, gamma, beta, running_mean, running_var, momentum, eps, 0);
}

sstc_tensor *sstc_batchnorm_relu(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *gamma, sstc_tensor *beta,
                                 sstc_tensor *running_mean, sstc_tensor *running_var, float momentum, float eps) {
    return batchnorm_op(ctx, x, gamma, beta, running_mean, running_var, momentum, eps, 1);
}

/* One row of a fused (B,C) batch norm's sums: the masked gradient is
 * selected, not branched on, and the pointers do not alias, so the loop
 * vectorizes over the channels. */
static void bn_relu_row_sums(const float *restrict g, const float *restrict xr, const float *restrict yr,
                             const float *restrict mean, const float *restrict invstd, float *restrict sdy,
                             float *restrict sdyx, int C) {
#pragma omp simd
    for (int c = 0; c < C; c++) {
        float gv = g[c], gc = yr[c] > 0.0f ? gv : 0.0f;
        sdy[c] += gc;
        sdyx[c] += gc * (xr[c] - mean[c]) * invstd[c];
    }
}

/* One row of a fused (B,C) batch norm's input gradient, each value as the
 * general loop of batchnorm_backward computes it. */
static void bn_relu_row_dx(float *restrict d, const float *restrict xs, const float *restrict gy,
                           const float *restrict ys, const float *restrict gamma, const float *restrict mean,
                           const float *restrict invstd, const float *restrict sdy, const float *restrict sdyx,
                           float inv_m, int training, int fresh, int C) {
    if (training && fresh) {
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float gv = gy[c], gc = ys[c] > 0.0f ? gv : 0.0f;
            d[c] = gamma[c] * invstd[c] * (gc - sdy[c] * inv_m - (xs[c] - mean[c]) * invstd[c] * (sdyx[c] * inv_m));
        }
    } else if (training) {
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float gv = gy[c], gc = ys[c] > 0.0f ? gv : 0.0f;
            d[c] += gamma[c] * invstd[c] * (gc - sdy[c] * inv_m - (xs[c] - mean[c]) * invstd[c] * (sdyx[c] * inv_m));
        }
    } else if (fresh) {
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float gv = gy[c], gc = ys[c] > 0.0f ? gv : 0.0f;
            d[c] = gamma[c] * invstd[c] * gc;
        }
    } else {
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float gv = gy[c], gc = ys[c] > 0.0f ? gv : 0.0f;
            d[c] += gamma[c] * invstd[c] * gc;
        }
    }
}

static void batchnorm_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0], *gamma = y->src[1], *beta = y->src[2];
    int B = x->shape[0], C = x->shape[1];
    size_t inner = inner_size(x), m = (size_t)B * inner;
    const float *mean = y->saved, *invstd = (const float *)y->saved + C;
    int training = y->ip[0], relu = y->ip[1];
    /* Per channel: sum(dy) and sum(dy * xhat); fused with ReLU, dy is the
     * incoming gradient where y > 0 and 0 elsewhere. */
    float *sums = sstc_ctx_alloc(ctx, 2 * (size_t)C * sizeof(float));
    if (!sums) return;
    float *sdy = sums, *sdyx = sums + C;
    const float *yd = y->data;
    if (inner == 1) {
        for (int c = 0; c < C; c++) sdy[c] = sdyx[c] = 0;
        for (int b = 0; b < B; b++) {
            const float *g = y->grad + (size_t)b * C, *xr = x->data + (size_t)b * C, *yr = yd + (size_t)b * C;
            if (relu)
                bn_relu_row_sums(g, xr, yr, mean, invstd, sdy, sdyx, C);
            else
                for (int c = 0; c < C; c++) {
                    sdy[c] += g[c];
                    sdyx[c] += g[c] * (xr[c] - mean[c]) * invstd[c];
                }
        }
    } else {
#pragma omp parallel for if (x->size > PAR_MIN) schedule(static)
        for (int c = 0; c < C; c++) {
            float s1 = 0, s2 = 0, mu = mean[c];
            for (int b = 0; b < B; b++) {
                size_t off = ((size_t)b * C + c) * inner;
                const float *g = y->grad + off, *xs = x->data + off, *ys = yd + off;
                if (relu) {
#pragma omp simd reduction(+ : s1, s2)
                    for (size_t i = 0; i < inner; i++) {
                        float gv = g[i], gc = ys[i] > 0.0f ? gv : 0.0f;
                        s1 += gc;
                        s2 += gc * (xs[i] - mu);
                    }
                } else {
#pragma omp simd reduction(+ : s1, s2)
                    for (size_t i = 0; i < inner; i++) {
                        s1 += g[i];
                        s2 += g[i] * (xs[i] - mu);
                    }
                }
            }
            sdy[c] = s1;
            sdyx[c] = s2 * invstd[c];
        }
    }
    if (gamma->requires_grad) {
        float *dg = sstc_ctx_grad(ctx, gamma);
        for (int c = 0; c < C; c++) dg[c] += sdyx[c];
    }
    if (beta->requires_grad) {
        float *db = sstc_ctx_grad(ctx, beta);
        for (int c = 0; c < C; c++) db[c] += sdy[c];
    }
    if (!x->requires_grad) return;
    int fresh;
    float *dx = sstc_ctx_grad_fresh(ctx, x, &fresh);
    float inv_m = 1.0f / (float)m;
    if (relu && inner == 1) {
        /* (B,C) fused: row by row, vectorized over the channels (one value
         * per (b, c) would make the mask a branch per value) */
#pragma omp parallel for if (x->size > PAR_MIN) schedule(static)
        for (int b = 0; b < B; b++) {
            size_t off = (size_t)b * C;
            bn_relu_row_dx(dx + off, x->data + off, y->grad + off, yd + off, gamma->data, mean, invstd, sdy, sdyx,
                           inv_m, training, fresh, C);
        }
        return;
    }
    /* a fresh buffer is written, not added to */
#pragma omp parallel for collapse(2) if (x->size > PAR_MIN) schedule(static)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            size_t off = ((size_t)b * C + c) * inner;
            float gi = gamma->data[c] * invstd[c];
            float *restrict d = dx + off;
            const float *restrict xs = x->data + off, *restrict gy = y->grad + off, *restrict ys = yd + off;
            if (relu) {
                float mu = mean[c], is = invstd[c], a = training ? sdy[c] * inv_m : 0.0f,
                      bb = training ? sdyx[c] * inv_m : 0.0f;
                /* the masked gradient, as relu_backward writes it */
                if (training && fresh)
                    for (size_t i = 0; i < inner; i++) {
                        float gv = gy[i], gc = ys[i] > 0.0f ? gv : 0.0f;
                        d[i] = gi * (gc - a - (xs[i] - mu) * is * bb);
                    }
                else if (training)
                    for (size_t i = 0; i < inner; i++) {
                        float gv = gy[i], gc = ys[i] > 0.0f ? gv : 0.0f;
                        d[i] += gi * (gc - a - (xs[i] - mu) * is * bb);
                    }
                else if (fresh)
                    for (size_t i = 0; i < inner; i++) {
                        float gv = gy[i], gc = ys[i] > 0.0f ? gv : 0.0f;
                        d[i] = gi * gc;
                    }
                else
                    for (size_t i = 0; i < inner; i++) {
                        float gv = gy[i], gc = ys[i] > 0.0f ? gv : 0.0f;
                        d[i] += gi * gc;
                    }
            } else if (training) {
                float mu = mean[c], is = invstd[c], a = sdy[c] * inv_m, bb = sdyx[c] * inv_m;
                if (fresh)
                    for (size_t i = 0; i < inner; i++) d[i] = gi * (gy[i] - a - (xs[i] - mu) * is * bb);
                else
                    for (size_t i = 0; i < inner; i++) d[i] += gi * (gy[i] - a - (xs[i] - mu) * is * bb);
            } else if (fresh) {
                for (size_t i = 0; i < inner; i++) d[i] = gi * gy[i];
            } else {
                for (size_t i = 0; i < inner; i++) d[i] += gi * gy[i];
            }
        }
}

/* ---- global average pooling ------------------------------------------ */

sstc_tensor *sstc_global_avgpool(sstc_ctx *ctx, sstc_tensor *x) {
    if (null_args("global_avgpool", ctx, x, x)) return NULL;
    if (x->ndim != 4) {
        SHAPEBUF(x);
        sstc_fail(SSTC_ESHAPE, "global_avgpool: input %s, expected (B,C,H,W)", S(x));
        return NULL;
    }
    int B = x->shape[0], C = x->shape[1];
    size_t hw = inner_size(x);
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_GLOBAL_AVGPOOL, 2, (int[]){B, C}, x, NULL, NULL);
    if (!y) return NULL;
    size_t planes = (size_t)B * C;
    float inv = 1.0f / (float)hw;
#pragma omp parallel for if (x->size > PAR_MIN) schedule(static)
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x->data + pl * hw;
        float s = 0;
        for (size_t i = 0; i < hw; i++) s += xp[i];
        y->data[pl] = s * inv;
    }
    return y;
}

static void global_avgpool_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0];
    if (!x->requires_grad) return;
    int fresh;
    float *dx = sstc_ctx_grad_fresh(ctx, x, &fresh);
    size_t hw = inner_size(x), planes = y->size;
    float inv = 1.0f / (float)hw;
#pragma omp parallel for if (x->size > PAR_MIN) schedule(static)
    for (size_t pl = 0; pl < planes; pl++) {
        float g = y->grad[pl] * inv, *d = dx + pl * hw;
        if (fresh)
            for (size_t i = 0; i < hw; i++) d[i] = g;
        else
            for (size_t i = 0; i < hw; i++) d[i] += g;
    }
}

/* ---- concatenation ---------------------------------------------------- */

/* The sources are kept in y->saved (a tensor has three src slots; a concat
 * may have more inputs); y->ip[0] is their count. */
sstc_tensor *sstc_concat(sstc_ctx *ctx, int n, sstc_tensor *const *xs) {
    if (!ctx || n < 1 || !xs) {
        if (!ctx) sstc_fail(SSTC_EINVAL, "concat: NULL context");
        else sstc_fail(SSTC_EINVAL, "concat: %d inputs, expected at least 1", n);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (null_args("concat", ctx, xs[i], xs[i])) return NULL;
    const sstc_tensor *a = xs[0];
    int C = 0, rg = 0;
    for (int i = 0; i < n; i++) {
        const sstc_tensor *t = xs[i];
        int ok = t->ndim == a->ndim && t->ndim >= 2 && t->shape[0] == a->shape[0];
        for (int d = 2; ok && d < t->ndim; d++) ok = t->shape[d] == a->shape[d];
        if (!ok) {
            char sa[64], st[64];
            sstc_fail(SSTC_ESHAPE, "concat: input 0 %s and input %d %s do not fit, expected (B,C_i,...) equal but for C_i",
                      sstc_shape_str(a, sa, sizeof sa), i, sstc_shape_str(t, st, sizeof st));
            return NULL;
        }
        C += t->shape[1];
        rg |= t->requires_grad;
    }
    int shape[SSTC_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[1] = C;
    /* recorded below, once every source's requires_grad is known */
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_CONCAT, a->ndim, shape, NULL, NULL, NULL);
    sstc_tensor **src = sstc_ctx_alloc(ctx, (size_t)n * sizeof *src);
    if (!y || !src) return NULL;
    memcpy(src, xs, (size_t)n * sizeof *src);
    for (int i = 0; i < n && i < 3; i++) y->src[i] = xs[i];
    y->saved = src;
    y->ip[0] = n;
    int B = a->shape[0];
    size_t inner = inner_size(a), row = (size_t)C * inner;
    for (int b = 0; b < B; b++) {
        float *dst = y->data + (size_t)b * row;
        for (int i = 0; i < n; i++) {
            size_t len = (size_t)xs[i]->shape[1] * inner;
            memcpy(dst, xs[i]->data + (size_t)b * len, len * sizeof(float));
            dst += len;
        }
    }
    y->requires_grad = rg;
    if (rg && sstc_ctx_record(ctx, y)) return NULL;
    return y;
}

static void concat_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor **src = y->saved;
    int n = y->ip[0], B = y->shape[0];
    size_t inner = inner_size(y), row = (size_t)y->shape[1] * inner, off = 0;
    for (int i = 0; i < n; i++) {
        sstc_tensor *t = src[i];
        size_t len = (size_t)t->shape[1] * inner;
        if (t->requires_grad) {
            float *g = sstc_ctx_grad(ctx, t);
            for (int b = 0; b < B; b++) {
                const float *gy = y->grad + (size_t)b * row + off;
                float *gt = g + (size_t)b * len;
                for (size_t k = 0; k < len; k++) gt[k] += gy[k];
            }
        }
        off += len;
    }
}

/* ---- dropout ---------------------------------------------------------- */

sstc_tensor *sstc_dropout(sstc_ctx *ctx, sstc_tensor *x, float p) {
    if (null_args("dropout", ctx, x, x)) return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
        sstc_fail(SSTC_EINVAL, "dropout: probability %g, expected 0 <= p < 1", (double)p);
        return NULL;
    }
    int active = ctx->training && p > 0.0f;
    if (active && !ctx->rng) {
        sstc_fail(SSTC_ESTATE, "dropout: training mode needs a generator (sstc_ctx_set_rng)");
        return NULL;
    }
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_DROPOUT, x->ndim, x->shape, x, NULL, NULL);
    if (!y) return NULL;
    y->ip[0] = active;
    if (!active) {
        memcpy(y->data, x->data, x->size * sizeof(float));
        return y;
    }
    float *mask = sstc_ctx_alloc(ctx, x->size * sizeof(float));
    if (!mask) return NULL;
    y->saved = mask;
    float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < x->size; i++) mask[i] = sstc_rng_uniform(ctx->rng) < p ? 0.0f : keep;
    for (size_t i = 0; i < x->size; i++) y->data[i] = x->data[i] * mask[i];
    return y;
}

static void dropout_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0];
    if (!x->requires_grad) return;
    float *g = sstc_ctx_grad(ctx, x);
    const float *mask = y->saved;
    if (y->ip[0])
        for (size_t i = 0; i < y->size; i++) g[i] += y->grad[i] * mask[i];
    else
        for (size_t i = 0; i < y->size; i++) g[i] += y->grad[i];
}

/* ---- reshape ---------------------------------------------------------- */

sstc_tensor *sstc_reshape(sstc_ctx *ctx, sstc_tensor *x, int ndim, const int *shape) {
    if (null_args("reshape", ctx, x, x)) return NULL;
    size_t n = 1;
    if (ndim < 1 || ndim > SSTC_MAX_DIMS || !shape) {
        sstc_fail(SSTC_ESHAPE, "reshape: %d dimensions, expected 1..%d", ndim, SSTC_MAX_DIMS);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) n *= shape[i] > 0 ? (size_t)shape[i] : 0;
    if (n != x->size) {
        SHAPEBUF(x);
        sstc_fail(SSTC_ESHAPE, "reshape: input %s has %zu elements, the new shape has %zu", S(x), x->size, n);
        return NULL;
    }
    sstc_tensor *y = sstc_ctx_calloc(ctx, sizeof *y);
    if (!y) return NULL;
    y->ndim = ndim;
    y->size = n;
    for (int i = 0; i < SSTC_MAX_DIMS; i++) y->shape[i] = i < ndim ? shape[i] : 1;
    y->data = x->data; /* a view: same storage */
    y->op = SSTC_OP_RESHAPE;
    y->src[0] = x;
    y->requires_grad = x->requires_grad;
    if (y->requires_grad && sstc_ctx_record(ctx, y)) return NULL;
    return y;
}

sstc_tensor *sstc_flatten(sstc_ctx *ctx, sstc_tensor *x) {
    if (null_args("flatten", ctx, x, x)) return NULL;
    return sstc_reshape(ctx, x, 2, (int[]){x->shape[0], (int)(x->size / (size_t)x->shape[0])});
}

static void reshape_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0];
    if (!x->requires_grad) return;
    float *g = sstc_ctx_grad(ctx, x);
    size_t n = y->size;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (size_t i = 0; i < n; i++) g[i] += y->grad[i];
}

/* ---- reductions ------------------------------------------------------- */

static sstc_tensor *reduce(sstc_ctx *ctx, sstc_op op, sstc_tensor *x) {
    if (null_args(sstc_op_name(op), ctx, x, x)) return NULL;
    sstc_tensor *y = sstc_ctx_op_output(ctx, op, 1, (int[]){1}, x, NULL, NULL);
    if (!y) return NULL;
    double s = 0;
    for (size_t i = 0; i < x->size; i++) s += x->data[i];
    y->data[0] = (float)(op == SSTC_OP_MEAN ? s / (double)x->size : s);
    return y;
}

sstc_tensor *sstc_sum(sstc_ctx *ctx, sstc_tensor *x) { return reduce(ctx, SSTC_OP_SUM, x); }
sstc_tensor *sstc_mean(sstc_ctx *ctx, sstc_tensor *x) { return reduce(ctx, SSTC_OP_MEAN, x); }

static void reduce_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *x = y->src[0];
    if (!x->requires_grad) return;
    float *g = sstc_ctx_grad(ctx, x);
    float d = y->grad[0] / (y->op == SSTC_OP_MEAN ? (float)x->size : 1.0f);
    for (size_t i = 0; i < x->size; i++) g[i] += d;
}

/* ---- softmax + cross-entropy ------------------------------------------ */

sstc_tensor *sstc_softmax_ce(sstc_ctx *ctx, sstc_tensor *logits, const int *labels) {
    return sstc_softmax_ce_smooth(ctx, logits, labels, 0.0f);
}

sstc_tensor *sstc_softmax_ce_smooth(sstc_ctx *ctx, sstc_tensor *logits, const int *labels, float smoothing) {
    if (null_args("softmax_ce", ctx, logits, logits)) return NULL;
    if (!(smoothing >= 0.0f && smoothing < 1.0f)) {
        sstc_fail(SSTC_EINVAL, "softmax_ce: label smoothing %g, expected 0 <= smoothing < 1", (double)smoothing);
        return NULL;
    }
    if (!labels) {
        sstc_fail(SSTC_EINVAL, "softmax_ce: NULL labels");
        return NULL;
    }
    if (logits->ndim != 2) {
        SHAPEBUF(logits);
        sstc_fail(SSTC_ESHAPE, "softmax_ce: logits %s, expected (B,C)", S(logits));
        return NULL;
    }
    int B = logits->shape[0], C = logits->shape[1];
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= C) {
            sstc_fail(SSTC_EINVAL, "softmax_ce: label %d of sample %d out of range, expected 0..%d",
                      labels[b], b, C - 1);
            return NULL;
        }
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_SOFTMAX_CE, 1, (int[]){1}, logits, NULL, NULL);
    if (!y) return NULL;
    /* the probabilities, then the smoothing */
    float *prob = sstc_ctx_alloc(ctx, (logits->size + 1) * sizeof(float));
    int *lab = sstc_ctx_alloc(ctx, (size_t)B * sizeof(int));
    if (!prob || !lab) return NULL;
    memcpy(lab, labels, (size_t)B * sizeof(int));
    prob[logits->size] = smoothing;
    y->saved = prob;
    y->saved2 = lab;
    double loss = 0;
    for (int b = 0; b < B; b++) {
        const float *z = logits->data + (size_t)b * C;
        float *p = prob + (size_t)b * C;
        float mx = z[0];
        for (int c = 1; c < C; c++) mx = z[c] > mx ? z[c] : mx;
        double s = 0;
        for (int c = 0; c < C; c++) {
            p[c] = expf(z[c] - mx);
            s += p[c];
        }
        float inv = (float)(1.0 / s);
        for (int c = 0; c < C; c++) p[c] *= inv;
        double nll = log(s) + mx - z[lab[b]];
        if (smoothing > 0.0f) {
            /* target (1-e)*onehot + e/C: -sum_c t_c log p_c, log p_c = z_c - mx - log s */
            double zsum = 0;
            for (int c = 0; c < C; c++) zsum += z[c];
            nll = (1.0 - smoothing) * nll + smoothing * (log(s) + mx - zsum / C);
        }
        loss += nll;
    }
    y->data[0] = (float)(loss / B);
    return y;
}

static void softmax_ce_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *z = y->src[0];
    if (!z->requires_grad) return;
    int B = z->shape[0], C = z->shape[1];
    const float *prob = y->saved;
    const int *lab = y->saved2;
    float *g = sstc_ctx_grad(ctx, z), d = y->grad[0] / (float)B;
    float e = prob[z->size], hit = 1.0f - e + e / (float)C, miss = e / (float)C;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            g[(size_t)b * C + c] += d * (prob[(size_t)b * C + c] - (c == lab[b] ? hit : miss));
}

/* ---- distillation ------------------------------------------------------ */

void sstc_softmax_temperature(const float *z, int B, int C, float T, float *p) {
    for (int b = 0; b < B; b++) {
        const float *zr = z + (size_t)b * C;
        float *pr = p + (size_t)b * C;
        double mx = zr[0] / T, s = 0;
        for (int c = 1; c < C; c++) mx = zr[c] / T > mx ? zr[c] / T : mx;
        for (int c = 0; c < C; c++) s += exp(zr[c] / T - mx);
        for (int c = 0; c < C; c++) pr[c] = (float)(exp(zr[c] / T - mx) / s);
    }
}

sstc_tensor *sstc_distill_kl(sstc_ctx *ctx, sstc_tensor *logits, const float *teacher_probs, float T) {
    if (null_args("distill", ctx, logits, logits)) return NULL;
    if (!teacher_probs || !(T > 0) || !isfinite(T)) {
        sstc_fail(SSTC_EINVAL, "distill: %s, expected teacher probabilities and a temperature > 0",
                  teacher_probs ? "bad temperature" : "no teacher probabilities");
        return NULL;
    }
    if (logits->ndim != 2) {
        SHAPEBUF(logits);
        sstc_fail(SSTC_ESHAPE, "distill: logits %s, expected (B,C)", S(logits));
        return NULL;
    }
    int B = logits->shape[0], C = logits->shape[1];
    sstc_tensor *y = sstc_ctx_op_output(ctx, SSTC_OP_DISTILL, 1, (int[]){1}, logits, NULL, NULL);
    if (!y) return NULL;
    /* saved: the student's softened probabilities q, the teacher's p, T */
    float *q = sstc_ctx_alloc(ctx, (2 * logits->size + 1) * sizeof(float));
    if (!q) return NULL;
    float *p = q + logits->size;
    memcpy(p, teacher_probs, logits->size * sizeof(float));
    q[2 * logits->size] = T;
    y->saved = q;
    sstc_softmax_temperature(logits->data, B, C, T, q);
    double loss = 0;
    for (int b = 0; b < B; b++) {
        const float *zr = logits->data + (size_t)b * C, *pr = p + (size_t)b * C;
        double mx = zr[0] / T, s = 0;
        for (int c = 1; c < C; c++) mx = zr[c] / T > mx ? zr[c] / T : mx;
        for (int c = 0; c < C; c++) s += exp(zr[c] / T - mx);
        double lse = mx + log(s); /* log q_c = z_c/T - lse */
        for (int c = 0; c < C; c++)
            if (pr[c] > 0) loss += pr[c] * (log(pr[c]) - (zr[c] / T - lse));
    }
    y->data[0] = (float)(loss * T * T / B);
    return y;
}

static void distill_backward(sstc_ctx *ctx, sstc_tensor *y) {
    sstc_tensor *z = y->src[0];
    if (!z->requires_grad) return;
    int B = z->shape[0];
    const float *q = y->saved, *p = q + z->size;
    float T = q[2 * z->size], d = y->grad[0] * T / (float)B;
    float *g = sstc_ctx_grad(ctx, z);
    for (size_t i = 0; i < z->size; i++) g[i] += d * (q[i] - p[i]);
}

/* ---- dispatch --------------------------------------------------------- */

const backward_fn sstc_backward_rules[SSTC_OP_COUNT] = {
    [SSTC_OP_MATMUL] = matmul_backward,
    [SSTC_OP_LINEAR] = linear_backward,
    [SSTC_OP_ADD] = add_backward,
    [SSTC_OP_BIAS_ADD] = bias_add_backward,
    [SSTC_OP_MUL] = mul_backward,
    [SSTC_OP_SCALE] = scale_backward,
    [SSTC_OP_RELU] = relu_backward,
    [SSTC_OP_CONV2D] = conv2d_backward,
    [SSTC_OP_MAXPOOL2D] = pool_backward,
    [SSTC_OP_AVGPOOL2D] = pool_backward,
    [SSTC_OP_BATCHNORM] = batchnorm_backward,
    [SSTC_OP_DROPOUT] = dropout_backward,
    [SSTC_OP_RESHAPE] = reshape_backward,
    [SSTC_OP_SUM] = reduce_backward,
    [SSTC_OP_MEAN] = reduce_backward,
    [SSTC_OP_SOFTMAX_CE] = softmax_ce_backward,
    [SSTC_OP_CHANNEL_SCALE] = channel_scale_backward,
    [SSTC_OP_CONCAT] = concat_backward,
    [SSTC_OP_GLOBAL_AVGPOOL] = global_avgpool_backward,
    [SSTC_OP_DISTILL] = distill_backward,
};

/* The inputs of a tape entry: src[], or a concatenation's list. */
static int op_inputs(sstc_tensor *t, sstc_tensor ***in) {
    if (t->op == SSTC_OP_CONCAT && t->saved) {
        *in = (sstc_tensor **)t->saved;
        return t->ip[0];
    }
    *in = t->src;
    return 3;
}

/* Uses of leaves on the tape: an open-addressing table in the arena. */
typedef struct {
    sstc_tensor **key;
    int *count;
    size_t mask;
} leaf_uses;

static int *leaf_slot(leaf_uses *u, sstc_tensor *t, int insert) {
    size_t h = ((uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ULL;
    for (size_t i = h & u->mask;; i = (i + 1) & u->mask) {
        if (u->key[i] == t) return &u->count[i];
        if (!u->key[i]) {
            if (!insert) return NULL;
            u->key[i] = t;
            return &u->count[i];
        }
    }
}

static int backward_run(sstc_ctx *ctx, sstc_tensor *loss, void (*done)(void *, sstc_tensor *), void *user) {
    if (!ctx || !loss) return sstc_fail(SSTC_EINVAL, "backward: NULL %s", ctx ? "loss" : "context");
    if (loss->size != 1) {
        SHAPEBUF(loss);
        return sstc_fail(SSTC_ESHAPE, "backward: loss has shape %s, expected a scalar", S(loss));
    }
    size_t pos = ctx->tape_len;
    while (pos > 0 && ctx->tape[pos - 1] != loss) pos--;
    if (pos == 0)
        return sstc_fail(SSTC_ESTATE,
                         "backward: the loss is not on this context's tape (run the forward pass, with "
                         "parameters that require gradients, in this context first)");
    float *g = sstc_ctx_grad(ctx, loss);
    if (!g) return sstc_errcode();
    leaf_uses u = {0};
    if (done) {
        size_t uses = 0;
        for (size_t i = 0; i < pos; i++) {
            sstc_tensor **in;
            int n = op_inputs(ctx->tape[i], &in);
            for (int k = 0; k < n; k++) uses += in[k] && in[k]->op == SSTC_OP_LEAF && in[k]->requires_grad;
        }
        size_t cap = 16;
        while (cap < 2 * uses + 2) cap *= 2;
        u.key = sstc_ctx_alloc(ctx, cap * sizeof *u.key);
        u.count = sstc_ctx_alloc(ctx, cap * sizeof *u.count);
        if (!u.key || !u.count) return sstc_errcode();
        memset(u.key, 0, cap * sizeof *u.key);
        memset(u.count, 0, cap * sizeof *u.count);
        u.mask = cap - 1;
        for (size_t i = 0; i < pos; i++) {
            sstc_tensor **in;
            int n = op_inputs(ctx->tape[i], &in);
            for (int k = 0; k < n; k++)
                if (in[k] && in[k]->op == SSTC_OP_LEAF && in[k]->requires_grad) (*leaf_slot(&u, in[k], 1))++;
        }
    }
    g[0] += 1.0f;
    for (size_t i = pos; i-- > 0;) {
        sstc_tensor *t = ctx->tape[i];
        if (t->grad) { /* else no gradient reached it */
            if (t->op <= SSTC_OP_LEAF || t->op >= SSTC_OP_COUNT || !sstc_backward_rules[t->op])
                return sstc_fail(SSTC_ESTATE, "backward: unknown op %d on the tape", (int)t->op);
            sstc_backward_rules[t->op](ctx, t);
        }
        if (!done) continue;
        sstc_tensor **in;
        int n = op_inputs(t, &in);
        for (int k = 0; k < n; k++) {
            if (!in[k] || in[k]->op != SSTC_OP_LEAF || !in[k]->requires_grad) continue;
            int *c = leaf_slot(&u, in[k], 0);
            if (c && --*c == 0) done(user, in[k]);
        }
    }
    return 0;
}

int sstc_backward(sstc_ctx *ctx, sstc_tensor *loss) { return backward_run(ctx, loss, NULL, NULL); }

int sstc_backward_notify(sstc_ctx *ctx, sstc_tensor *loss, void (*done)(void *user, sstc_tensor *t), void *user) {
    if (!done) return sstc_fail(SSTC_EINVAL, "backward_notify: NULL callback");
    return backward_run(ctx, loss, done, user);
}
