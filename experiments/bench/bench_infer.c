/* Inference benchmark: coded FC layers against OpenBLAS on the equivalent
 * float weights (the decoded delta*t values), and a whole MNIST MLP.
 *
 *   build/bench_infer [--threads N] [--rounds R] [--model MODEL.sst] [--only layers|network|cnn] [--passive]
 *
 * For (8,2), (16,2) and plain ternary, a 1024x1024 and a 4096x4096 layer at
 * batch 1 and 64: the engine's coded kernel (look-up tables at batch 1, the
 * direct kernel at batch 64, per-output affine included) against cblas_sgemv
 * / cblas_sgemm. One machine-readable line per case:
 *   bench layer=4096x4096 batch=1 code=8,2 coded_us=... float_us=... speedup=...
 *         coded_bytes=... float_bytes=...
 * (times are medians over R rounds; bytes are the resident weights). Then the
 * MLP 784-1024-1024-1024-10 with every layer (8,2)-coded at batch 1, coded
 * against the same network with float layers (sgemv), in images/s; --model
 * runs a trained .sst instead of random codes (at batch 1 and 64). Then the
 * CIFAR-10 network of configs/cifar10_cnn.ini with every convolution and FC
 * layer (8,2)-coded, against its float twin (im2col + sgemm), at batch 1 and
 * 64 (--only cnn: this one alone).
 *
 * OpenMP's waiting policy decides the small layers, where a parallel region
 * lasts a few microseconds: unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set,
 * the benchmark restarts itself with what the sstc command line runs with
 * (GOMP_SPINCOUNT=10000: idle threads spin briefly, then sleep), so that the
 * figures are what `sstc infer` gets. --passive restarts it with
 * OMP_WAIT_POLICY=passive instead (every region wakes sleeping threads): on a
 * machine whose cores are busy with other jobs, spinning threads can wait
 * for a descheduled partner; under it both sides pay a wake-up per region. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "startup.h"
#include "sstc/error.h"
#include "sstc/infer.h"
#include "sstc/rng.h"
#include "sstc/sst.h"
#include "sstc/tensor.h"

/* src/infer/internal.h (whose names clash with tensor.h's): 0 runs the
 * one-vector float product of (8,K) layers on the sign planes instead of
 * the pair kernel. */
void sstc_coded_use_pairs(int on);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "bench_infer: %s: %s\n", what, sstc_errmsg());
    exit(1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A coded (or float) FC layer from Gaussian weights: delta fitted per layer,
 * codes projected as the compression does; plain ternary is (1,1). */
static void fill_fc(sstc_sst_layer *L, sstc_rng *r, int out, int in, int N, int K, int coded) {
    *L = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = out, .in = in, .coded = 1, .N = N, .K = K};
    if (sstc_sst_layer_alloc(L)) die("alloc");
    size_t n = (size_t)out * in;
    float *W = malloc(n * sizeof(float));
    int8_t *T = malloc(n);
    float s = 1.0f / sqrtf((float)in);
    for (size_t i = 0; i < n; i++) W[i] = s * sstc_rng_normal(r);
    if (sstc_fit_delta(W, out, in, N, K, 0, L->delta, NULL) ||
        sstc_project_matrix(W, out, in, N, K, L->delta, 0, T) || sstc_sst_layer_set_ternary(L, T))
        die("coding");
    for (int o = 0; o < out; o++) L->scale[o] = L->delta[0], L->bias[o] = 0.01f * sstc_rng_normal(r);
    if (!coded) {
        /* the same function with float weights delta*t */
        float *bias = malloc((size_t)out * sizeof(float));
        memcpy(bias, L->bias, (size_t)out * sizeof(float));
        float d = L->delta[0];
        *L = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = out, .in = in};
        if (sstc_sst_layer_alloc(L)) die("alloc");
        for (size_t i = 0; i < n; i++) L->weight[i] = d * (float)T[i];
        memcpy(L->bias, bias, (size_t)out * sizeof(float));
        free(bias);
    }
    free(W);
    free(T);
}

/* Median time in microseconds of fn over `rounds` rounds of enough calls to
 * take ~20 ms each. */
