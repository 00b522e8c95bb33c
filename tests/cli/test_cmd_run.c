/* sstc run / train / compress as a user meets them: careless paths and
 * hostile config files give a clean error (never a crash or a hang), and
 * `sstc run` goes from a config to a checked .sst file. Runs the built
 * program from the repository root. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

#include "../data/data_helpers.h"
#include "../tiny_dataset.h"
#include "sstc/run.h"
#include "sstc/train.h"
#include "sstc/error.h"

static char dir[256];
static void setup(void) { tiny_dataset_make(dir, sizeof dir, 64, 32); }
static void teardown(void) { tiny_dataset_remove(dir); }

TestSuite(run_cli, .init = setup, .fini = teardown);

static int run(const char *cmd, char *out, size_t cap) { return th_run(cmd, out, cap); }

static void write_file(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite(text, 1, n, f);
    fclose(f);
}

Test(run_cli, unusable_config_paths_fail_cleanly_in_every_run_command) {
    static char out[8192];
    char empty[400], nul[400], fifo[400], cmd[1200];
    snprintf(empty, sizeof empty, "%s/empty.ini", dir);
    snprintf(nul, sizeof nul, "%s/nul.ini", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo.ini", dir);
    write_file(empty, "", 0);
    write_file(nul, "[data]\0x", 8);
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    const char *paths[] = {"/nonexistent/config.ini", empty, nul, fifo, dir, "/dev/zero"};
    const char *expect[] = {"No such file", "empty", "NUL", "not a regular file", "not a regular file",
                            "not a regular file"};
    const char *cmds[] = {"train", "compress", "run"};
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 6; i++) {
            /* timeout: a FIFO must not block the reader */
            snprintf(cmd, sizeof cmd, "timeout 10 ./build/sstc %s '%s' --quiet 2>&1", cmds[c], paths[i]);
            int rc = run(cmd, out, sizeof out);
            cr_assert_eq(rc, 1, "sstc %s %s: exit %d: %s", cmds[c], paths[i], rc, out);
            cr_assert(th_has(out, expect[i]), "sstc %s %s: %s", cmds[c], paths[i], out);
        }
    /* the same for the readers of checkpoints and .sst files */
    const char *readers[] = {"inspect '%s'", "eval '%s'", "eval '%s' --data mnist", "infer '%s' --data mnist",
                             "export '%s' --npz x.npz"};
    for (int r = 0; r < 5; r++)
        for (int i = 0; i < 6; i++) {
            if (i == 1 || i == 2) continue; /* empty and NUL files are plain malformed files here */
            char sub[600];
            snprintf(sub, sizeof sub, readers[r], paths[i]);
            snprintf(cmd, sizeof cmd, "timeout 10 ./build/sstc %s 2>&1", sub);
            int rc = run(cmd, out, sizeof out);
            cr_assert(rc == 1 || rc == 2, "sstc %s: exit %d: %s", sub, rc, out);
            cr_assert(th_has(out, i == 0 ? "No such file" : "not a regular file"), "sstc %s: %s", sub, out);
        }
}

Test(run_cli, usage_errors_exit_2) {
    static char out[8192];
    cr_assert_eq(run("./build/sstc run 2>&1", out, sizeof out), 2);
    cr_assert(th_has(out, "missing CONFIG"), "%s", out);
    cr_assert_eq(run("./build/sstc run a.ini --frobnicate 2>&1", out, sizeof out), 2);
    cr_assert_eq(run("./build/sstc train a.ini --epochs -3 2>&1", out, sizeof out), 2);
    cr_assert_eq(run("./build/sstc train a.ini --from x.sstc 2>&1", out, sizeof out), 2);
    cr_assert_eq(run("./build/sstc run --help", out, sizeof out), 0);
    cr_assert(th_has(out, "usage: sstc run CONFIG"), "%s", out);
}

Test(run_cli, run_trains_compresses_and_checks_the_sst_file) {
    static char out[1 << 15];
    char cfg[400], odir[400], cmd[1200];
    snprintf(cfg, sizeof cfg, "%s/exp.ini", dir);
    snprintf(odir, sizeof odir, "%s/out", dir);
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "[experiment]\nname = exp\nseed = 2\nthreads = 1\n[data]\ndataset = %s\n"
                     "[train]\nepochs = 2\nbatch_size = 16\nlr = 0.01\n"
                     "[fc]\noutputs = 24\nbias = false\n[batchnorm]\n[relu]\n[fc]\noutputs = 2\n"
                     "[compress]\nN = 8\nK = 2\nschedule = 4,2\nstage_epochs = 1\nretrain_epochs = 1\nbn_batches = 2\n",
                     dir);
    write_file(cfg, text, (size_t)n);
    snprintf(cmd, sizeof cmd, "./build/sstc run '%s' --out '%s' --quiet 2>&1", cfg, odir);
    int rc = run(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(th_has(out, "model.sst alone (engine)"), "%s", out);
    char p[600];
    snprintf(p, sizeof p, "%s/summary.json", odir);
    cJSON *j = NULL;
    cr_assert_eq(sstc_read_json(p, &j), 0, "%s", sstc_errmsg());
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "sst_check")), "agrees");
    double e1 = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "test_error"));
    double e2 = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "sst_test_error"));
    cr_assert(e1 == e1 && e2 == e2, "both errors present");
    cr_assert_leq(e1 > e2 ? e1 - e2 : e2 - e1, 2.5 / 32, "run %g, .sst %g", e1, e2);
    cJSON_Delete(j);
    snprintf(p, sizeof p, "%s/float/summary.json", odir);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0, "the float network's summary is in float/");
    /* a finished run resumed again changes nothing and still agrees */
    snprintf(cmd, sizeof cmd, "./build/sstc run '%s' --out '%s' --quiet --resume 2>&1", cfg, odir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    /* ... but not with other settings */
    snprintf(cmd, sizeof cmd, "./build/sstc run '%s' --out '%s' --quiet --resume --set compress.bn_batches=3 2>&1", cfg, odir);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert(th_has(out, "another configuration"), "%s", out);
}

