/* sstc train / eval / export. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "sstc/compress.h"
#include "sstc/train.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

void cli_install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

volatile sig_atomic_t *cli_stop_flag(void) { return &stop_requested; }

int cli_mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST) return -1;
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char train_usage[] =
    "usage: sstc train CONFIG [--out DIR] [--epochs E] [--set SECTION.KEY=VALUE ...] [--resume] [--quiet]\n"
    "\n"
    "Trains the network a config describes, evaluating on the test set (and the\n"
    "validation split, when configured) after every epoch.\n"
    "\n"
    "  --out DIR        output folder (default runs/<experiment name>/): metrics.csv,\n"
    "                   checkpoint.sstc (written atomically every epoch), summary.json\n"
    "  --epochs E       train for E epochs (same as --set train.epochs=E)\n"
    "  --set S.K=V      override a config key; S is experiment, data, train, compress\n"
    "                   or a layer's name (fc1, conv2, ...); repeatable\n"
    "  --resume         continue from DIR/checkpoint.sstc (model, optimizer, epoch and\n"
    "                   position in the epoch); the result equals an uninterrupted run\n"
    "  --quiet          no progress output, only errors\n"
    "\n"
    "SIGINT or SIGTERM saves a checkpoint after the current batch and exits (status 130);\n"
    "run the same command with --resume to continue. See docs/config.md for the keys.\n";

typedef struct {
    const char *config, *out;
    const char *overrides[128];
    int noverrides;
    int resume, quiet;
    char epochs_buf[64];
} train_args;

static int parse_train_args(int argc, char **argv, train_args *a, const char *usage) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--out") && i + 1 < argc) a->out = argv[++i];
        else if (!strcmp(s, "--epochs") && i + 1 < argc) {
            char *end;
            long e = strtol(argv[++i], &end, 10);
            if (*end || e < 0 || e > 1000000) {
                fprintf(stderr, "sstc: --epochs '%s': expected a whole number >= 0\n", argv[i]);
                return 2;
            }
            snprintf(a->epochs_buf, sizeof a->epochs_buf, "train.epochs=%ld", e);
        } else if (!strcmp(s, "--set") && i + 1 < argc) {
            if (a->noverrides >= 120) {
                fprintf(stderr, "sstc: too many --set options\n");
                return 2;
            }
            a->overrides[a->noverrides++] = argv[++i];
        } else if (!strcmp(s, "--resume")) a->resume = 1;
        else if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) a->quiet = 1;
        else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "sstc: unknown or incomplete option '%s'\n\n%s", s, usage);
            return 2;
        } else if (!a->config) a->config = s;
        else {
            fprintf(stderr, "sstc: unexpected argument '%s'\n\n%s", s, usage);
            return 2;
        }
    }
    if (!a->config) {
        fprintf(stderr, "sstc: missing CONFIG\n\n%s", usage);
        return 2;
    }
    if (a->epochs_buf[0]) a->overrides[a->noverrides++] = a->epochs_buf;
    return 0;
}

void json_escape(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

/* Keeps the header and the rows of epochs <= keep (for --resume). */
static int rewrite_metrics(const char *path, int keep) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    char line[1024];
    int first = 1;
    while (fgets(line, sizeof line, f)) {
        if (first || atoi(line) <= keep) fputs(line, mem);
        first = 0;
    }
    fclose(f);
    fclose(mem);
    int rc = sstc_write_atomic(path, out, len);
    free(out);
    return rc;
}

int cmd_train(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(train_usage, stdout);
        return 0;
    }
    train_args a;
    int rc = parse_train_args(argc, argv, &a, train_usage);
    if (rc) return rc;
    sstc_session s;
    if (!a.quiet) fprintf(stderr, "loading %s\n", a.config);
    if (sstc_session_open(&s, a.config, a.overrides, a.noverrides, 1)) {
        fprintf(stderr, "sstc train: %s\n", sstc_errmsg());
        sstc_session_close(&s);
        return 1;
    }
    char outdir[1024];
    if (a.out) snprintf(outdir, sizeof outdir, "%s", a.out);
    else snprintf(outdir, sizeof outdir, "runs/%s", s.cfg.name);
    int status = cli_train_session(&s, outdir, a.config, a.resume, a.quiet);
    sstc_session_close(&s);
    return status;
}

