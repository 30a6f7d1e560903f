/*
 * The C contract exactly as include/mtmux.h states it (issue 11, points 7 and 8), over real
 * loopback sockets: writes woken part-way, the close reason at the first failure, a listener
 * closed while a bundle's tunnel 0 has not arrived, the peer's stream limit, config ranges
 * and NULL configs, MTMUX_TIMEOUT_MAX_MS's type, more handles of one stream, streams opened
 * just before the peer closed.
 *
 *   test_contract [NAME-SUBSTRING]   run all tests, or those whose name contains the argument
 *
 * Environment: MTMUX_TEST_TIMEOUT=S is the per-test watchdog in seconds (default 120).
 * Prints "N passed, N failed" and exits non-zero if any test failed.
 */
#include "harness.h"
#include "relay.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The timeout constants have the type of the uint64_t fields they bound. */
_Static_assert(sizeof(MTMUX_TIMEOUT_MAX_MS) == sizeof(unsigned long long),
               "MTMUX_TIMEOUT_MAX_MS is an unsigned long long constant");
_Static_assert(MTMUX_TIMEOUT_MAX_MS == 2592000000ull, "30 days in milliseconds");

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- Configuration ----------------------------------------------------------------------- */

static void test_config_validate_null_means_the_defaults(void) {
    mtmux_listener *l = NULL;
    CHECK_OK(mtmux_config_validate(NULL));
    /* As every other function taking a config. */
    CHECK_OK(mtmux_listen("127.0.0.1:0", NULL, &l));
out:
    mtmux_listener_free(l);
}

/* One edge of a documented range: set it on a default config; `ok` says whether the header
 * says the value is in range; `field` is what the message must name when it is not. */
typedef struct {
    const char *field;
    int ok;
} edge;

static const uint8_t KEY[1025];
#define MAXMS MTMUX_TIMEOUT_MAX_MS

