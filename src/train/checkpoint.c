/* Checkpoint files.
 *
 * Layout (little-endian):
 *   "SSTCCKPT" u32 version
 *   u32 len, config text;  u32 count, then per override: u32 len, text
 *   u32 in_c, in_h, in_w, classes
 *   normalizer: u32 c, f32 mean[4], f32 std[4]
 *   epoch state: u32 epoch, u32 batch, f64 loss_sum, f64 err_sum, i64 seen, f64 seconds,
 *                f64 total_seconds
 *   u32 count of layers with an output scale; per layer: u16 name length, name
 *   u32 ntensors; per tensor: u16 name length, name, u32 ndim, u32 shape[4], f32 data
 *   optimizer: u32 kind, i64 step, u32 nparams; per param: u64 size, f32 m[size], (adam) f32 v[size]
 *   u64 extra length, extra bytes
 *   u32 CRC-32 of everything above
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <math.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

#define CKPT_MAGIC "SSTCCKPT"
#define CKPT_VERSION 1

typedef struct {
    unsigned char *p;
    size_t len, cap;
    int oom;
} wbuf;

static void put(wbuf *b, const void *data, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->len + n) cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}
static void put_u32(wbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(wbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_f64(wbuf *b, double v) { put(b, &v, 8); }
static void put_str(wbuf *b, const char *s) {
    uint32_t n = (uint32_t)strlen(s);
    put_u32(b, n);
    put(b, s, n);
}

typedef struct {
    const unsigned char *p;
    size_t len, off;
    const char *path;
    int err;
} rbuf;

static int get(rbuf *r, void *dst, size_t n, const char *what) {
    if (r->err) return -1;
    if (n > r->len - r->off) {
        r->err = 1;
        sstc_fail(SSTC_EFORMAT, "%s: truncated at byte %zu while reading %s (needs %zu more bytes, %zu left)", r->path,
                  r->off, what, n, r->len - r->off);
        return -1;
    }
    memcpy(dst, r->p + r->off, n);
    r->off += n;
    return 0;
}
static uint32_t get_u32(rbuf *r, const char *what) {
    uint32_t v = 0;
    get(r, &v, 4, what);
    return v;
}
static uint64_t get_u64(rbuf *r, const char *what) {
    uint64_t v = 0;
    get(r, &v, 8, what);
    return v;
}
static double get_f64(rbuf *r, const char *what) {
    double v = 0;
    get(r, &v, 8, what);
    return v;
}
static char *get_str(rbuf *r, const char *what) {
    uint32_t n = get_u32(r, what);
    if (r->err) return NULL;
    if (n > r->len - r->off) {
        r->err = 1;
        sstc_fail(SSTC_EFORMAT, "%s: %s of %u bytes at byte %zu runs past the end of the file", r->path, what, n, r->off);
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    get(r, s, n, what);
    s[n] = 0;
    return s;
}

int sstc_checkpoint_save(const sstc_session *s, const char *path, const void *extra, size_t extra_len) {
    wbuf b = {0};
    put(&b, CKPT_MAGIC, 8);
    put_u32(&b, CKPT_VERSION);
    put_str(&b, s->cfg_text ? s->cfg_text : "");
    put_u32(&b, (uint32_t)s->noverrides);
    for (int i = 0; i < s->noverrides; i++) put_str(&b, s->overrides[i]);
    put_u32(&b, (uint32_t)s->in_c);
    put_u32(&b, (uint32_t)s->in_h);
    put_u32(&b, (uint32_t)s->in_w);
    put_u32(&b, (uint32_t)s->classes);
    put_u32(&b, (uint32_t)s->norm.c);
    put(&b, s->norm.mean, sizeof s->norm.mean);
    put(&b, s->norm.std, sizeof s->norm.std);
    const sstc_epoch_state *st = &s->state;
    put_u32(&b, (uint32_t)st->epoch);
    put_u32(&b, (uint32_t)st->batch);
    put_f64(&b, st->loss_sum);
    put_f64(&b, st->err_sum);
    put_u64(&b, (uint64_t)st->seen);
    put_f64(&b, st->seconds);
    put_f64(&b, st->total_seconds);
    /* structure beyond the config: layers given an output scale by compression */
    uint32_t nscaled = 0;
    for (int i = 0; i < s->model->nlayers; i++) nscaled += s->model->layers[i].out_scale != NULL;
    put_u32(&b, nscaled);
    for (int i = 0; i < s->model->nlayers; i++)
        if (s->model->layers[i].out_scale) {
            uint16_t len = (uint16_t)strlen(s->model->layers[i].name);
            put(&b, &len, 2);
            put(&b, s->model->layers[i].name, len);
        }
    sstc_named_tensor nt[5 * SSTC_MAX_LAYERS];
    int n = sstc_model_named_tensors(s->model, nt, 5 * SSTC_MAX_LAYERS);
    put_u32(&b, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        uint16_t len = (uint16_t)strlen(nt[i].name);
        put(&b, &len, 2);
        put(&b, nt[i].name, len);
        sstc_tensor *t = nt[i].tensor;
        put_u32(&b, (uint32_t)t->ndim);
        for (int d = 0; d < 4; d++) put_u32(&b, (uint32_t)t->shape[d]);
        put(&b, t->data, t->size * sizeof(float));
    }
    const sstc_optimizer *o = s->opt;
    put_u32(&b, (uint32_t)o->cfg.kind);
    put_u64(&b, (uint64_t)o->step);
    put_u32(&b, (uint32_t)o->nparams);
    for (int i = 0; i < o->nparams; i++) {
        size_t sz = o->params[i]->size;
        put_u64(&b, sz);
        put(&b, o->m[i], sz * sizeof(float));
        if (o->v) put(&b, o->v[i], sz * sizeof(float));
    }
    put_u64(&b, extra ? extra_len : 0);
    if (extra && extra_len) put(&b, extra, extra_len);
    uint32_t crc = (uint32_t)crc32(0L, b.p, (uInt)b.len);
    put_u32(&b, crc);
    if (b.oom) {
        free(b.p);
        return sstc_fail(SSTC_ENOMEM, "%s: out of memory while writing the checkpoint", path);
    }
    int rc = sstc_write_atomic(path, b.p, b.len);
    free(b.p);
    return rc;
}

