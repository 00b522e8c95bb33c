/* sstc data prepare|info|show: get datasets in place and look at them. */
#include "cli.h"
#include "sstc/data.h"
#include "sstc/error.h"
#include "sstc/rng.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: sstc data prepare NAME...\n"
            "       sstc data info NAME\n"
            "       sstc data show NAME [-o FILE.png] [--split S] [--per-class K] [--seed N]\n"
            "\n"
            "Prepare, describe and show datasets. NAME is mnist, cifar10 or fashion-mnist\n"
            "(kept under datasets/, or $SSTC_DATA_DIR), or the path of your own image\n"
            "folder dataset (train/ and test/, one sub-folder of PNG or JPEG images per\n"
            "class), a folder of IDX files or of CIFAR-10 binary batches.\n"
            "\n"
            "Run 'sstc data COMMAND --help' for the options of one command.\n");
}

static void usage_prepare(FILE *f) {
    fprintf(f,
            "usage: sstc data prepare NAME... [-q]\n"
            "\n"
            "Make mnist, cifar10 or fashion-mnist available under the data root\n"
            "(datasets/, or $SSTC_DATA_DIR). A local mirror is used first: the folders in\n"
            "$SSTC_DATA_MIRROR (colon-separated), then ../shared/datasets, then\n"
            "/usr/share/datasets (Debian dataset-* packages). The archive or files are\n"
            "checked against their checksum (SHA256SUMS, the package's md5sums or the\n"
            "upstream MD5) and extracted into datasets/NAME/. Without a mirror the upstream\n"
            "files are downloaded with curl or wget ($SSTC_DATA_UPSTREAM replaces the URL\n"
            "prefix). Running it again does nothing.\n"
            "\n"
            "options:\n"
            "  -q, --quiet   print only errors\n"
            "  -h, --help\n");
}

static void usage_info(FILE *f) {
    fprintf(f,
            "usage: sstc data info NAME\n"
            "\n"
            "Load both splits of NAME and print their sizes, the image shape, the\n"
            "images per class in each split and the per-channel mean and standard\n"
            "deviation of the training images (pixels scaled to [0,1]).\n"
            "\n"
            "options:\n"
            "  -h, --help\n");
}

static void usage_show(FILE *f) {
    fprintf(f,
            "usage: sstc data show NAME [-o FILE.png] [--split train|test] [--per-class K]\n"
            "                     [--seed N] [--scale S]\n"
            "\n"
            "Write a PNG grid of sample images: one row per class (the first 20 classes),\n"
            "K randomly chosen images of that class per row.\n"
            "\n"
            "options:\n"
            "  -o, --output FILE   PNG to write (default grid.png)\n"
            "  --split S           train (default) or test\n"
            "  --per-class K       images per row (default 10)\n"
            "  --seed N            seed for picking the images (default 1)\n"
            "  --scale S           enlarge every pixel S times (default: to about 64 px)\n"
            "  -h, --help\n");
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int parse_int(const char *cmd, const char *opt, const char *s, int lo, int hi, int *out) {
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || v < lo || v > hi) {
        fprintf(stderr, "sstc data %s: %s expects an integer in %d..%d, got '%s'\n", cmd, opt, lo, hi, s ? s : "");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int cmd_prepare(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage_prepare(stdout);
        return 0;
    }
    int verbose = 1, nnames = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) verbose = 0;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "sstc data prepare: unknown option '%s'\n", argv[i]);
            usage_prepare(stderr);
            return 2;
        } else if (!sstc_dataset_is_known(argv[i])) {
            fprintf(stderr,
                    "sstc data prepare: unknown dataset '%s'; known: mnist, cifar10, fashion-mnist (a folder of "
                    "your own images needs no preparation: pass its path to 'sstc data info')\n",
                    argv[i]);
            return 2;
        } else nnames++;
    }
    if (nnames == 0) {
        fprintf(stderr, "sstc data prepare: expected a dataset name (mnist, cifar10, fashion-mnist)\n");
        usage_prepare(stderr);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') continue;
        if (sstc_dataset_prepare(argv[i], verbose)) {
            fprintf(stderr, "sstc data prepare: %s\n", sstc_errmsg());
            return 1;
        }
    }
    return 0;
}

