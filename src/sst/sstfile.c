/* The .sst file: a versioned, checksummed binary image of a coded network.
 * docs/format.md describes it byte by byte; every multi-byte field is
 * little-endian, floats are IEEE-754 binary32.
 *
 * Every record kind is one entry of the table RECORDS (bottom of the record
 * section): its name, the file version that introduced it, how its fields are
 * sized, checked, allocated, written and read, and its output shape. The
 * reader, the writer, the size, the validation and `sstc inspect` only walk
 * that table, so a new kind is a new entry.
 *
 * The reader is written for hostile input: every length is checked against
 * the bytes that remain before anything is read or allocated, and every
 * failure names the layer and the byte offset. The writer validates by
 * parsing what it produced, so it can never write a file the reader refuses. */
#include "sstc/io.h"
#include "sstc/sst.h"
#include "sstc/error.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const uint8_t MAGIC[4] = {'S', 'S', 'T', 'C'};
enum {
    HEADER_BYTES = 68,
    RECORD_HEAD = 4,        /* kind, flags, reserved u16 */
    IN_CHANNELS_STORED = 4, /* in_mean/in_std entries in the header */
    CRC_BYTES = 4,
    FLAG_CODED = 1,
    FLAG_PER_ROW = 2,
};
#define MAX_LAYERS 65535u
#define MAX_CHANNELS (1u << 24)   /* channels, features, out, in */
#define MAX_SPATIAL 65535u        /* H, W, kernel, stride, pad */
#define MAX_ACTIVATION 2147483647ull /* C*H*W of any layer, fan_in */

size_t sstc_sst_fan_in(const sstc_sst_layer *L) {
    if (!L || L->in < 0) return 0;
    if (L->kind == SSTC_SST_FC) return (size_t)L->in;
    if (L->kind == SSTC_SST_CONV && L->kh > 0 && L->kw > 0) return (size_t)L->in * (size_t)L->kh * (size_t)L->kw;
    return 0;
}

/* Packed code bytes of a coded layer. */
static size_t code_bytes(const sstc_sst_layer *L) {
    size_t G = sstc_groups_per_row(sstc_sst_fan_in(L), L->N);
    return sstc_packed_bytes((size_t)L->out * G, sstc_code_bits(L->N, L->K));
}

/* zlib's crc32 of n bytes; zlib takes 32-bit lengths, so large images go in pieces. */
static uint32_t crc_of(const uint8_t *p, size_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t o = 0; o < n;) {
        size_t len = n - o > (1u << 30) ? (1u << 30) : n - o;
        crc = crc32(crc, p + o, (uInt)len);
        o += len;
    }
    return (uint32_t)crc;
}

/* ---- byte streams ------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n, off;
    int layer;  /* -1 in the header */
    int kind;
} reader;

static int rfail(const reader *r, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rfail(const reader *r, size_t at, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->layer < 0) return sstc_fail(SSTC_EFORMAT, "at byte %zu: %s", at, msg);
    return sstc_fail(SSTC_EFORMAT, "layer %d (%s) at byte %zu: %s", r->layer, sstc_sst_kind_name(r->kind), at, msg);
}

static int need(reader *r, size_t bytes, const char *what) {
    if (r->n - r->off < bytes)
        return rfail(r, r->off, "truncated: %s needs %zu bytes, only %zu left", what, bytes, r->n - r->off);
    return SSTC_OK;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static int rd_u8(reader *r, const char *what, unsigned *v) {
    int rc = need(r, 1, what);
    if (!rc) *v = r->p[r->off++];
    return rc;
}
static int rd_u16(reader *r, const char *what, unsigned *v) {
    int rc = need(r, 2, what);
    if (!rc) *v = (unsigned)r->p[r->off] | (unsigned)r->p[r->off + 1] << 8, r->off += 2;
    return rc;
}
static int rd_u32(reader *r, const char *what, uint32_t *v) {
    int rc = need(r, 4, what);
    if (!rc) *v = le32(r->p + r->off), r->off += 4;
    return rc;
}
static int rd_u64(reader *r, const char *what, uint64_t *v) {
    int rc = need(r, 8, what);
    if (!rc) *v = le64(r->p + r->off), r->off += 8;
    return rc;
}
/* A two's complement i32 (record references). */
static int64_t as_i32(uint32_t u) { return u <= 0x7fffffffu ? (int64_t)u : (int64_t)u - 4294967296LL; }

/* Reads n finite floats into a fresh array; positive = 1 also demands > 0. */
static int rd_floats(reader *r, size_t n, const char *what, int positive, float **out) {
    if (n > (r->n - r->off) / 4)
        return rfail(r, r->off, "truncated: %s needs %zu floats (%zu bytes), only %zu bytes left", what, n, n * 4,
                     r->n - r->off);
    float *a = malloc((n ? n : 1) * sizeof(float));
    if (!a) return sstc_fail(SSTC_ENOMEM, "layer %d: out of memory for %s (%zu floats)", r->layer, what, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = le32(r->p + r->off + 4 * i);
        memcpy(&a[i], &u, 4);
        if (!isfinite(a[i]) || (positive && !(a[i] > 0))) {
            double v = a[i];
            free(a);
            return rfail(r, r->off + 4 * i, "%s[%zu] is %g, expected a %s number", what, i, v,
                         positive ? "positive finite" : "finite");
        }
    }
    r->off += 4 * n;
    *out = a;
    return SSTC_OK;
}

typedef struct {
    uint8_t *p;
    size_t off;
} writer;

static void w_u8(writer *w, unsigned v) { w->p[w->off++] = (uint8_t)v; }
static void w_u16(writer *w, unsigned v) {
    w_u8(w, v & 0xff);
    w_u8(w, (v >> 8) & 0xff);
}
static void w_u32(writer *w, uint32_t v) {
    w_u16(w, v & 0xffff);
    w_u16(w, v >> 16);
}
static void w_u64(writer *w, uint64_t v) {
    w_u32(w, (uint32_t)v);
    w_u32(w, (uint32_t)(v >> 32));
}
static void w_floats(writer *w, const float *a, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &a[i], 4);
        w_u32(w, u);
    }
}

/* ---- shapes ------------------------------------------------------------------- */

typedef struct {
    uint64_t c, h, w;
} shape3;

/* What a shape function sees: the network input and the outputs of the
 * records before this one. */
typedef struct {
    shape3 input;
    const shape3 *outs; /* (index) */
    int index;          /* this record */
} graph;

/* A shape that does not fit: the message, and the field at fault as a byte
 * offset within the record. */
typedef struct {
    size_t field;
    char msg[400];
} shape_err;