static int read_file(const char *path, unsigned char **data, size_t *len) {
    /* the largest network a config can describe stays far below this */
    return sstc_read_file(path, (size_t)1 << 34, "checkpoint", data, len);
}

/* Checks magic, version and CRC; leaves r positioned after the version. */
static int open_checked(const char *path, unsigned char **data, rbuf *r) {
    size_t len = 0;
    if (read_file(path, data, &len)) return sstc_errcode();
    *r = (rbuf){.p = *data, .len = len, .path = path};
    if (len < 16 || memcmp(*data, CKPT_MAGIC, 8))
        return sstc_fail(SSTC_EFORMAT, "%s: not an sstc checkpoint (bad magic at byte 0, expected \"%s\")", path, CKPT_MAGIC);
    uint32_t stored, crc = (uint32_t)crc32(0L, *data, (uInt)(len - 4));
    memcpy(&stored, *data + len - 4, 4);
    r->off = 8;
    uint32_t ver = get_u32(r, "version");
    if (ver != CKPT_VERSION)
        return sstc_fail(SSTC_EFORMAT, "%s: checkpoint version %u at byte 8, this build reads version %d", path, ver, CKPT_VERSION);
    if (stored != crc)
        return sstc_fail(SSTC_EFORMAT, "%s: checksum mismatch (stored %08x at byte %zu, computed %08x): the file is corrupt or truncated",
                         path, stored, len - 4, crc);
    r->len = len - 4;
    return 0;
}

