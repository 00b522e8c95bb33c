/* sstc train / eval / export: argument parsing around the library. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "sstc/compress.h"
#include "sstc/run.h"
#include "sstc/train.h"

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
    "  --allow-config-change  with --resume: accept a changed config or --set options\n"
    "                (refused otherwise; recorded in summary.json)\n"
    "  --quiet          no progress output, only errors\n"
    "\n"
    "SIGINT or SIGTERM saves a checkpoint after the current batch and exits (status 130);\n"
    "run the same command with --resume to continue. See docs/config.md for the keys.\n";

int cmd_train(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(train_usage, stdout);
        return 0;
    }
    cli_run_args a;
    sstc_session *s = NULL;
    int status = cli_parse_run_args(argc, argv, &a, "train", train_usage, 0);
    if (status || (status = cli_open_session(&a, "train", &s))) return status;
    char outdir[1024];
    sstc_run_result r;
    int rc = a.out ? sstc_path(outdir, sizeof outdir, "%s", a.out)
                   : sstc_path(outdir, sizeof outdir, "runs/%s", sstc_session_config(s)->name);
    if (!rc) {
        sstc_run_opts o = {.outdir = outdir, .method = "float", .resume = a.resume, .resume_hint = a.resume_hint,
                            .allow_config_change = a.allow_config_change};
        rc = sstc_run(s, &o, NULL, &r);
    }
    if (!rc && !a.quiet)
        fprintf(stderr, "done: test error %.2f%% after %d epochs in %.0f s; results in %s/\n", 100 * r.test.error, r.epochs,
                r.seconds, outdir);
    sstc_session_close(s);
    return cli_run_status(rc, "train");
}

static const char eval_usage[] =
    "usage: sstc eval CHECKPOINT [--data NAME] [--flip | --no-flip] [--bn-batches N]\n"
    "\n"
    "Prints the loss and error of a checkpoint's network on a test set: the one\n"
    "its config names, or NAME (a known dataset or an image-folder path with the\n"
    "same image shape and classes). --flip averages the class probabilities of\n"
    "each image and its mirror image (as [data] test_flip = true does), --no-flip\n"
    "evaluates one view per image; the checkpoint's own setting is used otherwise.\n"
    "A .sst file (MODEL.sst) runs in the multiplication-free inference engine and\n"
    "needs --data NAME; without --flip or --no-flip it is evaluated as the file\n"
    "records (flip-averaged when its network's figures were; `sstc inspect` shows\n"
    "it). The line ends with flip=0 or flip=1: which one was measured.\n"
    "\n"
    "--bn-batches N re-estimates every batch norm's running statistics first, as\n"
    "the plain average of its batch statistics over N training batches (forward\n"
    "passes in training mode, no updates; checkpoints only): the same error as\n"
    "without it means the stored statistics are not what limits the network.\n";

int cmd_eval(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(eval_usage, stdout);
        return 0;
    }
    const char *ckpt = NULL, *data = NULL;
    int flip = -1; /* not given */
    long bn_batches = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--bn-batches") && i + 1 < argc) {
            char *end;
            const char *v = argv[++i];
            bn_batches = strtol(v, &end, 10);
            if (!*v || *end || bn_batches < 1 || bn_batches > 1000000) {
                fprintf(stderr, "sstc eval: --bn-batches expects a count from 1 to 1000000, got '%s'\n", v);
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--flip")) flip = 1;
        else if (!strcmp(argv[i], "--no-flip")) flip = 0;
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
    if (cli_is_sst_file(ckpt)) {
        if (bn_batches) {
            fprintf(stderr, "sstc eval: --bn-batches needs a training or compression checkpoint; %s is a .sst file "
                            "(its batch norms are folded into constants)\n", ckpt);
            return 2;
        }
        return cli_eval_sst(ckpt, data, flip);
    }
    return cli_eval_checkpoint_bn(ckpt, data, flip, (int)bn_batches);
}

/* Opens a training or compression checkpoint; a compression checkpoint also
 * restores its coding state (quantized weights, input permutation), so the
 * network computes as the end of `sstc compress` did. *coded says which. */
/* A checkpoint, with its compression state when it has one (*coded). */
static int open_checkpoint(sstc_session **s, sstc_compressor *c, const char *ckpt, int *coded) {
    memset(c, 0, sizeof *c);
    void *extra = NULL;
    size_t elen = 0;
    int rc = sstc_checkpoint_open(s, ckpt, 0, &extra, &elen);
    *coded = !rc && sstc_compress_state_present(extra, elen);
    if (*coded) rc = sstc_compress_init(c, *s) || sstc_compress_state_load(c, extra, elen);
    free(extra);
    return rc;
}

int cli_eval_checkpoint(const char *ckpt, const char *data) { return cli_eval_checkpoint_flip(ckpt, data, -1); }

int cli_eval_checkpoint_flip(const char *ckpt, const char *data, int flip) {
    return cli_eval_checkpoint_bn(ckpt, data, flip, 0);
}

int cli_eval_checkpoint_bn(const char *ckpt, const char *data, int flip, int bn_batches) {
    sstc_session *s = NULL;
    sstc_eval_result r;
    sstc_compressor c;
    int coded;
    int rc = open_checkpoint(&s, &c, ckpt, &coded);
    if (!rc && flip >= 0) sstc_session_config_mut(s)->test_flip = flip;
    if (!rc) rc = sstc_session_load_data(s, data);
    if (!rc && bn_batches > 0)
        rc = sstc_session_reestimate_batchnorm(s, bn_batches, sstc_session_config(s)->seed * 31 + 977);
    if (rc || sstc_session_evaluate_test(s, &r)) {
        fprintf(stderr, "sstc eval: %s\n", sstc_errmsg());
        sstc_compress_free(&c);
        sstc_session_close(s);
        return 1;
    }
    sstc_compress_free(&c);
    printf("test_loss=%.6f test_error=%.6f count=%ld flip=%d", r.loss, r.error, r.count,
           sstc_session_config(s)->test_flip ? 1 : 0);
    if (bn_batches > 0) printf(" bn_batches=%d", bn_batches);
    printf("\n");
    sstc_session_close(s);
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
    sstc_session *s = NULL;
    sstc_compressor c;
    int coded;
    /* a compression checkpoint exports its decoded weights (delta*t), like model.npz */
    if (open_checkpoint(&s, &c, ckpt, &coded) ||
        (coded ? sstc_compress_write_npz(&c, npz) : sstc_session_export_npz(s, npz))) {
        fprintf(stderr, "sstc export: %s\n", sstc_errmsg());
        sstc_compress_free(&c);
        sstc_session_close(s);
        return 1;
    }
    printf("wrote %s\n", npz);
    sstc_compress_free(&c);
    sstc_session_close(s);
    return 0;
}

int cli_eval_file(const char *path, const char *data) {
    return cli_is_sst_file(path) ? cli_eval_sst(path, data, -1) : cli_eval_checkpoint(path, data);
}
