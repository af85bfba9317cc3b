/* fc_skip_i8 and fc_skip: int8 and fp32 fully connected layers at batch 1 that read only the
 * weights of their non-zero inputs (fc_skip_i8 exactly; fc_skip in another order of the
 * float additions than fc_gemv, within the usual rounding).
 *
 * Why: at batch 1 a dense layer streams its weights from memory once per call (VGG19's fc1:
 * 103 MB of int8, about 10% of the int8 network's time under the AVX2 cap), and the input of
 * a layer after a ReLU is largely 0 (VGG19's block5_pool on the random weights of
 * ../shared/peers: 41%; on trained networks more). A 0 input (uint8 0, whatever the zero
 * point) adds nothing to the sums, so its weights need not be read. They can be skipped only
 * where they lie apart from the rest: the weights are kept transposed, one row of all the
 * outputs' weights per input (W^T, 4 KB for 4,096 outputs), so a skipped input is a whole
 * stretch of memory that no hardware prefetcher fetches.
 *
 * The run: the non-zero inputs' indices (a vector scan), then each thread takes a share of
 * the pairs of them over all the outputs (whole rows of W^T, which the prefetchers stream;
 * splitting the outputs among the threads instead, each reading half of every row, gave no
 * gain) and keeps the outputs' int32 sums in its scratch (16 KB for 4,096, in L1); per pair
 * (k1, k2) it interleaves the two rows' bytes, widens them to int16 pairs and adds
 * x[k1] w[k1][n] + x[k2] w[k2][n] by vpmaddwd (exact: |x| <= 255, |w| <= 128), prefetching
 * the rows of the pair PF_PAIRS ahead; then the shares' sums are added (int32, exact) and
 * requantized, each thread a range of the outputs. The sums are those of every other int8
 * entry, so the outputs are bit for bit theirs. VGG19 int8's fc1 (41% of its inputs 0), Intel
 * SPR under the AVX2 cap, 2 threads: 3.6-4.4 -> 2.8-3.1 ms.
 *
 * W^T is a copy of its own: a layer that runs fc_igemm at batch > 1 keeps both (fc1: 103 MB
 * more). Reference: si_igemm_ref on the weights transposed back. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if SI_X86
#include <immintrin.h>
#endif

#define PF_PAIRS 4 /* pairs of rows prefetched ahead */

/* W^T, [cols][ldw]: input k's weights to every output, zero past rows; int8 for an int8
 * layer, else float. ldw: rows rounded up to 32 bytes' worth (a step of either kernel). */
typedef struct sk_state {
    void *wt;
} sk_state;

static size_t elem_of(const si_layer *L) { return L->q ? 1 : sizeof(float); }
static int64_t ldw_of(const si_layer *L) {
    const int64_t a = L->q ? 32 : 16;
    return (L->rows + a - 1) / a * a;
}

static int sk_applies_q(const si_layer *L, int regime, int q) {
#if SI_X86
    return L->type == SI_LAYER_DENSE && !L->q == !q && regime == 0 && si_isa_active() >= SI_ISA_AVX2;
#else
    (void)L; (void)regime; (void)q;
    return 0;
#endif
}
static int sk_applies(const si_layer *L, int regime) { return sk_applies_q(L, regime, 1); }
static int skf_applies(const si_layer *L, int regime) { return sk_applies_q(L, regime, 0); }

static void sk_release(void *p) {
    sk_state *s = p;
    if (!s) return;
    si_free(s->wt);
    free(s);
}

static si_status_t sk_prepare(si_layer *L, void **out) {
    sk_state *s = calloc(1, sizeof *s);
    if (!s) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name);
    const int64_t ldw = ldw_of(L), bytes = L->cols * ldw * (int64_t)elem_of(L);
    s->wt = si_alloc((size_t)bytes);
    if (!s->wt) {
        free(s);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the transposed weights (%lld MB)", L->name,
                       (long long)(bytes >> 20));
    }
    memset(s->wt, 0, (size_t)bytes);
    /* the transpose in 64 x 64 blocks (fc1's 103 MB of int8: one pass, cache lines reused) */
    int8_t *w8 = s->wt;
    float *wf = s->wt;
    for (int64_t n0 = 0; n0 < L->rows; n0 += 64)
        for (int64_t k0 = 0; k0 < L->cols; k0 += 64)
            for (int64_t k = k0; k < k0 + 64 && k < L->cols; k++)
                for (int64_t n = n0; n < n0 + 64 && n < L->rows; n++) {
                    if (L->q) w8[k * ldw + n] = L->w8[n * L->cols + k];
                    else wf[k * ldw + n] = L->w[n * L->cols + k];
                }
    *out = s;
    return SI_OK;
}

