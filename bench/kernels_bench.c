/* Microbenchmark of the sparse kernels against the dense ones on VGG19 / LeNet-5 shapes.
 *
 *   bash bench/run_kernels_bench.sh [fc|fc1|fc64|conv|conv1|convb|small|all] [quick]
 *   bash bench/run_kernels_bench.sh quick        (= small quick: one small FC, one small conv)
 *
 * The kernels are the runtime's algorithm registry (si_algos[], kernels/si_registry.c), timed
 * through their si_algo interface (prepare, ws_floats, run; bias NULL and linear activation, so
 * run is the linear part only): every entry of the layer's type that applies in the batch's
 * regime (batch 1 or larger), so new entries are picked up without changes here.
 *   FC batch 1:  dense cblas_sgemv (MKL, for reference) and fc_gemv; sparse fc_csrmv and
 *                fc_mkl_sparse (MKL inspector-executor mv);
 *   FC batch 64: dense fc_sgemm; sparse fc_csrmm and fc_mkl_sparse (row-major mm with
 *                transposes);
 *   conv:        dense conv_gemm (im2col + MKL sgemm, the runtime's chunks); sparse
 *                conv_sparse_direct (64-wide tiles), conv_sparse_direct32, conv_sparse_planar
 *                (stride 1) and conv_mkl_sparse (MKL on im2col chunks).
 * Every entry runs under every ISA variant of the runtime's kernel table this CPU has
 * (si_dispatch_select, portable up to si_isa_detected()), except the MKL sparse references
 * (reference_only), which run under the detected one only. The ISA column is the table in use
 * during the run; MKL's own calls (sgemv, sgemm, sparse BLAS) pick their code path themselves,
 * so for them it only changes the runtime's parts (im2col, transposes are MKL's).
 *
 * For every shape and density (100, 50, 30, 20, 10, 5, 4, 2, 1 %) with a uniformly random
 * CSR pattern, after one warm-up, the median of repeats. Dense timings do not depend on the
 * density and are measured once per shape (per ISA).
 *
 * Caches: for FC layers, before every timed repeat a 96 MB buffer is written, so the L3 (32 MB
 * here) holds none of the weights, as in a real forward pass where the other layers' weights
 * and activations pass through it in between. (Warm-cache FC batch-1 figures are printed too.)
 *
 * Columns: ms (median), speedup vs the best dense (any kernel, any ISA), GFLOP/s real
 * (2 nnz n / t), dense-equivalent GFLOP/s (2 rows cols n / t), and for FC at batch 1 GB/s of
 * weight bytes touched (dense 4 rows cols; fc_csrmv 6 nnz + 8 rows per column block of 4096;
 * MKL 8 nnz + 4 rows). Break-even: the highest density at which the kernel is faster than the
 * best dense at that density and at every lower one.
 */
#include "si_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mkl.h>
#include <omp.h>

static const double densities[] = {1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.04, 0.02, 0.01};
#define ND ((int)(sizeof densities / sizeof densities[0]))

static int quick;
static si_isa isa_max;      /* si_isa_detected(): the variants timed are SI_ISA_PORTABLE..isa_max */
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
}

static void free_csr(si_layer *L) {
    si_free(L->csr_ptr);
    si_free(L->csr_val);
    si_free(L->csr_col);
    L->csr_ptr = NULL; L->csr_val = NULL; L->csr_col = NULL;
    L->nnz = 0;
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
    const si_layer *L;
    const si_algo *a;     /* the registry entry run_entry times */
    const void *state;    /* its prepared state (or NULL) */
    const float *x;
    float *y, *ws;
    int n;
} ctx;

static void run_sgemv(void *p) {
    ctx *c = p;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (MKL_INT)c->L->rows, (MKL_INT)c->L->cols, 1.0f, c->L->w,
                (MKL_INT)c->L->cols, c->x, 1, 0.0f, c->y, 1);
}
static void run_entry(void *p) {
    ctx *c = p;
    c->a->run(c->L, c->state, c->x, c->n, c->y, c->ws);
}

