/* Sparse direct convolution with the patch tile blocked for L1: conv_sparse_direct's
 * algorithm (CSR filters against transposed patch tiles of 64 output positions), but each
 * filter's non-zeros go through the tile in blocks of columns whose rows of the tile fit
 * half the L1 data cache, and the filters' sums accumulate in a contiguous rows x 64 tile of
 * outputs (vector loads and stores) that is transposed into NHWC once per tile.
 *
 * Why: the 64-wide tile of a large layer (VGG19 block 4, K = 4608: 1.2 MB) lives in L2 or
 * L3, and every non-zero reads a 256-byte row of it, so conv_sparse_direct is bound by L2
 * bandwidth (on Zen 5 it did 64 multiply-adds per ~7 cycles against the packed GEMM's ~2.5,
 * breaking even near 38% density). With the block in L1 the same reads come at L1 speed;
 * the price is one load-add-store of a tile row per filter and block.
 *
 * State: per non-zero its row offset in the tile (column * 64) and, per block and filter,
 * where that filter's non-zeros of the block start. Reference: the direct convolution. */
#include "si_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TW SI_PANEL

typedef struct tiled_state {
    int32_t *off;      /* nnz: column * TW */
    int64_t *bstart;   /* (n_blk + 1) * rows: first non-zero of row r at or after block b's first column */
    int64_t blk;       /* columns per block */
    int n_blk;
} tiled_state;

static int tiled_applies(const si_layer *L, int regime) {
    (void)regime;
    return L->type == SI_LAYER_CONV2D && L->cols * TW < INT32_MAX;
}

static void tiled_release(void *p) {
    tiled_state *s = p;
    if (s) { si_free(s->off); si_free(s->bstart); free(s); }
}

static si_status_t tiled_prepare(si_layer *L, void **out) {
    tiled_state *s = calloc(1, sizeof *s);
    if (!s) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the tiled state", L->name);
    int64_t blk = si_cache_bytes(1, 32 << 10) / 2 / (TW * 4);
    s->blk = blk < 8 ? 8 : blk;
    s->n_blk = (int)((L->cols + s->blk - 1) / s->blk);
    const int64_t rows = L->rows;
    s->off = si_alloc((size_t)(L->nnz ? L->nnz : 1) * sizeof(int32_t));
    s->bstart = si_alloc((size_t)((s->n_blk + 1) * rows + 1) * sizeof(int64_t));
    if (!s->off || !s->bstart) {
        tiled_release(s);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the tiled state", L->name);
    }
    for (int64_t k = 0; k < L->nnz; k++) s->off[k] = (int32_t)(L->csr_col[k] * TW);
    for (int64_t r = 0; r < rows; r++) {
        int64_t k = L->csr_ptr[r];
        for (int b = 0; b <= s->n_blk; b++) {
            const int64_t c0 = b * s->blk;
            while (k < L->csr_ptr[r + 1] && L->csr_col[k] < c0) k++;
            s->bstart[(int64_t)b * rows + r] = b == s->n_blk ? L->csr_ptr[r + 1] : k;
        }
    }
    *out = s;
    return SI_OK;
}

static int64_t tiled_bytes(const si_layer *L, const void *st) {
    const tiled_state *s = st;
    return s ? 4 * L->nnz + 8 * ((int64_t)(s->n_blk + 1) * L->rows) : 0;
}

/* Per thread: the K x TW patch tile, in_c zeros, and the rows x TW output tile. */
static int64_t slot_floats(const si_layer *L) {
    return (L->cols * TW + L->in_c + 15) / 16 * 16 + L->rows * TW;
}

static int64_t tiled_ws(const si_layer *L, const void *st, int batch) {
    (void)st; (void)batch;
    return slot_floats(L) * si_max_threads();
}

static void tiled_conv(const si_layer *L, const tiled_state *s, const float *in, int batch, float *out, float *ws) {
    const int64_t P = (int64_t)batch * L->out_h * L->out_w, F = L->rows, sf = slot_floats(L);
    if (P <= 0 || F <= 0) return;
    const si_kernel_table *k = si_k;
    int nt;
    int64_t fsplit, items, chunk;
    si_tile_split(L, P, TW, &nt, &fsplit, &items, &chunk);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *patches = ws + (int64_t)omp_get_thread_num() * sf;
        float *zeros = patches + L->cols * TW;
        float *tile = patches + (L->cols * TW + L->in_c + 15) / 16 * 16;
        memset(zeros, 0, sizeof(float) * (size_t)L->in_c);
        int64_t built = -1;
#pragma omp for schedule(dynamic, chunk)
        for (int64_t it = 0; it < items; it++) {
            int64_t t = it / fsplit, part = it % fsplit, p0 = t * TW, r0, r1;
            int w = (int)(P - p0 < TW ? P - p0 : TW);
            if (built != t) {
                k->patches_t(L, in, p0, w, TW, patches, zeros);
                built = t;
            }
            si_part_rows(L->csr_ptr, 0, F, (int)part, (int)fsplit, &r0, &r1);
            for (int b = 0; b < s->n_blk; b++)
                k->csr_planar(L->csr_val, s->off, s->bstart + (int64_t)b * F, s->bstart + (int64_t)(b + 1) * F, r0, r1,
                              patches, w, tile, b > 0);
            float *o = out + p0 * F;
            for (int j = 0; j < w; j++)
                for (int64_t r = r0; r < r1; r++) o[j * F + r] = tile[(r - r0) * TW + j];
        }
    }
}

static void tiled_run(const si_layer *L, const void *st, const float *in, int batch, float *out, float *ws) {
    tiled_conv(L, st, in, batch, out, ws);
    si_bias_act(L, out, (int64_t)batch * L->out_h * L->out_w);
}

static void tiled_run_ref(const si_layer *L, const void *st, const float *in, int batch, float *out) {
    (void)st;
    si_f32_spconv_ref(L, in, batch, out);
    si_bias_act_ref(L, out, (int64_t)batch * L->out_h * L->out_w);
}

const si_algo si_algo_conv_sparse_tiled = {
    .name = "conv_sparse_tiled", .type = SI_LAYER_CONV2D, .family = SI_EXEC_SPARSE_OWN, .forms = SI_FORM_CSR,
    .applies = tiled_applies, .prepare = tiled_prepare, .ws_floats = tiled_ws, .run = tiled_run,
    .run_ref = tiled_run_ref, .bytes = tiled_bytes, .release = tiled_release,
};
