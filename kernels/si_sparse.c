/* The runtime's own CSR kernels: sparse matrix-vector (FC, batch 1), sparse x dense
 * matrix (FC, batch n) and convolution with a CSR filter matrix. Linear part only (no bias,
 * no activation). Each has a plain reference (direct loops, double accumulation) used when
 * si_use_reference is set.
 *
 * Threads: OpenMP, si_num_threads() of them, rows split by (nnz + rows) with a binary
 * search over csr_ptr, so nothing is allocated at run time.
 *
 * ISA: the library is built for baseline x86-64; the hot loops have an AVX-512 version
 * (function-level target attribute) chosen at run time with __builtin_cpu_supports, and a
 * portable version that the compiler vectorises for the baseline. si_sparse_portable_only
 * forces the portable one (tests, benchmarks).
 *
 * Layouts:
 *  - csrmm transposes X (n x cols) into ws as panels of up to PANEL batch columns, each
 *    panel cols x w (position-contiguous), so a non-zero A[r][c] is one w-wide axpy of
 *    panel row c into row r's accumulators, which live in registers; the w results are
 *    stored straight into Y's column r.
 *  - spconv does the same per tile of up to PANEL output positions: the tile's patches are
 *    built transposed (K x w) in the thread's slot of ws (XNNPACK's f32-spmm idea), and each
 *    filter's non-zeros are broadcast-FMAs over the tile; results go straight into NHWC.
 */
#include "si_internal.h"

#include <string.h>

#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SI_HAVE_AVX512_PATH 1
#define SI_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#else
#define SI_HAVE_AVX512_PATH 0
#endif

#define PANEL 64                     /* batch columns / output positions per panel (<= 64) */
#define MIN_WORK_PER_THREAD 32768    /* non-zero FMAs below which one more thread does not pay */
#define MAX_SLOTS 256                /* per-thread scratch slots of spconv */

int si_sparse_portable_only = 0;     /* tests and benchmarks: force the portable path */
/* csrmv: AVX-512 gathers (1) or eight scalar sums (0, default: faster here, see CSRMV_ROW). */
int si_csrmv_gathers = 0;

static int use_avx512(void) {
#if SI_HAVE_AVX512_PATH
    return !si_sparse_portable_only && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

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

/* Rows [*r0, *r1) of part t of nt, balanced by nnz + rows over rows [a, b). */
static void part_rows(const int64_t *ptr, int64_t a, int64_t b, int t, int nt, int64_t *r0, int64_t *r1) {
    int64_t base = ptr[a] + a, total = ptr[b] + b - base;
    *r0 = t == 0 ? a : row_split(ptr, b, base + total / nt * t + total % nt * t / nt);
    *r1 = t == nt - 1 ? b : row_split(ptr, b, base + total / nt * (t + 1) + total % nt * (t + 1) / nt);
    if (*r0 < a) *r0 = a;
    if (*r1 < *r0) *r1 = *r0;
}

static int threads_for(int64_t work, int64_t max_parts) {
    int nt = si_num_threads();
    if (nt < 1) nt = 1;
    int64_t by_work = work / MIN_WORK_PER_THREAD;
    if (by_work < 1) by_work = 1;
    if (nt > by_work) nt = (int)by_work;
    if (nt > max_parts) nt = (int)(max_parts < 1 ? 1 : max_parts);
    return nt;
}

/* ---- csrmv: y = A x ----------------------------------------------------------------- */

static void csrmv_ref(const si_layer *L, const float *x, float *y) {
    for (int64_t r = 0; r < L->rows; r++) {
        double acc = 0;
        for (int64_t k = L->csr_ptr[r]; k < L->csr_ptr[r + 1]; k++) acc += (double)L->csr_val[k] * x[L->csr_col[k]];
        y[r] = (float)acc;
    }
}

/* Eight independent sums of scalar loads: faster than AVX-512 gathers when x sits in L1
 * (see csrmv_blocked), and about even with them from L2. */
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
        y[r] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));                                       \
    } while (0)

static void csrmv_rows_portable(const si_layer *L, int64_t r0, int64_t r1, const float *x, float *y) {
    const float *val = L->csr_val;
    const int64_t *ptr = L->csr_ptr;
    const uint16_t *c16 = L->csr_col16;
    const int32_t *c32 = L->csr_col;
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = ptr[r], k1 = ptr[r + 1];
        if (c16) CSRMV_ROW(c16);
        else CSRMV_ROW(c32);
    }
}