/* NAME and nothing else; 0, or the exit status for a usage error. */
static int one_name(const char *cmd, int argc, char **argv, void (*help)(FILE *)) {
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, argc < 2 ? "sstc data %s: expected a dataset name or path\n"
                                 : "sstc data %s: expected one dataset name or path\n",
                cmd);
        help(stderr);
        return 2;
    }
    return 0;
}

/* The per-class image counts of `sstc data info`, and the pixel statistics. */
static int print_classes(const char *name, sstc_dataset ds[2], const int have[2], const char *split0) {
    sstc_dataset *first = &ds[0];
    int k = first->num_classes;
    printf("classes  %d\n\n", k);
    int width = 5;
    for (int c = 0; c < k; c++)
        if ((int)strlen(first->class_names[c]) > width) width = (int)strlen(first->class_names[c]);
    printf("%-*s  %7s  %7s\n", width, "class", split0, have[1] ? "test" : "");
    int *counts = calloc((size_t)k * 2 + 2, sizeof(int));
    if (!counts) {
        fprintf(stderr, "sstc data info: out of memory\n");
        return 1;
    }
    for (int s = 0; s < 2; s++)
        for (int i = 0; have[s] && i < ds[s].n; i++)
            if (ds[s].labels[i] >= 0 && ds[s].labels[i] < k) counts[s * k + ds[s].labels[i]]++;
    for (int c = 0; c < k; c++) {
        printf("%-*s  %7d", width, first->class_names[c], counts[c]);
        if (have[1]) printf("  %7d", counts[k + c]);
        printf("\n");
    }
    printf("%-*s  %7d", width, "total", ds[0].n);
    if (have[1]) printf("  %7d", ds[1].n);
    printf("\n");
    sstc_normalizer norm;
    if (sstc_dataset_channel_stats(first, NULL, 0, &norm) == 0) {
        printf("\ntrain pixel mean/std (per channel, [0,1] scale):");
        for (int c = 0; c < norm.c; c++) printf(" %.4f/%.4f", norm.mean[c], norm.std[c]);
        printf("\n");
    }
    if (!strcmp(name, "cifar10") && !strcmp(first->format ? first->format : "", "image folder"))
        printf("note: these are JPEG re-encodings of CIFAR-10 (slightly lossy); accuracies on them are close to,\n"
               "      but not the same as, accuracies on the original binary batches\n");
    free(counts);
    return 0;
}

static int cmd_info(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage_info(stdout);
        return 0;
    }
    int rc = one_name("info", argc, argv, usage_info);
    if (rc) return rc;
    const char *name = argv[1];
    sstc_dataset ds[2];
    const char *splits[2] = {"train", "test"};
    double secs[2] = {0, 0};
    int have[2] = {0, 0};
    memset(ds, 0, sizeof ds);
    struct stat st;
    int single = stat(name, &st) == 0 && S_ISREG(st.st_mode);
    if (single) splits[0] = "all";
    for (int s = 0; s < 2; s++) {
        /* A single file holds one split; a folder may lack a test split. */
        if (s == 1 && (single || !sstc_dataset_has_split(name, "test"))) continue;
        double t0 = now_s();
        if (sstc_dataset_load(name, splits[s], &ds[s])) {
            fprintf(stderr, "sstc data info: %s\n", sstc_errmsg());
            sstc_dataset_free(&ds[0]);
            return 1;
        }
        secs[s] = now_s() - t0;
        have[s] = 1;
    }
    sstc_dataset *first = &ds[0];
    printf("dataset  %s (%s%s)\n", name, first->format ? first->format : "?",
           first->from_cache ? ", read from cache" : "");
    printf("%-8s %-7s %-19s %s\n", "split", "images", "shape (c x h x w)", "load time");
    for (int s = 0; s < 2; s++) {
        if (!have[s]) {
            if (!single) printf("%-8s none\n", splits[s]);
            continue;
        }
        char shape[64];
        snprintf(shape, sizeof shape, "%dx%dx%d", ds[s].c, ds[s].h, ds[s].w);
        printf("%-8s %-7d %-19s %.2f s%s\n", splits[s], ds[s].n, shape, secs[s], ds[s].from_cache ? " (cache)" : "");
    }
    if (have[1] && (ds[1].c != ds[0].c || ds[1].h != ds[0].h || ds[1].w != ds[0].w))
        printf("warning: the test images are %dx%dx%d, the training images %dx%dx%d\n", ds[1].c, ds[1].h, ds[1].w,
               ds[0].c, ds[0].h, ds[0].w);
    rc = print_classes(name, ds, have, splits[0]);
    sstc_dataset_free(&ds[0]);
    sstc_dataset_free(&ds[1]);
    return rc;
}

