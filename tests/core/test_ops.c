/* Ops: finite-difference gradient checks for every op, PyTorch reference
 * comparisons, and error reporting. */
#include <float.h>

#include "../test_util.h"

static sstc_ctx *P; /* parameters (inputs of the checked functions) */
static sstc_rng rng;

static void setup(void) {
    P = sstc_ctx_create(1 << 20);
    sstc_rng_seed(&rng, 7);
    sstc_clear_error();
}
static void teardown(void) { sstc_ctx_free(P); }

TestSuite(ops, .init = setup, .fini = teardown);

static sstc_tensor *randp(int ndim, const int *shape, float scale) {
    sstc_tensor *t = sstc_param_new(P, ndim, shape);
    fill_normal(t, &rng, scale);
    return t;
}

/* ---- gradient checks ---- */

static sstc_tensor *f_matmul(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_matmul(c, in[0], in[1]); }
Test(ops, matmul_gradient_matches_finite_differences) {
    sstc_tensor *in[] = {randp(2, (int[]){3, 4}, 1), randp(2, (int[]){4, 5}, 1)};
    gradcheck(f_matmul, in, 2, NULL, "matmul");
}

static sstc_tensor *f_linear(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_linear(c, in[0], in[1], in[2]); }
Test(ops, linear_gradient_matches_finite_differences) {
    sstc_tensor *in[] = {randp(2, (int[]){3, 6}, 1), randp(2, (int[]){4, 6}, 1), randp(1, (int[]){4}, 1)};
    gradcheck(f_linear, in, 3, NULL, "linear");
}

static sstc_tensor *f_add(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_add(c, in[0], in[1]); }
static sstc_tensor *f_mul(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_mul(c, in[0], in[1]); }
static sstc_tensor *f_scale(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_scale(c, in[0], -2.5f); }
Test(ops, add_mul_scale_gradients_match_finite_differences) {
    sstc_tensor *in[] = {randp(2, (int[]){3, 4}, 1), randp(2, (int[]){3, 4}, 1)};
    gradcheck(f_add, in, 2, NULL, "add");
    gradcheck(f_mul, in, 2, NULL, "mul");
    gradcheck(f_scale, in, 1, NULL, "scale");
}

static sstc_tensor *f_bias(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_bias_add(c, in[0], in[1]); }
Test(ops, bias_add_gradient_matches_finite_differences_2d_and_4d) {
    sstc_tensor *a[] = {randp(2, (int[]){3, 4}, 1), randp(1, (int[]){4}, 1)};
    gradcheck(f_bias, a, 2, NULL, "bias_add 2d");
    sstc_tensor *b[] = {randp(4, (int[]){2, 3, 2, 2}, 1), randp(1, (int[]){3}, 1)};
    gradcheck(f_bias, b, 2, NULL, "bias_add 4d");
}

static sstc_tensor *f_relu(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_relu(c, in[0]); }
Test(ops, relu_gradient_matches_finite_differences) {
    sstc_tensor *x = sstc_param_new(P, 2, (int[]){4, 5});
    fill_away_from_zero(x, &rng);
    sstc_tensor *in[] = {x};
    gradcheck(f_relu, in, 1, NULL, "relu");
}

struct conv_args { int stride, pad; };
static sstc_tensor *f_conv(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct conv_args *a = u;
    return sstc_conv2d(c, in[0], in[1], in[2], a->stride, a->pad);
}
Test(ops, conv2d_gradient_matches_finite_differences_with_stride_and_padding) {
    struct conv_args cases[] = {{1, 0}, {1, 1}, {2, 1}, {3, 2}};
    for (int k = 0; k < 4; k++) {
        sstc_tensor *in[] = {randp(4, (int[]){2, 3, 6, 5}, 1), randp(4, (int[]){4, 3, 3, 2}, 0.5f),
                             randp(1, (int[]){4}, 1)};
        char what[64];
        snprintf(what, sizeof what, "conv2d stride %d pad %d", cases[k].stride, cases[k].pad);
        gradcheck(f_conv, in, 3, &cases[k], what);
    }
}

/* "Same" convolutions (stride 1, 2*pad = K-1) take a separate path that shifts
 * whole planes; planes narrower and shorter than the kernel included. */
Test(ops, conv2d_same_padding_gradients_match_finite_differences) {
    struct { int H, W, K; } cases[] = {{5, 4, 3}, {1, 1, 3}, {2, 3, 5}, {4, 1, 5}, {3, 3, 1}};
    for (int k = 0; k < 5; k++) {
        struct conv_args a = {1, (cases[k].K - 1) / 2};
        sstc_tensor *in[] = {randp(4, (int[]){2, 3, cases[k].H, cases[k].W}, 1),
                             randp(4, (int[]){2, 3, cases[k].K, cases[k].K}, 0.5f), randp(1, (int[]){2}, 1)};
        char what[80];
        snprintf(what, sizeof what, "conv2d %dx%d input, %dx%d kernel, pad %d", cases[k].H, cases[k].W,
                 cases[k].K, cases[k].K, a.pad);
        gradcheck(f_conv, in, 3, &a, what);
    }
}

/* Direct (seven-loop) convolution in double: y, and for the upstream gradient
 * gy the gradients dx, dw, db. */
