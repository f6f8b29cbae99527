/* The one workload every init runs as its child in bench/init/run.sh (tini, dumb-init and
 * aim-engine, each PID 1 of a fresh PID namespace). Extra arguments are ignored, so
 * aim-engine can run it as its "engine" (AIM_VLLM_COMMAND) with the usual serve argv.
 *
 * The variables start with FAKE_ because aim-engine passes only known prefixes to its engine.
 *
 * FAKE_INITLOAD_MODE:
 *   idle              sleep until killed (default action for every signal)
 *   zombies           make FAKE_INITLOAD_N orphans that exit at once (double fork; the middle
 *                     process is reaped here), then time until no zombie is left in the
 *                     namespace; writes "<created_us> <reaped_us>" to FAKE_INITLOAD_OUT, then idles
 *   exit              exit with FAKE_INITLOAD_CODE at once
 *   term-exit         on SIGTERM exit with FAKE_INITLOAD_CODE
 *   term-signal       on SIGTERM die by signal FAKE_INITLOAD_SIG
 *   ready             write FAKE_INITLOAD_OUT (a stamp) at start, then idle
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000LL + t.tv_nsec / 1000;
}

static int code;
static int sig;

static void on_term_exit(int s) { (void)s; _exit(code); }
static void on_term_signal(int s) {
    (void)s;
    signal(sig, SIG_DFL);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    raise(sig);
    _exit(200); /* a signal whose default action is to ignore it */
}

/* Zombies in this PID namespace (needs --mount-proc). */
static int count_zombies(void) {
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *e;
    int n = 0;
    char path[300], buf[256];
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t r = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[r] = 0;
        char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'Z') n++;
    }
    closedir(d);
    return n;
}

/* FAKE_INITLOAD_READY names a file created once the signal handlers are in place. */
static void ready_stamp(void) {
    const char *r = getenv("FAKE_INITLOAD_READY");
    if (r) {
        FILE *f = fopen(r, "w");
        if (f) fclose(f);
    }
}

static void idle(void) {
    ready_stamp();
    for (;;) pause();
}

int main(void) {
    const char *mode = getenv("FAKE_INITLOAD_MODE");
    const char *out = getenv("FAKE_INITLOAD_OUT");
    if (!mode) mode = "idle";
    if (!strcmp(mode, "exit")) return atoi(getenv("FAKE_INITLOAD_CODE") ? getenv("FAKE_INITLOAD_CODE") : "0");
    if (!strcmp(mode, "term-exit")) {
        code = atoi(getenv("FAKE_INITLOAD_CODE") ? getenv("FAKE_INITLOAD_CODE") : "0");
        signal(SIGTERM, on_term_exit);
        idle();
    }
    if (!strcmp(mode, "term-signal")) {
        sig = atoi(getenv("FAKE_INITLOAD_SIG") ? getenv("FAKE_INITLOAD_SIG") : "15");
        signal(SIGTERM, on_term_signal);
        idle();
    }
    if (!strcmp(mode, "ready")) {
        if (out) {
            FILE *f = fopen(out, "w");
            if (f) { fprintf(f, "%lld\n", now_us()); fclose(f); }
        }
        idle();
    }
    if (!strcmp(mode, "zombies")) {
        int n = atoi(getenv("FAKE_INITLOAD_N") ? getenv("FAKE_INITLOAD_N") : "10000");
        long long t0 = now_us();
        for (int i = 0; i < n; i++) {
            pid_t mid = fork();
            if (mid < 0) { perror("fork"); return 1; }
            if (mid == 0) {
                pid_t g = fork();
                _exit(g < 0 ? 1 : 0); /* the grandchild exits at once too */
            }
            waitpid(mid, NULL, 0);
        }
        long long t1 = now_us();
        int z;
        long long deadline = t1 + 60LL * 1000000LL;
        while ((z = count_zombies()) > 0 && now_us() < deadline) usleep(200);
        long long t2 = now_us();
        if (out) {
            FILE *f = fopen(out, "w");
            if (f) { fprintf(f, "%lld %lld %d\n", t1 - t0, t2 - t1, z); fclose(f); }
        }
        idle();
    }
    idle();
    return 0;
}
