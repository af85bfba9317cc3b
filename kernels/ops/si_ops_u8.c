/* The uint8 activations' own operations (issue 12): quantize / dequantize, max pooling and
 * im2col on uint8 NHWC tensors. Quantization is vector code per ISA (the requantization
 * rule of si_internal.h with y = x: vmaxps / vminps with the bound second, so a NaN gives a
 * bound as fmaxf does, then vcvtps2dq under the default rounding for rintf); the others are
 * bodies written once and compiled per ISA (the compiler vectorises the channel loops).
 * The variant is the active ISA's (si_isa_active()); each op splits its work among
 * si_num_threads() threads once it is large enough to pay for a parallel region. */
#include "si_internal.h"

#include <string.h>

#include <omp.h>
#if SI_X86
#include <immintrin.h>
#endif

#define MIN_BYTES_PER_THREAD (INT64_C(1) << 16)   /* below this one thread is faster */
#define IM2COL_ROWS_PER_THREAD 16

static int threads_for(int64_t work, int64_t parts) {
    int nt = si_num_threads();
    int64_t by = work / MIN_BYTES_PER_THREAD;
    if (by < 1) by = 1;
    if (nt > by) nt = (int)by;
    if (nt > parts) nt = (int)(parts < 1 ? 1 : parts);
    return nt < 1 ? 1 : nt;
}

/* ---- quantize / dequantize ------------------------------------------------------------ */

typedef void (*quant_fn)(const float *x, int64_t n, float inv_scale, int32_t zero, uint8_t *q);
typedef void (*dequant_fn)(const uint8_t *q, int64_t n, float scale, int32_t zero, float *x);

static void quant_portable(const float *x, int64_t n, float inv_scale, int32_t zero, uint8_t *q) {
    si_requant rq;
    memset(&rq, 0, sizeof rq);
    rq.inv_scale = inv_scale;
    rq.zero = zero;
    rq.out_u8 = 1;
    for (int64_t i = 0; i < n; i++) q[i] = si_requant_u8(&rq, x[i]);
}

SI_INLINE void dequant_body(const uint8_t *restrict q, int64_t n, float scale, int32_t zero, float *restrict x) {
    for (int64_t i = 0; i < n; i++) x[i] = scale * (float)((int32_t)q[i] - zero);
}
static void dequant_portable(const uint8_t *q, int64_t n, float scale, int32_t zero, float *x) {
    dequant_body(q, n, scale, zero, x);
}

#if SI_X86
SI_TARGET_AVX512 static void quant_avx512(const float *x, int64_t n, float inv_scale, int32_t zero, uint8_t *q) {
    const __m512 inv = _mm512_set1_ps(inv_scale), lo = _mm512_set1_ps((float)-zero), hi = _mm512_set1_ps((float)(255 - zero));
    const __m512i z = _mm512_set1_epi32(zero);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv), lo), hi);
        _mm_mask_storeu_epi8(q + i, m, _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(t), z)));
    }
}
SI_TARGET_AVX2 static void quant_avx2(const float *x, int64_t n, float inv_scale, int32_t zero, uint8_t *q) {
    const __m256 inv = _mm256_set1_ps(inv_scale), lo = _mm256_set1_ps((float)-zero), hi = _mm256_set1_ps((float)(255 - zero));
    const __m256i z = _mm256_set1_epi32(zero);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 t0 = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv), lo), hi);
        const __m256 t1 = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), inv), lo), hi);
        const __m256i q0 = _mm256_add_epi32(_mm256_cvtps_epi32(t0), z), q1 = _mm256_add_epi32(_mm256_cvtps_epi32(t1), z);
        /* values in [0, 255]: the saturating packs are exact; packs work per 128-bit lane */
        const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
        const __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storeu_si128((__m128i *)(q + i), b);
    }
    if (i < n) quant_portable(x + i, n - i, inv_scale, zero, q + i);
}
SI_TARGET_AVX512 static void dequant_avx512(const uint8_t *q, int64_t n, float scale, int32_t zero, float *x) {
    dequant_body(q, n, scale, zero, x);
}
SI_TARGET_AVX2 static void dequant_avx2(const uint8_t *q, int64_t n, float scale, int32_t zero, float *x) {
    dequant_body(q, n, scale, zero, x);
}
#endif