static void conv_direct(const float *x, const float *w, const float *b, const float *gy, int B, int C,
                        int H, int W, int OC, int K, int stride, int pad, double *y, double *dx, double *dw,
                        double *db) {
    int OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
    for (int n = 0; n < B; n++)
        for (int o = 0; o < OC; o++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    size_t yi = (((size_t)n * OC + o) * OH + oy) * OW + ox;
                    double acc = b[o];
                    db[o] += gy[yi];
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < K; ky++)
                            for (int kx = 0; kx < K; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                size_t xi = (((size_t)n * C + c) * H + iy) * W + ix;
                                size_t wi = (((size_t)o * C + c) * K + ky) * K + kx;
                                acc += (double)w[wi] * x[xi];
                                dx[xi] += (double)w[wi] * gy[yi];
                                dw[wi] += (double)x[xi] * gy[yi];
                            }
                    y[yi] = acc;
                }
}

static void expect_near_d(const float *got, const double *want, size_t n, double tol, const char *what) {
    for (size_t i = 0; i < n; i++)
        cr_expect(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i])), "%s[%zu]: %g, expected %g", what, i,
                  (double)got[i], want[i]);
}

Test(ops, conv2d_matches_direct_convolution_same_and_general) {
    struct { int B, C, H, W, OC, K, stride, pad; } cases[] = {
        {3, 4, 7, 6, 5, 3, 1, 1}, {2, 3, 8, 8, 4, 5, 1, 2}, {2, 2, 1, 2, 3, 3, 1, 1},
        {2, 3, 5, 7, 2, 3, 2, 1}, {1, 2, 6, 6, 3, 3, 1, 0}, {2, 3, 4, 4, 2, 1, 1, 0},
        /* planes of 256 and more: one image per sgemm on the image-parallel path */
        {3, 2, 16, 16, 3, 3, 1, 1}, {3, 2, 17, 16, 2, 1, 1, 0},
        /* several groups of small planes per batch, the last one short: same
         * (flipped-kernel dX), pointwise, and strided (col2im) convolutions */
        {9, 2, 8, 8, 3, 3, 1, 1}, {20, 3, 4, 4, 2, 1, 1, 0}, {25, 2, 9, 9, 3, 3, 2, 1}};
    /* 1 thread: batched sgemms; 2 and 3 threads: the image-parallel path
     * (per-thread weight gradients summed afterwards; small planes grouped
     * several images per sgemm), 3 with a batch that does not divide evenly,
     * and a batch smaller than the threads */
    for (int run = 0; run < 33; run++) {
        int k = run % 11, threads = 1 + run / 11;
        sstc_set_threads(threads);
        int B = cases[k].B + (threads == 3 ? 2 : 0), C = cases[k].C, H = cases[k].H, W = cases[k].W,
            OC = cases[k].OC, K = cases[k].K;
        if (threads == 3 && k == 4) B = 2;
        sstc_ctx *ctx = sstc_ctx_create(0);
        sstc_tensor *x = randp(4, (int[]){B, C, H, W}, 1), *w = randp(4, (int[]){OC, C, K, K}, 0.5f),
                    *b = randp(1, (int[]){OC}, 1);
        sstc_zero_grad(x);
        sstc_zero_grad(w);
        sstc_zero_grad(b);
        sstc_tensor *y = sstc_conv2d(ctx, x, w, b, cases[k].stride, cases[k].pad);
        cr_assert_not_null(y, "%s", sstc_errmsg());
        float *gy = malloc(y->size * sizeof(float));
        for (size_t i = 0; i < y->size; i++) gy[i] = sstc_rng_normal(&rng);
        sstc_tensor *loss = sstc_sum(ctx, sstc_mul(ctx, y, sstc_tensor_wrap(ctx, gy, y->ndim, y->shape)));
        cr_assert_eq(sstc_backward(ctx, loss), 0, "%s", sstc_errmsg());
        double *ry = calloc(y->size, sizeof(double)), *rdx = calloc(x->size, sizeof(double)),
               *rdw = calloc(w->size, sizeof(double)), *rdb = calloc((size_t)OC, sizeof(double));
        conv_direct(x->data, w->data, b->data, gy, B, C, H, W, OC, K, cases[k].stride, cases[k].pad, ry, rdx,
                    rdw, rdb);
        char what[64];
        snprintf(what, sizeof what, "case %d, %d threads: y", k, threads);
        expect_near_d(y->data, ry, y->size, 1e-5, what);
        snprintf(what, sizeof what, "case %d, %d threads: dx", k, threads);
        expect_near_d(x->grad, rdx, x->size, 1e-5, what);
        /* a weight gradient sums B*OH*OW products (up to 729 here) in float, in
         * an order that depends on the thread count and grouping: its rounding
         * grows with that count, so 1e-5 would fail on some BLAS kernels */
        snprintf(what, sizeof what, "case %d, %d threads: dw", k, threads);
        expect_near_d(w->grad, rdw, w->size, 5e-5, what);
        snprintf(what, sizeof what, "case %d, %d threads: db", k, threads);
        expect_near_d(b->grad, rdb, (size_t)OC, 1e-5, what);
        free(gy);
        free(ry);
        free(rdx);
        free(rdw);
        free(rdb);
        sstc_ctx_free(ctx);
    }
    sstc_set_threads(1);
}

