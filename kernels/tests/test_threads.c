/* Threads and CPU affinity, through the public API only.
 *
 *   test_threads DIR [--no-affinity]
 *
 * DIR is written by make_cases.py (good_*.npz with their .in.f32 / .out.f32).
 *
 * affinity (issue 13 item 2): the process pins itself to one CPU before the library's first
 *   call, loads the models with every registry entry forced in turn (SPARSEINFER_ALGO) and
 *   makes their contexts, then lifts the pin and runs them. Per-thread scratch was sized by
 *   the CPUs at context creation and used with the run-time thread count: under
 *   AddressSanitizer (run_sanitized.sh) an overrun is an error. Outputs must match the NumPy
 *   reference within REL_TOL.
 * shared model: one model, 4 threads each loading the file once (concurrent loads) and running
 *   the shared model with its own context, batches of 1, 2 and
 *   3 in different orders; every output must equal the single-thread run of the same batch
 *   within SHARED_TOL. Run under ThreadSanitizer by run_tsan.sh.
 *
 * Prints "N passed, M failed" last.
 */
#define _GNU_SOURCE /* sched_setaffinity */
#include "sparseinfer.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REL_TOL 1e-4     /* against the float64 NumPy reference, as test_loader.c */
#define SHARED_TOL 1e-6  /* the same algorithms on the same inputs: only summation order may differ */
#define N_THREADS 4
#define ROUNDS 6

static int passed, failed;

static void result(const char *name, int ok, const char *detail) {
    if (ok) passed++;
    else { failed++; printf("FAIL %s: %s\n", name, detail); }
}

static float *read_f32(const char *path, size_t count) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *v = malloc(count * sizeof *v);
    size_t got = v ? fread(v, sizeof *v, count, f) : 0; /* little-endian host (x86-64) */
    fclose(f);
    if (got != count) { free(v); return NULL; }
    return v;
}

/* Largest |got - want| relative to max(|want|, 1e-3 * the sample's largest), over n per sample. */
static double rel_err(const float *got, const float *want, int batch, int64_t n) {
    double worst = 0;
    for (int s = 0; s < batch; s++) {
        double scale = 0;
        for (int64_t j = 0; j < n; j++) scale = fmax(scale, fabs(want[s * n + j]));
        for (int64_t j = 0; j < n; j++) {
            double e = fabs((double)got[s * n + j] - want[s * n + j]) / fmax(fabs(want[s * n + j]), 1e-3 * scale);
            if (!(e <= worst)) worst = e; /* NaN too */
        }
    }
    return worst;
}

static const char *const MODELS[] = {"good_lenet", "good_strided_csr", "good_flat", "good_pruned_empty"};
#define N_MODELS (int)(sizeof MODELS / sizeof MODELS[0])

typedef struct {
    char path[4096];
    float *x, *y; /* 3 samples in, their reference outputs */
    int64_t in_n, out_n;
} model_case;

static int load_case(const char *dir, const char *name, model_case *c) {
    char p[4200];
    snprintf(c->path, sizeof c->path, "%s/%s.npz", dir, name);
    si_model *m;
    si_load_options o = {.struct_size = sizeof o, .plan = SI_PLAN_NO_MEASURE, .cache_path = ""};
    if (si_model_load_file_ex(c->path, &o, &m) != SI_OK) return 0;
    c->in_n = si_model_input_size(m);
    c->out_n = si_model_output_size(m);
    si_model_free(m);
    snprintf(p, sizeof p, "%s/%s.in.f32", dir, name);
    c->x = read_f32(p, (size_t)(3 * c->in_n));
    snprintf(p, sizeof p, "%s/%s.out.f32", dir, name);
    c->y = read_f32(p, (size_t)(3 * c->out_n));
    return c->x && c->y;
}

/* ---- affinity ------------------------------------------------------------------------ */

#define MAX_FORCED 64

