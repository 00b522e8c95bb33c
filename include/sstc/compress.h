/* The compression pipeline: weight distribution normalization, staged
 * (gradual) pruning with masked retraining, ternarization into the (N,K)
 * structured sparse ternary constraint and retraining with the quantizer in
 * the loop (straight-through estimator), batch-norm re-estimation, export.
 * docs/method.md describes the method; sstc_compress_run (at the end) runs
 * all of it through the run driver (sstc/run.h).
 *
 * A run is a sequence of phases over one global epoch counter:
 *   prune stage s (keep K_s of N, float, mask held)   stage_epochs each
 *   final phase:  quantize (sst, ternary)              retrain_epochs
 *                 or masked float at K (nm)
 * so a checkpoint (epoch, batch) plus the per-layer deltas and masks is the
 * whole state, and --resume works anywhere, across phases. */
#ifndef SSTC_COMPRESS_H
#define SSTC_COMPRESS_H

#include "sstc/run.h"
#include "sstc/train.h"

typedef enum { SSTC_PHASE_PRUNE = 0, SSTC_PHASE_QUANT } sstc_phase_kind;

typedef struct {
    sstc_phase_kind kind;
    int K;            /* kept per group (prune) or code K (quant) */
    int first_epoch;  /* global epoch at which the phase starts */
    int epochs;
} sstc_phase;

typedef struct {
    int layer;        /* index into model->layers */
    int rows, cols;   /* weight matrix (out x fan_in) */
    float delta;      /* per-layer step of the ternary code */
    float *row_delta; /* one step per row instead ([compress] delta = row), else NULL */
    uint8_t *mask;    /* pruning mask (rows x cols), NULL when not pruning */
    float *q;         /* quantized weights delta*T (rows x cols) */
    int8_t *t;        /* ternary codes T (rows x cols) */
    int scaled;       /* row normalization moved scale into an out_scale */
} sstc_coded_layer;

typedef struct sstc_compressor {
    sstc_session *s;
    sstc_compress_spec spec;
    sstc_method method;
    int N, K;                  /* code actually used ((1,1) for plain ternary) */
    int ncoded;
    sstc_coded_layer coded[SSTC_MAX_CODED];
    int nphases;
    sstc_phase phases[SSTC_MAX_STAGES + 1];
    int total_epochs;
    int quantizing;            /* weight_override installed */
    int phase_started;         /* phase setup (masks/deltas) done for the current phase */
    long steps_in_phase;
    float float_test_error;    /* of the starting network */
    int bn_reestimated;
    int interleaved;           /* layers whose fan-in interleaving reordered */
    sstc_train_hooks chain;    /* caller's hooks, run after the pipeline's own */
} sstc_compressor;

/* Validates the [compress] spec against the session's network (layer names,
 * (N,K), schedule) and fills the plan; nothing is changed yet. */
int sstc_compress_init(sstc_compressor *c, sstc_session *s);
void sstc_compress_free(sstc_compressor *c);

/* Interleaving (if the spec asks, normalize = interleave or row+interleave):
 * renumbers the channels feeding each coded layer so that every group of N
 * mixes important and unimportant inputs (see compress.c); then
 * row normalization (if the spec asks): every coded layer's rows are scaled to
 * one common RMS (that of the whole layer, which keeps the optimizer's step
 * sizes meaningful) and the inverse scale moved into the following batch norm's
 * running statistics or into a new per-output scale; the network's function
 * is unchanged (up to float rounding). Returns the largest absolute logit
 * change over `check` test images in *max_diff (check 0: no check). */
int sstc_compress_normalize(sstc_compressor *c, int check, double *max_diff);

/* Adds the out_scale buffers the normalization would add, without touching
 * weights (before restoring a compressed checkpoint). */
int sstc_compress_prepare_structure(sstc_compressor *c);

/* The phase containing global epoch e (nphases if e is past the end). */
int sstc_compress_phase_of(const sstc_compressor *c, int epoch);

/* Trains one epoch of the current phase (state.epoch), doing the phase's set-up
 * when it starts. Returns as sstc_session_train_epoch. */
int sstc_compress_train_epoch(sstc_compressor *c, double *train_loss, double *train_err, float *lr);

/* Final steps: freeze the quantized weights and re-estimate batch-norm
 * statistics with the spec's bn_batches training batches. */
int sstc_compress_finish(sstc_compressor *c);

/* Serializes the compression state (deltas, masks, flags) for a checkpoint's
 * extra section, and restores it. */
int sstc_compress_state_save(const sstc_compressor *c, void **blob, size_t *len);
int sstc_compress_state_load(sstc_compressor *c, const void *blob, size_t len);
/* 1 if a checkpoint extra section holds compression state. */
int sstc_compress_state_present(const void *blob, size_t len);

/* Bits per coded weight and compression against float32 of the method. */
double sstc_compress_bits_per_weight(const sstc_compressor *c);

/* Writes the coded network (.sst): coded layers as packed codes with their
 * folded affine, uncoded layers in float. Only for sst/ternary methods. */
int sstc_compress_write_sst(const sstc_compressor *c, const char *path);
/* Writes the decoded weights (delta*t, the values the network computes
 * with) and every other tensor as .npz. */
int sstc_compress_write_npz(const sstc_compressor *c, const char *path);

/* ---- a whole compression run ---------------------------------------------- */

typedef struct {
    const char *outdir;      /* NULL: sstc_compress_default_outdir */
    const char *from;        /* float checkpoint to start from; NULL: one is trained into OUTDIR/float/ */
    int resume;              /* continue OUTDIR/checkpoint.sstc (or the float training before it) */
    const char *resume_hint; /* the command that continues the run, for messages */
    int allow_config_change; /* see sstc_run_opts */
} sstc_compress_run_opts;

typedef struct {
    sstc_run_result run;     /* the coded network's figures (after batch-norm re-estimation) */
    float float_test_error;  /* of the float network it started from */
    double bits_per_weight;
    int ncoded;
    char outdir[1024];
    char sst_path[1100];     /* "" for the nm method (no .sst file) */
} sstc_compress_run_result;

/* runs/<experiment name>-<method>-<N>-<K> */
int sstc_compress_default_outdir(const sstc_session *s, char *buf, size_t n);

/* Runs the [compress] section of the session's config: float network (from
 * opts->from, or trained into OUTDIR/float/ by the run driver), weight
 * normalization (checked to keep the outputs), the phases through the run
 * driver (metrics.csv, checkpoints, --resume, Ctrl-C), batch-norm
 * re-estimation, then model.npz, model.sst and summary.json in OUTDIR.
 * Returns 0, SSTC_EINTR (interrupted, a checkpoint saved) or an error. */
int sstc_compress_run(sstc_session *s, const sstc_compress_run_opts *opts, sstc_compress_run_result *result);

#endif