typedef void (*bench_fn)(void *);
static double time_us(bench_fn fn, void *ctx, int rounds) {
    fn(ctx); /* warm up */
    double t0 = now();
    fn(ctx);
    double one = now() - t0;
    int reps = one > 0.02 ? 1 : (int)(0.02 / (one > 1e-7 ? one : 1e-7)) + 1;
    double *t = malloc((size_t)rounds * sizeof(double));
    for (int k = 0; k < rounds; k++) {
        t0 = now();
        for (int i = 0; i < reps; i++) fn(ctx);
        t[k] = (now() - t0) / reps * 1e6;
    }
    qsort(t, (size_t)rounds, sizeof(double), cmp_double);
    double med = t[rounds / 2];
    free(t);
    return med;
}

typedef struct {
    sstc_engine *e;
    const float *x;
    float *y;
    int batch;
    /* float baseline */
    const float *W;
    int rows, cols;
} layer_ctx;

static void run_engine(void *p) {
    layer_ctx *c = p;
    if (sstc_engine_forward(c->e, c->x, c->batch, c->y)) die("forward");
}
static void run_blas(void *p) {
    layer_ctx *c = p;
    if (c->batch == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, c->rows, c->cols, 1.0f, c->W, c->cols, c->x, 1, 0.0f, c->y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->batch, c->rows, c->cols, 1.0f, c->x, c->cols, c->W,
                    c->cols, 0.0f, c->y, c->rows);
}

static void bench_layer(sstc_rng *r, int n, int N, int K, const char *code, int rounds) {
    sstc_sst_model *m = sstc_sst_model_new(1);
    m->in_c = n, m->in_h = m->in_w = 1, m->num_classes = n;
    fill_fc(&m->layers[0], r, n, n, N, K, 1);
    sstc_engine *e;
    if (sstc_engine_create(m, &e)) die("engine");
    sstc_engine_info info;
    sstc_engine_get_info(e, &info);
    /* the equivalent float weights */
    size_t nn = (size_t)n * n;
    int8_t *T = malloc(nn);
    float *W = malloc(nn * sizeof(float));
    if (sstc_sst_layer_ternary(&m->layers[0], T)) die("decode");
    for (size_t i = 0; i < nn; i++) W[i] = m->layers[0].delta[0] * (float)T[i];
    free(T);
    const int batches[] = {1, 64};
    float *x = malloc((size_t)64 * n * sizeof(float)), *y = malloc((size_t)64 * n * sizeof(float)),
          *yf = malloc((size_t)64 * n * sizeof(float));
    for (size_t i = 0; i < (size_t)64 * n; i++) x[i] = sstc_rng_normal(r);
    for (int bi = 0; bi < 2; bi++) {
        int B = batches[bi];
        layer_ctx c = {e, x, y, B, W, n, n};
        double coded = time_us(run_engine, &c, rounds);
        c.y = yf;
        double flt = time_us(run_blas, &c, rounds);
        /* same function: y = scale*acc + bias = delta*T x + bias */
        double err = 0, mag = 0;
        for (int b = 0; b < B; b++)
            for (int o = 0; o < n; o++) {
                double ref = yf[(size_t)b * n + o] + m->layers[0].bias[o];
                err = fmax(err, fabs(y[(size_t)b * n + o] - ref));
                mag = fmax(mag, fabs(ref));
            }
        if (err > 1e-4 * mag) fprintf(stderr, "bench_infer: WARNING coded and float differ by %g (max %g)\n", err, mag);
        printf("bench layer=%dx%d batch=%d code=%s coded_us=%.1f float_us=%.1f speedup=%.2f coded_bytes=%zu "
               "float_bytes=%zu\n",
               n, n, B, code, coded, flt, flt / coded, info.coded_index_bytes, nn * sizeof(float));
        if (B == 1 && N == 8 && K <= 2) {
            /* the sign-plane kernel on the same layer, for the record (the
             * pair kernel replaces it for these codes where AVX-512 runs) */
            sstc_coded_use_pairs(0);
            c.y = y;
            double planes = time_us(run_engine, &c, rounds);
            sstc_coded_use_pairs(1);
            printf("bench layer=%dx%d batch=1 code=%s-planes coded_us=%.1f float_us=%.1f speedup=%.2f\n", n, n, code,
                   planes, flt, flt / planes);
        }
        fflush(stdout);
    }
    free(x), free(y), free(yf), free(W);
    sstc_engine_free(e);
    sstc_sst_free(m);
}

