/* INI experiment configs. inih does the parsing; this file feeds it lines
 * (tracking real line numbers and marking every section header, since inih
 * does not report sections that have no keys, such as [relu]) and validates
 * every key against the tables below. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "sstc/config.h"
#include "sstc/io.h"

/* ---- key tables ------------------------------------------------------- */
/* The sections besides the layers; each layer kind declares its own keys in
 * its descriptor (src/nn/layers/). */

#define CF(f) offsetof(sstc_config, f)
#define PF(f) offsetof(sstc_compress_spec, f)
#define KINT(k, f, l, h) {.key = k, .type = SSTC_KEY_INT, .off = f, .lo = l, .hi = h}
#define KFLOAT(k, f, l, h) {.key = k, .type = SSTC_KEY_FLOAT, .off = f, .lo = l, .hi = h}
#define KBOOL(k, f) {.key = k, .type = SSTC_KEY_BOOL, .off = f, .lo = 0, .hi = 1}
#define KENUM(k, f, c) {.key = k, .type = SSTC_KEY_ENUM, .off = f, .choices = c}
#define KSTR(k, f, n) {.key = k, .type = SSTC_KEY_STR, .off = f, .size = n}

static const sstc_key_def experiment_keys[] = {
    KSTR("name", CF(name), sizeof(((sstc_config *)0)->name)),
    {.key = "seed", .type = SSTC_KEY_U64, .off = CF(seed), .lo = 0, .hi = 1.8e19},
    KINT("threads", CF(threads), 1, 256),
    KINT("ranks", CF(ranks), 1, 65536),
    {0}};

static const sstc_key_def data_keys[] = {
    KSTR("dataset", CF(dataset), sizeof(((sstc_config *)0)->dataset)),
    KENUM("normalize", CF(normalize), "none|dataset|given"),
    {.key = "mean", .type = SSTC_KEY_FLOATLIST, .off = CF(mean), .lo = -1e9, .hi = 4, .count_off = CF(norm_channels)},
    {.key = "std", .type = SSTC_KEY_FLOATLIST, .off = CF(std), .lo = 1e-12, .hi = 4, .count_off = CF(norm_std_channels)},
    KINT("augment_crop", CF(augment_crop), 0, 64),
    KBOOL("augment_flip", CF(augment_flip)),
    KINT("augment_cutout", CF(augment_cutout), 0, 64),
    KBOOL("test_flip", CF(test_flip)),
    KINT("validation", CF(validation), 0, 1e9),
    KINT("train_subset", CF(train_subset), 0, 1e9),
    {0}};

static const sstc_key_def train_keys[] = {
    KINT("epochs", CF(epochs), 0, 1e6),
    KINT("batch_size", CF(batch_size), 1, 1e6),
    KINT("eval_batch_size", CF(eval_batch_size), 1, 1e6),
    KFLOAT("label_smoothing", CF(label_smoothing), 0, 0.999),
    KENUM("optimizer", CF(optim.kind), "sgd|adam"),
    KFLOAT("lr", CF(optim.lr), 0, 100),
    KFLOAT("momentum", CF(optim.momentum), 0, 1),
    KFLOAT("beta1", CF(optim.beta1), 0, 0.999999),
    KFLOAT("beta2", CF(optim.beta2), 0, 0.99999999),
    KFLOAT("eps", CF(optim.eps), 1e-30, 1),
    KFLOAT("weight_decay", CF(optim.weight_decay), 0, 10),
    KBOOL("decoupled_weight_decay", CF(optim.decoupled_wd)),
    KENUM("schedule", CF(lr.kind), "constant|step|exp|cosine"),
    KINT("step_epochs", CF(lr.step_epochs), 1, 1e6),
    KFLOAT("gamma", CF(lr.gamma), 0, 10),
    KFLOAT("min_lr", CF(lr.min_lr), 0, 100),
    KENUM("init", CF(init), "he|xavier"),
    {0}};

