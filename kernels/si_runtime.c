/* Errors, memory, contexts and the run loop. */
#define _POSIX_C_SOURCE 200809L
#include "si_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mkl.h>
#include <omp.h>
#include <pthread.h>

/* Scratch for im2col: enough rows of the patch matrix to keep sgemm efficient without
 * materialising a whole VGG layer (224*224*576 floats = 115 MB per image). */
#define IM2COL_TARGET_FLOATS (INT64_C(2) << 20)
#define IM2COL_MIN_ROWS 64

static _Thread_local char last_error[1024];
static _Thread_local int thread_setting = 0;

si_status_t si_fail(si_status_t status, const char *fmt, ...) {
    char tmp[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap); /* via tmp: fmt's arguments may point into last_error */
    va_end(ap);
    memcpy(last_error, tmp, sizeof tmp);
    return status;
}

const char *si_last_error(void) { return last_error; }

const char *si_version(void) { return "0.1"; }

const char *si_status_str(si_status_t s) {
    switch (s) {
    case SI_OK: return "ok";
    case SI_ERR_IO: return "I/O error";
    case SI_ERR_FORMAT: return "invalid model file";
    case SI_ERR_MODEL: return "invalid model";
    case SI_ERR_UNSUPPORTED: return "unsupported";
    case SI_ERR_ARGUMENT: return "invalid argument";
    case SI_ERR_NOMEM: return "out of memory";
    case SI_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

int si_mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return 0;
    if (a != 0 && b > INT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int si_add_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0 || a > INT64_MAX - b) return 0;
    *out = a + b;
    return 1;
}

void *si_alloc(size_t bytes) {
    if (bytes == 0) return NULL;
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes || posix_memalign(&p, 64, rounded) != 0) return NULL;
    return p;
}

void si_free(void *p) { free(p); }

void si_set_reference_kernels(int on) { si_use_reference = on != 0; }

/* MKL threads through libgomp, like the runtime's own OpenMP kernels, so the two share one
 * pool instead of two runtimes fighting over the cores. Has effect only if it comes before
 * the process's first MKL call (otherwise MKL keeps the layer it already chose). */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void init_library(void) {
    /* SPARSEINFER_MKL_THREADING=intel keeps MKL on its own OpenMP (libiomp5), for comparison. */
    const char *v = getenv("SPARSEINFER_MKL_THREADING");
    mkl_set_threading_layer(v && strcmp(v, "intel") == 0 ? MKL_THREADING_INTEL : MKL_THREADING_GNU);
}
void si_init(void) { pthread_once(&init_once, init_library); }

int si_set_num_threads(int n) {
    si_init();
    int prev = thread_setting;
    thread_setting = n > 0 ? n : 0;
    mkl_set_num_threads_local(thread_setting); /* 0 restores the global setting */
    omp_set_num_threads(thread_setting ? thread_setting : omp_get_num_procs());
    return prev;
}

int si_num_threads(void) { return thread_setting ? thread_setting : omp_get_max_threads(); }

double si_util_read_bandwidth(size_t bytes, int repeats) {
    si_init();
    return si_read_bandwidth_gbs(bytes, repeats);
}

/* ---- model queries ------------------------------------------------------------------ */

void si_model_input_shape(const si_model *m, int64_t hwc[3]) {
    hwc[0] = m->in_h; hwc[1] = m->in_w; hwc[2] = m->in_c;
}

int64_t si_model_input_size(const si_model *m) { return m->in_h * m->in_w * m->in_c; }

int64_t si_model_output_size(const si_model *m) {
    const si_layer *L = &m->layers[m->n_layers - 1];
    return L->out_h * L->out_w * L->out_c;
}

const char *si_model_manifest(const si_model *m) { return m->manifest; }

int si_model_num_layers(const si_model *m) { return m->n_layers; }

si_status_t si_model_layer_info(const si_model *m, int i, si_layer_info *info) {
    if (!m || !info) return si_fail(SI_ERR_ARGUMENT, "si_model_layer_info: NULL argument");
    if (i < 0 || i >= m->n_layers)
        return si_fail(SI_ERR_ARGUMENT, "layer index %d out of range [0, %d)", i, m->n_layers);
    const si_layer *L = &m->layers[i];
    memset(info, 0, sizeof *info);
    info->name = L->name;
    info->type = L->type;
    info->out_shape[0] = L->out_h; info->out_shape[1] = L->out_w; info->out_shape[2] = L->out_c;
    info->rows = L->rows;
    info->cols = L->cols;
    info->storage = L->storage;
    info->exec_batch1 = L->exec_b1;
    info->exec_batchn = L->exec_bn;
    info->why = L->why;
    if (L->storage != SI_STORAGE_NONE) {
        int64_t bias = L->bias ? L->rows : 0;
        info->params = L->rows * L->cols + bias;
        info->nnz = L->nnz;
        /* As the writer stores them: CSR with uint16 columns when they fit, int32 row pointers. */
        int64_t csr = 4 * L->nnz + (L->cols <= 65536 ? 2 : 4) * L->nnz + 4 * (L->rows + 1);
        info->weight_bytes = (L->storage == SI_STORAGE_DENSE ? 4 * L->rows * L->cols : csr) + 4 * bias;
        int64_t mem = 4 * bias;
        if (L->w) mem += 4 * L->rows * L->cols;
        if (L->csr_val) mem += 4 * L->nnz + 8 * (L->rows + 1);
        if (L->csr_col) mem += 4 * L->nnz;
        if (L->csr_col16) mem += 2 * L->nnz;
        if (L->bval) mem += 6 * L->nnz + 8 * ((int64_t)L->n_blk * L->rows + 1);
        info->memory_bytes = mem;
    }
    return SI_OK;
}