struct pool_args { int k, stride, pad; };
static sstc_tensor *f_maxpool(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct pool_args *a = u;
    return sstc_maxpool2d(c, in[0], a->k, a->stride, a->pad);
}
static sstc_tensor *f_avgpool(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct pool_args *a = u;
    return sstc_avgpool2d(c, in[0], a->k, a->stride, a->pad);
}
Test(ops, pooling_gradients_match_finite_differences) {
    struct pool_args cases[] = {{2, 2, 0}, {3, 2, 1}, {3, 1, 1}};
    for (int k = 0; k < 3; k++) {
        /* distinct values far apart (spacing 0.05 > 2h) so the max never switches */
        sstc_tensor *x = sstc_param_new(P, 4, (int[]){2, 2, 5, 5});
        int *perm = malloc(x->size * sizeof(int));
        for (size_t i = 0; i < x->size; i++) perm[i] = (int)i;
        sstc_rng_shuffle(&rng, perm, (int)x->size);
        for (size_t i = 0; i < x->size; i++) x->data[i] = 0.05f * (float)perm[i] - 2.5f;
        free(perm);
        sstc_tensor *in[] = {x};
        gradcheck(f_maxpool, in, 1, &cases[k], "maxpool2d");
        gradcheck(f_avgpool, in, 1, &cases[k], "avgpool2d");
    }
}

/* The 2x2 window has its own loop: ties go to the first element in scan order
 * (as in the generic loop), -inf and NaN never win over -FLT_MAX. */
Test(ops, maxpool2d_2x2_ties_and_non_finite_values) {
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *x = sstc_param_new(P, 4, (int[]){1, 1, 2, 6});
    float v[] = {1, 1, -INFINITY, -INFINITY, 0, 5, /* row 0 */
                 1, 1, -INFINITY, NAN, 5, 0};       /* row 1 */
    memcpy(x->data, v, sizeof v);
    sstc_zero_grad(x);
    sstc_tensor *y = sstc_maxpool2d(ctx, x, 2, 2, 0);
    cr_assert_not_null(y);
    cr_expect_eq(y->data[0], 1.0f);
    cr_expect_eq(y->data[1], -FLT_MAX);
    cr_expect_eq(y->data[2], 5.0f);
    cr_assert_eq(sstc_backward(ctx, sstc_sum(ctx, y)), 0, "%s", sstc_errmsg());
    float want[] = {1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 12; i++) cr_expect_eq(x->grad[i], want[i], "dx[%d] = %g, expected %g", i, x->grad[i], want[i]);
    sstc_ctx_free(ctx);
}

struct bn_args { sstc_tensor *rm, *rv; int training; };
static sstc_tensor *f_bn(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct bn_args *a = u;
    sstc_ctx_set_training(c, a->training);
    return sstc_batchnorm(c, in[0], in[1], in[2], a->rm, a->rv, 0.1f, 1e-5f);
}
Test(ops, batchnorm_gradient_matches_finite_differences_training_and_eval) {
    for (int training = 1; training >= 0; training--) {
        for (int d4 = 0; d4 < 2; d4++) {
            sstc_tensor *x = d4 ? randp(4, (int[]){3, 2, 3, 2}, 1.5f) : randp(2, (int[]){5, 3}, 1.5f);
            int C = x->shape[1];
            struct bn_args a = {sstc_tensor_1d(P, C), sstc_tensor_1d(P, C), training};
            for (int c = 0; c < C; c++) {
                a.rm->data[c] = 0.3f * c;
                a.rv->data[c] = 1.0f + c;
            }
            sstc_tensor *in[] = {x, randp(1, (int[]){C}, 1), randp(1, (int[]){C}, 1)};
            char what[64];
            snprintf(what, sizeof what, "batchnorm %s %s", d4 ? "2d" : "1d", training ? "train" : "eval");
            gradcheck(f_bn, in, 3, &a, what);
        }
    }
}

struct drop_args { sstc_rng r; };
static sstc_tensor *f_dropout(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct drop_args *a = u;
    sstc_rng_seed(&a->r, 5); /* same mask on every evaluation */
    sstc_ctx_set_rng(c, &a->r);
    sstc_ctx_set_training(c, 1);
    return sstc_dropout(c, in[0], 0.4f);
}
Test(ops, dropout_gradient_matches_finite_differences) {
    struct drop_args a;
    sstc_tensor *in[] = {randp(2, (int[]){6, 7}, 1)};
    gradcheck(f_dropout, in, 1, &a, "dropout");
}

static sstc_tensor *f_reshape(sstc_ctx *c, sstc_tensor **in, void *u) {
    return sstc_mul(c, sstc_flatten(c, in[0]), sstc_reshape(c, in[1], 2, (int[]){2, 12}));
}
static sstc_tensor *f_sum(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_sum(c, in[0]); }
static sstc_tensor *f_mean(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_mean(c, in[0]); }
Test(ops, reshape_sum_mean_gradients_match_finite_differences) {
    sstc_tensor *in[] = {randp(4, (int[]){2, 3, 2, 2}, 1), randp(3, (int[]){4, 3, 2}, 1)};
    gradcheck(f_reshape, in, 2, NULL, "reshape/flatten");
    gradcheck(f_sum, in, 1, NULL, "sum");
    gradcheck(f_mean, in, 1, NULL, "mean");
}

static const int ce_labels[] = {2, 0, 4, 4};
static sstc_tensor *f_ce(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_softmax_ce(c, in[0], ce_labels); }
static sstc_tensor *f_ce_smooth(sstc_ctx *c, sstc_tensor **in, void *u) {
    return sstc_softmax_ce_smooth(c, in[0], ce_labels, 0.2f);
}
Test(ops, softmax_ce_gradient_matches_finite_differences) {
    sstc_tensor *in[] = {randp(2, (int[]){4, 5}, 2)};
    gradcheck(f_ce, in, 1, NULL, "softmax_ce");
    gradcheck(f_ce_smooth, in, 1, NULL, "softmax_ce with label smoothing 0.2");
}

