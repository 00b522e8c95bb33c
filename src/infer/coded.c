/* Coded weight matrices in resident form, and the kernels that multiply them
 * by activations with additions and subtractions only (see internal.h). */
#include "infer/internal.h"

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sstc/error.h"

/* ---- resident form ----------------------------------------------------------- */

void sstc_coded_matrix_free(sstc_coded_matrix *cm) {
    if (!cm) return;
    free(cm->idx8);
    free(cm->idx16);
    free(cm->parent);
    free(cm->last);
    free(cm->spos);
    free(cm->skeep);
    free(cm->sflip);
    free(cm->sneg);
    free(cm->sval);
    free(cm->planes);
    free(cm->pairs);
    memset(cm, 0, sizeof *cm);
}

size_t sstc_coded_index_bytes(const sstc_coded_matrix *cm) {
    size_t planes = cm->planes ? (size_t)cm->rblocks * cm->iblocks * 64 : 0;
    size_t pairs = cm->pairs ? (size_t)cm->rblocks * cm->gquads * 64 : 0;
    return (size_t)cm->rows * (size_t)cm->groups * (cm->idx8 ? 1 : 2) + planes + pairs;
}

size_t sstc_coded_lut_size(const sstc_coded_matrix *cm) {
    size_t n = (size_t)cm->groups * (size_t)cm->entries;
    size_t np = cm->planes ? (size_t)cm->iblocks * 64 : 0; /* 16 floats per chunk of 4 inputs */
    size_t nq = cm->pairs ? (size_t)cm->gquads * 128 : 0;  /* 32 floats per group */
    if (np > n) n = np;
    if (nq > n) n = nq;
    return n <= SSTC_INFER_MAX_LUT ? n : 0;
}

/* The pair indices (see internal.h) of a code with 8 inputs per group and
 * at most 2 non-zeros; called where the sign planes are built. Padding (rows
 * past the last, groups past the last) holds the zero entry. */
static int build_pairs(sstc_coded_matrix *cm) {
    if (!cm->native || cm->n != 8 || cm->slots > 2) return SSTC_OK;
    int RB = (cm->rows + 15) / 16, G = cm->groups, GQ = (G + 3) / 4, S = cm->slots;
    size_t bytes = (size_t)RB * GQ * 64 + 64; /* +64: the kernel reads up to 3 bytes past a block */
    cm->pairs = malloc(bytes);
    if (!cm->pairs) return sstc_fail(SSTC_ENOMEM, "infer: out of memory for the pair indices of a %dx%d layer", cm->rows, cm->cols);
    memset(cm->pairs, 0x91, bytes); /* the zero entry */
    cm->gquads = GQ;
    for (int r = 0; r < cm->rows; r++)
        for (int g = 0; g < G; g++) {
            uint32_t e = sstc_coded_index(cm, (size_t)r, (size_t)g);
            int pos[2], used = 0;
            for (int k = 0; k < S; k++) {
                int8_t v = cm->sval[(size_t)e * S + k];
                if (v) pos[used++] = cm->spos[(size_t)e * S + k] + (v < 0 ? 8 : 0);
            }
            /* slots hold ascending positions: a second non-zero is never at position 0 */
            uint8_t byte = used == 2 ? (uint8_t)(pos[0] | pos[1] << 4) : used == 1 ? (uint8_t)pos[0] : 0x91;
            cm->pairs[((size_t)(r / 16) * GQ + (size_t)(g / 4)) * 64 + (size_t)(r % 16) * 4 + (size_t)(g % 4)] = byte;
        }
    return SSTC_OK;
}

/* The sign planes (see internal.h), from the indices through the entry
 * tables; built only where the AVX-512 kernel can run. */
static int build_planes(sstc_coded_matrix *cm) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) return SSTC_OK;
    int RB = (cm->rows + 15) / 16, IB = (cm->cols + 15) / 16, G = cm->groups, n = cm->n, S = cm->slots;
    cm->planes = calloc((size_t)RB * IB * 64 + 64, 1); /* +64: the kernel reads up to 3 bytes past a block */
    if (!cm->planes) return sstc_fail(SSTC_ENOMEM, "infer: out of memory for the sign planes of a %dx%d layer", cm->rows, cm->cols);
    cm->rblocks = RB, cm->iblocks = IB;
    for (int r = 0; r < cm->rows; r++)
        for (int g = 0; g < G; g++) {
            uint32_t e = sstc_coded_index(cm, (size_t)r, (size_t)g);
            for (int k = 0; k < S; k++) {
                int8_t v = cm->sval[(size_t)e * S + k];
                if (!v) continue;
                int j = g * n + cm->spos[(size_t)e * S + k];
                if (j >= cm->cols) continue;
                size_t off = ((size_t)(r / 16) * IB + (size_t)(j / 16)) * 64 + (size_t)(r % 16) * 4 + (size_t)(j / 4 % 4);
                cm->planes[off] |= (uint8_t)((v > 0 ? 1u : 16u) << (j % 4));
            }
        }
    return build_pairs(cm);
}

/* Entry e of the re-encoded table: ternary groups of 4, e = sum_p d_p 3^p. */
static void ternary4_entry(uint32_t e, int8_t *t) {
    for (int p = 0; p < 4; p++, e /= 3) t[p] = (int8_t)(e % 3 == 1 ? 1 : e % 3 == 2 ? -1 : 0);
}
static uint32_t ternary4_index(const int8_t *t) {
    uint32_t e = 0;
    for (int p = 3; p >= 0; p--) e = e * 3 + (uint32_t)(t[p] == 1 ? 1 : t[p] == -1 ? 2 : 0);
    return e;
}

/* Fills the entry tables: slots, parents and last non-zeros. */
static int fill_entries(sstc_coded_matrix *cm) {
    int E = cm->entries, S = cm->slots, n = cm->n;
    size_t ES = (size_t)E * S;
    cm->parent = calloc((size_t)E, sizeof *cm->parent);
    cm->last = calloc((size_t)E, 1);
    cm->spos = calloc(ES, 1);
    cm->skeep = calloc(ES, sizeof *cm->skeep);
    cm->sflip = calloc(ES, sizeof *cm->sflip);
    cm->sneg = calloc(ES, sizeof *cm->sneg);
    cm->sval = calloc(ES, 1);
    if (!cm->parent || !cm->last || !cm->spos || !cm->skeep || !cm->sflip || !cm->sneg || !cm->sval)
        return sstc_fail(SSTC_ENOMEM, "infer: out of memory for a %d-entry code table", E);
    int8_t t[SSTC_MAX_N];
    for (int e = 0; e < E; e++) {
        if (cm->native) {
            if (sstc_code_unrank(cm->N, cm->K, (uint32_t)e, t)) return sstc_errcode();
        } else {
            ternary4_entry((uint32_t)e, t);
        }
        int s = 0, lastp = -1;
        for (int p = 0; p < n; p++) {
            if (!t[p]) continue;
            size_t k = (size_t)e * S + s++;
            cm->spos[k] = (uint8_t)p;
            cm->skeep[k] = 0xffffffffu;
            cm->sflip[k] = t[p] < 0 ? 0x80000000u : 0;
            cm->sneg[k] = t[p] < 0 ? -1 : 0;
            cm->sval[k] = t[p];
            lastp = p;
        }
        if (lastp < 0) continue; /* entry 0: no parent */
        cm->last[e] = (uint8_t)(2 * lastp + (t[lastp] < 0));
        t[lastp] = 0;
        uint32_t par;
        if (cm->native) {
            if (sstc_code_rank(cm->N, cm->K, t, &par)) return sstc_errcode();
        } else {
            par = ternary4_index(t);
        }
        if (par >= (uint32_t)e) return sstc_fail(SSTC_EINVAL, "infer: code table entry %d has parent %u", e, par);
        cm->parent[e] = (uint16_t)par;
    }
    return SSTC_OK;
}

static int setup(sstc_coded_matrix *cm, int rows, int cols, int N, int K) {
    memset(cm, 0, sizeof *cm);
    uint32_t M = sstc_code_count(N, K);
    if (rows < 1 || cols < 1 || !M)
        return sstc_fail(SSTC_EINVAL, "infer: coded matrix %dx%d with (N,K) = (%d,%d)", rows, cols, N, K);
    cm->rows = rows, cm->cols = cols, cm->N = N, cm->K = K;
    cm->native = N >= 4 && M <= SSTC_INFER_MAX_NATIVE;
    cm->n = cm->native ? N : 4;
    cm->entries = cm->native ? (int)M : 81;
    cm->slots = cm->native ? K : 4;
    cm->groups = (int)sstc_groups_per_row((size_t)cols, cm->n);
    while ((1 << cm->bits) < cm->entries) cm->bits++;
    size_t count = (size_t)rows * (size_t)cm->groups;
    if (cm->entries <= 256) cm->idx8 = malloc(count);
    else cm->idx16 = malloc(count * sizeof *cm->idx16);
    if (!cm->idx8 && !cm->idx16) return sstc_fail(SSTC_ENOMEM, "infer: out of memory for %zu code indices", count);
    return fill_entries(cm);
}

