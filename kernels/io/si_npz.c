/* Reader of .npz archives: a ZIP of .npy members, as numpy.savez and numpy.savez_compressed
 * write them.
 *
 * The whole file is untrusted: every offset and length is checked against the buffer
 * before it is read, every member's CRC-32 is verified, and only the small subset of ZIP
 * and .npy that numpy writes is accepted (stored or deflated members, ZIP64 extra fields,
 * little-endian C-order arrays of a few dtypes). A deflated member is inflated into a buffer
 * of exactly its declared size, which must not exceed what deflate can expand the
 * compressed bytes to, and must come out exactly: no more, no less, no trailing input.
 */
#include "si_internal.h"

#include <pthread.h>
#include <zlib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MEMBERS 4096

/* Fuzz builds skip the CRC-32 check, as OSS-Fuzz projects do: otherwise nearly every
 * mutation dies at the checksum (a 3.6M-execution run stayed at its starting coverage). */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define CHECK_CRC 0
#else
#define CHECK_CRC 1
#endif

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* 1 if [off, off + len) lies within [0, size). */
static int in_bounds(uint64_t off, uint64_t len, uint64_t size) {
    return off <= size && len <= size - off;
}

/* CRC-32 (the ZIP polynomial), slicing-by-8: eight tables, eight bytes per step. The tables
 * are built once under pthread_once (a lazily filled table read by several loading threads
 * was a data race). VGG19's 575 MB file: the byte-wise loop was 13% of its load. */
static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xFF];
}
static uint32_t crc32_of(const unsigned char *p, uint64_t n) {
    pthread_once(&crc_once, crc_init);
    uint32_t c = 0xFFFFFFFFu;
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint32_t lo = c ^ rd32(p + i), hi = rd32(p + i + 4);
        c = crc_tab[7][lo & 0xFF] ^ crc_tab[6][(lo >> 8) & 0xFF] ^ crc_tab[5][(lo >> 16) & 0xFF] ^ crc_tab[4][lo >> 24] ^
            crc_tab[3][hi & 0xFF] ^ crc_tab[2][(hi >> 8) & 0xFF] ^ crc_tab[1][(hi >> 16) & 0xFF] ^ crc_tab[0][hi >> 24];
    }
    for (; i < n; i++) c = crc_tab[0][(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

const char *si_dtype_name(si_dtype t) {
    switch (t) {
    case SI_F32: return "float32";
    case SI_I32: return "int32";
    case SI_U16: return "uint16";
    case SI_I64: return "int64";
    case SI_U8: return "uint8";
    case SI_I8: return "int8";
    }
    return "?";
}

static int dtype_size(si_dtype t) {
    switch (t) {
    case SI_F32: case SI_I32: return 4;
    case SI_U16: return 2;
    case SI_I64: return 8;
    case SI_U8: case SI_I8: return 1;
    }
    return 0;
}

/* ---- .npy header: a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }                        */

typedef struct { const char *p, *end; } cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}
static int eat(cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) { c->p++; return 1; }
    return 0;
}
/* A quoted string into buf (at most cap - 1 characters). */
static int read_str(cursor *c, char *buf, size_t cap) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (n + 1 >= cap) return 0;
        buf[n++] = *c->p++;
    }
    if (c->p >= c->end) return 0;
    c->p++;
    buf[n] = 0;
    return 1;
}

