/* Training sessions: set-up from a config, the training epoch and evaluation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "sstc/dist.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seed of the generator for (epoch, batch); batch -1 is the epoch's shuffle. */
static uint64_t stream_seed(uint64_t seed, int64_t a, int64_t b) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)a * 0xbf58476d1ce4e5b9ULL) ^
                 ((uint64_t)(b + 2) * 0x94d049bb133111ebULL);
    x ^= x >> 31;
    x *= 0xd6e8feb86659fd93ULL;
    return x ^ (x >> 32);
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int sstc_session_load_data(sstc_session *s, const char *dataset) {
    if (s->data_loaded) return 0;
    const sstc_config *c = &s->cfg;
    const char *name = dataset ? dataset : c->dataset;
    if (sstc_dataset_load(name, "train", &s->train)) return sstc_errcode();
    if (sstc_dataset_load(name, "test", &s->test)) return sstc_errcode();
    s->data_loaded = 1;
    if (s->model) {
        /* An existing network must fit the data. */
        if (s->train.c != s->in_c || s->train.h != s->in_h || s->train.w != s->in_w ||
            s->train.num_classes != s->classes)
            return sstc_fail(SSTC_ESHAPE, "dataset '%s' has %dx%dx%d images in %d classes, but the network expects %dx%dx%d and %d classes",
                             name, s->train.c, s->train.h, s->train.w, s->train.num_classes, s->in_c, s->in_h, s->in_w, s->classes);
    }
    s->in_c = s->train.c;
    s->in_h = s->train.h;
    s->in_w = s->train.w;
    s->classes = s->train.num_classes;
    if (s->test.c != s->in_c || s->test.h != s->in_h || s->test.w != s->in_w)
        return sstc_fail(SSTC_ESHAPE, "dataset '%s': test images are %dx%dx%d but training images %dx%dx%d", name,
                         s->test.c, s->test.h, s->test.w, s->in_c, s->in_h, s->in_w);
    if (c->validation >= s->train.n)
        return sstc_fail(SSTC_ECONFIG, "%s: [data] validation = %d, but the training set has only %d images",
                         c->path, c->validation, s->train.n);
    sstc_rng r;
    sstc_rng_seed(&r, stream_seed(c->seed, -7, 0));
    free(s->train_idx);
    free(s->val_idx);
    s->train_idx = s->val_idx = NULL;
    if (sstc_dataset_split(s->train.n, c->validation, &r, &s->train_idx, &s->val_idx)) return sstc_errcode();
    s->ntrain = s->train.n - c->validation;
    s->nval = c->validation;
    if (s->norm.c == 0) { /* not restored from a checkpoint */
        memset(&s->norm, 0, sizeof s->norm);
        s->norm.c = s->in_c;
        if (c->normalize == SSTC_NORM_DATASET) {
            if (sstc_dataset_channel_stats(&s->train, s->train_idx, s->ntrain, &s->norm)) return sstc_errcode();
        } else if (c->normalize == SSTC_NORM_GIVEN) {
            if (c->norm_channels != s->in_c)
                return sstc_fail(SSTC_ECONFIG, "%s: [data] mean/std have %d values, the images have %d channels",
                                 c->path, c->norm_channels, s->in_c);
            for (int i = 0; i < s->in_c; i++) {
                s->norm.mean[i] = c->mean[i];
                s->norm.std[i] = c->std[i];
            }
        } else {
            for (int i = 0; i < s->in_c; i++) s->norm.std[i] = 1.0f;
        }
    }
    s->aug.pad_crop = c->augment_crop;
    s->aug.hflip = c->augment_flip;
    s->aug.cutout = c->augment_cutout;
    /* [data] train_subset: a seeded choice of that many training images (after
     * the normalization statistics, which are those of the whole split) */
    int nbatch = s->ntrain;
    const int *use = s->train_idx;
    free(s->subset_idx);
    s->subset_idx = NULL;
    if (c->train_subset > 0 && c->train_subset < s->ntrain) {
        nbatch = c->train_subset;
        if (!(s->subset_idx = malloc((size_t)s->ntrain * sizeof(int)))) return sstc_fail(SSTC_ENOMEM, "out of memory");
        memcpy(s->subset_idx, s->train_idx, (size_t)s->ntrain * sizeof(int));
        sstc_rng sr;
        sstc_rng_seed(&sr, stream_seed(c->seed, -4, 0));
        for (int i = 0; i < nbatch; i++) {
            int j = i + (int)sstc_rng_below(&sr, (uint64_t)(s->ntrain - i)), t = s->subset_idx[i];
            s->subset_idx[i] = s->subset_idx[j], s->subset_idx[j] = t;
        }
        use = s->subset_idx;
    }
    if (sstc_batcher_init(&s->batcher, &s->train, use, nbatch, c->batch_size, 1, 0, &s->norm,
                          &s->aug, &s->batch_rng))
        return sstc_errcode();
    s->batcher_ready = 1;
    return 0;
}

/* Several MPI ranks: the trainable parameters' values and gradients moved
 * into two flat buffers (P equal blocks, zero padding), so that the
 * gradient all-reduce and the parameter all-gather run in place, without
 * copies. The old storage stays with the model's arena, unused. */
