/* Internal declarations shared by the kernels/ sources. Not installed.
 *
 * Layout of kernels/ (every arrow points down):
 *   si_runtime.c   contexts and the run loop          -> si_registry.c, ops/
 *   si_plan.c      the measuring planner and its cache -> si_registry.c
 *   si_registry.c  the table of algorithms (one line per entry)
 *   conv/, fc/     the entries: one file per way to compute a layer, its reference beside it
 *   csr/, ops/     kernels the entries share (CSR panels, im2col, pooling, bias+activation)
 *   si_dispatch.c  the per-ISA kernel table, filled once at start-up
 *   io/            the untrusted-file readers (ZIP/.npy, JSON, the model loader)
 *   util/          errors, allocation, threads, CPU and ISA detection: no kernel calls
 */
#ifndef SI_INTERNAL_H
#define SI_INTERNAL_H

#include "sparseinfer.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SI_PRINTF(a, b)
#endif

/* ---- utilities (util/si_util.c) ----------------------------------------------------- */

/* Records a failure message for si_last_error() and returns status. */
si_status_t si_fail(si_status_t status, const char *fmt, ...) SI_PRINTF(2, 3);

/* Overflow-checked arithmetic on non-negative sizes: return 0 on overflow. */
int si_mul_ok(int64_t a, int64_t b, int64_t *out);
int si_add_ok(int64_t a, int64_t b, int64_t *out);

void si_init(void);           /* once per process: MKL's threading layer, the ISA, the kernel table */
/* Threads the calling thread's kernels may use: its si_set_num_threads setting, or the
 * OpenMP default, never more than si_max_threads(). */
int si_num_threads(void);
/* The most threads any kernel runs, fixed once per process (the online CPUs at start-up):
 * per-thread scratch is sized by it, so a later change of CPU affinity cannot make a run
 * use more slots than its context holds. */
int si_max_threads(void);
int64_t si_l2_bytes(void);   /* one core's L2 cache (sysfs), else 1 MB */
/* Is name ("amx", "vnni") in $SPARSEINFER_DISABLE, the CPU features the kernels must not use? */
int si_feature_disabled(const char *name);
double si_now(void);          /* monotonic seconds */

void *si_alloc(size_t bytes);   /* 64-byte aligned; NULL on failure, 0 bytes or over the load's limit */
void si_free(void *p);

/* The memory limit of one load (issue 13: a 4 MB file must not make the planner's derived
 * copies ask for tens of GB). Between si_limit_begin and si_limit_end the calling thread's
 * si_alloc refuses (returns NULL) any request that would take the bytes it holds past
 * limit, and remembers the request; its si_free gives bytes back. Per thread: each load
 * runs on one thread, and allocations made by OpenMP workers inside it are not counted. */
void si_limit_begin(int64_t limit);
void si_limit_end(void);
/* Since si_limit_begin on this thread: the bytes of the last refused request (0: none),
 * and the bytes held now. */
int64_t si_limit_refused(void);
int64_t si_limit_held(void);

/* ---- CPU and ISA (util/si_isa.c) ------------------------------------------------------ */

typedef enum si_isa { SI_ISA_PORTABLE = 0, SI_ISA_AVX2 = 1, SI_ISA_AVX512 = 2 } si_isa;

si_isa si_isa_detected(void);          /* the best this CPU and OS support */
const char *si_isa_str(si_isa isa);    /* "portable", "avx2", "avx512" */
int si_isa_parse(const char *s, si_isa *out);  /* 1 on success; "auto" gives the detected one */
/* Bytes of the level-1/2/3 data cache of cpu0 (sysfs), or fallback when the system does not say. */
int64_t si_cache_bytes(int level, int64_t fallback);

/* ---- per-ISA kernels (si_dispatch.c) ---------------------------------------------------
 * The hot kernels every entry shares, one function pointer each, set once by
 * si_dispatch_select (at start-up, or when the ISA cap changes) so that no kernel asks
 * the CPU what it is. Each has a portable, an AVX2+FMA and an AVX-512 variant. */

struct si_layer;
typedef struct si_csr_view {   /* the CSR arrays a panel or mv kernel reads */
    const float *val;
    const int32_t *col;
    const int64_t *ptr;
} si_csr_view;

