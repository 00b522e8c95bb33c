/* The .sst file: round trips, size against theory, and hostile input. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sst_helpers.h"

static const int file_nk[][2] = {{4, 1}, {8, 1}, {8, 2}, {8, 3}, {16, 2}, {16, 4}};

static void assert_same_floats(const float *a, const float *b, size_t n, int layer, const char *what) {
    if (!n) return;
    cr_assert(a && b, "layer %d %s present", layer, what);
    cr_assert_eq(memcmp(a, b, n * sizeof(float)), 0, "layer %d %s differs", layer, what);
}

static void assert_same_model(const sstc_sst_model *a, const sstc_sst_model *b) {
    cr_assert_eq(a->in_c, b->in_c);
    cr_assert_eq(a->in_h, b->in_h);
    cr_assert_eq(a->in_w, b->in_w);
    cr_assert_eq(a->num_classes, b->num_classes);
    cr_assert_eq(a->n_layers, b->n_layers);
    cr_assert_eq(memcmp(a->in_mean, b->in_mean, sizeof a->in_mean), 0, "input mean");
    cr_assert_eq(memcmp(a->in_std, b->in_std, sizeof a->in_std), 0, "input std");
    for (int i = 0; i < a->n_layers; i++) {
        const sstc_sst_layer *x = &a->layers[i], *y = &b->layers[i];
        cr_assert_eq(x->kind, y->kind, "layer %d kind", i);
        cr_assert_eq(x->coded, y->coded, "layer %d coded", i);
        int weighted = x->kind == SSTC_SST_FC || x->kind == SSTC_SST_CONV;
        if (weighted || x->kind == SSTC_SST_BATCHNORM) cr_assert_eq(x->out, y->out, "layer %d out", i);
        if (weighted) cr_assert_eq(x->in, y->in, "layer %d in", i);
        if (x->kind == SSTC_SST_CONV || x->kind == SSTC_SST_MAXPOOL || x->kind == SSTC_SST_AVGPOOL) {
            cr_assert_eq(x->kh, y->kh, "layer %d kh", i);
            cr_assert_eq(x->kw, y->kw, "layer %d kw", i);
            cr_assert_eq(x->stride, y->stride, "layer %d stride", i);
            cr_assert_eq(x->pad, y->pad, "layer %d pad", i);
        }
        if (x->kind == SSTC_SST_DROPOUT) cr_assert_eq(x->p, y->p);
        size_t out = (size_t)x->out;
        if (x->kind == SSTC_SST_BATCHNORM) {
            assert_same_floats(x->scale, y->scale, out, i, "scale");
            assert_same_floats(x->bias, y->bias, out, i, "bias");
        }
        if (!weighted) continue;
        assert_same_floats(x->bias, y->bias, out, i, "bias");
        if (x->coded) {
            cr_assert_eq(x->N, y->N);
            cr_assert_eq(x->K, y->K);
            cr_assert_eq(x->per_row_delta, y->per_row_delta, "layer %d per-row flag", i);
            assert_same_floats(x->delta, y->delta, x->per_row_delta ? out : 1, i, "delta");
            assert_same_floats(x->scale, y->scale, out, i, "scale");
            cr_assert_eq(x->codes_bytes, y->codes_bytes, "layer %d code bytes", i);
            cr_assert_eq(memcmp(x->codes, y->codes, x->codes_bytes), 0, "layer %d codes differ", i);
        } else {
            assert_same_floats(x->weight, y->weight, out * sstc_sst_fan_in(x), i, "weight");
        }
    }
}

/* The documented layout, computed independently of the writer: bytes of
 * layer i's record, and of its packed codes. */
static size_t theory_layer_bytes(const sstc_sst_layer *L, size_t *codes) {
    size_t out = (size_t)L->out;
    *codes = 0;
    switch (L->kind) {
    case SSTC_SST_FC:
    case SSTC_SST_CONV: {
        size_t fan_in = L->kind == SSTC_SST_FC ? (size_t)L->in : (size_t)L->in * L->kh * L->kw;
        size_t head = 4 + (L->kind == SSTC_SST_FC ? 8 : 16);
        if (!L->coded) return head + 4 * out * fan_in + 4 * out;
        size_t groups = out * ((fan_in + L->N - 1) / L->N);
        *codes = (groups * sstc_code_bits(L->N, L->K) + 7) / 8;
        return head + 12 + 4 * (L->per_row_delta ? out : 1) + 8 * out + *codes;
    }
    case SSTC_SST_BATCHNORM: return 8 + 8 * out;
    case SSTC_SST_MAXPOOL:
    case SSTC_SST_AVGPOOL: return 12;
    case SSTC_SST_DROPOUT: return 8;
    default: return 4;
    }
}

