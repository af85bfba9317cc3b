/* Checks ops/si_igemm.c, the int8 GEMM on packed weights (issue 12):
 *
 *  - si_igemm_ref against an independent int64 sum per element (the sums must also fit in
 *    int32), requantized by the rule of si_internal.h;
 *  - si_igemm_packed (threaded) and si_igemm_packed_rows (the calling thread) of every variant
 *    this CPU has (si_dispatch_select from portable up to si_isa_detected(), then packing;
 *    the avx2 cap with and without AVX-VNNI, the avx512 cap with and without AVX-512 VNNI,
 *    by si_igemm_vnni; AVX2 without VNNI with and without the vpmaddubsw kernel, by
 *    si_igemm_maddubs, which must be packed exactly for the weights this test finds
 *    pair-safe and fall back to vpmaddwd on the others; si_igemm_kernel_name must name the
 *    expected microkernel)
 *    against si_igemm_ref, BIT FOR BIT (memcmp of the whole output, the gaps between rows
 *    included: ldc > n must leave them untouched).
 *
 * Cases: m = 1 (the GEMV) up to past the 252-row chunk, m not a multiple of any row block, n
 * not a multiple of the panels (1, 5, 17, 33, 70, ...), k = 1, 2, 3, 5, 25, 27, 500, 512,
 * 513, 4608, 9000 and 16387 (past vnni512's K block) and the largest, SI_I8_MAX_COLS (all
 * activations 255 against all weights 127 or -127: the int32 sums' limit), lda > k and odd,
 * the last row of A ending exactly at the end of its malloc'd block (AddressSanitizer
 * catches a read past it), outputs in exact-size blocks, uint8 and float outputs, relu and linear, zero points 0, 128 and 255, weights
 * including +-127, activations including all 255, and exact ties (mul 0.5) for round half
 * to even; for vpmaddubsw, weights in the quantizer's reduced range [-64, 64], pairs at its int16
 * limit (positive sums of exactly 128, negative of -128, +-127 beside -+127) against activations
 * all 255, and layers with one pair past it (which must fall back).
 *
 * A failure line names the variant, the case and its shape, the first wrong element (i, j)
 * and both values. Closing line: "N passed, M failed"; exit status 1 on any failure.
 *
 *   test_igemm [quick]      quick: the sanitizer run's smaller set
 */
#include "si_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int si_igemm_vnni, si_igemm_maddubs; /* ops/si_igemm.c */
const char *si_igemm_kernel_name(const si_packed_b8 *b);

static int passed, failed, ran_maddubs;
static uint64_t rng = 88172645463325252ull;

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

typedef struct variant {
    si_isa isa;       /* the cap selected before packing */
    int vnni;         /* si_igemm_vnni */
    int maddubs;      /* si_igemm_maddubs */
    si_isa packed;    /* the variant si_pack_b8 must report */
    const char *name; /* the microkernel it must run (si_igemm_kernel_name); "avx2_maddubs":
                       * that on pair-safe weights, "avx2_maddwd" on the others */
} variant;

static variant variants[8];
static int n_variants;

enum { A_RANDOM, A_ALL255, A_SMALL };
/* W_REDUCED: the quantizer's reduce_range ([-64, 64], +-64 often); W_PAIR_EDGE: pairs at
 * vpmaddubsw's limit (positive weights summing to exactly 128, negative ones to -128, +-127
 * against -+127, 127 beside 1, ...); W_PAIR_OVER: the same with one pair past it (129), so
 * the layer must fall back to vpmaddwd */
enum { W_RANDOM, W_PLUS127, W_MINUS127, W_SPARSE, W_REDUCED, W_PAIR_EDGE, W_PAIR_OVER };

typedef struct gcase {
    const char *name;
    int64_t m, n, k, lda_pad, ldc_pad;
    int a_kind, w_kind;
    int out_u8, act;
    int32_t zero;
    int ties; /* mul 0.5, add 0, inv_scale 1: many exact halves */
} gcase;

