/* int8 convolutions (issue 12): uint8 patches (ops/si_ops_u8.c's im2col, padding taps the
 * quantized 0.0) times int8 filters, summed in int32 and requantized on output:
 *  - conv_igemm: the int8 GEMM on filters packed at load (ops/si_igemm.c: vpdpbusd with
 *    AVX-512 VNNI, vpmaddwd with AVX2);
 *  - conv_sparse_i8: the int8 CSR filters times the patches (csr/si_csr_i8.c), 1 byte per
 *    value with the fp32 path's column indices.
 * Chunks of output positions are unrolled at a time, as for fp32 (conv/si_conv_gemm.c).
 * References: the same chunks through the reference kernels. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if SI_X86
#include <immintrin.h>
#endif

#define PATCH_BYTES (INT64_C(1) << 20) /* uint8 patches per chunk: half of a 2 MB L2 */

static int pointwise(const si_layer *L) {
    return L->kh == 1 && L->kw == 1 && L->sh == 1 && L->sw == 1 && L->pad_top == 0 && L->pad_left == 0;
}

static int64_t chunk_rows(const si_layer *L, int batch) {
    const int64_t P = (int64_t)batch * L->out_h * L->out_w;
    int64_t rows = PATCH_BYTES / (L->cols > 0 ? L->cols : 1);
    if (rows < 64) rows = 64;
    return rows > P ? (P > 0 ? P : 1) : rows;
}

static int i8_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_CONV2D && L->q; }

static size_t out_elem(const si_layer *L) { return L->q_out_u8 ? 1 : sizeof(float); }

/* ---- conv_igemm, conv_igemm_amx ---------------------------------------------------------
 * The same convolution on the int8 GEMM of ops/si_igemm.c (VNNI / AVX2) or on AMX tiles
 * (ops/si_igemm_amx.c, where the CPU and the OS have them): one entry each, so the planner
 * times both. */

static si_status_t ig_prepare(si_layer *L, void **state) { return si_i8_packed_prepare(L, 0, state); }
static si_status_t ig_prepare_amx(si_layer *L, void **state) { return si_i8_packed_prepare(L, 1, state); }

static int amx_applies(const si_layer *L, int regime) {
    (void)regime;
    return L->type == SI_LAYER_CONV2D && L->q && si_amx_available();
}

/* Layers whose kernel rows are at most 16 bytes (kw * in_c: an RGB network's first layer,
 * 3 x 3 x 3 = 27 inputs) unroll their patches per thread, FUSE_ROWS rows at a time into a
 * buffer that stays in L1 (6.8 KB at k = 27), and multiply them at once: one parallel region,
 * no pass of the whole patch matrix through L2 and no barrier between the two (block1_conv1:
 * 50,176 rows of 27 bytes). FUSE_ROWS is the GEMM's chunk (MC), a multiple of its row blocks. */
#define FUSE_ROWS 252
#define FUSE_MAX_THREADS 64
#define FUSE_SLACK 64 /* si_im2col_u8_short's spill past a chunk's rows, rounded up to a line */

/* kh <= 16 too (cols <= 256), so a thread's buffer is at most 64 KB and ig_ws's 64 of them 4 MB */
static int fused(const si_layer *L) { return !pointwise(L) && L->kw * L->in_c <= 16 && L->cols <= 16 * 16; }

static int64_t fuse_stride(const si_layer *L) { return (FUSE_ROWS * L->cols + FUSE_SLACK + 63) / 64 * 64; }

static int64_t ig_ws(const si_layer *L, const void *st, int batch) {
    (void)st;
    if (fused(L)) return (FUSE_MAX_THREADS * fuse_stride(L) + 3) / 4 + 16;
    return pointwise(L) ? 0 : (chunk_rows(L, batch) * L->cols + 3) / 4 + 16;
}

