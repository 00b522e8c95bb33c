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

/* ---- key tables ------------------------------------------------------- */

typedef enum { K_INT, K_U64, K_FLOAT, K_BOOL, K_STR, K_ENUM, K_FLOATLIST, K_INTLIST, K_LAYERSEL } key_type;

typedef struct {
    const char *key;
    key_type type;
    size_t off;          /* offset into the struct the section fills */
    double lo, hi;       /* range for numbers; for lists: max count in hi */
    const char *choices; /* K_ENUM: "a|b|c" (value stored as its index) */
    size_t size;         /* K_STR: buffer size */
} key_def;

#define CF(f) offsetof(sstc_config, f)
#define LF(f) offsetof(sstc_layer_spec, f)
#define PF(f) offsetof(sstc_compress_spec, f)

static const key_def experiment_keys[] = {
    {"name", K_STR, CF(name), 0, 0, NULL, sizeof(((sstc_config *)0)->name)},
    {"seed", K_U64, CF(seed), 0, 1.8e19, NULL, 0},
    {"threads", K_INT, CF(threads), 1, 256, NULL, 0},
    {0}};

static const key_def data_keys[] = {
    {"dataset", K_STR, CF(dataset), 0, 0, NULL, sizeof(((sstc_config *)0)->dataset)},
    {"normalize", K_ENUM, CF(normalize), 0, 0, "none|dataset|given", 0},
    {"mean", K_FLOATLIST, CF(mean), -1e9, 4, NULL, 0},
    {"std", K_FLOATLIST, CF(std), 1e-12, 4, NULL, 0},
    {"augment_crop", K_INT, CF(augment_crop), 0, 64, NULL, 0},
    {"augment_flip", K_BOOL, CF(augment_flip), 0, 1, NULL, 0},
    {"augment_cutout", K_INT, CF(augment_cutout), 0, 64, NULL, 0},
    {"test_flip", K_BOOL, CF(test_flip), 0, 1, NULL, 0},
    {"validation", K_INT, CF(validation), 0, 1e9, NULL, 0},
    {0}};

static const key_def train_keys[] = {
    {"epochs", K_INT, CF(epochs), 0, 1e6, NULL, 0},
    {"batch_size", K_INT, CF(batch_size), 1, 1e6, NULL, 0},
    {"eval_batch_size", K_INT, CF(eval_batch_size), 1, 1e6, NULL, 0},
    {"label_smoothing", K_FLOAT, CF(label_smoothing), 0, 0.999, NULL, 0},
    {"optimizer", K_ENUM, CF(optim.kind), 0, 0, "sgd|adam", 0},
    {"lr", K_FLOAT, CF(optim.lr), 0, 100, NULL, 0},
    {"momentum", K_FLOAT, CF(optim.momentum), 0, 1, NULL, 0},
    {"beta1", K_FLOAT, CF(optim.beta1), 0, 0.999999, NULL, 0},
    {"beta2", K_FLOAT, CF(optim.beta2), 0, 0.99999999, NULL, 0},
    {"eps", K_FLOAT, CF(optim.eps), 1e-30, 1, NULL, 0},
    {"weight_decay", K_FLOAT, CF(optim.weight_decay), 0, 10, NULL, 0},
    {"decoupled_weight_decay", K_BOOL, CF(optim.decoupled_wd), 0, 1, NULL, 0},
    {"schedule", K_ENUM, CF(lr.kind), 0, 0, "constant|step|exp|cosine", 0},
    {"step_epochs", K_INT, CF(lr.step_epochs), 1, 1e6, NULL, 0},
    {"gamma", K_FLOAT, CF(lr.gamma), 0, 10, NULL, 0},
    {"min_lr", K_FLOAT, CF(lr.min_lr), 0, 100, NULL, 0},
    {"init", K_ENUM, CF(init), 0, 0, "he|xavier", 0},
    {0}};