static void describe(const gcase *c, char *buf, size_t len) {
    snprintf(buf, len, "%s m=%lld n=%lld k=%lld lda=%lld ldc=%lld %s %s zero=%d", c->name, (long long)c->m,
             (long long)c->n, (long long)c->k, (long long)(c->k + c->lda_pad), (long long)(c->n + c->ldc_pad),
             c->out_u8 ? "u8" : "float", c->act == SI_ACT_RELU ? "relu" : "linear", (int)c->zero);
}

/* first differing element of two outputs of m rows x ldc; returns 0 if equal */
static int report_diff(const char *variant, const char *what, const char *desc, const void *got, const void *want,
                       int64_t m, int64_t n, int64_t ldc, int out_u8) {
    const size_t esz = out_u8 ? 1 : sizeof(float);
    if (memcmp(got, want, (size_t)(m * ldc) * esz) == 0) return 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < ldc; j++) {
            const size_t o = (size_t)(i * ldc + j) * esz;
            if (memcmp((const char *)got + o, (const char *)want + o, esz) == 0) continue;
            const char *gap = j >= n ? " (in the gap past n: must be untouched)" : "";
            if (out_u8)
                printf("FAIL %s [%s] %s: element (%lld, %lld)%s = %u, expected %u\n", what, variant, desc,
                       (long long)i, (long long)j, gap, ((const uint8_t *)got)[i * ldc + j],
                       ((const uint8_t *)want)[i * ldc + j]);
            else
                printf("FAIL %s [%s] %s: element (%lld, %lld)%s = %.9g (0x%08x), expected %.9g (0x%08x)\n", what,
                       variant, desc, (long long)i, (long long)j, gap, (double)((const float *)got)[i * ldc + j],
                       (unsigned)((const uint32_t *)got)[i * ldc + j], (double)((const float *)want)[i * ldc + j],
                       (unsigned)((const uint32_t *)want)[i * ldc + j]);
            return 1;
        }
    return 1;
}

