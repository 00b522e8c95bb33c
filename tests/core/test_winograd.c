/* Winograd convolution, F(2x2, 3x3) and F(4x4, 3x3): forward, input and
 * weight gradients against a direct convolution in double, finite differences
 * through the Winograd path, agreement with the im2col path, run-to-run
 * determinism, and the choice between the algorithms.
 *
 * Tolerance. Winograd computes each output from transformed values: sums and
 * differences of the inputs of a tile, of the 3x3 weights, and of the
 * products on the way back. Their rounding is relative to the magnitude of
 * the terms, not to the result (which cancels), so errors are bounded by
 * |err| <= tol * sum |terms|, where sum |terms| is the same convolution on
 * absolute values (for y: sum |w||x|; for dx: sum |w||dy|; for dw: sum
 * |x||dy|). Float32 rounding is 6e-8 per operation; F(2x2)'s transforms add
 * a few operations and grow the transformed values by at most 4x (inputs)
 * and 2.25x (weights); F(4x4)'s weigh values by up to 5 (inputs) and 8
 * (outputs) and grow them by up to 100x (inputs); the sgemms sum C (or
 * tiles) terms. Measured worst cases here: about 1e-6 (F(2x2)) and 1e-5
 * (F(4x4)) of the magnitude; the tests allow 1e-5 and 1e-4, while a wrong
 * transform or index is off by O(1) of the magnitude. */
#include "../test_util.h"
#include "core/internal.h"

static sstc_ctx *P;
static sstc_rng rng;
static int tile0; /* the default output tile side */

static void setup(void) {
    tile0 = sstc_wino_tile();
    P = sstc_ctx_create(1 << 20);
    sstc_rng_seed(&rng, 11);
    sstc_clear_error();
}
static void teardown(void) {
    sstc_ctx_free(P);
    sstc_conv_set_algo(SSTC_CONV_AUTO);
    sstc_wino_set_tile(tile0);
    sstc_set_threads(1);
}

TestSuite(winograd, .init = setup, .fini = teardown);

#define WINO_TOL2 1e-5
#define WINO_TOL4 1e-4
static double WINO_TOL = WINO_TOL2; /* of the tile size under test */

static void use_tile(int m) {
    sstc_wino_set_tile(m);
    cr_assert_eq(sstc_wino_tile(), m);
    WINO_TOL = m == 4 ? WINO_TOL4 : WINO_TOL2;
}

static sstc_tensor *randp(int ndim, const int *shape, float scale) {
    sstc_tensor *t = sstc_param_new(P, ndim, shape);
    fill_normal(t, &rng, scale);
    return t;
}

/* Direct convolution (stride 1, 3x3) in double: y, dx, dw for the upstream
 * gradient gy, and the magnitudes of their sums (the same sums of absolute
 * values). */
typedef struct {
    double *y, *dx, *dw, *my, *mdx, *mdw;
} direct_ref;

static direct_ref direct(const float *x, const float *w, const float *b, const float *gy, int B, int C, int H,
                         int W, int OC, int pad) {
    int OH = H + 2 * pad - 2, OW = W + 2 * pad - 2;
    size_t ny = (size_t)B * OC * OH * OW, nx = (size_t)B * C * H * W, nw = (size_t)OC * C * 9;
    direct_ref r = {calloc(ny, 8), calloc(nx, 8), calloc(nw, 8), calloc(ny, 8), calloc(nx, 8), calloc(nw, 8)};
    for (int n = 0; n < B; n++)
        for (int o = 0; o < OC; o++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    size_t yi = (((size_t)n * OC + o) * OH + oy) * OW + ox;
                    double acc = b ? b[o] : 0, mag = b ? fabs(b[o]) : 0, g = gy[yi];
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int iy = oy - pad + ky, ix = ox - pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                size_t xi = (((size_t)n * C + c) * H + iy) * W + ix;
                                size_t wi = (((size_t)o * C + c) * 3 + ky) * 3 + kx;
                                acc += (double)w[wi] * x[xi];
                                mag += fabs((double)w[wi] * x[xi]);
                                r.dx[xi] += (double)w[wi] * g;
                                r.mdx[xi] += fabs((double)w[wi] * g);
                                r.dw[wi] += (double)x[xi] * g;
                                r.mdw[wi] += fabs((double)x[xi] * g);
                            }
                    r.y[yi] = acc;
                    r.my[yi] = mag;
                }
    return r;
}

