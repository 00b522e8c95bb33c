/* One seeded pseudo-random generator (xoshiro256**) for everything: weight
 * initialization, shuffling, augmentation and dropout. Its whole state is the
 * plain struct below, so checkpoints save and restore it by value and the same
 * seed gives bit-identical runs. */
#ifndef SSTC_RNG_H
#define SSTC_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} sstc_rng;

void sstc_rng_seed(sstc_rng *r, uint64_t seed);
uint64_t sstc_rng_u64(sstc_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t sstc_rng_below(sstc_rng *r, uint64_t n);
/* Uniform float in [0, 1). */
float sstc_rng_uniform(sstc_rng *r);
/* Standard normal (Box-Muller, one value per call; deterministic). */
float sstc_rng_normal(sstc_rng *r);
/* Fisher-Yates shuffle of an int array. */
void sstc_rng_shuffle(sstc_rng *r, int *a, int n);

#endif
