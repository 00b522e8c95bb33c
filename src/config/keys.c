/* Typed config keys: one parser for every section's values, so a key is
 * declared once (type, range, default, offset) wherever its section lives. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/config.h"
#include "sstc/layer.h"

const char *sstc_key_type_name(sstc_key_type t) {
    switch (t) {
    case SSTC_KEY_INT: case SSTC_KEY_U64: return "an integer";
    case SSTC_KEY_FLOAT: return "a number";
    case SSTC_KEY_BOOL: return "true or false";
    case SSTC_KEY_FLOATLIST: return "a comma-separated list of numbers";
    case SSTC_KEY_INTLIST: return "a comma-separated list of integers";
    default: return "a value";
    }
}

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static int parse_list(const sstc_key_def *k, void *dst, int *count, const char *sec, const char *value, char *err,
                      size_t errlen) {
    const char *tn = sstc_key_type_name(k->type);
    if (k->type == SSTC_KEY_INTLIST && k->choices && !strcmp(value, k->choices)) {
        *count = 0;
        return 0;
    }
    int n = 0;
    const char *s = value;
    char *end;
    while (*s) {
        errno = 0;
        double v = strtod(s, &end);
        if (end == s || errno || !isfinite(v))
            return fail(err, errlen, "[%s] %s = '%s': expected %s", sec, k->key, value, tn);
        if (n >= (int)k->hi) return fail(err, errlen, "[%s] %s: more than %d values", sec, k->key, (int)k->hi);
        if (v < k->lo) return fail(err, errlen, "[%s] %s: value %g below %g", sec, k->key, v, k->lo);
        if (k->type == SSTC_KEY_INTLIST) {
            /* the range first: converting a value beyond int is undefined */
            if (v > INT_MAX || v < INT_MIN || v != floor(v))
                return fail(err, errlen, "[%s] %s = '%s': expected %s", sec, k->key, value, tn);
            ((int *)dst)[n++] = (int)v;
        } else {
            ((float *)dst)[n++] = (float)v;
        }
        while (*end == ' ') end++;
        if (*end == ',') end++;
        else if (*end) return fail(err, errlen, "[%s] %s = '%s': expected %s", sec, k->key, value, tn);
        while (*end == ' ') end++;
        s = end;
    }
    if (n == 0) return fail(err, errlen, "[%s] %s is empty, expected %s", sec, k->key, tn);
    *count = n;
    return 0;
}

/* all | fc | conv | "fc1, conv2": parsed once into a sstc_layer_select. */
static int parse_layer_select(const sstc_key_def *k, sstc_layer_select *sel, const char *sec, const char *value,
                              char *err, size_t errlen) {
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
                return fail(err, errlen, "[%s] %s: layer name '%.*s' longer than %zu characters", sec, k->key, (int)len, q,
                            sizeof sel->names[0] - 1);
            if (sel->nnames >= SSTC_MAX_CODED) return fail(err, errlen, "[%s] %s: more than %d layers", sec, k->key, SSTC_MAX_CODED);
            snprintf(sel->names[sel->nnames], sizeof sel->names[0], "%.*s", (int)len, q);
            for (int i = 0; i < sel->nnames; i++)
                if (!strcmp(sel->names[i], sel->names[sel->nnames]))
                    return fail(err, errlen, "[%s] %s: layer '%s' listed twice", sec, k->key, sel->names[i]);
            sel->nnames++;
            q = e;
        }
        if (!sel->nnames)
            return fail(err, errlen, "[%s] %s = '%s': expected all, fc, conv or a comma-separated list of layer names", sec,
                        k->key, value);
    }
    return 0;
}

int sstc_key_parse(const sstc_key_def *k, void *base, const char *sec, const char *value, char *err,
                   size_t errlen) {
    char *end;
    void *dst = (char *)base + k->off;
    const char *tn = sstc_key_type_name(k->type);
    switch (k->type) {
    case SSTC_KEY_INT: case SSTC_KEY_U64: {
        errno = 0;
        double v = strtod(value, &end);
        if (end == value || *end || errno || !isfinite(v) || v != floor(v))
            return fail(err, errlen, "[%s] %s = '%s': expected %s", sec, k->key, value, tn);
        if (v < k->lo || v > k->hi)
            return fail(err, errlen, "[%s] %s = %s: out of range, expected %g..%g", sec, k->key, value, k->lo, k->hi);
        if (k->type == SSTC_KEY_INT) {
            *(int *)dst = (int)v;
        } else {
            errno = 0;
            unsigned long long u = strtoull(value, &end, 10);
            if (*end || errno || value[0] == '-')
                return fail(err, errlen, "[%s] %s = '%s': expected a whole number written in digits", sec, k->key,
                            value);
            *(uint64_t *)dst = u;
        }
        return 0;
    }
    case SSTC_KEY_FLOAT: {
        errno = 0;
        double v = strtod(value, &end);
        if (end == value || *end || errno || !isfinite(v))
            return fail(err, errlen, "[%s] %s = '%s': expected %s", sec, k->key, value, tn);
        if (v < k->lo || v > k->hi)
            return fail(err, errlen, "[%s] %s = %s: out of range, expected %g..%g", sec, k->key, value, k->lo, k->hi);
        *(float *)dst = (float)v;
        return 0;
    }
    case SSTC_KEY_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes")) *(int *)dst = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no")) *(int *)dst = 0;
        else return fail(err, errlen, "[%s] %s = '%s': expected true or false", sec, k->key, value);
        return 0;
    case SSTC_KEY_STR:
        if (!*value) return fail(err, errlen, "[%s] %s is empty, expected a value", sec, k->key);
        if (strlen(value) >= k->size)
            return fail(err, errlen, "[%s] %s: value longer than %zu characters", sec, k->key, k->size - 1);
        snprintf(dst, k->size, "%s", value);
        return 0;
    case SSTC_KEY_ENUM: {
        const char *c = k->choices;
        int idx = 0;
        size_t n = strlen(value);
        while (c && *c) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (len == n && !strncmp(c, value, n)) {
                *(int *)dst = idx;
                return 0;
            }
            idx++;
            c = bar ? bar + 1 : NULL;
        }
        return fail(err, errlen, "[%s] %s = '%s': expected one of %s", sec, k->key, value, k->choices);
    }
    case SSTC_KEY_FLOATLIST: case SSTC_KEY_INTLIST:
        return parse_list(k, dst, (int *)((char *)base + k->count_off), sec, value, err, errlen);
    case SSTC_KEY_LAYERSEL:
        return parse_layer_select(k, dst, sec, value, err, errlen);
    }
    return fail(err, errlen, "[%s] %s: unknown key type %d", sec, k->key, (int)k->type);
}
