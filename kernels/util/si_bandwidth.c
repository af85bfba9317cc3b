/* Memory read bandwidth of this machine, measured the way the dense gemv uses memory: every
 * thread of the runtime streams its own contiguous share of one buffer far larger than the
 * caches, with wide vector loads, and only reads it.
 *
 * si_read_bandwidth_gbs(bytes, repeats): allocates `bytes` (si_alloc), writes every page
 * (first touch, by the same threads that read it later), times `repeats` parallel reads of
 * the whole buffer and returns the median rate in GB/s (1e9 bytes per second). One untimed
 * read comes first (page tables, TLBs, frequency ramp). Returns -1 if the buffer cannot be
 * allocated, -2 on bad arguments (fewer than 64 bytes or repeats < 1).
 *
 * The sums of each read are combined and stored to a volatile, so the compiler has to keep
 * every load.
 *
 * si_stream_read(p, n): one such parallel read of any float buffer (no alignment needed),
 * returning its sum; the benchmark reads a buffer of a layer's size with it next to the layer.
 */
#include "si_internal.h"

#include <stdlib.h>
#include <string.h>

#include <immintrin.h>
#include <omp.h>

static volatile float bw_sink;

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SI_BW_X86 1

__attribute__((target("avx512f"))) static float sum_avx512(const float *p, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) { /* 512 bytes: eight cache lines per iteration */
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
        a4 = _mm512_add_ps(a4, _mm512_loadu_ps(p + i + 64));
        a5 = _mm512_add_ps(a5, _mm512_loadu_ps(p + i + 80));
        a6 = _mm512_add_ps(a6, _mm512_loadu_ps(p + i + 96));
        a7 = _mm512_add_ps(a7, _mm512_loadu_ps(p + i + 112));
    }
    a0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                       _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    float s = _mm512_reduce_add_ps(a0);
    for (; i < n; i++) s += p[i];
    return s;
}

__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
        a4 = _mm256_add_ps(a4, _mm256_loadu_ps(p + i + 32));
        a5 = _mm256_add_ps(a5, _mm256_loadu_ps(p + i + 40));
        a6 = _mm256_add_ps(a6, _mm256_loadu_ps(p + i + 48));
        a7 = _mm256_add_ps(a7, _mm256_loadu_ps(p + i + 56));
    }
    a0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                       _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    float t[8];
    _mm256_storeu_ps(t, a0);
    float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    for (; i < n; i++) s += p[i];
    return s;
}
#endif

static float sum_plain(const float *p, size_t n) {
    float a[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) a[j] += p[i + j];
    float s = 0;
    for (int j = 0; j < 16; j++) s += a[j];
    for (; i < n; i++) s += p[i];
    return s;
}

typedef float (*sum_fn)(const float *, size_t);

static sum_fn pick_sum(void) {
#ifdef SI_BW_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return sum_avx512;
    if (__builtin_cpu_supports("avx2")) return sum_avx2;
#endif
    return sum_plain;
}

/* Thread t's share [*lo, *hi) of n floats: contiguous, equal up to one 64-byte line. */
static void share(size_t n, int nt, int t, size_t *lo, size_t *hi) {
    size_t lines = n / 16, per = lines / (size_t)nt, extra = lines % (size_t)nt;
    size_t a = (size_t)t * per + ((size_t)t < extra ? (size_t)t : extra);
    size_t b = a + per + ((size_t)t < extra ? 1 : 0);
    *lo = a * 16;
    *hi = t == nt - 1 ? n : b * 16;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One parallel streaming read of p[0, n) by si_num_threads() threads, each its contiguous
 * share; returns the sum (so the loads stay). The benchmark uses it to read a buffer of the
 * same size as a layer's weights right beside the layer. */
float si_stream_read(const float *p, size_t n) {
    const int nt = si_num_threads() > 0 ? si_num_threads() : 1;
    const sum_fn sum = pick_sum();
    float s = 0.0f;
    if (nt == 1) return sum(p, n);
#pragma omp parallel num_threads(nt) reduction(+ : s)
    {
        size_t lo, hi;
        share(n, omp_get_num_threads(), omp_get_thread_num(), &lo, &hi);
        s += sum(p + lo, hi - lo);
    }
    return s;
}

double si_read_bandwidth_gbs(size_t bytes, int repeats) {
    if (bytes < 64 || repeats < 1) return -2.0;
    const size_t n = bytes / sizeof(float);
    float *buf = si_alloc(n * sizeof(float));
    double *rate = malloc((size_t)repeats * sizeof *rate);
    if (!buf || !rate) {
        si_free(buf);
        free(rate);
        return -1.0;
    }
    const int nt = si_num_threads() > 0 ? si_num_threads() : 1;
    const double gb = (double)(n * sizeof(float)) * 1e-9;

#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        share(n, omp_get_num_threads(), omp_get_thread_num(), &lo, &hi);
        for (size_t i = lo; i < hi; i++) buf[i] = (float)(i & 7) * 0.125f;
    }

    float total = 0.0f;
    for (int r = -1; r < repeats; r++) {
        double t0 = omp_get_wtime();
        float s = si_stream_read(buf, n);
        double dt = omp_get_wtime() - t0;
        total += s;
        if (r >= 0) rate[r] = dt > 0 ? gb / dt : 0.0;
    }
    bw_sink = total;

    qsort(rate, (size_t)repeats, sizeof *rate, cmp_double);
    double med = repeats % 2 ? rate[repeats / 2] : 0.5 * (rate[repeats / 2 - 1] + rate[repeats / 2]);
    si_free(buf);
    free(rate);
    return med;
}
