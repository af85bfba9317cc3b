/* int8 fully connected layers (issue 12): uint8 input, int8 weights, int32 sums,
 * requantized on output (a softmax, which the requantization does not do, after it):
 *  - fc_igemm: the int8 GEMM on weights packed at load (ops/si_igemm.c); at batch 1 its
 *    matrix-vector path, which streams 1 byte per weight instead of 4;
 *  - fc_csrmv_i8 (batch 1) and fc_csrmm_i8 (larger): the int8 CSR kernels (csr/si_csr_i8.c),
 *    1 byte per value plus the column index (uint16 up to 65,536 inputs);
 *  - fc_csrmv_i8_avx2 and fc_csrmv_i8_nogather (batch 1): the same with the AVX2 gather loop
 *    under AVX-512, and with the AVX2 loop without gathers; the planner times them against
 *    fc_csrmv_i8, because gathers' speed differs by CPU more than anything else here;
 *  - fc_csrmm_f32_i8 (batch > 1): the same sums exactly on the fp32 csrmm (where every
 *    row's 255 * sum |w| < 2^24), whose broadcast FMAs beat the int32 multiplies of
 *    fc_csrmm_i8 on small layers (pruned LeNet-5's fc1 at batch 64).
 * References: the reference kernels on the same forms. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>

static size_t out_elem(const si_layer *L) { return L->q_out_u8 ? 1 : sizeof(float); }

static void finish(const si_layer *L, float *out, int batch) {
    if (L->act == SI_ACT_SOFTMAX) si_softmax_rows(out, batch, L->rows); /* float output (the loader's rule) */
}

/* ---- fc_igemm, fc_igemm_amx (batch > 1: AMX tiles of 16 rows do nothing for one) ---------- */

static int ig_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_DENSE && L->q; }
static int amx_applies(const si_layer *L, int regime) {
    return L->type == SI_LAYER_DENSE && L->q && regime == 1 && si_amx_available();
}

static si_status_t ig_prepare(si_layer *L, void **state) { return si_i8_packed_prepare(L, 0, state); }
static si_status_t ig_prepare_amx(si_layer *L, void **state) { return si_i8_packed_prepare(L, 1, state); }

static int64_t no_ws(const si_layer *L, const void *st, int batch) { (void)L; (void)st; (void)batch; return 0; }

static void ig_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)ws;
    si_requant rq;
    si_layer_requant(L, &rq);
    si_i8_gemm(st, (const uint8_t *)in, L->cols, batch, &rq, out, L->rows);
    finish(L, out, batch);
}

static void ig_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    int8_t *w = si_i8_packed_weights(L, st); /* all the entry keeps is the packed copy */
    si_requant rq;
    si_layer_requant(L, &rq);
    si_igemm_ref((const uint8_t *)in, L->cols, batch, w, L->rows, L->cols, &rq, out, L->rows);
    free(w);
    finish(L, out, batch);
}

const si_algo si_algo_fc_igemm = {
    .name = "fc_igemm", .type = SI_LAYER_DENSE, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE, .int8 = 1,
    .state_only = 1, .pairs = 1,
    .applies = ig_applies, .prepare = ig_prepare, .ws_floats = no_ws, .run = ig_run, .run_ref = ig_run_ref,
    .bytes = si_i8_packed_bytes, .release = si_i8_packed_release,
};

const si_algo si_algo_fc_igemm_amx = {
    .name = "fc_igemm_amx", .type = SI_LAYER_DENSE, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE, .int8 = 1,
    .state_only = 1,
    .applies = amx_applies, .prepare = ig_prepare_amx, .ws_floats = no_ws, .run = ig_run, .run_ref = ig_run_ref,
    .bytes = si_i8_packed_bytes, .release = si_i8_packed_release,
};

/* ---- fc_csrmv_i8 / fc_csrmm_i8 --------------------------------------------------------- */

/* The state: uint16 column indices when the inputs fit (2 bytes per non-zero instead of 4). */
typedef struct csr_state {
    uint16_t *col16;
} csr_state;

static si_csr8_view view_of(const si_layer *L, const void *st) {
    const csr_state *s = st;
    si_csr8_view v = {L->csr_val8, L->csr_col, s ? s->col16 : NULL, L->csr_ptr, L->rows, L->cols};
    return v;
}

static si_status_t csr_prepare(si_layer *L, void **state) {
    if (L->cols > 65536) return SI_OK;
    csr_state *s = calloc(1, sizeof *s);
    if (s) s->col16 = si_alloc((size_t)(L->nnz ? L->nnz : 1) * sizeof(uint16_t));
    if (!s || !s->col16) {
        free(s);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for uint16 columns", L->name);
    }
    for (int64_t k = 0; k < L->nnz; k++) s->col16[k] = (uint16_t)L->csr_col[k];
    *state = s;
    return SI_OK;
}

static void csr_release(void *state) {
    csr_state *s = state;
    if (!s) return;
    si_free(s->col16);
    free(s);
}

