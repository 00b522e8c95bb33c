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

typedef struct {
    sstc_optimizer *opt;
    int np;
    unsigned char done[64];
} layer_ctx;
static void layer_done(void *user, sstc_tensor *t) {
    layer_ctx *c = user;
    int p = sstc_optim_param_index(c->opt, t);
    if (p < 0 || c->done[p]) return;
    c->done[p] = 1;
    sstc_optim_update_param(c->opt, 1e-3f, p);
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
    /* two modes, alternating in blocks of steps: the optimizer step after the
     * backward pass, and each parameter stepped during the pass as soon as
     * its gradient is complete (what a training session does by default) */
    double t_mode[2] = {0, 0}, tf_m[2] = {0, 0}, tb_m[2] = {0, 0}, to_m[2] = {0, 0};
    int warm = 5, blocks = 4, per = (steps + blocks - 1) / blocks;
    steps = per * blocks;
    layer_ctx lc = {opt, np, {0}};
    for (int blk = 0; blk < 2 * blocks + 1; blk++) {
        int mode = blk % 2, count = blk == 0 ? warm : per;
        double t0 = now(), tf = 0, tb = 0, to = 0; /* forward, backward (with zeroing), optimizer */
        for (int s = 0; s < count; s++) {
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
            if (mode == 0) {
                sstc_backward(ctx, loss);
            } else {
                sstc_optim_begin_step(opt);
                memset(lc.done, 0, sizeof lc.done);
                sstc_backward_notify(ctx, loss, layer_done, &lc);
            }
            double c = now();
            if (mode == 0) sstc_optim_step(opt, 1e-3f);
            else
                for (int p = 0; p < np; p++)
                    if (!lc.done[p]) sstc_optim_update_param(opt, 1e-3f, p);
            double d = now();
            tf += b - a;
            tb += c - b;
            to += d - c;
        }
        if (blk == 0) continue; /* warm-up */
        t_mode[mode] += now() - t0, tf_m[mode] += tf, tb_m[mode] += tb, to_m[mode] += to;
    }
    int half = steps; /* steps per mode */
    double t = t_mode[0], tf = tf_m[0], tb = tb_m[0], to = to_m[0];
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
    double tl = t_mode[1], gl = step_flops() * half / tl / 1e9;
    printf("bench train_step step=layer (each parameter stepped during the backward pass, as sstc trains) "
           "ms_per_step=%.3f images_per_s=%.0f step_gflops=%.1f ratio=%.2f ms_backward_with_steps=%.3f "
           "ms_rest=%.3f speedup_over_end=%.2f\n",
           1e3 * tl / half, half * B / tl, gl, gl / raw, 1e3 * tb_m[1] / half, 1e3 * to_m[1] / half, t / tl);
    sstc_ctx_free(ctx);
    sstc_optim_free(opt);
    sstc_model_free(m);
    free(x);
    return 0;
}