static int sfail(shape_err *e, size_t field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int sfail(shape_err *e, size_t field, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->field = field;
    return -1;
}

static shape3 prev_output(const graph *g) { return g->index ? g->outs[g->index - 1] : g->input; }
static shape3 output_of(const graph *g, int ref) { return ref == SSTC_SST_INPUT ? g->input : g->outs[ref]; }
static uint64_t volume(shape3 s) { return s.c * s.h * s.w; }

/* A reference to an earlier record (or the input) at field `field`. */
static int check_ref(const graph *g, int64_t ref, size_t field, const char *what, shape_err *e) {
    if (ref < SSTC_SST_INPUT)
        return sfail(e, field, "%s %lld is out of range: expected -1 (the network input) or a record 0..%d", what,
                     (long long)ref, g->index - 1);
    if (ref >= g->index)
        return sfail(e, field, "%s %lld is not an earlier record: references go to records 0..%d or -1 (the input)",
                     what, (long long)ref, g->index - 1);
    return 0;
}

static void describe_ref(int ref, char *buf, size_t n) {
    if (ref == SSTC_SST_INPUT) snprintf(buf, n, "input");
    else snprintf(buf, n, "%d", ref);
}

/* ---- record kinds ----------------------------------------------------------------- */

/* One record kind. The record is RECORD_HEAD bytes (kind, flags, reserved)
 * followed by what `write` writes; reading is `read` (the fixed fields, each
 * checked for range), then `shape` (the fields against the input shapes,
 * giving the output shape), then `read_data` (arrays whose length the fields
 * give). `check` is the writer's guard: the fields and arrays it needs to
 * serialize without reading out of bounds (values and shapes are then checked
 * by reading the result back). */
typedef struct {
    const char *name;
    int version;  /* the first file version with this kind */
    int weighted; /* FC, CONV: may be coded, carries weights */
    size_t (*size)(const sstc_sst_layer *L);
    int (*check)(const sstc_sst_layer *L, int index, char *msg, size_t n);
    int (*alloc)(sstc_sst_layer *L);
    void (*write)(writer *w, const sstc_sst_layer *L);
    int (*read)(reader *r, sstc_sst_layer *L);
    int (*shape)(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e);
    int (*read_data)(reader *r, sstc_sst_layer *L);
    void (*describe)(const sstc_sst_layer *L, char *buf, size_t n);
} record_kind;

static const record_kind *kind_of(int kind);

#define CHECK_FAIL(...) (snprintf(msg, n, __VA_ARGS__), 1)

static size_t head_only_size(const sstc_sst_layer *L) { return RECORD_HEAD; }
static int no_check(const sstc_sst_layer *L, int index, char *msg, size_t n) { return 0; }
static int no_alloc(sstc_sst_layer *L) { return SSTC_OK; }
static void no_write(writer *w, const sstc_sst_layer *L) {}
static int no_read(reader *r, sstc_sst_layer *L) { return SSTC_OK; }
static void no_describe(const sstc_sst_layer *L, char *buf, size_t n) {
    if (n) buf[0] = 0;
}
static int same_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    *out = prev_output(g);
    return 0;
}
static int flat_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    *out = (shape3){volume(prev_output(g)), 1, 1};
    return 0;
}

/* FC and CONV: out, in (and kernel) fields, then coded or float weights. */
static size_t weighted_size(const sstc_sst_layer *L) {
    size_t out = (size_t)L->out, b = RECORD_HEAD + (L->kind == SSTC_SST_FC ? 8 : 16);
    if (L->coded) return b + 12 + 4 * (L->per_row_delta ? out : 1) + 8 * out + code_bytes(L);
    return b + 4 * out * sstc_sst_fan_in(L) + 4 * out;
}

static int weighted_check(const sstc_sst_layer *L, int index, char *msg, size_t n) {
    if (L->out < 1 || (unsigned)L->out > MAX_CHANNELS) return CHECK_FAIL("out=%d, expected 1..%u", L->out, MAX_CHANNELS);
    if (!L->bias) return CHECK_FAIL("bias is NULL");
    if (L->kind == SSTC_SST_CONV &&
        (L->kh < 1 || L->kw < 1 || L->stride < 1 || L->pad < 0 || (unsigned)L->kh > MAX_SPATIAL ||
         (unsigned)L->kw > MAX_SPATIAL || (unsigned)L->stride > MAX_SPATIAL || (unsigned)L->pad > MAX_SPATIAL))
        return CHECK_FAIL("kernel %dx%d stride %d pad %d out of range", L->kh, L->kw, L->stride, L->pad);
    if (L->in < 1 || (unsigned)L->in > MAX_CHANNELS) return CHECK_FAIL("in=%d, expected 1..%u", L->in, MAX_CHANNELS);
    if (sstc_sst_fan_in(L) > MAX_ACTIVATION) return CHECK_FAIL("fan_in %zu too large", sstc_sst_fan_in(L));
    if (L->coded) {
        if (!sstc_code_count(L->N, L->K))
            return CHECK_FAIL("need 1 <= K <= N <= %d, got N=%d K=%d", SSTC_MAX_N, L->N, L->K);
        if (!L->delta || !L->scale || !L->codes) return CHECK_FAIL("delta, scale or codes is NULL");
        if (L->codes_bytes != code_bytes(L))
            return CHECK_FAIL("codes_bytes %zu, expected %zu", L->codes_bytes, code_bytes(L));
    } else if (!L->weight) {
        return CHECK_FAIL("weight is NULL");
    }
    return 0;
}

static int weighted_alloc(sstc_sst_layer *L) {
    const char *kn = kind_of(L->kind)->name;
    if (L->out < 1 || (unsigned)L->out > MAX_CHANNELS)
        return sstc_fail(SSTC_EINVAL, "%s layer: out=%d, expected 1..%u", kn, L->out, MAX_CHANNELS);
    if (L->in < 1 || (unsigned)L->in > MAX_CHANNELS)
        return sstc_fail(SSTC_EINVAL, "%s layer: in=%d, expected 1..%u", kn, L->in, MAX_CHANNELS);
    if (L->kind == SSTC_SST_CONV && (L->kh < 1 || L->kw < 1 || (unsigned)L->kh > MAX_SPATIAL ||
                                       (unsigned)L->kw > MAX_SPATIAL))
        return sstc_fail(SSTC_EINVAL, "conv layer: kernel %dx%d, expected 1..%u", L->kh, L->kw, MAX_SPATIAL);
    size_t fan_in = sstc_sst_fan_in(L), out = (size_t)L->out;
    if (fan_in > MAX_ACTIVATION) return sstc_fail(SSTC_EINVAL, "%s layer: fan_in %zu too large", kn, fan_in);
    if (L->coded && !sstc_code_count(L->N, L->K))
        return sstc_fail(SSTC_EINVAL, "%s layer: need 1 <= K <= N <= %d, got N=%d K=%d", kn, SSTC_MAX_N, L->N, L->K);
    L->bias = calloc(out, sizeof(float));
    if (!L->bias) return SSTC_ENOMEM;
    if (L->coded) {
        L->delta = calloc(L->per_row_delta ? out : 1, sizeof(float));
        L->scale = calloc(out, sizeof(float));
        L->codes_bytes = code_bytes(L);
        L->codes = calloc(L->codes_bytes ? L->codes_bytes : 1, 1);
        if (!L->delta || !L->scale || !L->codes) return SSTC_ENOMEM;
    } else {
        L->weight = calloc(out * fan_in, sizeof(float));
        if (!L->weight) return SSTC_ENOMEM;
    }
    return SSTC_OK;
}

static void weights_write(writer *w, const sstc_sst_layer *L) {
    size_t out = (size_t)L->out;
    if (L->coded) {
        w_u8(w, (unsigned)L->N);
        w_u8(w, (unsigned)L->K);
        w_u16(w, 0);
        w_u64(w, L->codes_bytes);
        w_floats(w, L->delta, L->per_row_delta ? out : 1);
        w_floats(w, L->scale, out);
        w_floats(w, L->bias, out);
        memcpy(w->p + w->off, L->codes, L->codes_bytes);
        w->off += L->codes_bytes;
    } else {
        w_floats(w, L->weight, out * sstc_sst_fan_in(L));
        w_floats(w, L->bias, out);
    }
}

static void fc_write(writer *w, const sstc_sst_layer *L) {
    w_u32(w, (uint32_t)L->out);
    w_u32(w, (uint32_t)L->in);
    weights_write(w, L);
}

static void conv_write(writer *w, const sstc_sst_layer *L) {
    w_u32(w, (uint32_t)L->out);
    w_u32(w, (uint32_t)L->in);
    w_u16(w, (unsigned)L->kh);
    w_u16(w, (unsigned)L->kw);
    w_u16(w, (unsigned)L->stride);
    w_u16(w, (unsigned)L->pad);
    weights_write(w, L);
}

static int fc_read(reader *r, sstc_sst_layer *L) {
    uint32_t out, in;
    size_t fo = r->off;
    int rc;
    if ((rc = rd_u32(r, "out", &out)) || (rc = rd_u32(r, "in", &in))) return rc;
    if (out < 1 || out > MAX_CHANNELS) return rfail(r, fo, "out=%u, expected 1..%u", out, MAX_CHANNELS);
    if (in < 1 || in > MAX_CHANNELS) return rfail(r, fo + 4, "in=%u, expected 1..%u", in, MAX_CHANNELS);
    L->out = (int)out;
    L->in = (int)in;
    return SSTC_OK;
}

