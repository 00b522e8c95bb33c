/* Image-folder datasets (<dir>/<class>/<image>.png|.jpg) and their cache.
 *
 * Decoding 70,000 small PNGs takes seconds, so the first load writes every
 * pixel and label to one cache file; later loads only list the folders, stat
 * the files and read that file. The cache carries a fingerprint of the
 * listing (class names, file names, sizes, modification times), so adding,
 * removing, replacing or touching any image makes it stale and it is rebuilt.
 *
 * Files are read and decoded in parallel (OpenMP), each into its fixed slot,
 * so the result does not depend on the thread count: classes and files are in
 * natural order ("2.png" before "10.png"). */
#include "data/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "sstc/error.h"

#define CACHE_MAGIC "SSTCDSC\n"
#define CACHE_VERSION 2u /* 2: a CRC-32 of labels and pixels at the end */

typedef struct {
    char *name;   /* file name inside its class folder */
    int label;
    int64_t size, mtime_s, mtime_ns;
} entry;

typedef struct {
    entry *items;
    size_t n, cap;
} entry_list;

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Sub-folders of dir (hidden ones skipped), in natural order. */
static int list_subdirs(const char *dir, char ***names_out, int *n_out) {
    DIR *d = opendir(dir);
    if (!d) return sstc_fail(SSTC_EIO, "%s: cannot open folder: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) != 0 || !S_ISDIR(st.st_mode)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, sizeof(char *) * (size_t)cap);
            if (!nn) {
                closedir(d);
                free_names(names, n);
                return sstc_fail(SSTC_ENOMEM, "out of memory");
            }
            names = nn;
        }
        names[n] = sstc_data_strdup_printf("%s", e->d_name);
        if (!names[n]) {
            closedir(d);
            free_names(names, n);
            return sstc_fail(SSTC_ENOMEM, "out of memory");
        }
        n++;
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof(char *), sstc_data_cmp_natural);
    *names_out = names;
    *n_out = n;
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    return strverscmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* Appends the images of one class folder (absent folder: none). */
static int list_class(const char *classdir, int label, entry_list *L) {
    DIR *d = opendir(classdir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return sstc_fail(SSTC_EIO, "%s: cannot open folder: %s", classdir, strerror(errno));
    }
    size_t start = L->n;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !has_image_ext(e->d_name)) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode)) continue;
        if (L->n == L->cap) {
            size_t nc = L->cap ? L->cap * 2 : 1024;
            entry *ni = realloc(L->items, sizeof(entry) * nc);
            if (!ni) {
                closedir(d);
                return sstc_fail(SSTC_ENOMEM, "out of memory");
            }
            L->items = ni;
            L->cap = nc;
        }
        entry *it = &L->items[L->n];
        it->name = sstc_data_strdup_printf("%s", e->d_name);
        if (!it->name) {
            closedir(d);
            return sstc_fail(SSTC_ENOMEM, "out of memory");
        }
        it->label = label;
        it->size = (int64_t)st.st_size;
        it->mtime_s = (int64_t)st.st_mtim.tv_sec;
        it->mtime_ns = (int64_t)st.st_mtim.tv_nsec;
        L->n++;
    }
    closedir(d);
    if (L->n > start) qsort(L->items + start, L->n - start, sizeof(entry), cmp_entry);
    return 0;
}

static uint64_t listing_fingerprint(char **classes, int nclasses, const entry_list *L) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < nclasses; i++) h = fnv1a(h, classes[i], strlen(classes[i]) + 1);
    for (size_t i = 0; i < L->n; i++) {
        const entry *e = &L->items[i];
        h = fnv1a(h, e->name, strlen(e->name) + 1);
        int64_t v[4] = {e->label, e->size, e->mtime_s, e->mtime_ns};
        h = fnv1a(h, v, sizeof v);
    }
    return h;
}

/* ---- cache file ---- */

typedef struct {
    char magic[8];
    uint32_t version, endian;
    uint64_t fingerprint;
    int32_t n, c, h, w, num_classes, pad;
} cache_header;

/* CRC-32 of the labels and pixels (zlib's crc32 takes at most 4 GiB a call). */
static uint32_t cache_crc(const sstc_dataset *ds, int n, size_t per) {
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, (const Bytef *)ds->labels, (uInt)(sizeof(int32_t) * (size_t)n));
    const uint8_t *p = ds->pixels;
    for (size_t left = per * (size_t)n; left;) {
        size_t k = left < (1u << 30) ? left : (1u << 30);
        crc = crc32(crc, p, (uInt)k);
        p += k, left -= k;
    }
    return (uint32_t)crc;
}

