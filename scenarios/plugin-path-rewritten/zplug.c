/* "libzplug": a small plugin-loading library that two packages bundle in two builds (ABI 1 and
 * ABI 2), auditwheel-style (renamed libzplug-<sha8>.so). A plugin is a shared object
 * libzplug_<name>.so found on the search path: the directories of $ZPLUG_PLUGIN_PATH first
 * (colon-separated, read at every load, as toolkits read their plugin-path variables), then the
 * directory the caller bundles. A plugin built against another ABI is refused with a message
 * and abort(), the way a toolkit refuses to mix its versions. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ZPLUG_ABI
#error "define ZPLUG_ABI"
#endif

int zplug_library_abi(void) { return ZPLUG_ABI; }

static void *open_plugin(const char *name, const char *bundled, char *found, size_t size) {
    const char *env = getenv("ZPLUG_PLUGIN_PATH");
    char dirs[8192];
    snprintf(dirs, sizeof dirs, "%s:%s", env ? env : "", bundled);
    char *save = NULL;
    for (char *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(found, size, "%s/libzplug_%s.so", dir, name);
        void *handle = dlopen(found, RTLD_NOW | RTLD_LOCAL);
        if (handle) return handle;
    }
    return NULL;
}

/* Load plugin `name` (from the search path, else `bundled`), check its ABI and run it. */
int zplug_run(const char *name, const char *bundled) {
    char found[8192];
    void *handle = open_plugin(name, bundled, found, sizeof found);
    if (handle == NULL) {
        fprintf(stderr, "zplug %d: plugin '%s' not found\n", ZPLUG_ABI, name);
        return -1;
    }
    int (*abi)(void) = (int (*)(void))dlsym(handle, "zplug_plugin_abi");
    int (*run)(int) = (int (*)(int))dlsym(handle, "zplug_plugin_run");
    int built = abi ? abi() : -1;
    if (run == NULL || built != ZPLUG_ABI) {
        fprintf(stderr,
                "zplug %d: Cannot mix incompatible plugin %s (built for zplug %d) with this "
                "library (zplug %d)\n",
                ZPLUG_ABI, found, built, ZPLUG_ABI);
        fflush(stderr);
        abort();
    }
    return run(ZPLUG_ABI);
}
