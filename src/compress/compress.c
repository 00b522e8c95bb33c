/* The compression pipeline (see include/sstc/compress.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/compress.h"
#include "sstc/sst.h"

static int is_weight_layer(const sstc_layer *l) {
    return l->kind == SSTC_LAYER_LINEAR || l->kind == SSTC_LAYER_CONV2D;
}

int sstc_compress_init(sstc_compressor *c, sstc_session *s) {
    memset(c, 0, sizeof *c);
    c->s = s;
    c->spec = sstc_session_config(s)->compress;
    const sstc_compress_spec *z = &c->spec;
    const char *path = sstc_session_config(s)->path;
    if (!z->present)
        return sstc_fail(SSTC_ECONFIG, "%s: no [compress] section; add one (see docs/config.md)", path);
    c->method = z->method;
    c->N = z->N;
    c->K = z->K;
    if (c->method == SSTC_METHOD_TERNARY) {
        if (z->nstages)
            return sstc_fail(SSTC_ECONFIG, "%s:%d: [compress] plain ternary has no group structure to prune gradually; remove schedule",
                             path, z->line);
        c->N = c->K = 1; /* each weight its own group: t in {-1,0,1}, 2 bits */
    }
    if (sstc_code_count(c->N, c->K) == 0)
        return sstc_fail(SSTC_ECONFIG, "%s:%d: [compress] (N,K) = (%d,%d); expected 1 <= K <= N <= 16", path, z->line, c->N, c->K);
    /* layers */
    sstc_model *m = sstc_session_model(s);
    int cand[SSTC_MAX_LAYERS], ncand = 0;
    const sstc_layer_select *sel = &z->layers;
    /* every listed name must be a weight layer */
    for (int k = 0; sel->mode == SSTC_SELECT_NAMES && k < sel->nnames; k++) {
        int found = 0;
        for (int i = 0; i < m->nlayers; i++)
            if (!strcmp(m->layers[i].name, sel->names[k])) found = is_weight_layer(&m->layers[i]) ? 1 : -1;
        if (found <= 0)
            return sstc_fail(SSTC_ECONFIG, "%s:%d: [compress] layers: '%s' %s", path, z->line, sel->names[k],
                             found < 0 ? "is not a fc or conv layer" : "is not a layer of this network");
    }
    for (int i = 0; i < m->nlayers && ncand < SSTC_MAX_LAYERS; i++) {
        sstc_layer *l = &m->layers[i];
        if (!is_weight_layer(l)) continue;
        int take = 0;
        switch (sel->mode) {
        case SSTC_SELECT_ALL: take = 1; break;
        case SSTC_SELECT_FC: take = l->kind == SSTC_LAYER_LINEAR; break;
        case SSTC_SELECT_CONV: take = l->kind == SSTC_LAYER_CONV2D; break;
        case SSTC_SELECT_NAMES:
            for (int k = 0; k < sel->nnames; k++) take |= !strcmp(sel->names[k], l->name);
            break;
        }
        if (take) cand[ncand++] = i;
    }
    int from = z->skip_first ? 1 : 0, to = ncand - (z->skip_last ? 1 : 0);
    if (to - from <= 0) {
        char sels[SSTC_MAX_CODED * 33];
        sstc_layer_select_str(sel, sels, sizeof sels);
        return sstc_fail(SSTC_ECONFIG, "%s:%d: [compress] no layer left to code (layers = %s, skip_first = %d, skip_last = %d)",
                         path, z->line, sels, z->skip_first, z->skip_last);
    }
    if (to - from > SSTC_MAX_CODED)
        return sstc_fail(SSTC_ECONFIG, "%s:%d: [compress] %d layers to code, at most %d", path, z->line, to - from, SSTC_MAX_CODED);
    for (int k = from; k < to; k++) {
        sstc_layer *l = &m->layers[cand[k]];
        sstc_coded_layer *cl = &c->coded[c->ncoded++];
        cl->layer = cand[k];
        cl->rows = l->out_features;
        cl->cols = l->in_features;
        cl->q = malloc(l->weight->size * sizeof(float));
        cl->t = malloc(l->weight->size);
        if (!cl->q || !cl->t) return sstc_fail(SSTC_ENOMEM, "compress: out of memory");
        cl->delta = 1.0f;
        if (z->row_delta) {
            if (!(cl->row_delta = malloc((size_t)cl->rows * sizeof(float)))) return sstc_fail(SSTC_ENOMEM, "compress: out of memory");
            for (int r = 0; r < cl->rows; r++) cl->row_delta[r] = 1.0f;
        }
    }
    /* phases */
    int e = 0;
    for (int k = 0; k < z->nstages; k++) {
        c->phases[c->nphases++] = (sstc_phase){SSTC_PHASE_PRUNE, z->schedule[k], e, z->stage_epochs};
        e += z->stage_epochs;
    }
    c->phases[c->nphases++] = (sstc_phase){c->method == SSTC_METHOD_NM ? SSTC_PHASE_PRUNE : SSTC_PHASE_QUANT, c->K, e,
                                           z->retrain_epochs};
    c->total_epochs = e + z->retrain_epochs;
    c->phase_started = -1;
    return 0;
}