static const key_def compress_keys[] = {
    {"method", K_ENUM, PF(method), 0, 0, "sst|ternary|nm", 0},
    {"N", K_INT, PF(N), 1, 16, NULL, 0},
    {"K", K_INT, PF(K), 1, 16, NULL, 0},
    /* the order gives the flags: row = 1, interleave = 2 */
    {"normalize", K_ENUM, PF(normalize), 0, 0, "none|row|interleave|row+interleave", 0},
    {"schedule", K_INTLIST, PF(schedule), 1, SSTC_MAX_STAGES, NULL, 0},
    {"stage_epochs", K_INT, PF(stage_epochs), 0, 1e6, NULL, 0},
    {"retrain_epochs", K_INT, PF(retrain_epochs), 0, 1e6, NULL, 0},
    {"retrain_lr", K_FLOAT, PF(retrain_lr), 0, 100, NULL, 0},
    {"retrain_schedule", K_ENUM, PF(retrain_schedule), 0, 0, "constant|step|exp|cosine", 0},
    {"layers", K_LAYERSEL, PF(layers), 0, 0, NULL, 0},
    {"skip_first", K_BOOL, PF(skip_first), 0, 1, NULL, 0},
    {"skip_last", K_BOOL, PF(skip_last), 0, 1, NULL, 0},
    {"refit_every", K_INT, PF(refit_every), 0, 1e9, NULL, 0},
    {"bn_batches", K_INT, PF(bn_batches), 0, 1e6, NULL, 0},
    {0}};

static const key_def fc_keys[] = {
    {"name", K_STR, LF(name), 0, 0, NULL, 32},
    {"outputs", K_INT, LF(outputs), 1, 1 << 24, NULL, 0},
    {"bias", K_BOOL, LF(bias), 0, 1, NULL, 0},
    {0}};
static const key_def conv_keys[] = {
    {"name", K_STR, LF(name), 0, 0, NULL, 32},
    {"filters", K_INT, LF(outputs), 1, 1 << 16, NULL, 0},
    {"size", K_INT, LF(size), 1, 64, NULL, 0},
    {"stride", K_INT, LF(stride), 1, 64, NULL, 0},
    {"pad", K_INT, LF(pad), 0, 64, NULL, 0},
    {"bias", K_BOOL, LF(bias), 0, 1, NULL, 0},
    {0}};
static const key_def bn_keys[] = {
    {"name", K_STR, LF(name), 0, 0, NULL, 32},
    {"eps", K_FLOAT, LF(eps), 1e-12, 1, NULL, 0},
    {"momentum", K_FLOAT, LF(momentum), 0, 1, NULL, 0},
    {0}};
static const key_def pool_keys[] = {
    {"name", K_STR, LF(name), 0, 0, NULL, 32},
    {"size", K_INT, LF(size), 1, 64, NULL, 0},
    {"stride", K_INT, LF(stride), 1, 64, NULL, 0},
    {"pad", K_INT, LF(pad), 0, 32, NULL, 0},
    {0}};
static const key_def dropout_keys[] = {
    {"name", K_STR, LF(name), 0, 0, NULL, 32},
    {"p", K_FLOAT, LF(p), 0, 0.999, NULL, 0},
    {0}};
static const key_def name_keys[] = {{"name", K_STR, LF(name), 0, 0, NULL, 32}, {0}};

static const struct {
    const char *section;
    sstc_layer_kind kind;
    const key_def *keys;
} layer_sections[] = {
    {"fc", SSTC_LAYER_LINEAR, fc_keys},          {"conv", SSTC_LAYER_CONV2D, conv_keys},
    {"batchnorm", SSTC_LAYER_BATCHNORM, bn_keys}, {"relu", SSTC_LAYER_RELU, name_keys},
    {"maxpool", SSTC_LAYER_MAXPOOL, pool_keys},  {"avgpool", SSTC_LAYER_AVGPOOL, pool_keys},
    {"dropout", SSTC_LAYER_DROPOUT, dropout_keys}, {"flatten", SSTC_LAYER_FLATTEN, name_keys},
};
#define N_LAYER_SECTIONS (sizeof layer_sections / sizeof layer_sections[0])

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
    const key_def *keys;
    void *target;
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

