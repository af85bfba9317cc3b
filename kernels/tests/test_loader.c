/* Loader and runtime test on untrusted model files, through the public API only.
 *
 *   test_loader DIR
 *
 * DIR is written by make_cases.py; DIR/cases.txt lists the cases (see there). For every
 * bad file the load must fail with the expected status and a message containing the
 * expected substring, from the file and from a buffer of its bytes. Every good file must
 * load both ways and reproduce the NumPy reference outputs at batch 1 and 3, with the
 * fast and the reference kernels. The fuzz case flips, overwrites and truncates a good
 * file at random (fixed seed) and requires only that nothing crashes: run it under
 * AddressSanitizer and UBSan (run_sanitized.sh). Prints "N passed, M failed" last.
 */
#define _POSIX_C_SOURCE 200809L
#include "sparseinfer.h"

#include <errno.h>
#include <locale.h>
#include <stddef.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REL_TOL 1e-4

static int passed, failed;
static int case_failed; /* the current case has failed */
static const char *case_name;

static void check_fail(const char *fmt, ...) {
    va_list ap;
    if (!case_failed) fprintf(stderr, "FAIL %s\n", case_name);
    case_failed = 1;
    fputs("    ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void begin(const char *name) { case_name = name; case_failed = 0; }
static void end(void) {
    if (case_failed) failed++;
    else passed++;
}

static unsigned char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        unsigned char *nb = realloc(buf, cap *= 2);
        if (!nb) { free(buf); buf = NULL; }
        else buf = nb;
    }
    fclose(f);
    *size = n;
    return buf;
}

static const struct { const char *name; si_status_t st; } STATUS[] = {
    {"SI_OK", SI_OK}, {"SI_ERR_IO", SI_ERR_IO}, {"SI_ERR_FORMAT", SI_ERR_FORMAT},
    {"SI_ERR_MODEL", SI_ERR_MODEL}, {"SI_ERR_UNSUPPORTED", SI_ERR_UNSUPPORTED},
    {"SI_ERR_ARGUMENT", SI_ERR_ARGUMENT}, {"SI_ERR_NOMEM", SI_ERR_NOMEM}, {"SI_ERR_INTERNAL", SI_ERR_INTERNAL},
};

static int parse_status(const char *s, si_status_t *out) {
    for (size_t i = 0; i < sizeof STATUS / sizeof STATUS[0]; i++)
        if (strcmp(s, STATUS[i].name) == 0) { *out = STATUS[i].st; return 1; }
    return 0;
}

static const char *status_name(si_status_t st) {
    for (size_t i = 0; i < sizeof STATUS / sizeof STATUS[0]; i++)
        if (STATUS[i].st == st) return STATUS[i].name;
    return "?";
}

/* ---- bad files ----------------------------------------------------------------------- */

static void expect_failure(const char *how, si_status_t st, si_model *m, si_status_t want, const char *substr) {
    if (st == SI_OK) {
        check_fail("%s: loaded, expected %s", how, status_name(want));
        si_model_free(m);
        return;
    }
    if (st != want) check_fail("%s: %s (%s), expected %s", how, status_name(st), si_last_error(), status_name(want));
    if (!strstr(si_last_error(), substr))
        check_fail("%s: message \"%s\" does not contain \"%s\"", how, si_last_error(), substr);
}

static void test_bad(const char *dir, const char *file, si_status_t want, const char *substr) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    begin(file);
    si_model *m = (si_model *)0x1; /* must stay untouched on failure */
    si_status_t st = si_model_load_file(path, &m);
    expect_failure("load_file", st, m, want, substr);
    if (st != SI_OK && m != (si_model *)0x1) check_fail("load_file wrote *out on failure");
    if (st != SI_OK && !strstr(si_last_error(), file)) check_fail("message \"%s\" does not name the file", si_last_error());

    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0) {
        size_t size;
        unsigned char *buf = read_all(path, &size);
        if (!buf) check_fail("cannot read %s", path);
        else {
            m = NULL;
            st = si_model_load_buffer(buf, size, &m);
            expect_failure("load_buffer", st, m, want, substr);
            free(buf);
        }
    }
    end();
}

