/* Sparse direct convolution on a planar copy of the input (stride 1): the input of a group
 * of samples is first rewritten as zero-padded channel planes (C x Hp x Wp per sample, the
 * "direct sparse convolution" layout of Park et al. 2017), and then every non-zero filter
 * weight (f, i, j, c) is one broadcast-FMA of w over 64 consecutive positions of plane c
 * starting at offset c*Hp*Wp + i*Wp + j from the tile's first position.
 *
 * Positions are "virtual": the output grid is laid over the padded width (OH x Wp), so the
 * 64 positions of a tile are contiguous in every plane, across output rows; the Wp - OW
 * columns past the right edge are computed and dropped. Against conv_sparse_direct this
 * moves each input value once per layer instead of kh*kw times (no per-tile patches), at
 * the price of (Wp - OW) / OW wasted columns (2/224 for VGG's first block, 2/14 for its
 * last). The offsets of the non-zeros are computed at load (the entry's state), for the
 * layer's width; a timed strip of the layer keeps the width.
 *
 * Per tile and thread: the filters' sums go to a rows x 64 tile, then transposed into the
 * NHWC output. The microkernels (portable, AVX2+FMA, AVX-512) live in the ISA table
 * (csr_planar); the reference is the direct convolution over the CSR non-zeros. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_FLOATS (INT64_C(1) << 20) /* planar copies of up to 4 MB of samples at a time */

typedef struct planar_state {
    int32_t *off;   /* per non-zero: c * plane + i * Wp + j */
    int64_t wp, plane_cap; /* the padded width the offsets are for; plane stride */
} planar_state;

static int64_t padded_w(const si_layer *L) { return L->out_w - 1 + L->kw; }
static int64_t padded_h(const si_layer *L) { return L->out_h - 1 + L->kh; }

static int planar_applies(const si_layer *L, int regime) {
    (void)regime;
    return L->type == SI_LAYER_CONV2D && L->sh == 1 && L->sw == 1 &&
           (double)L->in_c * (double)padded_h(L) * (double)padded_w(L) < 2e9;
}

static void planar_release(void *p) {
    planar_state *s = p;
    if (s) { si_free(s->off); free(s); }
}

static si_status_t planar_prepare(si_layer *L, void **out) {
    planar_state *s = calloc(1, sizeof *s);
    if (!s) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the planar offsets", L->name);
    s->wp = padded_w(L);
    s->plane_cap = padded_h(L) * s->wp;
    s->off = si_alloc((size_t)(L->nnz ? L->nnz : 1) * sizeof(int32_t));
    if (!s->off) { free(s); return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the planar offsets", L->name); }
    const int64_t C = L->in_c;
    for (int64_t k = 0; k < L->nnz; k++) {
        int64_t kk = L->csr_col[k], c = kk % C, tap = kk / C, i = tap / L->kw, j = tap % L->kw;
        s->off[k] = (int32_t)(c * s->plane_cap + i * s->wp + j);
    }
    *out = s;
    return SI_OK;
}

static int64_t planar_bytes(const si_layer *L, const void *st) { return st ? 4 * L->nnz : 0; }

/* Samples per planar group, and the floats of one sample's planes (plus slack for the last
 * tile's reads past the end, whose results are dropped). */
static int64_t sample_floats(const si_layer *L, const planar_state *s) {
    return (L->in_c * s->plane_cap + SI_PANEL + L->kw + 15) / 16 * 16;
}
static int group_samples(const si_layer *L, const planar_state *s, int batch) {
    int64_t g = GROUP_FLOATS / sample_floats(L, s);
    if (g < 1) g = 1;
    return (int)(g < batch ? g : batch);
}

/* With a fused pool the group's conv output goes to the scratch, after the planes and tiles. */
static int64_t planar_ws(const si_layer *L, const void *st, int batch) {
    const planar_state *s = st;
    const int64_t gs = group_samples(L, s, batch);
    return gs * sample_floats(L, s) + (int64_t)si_max_threads() * L->rows * SI_PANEL +
           (L->pool ? gs * L->out_h * L->out_w * L->rows : 0);
}

/* The planes of samples [0, g): plane c row py column px = input (py - pad_top,
 * px - pad_left, c), 0 outside, and zeros in the slack after each sample's planes. One
 * work-shared loop over (sample, padded row) for the whole group: a loop per sample would
 * pay a barrier per sample (64 of them at LeNet's batch 64 cost more than the copy). */
static void build_planes(const si_layer *L, const planar_state *s, const float *in, int g, float *planes, int64_t sf) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, Hp = padded_h(L), Wp = s->wp, in_sample = H * W * C;
    const int64_t slack = sf - C * s->plane_cap;
#pragma omp for schedule(static)
    for (int64_t it = 0; it < (int64_t)g * Hp; it++) {
        const int64_t n = it / Hp, py = it % Hp, y = py - L->pad_top;
        float *dst = planes + n * sf;
        if (py == 0) memset(dst + C * s->plane_cap, 0, sizeof(float) * (size_t)slack);
        for (int64_t c = 0; c < C; c++) {
            float *row = dst + c * s->plane_cap + py * Wp;
            if (y < 0 || y >= H) { memset(row, 0, sizeof(float) * (size_t)Wp); continue; }
            const float *src = in + n * in_sample + y * W * C + c;
            for (int64_t px = 0; px < Wp; px++) {
                int64_t x = px - L->pad_left;
                row[px] = x >= 0 && x < W ? src[x * C] : 0.0f;
            }
        }
    }
}

