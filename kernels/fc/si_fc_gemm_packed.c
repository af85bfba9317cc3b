/* Dense fully connected layers through the runtime's own GEMM on weights packed at load
 * (ops/si_sgemm.c): Y = X W^T (batch 1: a streaming matrix-vector product over the same
 * panels), then bias and activation. The run reads only the packed weights, so a layer that
 * picks it at both batch regimes holds one copy. Reference: the direct product on them. */
#include "si_internal.h"

static int gp_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_DENSE; }

static int64_t gp_ws(const si_layer *L, const void *st, int batch) { (void)L; (void)st; (void)batch; return 0; }

static void gp_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)ws;
    si_sgemm_packed(in, L->cols, batch, st, out, L->rows);  /* batch 1: the matrix-vector path */
    si_bias_act(L, out, batch);
}

static void gp_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    si_sgemm_packed_ref(in, L->cols, batch, st, out, L->rows);
    si_bias_act_ref(L, out, batch);
}

const si_algo si_algo_fc_gemm_packed = {
    .name = "fc_gemm_packed", .type = SI_LAYER_DENSE, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE,
    .state_only = 1, .applies = gp_applies, .prepare = si_packed_prepare, .ws_floats = gp_ws, .run = gp_run,
    .run_ref = gp_run_ref, .bytes = si_packed_bytes, .release = si_packed_release,
};