/* ---- PyTorch references ---- */

static void run_ref(const char *name, fx_file *f, sstc_ctx *ctx, sstc_tensor *y, sstc_tensor **srcs,
                    const char **gnames, int n) {
    fx_array *r = fx_get(f, "r"), *yr = fx_get(f, "y");
    cr_assert_not_null(y, "%s: %s", name, sstc_errmsg());
    cr_assert_eq(y->size, yr->n);
    expect_close(y->data, yr->v, yr->n, 1e-5f, 1e-4f, "y");
    sstc_tensor *rt = sstc_tensor_wrap(ctx, r->v, y->ndim, y->shape);
    cr_assert_eq(sstc_backward(ctx, sstc_sum(ctx, sstc_mul(ctx, y, rt))), 0, "%s", sstc_errmsg());
    for (int i = 0; i < n; i++) {
        fx_array *g = fx_get(f, gnames[i]);
        cr_assert_eq(srcs[i]->size, g->n);
        expect_close(srcs[i]->grad, g->v, g->n, 1e-4f, 1e-4f, gnames[i]);
    }
}

Test(ops, linear_matches_pytorch) {
    fx_file f;
    fx_load(&f, "linear");
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *x = fx_tensor(P, fx_get(&f, "x"), 1), *w = fx_tensor(P, fx_get(&f, "w"), 1),
                *b = fx_tensor(P, fx_get(&f, "b"), 1);
    run_ref("linear", &f, ctx, sstc_linear(ctx, x, w, b), (sstc_tensor *[]){x, w, b},
            (const char *[]){"dx", "dw", "db"}, 3);
    sstc_ctx_free(ctx);
    fx_free(&f);
}

Test(ops, conv2d_stride2_pad1_matches_pytorch) {
    fx_file f;
    fx_load(&f, "conv2d");
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *x = fx_tensor(P, fx_get(&f, "x"), 1), *w = fx_tensor(P, fx_get(&f, "w"), 1),
                *b = fx_tensor(P, fx_get(&f, "b"), 1);
    run_ref("conv2d", &f, ctx, sstc_conv2d(ctx, x, w, b, 2, 1), (sstc_tensor *[]){x, w, b},
            (const char *[]){"dx", "dw", "db"}, 3);
    sstc_ctx_free(ctx);
    fx_free(&f);
}

static void bn_ref(const char *name) {
    fx_file f;
    fx_load(&f, name);
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_ctx_set_training(ctx, 1);
    sstc_tensor *x = fx_tensor(P, fx_get(&f, "x"), 1), *g = fx_tensor(P, fx_get(&f, "gamma"), 1),
                *b = fx_tensor(P, fx_get(&f, "beta"), 1);
    int C = x->shape[1];
    sstc_tensor *rm = sstc_tensor_1d(P, C), *rv = sstc_tensor_1d(P, C);
    sstc_tensor_fill(rv, 1.0f);
    sstc_tensor *y = sstc_batchnorm(ctx, x, g, b, rm, rv, 0.1f, 1e-5f);
    run_ref(name, &f, ctx, y, (sstc_tensor *[]){x, g, b}, (const char *[]){"dx", "dgamma", "dbeta"}, 3);
    expect_close(rm->data, fx_get(&f, "running_mean")->v, (size_t)C, 1e-6f, 1e-5f, "running_mean");
    expect_close(rv->data, fx_get(&f, "running_var")->v, (size_t)C, 1e-6f, 1e-5f, "running_var");
    sstc_ctx_free(ctx);
    fx_free(&f);
}
Test(ops, batchnorm2d_training_matches_pytorch) { bn_ref("batchnorm2d"); }
Test(ops, batchnorm1d_training_matches_pytorch) { bn_ref("batchnorm1d"); }

Test(ops, maxpool2d_k3_s2_p1_matches_pytorch) {
    fx_file f;
    fx_load(&f, "maxpool2d");
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *x = fx_tensor(P, fx_get(&f, "x"), 1);
    run_ref("maxpool2d", &f, ctx, sstc_maxpool2d(ctx, x, 3, 2, 1), (sstc_tensor *[]){x},
            (const char *[]){"dx"}, 1);
    sstc_ctx_free(ctx);
    fx_free(&f);
}

Test(ops, softmax_ce_matches_pytorch_on_large_logits) {
    fx_file f;
    fx_load(&f, "softmax_ce");
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *z = fx_tensor(P, fx_get(&f, "logits"), 1);
    fx_array *la = fx_get(&f, "labels");
    int labels[16];
    for (size_t i = 0; i < la->n; i++) labels[i] = (int)la->v[i];
    sstc_tensor *loss = sstc_softmax_ce(ctx, z, labels);
    cr_assert_not_null(loss);
    cr_assert(isfinite(loss->data[0]));
    expect_close(loss->data, fx_get(&f, "loss")->v, 1, 1e-4f, 1e-5f, "loss");
    cr_assert_eq(sstc_backward(ctx, loss), 0);
    fx_array *g = fx_get(&f, "dlogits");
    expect_close(z->grad, g->v, g->n, 1e-6f, 1e-4f, "dlogits");
    /* label smoothing 0.1, the same logits */
    sstc_ctx_reset(ctx);
    sstc_tensor *z2 = fx_tensor(P, fx_get(&f, "logits"), 1);
    sstc_tensor *loss2 = sstc_softmax_ce_smooth(ctx, z2, labels, 0.1f);
    cr_assert_not_null(loss2);
    expect_close(loss2->data, fx_get(&f, "loss_smooth")->v, 1, 1e-4f, 1e-5f, "loss, smoothing 0.1");
    cr_assert_eq(sstc_backward(ctx, loss2), 0);
    fx_array *g2 = fx_get(&f, "dlogits_smooth");
    expect_close(z2->grad, g2->v, g2->n, 1e-6f, 1e-4f, "dlogits, smoothing 0.1");
    /* smoothing 0 is plain cross-entropy, bit for bit */
    sstc_ctx_reset(ctx);
    sstc_tensor *a = sstc_softmax_ce(ctx, z, labels), *b = sstc_softmax_ce_smooth(ctx, z, labels, 0.0f);
    cr_assert_eq(memcmp(a->data, b->data, sizeof(float)), 0);
    cr_assert_null(sstc_softmax_ce_smooth(ctx, z, labels, 1.0f));
    cr_assert_null(sstc_softmax_ce_smooth(ctx, z, labels, -0.1f));
    sstc_ctx_free(ctx);
    fx_free(&f);
}

