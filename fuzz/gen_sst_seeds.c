/* Writes the seed corpus of fuzz_sst: small valid .sst files covering every
 * layer kind, per-layer and per-row deltas, padded groups, float layers,
 * several (N,K) and (version 2) skip connections. Build and run from the
 * repository root after `make`:
 *   cc -std=c11 -Iinclude fuzz/gen_sst_seeds.c build/libsstc.a -lz -lm -o build/gen_sst_seeds
 *   ./build/gen_sst_seeds fuzz/corpus/fuzz_sst */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/error.h"
#include "sstc/rng.h"
#include "sstc/sst.h"

static void fill(sstc_rng *r, sstc_sst_layer *L) {
    if (sstc_sst_layer_alloc(L)) {
        fprintf(stderr, "%s\n", sstc_errmsg());
        exit(1);
    }
    size_t out = (size_t)L->out, fan_in = sstc_sst_fan_in(L);
    if (L->kind == SSTC_SST_BATCHNORM)
        for (size_t i = 0; i < out; i++) L->scale[i] = 1 + 0.1f * sstc_rng_normal(r), L->bias[i] = sstc_rng_normal(r);
    if (L->kind != SSTC_SST_FC && L->kind != SSTC_SST_CONV) return;
    for (size_t i = 0; i < out; i++) L->bias[i] = 0.1f * sstc_rng_normal(r);
    if (!L->coded) {
        for (size_t i = 0; i < out * fan_in; i++) L->weight[i] = 0.1f * sstc_rng_normal(r);
        return;
    }
    float *W = malloc(out * fan_in * sizeof(float));
    int8_t *T = malloc(out * fan_in);
    for (size_t i = 0; i < out * fan_in; i++) W[i] = sstc_rng_normal(r);
    if (sstc_fit_delta(W, (int)out, (int)fan_in, L->N, L->K, L->per_row_delta, L->delta, NULL) ||
        sstc_project_matrix(W, (int)out, (int)fan_in, L->N, L->K, L->delta, L->per_row_delta, T) ||
        sstc_sst_layer_set_ternary(L, T)) {
        fprintf(stderr, "%s\n", sstc_errmsg());
        exit(1);
    }
    for (size_t i = 0; i < out; i++) L->scale[i] = L->delta[L->per_row_delta ? i : 0];
    free(W);
    free(T);
}

