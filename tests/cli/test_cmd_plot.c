/* sstc plot: each kind of chart from a real (tiny) run, checked by reading the
 * PNG back: the coded rows' pixels are the signs of the .sst file's codes, the
 * pruned rows keep at most K of every N; careless arguments give clean errors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../data/data_helpers.h"
#include "../tiny_dataset.h"
#include "sstc/data.h"
#include "sstc/sst.h"

static char dir[256], odir[400];

static int run(const char *cmd, char *out, size_t cap) { return th_run(cmd, out, cap); }

static void setup(void) {
    tiny_dataset_make(dir, sizeof dir, 64, 32);
    char cfg[400], cmd[1200], text[1024];
    static char out[1 << 15];
    snprintf(cfg, sizeof cfg, "%s/exp.ini", dir);
    snprintf(odir, sizeof odir, "%s/out", dir);
    int n = snprintf(text, sizeof text,
                     "[experiment]\nname = exp\nseed = 3\nthreads = 1\n[data]\ndataset = %s\n"
                     "[train]\nepochs = 2\nbatch_size = 16\nlr = 0.01\n"
                     "[fc]\noutputs = 24\nbias = false\n[batchnorm]\n[relu]\n[fc]\noutputs = 2\n"
                     "[compress]\nN = 8\nK = 2\nschedule = 4,2\nstage_epochs = 1\nretrain_epochs = 1\nbn_batches = 2\n",
                     dir);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fwrite(text, 1, (size_t)n, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "./build/sstc run '%s' --out '%s' --quiet 2>&1", cfg, odir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
}
static void teardown(void) { tiny_dataset_remove(dir); }

TestSuite(plot_cli, .init = setup, .fini = teardown);

static void read_png(const char *path, sstc_image *img) {
    cr_assert_eq(sstc_image_read(path, img), 0, "%s: %s", path, sstc_errmsg());
}

Test(plot_cli, metrics_draws_every_epoch_of_every_phase) {
    static char out[8192];
    char cmd[1200], png[500];
    snprintf(png, sizeof png, "%s/m.png", dir);
    snprintf(cmd, sizeof cmd, "./build/sstc plot metrics '%s' --out '%s' 2>&1", odir, png);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    /* float 2 epochs, prune K=4, prune K=2, quantized K=2: 5 epochs, 4 segments */
    cr_assert(th_has(out, "5 epochs in 4 phase segments"), "%s", out);
    sstc_image img;
    read_png(png, &img);
    cr_assert(img.w == 900 && img.h == 420 && img.c == 3, "%dx%dx%d", img.w, img.h, img.c);
    sstc_image_free(&img);
}

Test(plot_cli, rows_show_the_pruned_and_coded_weights_of_the_file) {
    static char out[8192];
    char cmd[1600], png[500], ck[500], sst[500];
    snprintf(png, sizeof png, "%s/r.png", dir);
    snprintf(ck, sizeof ck, "%s/float/checkpoint.sstc", odir);
    snprintf(sst, sizeof sst, "%s/model.sst", odir);
    snprintf(cmd, sizeof cmd, "./build/sstc plot rows '%s' '%s' --rows 5 --out '%s' 2>&1", ck, sst, png);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    sstc_sst_model *m = NULL;
    cr_assert_eq(sstc_sst_read(sst, &m), 0, "%s", sstc_errmsg());
    const sstc_sst_layer *L = &m->layers[0];
    cr_assert(L->kind == SSTC_SST_FC && L->coded && L->in == 64, "first record: the coded fc1 on 8x8 images");
    int8_t T[24 * 64];
    cr_assert_eq(sstc_sst_layer_ternary(L, T), 0);
    sstc_image img;
    read_png(png, &img);
    /* layout: 4x scale, cells 44 px apart from x = 110; panel rows at y = 36 + k*44 */
    for (int r = 0; r < 5; r++)
        for (int yy = 0; yy < 8; yy++) {
            int kept = 0;
            for (int xx = 0; xx < 8; xx++) {
                /* coded: exactly red, blue or white as the code's sign */
                const uint8_t *p = img.pixels + ((size_t)(36 + 2 * 44 + yy * 4 + 2) * img.w + 110 + r * 44 + xx * 4 + 2) * 3;
                int t = T[r * 64 + yy * 8 + xx];
                int want[3] = {t < 0 ? 0 : 255, t ? 0 : 255, t > 0 ? 0 : 255};
                cr_assert(p[0] == want[0] && p[1] == want[1] && p[2] == want[2],
                          "row %d pixel (%d,%d): (%d,%d,%d) for t = %d", r, yy, xx, p[0], p[1], p[2], t);
                /* pruned: at most K = 2 non-white pixels in each group of 8 (one image row) */
                const uint8_t *q = img.pixels + ((size_t)(36 + 44 + yy * 4 + 2) * img.w + 110 + r * 44 + xx * 4 + 2) * 3;
                kept += !(q[0] == 255 && q[1] == 255 && q[2] == 255);
            }
            cr_assert_leq(kept, 2, "row %d, group %d: %d weights kept", r, yy, kept);
        }
    sstc_image_free(&img);
    sstc_sst_free(m);
}