static size_t layer_offset(const sstc_sst_model *m, int layer) {
    size_t off = 68, c;
    for (int i = 0; i < layer; i++) off += theory_layer_bytes(&m->layers[i], &c);
    return off;
}

Test(sst_file, networks_round_trip_exactly_for_every_n_k) {
    sstc_rng r;
    sstc_rng_seed(&r, 21);
    for (size_t c = 0; c < sizeof file_nk / sizeof file_nk[0]; c++)
        for (int per_row = 0; per_row < 2; per_row++) {
            sstc_sst_model *m = th_random_net(&r, file_nk[c][0], file_nk[c][1], per_row), *back = NULL;
            uint8_t *buf, *buf2;
            size_t n, n2;
            cr_assert_eq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK, "%s", sstc_errmsg());
            cr_assert_eq(n, sstc_sst_size(m));
            cr_assert_eq(sstc_sst_read_mem(buf, n, &back), SSTC_OK, "%s", sstc_errmsg());
            assert_same_model(m, back);
            cr_assert_eq(sstc_sst_write_mem(back, &buf2, &n2), SSTC_OK);
            cr_assert_eq(n2, n);
            cr_assert_eq(memcmp(buf, buf2, n), 0, "re-writing what was read gives the same bytes");
            /* the codes decode to a valid ternary matrix of the right shape */
            int8_t *T = malloc((size_t)back->layers[7].out * sstc_sst_fan_in(&back->layers[7]));
            cr_assert_eq(sstc_sst_layer_ternary(&back->layers[7], T), SSTC_OK, "%s", sstc_errmsg());
            free(T);
            free(buf), free(buf2);
            sstc_sst_free(m), sstc_sst_free(back);
        }
}

Test(sst_file, write_and_read_through_a_file) {
    sstc_rng r;
    sstc_rng_seed(&r, 22);
    sstc_sst_model *m = th_random_net(&r, 8, 2, 1), *back = NULL;
    char path[] = "/tmp/sstc-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(sstc_sst_write(path, m), SSTC_OK, "%s", sstc_errmsg());
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    cr_assert_eq((size_t)ftell(f), sstc_sst_size(m), "the file has the announced size");
    fclose(f);
    cr_assert_eq(sstc_sst_read(path, &back), SSTC_OK, "%s", sstc_errmsg());
    assert_same_model(m, back);
    sstc_sst_free(back);
    unlink(path);
    cr_assert_eq(sstc_sst_read(path, &back), SSTC_EIO, "a missing file is an I/O error");
    cr_assert_neq(strstr(sstc_errmsg(), path), NULL, "the message names the file: %s", sstc_errmsg());
    cr_assert_null(back);
    sstc_sst_free(m);
}

Test(sst_file, size_is_the_theoretical_code_size_plus_small_metadata) {
    sstc_rng r;
    sstc_rng_seed(&r, 23);
    for (size_t c = 0; c < sizeof file_nk / sizeof file_nk[0]; c++) {
        int N = file_nk[c][0], K = file_nk[c][1];
        sstc_sst_model *m = th_random_net(&r, N, K, 0);
        size_t total = 68 + 4, codes = 0, floats = 0;
        for (int i = 0; i < m->n_layers; i++) {
            size_t cb, lb = theory_layer_bytes(&m->layers[i], &cb);
            total += lb;
            codes += cb;
            const sstc_sst_layer *L = &m->layers[i];
            if ((L->kind == SSTC_SST_FC || L->kind == SSTC_SST_CONV) && !L->coded)
                floats += 4 * (size_t)L->out * (sstc_sst_fan_in(L) + 1);
            if (L->kind == SSTC_SST_BATCHNORM) floats += 8 * (size_t)L->out;
        }
        uint8_t *buf;
        size_t n;
        cr_assert_eq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK);
        cr_assert_eq(n, total, "(%d,%d): file %zu bytes, layout says %zu", N, K, n, total);
        /* metadata: 72 bytes of header and checksum, <= 32 bytes per layer
         * record, one delta and a scale and bias per output of coded layers */
        size_t meta = n - codes - floats, bound = 72;
        for (int i = 0; i < m->n_layers; i++) {
            const sstc_sst_layer *L = &m->layers[i];
            bound += 32;
            if (L->coded) bound += 4 + 12 * (size_t)L->out;
        }
        cr_assert_leq(meta, bound, "(%d,%d): %zu bytes of metadata, bound %zu", N, K, meta, bound);
        for (int i = 0; i < m->n_layers; i++)
            if (m->layers[i].coded) {
                size_t cb;
                theory_layer_bytes(&m->layers[i], &cb);
                cr_assert_eq(m->layers[i].codes_bytes, cb, "layer %d packs ceil(groups*b/8) bytes", i);
            }
        free(buf);
        sstc_sst_free(m);
    }
}