static int conv_read(reader *r, sstc_sst_layer *L) {
    int rc = fc_read(r, L);
    if (rc) return rc;
    unsigned kh, kw, st, pad;
    size_t ko = r->off;
    if ((rc = rd_u16(r, "kh", &kh)) || (rc = rd_u16(r, "kw", &kw)) || (rc = rd_u16(r, "stride", &st)) ||
        (rc = rd_u16(r, "pad", &pad)))
        return rc;
    if (kh < 1 || kw < 1 || st < 1) return rfail(r, ko, "kernel %ux%u stride %u, expected >= 1", kh, kw, st);
    if (pad >= kh || pad >= kw) return rfail(r, ko + 6, "pad %u, expected < kernel %ux%u", pad, kh, kw);
    if ((uint64_t)L->in * kh * kw > MAX_ACTIVATION) return rfail(r, ko, "fan_in %d*%u*%u is too large", L->in, kh, kw);
    L->kh = (int)kh, L->kw = (int)kw, L->stride = (int)st, L->pad = (int)pad;
    return SSTC_OK;
}

static int fc_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    shape3 s = prev_output(g);
    if ((uint64_t)L->in != volume(s))
        return sfail(e, 8, "in=%d but the input is %llux%llux%llu = %llu values", L->in, (unsigned long long)s.c,
                     (unsigned long long)s.h, (unsigned long long)s.w, (unsigned long long)volume(s));
    *out = (shape3){(uint64_t)L->out, 1, 1};
    return 0;
}

static int conv_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    shape3 s = prev_output(g);
    uint64_t kh = (uint64_t)L->kh, kw = (uint64_t)L->kw, st = (uint64_t)L->stride, pad = (uint64_t)L->pad;
    if ((uint64_t)L->in != s.c)
        return sfail(e, 8, "in=%d channels but the input has %llu", L->in, (unsigned long long)s.c);
    if (kh > s.h + 2 * pad || kw > s.w + 2 * pad)
        return sfail(e, 12, "kernel %llux%llu does not fit the padded input %llux%llu", (unsigned long long)kh,
                     (unsigned long long)kw, (unsigned long long)(s.h + 2 * pad), (unsigned long long)(s.w + 2 * pad));
    *out = (shape3){(uint64_t)L->out, (s.h + 2 * pad - kh) / st + 1, (s.w + 2 * pad - kw) / st + 1};
    return 0;
}

/* Checks every packed index of a coded layer: < M, padding decodes to 0. */
static int check_codes(reader *r, size_t start, const sstc_sst_layer *L) {
    size_t fan_in = sstc_sst_fan_in(L), G = sstc_groups_per_row(fan_in, L->N);
    int bits = sstc_code_bits(L->N, L->K);
    uint32_t M = sstc_code_count(L->N, L->K);
    size_t pad_from = fan_in - (G - 1) * (size_t)L->N; /* real entries of the last group */
    const uint8_t *in = L->codes;
    uint64_t acc = 0, mask = ((uint64_t)1 << bits) - 1;
    int nacc = 0;
    size_t b = 0;
    int8_t t[SSTC_MAX_N];
    size_t bit = 0;
    for (size_t row = 0; row < (size_t)L->out; row++)
        for (size_t g = 0; g < G; g++, bit += (size_t)bits) {
            size_t at = start + bit / 8;
            while (nacc < bits) {
                acc |= (uint64_t)in[b++] << nacc;
                nacc += 8;
            }
            uint32_t i = (uint32_t)(acc & mask);
            acc >>= bits;
            nacc -= bits;
            if (i >= M)
                return rfail(r, at, "row %zu group %zu: code index %u >= M(%d,%d) = %u", row, g, i, L->N, L->K, M);
            if (g == G - 1 && pad_from < (size_t)L->N) {
                sstc_code_unrank(L->N, L->K, i, t);
                for (size_t q = pad_from; q < (size_t)L->N; q++)
                    if (t[q])
                        return rfail(r, at, "row %zu group %zu: code index %u puts a non-zero into padding position %zu",
                                     row, g, i, q);
            }
        }
    if (acc) return rfail(r, start + L->codes_bytes - 1, "unused bits of the last code byte are not zero");
    return SSTC_OK;
}

static int weights_read(reader *r, sstc_sst_layer *L) {
    size_t fan_in = sstc_sst_fan_in(L), out = (size_t)L->out;
    int rc;
    if (!L->coded)
        return (rc = rd_floats(r, out * fan_in, "weight", 0, &L->weight)) ? rc : rd_floats(r, out, "bias", 0, &L->bias);
    unsigned N, K, res;
    size_t no = r->off;
    uint64_t nbytes;
    if ((rc = rd_u8(r, "N", &N)) || (rc = rd_u8(r, "K", &K)) || (rc = rd_u16(r, "reserved field", &res)) ||
        (rc = rd_u64(r, "code byte count", &nbytes)))
        return rc;
    if (!sstc_code_count((int)N, (int)K))
        return rfail(r, no, "(N,K) = (%u,%u), expected 1 <= K <= N <= %d", N, K, SSTC_MAX_N);
    if (res) return rfail(r, no + 2, "reserved field is %u, expected 0", res);
    L->N = (int)N, L->K = (int)K;
    size_t want = code_bytes(L);
    if (nbytes != want)
        return rfail(r, no + 4, "code byte count %llu does not add up: %d rows x %zu groups x %d bits = %zu bytes",
                     (unsigned long long)nbytes, L->out, sstc_groups_per_row(fan_in, L->N), sstc_code_bits(L->N, L->K),
                     want);
    if ((rc = rd_floats(r, L->per_row_delta ? out : 1, "delta", 1, &L->delta)) ||
        (rc = rd_floats(r, out, "scale", 0, &L->scale)) || (rc = rd_floats(r, out, "bias", 0, &L->bias)))
        return rc;
    if ((rc = need(r, want, "packed codes"))) return rc;
    L->codes = malloc(want ? want : 1);
    if (!L->codes) return sstc_fail(SSTC_ENOMEM, "layer %d: out of memory for %zu code bytes", r->layer, want);
    memcpy(L->codes, r->p + r->off, want);
    L->codes_bytes = want;
    size_t start = r->off;
    r->off += want;
    return check_codes(r, start, L);
}

static void fc_describe(const sstc_sst_layer *L, char *buf, size_t n) { snprintf(buf, n, "%d->%d", L->in, L->out); }
static void conv_describe(const sstc_sst_layer *L, char *buf, size_t n) {
    snprintf(buf, n, "%d->%d k=%dx%d s=%d p=%d", L->in, L->out, L->kh, L->kw, L->stride, L->pad);
}

/* BATCHNORM: channels, then scale[channels], bias[channels]. */
static size_t bn_size(const sstc_sst_layer *L) { return RECORD_HEAD + 4 + 8 * (size_t)L->out; }
static int bn_check(const sstc_sst_layer *L, int index, char *msg, size_t n) {
    if (L->out < 1 || (unsigned)L->out > MAX_CHANNELS) return CHECK_FAIL("out=%d, expected 1..%u", L->out, MAX_CHANNELS);
    if (!L->bias) return CHECK_FAIL("bias is NULL");
    if (!L->scale) return CHECK_FAIL("scale is NULL");
    return 0;
}
static int bn_alloc(sstc_sst_layer *L) {
    if (L->out < 1 || (unsigned)L->out > MAX_CHANNELS)
        return sstc_fail(SSTC_EINVAL, "batchnorm layer: out=%d, expected 1..%u", L->out, MAX_CHANNELS);
    L->scale = calloc((size_t)L->out, sizeof(float));
    L->bias = calloc((size_t)L->out, sizeof(float));
    return L->scale && L->bias ? SSTC_OK : SSTC_ENOMEM;
}
static void bn_write(writer *w, const sstc_sst_layer *L) {
    w_u32(w, (uint32_t)L->out);
    w_floats(w, L->scale, (size_t)L->out);
    w_floats(w, L->bias, (size_t)L->out);
}
static int bn_read(reader *r, sstc_sst_layer *L) {
    uint32_t c;
    size_t fo = r->off;
    int rc = rd_u32(r, "channels", &c);
    if (rc) return rc;
    if (c < 1 || c > MAX_CHANNELS) return rfail(r, fo, "%u channels, expected 1..%u", c, MAX_CHANNELS);
    L->out = (int)c;
    return SSTC_OK;
}
static int bn_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    shape3 s = prev_output(g);
    if ((uint64_t)L->out != s.c) return sfail(e, 4, "%d channels but the input has %llu", L->out, (unsigned long long)s.c);
    *out = s;
    return 0;
}
static int bn_read_data(reader *r, sstc_sst_layer *L) {
    int rc = rd_floats(r, (size_t)L->out, "scale", 0, &L->scale);
    return rc ? rc : rd_floats(r, (size_t)L->out, "bias", 0, &L->bias);
}
static void bn_describe(const sstc_sst_layer *L, char *buf, size_t n) { snprintf(buf, n, "c=%d", L->out); }

