/* The run driver: the one epoch loop behind `sstc train`, `sstc compress`
 * and `sstc run`.
 *
 * sstc_run owns everything a run does around the training step: the epoch
 * loop, evaluation after every epoch (test set, and the validation split when
 * configured), Ctrl-C / SIGTERM handling (a checkpoint after the current
 * batch), --resume, a checkpoint every epoch, metrics.csv and summary.json.
 * summary.json holds the final figures (test_error; with [data] test_flip
 * that is flip-averaged and test_error_single is the single-view one).
 * Every run writes the same metrics.csv layout:
 *
 *   epoch,phase,K,lr,train_loss,train_error,test_loss,test_error,val_loss,val_error,seconds,images_per_s
 *
 * (phase "float" for plain training; a compression run names its phases
 * "prune" and "quant", with the K of the phase; K is empty for float).
 *
 * Training is a run with one phase and no hooks. Other runs plug in through
 * sstc_run_hooks: their own epoch step, phase names, a state blob stored in
 * every checkpoint, a final step, extra output files and summary fields.
 * src/compress/pipeline.c is the example. */
#ifndef SSTC_RUN_H
#define SSTC_RUN_H

#include "sstc/train.h"

struct cJSON;

/* What a run plugs in; every member may be NULL / 0. */
typedef struct {
    void *user;
    /* Epochs of the whole run when train_epoch is set (0 is fine: the finish
     * hook still runs); without train_epoch, the config's [train] epochs. */
    int total_epochs;
    /* Trains the epoch the session's state is at (resuming mid-epoch when
     * state.batch > 0) and sets *lr to the learning rate at its start.
     * Default: sstc_session_train_epoch with the config's schedule. Returns as
     * sstc_session_train_epoch (SSTC_EINTR when stopped). */
    int (*train_epoch)(void *user, sstc_session *s, double *loss, double *err, float *lr);
    /* The phase of epoch e (0-based) for metrics.csv and progress lines, and
     * its K (0: none). Default "float". */
    void (*phase)(void *user, int epoch, char *name, size_t n, int *K);
    /* The blob stored with every checkpoint, and its restoration on
     * --resume (load_state gets NULL, 0 when the checkpoint has none). */
    int (*save_state)(void *user, void **blob, size_t *len);
    int (*load_state)(void *user, const void *blob, size_t len);
    /* After the last epoch, before the final evaluation (e.g. batch-norm
     * re-estimation). May return SSTC_EINTR: the last epoch's checkpoint is
     * on disk and --resume redoes only this step. */
    int (*finish)(void *user, sstc_session *s);
    /* After the final checkpoint: further output files in outdir. */
    int (*write_outputs)(void *user, sstc_session *s, const char *outdir);
    /* Adds members to summary.json's object (cJSON). */
    int (*summary)(void *user, sstc_session *s, struct cJSON *obj);
} sstc_run_hooks;

typedef struct {
    const char *outdir;      /* receives metrics.csv, checkpoint.sstc, summary.json */
    const char *method;      /* summary.json "method" ("float" if NULL) */
    int resume;              /* continue from outdir/checkpoint.sstc (which must exist) */
    const char *resume_hint; /* the command that continues the run, for messages (may be NULL) */
    int allow_config_change; /* resume although the config or --set options changed (recorded in summary.json) */
} sstc_run_opts;

typedef struct {
    sstc_eval_result test, val;  /* after the last epoch (and the finish hook) */
    sstc_eval_result test_single; /* with [data] test_flip: the test set without flip averaging */
    double train_loss, train_error;
    double seconds;              /* wall time of the whole run, resumed parts included */
    int epochs;
} sstc_run_result;

/* Runs from the session's state to the end. Returns 0 when done (summary
 * written), SSTC_EINTR when the session's stop flag ended it (a checkpoint
 * was saved; the message says how to continue), another SSTC_E* code on
 * failure. result may be NULL. */
int sstc_run(sstc_session *s, const sstc_run_opts *opts, const sstc_run_hooks *hooks, sstc_run_result *result);

/* Writes a JSON object atomically (temporary file, fsync, rename). */
int sstc_write_json(const char *path, const struct cJSON *obj);
/* Reads a JSON file (at most 16 MiB, a regular file); free with cJSON_Delete. */
int sstc_read_json(const char *path, struct cJSON **obj);

/* Creates a folder and its parents (like mkdir -p); SSTC_EIO with the reason. */
int sstc_mkdirs(const char *path);
/* snprintf that fails (SSTC_EINVAL, naming the path) instead of truncating. */
int sstc_path(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
