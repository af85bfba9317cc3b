/* Checks the int8 CSR kernels and the uint8 activation ops (issue 12) for every ISA variant
 * this CPU can run (si_dispatch_select, SI_ISA_PORTABLE up to si_isa_detected()):
 *
 *  - csr/si_csr_i8.c: si_i8_csrmv (the loops of fc_csrmv_i8, fc_csrmv_i8_avx2 and
 *    fc_csrmv_i8_nogather: si_i8_csrmv_loop) and si_i8_csrmm against si_i8_csrmv_ref /
 *    si_i8_csrmm_ref bit for bit (uint8 and float outputs, relu and linear, zero points 0 / 128 / 255), and
 *    the references against this file's own int64 sums and its own copy of the
 *    requantization rule. Random CSR matrices: empty rows, nnz 0, a single row, 1 and 3
 *    columns (every gather lane near x's end), 65536 columns as uint16, 66000 as int32,
 *    densities from 0.2% to 100%, values +-127 with x all 255 (the largest sums), batches
 *    not multiples of the 64-sample panels, column blocking (wide panels), row strides
 *    ldx > cols and ldy > rows;
 *  - ops/si_ops_u8.c: si_quantize_u8 against the rule (NaN, infinities, halves),
 *    si_dequantize_u8, si_maxpool_u8 against si_maxpool_ref on the same values as floats,
 *    si_im2col_u8 against si_im2col_rows_ref on the same values as floats ('same' and
 *    'valid', strides 1 and 2, batch 2, partial row ranges, ldc > cols with the gap
 *    untouched).
 *
 * Buffers are exactly sized (malloc) so AddressSanitizer sees any over-read. A failure line
 * names the kernel, the ISA, the case and the first wrong element with both values. Closing
 * line: "N passed, M failed"; exit status 1 on any failure. "quick": fewer, smaller cases.
 */
#include "si_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static si_isa n_isa;

