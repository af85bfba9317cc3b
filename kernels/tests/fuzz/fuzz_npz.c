/* libFuzzer target: the ZIP and .npy reader alone (io/si_npz.c), on any bytes.
 *
 * Opens the input as an .npz archive (fuzz builds skip the CRC-32 check, see si_npz.c) and,
 * when it opens, reads every byte of every array it reports, so ASan checks that each
 * array's span lies within the buffer (a deflated member's: within its inflated buffer);
 * each name must find its own array. Built by fuzz.sh.
 */
#include "si_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int dtype_bytes(si_dtype t) {
    switch (t) {
    case SI_F32: case SI_I32: return 4;
    case SI_U16: return 2;
    case SI_I64: return 8;
    case SI_U8: case SI_I8: return 1;
    }
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    si_npz npz;
    if (si_npz_open(data, size, &npz) != SI_OK) return 0;
    unsigned sum = 0;
    for (int i = 0; i < npz.n; i++) {
        const si_array *a = &npz.arrays[i];
        if (si_npz_find(&npz, a->name) != a) abort(); /* names are unique */
        int64_t count = 1;
        for (int d = 0; d < a->ndim; d++) count *= a->shape[d];
        if (count != a->count) abort();
        size_t bytes = (size_t)a->count * (size_t)dtype_bytes(a->dtype);
        /* a stored member lies in the input, a deflated one in its inflated buffer */
        const uint8_t *base = a->inflated ? a->inflated : data;
        const size_t span = a->inflated ? a->inflated_size : size;
        if (a->data < base || bytes > span || a->data - base > (ptrdiff_t)(span - bytes)) abort();
        for (size_t k = 0; k < bytes; k++) sum += a->data[k];
    }
    volatile unsigned sink = sum;
    (void)sink;
    si_npz_close(&npz);
    return 0;
}