static si_status_t parse_npy(const char *member, const unsigned char *d, uint64_t len, si_array *a) {
    if (len < 10 || memcmp(d, "\x93NUMPY", 6) != 0)
        return si_fail(SI_ERR_FORMAT, "member %s: not a .npy array (bad magic)", member);
    int major = d[6];
    uint64_t hlen, hoff;
    if (major == 1) { hlen = rd16(d + 8); hoff = 10; }
    else if (major == 2 || major == 3) {
        if (len < 12) return si_fail(SI_ERR_FORMAT, "member %s: truncated .npy header", member);
        hlen = rd32(d + 8); hoff = 12;
    } else return si_fail(SI_ERR_FORMAT, "member %s: .npy version %d not supported", member, major);
    if (!in_bounds(hoff, hlen, len))
        return si_fail(SI_ERR_FORMAT, "member %s: .npy header length %llu beyond the member",
                       member, (unsigned long long)hlen);
    cursor c = {(const char *)d + hoff, (const char *)d + hoff + hlen};
    char key[32], descr[16] = "";
    int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
    if (!eat(&c, '{')) goto bad;
    while (!eat(&c, '}')) {
        if (!read_str(&c, key, sizeof key) || !eat(&c, ':')) goto bad;
        if (strcmp(key, "descr") == 0) {
            if (!read_str(&c, descr, sizeof descr)) goto bad;
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            skip_ws(&c);
            if (c.end - c.p >= 4 && memcmp(c.p, "True", 4) == 0) { fortran = 1; c.p += 4; }
            else if (c.end - c.p >= 5 && memcmp(c.p, "False", 5) == 0) { fortran = 0; c.p += 5; }
            else goto bad;
            have_order = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (!eat(&c, '(')) goto bad;
            a->ndim = 0;
            while (!eat(&c, ')')) {
                skip_ws(&c);
                int64_t v = 0;
                int digits = 0;
                while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
                    if (v > (INT64_C(1) << 31)) break; /* refused below */
                    v = v * 10 + (*c.p++ - '0');
                    digits++;
                }
                if (!digits) goto bad;
                if (v >= (INT64_C(1) << 31))
                    return si_fail(SI_ERR_FORMAT, "member %s: dimension %lld too large (limit 2^31 - 1)",
                                   member, (long long)v);
                if (a->ndim >= 4)
                    return si_fail(SI_ERR_FORMAT, "member %s: more than 4 dimensions", member);
                a->shape[a->ndim++] = v;
                if (!eat(&c, ',')) { if (!eat(&c, ')')) goto bad; break; }
            }
            have_shape = 1;
        } else goto bad;
        if (!eat(&c, ',')) { if (!eat(&c, '}')) goto bad; break; }
    }
    if (!have_descr || !have_order || !have_shape) goto bad;
    if (fortran) return si_fail(SI_ERR_FORMAT, "member %s: Fortran-order arrays are not supported", member);
    if (strcmp(descr, "<f4") == 0) a->dtype = SI_F32;
    else if (strcmp(descr, "<i4") == 0) a->dtype = SI_I32;
    else if (strcmp(descr, "<u2") == 0) a->dtype = SI_U16;
    else if (strcmp(descr, "<i8") == 0) a->dtype = SI_I64;
    else if (strcmp(descr, "|u1") == 0) a->dtype = SI_U8;
    else if (strcmp(descr, "|i1") == 0) a->dtype = SI_I8;
    else return si_fail(SI_ERR_FORMAT, "member %s: dtype '%s' not supported (float32, int32, uint16, int64, uint8, int8)",
                        member, descr);
    int64_t count = 1, bytes;
    for (int i = 0; i < a->ndim; i++)
        if (!si_mul_ok(count, a->shape[i], &count))
            return si_fail(SI_ERR_FORMAT, "member %s: element count overflows", member);
    if (!si_mul_ok(count, dtype_size(a->dtype), &bytes) || (uint64_t)bytes != len - hoff - hlen)
        return si_fail(SI_ERR_FORMAT, "member %s: %llu data bytes for %lld elements of %s",
                       member, (unsigned long long)(len - hoff - hlen), (long long)count,
                       si_dtype_name(a->dtype));
    a->count = count;
    a->data = d + hoff + hlen;
    return SI_OK;
bad:
    return si_fail(SI_ERR_FORMAT, "member %s: malformed .npy header", member);
}

/* ---- ZIP ---------------------------------------------------------------------------- */

/* The local header at loff must describe the member as its central directory entry does:
 * the same name, method, CRC and sizes (the latter may be zero under a data descriptor,
 * flag bit 3, or all ones with a ZIP64 extra field). Readers differ in which of the two they
 * trust (Python's zipfile: the name from both, everything else from the directory), so any
 * disagreement would let two readers see two models in one file. */
