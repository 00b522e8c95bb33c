/* File, path and bookkeeping helpers for the dataset code. */
#include "data/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "sstc/error.h"

char *sstc_data_strdup_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *sstc_data_path_join(const char *a, const char *b) {
    size_t la = strlen(a);
    if (la == 0) return sstc_data_strdup_printf("%s", b);
    return sstc_data_strdup_printf("%s%s%s", a, a[la - 1] == '/' ? "" : "/", b);
}

int sstc_data_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int sstc_data_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int sstc_data_mkdirs(const char *path) {
    char *p = sstc_data_strdup_printf("%s", path);
    if (!p) return sstc_fail(SSTC_ENOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char saved = *s;
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                sstc_fail(SSTC_EIO, "%s: cannot create folder: %s", p, strerror(e));
                free(p);
                return SSTC_EIO;
            }
            *s = saved;
            if (!saved) break;
        }
    }
    free(p);
    if (!sstc_data_is_dir(path)) return sstc_fail(SSTC_EIO, "%s: exists but is not a folder", path);
    return 0;
}

int sstc_data_cmp_natural(const void *a, const void *b) {
    return strverscmp(*(const char *const *)a, *(const char *const *)b);
}

int sstc_data_read_file_into(const char *path, uint8_t **buf, size_t *cap, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return sstc_fail(SSTC_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    size_t want = 0;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode)) want = (size_t)st.st_size;
    else if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return sstc_fail(SSTC_EIO, "%s: is a folder, expected a file", path);
    }
    size_t n = 0;
    for (;;) {
        if (*cap < want + 2 || n + 1 >= *cap) {
            size_t nc = *cap ? *cap : 4096;
            while (nc < want + 2 || nc <= n + 1) nc *= 2;
            uint8_t *nb = realloc(*buf, nc);
            if (!nb) {
                fclose(f);
                return sstc_fail(SSTC_ENOMEM, "%s: out of memory reading %zu bytes", path, nc);
            }
            *buf = nb;
            *cap = nc;
        }
        size_t got = fread(*buf + n, 1, *cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) return sstc_fail(SSTC_EIO, "%s: read error after %zu bytes", path, n);
    (*buf)[n] = 0;
    *len = n;
    return 0;
}

int sstc_data_read_file(const char *path, uint8_t **buf, size_t *len) {
    size_t cap = 0;
    *buf = NULL;
    int rc = sstc_data_read_file_into(path, buf, &cap, len);
    if (rc) {
        free(*buf);
        *buf = NULL;
    }
    return rc;
}

int sstc_data_is_gzip(const uint8_t *buf, size_t len) { return len >= 2 && buf[0] == 0x1f && buf[1] == 0x8b; }

int sstc_data_gunzip(const uint8_t *in, size_t in_len, const char *name, uint8_t **out, size_t *out_len) {
    return sstc_data_gunzip_limit(in, in_len, name, 0, 0, out, out_len);
}