static uint64_t next_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static double uniform(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
static int64_t randint(int64_t lo, int64_t hi) { return lo + (int64_t)(next_u64() % (uint64_t)(hi - lo + 1)); }

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static void check(int ok, const char *fmt, ...) SI_PRINTF(2, 3);
static void check(int ok, const char *fmt, ...) {
    if (ok) { passed++; return; }
    failed++;
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

/* ---- the int8 CSR kernels ------------------------------------------------------------ */

typedef struct csr8 {
    si_csr8_view v;
    int8_t *val;
    int32_t *col;
    uint16_t *col16;
    int64_t *ptr;
} csr8;

/* Each entry non-zero with probability density (sorted columns); every empty_every-th row
 * empty; extreme: values +-127 only. uint16 columns when use16 (cols <= 65536). */
static void make_csr8(csr8 *M, int64_t rows, int64_t cols, double density, int empty_every, int extreme, int use16) {
    int64_t cap = 64, nnz = 0;
    M->ptr = xmalloc(sizeof(int64_t) * (size_t)(rows + 1));
    int32_t *col = xmalloc(sizeof(int32_t) * (size_t)cap);
    int8_t *val = xmalloc((size_t)cap);
    M->ptr[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (!(empty_every && r % empty_every == empty_every - 1))
            for (int64_t c = 0; c < cols; c++) {
                if (density < 1.0 && uniform() >= density) continue;
                if (nnz == cap) {
                    cap *= 2;
                    col = realloc(col, sizeof(int32_t) * (size_t)cap);
                    val = realloc(val, (size_t)cap);
                    if (!col || !val) { fprintf(stderr, "out of memory\n"); exit(2); }
                }
                col[nnz] = (int32_t)c;
                val[nnz] = (int8_t)(extreme ? (next_u64() & 1 ? 127 : -127) : randint(-127, 127));
                nnz++;
            }
        M->ptr[r + 1] = nnz;
    }
    M->val = xmalloc((size_t)nnz);
    M->col = xmalloc(sizeof(int32_t) * (size_t)nnz);
    memcpy(M->val, val, (size_t)nnz);
    memcpy(M->col, col, sizeof(int32_t) * (size_t)nnz);
    M->col16 = NULL;
    if (use16) {
        M->col16 = xmalloc(sizeof(uint16_t) * (size_t)nnz);
        for (int64_t k = 0; k < nnz; k++) M->col16[k] = (uint16_t)col[k];
    }
    free(col);
    free(val);
    M->v.val = M->val;
    M->v.col = use16 ? NULL : M->col; /* a uint16 view carries no int32 columns: nothing may read them */
    M->v.col16 = M->col16;
    M->v.ptr = M->ptr;
    M->v.rows = rows;
    M->v.cols = cols;
}

static void free_csr8(csr8 *M) {
    free(M->val); free(M->col); free(M->col16); free(M->ptr);
}

/* The rule, written out again: an independent copy of si_requant_f / si_requant_u8. */
static float rule_f(float mul, float add, int relu, int64_t acc) {
    float y = fmaf((float)acc, mul, add);
    return relu ? fmaxf(y, 0.0f) : y;
}
static uint8_t rule_u8(float y, float inv_scale, int32_t zero) {
    float t = y * inv_scale;
    t = fmaxf(t, (float)-zero);
    t = fminf(t, (float)(255 - zero));
    return (uint8_t)(zero + (int32_t)rintf(t));
}

typedef struct rq_case {
    si_requant rq;
    float *mul, *add;
} rq_case;

/* mul scaled so that the outputs span a few units (the uint8 range with clamping at both
 * ends for inv_scale ~40), add in [-2, 2]. */
static void make_rq(rq_case *R, const csr8 *M, int act, int out_u8, int32_t zero) {
    const int64_t rows = M->v.rows;
    R->mul = xmalloc(sizeof(float) * (size_t)(rows ? rows : 1));
    R->add = xmalloc(sizeof(float) * (size_t)(rows ? rows : 1));
    for (int64_t r = 0; r < rows; r++) {
        double nz = (double)(M->ptr[r + 1] - M->ptr[r]);
        R->mul[r] = (float)((uniform() * 2 - 1) * 3.0 / (127.0 * 128.0 * sqrt(nz + 1.0)));
        R->add[r] = (float)(uniform() * 4 - 2);
        if (R->add[r] == 0.0f) R->add[r] = 0.5f; /* not -0.0: fmaxf(-0, 0) may give either zero */
    }
    memset(&R->rq, 0, sizeof R->rq);
    R->rq.mul = R->mul;
    R->rq.add = R->add;
    R->rq.act = act;
    R->rq.out_u8 = out_u8;
    R->rq.inv_scale = (float)(30.0 + 20.0 * uniform());
    R->rq.zero = zero;
}

static void free_rq(rq_case *R) { free(R->mul); free(R->add); }

/* Element i of an output (uint8 or float) as bits, and as text. */
static uint32_t out_bits(const void *Y, int out_u8, int64_t i) {
    if (out_u8) return ((const uint8_t *)Y)[i];
    uint32_t b;
    memcpy(&b, (const float *)Y + i, 4);
    return b;
}
static double out_value(const void *Y, int out_u8, int64_t i) {
    return out_u8 ? (double)((const uint8_t *)Y)[i] : (double)((const float *)Y)[i];
}

/* One matrix, one requantization: csrmv (n = 1) or csrmm of n rows, every variant against
 * the reference, the reference against the int64 sums. */
static void run_csr_case(const char *name, csr8 *M, const rq_case *R, int64_t n, int64_t ldx, int64_t ldy,
                         int x255) {
    const int64_t rows = M->v.rows, cols = M->v.cols;
    const int u8 = R->rq.out_u8, esz = u8 ? 1 : 4;
    const int mv = n == 1 && ldx == cols && ldy == rows;
    const int64_t xbytes = (n - 1) * ldx + cols, ybytes = ((n - 1) * ldy + rows) * esz;
    uint8_t *X = xmalloc((size_t)xbytes);
    for (int64_t i = 0; i < xbytes; i++) X[i] = x255 ? 255 : (uint8_t)randint(0, 255);
    uint8_t *Yref = xmalloc((size_t)ybytes), *Y = xmalloc((size_t)ybytes);
    memset(Yref, 0xCD, (size_t)ybytes);
    char what[200];
    snprintf(what, sizeof what, "%s %lldx%lld n=%lld ldx=%lld ldy=%lld %s %s zero=%d%s", name, (long long)rows,
             (long long)cols, (long long)n, (long long)ldx, (long long)ldy, u8 ? "u8" : "f32",
             R->rq.act == SI_ACT_RELU ? "relu" : "linear", R->rq.zero, M->v.col16 ? " col16" : " col32");

    if (mv) si_i8_csrmv_ref(&M->v, X, &R->rq, Yref);
    else si_i8_csrmm_ref(&M->v, X, ldx, n, &R->rq, Yref, ldy);

    /* the reference against int64 sums and the rule written out here */
    int bad = 0;
    for (int64_t i = 0; i < n && !bad; i++)
        for (int64_t r = 0; r < rows; r++) {
            int64_t acc = 0;
            for (int64_t k = M->ptr[r]; k < M->ptr[r + 1]; k++) acc += (int64_t)M->val[k] * X[i * ldx + M->col[k]];
            float y = rule_f(R->mul[r], R->add[r], R->rq.act == SI_ACT_RELU, acc);
            uint32_t want;
            if (u8) want = rule_u8(y, R->rq.inv_scale, R->rq.zero);
            else memcpy(&want, &y, 4);
            const int64_t e = i * ldy + r;
            if (out_bits(Yref, u8, e) != want) {
                check(0, "%s ref: sample %lld row %lld: got %.9g, int64 rule %.9g (acc %lld)", what, (long long)i,
                      (long long)r, out_value(Yref, u8, e), u8 ? (double)want : (double)y, (long long)acc);
                bad = 1;
                break;
            }
        }
    if (!bad) check(1, "%s", what);

    /* csrmv: the loop of every batch-1 entry (fc/si_fc_i8.c) the ISA has */
    static const struct { si_i8_mv_loop loop; const char *entry; } loops[] = {
        {SI_I8_MV_ACTIVE, "fc_csrmv_i8"}, {SI_I8_MV_AVX2, "fc_csrmv_i8_avx2"},
        {SI_I8_MV_NOGATHER, "fc_csrmv_i8_nogather"}};
    for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++)
    for (int li = 0; li < (mv ? (int)(sizeof loops / sizeof loops[0]) : 1); li++) {
        si_dispatch_select(isa);
        if (mv && !si_i8_csrmv_has(loops[li].loop)) continue;
        memset(Y, 0xCD, (size_t)ybytes); /* the gaps of ldy > rows must stay as they were */
        if (mv) {
            si_i8_csrmv_loop(loops[li].loop, &M->v, X, &R->rq, Y);
        } else {
            const int64_t wsb = si_i8_csrmm_ws_bytes(&M->v, n);
            void *ws = xmalloc((size_t)wsb);
            si_i8_csrmm(&M->v, X, ldx, n, &R->rq, Y, ldy, ws);
            free(ws);
        }
        int64_t e = 0;
        while (e < ybytes && Y[e] == Yref[e]) e++;
        if (e < ybytes) {
            const int64_t el = e / esz;
            check(0, "%s %s [%s]: element %lld (sample %lld row %lld): got %.9g, ref %.9g",
                  mv ? loops[li].entry : "csrmm", si_isa_str(isa), what, (long long)el, (long long)(el / ldy), (long long)(el % ldy),
                  out_value(Y, u8, el), out_value(Yref, u8, el));
        } else {
            check(1, "%s", what);
        }
    }
    si_dispatch_select(si_isa_detected());
    free(X); free(Y); free(Yref);
}

static void test_csr(const char *name, int64_t rows, int64_t cols, double density, int empty_every, int extreme,
                     int use16, const int64_t *ns, int n_ns) {
    csr8 M;
    make_csr8(&M, rows, cols, density, empty_every, extreme, use16);
    static const int32_t zeros[3] = {0, 128, 255};
    int variant = 0;
    for (int u8 = 0; u8 <= 1; u8++)
        for (int act = 0; act <= 1; act++, variant++) {
            rq_case R;
            make_rq(&R, &M, act ? SI_ACT_RELU : SI_ACT_LINEAR, u8, zeros[variant % 3]);
            for (int t = 0; t < n_ns; t++) {
                const int64_t n = ns[t];
                run_csr_case(name, &M, &R, n, cols, rows, extreme);
                if (n > 1 && t == n_ns - 1) run_csr_case(name, &M, &R, n, cols + 7, rows + 3, extreme);
            }
            free_rq(&R);
        }
    free_csr8(&M);
}

/* ---- quantize / dequantize ------------------------------------------------------------ */

static void test_quant(int64_t n, float inv_scale, int32_t zero) {
    float *x = xmalloc(sizeof(float) * (size_t)n), *back = xmalloc(sizeof(float) * (size_t)n);
    uint8_t *q = xmalloc((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        switch (i % 11) {
        case 0: x[i] = (float)(randint(-400, 400)) / 2.0f / inv_scale; break; /* halves: rint's ties */
        case 1: x[i] = i % 3 ? INFINITY : -INFINITY; break;
        case 2: x[i] = NAN; break;
        case 3: x[i] = (float)(uniform() * 2e6 - 1e6); break;
        default: x[i] = (float)((uniform() * 2 - 1) * 300.0 / inv_scale);
        }
    }
    for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
        si_dispatch_select(isa);
        memset(q, 0xCD, (size_t)n);
        si_quantize_u8(x, n, inv_scale, zero, q);
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; i++)
            if (!isnan(x[i]) && q[i] != rule_u8(x[i], inv_scale, zero)) bad = i;
        if (bad >= 0)
            check(0, "quantize_u8 %s n=%lld zero=%d: element %lld (x %.9g): got %d, rule %d", si_isa_str(isa),
                  (long long)n, zero, (long long)bad, (double)x[bad], q[bad], rule_u8(x[bad], inv_scale, zero));
        else check(1, "quantize");
        const float scale = 1.0f / inv_scale;
        si_dequantize_u8(q, n, scale, zero, back);
        bad = -1;
        for (int64_t i = 0; i < n && bad < 0; i++) {
            float want = scale * (float)((int32_t)q[i] - zero);
            if (memcmp(&want, back + i, 4)) bad = i;
        }
        if (bad >= 0)
            check(0, "dequantize_u8 %s n=%lld zero=%d: element %lld (q %d): got %.9g, want %.9g", si_isa_str(isa),
                  (long long)n, zero, (long long)bad, q[bad], (double)back[bad],
                  (double)(scale * (float)((int32_t)q[bad] - zero)));
        else check(1, "dequantize");
    }
    si_dispatch_select(si_isa_detected());
    free(x); free(back); free(q);
}