static const sstc_key_def compress_keys[] = {
    KENUM("method", PF(method), "sst|ternary|nm"),
    KINT("N", PF(N), 1, 16),
    KINT("K", PF(K), 1, 16),
    /* the order gives the flags: row = 1, interleave = 2 */
    KENUM("normalize", PF(normalize), "none|row|interleave|row+interleave"),
    /* "direct" stands for no stages: one jump to K */
    {.key = "schedule", .type = SSTC_KEY_INTLIST, .off = PF(schedule), .lo = 1, .hi = SSTC_MAX_STAGES,
     .choices = "direct", .count_off = PF(nstages)},
    KINT("stage_epochs", PF(stage_epochs), 0, 1e6),
    KINT("retrain_epochs", PF(retrain_epochs), 0, 1e6),
    KFLOAT("retrain_lr", PF(retrain_lr), 0, 100),
    KENUM("retrain_schedule", PF(retrain_schedule), "constant|step|exp|cosine"),
    {.key = "layers", .type = SSTC_KEY_LAYERSEL, .off = PF(layers)},
    KBOOL("skip_first", PF(skip_first)),
    KBOOL("skip_last", PF(skip_last)),
    KENUM("delta", PF(row_delta), "layer|row"),
    KINT("refit_every", PF(refit_every), 0, 1e9),
    KINT("bn_batches", PF(bn_batches), 0, 1e6),
    KFLOAT("distill", PF(distill), 0, 1),
    KFLOAT("distill_temperature", PF(distill_temperature), 0.05, 100),
    {0}};

/* Every layer section takes a name besides its kind's keys. */
static const sstc_key_def layer_name_key = KSTR("name", offsetof(sstc_layer_spec, name), 32);

const char *sstc_method_name(sstc_method m) {
    switch (m) {
    case SSTC_METHOD_SST: return "sst";
    case SSTC_METHOD_TERNARY: return "ternary";
    case SSTC_METHOD_NM: return "nm";
    }
    return "?";
}

const char *sstc_compress_norm_name(sstc_compress_norm n) {
    static const char *const names[] = {"none", "row", "interleave", "row+interleave"};
    return (unsigned)n < 4 ? names[n] : "?";
}