typedef struct si_kernel_table {
    si_isa isa;
    /* Y[j * ldy + r] (+)= sum_k val[k] * P[col[k] * w + j] for rows [r0, r1), j < w <= 64;
     * P is cols x w. cur/cend: column blocking (see csr/si_csr_kernels.c). */
    void (*csr_panel)(const si_csr_view *A, int64_t r0, int64_t r1, const float *P, int w, float *Y, int64_t ldy,
                      int64_t *cur, int64_t cend, int acc_into);
    /* tile[(r - r0) * 64 + j] (+)= sum_{k in [kb[r], ke[r])} val[k] * base[off[k] + j] for rows
     * [r0, r1), j < w <= 64 (conv/si_conv_sparse_planar.c, conv/si_conv_sparse_tiled.c) */
    void (*csr_planar)(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                       int64_t r1, const float *base, int w, float *tile, int acc_into);
    /* tile[q * ldq + (r - r0) * 64 + j] (+)= sum_{k in [kb[r], ke[r])} val[k] * base[q * qs + off[k] + j]
     * for rows [r0, r1), positions q < nq, samples j < nb (16 or 64): conv_sparse_batch */
    void (*csr_batch)(const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke, int64_t r0,
                      int64_t r1, const float *base, int64_t qs, int nq, int nb, float *tile, int64_t ldq,
                      int acc_into);
    /* dst[(t * F + r) * ldd + j] = act(max over the pkh x pkw window of pooled position t of
     * tile[((dy * cw + t * pkw + dx) * F + r) * SI_PANEL + j] + bias[r]) for t < w, r < F,
     * j < nb (cw = w * pkw; bias may be NULL; act SI_ACT_RELU or linear); dst may be the tile
     * (ldd = SI_PANEL): every position is written at or before all it reads */
    void (*tile_pool)(const float *tile, int64_t w, int64_t F, int pkh, int pkw, int nb, const float *bias, int act,
                      float *dst, int64_t ldd);
    /* Winograd F(4x4, 3x3) tile transforms (conv/si_conv_winograd.c, ops/si_ops.c):
     * V[xi * ldv + c] = (B^T d B)[xi] over channels c < C, d[y * 6 + x] an input row or NULL
     * (padding); y[r * 4 + s][f] = act((A^T m A)[r][s] + bias[f]), m[xi * ldm + f], y[k] NULL
     * outside the output; pool: y[i * 2 + j] gets the 2x2 max pool of that instead */
    void (*wino4_in)(const float *const *d, int64_t C, float *V, int64_t ldv);
    void (*wino4_out)(const float *m, int64_t ldm, int64_t F, const float *bias, int act, float *const *y, int pool);
    /* y[r] (+)= A[r] . x for rows [r0, r1): int32 (col16 NULL) or uint16 columns; _gather:
     * the same with x gathered by vector instructions (fc_csrmv_gather), whose speed differs
     * by CPU more than anything else here, so the planner times both */
    void (*csr_mv_rows)(const si_csr_view *A, const uint16_t *col16, int64_t r0, int64_t r1, const float *x,
                        float *y, int acc_into);
    void (*csr_mv_gather)(const si_csr_view *A, const uint16_t *col16, int64_t r0, int64_t r1, const float *x,
                          float *y, int acc_into);
    /* y[r] (+)= dense row r . x for rows [r0, r1) of a row-major rows x cols W */
    void (*gemv_rows)(const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);
    /* m im2col rows from output position p0 (see ops/si_im2col.c) */
    void (*im2col_rows)(const struct si_layer *L, const float *in, int64_t p0, int64_t m, float *col);
    /* the K x w transposed patches of positions [p0, p0 + w) (spconv's tile) */
    /* P[k * ld + t], t < w <= ld */
    void (*patches_t)(const struct si_layer *L, const float *in, int64_t p0, int w, int ld, float *P, const float *zeros);
    /* maxpool of output rows [r0, r1) (each row: one (sample, oh)) */
    void (*maxpool_rows)(const struct si_layer *L, const float *in, float *out, int64_t r0, int64_t r1);
    /* out[p][j] = act(out[p][j] + bias[j]) for positions [p0, p1) (bias may be NULL) */
    void (*bias_act_rows)(float *out, const float *bias, int64_t n, int act, int64_t p0, int64_t p1);
    /* dst[c * ldd + r] = act(src[r * lds + c] + bias[r]) for r < rows, c < cols (bias may be
     * NULL; act SI_ACT_RELU or none): conv_sparse_batch's layout changes (ops/si_ops.c) */
    void (*transpose)(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd,
                      const float *bias, int act);
} si_kernel_table;

extern const si_kernel_table *si_k;      /* the selected table; never NULL after si_init */
void si_dispatch_select(si_isa isa);
si_isa si_isa_active(void);

/* ---- ZIP / .npy (io/si_npz.c) -------------------------------------------------------- */

typedef enum si_dtype { SI_F32, SI_I32, SI_U16, SI_I64, SI_U8, SI_I8 } si_dtype;

typedef struct si_array {
    char name[128];         /* member name without ".npy" */
    si_dtype dtype;
    int ndim;
    int64_t shape[4];
    int64_t count;          /* product of shape */
    const unsigned char *data; /* points into the archive buffer or into inflated; may be unaligned */
    unsigned char *inflated; /* a deflated member's inflated bytes (si_alloc), owned by the si_npz; or NULL */
    size_t inflated_size;    /*   and their count (data lies within them) */
} si_array;

typedef struct si_npz {
    si_array *arrays;
    int n;
    int cap;                /* slots in arrays (calloc'd: unused ones are zero) */
    int n_deflated;         /* members that were deflated (method 8) */
} si_npz;

/* Parses every member of a ZIP of .npy files in buf[0, size): stored members (method 0),
 * and deflated ones (method 8, inflated with zlib into si_alloc'd buffers counted against
 * the load's memory limit). Stored arrays point into buf, which must outlive the si_npz. */
si_status_t si_npz_open(const unsigned char *buf, size_t size, si_npz *out);
void si_npz_close(si_npz *npz);
const si_array *si_npz_find(const si_npz *npz, const char *name);
const char *si_dtype_name(si_dtype t);

/* Deflate bounds a member's expansion to 1032:1 (258-byte matches in 1-bit codes, as zlib's
 * deflateBound reasons in reverse); a declared size beyond SI_INFLATE_MAX_RATIO x the
 * compressed one is a lie, refused before anything is allocated. */
#define SI_INFLATE_MAX_RATIO 1032
#define SI_INFLATE_SLACK 1024

/* ---- JSON (io/si_json.c) ------------------------------------------------------------- */

typedef enum si_json_type { SI_JNULL, SI_JBOOL, SI_JNUM, SI_JSTR, SI_JARR, SI_JOBJ } si_json_type;

typedef struct si_json {
    si_json_type type;
    double num;             /* SI_JNUM, SI_JBOOL (0/1) */
    char *str;              /* SI_JSTR: NUL-terminated, unescaped */
    char **keys;            /* SI_JOBJ: n keys */
    struct si_json *items;  /* SI_JARR / SI_JOBJ: n values */
    int n;
} si_json;