static int dist_flatten(sstc_session *s) {
    sstc_optimizer *o = s->opt;
    size_t P = (size_t)sstc_dist_size(), total = 0;
    for (int p = 0; p < o->nparams; p++) total += o->params[p]->size;
    size_t cap = (total + P - 1) / P * P;
    s->flat_data = calloc(cap ? cap : 1, sizeof(float));
    s->flat_grad = calloc(cap ? cap : 1, sizeof(float));
    if (!s->flat_data || !s->flat_grad) return sstc_fail(SSTC_ENOMEM, "session: out of memory for the flat parameters");
    size_t off = 0;
    for (int p = 0; p < o->nparams; p++) {
        sstc_tensor *t = o->params[p];
        memcpy(s->flat_data + off, t->data, t->size * sizeof(float));
        memcpy(s->flat_grad + off, t->grad, t->size * sizeof(float));
        t->data = s->flat_data + off;
        t->grad = s->flat_grad + off;
        off += t->size;
    }
    return 0;
}

static int build(sstc_session *s) {
    const sstc_config *c = &s->cfg;
    sstc_set_threads(c->threads);
    s->model = sstc_config_build_model(c, s->in_c, s->in_h, s->in_w, s->classes);
    if (!s->model) return sstc_errcode();
    sstc_rng r;
    sstc_rng_seed(&r, stream_seed(c->seed, -3, 0));
    sstc_model_init(s->model, c->init, &r);
    sstc_named_tensor nt[5 * SSTC_MAX_LAYERS];
    int n = sstc_model_named_tensors(s->model, nt, 5 * SSTC_MAX_LAYERS), np = 0;
    sstc_tensor *params[5 * SSTC_MAX_LAYERS];
    for (int i = 0; i < n; i++)
        if (nt[i].trainable) params[np++] = nt[i].tensor;
    s->opt = sstc_optim_create(&c->optim, params, np);
    if (!s->opt) return sstc_errcode();
    if (sstc_dist_size() > 1 && dist_flatten(s)) return sstc_errcode();
    s->ctx = sstc_ctx_create((size_t)64 << 20);
    int bs = c->batch_size > c->eval_batch_size ? c->batch_size : c->eval_batch_size;
    size_t per = (size_t)s->in_c * s->in_h * s->in_w;
    s->x = malloc((size_t)bs * per * sizeof(float));
    s->y = malloc((size_t)bs * sizeof(int));
    if (!s->ctx || !s->x || !s->y) return sstc_fail(SSTC_ENOMEM, "session: out of memory");
    return 0;
}

static int open_text(sstc_session *s, const char *text, const char *path, const char *const *overrides,
                     int noverrides, int load_data) {
    s->log = stderr;
    if (sstc_config_parse(text, path, overrides, noverrides, &s->cfg)) return sstc_errcode();
    s->cfg_text = xstrdup(text);
    s->overrides = calloc((size_t)noverrides + 1, sizeof(char *));
    for (int i = 0; i < noverrides; i++) s->overrides[i] = xstrdup(overrides[i]);
    s->noverrides = noverrides;
    if (load_data && sstc_session_load_data(s, NULL)) return sstc_errcode();
    return build(s);
}

/* Allocates a session, runs `init` on it, frees it again on failure. */
static int finish_open(sstc_session **out, sstc_session *s, int rc) {
    if (rc) {
        sstc_session_close(s);
        *out = NULL;
        return rc;
    }
    *out = s;
    return 0;
}

int sstc_session_open_text(sstc_session **out, const char *text, const char *path, const char *const *overrides,
                           int noverrides, int load_data) {
    if (!out) return sstc_fail(SSTC_EINVAL, "session_open: NULL out");
    *out = NULL;
    if (!text) return sstc_fail(SSTC_EINVAL, "session_open: NULL config text");
    if (!load_data)
        return sstc_fail(SSTC_EINVAL, "session_open: without data the input shape is unknown (open a checkpoint instead)");
    sstc_session *s = calloc(1, sizeof *s);
    if (!s) return sstc_fail(SSTC_ENOMEM, "session_open: out of memory");
    return finish_open(out, s, open_text(s, text, path, overrides, noverrides, 1));
}

int sstc_session_open_known(sstc_session *s, const char *text, const char *path, const char *const *overrides,
                       int noverrides, int in_c, int in_h, int in_w, int classes, const sstc_normalizer *norm) {
    memset(s, 0, sizeof *s);
    s->in_c = in_c, s->in_h = in_h, s->in_w = in_w, s->classes = classes;
    s->norm = *norm;
    return open_text(s, text, path, overrides, noverrides, 0);
}

int sstc_session_open(sstc_session **out, const char *config_path, const char *const *overrides, int noverrides,
                      int load_data) {
    if (!out) return sstc_fail(SSTC_EINVAL, "session_open: NULL out");
    *out = NULL;
    char *text = NULL;
    if (sstc_read_config_file(config_path, &text)) return sstc_errcode();
    int rc = sstc_session_open_text(out, text, config_path, overrides, noverrides, load_data);
    free(text);
    return rc;
}

