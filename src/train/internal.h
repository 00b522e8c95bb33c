/* The session's layout, private to src/train (include/sstc/train.h is its
 * interface). */
#ifndef SSTC_TRAIN_INTERNAL_H
#define SSTC_TRAIN_INTERNAL_H
#include "sstc/train.h"

struct sstc_session {
    sstc_config cfg;
    char *cfg_text;                 /* the config file's text */
    char **overrides;               /* --set arguments, in order */
    int noverrides;
    sstc_dataset train, test;
    int *train_idx, *val_idx;       /* indices into train */
    int *subset_idx;                /* [data] train_subset: the chosen indices first */
    int ntrain, nval;
    int in_c, in_h, in_w, classes; /* per-sample input shape and class count */
    sstc_batcher batcher;           /* training batches */
    int batcher_ready;
    sstc_normalizer norm;
    sstc_augment aug;
    sstc_model *model;
    sstc_optimizer *opt;
    /* a step applied parameter by parameter during the backward pass */
    unsigned char *stepped; /* (opt->nparams) updated in this step */
    float step_rate;
    int step_failed;
    sstc_ctx *ctx;
    float *x;                       /* one batch of inputs */
    int *y;
    sstc_rng batch_rng;             /* reseeded per batch */
    sstc_epoch_state state;
    sstc_train_hooks hooks;
    volatile sig_atomic_t *stop;    /* set by a signal handler to stop after the current batch */
    int quiet;                      /* no progress output */
    int lr_epoch_offset;            /* the schedule sees epoch - offset (phases of a compression run) */
    FILE *log;                      /* progress output (stderr by default) */
    int data_loaded;
    float *dist_buf;                /* several MPI ranks: the flat gradient buffer */
    size_t dist_cap;
    int dist_stop;                  /* the stop flag as the ranks agreed on it */
    float *flat_data, *flat_grad;   /* several ranks: the trainable parameters, end to end */
    struct sstc_session *teacher;   /* distillation: the teacher (owned), its weight and temperature */
    float distill_alpha, distill_T;
};

/* Opens a session whose input shape, class count and normalization are known
 * (from a checkpoint) without loading data, into *s (zeroed first). */
int sstc_session_open_known(sstc_session *s, const char *text, const char *path, const char *const *overrides,
                            int noverrides, int in_c, int in_h, int in_w, int classes, const sstc_normalizer *norm);
/* Releases what an in-place session holds (not the struct itself). */
void sstc_session_release(sstc_session *s);
#endif
