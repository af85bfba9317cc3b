/* The int8 GEMM on packed weights (ops/si_igemm.c) against the fp32 one (ops/si_sgemm.c) on
 * VGG19's convolution shapes (m output positions x n filters x k = 3 * 3 * channels) and
 * batch-1 fully connected layers (m = 1: GEMV, GB/s of weights streamed), at the active ISA
 * (SPARSEINFER_ISA caps it) and si_num_threads() threads. Both are timed interleaved in the
 * same loop; medians over the repeats, and the ratio of the medians.
 *
 *   PATH=/work/venvs/D/bin:$PATH; source kernels/tests/mkl_env.sh
 *   cc -std=c11 -O3 -fopenmp -Ikernels -I"$MKL_INC" $(find kernels -path kernels/tests -prune -o -name 'si_*.c' -print) \
 *      bench/igemm_bench.c -L"$MKL_LIB" -l:libmkl_rt.so.3 -Wl,-rpath,"$MKL_LIB" -lm -o /tmp/igemm_bench
 *   OMP_NUM_THREADS=2 /tmp/igemm_bench [repeats] [int8] [chunked] [reduced] [both] [name-substring]
 *
 * "int8": time the int8 side alone (the fp32 columns read "-"); "chunked": the int8 GEMM
 * called on chunks of rows as conv/si_conv_i8.c calls it (1 MB of uint8 patches each,
 * 2^20 / k rows: block4's 784 rows as 227 + 227 + 227 + 103), not on the whole m at once; a
 * name substring runs only the shapes whose name contains it. GMAC/s counts m * n * k
 * multiply-adds. "reduced": int8 weights in [-64, 64] (the quantizer's reduce_range), which
 * AVX2 without VNNI runs by vpmaddubsw (avx2_maddubs; weights in [-127, 127] are not
 * pair-safe and take vpmaddwd); "both" (implies reduced): the same weights packed a second
 * time with the vpmaddubsw kernel off (si_igemm_maddubs = 0: avx2_maddwd), timed in the same
 * interleaved loop, its ms and the ratio of the two int8 medians in two more columns.
 *
 * SPARSEINFER_ISA=avx2 caps the ISA (the int8 side then runs AVX-VNNI on ymm if the CPU has
 * it); SI_IGEMM_NO_VNNI=1 keeps the int8 side off VNNI (vpmaddubsw on reduced weights, else
 * vpmaddwd).
 *
 * The int8 side writes uint8 outputs with relu (the requantization a quantized conv layer
 * does); the fp32 side writes the plain float products (its bias and relu are a separate
 * pass in the runtime), so the ratio slightly favours fp32. */
#include "si_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int si_igemm_vnni, si_igemm_maddubs; /* ops/si_igemm.c */
const char *si_igemm_kernel_name(const si_packed_b8 *b);

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

static int int8_only, chunked, reduced, both;

/* the int8 GEMM of m rows, whole or in conv/si_conv_i8.c's chunks of patches */
static void igemm_run(const uint8_t *A, int64_t m, int64_t k, const si_packed_b8 *B, const si_requant *rq, uint8_t *C,
                      int64_t n) {
    int64_t chunk = chunked ? (INT64_C(1) << 20) / (k > 0 ? k : 1) : m;
    if (chunk < 64) chunk = 64;
    for (int64_t p0 = 0; p0 < m; p0 += chunk)
        si_igemm_packed(A + p0 * k, k, m - p0 < chunk ? m - p0 : chunk, B, rq, C + p0 * n, n);
}

