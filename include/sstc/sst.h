/* Structured sparse ternary (N,K) weight coding: code tables, projection,
 * step-size fitting, bit packing and the .sst file of a coded network.
 *
 * A weight matrix W is (rows x cols) row-major: rows = output neurons or
 * output channels, cols = fan_in (for a convolution C_in*kh*kw in im2col
 * order (c, ky, kx)). Each row is cut into G = ceil(cols/N) consecutive
 * groups of N weights; the last group of a row is padded with zeros, and
 * padded positions always code as 0. A group is coded as delta * t with
 * t in {-1,0,+1}^N and at most K non-zeros; t is stored as an index into the
 * canonical code table of M(N,K) = sum_{i=0..K} C(N,i) 2^i entries, packed at
 * b = ceil(log2 M) bits. docs/format.md documents the canonical order, the
 * bit order and the .sst layout byte by byte.
 *
 * Plain ternary (no structure) is K = N; it needs no table (ranking is
 * combinatorial) and is usually stored as (N,K) = (1,1): 2 bits per weight.
 *
 * Every function returns SSTC_OK (0) or a negative SSTC_E* code with a
 * message in sstc_errmsg(); nothing here exits or aborts. */
#ifndef SSTC_SST_H
#define SSTC_SST_H

#include <stddef.h>
#include <stdint.h>

#define SSTC_MAX_N 16
/* sstc_code_table_create refuses tables with more entries than this (e.g.
 * (16,7) and plain ternary with large N); rank/unrank work for every (N,K). */
#define SSTC_CODE_TABLE_MAX_ENTRIES (1u << 20)

/* ---- code counting --------------------------------------------------------- */

/* M(N,K), the number of ternary N-vectors with at most K non-zeros;
 * 0 unless 1 <= K <= N <= 16. The largest, M(16,16) = 3^16, fits in 32 bits. */
uint32_t sstc_code_count(int N, int K);
/* b = ceil(log2 M(N,K)) bits per group; 0 if (N,K) is invalid. */
int sstc_code_bits(int N, int K);
/* ceil(cols / N): groups per row of `cols` weights. */
size_t sstc_groups_per_row(size_t cols, int N);

/* ---- canonical ranking (no table needed) ----------------------------------- */

/* t (N entries in {-1,0,1}, at most K non-zero) -> its index in the canonical
 * order. SSTC_EINVAL if t is not a valid (N,K) code. */
int sstc_code_rank(int N, int K, const int8_t *t, uint32_t *index);
/* index -> t (N entries). SSTC_EINVAL if index >= M(N,K). */
int sstc_code_unrank(int N, int K, uint32_t index, int8_t *t);

/* ---- code tables ----------------------------------------------------------- */

typedef struct {
    int N, K;
    uint32_t M;            /* number of entries */
    int bits;              /* ceil(log2 M) */
    uint8_t *nnz;          /* (M): non-zeros of entry i */
    uint8_t *pos;          /* (M, K): positions of entry i, ascending; first nnz[i] valid */
    int8_t *sign;          /* (M, K): +1/-1 matching pos; first nnz[i] valid */
    int8_t *dense;         /* (M, N): entry i as a ternary vector */
    int32_t *mask_rank;    /* (2^N): rank of a position set among sets of its size, -1 if > K */
    uint32_t offset[SSTC_MAX_N + 2]; /* index of the first entry with i non-zeros */
} sstc_code_table;

/* Builds the canonical table for 1 <= K <= N <= 16 with M <= SSTC_CODE_TABLE_MAX_ENTRIES. */
int sstc_code_table_create(int N, int K, sstc_code_table **out);
void sstc_code_table_free(sstc_code_table *table);
/* t (N entries) -> index, O(N) with the table; negative SSTC_EINVAL if invalid. */
int64_t sstc_code_encode(const sstc_code_table *table, const int8_t *t);

/* ---- projection (quantizer) ------------------------------------------------ */

/* The L2-best code of one group for a fixed delta > 0: keep the K entries of
 * largest |w| (ties: lower position first); a kept entry becomes sign(w) if
 * |w| > delta/2, else 0. w and t are (N). */