/* Returns 1 and fills ds if the cache is present, intact and matches; 0 otherwise. */
static int cache_read(const char *path, uint64_t fp, int n, char **classes, int nclasses, sstc_dataset *ds) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    cache_header hd;
    int ok = fread(&hd, sizeof hd, 1, f) == 1 && !memcmp(hd.magic, CACHE_MAGIC, 8) &&
             hd.version == CACHE_VERSION && hd.endian == 0x01020304u && hd.fingerprint == fp && hd.n == n &&
             hd.num_classes == nclasses && (hd.c == 1 || hd.c == 3) && hd.h > 0 && hd.w > 0 &&
             (int64_t)hd.h * hd.w <= SSTC_MAX_IMAGE_PIXELS;
    for (int i = 0; ok && i < nclasses; i++) {
        uint32_t len;
        char name[NAME_MAX + 1];
        ok = fread(&len, 4, 1, f) == 1 && len == strlen(classes[i]) && len <= NAME_MAX &&
             fread(name, 1, len, f) == len && !memcmp(name, classes[i], len);
    }
    if (ok) {
        size_t per = (size_t)hd.c * hd.h * hd.w;
        struct stat st;
        long pos = ftell(f);
        ok = pos > 0 && fstat(fileno(f), &st) == 0 &&
             (uint64_t)st.st_size == (uint64_t)pos + sizeof(int32_t) * (size_t)n + per * (size_t)n + 4;
        if (ok) ok = sstc_data_dataset_alloc(ds, n, hd.c, hd.h, hd.w) == 0;
        if (ok) {
            int32_t *lab = (int32_t *)ds->labels; /* int is 32 bits on every target we build for */
            uint32_t stored = 0;
            ok = sizeof(int) == 4 && fread(lab, sizeof(int32_t), (size_t)n, f) == (size_t)n &&
                 fread(ds->pixels, 1, per * (size_t)n, f) == per * (size_t)n && fread(&stored, 4, 1, f) == 1;
            /* the decoded data are only trusted as written: a CRC-32 of labels and pixels */
            if (ok) ok = stored == cache_crc(ds, n, per);
            for (int i = 0; ok && i < n; i++) ok = ds->labels[i] >= 0 && ds->labels[i] < nclasses;
        }
    }
    fclose(f);
    if (!ok) {
        sstc_data_dataset_reset(ds);
        sstc_clear_error();
    }
    return ok;
}

/* Writes the cache atomically (temporary file + rename). Failure is not an
 * error for the load: the folder may be read-only. Returns 0 or a code. */
static int cache_write(const char *path, uint64_t fp, const sstc_dataset *ds) {
    char *tmp = sstc_data_strdup_printf("%s.tmp-%ld.sstcache", path, (long)getpid());
    if (!tmp) return SSTC_ENOMEM;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(tmp);
        return SSTC_EIO;
    }
    cache_header hd;
    memset(&hd, 0, sizeof hd);
    memcpy(hd.magic, CACHE_MAGIC, 8);
    hd.version = CACHE_VERSION;
    hd.endian = 0x01020304u;
    hd.fingerprint = fp;
    hd.n = ds->n, hd.c = ds->c, hd.h = ds->h, hd.w = ds->w, hd.num_classes = ds->num_classes;
    int ok = fwrite(&hd, sizeof hd, 1, f) == 1;
    for (int i = 0; ok && i < ds->num_classes; i++) {
        uint32_t len = (uint32_t)strlen(ds->class_names[i]);
        ok = fwrite(&len, 4, 1, f) == 1 && fwrite(ds->class_names[i], 1, len, f) == len;
    }
    size_t per = (size_t)ds->c * ds->h * ds->w;
    if (ok) ok = fwrite(ds->labels, sizeof(int32_t), (size_t)ds->n, f) == (size_t)ds->n;
    if (ok) ok = fwrite(ds->pixels, 1, per * (size_t)ds->n, f) == per * (size_t)ds->n;
    uint32_t crc = cache_crc(ds, ds->n, per);
    if (ok) ok = fwrite(&crc, 4, 1, f) == 1;
    if (fclose(f) != 0) ok = 0;
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) remove(tmp);
    free(tmp);
    return ok ? 0 : SSTC_EIO;
}

/* ---- decoding ---- */

static void hwc_to_chw(const sstc_image *img, uint8_t *dst) {
    size_t hw = (size_t)img->w * img->h;
    if (img->c == 1) {
        memcpy(dst, img->pixels, hw);
        return;
    }
    for (size_t p = 0; p < hw; p++)
        for (int ch = 0; ch < img->c; ch++) dst[(size_t)ch * hw + p] = img->pixels[p * (size_t)img->c + (size_t)ch];
}

static char *entry_path(const char *dir, char **classes, const entry *e) {
    return sstc_data_strdup_printf("%s/%s/%s", dir, classes[e->label], e->name);
}