/* ---- errors ---- */

Test(ops, shape_mismatch_names_op_and_shapes) {
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *a = sstc_tensor_2d(ctx, 3, 4), *b = sstc_tensor_2d(ctx, 5, 6);
    cr_assert_null(sstc_matmul(ctx, a, b));
    cr_assert_eq(sstc_errcode(), SSTC_ESHAPE);
    cr_assert_not_null(strstr(sstc_errmsg(), "matmul"));
    cr_assert_not_null(strstr(sstc_errmsg(), "(3,4)"));
    cr_assert_not_null(strstr(sstc_errmsg(), "(5,6)"));
    cr_assert_null(sstc_conv2d(ctx, a, b, NULL, 1, 0));
    cr_assert_not_null(strstr(sstc_errmsg(), "conv2d"));
    sstc_ctx_free(ctx);
}

Test(ops, null_input_propagates_first_error) {
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *a = sstc_tensor_2d(ctx, 3, 4), *b = sstc_tensor_2d(ctx, 5, 6);
    sstc_tensor *y = sstc_relu(ctx, sstc_add(ctx, a, b));
    cr_assert_null(y);
    cr_assert_not_null(strstr(sstc_errmsg(), "add"), "message: %s", sstc_errmsg());
    sstc_clear_error();
    cr_assert_null(sstc_relu(ctx, NULL));
    cr_assert_not_null(strstr(sstc_errmsg(), "relu"));
    sstc_ctx_free(ctx);
}

Test(ops, backward_before_forward_is_an_error) {
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *s = sstc_tensor_1d(ctx, 1);
    cr_assert_eq(sstc_backward(ctx, s), SSTC_ESTATE);
    cr_assert_not_null(strstr(sstc_errmsg(), "backward"));
    cr_assert_eq(sstc_backward(ctx, NULL), SSTC_EINVAL);
    sstc_ctx_free(ctx);
}

Test(ops, label_out_of_range_is_an_error) {
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *z = sstc_tensor_2d(ctx, 2, 3);
    cr_assert_null(sstc_softmax_ce(ctx, z, (int[]){1, 3}));
    cr_assert_not_null(strstr(sstc_errmsg(), "label 3"));
    sstc_ctx_free(ctx);
}

Test(ops, unknown_op_on_tape_is_an_error) {
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *x = sstc_param_new(P, 1, (int[]){3});
    sstc_tensor *y = sstc_sum(ctx, sstc_relu(ctx, x));
    cr_assert_not_null(y);
    y->op = SSTC_OP_COUNT; /* corrupt it */
    cr_assert_eq(sstc_backward(ctx, y), SSTC_ESTATE);
    cr_assert_not_null(strstr(sstc_errmsg(), "unknown op"));
    sstc_ctx_free(ctx);
}

static void reuse_without_new_allocations(int chunks);
Test(ops, reset_context_reuses_memory_without_new_allocations) { reuse_without_new_allocations(0); }
/* the same with the arena's fallback: malloc'd chunks, coalesced on reset */
Test(ops, reset_context_reuses_memory_without_new_allocations_in_chunks) {
    setenv("SSTC_ARENA_RESERVE", "0", 1);
    reuse_without_new_allocations(1);
    unsetenv("SSTC_ARENA_RESERVE");
}
static void reuse_without_new_allocations(int chunks) {
    sstc_ctx *ctx = sstc_ctx_create(4096);
    sstc_tensor *w = randp(2, (int[]){64, 64}, 1);
    for (int it = 0; it < 5; it++) {
        if (it == 2) {
            /* chunks: the 4 KB first chunk, more chunks, then one coalesced chunk
             * (2 allocations each) besides the tape (whether the reservation
             * succeeds otherwise depends on the machine's limits: not checked) */
            if (chunks) cr_assert_geq(sstc_ctx_mallocs(ctx), 6, "expected the chunked arena");
            /* after two warm-up iterations the arena is one chunk of the right size */
            size_t before = sstc_ctx_mallocs(ctx);
            for (int j = 0; j < 3; j++) {
                sstc_ctx_reset(ctx);
                sstc_tensor *x = sstc_tensor_2d(ctx, 32, 64);
                sstc_tensor *l = sstc_mean(ctx, sstc_relu(ctx, sstc_linear(ctx, x, w, NULL)));
                cr_assert_eq(sstc_backward(ctx, l), 0);
            }
            cr_assert_eq(sstc_ctx_mallocs(ctx), before, "steady-state steps must not allocate");
            break;
        }
        sstc_ctx_reset(ctx);
        sstc_tensor *x = sstc_tensor_2d(ctx, 32, 64);
        sstc_tensor *l = sstc_mean(ctx, sstc_relu(ctx, sstc_linear(ctx, x, w, NULL)));
        cr_assert_eq(sstc_backward(ctx, l), 0);
    }
    sstc_ctx_free(ctx);
}

