/* Dense convolution as im2col + the runtime's own GEMM on filters packed at load
 * (ops/si_sgemm.c), then bias and activation: conv_gemm's algorithm without MKL, whose sgemm
 * runs a generic code path on AMD CPUs. Its run reads only the packed filters, so a layer
 * that picks it keeps no other copy. Reference: the direct convolution on the packed filters. */
#include "si_internal.h"

#include <omp.h>

static int pointwise(const si_layer *L) { return L->kh == 1 && L->kw == 1 && L->sh == 1 && L->sw == 1; }

static int gp_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_CONV2D; }


/* With a fused pool: per thread, the patches and the conv output of one pooled row's kh
 * conv rows. */
static int64_t pool_tile_floats(const si_layer *L) {
    return (int64_t)L->pool->kh * L->out_w * ((pointwise(L) ? 0 : L->cols) + L->rows);
}

static int64_t gp_ws(const si_layer *L, const void *st, int batch) {
    (void)st;
    int64_t ws = pointwise(L) ? 0 : si_im2col_chunk_rows(L, batch) * L->cols;
    int64_t wp = L->pool ? si_max_threads() * pool_tile_floats(L) : 0;
    return ws > wp ? ws : wp;
}

static void gp_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    const int64_t chunk = pointwise(L) ? P : si_im2col_chunk_rows(L, batch); /* as gp_ws sized it */
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        int64_t m = P - p0 < chunk ? P - p0 : chunk;
        const float *a = in + p0 * K;
        if (!pointwise(L)) { si_im2col(L, in, p0, m, ws); a = ws; }
        si_sgemm_packed(a, K, m, st, out + p0 * F, F);
    }
    si_bias_act(L, out, P);
}

/* Convolution, pool, bias and activation in one parallel region, a pooled output row at a
 * time: the patches of its kh conv rows, their GEMM, the max over each window, then the bias
 * and the activation (which commute with the max) on the pooled values only. One fork and
 * join per layer instead of four (im2col, GEMM, bias, pool): LeNet-5 at batch 1 is a few
 * microseconds of work per layer. */
static void gp_run_pool(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    const si_layer *P = L->pool;
    const int64_t OW = L->out_w, K = L->cols, F = L->rows, POH = P->out_h, POW = P->out_w, cw = P->kh * OW;
    const int64_t prow = (int64_t)batch * POH, tf = pool_tile_floats(L);
    const int act = L->act == SI_ACT_RELU ? SI_ACT_RELU : SI_ACT_LINEAR;
    const int nt = si_threads_for((int64_t)batch * L->out_h * OW * K * F, prow);
    si_layer tile = *P; /* the pool of one pooled row: its kh conv rows as the whole input */
    tile.in_h = P->kh;
    tile.out_h = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *col = ws + (int64_t)omp_get_thread_num() * tf, *c = pointwise(L) ? col : col + cw * K;
#pragma omp for schedule(static)
        for (int64_t pr = 0; pr < prow; pr++) {
            const int64_t n = pr / POH, ph = pr % POH, p0 = (n * L->out_h + ph * P->kh) * OW;
            const float *a = in + p0 * K;
            if (!pointwise(L)) { si_k->im2col_rows(L, in, p0, cw, col); a = col; }
            si_sgemm_packed_rows(a, K, cw, st, c, F);
            float *o = out + pr * POW * F;
            si_k->maxpool_rows(&tile, c, o, 0, 1);
            si_k->bias_act_rows(o, L->bias, F, act, 0, POW);
        }
    }
}

static void gp_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    const si_packed_b *B = st;
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w, F = L->rows;
    for (int n = 0; n < batch; n++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                for (int64_t f = 0; f < F; f++) {
                    const float *bf = B->b + (f / B->nr) * B->k * B->nr + f % B->nr; /* column f of W^T */
                    double acc = 0;
                    for (int i = 0; i < L->kh; i++) {
                        int64_t y = oh * L->sh - L->pad_top + i;
                        if (y < 0 || y >= H) continue;
                        for (int j = 0; j < L->kw; j++) {
                            int64_t x = ow * L->sw - L->pad_left + j;
                            if (x < 0 || x >= W) continue;
                            const float *px = in + ((n * H + y) * W + x) * C;
                            const int64_t k0 = ((int64_t)i * L->kw + j) * C;
                            for (int64_t c = 0; c < C; c++) acc += (double)px[c] * bf[(k0 + c) * B->nr];
                        }
                    }
                    out[((n * OH + oh) * OW + ow) * F + f] = (float)acc;
                }
    si_bias_act_ref(L, out, (int64_t)batch * OH * OW);
}

const si_algo si_algo_conv_gemm_packed = {
    .name = "conv_gemm_packed", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .state_only = 1, .applies = gp_applies, .prepare = si_packed_prepare, .ws_floats = gp_ws, .run = gp_run,
    .run_pool = gp_run_pool, .run_ref = gp_run_ref, .bytes = si_packed_bytes, .release = si_packed_release,
};
