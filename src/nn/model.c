/* The model: a list of layers whose kinds are described in the layer registry
 * (src/nn/layers/). Appending, initializing, running and printing a layer go
 * through its kind's descriptor. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/layer.h"
#include "sstc/nn.h"
#include "core/internal.h"

sstc_model *sstc_model_create(int in_ndim, const int *in_shape) {
    if ((in_ndim != 1 && in_ndim != 3) || !in_shape) {
        sstc_fail(SSTC_EINVAL, "model: input must be (F) or (C,H,W), got %d dimensions", in_ndim);
        return NULL;
    }
    for (int i = 0; i < in_ndim; i++)
        if (in_shape[i] <= 0) {
            sstc_fail(SSTC_EINVAL, "model: input dimension %d is %d, expected > 0", i, in_shape[i]);
            return NULL;
        }
    sstc_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->params = sstc_ctx_create(1 << 20);
    if (!m->params) {
        free(m);
        return NULL;
    }
    m->in_ndim = in_ndim;
    memcpy(m->in_shape, in_shape, (size_t)in_ndim * sizeof(int));
    return m;
}

void sstc_model_free(sstc_model *m) {
    if (!m) return;
    sstc_ctx_free(m->params);
    free(m->layers);
    free(m->in_perm);
    free(m);
}

int sstc_model_input_size(const sstc_model *m) {
    int n = 1;
    for (int i = 0; i < m->in_ndim; i++) n *= m->in_shape[i];
    return n;
}

int sstc_model_set_input_permutation(sstc_model *m, const int *perm) {
    if (!m) return sstc_fail(SSTC_EINVAL, "set_input_permutation: NULL model");
    if (!perm) {
        free(m->in_perm);
        m->in_perm = NULL;
        return 0;
    }
    int n = sstc_model_input_size(m);
    int *p = malloc((size_t)n * sizeof *p);
    char *seen = calloc((size_t)n, 1);
    if (!p || !seen) {
        free(p), free(seen);
        return sstc_fail(SSTC_ENOMEM, "set_input_permutation: out of memory");
    }
    for (int i = 0; i < n; i++) {
        if (perm[i] < 0 || perm[i] >= n || seen[perm[i]]) {
            int v = perm[i];
            free(p), free(seen);
            return sstc_fail(SSTC_EINVAL, "set_input_permutation: entry %d is %d, expected a permutation of 0..%d", i, v,
                             n - 1);
        }
        seen[perm[i]] = 1;
        p[i] = perm[i];
    }
    free(seen);
    free(m->in_perm);
    m->in_perm = p;
    return 0;
}

/* Output shape of the last layer (or the input). */
static void cur_shape(const sstc_model *m, int *ndim, int *shape) {
    if (m->nlayers == 0) {
        *ndim = m->in_ndim;
        memcpy(shape, m->in_shape, sizeof m->in_shape);
    } else {
        const sstc_layer *l = &m->layers[m->nlayers - 1];
        *ndim = l->out_ndim;
        memcpy(shape, l->out_shape, sizeof l->out_shape);
    }
}

/* Layer m->nlayers, named and with its input shape, not yet counted. */
static sstc_layer *new_layer(sstc_model *m, const sstc_layer_desc *d, const char *name) {
    if (m->nlayers == m->cap) {
        int cap = m->cap ? m->cap * 2 : 16;
        sstc_layer *n = realloc(m->layers, (size_t)cap * sizeof *n);
        if (!n) {
            sstc_fail(SSTC_ENOMEM, "model: out of memory");
            return NULL;
        }
        m->layers = n;
        m->cap = cap;
    }
    sstc_layer *l = &m->layers[m->nlayers];
    memset(l, 0, sizeof *l);
    l->kind = d->kind;
    if (name && *name) {
        if (strlen(name) >= sizeof l->name) {
            sstc_fail(SSTC_EINVAL, "model: layer name '%s' longer than %zu characters", name, sizeof l->name - 1);
            return NULL;
        }
        snprintf(l->name, sizeof l->name, "%s", name);
    } else {
        int count = 1;
        for (int i = 0; i < m->nlayers; i++) count += m->layers[i].kind == d->kind;
        snprintf(l->name, sizeof l->name, "%s%d", d->prefix, count);
    }
    /* names key the tensors of checkpoints and .npz files: never two alike,
     * also when a given name equals a later layer's default one */
    for (int i = 0; i < m->nlayers; i++)
        if (!strcmp(m->layers[i].name, l->name)) {
            if (name && *name) sstc_fail(SSTC_EINVAL, "model: layer name '%s' used twice", l->name);
            else
                sstc_fail(SSTC_EINVAL, "model: layer %d is named '%s', the default name of this %s layer; give one of them "
                          "another name", i, l->name, d->kind_name);
            return NULL;
        }
    cur_shape(m, &l->in_ndim, l->in_shape);
    return l;
}

