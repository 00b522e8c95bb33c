/* Training sessions on a tiny generated image-folder dataset: determinism,
 * interrupt + resume equivalence, checkpoint integrity, NaN handling, npz. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>
#include <zlib.h>

#include "sstc/train.h"

static int sess_classes(const sstc_session *s) {
    int k;
    sstc_session_shape(s, NULL, NULL, NULL, &k);
    return k;
}

#include "../tiny_dataset.h"

static char dir[256];
static void make_dataset(void) { tiny_dataset_make(dir, sizeof dir, 60, 20); }
static void cleanup(void) { tiny_dataset_remove(dir); }

TestSuite(train, .init = make_dataset, .fini = cleanup);

static char cfg_text[2048];
static const char *config(void) {
    snprintf(cfg_text, sizeof cfg_text,
             "[experiment]\nseed = 3\nthreads = 1\n"
             "[data]\ndataset = %s\naugment_crop = 1\naugment_flip = true\naugment_cutout = 2\n"
             "[train]\nepochs = 3\nbatch_size = 16\nlr = 0.01\nschedule = cosine\n"
             "[fc]\noutputs = 16\n[batchnorm]\n[relu]\n[dropout]\np = 0.3\n[fc]\noutputs = 2\n",
             dir);
    return cfg_text;
}

/* Trains to the end; if stop_at >= 0, stops at that global batch, saves a
 * checkpoint, and resumes in a fresh session from it. Returns final fc1 weights. */
static volatile sig_atomic_t stop_flag;
static int batches, stop_at;
static int count_batches(void *u, sstc_session *s) {
    if (++batches == stop_at) stop_flag = 1;
    return 0;
}

static float *run(int stop, double *final_loss) {
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config(), "tiny.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
    stop_flag = 0;
    batches = 0;
    stop_at = stop;
    sstc_session_set_stop(s, &stop_flag);
    sstc_session_set_quiet(s, 1);
    sstc_session_set_hooks(s, &(sstc_train_hooks){.after_step = count_batches});
    char ck[300];
    snprintf(ck, sizeof ck, "%s/ck.sstc", dir);
    double tl = 0, te = 0;
    while (sstc_session_state(s)->epoch < sstc_session_config_mut(s)->epochs) {
        int rc = sstc_session_train_epoch(s, &sstc_session_config(s)->lr, sstc_session_config_mut(s)->epochs, "t", &tl, &te);
        if (rc == SSTC_EINTR) {
            cr_assert_eq(sstc_checkpoint_save(s, ck, "xyz", 3), 0, "%s", sstc_errmsg());
            sstc_session_close(s);
            cr_assert_eq(sstc_session_open_text(&s, config(), "tiny.ini", NULL, 0, 1), 0);
            void *extra = NULL;
            size_t elen = 0;
            cr_assert_eq(sstc_checkpoint_restore(s, ck, &extra, &elen), 0, "%s", sstc_errmsg());
            cr_assert_eq(elen, 3);
            cr_assert_eq(memcmp(extra, "xyz", 3), 0);
            free(extra);
            stop_flag = 0;
            sstc_session_set_stop(s, &stop_flag);
            sstc_session_set_quiet(s, 1);
            sstc_session_set_hooks(s, &(sstc_train_hooks){.after_step = count_batches});
            continue;
        }
        cr_assert_eq(rc, 0, "%s", sstc_errmsg());
        sstc_session_state(s)->epoch++;
        sstc_session_state(s)->batch = 0;
    }
    sstc_eval_result r;
    cr_assert_eq(sstc_session_evaluate(s, sstc_session_test_set(s), NULL, sstc_session_test_set(s)->n, &r), 0);
    cr_assert_lt(r.error, 0.2, "the tiny problem is learnable (error %g)", r.error);
    *final_loss = tl;
    sstc_tensor *w = sstc_session_model(s)->layers[0].weight;
    float *copy = malloc(w->size * sizeof(float));
    memcpy(copy, w->data, w->size * sizeof(float));
    sstc_session_close(s);
    return copy;
}

