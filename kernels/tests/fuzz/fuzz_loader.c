/* libFuzzer target: the whole loader from a buffer, through the public API, as
 * Model.from_bytes uses it (si_model_load_buffer_ex), then one run when the model is small.
 *
 * Each input is loaded under the automatic policy with the planner's no-measure mode (no
 * timing, no cache file: fast and deterministic) and the default memory limit. A file-level
 * refusal (format, model, unsupported) ends there; otherwise it is loaded again forcing the
 * sparse and then the dense forms, so large declared layers meet both the CSR kernels'
 * derived copies and the dense expansion under the limit. Every model that loads is queried
 * layer by layer and, when its activations and multiply-adds are within the caps below,
 * run at batch 1 and 2 on a fixed input. One kernel thread throughout.
 *
 * Beyond ASan and UBSan, the oracles are: SI_ERR_INTERNAL from any call, and a failing
 * si_run on a loaded model with a context made for it, abort (each is a bug).
 */
#define _POSIX_C_SOURCE 200809L
#include "sparseinfer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The caps of a run: what any one sample's activation may hold, and the multiply-adds
 * (estimated per layer from what it runs) of the batch-1 and batch-2 runs together, so a
 * small file declaring a large model loads (the loader's own limits apply) but never runs
 * long enough to time out. */
#define MAX_RUN_ELEMS (INT64_C(1) << 18)
#define MAX_RUN_WORK 2.0e7

static void check(si_status_t st, const char *what) {
    if (st == SI_ERR_INTERNAL || st > SI_ERR_INTERNAL) {
        fprintf(stderr, "%s: %s: %s\n", what, si_status_str(st), si_last_error());
        abort();
    }
}

/* Estimated work of one sample through the model, or -1 when a cap is passed. */
static double run_work(const si_model *m) {
    int64_t in = si_model_input_size(m), hwc[3];
    if (in < 1 || in > MAX_RUN_ELEMS || si_model_input_shape(m, hwc) != SI_OK) return -1;
    int64_t prev_h = hwc[0], prev_w = hwc[1];
    double work = (double)in;
    for (int i = 0; i < si_model_num_layers(m); i++) {
        si_layer_info li = {.struct_size = sizeof li};
        check(si_model_layer_info(m, i, &li), "si_model_layer_info");
        const double out = (double)li.out_shape[0] * (double)li.out_shape[1] * (double)li.out_shape[2];
        if (out > (double)MAX_RUN_ELEMS) return -1;
        const double positions = (double)li.out_shape[0] * (double)li.out_shape[1];
        if (li.rows > 0) {
            double per = li.exec_batch1 == SI_EXEC_DENSE || li.exec_batchn == SI_EXEC_DENSE
                             ? (double)li.rows * (double)li.cols
                             : (double)li.nnz + (double)li.rows + (double)li.cols;
            work += per * positions;
        } else if (li.type == SI_LAYER_MAXPOOL2D) {
            /* the window is not in layer_info: at most the input plus one along each axis */
            work += out * (double)(prev_h + 1) * (double)(prev_w + 1);
        } else {
            work += out;
        }
        prev_h = li.out_shape[0];
        prev_w = li.out_shape[1];
    }
    return work;
}

static void run_small(const si_model *m) {
    double work = run_work(m);
    if (work < 0 || 3 * work > MAX_RUN_WORK) return;
    int64_t in_n = si_model_input_size(m), out_n = si_model_output_size(m);
    si_context *ctx;
    si_status_t st = si_context_create(m, 2, &ctx);
    check(st, "si_context_create");
    if (st) return;
    float *x = malloc(sizeof(float) * (size_t)(2 * in_n)), *y = malloc(sizeof(float) * (size_t)(2 * out_n));
    if (!x || !y) abort();
    uint32_t s = 12345;
    for (int64_t i = 0; i < 2 * in_n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
    for (int batch = 1; batch <= 2; batch++) {
        st = si_run(ctx, x, batch, y);
        if (st != SI_OK) {
            fprintf(stderr, "si_run at batch %d: %s: %s\n", batch, si_status_str(st), si_last_error());
            abort();
        }
    }
    free(x);
    free(y);
    si_context_free(ctx);
}

static si_status_t load_and_run(const uint8_t *data, size_t size, si_exec_policy policy) {
    si_load_options opt = {.struct_size = sizeof opt, .policy = policy, .plan = SI_PLAN_NO_MEASURE, .cache_path = ""};
    si_model *m;
    si_status_t st = si_model_load_buffer_ex(data, size, &opt, &m);
    check(st, "si_model_load_buffer_ex");
    if (st) return st;
    volatile const char *manifest = si_model_manifest(m);
    (void)manifest;
    run_small(m);
    si_model_free(m);
    return SI_OK;
}

/* Before the library's one-time set-up: MKL's threading layer on the OpenMP runtime this
 * build links (LLVM's, as run_tsan.sh), and no algorithm pinned by a developer's shell. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    setenv("SPARSEINFER_MKL_THREADING", "intel", 1);
    unsetenv("SPARSEINFER_ALGO");
    unsetenv("SPARSEINFER_PLAN");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    si_set_num_threads(1); /* per thread: set where the loads run */
    si_status_t st = load_and_run(data, size, SI_POLICY_AUTO);
    if (st == SI_ERR_FORMAT || st == SI_ERR_MODEL || st == SI_ERR_UNSUPPORTED || st == SI_ERR_ARGUMENT) return 0;
    load_and_run(data, size, SI_POLICY_SPARSE);
    load_and_run(data, size, SI_POLICY_DENSE);
    return 0;
}
