/* Dense batch-1 fully connected layers against the machine's read bandwidth, in one run.
 *
 *   bash bench/run_bandwidth_bench.sh         (builds this with kernels/si_*.c and MKL)
 *   bandwidth_bench [--quick]
 *
 * 1. Read bandwidth: si_read_bandwidth_gbs (a streaming read of a 1 GiB buffer, median of
 *    repeats) with 1 and 2 threads.
 * 2. For VGG19 fc6 (4096x25088, 411 MB), fc7 (4096x4096, 67 MB), fc8 (1000x4096, 16 MB) and
 *    LeNet fc1 (500x800, 1.6 MB): MKL cblas_sgemv (mkl_set_num_threads 1 and 2) and the
 *    runtime's si_f32_gemv (same thread counts), timed interleaved on the same W and x together
 *    with a plain streaming read (si_stream_read) of a separate buffer of W's size: median
 *    ms, effective GB/s (4*rows*cols bytes / time), % of that adjacent read (same threads,
 *    same cache state: the fair yardstick on a machine whose bandwidth drifts, as this shared
 *    VM's does, 15-37 GB/s from minute to minute) and % of the 2-thread 1 GiB read bandwidth.
 *    - warm: calls back to back; what is left of W in the caches is reused.
 *    - cold: before every timed call a 256 MB buffer is read by all threads, which evicts W
 *      and x from L2 and L3 (32 MB), so W comes from memory.
 *    fc6 is far larger than the caches either way; fc8 and LeNet fc1 fit in L3 (and LeNet in
 *    the two L2s), so their warm figures are cache bandwidth, not memory bandwidth.
 * 3. si_f32_gemv's result is checked against MKL's: max |diff| / max |y| must be < 1e-4.
 *
 * Exit status 1 if a check fails or memory cannot be allocated.
 */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "si_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <mkl.h>
#include <omp.h>

double si_read_bandwidth_gbs(size_t bytes, int repeats);
float si_stream_read(const float *p, size_t n);

static volatile float sink;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define FLUSH_FLOATS ((size_t)64 << 20) /* 256 MB */
static float *flush_buf;

static void flush_caches(int nt) {
    float s = 0;
#pragma omp parallel for num_threads(nt) reduction(+ : s) schedule(static)
    for (size_t i = 0; i < FLUSH_FLOATS; i += 16) s += flush_buf[i]; /* one load per line is enough */
    sink = s;
}

static void fill(float *p, size_t n, unsigned seed) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
        p[i] = (float)(h & 0xFFFF) / 32768.0f - 1.0f;
    }
}

typedef struct shape { const char *name; int64_t rows, cols; } shape;

