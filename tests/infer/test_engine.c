/* The inference engine against a plain-loop reference, in float and int8
 * modes, batch 1 and batched, with the AVX2 and the portable kernels. */
#include <criterion/criterion.h>
#include <omp.h>
#include <unistd.h>

#include "infer/internal.h"
#include "infer_helpers.h"

static const int engine_nk[][2] = {{8, 2}, {4, 1}, {8, 1}, {8, 3}, {16, 2}, {16, 4}, {1, 1}, {5, 5}, {2, 1}};
#define N_NK (int)(sizeof engine_nk / sizeof engine_nk[0])

/* Runs batch sizes 1 (look-up-table kernel), 3 and 70 (direct kernel, two
 * internal passes) and compares every sample's logits with the reference. */
static void check_against_reference(sstc_sst_model *m, uint64_t seed, const char *what) {
    sstc_engine *e = NULL;
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK, "%s: %s", what, sstc_errmsg());
    sstc_rng r;
    sstc_rng_seed(&r, seed);
    int B = 70, K = m->num_classes;
    size_t isz = (size_t)m->in_c * m->in_h * m->in_w;
    uint8_t *px = malloc((size_t)B * isz);
    float *x = malloc((size_t)B * isz * sizeof(float)), *lg = malloc((size_t)B * K * sizeof(float));
    float *lp = malloc((size_t)B * K * sizeof(float));
    double *ref = malloc((size_t)K * sizeof(double));
    ti_random_pixels(&r, px, (size_t)B * isz);
    ti_normalize(m, px, B, x);
    const int batches[] = {1, 3, 70};
    for (int bi = 0; bi < 3; bi++) {
        int nb = batches[bi];
        cr_assert_eq(sstc_engine_forward(e, x, nb, lg), SSTC_OK, "%s: %s", what, sstc_errmsg());
        cr_assert_eq(sstc_engine_forward_pixels(e, px, nb, lp), SSTC_OK, "%s", sstc_errmsg());
        for (int b = 0; b < nb; b++) {
            ti_reference(m, x + (size_t)b * isz, ref);
            char msg[128];
            snprintf(msg, sizeof msg, "%s batch %d sample %d", what, nb, b);
            ti_assert_close(lg + (size_t)b * K, ref, K, 1e-4, msg);
            cr_assert_eq(memcmp(lg + (size_t)b * K, lp + (size_t)b * K, K * sizeof(float)), 0,
                         "%s: pixels and normalized floats give the same logits", msg);
        }
    }
    free(px), free(x), free(lg), free(lp), free(ref);
    sstc_engine_free(e);
}

Test(infer_engine, float_logits_match_the_reference_for_mlps_of_every_code) {
    sstc_rng r;
    sstc_rng_seed(&r, 71);
    for (int i = 0; i < N_NK; i++)
        for (int last_float = 0; last_float < 2; last_float++) {
            sstc_sst_model *m = ti_mlp(&r, engine_nk[i][0], engine_nk[i][1], last_float);
            char what[64];
            snprintf(what, sizeof what, "mlp (%d,%d)%s", engine_nk[i][0], engine_nk[i][1], last_float ? " float last" : "");
            check_against_reference(m, 100 + i, what);
            sstc_sst_free(m);
        }
}

Test(infer_engine, a_permute_layer_reorders_the_input_of_the_first_layer) {
    sstc_rng r;
    sstc_rng_seed(&r, 76);
    sstc_sst_model *m = ti_mlp_permuted(&r, 8, 2);
    check_against_reference(m, 150, "permuted mlp (8,2)");
    sstc_sst_free(m);
}

Test(infer_engine, float_logits_match_the_reference_for_cnns_of_every_code) {
    sstc_rng r;
    sstc_rng_seed(&r, 72);
    for (int i = 0; i < N_NK; i++) {
        sstc_sst_model *m = ti_cnn(&r, engine_nk[i][0], engine_nk[i][1]);
        char what[64];
        snprintf(what, sizeof what, "cnn (%d,%d)", engine_nk[i][0], engine_nk[i][1]);
        check_against_reference(m, 200 + i, what);
        sstc_sst_free(m);
    }
}

Test(infer_engine, portable_kernels_give_the_same_logits_as_avx2) {
    if (!sstc_infer_avx2()) cr_skip_test("no AVX2 on this machine");
    sstc_rng r;
    sstc_rng_seed(&r, 73);
    const int nk[][2] = {{8, 2}, {16, 2}, {1, 1}};
    for (int i = 0; i < 3; i++) {
        sstc_sst_model *m = i == 2 ? ti_mlp(&r, nk[i][0], nk[i][1], 0) : ti_cnn(&r, nk[i][0], nk[i][1]);
        sstc_engine *e;
        cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK, "%s", sstc_errmsg());
        int B = 20, K = m->num_classes;
        size_t isz = (size_t)m->in_c * m->in_h * m->in_w;
        uint8_t *px = malloc((size_t)B * isz);
        ti_random_pixels(&r, px, (size_t)B * isz);
        cr_assert_eq(sstc_engine_calibrate(e, px, B), SSTC_OK, "%s", sstc_errmsg());
        float *a = malloc((size_t)B * K * sizeof(float)), *b = malloc((size_t)B * K * sizeof(float));
        for (int mode = 0; mode < 2; mode++) {
            cr_assert_eq(sstc_engine_set_mode(e, mode), SSTC_OK);
            /* every instruction-set path this machine has (AVX2 also on an
             * AVX-512 machine) against the portable kernels */
            for (int isa = 1; isa <= 2; isa++)
                for (int nb = 1; nb <= B && sstc_infer_isa_available(isa); nb += B - 1) {
                    sstc_infer_force_isa(isa);
                    cr_assert_eq(sstc_engine_forward_pixels(e, px, nb, a), SSTC_OK);
                    sstc_infer_force_isa(0);
                    cr_assert_eq(sstc_engine_forward_pixels(e, px, nb, b), SSTC_OK);
                    sstc_infer_force_isa(2);
                    if (mode == SSTC_ENGINE_INT8) {
                        /* integer sums: exactly equal whatever the order */
                        cr_assert_eq(memcmp(a, b, (size_t)nb * K * sizeof(float)), 0, "int8 net %d batch %d isa %d", i, nb, isa);
                    } else {
                        for (int s = 0; s < nb * K; s++)
                            cr_assert_leq(fabsf(a[s] - b[s]), 1e-5f * (1 + fabsf(b[s])), "float net %d batch %d isa %d", i,
                                          nb, isa);
                    }
                }
        }
        free(px), free(a), free(b);
        sstc_engine_free(e);
        sstc_sst_free(m);
    }
}

