/* C export of an engine: DIR/sstc_net.h holds the network as const arrays
 * (packed group indices, code tables, affines, float weights, input tables,
 * and where every activation lives in one static arena, from the engine's
 * liveness plan) and DIR/sstc_net.c is a fixed, table-driven runner: no
 * allocation, no library beyond <stdint.h> and <string.h>. The int8 variant
 * computes exactly what the engine's int8 mode computes (integer sums, the
 * same float affines and requantization factors, the same rounding), so both
 * give the same codes and logits. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "infer/internal.h"
#include "sstc/error.h"
#include "sstc/io.h"
#include "sstc/infer.h"

/* mkdir -p */
static int make_dirs(const char *dir) {
    char *p = strdup(dir);
    if (!p) return sstc_fail(SSTC_ENOMEM, "export: out of memory");
    int rc = SSTC_OK;
    for (char *s = p + 1;; s++) {
        char c = *s;
        if (c != '/' && c != 0) continue;
        *s = 0;
        if (mkdir(p, 0777) && errno != EEXIST) {
            rc = sstc_fail(SSTC_EIO, "%s: cannot create the folder: %s", p, strerror(errno));
            break;
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    if (rc) return rc;
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) return sstc_fail(SSTC_EIO, "%s: not a folder", dir);
    return SSTC_OK;
}

static void put_bytes(FILE *f, const char *type, const char *name, const uint8_t *b, size_t n) {
    fprintf(f, "static const %s %s[%zu] = {", type, name, n ? n : 1);
    for (size_t i = 0; i < n; i++) fprintf(f, "%s%u,", i % 24 ? "" : "\n    ", b[i]);
    if (!n) fprintf(f, "0");
    fprintf(f, "\n};\n");
}

/* Floats in C99 hexadecimal notation: exact. */
static void put_floats(FILE *f, const char *name, const float *v, size_t n) {
    fprintf(f, "static const float %s[%zu] = {", name, n ? n : 1);
    for (size_t i = 0; i < n; i++) fprintf(f, "%s%af,", i % 6 ? " " : "\n    ", (double)v[i]);
    if (!n) fprintf(f, "0");
    fprintf(f, "\n};\n");
}

static int all_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

/* The runner's name of every op kind, in sstc_infer_op_kind order. */
static const char *const kind_names[] = {"SSTC_NET_FC",      "SSTC_NET_CONV",    "SSTC_NET_BN",
                                         "SSTC_NET_RELU",    "SSTC_NET_MAXPOOL", "SSTC_NET_AVGPOOL",
                                         "SSTC_NET_PERMUTE", "SSTC_NET_SHORTCUT", "SSTC_NET_ROUTE",
                                         "SSTC_NET_GAP"};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == SSTC_OP_KIND_COUNT, "a runner name for every op kind");

/* The code table of a coded op: slots bytes per entry, 0 for an empty slot,
 * else 1 + 2*position + (sign < 0). */
static uint8_t *table_bytes(const sstc_coded_matrix *cm) {
    size_t n = (size_t)cm->entries * cm->slots;
    uint8_t *t = malloc(n);
    if (!t) return NULL;
    for (size_t i = 0; i < n; i++) t[i] = cm->sval[i] ? (uint8_t)(1 + 2 * cm->spos[i] + (cm->sval[i] < 0)) : 0;
    return t;
}

/* A coded fully connected layer runs through per-group tables when its code
 * table is small: for each group the sum of every code is built (one
 * addition each, from the code with its last non-zero removed), then every
 * output adds the sum its code names (docs/inference.md, section 4). */
#define LUT_MAX_ENTRIES 1024
static int uses_lut(const sstc_infer_op *op) {
    return op->kind == SSTC_OP_FC && op->coded && op->cm.entries <= LUT_MAX_ENTRIES;
}

/* parent[e]: the entry with e's last non-zero slot removed; last[e]: that
 * slot's byte (0 for the empty code). 0 or SSTC_EFORMAT. */
static int lut_tables(const uint8_t *t, int E, int S, uint16_t *parent, uint8_t *last) {
    for (int e = 0; e < E; e++) {
        int k = 0;
        while (k < S && t[e * S + k]) k++;
        parent[e] = 0;
        last[e] = k ? t[e * S + k - 1] : 0;
        if (!k) continue;
        int found = -1;
        for (int q = 0; q < e && found < 0; q++) {
            int ok = 1;
            for (int j = 0; j < S && ok; j++) ok = t[q * S + j] == (j < k - 1 ? t[e * S + j] : 0);
            if (ok) found = q;
        }
        if (found < 0) return sstc_fail(SSTC_EFORMAT, "export: code %d of the table has no parent code", e);
        parent[e] = (uint16_t)found;
    }
    return SSTC_OK;
}

static void table_name(const sstc_coded_matrix *cm, char *buf, size_t n) {
    if (cm->native) snprintf(buf, n, "sstc_net_table_%d_%d", cm->N, cm->K);
    else snprintf(buf, n, "sstc_net_table_t4");
}

/* The activation arena: the engine's liveness plan with the input in it,
 * the buffers one after the other. at[t + 1] receives the offset of tensor t
 * (n_ops + 1 entries); returns the number of buffers or SSTC_ENOMEM. */
