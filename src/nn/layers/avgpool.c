/* Average pooling over k x k windows with stride and zero padding (pad at most
 * k/2). Padded zeros count in the divisor k*k, as in PyTorch's default. */
#include "internal.h"

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    return sstc_avgpool2d(ctx, x, l->kernel, l->stride, l->pad);
}

const sstc_layer_desc sstc_layer_avgpool = {
    .kind = SSTC_LAYER_AVGPOOL,
    .section = "avgpool",
    .prefix = "avgpool",
    .kind_name = "avgpool",
    .keys = sstc_layer_pool_keys,
    .complete = sstc_layer_pool_complete,
    .build = sstc_layer_pool_build,
    .forward = forward,
    .describe = sstc_layer_window_describe,
};
