/* The inference engine: a .sst network planned into a short list of
 * operations (batch norms folded into the per-output affine of the layer
 * before them, ReLUs fused, dropout and flatten gone), whose outputs live in
 * buffers assigned by a liveness plan, run with float or 8-bit activations.
 * Every record kind is one entry of the table PLAN (the rule that turns it
 * into an op, or folds or fuses it), every operation kind one entry of the
 * table OPS (its float and int8 kernels, whether a batch norm folds or a
 * ReLU fuses into it, whether it gets a calibrated scale). */
#include "sstc/infer.h"

#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer/internal.h"
#include "sstc/error.h"

/* Up to this many samples an FC layer runs the look-up-table kernel once per
 * sample; above it, the direct kernel over all samples at once. */
#define LUT_MAX_BATCH 2
/* Samples per internal pass (bounds the activation buffers). */
#define CHUNK 64
/* Loops with less work than this (in values touched) stay on one thread: an
 * OpenMP fork and join costs microseconds on an idle machine and much more
 * when the other cores are busy. */
#define PAR_WORK 65536
/* Floats of im2col per convolution pass. */
#define CONV_COLS ((size_t)4 << 20)

enum { S_ACT, S_XT, S_ACC, S_LUT, S_MISC };

static void *scratch(sstc_engine *e, int slot, size_t bytes) {
    if (bytes > e->scratch_cap[slot]) {
        free(e->scratch[slot]);
        size_t cap = (bytes + 63) & ~(size_t)63;
        e->scratch[slot] = aligned_alloc(64, cap);
        e->scratch_cap[slot] = e->scratch[slot] ? cap : 0;
        if (!e->scratch[slot]) sstc_fail(SSTC_ENOMEM, "infer: out of memory for %zu bytes of scratch", bytes);
    }
    return e->scratch[slot];
}

/* ---- building --------------------------------------------------------------- */

static void op_release(sstc_infer_op *op) {
    sstc_coded_matrix_free(&op->cm);
    free(op->weight);
    free(op->a);
    free(op->b);
    free(op->qa);
    free(op->qb);
}

void sstc_engine_free(sstc_engine *e) {
    if (!e) return;
    for (int i = 0; i < e->n_ops; i++) op_release(&e->ops[i]);
    free(e->ops);
    free(e->in_perm);
    for (int s = 0; s < SSTC_ENGINE_SCRATCH; s++) free(e->scratch[s]);
    free(e);
}

static float *copy_floats(const float *src, size_t n) {
    float *d = malloc((n ? n : 1) * sizeof *d);
    if (d && src) memcpy(d, src, n * sizeof *d);
    return d;
}

/* One FC/CONV layer -> op; the affine starts as the file's (scale, bias) for
 * a coded layer and (1, bias) for a float one. */
static int plan_weighted(sstc_infer_op *op, const sstc_sst_layer *L) {
    op->kind = L->kind == SSTC_SST_FC ? SSTC_OP_FC : SSTC_OP_CONV;
    op->fan_in = sstc_sst_fan_in(L);
    if (op->kind == SSTC_OP_CONV) op->kh = L->kh, op->kw = L->kw, op->stride = L->stride, op->pad = L->pad;
    size_t out = (size_t)L->out;
    op->b = copy_floats(L->bias, out);
    op->a = malloc(out * sizeof *op->a);
    if (!op->a || !op->b) return sstc_fail(SSTC_ENOMEM, "infer: out of memory");
    op->coded = L->coded;
    if (L->coded) {
        memcpy(op->a, L->scale, out * sizeof *op->a);
        int rc = sstc_coded_matrix_init(&op->cm, L);
        /* FC layers run one-vector products at batch 1: time them once */
        if (!rc && op->kind == SSTC_OP_FC) sstc_coded_tune(&op->cm);
        return rc;
    }
    for (size_t o = 0; o < out; o++) op->a[o] = 1.0f;
    op->weight = copy_floats(L->weight, out * op->fan_in);
    if (!op->weight) return sstc_fail(SSTC_ENOMEM, "infer: out of memory for a %zux%zu float layer", out, op->fan_in);
    return SSTC_OK;
}

/* What an op kind is: its kernels (OPS, below the kernels) and how the
 * planner treats it. */
typedef struct {
    const char *name;
    int folds_bn;   /* FC, CONV: a following batch norm folds into the per-output affine */
    int fuses_relu; /* a following ReLU clamps its output */
    int sets_scale; /* int8: its output gets a calibrated scale */
    int (*f32)(sstc_engine *e, const sstc_infer_op *op, const float *const *in, int B, float *out);
    int (*i8)(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *in, int B, int8_t *out, float *logits);
} op_kind;
static const op_kind OPS[];

/* The op planned for record i, reading tensor `cur`, with output shape sh. */
static sstc_infer_op *new_op(sstc_engine *e, int i, sstc_infer_op_kind kind, int cur, const int *in_shape,
                             const int *sh) {
    sstc_infer_op *op = &e->ops[e->n_ops++];
    op->kind = kind;
    op->src_layer = i;
    op->nsrc = 1;
    op->src[0] = cur;
    op->src_size[0] = sstc_infer_tensor_size(e, cur);
    op->c = in_shape[0], op->h = in_shape[1], op->w = in_shape[2];
    op->oc = sh[0], op->oh = sh[1], op->ow = sh[2];
    return op;
}

/* What planning record i sees: the record, the tensor it reads (`cur`), the
 * op that produced that tensor if a batch norm may fold or a ReLU fuse into
 * it (`prev`, NULL otherwise), the shapes, and which tensor holds each
 * earlier record's output (`rec`). */
typedef struct {
    const sstc_sst_layer *L;
    int i, cur;
    sstc_infer_op *prev;
    const int *ish, *sh;
    const int *rec;
} plan_ctx;

/* One planning rule per record kind: it appends an op (new_op) or changes
 * prev (folding, fusing) or does nothing (a reshape or the identity). */
static int plan_fc_conv(sstc_engine *e, const plan_ctx *p) {
    return plan_weighted(new_op(e, p->i, SSTC_OP_FC, p->cur, p->ish, p->sh), p->L);
}

static int plan_bn(sstc_engine *e, const plan_ctx *p) {
    const sstc_sst_layer *L = p->L;
    sstc_infer_op *prev = p->prev;
    if (prev && OPS[prev->kind].folds_bn && !prev->relu && prev->oc == L->out && prev->oc == p->ish[0]) {
        for (int o = 0; o < L->out; o++) {
            prev->b[o] = L->scale[o] * prev->b[o] + L->bias[o];
            prev->a[o] = L->scale[o] * prev->a[o];
        }
        return SSTC_OK;
    }
    sstc_infer_op *op = new_op(e, p->i, SSTC_OP_BN, p->cur, p->ish, p->sh);
    op->a = copy_floats(L->scale, (size_t)L->out);
    op->b = copy_floats(L->bias, (size_t)L->out);
    return op->a && op->b ? SSTC_OK : sstc_fail(SSTC_ENOMEM, "infer: out of memory");
}

static int plan_relu(sstc_engine *e, const plan_ctx *p) {
    if (p->prev && OPS[p->prev->kind].fuses_relu) {
        p->prev->relu = 1; /* relu(relu(x)) = relu(x) */
        return SSTC_OK;
    }
    new_op(e, p->i, SSTC_OP_RELU, p->cur, p->ish, p->sh)->relu = 1;
    return SSTC_OK;
}