/* Parses text[0, len) strictly (RFC 8259, depth <= 32). On failure returns SI_ERR_FORMAT
 * with the byte offset in the message. */
si_status_t si_json_parse(const char *text, size_t len, si_json *out);
void si_json_free(si_json *v);
const si_json *si_json_get(const si_json *obj, const char *key);

/* ---- model ---------------------------------------------------------------------------- */

enum si_act { SI_ACT_LINEAR = 0, SI_ACT_RELU = 1, SI_ACT_SOFTMAX = 2 };

#define SI_MAX_ALGOS 48        /* entries in the registry, at most (si_plan.c's held() masks: under 62) */
#define SI_REGIMES 2           /* 0: batch 1, 1: larger batches */

/* Shared weight forms an entry reads; the planner keeps exactly the union of what the
 * chosen entries read. */
enum { SI_FORM_DENSE = 1, SI_FORM_CSR = 2 };

typedef struct si_layer {
    char name[64];
    si_layer_type type;
    int act;                 /* fused activation of conv2d / dense */
    int64_t in_h, in_w, in_c;
    int64_t out_h, out_w, out_c;
    int kh, kw, sh, sw;      /* conv2d kernel / maxpool window, strides */
    int64_t pad_top, pad_left; /* "same" padding (TensorFlow's rule), 0 for "valid" */
    /* weights: rows = outputs, cols = inputs (conv: kh*kw*in_c) */
    int64_t rows, cols;
    si_storage storage;      /* as stored in the file */
    int64_t compact_bytes;   /* SI_STORAGE_COMPACT: the bytes of its index and value streams */
    float *w;                /* SI_FORM_DENSE: rows * cols, row-major, or NULL */
    float *csr_val;          /* SI_FORM_CSR: nnz values (NULL when nnz == 0 is allowed) */
    int32_t *csr_col;        /*   nnz column indices, sorted within a row */
    int64_t *csr_ptr;        /*   rows + 1 row pointers; csr_ptr != NULL means the form exists */
    int64_t nnz;
    float *bias;             /* rows values, or NULL */
    /* int8 (issue 12): q = 1 for a quantized layer. Its input is uint8 with (q_in_scale,
     * q_in_zero); its output uint8 with (q_out_scale, q_out_zero) when q_out_u8, else float.
     * Its weight forms are w8 (SI_FORM_DENSE) and csr_val8 with csr_col / csr_ptr
     * (SI_FORM_CSR) instead of w and csr_val; bias is NULL and q_mul / q_add (rows each)
     * hold the folded scales, zero point and int32 bias (si_requant). */
    int q;
    float q_in_scale, q_out_scale;
    int32_t q_in_zero, q_out_zero;
    int q_out_u8;
    int q_pair_safe;         /* no pair of inputs (2t, 2t + 1) can saturate vpmaddubsw (si_i8_pair_safe):
                              * the planner's cache tells such layers apart (they run faster on AVX2
                              * without VNNI); the GEMM checks its weights itself when packing */
    int8_t *w8, *csr_val8;
    float *q_wscale, *q_mul, *q_add;
    /* The max pooling right after this convolution when an entry may compute both in one
     * pass (run_pool): non-overlapping windows, no padding (si_plan.c sets it), else NULL. */
    const struct si_layer *pool;
    /* At batch > 1: the next weighted layer (past the fused pool and any flatten) when both
     * this layer's and its entries have run_blocked, so this output may stay blocked (si_run
     * checks the two block sizes per batch), else NULL. */
    const struct si_layer *blocked_next;
    /* The plan (si_plan.c): the entry of each regime, each used entry's private state
     * (indexed like the registry), every candidate's measured seconds (< 0: not timed) and
     * the reason, for `sparseinfer info`. */
    const struct si_algo *algo[SI_REGIMES];
    void *state[SI_MAX_ALGOS];
    double cand_s[SI_REGIMES][SI_MAX_ALGOS];
    int plan_batch[SI_REGIMES];       /* the batch each regime was measured at */
    int64_t plan_positions[SI_REGIMES]; /* conv: output positions timed (a strip of the image when large) */
    char why[320];
} si_layer;

/* Decodes a layer's compact weight (io/si_compact.c; the manifest's "weight" object w) into
 * L's CSR float32 form: csr_val, csr_col, csr_ptr, nnz; storage SI_STORAGE_COMPACT and
 * compact_bytes (what si_model_layer_info reports; the kernels read the form). L's rows and
 * cols must be set. On failure what it allocated stays in L for si_model_free. */
si_status_t si_compact_decode(const si_npz *npz, const si_json *w, si_layer *L, const char *where);

struct si_model {
    si_layer *layers;
    int n_layers;
    int64_t in_h, in_w, in_c;
    int64_t max_act;         /* largest activation per sample (elements) */
    char *manifest;
    double plan_seconds;     /* time the planner spent measuring */
    int plan_measured, plan_cached; /* layer regimes measured now / taken from the cache */
    int batch1_only;         /* si_load_options.max_batch 1: one regime planned; larger batches run per sample */
};

static inline double si_layer_density(const si_layer *L) {
    return L->rows && L->cols ? (double)L->nnz / ((double)L->rows * (double)L->cols) : 1.0;
}

/* ---- the algorithm registry (si_registry.c) -------------------------------------------
 * Every way to compute a conv2d or dense layer is one entry. The loader, the planner, the
 * run loop, workspace sizing, byte accounting and `info` all walk this table. */
