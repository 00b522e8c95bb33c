/* C export: the generated header and runner compile as strict C99 without
 * warnings, and give the engine's predictions (int8: the very same logits). */
#include <criterion/criterion.h>
#include <sys/stat.h>
#include <unistd.h>

#include "infer_helpers.h"

static char *tmpdir(void) {
    char tmpl[] = "/tmp/sstc-export-XXXXXX";
    char *d = mkdtemp(tmpl);
    cr_assert_not_null(d);
    return strdup(d);
}

static void rmtree(const char *d) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
}

static const char driver[] =
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "#include \"sstc_net.h\"\n"
    "int main(int argc, char **argv) {\n"
    "    size_t isz = (size_t)SSTC_NET_IN_C * SSTC_NET_IN_H * SSTC_NET_IN_W;\n"
    "    unsigned char *px = malloc(isz);\n"
    "    float lg[SSTC_NET_CLASSES];\n"
    "    FILE *in, *out;\n"
    "    if (argc != 3 || !px) return 2;\n"
    "    in = fopen(argv[1], \"rb\");\n"
    "    out = fopen(argv[2], \"w\");\n"
    "    if (!in || !out) return 2;\n"
    "    while (fread(px, 1, isz, in) == isz) {\n"
    "        int k, p = sstc_net_run(px, lg);\n"
    "        fprintf(out, \"%d\", p);\n"
    "        for (k = 0; k < SSTC_NET_CLASSES; k++) fprintf(out, \" %a\", (double)lg[k]);\n"
    "        fprintf(out, \"\\n\");\n"
    "    }\n"
    "    fclose(in);\n"
    "    return fclose(out) ? 2 : 0;\n"
    "}\n";

/* Compiles DIR/sstc_net.c with the driver; returns system()'s status. */
static int compile(const char *dir, const char *defs, const char *exe) {
    char path[512], cmd[2048];
    snprintf(path, sizeof path, "%s/driver.c", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(driver, f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "cc -std=c99 -Wall -Wextra -Werror -pedantic -O2 %s -I'%s' '%s/sstc_net.c' '%s/driver.c' -o '%s' 2>'%s/cc.log'",
             defs, dir, dir, dir, exe, dir);
    return system(cmd);
}

/* Runs the compiled network on n images; pred (n) and logits (n x K). */
static void run_exported(const char *dir, const char *exe, const uint8_t *px, int n, size_t isz, int K, int *pred,
                         float *logits) {
    char in[600], out[600], cmd[2000];
    snprintf(in, sizeof in, "%s/pixels.bin", dir);
    snprintf(out, sizeof out, "%s/out.txt", dir);
    FILE *f = fopen(in, "wb");
    cr_assert_eq(fwrite(px, 1, (size_t)n * isz, f), (size_t)n * isz);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s'", exe, in, out);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    f = fopen(out, "r");
    cr_assert_not_null(f);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(fscanf(f, "%d", &pred[i]), 1, "line %d", i);
        for (int k = 0; k < K; k++) cr_assert_eq(fscanf(f, "%a", &logits[(size_t)i * K + k]), 1);
    }
    fclose(f);
}

static void check_export(sstc_sst_model *m, uint64_t seed, const char *what) {
    sstc_engine *e;
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK, "%s", sstc_errmsg());
    sstc_rng r;
    sstc_rng_seed(&r, seed);
    int n = 300, K = m->num_classes;
    size_t isz = (size_t)m->in_c * m->in_h * m->in_w;
    uint8_t *px = malloc((size_t)n * isz);
    ti_random_pixels(&r, px, (size_t)n * isz);
    cr_assert_eq(sstc_engine_calibrate(e, px + (size_t)200 * isz, 100), SSTC_OK, "%s", sstc_errmsg());
    char *dir = tmpdir(), sub[512], exe[600];
    snprintf(sub, sizeof sub, "%s/deeper/out", dir); /* the folder is created */
    sstc_export_c_info info;
    cr_assert_eq(sstc_engine_export_c(e, sub, &info), SSTC_OK, "%s", sstc_errmsg());
    cr_assert(info.int8, "%s: calibrated, so the int8 variant is exported", what);
    cr_assert_gt(info.code_bytes, 0);
    cr_assert_gt(info.buffer_bytes[0], info.buffer_bytes[1], "float buffers are larger than int8 ones");
    float *le = malloc((size_t)n * K * sizeof(float)), *lc = malloc((size_t)n * K * sizeof(float));
    int *pe = malloc(n * sizeof(int)), *pc = malloc(n * sizeof(int));
    for (int int8 = 0; int8 < 2; int8++) {
        snprintf(exe, sizeof exe, "%s/net%d", dir, int8);
        int st = compile(sub, int8 ? "-DSSTC_NET_INT8" : "", exe);
        if (st) {
            char log[600];
            snprintf(log, sizeof log, "cat '%s/cc.log' >&2", sub);
            cr_assert_eq(system(log), 0);
        }
        cr_assert_eq(st, 0, "%s: the exported C compiles warning-free (int8 = %d)", what, int8);
        run_exported(sub, exe, px, n, isz, K, pc, lc);
        cr_assert_eq(sstc_engine_set_mode(e, int8 ? SSTC_ENGINE_INT8 : SSTC_ENGINE_FLOAT), SSTC_OK);
        cr_assert_eq(sstc_engine_forward_pixels(e, px, n, le), SSTC_OK);
        sstc_engine_argmax(le, n, K, pe);
        for (int i = 0; i < n; i++) {
            const float *a = le + (size_t)i * K, *b = lc + (size_t)i * K;
            if (int8) {
                cr_assert_eq(pc[i], pe[i], "%s int8 image %d: prediction", what, i);
                cr_assert_eq(memcmp(a, b, K * sizeof(float)), 0, "%s int8 image %d: identical logits", what, i);
                continue;
            }
            double mx = 1e-3, err = 0, second = -INFINITY;
            for (int k = 0; k < K; k++) {
                mx = fmax(mx, fabs(a[k]));
                err = fmax(err, fabs(a[k] - b[k]));
                if (k != pe[i]) second = fmax(second, a[k]);
            }
            cr_assert_leq(err, 1e-4 * mx, "%s float image %d: logits differ by %g", what, i, err);
            if (a[pe[i]] - second > 1e-4 * mx) cr_assert_eq(pc[i], pe[i], "%s float image %d: prediction", what, i);
        }
    }
    free(px), free(le), free(lc), free(pe), free(pc);
    rmtree(dir);
    free(dir);
    sstc_engine_free(e);
}

