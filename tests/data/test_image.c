/* Image decoding: PNG (libpng) and JPEG (stb_image) pixels, and errors for
 * damaged or foreign files. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "data_helpers.h"
#include "sstc/data.h"
#include "sstc/error.h"

static char *dir;
static void setup(void) { dir = th_tmpdir(); }
static void teardown(void) {
    th_rmtree(dir);
    free(dir);
}

TestSuite(data_image, .init = setup, .fini = teardown);

static void check_png_roundtrip(int w, int h, int c) {
    uint8_t *src = malloc((size_t)w * h * c);
    th_pattern_hwc(src, 3, w, h, c);
    const char *p = th_path("%s/img_%dx%dx%d.png", dir, w, h, c);
    th_write_png(p, w, h, c, src);
    sstc_image img;
    cr_assert_eq(sstc_image_read(p, &img), 0, "%s", sstc_errmsg());
    cr_assert_eq(img.w, w);
    cr_assert_eq(img.h, h);
    int want_c = c <= 2 ? 1 : 3; /* alpha is dropped */
    cr_assert_eq(img.c, want_c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < want_c; ch++)
                cr_assert_eq(img.pixels[(y * w + x) * want_c + ch], src[(y * w + x) * c + ch],
                             "pixel (%d,%d) channel %d", y, x, ch);
    sstc_image_free(&img);
    free(src);
}

Test(data_image, png_gray_decodes_every_pixel_exactly) { check_png_roundtrip(7, 5, 1); }
Test(data_image, png_rgb_decodes_every_pixel_exactly) { check_png_roundtrip(5, 9, 3); }
Test(data_image, png_alpha_is_dropped_keeping_gray_and_rgb_values) {
    check_png_roundtrip(4, 3, 2);
    check_png_roundtrip(6, 2, 4);
}

Test(data_image, png_writer_output_reads_back_identically) {
    uint8_t px[6 * 4 * 3];
    th_pattern_hwc(px, 9, 6, 4, 3);
    const char *p = th_path("%s/w.png", dir);
    cr_assert_eq(sstc_image_write_png(p, 6, 4, 3, px), 0, "%s", sstc_errmsg());
    sstc_image img;
    cr_assert_eq(sstc_image_read(p, &img), 0, "%s", sstc_errmsg());
    cr_assert_eq(img.w, 6);
    cr_assert_eq(img.h, 4);
    cr_assert_eq(img.c, 3);
    cr_assert_arr_eq(img.pixels, px, sizeof px);
    sstc_image_free(&img);
}

/* JPEG is lossy in general; images made of one-colour 8x8 blocks, coded
 * with DC coefficients only at quantization 1, decode exactly. */
static void check_jpeg(int w, int h, int c) {
    uint8_t *src = malloc((size_t)w * h * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++) src[(y * w + x) * c + ch] = th_pixel(y / 8 * 5 + x / 8, ch, 0, 0);
    const char *p = th_path("%s/img%d.jpg", dir, c);
    th_write_jpeg_blocks(p, w, h, c, src);
    sstc_image img;
    cr_assert_eq(sstc_image_read(p, &img), 0, "%s", sstc_errmsg());
    cr_assert_eq(img.w, w);
    cr_assert_eq(img.h, h);
    cr_assert_eq(img.c, c);
    for (int i = 0; i < w * h * c; i++)
        cr_assert_eq(img.pixels[i], src[i], "sample %d: got %d, wrote %d", i, img.pixels[i], src[i]);
    sstc_image_free(&img);
    free(src);
}

Test(data_image, jpeg_gray_decodes_every_pixel) { check_jpeg(16, 8, 1); }
Test(data_image, jpeg_rgb_decodes_every_pixel) { check_jpeg(24, 16, 3); }

Test(data_image, truncated_png_is_an_error_naming_the_file) {
    uint8_t px[20 * 20];
    th_pattern_hwc(px, 1, 20, 20, 1);
    const char *p = th_path("%s/t.png", dir);
    th_write_png(p, 20, 20, 1, px);
    size_t n;
    uint8_t *buf = th_read(p, &n);
    th_write(p, buf, n / 2);
    sstc_image img;
    int rc = sstc_image_read(p, &img);
    cr_assert_eq(rc, SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), p), "%s", sstc_errmsg());
    cr_assert(th_has(sstc_errmsg(), "PNG"), "%s", sstc_errmsg());
    cr_assert_null(img.pixels);
    free(buf);
}