static int64_t csr_bytes(const si_layer *L, const void *st) { return st ? 2 * L->nnz : 0; }

static int mv_applies(const si_layer *L, int regime) { return L->type == SI_LAYER_DENSE && L->q && regime == 0; }
static int mm_applies(const si_layer *L, int regime) { return L->type == SI_LAYER_DENSE && L->q && regime == 1; }

/* fc_csrmv_i8_avx2 only where the active ISA is above AVX2 (below, it is fc_csrmv_i8 itself) */
static int mv_avx2_applies(const si_layer *L, int regime) {
    return mv_applies(L, regime) && si_i8_csrmv_has(SI_I8_MV_AVX2);
}
static int mv_nogather_applies(const si_layer *L, int regime) {
    return mv_applies(L, regime) && si_i8_csrmv_has(SI_I8_MV_NOGATHER);
}

static void mv_run_loop(si_i8_mv_loop loop, const si_layer *L, const void *st, const float *in, int batch, float *out) {
    const si_csr8_view v = view_of(L, st);
    si_requant rq;
    si_layer_requant(L, &rq);
    for (int i = 0; i < batch; i++)
        si_i8_csrmv_loop(loop, &v, (const uint8_t *)in + (size_t)i * L->cols, &rq,
                         (char *)out + (size_t)i * L->rows * out_elem(L));
    finish(L, out, batch);
}

static void mv_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)ws;
    mv_run_loop(SI_I8_MV_ACTIVE, L, st, in, batch, out);
}
static void mv_run_avx2(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)ws;
    mv_run_loop(SI_I8_MV_AVX2, L, st, in, batch, out);
}
static void mv_run_nogather(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)ws;
    mv_run_loop(SI_I8_MV_NOGATHER, L, st, in, batch, out);
}

static int64_t mm_ws(const si_layer *L, const void *st, int batch) {
    const si_csr8_view v = view_of(L, st);
    return (si_i8_csrmm_ws_bytes(&v, batch) + 3) / 4 + 16;
}

static void mm_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    const si_csr8_view v = view_of(L, st);
    si_requant rq;
    si_layer_requant(L, &rq);
    si_i8_csrmm(&v, (const uint8_t *)in, L->cols, batch, &rq, out, L->rows, ws);
    finish(L, out, batch);
}

/* A blocked input (conv_sparse_batch_i8's output): the panels gather its blocks instead of
 * transposing NHWC rows; the output stays NHWC. */
static void mm_run_blocked(const si_layer *L, const void *st, const float *in, int in_nb, int batch, float *out,
                           int out_nb, int pool, float *ws) {
    (void)out_nb; (void)pool; /* block_of 0: never asked for a blocked output */
    if (!in_nb) { mm_run(L, st, in, batch, out, ws); return; }
    const si_csr8_view v = view_of(L, st);
    si_requant rq;
    si_layer_requant(L, &rq);
    si_i8_csrmm_blocked(&v, (const uint8_t *)in, in_nb, batch, &rq, out, L->rows, ws);
    finish(L, out, batch);
}

static int mm_block_of(const si_layer *L, int batch) { (void)L; (void)batch; return 0; /* any, as an input */ }

static void csr_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    const si_csr8_view v = view_of(L, st);
    si_requant rq;
    si_layer_requant(L, &rq);
    si_i8_csrmm_ref(&v, (const uint8_t *)in, L->cols, batch, &rq, out, L->rows);
    finish(L, out, batch);
}

const si_algo si_algo_fc_csrmv_i8 = {
    .name = "fc_csrmv_i8", .type = SI_LAYER_DENSE, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR, .int8 = 1,
    .applies = mv_applies, .prepare = csr_prepare, .ws_floats = no_ws, .run = mv_run, .run_ref = csr_run_ref,
    .bytes = csr_bytes, .release = csr_release,
};

/* The AVX2 gather loop under AVX-512: on Sapphire Rapids, fc6 at 4% with the weights in
 * cache, it beat the AVX-512 one with 2 threads (int8 / fp32 CSR 1.48x against 1.35x) and
 * tied it with one (0.74 against 0.76 ms); which wins differs by CPU and load, so the
 * planner times both. */
const si_algo si_algo_fc_csrmv_i8_avx2 = {
    .name = "fc_csrmv_i8_avx2", .type = SI_LAYER_DENSE, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR, .int8 = 1,
    .applies = mv_avx2_applies, .prepare = csr_prepare, .ws_floats = no_ws, .run = mv_run_avx2,
    .run_ref = csr_run_ref, .bytes = csr_bytes, .release = csr_release,
};

/* Without gathers (x's bytes by scalar loads): slower than the gather loops on Sapphire
 * Rapids (fc6 at 4%, one thread: 0.89 against 0.74 ms warm, 1.24 against 1.14 cold), but
 * where vpgatherdd is microcoded (AMD Zen 3: 39 uops, one per 8 cycles) it should be the
 * faster one. */
