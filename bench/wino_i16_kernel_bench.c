/* The int16 Winograd GEMM's 6-row kernels alone (kernels/conv/si_conv_wino_i16.c): vpmaddwd +
 * vpaddd (plain AVX2), vpdpwssd on ymm (AVX-VNNI) and on zmm (AVX-512 VNNI), 6 rows of V and a
 * panel of U (cp channel pairs x 16 filters) in L1, called over and over; GMAC/s of the best of
 * 5 timings. Against bench/isa_peak.c's register-only loops it says how close the kernel body
 * gets to its port bound with no memory in the way (SPR, 1 thread, cp 256: 91 of 94, 122 of
 * 130, 184 of 239). Kernels the CPU lacks are skipped.
 *
 *   source kernels/tests/mkl_env.sh
 *   cc -std=c11 -O3 -fopenmp -Ikernels -I"$MKL_INC" bench/wino_i16_kernel_bench.c \
 *      $(find kernels -path kernels/tests -prune -o -name 'si_*.c' -print | grep -v si_conv_wino_i16.c) \
 *      -L"$MKL_LIB" -l:libmkl_rt.so.3 -Wl,-rpath,"$MKL_LIB" -lm -lz -o /tmp/wino_kb
 *   OMP_NUM_THREADS=1 taskset -c 1 /tmp/wino_kb 256
 */
#include "conv/si_conv_wino_i16.c"

#include <stdio.h>

int main(int argc, char **argv) {
    const int64_t cp = argc > 1 ? atoll(argv[1]) : 256, reps = 200000;
    if (cp < 1 || cp > 4096) {
        fprintf(stderr, "channel pairs must be in [1, 4096]\n");
        return 2;
    }
    si_init();
    int16_t *a = si_alloc((size_t)(6 * cp * 2) * sizeof(int16_t)), *b = si_alloc((size_t)(cp * 32) * sizeof(int16_t));
    int32_t m[6 * 16];
    if (!a || !b) return 1;
    for (int64_t i = 0; i < 6 * cp * 2; i++) a[i] = (int16_t)(i % 200 - 100);
    for (int64_t i = 0; i < cp * 32; i++) b[i] = (int16_t)(i % 300 - 150);
    const int v = si_cpu_vnni();
    const struct { const char *name; const mk_fn *tab; int ok; } k[3] = {
        {"vpmaddwd + vpaddd ymm", mk_of, si_isa_active() >= SI_ISA_AVX2},
        {"vpdpwssd ymm (AVX-VNNI)", mkx_of, (v & SI_VNNI_AVX) != 0},
        {"vpdpwssd zmm (AVX-512 VNNI)", mkz_of, si_isa_active() >= SI_ISA_AVX512 && (v & SI_VNNI_512)},
    };
    printf("# 6-row kernel, cp %lld channel pairs, data in L1; GMAC/s\n", (long long)cp);
    for (int i = 0; i < 3; i++) {
        if (!k[i].ok) {
            printf("%-30s %10s\n", k[i].name, "-");
            continue;
        }
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            const double t = omp_get_wtime();
            for (int64_t j = 0; j < reps; j++) k[i].tab[6](a, cp * 2, b, cp, m, 16, b, 0);
            const double dt = omp_get_wtime() - t;
            if (dt < best) best = dt;
        }
        printf("%-30s %10.1f\n", k[i].name, reps * 6.0 * 16 * 2 * (double)cp / best / 1e9);
    }
    si_free(a);
    si_free(b);
    return m[5] == 12345; /* keeps the sums live */
}
