/* sstc infer, sstc eval on a .sst file and sstc export --c-header, run as
 * the user would, on a tiny IDX dataset written here. */
#include <criterion/criterion.h>
#include <sys/wait.h>
#include <unistd.h>

#include "infer_helpers.h"

typedef struct {
    char dir[64], data[128], other[128], model[128];
    sstc_sst_model *m;
    int ntest;
    uint8_t *test_px;
    int *test_labels;
} fixture;

static void write_idx(const char *path, int ndims, const uint32_t *dims, const uint8_t *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    uint8_t head[4] = {0, 0, 8, (uint8_t)ndims};
    fwrite(head, 1, 4, f);
    for (int i = 0; i < ndims; i++) {
        uint8_t b[4] = {(uint8_t)(dims[i] >> 24), (uint8_t)(dims[i] >> 16), (uint8_t)(dims[i] >> 8), (uint8_t)dims[i]};
        fwrite(b, 1, 4, f);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

/* An IDX dataset of side x side gray images in dir (train 120, test 80). */
static void write_dataset(const char *dir, int side, sstc_rng *r, uint8_t **test_px, int **test_labels) {
    char cmd[256], p[256];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    const char *split[2] = {"train", "t10k"};
    const int count[2] = {120, 80};
    for (int s = 0; s < 2; s++) {
        int n = count[s];
        uint8_t *px = malloc((size_t)n * side * side), *lab = malloc((size_t)n);
        ti_random_pixels(r, px, (size_t)n * side * side);
        for (int i = 0; i < n; i++) lab[i] = (uint8_t)sstc_rng_below(r, 10);
        lab[0] = 9; /* all ten classes appear */
        uint32_t d3[3] = {(uint32_t)n, (uint32_t)side, (uint32_t)side}, d1[1] = {(uint32_t)n};
        snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", dir, split[s]);
        write_idx(p, 3, d3, px, (size_t)n * side * side);
        snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, split[s]);
        write_idx(p, 1, d1, lab, (size_t)n);
        if (s == 1 && test_px) {
            *test_px = px;
            *test_labels = malloc(n * sizeof(int));
            for (int i = 0; i < n; i++) (*test_labels)[i] = lab[i];
        } else {
            free(px);
        }
        free(lab);
    }
}

static void setup_fixture(fixture *fx) {
    snprintf(fx->dir, sizeof fx->dir, "/tmp/sstc-cli-infer-XXXXXX");
    cr_assert_not_null(mkdtemp(fx->dir));
    snprintf(fx->data, sizeof fx->data, "%s/data", fx->dir);
    snprintf(fx->other, sizeof fx->other, "%s/other", fx->dir);
    snprintf(fx->model, sizeof fx->model, "%s/model.sst", fx->dir);
    sstc_rng r;
    sstc_rng_seed(&r, 91);
    fx->m = ti_mlp(&r, 8, 2, 0);
    cr_assert_eq(sstc_sst_write(fx->model, fx->m), SSTC_OK);
    write_dataset(fx->data, 6, &r, &fx->test_px, &fx->test_labels);
    fx->ntest = 80;
    write_dataset(fx->other, 5, &r, NULL, NULL);
}

static void teardown_fixture(fixture *fx) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    cr_assert_eq(system(cmd), 0);
    sstc_sst_free(fx->m);
    free(fx->test_px);
    free(fx->test_labels);
}