#if SI_HAVE_AVX512_PATH
/* 16 non-zeros per gather; two accumulators; the tail is one masked gather. */
SI_AVX512 static void csrmv_rows_avx512(const si_layer *L, int64_t r0, int64_t r1, const float *x, float *y) {
    const float *val = L->csr_val;
    const int64_t *ptr = L->csr_ptr;
    const uint16_t *c16 = L->csr_col16;
    const int32_t *c32 = L->csr_col;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = ptr[r], k1 = ptr[r + 1];
        __m512 a0 = zero, a1 = zero;
        if (c16) {
            for (; k + 32 <= k1; k += 32) {
                __m512i i0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(c16 + k)));
                __m512i i1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(c16 + k + 16)));
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + k), _mm512_i32gather_ps(i0, x, 4), a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(val + k + 16), _mm512_i32gather_ps(i1, x, 4), a1);
            }
            if (k + 16 <= k1) {
                __m512i i0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(c16 + k)));
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + k), _mm512_i32gather_ps(i0, x, 4), a0);
                k += 16;
            }
            if (k < k1) {
                __mmask16 m = (__mmask16)((1u << (unsigned)(k1 - k)) - 1u);
                __m512i i0 = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, c16 + k));
                a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, val + k), _mm512_mask_i32gather_ps(zero, m, i0, x, 4), a1);
            }
        } else {
            for (; k + 32 <= k1; k += 32) {
                __m512i i0 = _mm512_loadu_si512((const void *)(c32 + k));
                __m512i i1 = _mm512_loadu_si512((const void *)(c32 + k + 16));
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + k), _mm512_i32gather_ps(i0, x, 4), a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(val + k + 16), _mm512_i32gather_ps(i1, x, 4), a1);
            }
            if (k + 16 <= k1) {
                __m512i i0 = _mm512_loadu_si512((const void *)(c32 + k));
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + k), _mm512_i32gather_ps(i0, x, 4), a0);
                k += 16;
            }
            if (k < k1) {
                __mmask16 m = (__mmask16)((1u << (unsigned)(k1 - k)) - 1u);
                __m512i i0 = _mm512_maskz_loadu_epi32(m, c32 + k);
                a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, val + k), _mm512_mask_i32gather_ps(zero, m, i0, x, 4), a1);
            }
        }
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
}
#endif

/* Column-blocked csrmv over rows [r0, r1): block by block, so the loads of all rows hit
 * the block's 16 KB slice of x in L1 instead of a 100 KB x in L2 (VGG fc6: 25088 inputs);
 * y[r] is stored by block 0 and accumulated by the others. Plain scalar code with eight
 * independent sums: with x in L1 it runs ~3x faster than AVX-512 gathers on Zen 4
 * (6.3 against 2.1 G non-zeros/s per core, measured), so there is no SIMD variant. */
static void csrmv_blocked(const si_layer *L, int64_t r0, int64_t r1, const float *x, float *y) {
    const int64_t rows = L->rows;
    const float *val = L->bval;
    const uint16_t *col = L->bcol;
    for (int b = 0; b < L->n_blk; b++) {
        const float *xb = x + (int64_t)b * SI_CSR_BLOCK_COLS;
        const int64_t *bp = L->bptr + (int64_t)b * rows;
        for (int64_t r = r0; r < r1; r++) {
            int64_t k = bp[r], k1 = bp[r + 1];
            float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
            for (; k + 8 <= k1; k += 8) {
                a0 += val[k] * xb[col[k]];
                a1 += val[k + 1] * xb[col[k + 1]];
                a2 += val[k + 2] * xb[col[k + 2]];
                a3 += val[k + 3] * xb[col[k + 3]];
                a4 += val[k + 4] * xb[col[k + 4]];
                a5 += val[k + 5] * xb[col[k + 5]];
                a6 += val[k + 6] * xb[col[k + 6]];
                a7 += val[k + 7] * xb[col[k + 7]];
            }
            for (; k < k1; k++) a0 += val[k] * xb[col[k]];
            float s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
            y[r] = b ? y[r] + s : s;
        }
    }
}

void si_f32_csrmv(const si_layer *L, const float *x, float *y) {
    if (si_use_reference) { csrmv_ref(L, x, y); return; }
    if (L->bptr) {
        const int nt = threads_for(L->nnz + L->rows, L->rows);
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int64_t r0, r1;
            part_rows(L->csr_ptr, 0, L->rows, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
            csrmv_blocked(L, r0, r1, x, y);
        }
        return;
    }
    const int avx = use_avx512() && si_csrmv_gathers;
    const int nt = threads_for(L->nnz + L->rows, L->rows);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t r0, r1;
        part_rows(L->csr_ptr, 0, L->rows, t, n, &r0, &r1);
#if SI_HAVE_AVX512_PATH
        if (avx) csrmv_rows_avx512(L, r0, r1, x, y);
        else
#endif
            csrmv_rows_portable(L, r0, r1, x, y);
        (void)avx;
    }
}

