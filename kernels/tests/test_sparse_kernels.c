/* Checks the sparse kernels and the shared per-ISA kernels against references, for every
 * ISA variant this CPU can run (si_dispatch_select, SI_ISA_PORTABLE up to si_isa_detected()):
 *
 *  - csr/si_csr_kernels.c: csrmm (si_f32_csrmm) and the sparse direct convolution
 *    (si_f32_spconv) through the selected panel and patch kernels, and their references
 *    si_f32_csrmm_ref / si_f32_spconv_ref;
 *  - fc/si_fc_csr.c: the fc_csrmv registry entry (its prepared state: uint16 columns, or a
 *    column-blocked copy above SI_CSR_BLOCK_COLS inputs) and its run_ref;
 *  - csr/si_mkl_csr.c: MKL inspector-executor csrmv / csrmm / spconv (the im2col it uses is
 *    the selected variant's, so spconv runs per variant);
 *  - every registry entry (si_algos) of the layer's type that applies in the batch's regime
 *    (conv_gemm, conv_sparse_direct, conv_sparse_planar, fc_gemv, fc_sgemm, ...): run() on
 *    each variant and run_ref(), the layers having no bias and a linear activation;
 *
 * against a double-precision dense reference on hand-built si_layer structs with random CSR
 * matrices: odd sizes, empty rows, an all-zero matrix, cols > 65536, batches that are not
 * multiples of the 64-wide panels, convolutions with 'same'/'valid' padding, strides, 1x1
 * and rectangular kernels. Tolerance: |got - ref| <= 1e-4 * sum_k |a_k x_k| + 1e-30 per
 * element (relative to the magnitude of the dot product's terms, which is what float
 * accumulation errors scale with).
 *
 *  - ops/si_ops.c, ops/si_im2col.c: si_k->maxpool_rows, ->bias_act_rows (relu and linear,
 *    with and without bias), ->im2col_rows and ->patches_t (against the im2col reference
 *    transposed) on odd shapes, 'same'/'valid' padding and strides, whole and partial row
 *    ranges, against si_maxpool_ref, si_bias_act_ref and si_im2col_rows_ref; and the
 *    threaded drivers si_maxpool_forward, si_bias_act, si_im2col. These are copies, max and
 *    one float add, so they must match exactly; rows outside a partial range and NaN guards
 *    past each output must stay untouched.
 *
 * Every failure line names the case, the kernel, the ISA variant and the first wrong element.
 * Closing line: "N passed, M failed"; exit status 1 on any failure.
 */
#include "si_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const si_algo si_algo_fc_csrmv;   /* fc/si_fc_csr.c */

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

/* Exact-size heap blocks (si_alloc rounds up to 64 bytes, which would hide small overruns
 * from AddressSanitizer). */
static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static si_isa n_isa; /* variants tested: SI_ISA_PORTABLE .. n_isa - 1 */

/* ---- layers ------------------------------------------------------------------------- */

/* Random CSR: each entry non-zero with probability density; every empty_every-th row empty. */
static void make_csr(si_layer *L, const char *name, int64_t rows, int64_t cols, double density, int empty_every) {
    memset(L, 0, sizeof *L);
    snprintf(L->name, sizeof L->name, "%s", name);
    L->type = SI_LAYER_DENSE;
    L->storage = SI_STORAGE_CSR;
    L->act = SI_ACT_LINEAR; /* entries' run() applies bias + activation: none, the plain product */
    L->bias = NULL;
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
    free(col);
    free(val);
}

static void free_layer(si_layer *L) {
    si_free(L->w);
    si_free(L->csr_ptr);
    si_free(L->csr_val);
    si_free(L->csr_col);
}

/* Spatial geometry of a conv / pool layer: TensorFlow's 'same' rule or 'valid'. */
static void set_geometry(si_layer *L, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh, int sw, int same) {
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
        L->pad_top = L->pad_left = 0;
    }
}

