/* Projection onto the (N,K) constraint, delta fitting and float N:M sparsity. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sst_helpers.h"

static double group_err(const float *w, const int8_t *t, int N, float delta) {
    double e = 0;
    for (int q = 0; q < N; q++) {
        double x = (double)w[q] - (double)delta * t[q];
        e += x * x;
    }
    return e;
}

Test(sst_project, group_projection_matches_brute_force_over_the_table) {
    const int nk[][2] = {{4, 1}, {4, 2}, {4, 3}, {4, 4}, {6, 1}, {6, 2}, {6, 3}};
    sstc_rng r;
    sstc_rng_seed(&r, 1);
    for (size_t c = 0; c < sizeof nk / sizeof nk[0]; c++) {
        int N = nk[c][0], K = nk[c][1];
        sstc_code_table *tb;
        cr_assert_eq(sstc_code_table_create(N, K, &tb), SSTC_OK);
        int same = 0;
        for (int it = 0; it < 3000; it++) {
            float w[6];
            th_fill(&r, w, (size_t)N, it % 2, 1.0f);
            if (it % 7 == 0) w[1] = -w[0];           /* ties in magnitude */
            if (it % 11 == 0) w[N - 1] = 0;          /* exact zeros */
            float delta = 0.05f + 2.5f * sstc_rng_uniform(&r);
            if (it % 13 == 0) delta = 2 * fabsf(w[2]); /* |w| exactly at the threshold */
            int8_t t[6];
            cr_assert_eq(sstc_project_group(w, N, K, delta, t), SSTC_OK);
            cr_assert_geq(sstc_code_encode(tb, t), 0, "the projection is a valid (%d,%d) code", N, K);
            double best = INFINITY;
            uint32_t arg = 0, nbest = 0;
            for (uint32_t i = 0; i < tb->M; i++) {
                double e = group_err(w, tb->dense + (size_t)i * N, N, delta);
                if (e < best - 1e-12) best = e, arg = i, nbest = 1;
                else if (fabs(e - best) <= 1e-12) nbest++;
            }
            double mine = group_err(w, t, N, delta);
            cr_assert_leq(fabs(mine - best), 1e-9 * (1 + best), "(%d,%d) it %d: error %g, brute force %g", N, K, it,
                          mine, best);
            if (nbest == 1) {
                cr_assert_eq(memcmp(t, tb->dense + (size_t)arg * N, (size_t)N), 0, "(%d,%d) it %d: other code", N, K, it);
                same++;
            }
        }
        cr_assert_gt(same, 2000, "most groups have a unique best code");
        sstc_code_table_free(tb);
    }
}

Test(sst_project, matrix_projection_pads_the_last_group_with_zeros) {
    sstc_rng r;
    sstc_rng_seed(&r, 2);
    int rows = 5, cols = 21, N = 8, K = 2;
    float W[5 * 21], delta = 0.8f;
    th_fill(&r, W, sizeof W / sizeof W[0], 0, 1.0f);
    int8_t T[5 * 21];
    cr_assert_eq(sstc_project_matrix(W, rows, cols, N, K, &delta, 0, T), SSTC_OK);
    for (int row = 0; row < rows; row++)
        for (int g = 0; g < cols; g += N) {
            float w[8] = {0};
            int n = cols - g < N ? cols - g : N;
            memcpy(w, W + row * cols + g, (size_t)n * sizeof(float));
            int8_t t[8];
            sstc_project_group(w, N, K, delta, t);
            cr_assert_eq(memcmp(t, T + row * cols + g, (size_t)n), 0, "row %d group %d", row, g / N);
            for (int q = n; q < N; q++) cr_assert_eq(t[q], 0, "padding codes as 0");
        }
}

Test(sst_project, plain_ternary_is_k_equal_n_thresholding) {
    sstc_rng r;
    sstc_rng_seed(&r, 3);
    float W[300], delta = 0.7f;
    th_fill(&r, W, 300, 0, 1.0f);
    int8_t T[300];
    cr_assert_eq(sstc_project_matrix(W, 10, 30, 16, 16, &delta, 0, T), SSTC_OK);
    for (int i = 0; i < 300; i++) {
        int8_t want = fabsf(W[i]) > delta / 2 ? (W[i] > 0 ? 1 : -1) : 0;
        cr_assert_eq(T[i], want, "weight %d = %g", i, W[i]);
    }
}