void sstc_compress_free(sstc_compressor *c) {
    for (int i = 0; i < c->ncoded; i++) {
        if (c->s && sstc_session_model(c->s)) sstc_session_model(c->s)->layers[c->coded[i].layer].weight_override = NULL;
        free(c->coded[i].mask);
        free(c->coded[i].q);
        free(c->coded[i].t);
        free(c->coded[i].row_delta);
    }
    c->ncoded = 0;
}

/* Index of the batch norm that directly follows layer i, or -1. */
static int following_bn(const sstc_model *m, int i) {
    return i + 1 < m->nlayers && m->layers[i + 1].kind == SSTC_LAYER_BATCHNORM ? i + 1 : -1;
}

static int wants_row_norm(const sstc_compressor *c) { return (c->spec.normalize & SSTC_CNORM_ROW) != 0; }
static int wants_interleave(const sstc_compressor *c) { return (c->spec.normalize & SSTC_CNORM_INTERLEAVE) != 0; }

/* Reorders the rows of an (n x len) float array: new row p = old row old_of[p]. */
static int permute_rows(float *a, int n, size_t len, const int *old_of) {
    float *tmp = malloc((size_t)n * len * sizeof(float));
    if (!tmp) return sstc_fail(SSTC_ENOMEM, "interleave: out of memory");
    memcpy(tmp, a, (size_t)n * len * sizeof(float));
    for (int p = 0; p < n; p++) memcpy(a + (size_t)p * len, tmp + (size_t)old_of[p] * len, len * sizeof(float));
    free(tmp);
    return 0;
}

/* Interleaving (docs/method.md section 8.1, beyond the paper): the fan-in of coded
 * layer L comes from the output channels of an earlier weight layer P through
 * per-channel layers only (batch norm, ReLU, dropout, pooling, flatten), so
 * the channels can be renumbered without changing the network's function:
 * P's rows (and bias, output scale, the batch norms' parameters and
 * statistics in between) and L's matching column blocks move together. The
 * new order deals the channels, ranked by the energy of L's weights on them,
 * round-robin into the groups of N, so every group mixes important and
 * unimportant inputs. A channel block of b columns (b = kernel area for a
 * convolution, H*W after a flatten) puts N/b channels in a group; when b >= N
 * a group lies within one or two channels and nothing is gained: the layer is
 * left as it is, as is a layer whose input is the image. Returns 1 if the
 * layer was reordered, 0 if not, -1 on error. */
/* Ranks C channels by decreasing importance and deals them round-robin into
 * groups of `per` consecutive positions: old_of[p] = the channel placed at p.
 * Returns 1 if that is not the identity, -1 when out of memory. */
static int deal_channels(const double *importance, int C, int per, int *old_of) {
    int G = (C + per - 1) / per;
    int *rank = malloc((size_t)C * sizeof(int)), *slot = malloc((size_t)C * sizeof(int));
    if (!rank || !slot) {
        free(rank), free(slot);
        sstc_fail(SSTC_ENOMEM, "interleave: out of memory");
        return -1;
    }
    /* by decreasing importance, ties by index (insertion sort: once, C in the thousands) */
    for (int i = 0; i < C; i++) {
        int j = i;
        while (j > 0 && importance[rank[j - 1]] < importance[i]) {
            rank[j] = rank[j - 1];
            j--;
        }
        rank[j] = i;
    }
    /* positions slot-major: slot 0 of every group, then slot 1, ... */
    int n = 0;
    for (int sl = 0; sl < per; sl++)
        for (int g = 0; g < G; g++)
            if (g * per + sl < C) slot[n++] = g * per + sl;
    int changed = 0;
    for (int r = 0; r < C; r++) {
        old_of[slot[r]] = rank[r];
        changed |= slot[r] != rank[r];
    }
    free(rank), free(slot);
    return changed;
}

/* A layer that reads the output of a layer in first..last (-1: the model's
 * input) other than as the next layer's input: a shortcut's `from` or a
 * route's list. Renumbering those channels would change what it reads. -1
 * when none does. */