/* A valid (8,2) image to damage; the caller frees both. */
static uint8_t *valid_image(sstc_sst_model **m, size_t *n) {
    sstc_rng r;
    sstc_rng_seed(&r, 24);
    *m = th_random_net(&r, 8, 2, 0);
    uint8_t *buf;
    cr_assert_eq(sstc_sst_write_mem(*m, &buf, n), SSTC_OK);
    return buf;
}

static void expect_reject(const uint8_t *buf, size_t n, const char *needle, const char *why) {
    sstc_sst_model *back = (sstc_sst_model *)1;
    int rc = sstc_sst_read_mem(buf, n, &back);
    cr_assert_eq(rc, SSTC_EFORMAT, "%s: accepted or wrong code %d (%s)", why, rc, sstc_errmsg());
    cr_assert_null(back, "%s: no model on failure", why);
    cr_assert_neq(strstr(sstc_errmsg(), "byte"), NULL, "%s: message names a byte offset: %s", why, sstc_errmsg());
    cr_assert_neq(strstr(sstc_errmsg(), needle), NULL, "%s: expected '%s' in: %s", why, needle, sstc_errmsg());
}

Test(sst_file, every_truncation_is_rejected) {
    sstc_sst_model *m;
    size_t n;
    uint8_t *buf = valid_image(&m, &n);
    for (size_t len = 0; len < n; len++) {
        uint8_t *cut = malloc(len ? len : 1); /* exact size, so ASan sees any over-read */
        memcpy(cut, buf, len);
        expect_reject(cut, len, len < 4 ? "truncated" : "", "truncated file");
        free(cut);
    }
    free(buf);
    sstc_sst_free(m);
}

Test(sst_file, wrong_magic_version_checksum_and_trailing_bytes_are_rejected) {
    sstc_sst_model *m;
    size_t n;
    uint8_t *buf = valid_image(&m, &n);
    uint8_t *b = malloc(n + 1);
    memcpy(b, buf, n);
    b[0] = 'X';
    expect_reject(b, n, "magic", "wrong magic");
    memcpy(b, buf, n);
    b[4] = 2;
    th_fix_crc(b, n);
    expect_reject(b, n, "version 2", "future version");
    memcpy(b, buf, n);
    b[n / 2] ^= 0x10;
    expect_reject(b, n, "checksum", "flipped bit");
    memcpy(b, buf, n);
    b[n] = 0;
    expect_reject(b, n + 1, "trailing", "one byte too many");
    free(b);
    free(buf);
    sstc_sst_free(m);
}

/* Patches a copy of the image, fixes its checksum and expects a rejection
 * that names `layer` and the text `needle`. */
static void patch_and_expect(const uint8_t *buf, size_t n, size_t at, const void *bytes, size_t len, const char *needle,
                             const char *why) {
    uint8_t *b = malloc(n);
    memcpy(b, buf, n);
    memcpy(b + at, bytes, len);
    th_fix_crc(b, n);
    expect_reject(b, n, needle, why);
    free(b);
}