static edge set_edge(mtmux_config *c, int i) {
    switch (i) {
    case 0: c->tunnels = 1; return (edge){"tunnels", 1};
    case 1: c->tunnels = 256; return (edge){"tunnels", 1};
    case 2: c->tunnels = 0; return (edge){"tunnels", 0};
    case 3: c->tunnels = 257; return (edge){"tunnels", 0};
    case 4: c->single_port = 1; return (edge){"single_port", 1};
    case 5: c->single_port = 2; return (edge){"single_port", 0};
    case 6: c->keepalive_interval_ms = 1; return (edge){"keepalive_interval", 1};
    case 7: c->keepalive_interval_ms = 0; return (edge){"keepalive_interval", 0};
    case 8: c->keepalive_timeout_ms = c->keepalive_interval_ms + 1; return (edge){"keepalive_timeout", 1};
    case 9: c->keepalive_timeout_ms = c->keepalive_interval_ms; return (edge){"keepalive_timeout", 0};
    case 10: c->keepalive_timeout_ms = MAXMS; return (edge){"keepalive_timeout", 1};
    case 11: c->keepalive_timeout_ms = MAXMS + 1; return (edge){"keepalive_timeout", 0};
    case 12: c->reorder_timeout_ms = 1; return (edge){"reorder_timeout", 1};
    case 13: c->reorder_timeout_ms = 0; return (edge){"reorder_timeout", 0};
    case 14: c->reorder_timeout_ms = MAXMS; return (edge){"reorder_timeout", 1};
    case 15: c->reorder_timeout_ms = MAXMS + 1; return (edge){"reorder_timeout", 0};
    case 16: c->handshake_timeout_ms = 1; return (edge){"handshake_timeout", 1};
    case 17: c->handshake_timeout_ms = 0; return (edge){"handshake_timeout", 0};
    case 18: c->handshake_timeout_ms = MAXMS; return (edge){"handshake_timeout", 1};
    case 19: c->handshake_timeout_ms = MAXMS + 1; return (edge){"handshake_timeout", 0};
    case 20: c->max_frame_size = 1024; return (edge){"max_frame_size", 1};
    case 21: c->max_frame_size = 1023; return (edge){"max_frame_size", 0};
    case 22:
        c->max_frame_size = 16777216;
        c->stream_window = c->max_stream_window = 16777216 + 64;
        return (edge){"max_frame_size", 1};
    case 23:
        c->max_frame_size = 16777217;
        c->stream_window = c->max_stream_window = 16777217 + 64;
        return (edge){"max_frame_size", 0};
    case 24: c->stream_window = c->max_frame_size + 64; return (edge){"stream_window", 1};
    case 25: c->stream_window = c->max_frame_size + 63; return (edge){"stream_window", 0};
    case 26: c->max_stream_window = c->stream_window; return (edge){"max_stream_window", 1};
    case 27: c->max_stream_window = c->stream_window - 1; return (edge){"max_stream_window", 0};
    case 28: c->max_stream_window = c->session_window; return (edge){"max_stream_window", 1};
    /* Above session_window: reported as the session window being too small. */
    case 29: c->max_stream_window = c->session_window + 1; return (edge){"session_window", 0};
    case 30: c->session_window = 4294967295ull; return (edge){"session_window", 1};
    case 31: c->session_window = 4294967296ull; return (edge){"session_window", 0};
    case 32: c->max_streams = 1; return (edge){"max_streams", 1};
    case 33: c->max_streams = 0; return (edge){"max_streams", 0};
    case 34: c->max_streams = 16777216; return (edge){"max_streams", 1};
    case 35: c->max_streams = 16777217; return (edge){"max_streams", 0};
    case 36: c->accept_backlog = 1; return (edge){"accept_backlog", 1};
    case 37: c->accept_backlog = 0; return (edge){"accept_backlog", 0};
    case 38: c->accept_backlog = MTMUX_BACKLOG_MAX; return (edge){"accept_backlog", 1};
    case 39: c->accept_backlog = MTMUX_BACKLOG_MAX + 1; return (edge){"accept_backlog", 0};
    case 40: c->max_pending_handshakes = 1; return (edge){"max_pending_handshakes", 1};
    case 41: c->max_pending_handshakes = 0; return (edge){"max_pending_handshakes", 0};
    case 42: c->max_pending_handshakes = MTMUX_BACKLOG_MAX; return (edge){"max_pending_handshakes", 1};
    case 43: c->max_pending_handshakes = MTMUX_BACKLOG_MAX + 1; return (edge){"max_pending_handshakes", 0};
    case 44: c->rejoin = 0; return (edge){"rejoin", 1};
    case 45: c->rejoin = 2; return (edge){"rejoin", 0};
    case 46: c->stale_timeout_ms = MTMUX_STALE_TIMEOUT_MIN_MS; return (edge){"stale_timeout", 1};
    case 47: c->stale_timeout_ms = MTMUX_STALE_TIMEOUT_MIN_MS - 1; return (edge){"stale_timeout", 0};
    case 48: c->stale_timeout_ms = MAXMS; return (edge){"stale_timeout", 1};
    case 49: c->stale_timeout_ms = MAXMS + 1; return (edge){"stale_timeout", 0};
    case 50: c->resume_timeout_ms = 0; return (edge){"resume_timeout", 1};
    case 51: c->resume_timeout_ms = MAXMS; return (edge){"resume_timeout", 1};
    case 52: c->resume_timeout_ms = MAXMS + 1; return (edge){"resume_timeout", 0};
    case 53: c->rejoin_backoff_max_ms = MTMUX_REJOIN_BACKOFF_MIN_MS; return (edge){"rejoin_backoff_max", 1};
    case 54: c->rejoin_backoff_max_ms = MTMUX_REJOIN_BACKOFF_MIN_MS - 1; return (edge){"rejoin_backoff_max", 0};
    case 55: c->rejoin_backoff_max_ms = MAXMS; return (edge){"rejoin_backoff_max", 1};
    case 56: c->rejoin_backoff_max_ms = MAXMS + 1; return (edge){"rejoin_backoff_max", 0};
    case 57: c->key = KEY; c->key_len = MTMUX_KEY_MIN_LEN; return (edge){"key", 1};
    case 58: c->key = KEY; c->key_len = MTMUX_KEY_MIN_LEN - 1; return (edge){"key", 0};
    case 59: c->key = KEY; c->key_len = MTMUX_KEY_MAX_LEN; return (edge){"key", 1};
    case 60: c->key = KEY; c->key_len = MTMUX_KEY_MAX_LEN + 1; return (edge){"key", 0};
    case 61: c->key = NULL; c->key_len = 16; return (edge){"key", 0};
    case 62: c->max_handshakes_per_source = 0; return (edge){"max_handshakes_per_source", 1};
    case 63: c->max_handshakes_per_source = 1; return (edge){"max_handshakes_per_source", 1};
    case 64: c->max_handshakes_per_source = MTMUX_BACKLOG_MAX; return (edge){"max_handshakes_per_source", 1};
    case 65: c->max_handshakes_per_source = MTMUX_BACKLOG_MAX + 1; return (edge){"max_handshakes_per_source", 0};
    default: return (edge){NULL, 0};
    }
}