static int plan_pool(sstc_engine *e, const plan_ctx *p) {
    const sstc_sst_layer *L = p->L;
    sstc_infer_op *op =
        new_op(e, p->i, L->kind == SSTC_SST_MAXPOOL ? SSTC_OP_MAXPOOL : SSTC_OP_AVGPOOL, p->cur, p->ish, p->sh);
    op->kh = op->kw = L->kh, op->stride = L->stride, op->pad = L->pad;
    return SSTC_OK;
}

static int plan_nothing(sstc_engine *e, const plan_ctx *p) { return SSTC_OK; }

static int plan_permute(sstc_engine *e, const plan_ctx *p) { /* record 0 (the reader checks) */
    new_op(e, p->i, SSTC_OP_PERMUTE, p->cur, p->ish, p->sh);
    e->in_perm = malloc((size_t)p->L->out * sizeof *e->in_perm);
    if (!e->in_perm) return sstc_fail(SSTC_ENOMEM, "infer: out of memory");
    memcpy(e->in_perm, p->L->perm, (size_t)p->L->out * sizeof *e->in_perm);
    return SSTC_OK;
}

static int tensor_of(const plan_ctx *p, int record) { return record >= 0 ? p->rec[record] : SSTC_INFER_INPUT; }

static int plan_shortcut(sstc_engine *e, const plan_ctx *p) {
    sstc_infer_op *op = new_op(e, p->i, SSTC_OP_SHORTCUT, p->cur, p->ish, p->sh);
    op->nsrc = 2;
    op->src[1] = tensor_of(p, p->L->from);
    op->src_size[1] = sstc_infer_tensor_size(e, op->src[1]);
    op->relu = p->L->activation == SSTC_SST_ACT_RELU;
    return SSTC_OK;
}

static int plan_route(sstc_engine *e, const plan_ctx *p) {
    sstc_infer_op *op = new_op(e, p->i, SSTC_OP_ROUTE, p->cur, p->ish, p->sh);
    op->nsrc = p->L->n_route;
    for (int k = 0; k < op->nsrc; k++) {
        op->src[k] = tensor_of(p, p->L->route[k]);
        op->src_size[k] = sstc_infer_tensor_size(e, op->src[k]);
    }
    return SSTC_OK;
}

static int plan_gap(sstc_engine *e, const plan_ctx *p) {
    new_op(e, p->i, SSTC_OP_GAP, p->cur, p->ish, p->sh);
    return SSTC_OK;
}

/* The planning rule of every record kind (flatten is a reshape, NCHW being
 * already flat; dropout is the identity). */
static int (*const PLAN[])(sstc_engine *e, const plan_ctx *p) = {
    [0] = NULL,
    [SSTC_SST_FC] = plan_fc_conv,
    [SSTC_SST_CONV] = plan_fc_conv,
    [SSTC_SST_BATCHNORM] = plan_bn,
    [SSTC_SST_RELU] = plan_relu,
    [SSTC_SST_MAXPOOL] = plan_pool,
    [SSTC_SST_AVGPOOL] = plan_pool,
    [SSTC_SST_FLATTEN] = plan_nothing,
    [SSTC_SST_DROPOUT] = plan_nothing,
    [SSTC_SST_PERMUTE] = plan_permute,
    [SSTC_SST_SHORTCUT] = plan_shortcut,
    [SSTC_SST_ROUTE] = plan_route,
    [SSTC_SST_GLOBALAVGPOOL] = plan_gap,
};
_Static_assert(sizeof PLAN / sizeof PLAN[0] == SSTC_SST_KIND_END, "every record kind needs a planning rule");

/* Records -> ops. rec[i] is the tensor that holds record i's output; a
 * record read by a later shortcut or route (`read_later`) must keep its
 * output, so nothing is folded or fused into the op that produces it. */
static int plan(sstc_engine *e, const sstc_sst_model *m, const int (*shapes)[3], int *rec, uint8_t *read_later) {
    for (int i = 0; i < m->n_layers; i++) {
        const sstc_sst_layer *L = &m->layers[i];
        if (L->kind == SSTC_SST_SHORTCUT && L->from >= 0) read_later[L->from] = 1;
        for (int k = 0; L->kind == SSTC_SST_ROUTE && k < L->n_route; k++)
            if (L->route[k] >= 0) read_later[L->route[k]] = 1;
    }
    const int in_shape[3] = {m->in_c, m->in_h, m->in_w};
    int cur = SSTC_INFER_INPUT, rc = SSTC_OK;
    for (int i = 0; i < m->n_layers && !rc; i++) {
        const sstc_sst_layer *L = &m->layers[i];
        if (L->kind <= 0 || L->kind >= SSTC_SST_KIND_END || !PLAN[L->kind])
            return sstc_fail(SSTC_EINVAL, "infer: layer %d has unknown kind %d", i, (int)L->kind);
        plan_ctx p = {L, i, cur, cur >= 0 && !e->ops[cur].tapped ? &e->ops[cur] : NULL,
                      i ? shapes[i - 1] : in_shape, shapes[i], rec};
        int before = e->n_ops;
        rc = PLAN[L->kind](e, &p);
        if (e->n_ops > before) cur = e->n_ops - 1;
        rec[i] = cur;
        if (cur >= 0 && read_later[i]) e->ops[cur].tapped = 1;
    }
    return rc;
}

int sstc_infer_plan_buffers(const sstc_engine *e, int with_input, int *buf, size_t *size) {
    int n = e->n_ops, nb = 0;
    int *last = malloc(((size_t)n + 1) * sizeof *last), *holder = malloc(((size_t)n + 1) * sizeof *holder);
    if (!last || !holder) {
        free(last), free(holder);
        return sstc_fail(SSTC_ENOMEM, "infer: out of memory");
    }
    /* last[t + 1]: the last op that reads tensor t; INT_MIN if none */
    for (int t = 0; t <= n; t++) last[t] = INT_MIN, buf[t] = -1;
    for (int k = 0; k < n; k++)
        for (int s = 0; s < e->ops[k].nsrc; s++) last[e->ops[k].src[s] + 1] = k;
    last[sstc_infer_final_tensor(e) + 1] = n; /* read at the end */
    for (int t = with_input ? SSTC_INFER_INPUT : 0; t < n; t++) {
        size_t need = sstc_infer_tensor_size(e, t);
        int best = -1; /* the smallest free buffer that fits, else the largest free one */
        for (int j = 0; j < nb; j++) {
            if (holder[j] != INT_MIN) continue;
            int fits = size[j] >= need, bfits = best >= 0 && size[best] >= need;
            if (best < 0 || (fits && (!bfits || size[j] < size[best])) || (!fits && !bfits && size[j] > size[best]))
                best = j;
        }
        if (best < 0) size[best = nb++] = 0;
        if (size[best] < need) size[best] = need;
        holder[best] = t;
        buf[t + 1] = best;
        /* after op t ran, tensors read for the last time (t's own output too, if no one reads it) are dead */
        for (int j = 0; j < nb; j++)
            if (holder[j] != INT_MIN && last[holder[j] + 1] <= t) holder[j] = INT_MIN;
    }
    free(last), free(holder);
    return nb;
}

