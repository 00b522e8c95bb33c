/* Training sessions, checkpoints and exports.
 *
 * A session holds everything a run needs: the parsed config (and its text, so
 * checkpoints can rebuild the network), the datasets and pipeline, the model,
 * the optimizer and a step context. Training is deterministic: every random
 * draw of epoch e, batch b (shuffling, augmentation, dropout) comes from a
 * generator seeded with a hash of (seed, e, b), so a run interrupted anywhere
 * and resumed from its checkpoint ends with the same weights and metrics as an
 * uninterrupted one with the same thread count. */
#ifndef SSTC_TRAIN_H
#define SSTC_TRAIN_H

#include <signal.h>
#include <stdio.h>

#include "sstc/config.h"
#include "sstc/data.h"

typedef struct sstc_session sstc_session;

/* Called after every optimizer step (e.g. to re-apply a pruning mask or
 * recompute quantized weights) and before every forward pass. */
typedef struct {
    void *user;
    int (*before_forward)(void *user, sstc_session *s);
    int (*after_step)(void *user, sstc_session *s);
} sstc_train_hooks;

typedef struct {
    double loss, error;   /* mean loss, error fraction */
    long count;
} sstc_eval_result;

/* Progress of the epoch under way; saved in checkpoints so a run stopped
 * mid-epoch resumes at the next batch with the same running sums. */
typedef struct {
    int epoch;            /* 0-based epoch under way (== epochs done) */
    int batch;            /* batches done in this epoch */
    double loss_sum;      /* sum of per-batch mean loss * batch size */
    double err_sum;       /* misclassified training samples */
    long seen;            /* training samples seen this epoch */
    double seconds;       /* training time spent in this epoch so far */
    double total_seconds; /* wall time of all finished epochs (training + evaluation) */
} sstc_epoch_state;

struct sstc_session {
    sstc_config cfg;
    char *cfg_text;                 /* the config file's text */
    char **overrides;               /* --set arguments, in order */
    int noverrides;
    sstc_dataset train, test;
    int *train_idx, *val_idx;       /* indices into train */
    int ntrain, nval;
    int in_c, in_h, in_w, classes; /* per-sample input shape and class count */
    sstc_batcher batcher;           /* training batches */
    int batcher_ready;
    sstc_normalizer norm;
    sstc_augment aug;
    sstc_model *model;
    sstc_optimizer *opt;
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
};

/* Loads the config (applying overrides), the train and test sets, computes
 * the normalization, builds and initializes the model and optimizer.
 * load_data must be 1 (the data give the input shape; a checkpoint, which
 * knows it, opens without data through sstc_checkpoint_open). */
int sstc_session_open(sstc_session *s, const char *config_path, const char *const *overrides,
                      int noverrides, int load_data);
/* The same from config text in memory. */
int sstc_session_open_text(sstc_session *s, const char *text, const char *path,
                           const char *const *overrides, int noverrides, int load_data);
void sstc_session_close(sstc_session *s);
/* Loads datasets for an open session (if not loaded yet); dataset may
 * replace the config's (NULL keeps it). */
int sstc_session_load_data(sstc_session *s, const char *dataset);

/* Trains from s->state (resuming mid-epoch if state.batch > 0) to the end of
 * the epoch at learning rate from the schedule. Returns 0 at the end of the
 * epoch, SSTC_EINTR if *s->stop was set (state then tells where it stopped),
 * SSTC_ENUMERIC on a NaN/Inf loss. total_epochs is only used for progress. */
int sstc_session_train_epoch(sstc_session *s, const sstc_lr_schedule *lr, int total_epochs,
                             const char *tag, double *train_loss, double *train_err);
/* Loss and error of the model in evaluation mode over idx (NULL = all) of ds. */
int sstc_session_evaluate(sstc_session *s, const sstc_dataset *ds, const int *idx, int count,
                          sstc_eval_result *out);
/* Per-sample logits (count x classes) into out. */
int sstc_session_logits(sstc_session *s, const sstc_dataset *ds, int count, float *out);

/* ---- checkpoints --------------------------------------------------------
 * Written atomically (temporary file, fsync, rename). They carry a magic, a
 * version, the config text and overrides (the network description), every
 * named tensor, the optimizer state, the epoch state, the normalization, an
 * optional extra blob (used by compression) and a CRC-32. */
int sstc_checkpoint_save(const sstc_session *s, const char *path, const void *extra, size_t extra_len);
/* Opens a session from a checkpoint: rebuilds the network from the stored
 * config, restores tensors, optimizer and state. extra (if not NULL) receives
 * a malloc'd copy of the extra blob. load_data as in sstc_session_open. */
int sstc_checkpoint_open(sstc_session *s, const char *path, int load_data, void **extra, size_t *extra_len);
/* Restores tensors/optimizer/state from a checkpoint into an already open
 * session, checking that it describes the same network. */
int sstc_checkpoint_restore(sstc_session *s, const char *path, void **extra, size_t *extra_len);

/* ---- NumPy export --------------------------------------------------------
 * Writes every named tensor as a float32 .npy member "<name>.npy" of a .npz
 * (zip) archive, so np.load(FILE)["fc1.weight"] gives the (out,in) matrix. */
int sstc_export_npz(sstc_model *m, const char *path);

/* Writes a file atomically: data to path.tmp, fsync, rename over path. */
int sstc_write_atomic(const char *path, const void *data, size_t len);

#endif
