/* conv_winograd_i16, conv_winograd3_i16, conv_winograd4_i16: exact Winograd F(2x2, 3x3),
 * F(3x3, 3x3) and F(4x4, 3x3) in 16-bit integers for int8 3x3 stride-1 convolutions, on every
 * CPU with AVX2. The planner times them against conv_igemm (and its AMX form).
 *
 * Why: without VNNI the int8 im2col GEMM (ops/si_igemm.c, vpmaddubsw) does about 2x the fp32
 * FMA's multiply-adds per cycle, and fp32 Winograd F(4x4, 3x3) saves 4x of them, so fp32
 * beat int8 on VGG19's 3x3 layers. vpmaddwd multiplies int16 pairs at about 1.4x the FMA's
 * rate (register-only loops on Intel SPR capped to AVX2, one core: fp32 FMA 61, vpmaddwd +
 * vpaddd 85, vpmaddubsw + vpmaddwd + vpaddd 111 GMAC/s; bench/isa_peak.c), and F(m x m, 3x3)
 * needs (m + 2)^2 products per m^2 outputs where the direct form needs 9 m^2: 2.25x, 3.24x and
 * 4x fewer. With VNNI, vpdpwssd (int16 pairs into int32, the add included) does half
 * vpdpbusd's products per instruction, so F(4x4) does 2x the int8 GEMM's work per instruction:
 * VGG19 int8 on SPR, 2 threads, batch 1: 55 -> 37 ms under AVX-VNNI (avx2 cap), 34.5 -> 30.6 ms
 * with AVX-512 VNNI and AMX disabled (the planner then takes F(4x4) on 8 of 16 layers).
 *
 * GEMM kernels (kern_of, by the CPU and the ISA cap): vpmaddwd + vpaddd on ymm (plain AVX2:
 * Zen 3, Haswell to Comet Lake), the VEX vpdpwssd on ymm (AVX-VNNI: Alder Lake and later), and
 * vpdpwssd on zmm (AVX-512 VNNI: Ice Lake, Zen 4, Sapphire Rapids).
 *
 * Exact: the filter transform scaled to integers, U = 4 G g G^T (F(2x2)), 36 G g G^T (F(3x3))
 * or D G g G^T D, D = diag(4, 6, 6, 24, 24, 1) (F(4x4), Lavin and Gray's points), at most
 * 81 * 127; the input's V = B^T d B of uint8 d, at most 100 * 255: both int16, and each
 * vpmaddwd (or vpdpwssd) lane's two products exact in int32. Every later addition wraps modulo 2^32; the
 * output transform (F(4x4): A'' = 24 A D^-1, integers) gives 4, 36 or 576 times the sum modulo
 * 2^32, from which a shift (and a multiply by 9's inverse modulo 2^32) recovers the sum modulo
 * 2^32, 2^30 or 2^26: exact while |sum| < 2^31, 2^29 (uint8 inputs, C <= MAX_C) or 2^25
 * (F(4x4): checked per layer, sums_fit_26). That is the sum conv_igemm computes (uint8 input,
 * padding taps at the zero point), and the requantization is its, bit for bit.
 *
 * The run: tiles of m x m outputs in groups of V (int16) and M (int32), per thread where every
 * U[xi] fits half an L2, else shared (GROUP_BYTES, the positions' GEMMs split among the
 * threads); conv_winograd4_i16_local, F(4x4) in per-thread groups whatever U's size, is
 * timed beside it: the input transform (16 channels a vector), per position xi the GEMM M[xi] =
 * V[xi] U[xi]^T (tiles x C times C x F: a 6-tile x 16-filter block of int32 sums in 12 ymm,
 * per channel pair one 32-bit broadcast of V and two vpmaddwd), then the output transform with
 * the requantization, and a following 2x2 max pool for F(2x2) and F(4x4).
 * Reference: the im2col reference of conv_igemm on the layer's int8 weights. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if SI_X86
#include <immintrin.h>
#endif

#define NR 16     /* filters per panel of U */
#define MR 6      /* tiles per GEMM block: 12 ymm sums, 2 of U, a broadcast, a product */
#define MAX_C 1800
#define GROUP_BYTES (INT64_C(8) << 20)

typedef struct wi_state {
    int m, xi;           /* F(m x m, 3x3): 2 or 3; xi = (m + 2)^2 positions of an input tile */
    int16_t *u;          /* [xi][panels][cp][NR][2]: U[x][p * NR + j][2 q + e] */
    int64_t cp, panels;  /* channel pairs, panels of NR filters */
    int kern;            /* the GEMM kernels (kern_of): 0 vpmaddwd + vpaddd, 1 VEX vpdpwssd, 2 zmm vpdpwssd */
    int local;           /* 1: per-thread groups of tiles whatever U's size (conv_winograd4_i16_local) */
} wi_state;

/* The GEMM kernels for this CPU under the ISA cap, as the int8 GEMM's (si_vnni_form): vpdpwssd
 * on zmm, the VEX one on ymm, else vpmaddwd + vpaddd */
static int kern_of(void) {
    const int v = si_vnni_form();
    return v == SI_VNNI_512 ? 2 : v == SI_VNNI_AVX ? 1 : 0;
}

/* the entry's tile (si_algo has no parameter: one applies / prepare pair per m) */
static int xi_of(int m) { return (m + 2) * (m + 2); }

static int64_t vstride(const si_layer *L) { return (L->in_c + 1) / 2 * 2; } /* V row: channels, even */

static int wi_applies(const si_layer *L, int regime) {
    (void)regime;
#if SI_X86
    return L->type == SI_LAYER_CONV2D && L->q && L->kh == 3 && L->kw == 3 && L->sh == 1 && L->sw == 1 &&
           L->out_h > 0 && L->out_w > 0 && L->in_c <= MAX_C && si_isa_active() >= SI_ISA_AVX2;
#else
    (void)L;
    return 0;
#endif
}

static void wi_release(void *p) {
    wi_state *s = p;
    if (!s) return;
    si_free(s->u);
    free(s);
}

/* The filters' transform, scaled to integers: F(2x2) 2 G (rows [2 0 0], [1 1 1], [1 -1 1],
 * [0 0 2]), U = 4 G g G^T; F(3x3) 6 G (rows [3 0 0], [-3 -3 -3], [-1 1 -1], [1 2 4], [0 0 6]),
 * U = 36 G g G^T (at most 81 * 127 = 10,287). */
static const int G2[4][3] = {{2, 0, 0}, {1, 1, 1}, {1, -1, 1}, {0, 0, 2}};
static const int G3[5][3] = {{3, 0, 0}, {-3, -3, -3}, {-1, 1, -1}, {1, 2, 4}, {0, 0, 6}};
/* F(4x4): D G for Lavin and Gray's points 0, 1, -1, 2, -2, infinity, D = diag(4, 6, 6, 24, 24,
 * 1) (U = D G g G^T D, at most 49 * 127 = 6,223); out_tile4's A'' = 24 D^-1 A takes D back. */
static const int G4[6][3] = {{1, 0, 0}, {-1, -1, -1}, {-1, 1, -1}, {1, 2, 4}, {1, -2, 4}, {0, 0, 1}};
static const int *grow(int mt, int a) { return mt == 2 ? G2[a] : mt == 3 ? G3[a] : G4[a]; }