int sstc_model_add(sstc_model *m, const sstc_layer_spec *s) {
    if (!m || !s) return sstc_fail(SSTC_EINVAL, "model_add: NULL %s", m ? "spec" : "model");
    const sstc_layer_desc *d = sstc_layer_desc_of(s->kind);
    if (!d) return sstc_fail(SSTC_EINVAL, "model_add: unknown layer kind %d", (int)s->kind);
    sstc_layer *l = new_layer(m, d, s->name);
    if (!l) return sstc_errcode();
    int rc = d->build(m, l, s);
    if (rc) return rc;
    if (l->out_ndim == 1) m->num_classes = l->out_shape[0];
    m->nlayers++;
    return 0;
}

/* The spec of a sstc_model_add_* call. */
static sstc_layer_spec spec(sstc_layer_kind kind, const char *name) {
    sstc_layer_spec s;
    sstc_layer_spec_defaults(&s, kind);
    if (name) snprintf(s.name, sizeof s.name, "%.*s", (int)sizeof s.name - 1, name);
    return s;
}

/* A name too long for a spec is still reported as too long. */
static int add_named(sstc_model *m, sstc_layer_spec *s, const char *name) {
    if (name && strlen(name) >= sizeof s->name)
        return sstc_fail(SSTC_EINVAL, "model: layer name '%s' longer than %zu characters", name, sizeof s->name - 1);
    return sstc_model_add(m, s);
}

int sstc_model_add_linear(sstc_model *m, const char *name, int out_features, int bias) {
    sstc_layer_spec s = spec(SSTC_LAYER_LINEAR, name);
    s.outputs = out_features;
    s.bias = bias;
    return add_named(m, &s, name);
}

int sstc_model_add_conv2d(sstc_model *m, const char *name, int out_channels, int kernel, int stride, int pad,
                          int bias) {
    sstc_layer_spec s = spec(SSTC_LAYER_CONV2D, name);
    s.outputs = out_channels;
    s.size = kernel;
    s.stride = stride;
    s.pad = pad;
    s.bias = bias;
    return add_named(m, &s, name);
}

int sstc_model_add_batchnorm(sstc_model *m, const char *name, float eps, float momentum) {
    sstc_layer_spec s = spec(SSTC_LAYER_BATCHNORM, name);
    s.eps = eps;
    s.momentum = momentum;
    return add_named(m, &s, name);
}

int sstc_model_add_relu(sstc_model *m, const char *name) {
    sstc_layer_spec s = spec(SSTC_LAYER_RELU, name);
    return add_named(m, &s, name);
}

int sstc_model_add_dropout(sstc_model *m, const char *name, float p) {
    sstc_layer_spec s = spec(SSTC_LAYER_DROPOUT, name);
    s.p = p;
    return add_named(m, &s, name);
}

static int add_pool(sstc_model *m, sstc_layer_kind kind, const char *name, int k, int stride, int pad) {
    sstc_layer_spec s = spec(kind, name);
    s.size = k;
    s.stride = stride;
    s.pad = pad;
    return add_named(m, &s, name);
}

int sstc_model_add_maxpool(sstc_model *m, const char *name, int k, int stride, int pad) {
    return add_pool(m, SSTC_LAYER_MAXPOOL, name, k, stride, pad);
}
int sstc_model_add_avgpool(sstc_model *m, const char *name, int k, int stride, int pad) {
    return add_pool(m, SSTC_LAYER_AVGPOOL, name, k, stride, pad);
}

int sstc_model_add_flatten(sstc_model *m, const char *name) {
    sstc_layer_spec s = spec(SSTC_LAYER_FLATTEN, name);
    return add_named(m, &s, name);
}

int sstc_model_add_shortcut(sstc_model *m, const char *name, int from, int activation) {
    sstc_layer_spec s = spec(SSTC_LAYER_SHORTCUT, name);
    s.from = from;
    s.activation = activation;
    return add_named(m, &s, name);
}

int sstc_model_add_route(sstc_model *m, const char *name, int n, const int *layers) {
    if (n < 1 || n > SSTC_MAX_ROUTE || !layers)
        return sstc_fail(SSTC_EINVAL, "route layer: %d layers, expected 1..%d", n, SSTC_MAX_ROUTE);
    sstc_layer_spec s = spec(SSTC_LAYER_ROUTE, name);
    s.nroute = n;
    memcpy(s.route, layers, (size_t)n * sizeof *layers);
    return add_named(m, &s, name);
}

