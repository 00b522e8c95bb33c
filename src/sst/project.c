/* Projection onto the (N,K) constraint, delta fitting, and the float N:M
 * sparsity baseline. Groups run along a row; the last group of a row may be
 * short (its padding is zero, and a zero is never kept, so the padding always
 * codes as 0). */
#include "sstc/sst.h"
#include "sstc/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int check_args(const char *fn, const void *W, int rows, int cols, int N, int K, const void *out) {
    if (!W || !out) return sstc_fail(SSTC_EINVAL, "%s: NULL argument", fn);
    if (rows < 0 || cols < 0) return sstc_fail(SSTC_EINVAL, "%s: negative shape %dx%d", fn, rows, cols);
    if (N < 1 || N > SSTC_MAX_N || K < 1 || K > N)
        return sstc_fail(SSTC_EINVAL, "%s: need 1 <= K <= N <= %d, got N=%d K=%d", fn, SSTC_MAX_N, N, K);
    return SSTC_OK;
}

/* keep[q] = 1 for the K entries of w[0..n) with largest |w|, ties to the lower
 * position. n <= N. */
static void topk(const float *w, int n, int K, uint8_t *keep) {
    memset(keep, 0, (size_t)n);
    if (K >= n) {
        memset(keep, 1, (size_t)n);
        return;
    }
    for (int k = 0; k < K; k++) {
        int best = -1;
        float ba = 0;
        for (int q = 0; q < n; q++) {
            if (keep[q]) continue;
            float a = fabsf(w[q]);
            if (best < 0 || a > ba) {
                best = q;
                ba = a;
            }
        }
        keep[best] = 1;
    }
}

/* Codes one group of n <= N real weights with threshold half = delta/2;
 * returns the number of non-zeros and adds sum |w||t| to *s. */
static int project_span(const float *w, int n, int K, float half, int8_t *t, double *s) {
    uint8_t keep[SSTC_MAX_N];
    topk(w, n, K, keep);
    int c = 0;
    for (int q = 0; q < n; q++) {
        float a = fabsf(w[q]);
        if (keep[q] && a > half) {
            t[q] = w[q] > 0 ? 1 : -1;
            *s += a;
            c++;
        } else {
            t[q] = 0;
        }
    }
    return c;
}

int sstc_project_group(const float *w, int N, int K, float delta, int8_t *t) {
    int rc = check_args("sstc_project_group", w, 1, N, N, K, t);
    if (rc) return rc;
    if (!(delta > 0) || !isfinite(delta))
        return sstc_fail(SSTC_EINVAL, "sstc_project_group: delta must be a positive finite number, got %g", delta);
    double s = 0;
    project_span(w, N, K, 0.5f * delta, t, &s);
    return SSTC_OK;
}

static int check_deltas(const char *fn, const float *delta, int rows, int per_row) {
    if (!delta) return sstc_fail(SSTC_EINVAL, "%s: delta is NULL", fn);
    int nd = per_row ? rows : 1;
    for (int r = 0; r < nd; r++)
        if (!(delta[r] > 0) || !isfinite(delta[r]))
            return sstc_fail(SSTC_EINVAL, "%s: delta[%d] must be a positive finite number, got %g", fn, r, delta[r]);
    return SSTC_OK;
}

/* Projects one row; returns its count of non-zeros, accumulates sum |w||t|. */
static long project_row(const float *w, int cols, int N, int K, float delta, int8_t *t, double *s) {
    long c = 0;
    float half = 0.5f * delta;
    for (int g = 0; g < cols; g += N) {
        int n = cols - g < N ? cols - g : N;
        c += project_span(w + g, n, K, half, t + g, s);
    }
    return c;
}

int sstc_project_matrix(const float *W, int rows, int cols, int N, int K, const float *delta, int per_row,
                        int8_t *T) {
    int rc = check_args("sstc_project_matrix", W, rows, cols, N, K, T);
    if (!rc) rc = check_deltas("sstc_project_matrix", delta, rows, per_row);
    if (rc) return rc;
    for (int r = 0; r < rows; r++) {
        double s = 0;
        project_row(W + (size_t)r * cols, cols, N, K, delta[per_row ? r : 0], T + (size_t)r * cols, &s);
    }
    return SSTC_OK;
}

