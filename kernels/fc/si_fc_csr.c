/* The runtime's own CSR fully connected layers: csrmv at batch 1 and csrmm above
 * (csr/si_csr_kernels.c), then bias and activation. References: direct loops over the
 * CSR form with double accumulation.
 *
 * fc_csrmv's state is a copy of the non-zeros laid out for the batch-1 kernel, the one
 * bound by memory traffic:
 *  - up to SI_CSR_BLOCK_COLS inputs: the CSR with uint16 column indices (6 bytes per
 *    non-zero instead of 8; the int32 form is still there for csrmm);
 *  - wider: a column-blocked copy, non-zeros ordered by (column block, row, column), so that
 *    one block's 16 KB slice of x stays in L1 while every row gathers from it (VGG fc6:
 *    25088 inputs, 100 KB of x). Row r's part of block b is [bptr[b * rows + r],
 *    bptr[b * rows + r + 1]); columns are relative to the block (so uint16 even for 70,000
 *    inputs).
 */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct mv_state {
    int n_blk;          /* 0: not blocked; col16 holds the layer's columns */
    float *bval;        /* blocked: values in block order */
    uint16_t *col16;    /* columns (block-relative when blocked) */
    int64_t *bptr;      /* blocked: n_blk * rows + 1 */
} mv_state;

static void mv_release(void *p) {
    mv_state *s = p;
    if (!s) return;
    si_free(s->bval); si_free(s->col16); si_free(s->bptr);
    free(s);
}

/* Any width: up to 4096 columns fit uint16, and wider layers are blocked. */
static int mv_applies(const si_layer *L, int regime) { return L->type == SI_LAYER_DENSE && regime == 0; }

static si_status_t mv_prepare(si_layer *L, void **out) {
    mv_state *s = calloc(1, sizeof *s);
    if (!s) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the csrmv state", L->name);
    const int64_t rows = L->rows, nnz = L->nnz;
    s->col16 = si_alloc((size_t)(nnz ? nnz : 1) * sizeof(uint16_t));
    if (!s->col16) goto nomem;
    if (L->cols <= SI_CSR_BLOCK_COLS) {
        for (int64_t k = 0; k < nnz; k++) s->col16[k] = (uint16_t)L->csr_col[k];
        *out = s;
        return SI_OK;
    }
    int64_t nb = (L->cols + SI_CSR_BLOCK_COLS - 1) / SI_CSR_BLOCK_COLS;
    s->bval = si_alloc((size_t)(nnz ? nnz : 1) * sizeof(float));
    s->bptr = si_alloc((size_t)(nb * rows + 1) * sizeof(int64_t));
    int64_t *cur = si_alloc((size_t)(rows ? rows : 1) * sizeof(int64_t));
    if (!s->bval || !s->bptr || !cur) { si_free(cur); goto nomem; }
    if (rows) memcpy(cur, L->csr_ptr, (size_t)rows * sizeof(int64_t));
    int64_t k = 0;
    for (int64_t b = 0; b < nb; b++) {
        int64_t end_col = (b + 1) * SI_CSR_BLOCK_COLS;
        for (int64_t r = 0; r < rows; r++) {
            s->bptr[b * rows + r] = k;
            int64_t e = L->csr_ptr[r + 1];
            for (; cur[r] < e && L->csr_col[cur[r]] < end_col; cur[r]++, k++) {
                s->bval[k] = L->csr_val[cur[r]];
                s->col16[k] = (uint16_t)(L->csr_col[cur[r]] - b * SI_CSR_BLOCK_COLS);
            }
        }
    }
    s->bptr[nb * rows] = k;
    s->n_blk = (int)nb;
    si_free(cur);
    *out = s;
    return SI_OK;
nomem:
    mv_release(s);
    return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the csrmv copy of %lld non-zeros", L->name, (long long)nnz);
}

static int64_t mv_bytes(const si_layer *L, const void *p) {
    const mv_state *s = p;
    if (!s) return 0;
    return 2 * L->nnz + (s->n_blk ? 4 * L->nnz + 8 * ((int64_t)s->n_blk * L->rows + 1) : 0);
}

