/* Model queries, contexts and the run loop. The run loop calls each weighted layer's
 * chosen registry entry (si_plan.c chose it at load); contexts size their scratch by
 * asking the same entries, so what a run uses is what was sized. */
#define _POSIX_C_SOURCE 200809L
#include "si_internal.h"

#include <omp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int si_use_reference = 0;

void si_set_reference_kernels(int on) { si_use_reference = on != 0; }

/* ---- model queries ------------------------------------------------------------------ */

si_status_t si_model_input_shape(const si_model *m, int64_t hwc[3]) {
    if (!m || !hwc) return si_fail(SI_ERR_ARGUMENT, "si_model_input_shape: NULL %s", m ? "hwc" : "model");
    hwc[0] = m->in_h; hwc[1] = m->in_w; hwc[2] = m->in_c;
    return SI_OK;
}

int64_t si_model_input_size(const si_model *m) {
    if (!m) return si_fail(SI_ERR_ARGUMENT, "si_model_input_size: NULL model"), -1;
    return m->in_h * m->in_w * m->in_c;
}

int64_t si_model_output_size(const si_model *m) {
    if (!m) return si_fail(SI_ERR_ARGUMENT, "si_model_output_size: NULL model"), -1;
    const si_layer *L = &m->layers[m->n_layers - 1];
    return L->out_h * L->out_w * L->out_c;
}

const char *si_model_manifest(const si_model *m) {
    if (!m) return si_fail(SI_ERR_ARGUMENT, "si_model_manifest: NULL model"), NULL;
    return m->manifest;
}

int si_model_num_layers(const si_model *m) {
    if (!m) return si_fail(SI_ERR_ARGUMENT, "si_model_num_layers: NULL model"), -1;
    return m->n_layers;
}

si_status_t si_model_plan_stats(const si_model *m, double *seconds, int *measured, int *cached) {
    if (!m) return si_fail(SI_ERR_ARGUMENT, "si_model_plan_stats: NULL model");
    if (seconds) *seconds = m->plan_seconds;
    if (measured) *measured = m->plan_measured;
    if (cached) *cached = m->plan_cached;
    return SI_OK;
}

/* a * b, or INT64_MAX when that overflows: sizes a query reports, never allocates. */
static int64_t mul_sat(int64_t a, int64_t b) {
    int64_t r;
    return si_mul_ok(a, b, &r) ? r : INT64_MAX;
}

/* Bytes of the shared forms a layer holds, plus every chosen entry's own. */
static int64_t layer_memory(const si_layer *L) {
    int64_t mem = L->bias ? 4 * L->rows : 0;
    if (L->w) mem += 4 * L->rows * L->cols; /* allocated, so no overflow */
    if (L->w8) mem += L->rows * L->cols;
    if (L->csr_ptr) mem += (L->q ? 5 : 8) * L->nnz + 8 * (L->rows + 1);
    if (L->q) mem += 12 * L->rows; /* weight scales, mul, add */
    for (int i = 0; si_algos[i]; i++)
        if (L->state[i] && si_algos[i]->bytes) mem += si_algos[i]->bytes(L, L->state[i]);
    return mem;
}

