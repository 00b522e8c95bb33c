/* Data-parallel training over MPI (build/sstc-mpi, `make mpi`): a 2-rank job
 * on this machine against a 1-rank run. Skipped when build/sstc-mpi or
 * mpirun is missing (`make test-mpi` builds it; .ci/run does). */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../data/data_helpers.h"
#include "../tiny_dataset.h"
#include "sstc/run.h"
#include "sstc/train.h"

static char dir[256];
static void setup(void) {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    tiny_dataset_make(dir, sizeof dir, 64, 32);
}
static void teardown(void) { tiny_dataset_remove(dir); }

TestSuite(mpi, .init = setup, .fini = teardown, .timeout = 300);

static int have_mpi(void) {
    struct stat st;
    return stat("build/sstc-mpi", &st) == 0 && system("command -v mpirun >/dev/null 2>&1") == 0;
}
#define NEED_MPI()                                                                      \
    do {                                                                                \
        if (!have_mpi()) cr_skip_test("build/sstc-mpi or mpirun missing (make test-mpi)"); \
    } while (0)

static int run(const char *cmd, char *out, size_t cap) { return th_run(cmd, out, cap); }

static void write_config(const char *name, const char *body, char *path, size_t n) {
    snprintf(path, n, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "[experiment]\nname = m\nseed = 4\nthreads = 1\n[data]\ndataset = %s\n%s", dir, body);
    fclose(f);
}

static double summary_number(const char *outdir, const char *key) {
    char p[600];
    snprintf(p, sizeof p, "%s/summary.json", outdir);
    cJSON *j = NULL;
    cr_assert_eq(sstc_read_json(p, &j), 0, "%s", sstc_errmsg());
    double v = cJSON_GetNumberValue(cJSON_GetObjectItem(j, key));
    cJSON_Delete(j);
    return v;
}

/* Without batch norm (whose batch statistics are per rank) and dropout, a
 * 2-rank job computes the 1-rank run's steps: only the summation order of the
 * gradients differs. An uneven split (15 = 7 + 8) and a short last batch. */
