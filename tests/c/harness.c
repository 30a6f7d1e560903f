/* The C test harness: see harness.h. */
#include "harness.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- Checks ------------------------------------------------------------------------------ */

static atomic_int g_failures;

int check(int ok, const char *what, const char *file, int line) {
    if (!ok) {
        atomic_fetch_add(&g_failures, 1);
        fprintf(stderr, "    FAILED %s:%d: %s\n      (last error on this thread: \"%s\")\n", file,
                line, what, mtmux_last_error());
    }
    return ok;
}

int check_eq(long long got, long long want, const char *what, const char *file, int line) {
    if (got != want) {
        atomic_fetch_add(&g_failures, 1);
        fprintf(stderr,
                "    FAILED %s:%d: %s is %lld (%s), expected %lld (%s)\n"
                "      (last error on this thread: \"%s\")\n",
                file, line, what, got, mtmux_strerror((int32_t)got), want,
                mtmux_strerror((int32_t)want), mtmux_last_error());
    }
    return got == want;
}


/* ---- Helpers ----------------------------------------------------------------------------- */

double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* Deterministic bytes: corruption, loss or reordering shows up as a mismatch. */
void fill_pattern(unsigned char *buf, size_t len, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull | 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
}

void latch_init(latch *l) {
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->set = 0;
}

void latch_destroy(latch *l) {
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
}

void latch_set(latch *l) {
    pthread_mutex_lock(&l->mu);
    l->set = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

/* Returns 1 if set within `ms`. */
int latch_wait(latch *l, int ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&l->mu);
    int rc = 0;
    while (!l->set && rc == 0)
        rc = pthread_cond_timedwait(&l->cv, &l->mu, &deadline);
    int set = l->set;
    pthread_mutex_unlock(&l->mu);
    return set;
}

uint64_t env_u64(const char *name, uint64_t fallback) {
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    return *end == '\0' ? (uint64_t)n : fallback;
}

/* A config for tests: defaults with `tunnels`, handshakes bounded. */
mtmux_config test_cfg(uint32_t tunnels) {
    mtmux_config cfg;
    mtmux_config_init(&cfg);
    cfg.tunnels = tunnels;
    cfg.handshake_timeout_ms = 10000;
    return cfg;
}

void pair_free(pair *p) {
    /* Closing the client first lets the server see a graceful end from its peer. */
    if (p->client)
        mtmux_session_close(p->client);
    if (p->server)
        mtmux_session_close(p->server);
    mtmux_session_free(p->client);
    mtmux_session_free(p->server);
    mtmux_listener_free(p->listener);
    memset(p, 0, sizeof *p);
}

/* Returns 1 on success; on failure the checks have said why and `p` holds nothing. */
int pair_open_with(pair *p, const mtmux_config *server_cfg, const mtmux_config *client_cfg) {
    memset(p, 0, sizeof *p);
    CHECK_OK(mtmux_listen("127.0.0.1:0", server_cfg, &p->listener));
    CHECK_OK(mtmux_listener_local_addr(p->listener, p->addr, sizeof p->addr));
    /* The listener completes handshakes by itself: the dial returns before the accept. */
    CHECK_OK(mtmux_dial(p->addr, client_cfg, &p->client));
    CHECK_OK(mtmux_listener_accept_timeout(p->listener, 10000, &p->server));
    return 1;
out:
    pair_free(p);
    return 0;
}

int pair_open(pair *p, const mtmux_config *cfg) {
    return pair_open_with(p, cfg, cfg);
}

/* Read until end of stream into buf (at most cap bytes); returns the count or a negative code. */
ptrdiff_t read_to_end(const mtmux_stream *s, void *buf, size_t cap) {
    size_t got = 0;
    for (;;) {
        if (got == cap) {
            char extra;
            ptrdiff_t n = mtmux_stream_read(s, &extra, 1);
            return n == 0 ? (ptrdiff_t)got : (n < 0 ? n : MTMUX_ERR_BUFFER_TOO_SMALL);
        }
        ptrdiff_t n = mtmux_stream_read(s, (char *)buf + got, cap - got);
        if (n < 0)
            return n;
        if (n == 0)
            return (ptrdiff_t)got;
        got += (size_t)n;
    }
}

/* ---- Runner ------------------------------------------------------------------------------ */

static const char *volatile g_current = "";

static void on_watchdog(int sig) {
    (void)sig;
    static const char msg[] = "\nwatchdog: a test did not finish in time: ";
    ssize_t r = write(2, msg, sizeof msg - 1);
    r = write(2, (const char *)g_current, strlen((const char *)g_current));
    r = write(2, "\n", 1);
    (void)r;
    _exit(3);
}

int run_tests(const char *title, const test_case *tests, size_t n, int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    const char *limit_env = getenv("MTMUX_TEST_TIMEOUT");
    unsigned limit = limit_env ? (unsigned)atoi(limit_env) : 120;
    signal(SIGALRM, on_watchdog);

    printf("mtmux %s %s\n", mtmux_version(), title);
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (filter && !strstr(tests[i].name, filter))
            continue;
        g_current = tests[i].name;
        int before = atomic_load(&g_failures);
        double t0 = now_ms();
        alarm(limit);
        tests[i].fn();
        alarm(0);
        int ok = atomic_load(&g_failures) == before;
        printf("%s %s (%.0f ms)\n", ok ? "ok  " : "FAIL", tests[i].name, now_ms() - t0);
        fflush(stdout);
        if (ok)
            passed++;
        else
            failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
