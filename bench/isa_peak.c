/* Register-only multiply-add throughput of the loops the runtime's kernels are built on, ymm
 * (AVX2) forms, per core and on all cores (si_conv_wino_i16.c and docs/performance.md quote it):
 *  - fp32 FMA (vfmadd231ps): 8 multiply-adds an instruction, 12 independent chains;
 *  - uint8 x int8 by vpmaddubsw + vpmaddwd (by ones) + vpaddd: 32 an instruction triple, the
 *    int8 GEMM on AVX2 without VNNI (ops/si_igemm.c);
 *  - int16 x int16 by vpmaddwd + vpaddd: 16 an instruction pair, the int16 Winograd GEMMs;
 *  - with VNNI, where the CPU has it: vpdpbusd (u8 x s8, 32 a ymm instruction, the int8 GEMM) and
 *    vpdpwssd (int16, 16 a ymm instruction, the int16 Winograd GEMMs), VEX on ymm (AVX-VNNI) and
 *    on zmm (AVX-512 VNNI), 12 independent sums (their latency is 5 cycles).
 * No memory is touched in the timed loops, so these are the port bounds, not kernel speeds.
 * GMAC/s counts multiply-adds (a vpmaddwd lane: 2).
 *
 *   cc -O3 -funroll-all-loops -fopenmp bench/isa_peak.c -o /tmp/isa_peak && /tmp/isa_peak
 */
#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

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

/* the VNNI loops: NV sums a = DOT(a, x, w), x changing every iteration */
#define NV 12
#define VNNI_LOOP(NAME, T, TARGET, SET, DOT, MACS)                                            \
    __attribute__((target(TARGET))) static double NAME(long n) {                             \
        T a[NV];                                                                              \
        for (int i = 0; i < NV; i++) a[i] = SET(i);                                           \
        T x = SET(3), w = SET(5);                                                             \
        const double t = omp_get_wtime();                                                     \
        for (long k = 0; k < n; k++) {                                                        \
            for (int i = 0; i < NV; i++) a[i] = DOT(a[i], x, w);                              \
            __asm__ volatile("" : "+v"(x));                                                   \
        }                                                                                     \
        const double dt = omp_get_wtime() - t;                                                \
        int b[16];                                                                            \
        for (int i = 1; i < NV; i++) a[0] = a[0] + a[i];                                      \
        memcpy(b, &a[0], sizeof b[0]);                                                        \
        if (b[0] == 12345) printf(" ");                                                       \
        return n * NV * (double)(MACS) / dt;                                                  \
    }
/* in place by asm: through the intrinsics GCC 12 copies every sum out and back each step */
#define ASM_DOT(INSN, T)                                                                      \
    ({                                                                                        \
        T s_ = (A_);                                                                          \
        __asm__(INSN " %2, %1, %0" : "+v"(s_) : "v"(X_), "v"(W_));                            \
        s_;                                                                                   \
    })
#define BUSD_Y(a, x, w) ({ __m256i A_ = (a), X_ = (x), W_ = (w); ASM_DOT("%{vex%} vpdpbusd", __m256i); })
#define WSSD_Y(a, x, w) ({ __m256i A_ = (a), X_ = (x), W_ = (w); ASM_DOT("%{vex%} vpdpwssd", __m256i); })
#define BUSD_Z(a, x, w) ({ __m512i A_ = (a), X_ = (x), W_ = (w); ASM_DOT("vpdpbusd", __m512i); })
#define WSSD_Z(a, x, w) ({ __m512i A_ = (a), X_ = (x), W_ = (w); ASM_DOT("vpdpwssd", __m512i); })
VNNI_LOOP(busd_y, __m256i, "avx2,avxvnni", _mm256_set1_epi8, BUSD_Y, 32)
VNNI_LOOP(wssd_y, __m256i, "avx2,avxvnni", _mm256_set1_epi16, WSSD_Y, 16)
VNNI_LOOP(busd_z, __m512i, "avx512f,avx512bw,avx512vnni", _mm512_set1_epi8, BUSD_Z, 64)
VNNI_LOOP(wssd_z, __m512i, "avx512f,avx512bw,avx512vnni", _mm512_set1_epi16, WSSD_Z, 32)

static int has_vnni(int zmm) { /* CPUID leaf 7: subleaf 0 ECX bit 11 AVX512_VNNI, subleaf 1 EAX bit 4 AVX-VNNI */
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (zmm) return (c >> 11) & 1;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1);
}

int main(void) {
    const long n = 100000000;
    char model[256] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "model name : %255[^\n]", model) == 1) break;
        fclose(f);
    }
    printf("# %s; register-only; GMAC/s\n%-22s %12s %12s\n", model, "loop", "one core", "all cores");
    for (int k = 0; k < 7; k++) {
        static const char *const names[7] = {"fp32 vfmadd ymm", "u8 vpmaddubsw ymm", "s16 vpmaddwd ymm",
                                             "u8 vpdpbusd ymm", "s16 vpdpwssd ymm", "u8 vpdpbusd zmm",
                                             "s16 vpdpwssd zmm"};
        if (k >= 3 && !has_vnni(k >= 5)) {
            printf("%-22s %12s %12s\n", names[k], "-", "-");
            continue;
        }
        double r[2];
        for (int all = 0; all < 2; all++) {
            double sum = 0;
#pragma omp parallel num_threads(all ? omp_get_num_procs() : 1) reduction(+ : sum)
            sum += k == 0 ? fma_loop(n) : k == 1 ? u8_loop(n) : k == 2 ? s16_loop(n) : k == 3 ? busd_y(n)
                 : k == 4 ? wssd_y(n) : k == 5 ? busd_z(n) : wssd_z(n);
            r[all] = sum / 1e9;
        }
        printf("%-22s %12.1f %12.1f\n", names[k], r[0], r[1]);
    }
    return 0;
}