Test(train, interrupted_and_resumed_run_equals_uninterrupted_run) {
    double l1, l2, l3;
    float *a = run(-1, &l1);
    float *b = run(-1, &l2);
    cr_assert_eq(memcmp(a, b, 16 * 64 * sizeof(float)), 0, "same seed must give identical weights");
    cr_assert_eq(l1, l2);
    float *c = run(11, &l3); /* 8 batches per epoch: stops mid-epoch 2 */
    cr_assert_eq(memcmp(a, c, 16 * 64 * sizeof(float)), 0, "resumed run differs from the uninterrupted one");
    cr_assert_eq(l1, l3, "final epoch's training loss differs: %.9g vs %.9g", l1, l3);
    free(a);
    free(b);
    free(c);
}

static int poison(void *u, sstc_session *s) {
    sstc_session_model(s)->layers[0].weight->data[0] = NAN;
    return 0;
}

Test(train, nan_loss_stops_with_a_clear_error) {
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config(), "tiny.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    sstc_session_set_hooks(s, &(sstc_train_hooks){.before_forward = poison});
    double tl, te;
    cr_assert_eq(sstc_session_train_epoch(s, &sstc_session_config(s)->lr, 1, "t", &tl, &te), SSTC_ENUMERIC);
    cr_assert_not_null(strstr(sstc_errmsg(), "NaN"), "%s", sstc_errmsg());
    sstc_session_close(s);
}

static size_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) ? 0 : (size_t)st.st_size;
}