int main(int argc, char **argv) {
    const int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    si_init();
    const int max_nt = omp_get_num_procs();
    int nts[2] = {1, max_nt >= 2 ? 2 : 1};
    const int n_nt = max_nt >= 2 ? 2 : 1;

    printf("bandwidth_bench: %d logical CPUs, MKL %d.%d, %s\n", max_nt, __INTEL_MKL__, __INTEL_MKL_MINOR__,
           quick ? "quick" : "full");
    {
        MKLVersion v;
        mkl_get_version(&v);
        printf("MKL: %s %s\n", v.Processor, v.Build);
    }

    double bw[3] = {0, 0, 0};
    const int bw_rep = quick ? 5 : 11;
    for (int i = 0; i < n_nt; i++) {
        si_set_num_threads(nts[i]);
        bw[nts[i]] = si_read_bandwidth_gbs((size_t)1 << 30, bw_rep);
        if (bw[nts[i]] < 0) { fprintf(stderr, "read bandwidth: allocation failed\n"); return 1; }
        printf("read bandwidth, 1 GiB buffer, %d thread%s: %.1f GB/s (median of %d)\n", nts[i], nts[i] > 1 ? "s" : "",
               bw[nts[i]], bw_rep);
    }
    const double bw_machine = bw[nts[n_nt - 1]];

    flush_buf = si_alloc(FLUSH_FLOATS * sizeof(float));
    if (!flush_buf) { fprintf(stderr, "out of memory\n"); return 1; }
    fill(flush_buf, FLUSH_FLOATS, 7u);

    const shape shapes[] = {
        {"vgg19 fc6", 4096, 25088}, {"vgg19 fc7", 4096, 4096}, {"vgg19 fc8", 1000, 4096}, {"lenet fc1", 500, 800}};
    int failed = 0;

    printf("\nGB/s = 4*rows*cols bytes / median time. read = si_stream_read of a separate buffer of the same size,\n"
           "timed interleaved with the two gemvs (same threads, same cache state). %%rd = of that read;\n"
           "%%bw = of the %d-thread 1 GiB read bandwidth above (%.1f GB/s).\n",
           nts[n_nt - 1], bw_machine);
    printf("%-10s %5s %-4s %2s | %8s %6s | %8s %6s %4s %4s | %8s %6s %4s %4s | %6s\n", "layer", "MB", "mode", "t",
           "read ms", "GB/s", "mkl ms", "GB/s", "%rd", "%bw", "si ms", "GB/s", "%rd", "%bw", "si/mkl");

    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *S = &shapes[s];
        const size_t nw = (size_t)S->rows * (size_t)S->cols;
        si_layer L;
        memset(&L, 0, sizeof L);
        L.type = SI_LAYER_DENSE;
        L.storage = SI_STORAGE_DENSE;
        L.rows = S->rows;
        L.cols = S->cols;
        L.w = si_alloc(nw * sizeof(float));
        float *x = si_alloc((size_t)S->cols * sizeof(float));
        float *y_si = si_alloc((size_t)S->rows * sizeof(float));
        float *y_mkl = si_alloc((size_t)S->rows * sizeof(float));
        float *rbuf = si_alloc(nw * sizeof(float));
        if (!L.w || !x || !y_si || !y_mkl || !rbuf) { fprintf(stderr, "out of memory\n"); return 1; }
        fill(L.w, nw, 11u + (unsigned)s);
        fill(x, (size_t)S->cols, 101u + (unsigned)s);
        fill(rbuf, nw, 211u + (unsigned)s);
        const double bytes = 4.0 * (double)nw;
        /* about 1 s of calls per shape, mode and contender at full speed, 15 to 301 repeats */
        int reps = (int)(0.25 / (bytes / 40e9));
        if (reps > 301) reps = 301;
        if (reps < 15) reps = 15;
        if (quick) reps = reps / 5 < 5 ? 5 : reps / 5;
        reps |= 1;
        double *t_mkl = malloc((size_t)reps * sizeof(double)), *t_si = malloc((size_t)reps * sizeof(double));
        double *t_rd = malloc((size_t)reps * sizeof(double));
        if (!t_mkl || !t_si || !t_rd) { fprintf(stderr, "out of memory\n"); return 1; }

        for (int ti = 0; ti < n_nt; ti++) {
            const int nt = nts[ti];
            si_set_num_threads(nt);
            mkl_set_num_threads(nt);
            for (int cold = 0; cold < 2; cold++) {
                for (int r = -2; r < reps; r++) { /* two untimed rounds first */
                    for (int i = 0; i < 3; i++) {
                        const int which = (i + r + 3) % 3; /* rotate the order every repeat */
                        if (cold) flush_caches(nt);
                        double t0 = omp_get_wtime();
                        if (which == 0) sink = si_stream_read(rbuf, nw);
                        else if (which == 1)
                            cblas_sgemv(CblasRowMajor, CblasNoTrans, (MKL_INT)S->rows, (MKL_INT)S->cols, 1.0f, L.w,
                                        (MKL_INT)S->cols, x, 1, 0.0f, y_mkl, 1);
                        else si_f32_gemv(&L, x, y_si);
                        double dt = omp_get_wtime() - t0;
                        if (r >= 0) (which == 0 ? t_rd : which == 1 ? t_mkl : t_si)[r] = dt;
                    }
                }
                double rs = median(t_rd, reps), ms = median(t_mkl, reps), ss = median(t_si, reps);
                double gr = bytes / rs * 1e-9, gm = bytes / ms * 1e-9, gs = bytes / ss * 1e-9;
                printf("%-10s %5.1f %-4s %2d | %8.4f %6.1f | %8.4f %6.1f %3.0f%% %3.0f%% | %8.4f %6.1f %3.0f%% %3.0f%% | "
                       "%5.2fx\n",
                       S->name, bytes / 1e6, cold ? "cold" : "warm", nt, rs * 1e3, gr, ms * 1e3, gm, 100 * gm / gr,
                       100 * gm / bw_machine, ss * 1e3, gs, 100 * gs / gr, 100 * gs / bw_machine, ms / ss);
                fflush(stdout);
            }
            double dmax = 0, ymax = 0;
            for (int64_t i = 0; i < S->rows; i++) {
                dmax = fmax(dmax, fabs((double)y_si[i] - y_mkl[i]));
                ymax = fmax(ymax, fabs((double)y_mkl[i]));
            }
            if (!(dmax <= 1e-4 * ymax)) {
                printf("CHECK FAILED: %s, %d threads: max|si - mkl| = %g, max|mkl| = %g\n", S->name, nt, dmax, ymax);
                failed = 1;
            }
        }
        free(t_mkl);
        free(t_si);
        free(t_rd);
        si_free(rbuf);
        si_free(L.w);
        si_free(x);
        si_free(y_si);
        si_free(y_mkl);
    }
    si_free(flush_buf);

    /* the same read again at the end: did the machine's bandwidth drift during the run? */
    si_set_num_threads(nts[n_nt - 1]);
    double bw_end = si_read_bandwidth_gbs((size_t)1 << 30, bw_rep);
    printf("\nread bandwidth again at the end, %d threads: %.1f GB/s\n", nts[n_nt - 1], bw_end);
    printf("si_f32_gemv vs MKL checks: %s\n", failed ? "FAILED" : "ok (max|diff| <= 1e-4 max|y| for every shape)");
    return failed;
}
