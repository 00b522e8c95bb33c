/* sstc run CONFIG: the whole experiment a config describes - float training,
 * then its [compress] section if there is one, then a check that the .sst
 * file alone, run by the multiplication-free engine, gives the test error the
 * run reported. One command reproduces one row of a results table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "sstc/dist.h"
#include "sstc/compress.h"
#include "sstc/data.h"
#include "sstc/infer.h"
#include "sstc/run.h"

static const char usage[] =
    "usage: sstc run CONFIG [--out DIR] [--from FLOAT_CHECKPOINT] [--epochs E] [--set S.K=V ...] [--resume] [--quiet]\n"
    "\n"
    "Runs the whole experiment CONFIG describes:\n"
    "  1. trains the float network (into DIR/float/ when the config has a\n"
    "     [compress] section, or into DIR/ when it has none; skipped with --from);\n"
    "  2. compresses it as [compress] says (normalization, gradual pruning,\n"
    "     quantized retraining, batch-norm re-estimation) into DIR/;\n"
    "  3. runs DIR/model.sst with the multiplication-free engine from the file\n"
    "     alone and checks that it gives the test error the run reported (with\n"
    "     [data] test_flip, both averaged over each image and its mirror image);\n"
    "     sst_test_error goes into DIR/summary.json;\n"
    "  4. prints a short table: float and coded error, bits per weight, file sizes.\n"
    "\n"
    "  --out DIR     output folder (default runs/<name>/ for float-only configs,\n"
    "                runs/<name>-<method>-<N>-<K>/ with [compress])\n"
    "  --from CKPT   start the compression from this float checkpoint\n"
    "  --epochs E    float training epochs (train.epochs=E)\n"
    "  --set S.K=V   override a config key; repeatable\n"
    "  --resume      continue an interrupted run where it stopped (any step)\n"
    "  --allow-config-change  with --resume: accept a changed config or --set options\n"
    "                (refused otherwise; recorded in summary.json)\n"
    "  --quiet       no progress output (the final table is still printed)\n"
    "\n"
    "SIGINT or SIGTERM saves a checkpoint after the current batch (status 130).\n"
    "Exit status 1 if the .sst file's test error differs from the run's.\n";

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) ? -1 : (long)st.st_size;
}

/* Errors of the .sst network on the test set, from pixels; with flip, the
 * class probabilities of each image and its mirror image averaged. */
static int sst_errors(const char *sst, const sstc_dataset *ds, int flip, long *errors) {
    sstc_engine *e = NULL;
    sstc_infer_result r;
    int rc = sstc_engine_load(sst, &e);
    if (!rc) rc = sstc_engine_check_input(e, ds->c, ds->h, ds->w, ds->num_classes);
    if (!rc) rc = sstc_engine_evaluate_flip(e, ds->pixels, ds->labels, ds->n, 100, flip, NULL, &r);
    sstc_engine_free(e);
    *errors = rc ? 0 : r.errors;
    return rc;
}

/* Step 3: the .sst file alone against the run's figure; adds the result to
 * summary.json. Returns 0 when they agree, 1 when not, -1 on error. */
static int check_sst(sstc_session *s, const sstc_compress_run_result *r, double *sst_error) {
    const sstc_dataset *test = sstc_session_test_set(s);
    int flip = sstc_session_config(s)->test_flip;
    long errors = 0, single = 0;
    if (sst_errors(r->sst_path, test, flip, &errors) || (flip && sst_errors(r->sst_path, test, 0, &single))) return -1;
    *sst_error = (double)errors / test->n;
    long run_errors = lround(r->run.test.error * test->n);
    /* the engine sums in another order than the training engine: an image
     * whose two best logits differ by rounding only may change sides */
    long tolerance = 2 + test->n / 5000;
    int agree = labs(errors - run_errors) <= tolerance;
    char summary[1100];
    cJSON *o = NULL;
    if (sstc_path(summary, sizeof summary, "%s/summary.json", r->outdir) || sstc_read_json(summary, &o)) return -1;
    cJSON_DeleteItemFromObject(o, "sst_test_error");
    cJSON_DeleteItemFromObject(o, "sst_check");
    cJSON_AddNumberToObject(o, "sst_test_error", *sst_error);
    cJSON_DeleteItemFromObject(o, "sst_test_error_single");
    if (flip) cJSON_AddNumberToObject(o, "sst_test_error_single", (double)single / test->n);
    cJSON_AddStringToObject(o, "sst_check", agree ? "agrees" : "differs");
    int rc = sstc_write_json(summary, o);
    cJSON_Delete(o);
    if (rc) return -1;
    if (!agree)
        fprintf(stderr, "sstc run: %s gives %ld test errors, the run reported %ld (more than %ld apart)\n", r->sst_path,
                errors, run_errors, tolerance);
    return agree ? 0 : 1;
}