typedef struct si_algo {
    const char *name;        /* "conv_gemm", "fc_csrmv", ... as `info` and the cache show it */
    si_layer_type type;
    si_exec family;          /* what the public si_exec calls it */
    unsigned forms;          /* SI_FORM_* the entry reads */
    int reference_only;      /* 1: a reference to compare with (MKL's sparse BLAS); auto never picks it
                              * unless asked for by si_sparse_impl */
    int int8;                /* 1: an int8 entry, for int8 layers only (L->q): run's input is uint8 and its
                              * output uint8 (L->q_out_u8) or float, cast from the float pointers */
    int approx;              /* 1: an int8 entry that computes in float (the same values to within float
                              * rounding, not the exact int32 sums): the planner needs it APPROX_MARGIN
                              * faster than the exact entries */
    int state_only;          /* 1: run and run_ref read only the prepared state (packed weights), so
                              * the forms are needed to prepare it and may be freed afterwards */
    int pairs;               /* 1: the int8 GEMM (ops/si_igemm.c), which on plain AVX2 runs pair-safe
                              * weights by vpmaddubsw and others by the slower vpmaddwd */
    /* Does it apply to this layer in regime (0: batch 1, 1: larger)? */
    int (*applies)(const si_layer *L, int regime);
    /* Build the entry's private state from the shared forms (which exist), or leave
     * *state NULL when it needs none. */
    si_status_t (*prepare)(si_layer *L, void **state);
    /* Floats of scratch one run of `batch` samples needs (the run gets that much). */
    int64_t (*ws_floats)(const si_layer *L, const void *state, int batch);
    /* out = act(W in + bias) for `batch` samples, NHWC; ws: ws_floats(L, state, batch). */
    void (*run)(const si_layer *L, const void *state, const float *in, int batch, float *out, float *ws);
    /* Optional (NULL: the entry cannot): out = L->pool's max pooling of what run computes, in
     * one pass, for layers whose pool is set; ws_floats covers it. */
    void (*run_pool)(const si_layer *L, const void *state, const float *in, int batch, float *out, float *ws);
    /* Optional (NULL: the entry cannot): run with either side in the samples-innermost block
     * layout, which saves the two transposes between two such layers (LeNet-5 at batch 64:
     * conv1 -> conv2 -> fc1). in_nb / out_nb: 0 for NHWC, else NB = block_of(L, batch):
     * ceil(batch / NB) blocks of NB samples, each [H][W][C][NB] (a dense layer's input is
     * [cols][NB]); lanes past the batch hold finite values that nothing reads out. pool: 1 to
     * compute L->pool too (run_pool's job). Only conv and dense outputs of an entry with
     * run_blocked go blocked, into a consumer whose entry takes the same NB (si_plan.c). */
    void (*run_blocked)(const si_layer *L, const void *state, const float *in, int in_nb, int batch, float *out,
                        int out_nb, int pool, float *ws);
    /* NB for a batch, with run_blocked; 0: the entry only takes blocked inputs, of any NB,
     * and writes NHWC */
    int (*block_of)(const si_layer *L, int batch);
    /* The same by the plain reference kernel beside it (double accumulation, no scratch). */
    void (*run_ref)(const si_layer *L, const void *state, const float *in, int batch, float *out);
    int64_t (*bytes)(const si_layer *L, const void *state);   /* private bytes held */
    void (*release)(void *state);
} si_algo;

extern const si_algo *const si_algos[];   /* NULL-terminated */
int si_algo_index(const si_algo *a);
const si_algo *si_algo_find(const char *name);

/* ---- planning (si_plan.c) ---------------------------------------------------------------
 * Chooses algo[0] / algo[1] of every weighted layer by timing the applicable entries on
 * the layer's weights (or reading the cache), then keeps only the forms those read. */
si_status_t si_plan_model(si_model *m, const si_load_options *opt);
void si_plan_release(si_layer *L);  /* frees every entry state of a layer */

/* Shared weight forms (si_plan.c). */
si_status_t si_form_dense(si_layer *L);
si_status_t si_form_csr(si_layer *L);

double si_read_bandwidth_gbs(size_t bytes, int repeats);  /* util/si_bandwidth.c */

/* ---- shared kernels -------------------------------------------------------------------- */

extern int si_use_reference;

/* ops/si_ops.c: threaded through si_k. */
void si_bias_act(const si_layer *L, float *out, int64_t positions);
void si_maxpool_forward(const si_layer *L, const float *in, int batch, float *out);
void si_relu_inplace(float *x, int64_t n);
void si_softmax_rows(float *x, int64_t rows, int64_t cols);
void si_bias_act_ref(const si_layer *L, float *out, int64_t positions);
void si_maxpool_ref(const si_layer *L, const float *in, int batch, float *out);
void si_transpose_ref(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd,
                      const float *bias, int act);

/* ops/si_im2col.c: rows [p0, p0 + m) of a conv layer's im2col matrix (m x L->cols), the
 * rows split among the threads. */
void si_im2col(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col);
void si_im2col_rows_ref(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col);
/* Scratch rows of im2col for one chunk: enough to keep sgemm efficient without a whole
 * VGG layer (224*224*576 floats = 115 MB per image). */
int64_t si_im2col_chunk_rows(const si_layer *L, int batch);

/* csr/si_csr_kernels.c: the runtime's own CSR kernels on a layer's CSR form, linear part
 * only, si_num_threads() OpenMP threads. */
/* The file's CSR column indices are uint16 up to this many columns, else int32: the
 * writer's rule (COL16_MAX_COLS in sparseinfer/format.py; tests/test_format_storage.py
 * holds the two equal). */