static void store_index(sstc_coded_matrix *cm, size_t i, uint32_t v) {
    if (cm->idx8) cm->idx8[i] = (uint8_t)v;
    else cm->idx16[i] = (uint16_t)v;
}

/* Re-encodes T into ternary groups of 4 (cm set up with native = 0). */
static void reencode_ternary4(sstc_coded_matrix *cm, const int8_t *T) {
    int G = cm->groups, cols = cm->cols;
    for (int r = 0; r < cm->rows; r++)
        for (int g = 0; g < G; g++) {
            int8_t t[4] = {0, 0, 0, 0};
            for (int p = 0; p < 4 && g * 4 + p < cols; p++) t[p] = T[(size_t)r * cols + g * 4 + p];
            store_index(cm, (size_t)r * G + g, ternary4_index(t));
        }
}

int sstc_coded_matrix_from_ternary(sstc_coded_matrix *cm, const int8_t *T, int rows, int cols, int N, int K) {
    int rc = setup(cm, rows, cols, N, K);
    if (rc) goto fail;
    if (!cm->native) {
        reencode_ternary4(cm, T);
        if ((rc = build_planes(cm))) goto fail;
        return SSTC_OK;
    }
    size_t count = (size_t)rows * cm->groups;
    uint32_t *idx = malloc(count * sizeof *idx);
    if (!idx) {
        rc = sstc_fail(SSTC_ENOMEM, "infer: out of memory");
        goto fail;
    }
    rc = sstc_codes_from_ternary(T, rows, cols, N, K, idx);
    for (size_t i = 0; !rc && i < count; i++) store_index(cm, i, idx[i]);
    free(idx);
    if (rc || (rc = build_planes(cm))) goto fail;
    return SSTC_OK;
fail:
    sstc_coded_matrix_free(cm);
    return rc;
}

int sstc_coded_matrix_init(sstc_coded_matrix *cm, const sstc_sst_layer *L) {
    if (!cm || !L || !L->coded || !L->codes) return sstc_fail(SSTC_EINVAL, "infer: not a coded layer");
    size_t fan_in = sstc_sst_fan_in(L);
    if (fan_in < 1 || fan_in > 0x7fffffff) return sstc_fail(SSTC_EINVAL, "infer: fan_in %zu out of range", fan_in);
    int rc = setup(cm, L->out, (int)fan_in, L->N, L->K);
    if (rc) goto fail;
    if (cm->native) {
        /* the file's indices are the engine's: unpack them */
        size_t count = (size_t)L->out * cm->groups;
        uint32_t *idx = malloc(count * sizeof *idx);
        if (!idx) {
            rc = sstc_fail(SSTC_ENOMEM, "infer: out of memory");
            goto fail;
        }
        rc = sstc_unpack_codes(L->codes, L->codes_bytes, count, sstc_code_bits(L->N, L->K), idx);
        for (size_t i = 0; !rc && i < count; i++) {
            if (idx[i] >= (uint32_t)cm->entries) rc = sstc_fail(SSTC_EFORMAT, "infer: code index %u >= M", idx[i]);
            else store_index(cm, i, idx[i]);
        }
        free(idx);
        if (rc || (rc = build_planes(cm))) goto fail;
        return SSTC_OK;
    }
    int8_t *T = malloc((size_t)L->out * fan_in);
    if (!T) {
        rc = sstc_fail(SSTC_ENOMEM, "infer: out of memory decoding a %dx%zu layer", L->out, fan_in);
        goto fail;
    }
    rc = sstc_sst_layer_ternary(L, T);
    if (!rc) reencode_ternary4(cm, T);
    free(T);
    if (rc || (rc = build_planes(cm))) goto fail;
    return SSTC_OK;
fail:
    sstc_coded_matrix_free(cm);
    return rc;
}

/* ---- dispatch ---------------------------------------------------------------- */

static int isa_cap = 2; /* 0 portable, 1 AVX2 at most, 2 AVX-512 at most */

static int have_avx2(void) {
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return have;
}

static int have_avx512(void) {
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") ? 1 : 0;
    }
    return have;
}

int sstc_infer_avx2(void) { return have_avx2() && isa_cap >= 1; }
int sstc_infer_avx512(void) { return have_avx512() && isa_cap >= 2; }
void sstc_infer_force_portable(int on) { isa_cap = on ? 0 : 2; }
void sstc_infer_force_isa(int level) { isa_cap = level; }
int sstc_infer_isa_available(int level) { return level == 0 || (level == 1 && have_avx2()) || (level == 2 && have_avx512()); }

/* Work below this many look-ups or adds runs on one thread (a fork and join
 * costs microseconds when the machine is idle, far more when it is not). */
#define PAR_MIN 65536

/* ---- lut kernel -------------------------------------------------------------- */

/* Group g's table: L[e] = L[parent[e]] +- x[last input of e]. */
#define LUT_BUILD(T)                                                                                                   \
    static void lut_build_##T(const sstc_coded_matrix *cm, const T *x, T *lut, int g) {                                \
        int n = cm->n, E = cm->entries;                                                                                \
        T xx[2 * SSTC_MAX_N];                                                                                          \
        for (int p = 0; p < n; p++) {                                                                                  \
            int j = g * n + p;                                                                                         \
            T v = j < cm->cols ? x[j] : 0;                                                                             \
            xx[2 * p] = v;                                                                                             \
            xx[2 * p + 1] = -v;                                                                                        \
        }                                                                                                              \
        T *L = lut + (size_t)g * E;                                                                                    \
        L[0] = 0;                                                                                                      \
        for (int e = 1; e < E; e++) L[e] = L[cm->parent[e]] + xx[cm->last[e]];                                         \
    }
LUT_BUILD(float)
LUT_BUILD(int32_t)

/* acc[o] = the look-ups of groups [g0, g1) of every row o. */
#define LUT_ROWS_PORTABLE(T)                                                                                           \
    static void lut_rows_##T(const sstc_coded_matrix *cm, const T *lut, int g0, int g1, T *acc) {                      \
        int G = cm->groups, E = cm->entries;                                                                           \
        for (int o = 0; o < cm->rows; o++) {                                                                           \
            T s = 0;                                                                                                   \
            for (int g = g0; g < g1; g++) s += lut[(size_t)g * E + sstc_coded_index(cm, (size_t)o, (size_t)g)];        \
            acc[o] = s;                                                                                                \
        }                                                                                                              \
        (void)G;                                                                                                       \
    }
LUT_ROWS_PORTABLE(float)
LUT_ROWS_PORTABLE(int32_t)

/* AVX2: eight groups per gather; lane l of step s reads lut[(8s+l)*E + idx]. */
#define AVX2 __attribute__((target("avx2")))

AVX2 static inline __m256i load_idx8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
AVX2 static inline __m256i load_idx16(const uint16_t *p) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
}
AVX2 static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
AVX2 static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Groups per block of look-ups: the block's tables (about 64 KB) stay in L1
 * while every row of the thread adds its part; a multiple of 16. */
static int lut_row_block(const sstc_coded_matrix *cm) {
    int gb = (int)(65536 / ((size_t)cm->entries * 4)) & ~15;
    return gb < 16 ? 16 : gb;
}

#define LUT_ROWS_AVX2(NAME, IT, LOAD, VT, ZERO, ADD, GATHER, HSUM, T)                                                  \
    AVX2 static void NAME(const sstc_coded_matrix *cm, const IT *idx, const T *lut, int gA, int gB, T *acc) {          \
        int G = cm->groups, E = cm->entries, GB = lut_row_block(cm), r0 = 0, r1 = cm->rows;                            \
        const __m256i lane = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(E));      \
        const __m256i step = _mm256_set1_epi32(8 * E);                                                                 \
        for (int o = r0; o < r1; o++) acc[o] = 0;                                                                      \
        for (int g0 = gA; g0 < gB; g0 += GB) {                                                                         \
            int g1 = g0 + GB < gB ? g0 + GB : gB;                                                                      \
            const __m256i start = _mm256_add_epi32(lane, _mm256_set1_epi32(g0 * E));                                   \
            /* two rows at a time, two add chains each */                                                             \
            int o = r0;                                                                                                \
            for (; o < r1; o += 2) {                                                                                   \
                int two = o + 1 < r1;                                                                                  \
                const IT *ix = idx + (size_t)o * G, *iy = two ? ix + G : ix;                                           \
                VT s0 = ZERO, s1 = ZERO, s2 = ZERO, s3 = ZERO;                                                         \
                __m256i off = start;                                                                                   \
                int g = g0;                                                                                            \
                for (; g + 16 <= g1; g += 16) {                                                                        \
                    __m256i o1 = _mm256_add_epi32(off, step);                                                          \
                    s0 = ADD(s0, GATHER(lut, _mm256_add_epi32(LOAD(ix + g), off)));                                    \
                    s1 = ADD(s1, GATHER(lut, _mm256_add_epi32(LOAD(ix + g + 8), o1)));                                 \
                    s2 = ADD(s2, GATHER(lut, _mm256_add_epi32(LOAD(iy + g), off)));                                    \
                    s3 = ADD(s3, GATHER(lut, _mm256_add_epi32(LOAD(iy + g + 8), o1)));                                 \
                    off = _mm256_add_epi32(o1, step);                                                                  \
                }                                                                                                      \
                for (; g + 8 <= g1; g += 8) {                                                                          \
                    s0 = ADD(s0, GATHER(lut, _mm256_add_epi32(LOAD(ix + g), off)));                                    \
                    s2 = ADD(s2, GATHER(lut, _mm256_add_epi32(LOAD(iy + g), off)));                                    \
                    off = _mm256_add_epi32(off, step);                                                                 \
                }                                                                                                      \
                T a = HSUM(ADD(s0, s1)), b = HSUM(ADD(s2, s3));                                                        \
                for (; g < g1; g++) a += lut[(size_t)g * E + ix[g]], b += lut[(size_t)g * E + iy[g]];                  \
                acc[o] += a;                                                                                           \
                if (two) acc[o + 1] += b;                                                                              \
            }                                                                                                          \
        }                                                                                                              \
    }
