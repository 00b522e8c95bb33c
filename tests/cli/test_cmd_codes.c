/* sstc codes: the summary line, --list, and usage errors. Runs the built
 * program from the repository root. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../data/data_helpers.h"

/* Runs cmd, captures stdout (and stderr when the command redirects it). */
static int run(const char *cmd, char *out, size_t cap) { return th_run(cmd, out, cap); }

Test(sst_cli, codes_prints_one_machine_readable_line) {
    const char *want[][2] = {
        {"8 2", "N=8 K=2 codes=129 bits=8 bits_per_weight=1.000 compression=32.0\n"},
        {"4 1", "N=4 K=1 codes=9 bits=4 bits_per_weight=1.000 compression=32.0\n"},
        {"8 1", "N=8 K=1 codes=17 bits=5 bits_per_weight=0.625 compression=51.2\n"},
        {"8 3", "N=8 K=3 codes=577 bits=10 bits_per_weight=1.250 compression=25.6\n"},
        {"16 2", "N=16 K=2 codes=513 bits=10 bits_per_weight=0.625 compression=51.2\n"},
        {"16 4", "N=16 K=4 codes=34113 bits=16 bits_per_weight=1.000 compression=32.0\n"},
        {"16 16", "N=16 K=16 codes=43046721 bits=26 bits_per_weight=1.625 compression=19.7\n"},
        {"1 1", "N=1 K=1 codes=3 bits=2 bits_per_weight=2.000 compression=16.0\n"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char cmd[64], out[256];
        snprintf(cmd, sizeof cmd, "./build/sstc codes %s", want[i][0]);
        cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", cmd);
        cr_assert_str_eq(out, want[i][1]);
    }
}

Test(sst_cli, codes_list_prints_the_table_in_canonical_order) {
    static char out[1 << 16];
    cr_assert_eq(run("./build/sstc codes 4 2 --list", out, sizeof out), 0);
    int lines = 0;
    for (char *c = out; *c; c++) lines += *c == '\n';
    cr_assert_eq(lines, 33, "M(4,2) = 33 lines");
    cr_assert_eq(strncmp(out, "0 0000\n1 +000\n2 -000\n3 0+00\n", 28), 0, "%.40s", out);
    cr_assert_neq(strstr(out, "\n9 ++00\n10 +-00\n11 -+00\n12 --00\n13 +0+0\n"), NULL, "pairs follow singles");
    cr_assert_neq(strstr(out, "\n32 00--\n"), NULL, "last entry");
    cr_assert_eq(run("./build/sstc codes 16 4 --list | wc -l", out, sizeof out), 0);
    cr_assert_eq(atoi(out), 34113);
}

Test(sst_cli, codes_rejects_bad_arguments_with_a_usage_error) {
    const char *bad[][2] = {
        {"9 10", "K <= N"},  {"17 2", "N <= 16"}, {"0 0", "1 <= K"}, {"eight 2", "integers"},
        {"8 2x", "integers"}, {"8", "expected N and K"}, {"", "expected N and K"}, {"8 2 3", "too many"},
        {"--bogus 8 2", "unknown option"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cmd[96], out[1024];
        snprintf(cmd, sizeof cmd, "./build/sstc codes %s 2>&1", bad[i][0]);
        cr_assert_eq(run(cmd, out, sizeof out), 2, "'%s' exits 2: %s", bad[i][0], out);
        cr_assert_neq(strstr(out, bad[i][1]), NULL, "'%s': expected '%s' in %s", bad[i][0], bad[i][1], out);
        cr_assert_neq(strstr(out, "usage: sstc codes"), NULL, "%s", out);
    }
    char out[2048];
    cr_assert_eq(run("./build/sstc codes --help", out, sizeof out), 0);
    cr_assert_neq(strstr(out, "--list"), NULL);
    cr_assert_eq(run("./build/sstc inspect 2>&1", out, sizeof out), 2);
    cr_assert_eq(run("./build/sstc inspect --help", out, sizeof out), 0);
}
