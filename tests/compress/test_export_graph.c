/* The .sst writer on a model with skip connections: model layer indices
 * become record indices (folded batch norms and dropout have no record), a
 * batch norm stays a record when a shortcut reads the output before it, and
 * the inference engine running the file gives what the model's own layers
 * compute (a plain-loop reference over the model's tensors). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/internal.h"
#include "sstc/compress.h"
#include "sstc/infer.h"
#include "sstc/sst.h"

/* The layer is set up directly, without the model's add function for its
 * kind: an appended ReLU (the previous layer's shape) turned into the kind,
 * its fields and shapes filled in by the caller. */
static sstc_layer *append(sstc_model *m, sstc_layer_kind kind, const char *name) {
    cr_assert_eq(sstc_model_add_relu(m, name), SSTC_OK, "%s", sstc_errmsg());
    sstc_layer *l = &m->layers[m->nlayers - 1];
    l->kind = kind;
    return l;
}

/* 3x6x6 -> 0 conv1 3->4 (coded), 1 bn1, 2 relu1, 3 conv2 4->4, 4 bn2,
 * 5 shortcut from 2 (relu), 6 conv3 4->4, 7 bn3, 8 shortcut from 6 (conv3
 * before bn3; linear), 9 dropout, 10 route [9, 2] (8 channels),
 * 11 globalavgpool, 12 fc 8->5. */
static sstc_model *graph_model(sstc_rng *r) {
    sstc_model *m = sstc_model_create(3, (int[]){3, 6, 6});
    cr_assert_not_null(m);
    cr_assert_eq(sstc_model_add_conv2d(m, "conv1", 4, 3, 1, 1, 0), SSTC_OK);
    cr_assert_eq(sstc_model_add_batchnorm(m, "bn1", 1e-5f, 0.1f), SSTC_OK);
    cr_assert_eq(sstc_model_add_relu(m, "relu1"), SSTC_OK);
    cr_assert_eq(sstc_model_add_conv2d(m, "conv2", 4, 3, 1, 1, 1), SSTC_OK);
    cr_assert_eq(sstc_model_add_batchnorm(m, "bn2", 1e-5f, 0.1f), SSTC_OK);
    sstc_layer *l = append(m, SSTC_LAYER_SHORTCUT, "sc1");
    l->from = 2, l->activation = SSTC_ACT_RELU;
    cr_assert_eq(sstc_model_add_conv2d(m, "conv3", 4, 3, 1, 1, 1), SSTC_OK);
    cr_assert_eq(sstc_model_add_batchnorm(m, "bn3", 1e-5f, 0.1f), SSTC_OK);
    l = append(m, SSTC_LAYER_SHORTCUT, "sc2");
    l->from = 6, l->activation = SSTC_ACT_LINEAR;
    cr_assert_eq(sstc_model_add_dropout(m, "drop", 0.2f), SSTC_OK);
    l = append(m, SSTC_LAYER_ROUTE, "route");
    l->nroute = 2, l->route[0] = 9, l->route[1] = 2;
    l->out_shape[0] = 8;
    l = append(m, SSTC_LAYER_GLOBALAVGPOOL, "gap");
    l->in_shape[0] = 8;
    l->out_ndim = 1, l->out_shape[0] = 8, l->out_shape[1] = l->out_shape[2] = 0;
    cr_assert_eq(sstc_model_add_linear(m, "fc", 5, 1), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[12].in_features, 8);
    sstc_model_init(m, SSTC_INIT_HE, r);
    for (int i = 0; i < m->nlayers; i++) {
        sstc_layer *b = &m->layers[i];
        if (b->kind != SSTC_LAYER_BATCHNORM) continue;
        for (int c = 0; c < 4; c++) {
            b->weight->data[c] = 0.5f + sstc_rng_uniform(r);
            b->bias->data[c] = 0.3f * sstc_rng_normal(r);
            b->running_mean->data[c] = 0.2f * sstc_rng_normal(r);
            b->running_var->data[c] = 0.5f + sstc_rng_uniform(r);
        }
    }
    for (int i = 0; i < m->nlayers; i++)
        if (m->layers[i].bias)
            for (size_t k = 0; k < m->layers[i].bias->size; k++) m->layers[i].bias->data[k] = 0.1f * sstc_rng_normal(r);
    return m;
}

/* The model's function on one normalized sample, from its own tensors in
 * double (coded layers compute with delta*T, as the compressed network does). */
