/* Dense convolution as im2col + the runtime's own GEMM on filters packed at load
 * (ops/si_sgemm.c), then bias and activation: conv_gemm's algorithm without MKL, whose sgemm
 * runs a generic code path on AMD CPUs. Its run reads only the packed filters, so a layer
 * that picks it keeps no other copy. Reference: the direct product on the packed filters. */
#include "si_internal.h"

#include <stdlib.h>

static int pointwise(const si_layer *L) { return L->kh == 1 && L->kw == 1 && L->sh == 1 && L->sw == 1; }

static int gp_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_CONV2D; }


static int64_t gp_ws(const si_layer *L, const void *st, int batch) {
    (void)st;
    return pointwise(L) ? 0 : si_im2col_chunk_rows(L, batch) * L->cols;
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

static void gp_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    float *row = malloc(sizeof(float) * (size_t)(K ? K : 1));  /* the reference may allocate */
    if (!row) return;
    for (int64_t p = 0; p < P; p++) {
        si_im2col_rows_ref(L, in, p, 1, row);
        si_sgemm_packed_ref(row, K, 1, st, out + p * F, F);
    }
    free(row);
    si_bias_act_ref(L, out, P);
}

const si_algo si_algo_conv_gemm_packed = {
    .name = "conv_gemm_packed", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .state_only = 1, .applies = gp_applies, .prepare = si_packed_prepare, .ws_floats = gp_ws, .run = gp_run,
    .run_ref = gp_run_ref, .bytes = si_packed_bytes, .release = si_packed_release,
};
