/* Optimizers and learning-rate schedules.
 *
 * SGD: v = momentum*v + g (+ weight_decay*w added to g); w -= lr*v
 *      (PyTorch's SGD with dampening 0, nesterov off).
 * Adam: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *       w -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps).
 *       weight decay is L2 (added to g) or, with decoupled_wd, AdamW's
 *       w -= lr*weight_decay*w before the update.
 * Weight decay applies to parameters with two or more dimensions (weight
 * matrices and kernels), never to biases or batch-norm scales. */
#ifndef SSTC_OPTIM_H
#define SSTC_OPTIM_H

#include <stddef.h>

#include "sstc/tensor.h"

typedef enum { SSTC_OPT_SGD = 0, SSTC_OPT_ADAM } sstc_optim_kind;

typedef struct {
    sstc_optim_kind kind;
    float lr;
    float momentum;      /* SGD */
    float beta1, beta2;  /* Adam */
    float eps;           /* Adam */
    float weight_decay;
    int decoupled_wd;    /* Adam: AdamW-style decay */
} sstc_optim_config;

/* Defaults: SGD momentum 0.9; Adam betas 0.9/0.999, eps 1e-8; lr 1e-3; no decay. */
sstc_optim_config sstc_optim_defaults(sstc_optim_kind kind);

typedef struct sstc_optimizer {
    sstc_optim_config cfg;
    int nparams;
    sstc_tensor **params;
    float **m;    /* SGD velocity / Adam first moment, one buffer per param */
    float **v;    /* Adam second moment (NULL for SGD) */
    long step;    /* number of steps taken */
} sstc_optimizer;

sstc_optimizer *sstc_optim_create(const sstc_optim_config *cfg, sstc_tensor **params, int nparams);
void sstc_optim_free(sstc_optimizer *o);
/* One update of every parameter from its .grad, at learning rate lr. */
int sstc_optim_step(sstc_optimizer *o, float lr);
/* The same step (the step counter advances) for the elements [lo, hi) of all
 * parameters laid end to end in order only: every update is elementwise, so
 * ranks that each step one part compute exactly the bits of a whole step
 * (sharded optimizer of an MPI job, sstc/dist.h). */
int sstc_optim_step_range(sstc_optimizer *o, float lr, size_t lo, size_t hi);
/* A step taken one parameter at a time (each as soon as its gradient is
 * complete, sstc_backward_notify): sstc_optim_begin_step advances the step
 * counter once, then sstc_optim_update_param updates parameter p (index in
 * params) exactly as sstc_optim_step would; every parameter once per step.
 * sstc_optim_update_range is the update of [lo, hi) without the counter. */
void sstc_optim_begin_step(sstc_optimizer *o);
int sstc_optim_update_param(sstc_optimizer *o, float lr, int p);
int sstc_optim_update_range(sstc_optimizer *o, float lr, size_t lo, size_t hi);
/* The index of t in o's parameters, -1 if it is not one. */
int sstc_optim_param_index(const sstc_optimizer *o, const sstc_tensor *t);
void sstc_optim_zero_grad(sstc_optimizer *o);

/* Instruction sets of the Adam kernel: the baseline build, AVX2, AVX-512. */
enum { SSTC_ISA_BASE = 0, SSTC_ISA_AVX2 = 1, SSTC_ISA_AVX512 = 2 };
/* The kernel version in use: the best this machine has, at most the cap. */
int sstc_optim_isa(void);
/* Caps the version (tests force each one the machine has); default AVX512. */
void sstc_optim_force_isa(int level);

typedef enum { SSTC_LR_CONSTANT = 0, SSTC_LR_STEP, SSTC_LR_EXP, SSTC_LR_COSINE } sstc_lr_kind;

typedef struct {
    sstc_lr_kind kind;
    float base_lr;
    int step_epochs;     /* STEP: multiply by gamma every step_epochs epochs */
    float gamma;         /* STEP, EXP: decay factor (EXP: per epoch) */
    float min_lr;        /* COSINE: floor */
    int total_epochs;    /* COSINE: length of the half period */
} sstc_lr_schedule;

/* Learning rate at a (fractional) epoch position, epoch >= 0. STEP and EXP
 * change at whole epochs; COSINE anneals smoothly per step:
 * min + (base-min)*(1+cos(pi*epoch/total))/2. */
float sstc_lr_at(const sstc_lr_schedule *s, double epoch);

#endif
