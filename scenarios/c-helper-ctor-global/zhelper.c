/* "libzhelper": a small C helper library that two packages vendor in two different builds
 * (auditwheel-style, renamed libzhelper-<sha8>.so). Version 2 changed the layout of its table
 * struct (the fields were reordered and one added) and what it fills in. Everything has default
 * visibility, so both builds export the same names: zhelper_fill, zhelper_version,
 * zhelper_value.
 *
 * The library's constructor fills its (static, private) default table through the exported
 * zhelper_fill. That call goes through the PLT: if another build of libzhelper is already in the
 * global scope (loaded RTLD_GLOBAL or LD_PRELOADed), the loader binds it to that build's
 * zhelper_fill, which reads this build's table with its own layout. Relocations are done before
 * constructors run, so this happens at load time, inside dlopen. */
#include <stddef.h>

#ifndef ZHELPER_VERSION
#error "define ZHELPER_VERSION"
#endif

#if ZHELPER_VERSION == 1
struct zh_table {
    size_t count;
    double *values;
};
#else
struct zh_table {
    double *values; /* moved first in version 2 */
    size_t count;
    unsigned flags; /* new in version 2 */
};
#endif

static double default_values[8];
#if ZHELPER_VERSION == 1
static struct zh_table defaults = {8, default_values};
#else
static struct zh_table defaults = {default_values, 8, 0};
#endif

/* Version 1 fills 0, 1, 2, ...; version 2 fills squares 0, 1, 4, ... */
void zhelper_fill(struct zh_table *table) {
    for (size_t i = 0; i < table->count; i++)
        table->values[i] = ZHELPER_VERSION == 1 ? (double)i : (double)(i * i);
}

int zhelper_version(void) { return ZHELPER_VERSION; }

static int initialized;

double zhelper_value(int index) {
    return initialized && index >= 0 && index < 8 ? default_values[index] : -1.0;
}

__attribute__((constructor)) static void zhelper_init(void) {
    zhelper_fill(&defaults);
    initialized = 1;
}
