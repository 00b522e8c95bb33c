/* sstc plot: the pictures of docs/tutorial.md, drawn by sstc itself as PNG.
 *   metrics  test and training error per epoch across the phases of runs
 *   weights  a layer's weight histogram: float, row-normalized, coded
 *   rows     a first FC layer's rows as images: float, pruned to K of N, coded
 *   codes    how often each code of the (N,K) table is used in a .sst file */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "plot.h"
#include "sstc/compress.h"
#include "sstc/error.h"
#include "sstc/io.h"
#include "sstc/sst.h"
#include "sstc/train.h"

static const char usage[] =
    "usage: sstc plot KIND ARGS... --out FILE.png\n"
    "\n"
    "Draws a chart as a PNG image (libgd). KIND is one of:\n"
    "\n"
    "  metrics RUN|CSV [RUN|CSV ...] [--ymax PERCENT]\n"
    "      test error (thick line) and training error (thin) per epoch, the phases of\n"
    "      the runs shaded (float, prune stages, quantized retraining). A folder\n"
    "      stands for its metrics.csv, preceded by float/metrics.csv when it has one\n"
    "      (the layout `sstc run` writes); several are drawn one after the other.\n"
    "      The y axis ends a little above the highest test error after the first\n"
    "      epoch unless --ymax says otherwise.\n"
    "  weights FLOAT_CHECKPOINT MODEL.sst --layer NAME\n"
    "      histograms of one coded layer's weights: as trained (float), after row\n"
    "      normalization (docs/method.md), and coded (delta*t, the values the .sst\n"
    "      file's ternary codes stand for).\n"
    "  rows FLOAT_CHECKPOINT MODEL.sst [--layer NAME] [--rows R]\n"
    "      the first R (default 8) rows of a first fully connected layer, each drawn\n"
    "      as an image of the input (28x28 for MNIST; red positive, blue negative):\n"
    "      float, pruned at once to the K largest of every group of N (the pruning\n"
    "      step alone, before any retraining), and coded. The layer defaults to the\n"
    "      first weight layer.\n"
    "  codes MODEL.sst [--layer I]\n"
    "      how often each code of the (N,K) table is used over the coded layers\n"
    "      (or the I-th coded layer, from 1), coloured by the code's number of\n"
    "      non-zero weights; the title gives the code entropy against its b bits.\n"
    "\n"
    "  sstc plot metrics runs/mnist_fc-sst-8-2 --out errors.png\n"
    "  sstc plot weights runs/mnist_fc-sst-8-2/float/checkpoint.sstc \\\n"
    "      runs/mnist_fc-sst-8-2/model.sst --layer fc2 --out hist.png\n"
    "\n"
    "The image is written atomically (an existing FILE.png is replaced only when\n"
    "the new one is complete). See docs/tutorial.md for each picture explained.\n";

typedef struct {
    const char *kind, *out, *layer;
    const char *pos[16];
    int npos;
    int rows;
    double ymax;
} plot_args;

static int parse_args(int argc, char **argv, plot_args *a) {
    memset(a, 0, sizeof *a);
    a->rows = 8;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--out") && i + 1 < argc) a->out = argv[++i];
        else if (!strcmp(s, "--layer") && i + 1 < argc) a->layer = argv[++i];
        else if (!strcmp(s, "--rows") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 64) {
                fprintf(stderr, "sstc plot: --rows '%s': expected a whole number from 1 to 64\n", argv[i]);
                return 2;
            }
            a->rows = (int)v;
        } else if (!strcmp(s, "--ymax") && i + 1 < argc) {
            char *end;
            a->ymax = strtod(argv[++i], &end);
            if (*end || !(a->ymax > 0 && a->ymax <= 100)) {
                fprintf(stderr, "sstc plot: --ymax '%s': expected a percentage above 0, at most 100\n", argv[i]);
                return 2;
            }
        } else if (s[0] == '-') {
            fprintf(stderr, "sstc plot: unknown or incomplete option '%s'\n\n%s", s, usage);
            return 2;
        } else if (!a->kind) a->kind = s;
        else if (a->npos < 16) a->pos[a->npos++] = s;
        else {
            fprintf(stderr, "sstc plot: too many arguments (at most 16 after KIND)\n");
            return 2;
        }
    }
    if (!a->kind || !a->out) {
        fprintf(stderr, "sstc plot: need KIND and --out FILE.png\n\n%s", usage);
        return 2;
    }
    return 0;
}

