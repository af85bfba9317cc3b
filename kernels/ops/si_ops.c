/* Bias + activation, max pooling, ReLU and softmax: the element-wise and pooling kernels
 * every entry shares. Each body is written once (always inline) and compiled three times,
 * for baseline x86-64, AVX2+FMA and AVX-512 (the compiler vectorises the channel loops for
 * each); si_dispatch.c picks one. The threaded drivers split positions or output rows
 * among si_num_threads() threads once a layer is big enough to pay for a parallel region.
 * Plain references sit beside them. */
#include "si_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include <omp.h>

#if SI_X86
#include <immintrin.h>
#endif

#define MIN_FLOATS_PER_THREAD (INT64_C(1) << 15)   /* 128 KB: below this one thread is faster */

static int threads_for_floats(int64_t n, int64_t parts) {
    int nt = si_num_threads();
    int64_t by = n / MIN_FLOATS_PER_THREAD;
    if (by < 1) by = 1;
    if (nt > by) nt = (int)by;
    if (nt > parts) nt = (int)(parts < 1 ? 1 : parts);
    return nt;
}

/* ---- bias + activation -------------------------------------------------------------- */

SI_INLINE void bias_act_body(float *restrict out, const float *restrict bias, int64_t n, int act, int64_t p0,
                             int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
        float *restrict o = out + p * n;
        if (bias && act == SI_ACT_RELU)
            for (int64_t j = 0; j < n; j++) { float v = o[j] + bias[j]; o[j] = v > 0.0f ? v : 0.0f; }
        else if (bias)
            for (int64_t j = 0; j < n; j++) o[j] += bias[j];
        else if (act == SI_ACT_RELU)
            for (int64_t j = 0; j < n; j++) o[j] = o[j] > 0.0f ? o[j] : 0.0f;
    }
}
void si_bias_act_rows_portable(float *out, const float *bias, int64_t n, int act, int64_t p0, int64_t p1) {
    bias_act_body(out, bias, n, act, p0, p1);
}
SI_TARGET_AVX2 void si_bias_act_rows_avx2(float *out, const float *bias, int64_t n, int act, int64_t p0, int64_t p1) {
    bias_act_body(out, bias, n, act, p0, p1);
}
SI_TARGET_AVX512 void si_bias_act_rows_avx512(float *out, const float *bias, int64_t n, int act, int64_t p0,
                                              int64_t p1) {
    bias_act_body(out, bias, n, act, p0, p1);
}

void si_bias_act(const si_layer *L, float *out, int64_t positions) {
    const int64_t n = L->rows;
    const int relu = L->act == SI_ACT_RELU;
    if (L->bias || relu) {
        const int nt = threads_for_floats(positions * n, positions);
        void (*fn)(float *, const float *, int64_t, int, int64_t, int64_t) = si_k->bias_act_rows;
        if (nt <= 1) fn(out, L->bias, n, L->act, 0, positions);
        else {
#pragma omp parallel num_threads(nt)
            {
                int t = omp_get_thread_num(), k = omp_get_num_threads();
                fn(out, L->bias, n, L->act, positions * t / k, positions * (t + 1) / k);
            }
        }
    }
    if (L->act == SI_ACT_SOFTMAX) si_softmax_rows(out, positions, n);
}

void si_bias_act_ref(const si_layer *L, float *out, int64_t positions) {
    const int64_t n = L->rows;
    for (int64_t p = 0; p < positions; p++)
        for (int64_t j = 0; j < n; j++) {
            float v = out[p * n + j] + (L->bias ? L->bias[j] : 0.0f);
            out[p * n + j] = L->act == SI_ACT_RELU && v < 0.0f ? 0.0f : v;
        }
    if (L->act == SI_ACT_SOFTMAX) si_softmax_rows(out, positions, n);
}