/* MAXPOOL, AVGPOOL: u16 k, stride, pad, reserved. */
static size_t pool_size(const sstc_sst_layer *L) { return RECORD_HEAD + 8; }
static int pool_check(const sstc_sst_layer *L, int index, char *msg, size_t n) {
    if (L->kh < 1 || L->kw < 1 || L->stride < 1 || L->pad < 0 || (unsigned)L->kh > MAX_SPATIAL ||
        (unsigned)L->kw > MAX_SPATIAL || (unsigned)L->stride > MAX_SPATIAL || (unsigned)L->pad > MAX_SPATIAL)
        return CHECK_FAIL("kernel %dx%d stride %d pad %d out of range", L->kh, L->kw, L->stride, L->pad);
    if (L->kh != L->kw) return CHECK_FAIL("pooling windows are square, got %dx%d", L->kh, L->kw);
    return 0;
}
static void pool_write(writer *w, const sstc_sst_layer *L) {
    w_u16(w, (unsigned)L->kh);
    w_u16(w, (unsigned)L->stride);
    w_u16(w, (unsigned)L->pad);
    w_u16(w, 0);
}
static int pool_read(reader *r, sstc_sst_layer *L) {
    unsigned k, st, pad, res;
    size_t ko = r->off;
    int rc;
    if ((rc = rd_u16(r, "k", &k)) || (rc = rd_u16(r, "stride", &st)) || (rc = rd_u16(r, "pad", &pad)) ||
        (rc = rd_u16(r, "reserved field", &res)))
        return rc;
    if (k < 1 || st < 1) return rfail(r, ko, "window %u stride %u, expected >= 1", k, st);
    if (pad >= k) return rfail(r, ko + 4, "pad %u, expected < window %u", pad, k);
    if (res) return rfail(r, ko + 6, "reserved field is %u, expected 0", res);
    L->kh = L->kw = (int)k, L->stride = (int)st, L->pad = (int)pad;
    return SSTC_OK;
}
static int pool_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    shape3 s = prev_output(g);
    uint64_t k = (uint64_t)L->kh, st = (uint64_t)L->stride, pad = (uint64_t)L->pad;
    if (k > s.h + 2 * pad || k > s.w + 2 * pad)
        return sfail(e, 4, "window %llu does not fit the padded input %llux%llu", (unsigned long long)k,
                     (unsigned long long)(s.h + 2 * pad), (unsigned long long)(s.w + 2 * pad));
    *out = (shape3){s.c, (s.h + 2 * pad - k) / st + 1, (s.w + 2 * pad - k) / st + 1};
    return 0;
}
static void pool_describe(const sstc_sst_layer *L, char *buf, size_t n) {
    snprintf(buf, n, "k=%d s=%d p=%d", L->kh, L->stride, L->pad);
}

/* DROPOUT: f32 p. */
static size_t dropout_size(const sstc_sst_layer *L) { return RECORD_HEAD + 4; }
static void dropout_write(writer *w, const sstc_sst_layer *L) { w_floats(w, &L->p, 1); }
static int dropout_read(reader *r, sstc_sst_layer *L) {
    size_t po = r->off;
    uint32_t u;
    int rc = rd_u32(r, "p", &u);
    if (rc) return rc;
    memcpy(&L->p, &u, 4);
    if (!(L->p >= 0 && L->p < 1)) return rfail(r, po, "dropout p = %g, expected 0 <= p < 1", L->p);
    return SSTC_OK;
}
static void dropout_describe(const sstc_sst_layer *L, char *buf, size_t n) { snprintf(buf, n, "p=%g", L->p); }

/* PERMUTE: u32 n, u32 perm[n]; only as record 0. */
static size_t permute_size(const sstc_sst_layer *L) { return RECORD_HEAD + 4 + 4 * (size_t)L->out; }
static int permute_check(const sstc_sst_layer *L, int index, char *msg, size_t n) {
    if (index != 0 || !L->perm || L->out < 1 || L->in != L->out || (unsigned)L->out > MAX_ACTIVATION)
        return CHECK_FAIL("a permute layer must be the first, with in = out >= 1 and perm set");
    return 0;
}
static int permute_alloc(sstc_sst_layer *L) {
    if (L->out < 1 || (unsigned)L->out > MAX_ACTIVATION || L->in != L->out)
        return sstc_fail(SSTC_EINVAL, "permute layer: out=%d in=%d, expected equal and >= 1", L->out, L->in);
    L->perm = calloc((size_t)L->out, sizeof *L->perm);
    return L->perm ? SSTC_OK : SSTC_ENOMEM;
}
static void permute_write(writer *w, const sstc_sst_layer *L) {
    w_u32(w, (uint32_t)L->out);
    for (size_t i = 0; i < (size_t)L->out; i++) w_u32(w, L->perm[i]);
}
static int permute_read(reader *r, sstc_sst_layer *L) {
    uint32_t n;
    if (r->layer != 0) return rfail(r, r->off - RECORD_HEAD, "a permute layer may only be the first layer");
    size_t no = r->off;
    int rc = rd_u32(r, "permutation length", &n);
    if (rc) return rc;
    if (n < 1 || n > MAX_ACTIVATION) return rfail(r, no, "permutation of %u values, expected 1..%llu", n, MAX_ACTIVATION);
    L->out = L->in = (int)n;
    return SSTC_OK;
}
static int permute_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    uint64_t act = volume(prev_output(g));
    if ((uint64_t)L->out != act)
        return sfail(e, 4, "permutation of %d values but the input has %llu", L->out, (unsigned long long)act);
    *out = (shape3){act, 1, 1};
    return 0;
}
static int permute_read_data(reader *r, sstc_sst_layer *L) {
    uint32_t n = (uint32_t)L->out;
    if (n > (r->n - r->off) / 4)
        return rfail(r, r->off, "truncated: the permutation needs %u entries, only %zu bytes left", n, r->n - r->off);
    L->perm = malloc((size_t)n * sizeof *L->perm);
    uint8_t *seen = calloc(n, 1);
    if (!L->perm || !seen) {
        free(seen);
        return sstc_fail(SSTC_ENOMEM, "layer %d: out of memory for a permutation of %u", r->layer, n);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v = le32(r->p + r->off + 4 * (size_t)i);
        if (v >= n || seen[v]) {
            free(seen);
            return rfail(r, r->off + 4 * (size_t)i, "permutation entry %u is %u: %s", i, v,
                         v >= n ? "out of range" : "repeated (not a permutation)");
        }
        seen[v] = 1;
        L->perm[i] = v;
    }
    free(seen);
    r->off += 4 * (size_t)n;
    return SSTC_OK;
}
static void permute_describe(const sstc_sst_layer *L, char *buf, size_t n) {
    snprintf(buf, n, "n=%d (input interleaving)", L->out);
}