/* ---- metrics -------------------------------------------------------------- */

typedef struct {
    char phase[16];
    int K;
    double train_err, test_err;
} epoch_row;

typedef struct {
    epoch_row *r;
    int n, cap;
} epoch_rows;

static int find_col(char **cols, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(cols[i], name)) return i;
    return -1;
}

static int split_csv(char *line, char **cols, int cap) {
    int n = 0;
    for (char *p = line;;) {
        if (n < cap) cols[n] = p;
        n++;
        char *c = strchr(p, ',');
        if (!c) break;
        *c = 0;
        p = c + 1;
    }
    return n;
}

static int parse_num(const char *s, double *v) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return end != s && !*end && !errno;
}

/* Appends the rows of one metrics.csv (the run driver's layout). */
static int read_metrics(const char *path, epoch_rows *out) {
    uint8_t *buf;
    size_t len;
    int rc = sstc_read_file(path, (size_t)64 << 20, "metrics", &buf, &len);
    if (rc) return rc;
    char *save = NULL, *line = strtok_r((char *)buf, "\n", &save);
    char *cols[64];
    if (!line) {
        free(buf);
        return sstc_fail(SSTC_EFORMAT, "%s: empty file; expected a header line starting 'epoch,phase,'", path);
    }
    int ncol = split_csv(line, cols, 64);
    if (ncol > 64) ncol = 64;
    int c_phase = find_col(cols, ncol, "phase"), c_K = find_col(cols, ncol, "K"),
        c_tr = find_col(cols, ncol, "train_error"), c_te = find_col(cols, ncol, "test_error");
    if (c_phase < 0 || c_K < 0 || c_tr < 0 || c_te < 0) {
        free(buf);
        return sstc_fail(SSTC_EFORMAT, "%s:1: expected a header with the columns phase, K, train_error and test_error "
                                       "(the metrics.csv that sstc train, compress and run write)", path);
    }
    int lineno = 1;
    while ((line = strtok_r(NULL, "\n", &save))) {
        lineno++;
        if (!*line || *line == '\r') continue;
        int n = split_csv(line, cols, 64);
        double tr, te, K = 0;
        if (n != ncol || !parse_num(cols[c_tr], &tr) || !parse_num(cols[c_te], &te) ||
            (*cols[c_K] && !parse_num(cols[c_K], &K)) || !(tr >= 0 && tr <= 1 && te >= 0 && te <= 1)) {
            free(buf);
            return sstc_fail(SSTC_EFORMAT, "%s:%d: expected %d comma-separated fields with train_error and test_error "
                                           "between 0 and 1", path, lineno, ncol);
        }
        if (out->n == out->cap) {
            int cap = out->cap ? 2 * out->cap : 64;
            epoch_row *r = realloc(out->r, (size_t)cap * sizeof *r);
            if (!r) {
                free(buf);
                return sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
            }
            out->r = r, out->cap = cap;
        }
        epoch_row *e = &out->r[out->n++];
        snprintf(e->phase, sizeof e->phase, "%s", cols[c_phase]);
        e->K = (int)K;
        e->train_err = 100 * tr;
        e->test_err = 100 * te;
    }
    free(buf);
    return 0;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int plot_metrics(const plot_args *a) {
    if (a->npos < 1) {
        fprintf(stderr, "sstc plot metrics: need at least one run folder or metrics.csv\n");
        return 2;
    }
    epoch_rows rows = {0};
    int rc = 0;
    char path[4096];
    for (int i = 0; i < a->npos && !rc; i++) {
        if (is_dir(a->pos[i])) {
            snprintf(path, sizeof path, "%s/float/metrics.csv", a->pos[i]);
            struct stat st;
            if (stat(path, &st) == 0) rc = read_metrics(path, &rows);
            snprintf(path, sizeof path, "%s/metrics.csv", a->pos[i]);
            if (!rc) rc = read_metrics(path, &rows);
        } else {
            rc = read_metrics(a->pos[i], &rows);
        }
    }
    if (!rc && rows.n == 0) rc = sstc_fail(SSTC_EFORMAT, "no epochs in the metrics given (header lines only)");
    if (rc) {
        fprintf(stderr, "sstc plot: %s\n", sstc_errmsg());
        free(rows.r);
        return 1;
    }
    int n = rows.n;
    double *x = malloc((size_t)n * sizeof *x), *te = malloc((size_t)n * sizeof *te), *tr = malloc((size_t)n * sizeof *tr);
    gdImagePtr im = x && te && tr ? plot_new(900, 420) : NULL;
    if (!im) {
        fprintf(stderr, "sstc plot: out of memory\n");
        free(x), free(te), free(tr), free(rows.r);
        return 1;
    }
    double ymax = 0;
    for (int i = 0; i < n; i++) {
        x[i] = i + 1, te[i] = rows.r[i].test_err, tr[i] = rows.r[i].train_err;
        if ((i > 0 || n < 3) && te[i] > ymax) ymax = te[i];
    }
    ymax = a->ymax > 0 ? a->ymax : ymax * 1.25;
    plot_axes ax;
    plot_axes_init(&ax, im, 0, 0, 900, 420, 0.5, n + 0.5, 0, ymax, "error per epoch", "epoch (all phases, in order)",
                   "error %");
    /* shade runs of epochs with the same phase (and K), redrawing the grid on top is not needed */
    int bands = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && !strcmp(rows.r[j + 1].phase, rows.r[i].phase) && rows.r[j + 1].K == rows.r[i].K) j++;
        const char *ph = rows.r[i].phase;
        int col = !strcmp(ph, "float") ? plot_rgb(230, 238, 250)
                  : !strcmp(ph, "prune") ? plot_rgb(252, 238, 220)
                                         : plot_rgb(250, 225, 225);
        char label[48];
        if (!strcmp(ph, "float")) snprintf(label, sizeof label, "float");
        else if (!strcmp(ph, "prune")) snprintf(label, sizeof label, "prune K=%d", rows.r[i].K);
        else if (!strcmp(ph, "quant")) snprintf(label, sizeof label, "coded K=%d", rows.r[i].K);
        else snprintf(label, sizeof label, "%s", ph);
        plot_band(&ax, i + 0.5, j + 1.5, col, label);
        bands++;
        i = j + 1;
    }
    plot_line(&ax, x, te, n, plot_color(im, 0), 2, 0);
    plot_line(&ax, x, tr, n, plot_color(im, 1), 1, 0);
    const char *names[] = {"test error", "training error"};
    int colors[] = {plot_color(im, 0), plot_color(im, 1)};
    plot_legend(&ax, names, colors, 2, 1);
    rc = plot_save(im, a->out);
    gdImageDestroy(im);
    if (rc) fprintf(stderr, "sstc plot: %s\n", sstc_errmsg());
    else
        printf("wrote %s: %d epochs in %d phase segments, last test error %.2f %%\n", a->out, n, bands, te[n - 1]);
    free(x), free(te), free(tr), free(rows.r);
    return rc ? 1 : 0;
}

