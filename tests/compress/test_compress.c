/* The compression pipeline on a tiny dataset: normalization keeps the
 * function, pruning and quantization respect the (N,K) constraint, resume
 * across phases equals an uninterrupted run, the .sst export computes the
 * same logits, and bad plans are rejected before training. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../tiny_dataset.h"
#include "sstc/compress.h"
#include "sstc/sst.h"

static char dir[256];
static void setup(void) { tiny_dataset_make(dir, sizeof dir, 64, 32); }
static void teardown(void) { tiny_dataset_remove(dir); }
TestSuite(compress, .init = setup, .fini = teardown);

static char text[2048];
static const char *config(const char *compress) {
    snprintf(text, sizeof text,
             "[experiment]\nseed = 2\nthreads = 1\n[data]\ndataset = %s\n"
             "[train]\nepochs = 2\nbatch_size = 16\nlr = 0.01\n"
             "[fc]\noutputs = 24\nbias = false\n[batchnorm]\n[relu]\n[fc]\noutputs = 16\n[relu]\n[fc]\noutputs = 2\n"
             "[compress]\n%s",
             dir, compress);
    return text;
}

static void open_trained(sstc_session **sp, const char *compress, const char *const *ovr, int nov) {
    cr_assert_eq(sstc_session_open_text(sp, config(compress), "c.ini", ovr, nov, 1), 0, "%s", sstc_errmsg());
    sstc_session *s = *sp;
    sstc_session_set_quiet(s, 1);
    double tl, te;
    for (int e = 0; e < 2; e++) {
        cr_assert_eq(sstc_session_train_epoch(s, &sstc_session_config(s)->lr, 2, "f", &tl, &te), 0, "%s", sstc_errmsg());
        sstc_session_state(s)->epoch++;
        sstc_session_state(s)->batch = 0;
    }
    *sstc_session_state(s) = (sstc_epoch_state){0};
}

Test(compress, row_normalization_keeps_the_networks_outputs) {
    sstc_session *s = NULL;
    sstc_compressor c;
    open_trained(&s, "N = 8\nK = 2\nnormalize = row\n", NULL, 0);
    cr_assert_eq(sstc_compress_init(&c, s), 0, "%s", sstc_errmsg());
    /* a row with tiny weights: its batch-norm variance is comparable to eps,
     * where an inexact fold would show */
    {
        sstc_layer *l0 = &sstc_session_model(s)->layers[0], *bn = &sstc_session_model(s)->layers[1];
        for (int j = 0; j < l0->in_features; j++) l0->weight->data[j] *= 1e-3f;
        bn->running_mean->data[0] *= 1e-3f;
        bn->running_var->data[0] *= 1e-6f;
    }
    double diff;
    cr_assert_eq(sstc_compress_normalize(&c, 32, &diff), 0, "%s", sstc_errmsg());
    cr_assert_lt(diff, 1e-4, "logits changed by %g", diff);
    /* rows now share one RMS */
    sstc_layer *l = &sstc_session_model(s)->layers[c.coded[0].layer];
    double rms[2];
    for (int r = 0; r < 2; r++) {
        double ss = 0;
        for (int j = 0; j < l->in_features; j++) ss += pow(l->weight->data[(size_t)r * l->in_features + j], 2);
        rms[r] = sqrt(ss / l->in_features);
    }
    cr_assert_gt(rms[0], 0);
    cr_assert_float_eq(rms[0], rms[1], 1e-5 * rms[1]);
    /* the last layer has no batch norm after it: it got an output scale */
    cr_assert_not_null(sstc_session_model(s)->layers[sstc_session_model(s)->nlayers - 1].out_scale);
    cr_assert_null(sstc_session_model(s)->layers[0].out_scale);
    sstc_compress_free(&c);
    sstc_session_close(s);
}