void si_quantize_u8(const float *x, int64_t n, float inv_scale, int32_t zero, uint8_t *q) {
    if (n <= 0) return;
    quant_fn fn = quant_portable;
#if SI_X86
    if (!si_use_reference) {
        const si_isa isa = si_isa_active();
        if (isa >= SI_ISA_AVX512) fn = quant_avx512;
        else if (isa == SI_ISA_AVX2) fn = quant_avx2;
    }
#endif
    const int nt = threads_for(n * 4, n / 64);
    if (nt <= 1) { fn(x, n, inv_scale, zero, q); return; }
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), k = omp_get_num_threads();
        const int64_t a = n * t / k / 64 * 64, b = t == k - 1 ? n : n * (t + 1) / k / 64 * 64;
        fn(x + a, b - a, inv_scale, zero, q + a);
    }
}

static dequant_fn dequant_active(void) {
#if SI_X86
    if (!si_use_reference) {
        const si_isa isa = si_isa_active();
        if (isa >= SI_ISA_AVX512) return dequant_avx512;
        if (isa == SI_ISA_AVX2) return dequant_avx2;
    }
#endif
    return dequant_portable;
}

void si_dequantize_u8_serial(const uint8_t *q, int64_t n, float scale, int32_t zero, float *x) {
    if (n > 0) dequant_active()(q, n, scale, zero, x);
}

void si_dequantize_u8(const uint8_t *q, int64_t n, float scale, int32_t zero, float *x) {
    if (n <= 0) return;
    const dequant_fn fn = dequant_active();
    const int nt = threads_for(n * 4, n / 64);
    if (nt <= 1) { fn(q, n, scale, zero, x); return; }
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), k = omp_get_num_threads();
        const int64_t a = n * t / k / 64 * 64, b = t == k - 1 ? n : n * (t + 1) / k / 64 * 64;
        fn(q + a, b - a, scale, zero, x + a);
    }
}

/* ---- max pooling ----------------------------------------------------------------------
 * Output rows r = (sample, oh). "same" padding never wins: out-of-range taps are skipped,
 * and the maximum starts at 0, the least uint8 (every window holds an in-range tap). */

typedef void (*pool_fn)(const si_layer *L, const uint8_t *in, uint8_t *out, int64_t r0, int64_t r1);

SI_INLINE void maxpool_body(const si_layer *L, const uint8_t *restrict in, uint8_t *restrict out, int64_t r0,
                            int64_t r1) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t n = r / OH, oh = r % OH;
        for (int64_t ow = 0; ow < OW; ow++) {
            uint8_t *restrict o = out + ((n * OH + oh) * OW + ow) * C;
            memset(o, 0, (size_t)C);
            for (int i = 0; i < L->kh; i++) {
                const int64_t y = oh * L->sh - L->pad_top + i;
                if (y < 0 || y >= H) continue;
                for (int j = 0; j < L->kw; j++) {
                    const int64_t x = ow * L->sw - L->pad_left + j;
                    if (x < 0 || x >= W) continue;
                    const uint8_t *restrict px = in + ((n * H + y) * W + x) * C;
                    for (int64_t c = 0; c < C; c++) o[c] = px[c] > o[c] ? px[c] : o[c];
                }
            }
        }
    }
}
static void maxpool_portable(const si_layer *L, const uint8_t *in, uint8_t *out, int64_t r0, int64_t r1) {
    maxpool_body(L, in, out, r0, r1);
}
#if SI_X86
SI_TARGET_AVX2 static void maxpool_avx2(const si_layer *L, const uint8_t *in, uint8_t *out, int64_t r0, int64_t r1) {
    maxpool_body(L, in, out, r0, r1);
}
SI_TARGET_AVX512 static void maxpool_avx512(const si_layer *L, const uint8_t *in, uint8_t *out, int64_t r0,
                                            int64_t r1) {
    maxpool_body(L, in, out, r0, r1);
}
#endif