static si_status_t wi_prepare_m(si_layer *L, int mt, void **out) {
    const int a_n = mt + 2, X = xi_of(mt);
    const int64_t F = L->rows, C = L->in_c;
    wi_state *s = calloc(1, sizeof *s);
    if (!s) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name);
    s->m = mt;
    s->xi = X;
    s->kern = kern_of();
    s->cp = (C + 1) / 2;
    s->panels = (F + NR - 1) / NR;
    const int64_t n = X * s->panels * s->cp * NR * 2;
    s->u = si_alloc((size_t)n * sizeof(int16_t));
    if (!s->u) {
        free(s);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the Winograd filters (%lld MB)", L->name,
                       (long long)(2 * n >> 20));
    }
    memset(s->u, 0, (size_t)n * sizeof(int16_t));
    for (int64_t f = 0; f < F; f++)
        for (int64_t c = 0; c < C; c++) {
            int g[3][3], t[6][3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) g[i][j] = L->w8[f * L->cols + (i * 3 + j) * C + c];
            for (int a = 0; a < a_n; a++)
                for (int j = 0; j < 3; j++) {
                    const int *G = grow(mt, a);
                    t[a][j] = G[0] * g[0][j] + G[1] * g[1][j] + G[2] * g[2][j];
                }
            for (int a = 0; a < a_n; a++)
                for (int b = 0; b < a_n; b++) {
                    const int *G = grow(mt, b);
                    const int u = t[a][0] * G[0] + t[a][1] * G[1] + t[a][2] * G[2];
                    s->u[(((a * a_n + b) * s->panels + f / NR) * s->cp + c / 2) * NR * 2 + (f % NR) * 2 + c % 2] =
                        (int16_t)u;
                }
        }
    *out = s;
    return SI_OK;
}
static si_status_t wi_prepare2(si_layer *L, void **out) { return wi_prepare_m(L, 2, out); }
static si_status_t wi_prepare3(si_layer *L, void **out) { return wi_prepare_m(L, 3, out); }
static si_status_t wi_prepare4(si_layer *L, void **out) { return wi_prepare_m(L, 4, out); }
static si_status_t wi_prepare4l(si_layer *L, void **out) {
    const si_status_t st = wi_prepare_m(L, 4, out);
    if (st == SI_OK) ((wi_state *)*out)->local = 1;
    return st;
}

/* F(4x4) recovers the sum from 576x it modulo 2^32, so modulo 2^26: exact while |sum| < 2^25.
 * The inputs are uint8 (0 to 255), so the sum lies in 255 x [sum of the negative weights, sum
 * of the positive ones]; 1 if that holds for every filter (0 without the dense weights: after
 * planning, si_runtime.c lists a timed entry whatever this says). VGG19's generated weights
 * (the quantizer's "pairs") reach 0.46 of the bound. */
static int sums_fit_26(const si_layer *L) {
    if (!L->w8) return 0;
    for (int64_t r = 0; r < L->rows; r++) {
        int64_t pos = 0, neg = 0;
        for (int64_t k = 0; k < L->cols; k++) {
            const int w = L->w8[r * L->cols + k];
            if (w > 0) pos += w;
            else neg -= w;
        }
        if (255 * (pos > neg ? pos : neg) >= (INT64_C(1) << 25)) return 0;
    }
    return 1;
}
static int wi_applies4(const si_layer *L, int regime) { return wi_applies(L, regime) && sums_fit_26(L); }

static int64_t wi_bytes(const si_layer *L, const void *st) {
    (void)L;
    const wi_state *s = st;
    return s ? s->xi * s->panels * s->cp * NR * 2 * (int64_t)sizeof(int16_t) : 0;
}

static int64_t tiles_of(const si_layer *L, int mt, int batch) {
    return (int64_t)batch * ((L->out_h + mt - 1) / mt) * ((L->out_w + mt - 1) / mt);
}

/* bytes of V and M per tile */
static int64_t tile_bytes(const si_layer *L, int mt) {
    return xi_of(mt) * (vstride(L) * 2 + (L->rows + NR - 1) / NR * NR * 4);
}

static int64_t group_tiles(const si_layer *L, int mt, int batch) {
    int64_t g = GROUP_BYTES / tile_bytes(L, mt) / MR * MR, t = tiles_of(L, mt, batch);
    if (g < MR) g = MR;
    if (g >= t) return t;
    /* groups of even size: 196 tiles as 102 + 94, not 150 + 46 (block3_conv1 int8, AVX2 cap,
     * SPR, 2 threads: 1.86-1.89 -> 1.72-1.79 ms) */
    const int64_t n = (t + g - 1) / g;
    return ((t + n - 1) / n + MR - 1) / MR * MR;
}

/* Per-thread groups where every U[xi] together fit half of one core's L2: each thread takes
 * groups of tiles through the input transform, the GEMMs and the output transform alone, its V
 * and M in the other half of its L2, no barrier between. Otherwise shared groups (the GEMMs of
 * a group split among the threads by position), which read each U[xi] once per group.
 * si_wino_local_max_u (conv/si_conv_winograd.c; -1: the L2 size) lets the tests force either. */
extern int64_t si_wino_local_max_u;
static int use_local(const si_layer *L, int mt, const wi_state *s) {
    if (s && s->local) return 1;
    const int64_t max_u = si_wino_local_max_u >= 0 ? si_wino_local_max_u : si_l2_bytes();
    return (int64_t)xi_of(mt) * vstride(L) * ((L->rows + NR - 1) / NR * NR) * 2 <= max_u / 2;
}

/* tiles of a per-thread group: V and M in half the L2, a multiple of MR, and at least two
 * groups per thread where the tiles allow */
static int64_t local_tiles(const si_layer *L, int mt, int batch) {
    int64_t g = si_l2_bytes() / 2 / tile_bytes(L, mt) / MR * MR;
    if (g < MR) g = MR;
    int64_t per = (tiles_of(L, mt, batch) + 2 * si_max_threads() - 1) / (2 * si_max_threads());
    per = (per + MR - 1) / MR * MR;
    return g < per ? g : per;
}

static int64_t ws_m(const si_layer *L, int mt, const wi_state *s, int batch) {
    const int64_t shared = group_tiles(L, mt, batch) * tile_bytes(L, mt) + 128;
    const int64_t local = si_max_threads() * (local_tiles(L, mt, batch) * tile_bytes(L, mt) + 128);
    return ((use_local(L, mt, s) ? local : shared) + 3) / 4 + 16;
}
/* the transform's scratch, and the convolution's output where a pool runs after it */
static int64_t ws_pool(const si_layer *L, int mt, const wi_state *s, int batch) {
    const int unfused = L->pool && !(L->pool->kh == 2 && L->pool->kw == 2 && mt != 3);
    const int64_t conv = unfused ? ((int64_t)batch * L->out_h * L->out_w * L->rows * (L->q_out_u8 ? 1 : 4) + 3) / 4 : 0;
    return ws_m(L, mt, s, batch) + conv;
}
static int64_t wi_ws2(const si_layer *L, const void *st, int batch) { return ws_pool(L, 2, st, batch); }
static int64_t wi_ws3(const si_layer *L, const void *st, int batch) { return ws_pool(L, 3, st, batch); }
static int64_t wi_ws4(const si_layer *L, const void *st, int batch) { return ws_pool(L, 4, st, batch); }

