/* A small strict JSON parser for the manifest. Input is untrusted: bounded depth, every
 * read checked against the end, numbers parsed from a bounded copy. */
#define _POSIX_C_SOURCE 200809L
#include "si_internal.h"

#include <locale.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* JSON's decimal point is '.', whatever LC_NUMERIC the host chose (under de_DE strtod stops
 * at "0.5"'s '.'): numbers are read by strtod under the "C" locale, switched for the calling
 * thread alone (uselocale), so other threads and the host's own setting are untouched. */
static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static int strtod_c(const char *s, char **end, double *out) {
    pthread_once(&c_locale_once, make_c_locale);
    if (!c_locale) return 0;
    locale_t prev = uselocale(c_locale);
    *out = strtod(s, end);
    uselocale(prev);
    return 1;
}

#define MAX_ITEMS 65536 /* per array: the manifest's longest is its class names */

typedef struct {
    const char *s, *p, *end;
    int depth;
} jp;

static si_status_t jerr(jp *j, const char *what) {
    return si_fail(SI_ERR_FORMAT, "model.json: %s at byte %ld", what, (long)(j->p - j->s));
}

static void ws(jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(jp *j, unsigned *out) {
    if (j->end - j->p < 4) return 0;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0) return 0;
        v = v * 16 + (unsigned)h;
    }
    j->p += 4;
    *out = v;
    return 1;
}

static si_status_t parse_string(jp *j, char **out) {
    /* Unescaped output is never longer than the escaped input. */
    const char *start = ++j->p;
    size_t cap = 1;
    const char *q = start;
    while (q < j->end && *q != '"') { if (*q == '\\') q++; q++; }
    if (q >= j->end) return jerr(j, "unterminated string");
    cap += (size_t)(q - start);
    char *buf = malloc(cap), *w = buf;
    if (!buf) return si_fail(SI_ERR_NOMEM, "out of memory parsing model.json");
    while (*j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) { free(buf); return jerr(j, "control character in string"); }
        if (c != '\\') { *w++ = (char)c; j->p++; continue; }
        j->p++;
        char e = *j->p++;
        switch (e) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!read_hex4(j, &cp)) { free(buf); return jerr(j, "bad \\u escape"); }
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') { free(buf); return jerr(j, "lone surrogate"); }
                j->p += 2;
                if (!read_hex4(j, &lo) || lo < 0xDC00 || lo > 0xDFFF) { free(buf); return jerr(j, "bad surrogate pair"); }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) { free(buf); return jerr(j, "lone surrogate"); }
            if (cp == 0) { free(buf); return jerr(j, "NUL in string"); }
            /* 12 escaped bytes (a pair) become at most 4; 6 become at most 3. */
            if (cp < 0x80) *w++ = (char)cp;
            else if (cp < 0x800) { *w++ = (char)(0xC0 | (cp >> 6)); *w++ = (char)(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) {
                *w++ = (char)(0xE0 | (cp >> 12)); *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *w++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *w++ = (char)(0xF0 | (cp >> 18)); *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3F)); *w++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: free(buf); j->p--; return jerr(j, "bad escape");
        }
    }
    j->p++;
    *w = 0;
    *out = buf;
    return SI_OK;
}

static si_status_t parse_value(jp *j, si_json *v);

static si_status_t push(si_json *v, int *cap, char *key) {
    if (v->n == *cap) {
        int nc = *cap ? *cap * 2 : 8;
        si_json *ni = realloc(v->items, (size_t)nc * sizeof *ni);
        if (!ni) return si_fail(SI_ERR_NOMEM, "out of memory parsing model.json");
        v->items = ni;
        if (v->type == SI_JOBJ) {
            char **nk = realloc(v->keys, (size_t)nc * sizeof *nk);
            if (!nk) return si_fail(SI_ERR_NOMEM, "out of memory parsing model.json");
            v->keys = nk;
        }
        *cap = nc;
    }
    memset(&v->items[v->n], 0, sizeof v->items[0]);
    if (v->type == SI_JOBJ) v->keys[v->n] = key;
    v->n++;
    return SI_OK;
}