void sstc_session_close(sstc_session *s) {
    if (!s) return;
    sstc_session_release(s);
    free(s);
}

void sstc_session_release(sstc_session *s) {
    if (!s) return;
    sstc_dataset_free(&s->train);
    sstc_dataset_free(&s->test);
    if (s->batcher_ready) sstc_batcher_free(&s->batcher);
    free(s->train_idx);
    free(s->val_idx);
    free(s->subset_idx);
    sstc_model_free(s->model);
    sstc_optim_free(s->opt);
    free(s->stepped);
    sstc_ctx_free(s->ctx);
    free(s->x);
    free(s->y);
    free(s->dist_buf);
    free(s->flat_data);
    free(s->flat_grad);
    sstc_session_close(s->teacher);
    free(s->cfg_text);
    for (int i = 0; i < s->noverrides; i++) free(s->overrides[i]);
    free(s->overrides);
    memset(s, 0, sizeof *s);
}

/* SSTC_STEP=layer updates each parameter as soon as the backward pass has
 * completed its gradient, while it is in cache; the default (end) applies
 * the optimizer step after the pass. The same arithmetic, the same bits; on
 * the MLP of `make bench` the two measured equal (0.99-1.02x: Adam's cost is
 * its square roots and divisions, not its reads), so the plain order stays
 * the default. */
static int layerwise_on = -1;
static int step_layerwise(void) {
    if (layerwise_on < 0) {
        const char *v = getenv("SSTC_STEP");
        layerwise_on = v && !strcmp(v, "layer");
    }
    return layerwise_on;
}
void sstc_train_force_step_mode(int layerwise) { layerwise_on = layerwise ? 1 : 0; }

static void step_param_done(void *user, sstc_tensor *t) {
    sstc_session *s = user;
    int p = sstc_optim_param_index(s->opt, t);
    if (p < 0 || s->stepped[p]) return;
    s->stepped[p] = 1;
    if (sstc_optim_update_param(s->opt, s->step_rate, p)) s->step_failed = 1;
}

/* The parameters no gradient reached (still decayed and moved by momentum). */
static int step_finish(sstc_session *s) {
    for (int p = 0; p < s->opt->nparams; p++)
        if (!s->stepped[p] && sstc_optim_update_param(s->opt, s->step_rate, p)) return sstc_errcode();
    return s->step_failed ? sstc_fail(SSTC_EINVAL, "optimizer: a parameter update failed") : SSTC_OK;
}

static int argmax_errors(const float *z, const int *y, int n, int C) {
    int err = 0;
    for (int i = 0; i < n; i++) {
        const float *r = z + (size_t)i * C;
        int best = 0;
        for (int c = 1; c < C; c++)
            if (r[c] > r[best]) best = c;
        err += best != y[i];
    }
    return err;
}

static void fmt_time(double s, char *buf, size_t n) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* ---- several MPI ranks (sstc/dist.h) ---------------------------------------- */

/* Several ranks, one step, in two collectives around the optimizer (a
 * sharded optimizer: each rank updates 1/P of the parameters):
 *  1. every rank's gradients, scaled by its share of the global batch, are
 *     summed with one MPI_Allreduce over a flat buffer (the loss sum, error
 *     count and stop flag in a second, 24-byte one);
 *  2. (after the caller's checks) rank r takes the optimizer step for block r
 *     of the parameters laid end to end (P equal blocks) only, with
 *     sstc_optim_step_range (the same bits as a whole step), and an
 *     MPI_Allgather gives every rank every updated block.
 * The optimizer's work (Adam's square roots and divisions over every weight)
 * is divided by P instead of repeated on every rank. (A reduce-scatter would
 * halve the summing traffic, but Open MPI 4.1's MPI_Reduce_scatter_block took
 * 60 ms per step on the MLP here against 4.5 ms for MPI_Allreduce.) */
static size_t dist_total(const sstc_optimizer *o) {
    size_t total = 0;
    for (int p = 0; p < o->nparams; p++) total += o->params[p]->size;
    return total;
}

/* Copies between the parameters' tensors (their data, or grad) and the flat
 * buffer, for elements [lo, hi) of all parameters end to end. */
enum { DIST_DATA, DIST_GRAD, DIST_M, DIST_V };
static void dist_copy(sstc_optimizer *o, float *flat, size_t lo, size_t hi, int what, int to_flat, float scale) {
    size_t off = 0;
    for (int p = 0; p < o->nparams; p++) {
        sstc_tensor *t = o->params[p];
        size_t a = lo > off ? lo - off : 0, b = hi > off ? hi - off : 0;
        if (b > t->size) b = t->size;
        float *v = what == DIST_GRAD ? t->grad : what == DIST_M ? o->m[p] : what == DIST_V ? o->v[p] : t->data;
        for (size_t i = a; i < b; i++) {
            if (to_flat) flat[off + i] = v[i] * scale;
            else v[i] = flat[off + i];
        }
        off += t->size;
    }
}