/* Tile q's sample and tile row and column (m x m outputs a tile) */
static void tile_at(const si_layer *L, int mt, int64_t q, int64_t *n, int64_t *ty, int64_t *tx) {
    const int64_t th = (L->out_h + mt - 1) / mt, tw = (L->out_w + mt - 1) / mt;
    *n = q / (th * tw);
    *ty = q % (th * tw) / tw;
    *tx = q % tw;
}

/* The k x k pixels from (y0, x0) of sample n of an H x W image: each one's pixel index, or -1
 * outside the image (an input tap in the padding, an output past a partial tile's edge) */
static void grid(int64_t n, int64_t H, int64_t W, int64_t y0, int64_t x0, int k, int64_t *pix) {
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            const int64_t y = y0 + i, x = x0 + j;
            pix[i * k + j] = y >= 0 && y < H && x >= 0 && x < W ? (n * H + y) * W + x : -1;
        }
}

/* Tile q's (m + 2) x (m + 2) input window: pointers to each tap's channels, NULL in the padding */
static void in_taps(const si_layer *L, int mt, const uint8_t *in, int64_t q, const uint8_t **d) {
    int64_t n, ty, tx, pix[36];
    tile_at(L, mt, q, &n, &ty, &tx);
    grid(n, L->in_h, L->in_w, mt * ty - L->pad_top, mt * tx - L->pad_left, mt + 2, pix);
    for (int t = 0; t < (mt + 2) * (mt + 2); t++) d[t] = pix[t] >= 0 ? in + pix[t] * L->in_c : NULL;
}

/* Tile q's m x m outputs (NHWC, e bytes a value), or with pool (even m) the m/2 x m/2 outputs
 * of the 2x2 max pool whose windows it holds: pointers, NULL past the output's edge */
static void out_pixels(const si_layer *L, int mt, char *out, size_t e, int64_t q, int pool, char **y) {
    int64_t n, ty, tx, pix[16];
    const int k = pool ? mt / 2 : mt;
    tile_at(L, mt, q, &n, &ty, &tx);
    if (pool) grid(n, L->pool->out_h, L->pool->out_w, k * ty, k * tx, k, pix);
    else grid(n, L->out_h, L->out_w, k * ty, k * tx, k, pix);
    for (int t = 0; t < k * k; t++) y[t] = pix[t] >= 0 ? out + (size_t)(pix[t] * L->rows) * e : NULL;
}

#if SI_X86
/* V[xi][t][c] = (B^T d B)[xi] of tile q, d the 4x4 input window (taps outside the image at the
 * zero point z), B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]. */
SI_TARGET_AVX2 static void in_tile2(const si_layer *L, const uint8_t *in, int64_t q, int16_t *V, int64_t ldv) {
    const int64_t C = L->in_c;
    const uint8_t z = (uint8_t)L->q_in_zero;
    const uint8_t *d[16];
    in_taps(L, 2, in, q, d);
    int64_t c = 0;
    const __m256i zv = _mm256_set1_epi16(z);
    for (; c + 16 <= C; c += 16) {
        __m256i r[4][4]; /* rows transformed along x: r[y][j] = (d B)[y][j] */
        for (int y = 0; y < 4; y++) {
            __m256i v[4];
            for (int x = 0; x < 4; x++)
                v[x] = d[y * 4 + x] ? _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(d[y * 4 + x] + c))) : zv;
            r[y][0] = _mm256_sub_epi16(v[0], v[2]);
            r[y][1] = _mm256_add_epi16(v[1], v[2]);
            r[y][2] = _mm256_sub_epi16(v[2], v[1]);
            r[y][3] = _mm256_sub_epi16(v[1], v[3]);
        }
        for (int j = 0; j < 4; j++) {
            _mm256_storeu_si256((__m256i *)(V + (0 * 4 + j) * ldv + c), _mm256_sub_epi16(r[0][j], r[2][j]));
            _mm256_storeu_si256((__m256i *)(V + (1 * 4 + j) * ldv + c), _mm256_add_epi16(r[1][j], r[2][j]));
            _mm256_storeu_si256((__m256i *)(V + (2 * 4 + j) * ldv + c), _mm256_sub_epi16(r[2][j], r[1][j]));
            _mm256_storeu_si256((__m256i *)(V + (3 * 4 + j) * ldv + c), _mm256_sub_epi16(r[1][j], r[3][j]));
        }
    }
    for (; c < vstride(L); c++) { /* the last channels, and the pad channel (0) of an odd count */
        int v[4][4], r[4][4];
        for (int k = 0; k < 16; k++) v[k / 4][k % 4] = c < C ? (d[k] ? d[k][c] : z) : 0;
        for (int y = 0; y < 4; y++) {
            r[y][0] = v[y][0] - v[y][2];
            r[y][1] = v[y][1] + v[y][2];
            r[y][2] = v[y][2] - v[y][1];
            r[y][3] = v[y][1] - v[y][3];
        }
        for (int j = 0; j < 4; j++) {
            V[(0 * 4 + j) * ldv + c] = (int16_t)(r[0][j] - r[2][j]);
            V[(1 * 4 + j) * ldv + c] = (int16_t)(r[1][j] + r[2][j]);
            V[(2 * 4 + j) * ldv + c] = (int16_t)(r[2][j] - r[1][j]);
            V[(3 * 4 + j) * ldv + c] = (int16_t)(r[1][j] - r[3][j]);
        }
    }
}

#define R1(X) X(0)
#define R2(X) R1(X) X(1)
#define R3(X) R2(X) X(2)
#define R4(X) R3(X) X(3)
#define R5(X) R4(X) X(4)
#define R6(X) R5(X) X(5)
#define MK_DECL(i) __m256i s##i##_0 = _mm256_setzero_si256(), s##i##_1 = _mm256_setzero_si256(); \
    const int16_t *a##i = a + (i) * lda;
/* one channel pair of row i: s += a[i][2q, 2q+1] . b0 / b1 by DOT, vpmaddwd + vpaddd on plain
 * AVX2, one vpdpwssd (the same int16 pair products, summed into the int32 lanes modulo 2^32)
 * with AVX-VNNI */
