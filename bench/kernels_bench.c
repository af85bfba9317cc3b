/* Microbenchmark of the sparse kernels against dense MKL on VGG19 / LeNet-5 shapes.
 *
 *   bash bench/run_kernels_bench.sh [fc|conv|all] [quick]
 *
 * For every shape and density (100, 50, 30, 20, 10, 5, 4, 2, 1 %) with a uniformly random
 * CSR pattern, after one warm-up, the median of repeats of:
 *   FC batch 1:  dense cblas_sgemv, dense si_f32_gemv (si_gemv.c), own si_f32_csrmv
 *                (AVX-512 and portable), MKL si_mkl_csrmv;
 *   FC batch 64: dense cblas_sgemm, own si_f32_csrmm (AVX-512, portable), MKL column-major
 *                without transposes (si_mkl_csrmm_colmajor) and si_mkl_csrmm (row-major
 *                with transposes and its per-call scratch allocation);
 *   conv:        dense im2col + cblas_sgemm (the runtime's dense path, 2M-float chunks),
 *                own si_f32_spconv (AVX-512, portable), MKL si_mkl_spconv.
 * Dense timings do not depend on the density and are measured once per shape.
 *
 * Caches: before every timed repeat a 96 MB buffer is written, so the L3 (32 MB here) holds
 * none of the weights, as in a real forward pass where the other layers' weights and
 * activations pass through it in between. (Warm-cache FC batch-1 figures are printed too.)
 *
 * Columns: ms (median), speedup vs the best dense, GFLOP/s real (2 nnz n / t), dense-
 * equivalent GFLOP/s (2 rows cols n / t), and for FC at batch 1 GB/s of weight bytes
 * touched (dense 4 rows cols; own 4 nnz + 2 or 4 nnz + 8 rows; MKL 8 nnz + 4 rows).
 * Break-even: the highest density at which the kernel is faster than dense at that
 * density and at every lower one.
 */
#include "si_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mkl.h>
#include <omp.h>

extern int si_sparse_portable_only;
void si_mkl_csrmm_colmajor(const si_layer *L, const float *X, int n, float *Y);

static const double densities[] = {1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.04, 0.02, 0.01};
#define ND ((int)(sizeof densities / sizeof densities[0]))

static int quick;
static char *flush_buf;
#define FLUSH_BYTES ((size_t)96 << 20)

static void flush_caches(void) {
#pragma omp parallel for num_threads(2)
    for (size_t i = 0; i < FLUSH_BYTES; i += 64) flush_buf[i] = (char)(flush_buf[i] + 1);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static inline uint64_t next_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static inline float randf(void) { return (float)((double)(next_u64() >> 40) * (2.0 / 16777216.0) - 1.0); }

static void *xalloc(size_t bytes) {
    void *p = si_alloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory (%zu bytes)\n", bytes); exit(2); }
    return p;
}

/* Random CSR of the given density: each entry kept with that probability. */
static void make_csr(si_layer *L, int64_t rows, int64_t cols, double density) {
    L->storage = SI_STORAGE_CSR;
    L->rows = rows;
    L->cols = cols;
    int64_t cap = (int64_t)(rows * cols * density * 1.02) + rows + 1024;
    if (cap > rows * cols) cap = rows * cols;
    L->csr_ptr = xalloc(sizeof(int64_t) * (size_t)(rows + 1));
    L->csr_val = xalloc(sizeof(float) * (size_t)cap);
    L->csr_col = xalloc(sizeof(int32_t) * (size_t)cap);
    const uint64_t thr = density >= 1.0 ? UINT64_MAX : (uint64_t)(density * 18446744073709551616.0);
    int64_t nnz = 0;
    L->csr_ptr[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            if (density < 1.0 && next_u64() >= thr) continue;
            if (nnz == cap) { fprintf(stderr, "make_csr: capacity\n"); exit(2); }
            L->csr_col[nnz] = (int32_t)c;
            L->csr_val[nnz] = randf();
            nnz++;
        }
        L->csr_ptr[r + 1] = nnz;
    }
    L->nnz = nnz;
    L->csr_col16 = NULL;
    if (cols <= 65536) {
        L->csr_col16 = xalloc(sizeof(uint16_t) * (size_t)(nnz ? nnz : 1));
        for (int64_t k = 0; k < nnz; k++) L->csr_col16[k] = (uint16_t)L->csr_col[k];
    }
}