static void make_conv(si_layer *L, const char *name, int64_t H, int64_t W, int64_t C, int64_t F, int kh, int kw, int sh,
                      int sw, int same, double density, int empty_every) {
    make_csr(L, name, F, (int64_t)kh * kw * C, density, empty_every);
    L->type = SI_LAYER_CONV2D;
    set_geometry(L, H, W, C, kh, kw, sh, sw, same);
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

/* got[count] against ref within 1e-4 * mag; elements named [i / row_len][i % row_len]
 * with the given names of the two indices. */
static void check(const char *layer, const char *kernel, const char *variant, const float *got, const double *ref,
                  const double *mag, int64_t count, int64_t row_len, const char *outer, const char *inner) {
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
        printf("FAIL %s %s [isa %s]: %lld of %lld elements wrong, first %s %lld %s %lld = %.9g, expected %.9g "
               "(sum |a x| %.3g)\n",
               layer, kernel, variant, (long long)bad, (long long)count, outer, (long long)(first / row_len),
               inner, (long long)(first % row_len), (double)got[first], ref[first], mag[first]);
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

/* ---- every registry entry of the layer's type ------------------------------------------
 * Each entry that applies to the layer in the batch's regime (0: batch 1, 1: larger), on
 * each ISA variant (run) and its reference (run_ref), against the double reference. The
 * layer has no bias and a linear activation, so run() is the plain product. Entries that
 * read the dense form get it (si_form_dense, freed by free_layer). */
static void test_entries(si_layer *L, const float *in, int batch, const double *ref, const double *mag,
                         int64_t outn, int64_t row_len, const char *outer, const char *inner) {
    const int regime = batch > 1;
    float *out = xalloc(sizeof(float) * (size_t)outn);
    char kname[128];
    for (int i = 0; si_algos[i]; i++) {
        const si_algo *a = si_algos[i];
        if (a->type != L->type || !a->applies(L, regime)) continue;
        if ((a->forms & SI_FORM_DENSE) && si_form_dense(L) != SI_OK) {
            failed++;
            printf("FAIL %s entry %s: si_form_dense: %s\n", L->name, a->name, si_last_error());
            continue;
        }
        /* prepared under each ISA: an entry may fix its microkernel when it prepares
         * (conv_gemm_packed packs its filters for the active ISA's block) */
        void *st = NULL;
        float *ws = NULL;
        int64_t wsf = 0;
        for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
            si_dispatch_select(isa);
            if (st && a->release) a->release(st);
            st = NULL;
            if (a->prepare && a->prepare(L, &st) != SI_OK) {
                failed++;
                printf("FAIL %s entry %s.prepare [isa %s]: %s\n", L->name, a->name, si_isa_str(isa), si_last_error());
                st = NULL;
                continue;
            }
            si_free(ws);
            wsf = a->ws_floats ? a->ws_floats(L, st, batch) : 0;
            ws = wsf > 0 ? xalloc(sizeof(float) * (size_t)wsf) : NULL;
            fill_nan(out, outn);
            if (ws) fill_nan(ws, wsf);
            a->run(L, st, in, batch, out, ws);
            snprintf(kname, sizeof kname, "entry %s.run batch=%d", a->name, batch);
            check(L->name, kname, si_isa_str(isa), out, ref, mag, outn, row_len, outer, inner);
        }
        si_dispatch_select(si_isa_detected());
        if (a->prepare && !st) { si_free(ws); continue; }
        fill_nan(out, outn);
        a->run_ref(L, st, in, batch, out);
        snprintf(kname, sizeof kname, "entry %s.run_ref batch=%d", a->name, batch);
        check(L->name, kname, "reference", out, ref, mag, outn, row_len, outer, inner);
        si_free(ws);
        if (st && a->release) a->release(st);
    }
    si_free(out);
}

/* Entries that also compute the max pool after the convolution (run_pool), with a bias and
 * a ReLU, for a k x k pool of stride k over the conv output: against the double reference
 * relu(conv + bias) pooled, within 1e-4 of the largest sum |a x| of the window. */
static void test_pool_entries(si_layer *L, const float *in, int batch, const double *ref, const double *mag, int k) {
    if (L->out_h < k || L->out_w < k) return;
    si_layer P;
    memset(&P, 0, sizeof P);
    snprintf(P.name, sizeof P.name, "%s_pool%d", L->name, k);
    P.type = SI_LAYER_MAXPOOL2D;
    P.in_h = L->out_h; P.in_w = L->out_w; P.in_c = P.out_c = L->out_c;
    P.kh = P.kw = P.sh = P.sw = k;
    P.out_h = L->out_h / k; P.out_w = L->out_w / k;
    const int64_t F = L->rows, OH = L->out_h, OW = L->out_w, outn = (int64_t)batch * P.out_h * P.out_w * F;
    float *bias = rand_floats(F), *out = xalloc(sizeof(float) * (size_t)outn);
    double *pref = xalloc(sizeof(double) * (size_t)outn), *pmag = xalloc(sizeof(double) * (size_t)outn);
    for (int n = 0; n < batch; n++)
        for (int64_t y = 0; y < P.out_h; y++)
            for (int64_t x = 0; x < P.out_w; x++)
                for (int64_t f = 0; f < F; f++) {
                    double m = 0, g = 0; /* relu(...) >= 0 */
                    for (int i = 0; i < k; i++)
                        for (int j = 0; j < k; j++) {
                            int64_t e = (((int64_t)n * OH + y * k + i) * OW + x * k + j) * F + f;
                            double v = ref[e] + bias[f];
                            if (v > m) m = v;
                            if (mag[e] + fabs(bias[f]) > g) g = mag[e] + fabs(bias[f]);
                        }
                    int64_t o = (((int64_t)n * P.out_h + y) * P.out_w + x) * F + f;
                    pref[o] = m;
                    pmag[o] = g;
                }
    const int act0 = L->act;
    float *bias0 = L->bias;
    L->bias = bias;
    L->act = SI_ACT_RELU;
    L->pool = &P;
    char kname[160];
    for (int i = 0; si_algos[i]; i++) {
        const si_algo *a = si_algos[i];
        if (a->type != L->type || !a->run_pool || !a->applies(L, batch > 1)) continue;
        for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
            si_dispatch_select(isa);
            void *st = NULL;
            if (a->prepare && a->prepare(L, &st) != SI_OK) {
                failed++;
                printf("FAIL %s entry %s.prepare [isa %s]: %s\n", P.name, a->name, si_isa_str(isa), si_last_error());
                continue;
            }
            int64_t wsf = a->ws_floats(L, st, batch);
            float *ws = wsf > 0 ? xalloc(sizeof(float) * (size_t)wsf) : NULL;
            if (ws) fill_nan(ws, wsf);
            fill_nan(out, outn);
            a->run_pool(L, st, in, batch, out, ws);
            snprintf(kname, sizeof kname, "entry %s.run_pool (bias, relu, %dx%d pool) batch=%d", a->name, k, k, batch);
            check(P.name, kname, si_isa_str(isa), out, pref, pmag, outn, F, "pooled position", "filter");
            si_free(ws);
            if (st && a->release) a->release(st);
        }
        si_dispatch_select(si_isa_detected());
    }
    L->bias = bias0;
    L->act = act0;
    L->pool = NULL;
    si_free(bias);
    si_free(out);
    si_free(pref);
    si_free(pmag);
}