/* ---- the registry ------------------------------------------------------------------- */

/* The entries for a layer of L's type at this batch that read `form`, in registry order. */
static int entries_for(const si_layer *L, int batch, unsigned form, const si_algo **out, int max) {
    int n = 0;
    for (int i = 0; si_algos[i] && n < max; i++) {
        const si_algo *a = si_algos[i];
        if (a->type == L->type && (a->forms & form) && a->applies(L, batch > 1)) out[n++] = a;
    }
    return n;
}

/* Reference-only entries (MKL's sparse BLAS) run under the detected ISA only. */
static si_isa isa_first(const si_algo *a) { return a->reference_only ? isa_max : SI_ISA_PORTABLE; }

static void *prepare_or_die(const si_algo *a, si_layer *L) {
    void *st = NULL;
    if (a->prepare && a->prepare(L, &st) != SI_OK) {
        fprintf(stderr, "%s: %s.prepare: %s\n", L->name, a->name, si_last_error());
        exit(2);
    }
    return st;
}

static void release(const si_algo *a, void *st) {
    if (st && a->release) a->release(st);
}

/* Scratch for one entry at this batch (at least one float). */
static float *entry_ws(const si_algo *a, const si_layer *L, const void *st, int batch) {
    int64_t f = a->ws_floats ? a->ws_floats(L, st, batch) : 0;
    return xalloc(sizeof(float) * (size_t)(f > 0 ? f : 1));
}

/* Weight bytes one FC batch-1 run reads. */
static double weight_bytes(const si_algo *a, const si_layer *L) {
    if (!a || (a->forms & SI_FORM_DENSE)) return 4.0 * (double)L->rows * (double)L->cols;
    if (strcmp(a->name, "fc_csrmv") == 0) { /* uint16 columns; row pointers per column block */
        int64_t blocks = L->cols > SI_CSR_BLOCK_COLS ? (L->cols + SI_CSR_BLOCK_COLS - 1) / SI_CSR_BLOCK_COLS : 1;
        return 6.0 * (double)L->nnz + 8.0 * (double)L->rows * (double)blocks;
    }
    if (a->family == SI_EXEC_SPARSE_MKL) return 8.0 * (double)L->nnz + 4.0 * (double)L->rows;
    return 8.0 * (double)L->nnz + 8.0 * (double)L->rows;
}

/* ---- reporting ---------------------------------------------------------------------- */

#define MAXK 48   /* (sparse entry, ISA) columns of one shape */
typedef struct row {
    double ms[MAXK];
} row;

static void print_breakeven(const char *shape, int nk, char names[][48], row *rows, double dense_ms) {
    printf("  break-even (%s, vs best dense %.3f ms):\n", shape, dense_ms);
    for (int k = 0; k < nk; k++) {
        /* densities are listed high to low: walk from the lowest up */
        double be = 0;
        for (int d = ND - 1; d >= 0; d--) {
            if (rows[d].ms[k] < dense_ms) be = densities[d];
            else break;
        }
        if (be > 0) printf("    %-30s <= %g%%\n", names[k], be * 100);
        else printf("    %-30s never (even at 1%%)\n", names[k]);
    }
}

static void print_dense(const char *kernel, si_isa isa, double ms, double bytes, double flop, int with_bytes) {
    printf("  dense %-22s %-8s %9.3f ms", kernel, si_isa_str(isa), ms);
    if (with_bytes) printf("  %6.1f GB/s", bytes / ms / 1e6);
    printf("  %6.1f GFLOP/s\n", flop / ms / 1e6);
}