int sstc_project_group(const float *w, int N, int K, float delta, int8_t *t);

/* Projects every group of W (rows x cols) into T (rows x cols) with the step
 * delta[0] (per_row = 0) or delta[r] for row r (per_row = 1). K = N gives
 * plain ternary for any N. */
int sstc_project_matrix(const float *W, int rows, int cols, int N, int K,
                        const float *delta, int per_row, int8_t *T);

/* ||W - delta*T(W,delta)||^2 summed over the matrix, in double. */
int sstc_quant_error(const float *W, int rows, int cols, int N, int K,
                     const float *delta, int per_row, double *err);

/* Called after every iteration of the delta fit: the row being fitted (-1
 * for a per-layer fit), iteration number (0 is the starting point), the
 * current delta and the error ||W_part - delta*T||^2 of that delta and the
 * codes it was fitted to. */
typedef void (*sstc_fit_callback)(void *ctx, int row, int iter, float delta, double err);

typedef struct {
    int max_iter;          /* default 100 */
    double rel_tol;        /* stop when |delta_new - delta| <= rel_tol*delta; default 1e-7 */
    sstc_fit_callback on_iter; /* may be NULL */
    void *ctx;
} sstc_fit_opts;

/* Fits delta to minimise ||W - delta*T(W,delta)||^2 per layer (per_row = 0,
 * writes delta[0]) or per row (per_row = 1, writes delta[rows]) by
 * alternating minimisation. Start: delta_0 = mean |w| over the K largest of
 * each group (the best delta if every one of them were kept). Step: T =
 * project(W, delta); delta = sum |w||t| / sum |t|. Neither step can increase
 * the error. Stop when the relative change of delta is <= rel_tol (the codes
 * no longer change) or after max_iter steps. An all-zero row or layer gets
 * delta = 1 (every code is 0 whatever delta). opts may be NULL.
 * SSTC_ENUMERIC if W holds NaN or Inf. */
int sstc_fit_delta(const float *W, int rows, int cols, int N, int K, int per_row,
                   float *delta, const sstc_fit_opts *opts);

/* Float N:M structured sparsity: keep the K largest |w| of every group of N
 * (ties: lower position first), zero the rest, no ternarization. out may be
 * W. mask (rows x cols) gets 1 for a kept weight, 0 otherwise. */
int sstc_nm_sparsify(const float *W, int rows, int cols, int N, int K, float *out);
int sstc_nm_mask(const float *W, int rows, int cols, int N, int K, uint8_t *mask);

/* ---- group indices and bit packing ----------------------------------------- */

/* T (rows x cols) -> idx (rows x G), G = ceil(cols/N); SSTC_EINVAL if a group
 * is not a valid (N,K) code. */
int sstc_codes_from_ternary(const int8_t *T, int rows, int cols, int N, int K, uint32_t *idx);
/* idx (rows x G) -> T (rows x cols); SSTC_EFORMAT if an index is >= M or
 * puts a non-zero into a padded position. */
int sstc_ternary_from_codes(const uint32_t *idx, int rows, int cols, int N, int K, int8_t *T);

/* Bytes that `count` indices of `bits` bits take: ceil(count*bits/8). */
size_t sstc_packed_bytes(size_t count, int bits);
/* Little-endian bit stream: bit j (LSB = 0) of index i is stream bit
 * i*bits + j, stream bit s is bit s%8 of byte s/8; unused high bits of the
 * last byte are 0. out has sstc_packed_bytes(count, bits) bytes.
 * SSTC_EINVAL if an index does not fit in `bits` (1..32). */
int sstc_pack_codes(const uint32_t *idx, size_t count, int bits, uint8_t *out);
/* Inverse of sstc_pack_codes; SSTC_EFORMAT if nbytes is not
 * sstc_packed_bytes(count, bits) or the unused high bits are not 0. */
int sstc_unpack_codes(const uint8_t *in, size_t nbytes, size_t count, int bits, uint32_t *idx);

/* ---- the .sst file of a coded network --------------------------------------- */

