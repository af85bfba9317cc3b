/* Sparse direct convolution with the samples innermost (batches > 1): a block of NB samples
 * (64, or 16 for small batches and large planes) is first rewritten as one zero-padded
 * image whose every pixel holds C channels of NB samples, [Hp][Wp][C][NB]; then every
 * non-zero filter weight (f, i, j, c) of output position (oh, ow) is one broadcast-FMA of w
 * over the NB samples at offset ((i * Wp + j) * C + c) * NB from the position's corner.
 *
 * Against the planar and tiled entries, which run their vectors over output positions of
 * one sample: no position is wasted (no padded columns, no 64-position tiles over a 8 x 8
 * output), every load is aligned to NB floats, and the same offsets serve every position,
 * stride or padding. The price is two transposes per layer, NHWC to samples-innermost and
 * each position's filters x samples tile back to NHWC, with the bias and the activation
 * fused into the second. Small layers with many samples gain most (LeNet-5 at batch 64);
 * at batch 1 it does not apply.
 *
 * The offsets are computed at load for both block sizes (the entry's state). The
 * microkernel is the planar one (csr_planar: tile[r][j] = sum val[k] * base[off[k] + j],
 * j < 64) and the transposes are si_k->transpose; the reference is the direct convolution
 * over the CSR non-zeros. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if SI_X86
#include <immintrin.h>
#endif

/* Floats one block's padded image may take: NB = 64 up to this, else 16, and the entry
 * does not apply past it at NB = 16 (VGG19's first blocks: 226 x 226 x 64 x 16 floats). */
#define PLANE_FLOATS (INT64_C(1) << 23) /* 32 MB */

typedef struct batch_state {
    int32_t *off16, *off64; /* per non-zero: ((i * Wp + j) * C + c) * NB */
    int64_t *bp;            /* (kh + 1) x F: bp[i * F + r], row r's first non-zero of kernel row >= i */
    float *bias;            /* the bias repeated once per position of a segment (NULL: none) */
    int64_t seg;            /* output positions of one row a thread computes and transposes at once */
    int64_t kr;             /* kernel rows per pass: their input for a block of positions fits L1 */
} batch_state;

/* Floats of one thread's tile of seg positions x F filters x 64 samples: about 128 KB, so it
 * stays in L2 between the accumulation and the transpose. */
#define TILE_FLOATS (INT64_C(1) << 15)

static int64_t padded_w(const si_layer *L) { return (L->out_w - 1) * L->sw + L->kw; }
static int64_t padded_h(const si_layer *L) { return (L->out_h - 1) * L->sh + L->kh; }
static int64_t pixels(const si_layer *L) { return padded_h(L) * padded_w(L) * L->in_c; }

static int batch_applies(const si_layer *L, int regime) {
    return L->type == SI_LAYER_CONV2D && regime == 1 && (double)pixels(L) * 16 <= (double)PLANE_FLOATS;
}

/* The samples of one block for a run of `batch`. */
static int block_samples(const si_layer *L, int batch) {
    return batch > 16 && pixels(L) * SI_PANEL <= PLANE_FLOATS ? SI_PANEL : 16;
}

static void batch_release(void *p) {
    batch_state *s = p;
    if (s) { si_free(s->off16); si_free(s->off64); si_free(s->bp); si_free(s->bias); free(s); }
}