#define SI_FILE_COL16_MAX_COLS 65536
#define SI_CSR_BLOCK_COLS 4096   /* 16 KB of x: half of Zen 4's (and most cores') L1D */
#define SI_PANEL 64              /* batch columns / output positions per panel */
int si_threads_for(int64_t work, int64_t max_parts);
void si_tile_split(const si_layer *L, int64_t P, int tw, int *nt, int64_t *fsplit, int64_t *items, int64_t *chunk);
void si_part_rows(const int64_t *ptr, int64_t a, int64_t b, int t, int nt, int64_t *r0, int64_t *r1);
int64_t si_f32_csrmm_ws_floats(const si_layer *L, int n);
void si_f32_csrmm(const si_layer *L, const float *X, int n, float *Y, float *ws); /* Y[n x rows] = X A^T */
void si_f32_csrmm_ref(const si_layer *L, const float *X, int n, float *Y);
/* The same from ceil(n / nb) blocks of cols x nb samples (a blocked input, si_algo.run_blocked). */
void si_f32_csrmm_blocked(const si_layer *L, const float *X, int nb, int n, float *Y, float *ws);
int64_t si_f32_spconv_ws_floats(const si_layer *L, int batch);
/* tw: output positions per tile (<= SI_PANEL): the 64-wide tile of a large K (VGG's K = 4608:
 * 1.2 MB) outgrows L2, a narrower one reuses each non-zero less; the planner measures both. */
void si_f32_spconv(const si_layer *L, const float *in, int batch, float *out, float *ws, int tw);
void si_f32_spconv_ref(const si_layer *L, const float *in, int batch, float *out);
/* conv/si_conv_gemm.c: the direct convolution on L->w (double sums), bias and activation */
void si_f32_conv_ref(const si_layer *L, const float *in, int batch, float *out);
/* conv/si_conv_winograd.c: floats of transformed input and output per group of tiles (the C
 * tests lower it to exercise group boundaries) */
extern int64_t si_wino_group_floats;
/* ... and the largest transformed filters (bytes) run in per-thread groups (-1: the L2 size) */
extern int64_t si_wino_local_max_u;

/* csr/si_mkl_csr.c: MKL inspector-executor handles (the reference sparse BLAS). */
typedef struct si_mkl_csr si_mkl_csr;
si_status_t si_mkl_csr_create(const si_layer *L, si_mkl_csr **out);
void si_mkl_csr_destroy(si_mkl_csr *h);
int64_t si_mkl_csr_bytes(const si_layer *L);
void si_mkl_csrmv(const si_mkl_csr *h, const float *x, float *y);
int64_t si_mkl_csrmm_ws_floats(const si_layer *L, int n);
void si_mkl_csrmm(const si_layer *L, const si_mkl_csr *h, const float *X, int n, float *Y, float *ws);
void si_mkl_spconv(const si_layer *L, const si_mkl_csr *h, const float *in, int batch, float *out, float *ws,
                   int64_t ws_floats);

/* ops/si_sgemm.c: the runtime's own GEMM on weights packed at load (B = W^T). */
typedef struct si_packed_b {
    float *b;             /* n_pad / nr panels of k x nr floats */
    int64_t n, k, n_pad;
    int mr, nr;           /* the microkernel's block, fixed at packing */
    void (*uk)(const float *const *a, const float *b, int64_t kc, float *c, int64_t ldc, int rows, int cols, int acc,
               const float *pf); /* pf: kc cache lines to prefetch, one per k */
    void (*gv)(const float *x, const float *b, int64_t k, float *y, int cols);  /* one row of A */
} si_packed_b;
si_status_t si_pack_b(const char *layer, const float *w, int64_t n, int64_t k, si_packed_b *out); /* w: n x k */
void si_packed_b_free(si_packed_b *b);
int64_t si_packed_b_bytes(const si_packed_b *b);
void si_sgemm_packed(const float *A, int64_t lda, int64_t m, const si_packed_b *B, float *C, int64_t ldc);
/* The same on the calling thread alone (inside a caller's parallel region). */
void si_sgemm_packed_rows(const float *A, int64_t lda, int64_t m, const si_packed_b *B, float *C, int64_t ldc);
/* prepare / release / bytes of the entries whose state is the layer's weights packed */
si_status_t si_packed_prepare(si_layer *L, void **state);
void si_packed_release(void *state);
int64_t si_packed_bytes(const si_layer *L, const void *state);
void si_sgemm_packed_ref(const float *A, int64_t lda, int64_t m, const si_packed_b *B, float *C, int64_t ldc);

/* fc/si_fc_gemv.c: y = W x at memory bandwidth, threaded. */
void si_f32_gemv(const si_layer *L, const float *x, float *y);
void si_f32_gemv_ref(const si_layer *L, const float *x, float *y);

/* ---- int8 (issue 12) ----------------------------------------------------------------
 * Activations are uint8 with one scale and zero point per tensor (x = scale * (q - zero)),
 * weights int8 symmetric in [-127, 127] with one scale per output channel, products summed
 * in int32. The zero point and the bias are folded at load into two floats per output
 * channel (mul, add), so every kernel's accumulator is sum_k q_x[k] * q_w[r][k] and its
 * output is one requantization: */
typedef struct si_requant {
    const float *mul, *add;  /* per output channel r */
    int act;                 /* SI_ACT_LINEAR or SI_ACT_RELU */
    int out_u8;              /* 1: write uint8, 0: write float */
    float inv_scale;         /* out_u8: 1 / the output's scale */
    int32_t zero;            /* out_u8: the output's zero point, in [0, 255] */
} si_requant;
/* y = fmaf((float)acc, mul[r], add[r]); relu: y = fmaxf(y, 0); float output: y; uint8
 * output: (uint8)(zero + rint(fminf(fmaxf(y * inv_scale, -zero), 255 - zero))), rint
 * rounding half to even. Every variant and every reference computes exactly this, so for
 * finite inputs the int8 kernels agree bit for bit with their references on every ISA. */
