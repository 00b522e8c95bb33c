/* Parameter gradients accumulate: a weight read by two ops in one graph gets
 * the sum of both ops' gradients, and a second backward pass without zeroing
 * adds to the first (gradient accumulation on purpose). Checked for the
 * linear and convolution weights (im2col and Winograd paths, one and two
 * threads), by finite differences and against the same graph with the weight
 * split into two separate copies. */
#include "../test_util.h"
#include "core/internal.h"

static sstc_ctx *P;
static sstc_rng rng;

static void setup(void) {
    P = sstc_ctx_create(1 << 22);
    sstc_rng_seed(&rng, 21);
    sstc_clear_error();
}
static void teardown(void) {
    sstc_ctx_free(P);
    sstc_conv_set_algo(SSTC_CONV_AUTO);
    sstc_set_threads(1);
}

TestSuite(grad_accum, .init = setup, .fini = teardown);

static sstc_tensor *randp(int ndim, const int *shape, float scale) {
    sstc_tensor *t = sstc_param_new(P, ndim, shape);
    fill_normal(t, &rng, scale);
    return t;
}

static sstc_tensor *copy_param(const sstc_tensor *t) {
    sstc_tensor *c = sstc_param_new(P, t->ndim, t->shape);
    memcpy(c->data, t->data, t->size * sizeof(float));
    return c;
}

/* ---- one weight, two uses ---------------------------------------------- */

/* y = linear(relu(linear(x, w1, b1)), w2, b2), w square */
static sstc_tensor *f_lin2(sstc_ctx *c, sstc_tensor **in, void *u) {
    sstc_tensor **w = u ? (sstc_tensor **)u : (sstc_tensor *[]){in[1], in[2], in[1], in[2]};
    return sstc_linear(c, sstc_relu(c, sstc_linear(c, in[0], w[0], w[1])), w[2], w[3]);
}
Test(grad_accum, linear_weight_used_twice_matches_finite_differences) {
    sstc_tensor *in[] = {randp(2, (int[]){4, 5}, 1), randp(2, (int[]){5, 5}, 0.7f), randp(1, (int[]){5}, 0.5f)};
    gradcheck(f_lin2, in, 3, NULL, "linear used twice");
}

struct conv_args { int stride, pad; };
static sstc_tensor *f_conv2(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct conv_args *a = u;
    sstc_tensor *h = sstc_relu(c, sstc_conv2d(c, in[0], in[1], NULL, a->stride, a->pad));
    return sstc_conv2d(c, h, in[1], NULL, a->stride, a->pad);
}
Test(grad_accum, conv_weight_used_twice_matches_finite_differences) {
    struct conv_args a = {1, 1};
    sstc_tensor *in[] = {randp(4, (int[]){2, 3, 5, 5}, 1), randp(4, (int[]){3, 3, 3, 3}, 0.4f)};
    gradcheck(f_conv2, in, 2, &a, "conv2d used twice");
}

/* The gradient of sum(y * r) in a fresh context, into the inputs' grads
 * (zeroed first). */
static void grad_of(sstc_tensor *(*f)(sstc_ctx *, sstc_tensor **, void *), sstc_tensor **in, int nin,
                    void *u, const sstc_tensor *r) {
    sstc_ctx *ctx = sstc_ctx_create(1 << 20);
    for (int k = 0; k < nin; k++) sstc_zero_grad(in[k]);
    sstc_tensor *y = f(ctx, in, u);
    cr_assert_not_null(y, "%s", sstc_errmsg());
    cr_assert_eq(y->size, r->size);
    sstc_tensor *rt = sstc_tensor_wrap(ctx, r->data, y->ndim, y->shape);
    cr_assert_eq(sstc_backward(ctx, sstc_sum(ctx, sstc_mul(ctx, y, rt))), 0, "%s", sstc_errmsg());
    sstc_ctx_free(ctx);
}

/* |a - (b + c)| within a few float roundings of the terms' magnitude */
static void expect_sum(const float *a, const float *b, const float *c, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++) {
        float tol = 1e-6f * (fabsf(b[i]) + fabsf(c[i])) + 1e-7f;
        cr_expect(fabsf(a[i] - (b[i] + c[i])) <= tol, "%s[%zu]: %.8g, the two uses give %.8g + %.8g", what, i,
                  (double)a[i], (double)b[i], (double)c[i]);
        if (fabsf(a[i] - (b[i] + c[i])) > tol) return;
    }
}

