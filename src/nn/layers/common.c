/* Helpers shared by the layer kinds: shape checks, parameters, references to
 * earlier layers. */
#include <string.h>

#include "internal.h"

int sstc_layer_in_features(const sstc_layer *l) {
    int f = 1;
    for (int i = 0; i < l->in_ndim; i++) f *= l->in_shape[i];
    return f;
}

void sstc_layer_same_shape(sstc_layer *l) {
    l->out_ndim = l->in_ndim;
    memcpy(l->out_shape, l->in_shape, sizeof l->in_shape);
}

int sstc_layer_need_image(const sstc_layer *l) {
    if (l->in_ndim != 3)
        return sstc_fail(SSTC_ESHAPE, "%s layer '%s': input has %d features, expected an image (C,H,W)",
                         sstc_layer_kind_name(l->kind), l->name, sstc_layer_in_features(l));
    return 0;
}

int sstc_layer_window_out(const sstc_layer *l, int k, int stride, int pad, int *oh, int *ow) {
    const char *what = sstc_layer_kind_name(l->kind);
    int H = l->in_shape[1], W = l->in_shape[2];
    if (k < 1 || stride < 1 || pad < 0)
        return sstc_fail(SSTC_EINVAL,
                         "%s layer '%s': kernel %d, stride %d, pad %d; expected kernel >= 1, stride >= 1, pad >= 0",
                         what, l->name, k, stride, pad);
    if (H + 2 * pad < k || W + 2 * pad < k)
        return sstc_fail(SSTC_ESHAPE, "%s layer '%s': kernel %d does not fit the input %dx%d (pad %d)", what,
                         l->name, k, H, W, pad);
    *oh = (H + 2 * pad - k) / stride + 1;
    *ow = (W + 2 * pad - k) / stride + 1;
    return 0;
}

sstc_tensor *sstc_layer_param(sstc_model *m, int ndim, const int *shape) {
    return sstc_param_new(m->params, ndim, shape);
}

sstc_tensor *sstc_layer_effective_weight(sstc_ctx *ctx, sstc_layer *l) {
    if (!l->weight_override) return l->weight;
    sstc_tensor *w = sstc_tensor_wrap(ctx, l->weight_override, l->weight->ndim, l->weight->shape);
    if (!w) return NULL;
    w->grad = l->weight->grad;
    w->requires_grad = l->weight->requires_grad;
    return w;
}

int sstc_layer_resolve_ref(const sstc_layer *l, int self, const char *what, int ref, int *abs) {
    int j = ref < 0 ? self + ref : ref;
    if (j >= -1 && j < self) {
        *abs = j;
        return 0;
    }
    const char *kind = sstc_layer_kind_name(l->kind);
    if (self == 0)
        return sstc_fail(SSTC_EINVAL, "%s layer '%s': %s = %d, but the first layer can only read the input: expected -1",
                         kind, l->name, what, ref);
    return sstc_fail(SSTC_EINVAL,
                     "%s layer '%s': %s = %d names no earlier layer; expected -%d..-1 (counting back from this "
                     "layer, -%d being the input) or 0..%d",
                     kind, l->name, what, ref, self + 1, self + 1, self - 1);
}

void sstc_layer_shape_of(const sstc_model *m, int j, int *ndim, int *shape) {
    if (j < 0) {
        *ndim = m->in_ndim;
        memcpy(shape, m->in_shape, sizeof m->in_shape);
    } else {
        *ndim = m->layers[j].out_ndim;
        memcpy(shape, m->layers[j].out_shape, sizeof m->layers[j].out_shape);
    }
}

const char *sstc_layer_shape_str(int ndim, const int *shape, char *buf, size_t n) {
    if (ndim == 3) snprintf(buf, n, "%dx%dx%d", shape[0], shape[1], shape[2]);
    else snprintf(buf, n, "%d", shape[0]);
    return buf;
}

const char *sstc_layer_ref_name(const sstc_model *m, int j) { return j < 0 ? "the input" : m->layers[j].name; }

/* ---- pooling windows ---------------------------------------------------- */

const sstc_key_def sstc_layer_pool_keys[] = {
    {.key = "size", .type = SSTC_KEY_INT, .off = LF(size), .lo = 1, .hi = 64, .def = "2"},
    {.key = "stride", .type = SSTC_KEY_INT, .off = LF(stride), .lo = 1, .hi = 64}, /* default: size */
    {.key = "pad", .type = SSTC_KEY_INT, .off = LF(pad), .lo = 0, .hi = 32, .def = "0"},
    {0}};

int sstc_layer_pool_complete(sstc_layer_spec *s, char *err, size_t errlen) {
    if (s->stride <= 0) s->stride = s->size; /* not given: non-overlapping windows */
    return 0;
}

int sstc_layer_pool_build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    int oh = 0, ow = 0, k = s->size, pad = s->pad;
    if (sstc_layer_need_image(l) || sstc_layer_window_out(l, k, s->stride, pad, &oh, &ow)) return sstc_errcode();
    if (2 * pad > k)
        return sstc_fail(SSTC_EINVAL, "%s layer '%s': pad %d larger than half the kernel %d",
                         sstc_layer_kind_name(l->kind), l->name, pad, k);
    l->kernel = k;
    l->stride = s->stride;
    l->pad = pad;
    l->out_ndim = 3;
    l->out_shape[0] = l->in_shape[0];
    l->out_shape[1] = oh;
    l->out_shape[2] = ow;
    return 0;
}

void sstc_layer_window_describe(const sstc_model *m, const sstc_layer *l, char *buf, size_t n) {
    snprintf(buf, n, "k=%d s=%d p=%d", l->kernel, l->stride, l->pad);
}
