/* Model loader: turns the bytes of a model file (docs/format.md) into an si_model.
 *
 * Nothing in the file is trusted. The manifest is checked key by key, each layer's shape
 * is derived from its input and the weights must agree with it, CSR structure is
 * validated entry by entry, and every weight is copied into aligned memory owned by the
 * model (so the file's buffer can go away and the kernels read aligned data).
 */
#define _POSIX_C_SOURCE 200809L
#include "si_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LAYERS 4096
#define MAX_DIM (INT64_C(1) << 31)      /* any single dimension */
#define MAX_ACT (INT64_C(1) << 31)      /* elements of one sample's activation */
#define MAX_PATCH (INT64_C(1) << 24)    /* conv taps per output (kh * kw * in_c) */
#define MAX_MACS (INT64_C(1) << 40)     /* multiply-adds of one conv layer per sample */
#define MAX_MANIFEST (1 << 20)          /* bytes of model.json (VGG19's: 6 KB) */
/* A load's default memory limit: a model's derived forms may be much larger than its file
 * (a CSR layer at 1% expands 60-fold to dense, Winograd's filters are 4x the dense ones), but
 * not without bound: a 4 MB file whose one empty CSR layer is 2^20 x 2^24 asked for 32 GB. */
#define DEFAULT_MEMORY_BASE (INT64_C(256) << 20)
#define DEFAULT_MEMORY_PER_FILE_BYTE 64

typedef struct {
    const si_npz *npz;
    const char *layer;  /* for messages */
} ctx_t;

/* An integer-valued JSON number in [lo, hi]. */
static si_status_t get_int(const si_json *obj, const char *key, int64_t lo, int64_t hi,
                         const char *where, int64_t *out) {
    const si_json *v = si_json_get(obj, key);
    if (!v) return si_fail(SI_ERR_FORMAT, "%s: missing key '%s'", where, key);
    if (v->type != SI_JNUM || v->num != floor(v->num) || v->num < (double)lo || v->num > (double)hi)
        return si_fail(SI_ERR_MODEL, "%s: '%s' must be an integer in [%lld, %lld]", where, key,
                       (long long)lo, (long long)hi);
    *out = (int64_t)v->num;
    return SI_OK;
}

static si_status_t get_pair(const si_json *obj, const char *key, const char *where, int out[2]) {
    const si_json *v = si_json_get(obj, key);
    if (!v) return si_fail(SI_ERR_FORMAT, "%s: missing key '%s'", where, key);
    if (v->type != SI_JARR || v->n != 2)
        return si_fail(SI_ERR_MODEL, "%s: '%s' must be a list of two integers", where, key);
    for (int i = 0; i < 2; i++) {
        double d = v->items[i].num;
        if (v->items[i].type != SI_JNUM || d != floor(d) || d < 1 || d > 65536)
            return si_fail(SI_ERR_MODEL, "%s: '%s'[%d] must be an integer in [1, 65536]", where, key, i);
        out[i] = (int)d;
    }
    return SI_OK;
}

static const char *get_str(const si_json *obj, const char *key) {
    const si_json *v = si_json_get(obj, key);
    return v && v->type == SI_JSTR ? v->str : NULL;
}

static si_status_t get_padding(const si_json *obj, const char *where, int *same) {
    const char *p = get_str(obj, "padding");
    if (!p) return si_fail(SI_ERR_FORMAT, "%s: missing or non-string 'padding'", where);
    if (strcmp(p, "valid") == 0) *same = 0;
    else if (strcmp(p, "same") == 0) *same = 1;
    else return si_fail(SI_ERR_MODEL, "%s: padding '%s' is not 'valid' or 'same'", where, p);
    return SI_OK;
}

/* Output size and leading pad of a window op along one axis, by TensorFlow's rules. */
static si_status_t window(int64_t in, int k, int s, int same, const char *where, const char *axis,
                        int64_t *out, int64_t *pad) {
    if (same) {
        *out = (in + s - 1) / s;
        int64_t total = (*out - 1) * s + k - in;
        *pad = total > 0 ? total / 2 : 0;
    } else {
        if (in < k)
            return si_fail(SI_ERR_MODEL, "%s: input %s %lld is smaller than the window %d (padding 'valid')",
                           where, axis, (long long)in, k);
        *out = (in - k) / s + 1;
        *pad = 0;
    }
    return SI_OK;
}

static const si_array *need(const si_npz *npz, const char *name, si_dtype t, int ndim, const char *where,
                            si_status_t *st) {
    const si_array *a = si_npz_find(npz, name);
    if (!a) { *st = si_fail(SI_ERR_FORMAT, "%s: array '%s' is missing from the file", where, name); return NULL; }
    if (a->dtype != t || a->ndim != ndim) {
        *st = si_fail(SI_ERR_FORMAT, "%s: array '%s' is %dD %s, expected %dD %s", where, name, a->ndim,
                      si_dtype_name(a->dtype), ndim, si_dtype_name(t));
        return NULL;
    }
    return a;
}