/* ---- max pooling ---------------------------------------------------------------------
 * Output rows r = (sample, oh). "same" padding counts as -inf: out-of-range taps are
 * skipped, and every window holds at least one in-range tap by TensorFlow's rule. */

SI_INLINE void maxpool_body(const si_layer *L, const float *restrict in, float *restrict out, int64_t r0, int64_t r1) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t n = r / OH, oh = r % OH;
        for (int64_t ow = 0; ow < OW; ow++) {
            float *restrict o = out + ((n * OH + oh) * OW + ow) * C;
            for (int64_t c = 0; c < C; c++) o[c] = -FLT_MAX;
            for (int i = 0; i < L->kh; i++) {
                int64_t y = oh * L->sh - L->pad_top + i;
                if (y < 0 || y >= H) continue;
                for (int j = 0; j < L->kw; j++) {
                    int64_t x = ow * L->sw - L->pad_left + j;
                    if (x < 0 || x >= W) continue;
                    const float *restrict px = in + ((n * H + y) * W + x) * C;
                    for (int64_t c = 0; c < C; c++) o[c] = px[c] > o[c] ? px[c] : o[c];
                }
            }
        }
    }
}
void si_maxpool_rows_portable(const si_layer *L, const float *in, float *out, int64_t r0, int64_t r1) {
    maxpool_body(L, in, out, r0, r1);
}
SI_TARGET_AVX2 void si_maxpool_rows_avx2(const si_layer *L, const float *in, float *out, int64_t r0, int64_t r1) {
    maxpool_body(L, in, out, r0, r1);
}
SI_TARGET_AVX512 void si_maxpool_rows_avx512(const si_layer *L, const float *in, float *out, int64_t r0, int64_t r1) {
    maxpool_body(L, in, out, r0, r1);
}

void si_maxpool_forward(const si_layer *L, const float *in, int batch, float *out) {
    if (si_use_reference) { si_maxpool_ref(L, in, batch, out); return; }
    const int64_t rows = (int64_t)batch * L->out_h;
    const int nt = threads_for_floats((int64_t)batch * L->in_h * L->in_w * L->in_c, rows);
    void (*fn)(const si_layer *, const float *, float *, int64_t, int64_t) = si_k->maxpool_rows;
    if (nt <= 1) { fn(L, in, out, 0, rows); return; }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), k = omp_get_num_threads();
        fn(L, in, out, rows * t / k, rows * (t + 1) / k);
    }
}

void si_maxpool_ref(const si_layer *L, const float *in, int batch, float *out) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    for (int n = 0; n < batch; n++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                for (int64_t c = 0; c < C; c++) {
                    float m = -FLT_MAX;
                    for (int i = 0; i < L->kh; i++)
                        for (int j = 0; j < L->kw; j++) {
                            int64_t y = oh * L->sh - L->pad_top + i, x = ow * L->sw - L->pad_left + j;
                            if (y >= 0 && y < H && x >= 0 && x < W && in[((n * H + y) * W + x) * C + c] > m)
                                m = in[((n * H + y) * W + x) * C + c];
                        }
                    out[((n * OH + oh) * OW + ow) * C + c] = m;
                }
}

/* ---- standalone activations (rare: most are fused into the layer above) --------------- */

void si_relu_inplace(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void si_softmax_rows(float *x, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        float *v = x + r * cols, mx = v[0];
        for (int64_t j = 1; j < cols; j++) mx = v[j] > mx ? v[j] : mx;
        double sum = 0;
        for (int64_t j = 0; j < cols; j++) { v[j] = expf(v[j] - mx); sum += v[j]; }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < cols; j++) v[j] *= inv;
    }
}

/* ---- transpose with bias + activation ---------------------------------------------------
 * dst[c * ldd + r] = act(src[r * lds + c] + bias[r]) for r < rows, c < cols (bias may be
 * NULL; act: SI_ACT_RELU or none). The layout changes of conv_sparse_batch: NHWC samples to
 * sample-innermost planes, and its filters x samples tiles back to NHWC. The vector variants
 * transpose 8 x 8 blocks in registers (unpack, shuffle, 128-bit permute); the AVX-512 one
 * uses the same blocks (its stores are 8 floats wide either way). */

