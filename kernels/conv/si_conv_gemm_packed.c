/* Dense convolution as im2col + the runtime's own GEMM on filters packed at load
 * (ops/si_sgemm.c), then bias and activation: conv_gemm's algorithm without MKL, whose sgemm
 * runs a generic code path on AMD CPUs. Its run reads only the packed filters, so a layer
 * that picks it keeps no other copy. Reference: the direct convolution on the packed filters. */
#include "si_internal.h"

#include <omp.h>

static int pointwise(const si_layer *L) { return L->kh == 1 && L->kw == 1 && L->sh == 1 && L->sw == 1; }

static int gp_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_CONV2D; }


/* With a fused pool, pooled rows go R at a time: about the im2col chunk's positions split
 * over the threads, so the packed filters stream through the cache as often as unfused
 * (VGG19's block-5 filters are 9.4 MB); each thread holds their patches and conv output. */
static int64_t pool_rows_per_item(const si_layer *L, int batch) {
    int64_t r = si_im2col_chunk_rows(L, batch) / si_max_threads() / ((int64_t)L->pool->kh * L->out_w);
    return r < 1 ? 1 : r;
}
static int64_t pool_tile_floats(const si_layer *L, int batch) {
    return pool_rows_per_item(L, batch) * L->pool->kh * L->out_w * ((pointwise(L) ? 0 : L->cols) + L->rows);
}

/* Pooled rows that do not share evenly over the threads (VGG19's block 5 at batch 1: 7
 * rows, 4 and 3 on two threads, 19% slower than unfused; LeNet-5's 12 and 4 share evenly):
 * the pool runs after the convolution, whose output then goes to the scratch. */
static int few_pool_rows(const si_layer *L, int batch) {
    const int64_t rows = (int64_t)batch * L->pool->out_h, nt = si_max_threads();
    return (rows + nt - 1) / nt * nt * 10 > rows * 11;
}

static int64_t gp_ws(const si_layer *L, const void *st, int batch) {
    (void)st;
    int64_t ws = pointwise(L) ? 0 : si_im2col_chunk_rows(L, batch) * L->cols, wp = 0;
    if (L->pool && few_pool_rows(L, batch)) wp = ws + (int64_t)batch * L->out_h * L->out_w * L->rows;
    else if (L->pool) wp = si_max_threads() * pool_tile_floats(L, batch);
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

/* Convolution, pool, bias and activation in one parallel region, R pooled output rows at a
 * time (each a whole number of the pool's kh conv rows): their patches, one GEMM, the max
 * over each window, then the bias and the activation (which commute with the max) on the
 * pooled values only. One fork and join per layer instead of four (im2col, GEMM, bias,
 * pool), and the conv output never leaves the thread's cache: LeNet-5 at batch 1 is a few
 * microseconds of work per layer. */
static void gp_run_pool(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    const si_layer *P = L->pool;
    if (few_pool_rows(L, batch)) {
        float *conv = ws + (pointwise(L) ? 0 : si_im2col_chunk_rows(L, batch) * L->cols); /* as gp_ws sized it */
        gp_run(L, st, in, batch, conv, ws);
        si_maxpool_forward(P, conv, batch, out);
        return;
    }
    const int64_t OH = L->out_h, OW = L->out_w, K = L->cols, F = L->rows, POH = P->out_h, POW = P->out_w;
    const int64_t R = pool_rows_per_item(L, batch), prow = (int64_t)batch * POH;
    const int64_t tf = pool_tile_floats(L, batch);
    const int act = L->act == SI_ACT_RELU ? SI_ACT_RELU : SI_ACT_LINEAR;
    const int nt = si_threads_for((int64_t)batch * OH * OW * K * F, prow);
    si_layer tile = *P; /* the pool of one pooled row: its kh conv rows as the whole input */
    tile.in_h = P->kh;
    tile.out_h = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        float *col = ws + (int64_t)t * tf;
        float *c = pointwise(L) ? col : col + R * P->kh * OW * K;
        /* each thread an equal share of the rows, R at a time (whole items of R rows left the
         * last thread 2 of a 10-row strip) */
        const int64_t mine0 = prow * t / nth, mine1 = prow * (t + 1) / nth;
        for (int64_t pr0 = mine0; pr0 < mine1; pr0 += R) {
            const int64_t pr1 = pr0 + R < mine1 ? pr0 + R : mine1;
            /* rows of one sample are consecutive conv rows; a sample's rows past POH * kh are skipped */
            for (int64_t pr = pr0; pr < pr1;) {
                const int64_t n = pr / POH, ph = pr % POH, run = pr1 - pr < POH - ph ? pr1 - pr : POH - ph;
                const int64_t p0 = (n * OH + ph * P->kh) * OW, np = run * P->kh * OW;
                const float *a = in + p0 * K;
                if (!pointwise(L)) { si_k->im2col_rows(L, in, p0, np, col); a = col; }
                si_sgemm_packed_rows(a, K, np, st, c, F);
                for (int64_t q = 0; q < run; q++) {
                    float *o = out + (pr + q) * POW * F;
                    si_k->maxpool_rows(&tile, c + q * P->kh * OW * F, o, 0, 1);
                    si_k->bias_act_rows(o, L->bias, F, act, 0, POW);
                }
                pr += run;
            }
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