/* ---- the panel kernel shared by csrmm and spconv -------------------------------------
 * For rows r in [r0, r1): Y[j * ldy + r] = sum_k val[k] * P[col[k] * w + j], j < w <= PANEL.
 * P is a cols x w panel (row stride w). */

/* Row r's non-zeros for this call: all of them (cur == NULL), or, with column blocking,
 * from cur[r] up to the first column >= cend (cur[r] is advanced); acc: add into Y. */
static inline int64_t seg_begin(const int64_t *ptr, const int64_t *cur, int64_t r) { return cur ? cur[r] : ptr[r]; }
static inline int64_t seg_end(const int32_t *col, const int64_t *ptr, int64_t *cur, int64_t r, int64_t cend) {
    if (!cur) return ptr[r + 1];
    int64_t k = cur[r], k1 = ptr[r + 1];
    while (k < k1 && col[k] < cend) k++;
    cur[r] = k;
    return k;
}

static void panel_rows_portable(const si_layer *L, int64_t r0, int64_t r1, const float *P, int w, float *Y,
                                int64_t ldy, int64_t *cur, int64_t cend, int acc_into) {
    const float *val = L->csr_val;
    const int32_t *col = L->csr_col;
    const int64_t *ptr = L->csr_ptr;
    float acc[PANEL];
    for (int64_t r = r0; r < r1; r++) {
        int64_t kb = seg_begin(ptr, cur, r), ke = seg_end(col, ptr, cur, r, cend);
        if (w == PANEL) {
            for (int j = 0; j < PANEL; j++) acc[j] = 0;
            for (int64_t k = kb; k < ke; k++) {
                const float v = val[k], *p = P + (int64_t)col[k] * PANEL;
                for (int j = 0; j < PANEL; j++) acc[j] += v * p[j];
            }
        } else {
            for (int j = 0; j < w; j++) acc[j] = 0;
            for (int64_t k = kb; k < ke; k++) {
                const float v = val[k], *p = P + (int64_t)col[k] * w;
                for (int j = 0; j < w; j++) acc[j] += v * p[j];
            }
        }
        if (acc_into) for (int j = 0; j < w; j++) Y[j * ldy + r] += acc[j];
        else for (int j = 0; j < w; j++) Y[j * ldy + r] = acc[j];
    }
}

#if SI_HAVE_AVX512_PATH
/* NV vectors of 16 (the last masked by m), two non-zeros per step into two accumulator
 * sets for enough independent FMA chains. */
#define PANEL_AVX512(NV)                                                                                   \
    SI_AVX512 static void panel_rows_avx512_##NV(const si_layer *L, int64_t r0, int64_t r1, const float *P, \
                                                 int w, float *Y, int64_t ldy, int64_t *cur, int64_t cend,   \
                                                 int acc_into) {                                             \
        const float *val = L->csr_val;                                                                       \
        const int32_t *col = L->csr_col;                                                                     \
        const int64_t *ptr = L->csr_ptr;                                                                     \
        const __mmask16 m = (__mmask16)(w - 16 * ((NV)-1) >= 16 ? 0xFFFF : (1u << (w - 16 * ((NV)-1))) - 1u); \
        float out[PANEL];                                                                                    \
        for (int64_t r = r0; r < r1; r++) {                                                                  \
            __m512 a[NV], b[NV];                                                                             \
            for (int v = 0; v < (NV); v++) a[v] = b[v] = _mm512_setzero_ps();                                \
            int64_t k = seg_begin(ptr, cur, r), k1 = seg_end(col, ptr, cur, r, cend);                        \
            for (; k + 2 <= k1; k += 2) {                                                                    \
                const __m512 s0 = _mm512_set1_ps(val[k]), s1 = _mm512_set1_ps(val[k + 1]);                  \
                const float *p0 = P + (int64_t)col[k] * w, *p1 = P + (int64_t)col[k + 1] * w;                \
                for (int v = 0; v < (NV)-1; v++) {                                                           \
                    a[v] = _mm512_fmadd_ps(s0, _mm512_loadu_ps(p0 + 16 * v), a[v]);                          \
                    b[v] = _mm512_fmadd_ps(s1, _mm512_loadu_ps(p1 + 16 * v), b[v]);                          \
                }                                                                                            \
                a[(NV)-1] = _mm512_fmadd_ps(s0, _mm512_maskz_loadu_ps(m, p0 + 16 * ((NV)-1)), a[(NV)-1]);    \
                b[(NV)-1] = _mm512_fmadd_ps(s1, _mm512_maskz_loadu_ps(m, p1 + 16 * ((NV)-1)), b[(NV)-1]);    \
            }                                                                                                \
            if (k < k1) {                                                                                    \
                const __m512 s0 = _mm512_set1_ps(val[k]);                                                    \
                const float *p0 = P + (int64_t)col[k] * w;                                                   \
                for (int v = 0; v < (NV)-1; v++) a[v] = _mm512_fmadd_ps(s0, _mm512_loadu_ps(p0 + 16 * v), a[v]); \
                a[(NV)-1] = _mm512_fmadd_ps(s0, _mm512_maskz_loadu_ps(m, p0 + 16 * ((NV)-1)), a[(NV)-1]);    \
            }                                                                                                \
            for (int v = 0; v < (NV); v++) _mm512_storeu_ps(out + 16 * v, _mm512_add_ps(a[v], b[v]));       \
            if (acc_into) for (int j = 0; j < w; j++) Y[j * ldy + r] += out[j];                              \
            else for (int j = 0; j < w; j++) Y[j * ldy + r] = out[j];                                        \
        }                                                                                                    \
    }
