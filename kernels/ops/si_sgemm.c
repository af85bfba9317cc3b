/* The runtime's own single-precision GEMM on weights packed at load: C[m x n] (+)= A[m x k] B,
 * B = W^T for a row-major W of n x k (a layer's filters or units), A row-major (im2col rows,
 * or a batch of inputs).
 *
 * Why not only MKL: on the AMD CPUs this runs on, MKL takes its generic code path, and its
 * sgemm reached about 18% of the FMA peak on VGG19's convolutions (Zen 5, AVX-512). The
 * planner times this against MKL per layer.
 *
 * B is packed once into panels of NR columns, each panel k x NR contiguous (zero-padded past
 * n), so a microkernel reads it with unit stride. The microkernel holds an MR x NR block of C
 * in registers and, per k, broadcasts MR values of A against the panel row:
 *   AVX-512: MR 8 x NR 32 (16 accumulators), AVX2+FMA: MR 6 x NR 16 (12), portable: 4 x 16.
 * Blocking: KC rows of a panel (KC x NR floats, 16 KB at NR 32) stay in L1 while every MR-row
 * block of an MC-row chunk of A (MC x KC, 128 KB, in L2) passes over them; C accumulates in
 * place across the K blocks. Threads split the rows of A in MC chunks.
 *
 * One row of A (a batch of 1) is a matrix-vector product: a streaming kernel over the panels
 * instead of the microkernel, which would compute MR - 1 rows for nothing.
 *
 * The variant (and so NR) is fixed when B is packed: a packed B always runs the microkernel it
 * was packed for, even if the ISA cap changes later. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if SI_X86
#include <immintrin.h>
#endif

#define KC 128
#define MC 256
#define MAX_MR 8

/* ---- microkernels: c[r][0, cols) (+)= sum_{kk < kc} a[r][kk] * b[kk][0, NR), r < rows ----- */

static void uk_portable(const float *const *a, const float *b, int64_t kc, float *c, int64_t ldc, int rows, int cols,
                        int acc, const float *pf) {
    (void)pf;
    float t[4][16] = {{0}};
    for (int64_t kk = 0; kk < kc; kk++)
        for (int r = 0; r < 4; r++) {
            const float av = a[r][kk];
            for (int j = 0; j < 16; j++) t[r][j] += av * b[kk * 16 + j];
        }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) c[r * ldc + j] = acc ? c[r * ldc + j] + t[r][j] : t[r][j];
}

#if SI_X86
/* The x86 microkernels are specialised per row count R (the driver's blocks are 1..MR rows),
 * so a short block computes its rows only (VGG19's 7x7-tile layers have 49 rows: 7 blocks of
 * 7, where blocks of 8 computed 56). */
/* AVX2 has 16 ymm registers: 12 sums, 2 of B and a broadcast leave one. The sums are named
 * variables and the column masks are made after the loop: with the sums in an array and the
 * masks live across it, GCC 12 kept 17 vectors and stored all 12 sums to the stack every
 * k step, and the 6-row kernel ran at about half the FMA rate (VGG19's F(4x4) GEMMs on Zen 5
 * capped to AVX2: 26 of 64 GMAC/s a core). */
#define UK2_R1(X) X(0)
#define UK2_R2(X) UK2_R1(X) X(1)
#define UK2_R3(X) UK2_R2(X) X(2)
#define UK2_R4(X) UK2_R3(X) X(3)
#define UK2_R5(X) UK2_R4(X) X(4)
#define UK2_R6(X) UK2_R5(X) X(5)
#define UK2_DECL(i) __m256 t##i##_0 = _mm256_setzero_ps(), t##i##_1 = _mm256_setzero_ps(); \
    const float *a##i = a[i];
