/* Checks ops/si_igemm_amx.c, the int8 GEMM on AMX tiles, against si_igemm_ref BIT FOR BIT
 * (memcmp of the whole output, the gaps between rows included: ldc > n must leave them
 * untouched), for si_igemm_amx (threaded) and si_igemm_amx_rows (the calling thread).
 *
 * When the CPU or the OS does not give AMX, the test says so and checks that the kernel
 * reports it (si_amx_available() == 0, si_pack_b8_amx fails with SI_ERR_UNSUPPORTED and
 * leaves its output zeroed). On every machine it checks the same under the avx2 ISA cap.
 *
 * Cases: m = 1, 15, 16, 17, 33 (the 32-row blocks and the partial last one under its own
 * tile configuration), up to 1000 (threads split rows) and small m (threads split the
 * column panel pairs); n = 1, 16, 17, 64, 100 (an odd number of 16-column panels); k = 1, 3,
 * 27, 63, 64, 65, 576, 4608 and the largest, SI_I8_MAX_COLS = 66000 (all activations 255
 * against all weights +127 or -127: the int32 sums' limit); lda > k; uint8 and float
 * outputs, relu and linear, zero points 0, 128 and 255; exact ties (mul 0.5) for round half
 * to even. A's last row ends at the end of an exactly-sized malloc; and in the "guarded"
 * cases every row of A ends right before a PROT_NONE page, so a tile load that reads past a
 * row's k bytes faults even in the -O2 build (AddressSanitizer does not see tileloadd, an
 * asm statement).
 *
 * A failure line names the function, the case and its shape, the first wrong element (i, j)
 * and both values. Closing line: "N passed, M failed"; exit status 1 on any failure.
 *
 *   test_igemm_amx [quick]      quick: the sanitizer run's smaller set
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "si_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>


static int passed, failed;
static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t next_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static double uniform(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
static int64_t irand(int64_t lo, int64_t hi) { return lo + (int64_t)(next_u64() % (uint64_t)(hi - lo + 1)); }

/* Exact-size heap blocks (si_alloc rounds up to 64 bytes, which would hide overruns). */
static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

enum { A_RANDOM, A_ALL255, A_SMALL };
enum { W_RANDOM, W_PLUS127, W_MINUS127, W_SPARSE };

typedef struct gcase {
    const char *name;
    int64_t m, n, k, lda_pad, ldc_pad;
    int a_kind, w_kind;
    int out_u8, act;
    int32_t zero;
    int ties;    /* mul 0.5, add 0, inv_scale 1: many exact halves */
    int guarded; /* every row of A ends before a PROT_NONE page (lda_pad ignored) */
} gcase;

static void describe(const gcase *c, int64_t lda, char *buf, size_t len) {
    snprintf(buf, len, "%s m=%lld n=%lld k=%lld lda=%lld ldc=%lld %s %s zero=%d%s%s", c->name, (long long)c->m,
             (long long)c->n, (long long)c->k, (long long)lda, (long long)(c->n + c->ldc_pad),
             c->out_u8 ? "u8" : "float", c->act == SI_ACT_RELU ? "relu" : "linear", (int)c->zero,
             c->ties ? " ties" : "", c->guarded ? " guarded" : "");
}

/* first differing element of two outputs of m rows x ldc; returns 0 if equal */
static int report_diff(const char *what, const char *desc, const void *got, const void *want, int64_t m, int64_t n,
                       int64_t ldc, int out_u8) {
    const size_t esz = out_u8 ? 1 : sizeof(float);
    if (memcmp(got, want, (size_t)(m * ldc) * esz) == 0) return 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < ldc; j++) {
            const size_t o = (size_t)(i * ldc + j) * esz;
            if (memcmp((const char *)got + o, (const char *)want + o, esz) == 0) continue;
            const char *gap = j >= n ? " (in the gap past n: must be untouched)" : "";
            if (out_u8)
                printf("FAIL %s %s: element (%lld, %lld)%s = %u, expected %u\n", what, desc, (long long)i,
                       (long long)j, gap, ((const uint8_t *)got)[i * ldc + j], ((const uint8_t *)want)[i * ldc + j]);
            else
                printf("FAIL %s %s: element (%lld, %lld)%s = %.9g (0x%08x), expected %.9g (0x%08x)\n", what, desc,
                       (long long)i, (long long)j, gap, (double)((const float *)got)[i * ldc + j],
                       (unsigned)((const uint32_t *)got)[i * ldc + j], (double)((const float *)want)[i * ldc + j],
                       (unsigned)((const uint32_t *)want)[i * ldc + j]);
            return 1;
        }
    return 1;
}

