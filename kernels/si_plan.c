/* Per-layer execution planning, done once at load.
 *
 * For every conv2d / dense layer the planner picks dense or sparse execution separately
 * for batch 1 and for larger batches, from the layer's kind, size and density, then puts
 * the weights in the form(s) that execution needs. The cost model is a break-even density
 * per kernel kind, measured on the target CPU class by bench/compare.py's density sweep
 * (see docs/performance.md): below it the sparse kernel is faster than the dense one.
 * Near the break-even the two cost about the same, so a layer within the margin keeps the
 * smaller form in memory.
 */
#define _DEFAULT_SOURCE /* sysconf cache sizes */
#include "si_internal.h"

#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

/* Break-even densities: sparse execution is chosen below `margin`. Measured by
 * bench/compare.py's density sweep (bench/results/sweep.json; 2-core AMD Zen 4, MKL 2026.2):
 * `measured` is the lowest break-even seen for the kind, and the margin is set below it, so
 * that near the boundary the planner errs towards dense (never slower than dense beyond
 * noise). At batch 1 a dense layer whose weights fit in cache runs from cache between calls,
 * at several times DRAM bandwidth, so the sparse kernel must skip far more to win. */
typedef struct {
    const char *name;
    double margin;   /* sparse below this */
    double measured; /* the lowest break-even measured; the comments give the range and layers */
} layer_kind;

static const layer_kind KIND_CONV_B1 = {"conv batch 1", 0.35, 0.39};    /* 39-84%: VGG19 blocks 1-5, LeNet conv2 */
static const layer_kind KIND_CONV_BN = {"conv batch>1", 0.42, 0.48};    /* 48-69%: the same layers at batch 64 */
static const layer_kind KIND_FC_BN = {"fc batch>1", 0.30, 0.37};        /* 37-58%: VGG19 fc6/fc7/fc8, LeNet fc1 */
static const layer_kind KIND_FC_B1_DRAM = {"fc batch 1, weights from DRAM", 0.35, 0.39}; /* 39-45%: fc6, fc7 */
static const layer_kind KIND_FC_B1_L3 = {"fc batch 1, weights fit L3", 0.12, 0.16};      /* 16%: fc8, 16 MB */
static const layer_kind KIND_FC_B1_L2 = {"fc batch 1, weights fit L2", 0.05, 0.07};      /* 7%: LeNet fc1, 1.6 MB */
/* Below this many weights a layer costs microseconds either way: keep it dense, whose
 * kernels have the least fixed overhead (LeNet fc2, 5,000 weights: sparse never won). */
#define SMALL_LAYER_WEIGHTS 8192

/* Size in bytes of cpu0's unified cache of a level, from Linux's sysfs (glibc's sysconf
 * reported a 320 MB L3 inside the VM this was measured on; sysfs said 32 MB, as cpuid does),
 * or 0 when unknown. */
static int64_t sysfs_cache_bytes(int level) {
    for (int i = 0; i < 8; i++) {
        char path[96], buf[32];
        int lv = -1;
        long kb = -1;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f) break;
        if (fscanf(f, "%d", &lv) != 1) lv = -1;
        fclose(f);
        if (lv != level) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (!(f = fopen(path, "r"))) continue;
        if (fgets(buf, sizeof buf, f) && sscanf(buf, "%ldK", &kb) != 1) kb = -1;
        fclose(f);
        if (kb > 0) return (int64_t)kb << 10;
    }
    return 0;
}

/* Bytes of weights that stay cached between batch-1 calls: all cores' L2 together (each
 * thread streams its share of the rows), and three quarters of the L3 (the rest holds
 * activations). Conservative defaults when the machine does not say. */
static int64_t cache_bytes(int level) {
    int64_t v = sysfs_cache_bytes(level);
    if (level == 2) {
        if (v <= 0) v = 512 << 10;
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        return v * (cpus > 0 ? cpus : 1);
    }
    if (v <= 0) v = 8 << 20;
    return v * 3 / 4;
}

static const layer_kind *kind_of(const si_layer *L, int batched) {
    if (L->type == SI_LAYER_CONV2D) return batched ? &KIND_CONV_BN : &KIND_CONV_B1;
    if (batched) return &KIND_FC_BN;
    int64_t bytes = 4 * L->rows * L->cols;
    if (bytes <= cache_bytes(2)) return &KIND_FC_B1_L2;
    if (bytes <= cache_bytes(3)) return &KIND_FC_B1_L3;
    return &KIND_FC_B1_DRAM;
}