static sstc_tensor *f_cscale(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_channel_scale(c, in[0], in[1]); }
Test(ops, channel_scale_gradient_matches_finite_differences_2d_and_4d) {
    sstc_tensor *a[] = {randp(2, (int[]){3, 4}, 1), randp(1, (int[]){4}, 1)};
    gradcheck(f_cscale, a, 2, NULL, "channel_scale 2d");
    sstc_tensor *b[] = {randp(4, (int[]){2, 3, 2, 2}, 1), randp(1, (int[]){3}, 1)};
    gradcheck(f_cscale, b, 2, NULL, "channel_scale 4d");
}

/* ---- ops for skip connections ---- */

static sstc_tensor *f_gap(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_global_avgpool(c, in[0]); }
Test(ops, global_avgpool_gradient_matches_finite_differences) {
    sstc_tensor *in[] = {randp(4, (int[]){3, 4, 5, 3}, 1)};
    gradcheck(f_gap, in, 1, NULL, "global_avgpool");
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *y = sstc_global_avgpool(ctx, in[0]);
    cr_assert_not_null(y, "%s", sstc_errmsg());
    cr_assert_eq(y->ndim, 2);
    cr_assert_eq(y->shape[0], 3);
    cr_assert_eq(y->shape[1], 4);
    double s = 0;
    for (int i = 0; i < 15; i++) s += in[0]->data[15 + i]; /* sample 0, channel 1 */
    cr_expect_float_eq(y->data[1], s / 15, 1e-6);
    cr_assert_null(sstc_global_avgpool(ctx, sstc_tensor_2d(ctx, 2, 3)));
    cr_assert_not_null(strstr(sstc_errmsg(), "expected (B,C,H,W)"), "%s", sstc_errmsg());
    sstc_ctx_free(ctx);
}

static sstc_tensor *f_concat3(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_concat(c, 3, in); }
/* the same tensor twice, between two others: its gradient is the sum of both slices */
static sstc_tensor *f_concat_repeat(sstc_ctx *c, sstc_tensor **in, void *u) {
    return sstc_concat(c, 4, (sstc_tensor *[]){in[0], in[1], in[0], in[2]});
}
Test(ops, concat_gradients_match_finite_differences_2d_4d_and_repeated_inputs) {
    sstc_tensor *a[] = {randp(2, (int[]){3, 2}, 1), randp(2, (int[]){3, 4}, 1), randp(2, (int[]){3, 1}, 1)};
    gradcheck(f_concat3, a, 3, NULL, "concat 2d");
    sstc_tensor *b[] = {randp(4, (int[]){2, 3, 3, 2}, 1), randp(4, (int[]){2, 1, 3, 2}, 1),
                        randp(4, (int[]){2, 2, 3, 2}, 1)};
    gradcheck(f_concat3, b, 3, NULL, "concat 4d");
    gradcheck(f_concat_repeat, b, 3, NULL, "concat with a repeated input");
}

Test(ops, concat_puts_channels_in_list_order_and_checks_shapes) {
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *a = sstc_tensor_4d(ctx, 2, 1, 1, 2), *b = sstc_tensor_4d(ctx, 2, 2, 1, 2);
    for (int i = 0; i < 4; i++) a->data[i] = (float)(10 + i);
    for (int i = 0; i < 8; i++) b->data[i] = (float)(20 + i);
    sstc_tensor *y = sstc_concat(ctx, 2, (sstc_tensor *[]){b, a});
    cr_assert_not_null(y, "%s", sstc_errmsg());
    cr_assert_eq(y->shape[1], 3);
    float want[] = {20, 21, 22, 23, 10, 11, /* sample 0 */ 24, 25, 26, 27, 12, 13};
    for (int i = 0; i < 12; i++) cr_expect_eq(y->data[i], want[i], "y[%d] = %g, expected %g", i, y->data[i], want[i]);
    sstc_tensor *c = sstc_tensor_4d(ctx, 2, 1, 2, 2);
    cr_assert_null(sstc_concat(ctx, 2, (sstc_tensor *[]){a, c}));
    cr_assert_not_null(strstr(sstc_errmsg(), "(2,1,1,2)"), "%s", sstc_errmsg());
    cr_assert_not_null(strstr(sstc_errmsg(), "(2,1,2,2)"), "%s", sstc_errmsg());
    cr_assert_null(sstc_concat(ctx, 0, (sstc_tensor *[]){a}));
    sstc_ctx_free(ctx);
}

/* A tensor read by two ops gets the sum of both gradients (the fan-out of a
 * residual connection): a feeds the mul and the add, and is added to itself. */
static sstc_tensor *f_fanout(sstc_ctx *c, sstc_tensor **in, void *u) {
    sstc_tensor *r = sstc_relu(c, in[0]);
    return sstc_add(c, sstc_mul(c, r, in[1]), sstc_add(c, r, r));
}
Test(ops, gradients_of_a_tensor_read_twice_accumulate) {
    sstc_tensor *x = sstc_param_new(P, 2, (int[]){3, 4});
    fill_away_from_zero(x, &rng);
    sstc_tensor *in[] = {x, randp(2, (int[]){3, 4}, 1)};
    gradcheck(f_fanout, in, 2, NULL, "fan-out");
    /* and exactly: d/dx sum(relu(x) + relu(x)) = 2 where x > 0 */
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_zero_grad(x);
    sstc_tensor *r = sstc_relu(ctx, x);
    cr_assert_eq(sstc_backward(ctx, sstc_sum(ctx, sstc_add(ctx, r, r))), 0, "%s", sstc_errmsg());
    for (size_t i = 0; i < x->size; i++) cr_expect_eq(x->grad[i], x->data[i] > 0 ? 2.0f : 0.0f);
    sstc_ctx_free(ctx);
}

