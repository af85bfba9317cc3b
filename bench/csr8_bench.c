/* The int8 CSR kernels (csr/si_csr_i8.c) against the runtime's own fp32 CSR kernels on VGG19's
 * fc6 shape (4096 x 25088) at 4% and 9% density:
 *  - batch 1: fp32 fc_csrmv and fc_csrmv_gather (fc/si_fc_csr.c, their prepared column-blocked
 *    uint16 copy) against si_i8_csrmv (uint16 columns, uint8 output), the latter at every
 *    ISA variant up to the active one (portable is the scalar loop), then the loops of the
 *    other int8 entries the active ISA has (si_i8_csrmv_loop): fc_csrmv_i8_avx2 (the AVX2
 *    gather loop, under AVX-512) and fc_csrmv_i8_nogather (AVX2 without gathers);
 *  - batch 64: si_f32_csrmm against si_i8_csrmm (uint8 output).
 * Each int8 csrmv variant's output is checked against si_i8_csrmv_ref after its timing (exit
 * status 1 on a difference), so a figure never comes from a wrong kernel.
 * Medians (and minima: the machine may be shared) of repeats in one run, ratio = fp32 ms /
 * int8 ms, at batch 1 against the faster of the two fp32 entries. The ISA is the active one
 * (SPARSEINFER_ISA caps it); threads: OpenMP's default (OMP_NUM_THREADS).
 *
 * Build and run (from the repository root; MKL as in kernels/tests/mkl_env.sh):
 *   source kernels/tests/mkl_env.sh
 *   cc -std=c11 -O3 -fopenmp -Ikernels -I"$MKL_INC" $(find kernels -path kernels/tests -prune -o \
 *      -name 'si_*.c' -print) bench/csr8_bench.c -L"$MKL_LIB" -l:libmkl_rt.so.3 \
 *      -Wl,-rpath,"$MKL_LIB" -lm -lz -o /tmp/csr8_bench
 *   /tmp/csr8_bench [repeats]        SPARSEINFER_ISA=avx2 /tmp/csr8_bench
 *   CSR8_COLD_MB=1024 /tmp/csr8_bench   cold caches: before every timed run (and the warm-up)
 *     the threads read a buffer of that many MB (not timed), so the weights come from DRAM as
 *     they do in a whole-network inference, where the other layers' weights evict them; set it
 *     above the last-level cache (this VM reports 480 MB of L3).
 */