static si_status_t batch_prepare(si_layer *L, void **out) {
    batch_state *s = calloc(1, sizeof *s);
    size_t n = (size_t)(L->nnz ? L->nnz : 1) * sizeof(int32_t);
    const int64_t F = L->rows, seg0 = TILE_FLOATS / (F * SI_PANEL);
    const int64_t seg = seg0 < 1 ? 1 : seg0 > L->out_w ? L->out_w : seg0;
    if (s) {
        s->off16 = si_alloc(n);
        s->off64 = si_alloc(n);
        s->bp = si_alloc(sizeof(int64_t) * (size_t)((L->kh + 1) * F));
        s->bias = L->bias ? si_alloc(sizeof(float) * (size_t)(seg * F)) : NULL;
        s->seg = seg;
        /* A block of csr_batch's (at most 6) positions reads ((6 - 1) * sw + kw) x C x 64 floats
         * per kernel row: as many kernel rows per pass as keep that within 32 KB (L1 of
         * Zen 3/4/5; 48 KB on Intel's recent cores). */
        const int64_t row_bytes = ((6 - 1) * L->sw + L->kw) * L->in_c * SI_PANEL * 4;
        s->kr = (32 << 10) / row_bytes;
        s->kr = s->kr < 1 ? 1 : s->kr > L->kh ? L->kh : s->kr;
    }
    if (!s || !s->off16 || !s->off64 || !s->bp || (L->bias && !s->bias)) {
        batch_release(s);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the batch offsets", L->name);
    }
    const int64_t C = L->in_c, Wp = padded_w(L);
    for (int64_t k = 0; k < L->nnz; k++) {
        int64_t kk = L->csr_col[k], c = kk % C, tap = kk / C, i = tap / L->kw, j = tap % L->kw;
        int64_t o = (i * Wp + j) * C + c; /* < pixels(L) <= 2^19 by batch_applies: o * 64 fits int32 */
        s->off16[k] = (int32_t)(o * 16);
        s->off64[k] = (int32_t)(o * SI_PANEL);
    }
    /* CSR columns run (i, j, c) in order, so each kernel row's non-zeros are one range. */
    for (int64_t r = 0; r < F; r++) {
        int64_t k = L->csr_ptr[r];
        for (int64_t i = 0; i <= L->kh; i++) {
            while (k < L->csr_ptr[r + 1] && L->csr_col[k] / (L->kw * C) < i) k++;
            s->bp[i * F + r] = k;
        }
        s->bp[L->kh * F + r] = L->csr_ptr[r + 1];
    }
    for (int64_t q = 0; s->bias && q < seg; q++) memcpy(s->bias + q * F, L->bias, sizeof(float) * (size_t)F);
    *out = s;
    return SI_OK;
}

static int64_t batch_bytes(const si_layer *L, const void *st) {
    const batch_state *s = st;
    return s ? 8 * L->nnz + 8 * (L->kh + 1) * L->rows + (s->bias ? 4 * s->seg * L->rows : 0) : 0;
}

/* Output positions (pooled ones when a pool is fused) of one work item, and the floats of
 * one thread's tile: the item's conv positions x F x 64. With a pool the tile may take twice
 * TILE_FLOATS (256 KB, still L2 on Zen 3's 512 KB): LeNet-5's conv2 then runs a whole pooled
 * row, 8 conv positions per conv row that AVX2's csr_batch takes as blocks of 3, 3 and 2
 * instead of two items of 2 + 2 (fewer accumulators per weight broadcast). */
static int64_t item_positions(const si_layer *L, const batch_state *s, const si_layer *pool) {
    if (!pool) return s->seg;
    int64_t q = 2 * TILE_FLOATS / ((int64_t)pool->kh * pool->kw * L->rows * SI_PANEL);
    q = q > s->seg ? s->seg : q; /* the repeated bias covers seg positions */
    return q < 1 ? 1 : q > pool->out_w ? pool->out_w : q;
}
static int64_t tile_floats(const si_layer *L, const batch_state *s, const si_layer *pool) {
    return item_positions(L, s, pool) * (pool ? (int64_t)pool->kh * pool->kw : 1) * L->rows * SI_PANEL;
}

static int64_t batch_ws(const si_layer *L, const void *st, int batch) {
    const batch_state *s = st;
    int64_t t = tile_floats(L, s, NULL), tp = L->pool ? tile_floats(L, s, L->pool) : 0;
    return pixels(L) * block_samples(L, batch) + (int64_t)si_max_threads() * (t > tp ? t : tp);
}

/* The int8 form's scratch past batch_ws: a block's NHWC input as floats, and per thread the
 * tile transposed to samples-outermost before its requantization into NHWC. */
