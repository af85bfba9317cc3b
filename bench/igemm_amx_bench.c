/* The int8 GEMM on AMX tiles (ops/si_igemm_amx.c) against the AVX-512 VNNI one
 * (ops/si_igemm.c, si_igemm_packed) on VGG19's convolution shapes at batch 1 (m output
 * positions x n filters x k = 3 * 3 * channels), at 1 and 2 threads (si_set_num_threads).
 * Both write uint8 outputs with relu (a quantized conv layer's requantization) and are timed
 * interleaved in the same loop, alternating which goes first; medians over the repeats, the
 * ratio of the medians (> 1: AMX faster) and GMAC/s (m n k / time). Each run also checks the
 * two outputs are equal.
 *
 *   PATH=/work/venvs/D/bin:$PATH; source kernels/tests/mkl_env.sh
 *   cc -std=c11 -O3 -fopenmp -Ikernels -I"$MKL_INC" $(find kernels -path kernels/tests -prune -o -name 'si_*.c' -print) \
 *      bench/igemm_amx_bench.c -L"$MKL_LIB" -l:libmkl_rt.so.3 -Wl,-rpath,"$MKL_LIB" -lm -o /tmp/igemm_amx_bench
 *   /tmp/igemm_amx_bench [repeats] [threads...]      (default 21 repeats, threads 1 2)
 *
 * The machine's load matters on a shared box: the header prints the load average (run
 * `uptime` too) and each line the minimum beside the median of the AMX side. */
#define _DEFAULT_SOURCE /* getloadavg */
#include "si_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *si_igemm_kernel_name(const si_packed_b8 *b); /* ops/si_igemm.c */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void *xalloc(size_t bytes) {
    void *p = si_alloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory (%zu bytes)\n", bytes); exit(2); }
    return p;
}

static void bench(const char *name, int64_t m, int64_t n, int64_t k, int repeats, int threads) {
    uint8_t *A = xalloc((size_t)(m * k));
    for (int64_t t = 0; t < m * k; t++) A[t] = (uint8_t)(next_u32() & 255);
    int8_t *W = xalloc((size_t)(n * k));
    for (int64_t t = 0; t < n * k; t++) W[t] = (int8_t)((int)(next_u32() % 255) - 127);
    float *mul = xalloc(sizeof(float) * (size_t)n), *add = xalloc(sizeof(float) * (size_t)n);
    for (int64_t j = 0; j < n; j++) { mul[j] = 1e-4f; add[j] = 0.1f; }
    si_requant rq = {mul, add, SI_ACT_RELU, 1, 20.0f, 0};
    si_packed_b8 Bv;
    si_packed_b8_amx Ba;
    if (si_pack_b8(name, W, n, k, &Bv) || si_pack_b8_amx(name, W, n, k, &Ba)) {
        fprintf(stderr, "%s: packing failed: %s\n", name, si_last_error());
        exit(2);
    }
    si_free(W);
    uint8_t *Cv = xalloc((size_t)(m * n)), *Ca = xalloc((size_t)(m * n));
    double *tv = malloc(sizeof(double) * (size_t)repeats), *ta = malloc(sizeof(double) * (size_t)repeats);
    si_set_num_threads(threads);
    si_igemm_packed(A, k, m, &Bv, &rq, Cv, n);
    si_igemm_amx(A, k, m, &Ba, &rq, Ca, n);
    const int same = memcmp(Cv, Ca, (size_t)(m * n)) == 0;
    for (int r = 0; r < repeats; r++)
        for (int s = 0; s < 2; s++) {
            const int amx = (s ^ r) & 1;
            const double t0 = si_now();
            if (amx) si_igemm_amx(A, k, m, &Ba, &rq, Ca, n);
            else si_igemm_packed(A, k, m, &Bv, &rq, Cv, n);
            const double dt = si_now() - t0;
            if (amx) ta[r] = dt; else tv[r] = dt;
        }
    const double mv = median(tv, repeats), ma = median(ta, repeats), mina = ta[0];
    const double macs = (double)m * (double)n * (double)k;
    printf("%-14s %6lld %4lld %5lld %2d  %9.3f %9.3f  %6.2fx  %7.1f %7.1f  %9.3f %s\n", name, (long long)m,
           (long long)n, (long long)k, threads, mv * 1e3, ma * 1e3, mv / ma, macs / mv * 1e-9, macs / ma * 1e-9,
           mina * 1e3, same ? "" : "  OUTPUTS DIFFER");
    fflush(stdout);
    si_packed_b8_free(&Bv);
    si_packed_b8_amx_free(&Ba);
    si_free(A); si_free(mul); si_free(add); si_free(Cv); si_free(Ca);
    free(tv); free(ta);
}

int main(int argc, char **argv) {
    si_init();
    const int repeats = argc > 1 ? atoi(argv[1]) : 21;
    int threads[8] = {1, 2}, nthr = 2;
    if (argc > 2) {
        nthr = 0;
        for (int i = 2; i < argc && nthr < 8; i++) threads[nthr++] = atoi(argv[i]);
    }
    if (!si_amx_available()) {
        printf("# AMX-INT8 is not available on %s (CPU, OS permission or ISA cap): nothing to compare\n",
               si_cpu_name());
        return 0;
    }
    si_packed_b8 probe;
    const int8_t w1 = 1;
    si_pack_b8("probe", &w1, 1, 1, &probe);
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    printf("# %s; VNNI side: %s; medians of %d interleaved repeats; load average %.2f %.2f %.2f\n", si_cpu_name(),
           si_igemm_kernel_name(&probe), repeats, load[0], load[1], load[2]);
    si_packed_b8_free(&probe);
    printf("%-14s %6s %4s %5s %2s  %9s %9s  %7s  %7s %7s  %9s\n", "shape", "m", "n", "k", "th", "vnni ms", "amx ms",
           "ratio", "vnni", "amx", "amx min");
    printf("%-14s %6s %4s %5s %2s  %9s %9s  %7s  %7s %7s  %9s\n", "", "", "", "", "", "", "", "", "GMAC/s",
           "GMAC/s", "ms");
    static const struct { const char *name; int64_t m, n, k; } shapes[] = {
        {"block1_conv1", 50176, 64, 27},   {"block1_conv2", 50176, 64, 576},  {"block2_conv2", 12544, 128, 1152},
        {"block3_conv2", 3136, 256, 2304}, {"block4_conv2", 784, 512, 4608},  {"block5_conv2", 196, 512, 4608},
        {"7x7_k4608", 49, 512, 4608},
    };
    for (int t = 0; t < nthr; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            bench(shapes[s].name, shapes[s].m, shapes[s].n, shapes[s].k, repeats, threads[t]);
    return 0;
}
