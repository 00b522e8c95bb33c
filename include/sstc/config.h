/* Experiment configuration: INI files (parsed with inih) in the spirit of
 * Darknet's .cfg: [experiment], [data], [train] and [compress] sections, then
 * one section per layer, in order. Every key, its default and its meaning is
 * documented in docs/config.md. Errors name file:line and what was expected. */
#ifndef SSTC_CONFIG_H
#define SSTC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "sstc/layer.h"
#include "sstc/nn.h"
#include "sstc/optim.h"

#define SSTC_MAX_LAYERS 256
#define SSTC_MAX_STAGES 16
#define SSTC_MAX_CODED 64

/* Layer sections fill a sstc_layer_spec each (sstc/layer.h). */

typedef enum { SSTC_NORM_NONE = 0, SSTC_NORM_DATASET, SSTC_NORM_GIVEN } sstc_norm_mode;

/* The coding method ([compress] method). */
typedef enum { SSTC_METHOD_SST = 0, SSTC_METHOD_TERNARY, SSTC_METHOD_NM } sstc_method;
/* Weight normalization before coding ([compress] normalize): flags. */
typedef enum {
    SSTC_CNORM_NONE = 0,
    SSTC_CNORM_ROW = 1,            /* rows scaled to the layer's RMS */
    SSTC_CNORM_INTERLEAVE = 2,     /* fan-in renumbered round-robin by importance */
    SSTC_CNORM_ROW_INTERLEAVE = 3
} sstc_compress_norm;
/* Which weight layers are coded ([compress] layers). */
typedef enum { SSTC_SELECT_ALL = 0, SSTC_SELECT_FC, SSTC_SELECT_CONV, SSTC_SELECT_NAMES } sstc_select_mode;
typedef struct {
    sstc_select_mode mode;
    int nnames;                    /* SSTC_SELECT_NAMES: the listed layer names */
    char names[SSTC_MAX_CODED][32];
} sstc_layer_select;

const char *sstc_method_name(sstc_method m);            /* "sst", "ternary", "nm" */
const char *sstc_compress_norm_name(sstc_compress_norm n); /* "none", "row", ... */
/* The selection as the config writes it ("all", "fc", "conv", "fc1,fc2"). */
void sstc_layer_select_str(const sstc_layer_select *sel, char *buf, size_t n);

typedef struct {
    /* [compress] (see docs/config.md), parsed once into these types */
    int present;
    sstc_method method;
    int N, K;
    sstc_compress_norm normalize;
    int schedule[SSTC_MAX_STAGES]; /* K_1 > ... > K_S = K; nstages = 0 means direct */
    int nstages;
    int stage_epochs;           /* masked retraining epochs per stage */
    int retrain_epochs;         /* final retraining with the quantizer in the loop */
    float retrain_lr;
    sstc_lr_kind retrain_schedule;
    sstc_layer_select layers;
    int skip_first, skip_last;  /* leave the first/last coded-kind layer in float */
    int row_delta;              /* delta = row: one step per output row (0: one per layer) */
    int refit_every;            /* batches between delta refits (0 = once per epoch) */
    int bn_batches;             /* batches used to re-estimate batch-norm statistics */
    float distill;              /* weight of the distillation term (0: off) */
    float distill_temperature;  /* its softmax temperature */
    int line;
} sstc_compress_spec;

typedef struct {
    char path[512];             /* file it came from */
    /* [experiment] */
    char name[64];
    uint64_t seed;
    int threads;
    int ranks;                  /* MPI ranks of the job (set by sstc-mpi; sstc/dist.h) */
    /* [data] */
    char dataset[256];
    sstc_norm_mode normalize;
    int norm_channels;          /* values given for mean (and std) */
    int norm_std_channels;
    float mean[4], std[4];
    int augment_crop, augment_flip;
    int augment_cutout;         /* side of the cutout square, 0 = off */
    int test_flip;              /* evaluation averages each image and its mirror image */
    int validation;             /* images held out of the training set */
    int train_subset;           /* > 0: train on the first this many of the (seeded) training split */
    /* [train] */
    int epochs, batch_size, eval_batch_size;
    float label_smoothing;      /* of the training loss; evaluation uses plain cross-entropy */
    sstc_optim_config optim;
    sstc_lr_schedule lr;
    sstc_init init;
    /* layers */
    int nlayers;
    sstc_layer_spec layers[SSTC_MAX_LAYERS];
    sstc_compress_spec compress;
} sstc_config;

/* Parses an INI file. Overrides ("section.key=value", where section is
 * experiment, data, train, compress or a layer's name) are applied after the
 * file, in order, and reported as "--set ..." in errors. */
int sstc_config_load(const char *path, const char *const *overrides, int noverrides, sstc_config *out);
/* Reads a config file's text (malloc'd, NUL-terminated): only a regular,
 * non-empty file of at most SSTC_MAX_CONFIG_BYTES without NUL bytes. */
#define SSTC_MAX_CONFIG_BYTES (1 << 22)
int sstc_read_config_file(const char *path, char **text);
/* The same from text in memory (path is only used in messages). */
int sstc_config_parse(const char *text, const char *path, const char *const *overrides, int noverrides,
                      sstc_config *out);

/* Builds the model the layer sections describe for per-sample input shape
 * (C,H,W) and checks that the last layer has num_classes outputs. */
sstc_model *sstc_config_build_model(const sstc_config *cfg, int c, int h, int w, int num_classes);

#endif
