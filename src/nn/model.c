#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/nn.h"

static const char *const kind_names[SSTC_LAYER_KIND_COUNT] = {
    "linear", "conv2d", "batchnorm", "relu", "maxpool", "avgpool", "dropout", "flatten"};
/* Prefixes of default layer names. */
static const char *const kind_prefix[SSTC_LAYER_KIND_COUNT] = {
    "fc", "conv", "bn", "relu", "maxpool", "avgpool", "dropout", "flatten"};

const char *sstc_layer_kind_name(sstc_layer_kind k) {
    return (k >= 0 && k < SSTC_LAYER_KIND_COUNT) ? kind_names[k] : "unknown";
}

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

static sstc_layer *new_layer(sstc_model *m, sstc_layer_kind kind, const char *name) {
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
    l->kind = kind;
    if (name && *name) {
        if (strlen(name) >= sizeof l->name) {
            sstc_fail(SSTC_EINVAL, "model: layer name '%s' longer than %zu characters", name, sizeof l->name - 1);
            return NULL;
        }
        for (int i = 0; i < m->nlayers; i++)
            if (!strcmp(m->layers[i].name, name)) {
                sstc_fail(SSTC_EINVAL, "model: layer name '%s' used twice", name);
                return NULL;
            }
        snprintf(l->name, sizeof l->name, "%s", name);
    } else {
        int count = 1;
        for (int i = 0; i < m->nlayers; i++) count += m->layers[i].kind == kind;
        snprintf(l->name, sizeof l->name, "%s%d", kind_prefix[kind], count);
    }
    cur_shape(m, &l->in_ndim, l->in_shape);
    return l;
}

static int features(const sstc_layer *l) {
    int f = 1;
    for (int i = 0; i < l->in_ndim; i++) f *= l->in_shape[i];
    return f;
}

static sstc_tensor *param(sstc_model *m, int ndim, const int *shape) {
    return sstc_param_new(m->params, ndim, shape);
}

int sstc_model_add_linear(sstc_model *m, const char *name, int out_features, int bias) {
    if (out_features <= 0)
        return sstc_fail(SSTC_EINVAL, "linear layer: %d outputs, expected > 0", out_features);
    sstc_layer *l = new_layer(m, SSTC_LAYER_LINEAR, name);
    if (!l) return sstc_errcode();
    l->in_features = features(l);
    l->out_features = out_features;
    l->has_bias = bias;
    l->out_ndim = 1;
    l->out_shape[0] = out_features;
    l->weight = param(m, 2, (int[]){out_features, l->in_features});
    if (bias) l->bias = param(m, 1, (int[]){out_features});
    if (!l->weight || (bias && !l->bias)) return sstc_errcode();
    m->num_classes = out_features;
    m->nlayers++;
    return 0;
}

static int need_image(sstc_layer *l, const char *what) {
    if (l->in_ndim != 3)
        return sstc_fail(SSTC_ESHAPE, "%s layer '%s': input has %d features, expected an image (C,H,W)",
                         what, l->name, features(l));
    return 0;
}

static int window_out(sstc_layer *l, const char *what, int k, int stride, int pad, int *oh, int *ow) {
    int H = l->in_shape[1], W = l->in_shape[2];
    if (k < 1 || stride < 1 || pad < 0)
        return sstc_fail(SSTC_EINVAL, "%s layer '%s': kernel %d, stride %d, pad %d; expected kernel >= 1, stride >= 1, pad >= 0",
                         what, l->name, k, stride, pad);
    if (H + 2 * pad < k || W + 2 * pad < k)
        return sstc_fail(SSTC_ESHAPE, "%s layer '%s': kernel %d does not fit the input %dx%d (pad %d)",
                         what, l->name, k, H, W, pad);
    *oh = (H + 2 * pad - k) / stride + 1;
    *ow = (W + 2 * pad - k) / stride + 1;
    return 0;
}

