/* Group indices of ternary matrices and their bit packing. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sst_helpers.h"

static const int pack_nk[][2] = {{4, 1}, {8, 1}, {8, 2}, {8, 3}, {16, 2}, {16, 4}};

Test(sst_pack, indices_round_trip_through_exactly_b_bits_each) {
    sstc_rng r;
    sstc_rng_seed(&r, 11);
    for (size_t c = 0; c < sizeof pack_nk / sizeof pack_nk[0]; c++) {
        int N = pack_nk[c][0], K = pack_nk[c][1], b = sstc_code_bits(N, K);
        uint32_t M = sstc_code_count(N, K);
        for (size_t count = 0; count < 70; count += 1 + count / 4) {
            uint32_t idx[70], back[70];
            for (size_t i = 0; i < count; i++) idx[i] = (uint32_t)sstc_rng_below(&r, M);
            if (count) idx[0] = M - 1;
            size_t nb = sstc_packed_bytes(count, b);
            cr_assert_eq(nb, (count * b + 7) / 8, "ceil(count*b/8)");
            uint8_t buf[200];
            memset(buf, 0xAA, sizeof buf);
            cr_assert_eq(sstc_pack_codes(idx, count, b, buf), SSTC_OK);
            cr_assert_eq(buf[nb], 0xAA, "nothing written past the packed size");
            cr_assert_eq(sstc_unpack_codes(buf, nb, count, b, back), SSTC_OK, "%s", sstc_errmsg());
            cr_assert_eq(memcmp(idx, back, count * sizeof *idx), 0, "(%d,%d) count %zu", N, K, count);
        }
    }
}

Test(sst_pack, bit_order_is_little_endian_lsb_first) {
    uint32_t idx[3] = {1, 2, 31};
    uint8_t buf[2];
    cr_assert_eq(sstc_pack_codes(idx, 3, 5, buf), SSTC_OK);
    /* stream bits 0-4 = 1, 5-9 = 2, 10-14 = 31, bit 15 unused */
    cr_assert_eq(buf[0], 0x41);
    cr_assert_eq(buf[1], 0x7C);
    uint32_t w16[2] = {0xBEEF, 0x1234};
    uint8_t b16[4];
    sstc_pack_codes(w16, 2, 16, b16);
    uint8_t want[4] = {0xEF, 0xBE, 0x34, 0x12};
    cr_assert_eq(memcmp(b16, want, 4), 0, "16-bit indices are little-endian");
}

Test(sst_pack, unpack_rejects_wrong_lengths_and_stray_bits) {
    uint32_t idx[3] = {1, 2, 31}, back[3];
    uint8_t buf[3] = {0};
    sstc_pack_codes(idx, 3, 5, buf);
    cr_assert_eq(sstc_unpack_codes(buf, 3, 3, 5, back), SSTC_EFORMAT, "one byte too many");
    cr_assert_eq(sstc_unpack_codes(buf, 1, 3, 5, back), SSTC_EFORMAT, "one byte too few");
    buf[1] |= 0x80;
    cr_assert_eq(sstc_unpack_codes(buf, 2, 3, 5, back), SSTC_EFORMAT, "unused bit 15 set");
    cr_assert_neq(strstr(sstc_errmsg(), "offset 1"), NULL, "%s", sstc_errmsg());
    uint32_t big = 32;
    cr_assert_eq(sstc_pack_codes(&big, 1, 5, buf), SSTC_EINVAL, "32 does not fit in 5 bits");
    cr_assert_eq(sstc_pack_codes(idx, 3, 0, buf), SSTC_EINVAL);
    cr_assert_eq(sstc_pack_codes(idx, 3, 33, buf), SSTC_EINVAL);
}

Test(sst_pack, ternary_matrices_round_trip_with_padded_rows) {
    sstc_rng r;
    sstc_rng_seed(&r, 12);
    for (size_t c = 0; c < sizeof pack_nk / sizeof pack_nk[0]; c++) {
        int N = pack_nk[c][0], K = pack_nk[c][1], rows = 9;
        for (int cols = 1; cols <= 3 * N + 1; cols += 1 + N / 3) {
            size_t G = sstc_groups_per_row((size_t)cols, N), count = (size_t)rows * G;
            int8_t *T = malloc((size_t)rows * cols), *back = malloc((size_t)rows * cols);
            uint32_t *idx = malloc(count * 4), *idx2 = malloc(count * 4);
            uint8_t *packed = malloc(sstc_packed_bytes(count, sstc_code_bits(N, K)) + 1);
            th_random_ternary(&r, T, rows, cols, N, K);
            cr_assert_eq(sstc_codes_from_ternary(T, rows, cols, N, K, idx), SSTC_OK, "%s", sstc_errmsg());
            cr_assert_eq(sstc_pack_codes(idx, count, sstc_code_bits(N, K), packed), SSTC_OK);
            cr_assert_eq(sstc_unpack_codes(packed, sstc_packed_bytes(count, sstc_code_bits(N, K)), count,
                                           sstc_code_bits(N, K), idx2),
                         SSTC_OK);
            cr_assert_eq(sstc_ternary_from_codes(idx2, rows, cols, N, K, back), SSTC_OK, "%s", sstc_errmsg());
            cr_assert_eq(memcmp(T, back, (size_t)rows * cols), 0, "(%d,%d) cols %d", N, K, cols);
            free(T), free(back), free(idx), free(idx2), free(packed);
        }
    }
}

