/* End to end: a network trained and compressed by the training engine,
 * written as .sst, run by the inference engine from that file alone gives
 * the training engine's logits (1e-4 relative) and predictions. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../tiny_dataset.h"
#include "sstc/compress.h"

static int sess_classes(const sstc_session *s) {
    int k;
    sstc_session_shape(s, NULL, NULL, NULL, &k);
    return k;
}
#include "sstc/infer.h"
#include "sstc/sst.h"

static char dir[256];
static void setup(void) { tiny_dataset_make(dir, sizeof dir, 64, 40); }
static void teardown(void) { tiny_dataset_remove(dir); }
TestSuite(infer_pipeline, .init = setup, .fini = teardown);

static const char mlp[] = "[fc]\noutputs = 24\nbias = false\n[batchnorm]\n[relu]\n[dropout]\np = 0.2\n"
                          "[fc]\noutputs = 16\n[relu]\n[fc]\noutputs = 2\n";
static const char cnn[] = "[conv]\nfilters = 6\nsize = 3\npad = 1\nbias = false\n[batchnorm]\n[relu]\n"
                          "[maxpool]\nsize = 2\n[conv]\nfilters = 8\nsize = 3\npad = 1\n[relu]\n"
                          "[avgpool]\nsize = 3\nstride = 1\npad = 1\n[flatten]\n[fc]\noutputs = 12\n[batchnorm]\n"
                          "[relu]\n[fc]\noutputs = 2\n";

static void compressed(sstc_session **sp, sstc_compressor *c, const char *net, const char *code, const char *sst) {
    char text[2048];
    snprintf(text, sizeof text,
             "[experiment]\nseed = 3\nthreads = 1\n[data]\ndataset = %s\n"
             "[train]\nepochs = 2\nbatch_size = 16\nlr = 0.01\n%s[compress]\n%s",
             dir, net, code);
    cr_assert_eq(sstc_session_open_text(sp, text, "c.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
    sstc_session *s = *sp;
    sstc_session_set_quiet(s, 1);
    double tl, te;
    for (int e = 0; e < 2; e++) {
        cr_assert_eq(sstc_session_train_epoch(s, &sstc_session_config(s)->lr, 2, "f", &tl, &te), 0, "%s", sstc_errmsg());
        sstc_session_state(s)->epoch++;
        sstc_session_state(s)->batch = 0;
    }
    *sstc_session_state(s) = (sstc_epoch_state){0};
    cr_assert_eq(sstc_compress_init(c, s), 0, "%s", sstc_errmsg());
    double diff;
    float lr;
    cr_assert_eq(sstc_compress_normalize(c, 0, &diff), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_compress_train_epoch(c, &tl, &te, &lr), 0, "%s", sstc_errmsg());
    sstc_session_state(s)->epoch++;
    cr_assert_eq(sstc_compress_finish(c), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_compress_write_sst(c, sst), 0, "%s", sstc_errmsg());
}

static void check(const char *net, const char *code, const char *what) {
    sstc_session *s = NULL;
    sstc_compressor c;
    char path[300];
    snprintf(path, sizeof path, "%s/m.sst", dir);
    compressed(&s, &c, net, code, path);
    int n = sstc_session_test_set(s)->n, K = sess_classes(s);
    float *want = malloc((size_t)n * K * sizeof(float)), *got = malloc((size_t)n * K * sizeof(float));
    cr_assert_eq(sstc_session_logits(s, sstc_session_test_set(s), n, want), 0, "%s", sstc_errmsg());
    sstc_engine *e;
    cr_assert_eq(sstc_engine_load(path, &e), SSTC_OK, "%s", sstc_errmsg());
    sstc_engine_info info;
    sstc_engine_get_info(e, &info);
    cr_assert_gt(info.coded_layers, 0, "%s: coded layers", what);
    for (int batch = 1; batch <= n; batch += n - 1) {
        for (int b0 = 0; b0 < n; b0 += batch) {
            int m = n - b0 < batch ? n - b0 : batch;
            cr_assert_eq(sstc_engine_forward_pixels(e, sstc_session_test_set(s)->pixels + (size_t)b0 * 64, m, got + (size_t)b0 * K),
                         SSTC_OK, "%s", sstc_errmsg());
        }
        int *pw = malloc(n * sizeof(int)), *pg = malloc(n * sizeof(int));
        sstc_engine_argmax(want, n, K, pw);
        sstc_engine_argmax(got, n, K, pg);
        for (int i = 0; i < n; i++) {
            float mx = 0;
            for (int k = 0; k < K; k++) mx = fmaxf(mx, fabsf(want[i * K + k]));
            for (int k = 0; k < K; k++)
                cr_assert_leq(fabsf(got[i * K + k] - want[i * K + k]), 1e-4f * fmaxf(mx, 1e-3f),
                              "%s batch %d image %d logit %d: engine %g, training engine %g", what, batch, i, k,
                              got[i * K + k], want[i * K + k]);
            if (fabsf(want[i * K] - want[i * K + 1]) > 1e-4f * mx)
                cr_assert_eq(pg[i], pw[i], "%s image %d: prediction", what, i);
        }
        free(pw), free(pg);
    }
    free(want), free(got);
    sstc_engine_free(e);
    sstc_compress_free(&c);
    sstc_session_close(s);
}

Test(infer_pipeline, engine_reproduces_a_compressed_mlp_from_the_file_alone) {
    check(mlp, "N = 8\nK = 2\nnormalize = row\nretrain_epochs = 1\n", "mlp (8,2) row");
    check(mlp, "method = ternary\nnormalize = none\nretrain_epochs = 1\n", "mlp ternary");
    check(mlp, "N = 16\nK = 4\nnormalize = none\nskip_first = true\nretrain_epochs = 1\n", "mlp (16,4) first float");
}

Test(infer_pipeline, engine_reproduces_a_compressed_cnn_from_the_file_alone) {
    check(cnn, "N = 8\nK = 2\nnormalize = row\nretrain_epochs = 1\n", "cnn (8,2) row");
    check(cnn, "N = 4\nK = 1\nnormalize = none\nlayers = conv\nretrain_epochs = 1\n", "cnn (4,1) conv only");
}
