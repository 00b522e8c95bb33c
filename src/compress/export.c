/* Export of a compressed network: the .sst file (packed codes with the folded
 * affine; shortcuts and routes as records that refer to earlier records) and
 * the .npz of decoded weights (shortcut, route and global average pooling
 * layers have no tensors, so the .npz needs nothing for them). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/internal.h"
#include "sstc/compress.h"
#include "sstc/sst.h"

static const sstc_coded_layer *coded_of(const sstc_compressor *c, int layer) {
    for (int k = 0; k < c->ncoded; k++)
        if (c->coded[k].layer == layer) return &c->coded[k];
    return NULL;
}

/* Batch norm in evaluation mode as y = a*x + b per channel. */
static void bn_affine(const sstc_layer *bn, int ch, float *a, float *b) {
    float inv = 1.0f / sqrtf(bn->running_var->data[ch] + bn->eps);
    *a = bn->weight->data[ch] * inv;
    *b = bn->bias->data[ch] - *a * bn->running_mean->data[ch];
}

_Static_assert(SSTC_MAX_ROUTE <= SSTC_SST_MAX_ROUTE, "a route of the model fits a route record");

/* Model layer indices -> .sst record indices. Dropout has no record (its
 * output is its input's); a batch norm right after a linear or conv layer
 * folds into that layer's record (so the record's output is the norm's),
 * unless a shortcut or route reads the layer's own output, which folding
 * would lose: then the norm stays a record of its own. rec[i] is the record
 * whose output is layer i's output; the model input (-1) is record 0 when a
 * permute record carries the fan-in interleaving (the network sees the
 * permuted input), else the .sst network input. Returns the record count, or
 * a negative error naming the layer for a reference that does not point to
 * an earlier layer. */
static int map_records(const sstc_model *m, int *rec, uint8_t *folded) {
    uint8_t *read_later = calloc((size_t)m->nlayers + 1, 1); /* [j + 1]: layer j (or the input, -1) */
    if (!read_later) return sstc_fail(SSTC_ENOMEM, "write_sst: out of memory");
    int rc = SSTC_OK;
    for (int i = 0; i < m->nlayers && !rc; i++) {
        const sstc_layer *l = &m->layers[i];
        int nref = l->kind == SSTC_LAYER_SHORTCUT ? 1 : l->kind == SSTC_LAYER_ROUTE ? l->nroute : 0;
        if (l->kind == SSTC_LAYER_ROUTE && (l->nroute < 1 || l->nroute > SSTC_MAX_ROUTE))
            rc = sstc_fail(SSTC_EINVAL, "write_sst: layer '%s' (route) has %d sources, expected 1..%d", l->name,
                           l->nroute, SSTC_MAX_ROUTE);
        for (int k = 0; k < nref && !rc; k++) {
            int j = l->kind == SSTC_LAYER_SHORTCUT ? l->from : l->route[k];
            if (j < -1 || j >= i)
                rc = sstc_fail(SSTC_EINVAL, "write_sst: layer '%s' (%s) reads layer %d, which is not an earlier layer",
                               l->name, l->kind == SSTC_LAYER_SHORTCUT ? "shortcut" : "route", j);
            else read_later[j + 1] = 1;
        }
    }
    int input = m->in_perm ? 0 : SSTC_SST_INPUT, n = m->in_perm ? 1 : 0;
    for (int i = 0; i < m->nlayers && !rc; i++) {
        const sstc_layer *l = &m->layers[i];
        int prev_kind = i ? (int)m->layers[i - 1].kind : -1;
        folded[i] = l->kind == SSTC_LAYER_BATCHNORM &&
                    (prev_kind == SSTC_LAYER_LINEAR || prev_kind == SSTC_LAYER_CONV2D) && !read_later[(i - 1) + 1];
        if (l->kind == SSTC_LAYER_DROPOUT || folded[i]) rec[i] = i ? rec[i - 1] : input;
        else rec[i] = n++;
    }
    free(read_later);
    return rc ? rc : n;
}

/* The .sst index of what model layer j (or the input, -1) outputs. */
static int record_of(const sstc_model *m, const int *rec, int j) {
    if (j >= 0) return rec[j];
    return m->in_perm ? 0 : SSTC_SST_INPUT;
}