#define GATHER_PS(l, i) _mm256_i32gather_ps((l), (i), 4)
#define GATHER_EPI32(l, i) _mm256_i32gather_epi32((const int *)(l), (i), 4)
LUT_ROWS_AVX2(lut_rows8_f32_avx2, uint8_t, load_idx8, __m256, _mm256_setzero_ps(), _mm256_add_ps, GATHER_PS, hsum_ps,
              float)
LUT_ROWS_AVX2(lut_rows16_f32_avx2, uint16_t, load_idx16, __m256, _mm256_setzero_ps(), _mm256_add_ps, GATHER_PS,
              hsum_ps, float)
LUT_ROWS_AVX2(lut_rows8_i32_avx2, uint8_t, load_idx8, __m256i, _mm256_setzero_si256(), _mm256_add_epi32, GATHER_EPI32,
              hsum_epi32, int32_t)
LUT_ROWS_AVX2(lut_rows16_i32_avx2, uint16_t, load_idx16, __m256i, _mm256_setzero_si256(), _mm256_add_epi32,
              GATHER_EPI32, hsum_epi32, int32_t)

/* ---- sign-plane kernel (AVX-512, one input vector) ---------------------------- */

#define AVX512 __attribute__((target("avx512f")))

/* Tables of chunks [c0, c1): entry m of chunk c = the sum of the inputs 4c+p
 * with bit p of m set (masked adds, fixed order, so every thread and run
 * gives the same bits). */
#define PLANES_TABLES(T, VT, ZERO, SET1, MADD, STORE)                                                                  \
    AVX512 static void planes_tables_##T(const T *x, int cols, int c0, int c1, T *tab) {                               \
        static const __mmask16 bit[4] = {0xAAAA, 0xCCCC, 0xF0F0, 0xFF00};                                             \
        for (int c = c0; c < c1; c++) {                                                                                \
            VT t = ZERO;                                                                                               \
            for (int p = 0; p < 4; p++)                                                                                \
                if (4 * c + p < cols) t = MADD(t, bit[p], t, SET1(x[4 * c + p]));                                     \
            STORE(tab + (size_t)16 * c, t);                                                                            \
        }                                                                                                              \
    }
PLANES_TABLES(float, __m512, _mm512_setzero_ps(), _mm512_set1_ps, _mm512_mask_add_ps, _mm512_storeu_ps)
PLANES_TABLES(int32_t, __m512i, _mm512_setzero_si512(), _mm512_set1_epi32, _mm512_mask_add_epi32,
              _mm512_storeu_si512)

/* acc (all rows) = the look-ups of input blocks [qa, qb): four row blocks (64
 * rows) at a time; per input block, the four chunk tables are loaded once and
 * each row block's 64 bytes are read at offsets 0..3, which brings chunk c's
 * byte into the low bits of every 32-bit lane (the permute reads only the low
 * 4 bits: the +1 plane directly, the -1 plane after a shift by 4). */
#define PLANES_STEP(b, P, M, PERM, ADD)                                                                                \
    do {                                                                                                               \
        __m512i v0 = _mm512_loadu_si512(b), v1 = _mm512_loadu_si512((b) + 1);                                          \
        __m512i v2 = _mm512_loadu_si512((b) + 2), v3 = _mm512_loadu_si512((b) + 3);                                    \
        P = ADD(P, ADD(PERM(v0, t0), PERM(v1, t1)));                                                                   \
        M = ADD(M, ADD(PERM(_mm512_srli_epi32(v0, 4), t0), PERM(_mm512_srli_epi32(v1, 4), t1)));                       \
        P = ADD(P, ADD(PERM(v2, t2), PERM(v3, t3)));                                                                   \
        M = ADD(M, ADD(PERM(_mm512_srli_epi32(v2, 4), t2), PERM(_mm512_srli_epi32(v3, 4), t3)));                       \
    } while (0)
/* Four row blocks in named registers (an array indexed in a loop would live
 * on the stack), then the remaining one to three blocks one at a time. */
#define PLANES_ROWS(T, VT, ZERO, LOADT, PERM, ADD, SUB, MSTORE)                                                        \
    AVX512 static void planes_store_##T(const sstc_coded_matrix *cm, int rb, VT v, T *acc) {                          \
        int r0 = rb * 16, left = cm->rows - r0;                                                                        \
        __mmask16 keep = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);                               \
        MSTORE(acc + r0, keep, v);                                                                                     \
    }                                                                                                                  \
    AVX512 static void planes_rowrange_##T(const sstc_coded_matrix *cm, const T *tab, int qa, int qb, int rb, int RB,  \
                                           T *acc);                                                                    \
    AVX512 static void planes_rows_##T(const sstc_coded_matrix *cm, const T *tab, int qa, int qb, T *acc) {            \
        planes_rowrange_##T(cm, tab, qa, qb, 0, cm->rblocks, acc);                                                     \
    }                                                                                                                  \
    AVX512 static void planes_rowrange_##T(const sstc_coded_matrix *cm, const T *tab, int qa, int qb, int rb, int RB,  \
                                           T *acc) {                                                                   \
        int IB = cm->iblocks;                                                                                          \
        size_t blk = (size_t)IB * 64;                                                                                  \
        for (; rb + 4 <= RB; rb += 4) {                                                                                \
            VT P0 = ZERO, P1 = ZERO, P2 = ZERO, P3 = ZERO, M0 = ZERO, M1 = ZERO, M2 = ZERO, M3 = ZERO;                 \
            const uint8_t *base = cm->planes + (size_t)rb * blk;                                                       \
            for (int q = qa; q < qb; q++) {                                                                            \
                const T *tq = tab + (size_t)q * 64;                                                                    \
                VT t0 = LOADT(tq), t1 = LOADT(tq + 16), t2 = LOADT(tq + 32), t3 = LOADT(tq + 48);                      \
                const uint8_t *b = base + (size_t)q * 64;                                                              \
                PLANES_STEP(b, P0, M0, PERM, ADD);                                                                     \
                PLANES_STEP(b + blk, P1, M1, PERM, ADD);                                                               \
                PLANES_STEP(b + 2 * blk, P2, M2, PERM, ADD);                                                           \
                PLANES_STEP(b + 3 * blk, P3, M3, PERM, ADD);                                                           \
            }                                                                                                          \
            planes_store_##T(cm, rb, SUB(P0, M0), acc);                                                                \
            planes_store_##T(cm, rb + 1, SUB(P1, M1), acc);                                                            \
            planes_store_##T(cm, rb + 2, SUB(P2, M2), acc);                                                            \
            planes_store_##T(cm, rb + 3, SUB(P3, M3), acc);                                                            \
        }                                                                                                              \
        for (; rb < RB; rb++) {                                                                                        \
            VT P0 = ZERO, M0 = ZERO;                                                                                   \
            const uint8_t *base = cm->planes + (size_t)rb * blk;                                                       \
            for (int q = qa; q < qb; q++) {                                                                            \
                const T *tq = tab + (size_t)q * 64;                                                                    \
                VT t0 = LOADT(tq), t1 = LOADT(tq + 16), t2 = LOADT(tq + 32), t3 = LOADT(tq + 48);                      \
                PLANES_STEP(base + (size_t)q * 64, P0, M0, PERM, ADD);                                                 \
            }                                                                                                          \
            planes_store_##T(cm, rb, SUB(P0, M0), acc);                                                                \
        }                                                                                                              \
    }
#define PERM_PS(i, t) _mm512_permutexvar_ps((i), (t))
PLANES_ROWS(float, __m512, _mm512_setzero_ps(), _mm512_loadu_ps, PERM_PS, _mm512_add_ps, _mm512_sub_ps,
            _mm512_mask_storeu_ps)
PLANES_ROWS(int32_t, __m512i, _mm512_setzero_si512(), _mm512_loadu_si512, _mm512_permutexvar_epi32, _mm512_add_epi32,
            _mm512_sub_epi32, _mm512_mask_storeu_epi32)