Test(grad_accum, linear_weight_used_twice_gets_the_sum_of_both_uses) {
    sstc_tensor *x = randp(2, (int[]){16, 64}, 1), *w = randp(2, (int[]){64, 64}, 0.2f),
                *b = randp(1, (int[]){64}, 0.1f);
    sstc_tensor *r = randp(2, (int[]){16, 64}, 1);
    sstc_tensor *w1 = copy_param(w), *w2 = copy_param(w), *b1 = copy_param(b), *b2 = copy_param(b);
    grad_of(f_lin2, (sstc_tensor *[]){x, w, b}, 3, NULL, r);
    sstc_tensor *split[] = {w1, b1, w2, b2};
    grad_of(f_lin2, (sstc_tensor *[]){x, w1, b1, w2, b2}, 5, split, r);
    expect_sum(w->grad, w1->grad, w2->grad, w->size, "dw");
    expect_sum(b->grad, b1->grad, b2->grad, b->size, "db");
}

/* in: x, w (first use), w (second use) */
static sstc_tensor *f_conv_split(sstc_ctx *c, sstc_tensor **in, void *u) {
    sstc_tensor *h = sstc_relu(c, sstc_conv2d(c, in[0], in[1], NULL, 1, 1));
    return sstc_conv2d(c, h, in[2], NULL, 1, 1);
}
static sstc_tensor *f_conv_twice(sstc_ctx *c, sstc_tensor **in, void *u) {
    return f_conv_split(c, (sstc_tensor *[]){in[0], in[1], in[1]}, u);
}

Test(grad_accum, conv_weight_used_twice_gets_the_sum_on_every_path) {
    /* 4 channels on 6x6: im2col; 16 channels on 8x8: Winograd under auto */
    int shapes[2][2] = {{4, 6}, {16, 8}};
    sstc_conv_algo algos[] = {SSTC_CONV_AUTO, SSTC_CONV_IM2COL, SSTC_CONV_WINOGRAD};
    for (int s = 0; s < 2; s++)
        for (int a = 0; a < 3; a++)
            for (int threads = 1; threads <= 2; threads++) {
                int C = shapes[s][0], H = shapes[s][1];
                sstc_conv_set_algo(algos[a]);
                sstc_set_threads(threads);
                sstc_tensor *x = randp(4, (int[]){3, C, H, H}, 1), *w = randp(4, (int[]){C, C, 3, 3}, 0.3f);
                sstc_tensor *r = randp(4, (int[]){3, C, H, H}, 1);
                sstc_tensor *w1 = copy_param(w), *w2 = copy_param(w);
                grad_of(f_conv_twice, (sstc_tensor *[]){x, w}, 2, NULL, r);
                grad_of(f_conv_split, (sstc_tensor *[]){x, w1, w2}, 3, NULL, r);
                char what[64];
                snprintf(what, sizeof what, "dw (C=%d, %dx%d, algo %d, %d threads)", C, H, H, a, threads);
                expect_sum(w->grad, w1->grad, w2->grad, w->size, what);
            }
}

/* ---- two backward passes without zeroing --------------------------------- */

Test(grad_accum, second_backward_pass_adds_to_the_parameter_gradients) {
    for (int threads = 1; threads <= 2; threads++) {
        sstc_set_threads(threads);
        sstc_tensor *x = randp(4, (int[]){2, 16, 8, 8}, 1), *w = randp(4, (int[]){16, 16, 3, 3}, 0.3f);
        sstc_tensor *wl = randp(2, (int[]){10, 16 * 8 * 8}, 0.05f), *bl = randp(1, (int[]){10}, 0.1f);
        sstc_tensor *params[] = {w, wl, bl};
        float *once[3];
        for (int pass = 0; pass < 3; pass++) {
            /* pass 0: one backward; passes 1, 2: accumulate onto it without zeroing */
            sstc_ctx *ctx = sstc_ctx_create(1 << 20);
            if (pass == 0)
                for (int k = 0; k < 3; k++) sstc_zero_grad(params[k]);
            sstc_tensor *h = sstc_relu(ctx, sstc_conv2d(ctx, x, w, NULL, 1, 1));
            sstc_tensor *y = sstc_linear(ctx, sstc_flatten(ctx, h), wl, bl);
            cr_assert_eq(sstc_backward(ctx, sstc_sum(ctx, y)), 0, "%s", sstc_errmsg());
            sstc_ctx_free(ctx);
            for (int k = 0; k < 3; k++) {
                sstc_tensor *p = params[k];
                if (pass == 0) {
                    once[k] = malloc(p->size * sizeof(float));
                    memcpy(once[k], p->grad, p->size * sizeof(float));
                    continue;
                }
                /* (g + g) and (2g + g) are exact in float */
                for (size_t i = 0; i < p->size; i++)
                    cr_assert_eq(p->grad[i], (float)(pass + 1) * once[k][i],
                                 "param %d [%zu] after %d passes (%d threads): %.8g, expected %d x %.8g", k, i,
                                 pass + 1, threads, (double)p->grad[i], pass + 1, (double)once[k][i]);
            }
        }
        for (int k = 0; k < 3; k++) free(once[k]);
    }
}
