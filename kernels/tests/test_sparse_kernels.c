/* Checks the sparse kernels (si_sparse.c: own CSR kernels, AVX-512 and portable paths, and
 * the reference; si_mkl_sparse.c: MKL inspector-executor) against a double-precision dense
 * reference on hand-built si_layer structs with random CSR matrices: odd sizes, empty rows,
 * an all-zero matrix, cols > 65536 (no uint16 columns), batches that are not multiples of
 * the 64-wide panels, convolutions with 'same'/'valid' padding, strides, 1x1 and
 * rectangular kernels.
 *
 * Tolerance: |got - ref| <= 1e-4 * sum_k |a_k x_k| + 1e-30 per element (relative to the
 * magnitude of the dot product's terms, which is what float accumulation errors scale with).
 *
 * Closing line: "N passed, M failed"; exit status 1 on any failure.
 */
#include "si_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int si_sparse_portable_only;

static int passed, failed;
static uint64_t rng = 88172645463325252ull;

static uint64_t next_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static double uniform(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
static float randf(void) { return (float)(uniform() * 2.0 - 1.0); }

static void *xalloc(size_t bytes) {
    void *p = si_alloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

/* Random CSR: each entry non-zero with probability density; every empty_every-th row empty. */
static void make_csr(si_layer *L, const char *name, int64_t rows, int64_t cols, double density, int empty_every) {
    memset(L, 0, sizeof *L);
    snprintf(L->name, sizeof L->name, "%s", name);
    L->storage = SI_STORAGE_CSR;
    L->rows = rows;
    L->cols = cols;
    L->csr_ptr = xalloc(sizeof(int64_t) * (size_t)(rows + 1));
    int64_t cap = 16, nnz = 0;
    int32_t *col = malloc(sizeof(int32_t) * (size_t)cap);
    float *val = malloc(sizeof(float) * (size_t)cap);
    L->csr_ptr[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (!(empty_every && r % empty_every == empty_every - 1))
            for (int64_t c = 0; c < cols; c++) {
                if (density < 1.0 && uniform() >= density) continue;
                if (nnz == cap) {
                    cap *= 2;
                    col = realloc(col, sizeof(int32_t) * (size_t)cap);
                    val = realloc(val, sizeof(float) * (size_t)cap);
                }
                col[nnz] = (int32_t)c;
                val[nnz] = randf();
                nnz++;
            }
        L->csr_ptr[r + 1] = nnz;
    }
    L->nnz = nnz;
    L->csr_val = xalloc(sizeof(float) * (size_t)nnz);
    L->csr_col = xalloc(sizeof(int32_t) * (size_t)nnz);
    if (nnz) {
        memcpy(L->csr_val, val, sizeof(float) * (size_t)nnz);
        memcpy(L->csr_col, col, sizeof(int32_t) * (size_t)nnz);
    }
    if (cols <= 65536) {
        L->csr_col16 = xalloc(sizeof(uint16_t) * (size_t)nnz);
        for (int64_t k = 0; k < nnz; k++) L->csr_col16[k] = (uint16_t)col[k];
    }
    free(col);
    free(val);
}

static void free_layer(si_layer *L) {
    si_mkl_csr_free(L);
    si_free(L->csr_ptr);
    si_free(L->csr_val);
    si_free(L->csr_col);
    si_free(L->csr_col16);
}

static void make_conv(si_layer *L, const char *name, int64_t H, int64_t W, int64_t C, int64_t F, int kh, int kw, int sh,
                      int sw, int same, double density, int empty_every) {
    make_csr(L, name, F, (int64_t)kh * kw * C, density, empty_every);
    L->type = SI_LAYER_CONV2D;
    L->in_h = H; L->in_w = W; L->in_c = C;
    L->kh = kh; L->kw = kw; L->sh = sh; L->sw = sw;
    if (same) {
        L->out_h = (H + sh - 1) / sh;
        L->out_w = (W + sw - 1) / sw;
        int64_t th = (L->out_h - 1) * sh + kh - H, tw = (L->out_w - 1) * sw + kw - W;
        L->pad_top = th > 0 ? th / 2 : 0;
        L->pad_left = tw > 0 ? tw / 2 : 0;
    } else {
        L->out_h = (H - kh) / sh + 1;
        L->out_w = (W - kw) / sw + 1;
    }
    L->out_c = F;
}

/* Dense double references: value and magnitude per output. */
static void ref_fc(const si_layer *L, const float *X, int n, double *ref, double *mag) {
    for (int s = 0; s < n; s++)
        for (int64_t r = 0; r < L->rows; r++) {
            double acc = 0, m = 0;
            for (int64_t k = L->csr_ptr[r]; k < L->csr_ptr[r + 1]; k++) {
                double t = (double)L->csr_val[k] * X[(int64_t)s * L->cols + L->csr_col[k]];
                acc += t;
                m += fabs(t);
            }
            ref[(int64_t)s * L->rows + r] = acc;
            mag[(int64_t)s * L->rows + r] = m;
        }
}

static void ref_conv(const si_layer *L, const float *in, int batch, double *ref, double *mag) {
    const int64_t H = L->in_h, W = L->in_w, C = L->in_c, OH = L->out_h, OW = L->out_w, F = L->rows, K = L->cols;
    double *wd = calloc((size_t)(F * K), sizeof(double)); /* densified filters */
    for (int64_t f = 0; f < F; f++)
        for (int64_t k = L->csr_ptr[f]; k < L->csr_ptr[f + 1]; k++) wd[f * K + L->csr_col[k]] = L->csr_val[k];
    for (int n = 0; n < batch; n++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                for (int64_t f = 0; f < F; f++) {
                    double acc = 0, m = 0;
                    for (int i = 0; i < L->kh; i++)
                        for (int j = 0; j < L->kw; j++) {
                            int64_t y = oh * L->sh - L->pad_top + i, x = ow * L->sw - L->pad_left + j;
                            if (y < 0 || y >= H || x < 0 || x >= W) continue;
                            for (int64_t c = 0; c < C; c++) {
                                double t = wd[f * K + (i * L->kw + j) * C + c] * in[((n * H + y) * W + x) * C + c];
                                acc += t;
                                m += fabs(t);
                            }
                        }
                    int64_t o = ((n * OH + oh) * OW + ow) * F + f;
                    ref[o] = acc;
                    mag[o] = m;
                }
    free(wd);
}

static void check(const char *layer, const char *kernel, const float *got, const double *ref, const double *mag,
                  int64_t count, int64_t row_len) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < count; i++) {
        double err = fabs((double)got[i] - ref[i]);
        if (!(err <= 1e-4 * mag[i] + 1e-30)) {
            if (first < 0) first = i;
            bad++;
        }
    }
    if (bad) {
        failed++;
        printf("FAIL %s %s: %lld of %lld elements wrong, first [%lld][%lld] = %.9g, expected %.9g\n", layer, kernel,
               (long long)bad, (long long)count, (long long)(first / row_len), (long long)(first % row_len),
               (double)got[first], ref[first]);
    } else {
        passed++;
    }
}

static float *rand_floats(int64_t n) {
    float *p = xalloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) p[i] = randf();
    return p;
}

