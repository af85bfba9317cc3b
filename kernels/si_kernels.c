/* Layer kernels. Each op has a plain reference (direct loops, double accumulation) kept
 * beside the fast path; si_set_reference_kernels(1) forces the reference so tests can hold
 * the fast path against it.
 *
 * Activations are NHWC, batch-major, so a whole batch of convolution outputs is one
 * (batch*oh*ow) x filters row-major matrix and TensorFlow's flatten is the identity.
 */
#include "si_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include <mkl.h>

int si_use_reference = 0;

static void bias_act(const si_layer *L, float *out, int64_t positions) {
    const int64_t n = L->rows;
    if (L->bias)
        for (int64_t p = 0; p < positions; p++) {
            float *o = out + p * n;
            for (int64_t j = 0; j < n; j++) o[j] += L->bias[j];
        }
    if (L->act == SI_ACT_RELU) si_relu_inplace(out, positions * n);
    else if (L->act == SI_ACT_SOFTMAX) si_softmax_rows(out, positions, n);
}

/* Column of the k-th stored non-zero (the int32 indices may have been dropped for uint16). */
static inline int64_t csr_col_at(const si_layer *L, int64_t k) {
    return L->csr_col16 ? (int64_t)L->csr_col16[k] : (int64_t)L->csr_col[k];
}

/* Weight (row r, column k) in whichever form the layer holds, for the reference kernels. */
static float weight_at(const si_layer *L, int64_t r, int64_t k) {
    if (L->w) return L->w[r * L->cols + k];
    int64_t lo = L->csr_ptr[r], hi = L->csr_ptr[r + 1];
    while (lo < hi) { /* columns are sorted within a row */
        int64_t mid = lo + (hi - lo) / 2;
        if (csr_col_at(L, mid) < k) lo = mid + 1; else hi = mid;
    }
    return lo < L->csr_ptr[r + 1] && csr_col_at(L, lo) == k ? L->csr_val[lo] : 0.0f;
}

/* ---- conv2d ------------------------------------------------------------------------- */

static void f32_conv2d_ref(const si_layer *L, const float *in, int batch, float *out) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w, F = L->out_c;
    for (int n = 0; n < batch; n++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                for (int64_t f = 0; f < F; f++) {
                    double acc = 0;
                    for (int i = 0; i < L->kh; i++) {
                        int64_t y = oh * L->sh - L->pad_top + i;
                        if (y < 0 || y >= H) continue;
                        for (int j = 0; j < L->kw; j++) {
                            int64_t x = ow * L->sw - L->pad_left + j;
                            if (x < 0 || x >= W) continue;
                            const float *px = in + ((n * H + y) * W + x) * C;
                            for (int64_t c = 0; c < C; c++)
                                acc += (double)px[c] * weight_at(L, f, (i * L->kw + j) * C + c);
                        }
                    }
                    out[((n * OH + oh) * OW + ow) * F + f] = (float)acc;
                }
    bias_act(L, out, (int64_t)batch * OH * OW);
}

/* Rows [p0, p0 + m) of the batch's im2col matrix: one row per output position, columns in
 * (kernel row, kernel column, channel) order to match the weight matrix. */
void si_im2col_rows(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    const int64_t K = L->cols;
    for (int64_t r = 0; r < m; r++) {
        int64_t p = p0 + r, n = p / (OH * OW), q = p % (OH * OW), oh = q / OW, ow = q % OW;
        float *dst = col + r * K;
        for (int i = 0; i < L->kh; i++) {
            int64_t y = oh * L->sh - L->pad_top + i;
            float *d = dst + (int64_t)i * L->kw * C;
            if (y < 0 || y >= H) { memset(d, 0, sizeof(float) * (size_t)(L->kw * C)); continue; }
            int64_t x0 = ow * L->sw - L->pad_left;
            if (x0 >= 0 && x0 + L->kw <= W) { /* the common interior case: one contiguous run */
                memcpy(d, in + ((n * H + y) * W + x0) * C, sizeof(float) * (size_t)(L->kw * C));
                continue;
            }
            for (int j = 0; j < L->kw; j++) {
                int64_t x = x0 + j;
                if (x < 0 || x >= W) memset(d + j * C, 0, sizeof(float) * (size_t)C);
                else memcpy(d + j * C, in + ((n * H + y) * W + x) * C, sizeof(float) * (size_t)C);
            }
        }
    }
}