static si_status_t copy_floats(const si_array *a, float **dst, const char *where) {
    *dst = si_alloc((size_t)a->count * sizeof(float));
    if (!*dst && a->count) return si_fail(SI_ERR_NOMEM, "%s: out of memory for '%s'", where, a->name);
    if (a->count) memcpy(*dst, a->data, (size_t)a->count * sizeof(float));
    for (int64_t i = 0; i < a->count; i++)
        if (!isfinite((*dst)[i]))
            return si_fail(SI_ERR_MODEL, "%s: %s[%lld] is not finite", where, a->name, (long long)i);
    return SI_OK;
}

/* int8 weights: symmetric, so -128 (whose products could pass the int32 bound of
 * SI_I8_MAX_COLS inputs) is refused. */
static si_status_t copy_int8(const si_array *a, int8_t **dst, const char *where) {
    *dst = si_alloc((size_t)(a->count ? a->count : 1));
    if (!*dst) return si_fail(SI_ERR_NOMEM, "%s: out of memory for '%s'", where, a->name);
    if (a->count) memcpy(*dst, a->data, (size_t)a->count);
    for (int64_t i = 0; i < a->count; i++)
        if ((*dst)[i] == -128)
            return si_fail(SI_ERR_MODEL, "%s: %s[%lld] = -128 (int8 weights are symmetric, in [-127, 127])", where,
                           a->name, (long long)i);
    return SI_OK;
}

/* A quantization {"scale": s, "zero_point": z}: s a finite float32 > 0, z an integer in [0, 255]. */
static si_status_t get_qparams(const si_json *q, const char *key, const char *where, float *scale, int32_t *zero) {
    const si_json *o = si_json_get(q, key);
    if (!o || o->type != SI_JOBJ) return si_fail(SI_ERR_FORMAT, "%s: quant.%s must be an object {scale, zero_point}", where, key);
    const si_json *s = si_json_get(o, "scale"), *z = si_json_get(o, "zero_point");
    if (!s || s->type != SI_JNUM || !isfinite(s->num) || !((float)s->num > 0.0f) || !isfinite((float)s->num))
        return si_fail(SI_ERR_MODEL, "%s: quant.%s.scale must be a finite float32 > 0", where, key);
    if (!z || z->type != SI_JNUM || z->num != floor(z->num) || z->num < 0 || z->num > 255)
        return si_fail(SI_ERR_MODEL, "%s: quant.%s.zero_point must be an integer in [0, 255]", where, key);
    *scale = (float)s->num;
    *zero = (int32_t)z->num;
    return SI_OK;
}

/* The "quant" object of an int8 layer (docs/format.md): its input's and, optionally, its
 * output's uint8 quantization. The weight scales and the bias come with the weights. */
static si_status_t load_quant(const si_json *q, si_layer *L, const char *where) {
    si_status_t st;
    if (q->type != SI_JOBJ) return si_fail(SI_ERR_FORMAT, "%s: 'quant' must be an object", where);
    if (L->cols > SI_I8_MAX_COLS)
        return si_fail(SI_ERR_MODEL, "%s: %lld inputs per output, more than the %d an int8 layer may have (its "
                       "int32 sums must not overflow)", where, (long long)L->cols, SI_I8_MAX_COLS);
    L->q = 1;
    if ((st = get_qparams(q, "input", where, &L->q_in_scale, &L->q_in_zero))) return st;
    const si_json *o = si_json_get(q, "output");
    if (o && o->type != SI_JNULL) {
        if ((st = get_qparams(q, "output", where, &L->q_out_scale, &L->q_out_zero))) return st;
        if (L->act == SI_ACT_SOFTMAX)
            return si_fail(SI_ERR_MODEL, "%s: a softmax output cannot be quantized (quant.output must be null)", where);
        L->q_out_u8 = 1;
    }
    return SI_OK;
}

/* Per output channel r: mul = in_scale * wscale[r], add = mul * (bias_q[r] - in_zero *
 * sum_k w8[r][k]) (float32 arithmetic, the int64 difference rounded to float), so that
 * y = mul * acc + add = in_scale * wscale[r] * sum_k (x_q - in_zero) * w_q + bias. */