/* Energy of layer l's weights in each group of N consecutive columns; returns max/min. */
static double group_energy_spread(const sstc_layer *l, int N) {
    int cols = l->in_features, rows = l->out_features;
    double lo = INFINITY, hi = 0;
    for (int g = 0; g < cols; g += N) {
        double e = 0;
        for (int r = 0; r < rows; r++)
            for (int j = g; j < g + N && j < cols; j++) e += pow(l->weight->data[(size_t)r * cols + j], 2);
        if (e < lo) lo = e;
        if (e > hi) hi = e;
    }
    return hi / lo;
}

Test(compress, interleaving_keeps_the_outputs_and_balances_the_groups) {
    const char *modes[] = {"interleave", "row+interleave"};
    for (int mode = 0; mode < 2; mode++) {
        sstc_session *s = NULL;
        sstc_compressor c;
        char spec[128];
        snprintf(spec, sizeof spec, "N = 8\nK = 2\nnormalize = %s\n", modes[mode]);
        open_trained(&s, spec, NULL, 0);
        cr_assert_eq(sstc_compress_init(&c, s), 0, "%s", sstc_errmsg());
        sstc_layer *fc2 = &sstc_session_model(s)->layers[c.coded[1].layer];
        /* make the fan-in of fc2 clearly uneven: channels 0-7 (one group) strong */
        for (int r = 0; r < fc2->out_features; r++)
            for (int j = 0; j < 8; j++) fc2->weight->data[(size_t)r * fc2->in_features + j] *= 8.0f;
        double before = group_energy_spread(fc2, 8);
        double diff;
        cr_assert_eq(sstc_compress_normalize(&c, 32, &diff), 0, "%s", sstc_errmsg());
        cr_assert_lt(diff, 1e-4, "%s: logits changed by %g", modes[mode], diff);
        /* fc2 (fan-in 24 from fc1) and fc3 (16 from fc2) through their predecessors' outputs,
         * fc1 (fan-in: the 8x8 image) through an input permutation */
        cr_assert_eq(c.interleaved, 3, "%s: %d layers reordered", modes[mode], c.interleaved);
        cr_assert_not_null(sstc_session_model(s)->in_perm);
        if (mode == 0) {
            double after = group_energy_spread(fc2, 8);
            cr_assert_lt(after * 4, before, "group energy max/min %g before, %g after", before, after);
        }
        sstc_compress_free(&c);
        sstc_session_close(s);
    }
}

static int max_nonzeros_per_group(const float *w, int rows, int cols, int N) {
    int worst = 0;
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < cols; g += N) {
            int nz = 0;
            for (int j = g; j < g + N && j < cols; j++) nz += w[(size_t)r * cols + j] != 0.0f;
            if (nz > worst) worst = nz;
        }
    return worst;
}

