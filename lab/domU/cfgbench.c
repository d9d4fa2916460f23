/* Per-op latency of config reads as a guest sees it: N preads of 4 bytes of a function's
 * sysfs config file (each one config op through pcifront to the backend), each timed. Prints
 * the median, 90th, 95th and 99th percentiles, mean and worst in microseconds, ops per second,
 * and the tail: the ops over SLOW_US, their share of the time, whether they come in runs, and
 * how long they took, by band. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* An op this slow is in the tail: several times a normal round trip under emulation. */
#define SLOW_US 2000.0

/* The tail's bands, in ms from SLOW_US up (the last one open): whether the slow ops cluster
 * at one length (a scheduler's tick or time slice: Xen's credit2 rate limit, dom0's HZ) or
 * spread (contention for the host's cores). */
static const int BAND_MS[] = {2, 3, 4, 5, 6, 8, 12};
#define BANDS (int)(sizeof(BAND_MS) / sizeof(BAND_MS[0]))

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

/* The time this guest's vCPUs were runnable but Xen ran something else (the steal column of
 * /proc/stat), in ms: whether the slow ops are this vCPU waiting for a pCPU inside the L1
 * machine, which neither the backend's own timings nor the host's see. -1 when unreadable. */
static double steal_ms(void)
{
    unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
    FILE *stat = fopen("/proc/stat", "r");
    if (!stat)
        return -1;
    int got = fscanf(stat, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system,
                     &idle, &iowait, &irq, &softirq, &steal);
    fclose(stat);
    return got == 8 ? steal * 1000.0 / sysconf(_SC_CLK_TCK) : -1;
}

/* The machine's speed as this guest's vCPU gets it: a fixed loop of integer work, timed.
 * Under emulation on a shared host it moves by 2x within minutes, and the two backends'
 * benchmarks run minutes apart: a ratio between them means little unless this stayed put. */
static double spin_us(void)
{
    volatile unsigned long sink;
    unsigned long x = 1;
    double t = now_us();
    for (long i = 0; i < 2000000; i++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink = x;
    (void)sink;
    return now_us() - t;
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
    double spin_before = spin_us();
    double *lat = calloc(count, sizeof(double));
    unsigned char buf[4];
    double steal_before = steal_ms();
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
    double steal_after = steal_ms();
    double stolen = steal_before < 0 || steal_after < 0 ? -1 : steal_after - steal_before;
    double spin_after = spin_us();
    /* Where the tail lies, before sorting loses the order: the ops over SLOW_US, the time they
     * took, and how many followed another slow op (a backend that stopped looking for ops
     * between two of them makes runs; a preempted vCPU makes single ones). */
    int slow = 0, slow_after_slow = 0, run = 0, longest_run = 0, band[BANDS] = {0};
    double slow_time = 0, sum = 0;
    for (int i = 0; i < count; i++) {
        sum += lat[i];
        if (lat[i] < SLOW_US) {
            run = 0;
            continue;
        }
        slow++;
        slow_time += lat[i];
        int b = BANDS - 1;
        while (b > 0 && lat[i] < BAND_MS[b] * 1000.0)
            b--;
        band[b]++;
        if (run)
            slow_after_slow++;
        if (++run > longest_run)
            longest_run = run;
    }
    qsort(lat, count, sizeof(double), compare);
    printf("ops=%d median_us=%.1f p99_us=%.1f max_us=%.1f ops_per_s=%.0f mean_us=%.1f "
           "p90_us=%.1f p95_us=%.1f slow_ops=%d slow_share=%.3f slow_after_slow=%d "
           "longest_slow_run=%d spin_before_us=%.0f spin_after_us=%.0f total_ms=%.0f "
           "steal_ms=%.0f\n",
           count, lat[count / 2], lat[(count * 99) / 100], lat[count - 1],
           count / (total / 1e6), sum / count, lat[(count * 90) / 100], lat[(count * 95) / 100],
           slow, slow_time / sum, slow_after_slow, longest_run, spin_before, spin_after,
           total / 1000, stolen);
    /* on a line of its own: check.py reads the figures above as numbers */
    printf("slow ops by ms:");
    for (int b = 0; b < BANDS; b++) {
        if (b + 1 < BANDS)
            printf(" %d-%d:%d", BAND_MS[b], BAND_MS[b + 1], band[b]);
        else
            printf(" %d+:%d", BAND_MS[b], band[b]);
    }
    printf("\n");
    return 0;
}
