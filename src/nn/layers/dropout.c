/* Inverted dropout: in training each element is zeroed with probability p and
 * the rest scaled by 1/(1-p); identity in evaluation. */
#include "internal.h"

static const sstc_key_def keys[] = {
    {.key = "p", .type = SSTC_KEY_FLOAT, .off = LF(p), .lo = 0, .hi = 0.999, .def = "0.5"},
    {0}};

static int build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    if (!(s->p >= 0 && s->p < 1))
        return sstc_fail(SSTC_EINVAL, "dropout layer '%s': p = %g, expected 0 <= p < 1", l->name, (double)s->p);
    l->p = s->p;
    sstc_layer_same_shape(l);
    return 0;
}

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    return sstc_dropout(ctx, x, l->p);
}

static void describe(const sstc_model *m, const sstc_layer *l, char *buf, size_t n) {
    snprintf(buf, n, "p=%g", (double)l->p);
}

const sstc_layer_desc sstc_layer_dropout = {
    .kind = SSTC_LAYER_DROPOUT,
    .section = "dropout",
    .prefix = "dropout",
    .kind_name = "dropout",
    .keys = keys,
    .build = build,
    .forward = forward,
    .describe = describe,
};