Test(train, corrupt_truncated_and_foreign_checkpoints_are_rejected) {
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config(), "tiny.ini", NULL, 0, 1), 0);
    char ck[300], bad[300];
    snprintf(ck, sizeof ck, "%s/good.sstc", dir);
    snprintf(bad, sizeof bad, "%s/bad.sstc", dir);
    cr_assert_eq(sstc_checkpoint_save(s, ck, NULL, 0), 0);
    size_t n = file_size(ck);
    unsigned char *buf = malloc(n);
    FILE *f = fopen(ck, "rb");
    cr_assert_eq(fread(buf, 1, n, f), n);
    fclose(f);
    /* a flipped byte in the middle */
    buf[n / 2] ^= 0x40;
    sstc_write_atomic(bad, buf, n);
    cr_assert_neq(sstc_checkpoint_restore(s, bad, NULL, NULL), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "checksum"), "%s", sstc_errmsg());
    buf[n / 2] ^= 0x40;
    /* truncated */
    sstc_write_atomic(bad, buf, n - 100);
    cr_assert_neq(sstc_checkpoint_restore(s, bad, NULL, NULL), 0);
    /* wrong magic */
    buf[0] = 'X';
    sstc_write_atomic(bad, buf, n);
    cr_assert_neq(sstc_checkpoint_restore(s, bad, NULL, NULL), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "magic"), "%s", sstc_errmsg());
    buf[0] = 'S';
    /* a hostile tensor-name length (CRC recomputed) must not read past the file */
    {
        unsigned char *h = malloc(n);
        memcpy(h, buf, n);
        /* the first tensor name length follows the header strings; find "fc1.weight" */
        size_t at = 0;
        for (size_t i = 2; i + 10 < n; i++)
            if (!memcmp(h + i, "fc1.weight", 10)) {
                at = i - 2;
                break;
            }
        cr_assert_gt(at, 0);
        h[at] = 0xff;
        h[at + 1] = 0xff;
        uint32_t crc = (uint32_t)crc32(0L, h, (uInt)(n - 4));
        memcpy(h + n - 4, &crc, 4);
        sstc_write_atomic(bad, h, n);
        cr_assert_neq(sstc_checkpoint_restore(s, bad, NULL, NULL), 0);
        cr_assert_not_null(strstr(sstc_errmsg(), "past the end"), "%s", sstc_errmsg());
        free(h);
    }
    free(buf);
    /* checksum-valid files with impossible values: a position past the end of
     * the epoch, an epoch beyond any run, a NaN weight */
    {
        sstc_epoch_state keep = *sstc_session_state(s);
        sstc_session_state(s)->epoch = 7;
        sstc_session_state(s)->batch = 3;
        cr_assert_eq(sstc_checkpoint_save(s, ck, NULL, 0), 0);
        *sstc_session_state(s) = keep;
        size_t m = file_size(ck);
        unsigned char *h = malloc(m);
        f = fopen(ck, "rb");
        cr_assert_eq(fread(h, 1, m, f), m);
        fclose(f);
        size_t pos = 0, wat = 0;
        const uint32_t pair[2] = {7, 3};
        for (size_t i = 0; i + 8 < m && !pos; i++)
            if (!memcmp(h + i, pair, 8)) pos = i;
        for (size_t i = 2; i + 10 < m && !wat; i++)
            if (!memcmp(h + i, "fc1.weight", 10)) wat = i + 10 + 4 + 16;
        cr_assert(pos > 0 && wat > 0);
        const uint32_t cases[3][2] = {{7, 1000}, {0x80000000u, 0}, {7, 0xffffffffu}};
        for (int k = 0; k < 4; k++) {
            unsigned char *c = malloc(m);
            memcpy(c, h, m);
            if (k < 3) memcpy(c + pos, cases[k], 8);
            else {
                float nan = NAN;
                memcpy(c + wat + 4 * 5, &nan, 4);
            }
            uint32_t crc = (uint32_t)crc32(0L, c, (uInt)(m - 4));
            memcpy(c + m - 4, &crc, 4);
            sstc_write_atomic(bad, c, m);
            cr_assert_neq(sstc_checkpoint_restore(s, bad, NULL, NULL), 0, "case %d accepted", k);
            cr_assert_not_null(strstr(sstc_errmsg(), k < 3 ? "impossible position" : "finite values"), "case %d: %s", k,
                               sstc_errmsg());
            free(c);
        }
        free(h);
        /* a refused restore may have overwritten part of the network: start afresh */
        sstc_session_close(s);
        cr_assert_eq(sstc_session_open_text(&s, config(), "tiny.ini", NULL, 0, 1), 0);
        cr_assert_eq(sstc_checkpoint_save(s, ck, NULL, 0), 0);
    }
    /* opening garbage fails cleanly and leaves a session that is safe to close */
    sstc_session *g = NULL;
    sstc_write_atomic(bad, "not a checkpoint at all", 23);
    cr_assert_neq(sstc_checkpoint_open(&g, bad, 0, NULL, NULL), 0);
    cr_assert_null(g, "a failed open leaves no session");
    sstc_session_close(g);
    /* a different network */
    sstc_session *o = NULL;
    const char *ov[] = {"fc1.outputs=12"};
    cr_assert_eq(sstc_session_open_text(&o, config(), "tiny.ini", ov, 1, 1), 0);
    cr_assert_neq(sstc_checkpoint_restore(o, ck, NULL, NULL), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "fc1.weight"), "%s", sstc_errmsg());
    sstc_session_close(o);
    /* a checkpoint opens by itself and evaluates identically */
    sstc_eval_result r1, r2;
    cr_assert_eq(sstc_session_evaluate(s, sstc_session_test_set(s), NULL, sstc_session_test_set(s)->n, &r1), 0);
    cr_assert_eq(sstc_checkpoint_open(&o, ck, 1, NULL, NULL), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_session_evaluate(o, sstc_session_test_set(o), NULL, sstc_session_test_set(o)->n, &r2), 0);
    cr_assert_eq(r1.loss, r2.loss);
    sstc_session_close(o);
    sstc_session_close(s);
}

