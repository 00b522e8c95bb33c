/* Layers through the model: gradient checks of every layer kind, shape
 * errors, named parameters, determinism, and learning a small problem. */
#include "../test_util.h"
#include "sstc/nn.h"
#include "sstc/optim.h"

/* Checks d(loss)/d(every trainable param) of a model by finite differences;
 * the model's params are the gradcheck inputs. */
struct model_arg { sstc_model *m; sstc_tensor *x; sstc_rng r; };
static sstc_tensor *f_model(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct model_arg *a = u;
    sstc_rng_seed(&a->r, 11);
    sstc_ctx_set_rng(c, &a->r);
    return sstc_model_forward(a->m, c, a->x);
}

static void check_model(sstc_model *m, int B, const char *what) {
    sstc_rng r;
    sstc_rng_seed(&r, 3);
    sstc_model_init(m, SSTC_INIT_HE, &r);
    struct model_arg a = {.m = m};
    int shape[4] = {B, m->in_shape[0], m->in_shape[1], m->in_shape[2]};
    a.x = sstc_tensor_new(m->params, m->in_ndim + 1, shape);
    fill_away_from_zero(a.x, &r);
    /* perturb BN gammas/betas away from 1/0 so their gradients are generic */
    sstc_named_tensor nt[64];
    int n = sstc_model_named_tensors(m, nt, 64);
    sstc_tensor *in[64];
    int nin = 0;
    for (int i = 0; i < n; i++)
        if (nt[i].trainable) {
            if (nt[i].layer->kind == SSTC_LAYER_BATCHNORM)
                for (size_t k = 0; k < nt[i].tensor->size; k++) nt[i].tensor->data[k] += 0.3f * sstc_rng_normal(&r);
            in[nin++] = nt[i].tensor;
        }
    gradcheck(f_model, in, nin, &a, what);
}

Test(layers, linear_batchnorm1d_relu_dropout_gradients_match_finite_differences) {
    sstc_model *m = sstc_model_create(1, (int[]){5});
    cr_assert_eq(sstc_model_add_linear(m, NULL, 6, 1), 0);
    cr_assert_eq(sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f), 0);
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0);
    cr_assert_eq(sstc_model_add_dropout(m, NULL, 0.3f), 0);
    cr_assert_eq(sstc_model_add_linear(m, NULL, 3, 1), 0);
    sstc_model_train(m, 1);
    check_model(m, 4, "mlp train");
    sstc_model_train(m, 0);
    check_model(m, 4, "mlp eval");
    sstc_model_free(m);
}

Test(layers, conv_batchnorm2d_pools_flatten_gradients_match_finite_differences) {
    sstc_model *m = sstc_model_create(3, (int[]){2, 7, 7});
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 3, 3, 1, 1, 1), 0);
    cr_assert_eq(sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f), 0);
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0);
    cr_assert_eq(sstc_model_add_avgpool(m, NULL, 2, 2, 0), 0);
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 2, 2, 2, 1, 0), 0);
    cr_assert_eq(sstc_model_add_flatten(m, NULL), 0);
    cr_assert_eq(sstc_model_add_linear(m, NULL, 3, 1), 0);
    sstc_model_train(m, 1);
    check_model(m, 3, "cnn train");
    sstc_model_free(m);
}

Test(layers, maxpool_layer_gradient_matches_finite_differences) {
    sstc_model *m = sstc_model_create(3, (int[]){1, 6, 6});
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 2, 3, 1, 1, 1), 0);
    cr_assert_eq(sstc_model_add_maxpool(m, NULL, 2, 2, 0), 0);
    cr_assert_eq(sstc_model_add_linear(m, NULL, 2, 1), 0);
    check_model(m, 2, "maxpool layer");
    sstc_model_free(m);
}

Test(layers, shapes_that_do_not_fit_are_rejected_with_the_layer_name) {
    sstc_model *m = sstc_model_create(1, (int[]){10});
    cr_assert_neq(sstc_model_add_conv2d(m, NULL, 4, 3, 1, 0, 1), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "conv1"), "%s", sstc_errmsg());
    sstc_model_free(m);
    m = sstc_model_create(3, (int[]){1, 4, 4});
    cr_assert_neq(sstc_model_add_conv2d(m, "big", 4, 5, 1, 0, 1), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "big"));
    cr_assert_neq(sstc_model_add_dropout(m, NULL, 1.5f), 0);
    sstc_model_free(m);
}

