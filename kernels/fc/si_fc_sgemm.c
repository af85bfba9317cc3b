/* Dense fully connected layers at batch > 1: MKL's sgemm, Y = X W^T, then bias and
 * activation. Reference: direct double-accumulating loops on the same dense weights. */
#include "si_internal.h"

#include <mkl.h>

static int sgemm_applies(const si_layer *L, int regime) { return L->type == SI_LAYER_DENSE && regime == 1; }
static int64_t sgemm_ws(const si_layer *L, const void *st, int batch) { (void)L; (void)st; (void)batch; return 0; }

static void sgemm_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)st; (void)ws;
    const MKL_INT rows = (MKL_INT)L->rows, cols = (MKL_INT)L->cols;
    if (cols > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, rows, cols, 1.0f, in, cols, L->w, cols, 0.0f,
                    out, rows);
    else
        for (int64_t i = 0; i < (int64_t)batch * rows; i++) out[i] = 0.0f;
    si_bias_act(L, out, batch);
}

static void sgemm_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    for (int n = 0; n < batch; n++)
        for (int64_t r = 0; r < L->rows; r++) {
            double acc = 0;
            for (int64_t k = 0; k < L->cols; k++) acc += (double)in[n * L->cols + k] * L->w[r * L->cols + k];
            out[n * L->rows + r] = (float)acc;
        }
    si_bias_act_ref(L, out, batch);
}

const si_algo si_algo_fc_sgemm = {
    .name = "fc_sgemm", .type = SI_LAYER_DENSE, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .applies = sgemm_applies, .ws_floats = sgemm_ws, .run = sgemm_run, .run_ref = sgemm_run_ref,
};
