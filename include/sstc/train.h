/* Training sessions, checkpoints and exports.
 *
 * A session holds everything a run needs: the parsed config (and its text, so
 * checkpoints can rebuild the network), the datasets and pipeline, the model,
 * the optimizer and a step context. It is opaque: the functions below are its
 * whole interface. The epoch loop, metrics, checkpoints and summaries of a run
 * live in the run driver (sstc/run.h). Training is deterministic: every random
 * draw of epoch e, batch b (shuffling, augmentation, dropout) comes from a
 * generator seeded with a hash of (seed, e, b), so a run interrupted anywhere
 * and resumed from its checkpoint ends with the same weights and metrics as an
 * uninterrupted one with the same thread count. */
#ifndef SSTC_TRAIN_H
#define SSTC_TRAIN_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "sstc/config.h"
#include "sstc/data.h"
#include "sstc/io.h"

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
#define SSTC_MAX_EPOCHS 1000000 /* as [train] epochs allows */

typedef struct {
    int epoch;            /* 0-based epoch under way (== epochs done) */
    int batch;            /* batches done in this epoch */
    double loss_sum;      /* sum of per-batch mean loss * batch size */
    double err_sum;       /* misclassified training samples */
    long seen;            /* training samples seen this epoch */
    double seconds;       /* training time spent in this epoch so far */
    double total_seconds; /* wall time of all finished epochs (training + evaluation) */
} sstc_epoch_state;


/* Loads the config (applying overrides), the train and test sets, computes
 * the normalization, builds and initializes the model and optimizer into a
 * new session *out. load_data must be 1 (the data give the input shape; a
 * checkpoint, which knows it, opens without data through
 * sstc_checkpoint_open). On failure *out is NULL and nothing is leaked. */
int sstc_session_open(sstc_session **out, const char *config_path, const char *const *overrides,
                      int noverrides, int load_data);
/* The same from config text in memory. */
int sstc_session_open_text(sstc_session **out, const char *text, const char *path,
                           const char *const *overrides, int noverrides, int load_data);
/* Frees the session (NULL is fine). */
void sstc_session_close(sstc_session *s);
/* Loads datasets for an open session (if not loaded yet); dataset may
 * replace the config's (NULL keeps it). */
int sstc_session_load_data(sstc_session *s, const char *dataset);

/* ---- what a session holds ---------------------------------------------- */
const sstc_config *sstc_session_config(const sstc_session *s);
/* The config as the run uses it: changes (e.g. test_flip for `eval --flip`)
 * apply to the evaluations that follow. */
sstc_config *sstc_session_config_mut(sstc_session *s);
sstc_model *sstc_session_model(sstc_session *s);
sstc_optimizer *sstc_session_optimizer(sstc_session *s);
/* Where the run stands (epoch, batch, running sums); callers that drive
 * epochs themselves advance it. */
sstc_epoch_state *sstc_session_state(sstc_session *s);
/* NULL until data are loaded. */
const sstc_dataset *sstc_session_train_set(const sstc_session *s);
const sstc_dataset *sstc_session_test_set(const sstc_session *s);
/* Training images used for training (the rest is the validation split). */
int sstc_session_num_train(const sstc_session *s);
int sstc_session_num_val(const sstc_session *s);
const sstc_normalizer *sstc_session_normalizer(const sstc_session *s);
/* Per-sample input shape (C,H,W) and number of classes. */
void sstc_session_shape(const sstc_session *s, int *c, int *h, int *w, int *classes);
/* Batches per training epoch (0 before data are loaded). */
int sstc_session_batches_per_epoch(const sstc_session *s);

/* Hooks run around every step (NULL removes them); stop is polled between
 * batches (set by a signal handler); quiet turns progress output off; log
 * receives progress (stderr by default). */
void sstc_session_set_hooks(sstc_session *s, const sstc_train_hooks *hooks);
const sstc_train_hooks *sstc_session_hooks(const sstc_session *s);
void sstc_session_set_stop(sstc_session *s, volatile sig_atomic_t *stop);
volatile sig_atomic_t *sstc_session_stop_flag(const sstc_session *s);
void sstc_session_set_quiet(sstc_session *s, int quiet);
int sstc_session_quiet(const sstc_session *s);
void sstc_session_set_log(sstc_session *s, FILE *log);
/* The learning-rate schedule of sstc_session_train_epoch sees epoch - offset
 * (the phases of a compression run each start their schedule at 0). */
void sstc_session_set_lr_offset(sstc_session *s, int offset);