#define UK2_STEP(i)                                                                         \
    {                                                                                       \
        const __m256 av = _mm256_broadcast_ss(a##i + kk);                                   \
        t##i##_0 = _mm256_fmadd_ps(av, b0, t##i##_0);                                       \
        t##i##_1 = _mm256_fmadd_ps(av, b1, t##i##_1);                                       \
    }
#define UK2_OUT(i)                                                                          \
    {                                                                                       \
        float *cr = c + (i) * ldc;                                                          \
        __m256 v0 = t##i##_0, v1 = t##i##_1;                                                \
        if (acc) {                                                                          \
            v0 = _mm256_add_ps(v0, _mm256_maskload_ps(cr, m0));                             \
            v1 = _mm256_add_ps(v1, _mm256_maskload_ps(cr + 8, m1));                         \
        }                                                                                   \
        _mm256_maskstore_ps(cr, m0, v0);                                                    \
        _mm256_maskstore_ps(cr + 8, m1, v1);                                                \
    }
#define UK2_BODY(H)                                                                         \
    SI_TARGET_AVX2 static __attribute__((noinline)) void uk_avx2_##H(                       \
        const float *const *a, const float *b, int64_t kc, float *c, int64_t ldc, int cols, int acc, \
        const float *pf) {                                                                  \
        UK2_R##H(UK2_DECL)                                                                  \
        for (int64_t kk = 0; kk < kc; kk++) {                                               \
            _mm_prefetch((const char *)(pf + kk * 16), _MM_HINT_T0);                        \
            const __m256 b0 = _mm256_loadu_ps(b + kk * 16), b1 = _mm256_loadu_ps(b + kk * 16 + 8); \
            UK2_R##H(UK2_STEP)                                                              \
        }                                                                                   \
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                     \
        const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane);               \
        const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8), lane);           \
        UK2_R##H(UK2_OUT)                                                                   \
    }
UK2_BODY(1)
UK2_BODY(2)
UK2_BODY(3)
UK2_BODY(4)
UK2_BODY(5)
UK2_BODY(6)

SI_TARGET_AVX2 static void uk_avx2(const float *const *a, const float *b, int64_t kc, float *c, int64_t ldc, int rows,
                                   int cols, int acc, const float *pf) {
    switch (rows) {
    case 1: uk_avx2_1(a, b, kc, c, ldc, cols, acc, pf); break;
    case 2: uk_avx2_2(a, b, kc, c, ldc, cols, acc, pf); break;
    case 3: uk_avx2_3(a, b, kc, c, ldc, cols, acc, pf); break;
    case 4: uk_avx2_4(a, b, kc, c, ldc, cols, acc, pf); break;
    case 5: uk_avx2_5(a, b, kc, c, ldc, cols, acc, pf); break;
    default: uk_avx2_6(a, b, kc, c, ldc, cols, acc, pf); break;
    }
}

#define UK_AVX512_BODY(R)                                                                   \
    do {                                                                                    \
        __m512 t[R][2];                                                                     \
        for (int r = 0; r < R; r++) t[r][0] = t[r][1] = _mm512_setzero_ps();                \
        for (int64_t kk = 0; kk < kc; kk++) {                                               \
            _mm_prefetch((const char *)(pf + kk * 16), _MM_HINT_T0);                        \
            const __m512 b0 = _mm512_loadu_ps(b + kk * 32), b1 = _mm512_loadu_ps(b + kk * 32 + 16); \
            for (int r = 0; r < R; r++) {                                                   \
                const __m512 av = _mm512_set1_ps(a[r][kk]);                                 \
                t[r][0] = _mm512_fmadd_ps(av, b0, t[r][0]);                                 \
                t[r][1] = _mm512_fmadd_ps(av, b1, t[r][1]);                                 \
            }                                                                               \
        }                                                                                   \
        for (int r = 0; r < R; r++) {                                                       \
            float *cr = c + r * ldc;                                                        \
            __m512 v0 = t[r][0], v1 = t[r][1];                                              \
            if (acc) {                                                                      \
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));                      \
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr + 16));                 \
            }                                                                               \
            _mm512_mask_storeu_ps(cr, m0, v0);                                              \
            _mm512_mask_storeu_ps(cr + 16, m1, v1);                                         \
        }                                                                                   \
    } while (0)