#define DOT_W(S, A, B) _mm256_add_epi32(S, _mm256_madd_epi16(A, B))
#define DOT_X(S, A, B) _mm256_dpwssd_avx_epi32(S, A, B)
#define MK_STEP_(i, DOT)                                                                      \
    {                                                                                         \
        int32_t p;                                                                            \
        memcpy(&p, a##i + 2 * q, 4);                                                          \
        const __m256i av = _mm256_set1_epi32(p);                                              \
        s##i##_0 = DOT(s##i##_0, av, b0);                                                     \
        s##i##_1 = DOT(s##i##_1, av, b1);                                                     \
    }
#define MK_STEP_W(i) MK_STEP_(i, DOT_W)
#define MK_STEP_X(i) MK_STEP_(i, DOT_X)
#define MK_OUT(i)                                                                             \
    _mm256_storeu_si256((__m256i *)(m + (i) * ldm), s##i##_0);                                \
    _mm256_storeu_si256((__m256i *)(m + (i) * ldm + 8), s##i##_1);

#define WI_TARGET_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))
#define WI_TARGET_VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

/* m[i][0..16) = sum_q a[i][2q, 2q+1] . b[q][0..16)[2] for the R rows i of a block, prefetching
 * the lines pf[j * 32] of j < npf (a share of the next panel of U) one every cp / npf steps,
 * not in a burst at the start (VGG19 block 5 int8, U from memory, AVX2 cap, SPR, 2 threads:
 * 1.42-1.52 -> 1.31-1.35 ms a layer; the zmm kernel keeps its two a step), one body per
 * height (rows_in: a group's rows go as blocks of near-equal height, up to 6) */
#define MK_BODY(NAME, H, TARGET, STEP)                                                        \
    TARGET static __attribute__((noinline)) void NAME##H(const int16_t *a, int64_t lda, const int16_t *b, \
                                                         int64_t cp, int32_t *m, int64_t ldm,                 \
                                                         const int16_t *pf, int64_t npf) {                    \
        R##H(MK_DECL)                                                                         \
        const int64_t pstep = npf > 0 && cp / npf > 1 ? cp / npf : 1;                         \
        int64_t pcnt = 1, pj = 0;                                                             \
        for (int64_t q = 0; q < cp; q++) {                                                    \
            if (--pcnt == 0) {                                                                \
                pcnt = pstep;                                                                 \
                if (pj < npf) _mm_prefetch((const char *)(pf + pj * 32), _MM_HINT_T0);        \
                pj++;                                                                         \
            }                                                                                 \
            const __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + q * 32));             \
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + q * 32 + 16));        \
            R##H(STEP)                                                                        \
        }                                                                                     \
        R##H(MK_OUT)                                                                          \
    }
#define MK_SET(NAME, TARGET, STEP)                                                            \
    MK_BODY(NAME, 1, TARGET, STEP) MK_BODY(NAME, 2, TARGET, STEP) MK_BODY(NAME, 3, TARGET, STEP) \
    MK_BODY(NAME, 4, TARGET, STEP) MK_BODY(NAME, 5, TARGET, STEP) MK_BODY(NAME, 6, TARGET, STEP)
MK_SET(mk, SI_TARGET_AVX2, MK_STEP_W)
MK_SET(mkx, WI_TARGET_AVXVNNI, MK_STEP_X)

/* AVX-512 VNNI: a channel pair's 16 filters (64 bytes of U) in one zmm, one vpdpwssd per row
 * (twice the ymm form's products per instruction where 512-bit operations issue on two ports,
 * Intel; the same where they are split in two, Zen 4). Two sums a row, for even and odd
 * channel pairs, added at the end (modulo 2^32 like every sum here): one a row left 6 chains
 * for vpdpwssd's 5-cycle latency, and the 6-row kernel ran at half its port bound. */
/* s += a . b by vpdpwssd in place: through _mm512_dpwssd_epi32 GCC 12 copied every sum out
 * and back each step (24 moves per 12 vpdpwssd) */
#define DPWSSD_Z(S, A, B) __asm__("vpdpwssd %2, %1, %0" : "+v"(S) : "v"(A), "v"(B))
#define MZ_DECL(i)                                                                            \
    __m512i s##i = _mm512_setzero_si512(), t##i = _mm512_setzero_si512();                     \
    const int16_t *a##i = a + (i) * lda;
