/* The runtime's own CSR kernels: the panel kernel (a CSR matrix times a panel of up to 64
 * dense columns) behind sparse x dense matrix products (FC, batch n) and the sparse direct
 * convolution, and the row kernel of sparse matrix-vector products (FC, batch 1). Linear
 * part only (no bias, no activation).
 *
 * Variants per ISA (si_dispatch.c picks one at start-up):
 *  - panel: AVX-512 (16-wide vectors, masked tails), AVX2+FMA (8-wide, maskload tails)
 *    and portable C. Row r's accumulators for the w panel columns live in registers; each
 *    non-zero A[r][c] is one broadcast and w/8 (w/16) FMAs with panel row c. Narrow panels
 *    take two non-zeros per step into two accumulator sets, so at least eight FMA chains
 *    are in flight (FMA latency 4 x 2 ports); a 64-wide AVX2 panel already has eight.
 *  - mv rows: eight independent scalar sums. With x in L1 (the column-blocked copy) scalar
 *    loads ran about 3x faster than AVX-512 gathers on Zen 4 (6.3 against 2.1 G non-zeros
 *    per second per core), and AVX2 gathers are slower still, so the variants differ only
 *    in what the compiler does with the same loop for the ISA (FMA contraction).
 * Plain references (direct loops, double accumulation) sit beside them.
 *
 * Threads: OpenMP, si_num_threads() of them, rows split by (nnz + rows) with a binary
 * search over the row pointers, so nothing is allocated at run time.
 */
#include "si_internal.h"

#include <string.h>

#include <omp.h>

#if SI_X86
#include <immintrin.h>
#endif

#define MIN_WORK_PER_THREAD 32768    /* non-zero FMAs below which one more thread does not pay */

/* ---- partitioning ------------------------------------------------------------------- */

/* First row r in [0, rows] with ptr[r] + r >= target (ptr[r] + r is increasing). */
static int64_t row_split(const int64_t *ptr, int64_t rows, int64_t target) {
    int64_t lo = 0, hi = rows;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (ptr[mid] + mid < target) lo = mid + 1; else hi = mid;
    }
    return lo;
}

void si_part_rows(const int64_t *ptr, int64_t a, int64_t b, int t, int nt, int64_t *r0, int64_t *r1) {
    int64_t base = ptr[a] + a, total = ptr[b] + b - base;
    *r0 = t == 0 ? a : row_split(ptr, b, base + total / nt * t + total % nt * t / nt);
    *r1 = t == nt - 1 ? b : row_split(ptr, b, base + total / nt * (t + 1) + total % nt * (t + 1) / nt);
    if (*r0 < a) *r0 = a;
    if (*r1 < *r0) *r1 = *r0;
}

int si_threads_for(int64_t work, int64_t max_parts) {
    int nt = si_num_threads();
    int64_t by_work = work / MIN_WORK_PER_THREAD;
    if (by_work < 1) by_work = 1;
    if (nt > by_work) nt = (int)by_work;
    if (nt > max_parts) nt = (int)(max_parts < 1 ? 1 : max_parts);
    return nt < 1 ? 1 : nt;
}

/* ---- mv rows ------------------------------------------------------------------------ */

#define CSRMV_ROW(COL)                                                                                  \
    do {                                                                                                \
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;                           \
        for (; k + 8 <= k1; k += 8) {                                                                   \
            a0 += val[k] * x[COL[k]];                                                                   \
            a1 += val[k + 1] * x[COL[k + 1]];                                                           \
            a2 += val[k + 2] * x[COL[k + 2]];                                                           \
            a3 += val[k + 3] * x[COL[k + 3]];                                                           \
            a4 += val[k + 4] * x[COL[k + 4]];                                                           \
            a5 += val[k + 5] * x[COL[k + 5]];                                                           \
            a6 += val[k + 6] * x[COL[k + 6]];                                                           \
            a7 += val[k + 7] * x[COL[k + 7]];                                                           \
        }                                                                                               \
        for (; k < k1; k++) a0 += val[k] * x[COL[k]];                                                   \
        float s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));                                    \
        y[r] = acc_into ? y[r] + s : s;                                                                 \
    } while (0)

SI_INLINE void mv_rows_body(const si_csr_view *A, const uint16_t *c16, int64_t r0, int64_t r1, const float *x,
                            float *y, int acc_into) {
    const float *val = A->val;
    const int64_t *ptr = A->ptr;
    const int32_t *c32 = A->col;
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = ptr[r], k1 = ptr[r + 1];
        if (c16) CSRMV_ROW(c16);
        else CSRMV_ROW(c32);
    }
}
void si_csr_mv_rows_portable(const si_csr_view *A, const uint16_t *c16, int64_t r0, int64_t r1, const float *x,
                             float *y, int acc_into) {
    mv_rows_body(A, c16, r0, r1, x, y, acc_into);
}
SI_TARGET_AVX2 void si_csr_mv_rows_avx2(const si_csr_view *A, const uint16_t *c16, int64_t r0, int64_t r1,
                                        const float *x, float *y, int acc_into) {
    mv_rows_body(A, c16, r0, r1, x, y, acc_into);
}
#if SI_X86
/* AVX-512: 16 non-zeros a step, their x gathered (vgatherdps) by the 16 columns widened
 * from uint16 or loaded as int32, two accumulators; the row's tail under a mask. */
