/* NumPy .npz export: a zip archive (libzip) of .npy members, one per named
 * tensor, float32 little-endian, C order; plus input.permutation (int32) when
 * the model permutes its input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zip.h>

#include "sstc/train.h"

/* An .npy file (format version 1.0) in memory. */
static unsigned char *npy_encode(const char *descr, int ndim, const int *dims, const void *values, size_t data,
                                 size_t *len) {
    char header[256];
    char shape[128] = "";
    size_t off = 0;
    for (int d = 0; d < ndim; d++)
        off += (size_t)snprintf(shape + off, sizeof shape - off, "%d,%s", dims[d], d + 1 < ndim ? " " : "");
    if (ndim > 1) shape[strlen(shape) - 1] = 0; /* (a, b) rather than (a, b,) */
    int hl = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape);
    /* magic(6) + version(2) + len(2) + header, padded with spaces and a
     * newline to a multiple of 64 bytes */
    size_t total_h = 10 + (size_t)hl + 1;
    size_t pad = (64 - total_h % 64) % 64;
    size_t hlen = (size_t)hl + pad + 1;
    *len = 10 + hlen + data;
    unsigned char *buf = malloc(*len);
    if (!buf) return NULL;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    memcpy(buf + 10, header, (size_t)hl);
    memset(buf + 10 + hl, ' ', pad);
    buf[10 + hlen - 1] = '\n';
    memcpy(buf + 10 + hlen, values, data);
    return buf;
}

int sstc_export_npz(sstc_model *m, const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    remove(tmp);
    int zerr = 0;
    zip_t *z = zip_open(tmp, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    if (!z) {
        zip_error_t e;
        zip_error_init_with_code(&e, zerr);
        int rc = sstc_fail(SSTC_EIO, "%s: cannot create: %s", path, zip_error_strerror(&e));
        zip_error_fini(&e);
        return rc;
    }
    sstc_named_tensor nt[5 * 64 + 1]; /* + input.permutation */
    int n = sstc_model_named_tensors(m, nt, 5 * 64);
    for (int i = 0; i < n + (m->in_perm ? 1 : 0); i++) {
        size_t len;
        unsigned char *buf;
        if (i < n) {
            const sstc_tensor *t = nt[i].tensor;
            buf = npy_encode("<f4", t->ndim, t->shape, t->data, t->size * sizeof(float), &len);
        } else {
            /* int is 32 bits on every platform this builds on; little-endian like the floats */
            int F = sstc_model_input_size(m);
            buf = npy_encode("<i4", 1, &F, m->in_perm, (size_t)F * sizeof(int), &len);
            snprintf(nt[i].name, sizeof nt[i].name, "input.permutation");
        }
        if (!buf) {
            zip_discard(z);
            return sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
        }
        zip_source_t *src = zip_source_buffer(z, buf, len, 1); /* libzip frees buf */
        char member[80];
        snprintf(member, sizeof member, "%.60s.npy", nt[i].name);
        if (!src) free(buf);
        if (!src || zip_file_add(z, member, src, ZIP_FL_OVERWRITE) < 0) {
            if (src) zip_source_free(src);
            int rc = sstc_fail(SSTC_EIO, "%s: cannot add %s: %s", path, member, zip_strerror(z));
            zip_discard(z);
            return rc;
        }
    }
    if (zip_close(z) < 0) {
        int rc = sstc_fail(SSTC_EIO, "%s: cannot write: %s", path, zip_strerror(z));
        zip_discard(z);
        return rc;
    }
    if (rename(tmp, path)) return sstc_fail(SSTC_EIO, "%s: cannot rename the finished archive into place", path);
    return 0;
}