#define MZ_STEP(i)                                                                            \
    {                                                                                         \
        int32_t p0, p1;                                                                       \
        memcpy(&p0, a##i + 2 * q, 4);                                                         \
        memcpy(&p1, a##i + 2 * q + 2, 4);                                                     \
        DPWSSD_Z(s##i, _mm512_set1_epi32(p0), b0);                                            \
        DPWSSD_Z(t##i, _mm512_set1_epi32(p1), b1);                                            \
    }
#define MZ_LAST(i)                                                                            \
    {                                                                                         \
        int32_t p0;                                                                           \
        memcpy(&p0, a##i + 2 * q, 4);                                                         \
        DPWSSD_Z(s##i, _mm512_set1_epi32(p0), b0);                                            \
    }
#define MZ_OUT(i) _mm512_storeu_si512((void *)(m + (i) * ldm), _mm512_add_epi32(s##i, t##i));
#define MZ_BODY(H)                                                                            \
    WI_TARGET_VNNI512 static __attribute__((noinline)) void mkz##H(const int16_t *a, int64_t lda, const int16_t *b, \
                                                                  int64_t cp, int32_t *m, int64_t ldm,            \
                                                                  const int16_t *pf, int64_t npf) {               \
        R##H(MZ_DECL)                                                                         \
        int64_t q = 0;                                                                        \
        for (; q + 2 <= cp; q += 2) {                                                         \
            if (q < npf) _mm_prefetch((const char *)(pf + q * 32), _MM_HINT_T0);              \
            if (q + 1 < npf) _mm_prefetch((const char *)(pf + q * 32 + 32), _MM_HINT_T0);     \
            const __m512i b0 = _mm512_loadu_si512((const void *)(b + q * 32));                \
            const __m512i b1 = _mm512_loadu_si512((const void *)(b + q * 32 + 32));           \
            R##H(MZ_STEP)                                                                     \
        }                                                                                     \
        if (q < cp) {                                                                         \
            if (q < npf) _mm_prefetch((const char *)(pf + q * 32), _MM_HINT_T0);              \
            const __m512i b0 = _mm512_loadu_si512((const void *)(b + q * 32));                \
            R##H(MZ_LAST)                                                                     \
        }                                                                                     \
        R##H(MZ_OUT)                                                                          \
    }
MZ_BODY(1)
MZ_BODY(2)
MZ_BODY(3)
MZ_BODY(4)
MZ_BODY(5)
MZ_BODY(6)

typedef void (*mk_fn)(const int16_t *a, int64_t lda, const int16_t *b, int64_t cp, int32_t *m, int64_t ldm,
                      const int16_t *pf, int64_t npf);
static const mk_fn mk_of[MR + 1] = {NULL, mk1, mk2, mk3, mk4, mk5, mk6};
static const mk_fn mkx_of[MR + 1] = {NULL, mkx1, mkx2, mkx3, mkx4, mkx5, mkx6};
static const mk_fn mkz_of[MR + 1] = {NULL, mkz1, mkz2, mkz3, mkz4, mkz5, mkz6};

/* The height of row block k when n rows go as nb blocks of near-equal height (nb = n / MR
 * rounded up): 49 rows as four blocks of 6 and five of 5, not eight of 6 and one of 1. The
 * kernels are bound by their vpmaddwd and vpaddd (or vpdpwssd) per row, the same at every
 * height from 4 to 6, while the 1-row one ran at about 0.4x their speed a row: 4% of the time
 * of a 49-tile layer (VGG19's block 4 at F(4x4)) for 2% of its rows. */
static int rows_in(int64_t k, int64_t n, int64_t nb) { return (int)(n / nb + (k < n % nb)); }

/* M[xi] rows [t0, t1), panels [p0, p1) of the group */
SI_TARGET_AVX2 static void gemm_xi(const wi_state *s, int xi, const int16_t *V, int64_t ldv, int32_t *M, int64_t ldm,
                                   int64_t t0, int64_t t1, int64_t p0, int64_t p1) {
    const mk_fn *mk = s->kern == 2 ? mkz_of : s->kern == 1 ? mkx_of : mk_of;
    const int64_t pn = s->cp * NR * 2; /* a panel's int16 */
    const int16_t *u = s->u + xi * s->panels * pn, *end = s->u + s->xi * s->panels * pn;
    const int64_t n = t1 - t0, nb = (n + MR - 1) / MR; /* row blocks of near-equal height */
    if (s->panels * pn * 2 <= 16384) { /* U[xi] within half an L1: the rows' V from L1 too */
        for (int64_t k = 0, r = t0, h; k < nb; r += h, k++) {
            h = rows_in(k, n, nb);
            for (int64_t p = p0; p < p1; p++)
                mk[h](V + r * ldv, ldv, u + p * pn, s->cp, M + r * ldm + p * NR, ldm, u + p * pn, 0);
        }
        return;
    }
    /* else a panel of U (cp x 64 bytes) stays in L1 while the rows pass, and the row blocks
     * prefetch the next panel, each its share of the lines (ch). GEMM alone, 1 thread, SPR
     * capped to AVX2, C = F = 512 on 49 rows 58-60 -> 64-66 GMAC/s, C = F = 256 on 196 rows
     * 73-77 -> 79-81, against the rows outer (C = F = 64: 79-81 rows outer, 73-77 panels
     * outer). In VGG19 (int8, 2 threads), where blocks 4 and 5's U come from memory, the lines
     * shared out instead of all prefetched by the first block: 48.2-49.6 -> 47.1-47.8 ms (the
     * two builds alternating, 4 runs each) */
    const int64_t ch = (s->cp + nb - 1) / nb;
    for (int64_t p = p0; p < p1; p++) {
        const int16_t *b = u + p * pn, *next = b + pn < end ? b + pn : b;
        for (int64_t k = 0, r = t0, h; k < nb; r += h, k++) {
            h = rows_in(k, n, nb);
            const int64_t q0 = k * ch, nq = q0 >= s->cp ? 0 : s->cp - q0 < ch ? s->cp - q0 : ch;
            mk[h](V + r * ldv, ldv, b, s->cp, M + r * ldm + p * NR, ldm, next + q0 * 32, nq);
        }
    }
}

/* 8 sums of channels f0 + [0, 8) requantized into c (n <= 8 of them), as si_requant_f /
 * si_requant_u8 compute them (fma, max, mul, clamp, round to even). The factors of the 8
 * channels are loaded once per output transform's channel group (rq8_prep), not per output:
 * the transforms and the requantization were a tenth of the int8 VGG19's time. */
typedef struct rq8k {
    __m256 mul, add, inv, lo, hi;
    __m256i z, m;
    int relu, u8, n; /* relu: the max at 0 before the scaling (not where the clamp does it) */
    int z0;          /* uint8 out at zero point 0: the lower clamp and the zero's addition left to the packing */
} rq8k;

SI_TARGET_AVX2 SI_INLINE void rq8_prep(const si_requant *rq, int64_t f0, int n, rq8k *k) {
    k->m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    k->mul = n == 8 ? _mm256_loadu_ps(rq->mul + f0) : _mm256_maskload_ps(rq->mul + f0, k->m);
    k->add = n == 8 ? _mm256_loadu_ps(rq->add + f0) : _mm256_maskload_ps(rq->add + f0, k->m);
    k->inv = _mm256_set1_ps(rq->inv_scale);
    k->lo = _mm256_set1_ps((float)-rq->zero);
    k->hi = _mm256_set1_ps((float)(255 - rq->zero));
    k->z = _mm256_set1_epi32(rq->zero);
    /* uint8 out at zero point 0: the clamp's max at 0 is the ReLU (inv > 0) */
    k->relu = rq->act == SI_ACT_RELU && !(rq->out_u8 && rq->zero == 0);
    k->u8 = rq->out_u8;
    k->z0 = rq->out_u8 && rq->zero == 0;
    k->n = n;
}

SI_TARGET_AVX2 SI_INLINE void rq8(__m256i s, const rq8k *k, char *c) {
    __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), k->mul, k->add);
    if (k->relu) y = _mm256_max_ps(y, _mm256_setzero_ps());
    if (!k->u8) {
        if (k->n == 8) _mm256_storeu_ps((float *)c, y);
        else _mm256_maskstore_ps((float *)c, k->m, y);
        return;
    }
    /* At zero point 0 the packing's saturation is the lower clamp: a negative t rounds to a
     * negative int32 (INT32_MIN past its range), which the packs take to 0, as the clamp at 0
     * then the rounding would (t in (-0.5, 0) rounds to 0 either way). The upper clamp stays:
     * a t past 2^31 would convert to INT32_MIN. */
    const __m256 t = k->z0 ? _mm256_min_ps(_mm256_mul_ps(y, k->inv), k->hi)
                           : _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(y, k->inv), k->lo), k->hi);
    const __m256i qv = k->z0 ? _mm256_cvtps_epi32(t) : _mm256_add_epi32(_mm256_cvtps_epi32(t), k->z);
    const __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(qv, qv), _mm256_setzero_si256());
    const __m128i v = _mm_unpacklo_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    if (k->n == 8) _mm_storel_epi64((__m128i *)c, v);
    else {
        uint8_t o[16];
        _mm_storeu_si128((__m128i *)o, v);
        memcpy(c, o, (size_t)k->n);
    }
}

/* Output tile q from M (its row t of each M[xi]): Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1],
 * then >> 2 (4x the sum, exactly) and the requantization into out (NHWC). */
SI_TARGET_AVX2 static void out_tile2(const si_layer *L, const si_requant *rq, const int32_t *M, int64_t ldx,
                                    int64_t q, char *out, int pool) {
    const int64_t F = L->rows;
    const size_t e = rq->out_u8 ? 1 : sizeof(float);
    char *y[4];
    out_pixels(L, 2, out, e, q, pool, y); /* with pool: the tile is one 2x2 window */
    if (pool && !y[0]) return;
    for (int64_t f = 0; f < F; f += 8) {
        const int cnt = (int)(F - f < 8 ? F - f : 8);
        rq8k k8;
        rq8_prep(rq, f, cnt, &k8);
        __m256i m[16];
        for (int x = 0; x < 16; x++) m[x] = _mm256_loadu_si256((const __m256i *)(M + x * ldx + f));
        __m256i s0[4], s1[4];
        for (int j = 0; j < 4; j++) {
            s0[j] = _mm256_add_epi32(_mm256_add_epi32(m[0 * 4 + j], m[1 * 4 + j]), m[2 * 4 + j]);
            s1[j] = _mm256_sub_epi32(_mm256_sub_epi32(m[1 * 4 + j], m[2 * 4 + j]), m[3 * 4 + j]);
        }
        __m256i yv[4] = {
            _mm256_add_epi32(_mm256_add_epi32(s0[0], s0[1]), s0[2]),
            _mm256_sub_epi32(_mm256_sub_epi32(s0[1], s0[2]), s0[3]),
            _mm256_add_epi32(_mm256_add_epi32(s1[0], s1[1]), s1[2]),
            _mm256_sub_epi32(_mm256_sub_epi32(s1[1], s1[2]), s1[3]),
        };
        for (int k = 0; k < 4; k++) yv[k] = _mm256_srai_epi32(yv[k], 2);
        if (pool) /* the requantization is monotone (mul > 0): the max of the sums, requantized */
            rq8(_mm256_max_epi32(_mm256_max_epi32(yv[0], yv[1]), _mm256_max_epi32(yv[2], yv[3])), &k8,
                y[0] + (size_t)f * e);
        else
            for (int k = 0; k < 4; k++)
                if (y[k]) rq8(yv[k], &k8, y[k] + (size_t)f * e);
    }
}