SI_TARGET_AVX512 void si_csr_mv_gather_avx512(const si_csr_view *A, const uint16_t *c16, int64_t r0, int64_t r1,
                                              const float *x, float *y, int acc_into) {
    const float *val = A->val;
    const int64_t *ptr = A->ptr;
    const int32_t *c32 = A->col;
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = ptr[r];
        const int64_t k1 = ptr[r + 1];
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
#define COLS16(K) (c16 ? _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(c16 + (K))))                  \
                       : _mm512_loadu_si512((const void *)(c32 + (K))))
        for (; k + 32 <= k1; k += 32) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + k), _mm512_i32gather_ps(COLS16(k), x, 4), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(val + k + 16), _mm512_i32gather_ps(COLS16(k + 16), x, 4), a1);
        }
        for (; k + 16 <= k1; k += 16)
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + k), _mm512_i32gather_ps(COLS16(k), x, 4), a0);
#undef COLS16
        if (k < k1) {
            const __mmask16 m = (__mmask16)((1u << (k1 - k)) - 1u);
            const __m512i c = c16 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, c16 + k))
                                  : _mm512_maskz_loadu_epi32(m, c32 + k);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, val + k),
                                 _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, c, x, 4), a1);
        }
        const float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        y[r] = acc_into ? y[r] + s : s;
    }
}
/* AVX2: 8 non-zeros a step (vgatherdps ymm), two accumulators, the tail scalar. */
SI_TARGET_AVX2 void si_csr_mv_gather_avx2(const si_csr_view *A, const uint16_t *c16, int64_t r0, int64_t r1,
                                          const float *x, float *y, int acc_into) {
    const float *val = A->val;
    const int64_t *ptr = A->ptr;
    const int32_t *c32 = A->col;
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = ptr[r];
        const int64_t k1 = ptr[r + 1];
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
#define COLS8(K) (c16 ? _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(c16 + (K))))                     \
                      : _mm256_loadu_si256((const __m256i *)(c32 + (K))))
        for (; k + 16 <= k1; k += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(val + k), _mm256_i32gather_ps(x, COLS8(k), 4), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(val + k + 8), _mm256_i32gather_ps(x, COLS8(k + 8), 4), a1);
        }
#undef COLS8
        __m256 t = _mm256_add_ps(a0, a1);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        float s = _mm_cvtss_f32(h);
        for (; k < k1; k++) s += val[k] * x[c16 ? c16[k] : c32[k]];
        y[r] = acc_into ? y[r] + s : s;
    }
}
#else
void si_csr_mv_gather_avx512(const si_csr_view *A, const uint16_t *c16, int64_t r0, int64_t r1, const float *x,
                             float *y, int acc_into) {
    mv_rows_body(A, c16, r0, r1, x, y, acc_into);
}
void si_csr_mv_gather_avx2(const si_csr_view *A, const uint16_t *c16, int64_t r0, int64_t r1, const float *x,
                           float *y, int acc_into) {
    mv_rows_body(A, c16, r0, r1, x, y, acc_into);
}
#endif
void si_csr_mv_gather_portable(const si_csr_view *A, const uint16_t *c16, int64_t r0, int64_t r1, const float *x,
                               float *y, int acc_into) {
    mv_rows_body(A, c16, r0, r1, x, y, acc_into);
}
SI_TARGET_AVX512 void si_csr_mv_rows_avx512(const si_csr_view *A, const uint16_t *c16, int64_t r0, int64_t r1,
                                            const float *x, float *y, int acc_into) {
    mv_rows_body(A, c16, r0, r1, x, y, acc_into);
}

/* ---- the panel kernel ----------------------------------------------------------------
 * Row r's non-zeros for this call: all of them (cur == NULL), or, with column blocking,
 * from cur[r] up to the first column >= cend (cur[r] is advanced); acc_into: add into Y. */
static inline int64_t seg_begin(const int64_t *ptr, const int64_t *cur, int64_t r) { return cur ? cur[r] : ptr[r]; }
static inline int64_t seg_end(const int32_t *col, const int64_t *ptr, int64_t *cur, int64_t r, int64_t cend) {
    if (!cur) return ptr[r + 1];
    int64_t k = cur[r], k1 = ptr[r + 1];
    while (k < k1 && col[k] < cend) k++;
    cur[r] = k;
    return k;
}

static inline void store_panel_row(float *Y, int64_t ldy, int64_t r, const float *out, int w, int acc_into) {
    if (acc_into) for (int j = 0; j < w; j++) Y[j * ldy + r] += out[j];
    else for (int j = 0; j < w; j++) Y[j * ldy + r] = out[j];
}

void si_csr_panel_portable(const si_csr_view *A, int64_t r0, int64_t r1, const float *P, int w, float *Y, int64_t ldy,
                           int64_t *cur, int64_t cend, int acc_into) {
    const float *val = A->val;
    const int32_t *col = A->col;
    const int64_t *ptr = A->ptr;
    float acc[SI_PANEL];
    for (int64_t r = r0; r < r1; r++) {
        int64_t kb = seg_begin(ptr, cur, r), ke = seg_end(col, ptr, cur, r, cend);
        if (w == SI_PANEL) {
            for (int j = 0; j < SI_PANEL; j++) acc[j] = 0;
            for (int64_t k = kb; k < ke; k++) {
                const float v = val[k], *p = P + (int64_t)col[k] * SI_PANEL;
                for (int j = 0; j < SI_PANEL; j++) acc[j] += v * p[j];
            }
        } else {
            for (int j = 0; j < w; j++) acc[j] = 0;
            for (int64_t k = kb; k < ke; k++) {
                const float v = val[k], *p = P + (int64_t)col[k] * w;
                for (int j = 0; j < w; j++) acc[j] += v * p[j];
            }
        }
        store_panel_row(Y, ldy, r, acc, w, acc_into);
    }
}