/* Times every dense entry (L->w set) under each ISA; returns the best median. */
static double bench_dense(si_layer *L, const float *x, float *y, int batch, double est_ms, double budget_ms, int lo,
                          int hi, int flush, int with_bytes) {
    const si_algo *dense[SI_MAX_ALGOS];
    const int nd = entries_for(L, batch, SI_FORM_DENSE, dense, SI_MAX_ALGOS);
    const double flop = 2.0 * (double)L->rows * (double)L->cols * batch, bytes = weight_bytes(NULL, L);
    double best = INFINITY;
    if (L->type == SI_LAYER_DENSE && batch == 1) { /* MKL's sgemv, for reference */
        ctx c = {L, NULL, NULL, x, y, NULL, batch};
        double t = time_ms(run_sgemv, &c, reps_for(est_ms * 2, budget_ms, lo, hi), flush);
        print_dense("cblas_sgemv", si_isa_active(), t, bytes, flop, with_bytes);
        if (t < best) best = t;
    }
    for (int e = 0; e < nd; e++) {
        void *st = prepare_or_die(dense[e], L);
        float *ws = entry_ws(dense[e], L, st, batch);
        ctx c = {L, dense[e], st, x, y, ws, batch};
        for (si_isa isa = isa_first(dense[e]); isa <= isa_max; isa++) {
            si_dispatch_select(isa);
            double t = time_ms(run_entry, &c, reps_for(est_ms, budget_ms, lo, hi), flush);
            print_dense(dense[e]->name, isa, t, bytes, flop, with_bytes);
            if (t < best) best = t;
        }
        si_dispatch_select(isa_max);
        si_free(ws);
        release(dense[e], st);
    }
    return best;
}

/* Every sparse entry under each ISA at every density; fills res and names, returns the
 * number of kernel columns. positions: output positions per sample (FC: 1). */
static int bench_sparse(si_layer *L, int64_t rows, int64_t cols, const float *x, float *y, int batch,
                        int64_t positions, double dense_ms, double dense_flop, row *res, char names[][48]) {
    const si_algo *sparse[SI_MAX_ALGOS];
    const int ns = entries_for(L, batch, SI_FORM_CSR, sparse, SI_MAX_ALGOS);
    const int fc1 = L->type == SI_LAYER_DENSE && batch == 1;
    const double P = (double)batch * (double)positions;
    int nk = 0;
    printf("  %-7s %10s  %-22s %-8s %9s %8s %9s %10s%s\n", "density", "nnz", "kernel", "isa", "ms", "speedup",
           "GFLOP/s", "dense-eq", fc1 ? "    GB/s  (warm-L3 ms)" : "");
    for (int d = 0; d < ND; d++) {
        make_csr(L, rows, cols, densities[d]);
        const double flop = 2.0 * (double)L->nnz * P;
        int k = 0;
        for (int e = 0; e < ns; e++) {
            const si_algo *a = sparse[e];
            void *st = prepare_or_die(a, L);
            float *ws = entry_ws(a, L, st, batch);
            ctx c = {L, a, st, x, y, ws, batch};
            for (si_isa isa = isa_first(a); isa <= isa_max; isa++, k++) {
                if (k >= MAXK) { fprintf(stderr, "more than %d kernel columns\n", MAXK); exit(2); }
                if (d == 0) snprintf(names[k], 48, "%s/%s", a->name, si_isa_str(isa));
                si_dispatch_select(isa);
                double t;
                if (L->type == SI_LAYER_DENSE) {
                    double est = batch == 1 ? 8.0 * L->nnz / 30e6 : flop / 20e6;
                    t = time_ms(run_entry, &c, reps_for(est, quick ? 100 : 300, 5, quick ? 11 : 31), 1);
                } else {
                    double est = flop / 20e6 + dense_ms * 0.05;
                    t = time_ms(run_entry, &c, reps_for(est, quick ? 200 : 600, 3, 15), 0);
                }
                res[d].ms[k] = t;
                printf("  %6.0f%% %10lld  %-22s %-8s %9.3f %7.2fx %9.1f %10.1f", densities[d] * 100, (long long)L->nnz,
                       a->name, si_isa_str(isa), t, dense_ms / t, flop / t / 1e6, dense_flop / t / 1e6);
                if (fc1) {
                    double est = 8.0 * L->nnz / 30e6;
                    double warm = time_ms(run_entry, &c, reps_for(est, quick ? 100 : 300, 5, quick ? 11 : 31), 0);
                    printf(" %7.1f  (%.3f)", weight_bytes(a, L) / t / 1e6, warm);
                }
                printf("\n");
            }
            si_dispatch_select(isa_max);
            si_free(ws);
            release(a, st);
        }
        nk = k;
        free_csr(L);
    }
    return nk;
}