static void test_affinity(model_case *cases) {
    cpu_set_t all, one;
    if (sched_getaffinity(0, sizeof all, &all) != 0 || CPU_COUNT(&all) < 2) {
        printf("SKIP affinity: fewer than 2 CPUs to unpin to\n");
        return;
    }
    CPU_ZERO(&one);
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &all)) { CPU_SET(i, &one); break; }
    if (sched_setaffinity(0, sizeof one, &one) != 0) { printf("SKIP affinity: cannot pin\n"); return; }
    /* Pinned: the library's first calls happen here. Every entry each model offers, forced. */
    struct { si_model *m; si_context *ctx; int mc; char name[64]; } forced[MAX_FORCED];
    int nf = 0;
    for (int mc = 0; mc < N_MODELS; mc++) {
        si_load_options o = {.struct_size = sizeof o, .plan = SI_PLAN_NO_MEASURE, .cache_path = ""};
        si_model *m;
        if (si_model_load_file_ex(cases[mc].path, &o, &m) != SI_OK) { result("affinity load", 0, si_last_error()); continue; }
        const char *names[32];
        double secs[32];
        char seen[32][64];
        int ns = 0;
        for (int l = 0; l < si_model_num_layers(m); l++)
            for (int g = 0; g < 2; g++) {
                int n = si_model_layer_candidates(m, l, g, names, secs, 32);
                for (int i = 0; i < n && i < 32; i++) {
                    int dup = 0;
                    for (int k = 0; k < ns; k++) dup |= strcmp(seen[k], names[i]) == 0;
                    if (!dup && ns < 32) snprintf(seen[ns++], sizeof seen[0], "%s", names[i]);
                }
            }
        si_model_free(m);
        for (int k = 0; k < ns && nf < MAX_FORCED; k++) {
            setenv("SPARSEINFER_ALGO", seen[k], 1);
            if (si_model_load_file_ex(cases[mc].path, &o, &forced[nf].m) != SI_OK) {
                result("affinity forced load", 0, si_last_error());
                continue;
            }
            if (si_context_create(forced[nf].m, 3, &forced[nf].ctx) != SI_OK) {
                result("affinity context", 0, si_last_error());
                si_model_free(forced[nf].m);
                continue;
            }
            forced[nf].mc = mc;
            snprintf(forced[nf].name, sizeof forced[nf].name, "%s", seen[k]);
            nf++;
        }
        unsetenv("SPARSEINFER_ALGO");
    }
    if (sched_setaffinity(0, sizeof all, &all) != 0) { result("affinity unpin", 0, "sched_setaffinity"); return; }
    /* Unpinned: as many threads as the host now offers (up to si_max_threads). */
    si_set_num_threads(CPU_COUNT(&all));
    for (int i = 0; i < nf; i++) {
        const model_case *c = &cases[forced[i].mc];
        float *out = malloc((size_t)(3 * c->out_n) * sizeof *out);
        char what[256], detail[256];
        for (int batch = 1; batch <= 3; batch += 2) {
            snprintf(what, sizeof what, "affinity %s with %s forced, batch %d", MODELS[forced[i].mc], forced[i].name, batch);
            si_status_t st = si_run(forced[i].ctx, c->x, batch, out);
            double e = st == SI_OK ? rel_err(out, c->y, batch, c->out_n) : INFINITY;
            snprintf(detail, sizeof detail, "%s, relative error %.3g > %g", st ? si_last_error() : "ran", e, REL_TOL);
            result(what, e <= REL_TOL, detail);
        }
        free(out);
        si_context_free(forced[i].ctx);
        si_model_free(forced[i].m);
    }
    si_set_num_threads(0);
    printf("affinity: %d forced entries loaded pinned to one CPU, run on %d\n", nf, CPU_COUNT(&all));
}

/* ---- one model, several threads ------------------------------------------------------- */

typedef struct {
    const si_model *m;
    const model_case *c;
    const float *single[4]; /* single-thread output per batch 1..3 */
    int id, threads;
    double worst;
    int fails;
    char err[256];
} worker;

static void *work(void *p) {
    worker *w = p;
    si_set_num_threads(w->threads); /* per thread */
    /* Loads run concurrently too (the CRC table, the "C" locale, the start-up are shared). */
    si_model *own;
    si_load_options o = {.struct_size = sizeof o, .plan = SI_PLAN_NO_MEASURE, .cache_path = ""};
    if (si_model_load_file_ex(w->c->path, &o, &own) != SI_OK) {
        snprintf(w->err, sizeof w->err, "concurrent load: %s", si_last_error());
        w->fails++;
    } else {
        si_model_free(own);
    }
    si_context *ctx;
    if (si_context_create(w->m, 3, &ctx) != SI_OK) {
        snprintf(w->err, sizeof w->err, "context: %s", si_last_error());
        w->fails++;
        return NULL;
    }
    float *out = malloc((size_t)(3 * w->c->out_n) * sizeof *out);
    for (int r = 0; r < ROUNDS; r++) {
        int batch = 1 + (w->id + r) % 3; /* each thread its own order of batch sizes */
        if (si_run(ctx, w->c->x, batch, out) != SI_OK) {
            snprintf(w->err, sizeof w->err, "run: %s", si_last_error());
            w->fails++;
            continue;
        }
        double e = rel_err(out, w->single[batch], batch, w->c->out_n);
        if (!(e <= w->worst)) w->worst = e;
    }
    free(out);
    si_context_free(ctx);
    return NULL;
}