static int64_t q_extra(const si_layer *L, const batch_state *s, int batch) {
    int64_t t = tile_floats(L, s, NULL), tp = L->pool ? tile_floats(L, s, L->pool) : 0;
    return L->in_h * L->in_w * L->in_c * block_samples(L, batch) + (int64_t)si_max_threads() * (t > tp ? t : tp) + 16;
}

/* The padded image of samples [n0, n0 + g) at NB floats per pixel channel: rows of padding
 * are zeroed, each input row is one g x (W * C) -> (W * C) x g transpose. Lanes g..NB of
 * a short block are zeroed once, so no lane ever holds garbage. */
static void build_image(const si_layer *L, const float *in, int g, int nb, float *img) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, Hp = padded_h(L), Wp = padded_w(L);
    const int64_t in_sample = H * W * C, row = Wp * C * nb;
    const int64_t left = L->pad_left < Wp ? L->pad_left : Wp;
    const int64_t wv = W < Wp - left ? W : Wp - left; /* input columns inside the padded width */
#pragma omp for schedule(static)
    for (int64_t py = 0; py < Hp; py++) {
        float *dst = img + py * row;
        const int64_t y = py - L->pad_top;
        if (y < 0 || y >= H || wv <= 0) { memset(dst, 0, sizeof(float) * (size_t)row); continue; }
        if (g < nb) memset(dst, 0, sizeof(float) * (size_t)row);
        else {
            memset(dst, 0, sizeof(float) * (size_t)(left * C * nb));
            memset(dst + (left + wv) * C * nb, 0, sizeof(float) * (size_t)((Wp - left - wv) * C * nb));
        }
        si_k->transpose(in + y * W * C, in_sample, g, wv * C, dst + left * C * nb, nb, NULL, SI_ACT_LINEAR);
    }
}

/* The padded image of a block that is already samples-innermost ([H][W][C][NB], the
 * previous layer's blocked output): row copies between zeroed padding. */
static void pad_image(const si_layer *L, const void *in, const si_batch_q *q, int nb, float *img) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, Hp = padded_h(L), Wp = padded_w(L), row = Wp * C * nb;
    const int64_t left = L->pad_left < Wp ? L->pad_left : Wp;
    const int64_t wv = W < Wp - left ? W : Wp - left;
#pragma omp for schedule(static)
    for (int64_t py = 0; py < Hp; py++) {
        float *dst = img + py * row;
        const int64_t y = py - L->pad_top;
        if (y < 0 || y >= H || wv <= 0) { memset(dst, 0, sizeof(float) * (size_t)row); continue; }
        memset(dst, 0, sizeof(float) * (size_t)(left * C * nb));
        if (q) /* uint8 minus the zero point (padding taps at 0 are the zero point's) */
            si_dequantize_u8_serial((const uint8_t *)in + y * W * C * nb, wv * C * nb, 1.0f, q->in_zero,
                                    dst + left * C * nb);
        else memcpy(dst + left * C * nb, (const float *)in + y * W * C * nb, sizeof(float) * (size_t)(wv * C * nb));
        memset(dst + (left + wv) * C * nb, 0, sizeof(float) * (size_t)((Wp - left - wv) * C * nb));
    }
}

/* A blocked input is the padded image itself when the convolution neither pads nor skips
 * input rows or columns (LeNet-5's valid convolutions). */
static int image_is_input(const si_layer *L) {
    return L->pad_top == 0 && L->pad_left == 0 && padded_h(L) == L->in_h && padded_w(L) == L->in_w;
}

/* ---- the int8 form's requantization (conv_sparse_batch_i8) ----------------------------
 * A sum plus zf[r] (q_in_zero times row r's weight sum) is the int32 sum of the int8 entries,
 * an integer below 2^24 in magnitude (conv_sparse_batch_i8 applies only then), so the float
 * add is exact and (float)acc of si_requant_f is that same value: the vector bodies compute
 * si_requant_f / si_requant_u8 bit for bit (the FMA once rounded, rounding half to even). */

