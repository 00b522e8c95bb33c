/* Route, as Darknet's [route]: the concatenation, along the channel axis and in
 * list order, of earlier layers' outputs (or the model's input). Image outputs
 * must agree in height and width, feature vectors are joined end to end. A
 * route with one layer passes that output on unchanged (no copy): a way to
 * branch from an earlier point, as a projection shortcut does. */
#include "internal.h"

static const sstc_key_def keys[] = {
    {.key = "layers", .type = SSTC_KEY_INTLIST, .off = LF(route), .lo = -1024, .hi = SSTC_MAX_ROUTE,
     .required = 1, .count_off = LF(nroute)},
    {0}};

static int build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s) {
    if (s->nroute < 1 || s->nroute > SSTC_MAX_ROUTE)
        return sstc_fail(SSTC_EINVAL, "route layer '%s': %d layers, expected 1..%d", l->name, s->nroute,
                         SSTC_MAX_ROUTE);
    int self = m->nlayers, nd0 = 0, shape0[3] = {0}, first = 0;
    for (int i = 0; i < s->nroute; i++) {
        int j, nd, shape[3];
        if (sstc_layer_resolve_ref(l, self, "layers", s->route[i], &j)) return sstc_errcode();
        sstc_layer_shape_of(m, j, &nd, shape);
        if (i == 0) {
            nd0 = nd, first = j;
            memcpy(shape0, shape, sizeof shape);
        } else if (nd != nd0 || (nd == 3 && (shape[1] != shape0[1] || shape[2] != shape0[2]))) {
            char a[48], b[48];
            return sstc_fail(SSTC_ESHAPE,
                             "route layer '%s': %s gives %s and %s gives %s; expected images of the same height "
                             "and width, or feature vectors",
                             l->name, sstc_layer_ref_name(m, first), sstc_layer_shape_str(nd0, shape0, a, sizeof a),
                             sstc_layer_ref_name(m, j), sstc_layer_shape_str(nd, shape, b, sizeof b));
        } else {
            shape0[0] += shape[0];
        }
        l->route[i] = j;
    }
    l->nroute = s->nroute;
    l->out_ndim = nd0;
    memcpy(l->out_shape, shape0, sizeof shape0);
    return 0;
}

static sstc_tensor *forward(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs) {
    sstc_tensor *src[SSTC_MAX_ROUTE];
    for (int i = 0; i < l->nroute; i++) src[i] = sstc_layer_output(outs, l->route[i]);
    return l->nroute == 1 ? src[0] : sstc_concat(ctx, l->nroute, src);
}

static void describe(const sstc_model *m, const sstc_layer *l, char *buf, size_t n) {
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < l->nroute && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%s", i ? ", " : "", sstc_layer_ref_name(m, l->route[i]));
}

const sstc_layer_desc sstc_layer_route = {
    .kind = SSTC_LAYER_ROUTE,
    .section = "route",
    .prefix = "route",
    .kind_name = "route",
    .keys = keys,
    .build = build,
    .forward = forward,
    .describe = describe,
};