static const char *type_name(key_type t) {
    switch (t) {
    case K_INT: case K_U64: return "an integer";
    case K_FLOAT: return "a number";
    case K_BOOL: return "true or false";
    case K_FLOATLIST: return "a comma-separated list of numbers";
    case K_INTLIST: return "a comma-separated list of integers";
    default: return "a value";
    }
}

static int set_value(parser *p, const key_def *k, void *base, const char *value) {
    char *end;
    void *dst = (char *)base + k->off;
    const char *sec = p->section;
    switch (k->type) {
    case K_INT: case K_U64: {
        errno = 0;
        double v = strtod(value, &end);
        if (end == value || *end || errno || v != (double)(long long)v)
            return perr(p, "[%s] %s = '%s': expected %s", sec, k->key, value, type_name(k->type));
        if (v < k->lo || v > k->hi)
            return perr(p, "[%s] %s = %s: out of range, expected %g..%g", sec, k->key, value, k->lo, k->hi);
        if (k->type == K_INT) {
            *(int *)dst = (int)v;
        } else {
            errno = 0;
            unsigned long long u = strtoull(value, &end, 10);
            if (*end || errno || value[0] == '-')
                return perr(p, "[%s] %s = '%s': expected a whole number written in digits", sec, k->key, value);
            *(uint64_t *)dst = u;
        }
        return 1;
    }
    case K_FLOAT: {
        errno = 0;
        double v = strtod(value, &end);
        if (end == value || *end || errno || !isfinite(v))
            return perr(p, "[%s] %s = '%s': expected %s", sec, k->key, value, type_name(k->type));
        if (v < k->lo || v > k->hi)
            return perr(p, "[%s] %s = %s: out of range, expected %g..%g", sec, k->key, value, k->lo, k->hi);
        *(float *)dst = (float)v;
        return 1;
    }
    case K_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes")) *(int *)dst = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no")) *(int *)dst = 0;
        else return perr(p, "[%s] %s = '%s': expected true or false", sec, k->key, value);
        return 1;
    case K_STR:
        if (!*value) return perr(p, "[%s] %s is empty, expected a value", sec, k->key);
        if (strlen(value) >= k->size)
            return perr(p, "[%s] %s: value longer than %zu characters", sec, k->key, k->size - 1);
        snprintf(dst, k->size, "%s", value);
        return 1;
    case K_ENUM: {
        const char *c = k->choices;
        int idx = 0;
        size_t n = strlen(value);
        while (c && *c) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (len == n && !strncmp(c, value, n)) {
                *(int *)dst = idx;
                return 1;
            }
            idx++;
            c = bar ? bar + 1 : NULL;
        }
        return perr(p, "[%s] %s = '%s': expected one of %s", sec, k->key, value, k->choices);
    }
    case K_LAYERSEL: {
        sstc_layer_select *sel = dst;
        memset(sel, 0, sizeof *sel);
        if (!strcmp(value, "all")) sel->mode = SSTC_SELECT_ALL;
        else if (!strcmp(value, "fc")) sel->mode = SSTC_SELECT_FC;
        else if (!strcmp(value, "conv")) sel->mode = SSTC_SELECT_CONV;
        else {
            sel->mode = SSTC_SELECT_NAMES;
            const char *q = value;
            while (*q) {
                while (*q == ' ' || *q == ',') q++;
                if (!*q) break;
                const char *e = q;
                while (*e && *e != ',') e++;
                size_t len = (size_t)(e - q);
                while (len && q[len - 1] == ' ') len--;
                if (len >= sizeof sel->names[0])
                    return perr(p, "[%s] %s: layer name '%.*s' longer than %zu characters", sec, k->key, (int)len, q,
                                sizeof sel->names[0] - 1);
                if (sel->nnames >= SSTC_MAX_CODED) return perr(p, "[%s] %s: more than %d layers", sec, k->key, SSTC_MAX_CODED);
                snprintf(sel->names[sel->nnames], sizeof sel->names[0], "%.*s", (int)len, q);
                for (int i = 0; i < sel->nnames; i++)
                    if (!strcmp(sel->names[i], sel->names[sel->nnames]))
                        return perr(p, "[%s] %s: layer '%s' listed twice", sec, k->key, sel->names[i]);
                sel->nnames++;
                q = e;
            }
            if (!sel->nnames)
                return perr(p, "[%s] %s = '%s': expected all, fc, conv or a comma-separated list of layer names", sec, k->key, value);
        }
        return 1;
    }
    case K_FLOATLIST: case K_INTLIST: {
        if (k->type == K_INTLIST && !strcmp(value, "direct")) {
            p->cfg->compress.nstages = 0; /* the only int list: the pruning schedule */
            return 1;
        }
        int n = 0;
        const char *s = value;
        while (*s) {
            errno = 0;
            double v = strtod(s, &end);
            if (end == s || errno || !isfinite(v))
                return perr(p, "[%s] %s = '%s': expected %s", sec, k->key, value, type_name(k->type));
            if (n >= (int)k->hi) return perr(p, "[%s] %s: more than %d values", sec, k->key, (int)k->hi);
            if (v < k->lo) return perr(p, "[%s] %s: value %g below %g", sec, k->key, v, k->lo);
            if (k->type == K_INTLIST) {
                if (v != (double)(int)v) return perr(p, "[%s] %s = '%s': expected %s", sec, k->key, value, type_name(k->type));
                ((int *)dst)[n++] = (int)v;
            } else {
                ((float *)dst)[n++] = (float)v;
            }
            while (*end == ' ') end++;
            if (*end == ',') end++;
            else if (*end) return perr(p, "[%s] %s = '%s': expected %s", sec, k->key, value, type_name(k->type));
            while (*end == ' ') end++;
            s = end;
        }
        if (n == 0) return perr(p, "[%s] %s is empty, expected %s", sec, k->key, type_name(k->type));
        if (k->type == K_INTLIST) p->cfg->compress.nstages = n;
        else if (!strcmp(k->key, "std")) p->cfg->norm_std_channels = n;
        else p->cfg->norm_channels = n;
        return 1;
    }
    }
    return 0;
}