static si_status_t check_local(const unsigned char *buf, size_t size, uint64_t loff, const char *name, uint16_t nlen,
                               uint16_t method, uint32_t crc, uint64_t csize, uint64_t usize) {
    const unsigned char *l = buf + loff;
    uint16_t lflags = rd16(l + 6), lmethod = rd16(l + 8), lnlen = rd16(l + 26), lxlen = rd16(l + 28);
    uint32_t lcrc = rd32(l + 14);
    uint64_t lcsize = rd32(l + 18), lusize = rd32(l + 22);
    if (!in_bounds(loff + 30, (uint64_t)lnlen + lxlen, size))
        return si_fail(SI_ERR_FORMAT, "member %s: local header's name and extra field run past the end of the file", name);
    if (lnlen != nlen || memcmp(l + 30, name, nlen) != 0)
        return si_fail(SI_ERR_FORMAT, "member %s: the local header names it '%.*s'", name, (int)(lnlen < 128 ? lnlen : 128),
                       (const char *)(l + 30));
    if (lmethod != method)
        return si_fail(SI_ERR_FORMAT, "member %s: method %u in the local header, %u in the central directory", name, lmethod,
                       method);
    /* ZIP64 in the local header: both sizes, uncompressed first, when either field is all
     * ones; each replaces only a field that is all ones. */
    if (lcsize == 0xFFFFFFFFu || lusize == 0xFFFFFFFFu) {
        const unsigned char *x = l + 30 + lnlen, *xend = x + lxlen;
        int found = 0;
        while (xend - x >= 4) {
            uint16_t id = rd16(x), sz = rd16(x + 2);
            if (sz > xend - x - 4) break;
            if (id == 0x0001 && sz >= 16) {
                if (lusize == 0xFFFFFFFFu) lusize = rd64(x + 4);
                if (lcsize == 0xFFFFFFFFu) lcsize = rd64(x + 12);
                found = 1;
                break;
            }
            x += 4 + sz;
        }
        if (!found) return si_fail(SI_ERR_FORMAT, "member %s: local header's ZIP64 sizes are missing", name);
    }
    const int descriptor = (lflags & 8) && lcrc == 0 && lcsize == 0 && lusize == 0;
    if (!descriptor && (lcrc != crc || lcsize != csize || lusize != usize))
        return si_fail(SI_ERR_FORMAT, "member %s: local header (CRC %08x, %llu / %llu bytes) disagrees with the central "
                       "directory (CRC %08x, %llu / %llu bytes)", name, lcrc, (unsigned long long)lcsize,
                       (unsigned long long)lusize, crc, (unsigned long long)csize, (unsigned long long)usize);
    return SI_OK;
}

/* Inflates the raw deflate stream src[0, csize) into a new si_alloc'd buffer of exactly
 * usize bytes (usize and csize below 4 GB, checked by the caller). The stream must end
 * exactly at usize bytes out and csize bytes in. */
static si_status_t inflate_member(const char *name, const unsigned char *src, uint64_t csize, uint64_t usize,
                                  unsigned char **out) {
    *out = si_alloc(usize ? (size_t)usize : 1);
    if (!*out)
        return si_fail(SI_ERR_NOMEM, "member %s: out of memory inflating it to %llu bytes", name, (unsigned long long)usize);
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return si_fail(SI_ERR_NOMEM, "member %s: zlib's inflateInit2 failed", name);
    z.next_in = (Bytef *)(uintptr_t)src;
    z.avail_in = (uInt)csize;
    z.next_out = *out;
    z.avail_out = (uInt)usize;
    int rc = inflate(&z, Z_FINISH), more = 0;
    unsigned char extra;
    if (rc == Z_BUF_ERROR && z.avail_out == 0) { /* output full, stream not ended: one byte more? */
        z.next_out = &extra;
        z.avail_out = 1;
        rc = inflate(&z, Z_FINISH);
        more = z.avail_out == 0;
    }
    const uint64_t got = z.total_out, left_in = z.avail_in;
    const char *msg = z.msg;
    inflateEnd(&z);
    if (more)
        return si_fail(SI_ERR_FORMAT, "member %s: inflates to more than the %llu bytes its header declares", name,
                       (unsigned long long)usize);
    if (rc != Z_STREAM_END)
        return si_fail(SI_ERR_FORMAT, "member %s: corrupt deflate stream after %llu of %llu bytes (zlib: %s)", name,
                       (unsigned long long)got, (unsigned long long)usize, msg ? msg : "truncated");
    if (got != usize)
        return si_fail(SI_ERR_FORMAT, "member %s: inflates to %llu bytes, its header declares %llu", name,
                       (unsigned long long)got, (unsigned long long)usize);
    if (left_in)
        return si_fail(SI_ERR_FORMAT, "member %s: %llu bytes after the end of its deflate stream", name,
                       (unsigned long long)left_in);
    return SI_OK;
}