static si_status_t densify(si_layer *L) {
    size_t n = (size_t)(L->rows * L->cols);
    L->w = si_alloc(n * sizeof(float));
    if (!L->w) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory expanding CSR to dense (%zu MB)", L->name, n * 4 >> 20);
    memset(L->w, 0, n * sizeof(float));
    for (int64_t r = 0; r < L->rows; r++)
        for (int64_t k = L->csr_ptr[r]; k < L->csr_ptr[r + 1]; k++) L->w[r * L->cols + L->csr_col[k]] = L->csr_val[k];
    return SI_OK;
}

static si_status_t compress(si_layer *L) {
    int64_t nnz = 0, n = L->rows * L->cols;
    for (int64_t i = 0; i < n; i++) nnz += L->w[i] != 0.0f;
    L->csr_val = si_alloc((size_t)(nnz ? nnz : 1) * sizeof(float));
    L->csr_col = si_alloc((size_t)(nnz ? nnz : 1) * sizeof(int32_t));
    L->csr_ptr = si_alloc((size_t)(L->rows + 1) * sizeof(int64_t));
    if (!L->csr_val || !L->csr_col || !L->csr_ptr) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for CSR", L->name);
    int64_t k = 0;
    L->csr_ptr[0] = 0;
    for (int64_t r = 0; r < L->rows; r++) {
        const float *row = L->w + r * L->cols;
        for (int64_t c = 0; c < L->cols; c++)
            if (row[c] != 0.0f) { L->csr_val[k] = row[c]; L->csr_col[k] = (int32_t)c; k++; }
        L->csr_ptr[r + 1] = k;
    }
    L->nnz = nnz;
    return SI_OK;
}

/* The column-blocked copy of a CSR layer (see si_layer). */
static si_status_t build_blocked(si_layer *L) {
    int64_t nb = (L->cols + SI_CSR_BLOCK_COLS - 1) / SI_CSR_BLOCK_COLS, rows = L->rows;
    L->bval = si_alloc((size_t)(L->nnz ? L->nnz : 1) * sizeof(float));
    L->bcol = si_alloc((size_t)(L->nnz ? L->nnz : 1) * sizeof(uint16_t));
    L->bptr = si_alloc((size_t)(nb * rows + 1) * sizeof(int64_t));
    int64_t *cur = si_alloc((size_t)rows * sizeof(int64_t));
    if (!L->bval || !L->bcol || !L->bptr || !cur) {
        si_free(cur);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for the column-blocked CSR", L->name);
    }
    memcpy(cur, L->csr_ptr, (size_t)rows * sizeof(int64_t));
    int64_t k = 0;
    for (int64_t b = 0; b < nb; b++) {
        int64_t end_col = (b + 1) * SI_CSR_BLOCK_COLS;
        for (int64_t r = 0; r < rows; r++) {
            L->bptr[b * rows + r] = k;
            int64_t e = L->csr_ptr[r + 1];
            for (; cur[r] < e && L->csr_col[cur[r]] < end_col; cur[r]++, k++) {
                L->bval[k] = L->csr_val[cur[r]];
                L->bcol[k] = (uint16_t)(L->csr_col[cur[r]] - b * SI_CSR_BLOCK_COLS);
            }
        }
    }
    L->bptr[nb * rows] = k;
    L->n_blk = (int)nb;
    si_free(cur);
    return SI_OK;
}

static double layer_density(const si_layer *L) {
    return L->rows && L->cols ? (double)L->nnz / ((double)L->rows * (double)L->cols) : 1.0;
}

static si_exec choose(const si_layer *L, int batched, si_sparse_impl impl, char *why, size_t why_len) {
    double density = layer_density(L);
    const layer_kind *k = kind_of(L, batched);
    if (L->rows * L->cols < SMALL_LAYER_WEIGHTS) {
        snprintf(why, why_len, "small layer (%lld weights): dense", (long long)(L->rows * L->cols));
        return SI_EXEC_DENSE;
    }
    if (density < k->margin) {
        snprintf(why, why_len, "density %.1f%% < break-even %.0f%% (%s)", 100 * density, 100 * k->margin, k->name);
        return impl == SI_SPARSE_MKL ? SI_EXEC_SPARSE_MKL : SI_EXEC_SPARSE_OWN;
    }
    snprintf(why, why_len, "density %.1f%% >= break-even %.0f%% (%s)", 100 * density, 100 * k->margin, k->name);
    return SI_EXEC_DENSE;
}