static void free_csr(si_layer *L) {
    si_mkl_csr_free(L);
    si_free(L->csr_ptr);
    si_free(L->csr_val);
    si_free(L->csr_col);
    si_free(L->csr_col16);
    L->csr_ptr = NULL; L->csr_val = NULL; L->csr_col = NULL; L->csr_col16 = NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef void (*bench_fn)(void *ctx);

/* Median ms of reps runs after one warm-up; flush: write the flush buffer before each. */
static double time_ms(bench_fn fn, void *ctx, int reps, int flush) {
    double t[64];
    if (reps > 64) reps = 64;
    if (reps < 1) reps = 1;
    fn(ctx);
    for (int i = 0; i < reps; i++) {
        if (flush) flush_caches();
        double t0 = omp_get_wtime();
        fn(ctx);
        t[i] = (omp_get_wtime() - t0) * 1e3;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    return t[reps / 2];
}

/* Repeats so that a case takes about budget_ms, between lo and hi. */
static int reps_for(double one_ms, double budget_ms, int lo, int hi) {
    int r = one_ms > 0 ? (int)(budget_ms / one_ms) : hi;
    return r < lo ? lo : r > hi ? hi : r;
}

/* ---- contexts ----------------------------------------------------------------------- */

typedef struct ctx {
    si_layer *L;
    const float *x;
    float *y, *ws;
    int n;
    int64_t ws_floats;
} ctx;

static void run_sgemv(void *p) {
    ctx *c = p;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (MKL_INT)c->L->rows, (MKL_INT)c->L->cols, 1.0f, c->L->w,
                (MKL_INT)c->L->cols, c->x, 1, 0.0f, c->y, 1);
}
static void run_si_gemv(void *p) { ctx *c = p; si_f32_gemv(c->L, c->x, c->y); }
static void run_sgemm(void *p) {
    ctx *c = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->n, (MKL_INT)c->L->rows, (MKL_INT)c->L->cols, 1.0f, c->x,
                (MKL_INT)c->L->cols, c->L->w, (MKL_INT)c->L->cols, 0.0f, c->y, (MKL_INT)c->L->rows);
}
static void run_csrmv(void *p) { ctx *c = p; si_f32_csrmv(c->L, c->x, c->y); }
static void run_mkl_mv(void *p) { ctx *c = p; si_mkl_csrmv(c->L, c->x, c->y); }
static void run_csrmm(void *p) { ctx *c = p; si_f32_csrmm(c->L, c->x, c->n, c->y, c->ws); }
static void run_mkl_mm_cm(void *p) { ctx *c = p; si_mkl_csrmm_colmajor(c->L, c->x, c->n, c->y); }
static void run_mkl_mm(void *p) { ctx *c = p; si_mkl_csrmm(c->L, c->x, c->n, c->y, c->ws); }

/* The runtime's dense conv: im2col rows in chunks of ws_floats / K, then sgemm. */
static void run_dense_conv(void *p) {
    ctx *c = p;
    const si_layer *L = c->L;
    const int64_t P = (int64_t)c->n * L->out_h * L->out_w, K = L->cols, F = L->rows;
    const int pointwise = L->kh == 1 && L->kw == 1 && L->sh == 1 && L->sw == 1 && L->pad_top == 0 && L->pad_left == 0;
    int64_t chunk = c->ws_floats / K;
    if (chunk < 1) chunk = 1;
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        int64_t m = P - p0 < chunk ? P - p0 : chunk;
        const float *a = c->x + p0 * K;
        if (!pointwise) { si_im2col_rows(L, c->x, p0, m, c->ws); a = c->ws; }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (MKL_INT)m, (MKL_INT)F, (MKL_INT)K, 1.0f, a, (MKL_INT)K,
                    L->w, (MKL_INT)K, 0.0f, c->y + p0 * F, (MKL_INT)F);
    }
}
static void run_spconv(void *p) { ctx *c = p; si_f32_spconv(c->L, c->x, c->n, c->y, c->ws); }
static void run_mkl_spconv(void *p) { ctx *c = p; si_mkl_spconv(c->L, c->x, c->n, c->y, c->ws, c->ws_floats); }

