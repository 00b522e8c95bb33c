/* Export of a compressed network: the .sst file (packed codes with the folded
 * affine) and the .npz of decoded weights. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

int sstc_compress_write_sst(const sstc_compressor *c, const char *path) {
    if (c->method == SSTC_METHOD_NM)
        return sstc_fail(SSTC_EINVAL, "write_sst: float N:M sparse networks have no ternary codes to store");
    sstc_session *s = c->s;
    const sstc_model *m = sstc_session_model(s);
    int in_c, in_h, in_w, classes;
    sstc_session_shape(s, &in_c, &in_h, &in_w, &classes);
    const sstc_normalizer *norm = sstc_session_normalizer(s);
    /* count records: dropout is dropped, a batch norm after a weight layer is folded */
    int n = m->in_perm ? 1 : 0; /* a permute record first */
    for (int i = 0; i < m->nlayers; i++) {
        const sstc_layer *l = &m->layers[i];
        if (l->kind == SSTC_LAYER_DROPOUT) continue;
        if (l->kind == SSTC_LAYER_BATCHNORM && i > 0 &&
            (m->layers[i - 1].kind == SSTC_LAYER_LINEAR || m->layers[i - 1].kind == SSTC_LAYER_CONV2D))
            continue;
        n++;
    }
    sstc_sst_model *sm = sstc_sst_model_new(n);
    if (!sm) return sstc_errcode() ? sstc_errcode() : sstc_fail(SSTC_ENOMEM, "write_sst: out of memory");
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
        if (l->kind == SSTC_LAYER_DROPOUT) continue;
        if (l->kind == SSTC_LAYER_BATCHNORM && i > 0 &&
            (m->layers[i - 1].kind == SSTC_LAYER_LINEAR || m->layers[i - 1].kind == SSTC_LAYER_CONV2D))
            continue;
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
            const sstc_layer *bn = i + 1 < m->nlayers && m->layers[i + 1].kind == SSTC_LAYER_BATCHNORM ? &m->layers[i + 1] : NULL;
            L->coded = cl != NULL;
            if (cl) {
                L->N = c->N;
                L->K = c->K;
                L->per_row_delta = 0;
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
                    L->scale[o] = a * so * cl->delta;
                    L->bias[o] = a * bo + b;
                } else {
                    const float *w = l->weight->data + (size_t)o * cols;
                    for (int j = 0; j < cols; j++) L->weight[(size_t)o * cols + j] = a * so * w[j];
                    L->bias[o] = a * bo + b;
                }
            }
            if (cl) {
                L->delta[0] = cl->delta;
                free(T);
                T = malloc((size_t)rows * cols);
                if (!T) {
                    rc = sstc_fail(SSTC_ENOMEM, "write_sst: out of memory");
                    break;
                }
                if ((rc = sstc_project_matrix(l->weight->data, rows, cols, c->N, c->K, &cl->delta, 0, T))) break;
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
        default: rc = sstc_fail(SSTC_EINVAL, "write_sst: layer '%s' of kind %d has no .sst record", l->name, (int)l->kind);
        }
        if (rc) sstc_fail_prefix(rc, "layer '%s': ", l->name);
    }
    free(T);
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
    int rc = sstc_export_npz(m, path);
    if (c->quantizing)
        for (int k = 0; k < c->ncoded; k++) m->layers[c->coded[k].layer].weight->data = saved[k];
    return rc;
}