typedef void (*q_rows_fn)(const si_batch_q *q, const float *y, int64_t n, int64_t F, void *out);
/* the tile's w (pooled) positions into a blocked output: out[(t * F + r) * nb + j] = rq_r(max
 * over the pkh x pkw window of t of tile[((dy * cw + t * pkw + dx) * F + r) * SI_PANEL + j]
 * + zf[r]), j < nb (the requantization is monotone: the max of the sums) */
typedef void (*q_lanes_fn)(const si_batch_q *q, const float *tile, int64_t w, int64_t F, int pkh, int pkw,
                           int64_t cw, int nb, void *out);

/* out[p * F + r] = rq_r(y[p * F + r] + zf[r]), p < n (one sample's positions, NHWC) */
static void q_rows_portable(const si_batch_q *q, const float *y, int64_t n, int64_t F, void *out) {
    const si_requant *rq = q->rq;
    for (int64_t p = 0; p < n; p++)
        for (int64_t r = 0; r < F; r++) {
            const float v = si_requant_f(rq, r, (int32_t)(y[p * F + r] + q->zf[r]));
            if (rq->out_u8) ((uint8_t *)out)[p * F + r] = si_requant_u8(rq, v);
            else ((float *)out)[p * F + r] = v;
        }
}

static void q_lanes_portable(const si_batch_q *q, const float *tile, int64_t w, int64_t F, int pkh, int pkw,
                             int64_t cw, int nb, void *out) {
    const si_requant *rq = q->rq;
    for (int64_t t = 0; t < w; t++)
        for (int64_t r = 0; r < F; r++)
            for (int j = 0; j < nb; j++) {
                float m = tile[(t * pkw * F + r) * SI_PANEL + j];
                for (int dy = 0; dy < pkh; dy++)
                    for (int dx = 0; dx < pkw; dx++) {
                        const float v = tile[((dy * cw + t * pkw + dx) * F + r) * SI_PANEL + j];
                        m = v > m ? v : m;
                    }
                const float y = si_requant_f(rq, r, (int32_t)(m + q->zf[r]));
                const int64_t o = (t * F + r) * nb + j;
                if (rq->out_u8) ((uint8_t *)out)[o] = si_requant_u8(rq, y);
                else ((float *)out)[o] = y;
            }
}

#if SI_X86
/* 8 sums requantized into out + o (n <= 8 of them) */
SI_TARGET_AVX2 static inline void q8_avx2(const si_requant *rq, __m256 v, __m256 mul, __m256 add, void *out,
                                          int64_t o, int n) {
    v = _mm256_fmadd_ps(v, mul, add);
    if (rq->act == SI_ACT_RELU) v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (rq->out_u8) {
        const __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v, _mm256_set1_ps(rq->inv_scale)),
                                                     _mm256_set1_ps((float)-rq->zero)),
                                       _mm256_set1_ps((float)(255 - rq->zero)));
        const __m256i qv = _mm256_add_epi32(_mm256_cvtps_epi32(t), _mm256_set1_epi32(rq->zero)); /* [0, 255] */
        const __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(qv), _mm256_extracti128_si256(qv, 1));
        const __m128i b = _mm_packus_epi16(h, h);
        if (n == 8) _mm_storel_epi64((__m128i *)((uint8_t *)out + o), b);
        else {
            uint64_t w = (uint64_t)_mm_cvtsi128_si64(b);
            for (int i = 0; i < n; i++, w >>= 8) ((uint8_t *)out)[o + i] = (uint8_t)w;
        }
    } else if (n == 8)
        _mm256_storeu_ps((float *)out + o, v);
    else
        _mm256_maskstore_ps((float *)out + o, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), v);
}