/* ---- contexts and runs -------------------------------------------------------------- */

struct si_context {
    const si_model *model;
    int max_batch;
    float *act[2];       /* ping-pong activations, max_batch * max_act floats each */
    float *ws;           /* im2col scratch */
    int64_t ws_floats;
};

si_status_t si_context_create(const si_model *m, int max_batch, si_context **out) {
    if (!m || !out) return si_fail(SI_ERR_ARGUMENT, "si_context_create: NULL argument");
    if (max_batch < 1) return si_fail(SI_ERR_ARGUMENT, "si_context_create: max_batch %d < 1", max_batch);
    si_init();
    si_context *c = calloc(1, sizeof *c);
    if (!c) return si_fail(SI_ERR_NOMEM, "out of memory for a context");
    c->model = m;
    c->max_batch = max_batch;
    int64_t act;
    if (!si_mul_ok(m->max_act, max_batch, &act) || act > (INT64_C(1) << 40) / 4) {
        free(c);
        return si_fail(SI_ERR_ARGUMENT, "si_context_create: batch %d of %lld-element activations is too large",
                       max_batch, (long long)m->max_act);
    }
    for (int l = 0; l < m->n_layers; l++) {
        const si_layer *L = &m->layers[l];
        int64_t need = 0;
        int sparse_own = L->exec_b1 == SI_EXEC_SPARSE_OWN || L->exec_bn == SI_EXEC_SPARSE_OWN;
        int im2col = L->exec_b1 == SI_EXEC_DENSE || L->exec_bn == SI_EXEC_DENSE ||
                     L->exec_b1 == SI_EXEC_SPARSE_MKL || L->exec_bn == SI_EXEC_SPARSE_MKL;
        if (L->type == SI_LAYER_CONV2D) {
            if (im2col) {
                int64_t positions = (int64_t)max_batch * L->out_h * L->out_w;
                int64_t rows = IM2COL_TARGET_FLOATS / L->cols;
                if (rows < IM2COL_MIN_ROWS) rows = IM2COL_MIN_ROWS;
                if (rows > positions) rows = positions;
                need = rows * L->cols;
            }
            if (sparse_own) {
                int64_t s = si_f32_spconv_ws_floats(L, max_batch);
                if (s > need) need = s;
            }
        } else if (L->type == SI_LAYER_DENSE && max_batch > 1 && L->exec_bn == SI_EXEC_SPARSE_OWN) {
            need = si_f32_csrmm_ws_floats(L, max_batch);
        } else if (L->type == SI_LAYER_DENSE && max_batch > 1 && L->exec_bn == SI_EXEC_SPARSE_MKL) {
            need = si_mkl_csrmm_ws_floats(L, max_batch);
        }
        if (need > c->ws_floats) c->ws_floats = need;
    }
    c->act[0] = si_alloc((size_t)act * sizeof(float));
    c->act[1] = si_alloc((size_t)act * sizeof(float));
    c->ws = c->ws_floats ? si_alloc((size_t)c->ws_floats * sizeof(float)) : NULL;
    if (!c->act[0] || !c->act[1] || (c->ws_floats && !c->ws)) {
        si_context_free(c);
        return si_fail(SI_ERR_NOMEM, "out of memory for a context of batch %d (%lld MB of activations)", max_batch,
                       (long long)(2 * act * 4 >> 20));
    }
    *out = c;
    return SI_OK;
}

void si_context_free(si_context *c) {
    if (!c) return;
    si_free(c->act[0]);
    si_free(c->act[1]);
    si_free(c->ws);
    free(c);
}

si_status_t si_run(si_context *ctx, const float *input, int batch, float *output) {
    if (!ctx || !input || !output) return si_fail(SI_ERR_ARGUMENT, "si_run: NULL argument");
    if (batch < 1 || batch > ctx->max_batch)
        return si_fail(SI_ERR_ARGUMENT, "si_run: batch %d outside [1, %d] of this context", batch, ctx->max_batch);
    const si_model *m = ctx->model;
    const float *src = input;
    int cur = 0; /* index of the ping-pong buffer the next layer writes */
    for (int l = 0; l < m->n_layers; l++) {
        const si_layer *L = &m->layers[l];
        float *dst = ctx->act[cur];
        int64_t n_out = (int64_t)batch * L->out_h * L->out_w * L->out_c;
        switch (L->type) {
        case SI_LAYER_CONV2D: si_conv2d_forward(L, src, batch, dst, ctx->ws, ctx->ws_floats); break;
        case SI_LAYER_DENSE: si_dense_forward(L, src, batch, dst, ctx->ws); break;
        case SI_LAYER_MAXPOOL2D: si_maxpool_forward(L, src, batch, dst); break;
        case SI_LAYER_FLATTEN:
        case SI_LAYER_RELU:
        case SI_LAYER_SOFTMAX:
            /* NHWC flatten is the identity; the others work in place once off the input. */
            if (src == input) memcpy(dst, src, (size_t)n_out * sizeof(float));
            else dst = (float *)src;
            if (L->type == SI_LAYER_RELU) si_relu_inplace(dst, n_out);
            if (L->type == SI_LAYER_SOFTMAX) si_softmax_rows(dst, n_out / L->out_c, L->out_c);
            break;
        }
        if (dst == ctx->act[cur]) cur ^= 1;
        src = dst;
    }
    const si_layer *last = &m->layers[m->n_layers - 1];
    memcpy(output, src, (size_t)batch * (size_t)(last->out_h * last->out_w * last->out_c) * sizeof(float));
    return SI_OK;
}