int sstc_quant_error(const float *W, int rows, int cols, int N, int K, const float *delta, int per_row,
                     double *err) {
    int rc = check_args("sstc_quant_error", W, rows, cols, N, K, err);
    if (!rc) rc = check_deltas("sstc_quant_error", delta, rows, per_row);
    if (rc) return rc;
    int8_t t[SSTC_MAX_N];
    double e = 0;
    for (int r = 0; r < rows; r++) {
        const float *w = W + (size_t)r * cols;
        double d = delta[per_row ? r : 0];
        float half = 0.5f * delta[per_row ? r : 0];
        for (int g = 0; g < cols; g += N) {
            int n = cols - g < N ? cols - g : N;
            double s = 0;
            project_span(w + g, n, K, half, t, &s);
            for (int q = 0; q < n; q++) {
                double x = (double)w[g + q] - d * t[q];
                e += x * x;
            }
        }
    }
    *err = e;
    return SSTC_OK;
}

/* Rows [r0, r1) of W fitted together to one delta. */
static float fit_rows(const float *W, int r0, int r1, int cols, int N, int K, int report_row,
                      const sstc_fit_opts *o) {
    /* Start: every top-K non-zero kept, delta = their mean magnitude. */
    double w2 = 0, s = 0;
    long c = 0;
    uint8_t keep[SSTC_MAX_N];
    for (int r = r0; r < r1; r++) {
        const float *w = W + (size_t)r * cols;
        for (int g = 0; g < cols; g += N) {
            int n = cols - g < N ? cols - g : N;
            topk(w + g, n, K, keep);
            for (int q = 0; q < n; q++) {
                double a = fabs((double)w[g + q]);
                w2 += a * a;
                if (keep[q] && a > 0) {
                    s += a;
                    c++;
                }
            }
        }
    }
    if (c == 0) {
        if (o->on_iter) o->on_iter(o->ctx, report_row, 0, 1.0f, w2);
        return 1.0f;
    }
    float delta = (float)(s / c);
    double d = delta;
    if (o->on_iter) o->on_iter(o->ctx, report_row, 0, delta, w2 - 2 * d * s + d * d * c);

    int8_t t[SSTC_MAX_N];
    for (int it = 1; it <= o->max_iter; it++) {
        float half = 0.5f * delta;
        s = 0;
        c = 0;
        for (int r = r0; r < r1; r++) {
            const float *w = W + (size_t)r * cols;
            for (int g = 0; g < cols; g += N) {
                int n = cols - g < N ? cols - g : N;
                c += project_span(w + g, n, K, half, t, &s);
            }
        }
        /* c > 0: the largest kept |w| is >= the mean of the kept ones > delta/2. */
        float next = c ? (float)(s / c) : delta;
        d = next;
        if (o->on_iter) o->on_iter(o->ctx, report_row, it, next, w2 - 2 * d * s + d * d * c);
        int done = fabsf(next - delta) <= o->rel_tol * delta;
        delta = next;
        if (done) break;
    }
    return delta;
}

int sstc_fit_delta(const float *W, int rows, int cols, int N, int K, int per_row, float *delta,
                   const sstc_fit_opts *opts) {
    int rc = check_args("sstc_fit_delta", W, rows, cols, N, K, delta);
    if (rc) return rc;
    sstc_fit_opts o = {.max_iter = 100, .rel_tol = 1e-7};
    if (opts) {
        o = *opts;
        if (o.max_iter <= 0) o.max_iter = 100;
        if (!(o.rel_tol >= 0)) o.rel_tol = 1e-7;
    }
    size_t n = (size_t)rows * cols;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(W[i]))
            return sstc_fail(SSTC_ENUMERIC, "sstc_fit_delta: weight at row %zu column %zu is %g",
                             i / (size_t)cols, i % (size_t)cols, W[i]);
    if (per_row) {
        for (int r = 0; r < rows; r++) delta[r] = fit_rows(W, r, r + 1, cols, N, K, r, &o);
    } else {
        delta[0] = fit_rows(W, 0, rows, cols, N, K, -1, &o);
    }
    return SSTC_OK;
}

int sstc_nm_mask(const float *W, int rows, int cols, int N, int K, uint8_t *mask) {
    int rc = check_args("sstc_nm_mask", W, rows, cols, N, K, mask);
    if (rc) return rc;
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < cols; g += N) {
            size_t off = (size_t)r * cols + g;
            topk(W + off, cols - g < N ? cols - g : N, K, mask + off);
        }
    return SSTC_OK;
}

int sstc_nm_sparsify(const float *W, int rows, int cols, int N, int K, float *out) {
    int rc = check_args("sstc_nm_sparsify", W, rows, cols, N, K, out);
    if (rc) return rc;
    uint8_t keep[SSTC_MAX_N];
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < cols; g += N) {
            size_t off = (size_t)r * cols + g;
            int n = cols - g < N ? cols - g : N;
            topk(W + off, n, K, keep);
            for (int q = 0; q < n; q++) out[off + q] = keep[q] ? W[off + q] : 0.0f;
        }
    return SSTC_OK;
}