Test(train, npz_export_holds_every_tensor_as_npy) {
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config(), "tiny.ini", NULL, 0, 1), 0);
    char p[300];
    snprintf(p, sizeof p, "%s/w.npz", dir);
    cr_assert_eq(sstc_export_npz(sstc_session_model(s), p), 0, "%s", sstc_errmsg());
    int err;
    zip_t *z = zip_open(p, ZIP_RDONLY, &err);
    cr_assert_not_null(z);
    cr_assert_eq(zip_get_num_entries(z, 0), 8); /* fc1 weight+bias, bn1 x4, fc2 weight+bias */
    zip_stat_t st;
    cr_assert_eq(zip_stat(z, "fc1.weight.npy", 0, &st), 0);
    zip_file_t *zf = zip_fopen(z, "fc1.weight.npy", 0);
    char *buf = malloc(st.size);
    cr_assert_eq(zip_fread(zf, buf, st.size), (zip_int64_t)st.size);
    zip_fclose(zf);
    cr_assert_eq(memcmp(buf, "\x93NUMPY\x01\x00", 8), 0);
    size_t hlen = (unsigned char)buf[8] | ((unsigned char)buf[9] << 8);
    cr_assert_eq((10 + hlen) % 64, 0);
    cr_assert_not_null(strstr(buf + 10, "'shape': (16, 64)"));
    cr_assert_eq(st.size, 10 + hlen + 16 * 64 * 4);
    cr_assert_eq(memcmp(buf + 10 + hlen, sstc_session_model(s)->layers[0].weight->data, 16 * 64 * 4), 0);
    free(buf);
    zip_close(z);
    /* a FIFO (or a device) in the way is refused and left as it was */
    char fifo[300];
    snprintf(fifo, sizeof fifo, "%s/fifo.npz", dir);
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    cr_assert_neq(sstc_export_npz(sstc_session_model(s), fifo), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "not a regular file"), "%s", sstc_errmsg());
    struct stat fst;
    cr_assert_eq(lstat(fifo, &fst), 0);
    cr_assert(S_ISFIFO(fst.st_mode), "the FIFO was replaced");
    sstc_session_close(s);
}

/* test_flip: the class probabilities of each image and its mirror image are
 * averaged; checked against logits computed separately on a mirrored copy. */
Test(train, test_flip_averages_each_image_with_its_mirror) {
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config(), "tiny.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    double tl, te;
    cr_assert_eq(sstc_session_train_epoch(s, &sstc_session_config(s)->lr, sstc_session_config_mut(s)->epochs, "t", &tl, &te), 0, "%s", sstc_errmsg());
    const sstc_dataset *ds = sstc_session_test_set(s);
    int n = ds->n, C = sess_classes(s);
    size_t per = (size_t)ds->c * ds->h * ds->w;
    sstc_dataset m = *ds;
    m.pixels = malloc((size_t)n * per);
    cr_assert_not_null(m.pixels);
    for (size_t r = 0; r < (size_t)n * ds->c * ds->h; r++)
        for (int x = 0; x < ds->w; x++) m.pixels[r * ds->w + x] = ds->pixels[r * ds->w + (ds->w - 1 - x)];
    float *z1 = malloc((size_t)n * C * sizeof(float)), *z2 = malloc((size_t)n * C * sizeof(float));
    cr_assert_eq(sstc_session_logits(s, ds, n, z1), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_session_logits(s, &m, n, z2), 0, "%s", sstc_errmsg());
    double loss = 0;
    long err = 0, differ = 0;
    for (int i = 0; i < n; i++) {
        double p[16], s1 = 0, s2 = 0;
        for (int c = 0; c < C; c++) {
            s1 += exp(z1[i * C + c]);
            s2 += exp(z2[i * C + c]);
        }
        int best = 0;
        for (int c = 0; c < C; c++) {
            p[c] = 0.5 * (exp(z1[i * C + c]) / s1 + exp(z2[i * C + c]) / s2);
            if (p[c] > p[best]) best = c;
            differ += fabsf(z1[i * C + c] - z2[i * C + c]) > 1e-3f;
        }
        loss -= log(p[ds->labels[i]]);
        err += best != ds->labels[i];
    }
    cr_assert_gt(differ, 0, "mirroring changes the logits of this network");
    sstc_eval_result plain, flip;
    cr_assert_eq(sstc_session_evaluate(s, ds, NULL, n, &plain), 0);
    sstc_session_config_mut(s)->test_flip = 1;
    sstc_session_config_mut(s)->eval_batch_size = 7; /* batches of uneven size */
    cr_assert_eq(sstc_session_evaluate(s, ds, NULL, n, &flip), 0, "%s", sstc_errmsg());
    cr_assert_float_eq(flip.loss, loss / n, 1e-4, "flip loss %g, expected %g", flip.loss, loss / n);
    cr_assert_float_eq(flip.error, (double)err / n, 1e-12);
    cr_assert(fabs(flip.loss - plain.loss) > 1e-6, "flip averaging changes the loss");
    free(z1);
    free(z2);
    free(m.pixels);
    sstc_session_close(s);
}