Test(compress, pruning_and_quantization_respect_the_code) {
    sstc_session *s = NULL;
    sstc_compressor c;
    open_trained(&s, "N = 8\nK = 2\nnormalize = row\nschedule = 4,2\nstage_epochs = 1\nretrain_epochs = 2\n", NULL, 0);
    cr_assert_eq(sstc_compress_init(&c, s), 0, "%s", sstc_errmsg());
    cr_assert_eq(c.nphases, 3);
    cr_assert_eq(c.total_epochs, 4);
    double diff, tl, te;
    float lr;
    cr_assert_eq(sstc_compress_normalize(&c, 0, &diff), 0);
    int expect_k[] = {4, 2};
    for (int e = 0; e < c.total_epochs; e++) {
        cr_assert_eq(sstc_compress_train_epoch(&c, &tl, &te, &lr), 0, "%s", sstc_errmsg());
        sstc_session_state(s)->epoch++;
        sstc_session_state(s)->batch = 0;
        for (int k = 0; k < c.ncoded; k++) {
            const sstc_coded_layer *cl = &c.coded[k];
            sstc_layer *l = &sstc_session_model(s)->layers[cl->layer];
            if (e < 2) {
                int nz = max_nonzeros_per_group(l->weight->data, cl->rows, cl->cols, 8);
                cr_assert_leq(nz, expect_k[e], "epoch %d layer %s: %d non-zeros in a group", e, l->name, nz);
            } else {
                cr_assert_eq(l->weight_override, cl->q);
                cr_assert_leq(max_nonzeros_per_group(cl->q, cl->rows, cl->cols, 8), 2);
                for (int i = 0; i < cl->rows * cl->cols; i++)
                    cr_assert(cl->q[i] == 0.0f || fabsf(cl->q[i]) == cl->delta, "value %g with delta %g", cl->q[i], cl->delta);
            }
        }
    }
    /* the finish keeps the step size the network was retrained with: the
     * final codes are those of the final weights at that delta */
    float trained[16];
    cr_assert_leq(c.ncoded, 16);
    for (int k = 0; k < c.ncoded; k++) {
        trained[k] = c.coded[k].delta;
        /* weights that moved since delta was fitted (a refit would follow them) */
        sstc_tensor *w = sstc_session_model(s)->layers[c.coded[k].layer].weight;
        for (size_t i = 0; i < w->size; i++) w->data[i] *= 1.05f;
    }
    cr_assert_eq(sstc_compress_finish(&c), 0, "%s", sstc_errmsg());
    for (int k = 0; k < c.ncoded; k++) {
        const sstc_coded_layer *cl = &c.coded[k];
        cr_assert_eq(cl->delta, trained[k], "layer %d: delta %g after the finish, %g trained", k, cl->delta, trained[k]);
        for (int i = 0; i < cl->rows * cl->cols; i++)
            cr_assert(cl->q[i] == 0.0f || fabsf(cl->q[i]) == trained[k], "value %g with delta %g", cl->q[i], trained[k]);
    }
    sstc_eval_result r;
    cr_assert_eq(sstc_session_evaluate(s, sstc_session_test_set(s), NULL, sstc_session_test_set(s)->n, &r), 0);
    cr_assert_lt(r.error, 0.25, "coded network error %g", r.error);
    sstc_compress_free(&c);
    sstc_session_close(s);
}

/* Runs the whole pipeline; with stop_at >= 0 interrupts at that global batch,
 * checkpoints, and resumes in a fresh session. Returns the final test loss. */
static volatile sig_atomic_t stop;
static int nb, stop_at;
static int count_batches(void *u, sstc_session *s) {
    if (++nb == stop_at) stop = 1;
    return 0;
}

static const char *resume_spec_layer = "N = 4\nK = 1\nnormalize = row+interleave\nschedule = 2,1\nstage_epochs = 1\nretrain_epochs = 2\n"
                                        "refit_every = 3\n";
static const char *resume_spec_row = "N = 4\nK = 1\nnormalize = row+interleave\nschedule = 2,1\nstage_epochs = 1\nretrain_epochs = 2\n"
                                      "refit_every = 3\ndelta = row\n";
static const char *resume_spec;

