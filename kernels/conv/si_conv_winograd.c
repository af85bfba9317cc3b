/* Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray, arXiv 1509.09308): each
 * 6x6 input tile d and 3x3 filter g give a 4x4 output tile Y = A^T [(G g G^T) . (B^T d B)] A,
 * 36 multiplies per channel and filter where the direct form needs 144: a quarter.
 *
 * The filters are transformed at load, U[xi] = (G g G^T)[xi] for the 36 positions xi of the
 * 6x6 tile, and each U[xi] (F x C) is packed for the runtime's own GEMM (ops/si_sgemm.c).
 * A run takes the tiles of the whole batch in groups of G (16 MB of transformed input and
 * output together, so a group stays in the last-level cache while each U[xi] is read once
 * per group), and per group, in one parallel region: every thread transforms its share of the group's tiles (V[xi] = (B^T d
 * B)[xi], vectors over the channels); then the 36 GEMMs M[xi] = V[xi] U[xi]^T (tiles x C
 * times C x F) go to the threads a position at a time, so each U[xi] is read once per group
 * (VGG19's block-4 U is 36 MB); then every thread transforms its tiles back (A^T M A), with
 * the bias and the activation, into NHWC. At batch 1 a small layer is one group and both
 * cores share its GEMMs. Where U fits in L2, each thread runs groups of its own instead
 * (si_wino_local_max_u below).
 *
 * The transforms are si_k->wino4_in / wino4_out (ops/si_ops.c), per ISA. The interpolation
 * points are 0, 1, -1, 2, -1/2 and infinity rather than Lavin & Gray's 0, +-1, +-2: in fp32
 * over 256 channels of random data the largest error of a tile, relative to its largest
 * output, fell from 3.1e-5 to 6.7e-6 (mean 4.5e-6 -> 2.4e-6), which kept VGG19's outputs
 * within the 1e-4 per element of the TensorFlow equivalence tests (Barabasz et al., arXiv
 * 1803.10986, on choosing the points). The filter transform runs in double. The reference
 * is the direct convolution on the layer's dense weights. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define XI 36                           /* positions of a 6x6 tile */

/* V and M of one group: 16 MB (a variable so the C tests can force small groups). Larger
 * groups read the transformed filters fewer times (VGG19's block 4: 36 MB per read);
 * measured on Intel SPR, dense VGG19 batch 1 / 8: 4 MB 99 / 672 ms, 16 MB 88 / 561, 32 MB
 * 88 / 604, 64 MB 94 / 623. */
int64_t si_wino_group_floats = INT64_C(1) << 22;

typedef struct wino_state {
    si_packed_b u[XI]; /* U[xi] as an F x C matrix, packed for the own GEMM */
} wino_state;

static int wino_applies(const si_layer *L, int regime) {
    (void)regime;
    return L->type == SI_LAYER_CONV2D && L->kh == 3 && L->kw == 3 && L->sh == 1 && L->sw == 1 && L->out_h > 0 &&
           L->out_w > 0;
}

static void wino_release(void *p) {
    wino_state *s = p;
    if (!s) return;
    for (int x = 0; x < XI; x++) si_packed_b_free(&s->u[x]);
    free(s);
}

static si_status_t wino_prepare(si_layer *L, void **out) {
    static const double G[6][3] = {{1, 0, 0},
                                   {-1.0 / 3, -1.0 / 3, -1.0 / 3},
                                   {1.0 / 3, -1.0 / 3, 1.0 / 3},
                                   {1.0 / 15, 2.0 / 15, 4.0 / 15},
                                   {-16.0 / 15, 8.0 / 15, -4.0 / 15},
                                   {0, 0, 1}};
    const int64_t F = L->rows, C = L->in_c;
    wino_state *s = calloc(1, sizeof *s);
    float *u = si_alloc(sizeof(float) * (size_t)(XI * F * C + 1));
    if (!s || !u) {
        free(s);
        si_free(u);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the Winograd filters (%lld MB)", L->name,
                       (long long)(4 * XI * F * C >> 20));
    }
    /* u[xi][f][c] = sum_{i,j} G[a][i] g[f][i][j][c] G[b][j], xi = a * 6 + b */
    for (int64_t f = 0; f < F; f++)
        for (int64_t c = 0; c < C; c++) {
            double g[3][3], t[6][3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) g[i][j] = L->w[f * L->cols + (i * 3 + j) * C + c];
            for (int a = 0; a < 6; a++)
                for (int j = 0; j < 3; j++) t[a][j] = G[a][0] * g[0][j] + G[a][1] * g[1][j] + G[a][2] * g[2][j];
            for (int a = 0; a < 6; a++)
                for (int b = 0; b < 6; b++)
                    u[((int64_t)(a * 6 + b) * F + f) * C + c] =
                        (float)(t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2]);
        }
    si_status_t st = SI_OK;
    for (int x = 0; x < XI && !st; x++) st = si_pack_b(L->name, u + (int64_t)x * F * C, F, C, &s->u[x]);
    si_free(u);
    if (st) {
        wino_release(s);
        return st;
    }
    *out = s;
    return SI_OK;
}