#include "si_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const si_algo si_algo_fc_csrmv, si_algo_fc_csrmv_gather; /* fc/si_fc_csr.c */

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t next_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static double uniform(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

static void *xalloc(size_t bytes) {
    void *p = si_alloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory (%zu bytes)\n", bytes); exit(2); }
    return p;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef void (*run_fn)(void *ctx);

static double last_min_ms; /* the fastest repeat of the last median_ms: the machine may be shared */

static size_t cold_bytes;        /* CSR8_COLD_MB: read this much before each run */
static volatile uint64_t *cold_buf;
static uint64_t cold_sink;

static void evict(void) {
    if (!cold_bytes) return;
    const int64_t n = (int64_t)(cold_bytes / 8);
    uint64_t s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (int64_t i = 0; i < n; i += 8) s += cold_buf[i];
    cold_sink += s;
}

static double median_ms(run_fn fn, void *ctx, int reps) {
    double t[256];
    if (reps > 256) reps = 256;
    evict();
    fn(ctx); /* warm-up */
    for (int i = 0; i < reps; i++) {
        evict();
        double t0 = si_now();
        fn(ctx);
        t[i] = (si_now() - t0) * 1e3;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    last_min_ms = t[0];
    return t[reps / 2];
}

typedef struct bench {
    si_layer L;
    void *mv_state, *mvg_state;
    si_csr8_view A;
    int8_t *val8;
    uint16_t *col16;
    si_requant rq;
    float *x, *X, *y, *Y, *ws;
    uint8_t *x8, *X8, *y8, *Y8;
    void *ws8;
    int batch;
    si_i8_mv_loop loop;
} bench;

static void run_f32_mv(void *p) { bench *b = p; si_algo_fc_csrmv.run(&b->L, b->mv_state, b->x, 1, b->y, NULL); }
static void run_f32_mvg(void *p) {
    bench *b = p;
    si_algo_fc_csrmv_gather.run(&b->L, b->mvg_state, b->x, 1, b->y, NULL);
}
static void run_i8_mv(void *p) { bench *b = p; si_i8_csrmv_loop(b->loop, &b->A, b->x8, &b->rq, b->y8); }
static void run_f32_mm(void *p) { bench *b = p; si_f32_csrmm(&b->L, b->X, b->batch, b->Y, b->ws); }
static void run_i8_mm(void *p) {
    bench *b = p;
    si_i8_csrmm(&b->A, b->X8, b->A.cols, b->batch, &b->rq, b->Y8, b->A.rows, b->ws8);
}

int main(int argc, char **argv) {
    int wrong = 0;
    const int reps = argc > 1 ? atoi(argv[1]) : 41;
    si_init();
    const char *cold = getenv("CSR8_COLD_MB");
    if (cold && atol(cold) > 0) {
        cold_bytes = (size_t)atol(cold) << 20;
        cold_buf = xalloc(cold_bytes);
        memset((void *)cold_buf, 1, cold_bytes);
        printf("# cold caches: %zu MB read before every run\n", cold_bytes >> 20);
    }
    const si_isa active = si_isa_active();
    const int64_t rows = 4096, cols = 25088;
    const int batch = 64;
    printf("# csr8_bench: fc6 %lld x %lld, ISA %s, %d threads, medians of %d\n", (long long)rows, (long long)cols,
           si_isa_str(active), si_num_threads(), reps);
    /* ratio: the best fp32 kernel of the pair over the int8 one, on medians and on minima */
    printf("%-7s %-5s %-28s %9s %9s %9s %9s\n", "density", "batch", "kernel", "med ms", "min ms", "ratio", "ratio(min)");
    static const double dens[2] = {0.04, 0.09};
    for (int di = 0; di < 2; di++) {
        bench b;
        memset(&b, 0, sizeof b);
        si_layer *L = &b.L;
        snprintf(L->name, sizeof L->name, "fc6");
        L->type = SI_LAYER_DENSE;
        L->storage = SI_STORAGE_CSR;
        L->rows = rows;
        L->cols = cols;
        const int64_t cap = (int64_t)(rows * cols * dens[di] * 1.1) + 1024;
        L->csr_ptr = xalloc(sizeof(int64_t) * (size_t)(rows + 1));
        L->csr_col = xalloc(sizeof(int32_t) * (size_t)cap);
        L->csr_val = xalloc(sizeof(float) * (size_t)cap);
        b.val8 = xalloc((size_t)cap);
        b.col16 = xalloc(sizeof(uint16_t) * (size_t)cap);
        int64_t nnz = 0;
        L->csr_ptr[0] = 0;
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = 0; c < cols && nnz < cap; c++) {
                if (uniform() >= dens[di]) continue;
                int8_t v = (int8_t)((int)(next_u64() % 255) - 127);
                L->csr_col[nnz] = (int32_t)c;
                b.col16[nnz] = (uint16_t)c;
                b.val8[nnz] = v;
                L->csr_val[nnz] = (float)v / 127.0f;
                nnz++;
            }
            L->csr_ptr[r + 1] = nnz;
        }
        L->nnz = nnz;
        b.A.val = b.val8;
        b.A.col = L->csr_col;
        b.A.col16 = b.col16;
        b.A.ptr = L->csr_ptr;
        b.A.rows = rows;
        b.A.cols = cols;
        float *mul = xalloc(sizeof(float) * (size_t)rows), *add = xalloc(sizeof(float) * (size_t)rows);
        for (int64_t r = 0; r < rows; r++) { mul[r] = 1e-5f; add[r] = 0.1f; }
        b.rq.mul = mul;
        b.rq.add = add;
        b.rq.act = SI_ACT_RELU;
        b.rq.out_u8 = 1;
        b.rq.inv_scale = 20.0f;
        b.rq.zero = 0;
        b.batch = batch;
        b.x = xalloc(sizeof(float) * (size_t)cols);
        b.X = xalloc(sizeof(float) * (size_t)(cols * batch));
        b.x8 = xalloc((size_t)cols);
        b.X8 = xalloc((size_t)(cols * batch));
        for (int64_t i = 0; i < cols * batch; i++) {
            b.X8[i] = (uint8_t)(next_u64() % 256);
            b.X[i] = b.X8[i] / 255.0f;
        }
        memcpy(b.x8, b.X8, (size_t)cols);
        memcpy(b.x, b.X, sizeof(float) * (size_t)cols);
        b.y = xalloc(sizeof(float) * (size_t)rows);
        b.Y = xalloc(sizeof(float) * (size_t)(rows * batch));
        b.y8 = xalloc((size_t)rows);
        b.Y8 = xalloc((size_t)(rows * batch));
        b.ws = xalloc(sizeof(float) * (size_t)si_f32_csrmm_ws_floats(L, batch));
        b.ws8 = xalloc((size_t)si_i8_csrmm_ws_bytes(&b.A, batch));
        if (si_algo_fc_csrmv.prepare(L, &b.mv_state) != SI_OK || si_algo_fc_csrmv_gather.prepare(L, &b.mvg_state) != SI_OK) {
            fprintf(stderr, "prepare failed: %s\n", si_last_error());
            return 1;
        }
        char dn[16];
        snprintf(dn, sizeof dn, "%.0f%%", dens[di] * 100);
        double mv = median_ms(run_f32_mv, &b, reps), mv_min = last_min_ms;
        const double mvg = median_ms(run_f32_mvg, &b, reps), mvg_min = last_min_ms;
        printf("%-7s %-5d %-28s %9.3f %9.3f\n", dn, 1, "fp32 fc_csrmv", mv, mv_min);
        printf("%-7s %-5d %-28s %9.3f %9.3f\n", dn, 1, "fp32 fc_csrmv_gather", mvg, mvg_min);
        uint8_t *yref8 = xalloc((size_t)rows);
        si_i8_csrmv_ref(&b.A, b.x8, &b.rq, yref8);
        if (mvg < mv) mv = mvg;
        if (mvg_min < mv_min) mv_min = mvg_min;
        /* fc_csrmv_i8 at each ISA up to the active one, then the other entries' loops */
        static const struct { si_i8_mv_loop loop; const char *name; } others[] = {
            {SI_I8_MV_AVX2, "int8 fc_csrmv_i8_avx2"}, {SI_I8_MV_NOGATHER, "int8 fc_csrmv_i8_nogather"}};
        const int nisa = (int)active + 1, nrun = nisa + (int)(sizeof others / sizeof others[0]);
        for (int i = 0; i < nrun; i++) {
            char name[64];
            if (i < nisa) {
                si_dispatch_select((si_isa)i);
                b.loop = SI_I8_MV_ACTIVE;
                snprintf(name, sizeof name, "int8 fc_csrmv_i8 (%s)", si_isa_str((si_isa)i));
            } else {
                si_dispatch_select(active);
                b.loop = others[i - nisa].loop;
                if (!si_i8_csrmv_has(b.loop)) continue;
                snprintf(name, sizeof name, "%s", others[i - nisa].name);
            }
            memset(b.y8, 0xCD, (size_t)rows);
            const double t = median_ms(run_i8_mv, &b, reps);
            printf("%-7s %-5d %-28s %9.3f %9.3f %8.2fx %8.2fx\n", dn, 1, name, t, last_min_ms, mv / t,
                   mv_min / last_min_ms);
            if (memcmp(b.y8, yref8, (size_t)rows)) {
                printf("MISMATCH: %s differs from si_i8_csrmv_ref\n", name);
                wrong = 1;
            }
        }
        si_dispatch_select(active);
        const int mreps = reps / 4 > 5 ? reps / 4 : 5;
        const double fmm = median_ms(run_f32_mm, &b, mreps), fmm_min = last_min_ms;
        const double imm = median_ms(run_i8_mm, &b, mreps);
        printf("%-7s %-5d %-28s %9.3f %9.3f\n", dn, batch, "fp32 csrmm", fmm, fmm_min);
        printf("%-7s %-5d %-28s %9.3f %9.3f %8.2fx %8.2fx\n", dn, batch, "int8 csrmm", imm, last_min_ms, fmm / imm,
               fmm_min / last_min_ms);
        fflush(stdout);
        si_algo_fc_csrmv.release(b.mv_state);
        si_algo_fc_csrmv_gather.release(b.mvg_state);
        si_free(L->csr_ptr); si_free(L->csr_col); si_free(L->csr_val); si_free(b.val8); si_free(b.col16);
        si_free(mul); si_free(add); si_free(b.x); si_free(b.X); si_free(b.x8); si_free(b.X8);
        si_free(yref8);
        si_free(b.y); si_free(b.Y); si_free(b.y8); si_free(b.Y8); si_free(b.ws); si_free(b.ws8);
    }
    return wrong;
}