static int plan_arena(const sstc_engine *e, size_t *at, size_t *arena) {
    int *buf = malloc(((size_t)e->n_ops + 1) * sizeof *buf);
    size_t *size = malloc(((size_t)e->n_ops + 1) * sizeof *size);
    int nb = buf && size ? sstc_infer_plan_buffers(e, 1, buf, size) : SSTC_ENOMEM;
    *arena = 0;
    for (int j = 0; j < nb; j++) { /* size[j] becomes buffer j's offset */
        size_t n = size[j];
        size[j] = *arena;
        *arena += n;
    }
    for (int t = 0; nb > 0 && t <= e->n_ops; t++) at[t] = size[buf[t]];
    free(buf), free(size);
    return nb < 0 ? sstc_fail(SSTC_ENOMEM, "export: out of memory") : nb;
}

static int write_header(const sstc_engine *e, FILE *f, const size_t *at, size_t arena, int nb,
                        sstc_export_c_info *info) {
    size_t isz = (size_t)e->in_c * e->in_h * e->in_w;
    int has_int8 = e->calibrated;
    fprintf(f,
            "/* sstc_net.h: a network coded with structured sparse ternary (N,K) codes,\n"
            " * written by `sstc export --c-header`. Input %dx%dx%d (CxHxW), %d classes.\n"
            " * Include it anywhere for the declarations; sstc_net.c defines\n"
            " * SSTC_NET_IMPLEMENTATION to get the data (const arrays) as well.\n"
            " * Build: cc -c sstc_net.c [-DSSTC_NET_INT8]. */\n"
            "#ifndef SSTC_NET_H\n#define SSTC_NET_H\n\n#include <stdint.h>\n\n",
            e->in_c, e->in_h, e->in_w, e->classes);
    fprintf(f,
            "#define SSTC_NET_IN_C %d\n#define SSTC_NET_IN_H %d\n#define SSTC_NET_IN_W %d\n"
            "#define SSTC_NET_CLASSES %d\n#define SSTC_NET_HAS_INT8 %d\n\n",
            e->in_c, e->in_h, e->in_w, e->classes, has_int8);
    fprintf(f, "/* Runs the network on one image of C*H*W 8-bit pixels (channel by channel,\n"
               " * rows top to bottom, as the dataset stores them), applying the network's\n"
               " * input normalization; writes SSTC_NET_CLASSES logits and returns the\n"
               " * predicted class (the first maximum). Uses static buffers: not reentrant. */\n"
               "int sstc_net_run(const uint8_t *pixels, float *logits);\n\n");
    fprintf(f, "#ifdef SSTC_NET_IMPLEMENTATION\n\n");
    fprintf(f, "#ifdef SSTC_NET_INT8\n#if !SSTC_NET_HAS_INT8\n"
               "#error \"exported without int8 calibration: run sstc export --c-header DIR --data NAME\"\n#endif\n"
               "typedef int8_t sstc_net_act;  /* 8-bit activations */\ntypedef int32_t sstc_net_acc; /* 32-bit sums */\n"
               "#else\ntypedef float sstc_net_act;\ntypedef float sstc_net_acc;\n#endif\n\n");
    fprintf(f, "enum {\n    SSTC_NET_FC, SSTC_NET_CONV, SSTC_NET_BN, SSTC_NET_RELU, SSTC_NET_MAXPOOL, SSTC_NET_AVGPOOL,\n"
               "    SSTC_NET_PERMUTE, SSTC_NET_SHORTCUT, SSTC_NET_ROUTE, SSTC_NET_GAP\n};\n\n"
               "typedef struct {\n"
               "    int32_t kind, relu, coded, last;  /* last: writes the logits */\n"
               "    int32_t in, in2, out;             /* arena offsets: the input, a shortcut's added\n"
               "                                         input, the output */\n"
               "    int32_t c, h, w, oc, oh, ow;      /* input and output shapes */\n"
               "    int32_t kh, kw, stride, pad;      /* convolutions and pools */\n"
               "    int32_t n, groups, bits, slots;   /* coded: inputs per group, groups per row,\n"
               "                                         bits per index, non-zeros per entry */\n"
               "    const uint8_t *codes;             /* coded: packed group indices, LSB first; row by\n"
               "                                         row, or group by group when entries > 0 */\n"
               "    const uint8_t *table;             /* coded: per entry `slots` bytes, 0 = none,\n"
               "                                         else 1 + 2*position + (sign < 0) */\n"
               "    const float *weight;              /* float layers: oc x fan_in */\n"
               "    const float *a, *b;               /* per output: v = a*sum + b */\n"
               "    int32_t nsrc;                     /* route: sources */\n"
               "    const int32_t *src;               /* route: arena offset and size of each source */\n"
               "    const float *k;                   /* shortcut, route (int8): code factor per input,\n"
               "                                         its scale over the output's */\n"
               "    int32_t entries;                  /* coded fc through group tables: codes in the table */\n"
               "    const uint16_t *parent;           /* ... each code's code with its last non-zero removed */\n"
               "    const uint8_t *lastnz;            /* ... that non-zero (1 + 2*position + (sign < 0)) */\n"
               "} sstc_net_op;\n\n");
    fprintf(f,
            "#define SSTC_NET_OPS %d\n"
            "#define SSTC_NET_ARENA %zu   /* activation values: %d buffers of a liveness plan */\n"
            "#define SSTC_NET_IN_AT %zu   /* where the input is */\n"
            "#define SSTC_NET_OUT_AT %zu  /* where the output is */\n",
            e->n_ops, arena, nb, at[0], at[sstc_infer_final_tensor(e) + 1]);
    fprintf(f, "#define SSTC_NET_LAST_LOGITS %d /* the last op writes the logits */\n",
            e->n_ops ? e->ops[e->n_ops - 1].writes_logits : 0);
    fprintf(f, "#ifdef SSTC_NET_INT8\n#define SSTC_NET_OUT_SCALE %af\n#else\n#define SSTC_NET_OUT_SCALE 1.0f\n#endif\n\n",
            (double)(has_int8 ? e->out_scale : 1.0f));
    if (info) {
        info->buffer_bytes[0] = arena * sizeof(float);
        info->buffer_bytes[1] = arena;
        info->buffers = nb;
        info->int8 = has_int8;
    }

    /* input tables: pixel -> activation, channels 4 and up share table 4 */
    int nt = e->in_c < 5 ? e->in_c : 5;
    fprintf(f, "#ifdef SSTC_NET_INT8\nstatic const int8_t sstc_net_in[%d][256] = {\n", nt);
    for (int t = 0; t < nt; t++) {
        fprintf(f, "    {");
        for (int p = 0; p < 256; p++) fprintf(f, "%s%d,", p % 24 ? "" : "\n     ", has_int8 ? e->in_q[t][p] : 0);
        fprintf(f, "},\n");
    }
    fprintf(f, "};\n#else\nstatic const float sstc_net_in[%d][256] = {\n", nt);
    for (int t = 0; t < nt; t++) {
        fprintf(f, "    {");
        for (int p = 0; p < 256; p++) fprintf(f, "%s%af,", p % 6 ? " " : "\n     ", (double)e->in_lut[t][p]);
        fprintf(f, "},\n");
    }
    fprintf(f, "};\n#endif\n\n");
    size_t params_f = (size_t)nt * 256 * sizeof(float), params_q = (size_t)nt * 256, codes = 0;
    /* input permutation (fan-in interleaving of a first FC layer): in[i] = x[perm[i]] */
    fprintf(f, "#define SSTC_NET_HAS_PERM %d\n", e->in_perm ? 1 : 0);
    if (e->in_perm) {
        int wide = isz > 65536;
        fprintf(f, "static const %s sstc_net_perm[%zu] = {", wide ? "uint32_t" : "uint16_t", isz);
        for (size_t i = 0; i < isz; i++) fprintf(f, "%s%u,", i % 16 ? "" : "\n    ", (unsigned)e->in_perm[i]);
        fprintf(f, "\n};\n#define SSTC_NET_PERM(i) ((int32_t)sstc_net_perm[i])\n\n");
        params_f += isz * (wide ? 4 : 2);
        params_q += isz * (wide ? 4 : 2);
    } else {
        fprintf(f, "#define SSTC_NET_PERM(i) (i)\n\n");
    }

    /* scratch of the group-table path: one table, one sum per output */
    int lut_e = 1, lut_oc = 1;
    for (int k = 0; k < e->n_ops; k++)
        if (uses_lut(&e->ops[k])) {
            if (e->ops[k].cm.entries > lut_e) lut_e = e->ops[k].cm.entries;
            if (e->ops[k].oc > lut_oc) lut_oc = e->ops[k].oc;
        }
    fprintf(f, "#define SSTC_NET_LUT_E %d   /* scratch: the largest group table */\n"
               "#define SSTC_NET_LUT_OC %d  /* scratch: sums of the widest table-run layer */\n\n", lut_e, lut_oc);
    if (info) info->scratch_bytes = (size_t)(lut_e + lut_oc) * 4;

    /* code tables, once per kind */
    char names[64][48];
    int ntables = 0;
    for (int k = 0; k < e->n_ops; k++) {
        const sstc_infer_op *op = &e->ops[k];
        if (!op->coded) continue;
        char nm[48];
        table_name(&op->cm, nm, sizeof nm);
        int seen = 0;
        for (int i = 0; i < ntables; i++) seen |= !strcmp(names[i], nm);
        if (seen) continue;
        if (ntables < 64) snprintf(names[ntables++], sizeof names[0], "%s", nm);
        uint8_t *t = table_bytes(&op->cm);
        if (!t) return sstc_fail(SSTC_ENOMEM, "export: out of memory");
        fprintf(f, "/* %s code table: %d entries x %d slots */\n",
                op->cm.native ? "(N,K)" : "ternary groups of 4", op->cm.entries, op->cm.slots);
        put_bytes(f, "uint8_t", nm, t, (size_t)op->cm.entries * op->cm.slots);
        codes += (size_t)op->cm.entries * op->cm.slots;
        if (op->cm.entries <= LUT_MAX_ENTRIES) {
            uint16_t parent[LUT_MAX_ENTRIES];
            uint8_t last[LUT_MAX_ENTRIES];
            int rc = lut_tables(t, op->cm.entries, op->cm.slots, parent, last);
            if (rc) {
                free(t);
                return rc;
            }
            fprintf(f, "static const uint16_t %s_parent[%d] = {", nm, op->cm.entries);
            for (int i = 0; i < op->cm.entries; i++) fprintf(f, "%s%u,", i % 16 ? "" : "\n    ", parent[i]);
            fprintf(f, "\n};\n");
            char ln[64];
            snprintf(ln, sizeof ln, "%s_last", nm);
            put_bytes(f, "uint8_t", ln, last, (size_t)op->cm.entries);
            codes += (size_t)op->cm.entries * 3;
        }
        free(t);
    }

    for (int k = 0; k < e->n_ops; k++) {
        const sstc_infer_op *op = &e->ops[k];
        char nm[64];
        size_t no = op->kind == SSTC_OP_BN ? (size_t)op->c : (size_t)op->oc;
        if (op->kind == SSTC_OP_FC || op->kind == SSTC_OP_CONV) {
            fprintf(f, "\n/* op %d: %s %s from layer %d */\n", k, op->kind == SSTC_OP_FC ? "fc" : "conv",
                    op->coded ? "coded" : "float", op->src_layer);
            if (op->coded) {
                const sstc_coded_matrix *cm = &op->cm;
                size_t count = (size_t)cm->rows * cm->groups;
                if (count * (size_t)cm->bits >= ((size_t)1 << 32))
                    return sstc_fail(SSTC_EINVAL, "export: op %d has too many code bits for 32-bit indexing", k);
                uint32_t *idx = malloc(count * sizeof *idx);
                size_t pb = sstc_packed_bytes(count, cm->bits);
                uint8_t *packed = malloc(pb ? pb : 1);
                if (!idx || !packed) {
                    free(idx), free(packed);
                    return sstc_fail(SSTC_ENOMEM, "export: out of memory");
                }
                /* row by row; group by group (all rows of group 0, then of group 1, ...) for a
                 * layer run through group tables, which reads them in that order */
                int gmajor = uses_lut(op);
                for (size_t r = 0; r < (size_t)cm->rows; r++)
                    for (size_t g = 0; g < (size_t)cm->groups; g++)
                        idx[gmajor ? g * cm->rows + r : r * cm->groups + g] = sstc_coded_index(cm, r, g);
                int rc = sstc_pack_codes(idx, count, cm->bits, packed);
                if (!rc) {
                    snprintf(nm, sizeof nm, "sstc_net_codes%d", k);
                    put_bytes(f, "uint8_t", nm, packed, pb);
                    codes += pb;
                }
                free(idx), free(packed);
                if (rc) return rc;
            } else {
                snprintf(nm, sizeof nm, "sstc_net_w%d", k);
                put_floats(f, nm, op->weight, (size_t)op->oc * op->fan_in);
                params_f += (size_t)op->oc * op->fan_in * sizeof(float);
                params_q += (size_t)op->oc * op->fan_in * sizeof(float);
            }
        } else if (op->kind == SSTC_OP_BN) {
            fprintf(f, "\n/* op %d: batch norm from layer %d */\n", k, op->src_layer);
        } else if (op->kind == SSTC_OP_SHORTCUT || op->kind == SSTC_OP_ROUTE) {
            /* int8: each input's code times its scale over the output's; unused in float */
            float kf[SSTC_SST_MAX_ROUTE];
            for (int s = 0; s < op->nsrc; s++) kf[s] = has_int8 ? op->qs[s] : 1.0f;
            if (!all_finite(kf, (size_t)op->nsrc))
                return sstc_fail(SSTC_ENUMERIC, "export: op %d has a non-finite requantization factor", k);
            fprintf(f, "\n/* op %d: %s from layer %d */\n", k, op->kind == SSTC_OP_ROUTE ? "route" : "shortcut",
                    op->src_layer);
            snprintf(nm, sizeof nm, "sstc_net_k%d", k);
            put_floats(f, nm, kf, (size_t)op->nsrc);
            params_f += (size_t)op->nsrc * sizeof(float);
            params_q += (size_t)op->nsrc * sizeof(float);
            if (op->kind == SSTC_OP_ROUTE) {
                fprintf(f, "static const int32_t sstc_net_src%d[%d] = {", k, 2 * op->nsrc);
                for (int s = 0; s < op->nsrc; s++)
                    fprintf(f, "%s%zu, %zu", s ? ", " : "", at[op->src[s] + 1], op->src_size[s]);
                fprintf(f, "};\n");
                params_f += 8 * (size_t)op->nsrc;
                params_q += 8 * (size_t)op->nsrc;
            }
            continue;
        } else {
            continue;
        }
        if (!all_finite(op->a, no) || !all_finite(op->b, no) ||
            (has_int8 && (!all_finite(op->qa, no) || !all_finite(op->qb, no))))
            return sstc_fail(SSTC_ENUMERIC, "export: op %d has a non-finite affine", k);
        fprintf(f, "#ifdef SSTC_NET_INT8\n");
        snprintf(nm, sizeof nm, "sstc_net_a%d", k);
        put_floats(f, nm, has_int8 ? op->qa : op->a, no);
        snprintf(nm, sizeof nm, "sstc_net_b%d", k);
        put_floats(f, nm, has_int8 ? op->qb : op->b, no);
        fprintf(f, "#else\n");
        snprintf(nm, sizeof nm, "sstc_net_a%d", k);
        put_floats(f, nm, op->a, no);
        snprintf(nm, sizeof nm, "sstc_net_b%d", k);
        put_floats(f, nm, op->b, no);
        fprintf(f, "#endif\n");
        params_f += 2 * no * sizeof(float);
        params_q += 2 * no * sizeof(float);
    }

    fprintf(f, "\nstatic const sstc_net_op sstc_net_ops[%d] = {\n", e->n_ops ? e->n_ops : 1);
    for (int k = 0; k < e->n_ops; k++) {
        const sstc_infer_op *op = &e->ops[k];
        int weighted = op->kind == SSTC_OP_FC || op->kind == SSTC_OP_CONV;
        char tname[48] = "0", codes_name[32] = "0", w[32] = "0", a[32] = "0", b[32] = "0", src[32] = "0",
             kf[32] = "0";
        if (weighted && op->coded) {
            table_name(&op->cm, tname, sizeof tname);
            snprintf(codes_name, sizeof codes_name, "sstc_net_codes%d", k);
        }
        if (weighted && !op->coded) snprintf(w, sizeof w, "sstc_net_w%d", k);
        if (weighted || op->kind == SSTC_OP_BN) {
            snprintf(a, sizeof a, "sstc_net_a%d", k);
            snprintf(b, sizeof b, "sstc_net_b%d", k);
        }
        if (op->kind == SSTC_OP_SHORTCUT || op->kind == SSTC_OP_ROUTE) snprintf(kf, sizeof kf, "sstc_net_k%d", k);
        if (op->kind == SSTC_OP_ROUTE) snprintf(src, sizeof src, "sstc_net_src%d", k);
        size_t in2 = op->kind == SSTC_OP_SHORTCUT ? at[op->src[1] + 1] : 0;
        char lparent[64] = "0", llast[64] = "0";
        if (uses_lut(op)) {
            snprintf(lparent, sizeof lparent, "%s_parent", tname);
            snprintf(llast, sizeof llast, "%s_last", tname);
        }
        fprintf(f,
                "    {%s, %d, %d, %d, %zu, %zu, %zu, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d,\n"
                "     %s, %s, %s, %s, %s, %d, %s, %s, %d, %s, %s},\n",
                kind_names[op->kind], op->relu, weighted && op->coded, op->writes_logits, at[op->src[0] + 1], in2,
                at[k + 1], op->c, op->h, op->w, op->oc, op->oh, op->ow, op->kh, op->kw, op->stride, op->pad,
                op->coded ? op->cm.n : 0, op->coded ? op->cm.groups : 0, op->coded ? op->cm.bits : 0,
                op->coded ? op->cm.slots : 0, codes_name, tname, w, a, b, op->kind == SSTC_OP_ROUTE ? op->nsrc : 0, src,
                kf, uses_lut(op) ? op->cm.entries : 0, lparent, llast);
    }
    if (!e->n_ops) fprintf(f, "    {0}\n");
    fprintf(f, "};\n\n#endif /* SSTC_NET_IMPLEMENTATION */\n#endif /* SSTC_NET_H */\n");
    if (info) {
        info->code_bytes = codes;
        info->param_bytes = has_int8 ? params_q : params_f;
    }
    return SSTC_OK;
}