static int64_t wino_bytes(const si_layer *L, const void *st) {
    (void)L;
    const wino_state *s = st;
    int64_t b = 0;
    for (int x = 0; s && x < XI; x++) b += si_packed_b_bytes(&s->u[x]);
    return b;
}

static int64_t tiles_of(const si_layer *L, int batch) {
    return (int64_t)batch * ((L->out_h + 3) / 4) * ((L->out_w + 3) / 4);
}

/* Tiles per group: V (36 x G x C) and M (36 x G x F) within si_wino_group_floats. */
static int64_t group_tiles(const si_layer *L, int batch) {
    int64_t g = si_wino_group_floats / (XI * (L->in_c + L->rows)), t = tiles_of(L, batch);
    if (g < 1) g = 1;
    return g < t ? g : t;
}

/* Per-thread groups: where U fits in one core's L2 (VGG19's block 1: 590 KB; L2 2 MB on
 * Intel SPR), each thread takes groups of tiles through the input transform, the 36 GEMMs
 * and the output transform alone, its V and M (half its L2) never leaving L2 and no barrier
 * in between; U is re-read per group from L2 or L3. Larger U (block 3: 9.4 MB) keeps the
 * shared groups, which read it once per 16 MB of tiles. Measured on Intel SPR (avx512),
 * dense VGG19 batch 1: block1_conv2 6.7-7.0 ms shared, 5.2-5.5 ms per thread; per-thread
 * groups on block 3 took 6.1 ms against 4.0. -1: from the L2 size (tests set it). */
int64_t si_wino_local_max_u = -1;

static int use_local(const si_layer *L) {
    const int64_t max_u = si_wino_local_max_u >= 0 ? si_wino_local_max_u : si_l2_bytes();
    return 4 * XI * L->rows * L->in_c <= max_u;
}

/* Tiles per per-thread group: V and M in half the L2, a multiple of 8 (the GEMM's rows),
 * and at least two groups per thread where the tiles allow. */
static int64_t local_tiles(const si_layer *L, int batch) {
    int64_t g = si_l2_bytes() / 2 / (4 * XI * (L->in_c + L->rows)) / 8 * 8;
    if (g < 8) g = 8;
    int64_t per = (tiles_of(L, batch) + 2 * si_max_threads() - 1) / (2 * si_max_threads());
    per = (per + 7) / 8 * 8;
    return g < per ? g : per;
}

/* A following 2x2 max pool runs inside the output transform (si_algo.run_pool); other
 * pools run after it, over the convolution's output in the scratch. */
static int fused_pool(const si_layer *L) { return L->pool && L->pool->kh == 2 && L->pool->kw == 2; }

static int64_t transform_ws(const si_layer *L, int batch) {
    if (use_local(L)) return si_max_threads() * XI * local_tiles(L, batch) * (L->in_c + L->rows);
    return XI * group_tiles(L, batch) * (L->in_c + L->rows);
}

static int64_t wino_ws(const si_layer *L, const void *st, int batch) {
    (void)st;
    const int64_t conv = L->pool && !fused_pool(L) ? (int64_t)batch * L->out_h * L->out_w * L->rows : 0;
    return transform_ws(L, batch) + conv;
}

static void in_tile(const si_layer *L, const float *in, int64_t q, float *V, int64_t ldv) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, th = (L->out_h + 3) / 4, tw = (L->out_w + 3) / 4;
    const int64_t n = q / (th * tw), ty = q % (th * tw) / tw, tx = q % tw;
    const float *d[XI];
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 6; x++) {
            const int64_t iy = 4 * ty - L->pad_top + y, ix = 4 * tx - L->pad_left + x;
            d[y * 6 + x] = iy >= 0 && iy < H && ix >= 0 && ix < W ? in + ((n * H + iy) * W + ix) * C : NULL;
        }
    si_k->wino4_in(d, C, V, ldv);
}

