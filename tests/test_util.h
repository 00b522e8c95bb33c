/* Helpers shared by the test files: fixture loading, random tensors and a
 * finite-difference gradient checker. Header-only so each test file stays
 * self-contained. */
#ifndef SSTC_TEST_UTIL_H
#define SSTC_TEST_UTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/tensor.h"

/* ---- fixtures (format described in tests/fixtures/make_fixtures.py) ---- */

typedef struct {
    char name[32];
    int ndim, shape[4];
    size_t n;
    float *v;
} fx_array;

typedef struct {
    int count;
    fx_array a[48];
} fx_file;

static inline void fx_load(fx_file *f, const char *case_name) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/%s.txt", case_name);
    FILE *fp = fopen(path, "r");
    cr_assert_not_null(fp, "cannot open fixture %s (run the tests from the repository root)", path);
    memset(f, 0, sizeof *f);
    while (f->count < 48) {
        fx_array *a = &f->a[f->count];
        if (fscanf(fp, "%31s %d", a->name, &a->ndim) != 2) break;
        a->n = 1;
        for (int i = 0; i < a->ndim; i++) {
            cr_assert_eq(fscanf(fp, "%d", &a->shape[i]), 1);
            a->n *= (size_t)a->shape[i];
        }
        a->v = malloc(a->n * sizeof(float));
        for (size_t i = 0; i < a->n; i++) cr_assert_eq(fscanf(fp, "%f", &a->v[i]), 1, "%s: short data", path);
        f->count++;
    }
    fclose(fp);
    cr_assert_gt(f->count, 0, "fixture %s is empty", path);
}

static inline fx_array *fx_get(fx_file *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (!strcmp(f->a[i].name, name)) return &f->a[i];
    cr_assert_fail("fixture has no array '%s'", name);
    return NULL;
}

static inline void fx_free(fx_file *f) {
    for (int i = 0; i < f->count; i++) free(f->a[i].v);
}

/* A tensor in ctx holding a fixture array's values. */
static inline sstc_tensor *fx_tensor(sstc_ctx *ctx, fx_array *a, int param) {
    sstc_tensor *t = param ? sstc_param_new(ctx, a->ndim, a->shape) : sstc_tensor_new(ctx, a->ndim, a->shape);
    cr_assert_not_null(t);
    memcpy(t->data, a->v, a->n * sizeof(float));
    return t;
}

/* |got - want| <= atol + rtol*|want| for every element. */
static inline void expect_close(const float *got, const float *want, size_t n, float atol, float rtol,
                                const char *what) {
    for (size_t i = 0; i < n; i++) {
        float tol = atol + rtol * fabsf(want[i]);
        cr_expect(fabsf(got[i] - want[i]) <= tol, "%s[%zu]: got %.7g, want %.7g (tol %.3g)", what, i,
                  (double)got[i], (double)want[i], (double)tol);
        if (fabsf(got[i] - want[i]) > tol) return; /* one message per array is enough */
    }
}

/* ---- random data ------------------------------------------------------ */

static inline void fill_normal(sstc_tensor *t, sstc_rng *r, float scale) {
    for (size_t i = 0; i < t->size; i++) t->data[i] = scale * sstc_rng_normal(r);
}

/* Values bounded away from 0 (for ReLU kinks) and from each other in general. */
static inline void fill_away_from_zero(sstc_tensor *t, sstc_rng *r) {
    for (size_t i = 0; i < t->size; i++) {
        float v = 0.2f + sstc_rng_uniform(r);
        t->data[i] = sstc_rng_uniform(r) < 0.5f ? -v : v;
    }
}

