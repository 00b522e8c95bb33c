#include "data_helpers.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <zlib.h>

#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb_image_write.h>

char *th_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/sstc-test-XXXXXX", base && *base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(buf), "mkdtemp: %s", strerror(errno));
    return strdup(buf);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void th_rmtree(const char *path) {
    if (path) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *th_path(const char *fmt, ...) {
    static char ring[8][4096];
    static int next;
    char *b = ring[next++ % 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, 4096, fmt, ap);
    va_end(ap);
    return b;
}

void th_mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0777);
            *p = '/';
        }
    cr_assert(mkdir(buf, 0777) == 0 || errno == EEXIST, "mkdir %s: %s", buf, strerror(errno));
}

void th_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

uint8_t *th_read(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

uint8_t th_pixel(int i, int ch, int y, int x) { return (uint8_t)(i * 37 + ch * 101 + y * 13 + x * 7 + (x * y) % 5); }

void th_pattern_hwc(uint8_t *hwc, int i, int w, int h, int c) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++) hwc[(y * w + x) * c + ch] = th_pixel(i, ch, y, x);
}

void th_write_png(const char *path, int w, int h, int c, const uint8_t *hwc) {
    cr_assert(stbi_write_png(path, w, h, c, hwc, w * c), "cannot write %s", path);
}

typedef struct {
    uint8_t *out;
    size_t cap, n;
    uint32_t acc;
    int bits;
} bitw;

static void put_byte(bitw *b, uint8_t v) {
    cr_assert_lt(b->n, b->cap, "JPEG buffer too small");
    b->out[b->n++] = v;
}

static void put_bits(bitw *b, uint32_t v, int n) {
    for (int i = n - 1; i >= 0; i--) {
        b->acc = b->acc << 1 | ((v >> i) & 1);
        if (++b->bits == 8) {
            put_byte(b, (uint8_t)b->acc);
            if ((uint8_t)b->acc == 0xff) put_byte(b, 0x00); /* byte stuffing */
            b->acc = 0, b->bits = 0;
        }
    }
}

