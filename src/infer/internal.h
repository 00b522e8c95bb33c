/* Internals of the inference engine: the resident form of a coded weight
 * matrix and the multiplication-free kernels that run it.
 *
 * A coded matrix is (rows x cols), cut into groups of n inputs. Each group of
 * each row is one index into an entry table of E ternary n-vectors. The
 * engine keeps the file's own (N,K) table when it is small (N >= 4 and
 * M(N,K) <= SSTC_INFER_MAX_NATIVE: then the indices are the file's indices,
 * unpacked to one byte, or two when M > 256). Otherwise (plain ternary with
 * (1,1), small N, or a table too large to tabulate per input such as (16,4))
 * the ternary matrix is re-encoded in groups of 4 with the 81-entry table
 * e = sum_p d_p 3^p (d = 0: 0, 1: +1, 2: -1), one byte per group.
 *
 * The kernels compute acc = T x without multiplying by a weight:
 *  - lut (one input vector): for every group the sums of all E entries over
 *    that group's inputs are tabulated once (each entry is its parent entry,
 *    the one without its last non-zero, plus or minus one input, so E adds per
 *    group), then every row is one table look-up and one add per group;
 *  - batched lut (many lanes: a batch, or the output positions of a
 *    convolution, transposed to xt (cols x ld)): the same tables with every
 *    entry a vector of 8 lanes, built per block of groups that fits in L1,
 *    then one vector add per row and group;
 *  - pairs (one input vector, AVX-512, codes of 8 inputs and at most 2
 *    non-zeros): each entry as two signed positions into two 16-entry
 *    tables of the group's inputs and their negations (one register each),
 *    two permutes and two adds per group of 16 rows;
 *  - planes (one input vector, AVX-512, other codes): the matrix kept as two bit planes
 *    (+1 and -1 positions) in chunks of 4 inputs; per chunk a 16-entry table
 *    of the subset sums of its 4 inputs fills one vector register, and one
 *    permute instruction looks up 16 rows at once (T-MAC's idea with the
 *    table in a register instead of memory): per 4 weights of 16 rows, two
 *    permutes and two adds, no gather, no multiply;
 *  - direct (many lanes, few rows): every non-zero of the entry adds or
 *    subtracts a whole row of lanes, the sign applied by flipping the sign
 *    bit (float) or two's complement negation (int32).
 * Both have AVX2 versions chosen at run time and a portable C version. */
#ifndef SSTC_INFER_INTERNAL_H
#define SSTC_INFER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sstc/sst.h"

#define SSTC_INFER_MAX_NATIVE 1024
#define SSTC_INFER_MAX_LUT ((size_t)1 << 26) /* floats in one layer's look-up table */