static int dist_reduce_step(sstc_session *s, int n_local, int n_global, double *loss_sum, double *errs) {
    sstc_optimizer *o = s->opt;
    int P = sstc_dist_size(), r = sstc_dist_rank();
    size_t total = dist_total(o), blk = (total + (size_t)P - 1) / (size_t)P;
    if (s->dist_cap < blk * (size_t)P) {
        free(s->dist_buf);
        s->dist_buf = calloc(blk * (size_t)P, sizeof(float)); /* the padding stays 0 */
        s->dist_cap = s->dist_buf ? blk * (size_t)P : 0;
        if (!s->dist_buf) return sstc_fail(SSTC_ENOMEM, "gradient reduction buffer: out of memory");
    }
    if (s->flat_grad) {
        /* the gradients are one flat array, already scaled (the loss was) */
        (void)r;
        if (sstc_dist_sum_f32(s->flat_grad, total)) return sstc_errcode();
    } else {
        dist_copy(o, s->dist_buf, 0, total, DIST_GRAD, 1, (float)n_local / (float)n_global);
        if (sstc_dist_sum_f32(s->dist_buf, total)) return sstc_errcode();
        size_t lo = (size_t)r * blk, hi = lo + blk < total ? lo + blk : total;
        dist_copy(o, s->dist_buf, lo, hi, DIST_GRAD, 0, 1.0f);
    }
    double sums[3] = {*loss_sum, *errs, s->stop && *s->stop ? 1.0 : 0.0};
    if (sstc_dist_sum_f64(sums, 3)) return sstc_errcode();
    *loss_sum = sums[0], *errs = sums[1];
    s->dist_stop = sums[2] > 0;
    return 0;
}

static int dist_optim_step(sstc_session *s, float rate) {
    sstc_optimizer *o = s->opt;
    int P = sstc_dist_size(), r = sstc_dist_rank();
    size_t total = dist_total(o), blk = (total + (size_t)P - 1) / (size_t)P;
    size_t lo = (size_t)r * blk, hi = lo + blk < total ? lo + blk : total;
    if (lo < hi && sstc_optim_step_range(o, rate, lo, hi)) return sstc_errcode();
    if (lo >= hi) o->step++; /* no elements here (more ranks than weights): keep the step count */
    if (s->flat_data) return sstc_dist_allgather_f32(s->flat_data, blk) ? sstc_errcode() : 0;
    dist_copy(o, s->dist_buf, lo, hi, DIST_DATA, 1, 1.0f);
    if (sstc_dist_allgather_f32(s->dist_buf, blk)) return sstc_errcode();
    /* the other ranks' blocks (this rank's own is in place already) */
    dist_copy(o, s->dist_buf, 0, lo, DIST_DATA, 0, 1.0f);
    dist_copy(o, s->dist_buf, hi, total, DIST_DATA, 0, 1.0f);
    return 0;
}

/* The optimizer state (momentum, Adam's moments) each rank updated for its
 * block only, gathered on every rank: before a checkpoint (rank 0 writes the
 * whole state) or anything else that reads it. */
static int dist_sync_optimizer(sstc_session *s) {
    sstc_optimizer *o = s->opt;
    int P = sstc_dist_size(), r = sstc_dist_rank();
    if (P <= 1 || !s->dist_buf) return 0;
    size_t total = dist_total(o), blk = (total + (size_t)P - 1) / (size_t)P;
    size_t lo = (size_t)r * blk, hi = lo + blk < total ? lo + blk : total;
    for (int w = DIST_M; w <= (o->v ? DIST_V : DIST_M); w++) {
        dist_copy(o, s->dist_buf, lo, hi, w, 1, 1.0f);
        if (sstc_dist_allgather_f32(s->dist_buf, blk)) return sstc_errcode();
        dist_copy(o, s->dist_buf, 0, total, w, 0, 1.0f);
    }
    return 0;
}

/* End of an epoch: batch-norm running statistics averaged over the ranks, then
 * rank 0's tensors to every rank, so that all hold the same network. */
static int dist_sync_model(sstc_session *s) {
    int P = sstc_dist_size();
    if (P <= 1) return 0;
    sstc_named_tensor nt[5 * SSTC_MAX_LAYERS];
    int n = sstc_model_named_tensors(s->model, nt, 5 * SSTC_MAX_LAYERS);
    for (int i = 0; i < n; i++) {
        sstc_tensor *t = nt[i].tensor;
        if (!nt[i].trainable) {
            if (sstc_dist_sum_f32(t->data, t->size)) return sstc_errcode();
            for (size_t j = 0; j < t->size; j++) t->data[j] /= (float)P;
        }
        if (sstc_dist_bcast(t->data, t->size * sizeof(float))) return sstc_errcode();
    }
    return 0;
}

int sstc_session_set_teacher(sstc_session *s, sstc_session *teacher, float alpha, float T) {
    if (teacher && (teacher->in_c != s->in_c || teacher->in_h != s->in_h || teacher->in_w != s->in_w ||
                    teacher->classes != s->classes)) {
        int rc = sstc_fail(SSTC_ESHAPE, "distillation: the teacher takes %dx%dx%d images into %d classes, the network %dx%dx%d into %d",
                           teacher->in_c, teacher->in_h, teacher->in_w, teacher->classes, s->in_c, s->in_h, s->in_w, s->classes);
        sstc_session_close(teacher);
        return rc;
    }
    if (teacher && (!(alpha > 0 && alpha <= 1) || !(T > 0))) {
        sstc_session_close(teacher);
        return sstc_fail(SSTC_EINVAL, "distillation: weight %g (expected 0 < weight <= 1) and temperature %g (expected > 0)",
                         (double)alpha, (double)T);
    }
    if (s->teacher != teacher) sstc_session_close(s->teacher);
    s->teacher = teacher;
    s->distill_alpha = alpha, s->distill_T = T;
    return 0;
}

