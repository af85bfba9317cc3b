/* The runtime's own int8 GEMM on weights packed at load (issue 12): C[m x n] =
 * requant(A[m x k] W^T), A uint8 (im2col rows or a batch of inputs), W int8 n x k in
 * [-127, 127], the products summed exactly in int32 (k <= SI_I8_MAX_COLS), each output
 * requantized by the rule of si_internal.h (si_requant_f, si_requant_u8) to uint8 or float.
 *
 * Layout: W is packed once into panels of NR output columns, k in groups of G consecutive
 * inputs, each group's NR x G bytes contiguous ([panel][k / G][NR][G] int8), zero-padded past
 * n and past k. A microkernel holds an MR x NR block of int32 sums in registers and, per group,
 * broadcasts G bytes of each of its MR rows of A against the panel's group:
 *
 *   AVX-512 VNNI  G 4, MR 14 x NR 32 (28 zmm sums): one vpdpbusd (u8 x s8, four products into
 *                 each int32 lane, no intermediate saturation) per 16 columns. The u8 operand
 *                 is A's broadcast 4 bytes (vpbroadcastd from memory: a load, no shuffle
 *                 port), the s8 one the weights. 14 rows: VGG19's rows per thread at batch 1
 *                 (98 * 4^j) are a multiple of it, and a body per height (1 to 14 rows) lets a
 *                 short block cost its rows. About 90% of vpdpbusd's peak on Sapphire Rapids
 *                 with A and B in cache (8 x 32 with GCC copying the sums as an array: 55%).
 *   AVX-VNNI      G 4, MR 6 x NR 16 (12 ymm sums): the same with the VEX vpdpbusd on ymm, under
 *                 the avx2 cap on CPUs that have AVX-VNNI (Alder Lake and later, Sapphire
 *                 Rapids, Zen 5): 32 products per instruction against the FMA's 8.
 *   AVX2, pair-safe weights (avx2_maddubs)  G 4, MR 5 x NR 16, the AVX-VNNI layout:
 *                 vpmaddubsw (u8 x s8, adjacent products summed in pairs into int16,
 *                 saturating), vpmaddwd by int16 ones (the group's two pairs into int32),
 *                 vpaddd: three uops per 32 products, two of them multiplies, against four FMAs
 *                 for 32 fp32 ones (2x the fp32 GEMM's peak on Intel and Zen 3 alike; about 100
 *                 GMAC/s a core on Sapphire Rapids capped to AVX2). Exact only when no pair of
 *                 weights can make vpmaddubsw saturate (si_i8_pair_safe: each pair's positive
 *                 weights sum to at most 128, and its negative ones to at least -128; the
 *                 quantizer's reduce_range "on" (|w| <= 64) and "pairs" guarantee it).
 *                 si_pack_b8 checks that on the layer's weights and picks this kernel or the
 *                 next: the file's word is not taken for it. 6 rows would need 17 ymm (12
 *                 sums, 2 of B, the ones, A's broadcast, a product) and GCC kept one sum on the
 *                 stack; 5 rows fit. GEMM alone, 1 thread, SPR capped to AVX2: the same on
 *                 VGG19's k >= 576 (84-110 GMAC/s); at k = 27 (block1_conv1) 5 rows and the
 *                 requantization of a full panel at once (rq16_row) took 1.75 ms against 2.18.
 *   AVX2 (avx2_maddwd)  G 2, MR 6 x NR 16 (12 ymm sums): on other weights vpmaddubsw would
 *                 saturate its int16 pair sums
 *                 (255 * 127 * 2 > 32767), so both operands are widened to int16 and multiplied
 *                 by vpmaddwd (exact pairs into int32), then vpaddd. The weights stay int8 in
 *                 memory (a GEMV of batch 1 streams one byte per weight) and are widened by
 *                 vpmovsxbw once per group, shared by the MR rows; the kernel widens its MR rows
 *                 of A into a stack buffer of int16 pairs once per call, so that each broadcast
 *                 is a plain 32-bit load. Per 16 products: one vpmaddwd and one vpaddd.
 *                 AVX-512 CPUs without VNNI run this path too. It is bound by the vector
 *                 ALU ports: two uops per 16 products against one FMA per 8, so at best 1.5x
 *                 the fp32 GEMM on Intel cores (vpmaddwd on 2 of their 3 vector ports, vpaddd
 *                 on any), 2x on Zen 3 / 4 (vpmaddwd on 2 of 4 pipes, vpaddd on all 4).
 *   portable      G 4, MR 4 x NR 16: the reference's loop on the packed layout.
 *
 * Blocking, as ops/si_sgemm.c: KC inputs of a panel (KC x NR bytes) stay in L1 while every
 * MR-row block of an MC-row chunk of A passes over them. The int32 sums of a chunk are kept
 * across the K blocks in a per-thread stack buffer (MC x NR int32, 32 KB); the last K block
 * requantizes straight from the registers into C. vnni512 blocks K only past KC_VNNI: a
 * panel of VGG's k <= 4608 is 147 KB, which stays in L2 with the chunk of A (MC x k, 1.2 MB
 * at most) while each block reads it in order, so the sums never leave the registers (on
 * Sapphire Rapids, K blocks of 512 cost 8-10% in the round trips through the buffer). A is
 * never read past a row's k bytes: the last group of a row whose k is not a multiple of G
 * is read zero-extended (load_tail; the weights past k are zero too).
 *
 * The requantization is vectorized: cvtdq2ps, vfmadd (one rounding, as fmaf), vmaxps with 0,
 * vmulps by inv_scale, vmaxps / vminps clamp, cvtps2dq under the default rounding mode
 * (round half to even, as rintf), + zero, truncated to bytes. For finite values every step
 * rounds as its scalar counterpart does, so all variants agree bit for bit with si_igemm_ref.
 *
 * One row of A (batch 1) is a matrix-vector product at memory bandwidth: a streaming kernel
 * per panel (four k-quarters read side by side, as ops/si_sgemm.c's), the threads splitting
 * the panels. The variant is fixed when W is packed (si_packed_b8.isa, and the private
 * header's kernels), whatever the ISA cap later. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if SI_X86
#include <cpuid.h>
#include <immintrin.h>
#define SI_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#define SI_TARGET_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))
#endif

#define KC 512       /* inputs (bytes of a row of A) per K block; a multiple of every G */
#define KC_VNNI 8192 /* the same for vnni512: the whole k of every VGG layer (see above) */
#define MC 252       /* rows of A per chunk: a multiple of most MR (4, 6, 14; 5 splits into equal blocks) */
#define MAX_MR 14
#define MAX_NR 32
#define GV_CHUNK 2048 /* inputs of x widened at a time by the AVX2 GEMV (4 KB of int16) */

/* 1: use VNNI when the CPU has it (AVX-512 VNNI under the avx512 cap, AVX-VNNI under avx2).
 * The tests and the benchmark set it to 0 to run the vpmaddwd path on a VNNI CPU (read when
 * weights are packed). */
int si_igemm_vnni = 1;
/* 0 ($SPARSEINFER_DISABLE=avxvnni): the CPU's AVX-VNNI (VEX) form left unused, as on Zen 4 */
int si_igemm_avxvnni = 1;
/* 1: pack pair-safe weights for the vpmaddubsw kernel on AVX2 without VNNI; 0 (the tests, the
 * benchmark's "before", SPARSEINFER_DISABLE=maddubs): always the vpmaddwd one. */
int si_igemm_maddubs = 1;

