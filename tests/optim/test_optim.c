/* Optimizers against PyTorch, and learning-rate schedules. */
#include "../test_util.h"
#include "sstc/optim.h"

static void three_steps(const char *fixture, sstc_optim_config cfg) {
    fx_file f;
    fx_load(&f, fixture);
    sstc_ctx *P = sstc_ctx_create(0);
    sstc_tensor *w = fx_tensor(P, fx_get(&f, "w0"), 1);
    fx_array *g = fx_get(&f, "g");
    sstc_optimizer *o = sstc_optim_create(&cfg, &w, 1);
    cr_assert_not_null(o, "%s", sstc_errmsg());
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < w->size; i++) w->grad[i] = g->v[i] * (float)(k + 1);
        cr_assert_eq(sstc_optim_step(o, cfg.lr), 0);
    }
    fx_array *w3 = fx_get(&f, "w3");
    expect_close(w->data, w3->v, w3->n, 1e-6f, 1e-5f, fixture);
    sstc_optim_free(o);
    sstc_ctx_free(P);
    fx_free(&f);
}

Test(optim, adam_with_l2_decay_matches_pytorch_over_three_steps) {
    sstc_optim_config c = sstc_optim_defaults(SSTC_OPT_ADAM);
    c.lr = 0.01f;
    c.weight_decay = 0.1f;
    three_steps("adam", c);
}

Test(optim, adamw_decoupled_decay_matches_pytorch_over_three_steps) {
    sstc_optim_config c = sstc_optim_defaults(SSTC_OPT_ADAM);
    c.lr = 0.01f;
    c.weight_decay = 0.1f;
    c.decoupled_wd = 1;
    three_steps("adamw", c);
}

Test(optim, sgd_momentum_with_decay_matches_pytorch_over_three_steps) {
    sstc_optim_config c = sstc_optim_defaults(SSTC_OPT_SGD);
    c.lr = 0.1f;
    c.momentum = 0.9f;
    c.weight_decay = 0.01f;
    three_steps("sgd", c);
}

Test(optim, weight_decay_skips_biases) {
    sstc_ctx *P = sstc_ctx_create(0);
    sstc_tensor *b = sstc_param_new(P, 1, (int[]){4});
    sstc_tensor_fill(b, 1.0f);
    sstc_optim_config c = sstc_optim_defaults(SSTC_OPT_SGD);
    c.weight_decay = 0.5f;
    sstc_optimizer *o = sstc_optim_create(&c, &b, 1);
    sstc_optim_step(o, 0.1f); /* zero gradient: nothing may change */
    for (int i = 0; i < 4; i++) cr_assert_float_eq(b->data[i], 1.0f, 0);
    sstc_optim_free(o);
    sstc_ctx_free(P);
}

Test(optim, create_rejects_params_without_grad) {
    sstc_ctx *P = sstc_ctx_create(0);
    sstc_tensor *t = sstc_tensor_1d(P, 3);
    sstc_optim_config c = sstc_optim_defaults(SSTC_OPT_ADAM);
    cr_assert_null(sstc_optim_create(&c, &t, 1));
    cr_assert_not_null(strstr(sstc_errmsg(), "gradient"));
    sstc_ctx_free(P);
}

Test(optim, schedules_follow_their_formulas) {
    sstc_lr_schedule s = {.kind = SSTC_LR_CONSTANT, .base_lr = 0.1f};
    cr_assert_float_eq(sstc_lr_at(&s, 7.5), 0.1f, 1e-7);
    s = (sstc_lr_schedule){.kind = SSTC_LR_STEP, .base_lr = 0.1f, .step_epochs = 3, .gamma = 0.5f};
    cr_assert_float_eq(sstc_lr_at(&s, 2.9), 0.1f, 1e-7);
    cr_assert_float_eq(sstc_lr_at(&s, 3.0), 0.05f, 1e-7);
    cr_assert_float_eq(sstc_lr_at(&s, 6.1), 0.025f, 1e-7);
    s = (sstc_lr_schedule){.kind = SSTC_LR_EXP, .base_lr = 1.0f, .gamma = 0.9f};
    cr_assert_float_eq(sstc_lr_at(&s, 2.5), 0.81f, 1e-6);
    s = (sstc_lr_schedule){.kind = SSTC_LR_COSINE, .base_lr = 1.0f, .min_lr = 0.1f, .total_epochs = 10};
    cr_assert_float_eq(sstc_lr_at(&s, 0), 1.0f, 1e-6);
    cr_assert_float_eq(sstc_lr_at(&s, 5), 0.55f, 1e-6);
    /* fractional epochs (training asks per batch): 0.1 + 0.45 * (1 + cos(pi/4)) */
    cr_assert_float_eq(sstc_lr_at(&s, 2.5), 0.868198f, 1e-6);
    cr_assert_float_eq(sstc_lr_at(&s, 0.125), 0.999653f, 1e-6);
    cr_assert_float_eq(sstc_lr_at(&s, 10), 0.1f, 1e-6);
    cr_assert_float_eq(sstc_lr_at(&s, 12), 0.1f, 1e-6);
}