/* Layers below this many weights run on one thread. What a second thread
 * costs depends on OpenMP's waiting policy: threads that sleep between
 * regions (OMP_WAIT_POLICY=passive) take longer to wake than a 1024x1024
 * product takes (about 8 us), so then only layers of 4M weights and more are
 * split; threads that spin a while first (the sstc command line's
 * GOMP_SPINCOUNT=10000, or OpenMP's default) join within a microsecond, and
 * layers from 512K weights on are split (measured, docs/inference.md: the
 * 1024x1024 layer 7.8 -> 5.1-7.1 us, the MNIST network 42-45k -> 58-65k
 * images/s). SSTC_PLANES_PAR_MIN overrides it. */
static size_t planes_par_min_v;
static int planes_par_min_explicit; /* set by SSTC_PLANES_PAR_MIN or the function below */
void sstc_coded_set_planes_par_min(size_t weights) { planes_par_min_v = weights, planes_par_min_explicit = weights > 0; }
static size_t planes_par_min(void) {
    size_t v = planes_par_min_v;
    if (!v) {
        const char *e = getenv("SSTC_PLANES_PAR_MIN"), *w = getenv("OMP_WAIT_POLICY");
        char *end = NULL;
        unsigned long long u = e ? strtoull(e, &end, 10) : 0;
        if (e && *e >= '0' && *e <= '9' && !*end && u > 0) v = (size_t)u, planes_par_min_explicit = 1;
        else v = w && !strcasecmp(w, "passive") ? (size_t)1 << 22 : (size_t)1 << 19; /* anything else: the default */
        planes_par_min_v = v;
    }
    return v;
}
/* How many threads a one-vector product of this layer runs on: the layer's
 * measured choice (sstc_coded_tune) where there is one for this thread count
 * and no explicit threshold was given, else the threshold rule above. */
static _Thread_local int force_parts; /* the tuner's */
static int gemv_parts(const sstc_coded_matrix *cm) {
    int T = omp_get_max_threads();
    if (force_parts) return force_parts < T ? force_parts : T;
    size_t par_min = planes_par_min();
    if (!planes_par_min_explicit && cm->tuned_threads == T && cm->tuned_parts) return cm->tuned_parts;
    return (size_t)cm->rows * (size_t)cm->cols >= par_min ? T : 1;
}

/* Each thread builds the whole tables (its own copy: a few percent of the
 * product) and adds up a share of the row blocks over all inputs: every row
 * is summed in the same order as on one thread (the same bits whatever the
 * thread count), with no partial sums to add and no barrier. Measured
 * against the earlier split (threads took shares of the input blocks, then
 * their partial sums were added) and against shared tables behind a barrier
 * in docs/inference.md. */
/* The other threads' copies of the tables, kept from call to call (a malloc
 * per call costs more than a small layer's product). */
static _Thread_local void *tab_buf;
static _Thread_local size_t tab_cap;
static void *tab_scratch(size_t bytes) {
    if (bytes > tab_cap) {
        free(tab_buf);
        tab_buf = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        tab_cap = tab_buf ? bytes : 0;
    }
    return tab_buf;
}
#define PLANES_GEMV(T)                                                                                                 \
    static void planes_gemv_##T(const sstc_coded_matrix *cm, const T *x, T *tab, T *acc) {                             \
        int IB = cm->iblocks, RB = cm->rblocks;                                                                        \
        int parts = gemv_parts(cm);                                                                                    \
        if (parts > RB) parts = RB;                                                                                    \
        /* every thread its own copy of the tables: no barrier, which costs a \
         * wake-up when waiting threads sleep (OMP_WAIT_POLICY=passive) */     \
        size_t tsz = (size_t)IB * 64;                                                                                  \
        T *copies = parts > 1 ? tab_scratch((size_t)(parts - 1) * tsz * sizeof(T)) : NULL;                            \
        if (!copies) parts = 1;                                                                                        \
        if (parts <= 1) {                                                                                              \
            planes_tables_##T(x, cm->cols, 0, 4 * IB, tab);                                                            \
            planes_rows_##T(cm, tab, 0, IB, acc);                                                                      \
            return;                                                                                                    \
        }                                                                                                              \
        _Pragma("omp parallel num_threads(parts)") {                                                                   \
            int t = omp_get_thread_num(), n = omp_get_num_threads();                                                   \
            T *mine = t ? copies + (size_t)(t - 1) * tsz : tab;                                                        \
            planes_tables_##T(x, cm->cols, 0, 4 * IB, mine);                                                           \
            planes_rowrange_##T(cm, mine, 0, IB, (int)((long)RB * t / n), (int)((long)RB * (t + 1) / n), acc);         \
        }                                                                                                              \
    }
PLANES_GEMV(float)
PLANES_GEMV(int32_t)

/* ---- pair kernel (AVX-512, one input vector, (8,1) and (8,2)) ------------------ */

/* Group g's two tables: A = its 8 inputs, then their negations (0 past the
 * last input); B = the same with entries 0 and 8 (+x_0 and -x_0) zero. */
#define PAIRS_TABLES(T, VT, MLOAD, SHUF, ZERO, MSUB, MZMOV, STORE)                                                     \
    AVX512 static void pairs_tables_##T(const T *x, int cols, int GQ, T *tab) {                                        \
        for (int g = 0; g < 4 * GQ; g++) {                                                                             \
            int left = cols - 8 * g;                                                                                   \
            __mmask16 m = left >= 8 ? (__mmask16)0xFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;                  \
            VT h = MLOAD(m, x + (left > 0 ? 8 * g : 0));                                                               \
            h = SHUF(h, h, _MM_SHUFFLE(1, 0, 1, 0)); /* lanes 8-15 = lanes 0-7 */                                      \
            h = MSUB(h, 0xFF00, ZERO, h);                                                                              \
            STORE(tab + (size_t)32 * g, h);                                                                            \
            STORE(tab + (size_t)32 * g + 16, MZMOV(0xFEFE, h));                                                        \
        }                                                                                                              \
    }
PAIRS_TABLES(float, __m512, _mm512_maskz_loadu_ps, _mm512_shuffle_f32x4, _mm512_setzero_ps(), _mm512_mask_sub_ps,
             _mm512_maskz_mov_ps, _mm512_storeu_ps)
PAIRS_TABLES(int32_t, __m512i, _mm512_maskz_loadu_epi32, _mm512_shuffle_i32x4, _mm512_setzero_si512(),
             _mm512_mask_sub_epi32, _mm512_maskz_mov_epi32, _mm512_storeu_si512)

/* Per 16 rows and group: two permutes, position a of every row's byte into
 * table A and position b into table B (the permute reads only the low 4
 * bits of each lane, so a directly, b after a shift by 4), and their sum.
 * A one-non-zero entry is (its position, 0: B's zero), the zero entry
 * (+x_1, -x_1), whose sum is an exact zero. The 64 bytes of a block are read
 * at offsets 0..3 as in the sign-plane kernel. Each group's pair is summed
 * first, then added to the row's sum in group order. */
#define PAIRS_ONE(A, v, ta, tb) A = ADD(A, ADD(PERM(v, ta), PERM(_mm512_srli_epi32(v, 4), tb)))
#define PAIRS_STEP(b, A)                                                                                               \
    do {                                                                                                               \
        __m512i v0 = _mm512_loadu_si512(b), v1 = _mm512_loadu_si512((b) + 1);                                          \
        __m512i v2 = _mm512_loadu_si512((b) + 2), v3 = _mm512_loadu_si512((b) + 3);                                    \
        PAIRS_ONE(A, v0, a0, b0);                                                                                      \
        PAIRS_ONE(A, v1, a1, b1);                                                                                      \
        PAIRS_ONE(A, v2, a2, b2);                                                                                      \
        PAIRS_ONE(A, v3, a3, b3);                                                                                      \
    } while (0)
#define PAIRS_LOAD_TABLES(VT, LOADT, tq)                                                                               \
    VT a0 = LOADT(tq), b0 = LOADT((tq) + 16), a1 = LOADT((tq) + 32), b1 = LOADT((tq) + 48);                            \
    VT a2 = LOADT((tq) + 64), b2 = LOADT((tq) + 80), a3 = LOADT((tq) + 96), b3 = LOADT((tq) + 112)
#define PAIRS_ROWS(T, VT, ZERO, LOADT)                                                                                 \
    AVX512 static void pairs_rowrange_##T(const sstc_coded_matrix *cm, const T *tab, int rb, int RB, T *acc) {         \
        int GQ = cm->gquads;                                                                                           \
        size_t blk = (size_t)GQ * 64;                                                                                  \
        for (; rb + 4 <= RB; rb += 4) {                                                                                \
            VT A0 = ZERO, A1 = ZERO, A2 = ZERO, A3 = ZERO;                                                             \
            const uint8_t *base = cm->pairs + (size_t)rb * blk;                                                        \
            for (int q = 0; q < GQ; q++) {                                                                             \
                PAIRS_LOAD_TABLES(VT, LOADT, tab + (size_t)q * 128);                                                   \
                const uint8_t *b = base + (size_t)q * 64;                                                              \
                PAIRS_STEP(b, A0);                                                                                     \
                PAIRS_STEP(b + blk, A1);                                                                               \
                PAIRS_STEP(b + 2 * blk, A2);                                                                           \
                PAIRS_STEP(b + 3 * blk, A3);                                                                           \
            }                                                                                                          \
            planes_store_##T(cm, rb, A0, acc);                                                                         \
            planes_store_##T(cm, rb + 1, A1, acc);                                                                     \
            planes_store_##T(cm, rb + 2, A2, acc);                                                                     \
            planes_store_##T(cm, rb + 3, A3, acc);                                                                     \
        }                                                                                                              \
        for (; rb < RB; rb++) {                                                                                        \
            VT A0 = ZERO;                                                                                              \
            const uint8_t *base = cm->pairs + (size_t)rb * blk;                                                        \
            for (int q = 0; q < GQ; q++) {                                                                             \
                PAIRS_LOAD_TABLES(VT, LOADT, tab + (size_t)q * 128);                                                   \
                PAIRS_STEP(base + (size_t)q * 64, A0);                                                                 \
            }                                                                                                          \
            planes_store_##T(cm, rb, A0, acc);                                                                         \
        }                                                                                                              \
    }