/* ---- reporting ---------------------------------------------------------------------- */

#define MAXK 8
typedef struct row {
    double ms[MAXK];
} row;

static void print_breakeven(const char *shape, int nk, const char *const *names, row *rows, double dense_ms) {
    printf("  break-even (%s):", shape);
    for (int k = 0; k < nk; k++) {
        /* densities are listed high to low: walk from the lowest up */
        double be = 0;
        for (int d = ND - 1; d >= 0; d--) {
            if (rows[d].ms[k] < dense_ms) be = densities[d];
            else break;
        }
        if (be > 0) printf("  %s <= %g%%", names[k], be * 100);
        else printf("  %s never (even at 1%%)", names[k]);
    }
    printf("\n");
}

/* ---- FC ----------------------------------------------------------------------------- */

static void bench_fc(const char *name, int64_t rows, int64_t cols, int n) {
    si_layer L;
    memset(&L, 0, sizeof L);
    snprintf(L.name, sizeof L.name, "%s", name);
    L.type = SI_LAYER_DENSE;
    L.rows = rows;
    L.cols = cols;
    L.w = xalloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) L.w[i] = randf();
    float *x = xalloc(sizeof(float) * (size_t)(cols * n)), *y = xalloc(sizeof(float) * (size_t)(rows * n));
    for (int64_t i = 0; i < cols * n; i++) x[i] = randf();
    int64_t own_ws = si_f32_csrmm_ws_floats(&L, n), mkl_ws = si_mkl_csrmm_ws_floats(&L, n);
    float *ws = xalloc(sizeof(float) * (size_t)(own_ws > mkl_ws ? own_ws : mkl_ws));
    ctx c = {&L, x, y, ws, n, 0};
    const double dense_bytes = 4.0 * (double)rows * cols, dense_flop = 2.0 * (double)rows * cols * n;

    printf("\n== FC %s: %lld x %lld, batch %d\n", name, (long long)rows, (long long)cols, n);
    double dense_ms;
    if (n == 1) {
        double t1 = time_ms(run_sgemv, &c, reps_for(dense_bytes / 20e6, 300, 5, 41), 1);
        double t2 = time_ms(run_si_gemv, &c, reps_for(dense_bytes / 40e6, 300, 5, 41), 1);
        printf("  dense cblas_sgemv   %9.3f ms  %6.1f GB/s  %6.1f GFLOP/s\n", t1, dense_bytes / t1 / 1e6, dense_flop / t1 / 1e6);
        printf("  dense si_f32_gemv   %9.3f ms  %6.1f GB/s  %6.1f GFLOP/s\n", t2, dense_bytes / t2 / 1e6, dense_flop / t2 / 1e6);
        dense_ms = t1 < t2 ? t1 : t2;
    } else {
        double t1 = time_ms(run_sgemm, &c, reps_for(dense_flop / 100e6, 500, 3, 21), 1);
        printf("  dense cblas_sgemm   %9.3f ms  %6.1f GFLOP/s\n", t1, dense_flop / t1 / 1e6);
        dense_ms = t1;
    }
    si_free(L.w);
    L.w = NULL;

    const char *names1[] = {"own", "own-portable", "mkl"};
    const char *namesn[] = {"own", "own-portable", "mkl-colmajor", "mkl(rowmaj+T)"};
    const int nk = n == 1 ? 3 : 4;
    const char *const *names = n == 1 ? names1 : namesn;
    row res[ND];
    printf("  %-7s %10s  %-15s %9s %8s %9s %10s %s\n", "density", "nnz", "kernel", "ms", "speedup", "GFLOP/s",
           "dense-eq", n == 1 ? "  GB/s  (warm-L3 ms)" : "");
    for (int d = 0; d < ND; d++) {
        make_csr(&L, rows, cols, densities[d]);
        si_status_t st = si_mkl_csr_prepare(&L);
        if (st != SI_OK) { fprintf(stderr, "%s\n", si_last_error()); exit(2); }
        const double flop = 2.0 * (double)L.nnz * n;
        for (int k = 0; k < nk; k++) {
            bench_fn fn;
            si_sparse_portable_only = k == 1;
            if (n == 1) fn = k < 2 ? run_csrmv : run_mkl_mv;
            else fn = k < 2 ? run_csrmm : k == 2 ? run_mkl_mm_cm : run_mkl_mm;
            double est = n == 1 ? 8.0 * L.nnz / 30e6 : flop / 20e6;
            int reps = reps_for(est, quick ? 100 : 300, 5, quick ? 11 : 31);
            double t = time_ms(fn, &c, reps, 1);
            res[d].ms[k] = t;
            printf("  %6.0f%% %10lld  %-15s %9.3f %7.2fx %9.1f %10.1f", densities[d] * 100, (long long)L.nnz, names[k], t,
                   dense_ms / t, flop / t / 1e6, dense_flop / t / 1e6);
            if (n == 1) {
                double bytes = k < 2 ? (L.csr_col16 ? 6.0 : 8.0) * L.nnz + 8.0 * rows : 8.0 * L.nnz + 4.0 * rows;
                double warm = time_ms(fn, &c, reps, 0);
                printf(" %7.1f  (%.3f)", bytes / t / 1e6, warm);
            }
            printf("\n");
        }
        si_sparse_portable_only = 0;
        free_csr(&L);
    }
    print_breakeven(name, nk, names, res, dense_ms);
    si_free(x);
    si_free(y);
    si_free(ws);
}

