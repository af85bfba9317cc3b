/* The planner: per weighted layer and batch regime (batch 1, larger batches), the fastest
 * registry entry on this CPU, measured (FFTW_MEASURE, cuDNN's benchmark mode).
 *
 * For each layer and regime the entries that apply are timed on the layer's own weights,
 * interleaved in rounds (each round runs every candidate once, so drift hits them alike),
 * and the median wins; after the warm-up, candidates over HOPELESS times the fastest drop out.
 * Convolutions are timed on a bounded problem: the regime's batch, or
 * fewer samples, or a strip of output rows of one sample, holding at most MAC_CAP dense
 * multiply-adds but at least MIN_POSITIONS output positions (enough 64-wide tiles for
 * every thread), because cost per output position is what the candidates differ in and a
 * full 224x224 VGG layer would take the whole time budget alone.
 *
 * Results go to a per-user cache (one line per layer regime: CPU, ISA, threads, layer
 * signature, non-zeros, timed problem -> seconds per candidate), so a second load of the
 * same model measures nothing, like FFTW's wisdom. Without measuring (SI_PLAN_NO_MEASURE)
 * and without a cache line, a conservative default applies: the dense entry unless the
 * layer keeps under DEFAULT_SPARSE_BELOW of its weights.
 *
 * One form in memory: when the two regimes' winners hold different weight forms (dense, CSR,
 * or an entry's own packed copy), a regime switches to the fastest candidate that reads the other's form if that
 * costs at most ONE_FORM_SLACK, rather than holding both forms for a gain within noise.
 */
#define _POSIX_C_SOURCE 200809L
#include "si_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAC_CAP 5.0e8               /* dense multiply-adds of one timed conv problem */
#define HOPELESS 2.0                /* a candidate this much slower than the best in warm-up is not timed further */
#define REPEAT_BELOW 0.05 /* s */
#define MIN_POSITIONS (8 * SI_PANEL) /* output positions a timed conv problem keeps at least */
#define MIN_ROUNDS 3
#define MAX_ROUNDS 41
#define ROUND_TIME 0.02             /* stop after MIN_ROUNDS once a regime has been timed this long */
#define DEFAULT_PLAN_BATCH 8
#define DEFAULT_SPARSE_BELOW 0.10   /* unmeasured: sparse only below 10% density */
#define SPARSE_BELOW 0.9            /* sparse candidates are timed only below 90% density */
#define ONE_FORM_SLACK 1.10
/* ... and at most ONE_FORM_SLACK_BIG where the form left out would be FORM_BIG times the kept
 * one's bytes or more (a dense copy of a pruned layer beside its CSR form): pruned LeNet-5
 * int8 held fc1's packed dense weights (328 KB) for batch 1 beside its CSR (16 KB) for 1.28x
 * on a 2 us layer, and its loaded bytes were 3.6x the fp32 pruned model's. */
#define ONE_FORM_SLACK_BIG 1.5
#define FORM_BIG 8.0
#define APPROX_MARGIN 1.3           /* an approximate int8 entry must be this much faster than the exact ones */
#define CACHE_MAX_BYTES (16 << 20)
#define CACHE_FORMAT "sparseinfer-plan-1"

/* ---- shared weight forms ------------------------------------------------------------ */

/* int8 layers (L->q): the same forms with int8 values, w8 and csr_val8. */
static si_status_t form_dense8(si_layer *L) {
    if (L->w8) return SI_OK;
    int64_t n;
    if (!si_mul_ok(L->rows, L->cols, &n) || n > (INT64_C(1) << 40))
        return si_fail(SI_ERR_MODEL, "layer %s: %lld x %lld weights are too many to expand to dense", L->name,
                       (long long)L->rows, (long long)L->cols);
    L->w8 = si_alloc((size_t)(n ? n : 1));
    if (!L->w8)
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory expanding CSR to dense int8 (%lld MB)", L->name,
                       (long long)(n >> 20));
    memset(L->w8, 0, (size_t)(n ? n : 1));
    for (int64_t r = 0; r < L->rows; r++)
        for (int64_t k = L->csr_ptr[r]; k < L->csr_ptr[r + 1]; k++) L->w8[r * L->cols + L->csr_col[k]] = L->csr_val8[k];
    return SI_OK;
}

static si_status_t form_csr8(si_layer *L) {
    if (L->csr_ptr) {
        if (!L->csr_val8) L->csr_val8 = si_alloc(1);
        if (!L->csr_col) L->csr_col = si_alloc(sizeof(int32_t));
        if (!L->csr_val8 || !L->csr_col) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for CSR", L->name);
        return SI_OK;
    }
    int64_t nnz = 0, n = L->rows * L->cols;
    for (int64_t i = 0; i < n; i++) nnz += L->w8[i] != 0;
    L->csr_val8 = si_alloc((size_t)(nnz ? nnz : 1));
    L->csr_col = si_alloc((size_t)(nnz ? nnz : 1) * sizeof(int32_t));
    L->csr_ptr = si_alloc((size_t)(L->rows + 1) * sizeof(int64_t));
    if (!L->csr_val8 || !L->csr_col || !L->csr_ptr) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for CSR", L->name);
    int64_t k = 0;
    L->csr_ptr[0] = 0;
    for (int64_t r = 0; r < L->rows; r++) {
        const int8_t *row = L->w8 + r * L->cols;
        for (int64_t c = 0; c < L->cols; c++)
            if (row[c]) { L->csr_val8[k] = row[c]; L->csr_col[k] = (int32_t)c; k++; }
        L->csr_ptr[r + 1] = k;
    }
    L->nnz = nnz;
    return SI_OK;
}

