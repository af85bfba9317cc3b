/* int8 CSR kernels (issue 12): int8 weights, uint8 activations, exact int32 sums, one
 * requantization per output (si_requant_f / si_requant_u8 of si_internal.h, bit for bit).
 *
 * csrmv (batch 1, bound by the bytes of the non-zeros: 1 + 2 per non-zero with uint16
 * columns, against 4 + 2 for fp32):
 *  - AVX-512: 16 non-zeros a step (four accumulators). The columns (uint16 widened, or int32) index x as bytes:
 *    vpgatherdd at scale 1 reads the 4 bytes from x + col, vpandd keeps the low one, the
 *    values are sign-extended to int32 (vpmovsxbd) and vpmaddwd multiplies them exactly
 *    (both fit int16, the high halves are 0 * sign). x is never widened, so nothing is
 *    allocated and x (25 KB for VGG fc6) stays in L1. A gather must not read past x's end:
 *    a row's last non-zeros with col > cols - 4 (at most 3, columns strictly increasing)
 *    are added by scalar code first (mv_peel), and the gathers over the rest go unmasked.
 *    Comparing every 16 columns with the limit and masking the gather instead (the former
 *    way) took 0.95 ms warm and 1.35 ms cold against 0.79 and 1.11 ms (fc6 at 4%, one
 *    thread, Sapphire Rapids, both with the prefetch below).
 *  - AVX2: the same with 8 lanes (vpgatherdd ymm), four accumulators, the tail scalar.
 *  - AVX2 without gathers (mv_rows_nogather): the column by a scalar load, x's byte by
 *    vpinsrb from memory, 4 x 8 lanes a step, then as the AVX2 loop. It reads only the
 *    byte at x + col, so nothing is peeled.
 *  - All three prefetch the value and column streams MV_PREFETCH non-zeros ahead.
 *  - portable: four scalar int32 sums.
 *  Rows are split among threads by non-zeros (si_part_rows); the requantization of one row
 *  is the scalar rule.
 *
 *  Which loop is fastest depends on the CPU's gathers, so each is a registry entry of its
 *  own (fc/si_fc_i8.c) and the planner times them on the running CPU: fc_csrmv_i8 the active
 *  ISA's loop (si_i8_csrmv), fc_csrmv_i8_avx2 the AVX2 gather loop where the active ISA is
 *  AVX-512, fc_csrmv_i8_nogather the loop without gathers from AVX2 up (si_i8_csrmv_loop).
 *  Sapphire Rapids, fc6 at 4%, one thread (bench/results/csr8_fc6_spr_session6.txt, medians
 *  of 3 runs): warm, the AVX2 gather loop 0.74 ms and the AVX-512 one 0.76 ms, within noise
 *  (the planner's times swapped their order from load to load; with 2 threads session 5 had
 *  1.48x against 1.35x of fp32), 1.50x and 1.49x the faster fp32 entry; without gathers
 *  0.89 ms, 1.26x. Cold, all about 1.14-1.24 ms, 2.0-2.2x. At 9% cold the loop without
 *  gathers won (2.66 ms against 2.94). AVX-512 forms with vpdpbusd (VNNI) in place of vpand
 *  + vpmaddwd + vpaddd measured no faster (0.73-0.74 against 0.71 ms in one harness): the
 *  loops are bound by the gathers. On AMD Zen 3 vpgatherdd ymm is microcoded (uops.info: 39
 *  uops, one per 8 cycles), so there the loop without gathers is expected to win; not
 *  measured (no Zen 3 here), which is why the planner decides, not a CPU rule.
 *
 * csrmm (batch > 1, and the sparse convolution on im2col rows): the samples are the vector
 * dimension. A panel of up to 64 rows of X is transposed into int32 (zero-extended uint8,
 * stride wp = w rounded up to 16, the pad lanes 0) in ws: P[c * wp + j]. Each non-zero is a
 * broadcast of its value (int32, sign-extended) and wp / 16 (AVX2: wp / 8) vpmaddwd + vpaddd
 * with panel row col[k]: exact, since the panel's high halves are 0. Two non-zeros per step
 * go into two accumulator sets. Row sums go to a per-thread int32 block acc[(r - r0) * wp +
 * j]; when a panel outgrows MM_BLOCK_BYTES (VGG fc6 at 64 samples: 6.4 MB) the columns go in
 * blocks that stay in L2, each row keeping a cursor to its next non-zero, and acc adds up the
 * blocks. The requantization then runs over 16 (8) consecutive rows at a time for each
 * sample: mul / add are contiguous loads, the sums a strided gather from acc, and the output
 * row Y[j * ldy + r0 ..] is a contiguous store.
 *  Threads: with at least as many panels as threads, each thread takes whole panels (its own
 *  slot of ws); otherwise the threads transpose the panels together and split the rows.
 *
 * si_i8_csrmv and si_i8_csrmm run the active ISA's variant (si_isa_active()); plain
 * references sit at the end.
 */
#include "si_internal.h"

#include <string.h>

#include <omp.h>

#if SI_X86
#include <immintrin.h>
#endif

#define MM_PANEL 64                                /* samples per panel */
#define MM_BLOCK_BYTES (INT64_C(512) * 1024)       /* of panel per column block: stays in L2 */

static inline int64_t align64(int64_t b) { return (b + 63) / 64 * 64; }

static inline void store_out(const si_requant *rq, int64_t r, int32_t acc, void *y, int64_t idx) {
    float v = si_requant_f(rq, r, acc);
    if (rq->out_u8) ((uint8_t *)y)[idx] = si_requant_u8(rq, v);
    else ((float *)y)[idx] = v;
}

/* ---- csrmv rows ----------------------------------------------------------------------- */

