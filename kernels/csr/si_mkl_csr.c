/* MKL inspector-executor sparse BLAS for CSR layers: a handle built once at load (with mv
 * and mm hints and mkl_sparse_optimize), then mkl_sparse_s_mv / mkl_sparse_s_mm per call.
 *
 * MKL_INT is 32-bit (LP64 interface), so the handle owns int32 copies of the row pointers
 * and columns; the values are shared with the layer's CSR form (MKL does not write them).
 * These are the kernels of the reference entries conv/si_conv_mkl.c and fc/si_fc_mkl.c.
 *
 * Batch n > 1 (si_mkl_csrmm) uses SPARSE_LAYOUT_ROW_MAJOR with explicit transposes
 * (mkl_somatcopy: X^T into scratch, the rows x n product back into Y): on VGG fc6/fc7 at
 * batch 64 it measured 2-4x faster than SPARSE_LAYOUT_COLUMN_MAJOR without transposes
 * (bench/results/kernels_*.txt). The scratch for the transposes comes from the context
 * (si_mkl_csrmm_ws_floats). si_mkl_spconv stays column-major on the im2col chunk.
 */
#include "si_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <mkl.h>

struct si_mkl_csr {
    sparse_matrix_t A;
    MKL_INT *ptr;   /* rows + 1 */
    MKL_INT *col;   /* max(nnz, 1) */
    float *val;     /* a one-float dummy when nnz == 0, else NULL (the layer's values are used) */
    struct matrix_descr descr;
};

#define EXPECTED_CALLS 1000000

void si_mkl_csr_destroy(si_mkl_csr *h) {
    if (!h) return;
    if (h->A) mkl_sparse_destroy(h->A);
    si_free(h->ptr);
    si_free(h->col);
    si_free(h->val);
    free(h);
}

int64_t si_mkl_csr_bytes(const si_layer *L) { return 4 * (L->rows + 1) + 4 * L->nnz; }

static si_status_t mkl_status(const si_layer *L, const char *what, sparse_status_t s) {
    return si_fail(s == SPARSE_STATUS_ALLOC_FAILED ? SI_ERR_NOMEM : SI_ERR_INTERNAL,
                   "layer %s: %s failed (status %d)", L->name, what, (int)s);
}

si_status_t si_mkl_csr_create(const si_layer *L, si_mkl_csr **out) {
    si_init();
    *out = NULL;
    if (!L->csr_ptr)
        return si_fail(SI_ERR_INTERNAL, "layer %s: MKL sparse handle for a layer without CSR weights", L->name);
    if (L->rows > INT_MAX || L->cols > INT_MAX || L->nnz > INT_MAX)
        return si_fail(SI_ERR_UNSUPPORTED, "layer %s: %lld x %lld with %lld non-zeros is too large for MKL's 32-bit indices",
                       L->name, (long long)L->rows, (long long)L->cols, (long long)L->nnz);
    si_mkl_csr *h = calloc(1, sizeof *h);
    if (!h) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the MKL sparse handle", L->name);
    h->ptr = si_alloc(sizeof(MKL_INT) * (size_t)(L->rows + 1));
    h->col = si_alloc(sizeof(MKL_INT) * (size_t)(L->nnz > 0 ? L->nnz : 1));
    if (L->nnz == 0) h->val = si_alloc(sizeof(float));
    if (!h->ptr || !h->col || (L->nnz == 0 && !h->val)) {
        si_mkl_csr_destroy(h);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the MKL sparse handle", L->name);
    }
    for (int64_t r = 0; r <= L->rows; r++) h->ptr[r] = (MKL_INT)L->csr_ptr[r];
    for (int64_t k = 0; k < L->nnz; k++) h->col[k] = (MKL_INT)L->csr_col[k];
    if (L->nnz == 0) { h->col[0] = 0; h->val[0] = 0.0f; }
    float *values = L->nnz > 0 ? L->csr_val : h->val;
    h->descr.type = SPARSE_MATRIX_TYPE_GENERAL;
    h->descr.mode = SPARSE_FILL_MODE_FULL;
    h->descr.diag = SPARSE_DIAG_NON_UNIT;

    sparse_status_t s = mkl_sparse_s_create_csr(&h->A, SPARSE_INDEX_BASE_ZERO, (MKL_INT)L->rows, (MKL_INT)L->cols,
                                                h->ptr, h->ptr + 1, h->col, values);
    if (s != SPARSE_STATUS_SUCCESS) {
        h->A = NULL;
        si_mkl_csr_destroy(h);
        return mkl_status(L, "mkl_sparse_s_create_csr", s);
    }
    const char *what = "mkl_sparse_set_mv_hint";
    s = mkl_sparse_set_mv_hint(h->A, SPARSE_OPERATION_NON_TRANSPOSE, h->descr, EXPECTED_CALLS);
    if (s == SPARSE_STATUS_SUCCESS) {
        what = "mkl_sparse_set_mm_hint";
        s = mkl_sparse_set_mm_hint(h->A, SPARSE_OPERATION_NON_TRANSPOSE, h->descr, SPARSE_LAYOUT_COLUMN_MAJOR, 64,
                                   EXPECTED_CALLS);
    }
    if (s == SPARSE_STATUS_SUCCESS)
        s = mkl_sparse_set_mm_hint(h->A, SPARSE_OPERATION_NON_TRANSPOSE, h->descr, SPARSE_LAYOUT_ROW_MAJOR, 64,
                                   EXPECTED_CALLS);
    if (s == SPARSE_STATUS_SUCCESS) {
        what = "mkl_sparse_optimize";
        s = mkl_sparse_optimize(h->A);
    }
    if (s != SPARSE_STATUS_SUCCESS) {
        si_mkl_csr_destroy(h);
        return mkl_status(L, what, s);
    }
    *out = h;
    return SI_OK;
}

