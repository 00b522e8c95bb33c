/* Writes the small seed corpus in fuzz/corpus/ (checked in; rerun only to
 * change it):
 *   cc -std=c11 -D_GNU_SOURCE -I/usr/include/libpng16 -I/usr/include/stb \
 *      fuzz/make_corpus.c -o build/make_corpus -lpng16 -lz -lm && build/make_corpus fuzz/corpus
 * Seeds cover every colour type and bit depth the PNG path converts, gray and
 * RGB baseline JPEGs, plain and gzip IDX pairs (1 and 3 channels), and a
 * CIFAR-10 record. */
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb_image_write.h>

static const char *root;

static void path_of(char *out, size_t n, const char *target, const char *name) {
    snprintf(out, n, "%s/%s", root, target);
    mkdir(out, 0777);
    snprintf(out, n, "%s/%s/%s", root, target, name);
}

static void write_bytes(const char *target, const char *name, const void *p, size_t n) {
    char path[512];
    path_of(path, sizeof path, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
        perror(path);
        exit(1);
    }
}

/* A PNG of any colour type/depth: rows of w*channels samples, 8 or 16 bit. */
static void png_seed(const char *name, int w, int h, int color, int depth, int interlace) {
    char path[512];
    path_of(path, sizeof path, "fuzz_image", name);
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (!f || !png || !info || setjmp(png_jmpbuf(png))) {
        fprintf(stderr, "%s: failed\n", path);
        exit(1);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color, interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
        png_set_PLTE(png, info, pal, 4);
        png_byte trns[1] = {128};
        png_set_tRNS(png, info, trns, 1, NULL);
    }
    png_write_info(png, info);
    int ch = color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_PALETTE ? 1
             : color == PNG_COLOR_TYPE_GRAY_ALPHA                           ? 2
             : color == PNG_COLOR_TYPE_RGB                                  ? 3
                                                                            : 4;
    size_t rowbytes = ((size_t)w * ch * depth + 7) / 8;
    png_bytep *rows = malloc(sizeof(png_bytep) * h);
    for (int y = 0; y < h; y++) {
        rows[y] = malloc(rowbytes);
        for (size_t i = 0; i < rowbytes; i++) rows[y][i] = (png_byte)(color == PNG_COLOR_TYPE_PALETTE && depth == 8 ? (y + i) % 4 : 37 * y + 11 * i);
    }
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    for (int y = 0; y < h; y++) free(rows[y]);
    free(rows);
}

static void jpeg_seed(const char *name, int w, int h, int c) {
    char path[512];
    path_of(path, sizeof path, "fuzz_image", name);
    uint8_t *px = malloc((size_t)w * h * c);
    for (int i = 0; i < w * h * c; i++) px[i] = (uint8_t)(i * 7 + (i / (w * c)) * 13);
    if (!stbi_write_jpg(path, w, h, c, px, 90)) {
        fprintf(stderr, "%s: failed\n", path);
        exit(1);
    }
    free(px);
}

/* A one-component baseline JPEG (stb_image_write only writes three): 16x8,
 * two DC-only blocks at quantization 1. */
static void gray_jpeg_seed(const char *name) {
    uint8_t f[256];
    size_t n = 0;
    static const uint8_t head[] = {0xff, 0xd8, 0xff, 0xdb, 0x00, 0x43, 0x00};
    static const uint8_t rest[] = {
        0xff, 0xc0, 0x00, 0x0b, 8,    0x00, 0x08, 0x00, 0x10, 1, 1, 0x11, 0,                         /* SOF0 */
        0xff, 0xc4, 0x00, 0x15, 0x00, 0,    2,    0,    0,    0, 0, 0,    0, 0, 0, 0, 0, 0, 0, 0, 0, /* DHT DC */
        0x0a, 0x0b,                                                                                  /*  */
        0xff, 0xc4, 0x00, 0x14, 0x10, 1,    0,    0,    0,    0, 0, 0,    0, 0, 0, 0, 0, 0, 0, 0, 0, /* DHT AC */
        0x00,                                                                                        /*  */
        0xff, 0xda, 0x00, 0x08, 1,    1,    0x00, 0,    63,   0,                                     /* SOS */
        0x20, 0x02, 0xff, 0x00, 0xdf, 0xff, 0xd9};                                                   /* data, EOI */
    memcpy(f, head, sizeof head), n = sizeof head;
    memset(f + n, 1, 64), n += 64;
    memcpy(f + n, rest, sizeof rest), n += sizeof rest;
    write_bytes("fuzz_image", name, f, n);
}

