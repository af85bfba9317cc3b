/* The table of algorithms: every way to compute a conv2d or dense layer, one entry each.
 * The planner times the entries that apply to a layer, the run loop calls the chosen one,
 * contexts size their scratch from it, and `info` lists it. Adding an algorithm is one
 * file (conv/ or fc/, with its reference kernel beside it) and one line here. */
#include "si_internal.h"

#include <string.h>

extern const si_algo si_algo_conv_gemm, si_algo_conv_gemm_packed, si_algo_conv_sparse, si_algo_conv_sparse32, si_algo_conv_sparse_tiled, si_algo_conv_sparse_planar,
    si_algo_conv_sparse_batch, si_algo_conv_mkl, si_algo_conv_winograd, si_algo_conv_igemm, si_algo_conv_igemm_amx, si_algo_conv_sparse_i8, si_algo_conv_winograd_dq,
    si_algo_conv_sparse_batch_i8, si_algo_conv_winograd_i16,
    si_algo_conv_winograd3_i16, si_algo_conv_winograd4_i16, si_algo_conv_winograd4_i16_local;
extern const si_algo si_algo_fc_gemv, si_algo_fc_sgemm, si_algo_fc_gemm_packed, si_algo_fc_csrmv, si_algo_fc_csrmv_gather, si_algo_fc_csrmm,
    si_algo_fc_mkl, si_algo_fc_igemm, si_algo_fc_igemm_amx, si_algo_fc_csrmv_i8, si_algo_fc_csrmv_i8_avx2,
    si_algo_fc_csrmv_i8_nogather, si_algo_fc_csrmm_i8, si_algo_fc_csrmm_f32_i8, si_algo_fc_skip_i8, si_algo_fc_skip;

const si_algo *const si_algos[] = {
    &si_algo_conv_gemm,    /* conv/si_conv_gemm.c: im2col + MKL sgemm */
    &si_algo_conv_gemm_packed, /* conv/si_conv_gemm_packed.c: im2col + the own GEMM on packed filters */
    &si_algo_conv_winograd, /* conv/si_conv_winograd.c: Winograd F(4x4, 3x3), 3x3 stride 1 */
    &si_algo_conv_sparse,  /* conv/si_conv_sparse.c: the runtime's sparse direct convolution, 64-wide tiles */
    &si_algo_conv_sparse32, /* conv/si_conv_sparse.c: the same, 32-wide tiles (large K) */
    &si_algo_conv_sparse_tiled, /* conv/si_conv_sparse_tiled.c: the same, tile blocked for L1 */
    &si_algo_conv_sparse_planar, /* conv/si_conv_sparse_planar.c: the same on padded input planes (stride 1) */
    &si_algo_conv_sparse_batch, /* conv/si_conv_sparse_batch.c: the same with the samples innermost (batch > 1) */
    &si_algo_conv_mkl,     /* conv/si_conv_mkl.c: MKL sparse BLAS on im2col (reference) */
    &si_algo_fc_gemv,      /* fc/si_fc_gemv.c: dense GEMV at memory bandwidth (batch 1) */
    &si_algo_fc_sgemm,     /* fc/si_fc_sgemm.c: MKL sgemm (batch > 1) */
    &si_algo_fc_gemm_packed, /* fc/si_fc_gemm_packed.c: the own GEMM on packed weights (batch > 1) */
    &si_algo_fc_csrmv,     /* fc/si_fc_csr.c: own CSR mv (batch 1) */
    &si_algo_fc_csrmv_gather, /* fc/si_fc_csr.c: the same, x gathered by vector loads */
    &si_algo_fc_csrmm,     /* fc/si_fc_csr.c: own CSR mm (batch > 1) */
    &si_algo_fc_mkl,       /* fc/si_fc_mkl.c: MKL sparse BLAS mv / mm (reference) */
    &si_algo_fc_skip,      /* fc/si_fc_skip.c: dense at batch 1, reading only the non-zero inputs' weights */
    /* int8 layers only (si_algo.int8): */
    &si_algo_conv_igemm,   /* conv/si_conv_i8.c: uint8 im2col + the int8 GEMM on packed filters */
    &si_algo_conv_igemm_amx, /* conv/si_conv_i8.c: the same on AMX tiles (where the CPU and OS have them) */
    &si_algo_conv_sparse_i8, /* conv/si_conv_i8.c: uint8 im2col + the int8 CSR kernel */
    &si_algo_conv_winograd_dq, /* conv/si_conv_i8.c: Winograd in float32 on the dequantized layer (no VNNI) */
    &si_algo_conv_sparse_batch_i8, /* conv/si_conv_i8.c: exact int8 on the fp32 samples-innermost kernel (batch > 1) */
    &si_algo_conv_winograd_i16, /* conv/si_conv_wino_i16.c: exact Winograd F(2x2, 3x3) in int16 (no VNNI) */
    &si_algo_conv_winograd3_i16, /* conv/si_conv_wino_i16.c: the same, F(3x3, 3x3) */
    &si_algo_conv_winograd4_i16, /* conv/si_conv_wino_i16.c: the same, F(4x4, 3x3), where the sums stay below 2^25 */
    &si_algo_conv_winograd4_i16_local, /* conv/si_conv_wino_i16.c: F(4x4) in per-thread groups of tiles, U from cache */
    &si_algo_fc_igemm,     /* fc/si_fc_i8.c: the int8 GEMM (batch 1: its GEMV) */
    &si_algo_fc_igemm_amx, /* fc/si_fc_i8.c: the same on AMX tiles (batch > 1) */
    &si_algo_fc_csrmv_i8,  /* fc/si_fc_i8.c: int8 CSR mv (batch 1) */
    &si_algo_fc_csrmv_i8_avx2, /* fc/si_fc_i8.c: the same by the AVX2 gather loop (where the ISA is AVX-512) */
    &si_algo_fc_csrmv_i8_nogather, /* fc/si_fc_i8.c: the same without gathers (AVX2) */
    &si_algo_fc_csrmm_i8,  /* fc/si_fc_i8.c: int8 CSR mm (batch > 1) */
    &si_algo_fc_csrmm_f32_i8, /* fc/si_fc_i8.c: exact int8 on the fp32 csrmm (batch > 1) */
    &si_algo_fc_skip_i8,   /* fc/si_fc_skip.c: int8 at batch 1, reading only the non-zero inputs' weights */
    NULL,
};
/* the planner and the layers keep per-entry arrays of SI_MAX_ALGOS */
_Static_assert(sizeof si_algos / sizeof si_algos[0] <= SI_MAX_ALGOS + 1, "more registry entries than SI_MAX_ALGOS");

int si_algo_index(const si_algo *a) {
    for (int i = 0; si_algos[i]; i++)
        if (si_algos[i] == a) return i;
    return -1;
}

const si_algo *si_algo_find(const char *name) {
    for (int i = 0; si_algos[i]; i++)
        if (strcmp(si_algos[i]->name, name) == 0) return si_algos[i];
    return NULL;
}
