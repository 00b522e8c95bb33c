/* sstc tensors and reverse-mode automatic differentiation.
 *
 * Memory. Every tensor lives in a context (sstc_ctx) that the caller owns: a
 * bump arena plus the tape of recorded ops. Tensors are never freed one by
 * one; they die with sstc_ctx_reset() or sstc_ctx_free(). After a reset the
 * arena keeps (and, if it had to grow, coalesces) its memory, so a training
 * loop that resets its step context every iteration allocates nothing once the
 * first step has run.
 *
 * Tensors are float32, contiguous, up to 4 dimensions; images are NCHW.
 *
 * Autodiff. Ops execute eagerly and, when any input requires a gradient, append
 * their output to the context's tape. sstc_backward(ctx, loss) walks the tape in
 * reverse and accumulates d(loss)/d(t) into t->grad for every tensor that
 * requires a gradient. Parameters are leaves made with sstc_param_new() in a
 * long-lived context; their grad buffers persist and accumulate until
 * sstc_zero_grad() (or the optimizer) clears them.
 *
 * Errors. Ops return NULL on error and leave a message (op name and shapes) in
 * sstc_errmsg(). An op given a NULL input returns NULL without replacing the
 * message, so a chain of ops reports the first failure. */
#ifndef SSTC_TENSOR_H
#define SSTC_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "sstc/error.h"
#include "sstc/rng.h"

#define SSTC_MAX_DIMS 4

typedef enum {
    SSTC_OP_LEAF = 0,
    SSTC_OP_MATMUL,
    SSTC_OP_LINEAR,
    SSTC_OP_ADD,
    SSTC_OP_BIAS_ADD,
    SSTC_OP_MUL,
    SSTC_OP_SCALE,
    SSTC_OP_RELU,
    SSTC_OP_CONV2D,
    SSTC_OP_MAXPOOL2D,
    SSTC_OP_AVGPOOL2D,
    SSTC_OP_BATCHNORM,
    SSTC_OP_DROPOUT,
    SSTC_OP_RESHAPE,
    SSTC_OP_SUM,
    SSTC_OP_MEAN,
    SSTC_OP_SOFTMAX_CE,
    SSTC_OP_CHANNEL_SCALE,
    SSTC_OP_CONCAT,
    SSTC_OP_GLOBAL_AVGPOOL,
    SSTC_OP_DISTILL,
    SSTC_OP_COUNT
} sstc_op;

typedef struct sstc_tensor {
    int ndim;
    int shape[SSTC_MAX_DIMS];
    size_t size;          /* number of elements */
    float *data;
    float *grad;          /* NULL until a gradient is needed */
    int requires_grad;
    sstc_op op;
    struct sstc_tensor *src[3];
    int ip[8];            /* integer op parameters (stride, pad, ...) */
    float fp[4];          /* float op parameters (eps, scale, ...) */
    void *saved;          /* op-specific data kept for backward */
    void *saved2;
    const char *name;
} sstc_tensor;

typedef struct sstc_ctx sstc_ctx;

/* ---- context ---------------------------------------------------------- */

/* The arena first reserves address space the size of the machine's memory
 * (at most 64 GB), backed by pages only where touched; where that fails it
 * allocates chunks, initial_bytes first (they grow as needed). */
sstc_ctx *sstc_ctx_create(size_t initial_bytes);
void sstc_ctx_free(sstc_ctx *ctx);
/* Forgets every tensor and the tape; keeps the memory for reuse. */
void sstc_ctx_reset(sstc_ctx *ctx);
/* Training mode switches batch norm to batch statistics and enables dropout. */
void sstc_ctx_set_training(sstc_ctx *ctx, int training);
int sstc_ctx_training(const sstc_ctx *ctx);
/* The generator dropout draws from (not owned by the context). */
void sstc_ctx_set_rng(sstc_ctx *ctx, sstc_rng *rng);
/* Number of allocations (malloc, the reservation, scratch growth) the context
 * has made since creation: a training step that allocates nothing after
 * warm-up leaves this unchanged. */