/* Microkernel: rows r < rows of a (pointers to A at the block's first input), kc inputs of
 * the panel block b. Starts from zero (first) or from acc[r * NR + j]; c == NULL: writes the
 * sums back to acc, else requantizes columns j0 + [0, cols) into row r of c (c: the output
 * at row 0, column j0; uint8 or float by rq->out_u8). pf: one cache line per group to
 * prefetch (vnni512: or NULL, none). */
typedef void (*uk8_fn)(const uint8_t *const *a, const int8_t *b, int64_t kc, int32_t *acc, int first, int rows,
                       const int8_t *pf, const si_requant *rq, int64_t j0, int cols, void *c, int64_t ldc);
/* One row x (k inputs) against one whole panel: columns j0 + [0, cols) of c. */
typedef void (*gv8_fn)(const uint8_t *x, const int8_t *b, int64_t k, const si_requant *rq, int64_t j0, int cols,
                       void *c);

typedef struct b8_pack {
    const char *kernel; /* "vnni512", "avx2_vnni", "avx2_maddubs", "avx2_maddwd", "portable" */
    int mr, nr, g;
    int64_t kc;         /* inputs per K block (a multiple of every G) */
    int pf_a;           /* 1: uk's pf is the next rows of A, or NULL, when K is one block (vnni512);
                         * 0, or K in blocks: the next block of B */
    int64_t n_pad, kg;  /* kg: groups of g inputs (k rounded up) */
    int64_t wbytes;     /* of w */
    uk8_fn uk;
    gv8_fn gv;
    int8_t *w;          /* n_pad / nr panels of kg x nr x g bytes */
} b8_pack;

static inline int32_t load4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}
/* n < 4 bytes of a row's last group, zero-extended: never reads past the row. Fixed-size
 * loads: memcpy of n bytes went through a byte loop into the stack and a 4-byte reload
 * (a failed store forwarding per row), 500 cycles a block at k = 27. */
static inline int32_t load_tail(const uint8_t *p, int n) {
    uint16_t lo;
    if (n == 1) return p[0];
    memcpy(&lo, p, 2);
    return n == 2 ? (int32_t)lo : (int32_t)lo | (int32_t)p[2] << 16;
}

/* ---- portable ------------------------------------------------------------------------ */

static void store_row_scalar(const int32_t *t, const si_requant *rq, int64_t j0, int cols, void *c) {
    if (rq->out_u8)
        for (int j = 0; j < cols; j++) ((uint8_t *)c)[j] = si_requant_u8(rq, si_requant_f(rq, j0 + j, t[j]));
    else
        for (int j = 0; j < cols; j++) ((float *)c)[j] = si_requant_f(rq, j0 + j, t[j]);
}

static void uk_portable(const uint8_t *const *a, const int8_t *b, int64_t kc, int32_t *acc, int first, int rows,
                        const int8_t *pf, const si_requant *rq, int64_t j0, int cols, void *c, int64_t ldc) {
    (void)pf;
    int32_t t[4][16];
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < 16; j++) t[r][j] = first ? 0 : acc[r * 16 + j];
    for (int64_t kk = 0; kk < kc; kk++) {
        const int8_t *bk = b + (kk >> 2) * 64 + (kk & 3);
        for (int r = 0; r < rows; r++) {
            const int32_t av = a[r][kk];
            for (int j = 0; j < 16; j++) t[r][j] += av * bk[j * 4];
        }
    }
    const size_t esz = rq->out_u8 ? 1 : sizeof(float);
    for (int r = 0; r < rows; r++) {
        if (!c) memcpy(acc + r * 16, t[r], sizeof t[r]);
        else store_row_scalar(t[r], rq, j0, cols, (char *)c + (size_t)(r * ldc) * esz);
    }
}

static void gv_portable(const uint8_t *x, const int8_t *b, int64_t k, const si_requant *rq, int64_t j0, int cols,
                        void *c) {
    int32_t t[16] = {0};
    for (int64_t kk = 0; kk < k; kk++) {
        const int8_t *bk = b + (kk >> 2) * 64 + (kk & 3);
        for (int j = 0; j < 16; j++) t[j] += (int32_t)x[kk] * bk[j * 4];
    }
    store_row_scalar(t, rq, j0, cols, c);
}

#if SI_X86
/* ---- AVX2: vpmaddwd on widened operands ------------------------------------------------- */

/* 8 sums of columns j0 + [0, 8) -> c (cols <= 8 of them written) */
SI_TARGET_AVX2 SI_INLINE void rq_store8_avx2(__m256i s, const si_requant *rq, int64_t j0, int cols, void *c) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane);
    __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_maskload_ps(rq->mul + j0, m),
                               _mm256_maskload_ps(rq->add + j0, m));
    if (rq->act == SI_ACT_RELU) y = _mm256_max_ps(y, _mm256_setzero_ps());
    if (!rq->out_u8) { _mm256_maskstore_ps((float *)c, m, y); return; }
    __m256 t = _mm256_mul_ps(y, _mm256_set1_ps(rq->inv_scale));
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps((float)-rq->zero)), _mm256_set1_ps((float)(255 - rq->zero)));
    __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(t), _mm256_set1_epi32(rq->zero));
    /* byte 0 of each int32 lane (values in [0, 255]) */
    q = _mm256_shuffle_epi8(q, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8,
                                                12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
    const __m128i v = _mm_unpacklo_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    if (cols >= 8) _mm_storel_epi64((__m128i *)c, v);
    else {
        uint8_t o[16];
        _mm_storeu_si128((__m128i *)o, v);
        memcpy(c, o, (size_t)cols);
    }
}

/* A full panel (16 columns) of rows: the per-column factors loaded once for all the block's
 * rows, each row's two halves requantized as rq_store8_avx2 does (the same operations in the
 * same order, so the same bits) and packed to 16 bytes by one store. At k = 27 (VGG19's
 * block1_conv1) the requantization was a third of the micro-kernel's instructions. */
typedef struct rq16 {
    __m256 m0, a0, m1, a1, inv, lo, hi;
    __m256i z;
    int relu, z0; /* after a ReLU y * inv >= 0 >= -zero: the lower clamp changes nothing; z0: zero == 0 */
} rq16;
SI_TARGET_AVX2 SI_INLINE void rq16_prep(const si_requant *rq, int64_t j0, rq16 *k) {
    k->m0 = _mm256_loadu_ps(rq->mul + j0);
    k->a0 = _mm256_loadu_ps(rq->add + j0);
    k->m1 = _mm256_loadu_ps(rq->mul + j0 + 8);
    k->a1 = _mm256_loadu_ps(rq->add + j0 + 8);
    k->inv = _mm256_set1_ps(rq->inv_scale);
    k->lo = _mm256_set1_ps((float)-rq->zero);
    k->hi = _mm256_set1_ps((float)(255 - rq->zero));
    k->z = _mm256_set1_epi32(rq->zero);
    k->relu = rq->act == SI_ACT_RELU;
    k->z0 = rq->zero == 0;
}
SI_TARGET_AVX2 SI_INLINE __m256 rq16_y(__m256i s, __m256 m, __m256 a, int relu) {
    const __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), m, a);
    return relu ? _mm256_max_ps(y, _mm256_setzero_ps()) : y;
}
/* The rule's steps, less those that change nothing: after a ReLU the lower clamp, with a zero
 * point of 0 its addition (a ReLU's output is usually quantized with zero 0). */
