/* Batch normalization over the channel axis: 1-d after a linear layer (B,C),
 * 2-d after a convolution (B,C,H,W). gamma (weight), beta (bias) and the
 * running statistics are (C). */
#include "internal.h"

static const sstc_key_def keys[] = {
    {.key = "eps", .type = SSTC_KEY_FLOAT, .off = LF(eps), .lo = 1e-12, .hi = 1, .def = "1e-5"},
    {.key = "momentum", .type = SSTC_KEY_FLOAT, .off = LF(momentum), .lo = 0, .hi = 1, .def = "0.1"},
    {0}};

static int build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    if (!(s->eps > 0) || !(s->momentum >= 0 && s->momentum <= 1))
        return sstc_fail(SSTC_EINVAL,
                         "batchnorm layer '%s': eps %g, momentum %g; expected eps > 0, 0 <= momentum <= 1", l->name,
                         (double)s->eps, (double)s->momentum);
    int C = l->in_shape[0];
    l->eps = s->eps;
    l->momentum = s->momentum;
    sstc_layer_same_shape(l);
    l->weight = sstc_layer_param(m, 1, (int[]){C});
    l->bias = sstc_layer_param(m, 1, (int[]){C});
    l->running_mean = sstc_tensor_1d(m->params, C);
    l->running_var = sstc_tensor_1d(m->params, C);
    if (!l->weight || !l->bias || !l->running_mean || !l->running_var) return sstc_errcode();
    sstc_tensor_fill(l->weight, 1.0f);
    sstc_tensor_fill(l->running_var, 1.0f);
    l->has_bias = 1;
    return 0;
}

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    return sstc_batchnorm(ctx, x, l->weight, l->bias, l->running_mean, l->running_var, l->momentum, l->eps);
}

static void init(sstc_layer *l, sstc_init init, sstc_rng *rng) {
    sstc_tensor_fill(l->weight, 1.0f);
    sstc_tensor_fill(l->bias, 0.0f);
    sstc_tensor_fill(l->running_mean, 0.0f);
    sstc_tensor_fill(l->running_var, 1.0f);
}

const sstc_layer_desc sstc_layer_batchnorm = {
    .kind = SSTC_LAYER_BATCHNORM,
    .section = "batchnorm",
    .prefix = "bn",
    .kind_name = "batchnorm",
    .keys = keys,
    .build = build,
    .forward = forward,
    .init = init,
};