const si_algo si_algo_fc_csrmv_i8_nogather = {
    .name = "fc_csrmv_i8_nogather", .type = SI_LAYER_DENSE, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .int8 = 1,
    .applies = mv_nogather_applies, .prepare = csr_prepare, .ws_floats = no_ws, .run = mv_run_nogather,
    .run_ref = csr_run_ref, .bytes = csr_bytes, .release = csr_release,
};

const si_algo si_algo_fc_csrmm_i8 = {
    .name = "fc_csrmm_i8", .type = SI_LAYER_DENSE, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR, .int8 = 1,
    .applies = mm_applies, .prepare = csr_prepare, .ws_floats = mm_ws, .run = mm_run, .run_blocked = mm_run_blocked,
    .block_of = mm_block_of, .run_ref = csr_run_ref, .bytes = csr_bytes, .release = csr_release,
};

/* ---- fc_csrmm_f32_i8 ---------------------------------------------------------------------
 * The int8 weights as floats times the inputs minus their zero point (integers float32 holds
 * exactly; every partial sum of a row stays an integer below 2^24, si_i8_exact_in_float), so
 * the float sum plus zf[r] = zero * sum w is the int32 sum and the requantization is the
 * int8 entries' own, bit for bit. A blocked input (conv_sparse_batch_i8's) is the fp32
 * csrmm's panel once converted. */
static int fx_applies(const si_layer *L, int regime) {
    return mm_applies(L, regime) && si_i8_exact_in_float(L);
}

static void fx_release(void *state) {
    if (!state) return;
    si_i8_floats_release(state);
    free(state);
}

static si_status_t fx_prepare(si_layer *L, void **state) {
    si_i8_floats *s = calloc(1, sizeof *s);
    if (!s) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name);
    si_status_t st = si_i8_floats_prepare(L, s);
    if (st) { free(s); return st; }
    *state = s;
    return SI_OK;
}

static int64_t fx_bytes(const si_layer *L, const void *st) { return st ? 4 * L->nnz + 4 * L->rows : 0; }

static int64_t fx_padded(int batch) { return (int64_t)(batch + SI_PANEL - 1) / SI_PANEL * SI_PANEL; }

static int64_t fx_ws(const si_layer *L, const void *st, int batch) {
    si_layer f = si_i8_float_view(L, st);
    return (fx_padded(batch) * L->cols + 15) / 16 * 16 + ((int64_t)batch * L->rows + 15) / 16 * 16 +
           si_f32_csrmm_ws_floats(&f, batch) + 16;
}

static void fx_go(const si_layer *L, const void *st, const float *in, int in_nb, int batch, float *out, float *ws) {
    const si_i8_floats *s = st;
    const si_layer f = si_i8_float_view(L, s);
    float *x = ws, *y = x + (fx_padded(batch) * L->cols + 15) / 16 * 16, *w2 = y + ((int64_t)batch * L->rows + 15) / 16 * 16;
    const int64_t nx = (int64_t)(in_nb ? (batch + in_nb - 1) / in_nb * in_nb : batch) * L->cols;
    si_dequantize_u8((const uint8_t *)in, nx, 1.0f, L->q_in_zero, x); /* x - z, exact */
    if (in_nb) si_f32_csrmm_blocked(&f, x, in_nb, batch, y, w2);
    else si_f32_csrmm(&f, x, batch, y, w2);
    si_requant rq;
    si_layer_requant(L, &rq);
    const si_batch_q q = {&rq, s->zf, L->q_in_zero};
    const size_t e = out_elem(L);
    const int nt = si_threads_for((int64_t)batch * L->rows * 8, batch);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int t = omp_get_thread_num(), k = omp_get_num_threads();
        const int64_t a = (int64_t)batch * t / k, b = (int64_t)batch * (t + 1) / k;
        si_batch_q_rows(&q, y + a * L->rows, b - a, L->rows, (char *)out + (size_t)(a * L->rows) * e);
    }
    finish(L, out, batch);
}

static void fx_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    fx_go(L, st, in, 0, batch, out, ws);
}

static void fx_run_blocked(const si_layer *L, const void *st, const float *in, int in_nb, int batch, float *out,
                           int out_nb, int pool, float *ws) {
    (void)out_nb; (void)pool; /* block_of 0: never asked for a blocked output */
    fx_go(L, st, in, in_nb, batch, out, ws);
}

const si_algo si_algo_fc_csrmm_f32_i8 = {
    .name = "fc_csrmm_f32_i8", .type = SI_LAYER_DENSE, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .int8 = 1, .applies = fx_applies, .prepare = fx_prepare, .ws_floats = fx_ws, .run = fx_run,
    .run_blocked = fx_run_blocked, .block_of = mm_block_of, .run_ref = csr_run_ref, .bytes = fx_bytes,
    .release = fx_release,
};
