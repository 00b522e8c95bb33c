#ifndef SSTC_TRAIN_INTERNAL_H
#define SSTC_TRAIN_INTERNAL_H
#include "sstc/train.h"
/* Opens a session whose input shape, class count and normalization are known
 * (from a checkpoint) without loading data. */
int sstc_session_open_known(sstc_session *s, const char *text, const char *path, const char *const *overrides,
                       int noverrides, int in_c, int in_h, int in_w, int classes, const sstc_normalizer *norm);
#endif
