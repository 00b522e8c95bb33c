/* Batch norm fused with the ReLU after it (sstc_batchnorm_relu): finite
 * differences in training and evaluation mode, 1-d and 2-d; the same values
 * and gradients as batch norm followed by ReLU (also when the input's
 * gradient is added to another op's); and whole models with the fusion on and
 * off (SSTC_FUSE), including a batch norm whose output a shortcut reads too,
 * which must not be fused. */
#include "../test_util.h"
#include "core/internal.h"
#include "sstc/layer.h"
#include "sstc/nn.h"

static sstc_ctx *P;
static sstc_rng rng;

static void setup(void) {
    P = sstc_ctx_create(1 << 22);
    sstc_rng_seed(&rng, 31);
    sstc_clear_error();
}
static void teardown(void) {
    sstc_ctx_free(P);
    sstc_set_fuse(1);
    sstc_set_threads(1);
}

TestSuite(bn_relu, .init = setup, .fini = teardown);

static sstc_tensor *randp(int ndim, const int *shape, float scale) {
    sstc_tensor *t = sstc_param_new(P, ndim, shape);
    fill_normal(t, &rng, scale);
    return t;
}

struct bn_args { sstc_tensor *rm, *rv; int training, fused; };
static sstc_tensor *f_bn_relu(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct bn_args *a = u;
    sstc_ctx_set_training(c, a->training);
    if (a->fused) return sstc_batchnorm_relu(c, in[0], in[1], in[2], a->rm, a->rv, 0.1f, 1e-5f);
    return sstc_relu(c, sstc_batchnorm(c, in[0], in[1], in[2], a->rm, a->rv, 0.1f, 1e-5f));
}

/* Inputs whose batch norm outputs keep at least `margin` from ReLU's kink. */
static void draw_away_from_kink(sstc_tensor **in, struct bn_args *a, float margin) {
    for (int tries = 0; tries < 1000; tries++) {
        fill_normal(in[0], &rng, 1.5f);
        fill_normal(in[1], &rng, 1.0f);
        fill_normal(in[2], &rng, 1.0f);
        sstc_ctx *c = sstc_ctx_create(1 << 16);
        sstc_ctx_set_training(c, a->training);
        /* a copy of the running statistics: drawing must not move them */
        sstc_tensor *rm = sstc_tensor_1d(c, (int)a->rm->size), *rv = sstc_tensor_1d(c, (int)a->rv->size);
        memcpy(rm->data, a->rm->data, rm->size * sizeof(float));
        memcpy(rv->data, a->rv->data, rv->size * sizeof(float));
        sstc_tensor *z = sstc_batchnorm(c, in[0], in[1], in[2], rm, rv, 0.1f, 1e-5f);
        cr_assert_not_null(z, "%s", sstc_errmsg());
        float mn = INFINITY;
        for (size_t i = 0; i < z->size; i++) mn = fminf(mn, fabsf(z->data[i]));
        sstc_ctx_free(c);
        if (mn >= margin) return;
    }
    cr_assert_fail("no inputs away from the kink");
}

Test(bn_relu, gradient_matches_finite_differences_training_and_eval) {
    for (int training = 1; training >= 0; training--)
        for (int d4 = 0; d4 < 2; d4++) {
            sstc_tensor *x = d4 ? randp(4, (int[]){3, 2, 3, 2}, 1.5f) : randp(2, (int[]){6, 3}, 1.5f);
            int C = x->shape[1];
            struct bn_args a = {sstc_tensor_1d(P, C), sstc_tensor_1d(P, C), training, 1};
            for (int c = 0; c < C; c++) {
                a.rm->data[c] = 0.3f * c;
                a.rv->data[c] = 1.0f + c;
            }
            sstc_tensor *in[] = {x, randp(1, (int[]){C}, 1), randp(1, (int[]){C}, 1)};
            draw_away_from_kink(in, &a, 0.05f);
            char what[64];
            snprintf(what, sizeof what, "batchnorm+relu %s %s", d4 ? "2d" : "1d", training ? "train" : "eval");
            gradcheck(f_bn_relu, in, 3, &a, what);
        }
}

/* Fused against the pair, on inputs with many outputs at or below zero (beta
 * negative in half of the channels). `shared`: x is an intermediate whose
 * gradient another op adds to as well (the non-fresh path). */
