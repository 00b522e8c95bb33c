/* Global average pooling: (C,H,W) -> (C), the mean of each channel's plane.
 * The output is a feature vector, so an [fc] can follow directly. */
#include "internal.h"

static const sstc_key_def keys[] = {{0}};

static int build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    if (sstc_layer_need_image(l)) return sstc_errcode();
    l->out_ndim = 1;
    l->out_shape[0] = l->in_shape[0];
    return 0;
}

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    return sstc_global_avgpool(ctx, x);
}

const sstc_layer_desc sstc_layer_globalavgpool = {
    .kind = SSTC_LAYER_GLOBALAVGPOOL,
    .section = "globalavgpool",
    .prefix = "gap",
    .kind_name = "globalavgpool",
    .keys = keys,
    .build = build,
    .forward = forward,
};