SI_TARGET_AVX2 static void q_rows_avx2(const si_batch_q *q, const float *y, int64_t n, int64_t F, void *out) {
    const si_requant *rq = q->rq;
    const int64_t F8 = F / 8 * 8;
    const int tail = (int)(F - F8);
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 tz = _mm256_maskload_ps(q->zf + F8, m), tm = _mm256_maskload_ps(rq->mul + F8, m);
    const __m256 ta = _mm256_maskload_ps(rq->add + F8, m);
    for (int64_t p = 0; p < n; p++) {
        const float *yp = y + p * F;
        for (int64_t r = 0; r < F8; r += 8)
            q8_avx2(rq, _mm256_add_ps(_mm256_loadu_ps(yp + r), _mm256_loadu_ps(q->zf + r)), _mm256_loadu_ps(rq->mul + r),
                    _mm256_loadu_ps(rq->add + r), out, p * F + r, 8);
        if (tail) q8_avx2(rq, _mm256_add_ps(_mm256_maskload_ps(yp + F8, m), tz), tm, ta, out, p * F + F8, tail);
    }
}

/* 16 sums of one channel requantized to uint8 at d: si_requant_f and si_requant_u8's steps (the
 * lower clamp, at -zero <= 0, left out after a ReLU, where it cannot act) */
SI_TARGET_AVX2 static inline void q16_u8_avx2(const si_requant *rq, __m256 v0, __m256 v1, __m256 mul, __m256 add,
                                              uint8_t *d) {
    const __m256 inv = _mm256_set1_ps(rq->inv_scale), hi = _mm256_set1_ps((float)(255 - rq->zero));
    const __m256i z = _mm256_set1_epi32(rq->zero);
    v0 = _mm256_mul_ps(_mm256_fmadd_ps(v0, mul, add), inv);
    v1 = _mm256_mul_ps(_mm256_fmadd_ps(v1, mul, add), inv);
    if (rq->act == SI_ACT_RELU) { /* max(y, 0) * inv = max(y * inv, 0) (inv > 0) */
        v0 = _mm256_max_ps(v0, _mm256_setzero_ps());
        v1 = _mm256_max_ps(v1, _mm256_setzero_ps());
    } else {
        const __m256 lo = _mm256_set1_ps((float)-rq->zero);
        v0 = _mm256_max_ps(v0, lo);
        v1 = _mm256_max_ps(v1, lo);
    }
    const __m256i q0 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(v0, hi)), z);
    const __m256i q1 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(v1, hi)), z);
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8); /* [0, 255]: exact packs */
    _mm_storeu_si128((__m128i *)d, _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
}

SI_TARGET_AVX2 static void q_lanes_avx2(const si_batch_q *q, const float *tile, int64_t w, int64_t F, int pkh,
                                        int pkw, int64_t cw, int nb, void *out) {
    const si_requant *rq = q->rq;
    for (int64_t t = 0; t < w; t++)
        for (int64_t r = 0; r < F; r++) {
            const __m256 z = _mm256_set1_ps(q->zf[r]), mul = _mm256_set1_ps(rq->mul[r]);
            const __m256 add = _mm256_set1_ps(rq->add[r]);
            const float *c = tile + (t * pkw * F + r) * SI_PANEL;
            const int64_t o = (t * F + r) * nb;
            for (int j = 0; j < nb; j += 16) { /* nb is 16 or 64 */
                __m256 a = _mm256_loadu_ps(c + j), b = _mm256_loadu_ps(c + j + 8);
                for (int dy = 0; dy < pkh; dy++)
                    for (int dx = dy == 0; dx < pkw; dx++) {
                        const float *e = c + ((dy * cw + dx) * F) * SI_PANEL + j;
                        a = _mm256_max_ps(a, _mm256_loadu_ps(e));
                        b = _mm256_max_ps(b, _mm256_loadu_ps(e + 8));
                    }
                a = _mm256_add_ps(a, z);
                b = _mm256_add_ps(b, z);
                if (rq->out_u8) q16_u8_avx2(rq, a, b, mul, add, (uint8_t *)out + o + j);
                else {
                    q8_avx2(rq, a, mul, add, out, o + j, 8);
                    q8_avx2(rq, b, mul, add, out, o + j + 8, 8);
                }
            }
        }
}