static void compare_ops(int ndim, const int *shape, int training, int threads, int shared) {
    sstc_set_threads(threads);
    int C = shape[1];
    float *dx[2], *dg[2], *db[2], *y[2], *rmv[2];
    sstc_tensor *x0 = randp(ndim, shape, 1.3f), *g = randp(1, (int[]){C}, 1), *b = randp(1, (int[]){C}, 0.7f);
    for (int c = 0; c < C; c += 2) b->data[c] = -fabsf(b->data[c]);
    sstc_tensor *r = randp(ndim, shape, 1);
    size_t n = x0->size;
    for (int fused = 0; fused < 2; fused++) {
        sstc_ctx *c = sstc_ctx_create(1 << 20);
        sstc_tensor *rm = sstc_tensor_1d(c, C), *rv = sstc_tensor_1d(c, C);
        for (int k = 0; k < C; k++) rm->data[k] = 0.1f * k, rv->data[k] = 1.0f + 0.2f * k;
        sstc_zero_grad(x0), sstc_zero_grad(g), sstc_zero_grad(b);
        sstc_ctx_set_training(c, training);
        sstc_tensor *x = shared ? sstc_scale(c, x0, 1.5f) : x0;
        struct bn_args a = {rm, rv, training, fused};
        sstc_tensor *out = f_bn_relu(c, (sstc_tensor *[]){x, g, b}, &a);
        cr_assert_not_null(out, "%s", sstc_errmsg());
        sstc_tensor *rt = sstc_tensor_wrap(c, r->data, out->ndim, out->shape);
        sstc_tensor *loss = sstc_sum(c, sstc_mul(c, out, rt));
        if (shared) loss = sstc_add(c, loss, sstc_sum(c, sstc_mul(c, x, x))); /* x read by a second op */
        cr_assert_eq(sstc_backward(c, loss), 0, "%s", sstc_errmsg());
        y[fused] = malloc(n * sizeof(float)), dx[fused] = malloc(n * sizeof(float));
        dg[fused] = malloc(C * sizeof(float)), db[fused] = malloc(C * sizeof(float));
        rmv[fused] = malloc(2 * C * sizeof(float));
        memcpy(y[fused], out->data, n * sizeof(float));
        memcpy(dx[fused], x0->grad, n * sizeof(float));
        memcpy(dg[fused], g->grad, C * sizeof(float));
        memcpy(db[fused], b->grad, C * sizeof(float));
        memcpy(rmv[fused], rm->data, C * sizeof(float));
        memcpy(rmv[fused] + C, rv->data, C * sizeof(float));
        sstc_ctx_free(c);
    }
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++) zeros += y[0][i] == 0.0f;
    cr_expect(zeros >= n / 20 && zeros <= n * 19 / 20, "%zu of %zu outputs clamped: not a mixed case", zeros, n);
    /* the same operations in the same order: equal up to the last bits */
    char what[96];
    snprintf(what, sizeof what, "%dd %s %d threads%s", ndim == 4 ? 2 : 1, training ? "train" : "eval", threads,
             shared ? " shared" : "");
    expect_close(y[1], y[0], n, 1e-7f, 1e-6f, what);
    expect_close(dx[1], dx[0], n, 1e-7f, 1e-6f, what);
    expect_close(dg[1], dg[0], C, 1e-6f, 1e-6f, what);
    expect_close(db[1], db[0], C, 1e-6f, 1e-6f, what);
    expect_close(rmv[1], rmv[0], 2 * C, 0, 0, what);
    for (int f = 0; f < 2; f++) free(y[f]), free(dx[f]), free(dg[f]), free(db[f]), free(rmv[f]);
}

Test(bn_relu, same_values_and_gradients_as_batchnorm_then_relu) {
    for (int threads = 1; threads <= 2; threads++)
        for (int training = 1; training >= 0; training--)
            for (int shared = 0; shared < 2; shared++) {
                compare_ops(4, (int[]){8, 6, 12, 12}, training, threads, shared); /* over PAR_MIN: parallel */
                compare_ops(4, (int[]){4, 3, 5, 5}, training, threads, shared);
                compare_ops(2, (int[]){64, 40}, training, threads, shared);
            }
}

/* ---- whole models ----------------------------------------------------------- */

/* conv bn relu conv bn relu | conv bn shortcut(-3: bn2, read twice) relu | gap fc */
static sstc_model *net(void) {
    sstc_model *m = sstc_model_create(3, (int[]){3, 8, 8});
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 6, 3, 1, 1, 0), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f), 0);
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0); /* 2: fused with 1 */
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 6, 3, 1, 1, 0), 0);
    cr_assert_eq(sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f), 0); /* 4: read by the shortcut at 8 */
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0);
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 6, 3, 1, 1, 0), 0);
    cr_assert_eq(sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f), 0);
    cr_assert_eq(sstc_model_add_shortcut(m, NULL, -4, SSTC_ACT_LINEAR), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0);
    cr_assert_eq(sstc_model_add_globalavgpool(m, NULL), 0);
    cr_assert_eq(sstc_model_add_linear(m, NULL, 4, 1), 0);
    return m;
}

