#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cblas.h>

#include "internal.h"

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, used;
    unsigned char *base;
} arena_chunk;

#define ALIGN 64

/* Large chunks start on a 2 MB boundary. (Transparent huge pages were tried:
 * with the kernel's synchronous compaction their first touch varied from 0.2
 * to 3.5 s per GB here, so the arena leaves the choice to the system.) */
#define HUGE_PAGE ((size_t)2 << 20)

static arena_chunk *chunk_new(sstc_ctx *ctx, size_t cap) {
    arena_chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    size_t align = cap >= 4 * HUGE_PAGE ? HUGE_PAGE : ALIGN;
    size_t bytes = (cap + align - 1) / align * align;
    c->base = aligned_alloc(align, bytes);
    if (!c->base) {
        free(c);
        return NULL;
    }
    c->cap = cap;
    c->used = 0;
    c->next = NULL;
    ctx->mallocs += 2;
    ctx->total_cap += cap;
    return c;
}

/* The arena's main region: address space the size of the machine's memory,
 * reserved up front and backed by pages only where touched. Bump allocation
 * in it never moves, so a reset costs nothing and the pages a step touched
 * stay mapped for the next one (fresh pages are expensive: zeroed by the
 * kernel on first touch, and on virtual machines faulted in by the host).
 * Where the reservation fails (address-space limits), or with
 * SSTC_ARENA_RESERVE=0 in the environment, the arena uses malloc'd chunks. */
static void reserve(sstc_ctx *ctx) {
    const char *env = getenv("SSTC_ARENA_RESERVE"); /* "0": chunks only */
    if (env && !strcmp(env, "0")) return;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psz <= 0) return;
    size_t cap = (size_t)pages * (size_t)psz;
    if (cap > ((size_t)1 << 36)) cap = (size_t)1 << 36; /* 64 GB: room for many contexts */
    cap = cap / HUGE_PAGE * HUGE_PAGE;
    if (cap < HUGE_PAGE) return;
    void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return;
    ctx->vbase = p;
    ctx->vcap = cap;
    ctx->vused = 0;
    ctx->mallocs++;
}

sstc_ctx *sstc_ctx_create(size_t initial_bytes) {
    sstc_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        sstc_fail(SSTC_ENOMEM, "ctx_create: out of memory");
        return NULL;
    }
    reserve(ctx);
    if (ctx->vbase) return ctx;
    if (initial_bytes < 4096) initial_bytes = 4096;
    ctx->chunks = chunk_new(ctx, initial_bytes);
    if (!ctx->chunks) {
        free(ctx);
        sstc_fail(SSTC_ENOMEM, "ctx_create: cannot reserve %zu bytes", initial_bytes);
        return NULL;
    }
    return ctx;
}

void sstc_ctx_free(sstc_ctx *ctx) {
    if (!ctx) return;
    if (ctx->vbase) munmap(ctx->vbase, ctx->vcap);
    free(ctx->scratch);
    arena_chunk *c = ctx->chunks;
    while (c) {
        arena_chunk *n = c->next;
        free(c->base);
        free(c);
        c = n;
    }
    free(ctx->tape);
    free(ctx);
}

void sstc_ctx_reset(sstc_ctx *ctx) {
    if (!ctx) return;
    ctx->tape_len = 0;
    ctx->vused = 0;
    if (ctx->chunks && ctx->chunks->next) {
        /* Coalesce: one chunk big enough for everything the last cycle used. */
        size_t total = ctx->total_cap;
        arena_chunk *c = ctx->chunks;
        while (c) {
            arena_chunk *n = c->next;
            free(c->base);
            free(c);
            c = n;
        }
        ctx->total_cap = 0;
        ctx->chunks = chunk_new(ctx, total);
        /* On failure the next alloc will try a fresh chunk again. */
    }
    if (ctx->chunks) ctx->chunks->used = 0;
}

