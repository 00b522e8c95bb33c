/* NumPy .npz export and import: a zip archive (libzip) of .npy members, one
 * per named tensor, float32 little-endian, C order; plus input.permutation
 * (int32) when the model permutes its input, and input.mean / input.std (the
 * input normalization) when a session exports (docs/export.md). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zip.h>

#include "internal.h"

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

/* Adds one array as NAME.npy, with a fixed time stamp so that the same
 * tensors always give the same bytes. */
static int add_array(zip_t *z, const char *path, const char *name, const char *descr, int ndim, const int *shape,
                     const void *data, size_t bytes) {
    size_t len;
    unsigned char *buf = npy_encode(descr, ndim, shape, data, bytes, &len);
    if (!buf) return sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
    zip_source_t *src = zip_source_buffer(z, buf, len, 1); /* libzip frees buf */
    char member[80];
    snprintf(member, sizeof member, "%.60s.npy", name);
    if (!src) free(buf);
    /* no ZIP_FL_OVERWRITE: two arrays of one name are an error, not a loss */
    zip_int64_t idx = src ? zip_file_add(z, member, src, 0) : -1;
    if (idx < 0) {
        if (src) zip_source_free(src);
        return sstc_fail(SSTC_EIO, "%s: cannot add %s: %s", path, member, zip_strerror(z));
    }
    zip_file_set_mtime(z, (zip_uint64_t)idx, 315532800 /* 1980-01-01, the zip format's first day */, 0);
    return 0;
}

static int export_npz(sstc_model *m, const sstc_normalizer *norm, int in_c, const char *path) {
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
    int n = sstc_model_named_tensors(m, NULL, 0), rc = 0;
    sstc_named_tensor *nt = malloc(((size_t)n + 1) * sizeof *nt);
    if (!nt) rc = sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
    else sstc_model_named_tensors(m, nt, n);
    for (int i = 0; !rc && i < n; i++) {
        const sstc_tensor *t = nt[i].tensor;
        rc = add_array(z, path, nt[i].name, "<f4", t->ndim, t->shape, t->data, t->size * sizeof(float));
    }
    if (!rc && m->in_perm) {
        /* int is 32 bits on every platform this builds on; little-endian like the floats */
        int F = sstc_model_input_size(m);
        rc = add_array(z, path, "input.permutation", "<i4", 1, &F, m->in_perm, (size_t)F * sizeof(int));
    }
    if (!rc && norm) {
        rc = add_array(z, path, "input.mean", "<f4", 1, &in_c, norm->mean, (size_t)in_c * sizeof(float));
        if (!rc) rc = add_array(z, path, "input.std", "<f4", 1, &in_c, norm->std, (size_t)in_c * sizeof(float));
    }
    free(nt);
    if (rc) {
        zip_discard(z);
        zip_source_free(mem);
        return rc;
    }
    if (zip_close(z) < 0) {
        rc = sstc_fail(SSTC_EIO, "%s: cannot finish the archive: %s", path, zip_strerror(z));
        zip_discard(z);
        zip_source_free(mem);
        return rc;
    }
    unsigned char *bytes = NULL;
    size_t len = 0;
    rc = source_bytes(mem, path, &bytes, &len);
    zip_source_free(mem);
    if (!rc) rc = sstc_write_atomic(path, bytes, len);
    free(bytes);
    return rc;
}

int sstc_export_npz(sstc_model *m, const char *path) { return export_npz(m, NULL, 0, path); }

int sstc_session_export_npz(sstc_session *s, const char *path) {
    return export_npz(s->model, &s->norm, s->in_c, path);
}

/* ---- import ------------------------------------------------------------- */

/* One .npy member: its element type, shape and data (pointing into buf). */
typedef struct {
    char descr[8];
    int ndim;
    long long shape[8];
    const unsigned char *data;
    size_t bytes;
} npy_array;