Test(sst_file, impossible_shapes_and_bad_records_are_rejected_naming_the_layer) {
    sstc_sst_model *m;
    size_t n;
    uint8_t *buf = valid_image(&m, &n);
    size_t l0 = layer_offset(m, 0), l1 = layer_offset(m, 1), l3 = layer_offset(m, 3), l7 = layer_offset(m, 7);
    uint8_t u32[4] = {46, 0, 0, 0};
    patch_and_expect(buf, n, l7 + 8, u32, 4, "layer 7 (fc) at byte", "fc input does not match");
    uint8_t ch[4] = {7, 0, 0, 0};
    patch_and_expect(buf, n, l1 + 4, ch, 4, "layer 1 (batchnorm)", "batchnorm channels do not match");
    patch_and_expect(buf, n, l0 + 8, ch, 4, "layer 0 (conv)", "conv input channels do not match");
    uint8_t zero16[2] = {0, 0};
    patch_and_expect(buf, n, l3 + 6, zero16, 2, "layer 3 (maxpool)", "pool stride 0");
    uint8_t huge[2] = {200, 0};
    patch_and_expect(buf, n, l3 + 4, huge, 2, "does not fit", "pool window larger than the input");
    uint8_t kind = 42;
    patch_and_expect(buf, n, l3, &kind, 1, "unknown layer kind", "unknown kind");
    uint8_t flags = 0x04;
    patch_and_expect(buf, n, l0 + 1, &flags, 1, "flags", "unknown flag");
    uint8_t nk[2] = {17, 2};
    patch_and_expect(buf, n, l0 + 20, nk, 2, "(N,K)", "N > 16");
    uint8_t nk2[2] = {8, 9};
    patch_and_expect(buf, n, l0 + 20, nk2, 2, "(N,K)", "K > N");
    uint8_t classes[4] = {11, 0, 0, 0};
    patch_and_expect(buf, n, 32, classes, 4, "classes", "class count does not match the output");
    uint8_t layers[4] = {0xff, 0xff, 0xff, 0x7f};
    patch_and_expect(buf, n, 16, layers, 4, "layers", "absurd layer count");
    uint8_t fewer[4] = {10, 0, 0, 0};
    patch_and_expect(buf, n, 16, fewer, 4, "do not add up", "one layer fewer than stored");
    float nanv = NAN, neg = -1.0f;
    patch_and_expect(buf, n, l0 + 32, &nanv, 4, "delta[0]", "NaN delta");
    patch_and_expect(buf, n, l0 + 32, &neg, 4, "positive", "negative delta");
    patch_and_expect(buf, n, l0 + 36, &nanv, 4, "scale[0]", "NaN scale");
    free(buf);
    sstc_sst_free(m);
}