static void print_table(sstc_session *s, const sstc_compress_run_result *r, double sst_error) {
    char floatck[1200];
    snprintf(floatck, sizeof floatck, "%s/float/checkpoint.sstc", r->outdir);
    size_t params = sstc_model_num_params(sstc_session_model(s));
    printf("\n%s\n", sstc_session_config(s)->name);
    printf("  %-32s %.2f %%\n", "float network, test error", 100 * r->float_test_error);
    printf("  %-32s %.2f %%\n", "coded network, test error", 100 * r->run.test.error);
    if (r->sst_path[0]) printf("  %-32s %.2f %%\n", "model.sst alone (engine)", 100 * sst_error);
    printf("  %-32s %.3f (x%.1f on coded layers)\n", "bits per coded weight", r->bits_per_weight, 32.0 / r->bits_per_weight);
    printf("  %-32s %zu parameters, %.1f KiB as float32\n", "float network", params, params * 4.0 / 1024);
    if (r->sst_path[0]) printf("  %-32s %.1f KiB  %s\n", "coded network file", file_size(r->sst_path) / 1024.0, r->sst_path);
    if (file_size(floatck) >= 0) printf("  %-32s %s\n", "float checkpoint", floatck);
    printf("  %-32s %s/  (metrics.csv, summary.json, model.npz)\n", "results", r->outdir);
}

static int run_float_only(sstc_session *s, const cli_run_args *a) {
    char outdir[1024];
    sstc_run_result r;
    int rc = a->out ? sstc_path(outdir, sizeof outdir, "%s", a->out)
                    : sstc_path(outdir, sizeof outdir, "runs/%s", sstc_session_config(s)->name);
    if (!rc) {
        sstc_run_opts o = {.outdir = outdir, .method = "float", .resume = a->resume, .resume_hint = a->resume_hint,
                            .allow_config_change = a->allow_config_change};
        rc = sstc_run(s, &o, NULL, &r);
    }
    if (!rc) printf("float network: test error %.2f %% after %d epochs in %.0f s; results in %s/\n", 100 * r.test.error,
                    r.epochs, r.seconds, outdir);
    return cli_run_status(rc, "run");
}

int cmd_run(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return 0;
    }
    cli_run_args a;
    sstc_session *s = NULL;
    int status = cli_parse_run_args(argc, argv, &a, "run", usage, 1);
    if (status || (status = cli_open_session(&a, "run", &s))) return status;
    if (!sstc_session_config(s)->compress.present) {
        status = a.from ? (fprintf(stderr, "sstc run: --from needs a [compress] section in %s\n", a.config), 2)
                        : run_float_only(s, &a);
        sstc_session_close(s);
        return status;
    }
    sstc_compress_run_opts o = {.outdir = a.out, .from = a.from, .resume = a.resume, .resume_hint = a.resume_hint,
                            .allow_config_change = a.allow_config_change};
    sstc_compress_run_result r;
    status = cli_run_status(sstc_compress_run(s, &o, &r), "run");
    double sst_error = NAN;
    if (!status && r.sst_path[0] && sstc_dist_rank() == 0) { /* rank 0 wrote the file and checks it */
        int c = check_sst(s, &r, &sst_error);
        if (c < 0) fprintf(stderr, "sstc run: checking %s: %s\n", r.sst_path, sstc_errmsg());
        status = c ? 1 : 0;
    }
    if (!status || !isnan(sst_error)) print_table(s, &r, sst_error);
    sstc_session_close(s);
    return status;
}