/* ---- sparse FC: csrmv (fc_csrmv entry), csrmm, MKL ---------------------------------------- */

static void test_fc(const char *name, int64_t rows, int64_t cols, double density, int empty_every, const int *ns,
                    int n_ns) {
    si_layer L;
    make_csr(&L, name, rows, cols, density, empty_every);
    si_mkl_csr *h = NULL;
    if (si_mkl_csr_create(&L, &h) != SI_OK) {
        failed++;
        printf("FAIL %s si_mkl_csr_create [isa MKL]: %s\n", name, si_last_error());
        h = NULL;
    }
    void *mv = NULL;
    if (si_algo_fc_csrmv.prepare(&L, &mv) != SI_OK) {
        failed++;
        printf("FAIL %s fc_csrmv.prepare [isa any]: %s\n", name, si_last_error());
        mv = NULL;
    }
    int nmax = 1;
    for (int i = 0; i < n_ns; i++) nmax = ns[i] > nmax ? ns[i] : nmax;
    float *X = rand_floats(cols * nmax), *Y = xalloc(sizeof(float) * (size_t)(rows * nmax));
    double *ref = xalloc(sizeof(double) * (size_t)(rows * nmax)), *mag = xalloc(sizeof(double) * (size_t)(rows * nmax));
    char kname[96];
    /* batch 1: the fc_csrmv entry's run on each variant, its run_ref, MKL */
    ref_fc(&L, X, 1, ref, mag);
    if (mv) {
        for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
            si_dispatch_select(isa);
            fill_nan(Y, rows);
            si_algo_fc_csrmv.run(&L, mv, X, 1, Y, NULL);
            check(name, "fc_csrmv.run (csr_mv_rows)", si_isa_str(isa), Y, ref, mag, rows, rows, "sample", "row");
        }
        si_dispatch_select(si_isa_detected());
        fill_nan(Y, rows);
        si_algo_fc_csrmv.run_ref(&L, mv, X, 1, Y);
        check(name, "fc_csrmv.run_ref", "reference", Y, ref, mag, rows, rows, "sample", "row");
    }
    if (h) { /* MKL picks its own code path whatever the table */
        fill_nan(Y, rows);
        si_mkl_csrmv(h, X, Y);
        check(name, "si_mkl_csrmv", "MKL", Y, ref, mag, rows, rows, "sample", "row");
    }
    /* batches: si_f32_csrmm on each variant, the reference, MKL */
    for (int i = 0; i < n_ns; i++) {
        int n = ns[i];
        ref_fc(&L, X, n, ref, mag);
        int64_t wsf = si_f32_csrmm_ws_floats(&L, n);
        float *ws = xalloc(sizeof(float) * (size_t)wsf);
        for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
            si_dispatch_select(isa);
            fill_nan(Y, rows * n);
            fill_nan(ws, wsf);
            si_f32_csrmm(&L, X, n, Y, ws);
            snprintf(kname, sizeof kname, "si_f32_csrmm n=%d (csr_panel)", n);
            check(name, kname, si_isa_str(isa), Y, ref, mag, rows * n, rows, "sample", "row");
        }
        si_dispatch_select(si_isa_detected());
        fill_nan(Y, rows * n);
        si_f32_csrmm_ref(&L, X, n, Y);
        snprintf(kname, sizeof kname, "si_f32_csrmm_ref n=%d", n);
        check(name, kname, "reference", Y, ref, mag, rows * n, rows, "sample", "row");
        si_free(ws);
        if (h) {
            fill_nan(Y, rows * n);
            float *mws = xalloc(sizeof(float) * (size_t)si_mkl_csrmm_ws_floats(&L, n));
            si_mkl_csrmm(&L, h, X, n, Y, mws);
            si_free(mws);
            snprintf(kname, sizeof kname, "si_mkl_csrmm n=%d", n);
            check(name, kname, "MKL", Y, ref, mag, rows * n, rows, "sample", "row");
        }
    }
    /* every entry, at batch 1 and one odd batch */
    ref_fc(&L, X, 1, ref, mag);
    test_entries(&L, X, 1, ref, mag, rows, rows, "sample", "row");
    const int n_entries = nmax < 17 ? nmax : 17;
    ref_fc(&L, X, n_entries, ref, mag);
    test_entries(&L, X, n_entries, ref, mag, rows * n_entries, rows, "sample", "row");
    if (mv) si_algo_fc_csrmv.release(mv);
    si_mkl_csr_destroy(h);
    si_free(X);
    si_free(Y);
    si_free(ref);
    si_free(mag);
    free_layer(&L);
}

/* ---- sparse conv: spconv, its reference, MKL ---------------------------------------- */

