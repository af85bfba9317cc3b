/* Dense fully connected layer at batch 1, at memory bandwidth: y = W x for a row-major
 * W of L->rows x L->cols (L->w), linear part only (no bias, no activation).
 *
 * At batch 1 every weight is used once, so the layer is a stream of W through the cores
 * and its speed is the read bandwidth the threads get. MKL's sgemv reaches about one
 * core's worth of it on this AMD CPU; here every thread of si_num_threads() streams an
 * equal contiguous block of rows (OpenMP static split), four rows at a time with two
 * 16-float vectors per row in flight (eight independent accumulators), while x (100 KB
 * for VGG's fc6) stays in the core's L2. Column tails use masked loads (AVX-512) or a
 * scalar loop (AVX2, plain C).
 *
 * Variants: AVX-512F, AVX2+FMA and plain C (si_dispatch.c picks one at start-up).
 * A double-accumulating reference sits beside them (si_use_reference).
 *
 * Small layers run on one thread: below SERIAL_FLOATS weights a parallel region's start
 * costs more than the split saves.
 */
#include "si_internal.h"

#if SI_X86
#include <immintrin.h>
#endif
#include <omp.h>

#define SERIAL_FLOATS (INT64_C(64) * 1024)  /* 256 KB of weights */

#if SI_X86

/* ---- AVX-512F ---------------------------------------------------------------------- */

__attribute__((target("avx512f"))) static void rows4_avx512(const float *w, int64_t cols, const float *x,
                                                            float *y) {
    const float *w0 = w, *w1 = w + cols, *w2 = w + 2 * cols, *w3 = w + 3 * cols;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t k = 0;
    for (; k + 32 <= cols; k += 32) {
        __m512 xa = _mm512_loadu_ps(x + k), xb = _mm512_loadu_ps(x + k + 16);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), xa, a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), xa, a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), xa, a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), xa, a3);
        b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k + 16), xb, b0);
        b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k + 16), xb, b1);
        b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k + 16), xb, b2);
        b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k + 16), xb, b3);
    }
    for (; k < cols; k += 16) {
        int64_t left = cols - k;
        __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + k), xv, a0);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + k), xv, a1);
        a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + k), xv, a2);
        a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + k), xv, a3);
    }
    y[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    y[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    y[2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
    y[3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
}

__attribute__((target("avx512f"))) static float row1_avx512(const float *w, int64_t cols, const float *x) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k + 64 <= cols; k += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 32), _mm512_loadu_ps(x + k + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 48), _mm512_loadu_ps(x + k + 48), a3);
    }
    for (; k < cols; k += 16) {
        int64_t left = cols - k;
        __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + k), _mm512_maskz_loadu_ps(m, x + k), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

SI_TARGET_AVX512 void si_gemv_rows_avx512(const float *w, int64_t cols, const float *x, float *y,
                                                           int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) rows4_avx512(w + r * cols, cols, x, y + r);
    for (; r < r1; r++) y[r] = row1_avx512(w + r * cols, cols, x);
}

/* ---- AVX2 + FMA -------------------------------------------------------------------- */

__attribute__((target("avx2,fma"))) static float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void rows4_avx2(const float *w, int64_t cols, const float *x, float *y) {
    const float *w0 = w, *w1 = w + cols, *w2 = w + 2 * cols, *w3 = w + 3 * cols;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t k = 0;
    for (; k + 16 <= cols; k += 16) {
        __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xa, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xa, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xa, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xa, a3);
        b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k + 8), xb, b0);
        b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k + 8), xb, b1);
        b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k + 8), xb, b2);
        b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k + 8), xb, b3);
    }
    float s0 = hsum256(_mm256_add_ps(a0, b0)), s1 = hsum256(_mm256_add_ps(a1, b1));
    float s2 = hsum256(_mm256_add_ps(a2, b2)), s3 = hsum256(_mm256_add_ps(a3, b3));
    for (; k < cols; k++) {
        s0 += w0[k] * x[k];
        s1 += w1[k] * x[k];
        s2 += w2[k] * x[k];
        s3 += w3[k] * x[k];
    }
    y[0] = s0; y[1] = s1; y[2] = s2; y[3] = s3;
}