int sstc_engine_create(const sstc_sst_model *m, sstc_engine **out) {
    if (!out) return sstc_fail(SSTC_EINVAL, "sstc_engine_create: NULL argument");
    *out = NULL;
    int rc = sstc_sst_validate(m);
    if (rc) return rc;
    sstc_engine *e = calloc(1, sizeof *e);
    int (*shapes)[3] = malloc((size_t)m->n_layers * sizeof *shapes);
    int *rec = malloc((size_t)m->n_layers * sizeof *rec), *buf = NULL;
    uint8_t *read_later = calloc((size_t)m->n_layers, 1);
    size_t *size = NULL;
    if (e) e->ops = calloc((size_t)m->n_layers, sizeof *e->ops);
    if (!e || !e->ops || !shapes || !rec || !read_later) {
        rc = sstc_fail(SSTC_ENOMEM, "infer: out of memory");
        goto done;
    }
    e->in_c = m->in_c, e->in_h = m->in_h, e->in_w = m->in_w, e->classes = m->num_classes;
    e->eval_flags = m->eval_flags;
    memcpy(e->in_mean, m->in_mean, sizeof e->in_mean);
    memcpy(e->in_std, m->in_std, sizeof e->in_std);
    /* the same arithmetic as the training pipeline's byte -> float table */
    for (int t = 0; t < 5; t++) {
        float mean = t < 4 ? m->in_mean[t] : 0.0f, sd = t < 4 ? m->in_std[t] : 1.0f;
        for (int p = 0; p < 256; p++) e->in_lut[t][p] = ((float)p / 255.0f - mean) / sd;
    }
    if ((rc = sstc_sst_shapes(m, shapes)) || (rc = plan(e, m, (const int(*)[3])shapes, rec, read_later))) goto done;
    e->max_act = sstc_infer_tensor_size(e, SSTC_INFER_INPUT);
    for (int i = 0; i < e->n_ops; i++) {
        sstc_infer_op *op = &e->ops[i];
        if (sstc_infer_op_out_size(op) > e->max_act) e->max_act = sstc_infer_op_out_size(op);
        op->sets_scale = OPS[op->kind].sets_scale;
    }
    if (e->n_ops) e->ops[e->n_ops - 1].writes_logits = e->ops[e->n_ops - 1].sets_scale;
    /* the activation arena: the buffers of the plan one after the other */
    buf = malloc(((size_t)e->n_ops + 1) * sizeof *buf);
    size = malloc(((size_t)e->n_ops + 1) * sizeof *size);
    if (!buf || !size) {
        rc = sstc_fail(SSTC_ENOMEM, "infer: out of memory");
        goto done;
    }
    int nb = sstc_infer_plan_buffers(e, 0, buf, size);
    if (nb < 0) {
        rc = nb;
        goto done;
    }
    e->act_buffers = nb;
    for (int i = 0; i < e->n_ops; i++) {
        size_t off = 0;
        for (int j = 0; j < buf[i + 1]; j++) off += size[j];
        e->ops[i].act_off = off;
    }
    for (int j = 0; j < nb; j++) e->act_values += size[j];
    e->mode = SSTC_ENGINE_FLOAT;
done:
    free(shapes), free(rec), free(read_later), free(buf), free(size);
    if (rc) {
        sstc_engine_free(e);
        return rc;
    }
    *out = e;
    return SSTC_OK;
}

int sstc_engine_load(const char *path, sstc_engine **out) {
    if (!out) return sstc_fail(SSTC_EINVAL, "sstc_engine_load: NULL argument");
    *out = NULL;
    sstc_sst_model *m = NULL;
    int rc = sstc_sst_read(path, &m);
    if (!rc) rc = sstc_engine_create(m, out);
    sstc_sst_free(m);
    if (rc && !strstr(sstc_errmsg(), path)) sstc_fail_prefix(rc, "%s: ", path);
    return rc;
}

void sstc_engine_get_info(const sstc_engine *e, sstc_engine_info *info) {
    memset(info, 0, sizeof *info);
    if (!e) return;
    info->in_c = e->in_c, info->in_h = e->in_h, info->in_w = e->in_w, info->num_classes = e->classes;
    info->n_ops = e->n_ops;
    for (int i = 0; i < e->n_ops; i++) {
        const sstc_infer_op *op = &e->ops[i];
        if (op->kind != SSTC_OP_FC && op->kind != SSTC_OP_CONV) continue;
        if (op->coded) {
            info->coded_layers++;
            info->coded_index_bytes += sstc_coded_index_bytes(&op->cm);
        } else {
            info->float_layers++;
            info->float_weight_bytes += (size_t)op->oc * op->fan_in * sizeof(float);
        }
    }
    info->max_activation = e->max_act;
    info->activation_buffers = e->act_buffers;
    info->activation_values = e->act_values;
    info->calibrated = e->calibrated;
    info->avx2 = sstc_infer_avx2();
    info->eval_flags = e->eval_flags;
}

int sstc_engine_set_mode(sstc_engine *e, sstc_engine_mode mode) {
    if (!e || (mode != SSTC_ENGINE_FLOAT && mode != SSTC_ENGINE_INT8))
        return sstc_fail(SSTC_EINVAL, "sstc_engine_set_mode: bad argument");
    if (mode == SSTC_ENGINE_INT8 && !e->calibrated)
        return sstc_fail(SSTC_ESTATE, "infer: int8 mode needs calibration first (sstc_engine_calibrate)");
    e->mode = mode;
    return SSTC_OK;
}

sstc_engine_mode sstc_engine_get_mode(const sstc_engine *e) { return e ? (sstc_engine_mode)e->mode : SSTC_ENGINE_FLOAT; }

/* ---- shared loops ------------------------------------------------------------- */

/* im2col of one image into columns [col0, col0 + OH*OW) of xt (fan_in x ld):
 * row (c*KH + ky)*KW + kx, the weights' fan_in order; padding is 0. */
#define IM2COL(NAME, TI, TO)                                                                                           \
    static void NAME##_ch(const sstc_infer_op *op, const TI *x, TO *xt, size_t ld, size_t col0, int c0, int c1) {     \
        int H = op->h, W = op->w, OH = op->oh, OW = op->ow, S = op->stride, P = op->pad;                              \
        for (int kx = 0; kx < op->kw; kx++) {                                                                          \
            /* ix = ox*S - P + kx is inside the row for ox in [lo, hi) (the same for every row) */                     \
            int lo = P - kx > 0 ? (P - kx + S - 1) / S : 0;                                                            \
            int hi = W - 1 + P - kx >= 0 ? (W - 1 + P - kx) / S + 1 : 0;                                               \
            if (hi > OW) hi = OW;                                                                                      \
            if (lo > hi) lo = hi;                                                                                      \
            int sh = kx - P; /* ix = ox + sh when S = 1 */                                                             \
            for (int c = c0; c < c1; c++)                                                                              \
                for (int ky = 0; ky < op->kh; ky++) {                                                                  \
                    TO *row = xt + ((size_t)(c * op->kh + ky) * op->kw + kx) * ld + col0;                              \
                    for (int oy = 0; oy < OH; oy++) {                                                                  \
                        int iy = oy * S - P + ky;                                                                      \
                        TO *r = row + (size_t)oy * OW;                                                                 \
                        if (iy < 0 || iy >= H) {                                                                       \
                            for (int ox = 0; ox < OW; ox++) r[ox] = 0;                                                 \
                            continue;                                                                                  \
                        }                                                                                              \
                        const TI *xr = x + ((size_t)c * H + iy) * W;                                                   \
                        for (int ox = 0; ox < lo; ox++) r[ox] = 0;                                                     \
                        if (S == 1)                                                                                    \
                            for (int ox = lo; ox < hi; ox++) r[ox] = (TO)xr[ox + sh];                                  \
                        else                                                                                           \
                            for (int ox = lo; ox < hi; ox++) r[ox] = (TO)xr[ox * S - P + kx];                          \
                        for (int ox = hi; ox < OW; ox++) r[ox] = 0;                                                    \
                    }                                                                                                  \
                }                                                                                                      \
        }                                                                                                              \
    }
IM2COL(im2col_f32_one, float, float)
IM2COL(im2col_i8_one, int8_t, int32_t)