SI_INLINE float bias_act1(float v, const float *bias, int64_t r, int act) {
    if (bias) v += bias[r];
    return act == SI_ACT_RELU && v < 0.0f ? 0.0f : v;
}

SI_INLINE void transpose_edges(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd,
                               const float *bias, int act, int64_t r8, int64_t c8) {
    /* the rows past r8 (every column) and the columns past c8 (rows below r8) */
    for (int64_t r = r8; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[c * ldd + r] = bias_act1(src[r * lds + c], bias, r, act);
    for (int64_t r = 0; r < r8; r++)
        for (int64_t c = c8; c < cols; c++) dst[c * ldd + r] = bias_act1(src[r * lds + c], bias, r, act);
}

void si_transpose_portable(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd,
                           const float *bias, int act) {
    for (int64_t r0 = 0; r0 < rows; r0 += 8) /* blocks of 8 x 8: each cache line read once */
        for (int64_t c0 = 0; c0 < cols; c0 += 8)
            for (int64_t c = c0; c < c0 + 8 && c < cols; c++)
                for (int64_t r = r0; r < r0 + 8 && r < rows; r++)
                    dst[c * ldd + r] = bias_act1(src[r * lds + c], bias, r, act);
}

#if SI_X86
SI_TARGET_AVX2 SI_INLINE void transpose_8x8_body(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd,
                                  const float *bias, int act) {
    const int64_t r8 = rows & ~(int64_t)7, c8 = cols & ~(int64_t)7;
    const __m256 zero = _mm256_setzero_ps();
    /* columns (dst rows) outer: each dst row is written front to back in 32-byte steps, so
     * its cache lines fill before they leave L1 (dst rows a multiple of 1 KB apart, as NHWC
     * samples often are, share a few L1 sets) */
    for (int64_t c = 0; c < c8; c += 8) {
        for (int64_t r = 0; r < r8; r += 8) {
            const __m256 b = bias ? _mm256_loadu_ps(bias + r) : zero;
            const float *s = src + r * lds + c;
            __m256 x0 = _mm256_loadu_ps(s), x1 = _mm256_loadu_ps(s + lds);
            __m256 x2 = _mm256_loadu_ps(s + 2 * lds), x3 = _mm256_loadu_ps(s + 3 * lds);
            __m256 x4 = _mm256_loadu_ps(s + 4 * lds), x5 = _mm256_loadu_ps(s + 5 * lds);
            __m256 x6 = _mm256_loadu_ps(s + 6 * lds), x7 = _mm256_loadu_ps(s + 7 * lds);
            __m256 t0 = _mm256_unpacklo_ps(x0, x1), t1 = _mm256_unpackhi_ps(x0, x1);
            __m256 t2 = _mm256_unpacklo_ps(x2, x3), t3 = _mm256_unpackhi_ps(x2, x3);
            __m256 t4 = _mm256_unpacklo_ps(x4, x5), t5 = _mm256_unpackhi_ps(x4, x5);
            __m256 t6 = _mm256_unpacklo_ps(x6, x7), t7 = _mm256_unpackhi_ps(x6, x7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 y[8] = {
                _mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31),
            };
            for (int q = 0; q < 8; q++) {
                __m256 v = _mm256_add_ps(y[q], b);
                if (act == SI_ACT_RELU) v = _mm256_max_ps(v, zero);
                _mm256_storeu_ps(dst + (c + q) * ldd + r, v);
            }
        }
    }
    transpose_edges(src, lds, rows, cols, dst, ldd, bias, act, r8, c8);
}

SI_TARGET_AVX2 void si_transpose_avx2(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst,
                                      int64_t ldd, const float *bias, int act) {
    transpose_8x8_body(src, lds, rows, cols, dst, ldd, bias, act);
}
SI_TARGET_AVX512 void si_transpose_avx512(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst,
                                          int64_t ldd, const float *bias, int act) {
    transpose_8x8_body(src, lds, rows, cols, dst, ldd, bias, act);
}
#else
void si_transpose_avx2(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd,
                       const float *bias, int act) {
    si_transpose_portable(src, lds, rows, cols, dst, ldd, bias, act);
}
void si_transpose_avx512(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd,
                         const float *bias, int act) {
    si_transpose_portable(src, lds, rows, cols, dst, ldd, bias, act);
}
#endif

void si_transpose_ref(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd,
                      const float *bias, int act) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float v = src[r * lds + c] + (bias ? bias[r] : 0.0f);
            dst[c * ldd + r] = act == SI_ACT_RELU && v < 0.0f ? 0.0f : v;
        }
}