static void test_conv(const char *name, int64_t H, int64_t W, int64_t C, int64_t F, int kh, int kw, int sh, int sw,
                      int same, double density, int empty_every, int batch, int64_t mkl_ws_rows) {
    si_layer L;
    make_conv(&L, name, H, W, C, F, kh, kw, sh, sw, same, density, empty_every);
    si_mkl_csr *h = NULL;
    if (si_mkl_csr_create(&L, &h) != SI_OK) {
        failed++;
        printf("FAIL %s si_mkl_csr_create [isa MKL]: %s\n", name, si_last_error());
        h = NULL;
    }
    const int64_t P = (int64_t)batch * L.out_h * L.out_w, outn = P * F;
    float *in = rand_floats((int64_t)batch * H * W * C), *out = xalloc(sizeof(float) * (size_t)outn);
    double *ref = xalloc(sizeof(double) * (size_t)outn), *mag = xalloc(sizeof(double) * (size_t)outn);
    ref_conv(&L, in, batch, ref, mag);
    int64_t wsf = si_f32_spconv_ws_floats(&L, batch);
    float *ws = xalloc(sizeof(float) * (size_t)wsf);
    int64_t mws = mkl_ws_rows * L.cols;
    float *w2 = xalloc(sizeof(float) * (size_t)mws);
    char kname[96];
    for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
        si_dispatch_select(isa);
        static const int widths[] = {64, 32, 17};  /* the two the registry uses, and an odd one */
        for (int wi = 0; wi < 3; wi++) {
            fill_nan(out, outn);
            fill_nan(ws, wsf);
            si_f32_spconv(&L, in, batch, out, ws, widths[wi]);
            snprintf(kname, sizeof kname, "si_f32_spconv batch=%d tiles of %d (patches_t + csr_panel)", batch,
                     widths[wi]);
            check(name, kname, si_isa_str(isa), out, ref, mag, outn, F, "position", "filter");
        }
        if (h) { /* MKL's product on the selected variant's im2col */
            fill_nan(out, outn);
            si_mkl_spconv(&L, h, in, batch, out, w2, mws);
            snprintf(kname, sizeof kname, "si_mkl_spconv batch=%d (im2col_rows, chunks of %lld rows)", batch,
                     (long long)mkl_ws_rows);
            check(name, kname, si_isa_str(isa), out, ref, mag, outn, F, "position", "filter");
        }
    }
    si_dispatch_select(si_isa_detected());
    fill_nan(out, outn);
    si_f32_spconv_ref(&L, in, batch, out);
    snprintf(kname, sizeof kname, "si_f32_spconv_ref batch=%d", batch);
    check(name, kname, "reference", out, ref, mag, outn, F, "position", "filter");
    test_entries(&L, in, batch, ref, mag, outn, F, "position", "filter");
    test_pool_entries(&L, in, batch, ref, mag, 2);
    test_pool_entries(&L, in, batch, ref, mag, 3);
    si_free(ws);
    si_free(w2);
    si_mkl_csr_destroy(h);
    si_free(in);
    si_free(out);
    si_free(ref);
    si_free(mag);
    free_layer(&L);
}

/* ---- shared ops: maxpool, bias + activation, im2col, transposed patches ---------------- */

#define GUARD 19 /* NaN floats after each output, which no kernel may write */

/* got[0, n) == want[0, n) exactly (+0 == -0), then got[n, n + guard) still NaN. Elements
 * named by index / row_len, index % row_len. */
static void check_exact(const char *layer, const char *kernel, si_isa isa, const float *got, const float *want,
                        int64_t n, int64_t guard, int64_t row_len, const char *outer, const char *inner) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!(got[i] == want[i])) { if (first < 0) first = i; bad++; }
    int64_t gbad = -1;
    for (int64_t g = 0; g < guard; g++)
        if (!isnan(got[n + g])) { gbad = g; break; }
    if (bad) {
        failed++;
        printf("FAIL %s %s [isa %s]: %lld of %lld elements wrong, first %s %lld %s %lld = %.9g, expected %.9g\n",
               layer, kernel, si_isa_str(isa), (long long)bad, (long long)n, outer, (long long)(first / row_len), inner,
               (long long)(first % row_len), (double)got[first], (double)want[first]);
    } else if (gbad >= 0) {
        failed++;
        printf("FAIL %s %s [isa %s]: wrote past the end of its output: element %lld after the last = %.9g\n", layer,
               kernel, si_isa_str(isa), (long long)gbad, (double)got[n + gbad]);
    } else {
        passed++;
    }
}

static float *nan_floats(int64_t n) {
    float *p = xmalloc(sizeof(float) * (size_t)n);
    fill_nan(p, n);
    return p;
}

static float *rand_exact(int64_t n) { /* exact-size block of random values */
    float *p = xmalloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) p[i] = randf();
    return p;
}

/* Max pooling of a batch: the variants on all output rows, on a partial range (the other
 * rows untouched), on the rows in two calls, and the threaded driver. */