SI_TARGET_AVX2 SI_INLINE __m256i rq16_q(__m256 y, const rq16 *k) {
    __m256 t = _mm256_mul_ps(y, k->inv);
    if (!k->relu) t = _mm256_max_ps(t, k->lo);
    const __m256i q = _mm256_cvtps_epi32(_mm256_min_ps(t, k->hi));
    return k->z0 ? q : _mm256_add_epi32(q, k->z);
}
SI_TARGET_AVX2 SI_INLINE void rq16_row(__m256i s0, __m256i s1, const rq16 *k, const si_requant *rq, char *c) {
    const int relu = rq->act == SI_ACT_RELU;
    const __m256 y0 = rq16_y(s0, k->m0, k->a0, relu), y1 = rq16_y(s1, k->m1, k->a1, relu);
    if (!rq->out_u8) {
        _mm256_storeu_ps((float *)c, y0);
        _mm256_storeu_ps((float *)c + 8, y1);
        return;
    }
    /* values in [0, 255]: int32 -> int16 -> uint8 without saturating; the permutes undo the
     * packs' interleaving of 128-bit lanes */
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(rq16_q(y0, k), rq16_q(y1, k)), 0xD8);
    const __m256i b = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08);
    _mm_storeu_si128((__m128i *)c, _mm256_castsi256_si128(b));
}

/* The SIMD kernels keep each row's sums in named variables (an array of vectors indexed in
 * the loop made GCC copy every sum once per step: 32 extra moves per 16 vpdpbusd), one body
 * per block height R, generated from the list ROWS_R of its rows and called from a switch,
 * so that a short block costs its rows only. */
#define ROWS_1(X) X(0)
#define ROWS_2(X) ROWS_1(X) X(1)
#define ROWS_3(X) ROWS_2(X) X(2)
#define ROWS_4(X) ROWS_3(X) X(3)
#define ROWS_5(X) ROWS_4(X) X(4)
#define ROWS_6(X) ROWS_5(X) X(5)
#define ROWS_7(X) ROWS_6(X) X(6)
#define ROWS_8(X) ROWS_7(X) X(7)
#define ROWS_9(X) ROWS_8(X) X(8)
#define ROWS_10(X) ROWS_9(X) X(9)
#define ROWS_11(X) ROWS_10(X) X(10)
#define ROWS_12(X) ROWS_11(X) X(11)
#define ROWS_13(X) ROWS_12(X) X(12)
#define ROWS_14(X) ROWS_13(X) X(13)
/* the kernel's arguments, passed on to a body */
#define UK_PARAMS                                                                             \
    const uint8_t *const *a, const int8_t *b, int64_t kc, int32_t *acc, int first, const int8_t *pf, \
        const si_requant *rq, int64_t j0, int cols, void *c, int64_t ldc
#define UK_ARGS a, b, kc, acc, first, pf, rq, j0, cols, c, ldc
/* each body a function of its own (noinline): inlined into one switch, the fourteen of
 * vnni512 would share GCC's register allocation */
#define UK_CASE(PREFIX, R) case R: PREFIX##R(UK_ARGS); break;

#define AV_DECL(i) __m256i s##i##_0, s##i##_1; const uint8_t *a##i = a[i];
#define AV_INIT(i)                                                                            \
    s##i##_0 = first ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)(acc + (i) * 16)); \
    s##i##_1 = first ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)(acc + (i) * 16 + 8));
/* One step of 4-byte groups on ymm, by DOT(sum, a, b): AVX-VNNI's vpdpbusd, or on plain AVX2
 * vpmaddubsw + vpmaddwd by int16 ones (needs `ones` in scope; exact on pair-safe weights). */
#define DOT_VNNI(S, A, B) _mm256_dpbusd_avx_epi32(S, A, B)
#define DOT_MADDUBS(S, A, B) _mm256_add_epi32(S, _mm256_madd_epi16(_mm256_maddubs_epi16(A, B), ones))
#define AV_STEP(i, AV, DOT)                                                                   \
    {                                                                                         \
        const __m256i av = _mm256_set1_epi32(AV);                                             \
        s##i##_0 = DOT(s##i##_0, av, b0);                                                     \
        s##i##_1 = DOT(s##i##_1, av, b1);                                                     \
    }
#define AV_FULL(i) AV_STEP(i, load4(a##i + 4 * g), DOT_VNNI)
#define AV_TAIL(i) AV_STEP(i, load_tail(a##i + 4 * full, (int)(kc & 3)), DOT_VNNI)
#define AU_FULL(i) AV_STEP(i, load4(a##i + 4 * g), DOT_MADDUBS)
#define AU_TAIL(i) AV_STEP(i, load_tail(a##i + 4 * full, (int)(kc & 3)), DOT_MADDUBS)
#define AV_OUT16(i) rq16_row(s##i##_0, s##i##_1, &k16, rq, (char *)c + (size_t)((i) * ldc) * esz);
#define AV_OUT(i)                                                                             \
    if (!c) {                                                                                 \
        _mm256_storeu_si256((__m256i *)(acc + (i) * 16), s##i##_0);                           \
        _mm256_storeu_si256((__m256i *)(acc + (i) * 16 + 8), s##i##_1);                       \
    } else {                                                                                  \
        char *cr = (char *)c + (size_t)((i) * ldc) * esz;                                     \
        rq_store8_avx2(s##i##_0, rq, j0, cols, cr);                                           \
        if (cols > 8) rq_store8_avx2(s##i##_1, rq, j0 + 8, cols - 8, cr + 8 * esz);           \
    }

/* rows r < R of a, kc inputs, widened to int16: w[r * KC + t] = a[r][t], zero-padded to an
 * even count (a pair of them is one 32-bit broadcast) */
SI_TARGET_AVX2 SI_INLINE void widen_rows_avx2(const uint8_t *const *a, int R, int64_t kc, int16_t *w) {
    for (int r = 0; r < R; r++) {
        int16_t *d = w + r * KC;
        int64_t kk = 0;
        for (; kk + 16 <= kc; kk += 16)
            _mm256_storeu_si256((__m256i *)(d + kk), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(a[r] + kk))));
        for (; kk < kc; kk++) d[kk] = a[r][kk];
        if (kc & 1) d[kc] = 0;
    }
}

/* widened rows: w##i at row i's int16 pairs */
#define AW_DECL(i) __m256i s##i##_0, s##i##_1; const int16_t *w##i = wa + (i) * KC;
#define AW_STEP(i)                                                                            \
    {                                                                                         \
        const __m256i av = _mm256_set1_epi32(load4((const uint8_t *)(w##i + 2 * g)));         \
        s##i##_0 = _mm256_add_epi32(s##i##_0, _mm256_madd_epi16(av, b0));                     \
        s##i##_1 = _mm256_add_epi32(s##i##_1, _mm256_madd_epi16(av, b1));                     \
    }
#define AW_BODY(NAME, R)                                                                      \
    SI_TARGET_AVX2 static __attribute__((noinline)) void NAME(UK_PARAMS) {                    \
        int16_t wa[R * KC];                                                                   \
        const size_t esz = rq->out_u8 ? 1 : sizeof(float);                                    \
        widen_rows_avx2(a, R, kc, wa);                                                        \
        ROWS_##R(AW_DECL)                                                                     \
        ROWS_##R(AV_INIT)                                                                     \
        const int64_t steps = (kc + 1) / 2;                                                   \
        for (int64_t g = 0; g < steps; g++) {                                                 \
            _mm_prefetch((const char *)(pf + g * 64), _MM_HINT_T0);                           \
            const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + g * 32))); \
            const __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + g * 32 + 16))); \
            ROWS_##R(AW_STEP)                                                                 \
        }                                                                                     \
        ROWS_##R(AV_OUT)                                                                      \
    }