/* A for a guarded case: rows at stride lda (a multiple of the page size, >= k + page), each
 * ending where a PROT_NONE page begins */
typedef struct guarded_a {
    unsigned char *map;
    size_t map_bytes;
    uint8_t *a;
    int64_t lda;
} guarded_a;

static void guarded_alloc(int64_t m, int64_t k, guarded_a *g) {
    const int64_t page = sysconf(_SC_PAGESIZE);
    g->lda = (k + page + page - 1) / page * page;
    /* row i: [base + i lda, base + i lda + k), base = map + page * pages_before - k */
    const int64_t first = (k + page - 1) / page; /* readable pages before row 0's end */
    g->map_bytes = (size_t)((first + m * (g->lda / page)) * page);
    g->map = mmap(NULL, g->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED) { fprintf(stderr, "mmap failed\n"); exit(2); }
    g->a = g->map + first * page - k;
    for (int64_t i = 0; i < m; i++)
        if (mprotect(g->a + i * g->lda + k, (size_t)page, PROT_NONE) != 0) { fprintf(stderr, "mprotect failed\n"); exit(2); }
}

static void run_case(const gcase *c) {
    const int64_t m = c->m, n = c->n, k = c->k, ldc = n + c->ldc_pad;
    const size_t esz = c->out_u8 ? 1 : sizeof(float);
    guarded_a g = {NULL, 0, NULL, 0};
    int64_t lda = k + c->lda_pad;
    uint8_t *A;
    if (c->guarded) {
        guarded_alloc(m, k, &g);
        lda = g.lda;
        A = g.a;
    } else {
        A = xmalloc((size_t)((m - 1) * lda + k)); /* the last row ends at the end of the block */
    }
    char desc[300];
    describe(c, lda, desc, sizeof desc);
    for (int64_t i = 0; i < m; i++)
        for (int64_t t = 0; t < (c->guarded || i == m - 1 ? k : lda); t++)
            A[i * lda + t] =
                c->a_kind == A_ALL255 ? 255 : c->a_kind == A_SMALL ? (uint8_t)irand(0, 3) : (uint8_t)irand(0, 255);
    int8_t *W = xmalloc((size_t)(n * k));
    for (int64_t t = 0; t < n * k; t++) {
        int v;
        switch (c->w_kind) {
        case W_PLUS127: v = 127; break;
        case W_MINUS127: v = -127; break;
        case W_SPARSE: v = uniform() < 0.8 ? 0 : (int)irand(-127, 127); break;
        default: v = uniform() < 0.05 ? (uniform() < 0.5 ? -127 : 127) : (int)irand(-127, 127);
        }
        W[t] = (int8_t)v;
    }
    float *mul = xmalloc(sizeof(float) * (size_t)n), *add = xmalloc(sizeof(float) * (size_t)n);
    si_requant rq = {mul, add, c->act, c->out_u8, 1.0f, c->zero};
    /* outputs spread over about +-2 output scales of 255, so the clamp and both ends show */
    const double spread = 255.0 * 2.0 / (127.0 * 128.0 * (k > 0 ? __builtin_sqrt((double)k) : 1.0) + 1.0);
    for (int64_t j = 0; j < n; j++) {
        mul[j] = c->ties ? 0.5f : (float)(spread * (0.25 + uniform()) * (uniform() < 0.1 ? -1 : 1));
        add[j] = c->ties ? 0.0f : (float)(255.0 * (uniform() - 0.5));
    }
    if (!c->ties) rq.inv_scale = (float)(0.5 + uniform());

    const size_t cbytes = (size_t)(m * ldc) * esz;
    unsigned char *ref = xmalloc(cbytes), *got = xmalloc(cbytes);
    memset(ref, 0xA5, cbytes);
    si_igemm_ref(A, lda, m, W, n, k, &rq, ref, ldc);

    si_packed_b8_amx B;
    if (si_pack_b8_amx(c->name, W, n, k, &B) != SI_OK) {
        printf("FAIL si_pack_b8_amx %s: %s\n", desc, si_last_error());
        failed++;
    } else {
        if (B.n != n || B.k != k || B.bytes < n * k || !B.b) {
            printf("FAIL si_pack_b8_amx %s: n %lld, k %lld, bytes %lld\n", desc, (long long)B.n, (long long)B.k,
                   (long long)B.bytes);
            failed++;
        }
        for (int rows_only = 0; rows_only < 2; rows_only++) {
            memset(got, 0xA5, cbytes);
            if (rows_only) si_igemm_amx_rows(A, lda, m, &B, &rq, got, ldc);
            else si_igemm_amx(A, lda, m, &B, &rq, got, ldc);
            const int b =
                report_diff(rows_only ? "si_igemm_amx_rows" : "si_igemm_amx", desc, got, ref, m, n, ldc, c->out_u8);
            b ? failed++ : passed++;
        }
        si_packed_b8_amx_free(&B);
    }
    if (c->guarded) munmap(g.map, g.map_bytes);
    else free(A);
    free(W); free(mul); free(add); free(ref); free(got);
}