static void test_maxpool(const char *name, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh, int sw, int same,
                         int batch) {
    si_layer L;
    memset(&L, 0, sizeof L);
    snprintf(L.name, sizeof L.name, "%s", name);
    L.type = SI_LAYER_MAXPOOL2D;
    set_geometry(&L, H, W, C, kh, kw, sh, sw, same);
    L.out_c = C;
    const int64_t rows = (int64_t)batch * L.out_h, row_f = L.out_w * C, outn = rows * row_f;
    float *in = rand_exact((int64_t)batch * H * W * C);
    float *want = nan_floats(outn + GUARD), *got = nan_floats(outn + GUARD), *part = nan_floats(outn + GUARD);
    si_maxpool_ref(&L, in, batch, want);
    const int64_t r0 = rows > 2 ? 1 : 0, r1 = rows > 2 ? rows - 1 : rows, mid = rows / 2;
    for (int64_t i = 0; i < outn; i++) /* the partial run's expectation: NaN outside [r0, r1) */
        part[i] = i >= r0 * row_f && i < r1 * row_f ? want[i] : NAN;
    char kname[96];
    for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
        si_dispatch_select(isa);
        fill_nan(got, outn + GUARD);
        si_k->maxpool_rows(&L, in, got, 0, rows);
        check_exact(name, "maxpool_rows (all rows)", isa, got, want, outn, GUARD, row_f, "output row", "element");

        fill_nan(got, outn + GUARD);
        si_k->maxpool_rows(&L, in, got, r0, r1);
        int64_t bad = -1;
        for (int64_t i = 0; i < outn && bad < 0; i++)
            if (!(isnan(part[i]) ? isnan(got[i]) : got[i] == part[i])) bad = i;
        if (bad >= 0) {
            failed++;
            printf("FAIL %s maxpool_rows rows [%lld, %lld) [isa %s]: output row %lld element %lld = %.9g, "
                   "expected %.9g%s\n", name, (long long)r0, (long long)r1, si_isa_str(isa), (long long)(bad / row_f),
                   (long long)(bad % row_f), (double)got[bad], (double)part[bad],
                   isnan(part[bad]) ? " (outside the range: must stay untouched)" : "");
        } else {
            passed++;
        }

        fill_nan(got, outn + GUARD);
        si_k->maxpool_rows(&L, in, got, mid, rows);
        si_k->maxpool_rows(&L, in, got, 0, mid);
        snprintf(kname, sizeof kname, "maxpool_rows (rows [%lld, %lld) then [0, %lld))", (long long)mid,
                 (long long)rows, (long long)mid);
        check_exact(name, kname, isa, got, want, outn, GUARD, row_f, "output row", "element");

        fill_nan(got, outn + GUARD);
        si_maxpool_forward(&L, in, batch, got);
        check_exact(name, "si_maxpool_forward (threaded driver)", isa, got, want, outn, GUARD, row_f, "output row",
                    "element");
    }
    si_dispatch_select(si_isa_detected());
    /* the reference itself: a few outputs by hand (padding taps never win, even over negatives) */
    {
        int64_t bad = -1;
        for (int64_t o = 0; o < outn && bad < 0; o += 1 + outn / 97) {
            int64_t c = o % C, ow = o / C % L.out_w, oh = o / C / L.out_w % L.out_h, n = o / C / L.out_w / L.out_h;
            float m = -INFINITY;
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    int64_t y = oh * sh - L.pad_top + i, x = ow * sw - L.pad_left + j;
                    if (y >= 0 && y < H && x >= 0 && x < W) m = fmaxf(m, in[((n * H + y) * W + x) * C + c]);
                }
            if (!(want[o] == m)) bad = o;
        }
        if (bad >= 0) {
            failed++;
            printf("FAIL %s si_maxpool_ref [isa none]: output row %lld element %lld = %.9g, not the window's max\n",
                   name, (long long)(bad / row_f), (long long)(bad % row_f), (double)want[bad]);
        } else {
            passed++;
        }
    }
    free(in);
    free(want);
    free(got);
    free(part);
}

/* out = act(out + bias) on positions x n: the variants on all positions, on a partial range
 * (the other positions untouched) and in two calls, and the threaded driver si_bias_act,
 * against si_bias_act_ref. */
static void test_bias_act(int64_t n, int64_t positions, int act, int with_bias) {
    char name[96];
    snprintf(name, sizeof name, "bias_act_%lldx%lld_%s_%s", (long long)positions, (long long)n,
             act == SI_ACT_RELU ? "relu" : "linear", with_bias ? "bias" : "nobias");
    si_layer L;
    memset(&L, 0, sizeof L);
    snprintf(L.name, sizeof L.name, "%s", name);
    L.type = SI_LAYER_DENSE;
    L.rows = n;
    L.act = act;
    const int64_t total = n * positions;
    float *x = rand_exact(total), *bias = with_bias ? rand_exact(n) : NULL;
    L.bias = bias;
    float *want = nan_floats(total + GUARD), *got = nan_floats(total + GUARD), *part = nan_floats(total + GUARD);
    memcpy(want, x, sizeof(float) * (size_t)total);
    si_bias_act_ref(&L, want, positions);
    const int64_t p0 = positions > 2 ? 1 : 0, p1 = positions > 2 ? positions - 1 : positions, mid = positions / 2;
    for (int64_t i = 0; i < total; i++) part[i] = i >= p0 * n && i < p1 * n ? want[i] : x[i];
    for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
        si_dispatch_select(isa);
        memcpy(got, x, sizeof(float) * (size_t)total);
        si_k->bias_act_rows(got, bias, n, act, 0, positions);
        check_exact(name, "bias_act_rows (all positions)", isa, got, want, total, GUARD, n, "position", "channel");

        memcpy(got, x, sizeof(float) * (size_t)total);
        si_k->bias_act_rows(got, bias, n, act, p0, p1);
        char kname[96];
        snprintf(kname, sizeof kname, "bias_act_rows (positions [%lld, %lld), the others untouched)", (long long)p0,
                 (long long)p1);
        check_exact(name, kname, isa, got, part, total, GUARD, n, "position", "channel");

        memcpy(got, x, sizeof(float) * (size_t)total);
        si_k->bias_act_rows(got, bias, n, act, mid, positions);
        si_k->bias_act_rows(got, bias, n, act, 0, mid);
        check_exact(name, "bias_act_rows (two calls)", isa, got, want, total, GUARD, n, "position", "channel");

        memcpy(got, x, sizeof(float) * (size_t)total);
        si_bias_act(&L, got, positions);
        check_exact(name, "si_bias_act (threaded driver)", isa, got, want, total, GUARD, n, "position", "channel");
    }
    si_dispatch_select(si_isa_detected());
    /* the reference itself, by hand */
    {
        int64_t bad = -1;
        for (int64_t i = 0; i < total && bad < 0; i++) {
            float v = x[i] + (bias ? bias[i % n] : 0.0f);
            if (act == SI_ACT_RELU && v < 0.0f) v = 0.0f;
            if (!(want[i] == v)) bad = i;
        }
        if (bad >= 0) {
            failed++;
            printf("FAIL %s si_bias_act_ref [isa none]: position %lld channel %lld = %.9g, expected %.9g\n", name,
                   (long long)(bad / n), (long long)(bad % n), (double)want[bad],
                   (double)(x[bad] + (bias ? bias[bad % n] : 0.0f)));
        } else {
            passed++;
        }
    }
    free(x);
    free(bias);
    free(want);
    free(got);
    free(part);
}

