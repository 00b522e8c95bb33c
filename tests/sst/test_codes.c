/* (N,K) code counting, canonical order, tables, rank and unrank. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sst_helpers.h"

static double choose(int n, int k) {
    double c = 1;
    for (int i = 1; i <= k; i++) c = c * (n - k + i) / i;
    return c;
}

Test(sst_codes, count_matches_closed_form_for_every_n_up_to_16) {
    for (int N = 1; N <= 16; N++)
        for (int K = 1; K <= N; K++) {
            double m = 0;
            for (int i = 0; i <= K; i++) m += choose(N, i) * ldexp(1, i);
            cr_assert_eq((double)sstc_code_count(N, K), m, "M(%d,%d)", N, K);
            int b = (int)ceil(log2(m));
            cr_assert_eq(sstc_code_bits(N, K), b, "bits(%d,%d)", N, K);
        }
    for (int N = 1; N <= 16; N++) cr_assert_eq((double)sstc_code_count(N, N), pow(3, N), "M(%d,%d) = 3^N", N, N);
}

Test(sst_codes, count_matches_the_method_table) {
    const int tab[][4] = {{4, 1, 9, 4}, {8, 1, 17, 5}, {8, 2, 129, 8}, {8, 3, 577, 10}, {16, 2, 513, 10}, {16, 4, 34113, 16}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        cr_assert_eq(sstc_code_count(tab[i][0], tab[i][1]), (uint32_t)tab[i][2]);
        cr_assert_eq(sstc_code_bits(tab[i][0], tab[i][1]), tab[i][3]);
    }
}

Test(sst_codes, count_is_zero_for_invalid_n_k) {
    cr_assert_eq(sstc_code_count(0, 0), 0);
    cr_assert_eq(sstc_code_count(8, 0), 0);
    cr_assert_eq(sstc_code_count(8, 9), 0);
    cr_assert_eq(sstc_code_count(17, 1), 0);
    cr_assert_eq(sstc_code_bits(17, 2), 0);
}

/* The documented order as a sort key: (nnz, positions lexicographic, signs
 * as a binary number with the first position most significant, + = 0). */
static int canon_cmp_N;
static int canon_cmp(const void *pa, const void *pb) {
    const int8_t *a = pa, *b = pb;
    int N = canon_cmp_N, na = 0, nb = 0;
    for (int q = 0; q < N; q++) na += a[q] != 0, nb += b[q] != 0;
    if (na != nb) return na - nb;
    int pa_[16], pb_[16], sa = 0, sb = 0, k = 0;
    for (int q = 0; q < N; q++)
        if (a[q]) pa_[k] = q, sa = sa * 2 + (a[q] < 0), k++;
    k = 0;
    for (int q = 0; q < N; q++)
        if (b[q]) pb_[k] = q, sb = sb * 2 + (b[q] < 0), k++;
    for (int j = 0; j < na; j++)
        if (pa_[j] != pb_[j]) return pa_[j] - pb_[j];
    return sa - sb;
}

Test(sst_codes, table_is_every_code_once_in_the_documented_order) {
    for (int N = 1; N <= 8; N++)
        for (int K = 1; K <= N; K++) {
            /* brute force: all 3^N vectors with <= K non-zeros, sorted by the key */
            int total = (int)pow(3, N), M = 0;
            int8_t *all = malloc((size_t)total * N);
            for (int v = 0; v < total; v++) {
                int x = v, nnz = 0;
                int8_t *t = all + (size_t)M * N;
                for (int q = 0; q < N; q++, x /= 3) t[q] = (int8_t)(x % 3 == 2 ? -1 : x % 3), nnz += x % 3 != 0;
                if (nnz <= K) M++;
            }
            canon_cmp_N = N;
            qsort(all, (size_t)M, (size_t)N, canon_cmp);
            sstc_code_table *tb;
            cr_assert_eq(sstc_code_table_create(N, K, &tb), SSTC_OK, "%s", sstc_errmsg());
            cr_assert_eq(tb->M, (uint32_t)M);
            cr_assert_eq(memcmp(tb->dense, all, (size_t)M * N), 0, "table (%d,%d) differs from the canonical order", N, K);
            sstc_code_table_free(tb);
            free(all);
        }
}

Test(sst_codes, table_positions_and_signs_match_its_dense_rows) {
    sstc_code_table *tb;
    cr_assert_eq(sstc_code_table_create(16, 4, &tb), SSTC_OK);
    for (uint32_t i = 0; i < tb->M; i++) {
        int8_t t[16] = {0};
        for (int j = 0; j < tb->nnz[i]; j++) {
            if (j) cr_assert_lt(tb->pos[i * 4 + j - 1], tb->pos[i * 4 + j], "positions ascend");
            t[tb->pos[i * 4 + j]] = tb->sign[i * 4 + j];
        }
        cr_assert_eq(memcmp(t, tb->dense + (size_t)i * 16, 16), 0, "entry %u", i);
    }
    sstc_code_table_free(tb);
}