/* im2col of the n images of a pass: images split over the threads, or, for
 * one image, its channels (a single image's columns are as much work as a
 * batch's at the first layers). */
#define IM2COL_PASS(NAME, ONE, TI, TO)                                                                                      \
    static void NAME(const sstc_infer_op *op, const TI *in, int n, TO *xt, size_t ld) {                               \
        size_t P = (size_t)op->oh * op->ow, isz = (size_t)op->c * op->h * op->w, work = op->fan_in * P * (size_t)n;    \
        if (n == 1) {                                                                                                  \
            int C = op->c, parts = work > PAR_WORK && C > 1 ? omp_get_max_threads() : 1;                              \
            if (parts > C) parts = C;                                                                                  \
            _Pragma("omp parallel for schedule(static) if (parts > 1)") for (int t = 0; t < parts; t++)                \
                ONE##_ch(op, in, xt, ld, 0, (int)((long)C * t / parts), (int)((long)C * (t + 1) / parts));          \
            return;                                                                                                    \
        }                                                                                                              \
        _Pragma("omp parallel for schedule(static) if (work > PAR_WORK)") for (int s = 0; s < n; s++)                  \
            ONE##_ch(op, in + (size_t)s * isz, xt, ld, (size_t)s * P, 0, op->c);                                      \
    }
IM2COL_PASS(im2col_f32, im2col_f32_one, float, float)
IM2COL_PASS(im2col_i8, im2col_i8_one, int8_t, int32_t)

/* Images per convolution pass and the lane stride of that pass. A coded
 * layer takes fewer: its look-up kernel reads the columns of one lane tile
 * after the other (8 inputs per group, one row of columns each), which misses
 * the cache once the columns outgrow it; 512K values (2 MB) per pass run the
 * CIFAR-10 network's layers 1.2-1.5x faster than 4M (bench_infer, --only cnn). */
#define CONV_COLS_CODED ((size_t)512 << 10)
static int conv_chunk(const sstc_infer_op *op, int B) {
    size_t P = (size_t)op->oh * op->ow, per = op->fan_in * P;
    size_t n = per ? (op->coded ? CONV_COLS_CODED : CONV_COLS) / per : 1;
    if (n < 1) n = 1;
    if (n > (size_t)B) n = (size_t)B;
    return (int)n;
}

/* ---- float mode ----------------------------------------------------------------- */

static inline float affine(const sstc_infer_op *op, int o, float acc) {
    float v = op->a[o] * acc + op->b[o];
    return op->relu && v < 0 ? 0.0f : v;
}

/* The batched FC layers' transposes, (B x cols) -> (cols x ld) and back, in
 * blocks of TBLK columns: a block's TBLK rows of the transposed side stay in
 * L1 while the other side is read or written in whole lines (column by column
 * over a 256-byte stride, the plain loops took longer than the product). */
#define TBLK 16
#define TRANSPOSE_IN(T)                                                                                                \
    _Pragma("omp parallel for schedule(static) if (cols * (size_t)B > PAR_WORK)")                                      \
    for (size_t j0 = 0; j0 < cols; j0 += TBLK) {                                                                       \
        size_t j1 = j0 + TBLK < cols ? j0 + TBLK : cols;                                                               \
        for (int b = 0; b < B; b++)                                                                                    \
            for (size_t j = j0; j < j1; j++) xt[j * ld + b] = in[(size_t)b * cols + j];                                \
        for (size_t j = j0; j < j1; j++)                                                                               \
            for (size_t b = (size_t)B; b < ld; b++) xt[j * ld + b] = 0;                                                \
    }

static int fc_f32(sstc_engine *e, const sstc_infer_op *op, const float *const *src, int B, float *out) {
    const float *in = src[0];
    int R = op->oc;
    size_t cols = op->fan_in;
    if (!op->coded) {
        if (B == 1) cblas_sgemv(CblasRowMajor, CblasNoTrans, R, (int)cols, 1.0f, op->weight, (int)cols, in, 1, 0.0f, out, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, R, (int)cols, 1.0f, in, (int)cols, op->weight,
                        (int)cols, 0.0f, out, R);
        for (int b = 0; b < B; b++)
            for (int o = 0; o < R; o++) out[(size_t)b * R + o] = affine(op, o, out[(size_t)b * R + o]);
        return SSTC_OK;
    }
    size_t lsz = sstc_coded_lut_size(&op->cm);
    if (B <= LUT_MAX_BATCH && lsz) {
        float *lut = scratch(e, S_LUT, lsz * sizeof(float)), *acc = scratch(e, S_ACC, (size_t)R * sizeof(float));
        if (!lut || !acc) return SSTC_ENOMEM;
        for (int b = 0; b < B; b++) {
            sstc_coded_gemv_f32(&op->cm, in + (size_t)b * cols, lut, acc);
            for (int o = 0; o < R; o++) out[(size_t)b * R + o] = affine(op, o, acc[o]);
        }
        return SSTC_OK;
    }
    size_t ld = sstc_round8((size_t)B);
    float *xt = scratch(e, S_XT, cols * ld * sizeof(float)), *acc = scratch(e, S_ACC, (size_t)R * ld * sizeof(float));
    if (!xt || !acc) return SSTC_ENOMEM;
    TRANSPOSE_IN(float)
    sstc_coded_gemm_f32(&op->cm, xt, ld, acc);
#pragma omp parallel for schedule(static) if ((size_t)R * B > PAR_WORK)
    for (int o0 = 0; o0 < R; o0 += TBLK)
        for (int b = 0; b < B; b++)
            for (int o = o0; o < R && o < o0 + TBLK; o++) out[(size_t)b * R + o] = affine(op, o, acc[(size_t)o * ld + b]);
    return SSTC_OK;
}

static int conv_f32(sstc_engine *e, const sstc_infer_op *op, const float *const *src, int B, float *out) {
    const float *in = src[0];
    size_t P = (size_t)op->oh * op->ow, cols = op->fan_in, isz = (size_t)op->c * op->h * op->w;
    int OC = op->oc, chunk = conv_chunk(op, B);
    for (int b0 = 0; b0 < B; b0 += chunk) {
        int n = B - b0 < chunk ? B - b0 : chunk;
        size_t lanes = (size_t)n * P, ld = sstc_round8(lanes);
        float *xt = scratch(e, S_XT, cols * ld * sizeof(float));
        float *acc = scratch(e, S_ACC, (size_t)OC * ld * sizeof(float));
        if (!xt || !acc) return SSTC_ENOMEM;
        im2col_f32(op, in + (size_t)b0 * isz, n, xt, ld);
        if (ld > lanes)
            for (size_t j = 0; j < cols; j++) memset(xt + j * ld + lanes, 0, (ld - lanes) * sizeof(float));
        if (op->coded) sstc_coded_gemm_f32(&op->cm, xt, ld, acc);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, (int)ld, (int)cols, 1.0f, op->weight, (int)cols,
                        xt, (int)ld, 0.0f, acc, (int)ld);
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)OC * lanes > PAR_WORK)
        for (int s = 0; s < n; s++)
            for (int o = 0; o < OC; o++) {
                float *dst = out + ((size_t)(b0 + s) * OC + o) * P;
                const float *src = acc + (size_t)o * ld + (size_t)s * P;
                for (size_t p = 0; p < P; p++) dst[p] = affine(op, o, src[p]);
            }
    }
    return SSTC_OK;
}