int sstc_compress_sst_model(const sstc_compressor *c, const sstc_model *m, int in_c, int in_h, int in_w, int classes,
                            const sstc_normalizer *norm, sstc_sst_model **out) {
    *out = NULL;
    if (c->method == SSTC_METHOD_NM)
        return sstc_fail(SSTC_EINVAL, "write_sst: float N:M sparse networks have no ternary codes to store");
    int *rec = malloc(((size_t)m->nlayers + 1) * sizeof *rec);
    uint8_t *folded = calloc((size_t)m->nlayers + 1, 1);
    int n = rec && folded ? map_records(m, rec, folded) : sstc_fail(SSTC_ENOMEM, "write_sst: out of memory");
    sstc_sst_model *sm = n > 0 ? sstc_sst_model_new(n) : NULL; /* sets the message on failure */
    if (!sm) {
        free(rec), free(folded);
        return n < 0 ? n : n == 0 ? sstc_fail(SSTC_EINVAL, "write_sst: the model has no layers") : sstc_errcode();
    }
    sm->in_c = in_c;
    sm->in_h = in_h;
    sm->in_w = in_w;
    sm->num_classes = classes;
    for (int ch = 0; ch < in_c && ch < 4; ch++) {
        sm->in_mean[ch] = norm->mean[ch];
        sm->in_std[ch] = norm->std[ch];
    }
    int rc = 0, r = 0;
    int8_t *T = NULL;
    if (m->in_perm) {
        sstc_sst_layer *L = &sm->layers[r++];
        L->kind = SSTC_SST_PERMUTE;
        L->out = L->in = sstc_model_input_size(m);
        if (!(rc = sstc_sst_layer_alloc(L)))
            for (int j = 0; j < L->out; j++) L->perm[j] = (uint32_t)m->in_perm[j];
    }
    for (int i = 0; i < m->nlayers && !rc; i++) {
        const sstc_layer *l = &m->layers[i];
        if (l->kind == SSTC_LAYER_DROPOUT || folded[i]) continue;
        sstc_sst_layer *L = &sm->layers[r++];
        switch (l->kind) {
        case SSTC_LAYER_LINEAR:
        case SSTC_LAYER_CONV2D: {
            int conv = l->kind == SSTC_LAYER_CONV2D;
            L->kind = conv ? SSTC_SST_CONV : SSTC_SST_FC;
            L->out = l->out_features;
            L->in = conv ? l->in_shape[0] : l->in_features;
            if (conv) {
                L->kh = L->kw = l->kernel;
                L->stride = l->stride;
                L->pad = l->pad;
            }
            const sstc_coded_layer *cl = coded_of(c, i);
            const sstc_layer *bn = i + 1 < m->nlayers && folded[i + 1] ? &m->layers[i + 1] : NULL;
            L->coded = cl != NULL;
            if (cl) {
                L->N = c->N;
                L->K = c->K;
                L->per_row_delta = cl->row_delta != NULL;
            }
            if ((rc = sstc_sst_layer_alloc(L))) break;
            int rows = l->out_features, cols = l->in_features;
            for (int o = 0; o < rows; o++) {
                /* y = s_o * (W x)_o + b_o, then the batch norm a*y + b' */
                float so = l->out_scale ? l->out_scale->data[o] : 1.0f;
                float bo = l->bias ? l->bias->data[o] : 0.0f;
                float a = 1.0f, b = 0.0f;
                if (bn) bn_affine(bn, o, &a, &b);
                if (cl) {
                    L->scale[o] = a * so * (cl->row_delta ? cl->row_delta[o] : cl->delta);
                    L->bias[o] = a * bo + b;
                } else {
                    const float *w = l->weight->data + (size_t)o * cols;
                    for (int j = 0; j < cols; j++) L->weight[(size_t)o * cols + j] = a * so * w[j];
                    L->bias[o] = a * bo + b;
                }
            }
            if (cl) {
                if (cl->row_delta) memcpy(L->delta, cl->row_delta, (size_t)rows * sizeof(float));
                else L->delta[0] = cl->delta;
                free(T);
                T = malloc((size_t)rows * cols);
                if (!T) {
                    rc = sstc_fail(SSTC_ENOMEM, "write_sst: out of memory");
                    break;
                }
                if ((rc = sstc_project_matrix(l->weight->data, rows, cols, c->N, c->K, cl->row_delta ? cl->row_delta : &cl->delta,
                                              cl->row_delta != NULL, T))) break;
                /* the codes the network was evaluated with */
                if (memcmp(T, cl->t, (size_t)rows * cols)) {
                    rc = sstc_fail(SSTC_ESTATE, "write_sst: layer '%s': codes differ from the evaluated ones", l->name);
                    break;
                }
                rc = sstc_sst_layer_set_ternary(L, T);
            }
            break;
        }
        case SSTC_LAYER_BATCHNORM:
            L->kind = SSTC_SST_BATCHNORM;
            L->out = l->in_shape[0];
            if ((rc = sstc_sst_layer_alloc(L))) break;
            for (int ch = 0; ch < L->out; ch++) bn_affine(l, ch, &L->scale[ch], &L->bias[ch]);
            break;
        case SSTC_LAYER_RELU: L->kind = SSTC_SST_RELU; rc = sstc_sst_layer_alloc(L); break;
        case SSTC_LAYER_MAXPOOL:
        case SSTC_LAYER_AVGPOOL:
            L->kind = l->kind == SSTC_LAYER_MAXPOOL ? SSTC_SST_MAXPOOL : SSTC_SST_AVGPOOL;
            L->kh = L->kw = l->kernel;
            L->stride = l->stride;
            L->pad = l->pad;
            rc = sstc_sst_layer_alloc(L);
            break;
        case SSTC_LAYER_FLATTEN: L->kind = SSTC_SST_FLATTEN; rc = sstc_sst_layer_alloc(L); break;
        case SSTC_LAYER_SHORTCUT:
            L->kind = SSTC_SST_SHORTCUT;
            L->from = record_of(m, rec, l->from);
            L->activation = l->activation == SSTC_ACT_RELU ? SSTC_SST_ACT_RELU : SSTC_SST_ACT_LINEAR;
            if (l->activation != SSTC_ACT_RELU && l->activation != SSTC_ACT_LINEAR)
                rc = sstc_fail(SSTC_EINVAL, "write_sst: activation %d has no .sst code", l->activation);
            break;
        case SSTC_LAYER_ROUTE:
            L->kind = SSTC_SST_ROUTE;
            L->n_route = l->nroute;
            for (int k = 0; k < l->nroute; k++) L->route[k] = record_of(m, rec, l->route[k]);
            break;
        case SSTC_LAYER_GLOBALAVGPOOL: L->kind = SSTC_SST_GLOBALAVGPOOL; break;
        default: rc = sstc_fail(SSTC_EINVAL, "write_sst: layer '%s' of kind %d has no .sst record", l->name, (int)l->kind);
        }
        if (rc) sstc_fail_prefix(rc, "layer '%s': ", l->name);
    }
    free(T);
    free(rec), free(folded);
    if (rc) sstc_sst_free(sm);
    else *out = sm;
    return rc;
}