static inline float si_requant_f(const si_requant *rq, int64_t r, int32_t acc) {
    float y = fmaf((float)acc, rq->mul[r], rq->add[r]);
    return rq->act == SI_ACT_RELU ? fmaxf(y, 0.0f) : y;
}
static inline uint8_t si_requant_u8(const si_requant *rq, float y) {
    float t = fminf(fmaxf(y * rq->inv_scale, (float)-rq->zero), (float)(255 - rq->zero));
    return (uint8_t)(rq->zero + (int32_t)rintf(t));
}
/* The requantization of an int8 layer's output (its rows' mul and add, act, output quantization). */
static inline void si_layer_requant(const si_layer *L, si_requant *rq) {
    rq->mul = L->q_mul;
    rq->add = L->q_add;
    rq->act = L->act == SI_ACT_RELU ? SI_ACT_RELU : SI_ACT_LINEAR;
    rq->out_u8 = L->q_out_u8;
    rq->inv_scale = L->q_out_u8 ? 1.0f / L->q_out_scale : 0.0f;
    rq->zero = L->q_out_u8 ? L->q_out_zero : 0;
}
/* The int32 sums stay exact: an int8 layer has at most SI_I8_MAX_COLS inputs
 * (255 * 127 * 66000 < 2^31), which the loader enforces. */
#define SI_I8_MAX_COLS 66000

/* ops/si_igemm.c: u8 x s8 -> s32 GEMM on weights packed at load, requantized on output.
 * AVX-512 VNNI (vpdpbusd), AVX2 (vpmaddwd on widened operands: exact, see the file), and
 * portable C; the variant is the one active when the weights were packed. */
typedef struct si_packed_b8 {
    void *b;                 /* the packed weights, layout private to ops/si_igemm.c */
    int64_t n, k;            /* n outputs (rows of W), k inputs */
    int64_t bytes;           /* held by b */
    si_isa isa;              /* the variant the layout is for */
} si_packed_b8;
/* w: n x k int8, row-major (one row per output) */
si_status_t si_pack_b8(const char *layer, const int8_t *w, int64_t n, int64_t k, si_packed_b8 *out);
void si_packed_b8_free(si_packed_b8 *b);
void si_unpack_b8(const si_packed_b8 *B, int8_t *w); /* w (n x k) back from the packed weights */
/* Does si_pack_b8 pack for a VNNI kernel now (AVX-512 VNNI or AVX-VNNI, under the ISA cap and
 * $SPARSEINFER_DISABLE)? */
int si_igemm_has_vnni(void);
#define SI_VNNI_AVX 1 /* si_cpu_vnni(): AVX-VNNI (VEX, ymm) */
#define SI_VNNI_512 2 /* AVX-512 VNNI */
int si_cpu_vnni(void);  /* the forms the CPU has (less $SPARSEINFER_DISABLE) */
int si_vnni_form(void); /* the one the kernels use under the ISA cap, or 0 */
/* Can AVX2's vpmaddubsw take these n x k int8 weights exactly (no pair of adjacent inputs'
 * products saturating int16 against any uint8 activations)? See ops/si_igemm.c. */
int si_i8_pair_safe(const int8_t *w, int64_t n, int64_t k);
/* C[i * ldc + j] = requant_j(sum_{t < k} A[i * lda + t] * W[j][t]) for i < m, j < n; A is
 * m rows of k uint8 (lda >= k, nothing past a row's k bytes is read); C is uint8 or float
 * by rq->out_u8 (ldc in elements). Threaded over si_num_threads(); m == 1 is the GEMV of
 * batch 1 (threads split the outputs). _rows: the calling thread alone. */
void si_igemm_packed(const uint8_t *A, int64_t lda, int64_t m, const si_packed_b8 *B, const si_requant *rq,
                     void *C, int64_t ldc);
void si_igemm_packed_rows(const uint8_t *A, int64_t lda, int64_t m, const si_packed_b8 *B, const si_requant *rq,
                          void *C, int64_t ldc);
/* The reference: plain loops on the unpacked weights. */
void si_igemm_ref(const uint8_t *A, int64_t lda, int64_t m, const int8_t *w, int64_t n, int64_t k,
                  const si_requant *rq, void *C, int64_t ldc);

/* ops/si_igemm_amx.c: the same GEMM on AMX tiles (Sapphire Rapids and later). */
int si_amx_available(void); /* the CPU has AMX-INT8 and AVX-512, the OS granted the tile state, the ISA cap is avx512 */
typedef struct si_packed_b8_amx {
    void *b;                 /* the packed weights, layout private to ops/si_igemm_amx.c */
    int64_t n, k;            /* n outputs (rows of W), k inputs */
    int64_t bytes;           /* held by b */
} si_packed_b8_amx;
/* w: n x k int8, row-major. SI_ERR_UNSUPPORTED when !si_amx_available() (out zeroed). */
si_status_t si_pack_b8_amx(const char *layer, const int8_t *w, int64_t n, int64_t k, si_packed_b8_amx *out);
void si_packed_b8_amx_free(si_packed_b8_amx *b);
/* w (n x k) back from the packed weights: what the reference kernels of entries that keep
 * only the packed copy read (si_unpack_b8 likewise) */