static int pool_f32(sstc_engine *e, const sstc_infer_op *op, const float *const *src, int B, float *out) {
    const float *in = src[0];
    int H = op->h, W = op->w, OH = op->oh, OW = op->ow, k = op->kh, S = op->stride, P = op->pad;
    int planes = B * op->c;
#pragma omp parallel for schedule(static) if ((size_t)planes * H * W * k * k > PAR_WORK)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = in + (size_t)pl * H * W;
        float *yp = out + (size_t)pl * OH * OW;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int y0 = oy * S - P, x0 = ox * S - P;
                int ya = y0 < 0 ? 0 : y0, yb = y0 + k > H ? H : y0 + k;
                int xa = x0 < 0 ? 0 : x0, xb = x0 + k > W ? W : x0 + k;
                float v;
                if (op->kind == SSTC_OP_MAXPOOL) {
                    v = -FLT_MAX;
                    for (int iy = ya; iy < yb; iy++)
                        for (int ix = xa; ix < xb; ix++)
                            if (xp[iy * W + ix] > v) v = xp[iy * W + ix];
                } else {
                    float s = 0;
                    for (int iy = ya; iy < yb; iy++)
                        for (int ix = xa; ix < xb; ix++) s += xp[iy * W + ix];
                    v = s / (float)(k * k);
                }
                yp[(size_t)oy * OW + ox] = v;
            }
    }
    return SSTC_OK;
}

static int bn_f32(sstc_engine *e, const sstc_infer_op *op, const float *const *src, int B, float *out) {
    size_t hw = (size_t)op->h * op->w;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < op->c; c++) {
            size_t base = ((size_t)b * op->c + c) * hw;
            for (size_t i = 0; i < hw; i++) out[base + i] = affine(op, c, src[0][base + i]);
        }
    return SSTC_OK;
}

static int relu_f32(sstc_engine *e, const sstc_infer_op *op, const float *const *src, int B, float *out) {
    for (size_t i = 0; i < (size_t)B * op->src_size[0]; i++) out[i] = src[0][i] < 0 ? 0.0f : src[0][i];
    return SSTC_OK;
}

static int permute_f32(sstc_engine *e, const sstc_infer_op *op, const float *const *src, int B, float *out) {
    size_t n = op->src_size[0];
    for (int s = 0; s < B; s++)
        for (size_t i = 0; i < n; i++) out[(size_t)s * n + i] = src[0][(size_t)s * n + e->in_perm[i]];
    return SSTC_OK;
}

/* y = x + s, then the fused ReLU. */
static int shortcut_f32(sstc_engine *e, const sstc_infer_op *op, const float *const *src, int B, float *out) {
    const float *x = src[0], *s = src[1];
    for (size_t i = 0; i < (size_t)B * op->src_size[0]; i++) {
        float v = x[i] + s[i];
        out[i] = op->relu && v < 0 ? 0.0f : v;
    }
    return SSTC_OK;
}

/* Channel concatenation: in NCHW with equal H and W, each sample's output
 * is its sources' sample blocks one after the other. */
static int route_f32(sstc_engine *e, const sstc_infer_op *op, const float *const *src, int B, float *out) {
    for (int b = 0; b < B; b++)
        for (int k = 0; k < op->nsrc; k++) {
            memcpy(out, src[k] + (size_t)b * op->src_size[k], op->src_size[k] * sizeof *out);
            out += op->src_size[k];
        }
    return SSTC_OK;
}

static int gap_f32(sstc_engine *e, const sstc_infer_op *op, const float *const *src, int B, float *out) {
    size_t hw = (size_t)op->h * op->w;
    for (size_t p = 0; p < (size_t)B * op->c; p++) {
        const float *x = src[0] + p * hw;
        float s = 0;
        for (size_t i = 0; i < hw; i++) s += x[i];
        out[p] = s / (float)hw;
    }
    return SSTC_OK;
}
/* ---- int8 mode ------------------------------------------------------------------ */

/* Output `at` of the op, from output channel o's accumulator: a code, or
 * the logit when the op is the last one. */
static inline void emit_i8(const sstc_infer_op *op, int o, float acc, int8_t *q, float *logits, size_t at) {
    float v = acc * op->qa[o] + op->qb[o];
    if (op->writes_logits) logits[at] = op->relu && v < 0 ? 0.0f : v;
    else q[at] = sstc_infer_quantize(v, op->relu ? 0 : -127);
}

static int fc_i8(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *src, int B, int8_t *out, float *logits) {
    const int8_t *in = src[0];
    int R = op->oc;
    size_t cols = op->fan_in;
    if (!op->coded) {
        /* sequential sums, the order of the exported C code */
#pragma omp parallel for schedule(static) if ((size_t)R * cols * B > PAR_WORK)
        for (int o = 0; o < R; o++) {
            const float *wr = op->weight + (size_t)o * cols;
            for (int b = 0; b < B; b++) {
                const int8_t *x = in + (size_t)b * cols;
                float s = 0;
                for (size_t j = 0; j < cols; j++) s += wr[j] * (float)x[j];
                emit_i8(op, o, s, out, logits, (size_t)b * R + o);
            }
        }
        return SSTC_OK;
    }
    size_t lsz = sstc_coded_lut_size(&op->cm);
    if (B <= LUT_MAX_BATCH && lsz) {
        int32_t *lut = scratch(e, S_LUT, lsz * sizeof(int32_t)), *acc = scratch(e, S_ACC, (size_t)R * sizeof(int32_t));
        int32_t *x = scratch(e, S_XT, cols * sizeof(int32_t));
        if (!lut || !acc || !x) return SSTC_ENOMEM;
        for (int b = 0; b < B; b++) {
            for (size_t j = 0; j < cols; j++) x[j] = in[(size_t)b * cols + j];
            sstc_coded_gemv_i32(&op->cm, x, lut, acc);
            for (int o = 0; o < R; o++) emit_i8(op, o, (float)acc[o], out, logits, (size_t)b * R + o);
        }
        return SSTC_OK;
    }
    size_t ld = sstc_round8((size_t)B);
    int32_t *xt = scratch(e, S_XT, cols * ld * sizeof(int32_t));
    int32_t *acc = scratch(e, S_ACC, (size_t)R * ld * sizeof(int32_t));
    if (!xt || !acc) return SSTC_ENOMEM;
    TRANSPOSE_IN(int32_t)
    sstc_coded_gemm_i32(&op->cm, xt, ld, acc);
#pragma omp parallel for schedule(static) if ((size_t)R * B > PAR_WORK)
    for (int o0 = 0; o0 < R; o0 += TBLK)
        for (int b = 0; b < B; b++)
            for (int o = o0; o < R && o < o0 + TBLK; o++)
                emit_i8(op, o, (float)acc[(size_t)o * ld + b], out, logits, (size_t)b * R + o);
    return SSTC_OK;
}

