/* Data-parallel training over MPI (docs/distributed.md).
 *
 * libsstc is built without MPI by default: then there is one rank, every
 * call below is a no-op and the program needs no MPI library. `make mpi`
 * builds the library and `build/sstc-mpi` with SSTC_MPI defined (mpicc), and
 * `mpirun -np P build/sstc-mpi train CONFIG` splits each global batch over P
 * ranks:
 *   - the batch pipeline (shuffle, augmentation) runs identically on every
 *     rank from the seed; rank r takes samples [n*r/P, n*(r+1)/P) of each batch;
 *   - gradients, scaled by each rank's share of the batch, are summed with one
 *     MPI_Allreduce over one flat buffer per step, so every rank applies the
 *     same update (the stop flag of Ctrl-C/SIGTERM travels in the same buffer,
 *     so all ranks stop after the same batch);
 *   - batch norm uses each rank's own batch statistics (as PyTorch's DDP); the
 *     running statistics are averaged over the ranks at the end of every epoch
 *     and rank 0's parameters broadcast, so all ranks hold the same network;
 *   - evaluation is sharded over the ranks and its sums reduced;
 *   - only rank 0 writes files (sstc_write_atomic and the run driver's files
 *     are no-ops on the other ranks).
 * Within a rank nothing changes. */
#ifndef SSTC_DIST_H
#define SSTC_DIST_H

#include <stddef.h>

/* Initializes MPI when built with it (call once, first thing in main). */
int sstc_dist_init(int *argc, char ***argv);
/* Ends MPI: MPI_Finalize, or with status != 0 in a job of several ranks,
 * MPI_Abort (so that one failing rank stops the job instead of leaving the
 * others waiting in a collective). */
void sstc_dist_finalize(int status);
/* 1 if this library was built with MPI. */
int sstc_dist_built(void);
int sstc_dist_rank(void);
int sstc_dist_size(void);

/* In-place sums over all ranks (no-ops with one rank). 0 or SSTC_EIO. */
int sstc_dist_sum_f32(float *buf, size_t n);
int sstc_dist_sum_f64(double *buf, size_t n);
/* buf holds P blocks of blk floats: every rank's own block r to all ranks
 * (MPI_Allgather). */
int sstc_dist_allgather_f32(float *buf, size_t blk);
/* Rank 0's bytes to every rank. */
int sstc_dist_bcast(void *buf, size_t bytes);
/* SSTC_ECONFIG naming `what` unless every rank passed the same 32 bytes. */
int sstc_dist_check_same(const unsigned char digest[32], const char *what);

/* Seconds spent in the collectives above and bytes summed so far (for benchmarks). */
double sstc_dist_reduce_seconds(void);
double sstc_dist_reduce_bytes(void);

#endif
