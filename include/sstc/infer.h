/* Multiplication-free inference from a .sst file.
 *
 * An engine is built from a coded network (sstc_sst_model, or a .sst file)
 * and needs nothing else: no training code, no checkpoint, no config. For
 * every coded FC or convolution layer it looks group indices up in the code
 * table and adds or subtracts inputs; the only multiply is the per-output
 * affine y = a*acc + b, which folds delta, the row normalization, the layer's
 * bias and any batch norm that follows (docs/inference.md). Float layers (left
 * uncoded by a config) use OpenBLAS. Dropout is dropped, a ReLU that follows
 * a layer is fused into it. Skip connections (shortcut and route records)
 * read earlier outputs, which a liveness plan keeps in buffers of their own
 * while they are needed.
 *
 * Two activation modes:
 *  - SSTC_ENGINE_FLOAT: float activations; gives the logits of the coded
 *    network as the training engine computes them (to float rounding);
 *  - SSTC_ENGINE_INT8: 8-bit activations (symmetric, one scale per tensor,
 *    calibrated with sstc_engine_calibrate) and 32-bit accumulators.
 *
 * Inputs are either normalized floats (B,C,H,W), x = (pixel/255 - mean)/std
 * with the file's mean and std, or raw 8-bit pixels (B,C,H,W) to which the
 * engine applies that preprocessing itself. The engine knows nothing of
 * datasets: callers load images and labels and pass them as arrays.
 *
 * An engine owns scratch memory and is not thread-safe: use one per thread
 * (its kernels are parallel with OpenMP already). Every function returns
 * SSTC_OK or a negative SSTC_E* code with a message in sstc_errmsg(). */
#ifndef SSTC_INFER_H
#define SSTC_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "sstc/sst.h"

typedef struct sstc_engine sstc_engine;

typedef enum { SSTC_ENGINE_FLOAT = 0, SSTC_ENGINE_INT8 = 1 } sstc_engine_mode;

/* Builds an engine; the model may be freed afterwards. The model is
 * validated first (sstc_sst_validate). */
int sstc_engine_create(const sstc_sst_model *model, sstc_engine **out);
/* Reads a .sst file (any defect is SSTC_EFORMAT, from the reader) and builds an engine. */
int sstc_engine_load(const char *path, sstc_engine **out);
void sstc_engine_free(sstc_engine *e);

typedef struct {
    int in_c, in_h, in_w, num_classes;
    int n_ops;               /* operations after folding and fusing */
    int coded_layers, float_layers;
    size_t coded_index_bytes;/* resident group indices of the coded layers */
    size_t float_weight_bytes;
    size_t max_activation;   /* largest activation of one sample, in values */
    int activation_buffers;  /* buffers of the liveness plan (2 for a plain chain) */
    size_t activation_values;/* their total size for one sample, in values (the input apart) */
    int calibrated;          /* int8 scales are set */
    int avx2;                /* the AVX2 kernels are in use */
    uint32_t eval_flags;     /* the file's SSTC_SST_EVAL_* (SSTC_SST_EVAL_FLIP: its figures are
                              * flip-averaged, and infer/eval average so by default) */
} sstc_engine_info;

void sstc_engine_get_info(const sstc_engine *e, sstc_engine_info *info);

/* Selects the activation mode. SSTC_ENGINE_INT8 needs a calibrated engine
 * (SSTC_ESTATE otherwise). */
int sstc_engine_set_mode(sstc_engine *e, sstc_engine_mode mode);
sstc_engine_mode sstc_engine_get_mode(const sstc_engine *e);

/* x: batch x C x H x W normalized floats; logits: batch x num_classes. */
int sstc_engine_forward(sstc_engine *e, const float *x, int batch, float *logits);
/* pixels: batch x C x H x W bytes (0..255); the file's preprocessing is applied. */
int sstc_engine_forward_pixels(sstc_engine *e, const uint8_t *pixels, int batch, float *logits);

/* Sets the int8 activation scales. The input's scale follows from the
 * preprocessing (the largest |x| any pixel can give, over 127); every op
 * that computes new values (FC, convolution, unfolded batch norm, shortcut)
 * gets max |output| / 127 over the float-mode outputs for the n images
 * `pixels` (n x C x H x W bytes; a few hundred training images). ReLU, pools
 * and the global average pool keep their input's scale; a route takes the
 * largest of its sources' scales. Calibration runs in float mode and leaves
 * the mode unchanged. */
int sstc_engine_calibrate(sstc_engine *e, const uint8_t *pixels, int n);

/* Predicted class (first maximum) of each of n logit rows. */
void sstc_engine_argmax(const float *logits, int n, int num_classes, int *pred);

typedef struct {
    long count, errors;
    double loss;             /* mean cross-entropy of the logits */
    double error;            /* errors / count */
    double seconds;          /* wall time of the forward passes */
} sstc_infer_result;

/* Checks that images of c x h x w pixels, labelled 0..num_classes-1, fit
 * the network (SSTC_ESHAPE with both shapes in the message otherwise). */
int sstc_engine_check_input(const sstc_engine *e, int c, int h, int w, int num_classes);
/* Runs the n images `pixels` (n x C x H x W bytes) in batches of `batch`
 * (<= 0: 64) in the current mode and scores them against labels (n, each
 * 0..num_classes-1; SSTC_EINVAL naming the image otherwise). pred (n, may be
 * NULL) receives the predicted classes. */
int sstc_engine_evaluate_pixels(sstc_engine *e, const uint8_t *pixels, const int *labels, long n, int batch, int *pred,
                                sstc_infer_result *result);
/* The same; with flip, each image's class probabilities are averaged with
 * those of its mirror image (left-right) before scoring, as training's
 * [data] test_flip evaluates (loss: -log of the averaged probability). */
int sstc_engine_evaluate_flip(sstc_engine *e, const uint8_t *pixels, const int *labels, long n, int batch, int flip,
                              int *pred, sstc_infer_result *result);

/* ---- C export ----------------------------------------------------------------- */

typedef struct {
    size_t code_bytes;       /* packed indices and code tables */
    size_t param_bytes;      /* affines, float weights, input tables (one mode) */
    size_t buffer_bytes[2];  /* the activation buffers (input included): [0] float mode, [1] int8 mode */
    size_t scratch_bytes;    /* the group-table scratch of coded fc layers (both modes: 4-byte sums) */
    int buffers;             /* how many: 2 for a plain chain, more to keep skip-connection sources */
    int int8;                /* the int8 variant was exported (the engine was calibrated) */
} sstc_export_c_info;

/* Writes DIR/sstc_net.h (the network as const arrays: packed group indices
 * at ceil(log2 E) bits, code tables, affines, and the activation buffers'
 * places computed now by the engine's liveness plan) and DIR/sstc_net.c, a
 * standalone runner with no allocation and no library beyond <stdint.h> and
 * <string.h>:
 *     int sstc_net_run(const uint8_t *pixels, float *logits);
 * Compiling with -DSSTC_NET_INT8 selects 8-bit activations (only if the
 * engine was calibrated; otherwise that variant is an #error). DIR is
 * created if missing. info may be NULL. */
int sstc_engine_export_c(const sstc_engine *e, const char *dir, sstc_export_c_info *info);

#endif