static double pipeline(int stop_batch, const char *ck, float *w_out) {
    sstc_session *s = NULL;
    sstc_compressor c;
    open_trained(&s, resume_spec, NULL, 0);
    cr_assert_eq(sstc_compress_init(&c, s), 0);
    double diff, tl, te;
    float lr;
    cr_assert_eq(sstc_compress_normalize(&c, 0, &diff), 0);
    stop = 0;
    nb = 0;
    stop_at = stop_batch;
    sstc_session_set_stop(s, &stop);
    c.chain.after_step = count_batches;
    while (sstc_session_state(s)->epoch < c.total_epochs) {
        int rc = sstc_compress_train_epoch(&c, &tl, &te, &lr);
        if (rc == SSTC_EINTR) {
            void *blob;
            size_t len;
            cr_assert_eq(sstc_compress_state_save(&c, &blob, &len), 0);
            cr_assert_eq(sstc_checkpoint_save(s, ck, blob, len), 0, "%s", sstc_errmsg());
            free(blob);
            sstc_compress_free(&c);
            sstc_session_close(s);
            /* as a new process would: config, structure, checkpoint, state */
            cr_assert_eq(sstc_session_open_text(&s, config(resume_spec), "c.ini", NULL, 0, 1), 0);
            sstc_session_set_quiet(s, 1);
            cr_assert_eq(sstc_compress_init(&c, s), 0);
            cr_assert_eq(sstc_compress_prepare_structure(&c), 0);
            void *extra = NULL;
            size_t elen = 0;
            cr_assert_eq(sstc_checkpoint_restore(s, ck, &extra, &elen), 0, "%s", sstc_errmsg());
            cr_assert_eq(sstc_compress_state_load(&c, extra, elen), 0, "%s", sstc_errmsg());
            free(extra);
            stop = 0;
            sstc_session_set_stop(s, &stop);
            c.chain.after_step = count_batches;
            continue;
        }
        cr_assert_eq(rc, 0, "%s", sstc_errmsg());
        sstc_session_state(s)->epoch++;
        sstc_session_state(s)->batch = 0;
    }
    cr_assert_eq(sstc_compress_finish(&c), 0);
    sstc_eval_result r;
    cr_assert_eq(sstc_session_evaluate(s, sstc_session_test_set(s), NULL, sstc_session_test_set(s)->n, &r), 0);
    memcpy(w_out, c.coded[0].q, 24 * 64 * sizeof(float));
    sstc_compress_free(&c);
    sstc_session_close(s);
    return r.loss;
}

static void resume_equals_uninterrupted(void) {
    char ck[300];
    snprintf(ck, sizeof ck, "%s/c.sstc", dir);
    static float a[24 * 64], b[24 * 64], d[24 * 64];
    double la = pipeline(-1, ck, a);
    /* 4 batches per epoch: batch 6 is inside the second pruning stage, 10 inside quantization */
    double lb = pipeline(6, ck, b);
    double ld = pipeline(10, ck, d);
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "resume inside a pruning stage changed the result");
    cr_assert_eq(memcmp(a, d, sizeof a), 0, "resume inside quantized retraining changed the result");
    cr_assert_eq(la, lb);
    cr_assert_eq(la, ld);
}

Test(compress, interrupted_and_resumed_compression_equals_uninterrupted) {
    resume_spec = resume_spec_layer;
    resume_equals_uninterrupted();
}

/* delta = row: the per-row steps travel in the checkpoint as well */
Test(compress, interrupted_and_resumed_compression_with_row_deltas_equals_uninterrupted) {
    resume_spec = resume_spec_row;
    resume_equals_uninterrupted();
}

/* A reference forward pass over an FC/ReLU-only .sst model, straight from
 * the file's definition: y = scale * (T x) + bias. */
static void sst_forward(const sstc_sst_model *m, const float *x0, float *logits) {
    float a[256], b[256];
    int n = m->in_c * m->in_h * m->in_w;
    memcpy(a, x0, (size_t)n * sizeof(float));
    for (int i = 0; i < m->n_layers; i++) {
        const sstc_sst_layer *L = &m->layers[i];
        if (L->kind == SSTC_SST_PERMUTE) {
            for (int j = 0; j < n; j++) b[j] = a[L->perm[j]];
            memcpy(a, b, (size_t)n * sizeof(float));
            continue;
        }
        if (L->kind == SSTC_SST_RELU) {
            for (int j = 0; j < n; j++) a[j] = a[j] > 0 ? a[j] : 0;
            continue;
        }
        cr_assert_eq(L->kind, SSTC_SST_FC);
        int8_t *T = malloc((size_t)L->out * L->in);
        cr_assert_eq(sstc_sst_layer_ternary(L, T), 0);
        for (int o = 0; o < L->out; o++) {
            float acc = 0;
            for (int j = 0; j < L->in; j++) acc += T[(size_t)o * L->in + j] * a[j];
            b[o] = L->scale[o] * acc + L->bias[o];
        }
        free(T);
        n = L->out;
        memcpy(a, b, (size_t)n * sizeof(float));
    }
    memcpy(logits, a, (size_t)n * sizeof(float));
}

