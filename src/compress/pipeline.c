/* A whole compression run: the compressor's phases plugged into the run
 * driver (include/sstc/run.h). The driver owns the loop, metrics, checkpoints,
 * interrupts and the summary; this file says what an epoch of each phase does,
 * what a checkpoint carries besides the network (deltas, masks, the input
 * permutation) and what a finished run writes (model.npz, model.sst). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "sstc/compress.h"

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

int sstc_compress_default_outdir(const sstc_session *s, char *buf, size_t n) {
    const sstc_config *cfg = sstc_session_config(s);
    const sstc_compress_spec *z = &cfg->compress;
    int N = z->method == SSTC_METHOD_TERNARY ? 1 : z->N, K = z->method == SSTC_METHOD_TERNARY ? 1 : z->K;
    return sstc_path(buf, n, "runs/%s-%s-%d-%d", cfg->name, sstc_method_name(z->method), N, K);
}

typedef struct {
    sstc_compressor *c;
    sstc_compress_run_result *res;
} pipeline;

static int hook_train_epoch(void *user, sstc_session *s, double *loss, double *err, float *lr) {
    pipeline *p = user;
    return sstc_compress_train_epoch(p->c, loss, err, lr);
}

static void hook_phase(void *user, int epoch, char *name, size_t n, int *K) {
    pipeline *p = user;
    int ph = sstc_compress_phase_of(p->c, epoch);
    if (ph >= p->c->nphases) ph = p->c->nphases - 1;
    snprintf(name, n, "%s", p->c->phases[ph].kind == SSTC_PHASE_PRUNE ? "prune" : "quant");
    *K = p->c->phases[ph].K;
}

static int hook_save(void *user, void **blob, size_t *len) {
    pipeline *p = user;
    return sstc_compress_state_save(p->c, blob, len);
}

static int hook_load(void *user, const void *blob, size_t len) {
    pipeline *p = user;
    if (!sstc_compress_state_present(blob, len))
        return sstc_fail(SSTC_EFORMAT, "the checkpoint holds no compression state (a float training checkpoint?)");
    return sstc_compress_state_load(p->c, blob, len);
}

static int hook_finish(void *user, sstc_session *s) {
    pipeline *p = user;
    return sstc_compress_finish(p->c);
}

static int hook_outputs(void *user, sstc_session *s, const char *outdir) {
    pipeline *p = user;
    char npz[1100];
    if (sstc_path(npz, sizeof npz, "%s/model.npz", outdir) || sstc_compress_write_npz(p->c, npz)) return sstc_errcode();
    p->res->sst_path[0] = 0;
    if (p->c->method == SSTC_METHOD_NM) return 0; /* float N:M sparsity has no .sst encoding */
    char sst[1100];
    if (sstc_path(sst, sizeof sst, "%s/model.sst", outdir) || sstc_compress_write_sst(p->c, sst)) return sstc_errcode();
    snprintf(p->res->sst_path, sizeof p->res->sst_path, "%s", sst);
    return 0;
}