/* Runs a shell command; returns its exit status, output (stdout + stderr) in out. */
static int run(const char *cmd, char *out, size_t cap) {
    char full[1024];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static double field(const char *out, const char *key) {
    const char *p = strstr(out, key);
    cr_assert_not_null(p, "'%s' in: %s", key, out);
    return atof(p + strlen(key));
}

Test(infer_cli, infer_and_eval_print_the_engines_test_error) {
    fixture fx;
    setup_fixture(&fx);
    /* the expected error, from the engine directly */
    sstc_engine *e;
    cr_assert_eq(sstc_engine_create(fx.m, &e), SSTC_OK);
    float *lg = malloc((size_t)fx.ntest * 10 * sizeof(float));
    int *pred = malloc(fx.ntest * sizeof(int)), errors = 0;
    cr_assert_eq(sstc_engine_forward_pixels(e, fx.test_px, fx.ntest, lg), SSTC_OK);
    sstc_engine_argmax(lg, fx.ntest, 10, pred);
    for (int i = 0; i < fx.ntest; i++) errors += pred[i] != fx.test_labels[i];
    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s", fx.model, fx.data);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert_neq(strstr(out, "mode=float"), NULL, "%s", out);
    cr_assert_eq((int)field(out, "count="), fx.ntest, "%s", out);
    cr_assert_eq((int)field(out, "errors="), errors, "%s", out);
    cr_assert_float_eq(field(out, "test_error="), (double)errors / fx.ntest, 1e-6, "%s", out);
    double infer_loss = field(out, "test_loss=");
    /* batch 1 gives the same result */
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s --batch 1 --limit 30", fx.model, fx.data);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert_eq((int)field(out, "count="), 30, "%s", out);
    /* sstc eval dispatches on the .sst magic */
    snprintf(cmd, sizeof cmd, "./build/sstc eval %s --data %s", fx.model, fx.data);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert_float_eq(field(out, "test_error="), (double)errors / fx.ntest, 1e-6, "%s", out);
    cr_assert_float_eq(field(out, "test_loss="), infer_loss, 1e-6, "%s", out);
    snprintf(cmd, sizeof cmd, "./build/sstc eval %s", fx.model);
    cr_assert_eq(run(cmd, out, sizeof out), 2, "%s", out);
    cr_assert_neq(strstr(out, "--data"), NULL, "%s", out);
    free(lg), free(pred);
    sstc_engine_free(e);
    teardown_fixture(&fx);
}

Test(infer_cli, int8_reports_both_errors_and_the_cost_in_points) {
    fixture fx;
    setup_fixture(&fx);
    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s --int8 --calib 100", fx.model, fx.data);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    const char *f = strstr(out, "mode=float"), *q = strstr(out, "mode=int8");
    cr_assert(f && q && f < q, "float line, then int8 line: %s", out);
    double ef = field(f, "test_error="), eq = field(q, "test_error=");
    cr_assert_float_eq(field(out, "int8_cost_points="), 100 * (eq - ef), 1e-3, "%s", out);
    cr_assert_eq((int)field(out, "calib_images="), 100, "%s", out);
    teardown_fixture(&fx);
}

Test(infer_cli, bad_inputs_give_clear_errors) {
    fixture fx;
    setup_fixture(&fx);
    char cmd[512], out[4096];
    /* a dataset whose images do not fit the network */
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s", fx.model, fx.other);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert_neq(strstr(out, "1x5x5"), NULL, "names the dataset's shape: %s", out);
    cr_assert_neq(strstr(out, "1x6x6"), NULL, "names the network's shape: %s", out);
    /* usage errors */
    cr_assert_eq(run("./build/sstc infer", out, sizeof out), 2, "%s", out);
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s", fx.model);
    cr_assert_eq(run(cmd, out, sizeof out), 2, "%s", out);
    cr_assert_neq(strstr(out, "--data"), NULL, "%s", out);
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s --limit 0", fx.model, fx.data);
    cr_assert_eq(run(cmd, out, sizeof out), 2, "%s", out);
    cr_assert_eq(run("./build/sstc infer --help", out, sizeof out), 0, "%s", out);
    cr_assert_neq(strstr(out, "--int8"), NULL, "%s", out);
    /* a corrupt file: the reader's message */
    FILE *f = fopen(fx.model, "r+b");
    fseek(f, 80, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s", fx.model, fx.data);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert_neq(strstr(out, "checksum"), NULL, "%s", out);
    cr_assert_neq(strstr(out, fx.model), NULL, "%s", out);
    snprintf(cmd, sizeof cmd, "./build/sstc export %s --c-header %s/c", fx.model, fx.dir);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert_neq(strstr(out, "checksum"), NULL, "%s", out);
    teardown_fixture(&fx);
}

Test(infer_cli, export_c_header_writes_both_files_or_says_why_not) {
    fixture fx;
    setup_fixture(&fx);
    char cmd[512], out[4096], path[256];
    snprintf(cmd, sizeof cmd, "./build/sstc export %s --c-header %s/c --data %s", fx.model, fx.dir, fx.data);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert_neq(strstr(out, "int8=yes"), NULL, "%s", out);
    cr_assert_gt(field(out, "const_code_bytes="), 0, "%s", out);
    snprintf(path, sizeof path, "%s/c/sstc_net.h", fx.dir);
    cr_assert_eq(access(path, R_OK), 0, "%s", path);
    snprintf(path, sizeof path, "%s/c/sstc_net.c", fx.dir);
    cr_assert_eq(access(path, R_OK), 0, "%s", path);
    /* an output folder that cannot be created */
    snprintf(cmd, sizeof cmd, "./build/sstc export %s --c-header %s/sub", fx.model, fx.model);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert_neq(strstr(out, "cannot create"), NULL, "%s", out);
    /* --c-header with --npz is a usage error */
    snprintf(cmd, sizeof cmd, "./build/sstc export %s --c-header %s/c --npz x.npz", fx.model, fx.dir);
    cr_assert_eq(run(cmd, out, sizeof out), 2, "%s", out);
    teardown_fixture(&fx);
}

/* A file that records flip averaging is evaluated so by default, and its
 * figures match an explicit --flip; --no-flip gives the single view. */
Test(infer_cli, a_file_that_records_flip_averaging_is_evaluated_so) {
    fixture fx;
    setup_fixture(&fx);
    char cmd[512], single[4096], flip[4096], dflt[4096], dflt_eval[4096], no[4096];
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s", fx.model, fx.data);
    cr_assert_eq(run(cmd, single, sizeof single), 0, "%s", single);
    cr_assert_eq((int)field(single, "flip="), 0, "a file without flags: one view: %s", single);
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s --flip", fx.model, fx.data);
    cr_assert_eq(run(cmd, flip, sizeof flip), 0, "%s", flip);
    cr_assert_eq((int)field(flip, "flip="), 1, "%s", flip);
    /* the fixture's random images and net: the mirror changes the loss */
    cr_assert(fabs(field(flip, "test_loss=") - field(single, "test_loss=")) > 1e-6, "%s / %s", flip, single);

    fx.m->eval_flags = SSTC_SST_EVAL_FLIP;
    cr_assert_eq(sstc_sst_write(fx.model, fx.m), SSTC_OK);
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s", fx.model, fx.data);
    cr_assert_eq(run(cmd, dflt, sizeof dflt), 0, "%s", dflt);
    cr_assert_eq((int)field(dflt, "flip="), 1, "%s", dflt);
    cr_assert_float_eq(field(dflt, "test_loss="), field(flip, "test_loss="), 1e-9, "%s / %s", dflt, flip);
    cr_assert_eq((int)field(dflt, "errors="), (int)field(flip, "errors="));
    snprintf(cmd, sizeof cmd, "./build/sstc eval %s --data %s", fx.model, fx.data);
    cr_assert_eq(run(cmd, dflt_eval, sizeof dflt_eval), 0, "%s", dflt_eval);
    cr_assert_eq((int)field(dflt_eval, "flip="), 1, "%s", dflt_eval);
    cr_assert_float_eq(field(dflt_eval, "test_loss="), field(flip, "test_loss="), 1e-6, "%s", dflt_eval);
    snprintf(cmd, sizeof cmd, "./build/sstc infer %s --data %s --no-flip", fx.model, fx.data);
    cr_assert_eq(run(cmd, no, sizeof no), 0, "%s", no);
    cr_assert_eq((int)field(no, "flip="), 0, "%s", no);
    cr_assert_float_eq(field(no, "test_loss="), field(single, "test_loss="), 1e-9, "%s / %s", no, single);
    snprintf(cmd, sizeof cmd, "./build/sstc inspect %s", fx.model);
    cr_assert_eq(run(cmd, no, sizeof no), 0, "%s", no);
    cr_assert_neq(strstr(no, "version 3"), NULL, "%s", no);
    cr_assert_neq(strstr(no, "evaluation: test-time flip averaging"), NULL, "%s", no);
    teardown_fixture(&fx);
}