Test(infer_engine, coded_kernels_equal_a_dense_ternary_product_on_large_layers) {
    /* wide layers exercise the unrolled AVX2 loops and the index tails */
    sstc_rng r;
    sstc_rng_seed(&r, 74);
    const int nk[][2] = {{8, 2}, {16, 2}, {16, 4}};
    for (int c = 0; c < 3; c++) {
        int rows = 37, cols = 1000 + 8 * c + 3, N = nk[c][0], K = nk[c][1];
        int8_t *T = malloc((size_t)rows * cols);
        ti_random_ternary(&r, T, rows, cols, N, K);
        sstc_coded_matrix cm;
        cr_assert_eq(sstc_coded_matrix_from_ternary(&cm, T, rows, cols, N, K), SSTC_OK, "%s", sstc_errmsg());
        cr_assert_eq(cm.native, N == 16 && K == 4 ? 0 : 1, "(16,4) is re-encoded in groups of 4");
        /* on an AVX-512 machine the one-vector kernel below is the sign-plane one */
        if (sstc_infer_avx512()) cr_assert_not_null(cm.planes, "sign planes built");
        size_t ld = 40;
        float *x = malloc((size_t)cols * ld * sizeof(float)), *acc = malloc((size_t)rows * ld * sizeof(float));
        int32_t *xi = malloc((size_t)cols * ld * sizeof(int32_t)), *acci = malloc((size_t)rows * ld * sizeof(int32_t));
        float *xv = malloc((size_t)cols * sizeof(float)), *lut = malloc(sstc_coded_lut_size(&cm) * sizeof(float));
        int32_t *xvi = malloc((size_t)cols * sizeof(int32_t)), *luti = malloc(sstc_coded_lut_size(&cm) * sizeof(int32_t));
        float *av = malloc((size_t)rows * sizeof(float));
        int32_t *avi = malloc((size_t)rows * sizeof(int32_t));
        for (size_t i = 0; i < (size_t)cols * ld; i++) {
            xi[i] = (int32_t)sstc_rng_below(&r, 255) - 127;
            x[i] = (float)xi[i] * 0.01f;
        }
        for (int j = 0; j < cols; j++) xv[j] = x[(size_t)j * ld + 5], xvi[j] = xi[(size_t)j * ld + 5];
        for (int variant = 0; variant < 6; variant++) {
            int isa = variant % 3, direct = variant / 3;
            if (!sstc_infer_isa_available(isa)) continue;
            sstc_infer_force_isa(isa); /* portable, AVX2, AVX-512: each path this machine has */
            cr_assert(sstc_infer_avx2() == (isa >= 1) && sstc_infer_avx512() == (isa == 2), "level %d runs its kernels", isa);
            if (direct) {
                sstc_coded_gemm_direct_f32(&cm, x, ld, acc);
                sstc_coded_gemm_direct_i32(&cm, xi, ld, acci);
            } else {
                cr_assert_eq(sstc_coded_gemm_lut_f32(&cm, x, ld, acc), SSTC_OK);
                cr_assert_eq(sstc_coded_gemm_lut_i32(&cm, xi, ld, acci), SSTC_OK);
            }
            sstc_coded_gemv_f32(&cm, xv, lut, av);
            sstc_coded_gemv_i32(&cm, xvi, luti, avi);
            for (int o = 0; o < rows; o++) {
                for (size_t l = 0; l < ld; l++) {
                    int64_t si = 0;
                    double sf = 0;
                    for (int j = 0; j < cols; j++) {
                        si += T[(size_t)o * cols + j] * xi[(size_t)j * ld + l];
                        sf += T[(size_t)o * cols + j] * (double)x[(size_t)j * ld + l];
                    }
                    cr_assert_eq(acci[(size_t)o * ld + l], si, "(%d,%d) variant %d int row %d lane %zu", N, K, variant, o, l);
                    cr_assert_leq(fabs(acc[(size_t)o * ld + l] - sf), 1e-4, "(%d,%d) variant %d float row %d lane %zu", N, K, variant, o, l);
                    if (l == 5) {
                        cr_assert_eq(avi[o], si, "(%d,%d) int gemv row %d", N, K, o);
                        cr_assert_leq(fabs(av[o] - sf), 1e-4, "(%d,%d) float gemv row %d", N, K, o);
                    }
                }
            }
        }
        sstc_infer_force_isa(2);
        free(T), free(x), free(acc), free(xi), free(acci), free(xv), free(lut), free(xvi), free(luti), free(av), free(avi);
        sstc_coded_matrix_free(&cm);
    }
}

