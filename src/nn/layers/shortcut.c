/* Shortcut (residual) connection, as Darknet's [shortcut]: y = act(x + out[from])
 * where x is the previous layer's output and out[from] an earlier layer's (or
 * the model's input). The two must have the same shape; a downsampling block
 * brings its input to the right shape first, with a route back to it and a
 * 1x1 strided convolution (see configs/cifar10_resnet20.ini). Autodiff sums
 * the gradients of an output read twice. */
#include "internal.h"

static const sstc_key_def keys[] = {
    {.key = "from", .type = SSTC_KEY_INT, .off = LF(from), .lo = -1024, .hi = 1023, .required = 1},
    {.key = "activation", .type = SSTC_KEY_ENUM, .off = LF(activation), .def = "linear", .choices = "linear|relu"},
    {0}};

static int build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    int self = m->nlayers, from;
    if (sstc_layer_resolve_ref(l, self, "from", s->from, &from)) return sstc_errcode();
    if (s->activation != SSTC_ACT_LINEAR && s->activation != SSTC_ACT_RELU)
        return sstc_fail(SSTC_EINVAL, "shortcut layer '%s': activation %d, expected linear (0) or relu (1)", l->name,
                         s->activation);
    int nd, shape[3];
    sstc_layer_shape_of(m, from, &nd, shape);
    int same = nd == l->in_ndim;
    for (int i = 0; same && i < nd; i++) same = shape[i] == l->in_shape[i];
    if (!same) {
        char a[48], b[48];
        return sstc_fail(SSTC_ESHAPE,
                         "shortcut layer '%s': its input (the output of %s) is %s and the output of %s (from = %d) "
                         "is %s; expected equal shapes",
                         l->name, sstc_layer_ref_name(m, self - 1), sstc_layer_shape_str(l->in_ndim, l->in_shape, a, sizeof a),
                         sstc_layer_ref_name(m, from), s->from, sstc_layer_shape_str(nd, shape, b, sizeof b));
    }
    l->from = from;
    l->activation = s->activation;
    sstc_layer_same_shape(l);
    return 0;
}

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    sstc_tensor *y = sstc_add(ctx, x, sstc_layer_output(outs, l->from));
    return l->activation == SSTC_ACT_RELU ? sstc_relu(ctx, y) : y;
}

static void describe(const sstc_model *m, const sstc_layer *l, char *buf, size_t n) {
    snprintf(buf, n, "+ %s%s", sstc_layer_ref_name(m, l->from), l->activation == SSTC_ACT_RELU ? ", relu" : "");
}

const sstc_layer_desc sstc_layer_shortcut = {
    .kind = SSTC_LAYER_SHORTCUT,
    .section = "shortcut",
    .prefix = "shortcut",
    .kind_name = "shortcut",
    .keys = keys,
    .build = build,
    .forward = forward,
    .describe = describe,
};
