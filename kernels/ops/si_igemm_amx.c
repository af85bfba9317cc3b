/* The int8 GEMM of ops/si_igemm.c on Intel AMX (Sapphire Rapids and later): the same
 * contract and the same results bit for bit (C[m x n] = requant(A[m x k] W^T), A uint8, W
 * int8 n x k, exact int32 sums, requantized by si_requant_f / si_requant_u8), as another
 * candidate the planner can time.
 *
 * tdpbusd multiplies a tile of 16 rows x 64 uint8 (A) by a tile of 16 rows x 64 int8 holding
 * 64 inputs x 16 columns in VNNI order ([k / 4][16 columns][4]) into a 16 x 16 int32 tile,
 * 16384 products per instruction (no intermediate saturation: the int32 sums stay exact,
 * k <= SI_I8_MAX_COLS). Eight tiles: four int32 accumulators (a 32 x 32 block of C), two A
 * tiles, two B tiles, so each step loads 4 KB for 4 tdpbusd.
 *
 * Layout: W is packed once into panels of 16 output columns, each a run of 64-input blocks
 * of 1 KB ([n / 16][k / 64][16 rows][64 bytes], zero-padded past n and past k): one B tile
 * is one contiguous KB. A is read in place (tile rows of 64 bytes at stride lda) for every
 * whole 64-input block; the last block of a row whose k is not a multiple of 64 is copied,
 * once per 32-row block, into a zeroed per-thread buffer, so nothing past a row's k bytes is
 * read (and the zero padding of B meets zeros of A). The last row block of m (fewer than 32
 * rows) runs under a second tile configuration whose A and C tiles have only its rows: no
 * row past m is read or written.
 *
 * Blocking: a thread's rows go in chunks of MCB 32-row blocks; per chunk, each pair of
 * panels (2 x 16 x k bytes, 144 KB at k = 4608: L2) passes over the chunk's row blocks
 * (MCB x 32 x k bytes of A, 576 KB at k = 4608: L2 too, SPR's is 2 MB).
 *
 * The 32 x 32 int32 sums go to a per-thread buffer (tilestored) and are requantized from it
 * by the vector code of si_igemm.c's AVX-512 path: cvtdq2ps, vfmadd (one rounding, as fmaf),
 * vmaxps 0, vmulps, clamp, cvtps2dq (round half to even, as rintf), + zero: bit for bit
 * si_requant_u8 / si_requant_f.
 *
 * Linux hands out the tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM, once per
 * process); the tile configuration is per thread, so every thread that runs tiles loads it
 * and releases it when done. */
#define _DEFAULT_SOURCE /* syscall */
#include "si_internal.h"

#include <omp.h>
#include <string.h>

#if SI_X86 && defined(__linux__)
#define SI_AMX_BUILD 1
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#define SI_TARGET_AMX \
    __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#else
#define SI_AMX_BUILD 0
#endif


#define MB 32       /* rows of C per block: two tiles */
#ifndef MCB
#define MCB 4 /* row blocks per chunk (128 rows) */
#endif
#define TILE_B 1024 /* bytes of one B tile: 16 rows of 64 */

typedef struct amx_pack {
    int64_t panels;  /* ceil(n / 16) */
    int64_t kb;      /* 64-input blocks: ceil(k / 64) (1 when k == 0, all zeros) */
    int8_t *w;       /* panels x kb tiles of TILE_B bytes */
} amx_pack;

/* ---- availability ------------------------------------------------------------------------ */

#if SI_AMX_BUILD
#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static int amx_ok;

static void amx_probe(void) {
    unsigned a, b, c, d;
    if (si_feature_disabled("amx")) return;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    const int tile = (d >> 24) & 1, int8 = (d >> 25) & 1;
    if (!tile || !int8) return;
    __builtin_cpu_init();
    /* the epilogue is AVX-512 (si_isa_detected also checks the OS saves the zmm state) */
    if (si_isa_detected() < SI_ISA_AVX512 || !__builtin_cpu_supports("avx512vnni") ||
        !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl") ||
        !__builtin_cpu_supports("avx512dq"))
        return;
    /* the OS must enable XTILECFG and XTILEDATA in XCR0 (bits 17, 18) */
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return; /* OSXSAVE */
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if (((xlo >> 17) & 3) != 3) return;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return;
    unsigned long perm = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &perm) != 0 || !(perm & (1ul << XFEATURE_XTILEDATA))) return;
    amx_ok = 1;
}
#endif