static void test_config_ranges_are_the_ones_the_header_states(void) {
    mtmux_config def = test_cfg(8);
    for (int i = 0;; i++) {
        mtmux_config c = def;
        edge e = set_edge(&c, i);
        if (!e.field)
            break;
        int32_t got = mtmux_config_validate(&c);
        if (!check_eq(got, e.ok ? MTMUX_OK : MTMUX_ERR_INVALID_CONFIG, e.field, __FILE__, __LINE__)) {
            fprintf(stderr, "      (edge %d)\n", i);
            continue;
        }
        if (!e.ok && !check(strstr(mtmux_last_error(), e.field) != NULL, e.field, __FILE__, __LINE__))
            fprintf(stderr, "      (edge %d: \"%s\")\n", i, mtmux_last_error());
    }
}

/* ---- A write woken part-way -------------------------------------------------------------- */

typedef enum { WAKE_CLOSE_WRITE, WAKE_SHUT_WRITE, WAKE_CLOSE, WAKE_RESET, WAKE_SESSION_CLOSE } wake_kind;

#define BIG (8u << 20)

typedef struct {
    const mtmux_stream *stream;
    int all; /* mtmux_stream_write_all instead of mtmux_stream_write */
    unsigned char *buf;
    latch started;
    long long result;
} big_write;

static void *run_big_write(void *arg) {
    big_write *w = arg;
    latch_set(&w->started);
    w->result = w->all ? mtmux_stream_write_all(w->stream, w->buf, BIG)
                       : mtmux_stream_write(w->stream, w->buf, BIG);
    return NULL;
}

static uint64_t bytes_sent(const mtmux_session *s) {
    mtmux_tunnel_stats t[4];
    size_t n = 0;
    uint64_t sum = 0;
    if (mtmux_session_tunnel_stats(s, t, 4, &n) != MTMUX_OK)
        return 0;
    for (size_t i = 0; i < n && i < 4; i++)
        sum += t[i].bytes_sent;
    return sum;
}

/* One 8 MiB write (or write_all) on a stream the peer does not read, blocked once the small
 * stream window is used, woken by `wake` from this thread. Returns what it returned; the
 * next write's result goes to *next. */
