/* Errors, memory, thread counts and the once-per-process set-up. Calls no kernel. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include "si_internal.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <mkl.h>
#include <omp.h>
#include <pthread.h>

static _Thread_local char last_error[1024];
static _Thread_local int thread_setting = 0;
static int max_threads = 1;

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

/* The calling thread's load limit (si_limit_begin). Bytes are counted as malloc_usable_size
 * reports them, the same at allocation and at free. */
static _Thread_local struct {
    int on;
    int64_t limit, held, refused;
} lim;

void si_limit_begin(int64_t limit) {
    lim.on = 1;
    lim.limit = limit;
    lim.held = 0;
    lim.refused = 0;
}
void si_limit_end(void) { lim.on = 0; }
int64_t si_limit_refused(void) { return lim.refused; }
int64_t si_limit_held(void) { return lim.held; }

/* Buffers of 4 MB and more (weights, Winograd filters, scratch) start on a 2 MB boundary and
 * span whole 2 MB pages, which Linux may then back with transparent huge pages (THP "madvise"
 * is the usual setting): the GEMMs and the fully connected layers stream them, and with 4 KB
 * pages every 4 KB of a 100 MB weight matrix costs a TLB miss. VGG19 int8, AVX2 cap, Zen 5,
 * 2 threads, 8 alternating runs: fc1 1.83 -> 1.64 ms (medians), the model 36.6 -> 34.8 ms. */
#define HUGE_PAGE ((size_t)2 << 20)

void *si_alloc(size_t bytes) {
    if (bytes == 0) return NULL;
    void *p = NULL;
    size_t size = (bytes + 63) & ~(size_t)63, align = 64;
    if (size < bytes) return NULL;
    if (size >= 2 * HUGE_PAGE) {
        align = HUGE_PAGE;
        size = (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
        if (size < bytes) return NULL;
    }
    if (lim.on && (size > (uint64_t)INT64_MAX || (int64_t)size > lim.limit - lim.held)) {
        lim.refused = size > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)size;
        return NULL;
    }
    if (posix_memalign(&p, align, size) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (align == HUGE_PAGE) madvise(p, size, MADV_HUGEPAGE); /* advice only: its failure changes nothing */
#endif
    if (lim.on) lim.held += (int64_t)malloc_usable_size(p);
    return p;
}

void si_free(void *p) {
    if (p && lim.on) {
        lim.held -= (int64_t)malloc_usable_size(p);
        if (lim.held < 0) lim.held = 0; /* memory from before the load */
    }
    free(p);
}

double si_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* MKL threads through libgomp, like the runtime's own OpenMP kernels, so the two share one
 * pool instead of two runtimes fighting over the cores. Has effect only if it comes before
 * the process's first MKL call (otherwise MKL keeps the layer it already chose).
 * SPARSEINFER_ISA caps the kernels' ISA (portable, avx2, avx512; default: the best the CPU
 * has) so one machine can run every variant it supports. */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
/* $SPARSEINFER_DISABLE: a comma-separated list of CPU features the kernels must not use
 * ("amx", "vnni"; "avxvnni": only the VEX form of VNNI, as on Zen 4; "maddubs": the int8 GEMM's
 * vpmaddubsw kernel on AVX2), to measure on one
 * machine what CPUs without them get. */
int si_feature_disabled(const char *name) {
    const char *list = getenv("SPARSEINFER_DISABLE");
    size_t n = strlen(name);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

extern int si_igemm_vnni, si_igemm_avxvnni, si_igemm_maddubs; /* ops/si_igemm.c */

static void init_library(void) {
    if (si_feature_disabled("vnni")) si_igemm_vnni = 0;
    if (si_feature_disabled("avxvnni")) si_igemm_avxvnni = 0;
    if (si_feature_disabled("maddubs")) si_igemm_maddubs = 0;
    const char *v = getenv("SPARSEINFER_MKL_THREADING"); /* "intel": MKL's own OpenMP, for comparison */
    mkl_set_threading_layer(v && strcmp(v, "intel") == 0 ? MKL_THREADING_INTEL : MKL_THREADING_GNU);
    int p = omp_get_num_procs();
    max_threads = p < 1 ? 1 : p > 256 ? 256 : p;
    si_isa isa = si_isa_detected(), cap;
    const char *s = getenv("SPARSEINFER_ISA");
    if (s && *s && si_isa_parse(s, &cap)) {
        if (cap < isa) isa = cap;
    } else if (s && *s) {
        fprintf(stderr, "sparseinfer: SPARSEINFER_ISA=%s is not one of auto, portable, avx2, avx512; using %s\n", s,
                si_isa_str(isa));
    }
    si_dispatch_select(isa);
}
void si_init(void) { pthread_once(&init_once, init_library); }

/* The L2 cache of cpu0 from sysfs (Linux), else 1 MB: what the Winograd convolution sizes
 * its per-thread groups by. Read once. */
static int64_t l2_bytes;
static pthread_once_t l2_once = PTHREAD_ONCE_INIT;
static void read_l2(void) {
    l2_bytes = INT64_C(1) << 20;
    for (int i = 0; i < 8; i++) {
        char path[96], buf[32];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f) break;
        int level = fgets(buf, sizeof buf, f) ? atoi(buf) : 0;
        fclose(f);
        if (level != 2) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (!(f = fopen(path, "r"))) break;
        char *end = NULL;
        long long v = fgets(buf, sizeof buf, f) ? strtoll(buf, &end, 10) : 0; /* "2048K"; digits only */
        fclose(f);
        if (end && (*end == 'K' || *end == 'k')) v <<= 10;
        else if (end && (*end == 'M' || *end == 'm')) v <<= 20;
        if (v >= (64 << 10) && v <= (INT64_C(1) << 30)) l2_bytes = v;
        break;
    }
}
int64_t si_l2_bytes(void) {
    pthread_once(&l2_once, read_l2);
    return l2_bytes;
}

int si_max_threads(void) {
    si_init();
    return max_threads;
}

int si_set_num_threads(int n) {
    si_init();
    int prev = thread_setting;
    if ((n > 0 ? n : 0) == prev) return prev; /* unchanged: every predict call sets and restores it */
    thread_setting = n > 0 ? n : 0;
    /* 0 restores the global setting. The OpenMP one is left alone (it is the host's): every
     * parallel region of the library passes num_threads(si_num_threads()). */
    mkl_set_num_threads_local(thread_setting);
    return prev;
}

int si_num_threads(void) {
    int n = thread_setting ? thread_setting : omp_get_max_threads();
    return n < 1 ? 1 : n > max_threads ? max_threads : n;
}

double si_util_read_bandwidth(size_t bytes, int repeats) {
    si_init();
    return si_read_bandwidth_gbs(bytes, repeats);
}

#define SI_STR_(x) #x
#define SI_STR(x) SI_STR_(x)
const char *si_version(void) { return SI_STR(SI_VERSION_MAJOR) "." SI_STR(SI_VERSION_MINOR); }