/* Parses an .npy file (format 1.0 or 2.0, C order). */
static int npy_parse(const unsigned char *buf, size_t len, const char *name, npy_array *a) {
    memset(a, 0, sizeof *a);
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) || (buf[6] != 1 && buf[6] != 2))
        return sstc_fail(SSTC_EFORMAT, "%s: not an .npy array (format 1 or 2)", name);
    size_t hl = buf[6] == 1 ? (size_t)buf[8] | (size_t)buf[9] << 8
                            : (len < 12 ? SIZE_MAX : (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24);
    size_t start = buf[6] == 1 ? 10 : 12;
    if (hl > len - start || hl > 65536) return sstc_fail(SSTC_EFORMAT, "%s: .npy header runs past the member", name);
    char h[65537];
    memcpy(h, buf + start, hl);
    h[hl] = 0;
    const char *d = strstr(h, "'descr':"), *f = strstr(h, "'fortran_order':"), *sh = strstr(h, "'shape':");
    if (!d || !f || !sh) return sstc_fail(SSTC_EFORMAT, "%s: .npy header without descr, fortran_order or shape", name);
    if (sscanf(d, "'descr': '%7[^']'", a->descr) != 1)
        return sstc_fail(SSTC_EFORMAT, "%s: unreadable descr in the .npy header", name);
    if (strncmp(f + 16, " False", 6))
        return sstc_fail(SSTC_EFORMAT, "%s: a Fortran-order array; save it C-contiguous (np.ascontiguousarray)", name);
    const char *p = strchr(sh, '(');
    if (!p) return sstc_fail(SSTC_EFORMAT, "%s: unreadable shape in the .npy header", name);
    p++;
    size_t count = 1;
    while (*p && *p != ')') {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || v > (1LL << 31) || a->ndim >= 8)
            return sstc_fail(SSTC_EFORMAT, "%s: unreadable shape in the .npy header", name);
        a->shape[a->ndim++] = v;
        count *= (size_t)v;
        p = end;
    }
    size_t esize = strcmp(a->descr, "<f4") && strcmp(a->descr, "<i4") ? 0 : 4;
    if (!esize)
        return sstc_fail(SSTC_EFORMAT, "%s: elements of type %s; expected float32 ('<f4'; int32 '<i4' for input.permutation)",
                         name, a->descr);
    if (count > (len - start - hl) / esize || count * esize != len - start - hl)
        return sstc_fail(SSTC_EFORMAT, "%s: %zu bytes of data for a shape of %zu elements", name, len - start - hl, count);
    a->data = buf + start + hl;
    a->bytes = count * esize;
    return 0;
}

static void shape_text(const npy_array *a, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < a->ndim && off < n; d++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", d ? "," : "", a->shape[d]);
    if (off < n) snprintf(buf + off, n - off, ")");
}

static int same_shape(const npy_array *a, const sstc_tensor *t) {
    if (a->ndim != t->ndim) return 0;
    for (int d = 0; d < t->ndim; d++)
        if (a->shape[d] != t->shape[d]) return 0;
    return 1;
}

/* The members of an archive in memory, read whole. */
typedef struct {
    char name[96];
    unsigned char *buf;
    size_t len;
    npy_array a;
    int used;
} member;