/* ---- the float network and the .sst file side by side --------------------------- */

typedef struct {
    sstc_session *s;
    sstc_sst_model *sst;
    int layer;            /* index in the session's model */
    int rec;              /* the matching FC/CONV record of the .sst file */
    int rows, cols;
    float *w;             /* the float weights (rows x cols), in the model */
} pair;

static void pair_close(pair *p) {
    sstc_session_close(p->s);
    sstc_sst_free(p->sst);
}

static int is_weight(const sstc_layer *l) { return l->kind == SSTC_LAYER_LINEAR || l->kind == SSTC_LAYER_CONV2D; }

/* Opens both files and finds the layer (by name; NULL: the first weight layer)
 * in each: the k-th weight layer of the network is the k-th FC/CONV record. */
static int pair_open(pair *p, const char *ckpt, const char *sst, const char *name) {
    memset(p, 0, sizeof *p);
    int rc = sstc_checkpoint_open(&p->s, ckpt, 0, NULL, NULL);
    if (!rc) rc = sstc_sst_read(sst, &p->sst);
    if (rc) return rc;
    sstc_model *m = sstc_session_model(p->s);
    int ordinal = -1, k = 0;
    p->layer = -1;
    for (int i = 0; i < m->nlayers; i++) {
        if (!is_weight(&m->layers[i])) continue;
        if (!name || !strcmp(m->layers[i].name, name)) {
            p->layer = i, ordinal = k;
            break;
        }
        k++;
    }
    if (p->layer < 0) {
        if (name)
            for (int i = 0; i < m->nlayers; i++)
                if (!strcmp(m->layers[i].name, name))
                    return sstc_fail(SSTC_EINVAL, "%s: layer '%s' is a %s layer; expected an fc or conv layer", ckpt, name,
                                     sstc_layer_kind_name(m->layers[i].kind));
        return sstc_fail(SSTC_EINVAL, "%s: the network has no weight layer named '%s'", ckpt, name ? name : "(any)");
    }
    sstc_layer *l = &m->layers[p->layer];
    p->rows = l->weight->shape[0];
    p->cols = (int)(l->weight->size / (size_t)p->rows);
    p->w = l->weight->data;
    p->rec = -1;
    for (int i = 0, kk = 0; i < p->sst->n_layers; i++) {
        int kind = p->sst->layers[i].kind;
        if (kind != SSTC_SST_FC && kind != SSTC_SST_CONV) continue;
        if (kk++ == ordinal) {
            p->rec = i;
            break;
        }
    }
    if (p->rec < 0)
        return sstc_fail(SSTC_EINVAL, "%s has fewer weight layers than %s; are they the same network?", sst, ckpt);
    const sstc_sst_layer *L = &p->sst->layers[p->rec];
    if (L->out != p->rows || sstc_sst_fan_in(L) != (size_t)p->cols)
        return sstc_fail(SSTC_ESHAPE, "layer '%s' is %dx%d in %s but record %d of %s is %dx%zu; are they the same network?",
                         l->name, p->rows, p->cols, ckpt, p->rec, sst, L->out, sstc_sst_fan_in(L));
    if (!L->coded)
        return sstc_fail(SSTC_EINVAL, "layer '%s' is not coded in %s (it was kept in float); pick a coded layer", l->name, sst);
    return 0;
}