void sstc_layer_select_str(const sstc_layer_select *sel, char *buf, size_t n) {
    if (!n) return;
    buf[0] = 0;
    switch (sel->mode) {
    case SSTC_SELECT_ALL: snprintf(buf, n, "all"); return;
    case SSTC_SELECT_FC: snprintf(buf, n, "fc"); return;
    case SSTC_SELECT_CONV: snprintf(buf, n, "conv"); return;
    case SSTC_SELECT_NAMES: break;
    }
    size_t off = 0;
    for (int i = 0; i < sel->nnames && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%s", i ? "," : "", sel->names[i]);
}

/* ---- parser state ----------------------------------------------------- */

#define MARK "__section__"

typedef struct {
    sstc_config *cfg;
    const char *path;
    const char *text;
    size_t pos;
    int line;              /* real line of the last line handed to inih */
    int pending_mark;      /* a section header was just handed over */
    int *linemap;          /* inih line number -> real line */
    int nmap, capmap;
    int error;             /* first error recorded */
    const char *where;     /* "file:line" or "--set ..." prefix source */
    int override_idx;      /* >= 0 while applying overrides */
    /* what the current section fills */
    const sstc_key_def *keys;
    void *target;
    sstc_layer_spec *layer;   /* the layer section's spec, or NULL */
    char section[32];
    int seen_experiment, seen_data, seen_train;
} parser;

static int perr(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(parser *p, const char *fmt, ...) {
    if (p->error) return 0;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->override_idx >= 0) sstc_fail(SSTC_ECONFIG, "%s: --set #%d: %s", p->path, p->override_idx + 1, msg);
    else sstc_fail(SSTC_ECONFIG, "%s:%d: %s", p->path, p->line, msg);
    p->error = 1;
    return 0;
}

static char *reader(char *str, int num, void *stream) {
    parser *p = stream;
    if (p->nmap == p->capmap) {
        p->capmap = p->capmap ? 2 * p->capmap : 64;
        p->linemap = realloc(p->linemap, (size_t)p->capmap * sizeof(int));
        if (!p->linemap) return NULL;
    }
    if (p->pending_mark) {
        p->pending_mark = 0;
        snprintf(str, (size_t)num, MARK "=1\n");
        p->linemap[p->nmap++] = p->line;
        return str;
    }
    if (!p->text[p->pos]) return NULL;
    const char *s = p->text + p->pos;
    const char *nl = strchr(s, '\n');
    size_t len = nl ? (size_t)(nl - s + 1) : strlen(s);
    p->pos += len;
    p->line++;
    p->linemap[p->nmap++] = p->line;
    /* strip leading blanks: inih would treat indented lines as continuations */
    while (len && (*s == ' ' || *s == '\t')) s++, len--;
    if (len >= (size_t)num - 1) {
        perr(p, "line longer than %d characters", num - 2);
        len = (size_t)num - 2;
    }
    memcpy(str, s, len);
    str[len] = 0;
    if (str[0] == '[') p->pending_mark = 1;
    return str;
}

/* "fc, conv, batchnorm, ..." from the registry. */
static const char *layer_section_list(char *buf, size_t n) {
    size_t off = 0;
    buf[0] = 0;
    for (int k = 0; k < SSTC_LAYER_KIND_COUNT && off < n; k++)
        off += (size_t)snprintf(buf + off, n - off, "%s%s", k ? ", " : "", sstc_layer_registry[k]->section);
    return buf;
}

static int begin_section(parser *p, const char *section) {
    sstc_config *c = p->cfg;
    snprintf(p->section, sizeof p->section, "%s", section);
    p->layer = NULL;
    if (!strcmp(section, "experiment") || !strcmp(section, "data") || !strcmp(section, "train")) {
        int *seen = !strcmp(section, "experiment") ? &p->seen_experiment
                    : !strcmp(section, "data")     ? &p->seen_data
                                                   : &p->seen_train;
        if (*seen) return perr(p, "section [%s] appears twice", section);
        *seen = 1;
        p->keys = !strcmp(section, "experiment") ? experiment_keys : !strcmp(section, "data") ? data_keys : train_keys;
        p->target = c;
        return 1;
    }
    if (!strcmp(section, "compress")) {
        if (c->compress.present) return perr(p, "section [compress] appears twice");
        c->compress.present = 1;
        c->compress.line = p->line;
        p->keys = compress_keys;
        p->target = &c->compress;
        return 1;
    }
    const sstc_layer_desc *d = sstc_layer_desc_find(section);
    if (d) {
        if (c->nlayers >= SSTC_MAX_LAYERS) return perr(p, "more than %d layers", SSTC_MAX_LAYERS);
        sstc_layer_spec *l = &c->layers[c->nlayers++];
        sstc_layer_spec_defaults(l, d->kind);
        l->line = p->line;
        p->keys = d->keys;
        p->target = l;
        p->layer = l;
        return 1;
    }
    char kinds[400];
    return perr(p, "unknown section [%s]; expected experiment, data, train, compress, or a layer: %s", section,
                layer_section_list(kinds, sizeof kinds));
}

static int set_key(parser *p, const sstc_key_def *k, void *base, const char *value) {
    char err[600];
    if (sstc_key_parse(k, base, p->section, value, err, sizeof err)) return perr(p, "%s", err);
    return 1;
}

static int apply_key(parser *p, const char *name, const char *value) {
    if (p->layer && !strcmp(name, layer_name_key.key)) return set_key(p, &layer_name_key, p->layer, value);
    for (int i = 0; p->keys && p->keys[i].key; i++)
        if (!strcmp(p->keys[i].key, name)) {
            if (p->layer) p->layer->given |= 1u << i;
            return set_key(p, &p->keys[i], p->target, value);
        }
    char known[400] = "";
    size_t off = 0;
    if (p->layer) off += (size_t)snprintf(known, sizeof known, "%s", layer_name_key.key);
    for (const sstc_key_def *k = p->keys; k && k->key && off < sizeof known; k++)
        off += (size_t)snprintf(known + off, sizeof known - off, "%s%s", off ? ", " : "", k->key);
    return perr(p, "[%s] unknown key '%s'; known keys: %s", p->section, name, known);
}

static int handler(void *user, const char *section, const char *name, const char *value) {
    parser *p = user;
    if (p->error) return 1;
    if (!strcmp(name, MARK)) return begin_section(p, section);
    if (!*section) return perr(p, "key '%s' outside any section", name);
    return apply_key(p, name, value);
}

static void config_defaults(sstc_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(c->name, sizeof c->name, "%.*s", (int)strcspn(base, "."), base);
    /* the default name is the file's: keep it a plain folder name */
    for (char *q = c->name; *q; q++)
        if (!(isalnum((unsigned char)*q) || *q == '_' || *q == '-' || *q == '+')) *q = '_';
    if (!c->name[0]) snprintf(c->name, sizeof c->name, "experiment");
    c->seed = 1;
    c->threads = 2;
    c->ranks = 1;
    c->normalize = SSTC_NORM_DATASET;
    c->epochs = 10;
    c->batch_size = 100;
    c->eval_batch_size = 1000;
    c->optim = sstc_optim_defaults(SSTC_OPT_ADAM);
    c->lr.kind = SSTC_LR_CONSTANT;
    c->lr.step_epochs = 10;
    c->lr.gamma = 0.1f;
    c->init = SSTC_INIT_HE;
    sstc_compress_spec *z = &c->compress;
    z->method = SSTC_METHOD_SST;
    z->N = 8;
    z->K = 2;
    z->normalize = SSTC_CNORM_ROW;
    z->stage_epochs = 2;
    z->retrain_epochs = 5;
    z->retrain_lr = 0; /* 0 = the training lr */
    z->retrain_schedule = SSTC_LR_COSINE;
    z->layers.mode = SSTC_SELECT_ALL;
    z->bn_batches = 100;
    z->distill = 0;
    z->distill_temperature = 4;
}

/* --set section.key=value, where section may be a layer's name. */
static int apply_override(parser *p, const char *ov) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", ov);
    char *eq = strchr(buf, '=');
    char *dot = strchr(buf, '.');
    if (!eq || !dot || dot > eq) return perr(p, "'%s': expected section.key=value", ov);
    *eq = 0;
    *dot = 0;
    const char *sec = buf, *key = dot + 1, *value = eq + 1;
    sstc_config *c = p->cfg;
    snprintf(p->section, sizeof p->section, "%.31s", sec);
    p->layer = NULL;
    if (!strcmp(sec, "experiment")) p->keys = experiment_keys, p->target = c;
    else if (!strcmp(sec, "data")) p->keys = data_keys, p->target = c;
    else if (!strcmp(sec, "train")) p->keys = train_keys, p->target = c;
    else if (!strcmp(sec, "compress")) p->keys = compress_keys, p->target = &c->compress, c->compress.present = 1;
    else {
        /* a layer by its (default or given) name */
        int counts[SSTC_LAYER_KIND_COUNT] = {0};
        sstc_layer_spec *found = NULL;
        for (int i = 0; i < c->nlayers && !found; i++) {
            sstc_layer_spec *l = &c->layers[i];
            char nm[48];
            counts[l->kind]++;
            if (l->name[0]) snprintf(nm, sizeof nm, "%s", l->name);
            else snprintf(nm, sizeof nm, "%s%d", sstc_layer_registry[l->kind]->prefix, counts[l->kind]);
            if (!strcmp(nm, sec)) found = l;
        }
        if (!found) return perr(p, "'%s': no section or layer named '%s'", ov, sec);
        p->keys = sstc_layer_registry[found->kind]->keys;
        p->target = found;
        p->layer = found;
    }
    return apply_key(p, key, value);
}