/* 1x1 convolutions with stride 2 and no padding: the projection shortcut of a
 * residual network's downsampling block, on even and odd input sizes. */
Test(ops, conv2d_1x1_stride2_gradient_matches_finite_differences) {
    struct conv_args a = {2, 0};
    int sizes[][2] = {{6, 6}, {7, 5}};
    for (int k = 0; k < 2; k++) {
        sstc_tensor *in[] = {randp(4, (int[]){2, 3, sizes[k][0], sizes[k][1]}, 1), randp(4, (int[]){4, 3, 1, 1}, 0.5f),
                             randp(1, (int[]){4}, 1)};
        gradcheck(f_conv, in, 3, &a, "conv2d 1x1 stride 2");
        sstc_ctx *ctx = sstc_ctx_create(0);
        sstc_tensor *y = f_conv(ctx, in, &a);
        cr_assert_eq(y->shape[2], (sizes[k][0] + 1) / 2);
        cr_assert_eq(y->shape[3], (sizes[k][1] + 1) / 2);
        /* output (b,o,i,j) = sum_c w[o,c] x[b,c,2i,2j] + bias[o] */
        int H = sizes[k][0], W = sizes[k][1], OH = y->shape[2], OW = y->shape[3];
        for (int b = 0; b < 2; b++)
            for (int o = 0; o < 4; o++)
                for (int i = 0; i < OH; i++)
                    for (int j = 0; j < OW; j++) {
                        double s = in[2]->data[o];
                        for (int c = 0; c < 3; c++)
                            s += (double)in[1]->data[o * 3 + c] * in[0]->data[((b * 3 + c) * H + 2 * i) * W + 2 * j];
                        float got = y->data[((b * 4 + o) * OH + i) * OW + j];
                        cr_expect(fabs(got - s) < 1e-5, "y[%d,%d,%d,%d] = %g, expected %g", b, o, i, j, got, s);
                    }
        sstc_ctx_free(ctx);
    }
}

/* ---- a tensor used twice: every backward rule adds into an existing gradient ---- */

static sstc_tensor *f_matmul_twice(sstc_ctx *c, sstc_tensor **in, void *u) {
    return sstc_matmul(c, in[0], sstc_matmul(c, in[0], in[1])); /* a (a b): a gets two contributions */
}
static sstc_tensor *f_linear_twice(sstc_ctx *c, sstc_tensor **in, void *u) {
    return sstc_linear(c, sstc_relu(c, sstc_linear(c, in[0], in[1], in[2])), in[1], in[2]); /* same W and b twice */
}
static sstc_tensor *f_conv_twice(sstc_ctx *c, sstc_tensor **in, void *u) {
    return sstc_conv2d(c, sstc_conv2d(c, in[0], in[1], in[2], 1, 1), in[1], in[2], 1, 1); /* C_in = C_out */
}
static sstc_tensor *f_concat_twice(sstc_ctx *c, sstc_tensor **in, void *u) {
    sstc_tensor *xs[3] = {in[0], in[1], in[0]};
    return sstc_concat(c, 3, xs);
}
Test(ops, gradients_of_a_tensor_used_twice_match_finite_differences) {
    sstc_tensor *mm[] = {randp(2, (int[]){4, 4}, 1), randp(2, (int[]){4, 3}, 1)};
    gradcheck(f_matmul_twice, mm, 2, NULL, "matmul twice");
    sstc_tensor *li[] = {randp(2, (int[]){3, 5}, 1), randp(2, (int[]){5, 5}, 0.7f), randp(1, (int[]){5}, 0.3f)};
    gradcheck(f_linear_twice, li, 3, NULL, "linear twice");
    sstc_tensor *cv[] = {randp(4, (int[]){2, 3, 5, 5}, 1), randp(4, (int[]){3, 3, 3, 3}, 0.5f), randp(1, (int[]){3}, 0.3f)};
    gradcheck(f_conv_twice, cv, 3, NULL, "conv twice");
    sstc_tensor *ct[] = {randp(4, (int[]){2, 2, 3, 3}, 1), randp(4, (int[]){2, 1, 3, 3}, 1)};
    gradcheck(f_concat_twice, ct, 2, NULL, "concat twice");
}

/* ReLU's gradient at exactly 0 is 0 (PyTorch's convention); finite
 * differences cannot see a kink, so this is checked directly. */
Test(ops, relu_gradient_at_exactly_zero_is_zero) {
    sstc_tensor *x = randp(1, (int[]){4}, 1);
    const float v[4] = {-1.0f, 0.0f, -0.0f, 2.0f};
    memcpy(x->data, v, sizeof v);
    sstc_ctx *c = sstc_ctx_create(1 << 16);
    /* both paths of the rule: into an existing gradient (x is a parameter)
     * and into a fresh one (the input of the ReLU is an intermediate result) */
    for (int fresh = 0; fresh < 2; fresh++) {
        sstc_ctx_reset(c);
        sstc_zero_grad(x);
        sstc_tensor *in = fresh ? sstc_scale(c, x, 1.0f) : x;
        cr_assert_eq(sstc_backward(c, sstc_sum(c, sstc_relu(c, in))), 0, "%s", sstc_errmsg());
        cr_assert(x->grad[0] == 0 && x->grad[1] == 0 && x->grad[2] == 0 && x->grad[3] == 1, "fresh %d: dx = %g %g %g %g",
                  fresh, x->grad[0], x->grad[1], x->grad[2], x->grad[3]);
    }
    sstc_ctx_free(c);
}

