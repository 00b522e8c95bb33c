/* Group indices of a ternary matrix and their bit packing. */
#include "sstc/sst.h"
#include "sstc/error.h"

#include <string.h>

static int check_nk(const char *fn, int rows, int cols, int N, int K) {
    if (rows < 0 || cols < 0) return sstc_fail(SSTC_EINVAL, "%s: negative shape %dx%d", fn, rows, cols);
    if (!sstc_code_count(N, K))
        return sstc_fail(SSTC_EINVAL, "%s: need 1 <= K <= N <= %d, got N=%d K=%d", fn, SSTC_MAX_N, N, K);
    return SSTC_OK;
}

int sstc_codes_from_ternary(const int8_t *T, int rows, int cols, int N, int K, uint32_t *idx) {
    if (!T || !idx) return sstc_fail(SSTC_EINVAL, "sstc_codes_from_ternary: NULL argument");
    int rc = check_nk("sstc_codes_from_ternary", rows, cols, N, K);
    if (rc) return rc;
    size_t G = sstc_groups_per_row((size_t)cols, N);
    int8_t t[SSTC_MAX_N];
    for (int r = 0; r < rows; r++)
        for (size_t g = 0; g < G; g++) {
            size_t c0 = g * N, n = (size_t)cols - c0 < (size_t)N ? (size_t)cols - c0 : (size_t)N;
            memset(t, 0, sizeof t);
            memcpy(t, T + (size_t)r * cols + c0, n);
            rc = sstc_code_rank(N, K, t, &idx[(size_t)r * G + g]);
            if (rc) return sstc_fail_prefix(rc, "row %d group %zu: ", r, g);
        }
    return SSTC_OK;
}

int sstc_ternary_from_codes(const uint32_t *idx, int rows, int cols, int N, int K, int8_t *T) {
    if (!T || !idx) return sstc_fail(SSTC_EINVAL, "sstc_ternary_from_codes: NULL argument");
    int rc = check_nk("sstc_ternary_from_codes", rows, cols, N, K);
    if (rc) return rc;
    size_t G = sstc_groups_per_row((size_t)cols, N);
    uint32_t M = sstc_code_count(N, K);
    int8_t t[SSTC_MAX_N];
    for (int r = 0; r < rows; r++)
        for (size_t g = 0; g < G; g++) {
            uint32_t i = idx[(size_t)r * G + g];
            if (i >= M)
                return sstc_fail(SSTC_EFORMAT, "row %d group %zu: code index %u >= M(%d,%d) = %u", r, g, i, N, K, M);
            sstc_code_unrank(N, K, i, t);
            size_t c0 = g * N, n = (size_t)cols - c0 < (size_t)N ? (size_t)cols - c0 : (size_t)N;
            for (size_t q = n; q < (size_t)N; q++)
                if (t[q])
                    return sstc_fail(SSTC_EFORMAT, "row %d group %zu: code index %u puts a non-zero into padding position %zu",
                                     r, g, i, q);
            memcpy(T + (size_t)r * cols + c0, t, n);
        }
    return SSTC_OK;
}

size_t sstc_packed_bytes(size_t count, int bits) {
    if (bits <= 0) return 0;
    return count / 8 * (size_t)bits + ((count % 8) * (size_t)bits + 7) / 8;
}

int sstc_pack_codes(const uint32_t *idx, size_t count, int bits, uint8_t *out) {
    if (bits < 1 || bits > 32) return sstc_fail(SSTC_EINVAL, "sstc_pack_codes: bits must be 1..32, got %d", bits);
    if ((!idx || !out) && count) return sstc_fail(SSTC_EINVAL, "sstc_pack_codes: NULL argument");
    uint64_t limit = (uint64_t)1 << bits;
    uint64_t acc = 0;
    int nacc = 0;
    size_t o = 0;
    for (size_t i = 0; i < count; i++) {
        if (idx[i] >= limit)
            return sstc_fail(SSTC_EINVAL, "sstc_pack_codes: index %zu is %u, does not fit in %d bits", i, idx[i], bits);
        acc |= (uint64_t)idx[i] << nacc;
        nacc += bits;
        while (nacc >= 8) {
            out[o++] = (uint8_t)acc;
            acc >>= 8;
            nacc -= 8;
        }
    }
    if (nacc > 0) out[o++] = (uint8_t)acc;
    return SSTC_OK;
}

int sstc_unpack_codes(const uint8_t *in, size_t nbytes, size_t count, int bits, uint32_t *idx) {
    if (bits < 1 || bits > 32) return sstc_fail(SSTC_EINVAL, "sstc_unpack_codes: bits must be 1..32, got %d", bits);
    if ((!idx || !in) && count) return sstc_fail(SSTC_EINVAL, "sstc_unpack_codes: NULL argument");
    size_t need = sstc_packed_bytes(count, bits);
    if (nbytes != need)
        return sstc_fail(SSTC_EFORMAT, "packed codes: %zu indices of %d bits take %zu bytes, got %zu", count, bits,
                         need, nbytes);
    uint64_t acc = 0, mask = ((uint64_t)1 << bits) - 1;
    int nacc = 0;
    size_t b = 0;
    for (size_t i = 0; i < count; i++) {
        while (nacc < bits) {
            acc |= (uint64_t)in[b++] << nacc;
            nacc += 8;
        }
        idx[i] = (uint32_t)(acc & mask);
        acc >>= bits;
        nacc -= bits;
    }
    if (acc)
        return sstc_fail(SSTC_EFORMAT, "packed codes: unused bits of the last byte (offset %zu) are not zero",
                         nbytes - 1);
    return SSTC_OK;
}