typedef struct {
    int rows, cols;
    int n;          /* inputs per group */
    int groups;     /* ceil(cols / n) */
    int entries;    /* E */
    int slots;      /* most non-zeros of an entry */
    int bits;       /* ceil(log2 E): packed bits per index (C export) */
    int native;     /* 1: the file's (N,K) table; 0: ternary groups of 4 */
    int N, K;       /* the file's code */
    uint8_t *idx8;  /* rows x groups when E <= 256 */
    uint16_t *idx16;/* rows x groups otherwise */
    /* entry tables */
    uint16_t *parent;   /* (E) entry without its last non-zero; 0 for entry 0 */
    uint8_t *last;      /* (E) 2*pos + (sign < 0) of that last non-zero */
    uint8_t *spos;      /* (E x slots) positions in the group, ascending; 0 in empty slots */
    uint32_t *skeep;    /* (E x slots) all ones for a used slot, 0 for an empty one */
    uint32_t *sflip;    /* (E x slots) 0x80000000 for -1 (float sign bit), else 0 */
    int32_t *sneg;      /* (E x slots) -1 for -1, else 0 (int32 negation mask) */
    int8_t *sval;       /* (E x slots) +1, -1, or 0 for an empty slot */
    /* Sign planes of the one-vector AVX-512 kernel (NULL without AVX-512):
     * blocks of 16 rows x 16 inputs, 64 bytes each, ordered [row block][input
     * block]; byte 4*i + c of a block holds, for row i of the block and input
     * chunk c (4 inputs), the +1 positions in bits 0-3 and the -1 positions
     * in bits 4-7. 2 bits per weight, decoded from the code table once. */
    uint8_t *planes;
    int rblocks, iblocks;   /* ceil(rows / 16), ceil(cols / 16) */
    /* Pair indices of the one-vector AVX-512 float kernel for codes of 8
     * inputs per group and at most 2 non-zeros ((8,1), (8,2); NULL
     * otherwise): blocks of 16 rows x 4 groups, 64 bytes each, ordered [row
     * block][group quad]; byte 4*i + k holds, for row i of the block and
     * group k of the quad, two positions a (bits 0-3) and b (bits 4-7) into
     * the group's 16-entry tables A = {x_0 .. x_7, -x_0 .. -x_7} and B (the
     * same with +x_0 and -x_0 replaced by 0): a two-non-zero entry is its
     * two signed positions (ascending, so b is never at position 0), a
     * one-non-zero entry its signed position as a and 0 (B's zero) as b, the
     * zero entry +x_1 and -x_1 (an exact zero). 1 bit per weight, as in the
     * file. */
    uint8_t *pairs;
    int gquads;             /* ceil(groups / 4) */
    /* sstc_coded_tune's choice for the one-vector products: tuned_parts
     * threads (1 or tuned_threads) when omp_get_max_threads() is
     * tuned_threads; 0: not tuned. */
    int tuned_threads, tuned_parts;
} sstc_coded_matrix;

/* Builds the resident form of a coded FC or CONV layer (validated by the reader). */
int sstc_coded_matrix_init(sstc_coded_matrix *cm, const sstc_sst_layer *layer);
/* The same from a ternary matrix T (rows x cols) valid for (N,K). */
int sstc_coded_matrix_from_ternary(sstc_coded_matrix *cm, const int8_t *T, int rows, int cols, int N, int K);
void sstc_coded_matrix_free(sstc_coded_matrix *cm);

static inline uint32_t sstc_coded_index(const sstc_coded_matrix *cm, size_t row, size_t g) {
    size_t i = row * (size_t)cm->groups + g;
    return cm->idx8 ? cm->idx8[i] : cm->idx16[i];
}
/* Bytes of the resident indices (and sign planes and pair indices, where built). */
size_t sstc_coded_index_bytes(const sstc_coded_matrix *cm);
/* Look-up table elements the lut kernel needs (groups x entries); 0 if too large. */
size_t sstc_coded_lut_size(const sstc_coded_matrix *cm);

/* acc (rows) = T x for one input vector x (cols); lut has sstc_coded_lut_size elements. */
void sstc_coded_gemv_f32(const sstc_coded_matrix *cm, const float *x, float *lut, float *acc);
void sstc_coded_gemv_i32(const sstc_coded_matrix *cm, const int32_t *x, int32_t *lut, int32_t *acc);
/* acc (rows x ld) = T xt for xt (cols x ld); ld is a multiple of 8. Picks
 * the batched look-up tables or, for layers with very few rows, the direct
 * kernel; always succeeds (the direct kernel needs no memory). */
int sstc_coded_gemm_f32(const sstc_coded_matrix *cm, const float *xt, size_t ld, float *acc);
int sstc_coded_gemm_i32(const sstc_coded_matrix *cm, const int32_t *xt, size_t ld, int32_t *acc);
/* The two kernels by name (tests, benchmarks); the lut ones can fail with
 * SSTC_ENOMEM. */
int sstc_coded_gemm_lut_f32(const sstc_coded_matrix *cm, const float *xt, size_t ld, float *acc);
int sstc_coded_gemm_lut_i32(const sstc_coded_matrix *cm, const int32_t *xt, size_t ld, int32_t *acc);
void sstc_coded_gemm_direct_f32(const sstc_coded_matrix *cm, const float *xt, size_t ld, float *acc);
void sstc_coded_gemm_direct_i32(const sstc_coded_matrix *cm, const int32_t *xt, size_t ld, int32_t *acc);