Test(infer_engine, plan_folds_batch_norms_fuses_relus_and_drops_dropout) {
    sstc_rng r;
    sstc_rng_seed(&r, 75);
    sstc_sst_model *m = ti_cnn(&r, 8, 2);
    sstc_engine *e;
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK);
    /* conv+bn+relu, maxpool, conv+relu, bn, avgpool, conv, fc+bn+relu, fc */
    cr_assert_eq(e->n_ops, 8, "%d ops", e->n_ops);
    const sstc_infer_op_kind kinds[] = {SSTC_OP_CONV, SSTC_OP_MAXPOOL, SSTC_OP_CONV, SSTC_OP_BN,
                                        SSTC_OP_AVGPOOL, SSTC_OP_CONV, SSTC_OP_FC, SSTC_OP_FC};
    const int relu[] = {1, 0, 1, 0, 0, 0, 1, 0};
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(e->ops[i].kind, kinds[i], "op %d kind", i);
        cr_assert_eq(e->ops[i].relu, relu[i], "op %d relu", i);
    }
    sstc_engine_info info;
    sstc_engine_get_info(e, &info);
    cr_assert_eq(info.coded_layers, 4);
    cr_assert_eq(info.float_layers, 1);
    cr_assert_eq(info.float_weight_bytes, 6 * 8 * 9 * sizeof(float));
    cr_assert_eq(info.max_activation, 8 * 9 * 9);
    sstc_engine_free(e);
    sstc_sst_free(m);
}

Test(infer_engine, int8_mode_needs_calibration_and_stays_close_to_float) {
    sstc_rng r;
    sstc_rng_seed(&r, 76);
    sstc_sst_model *m = ti_cnn(&r, 8, 2);
    sstc_engine *e;
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK);
    cr_assert_eq(sstc_engine_set_mode(e, SSTC_ENGINE_INT8), SSTC_ESTATE);
    cr_assert_neq(strstr(sstc_errmsg(), "calibrat"), NULL, "%s", sstc_errmsg());
    int B = 200, K = m->num_classes;
    size_t isz = (size_t)m->in_c * m->in_h * m->in_w;
    uint8_t *px = malloc((size_t)B * isz);
    ti_random_pixels(&r, px, (size_t)B * isz);
    cr_assert_eq(sstc_engine_calibrate(e, px, 100), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(sstc_engine_get_mode(e), SSTC_ENGINE_FLOAT, "calibration leaves the mode alone");
    float *lf = malloc((size_t)B * K * sizeof(float)), *lq = malloc((size_t)B * K * sizeof(float));
    float *l1 = malloc((size_t)K * sizeof(float));
    cr_assert_eq(sstc_engine_forward_pixels(e, px, B, lf), SSTC_OK);
    cr_assert_eq(sstc_engine_set_mode(e, SSTC_ENGINE_INT8), SSTC_OK);
    cr_assert_eq(sstc_engine_forward_pixels(e, px, B, lq), SSTC_OK);
    int *pf = malloc(B * sizeof(int)), *pq = malloc(B * sizeof(int)), agree = 0;
    sstc_engine_argmax(lf, B, K, pf);
    sstc_engine_argmax(lq, B, K, pq);
    double err = 0, mag = 0;
    for (int i = 0; i < B; i++) agree += pf[i] == pq[i];
    for (int i = 0; i < B * K; i++) err = fmax(err, fabsf(lf[i] - lq[i])), mag = fmax(mag, fabsf(lf[i]));
    cr_assert_geq(agree, B * 9 / 10, "int8 and float agree on %d of %d predictions", agree, B);
    cr_assert_leq(err, 0.1 * mag, "int8 logits within 10%% of the largest: %g vs %g", err, mag);
    cr_assert_gt(err, 0, "int8 really quantizes");
    /* batch 1 (look-up tables) and batched (direct kernel) give identical codes */
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(sstc_engine_forward_pixels(e, px + (size_t)i * isz, 1, l1), SSTC_OK);
        cr_assert_eq(memcmp(l1, lq + (size_t)i * K, K * sizeof(float)), 0, "sample %d", i);
    }
    free(px), free(lf), free(lq), free(l1), free(pf), free(pq);
    sstc_engine_free(e);
    sstc_sst_free(m);
}

Test(infer_engine, evaluate_pixels_counts_errors_and_rejects_mismatched_inputs) {
    sstc_rng r;
    sstc_rng_seed(&r, 77);
    sstc_sst_model *m = ti_mlp(&r, 8, 2, 0);
    sstc_engine *e;
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK);
    uint8_t *pixels = malloc(50 * 36);
    int *labels = malloc(50 * sizeof(int));
    ti_random_pixels(&r, pixels, 50 * 36);
    float *lg = malloc(50 * 10 * sizeof(float));
    int pred[50], pe[50];
    cr_assert_eq(sstc_engine_forward_pixels(e, pixels, 50, lg), SSTC_OK);
    sstc_engine_argmax(lg, 50, 10, pred);
    for (int i = 0; i < 50; i++) labels[i] = i < 20 ? pred[i] : (pred[i] + 1) % 10;
    sstc_infer_result res;
    cr_assert_eq(sstc_engine_evaluate_pixels(e, pixels, labels, 50, 7, pe, &res), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(res.count, 50);
    cr_assert_eq(res.errors, 30);
    cr_assert_float_eq(res.error, 0.6, 1e-12);
    cr_assert_gt(res.loss, 0);
    cr_assert_eq(memcmp(pe, pred, sizeof pred), 0);
    cr_assert_eq(sstc_engine_evaluate_pixels(e, pixels, labels, 10, 0, NULL, &res), SSTC_OK);
    cr_assert_eq(res.count, 10);
    cr_assert_eq(res.errors, 0);
    labels[13] = 10;
    cr_assert_eq(sstc_engine_evaluate_pixels(e, pixels, labels, 50, 0, NULL, &res), SSTC_EINVAL);
    cr_assert_neq(strstr(sstc_errmsg(), "image 13: label 10"), NULL, "%s", sstc_errmsg());
    cr_assert_eq(sstc_engine_check_input(e, 3, 32, 32, 10), SSTC_ESHAPE);
    cr_assert_neq(strstr(sstc_errmsg(), "3x32x32"), NULL, "%s", sstc_errmsg());
    cr_assert_neq(strstr(sstc_errmsg(), "1x6x6"), NULL, "%s", sstc_errmsg());
    cr_assert_eq(sstc_engine_check_input(e, 1, 6, 6, 11), SSTC_ESHAPE);
    cr_assert_eq(sstc_engine_check_input(e, 1, 6, 6, 10), SSTC_OK);
    free(pixels), free(labels), free(lg);
    sstc_engine_free(e);
    sstc_sst_free(m);
}