static void ref_free(direct_ref *r) {
    free(r->y), free(r->dx), free(r->dw), free(r->my), free(r->mdx), free(r->mdw);
}

/* |got - base - want| <= tol * mag (+ a floor for sums of nothing); returns
 * the largest error relative to the magnitude, so a test can report it. */
static double expect_within(const float *got, float base, const double *want, const double *mag, size_t n,
                            double tol, const char *what) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - base - want[i]), lim = tol * mag[i] + 1e-30;
        double rel = err / (mag[i] + 1e-30);
        if (rel > worst) worst = rel;
        cr_expect(err <= lim, "%s[%zu]: %.9g, expected %.9g (magnitude %.4g, tolerance %.3g)", what, i,
                  (double)got[i] - base, want[i], mag[i], lim);
        if (err > lim) break;
    }
    return worst;
}

struct wcase { int B, C, H, W, OC, pad; };

/* Forward and both gradients of one case through the Winograd path against
 * the direct double convolution. mode: 0 params (grads accumulated onto 0.5),
 * 1 an intermediate input (a fresh dX), 2 an input without gradient (the
 * first layer), 3 weights without gradient. */
static double check_case(struct wcase k, int threads, int mode, int with_bias) {
    sstc_set_threads(threads);
    sstc_conv_set_algo(SSTC_CONV_WINOGRAD);
    int B = k.B, C = k.C, H = k.H, W = k.W, OC = k.OC;
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *xp = randp(4, (int[]){B, C, H, W}, 1), *w = randp(4, (int[]){OC, C, 3, 3}, 0.5f);
    sstc_tensor *b = with_bias ? randp(1, (int[]){OC}, 1) : NULL;
    const float base = 0.5f;
    for (size_t i = 0; i < xp->size; i++) xp->grad[i] = base;
    for (size_t i = 0; i < w->size; i++) w->grad[i] = base;
    if (mode == 3) w->requires_grad = 0;
    sstc_tensor *x = xp;
    if (mode == 1) x = sstc_scale(ctx, xp, 1.0f);
    if (mode == 2) {
        x = sstc_tensor_new(ctx, 4, (int[]){B, C, H, W});
        memcpy(x->data, xp->data, xp->size * sizeof(float));
    }
    sstc_tensor *y = sstc_conv2d(ctx, x, w, b, 1, k.pad);
    cr_assert_not_null(y, "%s", sstc_errmsg());
    cr_assert_eq(y->shape[2], H + 2 * k.pad - 2);
    cr_assert_eq(y->shape[3], W + 2 * k.pad - 2);
    float *gy = malloc(y->size * sizeof(float));
    for (size_t i = 0; i < y->size; i++) gy[i] = sstc_rng_normal(&rng);
    sstc_tensor *loss = sstc_sum(ctx, sstc_mul(ctx, y, sstc_tensor_wrap(ctx, gy, y->ndim, y->shape)));
    cr_assert_eq(sstc_backward(ctx, loss), 0, "%s", sstc_errmsg());
    direct_ref r = direct(xp->data, w->data, b ? b->data : NULL, gy, B, C, H, W, OC, k.pad);
    char what[128];
    snprintf(what, sizeof what, "B%d C%d %dx%d OC%d pad %d, %d threads, mode %d: ", B, C, H, W, OC, k.pad,
             threads, mode);
    char w1[160];
    snprintf(w1, sizeof w1, "%sy", what);
    double worst = expect_within(y->data, 0, r.y, r.my, y->size, WINO_TOL, w1);
    if (mode != 2) {
        snprintf(w1, sizeof w1, "%sdx", what);
        double e = expect_within(xp->grad, base, r.dx, r.mdx, xp->size, WINO_TOL, w1);
        if (e > worst) worst = e;
    } else {
        for (size_t i = 0; i < xp->size; i++) cr_assert_eq(xp->grad[i], base);
    }
    if (mode != 3) {
        snprintf(w1, sizeof w1, "%sdw", what);
        double e = expect_within(w->grad, base, r.dw, r.mdw, w->size, WINO_TOL, w1);
        if (e > worst) worst = e;
    } else {
        for (size_t i = 0; i < w->size; i++) cr_assert_eq(w->grad[i], base);
    }
    ref_free(&r);
    free(gy);
    sstc_ctx_free(ctx);
    return worst;
}

