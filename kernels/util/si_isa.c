/* What CPU this is and which instruction sets the kernels may use. Calls no kernel. */
#define _POSIX_C_SOURCE 200809L
#include "si_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#if SI_X86
#include <cpuid.h>
#endif

static const char *const NAMES[] = {"portable", "avx2", "avx512"};

const char *si_isa_str(si_isa isa) { return isa >= SI_ISA_PORTABLE && isa <= SI_ISA_AVX512 ? NAMES[isa] : "?"; }

int si_isa_parse(const char *s, si_isa *out) {
    if (!s) return 0;
    if (strcmp(s, "auto") == 0) { *out = si_isa_detected(); return 1; }
    for (int i = 0; i <= SI_ISA_AVX512; i++)
        if (strcmp(s, NAMES[i]) == 0) { *out = (si_isa)i; return 1; }
    return 0;
}

/* __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV). */
si_isa si_isa_detected(void) {
#if SI_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        return SI_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SI_ISA_AVX2;
#endif
    return SI_ISA_PORTABLE;
}

static char cpu_id[160];
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

/* Vendor, family and model from cpuid (a VM's /proc/cpuinfo may say only "AMD EPYC", the
 * same for Zen 3 and Zen 4), and the brand string. */
static void read_cpu_id(void) {
    snprintf(cpu_id, sizeof cpu_id, "unknown CPU");
#if SI_X86
    unsigned a, b, c, d;
    char vendor[13] = {0}, brand[49] = {0};
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    memcpy(vendor, &b, 4); memcpy(vendor + 4, &d, 4); memcpy(vendor + 8, &c, 4);
    __get_cpuid(1, &a, &b, &c, &d);
    unsigned family = (a >> 8) & 0xf, model = (a >> 4) & 0xf;
    if (family == 0xf) family += (a >> 20) & 0xff;
    if (family >= 6) model |= ((a >> 16) & 0xf) << 4;
    if (__get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x80000004u)
        for (unsigned i = 0; i < 3; i++) {
            __get_cpuid(0x80000002u + i, &a, &b, &c, &d);
            memcpy(brand + 16 * i, &a, 4); memcpy(brand + 16 * i + 4, &b, 4);
            memcpy(brand + 16 * i + 8, &c, 4); memcpy(brand + 16 * i + 12, &d, 4);
        }
    char *s = brand; /* trim */
    while (*s == ' ') s++;
    for (size_t n = strlen(s); n && s[n - 1] == ' '; n--) s[n - 1] = 0;
    snprintf(cpu_id, sizeof cpu_id, "%s family %u model %u (%s)", vendor, family, model, *s ? s : "no brand string");
#endif
}

const char *si_cpu_name(void) {
    pthread_once(&cpu_once, read_cpu_id);
    return cpu_id;
}

/* Bytes of cpu0's data or unified cache of a level, from Linux's sysfs (glibc's sysconf
 * reported a 320 MB L3 inside a VM here; sysfs said 32 MB, as cpuid does), or `fallback`. */
int64_t si_cache_bytes(int level, int64_t fallback) {
    for (int i = 0; i < 8; i++) {
        char path[96], buf[32] = {0};
        int lv = -1;
        long kb = -1;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f) break;
        if (fscanf(f, "%d", &lv) != 1) lv = -1;
        fclose(f);
        if (lv != level) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        if ((f = fopen(path, "r"))) {
            if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
            fclose(f);
            if (strncmp(buf, "Instruction", 11) == 0) continue;
        }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (!(f = fopen(path, "r"))) continue;
        if (fgets(buf, sizeof buf, f) && sscanf(buf, "%ldK", &kb) != 1) kb = -1;
        fclose(f);
        if (kb > 0) return (int64_t)kb << 10;
    }
    return fallback;
}

const char *si_isa_name(void) {
    si_init();
    return si_isa_str(si_isa_active());
}

si_status_t si_set_isa(const char *name) {
    si_init();
    si_isa want;
    if (!si_isa_parse(name, &want))
        return si_fail(SI_ERR_ARGUMENT, "si_set_isa: '%s' is not one of auto, portable, avx2, avx512", name ? name : "NULL");
    if (want > si_isa_detected())
        return si_fail(SI_ERR_UNSUPPORTED, "si_set_isa: this CPU (%s) does not have %s (best: %s)", si_cpu_name(),
                       si_isa_str(want), si_isa_str(si_isa_detected()));
    si_dispatch_select(want);
    return SI_OK;
}
