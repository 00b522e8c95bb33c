/* IDX files (MNIST, Fashion-MNIST): a 4-byte magic (0, 0, data type, number
 * of dimensions), the dimensions as big-endian 32-bit integers, then the data
 * in row-major order. Only unsigned-byte data (type 0x08) is used here. */
#include "data/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/error.h"

typedef struct {
    int ndims;
    uint32_t dims[4];
    size_t header;           /* bytes before the data */
    const uint8_t *data;
} idx_view;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* where: "" or " (after decompression)", appended to byte offsets. */
static int idx_parse(const uint8_t *b, size_t len, const char *name, const char *where, int min_dims,
                     int max_dims, const char *what, idx_view *v) {
    if (len < 4)
        return sstc_fail(SSTC_EFORMAT, "%s: file is %zu bytes%s, too short for the 4-byte IDX magic", name, len,
                         where);
    if (b[0] != 0 || b[1] != 0)
        return sstc_fail(SSTC_EFORMAT,
                         "%s: wrong magic %02x %02x %02x %02x at byte offset 0%s, expected an IDX file "
                         "(00 00, data type, number of dimensions)",
                         name, b[0], b[1], b[2], b[3], where);
    if (b[2] != 0x08)
        return sstc_fail(SSTC_EFORMAT, "%s: IDX data type 0x%02x at byte offset 2%s, expected 0x08 (unsigned byte)",
                         name, b[2], where);
    v->ndims = b[3];
    if (v->ndims < min_dims || v->ndims > max_dims) {
        if (min_dims == max_dims)
            return sstc_fail(SSTC_EFORMAT, "%s: %d dimensions at byte offset 3%s, expected %d for %s", name,
                             v->ndims, where, min_dims, what);
        return sstc_fail(SSTC_EFORMAT, "%s: %d dimensions at byte offset 3%s, expected %d to %d for %s", name,
                         v->ndims, where, min_dims, max_dims, what);
    }
    v->header = 4 + 4 * (size_t)v->ndims;
    if (len < v->header)
        return sstc_fail(SSTC_EFORMAT, "%s: file ends at byte %zu%s inside the IDX header, expected %zu header bytes",
                         name, len, where, v->header);
    for (int i = 0; i < v->ndims; i++) {
        v->dims[i] = be32(b + 4 + 4 * i);
        if (v->dims[i] > 0x7fffffffu)
            return sstc_fail(SSTC_EFORMAT, "%s: dimension %d is %u at byte offset %d%s, too large", name, i,
                             v->dims[i], 4 + 4 * i, where);
    }
    v->data = b + v->header;
    return 0;
}

/* Checks that the data after the header is exactly n records of rec bytes. */
static int idx_check_size(const idx_view *v, size_t len, const char *name, const char *where, size_t rec,
                          const char *rec_name) {
    size_t n = v->dims[0];
    size_t have = len - v->header;
    if (rec == 0) return 0;
    if (have / rec < n) {
        size_t complete = have / rec;
        return sstc_fail(SSTC_EFORMAT,
                         "%s: truncated: the header promises %zu %ss of %zu bytes, but the file ends at byte %zu%s "
                         "inside %s %zu (which starts at byte offset %zu)",
                         name, n, rec_name, rec, len, where, rec_name, complete, v->header + complete * rec);
    }
    if (have > n * rec)
        return sstc_fail(SSTC_EFORMAT,
                         "%s: %zu unexpected bytes after the last of %zu %ss (data should end at byte offset %zu%s)",
                         name, have - n * rec, n, rec_name, v->header + n * rec, where);
    return 0;
}

static int from_idx(const uint8_t *img, size_t img_len, const char *img_name, const char *img_where,
                    const uint8_t *lab, size_t lab_len, const char *lab_name, const char *lab_where,
                    int num_classes, sstc_dataset *out) {
    idx_view vi, vl;
    int rc = idx_parse(img, img_len, img_name, img_where, 3, 4, "images (count, height, width[, channels])", &vi);
    if (rc) return rc;
    uint32_t n = vi.dims[0], h = vi.dims[1], w = vi.dims[2], c = vi.ndims == 4 ? vi.dims[3] : 1;
    if (h == 0 || w == 0 || h > SSTC_MAX_IMAGE_SIDE || w > SSTC_MAX_IMAGE_SIDE ||
        (uint64_t)h * w > SSTC_MAX_IMAGE_PIXELS)
        return sstc_fail(SSTC_EFORMAT, "%s: image size %ux%u (byte offsets 8 and 12%s) is not usable, expected "
                         "1 to %d pixels per side",
                         img_name, h, w, img_where, SSTC_MAX_IMAGE_SIDE);
    if (c != 1 && c != 3)
        return sstc_fail(SSTC_EFORMAT, "%s: %u channels (byte offset 16%s), expected 1 or 3", img_name, c,
                         img_where);
    size_t per = (size_t)c * h * w;
    rc = idx_check_size(&vi, img_len, img_name, img_where, per, "image");
    if (rc) return rc;
    rc = idx_parse(lab, lab_len, lab_name, lab_where, 1, 1, "labels", &vl);
    if (rc) return rc;
    rc = idx_check_size(&vl, lab_len, lab_name, lab_where, 1, "label");
    if (rc) return rc;
    if (vl.dims[0] != n)
        return sstc_fail(SSTC_EFORMAT, "%s: %u labels, but %s has %u images; expected one label per image",
                         lab_name, vl.dims[0], img_name, n);
    if (n == 0) return sstc_fail(SSTC_EFORMAT, "%s: holds no images", img_name);
    int maxlab = 0;
    for (uint32_t i = 0; i < n; i++) {
        int l = vl.data[i];
        if (num_classes > 0 && l >= num_classes)
            return sstc_fail(SSTC_EFORMAT, "%s: label %d of record %u (byte offset %zu%s) is out of range, expected 0..%d",
                             lab_name, l, i, vl.header + i, lab_where, num_classes - 1);
        if (l > maxlab) maxlab = l;
    }
    rc = sstc_data_dataset_alloc(out, (int)n, (int)c, (int)h, (int)w);
    if (rc) return rc;
    if (c == 1) memcpy(out->pixels, vi.data, per * n);
    else
        for (size_t i = 0; i < n; i++) {
            const uint8_t *src = vi.data + i * per;
            uint8_t *dst = out->pixels + i * per;
            for (size_t p = 0; p < (size_t)h * w; p++)
                for (size_t ch = 0; ch < c; ch++) dst[ch * h * w + p] = src[p * c + ch];
        }
    for (uint32_t i = 0; i < n; i++) out->labels[i] = vl.data[i];
    out->format = "IDX";
    return sstc_data_dataset_numeric_classes(out, num_classes > 0 ? num_classes : maxlab + 1);
}