static void ig_run_fused(const si_layer *L, const void *st, const uint8_t *x, int batch, void *out, uint8_t *ws,
                         const si_requant *rq) {
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    const uint8_t *x_end = x + (int64_t)batch * L->in_h * L->in_w * L->in_c;
    const int64_t chunks = (P + FUSE_ROWS - 1) / FUSE_ROWS;
    int nt = si_threads_for(P * F * K / 4, chunks);
    if (nt > FUSE_MAX_THREADS) nt = FUSE_MAX_THREADS;
    const size_t esz = out_elem(L);
#pragma omp parallel num_threads(nt)
    {
        uint8_t *a = ws + omp_get_thread_num() * fuse_stride(L);
        /* chunks handed out as the threads come: a core that another process slows down
         * takes fewer (even shares left the other thread waiting for it) */
#pragma omp for schedule(dynamic, 4)
        for (int64_t c = 0; c < chunks; c++) {
            const int64_t p0 = c * FUSE_ROWS, m = P - p0 < FUSE_ROWS ? P - p0 : FUSE_ROWS;
            si_im2col_u8_short(L, x, x_end, p0, m, a, (uint8_t)L->q_in_zero);
            si_i8_gemm_rows(st, a, K, m, rq, (char *)out + (size_t)(p0 * F) * esz, F);
        }
    }
}

static void ig_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    const uint8_t *x = (const uint8_t *)in;
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    const int64_t chunk = pointwise(L) ? P : chunk_rows(L, batch);
    si_requant rq;
    si_layer_requant(L, &rq);
    if (fused(L)) { ig_run_fused(L, st, x, batch, out, (uint8_t *)ws, &rq); return; }
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        const int64_t m = P - p0 < chunk ? P - p0 : chunk;
        const uint8_t *a = x + p0 * K;
        if (!pointwise(L)) {
            si_im2col_u8(L, x, p0, m, (uint8_t *)ws, K, (uint8_t)L->q_in_zero);
            a = (const uint8_t *)ws;
        }
        si_i8_gemm(st, a, K, m, &rq, (char *)out + (size_t)(p0 * F) * out_elem(L), F);
    }
}

/* ---- conv_igemm with its max pool ------------------------------------------------------
 * The pool's windows tile the output (si_plan.c's fusable_pool), and the requantization is
 * monotone (mul > 0, ReLU, rounding), so pooling the requantized values equals requantizing
 * the pooled sums. R pooled rows at a time per thread: their patches, one GEMM on the calling
 * thread, the max over each window; one parallel region per layer (LeNet-5 at batch 1 is
 * microseconds of work per layer, where each fork and join counts). */

#define POOL_TILE(T)                                                                                    \
    static void pool_tile_##T(const T *c, int64_t OW, int64_t F, int kh, int kw, int64_t POW, T *o) {   \
        for (int64_t pw = 0; pw < POW; pw++) {                                                          \
            T *d = o + pw * F;                                                                          \
            const T *s0 = c + pw * kw * F;                                                              \
            for (int64_t f = 0; f < F; f++) d[f] = s0[f];                                               \
            for (int i = 0; i < kh; i++)                                                                \
                for (int j = 0; j < kw; j++) {                                                          \
                    const T *s = c + ((int64_t)i * OW + pw * kw + j) * F;                               \
                    for (int64_t f = 0; f < F; f++) d[f] = s[f] > d[f] ? s[f] : d[f];                   \
                }                                                                                       \
        }                                                                                               \
    }
POOL_TILE(uint8_t)
POOL_TILE(float)

/* pooled rows per item: about a chunk's positions split over the threads */
static int64_t pool_rows(const si_layer *L, int batch) {
    int64_t r = chunk_rows(L, batch) / si_max_threads() / ((int64_t)L->pool->kh * L->out_w);
    return r < 1 ? 1 : r;
}

static int64_t pool_thread_bytes(const si_layer *L, int batch) {
    const int64_t pos = pool_rows(L, batch) * L->pool->kh * L->out_w;
    return (pos * (pointwise(L) ? 0 : L->cols) + 63) / 64 * 64 + pos * L->rows * (int64_t)out_elem(L) + 64;
}