static void fill_nan(float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
}

static const char *path_name(int portable) { return portable ? "portable" : "avx512"; }

static void test_fc(const char *name, int64_t rows, int64_t cols, double density, int empty_every, const int *ns,
                    int n_ns) {
    si_layer L;
    make_csr(&L, name, rows, cols, density, empty_every);
    si_status_t st = si_mkl_csr_prepare(&L);
    if (st != SI_OK) {
        failed++;
        printf("FAIL %s si_mkl_csr_prepare: %s\n", name, si_last_error());
    }
    int nmax = 1;
    for (int i = 0; i < n_ns; i++) nmax = ns[i] > nmax ? ns[i] : nmax;
    float *X = rand_floats(cols * nmax), *Y = xalloc(sizeof(float) * (size_t)(rows * nmax));
    double *ref = xalloc(sizeof(double) * (size_t)(rows * nmax)), *mag = xalloc(sizeof(double) * (size_t)(rows * nmax));
    char kname[96];
    /* batch 1 */
    ref_fc(&L, X, 1, ref, mag);
    for (int portable = 0; portable < 2; portable++) {
        si_sparse_portable_only = portable;
        fill_nan(Y, rows);
        si_f32_csrmv(&L, X, Y);
        snprintf(kname, sizeof kname, "si_f32_csrmv (%s)", path_name(portable));
        check(name, kname, Y, ref, mag, rows, rows);
    }
    si_sparse_portable_only = 0;
    si_use_reference = 1;
    fill_nan(Y, rows);
    si_f32_csrmv(&L, X, Y);
    si_use_reference = 0;
    check(name, "si_f32_csrmv (reference)", Y, ref, mag, rows, rows);
    if (L.mkl) {
        fill_nan(Y, rows);
        si_mkl_csrmv(&L, X, Y);
        check(name, "si_mkl_csrmv", Y, ref, mag, rows, rows);
    }
    /* batches */
    for (int i = 0; i < n_ns; i++) {
        int n = ns[i];
        ref_fc(&L, X, n, ref, mag);
        int64_t wsf = si_f32_csrmm_ws_floats(&L, n);
        float *ws = xalloc(sizeof(float) * (size_t)wsf);
        for (int portable = 0; portable < 3; portable++) {
            si_sparse_portable_only = portable == 1;
            si_use_reference = portable == 2;
            fill_nan(Y, rows * n);
            si_f32_csrmm(&L, X, n, Y, ws);
            snprintf(kname, sizeof kname, "si_f32_csrmm n=%d (%s)", n, portable == 2 ? "reference" : path_name(portable));
            check(name, kname, Y, ref, mag, rows * n, rows);
        }
        si_sparse_portable_only = 0;
        si_use_reference = 0;
        si_free(ws);
        if (L.mkl) {
            fill_nan(Y, rows * n);
            float *mws = si_alloc(sizeof(float) * (size_t)si_mkl_csrmm_ws_floats(&L, n));
            si_mkl_csrmm(&L, X, n, Y, mws);
            si_free(mws);
            snprintf(kname, sizeof kname, "si_mkl_csrmm n=%d", n);
            check(name, kname, Y, ref, mag, rows * n, rows);
        }
    }
    si_free(X);
    si_free(Y);
    si_free(ref);
    si_free(mag);
    free_layer(&L);
}