Test(train, npz_export_import_export_is_byte_identical_and_shapes_are_checked) {
    sstc_session *s = NULL, *t = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config(), "tiny.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    double tl, te;
    cr_assert_eq(sstc_session_train_epoch(s, &sstc_session_config(s)->lr, 1, "t", &tl, &te), 0, "%s", sstc_errmsg());
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/a.npz", dir);
    snprintf(b, sizeof b, "%s/b.npz", dir);
    cr_assert_eq(sstc_session_export_npz(s, a), 0, "%s", sstc_errmsg());
    /* a fresh network of the same config takes every tensor back */
    cr_assert_eq(sstc_session_open_text(&t, config(), "tiny.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_session_import_npz(t, a), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_session_export_npz(t, b), 0, "%s", sstc_errmsg());
    size_t na = file_size(a), nb = file_size(b);
    cr_assert_eq(na, nb);
    unsigned char *x = malloc(na), *y = malloc(nb);
    FILE *f = fopen(a, "rb");
    cr_assert_eq(fread(x, 1, na, f), na);
    fclose(f);
    f = fopen(b, "rb");
    cr_assert_eq(fread(y, 1, nb, f), nb);
    fclose(f);
    cr_assert_eq(memcmp(x, y, na), 0, "export -> import -> export changed bytes");
    free(x), free(y);
    sstc_eval_result r1, r2;
    cr_assert_eq(sstc_session_evaluate_test(s, &r1), 0);
    cr_assert_eq(sstc_session_evaluate_test(t, &r2), 0);
    cr_assert_eq(r1.loss, r2.loss, "the imported network computes the same");
    sstc_session_close(t);
    /* another network: the error names the array and both shapes */
    const char *ov[] = {"fc1.outputs=12"};
    cr_assert_eq(sstc_session_open_text(&t, config(), "tiny.ini", ov, 1, 1), 0, "%s", sstc_errmsg());
    cr_assert_neq(sstc_session_import_npz(t, a), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "'fc1.weight' has shape (16,64)"), "%s", sstc_errmsg());
    cr_assert_not_null(strstr(sstc_errmsg(), "(12,64)"), "%s", sstc_errmsg());
    sstc_session_close(t);
    /* an archive with an array the network does not have */
    const char *ov2[] = {"fc1.bias=false"};
    cr_assert_eq(sstc_session_open_text(&t, config(), "tiny.ini", ov2, 1, 1), 0, "%s", sstc_errmsg());
    cr_assert_neq(sstc_session_import_npz(t, a), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "'fc1.bias' is no tensor"), "%s", sstc_errmsg());
    sstc_session_close(t);
    sstc_session_close(s);
}