static int64_t ig_ws_pool(const si_layer *L, const void *st, int batch) {
    int64_t w = ig_ws(L, st, batch);
    if (L->pool) {
        int64_t p = (si_max_threads() * pool_thread_bytes(L, batch) + 3) / 4 + 16;
        if (p > w) w = p;
    }
    return w;
}

static void ig_run_pool(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    const si_layer *P = L->pool;
    const uint8_t *x = (const uint8_t *)in;
    const int64_t OH = L->out_h, OW = L->out_w, K = L->cols, F = L->rows, POH = P->out_h, POW = P->out_w;
    const int64_t R = pool_rows(L, batch), prow = (int64_t)batch * POH, tb = pool_thread_bytes(L, batch);
    const size_t e = out_elem(L);
    si_requant rq;
    si_layer_requant(L, &rq);
    const int nt = si_threads_for((int64_t)batch * OH * OW * K * F / 4, prow);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        uint8_t *col = (uint8_t *)ws + (int64_t)t * tb;
        char *c = (char *)col + (pointwise(L) ? 0 : (R * P->kh * OW * K + 63) / 64 * 64);
        const int64_t mine0 = prow * t / nth, mine1 = prow * (t + 1) / nth;
        for (int64_t pr = mine0; pr < mine1;) {
            /* pooled rows of one sample are consecutive conv rows (those past POH * kh unused) */
            const int64_t n = pr / POH, ph = pr % POH;
            int64_t run = mine1 - pr < POH - ph ? mine1 - pr : POH - ph;
            if (run > R) run = R;
            const int64_t p0 = (n * OH + ph * P->kh) * OW, np = run * P->kh * OW;
            const uint8_t *a = x + p0 * K;
            if (!pointwise(L)) {
                si_im2col_u8(L, x, p0, np, col, K, (uint8_t)L->q_in_zero);
                a = col;
            }
            si_i8_gemm_rows(st, a, K, np, &rq, c, F);
            for (int64_t q = 0; q < run; q++) {
                const char *cq = c + (size_t)(q * P->kh * OW * F) * e;
                char *o = (char *)out + (size_t)((pr + q) * POW * F) * e;
                if (rq.out_u8) pool_tile_uint8_t((const uint8_t *)cq, OW, F, P->kh, P->kw, POW, (uint8_t *)o);
                else pool_tile_float((const float *)cq, OW, F, P->kh, P->kw, POW, (float *)o);
            }
            pr += run;
        }
    }
}

/* The int8 convolution by its reference: each output position's uint8 patch (padding taps at
 * the zero point) times the rows of w (rows x cols int8), requantized; also conv_winograd*_i16's. */
void si_conv_i8_ref(const si_layer *L, const int8_t *w, const uint8_t *x, int batch, void *out) {
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    si_requant rq;
    si_layer_requant(L, &rq);
    uint8_t *row = malloc((size_t)(K ? K : 1));
    if (!row) abort(); /* the reference is for tests */
    for (int64_t p = 0; p < P; p++) {
        si_im2col_u8(L, x, p, 1, row, K, (uint8_t)L->q_in_zero);
        si_igemm_ref(row, K, 1, w, F, K, &rq, (char *)out + (size_t)(p * F) * out_elem(L), F);
    }
    free(row);
}

static void ig_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    int8_t *w = si_i8_packed_weights(L, st); /* all the entry keeps is the packed copy */
    si_conv_i8_ref(L, w, (const uint8_t *)in, batch, out);
    free(w);
}

const si_algo si_algo_conv_igemm = {
    .name = "conv_igemm", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE, .int8 = 1,
    .state_only = 1, .pairs = 1,
    .applies = i8_applies, .prepare = ig_prepare, .ws_floats = ig_ws_pool, .run = ig_run, .run_pool = ig_run_pool,
    .run_ref = ig_run_ref, .bytes = si_i8_packed_bytes, .release = si_i8_packed_release,
};

