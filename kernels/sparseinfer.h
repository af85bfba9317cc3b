/* sparseinfer.h: the public C API of the sparseinfer runtime.
 *
 * Conventions
 *   - Every name starts with si_ / SI_. Handles are opaque.
 *   - Every call that can fail returns an si_status_t (SI_OK == 0) and writes results
 *     through out-pointers, which are left untouched on failure. si_status_str() names a
 *     code; si_last_error() gives the detail of the last failure on the calling thread
 *     ("layer fc1: indices[12] = 25100 >= cols 25088").
 *   - Threads. An si_model is immutable once loaded and may be shared by any number of
 *     threads: si_run and every si_model_* query only read it. That includes the MKL
 *     sparse handles a model may hold (SI_SPARSE_MKL): they are created and optimised
 *     during the load and afterwards only passed to MKL's executors, which do not modify
 *     them. An si_context holds the scratch memory of one run and belongs to one thread at
 *     a time: give each thread its own context (kernels/tests/test_threads.c runs 4 such
 *     threads on one model under ThreadSanitizer). Loads may run concurrently. The
 *     process-wide switches (si_set_isa, si_set_reference_kernels) must not be called
 *     while another thread loads or runs. si_set_num_threads and si_last_error are per
 *     thread. All planning happens at load and context creation; si_run allocates nothing.
 *   - Structs the caller passes (si_load_options, si_layer_info) begin with struct_size,
 *     which the caller sets to sizeof the struct as it was compiled: a library newer than
 *     the program reads or writes only that many bytes (fields past them take their
 *     defaults), and an older library refuses non-zero fields it does not know.
 *   - Tensors are float32, NHWC, C-contiguous. Every model file is treated as untrusted;
 *     a load's memory is bounded (si_load_options.max_memory_bytes).
 *
 * Example
 *
 *   si_model *m; si_context *ctx;
 *   if (si_model_load_file("lenet5.npz", &m) != SI_OK) {    // or _ex, si_load_options o = {.struct_size = sizeof o}
 *       fprintf(stderr, "%s\n", si_last_error()); return 1;
 *   }
 *   si_context_create(m, 1, &ctx);                    // up to 1 sample per si_run call
 *   int64_t in_n = si_model_input_size(m), out_n = si_model_output_size(m);
 *   float *x = calloc(in_n, sizeof *x), *y = malloc(out_n * sizeof *y);
 *   if (si_run(ctx, x, 1, y) == SI_OK) printf("p[0] = %g\n", y[0]);
 *   si_context_free(ctx); si_model_free(m); free(x); free(y);
 */
#ifndef SPARSEINFER_H
#define SPARSEINFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SI_BUILDING_LIBRARY) && defined(__GNUC__)
#define SI_API __attribute__((visibility("default")))
#else
#define SI_API
#endif

#define SI_VERSION_MAJOR 0
#define SI_VERSION_MINOR 5
/* The newest model file format version this library reads (docs/format.md). */
#define SI_FORMAT_VERSION_MAJOR 2

/* Append-only: codes keep their values across releases. (Not named si_status: <signal.h>
 * defines si_status as a macro for a siginfo_t field.) */
typedef enum si_status_code {
    SI_OK = 0,
    SI_ERR_IO = 1,          /* the file cannot be opened or read */
    SI_ERR_FORMAT = 2,      /* not a valid model file: container, array or manifest */
    SI_ERR_MODEL = 3,       /* a valid file describing an invalid model: shapes, CSR */
    SI_ERR_UNSUPPORTED = 4, /* valid, but a feature this build does not have */
    SI_ERR_ARGUMENT = 5,    /* a bad argument to an API call */
    SI_ERR_NOMEM = 6,       /* out of memory */
    SI_ERR_INTERNAL = 7     /* a bug: please report it with si_last_error() */
} si_status_t;

typedef struct si_model si_model;
typedef struct si_context si_context;

/* Words for a status code; a static string, never NULL. */
SI_API const char *si_status_str(si_status_t status);

/* Detail of the last failure on the calling thread; "" when there is none. The string
 * belongs to the library and stays valid until the next failing call on this thread. */
SI_API const char *si_last_error(void);

/* Library version as "MAJOR.MINOR". */
SI_API const char *si_version(void);

