/* Convolution through MKL's inspector-executor sparse BLAS on im2col chunks: a reference
 * for the runtime's own sparse direct convolution (picked only when asked for, with
 * si_sparse_impl SI_SPARSE_MKL). Its reference kernel is the sparse direct one's. */
#include "si_internal.h"

static int mkl_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_CONV2D; }

static si_status_t mkl_prepare(si_layer *L, void **state) { return si_mkl_csr_create(L, (si_mkl_csr **)state); }

static int64_t mkl_ws(const si_layer *L, const void *st, int batch) {
    (void)st;
    return si_im2col_chunk_rows(L, batch) * L->cols;
}

static void mkl_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    si_mkl_spconv(L, st, in, batch, out, ws, mkl_ws(L, st, batch));
    si_bias_act(L, out, (int64_t)batch * L->out_h * L->out_w);
}

static void mkl_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_f32_spconv_ref(L, in, batch, out);
    si_bias_act_ref(L, out, (int64_t)batch * L->out_h * L->out_w);
}

static int64_t mkl_bytes(const si_layer *L, const void *st) { return st ? si_mkl_csr_bytes(L) : 0; }
static void mkl_release(void *st) { si_mkl_csr_destroy(st); }

const si_algo si_algo_conv_mkl = {
    .name = "conv_mkl_sparse", .type = SI_LAYER_CONV2D, .family = SI_EXEC_SPARSE_MKL, .forms = SI_FORM_CSR,
    .reference_only = 1, .applies = mkl_applies, .prepare = mkl_prepare, .ws_floats = mkl_ws, .run = mkl_run,
    .run_ref = mkl_run_ref, .bytes = mkl_bytes, .release = mkl_release,
};