const si_algo si_algo_conv_igemm_amx = {
    .name = "conv_igemm_amx", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE, .int8 = 1,
    .state_only = 1,
    .applies = amx_applies, .prepare = ig_prepare_amx, .ws_floats = ig_ws_pool, .run = ig_run, .run_pool = ig_run_pool,
    .run_ref = ig_run_ref, .bytes = si_i8_packed_bytes, .release = si_i8_packed_release,
};

/* ---- conv_sparse_i8 -------------------------------------------------------------------- */

static si_csr8_view view_of(const si_layer *L) {
    si_csr8_view v = {L->csr_val8, L->csr_col, NULL, L->csr_ptr, L->rows, L->cols};
    return v;
}

static int sp_applies(const si_layer *L, int regime) { (void)regime; return L->type == SI_LAYER_CONV2D && L->q; }

static int64_t sp_ws(const si_layer *L, const void *st, int batch) {
    (void)st;
    const si_csr8_view v = view_of(L);
    const int64_t chunk = chunk_rows(L, batch), patches = pointwise(L) ? 0 : (chunk * L->cols + 63) / 64 * 64;
    return (patches + si_i8_csrmm_ws_bytes(&v, chunk) + 3) / 4 + 16;
}

static void sp_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)st;
    const uint8_t *x = (const uint8_t *)in;
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    const int64_t chunk = chunk_rows(L, batch), patches = pointwise(L) ? 0 : (chunk * K + 63) / 64 * 64;
    const si_csr8_view v = view_of(L);
    si_requant rq;
    si_layer_requant(L, &rq);
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        const int64_t m = P - p0 < chunk ? P - p0 : chunk;
        const uint8_t *a = x + p0 * K;
        if (!pointwise(L)) {
            si_im2col_u8(L, x, p0, m, (uint8_t *)ws, K, (uint8_t)L->q_in_zero);
            a = (const uint8_t *)ws;
        }
        si_i8_csrmm(&v, a, K, m, &rq, (char *)out + (size_t)(p0 * F) * out_elem(L), F, (char *)ws + patches);
    }
}

static void sp_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    const uint8_t *x = (const uint8_t *)in;
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    const si_csr8_view v = view_of(L);
    si_requant rq;
    si_layer_requant(L, &rq);
    uint8_t *row = malloc((size_t)(K ? K : 1));
    if (!row) abort();
    for (int64_t p = 0; p < P; p++) {
        si_im2col_u8(L, x, p, 1, row, K, (uint8_t)L->q_in_zero);
        si_i8_csrmm_ref(&v, row, K, 1, &rq, (char *)out + (size_t)(p * F) * out_elem(L), F);
    }
    free(row);
}

const si_algo si_algo_conv_sparse_i8 = {
    .name = "conv_sparse_i8", .type = SI_LAYER_CONV2D, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .int8 = 1, .applies = sp_applies, .ws_floats = sp_ws, .run = sp_run, .run_ref = sp_run_ref,
};

/* ---- conv_winograd_dq --------------------------------------------------------------------
 * An int8 3x3 convolution computed in float32 by Winograd F(4x4, 3x3) (conv/si_conv_winograd.c)
 * on the dequantized weights and input, then quantized like the int8 output: the same values
 * to within float rounding (a uint8 output may land one step off at a rounding tie), not the
 * int8 entries' exact sums. It is for CPUs whose int8 GEMM has no VNNI (plain AVX2:
 * vpmaddwd does 2x fp32's multiply-adds per instruction, Winograd saves 4x of them): only
 * there does it apply, and the planner takes it only where it beats the exact entries by
 * APPROX_MARGIN (si_plan.c). */

extern const si_algo si_algo_conv_winograd;

typedef struct dq_state {
    float *w, *bias; /* the layer dequantized: w = wscale[r] * q, bias such that y matches */
    void *inner;     /* conv_winograd's state on them */
    int64_t bytes;
} dq_state;

/* The float layer conv_winograd sees: L's shape (a planner's strip too) on the state's weights. */
static si_layer float_view(const si_layer *L, const dq_state *s) {
    si_layer f = *L;
    f.q = 0;
    f.w = s->w;
    f.bias = s->bias;
    f.w8 = NULL;
    f.csr_val = NULL; f.csr_val8 = NULL; f.csr_col = NULL; f.csr_ptr = NULL;
    return f;
}