Test(layers, named_parameters_are_reachable_by_name) {
    sstc_model *m = sstc_model_create(3, (int[]){1, 8, 8});
    sstc_model_add_conv2d(m, NULL, 4, 3, 1, 1, 0);
    sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f);
    sstc_model_add_relu(m, NULL);
    sstc_model_add_linear(m, "out", 10, 1);
    sstc_named_tensor nt[16];
    int n = sstc_model_named_tensors(m, nt, 16);
    cr_assert_eq(n, 7); /* conv1.weight, bn1 x4, out.weight, out.bias */
    cr_assert_str_eq(nt[0].name, "conv1.weight");
    cr_assert_str_eq(nt[3].name, "bn1.running_mean");
    cr_assert_eq(nt[3].trainable, 0);
    cr_assert_str_eq(nt[6].name, "out.bias");
    sstc_tensor *w = sstc_model_find(m, "out.weight");
    cr_assert_not_null(w);
    cr_assert_eq(w->shape[0], 10);
    cr_assert_eq(w->shape[1], 4 * 8 * 8);
    cr_assert_null(sstc_model_find(m, "nope.weight"));
    cr_assert_eq(sstc_model_num_params(m), 4 * 9 + 4 + 4 + 256 * 10 + 10);
    sstc_model_free(m);
}

/* Two interleaved spirals-ish classes: not linearly separable. */
static void two_class_data(float *x, int *y, int n, sstc_rng *r) {
    for (int i = 0; i < n; i++) {
        float a = 6.0f * sstc_rng_uniform(r), rad = 0.2f + a / 6.0f;
        int c = i % 2;
        x[2 * i] = rad * cosf(a + (float)M_PI * c);
        x[2 * i + 1] = rad * sinf(a + (float)M_PI * c);
        y[i] = c;
    }
}

static float train_two_class(int threads, float *first_w, int *acc_out) {
    sstc_set_threads(threads);
    sstc_rng r;
    sstc_rng_seed(&r, 42);
    enum { N = 128 };
    float x[2 * N];
    int y[N];
    two_class_data(x, y, N, &r);
    sstc_model *m = sstc_model_create(1, (int[]){2});
    sstc_model_add_linear(m, NULL, 32, 1);
    sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f);
    sstc_model_add_relu(m, NULL);
    sstc_model_add_linear(m, NULL, 32, 1);
    sstc_model_add_relu(m, NULL);
    sstc_model_add_linear(m, NULL, 2, 1);
    sstc_model_init(m, SSTC_INIT_HE, &r);
    sstc_named_tensor nt[32];
    int n = sstc_model_named_tensors(m, nt, 32);
    sstc_tensor *params[32];
    int np = 0;
    for (int i = 0; i < n; i++)
        if (nt[i].trainable) params[np++] = nt[i].tensor;
    sstc_optim_config cfg = sstc_optim_defaults(SSTC_OPT_ADAM);
    sstc_optimizer *o = sstc_optim_create(&cfg, params, np);
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_ctx_set_rng(ctx, &r);
    float loss = 0;
    for (int step = 0; step < 600; step++) {
        sstc_ctx_reset(ctx);
        sstc_model_train(m, 1);
        sstc_tensor *xt = sstc_tensor_wrap(ctx, x, 2, (int[]){N, 2});
        sstc_tensor *l = sstc_softmax_ce(ctx, sstc_model_forward(m, ctx, xt), y);
        cr_assert_not_null(l, "%s", sstc_errmsg());
        sstc_optim_zero_grad(o);
        cr_assert_eq(sstc_backward(ctx, l), 0);
        sstc_optim_step(o, 0.01f);
        loss = l->data[0];
    }
    sstc_ctx_reset(ctx);
    sstc_model_train(m, 0);
    sstc_tensor *z = sstc_model_forward(m, ctx, sstc_tensor_wrap(ctx, x, 2, (int[]){N, 2}));
    int acc = 0;
    for (int i = 0; i < N; i++) acc += (z->data[2 * i + 1] > z->data[2 * i]) == y[i];
    *acc_out = acc;
    memcpy(first_w, m->layers[0].weight->data, 64 * sizeof(float));
    sstc_ctx_free(ctx);
    sstc_optim_free(o);
    sstc_model_free(m);
    return loss;
}

Test(layers, mlp_learns_a_nonlinear_two_class_problem_to_full_accuracy) {
    float w[64];
    int acc;
    float loss = train_two_class(1, w, &acc);
    cr_assert_eq(acc, 128, "training accuracy %d/128 (loss %g)", acc, (double)loss);
}

Test(layers, same_seed_and_threads_give_bit_identical_runs) {
    float w1[64], w2[64];
    int a1, a2;
    float l1 = train_two_class(2, w1, &a1);
    float l2 = train_two_class(2, w2, &a2);
    cr_assert_eq(memcmp(w1, w2, sizeof w1), 0);
    cr_assert_eq(l1, l2);
}

