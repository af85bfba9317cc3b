/* MKL's int8 GEMM (cblas_gemm_s8u8s32) against its sgemm on VGG19's convolution shapes at
 * batch 1 (issue 12: "measure it before you use it"; on AMD it was slower than sgemm). The
 * runtime does not call it: its own int8 GEMM (ops/si_igemm.c, ops/si_igemm_amx.c) is timed
 * beside it by bench/igemm_bench.c and bench/igemm_amx_bench.c.
 *
 *   source kernels/tests/mkl_env.sh
 *   cc -O2 -fopenmp -I"$MKL_INC" bench/mkl_int8_bench.c -L"$MKL_LIB" -l:libmkl_rt.so.3 \
 *      -Wl,-rpath,"$MKL_LIB" -o /tmp/mkl_int8_bench && MKL_THREADING_LAYER=GNU /tmp/mkl_int8_bench
 *
 * Prints the median of 15 runs of each, interleaved, and checks one int8 sum exactly. */
#include <mkl.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(void) {
    static const int shapes[][3] = {{50176, 64, 576}, {12544, 128, 1152}, {3136, 256, 2304},
                                    {784, 512, 4608}, {196, 512, 4608}};
    printf("MKL %d.%d, %d threads\n", __INTEL_MKL__, __INTEL_MKL_MINOR__, omp_get_max_threads());
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        int8_t *W = malloc((size_t)n * k);
        uint8_t *A = malloc((size_t)m * k);
        int32_t *C = malloc((size_t)m * n * 4);
        float *Af = malloc((size_t)m * k * 4), *Wf = malloc((size_t)n * k * 4), *Cf = malloc((size_t)m * n * 4);
        for (long i = 0; i < (long)n * k; i++) Wf[i] = W[i] = (int8_t)(rand() % 255 - 127);
        for (long i = 0; i < (long)m * k; i++) Af[i] = A[i] = (uint8_t)(rand() % 256);
        const MKL_INT32 co = 0;
        double t8[15], t32[15];
        for (int r = 0; r < 15; r++) {
            double t = omp_get_wtime();
            /* C^T (n x m, column-major) = W (s8, n x k) x A^T (u8, k x m): C row-major m x n */
            cblas_gemm_s8u8s32(CblasColMajor, CblasTrans, CblasNoTrans, CblasFixOffset, n, m, k, 1.0f, W, k, 0, A, k,
                               0, 0.0f, C, n, &co);
            t8[r] = omp_get_wtime() - t;
            t = omp_get_wtime();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, Af, k, Wf, k, 0.0f, Cf, n);
            t32[r] = omp_get_wtime() - t;
        }
        qsort(t8, 15, sizeof(double), cmp);
        qsort(t32, 15, sizeof(double), cmp);
        long long ref = 0;
        for (int t = 0; t < k; t++) ref += (long long)A[t] * W[t];
        printf("%6d x %4d x %4d: s8u8s32 %8.3f ms  sgemm %8.3f ms  sgemm / s8u8s32 %5.2fx  %s\n", m, n, k, t8[7] * 1e3,
               t32[7] * 1e3, t32[7] / t8[7], ref == C[0] ? "exact" : "WRONG");
        free(W); free(A); free(C); free(Af); free(Wf); free(Cf);
    }
    return 0;
}