static int decode_all(const char *dir, char **classes, const entry_list *L, sstc_dataset *ds) {
    /* The first image fixes the shape every other image must have. */
    char *first = entry_path(dir, classes, &L->items[0]);
    if (!first) return sstc_fail(SSTC_ENOMEM, "out of memory");
    sstc_image img;
    int rc = sstc_image_read(first, &img);
    if (rc) {
        free(first);
        return rc;
    }
    rc = sstc_data_dataset_alloc(ds, (int)L->n, img.c, img.h, img.w);
    if (rc) {
        sstc_image_free(&img);
        free(first);
        return rc;
    }
    size_t per = (size_t)img.c * img.h * img.w;
    hwc_to_chw(&img, ds->pixels);
    ds->labels[0] = L->items[0].label;
    sstc_image_free(&img);

    long err_index = LONG_MAX;
    int err_code = 0;
    char err_msg[1024] = "";
    long n = (long)L->n;
#pragma omp parallel
    {
        uint8_t *buf = NULL;
        size_t cap = 0, len;
#pragma omp for schedule(dynamic, 64)
        for (long i = 1; i < n; i++) {
            long stop;
#pragma omp atomic read
            stop = err_index;
            if (i > stop) continue;
            const entry *e = &L->items[i];
            char *path = entry_path(dir, classes, e);
            sstc_image im = {0, 0, 0, NULL};
            int r = path ? sstc_data_read_file_into(path, &buf, &cap, &len) : sstc_fail(SSTC_ENOMEM, "out of memory");
            if (r == 0) r = sstc_image_decode(buf, len, path, &im);
            if (r == 0 && (im.w != ds->w || im.h != ds->h || im.c != ds->c))
                r = sstc_fail(SSTC_EFORMAT,
                              "%s: image is %dx%d with %d channel%s, expected %dx%d with %d channel%s like the "
                              "first image %s",
                              path, im.w, im.h, im.c, im.c == 1 ? "" : "s", ds->w, ds->h, ds->c,
                              ds->c == 1 ? "" : "s", first);
            if (r == 0) {
                hwc_to_chw(&im, ds->pixels + (size_t)i * per);
                ds->labels[i] = e->label;
            } else {
#pragma omp critical(sstc_folder_error)
                if (i < err_index) {
                    snprintf(err_msg, sizeof err_msg, "%s", sstc_errmsg());
                    err_code = r;
#pragma omp atomic write
                    err_index = i;
                }
            }
            sstc_image_free(&im);
            free(path);
        }
        free(buf);
    }
    free(first);
    if (err_code) return sstc_fail(err_code, "%s", err_msg);
    return 0;
}

int sstc_dataset_from_folder(const char *dir, const char *classes_dir, const char *cache_path, sstc_dataset *out) {
    memset(out, 0, sizeof *out);
    if (!dir) return sstc_fail(SSTC_EINVAL, "sstc_dataset_from_folder: NULL folder");
    if (!sstc_data_is_dir(dir))
        return sstc_fail(SSTC_EIO, "%s: no such folder, expected an image folder with one sub-folder per class", dir);
    if (!classes_dir) classes_dir = dir;
    char **classes = NULL, **here = NULL;
    int nclasses = 0, nhere = 0;
    entry_list L = {NULL, 0, 0};
    int rc = list_subdirs(classes_dir, &classes, &nclasses);
    if (rc) goto done;
    if (nclasses == 0) {
        rc = sstc_fail(SSTC_EFORMAT, "%s: no class sub-folders, expected %s/<class>/<image>.png or .jpg",
                       classes_dir, classes_dir);
        goto done;
    }
    if (strcmp(classes_dir, dir)) {
        rc = list_subdirs(dir, &here, &nhere);
        if (rc) goto done;
        for (int i = 0; i < nhere; i++) {
            int found = 0;
            for (int k = 0; k < nclasses && !found; k++) found = !strcmp(here[i], classes[k]);
            if (!found) {
                rc = sstc_fail(SSTC_EFORMAT, "%s/%s: class '%s' is not one of the %d classes in %s", dir, here[i],
                               here[i], nclasses, classes_dir);
                goto done;
            }
        }
    }
    for (int k = 0; k < nclasses; k++) {
        char *cd = sstc_data_strdup_printf("%s/%s", dir, classes[k]);
        if (!cd) {
            rc = sstc_fail(SSTC_ENOMEM, "out of memory");
            goto done;
        }
        rc = list_class(cd, k, &L);
        free(cd);
        if (rc) goto done;
    }
    if (L.n == 0) {
        rc = sstc_fail(SSTC_EFORMAT, "%s: no images found, expected %s/<class>/<image>.png or .jpg", dir, dir);
        goto done;
    }
    if (L.n > INT_MAX) {
        rc = sstc_fail(SSTC_EFORMAT, "%s: too many images", dir);
        goto done;
    }
    uint64_t fp = listing_fingerprint(classes, nclasses, &L);
    if (cache_path && cache_read(cache_path, fp, (int)L.n, classes, nclasses, out)) {
        out->from_cache = 1;
    } else {
        rc = decode_all(dir, classes, &L, out);
        if (rc) goto done;
    }
    /* Class names move into the dataset. */
    out->class_names = classes;
    out->num_classes = nclasses;
    classes = NULL;
    out->format = "image folder";
    if (cache_path && !out->from_cache) cache_write(cache_path, fp, out);
done:
    if (classes) free_names(classes, nclasses);
    if (here) free_names(here, nhere);
    for (size_t i = 0; i < L.n; i++) free(L.items[i].name);
    free(L.items);
    if (rc) sstc_data_dataset_reset(out);
    return rc;
}