Test(bn_relu, model_gives_the_same_loss_and_gradients_fused_or_not) {
    int labels[5] = {0, 1, 2, 3, 1};
    for (int threads = 1; threads <= 2; threads++)
        for (int training = 1; training >= 0; training--) {
            sstc_set_threads(threads);
            float loss[2], *grads[2];
            size_t total = 0;
            for (int fused = 0; fused < 2; fused++) {
                sstc_set_fuse(fused);
                sstc_model *m = net();
                sstc_rng r;
                sstc_rng_seed(&r, 5);
                sstc_model_init(m, SSTC_INIT_HE, &r);
                sstc_named_tensor nt[64];
                int nn = sstc_model_named_tensors(m, nt, 64);
                for (int i = 0; i < nn; i++) /* generic batch norm parameters and statistics */
                    if (nt[i].layer->kind == SSTC_LAYER_BATCHNORM)
                        for (size_t k = 0; k < nt[i].tensor->size; k++)
                            nt[i].tensor->data[k] += 0.3f * fabsf(sstc_rng_normal(&r));
                sstc_model_train(m, training);
                sstc_model_zero_grad(m);
                sstc_ctx *c = sstc_ctx_create(1 << 20);
                sstc_tensor *x = sstc_tensor_new(c, 4, (int[]){5, 3, 8, 8});
                fill_normal(x, &r, 1);
                sstc_tensor *l = sstc_softmax_ce(c, sstc_model_forward(m, c, x), labels);
                cr_assert_not_null(l, "%s", sstc_errmsg());
                cr_assert_eq(sstc_backward(c, l), 0, "%s", sstc_errmsg());
                loss[fused] = l->data[0];
                total = 0;
                for (int i = 0; i < nn; i++) total += nt[i].tensor->size * (nt[i].trainable ? 2 : 1);
                grads[fused] = malloc(total * sizeof(float));
                size_t off = 0;
                for (int i = 0; i < nn; i++) { /* values (running statistics updated) and gradients */
                    memcpy(grads[fused] + off, nt[i].tensor->data, nt[i].tensor->size * sizeof(float));
                    off += nt[i].tensor->size;
                    if (nt[i].trainable) {
                        memcpy(grads[fused] + off, nt[i].tensor->grad, nt[i].tensor->size * sizeof(float));
                        off += nt[i].tensor->size;
                    }
                }
                sstc_ctx_free(c);
                sstc_model_free(m);
            }
            cr_expect(fabsf(loss[1] - loss[0]) <= 1e-6f * fabsf(loss[0]), "loss %.8g fused, %.8g not (%s, %d threads)",
                      (double)loss[1], (double)loss[0], training ? "train" : "eval", threads);
            expect_close(grads[1], grads[0], total, 1e-7f, 1e-5f, training ? "model train" : "model eval");
            free(grads[0]), free(grads[1]);
        }
}

struct model_arg { sstc_model *m; sstc_tensor *x; };
static sstc_tensor *f_model_fwd(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct model_arg *a = u;
    return sstc_model_forward(a->m, c, a->x);
}

/* One fused pair through a model (conv bn relu gap fc). Deeper stacks of
 * ReLUs behind batch norms in training mode put too many values near a kink
 * for finite differences (they disagree there with the fusion off as well);
 * the residual block of test_residual.c runs its first pair fused too. */
Test(bn_relu, model_gradients_match_finite_differences_with_fusion) {
    sstc_set_fuse(1);
    sstc_model *m = sstc_model_create(3, (int[]){3, 5, 5});
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 4, 3, 1, 1, 1), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f), 0);
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0);
    cr_assert_eq(sstc_model_add_globalavgpool(m, NULL), 0);
    cr_assert_eq(sstc_model_add_linear(m, NULL, 3, 1), 0);
    sstc_rng r;
    sstc_rng_seed(&r, 3);
    sstc_model_init(m, SSTC_INIT_HE, &r);
    sstc_model_train(m, 1);
    struct model_arg a = {m, sstc_param_new(m->params, 4, (int[]){3, 3, 5, 5})};
    fill_away_from_zero(a.x, &r);
    sstc_named_tensor nt[64];
    int n = sstc_model_named_tensors(m, nt, 64), nin = 0;
    sstc_tensor *in[65];
    in[nin++] = a.x;
    for (int i = 0; i < n; i++)
        if (nt[i].trainable) {
            if (nt[i].layer->kind == SSTC_LAYER_BATCHNORM)
                for (size_t k = 0; k < nt[i].tensor->size; k++) nt[i].tensor->data[k] += 0.3f * sstc_rng_normal(&r);
            in[nin++] = nt[i].tensor;
        }
    gradcheck(f_model_fwd, in, nin, &a, "model with fused batch norm + relu");
    sstc_model_free(m);
}
