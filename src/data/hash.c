/* File digests for dataset verification, computed with nettle. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nettle/md5.h>
#include <nettle/sha2.h>

#include "internal.h"
#include "sstc/error.h"

static void to_hex(const uint8_t *d, size_t n, char *hex) {
    for (size_t i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

int sstc_data_file_digest(const char *path, const char *algo, char *hex, size_t hex_size) {
    int sha = !strcmp(algo, "sha256");
    if (!sha && strcmp(algo, "md5")) return sstc_fail(SSTC_EINVAL, "digest: unknown algorithm '%s' (sha256 or md5)", algo);
    if (hex_size < (sha ? 65u : 33u)) return sstc_fail(SSTC_EINVAL, "digest buffer too small");
    FILE *f = fopen(path, "rb");
    if (!f) return sstc_fail(SSTC_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct sha256_ctx s;
    struct md5_ctx m;
    if (sha) sha256_init(&s);
    else md5_init(&m);
    size_t bufsize = 1 << 20;
    uint8_t *buf = malloc(bufsize);
    if (!buf) {
        fclose(f);
        return sstc_fail(SSTC_ENOMEM, "out of memory");
    }
    size_t got;
    while ((got = fread(buf, 1, bufsize, f)) > 0) {
        if (sha) sha256_update(&s, got, buf);
        else md5_update(&m, got, buf);
    }
    int err = ferror(f);
    fclose(f);
    free(buf);
    if (err) return sstc_fail(SSTC_EIO, "%s: read error while computing its %s", path, algo);
    uint8_t d[SHA256_DIGEST_SIZE];
    if (sha) {
        sha256_digest(&s, SHA256_DIGEST_SIZE, d);
        to_hex(d, SHA256_DIGEST_SIZE, hex);
    } else {
        md5_digest(&m, MD5_DIGEST_SIZE, d);
        to_hex(d, MD5_DIGEST_SIZE, hex);
    }
    return 0;
}