/* The coded values delta*t of the pair's layer (rows x cols, in the file's input order). */
static float *coded_values(const pair *p) {
    const sstc_sst_layer *L = &p->sst->layers[p->rec];
    size_t n = (size_t)p->rows * p->cols;
    int8_t *t = malloc(n);
    float *q = malloc(n * sizeof *q);
    if (!t || !q || sstc_sst_layer_ternary(L, t)) {
        if (t && q) sstc_fail_prefix(sstc_errcode(), "decoding the codes: ");
        else sstc_fail(SSTC_ENOMEM, "out of memory");
        free(t), free(q);
        return NULL;
    }
    for (int r = 0; r < p->rows; r++) {
        float d = L->per_row_delta ? L->delta[r] : L->delta[0];
        for (int j = 0; j < p->cols; j++) q[(size_t)r * p->cols + j] = d * t[(size_t)r * p->cols + j];
    }
    free(t);
    return q;
}

/* ---- weights ----------------------------------------------------------------- */

static void histogram_panel(gdImagePtr im, int y, const float *v, int rows, int cols, const char *title, int color,
                            int spikes) {
    size_t n = (size_t)rows * cols;
    double lo = 0, hi = 0, ss = 0, rlo = INFINITY, rhi = 0;
    for (int r = 0; r < rows; r++) {
        double rs = 0;
        for (int j = 0; j < cols; j++) rs += (double)v[(size_t)r * cols + j] * v[(size_t)r * cols + j];
        rs = sqrt(rs / cols);
        if (rs < rlo) rlo = rs;
        if (rs > rhi) rhi = rs;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] < lo) lo = v[i];
        if (v[i] > hi) hi = v[i];
        ss += (double)v[i] * v[i];
    }
    /* a symmetric range covering 4 RMS (or every value for the coded panel) */
    double rms = sqrt(ss / (double)n), r = spikes ? fmax(-lo, hi) * 1.25 : fmin(fmax(-lo, hi), 4 * rms);
    if (!(r > 0)) r = 1;
    enum { BINS = 81 };
    double count[BINS] = {0}, peak = 0;
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++) {
        int b = (int)floor((v[i] + r) / (2 * r) * BINS);
        if (v[i] == 0) zeros++;
        if (b < 0) b = 0;
        if (b >= BINS) b = BINS - 1;
        count[b] += 100.0 / (double)n;
    }
    for (int b = 0; b < BINS; b++)
        if (count[b] > peak) peak = count[b];
    char t[160];
    snprintf(t, sizeof t, "%s  (RMS %.4g, rows' RMS %.4g to %.4g, %.1f %% zero)", title, rms, rlo, rhi,
             100.0 * (double)zeros / (double)n);
    plot_axes ax;
    plot_axes_init(&ax, im, 0, y, 900, 250, -r, r, 0, peak * 1.1, t, "weight value", "% of weights");
    if (spikes) {
        /* the coded values are a few exact values: one thin bar each */
        for (int b = 0; b < BINS; b++)
            if (count[b] > 0) {
                double c = -r + (b + 0.5) * 2 * r / BINS;
                plot_bar(&ax, c - r / 80, c + r / 80, count[b], color);
            }
    } else {
        for (int b = 0; b < BINS; b++) plot_bar(&ax, -r + b * 2 * r / BINS, -r + (b + 1) * 2 * r / BINS, count[b], color);
    }
}