static void sst_export_check(const char *normalize, const char *extra) {
    sstc_session *s = NULL;
    sstc_compressor c;
    char spec[192];
    snprintf(spec, sizeof spec, "N = 8\nK = 2\nnormalize = %s\nretrain_epochs = 1\n%s", normalize, extra);
    open_trained(&s, spec, NULL, 0);
    cr_assert_eq(sstc_compress_init(&c, s), 0);
    double diff, tl, te;
    float lr;
    cr_assert_eq(sstc_compress_normalize(&c, 0, &diff), 0);
    cr_assert_eq(sstc_compress_train_epoch(&c, &tl, &te, &lr), 0, "%s", sstc_errmsg());
    sstc_session_state(s)->epoch++;
    cr_assert_eq(sstc_compress_finish(&c), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/m.sst", dir);
    cr_assert_eq(sstc_compress_write_sst(&c, path), 0, "%s", sstc_errmsg());
    sstc_sst_model *m = NULL;
    cr_assert_eq(sstc_sst_read(path, &m), 0, "%s", sstc_errmsg());
    int perm = strstr(normalize, "interleave") != NULL;
    cr_assert_eq(m->n_layers, 5 + perm, "[permute], fc(+bn folded), relu, fc, relu, fc");
    cr_assert_eq(m->layers[0].kind == SSTC_SST_PERMUTE, perm);
    cr_assert_float_eq(m->in_mean[0], sstc_session_normalizer(s)->mean[0], 0);
    int row = strstr(extra, "delta = row") != NULL;
    for (int i = perm, k = 0; i < m->n_layers; i++) {
        const sstc_sst_layer *L = &m->layers[i];
        if (L->kind != SSTC_SST_FC) continue;
        const sstc_coded_layer *cl = &c.coded[k++];
        cr_assert_eq(L->per_row_delta, row, "layer %d: per-row flag %d", i, L->per_row_delta);
        cr_assert_eq(cl->row_delta != NULL, row);
        if (!row) continue;
        /* the file's steps are the ones the network was coded with, one per row,
         * and every coded value of row r is 0 or +-delta_r */
        int differ = 0;
        for (int r = 0; r < L->out; r++) {
            cr_assert_eq(L->delta[r], cl->row_delta[r], "layer %d row %d", i, r);
            differ |= L->delta[r] != L->delta[0];
            for (int j = 0; j < cl->cols; j++) {
                float q = cl->q[(size_t)r * cl->cols + j];
                cr_assert(q == 0.0f || fabsf(q) == cl->row_delta[r], "row %d: value %g with delta %g", r, q, cl->row_delta[r]);
            }
        }
        cr_assert(differ, "layer %d: every row has the same step", i);
    }
    float *logits = malloc((size_t)sstc_session_test_set(s)->n * 2 * sizeof(float));
    cr_assert_eq(sstc_session_logits(s, sstc_session_test_set(s), sstc_session_test_set(s)->n, logits), 0);
    for (int i = 0; i < sstc_session_test_set(s)->n; i++) {
        float x[64], z[2];
        for (int k = 0; k < 64; k++) x[k] = (sstc_session_test_set(s)->pixels[i * 64 + k] / 255.0f - m->in_mean[0]) / m->in_std[0];
        sst_forward(m, x, z);
        for (int k = 0; k < 2; k++)
            cr_assert(fabsf(z[k] - logits[i * 2 + k]) <= 1e-4f * (1 + fabsf(logits[i * 2 + k])),
                      "image %d logit %d: file %g, network %g", i, k, z[k], logits[i * 2 + k]);
    }
    free(logits);
    sstc_sst_free(m);
    sstc_compress_free(&c);
    sstc_session_close(s);
}

Test(compress, sst_export_reproduces_the_networks_logits) {
    sst_export_check("row", "");
    sst_export_check("row+interleave", "");
}

Test(compress, sst_export_with_one_delta_per_row_reproduces_the_networks_logits) {
    sst_export_check("row", "delta = row\n");
    sst_export_check("none", "delta = row\n");
}

Test(compress, zero_retraining_epochs_still_code_the_network) {
    sstc_session *s = NULL;
    sstc_compressor c;
    open_trained(&s, "N = 4\nK = 1\nnormalize = none\nretrain_epochs = 0\n", NULL, 0);
    cr_assert_eq(sstc_compress_init(&c, s), 0);
    cr_assert_eq(c.total_epochs, 0);
    cr_assert_eq(sstc_compress_finish(&c), 0, "%s", sstc_errmsg());
    for (int k = 0; k < c.ncoded; k++) {
        const sstc_coded_layer *cl = &c.coded[k];
        cr_assert_eq(sstc_session_model(s)->layers[cl->layer].weight_override, cl->q);
        cr_assert_leq(max_nonzeros_per_group(cl->q, cl->rows, cl->cols, 4), 1);
    }
    char path[300];
    snprintf(path, sizeof path, "%s/z.sst", dir);
    cr_assert_eq(sstc_compress_write_sst(&c, path), 0, "%s", sstc_errmsg());
    sstc_compress_free(&c);
    sstc_session_close(s);
}

Test(compress, an_interrupt_during_the_final_batch_norm_pass_is_reported) {
    sstc_session *s = NULL;
    sstc_compressor c;
    open_trained(&s, "N = 4\nK = 1\nnormalize = none\nretrain_epochs = 0\nbn_batches = 3\n", NULL, 0);
    cr_assert_eq(sstc_compress_init(&c, s), 0);
    volatile sig_atomic_t flag = 1;
    sstc_session_set_stop(s, &flag);
    cr_assert_eq(sstc_compress_finish(&c), SSTC_EINTR, "%s", sstc_errmsg());
    cr_assert_eq(c.bn_reestimated, 0);
    flag = 0;
    cr_assert_eq(sstc_compress_finish(&c), 0, "%s", sstc_errmsg());
    cr_assert_eq(c.bn_reestimated, 1);
    sstc_session_set_stop(s, NULL);
    sstc_compress_free(&c);
    sstc_session_close(s);
}

Test(compress, bad_plans_are_rejected_before_training) {
    sstc_session *s = NULL;
    sstc_compressor c;
    cr_assert_eq(sstc_session_open_text(&s, config("layers = fc1,fc9\n"), "c.ini", NULL, 0, 1), 0);
    cr_assert_neq(sstc_compress_init(&c, s), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "fc9"), "%s", sstc_errmsg());
    sstc_compress_free(&c);
    sstc_session_close(s);
    cr_assert_eq(sstc_session_open_text(&s, config("layers = bn1\n"), "c.ini", NULL, 0, 1), 0);
    cr_assert_neq(sstc_compress_init(&c, s), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "not a fc or conv"), "%s", sstc_errmsg());
    sstc_compress_free(&c);
    sstc_session_close(s);
    /* plain ternary has no groups to prune gradually: the config says so */
    cr_assert_neq(sstc_session_open_text(&s, config("method = ternary\nschedule = 1\nK = 1\n"), "c.ini", NULL, 0, 1), 0);
    cr_assert_null(s);
    cr_assert_not_null(strstr(sstc_errmsg(), "schedule"), "%s", sstc_errmsg());
    cr_assert_not_null(strstr(sstc_errmsg(), "c.ini:"), "%s", sstc_errmsg());
    /* an unknown method or normalization is refused where it is written */
    cr_assert_neq(sstc_session_open_text(&s, config("method = sts\n"), "c.ini", NULL, 0, 1), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "sst|ternary|nm"), "%s", sstc_errmsg());
    cr_assert_neq(sstc_session_open_text(&s, config("normalize = rows\n"), "c.ini", NULL, 0, 1), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "row+interleave"), "%s", sstc_errmsg());
    cr_assert_neq(sstc_session_open_text(&s, config("layers = fc1, fc1\n"), "c.ini", NULL, 0, 1), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "twice"), "%s", sstc_errmsg());
    /* a schedule that does not end at K is a config error */
    cr_assert_neq(sstc_session_open_text(&s, config("N = 8\nK = 2\nschedule = 6,4\n"), "c.ini", NULL, 0, 1), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "c.ini:"), "%s", sstc_errmsg());
    sstc_session_close(s);
}