/* The newest format version this library reads. A file is written as version
 * 1 unless it holds a record that needs version 2 (SHORTCUT, ROUTE,
 * GLOBALAVGPOOL) or evaluation flags that need version 3 (a 4-byte field after
 * the header), so files without them keep their exact earlier bytes; the
 * reader accepts all three and refuses a file whose version is not the one its
 * contents need (it would not write back to the same bytes). docs/format.md. */
#define SSTC_SST_VERSION 3

/* Evaluation flags (version 3): how the network's reported test figures were
 * obtained, so that a reader of the file alone can reproduce them. */
#define SSTC_SST_EVAL_FLIP 1u /* class probabilities averaged over each image and its mirror image */
#define SSTC_SST_EVAL_KNOWN SSTC_SST_EVAL_FLIP

typedef enum {
    SSTC_SST_FC = 1,        /* out, in; weights (out x in) */
    SSTC_SST_CONV = 2,      /* out (= C_out), in (= C_in), kh, kw, stride, pad */
    SSTC_SST_BATCHNORM = 3, /* out = channels; y = scale*x + bias per channel */
    SSTC_SST_RELU = 4,
    SSTC_SST_MAXPOOL = 5,   /* kh = kw = k, stride, pad */
    SSTC_SST_AVGPOOL = 6,   /* kh = kw = k, stride, pad; divides by k*k */
    SSTC_SST_FLATTEN = 7,   /* (C,H,W) -> (C*H*W,1,1) */
    SSTC_SST_DROPOUT = 8,   /* p; identity at inference */
    SSTC_SST_PERMUTE = 9,   /* out = in = C*H*W of the input; y[i] = x[perm[i]] over the
                             * flattened input, output (out,1,1); only as the first layer
                             * (fan-in interleaving of a first FC layer) */
    SSTC_SST_SHORTCUT = 10, /* version 2: y = act(x + out[from]), x = the previous record's
                             * output (the network input for record 0); same shapes */
    SSTC_SST_ROUTE = 11,    /* version 2: y = out[route[0]], ..., out[route[n_route-1]]
                             * concatenated along channels; equal H and W */
    SSTC_SST_GLOBALAVGPOOL = 12, /* version 2: (C,H,W) -> (C,1,1), the mean over H*W */
    SSTC_SST_KIND_END       /* one past the last kind */
} sstc_sst_kind;

/* Record references (SHORTCUT from, ROUTE route[]) are indices of earlier
 * records, or this value for the network input (before any PERMUTE). */
#define SSTC_SST_INPUT (-1)
#define SSTC_SST_MAX_ROUTE 8
#define SSTC_SST_ACT_LINEAR 0
#define SSTC_SST_ACT_RELU 1

/* One layer. FC and CONV are either coded (coded = 1: N, K, delta, scale,
 * bias, codes) or float (coded = 0: weight, bias). A coded layer computes
 *   acc[o] = sum_j T[o][j] * x[j]       (T in {-1,0,1}, j over fan_in)
 *   y[o]   = scale[o] * acc[o] + bias[o]
 * where scale folds delta, the row normalization and a following batch norm
 * (docs/format.md, "Folded affine"); delta is kept so that delta*T, the
 * quantized weights, can be recovered. All arrays are owned by the model and
 * released with free() by sstc_sst_free. */
typedef struct {
    sstc_sst_kind kind;
    int out, in;              /* FC: features; CONV: channels; BATCHNORM: out = channels */
    int kh, kw, stride, pad;  /* CONV; pools use kh (= kw) as k */
    float p;                  /* DROPOUT */
    int coded;
    int N, K;                 /* coded */
    int per_row_delta;        /* coded: 0 -> delta[1], 1 -> delta[out] */
    float *delta;
    float *scale;             /* coded (out); BATCHNORM (out) */
    float *bias;              /* FC/CONV (out), coded or not; BATCHNORM (out) */
    uint8_t *codes;           /* coded: packed group indices, out x ceil(fan_in/N) */
    size_t codes_bytes;       /* sstc_packed_bytes(out*G, b) */
    float *weight;            /* float FC/CONV: (out x fan_in) */
    uint32_t *perm;           /* PERMUTE (out): a permutation of 0..out-1 */
    int from;                 /* SHORTCUT: an earlier record, or SSTC_SST_INPUT */
    int activation;           /* SHORTCUT: SSTC_SST_ACT_LINEAR or SSTC_SST_ACT_RELU */
    int n_route;              /* ROUTE: 1..SSTC_SST_MAX_ROUTE sources */
    int route[SSTC_SST_MAX_ROUTE]; /* ROUTE: earlier records, or SSTC_SST_INPUT */
} sstc_sst_layer;