PANEL_AVX512(1)
PANEL_AVX512(2)
PANEL_AVX512(3)
PANEL_AVX512(4)
#endif

static void panel_rows(int avx, const si_layer *L, int64_t r0, int64_t r1, const float *P, int w, float *Y,
                       int64_t ldy, int64_t *cur, int64_t cend, int acc_into) {
#if SI_HAVE_AVX512_PATH
    if (avx) {
        switch ((w + 15) / 16) {
        case 1: panel_rows_avx512_1(L, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
        case 2: panel_rows_avx512_2(L, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
        case 3: panel_rows_avx512_3(L, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
        default: panel_rows_avx512_4(L, r0, r1, P, w, Y, ldy, cur, cend, acc_into); return;
        }
    }
#endif
    (void)avx;
    panel_rows_portable(L, r0, r1, P, w, Y, ldy, cur, cend, acc_into);
}

/* ---- csrmm: Y[n x rows] = X[n x cols] A^T ------------------------------------------- */

static void csrmm_ref(const si_layer *L, const float *X, int n, float *Y) {
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
    return L->cols * (int64_t)(n > 0 ? n : 1) + 2 * (L->rows + 16);  /* panels, then int64 row cursors */
}

/* Panel b of the batch: columns [s0, s0 + w) of X^T, as a cols x w row-major block at
 * ws + s0 * cols; rows [c0, c1) of it. Blocked so reads and writes stay in L1. */
static void transpose_panel(const float *X, int64_t cols, int64_t s0, int w, int64_t c0, int64_t c1, float *P) {
    for (int64_t cb = c0; cb < c1; cb += 64) {
        int64_t ce = cb + 64 < c1 ? cb + 64 : c1;
        for (int j = 0; j < w; j++) {
            const float *x = X + (s0 + j) * cols;
            for (int64_t c = cb; c < ce; c++) P[c * w + j] = x[c];
        }
    }
}

void si_f32_csrmm(const si_layer *L, const float *X, int n, float *Y, float *ws) {
    if (si_use_reference) { csrmm_ref(L, X, n, Y); return; }
    if (n <= 0) return;
    const int avx = use_avx512();
    const int64_t rows = L->rows, cols = L->cols;
    int64_t *cur = (int64_t *)(void *)(ws + (cols * n + 15) / 16 * 16);
    const int nt = threads_for((L->nnz + rows) * n, rows > cols ? rows : cols);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t c0 = cols * t / nth, c1 = cols * (t + 1) / nth, r0, r1;
        for (int s0 = 0; s0 < n; s0 += PANEL) {
            int w = n - s0 < PANEL ? n - s0 : PANEL;
            transpose_panel(X, cols, s0, w, c0, c1, ws + (int64_t)s0 * cols);
        }
#pragma omp barrier
        part_rows(L->csr_ptr, 0, rows, t, nth, &r0, &r1);
        for (int s0 = 0; s0 < n; s0 += PANEL) {
            int w = n - s0 < PANEL ? n - s0 : PANEL;
            const float *P = ws + (int64_t)s0 * cols;
            float *Ys = Y + (int64_t)s0 * rows;
            int64_t cb = COL_BLOCK_FLOATS / w;
            if (cols <= cb) {
                panel_rows(avx, L, r0, r1, P, w, Ys, rows, NULL, 0, 0);
                continue;
            }
            for (int64_t r = r0; r < r1; r++) cur[r] = L->csr_ptr[r];
            for (int64_t ce = cb, first = 1; ce - cb < cols; ce += cb, first = 0)
                panel_rows(avx, L, r0, r1, P, w, Ys, rows, cur, ce, !first);
        }
    }
}

/* ---- spconv: NHWC convolution with CSR filters -------------------------------------- */

static int spconv_slots(void) {
    int p = omp_get_num_procs();
    return p < 1 ? 1 : p > MAX_SLOTS ? MAX_SLOTS : p;
}

/* One slot: a K x PANEL patch tile, then in_c zeros (the source of padded taps). */
static int64_t slot_floats(const si_layer *L) {
    return (L->cols * PANEL + L->in_c + 15) / 16 * 16;
}

int64_t si_f32_spconv_ws_floats(const si_layer *L, int batch) {
    (void)batch;
    return slot_floats(L) * spconv_slots();
}

/* Patches of output positions [p0, p0 + w) transposed: P[k * w + t], k in (kernel row,
 * kernel column, channel) order. zeros: in_c zero floats. Groups of 16 positions so each
 * written line (16 positions of one k) is written once. */
static void patches_t(const si_layer *L, const float *in, int64_t p0, int w, float *P, const float *zeros) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    for (int t0 = 0; t0 < w; t0 += 16) {
        int tw = w - t0 < 16 ? w - t0 : 16;
        int64_t nb[16], y0[16], x0[16];
        for (int t = 0; t < tw; t++) {
            int64_t p = p0 + t0 + t, q = p % (OH * OW);
            nb[t] = p / (OH * OW);
            y0[t] = q / OW * L->sh - L->pad_top;
            x0[t] = q % OW * L->sw - L->pad_left;
        }
        for (int i = 0; i < L->kh; i++)
            for (int j = 0; j < L->kw; j++) {
                const float *src[16];
                for (int t = 0; t < tw; t++) {
                    int64_t y = y0[t] + i, x = x0[t] + j;
                    src[t] = (y < 0 || y >= H || x < 0 || x >= W) ? zeros : in + ((nb[t] * H + y) * W + x) * C;
                }
                float *dst = P + ((int64_t)i * L->kw + j) * C * w + t0;
                if (tw == 16)
                    for (int64_t c = 0; c < C; c++)
                        for (int t = 0; t < 16; t++) dst[c * w + t] = src[t][c];
                else
                    for (int64_t c = 0; c < C; c++)
                        for (int t = 0; t < tw; t++) dst[c * w + t] = src[t][c];
            }
    }
}

static void spconv_ref(const si_layer *L, const float *in, int batch, float *out) {
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

void si_f32_spconv(const si_layer *L, const float *in, int batch, float *out, float *ws) {
    if (si_use_reference) { spconv_ref(L, in, batch, out); return; }
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, F = L->rows, sf = slot_floats(L);
    if (P <= 0 || F <= 0) return;
    const int avx = use_avx512();
    const int64_t tiles = (P + PANEL - 1) / PANEL;
    int nt = threads_for((L->nnz + F) * P + L->cols * P, spconv_slots());
    /* Few tiles (small images at batch 1): also split the filters, re-building the tile's
     * patches in each part. */
    int64_t fsplit = tiles >= 2 * nt ? 1 : (2 * nt + tiles - 1) / tiles;
    if (fsplit > F) fsplit = F;
    const int64_t items = tiles * fsplit;
    if (nt > items) nt = (int)items;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *slot = ws + (int64_t)omp_get_thread_num() * sf;
        float *zeros = slot + L->cols * PANEL;
        memset(zeros, 0, sizeof(float) * (size_t)L->in_c);
        int64_t built = -1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            int64_t tile = it / fsplit, part = it % fsplit, p0 = tile * PANEL, r0, r1;
            int w = (int)(P - p0 < PANEL ? P - p0 : PANEL);
            if (built != tile) {
                patches_t(L, in, p0, w, slot, zeros);
                built = tile;
            }
            part_rows(L->csr_ptr, 0, F, (int)part, (int)fsplit, &r0, &r1);
            panel_rows(avx, L, r0, r1, slot, w, out + p0 * F, F, NULL, 0, 0);
        }
    }
}