static int finish(parser *p) {
    sstc_config *c = p->cfg;
    /* the name becomes a folder under runs/: one plain path component */
    for (const char *q = c->name; *q; q++)
        if (!(isalnum((unsigned char)*q) || *q == '_' || *q == '-' || *q == '.' || *q == '+') || c->name[0] == '.') {
            sstc_fail(SSTC_ECONFIG, "%s: [experiment] name = '%s': expected letters, digits, '_', '-', '+' or '.' "
                      "(not first), as it names the run's folder", p->path, c->name);
            return SSTC_ECONFIG;
        }
    if (!c->name[0]) {
        sstc_fail(SSTC_ECONFIG, "%s: [experiment] name is empty", p->path);
        return SSTC_ECONFIG;
    }
    if (!c->dataset[0]) {
        sstc_fail(SSTC_ECONFIG, "%s: [data] dataset is missing; expected mnist, cifar10, fashion-mnist or a path", p->path);
        return SSTC_ECONFIG;
    }
    if (c->nlayers == 0) {
        sstc_fail(SSTC_ECONFIG, "%s: no layer sections; expected [fc], [conv], ... describing the network", p->path);
        return SSTC_ECONFIG;
    }
    for (int i = 0; i < c->nlayers; i++) {
        sstc_layer_spec *l = &c->layers[i];
        const sstc_layer_desc *d = sstc_layer_registry[l->kind];
        for (int k = 0; d->keys[k].key; k++)
            if (d->keys[k].required && !(l->given & (1u << k))) {
                sstc_fail(SSTC_ECONFIG, "%s:%d: [%s] needs %s = %s", p->path, l->line, d->section, d->keys[k].key,
                          d->keys[k].type == SSTC_KEY_INTLIST ? "I,J,..." : "N");
                return SSTC_ECONFIG;
            }
        char err[400];
        if (d->complete && d->complete(l, err, sizeof err)) {
            sstc_fail(SSTC_ECONFIG, "%s:%d: %s", p->path, l->line, err);
            return SSTC_ECONFIG;
        }
    }
    if (c->normalize == SSTC_NORM_GIVEN && (c->norm_channels == 0 || c->norm_std_channels == 0)) {
        sstc_fail(SSTC_ECONFIG, "%s: [data] normalize = given needs mean and std", p->path);
        return SSTC_ECONFIG;
    }
    if (c->norm_channels != c->norm_std_channels) {
        sstc_fail(SSTC_ECONFIG, "%s: [data] mean has %d values and std %d; expected one of each per channel", p->path,
                  c->norm_channels, c->norm_std_channels);
        return SSTC_ECONFIG;
    }
    if (c->lr.kind == SSTC_LR_COSINE && c->lr.total_epochs == 0) c->lr.total_epochs = c->epochs;
    c->lr.base_lr = c->optim.lr;
    sstc_compress_spec *z = &c->compress;
    if (z->present) {
        if (z->K > z->N) {
            sstc_fail(SSTC_ECONFIG, "%s:%d: [compress] K = %d > N = %d; expected 1 <= K <= N <= 16", p->path, z->line, z->K, z->N);
            return SSTC_ECONFIG;
        }
        for (int s = 0; s < z->nstages; s++) {
            if (z->schedule[s] > z->N || (s > 0 && z->schedule[s] >= z->schedule[s - 1])) {
                sstc_fail(SSTC_ECONFIG, "%s:%d: [compress] schedule must strictly decrease from at most N = %d down to K = %d",
                          p->path, z->line, z->N, z->K);
                return SSTC_ECONFIG;
            }
        }
        if (z->nstages && z->schedule[z->nstages - 1] != z->K) {
            sstc_fail(SSTC_ECONFIG, "%s:%d: [compress] schedule ends at %d, expected it to end at K = %d",
                      p->path, z->line, z->schedule[z->nstages - 1], z->K);
            return SSTC_ECONFIG;
        }
        if (z->method == SSTC_METHOD_TERNARY && z->nstages) {
            sstc_fail(SSTC_ECONFIG, "%s:%d: [compress] plain ternary has no group structure to prune gradually; remove schedule",
                      p->path, z->line);
            return SSTC_ECONFIG;
        }
    }
    return 0;
}