static void layer_defaults(sstc_layer_spec *l, sstc_layer_kind kind) {
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->bias = 1;
    l->size = kind == SSTC_LAYER_CONV2D ? 3 : 2;
    l->stride = kind == SSTC_LAYER_CONV2D ? 1 : -1; /* pools: -1 = size */
    l->pad = 0;
    l->p = 0.5f;
    l->eps = 1e-5f;
    l->momentum = 0.1f;
}

static int begin_section(parser *p, const char *section) {
    sstc_config *c = p->cfg;
    snprintf(p->section, sizeof p->section, "%s", section);
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
    for (size_t i = 0; i < N_LAYER_SECTIONS; i++)
        if (!strcmp(section, layer_sections[i].section)) {
            if (c->nlayers >= SSTC_MAX_LAYERS) return perr(p, "more than %d layers", SSTC_MAX_LAYERS);
            sstc_layer_spec *l = &c->layers[c->nlayers++];
            layer_defaults(l, layer_sections[i].kind);
            l->line = p->line;
            p->keys = layer_sections[i].keys;
            p->target = l;
            return 1;
        }
    return perr(p, "unknown section [%s]; expected experiment, data, train, compress, or a layer: "
                   "fc, conv, batchnorm, relu, maxpool, avgpool, dropout, flatten", section);
}