/* AVX-512: 16 lanes a vector, stored by one saturating narrowing (the values are in [0, 255]) */
SI_TARGET_AVX512 static void q_lanes_avx512(const si_batch_q *q, const float *tile, int64_t w, int64_t F, int pkh,
                                            int pkw, int64_t cw, int nb, void *out) {
    const si_requant *rq = q->rq;
    if (!rq->out_u8) { q_lanes_avx2(q, tile, w, F, pkh, pkw, cw, nb, out); return; }
    const __m512 inv = _mm512_set1_ps(rq->inv_scale), hi = _mm512_set1_ps((float)(255 - rq->zero));
    const __m512 lo = rq->act == SI_ACT_RELU ? _mm512_setzero_ps() : _mm512_set1_ps((float)-rq->zero);
    const __m512i zq = _mm512_set1_epi32(rq->zero);
    const int z0 = rq->zero == 0;
    for (int64_t t = 0; t < w; t++)
        for (int64_t r = 0; r < F; r++) {
            const __m512 z = _mm512_set1_ps(q->zf[r]), mul = _mm512_set1_ps(rq->mul[r]);
            const __m512 add = _mm512_set1_ps(rq->add[r]);
            const float *c = tile + (t * pkw * F + r) * SI_PANEL;
            uint8_t *d = (uint8_t *)out + (t * F + r) * nb;
            for (int j = 0; j < nb; j += 16) {
                __m512 a = _mm512_loadu_ps(c + j);
                for (int dy = 0; dy < pkh; dy++)
                    for (int dx = dy == 0; dx < pkw; dx++)
                        a = _mm512_max_ps(a, _mm512_loadu_ps(c + ((dy * cw + dx) * F) * SI_PANEL + j));
                /* si_requant_f then si_requant_u8: after a ReLU the clamp at max(0, -zero) = 0
                 * is the ReLU itself (max(y, 0) * inv = max(y * inv, 0), inv > 0) */
                a = _mm512_max_ps(_mm512_mul_ps(_mm512_fmadd_ps(_mm512_add_ps(a, z), mul, add), inv), lo);
                /* at zero point 0 the unsigned narrowing is the upper clamp: t >= 255 (or past
                 * 2^31, which converts to 0x80000000) saturates to 255 as the clamp then the
                 * rounding would; t in [254.5, 255) rounds to 255 either way */
                const __m512i qv = z0 ? _mm512_cvtps_epi32(a) : _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(a, hi)), zq);
                _mm_storeu_si128((__m128i *)(d + j), _mm512_cvtusepi32_epi8(qv));
            }
        }
}
#endif

static q_rows_fn q_rows_active(void) {
#if SI_X86
    if (!si_use_reference && si_isa_active() >= SI_ISA_AVX2) return q_rows_avx2;
#endif
    return q_rows_portable;
}

/* Each work item is a segment of one output row (with a pool: of one pooled row, over the
 * pool's kh conv rows). For as many kernel rows at a time as keep their input in L1 (kr),
 * csr_batch accumulates every conv position of the segment in blocks of positions that
 * share each weight's broadcast. A fused pool takes the max of each window in the tile
 * (tile_pool, vectors over the samples); the bias and the activation commute with the max.
 * Then the tile goes out: one transpose to NHWC, with the bias and the activation, or, for
 * a blocked output, tile_pool's copy with them. Fusing the pool saves writing and reading
 * the conv's whole output (LeNet-5's conv1 at batch 64: 2.9 MB); the blocked layout saves
 * the transposes on both sides. */