si_status_t si_form_dense(si_layer *L) {
    if (L->q) return form_dense8(L);
    if (L->w) return SI_OK;
    int64_t n;
    if (!si_mul_ok(L->rows, L->cols, &n) || n > (INT64_C(1) << 40) / 4)
        return si_fail(SI_ERR_MODEL, "layer %s: %lld x %lld weights are too many to expand to dense", L->name,
                       (long long)L->rows, (long long)L->cols);
    L->w = si_alloc((size_t)(n ? n : 1) * sizeof(float));
    if (!L->w)
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory expanding CSR to dense (%lld MB)", L->name,
                       (long long)(n * 4 >> 20));
    memset(L->w, 0, (size_t)(n ? n : 1) * sizeof(float));
    for (int64_t r = 0; r < L->rows; r++)
        for (int64_t k = L->csr_ptr[r]; k < L->csr_ptr[r + 1]; k++) L->w[r * L->cols + L->csr_col[k]] = L->csr_val[k];
    return SI_OK;
}

si_status_t si_form_csr(si_layer *L) {
    if (L->q) return form_csr8(L);
    if (L->csr_ptr) {
        /* A layer that pruning emptied may come without value and column arrays. */
        if (!L->csr_val) L->csr_val = si_alloc(sizeof(float));
        if (!L->csr_col) L->csr_col = si_alloc(sizeof(int32_t));
        if (!L->csr_val || !L->csr_col) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory for CSR", L->name);
        return SI_OK;
    }
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

static void drop_forms(si_layer *L, unsigned keep) {
    if (!(keep & SI_FORM_DENSE) && L->w) { si_free(L->w); L->w = NULL; }
    if (!(keep & SI_FORM_DENSE) && L->w8) { si_free(L->w8); L->w8 = NULL; }
    if (!(keep & SI_FORM_CSR) && L->csr_ptr) {
        si_free(L->csr_val); si_free(L->csr_val8); si_free(L->csr_col); si_free(L->csr_ptr);
        L->csr_val = NULL; L->csr_val8 = NULL; L->csr_col = NULL; L->csr_ptr = NULL;
    }
}

static si_status_t need_forms(si_layer *L, unsigned forms) {
    si_status_t st;
    if ((forms & SI_FORM_DENSE) && (st = si_form_dense(L))) return st;
    if ((forms & SI_FORM_CSR) && (st = si_form_csr(L))) return st;
    return SI_OK;
}

static si_status_t prepare(si_layer *L, const si_algo *a) {
    int i = si_algo_index(a);
    if (L->state[i] || !a->prepare) return SI_OK;
    return a->prepare(L, &L->state[i]);
}

static void release(si_layer *L, int i) {
    if (L->state[i] && si_algos[i]->release) si_algos[i]->release(L->state[i]);
    L->state[i] = NULL;
}

void si_plan_release(si_layer *L) {
    for (int i = 0; si_algos[i]; i++) release(L, i);
}

/* ---- the cache ---------------------------------------------------------------------- */

typedef struct cache {
    char *path;     /* NULL: no cache */
    char *text;     /* the file's lines, NUL-separated */
    char **keys, **vals;
    int n;
    int write_failed;
} cache;

static char *cache_default_path(void);

const char *si_plan_cache_file(void) {
    static _Thread_local char buf[4096];
    char *p = cache_default_path();
    snprintf(buf, sizeof buf, "%s", p ? p : "");
    free(p);
    return buf;
}

static char *cache_default_path(void) {
    const char *env = getenv("SPARSEINFER_CACHE");
    if (env) return *env ? strdup(env) : NULL;
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char buf[4096];
    if (xdg && *xdg) snprintf(buf, sizeof buf, "%s/sparseinfer/plan.tsv", xdg);
    else if (home && *home) snprintf(buf, sizeof buf, "%s/.cache/sparseinfer/plan.tsv", home);
    else return NULL;
    return strdup(buf);
}

/* Reads the cache as untrusted text: at most CACHE_MAX_BYTES, lines "key<TAB>value"; a
 * line of any other shape is skipped. A missing file is an empty cache. */
static void cache_open(cache *c, const char *path) {
    memset(c, 0, sizeof *c);
    c->path = path ? (*path ? strdup(path) : NULL) : cache_default_path();
    if (!c->path) return;
    FILE *f = fopen(c->path, "rb");
    if (!f) return;
    /* as much as the file holds, not the cap, so a small cache costs a small buffer */
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return; }
    size_t want = (size_t)size < (size_t)CACHE_MAX_BYTES ? (size_t)size : (size_t)CACHE_MAX_BYTES;
    c->text = malloc(want + 1);
    size_t len = c->text ? fread(c->text, 1, want, f) : 0;
    fclose(f);
    if (!c->text) return;
    c->text[len] = 0;
    int cap = 0;
    for (size_t i = 0; i < len; i++) cap += c->text[i] == '\n';
    c->keys = malloc(sizeof(char *) * (size_t)(cap + 1));
    c->vals = malloc(sizeof(char *) * (size_t)(cap + 1));
    if (!c->keys || !c->vals) return;
    char *p = c->text, *end = c->text + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break; /* a torn last line (a writer died mid-line) is ignored */
        *nl = 0;
        char *tab = strchr(p, '\t');
        if (tab && tab > p && strncmp(p, CACHE_FORMAT "|", strlen(CACHE_FORMAT) + 1) == 0 && c->n <= cap) {
            *tab = 0;
            c->keys[c->n] = p;
            c->vals[c->n] = tab + 1;
            c->n++;
        }
        p = nl + 1;
    }
}

static void cache_close(cache *c) {
    free(c->path); free(c->text); free(c->keys); free(c->vals);
}

/* The newest line for key: its value, or NULL. */
static const char *cache_get(const cache *c, const char *key) {
    for (int i = c->n - 1; i >= 0; i--)
        if (strcmp(c->keys[i], key) == 0) return c->vals[i];
    return NULL;
}

static void mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
}

