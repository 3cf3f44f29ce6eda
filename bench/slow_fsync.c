/* A slower disk for benchmarks: LD_PRELOAD this to add SLOW_FSYNC_US microseconds to every
 * fsync and fdatasync of the process (SQLite's own and rotator's), as a network volume's flush
 * takes ~0.5-2 ms where a local SSD takes ~0.2 ms. Built by --fsync-delay-ms of bench/daemon_scale.py and
 * bench/rotation_io.py (daemon_scale.slow_fsync_library). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static long delay_us(void) {
    const char *text = getenv("SLOW_FSYNC_US");
    return text ? atol(text) : 0;
}

static void pause_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (us > 0 && nanosleep(&ts, &ts) != 0) {
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    pause_us(delay_us());
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    pause_us(delay_us());
    return rc;
}