int cli_train_session(sstc_session *s, const char *outdir, const char *config_path, int resume, int quiet) {
    int rc;
    s->quiet = quiet;
    const sstc_config *c = &s->cfg;
    char ckpt[1100], metrics[1100], summary[1100];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.sstc", outdir);
    snprintf(metrics, sizeof metrics, "%s/metrics.csv", outdir);
    snprintf(summary, sizeof summary, "%s/summary.json", outdir);
    if (cli_mkdirs(outdir)) {
        fprintf(stderr, "sstc train: cannot create output folder %s: %s\n", outdir, strerror(errno));
        return 1;
    }
    if (resume) {
        struct stat st;
        if (stat(ckpt, &st)) {
            fprintf(stderr, "sstc train: --resume: no checkpoint at %s (nothing to resume; run without --resume)\n", ckpt);
            return 1;
        }
        if (sstc_checkpoint_restore(s, ckpt, NULL, NULL)) {
            fprintf(stderr, "sstc train: --resume: %s\n", sstc_errmsg());
            return 1;
        }
        if (rewrite_metrics(metrics, s->state.epoch) && s->state.epoch > 0)
            fprintf(stderr, "sstc train: warning: %s missing; earlier epochs' rows are lost\n", metrics);
        if (!quiet)
            fprintf(stderr, "resuming from %s at epoch %d, batch %d\n", ckpt, s->state.epoch + 1, s->state.batch);
    }
    FILE *mf = fopen(metrics, resume ? "a" : "w");
    if (!mf) {
        fprintf(stderr, "sstc train: cannot write %s: %s\n", metrics, strerror(errno));
        return 1;
    }
    if (!resume || ftell(mf) == 0)
        fprintf(mf, "epoch,lr,train_loss,train_error,test_loss,test_error,val_loss,val_error,seconds,images_per_s\n");
    fflush(mf);
    if (!quiet) {
        fprintf(stderr, "%s: %s, %d train / %d validation / %d test images of %dx%dx%d, %zu parameters\n", c->name,
                c->dataset, s->ntrain, s->nval, s->test.n, s->in_c, s->in_h, s->in_w, sstc_model_num_params(s->model));
        sstc_model_print(s->model, stderr);
    }
    cli_install_stop_handlers();
    s->stop = cli_stop_flag();
    sstc_eval_result test = {0}, val = {0};
    /* the last epoch's training figures, also when nothing is left to run */
    double tl = s->state.seen ? s->state.loss_sum / s->state.seen : 0;
    double te = s->state.seen ? s->state.err_sum / s->state.seen : 0;
    int status = 0;
    while (s->state.epoch < c->epochs) {
        double t0 = now();
        rc = sstc_session_train_epoch(s, &c->lr, c->epochs, c->name, &tl, &te);
        if (rc == SSTC_EINTR) {
            s->state.total_seconds += now() - t0;
            if (sstc_checkpoint_save(s, ckpt, NULL, 0)) {
                fprintf(stderr, "sstc train: interrupted, and saving the checkpoint failed: %s\n", sstc_errmsg());
                status = 1;
            } else {
                fprintf(stderr, "\nsstc: interrupted at epoch %d, batch %d; checkpoint saved to %s\n"
                                "continue with the same command and --resume\n",
                        s->state.epoch + 1, s->state.batch, ckpt);
                status = 130;
            }
            break;
        }
        if (rc) {
            fprintf(stderr, "\nsstc train: %s\n", sstc_errmsg());
            if (rc == SSTC_ENUMERIC) fprintf(stderr, "the last good checkpoint (%s) is left as it was\n", ckpt);
            status = 1;
            break;
        }
        float lr = sstc_lr_at(&c->lr, s->state.epoch);
        rc = sstc_session_evaluate(s, &s->test, NULL, s->test.n, &test);
        if (!rc && s->nval) rc = sstc_session_evaluate(s, &s->train, s->val_idx, s->nval, &val);
        if (rc == SSTC_EINTR) {
            /* the epoch's training is done: the checkpoint says so, and --resume
             * goes straight to this evaluation */
            s->state.total_seconds += now() - t0;
            if (sstc_checkpoint_save(s, ckpt, NULL, 0)) {
                fprintf(stderr, "sstc train: interrupted, and saving the checkpoint failed: %s\n", sstc_errmsg());
                status = 1;
            } else {
                fprintf(stderr, "\nsstc: interrupted during evaluation of epoch %d; checkpoint saved to %s\n"
                                "continue with the same command and --resume\n", s->state.epoch + 1, ckpt);
                status = 130;
            }
            break;
        }
        if (rc) {
            fprintf(stderr, "sstc train: evaluation failed: %s\n", sstc_errmsg());
            status = 1;
            break;
        }
        double secs = now() - t0;
        double ips = s->state.seen / (s->state.seconds > 0 ? s->state.seconds : 1);
        s->state.epoch++;
        s->state.batch = 0;
        s->state.total_seconds += secs;
        fprintf(mf, "%d,%.6g,%.6f,%.6f,%.6f,%.6f,", s->state.epoch, (double)lr, tl, te, test.loss, test.error);
        if (s->nval) fprintf(mf, "%.6f,%.6f,", val.loss, val.error);
        else fprintf(mf, ",,");
        fprintf(mf, "%.3f,%.1f\n", secs, ips);
        fflush(mf);
        if (sstc_checkpoint_save(s, ckpt, NULL, 0)) {
            fprintf(stderr, "sstc train: cannot save the checkpoint: %s\n", sstc_errmsg());
            status = 1;
            break;
        }
        if (!quiet) {
            fprintf(stderr, "epoch %d/%d  lr %.3g  train loss %.4f err %.2f%%  test loss %.4f err %.2f%%", s->state.epoch,
                    c->epochs, (double)lr, tl, 100 * te, test.loss, 100 * test.error);
            if (s->nval) fprintf(stderr, "  val err %.2f%%", 100 * val.error);
            fprintf(stderr, "  %.1fs %.0f img/s\n", secs, ips);
        }
    }
    fclose(mf);
    if (status == 0) {
        if (test.count == 0 && sstc_session_evaluate(s, &s->test, NULL, s->test.n, &test)) {
            fprintf(stderr, "sstc train: evaluation failed: %s\n", sstc_errmsg());
            return 1;
        }
        FILE *f = fopen(summary, "w");
        if (!f) {
            fprintf(stderr, "sstc train: cannot write %s\n", summary);
            status = 1;
        } else {
            fprintf(f, "{\n  \"name\": ");
            json_escape(f, c->name);
            fprintf(f, ",\n  \"dataset\": ");
            json_escape(f, c->dataset);
            fprintf(f, ",\n  \"method\": \"float\",\n  \"seed\": %llu,\n  \"threads\": %d,\n  \"epochs\": %d,\n",
                    (unsigned long long)c->seed, c->threads, c->epochs);
            fprintf(f, "  \"params\": %zu,\n  \"train_loss\": %.6f,\n  \"train_error\": %.6f,\n", sstc_model_num_params(s->model), tl, te);
            fprintf(f, "  \"test_loss\": %.6f,\n  \"test_error\": %.6f,\n", test.loss, test.error);
            if (s->nval) fprintf(f, "  \"val_error\": %.6f,\n", val.error);
            fprintf(f, "  \"seconds\": %.1f\n}\n", s->state.total_seconds);
            fclose(f);
            if (!quiet)
                fprintf(stderr, "done: test error %.2f%% after %d epochs in %.0f s; results in %s/\n", 100 * test.error,
                        c->epochs, s->state.total_seconds, outdir);
        }
    }
    (void)config_path;
    return status;
}