#define PERM PERM_PS
#define ADD _mm512_add_ps
PAIRS_ROWS(float, __m512, _mm512_setzero_ps(), _mm512_loadu_ps)
#undef PERM
#undef ADD
#define PERM _mm512_permutexvar_epi32
#define ADD _mm512_add_epi32
PAIRS_ROWS(int32_t, __m512i, _mm512_setzero_si512(), _mm512_loadu_si512)
#undef PERM
#undef ADD

static int pairs_on = 1;
void sstc_coded_use_pairs(int on) { pairs_on = on; }

/* Split over the threads as the sign-plane kernel is: every thread its own
 * tables (half the inputs' bytes per thread here), a share of the row
 * blocks, the same bits whatever the thread count. */
#define PAIRS_GEMV(T)                                                                                                  \
    static int pairs_gemv_##T(const sstc_coded_matrix *cm, const T *x, T *tab, T *acc) {                               \
        if (!cm->pairs || !pairs_on || !sstc_infer_avx512()) return 0;                                                 \
        int GQ = cm->gquads, RB = cm->rblocks;                                                                         \
        int parts = gemv_parts(cm);                                                                                    \
        if (parts > RB) parts = RB;                                                                                    \
        size_t tsz = (size_t)GQ * 128;                                                                                 \
        T *copies = parts > 1 ? tab_scratch((size_t)(parts - 1) * tsz * sizeof(T)) : NULL;                            \
        if (!copies) parts = 1;                                                                                        \
        if (parts <= 1) {                                                                                              \
            pairs_tables_##T(x, cm->cols, GQ, tab);                                                                    \
            pairs_rowrange_##T(cm, tab, 0, RB, acc);                                                                   \
            return 1;                                                                                                  \
        }                                                                                                              \
        _Pragma("omp parallel num_threads(parts)") {                                                                   \
            int t = omp_get_thread_num(), n = omp_get_num_threads();                                                   \
            T *mine = t ? copies + (size_t)(t - 1) * tsz : tab;                                                        \
            pairs_tables_##T(x, cm->cols, GQ, mine);                                                                   \
            pairs_rowrange_##T(cm, mine, (int)((long)RB * t / n), (int)((long)RB * (t + 1) / n), acc);                 \
        }                                                                                                              \
        return 1;                                                                                                      \
    }
PAIRS_GEMV(float)
PAIRS_GEMV(int32_t)

/* What a parallel region costs differs tenfold between machines (measured:
 * under a microsecond on one 2-core virtual machine, 3.2 us on another of
 * the same type), and the one-vector products of mid-sized layers take a
 * few microseconds: so each layer from 128K weights on times its float
 * product on one thread and on all of them once, when it is built (best of
 * 7 rounds of 4 calls each, about 6 ms for a 4096x4096 layer), and keeps
 * the faster; the split needs to win by 10 %. Both give the same bits. */
void sstc_coded_tune(sstc_coded_matrix *cm) {
    int T = omp_get_max_threads();
    cm->tuned_threads = 0, cm->tuned_parts = 0;
    if (T <= 1 || !sstc_infer_avx512() || !(cm->pairs || cm->planes)) return;
    size_t w = (size_t)cm->rows * (size_t)cm->cols;
    if (w < ((size_t)1 << 17) || cm->rblocks < 2) {
        cm->tuned_threads = T, cm->tuned_parts = 1;
        return;
    }
    size_t nl = sstc_coded_lut_size(cm);
    float *x = malloc((size_t)cm->cols * sizeof(float)), *lut = malloc((nl ? nl : 1) * sizeof(float));
    float *acc = malloc((size_t)cm->rows * sizeof(float));
    if (!x || !lut || !acc || !nl) goto done;
    for (int j = 0; j < cm->cols; j++) x[j] = (float)(j % 7) - 3.0f;
    double best[2] = {1e30, 1e30};
    for (int rep = 0; rep < 8; rep++)
        for (int k = 0; k < 2; k++) {
            force_parts = k ? T : 1;
            double t0 = omp_get_wtime();
            for (int i = 0; i < 4; i++) sstc_coded_gemv_f32(cm, x, lut, acc);
            double t = omp_get_wtime() - t0;
            if (rep && t < best[k]) best[k] = t; /* the first round of each warms the caches */
        }
    force_parts = 0;
    cm->tuned_threads = T, cm->tuned_parts = best[1] < 0.9 * best[0] ? T : 1;
done:
    free(x), free(lut), free(acc);
}

/* Threads split the groups, not the rows: each builds the tables of its
 * groups and adds them up for every row into its own partial sums, so the
 * threads never wait for each other until the join; the partial sums are
 * added at the end (a few thousand adds). */
#define GEMV(T, SUF)                                                                                                   \
    static void gemv_part_##SUF(const sstc_coded_matrix *cm, const T *x, T *lut, int g0, int g1, T *acc, int avx) {    \
        for (int g = g0; g < g1; g++) lut_build_##T(cm, x, lut, g);                                                    \
        if (!avx) lut_rows_##T(cm, lut, g0, g1, acc);                                                                  \
        else if (cm->idx8) lut_rows8_##SUF##_avx2(cm, cm->idx8, lut, g0, g1, acc);                                     \
        else lut_rows16_##SUF##_avx2(cm, cm->idx16, lut, g0, g1, acc);                                                 \
    }                                                                                                                  \
    void sstc_coded_gemv_##SUF(const sstc_coded_matrix *cm, const T *x, T *lut, T *acc) {                              \
        if (pairs_gemv_##T(cm, x, lut, acc)) return;                                                                    \
        if (cm->planes && sstc_infer_avx512()) {                                                                       \
            planes_gemv_##T(cm, x, lut, acc);                                                                          \
            return;                                                                                                    \
        }                                                                                                              \
        int G = cm->groups, R = cm->rows, avx = sstc_infer_avx2();                                                     \
        int parts = (size_t)R * G + (size_t)G * cm->entries > PAR_MIN ? omp_get_max_threads() : 1;                     \
        if (parts > G / 16) parts = G / 16;                                                                            \
        T *part = parts > 1 ? malloc((size_t)parts * R * sizeof(T)) : NULL;                                            \
        if (!part) {                                                                                                   \
            gemv_part_##SUF(cm, x, lut, 0, G, acc, avx);                                                               \
            return;                                                                                                    \
        }                                                                                                              \
        _Pragma("omp parallel for schedule(static)") for (int t = 0; t < parts; t++) {                                 \
            int g0 = (int)((long)G * t / parts) & ~15, g1 = t + 1 == parts ? G : (int)((long)G * (t + 1) / parts) & ~15; \
            gemv_part_##SUF(cm, x, lut, g0, g1, part + (size_t)t * R, avx);                                            \
        }                                                                                                              \
        for (int o = 0; o < R; o++) {                                                                                  \
            T s = part[o];                                                                                             \
            for (int t = 1; t < parts; t++) s += part[(size_t)t * R + o];                                              \
            acc[o] = s;                                                                                                \
        }                                                                                                              \
        free(part);                                                                                                    \
    }
GEMV(float, f32)
GEMV(int32_t, i32)

/* ---- direct kernel ----------------------------------------------------------- */

/* Portable: one row, lanes [l0, l1). */
static void direct_row_f32(const sstc_coded_matrix *cm, const float *xt, size_t ld, int o, size_t l0, size_t l1,
                           float *acc) {
    int G = cm->groups, S = cm->slots, n = cm->n;
    float *a = acc + (size_t)o * ld;
    for (size_t l = l0; l < l1; l++) a[l] = 0;
    for (int g = 0; g < G; g++) {
        uint32_t e = sstc_coded_index(cm, (size_t)o, (size_t)g);
        for (int s = 0; s < S; s++) {
            int8_t v = cm->sval[e * S + s];
            if (!v) break;
            const float *x = xt + (size_t)(g * n + cm->spos[e * S + s]) * ld;
            if (v > 0)
                for (size_t l = l0; l < l1; l++) a[l] += x[l];
            else
                for (size_t l = l0; l < l1; l++) a[l] -= x[l];
        }
    }
}
static void direct_row_i32(const sstc_coded_matrix *cm, const int32_t *xt, size_t ld, int o, size_t l0, size_t l1,
                           int32_t *acc) {
    int G = cm->groups, S = cm->slots, n = cm->n;
    int32_t *a = acc + (size_t)o * ld;
    for (size_t l = l0; l < l1; l++) a[l] = 0;
    for (int g = 0; g < G; g++) {
        uint32_t e = sstc_coded_index(cm, (size_t)o, (size_t)g);
        for (int s = 0; s < S; s++) {
            int8_t v = cm->sval[e * S + s];
            if (!v) break;
            const int32_t *x = xt + (size_t)(g * n + cm->spos[e * S + s]) * ld;
            if (v > 0)
                for (size_t l = l0; l < l1; l++) a[l] += x[l];
            else
                for (size_t l = l0; l < l1; l++) a[l] -= x[l];
        }
    }
}