void *sstc_ctx_alloc(sstc_ctx *ctx, size_t bytes) {
    bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (bytes == 0) bytes = ALIGN;
    if (ctx->vbase && ctx->vcap - ctx->vused >= bytes) {
        void *p = ctx->vbase + ctx->vused;
        ctx->vused += bytes;
        return p;
    }
    arena_chunk *c = ctx->chunks;
    if (!c || c->cap - c->used < bytes) {
        size_t cap = ctx->total_cap > bytes ? ctx->total_cap : bytes;
        if (cap < (1u << 20)) cap = 1u << 20;
        arena_chunk *n = chunk_new(ctx, cap);
        if (!n) {
            sstc_fail(SSTC_ENOMEM, "arena: cannot allocate %zu bytes", cap);
            return NULL;
        }
        n->next = c;
        ctx->chunks = n;
        c = n;
    }
    void *p = c->base + c->used;
    c->used += bytes;
    return p;
}

void *sstc_ctx_scratch(sstc_ctx *ctx, size_t bytes) {
    if (bytes == 0) bytes = ALIGN;
    if (ctx->scratch_cap < bytes) {
        free(ctx->scratch);
        size_t align = bytes >= 4 * HUGE_PAGE ? HUGE_PAGE : ALIGN;
        size_t cap = (bytes + align - 1) / align * align;
        ctx->scratch = aligned_alloc(align, cap);
        ctx->scratch_cap = ctx->scratch ? cap : 0;
        if (!ctx->scratch) {
            sstc_fail(SSTC_ENOMEM, "scratch: cannot allocate %zu bytes", cap);
            return NULL;
        }
        ctx->mallocs++;
    }
    return ctx->scratch;
}

void *sstc_ctx_calloc(sstc_ctx *ctx, size_t bytes) {
    void *p = sstc_ctx_alloc(ctx, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void sstc_ctx_set_training(sstc_ctx *ctx, int training) { ctx->training = training; }
int sstc_ctx_training(const sstc_ctx *ctx) { return ctx->training; }
void sstc_ctx_set_rng(sstc_ctx *ctx, sstc_rng *rng) { ctx->rng = rng; }
size_t sstc_ctx_mallocs(const sstc_ctx *ctx) { return ctx->mallocs; }

size_t sstc_ctx_bytes_used(const sstc_ctx *ctx) {
    size_t u = ctx->vused;
    for (arena_chunk *c = ctx->chunks; c; c = c->next) u += c->used;
    return u;
}

int sstc_ctx_record(sstc_ctx *ctx, sstc_tensor *t) {
    if (ctx->tape_len == ctx->tape_cap) {
        size_t cap = ctx->tape_cap ? ctx->tape_cap * 2 : 256;
        sstc_tensor **n = realloc(ctx->tape, cap * sizeof *n);
        if (!n) return sstc_fail(SSTC_ENOMEM, "tape: out of memory");
        ctx->tape = n;
        ctx->tape_cap = cap;
        ctx->mallocs++;
    }
    ctx->tape[ctx->tape_len++] = t;
    return 0;
}

static int check_shape(const char *what, int ndim, const int *shape) {
    if (ndim < 1 || ndim > SSTC_MAX_DIMS)
        return sstc_fail(SSTC_ESHAPE, "%s: %d dimensions, expected 1..%d", what, ndim, SSTC_MAX_DIMS);
    if (!shape) return sstc_fail(SSTC_EINVAL, "%s: NULL shape", what);
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0)
            return sstc_fail(SSTC_ESHAPE, "%s: dimension %d is %d, expected > 0", what, i, shape[i]);
    return 0;
}

static sstc_tensor *tensor_header(sstc_ctx *ctx, int ndim, const int *shape) {
    sstc_tensor *t = sstc_ctx_calloc(ctx, sizeof *t);
    if (!t) return NULL;
    t->ndim = ndim;
    t->size = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->size *= (size_t)shape[i];
    }
    for (int i = ndim; i < SSTC_MAX_DIMS; i++) t->shape[i] = 1;
    return t;
}