SI_TARGET_AVX512 static void uk_avx512(const float *const *a, const float *b, int64_t kc, float *c, int64_t ldc,
                                       int rows, int cols, int acc, const float *pf) {
    const __mmask16 m0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1u);
    const __mmask16 m1 = cols >= 32 ? (__mmask16)0xFFFF : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1u);
    switch (rows) {
    case 1: UK_AVX512_BODY(1); break;
    case 2: UK_AVX512_BODY(2); break;
    case 3: UK_AVX512_BODY(3); break;
    case 4: UK_AVX512_BODY(4); break;
    case 5: UK_AVX512_BODY(5); break;
    case 6: UK_AVX512_BODY(6); break;
    case 7: UK_AVX512_BODY(7); break;
    default: UK_AVX512_BODY(8); break;
    }
}
#endif

/* ---- one row of A (batch 1): y[p*NR + j] = sum_k x[k] * panel_p[k][j] ------------------
 * Every weight is used once, so this streams B. The panel's k rows go as four contiguous
 * quarters read side by side, four streams as fc_gemv's four rows are (one sequential
 * stream per thread read VGG19's fc6 at 27 GB/s against fc_gemv's 30, Intel SPR), each
 * with its own accumulators. */

static void gv_portable(const float *x, const float *b, int64_t k, float *y, int cols) {
    float t[16] = {0};
    for (int64_t kk = 0; kk < k; kk++)
        for (int j = 0; j < 16; j++) t[j] += x[kk] * b[kk * 16 + j];
    for (int j = 0; j < cols; j++) y[j] = t[j];
}

#if SI_X86
SI_TARGET_AVX2 static void gv_avx2(const float *x, const float *b, int64_t k, float *y, int cols) {
    __m256 t[4][2];
    for (int u = 0; u < 4; u++) t[u][0] = t[u][1] = _mm256_setzero_ps();
    const int64_t q = k / 4;
    for (int64_t kk = 0; kk < q; kk++)
        for (int u = 0; u < 4; u++) {
            const int64_t r = u * q + kk;
            const __m256 xv = _mm256_broadcast_ss(x + r);
            t[u][0] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(b + r * 16), t[u][0]);
            t[u][1] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(b + r * 16 + 8), t[u][1]);
        }
    for (int64_t kk = 4 * q; kk < k; kk++) {
        const __m256 xv = _mm256_broadcast_ss(x + kk);
        t[0][0] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(b + kk * 16), t[0][0]);
        t[0][1] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(b + kk * 16 + 8), t[0][1]);
    }
    float o[16];
    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(t[0][0], t[1][0]), _mm256_add_ps(t[2][0], t[3][0])));
    _mm256_storeu_ps(o + 8, _mm256_add_ps(_mm256_add_ps(t[0][1], t[1][1]), _mm256_add_ps(t[2][1], t[3][1])));
    for (int j = 0; j < cols; j++) y[j] = o[j];
}

SI_TARGET_AVX512 static void gv_avx512(const float *x, const float *b, int64_t k, float *y, int cols) {
    __m512 t[4][2];
    for (int u = 0; u < 4; u++) t[u][0] = t[u][1] = _mm512_setzero_ps();
    const int64_t q = k / 4;
    for (int64_t kk = 0; kk < q; kk++)
        for (int u = 0; u < 4; u++) {
            const int64_t r = u * q + kk;
            const __m512 xv = _mm512_set1_ps(x[r]);
            t[u][0] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(b + r * 32), t[u][0]);
            t[u][1] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(b + r * 32 + 16), t[u][1]);
        }
    for (int64_t kk = 4 * q; kk < k; kk++) {
        const __m512 xv = _mm512_set1_ps(x[kk]);
        t[0][0] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(b + kk * 32), t[0][0]);
        t[0][1] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(b + kk * 32 + 16), t[0][1]);
    }
    const __mmask16 m0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1u);
    const __mmask16 m1 = cols >= 32 ? (__mmask16)0xFFFF : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1u);
    _mm512_mask_storeu_ps(y, m0, _mm512_add_ps(_mm512_add_ps(t[0][0], t[1][0]), _mm512_add_ps(t[2][0], t[3][0])));
    _mm512_mask_storeu_ps(y + 16, m1, _mm512_add_ps(_mm512_add_ps(t[0][1], t[1][1]), _mm512_add_ps(t[2][1], t[3][1])));
}
#endif