/* 1 if the AVX2 kernels run on this machine (and were not switched off). */
int sstc_infer_avx2(void);
/* 1 if the AVX-512 one-vector kernel runs (machine has AVX-512F, not switched off). */
int sstc_infer_avx512(void);
/* Tests: 1 forces the portable kernels, 0 restores the default. */
void sstc_infer_force_portable(int on);
/* Tests: caps the kernels at 0 (portable), 1 (AVX2) or 2 (AVX-512, the
 * default), so that every path the machine has is run; and whether this
 * machine has the instructions of a level. */
void sstc_infer_force_isa(int level);
/* The batched kernels' path for codes of at most 2 non-zeros per group:
 * 0 one vector of the big entry table per row and group, 1 two vectors of a
 * small table of singles (wherever K <= 2), 2 the measured default (singles
 * for K = 2 codes of more than 256 entries, such as (16,2), or at most
 * 256 rows). */
void sstc_coded_force_singles(int mode);
/* The one-vector sign-plane kernel splits layers of at least this many
 * weights over the threads (0: back to the default, which depends on
 * OMP_WAIT_POLICY; see coded.c). */
void sstc_coded_set_planes_par_min(size_t weights);
/* Tests and benchmarks: 0 keeps the float one-vector product on the sign
 * planes even where the pair kernel applies, 1 (the default) uses it. */
void sstc_coded_use_pairs(int on);
/* Times the layer's one-vector float product on one thread and on all of
 * them and keeps the faster for later calls (at this thread count); the
 * engine calls it for every coded layer it builds. An explicit threshold
 * (SSTC_PLANES_PAR_MIN, sstc_coded_set_planes_par_min) overrides it. */
void sstc_coded_tune(sstc_coded_matrix *cm);
int sstc_coded_use_singles(const sstc_coded_matrix *cm);
int sstc_infer_isa_available(int level);

/* Round half away from zero and saturate to [lo, 127]; NaN gives lo. The C
 * export prints the same function, so both give identical codes. */
static inline int8_t sstc_infer_quantize(float v, int lo) {
    if (!(v >= (float)lo)) return (int8_t)lo;
    if (v >= 127.0f) return 127;
    return (int8_t)(v >= 0.0f ? (int)(v + 0.5f) : -(int)(0.5f - v));
}

static inline size_t sstc_round8(size_t n) { return (n + 7) & ~(size_t)7; }

/* ---- the engine (shared by engine.c and export_c.c) -------------------------- */

typedef enum {
    SSTC_OP_FC = 0,
    SSTC_OP_CONV,
    SSTC_OP_BN,       /* batch norm that could not be folded: y = a*x + b per channel */
    SSTC_OP_RELU,
    SSTC_OP_MAXPOOL,
    SSTC_OP_AVGPOOL,
    SSTC_OP_PERMUTE,  /* y[i] = x[perm[i]] per sample (the engine's in_perm) */
    SSTC_OP_SHORTCUT, /* y = x + s (then the fused ReLU), x = src[0], s = src[1] */
    SSTC_OP_ROUTE,    /* y = src[0], ..., src[nsrc-1] concatenated per sample */
    SSTC_OP_GAP,      /* global average pool: (C,H,W) -> (C,1,1) */
    SSTC_OP_KIND_COUNT
} sstc_infer_op_kind;

/* Tensors are numbered by the op that produces them; SSTC_INFER_INPUT is the
 * network input (normalized floats or int8 codes, before any permute). */
#define SSTC_INFER_INPUT (-1)