#if SI_X86
/* AVX-512: NV vectors of 16 (the last masked by m), two non-zeros per step into two sets. */
#define PANEL_AVX512(NV)                                                                                      \
    SI_TARGET_AVX512 static void panel_avx512_##NV(const si_csr_view *A, int64_t r0, int64_t r1, const float *P, \
                                                   int w, float *Y, int64_t ldy, int64_t *cur, int64_t cend,  \
                                                   int acc_into) {                                            \
        const float *val = A->val;                                                                            \
        const int32_t *col = A->col;                                                                          \
        const int64_t *ptr = A->ptr;                                                                          \
        const __mmask16 m = (__mmask16)(w - 16 * ((NV)-1) >= 16 ? 0xFFFF : (1u << (w - 16 * ((NV)-1))) - 1u);  \
        float out[SI_PANEL];                                                                                  \
        for (int64_t r = r0; r < r1; r++) {                                                                   \
            __m512 a[NV], b[NV];                                                                              \
            for (int v = 0; v < (NV); v++) a[v] = b[v] = _mm512_setzero_ps();                                 \
            int64_t k = seg_begin(ptr, cur, r), k1 = seg_end(col, ptr, cur, r, cend);                         \
            for (; k + 2 <= k1; k += 2) {                                                                     \
                const __m512 s0 = _mm512_set1_ps(val[k]), s1 = _mm512_set1_ps(val[k + 1]);                   \
                const float *p0 = P + (int64_t)col[k] * w, *p1 = P + (int64_t)col[k + 1] * w;                 \
                for (int v = 0; v < (NV)-1; v++) {                                                            \
                    a[v] = _mm512_fmadd_ps(s0, _mm512_loadu_ps(p0 + 16 * v), a[v]);                           \
                    b[v] = _mm512_fmadd_ps(s1, _mm512_loadu_ps(p1 + 16 * v), b[v]);                           \
                }                                                                                             \
                a[(NV)-1] = _mm512_fmadd_ps(s0, _mm512_maskz_loadu_ps(m, p0 + 16 * ((NV)-1)), a[(NV)-1]);     \
                b[(NV)-1] = _mm512_fmadd_ps(s1, _mm512_maskz_loadu_ps(m, p1 + 16 * ((NV)-1)), b[(NV)-1]);     \
            }                                                                                                 \
            if (k < k1) {                                                                                     \
                const __m512 s0 = _mm512_set1_ps(val[k]);                                                     \
                const float *p0 = P + (int64_t)col[k] * w;                                                    \
                for (int v = 0; v < (NV)-1; v++) a[v] = _mm512_fmadd_ps(s0, _mm512_loadu_ps(p0 + 16 * v), a[v]); \
                a[(NV)-1] = _mm512_fmadd_ps(s0, _mm512_maskz_loadu_ps(m, p0 + 16 * ((NV)-1)), a[(NV)-1]);     \
            }                                                                                                 \
            for (int v = 0; v < (NV); v++) _mm512_storeu_ps(out + 16 * v, _mm512_add_ps(a[v], b[v]));        \
            store_panel_row(Y, ldy, r, out, w, acc_into);                                                     \
        }                                                                                                     \
    }
PANEL_AVX512(1)
PANEL_AVX512(2)
PANEL_AVX512(3)
PANEL_AVX512(4)