/* ---- tile pooling (conv/si_conv_sparse_batch.c) -----------------------------------------
 * The max over each pool window of a samples-innermost tile, then bias and activation, which
 * commute with the max (the bias is per filter, ReLU is monotone). Vectors run over the
 * samples, so the window's max is one vmaxps per vector and position. */
void si_tile_pool_portable(const float *tile, int64_t w, int64_t F, int pkh, int pkw, int nb, const float *bias,
                           int act, float *dst, int64_t ldd) {
    const int64_t cw = w * pkw;
    for (int64_t t = 0; t < w; t++)
        for (int64_t r = 0; r < F; r++) {
            float m[SI_PANEL];
            memcpy(m, tile + (t * pkw * F + r) * SI_PANEL, sizeof(float) * (size_t)nb);
            for (int dy = 0; dy < pkh; dy++)
                for (int dx = 0; dx < pkw; dx++) {
                    const float *v = tile + ((dy * cw + t * pkw + dx) * F + r) * SI_PANEL;
                    for (int j = 0; j < nb; j++) m[j] = v[j] > m[j] ? v[j] : m[j];
                }
            const float b = bias ? bias[r] : 0.0f;
            float *d = dst + (t * F + r) * ldd;
            for (int j = 0; j < nb; j++) {
                const float x = m[j] + b;
                d[j] = act == SI_ACT_RELU && x < 0.0f ? 0.0f : x;
            }
        }
}

#if SI_X86
#define TILE_POOL(NAME, TARGET, VEC, W, LOAD, STORE, MAX, ADD, SET1, ZERO)                                      \
    TARGET void NAME(const float *tile, int64_t w, int64_t F, int pkh, int pkw, int nb, const float *bias,         \
                     int act, float *dst, int64_t ldd) {                                                         \
        if (nb % (W)) { si_tile_pool_portable(tile, w, F, pkh, pkw, nb, bias, act, dst, ldd); return; }        \
        const int64_t cw = w * pkw;                                                                              \
        const int nv = nb / (W);                                                                                 \
        const VEC zero = ZERO();                                                                                 \
        for (int64_t t = 0; t < w; t++)                                                                          \
            for (int64_t r = 0; r < F; r++) {                                                                    \
                const VEC b = SET1(bias ? bias[r] : 0.0f);                                                       \
                float *d = dst + (t * F + r) * ldd;                                                              \
                const float *s0 = tile + (t * pkw * F + r) * SI_PANEL;                                           \
                for (int v = 0; v < nv; v++) {                                                                   \
                    VEC m;                                                                                       \
                    if (pkh == 2 && pkw == 2) /* LeNet-5's pools: no loop over the window */                     \
                        m = MAX(MAX(LOAD(s0 + (W) * v), LOAD(s0 + F * SI_PANEL + (W) * v)),                      \
                                MAX(LOAD(s0 + cw * F * SI_PANEL + (W) * v),                                      \
                                    LOAD(s0 + (cw + 1) * F * SI_PANEL + (W) * v)));                              \
                    else {                                                                                       \
                        m = LOAD(s0 + (W) * v);                                                                  \
                        for (int dy = 0; dy < pkh; dy++)                                                         \
                            for (int dx = 0; dx < pkw; dx++)                                                     \
                                m = MAX(m, LOAD(s0 + (dy * cw + dx) * F * SI_PANEL + (W) * v));                  \
                    }                                                                                            \
                    m = ADD(m, b);                                                                               \
                    if (act == SI_ACT_RELU) m = MAX(m, zero);                                                    \
                    STORE(d + (W) * v, m);                                                                       \
                }                                                                                                \
            }                                                                                                    \
    }