void si_conv2d_forward(const si_layer *L, const float *in, int batch, float *out, float *ws, int64_t ws_floats) {
    if (si_use_reference) { f32_conv2d_ref(L, in, batch, out); return; }
    si_exec ex = batch == 1 ? L->exec_b1 : L->exec_bn;
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    if (ex == SI_EXEC_SPARSE_OWN) {
        si_f32_spconv(L, in, batch, out, ws);
    } else if (ex == SI_EXEC_SPARSE_MKL) {
        si_mkl_spconv(L, in, batch, out, ws, ws_floats);
    } else {
        const int pointwise = L->kh == 1 && L->kw == 1 && L->sh == 1 && L->sw == 1;
        int64_t chunk = ws_floats / K;
        if (chunk < 1) chunk = 1;
        for (int64_t p0 = 0; p0 < P; p0 += chunk) {
            int64_t m = P - p0 < chunk ? P - p0 : chunk;
            const float *a = in + p0 * K;
            if (!pointwise) { si_im2col_rows(L, in, p0, m, ws); a = ws; }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (MKL_INT)m, (MKL_INT)F, (MKL_INT)K, 1.0f, a,
                        (MKL_INT)K, L->w, (MKL_INT)K, 0.0f, out + p0 * F, (MKL_INT)F);
        }
    }
    bias_act(L, out, P);
}

/* ---- dense -------------------------------------------------------------------------- */

static void f32_dense_ref(const si_layer *L, const float *in, int batch, float *out) {
    for (int n = 0; n < batch; n++)
        for (int64_t r = 0; r < L->rows; r++) {
            double acc = 0;
            for (int64_t k = 0; k < L->cols; k++) acc += (double)in[n * L->cols + k] * weight_at(L, r, k);
            out[n * L->rows + r] = (float)acc;
        }
    bias_act(L, out, batch);
}

void si_dense_forward(const si_layer *L, const float *in, int batch, float *out, float *ws) {
    if (si_use_reference) { f32_dense_ref(L, in, batch, out); return; }
    si_exec ex = batch == 1 ? L->exec_b1 : L->exec_bn;
    const MKL_INT rows = (MKL_INT)L->rows, cols = (MKL_INT)L->cols;
    if (ex == SI_EXEC_SPARSE_OWN) {
        if (batch == 1) si_f32_csrmv(L, in, out);
        else si_f32_csrmm(L, in, batch, out, ws);
    } else if (ex == SI_EXEC_SPARSE_MKL) {
        if (batch == 1) si_mkl_csrmv(L, in, out);
        else si_mkl_csrmm(L, in, batch, out, ws);
    } else if (batch == 1) {
        si_f32_gemv(L, in, out); /* MKL's sgemv streams at one core's bandwidth here */
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, rows, cols, 1.0f, in, cols, L->w, cols, 0.0f,
                    out, rows);
    }
    bias_act(L, out, batch);
}

/* ---- pooling and activations -------------------------------------------------------- */

void si_maxpool_forward(const si_layer *L, const float *in, int batch, float *out) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w;
    for (int n = 0; n < batch; n++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                float *o = out + ((n * OH + oh) * OW + ow) * C;
                for (int64_t c = 0; c < C; c++) o[c] = -FLT_MAX;
                /* "same" padding counts as -inf: out-of-range taps are skipped, and every
                 * window holds at least one in-range tap by TensorFlow's padding rule. */
                for (int i = 0; i < L->kh; i++) {
                    int64_t y = oh * L->sh - L->pad_top + i;
                    if (y < 0 || y >= H) continue;
                    for (int j = 0; j < L->kw; j++) {
                        int64_t x = ow * L->sw - L->pad_left + j;
                        if (x < 0 || x >= W) continue;
                        const float *px = in + ((n * H + y) * W + x) * C;
                        for (int64_t c = 0; c < C; c++) o[c] = px[c] > o[c] ? px[c] : o[c];
                    }
                }
            }
}

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