__attribute__((target("avx2,fma"))) static float row1_avx2(const float *w, int64_t cols, const float *x) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k + 32 <= cols; k += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 16), _mm256_loadu_ps(x + k + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 24), _mm256_loadu_ps(x + k + 24), a3);
    }
    for (; k + 8 <= cols; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; k < cols; k++) s += w[k] * x[k];
    return s;
}

SI_TARGET_AVX2 void si_gemv_rows_avx2(const float *w, int64_t cols, const float *x, float *y,
                                                         int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) rows4_avx2(w + r * cols, cols, x, y + r);
    for (; r < r1; r++) y[r] = row1_avx2(w + r * cols, cols, x);
}
#else
void si_gemv_rows_avx2(const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1) {
    si_gemv_rows_portable(w, cols, x, y, r0, r1);
}
void si_gemv_rows_avx512(const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1) {
    si_gemv_rows_portable(w, cols, x, y, r0, r1);
}
#endif

/* ---- portable ---------------------------------------------------------------------- */

void si_gemv_rows_portable(const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = w + r * cols;
        float a[8] = {0};
        int64_t k = 0;
        for (; k + 8 <= cols; k += 8)
            for (int j = 0; j < 8; j++) a[j] += wr[k + j] * x[k + j];
        float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        for (; k < cols; k++) s += wr[k] * x[k];
        y[r] = s;
    }
}

/* ---- reference and entry ----------------------------------------------------------- */

void si_f32_gemv_ref(const si_layer *L, const float *x, float *y) {
    for (int64_t r = 0; r < L->rows; r++) {
        const float *wr = L->w + r * L->cols;
        double acc = 0;
        for (int64_t k = 0; k < L->cols; k++) acc += (double)wr[k] * x[k];
        y[r] = (float)acc;
    }
}

void si_f32_gemv(const si_layer *L, const float *x, float *y) {
    const int64_t rows = L->rows, cols = L->cols;
    if (rows <= 0) return;
    if (cols <= 0) {
        for (int64_t r = 0; r < rows; r++) y[r] = 0.0f;
        return;
    }
    void (*fn)(const float *, int64_t, const float *, float *, int64_t, int64_t) = si_k->gemv_rows;
    int nt = si_num_threads();
    if (nt > rows) nt = (int)rows;
    if (nt == 1 || rows * cols < SERIAL_FLOATS) { fn(L->w, cols, x, y, 0, rows); return; }
#pragma omp parallel num_threads(nt)
    {
        /* Equal blocks of rows, whole groups of four where possible. */
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t groups = (rows + 3) / 4, per = groups / n, extra = groups % n;
        int64_t g0 = t * per + (t < extra ? t : extra), g1 = g0 + per + (t < extra ? 1 : 0);
        int64_t r0 = g0 * 4, r1 = g1 * 4 < rows ? g1 * 4 : rows;
        if (r0 < r1) fn(L->w, cols, x, y, r0, r1);
    }
}

/* ---- the registry entry: dense fully connected at batch 1 --------------------------- */

static int gemv_applies(const si_layer *L, int regime) { return L->type == SI_LAYER_DENSE && regime == 0; }
static int64_t gemv_ws(const si_layer *L, const void *st, int batch) { (void)L; (void)st; (void)batch; return 0; }
static void gemv_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)st; (void)ws;
    for (int n = 0; n < batch; n++) si_f32_gemv(L, in + (int64_t)n * L->cols, out + (int64_t)n * L->rows);
    si_bias_act(L, out, batch);
}
static void gemv_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    for (int n = 0; n < batch; n++) si_f32_gemv_ref(L, in + (int64_t)n * L->cols, out + (int64_t)n * L->rows);
    si_bias_act_ref(L, out, batch);
}

const si_algo si_algo_fc_gemv = {
    .name = "fc_gemv", .type = SI_LAYER_DENSE, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .applies = gemv_applies, .ws_floats = gemv_ws, .run = gemv_run, .run_ref = gemv_run_ref,
};
