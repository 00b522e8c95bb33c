/* The run driver (see include/sstc/run.h). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "sstc/run.h"
#include "sstc/dist.h"
#include "sstc/io.h"

#include <nettle/sha2.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int sstc_path(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= n) return sstc_fail(SSTC_EINVAL, "path too long (%d characters, at most %zu): %.120s...", k, n - 1, buf);
    return 0;
}

int sstc_mkdirs(const char *path) {
    char buf[4096];
    if (sstc_path(buf, sizeof buf, "%s", path)) return sstc_errcode();
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return sstc_fail(SSTC_EIO, "cannot create folder %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST) return sstc_fail(SSTC_EIO, "cannot create folder %s: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) || !S_ISDIR(st.st_mode)) return sstc_fail(SSTC_EIO, "%s: exists and is not a folder", buf);
    return 0;
}

int sstc_write_json(const char *path, const cJSON *obj) {
    char *text = cJSON_Print(obj);
    if (!text) return sstc_fail(SSTC_ENOMEM, "%s: cannot format JSON (out of memory)", path);
    size_t n = strlen(text);
    char *buf = realloc(text, n + 2);
    if (!buf) {
        free(text);
        return sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
    }
    buf[n] = '\n';
    int rc = sstc_write_atomic(path, buf, n + 1);
    free(buf);
    return rc;
}

int sstc_read_json(const char *path, cJSON **obj) {
    *obj = NULL;
    uint8_t *text;
    size_t n;
    if (sstc_read_file(path, 16 << 20, "JSON file", &text, &n)) return sstc_errcode();
    *obj = cJSON_ParseWithLength((const char *)text, n);
    free(text);
    if (!*obj || !cJSON_IsObject(*obj)) {
        cJSON_Delete(*obj);
        *obj = NULL;
        return sstc_fail(SSTC_EFORMAT, "%s: not a JSON object", path);
    }
    return 0;
}

/* ---- metrics.csv ---------------------------------------------------------- */

static const char metrics_header[] =
    "epoch,phase,K,lr,train_loss,train_error,test_loss,test_error,val_loss,val_error,seconds,images_per_s\n";

/* Keeps the header and the rows of epochs <= keep (for --resume): rows of an
 * epoch that the checkpoint does not hold are dropped and run again. */
static int trim_metrics(const char *path, int keep) {
    FILE *f = fopen(path, "r");
    if (!f) return keep > 0 ? sstc_fail(SSTC_EIO, "%s: missing; earlier epochs' rows are lost", path) : 0;
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    if (!mem) {
        fclose(f);
        return sstc_fail(SSTC_ENOMEM, "out of memory");
    }
    char line[1024];
    int first = 1;
    while (fgets(line, sizeof line, f)) {
        if (first) fputs(metrics_header, mem);
        else if (atoi(line) >= 1 && atoi(line) <= keep) fputs(line, mem);
        first = 0;
    }
    if (first) fputs(metrics_header, mem);
    fclose(f);
    fclose(mem);
    int rc = sstc_write_atomic(path, out, len);
    free(out);
    return rc;
}

static int append_line(const char *path, const char *line) {
    if (sstc_dist_rank() != 0) return 0; /* rank 0 writes the files */
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) return sstc_fail(SSTC_EIO, "%s: cannot append: %s", path, strerror(errno));
    size_t n = strlen(line);
    ssize_t w = write(fd, line, n);
    int e = errno;
    if (w != (ssize_t)n || fsync(fd)) {
        close(fd);
        return sstc_fail(SSTC_EIO, "%s: write failed: %s", path, w < 0 ? strerror(e) : "short write");
    }
    if (close(fd)) return sstc_fail(SSTC_EIO, "%s: close failed: %s", path, strerror(errno));
    return 0;
}

/* ---- the loop --------------------------------------------------------------- */

typedef struct {
    sstc_session *s;
    const sstc_run_opts *o;
    const sstc_run_hooks *h;
    char ckpt[4096], metrics[4096], summary[4096], lock[4096];
    int lock_fd;
    int config_changed;
} run_ctx;