typedef void (*mv_rows_fn)(const si_csr8_view *A, int64_t r0, int64_t r1, const uint8_t *x, const si_requant *rq,
                           void *y);

#define MV_ROW_SCALAR(COL)                                                                     \
    do {                                                                                       \
        for (; k + 4 <= k1; k += 4) {                                                          \
            a0 += val[k] * (int32_t)x[COL[k]];                                                 \
            a1 += val[k + 1] * (int32_t)x[COL[k + 1]];                                         \
            a2 += val[k + 2] * (int32_t)x[COL[k + 2]];                                         \
            a3 += val[k + 3] * (int32_t)x[COL[k + 3]];                                         \
        }                                                                                      \
        for (; k < k1; k++) a0 += val[k] * (int32_t)x[COL[k]];                                 \
    } while (0)

SI_INLINE void mv_rows_body(const si_csr8_view *A, int64_t r0, int64_t r1, const uint8_t *x, const si_requant *rq,
                            void *y) {
    const int8_t *val = A->val;
    const int32_t *c32 = A->col;
    const uint16_t *c16 = A->col16;
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = A->ptr[r], k1 = A->ptr[r + 1];
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        if (c16) MV_ROW_SCALAR(c16);
        else MV_ROW_SCALAR(c32);
        store_out(rq, r, (a0 + a1) + (a2 + a3), y, r);
    }
}
static void mv_rows_portable(const si_csr8_view *A, int64_t r0, int64_t r1, const uint8_t *x, const si_requant *rq,
                             void *y) {
    mv_rows_body(A, r0, r1, x, rq, y);
}

/* Row r's non-zeros from the end while their column is within 3 of x's end (col > cols - 4,
 * where a 4-byte read at x + col would pass it): their sum, and *k1 lowered past them.
 * Columns strictly increase within a row (the format's rule, checked by the loader), so
 * these are the row's last ones, at most 3, and every column left below *k1 is safe to
 * read 4 bytes at. */
SI_INLINE int32_t mv_peel(const si_csr8_view *A, int64_t k, int64_t *k1, const uint8_t *x) {
    const int64_t lim = A->cols - 3;
    int64_t e = *k1;
    int32_t s = 0;
    if (A->col16)
        while (e > k && A->col16[e - 1] >= lim) { e--; s += A->val[e] * (int32_t)x[A->col16[e]]; }
    else
        while (e > k && A->col[e - 1] >= lim) { e--; s += A->val[e] * (int32_t)x[A->col[e]]; }
    *k1 = e;
    return s;
}

#if SI_X86
/* Prefetch distance of the value and column streams, in non-zeros: 1 KB of values and 2 KB
 * of uint16 columns ahead. Cold (fc6 at 4%, weights from DRAM, one thread, Sapphire Rapids)
 * the masked-gather kernels waited on these streams without it: AVX-512 1.81 ms against
 * 1.35 ms with it, AVX2 2.2 ms against 1.1 ms; 512 and 2048 were within noise of 1024. */
#define MV_PREFETCH 1024
#define MV_PF(P) _mm_prefetch((const char *)(P), _MM_HINT_T0)

/* is16: a constant where inlined, so each column type gets its own loop */
SI_TARGET_AVX512 SI_INLINE void mv_avx512_body(const si_csr8_view *A, int64_t r0, int64_t r1, const uint8_t *x,
                                            const si_requant *rq, void *y, const int is16) {
    const int8_t *val = A->val;
    const int32_t *c32 = A->col;
    const uint16_t *c16 = A->col16;
    const __m512i lo8 = _mm512_set1_epi32(0xFF), z = _mm512_setzero_si512();
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = A->ptr[r], k1 = A->ptr[r + 1];
        int32_t s = mv_peel(A, k, &k1, x);
        __m512i a0 = z, a1 = z, a2 = z, a3 = z;
#define STEP(C, V, ACC)                                                                                             \
    do {                                                                                                            \
        const __m512i xv = _mm512_and_si512(_mm512_i32gather_epi32((C), (const void *)x, 1), lo8);                \
        ACC = _mm512_add_epi32(ACC, _mm512_madd_epi16(xv, _mm512_cvtepi8_epi32(V)));                               \
    } while (0)
#define COLS(K) (is16 ? _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(c16 + (K))))                    \
                     : _mm512_loadu_si512((const void *)(c32 + (K))))
        /* 64 values in one load and (uint16) 32 columns in one, widened from the registers:
         * fewer loads beside the gathers' 16 each. fc6 at 4%, one thread, Sapphire Rapids:
         * 0.71 against 0.75 ms warm in four side-by-side runs; within noise in csr8_bench. */
        for (; k + 64 <= k1; k += 64) {
            MV_PF(val + k + MV_PREFETCH);
            const __m512i vv = _mm512_loadu_si512((const void *)(val + k));
            if (is16) {
                MV_PF(c16 + k + MV_PREFETCH);
                MV_PF(c16 + k + MV_PREFETCH + 32);
                const __m512i cA = _mm512_loadu_si512((const void *)(c16 + k));
                const __m512i cB = _mm512_loadu_si512((const void *)(c16 + k + 32));
                STEP(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(cA)), _mm512_castsi512_si128(vv), a0);
                STEP(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(cA, 1)), _mm512_extracti32x4_epi32(vv, 1), a1);
                STEP(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(cB)), _mm512_extracti32x4_epi32(vv, 2), a2);
                STEP(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(cB, 1)), _mm512_extracti32x4_epi32(vv, 3), a3);
            } else {
                for (int i = 0; i < 64; i += 16) MV_PF(c32 + k + MV_PREFETCH + i);
                STEP(COLS(k), _mm512_castsi512_si128(vv), a0);
                STEP(COLS(k + 16), _mm512_extracti32x4_epi32(vv, 1), a1);
                STEP(COLS(k + 32), _mm512_extracti32x4_epi32(vv, 2), a2);
                STEP(COLS(k + 48), _mm512_extracti32x4_epi32(vv, 3), a3);
            }
        }
        for (; k + 16 <= k1; k += 16) STEP(COLS(k), _mm_loadu_si128((const __m128i *)(val + k)), a0);
