/* Shared by the layer kinds' files; not part of the public API. */
#ifndef SSTC_NN_LAYERS_INTERNAL_H
#define SSTC_NN_LAYERS_INTERNAL_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "sstc/layer.h"

#define LF(f) offsetof(sstc_layer_spec, f)

/* One descriptor per file. */
extern const sstc_layer_desc sstc_layer_linear, sstc_layer_conv2d, sstc_layer_batchnorm, sstc_layer_relu,
    sstc_layer_maxpool, sstc_layer_avgpool, sstc_layer_dropout, sstc_layer_flatten, sstc_layer_shortcut,
    sstc_layer_route, sstc_layer_globalavgpool;

/* Product of the layer's per-sample input shape. */
int sstc_layer_in_features(const sstc_layer *l);
/* Output shape = input shape. */
void sstc_layer_same_shape(sstc_layer *l);
/* SSTC_ESHAPE naming the layer unless its input is an image (C,H,W). */
int sstc_layer_need_image(const sstc_layer *l);
/* Output size of a k x k window with stride and pad over the layer's input
 * image; SSTC_EINVAL / SSTC_ESHAPE naming the layer when it does not fit. */
int sstc_layer_window_out(const sstc_layer *l, int k, int stride, int pad, int *oh, int *ow);
/* A trainable parameter in the model's context. */
sstc_tensor *sstc_layer_param(sstc_model *m, int ndim, const int *shape);
/* The weight a layer computes with: its weight, or the override values with
 * gradients routed to the weight (straight-through estimator). */
sstc_tensor *sstc_layer_effective_weight(sstc_ctx *ctx, sstc_layer *l);
/* Absolute index of a layer reference written in a config (negative: relative
 * to layer index self) and a check that it names the input (-1) or a layer
 * before self; what names the key in messages ("from", "layers"). */
int sstc_layer_resolve_ref(const sstc_layer *l, int self, const char *what, int ref, int *abs);
/* Per-sample output shape of absolute layer j (-1: the model's input). */
void sstc_layer_shape_of(const sstc_model *m, int j, int *ndim, int *shape);
/* "16x32x32" or "10" into buf. */
const char *sstc_layer_shape_str(int ndim, const int *shape, char *buf, size_t n);
/* The name of absolute layer j, or "the input". */
const char *sstc_layer_ref_name(const sstc_model *m, int j);

/* Max and average pooling share their keys (size, stride = size, pad) and
 * their shape inference. */
extern const sstc_key_def sstc_layer_pool_keys[];
int sstc_layer_pool_complete(sstc_layer_spec *s, char *err, size_t errlen);
int sstc_layer_pool_build(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s);
void sstc_layer_window_describe(const sstc_model *m, const sstc_layer *l, char *buf, size_t n);

#endif