/* The training loss with distillation: the teacher's softened outputs on the
 * same n images x, mixed with the label loss ce. */
static sstc_tensor *distill_loss(sstc_session *s, sstc_tensor *logits, sstc_tensor *ce, float *x, int n) {
    sstc_session *t = s->teacher;
    sstc_ctx_reset(t->ctx);
    sstc_model_train(t->model, 0);
    sstc_tensor *xt = sstc_tensor_wrap(t->ctx, x, 4, (int[]){n, s->in_c, s->in_h, s->in_w});
    sstc_tensor *zt = xt ? sstc_model_forward(t->model, t->ctx, xt) : NULL;
    float *p = zt ? sstc_ctx_alloc(s->ctx, zt->size * sizeof(float)) : NULL;
    if (!p) return NULL;
    sstc_softmax_temperature(zt->data, n, s->classes, s->distill_T, p);
    sstc_tensor *kd = sstc_distill_kl(s->ctx, logits, p, s->distill_T);
    if (!kd) return NULL;
    return sstc_add(s->ctx, sstc_scale(s->ctx, ce, 1.0f - s->distill_alpha), sstc_scale(s->ctx, kd, s->distill_alpha));
}

static int stop_requested(const sstc_session *s) {
    if (sstc_dist_size() > 1) return s->dist_stop; /* agreed on by every rank in the last reduction */
    return s->stop && *s->stop;
}

