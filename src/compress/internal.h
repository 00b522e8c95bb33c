/* Internals of the compression side shared with tests. */
#ifndef SSTC_COMPRESS_INTERNAL_H
#define SSTC_COMPRESS_INTERNAL_H

#include "sstc/compress.h"
#include "sstc/sst.h"

/* The coded network of compressor c over the float model m, with the input
 * shape, class count and preprocessing given explicitly (what
 * sstc_compress_write_sst takes from the session), as an in-memory .sst
 * model (free with sstc_sst_free). Model layers map to records as
 * src/compress/export.c describes: folded batch norms and dropout have no
 * record, shortcuts and routes refer to records. */
int sstc_compress_sst_model(const sstc_compressor *c, const sstc_model *m, int in_c, int in_h, int in_w, int classes,
                            const sstc_normalizer *norm, sstc_sst_model **out);

#endif
