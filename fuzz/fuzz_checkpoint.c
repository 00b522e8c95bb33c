/* libFuzzer target: the checkpoint reader (sstc_checkpoint_open without
 * data: checksum, header, the stored config, tensors, optimizer state, epoch
 * state, extra section). The input goes through a file, as checkpoints do. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sstc/train.h"

/* a forged config may ask for a network of billions of weights: the
 * allocation must fail cleanly, not end the run */
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(path, sizeof path, "/tmp/fuzz_checkpoint.%ld", (long)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    sstc_session *s = NULL;
    void *extra = NULL;
    size_t elen = 0;
    if (sstc_checkpoint_open(&s, path, 0, &extra, &elen) == 0) {
        const sstc_epoch_state *st = sstc_session_state(s);
        if (st->epoch < 0 || st->batch < 0 || st->seen < 0) __builtin_trap();
        free(extra);
    } else if (s || extra) {
        __builtin_trap(); /* a failed open leaves nothing behind */
    }
    sstc_session_close(s);
    return 0;
}