int sstc_session_train_epoch(sstc_session *s, const sstc_lr_schedule *lr, int total_epochs, const char *tag,
                             double *train_loss, double *train_err) {
    if (!s->batcher_ready) return sstc_fail(SSTC_ESTATE, "train_epoch: no data loaded");
    sstc_epoch_state *st = &s->state;
    const sstc_config *c = &s->cfg;
    int nb = sstc_batcher_num_batches(&s->batcher);
    int C = s->classes;
    sstc_rng_seed(&s->batch_rng, stream_seed(c->seed, st->epoch, -1));
    sstc_batcher_start_epoch(&s->batcher);
    if (st->batch > 0) s->batcher.pos = st->batch * c->batch_size; /* resume mid-epoch */
    else st->loss_sum = st->err_sum = st->seen = 0, st->seconds = 0;
    int tty = !s->quiet && s->log && isatty(fileno(s->log));
    double t_start = now(), last_print = 0, sec0 = st->seconds;
    sstc_model_train(s->model, 1);
    sstc_ctx_set_rng(s->ctx, &s->batch_rng);
    int P = sstc_dist_size(), rank = sstc_dist_rank();
    size_t per = (size_t)s->in_c * s->in_h * s->in_w;
    /* one rank: each parameter stepped as soon as its gradient is complete
     * (several ranks sum the gradients first) */
    int layerwise = P == 1 && s->opt && step_layerwise();
    if (layerwise && !s->stepped && !(s->stepped = calloc((size_t)s->opt->nparams + 1, 1)))
        return sstc_fail(SSTC_ENOMEM, "train_epoch: out of memory");
    while (st->batch < nb) {
        if (stop_requested(s)) {
            if (dist_sync_optimizer(s)) return sstc_errcode(); /* the checkpoint holds every rank's part */
            return sstc_fail(SSTC_EINTR, "interrupted at epoch %d, batch %d", st->epoch + 1, st->batch);
        }
        sstc_rng_seed(&s->batch_rng, stream_seed(c->seed, st->epoch, st->batch));
        int n = sstc_batcher_next(&s->batcher, s->x, s->y);
        if (n <= 0) break;
        /* with several ranks, every rank draws the same global batch and takes
         * its slice; dropout then draws from a stream of its own */
        int lo = (int)((long)n * rank / P), hi = (int)((long)n * (rank + 1) / P), nl = hi - lo;
        if (P > 1) sstc_rng_seed(&s->batch_rng, stream_seed(c->seed ^ (0x5bd1e995ULL * (uint64_t)(rank + 1)), st->epoch, st->batch));
        float rate = sstc_lr_at(lr, st->epoch - s->lr_epoch_offset + (double)st->batch / nb);
        sstc_ctx_reset(s->ctx);
        if (s->hooks.before_forward && s->hooks.before_forward(s->hooks.user, s)) return sstc_errcode();
        sstc_optim_zero_grad(s->opt);
        double lsum = 0, errs = 0;
        if (nl > 0) {
            sstc_tensor *xt = sstc_tensor_wrap(s->ctx, s->x + (size_t)lo * per, 4, (int[]){nl, s->in_c, s->in_h, s->in_w});
            sstc_tensor *logits = sstc_model_forward(s->model, s->ctx, xt);
            sstc_tensor *loss = sstc_softmax_ce_smooth(s->ctx, logits, s->y + lo, c->label_smoothing);
            if (loss && s->teacher) loss = distill_loss(s, logits, loss, s->x + (size_t)lo * per, nl);
            if (!loss) return sstc_errcode();
            lsum = (double)loss->data[0] * nl;
            errs = argmax_errors(logits->data, s->y + lo, nl, C);
            /* several ranks with flat gradients: the rank's share of the batch
             * scales its loss, so its gradients arrive scaled for the sum */
            if (P > 1 && s->flat_grad) loss = sstc_scale(s->ctx, loss, (float)nl / (float)n);
            /* a non-finite loss skips the backward pass; the check below stops every rank */
            if (layerwise && isfinite(lsum)) {
                sstc_optim_begin_step(s->opt);
                memset(s->stepped, 0, (size_t)s->opt->nparams);
                s->step_rate = rate, s->step_failed = 0;
                if (sstc_backward_notify(s->ctx, loss, step_param_done, s)) return sstc_errcode();
            } else if (isfinite(lsum) && (!loss || sstc_backward(s->ctx, loss))) {
                return sstc_errcode();
            }
        }
        if (P > 1 && dist_reduce_step(s, nl, n, &lsum, &errs)) return sstc_errcode();
        double lv = lsum / n;
        if (!isfinite(lv))
            return sstc_fail(SSTC_ENUMERIC, "the training loss became %s at epoch %d, batch %d (learning rate %g); "
                             "lower the learning rate", isnan(lv) ? "NaN" : "Inf", st->epoch + 1, st->batch + 1, (double)rate);
        st->err_sum += errs;
        if (P > 1 ? dist_optim_step(s, rate) : layerwise ? step_finish(s) : sstc_optim_step(s->opt, rate))
            return sstc_errcode();
        if (s->hooks.after_step && s->hooks.after_step(s->hooks.user, s)) return sstc_errcode();
        st->loss_sum += lsum;
        st->seen += n;
        st->batch++;
        double t = now();
        st->seconds = sec0 + (t - t_start);
        if (tty && (t - last_print > 0.25 || st->batch == nb)) {
            last_print = t;
            double ips = (double)(st->seen) / (st->seconds > 0 ? st->seconds : 1);
            char eta[32];
            fmt_time((double)(nb - st->batch) * c->batch_size / (ips > 0 ? ips : 1), eta, sizeof eta);
            fprintf(s->log, "\r\033[K%s epoch %d/%d %3d%% %d/%d  loss %.4f  err %.2f%%  %.0f img/s  ETA %s", tag,
                    st->epoch + 1, total_epochs, 100 * st->batch / nb, st->batch, nb, st->loss_sum / st->seen,
                    100.0 * st->err_sum / st->seen, ips, eta);
            fflush(s->log);
        } else if (!tty && !s->quiet && s->log && t - last_print > 60) {
            /* a log file (no terminal): a plain line a minute, so a long epoch shows it is alive */
            if (last_print > 0)
                fprintf(s->log, "%s epoch %d/%d %3d%% %d/%d  loss %.4f  err %.2f%%  %.0f img/s\n", tag, st->epoch + 1,
                        total_epochs, 100 * st->batch / nb, st->batch, nb, st->loss_sum / st->seen,
                        100.0 * st->err_sum / st->seen, (double)st->seen / (st->seconds > 0 ? st->seconds : 1));
            fflush(s->log);
            last_print = t;
        }
    }
    if (tty) fprintf(s->log, "\r\033[K");
    if (dist_sync_model(s) || dist_sync_optimizer(s)) return sstc_errcode();
    *train_loss = st->seen ? st->loss_sum / st->seen : 0;
    *train_err = st->seen ? st->err_sum / st->seen : 0;
    return 0;
}

/* Fills x,y with samples idx[from..from+n) normalized, without augmentation. */
static void eval_batch(const sstc_session *s, const sstc_dataset *ds, const int *idx, int from, int n, float *x, int *y) {
    size_t per = (size_t)ds->c * ds->h * ds->w, hw = (size_t)ds->h * ds->w;
    for (int i = 0; i < n; i++) {
        int k = idx ? idx[from + i] : from + i;
        const uint8_t *p = ds->pixels + (size_t)k * per;
        float *o = x + (size_t)i * per;
        for (int ch = 0; ch < ds->c; ch++) {
            float m = s->norm.mean[ch], inv = 1.0f / s->norm.std[ch];
            for (size_t j = 0; j < hw; j++) o[ch * hw + j] = ((float)p[ch * hw + j] * (1.0f / 255.0f) - m) * inv;
        }
        y[i] = ds->labels[k];
    }
}

/* Mirrors n images of c planes h x w left to right, in place. */
static void mirror_images(float *x, int n, int c, int h, int w) {
    for (size_t r = 0; r < (size_t)n * c * h; r++) {
        float *row = x + r * w;
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            float t = row[a];
            row[a] = row[b];
            row[b] = t;
        }
    }
}