static long long woken_write(wake_kind wake, int all, long long *next) {
    pair p;
    mtmux_stream *s = NULL, *peer = NULL;
    mtmux_config cfg = test_cfg(2);
    cfg.max_frame_size = 16384;
    cfg.stream_window = cfg.max_stream_window = 4 * (16384 + 64);
    big_write w = {0};
    pthread_t t;
    int started = 0;
    long long result = 1;
    memset(&p, 0, sizeof p);
    w.buf = calloc(1, BIG);
    latch_init(&w.started);
    if (!w.buf || !pair_open(&p, &cfg)) {
        CHECK(!"set-up");
    }
    CHECK_OK(mtmux_session_open_stream(p.client, &s));
    /* Bounds the write if the wake-up is lost: a failed check, not a hang. */
    CHECK_OK(mtmux_stream_set_write_timeout(s, 30000));
    w.stream = s;
    w.all = all;
    CHECK(pthread_create(&t, NULL, run_big_write, &w) == 0);
    started = 1;
    CHECK(latch_wait(&w.started, 10000));
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &peer));
    /* The writer has used the stream's window (4 frames) and waits for credit. */
    double deadline = now_ms() + 10000;
    while (bytes_sent(p.client) < 4 * 16384) {
        CHECK(now_ms() < deadline);
        pause_ms(5);
    }
    double t0 = now_ms();
    switch (wake) {
    case WAKE_CLOSE_WRITE: CHECK_OK(mtmux_stream_close_write(s)); break;
    case WAKE_SHUT_WRITE: CHECK_OK(mtmux_stream_shutdown(s, MTMUX_SHUT_WRITE)); break;
    case WAKE_CLOSE: CHECK_OK(mtmux_stream_close(s)); break;
    case WAKE_RESET: CHECK_OK(mtmux_stream_reset(s)); break;
    case WAKE_SESSION_CLOSE: CHECK_OK(mtmux_session_close(p.client)); break;
    }
    pthread_join(t, NULL);
    started = 0;
    CHECK(now_ms() - t0 < 20000);
    result = w.result;
    *next = mtmux_stream_write(s, "x", 1);
out:
    if (started) {
        mtmux_stream_reset(s);
        pthread_join(t, NULL);
    }
    latch_destroy(&w.started);
    free(w.buf);
    mtmux_stream_free(s);
    mtmux_stream_free(peer);
    pair_free(&p);
    return result;
}

