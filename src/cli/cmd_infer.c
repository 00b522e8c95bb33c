/* sstc infer MODEL.sst --data NAME: the test error of a coded network run by
 * the multiplication-free engine from its .sst file alone; and the .sst side
 * of `sstc eval`. */
#include "cli.h"
#include "sstc/data.h"
#include "sstc/error.h"
#include "sstc/infer.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

static const char infer_usage[] =
    "usage: sstc infer MODEL.sst --data NAME [--int8] [--calib N] [--limit N] [--batch B]\n"
    "\n"
    "Runs the coded network of MODEL.sst with the multiplication-free inference\n"
    "engine (nothing but the .sst file: group indices looked up in the code\n"
    "table, inputs added or subtracted, one affine per output) on the test split\n"
    "of NAME (a known dataset or a path, as for `sstc data`), with the file's own\n"
    "input preprocessing, and prints one line:\n"
    "  mode=float test_loss=... test_error=... count=... errors=... images_per_s=...\n"
    "\n"
    "options:\n"
    "  --data NAME   test set (required)\n"
    "  --int8        also run with 8-bit activations and 32-bit accumulators,\n"
    "                activation scales calibrated on the first N training images;\n"
    "                prints a second line (mode=int8 ...) and int8_cost_points, the\n"
    "                test error difference in percentage points\n"
    "  --calib N     calibration images for --int8 (default 500)\n"
    "  --limit N     only the first N test images\n"
    "  --batch B     images per forward pass (default 64; 1 measures latency)\n"
    "  --flip        average each image's class probabilities with its mirror\n"
    "                image's (test-time flip averaging, as [data] test_flip); the\n"
    "                default when the file records that its network was evaluated\n"
    "                so (`sstc inspect` shows it), and the line then says flip=1\n"
    "  --no-flip     one view per image, whatever the file records\n"
    "  -h, --help\n";

static int parse_count(const char *opt, const char *s, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < 1) {
        fprintf(stderr, "sstc infer: %s expects a positive integer, got '%s'\n", opt, s);
        return 2;
    }
    *out = v;
    return 0;
}

static void print_result(const char *mode, int flip, const sstc_infer_result *r) {
    printf("mode=%s test_loss=%.6f test_error=%.6f count=%ld errors=%ld images_per_s=%.0f flip=%d\n", mode, r->loss,
           r->error, r->count, r->errors, r->seconds > 0 ? (double)r->count / r->seconds : 0.0, flip);
}

/* --flip / --no-flip, else what the file records (flip < 0: not given). */
static int flip_of(const sstc_engine *e, int flip) {
    if (flip >= 0) return flip;
    sstc_engine_info info;
    sstc_engine_get_info(e, &info);
    return (info.eval_flags & SSTC_SST_EVAL_FLIP) != 0;
}

int cli_check_dataset(const sstc_engine *e, const sstc_dataset *ds) {
    return sstc_engine_check_input(e, ds->c, ds->h, ds->w, ds->num_classes);
}

/* Loads the first `n` training images of `data` for calibration. */
static int calibrate(sstc_engine *e, const char *data, long n) {
    sstc_dataset train = {0};
    if (sstc_dataset_load(data, "train", &train)) {
        fprintf(stderr, "sstc infer: calibration images: %s\n", sstc_errmsg());
        return 1;
    }
    int rc = cli_check_dataset(e, &train);
    if (!rc) rc = sstc_engine_calibrate(e, train.pixels, (int)(n < train.n ? n : train.n));
    if (rc) fprintf(stderr, "sstc infer: calibration: %s\n", sstc_errmsg());
    sstc_dataset_free(&train);
    return rc ? 1 : 0;
}

static int load_test(const char *path, const char *data, sstc_engine **e, sstc_dataset *test) {
    if (sstc_engine_load(path, e)) {
        fprintf(stderr, "%s\n", sstc_errmsg());
        return 1;
    }
    if (sstc_dataset_load(data, "test", test)) {
        fprintf(stderr, "test set: %s\n", sstc_errmsg());
        return 1;
    }
    if (cli_check_dataset(*e, test)) {
        fprintf(stderr, "%s: %s\n", data, sstc_errmsg());
        return 1;
    }
    return 0;
}

