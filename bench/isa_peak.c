/* Register-only multiply-add throughput of the loops the runtime's kernels are built on, ymm
 * (AVX2) forms, per core and on all cores (si_conv_wino_i16.c and docs/performance.md quote it):
 *  - fp32 FMA (vfmadd231ps): 8 multiply-adds an instruction, 12 independent chains;
 *  - uint8 x int8 by vpmaddubsw + vpmaddwd (by ones) + vpaddd: 32 an instruction triple, the
 *    int8 GEMM on AVX2 without VNNI (ops/si_igemm.c);
 *  - int16 x int16 by vpmaddwd + vpaddd: 16 an instruction pair, the int16 Winograd GEMMs.
 * No memory is touched in the timed loops, so these are the port bounds, not kernel speeds.
 * GMAC/s counts multiply-adds (a vpmaddwd lane: 2).
 *
 *   cc -O3 -funroll-all-loops -fopenmp bench/isa_peak.c -o /tmp/isa_peak && /tmp/isa_peak
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define NF 12 /* fp32 chains: 4-cycle latency x 2 ports, and some */
#define NI 6  /* integer chains: 6 sums + 6 operands + the others fit 16 ymm */

__attribute__((target("avx2,fma"))) static double fma_loop(long n) {
    __m256 a[NF];
    for (int i = 0; i < NF; i++) a[i] = _mm256_set1_ps((float)i);
    __m256 x = _mm256_set1_ps(0.9999f), y = _mm256_set1_ps(1e-6f);
    const double t = omp_get_wtime();
    for (long k = 0; k < n; k++) {
        for (int i = 0; i < NF; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
        __asm__ volatile("" : "+x"(x));
    }
    const double dt = omp_get_wtime() - t;
    __m256 s = a[0];
    for (int i = 1; i < NF; i++) s = _mm256_add_ps(s, a[i]);
    float b[8];
    _mm256_storeu_ps(b, s);
    if (b[0] == 1234.5f) printf(" ");
    return n * NF * 8.0 / dt;
}

/* the integer loops: NI chains a += STEP(x, w[i]), the operands different per chain (w[i]) and
 * x changing every iteration (the asm), so nothing is common to two chains or iterations */
#define INT_LOOP(NAME, SETW, STEP, MACS)                                                      \
    __attribute__((target("avx2"))) static double NAME(long n) {                             \
        __m256i a[NI], w[NI];                                                                 \
        for (int i = 0; i < NI; i++) a[i] = _mm256_set1_epi32(i), w[i] = SETW(i + 1);         \
        __m256i x = SETW(3);                                                                  \
        const __m256i one = _mm256_set1_epi16(1);                                             \
        (void)one;                                                                            \
        const double t = omp_get_wtime();                                                     \
        for (long k = 0; k < n; k++) {                                                        \
            for (int i = 0; i < NI; i++) a[i] = _mm256_add_epi32(a[i], STEP(x, w[i]));        \
            __asm__ volatile("" : "+x"(x));                                                   \
        }                                                                                     \
        const double dt = omp_get_wtime() - t;                                                \
        __m256i s = a[0];                                                                     \
        for (int i = 1; i < NI; i++) s = _mm256_add_epi32(s, a[i]);                           \
        int b[8];                                                                             \
        _mm256_storeu_si256((__m256i *)b, s);                                                 \
        if (b[0] == 12345) printf(" ");                                                       \
        return n * NI * (double)(MACS) / dt;                                                  \
    }
#define SET8(v) _mm256_set1_epi8((char)(v))
#define SET16(v) _mm256_set1_epi16((short)(v))
#define U8_STEP(x, w) _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), one) /* 32 u8 x s8 products */
#define S16_STEP(x, w) _mm256_madd_epi16(x, w)                          /* 16 int16 products */
INT_LOOP(u8_loop, SET8, U8_STEP, 32)
INT_LOOP(s16_loop, SET16, S16_STEP, 16)

int main(void) {
    const long n = 100000000;
    const char *name[3] = {"fp32 vfmadd", "u8 vpmaddubsw", "s16 vpmaddwd"};
    char model[256] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "model name : %255[^\n]", model) == 1) break;
        fclose(f);
    }
    printf("# %s; ymm loops, register-only; GMAC/s\n%-14s %12s %12s\n", model, "loop", "one core", "all cores");
    for (int k = 0; k < 3; k++) {
        double r[2];
        for (int all = 0; all < 2; all++) {
            double sum = 0;
#pragma omp parallel num_threads(all ? omp_get_num_procs() : 1) reduction(+ : sum)
            sum += k == 0 ? fma_loop(n) : k == 1 ? u8_loop(n) : s16_loop(n);
            r[all] = sum / 1e9;
        }
        printf("%-14s %12.1f %12.1f\n", name[k], r[0], r[1]);
    }
    return 0;
}