/* ---- packing -------------------------------------------------------------------------- */

si_status_t si_pack_b(const char *layer, const float *w, int64_t n, int64_t k, si_packed_b *out) {
    memset(out, 0, sizeof *out);
    const si_isa isa = si_isa_active();
#if SI_X86
    if (isa >= SI_ISA_AVX512) { out->uk = uk_avx512; out->gv = gv_avx512; out->mr = 8; out->nr = 32; }
    else if (isa == SI_ISA_AVX2) { out->uk = uk_avx2; out->gv = gv_avx2; out->mr = 6; out->nr = 16; }
    else
#endif
    { out->uk = uk_portable; out->gv = gv_portable; out->mr = 4; out->nr = 16; }
    (void)isa;
    out->n = n;
    out->k = k;
    out->n_pad = (n + out->nr - 1) / out->nr * out->nr;
    int64_t floats;
    if (!si_mul_ok(out->n_pad, k > 0 ? k : 1, &floats) || floats > (INT64_C(1) << 38))
        return si_fail(SI_ERR_MODEL, "layer %s: %lld x %lld weights are too many to pack", layer, (long long)n,
                       (long long)k);
    out->b = si_alloc((size_t)floats * sizeof(float));
    if (!out->b) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory packing its weights (%lld MB)", layer,
                                (long long)(floats * 4 >> 20));
    const int nr = out->nr;
    for (int64_t p = 0; p < out->n_pad / nr; p++) {
        float *dst = out->b + p * k * nr;
        for (int64_t kk = 0; kk < k; kk++)
            for (int j = 0; j < nr; j++) {
                int64_t col = p * nr + j;
                dst[kk * nr + j] = col < n ? w[col * k + kk] : 0.0f;
            }
    }
    return SI_OK;
}

void si_packed_b_free(si_packed_b *b) {
    si_free(b->b);
    b->b = NULL;
}

int64_t si_packed_b_bytes(const si_packed_b *b) { return 4 * b->n_pad * b->k; }

/* The state of the registry entries that run on packed weights (conv_gemm_packed,
 * fc_gemm_packed): the layer's dense form, packed. */
si_status_t si_packed_prepare(si_layer *L, void **state) {
    si_packed_b *b = calloc(1, sizeof *b);
    if (!b) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name);
    si_status_t st = si_pack_b(L->name, L->w, L->rows, L->cols, b);
    if (st) { free(b); return st; }
    *state = b;
    return SI_OK;
}

void si_packed_release(void *state) {
    if (state) { si_packed_b_free(state); free(state); }
}

int64_t si_packed_bytes(const si_layer *L, const void *state) {
    (void)L;
    return state ? si_packed_b_bytes(state) : 0;
}

/* ---- the driver ------------------------------------------------------------------------ */

