/* The layer registry: every kind's descriptor, indexed by sstc_layer_kind.
 * A new kind is one file in this folder plus one line here. */
#include "internal.h"

const sstc_layer_desc *const sstc_layer_registry[] = {
    [SSTC_LAYER_LINEAR] = &sstc_layer_linear,
    [SSTC_LAYER_CONV2D] = &sstc_layer_conv2d,
    [SSTC_LAYER_BATCHNORM] = &sstc_layer_batchnorm,
    [SSTC_LAYER_RELU] = &sstc_layer_relu,
    [SSTC_LAYER_MAXPOOL] = &sstc_layer_maxpool,
    [SSTC_LAYER_AVGPOOL] = &sstc_layer_avgpool,
    [SSTC_LAYER_DROPOUT] = &sstc_layer_dropout,
    [SSTC_LAYER_FLATTEN] = &sstc_layer_flatten,
    [SSTC_LAYER_SHORTCUT] = &sstc_layer_shortcut,
    [SSTC_LAYER_ROUTE] = &sstc_layer_route,
    [SSTC_LAYER_GLOBALAVGPOOL] = &sstc_layer_globalavgpool,
};
_Static_assert(sizeof sstc_layer_registry / sizeof sstc_layer_registry[0] == SSTC_LAYER_KIND_COUNT,
               "the registry needs one descriptor per sstc_layer_kind");

const sstc_layer_desc *sstc_layer_desc_of(sstc_layer_kind k) {
    return (k >= 0 && k < SSTC_LAYER_KIND_COUNT) ? sstc_layer_registry[k] : NULL;
}

const sstc_layer_desc *sstc_layer_desc_find(const char *section) {
    for (int k = 0; section && k < SSTC_LAYER_KIND_COUNT; k++)
        if (!strcmp(sstc_layer_registry[k]->section, section)) return sstc_layer_registry[k];
    return NULL;
}

const char *sstc_layer_kind_name(sstc_layer_kind k) {
    const sstc_layer_desc *d = sstc_layer_desc_of(k);
    return d ? d->kind_name : "unknown";
}

int sstc_layer_key_index(const sstc_layer_desc *d, const char *name) {
    for (int i = 0; d && d->keys[i].key; i++)
        if (!strcmp(d->keys[i].key, name)) return i;
    return -1;
}

void sstc_layer_spec_defaults(sstc_layer_spec *s, sstc_layer_kind kind) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    const sstc_layer_desc *d = sstc_layer_desc_of(kind);
    if (!d) return;
    char err[256];
    /* the defaults are literals of the descriptors; a test parses every one */
    for (const sstc_key_def *k = d->keys; k->key; k++)
        if (k->def) (void)sstc_key_parse(k, s, d->section, k->def, err, sizeof err);
}
