/* Linear (fully connected) layer: x (B,in) -> x W^T + b, (B,out), W (out,in).
 * An image-shaped input is flattened first (C*H*W features, NCHW order). With
 * an output scale s (weight normalization): y = s * (x W^T) + b. */
#include "internal.h"

static const sstc_key_def keys[] = {
    {.key = "outputs", .type = SSTC_KEY_INT, .off = LF(outputs), .lo = 1, .hi = 1 << 24, .required = 1},
    {.key = "bias", .type = SSTC_KEY_BOOL, .off = LF(bias), .lo = 0, .hi = 1, .def = "true"},
    {0}};

static int build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    if (s->outputs <= 0)
        return sstc_fail(SSTC_EINVAL, "linear layer '%s': %d outputs, expected > 0", l->name, s->outputs);
    l->in_features = sstc_layer_in_features(l);
    l->out_features = s->outputs;
    l->has_bias = s->bias;
    l->out_ndim = 1;
    l->out_shape[0] = s->outputs;
    l->weight = sstc_layer_param(m, 2, (int[]){s->outputs, l->in_features});
    if (s->bias) l->bias = sstc_layer_param(m, 1, (int[]){s->outputs});
    if (!l->weight || (s->bias && !l->bias)) return sstc_errcode();
    return 0;
}

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    if (x->ndim != 2) x = sstc_flatten(ctx, x);
    sstc_tensor *w = sstc_layer_effective_weight(ctx, l);
    if (!l->out_scale) return sstc_linear(ctx, x, w, l->bias);
    sstc_tensor *y = sstc_channel_scale(ctx, sstc_linear(ctx, x, w, NULL), l->out_scale);
    return l->bias ? sstc_bias_add(ctx, y, l->bias) : y;
}

static void init(sstc_layer *l, sstc_init init, sstc_rng *rng) {
    if (init == SSTC_INIT_HE) sstc_init_he(l->weight, l->in_features, rng);
    else sstc_init_xavier(l->weight, l->in_features, l->out_features, rng);
    if (l->bias) sstc_tensor_fill(l->bias, 0.0f);
}

const sstc_layer_desc sstc_layer_linear = {
    .kind = SSTC_LAYER_LINEAR,
    .section = "fc",
    .prefix = "fc",
    .kind_name = "linear",
    .flags = SSTC_LAYER_WEIGHTED,
    .keys = keys,
    .build = build,
    .forward = forward,
    .init = init,
};
