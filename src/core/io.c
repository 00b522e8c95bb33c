/* Reading whole files safely (see include/sstc/io.h). */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sstc/error.h"
#include "sstc/io.h"
#include "sstc/dist.h"

int sstc_read_file(const char *path, size_t max_bytes, const char *what, uint8_t **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    if (!path) return sstc_fail(SSTC_EINVAL, "read_file: NULL path");
    /* O_NONBLOCK: opening a FIFO must not wait for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return sstc_fail(SSTC_EIO, "%s: cannot open %s: %s", path, what, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        return sstc_fail(SSTC_EIO, "%s: cannot stat %s: %s", path, what, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sstc_fail(SSTC_EIO, "%s: not a regular file%s; expected a %s", path, S_ISDIR(st.st_mode) ? " (a folder)" : "",
                         what);
    }
    if ((uint64_t)st.st_size > (uint64_t)max_bytes) {
        close(fd);
        return sstc_fail(SSTC_EIO, "%s: %lld bytes, more than a %s can be (%zu)", path, (long long)st.st_size, what,
                         max_bytes);
    }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *b = malloc(n + 1);
    if (!b) {
        close(fd);
        return sstc_fail(SSTC_ENOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(b);
        return sstc_fail(SSTC_EIO, "%s: read %zu of %zu bytes of the %s", path, got, n, what);
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
}

int sstc_write_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    /* in a job of several MPI ranks, rank 0 writes every file (sstc/dist.h) */
    if (sstc_dist_rank() != 0) return 0;
    /* only a regular file is ever replaced: renaming over a device node or a
     * FIFO would destroy it */
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return sstc_fail(SSTC_EIO, "%s: exists and is not a regular file; not replacing it", path);
    /* a per-process temporary name: two writers never share one */
    int tn = snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    if (tn < 0 || (size_t)tn >= sizeof tmp) return sstc_fail(SSTC_EIO, "%.200s...: path too long", path);
    unlink(tmp); /* left by a killed process that had our pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return sstc_fail(SSTC_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    const unsigned char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return sstc_fail(SSTC_EIO, "%s: write failed: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) || close(fd)) {
        unlink(tmp);
        return sstc_fail(SSTC_EIO, "%s: fsync/close failed: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return sstc_fail(SSTC_EIO, "%s: rename failed: %s", path, strerror(e));
    }
    /* make the rename itself durable */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}