Test(mpi, two_ranks_follow_one_rank_to_float_tolerance) {
    NEED_MPI();
    static char out[1 << 15];
    char cfg[400], cmd[2000], o1[400], o2[400];
    write_config("a.ini",
                 "augment_crop = 1\n[train]\nepochs = 3\nbatch_size = 15\noptimizer = sgd\nlr = 0.02\nmomentum = 0.9\n"
                 "weight_decay = 0.001\nschedule = cosine\n[fc]\noutputs = 24\n[relu]\n[fc]\noutputs = 2\n",
                 cfg, sizeof cfg);
    snprintf(o1, sizeof o1, "%s/one", dir);
    snprintf(o2, sizeof o2, "%s/two", dir);
    snprintf(cmd, sizeof cmd, "./build/sstc train '%s' --out '%s' --quiet 2>&1", cfg, o1);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    snprintf(cmd, sizeof cmd, "mpirun -np 2 ./build/sstc-mpi train '%s' --out '%s' --quiet 2>&1", cfg, o2);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert_eq(summary_number(o2, "ranks"), 2);
    cr_assert_eq(summary_number(o1, "ranks"), 1);
    /* the sharded evaluation and the reduced training figures */
    double l1 = summary_number(o1, "train_loss"), l2 = summary_number(o2, "train_loss");
    double t1 = summary_number(o1, "test_loss"), t2 = summary_number(o2, "test_loss");
    cr_assert(fabs(l1 - l2) <= 1e-5 * fabs(l1) + 1e-7, "train loss %.9g vs %.9g", l1, l2);
    cr_assert(fabs(t1 - t2) <= 1e-5 * fabs(t1) + 1e-7, "test loss %.9g vs %.9g", t1, t2);
    cr_assert_eq(summary_number(o1, "test_error"), summary_number(o2, "test_error"));
    /* every weight */
    sstc_session *a = NULL, *b = NULL;
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/checkpoint.sstc", o1);
    snprintf(p2, sizeof p2, "%s/checkpoint.sstc", o2);
    cr_assert_eq(sstc_checkpoint_open(&a, p1, 0, NULL, NULL), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_checkpoint_open(&b, p2, 0, NULL, NULL), 0, "%s", sstc_errmsg());
    sstc_named_tensor ta[16], tb[16];
    int na = sstc_model_named_tensors(sstc_session_model(a), ta, 16);
    cr_assert_eq(na, sstc_model_named_tensors(sstc_session_model(b), tb, 16));
    for (int i = 0; i < na; i++) {
        double worst = 0, scale = 0;
        for (size_t k = 0; k < ta[i].tensor->size; k++) {
            double d = fabs((double)ta[i].tensor->data[k] - tb[i].tensor->data[k]);
            if (d > worst) worst = d;
            if (fabs(ta[i].tensor->data[k]) > scale) scale = fabs(ta[i].tensor->data[k]);
        }
        cr_assert(worst <= 1e-5 * scale, "%s: largest difference %g (largest weight %g)", ta[i].name, worst, scale);
    }
    sstc_session_close(a);
    sstc_session_close(b);
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* With batch norm and dropout: a 2-rank job repeated gives the same bytes, and
 * SIGTERM to one rank stops both after the same batch; the resumed job ends
 * with exactly the uninterrupted job's network. */
Test(mpi, a_two_rank_job_is_repeatable_and_resumes_exactly_after_sigterm_to_one_rank) {
    NEED_MPI();
    static char out[1 << 15];
    char cfg[400], cmd[4096], oa[400], ob[400], na[420], nb[420];
    write_config("b.ini",
                 "augment_crop = 1\n[train]\nepochs = 300\nbatch_size = 8\noptimizer = adam\nlr = 0.001\n"
                 "[fc]\noutputs = 24\nbias = false\n[batchnorm]\n[relu]\n[dropout]\np = 0.2\n[fc]\noutputs = 2\n",
                 cfg, sizeof cfg);
    snprintf(oa, sizeof oa, "%s/a", dir);
    snprintf(ob, sizeof ob, "%s/b", dir);
    snprintf(cmd, sizeof cmd, "mpirun -np 2 ./build/sstc-mpi train '%s' --out '%s' --quiet 2>&1", cfg, oa);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    /* the same job, stopped by SIGTERM to rank 1 once a few epochs are done */
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execlp("mpirun", "mpirun", "-np", "2", "./build/sstc-mpi", "train", cfg, "--out", ob, "--quiet", (char *)NULL);
        _exit(127);
    }
    char metrics[600];
    snprintf(metrics, sizeof metrics, "%s/metrics.csv", ob);
    for (int i = 0; i < 600 && count_lines(metrics) < 6; i++) usleep(50000);
    cr_assert_geq(count_lines(metrics), 6, "the job made no progress");
    /* the ranks' command lines start with the program (mpirun's and this shell's do not) */
    snprintf(cmd, sizeof cmd, "pgrep -f '^./build/[s]stc-mpi train %s --out %s' | sort -n | tail -1", cfg, ob);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "no rank found: %s", out);
    pid_t rank = (pid_t)atol(out);
    cr_assert_gt(rank, 0);
    cr_assert_eq(kill(rank, SIGTERM), 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 130, "the job exits with 130 after an interrupt (status %d)", st);
    int done = count_lines(metrics) - 1;
    cr_assert(done < 300, "the job was interrupted before its end (%d epochs)", done);
    snprintf(cmd, sizeof cmd, "mpirun -np 2 ./build/sstc-mpi train '%s' --out '%s' --quiet --resume 2>&1", cfg, ob);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    snprintf(na, sizeof na, "%s/w.npz", oa);
    snprintf(nb, sizeof nb, "%s/w.npz", ob);
    snprintf(cmd, sizeof cmd,
             "./build/sstc export '%s/checkpoint.sstc' --npz '%s' >/dev/null && "
             "./build/sstc export '%s/checkpoint.sstc' --npz '%s' >/dev/null && cmp '%s' '%s' 2>&1",
             oa, na, ob, nb, na, nb);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "the resumed job's network differs: %s", out);
    /* a rank killed outright: the job ends (no hang), and the last checkpoint
     * (end of an epoch) resumes to the same network */
    char oc[400], nc[420];
    snprintf(oc, sizeof oc, "%s/c", dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.csv", oc);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execlp("timeout", "timeout", "120", "mpirun", "-np", "2", "./build/sstc-mpi", "train", cfg, "--out", oc, "--quiet",
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 600 && count_lines(metrics) < 6; i++) usleep(50000);
    snprintf(cmd, sizeof cmd, "pgrep -f '^./build/[s]stc-mpi train %s --out %s' | sort -n | tail -1", cfg, oc);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "no rank found: %s", out);
    cr_assert_eq(kill((pid_t)atol(out), SIGKILL), 0);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 124, "the job stops with an error (status %d)", st);
    snprintf(cmd, sizeof cmd, "mpirun -np 2 ./build/sstc-mpi train '%s' --out '%s' --quiet --resume 2>&1", cfg, oc);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    snprintf(nc, sizeof nc, "%s/w.npz", oc);
    snprintf(cmd, sizeof cmd, "./build/sstc export '%s/checkpoint.sstc' --npz '%s' >/dev/null && cmp '%s' '%s' 2>&1", oc, nc,
             na, nc);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "the job resumed after SIGKILL differs: %s", out);
    /* a 1-rank resume of the 2-rank checkpoint is refused, naming the difference */
    snprintf(cmd, sizeof cmd, "./build/sstc train '%s' --out '%s' --quiet --resume 2>&1", cfg, ob);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert(th_has(out, "experiment.ranks=2"), "%s", out);
}