Test(sst_file, input_preprocessing_is_stored_and_bad_values_are_rejected) {
    sstc_sst_model *m;
    size_t n;
    uint8_t *buf = valid_image(&m, &n);
    /* the header holds mean[4] at byte 36 and std[4] at byte 52 */
    for (int c = 0; c < 4; c++) {
        float mean, sd;
        memcpy(&mean, buf + 36 + 4 * c, 4);
        memcpy(&sd, buf + 52 + 4 * c, 4);
        cr_assert_eq(mean, c < 3 ? m->in_mean[c] : 0.0f, "mean[%d] at byte %d", c, 36 + 4 * c);
        cr_assert_eq(sd, c < 3 ? m->in_std[c] : 1.0f, "std[%d] at byte %d", c, 52 + 4 * c);
    }
    float nanv = NAN, zero = 0.0f, neg = -0.5f, inf = INFINITY, two = 2.0f;
    patch_and_expect(buf, n, 36, &nanv, 4, "input mean[0]", "NaN mean");
    patch_and_expect(buf, n, 40, &inf, 4, "input mean[1]", "infinite mean");
    patch_and_expect(buf, n, 52, &zero, 4, "input std[0]", "std 0");
    patch_and_expect(buf, n, 56, &neg, 4, "positive", "negative std");
    patch_and_expect(buf, n, 64, &two, 4, "unused channel", "std of a fourth channel the 3-channel input lacks");
    patch_and_expect(buf, n, 48, &two, 4, "unused channel", "mean of an unused channel");
    float negzero = -0.0f; /* equal to 0 as a float, but it would not write back to the same bytes */
    patch_and_expect(buf, n, 48, &negzero, 4, "unused channel", "mean -0 of an unused channel");
    /* the writer refuses a zero std and ignores entries of absent channels */
    m->in_std[1] = 0;
    cr_assert_eq(sstc_sst_validate(m), SSTC_EINVAL, "std 0 is refused");
    cr_assert_neq(strstr(sstc_errmsg(), "channel 1"), NULL, "%s", sstc_errmsg());
    m->in_std[1] = 0.25f;
    m->in_mean[3] = 7, m->in_std[3] = -1;
    uint8_t *b2;
    size_t n2;
    sstc_sst_model *back = NULL;
    cr_assert_eq(sstc_sst_write_mem(m, &b2, &n2), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(sstc_sst_read_mem(b2, n2, &back), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(back->in_std[1], 0.25f);
    cr_assert_eq(back->in_mean[3], 0.0f, "an absent channel reads as mean 0");
    cr_assert_eq(back->in_std[3], 1.0f, "an absent channel reads as std 1");
    sstc_sst_free(back);
    free(b2);
    /* a new model starts with the identity preprocessing */
    sstc_sst_model *fresh = sstc_sst_model_new(1);
    for (int c = 0; c < 4; c++) cr_assert(fresh->in_mean[c] == 0.0f && fresh->in_std[c] == 1.0f);
    sstc_sst_free(fresh);
    free(buf);
    sstc_sst_free(m);
}

Test(sst_file, bad_code_lengths_indices_and_padding_are_rejected) {
    sstc_sst_model *m;
    size_t n;
    uint8_t *buf = valid_image(&m, &n);
    const sstc_sst_layer *L0 = &m->layers[0];
    size_t l0 = layer_offset(m, 0), codes = l0 + 32 + 4 + 8 * (size_t)L0->out;
    uint64_t cb = L0->codes_bytes + 1;
    patch_and_expect(buf, n, l0 + 24, &cb, 8, "does not add up", "code byte count one too many");
    uint8_t ff = 0xff; /* (8,2): 8-bit indices, M = 129 */
    patch_and_expect(buf, n, codes + 1, &ff, 1, "code index 255 >= M(8,2)", "index >= M");
    char want[64];
    snprintf(want, sizeof want, "layer 0 (conv) at byte %zu", codes + 1);
    patch_and_expect(buf, n, codes + 1, &ff, 1, want, "the offset is the code's byte");
    /* conv 0 has fan_in 27: group 3 holds 3 real entries, positions 3..7 pad */
    int8_t t[8] = {0, 0, 0, 0, 0, -1, 0, 0};
    uint32_t idx;
    sstc_code_rank(8, 2, t, &idx);
    uint8_t ib = (uint8_t)idx;
    patch_and_expect(buf, n, codes + 3, &ib, 1, "padding", "non-zero in a padded position");
    /* the boundaries themselves: index M is refused, M - 1 read; a non-zero in
     * the first padded position (3) is refused */
    uint8_t m129 = 129;
    patch_and_expect(buf, n, codes + 1, &m129, 1, "code index 129 >= M(8,2) = 129", "index == M");
    uint8_t *b = malloc(n);
    memcpy(b, buf, n);
    b[codes + 1] = 128;
    th_fix_crc(b, n);
    sstc_sst_model *back = NULL;
    cr_assert_eq(sstc_sst_read_mem(b, n, &back), SSTC_OK, "index M - 1 is a valid code: %s", sstc_errmsg());
    int8_t tt[8];
    sstc_code_unrank(8, 2, 128, tt);
    int8_t *T = malloc((size_t)L0->out * 27);
    cr_assert_eq(sstc_sst_layer_ternary(&back->layers[0], T), SSTC_OK);
    cr_assert_eq(memcmp(T + 8, tt, 8), 0, "group 1 of row 0 decodes as code 128");
    free(T);
    sstc_sst_free(back);
    free(b);
    int8_t t3[8] = {0, 0, 0, 1, 0, 0, 0, 0};
    sstc_code_rank(8, 2, t3, &idx);
    ib = (uint8_t)idx;
    patch_and_expect(buf, n, codes + 3, &ib, 1, "padding position 3", "non-zero in the first padded position");
    /* conv 0 (3x3): a padding equal to the kernel size */
    uint16_t pad3 = 3;
    patch_and_expect(buf, n, l0 + 18, &pad3, 2, "pad 3, expected < kernel 3x3", "padding equal to the kernel");
    free(buf);
    sstc_sst_free(m);
}

/* fan_in 7 with N = 8: one padded position only (the last), which must
 * still be checked */
Test(sst_file, a_non_zero_in_a_single_padded_position_is_rejected) {
    sstc_sst_model *m = sstc_sst_model_new(1);
    m->in_c = 7, m->in_h = 1, m->in_w = 1, m->num_classes = 2;
    m->layers[0] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 2, .in = 7, .coded = 1, .N = 8, .K = 2};
    sstc_rng r;
    sstc_rng_seed(&r, 26);
    th_fill_layer(&r, &m->layers[0]);
    uint8_t *buf;
    size_t n;
    cr_assert_eq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[0].codes_bytes, 2u, "2 rows x 1 group x 8 bits");
    int8_t t[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    uint32_t idx;
    sstc_code_rank(8, 2, t, &idx);
    uint8_t ib = (uint8_t)idx;
    patch_and_expect(buf, n, n - 4 - 2, &ib, 1, "padding position 7", "non-zero in the only padded position");
    free(buf);
    sstc_sst_free(m);
}

Test(sst_file, stray_bits_after_the_last_code_are_rejected) {
    sstc_sst_model *m = sstc_sst_model_new(1);
    m->in_c = 3, m->in_h = 1, m->in_w = 1, m->num_classes = 3;
    m->layers[0] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 3, .in = 3, .coded = 1, .N = 8, .K = 3};
    sstc_rng r;
    sstc_rng_seed(&r, 25);
    th_fill_layer(&r, &m->layers[0]);
    cr_assert_eq(m->layers[0].codes_bytes, 4u, "3 indices of 10 bits");
    uint8_t *buf;
    size_t n;
    cr_assert_eq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK, "%s", sstc_errmsg());
    uint8_t last = buf[n - 5] | 0x80;
    patch_and_expect(buf, n, n - 5, &last, 1, "unused bits", "bit 31 of a 30-bit stream");
    last = buf[n - 5] | 0x40;
    patch_and_expect(buf, n, n - 5, &last, 1, "unused bits", "bit 30, the first unused one");
    free(buf);
    sstc_sst_free(m);
}