Test(infer_engine, a_corrupt_or_missing_file_is_rejected_by_the_reader) {
    sstc_rng r;
    sstc_rng_seed(&r, 78);
    sstc_sst_model *m = ti_mlp(&r, 8, 2, 0);
    char path[] = "/tmp/sstc-infer-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    cr_assert_eq(sstc_sst_write(path, m), SSTC_OK);
    sstc_engine *e = NULL;
    cr_assert_eq(sstc_engine_load(path, &e), SSTC_OK, "%s", sstc_errmsg());
    sstc_engine_free(e);
    FILE *f = fopen(path, "r+b");
    fseek(f, 100, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 100, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
    e = (sstc_engine *)1;
    cr_assert_eq(sstc_engine_load(path, &e), SSTC_EFORMAT);
    cr_assert_null(e);
    cr_assert_neq(strstr(sstc_errmsg(), "checksum"), NULL, "%s", sstc_errmsg());
    cr_assert_neq(strstr(sstc_errmsg(), path), NULL, "the message names the file: %s", sstc_errmsg());
    unlink(path);
    cr_assert_eq(sstc_engine_load(path, &e), SSTC_EIO);
    sstc_sst_free(m);
}

Test(infer_engine, threads_split_the_work_without_changing_integer_results) {
    sstc_rng r;
    sstc_rng_seed(&r, 79);
    /* 4.4M weights: above the size where the one-vector kernels use several threads */
    int rows = 1100, cols = 4003, N = 8, K = 2;
    int8_t *T = malloc((size_t)rows * cols);
    ti_random_ternary(&r, T, rows, cols, N, K);
    sstc_coded_matrix cm;
    cr_assert_eq(sstc_coded_matrix_from_ternary(&cm, T, rows, cols, N, K), SSTC_OK);
    size_t ld = 16;
    int32_t *x = malloc((size_t)cols * ld * sizeof(int32_t)), *xv = malloc((size_t)cols * sizeof(int32_t));
    float *xf = malloc((size_t)cols * sizeof(float)), *lutf = malloc(sstc_coded_lut_size(&cm) * sizeof(float));
    int32_t *lut = malloc(sstc_coded_lut_size(&cm) * sizeof(int32_t));
    int32_t *a1 = malloc((size_t)rows * ld * sizeof(int32_t)), *a3 = malloc((size_t)rows * ld * sizeof(int32_t));
    int32_t *v1 = malloc(rows * sizeof(int32_t)), *v3 = malloc(rows * sizeof(int32_t));
    float *f1 = malloc(rows * sizeof(float)), *f3 = malloc(rows * sizeof(float));
    for (size_t i = 0; i < (size_t)cols * ld; i++) x[i] = (int32_t)sstc_rng_below(&r, 255) - 127;
    for (int j = 0; j < cols; j++) xv[j] = x[(size_t)j * ld], xf[j] = 0.01f * (float)xv[j];
    omp_set_num_threads(1);
    sstc_coded_gemv_i32(&cm, xv, lut, v1);
    sstc_coded_gemv_f32(&cm, xf, lutf, f1);
    cr_assert_eq(sstc_coded_gemm_lut_i32(&cm, x, ld, a1), SSTC_OK);
    omp_set_num_threads(3);
    sstc_coded_gemv_i32(&cm, xv, lut, v3);
    sstc_coded_gemv_f32(&cm, xf, lutf, f3);
    cr_assert_eq(sstc_coded_gemm_lut_i32(&cm, x, ld, a3), SSTC_OK);
    cr_assert_eq(memcmp(v1, v3, rows * sizeof(int32_t)), 0, "one-vector kernel");
    cr_assert_eq(memcmp(a1, a3, (size_t)rows * ld * sizeof(int32_t)), 0, "batched kernel");
    for (int o = 0; o < rows; o++) {
        int64_t s = 0;
        for (int j = 0; j < cols; j++) s += T[(size_t)o * cols + j] * xv[j];
        cr_assert_eq(v1[o], s, "row %d", o);
        cr_assert_leq(fabsf(f1[o] - f3[o]), 1e-4f, "float row %d: %g vs %g", o, f1[o], f3[o]);
        cr_assert_leq(fabs(f3[o] - 0.01 * (double)s), 1e-3, "float row %d", o);
    }
    free(T), free(x), free(xv), free(xf), free(lutf), free(lut), free(a1), free(a3), free(v1), free(v3), free(f1), free(f3);
    sstc_coded_matrix_free(&cm);
}

Test(infer_engine, skip_connections_match_the_reference_for_every_code) {
    sstc_rng r;
    sstc_rng_seed(&r, 90);
    for (int i = 0; i < N_NK; i++) {
        sstc_sst_model *m = ti_resnet(&r, engine_nk[i][0], engine_nk[i][1]);
        char what[64];
        snprintf(what, sizeof what, "resnet (%d,%d)", engine_nk[i][0], engine_nk[i][1]);
        check_against_reference(m, 300 + i, what);
        sstc_sst_free(m);
    }
    sstc_sst_model *m = ti_taps(&r, 8, 2);
    check_against_reference(m, 320, "taps (8,2)");
    sstc_sst_free(m);
}

Test(infer_engine, outputs_read_later_keep_their_buffers_and_are_not_folded_away) {
    sstc_rng r;
    sstc_rng_seed(&r, 91);
    sstc_sst_model *m = ti_resnet(&r, 8, 2);
    sstc_engine *e;
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK, "%s", sstc_errmsg());
    /* conv+bn+relu, conv+bn+relu, conv+bn, shortcut+relu, conv+bn+relu, conv+bn,
     * route, conv+bn, shortcut+relu, route, pool, fc */
    const sstc_infer_op_kind kinds[] = {SSTC_OP_CONV, SSTC_OP_CONV,  SSTC_OP_CONV, SSTC_OP_SHORTCUT,
                                        SSTC_OP_CONV, SSTC_OP_CONV,  SSTC_OP_ROUTE, SSTC_OP_CONV,
                                        SSTC_OP_SHORTCUT, SSTC_OP_ROUTE, SSTC_OP_GAP, SSTC_OP_FC};
    const int relu[] = {1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0};
    cr_assert_eq(e->n_ops, 12, "%d ops", e->n_ops);
    for (int i = 0; i < 12; i++) {
        cr_assert_eq(e->ops[i].kind, kinds[i], "op %d kind %d", i, e->ops[i].kind);
        cr_assert_eq(e->ops[i].relu, relu[i], "op %d relu", i);
    }
    cr_assert_eq(e->ops[3].src[0], 2, "the shortcut adds conv 6's output...");
    cr_assert_eq(e->ops[3].src[1], 0, "...to the stem's");
    cr_assert_eq(e->ops[9].src[0], 8);
    cr_assert_eq(e->ops[9].src[1], 4, "route [17, 11] reads the shortcut and the first conv of the block");
    sstc_engine_info info;
    sstc_engine_get_info(e, &info);
    cr_assert_gt(info.activation_buffers, 2, "outputs read later need buffers of their own");
    cr_assert_eq(info.coded_layers, 6);
    cr_assert_eq(info.float_layers, 1);
    /* no two tensors alive at once share memory: check every op's inputs against its output */
    for (int i = 0; i < e->n_ops; i++)
        for (int k = 0; k < e->ops[i].nsrc; k++) {
            int t = e->ops[i].src[k];
            if (t >= 0) cr_assert_neq(e->ops[t].act_off, e->ops[i].act_off, "op %d writes over its input %d", i, t);
        }
    sstc_engine_free(e);
    sstc_sst_free(m);
    /* a shortcut reading a conv's output before its batch norm: the norm stays an op */
    m = ti_taps(&r, 8, 2);
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(e->ops[0].kind, SSTC_OP_CONV);
    cr_assert_eq(e->ops[0].relu, 0);
    cr_assert_eq(e->ops[1].kind, SSTC_OP_BN, "the batch norm is not folded into the conv the shortcut reads");
    cr_assert_eq(e->ops[1].relu, 1);
    cr_assert_eq(e->ops[3].kind, SSTC_OP_SHORTCUT);
    cr_assert_eq(e->ops[3].src[1], 0);
    cr_assert_eq(e->ops[3].relu, 1, "the relu after the shortcut fuses");
    sstc_engine_free(e);
    sstc_sst_free(m);
    /* a plain chain keeps two ping-pong buffers */
    m = ti_cnn(&r, 8, 2);
    cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK);
    sstc_engine_get_info(e, &info);
    cr_assert_eq(info.activation_buffers, 2);
    sstc_engine_free(e);
    sstc_sst_free(m);
}