sstc_tensor *sstc_tensor_new(sstc_ctx *ctx, int ndim, const int *shape) {
    if (!ctx) {
        sstc_fail(SSTC_EINVAL, "tensor_new: NULL context");
        return NULL;
    }
    if (check_shape("tensor_new", ndim, shape)) return NULL;
    sstc_tensor *t = tensor_header(ctx, ndim, shape);
    if (!t) return NULL;
    t->data = sstc_ctx_calloc(ctx, t->size * sizeof(float));
    return t->data ? t : NULL;
}

sstc_tensor *sstc_tensor_1d(sstc_ctx *ctx, int n0) { return sstc_tensor_new(ctx, 1, (int[]){n0}); }
sstc_tensor *sstc_tensor_2d(sstc_ctx *ctx, int n0, int n1) {
    return sstc_tensor_new(ctx, 2, (int[]){n0, n1});
}
sstc_tensor *sstc_tensor_4d(sstc_ctx *ctx, int n0, int n1, int n2, int n3) {
    return sstc_tensor_new(ctx, 4, (int[]){n0, n1, n2, n3});
}

sstc_tensor *sstc_param_new(sstc_ctx *ctx, int ndim, const int *shape) {
    sstc_tensor *t = sstc_tensor_new(ctx, ndim, shape);
    if (!t) return NULL;
    t->grad = sstc_ctx_calloc(ctx, t->size * sizeof(float));
    if (!t->grad) return NULL;
    t->requires_grad = 1;
    return t;
}

sstc_tensor *sstc_tensor_wrap(sstc_ctx *ctx, float *data, int ndim, const int *shape) {
    if (!ctx || !data) {
        sstc_fail(SSTC_EINVAL, "tensor_wrap: NULL %s", ctx ? "data" : "context");
        return NULL;
    }
    if (check_shape("tensor_wrap", ndim, shape)) return NULL;
    sstc_tensor *t = tensor_header(ctx, ndim, shape);
    if (t) t->data = data;
    return t;
}

void sstc_tensor_fill(sstc_tensor *t, float v) {
    for (size_t i = 0; i < t->size; i++) t->data[i] = v;
}

void sstc_zero_grad(sstc_tensor *t) {
    if (t && t->grad) memset(t->grad, 0, t->size * sizeof(float));
}

const char *sstc_shape_str(const sstc_tensor *t, char *buf, size_t n) {
    if (!t) {
        snprintf(buf, n, "(null)");
        return buf;
    }
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "(");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ",%d" : "%d", t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, ")");
    return buf;
}

sstc_tensor *sstc_ctx_op_output(sstc_ctx *ctx, sstc_op op, int ndim, const int *shape, sstc_tensor *a,
                           sstc_tensor *b, sstc_tensor *c) {
    sstc_tensor *t = tensor_header(ctx, ndim, shape);
    if (!t) return NULL;
    t->data = sstc_ctx_alloc(ctx, t->size * sizeof(float));
    if (!t->data) return NULL;
    t->op = op;
    t->src[0] = a;
    t->src[1] = b;
    t->src[2] = c;
    t->requires_grad = (a && a->requires_grad) || (b && b->requires_grad) || (c && c->requires_grad);
    if (t->requires_grad && sstc_ctx_record(ctx, t)) return NULL;
    return t;
}

float *sstc_ctx_grad(sstc_ctx *ctx, sstc_tensor *t) {
    if (!t->grad) t->grad = sstc_ctx_calloc(ctx, t->size * sizeof(float));
    return t->grad;
}

float *sstc_ctx_grad_fresh(sstc_ctx *ctx, sstc_tensor *t, int *fresh) {
    *fresh = !t->grad;
    if (!t->grad) t->grad = sstc_ctx_alloc(ctx, t->size * sizeof(float));
    return t->grad;
}

static int n_threads = 1;

void sstc_set_threads(int n) {
    if (n < 1) n = 1;
    n_threads = n;
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}

int sstc_get_threads(void) { return n_threads; }