static void test_a_woken_write_returns_what_it_accepted_then_the_code(void) {
    static const struct {
        wake_kind wake;
        const char *what;
        int32_t code;
    } cases[] = {
        {WAKE_CLOSE_WRITE, "close_write", MTMUX_ERR_WRITE_CLOSED},
        {WAKE_SHUT_WRITE, "shutdown(MTMUX_SHUT_WRITE)", MTMUX_ERR_WRITE_CLOSED},
        {WAKE_CLOSE, "close", MTMUX_ERR_WRITE_CLOSED},
        {WAKE_RESET, "reset", MTMUX_ERR_STREAM_RESET},
        {WAKE_SESSION_CLOSE, "mtmux_session_close", MTMUX_ERR_SESSION_CLOSED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long long next = 1;
        /* mtmux_stream_write: the count it had accepted (as send(2)), then the code. */
        long long n = woken_write(cases[i].wake, 0, &next);
        if (!check(n > 0 && n < BIG, cases[i].what, __FILE__, __LINE__))
            fprintf(stderr, "      (woken by %s: returned %lld)\n", cases[i].what, n);
        check_eq(next, cases[i].code, cases[i].what, __FILE__, __LINE__);
        /* mtmux_stream_write_all: the code. */
        n = woken_write(cases[i].wake, 1, &next);
        check_eq(n, cases[i].code, cases[i].what, __FILE__, __LINE__);
        check_eq(next, cases[i].code, cases[i].what, __FILE__, __LINE__);
    }
}

/* ---- The close reason at the first failure ----------------------------------------------- */

typedef struct {
    const mtmux_session *server;
    int32_t open, accept;
    mtmux_close_reason at_once, after_accept;
    int saw_close;
} watcher;

static void *watch_peer_close(void *arg) {
    watcher *w = arg;
    mtmux_stream *s = NULL;
    int closed = 0;
    double deadline = now_ms() + 10000;
    /* The first moment this side knows: the peer's GOAWAY. */
    while (!closed && now_ms() < deadline) {
        if (mtmux_session_is_closed(w->server, &closed) != MTMUX_OK)
            break;
        sched_yield();
    }
    w->saw_close = closed;
    w->open = mtmux_session_open_stream(w->server, &s);
    mtmux_session_close_reason(w->server, &w->at_once);
    w->accept = mtmux_session_accept_stream_timeout(w->server, 10000, &s);
    mtmux_session_close_reason(w->server, &w->after_accept);
    mtmux_stream_free(s);
    return NULL;
}

/* Regression: right after a call failed with MTMUX_ERR_SESSION_CLOSED because the peer
 * closed, the reason still said MTMUX_CLOSE_NONE for ~50 ms (9 runs in 10). */
static void test_the_close_reason_is_known_when_a_call_fails(void) {
    mtmux_config cfg = test_cfg(1);
    for (int run = 0; run < 20; run++) {
        pair p;
        watcher w = {0};
        pthread_t t;
        if (!pair_open(&p, &cfg))
            return;
        w.server = p.server;
        w.at_once = w.after_accept = (mtmux_close_reason)-1;
        int started = pthread_create(&t, NULL, watch_peer_close, &w) == 0;
        check(started, "pthread_create", __FILE__, __LINE__);
        check_eq(mtmux_session_close(p.client), MTMUX_OK, "close", __FILE__, __LINE__);
        if (started)
            pthread_join(t, NULL);
        mtmux_close_reason last = (mtmux_close_reason)-1;
        mtmux_session_close(p.server); /* does not change it */
        mtmux_session_close_reason(p.server, &last);
        int ok = check(w.saw_close, "the peer's close showed", __FILE__, __LINE__) &&
                 check_eq(w.open, MTMUX_ERR_SESSION_CLOSED, "open", __FILE__, __LINE__) &&
                 check_eq(w.at_once, MTMUX_CLOSE_PEER, "reason right after", __FILE__, __LINE__) &&
                 check_eq(w.accept, MTMUX_ERR_SESSION_CLOSED, "accept", __FILE__, __LINE__) &&
                 check_eq(w.after_accept, MTMUX_CLOSE_PEER, "reason after accept", __FILE__, __LINE__) &&
                 check_eq(last, MTMUX_CLOSE_PEER, "reason at the end", __FILE__, __LINE__);
        pair_free(&p);
        if (!ok) {
            fprintf(stderr, "      (run %d)\n", run);
            return;
        }
    }
}

/* ---- A listener closed while a bundle is half-arrived ------------------------------------ */

typedef struct {
    char addr[MTMUX_ADDR_STRLEN];
    mtmux_config cfg;
    int32_t result;
    char error[256];
    double elapsed_ms;
} dialer;

static void *run_dial(void *arg) {
    dialer *d = arg;
    mtmux_session *s = NULL;
    double t0 = now_ms();
    d->result = mtmux_dial(d->addr, &d->cfg, &s);
    d->elapsed_ms = now_ms() - t0;
    snprintf(d->error, sizeof d->error, "%s", mtmux_last_error());
    mtmux_session_free(s);
    return NULL;
}

/* Regression: mtmux_listener_close did not refuse a handshake whose tunnel 0 had not
 * arrived: the dial waited for its handshake timeout (the header says handshakes in
 * progress are refused). */
static void test_listener_close_refuses_a_dial_whose_tunnel_0_never_arrived(void) {
    mtmux_listener *l = NULL;
    relay r;
    dialer d = {0};
    pthread_t t;
    int started = 0;
    char addr[MTMUX_ADDR_STRLEN];
    relay_init(&r);
    d.cfg = test_cfg(2);
    d.cfg.handshake_timeout_ms = 30000;
    CHECK_OK(mtmux_listen("127.0.0.1:0", &d.cfg, &l));
    CHECK_OK(mtmux_listener_local_addr(l, addr, sizeof addr));
    /* Tunnel 0's relay port never answers; tunnel 1 reaches the listener. */
    r.silent[0] = 1;
    CHECK(relay_start(&r, 2, atoi(strrchr(addr, ':') + 1)));
    snprintf(d.addr, sizeof d.addr, "127.0.0.1:%d", r.base);
    CHECK(pthread_create(&t, NULL, run_dial, &d) == 0);
    started = 1;
    double deadline = now_ms() + 10000;
    while (relay_accepted(&r, 1) < 1) {
        CHECK(now_ms() < deadline);
        pause_ms(5);
    }
    CHECK_OK(mtmux_listener_close(l));
    pthread_join(t, NULL);
    started = 0;
    CHECK_EQ(d.result, MTMUX_ERR_REFUSED);
    if (!check(strstr(d.error, "shutting down") != NULL, "the listener's reason", __FILE__, __LINE__))
        fprintf(stderr, "      (dial: \"%s\")\n", d.error);
    CHECK(d.elapsed_ms < 10000);
out:
    if (started) {
        mtmux_listener_close(l);
        pthread_join(t, NULL);
    }
    mtmux_listener_free(l);
    relay_stop(&r);
}

/* ---- Streams ----------------------------------------------------------------------------- */

/* Regression: a stream the peer turned away at its limit failed with MTMUX_ERR_STREAM_RESET,
 * although the header promised MTMUX_ERR_TOO_MANY_STREAMS. */
static void test_a_stream_beyond_the_peer_limit_fails_with_too_many_streams(void) {
    pair p;
    mtmux_stream *s[2] = {0}, *accepted = NULL, *more = NULL;
    mtmux_config server = test_cfg(2), client = test_cfg(2);
    server.max_streams = 1;
    char buf[16];
    if (!pair_open_with(&p, &server, &client))
        return;
    for (int i = 0; i < 2; i++) {
        CHECK_OK(mtmux_session_open_stream(p.client, &s[i]));
        CHECK_OK(mtmux_stream_set_read_timeout(s[i], 10000));
        CHECK_OK(mtmux_stream_write_all(s[i], "hi", 2));
    }
    /* The server takes one (whichever came first) and answers it. */
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &accepted));
    CHECK_OK(mtmux_stream_write_all(accepted, "ok", 2));
    CHECK_OK(mtmux_stream_close_write(accepted));
    CHECK_EQ(mtmux_session_accept_stream_timeout(p.server, 200, &more), MTMUX_ERR_TIMED_OUT);
    int answered = 0, refused = 0;
    for (int i = 0; i < 2; i++) {
        ptrdiff_t n = read_to_end(s[i], buf, sizeof buf);
        if (n == 2) {
            answered++;
        } else {
            CHECK_EQ(n, MTMUX_ERR_TOO_MANY_STREAMS);
            CHECK(strstr(mtmux_last_error(), "too many streams") != NULL);
            CHECK_EQ(mtmux_stream_write(s[i], "x", 1), MTMUX_ERR_TOO_MANY_STREAMS);
            refused++;
        }
    }
    CHECK_EQ(answered, 1);
    CHECK_EQ(refused, 1);