static int plot_weights(const plot_args *a) {
    if (a->npos != 2 || !a->layer) {
        fprintf(stderr, "sstc plot weights: need FLOAT_CHECKPOINT MODEL.sst --layer NAME\n");
        return 2;
    }
    pair p;
    int rc = pair_open(&p, a->pos[0], a->pos[1], a->layer);
    size_t n = (size_t)p.rows * p.cols;
    float *fl = NULL, *q = NULL;
    gdImagePtr im = NULL;
    if (!rc && !(fl = malloc(n * sizeof *fl))) rc = sstc_fail(SSTC_ENOMEM, "out of memory");
    if (!rc) memcpy(fl, p.w, n * sizeof *fl);
    if (!rc && !(q = coded_values(&p))) rc = sstc_errcode();
    if (!rc) {
        /* row normalization exactly as compression does it, on this layer alone
         * (the order of the inputs does not matter to a histogram) */
        sstc_compress_spec *z = &sstc_session_config_mut(p.s)->compress;
        const sstc_sst_layer *L = &p.sst->layers[p.rec];
        memset(z, 0, sizeof *z);
        z->present = 1;
        z->method = SSTC_METHOD_SST;
        z->N = L->N, z->K = L->K;
        z->normalize = SSTC_CNORM_ROW;
        z->layers.mode = SSTC_SELECT_NAMES;
        z->layers.nnames = 1;
        snprintf(z->layers.names[0], sizeof z->layers.names[0], "%s", a->layer);
        sstc_compressor c;
        double diff;
        rc = sstc_compress_init(&c, p.s);
        if (!rc) rc = sstc_compress_normalize(&c, 0, &diff);
        sstc_compress_free(&c);
    }
    if (!rc && !(im = plot_new(900, 750))) rc = sstc_errcode();
    if (!rc) {
        const sstc_sst_layer *L = &p.sst->layers[p.rec];
        char t[3][128];
        snprintf(t[0], sizeof t[0], "%s: float, as trained", a->layer);
        snprintf(t[1], sizeof t[1], "%s: after row normalization", a->layer);
        snprintf(t[2], sizeof t[2], "%s: coded (%d,%d), delta*t", a->layer, L->N, L->K);
        histogram_panel(im, 0, fl, p.rows, p.cols, t[0], plot_color(im, 0), 0);
        histogram_panel(im, 250, p.w, p.rows, p.cols, t[1], plot_color(im, 4), 0);
        histogram_panel(im, 500, q, p.rows, p.cols, t[2], plot_color(im, 2), 1);
        rc = plot_save(im, a->out);
    }
    if (im) gdImageDestroy(im);
    if (rc) fprintf(stderr, "sstc plot: %s\n", sstc_errmsg());
    else printf("wrote %s: %s, %d x %d weights\n", a->out, a->layer, p.rows, p.cols);
    free(fl), free(q);
    pair_close(&p);
    return rc ? 1 : 0;
}