/* ---- maxpool and im2col ------------------------------------------------------------------ */

static void set_geometry(si_layer *L, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh, int sw, int same) {
    memset(L, 0, sizeof *L);
    L->in_h = H; L->in_w = W; L->in_c = C;
    L->kh = kh; L->kw = kw; L->sh = sh; L->sw = sw;
    if (same) {
        L->out_h = (H + sh - 1) / sh;
        L->out_w = (W + sw - 1) / sw;
        int64_t th = (L->out_h - 1) * sh + kh - H, tw = (L->out_w - 1) * sw + kw - W;
        L->pad_top = th > 0 ? th / 2 : 0;
        L->pad_left = tw > 0 ? tw / 2 : 0;
    } else {
        L->out_h = (H - kh) / sh + 1;
        L->out_w = (W - kw) / sw + 1;
    }
    L->cols = (int64_t)kh * kw * C;
}

static void test_maxpool(const char *name, int64_t H, int64_t W, int64_t C, int k, int s, int same, int batch) {
    si_layer L;
    set_geometry(&L, H, W, C, k, k, s, s, same);
    L.type = SI_LAYER_MAXPOOL2D;
    L.out_c = C;
    const int64_t ni = batch * H * W * C, no = batch * L.out_h * L.out_w * C;
    uint8_t *in = xmalloc((size_t)ni), *out = xmalloc((size_t)no);
    float *fin = xmalloc(sizeof(float) * (size_t)ni), *fout = xmalloc(sizeof(float) * (size_t)no);
    for (int64_t i = 0; i < ni; i++) { in[i] = (uint8_t)randint(0, 255); fin[i] = in[i]; }
    si_maxpool_ref(&L, fin, batch, fout);
    for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
        si_dispatch_select(isa);
        memset(out, 0xCD, (size_t)no);
        si_maxpool_u8(&L, in, batch, out);
        int64_t bad = -1;
        for (int64_t i = 0; i < no && bad < 0; i++)
            if ((float)out[i] != fout[i]) bad = i;
        if (bad >= 0)
            check(0, "maxpool_u8 %s %s: element %lld: got %d, ref %g", si_isa_str(isa), name, (long long)bad, out[bad],
                  (double)fout[bad]);
        else check(1, "maxpool");
    }
    si_dispatch_select(si_isa_detected());
    free(in); free(out); free(fin); free(fout);
}

