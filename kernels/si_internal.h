/* Internal declarations shared by the kernels/ sources. Not installed. */
#ifndef SI_INTERNAL_H
#define SI_INTERNAL_H

#include "sparseinfer.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SI_PRINTF(a, b)
#endif

/* Records a failure message for si_last_error() and returns status. */
si_status_t si_fail(si_status_t status, const char *fmt, ...) SI_PRINTF(2, 3);

/* Overflow-checked arithmetic on non-negative sizes: return 0 on overflow. */
int si_mul_ok(int64_t a, int64_t b, int64_t *out);
int si_add_ok(int64_t a, int64_t b, int64_t *out);

void si_init(void);           /* once per process: MKL's threading layer */
int si_num_threads(void);     /* threads the calling thread's kernels may use */

void *si_alloc(size_t bytes);   /* 64-byte aligned; NULL on failure or 0 bytes */
void si_free(void *p);

/* ---- ZIP / .npy (si_npz.c) ---------------------------------------------------------- */

typedef enum si_dtype { SI_F32, SI_I32, SI_U16, SI_I64, SI_U8 } si_dtype;

typedef struct si_array {
    char name[128];         /* member name without ".npy" */
    si_dtype dtype;
    int ndim;
    int64_t shape[4];
    int64_t count;          /* product of shape */
    const unsigned char *data; /* points into the archive buffer; may be unaligned */
} si_array;

typedef struct si_npz {
    si_array *arrays;
    int n;
} si_npz;

/* Parses every member of a stored (uncompressed) ZIP of .npy files in buf[0, size). The
 * arrays point into buf, which must outlive the si_npz. */
si_status_t si_npz_open(const unsigned char *buf, size_t size, si_npz *out);
void si_npz_close(si_npz *npz);
const si_array *si_npz_find(const si_npz *npz, const char *name);
const char *si_dtype_name(si_dtype t);

/* ---- JSON (si_json.c) --------------------------------------------------------------- */

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

/* ---- model (si_loader.c) ------------------------------------------------------------ */

enum si_act { SI_ACT_LINEAR = 0, SI_ACT_RELU = 1, SI_ACT_SOFTMAX = 2 };

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
    si_storage storage;
    float *w;                /* dense: rows * cols, row-major */
    float *csr_val;          /* CSR: nnz values */
    int32_t *csr_col;        /* CSR: nnz column indices */
    int64_t *csr_ptr;        /* CSR: rows + 1 row pointers */
    int64_t nnz;
    uint16_t *csr_col16;     /* CSR: the same column indices as uint16 when cols <= 65536, else NULL */
    void *mkl;               /* CSR: MKL inspector-executor handle (sparse_matrix_t), or NULL */
    /* Column-blocked copy for the batch-1 kernel of wide layers (si_plan.c builds it when
     * cols > SI_CSR_BLOCK_COLS): non-zeros ordered by (column block, row, column), so that
     * one block's slice of x stays in L1 while every row gathers from it. Row r's part of
     * block b is [bptr[b * rows + r], bptr[b * rows + r + 1]); bcol is relative to the block. */
    int n_blk;
    float *bval;
    uint16_t *bcol;
    int64_t *bptr;           /* n_blk * rows + 1 entries */
    float *bias;             /* rows values, or NULL */
    /* Execution chosen at load (si_plan.c) for batch 1 and for larger batches. */
    si_exec exec_b1, exec_bn;
    char why[200];           /* the reason for that choice, for `sparseinfer info` */
} si_layer;

/* How a weighted layer runs: si_exec in the public header. Dense execution needs L->w;
 * the sparse ones need the CSR arrays. */

struct si_model {
    si_layer *layers;
    int n_layers;
    int64_t in_h, in_w, in_c;
    int64_t max_act;         /* largest activation per sample (elements) */
    int64_t max_im2col;      /* largest im2col row (kh*kw*in_c) */
    char *manifest;
};

/* ---- planning (si_plan.c) ----------------------------------------------------------- */

/* Chooses exec_b1 / exec_bn of every weighted layer and converts storage to match:
 * densifies CSR that runs dense, compresses dense that runs sparse, builds uint16 column
 * indices and MKL handles where they will be used. */
si_status_t si_plan_model(si_model *m, const si_load_options *opt);

double si_read_bandwidth_gbs(size_t bytes, int repeats);  /* si_bandwidth.c */

/* ---- kernels (si_kernels.c) --------------------------------------------------------- */

extern int si_use_reference;

/* im2col rows [p0, p0 + m) of a conv layer's batch (row-major, m x L->cols). */
void si_im2col_rows(const si_layer *L, const float *in, int64_t p0, int64_t m, float *col);

#define SI_CSR_BLOCK_COLS 4096   /* 16 KB of x: half of Zen 4's (and most cores') L1D */

/* ---- sparse kernels (si_sparse.c): the runtime's own CSR kernels ---------------------
 * They compute the linear part only (no bias, no activation) and use si_num_threads()
 * OpenMP threads. Each has a plain reference beside it (si_use_reference). */
void si_f32_csrmv(const si_layer *L, const float *x, float *y);                 /* y = A x */
int64_t si_f32_csrmm_ws_floats(const si_layer *L, int n);
void si_f32_csrmm(const si_layer *L, const float *X, int n, float *Y, float *ws); /* Y[n x rows] = X[n x cols] A^T */
int64_t si_f32_spconv_ws_floats(const si_layer *L, int batch);
void si_f32_spconv(const si_layer *L, const float *in, int batch, float *out, float *ws); /* NHWC conv, CSR filters */

/* ---- MKL inspector-executor (si_mkl_sparse.c) --------------------------------------- */
si_status_t si_mkl_csr_prepare(si_layer *L);   /* handle + mv/mm hints + optimize, at load */
void si_mkl_csr_free(si_layer *L);
void si_mkl_csrmv(const si_layer *L, const float *x, float *y);
/* Row-major right-hand sides through explicit transposes (2-4x faster than MKL's
 * column-major mm here); ws: si_mkl_csrmm_ws_floats(L, n) floats. */
int64_t si_mkl_csrmm_ws_floats(const si_layer *L, int n);
void si_mkl_csrmm(const si_layer *L, const float *X, int n, float *Y, float *ws);
void si_mkl_spconv(const si_layer *L, const float *in, int batch, float *out, float *ws, int64_t ws_floats);

/* ---- dense fully connected at memory bandwidth (si_gemv.c) -------------------------- */
void si_f32_gemv(const si_layer *L, const float *x, float *y);  /* y = W x, threaded */

/* All batch-major, NHWC. ws: the context's scratch of ws_floats floats (im2col rows, or
 * what the sparse kernels asked for). */
void si_conv2d_forward(const si_layer *L, const float *in, int batch, float *out,
                       float *ws, int64_t ws_floats);
void si_dense_forward(const si_layer *L, const float *in, int batch, float *out, float *ws);
void si_maxpool_forward(const si_layer *L, const float *in, int batch, float *out);
void si_relu_inplace(float *x, int64_t n);
void si_softmax_rows(float *x, int64_t rows, int64_t cols);

#endif /* SI_INTERNAL_H */
