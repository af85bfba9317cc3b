/* si_f32_gemv (kernels/fc/si_fc_gemv.c) and si_read_bandwidth_gbs
 * (kernels/util/si_bandwidth.c) against a double-precision reference.
 *
 *   bash kernels/tests/run_gemv.sh      (builds this -O2 and under ASan + UBSan, runs both)
 *
 * Shapes: rows 1, 3, 4, 5, 17, 64, 4096 x cols 1, 7, 15, 16, 17, 33, 100, 800, 25088 (odd and
 * non-multiples of 16), with 1 and 2 threads, for each ISA variant the CPU can run (the
 * kernel table's gemv_rows chosen by si_dispatch_select: avx512, avx2, portable; the slower
 * ones skip shapes over 4M weights); the direct row kernels si_k->gemv_rows on partial row
 * ranges; the double-accumulating reference si_f32_gemv_ref; rows
 * that start at unaligned addresses (W offset by one float); NaN guards past the end of W,
 * x and y (no read of them changes y, no write past y); and that every row's result is
 * right when rows do not split evenly among threads. Tolerance:
 * |y - ref| <= 1e-5 * sum_k |w_rk x_k| + 1e-30.
 *
 * Closing line: "N passed, M failed"; exit status 1 if any failed.
 */
#define _POSIX_C_SOURCE 200809L
#include "si_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mkl.h>
#include <omp.h>


static int passed, failed;