TILE_POOL(si_tile_pool_avx512, SI_TARGET_AVX512, __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_max_ps,
          _mm512_add_ps, _mm512_set1_ps, _mm512_setzero_ps)
TILE_POOL(si_tile_pool_avx2, SI_TARGET_AVX2, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_max_ps,
          _mm256_add_ps, _mm256_set1_ps, _mm256_setzero_ps)
#else
void si_tile_pool_avx2(const float *tile, int64_t w, int64_t F, int pkh, int pkw, int nb, const float *bias, int act,
                       float *dst, int64_t ldd) {
    si_tile_pool_portable(tile, w, F, pkh, pkw, nb, bias, act, dst, ldd);
}
void si_tile_pool_avx512(const float *tile, int64_t w, int64_t F, int pkh, int pkw, int nb, const float *bias,
                         int act, float *dst, int64_t ldd) {
    si_tile_pool_portable(tile, w, F, pkh, pkw, nb, bias, act, dst, ldd);
}
#endif

/* ---- Winograd F(4x4, 3x3) tile transforms (conv/si_conv_winograd.c) --------------------
 * One C body, compiled per ISA by target attribute: the channels are the vector lanes, in
 * chunks of WINO_CB so a tile's 36 partial rows stay in L1 (9 KB). B^T and A^T (points 0,
 * 1, -1, 2, -1/2 and infinity, see conv/si_conv_winograd.c) are applied as their non-zero
 * terms, not as matrix products. */
#define WINO_CB 64
static const float wino_zeros[WINO_CB];

/* B^T applied to six values (scalars, or 16-float vectors: GCC's vector extension, which
 * each ISA's copy of the body lowers to its own registers). */
#define WINO_BT(T, d0, d1, d2, d3, d4, d5, o)         \
    do {                                              \
        (o)[0] = d0 + 1.5f * (d1 - d3) - 2.0f * d2 + d4; \
        (o)[1] = -d1 - 2.5f * d2 - 0.5f * d3 + d4;       \
        (o)[2] = d1 + 0.5f * d2 - 2.5f * d3 + d4;        \
        (o)[3] = 0.5f * (d3 - d1) - d2 + d4;             \
        (o)[4] = 2.0f * (d1 - d3) - d2 + d4;             \
        (o)[5] = d1 + 1.5f * (d2 - d4) - 2.0f * d3 + d5; \
    } while (0)
typedef float wino_v16 __attribute__((vector_size(64)));
/* unaligned vector load and store (macros: a function returning a vector would have an ABI) */
#define WV_LOAD(v, p) memcpy(&(v), (p), sizeof(wino_v16))
#define WV_STORE(p, v) memcpy((p), &(v), sizeof(wino_v16))

/* V[xi * ldv + c] = (B^T d B)[xi] for c < C; d[y * 6 + x] is input row (y, x) of the tile,
 * C floats, or NULL for padding. Channels go 16 at a time as vectors (the compiler had left
 * the strided stores into V scalar), the last C % 16 one by one. */