static si_status_t load_quant_bias(const si_npz *npz, const si_json *jl, si_layer *L, const char *where) {
    si_status_t st = SI_OK;
    const si_json *q = si_json_get(jl, "quant"), *b = si_json_get(jl, "bias");
    const char *wsn = get_str(q, "weight_scale");
    if (!wsn) return si_fail(SI_ERR_FORMAT, "%s: quant.weight_scale must name an array", where);
    const si_array *wsa = need(npz, wsn, SI_F32, 1, where, &st);
    if (!wsa) return st;
    if (wsa->count != L->rows)
        return si_fail(SI_ERR_MODEL, "%s: weight scales '%s' has %lld values, expected one per output (%lld)", where,
                       wsn, (long long)wsa->count, (long long)L->rows);
    if ((st = copy_floats(wsa, &L->q_wscale, where))) return st;
    for (int64_t r = 0; r < L->rows; r++)
        if (!(L->q_wscale[r] > 0.0f))
            return si_fail(SI_ERR_MODEL, "%s: %s[%lld] = %g, a weight scale must be > 0", where, wsn, (long long)r,
                           (double)L->q_wscale[r]);
    const si_array *ba = NULL;
    if (b && b->type == SI_JSTR) {
        if (!(ba = need(npz, b->str, SI_I32, 1, where, &st))) return st;
        if (ba->count != L->rows)
            return si_fail(SI_ERR_MODEL, "%s: bias '%s' has %lld values, expected %lld", where, b->str,
                           (long long)ba->count, (long long)L->rows);
    } else if (b && b->type != SI_JNULL) {
        return si_fail(SI_ERR_FORMAT, "%s: 'bias' must be an array name or null", where);
    }
    /* optional "weight_range": the quantizer's claim that every |weight| <= it (64: reduce_range).
     * Checked here so that a file cannot lie about it; the kernels never rely on it (the int8
     * GEMM reads its weights' pair-safety off the weights themselves, ops/si_igemm.c). */
    int64_t wrange = 127, pmax = 254;
    if (si_json_get(q, "weight_range") && (st = get_int(q, "weight_range", 1, 127, where, &wrange))) return st;
    /* optional "weight_pair_max": the claim that no two weights of one sign among inputs 2t and
     * 2t + 1 sum past it in magnitude (128: the quantizer's reduce_range "pairs") */
    if (si_json_get(q, "weight_pair_max") && (st = get_int(q, "weight_pair_max", 1, 254, where, &pmax))) return st;
    L->q_mul = si_alloc((size_t)L->rows * sizeof(float));
    L->q_add = si_alloc((size_t)L->rows * sizeof(float));
    if (!L->q_mul || !L->q_add) return si_fail(SI_ERR_NOMEM, "%s: out of memory for the scales", where);
    L->q_pair_safe = 1;
    for (int64_t r = 0; r < L->rows; r++) {
        /* the row's sum, its largest magnitude, and the largest same-sign sum of a pair of
         * inputs (2t, 2t + 1): dense, or two CSR entries of adjacent columns */
        int64_t sum = 0;
        int wmax = 0, worst = 0;
        const int64_t t0 = L->w8 ? 0 : L->csr_ptr[r], t1 = L->w8 ? L->cols : L->csr_ptr[r + 1];
        const int8_t *v = L->w8 ? L->w8 + r * L->cols : L->csr_val8;
        for (int64_t t = t0; t < t1; t++) {
            const int64_t col = L->w8 ? t : L->csr_col[t];
            const int x = v[t];
            int y = 0;
            if (col % 2 == 0 && t + 1 < t1 && (L->w8 || L->csr_col[t + 1] == col + 1)) y = v[++t];
            sum += x + y;
            const int ax = x < 0 ? -x : x, ay = y < 0 ? -y : y;
            wmax = ax > wmax ? ax : wmax;
            wmax = ay > wmax ? ay : wmax;
            const int p = (x > 0 ? x : 0) + (y > 0 ? y : 0), n = (x < 0 ? -x : 0) + (y < 0 ? -y : 0);
            worst = p > worst ? p : worst;
            worst = n > worst ? n : worst;
        }
        if (wmax > wrange)
            return si_fail(SI_ERR_MODEL, "%s: output channel %lld has a weight of magnitude %d, past the file's "
                           "quant.weight_range %lld", where, (long long)r, wmax, (long long)wrange);
        if (worst > pmax)
            return si_fail(SI_ERR_MODEL, "%s: output channel %lld has a pair of weights of one sign summing to %d "
                           "in magnitude, past the file's quant.weight_pair_max %lld", where, (long long)r, worst,
                           (long long)pmax);
        if (worst > 128) L->q_pair_safe = 0;
        int32_t bq = 0;
        if (ba) memcpy(&bq, ba->data + 4 * r, 4);
        const float mul = L->q_in_scale * L->q_wscale[r];
        L->q_mul[r] = mul;
        L->q_add[r] = mul * (float)((int64_t)bq - (int64_t)L->q_in_zero * sum);
        if (!isfinite(L->q_mul[r]) || !isfinite(L->q_add[r]) || !(mul > 0.0f))
            return si_fail(SI_ERR_MODEL, "%s: output channel %lld: input scale x weight scale (%g x %g) and the bias "
                           "give no finite positive float32 rescale", where, (long long)r, (double)L->q_in_scale,
                           (double)L->q_wscale[r]);
    }
    return SI_OK;
}

