/* sstc export MODEL.sst --c-header DIR [--data NAME]: the network as a C
 * header of const arrays and a standalone runner (docs/inference.md). */
#include "cli.h"
#include "sstc/data.h"
#include "sstc/error.h"
#include "sstc/infer.h"

#include <stdio.h>

/* Training images used to calibrate the int8 variant. */
#define CALIB_IMAGES 500

int cli_export_c_header(const char *sst_path, const char *dir, const char *calib_data) {
    sstc_engine *e = NULL;
    if (sstc_engine_load(sst_path, &e)) {
        fprintf(stderr, "sstc export: %s\n", sstc_errmsg());
        return 1;
    }
    int status = 0;
    if (calib_data) {
        sstc_dataset train = {0};
        if (sstc_dataset_load(calib_data, "train", &train) || cli_check_dataset(e, &train) ||
            sstc_engine_calibrate(e, train.pixels, train.n < CALIB_IMAGES ? train.n : CALIB_IMAGES)) {
            fprintf(stderr, "sstc export: int8 calibration on %s: %s\n", calib_data, sstc_errmsg());
            status = 1;
        }
        sstc_dataset_free(&train);
    }
    sstc_export_c_info info;
    if (!status && sstc_engine_export_c(e, dir, &info)) {
        fprintf(stderr, "sstc export: %s\n", sstc_errmsg());
        status = 1;
    }
    if (!status) {
        printf("wrote %s/sstc_net.h and %s/sstc_net.c\n", dir, dir);
        printf("const_code_bytes=%zu const_param_bytes=%zu ram_float_bytes=%zu ram_int8_bytes=%zu int8=%s\n",
               info.code_bytes, info.param_bytes, info.buffer_bytes[0] + info.scratch_bytes,
               info.buffer_bytes[1] + info.scratch_bytes, info.int8 ? "yes" : "no (pass --data NAME to calibrate)");
    }
    sstc_engine_free(e);
    return status;
}
