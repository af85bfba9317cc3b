/* libFuzzer target: the manifest's JSON parser alone (io/si_json.c), on any bytes.
 *
 * Parses the input as model.json and, when it parses, walks the tree (every key looked up
 * again by si_json_get, every string read to its end), so ASan sees each byte the loader
 * would read; then frees it (LeakSanitizer: nothing may remain). Built by fuzz.sh.
 */
#include "si_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t walk(const si_json *v) {
    size_t n = 1;
    if (v->type == SI_JSTR) n += strlen(v->str);
    for (int i = 0; i < v->n; i++) {
        if (v->type == SI_JOBJ && si_json_get(v, v->keys[i]) != &v->items[i]) abort(); /* keys are unique */
        n += walk(&v->items[i]);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    si_json root;
    if (si_json_parse((const char *)data, size, &root) != SI_OK) return 0;
    volatile size_t n = walk(&root);
    (void)n;
    si_json_free(&root);
    return 0;
}