static void test_im2col(const char *name, int64_t H, int64_t W, int64_t C, int kh, int kw, int s, int same, int batch,
                        uint8_t zero) {
    si_layer L;
    set_geometry(&L, H, W, C, kh, kw, s, s, same);
    L.type = SI_LAYER_CONV2D;
    const int64_t K = L.cols, P = batch * L.out_h * L.out_w, ni = batch * H * W * C, ldc = K + 5;
    uint8_t *in = xmalloc((size_t)ni);
    float *fin = xmalloc(sizeof(float) * (size_t)ni), *fcol = xmalloc(sizeof(float) * (size_t)(P * K));
    for (int64_t i = 0; i < ni; i++) { in[i] = (uint8_t)randint(1, 255); fin[i] = in[i]; } /* 0.0 in the ref: padding */
    si_im2col_rows_ref(&L, fin, 0, P, fcol);
    const int64_t ranges[3][2] = {{0, P}, {P / 3, P - P / 3 - 1}, {P - 1, 1}};
    for (si_isa isa = SI_ISA_PORTABLE; isa < n_isa; isa++) {
        si_dispatch_select(isa);
        for (int t = 0; t < 3; t++) {
            const int64_t p0 = ranges[t][0], m = ranges[t][1];
            if (m <= 0) continue;
            const int64_t bytes = (m - 1) * ldc + K;
            uint8_t *col = xmalloc((size_t)bytes);
            memset(col, 0xAB, (size_t)bytes);
            si_im2col_u8(&L, in, p0, m, col, ldc, zero);
            int64_t br = -1, bc = -1;
            for (int64_t r = 0; r < m && br < 0; r++)
                for (int64_t c = 0; c < ldc && r * ldc + c < bytes; c++) {
                    const float f = c < K ? fcol[(p0 + r) * K + c] : -1.0f;
                    const int want = c >= K ? 0xAB : f == 0.0f ? zero : (int)f;
                    if (col[r * ldc + c] != want) { br = r; bc = c; break; }
                }
            if (br >= 0) {
                const float f = bc < K ? fcol[(p0 + br) * K + bc] : -1.0f;
                check(0, "im2col_u8 %s %s rows [%lld, +%lld): row %lld column %lld: got %d, want %d", si_isa_str(isa),
                      name, (long long)p0, (long long)m, (long long)(p0 + br), (long long)bc, col[br * ldc + bc],
                      bc >= K ? 0xAB : f == 0.0f ? zero : (int)f);
            } else {
                check(1, "im2col");
            }
            free(col);
            /* si_im2col_u8_short (rows of ldc = K; up to 16 bytes of spill past the m rows,
             * nothing past that; the input read only up to in_end, which ASan checks here:
             * in is exactly ni bytes) on layers whose kernel rows fit 16 bytes */
            if (isa == SI_ISA_PORTABLE && kw * C <= 16) {
                const int64_t sb = m * K + 16 + 8;
                uint8_t *sc = xmalloc((size_t)sb);
                memset(sc, 0xAB, (size_t)sb);
                si_im2col_u8_short(&L, in, in + ni, p0, m, sc, zero);
                int64_t bad = -1;
                for (int64_t i = 0; i < sb && bad < 0; i++) {
                    const float f = i < m * K ? fcol[(p0 + i / K) * K + i % K] : -1.0f;
                    if (i < m * K ? sc[i] != (f == 0.0f ? zero : (int)f) : i >= m * K + 16 && sc[i] != 0xAB) bad = i;
                }
                if (bad >= 0)
                    check(0, "im2col_u8_short %s rows [%lld, +%lld): byte %lld (row %lld column %lld): got %d", name,
                          (long long)p0, (long long)m, (long long)bad, (long long)(bad / K), (long long)(bad % K),
                          sc[bad]);
                else check(1, "im2col_short");
                free(sc);
            }
        }
    }
    si_dispatch_select(si_isa_detected());
    free(in); free(fin); free(fcol);
}