Test(sst_file, the_writer_refuses_invalid_models) {
    sstc_rng r;
    sstc_rng_seed(&r, 26);
    sstc_sst_model *m = th_random_net(&r, 8, 2, 0);
    uint8_t *buf = (uint8_t *)1;
    size_t n = 1;
    m->layers[7].in = 44; /* no longer the flattened 45 */
    cr_assert_neq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK);
    cr_assert_null(buf);
    cr_assert_neq(strstr(sstc_errmsg(), "layer 7"), NULL, "%s", sstc_errmsg());
    m->layers[7].in = 45;
    m->layers[0].delta[0] = 0;
    cr_assert_eq(sstc_sst_validate(m), SSTC_EFORMAT, "delta 0");
    m->layers[0].delta[0] = 0.1f;
    m->layers[0].codes[0] = 200;
    cr_assert_eq(sstc_sst_validate(m), SSTC_EFORMAT, "index 200 >= 129");
    m->layers[0].codes[0] = 0;
    m->layers[0].N = 4; /* codes_bytes no longer matches */
    cr_assert_eq(sstc_sst_validate(m), SSTC_EINVAL);
    m->layers[0].N = 8;
    m->layers[2].kind = 99;
    cr_assert_eq(sstc_sst_validate(m), SSTC_EINVAL);
    m->layers[2].kind = SSTC_SST_RELU;
    cr_assert_eq(sstc_sst_validate(m), SSTC_OK, "%s", sstc_errmsg());
    sstc_sst_free(m);
}