/* ---- struct sizes (issue 13: an older program must never be overrun) ---------------- */

/* An older program's si_layer_info: struct_size and name only, in a buffer of exactly that
 * size (ASan sees any write past it); a newer program's options with a field the library
 * does not know, zero (accepted) and set (refused); struct_size 0 (refused). */
static void test_struct_sizes(const char *path, const si_model *m) {
    const size_t old_size = offsetof(si_layer_info, name) + sizeof(const char *);
    si_layer_info *old = malloc(old_size);
    memset(old, 0xAB, old_size);
    old->struct_size = old_size;
    if (si_model_layer_info(m, 0, old) != SI_OK || old->struct_size != old_size || !old->name || !old->name[0])
        check_fail("layer_info into an older, smaller struct: %s", si_last_error());
    free(old);
    si_layer_info zero = {0};
    if (si_model_layer_info(m, 0, &zero) != SI_ERR_ARGUMENT || !strstr(si_last_error(), "struct_size"))
        check_fail("layer_info with struct_size 0 accepted");

    unsigned char newer[sizeof(si_load_options) + 16];
    memset(newer, 0, sizeof newer);
    si_load_options base = {.struct_size = sizeof newer};
    memcpy(newer, &base, sizeof base);
    si_model *mm = NULL;
    si_status_t st = si_model_load_file_ex(path, (const si_load_options *)(void *)newer, &mm);
    if (st != SI_OK) check_fail("options from a newer program, unknown fields zero: %s", si_last_error());
    si_model_free(mm);
    newer[sizeof(si_load_options) + 3] = 1;
    mm = (si_model *)0x1;
    if ((st = si_model_load_file_ex(path, (const si_load_options *)(void *)newer, &mm)) != SI_ERR_UNSUPPORTED ||
        mm != (si_model *)0x1)
        check_fail("options with an unknown field set: %s, expected SI_ERR_UNSUPPORTED", status_name(st));
    /* An older program's options: only struct_size and policy (the rest must take defaults). */
    const size_t small = offsetof(si_load_options, policy) + sizeof(si_exec_policy);
    si_load_options *o = malloc(small);
    memset(o, 0, small);
    o->struct_size = small;
    o->policy = SI_POLICY_DENSE;
    mm = NULL;
    if ((st = si_model_load_file_ex(path, o, &mm)) != SI_OK) check_fail("options of an older program: %s", si_last_error());
    si_model_free(mm);
    free(o);
    si_load_options none = {0};
    if ((st = si_model_load_file_ex(path, &none, &mm)) != SI_ERR_ARGUMENT)
        check_fail("options with struct_size 0: %s, expected SI_ERR_ARGUMENT", status_name(st));

    /* max_batch (0.5): negative refused; 1 runs a batch of 3 as three batches of 1, bit for bit */
    si_load_options mb = {.struct_size = sizeof mb, .max_batch = -1};
    if ((st = si_model_load_file_ex(path, &mb, &mm)) != SI_ERR_ARGUMENT || !strstr(si_last_error(), "max_batch"))
        check_fail("max_batch -1: %s, expected SI_ERR_ARGUMENT naming it", status_name(st));
    mb.max_batch = 1;
    mm = NULL;
    if ((st = si_model_load_file_ex(path, &mb, &mm)) != SI_OK) {
        check_fail("max_batch 1: %s", si_last_error());
        return;
    }
    const int64_t ni = si_model_input_size(mm), no = si_model_output_size(mm);
    float *x = malloc(sizeof(float) * (size_t)(3 * ni)), *y3 = malloc(sizeof(float) * (size_t)(3 * no)),
          *y1 = malloc(sizeof(float) * (size_t)(3 * no));
    for (int64_t i = 0; i < 3 * ni; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f;
    si_context *c3 = NULL, *c1 = NULL;
    if (si_context_create(mm, 3, &c3) || si_context_create(mm, 1, &c1) || si_run(c3, x, 3, y3))
        check_fail("max_batch 1, batch 3: %s", si_last_error());
    for (int i = 0; i < 3 && c1; i++)
        if (si_run(c1, x + i * ni, 1, y1 + i * no)) check_fail("max_batch 1, sample %d: %s", i, si_last_error());
    if (c3 && c1 && memcmp(y1, y3, sizeof(float) * (size_t)(3 * no)) != 0)
        check_fail("max_batch 1: a batch of 3 differs from three batches of 1");
    si_context_free(c3);
    si_context_free(c1);
    free(x); free(y3); free(y1);
    si_model_free(mm);
}

/* ---- good files ---------------------------------------------------------------------- */

static float *read_f32(const char *path, size_t count) {
    size_t size;
    unsigned char *raw = read_all(path, &size);
    if (!raw) { check_fail("cannot read %s: %s", path, strerror(errno)); return NULL; }
    if (size != count * 4) {
        check_fail("%s: %zu bytes, expected %zu", path, size, count * 4);
        free(raw);
        return NULL;
    }
    float *v = malloc(count * sizeof *v);
    for (size_t i = 0; v && i < count; i++) {
        uint32_t u = (uint32_t)raw[4 * i] | (uint32_t)raw[4 * i + 1] << 8 | (uint32_t)raw[4 * i + 2] << 16 |
                     (uint32_t)raw[4 * i + 3] << 24;
        memcpy(&v[i], &u, 4);
    }
    free(raw);
    return v;
}

static void compare(const char *how, const float *got, const float *want, int batch, int64_t n) {
    int shown = 0;
    for (int s = 0; s < batch; s++) {
        double scale = 0;
        for (int64_t j = 0; j < n; j++) scale = fmax(scale, fabs(want[s * n + j]));
        for (int64_t j = 0; j < n; j++) {
            double g = got[s * n + j], e = want[s * n + j];
            /* relative, with a floor at 1e-3 of the sample's largest output for values near 0 */
            if (!(fabs(g - e) <= REL_TOL * fmax(fabs(e), 1e-3 * scale)) && shown++ < 5)
                check_fail("%s: sample %d element %lld: got %.9g, expected %.9g", how, s, (long long)j, g, e);
        }
    }
}

static void run_good(const char *how, si_model *m, const float *x, const float *y) {
    int64_t in_n = si_model_input_size(m), out_n = si_model_output_size(m);
    si_context *ctx = NULL;
    si_status_t st = si_context_create(m, 3, &ctx);
    if (st != SI_OK) { check_fail("%s: context: %s", how, si_last_error()); return; }
    float *out = malloc((size_t)(3 * out_n) * sizeof *out);
    char what[128];
    for (int ref = 0; ref <= 1; ref++) {
        si_set_reference_kernels(ref);
        snprintf(what, sizeof what, "%s, %s kernels, batch 1", how, ref ? "reference" : "fast");
        if ((st = si_run(ctx, x, 1, out)) != SI_OK) check_fail("%s: %s", what, si_last_error());
        else compare(what, out, y, 1, out_n);
        snprintf(what, sizeof what, "%s, %s kernels, batch 3", how, ref ? "reference" : "fast");
        if ((st = si_run(ctx, x, 3, out)) != SI_OK) check_fail("%s: %s", what, si_last_error());
        else compare(what, out, y, 3, out_n);
    }
    si_set_reference_kernels(0);
    /* Arguments a caller can get wrong. */
    if (si_run(ctx, x, 0, out) != SI_ERR_ARGUMENT) check_fail("%s: si_run batch 0 accepted", how);
    if (si_run(ctx, x, 4, out) != SI_ERR_ARGUMENT) check_fail("%s: si_run batch 4 > max_batch 3 accepted", how);
    if (si_run(ctx, NULL, 1, out) != SI_ERR_ARGUMENT) check_fail("%s: si_run NULL input accepted", how);
    (void)in_n;
    free(out);
    si_context_free(ctx);
}

static void test_good(const char *dir, const char *file) {
    char path[4096], stem[4096], p2[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(stem, sizeof stem, "%s", path);
    char *dot = strrchr(stem, '.');
    if (dot) *dot = 0;
    begin(file);
    si_model *m = NULL;
    si_status_t st = si_model_load_file(path, &m);
    if (st != SI_OK) { check_fail("load_file: %s: %s", status_name(st), si_last_error()); end(); return; }
    int64_t in_n = si_model_input_size(m), out_n = si_model_output_size(m);
    snprintf(p2, sizeof p2, "%s.in.f32", stem);
    float *x = read_f32(p2, (size_t)(3 * in_n));
    snprintf(p2, sizeof p2, "%s.out.f32", stem);
    float *y = read_f32(p2, (size_t)(3 * out_n));
    if (x && y) {
        run_good("file", m, x, y);
        size_t size;
        unsigned char *buf = read_all(path, &size);
        si_model *mb = NULL;
        if (!buf) check_fail("cannot read %s", path);
        else if ((st = si_model_load_buffer(buf, size, &mb)) != SI_OK)
            check_fail("load_buffer: %s: %s", status_name(st), si_last_error());
        else {
            free(buf); /* the model must not need the caller's buffer */
            buf = NULL;
            run_good("buffer", mb, x, y);
            if (strcmp(si_model_manifest(mb), si_model_manifest(m)) != 0) check_fail("manifests differ");
        }
        free(buf);
        si_model_free(mb);
        /* Layer queries, including out of range. */
        si_layer_info info = {.struct_size = sizeof info};
        int n = si_model_num_layers(m);
        for (int i = 0; i < n; i++)
            if (si_model_layer_info(m, i, &info) != SI_OK || !info.name || !info.name[0])
                check_fail("layer_info(%d) failed", i);
        if (si_model_layer_info(m, n, &info) != SI_ERR_ARGUMENT || si_model_layer_info(m, -1, &info) != SI_ERR_ARGUMENT)
            check_fail("layer_info out of range accepted");
        test_struct_sizes(path, m);
        si_context *ctx = (si_context *)0x1;
        if (si_context_create(m, 0, &ctx) != SI_ERR_ARGUMENT || ctx != (si_context *)0x1)
            check_fail("context max_batch 0 accepted or *out written");
        /* An explicit memory limit below what the weights take: refused, naming the limit. */
        si_load_options opt = {.struct_size = sizeof opt};
        opt.max_memory_bytes = 100; /* two of the smallest allocations (64 bytes each) */
        mb = (si_model *)0x1;
        if ((st = si_model_load_file_ex(path, &opt, &mb)) != SI_ERR_NOMEM || mb != (si_model *)0x1 ||
            !strstr(si_last_error(), "memory limit of 100 "))
            check_fail("max_memory_bytes 100: %s (%s), expected SI_ERR_NOMEM naming the limit", status_name(st),
                       si_last_error());
        if (st == SI_OK) si_model_free(mb);
        opt.max_memory_bytes = -1;
        if ((st = si_model_load_file_ex(path, &opt, &mb)) != SI_ERR_ARGUMENT)
            check_fail("max_memory_bytes -1: %s, expected SI_ERR_ARGUMENT", status_name(st));
    }
    free(x);
    free(y);
    si_model_free(m);
    end();
}

/* ---- fuzz ---------------------------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}
static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void wr32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

/* The stored members of a small, well-formed ZIP (the fuzz base), to corrupt a member's
 * contents and then repair its CRCs so the damage reaches the .npy and JSON parsers. */
typedef struct { size_t data, size, cd_crc, local_crc; int is_manifest; } member;

static int zip_members(const unsigned char *b, size_t size, member *out, int cap) {
    size_t e = size - 22;
    while (e > 0 && rd32(b + e) != 0x06054b50u) e--;
    if (rd32(b + e) != 0x06054b50u) return 0;
    int n = b[e + 10] | b[e + 11] << 8;
    size_t p = rd32(b + e + 16);
    if (n > cap) return 0;
    for (int k = 0; k < n; k++) {
        if (p + 46 > size || rd32(b + p) != 0x02014b50u) return 0;
        size_t nlen = b[p + 28] | b[p + 29] << 8, xlen = b[p + 30] | b[p + 31] << 8, clen = b[p + 32] | b[p + 33] << 8;
        size_t loff = rd32(b + p + 42), csize = rd32(b + p + 20);
        if (loff + 30 > size) return 0;
        size_t lnlen = b[loff + 26] | b[loff + 27] << 8, lxlen = b[loff + 28] | b[loff + 29] << 8;
        out[k].data = loff + 30 + lnlen + lxlen;
        out[k].size = csize;
        out[k].cd_crc = p + 16;
        out[k].local_crc = loff + 14;
        out[k].is_manifest = nlen == 14 && memcmp(b + p + 46, "model.json.npy", 14) == 0;
        if (out[k].data + csize > size) return 0;
        p += 46 + nlen + xlen + clen;
    }
    return n;
}

static const char JSON_BYTES[] = "0123456789-+.eE[]{}\",: \\u9";

static void test_fuzz(const char *dir, const char *file, int iterations, unsigned seed) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    begin("fuzz");
    size_t size;
    unsigned char *base = read_all(path, &size);
    member mem[64];
    int nm = base && size > 22 ? zip_members(base, size, mem, 64) : 0;
    if (!base || nm < 2) { check_fail("cannot read or parse the fuzz base %s", path); free(base); end(); return; }
    unsigned char *buf = malloc(size);
    rng_state = 0x9E3779B97F4A7C15ull ^ seed;
    int accepted = 0, ran = 0, counts[8] = {0};
    float *x = calloc(1 << 16, sizeof *x), *y = malloc((1 << 16) * sizeof *y);
    for (int it = 0; it < iterations; it++) {
        memcpy(buf, base, size);
        size_t len = size;
        int mode = (int)rnd_below(4);
        if (mode == 0) { /* raw byte flips anywhere */
            int n = 1 + (int)rnd_below(8);
            for (int k = 0; k < n; k++) buf[rnd_below(size)] ^= (unsigned char)(1 + rnd_below(255));
        } else if (mode == 1) { /* truncation, sometimes after a flip */
            len = rnd_below(size);
            if (rnd() & 1) buf[rnd_below(len ? len : 1)] ^= 0x55;
        } else { /* member contents (npy headers, the manifest), CRCs repaired */
            int n = 1 + (int)rnd_below(mode == 3 ? 3 : 6);
            for (int k = 0; k < n; k++) {
                const member *t = &mem[rnd_below((size_t)nm)];
                if (mode == 3) /* the manifest, with JSON-ish bytes */
                    for (int q = 0; q < nm; q++) if (mem[q].is_manifest) t = &mem[q];
                size_t span = mode == 2 && t->size > 128 ? 128 : t->size; /* mode 2: the .npy header */
                size_t at = t->data + rnd_below(span);
                if (mode == 3 && (rnd() & 3)) buf[at] = (unsigned char)JSON_BYTES[rnd_below(sizeof JSON_BYTES - 1)];
                else buf[at] = (unsigned char)rnd();
            }
            for (int q = 0; q < nm; q++) {
                uint32_t c = crc32_of(buf + mem[q].data, mem[q].size);
                wr32(buf + mem[q].cd_crc, c);
                wr32(buf + mem[q].local_crc, c);
            }
        }
        counts[mode]++;
        /* A fresh allocation of exactly len bytes, so ASan sees any read past the end. */
        unsigned char *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        si_model *m = NULL;
        si_status_t st = si_model_load_buffer(exact, len, &m);
        free(exact);
        if (st == SI_OK) {
            accepted++;
            if (!m) { check_fail("iteration %d: SI_OK without a model", it); continue; }
            int64_t in_n = si_model_input_size(m), out_n = si_model_output_size(m);
            si_context *ctx = NULL;
            if (in_n <= (1 << 15) && out_n <= (1 << 15) && si_context_create(m, 2, &ctx) == SI_OK) {
                for (int64_t i = 0; i < 2 * in_n; i++) x[i] = (float)((i * 7919) % 17) / 8.0f - 1.0f;
                if (si_run(ctx, x, 2, y) != SI_OK || si_run(ctx, x, 1, y) != SI_OK)
                    check_fail("iteration %d: run failed: %s", it, si_last_error());
                ran++;
                si_context_free(ctx);
            }
            si_layer_info info = {.struct_size = sizeof info};
            for (int i = 0; i < si_model_num_layers(m); i++) si_model_layer_info(m, i, &info);
            si_model_free(m);
        } else {
            if (m) check_fail("iteration %d: failure wrote *out", it);
            if (st < SI_ERR_IO || st > SI_ERR_NOMEM) check_fail("iteration %d: status %d", it, (int)st);
            if (!si_last_error()[0]) check_fail("iteration %d: %s with an empty message", it, status_name(st));
        }
    }
    printf("fuzz: %d iterations (flips %d, truncations %d, npy headers %d, manifest %d), %d loaded, %d ran\n",
           iterations, counts[0], counts[1], counts[2], counts[3], accepted, ran);
    free(x);
    free(y);
    free(buf);
    free(base);
    end();
}

/* ---- API arguments ------------------------------------------------------------------- */

static void test_arguments(void) {
    begin("arguments");
    si_model *m = NULL;
    if (si_model_load_file(NULL, &m) != SI_ERR_ARGUMENT) check_fail("load_file(NULL) accepted");
    if (si_model_load_buffer(NULL, 10, &m) != SI_ERR_ARGUMENT) check_fail("load_buffer(NULL) accepted");
    if (si_model_load_buffer("PK", 2, NULL) != SI_ERR_ARGUMENT) check_fail("load_buffer(out NULL) accepted");
    if (si_model_load_buffer("", 0, &m) != SI_ERR_FORMAT) check_fail("load_buffer of 0 bytes: not SI_ERR_FORMAT");
    if (si_context_create(NULL, 1, NULL) != SI_ERR_ARGUMENT) check_fail("context_create(NULL) accepted");
    if (si_run(NULL, NULL, 1, NULL) != SI_ERR_ARGUMENT) check_fail("si_run(NULL) accepted");
    si_model_free(NULL);
    si_context_free(NULL);
    /* Queries on NULL: no crash, SI_ERR_ARGUMENT or -1 / NULL with a message. */
    int64_t hwc[3];
    if (si_model_input_shape(NULL, hwc) != SI_ERR_ARGUMENT) check_fail("input_shape(NULL) accepted");
    if (si_model_input_size(NULL) != -1 || !strstr(si_last_error(), "NULL model")) check_fail("input_size(NULL)");
    if (si_model_output_size(NULL) != -1) check_fail("output_size(NULL)");
    if (si_model_num_layers(NULL) != -1) check_fail("num_layers(NULL)");
    if (si_model_manifest(NULL) != NULL) check_fail("manifest(NULL)");
    if (si_model_plan_stats(NULL, NULL, NULL, NULL) != SI_ERR_ARGUMENT) check_fail("plan_stats(NULL) accepted");
    si_layer_info info = {.struct_size = sizeof info};
    if (si_model_layer_info(NULL, 0, &info) != SI_ERR_ARGUMENT) check_fail("layer_info(NULL) accepted");
    if (si_model_layer_candidates(NULL, 0, 0, NULL, NULL, 0) != -1) check_fail("layer_candidates(NULL)");
    if (si_context_set_profile(NULL, NULL) != SI_ERR_ARGUMENT) check_fail("set_profile(NULL) accepted");
    /* si_set_num_threads leaves the host's OpenMP setting as it was. */
    int host = omp_get_max_threads();
    omp_set_num_threads(3);
    int prev = si_set_num_threads(2);
    if (omp_get_max_threads() != 3) check_fail("si_set_num_threads(2) changed the host's OpenMP threads 3 -> %d",
                                               omp_get_max_threads());
    si_set_num_threads(prev);
    if (omp_get_max_threads() != 3) check_fail("si_set_num_threads(%d) left the host's OpenMP threads at %d, not 3",
                                               prev, omp_get_max_threads());
    omp_set_num_threads(host);
    char want[32];
    snprintf(want, sizeof want, "%d.%d", SI_VERSION_MAJOR, SI_VERSION_MINOR);
    if (strcmp(si_version(), want) != 0) check_fail("si_version %s, the header says %s", si_version(), want);
    if (strcmp(si_status_str(SI_ERR_FORMAT), "invalid model file") != 0) check_fail("si_status_str");
    if (!si_status_str((si_status_t)99)[0]) check_fail("si_status_str of an unknown code is empty");
    end();
}

/* ---- host locale --------------------------------------------------------------------- */

/* A host that switched to a locale with a decimal comma must still read every manifest
 * (issue 13: strtod followed LC_NUMERIC, so "0.5" was a bad number under de_DE). */
static const char *const COMMA_LOCALES[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8",
                                            "nl_NL.UTF-8", "ru_RU.UTF-8", "es_ES.UTF-8", "it_IT.UTF-8"};

static int set_comma_locale(void) {
    for (size_t i = 0; i < sizeof COMMA_LOCALES / sizeof COMMA_LOCALES[0]; i++)
        if (setlocale(LC_ALL, COMMA_LOCALES[i]) && strcmp(localeconv()->decimal_point, ",") == 0) return 1;
    setlocale(LC_ALL, "C");
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: test_loader DIR (written by make_cases.py)\n"); return 2; }
    const char *dir = argv[1];
    char path[4096], line[4096];
    snprintf(path, sizeof path, "%s/cases.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "test_loader: %s: %s\n", path, strerror(errno)); return 2; }
    test_arguments();
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        char *kind = strtok(line, "\t"), *file = strtok(NULL, "\t"), *a = strtok(NULL, "\t"), *b = strtok(NULL, "\t");
        si_status_t want;
        if (!kind || !file || !a || !b) {
            begin("cases.txt");
            check_fail("line %d: expected 4 tab-separated fields", lineno);
            end();
        } else if (strcmp(kind, "fuzz") == 0) {
            test_fuzz(dir, file, atoi(a), (unsigned)strtoul(b, NULL, 10));
        } else if (!parse_status(a, &want)) {
            begin(file);
            check_fail("line %d: unknown status %s", lineno, a);
            end();
        } else if (strcmp(kind, "good") == 0 && want == SI_OK) {
            test_good(dir, file);
        } else if (strcmp(kind, "bad") == 0 && want != SI_OK) {
            test_bad(dir, file, want, b);
        } else {
            begin(file);
            check_fail("line %d: unknown case kind %s", lineno, kind);
            end();
        }
    }
    /* The good files again under a decimal-comma locale. */
    if (set_comma_locale()) {
        printf("locale: good files again under %s\n", setlocale(LC_ALL, NULL));
        rewind(f);
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = 0;
            char *kind = strtok(line, "\t"), *file = strtok(NULL, "\t");
            if (kind && file && strcmp(kind, "good") == 0) test_good(dir, file);
        }
        setlocale(LC_ALL, "C");
    } else {
        printf("SKIP locale: no decimal-comma locale is installed (Debian: apt-get install locales, then "
               "uncomment de_DE.UTF-8 in /etc/locale.gen and run locale-gen)\n");
    }
    fclose(f);
    printf("%d passed, %d failed\n", passed, failed);
    return failed || passed == 0 ? 1 : 0;
}