AW_BODY(aw_1, 1)
AW_BODY(aw_2, 2)
AW_BODY(aw_3, 3)
AW_BODY(aw_4, 4)
AW_BODY(aw_5, 5)
AW_BODY(aw_6, 6)

SI_TARGET_AVX2 static void uk_avx2(const uint8_t *const *a, const int8_t *b, int64_t kc, int32_t *acc, int first,
                                   int rows, const int8_t *pf, const si_requant *rq, int64_t j0, int cols, void *c,
                                   int64_t ldc) {
    switch (rows) {
        UK_CASE(aw_, 1) UK_CASE(aw_, 2) UK_CASE(aw_, 3) UK_CASE(aw_, 4) UK_CASE(aw_, 5)
    default: aw_6(UK_ARGS);
    }
}

/* k in chunks of GV_CHUNK inputs, widened to int16 pairs; each chunk's steps go as four
 * quarters read side by side, each with its own sums */
SI_TARGET_AVX2 static void gv_avx2(const uint8_t *x, const int8_t *b, int64_t k, const si_requant *rq, int64_t j0,
                                   int cols, void *c) {
    int16_t wx[GV_CHUNK > KC ? GV_CHUNK : KC];
    __m256i t[4][2];
    for (int u = 0; u < 4; u++) t[u][0] = t[u][1] = _mm256_setzero_si256();
    for (int64_t k0 = 0; k0 < k; k0 += GV_CHUNK) {
        const int64_t kc = k - k0 < GV_CHUNK ? k - k0 : GV_CHUNK;
        const uint8_t *xr = x + k0;
        widen_rows_avx2(&xr, 1, kc, wx);
        const int64_t steps = (kc + 1) / 2, h = steps / 4;
        const int8_t *bb = b + (k0 / 2) * 32;
        for (int64_t g = 0; g < h; g++)
            for (int u = 0; u < 4; u++) {
                const int64_t s = u * h + g;
                const __m256i av = _mm256_set1_epi32(load4((const uint8_t *)(wx + 2 * s)));
                const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(bb + s * 32)));
                const __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(bb + s * 32 + 16)));
                t[u][0] = _mm256_add_epi32(t[u][0], _mm256_madd_epi16(av, b0));
                t[u][1] = _mm256_add_epi32(t[u][1], _mm256_madd_epi16(av, b1));
            }
        for (int64_t s = 4 * h; s < steps; s++) {
            const __m256i av = _mm256_set1_epi32(load4((const uint8_t *)(wx + 2 * s)));
            t[0][0] = _mm256_add_epi32(t[0][0], _mm256_madd_epi16(av, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(bb + s * 32)))));
            t[0][1] = _mm256_add_epi32(t[0][1], _mm256_madd_epi16(av, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(bb + s * 32 + 16)))));
        }
    }
    const size_t esz = rq->out_u8 ? 1 : sizeof(float);
    rq_store8_avx2(_mm256_add_epi32(_mm256_add_epi32(t[0][0], t[1][0]), _mm256_add_epi32(t[2][0], t[3][0])), rq, j0,
                   cols, c);
    if (cols > 8)
        rq_store8_avx2(_mm256_add_epi32(_mm256_add_epi32(t[0][1], t[1][1]), _mm256_add_epi32(t[2][1], t[3][1])), rq,
                       j0 + 8, cols - 8, (char *)c + 8 * esz);
}

/* ---- AVX2 on pair-safe weights: vpmaddubsw + vpmaddwd ------------------------------------- */

/* The AVX-VNNI layout (G 4, NR 16) and blocking; vpdpbusd's one step becomes three: vpmaddubsw
 * (u8 x s8, adjacent products summed in pairs into int16, saturating), vpmaddwd by int16 ones
 * (the two pairs of each 4-byte group into int32, exact) and vpaddd. Exact only on weights
 * where no pair saturates (pair_safe, checked on the real weights when they are packed). */
/* The R x 16 ymm micro-kernel over 4-byte groups (the AVX-VNNI layout; R <= 6, for vpmaddubsw
 * R <= 5), its step FULL / TAIL
 * (AV_ for vpdpbusd, AU_ for vpmaddubsw + vpmaddwd). */
#define G4_BODY(NAME, R, TARGET, FULL, TAIL)                                                  \
    TARGET static __attribute__((noinline)) void NAME(UK_PARAMS) {                            \
        const size_t esz = rq->out_u8 ? 1 : sizeof(float);                                    \
        const __m256i ones = _mm256_set1_epi16(1);                                            \
        (void)ones;                                                                           \
        ROWS_##R(AV_DECL)                                                                     \
        ROWS_##R(AV_INIT)                                                                     \
        const int64_t full = kc >> 2;                                                         \
        for (int64_t g = 0; g < full; g++) {                                                  \
            _mm_prefetch((const char *)(pf + g * 64), _MM_HINT_T0);                           \
            const __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + g * 64));             \
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + g * 64 + 32));        \
            ROWS_##R(FULL)                                                                    \
        }                                                                                     \
        if (kc & 3) {                                                                         \
            const __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + full * 64));          \
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + full * 64 + 32));     \
            ROWS_##R(TAIL)                                                                    \
        }                                                                                     \
        if (c && cols == 16) {                                                                \
            rq16 k16;                                                                         \
            rq16_prep(rq, j0, &k16);                                                          \
            ROWS_##R(AV_OUT16)                                                                \
        } else {                                                                              \
            ROWS_##R(AV_OUT)                                                                  \
        }                                                                                     \
    }
#define AU_BODY(NAME, R) G4_BODY(NAME, R, SI_TARGET_AVX2, AU_FULL, AU_TAIL)
AU_BODY(au_1, 1)
AU_BODY(au_2, 2)
AU_BODY(au_3, 3)
AU_BODY(au_4, 4)
AU_BODY(au_5, 5)
AU_BODY(au_6, 6)

SI_TARGET_AVX2 static void uk_maddubs(const uint8_t *const *a, const int8_t *b, int64_t kc, int32_t *acc, int first,
                                      int rows, const int8_t *pf, const si_requant *rq, int64_t j0, int cols, void *c,
                                      int64_t ldc) {
    switch (rows) {
        UK_CASE(au_, 1) UK_CASE(au_, 2) UK_CASE(au_, 3) UK_CASE(au_, 4) UK_CASE(au_, 5)
    default: au_6(UK_ARGS);
    }
}

/* The GEMV (batch 1) over 4-byte groups by DOT, as the micro-kernels: k in four quarters read
 * side by side, each with its own sums. */