SI_INLINE void wino4_in_body(const float *const *d, int64_t C, float *V, int64_t ldv) {
    for (int64_t c0 = 0; c0 < C; c0 += WINO_CB) {
        const int64_t cb = C - c0 < WINO_CB ? C - c0 : WINO_CB, cv = cb / 16 * 16;
        float t[6][6][WINO_CB]; /* t[i][x] = (B^T d)[i][x] */
        for (int x = 0; x < 6; x++) {
            const float *p[6];
            for (int y = 0; y < 6; y++) p[y] = d[y * 6 + x] ? d[y * 6 + x] + c0 : wino_zeros;
            for (int64_t c = 0; c < cv; c += 16) {
                wino_v16 d0, d1, d2, d3, d4, d5, o[6];
                WV_LOAD(d0, p[0] + c); WV_LOAD(d1, p[1] + c); WV_LOAD(d2, p[2] + c);
                WV_LOAD(d3, p[3] + c); WV_LOAD(d4, p[4] + c); WV_LOAD(d5, p[5] + c);
                WINO_BT(wino_v16, d0, d1, d2, d3, d4, d5, o);
                for (int i = 0; i < 6; i++) WV_STORE(&t[i][x][c], o[i]);
            }
            for (int64_t c = cv; c < cb; c++) {
                const float d0 = p[0][c], d1 = p[1][c], d2 = p[2][c], d3 = p[3][c], d4 = p[4][c], d5 = p[5][c];
                float o[6];
                WINO_BT(float, d0, d1, d2, d3, d4, d5, o);
                for (int i = 0; i < 6; i++) t[i][x][c] = o[i];
            }
        }
        for (int i = 0; i < 6; i++) {
            float *v = V + (int64_t)i * 6 * ldv + c0;
            for (int64_t c = 0; c < cv; c += 16) {
                wino_v16 m0, m1, m2, m3, m4, m5, o[6];
                WV_LOAD(m0, &t[i][0][c]); WV_LOAD(m1, &t[i][1][c]); WV_LOAD(m2, &t[i][2][c]);
                WV_LOAD(m3, &t[i][3][c]); WV_LOAD(m4, &t[i][4][c]); WV_LOAD(m5, &t[i][5][c]);
                WINO_BT(wino_v16, m0, m1, m2, m3, m4, m5, o);
                for (int j = 0; j < 6; j++) WV_STORE(v + j * ldv + c, o[j]);
            }
            for (int64_t c = cv; c < cb; c++) {
                const float m0 = t[i][0][c], m1 = t[i][1][c], m2 = t[i][2][c], m3 = t[i][3][c], m4 = t[i][4][c],
                            m5 = t[i][5][c];
                float o[6];
                WINO_BT(float, m0, m1, m2, m3, m4, m5, o);
                for (int j = 0; j < 6; j++) v[j * ldv + c] = o[j];
            }
        }
    }
}

/* y[r * 4 + s][f] = act((A^T m A)[r][s] + bias[f]) for f < F, where m[xi * ldm + f] is the
 * tile's GEMM output; y[k] NULL: outside the output (bias may be NULL). pool: the 2x2 max
 * pool of that instead, y[i * 2 + j] its output (i, j) (the max of rows 2i, 2i + 1 and
 * columns 2j, 2j + 1 of the tile), a quarter of the stores and no pass over the full-size
 * output. */