int si_amx_available(void) {
#if SI_AMX_BUILD
    pthread_once(&amx_once, amx_probe);
    return amx_ok && si_isa_active() >= SI_ISA_AVX512;
#else
    return 0;
#endif
}

/* ---- packing ------------------------------------------------------------------------------ */

si_status_t si_pack_b8_amx(const char *layer, const int8_t *w, int64_t n, int64_t k, si_packed_b8_amx *out) {
    memset(out, 0, sizeof *out);
    if (!si_amx_available())
        return si_fail(SI_ERR_UNSUPPORTED, "layer %s: AMX-INT8 is not available (CPU, OS permission or ISA cap)",
                       layer);
    if (n < 0 || k < 0 || k > SI_I8_MAX_COLS)
        return si_fail(SI_ERR_MODEL, "layer %s: int8 weights of %lld x %lld: inputs must be in [0, %d]", layer,
                       (long long)n, (long long)k, SI_I8_MAX_COLS);
    amx_pack h = {(n + 15) / 16, k > 0 ? (k + 63) / 64 : 1, NULL};
    int64_t wbytes;
    if (!si_mul_ok(h.panels, h.kb * TILE_B, &wbytes) || wbytes > (INT64_C(1) << 40))
        return si_fail(SI_ERR_MODEL, "layer %s: %lld x %lld weights are too many to pack", layer, (long long)n,
                       (long long)k);
    const size_t head = (sizeof(amx_pack) + 63) / 64 * 64;
    unsigned char *mem = si_alloc(head + (size_t)(wbytes > 0 ? wbytes : 64));
    if (!mem)
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory packing its int8 weights for AMX (%lld MB)", layer,
                       (long long)(wbytes >> 20));
    h.w = (int8_t *)(mem + head);
    /* tile row r of block kb, bytes 4 j + q: input 64 kb + 4 r + q of column 16 p + j */
    for (int64_t p = 0; p < h.panels; p++)
        for (int64_t kb = 0; kb < h.kb; kb++) {
            int8_t *d = h.w + (p * h.kb + kb) * TILE_B;
            for (int r = 0; r < 16; r++)
                for (int j = 0; j < 16; j++)
                    for (int q = 0; q < 4; q++) {
                        const int64_t col = p * 16 + j, kk = kb * 64 + 4 * r + q;
                        d[r * 64 + j * 4 + q] = col < n && kk < k ? w[col * k + kk] : 0;
                    }
        }
    memcpy(mem, &h, sizeof h);
    out->b = mem;
    out->n = n;
    out->k = k;
    out->bytes = (int64_t)head + wbytes;
    return SI_OK;
}

void si_unpack_b8_amx(const si_packed_b8_amx *B, int8_t *w) {
    const amx_pack *h = B->b;
    for (int64_t col = 0; col < B->n; col++)
        for (int64_t kk = 0; kk < B->k; kk++) {
            const int64_t p = col / 16, j = col % 16, kb = kk / 64, r = kk % 64 / 4, q = kk % 4;
            w[col * B->k + kk] = h->w[(p * h->kb + kb) * TILE_B + r * 64 + j * 4 + q];
        }
}

void si_packed_b8_amx_free(si_packed_b8_amx *b) {
    si_free(b->b);
    b->b = NULL;
    b->bytes = 0;
}

#if SI_AMX_BUILD
/* ---- tiles ---------------------------------------------------------------------------------- */

/* gcc's tileloadd and ldtilecfg are asm statements that do not tell the compiler they read
 * memory (ldtilecfg names 8 of its 64 bytes): without this barrier, stores to the tile
 * configuration or to the tail buffer before them could be deferred or dropped. */
