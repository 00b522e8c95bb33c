/* sstc inspect FILE.sst: the layers of a coded network and its bits per weight. */
#include "cli.h"
#include "sstc/error.h"
#include "sstc/sst.h"

#include <stdio.h>
#include <string.h>

static void usage_short(void) {
    fprintf(stderr, "usage: sstc inspect FILE.sst\nRun 'sstc inspect --help' for details.\n");
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: sstc inspect FILE.sst\n"
            "\n"
            "Check a .sst file (checksum, shapes, codes) and print its input\n"
            "preprocessing (per-channel mean and std) and its layers: shapes, and for\n"
            "coded layers N, K, delta and bits per group. The last line is\n"
            "machine-readable: weights, the coded layers' code bits per weight, file\n"
            "bytes, total bits per weight (the whole file over every fc/conv weight)\n"
            "and the compression against float32.\n"
            "\n"
            "options:\n"
            "  -h, --help\n");
}

static void print_layer(int i, const sstc_sst_layer *L) {
    char shape[160];
    sstc_sst_layer_describe(L, shape, sizeof shape);
    size_t fan_in = sstc_sst_fan_in(L), weights = (size_t)L->out * fan_in;
    if (!fan_in) { /* no weights */
        printf("%-5d %-9s %s\n", i, sstc_sst_kind_name(L->kind), shape);
        return;
    }
    printf("%-5d %-9s %-26s", i, sstc_sst_kind_name(L->kind), shape);
    if (!L->coded) {
        printf(" float  weights=%zu bits_per_weight=32.000\n", weights);
        return;
    }
    int bits = sstc_code_bits(L->N, L->K);
    size_t groups = (size_t)L->out * sstc_groups_per_row(fan_in, L->N);
    char delta[64];
    if (L->per_row_delta) {
        float lo = L->delta[0], hi = L->delta[0];
        for (int r = 1; r < L->out; r++) {
            if (L->delta[r] < lo) lo = L->delta[r];
            if (L->delta[r] > hi) hi = L->delta[r];
        }
        snprintf(delta, sizeof delta, "per-row[%.4g..%.4g]", lo, hi);
    } else {
        snprintf(delta, sizeof delta, "%.6g", L->delta[0]);
    }
    printf(" coded  N=%d K=%d delta=%s bits=%d groups=%zu code_bytes=%zu bits_per_weight=%.3f\n", L->N, L->K, delta,
           bits, groups, L->codes_bytes, weights ? 8.0 * L->codes_bytes / weights : 0.0);
}

int cmd_inspect(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, argc < 2 ? "sstc inspect: expected a .sst file\n" : "sstc inspect: expected one .sst file\n");
        usage_short();
        return 2;
    }
    sstc_sst_model *m = NULL;
    if (sstc_sst_read(argv[1], &m)) {
        fprintf(stderr, "sstc inspect: %s\n", sstc_errmsg());
        return 1;
    }
    size_t bytes = sstc_sst_size(m), weights = 0, code_bytes = 0, coded_weights = 0;
    printf("%s: version %d, input %dx%dx%d, %d classes, %d layers, %zu bytes\n", argv[1], sstc_sst_file_version(m), m->in_c,
           m->in_h, m->in_w, m->num_classes, m->n_layers, bytes);
    printf("input x = (pixel/255 - mean)/std:");
    for (int c = 0; c < m->in_c && c < 4; c++) printf(" c%d mean=%.6g std=%.6g", c, m->in_mean[c], m->in_std[c]);
    printf("\n");
    printf("evaluation: %s\n", m->eval_flags & SSTC_SST_EVAL_FLIP
                                   ? "test-time flip averaging (each image with its mirror image; infer and eval "
                                     "average so unless --no-flip)"
                                   : "one view per image");
    for (int i = 0; i < m->n_layers; i++) {
        const sstc_sst_layer *L = &m->layers[i];
        print_layer(i, L);
        size_t w = (size_t)L->out * sstc_sst_fan_in(L);
        weights += w;
        if (L->coded) {
            coded_weights += w;
            code_bytes += L->codes_bytes;
        }
    }
    double bpw = weights ? 8.0 * bytes / weights : 0.0;
    printf("weights=%zu coded_weights=%zu code_bytes=%zu code_bits_per_weight=%.3f file_bytes=%zu "
           "bits_per_weight=%.3f compression=%.1f\n",
           weights, coded_weights, code_bytes, coded_weights ? 8.0 * code_bytes / coded_weights : 0.0, bytes, bpw,
           bpw > 0 ? 32.0 / bpw : 0.0);
    sstc_sst_free(m);
    return 0;
}