#define GV4_BODY(NAME, TARGET, DOT)                                                           \
    TARGET static void NAME(const uint8_t *x, const int8_t *b, int64_t k, const si_requant *rq, int64_t j0, \
                            int cols, void *c) {                                              \
        const __m256i ones = _mm256_set1_epi16(1);                                            \
        (void)ones;                                                                           \
        __m256i t[4][2];                                                                      \
        for (int u = 0; u < 4; u++) t[u][0] = t[u][1] = _mm256_setzero_si256();               \
        const int64_t full = k >> 2, q = full / 4;                                            \
        for (int64_t g = 0; g < q; g++)                                                       \
            for (int u = 0; u < 4; u++) {                                                     \
                const int64_t s = u * q + g;                                                  \
                const __m256i av = _mm256_set1_epi32(load4(x + 4 * s));                       \
                t[u][0] = DOT(t[u][0], av, _mm256_loadu_si256((const __m256i *)(b + s * 64))); \
                t[u][1] = DOT(t[u][1], av, _mm256_loadu_si256((const __m256i *)(b + s * 64 + 32))); \
            }                                                                                 \
        for (int64_t s = 4 * q; s < full + ((k & 3) != 0); s++) {                             \
            const __m256i av = _mm256_set1_epi32(s < full ? load4(x + 4 * s) : load_tail(x + 4 * s, (int)(k & 3))); \
            t[0][0] = DOT(t[0][0], av, _mm256_loadu_si256((const __m256i *)(b + s * 64)));    \
            t[0][1] = DOT(t[0][1], av, _mm256_loadu_si256((const __m256i *)(b + s * 64 + 32))); \
        }                                                                                     \
        const size_t esz = rq->out_u8 ? 1 : sizeof(float);                                    \
        rq_store8_avx2(_mm256_add_epi32(_mm256_add_epi32(t[0][0], t[1][0]), _mm256_add_epi32(t[2][0], t[3][0])), \
                       rq, j0, cols, c);                                                      \
        if (cols > 8)                                                                         \
            rq_store8_avx2(_mm256_add_epi32(_mm256_add_epi32(t[0][1], t[1][1]), _mm256_add_epi32(t[2][1], t[3][1])), \
                           rq, j0 + 8, cols - 8, (char *)c + 8 * esz);                        \
    }
GV4_BODY(gv_maddubs, SI_TARGET_AVX2, DOT_MADDUBS)

/* ---- AVX2 with AVX-VNNI: vpdpbusd on ymm (the VEX form) -------------------------------------- */

#define AV_BODY(NAME, R) G4_BODY(NAME, R, SI_TARGET_AVXVNNI, AV_FULL, AV_TAIL)
AV_BODY(av_1, 1)
AV_BODY(av_2, 2)
AV_BODY(av_3, 3)
AV_BODY(av_4, 4)
AV_BODY(av_5, 5)
AV_BODY(av_6, 6)

SI_TARGET_AVXVNNI static void uk_avxvnni(const uint8_t *const *a, const int8_t *b, int64_t kc, int32_t *acc,
                                         int first, int rows, const int8_t *pf, const si_requant *rq, int64_t j0,
                                         int cols, void *c, int64_t ldc) {
    switch (rows) {
        UK_CASE(av_, 1) UK_CASE(av_, 2) UK_CASE(av_, 3) UK_CASE(av_, 4) UK_CASE(av_, 5)
    default: av_6(UK_ARGS);
    }
}

GV4_BODY(gv_avxvnni, SI_TARGET_AVXVNNI, DOT_VNNI)

/* ---- AVX-512 VNNI: vpdpbusd ---------------------------------------------------------------- */

/* 16 sums of columns j0 + [0, 16), lanes in m written */
SI_TARGET_VNNI SI_INLINE void rq_store16_avx512(__m512i s, const si_requant *rq, int64_t j0, __mmask16 m, void *c) {
    __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_maskz_loadu_ps(m, rq->mul + j0),
                               _mm512_maskz_loadu_ps(m, rq->add + j0));
    if (rq->act == SI_ACT_RELU) y = _mm512_max_ps(y, _mm512_setzero_ps());
    if (!rq->out_u8) { _mm512_mask_storeu_ps(c, m, y); return; }
    __m512 t = _mm512_mul_ps(y, _mm512_set1_ps(rq->inv_scale));
    t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps((float)-rq->zero)), _mm512_set1_ps((float)(255 - rq->zero)));
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(t), _mm512_set1_epi32(rq->zero));
    _mm512_mask_cvtepi32_storeu_epi8(c, m, q);
}

static inline __mmask16 cols_mask(int cols) {
    return cols >= 16 ? (__mmask16)0xFFFF : cols <= 0 ? 0 : (__mmask16)((1u << cols) - 1u);
}

/* The requantization of a block's 32 columns, loaded once for all its rows: through
 * rq_store16_avx512 every row reloaded mul, add and rq's fields and rebuilt the constants
 * (the byte stores may alias them), about 30 instructions per 16 outputs against 12. */
typedef struct rq32 {
    __m512 mul[2], add[2], inv, lo, hi;
    __m512i zero;
    __mmask16 m[2];
    int relu, u8;
} rq32;

SI_TARGET_VNNI SI_INLINE void rq32_init(rq32 *q, const si_requant *rq, int64_t j0, __mmask16 m0, __mmask16 m1) {
    q->m[0] = m0;
    q->m[1] = m1;
    q->mul[0] = _mm512_maskz_loadu_ps(m0, rq->mul + j0);
    q->add[0] = _mm512_maskz_loadu_ps(m0, rq->add + j0);
    q->mul[1] = _mm512_maskz_loadu_ps(m1, rq->mul + j0 + 16);
    q->add[1] = _mm512_maskz_loadu_ps(m1, rq->add + j0 + 16);
    q->inv = _mm512_set1_ps(rq->inv_scale);
    q->lo = _mm512_set1_ps((float)-rq->zero);
    q->hi = _mm512_set1_ps((float)(255 - rq->zero));
    q->zero = _mm512_set1_epi32(rq->zero);
    q->relu = rq->act == SI_ACT_RELU;
    q->u8 = rq->out_u8;
}

/* a row half's 16 values to int32 in [0, 255]. (Leaving out the steps that change nothing, as
 * rq16_q does, made GCC spill vn_14's sums: 1.3x slower on Zen 5.) */
SI_TARGET_VNNI SI_INLINE __m512i rq32_q(const rq32 *q, __m512 y) {
    const __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(y, q->inv), q->lo), q->hi);
    return _mm512_add_epi32(_mm512_cvtps_epi32(t), q->zero);
}

/* the same steps as rq_store16_avx512: half h (columns 16 h + [0, 16)) of a row */
SI_TARGET_VNNI SI_INLINE void rq32_store(const rq32 *q, int h, __m512i s, void *c) {
    __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), q->mul[h], q->add[h]);
    if (q->relu) y = _mm512_max_ps(y, _mm512_setzero_ps());
    if (!q->u8) { _mm512_mask_storeu_ps(c, q->m[h], y); return; }
    _mm512_mask_cvtepi32_storeu_epi8(c, q->m[h], rq32_q(q, y));
}

/* Both halves of a row: with uint8 output and all 32 columns, the two halves narrowed in
 * registers (vpmovdb) and written by one 32-byte store */
SI_TARGET_VNNI SI_INLINE void rq32_store2(const rq32 *q, __m512i s0, __m512i s1, int has1, void *c) {
    if (!q->u8 || q->m[1] != (__mmask16)0xFFFF) {
        rq32_store(q, 0, s0, c);
        if (has1) rq32_store(q, 1, s1, (char *)c + 16 * (q->u8 ? 1 : sizeof(float)));
        return;
    }
    __m512 y0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0), q->mul[0], q->add[0]);
    __m512 y1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), q->mul[1], q->add[1]);
    if (q->relu) { y0 = _mm512_max_ps(y0, _mm512_setzero_ps()); y1 = _mm512_max_ps(y1, _mm512_setzero_ps()); }
    const __m128i b0 = _mm512_cvtepi32_epi8(rq32_q(q, y0)), b1 = _mm512_cvtepi32_epi8(rq32_q(q, y1));
    _mm256_storeu_si256((__m256i *)c, _mm256_inserti128_si256(_mm256_castsi128_si256(b0), b1, 1));
}

/* vnni512's bodies, one per block height (the rows' lists and the switch: as AVX2's) */
#define VNNI_MR 14