#undef STEP
#undef COLS
        a0 = _mm512_add_epi32(a0, a2);
        a1 = _mm512_add_epi32(a1, a3);
        if (k < k1) {
            const __mmask16 m = (__mmask16)((1u << (k1 - k)) - 1u);
            const __m512i c = is16 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, c16 + k))
                                  : _mm512_maskz_loadu_epi32(m, c32 + k);
            const __m512i xv = _mm512_and_si512(_mm512_mask_i32gather_epi32(z, m, c, (const void *)x, 1), lo8);
            const __m512i v = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, val + k));
            a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(xv, v));
        }
        store_out(rq, r, _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1)) + s, y, r);
    }
}

SI_TARGET_AVX512 static void mv_rows_avx512(const si_csr8_view *A, int64_t r0, int64_t r1, const uint8_t *x,
                                    const si_requant *rq, void *y) {
    if (A->col16) mv_avx512_body(A, r0, r1, x, rq, y, 1);
    else mv_avx512_body(A, r0, r1, x, rq, y, 0);
}

/* The AVX2 loops' prefetch of the value and column streams MV_PREFETCH non-zeros ahead, and
 * the sum of their four accumulators' lanes */
SI_TARGET_AVX2 SI_INLINE void mv_pf_avx2(const int8_t *val, const uint16_t *c16, const int32_t *c32, int64_t k,
                                         int is16) {
    MV_PF(val + k + MV_PREFETCH);
    if (is16) {
        MV_PF(c16 + k + MV_PREFETCH);
    } else {
        MV_PF(c32 + k + MV_PREFETCH);
        MV_PF(c32 + k + MV_PREFETCH + 16);
    }
}
SI_TARGET_AVX2 SI_INLINE int32_t hsum4_avx2(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
    const __m256i t = _mm256_add_epi32(_mm256_add_epi32(a0, a2), _mm256_add_epi32(a1, a3));
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
    return _mm_cvtsi128_si32(h);
}

/* is16: a constant where inlined, so each column type gets its own loop */
SI_TARGET_AVX2 SI_INLINE void mv_avx2_body(const si_csr8_view *A, int64_t r0, int64_t r1, const uint8_t *x,
                                        const si_requant *rq, void *y, const int is16) {
    const int8_t *val = A->val;
    const int32_t *c32 = A->col;
    const uint16_t *c16 = A->col16;
    const __m256i lo8 = _mm256_set1_epi32(0xFF), z = _mm256_setzero_si256();
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = A->ptr[r], k1 = A->ptr[r + 1];
        int32_t s = mv_peel(A, k, &k1, x);
        __m256i a0 = z, a1 = z, a2 = z, a3 = z;
#define COLS(K) (is16 ? _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(c16 + (K))))                        \
                     : _mm256_loadu_si256((const __m256i *)(c32 + (K))))
#define STEP(K, ACC)                                                                                                \
    do {                                                                                                            \
        const __m256i xv = _mm256_and_si256(_mm256_i32gather_epi32((const int *)(const void *)x, COLS(K), 1), lo8); \
        const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(val + (K))));                    \
        ACC = _mm256_add_epi32(ACC, _mm256_madd_epi16(xv, v));                                                      \
    } while (0)
        for (; k + 32 <= k1; k += 32) {
            mv_pf_avx2(val, c16, c32, k, is16);
            STEP(k, a0);
            STEP(k + 8, a1);
            STEP(k + 16, a2);
            STEP(k + 24, a3);
        }
        for (; k + 8 <= k1; k += 8) STEP(k, a0);
#undef STEP
#undef COLS
        s += hsum4_avx2(a0, a1, a2, a3);
        for (; k < k1; k++) s += val[k] * (int32_t)x[is16 ? c16[k] : c32[k]];
        store_out(rq, r, s, y, r);
    }
}

SI_TARGET_AVX2 static void mv_rows_avx2(const si_csr8_view *A, int64_t r0, int64_t r1, const uint8_t *x,
                                    const si_requant *rq, void *y) {
    if (A->col16) mv_avx2_body(A, r0, r1, x, rq, y, 1);
    else mv_avx2_body(A, r0, r1, x, rq, y, 0);
}

/* No gathers: each of x's bytes by a scalar load at its column, inserted into a vector
 * (vpinsrb), 4 x 8 lanes a step; the values, products and sums as in the gather loop. Every
 * read is the one byte at x + col, so no row needs peeling. is16: as above. */