typedef struct {
    int n, row;
    float delta[512];
    double err[512];
    int rows_seen[64];
} trace;

static void record(void *ctx, int row, int iter, float delta, double err) {
    trace *t = ctx;
    if (row != t->row || iter == 0) {
        t->n = 0;
        t->row = row;
    }
    cr_assert_eq(iter, t->n, "iterations are numbered from 0");
    if (row >= 0 && row < 64) t->rows_seen[row] = 1;
    /* each row's trace must not increase */
    if (t->n > 0)
        cr_assert_leq(err, t->err[t->n - 1] * (1 + 1e-12) + 1e-30, "row %d iter %d: error rose %.17g -> %.17g", row,
                      iter, t->err[t->n - 1], err);
    t->delta[t->n] = delta;
    t->err[t->n++] = err;
}

static const int fit_nk[][2] = {{4, 1}, {8, 1}, {8, 2}, {8, 3}, {16, 2}, {16, 4}, {16, 16}, {1, 1}};

Test(sst_project, delta_fit_never_increases_the_error) {
    sstc_rng r;
    sstc_rng_seed(&r, 4);
    int rows = 48, cols = 200;
    float *W = malloc(sizeof(float) * rows * cols);
    for (size_t c = 0; c < sizeof fit_nk / sizeof fit_nk[0]; c++)
        for (int dist = 0; dist < 2; dist++)
            for (int per_row = 0; per_row < 2; per_row++) {
                th_fill(&r, W, (size_t)rows * cols, dist, 0.05f);
                trace tr = {.row = -2};
                sstc_fit_opts o = {.on_iter = record, .ctx = &tr};
                float delta[48];
                cr_assert_eq(sstc_fit_delta(W, rows, cols, fit_nk[c][0], fit_nk[c][1], per_row, delta, &o), SSTC_OK);
                cr_assert_geq(tr.n, 2, "at least one step after the start");
                if (per_row)
                    for (int row = 0; row < rows; row++) cr_assert(tr.rows_seen[row], "row %d was fitted", row);
                /* the last reported error is the error of the returned delta */
                double e;
                cr_assert_eq(sstc_quant_error(W, rows, cols, fit_nk[c][0], fit_nk[c][1], delta, per_row, &e), SSTC_OK);
                if (!per_row) {
                    cr_assert_eq(tr.delta[tr.n - 1], delta[0]);
                    cr_assert_leq(fabs(e - tr.err[tr.n - 1]), 1e-9 * e, "%g vs %g", e, tr.err[tr.n - 1]);
                }
            }
    free(W);
}

/* min over a fine grid of delta of ||W - delta*T(W,delta)||^2 */
static double grid_best(const float *W, int rows, int cols, int N, int K, double rms) {
    double best = INFINITY;
    for (int i = 1; i <= 600; i++) {
        float d = (float)(rms * 4.0 * i / 600);
        double e;
        sstc_quant_error(W, rows, cols, N, K, &d, 0, &e);
        if (e < best) best = e;
    }
    return best;
}

Test(sst_project, delta_fit_beats_a_grid_search) {
    sstc_rng r;
    sstc_rng_seed(&r, 5);
    int rows = 32, cols = 256;
    float *W = malloc(sizeof(float) * rows * cols);
    for (size_t c = 0; c < sizeof fit_nk / sizeof fit_nk[0]; c++)
        for (int dist = 0; dist < 2; dist++) {
            int N = fit_nk[c][0], K = fit_nk[c][1];
            th_fill(&r, W, (size_t)rows * cols, dist, 0.3f);
            float delta;
            cr_assert_eq(sstc_fit_delta(W, rows, cols, N, K, 0, &delta, NULL), SSTC_OK);
            double e, g = grid_best(W, rows, cols, N, K, 0.3);
            sstc_quant_error(W, rows, cols, N, K, &delta, 0, &e);
            cr_assert_leq(e, g * (1 + 1e-4), "(%d,%d) %s: fit %g, grid %g", N, K, dist ? "laplace" : "gauss", e, g);
        }
    free(W);
}

