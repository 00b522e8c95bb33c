/* Training-step benchmark: the MLP 784-1024-1024-1024-10 with batch norm and
 * ReLU, Adam, batch 100, synthetic data. Prints images/s and the effective
 * GFLOPS of the step next to raw OpenBLAS sgemm GFLOPS measured in the same run
 * on the same matrix shapes the step multiplies.
 *
 *   build/bench_step [--threads N] [--steps S]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "startup.h"
#include "sstc/nn.h"
#include "sstc/optim.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The gemms of one step: forward x W^T, backward dX = dY W (not for the
 * first layer, whose input needs no gradient) and dW = dY^T X. */
static const int dims[] = {784, 1024, 1024, 1024, 10};
enum { B = 100, NL = 4 };

static double step_flops(void) {
    double f = 0;
    for (int l = 0; l < NL; l++) {
        double mnk = 2.0 * B * dims[l] * dims[l + 1];
        f += mnk * (l == 0 ? 2 : 3);
    }
    return f;
}

static double sgemm_gflops(int reps) {
    /* Exactly the step's gemm calls, with the same shapes and transposes. */
    size_t maxd = 1024;
    float *a = calloc(B * maxd, 4), *w = calloc(maxd * maxd, 4), *c = calloc(B * maxd, 4),
          *dw = calloc(maxd * maxd, 4);
    for (size_t i = 0; i < maxd * maxd; i++) w[i] = 0.001f * (float)(i % 97);
    for (size_t i = 0; i < B * maxd; i++) a[i] = 0.01f * (float)(i % 89);
    double t0 = now();
    for (int r = 0; r < reps; r++)
        for (int l = 0; l < NL; l++) {
            int in = dims[l], out = dims[l + 1];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out, in, 1, a, in, w, in, 0, c, out);
            if (l > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1, c, out, w, in, 1, a, in);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, B, 1, c, out, a, in, 1, dw, in);
        }
    double t = now() - t0;
    free(a); free(w); free(c); free(dw);
    return step_flops() * reps / t / 1e9;
}

int main(int argc, char **argv) {
    cli_platform_init(argc, argv);
    int threads = 2, steps = 60;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_step [--threads N] [--steps S]\n");
            return 2;
        }
    }
    sstc_set_threads(threads);
    sstc_rng rng;
    sstc_rng_seed(&rng, 1);
    sstc_model *m = sstc_model_create(1, (int[]){784});
    for (int l = 1; l <= 3; l++) {
        sstc_model_add_linear(m, NULL, 1024, 1);
        sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f);
        sstc_model_add_relu(m, NULL);
    }
    sstc_model_add_linear(m, NULL, 10, 1);
    sstc_model_init(m, SSTC_INIT_HE, &rng);
    sstc_model_train(m, 1);
    sstc_named_tensor nt[64];
    int n = sstc_model_named_tensors(m, nt, 64), np = 0;
    sstc_tensor *params[64];
    for (int i = 0; i < n; i++)
        if (nt[i].trainable) params[np++] = nt[i].tensor;
    sstc_optim_config cfg = sstc_optim_defaults(SSTC_OPT_ADAM);
    sstc_optimizer *opt = sstc_optim_create(&cfg, params, np);
    float *x = malloc(sizeof(float) * B * 784);
    int y[B];
    for (int i = 0; i < B * 784; i++) x[i] = sstc_rng_uniform(&rng);
    for (int i = 0; i < B; i++) y[i] = i % 10;
    sstc_ctx *ctx = sstc_ctx_create(0);
    double t0 = 0, tf = 0, tb = 0, to = 0; /* forward, backward (with zeroing), optimizer */
    int warm = 5;
    for (int s = 0; s < steps + warm; s++) {
        if (s == warm) t0 = now(), tf = tb = to = 0;
        double a = now();
        sstc_ctx_reset(ctx);
        sstc_tensor *xt = sstc_tensor_wrap(ctx, x, 2, (int[]){B, 784});
        sstc_tensor *loss = sstc_softmax_ce(ctx, sstc_model_forward(m, ctx, xt), y);
        if (!loss) {
            fprintf(stderr, "bench_step: %s\n", sstc_errmsg());
            return 1;
        }
        double b = now();
        sstc_optim_zero_grad(opt);
        sstc_backward(ctx, loss);
        double c = now();
        sstc_optim_step(opt, 1e-3f);
        double d = now();
        tf += b - a;
        tb += c - b;
        to += d - c;
    }
    double t = now() - t0;
    /* the optimizer alone, back to back (its data hot in cache): the floor of
     * its share of a step, set by its square roots and divisions */
    double ta = now();
    for (int s = 0; s < 20; s++) sstc_optim_step(opt, 1e-3f);
    double t_opt_alone = (now() - ta) / 20;
    double ips = steps * B / t, gf = step_flops() * steps / t / 1e9;
    double raw = sgemm_gflops(steps);
    printf("openblas core %s\n", openblas_get_corename());
    printf("bench train_step net=784-1024-1024-1024-10 batch=%d threads=%d steps=%d ms_per_step=%.3f "
           "images_per_s=%.0f step_gflops=%.1f sgemm_gflops=%.1f ratio=%.2f\n",
           B, threads, steps, 1e3 * t / steps, ips, gf, raw, gf / raw);
    printf("bench train_step split ms_forward=%.3f ms_backward=%.3f ms_optimizer=%.3f "
           "ms_optimizer_alone=%.3f sgemm_ms_at_raw_rate=%.3f\n",
           1e3 * tf / steps, 1e3 * tb / steps, 1e3 * to / steps, 1e3 * t_opt_alone,
           1e3 * step_flops() / (raw * 1e9));
    sstc_ctx_free(ctx);
    sstc_optim_free(opt);
    sstc_model_free(m);
    free(x);
    return 0;
}