static size_t idx_header(uint8_t *p, int ndims, const uint32_t *dims) {
    p[0] = 0, p[1] = 0, p[2] = 8, p[3] = (uint8_t)ndims;
    for (int i = 0; i < ndims; i++) {
        p[4 + 4 * i] = (uint8_t)(dims[i] >> 24), p[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        p[6 + 4 * i] = (uint8_t)(dims[i] >> 8), p[7 + 4 * i] = (uint8_t)dims[i];
    }
    return 4 + 4 * (size_t)ndims;
}

static size_t gzip_mem(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    zs.next_in = (Bytef *)in, zs.avail_in = (uInt)n, zs.next_out = out, zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    size_t len = cap - zs.avail_out;
    deflateEnd(&zs);
    return len;
}

/* fuzz_idx input: 2-byte split, images file, labels file. */
static void idx_seed(const char *name, int n, int h, int w, int c, int gz) {
    uint8_t img[1024], lab[64], a[1100], b[128], out[2400];
    uint32_t dims[4] = {(uint32_t)n, (uint32_t)h, (uint32_t)w, (uint32_t)c};
    size_t li = idx_header(img, c > 1 ? 4 : 3, dims);
    for (int i = 0; i < n * h * w * c; i++) img[li++] = (uint8_t)(i * 29);
    uint32_t ldims[1] = {(uint32_t)n};
    size_t ll = idx_header(lab, 1, ldims);
    for (int i = 0; i < n; i++) lab[ll++] = (uint8_t)(i % 10);
    const uint8_t *pi = img, *pl = lab;
    if (gz) {
        li = gzip_mem(img, li, a, sizeof a), pi = a;
        ll = gzip_mem(lab, ll, b, sizeof b), pl = b;
    }
    out[0] = (uint8_t)(li & 0xff), out[1] = (uint8_t)(li >> 8);
    memcpy(out + 2, pi, li);
    memcpy(out + 2 + li, pl, ll);
    write_bytes("fuzz_idx", name, out, 2 + li + ll);
}

int main(int argc, char **argv) {
    root = argc > 1 ? argv[1] : "fuzz/corpus";
    mkdir(root, 0777);
    png_seed("gray8.png", 7, 5, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE);
    png_seed("gray1.png", 9, 3, PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE);
    png_seed("gray16.png", 4, 4, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE);
    png_seed("gray_alpha.png", 3, 3, PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE);
    png_seed("rgb.png", 5, 3, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE);
    png_seed("rgba16.png", 3, 2, PNG_COLOR_TYPE_RGB_ALPHA, 16, PNG_INTERLACE_NONE);
    png_seed("palette.png", 6, 4, PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE);
    png_seed("interlaced.png", 9, 9, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7);
    jpeg_seed("gray3.jpg", 8, 8, 1); /* gray data, three components */
    gray_jpeg_seed("gray1.jpg");
    jpeg_seed("rgb.jpg", 16, 9, 3);
    idx_seed("pair_gray", 3, 4, 5, 1, 0);
    idx_seed("pair_gray_gz", 3, 4, 5, 1, 1);
    idx_seed("pair_rgb", 2, 3, 3, 3, 0);
    uint8_t rec[3073];
    rec[0] = 3;
    for (int i = 1; i < 3073; i++) rec[i] = (uint8_t)(i * 3);
    write_bytes("fuzz_cifar", "one_record.bin", rec, sizeof rec);
    return 0;
}