#define SI_AMX_BARRIER() __asm__ volatile("" ::: "memory")

/* palette 1: tiles 0..3 the sums C[rt][ct] (tile 2 rt + ct), 4 and 5 the A row tiles, 6 and
 * 7 the B column tiles; r0 / r1 rows in the first / second row tile (r1 == 0: unused) */
typedef struct tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

SI_TARGET_AMX static void tiles_config(int r0, int r1) {
    tilecfg t;
    memset(&t, 0, sizeof t);
    t.palette = 1;
    const int rows[8] = {r0, r0, r1, r1, r0, r1, 16, 16};
    for (int i = 0; i < 8; i++) {
        t.rows[i] = (uint8_t)rows[i];
        t.colsb[i] = rows[i] ? 64 : 0;
    }
    SI_AMX_BARRIER();
    _tile_loadconfig(&t);
}

/* One 32 x 32 block of sums (TWO_R: both row tiles, TWO_C: both column tiles) into c32
 * (32 rows of 32 int32). a0 / a1: the row tiles' first rows at input 0 (stride lda), kfull
 * whole 64-input blocks read from them; tail (if nk > kfull): the last block, 32 rows of 64
 * bytes, row tile 1 at tail + 16 * 64. b0 / b1: the panels' tiles. */
#define AMX_STEP(TWO_R, TWO_C, P0, P1, S, KB)                                        \
    do {                                                                             \
        _tile_loadd(4, P0, S);                                                       \
        _tile_loadd(6, b0 + (KB) * TILE_B, 64);                                      \
        if (TWO_C) _tile_loadd(7, b1 + (KB) * TILE_B, 64);                           \
        if (TWO_R) _tile_loadd(5, P1, S);                                            \
        _tile_dpbusd(0, 4, 6);                                                       \
        if (TWO_C) _tile_dpbusd(1, 4, 7);                                            \
        if (TWO_R) _tile_dpbusd(2, 5, 6);                                            \
        if (TWO_R && TWO_C) _tile_dpbusd(3, 5, 7);                                   \
    } while (0)
#define AMX_BLOCK(TWO_R, TWO_C)                                                      \
    do {                                                                             \
        SI_AMX_BARRIER();                                                            \
        _tile_zero(0);                                                               \
        if (TWO_C) _tile_zero(1);                                                    \
        if (TWO_R) _tile_zero(2);                                                    \
        if (TWO_R && TWO_C) _tile_zero(3);                                           \
        for (int64_t kb = 0; kb < kfull; kb++)                                       \
            AMX_STEP(TWO_R, TWO_C, a0 + kb * 64, a1 + kb * 64, lda, kb);             \
        if (nk > kfull) AMX_STEP(TWO_R, TWO_C, tail, tail + 16 * 64, 64, kfull);     \
        _tile_stored(0, c32, 128);                                                   \
        if (TWO_C) _tile_stored(1, c32 + 16, 128);                                   \
        if (TWO_R) _tile_stored(2, c32 + 16 * 32, 128);                              \
        if (TWO_R && TWO_C) _tile_stored(3, c32 + 16 * 32 + 16, 128);                \
    } while (0)

SI_TARGET_AMX static void amx_block(const uint8_t *a0, const uint8_t *a1, int64_t lda, int64_t kfull, int64_t nk,
                                    const uint8_t *tail, const int8_t *b0, const int8_t *b1, int two_r, int two_c,
                                    int32_t *c32) {
    if (two_r && two_c) AMX_BLOCK(1, 1);
    else if (two_r) AMX_BLOCK(1, 0);
    else if (two_c) AMX_BLOCK(0, 1);
    else AMX_BLOCK(0, 0);
}

static inline __mmask16 cols_mask(int cols) {
    return cols >= 16 ? (__mmask16)0xFFFF : cols <= 0 ? 0 : (__mmask16)((1u << cols) - 1u);
}

