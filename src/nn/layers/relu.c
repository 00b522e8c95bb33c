/* Rectified linear unit, elementwise: y = max(x, 0). */
#include "internal.h"

static const sstc_key_def keys[] = {{0}};

static int build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    sstc_layer_same_shape(l);
    return 0;
}

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    return sstc_relu(ctx, x);
}

const sstc_layer_desc sstc_layer_relu = {
    .kind = SSTC_LAYER_RELU,
    .section = "relu",
    .prefix = "relu",
    .kind_name = "relu",
    .keys = keys,
    .build = build,
    .forward = forward,
};