size_t th_jpeg_blocks(uint8_t *out, size_t cap, int w, int h, int c, const uint8_t *hwc) {
    cr_assert(w % 8 == 0 && h % 8 == 0 && (c == 1 || c == 3));
    bitw b = {out, cap, 0, 0, 0};
    static const uint8_t soi[] = {0xff, 0xd8};
    for (size_t i = 0; i < sizeof soi; i++) put_byte(&b, soi[i]);
    /* DQT: table 0, all ones */
    uint8_t dqt[5] = {0xff, 0xdb, 0x00, 0x43, 0x00};
    for (int i = 0; i < 5; i++) put_byte(&b, dqt[i]);
    for (int i = 0; i < 64; i++) put_byte(&b, 1);
    /* SOF0; component ids 'R','G','B' tell decoders the data is RGB, not YCbCr */
    uint8_t sof[8] = {0xff, 0xc0, 0, (uint8_t)(8 + 3 * c), 8, (uint8_t)(h >> 8), (uint8_t)h, (uint8_t)(w >> 8)};
    for (int i = 0; i < 8; i++) put_byte(&b, sof[i]);
    put_byte(&b, (uint8_t)w);
    put_byte(&b, (uint8_t)c);
    static const uint8_t ids[3] = {'R', 'G', 'B'};
    for (int k = 0; k < c; k++) {
        put_byte(&b, c == 1 ? 1 : ids[k]);
        put_byte(&b, 0x11);
        put_byte(&b, 0);
    }
    /* DHT DC 0: sizes 0..12, all 4-bit codes (symbol s has code s) */
    uint8_t dc[5 + 16 + 13] = {0xff, 0xc4, 0x00, 2 + 1 + 16 + 13, 0x00, 0, 0, 0, 13};
    for (int s = 0; s < 13; s++) dc[5 + 16 + s] = (uint8_t)s;
    for (size_t i = 0; i < sizeof dc; i++) put_byte(&b, dc[i]);
    /* DHT AC 0: end-of-block only, code 0 */
    uint8_t ac[5 + 16 + 1] = {0xff, 0xc4, 0x00, 2 + 1 + 16 + 1, 0x10, 1};
    for (size_t i = 0; i < sizeof ac; i++) put_byte(&b, ac[i]);
    /* SOS */
    uint8_t sos[5] = {0xff, 0xda, 0x00, (uint8_t)(6 + 2 * c), (uint8_t)c};
    for (int i = 0; i < 5; i++) put_byte(&b, sos[i]);
    for (int k = 0; k < c; k++) {
        put_byte(&b, c == 1 ? 1 : ids[k]);
        put_byte(&b, 0x00);
    }
    put_byte(&b, 0), put_byte(&b, 63), put_byte(&b, 0);
    /* One block per component per MCU; DC = 8 * (v - 128), coded as a
     * difference from the component's previous block. */
    int prev[3] = {0, 0, 0};
    for (int by = 0; by < h / 8; by++)
        for (int bx = 0; bx < w / 8; bx++)
            for (int k = 0; k < c; k++) {
                int v = hwc[((by * 8) * w + bx * 8) * c + k];
                int dcv = 8 * (v - 128), diff = dcv - prev[k];
                prev[k] = dcv;
                int mag = diff < 0 ? -diff : diff, size = 0;
                while (mag >> size) size++;
                put_bits(&b, (uint32_t)size, 4);
                if (size) put_bits(&b, (uint32_t)(diff < 0 ? diff + (1 << size) - 1 : diff), size);
                put_bits(&b, 0, 1); /* end of block */
            }
    if (b.bits) put_bits(&b, 0x7f, 8 - b.bits); /* pad with ones */
    put_byte(&b, 0xff);
    put_byte(&b, 0xd9);
    return b.n;
}

void th_write_jpeg_blocks(const char *path, int w, int h, int c, const uint8_t *hwc) {
    size_t cap = 1024 + (size_t)w * h * c;
    uint8_t *buf = malloc(cap);
    size_t n = th_jpeg_blocks(buf, cap, w, h, c, hwc);
    th_write(path, buf, n);
    free(buf);
}

void th_write_idx(const char *path, int gz, int ndims, const uint32_t *dims, const uint8_t *data) {
    uint8_t hdr[4 + 4 * 4] = {0, 0, 0x08, (uint8_t)ndims};
    size_t count = 1;
    for (int i = 0; i < ndims; i++) {
        hdr[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        hdr[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        hdr[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        hdr[7 + 4 * i] = (uint8_t)dims[i];
        count *= dims[i];
    }
    size_t hn = 4 + 4 * (size_t)ndims;
    if (gz) {
        gzFile f = gzopen(path, "wb");
        cr_assert_not_null(f, "cannot create %s", path);
        cr_assert_eq(gzwrite(f, hdr, (unsigned)hn), (int)hn);
        if (count) cr_assert_eq(gzwrite(f, data, (unsigned)count), (int)count);
        cr_assert_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f, "cannot create %s", path);
        cr_assert_eq(fwrite(hdr, 1, hn, f), hn);
        if (count) cr_assert_eq(fwrite(data, 1, count, f), count);
        cr_assert_eq(fclose(f), 0);
    }
}

void th_write_cifar(const char *path, int n, const uint8_t *labels, int first) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    uint8_t rec[3073];
    for (int i = 0; i < n; i++) {
        rec[0] = labels[i];
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++) rec[1 + ch * 1024 + y * 32 + x] = th_pixel(first + i, ch, y, x);
        cr_assert_eq(fwrite(rec, 1, sizeof rec, f), sizeof rec);
    }
    cr_assert_eq(fclose(f), 0);
}

int th_has(const char *haystack, const char *needle) { return haystack && strstr(haystack, needle) != NULL; }

int th_run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