Test(infer_export, generated_c_compiles_strictly_and_matches_the_engine_on_a_cnn) {
    sstc_rng r;
    sstc_rng_seed(&r, 81);
    sstc_sst_model *m = ti_cnn(&r, 8, 2);
    check_export(m, 181, "cnn (8,2)");
    sstc_sst_free(m);
}

Test(infer_export, generated_c_matches_the_engine_on_mlps_of_several_codes) {
    sstc_rng r;
    sstc_rng_seed(&r, 82);
    const int nk[][3] = {{8, 2, 0}, {16, 2, 1}, {1, 1, 0}, {8, 3, 0}};
    for (int i = 0; i < 4; i++) {
        sstc_sst_model *m = ti_mlp(&r, nk[i][0], nk[i][1], nk[i][2]);
        char what[32];
        snprintf(what, sizeof what, "mlp (%d,%d)", nk[i][0], nk[i][1]);
        check_export(m, 182 + i, what);
        sstc_sst_free(m);
    }
}

Test(infer_export, generated_c_applies_the_input_permutation) {
    sstc_rng r;
    sstc_rng_seed(&r, 87);
    sstc_sst_model *m = ti_mlp_permuted(&r, 8, 2);
    check_export(m, 187, "permuted mlp (8,2)");
    sstc_sst_free(m);
}

Test(infer_export, skip_connections_compile_and_match_the_engine) {
    sstc_rng r;
    sstc_rng_seed(&r, 88);
    sstc_sst_model *m = ti_resnet(&r, 8, 2);
    check_export(m, 188, "resnet (8,2)");
    sstc_sst_free(m);
    m = ti_taps(&r, 16, 2);
    check_export(m, 189, "taps (16,2)");
    sstc_sst_free(m);
    /* the arena holds the outputs that shortcuts and routes read later */
    m = ti_resnet(&r, 1, 1);
    sstc_engine *e;
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK);
    char *dir = tmpdir();
    sstc_export_c_info info;
    cr_assert_eq(sstc_engine_export_c(e, dir, &info), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_gt(info.buffers, 2, "more than two buffers");
    cr_assert_eq(info.buffer_bytes[0], 4 * info.buffer_bytes[1]);
    /* at least the input (3x8x8) and, alive across the identity block, the stem's output (4x8x8) */
    cr_assert_geq(info.buffer_bytes[1], 3 * 64 + 4 * 64 + 4 * 64);
    char cmd[700];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && ! grep -qE '(malloc|calloc|realloc|free) *\\(' sstc_net.c && "
             "! grep -h '#include' sstc_net.c sstc_net.h | grep -v -e '<stdint.h>' -e '<string.h>' -e '\"sstc_net.h\"'",
             dir);
    cr_assert_eq(system(cmd), 0, "no allocation, no library but stdint.h and string.h");
    rmtree(dir);
    free(dir);
    sstc_engine_free(e);
    sstc_sst_free(m);
}

Test(infer_export, int8_without_calibration_is_a_compile_error_and_bad_folders_are_reported) {
    sstc_rng r;
    sstc_rng_seed(&r, 83);
    sstc_sst_model *m = ti_mlp(&r, 8, 2, 0);
    sstc_engine *e;
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK);
    char *dir = tmpdir(), exe[600], file[600], bad[700];
    sstc_export_c_info info;
    cr_assert_eq(sstc_engine_export_c(e, dir, &info), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(info.int8, 0);
    snprintf(exe, sizeof exe, "%s/net", dir);
    cr_assert_eq(compile(dir, "", exe), 0, "the float variant compiles");
    cr_assert_neq(compile(dir, "-DSSTC_NET_INT8", exe), 0, "the int8 variant refuses to compile");
    char log[700];
    snprintf(log, sizeof log, "grep -q 'without int8 calibration' '%s/cc.log'", dir);
    cr_assert_eq(system(log), 0, "the compiler says why");
    /* a folder that cannot be created: below a regular file */
    snprintf(file, sizeof file, "%s/plain-file", dir);
    FILE *f = fopen(file, "w");
    fclose(f);
    snprintf(bad, sizeof bad, "%s/sub", file);
    cr_assert_eq(sstc_engine_export_c(e, bad, &info), SSTC_EIO);
    cr_assert_neq(strstr(sstc_errmsg(), file), NULL, "the message names the path: %s", sstc_errmsg());
    cr_assert_neq(strstr(sstc_errmsg(), "cannot create"), NULL, "%s", sstc_errmsg());
    rmtree(dir);
    free(dir);
    sstc_engine_free(e);
    sstc_sst_free(m);
}
