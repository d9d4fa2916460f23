/* Per-op latency of config reads as a guest sees it: N preads of 4 bytes of a function's
 * sysfs config file (each one config op through pcifront to the backend), each timed. Prints
 * the median, 99th percentile and worst in microseconds, and ops per second. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: cfgbench CONFIG-FILE COUNT\n");
        return 2;
    }
    int count = atoi(argv[2]);
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0 || count < 1 || count > 1000000) {
        perror(argv[1]);
        return 1;
    }
    double *lat = calloc(count, sizeof(double));
    unsigned char buf[4];
    double start = now_us();
    for (int i = 0; i < count; i++) {
        double t = now_us();
        /* dwords of the header and the first capabilities, in turn: what a scan reads */
        if (pread(fd, buf, 4, (i % 64) * 4) != 4) {
            perror("pread");
            return 1;
        }
        lat[i] = now_us() - t;
    }
    double total = now_us() - start;
    qsort(lat, count, sizeof(double), compare);
    printf("ops=%d median_us=%.1f p99_us=%.1f max_us=%.1f ops_per_s=%.0f\n", count,
           lat[count / 2], lat[(count * 99) / 100], lat[count - 1], count / (total / 1e6));
    return 0;
}