static int side_reader(const sstc_model *m, int first, int last) {
    for (int q = 0; q < m->nlayers; q++) {
        const sstc_layer *l = &m->layers[q];
        if (l->kind == SSTC_LAYER_SHORTCUT && l->from >= first && l->from <= last) return q;
        if (l->kind == SSTC_LAYER_ROUTE)
            for (int r = 0; r < l->nroute; r++)
                if (l->route[r] >= first && l->route[r] <= last) return q;
        /* a shortcut also adds its previous layer's output: inside the chain
         * that is the chain itself, which is renumbered consistently, but a
         * shortcut right after the chain mixes it with an unrenumbered tensor */
        if (l->kind == SSTC_LAYER_SHORTCUT && q - 1 >= first && q - 1 <= last && q > last + 1) return q;
    }
    return -1;
}

static int refuse_interleave(const sstc_model *m, const sstc_layer *L, int first, int reader) {
    return sstc_fail(SSTC_ECONFIG,
                     "interleave: coded layer '%s' takes its inputs from %s%s, which %s layer '%s' also reads "
                     "(channels that meet in a sum or a concatenation cannot be renumbered without changing the "
                     "network); use normalize = row, or leave '%s' out of [compress] layers",
                     L->name, first < 0 ? "the network's input" : "layer '",
                     first < 0 ? "" : m->layers[first].name, m->layers[reader].kind == SSTC_LAYER_ROUTE ? "route" : "shortcut",
                     m->layers[reader].name, L->name);
}

/* A first FC layer (only flatten or dropout before it): its fan-in is the
 * input itself, so the model gets an input permutation (applied to every
 * sample before the first layer, and exported as the .sst's permute layer).
 * An input's importance is the energy of the layer's weights on it times the
 * variance of the (normalized) input over the training set: an input that
 * never changes (MNIST's border pixels) only shifts the batch norm that
 * follows and matters nothing, whatever its weights. */
static int interleave_input(sstc_compressor *c, sstc_coded_layer *cl) {
    sstc_session *s = c->s;
    sstc_model *m = sstc_session_model(s);
    sstc_layer *L = &m->layers[cl->layer];
    if (L->kind != SSTC_LAYER_LINEAR) return 0;
    int in_h, in_w;
    sstc_session_shape(s, NULL, &in_h, &in_w, NULL);
    const sstc_normalizer *norm = sstc_session_normalizer(s);
    for (int i = 0; i < cl->layer; i++)
        if (m->layers[i].kind != SSTC_LAYER_FLATTEN && m->layers[i].kind != SSTC_LAYER_DROPOUT) return 0;
    int F = cl->cols, hw = in_h * in_w;
    if (F != sstc_model_input_size(m) || F <= c->N || c->N < 2) return 0;
    /* the permutation applies to the input itself: nothing else may read it */
    int reader = side_reader(m, -1, cl->layer - 1);
    if (reader >= 0) {
        refuse_interleave(m, L, -1, reader);
        return -1;
    }
    double *imp = calloc((size_t)F, sizeof(double));
    int *old_of = malloc((size_t)F * sizeof(int)), *perm = malloc((size_t)F * sizeof(int));
    if (!imp || !old_of || !perm) {
        free(imp), free(old_of), free(perm);
        sstc_fail(SSTC_ENOMEM, "interleave: out of memory");
        return -1;
    }
    /* input j of the layer is feature in_perm[j] of the sample (if already permuted) */
    const sstc_dataset *ds = sstc_session_train_set(s);
    if (!ds) {
        free(imp), free(old_of), free(perm);
        sstc_fail(SSTC_ESTATE, "interleave: the session has no training data");
        return -1;
    }
    int n = ds->n < 10000 ? ds->n : 10000;
    for (int j = 0; j < F; j++) {
        int f = m->in_perm ? m->in_perm[j] : j;
        double sum = 0, sq = 0;
        for (int k = 0; k < n; k++) {
            double v = ds->pixels[(size_t)k * F + f];
            sum += v, sq += v * v;
        }
        double var = n ? sq / n - (sum / n) * (sum / n) : 1.0;
        int ch = f / hw;
        double sd = 255.0 * (ch < norm->c && ch < 4 ? norm->std[ch] : 1.0);
        double e = 0;
        for (int r = 0; r < cl->rows; r++) e += (double)L->weight->data[(size_t)r * F + j] * L->weight->data[(size_t)r * F + j];
        imp[j] = e * (var > 0 ? var : 0) / (sd * sd);
    }
    int changed = deal_channels(imp, F, c->N, old_of);
    int rc = changed < 0;
    if (changed > 0) {
        for (int j = 0; j < F; j++) perm[j] = m->in_perm ? m->in_perm[old_of[j]] : old_of[j];
        rc |= sstc_model_set_input_permutation(m, perm) != 0;
        for (int r = 0; r < cl->rows && !rc; r++) rc |= permute_rows(L->weight->data + (size_t)r * F, F, 1, old_of);
    }
    free(imp), free(old_of), free(perm);
    return rc ? -1 : changed;
}