static int read_members(const unsigned char *bytes, size_t len, const char *path, member **out, int *count) {
    *out = NULL;
    *count = 0;
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(bytes, len, 0, &ze);
    zip_t *z = src ? zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze) : NULL;
    if (!z) {
        int rc = sstc_fail(SSTC_EFORMAT, "%s: not a .npz (zip) archive: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        if (src) zip_source_free(src);
        return rc;
    }
    zip_error_fini(&ze);
    zip_int64_t n = zip_get_num_entries(z, 0);
    int rc = 0;
    member *m = n > 0 && n <= 4096 ? calloc((size_t)n, sizeof *m) : NULL;
    if (!m) rc = sstc_fail(SSTC_EFORMAT, "%s: %lld members, expected 1 to 4096 arrays", path, (long long)n);
    for (zip_int64_t i = 0; !rc && i < n; i++) {
        zip_stat_t st;
        const char *nm = zip_get_name(z, (zip_uint64_t)i, 0);
        size_t nl = nm ? strlen(nm) : 0;
        if (!nm || nl < 5 || nl >= sizeof m[i].name + 4 || strcmp(nm + nl - 4, ".npy")) {
            rc = sstc_fail(SSTC_EFORMAT, "%s: member '%s' is not NAME.npy", path, nm ? nm : "?");
            break;
        }
        snprintf(m[i].name, sizeof m[i].name, "%.*s", (int)(nl - 4), nm);
        if (zip_stat_index(z, (zip_uint64_t)i, 0, &st) || !(st.valid & ZIP_STAT_SIZE) || st.size > ((zip_uint64_t)1 << 32)) {
            rc = sstc_fail(SSTC_EFORMAT, "%s: member %s.npy: unreadable or larger than 4 GiB", path, m[i].name);
            break;
        }
        zip_file_t *zf = zip_fopen_index(z, (zip_uint64_t)i, 0);
        m[i].buf = malloc(st.size ? st.size : 1);
        m[i].len = st.size;
        if (!zf || !m[i].buf || zip_fread(zf, m[i].buf, st.size) != (zip_int64_t)st.size)
            rc = sstc_fail(SSTC_EFORMAT, "%s: member %s.npy: cannot read it: %s", path, m[i].name, zip_strerror(z));
        if (zf) zip_fclose(zf);
        if (!rc) rc = npy_parse(m[i].buf, m[i].len, m[i].name, &m[i].a);
        if (rc) sstc_fail_prefix(rc, "%s: ", path);
        for (zip_int64_t k = 0; !rc && k < i; k++)
            if (!strcmp(m[k].name, m[i].name)) rc = sstc_fail(SSTC_EFORMAT, "%s: array '%s' appears twice", path, m[i].name);
    }
    zip_discard(z);
    *out = m;
    *count = m ? (int)n : 0;
    return rc;
}

static void free_members(member *m, int n) {
    for (int i = 0; m && i < n; i++) free(m[i].buf);
    free(m);
}

static member *find_member(member *m, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(m[i].name, name)) return &m[i];
    return NULL;
}

/* input.mean / input.std / input.permutation */
static int import_input(sstc_session *s, member *m, int n, const char *path) {
    member *mean = find_member(m, n, "input.mean"), *sd = find_member(m, n, "input.std");
    if (!mean != !sd) return sstc_fail(SSTC_EFORMAT, "%s: input.mean and input.std come together", path);
    if (mean) {
        if (strcmp(mean->a.descr, "<f4") || strcmp(sd->a.descr, "<f4") || mean->a.ndim != 1 || sd->a.ndim != 1 ||
            mean->a.shape[0] != s->in_c || sd->a.shape[0] != s->in_c)
            return sstc_fail(SSTC_EFORMAT, "%s: input.mean and input.std must be float32 of shape (%d), one per channel",
                             path, s->in_c);
        float mv[4], sv[4];
        memcpy(mv, mean->a.data, (size_t)s->in_c * 4);
        memcpy(sv, sd->a.data, (size_t)s->in_c * 4);
        for (int c = 0; c < s->in_c; c++)
            if (!isfinite(mv[c]) || !(sv[c] > 0) || !isfinite(sv[c]))
                return sstc_fail(SSTC_EFORMAT, "%s: input channel %d: mean %g, std %g; expected finite values, std > 0", path,
                                 c, (double)mv[c], (double)sv[c]);
        for (int c = 0; c < s->in_c; c++) s->norm.mean[c] = mv[c], s->norm.std[c] = sv[c];
        mean->used = sd->used = 1;
    }
    member *perm = find_member(m, n, "input.permutation");
    if (perm) {
        int F = sstc_model_input_size(s->model);
        if (strcmp(perm->a.descr, "<i4") || perm->a.ndim != 1 || perm->a.shape[0] != F)
            return sstc_fail(SSTC_EFORMAT, "%s: input.permutation must be int32 of shape (%d), the input's size", path, F);
        int *p = malloc((size_t)F * sizeof(int));
        if (!p) return sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
        memcpy(p, perm->a.data, (size_t)F * sizeof(int));
        int rc = sstc_model_set_input_permutation(s->model, p);
        free(p);
        if (rc) return sstc_fail_prefix(rc, "%s: input.permutation: ", path);
        perm->used = 1;
    }
    return 0;
}