/* the kernel must say it is unavailable: si_amx_available() == 0, packing refused */
static void check_unavailable(const char *why) {
    const int8_t w[3] = {1, 2, 3};
    si_packed_b8_amx B;
    memset(&B, 0x5A, sizeof B);
    const int avail = si_amx_available();
    const si_status_t st = si_pack_b8_amx("probe", w, 1, 3, &B);
    if (avail || st != SI_ERR_UNSUPPORTED || B.b || B.bytes) {
        printf("FAIL unavailable (%s): si_amx_available() = %d, si_pack_b8_amx = %s, b %p, bytes %lld\n", why, avail,
               si_status_str(st), B.b, (long long)B.bytes);
        failed++;
    } else {
        printf("unavailable (%s): reported (%s)\n", why, si_last_error());
        passed++;
    }
}

int main(int argc, char **argv) {
    (void)argv;
    const int quick = argc > 1;
    si_init();
    /* under the avx2 cap the kernel must be unavailable on every machine */
    si_dispatch_select(SI_ISA_AVX2 < si_isa_detected() ? SI_ISA_AVX2 : SI_ISA_PORTABLE);
    check_unavailable("ISA capped below avx512");
    si_dispatch_select(si_isa_detected());
    if (!si_amx_available()) {
        printf("AMX-INT8 is not available here (CPU %s, or the OS refused the tile state): no GEMM checked\n",
               si_cpu_name());
        check_unavailable("this machine");
        printf("%d passed, %d failed\n", passed, failed);
        return failed ? 1 : 0;
    }
    printf("AMX-INT8 available (%s), %d threads\n", si_cpu_name(), si_num_threads());

    /* name, m, n, k, lda_pad, ldc_pad, a, w, out_u8, act, zero, ties, guarded */
    const gcase fixed[] = {
        {"gemv_k1", 1, 1, 1, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_LINEAR, 128, 0, 0},
        {"gemv_k3_n17", 1, 17, 3, 0, 3, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0, 0},
        {"gemv_k576_n100", 1, 100, 576, 0, 0, A_RANDOM, W_SPARSE, 0, SI_ACT_RELU, 0, 0, 0},
        {"gemv_k4608_n64", 1, 64, 4608, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 255, 0, 0},
        {"m15_k27_n64", 15, 64, 27, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0, 0},
        {"m16_k64_n16", 16, 16, 64, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_LINEAR, 128, 0, 0},
        {"m17_k65_n17", 17, 17, 65, 3, 1, A_RANDOM, W_RANDOM, 0, SI_ACT_LINEAR, 0, 0, 0},
        {"m32_k63_n32", 32, 32, 63, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 255, 0, 0},
        {"m33_k128_n48", 33, 48, 128, 1, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 128, 0, 0},
        {"m33_k1_n1", 33, 1, 1, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_RELU, 0, 0, 0},
        {"m48_k0_n5", 48, 5, 0, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_LINEAR, 128, 0, 0},
        {"ties_m40_k9_n17", 40, 17, 9, 0, 0, A_SMALL, W_RANDOM, 1, SI_ACT_LINEAR, 128, 1, 0},
        {"ties_m40_k9_n17_relu", 40, 17, 9, 0, 0, A_SMALL, W_RANDOM, 1, SI_ACT_RELU, 0, 1, 0},
        {"all255_m70_k300_n40", 70, 40, 300, 0, 0, A_ALL255, W_RANDOM, 1, SI_ACT_RELU, 255, 0, 0},
        {"vgg_m49_k4608_n100", 49, 100, 4608, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0, 0},
        {"vgg_m196_k4608_n64_f", 196, 64, 4608, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_LINEAR, 0, 0, 0},
        {"conv1_m1000_k27_n64", 1000, 64, 27, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0, 0},
        {"m1000_k576_n100", 1000, 100, 576, 5, 2, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 128, 0, 0},
        {"m1000_k65_n17_f", 1000, 17, 65, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_RELU, 0, 0, 0},
        {"limit_plus127_m17_n20", 17, 20, SI_I8_MAX_COLS, 0, 0, A_ALL255, W_PLUS127, 0, SI_ACT_LINEAR, 0, 0, 0},
        {"limit_minus127_m33_n17", 33, 17, SI_I8_MAX_COLS, 0, 0, A_ALL255, W_MINUS127, 0, SI_ACT_LINEAR, 0, 0, 0},
        {"limit_gemv_n33", 1, 33, SI_I8_MAX_COLS, 0, 0, A_ALL255, W_PLUS127, 0, SI_ACT_LINEAR, 0, 0, 0},
        {"limit_pad_m3_n16", 3, 16, SI_I8_MAX_COLS, 64, 0, A_ALL255, W_MINUS127, 0, SI_ACT_LINEAR, 0, 0, 0},
        {"guard_m1_k1", 1, 16, 1, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0, 1},
        {"guard_m17_k27", 17, 17, 27, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 128, 0, 1},
        {"guard_m33_k63", 33, 64, 63, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_LINEAR, 0, 0, 1},
        {"guard_m40_k64", 40, 33, 64, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0, 1},
        {"guard_m64_k65", 64, 100, 65, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 255, 0, 1},
        {"guard_m15_k581", 15, 20, 581, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_RELU, 0, 0, 1},
        {"guard_m100_k4608", 100, 64, 4608, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0, 1},
    };
    const int n_fixed = (int)(sizeof fixed / sizeof fixed[0]);
    for (int i = 0; i < n_fixed; i++) {
        if (quick && fixed[i].m * fixed[i].n * fixed[i].k > 4000000 && fixed[i].k != SI_I8_MAX_COLS) continue;
        run_case(&fixed[i]);
    }

    /* random shapes */
    const int64_t ms[] = {1, 15, 16, 17, 33, 1000};
    const int64_t ns[] = {1, 16, 17, 64, 100};
    const int64_t ks[] = {1, 3, 27, 63, 64, 65, 576, 4608};
    const int32_t zeros[] = {0, 128, 255};
    const int n_random = quick ? 40 : 200;
    for (int r = 0; r < n_random; r++) {
        gcase c = {"random", 0, 0, 0, 0, 0, A_RANDOM, W_RANDOM, 0, 0, 0, 0, 0};
        c.m = uniform() < 0.7 ? ms[irand(0, 5)] : irand(2, 130);
        c.n = uniform() < 0.7 ? ns[irand(0, 4)] : irand(1, 130);
        c.k = uniform() < 0.8 ? ks[irand(0, 7)] : irand(1, 700);
        if (c.m * c.n * c.k > (quick ? 3000000 : 60000000)) c.k = ks[irand(0, 5)];
        c.lda_pad = uniform() < 0.5 ? 0 : irand(1, 70);
        c.ldc_pad = uniform() < 0.7 ? 0 : irand(1, 5);
        c.a_kind = uniform() < 0.1 ? A_ALL255 : A_RANDOM;
        c.w_kind = uniform() < 0.1 ? W_SPARSE : W_RANDOM;
        c.out_u8 = uniform() < 0.6;
        c.act = uniform() < 0.5 ? SI_ACT_RELU : SI_ACT_LINEAR;
        c.zero = zeros[irand(0, 2)];
        c.ties = uniform() < 0.1;
        c.guarded = c.m <= 40 && c.k <= 4608 && uniform() < 0.15;
        run_case(&c);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