/* int8 with skip connections: a shortcut adds codes of two scales (each
 * times its scale over the output's, then requantized), a route brings its
 * sources to the largest of their scales. Tolerance: predictions agree with
 * float on 90 % of the images, logits within 10 % of the largest. */
Test(infer_engine, int8_skip_connections_stay_close_to_float) {
    sstc_rng r;
    sstc_rng_seed(&r, 92);
    const int nk[][2] = {{8, 2}, {1, 1}};
    for (int c = 0; c < 2; c++) {
        sstc_sst_model *m = ti_resnet(&r, nk[c][0], nk[c][1]);
        sstc_engine *e;
        cr_assert_eq(sstc_engine_create(m, &e), SSTC_OK);
        int B = 200, K = m->num_classes;
        size_t isz = (size_t)m->in_c * m->in_h * m->in_w;
        uint8_t *px = malloc((size_t)B * isz);
        ti_random_pixels(&r, px, (size_t)B * isz);
        cr_assert_eq(sstc_engine_calibrate(e, px, 100), SSTC_OK, "%s", sstc_errmsg());
        /* the requantization factors follow the scales */
        const sstc_infer_op *sc = &e->ops[3], *rt = &e->ops[9];
        cr_assert_float_eq(sc->qs[0], e->ops[2].out_scale / sc->out_scale, 1e-6f);
        cr_assert_float_eq(sc->qs[1], e->ops[0].out_scale / sc->out_scale, 1e-6f);
        float top = fmaxf(e->ops[8].out_scale, e->ops[4].out_scale);
        cr_assert_eq(rt->out_scale, top, "a route takes the largest scale of its sources");
        cr_assert(rt->qs[0] == 1.0f || rt->qs[1] == 1.0f, "the source with that scale is copied");
        float *lf = malloc((size_t)B * K * sizeof(float)), *lq = malloc((size_t)B * K * sizeof(float));
        cr_assert_eq(sstc_engine_forward_pixels(e, px, B, lf), SSTC_OK);
        cr_assert_eq(sstc_engine_set_mode(e, SSTC_ENGINE_INT8), SSTC_OK);
        cr_assert_eq(sstc_engine_forward_pixels(e, px, B, lq), SSTC_OK);
        int *pf = malloc(B * sizeof(int)), *pq = malloc(B * sizeof(int)), agree = 0;
        sstc_engine_argmax(lf, B, K, pf);
        sstc_engine_argmax(lq, B, K, pq);
        double err = 0, mag = 0;
        for (int i = 0; i < B; i++) agree += pf[i] == pq[i];
        for (int i = 0; i < B * K; i++) err = fmax(err, fabsf(lf[i] - lq[i])), mag = fmax(mag, fabsf(lf[i]));
        cr_assert_geq(agree, B * 9 / 10, "(%d,%d): int8 and float agree on %d of %d predictions", nk[c][0], nk[c][1],
                      agree, B);
        cr_assert_leq(err, 0.1 * mag, "(%d,%d): int8 logits within 10%% of the largest: %g vs %g", nk[c][0], nk[c][1],
                      err, mag);
        cr_assert_gt(err, 0, "int8 really quantizes");
        /* one image at a time gives the same codes */
        float l1[16];
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(sstc_engine_forward_pixels(e, px + (size_t)i * isz, 1, l1), SSTC_OK);
            cr_assert_eq(memcmp(l1, lq + (size_t)i * K, K * sizeof(float)), 0, "sample %d", i);
        }
        free(px), free(lf), free(lq), free(pf), free(pq);
        sstc_engine_free(e);
        sstc_sst_free(m);
    }
}

