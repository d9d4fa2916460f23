/* LD_PRELOAD shim for bench/bench_state_disk.py: every fsync, fdatasync and msync first sleeps
 * PCIBACK_SLOW_FSYNC_MS milliseconds (0 when unset), as on a busy disk, then does the real call.
 * Every call is counted; the count is written to PCIBACK_FSYNC_COUNT_FILE at exit, if set, so
 * the benchmark can show that the disk was in fact reached. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static atomic_long calls;

static void slow_down(void)
{
    atomic_fetch_add(&calls, 1);
    const char *ms = getenv("PCIBACK_SLOW_FSYNC_MS");
    long delay = ms ? strtol(ms, NULL, 10) : 0;
    if (delay > 0) {
        struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

int fsync(int fd)
{
    slow_down();
    return REAL("fsync", int (*)(int))(fd);
}

int fdatasync(int fd)
{
    slow_down();
    return REAL("fdatasync", int (*)(int))(fd);
}

int msync(void *addr, size_t length, int flags)
{
    slow_down();
    return REAL("msync", int (*)(void *, size_t, int))(addr, length, flags);
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("PCIBACK_FSYNC_COUNT_FILE");
    if (path == NULL)
        return;
    FILE *out = fopen(path, "w");
    if (out != NULL) {
        fprintf(out, "%ld\n", atomic_load(&calls));
        fclose(out);
    }
}