/* A batch large enough that the convolution's backward pass splits it over
 * several sgemm calls (and, with two threads, over the per-image path): the
 * weight gradient is the sum of the single-image gradients, and it adds to
 * a gradient already there. */
Test(ops, conv_weight_gradient_of_a_split_batch_is_the_sum_over_images) {
    int B = 9, C = 64, H = 32, OC = 64;
    sstc_tensor *x = randp(4, (int[]){B, C, H, H}, 1), *w = randp(4, (int[]){OC, C, 3, 3}, 0.05f);
    size_t wn = w->size, per = (size_t)C * H * H;
    double *sum = calloc(wn, sizeof(double));
    sstc_ctx *c = sstc_ctx_create(1 << 20);
    sstc_rng r;
    sstc_rng_seed(&r, 3);
    float *R = malloc((size_t)B * OC * H * H * sizeof(float));
    for (size_t i = 0; i < (size_t)B * OC * H * H; i++) R[i] = sstc_rng_normal(&r);
    for (int b = 0; b < B; b++) {
        sstc_ctx_reset(c);
        sstc_tensor *xb = sstc_tensor_wrap(c, x->data + b * per, 4, (int[]){1, C, H, H});
        sstc_tensor *Rb = sstc_tensor_wrap(c, R + (size_t)b * OC * H * H, 4, (int[]){1, OC, H, H});
        sstc_zero_grad(w);
        cr_assert_eq(sstc_backward(c, sstc_sum(c, sstc_mul(c, sstc_conv2d(c, xb, w, NULL, 1, 1), Rb))), 0);
        for (size_t i = 0; i < wn; i++) sum[i] += w->grad[i];
    }
    for (int threads = 1; threads <= 2; threads++) {
        sstc_set_threads(threads);
        sstc_ctx_reset(c);
        sstc_tensor *Rt = sstc_tensor_wrap(c, R, 4, (int[]){B, OC, H, H});
        for (size_t i = 0; i < wn; i++) w->grad[i] = 1.0f; /* an existing gradient */
        cr_assert_eq(sstc_backward(c, sstc_sum(c, sstc_mul(c, sstc_conv2d(c, x, w, NULL, 1, 1), Rt))), 0);
        for (size_t i = 0; i < wn; i++)
            cr_assert_leq(fabs(w->grad[i] - 1.0 - sum[i]), 1e-3 * (1 + fabs(sum[i])), "threads %d, dw[%zu] %g, want %g",
                          threads, i, w->grad[i] - 1.0, sum[i]);
    }
    sstc_set_threads(1);
    free(sum), free(R);
    sstc_ctx_free(c);
}

/* ---- distillation ---- */

static float distill_p[4 * 5];
static sstc_tensor *f_distill(sstc_ctx *c, sstc_tensor **in, void *u) { return sstc_distill_kl(c, in[0], distill_p, 2.5f); }
Test(ops, distillation_gradient_matches_finite_differences) {
    float t[4 * 5];
    for (int i = 0; i < 20; i++) t[i] = sstc_rng_normal(&rng) * 2;
    sstc_softmax_temperature(t, 4, 5, 2.5f, distill_p);
    for (int b = 0; b < 4; b++) {
        double s = 0;
        for (int c = 0; c < 5; c++) s += distill_p[b * 5 + c];
        cr_assert(fabs(s - 1) < 1e-6, "row %d of the teacher's probabilities sums to %g", b, s);
    }
    sstc_tensor *in[] = {randp(2, (int[]){4, 5}, 2)};
    gradcheck(f_distill, in, 1, NULL, "distillation, T = 2.5");
    /* a student equal to the teacher: zero loss, zero gradient */
    memcpy(in[0]->data, t, sizeof t);
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *l = sstc_distill_kl(ctx, in[0], distill_p, 2.5f);
    cr_assert_not_null(l);
    cr_assert_leq(fabsf(l->data[0]), 1e-6f, "KL of equal distributions: %g", l->data[0]);
    cr_assert_null(sstc_distill_kl(ctx, in[0], distill_p, 0.0f), "temperature 0 is refused");
    sstc_ctx_free(ctx);
}

Test(ops, distillation_matches_pytorch_kl_div) {
    fx_file f;
    fx_load(&f, "distill");
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *z = fx_tensor(P, fx_get(&f, "logits"), 1);
    fx_array *p = fx_get(&f, "teacher_probs");
    sstc_tensor *loss = sstc_distill_kl(ctx, z, p->v, 3.0f);
    cr_assert_not_null(loss, "%s", sstc_errmsg());
    expect_close(loss->data, fx_get(&f, "loss")->v, 1, 1e-5f, 1e-4f, "loss");
    cr_assert_eq(sstc_backward(ctx, loss), 0);
    fx_array *g = fx_get(&f, "dlogits");
    expect_close(z->grad, g->v, g->n, 1e-6f, 1e-4f, "dlogits");
    sstc_ctx_free(ctx);
    fx_free(&f);
}