static si_status_t load_weights(const si_npz *npz, const si_json *jl, si_layer *L, const char *where) {
    const si_json *w = si_json_get(jl, "weight"), *q = si_json_get(jl, "quant");
    si_status_t st = SI_OK;
    if (!w || w->type != SI_JOBJ) return si_fail(SI_ERR_FORMAT, "%s: missing 'weight' object", where);
    if (q && q->type != SI_JNULL && (st = load_quant(q, L, where))) return st;
    const char *fmt = get_str(w, "format");
    if (!fmt) return si_fail(SI_ERR_FORMAT, "%s: weight has no 'format'", where);
    if (strcmp(fmt, "dense") == 0) {
        const char *an = get_str(w, "array");
        if (!an) return si_fail(SI_ERR_FORMAT, "%s: dense weight has no 'array'", where);
        const si_array *a = need(npz, an, L->q ? SI_I8 : SI_F32, 2, where, &st);
        if (!a) return st;
        if (a->shape[0] != L->rows || a->shape[1] != L->cols)
            return si_fail(SI_ERR_MODEL, "%s: weight '%s' is %lld x %lld, expected %lld x %lld", where, an,
                           (long long)a->shape[0], (long long)a->shape[1], (long long)L->rows, (long long)L->cols);
        L->storage = SI_STORAGE_DENSE;
        int64_t nnz = 0;
        if (L->q) {
            if ((st = copy_int8(a, &L->w8, where)) != SI_OK) return st;
            for (int64_t i = 0; i < a->count; i++) nnz += L->w8[i] != 0;
        } else {
            if ((st = copy_floats(a, &L->w, where)) != SI_OK) return st;
            for (int64_t i = 0; i < a->count; i++) nnz += L->w[i] != 0.0f;
        }
        L->nnz = nnz;
    } else if (strcmp(fmt, "csr") == 0) {
        const char *pre = get_str(w, "prefix");
        char nm[4][160];
        if (!pre || strlen(pre) > 120) return si_fail(SI_ERR_FORMAT, "%s: CSR weight needs a 'prefix' (at most 120 bytes)", where);
        snprintf(nm[0], sizeof nm[0], "%s.data", pre);
        snprintf(nm[1], sizeof nm[1], "%s.indices", pre);
        snprintf(nm[2], sizeof nm[2], "%s.indptr", pre);
        snprintf(nm[3], sizeof nm[3], "%s.shape", pre);
        const si_array *shp = need(npz, nm[3], SI_I64, 1, where, &st);
        if (!shp) return st;
        int64_t sr, sc;
        if (shp->count != 2) return si_fail(SI_ERR_FORMAT, "%s: '%s' must hold 2 values", where, nm[3]);
        memcpy(&sr, shp->data, 8);
        memcpy(&sc, shp->data + 8, 8);
        if (sr != L->rows || sc != L->cols)
            return si_fail(SI_ERR_MODEL, "%s: CSR shape is %lld x %lld, expected %lld x %lld", where, (long long)sr,
                           (long long)sc, (long long)L->rows, (long long)L->cols);
        const si_array *data = need(npz, nm[0], L->q ? SI_I8 : SI_F32, 1, where, &st);
        if (!data) return st;
        const si_array *ind = si_npz_find(npz, nm[1]), *ptr = si_npz_find(npz, nm[2]);
        if (!ind || !ptr)
            return si_fail(SI_ERR_FORMAT, "%s: array '%s' is missing from the file", where, ind ? nm[2] : nm[1]);
        if (ind->ndim != 1 || (ind->dtype != SI_I32 && ind->dtype != SI_U16))
            return si_fail(SI_ERR_FORMAT, "%s: '%s' must be 1-D int32 or uint16", where, nm[1]);
        if (ptr->ndim != 1 || (ptr->dtype != SI_I32 && ptr->dtype != SI_I64))
            return si_fail(SI_ERR_FORMAT, "%s: '%s' must be 1-D int32 or int64", where, nm[2]);
        int64_t nnz = data->count;
        if (ind->count != nnz)
            return si_fail(SI_ERR_MODEL, "%s: %lld indices for %lld values", where, (long long)ind->count, (long long)nnz);
        if (ptr->count != L->rows + 1)
            return si_fail(SI_ERR_MODEL, "%s: indptr has %lld entries, expected rows + 1 = %lld", where,
                           (long long)ptr->count, (long long)(L->rows + 1));
        L->storage = SI_STORAGE_CSR;
        L->nnz = nnz;
        if ((st = L->q ? copy_int8(data, &L->csr_val8, where) : copy_floats(data, &L->csr_val, where)) != SI_OK)
            return st;
        L->csr_col = si_alloc((size_t)(nnz ? nnz : 1) * sizeof(int32_t));
        L->csr_ptr = si_alloc((size_t)(L->rows + 1) * sizeof(int64_t));
        if (!L->csr_col || !L->csr_ptr) return si_fail(SI_ERR_NOMEM, "%s: out of memory for CSR", where);
        for (int64_t i = 0; i <= L->rows; i++) {
            if (ptr->dtype == SI_I64) memcpy(&L->csr_ptr[i], ptr->data + 8 * i, 8);
            else { int32_t v; memcpy(&v, ptr->data + 4 * i, 4); L->csr_ptr[i] = v; }
        }
        for (int64_t i = 0; i < nnz; i++) {
            if (ind->dtype == SI_I32) memcpy(&L->csr_col[i], ind->data + 4 * i, 4);
            else { uint16_t v; memcpy(&v, ind->data + 2 * i, 2); L->csr_col[i] = v; }
        }
        if (L->csr_ptr[0] != 0) return si_fail(SI_ERR_MODEL, "%s: indptr[0] = %lld, expected 0", where, (long long)L->csr_ptr[0]);
        for (int64_t r = 0; r < L->rows; r++) {
            int64_t a = L->csr_ptr[r], b = L->csr_ptr[r + 1];
            if (b < a || b > nnz)
                return si_fail(SI_ERR_MODEL, "%s: indptr[%lld] = %lld after indptr[%lld] = %lld (must be non-decreasing and <= nnz %lld)",
                               where, (long long)(r + 1), (long long)b, (long long)r, (long long)a, (long long)nnz);
            for (int64_t k = a; k < b; k++) {
                int32_t c = L->csr_col[k];
                if (c < 0 || c >= L->cols)
                    return si_fail(SI_ERR_MODEL, "%s: indices[%lld] = %d >= cols %lld", where, (long long)k, c, (long long)L->cols);
                if (k > a && c <= L->csr_col[k - 1])
                    return si_fail(SI_ERR_MODEL, "%s: indices[%lld] = %d in row %lld not above the previous %d (CSR must be sorted, no duplicates)",
                                   where, (long long)k, c, (long long)r, L->csr_col[k - 1]);
            }
        }
        if (L->csr_ptr[L->rows] != nnz)
            return si_fail(SI_ERR_MODEL, "%s: indptr[%lld] = %lld, expected nnz = %lld", where, (long long)L->rows,
                           (long long)L->csr_ptr[L->rows], (long long)nnz);
    } else if (strcmp(fmt, "compact") == 0) {
        if ((st = si_compact_decode(npz, w, L, where)) != SI_OK) return st;
    } else {
        return si_fail(SI_ERR_MODEL, "%s: weight format '%s' is not 'dense', 'csr' or 'compact'", where, fmt);
    }
    const si_json *b = si_json_get(jl, "bias");
    if (L->q) return load_quant_bias(npz, jl, L, where);
    if (b && b->type == SI_JSTR) {
        const si_array *a = need(npz, b->str, SI_F32, 1, where, &st);
        if (!a) return st;
        if (a->count != L->rows)
            return si_fail(SI_ERR_MODEL, "%s: bias '%s' has %lld values, expected %lld", where, b->str,
                           (long long)a->count, (long long)L->rows);
        if ((st = copy_floats(a, &L->bias, where)) != SI_OK) return st;
    } else if (b && b->type != SI_JNULL) {
        return si_fail(SI_ERR_FORMAT, "%s: 'bias' must be an array name or null", where);
    }
    return SI_OK;
}