static void batch_forward(const si_layer *L, const batch_state *s, const si_layer *pool, const void *in, int in_nb,
                          int batch, void *out, int out_nb, float *ws, const si_batch_q *q) {
    const int64_t F = L->rows, Wp = padded_w(L), C = L->in_c;
    const int64_t rows = pool ? pool->out_h : L->out_h, cols = pool ? pool->out_w : L->out_w;
    const int pkh = pool ? pool->kh : 1, pkw = pool ? pool->kw : 1;
    const int64_t seg = item_positions(L, s, pool), nseg = (cols + seg - 1) / seg, tf = tile_floats(L, s, pool);
    const int nb = block_samples(L, batch);
    const int32_t *off = nb == SI_PANEL ? s->off64 : s->off16;
    const int64_t in_sample = L->in_h * L->in_w * C, out_sample = rows * cols * F;
    float *tiles = ws + pixels(L) * nb;
    const int act = L->act == SI_ACT_RELU ? SI_ACT_RELU : SI_ACT_LINEAR;
    const int nt = si_threads_for((L->nnz + F) * L->out_h * L->out_w * batch, si_max_threads());
    /* int8 (q): uint8 in and out, elements of esz bytes out; the NHWC input of a block as
     * floats in xs, and per thread a tile's samples-outermost copy in its slot of scr */
    const size_t isz = q ? 1 : sizeof(float), esz = q && q->rq->out_u8 ? 1 : sizeof(float);
    float *xs = tiles + (int64_t)si_max_threads() * tf, *scr = xs + in_sample * nb;
    const q_rows_fn q_rows = q_rows_active();
    q_lanes_fn q_lanes = q_lanes_portable;
#if SI_X86
    if (!si_use_reference && si_isa_active() >= SI_ISA_AVX2) q_lanes = q_lanes_avx2;
    if (!si_use_reference && si_isa_active() >= SI_ISA_AVX512) q_lanes = q_lanes_avx512;
#endif
    for (int n0 = 0; n0 < batch; n0 += nb) {
        const int g = batch - n0 < nb ? batch - n0 : nb;
        /* n0 / nb blocks of nb * in_sample */
        const void *blk = in_nb ? (const char *)in + (size_t)n0 * in_sample * isz : NULL;
        const float *img = blk && image_is_input(L) && !q ? (const float *)blk : ws;
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            /* each ends in a barrier */
            if (!in_nb && q) {
#pragma omp for schedule(static)
                for (int j = 0; j < g; j++)
                    si_dequantize_u8_serial((const uint8_t *)in + (int64_t)(n0 + j) * in_sample, in_sample, 1.0f,
                                            q->in_zero, xs + (int64_t)j * in_sample);
            }
            if (!in_nb) build_image(L, q ? xs : (const float *)in + (int64_t)n0 * in_sample, g, nb, ws);
            else if (img == ws) pad_image(L, blk, q, nb, ws);
            float *tile = tiles + (int64_t)omp_get_thread_num() * tf;
            /* static: each thread a run of consecutive rows, whose input rows overlap (the
             * previous item's are still in its caches) and which a static producer wrote
             * from the same core; items take equal work. Against dynamic, 1: LeNet-5 Han at
             * batch 64, 2 threads, SPR: 0.49-0.52 -> 0.435-0.46 ms under the AVX2 cap,
             * 0.37 -> 0.33 ms at AVX-512 (conv1 and conv2 about 10% each). */
#pragma omp for schedule(static)
            for (int64_t item = 0; item < rows * nseg; item++) {
                const int64_t r0 = item / nseg, c0 = item % nseg * seg, w = cols - c0 < seg ? cols - c0 : seg;
                const int64_t cw = w * pkw; /* conv positions of one conv row of the item */
                for (int dy = 0; dy < pkh; dy++) {
                    const int64_t oh = r0 * pkh + dy, ow0 = c0 * pkw;
                    const float *corner = img + ((oh * L->sh) * Wp + ow0 * L->sw) * C * nb;
                    float *t = tile + dy * cw * F * SI_PANEL;
                    for (int64_t i = 0; i < L->kh; i += s->kr) {
                        const int64_t i1 = i + s->kr < L->kh ? i + s->kr : L->kh;
                        si_k->csr_batch(L->csr_val, off, s->bp + i * F, s->bp + i1 * F, 0, F, corner, L->sw * C * nb,
                                        (int)cw, nb, t, F * SI_PANEL, i > 0);
                    }
                }
                if (q) { /* the sums (their pool's max: the requantization is monotone) requantized */
                    if (out_nb)
                        q_lanes(q, tile, w, F, pkh, pkw, cw, nb,
                                (char *)out + ((int64_t)n0 * out_sample + (r0 * cols + c0) * F * nb) * esz);
                    else {
                        if (pool) si_k->tile_pool(tile, w, F, pkh, pkw, nb, NULL, SI_ACT_LINEAR, tile, SI_PANEL);
                        float *t = scr + (int64_t)omp_get_thread_num() * tf;
                        si_k->transpose(tile, SI_PANEL, w * F, g, t, w * F, NULL, SI_ACT_LINEAR);
                        for (int j = 0; j < g; j++)
                            q_rows(q, t + (int64_t)j * w * F, w, F,
                                   (char *)out + ((int64_t)(n0 + j) * out_sample + (r0 * cols + c0) * F) * esz);
                    }
                } else if (out_nb) /* blocks of nb samples, this one at n0 * out_sample */
                    si_k->tile_pool(tile, w, F, pkh, pkw, nb, L->bias, act,
                                    (float *)out + ((int64_t)n0 * out_sample + (r0 * cols + c0) * F * nb), nb);
                else {
                    if (pool) si_k->tile_pool(tile, w, F, pkh, pkw, nb, NULL, SI_ACT_LINEAR, tile, SI_PANEL);
                    si_k->transpose(tile, SI_PANEL, w * F, g,
                                    (float *)out + (int64_t)n0 * out_sample + (r0 * cols + c0) * F, out_sample,
                                    s->bias, act);
                }
            }
        }
    }
    if (L->act == SI_ACT_SOFTMAX && !q) si_softmax_rows(out, (int64_t)batch * rows * cols, F);
}