static int interleave_layer(sstc_compressor *c, sstc_coded_layer *cl) {
    sstc_model *m = sstc_session_model(c->s);
    sstc_layer *L = &m->layers[cl->layer];
    int pi = cl->layer - 1;
    while (pi >= 0) {
        sstc_layer_kind k = m->layers[pi].kind;
        if (k == SSTC_LAYER_LINEAR || k == SSTC_LAYER_CONV2D) break;
        if (k != SSTC_LAYER_BATCHNORM && k != SSTC_LAYER_RELU && k != SSTC_LAYER_DROPOUT &&
            k != SSTC_LAYER_MAXPOOL && k != SSTC_LAYER_AVGPOOL && k != SSTC_LAYER_FLATTEN &&
            k != SSTC_LAYER_GLOBALAVGPOOL)
            return 0;
        pi--;
    }
    if (pi < 0) return interleave_input(c, cl);
    sstc_layer *P = &m->layers[pi];
    int C = P->out_features;
    if (C <= 0 || cl->cols % C) return 0;
    int b = cl->cols / C, per = c->N / b; /* channels per group */
    if (per < 2 || C <= per) return 0;
    int reader = side_reader(m, pi, cl->layer - 1);
    if (reader >= 0) {
        refuse_interleave(m, L, pi, reader);
        return -1;
    }
    double *energy = calloc((size_t)C, sizeof(double));
    int *old_of = malloc((size_t)C * sizeof(int));
    if (!energy || !old_of) {
        free(energy), free(old_of);
        sstc_fail(SSTC_ENOMEM, "interleave: out of memory");
        return -1;
    }
    const float *W = L->weight->data;
    for (int r = 0; r < cl->rows; r++)
        for (int j = 0; j < cl->cols; j++) energy[j / b] += (double)W[(size_t)r * cl->cols + j] * W[(size_t)r * cl->cols + j];
    int changed = deal_channels(energy, C, per, old_of);
    int rc = changed < 0;
    if (changed > 0) {
        size_t prow = P->weight->size / (size_t)C;
        rc |= permute_rows(P->weight->data, C, prow, old_of);
        if (P->bias) rc |= permute_rows(P->bias->data, C, 1, old_of);
        if (P->out_scale) rc |= permute_rows(P->out_scale->data, C, 1, old_of);
        for (int i = pi + 1; i < cl->layer; i++) {
            sstc_layer *q = &m->layers[i];
            if (q->kind != SSTC_LAYER_BATCHNORM) continue;
            rc |= permute_rows(q->weight->data, C, 1, old_of);
            rc |= permute_rows(q->bias->data, C, 1, old_of);
            rc |= permute_rows(q->running_mean->data, C, 1, old_of);
            rc |= permute_rows(q->running_var->data, C, 1, old_of);
        }
        /* L's columns: each row's C blocks of b */
        for (int r = 0; r < cl->rows && !rc; r++) rc |= permute_rows(L->weight->data + (size_t)r * cl->cols, C, (size_t)b, old_of);
    }
    free(energy), free(old_of);
    return rc ? -1 : changed;
}

int sstc_compress_prepare_structure(sstc_compressor *c) {
    if (!wants_row_norm(c)) return 0;
    sstc_model *m = sstc_session_model(c->s);
    for (int k = 0; k < c->ncoded; k++) {
        int i = c->coded[k].layer;
        if (following_bn(m, i) < 0) {
            if (sstc_layer_add_out_scale(m, &m->layers[i])) return sstc_errcode();
            c->coded[k].scaled = 1;
        }
    }
    return 0;
}

