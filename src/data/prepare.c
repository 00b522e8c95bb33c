/* sstc_dataset_prepare: puts a known dataset under the data root.
 *
 * Order of sources: local mirrors first (SSTC_DATA_MIRROR, ../shared/datasets,
 * /usr/share/datasets), then the upstream download. A mirror may hold this
 * project's archive (mnist-png.tar.gz, cifar10-jpg.tar.gz, listed in its
 * SHA256SUMS) or the upstream files themselves (IDX .gz files, the CIFAR-10
 * binary tarball), which are checked against SHA256SUMS when listed there,
 * against the Debian package's md5sums under /usr/share/datasets, and
 * against the upstream MD5 otherwise.
 *
 * Everything is assembled in a private folder <root>/.<name>.partial-<pid>
 * and renamed into place as the last step, so <root>/<name> only ever exists
 * complete, and a second call finds it and does nothing. tar, curl and wget
 * run as child processes (no shell), their failures reported with their
 * messages. */
#include "data/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sstc/error.h"

extern char **environ;

#define MARKER ".sstc-prepared"

typedef struct {
    const char *file, *md5;
} upstream_file;

typedef struct {
    const char *name;
    const char *archive;      /* the mirror's archive (checked with SHA256SUMS), or NULL */
    const char *archive_top;  /* the folder it extracts to */
    upstream_file up[4];
    int nup;
    const char *up_top;       /* upstream file is a tarball extracting to this folder, or NULL */
    const char *urls[3];      /* upstream URL prefixes, tried in order */
    int verbose;              /* set on the caller's copy: print progress */
} spec;

