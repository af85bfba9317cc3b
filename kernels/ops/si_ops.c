/* Bias + activation, max pooling, ReLU and softmax: the element-wise and pooling kernels
 * every entry shares. Each body is written once (always inline) and compiled three times,
 * for baseline x86-64, AVX2+FMA and AVX-512 (the compiler vectorises the channel loops for
 * each); si_dispatch.c picks one. The threaded drivers split positions or output rows
 * among si_num_threads() threads once a layer is big enough to pay for a parallel region.
 * Plain references sit beside them. */
#include "si_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include <omp.h>

#define MIN_FLOATS_PER_THREAD (INT64_C(1) << 15)   /* 128 KB: below this one thread is faster */

static int threads_for_floats(int64_t n, int64_t parts) {
    int nt = si_num_threads();
    int64_t by = n / MIN_FLOATS_PER_THREAD;
    if (by < 1) by = 1;
    if (nt > by) nt = (int)by;
    if (nt > parts) nt = (int)(parts < 1 ? 1 : parts);
    return nt;
}

/* ---- bias + activation -------------------------------------------------------------- */

SI_INLINE void bias_act_body(float *restrict out, const float *restrict bias, int64_t n, int act, int64_t p0,
                             int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
        float *restrict o = out + p * n;
        if (bias && act == SI_ACT_RELU)
            for (int64_t j = 0; j < n; j++) { float v = o[j] + bias[j]; o[j] = v > 0.0f ? v : 0.0f; }
        else if (bias)
            for (int64_t j = 0; j < n; j++) o[j] += bias[j];
        else if (act == SI_ACT_RELU)
            for (int64_t j = 0; j < n; j++) o[j] = o[j] > 0.0f ? o[j] : 0.0f;
    }
}
void si_bias_act_rows_portable(float *out, const float *bias, int64_t n, int act, int64_t p0, int64_t p1) {
    bias_act_body(out, bias, n, act, p0, p1);
}
SI_TARGET_AVX2 void si_bias_act_rows_avx2(float *out, const float *bias, int64_t n, int act, int64_t p0, int64_t p1) {
    bias_act_body(out, bias, n, act, p0, p1);
}
SI_TARGET_AVX512 void si_bias_act_rows_avx512(float *out, const float *bias, int64_t n, int act, int64_t p0,
                                              int64_t p1) {
    bias_act_body(out, bias, n, act, p0, p1);
}

void si_bias_act(const si_layer *L, float *out, int64_t positions) {
    const int64_t n = L->rows;
    const int relu = L->act == SI_ACT_RELU;
    if (L->bias || relu) {
        const int nt = threads_for_floats(positions * n, positions);
        void (*fn)(float *, const float *, int64_t, int, int64_t, int64_t) = si_k->bias_act_rows;
        if (nt <= 1) fn(out, L->bias, n, L->act, 0, positions);
        else {
#pragma omp parallel num_threads(nt)
            {
                int t = omp_get_thread_num(), k = omp_get_num_threads();
                fn(out, L->bias, n, L->act, positions * t / k, positions * (t + 1) / k);
            }
        }
    }
    if (L->act == SI_ACT_SOFTMAX) si_softmax_rows(out, positions, n);
}

void si_bias_act_ref(const si_layer *L, float *out, int64_t positions) {
    const int64_t n = L->rows;
    for (int64_t p = 0; p < positions; p++)
        for (int64_t j = 0; j < n; j++) {
            float v = out[p * n + j] + (L->bias ? L->bias[j] : 0.0f);
            out[p * n + j] = L->act == SI_ACT_RELU && v < 0.0f ? 0.0f : v;
        }
    if (L->act == SI_ACT_SOFTMAX) si_softmax_rows(out, positions, n);
}

/* ---- max pooling ---------------------------------------------------------------------
 * Output rows r = (sample, oh). "same" padding counts as -inf: out-of-range taps are
 * skipped, and every window holds at least one in-range tap by TensorFlow's rule. */

SI_INLINE void maxpool_body(const si_layer *L, const float *restrict in, float *restrict out, int64_t r0, int64_t r1) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t n = r / OH, oh = r % OH;
        for (int64_t ow = 0; ow < OW; ow++) {
            float *restrict o = out + ((n * OH + oh) * OW + ow) * C;
            for (int64_t c = 0; c < C; c++) o[c] = -FLT_MAX;
            for (int i = 0; i < L->kh; i++) {
                int64_t y = oh * L->sh - L->pad_top + i;
                if (y < 0 || y >= H) continue;
                for (int j = 0; j < L->kw; j++) {
                    int64_t x = ow * L->sw - L->pad_left + j;
                    if (x < 0 || x >= W) continue;
                    const float *restrict px = in + ((n * H + y) * W + x) * C;
                    for (int64_t c = 0; c < C; c++) o[c] = px[c] > o[c] ? px[c] : o[c];
                }
            }
        }
    }
}
void si_maxpool_rows_portable(const si_layer *L, const float *in, float *out, int64_t r0, int64_t r1) {
    maxpool_body(L, in, out, r0, r1);
}
SI_TARGET_AVX2 void si_maxpool_rows_avx2(const si_layer *L, const float *in, float *out, int64_t r0, int64_t r1) {
    maxpool_body(L, in, out, r0, r1);
}
SI_TARGET_AVX512 void si_maxpool_rows_avx512(const si_layer *L, const float *in, float *out, int64_t r0, int64_t r1) {
    maxpool_body(L, in, out, r0, r1);
}

void si_maxpool_forward(const si_layer *L, const float *in, int batch, float *out) {
    if (si_use_reference) { si_maxpool_ref(L, in, batch, out); return; }
    const int64_t rows = (int64_t)batch * L->out_h;
    const int nt = threads_for_floats((int64_t)batch * L->in_h * L->in_w * L->in_c, rows);
    void (*fn)(const si_layer *, const float *, float *, int64_t, int64_t) = si_k->maxpool_rows;
    if (nt <= 1) { fn(L, in, out, 0, rows); return; }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), k = omp_get_num_threads();
        fn(L, in, out, rows * t / k, rows * (t + 1) / k);
    }
}

void si_maxpool_ref(const si_layer *L, const float *in, int batch, float *out) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    for (int n = 0; n < batch; n++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                for (int64_t c = 0; c < C; c++) {
                    float m = -FLT_MAX;
                    for (int i = 0; i < L->kh; i++)
                        for (int j = 0; j < L->kw; j++) {
                            int64_t y = oh * L->sh - L->pad_top + i, x = ow * L->sw - L->pad_left + j;
                            if (y >= 0 && y < H && x >= 0 && x < W && in[((n * H + y) * W + x) * C + c] > m)
                                m = in[((n * H + y) * W + x) * C + c];
                        }
                    out[((n * OH + oh) * OW + ow) * C + c] = m;
                }
}

/* ---- standalone activations (rare: most are fused into the layer above) --------------- */

void si_relu_inplace(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void si_softmax_rows(float *x, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        float *v = x + r * cols, mx = v[0];
        for (int64_t j = 1; j < cols; j++) mx = v[j] > mx ? v[j] : mx;
        double sum = 0;
        for (int64_t j = 0; j < cols; j++) { v[j] = expf(v[j] - mx); sum += v[j]; }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < cols; j++) v[j] *= inv;
    }
}