/* Each Adam kernel version this machine has (AVX-512, AVX2 on an AVX-512
 * machine too, the baseline) gives the same bits: no contraction, the same
 * operations per element. Sizes with vector tails, L2 and decoupled decay. */
Test(optim, every_adam_kernel_version_gives_the_same_bits) {
    sstc_rng r;
    sstc_rng_seed(&r, 31);
    sstc_ctx *P = sstc_ctx_create(0);
    for (int decoupled = 0; decoupled < 2; decoupled++) {
        float *ref = NULL;
        for (int isa = SSTC_ISA_BASE; isa <= SSTC_ISA_AVX512; isa++) {
            sstc_optim_force_isa(isa);
            if (sstc_optim_isa() != isa) continue; /* the machine lacks it */
            sstc_tensor *w = sstc_tensor_2d(P, 7, 10001);
            w->grad = malloc(w->size * sizeof(float));
            sstc_rng rr = r;
            for (size_t i = 0; i < w->size; i++) w->data[i] = sstc_rng_normal(&rr);
            sstc_optim_config c = sstc_optim_defaults(SSTC_OPT_ADAM);
            c.weight_decay = 0.01f;
            c.decoupled_wd = decoupled;
            sstc_optimizer *o = sstc_optim_create(&c, &w, 1);
            cr_assert_not_null(o, "%s", sstc_errmsg());
            for (int k = 0; k < 3; k++) {
                for (size_t i = 0; i < w->size; i++) w->grad[i] = sstc_rng_normal(&rr) * (k + 1);
                cr_assert_eq(sstc_optim_step(o, 0.01f), 0);
            }
            if (!ref) {
                ref = malloc(w->size * sizeof(float));
                memcpy(ref, w->data, w->size * sizeof(float));
            } else {
                for (size_t i = 0; i < w->size; i++)
                    cr_assert_eq(memcmp(&ref[i], &w->data[i], 4), 0, "version %d, weight %zu: %.9g vs %.9g", isa, i,
                                 (double)w->data[i], (double)ref[i]);
            }
            free(w->grad);
            w->grad = NULL;
            sstc_optim_free(o);
        }
        free(ref);
    }
    sstc_optim_force_isa(SSTC_ISA_AVX512);
    sstc_ctx_free(P);
}

/* A sharded step: optimizers that each step only a range of the parameters
 * laid end to end (cut inside a tensor, too) give together the bits of one
 * whole step (what the ranks of an MPI job rely on). */
Test(optim, stepping_ranges_of_the_parameters_equals_a_whole_step) {
    sstc_ctx *P = sstc_ctx_create(0);
    sstc_rng r;
    sstc_rng_seed(&r, 41);
    for (int kind = 0; kind < 2; kind++) {
        sstc_tensor *w[3][2];
        sstc_optimizer *o[3];
        for (int k = 0; k < 3; k++) {
            sstc_rng rr = r;
            w[k][0] = sstc_param_new(P, 2, (int[]){7, 13});
            w[k][1] = sstc_param_new(P, 1, (int[]){50});
            for (int j = 0; j < 2; j++)
                for (size_t i = 0; i < w[k][j]->size; i++) w[k][j]->data[i] = sstc_rng_normal(&rr);
            sstc_optim_config c = sstc_optim_defaults(kind ? SSTC_OPT_SGD : SSTC_OPT_ADAM);
            c.weight_decay = 0.05f;
            if (kind) c.momentum = 0.9f;
            o[k] = sstc_optim_create(&c, w[k], 2);
            cr_assert_not_null(o[k], "%s", sstc_errmsg());
        }
        size_t cut = 40; /* inside the first tensor (91 values) */
        for (int step = 0; step < 3; step++) {
            for (int j = 0; j < 2; j++)
                for (size_t i = 0; i < w[0][j]->size; i++) {
                    float g = sstc_rng_normal(&r);
                    for (int k = 0; k < 3; k++) w[k][j]->grad[i] = g;
                }
            cr_assert_eq(sstc_optim_step(o[0], 0.01f), 0);
            cr_assert_eq(sstc_optim_step_range(o[1], 0.01f, 0, cut), 0);
            cr_assert_eq(sstc_optim_step_range(o[2], 0.01f, cut, 141), 0);
            /* each shard's owner keeps its part: merge into o[1]'s weights */
            for (int j = 0, off = 0; j < 2; off += (int)w[0][j]->size, j++)
                for (size_t i = 0; i < w[0][j]->size; i++)
                    if ((size_t)off + i >= cut) w[1][j]->data[i] = w[2][j]->data[i], w[2][j]->data[i] = w[1][j]->data[i];
                    else w[2][j]->data[i] = w[1][j]->data[i];
        }
        for (int j = 0; j < 2; j++)
            cr_assert_eq(memcmp(w[0][j]->data, w[1][j]->data, w[0][j]->size * sizeof(float)), 0, "%s, tensor %d",
                         kind ? "SGD" : "Adam", j);
        for (int k = 0; k < 3; k++) sstc_optim_free(o[k]);
    }
    sstc_ctx_free(P);
}