int sstc_compress_normalize(sstc_compressor *c, int check, double *max_diff) {
    *max_diff = 0;
    if (!wants_row_norm(c) && !wants_interleave(c)) return 0;
    sstc_session *s = c->s;
    sstc_model *m = sstc_session_model(s);
    int classes;
    sstc_session_shape(s, NULL, NULL, NULL, &classes);
    const sstc_dataset *test = sstc_session_test_set(s);
    if (!test) check = 0;
    else if (check > test->n) check = test->n;
    float *before = NULL, *after = NULL;
    if (check > 0) {
        before = malloc((size_t)check * classes * sizeof(float));
        after = malloc((size_t)check * classes * sizeof(float));
        if (!before || !after || sstc_session_logits(s, test, check, before)) {
            free(before);
            free(after);
            return sstc_errcode() ? sstc_errcode() : sstc_fail(SSTC_ENOMEM, "normalize: out of memory");
        }
    }
    c->interleaved = 0;
    for (int k = 0; k < c->ncoded && wants_interleave(c); k++) {
        int r = interleave_layer(c, &c->coded[k]);
        if (r < 0) {
            free(before);
            free(after);
            return sstc_errcode();
        }
        c->interleaved += r;
    }
    if (sstc_compress_prepare_structure(c)) return sstc_errcode();
    for (int k = 0; k < c->ncoded && wants_row_norm(c); k++) {
        sstc_coded_layer *cl = &c->coded[k];
        sstc_layer *l = &m->layers[cl->layer];
        int bn = following_bn(m, cl->layer);
        /* Every row is brought to the RMS of the whole layer (one common
         * distribution per layer). Keeping the layer's overall scale, rather
         * than going to unit RMS, keeps the optimizer's step sizes meaningful
         * for the retraining that follows. */
        double all = 0;
        for (size_t i = 0; i < (size_t)cl->rows * cl->cols; i++) all += (double)l->weight->data[i] * l->weight->data[i];
        double layer_rms = sqrt(all / ((double)cl->rows * cl->cols));
        if (!(layer_rms > 0)) continue;
        for (int r = 0; r < cl->rows; r++) {
            float *w = l->weight->data + (size_t)r * cl->cols;
            double ss = 0;
            for (int j = 0; j < cl->cols; j++) ss += (double)w[j] * w[j];
            float rms = (float)(sqrt(ss / cl->cols) / layer_rms); /* the row's scale relative to the layer */
            if (!(rms > 0)) continue; /* an all-zero row stays as it is */
            for (int j = 0; j < cl->cols; j++) w[j] /= rms;
            if (bn >= 0) {
                /* the batch norm sees y/rms: scale its statistics to match */
                if (l->bias) l->bias->data[r] /= rms;
                /* exact: (y/rms - m/rms) / sqrt(v' + eps) = (y - m) / sqrt(v + eps) */
                float eps = m->layers[bn].eps, *v = &m->layers[bn].running_var->data[r];
                m->layers[bn].running_mean->data[r] /= rms;
                *v = (*v + eps) / (rms * rms) - eps;
            } else {
                l->out_scale->data[r] *= rms;
            }
        }
    }
    if (check > 0) {
        int rc = sstc_session_logits(s, test, check, after);
        if (!rc)
            for (size_t i = 0; i < (size_t)check * classes; i++) {
                double d = fabs((double)after[i] - before[i]);
                if (d > *max_diff) *max_diff = d;
            }
        free(before);
        free(after);
        if (rc) return rc;
    }
    return 0;
}

int sstc_compress_phase_of(const sstc_compressor *c, int epoch) {
    for (int p = 0; p < c->nphases; p++)
        if (epoch < c->phases[p].first_epoch + c->phases[p].epochs) return p;
    return c->nphases;
}

/* Quantized weights of every coded layer from the shadow weights. Rows are
 * independent, so they are split across threads. */
static int quantize_all(sstc_compressor *c) {
    sstc_model *m = sstc_session_model(c->s);
    for (int k = 0; k < c->ncoded; k++) {
        sstc_coded_layer *cl = &c->coded[k];
        const float *W = m->layers[cl->layer].weight->data;
        int rows = cl->rows, cols = cl->cols, N = c->N, K = c->K, bad = 0;
        const float *rd = cl->row_delta;
        float d = cl->delta;
        int chunk = 64;
#pragma omp parallel for schedule(static) reduction(| : bad)
        for (int r0 = 0; r0 < rows; r0 += chunk) {
            int n = rows - r0 < chunk ? rows - r0 : chunk;
            size_t off = (size_t)r0 * cols;
            if (sstc_project_matrix(W + off, n, cols, N, K, rd ? rd + r0 : &d, rd != NULL, cl->t + off)) bad = 1;
            for (int r = r0; r < r0 + n; r++) {
                float dr = rd ? rd[r] : d;
                for (size_t i = (size_t)r * cols; i < (size_t)(r + 1) * cols; i++) cl->q[i] = dr * (float)cl->t[i];
            }
        }
        if (bad) return sstc_fail(SSTC_ENUMERIC, "quantize: layer '%s' has NaN or Inf weights", m->layers[cl->layer].name);
        m->layers[cl->layer].weight_override = cl->q;
    }
    return 0;
}

static int refit_deltas(sstc_compressor *c) {
    sstc_model *m = sstc_session_model(c->s);
    for (int k = 0; k < c->ncoded; k++) {
        sstc_coded_layer *cl = &c->coded[k];
        float d;
        const float *W = m->layers[cl->layer].weight->data;
        if (sstc_fit_delta(W, cl->rows, cl->cols, c->N, c->K, 0, &d, NULL) ||
            (cl->row_delta && sstc_fit_delta(W, cl->rows, cl->cols, c->N, c->K, 1, cl->row_delta, NULL)))
            return sstc_fail_prefix(sstc_errcode(), "layer '%s': ", m->layers[cl->layer].name);
        cl->delta = d;
    }
    return 0;
}