/* A coded (or float) 3x3 stride-1 pad-1 convolution, as fill_fc does. */
static void fill_conv(sstc_sst_layer *L, sstc_rng *r, int out, int in, int coded) {
    *L = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = out, .in = in, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
                          .coded = 1, .N = 8, .K = 2};
    if (sstc_sst_layer_alloc(L)) die("alloc");
    int fan = in * 9;
    size_t n = (size_t)out * fan;
    float *W = malloc(n * sizeof(float));
    int8_t *T = malloc(n);
    float s = 1.0f / sqrtf((float)fan);
    for (size_t i = 0; i < n; i++) W[i] = s * sstc_rng_normal(r);
    if (sstc_fit_delta(W, out, fan, 8, 2, 0, L->delta, NULL) || sstc_project_matrix(W, out, fan, 8, 2, L->delta, 0, T) ||
        sstc_sst_layer_set_ternary(L, T))
        die("coding");
    for (int o = 0; o < out; o++) L->scale[o] = L->delta[0], L->bias[o] = 0.01f * sstc_rng_normal(r);
    if (!coded) {
        float *bias = malloc((size_t)out * sizeof(float));
        memcpy(bias, L->bias, (size_t)out * sizeof(float));
        float d = L->delta[0];
        *L = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = out, .in = in, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
        if (sstc_sst_layer_alloc(L)) die("alloc");
        for (size_t i = 0; i < n; i++) L->weight[i] = d * (float)T[i];
        memcpy(L->bias, bias, (size_t)out * sizeof(float));
        free(bias);
    }
    free(W);
    free(T);
}

/* The network of configs/cifar10_cnn.ini as its .sst file has it, every
 * convolution and FC layer (8,2)-coded: per block conv, maxpool, batch norm
 * (a record of its own: a pool stands between it and the convolution), ReLU,
 * then conv and ReLU (that batch norm folded); a last pool, FC 1024, ReLU
 * (folded batch norm), FC 10. */
static sstc_sst_model *cifar_cnn(sstc_rng *r, int coded) {
    sstc_sst_model *m = sstc_sst_model_new(22);
    m->in_c = 3, m->in_h = m->in_w = 32, m->num_classes = 10;
    for (int c = 0; c < 3; c++) m->in_mean[c] = 0.47f, m->in_std[c] = 0.25f;
    const int width[] = {64, 128, 256};
    int i = 0, in = 3;
    for (int b = 0; b < 3; b++) {
        int w = width[b];
        fill_conv(&m->layers[i++], r, w, in, coded);
        m->layers[i++] = (sstc_sst_layer){.kind = SSTC_SST_MAXPOOL, .kh = 2, .kw = 2, .stride = 2};
        sstc_sst_layer *bn = &m->layers[i++];
        *bn = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = w};
        if (sstc_sst_layer_alloc(bn)) die("alloc");
        for (int c = 0; c < w; c++) bn->scale[c] = 1.0f + 0.1f * sstc_rng_normal(r), bn->bias[c] = 0.1f * sstc_rng_normal(r);
        m->layers[i++] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
        fill_conv(&m->layers[i++], r, w, w, coded);
        m->layers[i++] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
        in = w;
    }
    m->layers[i++] = (sstc_sst_layer){.kind = SSTC_SST_MAXPOOL, .kh = 2, .kw = 2, .stride = 2};
    fill_fc(&m->layers[i++], r, 1024, 1024, 8, 2, coded);
    m->layers[i++] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    fill_fc(&m->layers[i++], r, 10, 1024, 8, 2, coded);
    if (i != m->n_layers) die("cifar_cnn: layer count");
    return m;
}

/* 784-1024-1024-1024-10, ReLU between (batch norm is folded into the affine). */
static sstc_sst_model *mnist_mlp(sstc_rng *r, int coded) {
    const int dims[] = {784, 1024, 1024, 1024, 10};
    sstc_sst_model *m = sstc_sst_model_new(7);
    m->in_c = 1, m->in_h = m->in_w = 28, m->num_classes = 10;
    m->in_mean[0] = 0.1307f, m->in_std[0] = 0.3081f;
    for (int l = 0, i = 0; l < 4; l++) {
        fill_fc(&m->layers[i++], r, dims[l + 1], dims[l], 8, 2, coded);
        if (l < 3) m->layers[i++] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    }
    return m;
}