static void test_shared(model_case *cases, int threads_each) {
    for (int mc = 0; mc < N_MODELS; mc++) {
        const model_case *c = &cases[mc];
        si_model *m;
        si_load_options o = {.struct_size = sizeof o, .plan = SI_PLAN_NO_MEASURE, .cache_path = ""};
        if (si_model_load_file_ex(c->path, &o, &m) != SI_OK) { result("shared load", 0, si_last_error()); continue; }
        float *single[4] = {NULL};
        si_context *ctx;
        int prev = si_set_num_threads(threads_each);
        if (si_context_create(m, 3, &ctx) != SI_OK) { result("shared context", 0, si_last_error()); si_model_free(m); continue; }
        for (int b = 1; b <= 3; b++) {
            single[b] = malloc((size_t)(b * c->out_n) * sizeof(float));
            if (si_run(ctx, c->x, b, single[b]) != SI_OK) result("shared single run", 0, si_last_error());
        }
        si_context_free(ctx);
        si_set_num_threads(prev);
        worker w[N_THREADS];
        pthread_t t[N_THREADS];
        for (int i = 0; i < N_THREADS; i++) {
            memset(&w[i], 0, sizeof w[i]);
            w[i].m = m; w[i].c = c; w[i].id = i; w[i].threads = threads_each;
            for (int b = 1; b <= 3; b++) w[i].single[b] = single[b];
            pthread_create(&t[i], NULL, work, &w[i]);
        }
        for (int i = 0; i < N_THREADS; i++) {
            pthread_join(t[i], NULL);
            char what[128], detail[320];
            snprintf(what, sizeof what, "shared %s, thread %d (%d kernel threads)", MODELS[mc], i, threads_each);
            snprintf(detail, sizeof detail, "%s; largest relative difference from the single-thread run %.3g > %g",
                     w[i].err[0] ? w[i].err : "runs ok", w[i].worst, SHARED_TOL);
            result(what, !w[i].fails && w[i].worst <= SHARED_TOL, detail);
        }
        for (int b = 1; b <= 3; b++) free(single[b]);
        si_model_free(m);
    }
}

/* The process's first loads, from N_THREADS threads at once: every one-time initialisation
 * on the load path (the CRC tables, the library's set-up) is raced here, before anything
 * else in the process touched it (issue 13 item 5: a lazily filled CRC table was a data
 * race that ThreadSanitizer reports here, and only here, once it is put back). */
typedef struct first_load {
    const char *path;
    pthread_barrier_t *start;
    int ok;
    char err[256];
} first_load;

static void *first_load_work(void *arg) {
    first_load *f = arg;
    pthread_barrier_wait(f->start);
    si_model *m;
    si_load_options o = {.struct_size = sizeof o, .plan = SI_PLAN_NO_MEASURE, .cache_path = ""};
    f->ok = si_model_load_file_ex(f->path, &o, &m) == SI_OK;
    if (f->ok) si_model_free(m);
    else snprintf(f->err, sizeof f->err, "%s", si_last_error());
    return NULL;
}

static void test_first_loads(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.npz", dir, MODELS[0]);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    first_load f[N_THREADS];
    pthread_t t[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        memset(&f[i], 0, sizeof f[i]);
        f[i].path = path;
        f[i].start = &start;
        pthread_create(&t[i], NULL, first_load_work, &f[i]);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(t[i], NULL);
        char what[96];
        snprintf(what, sizeof what, "first load of the process, thread %d of %d at once", i, N_THREADS);
        result(what, f[i].ok, f[i].ok ? "loaded" : f[i].err);
    }
    pthread_barrier_destroy(&start);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_threads DIR [--no-affinity] [--kernel-threads N]\n"); return 2; }
    int affinity = 1, kernel_threads = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--no-affinity") == 0) affinity = 0;
        else if (strcmp(argv[i], "--kernel-threads") == 0 && i + 1 < argc) kernel_threads = atoi(argv[++i]);
    }
    if (!affinity) test_first_loads(argv[1]); /* the TSan run: nothing has touched the library yet */
    model_case cases[N_MODELS];
    memset(cases, 0, sizeof cases);
    /* With the affinity test, the library's first call (which fixes its thread slots) happens
     * while the process is pinned to one CPU. */
    cpu_set_t all, one;
    int pinned = 0;
    if (affinity && sched_getaffinity(0, sizeof all, &all) == 0 && CPU_COUNT(&all) >= 2) {
        CPU_ZERO(&one);
        for (int i = 0; i < CPU_SETSIZE; i++)
            if (CPU_ISSET(i, &all)) { CPU_SET(i, &one); break; }
        pinned = sched_setaffinity(0, sizeof one, &one) == 0;
    }
    for (int mc = 0; mc < N_MODELS; mc++)
        if (!load_case(argv[1], MODELS[mc], &cases[mc])) {
            printf("FAIL cannot load %s or its inputs: %s\n", MODELS[mc], si_last_error());
            return 1;
        }
    if (pinned) sched_setaffinity(0, sizeof all, &all);
    if (affinity) test_affinity(cases);
    test_shared(cases, kernel_threads);
    for (int mc = 0; mc < N_MODELS; mc++) { free(cases[mc].x); free(cases[mc].y); }
    printf("%d passed, %d failed\n", passed, failed);
    return failed || passed == 0 ? 1 : 0;
}