SI_TARGET_AVX2 SI_INLINE void mv_nogather_body(const si_csr8_view *A, int64_t r0, int64_t r1, const uint8_t *x,
                                               const si_requant *rq, void *y, const int is16) {
    const int8_t *val = A->val;
    const int32_t *c32 = A->col;
    const uint16_t *c16 = A->col16;
    const __m256i z = _mm256_setzero_si256();
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = A->ptr[r];
        const int64_t k1 = A->ptr[r + 1];
        __m256i a0 = z, a1 = z, a2 = z, a3 = z;
#define XB(I) x[is16 ? c16[k + (I)] : c32[k + (I)]]
#define MADD(ACC, XV, V8)                                                                                           \
    ACC = _mm256_add_epi32(ACC, _mm256_madd_epi16(_mm256_cvtepu8_epi32(XV), _mm256_cvtepi8_epi32(V8)))
        for (; k + 32 <= k1; k += 32) {
            mv_pf_avx2(val, c16, c32, k, is16);
            __m128i p = _mm_cvtsi32_si128(XB(0)), q = _mm_cvtsi32_si128(XB(8));
            __m128i u = _mm_cvtsi32_si128(XB(16)), w = _mm_cvtsi32_si128(XB(24));
#define INS(I)                                                                                                      \
    p = _mm_insert_epi8(p, XB(I), I);                                                                               \
    q = _mm_insert_epi8(q, XB(8 + (I)), I);                                                                         \
    u = _mm_insert_epi8(u, XB(16 + (I)), I);                                                                        \
    w = _mm_insert_epi8(w, XB(24 + (I)), I);
            INS(1) INS(2) INS(3) INS(4) INS(5) INS(6) INS(7)
#undef INS
            const __m256i vv = _mm256_loadu_si256((const __m256i *)(val + k));
            const __m128i vA = _mm256_castsi256_si128(vv), vB = _mm256_extracti128_si256(vv, 1);
            MADD(a0, p, vA);
            MADD(a1, q, _mm_unpackhi_epi64(vA, vA));
            MADD(a2, u, vB);
            MADD(a3, w, _mm_unpackhi_epi64(vB, vB));
        }
        for (; k + 8 <= k1; k += 8) {
            __m128i p = _mm_cvtsi32_si128(XB(0));
            p = _mm_insert_epi8(p, XB(1), 1); p = _mm_insert_epi8(p, XB(2), 2); p = _mm_insert_epi8(p, XB(3), 3);
            p = _mm_insert_epi8(p, XB(4), 4); p = _mm_insert_epi8(p, XB(5), 5); p = _mm_insert_epi8(p, XB(6), 6);
            p = _mm_insert_epi8(p, XB(7), 7);
            MADD(a0, p, _mm_loadl_epi64((const __m128i *)(val + k)));
        }
#undef MADD
        int32_t s = hsum4_avx2(a0, a1, a2, a3);
        for (; k < k1; k++) s += val[k] * (int32_t)XB(0);
#undef XB
        store_out(rq, r, s, y, r);
    }
}

SI_TARGET_AVX2 static void mv_rows_nogather(const si_csr8_view *A, int64_t r0, int64_t r1, const uint8_t *x,
                                            const si_requant *rq, void *y) {
    if (A->col16) mv_nogather_body(A, r0, r1, x, rq, y, 1);
    else mv_nogather_body(A, r0, r1, x, rq, y, 0);
}
#endif

static mv_rows_fn mv_rows_for(si_isa isa) {
#if SI_X86
    if (isa >= SI_ISA_AVX512) return mv_rows_avx512;
    if (isa == SI_ISA_AVX2) return mv_rows_avx2;
#endif
    (void)isa;
    return mv_rows_portable;
}

int si_i8_csrmv_has(si_i8_mv_loop loop) {
    const si_isa isa = si_isa_active();
    switch (loop) {
    case SI_I8_MV_ACTIVE: return 1;
#if SI_X86
    case SI_I8_MV_AVX2: return isa > SI_ISA_AVX2;
    case SI_I8_MV_NOGATHER: return isa >= SI_ISA_AVX2;
#endif
    default: (void)isa; return 0;
    }
}

/* A loop the active ISA does not have (the cap lowered after planning) runs as the active
 * one: never an instruction the cap excludes. */
static mv_rows_fn mv_loop_for(si_i8_mv_loop loop) {
#if SI_X86
    if (si_i8_csrmv_has(loop) && loop == SI_I8_MV_AVX2) return mv_rows_avx2;
    if (si_i8_csrmv_has(loop) && loop == SI_I8_MV_NOGATHER) return mv_rows_nogather;
#endif
    (void)loop;
    return mv_rows_for(si_isa_active());
}

void si_i8_csrmv(const si_csr8_view *A, const uint8_t *x, const si_requant *rq, void *y) {
    si_i8_csrmv_loop(SI_I8_MV_ACTIVE, A, x, rq, y);
}