int sstc_model_add_globalavgpool(sstc_model *m, const char *name) {
    sstc_layer_spec s = spec(SSTC_LAYER_GLOBALAVGPOOL, name);
    return add_named(m, &s, name);
}

void sstc_init_he(sstc_tensor *w, int fan_in, sstc_rng *rng) {
    float sd = sqrtf(2.0f / (float)fan_in);
    for (size_t i = 0; i < w->size; i++) w->data[i] = sd * sstc_rng_normal(rng);
}

void sstc_init_xavier(sstc_tensor *w, int fan_in, int fan_out, sstc_rng *rng) {
    float a = sqrtf(6.0f / (float)(fan_in + fan_out));
    for (size_t i = 0; i < w->size; i++) w->data[i] = a * (2.0f * sstc_rng_uniform(rng) - 1.0f);
}

void sstc_model_init(sstc_model *m, sstc_init init, sstc_rng *rng) {
    for (int i = 0; i < m->nlayers; i++) {
        const sstc_layer_desc *d = sstc_layer_registry[m->layers[i].kind];
        if (d->init) d->init(&m->layers[i], init, rng);
    }
}

void sstc_model_train(sstc_model *m, int training) { m->training = training; }

/* Layer i is a [batchnorm] whose output only the [relu] right after it reads
 * (no later [shortcut] or [route] names it): the two can run as one op. */
static int bn_relu_fusable(const sstc_model *m, int i) {
    if (i + 1 >= m->nlayers || m->layers[i].kind != SSTC_LAYER_BATCHNORM || m->layers[i + 1].kind != SSTC_LAYER_RELU)
        return 0;
    for (int j = i + 2; j < m->nlayers; j++) {
        const sstc_layer *l = &m->layers[j];
        if (l->kind == SSTC_LAYER_SHORTCUT && l->from == i) return 0;
        if (l->kind == SSTC_LAYER_ROUTE)
            for (int k = 0; k < l->nroute; k++)
                if (l->route[k] == i) return 0;
    }
    return 1;
}

sstc_tensor *sstc_model_forward(sstc_model *m, sstc_ctx *ctx, sstc_tensor *x) {
    if (!m || !ctx || !x) {
        sstc_fail(SSTC_EINVAL, "model_forward: NULL %s", !m ? "model" : !ctx ? "context" : "input");
        return NULL;
    }
    /* The input must be (B, in_shape...). */
    int ok = x->ndim == m->in_ndim + 1;
    for (int i = 0; ok && i < m->in_ndim; i++) ok = x->shape[i + 1] == m->in_shape[i];
    if (!ok) {
        char sb[64];
        sstc_fail(SSTC_ESHAPE, "model_forward: input %s, expected (B,%d%s%s)", sstc_shape_str(x, sb, sizeof sb),
                  m->in_shape[0], m->in_ndim == 3 ? ",H,W" : "", "");
        return NULL;
    }
    sstc_ctx_set_training(ctx, m->training);
    sstc_tensor *h = x;
    if (m->in_perm) {
        /* the permuted input as a leaf of x's shape: nothing upstream needs a gradient */
        int B = x->shape[0], F = sstc_model_input_size(m);
        h = sstc_tensor_new(ctx, x->ndim, x->shape);
        if (!h) return NULL;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < F; i++) h->data[(size_t)b * F + i] = x->data[(size_t)b * F + m->in_perm[i]];
    }
    /* every layer's output stays reachable for the shortcuts and routes after it */
    sstc_layer_outputs outs = {.input = h, .layer = NULL};
    if (m->nlayers > 0) {
        outs.layer = sstc_ctx_alloc(ctx, (size_t)m->nlayers * sizeof *outs.layer);
        if (!outs.layer) return NULL;
    }
    int fuse = sstc_fuse_enabled();
    for (int i = 0; i < m->nlayers && h; i++) {
        sstc_layer *l = &m->layers[i];
        const sstc_layer_desc *d = sstc_layer_desc_of(l->kind);
        if (!d) {
            sstc_fail(SSTC_ESTATE, "model_forward: layer '%s' has unknown kind %d", l->name, (int)l->kind);
            return NULL;
        }
        if (fuse && bn_relu_fusable(m, i)) {
            /* batch norm and ReLU in one pass each way; the batch norm's own
             * output does not exist (nothing reads it) */
            h = sstc_batchnorm_relu(ctx, h, l->weight, l->bias, l->running_mean, l->running_var, l->momentum, l->eps);
            if (!h) {
                sstc_fail_prefix(sstc_errcode(), "layer '%s': ", l->name);
                break;
            }
            outs.layer[i] = NULL;
            outs.layer[++i] = h;
            continue;
        }
        h = outs.layer[i] = d->forward(ctx, l, h, &outs);
        if (!h) sstc_fail_prefix(sstc_errcode(), "layer '%s': ", l->name);
    }
    if (h && h->ndim != 2) h = sstc_flatten(ctx, h);
    return h;
}