/* Everything after the header strings and shapes. */
static int restore_body(sstc_session *s, rbuf *r, void **extra, size_t *extra_len) {
    s->norm.c = (int)get_u32(r, "normalizer");
    get(r, s->norm.mean, sizeof s->norm.mean, "normalizer mean");
    get(r, s->norm.std, sizeof s->norm.std, "normalizer std");
    sstc_epoch_state st;
    st.epoch = (int)get_u32(r, "epoch");
    st.batch = (int)get_u32(r, "batch");
    st.loss_sum = get_f64(r, "loss sum");
    st.err_sum = get_f64(r, "error sum");
    st.seen = (long)get_u64(r, "seen");
    st.seconds = get_f64(r, "seconds");
    st.total_seconds = get_f64(r, "total seconds");
    if (r->err) return sstc_errcode();
    /* a valid checksum only says the bytes are as written: every field is
     * checked against what it can be before it is used */
    if (s->norm.c < 1 || s->norm.c > 4)
        return sstc_fail(SSTC_EFORMAT, "%s: normalization for %d channels, expected 1 to 4", r->path, s->norm.c);
    for (int c = 0; c < s->norm.c; c++)
        if (!isfinite(s->norm.mean[c]) || !(s->norm.std[c] > 0 && isfinite(s->norm.std[c])))
            return sstc_fail(SSTC_EFORMAT, "%s: impossible input normalization (channel %d: mean %g, std %g)", r->path, c,
                             (double)s->norm.mean[c], (double)s->norm.std[c]);
    {
        int nb = s->batcher_ready ? sstc_batcher_num_batches(&s->batcher) : INT32_MAX;
        uint32_t raw_epoch = (uint32_t)st.epoch, raw_batch = (uint32_t)st.batch;
        if (raw_epoch > SSTC_MAX_EPOCHS || raw_batch > (uint32_t)nb || raw_batch > (uint32_t)INT32_MAX / 65536 ||
            st.seen < 0 || !(st.loss_sum >= 0) || !isfinite(st.loss_sum) || !(st.err_sum >= 0) || st.err_sum > st.seen ||
            !(st.seconds >= 0) || !isfinite(st.seconds) || !(st.total_seconds >= 0) || !isfinite(st.total_seconds))
            return sstc_fail(SSTC_EFORMAT, "%s: impossible position or running sums (epoch %u, batch %u of %d, %ld seen, "
                             "loss sum %g, errors %g)", r->path, raw_epoch, raw_batch, nb, st.seen, st.loss_sum, st.err_sum);
    }
    uint32_t nscaled = get_u32(r, "scaled layer count");
    if (r->err) return sstc_errcode();
    if (nscaled > (uint32_t)s->model->nlayers)
        return sstc_fail(SSTC_EFORMAT, "%s: %u scaled layers at byte %zu, the network has %d layers", r->path, nscaled,
                         r->off - 4, s->model->nlayers);
    for (uint32_t i = 0; i < nscaled; i++) {
        uint16_t len = 0;
        char name[64] = "";
        get(r, &len, 2, "layer name length");
        if (r->err) return sstc_errcode();
        if (len >= sizeof name)
            return sstc_fail(SSTC_EFORMAT, "%s: layer name of %u bytes at byte %zu", r->path, len, r->off);
        get(r, name, len, "layer name");
        if (r->err) return sstc_errcode();
        sstc_layer *l = NULL;
        for (int k = 0; k < s->model->nlayers; k++)
            if (!strcmp(s->model->layers[k].name, name)) l = &s->model->layers[k];
        if (!l || sstc_layer_add_out_scale(s->model, l))
            return sstc_fail(SSTC_EFORMAT, "%s: scaled layer '%s' (byte %zu) is not a linear/conv layer of this network",
                             r->path, name, r->off);
    }
    sstc_named_tensor nt[5 * SSTC_MAX_LAYERS];
    int n = sstc_model_named_tensors(s->model, nt, 5 * SSTC_MAX_LAYERS);
    uint32_t count = get_u32(r, "tensor count");
    if (r->err) return sstc_errcode();
    if (count != (uint32_t)n)
        return sstc_fail(SSTC_EFORMAT, "%s: holds %u tensors, the network has %d (a checkpoint of a different network)",
                         r->path, count, n);
    for (int i = 0; i < n; i++) {
        uint16_t len = 0;
        get(r, &len, 2, "tensor name length");
        char name[256] = "";
        get(r, name, len < 255 ? len : 255, "tensor name");
        if (len >= 255 && !r->err) {
            if ((size_t)(len - 255) > r->len - r->off) {
                r->err = 1;
                return sstc_fail(SSTC_EFORMAT, "%s: tensor name of %u bytes at byte %zu runs past the end of the file",
                                 r->path, len, r->off);
            }
            r->off += len - 255;
        }
        uint32_t ndim = get_u32(r, "tensor rank");
        uint32_t shape[4];
        for (int d = 0; d < 4; d++) shape[d] = get_u32(r, "tensor shape");
        if (r->err) return sstc_errcode();
        sstc_tensor *t = nt[i].tensor;
        int same = !strcmp(name, nt[i].name) && ndim == (uint32_t)t->ndim;
        for (int d = 0; d < 4 && same; d++) same = shape[d] == (uint32_t)t->shape[d];
        if (!same) {
            char sb[64];
            return sstc_fail(SSTC_EFORMAT, "%s: tensor %d is '%s' (%u,%u,%u,%u) at byte %zu, the network expects '%s' %s",
                             r->path, i, name, shape[0], shape[1], shape[2], shape[3], r->off, nt[i].name,
                             sstc_shape_str(t, sb, sizeof sb));
        }
        if (get(r, t->data, t->size * sizeof(float), name)) return sstc_errcode();
        for (size_t k = 0; k < t->size; k++)
            if (!isfinite(t->data[k]))
                return sstc_fail(SSTC_EFORMAT, "%s: tensor '%s' holds %g at index %zu; a checkpoint holds finite values only",
                                 r->path, name, (double)t->data[k], k);
    }
    sstc_optimizer *o = s->opt;
    uint32_t kind = get_u32(r, "optimizer kind");
    int64_t step = (int64_t)get_u64(r, "optimizer step");
    uint32_t np = get_u32(r, "optimizer parameter count");
    if (r->err) return sstc_errcode();
    if (kind != (uint32_t)o->cfg.kind || np != (uint32_t)o->nparams)
        return sstc_fail(SSTC_EFORMAT, "%s: optimizer state (kind %u, %u parameters) does not match the config (kind %d, %d parameters)",
                         r->path, kind, np, (int)o->cfg.kind, o->nparams);
    o->step = step;
    for (int i = 0; i < o->nparams; i++) {
        uint64_t sz = get_u64(r, "optimizer buffer size");
        if (r->err) return sstc_errcode();
        if (sz != o->params[i]->size)
            return sstc_fail(SSTC_EFORMAT, "%s: optimizer buffer %d has %llu values at byte %zu, expected %zu", r->path, i,
                             (unsigned long long)sz, r->off, o->params[i]->size);
        get(r, o->m[i], sz * sizeof(float), "optimizer moments");
        if (o->v) get(r, o->v[i], sz * sizeof(float), "optimizer moments");
    }
    uint64_t elen = get_u64(r, "extra length");
    if (r->err) return sstc_errcode();
    if (elen != r->len - r->off)
        return sstc_fail(SSTC_EFORMAT, "%s: extra section of %llu bytes at byte %zu, but %zu bytes remain", r->path,
                         (unsigned long long)elen, r->off, r->len - r->off);
    if (extra) {
        *extra = malloc(elen ? elen : 1);
        if (!*extra) return sstc_fail(SSTC_ENOMEM, "out of memory");
        memcpy(*extra, r->p + r->off, elen);
        *extra_len = elen;
    }
    s->state = st;
    return 0;
}