/* How weighted layers execute. AUTO lets the planner pick, per layer and per batch regime
 * (1, or more), the fastest algorithm it measures on this CPU (or remembers measuring);
 * DENSE and SPARSE force one kind everywhere (for comparisons: a CSR layer is expanded to
 * dense at load, or a dense one compressed to CSR). */
typedef enum si_exec_policy {
    SI_POLICY_AUTO = 0,
    SI_POLICY_DENSE = 1,
    SI_POLICY_SPARSE = 2
} si_exec_policy;

/* Which sparse kernels sparse execution uses: the runtime's own, or MKL's
 * inspector-executor sparse BLAS (the reference they are held against). */
typedef enum si_sparse_impl {
    SI_SPARSE_AUTO = 0,
    SI_SPARSE_OWN = 1,
    SI_SPARSE_MKL = 2
} si_sparse_impl;

/* Whether the planner may time candidates at load (FFTW's MEASURE against ESTIMATE).
 * Timings are remembered in a per-user cache keyed by CPU, ISA, threads, layer shape,
 * non-zeros and batch, so a second load of the same model measures nothing. */
typedef enum si_plan_mode {
    SI_PLAN_MEASURE = 0,     /* time what the cache lacks and remember it (default) */
    SI_PLAN_NO_MEASURE = 1,  /* never time: the cache, else a conservative default */
    SI_PLAN_REMEASURE = 2    /* time everything again and update the cache (`sparseinfer tune --force`) */
} si_plan_mode;

/* Options of a load: si_load_options o = {.struct_size = sizeof o}; (the rest zero) are the
 * defaults. struct_size 0 is refused (SI_ERR_ARGUMENT). */
typedef struct si_load_options {
    size_t struct_size;      /* sizeof(si_load_options) as the caller compiled it */
    si_exec_policy policy;
    si_sparse_impl sparse_impl;
    si_plan_mode plan;       /* the environment's SPARSEINFER_PLAN=nomeasure also turns timing off */
    int plan_batch;          /* batch size the "batch > 1" regime is timed at; 0: 8 */
    /* The cache file; NULL: $SPARSEINFER_CACHE if set, else $XDG_CACHE_HOME/sparseinfer/plan.tsv
     * or ~/.cache/sparseinfer/plan.tsv; "" (or SPARSEINFER_CACHE=""): no cache. */
    const char *cache_path;
    /* The most memory the load may hold at once (weights, the forms and packed copies the
     * planner derives, its timing buffers), in bytes; 0: 256 MB + 64 x the file's size.
     * A load that would pass it fails with SI_ERR_NOMEM naming the layer and the bytes. */
    int64_t max_memory_bytes;
    /* Since 0.5: the largest batch the model will run; 0: any. 1 plans batch 1 alone and holds
     * only the forms its entries read (VGG19 fp32: fc1's packed copy for larger batches,
     * 411 MB, is never made), and a context for a larger batch runs its samples one at a
     * time with batch 1's entries and memory. Above 1: the same as 0. */
    int max_batch;
} si_load_options;

/* Load a model from a file or from a caller's buffer (the bytes of a model file). The
 * buffer is only read during the call: the model keeps its own copy of what it needs.
 * On success *out owns a new model; release it with si_model_free(). options may be NULL
 * (all AUTO). Planning (layout conversion, MKL's mkl_sparse_optimize) happens here. */
SI_API si_status_t si_model_load_file(const char *path, si_model **out);
SI_API si_status_t si_model_load_buffer(const void *data, size_t size, si_model **out);
SI_API si_status_t si_model_load_file_ex(const char *path, const si_load_options *options, si_model **out);
SI_API si_status_t si_model_load_buffer_ex(const void *data, size_t size, const si_load_options *options,
                                         si_model **out);
/* Frees a model; NULL is allowed. No context of it may be used afterwards. */
SI_API void si_model_free(si_model *model);

/* Queries. Each accepts NULL without crashing: the status-returning ones return
 * SI_ERR_ARGUMENT, the others -1 (or NULL), and si_last_error() says which argument. */