int sstc_model_add_conv2d(sstc_model *m, const char *name, int out_channels, int kernel, int stride,
                          int pad, int bias) {
    if (out_channels <= 0)
        return sstc_fail(SSTC_EINVAL, "conv2d layer: %d output channels, expected > 0", out_channels);
    sstc_layer *l = new_layer(m, SSTC_LAYER_CONV2D, name);
    int oh, ow;
    if (!l || need_image(l, "conv2d") || window_out(l, "conv2d", kernel, stride, pad, &oh, &ow))
        return sstc_errcode();
    int C = l->in_shape[0];
    l->in_features = C * kernel * kernel;
    l->out_features = out_channels;
    l->kernel = kernel;
    l->stride = stride;
    l->pad = pad;
    l->has_bias = bias;
    l->out_ndim = 3;
    l->out_shape[0] = out_channels;
    l->out_shape[1] = oh;
    l->out_shape[2] = ow;
    l->weight = param(m, 4, (int[]){out_channels, C, kernel, kernel});
    if (bias) l->bias = param(m, 1, (int[]){out_channels});
    if (!l->weight || (bias && !l->bias)) return sstc_errcode();
    m->nlayers++;
    return 0;
}

int sstc_model_add_batchnorm(sstc_model *m, const char *name, float eps, float momentum) {
    if (!(eps > 0) || !(momentum >= 0 && momentum <= 1))
        return sstc_fail(SSTC_EINVAL, "batchnorm layer: eps %g, momentum %g; expected eps > 0, 0 <= momentum <= 1",
                         (double)eps, (double)momentum);
    sstc_layer *l = new_layer(m, SSTC_LAYER_BATCHNORM, name);
    if (!l) return sstc_errcode();
    int C = l->in_shape[0];
    l->eps = eps;
    l->momentum = momentum;
    l->out_ndim = l->in_ndim;
    memcpy(l->out_shape, l->in_shape, sizeof l->in_shape);
    l->weight = param(m, 1, (int[]){C});
    l->bias = param(m, 1, (int[]){C});
    l->running_mean = sstc_tensor_1d(m->params, C);
    l->running_var = sstc_tensor_1d(m->params, C);
    if (!l->weight || !l->bias || !l->running_mean || !l->running_var) return sstc_errcode();
    sstc_tensor_fill(l->weight, 1.0f);
    sstc_tensor_fill(l->running_var, 1.0f);
    l->has_bias = 1;
    m->nlayers++;
    return 0;
}

static int add_same_shape(sstc_model *m, sstc_layer_kind kind, const char *name, float p) {
    sstc_layer *l = new_layer(m, kind, name);
    if (!l) return sstc_errcode();
    l->p = p;
    l->out_ndim = l->in_ndim;
    memcpy(l->out_shape, l->in_shape, sizeof l->in_shape);
    m->nlayers++;
    return 0;
}

int sstc_model_add_relu(sstc_model *m, const char *name) {
    return add_same_shape(m, SSTC_LAYER_RELU, name, 0);
}

int sstc_model_add_dropout(sstc_model *m, const char *name, float p) {
    if (!(p >= 0 && p < 1))
        return sstc_fail(SSTC_EINVAL, "dropout layer: p = %g, expected 0 <= p < 1", (double)p);
    return add_same_shape(m, SSTC_LAYER_DROPOUT, name, p);
}

static int add_pool(sstc_model *m, sstc_layer_kind kind, const char *name, int k, int stride, int pad) {
    sstc_layer *l = new_layer(m, kind, name);
    const char *what = kind_names[kind];
    int oh, ow;
    if (!l || need_image(l, what) || window_out(l, what, k, stride, pad, &oh, &ow)) return sstc_errcode();
    if (2 * pad > k)
        return sstc_fail(SSTC_EINVAL, "%s layer '%s': pad %d larger than half the kernel %d", what, l->name, pad, k);
    l->kernel = k;
    l->stride = stride;
    l->pad = pad;
    l->out_ndim = 3;
    l->out_shape[0] = l->in_shape[0];
    l->out_shape[1] = oh;
    l->out_shape[2] = ow;
    m->nlayers++;
    return 0;
}

