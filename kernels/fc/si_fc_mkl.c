/* Fully connected layers through MKL's inspector-executor sparse BLAS (mv at batch 1, mm
 * through transposes above): a reference for the runtime's own CSR kernels, picked only
 * when asked for (si_sparse_impl SI_SPARSE_MKL). */
#include "si_internal.h"

static int mkl_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_DENSE; }
static si_status_t mkl_prepare(si_layer *L, void **state) { return si_mkl_csr_create(L, (si_mkl_csr **)state); }
static int64_t mkl_ws(const si_layer *L, const void *st, int batch) {
    (void)st;
    return batch > 1 ? si_mkl_csrmm_ws_floats(L, batch) : 0;
}

static void mkl_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    si_mkl_csrmm(L, st, in, batch, out, ws);
    si_bias_act(L, out, batch);
}

static void mkl_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_f32_csrmm_ref(L, in, batch, out);
    si_bias_act_ref(L, out, batch);
}

static int64_t mkl_bytes(const si_layer *L, const void *st) { return st ? si_mkl_csr_bytes(L) : 0; }
static void mkl_release(void *st) { si_mkl_csr_destroy(st); }

const si_algo si_algo_fc_mkl = {
    .name = "fc_mkl_sparse", .type = SI_LAYER_DENSE, .family = SI_EXEC_SPARSE_MKL, .forms = SI_FORM_CSR,
    .reference_only = 1, .applies = mkl_applies, .prepare = mkl_prepare, .ws_floats = mkl_ws, .run = mkl_run,
    .run_ref = mkl_run_ref, .bytes = mkl_bytes, .release = mkl_release,
};