void si_i8_csrmv_loop(si_i8_mv_loop loop, const si_csr8_view *A, const uint8_t *x, const si_requant *rq, void *y) {
    if (A->rows <= 0) return;
    if (si_use_reference) { si_i8_csrmv_ref(A, x, rq, y); return; }
    const mv_rows_fn fn = mv_loop_for(loop);
    const int64_t nnz = A->ptr[A->rows] - A->ptr[0];
    const int nt = si_threads_for(nnz + A->rows, A->rows);
    if (nt <= 1) { fn(A, 0, A->rows, x, rq, y); return; }
#pragma omp parallel num_threads(nt)
    {
        int64_t r0, r1;
        si_part_rows(A->ptr, 0, A->rows, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        fn(A, r0, r1, x, rq, y);
    }
}

/* ---- csrmm ------------------------------------------------------------------------------
 * block: acc[(r - r0) * wp + j] (first: =, else +=) sum over row r's non-zeros in this
 * column block of val[k] * P[col[k] * wp + j], j < wp, for rows [r0, r1). Non-zeros: all of
 * the row (cur NULL) or from cur[r] to the first column >= cend (cur[r] advanced). */
typedef void (*mm_block_fn)(const si_csr8_view *A, int64_t r0, int64_t r1, const int32_t *P, int wp, int64_t *cur,
                            int64_t cend, int first, int32_t *acc);
/* Y[j * ldy + r] = requant_r(acc[(r - r0) * wp + j]) for r in [r0, r1), j < w */
typedef void (*mm_requant_fn)(const si_requant *rq, int64_t r0, int64_t r1, const int32_t *acc, int wp, int w,
                              void *Y, int64_t ldy);

SI_INLINE int64_t col_at(const si_csr8_view *A, int64_t k) { return A->col16 ? A->col16[k] : A->col[k]; }
SI_INLINE int64_t seg_begin(const si_csr8_view *A, const int64_t *cur, int64_t r) { return cur ? cur[r] : A->ptr[r]; }
SI_INLINE int64_t seg_end(const si_csr8_view *A, int64_t *cur, int64_t r, int64_t cend) {
    if (!cur) return A->ptr[r + 1];
    int64_t k = cur[r], k1 = A->ptr[r + 1];
    if (A->col16) while (k < k1 && A->col16[k] < cend) k++;
    else while (k < k1 && A->col[k] < cend) k++;
    cur[r] = k;
    return k;
}

static void mm_block_portable(const si_csr8_view *A, int64_t r0, int64_t r1, const int32_t *P, int wp, int64_t *cur,
                              int64_t cend, int first, int32_t *acc) {
    int32_t a[MM_PANEL];
    for (int64_t r = r0; r < r1; r++) {
        int64_t k = seg_begin(A, cur, r), k1 = seg_end(A, cur, r, cend);
        int32_t *o = acc + (r - r0) * wp;
        for (int j = 0; j < wp; j++) a[j] = first ? 0 : o[j];
        for (; k < k1; k++) {
            const int32_t v = A->val[k];
            const int32_t *p = P + col_at(A, k) * wp;
            for (int j = 0; j < wp; j++) a[j] += v * p[j];
        }
        for (int j = 0; j < wp; j++) o[j] = a[j];
    }
}

static void mm_requant_portable(const si_requant *rq, int64_t r0, int64_t r1, const int32_t *acc, int wp, int w,
                                void *Y, int64_t ldy) {
    for (int j = 0; j < w; j++)
        for (int64_t r = r0; r < r1; r++) store_out(rq, r, acc[(r - r0) * wp + j], Y, j * ldy + r);
}

#if SI_X86
/* NV vectors of 16 int32 per row (wp = 16 NV), two non-zeros per step in two sets. */
#define MM_BLOCK_AVX512(NV)                                                                                       \
    SI_TARGET_AVX512 static void mm_block_avx512_##NV(const si_csr8_view *A, int64_t r0, int64_t r1,             \
                                                      const int32_t *P, int wp, int64_t *cur, int64_t cend,       \
                                                      int first, int32_t *acc) {                                  \
        (void)wp;                                                                                                 \
        const int8_t *val = A->val;                                                                               \
        for (int64_t r = r0; r < r1; r++) {                                                                       \
            int64_t k = seg_begin(A, cur, r);                                                                     \
            const int64_t k1 = seg_end(A, cur, r, cend);                                                          \
            __m512i a[NV], b[NV];                                                                                 \
            for (int v = 0; v < (NV); v++) a[v] = b[v] = _mm512_setzero_si512();                                  \
            for (; k + 2 <= k1; k += 2) {                                                                         \
                const __m512i s0 = _mm512_set1_epi32(val[k]), s1 = _mm512_set1_epi32(val[k + 1]);                 \
                const int32_t *p0 = P + col_at(A, k) * (16 * (NV)), *p1 = P + col_at(A, k + 1) * (16 * (NV));     \
                for (int v = 0; v < (NV); v++) {                                                                  \
                    a[v] = _mm512_add_epi32(a[v], _mm512_madd_epi16(_mm512_loadu_si512(p0 + 16 * v), s0));        \
                    b[v] = _mm512_add_epi32(b[v], _mm512_madd_epi16(_mm512_loadu_si512(p1 + 16 * v), s1));        \
                }                                                                                                 \
            }                                                                                                     \
            if (k < k1) {                                                                                         \
                const __m512i s0 = _mm512_set1_epi32(val[k]);                                                     \
                const int32_t *p0 = P + col_at(A, k) * (16 * (NV));                                               \
                for (int v = 0; v < (NV); v++)                                                                    \
                    a[v] = _mm512_add_epi32(a[v], _mm512_madd_epi16(_mm512_loadu_si512(p0 + 16 * v), s0));        \
            }                                                                                                     \
            int32_t *o = acc + (r - r0) * (16 * (NV));                                                            \
            for (int v = 0; v < (NV); v++) {                                                                      \
                __m512i t = _mm512_add_epi32(a[v], b[v]);                                                         \
                if (!first) t = _mm512_add_epi32(t, _mm512_loadu_si512(o + 16 * v));                              \
                _mm512_storeu_si512(o + 16 * v, t);                                                               \
            }                                                                                                     \
        }                                                                                                         \
    }
MM_BLOCK_AVX512(1)
MM_BLOCK_AVX512(2)
MM_BLOCK_AVX512(3)
MM_BLOCK_AVX512(4)

static void mm_block_avx512(const si_csr8_view *A, int64_t r0, int64_t r1, const int32_t *P, int wp, int64_t *cur,
                            int64_t cend, int first, int32_t *acc) {
    switch (wp / 16) {
    case 1: mm_block_avx512_1(A, r0, r1, P, wp, cur, cend, first, acc); return;
    case 2: mm_block_avx512_2(A, r0, r1, P, wp, cur, cend, first, acc); return;
    case 3: mm_block_avx512_3(A, r0, r1, P, wp, cur, cend, first, acc); return;
    default: mm_block_avx512_4(A, r0, r1, P, wp, cur, cend, first, acc); return;
    }
}

