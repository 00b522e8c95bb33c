/* sstc layers (modules) and the sequential model.
 *
 * A model is a Sequential list of layers. Its parameters (weights, biases,
 * batch-norm scales) and buffers (running statistics) live in one long-lived
 * context owned by the model; forward passes build their graph in a separate
 * step context that the caller resets every iteration.
 *
 * Shapes: the model's input is (B,C,H,W) for image networks or (B,F); a Linear
 * layer that follows an image-shaped output flattens it (C*H*W features).
 * Weights: Linear (out,in); Conv2d (OC,C,KH,KW); BatchNorm gamma/beta (C).
 *
 * Named parameters: "<layer name>.weight", ".bias", ".running_mean",
 * ".running_var". Layer names default to "<kind><index>" (fc1, conv1, bn1...)
 * counting each kind from 1. */
#ifndef SSTC_NN_H
#define SSTC_NN_H

#include "sstc/tensor.h"

typedef enum {
    SSTC_LAYER_LINEAR = 0,
    SSTC_LAYER_CONV2D,
    SSTC_LAYER_BATCHNORM,
    SSTC_LAYER_RELU,
    SSTC_LAYER_MAXPOOL,
    SSTC_LAYER_AVGPOOL,
    SSTC_LAYER_DROPOUT,
    SSTC_LAYER_FLATTEN,
    SSTC_LAYER_SHORTCUT,      /* y = act(x + out[from]); x = previous layer's output */
    SSTC_LAYER_ROUTE,         /* y = channel concatenation of out[route[0..nroute-1]] */
    SSTC_LAYER_GLOBALAVGPOOL, /* (C,H,W) -> (C): mean over H*W */
    SSTC_LAYER_KIND_COUNT
} sstc_layer_kind;

#define SSTC_MAX_ROUTE 8
#define SSTC_ACT_LINEAR 0
#define SSTC_ACT_RELU 1

typedef struct sstc_layer {
    sstc_layer_kind kind;
    char name[32];
    /* per-sample input and output shapes: ndim 1 (F) or 3 (C,H,W) */
    int in_ndim, in_shape[3];
    int out_ndim, out_shape[3];
    /* Linear: in,out features. Conv: in/out channels, kernel, stride, pad.
     * Pools: kernel k, stride, pad. Dropout: p. BatchNorm: eps, momentum. */
    int in_features, out_features;
    int kernel, stride, pad;
    int has_bias;
    float p, eps, momentum;
    int from;                  /* SHORTCUT: absolute index of the source layer, -1 = model input */
    int activation;            /* SHORTCUT: SSTC_ACT_LINEAR or SSTC_ACT_RELU */
    int nroute, route[SSTC_MAX_ROUTE]; /* ROUTE: absolute indices, -1 = model input */
    sstc_tensor *weight, *bias;                /* params (NULL if none) */
    sstc_tensor *running_mean, *running_var;   /* batch-norm buffers */
    /* When set, the forward pass computes with these values instead of
     * weight->data while gradients still flow into weight->grad: the
     * straight-through estimator used for quantized retraining. */
    float *weight_override;
    /* Optional per-output scale (Linear/Conv): y = out_scale * (W x) + bias.
     * Added by weight normalization when no batch norm follows the layer.
     * Named "<layer>.out_scale"; not trained. */
    sstc_tensor *out_scale;
} sstc_layer;

typedef struct sstc_model {
    int in_ndim, in_shape[3];
    int num_classes;       /* output width of the last layer */
    int nlayers, cap;
    sstc_layer *layers;
    sstc_ctx *params;      /* owns every parameter and buffer */
    int training;
    /* Optional input permutation (fan-in interleaving of a first FC layer):
     * the network sees x'[i] = x[in_perm[i]] over the flattened input. NULL
     * when none; set with sstc_model_set_input_permutation. */
    int *in_perm;
} sstc_model;

/* An empty model for per-sample input shape (C,H,W) (ndim 3) or (F) (ndim 1). */
sstc_model *sstc_model_create(int in_ndim, const int *in_shape);
void sstc_model_free(sstc_model *m);

/* Append layers; each checks that it fits the current output shape and fails
 * with a message naming the layer and the shapes otherwise. name may be NULL. */
int sstc_model_add_linear(sstc_model *m, const char *name, int out_features, int bias);
int sstc_model_add_conv2d(sstc_model *m, const char *name, int out_channels, int kernel, int stride,
                          int pad, int bias);
int sstc_model_add_batchnorm(sstc_model *m, const char *name, float eps, float momentum);
int sstc_model_add_relu(sstc_model *m, const char *name);
int sstc_model_add_maxpool(sstc_model *m, const char *name, int kernel, int stride, int pad);
int sstc_model_add_avgpool(sstc_model *m, const char *name, int kernel, int stride, int pad);
int sstc_model_add_dropout(sstc_model *m, const char *name, float p);
int sstc_model_add_flatten(sstc_model *m, const char *name);

const char *sstc_layer_kind_name(sstc_layer_kind k);

/* He (Kaiming normal, fan-in, gain sqrt(2)) for layers followed by ReLU,
 * Xavier (Glorot uniform) otherwise; biases zero; batch norm gamma 1, beta 0,
 * running mean 0, var 1. Draws from rng. */
typedef enum { SSTC_INIT_HE = 0, SSTC_INIT_XAVIER } sstc_init;
void sstc_model_init(sstc_model *m, sstc_init init, sstc_rng *rng);
void sstc_init_he(sstc_tensor *w, int fan_in, sstc_rng *rng);
void sstc_init_xavier(sstc_tensor *w, int fan_in, int fan_out, sstc_rng *rng);

void sstc_model_train(sstc_model *m, int training);

/* Forward pass in ctx: x (B, in_shape...) -> logits (B, num_classes). */
sstc_tensor *sstc_model_forward(sstc_model *m, sstc_ctx *ctx, sstc_tensor *x);

/* Gives a Linear/Conv layer a per-output scale (initialized to 1). */
int sstc_layer_add_out_scale(sstc_model *m, sstc_layer *l);

/* Named parameters and buffers, in layer order. */
typedef struct {
    char name[48];
    sstc_tensor *tensor;
    sstc_layer *layer;
    int trainable; /* 0 for running statistics */
} sstc_named_tensor;

/* Sets (copies) the input permutation: perm must hold a permutation of
 * 0..F-1, F the input size; NULL removes it. SSTC_EINVAL otherwise. */
int sstc_model_set_input_permutation(sstc_model *m, const int *perm);
/* Number of input values per sample (the product of the input shape). */
int sstc_model_input_size(const sstc_model *m);

/* Number of named tensors; fills up to cap entries of out (out may be NULL). */
int sstc_model_named_tensors(sstc_model *m, sstc_named_tensor *out, int cap);
sstc_tensor *sstc_model_find(sstc_model *m, const char *name);
/* Total number of trainable scalars. */
size_t sstc_model_num_params(sstc_model *m);
void sstc_model_zero_grad(sstc_model *m);

/* A one-line-per-layer description ("fc1 linear 784->1024") into f. */
#include <stdio.h>
void sstc_model_print(const sstc_model *m, FILE *f);

#endif