SI_INLINE void wino4_out_body(const float *m, int64_t ldm, int64_t F, const float *bias, int act, float *const *y,
                              int pool) {
    for (int64_t f0 = 0; f0 < F; f0 += WINO_CB) {
        const int64_t fb = F - f0 < WINO_CB ? F - f0 : WINO_CB;
        float t[4][6][WINO_CB], o[16][WINO_CB]; /* t[r][x] = (A^T m)[r][x] */
        for (int x = 0; x < 6; x++) {
            const float *p = m + x * ldm + f0;
            for (int64_t f = 0; f < fb; f++) {
                const float m0 = p[0 * 6 * ldm + f], m1 = p[1 * 6 * ldm + f], m2 = p[2 * 6 * ldm + f],
                            m3 = p[3 * 6 * ldm + f], m4 = p[4 * 6 * ldm + f], m5 = p[5 * 6 * ldm + f];
                const float a = m1 + m2, b = m1 - m2;
                t[0][x][f] = m0 + a + m3 + m4;
                t[1][x][f] = b + 2.0f * m3 - 0.5f * m4;
                t[2][x][f] = a + 4.0f * m3 + 0.25f * m4;
                t[3][x][f] = b + 8.0f * m3 - 0.125f * m4 + m5;
            }
        }
        for (int r = 0; r < 4; r++)
            for (int64_t f = 0; f < fb; f++) {
                const float q0 = t[r][0][f], q1 = t[r][1][f], q2 = t[r][2][f], q3 = t[r][3][f], q4 = t[r][4][f],
                            q5 = t[r][5][f];
                const float a = q1 + q2, b = q1 - q2, z = bias ? bias[f0 + f] : 0.0f;
                float v0 = q0 + a + q3 + q4 + z, v1 = b + 2.0f * q3 - 0.5f * q4 + z;
                float v2 = a + 4.0f * q3 + 0.25f * q4 + z, v3 = b + 8.0f * q3 - 0.125f * q4 + q5 + z;
                if (act == SI_ACT_RELU) {
                    v0 = v0 > 0.0f ? v0 : 0.0f; v1 = v1 > 0.0f ? v1 : 0.0f;
                    v2 = v2 > 0.0f ? v2 : 0.0f; v3 = v3 > 0.0f ? v3 : 0.0f;
                }
                o[r * 4 + 0][f] = v0; o[r * 4 + 1][f] = v1; o[r * 4 + 2][f] = v2; o[r * 4 + 3][f] = v3;
            }
        if (!pool) {
            for (int k = 0; k < 16; k++)
                if (y[k]) memcpy(y[k] + f0, o[k], sizeof(float) * (size_t)fb);
            continue;
        }
        for (int k = 0; k < 4; k++) {
            if (!y[k]) continue;
            const float *a = o[(k / 2) * 8 + (k % 2) * 2], *b = a + WINO_CB, *c = a + 4 * WINO_CB, *d = c + WINO_CB;
            float p[WINO_CB];
            for (int64_t f = 0; f < fb; f++) {
                const float u = a[f] > b[f] ? a[f] : b[f], v = c[f] > d[f] ? c[f] : d[f];
                p[f] = u > v ? u : v;
            }
            memcpy(y[k] + f0, p, sizeof(float) * (size_t)fb);
        }
    }
}

void si_wino4_in_portable(const float *const *d, int64_t C, float *V, int64_t ldv) { wino4_in_body(d, C, V, ldv); }
void si_wino4_out_portable(const float *m, int64_t ldm, int64_t F, const float *bias, int act, float *const *y,
                           int pool) {
    wino4_out_body(m, ldm, F, bias, act, y, pool);
}
SI_TARGET_AVX2 void si_wino4_in_avx2(const float *const *d, int64_t C, float *V, int64_t ldv) {
    wino4_in_body(d, C, V, ldv);
}
SI_TARGET_AVX2 void si_wino4_out_avx2(const float *m, int64_t ldm, int64_t F, const float *bias, int act,
                                      float *const *y, int pool) {
    wino4_out_body(m, ldm, F, bias, act, y, pool);
}
SI_TARGET_AVX512 void si_wino4_in_avx512(const float *const *d, int64_t C, float *V, int64_t ldv) {
    wino4_in_body(d, C, V, ldv);
}
SI_TARGET_AVX512 void si_wino4_out_avx512(const float *m, int64_t ldm, int64_t F, const float *bias, int act,
                                          float *const *y, int pool) {
    wino4_out_body(m, ldm, F, bias, act, y, pool);
}