/* Shape of one input sample (height, width, channels) and element counts per sample. */
SI_API si_status_t si_model_input_shape(const si_model *model, int64_t hwc[3]);
SI_API int64_t si_model_input_size(const si_model *model);
SI_API int64_t si_model_output_size(const si_model *model);
/* The manifest (model.json) as a NUL-terminated UTF-8 string owned by the model. */
SI_API const char *si_model_manifest(const si_model *model);

typedef enum si_layer_type {
    SI_LAYER_CONV2D = 0,
    SI_LAYER_DENSE = 1,
    SI_LAYER_MAXPOOL2D = 2,
    SI_LAYER_RELU = 3,
    SI_LAYER_SOFTMAX = 4,
    SI_LAYER_FLATTEN = 5
} si_layer_type;

typedef enum si_storage {
    SI_STORAGE_NONE = 0,  /* layer has no weights */
    SI_STORAGE_DENSE = 1,
    SI_STORAGE_CSR = 2,
    SI_STORAGE_COMPACT = 3 /* since 0.4: compact streams (docs/format.md), decoded to CSR at load */
} si_storage;

/* The family of the algorithm a layer runs (its name is in si_layer_info.algo_*). */
typedef enum si_exec {
    SI_EXEC_NONE = -1,       /* layer has no weights */
    SI_EXEC_DENSE = 0,       /* dense weights: MKL sgemm, the runtime's bandwidth-bound gemv */
    SI_EXEC_SPARSE_OWN = 1,  /* CSR through the runtime's own kernels */
    SI_EXEC_SPARSE_MKL = 2   /* CSR through MKL's inspector-executor sparse BLAS */
} si_exec;

/* What si_model_layer_info fills. The caller sets struct_size = sizeof(si_layer_info)
 * first; the library writes at most that many bytes and leaves struct_size at what it wrote. */
typedef struct si_layer_info {
    size_t struct_size;
    const char *name;      /* owned by the model */
    si_layer_type type;
    int64_t out_shape[3];  /* per sample: h, w, c (dense layers: 1, 1, units) */
    int64_t rows, cols;    /* weight matrix, one row per output; 0 without weights */
    int64_t params;        /* dense parameter count: rows * cols + bias */
    int64_t nnz;           /* non-zero weights (dense storage: counted at load) */
    si_storage storage;    /* as stored in the file */
    int64_t weight_bytes;  /* bytes of weights + bias as stored in the file's format (compact:
                            * its index and value streams, codebook and scales) */
    int64_t memory_bytes;  /* bytes the loaded layer holds (both forms if both are used) */
    si_exec exec_batch1;   /* how it runs at batch 1 */
    si_exec exec_batchn;   /* how it runs at larger batches */
    const char *why;       /* the reason for that choice; owned by the model */
    const char *algo_batch1; /* registry entry run at batch 1 ("conv_gemm", "fc_csrmv", ...), or "" */
    const char *algo_batchn; /* at larger batches */
    int plan_batch1, plan_batchn;          /* batch each regime was planned at (0: not timed) */
    int64_t plan_positions1, plan_positionsn; /* conv: output positions timed (a strip when large) */
    /* Since 0.4: "float32", or "int8" for a quantized layer (int8 weights, uint8 input with
     * in_scale / in_zero_point, int32 sums); its output is uint8 with out_scale /
     * out_zero_point when out_scale > 0, else float32. "" for layers without weights. */
    const char *dtype;
    double in_scale, out_scale;
    int in_zero_point, out_zero_point;
} si_layer_info;

SI_API int si_model_num_layers(const si_model *model);

/* The planner's candidates for a layer in a regime (0: batch 1, 1: larger batches): up to
 * max registry entries that apply, with their measured seconds (negative: not timed, e.g.
 * forced or estimated). Returns how many apply (may exceed max), or -1 for a bad argument.
 * Names are static strings. */
SI_API int si_model_layer_candidates(const si_model *model, int index, int regime, const char **names,
                                     double *seconds, int max);

/* What planning cost at load: seconds spent timing, layer regimes timed now and layer
 * regimes answered by the cache. Any output pointer may be NULL; model may not. */
SI_API si_status_t si_model_plan_stats(const si_model *model, double *seconds, int *measured, int *cached);

/* The cache file loads use when their options give no cache_path ("" when the environment
 * turns the cache off). Valid until the calling thread's next call. */