static void save(const char *dir, const char *name, sstc_sst_model *m, sstc_rng *r) {
    for (int i = 0; i < m->n_layers; i++) fill(r, &m->layers[i]);
    char path[512];
    snprintf(path, sizeof path, "%s/%s.sst", dir, name);
    if (sstc_sst_write(path, m)) {
        fprintf(stderr, "%s\n", sstc_errmsg());
        exit(1);
    }
    printf("%s: %zu bytes\n", path, sstc_sst_size(m));
    sstc_sst_free(m);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_sst_seeds DIR\n");
        return 2;
    }
    sstc_rng r;
    sstc_rng_seed(&r, 2017);
    const int nk[][3] = {{8, 2, 0}, {4, 1, 1}, {16, 4, 0}, {8, 3, 1}};
    const char *names[] = {"cnn_8_2", "cnn_4_1_rows", "cnn_16_4", "cnn_8_3_rows"};
    for (int c = 0; c < 4; c++) {
        int N = nk[c][0], K = nk[c][1], pr = nk[c][2];
        sstc_sst_model *m = sstc_sst_model_new(11);
        m->in_c = 3, m->in_h = 8, m->in_w = 8, m->num_classes = 10;
        const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, sd[3] = {0.2470f, 0.2435f, 0.2616f};
        memcpy(m->in_mean, mean, sizeof mean);
        memcpy(m->in_std, sd, sizeof sd);
        sstc_sst_layer *L = m->layers;
        L[0] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 4, .in = 3, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
                                .coded = 1, .N = N, .K = K, .per_row_delta = pr};
        L[1] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 4};
        L[2] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
        L[3] = (sstc_sst_layer){.kind = SSTC_SST_MAXPOOL, .kh = 2, .kw = 2, .stride = 2};
        L[4] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 5, .in = 4, .kh = 3, .kw = 3, .stride = 2, .pad = 1,
                                .coded = 1, .N = N, .K = K, .per_row_delta = !pr};
        L[5] = (sstc_sst_layer){.kind = SSTC_SST_AVGPOOL, .kh = 2, .kw = 2, .stride = 1, .pad = 1};
        L[6] = (sstc_sst_layer){.kind = SSTC_SST_FLATTEN};
        L[7] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 12, .in = 45, .coded = 1, .N = N, .K = K,
                                .per_row_delta = pr};
        L[8] = (sstc_sst_layer){.kind = SSTC_SST_DROPOUT, .p = 0.5f};
        L[9] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
        L[10] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 10, .in = 12};
        save(argv[1], names[c], m, &r);
    }
    /* an MLP with a float first layer and plain ternary (1,1) */
    sstc_sst_model *m = sstc_sst_model_new(5);
    m->in_c = 1, m->in_h = 5, m->in_w = 5, m->num_classes = 4;
    m->in_mean[0] = 0.1307f, m->in_std[0] = 0.3081f;
    sstc_sst_layer *L = m->layers;
    L[0] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 16, .in = 25};
    L[1] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 16};
    L[2] = (sstc_sst_layer){.kind = SSTC_SST_RELU};
    L[3] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 8, .in = 16, .coded = 1, .N = 1, .K = 1};
    L[4] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 4, .in = 8, .coded = 1, .N = 16, .K = 2,
                            .per_row_delta = 1};
    save(argv[1], "mlp_ternary", m, &r);
    /* the smallest file: one coded fc layer with a stray-bit-sized code stream */
    m = sstc_sst_model_new(1);
    m->in_c = 3, m->in_h = 1, m->in_w = 1, m->num_classes = 3;
    m->layers[0] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 3, .in = 3, .coded = 1, .N = 8, .K = 3};
    save(argv[1], "tiny_fc", m, &r);
    /* version 2: shortcuts (from the input, identity, projection), routes and a global average pool */
    m = sstc_sst_model_new(12);
    m->in_c = 2, m->in_h = 6, m->in_w = 6, m->num_classes = 3;
    L = m->layers;
    L[0] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 2, .in = 2, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
                            .coded = 1, .N = 8, .K = 2};
    L[1] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = SSTC_SST_INPUT, .activation = SSTC_SST_ACT_RELU};
    L[2] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 2, .in = 2, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
                            .coded = 1, .N = 4, .K = 1};
    L[3] = (sstc_sst_layer){.kind = SSTC_SST_BATCHNORM, .out = 2};
    L[4] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = 1, .activation = SSTC_SST_ACT_LINEAR};
    L[5] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 4, .in = 2, .kh = 3, .kw = 3, .stride = 2, .pad = 1,
                            .coded = 1, .N = 8, .K = 3, .per_row_delta = 1};
    L[6] = (sstc_sst_layer){.kind = SSTC_SST_ROUTE, .n_route = 1, .route = {4}};
    L[7] = (sstc_sst_layer){.kind = SSTC_SST_CONV, .out = 4, .in = 2, .kh = 1, .kw = 1, .stride = 2};
    L[8] = (sstc_sst_layer){.kind = SSTC_SST_SHORTCUT, .from = 5, .activation = SSTC_SST_ACT_RELU};
    L[9] = (sstc_sst_layer){.kind = SSTC_SST_ROUTE, .n_route = 2, .route = {8, 5}};
    L[10] = (sstc_sst_layer){.kind = SSTC_SST_GLOBALAVGPOOL};
    L[11] = (sstc_sst_layer){.kind = SSTC_SST_FC, .out = 3, .in = 8};
    save(argv[1], "graph_v2", m, &r);
    return 0;
}
