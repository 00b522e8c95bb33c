/* The run driver on a tiny generated dataset: its files (one metrics.csv
 * layout, a summary.json that parses), an interrupted and resumed run equal
 * to an uninterrupted one (training and compression), a resume with a changed
 * config refused, a second run into a busy folder refused. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <fcntl.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "sstc/compress.h"
#include "sstc/run.h"

#include "../tiny_dataset.h"

static char dir[256];
static void make_dataset(void) { tiny_dataset_make(dir, sizeof dir, 60, 20); }
static void cleanup(void) { tiny_dataset_remove(dir); }

TestSuite(run, .init = make_dataset, .fini = cleanup);

static char cfg_text[2048];
static const char *config(const char *extra) {
    snprintf(cfg_text, sizeof cfg_text,
             "[experiment]\nname = tiny\nseed = 5\nthreads = 1\n"
             "[data]\ndataset = %s\naugment_crop = 1\n"
             "[train]\nepochs = 3\nbatch_size = 16\nlr = 0.01\nschedule = cosine\n"
             "[fc]\noutputs = 16\nbias = false\n[batchnorm]\n[relu]\n[fc]\noutputs = 2\n%s",
             dir, extra);
    return cfg_text;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s missing", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static volatile sig_atomic_t stop_flag;
static int batches, stop_at;
static int count_batches(void *u, sstc_session *s) {
    if (++batches == stop_at) stop_flag = 1;
    return 0;
}

/* Trains (or, with compress, runs the compression of) the tiny config into
 * out, stopping at global batch `stop` (-1: never) and resuming in a fresh
 * session, as a new process would. Returns metrics.csv without its timing
 * columns. */
static char *run_to_end(const char *out, const char *extra, int compress, int stop) {
    stop_flag = 0;
    batches = 0;
    stop_at = stop;
    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf %s", out);
    cr_assert_eq(system(rm), 0);
    for (int attempt = 0;; attempt++) {
        cr_assert_lt(attempt, 2, "resumed run interrupted again");
        sstc_session *s = NULL;
        cr_assert_eq(sstc_session_open_text(&s, config(extra), "tiny.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
        sstc_session_set_quiet(s, 1);
        sstc_session_set_stop(s, &stop_flag);
        sstc_session_set_hooks(s, &(sstc_train_hooks){.after_step = count_batches});
        int rc;
        if (compress) {
            sstc_compress_run_opts o = {.outdir = out, .resume = attempt > 0};
            rc = sstc_compress_run(s, &o, NULL);
        } else {
            sstc_run_opts o = {.outdir = out, .resume = attempt > 0};
            rc = sstc_run(s, &o, NULL, NULL);
        }
        sstc_session_close(s);
        if (rc == SSTC_EINTR) {
            cr_assert_not_null(strstr(sstc_errmsg(), "checkpoint saved"), "%s", sstc_errmsg());
            cr_assert_eq(batches, stop, "stopped after batch %d, asked for %d", batches, stop);
            stop_flag = 0;
            continue;
        }
        cr_assert_eq(rc, 0, "%s", sstc_errmsg());
        break;
    }
    cr_assert(stop < 0 || batches >= stop, "the run never reached batch %d (stopped after %d)", stop, batches);
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.csv", out);
    char *text = strdup(slurp(path));
    /* drop the last two columns (seconds, images/s) of every line */
    char *o = text;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *c = strrchr(line, ',');
        if (c) *c = 0;
        c = strrchr(line, ',');
        if (c) *c = 0;
        size_t n = strlen(line);
        memmove(o, line, n);
        o += n;
        *o++ = '\n';
    }
    *o = 0;
    return text;
}

Test(run, training_writes_one_metrics_layout_and_a_summary) {
    char out[300];
    snprintf(out, sizeof out, "%s/r1", dir);
    char *m = run_to_end(out, "", 0, -1);
    cr_assert(!strncmp(m, "epoch,phase,K,lr,train_loss,train_error,test_loss,test_error,val_loss,val_error\n1,float,,", 88),
              "%s", m);
    cr_assert_not_null(strstr(m, "\n3,float,,"), "%s", m);
    cr_assert_null(strstr(m, "\n4,"), "%s", m);
    char path[400];
    snprintf(path, sizeof path, "%s/summary.json", out);
    cJSON *j = NULL;
    cr_assert_eq(sstc_read_json(path, &j), 0, "%s", sstc_errmsg());
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "method")), "float");
    cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "epochs")), 3);
    cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "seed")), 5);
    double err = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "test_error"));
    cr_assert(err >= 0 && err < 0.3, "test error %g", err);
    cJSON_Delete(j);
    free(m);
}