/* Rows [m0, m1) of C. */
static void gemm_rows(const float *A, int64_t lda, int64_t m0, int64_t m1, const si_packed_b *B, float *C, int64_t ldc) {
    const int mr = B->mr, nr = B->nr;
    const int64_t k = B->k, panels = B->n_pad / nr;
    const float *arow[MAX_MR];
    const int64_t bsize = B->n_pad * k;
    if (k == 0) {
        for (int64_t r = m0; r < m1; r++) memset(C + r * ldc, 0, sizeof(float) * (size_t)B->n);
        return;
    }
    for (int64_t mc = m0; mc < m1; mc += MC) {
        const int64_t me = mc + MC < m1 ? mc + MC : m1;
        for (int64_t p = 0; p < panels; p++) {
            const int cols = (int)(B->n - p * nr < nr ? B->n - p * nr : nr);
            for (int64_t kb = 0; kb < k; kb += KC) {
                const int64_t kc = k - kb < KC ? k - kb : KC;
                const float *bp = B->b + p * k * nr + kb * nr;
                /* B is packed in the order it is read, so the blocks to come follow this one:
                 * the j-th row block prefetches the j-th kc lines past it, and the row blocks
                 * of one B block together pull the next ones in while its FMAs run (the
                 * hardware prefetcher alone left the first pass over each block waiting on
                 * memory: a 49-row layer with 1 MB per B ran at 2/3 of the FMA rate). */
                int64_t pf = p * k * nr + (kb + kc) * nr; /* offset in B->b */
                /* blocks of equal height (at most MR) rather than full blocks and a short one */
                const int64_t nblk = (me - mc + mr - 1) / mr;
                for (int64_t bi = 0; bi < nblk; bi++) {
                    const int64_t r = mc + (me - mc) * bi / nblk;
                    const int rows = (int)(mc + (me - mc) * (bi + 1) / nblk - r);
                    /* the portable kernel computes MR rows: those past the block read row r
                     * again (valid memory) and are not stored */
                    for (int i = 0; i < mr; i++) arow[i] = A + (r + (i < rows ? i : 0)) * lda + kb;
                    if (pf + kc * 16 > bsize) pf = bp - B->b; /* past the end: this block again */
                    B->uk(arow, bp, kc, C + r * ldc + p * nr, ldc, rows, cols, kb > 0, B->b + pf);
                    pf += kc * 16;
                }
            }
        }
    }
}

/* One row: threads split the panels (the weights stream once, like fc_gemv's rows). */
static void gemv_packed(const float *x, const si_packed_b *B, float *y) {
    const int64_t panels = B->n_pad / B->nr, k = B->k;
    if (k == 0) { memset(y, 0, sizeof(float) * (size_t)B->n); return; }
    int nt = si_threads_for(B->n_pad * k / 4, panels);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t p = 0; p < panels; p++) {
        const int cols = (int)(B->n - p * B->nr < B->nr ? B->n - p * B->nr : B->nr);
        B->gv(x, B->b + p * k * B->nr, k, y + p * B->nr, cols);
    }
}

void si_sgemm_packed_rows(const float *A, int64_t lda, int64_t m, const si_packed_b *B, float *C, int64_t ldc) {
    if (m == 1) gemv_packed(A, B, C);
    else if (m > 1) gemm_rows(A, lda, 0, m, B, C, ldc);
}

void si_sgemm_packed(const float *A, int64_t lda, int64_t m, const si_packed_b *B, float *C, int64_t ldc) {
    if (m <= 0) return;
    if (m == 1) { gemv_packed(A, B, C); return; }
    const int64_t chunks = (m + MC - 1) / MC;
    int nt = si_threads_for(m * B->n_pad * (B->k > 0 ? B->k : 1), chunks > 1 ? chunks : 2);
    if (nt <= 1) { gemm_rows(A, lda, 0, m, B, C, ldc); return; }
    /* Few rows (a batch of 8, or a 14x14 layer): split them evenly, in multiples of MR. */
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t blocks = (m + B->mr - 1) / B->mr;
        int64_t r0 = blocks * t / n * B->mr, r1 = blocks * (t + 1) / n * B->mr;
        if (r1 > m) r1 = m;
        if (r0 < r1) gemm_rows(A, lda, r0, r1, B, C, ldc);
    }
}

void si_sgemm_packed_ref(const float *A, int64_t lda, int64_t m, const si_packed_b *B, float *C, int64_t ldc) {
    const int nr = B->nr;
    for (int64_t r = 0; r < m; r++)
        for (int64_t j = 0; j < B->n; j++) {
            const float *bp = B->b + (j / nr) * B->k * nr + j % nr;
            double acc = 0;
            for (int64_t kk = 0; kk < B->k; kk++) acc += (double)A[r * lda + kk] * bp[kk * nr];
            C[r * ldc + j] = (float)acc;
        }
}