void si_mkl_csrmv(const si_mkl_csr *h, const float *x, float *y) {
    mkl_sparse_s_mv(SPARSE_OPERATION_NON_TRANSPOSE, 1.0f, h->A, h->descr, x, 0.0f, y);
}

int64_t si_mkl_csrmm_ws_floats(const si_layer *L, int n) { return (L->cols + L->rows) * (int64_t)n; }

/* Row-major: X transposed into ws (cols x n), the rows x n product (ws + cols * n)
 * transposed into Y. ws: (cols + rows) * n floats. */
void si_mkl_csrmm(const si_layer *L, const si_mkl_csr *h, const float *X, int n, float *Y, float *ws) {
    if (n <= 0) return;
    if (n == 1) { si_mkl_csrmv(h, X, Y); return; }
    const int64_t rows = L->rows, cols = L->cols;
    float *B = ws, *C = ws + cols * n;
    mkl_somatcopy('R', 'T', (size_t)n, (size_t)cols, 1.0f, X, (size_t)cols, B, (size_t)n);
    mkl_sparse_s_mm(SPARSE_OPERATION_NON_TRANSPOSE, 1.0f, h->A, h->descr, SPARSE_LAYOUT_ROW_MAJOR, B, n, n, 0.0f, C,
                    n);
    mkl_somatcopy('R', 'T', (size_t)rows, (size_t)n, 1.0f, C, (size_t)n, Y, (size_t)rows);
}

void si_mkl_spconv(const si_layer *L, const si_mkl_csr *h, const float *in, int batch, float *out, float *ws,
                   int64_t ws_floats) {
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, K = L->cols, F = L->rows;
    const int pointwise = L->kh == 1 && L->kw == 1 && L->sh == 1 && L->sw == 1 && L->pad_top == 0 && L->pad_left == 0;
    int64_t chunk = pointwise ? P : ws_floats / K;
    if (chunk < 1) chunk = 1;
    if (chunk > INT_MAX) chunk = INT_MAX;
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        int64_t m = P - p0 < chunk ? P - p0 : chunk;
        const float *B = in + p0 * K;
        if (!pointwise) { si_im2col(L, in, p0, m, ws); B = ws; }
        /* column-major K x m patches; column-major F x m product = row-major m x F (NHWC) */
        mkl_sparse_s_mm(SPARSE_OPERATION_NON_TRANSPOSE, 1.0f, h->A, h->descr, SPARSE_LAYOUT_COLUMN_MAJOR, B,
                        (MKL_INT)m, (MKL_INT)K, 0.0f, out + p0 * F, (MKL_INT)F);
    }
}