out:
    mtmux_stream_free(s[0]);
    mtmux_stream_free(s[1]);
    mtmux_stream_free(accepted);
    mtmux_stream_free(more);
    pair_free(&p);
}

static void test_more_handles_of_one_stream(void) {
    pair p;
    mtmux_stream *s = NULL, *c = NULL, *peer = NULL, *none = NULL;
    mtmux_config cfg = test_cfg(2);
    char buf[16];
    uint32_t a = 0, b = 1;
    uint64_t ms = 0;
    if (!pair_open(&p, &cfg))
        return;
    CHECK_OK(mtmux_session_open_stream(p.client, &s));
    CHECK_EQ(mtmux_stream_try_clone(NULL, &c), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_try_clone(s, NULL), MTMUX_ERR_NULL);
    CHECK_OK(mtmux_stream_try_clone(s, &c));
    CHECK_OK(mtmux_stream_id(s, &a));
    CHECK_OK(mtmux_stream_id(c, &b));
    CHECK_EQ(a, b);
    /* Timeouts belong to the stream. */
    CHECK_OK(mtmux_stream_set_read_timeout(s, 10000));
    CHECK_OK(mtmux_stream_read_timeout(c, &ms));
    CHECK_EQ(ms, 10000);
    /* Freeing one handle leaves the stream open for the other. */
    CHECK_OK(mtmux_stream_write_all(s, "x", 1));
    mtmux_stream_free(s);
    s = NULL;
    CHECK_OK(mtmux_stream_write_all(c, "y", 1));
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &peer));
    CHECK_OK(mtmux_stream_set_read_timeout(peer, 10000));
    /* Freeing the last handle closes it: the peer reads the end after the data. */
    mtmux_stream_free(c);
    c = NULL;
    CHECK_EQ(read_to_end(peer, buf, sizeof buf), 2);
    CHECK(memcmp(buf, "xy", 2) == 0);
    /* Closing through one handle closes the stream for all. */
    CHECK_OK(mtmux_session_open_stream(p.client, &s));
    CHECK_OK(mtmux_stream_try_clone(s, &c));
    CHECK_OK(mtmux_stream_close(s));
    CHECK_EQ(mtmux_stream_write(c, "z", 1), MTMUX_ERR_WRITE_CLOSED);
    CHECK_EQ(mtmux_stream_read(c, buf, sizeof buf), 0);
    CHECK(none == NULL);