/* The float twin of a coded model: every coded layer as float weights scale*T. */
static sstc_sst_model *float_twin(const sstc_sst_model *src) {
    sstc_sst_model *m = sstc_sst_model_new(src->n_layers);
    m->in_c = src->in_c, m->in_h = src->in_h, m->in_w = src->in_w, m->num_classes = src->num_classes;
    memcpy(m->in_mean, src->in_mean, sizeof m->in_mean);
    memcpy(m->in_std, src->in_std, sizeof m->in_std);
    for (int i = 0; i < src->n_layers; i++) {
        const sstc_sst_layer *S = &src->layers[i];
        sstc_sst_layer *L = &m->layers[i];
        *L = *S;
        L->delta = L->scale = L->bias = L->weight = NULL;
        L->codes = NULL;
        L->coded = L->per_row_delta = 0;
        if (S->kind == SSTC_SST_BATCHNORM) L->coded = 0;
        if (sstc_sst_layer_alloc(L)) die("alloc");
        if (S->kind == SSTC_SST_BATCHNORM) {
            memcpy(L->scale, S->scale, (size_t)S->out * sizeof(float));
            memcpy(L->bias, S->bias, (size_t)S->out * sizeof(float));
        }
        if (S->kind != SSTC_SST_FC && S->kind != SSTC_SST_CONV) continue;
        size_t fan_in = sstc_sst_fan_in(S), n = (size_t)S->out * fan_in;
        memcpy(L->bias, S->bias, (size_t)S->out * sizeof(float));
        if (!S->coded) {
            memcpy(L->weight, S->weight, n * sizeof(float));
            continue;
        }
        int8_t *T = malloc(n);
        if (sstc_sst_layer_ternary(S, T)) die("decode");
        for (size_t j = 0; j < n; j++) L->weight[j] = S->scale[j / fan_in] * (float)T[j];
        free(T);
    }
    return m;
}

typedef struct {
    sstc_engine *e;
    const uint8_t *px;
    float *logits;
    int count, batch;
    size_t isz;
} net_ctx;
static void run_net(void *p) {
    net_ctx *c = p;
    for (int i = 0; i < c->count; i += c->batch)
        if (sstc_engine_forward_pixels(c->e, c->px + (size_t)i * c->isz, c->batch, c->logits)) die("forward");
}

/* A whole network, coded against its float twin (the same function with
 * float weights: sgemv at batch 1, sgemm over im2col columns otherwise), in
 * images/s at each batch size of `batches` (count images per timing). */
static void bench_network(sstc_rng *r, const char *model_path, const char *name, sstc_sst_model *(*make)(sstc_rng *, int),
                          const int *batches, int nb, int count, int rounds) {
    sstc_sst_model *m = NULL;
    if (model_path) {
        if (sstc_sst_read(model_path, &m)) die(model_path);
    } else {
        m = make(r, 1);
    }
    sstc_sst_model *f = float_twin(m);
    sstc_engine *ec, *ef;
    if (sstc_engine_create(m, &ec) || sstc_engine_create(f, &ef)) die("engine");
    size_t isz = (size_t)m->in_c * m->in_h * m->in_w;
    uint8_t *px = malloc(count * isz);
    for (size_t i = 0; i < count * isz; i++) px[i] = (uint8_t)sstc_rng_below(r, 256);
    float *logits = malloc((size_t)count * m->num_classes * sizeof(float));
    sstc_engine_info ic, iff;
    sstc_engine_get_info(ec, &ic);
    sstc_engine_get_info(ef, &iff);
    for (int k = 0; k < nb; k++) {
        int B = batches[k];
        net_ctx cc = {ec, px, logits, count - count % B, B, isz}, cf = cc;
        cf.e = ef;
        double tc = time_us(run_net, &cc, rounds) / cc.count, tf = time_us(run_net, &cf, rounds) / cf.count;
        printf("bench network=%s batch=%d code=%s coded_img_s=%.0f float_img_s=%.0f speedup=%.2f coded_bytes=%zu "
               "float_bytes=%zu\n",
               model_path ? model_path : name, B, model_path ? "file" : "8,2", 1e6 / tc, 1e6 / tf, tf / tc,
               ic.coded_index_bytes + ic.float_weight_bytes, iff.float_weight_bytes);
        fflush(stdout);
    }
    free(px);
    free(logits);
    sstc_engine_free(ec);
    sstc_engine_free(ef);
    sstc_sst_free(m);
    sstc_sst_free(f);
}