static int hook_summary(void *user, sstc_session *s, cJSON *o) {
    pipeline *p = user;
    const sstc_compressor *c = p->c;
    const sstc_compress_spec *z = &c->spec;
    char sched[128] = "direct", sel[SSTC_MAX_CODED * 33];
    size_t off = 0;
    for (int i = 0; i < z->nstages && off < sizeof sched; i++)
        off += (size_t)snprintf(sched + off, sizeof sched - off, "%s%d", i ? "-" : "", z->schedule[i]);
    sstc_layer_select_str(&z->layers, sel, sizeof sel);
    double bpw = sstc_compress_bits_per_weight(c);
    cJSON_AddNumberToObject(o, "N", c->N);
    cJSON_AddNumberToObject(o, "K", c->K);
    cJSON_AddStringToObject(o, "normalize", sstc_compress_norm_name(z->normalize));
    cJSON_AddStringToObject(o, "schedule", sched);
    cJSON_AddStringToObject(o, "layers", sel);
    cJSON *names = cJSON_AddArrayToObject(o, "coded_layers");
    sstc_model *m = sstc_session_model(s);
    for (int k = 0; names && k < c->ncoded; k++)
        cJSON_AddItemToArray(names, cJSON_CreateString(m->layers[c->coded[k].layer].name));
    cJSON_AddNumberToObject(o, "stage_epochs", z->stage_epochs);
    cJSON_AddNumberToObject(o, "retrain_epochs", z->retrain_epochs);
    cJSON_AddNumberToObject(o, "distill", z->distill);
    cJSON_AddStringToObject(o, "delta", z->row_delta ? "row" : "layer");
    if (z->distill > 0) cJSON_AddNumberToObject(o, "distill_temperature", z->distill_temperature);
    cJSON_AddNumberToObject(o, "bits_per_weight", bpw);
    cJSON_AddNumberToObject(o, "compression", 32.0 / bpw);
    /* a float: rounded to the digits it holds */
    cJSON_AddNumberToObject(o, "float_test_error", round((double)c->float_test_error * 1e7) / 1e7);
    return 0;
}

/* The float network: from a checkpoint, or trained (or resumed) by the driver. */
static int float_network(sstc_session *s, const sstc_compress_run_opts *o, const char *outdir, const char *floatdir) {
    if (o->from) {
        if (sstc_checkpoint_restore(s, o->from, NULL, NULL)) return sstc_fail_prefix(sstc_errcode(), "--from %s: ", o->from);
        return 0;
    }
    char fck[1200];
    if (sstc_path(fck, sizeof fck, "%s/checkpoint.sstc", floatdir)) return sstc_errcode();
    int resume = o->resume && exists(fck);
    if (!sstc_session_quiet(s))
        fprintf(stderr, "%s the float network %s %s/\n", resume ? "resuming" : "training", resume ? "in" : "into", floatdir);
    sstc_run_opts ro = {.outdir = floatdir, .method = "float", .resume = resume, .resume_hint = o->resume_hint,
                        .allow_config_change = o->allow_config_change};
    return sstc_run(s, &ro, NULL, NULL);
}

/* Normalization of the float network; checks that the function is unchanged. */
static int normalize(sstc_compressor *c, sstc_session *s, const char *outdir) {
    sstc_eval_result fr;
    if (sstc_session_evaluate_test(s, &fr)) return sstc_errcode();
    c->float_test_error = (float)fr.error;
    double diff = 0;
    if (sstc_compress_normalize(c, 1000, &diff)) return sstc_fail_prefix(sstc_errcode(), "normalization: ");
    int quiet = sstc_session_quiet(s);
    sstc_compress_norm nm = c->spec.normalize;
    if (!quiet) {
        fprintf(stderr, "float network: test error %.2f%%\n", 100 * fr.error);
        if (nm & SSTC_CNORM_INTERLEAVE)
            fprintf(stderr, "interleaving: fan-in of %d coded layer%s reordered\n", c->interleaved, c->interleaved == 1 ? "" : "s");
        if (nm != SSTC_CNORM_NONE)
            fprintf(stderr, "%s: largest logit change on 1000 test images %.2e\n", sstc_compress_norm_name(nm), diff);
    }
    if (nm != SSTC_CNORM_NONE) {
        char normnpz[1200];
        if (sstc_path(normnpz, sizeof normnpz, "%s/normalized.npz", outdir) ||
            sstc_session_export_npz(s, normnpz))
            fprintf(stderr, "sstc compress: warning: %s\n", sstc_errmsg());
    }
    if (diff > 1e-3)
        return sstc_fail(SSTC_ENUMERIC, "normalization changed the network's outputs by %.3g (expected < 1e-3)", diff);
    return 0;
}

/* [compress] distill: the float network (its checkpoint: --from, or the one
 * trained into OUT/float/) teaches the network being coded. */