int sstc_session_evaluate(sstc_session *s, const sstc_dataset *ds, const int *idx, int count, sstc_eval_result *out) {
    if (!s->model || !ds) return sstc_fail(SSTC_EINVAL, "evaluate: no model or dataset");
    if (ds->c != s->in_c || ds->h != s->in_h || ds->w != s->in_w)
        return sstc_fail(SSTC_ESHAPE, "evaluate: images are %dx%dx%d, the network expects %dx%dx%d", ds->c, ds->h, ds->w,
                         s->in_c, s->in_h, s->in_w);
    if (count < 0) count = ds->n;
    int B = s->cfg.eval_batch_size, C = s->classes, flip = s->cfg.test_flip;
    float *p1 = NULL;
    if (flip && !(p1 = malloc((size_t)B * C * sizeof(float))))
        return sstc_fail(SSTC_ENOMEM, "evaluate: out of memory");
    sstc_model_train(s->model, 0);
    double loss = 0;
    long err = 0;
    int rc = 0;
    /* several MPI ranks: each evaluates its share, the sums are reduced (an
     * interruption waits for the training loop, where the ranks agree on it) */
    int P = sstc_dist_size(), rank = sstc_dist_rank();
    int lo = (int)((long)count * rank / P), hi = (int)((long)count * (rank + 1) / P);
    for (int from = lo; from < hi && !rc; from += B) {
        if (P == 1 && s->stop && *s->stop) {
            rc = sstc_fail(SSTC_EINTR, "interrupted during evaluation");
            break;
        }
        int n = hi - from < B ? hi - from : B;
        eval_batch(s, ds, idx, from, n, s->x, s->y);
        for (int i = 0; i < n && !rc; i++)
            if (s->y[i] < 0 || s->y[i] >= C)
                rc = sstc_fail(SSTC_EFORMAT, "evaluate: label %d of sample %d out of range 0..%d", s->y[i], from + i, C - 1);
        /* with test_flip, a second pass on the mirror images; the class
         * probabilities of the two passes are averaged */
        for (int pass = 0; pass <= flip && !rc; pass++) {
            if (pass) mirror_images(s->x, n, s->in_c, s->in_h, s->in_w);
            sstc_ctx_reset(s->ctx);
            if (s->hooks.before_forward && s->hooks.before_forward(s->hooks.user, s)) {
                rc = sstc_errcode();
                break;
            }
            sstc_tensor *xt = sstc_tensor_wrap(s->ctx, s->x, 4, (int[]){n, s->in_c, s->in_h, s->in_w});
            sstc_tensor *logits = sstc_model_forward(s->model, s->ctx, xt);
            sstc_tensor *l = sstc_softmax_ce(s->ctx, logits, s->y);
            if (!l) {
                rc = sstc_errcode();
                break;
            }
            if (!flip) {
                loss += (double)l->data[0] * n;
                err += argmax_errors(logits->data, s->y, n, C);
            } else if (!pass) {
                memcpy(p1, l->saved, (size_t)n * C * sizeof(float));
            } else {
                const float *p2 = l->saved;
                for (size_t i = 0; i < (size_t)n * C; i++) p1[i] = 0.5f * (p1[i] + p2[i]);
                for (int i = 0; i < n; i++) {
                    float py = p1[(size_t)i * C + s->y[i]];
                    loss -= log(py > 1e-30f ? py : 1e-30f);
                }
                err += argmax_errors(p1, s->y, n, C);
            }
        }
    }
    sstc_ctx_reset(s->ctx);
    free(p1);
    if (rc) return rc;
    if (P > 1) {
        double sums[2] = {loss, (double)err};
        if (sstc_dist_sum_f64(sums, 2)) return sstc_errcode();
        loss = sums[0], err = (long)sums[1];
    }
    out->loss = count ? loss / count : 0;
    out->error = count ? (double)err / count : 0;
    out->count = count;
    return 0;
}

int sstc_session_logits(sstc_session *s, const sstc_dataset *ds, int count, float *out) {
    int B = s->cfg.eval_batch_size;
    sstc_model_train(s->model, 0);
    for (int from = 0; from < count; from += B) {
        int n = count - from < B ? count - from : B;
        eval_batch(s, ds, NULL, from, n, s->x, s->y);
        sstc_ctx_reset(s->ctx);
        if (s->hooks.before_forward && s->hooks.before_forward(s->hooks.user, s)) return sstc_errcode();
        sstc_tensor *xt = sstc_tensor_wrap(s->ctx, s->x, 4, (int[]){n, s->in_c, s->in_h, s->in_w});
        sstc_tensor *z = sstc_model_forward(s->model, s->ctx, xt);
        if (!z) return sstc_errcode();
        memcpy(out + (size_t)from * s->classes, z->data, (size_t)n * s->classes * sizeof(float));
    }
    sstc_ctx_reset(s->ctx);
    return 0;
}

int sstc_session_evaluate_test(sstc_session *s, sstc_eval_result *out) {
    if (!s->data_loaded) return sstc_fail(SSTC_ESTATE, "evaluate: no data loaded");
    return sstc_session_evaluate(s, &s->test, NULL, s->test.n, out);
}