/* AVX2: W vectors of 8 lanes per pass, every slot of every group branch-free:
 * float adds (x AND keep) XOR flip, int32 adds ((x AND keep) XOR neg) - neg. */
#define DIRECT_AVX2(NAME, T, W)                                                                                        \
    AVX2 static void NAME(const sstc_coded_matrix *cm, const T *xt, size_t ld, int o, size_t l0, T *acc) {             \
        int G = cm->groups, S = cm->slots, n = cm->n;                                                                  \
        __m256i a[W];                                                                                                  \
        for (int v = 0; v < W; v++) a[v] = _mm256_setzero_si256();                                                     \
        for (int g = 0; g < G; g++) {                                                                                  \
            size_t e = sstc_coded_index(cm, (size_t)o, (size_t)g) * (size_t)S;                                         \
            const T *xg = xt + (size_t)g * n * ld + l0;                                                                \
            for (int s = 0; s < S; s++) {                                                                              \
                const T *x = xg + (size_t)cm->spos[e + s] * ld;                                                        \
                __m256i keep = _mm256_set1_epi32((int)cm->skeep[e + s]);                                               \
                DIRECT_BODY_##T(W)                                                                                     \
            }                                                                                                          \
        }                                                                                                              \
        for (int v = 0; v < W; v++) _mm256_storeu_si256((__m256i *)(acc + (size_t)o * ld + l0 + 8 * v), a[v]);        \
    }
#define DIRECT_BODY_float(W)                                                                                           \
    __m256 flip = _mm256_castsi256_ps(_mm256_set1_epi32((int)cm->sflip[e + s]));                                       \
    __m256 km = _mm256_castsi256_ps(keep);                                                                             \
    for (int v = 0; v < W; v++)                                                                                        \
        a[v] = _mm256_castps_si256(_mm256_add_ps(                                                                      \
            _mm256_castsi256_ps(a[v]), _mm256_xor_ps(_mm256_and_ps(_mm256_loadu_ps(x + 8 * v), km), flip)));
#define DIRECT_BODY_int32_t(W)                                                                                         \
    __m256i neg = _mm256_set1_epi32(cm->sneg[e + s]);                                                                  \
    for (int v = 0; v < W; v++)                                                                                        \
        a[v] = _mm256_add_epi32(                                                                                       \
            a[v], _mm256_sub_epi32(                                                                                    \
                      _mm256_xor_si256(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + 8 * v)), keep), neg), \
                      neg));
DIRECT_AVX2(direct4_float_avx2, float, 4)
DIRECT_AVX2(direct1_float_avx2, float, 1)
DIRECT_AVX2(direct4_int32_t_avx2, int32_t, 4)
DIRECT_AVX2(direct1_int32_t_avx2, int32_t, 1)

/* Work units are (lane tile of 32, block of 8 rows), lane tiles outermost, so
 * that each thread's part of xt stays in cache while it runs its rows. */
#define GEMM_DIRECT(T, SUF)                                                                                            \
    void sstc_coded_gemm_direct_##SUF(const sstc_coded_matrix *cm, const T *xt, size_t ld, T *acc) {                   \
        int R = cm->rows, RB = (R + 7) / 8, avx = sstc_infer_avx2();                                                   \
        long tiles = (long)((ld + 31) / 32);                                                                           \
        int par = (size_t)R * cm->groups * cm->slots * ld > PAR_MIN;                                                   \
        _Pragma("omp parallel for collapse(2) schedule(static) if (par)")                                             \
        for (long t = 0; t < tiles; t++)                                                                               \
            for (int rb = 0; rb < RB; rb++) {                                                                          \
                size_t l0 = (size_t)t * 32, l1 = l0 + 32 < ld ? l0 + 32 : ld;                                          \
                int r1 = rb * 8 + 8 < R ? rb * 8 + 8 : R;                                                              \
                for (int o = rb * 8; o < r1; o++) {                                                                    \
                    if (!avx) direct_row_##SUF(cm, xt, ld, o, l0, l1, acc);                                            \
                    else if (l1 - l0 == 32) direct4_##T##_avx2(cm, xt, ld, o, l0, acc);                                \
                    else                                                                                               \
                        for (size_t l = l0; l < l1; l += 8) direct1_##T##_avx2(cm, xt, ld, o, l, acc);                 \
                }                                                                                                      \
            }                                                                                                          \
    }
GEMM_DIRECT(float, f32)
GEMM_DIRECT(int32_t, i32)

/* ---- batched look-up tables ---------------------------------------------------- */

/* For a tile of 8 lanes: tables of all E entries for a block of groups, each
 * entry a vector of 8 lanes (built as in the one-vector kernel, a parent plus
 * or minus one input); then every row adds one table vector per group of the
 * block. Rows [r0, r1), lanes [l0, l0 + 8). The block is sized for L2: a row
 * reads and writes its accumulator once per block, so small (L1) blocks cost
 * more in accumulator traffic than they save in look-up latency (measured). */
#define LUT_BLOCK_BYTES ((size_t)1 << 20)
static int lut_block_groups(const sstc_coded_matrix *cm) {
    int gb = (int)(LUT_BLOCK_BYTES / ((size_t)cm->entries * 32));
    return gb < 1 ? 1 : gb;
}

#define LUT8_PORTABLE(T)                                                                                               \
    static void lut8_tile_##T(const sstc_coded_matrix *cm, const T *xt, size_t ld, size_t l0, int r0, int r1, T *acc,  \
                              T *buf) {                                                                                \
        int G = cm->groups, E = cm->entries, n = cm->n, GB = lut_block_groups(cm);                                     \
        for (int g0 = 0; g0 < G; g0 += GB) {                                                                           \
            int gn = G - g0 < GB ? G - g0 : GB;                                                                        \
            for (int gi = 0; gi < gn; gi++) {                                                                          \
                T xx[2 * SSTC_MAX_N][8];                                                                               \
                for (int p = 0; p < n; p++) {                                                                          \
                    int j = (g0 + gi) * n + p;                                                                         \
                    for (int l = 0; l < 8; l++) {                                                                      \
                        xx[2 * p][l] = j < cm->cols ? xt[(size_t)j * ld + l0 + l] : 0;                                 \
                        xx[2 * p + 1][l] = -xx[2 * p][l];                                                              \
                    }                                                                                                  \
                }                                                                                                      \
                T *L = buf + (size_t)gi * E * 8;                                                                       \
                for (int l = 0; l < 8; l++) L[l] = 0;                                                                  \
                for (int e = 1; e < E; e++)                                                                            \
                    for (int l = 0; l < 8; l++) L[e * 8 + l] = L[cm->parent[e] * 8 + l] + xx[cm->last[e]][l];          \
            }                                                                                                          \
            for (int o = r0; o < r1; o++) {                                                                            \
                T a[8];                                                                                                \
                T *dst = acc + (size_t)o * ld + l0;                                                                    \
                for (int l = 0; l < 8; l++) a[l] = g0 ? dst[l] : 0;                                                    \
                for (int gi = 0; gi < gn; gi++) {                                                                      \
                    const T *v = buf + ((size_t)gi * E + sstc_coded_index(cm, (size_t)o, (size_t)(g0 + gi))) * 8;      \
                    for (int l = 0; l < 8; l++) a[l] += v[l];                                                          \
                }                                                                                                      \
                for (int l = 0; l < 8; l++) dst[l] = a[l];                                                             \
            }                                                                                                          \
        }                                                                                                              \
    }
LUT8_PORTABLE(float)
LUT8_PORTABLE(int32_t)

#define LD_PS(p) _mm256_loadu_ps(p)
#define ST_PS(p, v) _mm256_storeu_ps((p), (v))
#define NEG_PS(v) _mm256_xor_ps((v), _mm256_set1_ps(-0.0f))
#define LD_SI(p) _mm256_loadu_si256((const __m256i *)(p))
#define ST_SI(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define NEG_SI(v) _mm256_sub_epi32(_mm256_setzero_si256(), (v))

/* The vector kernels, one macro for AVX2 (tiles of 8 lanes, blocks of 1 MB
 * of tables) and AVX-512 (tiles of 16 lanes, blocks of 256 KB: measured best
 * on an AVX-512 machine with 1 MB of L2 per core): one vector per table
 * entry and per accumulator, four rows at a time. The (8,2) table is built
 * from registers (0, the inputs and their negations, then every pair as one
 * sum of two of them, in the canonical order) without reading the table
 * back. A lane adds the same values in the same order in both widths, so
 * the two give the same bits (tested). */
