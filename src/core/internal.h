/* Shared between the core's source files; not part of the public API. */
#ifndef SSTC_CORE_INTERNAL_H
#define SSTC_CORE_INTERNAL_H

#include "sstc/tensor.h"

struct sstc_ctx {
    /* arena: a reserved region (ctx.c, reserve()) used first, then a list of
     * chunks; after a reset with more than one chunk they are replaced by one
     * chunk of the total size, so steady state is one chunk. */
    unsigned char *vbase;
    size_t vcap, vused;
    struct arena_chunk *chunks;
    size_t total_cap;
    /* one scratch buffer shared by the ops (sstc_ctx_scratch) */
    void *scratch;
    size_t scratch_cap;
    size_t mallocs;
    /* tape of recorded ops (outputs), in creation order */
    sstc_tensor **tape;
    size_t tape_len, tape_cap;
    int training;
    sstc_rng *rng;
};

/* Appends t to the tape (grows the tape array; counted as a malloc). */
int sstc_ctx_record(sstc_ctx *ctx, sstc_tensor *t);
/* Scratch memory for the duration of one op's forward or backward: one
 * buffer per context, grown on demand and reused by every op, so temporary
 * columns do not add up over a network. Valid until the next call. */
void *sstc_ctx_scratch(sstc_ctx *ctx, size_t bytes);
/* Zeroed arena memory. */
void *sstc_ctx_calloc(sstc_ctx *ctx, size_t bytes);
/* An output tensor for an op: data allocated (not zeroed), op and sources set,
 * requires_grad if any source requires it. */
sstc_tensor *sstc_ctx_op_output(sstc_ctx *ctx, sstc_op op, int ndim, const int *shape, sstc_tensor *a,
                           sstc_tensor *b, sstc_tensor *c);
/* Makes sure t->grad exists (zeroed when newly allocated). */
float *sstc_ctx_grad(sstc_ctx *ctx, sstc_tensor *t);
/* The same, but a newly allocated buffer is left uninitialized and *fresh is
 * set: the caller then writes its gradient instead of adding it, saving a
 * zeroing pass and a read over the whole tensor. */
float *sstc_ctx_grad_fresh(sstc_ctx *ctx, sstc_tensor *t, int *fresh);

/* ---- batch norm + ReLU (ops.c) ------------------------------------------
 * relu(batchnorm(x)) as one op (the batchnorm op with ip[1] = 1): one pass
 * forward, one backward, no tensor in between; the same values as the pair.
 * The model uses it for a [batchnorm] directly followed by [relu] when the
 * batch norm's output is read by nothing else, unless SSTC_FUSE=0 (read once)
 * or sstc_set_fuse(0). */
sstc_tensor *sstc_batchnorm_relu(sstc_ctx *ctx, sstc_tensor *x, sstc_tensor *gamma, sstc_tensor *beta,
                                 sstc_tensor *running_mean, sstc_tensor *running_var, float momentum, float eps);
int sstc_fuse_enabled(void);
/* Overrides SSTC_FUSE for every later forward pass (tests, benchmarks). */
void sstc_set_fuse(int on);

typedef void (*backward_fn)(sstc_ctx *ctx, sstc_tensor *out);
extern const backward_fn sstc_backward_rules[SSTC_OP_COUNT];

/* ---- Winograd convolution (winograd.c) ---------------------------------
 * 3x3 stride-1 convolutions (pad 0 or 1) through F(4x4, 3x3) or F(2x2, 3x3).
 * SSTC_CONV=auto|im2col|winograd|winograd2|winograd4, read once (default and
 * any other value: auto, Winograd where it measured faster; winograd: the
 * tile by the plane's size, winograd2/4: that tile), or the setters. */
typedef enum { SSTC_CONV_AUTO, SSTC_CONV_IM2COL, SSTC_CONV_WINOGRAD } sstc_conv_algo;
/* Overrides SSTC_CONV for every later convolution (tests, benchmarks). */
void sstc_conv_set_algo(sstc_conv_algo a);
sstc_conv_algo sstc_conv_get_algo(void);
/* The output tile side under SSTC_CONV_WINOGRAD: 2, 4, or 0 (by the plane's
 * size: 4 from 8x8 outputs up, else 2). */
void sstc_wino_set_tile(int m);
int sstc_wino_tile(void);
/* The output tile side (2 or 4) with which a convolution of C -> OC channels,
 * OH x OW outputs, this kernel, stride and pad runs through Winograd under the
 * current choice, or 0: im2col. */
int sstc_wino_applies(int C, int OC, int OH, int OW, int KH, int KW, int stride, int pad);
/* y = conv(x, w) + bias with tile side m for a shape sstc_wino_applies()
 * accepted (y's shape set). Returns 0, or -1 with the error set (scratch). */
int sstc_wino_forward(sstc_ctx *ctx, const sstc_tensor *x, const sstc_tensor *w, const sstc_tensor *bias,
                      sstc_tensor *y, int pad, int m);
/* The gradients of x and w (as each requires), added to their grads;
 * the bias gradient is left to the caller. */
void sstc_wino_backward(sstc_ctx *ctx, sstc_tensor *y, int m);

/* Below this many elements an elementwise loop stays single-threaded. */
#define PAR_MIN 32768

#endif