Test(mpi, careless_rank_setups_fail_cleanly) {
    NEED_MPI();
    static char out[1 << 15];
    char c1[400], c2[400], c3[400], cmd[3000];
    write_config("c1.ini", "[train]\nepochs = 1\nbatch_size = 16\n[fc]\noutputs = 2\n", c1, sizeof c1);
    write_config("c2.ini", "[train]\nepochs = 1\nbatch_size = 16\n[fc]\noutputs = 3\n[fc]\noutputs = 2\n", c2, sizeof c2);
    write_config("c3.ini", "[train]\nepochs = 1\nbatch_size = 1\n[fc]\noutputs = 2\n", c3, sizeof c3);
    /* two ranks with different configs */
    snprintf(cmd, sizeof cmd,
             "timeout 120 mpirun -np 1 ./build/sstc-mpi train '%s' --out '%s/x' --quiet : "
             "-np 1 ./build/sstc-mpi train '%s' --out '%s/x' --quiet 2>&1", c1, dir, c2, dir);
    int rc = run(cmd, out, sizeof out);
    cr_assert(rc != 0 && rc != 124, "exit %d: %s", rc, out);
    cr_assert(th_has(out, "different configurations"), "%s", out);
    /* two ranks running different programs (a copy with one byte appended still runs) */
    snprintf(cmd, sizeof cmd,
             "cp build/sstc-mpi '%s/other-sstc-mpi' && echo >> '%s/other-sstc-mpi' && "
             "timeout 120 mpirun -np 1 ./build/sstc-mpi train '%s' --out '%s/w' --quiet : "
             "-np 1 '%s/other-sstc-mpi' train '%s' --out '%s/w' --quiet 2>&1", dir, dir, c1, dir, dir, c1, dir);
    rc = run(cmd, out, sizeof out);
    cr_assert(rc != 0 && rc != 124, "exit %d: %s", rc, out);
    cr_assert(th_has(out, "different programs"), "%s", out);
    /* a batch smaller than the job */
    snprintf(cmd, sizeof cmd, "timeout 120 mpirun -np 2 ./build/sstc-mpi train '%s' --out '%s/y' --quiet 2>&1", c3, dir);
    rc = run(cmd, out, sizeof out);
    cr_assert(rc != 0 && rc != 124, "exit %d: %s", rc, out);
    cr_assert(th_has(out, "batch_size 1 cannot be split over 2 ranks"), "%s", out);
    /* a config naming a rank count that the (1-rank) job does not have */
    snprintf(cmd, sizeof cmd, "./build/sstc train '%s' --set experiment.ranks=4 --out '%s/z' --quiet 2>&1", c1, dir);
    cr_assert_eq(run(cmd, out, sizeof out), 1, "%s", out);
    cr_assert(th_has(out, "this job runs 1 rank but the configuration says [experiment] ranks = 4"), "%s", out);
}

/* The whole method on 2 ranks: float training, compression (projection and
 * masks applied identically on every rank), the .sst file checked by rank 0. */
Test(mpi, sstc_run_trains_compresses_and_checks_the_file_on_two_ranks) {
    NEED_MPI();
    static char out[1 << 15];
    char cfg[400], cmd[2000], o[400];
    write_config("r.ini",
                 "[train]\nepochs = 2\nbatch_size = 16\nlr = 0.01\n[fc]\noutputs = 24\nbias = false\n[batchnorm]\n[relu]\n"
                 "[fc]\noutputs = 2\n[compress]\nN = 8\nK = 2\nschedule = 4,2\nstage_epochs = 1\nretrain_epochs = 1\n"
                 "bn_batches = 2\n",
                 cfg, sizeof cfg);
    snprintf(o, sizeof o, "%s/run", dir);
    snprintf(cmd, sizeof cmd, "mpirun -np 2 ./build/sstc-mpi run '%s' --out '%s' --quiet 2>&1", cfg, o);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(th_has(out, "model.sst alone (engine)"), "rank 0 prints the table: %s", out);
    char p[600];
    snprintf(p, sizeof p, "%s/summary.json", o);
    cJSON *j = NULL;
    cr_assert_eq(sstc_read_json(p, &j), 0, "%s", sstc_errmsg());
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "sst_check")), "agrees");
    cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "ranks")), 2);
    cJSON_Delete(j);
}