Test(run, interrupted_and_resumed_training_equals_uninterrupted) {
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/ra", dir);
    snprintf(b, sizeof b, "%s/rb", dir);
    char *ma = run_to_end(a, "", 0, -1);
    char *mb = run_to_end(b, "", 0, 6); /* 4 batches per epoch: inside epoch 2 */
    cr_assert_str_eq(ma, mb);
    free(ma);
    free(mb);
}

Test(run, interrupted_and_resumed_compression_equals_uninterrupted) {
    const char *spec = "[compress]\nN = 4\nK = 1\nschedule = 2,1\nstage_epochs = 1\nretrain_epochs = 2\nbn_batches = 3\n";
    char a[300], b[300], c[300];
    snprintf(a, sizeof a, "%s/ca", dir);
    snprintf(b, sizeof b, "%s/cb", dir);
    snprintf(c, sizeof c, "%s/cc", dir);
    char *ma = run_to_end(a, spec, 1, -1);
    char *mb = run_to_end(b, spec, 1, 5);  /* inside the float training */
    char *mc = run_to_end(c, spec, 1, 22); /* 12 float + 8 pruning batches: inside the quantized retraining */
    cr_assert(!strncmp(ma, "epoch,phase,K,lr", 16), "%s", ma);
    cr_assert_not_null(strstr(ma, "\n1,prune,2,"), "%s", ma);
    cr_assert_not_null(strstr(ma, "\n2,prune,1,"), "%s", ma);
    cr_assert_not_null(strstr(ma, "\n4,quant,1,"), "%s", ma);
    cr_assert_str_eq(ma, mb);
    cr_assert_str_eq(ma, mc);
    char p1[400], p2[400];
    snprintf(p1, sizeof p1, "%s/summary.json", a);
    snprintf(p2, sizeof p2, "%s/summary.json", c);
    cJSON *j1 = NULL, *j2 = NULL;
    cr_assert_eq(sstc_read_json(p1, &j1), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_read_json(p2, &j2), 0, "%s", sstc_errmsg());
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j1, "method")), "sst");
    cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j1, "test_error")),
                 cJSON_GetNumberValue(cJSON_GetObjectItem(j2, "test_error")));
    cJSON_Delete(j1);
    cJSON_Delete(j2);
    free(ma);
    free(mb);
    free(mc);
}

Test(run, resuming_with_a_changed_config_is_refused_unless_allowed) {
    char out[300];
    snprintf(out, sizeof out, "%s/rc", dir);
    free(run_to_end(out, "", 0, -1));
    sstc_session *s = NULL;
    const char *ov[] = {"train.lr=0.02"};
    cr_assert_eq(sstc_session_open_text(&s, config(""), "tiny.ini", ov, 1, 1), 0, "%s", sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    sstc_run_opts o = {.outdir = out, .resume = 1};
    cr_assert_eq(sstc_run(s, &o, NULL, NULL), SSTC_ECONFIG);
    cr_assert_not_null(strstr(sstc_errmsg(), "train.lr=0.02"), "%s", sstc_errmsg());
    o.allow_config_change = 1;
    cr_assert_eq(sstc_run(s, &o, NULL, NULL), 0, "%s", sstc_errmsg());
    sstc_session_close(s);
    char path[400];
    snprintf(path, sizeof path, "%s/summary.json", out);
    cJSON *j = NULL;
    cr_assert_eq(sstc_read_json(path, &j), 0);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "config_changed_on_resume")));
    cJSON_Delete(j);
}