static int default_train_epoch(sstc_session *s, double *loss, double *err, float *lr) {
    const sstc_config *c = &s->cfg;
    *lr = sstc_lr_at(&c->lr, s->state.epoch);
    return sstc_session_train_epoch(s, &c->lr, c->epochs, "float", loss, err);
}

static void phase_of(const run_ctx *r, int epoch, char *name, size_t n, int *K) {
    *K = 0;
    if (r->h && r->h->phase) r->h->phase(r->h->user, epoch, name, n, K);
    else snprintf(name, n, "float");
}

static int save_checkpoint(run_ctx *r) {
    void *blob = NULL;
    size_t len = 0;
    if (r->h && r->h->save_state && r->h->save_state(r->h->user, &blob, &len)) return sstc_errcode();
    int rc = sstc_checkpoint_save(r->s, r->ckpt, blob, len);
    free(blob);
    return rc;
}

/* Saves after an interrupt and says how to continue. */
static int interrupted(run_ctx *r, const char *where) {
    if (save_checkpoint(r)) return sstc_fail_prefix(sstc_errcode(), "interrupted, and saving the checkpoint failed: ");
    return sstc_fail(SSTC_EINTR, "interrupted %s; checkpoint saved to %s%s%s", where, r->ckpt,
                     r->o->resume_hint ? "\ncontinue with: " : "", r->o->resume_hint ? r->o->resume_hint : "");
}

static int restore(run_ctx *r) {
    sstc_session *s = r->s;
    struct stat st;
    if (stat(r->ckpt, &st))
        return sstc_fail(SSTC_EIO, "--resume: no checkpoint at %s (nothing to resume; run without --resume)", r->ckpt);
    if (sstc_checkpoint_check_config(s, r->ckpt)) {
        if (!r->o->allow_config_change) return sstc_fail_prefix(sstc_errcode(), "--resume: ");
        r->config_changed = 1;
        if (!s->quiet) {
            /* the refusal's advice does not apply: the change is accepted */
            const char *m = sstc_errmsg(), *cut = strstr(m, "; resume with the same config");
            fprintf(s->log, "warning: resuming with a changed configuration (accepted; summary.json records it): %.*s\n",
                    cut ? (int)(cut - m) : (int)strlen(m), m);
        }
    }
    void *blob = NULL;
    size_t len = 0;
    if (sstc_checkpoint_restore(s, r->ckpt, &blob, &len)) return sstc_fail_prefix(sstc_errcode(), "--resume: ");
    int rc = 0;
    if (r->h && r->h->load_state) rc = r->h->load_state(r->h->user, len ? blob : NULL, len);
    else if (len) rc = sstc_fail(SSTC_EFORMAT, "%s holds the state of another kind of run (e.g. a compression)", r->ckpt);
    free(blob);
    if (rc) return sstc_fail_prefix(rc, "--resume: ");
    return 0;
}