/* One line appended with one write() (O_APPEND: concurrent writers interleave whole lines). */
static void cache_put(cache *c, const char *key, const char *val) {
    if (!c->path) return;
    mkdirs(c->path);
    int fd = open(c->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) { c->write_failed = errno ? errno : 1; return; }
    char line[2048];
    int n = snprintf(line, sizeof line, "%s\t%s\n", key, val);
    if (n > 0 && n < (int)sizeof line && write(fd, line, (size_t)n) != n) c->write_failed = errno ? errno : 1;
    close(fd);
}

/* ---- timing ------------------------------------------------------------------------- */

/* The problem a regime is timed on: a copy of the layer with fewer output rows (a strip)
 * and the batch to run. */
typedef struct problem {
    si_layer view;
    int batch;
    int64_t positions;
    int in_nb; /* > 0: the layer before hands its output over in blocks of in_nb samples */
} problem;

static problem timed_problem(const si_layer *L, int regime, int plan_batch) {
    problem p;
    p.view = *L;
    p.batch = regime ? plan_batch : 1;
    p.positions = p.batch;
    p.in_nb = 0;
    if (L->type != SI_LAYER_CONV2D) return p;
    const int64_t per_sample = L->out_h * L->out_w;
    int64_t cap = (int64_t)(MAC_CAP / (double)(L->rows * L->cols > 0 ? L->rows * L->cols : 1));
    if (cap < MIN_POSITIONS) cap = MIN_POSITIONS;
    if ((int64_t)p.batch * per_sample > cap) {
        int64_t b = cap / per_sample;
        p.batch = (int)(b < 1 ? 1 : b);
        if (b < 1) { /* a strip of one sample: whole output rows, and the input rows they read */
            int64_t oh = (cap + L->out_w - 1) / L->out_w;
            if (L->pool) oh = (oh + L->pool->kh - 1) / L->pool->kh * L->pool->kh; /* whole pool windows */
            if (oh > L->out_h) oh = L->out_h;
            int64_t ih = (oh - 1) * L->sh - L->pad_top + L->kh;
            p.view.out_h = oh;
            p.view.in_h = ih < 1 ? 1 : ih > L->in_h ? L->in_h : ih;
        }
    }
    p.positions = (int64_t)p.batch * p.view.out_h * p.view.out_w;
    return p;
}