static int dq_applies(const si_layer *L, int regime) {
    return L->q && !si_igemm_has_vnni() && si_algo_conv_winograd.applies(L, regime);
}

static void dq_release(void *state) {
    dq_state *s = state;
    if (!s) return;
    if (s->inner) si_algo_conv_winograd.release(s->inner);
    si_free(s->w);
    si_free(s->bias);
    free(s);
}

static si_status_t dq_prepare(si_layer *L, void **state) {
    dq_state *s = calloc(1, sizeof *s);
    if (!s) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name);
    s->w = si_alloc((size_t)(L->rows * L->cols) * sizeof(float));
    s->bias = si_alloc((size_t)L->rows * sizeof(float));
    if (!s->w || !s->bias) { dq_release(s); return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name); }
    for (int64_t r = 0; r < L->rows; r++) {
        int64_t sum = 0;
        for (int64_t k = 0; k < L->cols; k++) {
            sum += L->w8[r * L->cols + k];
            s->w[r * L->cols + k] = L->q_wscale[r] * (float)L->w8[r * L->cols + k];
        }
        /* y = mul (acc - z sum) + mul b_q = sum_k x_k w_k + (add + mul z sum) */
        s->bias[r] = L->q_add[r] + L->q_mul[r] * (float)((int64_t)L->q_in_zero * sum);
    }
    si_layer f = float_view(L, s);
    si_status_t st = si_algo_conv_winograd.prepare(&f, &s->inner);
    if (st) { dq_release(s); return st; }
    s->bytes = 4 * (L->rows * L->cols + L->rows) + si_algo_conv_winograd.bytes(&f, s->inner);
    *state = s;
    return SI_OK;
}

static int64_t dq_bytes(const si_layer *L, const void *state) { (void)L; return ((const dq_state *)state)->bytes; }

static int64_t dq_in_floats(const si_layer *L, int batch) { return (int64_t)batch * L->in_h * L->in_w * L->in_c; }
static int64_t dq_out_floats(const si_layer *L, int batch) { return (int64_t)batch * L->out_h * L->out_w * L->rows; }

static int64_t dq_ws(const si_layer *L, const void *st, int batch) {
    si_layer f = float_view(L, st);
    return dq_in_floats(L, batch) + (L->q_out_u8 ? dq_out_floats(L, batch) : 0) + 16 +
           si_algo_conv_winograd.ws_floats(&f, ((const dq_state *)st)->inner, batch);
}

static void dq_go(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws, int pool) {
    const dq_state *s = st;
    si_layer f = float_view(L, s);
    float *x = ws, *y = L->q_out_u8 ? ws + dq_in_floats(L, batch) : out;
    float *inner_ws = ws + dq_in_floats(L, batch) + (L->q_out_u8 ? dq_out_floats(L, batch) : 0);
    si_dequantize_u8((const uint8_t *)in, dq_in_floats(L, batch), L->q_in_scale, L->q_in_zero, x);
    if (pool) si_algo_conv_winograd.run_pool(&f, s->inner, x, batch, y, inner_ws);
    else si_algo_conv_winograd.run(&f, s->inner, x, batch, y, inner_ws);
    if (L->q_out_u8) {
        const int64_t n = pool ? (int64_t)batch * L->pool->out_h * L->pool->out_w * L->rows : dq_out_floats(L, batch);
        si_quantize_u8(y, n, 1.0f / L->q_out_scale, L->q_out_zero, (uint8_t *)out);
    }
}

static void dq_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    dq_go(L, st, in, batch, out, ws, 0);
}

static void dq_run_pool(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    dq_go(L, st, in, batch, out, ws, 1);
}

