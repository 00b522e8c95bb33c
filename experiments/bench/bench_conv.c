/* Convolution benchmark: forward + backward of single 3x3 "same" conv layers
 * with the shapes of configs/cifar10_cnn.ini (batch 128), im2col against
 * Winograd F(2x2, 3x3) and F(4x4, 3x3), alternating round by round in one
 * run. Prints the median milliseconds of forward + backward of each and the
 * ratios im2col / Winograd (above 1: Winograd faster), of the whole and of the
 * forward pass alone.
 *
 *   build/bench_conv [--threads N] [--rounds R] [--batch B] [--layer C,OC,H]...
 *
 * The input of the first layer (the images) needs no gradient, as in training;
 * every other layer's input gradient is computed, into a fresh buffer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "startup.h"
#include "core/internal.h"
#include "sstc/tensor.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct { int C, OC, H; } layer;

/* One forward and one backward pass; their seconds in *tf, *tb. */
static int pass(sstc_ctx *ctx, sstc_tensor *xs, sstc_tensor *w, const float *gy, int first, double *tf,
                double *tb) {
    sstc_ctx_reset(ctx);
    sstc_tensor *x = sstc_tensor_new(ctx, 4, xs->shape);
    if (!x) return -1;
    memcpy(x->data, xs->data, xs->size * sizeof(float));
    x->requires_grad = !first; /* a fresh input gradient, as for an inner layer */
    double a = now();
    sstc_tensor *y = sstc_conv2d(ctx, x, w, NULL, 1, 1);
    if (!y) return -1;
    double b = now();
    y->grad = (float *)gy;
    sstc_backward_rules[SSTC_OP_CONV2D](ctx, y);
    double c = now();
    *tf = b - a;
    *tb = c - b;
    return 0;
}

int main(int argc, char **argv) {
    cli_platform_init(argc, argv);
    int threads = 2, rounds = 7, B = 128, nl = 0;
    layer layers[16];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layer") && i + 1 < argc && nl < 16 &&
                 sscanf(argv[++i], "%d,%d,%d", &layers[nl].C, &layers[nl].OC, &layers[nl].H) == 3)
            nl++;
        else {
            fprintf(stderr, "usage: bench_conv [--threads N] [--rounds R] [--batch B] [--layer C,OC,H]...\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > 64 || B < 1) {
        fprintf(stderr, "bench_conv: expected 1 <= rounds <= 64 and batch >= 1\n");
        return 2;
    }
    if (!nl) {
        /* configs/cifar10_cnn.ini: conv, pool, conv per block (64, 128, 256
         * channels), the first conv of a block at the previous block's size */
        const layer cifar[] = {{3, 64, 32}, {64, 64, 16}, {64, 128, 16}, {128, 128, 8}, {128, 256, 8},
                               {256, 256, 4}};
        nl = 6;
        memcpy(layers, cifar, sizeof cifar);
    }
    sstc_set_threads(threads);
    sstc_rng rng;
    sstc_rng_seed(&rng, 1);
    sstc_ctx *params = sstc_ctx_create(0), *ctx = sstc_ctx_create(0);
    printf("bench conv batch=%d threads=%d rounds=%d (median ms of forward + backward; ratio = im2col / winograd, "
           "fwd: of the forward pass)\n", B, threads, rounds);
    printf("%-18s %8s %8s %8s %7s %7s %7s %7s\n", "layer C->OC HxW", "im2col", "F(2x2)", "F(4x4)", "ratio2",
           "ratio4", "fwd2", "fwd4");
    enum { NA = 3 };
    double sum[NA] = {0, 0, 0};
    for (int l = 0; l < nl; l++) {
        layer L = layers[l];
        sstc_tensor *x = sstc_tensor_new(params, 4, (int[]){B, L.C, L.H, L.H});
        sstc_tensor *w = sstc_param_new(params, 4, (int[]){L.OC, L.C, 3, 3});
        if (!x || !w) {
            fprintf(stderr, "bench_conv: %s\n", sstc_errmsg());
            return 1;
        }
        for (size_t i = 0; i < x->size; i++) x->data[i] = sstc_rng_normal(&rng);
        for (size_t i = 0; i < w->size; i++) w->data[i] = 0.05f * sstc_rng_normal(&rng);
        size_t ny = (size_t)B * L.OC * L.H * L.H;
        float *gy = malloc(ny * sizeof(float));
        for (size_t i = 0; i < ny; i++) gy[i] = sstc_rng_normal(&rng);
        double tf[NA][64], tb[NA][64], tt[NA][64];
        /* one warm-up pass each, then alternating rounds */
        for (int r = -1; r < rounds; r++)
            for (int a = 0; a < NA; a++) {
                sstc_conv_set_algo(a ? SSTC_CONV_WINOGRAD : SSTC_CONV_IM2COL);
                if (a) sstc_wino_set_tile(2 * a);
                double f, b;
                if (pass(ctx, x, w, gy, l == 0 && L.C == 3, &f, &b)) {
                    fprintf(stderr, "bench_conv: %s\n", sstc_errmsg());
                    return 1;
                }
                if (r < 0) continue;
                tf[a][r] = f, tb[a][r] = b, tt[a][r] = f + b;
            }
        double m[NA][3];
        for (int a = 0; a < NA; a++) {
            m[a][0] = 1e3 * median(tf[a], rounds);
            m[a][1] = 1e3 * median(tb[a], rounds);
            m[a][2] = 1e3 * median(tt[a], rounds);
            sum[a] += m[a][2];
        }
        char name[32];
        snprintf(name, sizeof name, "%d->%d %dx%d", L.C, L.OC, L.H, L.H);
        printf("%-18s %8.2f %8.2f %8.2f %7.2f %7.2f %7.2f %7.2f\n", name, m[0][2], m[1][2], m[2][2], m[0][2] / m[1][2],
               m[0][2] / m[2][2], m[0][0] / m[1][0], m[0][0] / m[2][0]);
        fflush(stdout);
        free(gy);
    }
    printf("%-18s %8.2f %8.2f %8.2f %7.2f %7.2f\n", "all layers", sum[0], sum[1], sum[2], sum[0] / sum[1],
           sum[0] / sum[2]);
    sstc_ctx_free(ctx);
    sstc_ctx_free(params);
    return 0;
}
