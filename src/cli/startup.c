/* Start-up tuning of the BLAS and OpenMP runtimes (see startup.h). Both
 * libraries read their settings from the environment when they load, so a
 * change means re-executing the program. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "startup.h"

/* OpenBLAS targets below AVX2: where a dynamic-arch OpenBLAS lands when it
 * does not recognize a (virtualized) CPU's model number. */
static int is_generic_core(const char *name) {
    static const char *const slow[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                       "Sandybridge", "Katmai", "Coppermine", "Northwood", "Banias", NULL};
    for (int i = 0; slow[i]; i++)
        if (name && !strcasecmp(name, slow[i])) return 1;
    return 0;
}

/* One small sgemm against a plain loop: a kernel that computes wrong results
 * on this CPU is caught before it trains anything. */
static int sgemm_agrees(void) {
    enum { M = 37, N = 29, K = 53 };
    static float a[M * K], b[K * N], c[M * N];
    for (int i = 0; i < M * K; i++) a[i] = (float)((i * 7919) % 97) / 97.0f - 0.5f;
    for (int i = 0; i < K * N; i++) b[i] = (float)((i * 104729) % 89) / 89.0f - 0.5f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)a[i * K + k] * b[k * N + j];
            if (fabs(s - c[i * N + j]) > 1e-4 * (1 + fabs(s))) return 0;
        }
    return 1;
}

int cli_platform_init(int argc, char **argv) {
    (void)argc;
    const char *stage = getenv("SSTC_PLATFORM_INIT");
    if (stage && !strcmp(stage, "checking")) {
        /* we re-executed with a better kernel: keep it only if it computes right */
        if (sgemm_agrees()) {
            setenv("SSTC_PLATFORM_INIT", "done", 1);
            return 0;
        }
        fprintf(stderr, "sstc: OpenBLAS kernel %s gave wrong results here; using the default kernel\n",
                getenv("OPENBLAS_CORETYPE"));
        unsetenv("OPENBLAS_CORETYPE");
        setenv("SSTC_PLATFORM_INIT", "done", 1);
        setenv("SSTC_OPENBLAS_CORETYPE_REJECTED", "1", 1);
        execv("/proc/self/exe", argv);
        return 0;
    }
    if (stage) return 0; /* done, or disabled by the user (any other value) */
    int change = 0;
    /* OpenMP threads that spin while idle steal the cores from the other
     * thread on a shared machine; spin briefly, then sleep. */
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
        setenv("GOMP_SPINCOUNT", "10000", 1);
        change = 1;
    }
    const char *core = openblas_get_corename();
    if (!getenv("OPENBLAS_CORETYPE") && !getenv("SSTC_OPENBLAS_CORETYPE_REJECTED") && is_generic_core(core)) {
        __builtin_cpu_init();
        const char *better = NULL;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
            better = "SkylakeX";
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            better = "Haswell";
        if (better) {
            setenv("OPENBLAS_CORETYPE", better, 1);
            change = 2;
        }
    }
    if (!change) return 0;
    setenv("SSTC_PLATFORM_INIT", change == 2 ? "checking" : "done", 1);
    execv("/proc/self/exe", argv);
    return 0; /* exec failed: carry on with what we have */
}