static si_status_t get_activation(const si_json *jl, const char *where, int *act) {
    const char *a = get_str(jl, "activation");
    if (!a || strcmp(a, "linear") == 0) *act = SI_ACT_LINEAR;
    else if (strcmp(a, "relu") == 0) *act = SI_ACT_RELU;
    else if (strcmp(a, "softmax") == 0) *act = SI_ACT_SOFTMAX;
    else return si_fail(SI_ERR_MODEL, "%s: activation '%s' is not linear, relu or softmax", where, a);
    return SI_OK;
}

static si_status_t build_layer(const si_npz *npz, const si_json *jl, int idx, si_layer *L,
                             int64_t *h, int64_t *w, int64_t *c) {
    char where[96];
    si_status_t st;
    if (jl->type != SI_JOBJ) return si_fail(SI_ERR_FORMAT, "model.json: layers[%d] is not an object", idx);
    const char *name = get_str(jl, "name"), *type = get_str(jl, "type");
    if (!name) return si_fail(SI_ERR_FORMAT, "model.json: layers[%d] has no 'name'", idx);
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen >= sizeof L->name)
        return si_fail(SI_ERR_MODEL, "model.json: layers[%d] name must be 1 to %d bytes", idx, (int)sizeof L->name - 1);
    for (size_t i = 0; i < nlen; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return si_fail(SI_ERR_MODEL, "model.json: layers[%d] name has a control character", idx);
    memcpy(L->name, name, nlen + 1);
    snprintf(where, sizeof where, "layer %s", L->name);
    if (!type) return si_fail(SI_ERR_FORMAT, "%s: missing 'type'", where);
    L->in_h = *h; L->in_w = *w; L->in_c = *c;
    L->out_h = *h; L->out_w = *w; L->out_c = *c;
    if (strcmp(type, "conv2d") == 0) {
        int k[2], s[2], same;
        int64_t filters = 0;
        L->type = SI_LAYER_CONV2D;
        if ((st = get_int(jl, "filters", 1, MAX_DIM - 1, where, &filters)) || (st = get_pair(jl, "kernel", where, k)) ||
            (st = get_pair(jl, "strides", where, s)) || (st = get_padding(jl, where, &same)) ||
            (st = get_activation(jl, where, &L->act)))
            return st;
        L->kh = k[0]; L->kw = k[1]; L->sh = s[0]; L->sw = s[1];
        if ((st = window(*h, k[0], s[0], same, where, "height", &L->out_h, &L->pad_top)) ||
            (st = window(*w, k[1], s[1], same, where, "width", &L->out_w, &L->pad_left)))
            return st;
        L->out_c = filters;
        L->rows = filters;
        if (!si_mul_ok((int64_t)k[0] * k[1], *c, &L->cols) || L->cols > MAX_PATCH)
            return si_fail(SI_ERR_MODEL, "%s: kernel %dx%d over %lld channels is too large (limit %lld taps)", where, k[0],
                           k[1], (long long)*c, (long long)MAX_PATCH);
        int64_t work;
        if (!si_mul_ok(L->out_h * L->out_w, L->cols, &work) || !si_mul_ok(work, filters, &work) || work > MAX_MACS)
            return si_fail(SI_ERR_MODEL, "%s: %lld x %lld outputs x %lld filters x %lld taps exceeds the limit of 2^40 "
                           "multiply-adds per sample", where, (long long)L->out_h, (long long)L->out_w,
                           (long long)filters, (long long)L->cols);
        if ((st = load_weights(npz, jl, L, where))) return st;
    } else if (strcmp(type, "dense") == 0) {
        int64_t units = 0;
        L->type = SI_LAYER_DENSE;
        if ((st = get_int(jl, "units", 1, MAX_DIM - 1, where, &units)) || (st = get_activation(jl, where, &L->act)))
            return st;
        if (*h != 1 || *w != 1)
            return si_fail(SI_ERR_MODEL, "%s: dense needs a flat input, got %lld x %lld x %lld (add a flatten layer)",
                           where, (long long)*h, (long long)*w, (long long)*c);
        L->rows = units;
        L->cols = *c;
        L->out_c = units;
        if ((st = load_weights(npz, jl, L, where))) return st;
    } else if (strcmp(type, "maxpool2d") == 0) {
        int k[2], s[2], same;
        L->type = SI_LAYER_MAXPOOL2D;
        if ((st = get_pair(jl, "pool", where, k)) || (st = get_pair(jl, "strides", where, s)) ||
            (st = get_padding(jl, where, &same)))
            return st;
        L->kh = k[0]; L->kw = k[1]; L->sh = s[0]; L->sw = s[1];
        if (k[0] > *h + 1 || k[1] > *w + 1)
            return si_fail(SI_ERR_MODEL, "%s: pool window %dx%d is larger than its input %lld x %lld", where, k[0], k[1],
                           (long long)*h, (long long)*w);
        if ((st = window(*h, k[0], s[0], same, where, "height", &L->out_h, &L->pad_top)) ||
            (st = window(*w, k[1], s[1], same, where, "width", &L->out_w, &L->pad_left)))
            return st;
    } else if (strcmp(type, "relu") == 0) {
        L->type = SI_LAYER_RELU;
    } else if (strcmp(type, "softmax") == 0) {
        L->type = SI_LAYER_SOFTMAX;
    } else if (strcmp(type, "flatten") == 0) {
        L->type = SI_LAYER_FLATTEN;
        L->out_h = 1; L->out_w = 1;
        L->out_c = *h * *w * *c;
    } else {
        return si_fail(SI_ERR_UNSUPPORTED, "%s: layer type '%s' is not supported", where, type);
    }
    int64_t n;
    if (!si_mul_ok(L->out_h, L->out_w, &n) || !si_mul_ok(n, L->out_c, &n) || n >= MAX_ACT)
        return si_fail(SI_ERR_MODEL, "%s: output %lld x %lld x %lld is too large", where, (long long)L->out_h,
                       (long long)L->out_w, (long long)L->out_c);
    *h = L->out_h; *w = L->out_w; *c = L->out_c;
    return SI_OK;
}