/* im2col rows and transposed patch tiles of a conv layer's geometry against
 * si_im2col_rows_ref (and that against a direct computation). */
static void test_patches(const char *name, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh, int sw, int same,
                         int batch) {
    si_layer L;
    memset(&L, 0, sizeof L);
    snprintf(L.name, sizeof L.name, "%s", name);
    L.type = SI_LAYER_CONV2D;
    set_geometry(&L, H, W, C, kh, kw, sh, sw, same);
    L.cols = (int64_t)kh * kw * C;
    L.rows = L.out_c = 1;
    const int64_t K = L.cols, P = (int64_t)batch * L.out_h * L.out_w;
    float *in = rand_exact((int64_t)batch * H * W * C);
    float *want = nan_floats(P * K + GUARD), *got = nan_floats(P * K + GUARD);
    si_im2col_rows_ref(&L, in, 0, P, want);
    /* the reference against a direct computation */
    {
        int64_t bad = -1;
        for (int64_t p = 0; p < P && bad < 0; p++) {
            int64_t n = p / (L.out_h * L.out_w), oh = p / L.out_w % L.out_h, ow = p % L.out_w;
            for (int64_t k = 0; k < K && bad < 0; k++) {
                int64_t c = k % C, j = k / C % kw, i = k / C / kw;
                int64_t y = oh * sh - L.pad_top + i, x = ow * sw - L.pad_left + j;
                float v = y < 0 || y >= H || x < 0 || x >= W ? 0.0f : in[((n * H + y) * W + x) * C + c];
                if (!(want[p * K + k] == v)) bad = p * K + k;
            }
        }
        if (bad >= 0) {
            failed++;
            printf("FAIL %s si_im2col_rows_ref [isa none]: position %lld column %lld = %.9g is not its input tap\n",
                   name, (long long)(bad / K), (long long)(bad % K), (double)want[bad]);
        } else {
            passed++;
        }
    }
    /* row ranges: all, from an odd position across sample boundaries, a single row, the last row */
    int64_t ranges[4][2] = {{0, P}, {P > 3 ? 3 : 0, P > 3 ? P - 3 - P / 5 : P}, {P / 2, 1}, {P - 1, 1}};
    /* patch tiles (p0, w <= 64): odd widths, a full 64 and the image's last partial tile */
    /* and one across the first sample boundary */
    const int64_t S = L.out_h * L.out_w, sb = S > 5 ? S - 5 : 0;
    int64_t tiles[9][2] = {{0, 1}, {1, 15}, {2, 16}, {3, 17}, {5, 33}, {0, 64}, {7, 63}, {sb, 37}, {0, 0}};
    int n_tiles = 0;
    for (int t = 0; t < 8; t++)
        if (tiles[t][0] + tiles[t][1] <= P) tiles[n_tiles][0] = tiles[t][0], tiles[n_tiles][1] = tiles[t][1], n_tiles++;
    {
        int64_t last = (P - 1) / SI_PANEL * SI_PANEL;
        tiles[n_tiles][0] = last;
        tiles[n_tiles][1] = P - last;
        n_tiles++;
    }
    float *zeros = xmalloc(sizeof(float) * (size_t)C);
    for (int64_t c = 0; c < C; c++) zeros[c] = 0.0f;
    float *pt = nan_floats(K * SI_PANEL + GUARD), *pwant = xmalloc(sizeof(float) * (size_t)(K * SI_PANEL));
    char kname[128];
    for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
        si_dispatch_select(isa);
        for (int r = 0; r < 4; r++) {
            int64_t p0 = ranges[r][0], m = ranges[r][1];
            if (m <= 0) continue;
            fill_nan(got, m * K + GUARD);
            si_k->im2col_rows(&L, in, p0, m, got);
            snprintf(kname, sizeof kname, "im2col_rows (positions [%lld, %lld))", (long long)p0, (long long)(p0 + m));
            check_exact(name, kname, isa, got, want + p0 * K, m * K, GUARD, K, "row", "column");
        }
        fill_nan(got, P * K + GUARD);
        si_im2col(&L, in, 0, P, got);
        check_exact(name, "si_im2col (threaded driver)", isa, got, want, P * K, GUARD, K, "row", "column");
        for (int t = 0; t < n_tiles; t++) {
            int64_t p0 = tiles[t][0];
            int w = (int)tiles[t][1];
            for (int64_t k = 0; k < K; k++)
                for (int j = 0; j < w; j++) pwant[k * w + j] = want[(p0 + j) * K + k];
            fill_nan(pt, K * SI_PANEL + GUARD);
            si_k->patches_t(&L, in, p0, w, w, pt, zeros);
            snprintf(kname, sizeof kname, "patches_t (positions [%lld, %lld), w=%d; element [k][t])", (long long)p0,
                     (long long)(p0 + w), w);
            check_exact(name, kname, isa, pt, pwant, K * w, GUARD, w, "k", "t");
            /* row stride 64 (conv_sparse_tiled's full-width tile): the same values, and the
             * columns past w of each row left as they were (NaN) */
            fill_nan(pt, K * SI_PANEL + GUARD);
            si_k->patches_t(&L, in, p0, w, SI_PANEL, pt, zeros);
            int bad = 0;
            for (int64_t k = 0; k < K && !bad; k++)
                for (int j = 0; j < SI_PANEL && !bad; j++) {
                    float g = pt[k * SI_PANEL + j];
                    if (j < w ? g != pwant[k * w + j] : g == g) {
                        bad = 1;
                        failed++;
                        printf("FAIL %s patches_t ld=64 (positions [%lld, %lld), w=%d) [isa %s]: element [k %lld][t %d] = %g, "
                               "expected %g\n", name, (long long)p0, (long long)(p0 + w), w, si_isa_str(isa), (long long)k, j,
                               g, j < w ? pwant[k * w + j] : NAN);
                    }
                }
            if (!bad) passed++;
        }
    }
    si_dispatch_select(si_isa_detected());
    free(zeros);
    free(pt);
    free(pwant);
    free(in);
    free(want);
    free(got);
}

