/* Layer kinds, each described once.
 *
 * A layer kind is one record (sstc_layer_desc) in one file under src/nn/layers/
 * plus one line in the registry (src/nn/layers/registry.c), indexed by
 * sstc_layer_kind. The record says everything the rest of sstc needs to know
 * about the kind: its config section and keys, how a layer of the kind is
 * built from a sstc_layer_spec (shape inference, parameters), its forward pass
 * (autodiff ops, so no backward code), its initialization and how it prints.
 * The model (forward, init, print) and the config parser (sections, keys,
 * defaults, overrides by layer name, building) loop over the registry; neither
 * switches on kinds. docs/layers.md walks through adding a kind.
 *
 * Layer references (shortcut `from`, route `layers`) are written as in
 * Darknet: a negative value is relative to the layer itself (-1 is the previous
 * layer), a value >= 0 is an absolute layer index. Built layers store absolute
 * indices, -1 standing for the model's input. */
#ifndef SSTC_LAYER_H
#define SSTC_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "sstc/nn.h"

/* ---- config keys ------------------------------------------------------ */

typedef enum {
    SSTC_KEY_INT = 0,
    SSTC_KEY_U64,
    SSTC_KEY_FLOAT,
    SSTC_KEY_BOOL,      /* true|false|1|0|yes|no, stored as int */
    SSTC_KEY_STR,
    SSTC_KEY_ENUM,      /* one of choices "a|b|c", stored as its index (int) */
    SSTC_KEY_FLOATLIST, /* "1.5, 2, 3": floats, count stored at count_off */
    SSTC_KEY_INTLIST,   /* "-1,-4": ints, count stored at count_off */
    SSTC_KEY_LAYERSEL   /* all | fc | conv | a list of layer names: a sstc_layer_select (config.h) */
} sstc_key_type;

/* One key of a config section, read into the struct the section fills. */
typedef struct {
    const char *key;
    sstc_key_type type;
    size_t off;          /* offset of the value in the struct */
    double lo, hi;       /* numbers: allowed range; lists: lo bounds each value, hi is the most values */
    const char *def;     /* default, written as in a file (NULL: none; the field stays 0) */
    int required;        /* the section must set it */
    const char *choices; /* ENUM: "a|b|c"; INTLIST: a word that stands for the empty list, or NULL */
    size_t size;         /* STR: buffer size */
    size_t count_off;    /* lists: offset of the int that receives the number of values */
} sstc_key_def;

/* Parses value into base + k->off. On error returns -1 and writes a message
 * naming "[section] key", the value and what was expected into err. */
int sstc_key_parse(const sstc_key_def *k, void *base, const char *section, const char *value, char *err,
                   size_t errlen);
/* "an integer", "a comma-separated list of numbers", ... */
const char *sstc_key_type_name(sstc_key_type t);

/* ---- layer specs ------------------------------------------------------- */

#define SSTC_LAYER_MAX_KEYS 32

/* A layer as a config section (or a sstc_model_add_* call) describes it,
 * before shapes are known. Relative layer references are kept as written. */
typedef struct sstc_layer_spec {
    sstc_layer_kind kind;
    char name[32];   /* "" = default name */
    int line;        /* line of the section header */
    uint32_t given;  /* bit i: keys[i] of the kind's descriptor was set */
    int outputs;     /* fc: outputs; conv: filters */
    int size, stride, pad;
    int bias;
    float p, eps, momentum;
    int from;        /* shortcut: source layer (relative if negative) */
    int activation;  /* shortcut: sstc_activation */
    int nroute;      /* route: number of source layers */
    int route[SSTC_MAX_ROUTE];
} sstc_layer_spec;

/* ---- descriptors ------------------------------------------------------- */

/* What a layer's forward pass can read besides its input: the model's input
 * and the outputs of the layers before it (kept in the step context). */
typedef struct {
    sstc_tensor *input;   /* the model's input, (B, in_shape...) */
    sstc_tensor **layer;  /* layer[j]: output of layer j, for j < the current layer */
} sstc_layer_outputs;

/* The output of absolute layer index j (-1: the model's input). */
static inline sstc_tensor *sstc_layer_output(const sstc_layer_outputs *o, int j) {
    return j < 0 ? o->input : o->layer[j];
}

/* Flags of a descriptor. */
enum {
    SSTC_LAYER_WEIGHTED = 1, /* a weight matrix (out, in...) that may take an output scale */
};

typedef struct sstc_layer_desc {
    sstc_layer_kind kind;    /* its index in the registry */
    const char *section;     /* config section: "fc" for [fc] */
    const char *prefix;      /* default names: "fc" gives fc1, fc2, ... */
    const char *kind_name;   /* sstc_layer_kind_name: "linear" */
    unsigned flags;
    /* Keys of the section besides `name` (every layer has it), ending with
     * {0}; at most SSTC_LAYER_MAX_KEYS. Defaults apply when a section begins. */
    const sstc_key_def *keys;
    /* After the file and the overrides: defaults that depend on other keys
     * (pools: stride = size). NULL if none. Returns 0, or -1 with a message in err. */
    int (*complete)(sstc_layer_spec *s, char *err, size_t errlen);
    /* Builds layer l (kind, name, in_shape set; it will be layer m->nlayers)
     * from s: checks s against the input shape, sets the output shape, layer
     * fields and parameters (in m->params). Returns 0 or an error code with a
     * message that names the layer. */
    int (*build)(sstc_model *m, sstc_layer *l, const sstc_layer_spec *s);
    /* The layer's output in ctx from x, its input (the previous layer's
     * output); outs holds the outputs of the earlier layers. NULL on error. */
    sstc_tensor *(*forward)(sstc_ctx *ctx, sstc_layer *l, sstc_tensor *x, const sstc_layer_outputs *outs);
    /* Initializes the parameters and buffers; NULL for kinds without any. */
    void (*init)(sstc_layer *l, sstc_init init, sstc_rng *rng);
    /* Kind-specific details for sstc_model_print ("k=3 s=1 p=1"); NULL if none. */
    void (*describe)(const sstc_model *m, const sstc_layer *l, char *buf, size_t n);
} sstc_layer_desc;

/* Every kind's descriptor, indexed by sstc_layer_kind: SSTC_LAYER_KIND_COUNT
 * entries (declared without a size so that registry.c's _Static_assert
 * counts its initializer). */
extern const sstc_layer_desc *const sstc_layer_registry[];

/* The descriptor of a kind (NULL if out of range), of a config section name
 * (NULL if none). */
const sstc_layer_desc *sstc_layer_desc_of(sstc_layer_kind k);
const sstc_layer_desc *sstc_layer_desc_find(const char *section);
/* The index of key name in d->keys, or -1. */
int sstc_layer_key_index(const sstc_layer_desc *d, const char *name);

/* A spec of the given kind holding every key's default. */
void sstc_layer_spec_defaults(sstc_layer_spec *s, sstc_layer_kind kind);

/* Appends the layer s describes (with its kind-specific checks) to m. */
int sstc_model_add(sstc_model *m, const sstc_layer_spec *s);

#endif