/* Offset of the first byte that is not part of well-formed UTF-8, or len if none. */
static size_t utf8_bad_offset(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
        else return i;
        if (len - i <= n) return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp < 0xE000))
            return i;
        i += n + 1;
    }
    return len;
}

/* version = [major, minor] (major already checked to be a number) >= [maj, min]. */
static int version_at_least(const si_json *ver, int maj, int min) {
    if (ver->items[0].num != maj) return ver->items[0].num > maj;
    return ver->items[1].type == SI_JNUM && ver->items[1].num >= min;
}

static si_status_t build(const si_npz *npz, si_model *m) {
    const si_array *ma = si_npz_find(npz, "model.json");
    si_status_t st;
    if (!ma) return si_fail(SI_ERR_FORMAT, "not a sparseinfer model: array 'model.json' is missing");
    if (ma->dtype != SI_U8 || ma->ndim != 1) return si_fail(SI_ERR_FORMAT, "model.json must be a 1-D uint8 array");
    if (ma->count > MAX_MANIFEST)
        return si_fail(SI_ERR_FORMAT, "model.json: %lld bytes, more than the limit of %d", (long long)ma->count,
                       MAX_MANIFEST);
    m->manifest = malloc((size_t)ma->count + 1);
    if (!m->manifest) return si_fail(SI_ERR_NOMEM, "out of memory for model.json");
    memcpy(m->manifest, ma->data, (size_t)ma->count);
    m->manifest[ma->count] = 0;
    if (memchr(m->manifest, 0, (size_t)ma->count)) return si_fail(SI_ERR_FORMAT, "model.json contains a NUL byte");
    size_t bad = utf8_bad_offset((const unsigned char *)m->manifest, (size_t)ma->count);
    if (bad != (size_t)ma->count) return si_fail(SI_ERR_FORMAT, "model.json: not valid UTF-8 at byte %zu", bad);
    si_json root;
    if ((st = si_json_parse(m->manifest, (size_t)ma->count, &root))) return st;
    const char *fmt = get_str(&root, "format");
    const si_json *ver = si_json_get(&root, "version"), *in = si_json_get(&root, "input"),
                  *layers = si_json_get(&root, "layers"), *shape = si_json_get(in, "shape");
    if (!fmt || strcmp(fmt, "sparseinfer-model") != 0) {
        st = si_fail(SI_ERR_FORMAT, "model.json: 'format' is not \"sparseinfer-model\"");
        goto done;
    }
    if (!ver || ver->type != SI_JARR || ver->n != 2 || ver->items[0].type != SI_JNUM) {
        st = si_fail(SI_ERR_FORMAT, "model.json: 'version' must be [major, minor]");
        goto done;
    }
    if (ver->items[0].num != 1 && ver->items[0].num != SI_FORMAT_VERSION_MAJOR) {
        st = si_fail(SI_ERR_UNSUPPORTED, "model file format version %g is not supported (this library reads 1.x "
                     "and %d.x)", ver->items[0].num, SI_FORMAT_VERSION_MAJOR);
        goto done;
    }
    if (npz->n_deflated && !version_at_least(ver, 2, 1)) {
        st = si_fail(SI_ERR_UNSUPPORTED, "%d deflated (compressed) ZIP members in a format %g file: deflated members "
                     "need format version 2.1 (write float files with numpy.savez, not savez_compressed)",
                     npz->n_deflated, ver->items[0].num);
        goto done;
    }
    if (!shape || shape->type != SI_JARR || shape->n != 3) {
        st = si_fail(SI_ERR_FORMAT, "model.json: input.shape must be [height, width, channels]");
        goto done;
    }
    int64_t hwc[3];
    for (int i = 0; i < 3; i++) {
        double d = shape->items[i].num;
        if (shape->items[i].type != SI_JNUM || d != floor(d) || d < 1 || d >= (double)MAX_DIM) {
            st = si_fail(SI_ERR_MODEL, "model.json: input.shape[%d] must be an integer in [1, 2^31)", i);
            goto done;
        }
        hwc[i] = (int64_t)d;
    }
    int64_t insz;
    if (!si_mul_ok(hwc[0], hwc[1], &insz) || !si_mul_ok(insz, hwc[2], &insz) || insz >= MAX_ACT) {
        st = si_fail(SI_ERR_MODEL, "model.json: input shape %lld x %lld x %lld is too large", (long long)hwc[0],
                     (long long)hwc[1], (long long)hwc[2]);
        goto done;
    }
    m->in_h = hwc[0]; m->in_w = hwc[1]; m->in_c = hwc[2];
    if (!layers || layers->type != SI_JARR || layers->n < 1 || layers->n > MAX_LAYERS) {
        st = si_fail(SI_ERR_FORMAT, "model.json: 'layers' must be a list of 1 to %d layers", MAX_LAYERS);
        goto done;
    }
    m->layers = calloc((size_t)layers->n, sizeof *m->layers);
    if (!m->layers) { st = si_fail(SI_ERR_NOMEM, "out of memory for layers"); goto done; }
    m->n_layers = layers->n;
    m->max_act = insz;
    int64_t h = hwc[0], w = hwc[1], c = hwc[2];
    for (int i = 0; i < layers->n; i++) {
        si_layer *L = &m->layers[i];
        if ((st = build_layer(npz, &layers->items[i], i, L, &h, &w, &c))) goto done;
        for (int j = 0; j < i; j++)
            if (strcmp(m->layers[j].name, L->name) == 0) {
                st = si_fail(SI_ERR_MODEL, "layer %s: name used twice", L->name);
                goto done;
            }
        const si_json *wj = si_json_get(&layers->items[i], "weight");
        const char *wf = get_str(wj, "format");
        if (wf && strcmp(wf, "compact") == 0 && !version_at_least(ver, 2, 1)) {
            st = si_fail(SI_ERR_MODEL, "layer %s: compact weights need format version 2.1, the file says %g.%g", L->name,
                         ver->items[0].num, ver->items[1].type == SI_JNUM ? ver->items[1].num : 0.0);
            goto done;
        }
        if (L->q && ver->items[0].num < 2) {
            st = si_fail(SI_ERR_MODEL, "layer %s: int8 ('quant') layers need format version 2, the file says %g",
                         L->name, ver->items[0].num);
            goto done;
        }
        int64_t n = h * w * c;
        if (n > m->max_act) m->max_act = n;
    }
done:
    si_json_free(&root);
    return st;
}