static void batch_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    batch_forward(L, st, NULL, in, 0, batch, out, 0, ws, NULL);
}

static void batch_run_pool(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    batch_forward(L, st, L->pool, in, 0, batch, out, 0, ws, NULL);
}

static void batch_run_blocked(const si_layer *L, const void *st, const float *in, int in_nb, int batch, float *out,
                              int out_nb, int pool, float *ws) {
    batch_forward(L, st, pool ? L->pool : NULL, in, in_nb, batch, out, L->act == SI_ACT_SOFTMAX ? 0 : out_nb, ws,
                  NULL);
}

void si_conv_sparse_batch_q(const si_layer *F, const void *state, const si_batch_q *q, const uint8_t *in, int in_nb,
                            int batch, void *out, int out_nb, int pool, float *ws) {
    batch_forward(F, state, pool ? F->pool : NULL, in, in_nb, batch, out, out_nb, ws, q);
}

int64_t si_conv_sparse_batch_q_ws(const si_layer *F, const void *state, int batch) {
    return batch_ws(F, state, batch) + q_extra(F, state, batch);
}

int si_conv_sparse_batch_nb(const si_layer *L, int batch) { return block_samples(L, batch); }

void si_batch_q_rows(const si_batch_q *q, const float *y, int64_t n, int64_t F, void *out) {
    q_rows_active()(q, y, n, F, out);
}

static void batch_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_f32_spconv_ref(L, in, batch, out);
    si_bias_act_ref(L, out, (int64_t)batch * L->out_h * L->out_w);
}

const si_algo si_algo_conv_sparse_batch = {
    .name = "conv_sparse_batch", .type = SI_LAYER_CONV2D, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .applies = batch_applies, .prepare = batch_prepare, .ws_floats = batch_ws, .run = batch_run,
    .run_pool = batch_run_pool, .run_blocked = batch_run_blocked, .block_of = block_samples,
    .run_ref = batch_run_ref, .bytes = batch_bytes, .release = batch_release,
};