static int conv_i8(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *src, int B, int8_t *out, float *logits) {
    const int8_t *in = src[0];
    size_t P = (size_t)op->oh * op->ow, cols = op->fan_in, isz = (size_t)op->c * op->h * op->w;
    int OC = op->oc;
    if (!op->coded) {
        /* direct loops in fan_in order, skipping the padding: the exported C code's sums */
        int H = op->h, W = op->w, KH = op->kh, KW = op->kw, S = op->stride, PD = op->pad;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * OC * P * cols > PAR_WORK)
        for (int b = 0; b < B; b++)
            for (int o = 0; o < OC; o++)
                for (int oy = 0; oy < op->oh; oy++)
                    for (int ox = 0; ox < op->ow; ox++) {
                        const float *wr = op->weight + (size_t)o * cols;
                        const int8_t *x = in + (size_t)b * isz;
                        float s = 0;
                        for (int c = 0; c < op->c; c++)
                            for (int ky = 0; ky < KH; ky++) {
                                int iy = oy * S - PD + ky;
                                if (iy < 0 || iy >= H) continue;
                                for (int kx = 0; kx < KW; kx++) {
                                    int ix = ox * S - PD + kx;
                                    if (ix < 0 || ix >= W) continue;
                                    s += wr[(c * KH + ky) * KW + kx] * (float)x[((size_t)c * H + iy) * W + ix];
                                }
                            }
                        size_t at = ((size_t)b * OC + o) * P + (size_t)oy * op->ow + ox;
                        emit_i8(op, o, s, out, logits, at);
                    }
        return SSTC_OK;
    }
    int chunk = conv_chunk(op, B);
    for (int b0 = 0; b0 < B; b0 += chunk) {
        int n = B - b0 < chunk ? B - b0 : chunk;
        size_t lanes = (size_t)n * P, ld = sstc_round8(lanes);
        int32_t *xt = scratch(e, S_XT, cols * ld * sizeof(int32_t));
        int32_t *acc = scratch(e, S_ACC, (size_t)OC * ld * sizeof(int32_t));
        if (!xt || !acc) return SSTC_ENOMEM;
        im2col_i8(op, in + (size_t)b0 * isz, n, xt, ld);
        if (ld > lanes)
            for (size_t j = 0; j < cols; j++) memset(xt + j * ld + lanes, 0, (ld - lanes) * sizeof(int32_t));
        sstc_coded_gemm_i32(&op->cm, xt, ld, acc);
        for (int s = 0; s < n; s++)
            for (int o = 0; o < OC; o++) {
                size_t at = ((size_t)(b0 + s) * OC + o) * P;
                const int32_t *src = acc + (size_t)o * ld + (size_t)s * P;
                for (size_t p = 0; p < P; p++) emit_i8(op, o, (float)src[p], out, logits, at + p);
            }
    }
    return SSTC_OK;
}

/* Rounded (half away from zero) s / d for d > 0: the int8 average pool. */
static inline int32_t div_round(int32_t s, int32_t d) { return s >= 0 ? (s + d / 2) / d : -((-s + d / 2) / d); }

static int pool_i8(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *src, int B, int8_t *out, float *logits) {
    const int8_t *in = src[0];
    int H = op->h, W = op->w, OH = op->oh, OW = op->ow, k = op->kh, S = op->stride, P = op->pad;
    int planes = B * op->c;
    for (int pl = 0; pl < planes; pl++) {
        const int8_t *xp = in + (size_t)pl * H * W;
        int8_t *yp = out + (size_t)pl * OH * OW;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int y0 = oy * S - P, x0 = ox * S - P;
                int ya = y0 < 0 ? 0 : y0, yb = y0 + k > H ? H : y0 + k;
                int xa = x0 < 0 ? 0 : x0, xb = x0 + k > W ? W : x0 + k;
                int32_t v;
                if (op->kind == SSTC_OP_MAXPOOL) {
                    v = -128;
                    for (int iy = ya; iy < yb; iy++)
                        for (int ix = xa; ix < xb; ix++)
                            if (xp[iy * W + ix] > v) v = xp[iy * W + ix];
                } else {
                    int32_t s = 0;
                    for (int iy = ya; iy < yb; iy++)
                        for (int ix = xa; ix < xb; ix++) s += xp[iy * W + ix];
                    v = div_round(s, k * k);
                }
                yp[(size_t)oy * OW + ox] = (int8_t)v;
            }
    }
    return SSTC_OK;
}
static int bn_i8(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *src, int B, int8_t *out, float *logits) {
    size_t hw = (size_t)op->h * op->w;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < op->c; c++) {
            size_t base = ((size_t)b * op->c + c) * hw;
            for (size_t i = 0; i < hw; i++) emit_i8(op, c, (float)src[0][base + i], out, logits, base + i);
        }
    return SSTC_OK;
}

static int relu_i8(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *src, int B, int8_t *out,
                   float *logits) {
    for (size_t i = 0; i < (size_t)B * op->src_size[0]; i++) out[i] = src[0][i] < 0 ? 0 : src[0][i];
    return SSTC_OK;
}

static int permute_i8(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *src, int B, int8_t *out,
                      float *logits) {
    size_t n = op->src_size[0];
    for (int s = 0; s < B; s++)
        for (size_t i = 0; i < n; i++) out[(size_t)s * n + i] = src[0][(size_t)s * n + e->in_perm[i]];
    return SSTC_OK;
}

/* The two codes carry different scales: v = qs[0]*x + qs[1]*s, with qs[k] =
 * s_k / s_out (s_k / 1 when the op writes the logits), then the fused ReLU
 * and requantization. */
static int shortcut_i8(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *src, int B, int8_t *out,
                       float *logits) {
    const int8_t *x = src[0], *s = src[1];
    float kx = op->qs[0], ks = op->qs[1];
    int lo = op->relu ? 0 : -127;
    for (size_t i = 0; i < (size_t)B * op->src_size[0]; i++) {
        float v = (float)x[i] * kx + (float)s[i] * ks;
        if (op->writes_logits) logits[i] = op->relu && v < 0 ? 0.0f : v;
        else out[i] = sstc_infer_quantize(v, lo);
    }
    return SSTC_OK;
}

/* One common scale, the largest of the sources': a source with that scale
 * is copied, the others are requantized by qs[k] = s_k / s_out <= 1. */
static int route_i8(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *src, int B, int8_t *out,
                    float *logits) {
    for (int b = 0; b < B; b++)
        for (int k = 0; k < op->nsrc; k++) {
            const int8_t *x = src[k] + (size_t)b * op->src_size[k];
            if (op->qs[k] == 1.0f) memcpy(out, x, op->src_size[k]);
            else
                for (size_t i = 0; i < op->src_size[k]; i++) out[i] = sstc_infer_quantize((float)x[i] * op->qs[k], -127);
            out += op->src_size[k];
        }
    return SSTC_OK;
}

/* The mean of the codes, rounded: the input's scale is kept. */
static int gap_i8(sstc_engine *e, const sstc_infer_op *op, const int8_t *const *src, int B, int8_t *out,
                  float *logits) {
    size_t hw = (size_t)op->h * op->w;
    for (size_t p = 0; p < (size_t)B * op->c; p++) {
        const int8_t *x = src[0] + p * hw;
        int64_t s = 0, d = (int64_t)hw;
        for (size_t i = 0; i < hw; i++) s += x[i];
        out[p] = (int8_t)(s >= 0 ? (s + d / 2) / d : -((-s + d / 2) / d));
    }
    return SSTC_OK;
}

/* ---- the op table and the run --------------------------------------------------- */

static const op_kind OPS[] = {
    [SSTC_OP_FC] = {"fc", 1, 1, 1, fc_f32, fc_i8},
    [SSTC_OP_CONV] = {"conv", 1, 1, 1, conv_f32, conv_i8},
    [SSTC_OP_BN] = {"batchnorm", 0, 1, 1, bn_f32, bn_i8},
    [SSTC_OP_RELU] = {"relu", 0, 1, 0, relu_f32, relu_i8},
    [SSTC_OP_MAXPOOL] = {"maxpool", 0, 0, 0, pool_f32, pool_i8},
    [SSTC_OP_AVGPOOL] = {"avgpool", 0, 0, 0, pool_f32, pool_i8},
    [SSTC_OP_PERMUTE] = {"permute", 0, 0, 0, permute_f32, permute_i8},
    [SSTC_OP_SHORTCUT] = {"shortcut", 0, 1, 1, shortcut_f32, shortcut_i8},
    [SSTC_OP_ROUTE] = {"route", 0, 0, 0, route_f32, route_i8},
    [SSTC_OP_GAP] = {"globalavgpool", 0, 0, 0, gap_f32, gap_i8},
};
_Static_assert(sizeof OPS / sizeof OPS[0] == SSTC_OP_KIND_COUNT, "every op kind needs an entry in OPS, in enum order");