Test(run, a_folder_in_use_by_another_run_is_refused) {
    char out[300], lock[400];
    snprintf(out, sizeof out, "%s/busy", dir);
    cr_assert_eq(sstc_mkdirs(out), 0, "%s", sstc_errmsg());
    snprintf(lock, sizeof lock, "%s/.lock", out);
    int fd = open(lock, O_RDWR | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config(""), "tiny.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    sstc_run_opts o = {.outdir = out};
    cr_assert_eq(sstc_run(s, &o, NULL, NULL), SSTC_EBUSY);
    cr_assert_not_null(strstr(sstc_errmsg(), "in use by another run"), "%s", sstc_errmsg());
    close(fd);
    cr_assert_eq(sstc_run(s, &o, NULL, NULL), 0, "%s", sstc_errmsg());
    sstc_session_close(s);
}

Test(run, paths_too_long_and_files_in_the_way_are_errors) {
    char out[5000];
    memset(out, 'x', sizeof out - 1);
    out[sizeof out - 1] = 0;
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config(""), "tiny.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    sstc_run_opts o = {.outdir = out};
    cr_assert_eq(sstc_run(s, &o, NULL, NULL), SSTC_EINVAL);
    cr_assert_not_null(strstr(sstc_errmsg(), "too long"), "%s", sstc_errmsg());
    /* a regular file where the folder should be */
    snprintf(out, sizeof out, "%s/file", dir);
    FILE *f = fopen(out, "w");
    fclose(f);
    cr_assert_neq(sstc_run(s, &o, NULL, NULL), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "not a folder"), "%s", sstc_errmsg());
    sstc_session_close(s);
}

Test(run, resuming_a_compression_that_never_started_is_an_error) {
    char fl[300], out[300], ck[400];
    snprintf(fl, sizeof fl, "%s/fl", dir);
    snprintf(out, sizeof out, "%s/never", dir);
    snprintf(ck, sizeof ck, "%s/checkpoint.sstc", fl);
    free(run_to_end(fl, "", 0, -1));
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config("[compress]\nN = 4\nK = 1\n"), "tiny.ini", NULL, 0, 1), 0, "%s",
                 sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    sstc_compress_run_opts o = {.outdir = out, .from = ck, .resume = 1};
    cr_assert_eq(sstc_compress_run(s, &o, NULL), SSTC_EIO);
    cr_assert_not_null(strstr(sstc_errmsg(), "nothing to resume"), "%s", sstc_errmsg());
    o.resume = 0;
    cr_assert_eq(sstc_compress_run(s, &o, NULL), 0, "%s", sstc_errmsg());
    sstc_session_close(s);
}

/* The learning rate as training applies it: per batch, at the fractional
 * epoch e + b/nb. Plain SGD (no momentum, no decay) moves each weight by
 * exactly -lr*g, so each step's rate is read back from one weight. */
typedef struct {
    float *w0;
    sstc_tensor *w;
    int steps, bad;
    double worst;
} lr_probe;

static int probe_before(void *u, sstc_session *s) {
    lr_probe *p = u;
    memcpy(p->w0, p->w->data, p->w->size * sizeof(float));
    return 0;
}

static int probe_after(void *u, sstc_session *s) {
    lr_probe *p = u;
    size_t k = 0;
    for (size_t i = 1; i < p->w->size; i++)
        if (fabsf(p->w->grad[i]) > fabsf(p->w->grad[k])) k = i;
    double got = ((double)p->w0[k] - p->w->data[k]) / p->w->grad[k];
    const sstc_epoch_state *st = sstc_session_state(s);
    int nb = sstc_session_batches_per_epoch(s);
    sstc_lr_schedule sch = {.kind = SSTC_LR_COSINE, .base_lr = 0.05f, .min_lr = 0.001f, .total_epochs = 3};
    /* after_step runs before the state moves on: st->batch is this step's batch */
    double want = sstc_lr_at(&sch, st->epoch + (double)st->batch / nb);
    double rel = fabs(got - want) / want;
    if (rel > p->worst) p->worst = rel;
    p->bad += rel > 0.01;
    p->steps++;
    return 0;
}