out:
    mtmux_stream_free(s);
    mtmux_stream_free(c);
    mtmux_stream_free(peer);
    pair_free(&p);
}

/* Regression: the peer's GOAWAY could overtake the first frames of a stream it had opened
 * and written just before closing, and the stream was refused: data lost in a graceful
 * close. */
static void test_streams_opened_before_the_peer_closed_are_still_accepted(void) {
    pair p;
    mtmux_stream *s[3] = {0}, *got = NULL, *late = NULL;
    mtmux_config cfg = test_cfg(4);
    char buf[16];
    if (!pair_open(&p, &cfg))
        return;
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mtmux_session_open_stream(p.client, &s[i]));
        CHECK_OK(mtmux_stream_write_all(s[i], "data", 4));
        CHECK_OK(mtmux_stream_close_write(s[i]));
    }
    CHECK_OK(mtmux_session_close(p.client));
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &got));
        CHECK_OK(mtmux_stream_set_read_timeout(got, 10000));
        CHECK_EQ(read_to_end(got, buf, sizeof buf), 4);
        CHECK(memcmp(buf, "data", 4) == 0);
        mtmux_stream_free(got);
        got = NULL;
    }
    CHECK_EQ(mtmux_session_accept_stream_timeout(p.server, 10000, &late), MTMUX_ERR_SESSION_CLOSED);
    mtmux_close_reason reason = MTMUX_CLOSE_NONE;
    CHECK_OK(mtmux_session_close_reason(p.server, &reason));
    CHECK_EQ(reason, MTMUX_CLOSE_PEER);
out:
    for (int i = 0; i < 3; i++)
        mtmux_stream_free(s[i]);
    mtmux_stream_free(got);
    mtmux_stream_free(late);
    pair_free(&p);
}

int main(int argc, char **argv) {
    static const test_case tests[] = {
        {"config_validate_null_means_the_defaults", test_config_validate_null_means_the_defaults},
        {"config_ranges_are_the_ones_the_header_states",
         test_config_ranges_are_the_ones_the_header_states},
        {"a_woken_write_returns_what_it_accepted_then_the_code",
         test_a_woken_write_returns_what_it_accepted_then_the_code},
        {"the_close_reason_is_known_when_a_call_fails", test_the_close_reason_is_known_when_a_call_fails},
        {"listener_close_refuses_a_dial_whose_tunnel_0_never_arrived",
         test_listener_close_refuses_a_dial_whose_tunnel_0_never_arrived},
        {"a_stream_beyond_the_peer_limit_fails_with_too_many_streams",
         test_a_stream_beyond_the_peer_limit_fails_with_too_many_streams},
        {"more_handles_of_one_stream", test_more_handles_of_one_stream},
        {"streams_opened_before_the_peer_closed_are_still_accepted",
         test_streams_opened_before_the_peer_closed_are_still_accepted},
    };
    return run_tests("C contract tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