typedef struct {
    sstc_infer_op_kind kind;
    int c, h, w;            /* input shape (of src[0]) */
    int oc, oh, ow;         /* output shape */
    int kh, kw, stride, pad;/* CONV, pools (kh = kw = k) */
    int relu;               /* a ReLU fused into the output */
    int coded;              /* FC/CONV */
    size_t fan_in;
    sstc_coded_matrix cm;   /* coded */
    float *weight;          /* float FC/CONV: oc x fan_in */
    float *a, *b;           /* per output (FC/CONV) or channel (BN): y = a*acc + b */
    int src_layer;          /* the .sst layer it came from */
    int nsrc;               /* tensors read: 1; SHORTCUT 2; ROUTE its sources */
    int src[SSTC_SST_MAX_ROUTE];      /* their tensor ids */
    size_t src_size[SSTC_SST_MAX_ROUTE]; /* their values per sample */
    int tapped;             /* a later shortcut or route reads this output: nothing fuses into it */
    size_t act_off;         /* its output's place in the activation arena, in values per sample */
    /* int8 mode */
    int sets_scale;         /* FC, CONV, BN, SHORTCUT: the output gets a calibrated scale */
    int writes_logits;      /* the last op and sets_scale: float logits, not codes */
    float in_scale, out_scale;
    float *qa, *qb;         /* v = qa*acc + qb, then quantized (or the logits) */
    float qs[SSTC_SST_MAX_ROUTE]; /* SHORTCUT, ROUTE: source k's code times qs[k] (s_k / s_out) */
    double amax;            /* calibration: max |output| */
} sstc_infer_op;

#define SSTC_ENGINE_SCRATCH 5

struct sstc_engine {
    uint32_t eval_flags; /* the file's SSTC_SST_EVAL_* */
    int in_c, in_h, in_w, classes;
    float in_mean[4], in_std[4];
    float in_lut[5][256];   /* pixel -> x per channel; table 4 serves channels >= 4 */
    int8_t in_q[5][256];    /* pixel -> int8 code (calibrated engines) */
    float in_scale;         /* int8 scale of the input */
    float out_scale;        /* int8 scale of the last tensor */
    uint32_t *in_perm;      /* the PERMUTE op's table: x'[i] = x[in_perm[i]], NULL if none */
    int n_ops;
    sstc_infer_op *ops;
    size_t max_act;         /* largest tensor of one sample, input included */
    size_t act_values;      /* the activation arena, values per sample (the input lives apart) */
    int act_buffers;        /* buffers in the arena */
    int mode, calibrated;
    void *scratch[SSTC_ENGINE_SCRATCH];
    size_t scratch_cap[SSTC_ENGINE_SCRATCH];
};

static inline size_t sstc_infer_op_out_size(const sstc_infer_op *op) { return (size_t)op->oc * op->oh * op->ow; }
/* Values per sample of tensor t. */
static inline size_t sstc_infer_tensor_size(const struct sstc_engine *e, int t) {
    return t == SSTC_INFER_INPUT ? (size_t)e->in_c * e->in_h * e->in_w : sstc_infer_op_out_size(&e->ops[t]);
}
/* The tensor the network's output is: the last op's, or the input if there are no ops. */
static inline int sstc_infer_final_tensor(const struct sstc_engine *e) { return e->n_ops ? e->n_ops - 1 : SSTC_INFER_INPUT; }

/* The liveness plan of the activation buffers. Tensor t (an op's output,
 * and the input when with_input) gets buffer buf[t + 1]; a tensor lives from
 * the op that writes it to the last op that reads it (the final tensor to
 * the end), and two tensors alive at the same time never share a buffer, so
 * an op never writes over its own inputs. size[j] receives buffer j's values
 * per sample (buf and size have n_ops + 1 entries). Returns the number of
 * buffers: 2 for a plain chain (ping-pong), more while shortcuts and routes
 * keep outputs alive; or SSTC_ENOMEM. */
int sstc_infer_plan_buffers(const struct sstc_engine *e, int with_input, int *buf, size_t *size);

static inline int sstc_infer_lut_channel(int c) { return c < 4 ? c : 4; }

#endif