static void apply_masks(sstc_compressor *c) {
    sstc_model *m = sstc_session_model(c->s);
    for (int k = 0; k < c->ncoded; k++) {
        sstc_coded_layer *cl = &c->coded[k];
        if (!cl->mask) continue;
        float *w = m->layers[cl->layer].weight->data;
        size_t n = (size_t)cl->rows * cl->cols;
        for (size_t i = 0; i < n; i++)
            if (!cl->mask[i]) w[i] = 0.0f;
    }
}

static int before_forward(void *user, sstc_session *s) {
    sstc_compressor *c = user;
    if (c->quantizing && quantize_all(c)) return sstc_errcode();
    return c->chain.before_forward ? c->chain.before_forward(c->chain.user, s) : 0;
}

static int after_step(void *user, sstc_session *s) {
    sstc_compressor *c = user;
    c->steps_in_phase++;
    if (c->quantizing) {
        if (c->spec.refit_every > 0 && c->steps_in_phase % c->spec.refit_every == 0 && refit_deltas(c))
            return sstc_errcode();
    } else {
        apply_masks(c);
    }
    return c->chain.after_step ? c->chain.after_step(c->chain.user, s) : 0;
}

static void install_hooks(sstc_compressor *c) {
    const sstc_train_hooks *cur = sstc_session_hooks(c->s);
    if (cur->user == c) return;
    /* the caller's hooks run after the pipeline's own */
    if (cur->before_forward || cur->after_step) c->chain = *cur;
    sstc_train_hooks h = {c, before_forward, after_step};
    sstc_session_set_hooks(c->s, &h);
}

static void reset_optimizer(sstc_optimizer *o) {
    for (int i = 0; i < o->nparams; i++) {
        memset(o->m[i], 0, o->params[i]->size * sizeof(float));
        if (o->v) memset(o->v[i], 0, o->params[i]->size * sizeof(float));
    }
    o->step = 0;
}

static int start_phase(sstc_compressor *c, int p) {
    const sstc_phase *ph = &c->phases[p];
    sstc_model *m = sstc_session_model(c->s);
    reset_optimizer(sstc_session_optimizer(c->s));
    c->steps_in_phase = 0;
    if (ph->kind == SSTC_PHASE_PRUNE) {
        c->quantizing = 0;
        for (int k = 0; k < c->ncoded; k++) {
            sstc_coded_layer *cl = &c->coded[k];
            sstc_layer *l = &m->layers[cl->layer];
            l->weight_override = NULL;
            if (!cl->mask && !(cl->mask = malloc((size_t)cl->rows * cl->cols)))
                return sstc_fail(SSTC_ENOMEM, "compress: out of memory");
            if (sstc_nm_mask(l->weight->data, cl->rows, cl->cols, c->N, ph->K, cl->mask))
                return sstc_fail_prefix(sstc_errcode(), "layer '%s': ", l->name);
        }
        apply_masks(c);
    } else {
        for (int k = 0; k < c->ncoded; k++) {
            free(c->coded[k].mask);
            c->coded[k].mask = NULL;
        }
        if (refit_deltas(c)) return sstc_errcode();
        c->quantizing = 1;
        if (quantize_all(c)) return sstc_errcode();
    }
    c->phase_started = p;
    return 0;
}

int sstc_compress_train_epoch(sstc_compressor *c, double *train_loss, double *train_err, float *lr_out) {
    sstc_session *s = c->s;
    const sstc_config *cfg = sstc_session_config(s);
    sstc_epoch_state *st = sstc_session_state(s);
    int e = st->epoch;
    int p = sstc_compress_phase_of(c, e);
    if (p >= c->nphases) return sstc_fail(SSTC_ESTATE, "compress: epoch %d is past the last phase", e + 1);
    install_hooks(c);
    if (c->phase_started < p && st->batch == 0) {
        if (start_phase(c, p)) return sstc_errcode();
    } else if (c->phase_started < p) {
        return sstc_fail(SSTC_ESTATE, "compress: phase %d was never set up (corrupt state)", p + 1);
    }
    const sstc_phase *ph = &c->phases[p];
    /* a function of the position alone, so that a resumed run refits delta at
     * the same batches as an uninterrupted one */
    c->steps_in_phase = (long)(e - ph->first_epoch) * sstc_session_batches_per_epoch(s) + st->batch;
    if (ph->kind == SSTC_PHASE_QUANT && st->batch == 0 && e > ph->first_epoch) {
        /* delta is refitted at least once per epoch */
        if (refit_deltas(c)) return sstc_errcode();
    }
    sstc_lr_schedule lr = {0};
    lr.kind = c->spec.retrain_schedule;
    lr.base_lr = c->spec.retrain_lr > 0 ? c->spec.retrain_lr : cfg->optim.lr;
    lr.total_epochs = ph->epochs;
    lr.min_lr = lr.base_lr * 0.01f;
    lr.step_epochs = cfg->lr.step_epochs;
    lr.gamma = cfg->lr.gamma;
    sstc_session_set_lr_offset(s, ph->first_epoch);
    *lr_out = sstc_lr_at(&lr, e - ph->first_epoch);
    char tag[64];
    if (ph->kind == SSTC_PHASE_PRUNE) snprintf(tag, sizeof tag, "prune %d/%d", ph->K, c->N);
    else snprintf(tag, sizeof tag, "quant (%d,%d)", c->N, c->K);
    return sstc_session_train_epoch(s, &lr, c->total_epochs, tag, train_loss, train_err);
}