static int64_t sk_bytes(const si_layer *L, const void *st) { return st ? L->cols * ldw_of(L) * (int64_t)elem_of(L) : 0; }

/* the indices of the non-zero inputs: cols int32 (and slack); each thread's sums: ldw 32-bit
 * values, 64-byte aligned */
static int64_t sk_ws(const si_layer *L, const void *st, int batch) {
    (void)st; (void)batch;
    return L->cols + 4 + 16 + si_max_threads() * (ldw_of(L) + 16);
}

#if SI_X86
/* idx[0, n) = the k < cols with x[k] != 0, ascending; returns n */
SI_TARGET_AVX2 static int64_t nonzeros(const uint8_t *x, int64_t cols, int32_t *idx) {
    int64_t n = 0, k = 0;
    for (; k + 32 <= cols; k += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(x + k));
        uint32_t m = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_setzero_si256()));
        while (m) {
            idx[n++] = (int32_t)(k + __builtin_ctz(m));
            m &= m - 1;
        }
    }
    for (; k < cols; k++)
        if (x[k]) idx[n++] = (int32_t)k;
    return n;
}

/* acc[0, ldw) = sum over the non-zero inputs idx[j0, j1) of x[k] wt[k][n], the pairs (idx[j],
 * idx[j + 1]) from j0 (even) on; j1 - j0 odd: the last row once, times 0 */
SI_TARGET_AVX2 static void sk_span(const int8_t *wt, int64_t ldw, const uint8_t *x, const int32_t *idx, int64_t j0,
                                   int64_t nz, int32_t *acc) {
    memset(acc, 0, (size_t)ldw * sizeof(int32_t));
    for (int64_t j = j0; j < nz; j += 2) {
        const int64_t k1 = idx[j], k2 = j + 1 < nz ? idx[j + 1] : k1;
        const int32_t x2 = j + 1 < nz ? x[k2] : 0; /* an odd count: the last row once, times 0 */
        const __m256i xp = _mm256_set1_epi32((int32_t)x[k1] | x2 << 16);
        const int8_t *a = wt + k1 * ldw, *b = wt + k2 * ldw;
        const int64_t jp = j + 2 * PF_PAIRS;
        const int8_t *pa = jp < nz ? wt + (int64_t)idx[jp] * ldw : a;
        const int8_t *pb = jp + 1 < nz ? wt + (int64_t)idx[jp + 1] * ldw : b;
        for (int64_t n = 0; n < ldw; n += 32) {
            if (!(n & 32)) { /* a 64-byte line of each row every other step */
                _mm_prefetch((const char *)(pa + n), _MM_HINT_T0);
                _mm_prefetch((const char *)(pb + n), _MM_HINT_T0);
            }
            const __m256i va = _mm256_load_si256((const __m256i *)(a + n));
            const __m256i vb = _mm256_load_si256((const __m256i *)(b + n));
            /* bytes (a_i, b_i): lo holds outputs 0-7 | 16-23, hi 8-15 | 24-31 */
            const __m256i lo = _mm256_unpacklo_epi8(va, vb), hi = _mm256_unpackhi_epi8(va, vb);
            int32_t *c = acc + n;
            __m256i s0 = _mm256_load_si256((const __m256i *)c), s1 = _mm256_load_si256((const __m256i *)(c + 8));
            __m256i s2 = _mm256_load_si256((const __m256i *)(c + 16)), s3 = _mm256_load_si256((const __m256i *)(c + 24));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(lo)), xp));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(hi)), xp));
            s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(lo, 1)), xp));
            s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(hi, 1)), xp));
            _mm256_store_si256((__m256i *)c, s0);
            _mm256_store_si256((__m256i *)(c + 8), s1);
            _mm256_store_si256((__m256i *)(c + 16), s2);
            _mm256_store_si256((__m256i *)(c + 24), s3);
        }
    }
}
#endif