/* AVX2: NV vectors of 8 (wp = 8 NV, a multiple of 16); two sets up to NV = 4 (16 registers). */
#define MM_BLOCK_AVX2(NV, TWO)                                                                                    \
    SI_TARGET_AVX2 static void mm_block_avx2_##NV(const si_csr8_view *A, int64_t r0, int64_t r1,                 \
                                                  const int32_t *P, int wp, int64_t *cur, int64_t cend,           \
                                                  int first, int32_t *acc) {                                      \
        (void)wp;                                                                                                 \
        const int8_t *val = A->val;                                                                               \
        for (int64_t r = r0; r < r1; r++) {                                                                       \
            int64_t k = seg_begin(A, cur, r);                                                                     \
            const int64_t k1 = seg_end(A, cur, r, cend);                                                          \
            __m256i a[NV], b[NV];                                                                                 \
            for (int v = 0; v < (NV); v++) a[v] = b[v] = _mm256_setzero_si256();                                  \
            if (TWO)                                                                                              \
                for (; k + 2 <= k1; k += 2) {                                                                     \
                    const __m256i s0 = _mm256_set1_epi32(val[k]), s1 = _mm256_set1_epi32(val[k + 1]);             \
                    const int32_t *p0 = P + col_at(A, k) * (8 * (NV)), *p1 = P + col_at(A, k + 1) * (8 * (NV));   \
                    for (int v = 0; v < (NV); v++) {                                                              \
                        a[v] = _mm256_add_epi32(a[v],                                                             \
                                                _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(p0 + 8 * v)), s0)); \
                        b[v] = _mm256_add_epi32(b[v],                                                             \
                                                _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(p1 + 8 * v)), s1)); \
                    }                                                                                             \
                }                                                                                                 \
            for (; k < k1; k++) {                                                                                 \
                const __m256i s0 = _mm256_set1_epi32(val[k]);                                                     \
                const int32_t *p0 = P + col_at(A, k) * (8 * (NV));                                                \
                for (int v = 0; v < (NV); v++)                                                                    \
                    a[v] = _mm256_add_epi32(a[v], _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(p0 + 8 * v)), s0)); \
            }                                                                                                     \
            int32_t *o = acc + (r - r0) * (8 * (NV));                                                             \
            for (int v = 0; v < (NV); v++) {                                                                      \
                __m256i t = TWO ? _mm256_add_epi32(a[v], b[v]) : a[v];                                            \
                if (!first) t = _mm256_add_epi32(t, _mm256_loadu_si256((const __m256i *)(o + 8 * v)));           \
                _mm256_storeu_si256((__m256i *)(o + 8 * v), t);                                                   \
            }                                                                                                     \
        }                                                                                                         \
    }
MM_BLOCK_AVX2(2, 1)
MM_BLOCK_AVX2(4, 1)
MM_BLOCK_AVX2(6, 0)
MM_BLOCK_AVX2(8, 0)

static void mm_block_avx2(const si_csr8_view *A, int64_t r0, int64_t r1, const int32_t *P, int wp, int64_t *cur,
                          int64_t cend, int first, int32_t *acc) {
    switch (wp / 16) {
    case 1: mm_block_avx2_2(A, r0, r1, P, wp, cur, cend, first, acc); return;
    case 2: mm_block_avx2_4(A, r0, r1, P, wp, cur, cend, first, acc); return;
    case 3: mm_block_avx2_6(A, r0, r1, P, wp, cur, cend, first, acc); return;
    default: mm_block_avx2_8(A, r0, r1, P, wp, cur, cend, first, acc); return;
    }
}

/* The rule of si_requant_f / si_requant_u8 on 16 lanes: vfmadd for fmaf, vmaxps(y, 0) for the
 * relu (a NaN gives 0 as fmaxf does), vmaxps / vminps with the bound second (NaN gives the
 * bound, as fmaxf), vcvtps2dq under the default rounding for rintf. */
SI_TARGET_AVX512 static void mm_requant_avx512(const si_requant *rq, int64_t r0, int64_t r1, const int32_t *acc,
                                               int wp, int w, void *Y, int64_t ldy) {
    const int relu = rq->act == SI_ACT_RELU, u8 = rq->out_u8;
    const __m512 zf = _mm512_setzero_ps(), inv = _mm512_set1_ps(rq->inv_scale);
    const __m512 lo = _mm512_set1_ps((float)-rq->zero), hi = _mm512_set1_ps((float)(255 - rq->zero));
    const __m512i zero = _mm512_set1_epi32(rq->zero);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(wp));
    for (int64_t rb = r0; rb < r1; rb += 16) {
        const __mmask16 m = r1 - rb >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (r1 - rb)) - 1u);
        const __m512 mul = _mm512_maskz_loadu_ps(m, rq->mul + rb), add = _mm512_maskz_loadu_ps(m, rq->add + rb);
        const int32_t *a = acc + (rb - r0) * wp;
        for (int j = 0; j < w; j++) {
            const __m512i s = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, (const void *)(a + j), 4);
            __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), mul, add);
            if (relu) y = _mm512_max_ps(y, zf);
            if (u8) {
                __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(y, inv), lo), hi);
                __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(t), zero);
                _mm_mask_storeu_epi8((uint8_t *)Y + j * ldy + rb, m, _mm512_cvtepi32_epi8(q));
            } else {
                _mm512_mask_storeu_ps((float *)Y + j * ldy + rb, m, y);
            }
        }
    }
}