static int cmd_show(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage_show(stdout);
        return 0;
    }
    const char *name = NULL, *out = "grid.png", *split = "train";
    int per_class = 10, seed = 1, scale = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!v) {
                fprintf(stderr, "sstc data show: %s expects a file name\n", a);
                return 2;
            }
            out = v, i++;
        } else if (!strcmp(a, "--split")) {
            if (!v || (strcmp(v, "train") && strcmp(v, "test"))) {
                fprintf(stderr, "sstc data show: --split expects train or test\n");
                return 2;
            }
            split = v, i++;
        } else if (!strcmp(a, "--per-class")) {
            if (parse_int("show", a, v, 1, 100, &per_class)) return 2;
            i++;
        } else if (!strcmp(a, "--seed")) {
            if (parse_int("show", a, v, 0, 2147483647, &seed)) return 2;
            i++;
        } else if (!strcmp(a, "--scale")) {
            if (parse_int("show", a, v, 1, 16, &scale)) return 2;
            i++;
        } else if (a[0] == '-') {
            fprintf(stderr, "sstc data show: unknown option '%s'\n", a);
            usage_show(stderr);
            return 2;
        } else if (name) {
            fprintf(stderr, "sstc data show: expected one dataset name or path, got '%s' and '%s'\n", name, a);
            return 2;
        } else name = a;
    }
    if (!name) {
        fprintf(stderr, "sstc data show: expected a dataset name or path\n");
        usage_show(stderr);
        return 2;
    }
    sstc_dataset ds;
    if (sstc_dataset_load(name, split, &ds)) {
        fprintf(stderr, "sstc data show: %s\n", sstc_errmsg());
        return 1;
    }
    uint8_t *img = NULL;
    int W, H, C = ds.c, rows;
    if (sstc_dataset_sample_grid(&ds, per_class, (uint64_t)seed, scale, &img, &W, &H, &rows)) {
        fprintf(stderr, "sstc data show: %s\n", sstc_errmsg());
        sstc_dataset_free(&ds);
        return 1;
    }
    int rc = sstc_image_write_png(out, W, H, C, img);
    if (rc) fprintf(stderr, "sstc data show: %s\n", sstc_errmsg());
    else {
        printf("wrote %s: %dx%d pixels, %d row%s (classes", out, W, H, rows, rows == 1 ? "" : "s");
        for (int r = 0; r < rows; r++) printf(" %s", ds.class_names[r]);
        printf(" top to bottom) of up to %d %s images each\n", per_class, split);
    }
    free(img);
    sstc_dataset_free(&ds);
    return rc ? 1 : 0;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(sub, "prepare")) return cmd_prepare(argc - 1, argv + 1);
    if (!strcmp(sub, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(sub, "show")) return cmd_show(argc - 1, argv + 1);
    fprintf(stderr, "sstc data: unknown command '%s'\n\n", sub);
    usage(stderr);
    return 2;
}
