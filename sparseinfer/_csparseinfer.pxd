# Declarations of the public C API (kernels/sparseinfer.h), once.
from libc.stdint cimport int64_t

cdef extern from "sparseinfer.h" nogil:
    ctypedef enum si_status_t:
        SI_OK
    ctypedef enum si_layer_type:
        pass
    ctypedef enum si_storage:
        pass
    ctypedef struct si_model:
        pass
    ctypedef struct si_context:
        pass
    ctypedef enum si_exec_policy:
        SI_POLICY_AUTO
        SI_POLICY_DENSE
        SI_POLICY_SPARSE
    ctypedef enum si_sparse_impl:
        SI_SPARSE_AUTO
        SI_SPARSE_OWN
        SI_SPARSE_MKL
    ctypedef enum si_plan_mode:
        SI_PLAN_MEASURE
        SI_PLAN_NO_MEASURE
        SI_PLAN_REMEASURE
    ctypedef struct si_load_options:
        size_t struct_size
        si_exec_policy policy
        si_sparse_impl sparse_impl
        si_plan_mode plan
        int plan_batch
        const char *cache_path
        int64_t max_memory_bytes
        int max_batch
    ctypedef enum si_exec:
        pass
    ctypedef struct si_layer_info:
        size_t struct_size
        const char *name
        si_layer_type type
        int64_t out_shape[3]
        int64_t rows
        int64_t cols
        int64_t params
        int64_t nnz
        si_storage storage
        int64_t weight_bytes
        int64_t memory_bytes
        si_exec exec_batch1
        si_exec exec_batchn
        const char *why
        const char *algo_batch1
        const char *algo_batchn
        int plan_batch1
        int plan_batchn
        int64_t plan_positions1
        int64_t plan_positionsn
        const char *dtype
        double in_scale
        double out_scale
        int in_zero_point
        int out_zero_point

    const char *si_status_str(si_status_t status)
    const char *si_last_error()
    const char *si_version()
    si_status_t si_model_load_file(const char *path, si_model **out)
    si_status_t si_model_load_buffer(const void *data, size_t size, si_model **out)
    si_status_t si_model_load_file_ex(const char *path, const si_load_options *options, si_model **out)
    si_status_t si_model_load_buffer_ex(const void *data, size_t size, const si_load_options *options,
                                      si_model **out)
    double si_util_read_bandwidth(size_t bytes, int repeats)
    void si_model_free(si_model *model)
    si_status_t si_model_input_shape(const si_model *model, int64_t hwc[3])
    int64_t si_model_input_size(const si_model *model)
    int64_t si_model_output_size(const si_model *model)
    const char *si_model_manifest(const si_model *model)
    int si_model_num_layers(const si_model *model)
    int si_model_layer_candidates(const si_model *model, int index, int regime, const char **names,
                                  double *seconds, int max)
    si_status_t si_model_plan_stats(const si_model *model, double *seconds, int *measured, int *cached)
    const char *si_cpu_name()
    const char *si_plan_cache_file()
    const char *si_isa_name()
    si_status_t si_set_isa(const char *name)
    const char *si_int8_isa_name()
    si_status_t si_model_layer_info(const si_model *model, int index, si_layer_info *info)
    si_status_t si_context_create(const si_model *model, int max_batch, si_context **out)
    void si_context_free(si_context *ctx)
    si_status_t si_run(si_context *ctx, const float *input, int batch, float *output)
    si_status_t si_run_trace(si_context *ctx, const float *input, int batch, float **layer_outputs)
    si_status_t si_context_set_profile(si_context *ctx, double *layer_seconds)
    int si_set_num_threads(int n)
    void si_set_reference_kernels(int on)