si_status_t si_npz_open(const unsigned char *buf, size_t size, si_npz *out) {
    memset(out, 0, sizeof *out);
    if (size < 22) return si_fail(SI_ERR_FORMAT, "not an .npz file: %zu bytes is too short for a ZIP archive", size);
    /* End of central directory: the last signature within the final 64 KiB + 22 bytes. */
    int64_t eocd = -1;
    size_t lo = size > 65535 + 22 ? size - 65535 - 22 : 0;
    for (size_t i = size - 22 + 1; i-- > lo;) {
        if (rd32(buf + i) == 0x06054b50u && i + 22 + rd16(buf + i + 20) == size) { eocd = (int64_t)i; break; }
    }
    if (eocd < 0) return si_fail(SI_ERR_FORMAT, "not an .npz file: no ZIP end-of-central-directory record (truncated?)");
    const unsigned char *e = buf + eocd;
    uint64_t n_entries = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0) return si_fail(SI_ERR_FORMAT, "multi-disk ZIP archives are not supported");
    if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        if (eocd < 20 || rd32(buf + eocd - 20) != 0x07064b50u)
            return si_fail(SI_ERR_FORMAT, "ZIP64 archive without a ZIP64 locator");
        uint64_t z = rd64(buf + eocd - 20 + 8);
        if (!in_bounds(z, 56, size) || rd32(buf + z) != 0x06064b50u)
            return si_fail(SI_ERR_FORMAT, "ZIP64 end-of-central-directory record out of range or corrupt");
        n_entries = rd64(buf + z + 32);
        cd_size = rd64(buf + z + 40);
        cd_off = rd64(buf + z + 48);
    }
    if (!in_bounds(cd_off, cd_size, size))
        return si_fail(SI_ERR_FORMAT, "ZIP central directory (offset %llu, %llu bytes) beyond the %zu-byte file",
                       (unsigned long long)cd_off, (unsigned long long)cd_size, size);
    if (n_entries > MAX_MEMBERS || n_entries * 46 > cd_size)
        return si_fail(SI_ERR_FORMAT, "ZIP directory claims %llu members in %llu bytes",
                       (unsigned long long)n_entries, (unsigned long long)cd_size);
    out->arrays = calloc(n_entries ? n_entries : 1, sizeof *out->arrays);
    if (!out->arrays) return si_fail(SI_ERR_NOMEM, "out of memory reading the ZIP directory");
    out->cap = (int)n_entries;
    uint64_t p = cd_off, cd_end = cd_off + cd_size;
    si_status_t st = SI_OK;
    for (uint64_t k = 0; k < n_entries; k++) {
        if (!in_bounds(p, 46, cd_end) || rd32(buf + p) != 0x02014b50u) {
            st = si_fail(SI_ERR_FORMAT, "ZIP central directory entry %llu is corrupt", (unsigned long long)k);
            goto fail;
        }
        const unsigned char *h = buf + p;
        uint16_t flags = rd16(h + 8), method = rd16(h + 10);
        uint32_t crc = rd32(h + 16);
        uint64_t csize = rd32(h + 20), usize = rd32(h + 24), loff = rd32(h + 42);
        uint16_t nlen = rd16(h + 28), xlen = rd16(h + 30), clen = rd16(h + 32);
        if (!in_bounds(p + 46, (uint64_t)nlen + xlen + clen, cd_end)) {
            st = si_fail(SI_ERR_FORMAT, "ZIP central directory entry %llu runs past the directory", (unsigned long long)k);
            goto fail;
        }
        char name[160];
        if (nlen < 5 || nlen >= sizeof name - 1 || nlen - 4 >= (int)sizeof out->arrays[0].name) {
            st = si_fail(SI_ERR_FORMAT, "ZIP member %llu: name of %u bytes not allowed", (unsigned long long)k, nlen);
            goto fail;
        }
        memcpy(name, h + 46, nlen);
        name[nlen] = 0;
        if (memchr(name, 0, nlen) || strcmp(name + nlen - 4, ".npy") != 0) {
            st = si_fail(SI_ERR_FORMAT, "ZIP member '%.*s' is not a .npy array", (int)nlen, name);
            goto fail;
        }
        /* ZIP64 extra field: the 64-bit values present are those whose 32-bit field is all ones. */
        const unsigned char *x = h + 46 + nlen, *xend = x + xlen;
        while (xend - x >= 4) {
            uint16_t id = rd16(x), sz = rd16(x + 2);
            if (sz > xend - x - 4) break;
            if (id == 0x0001) {
                const unsigned char *q = x + 4, *qend = q + sz;
                if (usize == 0xFFFFFFFFu) { if (qend - q < 8) break; usize = rd64(q); q += 8; }
                if (csize == 0xFFFFFFFFu) { if (qend - q < 8) break; csize = rd64(q); q += 8; }
                if (loff == 0xFFFFFFFFu) { if (qend - q < 8) break; loff = rd64(q); q += 8; }
            }
            x += 4 + sz;
        }
        if (flags & 1) { st = si_fail(SI_ERR_FORMAT, "member %s: encrypted ZIP members are not supported", name); goto fail; }
        if (method != 0 && method != 8) {
            st = si_fail(SI_ERR_UNSUPPORTED, "member %s: compression method %u (only stored, 0, and deflated, 8, are read)",
                         name, method);
            goto fail;
        }
        if (method == 0 && csize != usize) { st = si_fail(SI_ERR_FORMAT, "member %s: stored sizes disagree", name); goto fail; }
        if (method == 8 && (usize > UINT32_MAX - 1 || csize > UINT32_MAX - 1 ||
                            usize > csize * SI_INFLATE_MAX_RATIO + SI_INFLATE_SLACK)) {
            st = si_fail(SI_ERR_FORMAT, "member %s: %llu bytes deflated to %llu is not a size deflate can produce "
                         "(at most %d:1, under 4 GB)", name, (unsigned long long)usize, (unsigned long long)csize,
                         SI_INFLATE_MAX_RATIO);
            goto fail;
        }
        if (!in_bounds(loff, 30, size) || rd32(buf + loff) != 0x04034b50u) {
            st = si_fail(SI_ERR_FORMAT, "member %s: local header at offset %llu missing or beyond the file (truncated?)",
                         name, (unsigned long long)loff);
            goto fail;
        }
        if ((st = check_local(buf, size, loff, name, nlen, method, crc, csize, usize)) != SI_OK) goto fail;
        uint64_t doff = loff + 30 + rd16(buf + loff + 26) + rd16(buf + loff + 28);
        if (!in_bounds(doff, csize, size)) {
            st = si_fail(SI_ERR_FORMAT, "member %s: %llu data bytes at offset %llu run past the end of the %zu-byte file (truncated?)",
                         name, (unsigned long long)csize, (unsigned long long)doff, size);
            goto fail;
        }
        si_array *a = &out->arrays[out->n];
        memcpy(a->name, name, nlen - 4);
        a->name[nlen - 4] = 0;
        if (si_npz_find(out, a->name)) { st = si_fail(SI_ERR_FORMAT, "member %s appears twice", name); goto fail; }
        const unsigned char *member = buf + doff;
        if (method == 8) { /* a->inflated: freed by si_npz_close, which walks all cap slots */
            if ((st = inflate_member(name, buf + doff, csize, usize, &a->inflated))) goto fail;
            member = a->inflated;
            a->inflated_size = (size_t)usize;
            out->n_deflated++;
        }
        if (CHECK_CRC && crc32_of(member, usize) != crc) {
            st = si_fail(SI_ERR_FORMAT, "member %s: CRC-32 mismatch (corrupt file)", name);
            goto fail;
        }
        if ((st = parse_npy(name, member, usize, a)) != SI_OK) goto fail;
        out->n++;
        p += 46 + (uint64_t)nlen + xlen + clen;
    }
    return SI_OK;
fail:
    si_npz_close(out);
    return st;
}

void si_npz_close(si_npz *npz) {
    for (int i = 0; npz->arrays && i < npz->cap; i++) si_free(npz->arrays[i].inflated);
    free(npz->arrays);
    npz->arrays = NULL;
    npz->n = npz->cap = npz->n_deflated = 0;
}

const si_array *si_npz_find(const si_npz *npz, const char *name) {
    for (int i = 0; i < npz->n; i++)
        if (strcmp(npz->arrays[i].name, name) == 0) return &npz->arrays[i];
    return NULL;
}