/* A layer's named tensors, in the order they are listed; returns how many. */
typedef struct {
    const char *suffix;
    sstc_tensor *t;
    int trainable;
} layer_item;
static int layer_items(sstc_layer *l, layer_item items[5]) {
    layer_item all[5] = {{"weight", l->weight, 1},
                         {"bias", l->bias, 1},
                         {"running_mean", l->running_mean, 0},
                         {"running_var", l->running_var, 0},
                         {"out_scale", l->out_scale, 0}};
    int n = 0;
    for (int k = 0; k < 5; k++)
        if (all[k].t) items[n++] = all[k];
    return n;
}

int sstc_model_named_tensors(sstc_model *m, sstc_named_tensor *out, int cap) {
    int n = 0;
    for (int i = 0; i < m->nlayers; i++) {
        sstc_layer *l = &m->layers[i];
        layer_item items[5];
        int k = layer_items(l, items);
        for (int j = 0; j < k; j++, n++) {
            if (!out || n >= cap) continue;
            snprintf(out[n].name, sizeof out[n].name, "%s.%s", l->name, items[j].suffix);
            out[n].tensor = items[j].t;
            out[n].layer = l;
            out[n].trainable = items[j].trainable;
        }
    }
    return n;
}

sstc_tensor *sstc_model_find(sstc_model *m, const char *name) {
    const char *dot = strrchr(name, '.');
    for (int i = 0; dot && i < m->nlayers; i++) {
        sstc_layer *l = &m->layers[i];
        if (strlen(l->name) != (size_t)(dot - name) || strncmp(l->name, name, (size_t)(dot - name))) continue;
        layer_item items[5];
        int k = layer_items(l, items);
        for (int j = 0; j < k; j++)
            if (!strcmp(items[j].suffix, dot + 1)) return items[j].t;
    }
    sstc_fail(SSTC_EINVAL, "model: no parameter named '%s'", name);
    return NULL;
}

int sstc_layer_add_out_scale(sstc_model *m, sstc_layer *l) {
    const sstc_layer_desc *d = sstc_layer_desc_of(l->kind);
    if (!d || !(d->flags & SSTC_LAYER_WEIGHTED))
        return sstc_fail(SSTC_EINVAL, "layer '%s': only linear and conv2d layers take an output scale", l->name);
    if (l->out_scale) return 0;
    l->out_scale = sstc_tensor_1d(m->params, l->out_features);
    if (!l->out_scale) return sstc_errcode();
    sstc_tensor_fill(l->out_scale, 1.0f);
    return 0;
}

size_t sstc_model_num_params(sstc_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->nlayers; i++) {
        if (m->layers[i].weight) n += m->layers[i].weight->size;
        if (m->layers[i].bias) n += m->layers[i].bias->size;
    }
    return n;
}

void sstc_model_zero_grad(sstc_model *m) {
    for (int i = 0; i < m->nlayers; i++) {
        sstc_zero_grad(m->layers[i].weight);
        sstc_zero_grad(m->layers[i].bias);
    }
}

void sstc_model_print(const sstc_model *m, FILE *f) {
    for (int i = 0; i < m->nlayers; i++) {
        const sstc_layer *l = &m->layers[i];
        const sstc_layer_desc *d = sstc_layer_desc_of(l->kind);
        char in[48], out[48], more[160] = "";
        if (l->in_ndim == 3) snprintf(in, sizeof in, "%dx%dx%d", l->in_shape[0], l->in_shape[1], l->in_shape[2]);
        else snprintf(in, sizeof in, "%d", l->in_shape[0]);
        if (l->out_ndim == 3) snprintf(out, sizeof out, "%dx%dx%d", l->out_shape[0], l->out_shape[1], l->out_shape[2]);
        else snprintf(out, sizeof out, "%d", l->out_shape[0]);
        if (d && d->describe) d->describe(m, l, more, sizeof more);
        fprintf(f, "  %-10s %-9s %s -> %s", l->name, sstc_layer_kind_name(l->kind), in, out);
        if (more[0]) fprintf(f, "  (%s)", more);
        fprintf(f, "\n");
    }
}