static void layer_signature(const si_layer *L, const problem *p, char *buf, size_t n) {
    char pool[64] = ""; /* the times then include the pool; and what else changes them */
    if (L->pool) snprintf(pool, sizeof pool, "|pool=%dx%d", L->pool->kh, L->pool->kw);
    /* int8 weights that vpmaddubsw takes exactly run faster on AVX2 without VNNI */
    if (L->q && L->q_pair_safe) snprintf(pool + strlen(pool), sizeof pool - strlen(pool), "|i8pairs");
    if (p->in_nb) snprintf(pool + strlen(pool), sizeof pool - strlen(pool), "|in_nb=%d", p->in_nb);
    if (L->type == SI_LAYER_CONV2D)
        snprintf(buf, n, "conv in=%lldx%lldx%lld out=%lldx%lldx%lld k=%dx%d s=%dx%d p=%lld,%lld act=%d bias=%d|nnz=%lld|b=%d pos=%lld%s",
                 (long long)L->in_h, (long long)L->in_w, (long long)L->in_c, (long long)L->out_h, (long long)L->out_w,
                 (long long)L->out_c, L->kh, L->kw, L->sh, L->sw, (long long)L->pad_top, (long long)L->pad_left, L->act,
                 L->bias != NULL, (long long)L->nnz, p->batch, (long long)p->positions, pool);
    else
        snprintf(buf, n, "dense %lld->%lld act=%d bias=%d|nnz=%lld|b=%d%s", (long long)L->cols, (long long)L->rows, L->act,
                 L->bias != NULL, (long long)L->nnz, p->batch, pool);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* in_nb for candidate a of problem p: the producer's blocks where a takes them as they come
 * (si_algo.run_blocked, block_of 0 or the same NB), else 0 (NHWC) */
static int blocked_input(const si_algo *a, const si_layer *V, const problem *p) {
    if (!p->in_nb || !a->run_blocked || !a->block_of) return 0;
    const int q = a->block_of(V, p->batch);
    return q == 0 || q == p->in_nb ? p->in_nb : 0;
}

/* One timed run of a candidate: the layer, and when a pool follows, the pool too (in the
 * entry's own pass if it has one, else si_maxpool_forward on its output), so entries that
 * fuse and entries that do not are timed on the same work. in_nb > 0: the input in blocks of
 * in_nb samples, as the layer before would hand it over (run_blocked), the output NHWC. */
static void run_candidate(const si_algo *a, const si_layer *V, const void *st, const float *in, int in_nb, int batch,
                          float *out, float *pooled, float *ws) {
    const int fused = V->pool && a->run_pool;
    if (in_nb) a->run_blocked(V, st, in, in_nb, batch, fused ? pooled : out, 0, fused, ws);
    else if (fused) a->run_pool(V, st, in, batch, pooled, ws);
    else a->run(V, st, in, batch, out, ws);
    if (V->pool && !fused) {
        if (V->q && V->q_out_u8) si_maxpool_u8(V->pool, (const uint8_t *)out, batch, (uint8_t *)pooled);
        else si_maxpool_forward(V->pool, out, batch, pooled);
    }
}

/* Times candidates cand[0, nc) on problem p; seconds[i] gets each one's median. */
static si_status_t time_candidates(si_layer *L, const problem *p, const si_algo **cand, int nc, double *seconds) {
    si_layer view = p->view; /* the strip's shape with the forms the layer holds now */
    view.w = L->w; view.csr_val = L->csr_val; view.csr_col = L->csr_col; view.csr_ptr = L->csr_ptr;
    view.w8 = L->w8; view.csr_val8 = L->csr_val8;
    si_layer pool_view;
    if (L->pool) { /* the pool of the strip */
        pool_view = *L->pool;
        pool_view.in_h = view.out_h;
        pool_view.out_h = view.out_h / pool_view.kh;
        view.pool = pool_view.out_h > 0 ? &pool_view : NULL;
    }
    const si_layer *V = &view;
    int nb[SI_MAX_ALGOS];
    for (int i = 0; i < nc; i++) nb[i] = blocked_input(cand[i], V, p);
    /* a blocked input holds whole blocks (lanes past the batch too) */
    const int64_t in_b = p->in_nb ? ((int64_t)p->batch + p->in_nb - 1) / p->in_nb * p->in_nb : p->batch;
    const int64_t in_n = in_b * V->in_h * V->in_w * V->in_c;
    const int64_t out_n = (int64_t)p->batch * V->out_h * V->out_w * V->out_c;
    int64_t ws_n = 1;
    for (int i = 0; i < nc; i++) {
        int64_t w = cand[i]->ws_floats(V, L->state[si_algo_index(cand[i])], p->batch);
        if (w > ws_n) ws_n = w;
    }
    float *in = si_alloc((size_t)in_n * sizeof(float)), *out = si_alloc((size_t)out_n * sizeof(float));
    float *ws = si_alloc((size_t)ws_n * sizeof(float));
    const int64_t pooled_n = V->pool ? out_n / (V->pool->kh * V->pool->kw) + 1 : 0;
    float *pooled = V->pool ? si_alloc((size_t)pooled_n * sizeof(float)) : NULL;
    double *t = malloc(sizeof(double) * (size_t)(nc * MAX_ROUNDS));
    if (!in || !out || !ws || !t || (V->pool && !pooled)) {
        si_free(in); si_free(out); si_free(ws); si_free(pooled); free(t);
        return si_fail(SI_ERR_NOMEM, "layer %s: out of memory timing its algorithms (%lld MB)", L->name,
                       (long long)((in_n + out_n + ws_n) * 4 >> 20));
    }
    memset(ws, 0, (size_t)ws_n * sizeof(float)); /* first touches here, not in the first candidate's time */
    memset(out, 0, (size_t)out_n * sizeof(float));
    if (pooled) memset(pooled, 0, (size_t)pooled_n * sizeof(float));
    /* inputs like a ReLU's output: half 0 (fc_skip and fc_skip_i8 read only the non-zero inputs'
     * weights; VGG19's block5_pool was 41% 0 on the random weights of ../shared/peers), the rest
     * uniform in (0, 1); the other entries' speed does not depend on the values */
    uint64_t s = 0x9E3779B97F4A7C15ull;
    uint8_t *b = (uint8_t *)in; /* an int8 layer reads uint8: the same at zero point 0 */
    for (int64_t i = 0; i < in_n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        if (L->q) b[i] = (s >> 63) ? 0 : (uint8_t)(1 + (s >> 32) % 255);
        else in[i] = (s >> 63) ? 0.0f : (float)(((s >> 39) & 0xFFFFFF) | 1) * (1.0f / 16777216.0f);
    }
    /* Warm-up, one run each; a candidate over HOPELESS times the fastest warm-up cannot win
     * within noise, keeps its warm-up time and is not timed further (sparse kernels on dense
     * weights would otherwise take most of the budget). */
    double warm[SI_MAX_ALGOS], best_warm = 1e300;
    int live[SI_MAX_ALGOS];
    for (int i = 0; i < nc; i++) {
        double a = si_now();
        run_candidate(cand[i], V, L->state[si_algo_index(cand[i])], in, nb[i], p->batch, out, pooled, ws);
        warm[i] = si_now() - a;
        if (warm[i] < best_warm) best_warm = warm[i];
    }
    /* A first run pays one-time costs (MKL's set-up, the first touch of the scratch): a
     * candidate that looks hopeless gets a second run before it is dropped, and keeps the
     * faster (a packed GEMM's 5.0 ms warm-up on LeNet-5's conv1 at batch 64 was 0.8 ms;
     * MKL's first sgemm took 16-21 ms for 0.023), unless that run would cost over REPEAT_BELOW
     * more than the best (the samples-innermost convolution on VGG19's block 4: 270 ms). */
    for (int i = 0; i < nc; i++) {
        if (warm[i] <= HOPELESS * best_warm || warm[i] - best_warm > REPEAT_BELOW) continue;
        double a = si_now();
        run_candidate(cand[i], V, L->state[si_algo_index(cand[i])], in, nb[i], p->batch, out, pooled, ws);
        a = si_now() - a;
        if (a < warm[i]) warm[i] = a;
    }
    for (int i = 0; i < nc; i++) live[i] = warm[i] <= HOPELESS * best_warm;
    const double t0 = si_now();
    int rounds = 0;
    while (rounds < MAX_ROUNDS) {
        /* alternate the order so neither candidate always runs first after the other */
        for (int j = 0; j < nc; j++) {
            int i = rounds % 2 ? nc - 1 - j : j;
            if (!live[i]) continue;
            double a = si_now();
            run_candidate(cand[i], V, L->state[si_algo_index(cand[i])], in, nb[i], p->batch, out, pooled, ws);
            t[i * MAX_ROUNDS + rounds] = si_now() - a;
        }
        rounds++;
        if (rounds >= MIN_ROUNDS && si_now() - t0 >= ROUND_TIME) break;
    }
    for (int i = 0; i < nc; i++) {
        if (!live[i]) { seconds[i] = warm[i]; continue; }
        qsort(t + i * MAX_ROUNDS, (size_t)rounds, sizeof(double), cmp_double);
        seconds[i] = t[i * MAX_ROUNDS + rounds / 2];
    }
    si_free(in); si_free(out); si_free(ws); si_free(pooled); free(t);
    return SI_OK;
}

/* ---- choosing ----------------------------------------------------------------------- */

typedef struct plan_ctx {
    si_exec_policy policy;
    si_sparse_impl impl;
    si_plan_mode mode;
    int plan_batch;
    cache cache;
    si_model *m;
    const char *force; /* $SPARSEINFER_ALGO: "name,name,..." */
} plan_ctx;

/* Is entry a named in the comma list? */
static int named(const char *list, const si_algo *a) {
    size_t n = strlen(a->name);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (strncmp(p, a->name, n) == 0 && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

/* The entries the planner may pick for L in a regime under the options. */
static int candidates(const plan_ctx *c, const si_layer *L, int regime, const si_algo **out) {
    int n = 0;
    for (int i = 0; si_algos[i]; i++) {
        const si_algo *a = si_algos[i];
        if (a->type != L->type || a->int8 != L->q || !a->applies(L, regime)) continue;
        int sparse = a->family != SI_EXEC_DENSE;
        /* Near-dense layers: the CSR form is at least 1.8x the dense one's size and a sparse
         * kernel does about as many multiply-adds as a dense one, plus an index load each; not
         * timed, which also spares a CSR copy nearly twice the weights' size just to lose
         * (dense VGG19's load: 7.7 -> 2.4 s). Below, everything is timed: at 66% the sparse
         * direct convolution beat the packed GEMM on LeNet's conv1 (K = 25). */
        if (c->policy == SI_POLICY_AUTO && sparse && si_layer_density(L) >= SPARSE_BELOW) continue;
        if (c->policy == SI_POLICY_DENSE && sparse) continue;
        if (c->policy == SI_POLICY_SPARSE && !sparse) continue;
        if (sparse && (c->impl == SI_SPARSE_MKL) != (a->reference_only != 0)) continue;
        out[n++] = a;
    }
    /* $SPARSEINFER_ALGO: where a named entry is a candidate, only the named ones are (tests
     * and benchmarks pin an algorithm this way). */
    int k = 0;
    for (int i = 0; c->force && i < n; i++)
        if (named(c->force, out[i])) out[k++] = out[i];
    return k ? k : n;
}

/* "conv_gemm=1230000;conv_sparse_direct=990000": integer nanoseconds, so the file reads
 * the same under any locale. */
static void format_times(const si_algo **cand, const double *sec, int nc, char *buf, size_t n) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < nc && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%s=%lld", i ? ";" : "", cand[i]->name,
                                (long long)(sec[i] * 1e9 + 0.5));
}

/* Fills sec[] from a cache value; 1 if every candidate has a time there. */
static int parse_times(const char *val, const si_algo **cand, int nc, double *sec) {
    for (int i = 0; i < nc; i++) {
        size_t ln = strlen(cand[i]->name);
        const char *p = val;
        sec[i] = -1;
        while (p && *p) {
            if (strncmp(p, cand[i]->name, ln) == 0 && p[ln] == '=') {
                char *end;
                long long ns = strtoll(p + ln + 1, &end, 10);
                if (end != p + ln + 1 && (*end == ';' || *end == 0) && ns > 0 && ns < INT64_C(1000000000000))
                    sec[i] = 1e-9 * (double)ns;
                break;
            }
            p = strchr(p, ';');
            if (p) p++;
        }
        if (sec[i] < 0) return 0;
    }
    return 1;
}

typedef struct regime_plan {
    const si_algo *cand[SI_MAX_ALGOS];
    double sec[SI_MAX_ALGOS];
    int nc, best;
    const char *source;  /* "measured", "cached", "estimated", "forced", "only candidate" */
    problem prob;
} regime_plan;

/* What an entry keeps in memory once chosen: the shared forms its run reads, or its own
 * packed copy (a form of its own, for the one-form rule). */
/* One bit per entry that keeps its own copy: two such entries hold two copies (LeNet-5's int8
 * fc1 kept the VNNI and the AMX packing, 2 x 400 KB, when they counted as one form). */
_Static_assert(SI_MAX_ALGOS <= 62, "held() keeps one bit per entry above the two form bits");
static uint64_t held(const si_algo *a) {
    return a->state_only ? UINT64_C(4) << si_algo_index(a) : (uint64_t)a->forms;
}

static int fastest(const regime_plan *r, uint64_t held_mask) {
    int best = -1;
    for (int i = 0; i < r->nc; i++)
        if ((held(r->cand[i]) & ~held_mask) == 0 && (best < 0 || r->sec[i] < r->sec[best])) best = i;
    return best;
}

/* P: the layer before L, planned already, when it runs at batch > 1 an entry that can hand
 * its output over in blocks (NULL otherwise); L's candidates that take blocks are then timed
 * on a blocked input, as they would run after it */
static si_status_t plan_regime(plan_ctx *c, si_layer *L, int regime, regime_plan *r, const regime_plan *other,
                               const si_layer *P) {
    r->nc = candidates(c, L, regime, r->cand);
    r->best = 0;
    for (int i = 0; i < r->nc; i++) r->sec[i] = -1;
    r->prob = timed_problem(L, regime, c->plan_batch);
    if (r->nc == 0)
        return si_fail(SI_ERR_INTERNAL, "layer %s: no algorithm applies at %s", L->name, regime ? "batch > 1" : "batch 1");
    if (c->policy != SI_POLICY_AUTO) { r->source = "forced"; return SI_OK; }
    /* A layer so large that the timed problem of batches is a strip of one sample: an entry
     * that runs blocks of samples (block_of) would run blocks of one, which says nothing of
     * its batches and cost up to 270 ms a run (VGG19's block 4, a third of the plan's
     * time); such layers stay with the per-sample entries. Unless pinned by name. */
    if (regime == 1 && r->prob.batch == 1 && r->nc > 1) {
        int k = 0;
        for (int i = 0; i < r->nc; i++)
            if (!r->cand[i]->block_of || named(c->force, r->cand[i])) r->cand[k++] = r->cand[i];
        if (k > 0) r->nc = k;
    }
    if (r->nc == 1) { r->source = "only candidate"; return SI_OK; }
    /* The layer before hands over blocks: the entries that take them are timed on them (its
     * own transposes into panels are otherwise in their time, as they are not in the model's:
     * pruned LeNet-5 int8's fc1 at batch 64 timed 46 us for fc_csrmm_i8 on NHWC against 24
     * for fc_igemm, and ran 11 us after conv2's blocks). The layer before's own saving, its
     * output left in blocks, is not counted: a conservative choice. */
    if (regime == 1 && P && r->prob.batch > 1) {
        const int nb = P->algo[1]->block_of(P, r->prob.batch);
        r->prob.in_nb = nb > 0 ? nb : 0;
        int takes = 0;
        for (int i = 0; i < r->nc; i++) takes |= blocked_input(r->cand[i], &r->prob.view, &r->prob) > 0;
        if (!takes) r->prob.in_nb = 0;
    }
    char key[1024], sig[512], cpu[200];
    layer_signature(L, &r->prob, sig, sizeof sig);
    snprintf(cpu, sizeof cpu, "%s", si_cpu_name());
    for (char *q = cpu; *q; q++) if (*q == '|' || *q == '\t' || *q == '\n') *q = ' ';
    /* The library version and its build time too: a new release's kernels, or a rebuilt
     * checkout's, are timed afresh (times cached from an older build of the same version
     * kept picks its changed kernels had overturned; a new entry already misses, as the
     * line lacks its time). */
    /* the features $SPARSEINFER_DISABLE keeps the kernels off (AMX, VNNI) change their speed too */
    char off[64];
    snprintf(off, sizeof off, "%s", getenv("SPARSEINFER_DISABLE") ? getenv("SPARSEINFER_DISABLE") : "");
    for (char *q = off; *q; q++) if (*q == '|' || *q == '\t' || *q == '\n') *q = ' ';
    snprintf(key, sizeof key, "%s|lib=%s build %s %s|%s|isa=%s%s%s|threads=%d|%s", CACHE_FORMAT, si_version(), __DATE__,
             __TIME__, cpu, si_isa_str(si_isa_active()), *off ? " without " : "", off, si_num_threads(), sig);
    /* The same timed problem as the other regime (a strip serves both): reuse its times. */
    if (other && other->nc == r->nc && other->prob.batch == r->prob.batch &&
        other->prob.positions == r->prob.positions && other->prob.in_nb == r->prob.in_nb && other->sec[0] >= 0 &&
        memcmp(other->cand, r->cand, sizeof(r->cand[0]) * (size_t)r->nc) == 0) {
        memcpy(r->sec, other->sec, sizeof(double) * (size_t)r->nc);
        r->best = other->best;
        r->source = other->source;
        return SI_OK;
    }
    const char *val = c->mode == SI_PLAN_REMEASURE ? NULL : cache_get(&c->cache, key);
    if (val && parse_times(val, r->cand, r->nc, r->sec)) {
        r->source = "cached";
        c->m->plan_cached++;
    } else if (c->mode == SI_PLAN_NO_MEASURE) {
        for (int i = 0; i < r->nc; i++) r->sec[i] = -1;
        r->source = "estimated";
        int want_sparse = si_layer_density(L) < DEFAULT_SPARSE_BELOW;
        for (int i = 0; i < r->nc; i++)
            if ((r->cand[i]->family != SI_EXEC_DENSE) == want_sparse) { r->best = i; break; }
        return SI_OK;
    } else {
        /* Each candidate's forms and state; one the load's memory limit refuses (a 1% VGG19
         * fc6 expanded to dense: 411 MB from a 6 MB file) drops out of the timing instead of
         * failing the load, as long as another candidate remains. */
        si_status_t st = SI_OK;
        for (int i = 0; i < r->nc;) {
            st = need_forms(L, r->cand[i]->forms);
            if (!st) st = prepare(L, r->cand[i]);
            if (st == SI_ERR_NOMEM && r->nc > 1) {
                release(L, si_algo_index(r->cand[i]));
                for (int j = i; j + 1 < r->nc; j++) r->cand[j] = r->cand[j + 1];
                r->nc--;
                st = SI_OK;
                continue;
            }
            if (st) break;
            i++;
        }
        if (!st) {
            double t0 = si_now();
            st = time_candidates(L, &r->prob, r->cand, r->nc, r->sec);
            c->m->plan_seconds += si_now() - t0;
        }
        if (st) return st;
        /* to whole nanoseconds, as the cache stores them, so a later load from the cache
         * breaks near-ties the same way */
        for (int i = 0; i < r->nc; i++) r->sec[i] = 1e-9 * (double)(long long)(r->sec[i] * 1e9 + 0.5);
        char times[1024];
        format_times(r->cand, r->sec, r->nc, times, sizeof times);
        cache_put(&c->cache, key, times);
        r->source = "measured";
        c->m->plan_measured++;
    }
    r->best = fastest(r, ~UINT64_C(0));
    /* an approximate entry (si_algo.approx) only when it clearly beats every exact one */
    if (r->cand[r->best]->approx) {
        int exact = -1;
        for (int i = 0; i < r->nc; i++)
            if (!r->cand[i]->approx && (exact < 0 || r->sec[i] < r->sec[exact])) exact = i;
        if (exact >= 0 && r->sec[exact] <= APPROX_MARGIN * r->sec[r->best]) r->best = exact;
    }
    return SI_OK;
}

static void describe(const si_layer *L, const regime_plan *r, int regime, char *buf, size_t n) {
    const char *which = regime ? "b>1" : "b=1";
    const si_algo *a = r->cand[r->best];
    if (r->sec[r->best] < 0 || r->nc < 2) {
        if (strcmp(r->source, "forced") == 0) snprintf(buf, n, "%s forced: %s", which, a->name);
        else if (strcmp(r->source, "estimated") == 0)
            snprintf(buf, n, "%s estimated (not timed): %s, density %.1f%% %s %.0f%%", which, a->name,
                     100 * si_layer_density(L), si_layer_density(L) < DEFAULT_SPARSE_BELOW ? "<" : ">=",
                     100 * DEFAULT_SPARSE_BELOW);
        else snprintf(buf, n, "%s %s: %s", which, r->source, a->name);
        return;
    }
    int second = -1;
    for (int i = 0; i < r->nc; i++)
        if (i != r->best && (second < 0 || r->sec[i] < r->sec[second])) second = i;
    char from[48] = "";
    if (r->prob.in_nb) snprintf(from, sizeof from, " on blocks of %d", r->prob.in_nb);
    snprintf(buf, n, "%s %s%s%s: %s %.3g ms vs %s %.3g ms", which, r->source, L->pool ? " with the pool" : "", from,
             a->name, 1e3 * r->sec[r->best], r->cand[second]->name, 1e3 * r->sec[second]);
}

/* Weight bytes of the forms in a held() mask, estimated from the layer's shape (an entry's
 * own copy, held() above SI_FORM_CSR, as a dense one: packed, transposed or transformed,
 * none is smaller) */
static double form_bytes(const si_layer *L, uint64_t mask) {
    const double e = L->q ? 1.0 : 4.0, dense = (double)L->rows * (double)L->cols * e;
    double b = 0.0;
    if (mask & SI_FORM_DENSE) b += dense;
    if (mask & SI_FORM_CSR) b += (double)L->nnz * (e + 4.0) + 8.0 * (double)(L->rows + 1);
    for (uint64_t m = mask >> 2; m; m &= m - 1) b += dense;
    return b;
}

static si_status_t plan_layer(plan_ctx *c, si_layer *L, const si_layer *P) {
    regime_plan r[SI_REGIMES];
    si_status_t st;
    if ((st = plan_regime(c, L, 0, &r[0], NULL, NULL))) return st;
    /* max_batch 1: larger batches run a sample at a time on batch 1's entry (si_run) */
    if (c->m->batch1_only) r[1] = r[0];
    else if ((st = plan_regime(c, L, 1, &r[1], &r[0], P))) return st;
    char w[SI_REGIMES][120], note[64] = "";
    /* One form in memory, when the times say it costs little. */
    uint64_t f0 = held(r[0].cand[r[0].best]), f1 = held(r[1].cand[r[1].best]);
    if (f0 != f1 && r[0].sec[r[0].best] > 0 && r[1].sec[r[1].best] > 0) {
        int alt0 = fastest(&r[0], f1), alt1 = fastest(&r[1], f0);
        double loss0 = alt0 >= 0 ? r[0].sec[alt0] / r[0].sec[r[0].best] : 1e300;
        double loss1 = alt1 >= 0 ? r[1].sec[alt1] / r[1].sec[r[1].best] : 1e300;
        /* the slack for leaving out regime g's form, by the bytes that saves */
        const int big0 = form_bytes(L, f0 & ~f1) >= FORM_BIG * form_bytes(L, f1);
        const int big1 = form_bytes(L, f1 & ~f0) >= FORM_BIG * form_bytes(L, f0);
        /* both within their slack: leave out the big form if one is, else the smaller loss */
        const int ok0 = loss0 <= (big0 ? ONE_FORM_SLACK_BIG : ONE_FORM_SLACK);
        const int ok1 = loss1 <= (big1 ? ONE_FORM_SLACK_BIG : ONE_FORM_SLACK);
        if (ok0 && (!ok1 || (big0 != big1 ? big0 : loss0 <= loss1))) {
            r[0].best = alt0;
            snprintf(note, sizeof note, "; one form kept (b=1 %.0f%% slower)", 100 * (loss0 - 1));
        } else if (ok1) {
            r[1].best = alt1;
            snprintf(note, sizeof note, "; one form kept (b>1 %.0f%% slower)", 100 * (loss1 - 1));
        }
    }
    for (int g = 0; g < SI_REGIMES; g++) {
        const si_algo *a = r[g].cand[r[g].best];
        L->algo[g] = a;
        L->plan_batch[g] = r[g].prob.batch;
        L->plan_positions[g] = r[g].prob.positions;
        for (int i = 0; i < SI_MAX_ALGOS; i++) L->cand_s[g][i] = -1;
        for (int i = 0; i < r[g].nc; i++) L->cand_s[g][si_algo_index(r[g].cand[i])] = r[g].sec[i];
        describe(L, &r[g], g, w[g], sizeof w[g]);
    }
    if (c->m->batch1_only) {
        L->plan_batch[1] = 0;
        L->plan_positions[1] = 0;
        snprintf(w[1], sizeof w[1], "b>1: one sample at a time (max_batch 1)");
    }
    if (c->policy != SI_POLICY_AUTO)
        snprintf(L->why, sizeof L->why, "forced %s (b=1 %s, b>1 %s)",
                 c->policy == SI_POLICY_DENSE ? "dense" : c->impl == SI_SPARSE_MKL ? "sparse (MKL)" : "sparse (own kernels)",
                 L->algo[0]->name, L->algo[1]->name);
    else
        snprintf(L->why, sizeof L->why, "%s; %s%s", w[0], w[1], note);
    /* not a silent slow path: an int8 layer that AVX2 without VNNI multiplies by vpmaddwd in
     * the int8 GEMM (si_algo.pairs; the int16 Winograd entries take any weights at full speed) */
    if (L->q && !L->q_pair_safe && strcmp(si_int8_isa_name(), "avx2") == 0 && (L->algo[0]->pairs || L->algo[1]->pairs)) {
        static const char slow[] = "; vpmaddwd: weights not pair-safe";
        const size_t n = strlen(L->why), room = sizeof L->why - 1 - n;
        const size_t m = sizeof slow - 1 < room ? sizeof slow - 1 : room;
        memcpy(L->why + n, slow, m);
        L->why[n + m] = 0;
    }
    /* Keep the chosen entries' states and the forms their runs read, free the rest. */
    if ((st = need_forms(L, L->algo[0]->forms | L->algo[1]->forms))) return st;
    for (int g = 0; g < SI_REGIMES; g++)
        if ((st = prepare(L, L->algo[g]))) return st;
    for (int i = 0; si_algos[i]; i++)
        if (si_algos[i] != L->algo[0] && si_algos[i] != L->algo[1]) release(L, i);
    drop_forms(L, (unsigned)((held(L->algo[0]) | held(L->algo[1])) & (SI_FORM_DENSE | SI_FORM_CSR)));
    return SI_OK;
}

/* A max pooling an entry may compute in the convolution's pass: right after it, over its
 * whole output, windows that neither overlap nor pad, and an activation that commutes with
 * the max (ReLU or none; the bias is per channel, so it commutes too). */
static int fusable_pool(const si_layer *L, const si_layer *P) {
    return L->type == SI_LAYER_CONV2D && P->type == SI_LAYER_MAXPOOL2D && L->act != SI_ACT_SOFTMAX &&
           P->kh == P->sh && P->kw == P->sw && P->pad_top == 0 && P->pad_left == 0 && P->in_h == L->out_h &&
           P->in_w == L->out_w && P->in_c == L->out_c && P->out_h == L->out_h / P->kh && P->out_w == L->out_w / P->kw &&
           P->out_h > 0 && P->out_w > 0;
}

/* The conv or dense layer that layer i (planned) could hand its batch > 1 output over to in
 * blocks (si_algo.run_blocked, block_of): the next one past its fused pool and any flatten
 * (flattening [H][W][C][NB] blocks is the identity, as for NHWC); NULL if none, or if layer i
 * cannot. Whether that layer's own entry takes the blocks is the caller's question. */
static si_layer *blocked_target(si_model *m, int i) {
    const si_layer *L = &m->layers[i];
    if ((L->type != SI_LAYER_CONV2D && L->type != SI_LAYER_DENSE) || L->act == SI_ACT_SOFTMAX || m->batch1_only ||
        !L->algo[1] || !L->algo[1]->run_blocked || !L->algo[1]->block_of)
        return NULL;
    int j = i + 1 + (L->pool && L->algo[1]->run_pool);
    while (j < m->n_layers && m->layers[j].type == SI_LAYER_FLATTEN) j++;
    return j < m->n_layers && (m->layers[j].type == SI_LAYER_CONV2D || m->layers[j].type == SI_LAYER_DENSE)
               ? &m->layers[j]
               : NULL;
}

si_status_t si_plan_model(si_model *m, const si_load_options *opt) {
    plan_ctx c;
    memset(&c, 0, sizeof c);
    c.policy = opt ? opt->policy : SI_POLICY_AUTO;
    c.impl = opt ? opt->sparse_impl : SI_SPARSE_AUTO;
    c.mode = opt ? opt->plan : SI_PLAN_MEASURE;
    c.plan_batch = opt && opt->plan_batch > 0 ? opt->plan_batch : DEFAULT_PLAN_BATCH;
    c.m = m;
    m->batch1_only = opt && opt->max_batch == 1;
    if (c.policy != SI_POLICY_AUTO && c.policy != SI_POLICY_DENSE && c.policy != SI_POLICY_SPARSE)
        return si_fail(SI_ERR_ARGUMENT, "load options: unknown execution policy %d", (int)c.policy);
    if (c.impl != SI_SPARSE_AUTO && c.impl != SI_SPARSE_OWN && c.impl != SI_SPARSE_MKL)
        return si_fail(SI_ERR_ARGUMENT, "load options: unknown sparse implementation %d", (int)c.impl);
    if (c.mode != SI_PLAN_MEASURE && c.mode != SI_PLAN_NO_MEASURE && c.mode != SI_PLAN_REMEASURE)
        return si_fail(SI_ERR_ARGUMENT, "load options: unknown plan mode %d", (int)c.mode);
    if (opt && (opt->plan_batch < 0 || opt->plan_batch > 4096))
        return si_fail(SI_ERR_ARGUMENT, "load options: plan_batch %d outside [0, 4096]", opt->plan_batch);
    c.force = getenv("SPARSEINFER_ALGO");
    if (c.force && !*c.force) c.force = NULL;
    const char *env = getenv("SPARSEINFER_PLAN");
    if (c.mode == SI_PLAN_MEASURE && env && strcmp(env, "nomeasure") == 0) c.mode = SI_PLAN_NO_MEASURE;
    cache_open(&c.cache, opt ? opt->cache_path : NULL);
    si_status_t st = SI_OK;
    const si_layer *producer = NULL; /* the last conv or dense layer planned */
    for (int i = 0; i < m->n_layers && !st; i++) {
        si_layer *L = &m->layers[i];
        L->pool = i + 1 < m->n_layers && fusable_pool(L, &m->layers[i + 1]) ? &m->layers[i + 1] : NULL;
        if (L->type != SI_LAYER_CONV2D && L->type != SI_LAYER_DENSE) continue;
        /* the layer before hands its output over in blocks: L's entries that take them are
         * timed on them */
        st = plan_layer(&c, L, producer && blocked_target(m, (int)(producer - m->layers)) == L ? producer : NULL);
        producer = L;
    }
    cache_close(&c.cache);
    /* Blocked hand-overs at batch > 1, where the next layer's entry takes them. */
    for (int i = 0; i < m->n_layers && !st; i++) {
        si_layer *L = &m->layers[i], *T = blocked_target(m, i);
        L->blocked_next = T && T->algo[1]->run_blocked ? T : NULL;
    }
    return st;
}