Test(sst_project, per_row_fit_equals_fitting_each_row_alone) {
    sstc_rng r;
    sstc_rng_seed(&r, 6);
    int rows = 6, cols = 40;
    float W[6 * 40];
    for (int row = 0; row < rows; row++) th_fill(&r, W + row * cols, (size_t)cols, 0, 0.01f * (1 << row));
    float d[6], one;
    cr_assert_eq(sstc_fit_delta(W, rows, cols, 8, 2, 1, d, NULL), SSTC_OK);
    for (int row = 0; row < rows; row++) {
        cr_assert_eq(sstc_fit_delta(W + row * cols, 1, cols, 8, 2, 0, &one, NULL), SSTC_OK);
        cr_assert_eq(d[row], one, "row %d", row);
        if (row) cr_assert_gt(d[row], d[row - 1], "rows scaled up get larger steps");
    }
    double e_row, e_layer;
    float dl;
    sstc_fit_delta(W, rows, cols, 8, 2, 0, &dl, NULL);
    sstc_quant_error(W, rows, cols, 8, 2, d, 1, &e_row);
    sstc_quant_error(W, rows, cols, 8, 2, &dl, 0, &e_layer);
    cr_assert_lt(e_row, e_layer, "a delta per row fits rows of different scales better");
}

Test(sst_project, fit_handles_zero_rows_and_rejects_nan) {
    float W[2 * 16] = {0};
    float d[2];
    cr_assert_eq(sstc_fit_delta(W, 2, 16, 8, 2, 1, d, NULL), SSTC_OK);
    cr_assert_eq(d[0], 1.0f, "an all-zero row gets delta 1");
    W[20] = 0.5f;
    cr_assert_eq(sstc_fit_delta(W, 2, 16, 8, 2, 1, d, NULL), SSTC_OK);
    cr_assert_eq(d[0], 1.0f);
    cr_assert_float_eq(d[1], 0.5f, 1e-7, "a single weight is coded exactly");
    W[3] = NAN;
    cr_assert_eq(sstc_fit_delta(W, 2, 16, 8, 2, 0, d, NULL), SSTC_ENUMERIC);
    cr_assert_neq(strstr(sstc_errmsg(), "row 0 column 3"), NULL, "%s", sstc_errmsg());
}

Test(sst_project, invalid_arguments_are_rejected) {
    float w[8] = {1, 2, 3, 4, 5, 6, 7, 8}, bad = 0, ok = 1;
    int8_t t[8];
    cr_assert_eq(sstc_project_group(w, 8, 2, 0.0f, t), SSTC_EINVAL);
    cr_assert_eq(sstc_project_group(w, 8, 2, -1.0f, t), SSTC_EINVAL);
    cr_assert_eq(sstc_project_group(w, 8, 9, 1.0f, t), SSTC_EINVAL);
    cr_assert_eq(sstc_project_group(w, 17, 2, 1.0f, t), SSTC_EINVAL);
    cr_assert_eq(sstc_project_matrix(w, 1, 8, 8, 2, &bad, 0, t), SSTC_EINVAL);
    cr_assert_eq(sstc_project_matrix(w, 1, 8, 8, 2, &ok, 0, NULL), SSTC_EINVAL);
    cr_assert_eq(sstc_fit_delta(w, 1, 8, 0, 0, 0, &ok, NULL), SSTC_EINVAL);
}