/* Damage to the compressed data is reported whatever libpng trips over
 * first; damage caught only by a CRC is never passed to stb_image, which
 * skips CRCs. */
Test(data_image, png_with_damaged_image_data_or_crc_is_an_error) {
    uint8_t px[16 * 16];
    th_pattern_hwc(px, 2, 16, 16, 1);
    const char *p = th_path("%s/crc.png", dir);
    th_write_png(p, 16, 16, 1, px);
    size_t n;
    uint8_t *buf = th_read(p, &n);
    uint8_t *idat = memmem(buf, n, "IDAT", 4);
    cr_assert_not_null(idat);
    uint32_t len = (uint32_t)idat[-4] << 24 | (uint32_t)idat[-3] << 16 | (uint32_t)idat[-2] << 8 | idat[-1];
    sstc_image img;
    idat[4 + len] ^= 0x01; /* first CRC byte */
    cr_assert_eq(sstc_image_decode(buf, n, "crc.png", &img), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "crc.png: corrupt PNG (libpng: IDAT: CRC error)"), "%s", sstc_errmsg());
    idat[4 + len] ^= 0x01;
    idat[6] ^= 0x55; /* inside the compressed data */
    cr_assert_eq(sstc_image_decode(buf, n, "crc.png", &img), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "crc.png: corrupt"), "%s", sstc_errmsg());
    cr_assert_null(img.pixels);
    free(buf);
}

Test(data_image, truncated_jpeg_is_an_error_naming_the_file) {
    uint8_t px[32 * 32 * 3];
    th_pattern_hwc(px, 4, 32, 32, 3);
    const char *p = th_path("%s/t.jpg", dir);
    th_write_jpeg_blocks(p, 32, 32, 3, px);
    size_t n;
    uint8_t *buf = th_read(p, &n);
    th_write(p, buf, n * 2 / 3);
    sstc_image img;
    cr_assert_eq(sstc_image_read(p, &img), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), p), "%s", sstc_errmsg());
    cr_assert(th_has(sstc_errmsg(), "JPEG"), "%s", sstc_errmsg());
    free(buf);
}

Test(data_image, jpeg_huffman_table_with_too_many_codes_is_refused) {
    /* SOI, then a DHT whose 16 code counts add up to 16*20 = 320 > 256:
     * stb_image 2.27 would write past its table. */
    uint8_t f[2 + 4 + 17 + 320 + 2] = {0xff, 0xd8, 0xff, 0xc4, 0, 0};
    size_t seg = 2 + 17 + 320;
    f[4] = (uint8_t)(seg >> 8), f[5] = (uint8_t)seg;
    f[6] = 0x00;
    for (int i = 0; i < 16; i++) f[7 + i] = 20;
    f[sizeof f - 2] = 0xff, f[sizeof f - 1] = 0xd9;
    sstc_image img;
    cr_assert_eq(sstc_image_decode(f, sizeof f, "huff.jpg", &img), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "huff.jpg: corrupt JPEG at byte offset 6: Huffman table"), "%s", sstc_errmsg());
}

Test(data_image, other_file_types_are_refused_with_their_first_bytes) {
    const char text[] = "GIF89a not an image we read";
    sstc_image img;
    cr_assert_eq(sstc_image_decode(text, sizeof text, "x.gif", &img), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "x.gif: not a PNG or JPEG image (first bytes 47 49 46"), "%s", sstc_errmsg());
    cr_assert_eq(sstc_image_decode(text, 0, "empty.png", &img), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "empty.png: file is empty"), "%s", sstc_errmsg());
}

Test(data_image, missing_file_is_an_io_error_naming_it) {
    sstc_image img;
    const char *p = th_path("%s/nope.png", dir);
    cr_assert_eq(sstc_image_read(p, &img), SSTC_EIO);
    cr_assert(th_has(sstc_errmsg(), p), "%s", sstc_errmsg());
}