SI_API const char *si_plan_cache_file(void);
/* Fills *info for layer index (0 <= index < si_model_num_layers); info->struct_size must be set. */
SI_API si_status_t si_model_layer_info(const si_model *model, int index, si_layer_info *info);

/* A context for running up to max_batch samples per si_run call. It keeps a pointer to the
 * model, which must outlive it. */
SI_API si_status_t si_context_create(const si_model *model, int max_batch, si_context **out);
SI_API void si_context_free(si_context *ctx);

/* Run batch samples: input is batch * si_model_input_size floats (NHWC), output receives
 * batch * si_model_output_size floats. 1 <= batch <= max_batch of the context. The buffers
 * belong to the caller and must not overlap. */
/* si_run that also copies every layer's output (float32, batch x that layer's out_shape,
 * NHWC; an int8 layer's uint8 output dequantized) to layer_outputs[i] where it is not NULL:
 * what calibrating an int8 model (sparseinfer.quantize) and debugging read. Slower than
 * si_run (no layer fusion). Since 0.4. */
SI_API si_status_t si_run_trace(si_context *ctx, const float *input, int batch, float *const *layer_outputs);
SI_API si_status_t si_run(si_context *ctx, const float *input, int batch, float *output);

/* Per-layer timing: the si_run calls that follow write each layer's wall-clock seconds into
 * layer_seconds (si_model_num_layers doubles, owned by the caller, who keeps it alive until
 * profiling stops). A layer that ran inside the one before it (a max pool fused into its
 * convolution) gets 0; an int8 layer's time leaves out quantizing a float input (at an
 * int8 model's float boundary), which only si_run's whole time includes. NULL stops
 * profiling. Timing costs two clock reads per layer. */
SI_API si_status_t si_context_set_profile(si_context *ctx, double *layer_seconds);

/* Threads used by the kernels of the calling thread's loads and runs (0: the library
 * default, the OpenMP default of the calling thread, at most the CPUs at start-up).
 * Returns the previous setting. The host's own OpenMP setting (omp_set_num_threads) is
 * never changed: the library passes its count to each of its parallel regions. MKL's
 * count for the calling thread is set by mkl_set_num_threads_local and released with 0. */
SI_API int si_set_num_threads(int n);

/* Median read bandwidth of this machine in GB/s: a streaming read of `bytes` (choose far
 * larger than the caches) by the library's threads, `repeats` times. Negative if the
 * buffer cannot be allocated. For benchmarks: the yardstick of memory-bound kernels. */
SI_API double si_util_read_bandwidth(size_t bytes, int repeats);

/* The CPU (vendor, family, model from cpuid, and the brand string: a VM's /proc/cpuinfo may
 * say only "AMD EPYC" for Zen 3, 4 and 5 alike), the planner's cache key, and the instruction set the kernels
 * use now ("portable", "avx2" or "avx512"). Static strings. */
SI_API const char *si_cpu_name(void);
SI_API const char *si_isa_name(void);
/* Caps the kernels' instruction set ("auto", "portable", "avx2", "avx512"): SI_ERR_UNSUPPORTED
 * if this CPU lacks it. The start-up default is the best the CPU has, capped by the
 * environment's SPARSEINFER_ISA. Process-wide; not while another thread runs a model.
 * Plans made under one ISA are kept by the models loaded then; the cache keys by ISA. */
SI_API si_status_t si_set_isa(const char *name);

/* The int8 dot product the dense int8 GEMM packs weights for now, under the ISA cap and
 * SPARSEINFER_DISABLE: "avx512_vnni", "avx_vnni" (VNNI on ymm), "avx2" (no VNNI: vpmaddubsw
 * on weights no pair of which saturates int16, e.g. quantized to [-64, 64], else the slower
 * vpmaddwd), or "portable". A quantizer asks it whether to reduce the weights' range. Static
 * string. */
SI_API const char *si_int8_isa_name(void);

/* Force every layer onto the plain reference kernels (1) or the fast ones (0, default).
 * For tests that hold the fast path against the reference. Process-wide. */
SI_API void si_set_reference_kernels(int on);

#ifdef __cplusplus
}
#endif
#endif /* SPARSEINFER_H */