/* F(3x3, 3x3): V = B^T d B over the 5x5 window, B^T = [2 -1 -2 1 0; 0 -2 -1 1 0;
 * 0 2 -3 1 0; 0 -1 0 1 0; 0 2 -1 -2 1] (points 0, 1, -1, 2, infinity; |V| <= 36 * 255). */
#define BT5(o, v0, v1, v2, v3, v4, ADD, SUB, DBL)                                             \
    o[0] = ADD(DBL(SUB(v0, v2)), SUB(v3, v1));                                                \
    o[1] = SUB(SUB(v3, v2), DBL(v1));                                                         \
    o[2] = ADD(DBL(SUB(v1, v2)), SUB(v3, v2));                                                \
    o[3] = SUB(v3, v1);                                                                       \
    o[4] = ADD(DBL(SUB(v1, v3)), SUB(v4, v2));
#define I_ADD(a, b) ((a) + (b))
#define I_SUB(a, b) ((a) - (b))
#define I_DBL(a) (2 * (a))
#define V_ADD(a, b) _mm256_add_epi16(a, b)
#define V_SUB(a, b) _mm256_sub_epi16(a, b)
#define V_DBL(a) _mm256_add_epi16(a, a)

SI_TARGET_AVX2 static void in_tile3(const si_layer *L, const uint8_t *in, int64_t q, int16_t *V, int64_t ldv) {
    const int64_t C = L->in_c;
    const uint8_t z = (uint8_t)L->q_in_zero;
    const uint8_t *d[25];
    in_taps(L, 3, in, q, d);
    int64_t c = 0;
    const __m256i zv = _mm256_set1_epi16(z);
    for (; c + 16 <= C; c += 16) {
        __m256i r[5][5], o[5]; /* r[y][j]: row y transformed along x */
        for (int y = 0; y < 5; y++) {
            __m256i v[5];
            for (int x = 0; x < 5; x++)
                v[x] = d[y * 5 + x] ? _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(d[y * 5 + x] + c))) : zv;
            BT5(r[y], v[0], v[1], v[2], v[3], v[4], V_ADD, V_SUB, V_DBL)
        }
        for (int j = 0; j < 5; j++) {
            BT5(o, r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], V_ADD, V_SUB, V_DBL)
            for (int i = 0; i < 5; i++) _mm256_storeu_si256((__m256i *)(V + (i * 5 + j) * ldv + c), o[i]);
        }
    }
    for (; c < vstride(L); c++) {
        int r[5][5], o[5], v[5];
        for (int y = 0; y < 5; y++) {
            for (int x = 0; x < 5; x++) v[x] = c < C ? (d[y * 5 + x] ? d[y * 5 + x][c] : z) : 0;
            BT5(r[y], v[0], v[1], v[2], v[3], v[4], I_ADD, I_SUB, I_DBL)
        }
        for (int j = 0; j < 5; j++) {
            BT5(o, r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], I_ADD, I_SUB, I_DBL)
            for (int i = 0; i < 5; i++) V[(i * 5 + j) * ldv + c] = (int16_t)o[i];
        }
    }
}

/* Y = A^T M A, A^T = [1 1 1 1 0; 0 1 -1 2 0; 0 1 1 4 1]: 36x the sum (U is 36 G g G^T), known
 * modulo 2^32. Y >> 2 is 9 sum modulo 2^30; times 9's inverse modulo 2^32 it is the sum modulo
 * 2^30, sign-extended from 30 bits: exact while |sum| < 2^29 (C <= MAX_C). */
#define AT5(o, m0, m1, m2, m3, m4)                                                            \
    o[0] = _mm256_add_epi32(_mm256_add_epi32(m0, m1), _mm256_add_epi32(m2, m3));              \
    o[1] = _mm256_add_epi32(_mm256_sub_epi32(m1, m2), _mm256_slli_epi32(m3, 1));              \
    o[2] = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(m1, m2), _mm256_slli_epi32(m3, 2)), m4);

SI_TARGET_AVX2 static void out_tile3(const si_layer *L, const si_requant *rq, const int32_t *M, int64_t ldx,
                                     int64_t q, char *out) { /* 3x3 tiles do not hold 2x2 windows: no fused pool */
    const int64_t F = L->rows;
    const size_t e = rq->out_u8 ? 1 : sizeof(float);
    const __m256i inv9 = _mm256_set1_epi32((int32_t)954437177); /* 9 * 954437177 = 2^33 + 1 */
    char *y[9];
    out_pixels(L, 3, out, e, q, 0, y);
    for (int64_t f = 0; f < F; f += 8) {
        const int cnt = (int)(F - f < 8 ? F - f : 8);
        rq8k k8;
        rq8_prep(rq, f, cnt, &k8);
        __m256i s[3][5], o[3];
        for (int j = 0; j < 5; j++) {
            __m256i mm[5];
            for (int i = 0; i < 5; i++) mm[i] = _mm256_loadu_si256((const __m256i *)(M + (i * 5 + j) * ldx + f));
            AT5(o, mm[0], mm[1], mm[2], mm[3], mm[4])
            s[0][j] = o[0];
            s[1][j] = o[1];
            s[2][j] = o[2];
        }
        for (int i = 0; i < 3; i++) {
            AT5(o, s[i][0], s[i][1], s[i][2], s[i][3], s[i][4])
            for (int j = 0; j < 3; j++)
                if (y[i * 3 + j]) {
                    /* o is 4 x (9 sum mod 2^30): o inv9 = 4 x (sum mod 2^30) modulo 2^32 */
                    rq8(_mm256_srai_epi32(_mm256_mullo_epi32(o[j], inv9), 2), &k8, y[i * 3 + j] + (size_t)f * e);
                }
        }
    }
}

/* F(4x4, 3x3): V = B^T d B over the 6x6 window, B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0;
 * 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1] (|V| <= 100 * 255 = 25,500). */
#define BT6(o, v0, v1, v2, v3, v4, v5, ADD, SUB, SHL)                                          \
    o[0] = ADD(SUB(SHL(v0, 2), ADD(SHL(v2, 2), v2)), v4);                                     \
    o[1] = SUB(ADD(v3, v4), SHL(ADD(v1, v2), 2));                                             \
    o[2] = ADD(SUB(v4, v3), SHL(SUB(v1, v2), 2));                                             \
    o[3] = ADD(SUB(v4, v2), SHL(SUB(v3, v1), 1));                                             \
    o[4] = SUB(SUB(v4, v2), SHL(SUB(v3, v1), 1));                                             \
    o[5] = ADD(SUB(SHL(v1, 2), ADD(SHL(v3, 2), v3)), v5);
#define I_SHL(a, n) ((a) * (1 << (n)))
#define V_SHL(a, n) _mm256_slli_epi16(a, n)