/* A small CNN trained for a few SGD steps on random images with 2 threads
 * (convolutions take the image-parallel path, weight gradients summed per
 * thread): the weights after training, into w_out. */
static void train_cnn(float *w_out, size_t nw) {
    sstc_set_threads(2);
    sstc_rng r;
    sstc_rng_seed(&r, 5);
    sstc_model *m = sstc_model_create(3, (int[]){3, 8, 8});
    sstc_model_add_conv2d(m, NULL, 6, 3, 1, 1, 0);
    sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f);
    sstc_model_add_relu(m, NULL);
    sstc_model_add_maxpool(m, NULL, 2, 2, 0);
    sstc_model_add_conv2d(m, NULL, 8, 3, 1, 1, 0);
    sstc_model_add_relu(m, NULL);
    sstc_model_add_flatten(m, NULL);
    sstc_model_add_linear(m, NULL, 3, 1);
    sstc_model_init(m, SSTC_INIT_HE, &r);
    float *w0 = malloc(nw * sizeof(float));
    memcpy(w0, m->layers[4].weight->data, nw * sizeof(float));
    sstc_named_tensor nt[32];
    sstc_tensor *params[32];
    int n = sstc_model_named_tensors(m, nt, 32), np = 0;
    for (int i = 0; i < n; i++)
        if (nt[i].trainable) params[np++] = nt[i].tensor;
    sstc_optim_config cfg = sstc_optim_defaults(SSTC_OPT_SGD);
    sstc_optimizer *o = sstc_optim_create(&cfg, params, np);
    enum { B = 7 };
    float *x = malloc(sizeof(float) * B * 3 * 8 * 8);
    int y[B];
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_model_train(m, 1);
    for (int step = 0; step < 5; step++) {
        for (int i = 0; i < B * 3 * 8 * 8; i++) x[i] = sstc_rng_normal(&r);
        for (int i = 0; i < B; i++) y[i] = (int)(sstc_rng_uniform(&r) * 3) % 3;
        sstc_ctx_reset(ctx);
        sstc_tensor *l = sstc_softmax_ce(ctx, sstc_model_forward(m, ctx, sstc_tensor_wrap(ctx, x, 4, (int[]){B, 3, 8, 8})), y);
        cr_assert_not_null(l, "%s", sstc_errmsg());
        sstc_optim_zero_grad(o);
        cr_assert_eq(sstc_backward(ctx, l), 0, "%s", sstc_errmsg());
        sstc_optim_step(o, 0.05f);
    }
    cr_assert_eq(m->layers[4].weight->size, nw);
    memcpy(w_out, m->layers[4].weight->data, nw * sizeof(float));
    cr_assert_neq(memcmp(w0, w_out, nw * sizeof(float)), 0, "training must move the conv weights");
    free(w0);
    sstc_ctx_free(ctx);
    sstc_optim_free(o);
    sstc_model_free(m);
    free(x);
    sstc_set_threads(1);
}

Test(layers, cnn_on_two_threads_gives_bit_identical_runs) {
    float a[8 * 6 * 9], b[8 * 6 * 9];
    train_cnn(a, 8 * 6 * 9);
    train_cnn(b, 8 * 6 * 9);
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "same seed and threads must give identical conv weights");
}

Test(layers, straight_through_override_computes_with_override_and_updates_weight) {
    sstc_model *m = sstc_model_create(1, (int[]){3});
    sstc_model_add_linear(m, NULL, 2, 0);
    sstc_tensor *w = m->layers[0].weight;
    for (int i = 0; i < 6; i++) w->data[i] = 0.1f * (float)(i + 1);
    float q[6] = {1, 0, -1, 0, 1, 0};
    m->layers[0].weight_override = q;
    sstc_ctx *ctx = sstc_ctx_create(0);
    float xv[3] = {1, 2, 3};
    sstc_tensor *z = sstc_model_forward(m, ctx, sstc_tensor_wrap(ctx, xv, 2, (int[]){1, 3}));
    cr_assert_float_eq(z->data[0], 1 - 3, 1e-6);
    cr_assert_float_eq(z->data[1], 2, 1e-6);
    cr_assert_eq(sstc_backward(ctx, sstc_sum(ctx, z)), 0);
    for (int i = 0; i < 6; i++) cr_assert_float_eq(w->grad[i], xv[i % 3], 1e-6);
    sstc_ctx_free(ctx);
    sstc_model_free(m);
}