static int apply_key(parser *p, const char *name, const char *value) {
    for (const key_def *k = p->keys; k && k->key; k++)
        if (!strcmp(k->key, name)) return set_value(p, k, p->target, value);
    char known[400] = "";
    size_t off = 0;
    for (const key_def *k = p->keys; k && k->key && off < sizeof known; k++)
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
    if (!strcmp(sec, "experiment")) p->keys = experiment_keys, p->target = c;
    else if (!strcmp(sec, "data")) p->keys = data_keys, p->target = c;
    else if (!strcmp(sec, "train")) p->keys = train_keys, p->target = c;
    else if (!strcmp(sec, "compress")) p->keys = compress_keys, p->target = &c->compress, c->compress.present = 1;
    else {
        /* a layer by its (default or given) name */
        int counts[SSTC_LAYER_KIND_COUNT] = {0};
        static const char *prefix[SSTC_LAYER_KIND_COUNT] = {"fc", "conv", "bn", "relu", "maxpool", "avgpool", "dropout", "flatten"};
        sstc_layer_spec *found = NULL;
        for (int i = 0; i < c->nlayers && !found; i++) {
            sstc_layer_spec *l = &c->layers[i];
            char nm[48];
            counts[l->kind]++;
            if (l->name[0]) snprintf(nm, sizeof nm, "%s", l->name);
            else snprintf(nm, sizeof nm, "%s%d", prefix[l->kind], counts[l->kind]);
            if (!strcmp(nm, sec)) found = l;
        }
        if (!found) return perr(p, "'%s': no section or layer named '%s'", ov, sec);
        for (size_t i = 0; i < N_LAYER_SECTIONS; i++)
            if (layer_sections[i].kind == found->kind) p->keys = layer_sections[i].keys;
        p->target = found;
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
        if ((l->kind == SSTC_LAYER_LINEAR || l->kind == SSTC_LAYER_CONV2D) && l->outputs <= 0) {
            sstc_fail(SSTC_ECONFIG, "%s:%d: [%s] needs %s", p->path, l->line,
                      l->kind == SSTC_LAYER_LINEAR ? "fc" : "conv", l->kind == SSTC_LAYER_LINEAR ? "outputs = N" : "filters = N");
            return SSTC_ECONFIG;
        }
        if (l->stride < 0) l->stride = l->size;
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
    *text_out = NULL;
    /* a FIFO or a device would block or never end: only regular files */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return sstc_fail(SSTC_EIO, "%s: cannot open config: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return sstc_fail(SSTC_EIO, "%s: not a regular file; expected an INI config", path);
    }
    if (st.st_size == 0 || st.st_size > SSTC_MAX_CONFIG_BYTES) {
        close(fd);
        return sstc_fail(SSTC_EIO, "%s: %s (%lld bytes); expected an INI config of at most %d bytes", path,
                         st.st_size ? "too large" : "empty", (long long)st.st_size, SSTC_MAX_CONFIG_BYTES);
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *text = malloc(n + 1);
    if (!text) {
        close(fd);
        return sstc_fail(SSTC_ENOMEM, "%s: out of memory", path);
    }
    while (got < n) {
        ssize_t r = read(fd, text + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(text);
        return sstc_fail(SSTC_EIO, "%s: read %zu of %zu bytes", path, got, n);
    }
    text[n] = 0;
    if (memchr(text, 0, n)) {
        free(text);
        return sstc_fail(SSTC_EFORMAT, "%s: contains NUL bytes, expected a text INI file", path);
    }
    *text_out = text;
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
        const char *nm = l->name[0] ? l->name : NULL;
        int rc = 0;
        switch (l->kind) {
        case SSTC_LAYER_LINEAR: rc = sstc_model_add_linear(m, nm, l->outputs, l->bias); break;
        case SSTC_LAYER_CONV2D: rc = sstc_model_add_conv2d(m, nm, l->outputs, l->size, l->stride, l->pad, l->bias); break;
        case SSTC_LAYER_BATCHNORM: rc = sstc_model_add_batchnorm(m, nm, l->eps, l->momentum); break;
        case SSTC_LAYER_RELU: rc = sstc_model_add_relu(m, nm); break;
        case SSTC_LAYER_MAXPOOL: rc = sstc_model_add_maxpool(m, nm, l->size, l->stride, l->pad); break;
        case SSTC_LAYER_AVGPOOL: rc = sstc_model_add_avgpool(m, nm, l->size, l->stride, l->pad); break;
        case SSTC_LAYER_DROPOUT: rc = sstc_model_add_dropout(m, nm, l->p); break;
        case SSTC_LAYER_FLATTEN: rc = sstc_model_add_flatten(m, nm); break;
        default: rc = sstc_fail(SSTC_ECONFIG, "unknown layer kind"); break;
        }
        if (rc) {
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