Test(winograd, matches_direct_convolution_in_double) {
    struct wcase cases[] = {
        {3, 4, 7, 6, 5, 1},  {2, 3, 5, 9, 4, 0},  {2, 16, 9, 7, 8, 1}, {5, 8, 8, 8, 6, 0},
        {4, 5, 1, 1, 3, 1},  {3, 2, 3, 3, 2, 0},  {2, 3, 2, 5, 3, 1},  {2, 33, 4, 4, 17, 1},
        {9, 6, 16, 16, 4, 1}, {20, 4, 5, 4, 3, 1}, {3, 7, 11, 13, 9, 0}, {1, 12, 6, 10, 12, 1}};
    int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int m = 2; m <= 4; m += 2) {
        use_tile(m);
        double worst = 0;
        for (int threads = 1; threads <= 3; threads++)
            for (int k = 0; k < nc; k++) {
                int mode = (k + threads) % 4;
                double e = check_case(cases[k], threads, mode, k % 3 != 2);
                if (e > worst) worst = e;
            }
        cr_log_info("F(%dx%d,3x3) vs direct double: worst error %.3g of the magnitude (tolerance %.1g)", m, m, worst,
                    WINO_TOL);
        cr_expect(worst > 0, "no rounding at all: the Winograd path did not run");
    }
}

/* Larger channel counts: the magnitudes grow with C, and the relative bound holds. */
Test(winograd, matches_direct_convolution_with_many_channels) {
    struct wcase cases[] = {{2, 64, 8, 8, 32, 1}, {3, 128, 5, 7, 16, 1}, {2, 48, 9, 6, 64, 0}};
    for (int m = 2; m <= 4; m += 2) {
        use_tile(m);
        double worst = 0;
        for (int k = 0; k < 3; k++) {
            double e = check_case(cases[k], 2, k % 2, 1);
            if (e > worst) worst = e;
        }
        cr_log_info("F(%dx%d,3x3), many channels: worst error %.3g of the magnitude", m, m, worst);
    }
}

struct conv_args { int pad; };
static sstc_tensor *f_conv(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct conv_args *a = u;
    return sstc_conv2d(c, in[0], in[1], in[2], 1, a->pad);
}

Test(winograd, gradients_match_finite_differences) {
    sstc_conv_set_algo(SSTC_CONV_WINOGRAD);
    struct { int B, C, H, W, OC, pad; } cases[] = {{2, 3, 5, 6, 2, 1}, {2, 2, 5, 4, 3, 0}, {1, 3, 3, 1, 2, 1},
                                                   {2, 2, 7, 9, 2, 1}, {1, 2, 6, 6, 2, 0}, {1, 2, 5, 5, 2, 1}};
    for (int k = 0; k < 6; k++) {
        use_tile(k < 3 ? 2 : 4);
        struct conv_args a = {cases[k].pad};
        sstc_tensor *in[] = {randp(4, (int[]){cases[k].B, cases[k].C, cases[k].H, cases[k].W}, 1),
                             randp(4, (int[]){cases[k].OC, cases[k].C, 3, 3}, 0.5f),
                             randp(1, (int[]){cases[k].OC}, 1)};
        int OH = cases[k].H + 2 * cases[k].pad - 2, OW = cases[k].W + 2 * cases[k].pad - 2;
        cr_assert_eq(sstc_wino_applies(cases[k].C, cases[k].OC, OH, OW, 3, 3, 1, cases[k].pad), sstc_wino_tile());
        char what[80];
        snprintf(what, sizeof what, "winograd F(%d) conv %dx%d pad %d", sstc_wino_tile(), cases[k].H, cases[k].W,
                 cases[k].pad);
        gradcheck(f_conv, in, 3, &a, what);
    }
}

/* y, dx, dw of one convolution under the current algorithm, copied out. */
static void run_conv(sstc_tensor *x, sstc_tensor *w, sstc_tensor *b, const float *gy, int pad, float *y,
                     float *dx, float *dw) {
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_zero_grad(x);
    sstc_zero_grad(w);
    sstc_zero_grad(b);
    sstc_tensor *yt = sstc_conv2d(ctx, x, w, b, 1, pad);
    cr_assert_not_null(yt, "%s", sstc_errmsg());
    sstc_tensor *loss = sstc_sum(ctx, sstc_mul(ctx, yt, sstc_tensor_wrap(ctx, (float *)gy, 4, yt->shape)));
    cr_assert_eq(sstc_backward(ctx, loss), 0, "%s", sstc_errmsg());
    memcpy(y, yt->data, yt->size * sizeof(float));
    memcpy(dx, x->grad, x->size * sizeof(float));
    memcpy(dw, w->grad, w->size * sizeof(float));
    sstc_ctx_free(ctx);
}

