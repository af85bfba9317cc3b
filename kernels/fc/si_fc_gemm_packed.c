/* Dense fully connected layers through the runtime's own GEMM on weights packed at load
 * (ops/si_sgemm.c): Y = X W^T (batch 1: a streaming matrix-vector product over the same
 * panels), then bias and activation. The run reads only the packed weights, so a layer that
 * picks it at both batch regimes holds one copy. Reference: the direct product on them. */
#include "si_internal.h"

#include <stdlib.h>

static int gp_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_DENSE; }

static si_status_t gp_prepare(si_layer *L, void **state) {
    si_packed_b *b = calloc(1, sizeof *b);
    if (!b) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name);
    si_status_t st = si_pack_b(L->name, L->w, L->rows, L->cols, b);
    if (st) { free(b); return st; }
    *state = b;
    return SI_OK;
}

static void gp_release(void *p) {
    if (p) { si_packed_b_free(p); free(p); }
}

static int64_t gp_bytes(const si_layer *L, const void *st) { (void)L; return st ? si_packed_b_bytes(st) : 0; }
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
    .state_only = 1, .applies = gp_applies, .prepare = gp_prepare, .ws_floats = gp_ws, .run = gp_run,
    .run_ref = gp_run_ref, .bytes = gp_bytes, .release = gp_release,
};