/* SHORTCUT: i32 from, u16 activation, u16 reserved. */
static size_t shortcut_size(const sstc_sst_layer *L) { return RECORD_HEAD + 8; }
static int shortcut_check(const sstc_sst_layer *L, int index, char *msg, size_t n) {
    if (L->activation != SSTC_SST_ACT_LINEAR && L->activation != SSTC_SST_ACT_RELU)
        return CHECK_FAIL("activation %d, expected %d (linear) or %d (relu)", L->activation, SSTC_SST_ACT_LINEAR,
                          SSTC_SST_ACT_RELU);
    return 0;
}
static void shortcut_write(writer *w, const sstc_sst_layer *L) {
    w_u32(w, (uint32_t)L->from);
    w_u16(w, (unsigned)L->activation);
    w_u16(w, 0);
}
static int shortcut_read(reader *r, sstc_sst_layer *L) {
    uint32_t from;
    unsigned act, res;
    size_t fo = r->off;
    int rc;
    if ((rc = rd_u32(r, "source", &from)) || (rc = rd_u16(r, "activation", &act)) ||
        (rc = rd_u16(r, "reserved field", &res)))
        return rc;
    if (act != SSTC_SST_ACT_LINEAR && act != SSTC_SST_ACT_RELU)
        return rfail(r, fo + 4, "activation %u, expected %d (linear) or %d (relu)", act, SSTC_SST_ACT_LINEAR,
                     SSTC_SST_ACT_RELU);
    if (res) return rfail(r, fo + 6, "reserved field is %u, expected 0", res);
    int64_t v = as_i32(from);
    if (v < SSTC_SST_INPUT || v >= r->layer)
        return rfail(r, fo, "source %lld is %s: expected -1 (the network input) or an earlier record 0..%d",
                     (long long)v, v < SSTC_SST_INPUT ? "out of range" : "not an earlier record", r->layer - 1);
    L->from = (int)v;
    L->activation = (int)act;
    return SSTC_OK;
}
static int shortcut_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    if (check_ref(g, L->from, 4, "source", e)) return -1;
    shape3 x = prev_output(g), s = output_of(g, L->from);
    if (x.c != s.c || x.h != s.h || x.w != s.w) {
        char src[16];
        describe_ref(L->from, src, sizeof src);
        return sfail(e, 4, "the shapes differ: the previous output is %llux%llux%llu, source %s is %llux%llux%llu",
                     (unsigned long long)x.c, (unsigned long long)x.h, (unsigned long long)x.w, src,
                     (unsigned long long)s.c, (unsigned long long)s.h, (unsigned long long)s.w);
    }
    *out = x;
    return 0;
}
static void shortcut_describe(const sstc_sst_layer *L, char *buf, size_t n) {
    char src[16];
    describe_ref(L->from, src, sizeof src);
    snprintf(buf, n, "from=%s act=%s", src, L->activation == SSTC_SST_ACT_RELU ? "relu" : "linear");
}

/* ROUTE: u16 count, u16 reserved, i32 route[count]. */
static size_t route_size(const sstc_sst_layer *L) { return RECORD_HEAD + 4 + 4 * (size_t)L->n_route; }
static int route_check(const sstc_sst_layer *L, int index, char *msg, size_t n) {
    if (L->n_route < 1 || L->n_route > SSTC_SST_MAX_ROUTE)
        return CHECK_FAIL("%d sources, expected 1..%d", L->n_route, SSTC_SST_MAX_ROUTE);
    return 0;
}
static void route_write(writer *w, const sstc_sst_layer *L) {
    w_u16(w, (unsigned)L->n_route);
    w_u16(w, 0);
    for (int k = 0; k < L->n_route; k++) w_u32(w, (uint32_t)L->route[k]);
}
static int route_read(reader *r, sstc_sst_layer *L) {
    unsigned count, res;
    size_t fo = r->off;
    int rc;
    if ((rc = rd_u16(r, "source count", &count)) || (rc = rd_u16(r, "reserved field", &res))) return rc;
    if (count < 1 || count > SSTC_SST_MAX_ROUTE)
        return rfail(r, fo, "%u sources, expected 1..%d", count, SSTC_SST_MAX_ROUTE);
    if (res) return rfail(r, fo + 2, "reserved field is %u, expected 0", res);
    L->n_route = (int)count;
    for (unsigned k = 0; k < count; k++) {
        uint32_t u;
        size_t at = r->off;
        if ((rc = rd_u32(r, "source", &u))) return rc;
        int64_t v = as_i32(u);
        if (v < SSTC_SST_INPUT || v >= r->layer)
            return rfail(r, at, "source %u is %lld, %s: expected -1 (the network input) or an earlier record 0..%d", k,
                         (long long)v, v < SSTC_SST_INPUT ? "out of range" : "not an earlier record", r->layer - 1);
        L->route[k] = (int)v;
    }
    return SSTC_OK;
}
static int route_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    shape3 first = {0, 0, 0};
    uint64_t c = 0;
    for (int k = 0; k < L->n_route; k++) {
        if (check_ref(g, L->route[k], 8 + 4 * (size_t)k, "source", e)) return -1;
        shape3 s = output_of(g, L->route[k]);
        if (!k) first = s;
        if (s.h != first.h || s.w != first.w) {
            char a[16], b[16];
            describe_ref(L->route[0], a, sizeof a);
            describe_ref(L->route[k], b, sizeof b);
            return sfail(e, 8 + 4 * (size_t)k,
                         "the shapes differ: source %s is %llux%llux%llu, source %s is %llux%llux%llu (heights and "
                         "widths must be equal)",
                         b, (unsigned long long)s.c, (unsigned long long)s.h, (unsigned long long)s.w, a,
                         (unsigned long long)first.c, (unsigned long long)first.h, (unsigned long long)first.w);
        }
        c += s.c;
    }
    *out = (shape3){c, first.h, first.w};
    return 0;
}
static void route_describe(const sstc_sst_layer *L, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "from=");
    for (int k = 0; k < L->n_route && used < n; k++) {
        char src[16];
        describe_ref(L->route[k], src, sizeof src);
        used += (size_t)snprintf(buf + used, n - used, "%s%s", k ? "," : "", src);
    }
}

/* GLOBALAVGPOOL: no fields. */
static int gap_shape(const sstc_sst_layer *L, const graph *g, shape3 *out, shape_err *e) {
    *out = (shape3){prev_output(g).c, 1, 1};
    return 0;
}

#define FIELDLESS(NAME, VERSION, SHAPE)                                                                                \
    {.name = NAME, .version = VERSION, .size = head_only_size, .check = no_check, .alloc = no_alloc,                   \
     .write = no_write, .read = no_read, .shape = SHAPE, .describe = no_describe}

static const record_kind RECORDS[] = {
    [SSTC_SST_FC] = {"fc", 1, 1, weighted_size, weighted_check, weighted_alloc, fc_write, fc_read, fc_shape,
                     weights_read, fc_describe},
    [SSTC_SST_CONV] = {"conv", 1, 1, weighted_size, weighted_check, weighted_alloc, conv_write, conv_read, conv_shape,
                       weights_read, conv_describe},
    [SSTC_SST_BATCHNORM] = {"batchnorm", 1, 0, bn_size, bn_check, bn_alloc, bn_write, bn_read, bn_shape, bn_read_data,
                            bn_describe},
    [SSTC_SST_RELU] = FIELDLESS("relu", 1, same_shape),
    [SSTC_SST_MAXPOOL] = {"maxpool", 1, 0, pool_size, pool_check, no_alloc, pool_write, pool_read, pool_shape, NULL,
                          pool_describe},
    [SSTC_SST_AVGPOOL] = {"avgpool", 1, 0, pool_size, pool_check, no_alloc, pool_write, pool_read, pool_shape, NULL,
                          pool_describe},
    [SSTC_SST_FLATTEN] = FIELDLESS("flatten", 1, flat_shape),
    [SSTC_SST_DROPOUT] = {"dropout", 1, 0, dropout_size, no_check, no_alloc, dropout_write, dropout_read, same_shape,
                          NULL, dropout_describe},
    [SSTC_SST_PERMUTE] = {"permute", 1, 0, permute_size, permute_check, permute_alloc, permute_write, permute_read,
                          permute_shape, permute_read_data, permute_describe},
    [SSTC_SST_SHORTCUT] = {"shortcut", 2, 0, shortcut_size, shortcut_check, no_alloc, shortcut_write, shortcut_read,
                           shortcut_shape, NULL, shortcut_describe},
    [SSTC_SST_ROUTE] = {"route", 2, 0, route_size, route_check, no_alloc, route_write, route_read, route_shape, NULL,
                        route_describe},
    [SSTC_SST_GLOBALAVGPOOL] = FIELDLESS("globalavgpool", 2, gap_shape),
};
_Static_assert(sizeof RECORDS / sizeof RECORDS[0] == SSTC_SST_KIND_END,
               "every sstc_sst_kind needs an entry in RECORDS, in enum order");