size_t sstc_ctx_mallocs(const sstc_ctx *ctx);
size_t sstc_ctx_bytes_used(const sstc_ctx *ctx);
/* Raw 64-byte-aligned scratch memory from the arena (not zeroed). */
void *sstc_ctx_alloc(sstc_ctx *ctx, size_t bytes);

/* ---- tensors ---------------------------------------------------------- */

/* A zero-filled tensor; shape has ndim (1..4) positive entries. */
sstc_tensor *sstc_tensor_new(sstc_ctx *ctx, int ndim, const int *shape);
sstc_tensor *sstc_tensor_1d(sstc_ctx *ctx, int n0);
sstc_tensor *sstc_tensor_2d(sstc_ctx *ctx, int n0, int n1);
sstc_tensor *sstc_tensor_4d(sstc_ctx *ctx, int n0, int n1, int n2, int n3);
/* A leaf that requires a gradient, with its grad buffer allocated (zeroed). */
sstc_tensor *sstc_param_new(sstc_ctx *ctx, int ndim, const int *shape);
/* A leaf whose data points at caller memory (no copy). */
sstc_tensor *sstc_tensor_wrap(sstc_ctx *ctx, float *data, int ndim, const int *shape);
void sstc_tensor_fill(sstc_tensor *t, float v);
void sstc_zero_grad(sstc_tensor *t);
/* "(2,3,4)" into buf. */
const char *sstc_shape_str(const sstc_tensor *t, char *buf, size_t n);

/* ---- ops (each has a forward and a backward rule) ----------------------- */

/* a (M,K) @ b (K,N) -> (M,N), OpenBLAS sgemm. */
sstc_tensor *sstc_matmul(sstc_ctx *ctx, sstc_tensor *a, sstc_tensor *b);
/* x (B,in) , w (out,in), bias (out) or NULL -> x w^T + bias, (B,out). */
sstc_tensor *sstc_linear(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *w, sstc_tensor *bias);
/* Elementwise a + b, same shapes. */
sstc_tensor *sstc_add(sstc_ctx *ctx, sstc_tensor *a, sstc_tensor *b);
/* x (B,C) or (B,C,H,W) plus bias (C) broadcast over the other axes. */
sstc_tensor *sstc_bias_add(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *bias);
/* x (B,C) or (B,C,H,W) times scale (C) broadcast over the other axes. */
sstc_tensor *sstc_channel_scale(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *scale);
/* Elementwise a * b, same shapes. */
sstc_tensor *sstc_mul(sstc_ctx *ctx, sstc_tensor *a, sstc_tensor *b);
/* s * a for a constant s. */
sstc_tensor *sstc_scale(sstc_ctx *ctx, sstc_tensor *a, float s);
sstc_tensor *sstc_relu(sstc_ctx *ctx, sstc_tensor *x);
/* x (B,C,H,W), w (OC,C,KH,KW), bias (OC) or NULL -> (B,OC,OH,OW) with
 * OH = (H + 2*pad - KH)/stride + 1. im2col + sgemm. */
sstc_tensor *sstc_conv2d(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *w, sstc_tensor *bias,
                         int stride, int pad);
/* Max pooling over k x k windows; padded positions never win. */
sstc_tensor *sstc_maxpool2d(sstc_ctx *ctx, sstc_tensor *x, int k, int stride, int pad);
/* Average pooling; padded zeros count in the divisor (k*k), as in PyTorch's default. */
sstc_tensor *sstc_avgpool2d(sstc_ctx *ctx, sstc_tensor *x, int k, int stride, int pad);
/* Batch norm over axis 1 of x (B,C) or (B,C,H,W). gamma, beta: (C) params.
 * running_mean/var: (C) buffers. In training mode (sstc_ctx_training) uses the
 * batch statistics and updates the running ones with
 * r = (1-momentum)*r + momentum*stat (unbiased variance, as PyTorch); in
 * evaluation mode uses the running statistics. */