static int64_t mv_ws(const si_layer *L, const void *st, int batch) { (void)L; (void)st; (void)batch; return 0; }

/* Rows split by non-zeros; a blocked layer goes block by block within each thread's rows,
 * y[r] stored by block 0 and accumulated by the others. */
typedef void (*mv_rows_fn)(const si_csr_view *, const uint16_t *, int64_t, int64_t, const float *, float *, int);

static void csrmv(const si_layer *L, const mv_state *s, const float *x, float *y, mv_rows_fn rows_fn) {
    const int nt = si_threads_for(L->nnz + L->rows, L->rows);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int64_t r0, r1;
        si_part_rows(L->csr_ptr, 0, L->rows, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        if (!s->n_blk) {
            si_csr_view A = {L->csr_val, L->csr_col, L->csr_ptr};
            rows_fn(&A, s->col16, r0, r1, x, y, 0);
        } else {
            for (int b = 0; b < s->n_blk; b++) {
                si_csr_view A = {s->bval, NULL, s->bptr + (int64_t)b * L->rows};
                rows_fn(&A, s->col16, r0, r1, x + (int64_t)b * SI_CSR_BLOCK_COLS, y, b > 0);
            }
        }
    }
}

static void mv_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)ws;
    for (int n = 0; n < batch; n++) csrmv(L, st, in + (int64_t)n * L->cols, out + (int64_t)n * L->rows, si_k->csr_mv_rows);
    si_bias_act(L, out, batch);
}

static void mv_run_gather(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)ws;
    for (int n = 0; n < batch; n++)
        csrmv(L, st, in + (int64_t)n * L->cols, out + (int64_t)n * L->rows, si_k->csr_mv_gather);
    si_bias_act(L, out, batch);
}

static void csr_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_f32_csrmm_ref(L, in, batch, out);
    si_bias_act_ref(L, out, batch);
}

const si_algo si_algo_fc_csrmv = {
    .name = "fc_csrmv", .type = SI_LAYER_DENSE, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .applies = mv_applies, .prepare = mv_prepare, .ws_floats = mv_ws, .run = mv_run, .run_ref = csr_run_ref,
    .bytes = mv_bytes, .release = mv_release,
};

/* The same with x gathered by vgatherdps (csr_mv_gather): on Intel SPR fc6 and fc7 at 4%
 * ran 1.6x and 1.5x the scalar rows' speed; gathers are slower on other cores, hence an
 * entry of its own that the planner times. */
const si_algo si_algo_fc_csrmv_gather = {
    .name = "fc_csrmv_gather", .type = SI_LAYER_DENSE, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .applies = mv_applies, .prepare = mv_prepare, .ws_floats = mv_ws, .run = mv_run_gather, .run_ref = csr_run_ref,
    .bytes = mv_bytes, .release = mv_release,
};

/* ---- csrmm ------------------------------------------------------------------------- */

static int mm_applies(const si_layer *L, int regime) { return L->type == SI_LAYER_DENSE && regime == 1; }
static int64_t mm_ws(const si_layer *L, const void *st, int batch) { (void)st; return si_f32_csrmm_ws_floats(L, batch); }

static void mm_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    (void)st;
    si_f32_csrmm(L, in, batch, out, ws);
    si_bias_act(L, out, batch);
}

/* A blocked input ([cols][NB] per block) is csrmm's panel as it stands; the output is NHWC. */
static void mm_run_blocked(const si_layer *L, const void *st, const float *in, int in_nb, int batch, float *out,
                           int out_nb, int pool, float *ws) {
    (void)st; (void)out_nb; (void)pool;
    si_f32_csrmm_blocked(L, in, in_nb, batch, out, ws);
    si_bias_act(L, out, batch);
}

static int mm_block_of(const si_layer *L, int batch) { (void)L; (void)batch; return 0; /* any, as an input */ }

const si_algo si_algo_fc_csrmm = {
    .name = "fc_csrmm", .type = SI_LAYER_DENSE, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .applies = mm_applies, .ws_floats = mm_ws, .run = mm_run, .run_blocked = mm_run_blocked,
    .block_of = mm_block_of, .run_ref = csr_run_ref,
};