static const record_kind *kind_of(int kind) {
    if (kind < 0 || kind >= SSTC_SST_KIND_END || !RECORDS[kind].name) return NULL;
    return &RECORDS[kind];
}

const char *sstc_sst_kind_name(int kind) {
    const record_kind *k = kind_of(kind);
    return k ? k->name : "?";
}

void sstc_sst_layer_describe(const sstc_sst_layer *L, char *buf, size_t n) {
    const record_kind *k = L ? kind_of(L->kind) : NULL;
    if (!n) return;
    if (!k) snprintf(buf, n, "?");
    else k->describe(L, buf, n);
}

/* ---- model memory ----------------------------------------------------------- */

sstc_sst_model *sstc_sst_model_new(int n_layers) {
    if (n_layers < 0 || (unsigned)n_layers > MAX_LAYERS) {
        sstc_fail(SSTC_EINVAL, "sstc_sst_model_new: %d layers, expected 0..%u", n_layers, MAX_LAYERS);
        return NULL;
    }
    sstc_sst_model *m = calloc(1, sizeof *m);
    if (m && n_layers) m->layers = calloc((size_t)n_layers, sizeof *m->layers);
    if (!m || (n_layers && !m->layers)) {
        free(m);
        sstc_fail(SSTC_ENOMEM, "sstc_sst_model_new: out of memory");
        return NULL;
    }
    m->n_layers = n_layers;
    for (int c = 0; c < IN_CHANNELS_STORED; c++) m->in_mean[c] = 0.0f, m->in_std[c] = 1.0f;
    return m;
}

static void layer_release(sstc_sst_layer *L) {
    free(L->delta);
    free(L->scale);
    free(L->bias);
    free(L->codes);
    free(L->weight);
    free(L->perm);
    L->perm = NULL;
    L->delta = L->scale = L->bias = L->weight = NULL;
    L->codes = NULL;
    L->codes_bytes = 0;
}

void sstc_sst_free(sstc_sst_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_layers && m->layers; i++) layer_release(&m->layers[i]);
    free(m->layers);
    free(m);
}

int sstc_sst_layer_alloc(sstc_sst_layer *L) {
    if (!L) return sstc_fail(SSTC_EINVAL, "sstc_sst_layer_alloc: NULL layer");
    layer_release(L);
    const record_kind *k = kind_of(L->kind);
    if (!k) return sstc_fail(SSTC_EINVAL, "sstc_sst_layer_alloc: unknown kind %d", (int)L->kind);
    int rc = k->alloc(L);
    if (rc == SSTC_ENOMEM) {
        layer_release(L);
        return sstc_fail(SSTC_ENOMEM, "%s layer: out of memory", k->name);
    }
    return rc;
}

int sstc_sst_layer_ternary(const sstc_sst_layer *L, int8_t *T) {
    if (!L || !T || !kind_of(L->kind) || !kind_of(L->kind)->weighted || !L->coded || !L->codes)
        return sstc_fail(SSTC_EINVAL, "sstc_sst_layer_ternary: not a coded fc/conv layer");
    size_t fan_in = sstc_sst_fan_in(L), G = sstc_groups_per_row(fan_in, L->N), count = (size_t)L->out * G;
    uint32_t *idx = malloc((count ? count : 1) * sizeof *idx);
    if (!idx) return sstc_fail(SSTC_ENOMEM, "sstc_sst_layer_ternary: out of memory");
    int rc = sstc_unpack_codes(L->codes, L->codes_bytes, count, sstc_code_bits(L->N, L->K), idx);
    if (!rc) rc = sstc_ternary_from_codes(idx, L->out, (int)fan_in, L->N, L->K, T);
    free(idx);
    return rc;
}

int sstc_sst_layer_set_ternary(sstc_sst_layer *L, const int8_t *T) {
    if (!L || !T || !kind_of(L->kind) || !kind_of(L->kind)->weighted || !L->coded || !L->codes)
        return sstc_fail(SSTC_EINVAL, "sstc_sst_layer_set_ternary: not an allocated coded fc/conv layer");
    size_t fan_in = sstc_sst_fan_in(L), G = sstc_groups_per_row(fan_in, L->N), count = (size_t)L->out * G;
    if (L->codes_bytes != code_bytes(L))
        return sstc_fail(SSTC_EINVAL, "sstc_sst_layer_set_ternary: codes_bytes %zu, expected %zu", L->codes_bytes,
                         code_bytes(L));
    uint32_t *idx = malloc((count ? count : 1) * sizeof *idx);
    if (!idx) return sstc_fail(SSTC_ENOMEM, "sstc_sst_layer_set_ternary: out of memory");
    int rc = sstc_codes_from_ternary(T, L->out, (int)fan_in, L->N, L->K, idx);
    if (!rc) rc = sstc_pack_codes(idx, count, sstc_code_bits(L->N, L->K), L->codes);
    free(idx);
    return rc;
}

int sstc_sst_file_version(const sstc_sst_model *m) {
    if (m && m->eval_flags) return 3;
    int v = 1;
    for (int i = 0; m && m->layers && i < m->n_layers; i++) {
        const record_kind *k = kind_of(m->layers[i].kind);
        if (k && k->version > v) v = k->version;
    }
    return v;
}

/* The output shape of a record in range, or a message naming the problem. */
static int too_large(shape3 s) {
    return s.c > MAX_CHANNELS || s.h > MAX_ACTIVATION || s.w > MAX_ACTIVATION || s.h * s.w > MAX_ACTIVATION ||
           s.c * (s.h * s.w) > MAX_ACTIVATION;
}

int sstc_sst_shapes(const sstc_sst_model *m, int (*shapes)[3]) {
    if (!m || !shapes || (m->n_layers && !m->layers)) return sstc_fail(SSTC_EINVAL, "sstc_sst_shapes: NULL argument");
    if (m->in_c < 1 || m->in_h < 1 || m->in_w < 1)
        return sstc_fail(SSTC_EINVAL, "sst: input %dx%dx%d, expected every dimension >= 1", m->in_c, m->in_h, m->in_w);
    shape3 *outs = malloc(((size_t)m->n_layers + 1) * sizeof *outs);
    if (!outs) return sstc_fail(SSTC_ENOMEM, "sstc_sst_shapes: out of memory");
    graph g = {{(uint64_t)m->in_c, (uint64_t)m->in_h, (uint64_t)m->in_w}, outs, 0};
    int rc = SSTC_OK;
    for (int i = 0; i < m->n_layers && !rc; i++) {
        const sstc_sst_layer *L = &m->layers[i];
        const record_kind *k = kind_of(L->kind);
        shape_err e;
        g.index = i;
        if (!k) rc = sstc_fail(SSTC_EINVAL, "layer %d: unknown kind %d", i, (int)L->kind);
        else if (k->shape(L, &g, &outs[i], &e)) rc = sstc_fail(SSTC_EFORMAT, "layer %d (%s): %s", i, k->name, e.msg);
        else if (too_large(outs[i]))
            rc = sstc_fail(SSTC_EFORMAT, "layer %d (%s): output %llux%llux%llu is too large", i, k->name,
                           (unsigned long long)outs[i].c, (unsigned long long)outs[i].h, (unsigned long long)outs[i].w);
        else shapes[i][0] = (int)outs[i].c, shapes[i][1] = (int)outs[i].h, shapes[i][2] = (int)outs[i].w;
    }
    free(outs);
    return rc;
}