/* pool: L->pool computed in the same parallel region (the group's conv output to the
 * scratch, then each thread pools its share of pooled rows), with the bias and the
 * activation after it; else the bias and the activation there too (unless softmax). One
 * fork and join per group instead of three: LeNet-5's layers are microseconds of work. */
static void planar_conv(const si_layer *L, const planar_state *s, const float *in, int batch, float *out, float *ws,
                        int pool) {
    const int64_t F = L->rows, OH = L->out_h, OW = L->out_w, Wp = s->wp, V = OH * Wp, sf = sample_floats(L, s);
    const int64_t tiles = (V + SI_PANEL - 1) / SI_PANEL, in_sample = L->in_h * L->in_w * L->in_c;
    const int gs = group_samples(L, s, batch);
    float *planes = ws, *tiles_ws = ws + (int64_t)gs * sf;
    float *conv = pool ? tiles_ws + (int64_t)si_max_threads() * F * SI_PANEL : NULL;
    const si_layer *P = pool ? L->pool : NULL;
    const int act = L->act == SI_ACT_RELU ? SI_ACT_RELU : SI_ACT_LINEAR, fuse_act = L->act != SI_ACT_SOFTMAX;
    const si_kernel_table *k = si_k;
    int nt = si_threads_for((L->nnz + F) * OH * OW * batch, si_max_threads());
    for (int n0 = 0; n0 < batch; n0 += gs) {
        const int g = batch - n0 < gs ? batch - n0 : gs;
        const int64_t items0 = (int64_t)g * tiles;
        int64_t fsplit = items0 >= 2 * nt ? 1 : (2 * nt + items0 - 1) / items0;
        if (fsplit > F) fsplit = F;
        const int64_t items = items0 * fsplit;
        const int64_t chunk = items / (8 * nt) > 1 ? items / (8 * nt) : 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            build_planes(L, s, in + (int64_t)n0 * in_sample, g, planes, sf); /* ends in a barrier */
            float *tile = tiles_ws + (int64_t)omp_get_thread_num() * F * SI_PANEL;
#pragma omp for schedule(dynamic, chunk)
            for (int64_t it = 0; it < items; it++) {
                int64_t st = it / fsplit, part = it % fsplit, n = st / tiles, v0 = st % tiles * SI_PANEL, r0, r1;
                int w = (int)(V - v0 < SI_PANEL ? V - v0 : SI_PANEL);
                si_part_rows(L->csr_ptr, 0, F, (int)part, (int)fsplit, &r0, &r1);
                k->csr_planar(L->csr_val, s->off, L->csr_ptr, L->csr_ptr + 1, r0, r1, planes + n * sf + v0, w, tile, 0);
                float *o = pool ? conv + (int64_t)n * OH * OW * F : out + (int64_t)(n0 + n) * OH * OW * F;
                for (int t = 0; t < w; t++) {
                    int64_t v = v0 + t, oh = v / Wp, ow = v % Wp;
                    if (ow >= OW) continue;
                    float *dst = o + (oh * OW + ow) * F;
                    for (int64_t r = r0; r < r1; r++) dst[r] = tile[(r - r0) * SI_PANEL + t];
                }
            }
            /* the loop's barrier: every tile of the group is written */
            if (pool) {
                float *po = out + (int64_t)n0 * P->out_h * P->out_w * F;
#pragma omp for schedule(static)
                for (int64_t pr = 0; pr < (int64_t)g * P->out_h; pr++) {
                    k->maxpool_rows(P, conv, po, pr, pr + 1);
                    k->bias_act_rows(po, L->bias, F, act, pr * P->out_w, (pr + 1) * P->out_w);
                }
            } else if (fuse_act && (L->bias || act == SI_ACT_RELU)) {
                float *o = out + (int64_t)n0 * OH * OW * F;
#pragma omp for schedule(static)
                for (int64_t p = 0; p < (int64_t)g * OH; p++) k->bias_act_rows(o, L->bias, F, act, p * OW, (p + 1) * OW);
            }
        }
    }
}

static void planar_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    planar_conv(L, st, in, batch, out, ws, 0);
    if (L->act == SI_ACT_SOFTMAX) si_bias_act(L, out, (int64_t)batch * L->out_h * L->out_w);
}

static void planar_run_pool(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    planar_conv(L, st, in, batch, out, ws, 1);
}

static void planar_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_f32_spconv_ref(L, in, batch, out);
    si_bias_act_ref(L, out, (int64_t)batch * L->out_h * L->out_w);
}

const si_algo si_algo_conv_sparse_planar = {
    .name = "conv_sparse_planar", .type = SI_LAYER_CONV2D, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .applies = planar_applies, .prepare = planar_prepare, .ws_floats = planar_ws, .run = planar_run,
    .run_pool = planar_run_pool, .run_ref = planar_run_ref, .bytes = planar_bytes, .release = planar_release,
};
