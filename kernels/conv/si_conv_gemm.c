/* Dense convolution as im2col + MKL sgemm: chunks of output positions are unrolled into
 * patch rows (threaded, ops/si_im2col.c), multiplied by the filters (W^T), then bias and
 * activation. A 1x1 stride-1 convolution is the activation matrix itself, no im2col.
 * Reference: the direct convolution on the same dense weights. */
#include "si_internal.h"

#include <mkl.h>

static int pointwise(const si_layer *L) { return L->kh == 1 && L->kw == 1 && L->sh == 1 && L->sw == 1; }

static int gemm_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_CONV2D; }

static int64_t gemm_ws(const si_layer *L, const void *st, int batch) {
    (void)st;
    return pointwise(L) ? 0 : si_im2col_chunk_rows(L, batch) * L->cols;
}

static void gemm_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    const int64_t chunk = pointwise(L) ? P : si_im2col_chunk_rows(L, batch); /* as gemm_ws sized it */
    (void)st;
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        int64_t m = P - p0 < chunk ? P - p0 : chunk;
        const float *a = in + p0 * K;
        if (!pointwise(L)) { si_im2col(L, in, p0, m, ws); a = ws; }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (MKL_INT)m, (MKL_INT)F, (MKL_INT)K, 1.0f, a, (MKL_INT)K,
                    L->w, (MKL_INT)K, 0.0f, out + p0 * F, (MKL_INT)F);
    }
    si_bias_act(L, out, P);
}

/* The direct convolution on the dense weights, double accumulation, bias and activation:
 * the reference of every entry that runs the dense form (conv_gemm, conv_winograd). */
void si_f32_conv_ref(const si_layer *L, const float *in, int batch, float *out) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w, F = L->out_c;
    for (int n = 0; n < batch; n++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                for (int64_t f = 0; f < F; f++) {
                    double acc = 0;
                    for (int i = 0; i < L->kh; i++) {
                        int64_t y = oh * L->sh - L->pad_top + i;
                        if (y < 0 || y >= H) continue;
                        for (int j = 0; j < L->kw; j++) {
                            int64_t x = ow * L->sw - L->pad_left + j;
                            if (x < 0 || x >= W) continue;
                            const float *px = in + ((n * H + y) * W + x) * C;
                            const float *wf = L->w + f * L->cols + ((int64_t)i * L->kw + j) * C;
                            for (int64_t c = 0; c < C; c++) acc += (double)px[c] * wf[c];
                        }
                    }
                    out[((n * OH + oh) * OW + ow) * F + f] = (float)acc;
                }
    si_bias_act_ref(L, out, (int64_t)batch * OH * OW);
}

static void gemm_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_f32_conv_ref(L, in, batch, out);
}

const si_algo si_algo_conv_gemm = {
    .name = "conv_gemm", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .applies = gemm_applies, .ws_floats = gemm_ws, .run = gemm_run, .run_ref = gemm_run_ref,
};