int sstc_compress_finish(sstc_compressor *c) {
    sstc_session *s = c->s;
    sstc_model *m = sstc_session_model(s);
    install_hooks(c);
    /* a final phase of zero epochs still has to be set up (masks or codes) */
    if (c->phase_started < c->nphases - 1 && start_phase(c, c->nphases - 1)) return sstc_errcode();
    if (c->quantizing) {
        /* the codes of the final weights at the step size the network was
         * retrained with: a last refit moves every threshold delta/2 with no
         * retraining after it (on the CIFAR-10 network coded on every layer
         * it turned 14.8 % at the last epoch into 18.4 %) */
        if (quantize_all(c)) return sstc_errcode();
    } else {
        apply_masks(c);
    }
    int nbn = 0;
    for (int i = 0; i < m->nlayers; i++) nbn += m->layers[i].kind == SSTC_LAYER_BATCHNORM;
    /* the coded weights shift every batch norm's input statistics: estimate
     * them again over bn_batches training batches (the before_forward hook
     * keeps the quantized weights in place) */
    if (nbn && c->spec.bn_batches > 0 && sstc_session_batches_per_epoch(s) > 0) {
        int rc = sstc_session_reestimate_batchnorm(s, c->spec.bn_batches, sstc_session_config(s)->seed * 31 + 977);
        if (rc) return rc;
    }
    c->bn_reestimated = 1;
    return 0;
}

/* ---- state ------------------------------------------------------------- */

#define STATE_MAGIC "SSTCCOMP"

int sstc_compress_state_present(const void *blob, size_t len) {
    return blob && len >= 8 && !memcmp(blob, STATE_MAGIC, 8);
}

int sstc_compress_state_save(const sstc_compressor *c, void **blob, size_t *len) {
    const sstc_model *m = sstc_session_model(c->s);
    int F = m->in_perm ? sstc_model_input_size(m) : 0;
    size_t n = 8 + 4 * 6;
    for (int k = 0; k < c->ncoded; k++)
        n += 4 + 4 + 1 + (c->coded[k].mask ? (size_t)c->coded[k].rows * c->coded[k].cols : 0) +
             1 + (c->coded[k].row_delta ? 4 * (size_t)c->coded[k].rows : 0);
    n += 4 + 4 * (size_t)F; /* the input permutation (count 0: none) */
    unsigned char *b = malloc(n), *p = b;
    if (!b) return sstc_fail(SSTC_ENOMEM, "compress: out of memory");
    memcpy(p, STATE_MAGIC, 8), p += 8;
    int32_t hdr[6] = {2, c->ncoded, c->phase_started, c->quantizing, c->bn_reestimated, 0};
    memcpy(&hdr[5], &c->float_test_error, 4);
    memcpy(p, hdr, sizeof hdr), p += sizeof hdr;
    for (int k = 0; k < c->ncoded; k++) {
        const sstc_coded_layer *cl = &c->coded[k];
        int32_t li = cl->layer;
        memcpy(p, &li, 4), p += 4;
        memcpy(p, &cl->delta, 4), p += 4;
        /* version 2: the per-row steps (delta = row) */
        *p++ = cl->row_delta != NULL;
        if (cl->row_delta) memcpy(p, cl->row_delta, 4 * (size_t)cl->rows), p += 4 * (size_t)cl->rows;
        *p++ = cl->mask != NULL;
        if (cl->mask) {
            memcpy(p, cl->mask, (size_t)cl->rows * cl->cols);
            p += (size_t)cl->rows * cl->cols;
        }
    }
    int32_t nf = F;
    memcpy(p, &nf, 4), p += 4;
    for (int j = 0; j < F; j++) {
        int32_t v = m->in_perm[j];
        memcpy(p, &v, 4), p += 4;
    }
    *blob = b;
    *len = n;
    return 0;
}

