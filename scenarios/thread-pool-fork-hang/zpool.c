/* "libzpool": a small C library with its own pthread worker pool (not OpenMP). The pool starts
 * on the first computation: ZPOOL_NUM_THREADS workers (default 2; 1 means "compute on the
 * caller's thread, no pool") wait on a condition variable for a batch; the caller waits on
 * another until every worker has finished its share. fork() copies only the calling thread, but
 * the child's pool state still says "started", so the child's next computation hands its batch
 * to workers that do not exist and waits forever. */
#include <pthread.h>
#include <stdlib.h>

#define MAX_WORKERS 8

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;
static int started, workers, generation, pending;
static long batch_n;
static double partial[MAX_WORKERS];

static void *worker(void *arg) {
    int id = (int)(long)arg, seen = 0;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (generation == seen) pthread_cond_wait(&work_ready, &lock);
        seen = generation;
        long n = batch_n;
        pthread_mutex_unlock(&lock);
        double sum = 0.0;
        for (long i = id; i < n; i += workers) sum += (double)i;
        pthread_mutex_lock(&lock);
        partial[id] = sum;
        if (--pending == 0) pthread_cond_signal(&work_done);
    }
    return NULL;
}

static int configured_workers(void) {
    const char *text = getenv("ZPOOL_NUM_THREADS");
    int n = text ? atoi(text) : 2;
    return n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : n;
}

int zpool_threads(void) { return workers; }

/* Sum 0..n-1, on the pool's workers once it runs (on the calling thread with one worker). */
double zpool_sum(long n) {
    pthread_mutex_lock(&lock);
    if (!started) {
        started = 1;
        workers = configured_workers();
        for (int i = 0; workers > 1 && i < workers; i++) {
            pthread_t thread;
            pthread_create(&thread, NULL, worker, (void *)(long)i);
            pthread_detach(thread);
        }
    }
    if (workers == 1) {
        pthread_mutex_unlock(&lock);
        double sum = 0.0;
        for (long i = 0; i < n; i++) sum += (double)i;
        return sum;
    }
    batch_n = n;
    pending = workers;
    generation++;
    pthread_cond_broadcast(&work_ready);
    while (pending > 0) pthread_cond_wait(&work_done, &lock);
    double total = 0.0;
    for (int i = 0; i < workers; i++) total += partial[i];
    pthread_mutex_unlock(&lock);
    return total;
}
