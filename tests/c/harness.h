/*
 * The C test harness shared by the C tests (tests/c/test_*.c): checks that count failures,
 * bounded waits, a connected session pair over loopback, and the runner.
 *
 * Every test function has an `out:` label that releases what it holds; CHECK* jump there.
 * Environment: MTMUX_TEST_TIMEOUT=S is the per-test watchdog in seconds (default 120). Every
 * blocking call is bounded by a timeout, so a bug fails a check instead of hanging; the
 * watchdog is the last resort. The runner prints "N passed, N failed" and returns non-zero
 * if any test failed.
 */
#ifndef MTMUX_TEST_HARNESS_H
#define MTMUX_TEST_HARNESS_H

#include "mtmux.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Checks ------------------------------------------------------------------------------ */

/* Each returns `ok` (or whether got == want); a failure is counted and printed. */
int check(int ok, const char *what, const char *file, int line);
int check_eq(long long got, long long want, const char *what, const char *file, int line);

#define CHECK(c)                                                                                 \
    do {                                                                                         \
        if (!check(!!(c), #c, __FILE__, __LINE__))                                               \
            goto out;                                                                            \
    } while (0)
#define CHECK_EQ(a, b)                                                                           \
    do {                                                                                         \
        if (!check_eq((long long)(a), (long long)(b), #a, __FILE__, __LINE__))                   \
            goto out;                                                                            \
    } while (0)
#define CHECK_OK(call) CHECK_EQ(call, MTMUX_OK)

/* ---- Helpers ----------------------------------------------------------------------------- */

double now_ms(void);

/* Deterministic bytes: corruption, loss or reordering shows up as a mismatch. */
void fill_pattern(unsigned char *buf, size_t len, uint64_t seed);

/* An unsigned number from the environment, or `fallback` when unset or not a number. */
uint64_t env_u64(const char *name, uint64_t fallback);

/* A one-shot event another thread waits for, with a bounded wait. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int set;
} latch;

void latch_init(latch *l);
void latch_destroy(latch *l);
void latch_set(latch *l);
/* Returns 1 if set within `ms`. */
int latch_wait(latch *l, int ms);

/* A config for tests: defaults with `tunnels`, handshakes bounded. */
mtmux_config test_cfg(uint32_t tunnels);

/* A listener on free loopback ports and a connected client/server session pair. */
typedef struct {
    mtmux_listener *listener;
    mtmux_session *client;
    mtmux_session *server;
    char addr[MTMUX_ADDR_STRLEN];
} pair;

void pair_free(pair *p);
/* Returns 1 on success; on failure the checks have said why and `p` holds nothing. */
int pair_open_with(pair *p, const mtmux_config *server_cfg, const mtmux_config *client_cfg);
int pair_open(pair *p, const mtmux_config *cfg);

/* Read until end of stream into buf (at most cap bytes); returns the count or a negative code. */
ptrdiff_t read_to_end(const mtmux_stream *s, void *buf, size_t cap);

/* ---- Runner ------------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

/* Runs the tests whose name contains argv[1] (all without it); returns the exit status. */
int run_tests(const char *title, const test_case *tests, size_t n, int argc, char **argv);

#endif