void si_maxpool_u8(const si_layer *L, const uint8_t *in, int batch, uint8_t *out) {
    const int64_t rows = (int64_t)batch * L->out_h;
    if (rows <= 0) return;
    pool_fn fn = maxpool_portable;
#if SI_X86
    if (!si_use_reference) {
        const si_isa isa = si_isa_active();
        if (isa >= SI_ISA_AVX512) fn = maxpool_avx512;
        else if (isa == SI_ISA_AVX2) fn = maxpool_avx2;
    }
#endif
    const int nt = threads_for((int64_t)batch * L->in_h * L->in_w * L->in_c, rows);
    if (nt <= 1) { fn(L, in, out, 0, rows); return; }
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), k = omp_get_num_threads();
        fn(L, in, out, rows * t / k, rows * (t + 1) / k);
    }
}

/* ---- im2col ---------------------------------------------------------------------------
 * One row per output position, columns in (kernel row, kernel column, channel) order as
 * ops/si_im2col.c; a kernel row inside the image is one contiguous run of kw * in_c bytes. */

typedef void (*im2col_fn)(const si_layer *L, const uint8_t *in, int64_t p0, int64_t m, uint8_t *col, int64_t ldc,
                          uint8_t zero);

/* Short runs (LeNet-5's conv1: 5 bytes per kernel row, 184,320 of them at batch 64) as one
 * masked vector move rather than a call to memcpy; masked-out bytes are neither read nor
 * written, so nothing past the input or the row is touched. */
typedef void (*copy8_fn)(uint8_t *d, const uint8_t *s, int64_t n);
/* Runs of 4 to 16 bytes (VGG19's block1_conv1: 9, one per kernel row) as two overlapping
 * fixed-size moves, inline, rather than a call to memcpy (a tenth of that layer's int8 time
 * under the AVX2 cap). */
SI_INLINE void copy_call(uint8_t *d, const uint8_t *s, int64_t n) {
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else
        memcpy(d, s, (size_t)n);
}
#if SI_X86
SI_TARGET_AVX512 SI_INLINE void copy_avx512(uint8_t *d, const uint8_t *s, int64_t n) {
    if (n > 64) { memcpy(d, s, (size_t)n); return; }
    const __mmask64 k = n == 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
    _mm512_mask_storeu_epi8(d, k, _mm512_maskz_loadu_epi8(k, s));
}
#endif

SI_INLINE void im2col_body_c(const si_layer *L, const uint8_t *in, int64_t p0, int64_t m, uint8_t *col, int64_t ldc,
                             uint8_t zero, copy8_fn copy) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    const int64_t run = L->kw * C;
    int64_t n = p0 / (OH * OW), oh = p0 % (OH * OW) / OW, ow = p0 % OW - 1;
    for (int64_t r = 0; r < m; r++) {
        if (++ow == OW) { ow = 0; if (++oh == OH) { oh = 0; n++; } }
        uint8_t *dst = col + r * ldc;
        const int64_t x0 = ow * L->sw - L->pad_left;
        for (int i = 0; i < L->kh; i++) {
            const int64_t y = oh * L->sh - L->pad_top + i;
            uint8_t *d = dst + i * run;
            if (y < 0 || y >= H) { memset(d, zero, (size_t)run); continue; }
            const uint8_t *src = in + ((n * H + y) * W) * C;
            if (x0 >= 0 && x0 + L->kw <= W) { copy(d, src + x0 * C, run); continue; }
            for (int j = 0; j < L->kw; j++) {
                const int64_t x = x0 + j;
                if (x < 0 || x >= W) memset(d + j * C, zero, (size_t)C);
                else copy(d + j * C, src + x * C, C);
            }
        }
    }
}
SI_INLINE void im2col_body(const si_layer *L, const uint8_t *in, int64_t p0, int64_t m, uint8_t *col, int64_t ldc,
                           uint8_t zero) {
    im2col_body_c(L, in, p0, m, col, ldc, zero, copy_call);
}
static void im2col_portable(const si_layer *L, const uint8_t *in, int64_t p0, int64_t m, uint8_t *col, int64_t ldc,
                            uint8_t zero) {
    im2col_body(L, in, p0, m, col, ldc, zero);
}

