/* The state of the int8 GEMM entries (conv_igemm[_amx], fc_igemm[_amx]): a layer's int8
 * weights packed for ops/si_igemm.c (VNNI / AVX2) or ops/si_igemm_amx.c (AMX), and the GEMM
 * on whichever it is. */
#include "si_internal.h"

#include <stdlib.h>

si_status_t si_i8_packed_prepare(si_layer *L, int amx, void **state) {
    si_i8_packed *s = calloc(1, sizeof *s);
    if (!s) return si_fail(SI_ERR_NOMEM, "layer %s: out of memory", L->name);
    s->amx = amx;
    si_status_t st = amx ? si_pack_b8_amx(L->name, L->w8, L->rows, L->cols, &s->a)
                         : si_pack_b8(L->name, L->w8, L->rows, L->cols, &s->v);
    if (st) { free(s); return st; }
    *state = s;
    return SI_OK;
}

void si_i8_packed_release(void *state) {
    si_i8_packed *s = state;
    if (!s) return;
    if (s->amx) si_packed_b8_amx_free(&s->a);
    else si_packed_b8_free(&s->v);
    free(s);
}

int64_t si_i8_packed_bytes(const si_layer *L, const void *state) {
    const si_i8_packed *s = state;
    (void)L;
    return s->amx ? s->a.bytes : s->v.bytes;
}

void si_i8_gemm(const si_i8_packed *s, const uint8_t *A, int64_t lda, int64_t m, const si_requant *rq, void *C,
                int64_t ldc) {
    if (s->amx) si_igemm_amx(A, lda, m, &s->a, rq, C, ldc);
    else si_igemm_packed(A, lda, m, &s->v, rq, C, ldc);
}

void si_i8_gemm_rows(const si_i8_packed *s, const uint8_t *A, int64_t lda, int64_t m, const si_requant *rq, void *C,
                     int64_t ldc) {
    if (s->amx) si_igemm_amx_rows(A, lda, m, &s->a, rq, C, ldc);
    else si_igemm_packed_rows(A, lda, m, &s->v, rq, C, ldc);
}

int8_t *si_i8_packed_weights(const si_layer *L, const si_i8_packed *s) {
    int8_t *w = malloc((size_t)(L->rows * L->cols > 0 ? L->rows * L->cols : 1));
    if (!w) abort(); /* the references, which call this, are for tests */
    if (s->amx) si_unpack_b8_amx(&s->a, w);
    else si_unpack_b8(&s->v, w);
    return w;
}