int sstc_session_evaluate_val(sstc_session *s, sstc_eval_result *out) {
    if (!s->data_loaded) return sstc_fail(SSTC_ESTATE, "evaluate: no data loaded");
    if (!s->nval) {
        *out = (sstc_eval_result){0};
        return 0;
    }
    return sstc_session_evaluate(s, &s->train, s->val_idx, s->nval, out);
}

int sstc_session_reestimate_batchnorm(sstc_session *s, int batches, uint64_t seed) {
    sstc_model *m = s->model;
    if (!s->batcher_ready) return sstc_fail(SSTC_ESTATE, "batch-norm re-estimation: no data loaded");
    float *saved_p = malloc((size_t)m->nlayers * sizeof(float)), *saved_mom = malloc((size_t)m->nlayers * sizeof(float));
    if (!saved_p || !saved_mom) {
        free(saved_p), free(saved_mom);
        return sstc_fail(SSTC_ENOMEM, "batch-norm re-estimation: out of memory");
    }
    for (int i = 0; i < m->nlayers; i++) {
        saved_p[i] = m->layers[i].p;
        saved_mom[i] = m->layers[i].momentum;
        if (m->layers[i].kind == SSTC_LAYER_DROPOUT) m->layers[i].p = 0;
    }
    sstc_rng_seed(&s->batch_rng, seed);
    sstc_batcher_start_epoch(&s->batcher);
    sstc_model_train(m, 1);
    int rc = 0;
    for (int k = 0; k < batches && !rc; k++) {
        if (s->stop && *s->stop) {
            rc = sstc_fail(SSTC_EINTR, "interrupted during the batch-norm re-estimation");
            break;
        }
        int n = sstc_batcher_next(&s->batcher, s->x, s->y);
        if (n <= 1) { /* a batch of one has no variance: wrap around */
            sstc_batcher_start_epoch(&s->batcher);
            n = sstc_batcher_next(&s->batcher, s->x, s->y);
        }
        /* momentum 1/(k+1): the running value becomes the mean of the k+1 batches */
        for (int i = 0; i < m->nlayers; i++)
            if (m->layers[i].kind == SSTC_LAYER_BATCHNORM) m->layers[i].momentum = 1.0f / (float)(k + 1);
        sstc_ctx_reset(s->ctx);
        if (s->hooks.before_forward && s->hooks.before_forward(s->hooks.user, s)) {
            rc = sstc_errcode();
            break;
        }
        sstc_tensor *xt = sstc_tensor_wrap(s->ctx, s->x, 4, (int[]){n, s->in_c, s->in_h, s->in_w});
        if (!sstc_model_forward(m, s->ctx, xt)) rc = sstc_errcode();
    }
    sstc_ctx_reset(s->ctx);
    for (int i = 0; i < m->nlayers; i++) {
        m->layers[i].p = saved_p[i];
        m->layers[i].momentum = saved_mom[i];
    }
    free(saved_p), free(saved_mom);
    sstc_model_train(m, 0);
    return rc;
}

/* ---- accessors ----------------------------------------------------------- */

const sstc_config *sstc_session_config(const sstc_session *s) { return &s->cfg; }
sstc_config *sstc_session_config_mut(sstc_session *s) { return &s->cfg; }
sstc_model *sstc_session_model(sstc_session *s) { return s->model; }
sstc_optimizer *sstc_session_optimizer(sstc_session *s) { return s->opt; }
sstc_epoch_state *sstc_session_state(sstc_session *s) { return &s->state; }
const sstc_dataset *sstc_session_train_set(const sstc_session *s) { return s->data_loaded ? &s->train : NULL; }
const sstc_dataset *sstc_session_test_set(const sstc_session *s) { return s->data_loaded ? &s->test : NULL; }
int sstc_session_num_train(const sstc_session *s) { return s->ntrain; }
int sstc_session_num_val(const sstc_session *s) { return s->nval; }
const sstc_normalizer *sstc_session_normalizer(const sstc_session *s) { return &s->norm; }
void sstc_session_shape(const sstc_session *s, int *c, int *h, int *w, int *classes) {
    if (c) *c = s->in_c;
    if (h) *h = s->in_h;
    if (w) *w = s->in_w;
    if (classes) *classes = s->classes;
}
int sstc_session_batches_per_epoch(const sstc_session *s) {
    return s->batcher_ready ? sstc_batcher_num_batches(&s->batcher) : 0;
}
void sstc_session_set_hooks(sstc_session *s, const sstc_train_hooks *hooks) {
    if (hooks) s->hooks = *hooks;
    else memset(&s->hooks, 0, sizeof s->hooks);
}
const sstc_train_hooks *sstc_session_hooks(const sstc_session *s) { return &s->hooks; }
void sstc_session_set_stop(sstc_session *s, volatile sig_atomic_t *stop) { s->stop = stop; }
volatile sig_atomic_t *sstc_session_stop_flag(const sstc_session *s) { return s->stop; }
void sstc_session_set_quiet(sstc_session *s, int quiet) { s->quiet = quiet; }
int sstc_session_quiet(const sstc_session *s) { return s->quiet; }
void sstc_session_set_log(sstc_session *s, FILE *log) { s->log = log; }
void sstc_session_set_lr_offset(sstc_session *s, int offset) { s->lr_epoch_offset = offset; }