int sstc_checkpoint_open(sstc_session **out, const char *path, int load_data, void **extra, size_t *extra_len) {
    unsigned char *data = NULL;
    rbuf r;
    char *text = NULL, **ovr = NULL;
    uint32_t nov = 0;
    if (!out) return sstc_fail(SSTC_EINVAL, "checkpoint_open: NULL out");
    *out = NULL;
    if (extra) *extra = NULL;
    if (extra_len) *extra_len = 0;
    sstc_session *s = calloc(1, sizeof *s); /* safe to close whatever happens below */
    if (!s) return sstc_fail(SSTC_ENOMEM, "checkpoint_open: out of memory");
    int rc = open_checked(path, &data, &r);
    if (rc) goto done;
    text = get_str(&r, "config text");
    nov = get_u32(&r, "override count");
    if (r.err) goto fail;
    if (nov > 1024) {
        rc = sstc_fail(SSTC_EFORMAT, "%s: %u overrides at byte %zu, expected at most 1024", path, nov, r.off - 4);
        goto done;
    }
    ovr = calloc(nov + 1, sizeof *ovr);
    if (!ovr) {
        rc = sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (uint32_t i = 0; i < nov && !r.err; i++) ovr[i] = get_str(&r, "override");
    int in_c = (int)get_u32(&r, "input shape");
    int in_h = (int)get_u32(&r, "input shape");
    int in_w = (int)get_u32(&r, "input shape");
    int classes = (int)get_u32(&r, "class count");
    if (r.err) goto fail;
    if (in_c < 1 || in_c > 4 || in_h < 1 || in_w < 1 || in_h > 4096 || in_w > 4096 || classes < 1 || classes > 100000) {
        rc = sstc_fail(SSTC_EFORMAT, "%s: impossible input shape %dx%dx%d or %d classes", path, in_c, in_h, in_w, classes);
        goto done;
    }
    /* Peek at the normalizer so a data load uses the stored statistics. */
    sstc_normalizer norm = {0};
    size_t save = r.off;
    norm.c = (int)get_u32(&r, "normalizer");
    get(&r, norm.mean, sizeof norm.mean, "normalizer mean");
    get(&r, norm.std, sizeof norm.std, "normalizer std");
    r.off = save;
    if (r.err) goto fail;
    if (norm.c != in_c) {
        rc = sstc_fail(SSTC_EFORMAT, "%s: normalizer for %d channels, the input has %d", path, norm.c, in_c);
        goto done;
    }
    rc = sstc_session_open_known(s, text, path, (const char *const *)ovr, (int)nov, in_c, in_h, in_w, classes, &norm);
    if (rc) {
        sstc_fail_prefix(rc, "%s: the stored config does not load: ", path);
        goto done;
    }
    rc = restore_body(s, &r, extra, extra_len);
    if (rc) goto done;
    if (load_data) rc = sstc_session_load_data(s, NULL);
    goto done;
fail:
    rc = sstc_errcode() ? sstc_errcode() : SSTC_EFORMAT;
done:
    if (ovr)
        for (uint32_t i = 0; i < nov; i++) free(ovr[i]);
    free(ovr);
    free(text);
    free(data);
    if (rc) {
        if (extra && *extra) {
            free(*extra);
            *extra = NULL;
        }
        sstc_session_close(s);
    } else {
        *out = s;
    }
    return rc;
}

int sstc_checkpoint_restore(sstc_session *s, const char *path, void **extra, size_t *extra_len) {
    unsigned char *data = NULL;
    rbuf r;
    int rc = open_checked(path, &data, &r);
    if (rc) goto done;
    char *text = get_str(&r, "config text");
    free(text);
    uint32_t nov = get_u32(&r, "override count");
    if (nov > 1024) {
        rc = sstc_fail(SSTC_EFORMAT, "%s: %u overrides, expected at most 1024", path, nov);
        goto done;
    }
    for (uint32_t i = 0; i < nov && !r.err; i++) free(get_str(&r, "override"));
    int shp[4];
    for (int i = 0; i < 4; i++) shp[i] = (int)get_u32(&r, "input shape");
    if (r.err) { rc = sstc_errcode(); goto done; }
    if (shp[0] != s->in_c || shp[1] != s->in_h || shp[2] != s->in_w || shp[3] != s->classes) {
        rc = sstc_fail(SSTC_EFORMAT, "%s: a network for %dx%dx%d inputs and %d classes, this one takes %dx%dx%d and %d",
                       path, shp[0], shp[1], shp[2], shp[3], s->in_c, s->in_h, s->in_w, s->classes);
        goto done;
    }
    /* The session's own normalization stays: it was computed the same way from
     * the same data, and its pipeline is already built on it. */
    sstc_normalizer keep = s->norm;
    rc = restore_body(s, &r, extra, extra_len);
    s->norm = keep;
done:
    free(data);
    return rc;
}

/* Names the first differing line of two texts (for the message). */
static void first_difference(const char *a, const char *b, char *out, size_t n) {
    int line = 1;
    const char *la = a, *lb = b;
    while (*a && *a == *b) {
        if (*a == '\n') line++, la = a + 1, lb = b + 1;
        a++, b++;
    }
    int ea = (int)strcspn(la, "\n"), eb = (int)strcspn(lb, "\n");
    snprintf(out, n, "line %d is now '%.*s', it was '%.*s'", line, ea > 80 ? 80 : ea, la, eb > 80 ? 80 : eb, lb);
}

int sstc_checkpoint_check_config(const sstc_session *s, const char *path) {
    unsigned char *data = NULL;
    rbuf r;
    int rc = open_checked(path, &data, &r);
    if (rc) return rc;
    char *text = get_str(&r, "config text");
    uint32_t nov = get_u32(&r, "override count");
    if (r.err || nov > 1024) {
        free(text);
        free(data);
        return r.err ? sstc_errcode() : sstc_fail(SSTC_EFORMAT, "%s: %u overrides, expected at most 1024", path, nov);
    }
    char diff[300] = "";
    if (strcmp(text, s->cfg_text ? s->cfg_text : "")) first_difference(s->cfg_text ? s->cfg_text : "", text, diff, sizeof diff);
    for (uint32_t i = 0; i < nov && !r.err; i++) {
        char *o = get_str(&r, "override");
        if (!diff[0] && (i >= (uint32_t)s->noverrides || strcmp(o, s->overrides[i])))
            snprintf(diff, sizeof diff, "the run was started with --set %s%s", o ? o : "?",
                     i < (uint32_t)s->noverrides ? "" : " (missing now)");
        free(o);
    }
    if (!diff[0] && (uint32_t)s->noverrides > nov)
        snprintf(diff, sizeof diff, "--set %s was not given when the run started", s->overrides[nov]);
    rc = r.err ? sstc_errcode() : 0;
    if (!rc && diff[0])
        rc = sstc_fail(SSTC_ECONFIG, "%s was written with another configuration than %s now gives: %s; "
                       "resume with the same config and --set options (or --allow-config-change to accept and record it)",
                       path, s->cfg.path, diff);
    free(text);
    free(data);
    return rc;
}
