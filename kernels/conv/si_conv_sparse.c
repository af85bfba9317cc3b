/* Sparse direct convolution: CSR filters against transposed patch tiles of output
 * positions (csr/si_csr_kernels.c: si_f32_spconv), then bias and activation. Two entries,
 * tiles of 64 and of 32 positions: a 64-wide tile reuses each broadcast non-zero over more
 * positions, but for a large K it outgrows L2 (VGG19 block 4, K = 4608: 1.2 MB; 32-wide
 * tiles ran it 12.9 -> 9.9 ms on Zen 5, while block 3, K = 2304, was faster at 64), so the
 * planner times both. Reference: the direct convolution over each filter's non-zeros. */
#include "si_internal.h"

static int sp_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_CONV2D; }
static int64_t sp_ws(const si_layer *L, const void *st, int batch) { (void)st; return si_f32_spconv_ws_floats(L, batch); }

static void sp_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)st;
    si_f32_spconv(L, in, batch, out, ws, 64);
    si_bias_act(L, out, (int64_t)batch * L->out_h * L->out_w);
}

static void sp_run32(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)st;
    si_f32_spconv(L, in, batch, out, ws, 32);
    si_bias_act(L, out, (int64_t)batch * L->out_h * L->out_w);
}

static void sp_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_f32_spconv_ref(L, in, batch, out);
    si_bias_act_ref(L, out, (int64_t)batch * L->out_h * L->out_w);
}

const si_algo si_algo_conv_sparse = {
    .name = "conv_sparse_direct", .type = SI_LAYER_CONV2D, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .applies = sp_applies, .ws_floats = sp_ws, .run = sp_run, .run_ref = sp_run_ref,
};

const si_algo si_algo_conv_sparse32 = {
    .name = "conv_sparse_direct32", .type = SI_LAYER_CONV2D, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .applies = sp_applies, .ws_floats = sp_ws, .run = sp_run32, .run_ref = sp_run_ref,
};