typedef struct {
    int in_c, in_h, in_w;     /* input shape (C,H,W) */
    /* Input preprocessing, per channel: the network's input is
     * x = (pixel/255 - in_mean[c]) / in_std[c]. Channels 4 and up (no dataset
     * has them) use mean 0, std 1; sstc_sst_model_new sets every entry to
     * (0, 1). */
    float in_mean[4], in_std[4];
    int num_classes;          /* size of the last layer's output */
    uint32_t eval_flags;      /* SSTC_SST_EVAL_*; non-zero makes the file version 3 */
    int n_layers;
    sstc_sst_layer *layers;   /* (n_layers) */
} sstc_sst_model;

/* A model with n_layers zeroed layer records (fill kind and shapes, then
 * sstc_sst_layer_alloc each) and the identity preprocessing (mean 0, std 1). */
sstc_sst_model *sstc_sst_model_new(int n_layers);
/* Allocates the zeroed arrays that the layer's kind, shape and coding need. */
int sstc_sst_layer_alloc(sstc_sst_layer *layer);
void sstc_sst_free(sstc_sst_model *model);

/* fan_in of an FC (in) or CONV (in*kh*kw) layer, 0 for other kinds. */
size_t sstc_sst_fan_in(const sstc_sst_layer *layer);
/* Lower-case kind name ("fc", "conv", ...), "?" if unknown. */
const char *sstc_sst_kind_name(int kind);
/* The record's own fields as text ("16->32 k=3x3 s=1 p=1", "from=4 act=relu",
 * "" for kinds without fields), as `sstc inspect` prints them. */
void sstc_sst_layer_describe(const sstc_sst_layer *layer, char *buf, size_t n);

/* The version the model's file has: 3 with evaluation flags, else 2 if a
 * record needs it, else 1. */
int sstc_sst_file_version(const sstc_sst_model *model);
/* The output shape (C,H,W) of every record into shapes (n_layers); the
 * model's shapes must chain (SSTC_EFORMAT naming the record otherwise). A
 * FLATTEN, DROPOUT or PERMUTE output counts as a record's output too. */
int sstc_sst_shapes(const sstc_sst_model *model, int (*shapes)[3]);

/* Checks the whole model as the reader would: shapes chain from the input to
 * num_classes outputs, references point to earlier records with matching
 * shapes, every (N,K), delta and float is valid, every code index is < M and
 * pads decode to 0. */
int sstc_sst_validate(const sstc_sst_model *model);

/* Exact size in bytes of the model's .sst file. */
size_t sstc_sst_size(const sstc_sst_model *model);

/* Validates, then serializes. *buf is malloc'ed (free it). */
int sstc_sst_write_mem(const sstc_sst_model *model, uint8_t **buf, size_t *size);
int sstc_sst_write(const char *path, const sstc_sst_model *model);

/* Parses and validates a .sst image; any defect (truncation, wrong magic or
 * version, bad checksum, impossible shapes, index >= M, lengths that do not
 * add up) is SSTC_EFORMAT with a message naming the layer and byte offset. */
int sstc_sst_read_mem(const void *buf, size_t size, sstc_sst_model **out);
int sstc_sst_read(const char *path, sstc_sst_model **out);

/* Decodes a coded layer's ternary matrix into T (out x fan_in). */
int sstc_sst_layer_ternary(const sstc_sst_layer *layer, int8_t *T);
/* Packs T (out x fan_in, valid (N,K) codes) into layer->codes (allocated
 * already by sstc_sst_layer_alloc). */
int sstc_sst_layer_set_ternary(sstc_sst_layer *layer, const int8_t *T);

#endif
