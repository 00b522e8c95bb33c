/* sstc codes N K [--list]: the size of the (N,K) code, or its whole table. */
#include "cli.h"
#include "sstc/error.h"
#include "sstc/sst.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage_short(void) {
    fprintf(stderr, "usage: sstc codes N K [--list]\nRun 'sstc codes --help' for details.\n");
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: sstc codes N K [--list]\n"
            "\n"
            "Describe the structured sparse ternary (N,K) code: groups of N weights,\n"
            "at most K of them non-zero (1 <= K <= N <= %d). Prints one line:\n"
            "  N=8 K=2 codes=129 bits=8 bits_per_weight=1.000 compression=32.0\n"
            "codes is M(N,K), bits = ceil(log2 M) per group, compression is against\n"
            "32-bit floats.\n"
            "\n"
            "options:\n"
            "  --list   print the code table instead, one entry a line in canonical\n"
            "           order: INDEX and the N entries as '+', '-' or '0'\n"
            "  -h, --help\n",
            SSTC_MAX_N);
}

static int parse_int(const char *s, int *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (!*s || *end || errno || x < -1000000 || x > 1000000) return -1;
    *v = (int)x;
    return 0;
}

static int print_list(int N, int K) {
    uint32_t M = sstc_code_count(N, K);
    sstc_code_table *tb = NULL;
    if (M <= SSTC_CODE_TABLE_MAX_ENTRIES && sstc_code_table_create(N, K, &tb)) {
        fprintf(stderr, "sstc codes: %s\n", sstc_errmsg());
        return 1;
    }
    char line[SSTC_MAX_N + 1];
    int8_t t[SSTC_MAX_N];
    for (uint32_t i = 0; i < M; i++) {
        const int8_t *e = t;
        if (tb) e = tb->dense + (size_t)i * N;
        else sstc_code_unrank(N, K, i, t);
        for (int q = 0; q < N; q++) line[q] = e[q] > 0 ? '+' : e[q] < 0 ? '-' : '0';
        line[N] = 0;
        printf("%u %s\n", i, line);
    }
    sstc_code_table_free(tb);
    return 0;
}

int cmd_codes(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    int list = 0, npos = 0;
    const char *pos[2];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) {
            list = 1;
        } else if (argv[i][0] == '-' && argv[i][1] && !(argv[i][1] >= '0' && argv[i][1] <= '9')) {
            fprintf(stderr, "sstc codes: unknown option '%s'\n", argv[i]);
            usage_short();
            return 2;
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            fprintf(stderr, "sstc codes: too many arguments ('%s')\n", argv[i]);
            usage_short();
            return 2;
        }
    }
    if (npos != 2) {
        fprintf(stderr, "sstc codes: expected N and K\n");
        usage_short();
        return 2;
    }
    int N, K;
    if (parse_int(pos[0], &N) || parse_int(pos[1], &K)) {
        fprintf(stderr, "sstc codes: N and K must be integers, got '%s' and '%s'\n", pos[0], pos[1]);
        usage_short();
        return 2;
    }
    if (N < 1 || N > SSTC_MAX_N || K < 1 || K > N) {
        fprintf(stderr, "sstc codes: need 1 <= K <= N <= %d, got N=%d K=%d\n", SSTC_MAX_N, N, K);
        usage_short();
        return 2;
    }
    if (list) return print_list(N, K);
    int bits = sstc_code_bits(N, K);
    double bpw = (double)bits / N;
    printf("N=%d K=%d codes=%u bits=%d bits_per_weight=%.3f compression=%.1f\n", N, K, sstc_code_count(N, K), bits,
           bpw, 32.0 / bpw);
    return 0;
}