Test(compress, float_checkpoint_of_another_network_is_rejected) {
    sstc_session *s = NULL, *o = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config("N = 8\nK = 2\n"), "c.ini", NULL, 0, 1), 0);
    char ck[300];
    snprintf(ck, sizeof ck, "%s/f.sstc", dir);
    cr_assert_eq(sstc_checkpoint_save(s, ck, NULL, 0), 0);
    const char *ov[] = {"fc2.outputs=12"};
    cr_assert_eq(sstc_session_open_text(&o, config("N = 8\nK = 2\n"), "c.ini", ov, 1, 1), 0);
    cr_assert_neq(sstc_checkpoint_restore(o, ck, NULL, NULL), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "fc2.weight"), "%s", sstc_errmsg());
    sstc_session_close(o);
    sstc_session_close(s);
}

/* A residual network: conv1-bn-relu, a 1x1 conv2-bn added back to relu1's
 * output, global average pooling, fc. */
static char res_text[2048];
static const char *residual_config(const char *compress) {
    snprintf(res_text, sizeof res_text,
             "[experiment]\nseed = 4\nthreads = 1\n[data]\ndataset = %s\n"
             "[train]\nepochs = 1\nbatch_size = 16\nlr = 0.01\n"
             "[conv]\nfilters = 16\npad = 1\nbias = false\n[batchnorm]\n[relu]\n"
             "[conv]\nfilters = 16\nsize = 1\nbias = false\n[batchnorm]\n"
             "[shortcut]\nfrom = -3\nactivation = relu\n[globalavgpool]\n[fc]\noutputs = 2\n"
             "[compress]\nN = 8\nK = 2\n%s",
             dir, compress);
    return res_text;
}