/* The 16-lane (AVX-512) batched kernel adds, in every lane, what the 8-lane
 * (AVX2) one adds in the same order: the same bits, whatever the thread
 * count, tail tiles of 8 lanes included (ld = 40 = 16 + 16 + 8). */
Test(infer_engine, the_16_lane_batched_kernel_gives_the_8_lane_kernels_bits) {
    if (!sstc_infer_isa_available(2)) return; /* nothing to compare on this CPU */
    sstc_rng r;
    sstc_rng_seed(&r, 81);
    const int nk[][2] = {{8, 2}, {16, 2}, {8, 3}, {8, 1}, {4, 1}};
    for (int c = 0; c < 5; c++) {
        int rows = 45, cols = 613, N = nk[c][0], K = nk[c][1];
        size_t ld = 40;
        int8_t *T = malloc((size_t)rows * cols);
        ti_random_ternary(&r, T, rows, cols, N, K);
        sstc_coded_matrix cm;
        cr_assert_eq(sstc_coded_matrix_from_ternary(&cm, T, rows, cols, N, K), SSTC_OK);
        float *x = malloc((size_t)cols * ld * sizeof(float));
        float *a8 = malloc((size_t)rows * ld * sizeof(float)), *a16 = malloc((size_t)rows * ld * sizeof(float));
        float *a16t = malloc((size_t)rows * ld * sizeof(float));
        for (size_t i = 0; i < (size_t)cols * ld; i++) x[i] = sstc_rng_normal(&r);
        omp_set_num_threads(1);
        sstc_infer_force_isa(1);
        cr_assert_eq(sstc_coded_gemm_lut_f32(&cm, x, ld, a8), SSTC_OK);
        sstc_infer_force_isa(2);
        cr_assert_eq(sstc_coded_gemm_lut_f32(&cm, x, ld, a16), SSTC_OK);
        omp_set_num_threads(3);
        cr_assert_eq(sstc_coded_gemm_lut_f32(&cm, x, ld, a16t), SSTC_OK);
        omp_set_num_threads(1);
        cr_assert_eq(memcmp(a8, a16, (size_t)rows * ld * sizeof(float)), 0, "(%d,%d): 8 and 16 lanes", N, K);
        cr_assert_eq(memcmp(a16, a16t, (size_t)rows * ld * sizeof(float)), 0, "(%d,%d): 1 and 3 threads", N, K);
        /* codes of 2 non-zeros per group take the table of singles by default
         * when they have more than 256 entries or at most 256 rows (45 here); the big entry table and the singles
         * (forced for every K <= 2) form the same sums in the same order */
        cr_assert_eq(sstc_coded_use_singles(&cm), K == 2, "(%d,%d): default path", N, K);
        for (int mode = 0; mode < 2; mode++) {
            sstc_coded_force_singles(mode);
            cr_assert_eq(sstc_coded_use_singles(&cm), mode && K <= 2, "(%d,%d) mode %d", N, K, mode);
            for (int isa = 1; isa <= 2; isa++) {
                sstc_infer_force_isa(isa);
                cr_assert_eq(sstc_coded_gemm_lut_f32(&cm, x, ld, a16t), SSTC_OK);
                cr_assert_eq(memcmp(a16, a16t, (size_t)rows * ld * sizeof(float)), 0, "(%d,%d) isa %d mode %d", N, K,
                             isa, mode);
            }
        }
        sstc_coded_force_singles(2);
        /* and both are the product: against a double-precision loop */
        for (int o = 0; o < rows; o++)
            for (size_t l = 0; l < ld; l++) {
                double sf = 0;
                for (int j = 0; j < cols; j++) sf += T[(size_t)o * cols + j] * (double)x[(size_t)j * ld + l];
                cr_assert_leq(fabs(a16[(size_t)o * ld + l] - sf), 1e-3, "(%d,%d) row %d lane %zu", N, K, o, l);
            }
        free(T), free(x), free(a8), free(a16), free(a16t);
        sstc_coded_matrix_free(&cm);
    }
}

