/* "libzimg": a small image library that two packages vendor in two builds, version 62 and
 * version 100 (auditwheel-style, renamed libzimg-<sha8>.so). Like libjpeg, the caller passes
 * the version its headers declared to the create call, and a build refuses a caller compiled
 * against another version. Both builds export the same names (default visibility). */
#include <stdio.h>

#ifndef ZIMG_LIB_VERSION
#error "define ZIMG_LIB_VERSION"
#endif

int zimg_library_version(void) { return ZIMG_LIB_VERSION; }

/* 0 on success; -1 with the reason in `error` when the caller was built for another version. */
int zimg_create(int caller_version, char *error, size_t size) {
    if (caller_version != ZIMG_LIB_VERSION) {
        snprintf(error, size, "Wrong zimg library version: library is %d, caller expects %d",
                 ZIMG_LIB_VERSION, caller_version);
        return -1;
    }
    return 0;
}

/* "Decode": a checksum that differs between the two builds. */
long zimg_decode(long n) { return n * ZIMG_LIB_VERSION; }