/* ---- finite-difference gradient check ---------------------------------
 *
 * The engine computes in float32, so the check uses central differences on
 * L = sum(f(inputs) * R) with a fixed random R, evaluated in float32 but summed
 * in double. With step h = 1e-2 the truncation error is O(h^2 * f''') ~ 1e-4
 * for our O(1) smooth test functions, and the rounding error is about
 * 1e-7 * |L| / h ~ 1e-5 * |L|; a tolerance of 2e-3 absolute + 2e-2 relative
 * sits well above both while a wrong rule (a missing term, a transposed
 * index) is off by O(1). Kinks (ReLU at 0, max-pool ties) are avoided by the
 * choice of inputs in the op tests; in whole-network tests a step of 1e-2 can
 * still cross one, so an element that disagrees is measured again with a step
 * of 1e-3 (rounding error then ~1e-4 * |L|, still under the tolerance), and
 * only a disagreement at both steps fails. */

typedef sstc_tensor *(*gc_forward)(sstc_ctx *ctx, sstc_tensor **in, void *user);

static inline double gc_loss(sstc_ctx *ctx, gc_forward f, sstc_tensor **in, void *user, const float *R,
                             size_t rn) {
    sstc_tensor *y = f(ctx, in, user);
    cr_assert_not_null(y, "forward failed: %s", sstc_errmsg());
    cr_assert_eq(y->size, rn);
    double s = 0;
    for (size_t i = 0; i < rn; i++) s += (double)y->data[i] * R[i];
    return s;
}

/* in[0..nin-1] are tensors (params, so they have grads) living outside ctx. */
static inline void gradcheck(gc_forward f, sstc_tensor **in, int nin, void *user, const char *what) {
    sstc_ctx *ctx = sstc_ctx_create(1 << 20);
    sstc_rng r;
    sstc_rng_seed(&r, 99);
    /* analytic */
    sstc_tensor *y = f(ctx, in, user);
    cr_assert_not_null(y, "%s: forward failed: %s", what, sstc_errmsg());
    size_t rn = y->size;
    float *R = malloc(rn * sizeof(float));
    for (size_t i = 0; i < rn; i++) R[i] = sstc_rng_normal(&r);
    sstc_tensor *Rt = sstc_tensor_wrap(ctx, R, y->ndim, y->shape);
    sstc_tensor *loss = sstc_sum(ctx, sstc_mul(ctx, y, Rt));
    for (int k = 0; k < nin; k++) sstc_zero_grad(in[k]);
    cr_assert_eq(sstc_backward(ctx, loss), 0, "%s: backward failed: %s", what, sstc_errmsg());
    const float h = 1e-2f;
    for (int k = 0; k < nin; k++) {
        sstc_tensor *t = in[k];
        float *analytic = malloc(t->size * sizeof(float));
        memcpy(analytic, t->grad, t->size * sizeof(float));
        for (size_t i = 0; i < t->size; i++) {
            float save = t->data[i];
            t->data[i] = save + h;
            sstc_ctx_reset(ctx);
            double lp = gc_loss(ctx, f, in, user, R, rn);
            t->data[i] = save - h;
            sstc_ctx_reset(ctx);
            double lm = gc_loss(ctx, f, in, user, R, rn);
            t->data[i] = save;
            double num = (lp - lm) / (2.0 * h);
            double tol = 2e-3 + 2e-2 * fabs(num);
            if (fabs(num - analytic[i]) > tol) {
                const float h2 = 1e-3f;
                t->data[i] = save + h2;
                sstc_ctx_reset(ctx);
                lp = gc_loss(ctx, f, in, user, R, rn);
                t->data[i] = save - h2;
                sstc_ctx_reset(ctx);
                lm = gc_loss(ctx, f, in, user, R, rn);
                t->data[i] = save;
                num = (lp - lm) / (2.0 * h2);
                tol = 2e-3 + 2e-2 * fabs(num);
            }
            cr_expect(fabs(num - analytic[i]) <= tol, "%s: input %d element %zu: analytic %.6g, numeric %.6g",
                      what, k, i, (double)analytic[i], num);
            if (fabs(num - analytic[i]) > tol) break;
        }
        free(analytic);
    }
    free(R);
    sstc_ctx_free(ctx);
}

#endif