/* dst[c * ldd + r] = act(src[r * lds + c] + bias[r]): every variant against si_transpose_ref
 * on odd and 8-multiple shapes, padded leading dimensions (the gaps must stay untouched) and
 * both activations, with and without a bias; and the reference against a direct loop. */
static void test_transpose(int64_t rows, int64_t cols, int act, int with_bias) {
    char name[96];
    snprintf(name, sizeof name, "transpose_%lldx%lld_%s_%s", (long long)rows, (long long)cols,
             act == SI_ACT_RELU ? "relu" : "linear", with_bias ? "bias" : "nobias");
    const int64_t lds = cols + 3, ldd = rows + 5, total = cols * ldd;
    float *src = rand_exact(rows * lds), *bias = with_bias ? rand_exact(rows) : NULL;
    const float gap = -12345.0f; /* what the gaps between dst rows hold and must keep */
    float *want = nan_floats(total + GUARD), *got = nan_floats(total + GUARD);
    for (int64_t i = 0; i < total; i++) want[i] = gap;
    si_transpose_ref(src, lds, rows, cols, want, ldd, bias, act);
    {
        int64_t bad = -1;
        for (int64_t c = 0; c < cols && bad < 0; c++)
            for (int64_t r = 0; r < ldd && bad < 0; r++) {
                float v = r < rows ? src[r * lds + c] + (bias ? bias[r] : 0.0f) : 0.0f;
                if (act == SI_ACT_RELU && v < 0.0f) v = 0.0f;
                const float w = want[c * ldd + r];
                if (!(w == (r < rows ? v : gap))) bad = c * ldd + r;
            }
        if (bad >= 0) {
            failed++;
            printf("FAIL %s si_transpose_ref [isa none]: dst row %lld column %lld = %.9g\n", name,
                   (long long)(bad / ldd), (long long)(bad % ldd), (double)want[bad]);
        } else {
            passed++;
        }
    }
    for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
        si_dispatch_select(isa);
        for (int64_t i = 0; i < total; i++) got[i] = gap;
        si_k->transpose(src, lds, rows, cols, got, ldd, bias, act);
        check_exact(name, "transpose", isa, got, want, total, GUARD, ldd, "dst row", "element");
    }
    si_dispatch_select(si_isa_detected());
    free(src);
    free(bias);
    free(want);
    free(got);
}

static void test_ops(int quick) {
    /* name, H, W, C, kh, kw, sh, sw, same, batch */
    test_maxpool("pool_2x2_s2_valid_7x9x3", 7, 9, 3, 2, 2, 2, 2, 0, 2);
    test_maxpool("pool_2x2_s2_same_7x9x3", 7, 9, 3, 2, 2, 2, 2, 1, 2);
    test_maxpool("pool_3x3_s2_same_11x10x17", 11, 10, 17, 3, 3, 2, 2, 1, 3);
    test_maxpool("pool_3x2_s1x2_valid_5x13x33", 5, 13, 33, 3, 2, 1, 2, 0, 1);
    test_maxpool("pool_4x3_s1x3_same_13x7x5", 13, 7, 5, 4, 3, 1, 3, 1, 2);
    test_maxpool("pool_1x1_6x6x1", 6, 6, 1, 1, 1, 1, 1, 0, 1);
    test_maxpool("pool_3x3_s3_same_9x8x64", 9, 8, 64, 3, 3, 3, 3, 1, 1);
    test_maxpool("pool_5x5_same_larger_than_3x3x7", 3, 3, 7, 5, 5, 1, 1, 1, 2);
    test_maxpool("pool_3x3_s2_valid_15x15x31", 15, 15, 31, 3, 3, 2, 2, 0, 1);
    if (!quick) test_maxpool("pool_2x2_s2_threaded_57x56x41", 57, 56, 41, 2, 2, 2, 2, 1, 2);

    static const int64_t shapes[][2] = {{1, 1}, {7, 5}, {16, 3}, {17, 9}, {33, 4}, {100, 7}, {1000, 70}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int act = 0; act < 2; act++)
            for (int b = 0; b < 2; b++)
                test_bias_act(shapes[s][0], shapes[s][1], act ? SI_ACT_RELU : SI_ACT_LINEAR, b);

    static const int64_t tshapes[][2] = {{1, 1}, {8, 8}, {7, 9}, {16, 64}, {20, 17}, {33, 64}, {480, 64}, {5, 3}};
    for (size_t s = 0; s < sizeof tshapes / sizeof tshapes[0]; s++)
        for (int act = 0; act < 2; act++)
            for (int b = 0; b < 2; b++) test_transpose(tshapes[s][0], tshapes[s][1], act ? SI_ACT_RELU : SI_ACT_LINEAR, b);

    test_patches("patch_3x3_s2_same_7x8x3", 7, 8, 3, 3, 3, 2, 2, 1, 3);
    test_patches("patch_3x5_s1x2_same_10x11x6", 10, 11, 6, 3, 5, 1, 2, 1, 2);
    test_patches("patch_5x5_valid_12x12x20", 12, 12, 20, 5, 5, 1, 1, 0, 2);
    test_patches("patch_1x1_6x6x19", 6, 6, 19, 1, 1, 1, 1, 0, 2);
    test_patches("patch_2x2_same_5x7x1", 5, 7, 1, 2, 2, 1, 1, 1, 3);
    test_patches("patch_3x3_same_9x9x5", 9, 9, 5, 3, 3, 1, 1, 1, 2);
    test_patches("patch_5x5_same_larger_than_4x4x2", 4, 4, 2, 5, 5, 1, 1, 1, 2);
    test_patches("patch_4x4_s3_valid_13x11x17", 13, 11, 17, 4, 4, 3, 3, 0, 2);
    test_patches("patch_3x3_s2_same_odd_33x31x16", 33, 31, 16, 3, 3, 2, 2, 1, quick ? 1 : 2);
    test_patches("patch_5x5_valid_lenet1_28x28x1", 28, 28, 1, 5, 5, 1, 1, 0, 2);
    test_patches("patch_3x3_s2x1_same_9x10x4", 9, 10, 4, 3, 3, 2, 1, 1, 2);
    test_patches("patch_3x1_s1x3_valid_8x10x3", 8, 10, 3, 3, 1, 1, 3, 0, 3);
}