/* A residual network with test-time flip averaging, from config to .sst: the
 * file alone, run by the engine with --flip, gives the run's test error. */
Test(run_cli, a_residual_network_runs_end_to_end_and_its_sst_file_agrees_with_flip) {
    static char out[1 << 15];
    char cfg[400], odir[400], cmd[1200];
    snprintf(cfg, sizeof cfg, "%s/res.ini", dir);
    snprintf(odir, sizeof odir, "%s/res", dir);
    char text[2048];
    int n = snprintf(text, sizeof text,
                     "[experiment]\nname = res\nseed = 3\nthreads = 1\n[data]\ndataset = %s\ntest_flip = true\n"
                     "[train]\nepochs = 2\nbatch_size = 16\nlr = 0.01\n"
                     "[conv]\nfilters = 8\npad = 1\nbias = false\n[batchnorm]\n[relu]\n"
                     "[conv]\nfilters = 8\npad = 1\nbias = false\n[batchnorm]\n[shortcut]\nfrom = -3\nactivation = relu\n"
                     "[route]\nlayers = -1\n[conv]\nfilters = 16\nsize = 1\nstride = 2\nbias = false\n[batchnorm]\n"
                     "[globalavgpool]\n[fc]\noutputs = 2\n"
                     "[compress]\nN = 8\nK = 2\nschedule = 4,2\nstage_epochs = 1\nretrain_epochs = 1\nbn_batches = 2\n",
                     dir);
    write_file(cfg, text, (size_t)n);
    snprintf(cmd, sizeof cmd, "./build/sstc run '%s' --out '%s' --quiet 2>&1", cfg, odir);
    int rc = run(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    char p[600];
    snprintf(p, sizeof p, "%s/summary.json", odir);
    cJSON *j = NULL;
    cr_assert_eq(sstc_read_json(p, &j), 0, "%s", sstc_errmsg());
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "sst_check")), "agrees");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "test_flip")));
    double sst_err = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "sst_test_error"));
    double sst_single = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "sst_test_error_single"));
    double single = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "test_error_single"));
    cr_assert(single == single && sst_single == sst_single, "single-view figures in the summary");
    cr_assert_leq(fabs(single - sst_single), 2.5 / 32, "single view: run %g, .sst %g", single, sst_single);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "./build/sstc eval '%s/model.sst' --data '%s' --no-flip 2>&1", odir, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    char want1[64];
    snprintf(want1, sizeof want1, "test_error=%.6f", sst_single);
    cr_assert(th_has(out, want1), "expected %s in: %s", want1, out);
    /* the file records that its network was evaluated with flip averaging:
     * eval of the .sst file alone, without options, prints the run's figure */
    char want[64];
    snprintf(want, sizeof want, "test_error=%.6f", sst_err);
    for (int explicit_flip = 0; explicit_flip < 2; explicit_flip++) {
        snprintf(cmd, sizeof cmd, "./build/sstc eval '%s/model.sst' --data '%s'%s 2>&1", odir, dir,
                 explicit_flip ? " --flip" : "");
        cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
        cr_assert(th_has(out, want), "expected %s in: %s", want, out);
        cr_assert(th_has(out, "flip=1"), "%s", out);
    }
    snprintf(cmd, sizeof cmd, "./build/sstc inspect '%s/model.sst' 2>&1", odir);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(th_has(out, "shortcut"), "%s", out);
    cr_assert(th_has(out, "version 3"), "%s", out);
    cr_assert(th_has(out, "evaluation: test-time flip averaging"), "%s", out);

    /* eval --bn-batches: the statistics re-estimated as the library does it */
    char fck[700];
    snprintf(fck, sizeof fck, "%s/float/checkpoint.sstc", odir);
    snprintf(cmd, sizeof cmd, "./build/sstc eval '%s' --bn-batches 3 2>&1", fck);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(th_has(out, "bn_batches=3"), "%s", out);
    sstc_session *s = NULL;
    cr_assert_eq(sstc_checkpoint_open(&s, fck, 1, NULL, NULL), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_session_reestimate_batchnorm(s, 3, sstc_session_config(s)->seed * 31 + 977), 0);
    sstc_eval_result er;
    cr_assert_eq(sstc_session_evaluate_test(s, &er), 0);
    sstc_session_close(s);
    char want2[64];
    snprintf(want2, sizeof want2, "test_loss=%.6f test_error=%.6f", er.loss, er.error);
    cr_assert(th_has(out, want2), "expected %s in: %s", want2, out);
    snprintf(cmd, sizeof cmd, "./build/sstc eval '%s/model.sst' --data '%s' --bn-batches 3 2>&1", odir, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 2, "%s", out);
    cr_assert(th_has(out, "needs a training or compression checkpoint"), "%s", out);
    snprintf(cmd, sizeof cmd, "./build/sstc eval '%s' --bn-batches 0 2>&1", fck);
    cr_assert_eq(run(cmd, out, sizeof out), 2, "%s", out);
}