Test(sst_codes, encode_rank_and_unrank_invert_the_table) {
    const int nk[][2] = {{4, 1}, {4, 4}, {6, 3}, {8, 1}, {8, 2}, {8, 3}, {16, 2}, {16, 4}, {16, 6}};
    for (size_t c = 0; c < sizeof nk / sizeof nk[0]; c++) {
        int N = nk[c][0], K = nk[c][1];
        sstc_code_table *tb;
        cr_assert_eq(sstc_code_table_create(N, K, &tb), SSTC_OK, "%s", sstc_errmsg());
        cr_assert_eq(tb->bits, sstc_code_bits(N, K));
        for (uint32_t i = 0; i < tb->M; i++) {
            const int8_t *e = tb->dense + (size_t)i * N;
            cr_assert_eq(sstc_code_encode(tb, e), (int64_t)i, "(%d,%d) encode entry %u", N, K, i);
            uint32_t r;
            cr_assert_eq(sstc_code_rank(N, K, e, &r), SSTC_OK);
            cr_assert_eq(r, i, "(%d,%d) rank of entry %u", N, K, i);
            int8_t t[16];
            cr_assert_eq(sstc_code_unrank(N, K, i, t), SSTC_OK);
            cr_assert_eq(memcmp(t, e, (size_t)N), 0, "(%d,%d) unrank %u", N, K, i);
        }
        sstc_code_table_free(tb);
    }
}

Test(sst_codes, plain_ternary_16_ranks_without_a_table) {
    sstc_code_table *tb = (sstc_code_table *)1;
    cr_assert_eq(sstc_code_table_create(16, 16, &tb), SSTC_EINVAL, "3^16 entries is too many for a table");
    cr_assert_null(tb);
    sstc_rng r;
    sstc_rng_seed(&r, 7);
    uint32_t M = sstc_code_count(16, 16);
    for (int it = 0; it < 20000; it++) {
        int8_t t[16], back[16];
        for (int q = 0; q < 16; q++) t[q] = (int8_t)sstc_rng_below(&r, 3) - 1;
        uint32_t i;
        cr_assert_eq(sstc_code_rank(16, 16, t, &i), SSTC_OK);
        cr_assert_lt(i, M);
        cr_assert_eq(sstc_code_unrank(16, 16, i, back), SSTC_OK);
        cr_assert_eq(memcmp(t, back, 16), 0);
    }
    int8_t last[16];
    cr_assert_eq(sstc_code_unrank(16, 16, M - 1, last), SSTC_OK);
    for (int q = 0; q < 16; q++) cr_assert_eq(last[q], -1, "the last entry is all minus");
}

Test(sst_codes, table_16_4_builds_in_well_under_a_second) {
    clock_t t0 = clock();
    sstc_code_table *tb;
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(sstc_code_table_create(16, 4, &tb), SSTC_OK);
        cr_assert_eq(tb->M, 34113u);
        if (i < 9) sstc_code_table_free(tb);
    }
    double s = (double)(clock() - t0) / CLOCKS_PER_SEC;
    cr_assert_lt(s, 2.0, "10 builds of the (16,4) table took %.3f s", s);
    sstc_code_table_free(tb);
}

Test(sst_codes, invalid_codes_and_indices_are_rejected) {
    int8_t t[8] = {1, -1, 1, 0, 0, 0, 0, 0};
    uint32_t i;
    cr_assert_eq(sstc_code_rank(8, 2, t, &i), SSTC_EINVAL, "three non-zeros with K=2");
    cr_assert_eq(sstc_code_rank(8, 3, t, &i), SSTC_OK);
    t[4] = 2;
    cr_assert_eq(sstc_code_rank(8, 3, t, &i), SSTC_EINVAL, "entry 2 is not ternary");
    cr_assert_eq(sstc_code_unrank(8, 2, 129, t), SSTC_EINVAL, "index M is out of range");
    cr_assert_eq(sstc_code_unrank(8, 2, 128, t), SSTC_OK);
    sstc_code_table *tb;
    cr_assert_eq(sstc_code_table_create(8, 2, &tb), SSTC_OK);
    int8_t u[8] = {1, 1, 1, 0, 0, 0, 0, 0};
    cr_assert_lt(sstc_code_encode(tb, u), 0);
    sstc_code_table_free(tb);
    cr_assert_eq(sstc_code_table_create(17, 2, &tb), SSTC_EINVAL);
    cr_assert_eq(sstc_code_table_create(4, 5, &tb), SSTC_EINVAL);
    cr_assert_eq(sstc_code_table_create(4, 0, &tb), SSTC_EINVAL);
    cr_assert_neq(strstr(sstc_errmsg(), "K <= N"), NULL, "message says what is expected: %s", sstc_errmsg());
}
