/* libFuzzer target: the experiment config parser (INI text through inih and
 * the key tables), with and without --set overrides taken from the input's
 * last lines. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sstc/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1 << 16)) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    sstc_config c;
    if (sstc_config_parse(text, "fuzz.ini", NULL, 0, &c) == 0) {
        /* everything parsed must hold the ranges the parser promises */
        if (c.nlayers < 1 || c.nlayers > SSTC_MAX_LAYERS || c.epochs < 0 || c.batch_size < 1) __builtin_trap();
        if (c.compress.present && (c.compress.K < 1 || c.compress.K > c.compress.N || c.compress.N > 16)) __builtin_trap();
    }
    /* the same text as overrides: one per line */
    const char *ov[8];
    int nov = 0;
    char *p = text;
    while (*p && nov < 8) {
        ov[nov++] = p;
        char *nl = strchr(p, '\n');
        if (!nl) break;
        *nl = 0;
        p = nl + 1;
    }
    static const char base[] = "[data]\ndataset = mnist\n[fc]\noutputs = 10\n[compress]\n";
    sstc_config_parse(base, "base.ini", ov, nov, &c);
    free(text);
    return 0;
}