Test(sst_file, a_permute_layer_round_trips_and_bad_permutations_are_rejected) {
    sstc_sst_model *m = sstc_sst_model_new(2);
    m->in_c = 1, m->in_h = 2, m->in_w = 3, m->num_classes = 2;
    m->layers[0] = (sstc_sst_layer){.kind = SSTC_SST_PERMUTE, .out = 6, .in = 6};
    m->layers[1] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 2, .in = 6};
    cr_assert_eq(sstc_sst_layer_alloc(&m->layers[0]), SSTC_OK);
    cr_assert_eq(sstc_sst_layer_alloc(&m->layers[1]), SSTC_OK);
    const uint32_t perm[6] = {3, 0, 5, 1, 4, 2};
    memcpy(m->layers[0].perm, perm, sizeof perm);
    for (int i = 0; i < 12; i++) m->layers[1].weight[i] = 0.1f * (float)i;
    uint8_t *buf = NULL;
    size_t n = 0;
    cr_assert_eq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(n, sstc_sst_size(m));
    sstc_sst_model *back = NULL;
    cr_assert_eq(sstc_sst_read_mem(buf, n, &back), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(back->layers[0].kind, SSTC_SST_PERMUTE);
    cr_assert_eq(memcmp(back->layers[0].perm, perm, sizeof perm), 0);
    sstc_sst_free(back);
    /* the record: kind, flags, reserved, count, then the entries after the 68-byte header */
    size_t at = 68 + 8;
    uint8_t *bad = malloc(n);
    memcpy(bad, buf, n);
    bad[at + 4] = 3; /* entry 1 repeats entry 0's value 3 */
    th_fix_crc(bad, n);
    cr_assert_eq(sstc_sst_read_mem(bad, n, &back), SSTC_EFORMAT);
    cr_assert_neq(strstr(sstc_errmsg(), "repeated"), NULL, "%s", sstc_errmsg());
    memcpy(bad, buf, n);
    bad[at] = 6; /* out of range */
    th_fix_crc(bad, n);
    cr_assert_eq(sstc_sst_read_mem(bad, n, &back), SSTC_EFORMAT);
    cr_assert_neq(strstr(sstc_errmsg(), "out of range"), NULL, "%s", sstc_errmsg());
    free(bad);
    free(buf);
    /* only as the first layer */
    sstc_sst_layer t = m->layers[0];
    m->layers[0] = m->layers[1], m->layers[1] = t;
    cr_assert_neq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK);
    m->layers[1] = m->layers[0], m->layers[0] = t;
    sstc_sst_free(m);
}

Test(sst_file, inspect_prints_layers_and_bits_per_weight) {
    sstc_rng r;
    sstc_rng_seed(&r, 27);
    sstc_sst_model *m = th_random_net(&r, 8, 2, 0);
    char path[] = "/tmp/sstc-inspect-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    cr_assert_eq(sstc_sst_write(path, m), SSTC_OK);
    char cmd[256], out[8192] = "";
    snprintf(cmd, sizeof cmd, "./build/sstc inspect %s", path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    cr_assert_eq(pclose(p), 0, "inspect succeeds: %s", out);
    cr_assert_neq(strstr(out, "conv"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "coded  N=8 K=2"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "bits=8"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "float"), NULL, "%s", out);
    char want[64];
    snprintf(want, sizeof want, "file_bytes=%zu bits_per_weight=", sstc_sst_size(m));
    cr_assert_neq(strstr(out, want), NULL, "%s", out);
    /* a damaged file: exit status 1 and the reader's message */
    FILE *f = fopen(path, "r+b");
    fseek(f, 4, SEEK_SET);
    fputc(9, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "./build/sstc inspect %s 2>&1", path);
    p = popen(cmd, "r");
    got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    int st = pclose(p);
    cr_assert_eq(WEXITSTATUS(st), 1, "%s", out);
    cr_assert_neq(strstr(out, "version 9"), NULL, "%s", out);
    unlink(path);
    sstc_sst_free(m);
}

/* Version-1 files must keep their exact bytes: these sizes and checksums were
 * taken from files written before the format had version 2, and the seed
 * corpus of fuzz_sst (fuzz/corpus/fuzz_sst, also version 1) must read and
 * write back byte for byte. */
Test(sst_file, version_1_files_are_written_byte_identical_to_before) {
    static const struct {
        int N, K, per_row;
        size_t bytes;
        uint32_t crc;
    } golden[] = {
        {8, 2, 0, 1567, 0xa93a31b9u}, {4, 1, 1, 1644, 0xe9cc7888u}, {16, 4, 0, 1572, 0x81ef807fu},
        {1, 1, 0, 1722, 0x032e15d1u}, {8, 3, 1, 1692, 0x80c27a8fu},
    };
    for (int i = 0; i < 5; i++) {
        sstc_rng r;
        sstc_rng_seed(&r, 300 + (uint64_t)i);
        sstc_sst_model *m = th_random_net(&r, golden[i].N, golden[i].K, golden[i].per_row);
        uint8_t *buf;
        size_t n;
        cr_assert_eq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK, "%s", sstc_errmsg());
        cr_assert_eq(n, golden[i].bytes, "(%d,%d): %zu bytes", golden[i].N, golden[i].K, n);
        cr_assert_eq(buf[4], 1, "version 1");
        uint32_t crc = (uint32_t)crc32(0L, buf, (uInt)(n - 4));
        cr_assert_eq(crc, golden[i].crc, "(%d,%d): checksum 0x%08x, the old writer gave 0x%08x", golden[i].N,
                     golden[i].K, crc, golden[i].crc);
        free(buf);
        sstc_sst_free(m);
    }
    static const char *corpus[] = {"cnn_16_4.sst", "cnn_4_1_rows.sst", "cnn_8_2.sst", "cnn_8_3_rows.sst",
                                   "mlp_ternary.sst", "seed-permute.sst", "tiny_fc.sst"};
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "fuzz/corpus/fuzz_sst/%s", corpus[i]);
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "%s", path);
        uint8_t img[1 << 16];
        size_t n = fread(img, 1, sizeof img, f);
        fclose(f);
        sstc_sst_model *m = NULL;
        cr_assert_eq(sstc_sst_read_mem(img, n, &m), SSTC_OK, "%s: %s", path, sstc_errmsg());
        uint8_t *buf;
        size_t n2;
        cr_assert_eq(sstc_sst_write_mem(m, &buf, &n2), SSTC_OK, "%s", sstc_errmsg());
        cr_assert_eq(n2, n, "%s", path);
        cr_assert_eq(memcmp(buf, img, n), 0, "%s: written back byte for byte", path);
        free(buf);
        sstc_sst_free(m);
    }
}