static int write_summary(run_ctx *r, const sstc_run_result *res) {
    sstc_session *s = r->s;
    const sstc_config *c = &s->cfg;
    cJSON *o = cJSON_CreateObject();
    if (!o) return sstc_fail(SSTC_ENOMEM, "summary: out of memory");
    cJSON_AddStringToObject(o, "name", c->name);
    cJSON_AddStringToObject(o, "config", c->path);
    cJSON_AddStringToObject(o, "dataset", c->dataset);
    cJSON_AddStringToObject(o, "method", r->o->method ? r->o->method : "float");
    cJSON_AddNumberToObject(o, "seed", (double)c->seed);
    cJSON_AddNumberToObject(o, "ranks", (double)sstc_dist_size());
    if (sstc_dist_size() > 1) {
        /* time in the reductions of this process (including waits for the other ranks) and bytes summed */
        cJSON_AddNumberToObject(o, "reduce_seconds", sstc_dist_reduce_seconds());
        cJSON_AddNumberToObject(o, "reduce_bytes", sstc_dist_reduce_bytes());
    }
    cJSON_AddNumberToObject(o, "threads", c->threads);
    cJSON_AddNumberToObject(o, "epochs", res->epochs);
    cJSON_AddNumberToObject(o, "params", (double)sstc_model_num_params(s->model));
    cJSON_AddNumberToObject(o, "train_loss", res->train_loss);
    cJSON_AddNumberToObject(o, "train_error", res->train_error);
    cJSON_AddNumberToObject(o, "test_loss", res->test.loss);
    cJSON_AddNumberToObject(o, "test_error", res->test.error);
    cJSON_AddBoolToObject(o, "test_flip", c->test_flip != 0);
    if (c->test_flip) {
        cJSON_AddNumberToObject(o, "test_loss_single", res->test_single.loss);
        cJSON_AddNumberToObject(o, "test_error_single", res->test_single.error);
    }
    if (s->nval) cJSON_AddNumberToObject(o, "val_error", res->val.error);
    cJSON_AddNumberToObject(o, "seconds", round(res->seconds * 10) / 10);
    if (r->config_changed) cJSON_AddBoolToObject(o, "config_changed_on_resume", 1);
    int rc = 0;
    if (r->h && r->h->summary) rc = r->h->summary(r->h->user, s, o);
    if (!rc) rc = sstc_write_json(r->summary, o);
    cJSON_Delete(o);
    return rc;
}

static void print_header(const sstc_session *s) {
    const sstc_config *c = &s->cfg;
    fprintf(s->log, "%s: %s, %d train / %d validation / %d test images of %dx%dx%d, %zu parameters\n", c->name,
            c->dataset, s->ntrain, s->nval, s->test.n, s->in_c, s->in_h, s->in_w, sstc_model_num_params(s->model));
    if (c->train_subset > 0 && c->train_subset < s->ntrain)
        fprintf(s->log, "training on %d of the %d training images ([data] train_subset)\n", c->train_subset, s->ntrain);
    if (sstc_dist_size() > 1)
        fprintf(s->log, "data-parallel over %d MPI ranks: %d images per rank and step\n", sstc_dist_size(),
                c->batch_size / sstc_dist_size());
    sstc_model_print(s->model, s->log);
}

/* One epoch: train, evaluate, a metrics row, a checkpoint. */
static int run_epoch(run_ctx *r, int total, sstc_run_result *res) {
    sstc_session *s = r->s;
    double t0 = now();
    float lr = 0;
    char phase[32];
    int K;
    phase_of(r, s->state.epoch, phase, sizeof phase, &K);
    int rc = r->h && r->h->train_epoch ? r->h->train_epoch(r->h->user, s, &res->train_loss, &res->train_error, &lr)
                                       : default_train_epoch(s, &res->train_loss, &res->train_error, &lr);
    if (rc == SSTC_EINTR) {
        s->state.total_seconds += now() - t0;
        char where[64];
        snprintf(where, sizeof where, "at epoch %d, batch %d", s->state.epoch + 1, s->state.batch);
        return interrupted(r, where);
    }
    if (rc == SSTC_ENUMERIC) {
        struct stat st;
        if (stat(r->ckpt, &st) || s->state.epoch == 0)
            return sstc_fail_prefix(rc, "(no checkpoint of a finished epoch was written yet) ");
        /* name the kept checkpoint's figures: a loss far above the first
         * epoch's means it was already diverging */
        char tl[48] = "";
        if (res->test.count) snprintf(tl, sizeof tl, ", test loss %.4g", res->test.loss);
        return sstc_fail_prefix(rc, "(the checkpoint of epoch %d, training loss %.4g%s, is left as it was) ",
                                s->state.epoch, res->train_loss, tl);
    }
    if (rc) return rc;
    rc = sstc_session_evaluate_test(s, &res->test);
    if (!rc) rc = sstc_session_evaluate_val(s, &res->val);
    if (rc == SSTC_EINTR) {
        /* the epoch's training is done: the checkpoint says so, and --resume
         * goes straight to this evaluation */
        s->state.total_seconds += now() - t0;
        return interrupted(r, "during the evaluation");
    }
    if (rc) return sstc_fail_prefix(rc, "evaluation: ");
    if (!isfinite(res->test.loss) || !isfinite(res->train_loss))
        return sstc_fail(SSTC_ENUMERIC, "after epoch %d the %s loss is %g: the weights are no longer usable; the "
                         "checkpoint of the epoch before is left as it was; lower the learning rate",
                         s->state.epoch + 1, isfinite(res->train_loss) ? "test" : "training",
                         isfinite(res->train_loss) ? res->test.loss : res->train_loss);
    double secs = now() - t0;
    double ips = s->state.seen / (s->state.seconds > 0 ? s->state.seconds : 1);
    s->state.epoch++;
    s->state.batch = 0;
    s->state.total_seconds += secs;
    char line[512], kbuf[16] = "", val[64] = ",";
    if (K > 0) snprintf(kbuf, sizeof kbuf, "%d", K);
    if (s->nval) snprintf(val, sizeof val, "%.6f,%.6f", res->val.loss, res->val.error);
    snprintf(line, sizeof line, "%d,%s,%s,%.6g,%.6f,%.6f,%.6f,%.6f,%s,%.3f,%.1f\n", s->state.epoch, phase, kbuf, (double)lr,
             res->train_loss, res->train_error, res->test.loss, res->test.error, val, secs, ips);
    if (append_line(r->metrics, line) || save_checkpoint(r)) return sstc_errcode();
    if (!s->quiet) {
        fprintf(s->log, "epoch %d/%d  %s", s->state.epoch, total, phase);
        if (K > 0) fprintf(s->log, " K=%d", K);
        fprintf(s->log, "  lr %.3g  train loss %.4f err %.2f%%  test loss %.4f err %.2f%%", (double)lr, res->train_loss,
                100 * res->train_error, res->test.loss, 100 * res->test.error);
        if (s->nval) fprintf(s->log, "  val err %.2f%%", 100 * res->val.error);
        fprintf(s->log, "  %.1fs %.0f img/s\n", secs, ips);
    }
    return 0;
}