/* ---- reader ----------------------------------------------------------------- */

/* Record i: its head, its fields, its shape (outs[i]) and its arrays. */
static int read_layer(reader *r, sstc_sst_layer *L, graph *g, shape3 *outs, unsigned version) {
    size_t at = r->off;
    unsigned kind, flags, res;
    int rc;
    if ((rc = rd_u8(r, "layer kind", &kind))) return rc;
    r->kind = (int)kind;
    const record_kind *k = kind_of((int)kind);
    if (!k) return rfail(r, at, "unknown layer kind %u", kind);
    if ((unsigned)k->version > version)
        return rfail(r, at, "%s records need format version %d, the file says version %u", k->name, k->version,
                     version);
    L->kind = (sstc_sst_kind)kind;
    if ((rc = rd_u8(r, "layer flags", &flags)) || (rc = rd_u16(r, "reserved field", &res))) return rc;
    if (flags & ~(unsigned)(FLAG_CODED | FLAG_PER_ROW)) return rfail(r, at + 1, "unknown flags 0x%02x", flags);
    if (flags && !k->weighted) return rfail(r, at + 1, "flags 0x%02x on a layer without weights", flags);
    if ((flags & FLAG_PER_ROW) && !(flags & FLAG_CODED)) return rfail(r, at + 1, "per-row delta on a float layer");
    if (res) return rfail(r, at + 2, "reserved field is %u, expected 0", res);
    L->coded = !!(flags & FLAG_CODED);
    L->per_row_delta = !!(flags & FLAG_PER_ROW);

    if ((rc = k->read(r, L))) return rc;
    shape_err e;
    g->index = r->layer;
    shape3 *s = &outs[r->layer];
    if (k->shape(L, g, s, &e)) return rfail(r, at + e.field, "%s", e.msg);
    if (too_large(*s))
        return rfail(r, at, "output %llux%llux%llu is too large", (unsigned long long)s->c, (unsigned long long)s->h,
                     (unsigned long long)s->w);
    return k->read_data ? k->read_data(r, L) : SSTC_OK;
}

int sstc_sst_read_mem(const void *buf, size_t n, sstc_sst_model **out) {
    if (!out || (!buf && n)) return sstc_fail(SSTC_EINVAL, "sstc_sst_read_mem: NULL argument");
    *out = NULL;
    reader r = {.p = buf, .n = n, .layer = -1};
    if (n < 4) return rfail(&r, 0, "truncated: %zu bytes, a .sst file has at least %d", n, HEADER_BYTES + CRC_BYTES);
    if (memcmp(r.p, MAGIC, 4)) return rfail(&r, 0, "wrong magic: not a .sst file");
    if (n < HEADER_BYTES + CRC_BYTES)
        return rfail(&r, n, "truncated: %zu bytes, a .sst file has at least %d", n, HEADER_BYTES + CRC_BYTES);
    uint32_t version = le32(r.p + 4);
    if (version < 1 || version > SSTC_SST_VERSION)
        return rfail(&r, 4, "unsupported version %u (this reader reads versions 1 to %d)", version, SSTC_SST_VERSION);
    uint64_t total = le64(r.p + 8);
    if (total > n)
        return rfail(&r, n, "truncated: the header announces %llu bytes, the file has %zu", (unsigned long long)total, n);
    if (total < n)
        return rfail(&r, total, "%zu bytes of trailing data after the %llu the header announces", n - (size_t)total,
                     (unsigned long long)total);
    uint32_t stored = le32(r.p + n - CRC_BYTES);
    uint32_t crc = crc_of(r.p, n - CRC_BYTES);
    if (crc != stored)
        return rfail(&r, n - CRC_BYTES, "checksum mismatch: stored 0x%08x, computed 0x%08x", stored, crc);
    r.n = n - CRC_BYTES; /* layers may not run into the checksum */
    r.off = 16;
    uint32_t nl = 0, ic = 0, ih = 0, iw = 0, classes = 0;
    rd_u32(&r, "layer count", &nl);
    rd_u32(&r, "input channels", &ic);
    rd_u32(&r, "input height", &ih);
    rd_u32(&r, "input width", &iw);
    rd_u32(&r, "class count", &classes);
    float pre[2][IN_CHANNELS_STORED]; /* input mean[4], then std[4] */
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < IN_CHANNELS_STORED; c++) {
            uint32_t u = 0;
            rd_u32(&r, "input preprocessing", &u);
            memcpy(&pre[k][c], &u, 4);
        }
    uint32_t eval_flags = 0;
    if (version >= 3) {
        rd_u32(&r, "evaluation flags", &eval_flags);
        if (eval_flags & ~SSTC_SST_EVAL_KNOWN)
            return rfail(&r, HEADER_BYTES, "unknown evaluation flags 0x%08x (known: 0x%08x, test-time flip averaging)",
                         eval_flags, SSTC_SST_EVAL_KNOWN);
    }
    if (nl < 1 || nl > MAX_LAYERS) return rfail(&r, 16, "%u layers, expected 1..%u", nl, MAX_LAYERS);
    if (nl > (r.n - r.off) / 4)
        return rfail(&r, 16, "%u layers cannot fit in the %zu bytes that follow the header", nl, r.n - r.off);
    if (ic < 1 || ic > MAX_CHANNELS) return rfail(&r, 20, "input channels %u, expected 1..%u", ic, MAX_CHANNELS);
    if (ih < 1 || ih > MAX_SPATIAL) return rfail(&r, 24, "input height %u, expected 1..%u", ih, MAX_SPATIAL);
    if (iw < 1 || iw > MAX_SPATIAL) return rfail(&r, 28, "input width %u, expected 1..%u", iw, MAX_SPATIAL);
    if ((uint64_t)ic * ih * iw > MAX_ACTIVATION) return rfail(&r, 20, "input %ux%ux%u is too large", ic, ih, iw);
    if (classes < 1 || classes > MAX_CHANNELS) return rfail(&r, 32, "%u classes, expected 1..%u", classes, MAX_CHANNELS);

    for (int k = 0; k < 2; k++)
        for (int c = 0; c < IN_CHANNELS_STORED; c++) {
            size_t at = 36 + 4 * (size_t)(k * IN_CHANNELS_STORED + c);
            float v = pre[k][c];
            const char *what = k ? "input std" : "input mean";
            uint32_t bits;
            memcpy(&bits, &v, 4);
            /* bit-exact (-0.0 is not 0.0 here), so that what is read writes back identically */
            if ((uint32_t)c >= ic && bits != (k ? 0x3f800000u : 0u))
                return rfail(&r, at, "%s[%d] = %g for an unused channel (the input has %u), expected %d", what, c, v,
                             ic, k);
            if (!isfinite(v) || (k && !(v > 0)))
                return rfail(&r, at, "%s[%d] is %g, expected a %s number", what, c, v,
                             k ? "positive finite" : "finite");
        }

    sstc_sst_model *m = sstc_sst_model_new((int)nl);
    shape3 *outs = malloc((size_t)nl * sizeof *outs);
    if (!m || !outs) {
        sstc_sst_free(m);
        free(outs);
        return sstc_fail(SSTC_ENOMEM, "sst: out of memory for %u layers", nl);
    }
    m->in_c = (int)ic, m->in_h = (int)ih, m->in_w = (int)iw, m->num_classes = (int)classes;
    m->eval_flags = eval_flags;
    memcpy(m->in_mean, pre[0], sizeof m->in_mean);
    memcpy(m->in_std, pre[1], sizeof m->in_std);
    graph g = {{ic, ih, iw}, outs, 0};
    int rc = SSTC_OK;
    for (uint32_t i = 0; i < nl && !rc; i++) {
        r.layer = (int)i;
        r.kind = 0;
        rc = read_layer(&r, &m->layers[i], &g, outs, version);
    }
    if (!rc && r.off != r.n) {
        r.layer = -1;
        rc = rfail(&r, r.off, "lengths do not add up: the layers end at byte %zu but the checksum is at byte %zu", r.off,
                   r.n);
    }
    if (!rc && volume(outs[nl - 1]) != classes) {
        shape3 s = outs[nl - 1];
        r.layer = (int)nl - 1;
        rc = rfail(&r, r.off, "the network outputs %llux%llux%llu values, the header says %u classes",
                   (unsigned long long)s.c, (unsigned long long)s.h, (unsigned long long)s.w, classes);
    }
    if (!rc && (int)version != sstc_sst_file_version(m)) {
        r.layer = -1;
        rc = rfail(&r, 4, "version %u, but version %d is what this file needs (a file is version 3 exactly when "
                          "its evaluation flags are not 0, else version 2 exactly when it has a shortcut, route or "
                          "globalavgpool record)",
                   version, sstc_sst_file_version(m));
    }
    free(outs);
    if (rc) {
        sstc_sst_free(m);
        return rc;
    }
    *out = m;
    return SSTC_OK;
}