/* Winograd against im2col on CIFAR-like layer shapes (small batch); the
 * magnitudes come from the im2col path run on absolute values. */
Test(winograd, agrees_with_im2col) {
    struct wcase cases[] = {{4, 64, 16, 16, 64, 1}, {8, 128, 8, 8, 128, 1}, {8, 256, 4, 4, 256, 1},
                            {3, 40, 9, 7, 24, 0}};
    sstc_set_threads(2);
    for (int run = 0; run < 8; run++) {
        int k = run % 4;
        use_tile(run < 4 ? 2 : 4);
        struct wcase c = cases[k];
        int OH = c.H + 2 * c.pad - 2, OW = c.W + 2 * c.pad - 2;
        sstc_tensor *x = randp(4, (int[]){c.B, c.C, c.H, c.W}, 1), *w = randp(4, (int[]){c.OC, c.C, 3, 3}, 0.1f),
                    *b = randp(1, (int[]){c.OC}, 1);
        sstc_tensor *ax = sstc_param_new(P, 4, x->shape), *aw = sstc_param_new(P, 4, w->shape),
                    *ab = sstc_param_new(P, 1, b->shape);
        for (size_t i = 0; i < x->size; i++) ax->data[i] = fabsf(x->data[i]);
        for (size_t i = 0; i < w->size; i++) aw->data[i] = fabsf(w->data[i]);
        for (size_t i = 0; i < b->size; i++) ab->data[i] = fabsf(b->data[i]);
        size_t ny = (size_t)c.B * c.OC * OH * OW;
        float *gy = malloc(ny * 4), *agy = malloc(ny * 4);
        for (size_t i = 0; i < ny; i++) gy[i] = sstc_rng_normal(&rng), agy[i] = fabsf(gy[i]);
        float *y[3], *dx[3], *dw[3]; /* im2col, winograd, magnitudes */
        for (int j = 0; j < 3; j++) {
            y[j] = malloc(ny * 4), dx[j] = malloc(x->size * 4), dw[j] = malloc(w->size * 4);
            sstc_conv_set_algo(j == 1 ? SSTC_CONV_WINOGRAD : SSTC_CONV_IM2COL);
            if (j < 2)
                run_conv(x, w, b, gy, c.pad, y[j], dx[j], dw[j]);
            else
                run_conv(ax, aw, ab, agy, c.pad, y[j], dx[j], dw[j]);
        }
        struct { const char *name; float **v; size_t n; } outs[] = {
            {"y", y, ny}, {"dx", dx, x->size}, {"dw", dw, w->size}};
        double worst = 0;
        for (int o = 0; o < 3; o++) {
            int bad = 0;
            for (size_t i = 0; i < outs[o].n && !bad; i++) {
                double err = fabs((double)outs[o].v[1][i] - outs[o].v[0][i]), mag = outs[o].v[2][i];
                if (err / (mag + 1e-30) > worst) worst = err / (mag + 1e-30);
                bad = err > WINO_TOL * mag + 1e-30;
                cr_expect(!bad, "case %d %s[%zu]: winograd %.9g, im2col %.9g (magnitude %.4g)", k, outs[o].name,
                          i, (double)outs[o].v[1][i], (double)outs[o].v[0][i], mag);
            }
        }
        cr_log_info("F(%d) case %d: winograd vs im2col worst %.3g of the magnitude", sstc_wino_tile(), k, worst);
        cr_expect(worst > 0, "case %d: identical results, the Winograd path did not run", k);
        for (int j = 0; j < 3; j++) free(y[j]), free(dx[j]), free(dw[j]);
        free(gy), free(agy);
    }
}

/* The same inputs give the same bits every run for a given thread count
 * (no atomics, per-thread weight gradients summed in thread order). */
