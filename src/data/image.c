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

#include "sstc/error.h"

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
    if ((unsigned long long)w * h > SSTC_MAX_IMAGE_PIXELS) {
        snprintf(src->msg, sizeof src->msg, "image is %ux%u, larger than the %d-pixel limit", (unsigned)w,
                 (unsigned)h, SSTC_MAX_IMAGE_PIXELS);
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
        const char *why = NULL;
        int w, h, c;
        uint8_t *px = data_stb_decode(b, len, &w, &h, &c, &why);
        if (px) {
            out->w = w, out->h = h, out->c = c, out->pixels = px;
            return 0;
        }
        return sstc_fail(rc, "%s: corrupt or unreadable PNG (libpng: %s; stb_image: %s)", name, src.msg,
                         why ? why : "failed");
    }
    if (is_jpeg(b, len)) {
        const char *why = NULL;
        int w, h, c;
        uint8_t *px = data_stb_decode(b, len, &w, &h, &c, &why);
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
    int rc = data_read_file(path, &buf, &len);
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