/* ---- FC ----------------------------------------------------------------------------- */

static void bench_fc(const char *name, int64_t rows, int64_t cols, int n) {
    si_layer L;
    memset(&L, 0, sizeof L);
    snprintf(L.name, sizeof L.name, "%s", name);
    L.type = SI_LAYER_DENSE;
    L.act = SI_ACT_LINEAR;
    L.bias = NULL;
    L.in_h = L.in_w = 1; L.in_c = cols;
    L.out_h = L.out_w = 1; L.out_c = rows;
    L.rows = rows;
    L.cols = cols;
    L.storage = SI_STORAGE_DENSE;
    L.w = xalloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) L.w[i] = randf();
    float *x = xalloc(sizeof(float) * (size_t)(cols * n)), *y = xalloc(sizeof(float) * (size_t)(rows * n));
    for (int64_t i = 0; i < cols * n; i++) x[i] = randf();
    const double dense_bytes = 4.0 * (double)rows * cols, dense_flop = 2.0 * (double)rows * cols * n;

    printf("\n== FC %s: %lld x %lld, batch %d\n", name, (long long)rows, (long long)cols, n);
    double dense_ms = n == 1 ? bench_dense(&L, x, y, n, dense_bytes / 40e6, 300, 5, 41, 1, 1)
                             : bench_dense(&L, x, y, n, dense_flop / 100e6, 500, 3, 21, 1, 0);
    si_free(L.w);
    L.w = NULL;

    static row res[ND];
    static char names[MAXK][48];
    int nk = bench_sparse(&L, rows, cols, x, y, n, 1, dense_ms, dense_flop, res, names);
    print_breakeven(name, nk, names, res, dense_ms);
    si_free(x);
    si_free(y);
}

/* ---- conv --------------------------------------------------------------------------- */