/* Codes of at most 2 non-zeros per group ((8,2), (16,2), (4,1), (8,1)) can
 * skip the big tables: every entry is the sum of at most two "singles"
 * (0, +x_p, -x_p: 2n + 1 vectors per group), so a row adds two vectors from
 * a table small enough for L1 instead of one from a table of E vectors. The
 * pair sum is formed first, in the order the big table forms it (slot 0 has
 * the lower position), so the two paths give the same bits (tested).
 * Measured (docs/inference.md): for (16,2) (513 entries, 32 KB per group and
 * 16 lanes) the singles are 1.3-1.45x faster; for (8,2) (129 entries) on
 * 1024 or 4096 rows the two are even or the big table wins, but on layers of
 * few rows, where building the big tables (E vectors per group) costs as much
 * as the look-ups (one per row and group), the singles win: the CIFAR-10
 * network's convolutions (64-256 rows) run 1.07-1.15x faster. With one
 * non-zero the big table is the singles table and one look-up. So the
 * default takes the singles for K = 2 with more than 256 entries or at most
 * 256 rows. SSTC_BATCHED=tables|singles forces one path
 * (singles wherever K <= 2), for benchmarks; sstc_coded_force_singles in code. */
static int singles_mode = -1; /* -1: unread, 0: tables, 1: singles where K <= 2, 2: by the measured rule */
void sstc_coded_force_singles(int mode) { singles_mode = mode; }
int sstc_coded_use_singles(const sstc_coded_matrix *cm) {
    if (singles_mode < 0) {
        const char *v = getenv("SSTC_BATCHED");
        singles_mode = v && !strcmp(v, "tables") ? 0 : v && !strcmp(v, "singles") ? 1 : 2;
    }
    if (!singles_mode || !cm->native || cm->slots > 2 || cm->entries > SSTC_INFER_MAX_NATIVE) return 0;
    return singles_mode == 1 || (cm->slots == 2 && (cm->entries > 256 || cm->rows <= 256));
}
#define PAIR_BLOCK_BYTES ((size_t)32 << 10)
static int pair_block_groups(const sstc_coded_matrix *cm, int w) {
    int gb = (int)(PAIR_BLOCK_BYTES / ((size_t)(2 * cm->n + 1) * w * 4));
    return gb < 1 ? 1 : gb;
}
#define LUT16_BLOCK_BYTES ((size_t)256 << 10) /* 1.2-1.8x faster than 1 MB or 64 KB on the bench_infer layers */
static int lut16_block_groups(const sstc_coded_matrix *cm) {
    int gb = (int)(LUT16_BLOCK_BYTES / ((size_t)cm->entries * 64));
    return gb < 1 ? 1 : gb;
}
#define PAIR_ROWS(W, T, VT, ZERO, LOAD, STORE, ADD, IDX)                                                                  \
    {                                                                                                                  \
                int o = r0;                                                                                            \
                for (; o + 4 <= r1; o += 4) {                                                                          \
                    T *d = acc + (size_t)o * ld + l0;                                                                  \
                    const __typeof__(*(IDX)) *ix = (IDX) + (size_t)o * G + g0;                                                 \
                    VT a0 = g0 ? LOAD(d) : ZERO, a1 = g0 ? LOAD(d + ld) : ZERO;                                        \
                    VT a2 = g0 ? LOAD(d + 2 * ld) : ZERO, a3 = g0 ? LOAD(d + 3 * ld) : ZERO;                           \
                    for (int gi = 0; gi < gn; gi++) {                                                                  \
                        const T *L = buf + (size_t)gi * SE * W;                                                        \
                        uint32_t e0 = dec[ix[gi]], e1 = dec[ix[G + gi]], e2 = dec[ix[2 * G + gi]], e3 = dec[ix[3 * G + gi]]; \
                        a0 = ADD(a0, ADD(LOAD(L + (e0 & 0xffff)), LOAD(L + (e0 >> 16))));                             \
                        a1 = ADD(a1, ADD(LOAD(L + (e1 & 0xffff)), LOAD(L + (e1 >> 16))));                             \
                        a2 = ADD(a2, ADD(LOAD(L + (e2 & 0xffff)), LOAD(L + (e2 >> 16))));                             \
                        a3 = ADD(a3, ADD(LOAD(L + (e3 & 0xffff)), LOAD(L + (e3 >> 16))));                             \
                    }                                                                                                  \
                    STORE(d, a0);                                                                                      \
                    STORE(d + ld, a1);                                                                                 \
                    STORE(d + 2 * ld, a2);                                                                             \
                    STORE(d + 3 * ld, a3);                                                                             \
                }                                                                                                      \
                for (; o < r1; o++) {                                                                                  \
                    T *d = acc + (size_t)o * ld + l0;                                                                  \
                    const __typeof__(*(IDX)) *ix = (IDX) + (size_t)o * G + g0;                                                 \
                    VT a0 = g0 ? LOAD(d) : ZERO;                                                                       \
                    for (int gi = 0; gi < gn; gi++) {                                                                  \
                        const T *L = buf + (size_t)gi * SE * W;                                                        \
                        uint32_t e0 = dec[ix[gi]];                                                                     \
                        a0 = ADD(a0, ADD(LOAD(L + (e0 & 0xffff)), LOAD(L + (e0 >> 16))));                             \
                    }                                                                                                  \
                    STORE(d, a0);                                                                                      \
                }                                                                                                      \
    }
#define LUT_TILE(NAME, W, TARGET, GROUPS, T, VT, ZERO, LOAD, STORE, ADD, NEG)                                                               \
    TARGET static void NAME(const sstc_coded_matrix *cm, const T *xt, size_t ld, size_t l0, int r0, int r1, T *acc,  \
                            T *buf) {                                               \
        int G = cm->groups, E = cm->entries, n = cm->n, GB = GROUPS(cm);                                   \
        if (sstc_coded_use_singles(cm)) { /* K <= 2: two look-ups in a table of 2n + 1 entries */                      \
            int SE = 2 * n + 1, GS = pair_block_groups(cm, W);                                                         \
            uint32_t dec[SSTC_INFER_MAX_NATIVE]; /* entry -> the offsets of its two singles' vectors, slot 0 in the low half */           \
            for (int e = 0; e < E; e++) {                                                                              \
                uint32_t d[2] = {0, 0};                                                                                \
                for (int k = 0; k < cm->slots; k++)                                                                    \
                    if (cm->sval[e * cm->slots + k])                                                                   \
                        d[k] = (uint32_t)(1 + 2 * cm->spos[e * cm->slots + k] + (cm->sval[e * cm->slots + k] < 0)) * W; \
                dec[e] = d[0] | d[1] << 16;                                                                            \
            }                                                                                                          \
            for (int g0 = 0; g0 < G; g0 += GS) {                                                                       \
                int gn = G - g0 < GS ? G - g0 : GS;                                                                    \
                for (int gi = 0; gi < gn; gi++) {                                                                      \
                    T *L = buf + (size_t)gi * SE * W;                                                                  \
                    STORE(L, ZERO);                                                                                    \
                    for (int p = 0; p < n; p++) {                                                                      \
                        int j = (g0 + gi) * n + p;                                                                     \
                        VT v = j < cm->cols ? LOAD(xt + (size_t)j * ld + l0) : ZERO;                                   \
                        STORE(L + (1 + 2 * p) * W, v);                                                                 \
                        STORE(L + (2 + 2 * p) * W, NEG(v));                                                            \
                    }                                                                                                  \
                }                                                                                                      \
                if (cm->idx8) PAIR_ROWS(W, T, VT, ZERO, LOAD, STORE, ADD, cm->idx8)                                       \
                else PAIR_ROWS(W, T, VT, ZERO, LOAD, STORE, ADD, cm->idx16)                                            \
            }                                                                                                          \
            return;                                                                                                    \
        }                                                                                                              \
        int pair8 = cm->native && cm->N == 8 && cm->K == 2; /* canonical order: 0, then +-x_p, then pairs */            \
        for (int g0 = 0; g0 < G; g0 += GB) {                                                                           \
            int gn = G - g0 < GB ? G - g0 : GB;                                                                        \
            for (int gi = 0; gi < gn; gi++) {                                                                          \
                VT xx[2 * SSTC_MAX_N];                                                                                 \
                for (int p = 0; p < n; p++) {                                                                          \
                    int j = (g0 + gi) * n + p;                                                                         \
                    xx[2 * p] = j < cm->cols ? LOAD(xt + (size_t)j * ld + l0) : ZERO;                                  \
                    xx[2 * p + 1] = NEG(xx[2 * p]);                                                                    \
                }                                                                                                      \
                T *L = buf + (size_t)gi * E * W;                                                                      \
                if (pair8) { /* (8,2): every entry from two registers, no table reads */                               \
                    STORE(L, ZERO);                                                                                    \
                    _Pragma("GCC unroll 8") for (int p = 0; p < 8; p++) {                                              \
                        STORE(L + (1 + 2 * p) * W, xx[2 * p]);                                                        \
                        STORE(L + (2 + 2 * p) * W, xx[2 * p + 1]);                                                    \
                    }                                                                                                  \
                    T *Q = L + 17 * W;                                                                                \
                    _Pragma("GCC unroll 8") for (int p = 0; p < 7; p++)                                                \
                        _Pragma("GCC unroll 8") for (int q = p + 1; q < 8; q++) {                                      \
                            STORE(Q, ADD(xx[2 * p], xx[2 * q]));                                                       \
                            STORE(Q + W, ADD(xx[2 * p], xx[2 * q + 1]));                                              \
                            STORE(Q + 2 * W, ADD(xx[2 * p + 1], xx[2 * q]));                                              \
                            STORE(Q + 3 * W, ADD(xx[2 * p + 1], xx[2 * q + 1]));                                          \
                            Q += 4 * W;                                                                                   \
                        }                                                                                              \
                    continue;                                                                                          \
                }                                                                                                      \
                STORE(L, ZERO);                                                                                        \
                for (int e = 1; e < E; e++) STORE(L + e * W, ADD(LOAD(L + cm->parent[e] * W), xx[cm->last[e]]));    \
            }                                                                                                          \
            int o = r0;                                                                                                \
            for (; o + 4 <= r1; o += 4) {                                                                              \
                T *d = acc + (size_t)o * ld + l0;                                                                      \
                VT a0 = g0 ? LOAD(d) : ZERO, a1 = g0 ? LOAD(d + ld) : ZERO;                                            \
                VT a2 = g0 ? LOAD(d + 2 * ld) : ZERO, a3 = g0 ? LOAD(d + 3 * ld) : ZERO;                               \
                for (int gi = 0; gi < gn; gi++) {                                                                      \
                    const T *L = buf + (size_t)gi * E * W;                                                            \
                    size_t g = (size_t)(g0 + gi);                                                                      \
                    a0 = ADD(a0, LOAD(L + sstc_coded_index(cm, (size_t)o, g) * W));                                   \
                    a1 = ADD(a1, LOAD(L + sstc_coded_index(cm, (size_t)o + 1, g) * W));                               \
                    a2 = ADD(a2, LOAD(L + sstc_coded_index(cm, (size_t)o + 2, g) * W));                               \
                    a3 = ADD(a3, LOAD(L + sstc_coded_index(cm, (size_t)o + 3, g) * W));                               \
                }                                                                                                      \
                STORE(d, a0);                                                                                          \
                STORE(d + ld, a1);                                                                                     \
                STORE(d + 2 * ld, a2);                                                                                 \
                STORE(d + 3 * ld, a3);                                                                                 \
            }                                                                                                          \
            for (; o < r1; o++) {                                                                                      \
                T *d0 = acc + (size_t)o * ld + l0;                                                                     \
                VT a0 = g0 ? LOAD(d0) : ZERO;                                                                          \
                for (int gi = 0; gi < gn; gi++)                                                                        \
                    a0 = ADD(a0, LOAD(buf + ((size_t)gi * E + sstc_coded_index(cm, (size_t)o, (size_t)(g0 + gi))) * W)); \
                STORE(d0, a0);                                                                                         \
            }                                                                                                          \
        }                                                                                                              \
    }