/* rows [0, rows) x columns j0 + [0, cols) (cols <= 32) of c32 -> C at row 0, column j0 */
SI_TARGET_AMX static void requant_block(const int32_t *c32, int rows, const si_requant *rq, int64_t j0, int cols,
                                        void *c, int64_t ldc) {
    const __mmask16 m0 = cols_mask(cols), m1 = cols_mask(cols - 16);
    const __m512 mul0 = _mm512_maskz_loadu_ps(m0, rq->mul + j0), add0 = _mm512_maskz_loadu_ps(m0, rq->add + j0);
    const __m512 mul1 = _mm512_maskz_loadu_ps(m1, rq->mul + j0 + 16),
                 add1 = _mm512_maskz_loadu_ps(m1, rq->add + j0 + 16);
    const int relu = rq->act == SI_ACT_RELU;
    const __m512 inv = _mm512_set1_ps(rq->inv_scale), lo = _mm512_set1_ps((float)-rq->zero),
                 hi = _mm512_set1_ps((float)(255 - rq->zero));
    const __m512i zero = _mm512_set1_epi32(rq->zero);
    for (int r = 0; r < rows; r++) {
        __m512 y0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(c32 + r * 32)), mul0, add0);
        __m512 y1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(c32 + r * 32 + 16)), mul1, add1);
        if (relu) {
            y0 = _mm512_max_ps(y0, _mm512_setzero_ps());
            y1 = _mm512_max_ps(y1, _mm512_setzero_ps());
        }
        if (!rq->out_u8) {
            float *cr = (float *)c + r * ldc;
            _mm512_mask_storeu_ps(cr, m0, y0);
            if (m1) _mm512_mask_storeu_ps(cr + 16, m1, y1);
            continue;
        }
        uint8_t *cr = (uint8_t *)c + r * ldc;
        const __m512 t0 = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(y0, inv), lo), hi);
        _mm512_mask_cvtepi32_storeu_epi8(cr, m0, _mm512_add_epi32(_mm512_cvtps_epi32(t0), zero));
        if (m1) {
            const __m512 t1 = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(y1, inv), lo), hi);
            _mm512_mask_cvtepi32_storeu_epi8(cr + 16, m1, _mm512_add_epi32(_mm512_cvtps_epi32(t1), zero));
        }
    }
}

/* rows [0, rows) of A's last (partial) 64-input block -> tail (32 rows of 64 bytes, zero past
 * k % 64 and past rows) */
static void fill_tail(const uint8_t *A, int64_t lda, int rows, int64_t kfull, int64_t k, uint8_t *tail) {
    memset(tail, 0, MB * 64);
    for (int r = 0; r < rows; r++) memcpy(tail + r * 64, A + r * lda + kfull * 64, (size_t)(k - kfull * 64));
}

/* Rows [m0, m1) and panel pairs [q0, q1) of C, on the calling thread: loads the tile
 * configuration and releases it. */