int main(int argc, char **argv) {
    int passive = 0;
    for (int i = 1; i < argc; i++) passive |= !strcmp(argv[i], "--passive");
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
        if (passive) setenv("OMP_WAIT_POLICY", "passive", 1);
        else setenv("GOMP_SPINCOUNT", "10000", 1);
        execv("/proc/self/exe", argv);
        /* no /proc: carry on with the default policy */
    }
    /* the float baseline gets the fastest OpenBLAS kernel this CPU runs */
    cli_platform_init(argc, argv);
    {
        const char *w = getenv("OMP_WAIT_POLICY"), *c = getenv("GOMP_SPINCOUNT");
        printf("openmp wait: OMP_WAIT_POLICY=%s GOMP_SPINCOUNT=%s\n", w ? w : "-", c ? c : "-");
    }
    int threads = 0, rounds = 7;
    const char *model = NULL, *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--passive")) continue;
        else {
            fprintf(stderr, "usage: bench_infer [--threads N] [--rounds R] [--model MODEL.sst] [--only layers|network|cnn] "
                            "[--passive]\n");
            return 2;
        }
    }
    if (rounds < 1) rounds = 1;
    if (threads > 0) sstc_set_threads(threads);
    sstc_engine_info info;
    {
        sstc_sst_model *m = sstc_sst_model_new(1);
        m->in_c = m->in_h = m->in_w = 1, m->num_classes = 1;
        sstc_rng r0;
        sstc_rng_seed(&r0, 1);
        fill_fc(&m->layers[0], &r0, 1, 1, 1, 1, 1);
        sstc_engine *e;
        if (sstc_engine_create(m, &e)) die("engine");
        sstc_engine_get_info(e, &info);
        sstc_engine_free(e);
        sstc_sst_free(m);
    }
    const char *wp = getenv("OMP_WAIT_POLICY");
    printf("# bench_infer: threads=%d avx2=%d rounds=%d wait_policy=%s openblas=%s (median times)\n",
           omp_get_max_threads(), info.avx2, rounds, wp ? wp : "default", openblas_get_corename());
    {
        /* what a parallel region costs here: it decides whether splitting a
         * one-vector product pays (sstc_coded_tune, docs/inference.md) */
        volatile int sink = 0;
        double best = 1e30;
        for (int k = 0; k < 5; k++) {
            double t0 = now();
            for (int i = 0; i < 20000; i++) {
#pragma omp parallel
                if (omp_get_thread_num() == 0) sink = sink + 1;
            }
            double t = (now() - t0) / 20000 * 1e6;
            if (k && t < best) best = t;
        }
        printf("# empty parallel region on %d threads: %.2f us (best of 4 loops of 20000)\n", omp_get_max_threads(), best);
    }
    sstc_rng r;
    sstc_rng_seed(&r, 2017);
    if (!only || !strcmp(only, "layers")) {
        const int sizes[] = {1024, 4096};
        for (int s = 0; s < 2; s++) {
            bench_layer(&r, sizes[s], 8, 2, "8,2", rounds);
            bench_layer(&r, sizes[s], 16, 2, "16,2", rounds);
            bench_layer(&r, sizes[s], 1, 1, "ternary", rounds);
        }
    }
    static const int b1[] = {1}, b164[] = {1, 64};
    if (!only || !strcmp(only, "network"))
        bench_network(&r, model, "mlp784-1024x3-10", mnist_mlp, model ? b164 : b1, model ? 2 : 1, model ? 64 : 16,
                      rounds);
    if (!model && (!only || !strcmp(only, "cnn")))
        bench_network(&r, NULL, "cifar10_cnn", cifar_cnn, b164, 2, 64, rounds);
    return 0;
}
