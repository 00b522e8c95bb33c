/* configs/cifar10_resnet20.ini: the network it describes (He et al. 2016,
 * ResNet-20 with projection shortcuts) builds for CIFAR-10's 3x32x32 images
 * without data, has the paper's size, and trains for a few steps. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "sstc/config.h"
#include "sstc/optim.h"

static sstc_model *resnet20(sstc_config *c) {
    cr_assert_eq(sstc_config_load("configs/cifar10_resnet20.ini", NULL, 0, c), 0, "%s", sstc_errmsg());
    sstc_model *m = sstc_config_build_model(c, 3, 32, 32, 10);
    cr_assert_not_null(m, "%s", sstc_errmsg());
    return m;
}

Test(resnet20, builds_for_cifar10_with_the_papers_layers_and_parameters) {
    sstc_config c;
    sstc_model *m = resnet20(&c);
    int kinds[SSTC_LAYER_KIND_COUNT] = {0}, k1x1 = 0;
    for (int i = 0; i < m->nlayers; i++) {
        const sstc_layer *l = &m->layers[i];
        kinds[l->kind]++;
        if (l->kind == SSTC_LAYER_CONV2D && l->kernel == 1) {
            k1x1++;
            cr_assert_eq(l->stride, 2);
            cr_assert_eq(l->pad, 0);
        }
        if (l->kind == SSTC_LAYER_SHORTCUT) cr_assert_eq(l->activation, SSTC_ACT_RELU);
    }
    /* 19 3x3 convolutions + the fc layer are the 20 weight layers; 2 projections */
    cr_assert_eq(kinds[SSTC_LAYER_CONV2D], 21);
    cr_assert_eq(k1x1, 2);
    cr_assert_eq(kinds[SSTC_LAYER_BATCHNORM], 21);
    cr_assert_eq(kinds[SSTC_LAYER_SHORTCUT], 9);
    cr_assert_eq(kinds[SSTC_LAYER_ROUTE], 2);
    cr_assert_eq(kinds[SSTC_LAYER_GLOBALAVGPOOL], 1);
    cr_assert_eq(kinds[SSTC_LAYER_LINEAR], 1);
    /* stage outputs: 16x32x32, 32x16x16, 64x8x8, then 64 features */
    const sstc_layer *gap = &m->layers[m->nlayers - 2];
    cr_assert_eq(gap->in_shape[0], 64);
    cr_assert_eq(gap->in_shape[1], 8);
    cr_assert_eq(gap->out_shape[0], 64);
    /* 3x3 convs 16*(3 + 16*6) + 32*(16 + 32*5) + 64*(32 + 64*5) times 9, projections
     * 16*32 + 32*64, batch norms 2 * (7*16 + 7*32 + 7*64), fc 64*10 + 10 */
    size_t want = 9 * (16 * (3 + 16 * 6) + 32 * (16 + 32 * 5) + 64 * (32 + 64 * 5)) + 16 * 32 + 32 * 64 +
                  2 * 7 * (16 + 32 + 64) + 64 * 10 + 10;
    cr_assert_eq(sstc_model_num_params(m), want, "%zu parameters, expected %zu", sstc_model_num_params(m), want);
    cr_assert(want > 265000 && want < 275000, "about 0.27 M");
    cr_assert_eq(c.optim.kind, SSTC_OPT_SGD);
    cr_assert_float_eq(c.optim.momentum, 0.9f, 1e-7);
    cr_assert_eq(c.lr.kind, SSTC_LR_COSINE);
    sstc_model_free(m);
}

/* Two SGD steps with the config's settings on a fixed batch of random images:
 * the loss is finite and falls, and every convolution's weights move. */
Test(resnet20, trains_a_few_steps_on_synthetic_images) {
    sstc_set_threads(1);
    sstc_config c;
    sstc_model *m = resnet20(&c);
    sstc_rng r;
    sstc_rng_seed(&r, 9);
    sstc_model_init(m, c.init, &r);
    sstc_model_train(m, 1);
    enum { B = 4 };
    float *x = malloc((size_t)B * 3 * 32 * 32 * sizeof(float));
    int y[B] = {0, 3, 7, 9};
    for (int i = 0; i < B * 3 * 32 * 32; i++) x[i] = sstc_rng_normal(&r);
    sstc_named_tensor nt[256];
    int n = sstc_model_named_tensors(m, nt, 256), np = 0;
    cr_assert_leq(n, 256);
    sstc_tensor *params[256];
    for (int i = 0; i < n; i++)
        if (nt[i].trainable) params[np++] = nt[i].tensor;
    sstc_optimizer *o = sstc_optim_create(&c.optim, params, np);
    cr_assert_not_null(o, "%s", sstc_errmsg());
    const sstc_tensor *w_last = m->layers[m->nlayers - 4].weight; /* the last 3x3 conv */
    float before = w_last->data[0];
    sstc_ctx *ctx = sstc_ctx_create(0);
    float loss[3];
    for (int step = 0; step < 3; step++) {
        sstc_ctx_reset(ctx);
        sstc_tensor *xt = sstc_tensor_wrap(ctx, x, 4, (int[]){B, 3, 32, 32});
        sstc_tensor *l = sstc_softmax_ce(ctx, sstc_model_forward(m, ctx, xt), y);
        cr_assert_not_null(l, "%s", sstc_errmsg());
        loss[step] = l->data[0];
        cr_assert(isfinite(loss[step]), "step %d: loss %g", step, loss[step]);
        if (step == 2) break;
        sstc_optim_zero_grad(o);
        cr_assert_eq(sstc_backward(ctx, l), 0, "%s", sstc_errmsg());
        cr_assert_eq(sstc_optim_step(o, c.optim.lr), 0, "%s", sstc_errmsg());
    }
    cr_assert_lt(loss[2], loss[0], "loss %g -> %g -> %g", loss[0], loss[1], loss[2]);
    cr_assert_neq(w_last->data[0], before);
    sstc_ctx_free(ctx);
    sstc_optim_free(o);
    sstc_model_free(m);
    free(x);
}