int cmd_infer(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(infer_usage, stdout);
        return 0;
    }
    const char *path = NULL, *data = NULL;
    long limit = 0, batch = 64, calib = 500;
    int int8 = 0, flip = -1;
    for (int i = 1; i < argc; i++) {
        int bad = 0;
        if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--int8")) int8 = 1;
        else if (!strcmp(argv[i], "--flip")) flip = 1;
        else if (!strcmp(argv[i], "--no-flip")) flip = 0;
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) bad = parse_count("--limit", argv[++i], &limit);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) bad = parse_count("--batch", argv[++i], &batch);
        else if (!strcmp(argv[i], "--calib") && i + 1 < argc) bad = parse_count("--calib", argv[++i], &calib);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "sstc infer: unknown or incomplete option '%s'\n\n%s", argv[i], infer_usage);
            return 2;
        } else if (!path) path = argv[i];
        else {
            fprintf(stderr, "sstc infer: unexpected argument '%s'\n\n%s", argv[i], infer_usage);
            return 2;
        }
        if (bad) return bad;
    }
    if (!path || !data) {
        fprintf(stderr, "sstc infer: need MODEL.sst and --data NAME\n\n%s", infer_usage);
        return 2;
    }
    if (batch > 1 << 20) batch = 1 << 20;
    sstc_engine *e = NULL;
    sstc_dataset test = {0};
    int status = load_test(path, data, &e, &test);
    sstc_infer_result rf, rq;
    long n = limit > 0 && limit < test.n ? limit : test.n;
    if (!status) flip = flip_of(e, flip);
    if (!status && sstc_engine_evaluate_flip(e, test.pixels, test.labels, n, (int)batch, flip, NULL, &rf)) {
        fprintf(stderr, "sstc infer: %s\n", sstc_errmsg());
        status = 1;
    }
    if (!status) print_result("float", flip, &rf);
    if (!status && int8) {
        status = calibrate(e, data, calib);
        if (!status && (sstc_engine_set_mode(e, SSTC_ENGINE_INT8) ||
                        sstc_engine_evaluate_flip(e, test.pixels, test.labels, n, (int)batch, flip, NULL, &rq))) {
            fprintf(stderr, "sstc infer: %s\n", sstc_errmsg());
            status = 1;
        }
        if (!status) {
            print_result("int8", flip, &rq);
            printf("int8_cost_points=%.4f calib_images=%ld\n", 100.0 * (rq.error - rf.error), calib);
        }
    }
    sstc_dataset_free(&test);
    sstc_engine_free(e);
    return status;
}

int cli_is_sst_file(const char *path) {
    /* non-blocking: a FIFO must not hang the peek (the reader refuses it) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    unsigned char b[8];
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, b, 8) : 0;
    close(fd);
    /* .sst: "SSTC" then a u32 version; checkpoints start "SSTCCKPT" */
    return n == 8 && !memcmp(b, "SSTC", 4) && memcmp(b + 4, "CKPT", 4);
}

int cli_eval_sst(const char *path, const char *data, int flip) {
    if (!data) {
        fprintf(stderr, "sstc eval: %s is a .sst file, which does not name its dataset: pass --data NAME\n", path);
        return 2;
    }
    sstc_engine *e = NULL;
    sstc_dataset test = {0};
    sstc_infer_result r;
    int status = load_test(path, data, &e, &test);
    if (!status) flip = flip_of(e, flip);
    if (!status && sstc_engine_evaluate_flip(e, test.pixels, test.labels, test.n, 64, flip, NULL, &r)) {
        fprintf(stderr, "sstc eval: %s\n", sstc_errmsg());
        status = 1;
    }
    if (!status) printf("test_loss=%.6f test_error=%.6f count=%ld flip=%d\n", r.loss, r.error, r.count, flip);
    sstc_dataset_free(&test);
    sstc_engine_free(e);
    return status;
}