/* The runner: the same for every network. */
static const char runner[] =
    "/* sstc_net.c: runs the network of sstc_net.h, written by `sstc export\n"
    " * --c-header`. No allocation, no library beyond <stdint.h> and <string.h>;\n"
    " * activations live in one static arena whose layout (which output goes\n"
    " * where, and for how long) was planned at export time.\n"
    " * -DSSTC_NET_INT8: 8-bit activations and 32-bit sums, else float.\n"
    " *\n"
    " * A coded layer never multiplies by a weight: each group of n inputs has\n"
    " * one index into the code table, whose entry lists the non-zero positions\n"
    " * and signs; the inputs there are added or subtracted, and one affine per\n"
    " * output (a*sum + b) applies the step size, the batch norm and, in int8\n"
    " * mode, the requantization. */\n"
    "#include <string.h>\n"
    "\n"
    "#define SSTC_NET_IMPLEMENTATION\n"
    "#include \"sstc_net.h\"\n"
    "\n"
    "static sstc_net_act sstc_net_arena[SSTC_NET_ARENA];\n"
    "\n"
    "/* Index i of a packed little-endian stream of `bits`-bit indices. */\n"
    "static uint32_t sstc_net_index(const uint8_t *codes, uint32_t i, int32_t bits) {\n"
    "    uint32_t bit = i * (uint32_t)bits, byte = bit >> 3;\n"
    "    if (bits == 8) return codes[i]; /* (8,2): one byte per group */\n"
    "    int32_t have = 8 - (int32_t)(bit & 7u);\n"
    "    uint32_t v = (uint32_t)codes[byte] >> (bit & 7u);\n"
    "    while (have < bits) {\n"
    "        v |= (uint32_t)codes[++byte] << have;\n"
    "        have += 8;\n"
    "    }\n"
    "    return v & ((1u << bits) - 1u);\n"
    "}\n"
    "\n"
    "#ifdef SSTC_NET_INT8\n"
    "/* Round half away from zero, saturate to [lo, 127]. */\n"
    "static int8_t sstc_net_quantize(float v, int32_t lo) {\n"
    "    if (!(v >= (float)lo)) return (int8_t)lo;\n"
    "    if (v >= 127.0f) return 127;\n"
    "    return (int8_t)(v >= 0.0f ? (int32_t)(v + 0.5f) : -(int32_t)(0.5f - v));\n"
    "}\n"
    "#endif\n"
    "\n"
    "/* Output `at` of an op from a value before the fused ReLU: an activation\n"
    "   (requantized in int8), or a logit. */\n"
    "static void sstc_net_put(const sstc_net_op *op, float v, sstc_net_act *out, float *logits, uint32_t at) {\n"
    "#ifdef SSTC_NET_INT8\n"
    "    if (op->last)\n"
    "        logits[at] = op->relu && v < 0 ? 0.0f : v;\n"
    "    else\n"
    "        out[at] = sstc_net_quantize(v, op->relu ? 0 : -127);\n"
    "#else\n"
    "    if (op->relu && v < 0) v = 0.0f;\n"
    "    if (op->last)\n"
    "        logits[at] = v;\n"
    "    else\n"
    "        out[at] = v;\n"
    "#endif\n"
    "}\n"
    "\n"
    "/* Output `at` of an op from channel o's sum. */\n"
    "static void sstc_net_emit(const sstc_net_op *op, int32_t o, float sum, sstc_net_act *out, float *logits,\n"
    "                          uint32_t at) {\n"
    "    sstc_net_put(op, sum * op->a[o] + op->b[o], out, logits, at);\n"
    "}\n"
    "\n"
    "/* The input at fan_in position j of output (oy, ox), or 0 in the padding;\n"
    "   for a fully connected layer oh = ow = 1 and the kernel covers the input. */\n"
    "static int32_t sstc_net_at(const sstc_net_op *op, int32_t j, int32_t oy, int32_t ox) {\n"
    "    int32_t kk = op->kh * op->kw, c = j / kk, r = j - c * kk, ky = r / op->kw, kx = r - ky * op->kw;\n"
    "    int32_t iy = oy * op->stride - op->pad + ky, ix = ox * op->stride - op->pad + kx;\n"
    "    if (iy < 0 || iy >= op->h || ix < 0 || ix >= op->w) return -1;\n"
    "    return (c * op->h + iy) * op->w + ix;\n"
    "}\n"
    "\n"
    "static void sstc_net_weighted(const sstc_net_op *op, const sstc_net_act *in, sstc_net_act *out,\n"
    "                              float *logits) {\n"
    "    int32_t fc = op->kind == SSTC_NET_FC, fan_in = fc ? op->c * op->h * op->w : op->c * op->kh * op->kw;\n"
    "    int32_t o, oy, ox, g, s, j;\n"
    "    for (o = 0; o < op->oc; o++)\n"
    "        for (oy = 0; oy < op->oh; oy++)\n"
    "            for (ox = 0; ox < op->ow; ox++) {\n"
    "                uint32_t at = (uint32_t)((o * op->oh + oy) * op->ow + ox);\n"
    "                if (op->coded) {\n"
    "                    sstc_net_acc sum = 0;\n"
    "                    uint32_t base = (uint32_t)o * (uint32_t)op->groups;\n"
    "                    for (g = 0; g < op->groups; g++) {\n"
    "                        const uint8_t *t =\n"
    "                            op->table + sstc_net_index(op->codes, base + (uint32_t)g, op->bits) * (uint32_t)op->slots;\n"
    "                        for (s = 0; s < op->slots && t[s]; s++) {\n"
    "                            int32_t v = t[s] - 1, x;\n"
    "                            j = g * op->n + (v >> 1);\n"
    "                            x = fc ? j : sstc_net_at(op, j, oy, ox);\n"
    "                            if (x < 0) continue;\n"
    "                            if (v & 1)\n"
    "                                sum -= in[x];\n"
    "                            else\n"
    "                                sum += in[x];\n"
    "                        }\n"
    "                    }\n"
    "                    sstc_net_emit(op, o, (float)sum, out, logits, at);\n"
    "                } else {\n"
    "                    const float *w = op->weight + (uint32_t)o * (uint32_t)fan_in;\n"
    "                    float sum = 0.0f;\n"
    "                    for (j = 0; j < fan_in; j++) {\n"
    "                        int32_t x = fc ? j : sstc_net_at(op, j, oy, ox);\n"
    "                        if (x >= 0) sum += w[j] * (float)in[x];\n"
    "                    }\n"
    "                    sstc_net_emit(op, o, sum, out, logits, at);\n"
    "                }\n"
    "            }\n"
    "}\n"
    "\n"
    "static sstc_net_acc sstc_net_lut[SSTC_NET_LUT_E];\n"
    "static sstc_net_acc sstc_net_sums[SSTC_NET_LUT_OC];\n"
    "\n"
    "/* A coded fully connected layer through group tables: for each group of n\n"
    "   inputs the sum every code stands for, one addition each (the code's sum\n"
    "   is its parent's, the code without its last non-zero, plus or minus that\n"
    "   input), then every output adds the sum its code names. */\n"
    "static void sstc_net_fc_lut(const sstc_net_op *op, const sstc_net_act *in, sstc_net_act *out, float *logits) {\n"
    "    const int32_t E = op->entries, G = op->groups, n = op->n, bits = op->bits, oc = op->oc;\n"
    "    const int32_t fan_in = op->c * op->h * op->w;\n"
    "    const uint16_t *parent = op->parent;\n"
    "    const uint8_t *last = op->lastnz, *codes = op->codes;\n"
    "    sstc_net_acc x[16];\n"
    "    int32_t e, g, o, p;\n"
    "    for (o = 0; o < oc; o++) sstc_net_sums[o] = 0;\n"
    "    for (g = 0; g < G; g++) {\n"
    "        for (p = 0; p < n; p++) x[p] = g * n + p < fan_in ? (sstc_net_acc)in[g * n + p] : 0; /* padding: 0 */\n"
    "        sstc_net_lut[0] = 0;\n"
    "        for (e = 1; e < E; e++) {\n"
    "            int32_t v = last[e] - 1;\n"
    "            sstc_net_lut[e] = (v & 1) ? sstc_net_lut[parent[e]] - x[v >> 1] : sstc_net_lut[parent[e]] + x[v >> 1];\n"
    "        }\n"
    "        /* this layer's indices are stored group by group: oc of them per group */\n"
    "        if (bits == 8) {\n"
    "            const uint8_t *c = codes + (uint32_t)g * (uint32_t)oc;\n"
    "            for (o = 0; o < oc; o++) sstc_net_sums[o] += sstc_net_lut[c[o]];\n"
    "        } else {\n"
    "            for (o = 0; o < oc; o++)\n"
    "                sstc_net_sums[o] += sstc_net_lut[sstc_net_index(codes, (uint32_t)g * (uint32_t)oc + (uint32_t)o, bits)];\n"
    "        }\n"
    "    }\n"
    "    for (o = 0; o < oc; o++) sstc_net_emit(op, o, (float)sstc_net_sums[o], out, logits, (uint32_t)o);\n"
    "}\n"
    "\n"
    "static void sstc_net_pool(const sstc_net_op *op, const sstc_net_act *in, sstc_net_act *out) {\n"
    "    int32_t c, oy, ox, iy, ix, k = op->kh;\n"
    "    for (c = 0; c < op->c; c++)\n"
    "        for (oy = 0; oy < op->oh; oy++)\n"
    "            for (ox = 0; ox < op->ow; ox++) {\n"
    "                int32_t y0 = oy * op->stride - op->pad, x0 = ox * op->stride - op->pad;\n"
    "                int32_t ya = y0 < 0 ? 0 : y0, yb = y0 + k > op->h ? op->h : y0 + k;\n"
    "                int32_t xa = x0 < 0 ? 0 : x0, xb = x0 + k > op->w ? op->w : x0 + k;\n"
    "                const sstc_net_act *p = in + c * op->h * op->w;\n"
    "                sstc_net_act *q = out + (c * op->oh + oy) * op->ow + ox;\n"
    "                if (op->kind == SSTC_NET_MAXPOOL) {\n"
    "#ifdef SSTC_NET_INT8\n"
    "                    int32_t m = -128;\n"
    "#else\n"
    "                    float m = -3.40282346638528859812e+38f;\n"
    "#endif\n"
    "                    for (iy = ya; iy < yb; iy++)\n"
    "                        for (ix = xa; ix < xb; ix++)\n"
    "                            if (p[iy * op->w + ix] > m) m = p[iy * op->w + ix];\n"
    "                    *q = (sstc_net_act)m;\n"
    "                } else {\n"
    "                    sstc_net_acc sum = 0;\n"
    "                    for (iy = ya; iy < yb; iy++)\n"
    "                        for (ix = xa; ix < xb; ix++) sum += p[iy * op->w + ix];\n"
    "#ifdef SSTC_NET_INT8\n"
    "                    *q = (sstc_net_act)(sum >= 0 ? (sum + k * k / 2) / (k * k) : -((-sum + k * k / 2) / (k * k)));\n"
    "#else\n"
    "                    *q = sum / (float)(k * k);\n"
    "#endif\n"
    "                }\n"
    "            }\n"
    "}\n"
    "\n"
    "/* y = x + s, then the fused ReLU; int8: the codes times their factors. */\n"
    "static void sstc_net_shortcut(const sstc_net_op *op, const sstc_net_act *x, const sstc_net_act *s,\n"
    "                              sstc_net_act *out, float *logits) {\n"
    "    int32_t i, n = op->c * op->h * op->w;\n"
    "    for (i = 0; i < n; i++) {\n"
    "#ifdef SSTC_NET_INT8\n"
    "        sstc_net_put(op, (float)x[i] * op->k[0] + (float)s[i] * op->k[1], out, logits, (uint32_t)i);\n"
    "#else\n"
    "        sstc_net_put(op, x[i] + s[i], out, logits, (uint32_t)i);\n"
    "#endif\n"
    "    }\n"
    "}\n"
    "\n"
    "/* Channel concatenation: the sources one after the other; int8: a source\n"
    "   whose scale is not the output's is requantized. */\n"
    "static void sstc_net_route(const sstc_net_op *op, sstc_net_act *out) {\n"
    "    int32_t k, i;\n"
    "    for (k = 0; k < op->nsrc; k++) {\n"
    "        const sstc_net_act *x = sstc_net_arena + op->src[2 * k];\n"
    "        int32_t n = op->src[2 * k + 1];\n"
    "#ifdef SSTC_NET_INT8\n"
    "        if (op->k[k] != 1.0f) {\n"
    "            for (i = 0; i < n; i++) out[i] = sstc_net_quantize((float)x[i] * op->k[k], -127);\n"
    "            out += n;\n"
    "            continue;\n"
    "        }\n"
    "#endif\n"
    "        memcpy(out, x, (uint32_t)n * sizeof *out);\n"
    "        out += n;\n"
    "        (void)i;\n"
    "    }\n"
    "}\n"
    "\n"
    "/* The mean over each channel (int8: the codes' mean, rounded). */\n"
    "static void sstc_net_gap(const sstc_net_op *op, const sstc_net_act *in, sstc_net_act *out) {\n"
    "    int32_t c, i, hw = op->h * op->w;\n"
    "    for (c = 0; c < op->c; c++) {\n"
    "        const sstc_net_act *x = in + c * hw;\n"
    "#ifdef SSTC_NET_INT8\n"
    "        int64_t s = 0;\n"
    "        for (i = 0; i < hw; i++) s += x[i];\n"
    "        out[c] = (sstc_net_act)(s >= 0 ? (s + hw / 2) / hw : -((-s + hw / 2) / hw));\n"
    "#else\n"
    "        float s = 0.0f;\n"
    "        for (i = 0; i < hw; i++) s += x[i];\n"
    "        out[c] = s / (float)hw;\n"
    "#endif\n"
    "    }\n"
    "}\n"
    "\n"
    "int sstc_net_run(const uint8_t *pixels, float *logits) {\n"
    "    sstc_net_act *x = sstc_net_arena + SSTC_NET_IN_AT;\n"
    "    int32_t i, k, hw = SSTC_NET_IN_H * SSTC_NET_IN_W, best = 0;\n"
    "    for (i = 0; i < SSTC_NET_IN_C * hw; i++) {\n"
    "        int32_t c = i / hw;\n"
    "        x[i] = sstc_net_in[c < 4 ? c : 4][pixels[i]];\n"
    "    }\n"
    "    for (k = 0; k < SSTC_NET_OPS; k++) {\n"
    "        const sstc_net_op *op = &sstc_net_ops[k];\n"
    "        const sstc_net_act *in = sstc_net_arena + op->in;\n"
    "        sstc_net_act *out = sstc_net_arena + op->out;\n"
    "        int32_t n = op->c * op->h * op->w;\n"
    "        switch (op->kind) {\n"
    "        case SSTC_NET_FC:\n"
    "            if (op->entries) {\n"
    "                sstc_net_fc_lut(op, in, out, logits);\n"
    "                break;\n"
    "            }\n"
    "            sstc_net_weighted(op, in, out, logits);\n"
    "            break;\n"
    "        case SSTC_NET_CONV: sstc_net_weighted(op, in, out, logits); break;\n"
    "        case SSTC_NET_BN:\n"
    "            for (i = 0; i < n; i++) sstc_net_emit(op, i / (op->h * op->w), (float)in[i], out, logits, (uint32_t)i);\n"
    "            break;\n"
    "        case SSTC_NET_RELU:\n"
    "            for (i = 0; i < n; i++) out[i] = in[i] < 0 ? 0 : in[i];\n"
    "            break;\n"
    "        case SSTC_NET_PERMUTE:\n"
    "            for (i = 0; i < n; i++) out[i] = in[SSTC_NET_PERM(i)];\n"
    "            break;\n"
    "        case SSTC_NET_SHORTCUT: sstc_net_shortcut(op, in, sstc_net_arena + op->in2, out, logits); break;\n"
    "        case SSTC_NET_ROUTE: sstc_net_route(op, out); break;\n"
    "        case SSTC_NET_GAP: sstc_net_gap(op, in, out); break;\n"
    "        default: sstc_net_pool(op, in, out); break;\n"
    "        }\n"
    "    }\n"
    "    if (!SSTC_NET_LAST_LOGITS)\n"
    "        for (i = 0; i < SSTC_NET_CLASSES; i++) logits[i] = (float)sstc_net_arena[SSTC_NET_OUT_AT + i] * SSTC_NET_OUT_SCALE;\n"
    "    for (i = 1; i < SSTC_NET_CLASSES; i++)\n"
    "        if (logits[i] > logits[best]) best = i;\n"
    "    return best;\n"
    "}\n";

