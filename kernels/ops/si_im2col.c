/* Patch extraction for convolutions: im2col rows (GEMM convolution) and the transposed
 * patch tiles of the sparse direct convolution. Bodies written once, compiled per ISA
 * (si_dispatch.c picks); si_im2col splits its rows among the threads. */
#include "si_internal.h"

#include <string.h>

#include <omp.h>
#if SI_X86
#include <immintrin.h>
#endif

#define IM2COL_TARGET_FLOATS (INT64_C(2) << 20)   /* 8 MB of patches per chunk */
#define IM2COL_MIN_ROWS 64
#define IM2COL_ROWS_PER_THREAD 16                  /* below this a thread is not worth starting */

int64_t si_im2col_chunk_rows(const si_layer *L, int batch) {
    int64_t positions = (int64_t)batch * L->out_h * L->out_w;
    int64_t rows = IM2COL_TARGET_FLOATS / (L->cols > 0 ? L->cols : 1);
    if (rows < IM2COL_MIN_ROWS) rows = IM2COL_MIN_ROWS;
    if (rows > positions) rows = positions;
    return rows < 1 ? 1 : rows;
}

/* One row per output position, columns in (kernel row, kernel column, channel) order to
 * match the weight matrix. */
typedef void (*copy_fn)(float *d, const float *s, int64_t n);
SI_INLINE void copy_scalar(float *d, const float *s, int64_t n) { for (int64_t t = 0; t < n; t++) d[t] = s[t]; }
#if SI_X86
/* Short runs (LeNet's conv1: 5 floats) as masked vector moves, not a float at a time. */
SI_TARGET_AVX512 SI_INLINE void copy_avx512(float *d, const float *s, int64_t n) {
    int64_t t = 0;
    for (; t + 16 <= n; t += 16) _mm512_storeu_ps(d + t, _mm512_loadu_ps(s + t));
    if (t < n) {
        const __mmask16 k = (__mmask16)((1u << (n - t)) - 1u);
        _mm512_mask_storeu_ps(d + t, k, _mm512_maskz_loadu_ps(k, s + t));
    }
}
SI_TARGET_AVX2 SI_INLINE void copy_avx2(float *d, const float *s, int64_t n) {
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) _mm256_storeu_ps(d + t, _mm256_loadu_ps(s + t));
    if (t < n) {
        const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - t)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(d + t, k, _mm256_maskload_ps(s + t, k));
    }
}
#endif

SI_INLINE void im2col_body(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col, copy_fn copy) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    const int64_t K = L->cols;
    /* the position's (n, oh, ow) stepped along, not divided out per row: three 64-bit
     * divisions per row cost as much as LeNet-5's whole conv1 copy */
    int64_t n = p0 / (OH * OW), oh = p0 % (OH * OW) / OW, ow = p0 % OW - 1;
    for (int64_t r = 0; r < m; r++) {
        if (++ow == OW) { ow = 0; if (++oh == OH) { oh = 0; n++; } }
        float *dst = col + r * K;
        for (int i = 0; i < L->kh; i++) {
            int64_t y = oh * L->sh - L->pad_top + i;
            float *d = dst + (int64_t)i * L->kw * C;
            if (y < 0 || y >= H) { memset(d, 0, sizeof(float) * (size_t)(L->kw * C)); continue; }
            int64_t x0 = ow * L->sw - L->pad_left;
            if (x0 >= 0 && x0 + L->kw <= W) { /* the common interior case: one contiguous run */
                const float *src = in + ((n * H + y) * W + x0) * C;
                if (L->kw * C <= 64) /* short runs (LeNet's conv1: 5 floats) inline, not a memcpy call each */
                    copy(d, src, L->kw * C);
                else
                    memcpy(d, src, sizeof(float) * (size_t)(L->kw * C));
                continue;
            }
            for (int j = 0; j < L->kw; j++) {
                int64_t x = x0 + j;
                if (x < 0 || x >= W) memset(d + j * C, 0, sizeof(float) * (size_t)C);
                else memcpy(d + j * C, in + ((n * H + y) * W + x) * C, sizeof(float) * (size_t)C);
            }
        }
    }
}
void si_im2col_rows_portable(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col) {
    im2col_body(L, in, p0, m, col, copy_scalar);
}
#if SI_X86
SI_TARGET_AVX2 void si_im2col_rows_avx2(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col) {
    im2col_body(L, in, p0, m, col, copy_avx2);
}
SI_TARGET_AVX512 void si_im2col_rows_avx512(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col) {
    im2col_body(L, in, p0, m, col, copy_avx512);
}
#else
void si_im2col_rows_avx2(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col) {
    im2col_body(L, in, p0, m, col, copy_scalar);
}
void si_im2col_rows_avx512(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col) {
    im2col_body(L, in, p0, m, col, copy_scalar);
}
#endif

