/* Program start-up (not part of libsstc): tunes the BLAS and OpenMP runtimes
 * for this machine before any library call. Programs call it first in main():
 * sstc itself and the benchmarks in experiments/bench.
 *
 * Both runtimes read their settings from the environment when they load, so a
 * change means re-executing the program with a changed environment:
 * - a dynamic-arch OpenBLAS that does not recognize the CPU (common on
 *   virtual machines) falls back to an SSE3 kernel; if the CPU has AVX-512 or
 *   AVX2+FMA, OPENBLAS_CORETYPE is set to SkylakeX or Haswell (2-4x faster
 *   sgemm), kept only if a test multiplication agrees with a plain loop;
 * - idle OpenMP threads spin only briefly (GOMP_SPINCOUNT=10000) so that a
 *   shared machine's other work does not starve them.
 * Settings the user made (OPENBLAS_CORETYPE, OMP_WAIT_POLICY, GOMP_SPINCOUNT)
 * are left alone; SSTC_PLATFORM_INIT=off disables all of it. */
#ifndef SSTC_CLI_STARTUP_H
#define SSTC_CLI_STARTUP_H
int cli_platform_init(int argc, char **argv);
#endif
