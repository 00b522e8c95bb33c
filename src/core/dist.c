/* MPI glue (include/sstc/dist.h). Without SSTC_MPI: one rank, no-ops. */
#include "sstc/dist.h"

#include <limits.h>
#include <string.h>
#include <time.h>

#include "sstc/error.h"

static double reduce_seconds, reduce_bytes;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double sstc_dist_reduce_seconds(void) { return reduce_seconds; }
double sstc_dist_reduce_bytes(void) { return reduce_bytes; }

#ifdef SSTC_MPI
#include <mpi.h>

static int g_rank, g_size = 1, g_init;

int sstc_dist_init(int *argc, char ***argv) {
    if (g_init) return 0;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return sstc_fail(SSTC_EIO, "MPI_Init failed");
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_init = 1;
    return 0;
}

void sstc_dist_finalize(int status) {
    if (!g_init) return;
    g_init = 0;
    if (status && g_size > 1) MPI_Abort(MPI_COMM_WORLD, status);
    MPI_Finalize();
}

int sstc_dist_built(void) { return 1; }
int sstc_dist_rank(void) { return g_rank; }
int sstc_dist_size(void) { return g_size; }

/* MPI counts are ints: large buffers go in pieces. */
static int sum(void *buf, size_t n, MPI_Datatype t, size_t elem) {
    if (g_size <= 1 || n == 0) return 0;
    double t0 = now();
    char *p = buf;
    while (n > 0) {
        int k = n > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)n;
        if (MPI_Allreduce(MPI_IN_PLACE, p, k, t, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            return sstc_fail(SSTC_EIO, "MPI_Allreduce failed");
        p += (size_t)k * elem;
        n -= (size_t)k;
        reduce_bytes += (double)k * (double)elem;
    }
    reduce_seconds += now() - t0;
    return 0;
}

int sstc_dist_sum_f32(float *buf, size_t n) { return sum(buf, n, MPI_FLOAT, sizeof(float)); }
int sstc_dist_sum_f64(double *buf, size_t n) { return sum(buf, n, MPI_DOUBLE, sizeof(double)); }

int sstc_dist_allgather_f32(float *buf, size_t blk) {
    if (g_size <= 1 || blk == 0) return 0;
    if (blk > (size_t)INT_MAX) return sstc_fail(SSTC_EINVAL, "allgather: %zu floats per rank is too many", blk);
    double t0 = now();
    if (MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)blk, MPI_FLOAT, MPI_COMM_WORLD) != MPI_SUCCESS)
        return sstc_fail(SSTC_EIO, "MPI_Allgather failed");
    reduce_seconds += now() - t0;
    return 0;
}

int sstc_dist_bcast(void *buf, size_t bytes) {
    if (g_size <= 1 || bytes == 0) return 0;
    char *p = buf;
    while (bytes > 0) {
        int k = bytes > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)bytes;
        if (MPI_Bcast(p, k, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) return sstc_fail(SSTC_EIO, "MPI_Bcast failed");
        p += k;
        bytes -= (size_t)k;
    }
    return 0;
}

int sstc_dist_check_same(const unsigned char digest[32], const char *what) {
    if (g_size <= 1) return 0;
    unsigned char root[32];
    memcpy(root, digest, 32);
    if (sstc_dist_bcast(root, 32)) return sstc_errcode();
    int differ = memcmp(root, digest, 32) != 0, any = 0;
    if (MPI_Allreduce(&differ, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return sstc_fail(SSTC_EIO, "MPI_Allreduce failed");
    if (any)
        return sstc_fail(SSTC_ECONFIG, "the ranks of this job have different %s%s; every rank must run the same", what,
                         differ ? " (this rank's differs from rank 0's)" : "");
    return 0;
}

#else

int sstc_dist_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    return 0;
}
void sstc_dist_finalize(int status) { (void)status; }
int sstc_dist_built(void) { return 0; }
int sstc_dist_rank(void) { return 0; }
int sstc_dist_size(void) { return 1; }
int sstc_dist_sum_f32(float *buf, size_t n) {
    (void)buf, (void)n;
    return 0;
}
int sstc_dist_sum_f64(double *buf, size_t n) {
    (void)buf, (void)n;
    return 0;
}
int sstc_dist_bcast(void *buf, size_t bytes) {
    (void)buf, (void)bytes;
    return 0;
}
int sstc_dist_allgather_f32(float *buf, size_t blk) {
    (void)buf, (void)blk;
    return 0;
}
int sstc_dist_check_same(const unsigned char digest[32], const char *what) {
    (void)digest, (void)what;
    return 0;
}
#endif

/* keep the timers referenced in the MPI-free build */
static void unused(void) __attribute__((unused));
static void unused(void) { (void)now(); }