static const spec specs[] = {
    {"mnist",
     "mnist-png.tar.gz",
     "mnist-png",
     {{"train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"},
      {"train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"},
      {"t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"},
      {"t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"}},
     4,
     NULL,
     {"https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/", NULL},
     0},
    {"fashion-mnist",
     NULL,
     NULL,
     {{"train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
      {"train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"},
      {"t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"},
      {"t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"}},
     4,
     NULL,
     {"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", NULL, NULL},
     0},
    {"cifar10",
     "cifar10-jpg.tar.gz",
     "cifar10-jpg",
     {{"cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"}},
     1,
     "cifar-10-batches-bin",
     {"https://www.cs.toronto.edu/~kriz/", NULL, NULL},
     0},
};

static void say(const spec *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const spec *s, const char *fmt, ...) {
    if (!s->verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", s->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- child processes ---- */

/* Runs argv (looked up in PATH) with stdout and stderr going to log_path.
 * Returns the exit status, 127 if the program is missing, -1 if killed. */
static int run_tool(char *const argv[], const char *log_path) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return rc == ENOENT ? 127 : -1;
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return -1;
}

/* The last non-empty line of a log file, for error messages. */
static void log_tail(const char *path, char *out, size_t size) {
    out[0] = 0;
    uint8_t *buf;
    size_t len;
    if (sstc_data_read_file(path, &buf, &len)) {
        sstc_clear_error();
        return;
    }
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ')) buf[--len] = 0;
    char *line = (char *)buf;
    for (char *p = (char *)buf; *p; p++)
        if (*p == '\n' && p[1]) line = p + 1;
    snprintf(out, size, "%s", line);
    free(buf);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

static void remove_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* ---- checksums ---- */

/* Looks up `file` in a "<hex>  <name>" list; writes the hex into out. */
static int sums_lookup(const char *sums_path, const char *file, char *out, size_t size) {
    uint8_t *buf;
    size_t len;
    if (!sstc_data_is_file(sums_path) || sstc_data_read_file(sums_path, &buf, &len)) {
        sstc_clear_error();
        return 0;
    }
    int found = 0;
    for (char *save = NULL, *line = strtok_r((char *)buf, "\n", &save); line && !found;
         line = strtok_r(NULL, "\n", &save)) {
        char hex[129], name[4096];
        if (sscanf(line, "%128s %4095s", hex, name) != 2) continue;
        const char *n = name[0] == '*' ? name + 1 : name; /* binary-mode marker */
        size_t ln = strlen(n), lf = strlen(file);
        /* Exact name, or a path ending in /file (dpkg lists usr/share/...). */
        if (!strcmp(n, file) || (ln > lf && n[ln - lf - 1] == '/' && !strcmp(n + ln - lf, file))) {
            snprintf(out, size, "%s", hex);
            found = 1;
        }
    }
    free(buf);
    return found;
}

/* Verifies path (found in folder dir) and returns 0, or fails saying what did
 * not match. up_md5: the upstream MD5, or NULL. */
static int verify(const spec *s, const char *dir, const char *path, const char *file, const char *up_md5) {
    char expect[129], got[65];
    const char *algo = NULL, *from = NULL;
    char *sums = sstc_data_path_join(dir, "SHA256SUMS");
    char *dpkg = NULL;
    if (sums && sums_lookup(sums, file, expect, sizeof expect)) {
        algo = "sha256";
        from = sums;
    } else {
        char real[4096];
        /* A Debian dataset-* package: dpkg keeps the MD5 of every file it installed. */
        if (realpath(dir, real) && !strncmp(real, "/usr/share/datasets/", 20)) {
            const char *pkg = real + 20;
            size_t n = strcspn(pkg, "/");
            dpkg = sstc_data_strdup_printf("/var/lib/dpkg/info/dataset-%.*s.md5sums", (int)n, pkg);
            char rel[4200];
            snprintf(rel, sizeof rel, "%s/%s", real + 1, file);
            if (dpkg && sums_lookup(dpkg, rel, expect, sizeof expect)) {
                algo = "md5";
                from = dpkg;
            }
        }
        if (!algo && up_md5) {
            snprintf(expect, sizeof expect, "%s", up_md5);
            algo = "md5";
            from = "the upstream checksum";
        }
    }
    int rc;
    if (!algo) {
        rc = sstc_fail(SSTC_EIO, "%s: no checksum to verify it against (expected a line for %s in %s/SHA256SUMS)", path,
                       file, dir);
    } else if ((rc = sstc_data_file_digest(path, algo, got, sizeof got)) == 0) {
        if (strcasecmp(got, expect))
            rc = sstc_fail(SSTC_EFORMAT, "%s: %s checksum mismatch: expected %s (from %s), got %s; the file is damaged or "
                           "not the expected one",
                           path, algo, expect, from, got);
        else
            say(s, "%s %s ok (%s)", file, algo, from);
    }
    free(sums);
    free(dpkg);
    return rc;
}

/* ---- assembling ---- */

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return sstc_fail(SSTC_EIO, "%s: cannot open: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return sstc_fail(SSTC_EIO, "%s: cannot create: %s", to, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int ok = 1;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) ok = 0;
    if (ferror(in)) ok = 0;
    fclose(in);
    if (fclose(out) != 0) ok = 0;
    if (!ok) return sstc_fail(SSTC_EIO, "copying %s to %s failed: %s", from, to, strerror(errno));
    return 0;
}

static int extract(const spec *s, const char *archive, const char *tmp) {
    char *log = sstc_data_path_join(tmp, ".tar.log");
    if (!log) return sstc_fail(SSTC_ENOMEM, "out of memory");
    say(s, "extracting %s", archive);
    char *argv[] = {"tar", "-xzf", (char *)archive, "-C", (char *)tmp, "--no-same-owner", NULL};
    int st = run_tool(argv, log);
    int rc = 0;
    if (st != 0) {
        char tail[512];
        log_tail(log, tail, sizeof tail);
        rc = sstc_fail(SSTC_EIO, "%s: extraction with tar failed (%s%s%s)", archive,
                       st == 127 ? "tar not found in PATH" : st < 0 ? "tar was killed" : "tar exited with an error",
                       tail[0] ? ": " : "", tail);
    }
    remove(log);
    free(log);
    return rc;
}

static int write_marker(const char *dir, const char *source) {
    char *p = sstc_data_path_join(dir, MARKER);
    FILE *f = p ? fopen(p, "w") : NULL;
    if (!f) {
        int rc = sstc_fail(SSTC_EIO, "%s: cannot create: %s", p ? p : dir, strerror(errno));
        free(p);
        return rc;
    }
    fprintf(f, "prepared by sstc from %s\n", source);
    int bad = fclose(f) != 0;
    free(p);
    return bad ? sstc_fail(SSTC_EIO, "%s: write failed", dir) : 0;
}

/* Moves the assembled folder into place. Losing a race to another process
 * that prepared the same dataset is success. */
static int publish(const spec *s, const char *ready, const char *dest, const char *source) {
    int rc = write_marker(ready, source);
    if (rc) return rc;
    if (rename(ready, dest) != 0) {
        int e = errno;
        char *m = sstc_data_path_join(dest, MARKER);
        int other = m && sstc_data_is_file(m);
        free(m);
        if (other) return 0;
        return sstc_fail(SSTC_EIO, "cannot move %s to %s: %s", ready, dest, strerror(e));
    }
    say(s, "ready in %s", dest);
    return 0;
}

/* A source is either the mirror's archive or all the upstream files in one folder. */
typedef struct {
    char *dir;       /* folder holding it */
    int is_archive;  /* 1: s->archive; 0: the upstream files */
} source;

static int find_source(const spec *s, source *src, char *looked, size_t looked_size) {
    char *list[32];
    int n = 0;
    const char *env = getenv("SSTC_DATA_MIRROR");
    char *envcopy = env && *env ? sstc_data_strdup_printf("%s", env) : NULL;
    if (envcopy)
        for (char *save = NULL, *t = strtok_r(envcopy, ":", &save); t && n < 28; t = strtok_r(NULL, ":", &save))
            list[n++] = sstc_data_strdup_printf("%s", t);
    list[n++] = sstc_data_strdup_printf("../shared/datasets");
    list[n++] = sstc_data_strdup_printf("/usr/share/datasets");
    free(envcopy);
    int found = 0;
    size_t used = 0;
    looked[0] = 0;
    for (int i = 0; i < n && !found; i++) {
        if (!list[i]) continue;
        used += (size_t)snprintf(looked + used, used < looked_size ? looked_size - used : 0, "%s%s%s",
                                 used ? ", " : "", list[i], sstc_data_is_dir(list[i]) ? "" : " (absent)");
        if (used >= looked_size) used = looked_size - 1;
        for (int sub = 0; sub < 2 && !found; sub++) {
            char *dir = sub ? sstc_data_path_join(list[i], s->name) : sstc_data_strdup_printf("%s", list[i]);
            if (!dir) continue;
            if (s->archive) {
                char *a = sstc_data_path_join(dir, s->archive);
                if (a && sstc_data_is_file(a)) {
                    src->dir = dir, src->is_archive = 1, found = 1;
                }
                free(a);
            }
            if (!found) {
                int all = 1;
                for (int k = 0; k < s->nup && all; k++) {
                    char *f = sstc_data_path_join(dir, s->up[k].file);
                    all = f && sstc_data_is_file(f);
                    free(f);
                }
                if (all) src->dir = dir, src->is_archive = 0, found = 1;
            }
            if (!found) free(dir);
        }
    }
    for (int i = 0; i < n; i++) free(list[i]);
    return found;
}

/* Turns verified upstream files in folder `from` into the dataset folder
 * (inside tmp); returns the folder to publish (malloc'd) or NULL. */
static char *assemble_upstream(const spec *s, const char *from, const char *tmp, int copy) {
    if (s->up_top) {
        char *a = sstc_data_path_join(from, s->up[0].file);
        int rc = a ? extract(s, a, tmp) : sstc_fail(SSTC_ENOMEM, "out of memory");
        free(a);
        if (rc) return NULL;
        char *top = sstc_data_path_join(tmp, s->up_top);
        if (top && !sstc_data_is_dir(top)) {
            sstc_fail(SSTC_EFORMAT, "%s: did not contain the folder %s/", s->up[0].file, s->up_top);
            free(top);
            return NULL;
        }
        return top;
    }
    char *out = sstc_data_path_join(tmp, s->name);
    if (!out || mkdir(out, 0777) != 0) {
        sstc_fail(SSTC_EIO, "%s: cannot create folder: %s", out ? out : tmp, strerror(errno));
        free(out);
        return NULL;
    }
    for (int k = 0; k < s->nup; k++) {
        char *a = sstc_data_path_join(from, s->up[k].file), *b = sstc_data_path_join(out, s->up[k].file);
        int rc = !a || !b ? sstc_fail(SSTC_ENOMEM, "out of memory") : copy ? copy_file(a, b) : rename(a, b) ? sstc_fail(SSTC_EIO, "cannot move %s: %s", a, strerror(errno)) : 0;
        free(a);
        free(b);
        if (rc) {
            free(out);
            return NULL;
        }
    }
    return out;
}

static const char *curl_reason(int code) {
    switch (code) {
    case 5: return "could not resolve proxy";
    case 6: return "could not resolve host";
    case 7: return "could not connect";
    case 22: return "HTTP error";
    case 28: return "timed out";
    case 35: return "TLS handshake failed";
    case 56: return "connection lost";
    default: return "failed";
    }
}

/* Downloads one URL to out_path; on failure writes the reason into why. */
static int download(const char *url, const char *out_path, const char *log, char *why, size_t why_size) {
    char *curl[] = {"curl", "-fsSL", "--connect-timeout", "20", "--retry", "2", "-o", (char *)out_path,
                    (char *)url, NULL};
    int st = run_tool(curl, log);
    if (st == 0) return 0;
    char tail[300];
    if (st != 127) {
        log_tail(log, tail, sizeof tail);
        snprintf(why, why_size, "curl: %s (exit %d)%s%s", curl_reason(st), st, tail[0] ? ": " : "", tail);
        return -1;
    }
    char *wget[] = {"wget", "-q", "-T", "20", "-t", "2", "-O", (char *)out_path, (char *)url, NULL};
    st = run_tool(wget, log);
    if (st == 0) return 0;
    if (st == 127) {
        snprintf(why, why_size, "neither curl nor wget is installed");
        return -1;
    }
    log_tail(log, tail, sizeof tail);
    snprintf(why, why_size, "wget: %s (exit %d)%s%s",
             st == 4 ? "network failure" : st == 8 ? "server error" : "failed", st, tail[0] ? ": " : "", tail);
    return -1;
}

static int fetch_upstream(const spec *s, const char *tmp, const char *looked) {
    const char *override = getenv("SSTC_DATA_UPSTREAM");
    char *dl = sstc_data_path_join(tmp, ".download");
    char *log = sstc_data_path_join(tmp, ".download.log");
    if (!dl || !log || mkdir(dl, 0777) != 0) {
        free(dl);
        free(log);
        return sstc_fail(SSTC_EIO, "%s: cannot create a download folder", tmp);
    }
    int rc = 0;
    for (int k = 0; k < s->nup && rc == 0; k++) {
        char *out = sstc_data_path_join(dl, s->up[k].file);
        char why[700] = "";
        int ok = 0;
        char *first_url = NULL;
        for (int u = 0; u < 3 && !ok; u++) {
            const char *prefix = override && *override ? (u == 0 ? override : NULL) : s->urls[u];
            if (!prefix) break;
            char *url = sstc_data_strdup_printf("%s%s%s", prefix, prefix[strlen(prefix) - 1] == '/' ? "" : "/",
                                           s->up[k].file);
            if (!url || !out) break;
            say(s, "downloading %s", url);
            ok = download(url, out, log, why, sizeof why) == 0;
            if (!first_url) first_url = url;
            else free(url);
        }
        if (!ok)
            rc = sstc_fail(SSTC_EIO,
                           "%s: no local mirror found (looked for %s%s%s in %s) and the download of %s failed: %s. "
                           "Without network access, put the files in a folder and set SSTC_DATA_MIRROR to it, or "
                           "copy them into %s/%s/",
                           s->name, s->archive ? s->archive : "", s->archive ? " or " : "", s->up[k].file, looked,
                           first_url ? first_url : s->up[k].file, why, sstc_data_root(), s->name);
        else
            rc = verify(s, dl, out, s->up[k].file, s->up[k].md5);
        free(first_url);
        free(out);
    }
    remove(log);
    free(log);
    free(dl);
    return rc;
}

static const spec *find_spec(const char *name) {
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        if (name && !strcmp(name, specs[i].name)) return &specs[i];
    return NULL;
}

int sstc_dataset_prepare(const char *name, int verbose) {
    const spec *found = find_spec(name);
    if (!found)
        return sstc_fail(SSTC_EINVAL,
                         "unknown dataset '%s'; known: mnist, cifar10, fashion-mnist (a folder of your own images "
                         "needs no preparation: pass its path instead)",
                         name ? name : "(null)");
    spec job = *found;
    job.verbose = verbose;
    const spec *s = &job;
    double t0 = now_s();
    const char *root = sstc_data_root();
    char *dest = sstc_data_path_join(root, s->name);
    char *marker = dest ? sstc_data_path_join(dest, MARKER) : NULL;
    char *tmp = sstc_data_strdup_printf("%s/.%s.partial-%ld", root, s->name, (long)getpid());
    char *ready = NULL;
    source src = {NULL, 0};
    int rc = 0;
    if (!dest || !marker || !tmp) {
        rc = sstc_fail(SSTC_ENOMEM, "out of memory");
        goto done;
    }
    if (sstc_data_is_dir(dest)) {
        if (sstc_data_is_file(marker)) say(s, "already prepared in %s", dest);
        else say(s, "%s already exists (not prepared by sstc); leaving it as it is", dest);
        goto done;
    }
    if ((rc = sstc_data_mkdirs(root))) goto done;
    remove_tree(tmp);
    if (mkdir(tmp, 0777) != 0) {
        rc = sstc_fail(SSTC_EIO, "%s: cannot create folder: %s", tmp, strerror(errno));
        goto done;
    }
    char looked[1024];
    char *source_desc = NULL;
    if (find_source(s, &src, looked, sizeof looked)) {
        if (src.is_archive) {
            char *a = sstc_data_path_join(src.dir, s->archive);
            say(s, "using the mirror %s", a);
            rc = verify(s, src.dir, a, s->archive, NULL);
            if (rc == 0) rc = extract(s, a, tmp);
            if (rc == 0) {
                ready = sstc_data_path_join(tmp, s->archive_top);
                if (!sstc_data_is_dir(ready))
                    rc = sstc_fail(SSTC_EFORMAT, "%s: did not contain the folder %s/", a, s->archive_top);
            }
            source_desc = a;
        } else {
            say(s, "using the upstream files in %s", src.dir);
            for (int k = 0; k < s->nup && rc == 0; k++) {
                char *f = sstc_data_path_join(src.dir, s->up[k].file);
                rc = f ? verify(s, src.dir, f, s->up[k].file, s->up[k].md5) : sstc_fail(SSTC_ENOMEM, "out of memory");
                free(f);
            }
            if (rc == 0 && !(ready = assemble_upstream(s, src.dir, tmp, 1))) rc = sstc_errcode() ? sstc_errcode() : SSTC_EIO;
            source_desc = sstc_data_strdup_printf("%s", src.dir);
        }
    } else {
        say(s, "no local mirror found (looked in %s); downloading", looked);
        rc = fetch_upstream(s, tmp, looked);
        char *dl = sstc_data_path_join(tmp, ".download");
        if (rc == 0 && !(ready = assemble_upstream(s, dl, tmp, 0))) rc = sstc_errcode() ? sstc_errcode() : SSTC_EIO;
        free(dl);
        source_desc = sstc_data_strdup_printf("%s", s->urls[0]);
    }
    if (rc == 0) rc = publish(s, ready, dest, source_desc ? source_desc : "?");
    if (rc == 0) say(s, "done in %.1f s", now_s() - t0);
    free(source_desc);
    remove_tree(tmp);
done:
    free(src.dir);
    free(ready);
    free(dest);
    free(marker);
    free(tmp);
    return rc;
}