int sstc_compress_state_load(sstc_compressor *c, const void *blob, size_t len) {
    const unsigned char *p = blob, *end = p + len;
    if (!sstc_compress_state_present(blob, len) || len < 8 + 24)
        return sstc_fail(SSTC_EFORMAT, "compression state: missing or too short (%zu bytes)", len);
    p += 8;
    int32_t hdr[6];
    memcpy(hdr, p, sizeof hdr), p += sizeof hdr;
    int version = hdr[0];
    if (version != 1 && version != 2)
        return sstc_fail(SSTC_EFORMAT, "compression state: version %d, expected 1 or 2", version);
    if (hdr[1] != c->ncoded)
        return sstc_fail(SSTC_EFORMAT, "compression state: %d coded layers, the config codes %d", hdr[1], c->ncoded);
    c->phase_started = hdr[2];
    c->quantizing = hdr[3];
    c->bn_reestimated = hdr[4];
    memcpy(&c->float_test_error, &hdr[5], 4);
    for (int k = 0; k < c->ncoded; k++) {
        sstc_coded_layer *cl = &c->coded[k];
        if (end - p < (version >= 2 ? 10 : 9)) return sstc_fail(SSTC_EFORMAT, "compression state: truncated at layer %d", k);
        int32_t li;
        memcpy(&li, p, 4), p += 4;
        if (li != cl->layer)
            return sstc_fail(SSTC_EFORMAT, "compression state: coded layer %d is layer %d, the config says %d", k, li, cl->layer);
        memcpy(&cl->delta, p, 4), p += 4;
        int has_rows = version >= 2 ? *p++ : 0;
        if (has_rows != (cl->row_delta != NULL))
            return sstc_fail(SSTC_EFORMAT, "compression state: layer %d has one delta %s, the config asks for %s "
                             "([compress] delta = %s)", k, has_rows ? "per row" : "for the layer",
                             cl->row_delta ? "one per row" : "one for the layer", cl->row_delta ? "row" : "layer");
        if (has_rows) {
            if ((size_t)(end - p) < 4 * (size_t)cl->rows + 1)
                return sstc_fail(SSTC_EFORMAT, "compression state: truncated row deltas of layer %d", k);
            memcpy(cl->row_delta, p, 4 * (size_t)cl->rows), p += 4 * (size_t)cl->rows;
            for (int r = 0; r < cl->rows; r++)
                if (!(cl->row_delta[r] > 0) || !isfinite(cl->row_delta[r]))
                    return sstc_fail(SSTC_EFORMAT, "compression state: layer %d row %d: delta %g (expected > 0)", k, r,
                                     cl->row_delta[r]);
        }
        int has_mask = *p++;
        size_t n = (size_t)cl->rows * cl->cols;
        if (has_mask) {
            if ((size_t)(end - p) < n) return sstc_fail(SSTC_EFORMAT, "compression state: truncated mask of layer %d", k);
            if (!cl->mask && !(cl->mask = malloc(n))) return sstc_fail(SSTC_ENOMEM, "out of memory");
            memcpy(cl->mask, p, n);
            p += n;
        }
    }
    /* the input permutation (absent in states written before interleaving existed) */
    if (end - p >= 4) {
        int32_t nf;
        memcpy(&nf, p, 4), p += 4;
        sstc_model *m = sstc_session_model(c->s);
        if (nf != 0 && nf != sstc_model_input_size(m))
            return sstc_fail(SSTC_EFORMAT, "compression state: input permutation of %d, the network's input has %d values",
                             nf, sstc_model_input_size(m));
        if ((size_t)(end - p) < 4 * (size_t)nf) return sstc_fail(SSTC_EFORMAT, "compression state: truncated input permutation");
        int *perm = nf ? malloc((size_t)nf * sizeof(int)) : NULL;
        if (nf && !perm) return sstc_fail(SSTC_ENOMEM, "out of memory");
        for (int j = 0; j < nf; j++) {
            int32_t v;
            memcpy(&v, p, 4), p += 4;
            perm[j] = v;
        }
        int rc = sstc_model_set_input_permutation(m, perm);
        free(perm);
        if (rc) return sstc_fail_prefix(rc, "compression state: ");
    }
    install_hooks(c);
    if (c->quantizing) return quantize_all(c);
    return 0;
}

double sstc_compress_bits_per_weight(const sstc_compressor *c) {
    if (c->method == SSTC_METHOD_NM) {
        /* K float values plus the index of the kept position set per group */
        double sets = 1;
        for (int i = 0; i < c->K; i++) sets = sets * (c->N - i) / (i + 1);
        return (32.0 * c->K + ceil(log2(sets))) / c->N;
    }
    return (double)sstc_code_bits(c->N, c->K) / c->N;
}