#define LD_PS16(p) _mm512_loadu_ps(p)
#define ST_PS16(p, v) _mm512_storeu_ps((p), (v))
#define NEG_PS16(v) _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u)))
#define LD_SI16(p) _mm512_loadu_si512((const void *)(p))
#define ST_SI16(p, v) _mm512_storeu_si512((void *)(p), (v))
#define NEG_SI16(v) _mm512_sub_epi32(_mm512_setzero_si512(), (v))
LUT_TILE(lut8_tile_float_avx2, 8, AVX2, lut_block_groups, float, __m256, _mm256_setzero_ps(), LD_PS, ST_PS, _mm256_add_ps,
         NEG_PS)
LUT_TILE(lut8_tile_int32_t_avx2, 8, AVX2, lut_block_groups, int32_t, __m256i, _mm256_setzero_si256(), LD_SI, ST_SI,
         _mm256_add_epi32, NEG_SI)
LUT_TILE(lut16_tile_float_avx512, 16, AVX512, lut16_block_groups, float, __m512, _mm512_setzero_ps(), LD_PS16, ST_PS16,
         _mm512_add_ps, NEG_PS16)
LUT_TILE(lut16_tile_int32_t_avx512, 16, AVX512, lut16_block_groups, int32_t, __m512i, _mm512_setzero_si512(), LD_SI16,
         ST_SI16, _mm512_add_epi32, NEG_SI16)

/* Units of work are (lane tile, row chunk); each builds its own tables, so
 * threads never wait for each other. Rows are split only when there are
 * fewer tiles than threads. With AVX-512 a tile is 16 lanes (the last one 8
 * when ld is an odd multiple of 8). */
/* The tables' scratch: one block per thread, kept from call to call (a
 * fresh megabyte per call costs page faults that took a quarter of a small
 * network's time); at most LUT_BLOCK_BYTES and a little per thread. */
static _Thread_local void *lut_buf;
static _Thread_local size_t lut_cap;
static void *lut_scratch(size_t bytes) {
    if (bytes > lut_cap) {
        free(lut_buf);
        lut_cap = (bytes + 63) & ~(size_t)63;
        lut_buf = aligned_alloc(64, lut_cap);
        if (!lut_buf) lut_cap = 0;
    }
    return lut_buf;
}

#define GEMM_LUT(T, SUF)                                                                                               \
    int sstc_coded_gemm_lut_##SUF(const sstc_coded_matrix *cm, const T *xt, size_t ld, T *acc) {                       \
        int R = cm->rows, avx = sstc_infer_avx2(), wide = sstc_infer_avx512(), threads = omp_get_max_threads();       \
        long tiles = wide ? (long)((ld + 15) / 16) : (long)(ld / 8);                                                   \
        int chunks = tiles >= threads ? 1 : (int)((threads + tiles - 1) / tiles);                                      \
        if (chunks > (R + 15) / 16) chunks = (R + 15) / 16;                                                            \
        long units = tiles * chunks;                                                                                   \
        int par = (size_t)R * cm->groups * ld > PAR_MIN, failed = 0;                                                   \
        size_t bufn = (size_t)lut_block_groups(cm) * cm->entries * 8, b16 = (size_t)lut16_block_groups(cm) * cm->entries * 16; \
        if (wide && b16 > bufn) bufn = b16;                                                                            \
        _Pragma("omp parallel if (par) reduction(| : failed)") {                                                       \
            T *buf = lut_scratch(bufn * sizeof(T));                                                                    \
            if (!buf) failed = 1;                                                                                      \
            _Pragma("omp for schedule(static)") for (long u = 0; u < units; u++) {                                     \
                if (!buf) continue;                                                                                    \
                long t = u / chunks;                                                                                   \
                int c = (int)(u % chunks), r0 = (int)((long)R * c / chunks), r1 = (int)((long)R * (c + 1) / chunks);   \
                if (wide && (size_t)t * 16 + 16 <= ld) lut16_tile_##T##_avx512(cm, xt, ld, (size_t)t * 16, r0, r1, acc, buf); \
                else if (wide) lut8_tile_##T##_avx2(cm, xt, ld, (size_t)t * 16, r0, r1, acc, buf);                     \
                else if (avx) lut8_tile_##T##_avx2(cm, xt, ld, (size_t)t * 8, r0, r1, acc, buf);                       \
                else lut8_tile_##T(cm, xt, ld, (size_t)t * 8, r0, r1, acc, buf);                                       \
            }                                                                                                          \
        }                                                                                                              \
        return failed ? sstc_fail(SSTC_ENOMEM, "infer: out of memory for look-up tables") : SSTC_OK;                  \
    }
GEMM_LUT(float, f32)
GEMM_LUT(int32_t, i32)

/* The batched look-up tables cost E table vectors per group and lane tile,
 * then one add per row; the direct kernel costs about 4 operations per slot
 * and row. Tables win unless there are very few rows. */
static int prefer_direct(const sstc_coded_matrix *cm) {
    return (size_t)cm->entries >= (size_t)cm->rows * (size_t)(4 * cm->slots - 2);
}

int sstc_coded_gemm_f32(const sstc_coded_matrix *cm, const float *xt, size_t ld, float *acc) {
    if (!prefer_direct(cm) && !sstc_coded_gemm_lut_f32(cm, xt, ld, acc)) return SSTC_OK;
    sstc_coded_gemm_direct_f32(cm, xt, ld, acc);
    return SSTC_OK;
}
int sstc_coded_gemm_i32(const sstc_coded_matrix *cm, const int32_t *xt, size_t ld, int32_t *acc) {
    if (!prefer_direct(cm) && !sstc_coded_gemm_lut_i32(cm, xt, ld, acc)) return SSTC_OK;
    sstc_coded_gemm_direct_i32(cm, xt, ld, acc);
    return SSTC_OK;
}
