/* Skip connections in the .sst file: SHORTCUT, ROUTE and GLOBALAVGPOOL
 * records round trip, need (and make) a version-2 file, and malformed ones are
 * rejected naming the record and the byte offset. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sst_helpers.h"

/* Byte offset of record i: the header, then the records before it. */
static size_t record_offset(const sstc_sst_model *m, int i) {
    sstc_sst_model head = *m;
    head.n_layers = i;
    return i ? sstc_sst_size(&head) - 4 : 68;
}

static uint8_t *graph_image(sstc_sst_model **m, size_t *n) {
    sstc_rng r;
    sstc_rng_seed(&r, 61);
    *m = th_graph_net(&r, 8, 2);
    uint8_t *buf;
    cr_assert_eq(sstc_sst_write_mem(*m, &buf, n), SSTC_OK, "%s", sstc_errmsg());
    return buf;
}

static void expect_reject(const uint8_t *buf, size_t n, const char *needle, const char *why) {
    sstc_sst_model *back = (sstc_sst_model *)1;
    int rc = sstc_sst_read_mem(buf, n, &back);
    cr_assert_eq(rc, SSTC_EFORMAT, "%s: accepted or wrong code %d (%s)", why, rc, sstc_errmsg());
    cr_assert_null(back, "%s: no model on failure", why);
    cr_assert_neq(strstr(sstc_errmsg(), needle), NULL, "%s: expected '%s' in: %s", why, needle, sstc_errmsg());
}

/* Patches bytes of a copy of the image, fixes its checksum, expects both
 * needles (the record with its byte offset, and what is wrong). */
static void patch_and_expect(const uint8_t *buf, size_t n, size_t at, const void *bytes, size_t len, const char *where,
                             const char *what, const char *why) {
    uint8_t *b = malloc(n);
    memcpy(b, buf, n);
    memcpy(b + at, bytes, len);
    th_fix_crc(b, n);
    expect_reject(b, n, where, why);
    expect_reject(b, n, what, why);
    free(b);
}

