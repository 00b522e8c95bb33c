/* 2-d convolution: x (B,C,H,W), W (OC,C,K,K), bias (OC) -> (B,OC,OH,OW) with
 * OH = (H + 2*pad - K)/stride + 1 (zero padding). A 1x1 kernel with stride 2
 * is the projection of a residual network's downsampling shortcut. With an
 * output scale s (weight normalization): y = s * conv(x, W) + b. */
#include "internal.h"

static const sstc_key_def keys[] = {
    {.key = "filters", .type = SSTC_KEY_INT, .off = LF(outputs), .lo = 1, .hi = 1 << 16, .required = 1},
    {.key = "size", .type = SSTC_KEY_INT, .off = LF(size), .lo = 1, .hi = 64, .def = "3"},
    {.key = "stride", .type = SSTC_KEY_INT, .off = LF(stride), .lo = 1, .hi = 64, .def = "1"},
    {.key = "pad", .type = SSTC_KEY_INT, .off = LF(pad), .lo = 0, .hi = 64, .def = "0"},
    {.key = "bias", .type = SSTC_KEY_BOOL, .off = LF(bias), .lo = 0, .hi = 1, .def = "true"},
    {0}};

static int build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    if (s->outputs <= 0)
        return sstc_fail(SSTC_EINVAL, "conv2d layer '%s': %d output channels, expected > 0", l->name, s->outputs);
    int oh = 0, ow = 0;
    if (sstc_layer_need_image(l) || sstc_layer_window_out(l, s->size, s->stride, s->pad, &oh, &ow))
        return sstc_errcode();
    int C = l->in_shape[0], k = s->size;
    l->in_features = C * k * k;
    l->out_features = s->outputs;
    l->kernel = k;
    l->stride = s->stride;
    l->pad = s->pad;
    l->has_bias = s->bias;
    l->out_ndim = 3;
    l->out_shape[0] = s->outputs;
    l->out_shape[1] = oh;
    l->out_shape[2] = ow;
    l->weight = sstc_layer_param(m, 4, (int[]){s->outputs, C, k, k});
    if (s->bias) l->bias = sstc_layer_param(m, 1, (int[]){s->outputs});
    if (!l->weight || (s->bias && !l->bias)) return sstc_errcode();
    return 0;
}

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    sstc_tensor *w = sstc_layer_effective_weight(ctx, l);
    if (!l->out_scale) return sstc_conv2d(ctx, x, w, l->bias, l->stride, l->pad);
    sstc_tensor *y = sstc_channel_scale(ctx, sstc_conv2d(ctx, x, w, NULL, l->stride, l->pad), l->out_scale);
    return l->bias ? sstc_bias_add(ctx, y, l->bias) : y;
}

static void init(sstc_layer *l, sstc_init init, sstc_rng *rng) {
    if (init == SSTC_INIT_HE) sstc_init_he(l->weight, l->in_features, rng);
    else sstc_init_xavier(l->weight, l->in_features, l->out_features * l->kernel * l->kernel, rng);
    if (l->bias) sstc_tensor_fill(l->bias, 0.0f);
}

const sstc_layer_desc sstc_layer_conv2d = {
    .kind = SSTC_LAYER_CONV2D,
    .section = "conv",
    .prefix = "conv",
    .kind_name = "conv2d",
    .flags = SSTC_LAYER_WEIGHTED,
    .keys = keys,
    .build = build,
    .forward = forward,
    .init = init,
    .describe = sstc_layer_window_describe,
};