int sstc_config_parse(const char *text, const char *path, const char *const *overrides, int noverrides,
                      sstc_config *out) {
    if (!text || !out) return sstc_fail(SSTC_EINVAL, "config_parse: NULL argument");
    if (!path) path = "<config>";
    config_defaults(out, path);
    /* a UTF-8 byte-order mark (some editors write one) is not part of the text */
    if (!strncmp(text, "\xEF\xBB\xBF", 3)) text += 3;
    parser p = {.cfg = out, .path = path, .text = text, .override_idx = -1};
    int rc = ini_parse_stream(reader, &p, handler, &p);
    if (!p.error && rc > 0) {
        p.line = rc - 1 < p.nmap ? p.linemap[rc - 1] : p.line;
        perr(&p, "cannot parse this line; expected [section], key = value, or a comment (# or ;)");
    } else if (!p.error && rc < 0) {
        sstc_fail(SSTC_ENOMEM, "%s: out of memory while parsing", path);
        p.error = 1;
    }
    free(p.linemap);
    if (p.error) return SSTC_ECONFIG;
    for (int i = 0; i < noverrides; i++) {
        p.override_idx = i;
        apply_override(&p, overrides[i]);
        if (p.error) return SSTC_ECONFIG;
    }
    return finish(&p);
}