sstc_tensor *sstc_batchnorm(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *gamma, sstc_tensor *beta,
                            sstc_tensor *running_mean, sstc_tensor *running_var, float momentum,
                            float eps);
/* Mean over each (H,W) plane: x (B,C,H,W) -> (B,C). */
sstc_tensor *sstc_global_avgpool(sstc_ctx *ctx, sstc_tensor *x);
/* Concatenation along axis 1 of n >= 1 tensors (B,C_i) or (B,C_i,H,W) that
 * agree in every other dimension -> (B, C_0+...+C_{n-1}, ...), in list order.
 * The same tensor may appear more than once. */
sstc_tensor *sstc_concat(sstc_ctx *ctx, int n, sstc_tensor *const *xs);
/* Inverted dropout with drop probability p in training mode; identity otherwise. */
sstc_tensor *sstc_dropout(sstc_ctx *ctx, sstc_tensor *x, float p);
/* Same data, new shape (same element count). */
sstc_tensor *sstc_reshape(sstc_ctx *ctx, sstc_tensor *x, int ndim, const int *shape);
/* (B, ...) -> (B, rest). */
sstc_tensor *sstc_flatten(sstc_ctx *ctx, sstc_tensor *x);
/* Scalar (shape (1)) sum and mean of all elements. */
sstc_tensor *sstc_sum(sstc_ctx *ctx, sstc_tensor *x);
sstc_tensor *sstc_mean(sstc_ctx *ctx, sstc_tensor *x);
/* Fused, numerically stable softmax + cross-entropy: logits (B,C), labels[B]
 * in [0,C) -> scalar mean loss. */
sstc_tensor *sstc_softmax_ce(sstc_ctx *ctx, sstc_tensor *logits, const int *labels);
/* The same with label smoothing (PyTorch's label_smoothing): the target of each
 * sample is (1 - smoothing) on its label plus smoothing / C on every class;
 * 0 <= smoothing < 1, and 0 gives exactly sstc_softmax_ce. */
sstc_tensor *sstc_softmax_ce_smooth(sstc_ctx *ctx, sstc_tensor *logits, const int *labels, float smoothing);
/* Knowledge distillation (Hinton et al.): the scalar
 *   T^2 * mean_b sum_c p[b,c] * (log p[b,c] - log softmax(logits[b] / T)_c),
 * the KL divergence from a teacher's softened probabilities p (B x C, each row
 * summing to 1, p = softmax(teacher_logits / T)) to the student's, scaled by
 * T^2 so that its gradient, T * (softmax(logits/T) - p) / B, keeps the size of
 * a cross-entropy gradient. T > 0. p is copied. */
sstc_tensor *sstc_distill_kl(sstc_ctx *ctx, sstc_tensor *logits, const float *teacher_probs, float T);
/* p = softmax(z / T) row by row (B x C), in double internally; the helper the
 * teacher side of sstc_distill_kl uses. */
void sstc_softmax_temperature(const float *z, int B, int C, float T, float *p);

/* ---- autodiff --------------------------------------------------------- */

/* loss: a scalar recorded on ctx's tape. Fills .grad of every tensor that
 * requires one (parameter grads accumulate). */
int sstc_backward(sstc_ctx *ctx, sstc_tensor *loss);
/* The same, and done(user, t) is called for every leaf t (a tensor that no
 * op made: a parameter) that requires a gradient, as soon as the backward
 * rules of every op on the tape that reads it have run: its gradient is
 * complete, and nothing later in the pass reads its value. Leaves that
 * reach no op are not reported. */
int sstc_backward_notify(sstc_ctx *ctx, sstc_tensor *loss, void (*done)(void *user, sstc_tensor *t), void *user);

const char *sstc_op_name(sstc_op op);

/* ---- threads ---------------------------------------------------------- */


/* Sets the thread count for OpenBLAS and sstc's own OpenMP loops (n >= 1). */
void sstc_set_threads(int n);
int sstc_get_threads(void);

#endif