Test(winograd, identical_results_run_to_run) {
    sstc_conv_set_algo(SSTC_CONV_WINOGRAD);
    for (int run = 0; run < 6; run++) {
        int threads = 1 + run % 3;
        use_tile(run < 3 ? 2 : 4);
        sstc_set_threads(threads);
        sstc_tensor *x = randp(4, (int[]){7, 24, 9, 10}, 1), *w = randp(4, (int[]){16, 24, 3, 3}, 0.2f),
                    *b = randp(1, (int[]){16}, 1);
        size_t ny = (size_t)7 * 16 * 9 * 10;
        float *gy = malloc(ny * 4);
        for (size_t i = 0; i < ny; i++) gy[i] = sstc_rng_normal(&rng);
        float *y[2], *dx[2], *dw[2];
        for (int r = 0; r < 2; r++) {
            y[r] = malloc(ny * 4), dx[r] = malloc(x->size * 4), dw[r] = malloc(w->size * 4);
            run_conv(x, w, b, gy, 1, y[r], dx[r], dw[r]);
        }
        cr_expect(!memcmp(y[0], y[1], ny * 4), "%d threads: y differs between runs", threads);
        cr_expect(!memcmp(dx[0], dx[1], x->size * 4), "%d threads: dx differs between runs", threads);
        cr_expect(!memcmp(dw[0], dw[1], w->size * 4), "%d threads: dw differs between runs", threads);
        for (int r = 0; r < 2; r++) free(y[r]), free(dx[r]), free(dw[r]);
        free(gy);
    }
}

Test(winograd, choice_of_algorithm) {
    sstc_conv_set_algo(SSTC_CONV_WINOGRAD);
    sstc_wino_set_tile(0); /* by the plane's size */
    cr_expect_eq(sstc_wino_applies(3, 64, 32, 32, 3, 3, 1, 1), 4);
    cr_expect_eq(sstc_wino_applies(8, 8, 7, 9, 3, 3, 1, 0), 2);
    cr_expect_eq(sstc_wino_applies(8, 8, 8, 8, 3, 3, 1, 0), 4);
    sstc_wino_set_tile(2);
    cr_expect_eq(sstc_wino_applies(3, 64, 32, 32, 3, 3, 1, 1), 2);
    sstc_wino_set_tile(4);
    cr_expect_eq(sstc_wino_applies(3, 64, 2, 2, 3, 3, 1, 1), 4);
    sstc_wino_set_tile(7);
    cr_expect_eq(sstc_wino_tile(), 0);
    /* never for other kernels, strides or pads */
    cr_expect_eq(sstc_wino_applies(64, 64, 16, 16, 3, 3, 2, 1), 0);
    cr_expect_eq(sstc_wino_applies(64, 64, 16, 16, 5, 5, 1, 2), 0);
    cr_expect_eq(sstc_wino_applies(64, 64, 16, 16, 1, 1, 1, 0), 0);
    cr_expect_eq(sstc_wino_applies(64, 64, 16, 16, 3, 1, 1, 1), 0);
    cr_expect_eq(sstc_wino_applies(64, 64, 18, 18, 3, 3, 1, 2), 0);
    sstc_conv_set_algo(SSTC_CONV_IM2COL);
    cr_expect_eq(sstc_wino_applies(256, 256, 8, 8, 3, 3, 1, 1), 0);
    sstc_conv_set_algo(SSTC_CONV_AUTO);
    cr_expect_eq(sstc_conv_get_algo(), SSTC_CONV_AUTO);
    /* auto: the layers of configs/cifar10_cnn.ini past the first (docs/performance.md) */
    cr_expect_eq(sstc_wino_applies(3, 64, 32, 32, 3, 3, 1, 1), 0);
    cr_expect_eq(sstc_wino_applies(64, 64, 16, 16, 3, 3, 1, 1), 4);
    cr_expect_eq(sstc_wino_applies(64, 128, 16, 16, 3, 3, 1, 1), 4);
    cr_expect_eq(sstc_wino_applies(128, 128, 8, 8, 3, 3, 1, 1), 4);
    cr_expect_eq(sstc_wino_applies(128, 256, 8, 8, 3, 3, 1, 1), 4);
    cr_expect_eq(sstc_wino_applies(256, 256, 4, 4, 3, 3, 1, 1), 2);
    /* ResNet-20's 16/32/64 channels; small layers stay on im2col */
    cr_expect_eq(sstc_wino_applies(16, 16, 32, 32, 3, 3, 1, 1), 4);
    cr_expect_eq(sstc_wino_applies(8, 8, 32, 32, 3, 3, 1, 1), 0);
    cr_expect_eq(sstc_wino_applies(32, 32, 4, 4, 3, 3, 1, 1), 0);
}
