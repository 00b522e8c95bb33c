#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/optim.h"

sstc_optim_config sstc_optim_defaults(sstc_optim_kind kind) {
    sstc_optim_config c = {0};
    c.kind = kind;
    c.lr = 1e-3f;
    c.momentum = 0.9f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    return c;
}

void sstc_optim_free(sstc_optimizer *o) {
    if (!o) return;
    for (int i = 0; i < o->nparams; i++) {
        if (o->m) free(o->m[i]);
        if (o->v) free(o->v[i]);
    }
    free(o->m);
    free(o->v);
    free(o->params);
    free(o);
}

sstc_optimizer *sstc_optim_create(const sstc_optim_config *cfg, sstc_tensor **params, int nparams) {
    if (!cfg || (!params && nparams > 0) || nparams < 0) {
        sstc_fail(SSTC_EINVAL, "optim_create: NULL config or parameter list");
        return NULL;
    }
    if (cfg->kind != SSTC_OPT_SGD && cfg->kind != SSTC_OPT_ADAM) {
        sstc_fail(SSTC_EINVAL, "optim_create: unknown optimizer kind %d", (int)cfg->kind);
        return NULL;
    }
    for (int i = 0; i < nparams; i++)
        if (!params[i] || !params[i]->grad) {
            sstc_fail(SSTC_EINVAL, "optim_create: parameter %d is NULL or has no gradient buffer", i);
            return NULL;
        }
    sstc_optimizer *o = calloc(1, sizeof *o);
    if (!o) goto oom;
    o->cfg = *cfg;
    o->nparams = nparams;
    o->params = calloc((size_t)nparams + 1, sizeof *o->params);
    o->m = calloc((size_t)nparams + 1, sizeof *o->m);
    if (cfg->kind == SSTC_OPT_ADAM) o->v = calloc((size_t)nparams + 1, sizeof *o->v);
    if (!o->params || !o->m || (cfg->kind == SSTC_OPT_ADAM && !o->v)) goto oom;
    for (int i = 0; i < nparams; i++) {
        o->params[i] = params[i];
        o->m[i] = calloc(params[i]->size, sizeof(float));
        if (!o->m[i]) goto oom;
        if (o->v && !(o->v[i] = calloc(params[i]->size, sizeof(float)))) goto oom;
    }
    return o;
oom:
    sstc_optim_free(o);
    sstc_fail(SSTC_ENOMEM, "optim_create: out of memory");
    return NULL;
}

/* One Adam update of n values. Compiled for AVX-512, AVX2 and the baseline,
 * picked at run time (sstc_optim_isa): the update is memory- and divide-bound,
 * and the baseline build only has 4-wide SSE. Every element sees the same
 * operations in every version (no contraction into FMA in ISO C mode), so
 * results do not depend on the machine; tests force each version the machine
 * has (sstc_optim_force_isa) and compare. */
#define ADAM_UPDATE(NAME, ATTR)                                                                                       \
    ATTR static void NAME(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, size_t n, \
                          float b1, float b2, float step, float isb2, float eps, float l2, float shrink) {             \
        _Pragma("omp simd") for (size_t i = 0; i < n; i++) {                                                          \
            float wi = w[i] * shrink;                                                                                  \
            float gi = g[i] + l2 * w[i];                                                                               \
            float mi = b1 * m[i] + (1 - b1) * gi;                                                                      \
            float vi = b2 * v[i] + (1 - b2) * gi * gi;                                                                 \
            m[i] = mi;                                                                                                 \
            v[i] = vi;                                                                                                 \
            w[i] = wi - step * mi / (sqrtf(vi) * isb2 + eps);                                                          \
        }                                                                                                              \
    }
ADAM_UPDATE(adam_update_base, )
ADAM_UPDATE(adam_update_avx2, __attribute__((target("avx2"))))
ADAM_UPDATE(adam_update_avx512, __attribute__((target("avx512f"))))

typedef void (*adam_fn)(float *restrict, const float *restrict, float *restrict, float *restrict, size_t, float, float,
                        float, float, float, float, float);

static int isa_cap = SSTC_ISA_AVX512;

void sstc_optim_force_isa(int level) { isa_cap = level; }

int sstc_optim_isa(void) {
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") ? SSTC_ISA_AVX512 : __builtin_cpu_supports("avx2") ? SSTC_ISA_AVX2
                                                                                                     : SSTC_ISA_BASE;
    }
    return have < isa_cap ? have : isa_cap;
}

static adam_fn adam_kernel(void) {
    switch (sstc_optim_isa()) {
    case SSTC_ISA_AVX512: return adam_update_avx512;
    case SSTC_ISA_AVX2: return adam_update_avx2;
    default: return adam_update_base;
    }
}