SI_TARGET_AMX static void amx_range(const uint8_t *A, int64_t lda, int64_t m0, int64_t m1, int64_t q0, int64_t q1,
                                    const si_packed_b8_amx *B, const si_requant *rq, void *C, int64_t ldc) {
    const amx_pack *h = B->b;
    const int64_t k = B->k, n = B->n, kfull = k / 64, nk = h->kb;
    const int has_tail = kfull < nk; /* also k == 0: one block of zeros */
    const size_t esz = rq->out_u8 ? 1 : sizeof(float);
    _Alignas(64) int32_t c32[MB * 32];
    _Alignas(64) uint8_t tail[MCB][MB * 64];
    const int64_t full_end = m0 + (m1 - m0) / MB * MB;
    if (full_end > m0) tiles_config(16, 16);
    for (int64_t mc = m0; mc < full_end; mc += MCB * MB) {
        const int nb = (int)((full_end - mc) / MB < MCB ? (full_end - mc) / MB : MCB);
        if (has_tail)
            for (int b = 0; b < nb; b++) fill_tail(A + (mc + b * MB) * lda, lda, MB, kfull, k, tail[b]);
        for (int64_t q = q0; q < q1; q++) {
            const int two_c = 2 * q + 1 < h->panels;
            const int8_t *b0 = h->w + 2 * q * nk * TILE_B, *b1 = b0 + nk * TILE_B;
            const int64_t j0 = 32 * q;
            const int cols = (int)(n - j0 < 32 ? n - j0 : 32);
            for (int b = 0; b < nb; b++) {
                const int64_t r = mc + b * MB;
                amx_block(A + r * lda, A + (r + 16) * lda, lda, kfull, nk, tail[b], b0, b1, 1, two_c, c32);
                requant_block(c32, MB, rq, j0, cols, (char *)C + (size_t)(r * ldc + j0) * esz, ldc);
            }
        }
    }
    if (full_end < m1) { /* the last rows: tiles of just those rows */
        const int rows = (int)(m1 - full_end), r0 = rows < 16 ? rows : 16, r1 = rows - r0;
        tiles_config(r0, r1);
        if (has_tail) fill_tail(A + full_end * lda, lda, rows, kfull, k, tail[0]);
        /* a1 is only read when r1 > 0 (then row full_end + 16 exists) */
        const uint8_t *a0 = A + full_end * lda, *a1 = r1 ? A + (full_end + 16) * lda : a0;
        for (int64_t q = q0; q < q1; q++) {
            const int two_c = 2 * q + 1 < h->panels;
            const int8_t *b0 = h->w + 2 * q * nk * TILE_B, *b1 = b0 + nk * TILE_B;
            const int64_t j0 = 32 * q;
            const int cols = (int)(n - j0 < 32 ? n - j0 : 32);
            amx_block(a0, a1, lda, kfull, nk, tail[0], b0, b1, r1 > 0, two_c, c32);
            requant_block(c32, rows, rq, j0, cols, (char *)C + (size_t)(full_end * ldc + j0) * esz, ldc);
        }
    }
    _tile_release();
}
#endif

/* ---- the driver --------------------------------------------------------------------------- */

void si_igemm_amx_rows(const uint8_t *A, int64_t lda, int64_t m, const si_packed_b8_amx *B, const si_requant *rq,
                       void *C, int64_t ldc) {
#if SI_AMX_BUILD
    if (m <= 0 || B->n <= 0 || !B->b) return;
    const amx_pack *h = B->b;
    amx_range(A, lda, 0, m, 0, (h->panels + 1) / 2, B, rq, C, ldc);
#else
    (void)A; (void)lda; (void)m; (void)B; (void)rq; (void)C; (void)ldc;
#endif
}

void si_igemm_amx(const uint8_t *A, int64_t lda, int64_t m, const si_packed_b8_amx *B, const si_requant *rq, void *C,
                  int64_t ldc) {
#if SI_AMX_BUILD
    if (m <= 0 || B->n <= 0 || !B->b) return;
    const amx_pack *h = B->b;
    const int64_t pairs = (h->panels + 1) / 2, blocks = (m + MB - 1) / MB;
    /* int8 products on tiles: about a 32nd of an FMA's time each */
    const int64_t work = m * h->panels * 16 * (B->k > 0 ? B->k : 1) / 32;
    const int nt = si_threads_for(work, blocks > pairs ? blocks : pairs);
    if (nt <= 1) { si_igemm_amx_rows(A, lda, m, B, rq, C, ldc); return; }
    /* whole 32-row blocks per thread when there are enough of them, else the panel pairs */
    const int by_rows = blocks >= 2 * nt;
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        if (by_rows) {
            int64_t r0 = blocks * t / nth * MB, r1 = blocks * (t + 1) / nth * MB;
            if (r1 > m) r1 = m;
            if (r0 < r1) amx_range(A, lda, r0, r1, 0, pairs, B, rq, C, ldc);
        } else {
            const int64_t q0 = pairs * t / nth, q1 = pairs * (t + 1) / nth;
            if (q0 < q1) amx_range(A, lda, 0, m, q0, q1, B, rq, C, ldc);
        }
    }
#else
    (void)A; (void)lda; (void)m; (void)B; (void)rq; (void)C; (void)ldc;
#endif
}