Test(plot_cli, weights_and_codes_describe_the_coded_layers) {
    static char out[8192];
    char cmd[1600], png[500], ck[500], sst[500];
    snprintf(png, sizeof png, "%s/w.png", dir);
    snprintf(ck, sizeof ck, "%s/float/checkpoint.sstc", odir);
    snprintf(sst, sizeof sst, "%s/model.sst", odir);
    snprintf(cmd, sizeof cmd, "./build/sstc plot weights '%s' '%s' --layer fc2 --out '%s' 2>&1", ck, sst, png);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(th_has(out, "fc2, 2 x 24 weights"), "%s", out);
    /* codes: 24 rows x 8 groups (fc1) + 2 rows x 3 groups (fc2) */
    snprintf(cmd, sizeof cmd, "./build/sstc plot codes '%s' --out '%s' 2>&1", sst, png);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(th_has(out, "198 groups"), "%s", out);
    snprintf(cmd, sizeof cmd, "./build/sstc plot codes '%s' --layer 2 --out '%s' 2>&1", sst, png);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(th_has(out, "6 groups"), "%s", out);
    snprintf(cmd, sizeof cmd, "./build/sstc plot codes '%s' --layer 3 --out '%s' 2>&1", sst, png);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert(th_has(out, "no coded layer number 3 (it has 2)"), "%s", out);
}

Test(plot_cli, careless_arguments_fail_cleanly) {
    static char out[8192];
    char cmd[2400], png[500], ck[500], sst[500], bad[500];
    snprintf(png, sizeof png, "%s/x.png", dir);
    snprintf(ck, sizeof ck, "%s/float/checkpoint.sstc", odir);
    snprintf(sst, sizeof sst, "%s/model.sst", odir);
    struct {
        const char *args, *expect;
        int rc;
    } cases[] = {
        {"weights '%1$s' '%2$s' --layer bn1", "is a batchnorm layer", 1},
        {"weights '%1$s' '%2$s' --layer nope", "no weight layer named 'nope'", 1},
        {"weights '%1$s' '%2$s'", "need FLOAT_CHECKPOINT MODEL.sst --layer NAME", 2},
        {"rows '%1$s' '%2$s' --layer fc2", "is not a fully connected layer on the 1x8x8 input", 1},
        {"rows '%2$s' '%1$s'", "", 1},
        {"rows '%1$s' '%2$s' --rows 0", "expected a whole number from 1 to 64", 2},
        {"codes '%1$s'", "", 1},
        {"metrics /nonexistent", "No such file", 1},
        {"metrics '%1$s'", "header", 1},
        {"frobnicate x", "unknown kind 'frobnicate'", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[1200];
        snprintf(args, sizeof args, cases[i].args, ck, sst);
        snprintf(cmd, sizeof cmd, "timeout 20 ./build/sstc plot %s --out '%s' 2>&1", args, png);
        int rc = run(cmd, out, sizeof out);
        cr_assert_eq(rc, cases[i].rc, "%s: exit %d: %s", args, rc, out);
        cr_assert(th_has(out, cases[i].expect), "%s: %s", args, out);
        struct stat st;
        cr_assert_neq(stat(png, &st), 0, "%s: a failed plot leaves no image", args);
    }
    /* a metrics file with an impossible value names its line */
    snprintf(bad, sizeof bad, "%s/bad.csv", dir);
    FILE *f = fopen(bad, "w");
    cr_assert_not_null(f);
    fputs("epoch,phase,K,lr,train_loss,train_error,test_loss,test_error\n1,float,,0.1,1,0.5,1,0.4\n2,float,,0.1,1,7,1,0.4\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "./build/sstc plot metrics '%s' --out '%s' 2>&1", bad, png);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert(th_has(out, "bad.csv:3:"), "%s", out);
    /* an existing image survives a failed plot; the output cannot be a folder */
    f = fopen(png, "w");
    cr_assert_not_null(f);
    fputs("keep", f);
    fclose(f);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    char buf[8] = {0};
    f = fopen(png, "r");
    cr_assert_not_null(f);
    cr_assert_eq(fread(buf, 1, 7, f), 4);
    fclose(f);
    cr_assert_str_eq(buf, "keep");
    snprintf(cmd, sizeof cmd, "./build/sstc plot metrics '%s' --out '%s' 2>&1", odir, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
}