si_status_t si_model_layer_info(const si_model *m, int i, si_layer_info *out) {
    if (!m || !out) return si_fail(SI_ERR_ARGUMENT, "si_model_layer_info: NULL %s", m ? "info" : "model");
    if (out->struct_size < sizeof out->struct_size)
        return si_fail(SI_ERR_ARGUMENT, "si_model_layer_info: info->struct_size %zu (set it to sizeof(si_layer_info))",
                       out->struct_size);
    if (i < 0 || i >= m->n_layers)
        return si_fail(SI_ERR_ARGUMENT, "layer index %d out of range [0, %d)", i, m->n_layers);
    const si_layer *L = &m->layers[i];
    si_layer_info full, *info = &full; /* filled whole, handed over as far as the caller's struct goes */
    memset(info, 0, sizeof *info);
    info->name = L->name;
    info->type = L->type;
    info->out_shape[0] = L->out_h; info->out_shape[1] = L->out_w; info->out_shape[2] = L->out_c;
    info->rows = L->rows;
    info->cols = L->cols;
    info->storage = L->storage;
    info->exec_batch1 = L->algo[0] ? L->algo[0]->family : SI_EXEC_NONE;
    info->exec_batchn = L->algo[1] ? L->algo[1]->family : SI_EXEC_NONE;
    info->algo_batch1 = L->algo[0] ? L->algo[0]->name : "";
    info->algo_batchn = L->algo[1] ? L->algo[1]->name : "";
    info->plan_batch1 = L->plan_batch[0];
    info->plan_batchn = L->plan_batch[1];
    info->plan_positions1 = L->plan_positions[0];
    info->plan_positionsn = L->plan_positions[1];
    info->why = L->why;
    info->dtype = "";
    if (L->storage != SI_STORAGE_NONE) {
        int64_t bias = L->bias || L->q ? L->rows : 0;
        /* rows and cols are below 2^31 each, so rows * cols fits, 4 * rows * cols may not
         * (an empty CSR layer declares any shape) */
        info->params = L->rows * L->cols + bias;
        info->nnz = L->nnz;
        /* As the writer stores them (csr_bytes in sparseinfer/format.py): float32 values,
         * uint16 columns when they fit, int32 row pointers (int64 from 2^31 non-zeros) and
         * the int64 shape pair. */
        const int vb = L->q ? 1 : 4; /* bytes per value; int8 layers add an int32 bias and a float32 scale per row */
        int64_t csr = vb * L->nnz + (L->cols <= SI_FILE_COL16_MAX_COLS ? 2 : 4) * L->nnz +
                      (L->nnz < (INT64_C(1) << 31) ? 4 : 8) * (L->rows + 1) + 16;
        const int64_t w = L->storage == SI_STORAGE_DENSE ? mul_sat(vb, L->rows * L->cols)
                          : L->storage == SI_STORAGE_COMPACT ? L->compact_bytes : csr;
        info->weight_bytes = w + 4 * bias +
                             (L->q ? 4 * L->rows : 0);
        info->dtype = L->q ? "int8" : "float32";
        if (L->q) {
            info->in_scale = L->q_in_scale;
            info->in_zero_point = L->q_in_zero;
            info->out_scale = L->q_out_u8 ? L->q_out_scale : 0.0;
            info->out_zero_point = L->q_out_u8 ? L->q_out_zero : 0;
        }
        info->memory_bytes = layer_memory(L);
    }
    const size_t n = out->struct_size < sizeof full ? out->struct_size : sizeof full;
    full.struct_size = n;
    memcpy(out, &full, n);
    return SI_OK;
}

int si_model_layer_candidates(const si_model *m, int index, int regime, const char **names, double *seconds, int max) {
    if (!m || index < 0 || index >= m->n_layers || regime < 0 || regime >= SI_REGIMES || max < 0 ||
        (max > 0 && (!names || !seconds)))
        return -1;
    const si_layer *L = &m->layers[index];
    int n = 0;
    if (!L->algo[regime] || (regime == 1 && m->batch1_only)) return 0; /* max_batch 1: nothing timed above 1 */
    for (int i = 0; si_algos[i]; i++) {
        const si_algo *a = si_algos[i];
        /* a timed entry whatever applies says now: the forms its check read may be gone */
        if (a->type != L->type || a->int8 != L->q || !(L->cand_s[regime][i] >= 0 || a->applies(L, regime))) continue;
        if (n < max) { names[n] = a->name; seconds[n] = L->cand_s[regime][i]; }
        n++;
    }
    return n;
}

/* ---- contexts and runs -------------------------------------------------------------- */