/* ---- conv --------------------------------------------------------------------------- */

static void bench_conv(const char *name, int64_t H, int64_t W, int64_t C, int64_t F, int k, int same, int batch) {
    si_layer L;
    memset(&L, 0, sizeof L);
    snprintf(L.name, sizeof L.name, "%s", name);
    L.type = SI_LAYER_CONV2D;
    L.in_h = H; L.in_w = W; L.in_c = C;
    L.kh = L.kw = k; L.sh = L.sw = 1;
    L.out_h = same ? H : H - k + 1;
    L.out_w = same ? W : W - k + 1;
    L.pad_top = L.pad_left = same ? (k - 1) / 2 : 0;
    L.out_c = F;
    L.rows = F;
    L.cols = (int64_t)k * k * C;
    const int64_t K = L.cols, P = (int64_t)batch * L.out_h * L.out_w;
    L.w = xalloc(sizeof(float) * (size_t)(F * K));
    for (int64_t i = 0; i < F * K; i++) L.w[i] = randf();
    float *x = xalloc(sizeof(float) * (size_t)(batch * H * W * C)), *y = xalloc(sizeof(float) * (size_t)(P * F));
    for (int64_t i = 0; i < batch * H * W * C; i++) x[i] = randf();
    /* the runtime's im2col scratch: 2M floats, at least 64 rows */
    int64_t dws = (INT64_C(2) << 20);
    if (dws < 64 * K) dws = 64 * K;
    int64_t sws = si_f32_spconv_ws_floats(&L, batch);
    float *ws = xalloc(sizeof(float) * (size_t)(dws > sws ? dws : sws));
    ctx c = {&L, x, y, ws, batch, dws};
    const double dense_flop = 2.0 * (double)F * K * P;

    printf("\n== conv %s: %lldx%lldx%lld -> %lld filters %dx%d %s, batch %d (K = %lld, %lld positions, %.2f GFLOP dense)\n",
           name, (long long)H, (long long)W, (long long)C, (long long)F, k, k, same ? "same" : "valid", batch,
           (long long)K, (long long)P, dense_flop / 1e9);
    double dense_ms = time_ms(run_dense_conv, &c, reps_for(dense_flop / 150e6, quick ? 300 : 1000, 3, 21), 0);
    printf("  dense im2col+sgemm  %9.3f ms  %6.1f GFLOP/s\n", dense_ms, dense_flop / dense_ms / 1e6);
    si_free(L.w);
    L.w = NULL;

    const char *names[] = {"own", "own-portable", "mkl"};
    row res[ND];
    printf("  %-7s %10s  %-15s %9s %8s %9s %10s\n", "density", "nnz", "kernel", "ms", "speedup", "GFLOP/s", "dense-eq");
    for (int d = 0; d < ND; d++) {
        make_csr(&L, F, K, densities[d]);
        si_status_t st = si_mkl_csr_prepare(&L);
        if (st != SI_OK) { fprintf(stderr, "%s\n", si_last_error()); exit(2); }
        const double flop = 2.0 * (double)L.nnz * P;
        for (int kk = 0; kk < 3; kk++) {
            si_sparse_portable_only = kk == 1;
            bench_fn fn = kk < 2 ? run_spconv : run_mkl_spconv;
            double est = flop / 20e6 + dense_ms * 0.05;
            int reps = reps_for(est, quick ? 200 : 600, 3, 15);
            double t = time_ms(fn, &c, reps, 0);
            res[d].ms[kk] = t;
            printf("  %6.0f%% %10lld  %-15s %9.3f %7.2fx %9.1f %10.1f\n", densities[d] * 100, (long long)L.nnz,
                   names[kk], t, dense_ms / t, flop / t / 1e6, dense_flop / t / 1e6);
        }
        si_sparse_portable_only = 0;
        free_csr(&L);
    }
    print_breakeven(name, 3, names, res, dense_ms);
    si_free(x);
    si_free(y);
    si_free(ws);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    quick = argc > 2 && strcmp(argv[2], "quick") == 0;
    si_init();
    si_set_num_threads(2);
    mkl_set_num_threads(2);
    omp_set_num_threads(2);
    flush_buf = xalloc(FLUSH_BYTES);
    memset(flush_buf, 1, FLUSH_BYTES);
    printf("sparse kernels vs dense MKL: %d threads, MKL %d.%d, AVX-512 path %s\n", si_num_threads(),
           __INTEL_MKL__, __INTEL_MKL_MINOR__, __builtin_cpu_supports("avx512f") ? "available" : "not available");
    const int all = strcmp(what, "all") == 0;
    if (all || strcmp(what, "fc") == 0 || strcmp(what, "fc1") == 0) {
        bench_fc("vgg19_fc6", 4096, 25088, 1);
        bench_fc("vgg19_fc7", 4096, 4096, 1);
        bench_fc("vgg19_fc8", 1000, 4096, 1);
        bench_fc("lenet_fc1", 500, 800, 1);
    }
    if (all || strcmp(what, "fc") == 0 || strcmp(what, "fc64") == 0) {
        bench_fc("vgg19_fc6", 4096, 25088, 64);
        bench_fc("vgg19_fc7", 4096, 4096, 64);
        bench_fc("lenet_fc1", 500, 800, 64);
    }
    if (all || strcmp(what, "conv") == 0 || strcmp(what, "conv1") == 0) {
        bench_conv("vgg19_conv1_2", 224, 224, 64, 64, 3, 1, 1);
        bench_conv("vgg19_conv3_x", 56, 56, 256, 256, 3, 1, 1);
        bench_conv("vgg19_conv4_x", 28, 28, 512, 512, 3, 1, 1);
        bench_conv("vgg19_conv5_x", 14, 14, 512, 512, 3, 1, 1);
        bench_conv("lenet_conv2", 12, 12, 20, 50, 5, 0, 1);
    }
    if (all || strcmp(what, "conv") == 0 || strcmp(what, "convb") == 0) {
        bench_conv("vgg19_conv3_x", 56, 56, 256, 256, 3, 1, 8);
        bench_conv("vgg19_conv5_x", 14, 14, 512, 512, 3, 1, 64);
        bench_conv("lenet_conv2", 12, 12, 20, 50, 5, 0, 64);
    }
    si_free(flush_buf);
    return 0;
}