int sstc_model_add_maxpool(sstc_model *m, const char *name, int k, int stride, int pad) {
    return add_pool(m, SSTC_LAYER_MAXPOOL, name, k, stride, pad);
}
int sstc_model_add_avgpool(sstc_model *m, const char *name, int k, int stride, int pad) {
    return add_pool(m, SSTC_LAYER_AVGPOOL, name, k, stride, pad);
}

int sstc_model_add_flatten(sstc_model *m, const char *name) {
    sstc_layer *l = new_layer(m, SSTC_LAYER_FLATTEN, name);
    if (!l) return sstc_errcode();
    l->out_ndim = 1;
    l->out_shape[0] = features(l);
    m->nlayers++;
    return 0;
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
        sstc_layer *l = &m->layers[i];
        if (l->kind == SSTC_LAYER_LINEAR || l->kind == SSTC_LAYER_CONV2D) {
            int fan_in = l->in_features;
            int fan_out = l->kind == SSTC_LAYER_LINEAR ? l->out_features
                                                       : l->out_features * l->kernel * l->kernel;
            if (init == SSTC_INIT_HE) sstc_init_he(l->weight, fan_in, rng);
            else sstc_init_xavier(l->weight, fan_in, fan_out, rng);
            if (l->bias) sstc_tensor_fill(l->bias, 0.0f);
        } else if (l->kind == SSTC_LAYER_BATCHNORM) {
            sstc_tensor_fill(l->weight, 1.0f);
            sstc_tensor_fill(l->bias, 0.0f);
            sstc_tensor_fill(l->running_mean, 0.0f);
            sstc_tensor_fill(l->running_var, 1.0f);
        }
    }
}

void sstc_model_train(sstc_model *m, int training) { m->training = training; }

/* The tensor a layer computes with: its weight, or the override values with
 * gradients routed to the weight (straight-through estimator). */
static sstc_tensor *effective_weight(sstc_ctx *ctx, sstc_layer *l) {
    if (!l->weight_override) return l->weight;
    sstc_tensor *w = sstc_tensor_wrap(ctx, l->weight_override, l->weight->ndim, l->weight->shape);
    if (!w) return NULL;
    w->grad = l->weight->grad;
    w->requires_grad = l->weight->requires_grad;
    return w;
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
        /* the permuted input as a flat (B, F) leaf: nothing upstream needs a gradient */
        int B = x->shape[0], F = sstc_model_input_size(m);
        h = sstc_tensor_2d(ctx, B, F);
        if (!h) return NULL;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < F; i++) h->data[(size_t)b * F + i] = x->data[(size_t)b * F + m->in_perm[i]];
    }
    for (int i = 0; i < m->nlayers && h; i++) {
        sstc_layer *l = &m->layers[i];
        switch (l->kind) {
        case SSTC_LAYER_LINEAR:
            if (h->ndim != 2) h = sstc_flatten(ctx, h);
            if (l->out_scale) {
                h = sstc_channel_scale(ctx, sstc_linear(ctx, h, effective_weight(ctx, l), NULL), l->out_scale);
                if (l->bias) h = sstc_bias_add(ctx, h, l->bias);
            } else {
                h = sstc_linear(ctx, h, effective_weight(ctx, l), l->bias);
            }
            break;
        case SSTC_LAYER_CONV2D:
            if (l->out_scale) {
                h = sstc_channel_scale(ctx, sstc_conv2d(ctx, h, effective_weight(ctx, l), NULL, l->stride, l->pad),
                                       l->out_scale);
                if (l->bias) h = sstc_bias_add(ctx, h, l->bias);
            } else {
                h = sstc_conv2d(ctx, h, effective_weight(ctx, l), l->bias, l->stride, l->pad);
            }
            break;
        case SSTC_LAYER_BATCHNORM:
            h = sstc_batchnorm(ctx, h, l->weight, l->bias, l->running_mean, l->running_var, l->momentum, l->eps);
            break;
        case SSTC_LAYER_RELU: h = sstc_relu(ctx, h); break;
        case SSTC_LAYER_MAXPOOL: h = sstc_maxpool2d(ctx, h, l->kernel, l->stride, l->pad); break;
        case SSTC_LAYER_AVGPOOL: h = sstc_avgpool2d(ctx, h, l->kernel, l->stride, l->pad); break;
        case SSTC_LAYER_DROPOUT: h = sstc_dropout(ctx, h, l->p); break;
        case SSTC_LAYER_FLATTEN: h = sstc_flatten(ctx, h); break;
        default:
            sstc_fail(SSTC_ESTATE, "model_forward: layer '%s' has unknown kind %d", l->name, (int)l->kind);
            return NULL;
        }
        if (!h) sstc_fail_prefix(sstc_errcode(), "layer '%s': ", l->name);
    }
    if (h && h->ndim != 2) h = sstc_flatten(ctx, h);
    return h;
}