/* Evaluation flags (version 3): a network whose figures are flip-averaged says
 * so in its file; without flags the file stays version 1 or 2, byte for byte. */
Test(sst_file, evaluation_flags_make_version_3_and_round_trip) {
    sstc_sst_model *m;
    size_t n;
    uint8_t *plain = valid_image(&m, &n);
    cr_assert_eq(plain[4], 1, "no flags: version 1");
    m->eval_flags = SSTC_SST_EVAL_FLIP;
    cr_assert_eq(sstc_sst_file_version(m), 3);
    uint8_t *buf;
    size_t n3;
    cr_assert_eq(sstc_sst_write_mem(m, &buf, &n3), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(n3, n + 4, "the flags take 4 bytes");
    cr_assert_eq(sstc_sst_size(m), n3);
    cr_assert_eq(buf[4], 3, "version 3");
    cr_assert_eq(buf[68] | buf[69] << 8 | buf[70] << 16 | (uint32_t)buf[71] << 24, SSTC_SST_EVAL_FLIP,
                 "the flags follow the 68-byte header");
    cr_assert_eq(memcmp(buf + 72, plain + 68, n - 72), 0, "the records are unchanged");
    sstc_sst_model *back = NULL;
    cr_assert_eq(sstc_sst_read_mem(buf, n3, &back), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(back->eval_flags, SSTC_SST_EVAL_FLIP);
    assert_same_model(m, back);
    uint8_t *again;
    size_t n4;
    cr_assert_eq(sstc_sst_write_mem(back, &again, &n4), SSTC_OK);
    cr_assert_eq(n4, n3);
    cr_assert_eq(memcmp(again, buf, n3), 0, "written back byte for byte");
    free(again);
    sstc_sst_free(back);

    /* an unknown flag bit, and a version-3 file with no flag, are refused */
    uint8_t bad_flag[4] = {2, 0, 0, 0}, no_flag[4] = {0, 0, 0, 0}, v1 = 1;
    patch_and_expect(buf, n3, 68, bad_flag, 4, "unknown evaluation flags 0x00000002", "unknown flag");
    patch_and_expect(buf, n3, 68, no_flag, 4, "version 3 exactly when its evaluation flags are not 0",
                     "version 3 without flags");
    /* a version-1 header on a file with flags: the flag word is read as a record */
    patch_and_expect(buf, n3, 4, &v1, 1, "layer 0", "flags under a version-1 header");
    /* every truncation of the longer header is refused too */
    for (size_t len = 0; len < 80; len++) {
        uint8_t *cut = malloc(len ? len : 1);
        memcpy(cut, buf, len);
        expect_reject(cut, len, "", "truncated version-3 file");
        free(cut);
    }
    /* the writer refuses flags it does not know */
    m->eval_flags = 0x80;
    uint8_t *nope = NULL;
    size_t nn;
    cr_assert_eq(sstc_sst_write_mem(m, &nope, &nn), SSTC_EINVAL);
    cr_assert_neq(strstr(sstc_errmsg(), "evaluation flags"), NULL, "%s", sstc_errmsg());
    free(buf);
    free(plain);
    sstc_sst_free(m);
}