static void run_case(const gcase *c) {
    char desc[256];
    describe(c, desc, sizeof desc);
    const int64_t m = c->m, n = c->n, k = c->k, lda = k + c->lda_pad, ldc = n + c->ldc_pad;
    const size_t esz = c->out_u8 ? 1 : sizeof(float);
    /* A: the last row ends at the end of the block */
    const size_t abytes = (size_t)((m - 1) * lda + k);
    uint8_t *A = xmalloc(abytes);
    for (size_t t = 0; t < abytes; t++)
        A[t] = c->a_kind == A_ALL255 ? 255 : c->a_kind == A_SMALL ? (uint8_t)irand(0, 3) : (uint8_t)irand(0, 255);
    int8_t *W = xmalloc((size_t)(n * k));
    for (int64_t t = 0; t < n * k; t++) {
        int v;
        switch (c->w_kind) {
        case W_PLUS127: v = 127; break;
        case W_MINUS127: v = -127; break;
        case W_SPARSE: v = uniform() < 0.8 ? 0 : (int)irand(-127, 127); break;
        case W_REDUCED: v = uniform() < 0.1 ? (uniform() < 0.5 ? -64 : 64) : (int)irand(-64, 64); break;
        case W_PAIR_EDGE:
        case W_PAIR_OVER: v = 0; break; /* set by pairs below */
        default: v = uniform() < 0.05 ? (uniform() < 0.5 ? -127 : 127) : (int)irand(-127, 127);
        }
        W[t] = (int8_t)v;
    }
    if (c->w_kind == W_PAIR_EDGE || c->w_kind == W_PAIR_OVER) {
        /* pairs (2t, 2t + 1) of each row: the pairs vpmaddubsw sums */
        static const int8_t edge[][2] = {{127, 1}, {1, 127}, {64, 64}, {-127, -1}, {-1, -127}, {-64, -64},
                                         {127, -127}, {-127, 127}, {100, 28}, {-28, -100}, {127, 0}, {0, -127}};
        const int ne = (int)(sizeof edge / sizeof edge[0]);
        for (int64_t j = 0; j < n; j++)
            for (int64_t t = 0; t < k; t += 2) {
                const int e = (int)irand(0, ne - 1);
                W[j * k + t] = edge[e][0];
                if (t + 1 < k) W[j * k + t + 1] = edge[e][1]; /* odd k: the last pair is (w, 0) */
            }
        if (c->w_kind == W_PAIR_OVER && n * k >= 2) { /* one pair just past the limit, in the last row */
            const int64_t t = (k >= 2 ? irand(0, k / 2 - 1) * 2 : 0) + (n - 1) * k;
            if (k >= 2) { W[t] = 127; W[t + 1] = 2; }
        }
    }
    /* the expected kernel of a maddubs variant: an independent pair check */
    int pair_safe = 1;
    for (int64_t j = 0; j < n && pair_safe; j++)
        for (int64_t t = 0; t < k; t += 2) {
            const int x = W[j * k + t], y = t + 1 < k ? W[j * k + t + 1] : 0;
            if (255 * ((x > 0) * x + (y > 0) * y) > 32767 || 255 * ((x < 0) * x + (y < 0) * y) < -32768) {
                pair_safe = 0;
                break;
            }
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

    /* the reference against an independent int64 sum */
    const size_t cbytes = (size_t)(m * ldc) * esz;
    unsigned char *ref = xmalloc(cbytes), *got = xmalloc(cbytes), *chk = xmalloc(cbytes);
    memset(ref, 0xA5, cbytes);
    memcpy(chk, ref, cbytes);
    si_igemm_ref(A, lda, m, W, n, k, &rq, ref, ldc);
    int bad = 0;
    for (int64_t i = 0; i < m && !bad; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t s = 0;
            for (int64_t t = 0; t < k; t++) s += (int64_t)A[i * lda + t] * (int64_t)W[j * k + t];
            if (s > INT32_MAX || s < INT32_MIN) {
                printf("FAIL si_igemm_ref [int64 check] %s: element (%lld, %lld): sum %lld overflows int32\n", desc,
                       (long long)i, (long long)j, (long long)s);
                bad = 1;
                break;
            }
            const float y = si_requant_f(&rq, j, (int32_t)s);
            if (c->out_u8) chk[i * ldc + j] = si_requant_u8(&rq, y);
            else memcpy(chk + (size_t)(i * ldc + j) * esz, &y, sizeof y);
        }
    if (!bad) bad = report_diff("int64 check", "si_igemm_ref", desc, ref, chk, m, n, ldc, c->out_u8);
    bad ? failed++ : passed++;

    for (int v = 0; v < n_variants; v++) {
        const variant *var = &variants[v];
        si_dispatch_select(var->isa);
        si_igemm_vnni = var->vnni;
        si_igemm_maddubs = var->maddubs;
        const char *want_name = strcmp(var->name, "avx2_maddubs") == 0 && !pair_safe ? "avx2_maddwd" : var->name;
        si_packed_b8 B;
        if (si_pack_b8(c->name, W, n, k, &B) != SI_OK) {
            printf("FAIL si_pack_b8 [%s] %s: %s\n", var->name, desc, si_last_error());
            failed++;
            continue;
        }
        if (B.isa != var->packed || strcmp(si_igemm_kernel_name(&B), want_name) != 0 || B.n != n || B.k != k ||
            B.bytes < n * k) {
            printf("FAIL si_pack_b8 [%s] %s: packed isa %s (expected %s), kernel %s (expected %s), n %lld, k %lld, "
                   "bytes %lld\n", var->name, desc, si_isa_str(B.isa), si_isa_str(var->packed),
                   si_igemm_kernel_name(&B), want_name, (long long)B.n, (long long)B.k, (long long)B.bytes);
            failed++;
        }
        si_dispatch_select(si_isa_detected()); /* the packed weights keep their variant */
        si_igemm_vnni = 1;
        si_igemm_maddubs = 1;
        const char *vname = strcmp(want_name, var->name) != 0 ? "avx2_maddubs (fell back to avx2_maddwd)" : var->name;
        for (int rows_only = 0; rows_only < 2; rows_only++) {
            memset(got, 0xA5, cbytes);
            if (rows_only) si_igemm_packed_rows(A, lda, m, &B, &rq, got, ldc);
            else si_igemm_packed(A, lda, m, &B, &rq, got, ldc);
            const int b = report_diff(vname, rows_only ? "si_igemm_packed_rows" : "si_igemm_packed", desc, got,
                                      ref, m, n, ldc, c->out_u8);
            b ? failed++ : passed++;
            if (!b && rows_only && strcmp(si_igemm_kernel_name(&B), "avx2_maddubs") == 0) ran_maddubs++;
        }
        si_packed_b8_free(&B);
    }
    free(A); free(W); free(mul); free(add); free(ref); free(got); free(chk);
}

int main(int argc, char **argv) {
    (void)argv;
    const int quick = argc > 1;
    si_init();
    const si_isa best = si_isa_detected();
    __builtin_cpu_init();
    const int vnni512 = SI_X86 && __builtin_cpu_supports("avx512vnni");
    const int avxvnni = SI_X86 && __builtin_cpu_supports("avxvnni");
    variants[n_variants++] = (variant){SI_ISA_PORTABLE, 1, 1, SI_ISA_PORTABLE, "portable"};
    if (best >= SI_ISA_AVX2) {
        variants[n_variants++] = (variant){SI_ISA_AVX2, 0, 0, SI_ISA_AVX2, "avx2_maddwd"};
        /* AVX2 without VNNI (Zen 3, Haswell to Comet Lake): vpmaddubsw on pair-safe weights */
        variants[n_variants++] = (variant){SI_ISA_AVX2, 0, 1, SI_ISA_AVX2, "avx2_maddubs"};
        if (avxvnni) variants[n_variants++] = (variant){SI_ISA_AVX2, 1, 1, SI_ISA_AVX2, "avx2_vnni"};
    }
    if (best >= SI_ISA_AVX512) {
        if (vnni512) variants[n_variants++] = (variant){SI_ISA_AVX512, 1, 1, SI_ISA_AVX512, "vnni512"};
        /* an AVX-512 CPU without VNNI (Skylake-X): the AVX2 paths */
        variants[n_variants++] = (variant){SI_ISA_AVX512, 0, 0, SI_ISA_AVX2, "avx2_maddwd"};
        variants[n_variants++] = (variant){SI_ISA_AVX512, 0, 1, SI_ISA_AVX2, "avx2_maddubs"};
    }
    printf("variants:");
    for (int v = 0; v < n_variants; v++) printf(" [%s]", variants[v].name);
    printf(", %d threads\n", si_num_threads());

    /* name, m, n, k, lda_pad, ldc_pad, a, w, out_u8, act, zero, ties */
    const gcase fixed[] = {
        {"gemv_k1", 1, 1, 1, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_LINEAR, 128, 0},
        {"gemv_k2_n5", 1, 5, 2, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_RELU, 0, 0},
        {"gemv_k3_n17", 1, 17, 3, 0, 3, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0},
        {"gemv_k5_n33", 1, 33, 5, 0, 0, A_ALL255, W_RANDOM, 1, SI_ACT_LINEAR, 255, 0},
        {"gemv_k27_n70", 1, 70, 27, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_LINEAR, 0, 0},
        {"gemv_k500_n100", 1, 100, 500, 0, 0, A_RANDOM, W_SPARSE, 1, SI_ACT_RELU, 128, 0},
        {"gemv_k4608_n64", 1, 64, 4608, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0},
        {"gemv_k4099_n47", 1, 47, 4099, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_RELU, 0, 0},
        {"gemv_fc_k25088_n40", 1, 40, 25088, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0},
        {"gemv_ties_k9_n16", 1, 16, 9, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_LINEAR, 128, 1},
        {"k1_m7_n3", 7, 3, 1, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_LINEAR, 128, 0},
        {"k2_m9_n17", 9, 17, 2, 1, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_RELU, 0, 0},
        {"k3_m13_n33", 13, 33, 3, 5, 2, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 255, 0},
        {"k5_m6_n16", 6, 16, 5, 0, 0, A_ALL255, W_PLUS127, 1, SI_ACT_LINEAR, 0, 0},
        {"conv1_k27_m50_n64", 50, 64, 27, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0},
        {"conv1_k27_m50_n64_f", 50, 64, 27, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_RELU, 0, 0},
        {"lenet_k25_m37_n20", 37, 20, 25, 3, 1, A_RANDOM, W_RANDOM, 1, SI_ACT_LINEAR, 128, 0},
        {"k500_m19_n50", 19, 50, 500, 11, 0, A_RANDOM, W_SPARSE, 0, SI_ACT_LINEAR, 0, 0},
        {"kc_edge_k512_m17_n32", 17, 32, 512, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 128, 0},
        {"kc_edge_k513_m17_n31", 17, 31, 513, 1, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 128, 0},
        {"kc_edge_k1027_m23_n65", 23, 65, 1027, 0, 5, A_RANDOM, W_RANDOM, 0, SI_ACT_RELU, 0, 0},
        {"vgg_k4608_m49_n40", 49, 40, 4608, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0},
        {"vgg_k2304_m98_n64", 98, 64, 2304, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0},
        /* past vnni512's K block (8192): full-height blocks keep their sums between K blocks */
        {"kblocks_k9000_m45_n40", 45, 40, 9000, 3, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_LINEAR, 0, 0},
        {"kblocks_k16387_m29_n33", 29, 33, 16387, 0, 2, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 128, 0},
        {"ties_k9_m10_n17", 10, 17, 9, 0, 0, A_SMALL, W_RANDOM, 1, SI_ACT_LINEAR, 128, 1},
        {"ties_k9_m10_n17_relu", 10, 17, 9, 0, 0, A_SMALL, W_RANDOM, 1, SI_ACT_RELU, 0, 1},
        {"chunks_k64_m300_n33", 300, 33, 64, 7, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 128, 0},
        {"chunks_k600_m520_n18", 520, 18, 600, 0, 0, A_RANDOM, W_RANDOM, 0, SI_ACT_LINEAR, 0, 0},
        {"small_m_split_cols_k100_m5_n200", 5, 200, 100, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_RELU, 0, 0},
        {"limit_plus127_k66000_m3_n20", 3, 20, SI_I8_MAX_COLS, 0, 0, A_ALL255, W_PLUS127, 0, SI_ACT_LINEAR, 0, 0},
        {"limit_minus127_k66000_m2_n17", 2, 17, SI_I8_MAX_COLS, 0, 0, A_ALL255, W_MINUS127, 0, SI_ACT_LINEAR, 0, 0},
        {"limit_gemv_k66000_n33", 1, 33, SI_I8_MAX_COLS, 0, 0, A_ALL255, W_PLUS127, 0, SI_ACT_LINEAR, 0, 0},
        {"all255_k300_m11_n40", 11, 40, 300, 0, 0, A_ALL255, W_RANDOM, 1, SI_ACT_RELU, 255, 0},
        {"n1_k77_m40", 40, 1, 77, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_LINEAR, 128, 0},
        {"k0_m3_n5", 3, 5, 0, 0, 0, A_RANDOM, W_RANDOM, 1, SI_ACT_LINEAR, 128, 0},
        /* vpmaddubsw (avx2_maddubs): reduced-range weights, pairs at its int16 limit against
         * activations all 255 (a saturating kernel would be off by thousands), and layers one
         * pair past it, which must take vpmaddwd */
        {"reduced_k576_m50_n64", 50, 64, 576, 0, 0, A_RANDOM, W_REDUCED, 1, SI_ACT_RELU, 0, 0},
        {"reduced_all255_k27_m13_n33", 13, 33, 27, 1, 0, A_ALL255, W_REDUCED, 0, SI_ACT_LINEAR, 0, 0},
        {"reduced_gemv_k4099_n47", 1, 47, 4099, 0, 0, A_RANDOM, W_REDUCED, 0, SI_ACT_LINEAR, 0, 0},
        {"reduced_kblocks_k1027_m23_n65", 23, 65, 1027, 0, 5, A_RANDOM, W_REDUCED, 1, SI_ACT_RELU, 128, 0},
        {"pair_edge_all255_k64_m7_n16", 7, 16, 64, 0, 0, A_ALL255, W_PAIR_EDGE, 0, SI_ACT_LINEAR, 0, 0},
        {"pair_edge_all255_k27_m13_n33", 13, 33, 27, 0, 0, A_ALL255, W_PAIR_EDGE, 0, SI_ACT_LINEAR, 0, 0},
        {"pair_edge_all255_k513_m17_n31", 17, 31, 513, 0, 0, A_ALL255, W_PAIR_EDGE, 0, SI_ACT_LINEAR, 0, 0},
        {"pair_edge_gemv_all255_k4099_n40", 1, 40, 4099, 0, 0, A_ALL255, W_PAIR_EDGE, 0, SI_ACT_LINEAR, 0, 0},
        {"pair_edge_random_k300_m11_n40", 11, 40, 300, 0, 0, A_RANDOM, W_PAIR_EDGE, 1, SI_ACT_RELU, 128, 0},
        {"pair_edge_limit_k66000_m2_n17", 2, 17, SI_I8_MAX_COLS, 0, 0, A_ALL255, W_PAIR_EDGE, 0, SI_ACT_LINEAR, 0, 0},
        {"pair_over_all255_k64_m7_n16", 7, 16, 64, 0, 0, A_ALL255, W_PAIR_OVER, 0, SI_ACT_LINEAR, 0, 0},
        {"pair_over_gemv_all255_k301_n33", 1, 33, 301, 0, 0, A_ALL255, W_PAIR_OVER, 0, SI_ACT_LINEAR, 0, 0},
    };
    const int n_fixed = (int)(sizeof fixed / sizeof fixed[0]);
    for (int i = 0; i < n_fixed; i++) {
        if (quick && fixed[i].m * fixed[i].n * fixed[i].k > 4000000 && fixed[i].k != SI_I8_MAX_COLS) continue;
        run_case(&fixed[i]);
    }

    /* random shapes */
    const int64_t ks[] = {1, 2, 3, 4, 5, 7, 25, 27, 63, 500, 576, 1152};
    const int32_t zeros[] = {0, 128, 255};
    const int n_random = quick ? 40 : 150;
    for (int r = 0; r < n_random; r++) {
        gcase c = {"random", 0, 0, 0, 0, 0, A_RANDOM, W_RANDOM, 0, 0, 0, 0};
        c.m = uniform() < 0.2 ? 1 : irand(2, uniform() < 0.1 ? 300 : 40);
        c.n = irand(1, 100);
        c.k = ks[irand(0, (int64_t)(sizeof ks / sizeof ks[0]) - 1)];
        c.lda_pad = uniform() < 0.5 ? 0 : irand(1, 9);
        c.ldc_pad = uniform() < 0.7 ? 0 : irand(1, 5);
        c.a_kind = uniform() < 0.1 ? A_ALL255 : A_RANDOM;
        const double u = uniform();
        c.w_kind = u < 0.1 ? W_SPARSE : u < 0.4 ? W_REDUCED : u < 0.5 ? W_PAIR_EDGE : W_RANDOM;
        c.out_u8 = uniform() < 0.6;
        c.act = uniform() < 0.5 ? SI_ACT_RELU : SI_ACT_LINEAR;
        c.zero = zeros[irand(0, 2)];
        c.ties = uniform() < 0.1;
        run_case(&c);
    }
    /* the vpmaddubsw kernel must have run (and passed) wherever the CPU has AVX2 */
    if (best >= SI_ISA_AVX2 && ran_maddubs == 0) {
        printf("FAIL avx2_maddubs: no case ran it\n");
        failed++;
    }
    printf("%d passed, %d failed (avx2_maddubs ran on %d)\n", passed, failed, ran_maddubs);
    return failed ? 1 : 0;
}