int sstc_compress_write_sst(const sstc_compressor *c, const char *path) {
    sstc_session *s = c->s;
    int in_c, in_h, in_w, classes;
    sstc_session_shape(s, &in_c, &in_h, &in_w, &classes);
    sstc_sst_model *sm = NULL;
    int rc = sstc_compress_sst_model(c, sstc_session_model(s), in_c, in_h, in_w, classes, sstc_session_normalizer(s), &sm);
    /* the file says how its network's test figures were measured */
    if (!rc && sstc_session_config(s)->test_flip) sm->eval_flags |= SSTC_SST_EVAL_FLIP;
    if (!rc) rc = sstc_sst_write(path, sm);
    sstc_sst_free(sm);
    return rc;
}

int sstc_compress_write_npz(const sstc_compressor *c, const char *path) {
    sstc_model *m = sstc_session_model(c->s);
    float *saved[SSTC_MAX_CODED] = {0};
    if (c->quantizing)
        for (int k = 0; k < c->ncoded; k++) {
            sstc_tensor *w = m->layers[c->coded[k].layer].weight;
            saved[k] = w->data;
            w->data = c->coded[k].q; /* decoded delta*t */
        }
    int rc = sstc_session_export_npz(c->s, path);
    if (c->quantizing)
        for (int k = 0; k < c->ncoded; k++) m->layers[c->coded[k].layer].weight->data = saved[k];
    return rc;
}