void si_unpack_b8_amx(const si_packed_b8_amx *B, int8_t *w);
/* si_igemm_packed's contract on weights from si_pack_b8_amx: threaded over si_num_threads();
 * _rows: the calling thread alone. */
void si_igemm_amx(const uint8_t *A, int64_t lda, int64_t m, const si_packed_b8_amx *B, const si_requant *rq,
                  void *C, int64_t ldc);
void si_igemm_amx_rows(const uint8_t *A, int64_t lda, int64_t m, const si_packed_b8_amx *B, const si_requant *rq,
                       void *C, int64_t ldc);

/* ops/si_i8_packed.c: the int8 GEMM entries' state, the weights packed for either GEMM. */
typedef struct si_i8_packed {
    int amx;                 /* 1: a (ops/si_igemm_amx.c), 0: v (ops/si_igemm.c) */
    si_packed_b8 v;
    si_packed_b8_amx a;
} si_i8_packed;
si_status_t si_i8_packed_prepare(si_layer *L, int amx, void **state); /* packs L->w8 */
void si_i8_packed_release(void *state);
int64_t si_i8_packed_bytes(const si_layer *L, const void *state);
void si_i8_gemm(const si_i8_packed *s, const uint8_t *A, int64_t lda, int64_t m, const si_requant *rq, void *C,
                int64_t ldc);
void si_i8_gemm_rows(const si_i8_packed *s, const uint8_t *A, int64_t lda, int64_t m, const si_requant *rq, void *C,
                     int64_t ldc);
int8_t *si_i8_packed_weights(const si_layer *L, const si_i8_packed *s); /* malloc'd w8 back, for references */

/* csr/si_csr_i8.c: CSR with int8 values (the column indices and row pointers as for fp32:
 * col16, uint16, when not NULL, else col). y = requant(W x) for one uint8 x of cols values;
 * Y[i * ldy + r] = requant_r(sum_k val[k] * X[i * ldx + col[k]]) for n rows of X. Threaded;
 * ws: si_i8_csrmm_ws_bytes of scratch (64-byte aligned). */
typedef struct si_csr8_view {
    const int8_t *val;
    const int32_t *col;
    const uint16_t *col16;
    const int64_t *ptr;
    int64_t rows, cols;
} si_csr8_view;
void si_i8_csrmv(const si_csr8_view *A, const uint8_t *x, const si_requant *rq, void *y);
/* The csrmv loops the planner chooses between by timing them (fc_csrmv_i8, fc_csrmv_i8_avx2,
 * fc_csrmv_i8_nogather in fc/si_fc_i8.c), since which is fastest depends on the CPU's gathers:
 * SI_I8_MV_ACTIVE the active ISA's gather loop (si_i8_csrmv's; portable: scalar),
 * SI_I8_MV_AVX2 the AVX2 gather loop, SI_I8_MV_NOGATHER AVX2 without gathers (x's bytes by
 * scalar loads). si_i8_csrmv_has: 1 where the loop is one of its own under the active ISA
 * (ACTIVE always; AVX2 only where the active ISA is above AVX2; NOGATHER from AVX2 up). */
typedef enum si_i8_mv_loop { SI_I8_MV_ACTIVE = 0, SI_I8_MV_AVX2 = 1, SI_I8_MV_NOGATHER = 2 } si_i8_mv_loop;
int si_i8_csrmv_has(si_i8_mv_loop loop);
void si_i8_csrmv_loop(si_i8_mv_loop loop, const si_csr8_view *A, const uint8_t *x, const si_requant *rq, void *y);
int64_t si_i8_csrmm_ws_bytes(const si_csr8_view *A, int64_t n);
/* The same with X in blocks of nb samples (nb divides 64; [cols][nb] each, si_algo.run_blocked) */
void si_i8_csrmm_blocked(const si_csr8_view *A, const uint8_t *X, int nb, int64_t n, const si_requant *rq, void *Y,
                         int64_t ldy, void *ws);
void si_i8_csrmm(const si_csr8_view *A, const uint8_t *X, int64_t ldx, int64_t n, const si_requant *rq, void *Y,
                 int64_t ldy, void *ws);
void si_i8_csrmv_ref(const si_csr8_view *A, const uint8_t *x, const si_requant *rq, void *y);
void si_i8_csrmm_ref(const si_csr8_view *A, const uint8_t *X, int64_t ldx, int64_t n, const si_requant *rq, void *Y,
                     int64_t ldy);

/* ops/si_ops_u8.c: the uint8 activations' own operations. */
void si_quantize_u8(const float *x, int64_t n, float inv_scale, int32_t zero, uint8_t *q); /* the rule above, y = x */
void si_dequantize_u8(const uint8_t *q, int64_t n, float scale, int32_t zero, float *x);   /* scale * (q - zero) */
void si_dequantize_u8_serial(const uint8_t *q, int64_t n, float scale, int32_t zero, float *x); /* the same, this thread alone */
/* conv_sparse_batch on uint8 inputs (at q->in_zero) for conv_sparse_batch_i8: F is the layer's
 * float view (the int8 weights as floats, no bias, linear), every sum plus zf[r] requantized
 * by rq into out (uint8 or float); in and out NHWC (nb 0) or blocked like run_blocked's;
 * ws: si_conv_sparse_batch_q_ws floats (conv/si_conv_sparse_batch.c) */
typedef struct si_batch_q {
    const si_requant *rq;
    const float *zf;
    int32_t in_zero;
} si_batch_q;
void si_conv_sparse_batch_q(const si_layer *F, const void *state, const si_batch_q *q, const uint8_t *in, int in_nb,
                            int batch, void *out, int out_nb, int pool, float *ws);