static void dq_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    si_layer f = float_view(L, st);
    const int64_t ni = dq_in_floats(L, batch), no = dq_out_floats(L, batch);
    float *x = malloc((size_t)(ni + no + 1) * sizeof(float));
    if (!x) abort(); /* the reference is for tests */
    si_dequantize_u8((const uint8_t *)in, ni, L->q_in_scale, L->q_in_zero, x);
    float *y = L->q_out_u8 ? x + ni : out;
    si_f32_conv_ref(&f, x, batch, y);
    if (L->q_out_u8) si_quantize_u8(y, no, 1.0f / L->q_out_scale, L->q_out_zero, (uint8_t *)out);
    free(x);
}

const si_algo si_algo_conv_winograd_dq = {
    .name = "conv_winograd_dq", .type = SI_LAYER_CONV2D, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE, .int8 = 1,
    .approx = 1, .state_only = 1, .applies = dq_applies, .prepare = dq_prepare, .ws_floats = dq_ws, .run = dq_run,
    .run_pool = dq_run_pool, .run_ref = dq_run_ref, .bytes = dq_bytes, .release = dq_release,
};

/* ---- conv_sparse_batch_i8 -----------------------------------------------------------------
 * An int8 sparse convolution at batch > 1 computed exactly on the fp32 samples-innermost
 * kernel (conv/si_conv_sparse_batch.c): the int8 weights and the inputs minus their zero point
 * (|x - z| <= 255) are integers that float32 holds exactly, and where every row's
 * 255 * sum |w| stays below 2^24, every partial sum of the row is an integer below 2^24 too,
 * so each FMA is exact in any order. The float sum is then the int32 sum minus z * sum w, and
 * the requantization is the int8 entries' own: the output is bit-identical to conv_sparse_i8's.
 * Pruned LeNet-5 at batch 64 ran its int8 conv1 (K = 25) at 1.33 ms by the int8 GEMM on uint8
 * patches against fp32's 0.25 ms by this kernel (Intel SPR, 1 thread, AMX). The pool, when
 * fused, takes the max of the sums (the requantization is monotone, mul > 0). */

extern const si_algo si_algo_conv_sparse_batch;

typedef struct bx_state {
    si_i8_floats fl; /* the weights as floats, zero point times each row's sum */
    void *inner;     /* conv_sparse_batch's state on the float view */
} bx_state;

static int64_t abs_sum8(const int8_t *w, int64_t n) {
    int64_t s = 0;
    for (int64_t k = 0; k < n; k++) s += w[k] < 0 ? -w[k] : w[k];
    return s;
}

/* 1 if every row's 255 * sum |w| < 2^24 (from the CSR form, else the dense one; 0 without
 * either: after planning, si_runtime.c lists a timed entry whatever this says). */
int si_i8_exact_in_float(const si_layer *L) {
    if (!(L->csr_val8 && L->csr_ptr) && !L->w8) return 0;
    for (int64_t r = 0; r < L->rows; r++) {
        const int64_t s = L->csr_val8 && L->csr_ptr
                              ? abs_sum8(L->csr_val8 + L->csr_ptr[r], L->csr_ptr[r + 1] - L->csr_ptr[r])
                              : abs_sum8(L->w8 + r * L->cols, L->cols);
        if (255 * s >= (INT64_C(1) << 24)) return 0;
    }
    return 1;
}

void si_i8_floats_release(si_i8_floats *f) {
    si_free(f->val);
    si_free(f->zf);
    f->val = f->zf = NULL;
}

si_status_t si_i8_floats_prepare(const si_layer *L, si_i8_floats *f) {
    f->val = si_alloc(sizeof(float) * (size_t)(L->nnz ? L->nnz : 1));
    f->zf = si_alloc(sizeof(float) * (size_t)(L->rows ? L->rows : 1));
    if (!f->val || !f->zf) {
        si_i8_floats_release(f);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name);
    }
    for (int64_t r = 0; r < L->rows; r++) {
        int64_t sum = 0;
        for (int64_t k = L->csr_ptr[r]; k < L->csr_ptr[r + 1]; k++) {
            f->val[k] = (float)L->csr_val8[k];
            sum += L->csr_val8[k];
        }
        f->zf[r] = (float)(sum * L->q_in_zero); /* |.| <= 255 * sum |w| < 2^24: exact */
    }
    return SI_OK;
}