si_status_t si_plan_model(si_model *m, const si_load_options *opt) {
    si_exec_policy policy = opt ? opt->policy : SI_POLICY_AUTO;
    si_sparse_impl impl = opt ? opt->sparse_impl : SI_SPARSE_AUTO;
    if (policy != SI_POLICY_AUTO && policy != SI_POLICY_DENSE && policy != SI_POLICY_SPARSE)
        return si_fail(SI_ERR_ARGUMENT, "load options: unknown execution policy %d", (int)policy);
    if (impl != SI_SPARSE_AUTO && impl != SI_SPARSE_OWN && impl != SI_SPARSE_MKL)
        return si_fail(SI_ERR_ARGUMENT, "load options: unknown sparse implementation %d", (int)impl);
    si_status_t st;
    for (int i = 0; i < m->n_layers; i++) {
        si_layer *L = &m->layers[i];
        if (L->type != SI_LAYER_CONV2D && L->type != SI_LAYER_DENSE) {
            L->exec_b1 = L->exec_bn = SI_EXEC_NONE;
            continue;
        }
        si_exec sparse = impl == SI_SPARSE_MKL ? SI_EXEC_SPARSE_MKL : SI_EXEC_SPARSE_OWN;
        if (policy == SI_POLICY_DENSE) {
            L->exec_b1 = L->exec_bn = SI_EXEC_DENSE;
            snprintf(L->why, sizeof L->why, "forced dense");
        } else if (policy == SI_POLICY_SPARSE) {
            L->exec_b1 = L->exec_bn = sparse;
            snprintf(L->why, sizeof L->why, "forced sparse (%s)", impl == SI_SPARSE_MKL ? "MKL" : "own kernels");
        } else {
            char w1[96], wn[96]; /* two of them and "; " fit L->why */
            L->exec_b1 = choose(L, 0, impl, w1, sizeof w1);
            L->exec_bn = choose(L, 1, impl, wn, sizeof wn);
            /* One form in memory: a layer that runs sparse at one batch size and only falls in
             * the safety margin at the other (density between the margin and the measured
             * break-even, where the two cost the same within noise) runs sparse at both, rather
             * than holding a dense copy beside the CSR one (LeNet fc1 at 5%: 1.6 MB for ~5%). */
            double density = layer_density(L);
            for (int b = 0; b < 2; b++) {
                si_exec *mine = b ? &L->exec_bn : &L->exec_b1, other = b ? L->exec_b1 : L->exec_bn;
                const layer_kind *k = kind_of(L, b);
                if (*mine == SI_EXEC_DENSE && other != SI_EXEC_DENSE && density < k->measured) {
                    *mine = other;
                    snprintf(b ? wn : w1, sizeof w1, "density %.1f%% < measured break-even %.0f%% (%s): "
                             "sparse, one form kept", 100 * density, 100 * k->measured, k->name);
                }
            }
            if (strcmp(w1, wn) == 0) snprintf(L->why, sizeof L->why, "%s", w1);
            else snprintf(L->why, sizeof L->why, "%s; %s", w1, wn);
        }
        int need_dense = L->exec_b1 == SI_EXEC_DENSE || L->exec_bn == SI_EXEC_DENSE;
        int need_csr = L->exec_b1 != SI_EXEC_DENSE || L->exec_bn != SI_EXEC_DENSE;
        int need_mkl = L->exec_b1 == SI_EXEC_SPARSE_MKL || L->exec_bn == SI_EXEC_SPARSE_MKL;
        if (need_dense && !L->w && (st = densify(L))) return st;
        if (need_csr && !L->csr_val && (st = compress(L))) return st;
        if (!need_dense && L->w) { si_free(L->w); L->w = NULL; }
        if (!need_csr && L->csr_val) {
            si_free(L->csr_val); si_free(L->csr_col); si_free(L->csr_ptr);
            L->csr_val = NULL; L->csr_col = NULL; L->csr_ptr = NULL;
        }
        int blocked = L->exec_b1 == SI_EXEC_SPARSE_OWN && L->type == SI_LAYER_DENSE && L->cols > SI_CSR_BLOCK_COLS;
        if (L->exec_b1 == SI_EXEC_SPARSE_OWN && L->type == SI_LAYER_DENSE && !blocked && L->cols <= 65536) {
            /* 2-byte column indices for the batch-1 kernel, the one bound by memory traffic:
             * 6 bytes per non-zero instead of 8. (The panel kernels of conv and batch > 1
             * reuse each non-zero across 64 positions and read the int32 columns.) */
            L->csr_col16 = si_alloc((size_t)(L->nnz ? L->nnz : 1) * sizeof(uint16_t));
            if (!L->csr_col16) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for CSR indices", L->name);
            for (int64_t k = 0; k < L->nnz; k++) L->csr_col16[k] = (uint16_t)L->csr_col[k];
        }
        if (need_mkl && (st = si_mkl_csr_prepare(L))) return st;
        if (blocked && (st = build_blocked(L))) return st;
    }
    return SI_OK;
}
