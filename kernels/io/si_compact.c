/* Decoder of compact weights (docs/format.md, "Compact storage", format 2.1): a delta or
 * bitmap index stream and a value stream (codes into a codebook, int8 with a scale per
 * output, or float32), decoded at load into the CSR float32 form every kernel reads.
 *
 * Every stream is untrusted: its length must be exactly what the manifest's counts imply,
 * every position must fall inside the matrix, every code inside the codebook, padding bits
 * must be zero and nothing may follow the last entry. Work is bounded by the stream lengths
 * (themselves bounded by the file) plus one pass over the rows.
 */
#include "si_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_COUNT (INT64_C(1) << 53) /* JSON numbers are doubles: exact below 2^53 */

static si_status_t get_count(const si_json *w, const char *key, const char *where, int64_t *out) {
    const si_json *v = si_json_get(w, key);
    if (!v || v->type != SI_JNUM || v->num != floor(v->num) || v->num < 0 || v->num >= (double)MAX_COUNT)
        return si_fail(SI_ERR_FORMAT, "%s: compact weight needs '%s', an integer in [0, 2^53)", where, key);
    *out = (int64_t)v->num;
    return SI_OK;
}

/* Member name.suffix, 1-D, of dtype t and exactly count elements. */
static const si_array *stream(const si_npz *npz, const char *prefix, const char *suffix, si_dtype t, int64_t count,
                              const char *why, const char *where, si_status_t *st) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s.%s", prefix, suffix);
    const si_array *a = si_npz_find(npz, nm);
    if (!a) { *st = si_fail(SI_ERR_FORMAT, "%s: array '%s' is missing from the file", where, nm); return NULL; }
    if (a->dtype != t || a->ndim != 1) {
        *st = si_fail(SI_ERR_FORMAT, "%s: array '%s' is %dD %s, expected 1D %s", where, nm, a->ndim,
                      si_dtype_name(a->dtype), si_dtype_name(t));
        return NULL;
    }
    if (a->count != count) {
        *st = si_fail(SI_ERR_MODEL, "%s: '%s' has %lld elements, expected %lld (%s)", where, nm, (long long)a->count,
                      (long long)count, why);
        return NULL;
    }
    return a;
}

/* Records entry k at flat position pos (row-major over rows x cols): its column, and the
 * row pointers of every row up to its own. */
static inline void place(si_layer *L, int64_t k, int64_t pos, int64_t *row, int64_t *row_end) {
    while (pos >= *row_end) {
        L->csr_ptr[++*row] = k;
        *row_end += L->cols;
    }
    L->csr_col[k] = (int32_t)(pos - (*row_end - L->cols));
}

static si_status_t decode_delta(const si_array *ix, int bits, int64_t symbols, int64_t nnz, si_layer *L,
                                const char *where) {
    const int64_t total = L->rows * L->cols; /* checked against overflow by the caller */
    const unsigned filler = (1u << bits) - 1;
    int64_t q = 0, k = 0, row = 0, row_end = L->cols;
    unsigned s = 0;
    for (int64_t i = 0; i < symbols; i++) {
        s = bits == 4 ? (ix->data[i >> 1] >> (4 * (i & 1))) & 15u : ix->data[i];
        if (s == filler) {
            q += filler;
            if (q >= total)
                return si_fail(SI_ERR_MODEL, "%s: %s symbol %lld: filler skips to position %lld, past the %lld x %lld "
                               "matrix", where, ix->name, (long long)i, (long long)q, (long long)L->rows,
                               (long long)L->cols);
            continue;
        }
        const int64_t pos = q + s;
        if (pos >= total)
            return si_fail(SI_ERR_MODEL, "%s: %s symbol %lld: entry %lld at row %lld >= rows %lld", where, ix->name,
                           (long long)i, (long long)k, (long long)(pos / L->cols), (long long)L->rows);
        if (k >= nnz)
            return si_fail(SI_ERR_MODEL, "%s: %s holds more than nnz = %lld entries", where, ix->name,
                           (long long)nnz);
        place(L, k++, pos, &row, &row_end);
        q = pos + 1;
    }
    if (symbols > 0 && s == filler)
        return si_fail(SI_ERR_MODEL, "%s: %s ends with a filler (trailing symbols after the last entry)", where,
                       ix->name);
    if (bits == 4 && (symbols & 1) && (ix->data[symbols >> 1] >> 4))
        return si_fail(SI_ERR_MODEL, "%s: %s: the padding nibble after the last symbol is not zero", where,
                       ix->name);
    if (k != nnz)
        return si_fail(SI_ERR_MODEL, "%s: %s holds %lld entries, nnz = %lld", where, ix->name, (long long)k,
                       (long long)nnz);
    while (row < L->rows) L->csr_ptr[++row] = k;
    return SI_OK;
}