static void model_reference(const sstc_model *m, const float *q1, const float *x, double *logits) {
    double *out[16] = {0};
    int C[16], H[16], W[16];
    int c0 = m->in_shape[0], h0 = m->in_shape[1], w0 = m->in_shape[2];
    double *input = malloc((size_t)c0 * h0 * w0 * sizeof(double));
    for (int i = 0; i < c0 * h0 * w0; i++) input[i] = x[i];
    for (int li = 0; li < m->nlayers; li++) {
        const sstc_layer *l = &m->layers[li];
        const double *in = li ? out[li - 1] : input;
        int c = li ? C[li - 1] : c0, h = li ? H[li - 1] : h0, w = li ? W[li - 1] : w0;
        int oc = c, oh = h, ow = w;
        double *y;
        if (l->kind == SSTC_LAYER_CONV2D) {
            const float *wt = li == 0 ? q1 : l->weight->data;
            int k = l->kernel, p = l->pad, s = l->stride;
            oc = l->out_features, oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
            y = calloc((size_t)oc * oh * ow, sizeof(double));
            for (int o = 0; o < oc; o++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) {
                        double acc = l->bias ? l->bias->data[o] : 0;
                        for (int ci = 0; ci < c; ci++)
                            for (int ky = 0; ky < k; ky++)
                                for (int kx = 0; kx < k; kx++) {
                                    int iy = oy * s - p + ky, ix = ox * s - p + kx;
                                    if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                        acc += (double)wt[((o * c + ci) * k + ky) * k + kx] * in[(ci * h + iy) * w + ix];
                                }
                        y[(o * oh + oy) * ow + ox] = acc;
                    }
        } else if (l->kind == SSTC_LAYER_LINEAR) {
            oc = l->out_features, oh = ow = 1;
            y = calloc((size_t)oc, sizeof(double));
            for (int o = 0; o < oc; o++) {
                double acc = l->bias ? l->bias->data[o] : 0;
                for (int j = 0; j < l->in_features; j++) acc += (double)l->weight->data[o * l->in_features + j] * in[j];
                y[o] = acc;
            }
        } else if (l->kind == SSTC_LAYER_BATCHNORM) {
            y = malloc((size_t)c * h * w * sizeof(double));
            for (int ci = 0; ci < c; ci++) {
                double a = l->weight->data[ci] / sqrt((double)l->running_var->data[ci] + l->eps);
                for (int i = 0; i < h * w; i++)
                    y[ci * h * w + i] = a * (in[ci * h * w + i] - l->running_mean->data[ci]) + l->bias->data[ci];
            }
        } else if (l->kind == SSTC_LAYER_SHORTCUT) {
            y = malloc((size_t)c * h * w * sizeof(double));
            const double *s = l->from < 0 ? input : out[l->from];
            for (int i = 0; i < c * h * w; i++) {
                double v = in[i] + s[i];
                y[i] = l->activation == SSTC_ACT_RELU && v < 0 ? 0 : v;
            }
        } else if (l->kind == SSTC_LAYER_ROUTE) {
            oc = 0;
            for (int k = 0; k < l->nroute; k++) oc += C[l->route[k]];
            y = malloc((size_t)oc * h * w * sizeof(double));
            for (int k = 0, at = 0; k < l->nroute; k++) {
                memcpy(y + at, out[l->route[k]], (size_t)C[l->route[k]] * h * w * sizeof(double));
                at += C[l->route[k]] * h * w;
            }
        } else if (l->kind == SSTC_LAYER_GLOBALAVGPOOL) {
            oh = ow = 1;
            y = calloc((size_t)c, sizeof(double));
            for (int ci = 0; ci < c; ci++) {
                for (int i = 0; i < h * w; i++) y[ci] += in[ci * h * w + i];
                y[ci] /= h * w;
            }
        } else { /* relu, dropout (identity) */
            y = malloc((size_t)c * h * w * sizeof(double));
            for (int i = 0; i < c * h * w; i++) y[i] = l->kind == SSTC_LAYER_RELU && in[i] < 0 ? 0 : in[i];
        }
        out[li] = y, C[li] = oc, H[li] = oh, W[li] = ow;
    }
    for (int k = 0; k < C[m->nlayers - 1]; k++) logits[k] = out[m->nlayers - 1][k];
    for (int li = 0; li < m->nlayers; li++) free(out[li]);
    free(input);
}

