/* Two small "BLAS-like" libraries in the style of the scipy-openblas builds, from one source:
 *
 * - ZBLAS_FLAVOR == 'A' (libzblasa): LP64, public API prefixed: zblasa_ddot (int arguments).
 * - ZBLAS_FLAVOR == 'B' (libzblasb): ILP64, public API prefixed and suffixed: zblasb_ddot64_
 *   (long arguments), from a newer release whose internals changed.
 *
 * The public names never collide. The internals are not renamed and keep default visibility,
 * as in OpenBLAS: both libraries export gotoblas (the pointer to the active dispatch table),
 * gotoblas_HASWELL (the table for one core type), gotoblas_init (the constructor that picks
 * the table) and the kernel ddot_kernel_HASWELL. B's kernel has another signature (unit stride,
 * result through a pointer), so B's table type differs from A's. Every internal reference goes
 * through the GOT/PLT (interposable): under RTLD_GLOBAL or LD_PRELOAD of one library, the other
 * library's public function reads the first one's gotoblas and calls the first one's kernel
 * with its own argument convention. */
#include <stddef.h>

#if ZBLAS_FLAVOR == 'A'
typedef double (*ddot_kernel_t)(long n, const double *x, long incx, const double *y, long incy);
typedef struct {
    int dtb_entries;
    int offset_a;
    ddot_kernel_t ddot_k;
} gotoblas_t;
#define CORENAME "Haswell (zblasa)"
#elif ZBLAS_FLAVOR == 'B'
typedef void (*ddot_kernel_t)(long n, const double *x, const double *y, double *result);
typedef struct {
    int dtb_entries;
    int offset_a;
    ddot_kernel_t ddot_k;
    int (*num_threads)(void); /* new in B's release */
    const char *corename;     /* new in B's release */
} gotoblas_t;
#define CORENAME "Haswell (zblasb)"
#else
#error "define ZBLAS_FLAVOR as 'A' or 'B'"
#endif

#if ZBLAS_FLAVOR == 'A'
double ddot_kernel_HASWELL(long n, const double *x, long incx, const double *y, long incy) {
    double sum = 0.0;
    for (long i = 0; i < n; i++) sum += x[i * incx] * y[i * incy];
    return sum;
}
gotoblas_t gotoblas_HASWELL = {64, 0, ddot_kernel_HASWELL};
#else
void ddot_kernel_HASWELL(long n, const double *x, const double *y, double *result) {
    double sum = 0.0;
    for (long i = 0; i < n; i++) sum += x[i] * y[i];
    *result = sum;
}
static int one_thread(void) { return 1; }
gotoblas_t gotoblas_HASWELL = {64, 0, ddot_kernel_HASWELL, one_thread, CORENAME};
#endif

gotoblas_t *gotoblas = NULL;

/* OpenBLAS's gotoblas_init is an exported constructor too. */
__attribute__((constructor)) void gotoblas_init(void) {
    if (gotoblas == NULL) gotoblas = &gotoblas_HASWELL;
}

/* The public API keeps its own frame in backtraces (no tail call into the kernel). */
#define ZBLAS_API __attribute__((optimize("no-optimize-sibling-calls")))

#if ZBLAS_FLAVOR == 'A'
ZBLAS_API double zblasa_ddot(const int *n, const double *x, const int *incx, const double *y,
                             const int *incy) {
    return gotoblas->ddot_k(*n, x, *incx, y, *incy);
}
const char *zblasa_get_corename(void) { return CORENAME; }
#else
ZBLAS_API double zblasb_ddot64_(const long *n, const double *x, const long *incx,
                                const double *y, const long *incy) {
    double result = 0.0;
    if (*incx == 1 && *incy == 1) {
        gotoblas->ddot_k(*n, x, y, &result);
    } else {
        for (long i = 0; i < *n; i++) result += x[i * *incx] * y[i * *incy];
    }
    return result;
}
const char *zblasb_get_corename64_(void) { return CORENAME; }
#endif