/* Output tile q into out (NHWC), or with pool its 2x2 max pool into out (L->pool's shape). */
static void out_tile(const si_layer *L, const float *M, int64_t ldm, int64_t q, int act, float *out, int pool) {
    const int64_t F = L->rows, OH = L->out_h, OW = L->out_w, th = (OH + 3) / 4, tw = (OW + 3) / 4;
    const int64_t n = q / (th * tw), ty = q % (th * tw) / tw, tx = q % tw;
    float *y[16];
    if (pool) { /* pooled row 2 ty + i reads conv rows 4 ty + 2 i and + 1, both inside when it is */
        const int64_t PH = L->pool->out_h, PW = L->pool->out_w;
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                const int64_t py = 2 * ty + i, px = 2 * tx + j;
                y[i * 2 + j] = py < PH && px < PW ? out + ((n * PH + py) * PW + px) * F : NULL;
            }
    } else {
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) {
                const int64_t oy = 4 * ty + r, ox = 4 * tx + c;
                y[r * 4 + c] = oy < OH && ox < OW ? out + ((n * OH + oy) * OW + ox) * F : NULL;
            }
    }
    si_k->wino4_out(M, ldm, F, L->bias, act, y, pool);
}

static void wino_local(const si_layer *L, const wino_state *s, const float *in, int batch, float *out, float *ws,
                       int pool) {
    const int64_t C = L->in_c, F = L->rows, tiles = tiles_of(L, batch), G = local_tiles(L, batch);
    const int act = L->act == SI_ACT_RELU ? SI_ACT_RELU : SI_ACT_LINEAR;
    const int nt = si_threads_for(tiles * XI * C * F, (tiles + G - 1) / G);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *V = ws + (int64_t)omp_get_thread_num() * XI * G * (C + F), *M = V + XI * G * C;
#pragma omp for schedule(dynamic, 1)
        for (int64_t g0 = 0; g0 < tiles; g0 += G) {
            const int64_t gn = tiles - g0 < G ? tiles - g0 : G;
            for (int64_t t = 0; t < gn; t++) in_tile(L, in, g0 + t, V + t * C, G * C);
            for (int x = 0; x < XI; x++) si_sgemm_packed_rows(V + x * G * C, C, gn, &s->u[x], M + x * G * F, F);
            for (int64_t t = 0; t < gn; t++) out_tile(L, M + t * F, G * F, g0 + t, act, out, pool);
        }
    }
}

static void wino_shared(const si_layer *L, const wino_state *s, const float *in, int batch, float *out, float *ws,
                        int pool) {
    const int64_t C = L->in_c, F = L->rows, tiles = tiles_of(L, batch), G = group_tiles(L, batch);
    const int act = L->act == SI_ACT_RELU ? SI_ACT_RELU : SI_ACT_LINEAR;
    float *V = ws, *M = ws + XI * G * C;
    const int nt = si_threads_for(tiles * XI * C * F, tiles * 2);
#pragma omp parallel num_threads(nt) if (nt > 1)
    for (int64_t g0 = 0; g0 < tiles; g0 += G) {
        const int64_t gn = tiles - g0 < G ? tiles - g0 : G;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < gn; t++) in_tile(L, in, g0 + t, V + t * C, G * C);
#pragma omp for schedule(dynamic, 1)
        for (int x = 0; x < XI; x++) si_sgemm_packed_rows(V + x * G * C, C, gn, &s->u[x], M + x * G * F, F);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < gn; t++) out_tile(L, M + t * F, G * F, g0 + t, act, out, pool);
    }
}

static void wino_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    if (use_local(L)) wino_local(L, st, in, batch, out, ws, 0);
    else wino_shared(L, st, in, batch, out, ws, 0);
    if (L->act == SI_ACT_SOFTMAX) si_softmax_rows(out, (int64_t)batch * L->out_h * L->out_w, L->rows);
}

/* The convolution and L->pool (whose act is ReLU or linear: si_plan.c fuses no other). */
static void wino_run_pool(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    if (fused_pool(L)) {
        if (use_local(L)) wino_local(L, st, in, batch, out, ws, 1);
        else wino_shared(L, st, in, batch, out, ws, 1);
        return;
    }
    float *conv = ws + transform_ws(L, batch);
    wino_run(L, st, in, batch, conv, ws);
    si_maxpool_forward(L->pool, conv, batch, out);
}

static void wino_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_f32_conv_ref(L, in, batch, out);
}

const si_algo si_algo_conv_winograd = {
    .name = "conv_winograd", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .applies = wino_applies, .prepare = wino_prepare, .ws_floats = wino_ws, .run = wino_run,
    .run_pool = wino_run_pool,
    .run_ref = wino_run_ref, .bytes = wino_bytes, .release = wino_release,
};