Test(sst_pack, decoding_rejects_out_of_range_indices_and_non_zero_padding) {
    int8_t T[10];
    uint32_t idx[2] = {0, 129};
    cr_assert_eq(sstc_ternary_from_codes(idx, 1, 10, 8, 2, T), SSTC_EFORMAT, "index M");
    cr_assert_neq(strstr(sstc_errmsg(), "row 0 group 1"), NULL, "%s", sstc_errmsg());
    /* the second group of a 10-wide row has 2 real entries: positions 2..7 are padding */
    int8_t t[8] = {0, 0, 0, 0, 0, 1, 0, 0};
    sstc_code_rank(8, 2, t, &idx[1]);
    cr_assert_eq(sstc_ternary_from_codes(idx, 1, 10, 8, 2, T), SSTC_EFORMAT, "non-zero in padding");
    cr_assert_neq(strstr(sstc_errmsg(), "padding"), NULL, "%s", sstc_errmsg());
    int8_t bad[10] = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(sstc_codes_from_ternary(bad, 1, 10, 8, 2, idx), SSTC_EINVAL, "three non-zeros with K=2");
}

Test(sst_pack, projected_weights_survive_the_whole_coding_pipeline) {
    sstc_rng r;
    sstc_rng_seed(&r, 13);
    int rows = 16, cols = 75;
    float W[16 * 75];
    th_fill(&r, W, sizeof W / sizeof W[0], 0, 1.0f);
    for (size_t c = 0; c < sizeof pack_nk / sizeof pack_nk[0]; c++) {
        int N = pack_nk[c][0], K = pack_nk[c][1], b = sstc_code_bits(N, K);
        float delta;
        cr_assert_eq(sstc_fit_delta(W, rows, cols, N, K, 0, &delta, NULL), SSTC_OK);
        int8_t T[16 * 75], back[16 * 75];
        sstc_project_matrix(W, rows, cols, N, K, &delta, 0, T);
        size_t count = rows * sstc_groups_per_row(cols, N);
        uint32_t idx[16 * 75];
        uint8_t packed[16 * 75 * 2];
        cr_assert_eq(sstc_codes_from_ternary(T, rows, cols, N, K, idx), SSTC_OK);
        cr_assert_eq(sstc_pack_codes(idx, count, b, packed), SSTC_OK);
        cr_assert_eq(sstc_unpack_codes(packed, sstc_packed_bytes(count, b), count, b, idx), SSTC_OK);
        cr_assert_eq(sstc_ternary_from_codes(idx, rows, cols, N, K, back), SSTC_OK);
        cr_assert_eq(memcmp(T, back, sizeof T), 0, "(%d,%d)", N, K);
    }
}

/* Widths above 16 bits (a table of (16,K) codes, or a future larger N): every
 * width from 1 to 32 round-trips indices that use its top bit, and a 20-bit
 * pair packs to the documented bytes. */
Test(sst_pack, every_width_up_to_32_bits_round_trips_its_largest_indices) {
    sstc_rng r;
    sstc_rng_seed(&r, 12);
    for (int b = 1; b <= 32; b++) {
        uint64_t lim = (uint64_t)1 << b;
        uint32_t idx[41], back[41];
        for (int i = 0; i < 41; i++) idx[i] = (uint32_t)(lim - 1 - sstc_rng_below(&r, lim < 1000 ? lim : 1000));
        idx[1] = (uint32_t)(lim - 1);
        idx[2] = (uint32_t)(lim >> 1); /* only the top bit */
        uint8_t buf[41 * 4 + 1];
        size_t nb = sstc_packed_bytes(41, b);
        cr_assert_eq(nb, (41 * (size_t)b + 7) / 8, "width %d", b);
        cr_assert_eq(sstc_pack_codes(idx, 41, b, buf), SSTC_OK, "width %d: %s", b, sstc_errmsg());
        cr_assert_eq(sstc_unpack_codes(buf, nb, 41, b, back), SSTC_OK, "width %d: %s", b, sstc_errmsg());
        for (int i = 0; i < 41; i++) cr_assert_eq(back[i], idx[i], "width %d, index %d: %u came back as %u", b, i, idx[i], back[i]);
    }
    uint32_t w20[2] = {0xABCDE, 0x12345};
    uint8_t b20[5], want[5] = {0xDE, 0xBC, 0x5A, 0x34, 0x12}; /* 0x12345ABCDE, little-endian */
    cr_assert_eq(sstc_pack_codes(w20, 2, 20, b20), SSTC_OK);
    cr_assert_eq(memcmp(b20, want, 5), 0, "%02x %02x %02x %02x %02x", b20[0], b20[1], b20[2], b20[3], b20[4]);
}