Test(compress_export, shortcuts_and_routes_map_to_records_and_keep_the_outputs_they_read) {
    sstc_rng r;
    sstc_rng_seed(&r, 93);
    sstc_model *m = graph_model(&r);
    sstc_normalizer norm = {.c = 3};
    for (int c = 0; c < 3; c++) norm.mean[c] = 0.4f + 0.05f * (float)c, norm.std[c] = 0.25f;
    /* conv1 coded (8,2): the codes the network computes with */
    static sstc_compressor comp;
    memset(&comp, 0, sizeof comp);
    comp.method = SSTC_METHOD_SST, comp.N = 8, comp.K = 2, comp.ncoded = 1;
    sstc_coded_layer *cl = &comp.coded[0];
    cl->layer = 0, cl->rows = 4, cl->cols = 27;
    const float *w1 = m->layers[0].weight->data;
    cr_assert_eq(sstc_fit_delta(w1, 4, 27, 8, 2, 0, &cl->delta, NULL), SSTC_OK);
    cl->t = malloc(4 * 27);
    cr_assert_eq(sstc_project_matrix(w1, 4, 27, 8, 2, &cl->delta, 0, cl->t), SSTC_OK);
    float q1[4 * 27];
    for (int i = 0; i < 4 * 27; i++) q1[i] = cl->delta * cl->t[i];

    sstc_sst_model *built = NULL, *sm = NULL;
    cr_assert_eq(sstc_compress_sst_model(&comp, m, 3, 6, 6, 5, &norm, &built), SSTC_OK, "%s", sstc_errmsg());
    uint8_t *img;
    size_t n;
    cr_assert_eq(sstc_sst_write_mem(built, &img, &n), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(img[4], 2, "a version-2 file");
    cr_assert_eq(sstc_sst_read_mem(img, n, &sm), SSTC_OK, "%s", sstc_errmsg());
    free(img);
    sstc_sst_free(built);
    /* conv1+bn1, relu1, conv2+bn2, sc1, conv3, bn3 (kept: sc2 reads conv3), sc2, route, gap, fc */
    const sstc_sst_kind kinds[] = {SSTC_SST_CONV,     SSTC_SST_RELU,      SSTC_SST_CONV,     SSTC_SST_SHORTCUT,
                                   SSTC_SST_CONV,     SSTC_SST_BATCHNORM, SSTC_SST_SHORTCUT, SSTC_SST_ROUTE,
                                   SSTC_SST_GLOBALAVGPOOL, SSTC_SST_FC};
    cr_assert_eq(sm->n_layers, 10, "%d records", sm->n_layers);
    for (int i = 0; i < 10; i++) cr_assert_eq(sm->layers[i].kind, kinds[i], "record %d", i);
    cr_assert(sm->layers[0].coded);
    cr_assert_eq(sm->layers[3].from, 1, "sc1 reads relu1 = record 1");
    cr_assert_eq(sm->layers[3].activation, SSTC_SST_ACT_RELU);
    cr_assert_eq(sm->layers[6].from, 4, "sc2 reads conv3 before its batch norm = record 4");
    cr_assert_eq(sm->layers[6].activation, SSTC_SST_ACT_LINEAR);
    cr_assert_eq(sm->layers[7].n_route, 2);
    cr_assert_eq(sm->layers[7].route[0], 6, "the dropout's output is sc2's, record 6");
    cr_assert_eq(sm->layers[7].route[1], 1);
    /* conv3's record holds the unfolded weights */
    cr_assert_eq(memcmp(sm->layers[4].weight, m->layers[6].weight->data, 4 * 36 * sizeof(float)), 0);

    /* the engine on the file gives the model's function */
    sstc_engine *e;
    cr_assert_eq(sstc_engine_create(sm, &e), SSTC_OK, "%s", sstc_errmsg());
    uint8_t px[108];
    float x[108], lg[5];
    double ref[5];
    for (int t = 0; t < 5; t++) {
        for (int i = 0; i < 108; i++) px[i] = (uint8_t)sstc_rng_below(&r, 256);
        for (int i = 0; i < 108; i++) x[i] = ((float)px[i] / 255.0f - norm.mean[i / 36]) / norm.std[i / 36];
        cr_assert_eq(sstc_engine_forward_pixels(e, px, 1, lg), SSTC_OK);
        model_reference(m, q1, x, ref);
        double mx = 1e-3, err = 0;
        for (int k = 0; k < 5; k++) mx = fmax(mx, fabs(ref[k])), err = fmax(err, fabs(lg[k] - ref[k]));
        cr_assert_leq(err, 1e-4 * mx, "image %d: max |engine - model| %g (largest logit %g)", t, err, mx);
    }
    sstc_engine_free(e);
    sstc_sst_free(sm);

    /* a reference to a later layer is refused, naming the layer */
    m->layers[5].from = 7;
    cr_assert_eq(sstc_compress_sst_model(&comp, m, 3, 6, 6, 5, &norm, &built), SSTC_EINVAL);
    cr_assert_null(built);
    cr_assert_neq(strstr(sstc_errmsg(), "'sc1' (shortcut) reads layer 7"), NULL, "%s", sstc_errmsg());
    m->layers[5].from = 2;
    m->layers[10].route[1] = 10;
    cr_assert_eq(sstc_compress_sst_model(&comp, m, 3, 6, 6, 5, &norm, &built), SSTC_EINVAL);
    cr_assert_neq(strstr(sstc_errmsg(), "'route' (route) reads layer 10"), NULL, "%s", sstc_errmsg());
    free(cl->t);
    sstc_model_free(m);
}