static void sk_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
#if SI_X86
    const int8_t *wt = ((const sk_state *)st)->wt;
    const int64_t ldw = ldw_of(L);
    si_requant rq;
    si_layer_requant(L, &rq);
    int32_t *idx = (int32_t *)ws;
    int32_t *acc = (int32_t *)(((uintptr_t)(idx + L->cols + 4) + 63) & ~(uintptr_t)63);
    const size_t e = rq.out_u8 ? 1 : sizeof(float);
    for (int bi = 0; bi < batch; bi++) {
        const uint8_t *x = (const uint8_t *)in + (int64_t)bi * L->cols;
        char *y = (char *)out + (size_t)(bi * L->rows) * e;
        const int64_t nz = nonzeros(x, L->cols, idx);
        const int nt = si_threads_for(nz * ldw, (nz + 1) / 2 > 0 ? (nz + 1) / 2 : 1);
        /* each thread a share of the pairs of non-zero inputs over all the outputs (whole rows
         * of W^T, which the prefetchers stream), then the shares' sums added, the outputs split */
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            const int t = omp_get_thread_num(), n_t = omp_get_num_threads();
            const int64_t pairs = (nz + 1) / 2;
            const int64_t j0 = pairs * t / n_t * 2, j1 = pairs * (t + 1) / n_t * 2;
            sk_span(wt, ldw, x, idx, j0, j1 < nz ? j1 : nz, acc + t * (ldw + 16));
#pragma omp barrier
            const int64_t spans = ldw / 32, n0 = spans * t / n_t * 32, n1 = spans * (t + 1) / n_t * 32;
            for (int64_t n = n0; n < n1 && n < L->rows; n++) {
                int32_t sum = 0;
                for (int u = 0; u < n_t; u++) sum += acc[u * (ldw + 16) + n]; /* int32: exact */
                const float v = si_requant_f(&rq, n, sum);
                if (rq.out_u8) ((uint8_t *)y)[n] = si_requant_u8(&rq, v);
                else ((float *)y)[n] = v;
            }
        }
    }
    if (L->act == SI_ACT_SOFTMAX) si_softmax_rows(out, batch, L->rows); /* float output (the loader's rule) */
#else
    (void)L; (void)st; (void)in; (void)batch; (void)out; (void)ws; /* never applies */
#endif
}

static void sk_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    const int8_t *wt = ((const sk_state *)st)->wt;
    const int64_t ldw = ldw_of(L);
    int8_t *w = malloc((size_t)(L->rows * L->cols));
    if (!w) return; /* the references run in tests only, on small layers */
    for (int64_t k = 0; k < L->cols; k++)
        for (int64_t n = 0; n < L->rows; n++) w[n * L->cols + k] = wt[k * ldw + n];
    si_requant rq;
    si_layer_requant(L, &rq);
    si_igemm_ref((const uint8_t *)in, L->cols, batch, w, L->rows, L->cols, &rq, out, L->rows);
    free(w);
    if (L->act == SI_ACT_SOFTMAX) si_softmax_rows(out, batch, L->rows);
}

const si_algo si_algo_fc_skip_i8 = {
    .name = "fc_skip_i8", .type = SI_LAYER_DENSE, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE, .int8 = 1,
    .state_only = 1,
    .applies = sk_applies, .prepare = sk_prepare, .ws_floats = sk_ws, .run = sk_run, .run_ref = sk_run_ref,
    .bytes = sk_bytes, .release = sk_release,
};

/* ---- fc_skip: the same for fp32 layers ----------------------------------------------------
 * W^T as float rows (the same state, prepare and scratch as above); each thread a share of the non-zero inputs,
 * four at a time into its float sums (4 FMAs per 8 outputs between a load and a store of the
 * sums), the shares then added in thread order (the same order every run), the bias and the
 * activation. VGG19's fp32 fc1 is 411 MB at batch 1. */

#if SI_X86
SI_TARGET_AVX2 static int64_t nonzeros_f(const float *x, int64_t cols, int32_t *idx) {
    int64_t n = 0, k = 0;
    for (; k + 8 <= cols; k += 8) {
        unsigned m = ~(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + k), _mm256_setzero_ps(), _CMP_EQ_OQ)) & 0xffu;
        while (m) {
            idx[n++] = (int32_t)(k + __builtin_ctz(m));
            m &= m - 1;
        }
    }
    for (; k < cols; k++)
        if (x[k] != 0.0f) idx[n++] = (int32_t)k; /* NaN is not 0: it reaches the sums */
    return n;
}