static si_status_t parse_container(jp *j, si_json *v, int obj) {
    if (++j->depth > 32) return jerr(j, "nesting deeper than 32");
    v->type = obj ? SI_JOBJ : SI_JARR;
    j->p++;
    int cap = 0;
    ws(j);
    if (j->p < j->end && *j->p == (obj ? '}' : ']')) { j->p++; j->depth--; return SI_OK; }
    for (;;) {
        char *key = NULL;
        si_status_t st;
        ws(j);
        if (obj) {
            if (j->p >= j->end || *j->p != '"') return jerr(j, "expected a key");
            if ((st = parse_string(j, &key)) != SI_OK) return st;
            ws(j);
            if (j->p >= j->end || *j->p != ':') { free(key); return jerr(j, "expected ':'"); }
            j->p++;
        }
        if (obj) {
            /* Refuse duplicate keys: readers that keep the first and the last would
             * otherwise see different models. Manifest objects are small; the cap keeps
             * the quadratic check cheap on hostile input. */
            if (v->n >= 256) { free(key); return jerr(j, "object with more than 256 keys"); }
            for (int i = 0; i < v->n; i++)
                if (strcmp(v->keys[i], key) == 0) { free(key); return jerr(j, "duplicate key"); }
        }
        if (!obj && v->n >= MAX_ITEMS) return jerr(j, "array with more than 65536 items");
        if ((st = push(v, &cap, key)) != SI_OK) { free(key); return st; }
        if ((st = parse_value(j, &v->items[v->n - 1])) != SI_OK) return st;
        ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == (obj ? '}' : ']')) { j->p++; break; }
        return jerr(j, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    j->depth--;
    return SI_OK;
}

static si_status_t parse_value(jp *j, si_json *v) {
    ws(j);
    if (j->p >= j->end) return jerr(j, "unexpected end");
    char c = *j->p;
    if (c == '{' || c == '[') return parse_container(j, v, c == '{');
    if (c == '"') { v->type = SI_JSTR; return parse_string(j, &v->str); }
    if (j->end - j->p >= 4 && memcmp(j->p, "true", 4) == 0) { v->type = SI_JBOOL; v->num = 1; j->p += 4; return SI_OK; }
    if (j->end - j->p >= 5 && memcmp(j->p, "false", 5) == 0) { v->type = SI_JBOOL; v->num = 0; j->p += 5; return SI_OK; }
    if (j->end - j->p >= 4 && memcmp(j->p, "null", 4) == 0) { v->type = SI_JNULL; j->p += 4; return SI_OK; }
    if (c == '-' || (c >= '0' && c <= '9')) {
        /* RFC 8259: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, as Python's json reads it. */
        const char *q = j->p, *e = j->end;
        if (q < e && *q == '-') q++;
        if (q < e && *q == '0') q++;
        else if (q < e && *q >= '1' && *q <= '9') while (q < e && *q >= '0' && *q <= '9') q++;
        else return jerr(j, "bad number");
        if (q < e && *q == '.') {
            if (++q >= e || *q < '0' || *q > '9') return jerr(j, "bad number");
            while (q < e && *q >= '0' && *q <= '9') q++;
        }
        if (q < e && (*q == 'e' || *q == 'E')) {
            q++;
            if (q < e && (*q == '+' || *q == '-')) q++;
            if (q >= e || *q < '0' || *q > '9') return jerr(j, "bad number");
            while (q < e && *q >= '0' && *q <= '9') q++;
        }
        if (q < e && ((*q >= '0' && *q <= '9') || *q == '.' || *q == '+' || *q == '-' || *q == 'e' || *q == 'E'))
            return jerr(j, "bad number");
        char tmp[64];
        size_t n = (size_t)(q - j->p);
        if (n >= sizeof tmp) return jerr(j, "number too long");
        memcpy(tmp, j->p, n);
        tmp[n] = 0;
        char *endp;
        double d;
        if (!strtod_c(tmp, &endp, &d)) return si_fail(SI_ERR_NOMEM, "out of memory for the \"C\" locale parsing model.json");
        if (endp != tmp + n) return jerr(j, "bad number");
        v->type = SI_JNUM;
        v->num = d;
        j->p += n;
        return SI_OK;
    }
    return jerr(j, "unexpected character");
}

si_status_t si_json_parse(const char *text, size_t len, si_json *out) {
    jp j = {text, text, text + len, 0};
    memset(out, 0, sizeof *out);
    si_status_t st = parse_value(&j, out);
    if (st == SI_OK) {
        ws(&j);
        if (j.p != j.end) st = jerr(&j, "trailing characters");
    }
    if (st != SI_OK) si_json_free(out);
    return st;
}

void si_json_free(si_json *v) {
    if (!v) return;
    for (int i = 0; i < v->n; i++) {
        si_json_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

const si_json *si_json_get(const si_json *obj, const char *key) {
    if (!obj || obj->type != SI_JOBJ) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}