void si_im2col_rows_ref(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    for (int64_t r = 0; r < m; r++) {
        int64_t p = p0 + r, n = p / (OH * OW), q = p % (OH * OW), oh = q / OW, ow = q % OW;
        for (int i = 0; i < L->kh; i++)
            for (int j = 0; j < L->kw; j++)
                for (int64_t c = 0; c < C; c++) {
                    int64_t y = oh * L->sh - L->pad_top + i, x = ow * L->sw - L->pad_left + j;
                    col[r * L->cols + ((int64_t)i * L->kw + j) * C + c] =
                        y < 0 || y >= H || x < 0 || x >= W ? 0.0f : in[((n * H + y) * W + x) * C + c];
                }
    }
}

void si_im2col(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col) {
    if (si_use_reference) { si_im2col_rows_ref(L, in, p0, m, col); return; }
    int nt = si_num_threads();
    if (nt > m / IM2COL_ROWS_PER_THREAD) nt = (int)(m / IM2COL_ROWS_PER_THREAD);
    void (*fn)(const si_layer *, const float *, int64_t, int64_t, float *) = si_k->im2col_rows;
    if (nt <= 1) { fn(L, in, p0, m, col); return; }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), k = omp_get_num_threads();
        int64_t a = m * t / k, b = m * (t + 1) / k;
        fn(L, in, p0 + a, b - a, col + a * L->cols);
    }
}

/* Patches of output positions [p0, p0 + w) transposed: P[k * ld + t], k in (kernel row,
 * kernel column, channel) order. zeros: in_c zero floats (the source of padded taps).
 *
 * Positions go in runs that share a sample and an output row. With stride 1 a run's taps
 * are one contiguous stretch of an input row (run_len * C floats), so a tap away from the
 * borders is a small transpose of contiguous memory, and for one channel (LeNet's conv1,
 * 28x28x1) a plain copy; taps that touch padding go position by position. */
SI_INLINE void patches_t_body(const si_layer *L, const float *in, int64_t p0, int w, int64_t ld, float *P,
                              const float *zeros) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    for (int t0 = 0; t0 < w;) {
        int64_t p = p0 + t0, nb = p / (OH * OW), q = p % (OH * OW), oh = q / OW, ow0 = q % OW;
        int run = (int)(OW - ow0 < w - t0 ? OW - ow0 : w - t0); /* positions left in this output row */
        int64_t y0 = oh * L->sh - L->pad_top, xs = ow0 * L->sw - L->pad_left;
        for (int i = 0; i < L->kh; i++) {
            int64_t y = y0 + i;
            for (int j = 0; j < L->kw; j++) {
                float *restrict dst = P + ((int64_t)i * L->kw + j) * C * ld + t0;
                int64_t xa = xs + j, xb = xs + (int64_t)(run - 1) * L->sw + j; /* first and last x read */
                if (y < 0 || y >= H) {
                    for (int64_t c = 0; c < C; c++)
                        for (int t = 0; t < run; t++) dst[c * ld + t] = 0.0f;
                } else if (xa >= 0 && xb < W && L->sw == 1) {
                    const float *restrict src = in + ((nb * H + y) * W + xa) * C;
                    if (C == 1)
                        for (int t = 0; t < run; t++) dst[t] = src[t];
                    else
                        for (int64_t c = 0; c < C; c++)
                            for (int t = 0; t < run; t++) dst[c * ld + t] = src[(int64_t)t * C + c];
                } else {
                    for (int t = 0; t < run; t++) {
                        int64_t x = xs + (int64_t)t * L->sw + j;
                        const float *src = (x < 0 || x >= W) ? zeros : in + ((nb * H + y) * W + x) * C;
                        for (int64_t c = 0; c < C; c++) dst[c * ld + t] = src[c];
                    }
                }
            }
        }
        t0 += run;
    }
}
void si_patches_t_portable(const si_layer *L, const float *in, int64_t p0, int w, int ld, float *P, const float *zeros) {
    patches_t_body(L, in, p0, w, ld, P, zeros);
}
SI_TARGET_AVX2 void si_patches_t_avx2(const si_layer *L, const float *in, int64_t p0, int w, int ld, float *P,
                                      const float *zeros) {
    patches_t_body(L, in, p0, w, ld, P, zeros);
}
SI_TARGET_AVX512 void si_patches_t_avx512(const si_layer *L, const float *in, int64_t p0, int w, int ld, float *P,
                                          const float *zeros) {
    patches_t_body(L, in, p0, w, ld, P, zeros);
}
