/* Subcommands of the sstc command-line program. Each takes the arguments that
 * follow its name (argv[0] is the subcommand name) and returns the process
 * exit status: 0 success, 1 runtime failure, 2 usage error. */
#ifndef SSTC_CLI_H
#define SSTC_CLI_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_compress(int argc, char **argv);
int cmd_codes(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_infer(int argc, char **argv);

int cmd_run(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_plot(int argc, char **argv);

/* ---- shared by the run commands (common.c) ---- */
#include <signal.h>
#include "sstc/train.h"

void cli_install_stop_handlers(void);
volatile sig_atomic_t *cli_stop_flag(void);

#define CLI_MAX_OVERRIDES 128
typedef struct {
    const char *config, *out, *from;
    const char *overrides[CLI_MAX_OVERRIDES];
    int noverrides;
    int resume, quiet, allow_config_change;
    char epochs_buf[64];
    char resume_hint[2048];  /* this command line with --resume */
} cli_run_args;

/* CONFIG [--out DIR] [--epochs E] [--set S.K=V ...] [--resume] [--quiet]
 * [--from CKPT if allow_from]; prints the usage on error and returns 2. */
int cli_parse_run_args(int argc, char **argv, cli_run_args *a, const char *cmd, const char *usage, int allow_from);
/* Opens the session the arguments describe, with Ctrl-C / SIGTERM stopping
 * it after the current batch; prints the error and returns 1 on failure. */
int cli_open_session(const cli_run_args *a, const char *cmd, sstc_session **s);
/* Exit status of a library call's result (0, 130 when interrupted, 1),
 * printing its message. */
int cli_run_status(int rc, const char *cmd);

/* Evaluates a checkpoint (or, where supported, a .sst file) on a test set. */
int cli_eval_checkpoint(const char *ckpt, const char *data);
/* flip: average each test image with its mirror image ([data] test_flip) */
int cli_eval_checkpoint_flip(const char *ckpt, const char *data, int flip);
/* The same after re-estimating batch-norm statistics over bn_batches training batches (0: none). */
int cli_eval_checkpoint_bn(const char *ckpt, const char *data, int flip, int bn_batches);
int cli_eval_file(const char *path, const char *data);
/* The .sst side (cmd_infer.c, cmd_export_c.c). */
int cli_is_sst_file(const char *path);
/* flip: 1 averaged with the mirror image, 0 one view, -1 as the file records */
int cli_eval_sst(const char *path, const char *data, int flip);
/* The engine takes images and labels as arrays: this checks that a
 * dataset's images and classes fit it (SSTC_ESHAPE naming both shapes). */
struct sstc_engine;
struct sstc_dataset;
int cli_check_dataset(const struct sstc_engine *e, const struct sstc_dataset *ds);
/* Writes DIR/sstc_net.h and DIR/sstc_net.c for MODEL.sst; calib_data (may be
 * NULL) names a dataset whose training images calibrate the int8 variant. */
int cli_export_c_header(const char *sst_path, const char *dir, const char *calib_data);

/* True if argv contains -h or --help. */
int cli_wants_help(int argc, char **argv);

#endif