/* The sign-plane kernel for one input vector, split over 2 and 3 threads
 * (each thread the tables of a share of the inputs, then a share of the
 * rows over all inputs), gives the one-thread sums bit for bit. */
Test(infer_engine, the_sign_plane_kernel_split_over_threads_gives_the_same_sums) {
    if (!sstc_infer_isa_available(2)) return; /* the sign planes are the AVX-512 kernel */
    sstc_rng r;
    sstc_rng_seed(&r, 83);
    int rows = 70, cols = 1100;
    int8_t *T = malloc((size_t)rows * cols);
    ti_random_ternary(&r, T, rows, cols, 8, 2);
    sstc_coded_matrix cm;
    cr_assert_eq(sstc_coded_matrix_from_ternary(&cm, T, rows, cols, 8, 2), SSTC_OK);
    cr_assert_not_null(cm.planes);
    float *x = malloc(cols * sizeof(float)), *lut = malloc(sstc_coded_lut_size(&cm) * sizeof(float));
    int32_t *xi = malloc(cols * sizeof(int32_t)), *luti = malloc(sstc_coded_lut_size(&cm) * sizeof(int32_t));
    float a1[70], at[70];
    int32_t i1[70], it[70];
    for (int j = 0; j < cols; j++) {
        xi[j] = (int32_t)sstc_rng_below(&r, 255) - 127;
        x[j] = sstc_rng_normal(&r);
    }
    sstc_coded_set_planes_par_min((size_t)1 << 40);
    sstc_coded_gemv_f32(&cm, x, lut, a1);
    sstc_coded_gemv_i32(&cm, xi, luti, i1);
    sstc_coded_set_planes_par_min(1);
    for (int th = 2; th <= 3; th++) {
        omp_set_num_threads(th);
        sstc_coded_gemv_f32(&cm, x, lut, at);
        sstc_coded_gemv_i32(&cm, xi, luti, it);
        cr_assert_eq(memcmp(i1, it, sizeof(i1)), 0, "%d threads: integer sums", th);
        cr_assert_eq(memcmp(a1, at, sizeof(a1)), 0, "%d threads: float sums", th);
        for (int o = 0; o < rows; o++) {
            double sf = 0;
            for (int j = 0; j < cols; j++) sf += T[(size_t)o * cols + j] * (double)x[j];
            cr_assert_leq(fabs(at[o] - sf), 1e-4 * (1 + fabs(sf)), "%d threads row %d: %g vs %g", th, o, at[o], sf);
        }
    }
    omp_set_num_threads(1);
    sstc_coded_set_planes_par_min(0);
    free(T), free(x), free(lut), free(xi), free(luti);
    sstc_coded_matrix_free(&cm);
}

Test(infer_engine, the_pair_kernel_gives_the_reference_sums_and_the_same_bits_on_any_thread_count) {
    if (!sstc_infer_isa_available(2)) return; /* the pair kernel is AVX-512 */
    sstc_rng r;
    sstc_rng_seed(&r, 91);
    /* odd sizes: rows not a multiple of 16 (and of 64), inputs not a multiple
     * of 8 or 32, one input group, and a layer of one row block */
    const int shape[][4] = {{70, 1100, 8, 2}, {37, 1003, 8, 1}, {130, 13, 8, 2}, {16, 8, 8, 2}, {5, 64, 8, 2}};
    for (int c = 0; c < 5; c++) {
        int rows = shape[c][0], cols = shape[c][1], N = shape[c][2], K = shape[c][3];
        int8_t *T = malloc((size_t)rows * cols);
        ti_random_ternary(&r, T, rows, cols, N, K);
        sstc_coded_matrix cm;
        cr_assert_eq(sstc_coded_matrix_from_ternary(&cm, T, rows, cols, N, K), SSTC_OK, "%s", sstc_errmsg());
        cr_assert_not_null(cm.pairs, "(%d,%d): pair indices built", N, K);
        float *x = malloc((size_t)cols * sizeof(float)), *lut = malloc(sstc_coded_lut_size(&cm) * sizeof(float));
        float *a1 = malloc((size_t)rows * sizeof(float)), *at = malloc((size_t)rows * sizeof(float));
        float *ap = malloc((size_t)rows * sizeof(float));
        int32_t *xi = malloc((size_t)cols * sizeof(int32_t)), *luti = malloc(sstc_coded_lut_size(&cm) * sizeof(int32_t));
        int32_t *ai = malloc((size_t)rows * sizeof(int32_t)), *aip = malloc((size_t)rows * sizeof(int32_t));
        for (int j = 0; j < cols; j++) x[j] = sstc_rng_normal(&r), xi[j] = (int32_t)sstc_rng_below(&r, 255) - 127;
        x[cols - 1] = 0.0f, x[0] = -0.0f; /* signed zeros */
        /* integer sums (the int8 path): exact on every kernel and thread count */
        sstc_coded_use_pairs(0);
        sstc_coded_gemv_i32(&cm, xi, luti, aip);
        sstc_coded_use_pairs(1);
        for (int th = 1; th <= 3; th++) {
            omp_set_num_threads(th);
            sstc_coded_set_planes_par_min(th == 1 ? (size_t)1 << 40 : 1);
            sstc_coded_gemv_i32(&cm, xi, luti, ai);
            for (int o = 0; o < rows; o++) {
                long si = 0;
                for (int j = 0; j < cols; j++) si += T[(size_t)o * cols + j] * (long)xi[j];
                cr_assert_eq(ai[o], si, "%dx%d (%d,%d) %d threads int row %d", rows, cols, N, K, th, o);
                cr_assert_eq(aip[o], si, "%dx%d (%d,%d) sign planes int row %d", rows, cols, N, K, o);
            }
        }
        omp_set_num_threads(1);
        free(xi), free(luti), free(ai), free(aip);
        sstc_coded_set_planes_par_min((size_t)1 << 40);
        sstc_coded_use_pairs(0);
        sstc_coded_gemv_f32(&cm, x, lut, ap); /* the sign planes */
        sstc_coded_use_pairs(1);
        sstc_coded_gemv_f32(&cm, x, lut, a1);
        sstc_coded_set_planes_par_min(1);
        for (int th = 1; th <= 3; th++) {
            omp_set_num_threads(th);
            memset(at, 0xff, (size_t)rows * sizeof(float)); /* NaNs: every row must be written */
            sstc_coded_gemv_f32(&cm, x, lut, at);
            cr_assert_eq(memcmp(a1, at, (size_t)rows * sizeof(float)), 0, "%dx%d, %d threads: the same bits", rows, cols, th);
        }
        for (int o = 0; o < rows; o++) {
            double sf = 0;
            for (int j = 0; j < cols; j++) sf += T[(size_t)o * cols + j] * (double)x[j];
            cr_assert_leq(fabs(a1[o] - sf), 1e-4 * (1 + fabs(sf)), "%dx%d (%d,%d) row %d: %g vs %g", rows, cols, N, K, o,
                          a1[o], sf);
            cr_assert_leq(fabs(a1[o] - ap[o]), 1e-4 * (1 + fabs(sf)), "row %d: pairs %g, planes %g", o, a1[o], ap[o]);
        }
        omp_set_num_threads(1);
        sstc_coded_set_planes_par_min(0);
        free(T), free(x), free(lut), free(a1), free(at), free(ap);
        sstc_coded_matrix_free(&cm);
    }
}

