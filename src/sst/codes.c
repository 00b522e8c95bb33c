/* (N,K) code counting, canonical ranking and code tables.
 *
 * Canonical order (docs/format.md): entries with fewer non-zeros first; among
 * entries with i non-zeros, position sets in lexicographic order of their
 * ascending position lists; within one position set, the signs read as an
 * i-bit binary number, first position most significant, 0 = +, 1 = -. So
 * index = offset(i) + rank(positions) * 2^i + signbits. */
#include "sstc/sst.h"
#include "sstc/error.h"

#include <stdlib.h>
#include <string.h>

/* C(n,k) for n, k <= 16 (Pascal's triangle; 0 where k > n). */
static const uint32_t binom_table[SSTC_MAX_N + 1][SSTC_MAX_N + 1] = {
    {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 3, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 4, 6, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 5, 10, 10, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 6, 15, 20, 15, 6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 7, 21, 35, 35, 21, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 8, 28, 56, 70, 56, 28, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 9, 36, 84, 126, 126, 84, 36, 9, 1, 0, 0, 0, 0, 0, 0, 0},
    {1, 10, 45, 120, 210, 252, 210, 120, 45, 10, 1, 0, 0, 0, 0, 0, 0},
    {1, 11, 55, 165, 330, 462, 462, 330, 165, 55, 11, 1, 0, 0, 0, 0, 0},
    {1, 12, 66, 220, 495, 792, 924, 792, 495, 220, 66, 12, 1, 0, 0, 0, 0},
    {1, 13, 78, 286, 715, 1287, 1716, 1716, 1287, 715, 286, 78, 13, 1, 0, 0, 0},
    {1, 14, 91, 364, 1001, 2002, 3003, 3432, 3003, 2002, 1001, 364, 91, 14, 1, 0, 0},
    {1, 15, 105, 455, 1365, 3003, 5005, 6435, 6435, 5005, 3003, 1365, 455, 105, 15, 1, 0},
    {1, 16, 120, 560, 1820, 4368, 8008, 11440, 12870, 11440, 8008, 4368, 1820, 560, 120, 16, 1},
};

static uint32_t binom(int n, int k) {
    if (n < 0 || k < 0 || k > n) return 0;
    return binom_table[n][k];
}

static int valid_nk(int N, int K) { return N >= 1 && N <= SSTC_MAX_N && K >= 1 && K <= N; }

/* Index of the first entry with i non-zeros. */
static uint32_t offset_of(int N, int i) {
    uint32_t off = 0;
    for (int j = 0; j < i; j++) off += binom(N, j) << j;
    return off;
}

uint32_t sstc_code_count(int N, int K) {
    if (!valid_nk(N, K)) return 0;
    return offset_of(N, K + 1);
}

int sstc_code_bits(int N, int K) {
    uint32_t m = sstc_code_count(N, K);
    if (!m) return 0;
    int b = 0;
    while (((uint64_t)1 << b) < m) b++;
    return b;
}

size_t sstc_groups_per_row(size_t cols, int N) {
    if (N <= 0) return 0;
    return (cols + (size_t)N - 1) / (size_t)N;
}

int sstc_code_rank(int N, int K, const int8_t *t, uint32_t *index) {
    if (!valid_nk(N, K) || !t || !index) return sstc_fail(SSTC_EINVAL, "sstc_code_rank: invalid arguments (N=%d K=%d)", N, K);
    int pos[SSTC_MAX_N], nnz = 0;
    uint32_t sbits = 0;
    for (int q = 0; q < N; q++) {
        if (t[q] == 0) continue;
        if (t[q] != 1 && t[q] != -1)
            return sstc_fail(SSTC_EINVAL, "sstc_code_rank: entry %d is %d, expected -1, 0 or 1", q, t[q]);
        if (nnz == K) return sstc_fail(SSTC_EINVAL, "sstc_code_rank: more than K=%d non-zeros in a group of N=%d", K, N);
        pos[nnz++] = q;
        sbits = (sbits << 1) | (t[q] < 0);
    }
    uint32_t r = 0;
    int prev = -1;
    for (int j = 0; j < nnz; j++) {
        for (int q = prev + 1; q < pos[j]; q++) r += binom(N - 1 - q, nnz - 1 - j);
        prev = pos[j];
    }
    *index = offset_of(N, nnz) + (r << nnz) + sbits;
    return SSTC_OK;
}