#define VN_DECL(i) __m512i s##i##_0, s##i##_1; const uint8_t *a##i = a[i];
#define VN_INIT(i)                                                                            \
    s##i##_0 = first ? _mm512_setzero_si512() : _mm512_loadu_si512(acc + (i) * 32);           \
    s##i##_1 = first ? _mm512_setzero_si512() : _mm512_loadu_si512(acc + (i) * 32 + 16);
#define VN_STEP(i)                                                                            \
    {                                                                                         \
        const __m512i av = _mm512_set1_epi32(load4(a##i + 4 * g));                            \
        s##i##_0 = _mm512_dpbusd_epi32(s##i##_0, av, b0);                                     \
        s##i##_1 = _mm512_dpbusd_epi32(s##i##_1, av, b1);                                     \
    }
#define VN_TAIL(i)                                                                            \
    {                                                                                         \
        const __m512i av = _mm512_set1_epi32(load_tail(a##i + 4 * full, (int)(kc & 3)));      \
        s##i##_0 = _mm512_dpbusd_epi32(s##i##_0, av, b0);                                     \
        s##i##_1 = _mm512_dpbusd_epi32(s##i##_1, av, b1);                                     \
    }
#define VN_OUT(i)                                                                             \
    if (!c) {                                                                                 \
        _mm512_storeu_si512(acc + (i) * 32, s##i##_0);                                        \
        _mm512_storeu_si512(acc + (i) * 32 + 16, s##i##_1);                                   \
    } else {                                                                                  \
        char *cr = (char *)c + (size_t)((i) * ldc) * esz;                                     \
        rq32_store2(&q, s##i##_0, s##i##_1, m1 != 0, cr);                                     \
    }

/* unrolled so that GCC indexes the rows' pointers by one counter instead of stepping each */
#define VN_BODY(NAME, R)                                                                      \
    SI_TARGET_VNNI static __attribute__((noinline)) void NAME(UK_PARAMS) {                    \
        const size_t esz = rq->out_u8 ? 1 : sizeof(float);                                    \
        const __mmask16 m0 = cols_mask(cols), m1 = cols_mask(cols - 16);                      \
        ROWS_##R(VN_DECL)                                                                     \
        ROWS_##R(VN_INIT)                                                                     \
        const int64_t full = kc >> 2;                                                         \
        if (pf) {                                                                             \
            _Pragma("GCC unroll 4") for (int64_t g = 0; g < full; g++) {                      \
                _mm_prefetch((const char *)(pf + g * 64), _MM_HINT_T0);                       \
                const __m512i b0 = _mm512_loadu_si512(b + g * 128), b1 = _mm512_loadu_si512(b + g * 128 + 64); \
                ROWS_##R(VN_STEP)                                                             \
            }                                                                                 \
        } else {                                                                              \
            _Pragma("GCC unroll 4") for (int64_t g = 0; g < full; g++) {                      \
                const __m512i b0 = _mm512_loadu_si512(b + g * 128), b1 = _mm512_loadu_si512(b + g * 128 + 64); \
                ROWS_##R(VN_STEP)                                                             \
            }                                                                                 \
        }                                                                                     \
        if (kc & 3) {                                                                         \
            const __m512i b0 = _mm512_loadu_si512(b + full * 128), b1 = _mm512_loadu_si512(b + full * 128 + 64); \
            ROWS_##R(VN_TAIL)                                                                 \
        }                                                                                     \
        rq32 q;                                                                               \
        if (c) rq32_init(&q, rq, j0, m0, m1);                                                 \
        ROWS_##R(VN_OUT)                                                                      \
    }

VN_BODY(vn_1, 1)
VN_BODY(vn_2, 2)
VN_BODY(vn_3, 3)
VN_BODY(vn_4, 4)
VN_BODY(vn_5, 5)
VN_BODY(vn_6, 6)
VN_BODY(vn_7, 7)
VN_BODY(vn_8, 8)
VN_BODY(vn_9, 9)
VN_BODY(vn_10, 10)
VN_BODY(vn_11, 11)
VN_BODY(vn_12, 12)
VN_BODY(vn_13, 13)
VN_BODY(vn_14, 14)

SI_TARGET_VNNI static void uk_vnni512(const uint8_t *const *a, const int8_t *b, int64_t kc, int32_t *acc, int first,
                                      int rows, const int8_t *pf, const si_requant *rq, int64_t j0, int cols, void *c,
                                      int64_t ldc) {
    switch (rows) {
        UK_CASE(vn_, 1) UK_CASE(vn_, 2) UK_CASE(vn_, 3) UK_CASE(vn_, 4) UK_CASE(vn_, 5) UK_CASE(vn_, 6)
        UK_CASE(vn_, 7) UK_CASE(vn_, 8) UK_CASE(vn_, 9) UK_CASE(vn_, 10) UK_CASE(vn_, 11) UK_CASE(vn_, 12)
        UK_CASE(vn_, 13)
    default: vn_14(UK_ARGS);
    }
}

/* the panel's groups as four contiguous quarters read side by side (four streams) */
SI_TARGET_VNNI static void gv_vnni512(const uint8_t *x, const int8_t *b, int64_t k, const si_requant *rq, int64_t j0,
                                      int cols, void *c) {
    __m512i t[4][2];
    for (int u = 0; u < 4; u++) t[u][0] = t[u][1] = _mm512_setzero_si512();
    const int64_t full = k >> 2, q = full / 4;
    for (int64_t g = 0; g < q; g++)
        for (int u = 0; u < 4; u++) {
            const int64_t s = u * q + g;
            const __m512i av = _mm512_set1_epi32(load4(x + 4 * s));
            t[u][0] = _mm512_dpbusd_epi32(t[u][0], av, _mm512_loadu_si512(b + s * 128));
            t[u][1] = _mm512_dpbusd_epi32(t[u][1], av, _mm512_loadu_si512(b + s * 128 + 64));
        }
    for (int64_t s = 4 * q; s < full + ((k & 3) != 0); s++) {
        const __m512i av = _mm512_set1_epi32(s < full ? load4(x + 4 * s) : load_tail(x + 4 * s, (int)(k & 3)));
        t[0][0] = _mm512_dpbusd_epi32(t[0][0], av, _mm512_loadu_si512(b + s * 128));
        t[0][1] = _mm512_dpbusd_epi32(t[0][1], av, _mm512_loadu_si512(b + s * 128 + 64));
    }
    const size_t esz = rq->out_u8 ? 1 : sizeof(float);
    const __mmask16 m1 = cols_mask(cols - 16);
    rq_store16_avx512(_mm512_add_epi32(_mm512_add_epi32(t[0][0], t[1][0]), _mm512_add_epi32(t[2][0], t[3][0])), rq, j0,
                      cols_mask(cols), c);
    if (m1)
        rq_store16_avx512(_mm512_add_epi32(_mm512_add_epi32(t[0][1], t[1][1]), _mm512_add_epi32(t[2][1], t[3][1])), rq,
                          j0 + 16, m1, (char *)c + 16 * esz);
}
#endif

/* ---- packing ---------------------------------------------------------------------------- */

/* Can vpmaddubsw multiply these weights without saturating? It sums the products of each
 * pair of adjacent inputs (2t, 2t + 1; the pairs of a 4-byte group) into int16: with
 * activations in [0, 255] the sum lies in [-255 N, 255 P], P the pair's sum of positive
 * weights and N that of the magnitudes of its negative ones, so it is exact iff P <= 128
 * (255 * 128 = 32640 <= 32767) and N <= 128 (-32640 >= -32768). |w| <= 64 (the quantizer's
 * reduce_range) guarantees it; +-127 pairs of opposite signs pass too. Read from the
 * weights themselves, never from what the file claims. The pair past an odd k is (w, 0). */
int si_i8_pair_safe(const int8_t *w, int64_t n, int64_t k) {
    for (int64_t j = 0; j < n; j++) {
        const int8_t *r = w + j * k;
        for (int64_t t = 0; t < k; t += 2) {
            const int x = r[t], y = t + 1 < k ? r[t + 1] : 0;
            const int p = (x > 0 ? x : 0) + (y > 0 ? y : 0), q = (x < 0 ? -x : 0) + (y < 0 ? -y : 0);
            if (p > 128 || q > 128) return 0;
        }
    }
    return 1;
}

/* The VNNI forms the kernels may use here: SI_VNNI_AVX (AVX-VNNI, the VEX vpdpbusd / vpdpwssd on
 * ymm: Alder Lake and later, Sapphire Rapids, Zen 5) and SI_VNNI_512 (AVX-512 VNNI: Ice Lake,
 * Zen 4, Sapphire Rapids), without those $SPARSEINFER_DISABLE names ("vnni": both; "avxvnni":
 * the VEX form, as on Zen 4 and Ice Lake, which have only the AVX-512 one). CPUID leaf 7:
 * subleaf 0 ECX bit 11 AVX512_VNNI, subleaf 1 EAX bit 4 AVX-VNNI (read directly: clang-14's
 * __builtin_cpu_supports has no "avxvnni"); the OS's saving of the registers is what the ISA
 * check (si_isa_active) already established. The ISA cap decides which form applies: the VEX
 * one is not an AVX-512 instruction, so a Zen 4 capped to avx2 has no VNNI. */
int si_cpu_vnni(void) {
#if SI_X86
    if (!si_igemm_vnni) return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int v512 = (c >> 11) & 1;
    const int v256 = __get_cpuid_count(7, 1, &a, &b, &c, &d) ? (a >> 4) & 1 : 0;
    return (v512 ? SI_VNNI_512 : 0) | (v256 && si_igemm_avxvnni ? SI_VNNI_AVX : 0);
#else
    return 0;
#endif
}

/* The one VNNI form the kernels use under the ISA cap: SI_VNNI_512 (zmm) at the avx512 cap,
 * else SI_VNNI_AVX (the VEX form on ymm) from the avx2 cap up, else 0 */
int si_vnni_form(void) {
    const si_isa isa = si_isa_active();
    const int v = si_cpu_vnni();
    if (isa >= SI_ISA_AVX512 && (v & SI_VNNI_512)) return SI_VNNI_512;
    if (isa >= SI_ISA_AVX2 && (v & SI_VNNI_AVX)) return SI_VNNI_AVX;
    return 0;
}

si_status_t si_pack_b8(const char *layer, const int8_t *w, int64_t n, int64_t k, si_packed_b8 *out) {
    memset(out, 0, sizeof *out);
    b8_pack h = {"portable", 4, 16, 4, KC, 0, 0, 0, 0, uk_portable, gv_portable, NULL};
    si_isa isa = si_isa_active();
#if SI_X86
    const int vnni = si_vnni_form();
    if (vnni == SI_VNNI_512) {
        h = (b8_pack){"vnni512", VNNI_MR, 32, 4, KC_VNNI, 1, 0, 0, 0, uk_vnni512, gv_vnni512, NULL};
        isa = SI_ISA_AVX512;
    } else if (vnni == SI_VNNI_AVX) {
        h = (b8_pack){"avx2_vnni", 6, 16, 4, KC, 0, 0, 0, 0, uk_avxvnni, gv_avxvnni, NULL};
        isa = SI_ISA_AVX2;
    } else if (isa >= SI_ISA_AVX2 && si_igemm_maddubs && si_i8_pair_safe(w, n, k)) {
        h = (b8_pack){"avx2_maddubs", 5, 16, 4, KC, 0, 0, 0, 0, uk_maddubs, gv_maddubs, NULL};
        isa = SI_ISA_AVX2;
    } else if (isa >= SI_ISA_AVX2) {
        h = (b8_pack){"avx2_maddwd", 6, 16, 2, KC, 0, 0, 0, 0, uk_avx2, gv_avx2, NULL};
        isa = SI_ISA_AVX2;
    } else
#endif
        isa = SI_ISA_PORTABLE;
    if (n < 0 || k < 0 || k > SI_I8_MAX_COLS)
        return si_fail(SI_ERR_MODEL, "layer %s: int8 weights of %lld x %lld: inputs must be in [0, %d]", layer,
                       (long long)n, (long long)k, SI_I8_MAX_COLS);
    h.n_pad = (n + h.nr - 1) / h.nr * h.nr;
    h.kg = (k + h.g - 1) / h.g;
    if (!si_mul_ok(h.n_pad, h.kg * h.g, &h.wbytes) || h.wbytes > (INT64_C(1) << 40))
        return si_fail(SI_ERR_MODEL, "layer %s: %lld x %lld weights are too many to pack", layer, (long long)n,
                       (long long)k);
    const size_t head = (sizeof(b8_pack) + 63) / 64 * 64;
    unsigned char *mem = si_alloc(head + (size_t)h.wbytes);
    if (!mem)
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory packing its int8 weights (%lld MB)", layer,
                       (long long)(h.wbytes >> 20));
    h.w = (int8_t *)(mem + head);
    const int nr = h.nr, g = h.g;
    for (int64_t p = 0; p < h.n_pad / nr; p++)
        for (int64_t gi = 0; gi < h.kg; gi++) {
            int8_t *d = h.w + ((p * h.kg + gi) * nr) * g;
            for (int j = 0; j < nr; j++)
                for (int q = 0; q < g; q++) {
                    const int64_t col = p * nr + j, kk = gi * g + q;
                    d[j * g + q] = col < n && kk < k ? w[col * k + kk] : 0;
                }
        }
    memcpy(mem, &h, sizeof h);
    out->b = mem;
    out->n = n;
    out->k = k;
    out->bytes = (int64_t)head + h.wbytes;
    out->isa = isa;
    return SI_OK;
}

/* The microkernel packed weights run ("vnni512", "avx2_vnni", "avx2_maddubs", "avx2_maddwd",
 * "portable"), for
 * the tests and the benchmark (not in si_internal.h: nothing else needs it). */
const char *si_igemm_kernel_name(const si_packed_b8 *b);
const char *si_igemm_kernel_name(const si_packed_b8 *b) { return b->b ? ((const b8_pack *)b->b)->kernel : "none"; }

int si_igemm_has_vnni(void) { return si_vnni_form() != 0; }

const char *si_int8_isa_name(void) {
    si_init();
#if SI_X86
    const int v = si_vnni_form();
    if (v == SI_VNNI_512) return "avx512_vnni";
    if (v == SI_VNNI_AVX) return "avx_vnni";
    if (si_isa_active() >= SI_ISA_AVX2) return "avx2";
#endif
    return "portable";
}

void si_unpack_b8(const si_packed_b8 *B, int8_t *w) {
    const b8_pack *h = B->b;
    const int nr = h->nr, g = h->g;
    for (int64_t col = 0; col < B->n; col++)
        for (int64_t kk = 0; kk < B->k; kk++)
            w[col * B->k + kk] = h->w[((col / nr * h->kg + kk / g) * nr + col % nr) * g + kk % g];
}

void si_packed_b8_free(si_packed_b8 *b) {
    si_free(b->b);
    b->b = NULL;
    b->bytes = 0;
}

/* ---- the driver ------------------------------------------------------------------------- */

/* For a kernel that prefetches A (pf_a): the rows from r on, which the next row block reads,
 * while the current one runs its first panel. A comes from memory once (the chunk's rows
 * then stay in L2 for the other panels), and at batch 1 it is large (block1_conv2's im2col
 * is 29 MB), so the next rows are fetched under the vpdpbusd of these: 1.25x on that layer
 * on one core. The kernel touches one line per group of 4 inputs, 16 k bytes from there:
 * NULL when that would pass row m1. */
static const int8_t *next_rows(const b8_pack *h, const uint8_t *A, int64_t lda, int64_t r, int64_t m1, int64_t k) {
    const int64_t span = (k + h->g - 1) / h->g * 64;
    return r < m1 && (m1 - 1 - r) * lda + k >= span ? (const int8_t *)(A + r * lda) : NULL;
}

/* Rows [m0, m1) and panels [p0, p1) of C. */
static void igemm_block(const uint8_t *A, int64_t lda, int64_t m0, int64_t m1, int64_t p0, int64_t p1,
                        const si_packed_b8 *B, const si_requant *rq, void *C, int64_t ldc) {
    const b8_pack *h = B->b;
    const int mr = h->mr, nr = h->nr;
    const int64_t k = B->k, nkb = k > 0 ? (k + h->kc - 1) / h->kc : 1, gbytes = (int64_t)nr * h->g;
    /* K blocks of equal size (a multiple of 4, so of every G), rather than full ones and a
     * short one: block1_conv2's k = 576 runs as 288 + 288, not 512 + 64 */
    const int64_t kcb = ((k + nkb - 1) / nkb + 3) / 4 * 4;
    const size_t esz = rq->out_u8 ? 1 : sizeof(float);
    int32_t acc[MC * MAX_NR]; /* the chunk's sums between K blocks */
    const uint8_t *arow[MAX_MR];
    for (int64_t mc = m0; mc < m1; mc += MC) {
        const int64_t me = mc + MC < m1 ? mc + MC : m1;
        const int64_t nblk = (me - mc + mr - 1) / mr;
        for (int64_t p = p0; p < p1; p++) {
            const int cols = (int)(B->n - p * nr < nr ? B->n - p * nr : nr);
            const int8_t *panel = h->w + p * h->kg * gbytes;
            for (int64_t kbi = 0; kbi < nkb; kbi++) {
                const int64_t kb = kbi * kcb, kc = k - kb < kcb ? k - kb : kcb;
                const int8_t *bp = panel + kb / h->g * gbytes;
                const int64_t steps = (kc + h->g - 1) / h->g;
                /* the next blocks of B follow this one: the row blocks prefetch them in turn */
                const int8_t *pf = bp + steps * gbytes;
                const int last = kbi == nkb - 1;
                for (int64_t bi = 0; bi < nblk; bi++) {
                    /* blocks of equal height (at most MR) rather than full blocks and a
                     * short one: a thread's 113 rows of block4's 227-row chunks run as 9
                     * blocks of 12-13 rather than 8 x 14 + 1 (a 1-row block is bound by its
                     * loads of B) */
                    const int64_t r = mc + (me - mc) * bi / nblk;
                    const int rows = (int)(mc + (me - mc) * (bi + 1) / nblk - r);
                    /* the portable kernel reads MR pointers: those past the block repeat row r */
                    for (int i = 0; i < mr; i++) arow[i] = A + (r + (i < rows ? i : 0)) * lda + kb;
                    if (pf + steps * 64 > h->w + h->wbytes) pf = bp; /* past the end: this block again */
                    void *c = last ? (char *)C + (size_t)(r * ldc + p * nr) * esz : NULL;
                    const int8_t *pfu = pf;
                    /* pf_a: A's next rows under the first panel; with K blocks (fc6 at batch
                     * 16: 100 MB of weights for 16 rows) the next block of B, as the others */
                    if (h->pf_a && nkb == 1) pfu = p == p0 ? next_rows(h, A, lda, r + rows, m1, k) : NULL;
                    h->uk(arow, bp, kc, acc + (r - mc) * nr, kbi == 0, rows, pfu, rq, p * nr, cols, c, ldc);
                    pf += steps * 64;
                }
            }
        }
    }
}

/* One row, panels [p0, p1). */
static void igemv_panels(const uint8_t *x, const si_packed_b8 *B, const si_requant *rq, void *y, int64_t p0,
                         int64_t p1) {
    const b8_pack *h = B->b;
    const size_t esz = rq->out_u8 ? 1 : sizeof(float);
    for (int64_t p = p0; p < p1; p++) {
        const int cols = (int)(B->n - p * h->nr < h->nr ? B->n - p * h->nr : h->nr);
        h->gv(x, h->w + p * h->kg * h->nr * h->g, B->k, rq, p * h->nr, cols, (char *)y + (size_t)(p * h->nr) * esz);
    }
}

void si_igemm_packed_rows(const uint8_t *A, int64_t lda, int64_t m, const si_packed_b8 *B, const si_requant *rq,
                          void *C, int64_t ldc) {
    if (m <= 0 || B->n <= 0) return;
    const b8_pack *h = B->b;
    if (m == 1) igemv_panels(A, B, rq, C, 0, h->n_pad / h->nr);
    else igemm_block(A, lda, 0, m, 0, h->n_pad / h->nr, B, rq, C, ldc);
}

void si_igemm_packed(const uint8_t *A, int64_t lda, int64_t m, const si_packed_b8 *B, const si_requant *rq, void *C,
                     int64_t ldc) {
    if (m <= 0 || B->n <= 0) return;
    const b8_pack *h = B->b;
    const int64_t panels = h->n_pad / h->nr, blocks = (m + h->mr - 1) / h->mr;
    /* int8 products are a quarter of an FMA's work, about */
    const int64_t work = m * h->n_pad * (B->k > 0 ? B->k : 1) / 4;
    const int nt = si_threads_for(work, blocks > panels ? blocks : panels);
    if (nt <= 1) { si_igemm_packed_rows(A, lda, m, B, rq, C, ldc); return; }
    /* Rows split evenly when there are at least two blocks a thread; else (batch 1, a small
     * batch) the panels: each thread streams its share of the weights once. */
    const int by_rows = m > 1 && blocks >= 2 * nt;
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        if (by_rows) {
            /* a block costs its rows (a kernel body per height): even shares of rows, the
             * runtime's 227-row chunks as 113 + 114, not 112 + 115 */
            const int64_t r0 = m * t / n, r1 = m * (t + 1) / n;
            if (r0 < r1) igemm_block(A, lda, r0, r1, 0, panels, B, rq, C, ldc);
        } else {
            const int64_t p0 = panels * t / n, p1 = panels * (t + 1) / n;
            if (p0 < p1) {
                if (m == 1) igemv_panels(A, B, rq, C, p0, p1);
                else igemm_block(A, lda, 0, m, p0, p1, B, rq, C, ldc);
            }
        }
    }
}

void si_igemm_ref(const uint8_t *A, int64_t lda, int64_t m, const int8_t *w, int64_t n, int64_t k,
                  const si_requant *rq, void *C, int64_t ldc) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int32_t acc = 0;
            for (int64_t t = 0; t < k; t++) acc += (int32_t)A[i * lda + t] * (int32_t)w[j * k + t];
            const float y = si_requant_f(rq, j, acc);
            if (rq->out_u8) ((uint8_t *)C)[i * ldc + j] = si_requant_u8(rq, y);
            else ((float *)C)[i * ldc + j] = y;
        }
}