static int lock_outdir(run_ctx *r) {
    if (sstc_dist_rank() != 0) return 0; /* rank 0 holds the lock for the job */
    r->lock_fd = open(r->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (r->lock_fd < 0) return sstc_fail(SSTC_EIO, "%s: cannot create the run lock: %s", r->lock, strerror(errno));
    if (flock(r->lock_fd, LOCK_EX | LOCK_NB)) {
        close(r->lock_fd);
        r->lock_fd = -1;
        return sstc_fail(SSTC_EBUSY, "%s is in use by another run (it holds %s); give this run another --out", r->o->outdir, r->lock);
    }
    return 0;
}

/* Several MPI ranks: the rank count the configuration records must be the
 * job's, and every rank must run the same program on the same configuration. */
static int check_job(const sstc_session *s) {
    int P = sstc_dist_size();
    if (s->cfg.ranks != P)
        return sstc_fail(SSTC_ECONFIG, "%s: this job runs %d rank%s but the configuration says [experiment] ranks = %d%s",
                         s->cfg.path, P, P == 1 ? "" : "s", s->cfg.ranks,
                         P == 1 ? " (a data-parallel run: start it with mpirun -np N build/sstc-mpi; docs/distributed.md)"
                                : " (sstc-mpi sets it to the job's size; leave it out of the config)");
    if (P == 1) return 0;
    if (s->cfg.batch_size < P)
        return sstc_fail(SSTC_ECONFIG, "%s: batch_size %d cannot be split over %d ranks (each rank needs a sample of every "
                         "batch); use at most %d ranks or a larger batch", s->cfg.path, s->cfg.batch_size, P, s->cfg.batch_size);
    struct sha256_ctx h;
    unsigned char d[SHA256_DIGEST_SIZE];
    sha256_init(&h);
    sha256_update(&h, strlen(s->cfg_text), (const uint8_t *)s->cfg_text);
    for (int i = 0; i < s->noverrides; i++) sha256_update(&h, strlen(s->overrides[i]) + 1, (const uint8_t *)s->overrides[i]);
    sha256_digest(&h, sizeof d, d);
    if (sstc_dist_check_same(d, "configurations or --set options")) return sstc_errcode();
    uint8_t *exe = NULL;
    size_t n = 0;
    if (sstc_read_file("/proc/self/exe", (size_t)1 << 30, "program", &exe, &n)) return sstc_errcode();
    sha256_init(&h);
    sha256_update(&h, n, exe);
    sha256_digest(&h, sizeof d, d);
    free(exe);
    return sstc_dist_check_same(d, "programs (sstc-mpi binaries)");
}

int sstc_run(sstc_session *s, const sstc_run_opts *o, const sstc_run_hooks *h, sstc_run_result *result) {
    if (!s || !o || !o->outdir) return sstc_fail(SSTC_EINVAL, "run: NULL session or output folder");
    if (!s->data_loaded) return sstc_fail(SSTC_ESTATE, "run: the session has no data loaded");
    if (check_job(s)) return sstc_errcode();
    run_ctx r = {.s = s, .o = o, .h = h, .lock_fd = -1};
    sstc_run_result res = {0};
    if (sstc_path(r.ckpt, sizeof r.ckpt, "%s/checkpoint.sstc", o->outdir) ||
        sstc_path(r.metrics, sizeof r.metrics, "%s/metrics.csv", o->outdir) ||
        sstc_path(r.summary, sizeof r.summary, "%s/summary.json", o->outdir) ||
        sstc_path(r.lock, sizeof r.lock, "%s/.lock", o->outdir) || sstc_mkdirs(o->outdir) || lock_outdir(&r))
        return sstc_errcode();
    int rc = 0;
    if (o->resume) {
        if (!(rc = restore(&r))) {
            rc = trim_metrics(r.metrics, s->state.epoch);
            if (!s->quiet)
                fprintf(s->log, "resuming from %s at epoch %d, batch %d\n", r.ckpt, s->state.epoch + 1, s->state.batch);
        }
    } else {
        if (sstc_dist_rank() == 0) unlink(r.summary); /* a summary is only ever the result of a finished run */
        rc = sstc_write_atomic(r.metrics, metrics_header, strlen(metrics_header));
    }
    if (rc) goto done;
    int total = h && h->train_epoch ? h->total_epochs : s->cfg.epochs;
    if (!s->quiet) print_header(s);
    /* the last epoch's training figures, also when nothing is left to run */
    res.train_loss = s->state.seen ? s->state.loss_sum / s->state.seen : 0;
    res.train_error = s->state.seen ? s->state.err_sum / s->state.seen : 0;
    while (s->state.epoch < total && !rc) rc = run_epoch(&r, total, &res);
    if (rc) goto done;
    double t0 = now();
    if (h && h->finish && (rc = h->finish(h->user, s))) {
        if (rc == SSTC_EINTR)
            rc = sstc_fail(SSTC_EINTR, "interrupted during the final step; the last epoch's checkpoint is %s%s%s", r.ckpt,
                           o->resume_hint ? "\ncontinue with: " : "", o->resume_hint ? o->resume_hint : "");
        goto done;
    }
    if ((h && h->finish) || res.test.count == 0) {
        if ((rc = sstc_session_evaluate_test(s, &res.test)) || (rc = sstc_session_evaluate_val(s, &res.val))) goto done;
    }
    s->state.total_seconds += now() - t0;
    if ((h && h->finish && (rc = save_checkpoint(&r))) ||
        (h && h->write_outputs && (rc = h->write_outputs(h->user, s, o->outdir))))
        goto done;
    if (s->cfg.test_flip) {
        /* with flip averaging, the single-view figure too, so a table can say
         * which one it compares with which */
        s->cfg.test_flip = 0;
        rc = sstc_session_evaluate_test(s, &res.test_single);
        s->cfg.test_flip = 1;
        if (rc) goto done;
    }
    res.seconds = s->state.total_seconds;
    res.epochs = total;
    rc = write_summary(&r, &res);
done:
    if (r.lock_fd >= 0) close(r.lock_fd);
    if (result) *result = res;
    return rc;
}