static void bench_conv(const char *name, int64_t H, int64_t W, int64_t C, int64_t F, int k, int same, int batch) {
    si_layer L;
    memset(&L, 0, sizeof L);
    snprintf(L.name, sizeof L.name, "%s", name);
    L.type = SI_LAYER_CONV2D;
    L.act = SI_ACT_LINEAR;
    L.bias = NULL;
    L.in_h = H; L.in_w = W; L.in_c = C;
    L.kh = L.kw = k; L.sh = L.sw = 1;
    L.out_h = same ? H : H - k + 1;
    L.out_w = same ? W : W - k + 1;
    L.pad_top = L.pad_left = same ? (k - 1) / 2 : 0;
    L.out_c = F;
    L.rows = F;
    L.cols = (int64_t)k * k * C;
    L.storage = SI_STORAGE_DENSE;
    const int64_t K = L.cols, positions = L.out_h * L.out_w, P = (int64_t)batch * positions;
    L.w = xalloc(sizeof(float) * (size_t)(F * K));
    for (int64_t i = 0; i < F * K; i++) L.w[i] = randf();
    float *x = xalloc(sizeof(float) * (size_t)(batch * H * W * C)), *y = xalloc(sizeof(float) * (size_t)(P * F));
    for (int64_t i = 0; i < batch * H * W * C; i++) x[i] = randf();
    const double dense_flop = 2.0 * (double)F * K * P;

    printf("\n== conv %s: %lldx%lldx%lld -> %lld filters %dx%d %s, batch %d (K = %lld, %lld positions, %.2f GFLOP dense)\n",
           name, (long long)H, (long long)W, (long long)C, (long long)F, k, k, same ? "same" : "valid", batch,
           (long long)K, (long long)P, dense_flop / 1e9);
    double dense_ms = bench_dense(&L, x, y, batch, dense_flop / 150e6, quick ? 300 : 1000, 3, 21, 0, 0);
    si_free(L.w);
    L.w = NULL;

    static row res[ND];
    static char names[MAXK][48];
    int nk = bench_sparse(&L, F, K, x, y, batch, positions, dense_ms, dense_flop, res, names);
    print_breakeven(name, nk, names, res, dense_ms);
    si_free(x);
    si_free(y);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    quick = argc > 2 && strcmp(argv[2], "quick") == 0;
    if (strcmp(what, "quick") == 0) { what = "small"; quick = 1; }
    si_init();
    si_set_num_threads(2);
    mkl_set_num_threads(2);
    omp_set_num_threads(2);
    isa_max = si_isa_detected();
    si_dispatch_select(isa_max);
    flush_buf = xalloc(FLUSH_BYTES);
    memset(flush_buf, 1, FLUSH_BYTES);
    printf("CPU: %s\n", si_cpu_name());
    printf("ISA: %s detected; variants timed: portable", si_isa_str(isa_max));
    for (si_isa isa = SI_ISA_PORTABLE + 1; isa <= isa_max; isa++) printf(", %s", si_isa_str(isa));
    printf(" (MKL sparse references: %s only)\n", si_isa_str(isa_max));
    printf("sparse kernels vs dense: %d threads, MKL %d.%d, registry entries:", si_num_threads(), __INTEL_MKL__,
           __INTEL_MKL_MINOR__);
    for (int i = 0; si_algos[i]; i++) printf(" %s", si_algos[i]->name);
    printf("%s\n", quick ? "  [quick]" : "");
    const int all = strcmp(what, "all") == 0;
    int ran = 0;
    if (all || strcmp(what, "fc") == 0 || strcmp(what, "fc1") == 0) {
        bench_fc("vgg19_fc6", 4096, 25088, 1);
        bench_fc("vgg19_fc7", 4096, 4096, 1);
        bench_fc("vgg19_fc8", 1000, 4096, 1);
        bench_fc("lenet_fc1", 500, 800, 1);
        ran = 1;
    }
    if (all || strcmp(what, "fc") == 0 || strcmp(what, "fc64") == 0) {
        bench_fc("vgg19_fc6", 4096, 25088, 64);
        bench_fc("vgg19_fc7", 4096, 4096, 64);
        bench_fc("lenet_fc1", 500, 800, 64);
        ran = 1;
    }
    if (all || strcmp(what, "conv") == 0 || strcmp(what, "conv1") == 0) {
        bench_conv("vgg19_conv1_2", 224, 224, 64, 64, 3, 1, 1);
        bench_conv("vgg19_conv3_x", 56, 56, 256, 256, 3, 1, 1);
        bench_conv("vgg19_conv4_x", 28, 28, 512, 512, 3, 1, 1);
        bench_conv("vgg19_conv5_x", 14, 14, 512, 512, 3, 1, 1);
        bench_conv("lenet_conv2", 12, 12, 20, 50, 5, 0, 1);
        ran = 1;
    }
    if (all || strcmp(what, "conv") == 0 || strcmp(what, "convb") == 0) {
        bench_conv("vgg19_conv3_x", 56, 56, 256, 256, 3, 1, 8);
        bench_conv("vgg19_conv5_x", 14, 14, 512, 512, 3, 1, 64);
        bench_conv("lenet_conv2", 12, 12, 20, 50, 5, 0, 64);
        ran = 1;
    }
    if (strcmp(what, "small") == 0) { /* one small FC and one small conv: a check that it all runs */
        bench_fc("lenet_fc1", 500, 800, 1);
        bench_conv("lenet_conv2", 12, 12, 20, 50, 5, 0, 1);
        ran = 1;
    }
    si_free(flush_buf);
    if (!ran) {
        fprintf(stderr, "unknown mode '%s': fc, fc1, fc64, conv, conv1, convb, small, all or quick\n", what);
        return 2;
    }
    return 0;
}