#define ADAM_CHUNK 16384

int sstc_optim_step(sstc_optimizer *o, float lr) { return sstc_optim_step_range(o, lr, 0, SIZE_MAX); }

int sstc_optim_step_range(sstc_optimizer *o, float lr, size_t lo, size_t hi) {
    if (!o) return sstc_fail(SSTC_EINVAL, "optim_step: NULL optimizer");
    o->step++;
    return sstc_optim_update_range(o, lr, lo, hi);
}

void sstc_optim_begin_step(sstc_optimizer *o) {
    if (o) o->step++;
}

int sstc_optim_update_param(sstc_optimizer *o, float lr, int p) {
    if (!o || p < 0 || p >= o->nparams) return sstc_fail(SSTC_EINVAL, "optim_update_param: bad parameter %d", p);
    size_t off = 0;
    for (int q = 0; q < p; q++) off += o->params[q]->size;
    return sstc_optim_update_range(o, lr, off, off + o->params[p]->size);
}

int sstc_optim_param_index(const sstc_optimizer *o, const sstc_tensor *t) {
    for (int p = 0; o && p < o->nparams; p++)
        if (o->params[p] == t) return p;
    return -1;
}

int sstc_optim_update_range(sstc_optimizer *o, float lr, size_t lo, size_t hi) {
    if (!o) return sstc_fail(SSTC_EINVAL, "optim_update: NULL optimizer");
    const sstc_optim_config *c = &o->cfg;
    double bc1 = 1.0 - pow(c->beta1, (double)o->step), bc2 = 1.0 - pow(c->beta2, (double)o->step);
    size_t off = 0;
    for (int p = 0; p < o->nparams; p++) {
        sstc_tensor *t = o->params[p];
        /* the part of this tensor inside [lo, hi) of all parameters in order */
        size_t a = lo > off ? lo - off : 0, b = hi - off < t->size ? hi - off : t->size;
        off += t->size;
        if (hi <= off - t->size || a >= b) continue;
        float *w = t->data + a, *g = t->grad + a, *m = o->m[p] + a;
        size_t n = b - a;
        float wd = t->ndim >= 2 ? c->weight_decay : 0.0f;
        if (c->kind == SSTC_OPT_SGD) {
            float mom = c->momentum;
#pragma omp parallel for if (n > 65536) schedule(static)
            for (size_t i = 0; i < n; i++) {
                float gi = g[i] + wd * w[i];
                m[i] = mom * m[i] + gi;
                w[i] -= lr * m[i];
            }
        } else {
            float *restrict v = o->v[p] + a;
            float *restrict wr = w, *restrict mr = m;
            const float *restrict gr = g;
            float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
            float step = (float)(lr / bc1), isb2 = (float)(1.0 / sqrt(bc2));
            /* L2 decay folds into the gradient; decoupled decay scales w first */
            float l2 = c->decoupled_wd ? 0.0f : wd, shrink = c->decoupled_wd ? 1.0f - lr * wd : 1.0f;
            size_t chunks = (n + ADAM_CHUNK - 1) / ADAM_CHUNK;
            adam_fn adam_update = adam_kernel();
#pragma omp parallel for if (n > 65536) schedule(static)
            for (size_t k = 0; k < chunks; k++) {
                size_t i0 = k * ADAM_CHUNK, len = n - i0 < ADAM_CHUNK ? n - i0 : ADAM_CHUNK;
                adam_update(wr + i0, gr + i0, mr + i0, v + i0, len, b1, b2, step, isb2, eps, l2, shrink);
            }
        }
    }
    return 0;
}

void sstc_optim_zero_grad(sstc_optimizer *o) {
    for (int p = 0; p < o->nparams; p++) sstc_zero_grad(o->params[p]);
}

float sstc_lr_at(const sstc_lr_schedule *s, double epoch) {
    double e = epoch < 0 ? 0 : epoch;
    switch (s->kind) {
    case SSTC_LR_STEP:
        return (float)(s->base_lr * pow(s->gamma, floor(e / (s->step_epochs > 0 ? s->step_epochs : 1))));
    case SSTC_LR_EXP:
        return (float)(s->base_lr * pow(s->gamma, floor(e)));
    case SSTC_LR_COSINE: {
        double t = s->total_epochs > 0 ? e / s->total_epochs : 1.0;
        if (t > 1) t = 1;
        return (float)(s->min_lr + (s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * t)));
    }
    case SSTC_LR_CONSTANT:
    default:
        return s->base_lr;
    }
}