static void bench(const char *name, int64_t m, int64_t n, int64_t k, int repeats) {
    uint8_t *A8 = xalloc((size_t)(m * k));
    float *A32 = xalloc(sizeof(float) * (size_t)(m * k));
    for (int64_t t = 0; t < m * k; t++) { A8[t] = (uint8_t)(next_u32() & 255); A32[t] = A8[t] * (1.0f / 255); }
    int8_t *W8 = xalloc((size_t)(n * k));
    float *W32 = xalloc(sizeof(float) * (size_t)(n * k));
    const int wmax = reduced ? 64 : 127;
    for (int64_t t = 0; t < n * k; t++) {
        W8[t] = (int8_t)((int)(next_u32() % (2 * wmax + 1)) - wmax);
        W32[t] = W8[t] * (1.0f / wmax);
    }
    float *mul = xalloc(sizeof(float) * (size_t)n), *add = xalloc(sizeof(float) * (size_t)n);
    for (int64_t j = 0; j < n; j++) { mul[j] = 1e-4f; add[j] = 0.1f; }
    si_requant rq = {mul, add, SI_ACT_RELU, 1, 20.0f, 0};
    si_packed_b B32 = {0};
    si_packed_b8 B8, Bw = {0};
    if (both) si_igemm_maddubs = 0;
    if (both && si_pack_b8(name, W8, n, k, &Bw)) { fprintf(stderr, "%s: packing failed: %s\n", name, si_last_error()); exit(2); }
    si_igemm_maddubs = 1;
    if ((!int8_only && si_pack_b(name, W32, n, k, &B32)) || si_pack_b8(name, W8, n, k, &B8)) {
        fprintf(stderr, "%s: packing failed: %s\n", name, si_last_error());
        exit(2);
    }
    si_free(W32);
    si_free(W8);
    float *C32 = xalloc(sizeof(float) * (size_t)(m * n));
    uint8_t *C8 = xalloc((size_t)(m * n));
    double *t32 = malloc(sizeof(double) * (size_t)repeats), *t8 = malloc(sizeof(double) * (size_t)repeats);
    double *tw = malloc(sizeof(double) * (size_t)repeats);
    /* warm-up, then interleaved, rotating which goes first (0 fp32, 1 int8, 2 int8 vpmaddwd) */
    if (!int8_only) si_sgemm_packed(A32, k, m, &B32, C32, n);
    igemm_run(A8, m, k, &B8, &rq, C8, n);
    if (both) igemm_run(A8, m, k, &Bw, &rq, C8, n);
    const int nv = both ? 3 : 2;
    for (int r = 0; r < repeats; r++) {
        t32[r] = tw[r] = 0;
        for (int s = 0; s < nv; s++) {
            const int v = (s + r) % nv;
            if (int8_only && v == 0) continue;
            const double t0 = si_now();
            if (v == 1) igemm_run(A8, m, k, &B8, &rq, C8, n);
            else if (v == 2) igemm_run(A8, m, k, &Bw, &rq, C8, n);
            else si_sgemm_packed(A32, k, m, &B32, C32, n);
            const double dt = si_now() - t0;
            if (v == 1) t8[r] = dt; else if (v == 2) tw[r] = dt; else t32[r] = dt;
        }
    }
    const double m32 = median(t32, repeats), m8 = median(t8, repeats), mw = median(tw, repeats);
    const double macs = (double)m * (double)n * (double)k;
    char f32[64] = "        -         -        -";
    if (!int8_only && m == 1) snprintf(f32, sizeof f32, "%9.3f %6.2fx %7.1f", m32 * 1e3, m32 / m8, 4.0 * n * k / m32 * 1e-9);
    else if (!int8_only) snprintf(f32, sizeof f32, "%9.3f %6.2fx %7.1f", m32 * 1e3, m32 / m8, macs / m32 * 1e-9);
    /* m == 1: GB/s of weights streamed (fp32: 4 bytes each); else G multiply-adds/s */
    char fw[64] = "";
    if (both) snprintf(fw, sizeof fw, "  %9.3f %6.2fx %s", mw * 1e3, mw / m8, si_igemm_kernel_name(&B8));
    printf("%-16s %6lld %5lld %5lld  %9.3f %8.1f  %s%s\n", name, (long long)m, (long long)n, (long long)k, m8 * 1e3,
           m == 1 ? (double)n * k / m8 * 1e-9 : macs / m8 * 1e-9, f32, fw);
    fflush(stdout);
    si_packed_b_free(&B32);
    si_packed_b8_free(&B8);
    if (both) si_packed_b8_free(&Bw);
    si_free(A8); si_free(A32); si_free(mul); si_free(add); si_free(C32); si_free(C8);
    free(t32); free(t8); free(tw);
}

int main(int argc, char **argv) {
    si_init();
    const int repeats = argc > 1 ? atoi(argv[1]) : 15;
    const char *only = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "int8") == 0) int8_only = 1;
        else if (strcmp(argv[i], "chunked") == 0) chunked = 1;
        else if (strcmp(argv[i], "reduced") == 0) reduced = 1;
        else if (strcmp(argv[i], "both") == 0) both = reduced = 1;
        else only = argv[i];
    }
    if (getenv("SI_IGEMM_NO_VNNI")) si_igemm_vnni = 0;
    /* the variant the int8 weights get at this cap */
    si_packed_b8 probe;
    const int8_t w2[2] = {reduced ? 64 : 127, reduced ? 64 : 127}; /* 127 + 127: not pair-safe */
    si_pack_b8("probe", w2, 1, 2, &probe);
    printf("# %s; kernels' ISA %s, int8 GEMM variant %s (%s); %d threads; medians of %d%s\n", si_cpu_name(),
           si_isa_str(si_isa_active()), si_isa_str(probe.isa), si_igemm_kernel_name(&probe), si_num_threads(),
           repeats, chunked ? "; int8 in 1 MB chunks of rows" : "");
    si_packed_b8_free(&probe);
    printf("%-16s %6s %5s %5s  %9s %8s  %9s %7s %7s%s\n", "shape", "m", "n", "k", "int8 ms", "GMAC/s", "fp32 ms",
           "ratio", "GMAC/s", both ? "  maddwd ms  ratio kernel" : "");
    /* VGG19 at 224 x 224, batch 1: m = output positions, n = filters, k = 3 * 3 * channels */
    static const struct { const char *name; int64_t m, n, k; } shapes[] = {
        {"block1_conv1", 50176, 64, 27},   {"block1_conv2", 50176, 64, 576},  {"block2_conv1", 12544, 128, 576},
        {"block2_conv2", 12544, 128, 1152}, {"block3_conv1", 3136, 256, 1152}, {"block3_conv2", 3136, 256, 2304},
        {"block4_conv1", 784, 512, 2304},   {"block4_conv2", 784, 512, 4608},  {"block5_conv", 196, 512, 4608},
        {"fc6 gemv", 1, 4096, 25088},       {"fc7 gemv", 1, 4096, 4096},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!only || strstr(shapes[i].name, only)) bench(shapes[i].name, shapes[i].m, shapes[i].n, shapes[i].k, repeats);
    return 0;
}