/* ---- rows -------------------------------------------------------------------- */

static void draw_weight_image(gdImagePtr im, int x, int y, const float *v, const uint32_t *pixel_of, int C, int H, int W,
                              int scale) {
    double m = 0;
    for (int j = 0; j < C * H * W; j++)
        if (fabs(v[j]) > m) m = fabs(v[j]);
    if (!(m > 0)) m = 1;
    for (int j = 0; j < C * H * W; j++) {
        int pix = pixel_of ? (int)pixel_of[j] : j; /* input j of the layer is this pixel */
        int c = pix / (H * W), yy = (pix / W) % H, xx = pix % W;
        int px = x + (c * W + xx) * scale + c * 2, py = y + yy * scale;
        gdImageFilledRectangle(im, px, py, px + scale - 1, py + scale - 1, plot_diverging(v[j] / m));
    }
    gdImageRectangle(im, x - 1, y - 1, x + (C * W) * scale + (C - 1) * 2, y + H * scale, plot_rgb(160, 160, 160));
}

static int plot_rows(const plot_args *a) {
    if (a->npos != 2) {
        fprintf(stderr, "sstc plot rows: need FLOAT_CHECKPOINT MODEL.sst\n");
        return 2;
    }
    pair p;
    int rc = pair_open(&p, a->pos[0], a->pos[1], a->layer);
    const sstc_sst_model *S = p.sst;
    int C = S ? S->in_c : 0, H = S ? S->in_h : 0, W = S ? S->in_w : 0;
    const uint32_t *perm = NULL;
    if (!rc) {
        const sstc_sst_layer *L = &S->layers[p.rec];
        int first = p.rec == 0 || (p.rec == 1 && S->layers[0].kind == SSTC_SST_PERMUTE) ||
                    (p.rec == 1 && S->layers[0].kind == SSTC_SST_FLATTEN);
        if (L->kind != SSTC_SST_FC || !first || (size_t)p.cols != (size_t)C * H * W)
            rc = sstc_fail(SSTC_EINVAL, "plot rows: layer '%s' is not a fully connected layer on the %dx%dx%d input "
                                        "(its rows would not be images); use the network's first layer",
                           sstc_session_model(p.s)->layers[p.layer].name, C, H, W);
        if (p.rec == 1 && S->layers[0].kind == SSTC_SST_PERMUTE) perm = S->layers[0].perm;
    }
    int R = !rc && a->rows > p.rows ? p.rows : a->rows, N = !rc ? S->layers[p.rec].N : 1, K = !rc ? S->layers[p.rec].K : 1;
    size_t F = (size_t)p.cols;
    float *q = NULL, *fp = NULL, *pruned = NULL;
    gdImagePtr im = NULL;
    if (!rc && !(q = coded_values(&p))) rc = sstc_errcode();
    if (!rc && (!(fp = malloc((size_t)R * F * sizeof *fp)) || !(pruned = malloc((size_t)R * F * sizeof *pruned))))
        rc = sstc_fail(SSTC_ENOMEM, "out of memory");
    if (!rc) {
        /* the float rows in the file's input order (the groups of N are formed in it) */
        for (int r = 0; r < R; r++)
            for (size_t j = 0; j < F; j++) fp[r * F + j] = p.w[r * F + (perm ? perm[j] : j)];
        rc = sstc_nm_sparsify(fp, R, (int)F, N, K, pruned);
    }
    int scale = !rc && C * W <= 32 ? 4 : 2, cell_w = C * W * scale + (C - 1) * 2 + 12, cell_h = H * scale + 12;
    int width = 110 + R * cell_w, height = 40 + 3 * cell_h + 30;
    if (!rc && !(im = plot_new(width, height))) rc = sstc_errcode();
    if (!rc) {
        int black = plot_rgb(0, 0, 0);
        char title[160];
        snprintf(title, sizeof title, "%s: rows 1-%d as %dx%d images (red +, blue -, each scaled to its largest |w|)",
                 sstc_session_model(p.s)->layers[p.layer].name, R, H, W);
        plot_text(im, 10, 8, title, 1, black);
        char lab[3][48];
        snprintf(lab[0], sizeof lab[0], "float");
        snprintf(lab[1], sizeof lab[1], "pruned %d of %d", K, N);
        snprintf(lab[2], sizeof lab[2], "coded (%d,%d)", N, K);
        const float *src[3] = {fp, pruned, q};
        for (int k = 0; k < 3; k++) {
            int y = 36 + k * cell_h;
            plot_text(im, 8, y + cell_h / 2 - 8, lab[k], 0, black);
            for (int r = 0; r < R; r++)
                draw_weight_image(im, 110 + r * cell_w, y, k == 2 ? q + (size_t)r * F : src[k] + (size_t)r * F, perm, C, H,
                                  W, scale);
        }
        plot_text(im, 10, height - 22,
                  "pruned: the K largest |w| of each group of N kept at once (before retraining); coded: delta*t from the .sst file",
                  0, plot_rgb(80, 80, 80));
        rc = plot_save(im, a->out);
    }
    if (im) gdImageDestroy(im);
    if (rc) fprintf(stderr, "sstc plot: %s\n", sstc_errmsg());
    else printf("wrote %s: %d rows of %s\n", a->out, R, sstc_session_model(p.s)->layers[p.layer].name);
    free(q), free(fp), free(pruned);
    pair_close(&p);
    return rc ? 1 : 0;
}