/* The caller's options as this library's struct: its first struct_size bytes, the rest
 * zero (defaults). A newer caller's larger struct is taken if the fields this library
 * does not know are zero (Linux's extensible structs, copy_struct_from_user). */
static si_status_t copy_options(const si_load_options *in, si_load_options *opt) {
    memset(opt, 0, sizeof *opt);
    if (in->struct_size < sizeof in->struct_size)
        return si_fail(SI_ERR_ARGUMENT, "load options: struct_size %zu (set it to sizeof(si_load_options))",
                       in->struct_size);
    if (in->struct_size > ((size_t)1 << 16))
        return si_fail(SI_ERR_ARGUMENT, "load options: struct_size %zu is not a size of si_load_options", in->struct_size);
    const unsigned char *p = (const unsigned char *)in;
    for (size_t i = sizeof *opt; i < in->struct_size; i++)
        if (p[i])
            return si_fail(SI_ERR_UNSUPPORTED, "load options: a field at byte %zu is set, which this library (%s) "
                           "does not know", i, si_version());
    memcpy(opt, in, in->struct_size < sizeof *opt ? in->struct_size : sizeof *opt);
    opt->struct_size = sizeof *opt;
    return SI_OK;
}

si_status_t si_model_load_buffer_ex(const void *data, size_t size, const si_load_options *options, si_model **out) {
    if (!data || !out) return si_fail(SI_ERR_ARGUMENT, "si_model_load_buffer: NULL argument");
    si_load_options copy;
    const si_load_options *opt = NULL;
    if (options) {
        si_status_t st = copy_options(options, &copy);
        if (st) return st;
        opt = &copy;
    }
    if (opt && opt->max_memory_bytes < 0)
        return si_fail(SI_ERR_ARGUMENT, "load options: max_memory_bytes %lld < 0", (long long)opt->max_memory_bytes);
    if (opt && opt->max_batch < 0)
        return si_fail(SI_ERR_ARGUMENT, "load options: max_batch %d < 0", opt->max_batch);
    si_init();
    si_npz npz;
    si_status_t st;
    int64_t limit = opt && opt->max_memory_bytes ? opt->max_memory_bytes : DEFAULT_MEMORY_BASE;
    if (!(opt && opt->max_memory_bytes) &&
        (size > (size_t)(INT64_MAX / 2 / DEFAULT_MEMORY_PER_FILE_BYTE) ||
         !si_add_ok(limit, (int64_t)size * DEFAULT_MEMORY_PER_FILE_BYTE, &limit)))
        limit = INT64_MAX / 2;
    si_model *m = calloc(1, sizeof *m);
    if (!m) return si_fail(SI_ERR_NOMEM, "out of memory for the model");
    /* The limit covers the inflated members too (a deflated file may expand 1000-fold). */
    si_limit_begin(limit);
    st = si_npz_open(data, size, &npz);
    if (!st) {
        st = build(&npz, m);
        si_npz_close(&npz);
    }
    if (!st) st = si_plan_model(m, opt);
    int64_t refused = si_limit_refused(), held = si_limit_held();
    if (st) si_model_free(m); /* still under the limit: its frees are counted */
    si_limit_end();
    if (st && refused) {
        /* The detail names the layer (and what it was allocating); add the bytes. */
        char detail[512];
        snprintf(detail, sizeof detail, "%s", si_last_error());
        return si_fail(SI_ERR_NOMEM, "%s: %lld more bytes would pass the load's memory limit of %lld (%lld held; "
                       "max_memory_bytes in si_load_options, default 256 MB + 64 x the file's %zu bytes)", detail,
                       (long long)refused, (long long)limit, (long long)held, size);
    }
    if (st) return st;
    *out = m;
    return SI_OK;
}