static void check(int ok, const char *fmt, ...) SI_PRINTF(2, 3);
static void check(int ok, const char *fmt, ...) {
    if (ok) { passed++; return; }
    failed++;
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static unsigned rng_state = 12345u;
static float frand(void) { /* uniform [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / (float)(1u << 23) - 1.0f;
}

#define GUARD 32 /* floats of NaN after W and x, and after y */

enum { GEMV = 0, GEMV_REF = 1, GEMV_ROWS = 2 };
static const char *const KERNEL[] = {"si_f32_gemv", "si_f32_gemv_ref", "gemv_rows"};

/* One case: rows x cols, nt threads, W placed `offset` floats after a 64-byte boundary
 * (the layer contract says aligned; an offset checks the kernel does not rely on aligned
 * rows, which it cannot when cols % 16 != 0), by the kernel `kernel`: si_f32_gemv on the
 * selected ISA variant, the reference, or the variant's row kernel si_k->gemv_rows alone on
 * rows [r0, r1) (the others must stay untouched). Returns 1 if it passed. */
static int run_case_k(int kernel, int64_t rows, int64_t cols, int nt, int offset, int64_t r0, int64_t r1) {
    const size_t nw = (size_t)(rows * cols);
    float *wbuf = si_alloc((nw + (size_t)offset + GUARD) * sizeof(float));
    float *xbuf = si_alloc(((size_t)cols + GUARD) * sizeof(float));
    float *y = si_alloc(((size_t)rows + GUARD) * sizeof(float));
    double *ref = malloc((size_t)rows * sizeof(double)), *mag = malloc((size_t)rows * sizeof(double));
    if (!wbuf || !xbuf || !y || !ref || !mag) {
        printf("out of memory for %lld x %lld\n", (long long)rows, (long long)cols);
        exit(2);
    }
    float *w = wbuf + offset, *x = xbuf;
    for (size_t i = 0; i < nw; i++) w[i] = frand();
    for (int64_t k = 0; k < cols; k++) x[k] = frand();
    for (int g = 0; g < GUARD; g++) w[nw + (size_t)g] = x[cols + g] = y[rows + g] = NAN;
    for (int64_t r = 0; r < rows; r++) y[r] = NAN; /* every output must be written */
    for (int64_t r = 0; r < rows; r++) {
        double acc = 0, m = 0;
        for (int64_t k = 0; k < cols; k++) {
            acc += (double)w[r * cols + k] * x[k];
            m += fabs((double)w[r * cols + k] * x[k]);
        }
        ref[r] = acc;
        mag[r] = m;
    }

    si_layer L;
    memset(&L, 0, sizeof L);
    snprintf(L.name, sizeof L.name, "fc_%lldx%lld", (long long)rows, (long long)cols);
    L.type = SI_LAYER_DENSE;
    L.storage = SI_STORAGE_DENSE;
    L.rows = rows;
    L.cols = cols;
    L.w = w;
    si_set_num_threads(nt);
    if (kernel == GEMV) si_f32_gemv(&L, x, y);
    else if (kernel == GEMV_REF) si_f32_gemv_ref(&L, x, y);
    else si_k->gemv_rows(w, cols, x, y, r0, r1);
    if (kernel != GEMV_ROWS) r0 = 0, r1 = rows;

    int64_t bad = -1, untouched_bad = -1;
    double worst = 0;
    for (int64_t r = r0; r < r1; r++) {
        double err = fabs((double)y[r] - ref[r]), tol = 1e-5 * mag[r] + 1e-30;
        if (!(err <= tol)) { bad = r; worst = err; break; }
    }
    for (int64_t r = 0; r < rows && untouched_bad < 0; r++)
        if ((r < r0 || r >= r1) && !isnan(y[r])) untouched_bad = r;
    int guard_ok = 1;
    for (int g = 0; g < GUARD; g++) guard_ok &= isnan(y[rows + g]) != 0;
    int ok = bad < 0 && untouched_bad < 0 && guard_ok;
    const char *isa = kernel == GEMV_REF ? "reference" : si_isa_str(si_isa_active());
    char range[64] = "";
    if (kernel == GEMV_ROWS) snprintf(range, sizeof range, " rows [%lld, %lld)", (long long)r0, (long long)r1);
    if (bad >= 0)
        check(0, "%s [isa %s] %lld x %lld%s, %d thread(s), W offset %d floats: row %lld = %.9g, want %.9g "
              "(|err| %.3g, sum|w x| %.3g)", KERNEL[kernel], isa, (long long)rows, (long long)cols, range, nt, offset,
              (long long)bad, (double)y[bad], ref[bad], worst, mag[bad]);
    else if (untouched_bad >= 0)
        check(0, "%s [isa %s] %lld x %lld%s, %d thread(s), W offset %d floats: wrote row %lld outside its range",
              KERNEL[kernel], isa, (long long)rows, (long long)cols, range, nt, offset, (long long)untouched_bad);
    else
        check(guard_ok, "%s [isa %s] %lld x %lld%s, %d thread(s), W offset %d floats: wrote past y", KERNEL[kernel],
              isa, (long long)rows, (long long)cols, range, nt, offset);
    si_free(wbuf);
    si_free(xbuf);
    si_free(y);
    free(ref);
    free(mag);
    return ok;
}

static int run_case(int64_t rows, int64_t cols, int nt, int offset, int reference) {
    return run_case_k(reference ? GEMV_REF : GEMV, rows, cols, nt, offset, 0, rows);
}

int main(int argc, char **argv) {
    /* --quick: the sanitizer run; the big shapes (4096 x 25088 is 411 MB) only at 1 thread */
    const int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    si_init();
    const int64_t rows_list[] = {1, 3, 4, 5, 17, 64, 4096};
    const int64_t cols_list[] = {1, 7, 15, 16, 17, 33, 100, 800, 25088};
    const int nts[] = {1, 2};
    /* every ISA variant this CPU can run, the best first (it gets every shape) */
    const si_isa best = si_isa_detected();
    for (int v = (int)best; v >= (int)SI_ISA_PORTABLE; v--) {
        const si_isa isa = (si_isa)v;
        si_dispatch_select(isa);
        printf("-- variant %s\n", si_isa_str(isa));
        const int fast = isa == best; /* the best variant gets every shape, the others the smaller ones */
        for (size_t ti = 0; ti < 2; ti++)
            for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++)
                for (size_t ci = 0; ci < sizeof cols_list / sizeof cols_list[0]; ci++) {
                    int64_t rows = rows_list[ri], cols = cols_list[ci];
                    if ((quick || !fast) && rows * cols > (INT64_C(1) << 22) && nts[ti] == 2) continue;
                    if (!fast && rows * cols > (INT64_C(1) << 22)) continue;
                    run_case(rows, cols, nts[ti], 0, 0);
                }
        /* rows not 64-byte aligned (cols % 16 != 0 makes that the norm), odd thread splits */
        run_case(17, 25088, 2, 1, 0);
        run_case(4099, 129, 2, 3, 0);
        run_case(1001, 4096, 2, 5, 0);
        run_case(9, 25, 2, 7, 0);
        run_case(2, 1000, 2, 0, 0);  /* more threads than row groups of four */
        run_case(500, 800, 2, 0, 0); /* LeNet fc1 */
        run_case(1000, 4096, 2, 0, 0); /* VGG fc8 */
        /* the row kernel alone on ranges that start and end off the groups of four */
        run_case_k(GEMV_ROWS, 11, 33, 1, 0, 1, 10);
        run_case_k(GEMV_ROWS, 13, 17, 1, 1, 3, 12);
        run_case_k(GEMV_ROWS, 9, 100, 1, 0, 5, 6);
        run_case_k(GEMV_ROWS, 21, 15, 1, 2, 2, 21);
        run_case_k(GEMV_ROWS, 6, 7, 1, 0, 4, 4);  /* empty range: nothing written */
    }
    si_dispatch_select(best);
    /* the double-accumulating reference */
    run_case(17, 100, 1, 0, 1);
    run_case(3, 25088, 2, 1, 1);
    /* zero columns: y = 0 */
    {
        float y[3] = {NAN, NAN, NAN}, x[1] = {0}, w[1] = {0};
        si_layer L;
        memset(&L, 0, sizeof L);
        L.rows = 3;
        L.cols = 0;
        L.w = w;
        si_f32_gemv(&L, x, y);
        check(y[0] == 0 && y[1] == 0 && y[2] == 0, "3 x 0: y = 0");
    }
    /* the bandwidth probe: positive, finite, and reads of a small buffer work too */
    si_set_num_threads(2);
    double bw = si_read_bandwidth_gbs((size_t)8 << 20, 3);
    check(bw > 0 && isfinite(bw), "si_read_bandwidth_gbs(8 MB, 3) = %g", bw);
    double bw_odd = si_read_bandwidth_gbs(1000 * 64 + 4, 1);
    check(bw_odd > 0 && isfinite(bw_odd), "si_read_bandwidth_gbs(64004 bytes, 1) = %g", bw_odd);
    check(si_read_bandwidth_gbs(16, 3) < 0, "si_read_bandwidth_gbs(16 bytes) is an error");
    check(si_read_bandwidth_gbs(1 << 20, 0) < 0, "si_read_bandwidth_gbs(repeats 0) is an error");
    check(si_read_bandwidth_gbs(SIZE_MAX - 8, 1) == -1.0, "si_read_bandwidth_gbs(SIZE_MAX - 8) fails to allocate");
    si_set_num_threads(1);
    double bw1 = si_read_bandwidth_gbs((size_t)8 << 20, 3);
    check(bw1 > 0 && isfinite(bw1), "si_read_bandwidth_gbs(8 MB, 3), 1 thread = %g", bw1);

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