int main(int argc, char **argv) {
    (void)argv;
    const int quick = argc > 1; /* the sanitizer run: fewer, smaller cases */
    si_init();
    n_isa = (si_isa)(si_isa_detected() + 1);
    printf("ISA variants: portable up to %s\n", si_isa_str(si_isa_detected()));
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
    test_fc("fc_block_limit_29x4096", 29, 4096, 0.05, 4, ns, n_ns);      /* widest unblocked csrmv */
    test_fc("fc_blocked_31x4097", 31, 4097, 0.05, 0, ns, n_ns);          /* narrowest blocked csrmv */
    test_fc("fc_wide_120x70001_blocked", 120, 70001, quick ? 0.002 : 0.01, 5, ns, n_ns);
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
    /* Winograd's edges: partial 4x4 tiles (13 x 11), channel and filter counts past its 64-wide
     * chunks (130, 70), valid padding, a group boundary inside a batch */
    test_conv("conv_wino_13x11x130_70_3x3", 13, 11, 130, 70, 3, 3, 1, 1, 1, 0.35, 0, quick ? 1 : 3, 100);
    test_conv("conv_wino_valid_10x9x7_5_3x3", 10, 9, 7, 5, 3, 3, 1, 1, 0, 1.0, 0, quick ? 2 : 40, 100);
    const int64_t group_floats = si_wino_group_floats;
    si_wino_group_floats = 36 * 5 * (130 + 70); /* groups of 5 tiles: 36 / 5 leaves a short last group */
    test_conv("conv_wino_groups_13x11x130_70_3x3", 13, 11, 130, 70, 3, 3, 1, 1, 1, 0.35, 0, 3, 100);
    si_wino_group_floats = group_floats;
    /* both ways of grouping, whatever this machine's L2: per-thread groups (with a short
     * last group) and the shared ones */
    const int64_t local_max_u = si_wino_local_max_u;
    si_wino_local_max_u = INT64_MAX;
    test_conv("conv_wino_local_13x11x130_70_3x3", 13, 11, 130, 70, 3, 3, 1, 1, 1, 0.35, 0, 3, 100);
    test_conv("conv_wino_local_valid_10x9x7_5_3x3", 10, 9, 7, 5, 3, 3, 1, 1, 0, 1.0, 0, quick ? 2 : 40, 100);
    si_wino_local_max_u = 0;
    test_conv("conv_wino_shared_13x11x130_70_3x3", 13, 11, 130, 70, 3, 3, 1, 1, 1, 0.35, 0, 3, 100);
    si_wino_local_max_u = local_max_u;
    /* batches past 16: conv_sparse_batch's blocks of 64 samples, a last short block */
    test_conv("conv_lenet1_28x28x1_20_5x5_batch70", 28, 28, 1, 20, 5, 5, 1, 1, 0, 0.2, 0, quick ? 17 : 70, 100);
    test_conv("conv_same_s2_9x10x3_12_3x3_batch66", 9, 10, 3, 12, 3, 3, 2, 2, 1, 0.3, 3, 66, 100);
    /* LeNet-5's conv2 in blocks of 64 (4 conv positions per pooled item: AVX2's blocks of 2 + 2),
     * and one output position per row (AVX2's single 8-vector position) */
    test_conv("conv_lenet2_12x12x20_50_5x5_batch65", 12, 12, 20, 50, 5, 5, 1, 1, 0, 0.12, 0, quick ? 17 : 65, 100);
    test_conv("conv_one_position_5x5x8_6_5x5_batch20", 5, 5, 8, 6, 5, 5, 1, 1, 0, 0.5, 2, 20, 100);
    if (!quick) test_conv("conv_same_s2_odd_33x31x16_48", 33, 31, 16, 48, 3, 3, 2, 2, 1, 0.1, 0, 2, 200);

    test_ops(quick);

    si_dispatch_select(si_isa_detected());
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