/* Trains from s->state (resuming mid-epoch if state.batch > 0) to the end of
 * the epoch at learning rate from the schedule. Returns 0 at the end of the
 * epoch, SSTC_EINTR if *s->stop was set (state then tells where it stopped),
 * SSTC_ENUMERIC on a NaN/Inf loss. total_epochs is only used for progress. */
int sstc_session_train_epoch(sstc_session *s, const sstc_lr_schedule *lr, int total_epochs,
                             const char *tag, double *train_loss, double *train_err);
/* Loss and error of the model in evaluation mode over idx (NULL = all) of ds. */
int sstc_session_evaluate(sstc_session *s, const sstc_dataset *ds, const int *idx, int count,
                          sstc_eval_result *out);
/* Loss and error on the test set (the validation split with val = 1). */
int sstc_session_evaluate_test(sstc_session *s, sstc_eval_result *out);
int sstc_session_evaluate_val(sstc_session *s, sstc_eval_result *out);
/* Per-sample logits (count x classes) into out. */
int sstc_session_logits(sstc_session *s, const sstc_dataset *ds, int count, float *out);
/* Forward passes in training mode over `batches` training batches (wrapping
 * around the epoch), without gradients or updates, dropout off, with the
 * before_forward hook: every batch-norm layer's running statistics become
 * the plain average of the batch statistics seen (batch-norm re-estimation
 * for a network whose weights changed, e.g. after coding). The batch order
 * comes from `seed`. Polls the stop flag (SSTC_EINTR). */
int sstc_session_reestimate_batchnorm(sstc_session *s, int batches, uint64_t seed);

/* How a one-rank training step applies the optimizer: 1 each parameter as
 * soon as the backward pass has completed its gradient (the environment's
 * SSTC_STEP=layer), 0 (the default) all of them after the pass. Both give
 * the same bits; tests and benchmarks compare them. */
void sstc_train_force_step_mode(int layerwise);

/* Knowledge distillation: from now on the training loss of s is
 *   (1 - alpha) * label loss + alpha * sstc_distill_kl(logits, p_teacher, T)
 * where p_teacher = softmax(teacher logits / T) on the same images, the
 * teacher run in inference mode (running statistics, no dropout) in the same
 * step. The session takes ownership of teacher (closed with s; the previous
 * one, if any, is closed now); teacher NULL or alpha 0 turns distillation off.
 * SSTC_ESHAPE unless the teacher takes the same input and gives as many
 * classes. */
int sstc_session_set_teacher(sstc_session *s, sstc_session *teacher, float alpha, float T);

/* ---- checkpoints --------------------------------------------------------
 * Written atomically (temporary file, fsync, rename). They carry a magic, a
 * version, the config text and overrides (the network description), every
 * named tensor, the optimizer state, the epoch state, the normalization, an
 * optional extra blob (used by compression) and a CRC-32. */
int sstc_checkpoint_save(const sstc_session *s, const char *path, const void *extra, size_t extra_len);
/* Opens a session (*out) from a checkpoint: rebuilds the network from the
 * stored config, restores tensors, optimizer and state. extra (if not NULL)
 * receives a malloc'd copy of the extra blob. load_data as in
 * sstc_session_open. */
int sstc_checkpoint_open(sstc_session **out, const char *path, int load_data, void **extra, size_t *extra_len);
/* Restores tensors/optimizer/state from a checkpoint into an already open
 * session, checking that it describes the same network. */
int sstc_checkpoint_restore(sstc_session *s, const char *path, void **extra, size_t *extra_len);

/* SSTC_ECONFIG, naming the first difference, unless the checkpoint was
 * written with the same config text and --set options as the session has. */
int sstc_checkpoint_check_config(const sstc_session *s, const char *path);

/* ---- NumPy export --------------------------------------------------------
 * Writes every named tensor as a float32 .npy member "<name>.npy" of a .npz
 * (zip) archive, so np.load(FILE)["fc1.weight"] gives the (out,in) matrix. */
int sstc_export_npz(sstc_model *m, const char *path);
/* The same plus input.mean and input.std (float32, one per channel): the
 * normalization x = (pixel/255 - mean) / std the network expects. */
int sstc_session_export_npz(sstc_session *s, const char *path);
/* The inverse: reads every tensor of the session's network from an archive
 * named as docs/export.md says (an error names the array and both shapes; an
 * array the network does not have, a missing one, a non-float32 or
 * non-finite value are errors, after which the session is not to be used), plus
 * <layer>.out_scale, input.permutation and input.mean/std when present. */
int sstc_session_import_npz(sstc_session *s, const char *path);


#endif