int sstc_sst_read(const char *path, sstc_sst_model **out) {
    if (!path || !out) return sstc_fail(SSTC_EINVAL, "sstc_sst_read: NULL argument");
    *out = NULL;
    uint8_t *buf;
    size_t n;
    if (sstc_read_file(path, (size_t)1 << 32, ".sst file", &buf, &n)) return sstc_errcode();
    int rc = sstc_sst_read_mem(buf, n, out);
    free(buf);
    if (rc) return sstc_fail_prefix(rc, "%s: ", path);
    return SSTC_OK;
}

/* ---- writer ----------------------------------------------------------------- */

/* The checks that make serializing safe: kinds, field ranges and arrays. The
 * rest (shapes, references, values, codes) is checked by parsing the result. */
static int check_fields(const sstc_sst_model *m) {
    if (!m) return sstc_fail(SSTC_EINVAL, "sst: NULL model");
    if (m->n_layers < 1 || (unsigned)m->n_layers > MAX_LAYERS || !m->layers)
        return sstc_fail(SSTC_EINVAL, "sst: %d layers, expected 1..%u", m->n_layers, MAX_LAYERS);
    if (m->in_c < 1 || m->in_h < 1 || m->in_w < 1 || m->num_classes < 1)
        return sstc_fail(SSTC_EINVAL, "sst: input %dx%dx%d and %d classes must all be >= 1", m->in_c, m->in_h,
                         m->in_w, m->num_classes);
    if (m->eval_flags & ~SSTC_SST_EVAL_KNOWN)
        return sstc_fail(SSTC_EINVAL, "sst: unknown evaluation flags 0x%08x", m->eval_flags);
    for (int c = 0; c < m->in_c && c < IN_CHANNELS_STORED; c++)
        if (!isfinite(m->in_mean[c]) || !isfinite(m->in_std[c]) || !(m->in_std[c] > 0))
            return sstc_fail(SSTC_EINVAL, "sst: input channel %d: mean %g, std %g; expected finite values, std > 0", c,
                             m->in_mean[c], m->in_std[c]);
    for (int i = 0; i < m->n_layers; i++) {
        const sstc_sst_layer *L = &m->layers[i];
        const record_kind *k = kind_of(L->kind);
        if (!k) return sstc_fail(SSTC_EINVAL, "layer %d: unknown kind %d", i, (int)L->kind);
        if ((L->coded || L->per_row_delta) && !k->weighted)
            return sstc_fail(SSTC_EINVAL, "layer %d (%s): only fc and conv layers can be coded", i, k->name);
        if (L->per_row_delta && !L->coded)
            return sstc_fail(SSTC_EINVAL, "layer %d (%s): per-row delta on a float layer", i, k->name);
        char msg[256];
        if (k->check(L, i, msg, sizeof msg)) return sstc_fail(SSTC_EINVAL, "layer %d (%s): %s", i, k->name, msg);
    }
    return SSTC_OK;
}

size_t sstc_sst_size(const sstc_sst_model *m) {
    if (!m || !m->layers) return 0;
    size_t n = HEADER_BYTES + CRC_BYTES + (m->eval_flags ? 4 : 0);
    for (int i = 0; i < m->n_layers; i++) {
        const record_kind *k = kind_of(m->layers[i].kind);
        n += k ? k->size(&m->layers[i]) : RECORD_HEAD;
    }
    return n;
}

static void serialize(const sstc_sst_model *m, uint8_t *buf, size_t size) {
    writer w = {buf, 0};
    memcpy(w.p, MAGIC, 4);
    w.off = 4;
    w_u32(&w, (uint32_t)sstc_sst_file_version(m));
    w_u64(&w, size);
    w_u32(&w, (uint32_t)m->n_layers);
    w_u32(&w, (uint32_t)m->in_c);
    w_u32(&w, (uint32_t)m->in_h);
    w_u32(&w, (uint32_t)m->in_w);
    w_u32(&w, (uint32_t)m->num_classes);
    /* channels the input does not have are written as the identity (0, 1) */
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < IN_CHANNELS_STORED; c++) {
            float v = c < m->in_c ? (k ? m->in_std[c] : m->in_mean[c]) : (k ? 1.0f : 0.0f);
            w_floats(&w, &v, 1);
        }
    if (m->eval_flags) w_u32(&w, m->eval_flags);
    for (int i = 0; i < m->n_layers; i++) {
        const sstc_sst_layer *L = &m->layers[i];
        w_u8(&w, (unsigned)L->kind);
        w_u8(&w, (L->coded ? FLAG_CODED : 0) | (L->per_row_delta ? FLAG_PER_ROW : 0));
        w_u16(&w, 0);
        kind_of(L->kind)->write(&w, L);
    }
    w_u32(&w, crc_of(w.p, w.off));
}

/* Serializes without the deep checks; *buf is malloc'ed. */
static int build(const sstc_sst_model *m, uint8_t **buf, size_t *size) {
    int rc = check_fields(m);
    if (rc) return rc;
    size_t n = sstc_sst_size(m);
    uint8_t *b = malloc(n);
    if (!b) return sstc_fail(SSTC_ENOMEM, "sst: out of memory for a %zu-byte image", n);
    serialize(m, b, n);
    *buf = b;
    *size = n;
    return SSTC_OK;
}

int sstc_sst_validate(const sstc_sst_model *m) {
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = build(m, &buf, &n);
    if (rc) return rc;
    sstc_sst_model *back = NULL;
    rc = sstc_sst_read_mem(buf, n, &back);
    sstc_sst_free(back);
    free(buf);
    return rc;
}

int sstc_sst_write_mem(const sstc_sst_model *m, uint8_t **buf, size_t *size) {
    if (!buf || !size) return sstc_fail(SSTC_EINVAL, "sstc_sst_write_mem: NULL argument");
    *buf = NULL;
    *size = 0;
    uint8_t *b = NULL;
    size_t n = 0;
    int rc = build(m, &b, &n);
    if (rc) return rc;
    sstc_sst_model *back = NULL;
    rc = sstc_sst_read_mem(b, n, &back);
    sstc_sst_free(back);
    if (rc) {
        free(b);
        return sstc_fail_prefix(rc, "sst: refusing to write an invalid model: ");
    }
    *buf = b;
    *size = n;
    return SSTC_OK;
}

int sstc_sst_write(const char *path, const sstc_sst_model *m) {
    if (!path) return sstc_fail(SSTC_EINVAL, "sstc_sst_write: NULL path");
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = sstc_sst_write_mem(m, &buf, &n);
    if (rc) return sstc_fail_prefix(rc, "%s: ", path);
    rc = sstc_write_atomic(path, buf, n);
    free(buf);
    if (rc) return rc;
    return SSTC_OK;
}
