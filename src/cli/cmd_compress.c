/* sstc compress: float network -> (N,K) structured sparse ternary network. */
#include <stdio.h>

#include "cli.h"
#include "sstc/compress.h"

static const char usage[] =
    "usage: sstc compress CONFIG [--from FLOAT_CHECKPOINT] [--out DIR] [--set S.K=V ...] [--resume] [--quiet]\n"
    "\n"
    "Compresses a trained float network as the config's [compress] section says:\n"
    "weight normalization, gradual pruning with masked retraining, ternarization\n"
    "and retraining with the quantizer in the loop, batch-norm re-estimation\n"
    "(docs/method.md).\n"
    "\n"
    "  --from CKPT   the float network to start from (a `sstc train` checkpoint of the\n"
    "                same network); without it, one is trained first into DIR/float/\n"
    "  --out DIR     output folder (default runs/<name>-<method>-<N>-<K>/): metrics.csv (one row\n"
    "                per epoch, with its phase and K), checkpoint.sstc (the coded network),\n"
    "                model.sst (packed codes), model.npz (decoded weights delta*t),\n"
    "                normalized.npz (the weights right after normalization), summary.json\n"
    "  --epochs E    float training epochs when there is no --from (train.epochs=E)\n"
    "  --set S.K=V   override a config key (e.g. --set compress.K=1); repeatable\n"
    "  --resume      continue an interrupted run from DIR/checkpoint.sstc (or the float\n"
    "                training in DIR/float/)\n"
    "  --allow-config-change  with --resume: accept a changed config or --set options\n"
    "                (refused otherwise; recorded in summary.json)\n"
    "  --quiet       no progress output\n"
    "\n"
    "SIGINT or SIGTERM saves a checkpoint after the current batch (status 130);\n"
    "--resume continues. See docs/config.md for the [compress] keys.\n";

int cmd_compress(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return 0;
    }
    cli_run_args a;
    sstc_session *s = NULL;
    int status = cli_parse_run_args(argc, argv, &a, "compress", usage, 1);
    if (status || (status = cli_open_session(&a, "compress", &s))) return status;
    sstc_compress_run_opts o = {.outdir = a.out, .from = a.from, .resume = a.resume, .resume_hint = a.resume_hint,
                            .allow_config_change = a.allow_config_change};
    sstc_compress_run_result r;
    int rc = sstc_compress_run(s, &o, &r);
    if (!rc && !a.quiet)
        fprintf(stderr, "done: test error %.2f%% (float %.2f%%) at %.3f bits/weight (x%.1f) in %.0f s; results in %s/\n",
                100 * r.run.test.error, 100 * r.float_test_error, r.bits_per_weight, 32.0 / r.bits_per_weight, r.run.seconds,
                r.outdir);
    sstc_session_close(s);
    return cli_run_status(rc, "compress");
}