Test(compress, row_normalization_keeps_a_residual_networks_outputs) {
    sstc_session *s = NULL;
    sstc_compressor c;
    cr_assert_eq(sstc_session_open_text(&s, residual_config("normalize = row\n"), "r.ini", NULL, 0, 1), 0, "%s",
                 sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    double tl, te, diff;
    cr_assert_eq(sstc_session_train_epoch(s, &sstc_session_config(s)->lr, 1, "f", &tl, &te), 0, "%s", sstc_errmsg());
    *sstc_session_state(s) = (sstc_epoch_state){0};
    cr_assert_eq(sstc_compress_init(&c, s), 0, "%s", sstc_errmsg());
    cr_assert_eq(c.ncoded, 3, "conv1, conv2, fc1");
    cr_assert_eq(sstc_compress_normalize(&c, 32, &diff), 0, "%s", sstc_errmsg());
    cr_assert_lt(diff, 1e-4, "logits changed by %g", diff);
    sstc_compress_free(&c);
    sstc_session_close(s);
}

Test(compress, interleaving_channels_that_meet_in_a_sum_is_refused_naming_the_layers) {
    sstc_session *s = NULL;
    sstc_compressor c;
    cr_assert_eq(sstc_session_open_text(&s, residual_config("normalize = interleave\n"), "r.ini", NULL, 0, 1), 0, "%s",
                 sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    cr_assert_eq(sstc_compress_init(&c, s), 0, "%s", sstc_errmsg());
    double diff;
    cr_assert_neq(sstc_compress_normalize(&c, 0, &diff), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "coded layer 'conv2'"), "%s", sstc_errmsg());
    cr_assert_not_null(strstr(sstc_errmsg(), "shortcut layer 'shortcut1'"), "%s", sstc_errmsg());
    sstc_compress_free(&c);
    sstc_session_close(s);
}