static const char eval_usage[] =
    "usage: sstc eval CHECKPOINT [--data NAME] [--flip]\n"
    "\n"
    "Prints the loss and error of a checkpoint's network on a test set: the one\n"
    "its config names, or NAME (a known dataset or an image-folder path with the\n"
    "same image shape and classes). --flip averages the class probabilities of\n"
    "each image and its mirror image (as [data] test_flip = true does; the\n"
    "checkpoint's own setting is used otherwise). A .sst file (MODEL.sst) runs in\n"
    "the multiplication-free inference engine and needs --data NAME.\n";

int cmd_eval(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(eval_usage, stdout);
        return 0;
    }
    const char *ckpt = NULL, *data = NULL;
    int flip = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--flip")) flip = 1;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "sstc eval: unknown or incomplete option '%s'\n\n%s", argv[i], eval_usage);
            return 2;
        } else if (!ckpt) ckpt = argv[i];
        else {
            fprintf(stderr, "sstc eval: unexpected argument '%s'\n\n%s", argv[i], eval_usage);
            return 2;
        }
    }
    if (!ckpt) {
        fprintf(stderr, "sstc eval: missing CHECKPOINT\n\n%s", eval_usage);
        return 2;
    }
    if (flip && cli_is_sst_file(ckpt)) {
        fprintf(stderr, "sstc eval: --flip works on checkpoints, not on .sst files (%s)\n", ckpt);
        return 2;
    }
    return flip ? cli_eval_checkpoint_flip(ckpt, data, 1) : cli_eval_file(ckpt, data);
}