SI_TARGET_AVX2 static void in_tile4(const si_layer *L, const uint8_t *in, int64_t q, int16_t *V, int64_t ldv) {
    const int64_t C = L->in_c;
    const uint8_t z = (uint8_t)L->q_in_zero;
    const uint8_t *d[36];
    in_taps(L, 4, in, q, d);
    int64_t c = 0;
    const __m256i zv = _mm256_set1_epi16(z);
    for (; c + 16 <= C; c += 16) {
        __m256i r[6][6], o[6];
        for (int y = 0; y < 6; y++) {
            __m256i v[6];
            for (int x = 0; x < 6; x++)
                v[x] = d[y * 6 + x] ? _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(d[y * 6 + x] + c))) : zv;
            BT6(r[y], v[0], v[1], v[2], v[3], v[4], v[5], V_ADD, V_SUB, V_SHL)
        }
        for (int j = 0; j < 6; j++) {
            BT6(o, r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], r[5][j], V_ADD, V_SUB, V_SHL)
            for (int i = 0; i < 6; i++) _mm256_storeu_si256((__m256i *)(V + (i * 6 + j) * ldv + c), o[i]);
        }
    }
    if (c < vstride(L)) {
        /* the last channels (VGG19's block1_conv1: all 3) as one vector, through copies of
         * their bytes (a 16-byte load would read past the input's end), the pad channel 0 */
        const int64_t w = vstride(L) - c;
        __m256i r[6][6], o[6];
        for (int y = 0; y < 6; y++) {
            __m256i v[6];
            for (int x = 0; x < 6; x++) {
                uint8_t b[16] = {0};
                if (d[y * 6 + x]) memcpy(b, d[y * 6 + x] + c, (size_t)(C - c));
                else memset(b, z, (size_t)(C - c));
                v[x] = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b));
            }
            BT6(r[y], v[0], v[1], v[2], v[3], v[4], v[5], V_ADD, V_SUB, V_SHL)
        }
        for (int j = 0; j < 6; j++) {
            BT6(o, r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], r[5][j], V_ADD, V_SUB, V_SHL)
            for (int i = 0; i < 6; i++) {
                int16_t t[16];
                _mm256_storeu_si256((__m256i *)t, o[i]);
                memcpy(V + (i * 6 + j) * ldv + c, t, (size_t)w * sizeof(int16_t));
            }
        }
    }
}

/* Y = A''^T M A'', A''^T = 24 A^T D^-1 = [6 4 4 1 1 0; 0 4 -4 2 -2 0; 0 4 4 4 4 0;
 * 0 4 -4 8 -8 24]: 576x the sum modulo 2^32. Rows 1, 2 and 3 have the common factors 2, 4
 * and 4, left out of each pass (AT6: o[1] half of row 1, o[2] and o[3] a quarter), so output
 * (i, j) holds 576 / 2^(k_i + k_j) times the sum, k = (0, 1, 2, 2); >> (6 - k_i - k_j) gives 9x
 * the sum modulo 2^(26 + k_i + k_j), and times 9's inverse, sign-extended from 26 bits or more,
 * the sum (sums_fit_26). 17 additions and shifts a pass instead of 22: the output transform
 * was 5% of the int8 VGG19's time (AVX2 cap). */
#define S32(a, n) _mm256_slli_epi32(a, n)
#define AT6(o, m0, m1, m2, m3, m4, m5)                                                        \
    {                                                                                         \
        const __m256i p12 = _mm256_add_epi32(m1, m2), d12 = _mm256_sub_epi32(m1, m2);         \
        const __m256i p34 = _mm256_add_epi32(m3, m4), d34 = _mm256_sub_epi32(m3, m4);         \
        o[0] = _mm256_add_epi32(_mm256_add_epi32(S32(_mm256_add_epi32(m0, p12), 2), S32(m0, 1)), p34); \
        o[1] = _mm256_add_epi32(S32(d12, 1), d34);                                            \
        o[2] = _mm256_add_epi32(p12, p34);                                                    \
        o[3] = _mm256_add_epi32(d12, S32(_mm256_add_epi32(_mm256_add_epi32(d34, m5), S32(m5, 1)), 1)); \
    }
static const int AT6_K[4] = {0, 1, 2, 2}; /* log2 of the factor each AT6 row leaves out */

SI_TARGET_AVX2 static void out_tile4(const si_layer *L, const si_requant *rq, const int32_t *M, int64_t ldx,
                                     int64_t q, char *out, int pool) {
    const int64_t F = L->rows;
    const size_t e = rq->out_u8 ? 1 : sizeof(float);
    const __m256i inv9 = _mm256_set1_epi32((int32_t)954437177);
    char *y[16];
    out_pixels(L, 4, out, e, q, pool, y); /* with pool: its four 2x2 windows */
    if (pool && !y[0]) return;             /* (windows past the pooled output's last row and column) */
    for (int64_t f = 0; f < F; f += 8) {
        const int cnt = (int)(F - f < 8 ? F - f : 8);
        rq8k k8;
        rq8_prep(rq, f, cnt, &k8);
        __m256i s[4][6], o[4], yr[4][4];
        for (int j = 0; j < 6; j++) {
            __m256i mm[6];
            for (int i = 0; i < 6; i++) mm[i] = _mm256_loadu_si256((const __m256i *)(M + (i * 6 + j) * ldx + f));
            AT6(o, mm[0], mm[1], mm[2], mm[3], mm[4], mm[5])
            for (int i = 0; i < 4; i++) s[i][j] = o[i];
        }
        for (int i = 0; i < 4; i++) {
            AT6(o, s[i][0], s[i][1], s[i][2], s[i][3], s[i][4], s[i][5])
            for (int j = 0; j < 4; j++) {
                /* o is 64 x (9 sum mod 2^26): o inv9 = 64 x (sum mod 2^26) modulo 2^32 */
                yr[i][j] = _mm256_srai_epi32(_mm256_mullo_epi32(o[j], inv9), 6 - AT6_K[i] - AT6_K[j]);
            }
        }
        if (pool) { /* the requantization is monotone (mul > 0): the max of the sums, requantized */
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++)
                    if (y[i * 2 + j])
                        rq8(_mm256_max_epi32(_mm256_max_epi32(yr[2 * i][2 * j], yr[2 * i][2 * j + 1]),
                                             _mm256_max_epi32(yr[2 * i + 1][2 * j], yr[2 * i + 1][2 * j + 1])),
                            &k8, y[i * 2 + j] + (size_t)f * e);
        } else
            for (int k = 0; k < 16; k++)
                if (y[k]) rq8(yr[k / 4][k % 4], &k8, y[k] + (size_t)f * e);
    }
}

SI_TARGET_AVX2 static void in_tiles(const si_layer *L, int mt, const uint8_t *x, int64_t q0, int64_t n,
                                    int16_t *V, int64_t ldv, int64_t G) {
    for (int64_t t = 0; t < n; t++) {
        if (mt == 2) in_tile2(L, x, q0 + t, V + t * ldv, G * ldv);
        else if (mt == 3) in_tile3(L, x, q0 + t, V + t * ldv, G * ldv);
        else in_tile4(L, x, q0 + t, V + t * ldv, G * ldv);
    }
}

