/* The layer registry: one descriptor per kind, consistent with the enum, with
 * keys whose defaults parse, and the wrappers that build from specs. */
#include <criterion/criterion.h>
#include <string.h>

#include "sstc/layer.h"

Test(registry, has_one_descriptor_per_kind_in_enum_order) {
    for (int k = 0; k < SSTC_LAYER_KIND_COUNT; k++) {
        const sstc_layer_desc *d = sstc_layer_registry[k];
        cr_assert_not_null(d, "kind %d has no descriptor", k);
        cr_assert_eq((int)d->kind, k, "descriptor %s sits at index %d", d->section, k);
        cr_assert_eq(sstc_layer_desc_of((sstc_layer_kind)k), d);
        cr_assert_eq(sstc_layer_desc_find(d->section), d);
        cr_assert_str_eq(sstc_layer_kind_name((sstc_layer_kind)k), d->kind_name);
        cr_assert(d->section && d->prefix && d->kind_name && d->keys && d->build && d->forward, "%s", d->section);
        for (int j = 0; j < k; j++) {
            cr_assert_str_neq(sstc_layer_registry[j]->section, d->section);
            cr_assert_str_neq(sstc_layer_registry[j]->prefix, d->prefix);
        }
    }
    cr_assert_null(sstc_layer_desc_of(SSTC_LAYER_KIND_COUNT));
    cr_assert_null(sstc_layer_desc_find("bogus"));
    cr_assert_str_eq(sstc_layer_kind_name(SSTC_LAYER_KIND_COUNT), "unknown");
    /* the interface other modules code against */
    cr_assert_eq(SSTC_LAYER_FLATTEN, 7);
    cr_assert_eq(SSTC_LAYER_SHORTCUT, 8);
    cr_assert_eq(SSTC_LAYER_ROUTE, 9);
    cr_assert_eq(SSTC_LAYER_GLOBALAVGPOOL, 10);
    cr_assert_str_eq(sstc_layer_registry[SSTC_LAYER_SHORTCUT]->section, "shortcut");
    cr_assert_str_eq(sstc_layer_registry[SSTC_LAYER_ROUTE]->section, "route");
    cr_assert_str_eq(sstc_layer_registry[SSTC_LAYER_GLOBALAVGPOOL]->section, "globalavgpool");
}

Test(registry, every_key_default_parses_and_fits_the_given_mask) {
    char err[256];
    for (int k = 0; k < SSTC_LAYER_KIND_COUNT; k++) {
        const sstc_layer_desc *d = sstc_layer_registry[k];
        int n = 0;
        for (const sstc_key_def *key = d->keys; key->key; key++, n++) {
            cr_assert_str_neq(key->key, "name", "[%s]: name is common to every layer", d->section);
            cr_assert_eq(sstc_layer_key_index(d, key->key), n);
            cr_assert(!(key->def && key->required), "[%s] %s: required keys have no default", d->section, key->key);
            if (!key->def) continue;
            sstc_layer_spec s;
            memset(&s, 0, sizeof s);
            cr_assert_eq(sstc_key_parse(key, &s, d->section, key->def, err, sizeof err), 0, "[%s] %s: %s",
                         d->section, key->key, err);
        }
        cr_assert_leq(n, SSTC_LAYER_MAX_KEYS, "[%s]: more keys than bits in sstc_layer_spec.given", d->section);
    }
    cr_assert_eq(sstc_layer_key_index(sstc_layer_registry[SSTC_LAYER_CONV2D], "nope"), -1);
}

Test(registry, spec_defaults_hold_each_kinds_documented_values) {
    sstc_layer_spec s;
    sstc_layer_spec_defaults(&s, SSTC_LAYER_CONV2D);
    cr_assert_eq(s.kind, SSTC_LAYER_CONV2D);
    cr_assert_eq(s.size, 3);
    cr_assert_eq(s.stride, 1);
    cr_assert_eq(s.pad, 0);
    cr_assert_eq(s.bias, 1);
    cr_assert_eq(s.given, 0u);
    sstc_layer_spec_defaults(&s, SSTC_LAYER_BATCHNORM);
    cr_assert_float_eq(s.eps, 1e-5f, 1e-12);
    cr_assert_float_eq(s.momentum, 0.1f, 1e-9);
    sstc_layer_spec_defaults(&s, SSTC_LAYER_DROPOUT);
    cr_assert_float_eq(s.p, 0.5f, 1e-9);
    sstc_layer_spec_defaults(&s, SSTC_LAYER_MAXPOOL);
    cr_assert_eq(s.size, 2);
    cr_assert_eq(s.stride, 0, "a pool's stride follows its size once the section is complete");
    const sstc_layer_desc *d = sstc_layer_desc_of(SSTC_LAYER_MAXPOOL);
    char err[64];
    s.size = 3;
    cr_assert_eq(d->complete(&s, err, sizeof err), 0);
    cr_assert_eq(s.stride, 3);
    sstc_layer_spec_defaults(&s, SSTC_LAYER_SHORTCUT);
    cr_assert_eq(s.activation, SSTC_ACT_LINEAR);
}

Test(registry, model_add_builds_from_a_spec_like_the_wrappers) {
    sstc_model *a = sstc_model_create(3, (int[]){3, 8, 8}), *b = sstc_model_create(3, (int[]){3, 8, 8});
    cr_assert_eq(sstc_model_add_conv2d(a, NULL, 5, 1, 2, 0, 0), 0, "%s", sstc_errmsg());
    sstc_layer_spec s;
    sstc_layer_spec_defaults(&s, SSTC_LAYER_CONV2D);
    s.outputs = 5, s.size = 1, s.stride = 2, s.bias = 0;
    cr_assert_eq(sstc_model_add(b, &s), 0, "%s", sstc_errmsg());
    const sstc_layer *la = &a->layers[0], *lb = &b->layers[0];
    cr_assert_str_eq(la->name, "conv1");
    cr_assert_str_eq(lb->name, "conv1");
    cr_assert_eq(lb->out_shape[0], 5);
    cr_assert_eq(lb->out_shape[1], 4, "1x1 stride 2 on 8x8 gives 4x4");
    cr_assert_eq(la->out_shape[2], lb->out_shape[2]);
    cr_assert_eq(la->in_features, 3);
    cr_assert_eq(la->weight->size, lb->weight->size);
    cr_assert_null(lb->bias);
    s.kind = SSTC_LAYER_KIND_COUNT;
    cr_assert_neq(sstc_model_add(b, &s), 0);
    cr_assert_neq(sstc_model_add(b, NULL), 0);
    cr_assert_eq(sstc_layer_add_out_scale(b, &b->layers[0]), 0);
    cr_assert_eq(sstc_model_add_globalavgpool(b, NULL), 0);
    cr_assert_neq(sstc_layer_add_out_scale(b, &b->layers[1]), 0, "only weighted kinds take an output scale");
    cr_assert_eq(b->num_classes, 5);
    sstc_model_free(a);
    sstc_model_free(b);
}