Test(run, the_learning_rate_changes_every_batch_as_the_schedule_says) {
    char out[600];
    snprintf(out, sizeof out, "%s/lr", dir);
    sstc_session *s = NULL;
    const char *ovr[] = {"train.lr=0.05", "train.min_lr=0.001", "train.optimizer=sgd", "train.momentum=0",
                         "train.weight_decay=0", "data.augment_crop=0"};
    cr_assert_eq(sstc_session_open_text(&s, config(""), "tiny.ini", ovr, 6, 1), 0, "%s", sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    lr_probe p = {0};
    p.w = sstc_model_find(sstc_session_model(s), "fc2.weight");
    cr_assert_not_null(p.w);
    p.w0 = malloc(p.w->size * sizeof(float));
    sstc_session_set_hooks(s, &(sstc_train_hooks){.user = &p, .before_forward = probe_before, .after_step = probe_after});
    sstc_run_opts o = {.outdir = out};
    cr_assert_eq(sstc_run(s, &o, NULL, NULL), 0, "%s", sstc_errmsg());
    cr_assert_eq(p.steps, 3 * sstc_session_batches_per_epoch(s));
    cr_assert_eq(p.bad, 0, "%d of %d steps used another rate (worst relative difference %g)", p.bad, p.steps, p.worst);
    free(p.w0);
    sstc_session_close(s);
}

/* Weights that stop being finite: no checkpoint of a broken network is
 * written, and the message names the epoch whose checkpoint is kept. */
static int poison_at; /* global step at which fc2.weight[0] becomes NaN */
static int poison(void *u, sstc_session *s) {
    (void)u;
    if (++batches == poison_at) sstc_model_find(sstc_session_model(s), "fc2.weight")->data[0] = NAN;
    return 0;
}

Test(run, non_finite_weights_stop_the_run_and_keep_the_last_good_checkpoint) {
    for (int k = 0; k < 2; k++) {
        char out[600];
        snprintf(out, sizeof out, "%s/nan%d", dir, k);
        sstc_session *s = NULL;
        cr_assert_eq(sstc_session_open_text(&s, config(""), "tiny.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
        sstc_session_set_quiet(s, 1);
        int nb = sstc_session_batches_per_epoch(s);
        batches = 0;
        /* k = 0: in the middle of epoch 2 (its training loss turns NaN);
         * k = 1: after the last step of epoch 2 (only its evaluation sees it) */
        poison_at = k == 0 ? nb + 2 : 2 * nb;
        sstc_session_set_hooks(s, &(sstc_train_hooks){.after_step = poison});
        sstc_run_opts o = {.outdir = out};
        cr_assert_eq(sstc_run(s, &o, NULL, NULL), SSTC_ENUMERIC, "case %d: %s", k, sstc_errmsg());
        const char *want = k == 0 ? "the checkpoint of epoch 1, training loss" : "after epoch 2 the test loss is nan";
        cr_assert_not_null(strstr(sstc_errmsg(), want), "case %d: %s", k, sstc_errmsg());
        sstc_session_close(s);
        /* the checkpoint on disk is epoch 1's, with finite weights */
        char ck[700];
        snprintf(ck, sizeof ck, "%s/checkpoint.sstc", out);
        cr_assert_eq(sstc_checkpoint_open(&s, ck, 0, NULL, NULL), 0, "%s", sstc_errmsg());
        cr_assert_eq(sstc_session_state(s)->epoch, 1, "case %d", k);
        cr_assert(isfinite(sstc_model_find(sstc_session_model(s), "fc2.weight")->data[0]), "case %d", k);
        sstc_session_close(s);
    }
}

/* [compress] distill: the float network teaches the coded one. The loss
 * changes (runs differ from the same run without it), the summary records it,
 * and an interrupted and resumed run (the teacher reloaded from the float
 * checkpoint) equals an uninterrupted one. */
Test(run, compression_with_distillation_resumes_exactly_and_changes_the_run) {
    const char *spec = "[compress]\nN = 4\nK = 1\nschedule = 2,1\nstage_epochs = 1\nretrain_epochs = 2\nbn_batches = 3\n"
                       "distill = 0.7\ndistill_temperature = 3\n";
    const char *plain = "[compress]\nN = 4\nK = 1\nschedule = 2,1\nstage_epochs = 1\nretrain_epochs = 2\nbn_batches = 3\n";
    char a[300], b[300], c[300];
    snprintf(a, sizeof a, "%s/da", dir);
    snprintf(b, sizeof b, "%s/db", dir);
    snprintf(c, sizeof c, "%s/dc", dir);
    char *ma = run_to_end(a, spec, 1, -1);
    char *mb = run_to_end(b, spec, 1, 22); /* inside the quantized retraining */
    char *mc = run_to_end(c, plain, 1, -1);
    cr_assert_str_eq(ma, mb);
    /* the float epochs are the same; the compression epochs are not */
    cr_assert_not_null(strstr(ma, "\n1,prune,2,"), "%s", ma);
    cr_assert(strcmp(strstr(ma, "\n1,prune,2,"), strstr(mc, "\n1,prune,2,")) != 0, "distillation changed nothing");
    char p1[400];
    snprintf(p1, sizeof p1, "%s/summary.json", a);
    cJSON *j = NULL;
    cr_assert_eq(sstc_read_json(p1, &j), 0, "%s", sstc_errmsg());
    cr_assert_float_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "distill")), 0.7, 1e-6);
    cr_assert_float_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "distill_temperature")), 3, 1e-6);
    cJSON_Delete(j);
    free(ma), free(mb), free(mc);
}