/* acc[0, ldw) = sum over idx[j0, j1) of x[k] wt[k][n] */
SI_TARGET_AVX2 static void skf_span(const float *wt, int64_t ldw, const float *x, const int32_t *idx, int64_t j0,
                                    int64_t j1, float *acc) {
    memset(acc, 0, (size_t)ldw * sizeof(float));
    for (int64_t j = j0; j < j1; j += 4) {
        const float *w[4];
        __m256 xv[4];
        for (int u = 0; u < 4; u++) {
            const int64_t k = j + u < j1 ? idx[j + u] : idx[j];
            w[u] = wt + k * ldw;
            xv[u] = _mm256_set1_ps(j + u < j1 ? x[k] : 0.0f);
        }
        const int64_t jp = j + 4 * PF_PAIRS;
        const float *pf[4];
        for (int u = 0; u < 4; u++) pf[u] = jp + u < j1 ? wt + (int64_t)idx[jp + u] * ldw : w[u];
        for (int64_t n = 0; n < ldw; n += 16) {
            for (int u = 0; u < 4; u++) _mm_prefetch((const char *)(pf[u] + n), _MM_HINT_T0);
            __m256 a0 = _mm256_load_ps(acc + n), a1 = _mm256_load_ps(acc + n + 8);
            for (int u = 0; u < 4; u++) {
                a0 = _mm256_fmadd_ps(xv[u], _mm256_load_ps(w[u] + n), a0);
                a1 = _mm256_fmadd_ps(xv[u], _mm256_load_ps(w[u] + n + 8), a1);
            }
            _mm256_store_ps(acc + n, a0);
            _mm256_store_ps(acc + n + 8, a1);
        }
    }
}
#endif

static void skf_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
#if SI_X86
    const float *wt = ((const sk_state *)st)->wt;
    const int64_t ldw = ldw_of(L);
    int32_t *idx = (int32_t *)ws;
    float *acc = (float *)(((uintptr_t)(idx + L->cols + 4) + 63) & ~(uintptr_t)63);
    for (int bi = 0; bi < batch; bi++) {
        const float *x = in + (int64_t)bi * L->cols;
        float *y = out + (int64_t)bi * L->rows;
        const int64_t nz = nonzeros_f(x, L->cols, idx);
        const int64_t quads = (nz + 3) / 4;
        const int nt = si_threads_for(nz * ldw, quads > 0 ? quads : 1);
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            const int t = omp_get_thread_num(), n_t = omp_get_num_threads();
            const int64_t j0 = quads * t / n_t * 4, j1 = quads * (t + 1) / n_t * 4;
            skf_span(wt, ldw, x, idx, j0, j1 < nz ? j1 : nz, acc + t * (ldw + 16));
#pragma omp barrier
            const int64_t spans = ldw / 16, n0 = spans * t / n_t * 16, n1 = spans * (t + 1) / n_t * 16;
            for (int64_t n = n0; n < n1 && n < L->rows; n++) {
                float sum = acc[n];
                for (int u = 1; u < n_t; u++) sum += acc[u * (ldw + 16) + n];
                y[n] = sum;
            }
        }
    }
    si_bias_act(L, out, batch);
#else
    (void)L; (void)st; (void)in; (void)batch; (void)out; (void)ws; /* never applies */
#endif
}

static void skf_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    const float *wt = ((const sk_state *)st)->wt;
    const int64_t ldw = ldw_of(L);
    for (int bi = 0; bi < batch; bi++)
        for (int64_t n = 0; n < L->rows; n++) {
            double sum = 0;
            for (int64_t k = 0; k < L->cols; k++) sum += (double)wt[k * ldw + n] * in[(int64_t)bi * L->cols + k];
            out[(int64_t)bi * L->rows + n] = (float)sum;
        }
    si_bias_act_ref(L, out, batch);
}

const si_algo si_algo_fc_skip = {
    .name = "fc_skip", .type = SI_LAYER_DENSE, .family = SI_EXEC_DENSE, .forms = SI_FORM_DENSE, .state_only = 1,
    .applies = skf_applies, .prepare = sk_prepare, .ws_floats = sk_ws, .run = skf_run, .run_ref = skf_run_ref,
    .bytes = sk_bytes, .release = sk_release,
};