int sstc_code_unrank(int N, int K, uint32_t index, int8_t *t) {
    if (!valid_nk(N, K) || !t) return sstc_fail(SSTC_EINVAL, "sstc_code_unrank: invalid arguments (N=%d K=%d)", N, K);
    uint32_t m = sstc_code_count(N, K);
    if (index >= m) return sstc_fail(SSTC_EINVAL, "code index %u out of range for (N,K)=(%d,%d): M=%u", index, N, K, m);
    int i = 0;
    while (i < K && offset_of(N, i + 1) <= index) i++;
    uint32_t r = index - offset_of(N, i);
    uint32_t crank = r >> i, sbits = r & ((1u << i) - 1);
    memset(t, 0, (size_t)N);
    int q = 0;
    for (int j = 0; j < i; j++) {
        for (;; q++) {
            uint32_t c = binom(N - 1 - q, i - 1 - j);
            if (crank < c) break;
            crank -= c;
        }
        t[q] = (sbits >> (i - 1 - j)) & 1 ? -1 : 1;
        q++;
    }
    return SSTC_OK;
}

void sstc_code_table_free(sstc_code_table *tb) {
    if (!tb) return;
    free(tb->nnz);
    free(tb->pos);
    free(tb->sign);
    free(tb->dense);
    free(tb->mask_rank);
    free(tb);
}

int sstc_code_table_create(int N, int K, sstc_code_table **out) {
    if (!out) return sstc_fail(SSTC_EINVAL, "sstc_code_table_create: out is NULL");
    *out = NULL;
    if (!valid_nk(N, K))
        return sstc_fail(SSTC_EINVAL, "code table: need 1 <= K <= N <= %d, got N=%d K=%d", SSTC_MAX_N, N, K);
    uint32_t m = sstc_code_count(N, K);
    if (m > SSTC_CODE_TABLE_MAX_ENTRIES)
        return sstc_fail(SSTC_EINVAL, "code table (%d,%d) has %u entries, more than the %u a table may hold; "
                         "use sstc_code_rank/sstc_code_unrank", N, K, m, SSTC_CODE_TABLE_MAX_ENTRIES);
    sstc_code_table *tb = calloc(1, sizeof *tb);
    if (!tb) return sstc_fail(SSTC_ENOMEM, "code table (%d,%d): out of memory", N, K);
    tb->N = N;
    tb->K = K;
    tb->M = m;
    tb->bits = sstc_code_bits(N, K);
    tb->nnz = calloc(m, 1);
    tb->pos = calloc((size_t)m * K, 1);
    tb->sign = calloc((size_t)m * K, 1);
    tb->dense = calloc((size_t)m * N, 1);
    tb->mask_rank = malloc(sizeof(int32_t) << N);
    if (!tb->nnz || !tb->pos || !tb->sign || !tb->dense || !tb->mask_rank) {
        sstc_code_table_free(tb);
        return sstc_fail(SSTC_ENOMEM, "code table (%d,%d): out of memory", N, K);
    }
    for (uint32_t mask = 0; mask < (1u << N); mask++) tb->mask_rank[mask] = -1;
    for (int i = 0; i <= K + 1 && i <= SSTC_MAX_N + 1; i++) tb->offset[i] = offset_of(N, i);

    uint32_t e = 0;
    for (int i = 0; i <= K; i++) {
        int p[SSTC_MAX_N];
        for (int j = 0; j < i; j++) p[j] = j; /* first set in lexicographic order */
        for (int32_t r = 0;; r++) {
            uint32_t mask = 0;
            for (int j = 0; j < i; j++) mask |= 1u << p[j];
            tb->mask_rank[mask] = r;
            for (uint32_t s = 0; s < (1u << i); s++, e++) {
                tb->nnz[e] = (uint8_t)i;
                for (int j = 0; j < i; j++) {
                    int8_t sg = (s >> (i - 1 - j)) & 1 ? -1 : 1;
                    tb->pos[(size_t)e * K + j] = (uint8_t)p[j];
                    tb->sign[(size_t)e * K + j] = sg;
                    tb->dense[(size_t)e * N + p[j]] = sg;
                }
            }
            /* next combination: bump the rightmost position that can move */
            int j = i - 1;
            while (j >= 0 && p[j] == N - i + j) j--;
            if (j < 0) break;
            p[j]++;
            for (int k = j + 1; k < i; k++) p[k] = p[k - 1] + 1;
        }
    }
    *out = tb;
    return SSTC_OK;
}

int64_t sstc_code_encode(const sstc_code_table *tb, const int8_t *t) {
    if (!tb || !t) return sstc_fail(SSTC_EINVAL, "sstc_code_encode: NULL argument");
    uint32_t mask = 0, sbits = 0;
    int nnz = 0;
    for (int q = 0; q < tb->N; q++) {
        if (t[q] == 0) continue;
        if (t[q] != 1 && t[q] != -1)
            return sstc_fail(SSTC_EINVAL, "sstc_code_encode: entry %d is %d, expected -1, 0 or 1", q, t[q]);
        mask |= 1u << q;
        sbits = (sbits << 1) | (t[q] < 0);
        nnz++;
    }
    if (nnz > tb->K)
        return sstc_fail(SSTC_EINVAL, "sstc_code_encode: %d non-zeros, more than K=%d", nnz, tb->K);
    return (int64_t)tb->offset[nnz] + ((int64_t)tb->mask_rank[mask] << nnz) + sbits;
}