SI_TARGET_AVX2 static void mm_requant_avx2(const si_requant *rq, int64_t r0, int64_t r1, const int32_t *acc, int wp,
                                           int w, void *Y, int64_t ldy) {
    const int relu = rq->act == SI_ACT_RELU, u8 = rq->out_u8;
    const __m256 zf = _mm256_setzero_ps(), inv = _mm256_set1_ps(rq->inv_scale);
    const __m256 lo = _mm256_set1_ps((float)-rq->zero), hi = _mm256_set1_ps((float)(255 - rq->zero));
    const __m256i zero = _mm256_set1_epi32(rq->zero);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(wp));
    int64_t rb = r0;
    for (; rb + 8 <= r1; rb += 8) {
        const __m256 mul = _mm256_loadu_ps(rq->mul + rb), add = _mm256_loadu_ps(rq->add + rb);
        const int32_t *a = acc + (rb - r0) * wp;
        for (int j = 0; j < w; j++) {
            const __m256i s = _mm256_i32gather_epi32((const int *)(a + j), idx, 4);
            __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), mul, add);
            if (relu) y = _mm256_max_ps(y, zf);
            if (u8) {
                __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(y, inv), lo), hi);
                __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(t), zero);
                /* the 8 int32 (each in [0, 255]) to 8 bytes */
                __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
                _mm_storel_epi64((__m128i *)((uint8_t *)Y + j * ldy + rb), _mm_packus_epi16(q16, q16));
            } else {
                _mm256_storeu_ps((float *)Y + j * ldy + rb, y);
            }
        }
    }
    if (rb < r1) mm_requant_portable(rq, rb, r1, acc + (rb - r0) * wp, wp, w, Y, ldy);
}
#endif

typedef struct mm_fns {
    mm_block_fn block;
    mm_requant_fn requant;
} mm_fns;

static mm_fns mm_fns_for(si_isa isa) {
    mm_fns f = {mm_block_portable, mm_requant_portable};
#if SI_X86
    if (isa >= SI_ISA_AVX512) { f.block = mm_block_avx512; f.requant = mm_requant_avx512; }
    else if (isa == SI_ISA_AVX2) { f.block = mm_block_avx2; f.requant = mm_requant_avx2; }
#endif
    (void)isa;
    return f;
}

/* ws: np panels (cols x wpmax int32), then per thread an acc block (rows x wpmax int32) and
 * row cursors (rows int64). */
typedef struct mm_layout {
    int wpmax;
    int64_t panels, np, panel_bytes, slot_bytes;
} mm_layout;

static mm_layout mm_layout_of(const si_csr8_view *A, int64_t n) {
    mm_layout l;
    const int64_t w = n < MM_PANEL ? (n > 0 ? n : 1) : MM_PANEL;
    l.wpmax = (int)((w + 15) / 16 * 16);
    l.panels = (n + MM_PANEL - 1) / MM_PANEL;
    l.np = l.panels < si_max_threads() ? l.panels : si_max_threads();
    if (l.np < 1) l.np = 1;
    l.panel_bytes = align64(A->cols * l.wpmax * 4);
    l.slot_bytes = align64(A->rows * l.wpmax * 4) + align64(A->rows * 8);
    return l;
}

int64_t si_i8_csrmm_ws_bytes(const si_csr8_view *A, int64_t n) {
    const mm_layout l = mm_layout_of(A, n);
    return l.np * l.panel_bytes + (int64_t)si_max_threads() * l.slot_bytes;
}

/* Columns [c0, c1) of panel P (cols x wp int32) from X's rows [s0, s0 + w); lanes past w are 0.
 * In blocks of 64 columns, so the w source rows' stretches and the panel rows stay in L1. */
static void mm_transpose(const uint8_t *X, int64_t ldx, int64_t s0, int w, int wp, int64_t c0, int64_t c1,
                         int32_t *P) {
    for (int64_t cb = c0; cb < c1; cb += 64) {
        const int64_t ce = cb + 64 < c1 ? cb + 64 : c1;
        for (int j = 0; j < w; j++) {
            const uint8_t *x = X + (s0 + j) * ldx;
            for (int64_t c = cb; c < ce; c++) P[c * wp + j] = x[c];
        }
        if (w < wp)
            for (int64_t c = cb; c < ce; c++) memset(P + c * wp + w, 0, sizeof(int32_t) * (size_t)(wp - w));
    }
}

/* The same from blocks of nb samples ([cols][nb] each, si_algo.run_blocked; nb divides
 * MM_PANEL, so a panel is whole blocks): each column's nb bytes widened in one run. */
static void mm_gather_blocked(const uint8_t *X, int nb, int64_t cols, int64_t s0, int w, int wp, int64_t c0,
                              int64_t c1, int32_t *P) {
    for (int j0 = 0; j0 < w; j0 += nb) {
        const uint8_t *blk = X + (s0 + j0) * cols; /* block (s0 + j0) / nb */
        const int k = w - j0 < nb ? w - j0 : nb;
        for (int64_t c = c0; c < c1; c++)
            for (int j = 0; j < k; j++) P[c * wp + j0 + j] = blk[c * nb + j];
    }
    if (w < wp)
        for (int64_t c = c0; c < c1; c++) memset(P + c * wp + w, 0, sizeof(int32_t) * (size_t)(wp - w));
}

static void mm_panel(const uint8_t *X, int64_t ldx, int in_nb, int64_t cols, int64_t s0, int w, int wp, int64_t c0,
                     int64_t c1, int32_t *P) {
    if (in_nb) mm_gather_blocked(X, in_nb, cols, s0, w, wp, c0, c1, P);
    else mm_transpose(X, ldx, s0, w, wp, c0, c1, P);
}

/* Rows [r0, r1) of one panel (w samples from s0) into Y, in column blocks when the panel
 * outgrows MM_BLOCK_BYTES. */