#if SI_X86
SI_TARGET_AVX512 static void im2col_avx512(const si_layer *L, const uint8_t *in, int64_t p0, int64_t m, uint8_t *col,
                                           int64_t ldc, uint8_t zero) {
    im2col_body_c(L, in, p0, m, col, ldc, zero, copy_avx512);
}
#endif

/* Rows [p0, p0 + m) on the caller's thread, for kernel rows of at most 16 bytes (the first
 * layer of an RGB network: 3 x 3 = 9): each kernel row inside the image is one 16-byte move
 * (a plain load and store, SSE2 on every x86-64), each one outside a 16-byte store of the
 * zero point, in increasing address order, so the 16 - kw * C bytes each writes past its run
 * are written again by the run after it; only the last row's spill (at most 16 bytes) lands
 * past col's m rows, which the caller provides. A load that would pass in_end (the input's
 * last byte + 1) copies its run exactly; a window that crosses the left or right border is the
 * zero point's 16 bytes, then its taps inside the image byte by byte. The rows come out equal
 * to si_im2col_u8's (ldc == kh * kw * C). */
void si_im2col_u8_short(const si_layer *L, const uint8_t *in, const uint8_t *in_end, int64_t p0, int64_t m,
                        uint8_t *col, uint8_t zero) {
    /* the geometry in locals: the byte stores may alias *L, which the compiler would reload */
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    const int64_t kh = L->kh, kw = L->kw, sh = L->sh, sw = L->sw, pt = L->pad_top, pl = L->pad_left;
    const int64_t run = kw * C, ldc = kh * run;
    uint8_t zv[16];
    memset(zv, zero, sizeof zv);
    for (int64_t r = 0; r < m;) {
        /* the positions of one output row: [ow0, ow1) */
        const int64_t p = p0 + r, n = p / (OH * OW), oh = p % (OH * OW) / OW, ow0 = p % OW;
        const int64_t ow1 = ow0 + (m - r < OW - ow0 ? m - r : OW - ow0);
        const uint8_t *img = in + n * H * W * C;
        for (int64_t ow = ow0; ow < ow1; ow++, r++) {
            uint8_t *d = col + r * ldc;
            const int64_t x0 = ow * sw - pl;
            const int border = x0 < 0 || x0 + kw > W;
            for (int64_t i = 0; i < kh; i++, d += run) {
                const int64_t y = oh * sh - pt + i;
                if (y < 0 || y >= H) { memcpy(d, zv, 16); continue; }
                const uint8_t *src = img + (y * W + x0) * C;
                if (border) { /* the window crosses the left or right edge: the zero point, then the taps inside */
                    memcpy(d, zv, 16);
                    for (int64_t j = 0; j < kw; j++)
                        if (x0 + j >= 0 && x0 + j < W)
                            for (int64_t c = 0; c < C; c++) d[j * C + c] = src[j * C + c];
                } else if (src + 16 <= in_end) memcpy(d, src, 16);
                else memcpy(d, src, (size_t)run);
            }
        }
    }
}

void si_im2col_u8(const si_layer *L, const uint8_t *in, int64_t p0, int64_t m, uint8_t *col, int64_t ldc,
                  uint8_t zero) {
    if (m <= 0) return;
    /* memcpy and memset are the work; AVX-512 moves short runs with masked byte moves */
    im2col_fn fn = im2col_portable;
#if SI_X86
    if (!si_use_reference && si_isa_active() >= SI_ISA_AVX512) fn = im2col_avx512;
#endif
    int nt = si_num_threads();
    if (nt > m / IM2COL_ROWS_PER_THREAD) nt = (int)(m / IM2COL_ROWS_PER_THREAD);
    if (nt > 1 && m * L->cols < MIN_BYTES_PER_THREAD) nt = 1;
    if (nt <= 1 || omp_in_parallel()) { fn(L, in, p0, m, col, ldc, zero); return; } /* a caller's thread */
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), k = omp_get_num_threads();
        const int64_t a = m * t / k, b = m * (t + 1) / k;
        fn(L, in, p0 + a, b - a, col + a * ldc, ldc, zero);
    }
}