struct si_context {
    const si_model *model;
    int max_batch;
    float *act[2];       /* ping-pong activations, max_batch * max_act floats each */
    float *ws;           /* the largest scratch any layer's entry asked for */
    int64_t ws_floats;
    double *prof;        /* si_context_set_profile: per-layer seconds of the last run, or NULL */
    float *const *trace; /* si_run_trace: where each layer's output goes, during that call */
    /* int8 models: an activation quantized for an int8 layer (max_batch * max_act bytes),
     * and a dequantized one (floats); NULL without int8 layers */
    uint8_t *qin;
    float *deq;
    /* max_batch 1 models (si_run, a sample at a time): one sample's layer times and trace
     * pointers, made with the context so a run allocates nothing */
    double *prof1;
    float **trace1;
};

si_status_t si_context_set_profile(si_context *ctx, double *layer_seconds) {
    if (!ctx) return si_fail(SI_ERR_ARGUMENT, "si_context_set_profile: NULL context");
    ctx->prof = layer_seconds;
    return SI_OK;
}

si_status_t si_context_create(const si_model *m, int max_batch, si_context **out) {
    if (!m || !out) return si_fail(SI_ERR_ARGUMENT, "si_context_create: NULL argument");
    if (max_batch < 1) return si_fail(SI_ERR_ARGUMENT, "si_context_create: max_batch %d < 1", max_batch);
    si_init();
    int64_t act;
    /* a model loaded with max_batch 1 runs any batch a sample at a time (si_run) */
    const int held = m->batch1_only ? 1 : max_batch;
    if (!si_mul_ok(m->max_act, held, &act) || act > (INT64_C(1) << 40) / 4)
        return si_fail(SI_ERR_ARGUMENT, "si_context_create: batch %d of %lld-element activations is too large",
                       max_batch, (long long)m->max_act);
    /* A blocked output (si_algo.run_blocked) holds whole blocks of at most SI_PANEL samples. */
    for (int l = 0; l < m->n_layers && held > 1; l++) {
        const si_layer *L = &m->layers[l];
        int64_t blocked = (int64_t)(max_batch + SI_PANEL - 1) / SI_PANEL * SI_PANEL * L->out_h * L->out_w * L->out_c;
        if (L->blocked_next && blocked > act) act = blocked;
    }
    si_context *c = calloc(1, sizeof *c);
    if (!c) return si_fail(SI_ERR_NOMEM, "out of memory for a context");
    c->model = m;
    c->max_batch = max_batch;
    for (int l = 0; l < m->n_layers; l++) {
        const si_layer *L = &m->layers[l];
        for (int g = 0; g < SI_REGIMES; g++) {
            const si_algo *a = L->algo[g];
            if (!a || (g == 1 && held == 1)) continue;
            /* the batch-1 entry runs one sample; the other up to max_batch */
            int64_t need = a->ws_floats(L, L->state[si_algo_index(a)], g ? held : 1);
            if (need > c->ws_floats) c->ws_floats = need;
        }
    }
    c->act[0] = si_alloc((size_t)act * sizeof(float));
    c->act[1] = si_alloc((size_t)act * sizeof(float));
    c->ws = c->ws_floats ? si_alloc((size_t)c->ws_floats * sizeof(float)) : NULL;
    int any_q = 0;
    for (int l = 0; l < m->n_layers; l++) any_q |= m->layers[l].q;
    if (any_q) {
        c->qin = si_alloc((size_t)act);
        c->deq = si_alloc((size_t)act * sizeof(float));
    }
    if (m->batch1_only && max_batch > 1) {
        c->prof1 = calloc((size_t)m->n_layers, sizeof *c->prof1);
        c->trace1 = calloc((size_t)m->n_layers, sizeof *c->trace1);
    }
    if (!c->act[0] || !c->act[1] || (c->ws_floats && !c->ws) || (any_q && (!c->qin || !c->deq)) ||
        (m->batch1_only && max_batch > 1 && (!c->prof1 || !c->trace1))) {
        si_context_free(c);
        return si_fail(SI_ERR_NOMEM, "out of memory for a context of batch %d (%lld MB of activations)", held,
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
    si_free(c->qin);
    si_free(c->deq);
    free(c->prof1);
    free(c->trace1);
    free(c);
}

static si_status_t run_batch(si_context *ctx, const float *input, int batch, float *output) {
    const si_model *m = ctx->model;
    const float *src = input;
    int cur = 0; /* index of the ping-pong buffer the next layer writes */
    int nb = 0;  /* src's layout: NHWC (0), or blocks of nb samples (si_algo.run_blocked) */
    int u8 = 0;  /* src holds uint8 (an int8 layer's output) quantized with (qs, qz) */
    float qs = 0.0f;
    int32_t qz = 0;
    const int tracing = ctx->trace != NULL; /* every layer's output separate and NHWC */
    int64_t n_src = (int64_t)batch * m->in_h * m->in_w * m->in_c;
    for (int l = 0; l < m->n_layers; l++) {
        const si_layer *L = &m->layers[l];
        const int l0 = l;
        double t0 = ctx->prof ? omp_get_wtime() : 0.0;
        float *dst = ctx->act[cur];
        int64_t n_out = (int64_t)batch * L->out_h * L->out_w * L->out_c;
        switch (L->type) {
        case SI_LAYER_CONV2D:
        case SI_LAYER_DENSE: {
            const si_algo *a = L->algo[batch > 1];
            const void *st = L->state[si_algo_index(a)];
            const int pool = a->run_pool && L->pool && !tracing; /* L->pool is layer l + 1 (si_plan.c) */
            int out_nb = 0; /* hand the output over blocked when the consumer's entry takes this NB */
            /* int8 layers read uint8 in their own quantization; float layers read floats */
            if (u8 && (!L->q || qs != L->q_in_scale || qz != L->q_in_zero)) {
                si_dequantize_u8((const uint8_t *)src, n_src, qs, qz, ctx->deq);
                src = ctx->deq;
                u8 = 0;
            }
            if (L->q && !u8) {
                si_quantize_u8(src, n_src, 1.0f / L->q_in_scale, L->q_in_zero, ctx->qin);
                src = (const float *)ctx->qin;
            }
            /* The profile times the layer, not the conversion at an int8 model's float
             * boundary (in an int8 chain the layer before writes its uint8 input). */
            if (ctx->prof) t0 = omp_get_wtime();
            if (batch > 1 && L->blocked_next && !si_use_reference && !tracing) {
                const si_layer *C = L->blocked_next;
                const int p = a->block_of(L, batch), q = C->algo[1]->block_of(C, batch);
                if (p > 0 && (q == 0 || q == p)) out_nb = p;
            }
            if (si_use_reference) a->run_ref(L, st, src, batch, dst);
            else if (nb || out_nb) a->run_blocked(L, st, src, nb, batch, dst, out_nb, pool, ctx->ws);
            else if (pool) a->run_pool(L, st, src, batch, dst, ctx->ws); /* this layer and its pool */
            else a->run(L, st, src, batch, dst, ctx->ws);
            l += !si_use_reference && pool;
            nb = out_nb;
            u8 = L->q && L->q_out_u8;
            qs = L->q_out_scale;
            qz = L->q_out_zero;
            break;
        }
        case SI_LAYER_MAXPOOL2D: /* the max commutes with a quantization (it is monotone) */
            if (u8) si_maxpool_u8(L, (const uint8_t *)src, batch, (uint8_t *)dst);
            else si_maxpool_forward(L, src, batch, dst);
            break;
        case SI_LAYER_FLATTEN:
            if (src == input) memcpy(dst, src, (size_t)n_out * sizeof(float));
            else dst = (float *)src;
            break;
        case SI_LAYER_RELU:
        case SI_LAYER_SOFTMAX:
            /* NHWC flatten is the identity; the others work in place once off the input. */
            if (u8) {
                si_dequantize_u8((const uint8_t *)src, n_out, qs, qz, dst);
                u8 = 0;
            } else if (src == input) memcpy(dst, src, (size_t)n_out * sizeof(float));
            else dst = (float *)src;
            if (L->type == SI_LAYER_RELU) si_relu_inplace(dst, n_out);
            if (L->type == SI_LAYER_SOFTMAX) si_softmax_rows(dst, n_out / L->out_c, L->out_c);
            break;
        }
        if (ctx->prof) {
            ctx->prof[l0] = omp_get_wtime() - t0;
            if (l > l0) ctx->prof[l] = 0.0; /* the fused pool ran inside layer l0 */
        }
        if (tracing && ctx->trace[l]) {
            if (u8) si_dequantize_u8((const uint8_t *)dst, n_out, qs, qz, ctx->trace[l]);
            else memcpy(ctx->trace[l], dst, (size_t)n_out * sizeof(float));
        }
        if (dst == ctx->act[cur]) cur ^= 1;
        src = dst;
        /* a blocked output's conversions (to an int8 or float consumer) take its last block's
         * lanes past the batch too, so the consumer reads finite values there */
        n_src = (int64_t)(nb ? (batch + nb - 1) / nb * nb : batch) * m->layers[l].out_h * m->layers[l].out_w *
                m->layers[l].out_c;
    }
    if (u8) si_dequantize_u8((const uint8_t *)src, n_src, qs, qz, output);
    else memcpy(output, src, (size_t)n_src * sizeof(float));
    return SI_OK;
}

static int64_t layer_size(const si_layer *L) { return L->out_h * L->out_w * L->out_c; }

si_status_t si_run(si_context *ctx, const float *input, int batch, float *output) {
    if (!ctx || !input || !output) return si_fail(SI_ERR_ARGUMENT, "si_run: NULL argument");
    if (batch < 1 || batch > ctx->max_batch)
        return si_fail(SI_ERR_ARGUMENT, "si_run: batch %d outside [1, %d] of this context", batch, ctx->max_batch);
    const si_model *m = ctx->model;
    if (!m->batch1_only || batch == 1) return run_batch(ctx, input, batch, output);
    /* max_batch 1: one sample at a time; a profile sums the samples' layer times, a trace
     * puts each sample's layer outputs at its rows */
    const int nl = m->n_layers;
    const int64_t in_n = m->in_h * m->in_w * m->in_c, out_n = layer_size(&m->layers[nl - 1]);
    double *const prof = ctx->prof;
    float *const *const trace = ctx->trace;
    for (int l = 0; prof && l < nl; l++) prof[l] = 0.0;
    si_status_t st = SI_OK;
    for (int i = 0; i < batch && !st; i++) {
        if (prof) ctx->prof = ctx->prof1;
        for (int l = 0; trace && l < nl; l++)
            ctx->trace1[l] = trace[l] ? trace[l] + i * layer_size(&m->layers[l]) : NULL;
        if (trace) ctx->trace = ctx->trace1;
        st = run_batch(ctx, input + i * in_n, 1, output + i * out_n);
        for (int l = 0; prof && l < nl; l++) prof[l] += ctx->prof1[l];
    }
    ctx->prof = prof;
    ctx->trace = trace;
    return st;
}

si_status_t si_run_trace(si_context *ctx, const float *input, int batch, float *const *layer_outputs) {
    if (!ctx || !layer_outputs) return si_fail(SI_ERR_ARGUMENT, "si_run_trace: NULL argument");
    const si_model *m = ctx->model;
    const si_layer *last = &m->layers[m->n_layers - 1];
    float *out = si_alloc((size_t)batch * (size_t)(last->out_h * last->out_w * last->out_c) * sizeof(float) + 64);
    if (!out) return si_fail(SI_ERR_NOMEM, "si_run_trace: out of memory");
    ctx->trace = layer_outputs;
    si_status_t st = si_run(ctx, input, batch, out);
    ctx->trace = NULL;
    si_free(out);
    return st;
}