/* The size an IDX file's header announces (header and data), from its
 * first bytes inflated; 0 if they do not form an IDX header (the full
 * parse then says what is wrong). */
static size_t idx_announced_size(const uint8_t *gz, size_t len, const char *name) {
    uint8_t *h = NULL;
    size_t n = 0, total = 0;
    if (sstc_data_gunzip_limit(gz, len, name, 4, 1, &h, &n) == 0 && n == 4 && h[0] == 0 && h[1] == 0 && h[2] == 8 &&
        h[3] >= 1 && h[3] <= 4) {
        int nd = h[3];
        free(h);
        h = NULL;
        if (sstc_data_gunzip_limit(gz, len, name, 4 + 4 * (size_t)nd, 1, &h, &n) == 0 && n == 4 + 4 * (size_t)nd) {
            uint64_t t = 1;
            for (int d = 0; d < nd && t; d++) {
                uint32_t v = (uint32_t)h[4 + 4 * d] << 24 | (uint32_t)h[5 + 4 * d] << 16 | (uint32_t)h[6 + 4 * d] << 8 | h[7 + 4 * d];
                t = t * v > ((uint64_t)1 << 40) ? 0 : t * v;
            }
            total = t ? (size_t)(4 + 4 * (size_t)nd + t) : 0;
        }
    }
    free(h);
    sstc_clear_error();
    return total;
}

int sstc_dataset_from_idx_buffers(const void *images, size_t images_len, const char *images_name,
                                  const void *labels, size_t labels_len, const char *labels_name,
                                  int num_classes, sstc_dataset *out) {
    memset(out, 0, sizeof *out);
    if (!images || !labels) return sstc_fail(SSTC_EINVAL, "sstc_dataset_from_idx_buffers: NULL buffer");
    if (!images_name) images_name = "images";
    if (!labels_name) labels_name = "labels";
    uint8_t *img = (uint8_t *)images, *lab = (uint8_t *)labels;
    uint8_t *img_own = NULL, *lab_own = NULL;
    const char *img_where = "", *lab_where = "";
    int rc = 0;
    if (sstc_data_is_gzip(img, images_len)) {
        /* never more than the header announces: a gzip bomb stops there */
        size_t want = idx_announced_size(img, images_len, images_name);
        rc = want ? sstc_data_gunzip_limit(img, images_len, images_name, want, 0, &img_own, &images_len)
                  : sstc_data_gunzip_limit(img, images_len, images_name, 64, 1, &img_own, &images_len);
        if (rc) goto done;
        img = img_own;
        img_where = " after decompression";
    }
    if (sstc_data_is_gzip(lab, labels_len)) {
        size_t want = idx_announced_size(lab, labels_len, labels_name);
        rc = want ? sstc_data_gunzip_limit(lab, labels_len, labels_name, want, 0, &lab_own, &labels_len)
                  : sstc_data_gunzip_limit(lab, labels_len, labels_name, 64, 1, &lab_own, &labels_len);
        if (rc) goto done;
        lab = lab_own;
        lab_where = " after decompression";
    }
    rc = from_idx(img, images_len, images_name, img_where, lab, labels_len, labels_name, lab_where, num_classes,
                  out);
done:
    free(img_own);
    free(lab_own);
    if (rc) sstc_data_dataset_reset(out);
    return rc;
}

int sstc_dataset_from_idx_files(const char *images_path, const char *labels_path, int num_classes,
                                sstc_dataset *out) {
    memset(out, 0, sizeof *out);
    uint8_t *img = NULL, *lab = NULL;
    size_t img_len, lab_len;
    int rc = sstc_data_read_file(images_path, &img, &img_len);
    if (rc == 0) rc = sstc_data_read_file(labels_path, &lab, &lab_len);
    if (rc == 0)
        rc = sstc_dataset_from_idx_buffers(img, img_len, images_path, lab, lab_len, labels_path, num_classes, out);
    free(img);
    free(lab);
    return rc;
}
