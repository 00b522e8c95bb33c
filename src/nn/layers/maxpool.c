/* Max pooling over k x k windows with stride and padding (at most k/2);
 * padded positions never win. */
#include "internal.h"

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    return sstc_maxpool2d(ctx, x, l->kernel, l->stride, l->pad);
}

const sstc_layer_desc sstc_layer_maxpool = {
    .kind = SSTC_LAYER_MAXPOOL,
    .section = "maxpool",
    .prefix = "maxpool",
    .kind_name = "maxpool",
    .keys = sstc_layer_pool_keys,
    .complete = sstc_layer_pool_complete,
    .build = sstc_layer_pool_build,
    .forward = forward,
    .describe = sstc_layer_window_describe,
};