int64_t si_conv_sparse_batch_q_ws(const si_layer *F, const void *state, int batch);
int si_conv_sparse_batch_nb(const si_layer *L, int batch);
/* out[p * F + r] = rq_r(y[p * F + r] + zf[r]) for p < n, this thread alone */
void si_batch_q_rows(const si_batch_q *q, const float *y, int64_t n, int64_t F, void *out);
/* 1 if every row's 255 * sum |w| of the int8 weights < 2^24: sums of weights times uint8
 * inputs (minus a zero point) are then exact in float32 in any order (conv/si_conv_i8.c) */
int si_i8_exact_in_float(const si_layer *L);
/* The int8 CSR weights as floats and, per row, q_in_zero times its weights' sum (an integer
 * below 2^24 where si_i8_exact_in_float), for the int8 entries on fp32 kernels; the layer's
 * float view reads them (no bias, linear: the requantization adds and applies those). */
typedef struct si_i8_floats {
    float *val, *zf;
} si_i8_floats;
si_status_t si_i8_floats_prepare(const si_layer *L, si_i8_floats *f);
void si_i8_floats_release(si_i8_floats *f);
si_layer si_i8_float_view(const si_layer *L, const si_i8_floats *f);
void si_maxpool_u8(const si_layer *L, const uint8_t *in, int batch, uint8_t *out);
/* rows [p0, p0 + m) of the im2col matrix as uint8, row stride ldc >= L->cols, padding taps
 * set to zero (the quantized 0.0) */
void si_im2col_u8(const si_layer *L, const uint8_t *in, int64_t p0, int64_t m, uint8_t *col, int64_t ldc,
                  uint8_t zero);
/* The same rows on the caller's thread, for kernel rows of at most 16 bytes (kw * in_c <= 16;
 * ldc = cols): 16-byte moves that may write up to 16 bytes past the m rows (the caller's slack); in_end:
 * one past the input's last byte. */
void si_im2col_u8_short(const si_layer *L, const uint8_t *in, const uint8_t *in_end, int64_t p0, int64_t m,
                        uint8_t *col, uint8_t zero);
/* conv/si_conv_i8.c: the int8 convolution's reference on int8 weights w (rows x cols); uint8 in,
 * the layer's output type out. */
void si_conv_i8_ref(const si_layer *L, const int8_t *w, const uint8_t *x, int batch, void *out);

/* Per-ISA variants, for si_dispatch.c (defined in the files of their families). */
#define SI_DECLARE_VARIANTS(ret, name, args) \
    ret name##_portable args; ret name##_avx2 args; ret name##_avx512 args;
SI_DECLARE_VARIANTS(void, si_csr_panel, (const si_csr_view *A, int64_t r0, int64_t r1, const float *P, int w, float *Y,
                                         int64_t ldy, int64_t *cur, int64_t cend, int acc_into))
SI_DECLARE_VARIANTS(void, si_csr_planar, (const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke,
                                          int64_t r0, int64_t r1, const float *base, int w, float *tile, int acc_into))
SI_DECLARE_VARIANTS(void, si_csr_batch, (const float *val, const int32_t *off, const int64_t *kb, const int64_t *ke,
                                         int64_t r0, int64_t r1, const float *base, int64_t qs, int nq, int nb,
                                         float *tile, int64_t ldq, int acc_into))
SI_DECLARE_VARIANTS(void, si_tile_pool, (const float *tile, int64_t w, int64_t F, int pkh, int pkw, int nb,
                                         const float *bias, int act, float *dst, int64_t ldd))
SI_DECLARE_VARIANTS(void, si_wino4_in, (const float *const *d, int64_t C, float *V, int64_t ldv))
SI_DECLARE_VARIANTS(void, si_wino4_out, (const float *m, int64_t ldm, int64_t F, const float *bias, int act,
                                         float *const *y, int pool))
SI_DECLARE_VARIANTS(void, si_csr_mv_rows, (const si_csr_view *A, const uint16_t *col16, int64_t r0, int64_t r1,
                                           const float *x, float *y, int acc_into))
SI_DECLARE_VARIANTS(void, si_csr_mv_gather, (const si_csr_view *A, const uint16_t *col16, int64_t r0, int64_t r1,
                                             const float *x, float *y, int acc_into))
SI_DECLARE_VARIANTS(void, si_gemv_rows, (const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1))
SI_DECLARE_VARIANTS(void, si_im2col_rows, (const si_layer *L, const float *in, int64_t p0, int64_t m, float *col))
SI_DECLARE_VARIANTS(void, si_patches_t, (const si_layer *L, const float *in, int64_t p0, int w, int ld, float *P,
                                         const float *zeros))
SI_DECLARE_VARIANTS(void, si_maxpool_rows, (const si_layer *L, const float *in, float *out, int64_t r0, int64_t r1))
SI_DECLARE_VARIANTS(void, si_bias_act_rows, (float *out, const float *bias, int64_t n, int act, int64_t p0, int64_t p1))
SI_DECLARE_VARIANTS(void, si_transpose, (const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst,
                                         int64_t ldd, const float *bias, int act))

/* Function attributes for the variants: the library is built for baseline x86-64 and each
 * variant is compiled for its ISA by a target attribute. A body written once as an
 * always-inline function takes the ISA of the function it is inlined into. */
#if defined(__x86_64__) && defined(__GNUC__)
#define SI_X86 1
#define SI_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define SI_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define SI_INLINE static inline __attribute__((always_inline))
#else
#define SI_X86 0
#define SI_TARGET_AVX2
#define SI_TARGET_AVX512
#define SI_INLINE static inline
#endif

#endif /* SI_INTERNAL_H */
