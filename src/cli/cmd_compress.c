/* sstc compress: float network -> (N,K) structured sparse ternary network. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "sstc/compress.h"

static const char usage[] =
    "usage: sstc compress CONFIG [--from FLOAT_CHECKPOINT] [--out DIR] [--set S.K=V ...] [--resume] [--quiet]\n"
    "\n"
    "Compresses a trained float network as the config's [compress] section says:\n"
    "weight normalization, gradual pruning with masked retraining, ternarization\n"
    "and retraining with the quantizer in the loop, batch-norm re-estimation.\n"
    "\n"
    "  --from CKPT   the float network to start from (a `sstc train` checkpoint of the\n"
    "                same network); without it, one is trained first into DIR/float/\n"
    "  --out DIR     output folder (default runs/<name>-<method>-<N>-<K>/): metrics.csv (one row\n"
    "                per epoch, with its stage), checkpoint.sstc (the coded network),\n"
    "                model.sst (packed codes), model.npz (decoded weights delta*t),\n"
    "                normalized.npz (the weights right after normalization), summary.json\n"
    "  --set S.K=V   override a config key (e.g. --set compress.K=1); repeatable\n"
    "  --resume      continue an interrupted run from DIR/checkpoint.sstc\n"
    "  --quiet       no progress output\n"
    "\n"
    "SIGINT or SIGTERM saves a checkpoint after the current batch; --resume continues.\n"
    "See docs/config.md for the [compress] keys.\n";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static const char *schedule_str(const sstc_compress_spec *z, char *buf, size_t n) {
    if (!z->nstages) {
        snprintf(buf, n, "direct");
        return buf;
    }
    size_t off = 0;
    for (int i = 0; i < z->nstages && off < n; i++) off += (size_t)snprintf(buf + off, n - off, "%s%d", i ? "-" : "", z->schedule[i]);
    return buf;
}

static int save(sstc_compressor *c, const char *ckpt) {
    void *blob = NULL;
    size_t len = 0;
    int rc = sstc_compress_state_save(c, &blob, &len);
    if (!rc) rc = sstc_checkpoint_save(c->s, ckpt, blob, len);
    free(blob);
    return rc;
}

int cmd_compress(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return 0;
    }
    const char *config = NULL, *from = NULL, *out = NULL;
    const char *ovr[128];
    int nov = 0, resume = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--from") && i + 1 < argc) from = argv[++i];
        else if (!strcmp(a, "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--set") && i + 1 < argc) {
            if (nov >= 120) {
                fprintf(stderr, "sstc compress: too many --set options (at most 120)\n");
                return 2;
            }
            ovr[nov++] = argv[++i];
        }
        else if (!strcmp(a, "--resume")) resume = 1;
        else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) quiet = 1;
        else if (a[0] == '-') {
            fprintf(stderr, "sstc compress: unknown or incomplete option '%s'\n\n%s", a, usage);
            return 2;
        } else if (!config) config = a;
        else {
            fprintf(stderr, "sstc compress: unexpected argument '%s'\n\n%s", a, usage);
            return 2;
        }
    }
    if (!config) {
        fprintf(stderr, "sstc compress: missing CONFIG\n\n%s", usage);
        return 2;
    }
    sstc_session s;
    sstc_compressor c;
    memset(&c, 0, sizeof c);
    int status = 1;
    if (!quiet) fprintf(stderr, "loading %s\n", config);
    if (sstc_session_open(&s, config, ovr, nov, 1)) {
        fprintf(stderr, "sstc compress: %s\n", sstc_errmsg());
        sstc_session_close(&s);
        return 1;
    }
    s.quiet = quiet;
    /* validate the [compress] plan before any training starts */
    if (sstc_compress_init(&c, &s)) {
        fprintf(stderr, "sstc compress: %s\n", sstc_errmsg());
        goto done;
    }
    char outdir[1024], ckpt[1100], metrics[1100], summary[1100], sst[1100], npz[1100], floatdir[1100];
    if (out) snprintf(outdir, sizeof outdir, "%s", out);
    else snprintf(outdir, sizeof outdir, "runs/%s-%s-%d-%d", s.cfg.name, c.spec.method, c.N, c.K);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.sstc", outdir);
    snprintf(metrics, sizeof metrics, "%s/metrics.csv", outdir);
    snprintf(summary, sizeof summary, "%s/summary.json", outdir);
    snprintf(sst, sizeof sst, "%s/model.sst", outdir);
    snprintf(npz, sizeof npz, "%s/model.npz", outdir);
    snprintf(floatdir, sizeof floatdir, "%s/float", outdir);
    if (cli_mkdirs(outdir)) {
        fprintf(stderr, "sstc compress: cannot create %s: %s\n", outdir, strerror(errno));
        goto done;
    }
    double t_start = now(), prior_seconds = 0;
    if (resume && exists(ckpt)) {
        void *blob = NULL;
        size_t len = 0;
        if (sstc_compress_prepare_structure(&c) || sstc_checkpoint_restore(&s, ckpt, &blob, &len) ||
            !sstc_compress_state_present(blob, len) || sstc_compress_state_load(&c, blob, len)) {
            fprintf(stderr, "sstc compress: --resume: %s\n",
                    sstc_errcode() ? sstc_errmsg() : "the checkpoint holds no compression state");
            free(blob);
            goto done;
        }
        free(blob);
        prior_seconds = s.state.total_seconds;
        if (!quiet) fprintf(stderr, "resuming compression at epoch %d, batch %d\n", s.state.epoch + 1, s.state.batch);
    } else {
        if (resume && !from && !exists(floatdir)) {
            fprintf(stderr, "sstc compress: --resume: no checkpoint in %s\n", outdir);
            goto done;
        }
        if (from) {
            if (sstc_checkpoint_restore(&s, from, NULL, NULL)) {
                fprintf(stderr, "sstc compress: --from %s: %s\n", from, sstc_errmsg());
                goto done;
            }
        } else {
            char fck[1200];
            snprintf(fck, sizeof fck, "%s/checkpoint.sstc", floatdir);
            if (!quiet) fprintf(stderr, "no --from: training the float network first into %s/\n", floatdir);
            int rc = cli_train_session(&s, floatdir, config, resume && exists(fck), quiet);
            if (rc) {
                status = rc;
                goto done;
            }
        }
        sstc_eval_result fr;
        if (sstc_session_evaluate(&s, &s.test, NULL, s.test.n, &fr)) {
            fprintf(stderr, "sstc compress: %s\n", sstc_errmsg());
            goto done;
        }
        c.float_test_error = (float)fr.error;
        double diff = 0;
        if (sstc_compress_normalize(&c, 1000, &diff)) {
            fprintf(stderr, "sstc compress: normalization: %s\n", sstc_errmsg());
            goto done;
        }
        if (!quiet) {
            fprintf(stderr, "float network: test error %.2f%%\n", 100 * fr.error);
            if (strstr(c.spec.normalize, "interleave"))
                fprintf(stderr, "interleaving: fan-in of %d coded layer%s reordered\n", c.interleaved,
                        c.interleaved == 1 ? "" : "s");
            if (strcmp(c.spec.normalize, "none"))
                fprintf(stderr, "%s: largest logit change on 1000 test images %.2e\n", c.spec.normalize, diff);
        }
        char normnpz[1200];
        snprintf(normnpz, sizeof normnpz, "%s/normalized.npz", outdir);
        if (strcmp(c.spec.normalize, "none") && sstc_export_npz(s.model, normnpz))
            fprintf(stderr, "sstc compress: warning: %s\n", sstc_errmsg());
        if (diff > 1e-3) {
            fprintf(stderr, "sstc compress: normalization changed the network's outputs by %.3g (expected < 1e-3)\n", diff);
            goto done;
        }
        s.state = (sstc_epoch_state){0};
        FILE *mf = fopen(metrics, "w");
        if (!mf) {
            fprintf(stderr, "sstc compress: cannot write %s\n", metrics);
            goto done;
        }
        fprintf(mf, "epoch,stage,K,lr,train_loss,train_error,test_loss,test_error,seconds\n");
        fclose(mf);
    }
    if (!quiet) {
        fprintf(stderr, "coding %d layer%s with %s (N,K) = (%d,%d), %.3f bits/weight; %d phase%s, %d epochs\n", c.ncoded,
                c.ncoded == 1 ? "" : "s", c.spec.method, c.N, c.K, sstc_compress_bits_per_weight(&c), c.nphases,
                c.nphases == 1 ? "" : "s", c.total_epochs);
    }
    cli_install_stop_handlers();
    s.stop = cli_stop_flag();
    sstc_eval_result test = {0};
    while (s.state.epoch < c.total_epochs) {
        double t0 = now(), tl = 0, te = 0;
        float lr = 0;
        int p = sstc_compress_phase_of(&c, s.state.epoch);
        int rc = sstc_compress_train_epoch(&c, &tl, &te, &lr);
        if (rc == SSTC_EINTR) {
            s.state.total_seconds += now() - t0;
            if (save(&c, ckpt)) fprintf(stderr, "sstc compress: interrupted; saving failed: %s\n", sstc_errmsg());
            else {
                fprintf(stderr, "\nsstc compress: interrupted at epoch %d, batch %d; checkpoint saved to %s\n"
                                "continue with: sstc compress %s --out %s --resume\n",
                        s.state.epoch + 1, s.state.batch, ckpt, config, outdir);
                status = 130;
            }
            goto done;
        }
        if (rc) {
            fprintf(stderr, "\nsstc compress: %s\n", sstc_errmsg());
            goto done;
        }
        rc = sstc_session_evaluate(&s, &s.test, NULL, s.test.n, &test);
        if (rc == SSTC_EINTR) {
            /* training of the epoch is done; --resume goes straight to its evaluation */
            s.state.total_seconds += now() - t0;
            if (save(&c, ckpt)) fprintf(stderr, "sstc compress: interrupted; saving failed: %s\n", sstc_errmsg());
            else {
                fprintf(stderr, "\nsstc compress: interrupted during evaluation; checkpoint saved to %s\n", ckpt);
                status = 130;
            }
            goto done;
        }
        if (rc) {
            fprintf(stderr, "sstc compress: %s\n", sstc_errmsg());
            goto done;
        }
        double secs = now() - t0;
        s.state.epoch++;
        s.state.batch = 0;
        s.state.total_seconds += secs;
        const sstc_phase *ph = &c.phases[p];
        FILE *mf = fopen(metrics, "a");
        if (mf) {
            fprintf(mf, "%d,%s,%d,%.6g,%.6f,%.6f,%.6f,%.6f,%.3f\n", s.state.epoch,
                    ph->kind == SSTC_PHASE_PRUNE ? "prune" : "quant", ph->K, (double)lr, tl, te, test.loss, test.error, secs);
            fclose(mf);
        }
        if (save(&c, ckpt)) {
            fprintf(stderr, "sstc compress: cannot save the checkpoint: %s\n", sstc_errmsg());
            goto done;
        }
        if (!quiet)
            fprintf(stderr, "epoch %d/%d  %s K=%d  lr %.3g  train loss %.4f err %.2f%%  test err %.2f%%  %.1fs\n",
                    s.state.epoch, c.total_epochs, ph->kind == SSTC_PHASE_PRUNE ? "prune" : "quant", ph->K, (double)lr, tl,
                    100 * te, 100 * test.error, secs);
    }
    {
        double t0 = now();
        if (sstc_compress_finish(&c) || sstc_session_evaluate(&s, &s.test, NULL, s.test.n, &test)) {
            if (sstc_errcode() == SSTC_EINTR) {
                /* the checkpoint of the last epoch is on disk: --resume redoes only this final step */
                fprintf(stderr, "\nsstc compress: interrupted during the final batch-norm re-estimation and evaluation; "
                                "the last epoch's checkpoint is %s\ncontinue with: sstc compress %s --out %s --resume\n",
                        ckpt, config, outdir);
                status = 130;
            } else {
                fprintf(stderr, "sstc compress: %s\n", sstc_errmsg());
            }
            goto done;
        }
        s.state.total_seconds += now() - t0;
        if (save(&c, ckpt) || sstc_compress_write_npz(&c, npz) ||
            (c.method != SSTC_METHOD_NM && sstc_compress_write_sst(&c, sst))) {
            fprintf(stderr, "sstc compress: %s\n", sstc_errmsg());
            goto done;
        }
    }
    {
        FILE *f = fopen(summary, "w");
        if (!f) {
            fprintf(stderr, "sstc compress: cannot write %s\n", summary);
            goto done;
        }
        const sstc_compress_spec *z = &c.spec;
        char sched[128];
        double bpw = sstc_compress_bits_per_weight(&c);
        fprintf(f, "{\n  \"name\": ");
        json_escape(f, s.cfg.name);
        fprintf(f, ",\n  \"dataset\": ");
        json_escape(f, s.cfg.dataset);
        fprintf(f, ",\n  \"method\": \"%s\",\n  \"N\": %d,\n  \"K\": %d,\n  \"normalize\": \"%s\",\n", z->method, c.N, c.K,
                z->normalize);
        fprintf(f, "  \"schedule\": \"%s\",\n  \"layers\": ", schedule_str(z, sched, sizeof sched));
        json_escape(f, z->layers);
        fprintf(f, ",\n  \"coded_layers\": [");
        for (int k = 0; k < c.ncoded; k++) fprintf(f, "%s\"%s\"", k ? ", " : "", s.model->layers[c.coded[k].layer].name);
        fprintf(f, "],\n  \"seed\": %llu,\n  \"threads\": %d,\n", (unsigned long long)s.cfg.seed, s.cfg.threads);
        fprintf(f, "  \"bits_per_weight\": %.4f,\n  \"compression\": %.2f,\n", bpw, 32.0 / bpw);
        fprintf(f, "  \"test_error\": %.6f,\n  \"test_loss\": %.6f,\n  \"float_test_error\": %.6f,\n", test.error, test.loss,
                (double)c.float_test_error);
        fprintf(f, "  \"epochs\": %d,\n  \"seconds\": %.1f\n}\n", c.total_epochs, s.state.total_seconds);
        fclose(f);
        if (!quiet)
            fprintf(stderr, "done: test error %.2f%% (float %.2f%%) at %.3f bits/weight (x%.1f) in %.0f s; results in %s/\n",
                    100 * test.error, 100 * c.float_test_error, bpw, 32.0 / bpw, s.state.total_seconds, outdir);
        (void)t_start;
        (void)prior_seconds;
    }
    status = 0;
done:
    sstc_compress_free(&c);
    sstc_session_close(&s);
    return status;
}