int sstc_data_gunzip_limit(const uint8_t *in, size_t in_len, const char *name, size_t limit, int peek, uint8_t **out,
                           size_t *out_len) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* 15 + 32: accept gzip or zlib headers; zlib checks the gzip CRC-32. */
    if (inflateInit2(&zs, 15 + 32) != Z_OK) return sstc_fail(SSTC_ENOMEM, "%s: cannot start zlib", name);
    size_t cap = in_len * 4 + 1024, n = 0;
    if (limit && cap > limit + 1) cap = limit + 1; /* one byte past the limit tells that it is exceeded */
    uint8_t *buf = malloc(cap);
    if (!buf) {
        inflateEnd(&zs);
        return sstc_fail(SSTC_ENOMEM, "%s: out of memory", name);
    }
    size_t consumed = 0;
    int rc = Z_OK;
    for (;;) {
        if (n == cap) {
            size_t nc = cap * 2;
            if (limit && nc > limit + 1) nc = limit + 1;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                inflateEnd(&zs);
                return sstc_fail(SSTC_ENOMEM, "%s: out of memory inflating past %zu bytes", name, n);
            }
            buf = nb;
            cap = nc;
        }
        size_t in_chunk = in_len - consumed > (1u << 30) ? (1u << 30) : in_len - consumed;
        size_t out_chunk = cap - n > (1u << 30) ? (1u << 30) : cap - n;
        zs.next_in = (Bytef *)(in + consumed);
        zs.avail_in = (uInt)in_chunk;
        zs.next_out = buf + n;
        zs.avail_out = (uInt)out_chunk;
        rc = inflate(&zs, Z_NO_FLUSH);
        consumed += in_chunk - zs.avail_in;
        n += out_chunk - zs.avail_out;
        if (limit && !peek && n > limit) {
            free(buf);
            inflateEnd(&zs);
            return sstc_fail(SSTC_EFORMAT, "%s: inflates to more than the %zu bytes its header announces", name, limit);
        }
        if (rc == Z_STREAM_END) break;
        if (peek && limit && n >= limit) {
            inflateEnd(&zs);
            *out = buf;
            *out_len = limit;
            return 0;
        }
        if (rc == Z_BUF_ERROR && consumed == in_len) break; /* input ran out */
        if (rc != Z_OK && rc != Z_BUF_ERROR) break;
    }
    if (rc != Z_STREAM_END) {
        const char *why = rc == Z_DATA_ERROR ? (zs.msg ? zs.msg : "corrupt data")
                          : rc == Z_MEM_ERROR ? "out of memory"
                                              : "compressed stream is truncated";
        sstc_fail(SSTC_EFORMAT, "%s: gzip data is corrupt at compressed byte offset %zu: %s", name, consumed,
                  why);
        free(buf);
        inflateEnd(&zs);
        return SSTC_EFORMAT;
    }
    inflateEnd(&zs);
    *out = buf;
    *out_len = n;
    return 0;
}

int sstc_data_read_maybe_gz(const char *path, uint8_t **buf, size_t *len) {
    uint8_t *raw;
    size_t raw_len;
    int rc = sstc_data_read_file(path, &raw, &raw_len);
    if (rc) return rc;
    if (!sstc_data_is_gzip(raw, raw_len)) {
        *buf = raw;
        *len = raw_len;
        return 0;
    }
    rc = sstc_data_gunzip(raw, raw_len, path, buf, len);
    free(raw);
    return rc;
}

void sstc_data_dataset_reset(sstc_dataset *ds) {
    if (!ds) return;
    free(ds->pixels);
    free(ds->labels);
    if (ds->class_names)
        for (int i = 0; i < ds->num_classes; i++) free(ds->class_names[i]);
    free(ds->class_names);
    memset(ds, 0, sizeof *ds);
}

void sstc_dataset_free(sstc_dataset *ds) { sstc_data_dataset_reset(ds); }

int sstc_data_dataset_alloc(sstc_dataset *ds, int n, int c, int h, int w) {
    size_t per = (size_t)c * (size_t)h * (size_t)w;
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    ds->pixels = malloc(per * (size_t)n + 1);
    ds->labels = malloc(sizeof(int) * (size_t)n + 1);
    if (!ds->pixels || !ds->labels)
        return sstc_fail(SSTC_ENOMEM, "out of memory for %d images of %dx%dx%d", n, c, h, w);
    return 0;
}

int sstc_data_dataset_set_classes(sstc_dataset *ds, const char *const *names, int k) {
    ds->class_names = calloc((size_t)k + 1, sizeof(char *));
    if (!ds->class_names) return sstc_fail(SSTC_ENOMEM, "out of memory");
    ds->num_classes = k;
    for (int i = 0; i < k; i++) {
        ds->class_names[i] = sstc_data_strdup_printf("%s", names[i]);
        if (!ds->class_names[i]) return sstc_fail(SSTC_ENOMEM, "out of memory");
    }
    return 0;
}

int sstc_data_dataset_numeric_classes(sstc_dataset *ds, int k) {
    ds->class_names = calloc((size_t)k + 1, sizeof(char *));
    if (!ds->class_names) return sstc_fail(SSTC_ENOMEM, "out of memory");
    ds->num_classes = k;
    for (int i = 0; i < k; i++) {
        ds->class_names[i] = sstc_data_strdup_printf("%d", i);
        if (!ds->class_names[i]) return sstc_fail(SSTC_ENOMEM, "out of memory");
    }
    return 0;
}