static void test_conv(const char *name, int64_t H, int64_t W, int64_t C, int64_t F, int kh, int kw, int sh, int sw,
                      int same, double density, int empty_every, int batch, int64_t mkl_ws_rows) {
    si_layer L;
    make_conv(&L, name, H, W, C, F, kh, kw, sh, sw, same, density, empty_every);
    si_status_t st = si_mkl_csr_prepare(&L);
    if (st != SI_OK) {
        failed++;
        printf("FAIL %s si_mkl_csr_prepare: %s\n", name, si_last_error());
    }
    const int64_t P = (int64_t)batch * L.out_h * L.out_w, outn = P * F;
    float *in = rand_floats((int64_t)batch * H * W * C), *out = xalloc(sizeof(float) * (size_t)outn);
    double *ref = xalloc(sizeof(double) * (size_t)outn), *mag = xalloc(sizeof(double) * (size_t)outn);
    ref_conv(&L, in, batch, ref, mag);
    int64_t wsf = si_f32_spconv_ws_floats(&L, batch);
    float *ws = xalloc(sizeof(float) * (size_t)wsf);
    char kname[96];
    for (int mode = 0; mode < 3; mode++) {
        si_sparse_portable_only = mode == 1;
        si_use_reference = mode == 2;
        fill_nan(out, outn);
        si_f32_spconv(&L, in, batch, out, ws);
        snprintf(kname, sizeof kname, "si_f32_spconv batch=%d (%s)", batch, mode == 2 ? "reference" : path_name(mode));
        check(name, kname, out, ref, mag, outn, F);
    }
    si_sparse_portable_only = 0;
    si_use_reference = 0;
    si_free(ws);
    if (L.mkl) {
        int64_t mws = mkl_ws_rows * L.cols;
        float *w2 = xalloc(sizeof(float) * (size_t)mws);
        fill_nan(out, outn);
        si_mkl_spconv(&L, in, batch, out, w2, mws);
        snprintf(kname, sizeof kname, "si_mkl_spconv batch=%d (chunks of %lld rows)", batch, (long long)mkl_ws_rows);
        check(name, kname, out, ref, mag, outn, F);
        si_free(w2);
    }
    si_free(in);
    si_free(out);
    si_free(ref);
    si_free(mag);
    free_layer(&L);
}