Test(sst_project, nm_sparsity_keeps_the_k_largest_float_values) {
    sstc_rng r;
    sstc_rng_seed(&r, 8);
    int rows = 7, cols = 37, N = 8, K = 3;
    float W[7 * 37], S[7 * 37];
    uint8_t mask[7 * 37];
    th_fill(&r, W, sizeof W / sizeof W[0], 1, 1.0f);
    cr_assert_eq(sstc_nm_sparsify(W, rows, cols, N, K, S), SSTC_OK);
    cr_assert_eq(sstc_nm_mask(W, rows, cols, N, K, mask), SSTC_OK);
    for (int row = 0; row < rows; row++)
        for (int g = 0; g < cols; g += N) {
            int n = cols - g < N ? cols - g : N, kept = 0;
            float min_kept = INFINITY, max_dropped = 0;
            for (int q = 0; q < n; q++) {
                int i = row * cols + g + q;
                cr_assert_eq(mask[i] != 0, S[i] != 0, "mask and values agree at %d", i);
                if (mask[i]) {
                    kept++;
                    cr_assert_eq(S[i], W[i], "kept weights keep their float value");
                    if (fabsf(W[i]) < min_kept) min_kept = fabsf(W[i]);
                } else if (fabsf(W[i]) > max_dropped) {
                    max_dropped = fabsf(W[i]);
                }
            }
            cr_assert_eq(kept, K < n ? K : n, "row %d group %d keeps K", row, g / N);
            cr_assert_geq(min_kept, max_dropped);
        }
    float tie[8] = {0.5f, -1.0f, 0.2f, 1.0f, 0.0f, -1.0f, 0.1f, 0.3f}, tout[8];
    cr_assert_eq(sstc_nm_sparsify(tie, 1, 8, 8, 2, tout), SSTC_OK);
    float want[8] = {0, -1.0f, 0, 1.0f, 0, 0, 0, 0};
    cr_assert_eq(memcmp(tout, want, sizeof want), 0, "ties in |w| go to the lower position");
    float inplace[7 * 37];
    memcpy(inplace, W, sizeof W);
    cr_assert_eq(sstc_nm_sparsify(inplace, rows, cols, N, K, inplace), SSTC_OK);
    cr_assert_eq(memcmp(inplace, S, sizeof S), 0, "in place gives the same result");
}

/* The threshold is strict: a kept weight of exactly delta/2 codes as 0 (both
 * the group and the matrix projection), just above it as +-1. */
Test(sst_project, a_weight_of_exactly_half_delta_codes_as_zero) {
    float w[8] = {0.5f, -0.5f, 0, 0, 0, 0, 0, 0};
    int8_t t[8];
    cr_assert_eq(sstc_project_group(w, 8, 2, 1.0f, t), SSTC_OK);
    cr_assert(t[0] == 0 && t[1] == 0, "|w| = delta/2 exactly: t = %d %d", t[0], t[1]);
    w[0] = nextafterf(0.5f, 1.0f), w[1] = -nextafterf(0.5f, 1.0f);
    cr_assert_eq(sstc_project_group(w, 8, 2, 1.0f, t), SSTC_OK);
    cr_assert(t[0] == 1 && t[1] == -1, "just above delta/2: t = %d %d", t[0], t[1]);
    float W[2 * 5] = {0.25f, -0.25f, 0.3f, 0, 0, 0.2f, -0.25f, 0, 0, 0};
    int8_t T[10];
    float d = 0.5f;
    cr_assert_eq(sstc_project_matrix(W, 2, 5, 8, 2, &d, 0, T), SSTC_OK, "%s", sstc_errmsg());
    int8_t want[10] = {0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(memcmp(T, want, 10), 0, "row 0: %d %d %d, row 1: %d %d", T[0], T[1], T[2], T[5], T[6]);
}

/* The fit starts where docs/method.md says: every top-K weight kept, delta =
 * their mean magnitude (the first value reported, iteration 0). */
Test(sst_project, the_delta_fit_starts_at_the_mean_magnitude_of_the_kept_weights) {
    float W[2 * 8] = {0.9f, -0.1f, 0.2f, 0, 0, 0, 0, 0, /* top 2: 0.9, 0.2 */
                      0, 0, 0, -0.4f, 0.3f, 0.35f, 0, 0}; /* top 2: 0.4, 0.35 */
    trace tr = {.row = -2};
    sstc_fit_opts o = {.on_iter = record, .ctx = &tr};
    float delta;
    cr_assert_eq(sstc_fit_delta(W, 2, 8, 8, 2, 0, &delta, &o), SSTC_OK);
    cr_assert_geq(tr.n, 1);
    double want = (0.9 + 0.2 + 0.4 + 0.35) / 4;
    cr_assert(fabs(tr.delta[0] - want) < 1e-6, "start %g, expected %g", tr.delta[0], want);
}