static int load_teacher(sstc_session *s, const sstc_compressor *c, const sstc_compress_run_opts *o, const char *floatdir) {
    char path[1200];
    if (o->from) {
        if (sstc_path(path, sizeof path, "%s", o->from)) return sstc_errcode();
    } else if (sstc_path(path, sizeof path, "%s/checkpoint.sstc", floatdir)) {
        return sstc_errcode();
    }
    sstc_session *t = NULL;
    if (sstc_checkpoint_open(&t, path, 0, NULL, NULL))
        return sstc_fail_prefix(sstc_errcode(), "[compress] distill: the teacher (the float network) %s: ", path);
    sstc_session_set_quiet(t, 1);
    if (sstc_session_set_teacher(s, t, c->spec.distill, c->spec.distill_temperature)) return sstc_errcode();
    if (!sstc_session_quiet(s))
        fprintf(stderr, "distillation from %s: weight %g, temperature %g\n", path, (double)c->spec.distill,
                (double)c->spec.distill_temperature);
    return 0;
}

int sstc_compress_run(sstc_session *s, const sstc_compress_run_opts *o, sstc_compress_run_result *res) {
    sstc_compressor c;
    sstc_compress_run_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    int rc = sstc_compress_init(&c, s);
    char ckpt[1100], floatdir[1100];
    if (rc) goto done;
    if (o->outdir) rc = sstc_path(res->outdir, sizeof res->outdir, "%s", o->outdir);
    else rc = sstc_compress_default_outdir(s, res->outdir, sizeof res->outdir);
    if (rc || (rc = sstc_path(ckpt, sizeof ckpt, "%s/checkpoint.sstc", res->outdir)) ||
        (rc = sstc_path(floatdir, sizeof floatdir, "%s/float", res->outdir)) || (rc = sstc_mkdirs(res->outdir)))
        goto done;
    int resume = o->resume && exists(ckpt);
    if (resume) {
        /* the structure the normalization added (output scales) before the tensors */
        if ((rc = sstc_compress_prepare_structure(&c))) goto done;
    } else {
        /* --resume continues what is there: the compression, or the float
         * training before it; with --from there is no float training */
        if (o->resume && (o->from || !exists(floatdir))) {
            rc = sstc_fail(SSTC_EIO, "--resume: no checkpoint in %s (nothing to resume; run without --resume)", res->outdir);
            goto done;
        }
        if ((rc = float_network(s, o, res->outdir, floatdir)) || (rc = normalize(&c, s, res->outdir))) goto done;
        *sstc_session_state(s) = (sstc_epoch_state){0};
    }
    if (c.spec.distill > 0 && (rc = load_teacher(s, &c, o, floatdir))) goto done;
    if (!sstc_session_quiet(s)) {
        char sels[SSTC_MAX_CODED * 33];
        sstc_layer_select_str(&c.spec.layers, sels, sizeof sels);
        fprintf(stderr, "coding %d layer%s (%s) with %s (N,K) = (%d,%d), %.3f bits/weight; %d phase%s, %d epochs\n", c.ncoded,
                c.ncoded == 1 ? "" : "s", sels, sstc_method_name(c.method), c.N, c.K, sstc_compress_bits_per_weight(&c),
                c.nphases, c.nphases == 1 ? "" : "s", c.total_epochs);
    }
    pipeline p = {&c, res};
    sstc_run_hooks h = {.user = &p, .total_epochs = c.total_epochs, .train_epoch = hook_train_epoch, .phase = hook_phase,
                        .save_state = hook_save, .load_state = hook_load, .finish = hook_finish,
                        .write_outputs = hook_outputs, .summary = hook_summary};
    sstc_run_opts ro = {.outdir = res->outdir, .method = sstc_method_name(c.method), .resume = resume,
                        .resume_hint = o->resume_hint, .allow_config_change = o->allow_config_change};
    rc = sstc_run(s, &ro, &h, &res->run);
    res->float_test_error = c.float_test_error;
    res->bits_per_weight = sstc_compress_bits_per_weight(&c);
    res->ncoded = c.ncoded;
done:
    sstc_compress_free(&c);
    return rc;
}