si_status_t si_model_load_buffer(const void *data, size_t size, si_model **out) {
    return si_model_load_buffer_ex(data, size, NULL, out);
}

si_status_t si_model_load_file(const char *path, si_model **out) { return si_model_load_file_ex(path, NULL, out); }

si_status_t si_model_load_file_ex(const char *path, const si_load_options *opt, si_model **out) {
    if (!path || !out) return si_fail(SI_ERR_ARGUMENT, "si_model_load_file: NULL argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return si_fail(SI_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) { int e = errno; close(fd); return si_fail(SI_ERR_IO, "%s: %s", path, strerror(e)); }
    if (!S_ISREG(sb.st_mode)) { close(fd); return si_fail(SI_ERR_IO, "%s: not a regular file", path); }
    if (sb.st_size == 0) { close(fd); return si_fail(SI_ERR_FORMAT, "%s: empty file", path); }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return si_fail(SI_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    si_status_t st = si_model_load_buffer_ex(p, (size_t)sb.st_size, opt, out);
    munmap(p, (size_t)sb.st_size);
    if (st) {
        /* Prefix the file name to the detail. */
        char detail[512];
        snprintf(detail, sizeof detail, "%s", si_last_error());
        si_fail(st, "%s: %s", path, detail);
    }
    return st;
}

void si_model_free(si_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_layers; i++) {
        si_layer *L = &m->layers[i];
        si_plan_release(L);
        si_free(L->w); si_free(L->csr_val); si_free(L->csr_col); si_free(L->csr_ptr);
        si_free(L->bias);
        si_free(L->w8); si_free(L->csr_val8); si_free(L->q_wscale); si_free(L->q_mul); si_free(L->q_add);
    }
    free(m->layers);
    free(m->manifest);
    free(m);
}
