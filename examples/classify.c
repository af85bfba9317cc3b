/* classify: run a sparseinfer model on raw float32 inputs, using only the public C API.
 *
 *   classify [--from-memory] MODEL INPUT.f32 BATCH
 *
 * INPUT.f32 holds BATCH samples of si_model_input_size() little-endian float32 values
 * each (NHWC, already preprocessed). For every sample one line is printed: the argmax
 * index, then every output value as %.9g. With --from-memory the model file is read into
 * a buffer and loaded with si_model_load_buffer() instead of si_model_load_file().
 *
 * Build: make (see Makefile), or
 *   cc -std=c99 -O2 classify.c $(sparseinfer config --cflags --libs) -o classify
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sparseinfer.h>

static int fail_si(si_status_t st, const char *what) {
    fprintf(stderr, "classify: %s: %s: %s\n", what, si_status_str(st), si_last_error());
    return 1;
}

/* Reads a whole file into a malloc'ed buffer; returns NULL (with a message) on failure. */
static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "classify: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        unsigned char *nb = cap > (size_t)-1 / 2 ? NULL : realloc(buf, cap * 2);
        if (!nb) { free(buf); buf = NULL; break; }
        buf = nb;
        cap *= 2;
    }
    if (!buf) fprintf(stderr, "classify: %s: out of memory\n", path);
    else if (ferror(f)) {
        fprintf(stderr, "classify: %s: read error\n", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = n;
    return buf;
}

/* Little-endian float32 from bytes, whatever the host's byte order. */
static float le_f32(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void usage(void) {
    fprintf(stderr, "usage: classify [--from-memory] MODEL INPUT.f32 BATCH\n");
}

int main(int argc, char **argv) {
    int from_memory = 0, argi = 1;
    if (argi < argc && strcmp(argv[argi], "--from-memory") == 0) { from_memory = 1; argi++; }
    if (argc - argi != 3) { usage(); return 2; }
    const char *model_path = argv[argi], *input_path = argv[argi + 1];
    char *end;
    errno = 0;
    long batch = strtol(argv[argi + 2], &end, 10);
    if (errno || *end || end == argv[argi + 2] || batch < 1 || batch > 1 << 20) {
        fprintf(stderr, "classify: BATCH must be an integer in [1, %d], got '%s'\n", 1 << 20, argv[argi + 2]);
        return 2;
    }

    si_model *model = NULL;
    si_context *ctx = NULL;
    unsigned char *raw = NULL;
    float *x = NULL, *y = NULL;
    int rc = 1;
    si_status_t st;

    if (from_memory) {
        size_t size;
        unsigned char *buf = read_file(model_path, &size);
        if (!buf) return 1;
        st = si_model_load_buffer(buf, size, &model);
        free(buf); /* the model keeps its own copy of what it needs */
    } else {
        st = si_model_load_file(model_path, &model);
    }
    if (st != SI_OK) return fail_si(st, model_path);

    int64_t in_n = si_model_input_size(model), out_n = si_model_output_size(model);
    size_t want = (size_t)batch * (size_t)in_n * 4, got;
    raw = read_file(input_path, &got);
    if (!raw) goto done;
    if (got != want) {
        fprintf(stderr, "classify: %s: %zu bytes, expected %ld x %lld float32 = %zu bytes\n", input_path, got, batch,
                (long long)in_n, want);
        goto done;
    }
    x = malloc(want);
    y = malloc((size_t)batch * (size_t)out_n * sizeof *y);
    if (!x || !y) {
        fprintf(stderr, "classify: out of memory\n");
        goto done;
    }
    for (size_t i = 0; i < (size_t)batch * (size_t)in_n; i++) x[i] = le_f32(raw + 4 * i);

    if ((st = si_context_create(model, (int)batch, &ctx)) != SI_OK) { rc = fail_si(st, "context"); goto done; }
    if ((st = si_run(ctx, x, (int)batch, y)) != SI_OK) { rc = fail_si(st, "run"); goto done; }

    for (long s = 0; s < batch; s++) {
        const float *p = y + s * out_n;
        int64_t best = 0;
        for (int64_t j = 1; j < out_n; j++)
            if (p[j] > p[best]) best = j;
        printf("%lld", (long long)best);
        for (int64_t j = 0; j < out_n; j++) printf(" %.9g", p[j]);
        printf("\n");
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "classify: cannot write the output\n");
        goto done;
    }
    rc = 0;
done:
    si_context_free(ctx);
    si_model_free(model);
    free(raw);
    free(x);
    free(y);
    return rc;
}
