/* libFuzzer target: the CIFAR-10 binary batch parser. */
#include <stdint.h>
#include <stddef.h>

#include "sstc/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sstc_dataset ds;
    if (sstc_dataset_from_cifar_buffer(data, size, "fuzz.bin", &ds) == 0) {
        if (ds.n * (size_t)3073 != size || ds.c != 3 || ds.h != 32 || ds.w != 32) __builtin_trap();
        for (int i = 0; i < ds.n; i++)
            if (ds.labels[i] < 0 || ds.labels[i] >= ds.num_classes || ds.labels[i] != data[(size_t)i * 3073])
                __builtin_trap();
        sstc_dataset_free(&ds);
    }
    return 0;
}