/* Where tensor t of a pass over B samples lives: the input x, or its
 * buffer of the arena. */
#define TENSOR_AT(e, x, arena, B, t) ((t) == SSTC_INFER_INPUT ? (x) : (arena) + (size_t)(B) * (e)->ops[t].act_off)

/* B <= CHUNK samples; calib: track max |output| of the ops that set a scale. */
static int run_f32(sstc_engine *e, const float *x, int B, float *logits, int calib) {
    float *arena = scratch(e, S_ACT, ((size_t)B * e->act_values + 1) * sizeof(float));
    if (!arena) return SSTC_ENOMEM;
    for (int i = 0; i < e->n_ops; i++) {
        sstc_infer_op *op = &e->ops[i];
        const float *in[SSTC_SST_MAX_ROUTE];
        for (int k = 0; k < op->nsrc; k++) in[k] = TENSOR_AT(e, x, arena, B, op->src[k]);
        float *out = arena + (size_t)B * op->act_off;
        int rc = OPS[op->kind].f32(e, op, in, B, out);
        if (rc) return rc;
        if (calib && op->sets_scale) {
            size_t n = (size_t)B * sstc_infer_op_out_size(op);
            double m = op->amax;
            for (size_t j = 0; j < n; j++)
                if (fabsf(out[j]) > m) m = fabsf(out[j]);
            op->amax = m;
        }
    }
    memcpy(logits, TENSOR_AT(e, x, arena, B, sstc_infer_final_tensor(e)), (size_t)B * e->classes * sizeof(float));
    return SSTC_OK;
}

static int run_i8(sstc_engine *e, const int8_t *q, int B, float *logits) {
    int8_t *arena = scratch(e, S_ACT, (size_t)B * e->act_values + 1);
    if (!arena) return SSTC_ENOMEM;
    for (int i = 0; i < e->n_ops; i++) {
        const sstc_infer_op *op = &e->ops[i];
        const int8_t *in[SSTC_SST_MAX_ROUTE];
        for (int k = 0; k < op->nsrc; k++) in[k] = TENSOR_AT(e, q, arena, B, op->src[k]);
        int rc = OPS[op->kind].i8(e, op, in, B, arena + (size_t)B * op->act_off, logits);
        if (rc) return rc;
    }
    if (!e->n_ops || !e->ops[e->n_ops - 1].writes_logits) {
        const int8_t *y = TENSOR_AT(e, q, arena, B, sstc_infer_final_tensor(e));
        for (size_t i = 0; i < (size_t)B * e->classes; i++) logits[i] = (float)y[i] * e->out_scale;
    }
    return SSTC_OK;
}
/* ---- entry points ------------------------------------------------------------- */

static int check_args(const sstc_engine *e, const void *x, int batch, const float *logits) {
    if (!e || !x || !logits || batch < 0) return sstc_fail(SSTC_EINVAL, "infer: NULL argument or negative batch");
    return SSTC_OK;
}

int sstc_engine_forward(sstc_engine *e, const float *x, int batch, float *logits) {
    int rc = check_args(e, x, batch, logits);
    size_t isz = (size_t)e->in_c * e->in_h * e->in_w;
    for (int b0 = 0; !rc && b0 < batch; b0 += CHUNK) {
        int n = batch - b0 < CHUNK ? batch - b0 : CHUNK;
        const float *xb = x + (size_t)b0 * isz;
        float *lb = logits + (size_t)b0 * e->classes;
        if (e->mode == SSTC_ENGINE_FLOAT) {
            rc = run_f32(e, xb, n, lb, 0);
            continue;
        }
        int8_t *q = scratch(e, S_MISC, (size_t)n * isz);
        if (!q) return SSTC_ENOMEM;
        for (size_t i = 0; i < (size_t)n * isz; i++) q[i] = sstc_infer_quantize(xb[i] / e->in_scale, -127);
        rc = run_i8(e, q, n, lb);
    }
    return rc;
}

int sstc_engine_forward_pixels(sstc_engine *e, const uint8_t *pixels, int batch, float *logits) {
    int rc = check_args(e, pixels, batch, logits);
    size_t hw = (size_t)e->in_h * e->in_w, isz = (size_t)e->in_c * hw;
    for (int b0 = 0; !rc && b0 < batch; b0 += CHUNK) {
        int n = batch - b0 < CHUNK ? batch - b0 : CHUNK;
        const uint8_t *pb = pixels + (size_t)b0 * isz;
        float *lb = logits + (size_t)b0 * e->classes;
        if (e->mode == SSTC_ENGINE_FLOAT) {
            float *x = scratch(e, S_MISC, (size_t)n * isz * sizeof(float));
            if (!x) return SSTC_ENOMEM;
            for (int s = 0; s < n; s++)
                for (int c = 0; c < e->in_c; c++) {
                    const float *lut = e->in_lut[sstc_infer_lut_channel(c)];
                    size_t base = ((size_t)s * e->in_c + c) * hw;
                    for (size_t i = 0; i < hw; i++) x[base + i] = lut[pb[base + i]];
                }
            rc = run_f32(e, x, n, lb, 0);
        } else {
            int8_t *q = scratch(e, S_MISC, (size_t)n * isz);
            if (!q) return SSTC_ENOMEM;
            for (int s = 0; s < n; s++)
                for (int c = 0; c < e->in_c; c++) {
                    const int8_t *lut = e->in_q[sstc_infer_lut_channel(c)];
                    size_t base = ((size_t)s * e->in_c + c) * hw;
                    for (size_t i = 0; i < hw; i++) q[base + i] = lut[pb[base + i]];
                }
            rc = run_i8(e, q, n, lb);
        }
    }
    return rc;
}

/* Scales from the calibration maxima; the per-output requantizing affines. */
static int set_scales(sstc_engine *e) {
    double amax0 = 0;
    for (int c = 0; c < e->in_c && c < 5; c++) {
        const float *lut = e->in_lut[sstc_infer_lut_channel(c)];
        double m = fmax(fabs(lut[0]), fabs(lut[255]));
        if (m > amax0) amax0 = m;
    }
    e->in_scale = amax0 > 0 ? (float)(amax0 / 127.0) : 1.0f;
    for (int t = 0; t < 5; t++)
        for (int p = 0; p < 256; p++) e->in_q[t][p] = sstc_infer_quantize(e->in_lut[t][p] / e->in_scale, -127);
    for (int i = 0; i < e->n_ops; i++) {
        sstc_infer_op *op = &e->ops[i];
        float src_scale[SSTC_SST_MAX_ROUTE];
        for (int k = 0; k < op->nsrc; k++)
            src_scale[k] = op->src[k] == SSTC_INFER_INPUT ? e->in_scale : e->ops[op->src[k]].out_scale;
        op->in_scale = src_scale[0];
        op->out_scale = op->in_scale; /* relu, pools, permute keep their input's scale */
        if (op->sets_scale) op->out_scale = op->amax > 0 && isfinite(op->amax) ? (float)(op->amax / 127.0) : 1.0f;
        double div = op->writes_logits ? 1.0 : (double)op->out_scale;
        if (op->kind == SSTC_OP_SHORTCUT)
            for (int k = 0; k < 2; k++) op->qs[k] = (float)((double)src_scale[k] / div);
        if (op->kind == SSTC_OP_ROUTE) {
            for (int k = 0; k < op->nsrc; k++)
                if (src_scale[k] > op->out_scale) op->out_scale = src_scale[k];
            for (int k = 0; k < op->nsrc; k++) op->qs[k] = (float)((double)src_scale[k] / op->out_scale);
        }
        if (!op->a) continue; /* no per-output affine to requantize */
        size_t n = op->kind == SSTC_OP_BN ? (size_t)op->c : (size_t)op->oc;
        free(op->qa);
        free(op->qb);
        op->qa = malloc(n * sizeof(float));
        op->qb = malloc(n * sizeof(float));
        if (!op->qa || !op->qb) return sstc_fail(SSTC_ENOMEM, "infer: out of memory");
        for (size_t o = 0; o < n; o++) {
            op->qa[o] = (float)((double)op->a[o] * op->in_scale / div);
            op->qb[o] = (float)((double)op->b[o] / div);
        }
    }
    int t = sstc_infer_final_tensor(e);
    e->out_scale = t == SSTC_INFER_INPUT ? e->in_scale : e->ops[t].out_scale;
    return SSTC_OK;
}