Test(sst_graph, records_of_every_new_kind_round_trip_and_make_a_version_2_file) {
    sstc_sst_model *m, *back = NULL;
    size_t n, n2;
    uint8_t *buf = graph_image(&m, &n), *buf2;
    cr_assert_eq(n, sstc_sst_size(m));
    cr_assert_eq(buf[4], 2, "version 2");
    cr_assert_eq(sstc_sst_file_version(m), 2);
    cr_assert_eq(sstc_sst_read_mem(buf, n, &back), SSTC_OK, "%s", sstc_errmsg());
    for (int i = 0; i < m->n_layers; i++) {
        const sstc_sst_layer *a = &m->layers[i], *b = &back->layers[i];
        cr_assert_eq(a->kind, b->kind, "layer %d", i);
        if (a->kind == SSTC_SST_SHORTCUT) {
            cr_assert_eq(a->from, b->from, "layer %d from", i);
            cr_assert_eq(a->activation, b->activation, "layer %d activation", i);
        }
        if (a->kind == SSTC_SST_ROUTE) {
            cr_assert_eq(a->n_route, b->n_route, "layer %d count", i);
            for (int k = 0; k < a->n_route; k++) cr_assert_eq(a->route[k], b->route[k], "layer %d source %d", i, k);
        }
    }
    cr_assert_eq(back->layers[1].from, SSTC_SST_INPUT, "the network input is -1");
    cr_assert_eq(sstc_sst_write_mem(back, &buf2, &n2), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(n2, n);
    cr_assert_eq(memcmp(buf, buf2, n), 0, "re-writing what was read gives the same bytes");
    /* the documented layout: shortcut i32 from, u16 act, u16 0; route u16 n, u16 0, i32[n]; gap nothing */
    size_t s1 = record_offset(m, 1), s12 = record_offset(m, 12), s13 = record_offset(m, 13);
    cr_assert_eq(record_offset(m, 2) - s1, 12u, "a shortcut record is 12 bytes");
    cr_assert_eq(s13 - s12, 16u, "a route of 2 is 8 + 4*2 bytes");
    cr_assert_eq(record_offset(m, 14) - s13, 4u, "a global average pool is its 4-byte head");
    const uint8_t shortcut1[12] = {SSTC_SST_SHORTCUT, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    cr_assert_eq(memcmp(buf + s1, shortcut1, 12), 0, "record 1: shortcut from -1, linear");
    const uint8_t shortcut6[12] = {SSTC_SST_SHORTCUT, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0};
    cr_assert_eq(memcmp(buf + record_offset(m, 6), shortcut6, 12), 0, "record 6: shortcut from 4, relu");
    const uint8_t route12[16] = {SSTC_SST_ROUTE, 0, 0, 0, 2, 0, 0, 0, 11, 0, 0, 0, 8, 0, 0, 0};
    cr_assert_eq(memcmp(buf + s12, route12, 16), 0, "record 12: route [11, 8]");
    cr_assert_eq(buf[s13], SSTC_SST_GLOBALAVGPOOL);
    free(buf), free(buf2);
    sstc_sst_free(back);
    sstc_sst_free(m);
}

Test(sst_graph, shapes_follow_references_and_concatenation) {
    sstc_rng r;
    sstc_rng_seed(&r, 62);
    sstc_sst_model *m = th_graph_net(&r, 4, 1);
    int (*sh)[3] = malloc(sizeof(int[3]) * (size_t)m->n_layers);
    cr_assert_eq(sstc_sst_shapes(m, sh), SSTC_OK, "%s", sstc_errmsg());
    const int want[15][3] = {{3, 8, 8},  {3, 8, 8}, {6, 8, 8}, {4, 8, 8},  {4, 8, 8},
                             {4, 8, 8},  {4, 8, 8}, {6, 4, 4}, {6, 4, 4},  {4, 8, 8},
                             {6, 4, 4},  {6, 4, 4}, {12, 4, 4}, {12, 1, 1}, {5, 1, 1}};
    for (int i = 0; i < 15; i++)
        cr_assert(sh[i][0] == want[i][0] && sh[i][1] == want[i][1] && sh[i][2] == want[i][2],
                  "record %d: %dx%dx%d, expected %dx%dx%d", i, sh[i][0], sh[i][1], sh[i][2], want[i][0], want[i][1],
                  want[i][2]);
    char d[64];
    sstc_sst_layer_describe(&m->layers[1], d, sizeof d);
    cr_assert_str_eq(d, "from=input act=linear");
    sstc_sst_layer_describe(&m->layers[6], d, sizeof d);
    cr_assert_str_eq(d, "from=4 act=relu");
    sstc_sst_layer_describe(&m->layers[2], d, sizeof d);
    cr_assert_str_eq(d, "from=input,1");
    sstc_sst_layer_describe(&m->layers[13], d, sizeof d);
    cr_assert_str_eq(d, "");
    cr_assert_str_eq(sstc_sst_kind_name(SSTC_SST_GLOBALAVGPOOL), "globalavgpool");
    cr_assert_str_eq(sstc_sst_kind_name(SSTC_SST_KIND_END), "?");
    free(sh);
    sstc_sst_free(m);
}

Test(sst_graph, a_file_is_version_2_exactly_when_it_has_a_version_2_record) {
    sstc_sst_model *m;
    size_t n;
    uint8_t *buf = graph_image(&m, &n);
    uint8_t one = 1, four = 4;
    /* version 1 cannot hold a shortcut: the first one (record 1) is refused */
    char where[64];
    snprintf(where, sizeof where, "layer 1 (shortcut) at byte %zu", record_offset(m, 1));
    patch_and_expect(buf, n, 4, &one, 1, where, "need format version 2", "shortcut in a version-1 file");
    patch_and_expect(buf, n, 4, &four, 1, "at byte 4", "unsupported version 4", "a future version");
    sstc_sst_free(m);
    free(buf);
    /* a version-2 header on a file without version-2 records would not write back identically */
    sstc_rng r;
    sstc_rng_seed(&r, 63);
    m = th_random_net(&r, 8, 2, 0);
    cr_assert_eq(sstc_sst_file_version(m), 1);
    cr_assert_eq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK);
    cr_assert_eq(buf[4], 1, "no version-2 record: version 1");
    uint8_t two = 2;
    patch_and_expect(buf, n, 4, &two, 1, "at byte 4", "version 2, but version 1", "version 2 without a reason");
    free(buf);
    sstc_sst_free(m);
}

Test(sst_graph, forward_references_shape_mismatches_and_bad_fields_are_rejected) {
    sstc_sst_model *m;
    size_t n;
    uint8_t *buf = graph_image(&m, &n);
    size_t s6 = record_offset(m, 6), s9 = record_offset(m, 9), s12 = record_offset(m, 12);
    char where[64];
    /* shortcut 6 */
    snprintf(where, sizeof where, "layer 6 (shortcut) at byte %zu", s6 + 4);
    int32_t self = 6, later = 9, below = -2, huge = 70000, conv3 = 2, bn8 = 8;
    patch_and_expect(buf, n, s6 + 4, &self, 4, where, "not an earlier record", "a shortcut reading itself");
    patch_and_expect(buf, n, s6 + 4, &later, 4, where, "not an earlier record", "a forward reference");
    patch_and_expect(buf, n, s6 + 4, &below, 4, where, "source -2 is out of range", "index -2");
    patch_and_expect(buf, n, s6 + 4, &huge, 4, where, "not an earlier record", "index past the end");
    patch_and_expect(buf, n, s6 + 4, &conv3, 4, where, "the shapes differ", "6x8x8 added to 4x8x8");
    patch_and_expect(buf, n, s6 + 4, &bn8, 4, where, "not an earlier record", "8 is later");
    uint16_t act2 = 2, nonzero = 1;
    snprintf(where, sizeof where, "layer 6 (shortcut) at byte %zu", s6 + 8);
    patch_and_expect(buf, n, s6 + 8, &act2, 2, where, "activation 2", "unknown activation");
    snprintf(where, sizeof where, "layer 6 (shortcut) at byte %zu", s6 + 10);
    patch_and_expect(buf, n, s6 + 10, &nonzero, 2, where, "reserved", "reserved field");
    uint8_t flag = 1;
    snprintf(where, sizeof where, "layer 6 (shortcut) at byte %zu", s6 + 1);
    patch_and_expect(buf, n, s6 + 1, &flag, 1, where, "without weights", "coded flag on a shortcut");
    /* route 12 = [11, 8]; route 9 = [6] */
    snprintf(where, sizeof where, "layer 12 (route) at byte %zu", s12 + 12);
    int32_t twelve = 12, five = 5;
    patch_and_expect(buf, n, s12 + 12, &twelve, 4, where, "not an earlier record", "route reading itself");
    patch_and_expect(buf, n, s12 + 12, &below, 4, where, "out of range", "route index -2");
    patch_and_expect(buf, n, s12 + 12, &five, 4, where, "the shapes differ", "route 4x4 with 8x8");
    snprintf(where, sizeof where, "layer 9 (route) at byte %zu", s9 + 8);
    int32_t eleven = 11;
    patch_and_expect(buf, n, s9 + 8, &eleven, 4, where, "not an earlier record", "route reading a later record");
    uint16_t zero = 0, nine = 9;
    snprintf(where, sizeof where, "layer 12 (route) at byte %zu", s12 + 4);
    patch_and_expect(buf, n, s12 + 4, &zero, 2, where, "0 sources", "an empty route");
    patch_and_expect(buf, n, s12 + 4, &nine, 2, where, "9 sources", "more sources than the format allows");
    uint16_t three = 3; /* then the third source runs into the next record's bytes: the lengths no longer add up */
    patch_and_expect(buf, n, s12 + 4, &three, 2, "layer", "", "a count that does not match the record");
    /* the fc after the pool must take 12 values: a route of one source changes that */
    uint16_t one = 1;
    uint8_t *b = malloc(n);
    memcpy(b, buf, n);
    memcpy(b + s12 + 4, &one, 2);
    th_fix_crc(b, n);
    expect_reject(b, n, "layer", "a shorter route");
    free(b);
    free(buf);
    sstc_sst_free(m);
}

Test(sst_graph, the_writer_refuses_bad_references_naming_the_layer) {
    sstc_rng r;
    sstc_rng_seed(&r, 64);
    sstc_sst_model *m = th_graph_net(&r, 8, 2);
    uint8_t *buf = (uint8_t *)1;
    size_t n = 1;
    m->layers[6].from = 7;
    cr_assert_neq(sstc_sst_write_mem(m, &buf, &n), SSTC_OK);
    cr_assert_null(buf);
    cr_assert_neq(strstr(sstc_errmsg(), "layer 6 (shortcut)"), NULL, "%s", sstc_errmsg());
    cr_assert_neq(strstr(sstc_errmsg(), "not an earlier record"), NULL, "%s", sstc_errmsg());
    int sh[15][3];
    cr_assert_eq(sstc_sst_shapes(m, sh), SSTC_EFORMAT);
    cr_assert_neq(strstr(sstc_errmsg(), "layer 6 (shortcut)"), NULL, "%s", sstc_errmsg());
    m->layers[6].from = 4;
    m->layers[6].activation = 3;
    cr_assert_eq(sstc_sst_validate(m), SSTC_EINVAL);
    cr_assert_neq(strstr(sstc_errmsg(), "activation 3"), NULL, "%s", sstc_errmsg());
    m->layers[6].activation = SSTC_SST_ACT_RELU;
    m->layers[12].n_route = SSTC_SST_MAX_ROUTE + 1;
    cr_assert_eq(sstc_sst_validate(m), SSTC_EINVAL);
    cr_assert_neq(strstr(sstc_errmsg(), "layer 12 (route)"), NULL, "%s", sstc_errmsg());
    m->layers[12].n_route = 2;
    m->layers[12].route[1] = 9; /* 4x8x8 next to 6x4x4 */
    cr_assert_eq(sstc_sst_validate(m), SSTC_EFORMAT);
    cr_assert_neq(strstr(sstc_errmsg(), "the shapes differ"), NULL, "%s", sstc_errmsg());
    m->layers[12].route[1] = 8;
    cr_assert_eq(sstc_sst_validate(m), SSTC_OK, "%s", sstc_errmsg());
    sstc_sst_free(m);
}

Test(sst_graph, inspect_prints_the_references) {
    sstc_sst_model *m;
    size_t n;
    uint8_t *buf = graph_image(&m, &n);
    char path[] = "/tmp/sstc-graph-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_eq(write(fd, buf, n), (ssize_t)n);
    close(fd);
    char cmd[256], out[8192] = "";
    snprintf(cmd, sizeof cmd, "./build/sstc inspect %s", path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    cr_assert_eq(pclose(p), 0, "inspect succeeds: %s", out);
    cr_assert_neq(strstr(out, "version 2"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "shortcut  from=input act=linear"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "route     from=11,8"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "globalavgpool"), NULL, "%s", out);
    unlink(path);
    free(buf);
    sstc_sst_free(m);
}

Test(sst_graph, the_version_2_seed_file_reads_and_writes_back_byte_for_byte) {
    FILE *f = fopen("fuzz/corpus/fuzz_sst/graph_v2.sst", "rb");
    cr_assert_not_null(f);
    uint8_t img[4096];
    size_t n = fread(img, 1, sizeof img, f);
    fclose(f);
    cr_assert_eq(img[4], 2, "version 2");
    sstc_sst_model *m = NULL;
    cr_assert_eq(sstc_sst_read_mem(img, n, &m), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[1].kind, SSTC_SST_SHORTCUT);
    cr_assert_eq(m->layers[1].from, SSTC_SST_INPUT);
    uint8_t *buf;
    size_t n2;
    cr_assert_eq(sstc_sst_write_mem(m, &buf, &n2), SSTC_OK, "%s", sstc_errmsg());
    cr_assert_eq(n2, n);
    cr_assert_eq(memcmp(buf, img, n), 0);
    free(buf);
    sstc_sst_free(m);
}