Test(infer_engine, the_pair_kernel_is_exact_where_every_sum_is) {
    /* small integers as floats: every partial sum is exact, so the pair
     * kernel (halved tables, doubled sums) must give the integer product */
    if (!sstc_infer_isa_available(2)) return;
    sstc_rng r;
    sstc_rng_seed(&r, 92);
    int rows = 48, cols = 256;
    int8_t *T = malloc((size_t)rows * cols);
    ti_random_ternary(&r, T, rows, cols, 8, 2);
    sstc_coded_matrix cm;
    cr_assert_eq(sstc_coded_matrix_from_ternary(&cm, T, rows, cols, 8, 2), SSTC_OK, "%s", sstc_errmsg());
    float x[256], acc[48], *lut = malloc(sstc_coded_lut_size(&cm) * sizeof(float));
    for (int j = 0; j < cols; j++) x[j] = (float)((int)sstc_rng_below(&r, 201) - 100);
    sstc_coded_gemv_f32(&cm, x, lut, acc);
    for (int o = 0; o < rows; o++) {
        long s = 0;
        for (int j = 0; j < cols; j++) s += T[(size_t)o * cols + j] * (long)x[j];
        cr_assert_eq(acc[o], (float)s, "row %d: %g vs %ld", o, acc[o], s);
    }
    free(T), free(lut);
    sstc_coded_matrix_free(&cm);
}

Test(infer_engine, a_tuned_layer_keeps_one_of_the_two_choices_and_its_sums) {
    if (!sstc_infer_isa_available(2)) return;
    sstc_rng r;
    sstc_rng_seed(&r, 93);
    int rows = 512, cols = 520; /* 266K weights: tuned */
    int8_t *T = malloc((size_t)rows * cols);
    ti_random_ternary(&r, T, rows, cols, 8, 2);
    sstc_coded_matrix cm;
    cr_assert_eq(sstc_coded_matrix_from_ternary(&cm, T, rows, cols, 8, 2), SSTC_OK, "%s", sstc_errmsg());
    float *x = malloc(cols * sizeof(float)), *lut = malloc(sstc_coded_lut_size(&cm) * sizeof(float));
    float *a = malloc(rows * sizeof(float)), *b = malloc(rows * sizeof(float));
    for (int j = 0; j < cols; j++) x[j] = sstc_rng_normal(&r);
    omp_set_num_threads(2);
    sstc_coded_gemv_f32(&cm, x, lut, a);
    sstc_coded_tune(&cm);
    cr_assert_eq(cm.tuned_threads, 2);
    cr_assert(cm.tuned_parts == 1 || cm.tuned_parts == 2, "tuned to %d threads", cm.tuned_parts);
    sstc_coded_gemv_f32(&cm, x, lut, b);
    cr_assert_eq(memcmp(a, b, rows * sizeof(float)), 0, "the same bits after tuning");
    /* small layers stay on one thread without timing */
    sstc_coded_matrix small;
    cr_assert_eq(sstc_coded_matrix_from_ternary(&small, T, 64, 520, 8, 2), SSTC_OK);
    sstc_coded_tune(&small);
    cr_assert_eq(small.tuned_parts, 1);
    omp_set_num_threads(1);
    free(T), free(x), free(lut), free(a), free(b);
    sstc_coded_matrix_free(&cm);
    sstc_coded_matrix_free(&small);
}