/* ---- codes ------------------------------------------------------------------- */

static int plot_codes(const plot_args *a) {
    if (a->npos != 1) {
        fprintf(stderr, "sstc plot codes: need MODEL.sst\n");
        return 2;
    }
    long want = 0;
    if (a->layer) {
        char *end;
        want = strtol(a->layer, &end, 10);
        if (*end || want < 1) {
            fprintf(stderr, "sstc plot codes: --layer '%s': expected the number (from 1) of a coded layer\n", a->layer);
            return 2;
        }
    }
    sstc_sst_model *S = NULL;
    int rc = sstc_sst_read(a->pos[0], &S);
    int N = 0, K = 0, ncoded = 0, used = 0;
    double *count = NULL, total = 0;
    uint32_t M = 0;
    for (int i = 0; !rc && i < S->n_layers; i++) {
        const sstc_sst_layer *L = &S->layers[i];
        if ((L->kind != SSTC_SST_FC && L->kind != SSTC_SST_CONV) || !L->coded) continue;
        ncoded++;
        if (want && ncoded != want) continue;
        if (!count) {
            N = L->N, K = L->K, M = sstc_code_count(N, K);
            if (!(count = calloc(M, sizeof *count))) rc = sstc_fail(SSTC_ENOMEM, "out of memory");
        } else if (L->N != N || L->K != K) {
            rc = sstc_fail(SSTC_EINVAL, "%s: coded layers use (%d,%d) and (%d,%d); pick one with --layer I",
                           a->pos[0], N, K, L->N, L->K);
        }
        size_t G = (size_t)L->out * sstc_groups_per_row(sstc_sst_fan_in(L), N);
        uint32_t *idx = rc ? NULL : malloc(G * sizeof *idx);
        if (!rc && !idx) rc = sstc_fail(SSTC_ENOMEM, "out of memory");
        if (!rc) rc = sstc_unpack_codes(L->codes, L->codes_bytes, G, sstc_code_bits(N, K), idx);
        for (size_t g = 0; !rc && g < G; g++) {
            if (idx[g] >= M) rc = sstc_fail(SSTC_EFORMAT, "%s: record %d holds code %u of a %u-code table", a->pos[0], i, idx[g], M);
            else count[idx[g]]++, total++;
        }
        free(idx);
        used++;
    }
    if (!rc && !used)
{
        if (want) rc = sstc_fail(SSTC_EINVAL, "%s: there is no coded layer number %ld (it has %d)", a->pos[0], want, ncoded);
        else rc = sstc_fail(SSTC_EINVAL, "%s: the network has no coded layer", a->pos[0]);
    }
    gdImagePtr im = NULL;
    if (!rc && !(im = plot_new(900, 420))) rc = sstc_errcode();
    if (!rc) {
        double H = 0, peak = 0, by_nnz[17] = {0};
        int nnz_of_max = 0;
        for (uint32_t c = 0; c < M; c++) {
            double pc = count[c] / total;
            if (pc > 0) H -= pc * log2(pc);
            if (100 * pc > peak) peak = 100 * pc;
        }
        char title[200];
        snprintf(title, sizeof title, "code usage, (%d,%d): %u codes of %d bits, entropy %.2f bits (%s)", N, K, M,
                 sstc_code_bits(N, K), H, want ? a->layer : "all coded layers");
        plot_axes ax;
        plot_axes_init(&ax, im, 0, 0, 900, 420, -0.5, M - 0.5, 0, peak * 1.15, title, "code index (the table's order)",
                       "% of groups");
        int8_t t[16];
        for (uint32_t c = 0; c < M; c++) {
            int nz = 0;
            sstc_code_unrank(N, K, c, t);
            for (int j = 0; j < N; j++) nz += t[j] != 0;
            by_nnz[nz] += 100 * count[c] / total;
            if (nz > nnz_of_max) nnz_of_max = nz;
            plot_bar(&ax, c - 0.45, c + 0.45, 100 * count[c] / total, plot_color(im, nz));
        }
        char names[17][48];
        const char *np[17];
        int cols[17];
        for (int z = 0; z <= nnz_of_max; z++) {
            snprintf(names[z], sizeof names[z], "%d non-zero: %.1f %%", z, by_nnz[z]);
            np[z] = names[z], cols[z] = plot_color(im, z);
        }
        plot_legend(&ax, np, cols, nnz_of_max + 1, 0);
        rc = plot_save(im, a->out);
        if (!rc) printf("wrote %s: %.0f groups, entropy %.2f of %d bits\n", a->out, total, H, sstc_code_bits(N, K));
    }
    if (im) gdImageDestroy(im);
    if (rc) fprintf(stderr, "sstc plot: %s\n", sstc_errmsg());
    free(count);
    sstc_sst_free(S);
    return rc ? 1 : 0;
}

int cmd_plot(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return 0;
    }
    plot_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    if (!strcmp(a.kind, "metrics")) return plot_metrics(&a);
    if (!strcmp(a.kind, "weights")) return plot_weights(&a);
    if (!strcmp(a.kind, "rows")) return plot_rows(&a);
    if (!strcmp(a.kind, "codes")) return plot_codes(&a);
    fprintf(stderr, "sstc plot: unknown kind '%s'; expected metrics, weights, rows or codes\n\n%s", a.kind, usage);
    return 2;
}