static void mm_rows(const mm_fns *f, const si_csr8_view *A, int64_t r0, int64_t r1, const int32_t *P, int w, int wp,
                    int32_t *acc, int64_t *cur, const si_requant *rq, uint8_t *Ys, int64_t ldy) {
    if (r0 >= r1) return;
    const int64_t cb = MM_BLOCK_BYTES / (4 * wp);
    if (A->cols <= cb) {
        f->block(A, r0, r1, P, wp, NULL, 0, 1, acc);
    } else {
        for (int64_t r = r0; r < r1; r++) cur[r] = A->ptr[r];
        for (int64_t ce = cb; ce - cb < A->cols; ce += cb) f->block(A, r0, r1, P, wp, cur, ce, ce == cb, acc);
    }
    f->requant(rq, r0, r1, acc, wp, w, Ys, ldy);
}

static void csrmm_go(const si_csr8_view *A, const uint8_t *X, int64_t ldx, int in_nb, int64_t n, const si_requant *rq,
                     void *Y, int64_t ldy, void *ws) {
    if (n <= 0 || A->rows <= 0) return;
    const mm_fns f = mm_fns_for(si_isa_active());
    const mm_layout l = mm_layout_of(A, n);
    const int64_t rows = A->rows, cols = A->cols, nnz = A->ptr[rows] - A->ptr[0];
    const int64_t esz = rq->out_u8 ? 1 : 4;
    uint8_t *const base = ws, *const slots = base + l.np * l.panel_bytes;
    const int64_t acc_bytes = align64(rows * l.wpmax * 4);
    int nt = si_threads_for((nnz + rows) * n + cols * n, l.panels > rows ? l.panels : rows);
    if (nt > si_max_threads()) nt = si_max_threads();
    if (l.panels >= nt) {
        /* whole panels per thread, each in its own slot */
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            const int t = omp_get_thread_num();
            int32_t *P = (int32_t *)(void *)(base + t * l.panel_bytes);
            int32_t *acc = (int32_t *)(void *)(slots + t * l.slot_bytes);
            int64_t *cur = (int64_t *)(void *)(slots + t * l.slot_bytes + acc_bytes);
#pragma omp for schedule(dynamic, 1)
            for (int64_t p = 0; p < l.panels; p++) {
                const int64_t s0 = p * MM_PANEL;
                const int w = (int)(n - s0 < MM_PANEL ? n - s0 : MM_PANEL), wp = (w + 15) / 16 * 16;
                mm_panel(X, ldx, in_nb, cols, s0, w, wp, 0, cols, P);
                mm_rows(&f, A, 0, rows, P, w, wp, acc, cur, rq, (uint8_t *)Y + s0 * ldy * esz, ldy);
            }
        }
        return;
    }
    /* fewer panels than threads: every panel in its own slot, built by all, rows split */
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        const int64_t c0 = cols * t / nth, c1 = cols * (t + 1) / nth;
        int32_t *acc = (int32_t *)(void *)(slots + t * l.slot_bytes);
        int64_t *cur = (int64_t *)(void *)(slots + t * l.slot_bytes + acc_bytes);
        for (int64_t p = 0; p < l.panels; p++) {
            const int64_t s0 = p * MM_PANEL;
            const int w = (int)(n - s0 < MM_PANEL ? n - s0 : MM_PANEL), wp = (w + 15) / 16 * 16;
            mm_panel(X, ldx, in_nb, cols, s0, w, wp, c0, c1, (int32_t *)(void *)(base + p * l.panel_bytes));
        }
#pragma omp barrier
        int64_t r0, r1;
        si_part_rows(A->ptr, 0, rows, t, nth, &r0, &r1);
        for (int64_t p = 0; p < l.panels; p++) {
            const int64_t s0 = p * MM_PANEL;
            const int w = (int)(n - s0 < MM_PANEL ? n - s0 : MM_PANEL), wp = (w + 15) / 16 * 16;
            mm_rows(&f, A, r0, r1, (const int32_t *)(void *)(base + p * l.panel_bytes), w, wp, acc, cur, rq,
                    (uint8_t *)Y + s0 * ldy * esz, ldy);
        }
    }
}

void si_i8_csrmm(const si_csr8_view *A, const uint8_t *X, int64_t ldx, int64_t n, const si_requant *rq, void *Y,
                 int64_t ldy, void *ws) {
    if (si_use_reference) si_i8_csrmm_ref(A, X, ldx, n, rq, Y, ldy);
    else csrmm_go(A, X, ldx, 0, n, rq, Y, ldy, ws);
}

void si_i8_csrmm_blocked(const si_csr8_view *A, const uint8_t *X, int nb, int64_t n, const si_requant *rq, void *Y,
                         int64_t ldy, void *ws) {
    csrmm_go(A, X, 0, nb, n, rq, Y, ldy, ws);
}

/* ---- references: plain loops, the scalar rule ---------------------------------------- */

void si_i8_csrmv_ref(const si_csr8_view *A, const uint8_t *x, const si_requant *rq, void *y) {
    for (int64_t r = 0; r < A->rows; r++) {
        int32_t acc = 0;
        for (int64_t k = A->ptr[r]; k < A->ptr[r + 1]; k++) acc += A->val[k] * (int32_t)x[col_at(A, k)];
        store_out(rq, r, acc, y, r);
    }
}

void si_i8_csrmm_ref(const si_csr8_view *A, const uint8_t *X, int64_t ldx, int64_t n, const si_requant *rq, void *Y,
                     int64_t ldy) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < A->rows; r++) {
            int32_t acc = 0;
            for (int64_t k = A->ptr[r]; k < A->ptr[r + 1]; k++) acc += A->val[k] * (int32_t)X[i * ldx + col_at(A, k)];
            store_out(rq, r, acc, Y, i * ldy + r);
        }
}