/* Output scales that the archive has and the model does not yet. */
static int import_out_scales(sstc_session *s, member *m, int n, const char *path) {
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(m[i].name);
        if (nl <= 10 || strcmp(m[i].name + nl - 10, ".out_scale")) continue;
        sstc_layer *l = NULL;
        for (int k = 0; k < s->model->nlayers; k++)
            if (strlen(s->model->layers[k].name) == nl - 10 && !strncmp(s->model->layers[k].name, m[i].name, nl - 10))
                l = &s->model->layers[k];
        if (!l || sstc_layer_add_out_scale(s->model, l))
            return sstc_fail(SSTC_EFORMAT, "%s: array '%s' belongs to no linear or conv layer of the network", path, m[i].name);
    }
    return 0;
}

int sstc_session_import_npz(sstc_session *s, const char *path) {
    unsigned char *bytes;
    size_t len;
    if (sstc_read_file(path, (size_t)1 << 34, ".npz archive", &bytes, &len)) return sstc_errcode();
    member *m;
    int n, rc = read_members(bytes, len, path, &m, &n);
    if (!rc) rc = import_out_scales(s, m, n, path);
    int nt_n = rc ? 0 : sstc_model_named_tensors(s->model, NULL, 0);
    sstc_named_tensor *nt = rc ? NULL : malloc(((size_t)nt_n + 1) * sizeof *nt);
    if (!rc && !nt) rc = sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
    if (!rc) sstc_model_named_tensors(s->model, nt, nt_n);
    /* every tensor of the network, by name, with its shape: checked first,
     * copied only when all fit */
    for (int i = 0; !rc && i < nt_n; i++) {
        member *a = find_member(m, n, nt[i].name);
        char want[64], got[64];
        sstc_shape_str(nt[i].tensor, want, sizeof want);
        if (!a) rc = sstc_fail(SSTC_EFORMAT, "%s: no array '%s' %s (the config's network needs it)", path, nt[i].name, want);
        else if (strcmp(a->a.descr, "<f4")) rc = sstc_fail(SSTC_EFORMAT, "%s: array '%s' is %s, expected float32", path, nt[i].name, a->a.descr);
        else if (!same_shape(&a->a, nt[i].tensor)) {
            shape_text(&a->a, got, sizeof got);
            rc = sstc_fail(SSTC_ESHAPE, "%s: array '%s' has shape %s, the config's network expects %s", path, nt[i].name, got, want);
        } else {
            a->used = 1;
            const float *v = (const float *)a->a.data;
            for (size_t k = 0; !rc && k < nt[i].tensor->size; k++) {
                float x;
                memcpy(&x, v + k, 4);
                if (!isfinite(x)) rc = sstc_fail(SSTC_EFORMAT, "%s: array '%s' holds %g at index %zu", path, nt[i].name, (double)x, k);
            }
        }
    }
    if (!rc) rc = import_input(s, m, n, path);
    for (int i = 0; !rc && i < n; i++)
        if (!m[i].used) rc = sstc_fail(SSTC_EFORMAT, "%s: array '%s' is no tensor of the config's network", path, m[i].name);
    for (int i = 0; !rc && i < nt_n; i++) {
        member *a = find_member(m, n, nt[i].name);
        memcpy(nt[i].tensor->data, a->a.data, nt[i].tensor->size * sizeof(float));
    }
    free(nt);
    free_members(m, n);
    free(bytes);
    return rc;
}