int main(int argc, char **argv) {
    (void)argv;
    const int quick = argc > 1; /* the sanitizer run: fewer, smaller cases */
    si_init();
    const int ns_all[] = {2, 3, 16, 17, 64, 65, 130};
    const int ns_few[] = {2, 17, 65};
    const int *ns = quick ? ns_few : ns_all;
    int n_ns = quick ? 3 : 7;

    test_fc("fc_1x1", 1, 1, 1.0, 0, ns, n_ns);
    test_fc("fc_odd_7x13", 7, 13, 0.4, 0, ns, n_ns);
    test_fc("fc_empty_rows_64x100", 64, 100, 0.5, 3, ns, n_ns);
    test_fc("fc_all_zero_50x40", 50, 40, 0.0, 0, ns, n_ns);
    test_fc("fc_dense_33x1000", 33, 1000, 1.0, 0, ns, n_ns);
    test_fc("fc_lenet_500x800", 500, 800, 0.1, 0, ns, n_ns);
    test_fc("fc_wide_120x70001_nocol16", 120, 70001, quick ? 0.002 : 0.01, 5, ns, n_ns);
    test_fc("fc_col16_limit_37x65536", 37, 65536, 0.01, 0, ns, n_ns);
    if (!quick) test_fc("fc_1000x4096_4pct", 1000, 4096, 0.04, 7, ns, n_ns);

    test_conv("conv_lenet2_12x12x20_50_5x5_valid", 12, 12, 20, 50, 5, 5, 1, 1, 0, 0.1, 0, 1, 37);
    test_conv("conv_lenet2_batch3", 12, 12, 20, 50, 5, 5, 1, 1, 0, 0.1, 4, 3, 1000);
    test_conv("conv_same_9x9x5_7_3x3", 9, 9, 5, 7, 3, 3, 1, 1, 1, 0.5, 0, 2, 50);
    test_conv("conv_same_s2_7x8x3_4_3x3", 7, 8, 3, 4, 3, 3, 2, 2, 1, 0.7, 0, 3, 10);
    test_conv("conv_same_3x5_kernel_s1x2_10x11x6_9", 10, 11, 6, 9, 3, 5, 1, 2, 1, 0.3, 2, 2, 33);
    test_conv("conv_pointwise_6x6x19_23", 6, 6, 19, 23, 1, 1, 1, 1, 0, 0.4, 0, 2, 5);
    test_conv("conv_all_zero_8x8x4_6", 8, 8, 4, 6, 3, 3, 1, 1, 1, 0.0, 0, 1, 64);
    test_conv("conv_dense_5x5x3_8_3x3_valid", 5, 5, 3, 8, 3, 3, 1, 1, 0, 1.0, 0, 2, 7);
    test_conv("conv_vggish_14x14x64_70_3x3", 14, 14, 64, 70, 3, 3, 1, 1, 1, 0.05, 9, quick ? 1 : 2, 100);
    if (!quick) test_conv("conv_same_s2_odd_33x31x16_48", 33, 31, 16, 48, 3, 3, 2, 2, 1, 0.1, 0, 2, 200);

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
