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

/* The finished archive's bytes out of an in-memory source. */
static int source_bytes(zip_source_t *src, const char *path, unsigned char **out, size_t *len) {
    *out = NULL;
    if (zip_source_open(src) < 0) return sstc_fail(SSTC_EIO, "%s: cannot read the archive back", path);
    zip_int64_t n = -1;
    if (zip_source_seek(src, 0, SEEK_END) == 0) n = zip_source_tell(src);
    if (n < 0 || zip_source_seek(src, 0, SEEK_SET) < 0 || !(*out = malloc(n ? (size_t)n : 1)) ||
        zip_source_read(src, *out, (zip_uint64_t)n) != n) {
        zip_source_close(src);
        free(*out);
        *out = NULL;
        return sstc_fail(SSTC_EIO, "%s: cannot read the archive back", path);
    }
    zip_source_close(src);
    *len = (size_t)n;
    return 0;
}

/* Adds one tensor (or the permutation, i == n) as NAME.npy. */
static int add_member(zip_t *z, const char *path, sstc_model *m, sstc_named_tensor *nt, int i, int n) {
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
    if (!buf) return sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
    zip_source_t *src = zip_source_buffer(z, buf, len, 1); /* libzip frees buf */
    char member[80];
    snprintf(member, sizeof member, "%.60s.npy", nt[i].name);
    if (!src) free(buf);
    /* no ZIP_FL_OVERWRITE: two tensors of one name are an error, not a loss */
    if (!src || zip_file_add(z, member, src, 0) < 0) {
        if (src) zip_source_free(src);
        return sstc_fail(SSTC_EIO, "%s: cannot add %s: %s", path, member, zip_strerror(z));
    }
    return 0;
}

int sstc_export_npz(sstc_model *m, const char *path) {
    /* built in memory, then written like every output: a temporary file in
     * the same folder, fsync, rename over a regular file only */
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *mem = zip_source_buffer_create(NULL, 0, 0, &ze);
    zip_t *z = mem ? zip_open_from_source(mem, ZIP_TRUNCATE, &ze) : NULL;
    if (!z) {
        int rc = sstc_fail(SSTC_EIO, "%s: cannot create an archive: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        if (mem) zip_source_free(mem);
        return rc;
    }
    zip_error_fini(&ze);
    zip_source_keep(mem); /* survives zip_close, holding the archive */
    sstc_named_tensor nt[5 * 64 + 1]; /* + input.permutation */
    int n = sstc_model_named_tensors(m, nt, 5 * 64);
    if (n > 5 * 64) {
        zip_discard(z);
        zip_source_free(mem);
        return sstc_fail(SSTC_EINVAL, "%s: %d tensors, at most %d", path, n, 5 * 64);
    }
    for (int i = 0; i < n + (m->in_perm ? 1 : 0); i++)
        if (add_member(z, path, m, nt, i, n)) {
            zip_discard(z);
            zip_source_free(mem);
            return sstc_errcode();
        }
    if (zip_close(z) < 0) {
        int rc = sstc_fail(SSTC_EIO, "%s: cannot finish the archive: %s", path, zip_strerror(z));
        zip_discard(z);
        zip_source_free(mem);
        return rc;
    }
    unsigned char *bytes = NULL;
    size_t len = 0;
    int rc = source_bytes(mem, path, &bytes, &len);
    zip_source_free(mem);
    if (!rc) rc = sstc_write_atomic(path, bytes, len);
    free(bytes);
    return rc;
}