int sstc_engine_calibrate(sstc_engine *e, const uint8_t *pixels, int n) {
    if (!e || !pixels || n < 1) return sstc_fail(SSTC_EINVAL, "sstc_engine_calibrate: need an engine and n >= 1 images");
    for (int i = 0; i < e->n_ops; i++) e->ops[i].amax = 0;
    int mode = e->mode;
    e->mode = SSTC_ENGINE_FLOAT;
    size_t hw = (size_t)e->in_h * e->in_w, isz = (size_t)e->in_c * hw;
    float *logits = malloc((size_t)CHUNK * e->classes * sizeof(float));
    int rc = logits ? SSTC_OK : sstc_fail(SSTC_ENOMEM, "infer: out of memory");
    for (int b0 = 0; !rc && b0 < n; b0 += CHUNK) {
        int m = n - b0 < CHUNK ? n - b0 : CHUNK;
        float *x = scratch(e, S_MISC, (size_t)m * isz * sizeof(float));
        if (!x) {
            rc = SSTC_ENOMEM;
            break;
        }
        for (int s = 0; s < m; s++)
            for (int c = 0; c < e->in_c; c++) {
                const float *lut = e->in_lut[sstc_infer_lut_channel(c)];
                size_t base = ((size_t)s * e->in_c + c) * hw;
                for (size_t i = 0; i < hw; i++) x[base + i] = lut[pixels[(size_t)b0 * isz + base + i]];
            }
        rc = run_f32(e, x, m, logits, 1);
    }
    free(logits);
    e->mode = mode;
    if (!rc) rc = set_scales(e);
    e->calibrated = rc == SSTC_OK;
    if (!e->calibrated && e->mode == SSTC_ENGINE_INT8) e->mode = SSTC_ENGINE_FLOAT;
    return rc;
}

void sstc_engine_argmax(const float *logits, int n, int k, int *pred) {
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (l[j] > l[best]) best = j;
        pred[i] = best;
    }
}

int sstc_engine_check_input(const sstc_engine *e, int c, int h, int w, int num_classes) {
    if (!e) return sstc_fail(SSTC_EINVAL, "sstc_engine_check_input: NULL engine");
    if (c != e->in_c || h != e->in_h || w != e->in_w)
        return sstc_fail(SSTC_ESHAPE, "the images are %dx%dx%d (CxHxW) but the network expects %dx%dx%d", c, h, w,
                         e->in_c, e->in_h, e->in_w);
    if (num_classes > e->classes)
        return sstc_fail(SSTC_ESHAPE, "the labels have %d classes but the network outputs %d", num_classes,
                         e->classes);
    return SSTC_OK;
}

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Mirrors n images of c planes h x w left to right into dst. */
static void mirror_pixels(const uint8_t *src, uint8_t *dst, int n, int c, int h, int w) {
    for (size_t r = 0; r < (size_t)n * c * h; r++)
        for (int x = 0; x < w; x++) dst[r * w + x] = src[r * w + (size_t)(w - 1 - x)];
}

/* Softmax of one row of logits into p (double). */
static void softmax_row(const float *z, int k, double *p) {
    double mx = z[0], s = 0;
    for (int j = 1; j < k; j++) mx = z[j] > mx ? z[j] : mx;
    for (int j = 0; j < k; j++) s += p[j] = exp((double)z[j] - mx);
    for (int j = 0; j < k; j++) p[j] /= s;
}

int sstc_engine_evaluate_flip(sstc_engine *e, const uint8_t *pixels, const int *labels, long n, int batch, int flip,
                              int *pred, sstc_infer_result *r) {
    if (!r) return sstc_fail(SSTC_EINVAL, "sstc_engine_evaluate_pixels: NULL result");
    memset(r, 0, sizeof *r);
    if (!e || (n > 0 && (!pixels || !labels)) || n < 0)
        return sstc_fail(SSTC_EINVAL, "sstc_engine_evaluate_pixels: NULL argument or negative count");
    for (long i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= e->classes)
            return sstc_fail(SSTC_EINVAL, "image %ld: label %d, expected 0..%d (the network's classes)", i, labels[i],
                             e->classes - 1);
    if (batch <= 0) batch = 64;
    int K = e->classes;
    size_t isz = (size_t)e->in_c * e->in_h * e->in_w;
    float *logits = malloc((size_t)batch * K * sizeof(float));
    double *prob = malloc((size_t)K * sizeof(double)), *prob2 = malloc((size_t)K * sizeof(double));
    uint8_t *mirrored = flip ? malloc((size_t)batch * isz) : NULL;
    float *logits2 = flip ? malloc((size_t)batch * K * sizeof(float)) : NULL;
    int rc = SSTC_OK;
    if (!logits || !prob || !prob2 || (flip && (!mirrored || !logits2))) rc = sstc_fail(SSTC_ENOMEM, "infer: out of memory");
    double loss = 0;
    for (long b0 = 0; !rc && b0 < n; b0 += batch) {
        int m = n - b0 < batch ? (int)(n - b0) : batch;
        const uint8_t *pb = pixels + (size_t)b0 * isz;
        double t0 = seconds_now();
        rc = sstc_engine_forward_pixels(e, pb, m, logits);
        if (!rc && flip) {
            /* test-time flip averaging: the class probabilities of each image
             * and its mirror image, averaged (as training's test_flip) */
            mirror_pixels(pb, mirrored, m, e->in_c, e->in_h, e->in_w);
            rc = sstc_engine_forward_pixels(e, mirrored, m, logits2);
        }
        r->seconds += seconds_now() - t0;
        if (rc) break;
        for (int i = 0; i < m; i++) {
            softmax_row(logits + (size_t)i * K, K, prob);
            if (flip) {
                softmax_row(logits2 + (size_t)i * K, K, prob2);
                for (int j = 0; j < K; j++) prob[j] = 0.5 * (prob[j] + prob2[j]);
            }
            int best = 0, y = labels[b0 + i];
            for (int j = 1; j < K; j++)
                if (prob[j] > prob[best]) best = j;
            loss -= log(prob[y] > 1e-300 ? prob[y] : 1e-300);
            r->errors += best != y;
            if (pred) pred[b0 + i] = best;
        }
        r->count += m;
    }
    free(logits), free(logits2), free(prob), free(prob2), free(mirrored);
    if (rc) return rc;
    r->loss = r->count ? loss / (double)r->count : 0;
    r->error = r->count ? (double)r->errors / (double)r->count : 0;
    return SSTC_OK;
}

int sstc_engine_evaluate_pixels(sstc_engine *e, const uint8_t *pixels, const int *labels, long n, int batch, int *pred,
                                sstc_infer_result *r) {
    return sstc_engine_evaluate_flip(e, pixels, labels, n, batch, 0, pred, r);
}
