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

/* Shared helpers (cmd_train.c). */
#include <signal.h>
void cli_install_stop_handlers(void);
volatile sig_atomic_t *cli_stop_flag(void);
int cli_mkdirs(const char *path);
#include <stdio.h>
void json_escape(FILE *f, const char *s);
/* The training loop of `sstc train` on an open session: metrics.csv,
 * checkpoints, summary.json in outdir. Returns the exit status. */
struct sstc_session;
int cli_train_session(struct sstc_session *s, const char *outdir, const char *config_path, int resume, int quiet);
/* Evaluates a checkpoint (or, where supported, a .sst file) on a test set. */
int cli_eval_checkpoint(const char *ckpt, const char *data);
/* flip: average each test image with its mirror image ([data] test_flip) */
int cli_eval_checkpoint_flip(const char *ckpt, const char *data, int flip);
int cli_eval_file(const char *path, const char *data);
/* The .sst side (cmd_infer.c, cmd_export_c.c). */
int cli_is_sst_file(const char *path);
int cli_eval_sst(const char *path, const char *data);
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
