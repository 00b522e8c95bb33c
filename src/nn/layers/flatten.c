/* Flatten: (C,H,W) -> C*H*W features in NCHW order (a view, no copy). */
#include "internal.h"

static const sstc_key_def keys[] = {{0}};

static int build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    l->out_ndim = 1;
    l->out_shape[0] = sstc_layer_in_features(l);
    return 0;
}

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    return sstc_flatten(ctx, x);
}

const sstc_layer_desc sstc_layer_flatten = {
    .kind = SSTC_LAYER_FLATTEN,
    .section = "flatten",
    .prefix = "flatten",
    .kind_name = "flatten",
    .keys = keys,
    .build = build,
    .forward = forward,
};