SI_TARGET_AVX2 static void out_tiles(const si_layer *L, int mt, const si_requant *rq, const int32_t *M, int64_t ldm,
                                     int64_t G, int64_t q0, int64_t n, char *out, int pool) {
    for (int64_t t = 0; t < n; t++) {
        if (mt == 2) out_tile2(L, rq, M + t * ldm, G * ldm, q0 + t, out, pool);
        else if (mt == 3) out_tile3(L, rq, M + t * ldm, G * ldm, q0 + t, out);
        else out_tile4(L, rq, M + t * ldm, G * ldm, q0 + t, out, pool);
    }
}

static void wi_go(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws, int pool) {
    const wi_state *s = st;
    const uint8_t *x = (const uint8_t *)in;
    const int mt = s->m, X = s->xi, local = use_local(L, mt, s);
    const int64_t tiles = tiles_of(L, mt, batch), ldv = vstride(L), ldm = s->panels * NR;
    const int64_t G = local ? local_tiles(L, mt, batch) : group_tiles(L, mt, batch);
    const int64_t gbytes = G * tile_bytes(L, mt) + 128; /* one group's V and M */
    si_requant rq;
    si_layer_requant(L, &rq);
    const int nt = si_threads_for(tiles * X * L->in_c * L->rows / 2, local ? (tiles + G - 1) / G : tiles * 2);
    if (local) {
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int16_t *V = (int16_t *)((char *)ws + omp_get_thread_num() * gbytes);
            int32_t *M = (int32_t *)((char *)V + (X * G * ldv * 2 + 63) / 64 * 64);
#pragma omp for schedule(dynamic, 1)
            for (int64_t g0 = 0; g0 < tiles; g0 += G) {
                const int64_t gn = tiles - g0 < G ? tiles - g0 : G;
                in_tiles(L, mt, x, g0, gn, V, ldv, G);
                for (int xi = 0; xi < X; xi++)
                    gemm_xi(s, xi, V + xi * G * ldv, ldv, M + xi * G * ldm, ldm, 0, gn, 0, s->panels);
                out_tiles(L, mt, &rq, M, ldm, G, g0, gn, (char *)out, pool);
            }
        }
        return;
    }
    int16_t *V = (int16_t *)ws;
    int32_t *M = (int32_t *)((char *)ws + (X * G * ldv * 2 + 63) / 64 * 64);
#pragma omp parallel num_threads(nt) if (nt > 1)
    for (int64_t g0 = 0; g0 < tiles; g0 += G) {
        const int64_t gn = tiles - g0 < G ? tiles - g0 : G;
        /* the GEMMs as (position, half of the panels) where the positions do not split evenly
         * among the threads (F(3x3)'s 25 on 2): each half reads half of U[xi], for all the
         * rows. Halves of the rows instead read all of U[xi] twice, each panel for half the
         * rows. VGG19's block 5 (25 rows, 13 MB of U a layer, from memory), int8, 2 threads,
         * SPR capped to AVX2: 1.67-1.75 -> 1.43-1.59 ms a layer; the model 47.3-49.0 -> 47.1-47.8 */
        const int halves = X % nt && s->panels >= 2 ? 2 : 1;
        const int64_t half = halves == 2 ? s->panels / 2 : s->panels; /* the first item's panels */
#pragma omp for schedule(static)
        for (int64_t t = 0; t < gn; t++) in_tiles(L, mt, x, g0 + t, 1, V + t * ldv, ldv, G);
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < X * halves; it++) {
            const int xi = it / halves;
            const int second = it % halves;
            gemm_xi(s, xi, V + xi * G * ldv, ldv, M + xi * G * ldm, ldm, 0, gn, second ? half : 0,
                    second ? s->panels : half);
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < gn; t++) out_tiles(L, mt, &rq, M + t * ldm, ldm, G, g0 + t, 1, (char *)out, pool);
    }
}
#else
static void wi_go(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws, int pool) {
    (void)L; (void)st; (void)in; (void)batch; (void)out; (void)ws; (void)pool; /* never applies */
}
#endif

/* A following 2x2 max pool runs inside the output transform of F(2x2) and F(4x4), whose tiles
 * hold whole windows; other pools (and F(3x3)'s) after the convolution, over its output in the
 * scratch past the transform's. */
static int fused_pool(const si_layer *L, int mt) { return L->pool && L->pool->kh == 2 && L->pool->kw == 2 && mt != 3; }

static void wi_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    wi_go(L, st, in, batch, out, ws, 0);
}

static void wi_run_pool(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    const wi_state *s = st;
    if (fused_pool(L, s->m)) {
        wi_go(L, st, in, batch, out, ws, 1);
        return;
    }
    float *conv = ws + ws_m(L, s->m, s, batch);
    wi_go(L, st, in, batch, conv, ws, 0);
    if (L->q_out_u8) si_maxpool_u8(L->pool, (const uint8_t *)conv, batch, (uint8_t *)out);
    else si_maxpool_forward(L->pool, conv, batch, out);
}

static void wi_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_conv_i8_ref(L, L->w8, (const uint8_t *)in, batch, out);
}

const si_algo si_algo_conv_winograd_i16 = {
    .name = "conv_winograd_i16", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .int8 = 1, .applies = wi_applies, .prepare = wi_prepare2, .ws_floats = wi_ws2, .run = wi_run, .run_pool = wi_run_pool,
    .run_ref = wi_run_ref, .bytes = wi_bytes, .release = wi_release,
};

const si_algo si_algo_conv_winograd3_i16 = {
    .name = "conv_winograd3_i16", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .int8 = 1, .applies = wi_applies, .prepare = wi_prepare3, .ws_floats = wi_ws3, .run = wi_run, .run_pool = wi_run_pool,
    .run_ref = wi_run_ref, .bytes = wi_bytes, .release = wi_release,
};

const si_algo si_algo_conv_winograd4_i16 = {
    .name = "conv_winograd4_i16", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .int8 = 1, .applies = wi_applies4, .prepare = wi_prepare4, .ws_floats = wi_ws4, .run = wi_run, .run_pool = wi_run_pool,
    .run_ref = wi_run_ref, .bytes = wi_bytes, .release = wi_release,
};

/* F(4x4) in per-thread groups of tiles whatever the size of U: each thread's groups read all of
 * U (from L3 where it is larger than the L2) and keep their V and M in its own L2, where the
 * shared groups pass V and M through L3, written by one core and read by the other, with
 * barriers between the phases. Which is faster depends on the layer and the CPU's caches, so
 * the planner times both. VGG19 int8, AVX2 cap, Zen 5 (1 MB L2), 2 threads, three alternating
 * runs: block2_conv1 (U 0.6 MB) 1.69-1.82 -> 1.46-1.53 ms, block2_conv2 (1.2 MB) 2.93-3.12
 * -> 2.50-2.63; block 3 (U 2.4-4.7 MB) the same either way; block 4 (9-19 MB, from memory)
 * 2.32-2.50 -> 2.66-2.80. */
const si_algo si_algo_conv_winograd4_i16_local = {
    .name = "conv_winograd4_i16_local", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .int8 = 1, .applies = wi_applies4, .prepare = wi_prepare4l, .ws_floats = wi_ws4, .run = wi_run, .run_pool = wi_run_pool,
    .run_ref = wi_run_ref, .bytes = wi_bytes, .release = wi_release,
};