int main(int argc, char **argv) {
    const int quick = argc > 1 && strcmp(argv[1], "quick") == 0;
    si_init();
    n_isa = (si_isa)(si_isa_detected() + 1);
    printf("ISA variants: portable..%s\n", si_isa_str(si_isa_detected()));

    static const int64_t ns_all[] = {1, 2, 17, 64, 65, 130}, ns_few[] = {1, 3, 70};
    const int64_t *ns = quick ? ns_few : ns_all;
    const int n_ns = quick ? 3 : 6;
    test_csr("cols1", 37, 1, 0.5, 4, 0, 1, ns, n_ns);
    test_csr("cols3", 50, 3, 0.6, 5, 0, 1, ns, n_ns);
    test_csr("cols3_x255", 9, 3, 1.0, 0, 1, 0, ns, n_ns);
    test_csr("single_row", 1, 1000, 0.3, 0, 0, 1, ns, n_ns);
    test_csr("nnz0", 64, 500, 0.0, 0, 0, 1, ns, n_ns);
    test_csr("dense_small", 20, 37, 1.0, 0, 0, 1, ns, n_ns);
    test_csr("d30_empty_rows", 33, 2500, 0.3, 5, 0, 1, ns, n_ns);
    test_csr("d30_empty_rows_i32", 33, 2500, 0.3, 5, 0, 0, ns, n_ns);
    test_csr("d4_4096", quick ? 60 : 200, 4096, 0.04, 7, 0, 1, ns, n_ns);
    test_csr("d1_blocked_9000", 70, 9000, 0.01, 9, 0, 1, ns, n_ns);
    test_csr("d5_blocked_9000_i32", 45, 9000, 0.05, 0, 0, 0, ns, n_ns);
    test_csr("col16_65536", 40, 65536, 0.002, 6, 0, 1, ns, n_ns);
    test_csr("i32_66000", 30, 66000, 0.003, 6, 0, 0, ns, n_ns);
    {   /* the largest sums: +-127 times 255 over every column */
        static const int64_t n1[] = {1, 2};
        test_csr("full_x255_col16_65536", 2, 65536, 1.0, 0, 1, 1, n1, 2);
        test_csr("full_x255_i32_66000", 2, 66000, 1.0, 0, 1, 0, n1, 2);
    }

    static const float invs[3] = {40.0f, 0.7f, 255.0f};
    static const int32_t zs[3] = {0, 128, 255};
    static const int64_t qn[] = {1, 15, 16, 17, 100, 1000, 300001};
    for (int i = 0; i < (quick ? 5 : 7); i++) test_quant(qn[i], invs[i % 3], zs[(i + 1) % 3]);

    test_maxpool("2x2_s2_valid_8x10x5_b2", 8, 10, 5, 2, 2, 0, 2);
    test_maxpool("3x3_s2_same_9x7x3_b2", 9, 7, 3, 3, 2, 1, 2);
    test_maxpool("3x3_s1_same_6x6x70_b2", 6, 6, 70, 3, 1, 1, 2);
    test_maxpool("2x2_s2_same_odd_7x9x16_b2", 7, 9, 16, 2, 2, 1, 2);
    if (!quick) test_maxpool("2x2_s2_threaded_112x112x64_b2", 112, 112, 64, 2, 2, 0, 2);

    test_im2col("3x3_s1_same_9x8x3_b2", 9, 8, 3, 3, 3, 1, 1, 2, 0);
    test_im2col("3x3_s2_same_9x8x5_b2", 9, 8, 5, 3, 3, 2, 1, 2, 128);
    test_im2col("5x5_s1_valid_12x11x2_b2", 12, 11, 2, 5, 5, 1, 0, 2, 7);
    test_im2col("3x3_s2_valid_10x9x4_b2", 10, 9, 4, 3, 3, 2, 0, 2, 255);
    test_im2col("1x1_s2_same_7x7x6_b2", 7, 7, 6, 1, 1, 2, 1, 2, 3);
    test_im2col("5x3_s1_same_6x7x1_b2", 6, 7, 1, 5, 3, 1, 1, 2, 9);
    test_im2col("3x3_s1_same_13x11x3_b2", 13, 11, 3, 3, 3, 1, 1, 2, 121); /* an RGB first layer */
    test_im2col("5x5_s1_valid_12x12x1_b3", 12, 12, 1, 5, 5, 1, 0, 3, 0);  /* LeNet-5's conv1 */
    test_im2col("2x4_s2_same_9x10x4_b1", 9, 10, 4, 2, 4, 2, 1, 1, 17);   /* 16-byte kernel rows */
    if (!quick) test_im2col("3x3_s1_same_threaded_40x40x64_b2", 40, 40, 64, 3, 3, 1, 1, 2, 128);

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
