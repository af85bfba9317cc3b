/* The per-ISA kernel table, chosen once: at start-up (si_init) from the CPU and the
 * SPARSEINFER_ISA cap, or again by si_set_isa(). The hot loops call through si_k and never
 * ask the CPU what it is (XNNPACK's init-config pattern). Changing the ISA while another
 * thread runs a model is not supported. */
#include "si_internal.h"

#define TABLE(ISA, SUFFIX)                                                                     \
    static const si_kernel_table TABLE_##SUFFIX = {                                           \
        ISA,                    si_csr_panel_##SUFFIX,   si_csr_planar_##SUFFIX, si_csr_batch_##SUFFIX, si_tile_pool_##SUFFIX, si_wino4_in_##SUFFIX, si_wino4_out_##SUFFIX, si_csr_mv_rows_##SUFFIX, si_csr_mv_gather_##SUFFIX,             \
        si_gemv_rows_##SUFFIX,  si_im2col_rows_##SUFFIX, si_patches_t_##SUFFIX,               \
        si_maxpool_rows_##SUFFIX, si_bias_act_rows_##SUFFIX, si_transpose_##SUFFIX,                                  \
    };
TABLE(SI_ISA_PORTABLE, portable)
TABLE(SI_ISA_AVX2, avx2)
TABLE(SI_ISA_AVX512, avx512)

const si_kernel_table *si_k = &TABLE_portable;

void si_dispatch_select(si_isa isa) {
    si_k = isa >= SI_ISA_AVX512 ? &TABLE_avx512 : isa == SI_ISA_AVX2 ? &TABLE_avx2 : &TABLE_portable;
}

si_isa si_isa_active(void) { return si_k->isa; }