si_layer si_i8_float_view(const si_layer *L, const si_i8_floats *f) {
    si_layer v = *L;
    v.q = 0;
    v.w = NULL; v.w8 = NULL;
    v.csr_val = f ? f->val : NULL;
    v.csr_val8 = NULL;
    v.bias = NULL;            /* the requantization adds it */
    v.act = SI_ACT_LINEAR;    /* and applies the activation */
    return v;
}

static si_layer bx_view(const si_layer *L, const bx_state *s) { return si_i8_float_view(L, s ? &s->fl : NULL); }

static int bx_applies(const si_layer *L, int regime) {
    return L->type == SI_LAYER_CONV2D && L->q && si_algo_conv_sparse_batch.applies(L, regime) && si_i8_exact_in_float(L);
}

static void bx_release(void *state) {
    bx_state *s = state;
    if (!s) return;
    if (s->inner) si_algo_conv_sparse_batch.release(s->inner);
    si_i8_floats_release(&s->fl);
    free(s);
}

static si_status_t bx_prepare(si_layer *L, void **state) {
    bx_state *s = calloc(1, sizeof *s);
    if (!s) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name);
    si_status_t st0 = si_i8_floats_prepare(L, &s->fl);
    if (st0) { free(s); return st0; }
    si_layer f = bx_view(L, s);
    si_status_t st = si_algo_conv_sparse_batch.prepare(&f, &s->inner);
    if (st) { bx_release(s); return st; }
    *state = s;
    return SI_OK;
}

static int64_t bx_bytes(const si_layer *L, const void *state) {
    const bx_state *s = state;
    si_layer f = bx_view(L, s);
    return s ? 4 * L->nnz + 4 * L->rows + si_algo_conv_sparse_batch.bytes(&f, s->inner) : 0;
}

static int64_t bx_ws(const si_layer *L, const void *st, int batch) {
    const bx_state *s = st;
    si_layer f = bx_view(L, s);
    return si_conv_sparse_batch_q_ws(&f, s ? s->inner : NULL, batch);
}

/* The float kernel on the uint8 input minus its zero point (converted as the padded image is
 * built), each output tile requantized as it leaves (sum + zf, the int8 entries' rule): NHWC,
 * or blocked between two such layers (LeNet-5's conv1 -> conv2), which saves the transposes
 * and a pass over each side's activations. */
static void bx_go(const si_layer *L, const void *st, const float *in, int in_nb, int batch, float *out, int out_nb,
                  int pool, float *ws) {
    const bx_state *s = st;
    si_layer f = bx_view(L, s);
    si_requant rq;
    si_layer_requant(L, &rq);
    const si_batch_q q = {&rq, s->fl.zf, L->q_in_zero};
    si_conv_sparse_batch_q(&f, s->inner, &q, (const uint8_t *)in, in_nb, batch, out, out_nb, pool, ws);
}

static void bx_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    bx_go(L, st, in, 0, batch, out, 0, 0, ws);
}

static void bx_run_pool(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    bx_go(L, st, in, 0, batch, out, 0, 1, ws);
}

static void bx_run_blocked(const si_layer *L, const void *st, const float *in, int in_nb, int batch, float *out,
                           int out_nb, int pool, float *ws) {
    bx_go(L, st, in, in_nb, batch, out, out_nb, pool, ws);
}

static int bx_block_of(const si_layer *L, int batch) { return si_conv_sparse_batch_nb(L, batch); }

const si_algo si_algo_conv_sparse_batch_i8 = {
    .name = "conv_sparse_batch_i8", .type = SI_LAYER_CONV2D, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .int8 = 1, .applies = bx_applies, .prepare = bx_prepare, .ws_floats = bx_ws, .run = bx_run,
    .run_pool = bx_run_pool, .run_blocked = bx_run_blocked, .block_of = bx_block_of, .run_ref = sp_run_ref, .bytes = bx_bytes, .release = bx_release,
};