SI_TARGET_AVX512 void si_csr_panel_avx512(const si_csr_view *A, int64_t r0, int64_t r1, const float *P, int w,
                                          float *Y, int64_t ldy, int64_t *cur, int64_t cend, int acc_into) {
    switch ((w + 15) / 16) {
    case 1: panel_avx512_1(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    case 2: panel_avx512_2(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    case 3: panel_avx512_3(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    default: panel_avx512_4(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    }
}

/* AVX2+FMA: NV vectors of 8, the last loaded through mask m when w is not a multiple of 8.
 * TWO: two non-zeros per step into two accumulator sets (NV <= 4, so 2 * NV + 2 registers
 * fit the sixteen); from NV = 5 one set already has enough independent chains. */
#define PANEL_AVX2(NV, TWO)                                                                                   \
    SI_TARGET_AVX2 static void panel_avx2_##NV(const si_csr_view *A, int64_t r0, int64_t r1, const float *P,  \
                                               int w, float *Y, int64_t ldy, int64_t *cur, int64_t cend,      \
                                               int acc_into) {                                                \
        const float *val = A->val;                                                                            \
        const int32_t *col = A->col;                                                                          \
        const int64_t *ptr = A->ptr;                                                                          \
        const int tail = w - 8 * ((NV)-1);                                                                    \
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); \
        float out[SI_PANEL];                                                                                  \
        for (int64_t r = r0; r < r1; r++) {                                                                   \
            __m256 a[NV], b[NV];                                                                              \
            for (int v = 0; v < (NV); v++) a[v] = b[v] = _mm256_setzero_ps();                                 \
            int64_t k = seg_begin(ptr, cur, r), k1 = seg_end(col, ptr, cur, r, cend);                         \
            if (TWO)                                                                                          \
                for (; k + 2 <= k1; k += 2) {                                                                 \
                    const __m256 s0 = _mm256_set1_ps(val[k]), s1 = _mm256_set1_ps(val[k + 1]);               \
                    const float *p0 = P + (int64_t)col[k] * w, *p1 = P + (int64_t)col[k + 1] * w;             \
                    for (int v = 0; v < (NV)-1; v++) {                                                        \
                        a[v] = _mm256_fmadd_ps(s0, _mm256_loadu_ps(p0 + 8 * v), a[v]);                        \
                        b[v] = _mm256_fmadd_ps(s1, _mm256_loadu_ps(p1 + 8 * v), b[v]);                        \
                    }                                                                                         \
                    a[(NV)-1] = _mm256_fmadd_ps(s0, _mm256_maskload_ps(p0 + 8 * ((NV)-1), m), a[(NV)-1]);     \
                    b[(NV)-1] = _mm256_fmadd_ps(s1, _mm256_maskload_ps(p1 + 8 * ((NV)-1), m), b[(NV)-1]);     \
                }                                                                                             \
            for (; k < k1; k++) {                                                                             \
                const __m256 s0 = _mm256_set1_ps(val[k]);                                                     \
                const float *p0 = P + (int64_t)col[k] * w;                                                    \
                for (int v = 0; v < (NV)-1; v++) a[v] = _mm256_fmadd_ps(s0, _mm256_loadu_ps(p0 + 8 * v), a[v]); \
                a[(NV)-1] = _mm256_fmadd_ps(s0, _mm256_maskload_ps(p0 + 8 * ((NV)-1), m), a[(NV)-1]);         \
            }                                                                                                 \
            for (int v = 0; v < (NV); v++) _mm256_storeu_ps(out + 8 * v, TWO ? _mm256_add_ps(a[v], b[v]) : a[v]); \
            store_panel_row(Y, ldy, r, out, w, acc_into);                                                     \
        }                                                                                                     \
    }
PANEL_AVX2(1, 1)
PANEL_AVX2(2, 1)
PANEL_AVX2(3, 1)
PANEL_AVX2(4, 1)
PANEL_AVX2(5, 0)
PANEL_AVX2(6, 0)
PANEL_AVX2(7, 0)
PANEL_AVX2(8, 0)

SI_TARGET_AVX2 void si_csr_panel_avx2(const si_csr_view *A, int64_t r0, int64_t r1, const float *P, int w, float *Y,
                                      int64_t ldy, int64_t *cur, int64_t cend, int acc_into) {
    switch ((w + 7) / 8) {
    case 1: panel_avx2_1(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    case 2: panel_avx2_2(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    case 3: panel_avx2_3(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    case 4: panel_avx2_4(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    case 5: panel_avx2_5(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    case 6: panel_avx2_6(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    case 7: panel_avx2_7(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    default: panel_avx2_8(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
    }
}
#else
void si_csr_panel_avx2(const si_csr_view *A, int64_t r0, int64_t r1, const float *P, int w, float *Y, int64_t ldy,
                       int64_t *cur, int64_t cend, int acc_into) {
    si_csr_panel_portable(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into);
}
void si_csr_panel_avx512(const si_csr_view *A, int64_t r0, int64_t r1, const float *P, int w, float *Y, int64_t ldy,
                         int64_t *cur, int64_t cend, int acc_into) {
    si_csr_panel_portable(A, r0, r1, P, w, Y, ldy, cur, cend, acc_into);
}
#endif

/* ---- the tile kernel (conv/si_conv_sparse_planar.c, conv/si_conv_sparse_tiled.c) -------
 * tile[(r - r0) * 64 + j] (+)= sum_{k in [kb[r], ke[r])} val[k] * base[off[k] + j]: the panel
 * kernel with each non-zero's row at base + off[k], a range of each row's non-zeros (a block
 * of columns), and a contiguous tile of outputs that blocks accumulate into. */
void si_csr_planar_portable(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                            int64_t r1, const float *base, int w, float *tile, int acc_into) {
    for (int64_t r = r0; r < r1; r++) {
        float *acc = tile + (r - r0) * SI_PANEL;
        if (!acc_into) for (int j = 0; j < w; j++) acc[j] = 0;
        for (int64_t k = kb[r]; k < ke[r]; k++) {
            const float v = val[k], *p = base + off[k];
            for (int j = 0; j < w; j++) acc[j] += v * p[j];
        }
    }
}

#if SI_X86
#define PLANAR_AVX512(NV)                                                                                      \
    SI_TARGET_AVX512 static void planar_avx512_##NV(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke,    \
                                                    int64_t r0, int64_t r1, const float *base, int w, float *tile, \
                                                    int acc_into) {                                            \
        const __mmask16 m = (__mmask16)(w - 16 * ((NV)-1) >= 16 ? 0xFFFF : (1u << (w - 16 * ((NV)-1))) - 1u);   \
        for (int64_t r = r0; r < r1; r++) {                                                                    \
            __m512 a[NV], b[NV];                                                                               \
            for (int v = 0; v < (NV); v++) a[v] = b[v] = _mm512_setzero_ps();                                  \
            int64_t k = kb[r], k1 = ke[r];                                                                     \
            for (; k + 2 <= k1; k += 2) {                                                                      \
                const __m512 s0 = _mm512_set1_ps(val[k]), s1 = _mm512_set1_ps(val[k + 1]);                    \
                const float *p0 = base + off[k], *p1 = base + off[k + 1];                                      \
                for (int v = 0; v < (NV)-1; v++) {                                                             \
                    a[v] = _mm512_fmadd_ps(s0, _mm512_loadu_ps(p0 + 16 * v), a[v]);                            \
                    b[v] = _mm512_fmadd_ps(s1, _mm512_loadu_ps(p1 + 16 * v), b[v]);                            \
                }                                                                                              \
                a[(NV)-1] = _mm512_fmadd_ps(s0, _mm512_maskz_loadu_ps(m, p0 + 16 * ((NV)-1)), a[(NV)-1]);      \
                b[(NV)-1] = _mm512_fmadd_ps(s1, _mm512_maskz_loadu_ps(m, p1 + 16 * ((NV)-1)), b[(NV)-1]);      \
            }                                                                                                  \
            if (k < k1) {                                                                                      \
                const __m512 s0 = _mm512_set1_ps(val[k]);                                                      \
                const float *p0 = base + off[k];                                                               \
                for (int v = 0; v < (NV)-1; v++) a[v] = _mm512_fmadd_ps(s0, _mm512_loadu_ps(p0 + 16 * v), a[v]); \
                a[(NV)-1] = _mm512_fmadd_ps(s0, _mm512_maskz_loadu_ps(m, p0 + 16 * ((NV)-1)), a[(NV)-1]);      \
            }                                                                                                  \
            float *o = tile + (r - r0) * SI_PANEL;                                                             \
            for (int v = 0; v < (NV); v++) {                                                                   \
                __m512 t = _mm512_add_ps(a[v], b[v]);                                                          \
                _mm512_storeu_ps(o + 16 * v, acc_into ? _mm512_add_ps(t, _mm512_loadu_ps(o + 16 * v)) : t);    \
            }                                                                                                  \
        }                                                                                                      \
    }
PLANAR_AVX512(1)
PLANAR_AVX512(2)
PLANAR_AVX512(3)
PLANAR_AVX512(4)

SI_TARGET_AVX512 void si_csr_planar_avx512(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                         int64_t r1, const float *base, int w, float *tile, int acc_into) {
    switch ((w + 15) / 16) {
    case 1: planar_avx512_1(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    case 2: planar_avx512_2(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    case 3: planar_avx512_3(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    default: planar_avx512_4(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    }
}

#define PLANAR_AVX2(NV, TWO)                                                                                   \
    SI_TARGET_AVX2 static void planar_avx2_##NV(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke,       \
                                                int64_t r0, int64_t r1, const float *base, int w, float *tile,  \
                                                int acc_into) {                                                \
        const int tail = w - 8 * ((NV)-1);                                                                     \
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); \
        for (int64_t r = r0; r < r1; r++) {                                                                    \
            __m256 a[NV], b[NV];                                                                               \
            for (int v = 0; v < (NV); v++) a[v] = b[v] = _mm256_setzero_ps();                                  \
            int64_t k = kb[r], k1 = ke[r];                                                                     \
            if (TWO)                                                                                           \
                for (; k + 2 <= k1; k += 2) {                                                                  \
                    const __m256 s0 = _mm256_set1_ps(val[k]), s1 = _mm256_set1_ps(val[k + 1]);                \
                    const float *p0 = base + off[k], *p1 = base + off[k + 1];                                  \
                    for (int v = 0; v < (NV)-1; v++) {                                                         \
                        a[v] = _mm256_fmadd_ps(s0, _mm256_loadu_ps(p0 + 8 * v), a[v]);                         \
                        b[v] = _mm256_fmadd_ps(s1, _mm256_loadu_ps(p1 + 8 * v), b[v]);                         \
                    }                                                                                          \
                    a[(NV)-1] = _mm256_fmadd_ps(s0, _mm256_maskload_ps(p0 + 8 * ((NV)-1), m), a[(NV)-1]);      \
                    b[(NV)-1] = _mm256_fmadd_ps(s1, _mm256_maskload_ps(p1 + 8 * ((NV)-1), m), b[(NV)-1]);      \
                }                                                                                              \
            for (; k < k1; k++) {                                                                              \
                const __m256 s0 = _mm256_set1_ps(val[k]);                                                      \
                const float *p0 = base + off[k];                                                               \
                for (int v = 0; v < (NV)-1; v++) a[v] = _mm256_fmadd_ps(s0, _mm256_loadu_ps(p0 + 8 * v), a[v]); \
                a[(NV)-1] = _mm256_fmadd_ps(s0, _mm256_maskload_ps(p0 + 8 * ((NV)-1), m), a[(NV)-1]);          \
            }                                                                                                  \
            float *o = tile + (r - r0) * SI_PANEL;                                                             \
            for (int v = 0; v < (NV); v++) {                                                                   \
                __m256 t = TWO ? _mm256_add_ps(a[v], b[v]) : a[v];                                             \
                _mm256_storeu_ps(o + 8 * v, acc_into ? _mm256_add_ps(t, _mm256_loadu_ps(o + 8 * v)) : t);      \
            }                                                                                                  \
        }                                                                                                      \
    }
PLANAR_AVX2(1, 1)
PLANAR_AVX2(2, 1)
PLANAR_AVX2(3, 1)
PLANAR_AVX2(4, 1)
PLANAR_AVX2(5, 0)
PLANAR_AVX2(6, 0)
PLANAR_AVX2(7, 0)
PLANAR_AVX2(8, 0)

SI_TARGET_AVX2 void si_csr_planar_avx2(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                         int64_t r1, const float *base, int w, float *tile, int acc_into) {
    switch ((w + 7) / 8) {
    case 1: planar_avx2_1(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    case 2: planar_avx2_2(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    case 3: planar_avx2_3(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    case 4: planar_avx2_4(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    case 5: planar_avx2_5(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    case 6: planar_avx2_6(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    case 7: planar_avx2_7(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    default: planar_avx2_8(val, off, kb, ke, r0, r1, base, w, tile, acc_into); return;
    }
}
#else
void si_csr_planar_avx2(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                        int64_t r1, const float *base, int w, float *tile, int acc_into) {
    si_csr_planar_portable(val, off, kb, ke, r0, r1, base, w, tile, acc_into);
}
void si_csr_planar_avx512(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                          int64_t r1, const float *base, int w, float *tile, int acc_into) {
    si_csr_planar_portable(val, off, kb, ke, r0, r1, base, w, tile, acc_into);
}
#endif

static si_csr_view view_of(const si_layer *L) {
    si_csr_view v = {L->csr_val, L->csr_col, L->csr_ptr};
    return v;
}

/* ---- csrmm: Y[n x rows] = X[n x cols] A^T ------------------------------------------- */

void si_f32_csrmm_ref(const si_layer *L, const float *X, int n, float *Y) {
    for (int s = 0; s < n; s++) {
        const float *x = X + (int64_t)s * L->cols;
        for (int64_t r = 0; r < L->rows; r++) {
            double acc = 0;
            for (int64_t k = L->csr_ptr[r]; k < L->csr_ptr[r + 1]; k++) acc += (double)L->csr_val[k] * x[L->csr_col[k]];
            Y[(int64_t)s * L->rows + r] = (float)acc;
        }
    }
}

/* Column blocking: when a panel (cols x 64 floats) is larger than COL_BLOCK_FLOATS (VGG fc6:
 * 6.4 MB), the columns go in blocks of COL_BLOCK_FLOATS / w so the block of the panel that
 * the non-zeros hit stays in L2; each row keeps a cursor (in ws) to its next non-zero. */
#define COL_BLOCK_FLOATS (INT64_C(128) * 1024)   /* 512 KB */

int64_t si_f32_csrmm_ws_floats(const si_layer *L, int n) {
    return (L->cols * (int64_t)(n > 0 ? n : 1) + 15) / 16 * 16 + 2 * (L->rows + 16); /* panels, then int64 cursors */
}

/* Panel b of the batch: columns [s0, s0 + w) of X^T, as a cols x w row-major block at
 * ws + s0 * cols; rows [c0, c1) of it: si_k->transpose's 8 x 8 register blocks (scalar
 * copies took LeNet-5's fc2 at batch 64, 500 x 64 floats, 15 us, five times its FMAs). */
static void transpose_panel(const float *X, int64_t cols, int64_t s0, int w, int64_t c0, int64_t c1, float *P) {
    if (c1 > c0) si_k->transpose(X + s0 * cols + c0, cols, w, c1 - c0, P + c0 * w, w, NULL, SI_ACT_LINEAR);
}

/* Rows [r0, r1) of Y's samples [s0, s0 + w) from their panel P (cols x w). */
static void csrmm_panel(const si_layer *L, const si_csr_view *A, int64_t r0, int64_t r1, const float *P, int w,
                        float *Ys, int64_t *cur) {
    const int64_t cb = COL_BLOCK_FLOATS / w;
    if (L->cols <= cb) {
        si_k->csr_panel(A, r0, r1, P, w, Ys, L->rows, NULL, 0, 0);
        return;
    }
    for (int64_t r = r0; r < r1; r++) cur[r] = L->csr_ptr[r];
    for (int64_t ce = cb, first = 1; ce - cb < L->cols; ce += cb, first = 0)
        si_k->csr_panel(A, r0, r1, P, w, Ys, L->rows, cur, ce, !first);
}

/* X is n x cols (nb = 0), or ceil(n / nb) blocks of cols x nb samples (a blocked input, see
 * si_algo.run_blocked): a full block is its own panel, a short one is compacted to cols x w. */
static void csrmm(const si_layer *L, const float *X, int nb, int n, float *Y, float *ws) {
    if (n <= 0) return;
    const int64_t rows = L->rows, cols = L->cols;
    const si_csr_view A = view_of(L);
    int64_t *cur = (int64_t *)(void *)(ws + (cols * n + 15) / 16 * 16);
    const int step = nb ? nb : SI_PANEL;
    const int nt = si_threads_for((L->nnz + rows) * n, rows > cols ? rows : cols);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t c0 = cols * t / nth, c1 = cols * (t + 1) / nth, r0, r1;
        for (int s0 = 0; s0 < n; s0 += step) {
            int w = n - s0 < step ? n - s0 : step;
            float *P = ws + (int64_t)s0 * cols;
            if (!nb) transpose_panel(X, cols, s0, w, c0, c1, P);
            else if (w < nb)
                for (int64_t c = c0; c < c1; c++)
                    memcpy(P + c * w, X + (int64_t)s0 * cols + c * nb, sizeof(float) * (size_t)w);
        }
#pragma omp barrier
        si_part_rows(L->csr_ptr, 0, rows, t, nth, &r0, &r1);
        for (int s0 = 0; s0 < n; s0 += step) {
            int w = n - s0 < step ? n - s0 : step;
            const float *P = nb && w == nb ? X + (int64_t)s0 * cols : ws + (int64_t)s0 * cols;
            csrmm_panel(L, &A, r0, r1, P, w, Y + (int64_t)s0 * rows, cur);
        }
    }
}

void si_f32_csrmm(const si_layer *L, const float *X, int n, float *Y, float *ws) { csrmm(L, X, 0, n, Y, ws); }

void si_f32_csrmm_blocked(const si_layer *L, const float *X, int nb, int n, float *Y, float *ws) {
    csrmm(L, X, nb, n, Y, ws);
}

/* ---- spconv: NHWC convolution with CSR filters ---------------------------------------
 * Per tile of up to tw <= 64 output positions: the tile's patches are built transposed (K x w)
 * in the thread's slot of ws (XNNPACK's f32-spmm idea), and each filter's non-zeros are
 * broadcast-FMAs over the tile; results go straight into NHWC. */

/* The work of a tiled convolution over P output positions in tiles of tw: nt threads, each
 * tile's filters in fsplit parts (few tiles, as small images at batch 1: the filters are
 * split too, re-building the tile's patches in each part, so every core stays busy), items
 * = tiles * fsplit, handed out dynamically in chunks of about an eighth of a thread's share
 * (small tiles, LeNet's, cost a few microseconds: a dispatch each would show). */
void si_tile_split(const si_layer *L, int64_t P, int tw, int *nt, int64_t *fsplit, int64_t *items, int64_t *chunk) {
    const int64_t tiles = (P + tw - 1) / tw, F = L->rows;
    int n = si_threads_for((L->nnz + F) * P + L->cols * P, si_max_threads());
    int64_t fs = tiles >= 2 * n ? 1 : (2 * n + tiles - 1) / tiles;
    if (fs > F) fs = F;
    if (fs < 1) fs = 1;
    *items = tiles * fs;
    if (n > *items) n = (int)*items;
    *chunk = *items / (8 * n) > 1 ? *items / (8 * n) : 1;
    *nt = n;
    *fsplit = fs;
}

/* One slot: a K x 64 patch tile, then in_c zeros (the source of padded taps). */
static int64_t slot_floats(const si_layer *L) { return (L->cols * SI_PANEL + L->in_c + 15) / 16 * 16; }

int64_t si_f32_spconv_ws_floats(const si_layer *L, int batch) {
    (void)batch;
    return slot_floats(L) * si_max_threads();
}

void si_f32_spconv_ref(const si_layer *L, const float *in, int batch, float *out) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w, F = L->rows;
    for (int n = 0; n < batch; n++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                for (int64_t f = 0; f < F; f++) {
                    double acc = 0;
                    for (int64_t k = L->csr_ptr[f]; k < L->csr_ptr[f + 1]; k++) {
                        int64_t kk = L->csr_col[k], c = kk % C, tap = kk / C, i = tap / L->kw, j = tap % L->kw;
                        int64_t y = oh * L->sh - L->pad_top + i, x = ow * L->sw - L->pad_left + j;
                        if (y < 0 || y >= H || x < 0 || x >= W) continue;
                        acc += (double)L->csr_val[k] * in[((n * H + y) * W + x) * C + c];
                    }
                    out[((n * OH + oh) * OW + ow) * F + f] = (float)acc;
                }
}

void si_f32_spconv(const si_layer *L, const float *in, int batch, float *out, float *ws, int tw) {
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, F = L->rows, sf = slot_floats(L);
    if (P <= 0 || F <= 0) return;
    const si_csr_view A = view_of(L);
    const si_kernel_table *k = si_k;
    tw = tw < 1 ? 1 : tw > SI_PANEL ? SI_PANEL : tw;
    int nt;
    int64_t fsplit, items, chunk;
    si_tile_split(L, P, tw, &nt, &fsplit, &items, &chunk);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *slot = ws + (int64_t)omp_get_thread_num() * sf;
        float *zeros = slot + L->cols * SI_PANEL;
        memset(zeros, 0, sizeof(float) * (size_t)L->in_c);
        int64_t built = -1;
#pragma omp for schedule(dynamic, chunk)
        for (int64_t it = 0; it < items; it++) {
            int64_t tile = it / fsplit, part = it % fsplit, p0 = tile * tw, r0, r1;
            int w = (int)(P - p0 < tw ? P - p0 : tw);
            if (built != tile) {
                k->patches_t(L, in, p0, w, w, slot, zeros);
                built = tile;
            }
            si_part_rows(L->csr_ptr, 0, F, (int)part, (int)fsplit, &r0, &r1);
            k->csr_panel(&A, r0, r1, slot, w, out + p0 * F, F, NULL, 0, 0);
        }
    }
}

/* ---- the samples-innermost kernel (conv/si_conv_sparse_batch.c) --------------------------
 * tile[q * ldq + (r - r0) * SI_PANEL + j] (+)= sum_{k in [kb[r], ke[r])} val[k] *
 * base[q * qs + off[k] + j] for rows [r0, r1), positions q < nq, samples j < nb (16 or 64).
 * Each non-zero's broadcast serves a block of positions (Q), so one weight load feeds up to
 * 24 FMAs and the per-row overhead (zeroing, the final store) is paid once per block, not
 * per position: LeNet-5's conv1 has 5 non-zeros per filter and kernel row. Positions are
 * the outer loop, so a block's input stays in L1 while every row reads it. */
void si_csr_batch_portable(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                           int64_t r1, const float *base, int64_t qs, int nq, int nb, float *tile, int64_t ldq,
                           int acc_into) {
    for (int q = 0; q < nq; q++)
        for (int64_t r = r0; r < r1; r++) {
            float acc[SI_PANEL] = {0};
            for (int64_t k = kb[r]; k < ke[r]; k++) {
                const float v = val[k], *p = base + q * qs + off[k];
                for (int j = 0; j < nb; j++) acc[j] += v * p[j];
            }
            float *o = tile + q * ldq + (r - r0) * SI_PANEL;
            for (int j = 0; j < nb; j++) o[j] = acc_into ? o[j] + acc[j] : acc[j];
        }
}

#if SI_X86
/* One block of Q positions x VP vectors of W lanes: VEC is the vector type and LOAD/FMA/
 * ADD/STORE/SET1/ZERO its intrinsics. UNROLL: two non-zeros per loop step paid 2-5% on
 * AVX2 (LeNet-5's conv1 at batch 64) and nothing on AVX-512. */
#define BATCH_BLOCK(NAME, TARGET, VEC, W, LOAD, STORE, FMA, ADD, SET1, ZERO, VP, Q, UNROLL)                  \
    TARGET static void NAME(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke,         \
                            int64_t r0, int64_t r1, const float *base, int64_t qs, float *tile, int64_t ldq,    \
                            int acc_into) {                                                                     \
        const float *bq[Q]; /* each position's corner: a load is then base register + off[k] * 4 + disp */ \
        for (int q = 0; q < (Q); q++) bq[q] = base + q * qs;                                                    \
        for (int64_t r = r0; r < r1; r++) {                                                                     \
            VEC a[Q][VP];                                                                                       \
            for (int q = 0; q < (Q); q++)                                                                       \
                for (int v = 0; v < (VP); v++) a[q][v] = ZERO();                                                \
            _Pragma(UNROLL) for (int64_t k = kb[r]; k < ke[r]; k++) {                                           \
                const VEC s = SET1(val[k]);                                                                     \
                const int64_t o = off[k];                                                                       \
                for (int q = 0; q < (Q); q++)                                                                   \
                    for (int v = 0; v < (VP); v++) a[q][v] = FMA(s, LOAD(bq[q] + o + (W) * v), a[q][v]);        \
            }                                                                                                   \
            float *o = tile + (r - r0) * SI_PANEL;                                                              \
            for (int q = 0; q < (Q); q++)                                                                       \
                for (int v = 0; v < (VP); v++) {                                                                \
                    float *d = o + q * ldq + (W) * v;                                                           \
                    STORE(d, acc_into ? ADD(a[q][v], LOAD(d)) : a[q][v]);                                       \
                }                                                                                               \
        }                                                                                                       \
    }

#define B512(VP, Q)                                                                                             \
    BATCH_BLOCK(batch512_##VP##_##Q, SI_TARGET_AVX512, __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps,           \
                _mm512_fmadd_ps, _mm512_add_ps, _mm512_set1_ps, _mm512_setzero_ps, VP, Q, "GCC unroll 1")
#define B256(VP, Q)                                                                                             \
    BATCH_BLOCK(batch256_##VP##_##Q, SI_TARGET_AVX2, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps,              \
                _mm256_fmadd_ps, _mm256_add_ps, _mm256_set1_ps, _mm256_setzero_ps, VP, Q, "GCC unroll 2")
/* AVX-512, 32 registers: 64 samples are 4 vectors, up to 6 positions (24 accumulators);
 * 16 samples are one vector, up to 8 positions. */
B512(4, 1) B512(4, 2) B512(4, 3) B512(4, 4) B512(4, 5) B512(4, 6)
B512(1, 1) B512(1, 2) B512(1, 3) B512(1, 4) B512(1, 5) B512(1, 6) B512(1, 7) B512(1, 8)
/* AVX2, 16 registers: 12 accumulators, 32 samples (4 vectors) x 3 positions per pass, or 16
 * samples (2 vectors) x 6 positions; a single position of 64 samples is 8 vectors. */
B256(4, 1) B256(4, 2) B256(4, 3) B256(8, 1)
B256(2, 1) B256(2, 2) B256(2, 3) B256(2, 4) B256(2, 5) B256(2, 6)

typedef void (*batch_block_fn)(const float *, const int32_t *, const int64_t *, const int64_t *, int64_t, int64_t,
                               const float *, int64_t, float *, int64_t, int);

/* The nq positions go in as few blocks as qmax allows, of sizes that differ by at most one:
 * a lone short block (3 + 1 for AVX2's 4 conv positions of LeNet-5's pooled conv2) has too
 * few accumulators to hide the FMA latency (4 chains against the 8 that two FMA ports of
 * latency 4 need), two blocks of 2 have enough. */
static void batch_blocks(const batch_block_fn *fns, int qmax, int lanes, const float *val, const int32_t *off,
                         const int64_t *kb, const int64_t *ke, int64_t r0, int64_t r1, const float *base, int64_t qs,
                         int nq, int nb, float *tile, int64_t ldq, int acc_into) {
    const int nblk = (nq + qmax - 1) / qmax;
    for (int j = 0; j < nb; j += lanes) /* AVX2 at 64 samples: two halves of 32 */
        for (int b = 0, q = 0; b < nblk; b++) {
            const int n = (nq - q + (nblk - b) - 1) / (nblk - b);
            fns[n - 1](val, off, kb, ke, r0, r1, base + q * qs + j, qs, tile + q * ldq + j, ldq, acc_into);
            q += n;
        }
}

void si_csr_batch_avx512(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                         int64_t r1, const float *base, int64_t qs, int nq, int nb, float *tile, int64_t ldq,
                         int acc_into) {
    static const batch_block_fn f64[] = {batch512_4_1, batch512_4_2, batch512_4_3,
                                         batch512_4_4, batch512_4_5, batch512_4_6};
    static const batch_block_fn f16[] = {batch512_1_1, batch512_1_2, batch512_1_3, batch512_1_4,
                                         batch512_1_5, batch512_1_6, batch512_1_7, batch512_1_8};
    if (nb == SI_PANEL) batch_blocks(f64, 6, 64, val, off, kb, ke, r0, r1, base, qs, nq, nb, tile, ldq, acc_into);
    else if (nb == 16) batch_blocks(f16, 8, 16, val, off, kb, ke, r0, r1, base, qs, nq, nb, tile, ldq, acc_into);
    else si_csr_batch_portable(val, off, kb, ke, r0, r1, base, qs, nq, nb, tile, ldq, acc_into);
}

void si_csr_batch_avx2(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                       int64_t r1, const float *base, int64_t qs, int nq, int nb, float *tile, int64_t ldq,
                       int acc_into) {
    static const batch_block_fn f32[] = {batch256_4_1, batch256_4_2, batch256_4_3};
    static const batch_block_fn f16[] = {batch256_2_1, batch256_2_2, batch256_2_3,
                                         batch256_2_4, batch256_2_5, batch256_2_6};
    /* one position of 64 samples: 8 accumulators in one pass rather than 4 in each of two */
    if (nb == SI_PANEL && nq == 1) batch256_8_1(val, off, kb, ke, r0, r1, base, qs, tile, ldq, acc_into);
    else if (nb % 32 == 0) batch_blocks(f32, 3, 32, val, off, kb, ke, r0, r1, base, qs, nq, nb, tile, ldq, acc_into);
    else if (nb == 16) batch_blocks(f16, 6, 16, val, off, kb, ke, r0, r1, base, qs, nq, nb, tile, ldq, acc_into);
    else si_csr_batch_portable(val, off, kb, ke, r0, r1, base, qs, nq, nb, tile, ldq, acc_into);
}
#else
void si_csr_batch_avx2(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                       int64_t r1, const float *base, int64_t qs, int nq, int nb, float *tile, int64_t ldq,
                       int acc_into) {
    si_csr_batch_portable(val, off, kb, ke, r0, r1, base, qs, nq, nb, tile, ldq, acc_into);
}
void si_csr_batch_avx512(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                         int64_t r1, const float *base, int64_t qs, int nq, int nb, float *tile, int64_t ldq,
                         int acc_into) {
    si_csr_batch_portable(val, off, kb, ke, r0, r1, base, qs, nq, nb, tile, ldq, acc_into);
}
#endif