static si_status_t decode_bitmap(const si_array *ix, int64_t nnz, si_layer *L, const char *where) {
    const int64_t total = L->rows * L->cols;
    int64_t k = 0, row = 0, row_end = L->cols;
    for (int64_t b = 0; b < ix->count; b++) {
        unsigned v = ix->data[b];
        if (!v) continue;
        if (b == ix->count - 1 && (total & 7) && (v >> (total & 7)))
            return si_fail(SI_ERR_MODEL, "%s: %s: padding bits after position %lld are not zero", where, ix->name,
                           (long long)total);
        if (k + __builtin_popcount(v) > nnz)
            return si_fail(SI_ERR_MODEL, "%s: %s sets more than nnz = %lld bits", where, ix->name, (long long)nnz);
        for (; v; v &= v - 1) place(L, k++, 8 * b + __builtin_ctz(v), &row, &row_end);
    }
    if (k != nnz)
        return si_fail(SI_ERR_MODEL, "%s: %s sets %lld bits, nnz = %lld", where, ix->name, (long long)k,
                       (long long)nnz);
    while (row < L->rows) L->csr_ptr[++row] = k;
    return SI_OK;
}

si_status_t si_compact_decode(const si_npz *npz, const si_json *w, si_layer *L, const char *where) {
    si_status_t st = SI_OK;
    const si_json *jv;
    const char *pre = (jv = si_json_get(w, "prefix")) && jv->type == SI_JSTR ? jv->str : NULL;
    const char *index = (jv = si_json_get(w, "index")) && jv->type == SI_JSTR ? jv->str : NULL;
    const char *values = (jv = si_json_get(w, "values")) && jv->type == SI_JSTR ? jv->str : NULL;
    if (!pre || strlen(pre) > 120)
        return si_fail(SI_ERR_FORMAT, "%s: compact weight needs a 'prefix' (at most 120 bytes)", where);
    if (L->q) return si_fail(SI_ERR_UNSUPPORTED, "%s: an int8 ('quant') layer cannot have compact weights", where);
    const si_json *shp = si_json_get(w, "shape");
    if (!shp || shp->type != SI_JARR || shp->n != 2 || shp->items[0].type != SI_JNUM || shp->items[1].type != SI_JNUM ||
        shp->items[0].num != (double)L->rows || shp->items[1].num != (double)L->cols)
        return si_fail(SI_ERR_MODEL, "%s: compact weight 'shape' must be [%lld, %lld]", where, (long long)L->rows,
                       (long long)L->cols);
    int64_t nnz = 0, total = 0, symbols = 0;
    if ((st = get_count(w, "nnz", where, &nnz))) return st;
    if (!si_mul_ok(L->rows, L->cols, &total) || nnz > total)
        return si_fail(SI_ERR_MODEL, "%s: nnz = %lld in a %lld x %lld matrix", where, (long long)nnz, (long long)L->rows,
                       (long long)L->cols);
    if (L->cols > INT32_MAX)
        return si_fail(SI_ERR_MODEL, "%s: %lld columns, more than CSR's int32 columns hold", where, (long long)L->cols);

    /* The index stream. */
    int bits = 0;
    const si_array *ix;
    if (!index) return si_fail(SI_ERR_FORMAT, "%s: compact weight needs 'index'", where);
    if (strcmp(index, "delta4") == 0 || strcmp(index, "delta8") == 0) {
        bits = index[5] == '4' ? 4 : 8;
        if ((st = get_count(w, "symbols", where, &symbols))) return st;
        if (symbols < nnz)
            return si_fail(SI_ERR_MODEL, "%s: %lld index symbols for nnz = %lld", where, (long long)symbols, (long long)nnz);
        ix = stream(npz, pre, "index", SI_U8, bits == 4 ? (symbols + 1) / 2 : symbols,
                    bits == 4 ? "two 4-bit symbols a byte" : "one 8-bit symbol a byte", where, &st);
    } else if (strcmp(index, "bitmap") == 0) {
        ix = stream(npz, pre, "index", SI_U8, total / 8 + (total % 8 != 0), "one bit per weight", where, &st);
    } else {
        return si_fail(SI_ERR_MODEL, "%s: compact index '%s' is not delta4, delta8 or bitmap", where, index);
    }
    if (!ix) return st;

    /* The value stream, checked before anything is allocated. */
    if (!values) return si_fail(SI_ERR_FORMAT, "%s: compact weight needs 'values'", where);
    const si_array *codes = NULL, *book = NULL, *q8 = NULL, *scale = NULL, *f32 = NULL;
    int code_bits = 0;
    if (strcmp(values, "codebook4") == 0 || strcmp(values, "codebook8") == 0) {
        code_bits = values[8] == '4' ? 4 : 8;
        char nm[160];
        snprintf(nm, sizeof nm, "%s.codebook", pre);
        book = si_npz_find(npz, nm);
        if (!book) return si_fail(SI_ERR_FORMAT, "%s: array '%s' is missing from the file", where, nm);
        if (book->dtype != SI_F32 || book->ndim != 1 || book->count < 1 || book->count > (1 << code_bits))
            return si_fail(SI_ERR_MODEL, "%s: '%s' must be 1 to %d float32 values (%s)", where, nm, 1 << code_bits, values);
        for (int64_t i = 0; i < book->count; i++) {
            float v;
            memcpy(&v, book->data + 4 * i, 4);
            if (!isfinite(v)) return si_fail(SI_ERR_MODEL, "%s: %s[%lld] is not finite", where, nm, (long long)i);
        }
        codes = stream(npz, pre, "codes", SI_U8, code_bits == 4 ? (nnz + 1) / 2 : nnz,
                       code_bits == 4 ? "two 4-bit codes a byte" : "one code a byte", where, &st);
        if (!codes) return st;
    } else if (strcmp(values, "int8") == 0) {
        if (!(q8 = stream(npz, pre, "q", SI_I8, nnz, "one per entry", where, &st))) return st;
        if (!(scale = stream(npz, pre, "scale", SI_F32, L->rows, "one per output", where, &st))) return st;
        for (int64_t r = 0; r < L->rows; r++) {
            float v;
            memcpy(&v, scale->data + 4 * r, 4);
            if (!isfinite(v) || !(v > 0.0f))
                return si_fail(SI_ERR_MODEL, "%s: %s[%lld] = %g, a weight scale must be finite and > 0", where,
                               scale->name, (long long)r, (double)v);
        }
    } else if (strcmp(values, "float32") == 0) {
        if (!(f32 = stream(npz, pre, "values", SI_F32, nnz, "one per entry", where, &st))) return st;
    } else {
        return si_fail(SI_ERR_MODEL, "%s: compact values '%s' is not codebook4, codebook8, int8 or float32", where, values);
    }

    L->storage = SI_STORAGE_COMPACT; /* runs as CSR: the form below */
    L->compact_bytes = ix->count + (codes ? codes->count : 0) + (book ? 4 * book->count : 0) +
                       (q8 ? q8->count : 0) + (scale ? 4 * scale->count : 0) + (f32 ? 4 * f32->count : 0);
    L->nnz = nnz;
    L->csr_val = si_alloc((size_t)(nnz ? nnz : 1) * sizeof(float));
    L->csr_col = si_alloc((size_t)(nnz ? nnz : 1) * sizeof(int32_t));
    L->csr_ptr = si_alloc((size_t)(L->rows + 1) * sizeof(int64_t));
    if (!L->csr_val || !L->csr_col || !L->csr_ptr)
        return si_fail(SI_ERR_NOMEM, "%s: out of memory for the decoded CSR (%lld entries, %lld rows)", where,
                       (long long)nnz, (long long)L->rows);
    L->csr_ptr[0] = 0;
    if ((st = bits ? decode_delta(ix, bits, symbols, nnz, L, where) : decode_bitmap(ix, nnz, L, where))) return st;

    if (codes) {
        float cb[256];
        memcpy(cb, book->data, (size_t)book->count * 4);
        for (int64_t k = 0; k < nnz; k++) {
            unsigned c = code_bits == 4 ? (codes->data[k >> 1] >> (4 * (k & 1))) & 15u : codes->data[k];
            if (c >= (unsigned)book->count)
                return si_fail(SI_ERR_MODEL, "%s: %s[%lld] = %u >= codebook size %lld", where, codes->name, (long long)k, c,
                               (long long)book->count);
            L->csr_val[k] = cb[c];
        }
        if (code_bits == 4 && (nnz & 1) && (codes->data[nnz >> 1] >> 4))
            return si_fail(SI_ERR_MODEL, "%s: %s: the padding nibble after the last code is not zero", where, codes->name);
    } else if (q8) {
        for (int64_t r = 0; r < L->rows; r++) {
            float s;
            memcpy(&s, scale->data + 4 * r, 4);
            for (int64_t k = L->csr_ptr[r]; k < L->csr_ptr[r + 1]; k++) {
                const int8_t v = (int8_t)q8->data[k];
                if (v == -128)
                    return si_fail(SI_ERR_MODEL, "%s: %s[%lld] = -128 (int8 weights are symmetric, in [-127, 127])", where,
                                   q8->name, (long long)k);
                L->csr_val[k] = s * (float)v;
            }
        }
    } else {
        if (nnz) memcpy(L->csr_val, f32->data, (size_t)nnz * sizeof(float));
        for (int64_t k = 0; k < nnz; k++)
            if (!isfinite(L->csr_val[k]))
                return si_fail(SI_ERR_MODEL, "%s: %s[%lld] is not finite", where, f32->name, (long long)k);
    }
    return SI_OK;
}
