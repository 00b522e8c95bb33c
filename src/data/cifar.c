/* CIFAR-10 binary batches: fixed 3073-byte records, one label byte then a
 * 32x32 RGB image stored channel by channel (already NCHW). */
#include "data/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sstc/error.h"

#define CIFAR_SIDE 32
#define CIFAR_PIXELS (3 * CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_RECORD (1 + CIFAR_PIXELS)
#define CIFAR_CLASSES 10

static const char *const cifar_names[CIFAR_CLASSES] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                       "dog",      "frog",       "horse", "ship", "truck"};

static int check_size(size_t len, const char *name) {
    if (len == 0) return sstc_fail(SSTC_EFORMAT, "%s: file is empty, expected CIFAR-10 records of %d bytes", name,
                                   CIFAR_RECORD);
    if (len % CIFAR_RECORD)
        return sstc_fail(SSTC_EFORMAT,
                         "%s: size %zu is not a whole number of %d-byte CIFAR-10 records (1 label byte + %d pixel "
                         "bytes): record %zu at byte offset %zu has only %zu bytes",
                         name, len, CIFAR_RECORD, CIFAR_PIXELS, len / CIFAR_RECORD,
                         len / CIFAR_RECORD * CIFAR_RECORD, len % CIFAR_RECORD);
    return 0;
}

/* Copies the records of buf into ds starting at image `first`. */
static int copy_records(const uint8_t *buf, size_t len, const char *name, sstc_dataset *ds, int first) {
    size_t n = len / CIFAR_RECORD;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *r = buf + i * CIFAR_RECORD;
        if (r[0] >= CIFAR_CLASSES)
            return sstc_fail(SSTC_EFORMAT, "%s: label %d of record %zu (byte offset %zu) is out of range, expected 0..%d",
                             name, r[0], i, i * CIFAR_RECORD, CIFAR_CLASSES - 1);
        ds->labels[first + (int)i] = r[0];
        memcpy(ds->pixels + (size_t)(first + (int)i) * CIFAR_PIXELS, r + 1, CIFAR_PIXELS);
    }
    return 0;
}

int sstc_dataset_from_cifar_buffer(const void *buf, size_t len, const char *name, sstc_dataset *out) {
    memset(out, 0, sizeof *out);
    if (!name) name = "cifar";
    if (!buf && len) return sstc_fail(SSTC_EINVAL, "sstc_dataset_from_cifar_buffer: NULL buffer");
    int rc = check_size(len, name);
    if (rc) return rc;
    if (len / CIFAR_RECORD > 0x7fffffff) return sstc_fail(SSTC_EFORMAT, "%s: too many records", name);
    rc = sstc_data_dataset_alloc(out, (int)(len / CIFAR_RECORD), 3, CIFAR_SIDE, CIFAR_SIDE);
    if (rc == 0) rc = copy_records(buf, len, name, out, 0);
    if (rc == 0) rc = sstc_data_dataset_set_classes(out, cifar_names, CIFAR_CLASSES);
    if (rc) {
        sstc_data_dataset_reset(out);
        return rc;
    }
    out->format = "CIFAR-10 binary";
    return 0;
}

int sstc_dataset_from_cifar_files(const char *const *paths, int npaths, sstc_dataset *out) {
    memset(out, 0, sizeof *out);
    if (npaths <= 0) return sstc_fail(SSTC_EINVAL, "no CIFAR-10 batch files given");
    /* Sizes first, so that the pixels are allocated once. */
    size_t total = 0;
    for (int i = 0; i < npaths; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0) return sstc_fail(SSTC_EIO, "%s: cannot open: %s", paths[i], strerror(errno));
        if (!S_ISREG(st.st_mode)) return sstc_fail(SSTC_EIO, "%s: not a regular file", paths[i]);
        int rc = check_size((size_t)st.st_size, paths[i]);
        if (rc) return rc;
        total += (size_t)st.st_size / CIFAR_RECORD;
    }
    if (total > 0x7fffffff) return sstc_fail(SSTC_EFORMAT, "too many CIFAR-10 records");
    int rc = sstc_data_dataset_alloc(out, (int)total, 3, CIFAR_SIDE, CIFAR_SIDE);
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    int first = 0;
    for (int i = 0; rc == 0 && i < npaths; i++) {
        rc = sstc_data_read_file_into(paths[i], &buf, &cap, &len);
        if (rc) break;
        rc = check_size(len, paths[i]); /* it may have changed since stat */
        if (rc == 0 && first + len / CIFAR_RECORD > total)
            rc = sstc_fail(SSTC_EIO, "%s: grew while being read", paths[i]);
        if (rc == 0) rc = copy_records(buf, len, paths[i], out, first);
        first += (int)(len / CIFAR_RECORD);
    }
    free(buf);
    if (rc == 0 && (size_t)first != total) rc = sstc_fail(SSTC_EIO, "CIFAR-10 files changed while being read");
    if (rc == 0) rc = sstc_data_dataset_set_classes(out, cifar_names, CIFAR_CLASSES);
    if (rc) {
        sstc_data_dataset_reset(out);
        return rc;
    }
    out->format = "CIFAR-10 binary";
    return 0;
}