/* Opens a training or compression checkpoint; a compression checkpoint also
 * restores its coding state (quantized weights, input permutation), so the
 * network computes as the end of `sstc compress` did. *coded says which. */
static int open_checkpoint(sstc_session *s, sstc_compressor *c, const char *ckpt, int *coded) {
    memset(c, 0, sizeof *c);
    void *extra = NULL;
    size_t elen = 0;
    int rc = sstc_checkpoint_open(s, ckpt, 0, &extra, &elen);
    *coded = !rc && sstc_compress_state_present(extra, elen);
    if (*coded) rc = sstc_compress_init(c, s) || sstc_compress_state_load(c, extra, elen);
    free(extra);
    return rc;
}

int cli_eval_checkpoint(const char *ckpt, const char *data) { return cli_eval_checkpoint_flip(ckpt, data, 0); }

int cli_eval_checkpoint_flip(const char *ckpt, const char *data, int flip) {
    sstc_session s;
    sstc_eval_result r;
    sstc_compressor c;
    int coded;
    int rc = open_checkpoint(&s, &c, ckpt, &coded);
    if (!rc && flip) s.cfg.test_flip = 1;
    if (rc || sstc_session_load_data(&s, data) || sstc_session_evaluate(&s, &s.test, NULL, s.test.n, &r)) {
        fprintf(stderr, "sstc eval: %s\n", sstc_errmsg());
        sstc_compress_free(&c);
        sstc_session_close(&s);
        return 1;
    }
    sstc_compress_free(&c);
    printf("test_loss=%.6f test_error=%.6f count=%ld\n", r.loss, r.error, r.count);
    sstc_session_close(&s);
    return 0;
}

static const char export_usage[] =
    "usage: sstc export CHECKPOINT --npz FILE\n"
    "       sstc export MODEL.sst --c-header DIR [--data NAME]\n"
    "\n"
    "With --c-header, writes DIR/sstc_net.h (the coded network as const arrays)\n"
    "and DIR/sstc_net.c, a standalone runner (no malloc, nothing but <stdint.h>;\n"
    "-DSSTC_NET_INT8 for 8-bit activations, calibrated on NAME's training\n"
    "images when --data is given); see docs/inference.md. Otherwise:\n"
    "\n"
    "Writes the network's weights, biases, batch-norm parameters and running\n"
    "statistics as a NumPy .npz archive with one float32 array per name:\n"
    "  fc1.weight (out,in)  conv1.weight (OC,C,KH,KW)  <layer>.bias (out)\n"
    "  bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var (C)\n"
    "(the names and layout of PyTorch's state_dict; see docs/export.md). A\n"
    "compression checkpoint gives its decoded weights (delta*t) and, if the\n"
    "inputs were interleaved, input.permutation (int32).\n";

int cmd_export(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(export_usage, stdout);
        return 0;
    }
    const char *ckpt = NULL, *npz = NULL, *cdir = NULL, *cdata = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--npz") && i + 1 < argc) npz = argv[++i];
        else if (!strcmp(argv[i], "--c-header") && i + 1 < argc) cdir = argv[++i];
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) cdata = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr, "sstc export: unknown or incomplete option '%s'\n\n%s", argv[i], export_usage);
            return 2;
        } else if (!ckpt) ckpt = argv[i];
        else {
            fprintf(stderr, "sstc export: unexpected argument '%s'\n\n%s", argv[i], export_usage);
            return 2;
        }
    }
    if (ckpt && cdir && !npz) return cli_export_c_header(ckpt, cdir, cdata);
    if (!ckpt || !npz || cdir || cdata) {
        fprintf(stderr, "sstc export: need CHECKPOINT and --npz FILE, or MODEL.sst and --c-header DIR\n\n%s", export_usage);
        return 2;
    }
    sstc_session s;
    sstc_compressor c;
    int coded;
    /* a compression checkpoint exports its decoded weights (delta*t), like model.npz */
    if (open_checkpoint(&s, &c, ckpt, &coded) ||
        (coded ? sstc_compress_write_npz(&c, npz) : sstc_export_npz(s.model, npz))) {
        fprintf(stderr, "sstc export: %s\n", sstc_errmsg());
        sstc_compress_free(&c);
        sstc_session_close(&s);
        return 1;
    }
    printf("wrote %s\n", npz);
    sstc_compress_free(&c);
    sstc_session_close(&s);
    return 0;
}

int cli_eval_file(const char *path, const char *data) {
    return cli_is_sst_file(path) ? cli_eval_sst(path, data) : cli_eval_checkpoint(path, data);
}