int sstc_engine_export_c(const sstc_engine *e, const char *dir, sstc_export_c_info *info) {
    if (!e || !dir || !*dir) return sstc_fail(SSTC_EINVAL, "sstc_engine_export_c: NULL argument");
    if (info) memset(info, 0, sizeof *info);
    int rc = make_dirs(dir);
    if (rc) return rc;
    size_t n = strlen(dir) + 16;
    char *hp = malloc(n), *cp = malloc(n);
    if (!hp || !cp) {
        free(hp), free(cp);
        return sstc_fail(SSTC_ENOMEM, "export: out of memory");
    }
    snprintf(hp, n, "%s/sstc_net.h", dir);
    snprintf(cp, n, "%s/sstc_net.c", dir);
    size_t *at = malloc(((size_t)e->n_ops + 1) * sizeof *at), arena = 0;
    int nb = at ? plan_arena(e, at, &arena) : sstc_fail(SSTC_ENOMEM, "export: out of memory");
    /* both files are composed in memory and written like every output
     * (temporary file, fsync, rename): a failed export leaves no truncated
     * file under a final name */
    char *text = NULL;
    size_t tlen = 0;
    FILE *f = NULL;
    if (nb < 0) rc = nb;
    else if (!(f = open_memstream(&text, &tlen))) rc = sstc_fail(SSTC_ENOMEM, "export: out of memory");
    if (!rc) {
        rc = write_header(e, f, at, arena, nb, info);
        if (ferror(f) && !rc) rc = sstc_fail(SSTC_ENOMEM, "%s: out of memory composing it", hp);
    }
    if (f && fclose(f) && !rc) rc = sstc_fail(SSTC_ENOMEM, "%s: out of memory composing it", hp);
    /* the runner first: a header without its runner would not build */
    if (!rc) rc = sstc_write_atomic(cp, runner, strlen(runner));
    if (!rc) rc = sstc_write_atomic(hp, text, tlen);
    free(text);
    free(hp);
    free(cp);
    free(at);
    return rc;
}