int sstc_read_config_file(const char *path, char **text_out) {
    uint8_t *buf;
    size_t n;
    *text_out = NULL;
    if (sstc_read_file(path, SSTC_MAX_CONFIG_BYTES, "config", &buf, &n)) return sstc_errcode();
    if (n == 0) {
        free(buf);
        return sstc_fail(SSTC_EIO, "%s: empty; expected an INI config", path);
    }
    if (memchr(buf, 0, n)) {
        free(buf);
        return sstc_fail(SSTC_EFORMAT, "%s: contains NUL bytes, expected a text INI file", path);
    }
    *text_out = (char *)buf;
    return 0;
}

int sstc_config_load(const char *path, const char *const *overrides, int noverrides, sstc_config *out) {
    char *text;
    if (sstc_read_config_file(path, &text)) return sstc_errcode();
    int rc = sstc_config_parse(text, path, overrides, noverrides, out);
    free(text);
    return rc;
}

sstc_model *sstc_config_build_model(const sstc_config *cfg, int c, int h, int w, int num_classes) {
    int shape[3] = {c, h, w};
    sstc_model *m = sstc_model_create(3, shape);
    if (!m) return NULL;
    for (int i = 0; i < cfg->nlayers; i++) {
        const sstc_layer_spec *l = &cfg->layers[i];
        if (sstc_model_add(m, l)) {
            sstc_fail_prefix(SSTC_ECONFIG, "%s:%d: ", cfg->path, l->line);
            sstc_model_free(m);
            return NULL;
        }
    }
    const sstc_layer *last = &m->layers[m->nlayers - 1];
    int outw = last->out_ndim == 1 ? last->out_shape[0] : -1;
    if (last->kind != SSTC_LAYER_LINEAR || outw != num_classes) {
        sstc_fail(SSTC_ECONFIG, "%s:%d: the last layer must be [fc] with outputs = %d (the dataset's classes); it is %s with %d outputs",
                  cfg->path, cfg->layers[cfg->nlayers - 1].line, num_classes, sstc_layer_kind_name(last->kind), outw);
        sstc_model_free(m);
        return NULL;
    }
    return m;
}
