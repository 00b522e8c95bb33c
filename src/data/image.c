/* Image decoding (PNG through libpng, JPEG through stb_image) and PNG writing.
 * Every decoder works from a memory buffer so that the folder loader can read
 * files in parallel and the fuzz target can feed bytes straight in. */
#include "data/internal.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "sstc/error.h"

long sstc_data_max_image_pixels = SSTC_MAX_IMAGE_PIXELS;

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    char msg[160];
} png_source;

static void png_mem_read(png_structp png, png_bytep out, png_size_t n) {
    png_source *src = png_get_io_ptr(png);
    if (n > src->len - src->pos) {
        snprintf(src->msg, sizeof src->msg, "file ends at byte %zu, in the middle of the image data", src->len);
        png_error(png, src->msg);
    }
    memcpy(out, src->buf + src->pos, n);
    src->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    png_source *src = png_get_error_ptr(png);
    if (msg != src->msg) snprintf(src->msg, sizeof src->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* Returns 0, or SSTC_EFORMAT with src->msg set. */
static int png_decode(png_source *src, sstc_image *out) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, src, png_on_error, png_on_warning);
    if (!png) {
        snprintf(src->msg, sizeof src->msg, "libpng could not start");
        return SSTC_ENOMEM;
    }
    png_infop info = png_create_info_struct(png);
    /* volatile: modified between setjmp and a possible longjmp. */
    uint8_t *volatile px = NULL;
    png_bytep *volatile rows = NULL;
    if (!info || setjmp(png_jmpbuf(png))) {
        free(px);
        free(rows);
        png_destroy_read_struct(&png, info ? &info : NULL, NULL);
        if (!src->msg[0]) snprintf(src->msg, sizeof src->msg, "libpng failed");
        return SSTC_EFORMAT;
    }
    png_set_read_fn(png, src, png_mem_read);
    png_set_user_limits(png, SSTC_MAX_IMAGE_SIDE, SSTC_MAX_IMAGE_SIDE);
    png_set_chunk_malloc_max(png, 8u << 20);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, color, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    if ((unsigned long long)w * h > (unsigned long long)sstc_data_max_image_pixels) {
        snprintf(src->msg, sizeof src->msg, "image is %ux%u, larger than the %ld-pixel limit", (unsigned)w,
                 (unsigned)h, sstc_data_max_image_pixels);
        png_error(png, src->msg);
    }
    if (depth == 16) png_set_strip_16(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int c = png_get_channels(png, info);
    if (c != 1 && c != 3) {
        snprintf(src->msg, sizeof src->msg, "unexpected %d channels after conversion", c);
        png_error(png, src->msg);
    }
    if (png_get_rowbytes(png, info) != (size_t)w * (size_t)c) {
        snprintf(src->msg, sizeof src->msg, "unexpected row size");
        png_error(png, src->msg);
    }
    px = malloc((size_t)w * h * (size_t)c);
    rows = malloc(sizeof(png_bytep) * h);
    if (!px || !rows) {
        snprintf(src->msg, sizeof src->msg, "out of memory for a %ux%u image", (unsigned)w, (unsigned)h);
        png_error(png, src->msg);
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = px + (size_t)y * w * (size_t)c;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->w = (int)w;
    out->h = (int)h;
    out->c = c;
    out->pixels = px;
    return 0;
}

/* A pass over the JPEG's marker segments (including those between the scans
 * of a progressive JPEG) before stb_image sees the file, for two things
 * stb_image does not do: it builds Huffman tables without checking that a DHT
 * segment declares at most 256 codes (version 2.27 then writes past its
 * table), and it decodes a truncated file as if the missing data were zeros.
 * Anything else malformed is left for stb_image to report. Returns NULL when
 * fine, else the reason, with the byte offset in *where. */
static const char *jpeg_precheck(const uint8_t *b, size_t len, size_t *where) {
    static const char *truncated = "file ends without the end-of-image marker (ff d9): truncated";
    size_t pos = 2;
    *where = len;
    for (;;) {
        /* stb_image skips stray bytes between segments looking for the next
         * marker, so this does too. */
        while (pos < len && b[pos] != 0xff) pos++;
        while (pos + 1 < len && b[pos + 1] == 0xff) pos++; /* fill bytes */
        if (pos + 1 >= len) return truncated;
        uint8_t m = b[pos + 1];
        if (m == 0xd9) return NULL;                  /* end of image */
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) { /* no length */
            pos += 2;
            continue;
        }
        if (pos + 4 > len) return truncated;
        size_t seg = (size_t)b[pos + 2] << 8 | b[pos + 3];
        size_t start = pos + 4, end = pos + 2 + seg;
        if (seg < 2) return NULL;
        if (m == 0xc4) {
            size_t p = start;
            while (p < end && p < len) {
                int n = 0; /* stb_image reads bytes past the end of the file as zeros */
                for (size_t i = 1; i <= 16 && p + i < len; i++) n += b[p + i];
                if (n > 256) {
                    *where = p;
                    return "Huffman table declares more than 256 codes";
                }
                p += 17 + (size_t)n;
            }
        }
        pos = end;
        if (m == 0xda) {
            /* Entropy-coded data: skip to the next marker that is not a
             * stuffed byte (ff 00) or a restart marker. */
            while (pos + 1 < len) {
                if (b[pos] == 0xff && b[pos + 1] != 0 && !(b[pos + 1] >= 0xd0 && b[pos + 1] <= 0xd7) &&
                    b[pos + 1] != 0xff)
                    break;
                pos++;
            }
        }
    }
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Before a PNG goes to stb_image: stb_image allocates whatever a chunk's
 * length field claims and inflates the image data without a size limit, so
 * a 100-byte file can make it ask for gigabytes. Check the chunk framing,
 * the image size, and that the compressed data inflates to no more than the
 * header's size implies. Returns NULL when fine, else the reason. */
static const char *png_precheck(const uint8_t *b, size_t len) {
    size_t pos = 8;
    uint64_t raw_max = 0, inflated = 0;
    int seen_ihdr = 0, done = 0;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit(&zs) != Z_OK) return "zlib could not start";
    const char *why = NULL;
    uint8_t scratch[16384];
    while (!why && !done) {
        if (pos + 12 > len) {
            why = "file ends before the IEND chunk";
            break;
        }
        uint32_t n = be32(b + pos);
        const uint8_t *type = b + pos + 4, *data = b + pos + 8;
        if (n > len - pos - 12) {
            why = "a chunk is longer than the rest of the file";
            break;
        }
        if (!seen_ihdr) {
            if (memcmp(type, "IHDR", 4) || n != 13) {
                why = "the first chunk is not a 13-byte IHDR";
                break;
            }
            uint64_t w = be32(data), h = be32(data + 4), depth = data[8];
            if (w == 0 || h == 0 || w * h > (uint64_t)sstc_data_max_image_pixels) {
                why = "image size is zero or too large";
                break;
            }
            /* Interlacing adds at most one filter byte per row per pass. */
            raw_max = h * (1 + (w * 4 * (depth > 8 ? 2 : 1))) * 2 + 4096;
            seen_ihdr = 1;
        } else if (!memcmp(type, "IDAT", 4)) {
            zs.next_in = (Bytef *)data;
            zs.avail_in = n;
            while (zs.avail_in && !why) {
                zs.next_out = scratch;
                zs.avail_out = sizeof scratch;
                int r = inflate(&zs, Z_NO_FLUSH);
                inflated += sizeof scratch - zs.avail_out;
                if (inflated > raw_max) why = "compressed image data inflates to more than the image size";
                else if (r == Z_STREAM_END) break;
                else if (r != Z_OK && r != Z_BUF_ERROR) why = "corrupt compressed image data";
                else if (r == Z_BUF_ERROR && zs.avail_out) break;
            }
        } else if (!memcmp(type, "IEND", 4)) {
            done = 1;
        }
        pos += 12 + (size_t)n;
    }
    inflateEnd(&zs);
    return why;
}

static int is_png(const uint8_t *b, size_t len) { return len >= 8 && !png_sig_cmp(b, 0, 8); }
static int is_jpeg(const uint8_t *b, size_t len) { return len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff; }

int sstc_image_decode(const void *buf, size_t len, const char *name, sstc_image *out) {
    const uint8_t *b = buf;
    memset(out, 0, sizeof *out);
    if (!name) name = "image";
    if (is_png(b, len)) {
        png_source src = {b, len, 0, {0}};
        int rc = png_decode(&src, out);
        if (rc == 0) return 0;
        /* stb_image takes PNGs that libpng refuses over a structural detail
         * (chunk order, extra data), but not damaged ones: stb_image skips
         * the CRC and Adler-32 checks that caught the damage. */
        if (strstr(src.msg, "CRC") || strstr(src.msg, "data check") || rc == SSTC_ENOMEM)
            return sstc_fail(rc, "%s: corrupt PNG (libpng: %s)", name, src.msg);
        const char *why = png_precheck(b, len);
        int w, h, c;
        uint8_t *px = why ? NULL : sstc_data_stb_decode(b, len, &w, &h, &c, &why);
        if (px) {
            out->w = w, out->h = h, out->c = c, out->pixels = px;
            return 0;
        }
        return sstc_fail(rc, "%s: corrupt or unreadable PNG (libpng: %s; stb_image fallback: %s)", name, src.msg,
                         why ? why : "failed");
    }
    if (is_jpeg(b, len)) {
        size_t at = 0;
        const char *bad = jpeg_precheck(b, len, &at);
        if (bad) return sstc_fail(SSTC_EFORMAT, "%s: corrupt JPEG at byte offset %zu: %s", name, at, bad);
        const char *why = NULL;
        int w, h, c;
        uint8_t *px = sstc_data_stb_decode(b, len, &w, &h, &c, &why);
        if (!px)
            return sstc_fail(SSTC_EFORMAT, "%s: corrupt or unreadable JPEG (stb_image: %s)", name,
                             why ? why : "failed");
        out->w = w, out->h = h, out->c = c, out->pixels = px;
        return 0;
    }
    if (len == 0) return sstc_fail(SSTC_EFORMAT, "%s: file is empty, expected a PNG or JPEG image", name);
    return sstc_fail(SSTC_EFORMAT,
                     "%s: not a PNG or JPEG image (first bytes %02x %02x %02x; expected the PNG signature "
                     "89 50 4e 47 or the JPEG marker ff d8 ff)",
                     name, b[0], len > 1 ? b[1] : 0, len > 2 ? b[2] : 0);
}

int sstc_image_read(const char *path, sstc_image *out) {
    uint8_t *buf;
    size_t len;
    memset(out, 0, sizeof *out);
    int rc = sstc_data_read_file(path, &buf, &len);
    if (rc) return rc;
    rc = sstc_image_decode(buf, len, path, out);
    free(buf);
    return rc;
}

void sstc_image_free(sstc_image *img) {
    if (!img) return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

int sstc_image_write_png(const char *path, int w, int h, int c, const uint8_t *hwc) {
    if (w <= 0 || h <= 0 || (c != 1 && c != 3 && c != 4) || !hwc)
        return sstc_fail(SSTC_EINVAL, "%s: cannot write a %dx%d PNG with %d channels (expected 1, 3 or 4)", path,
                         w, h, c);
    FILE *f = fopen(path, "wb");
    if (!f) return sstc_fail(SSTC_EIO, "%s: cannot create: %s", path, strerror(errno));
    png_source err = {NULL, 0, 0, {0}};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        remove(path);
        return sstc_fail(SSTC_EIO, "%s: cannot write PNG: %s", path, err.msg[0] ? err.msg : "libpng failed");
    }
    png_init_io(png, f);
    int color = c == 1 ? PNG_COLOR_TYPE_GRAY : c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, color, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(hwc + (size_t)y * w * c));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) {
        remove(path);
        return sstc_fail(SSTC_EIO, "%s: write failed: %s", path, strerror(errno));
    }
    return 0;
}