int sstc_model_named_tensors(sstc_model *m, sstc_named_tensor *out, int cap) {
    int n = 0;
    for (int i = 0; i < m->nlayers; i++) {
        sstc_layer *l = &m->layers[i];
        struct { const char *suffix; sstc_tensor *t; int trainable; } items[5] = {
            {"weight", l->weight, 1}, {"bias", l->bias, 1},
            {"running_mean", l->running_mean, 0}, {"running_var", l->running_var, 0},
            {"out_scale", l->out_scale, 0}};
        for (int k = 0; k < 5; k++) {
            if (!items[k].t) continue;
            if (out && n < cap) {
                snprintf(out[n].name, sizeof out[n].name, "%s.%s", l->name, items[k].suffix);
                out[n].tensor = items[k].t;
                out[n].layer = l;
                out[n].trainable = items[k].trainable;
            }
            n++;
        }
    }
    return n;
}

sstc_tensor *sstc_model_find(sstc_model *m, const char *name) {
    sstc_named_tensor buf[256];
    int n = sstc_model_named_tensors(m, buf, 256);
    for (int i = 0; i < n && i < 256; i++)
        if (!strcmp(buf[i].name, name)) return buf[i].tensor;
    sstc_fail(SSTC_EINVAL, "model: no parameter named '%s'", name);
    return NULL;
}

int sstc_layer_add_out_scale(sstc_model *m, sstc_layer *l) {
    if (l->kind != SSTC_LAYER_LINEAR && l->kind != SSTC_LAYER_CONV2D)
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
        char in[48], out[48];
        if (l->in_ndim == 3) snprintf(in, sizeof in, "%dx%dx%d", l->in_shape[0], l->in_shape[1], l->in_shape[2]);
        else snprintf(in, sizeof in, "%d", l->in_shape[0]);
        if (l->out_ndim == 3) snprintf(out, sizeof out, "%dx%dx%d", l->out_shape[0], l->out_shape[1], l->out_shape[2]);
        else snprintf(out, sizeof out, "%d", l->out_shape[0]);
        fprintf(f, "  %-10s %-9s %s -> %s", l->name, kind_names[l->kind], in, out);
        if (l->kind == SSTC_LAYER_CONV2D || l->kind == SSTC_LAYER_MAXPOOL || l->kind == SSTC_LAYER_AVGPOOL)
            fprintf(f, "  (k=%d s=%d p=%d)", l->kernel, l->stride, l->pad);
        if (l->kind == SSTC_LAYER_DROPOUT) fprintf(f, "  (p=%g)", (double)l->p);
        fprintf(f, "\n");
    }
}
