/*
 * Tests of the mtmux C ABI over real loopback sockets (the failover parts are in
 * test_failover.c; the harness, in harness.c, is shared).
 *
 *   test_capi [NAME-SUBSTRING]      run all tests, or those whose name contains the argument
 *
 * Environment: MTMUX_TEST_TIMEOUT=S is the per-test watchdog in seconds (default 120). Every
 * blocking call is bounded by a timeout, so a bug fails a check instead of hanging; the
 * watchdog is the last resort.
 * Prints "N passed, N failed" and exits non-zero if any test failed.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- Tests ------------------------------------------------------------------------------- */

static void test_version_and_strerror(void) {
    const char *v = mtmux_version();
    CHECK(v != NULL && strchr(v, '.') != NULL);
    CHECK(strcmp(mtmux_strerror(MTMUX_OK), "success") == 0);
    CHECK(strstr(mtmux_strerror(MTMUX_ERR_TIMED_OUT), "timed out") != NULL);
    CHECK(strstr(mtmux_strerror(MTMUX_ERR_SESSION_CLOSED), "session closed") != NULL);
    CHECK(strcmp(mtmux_strerror(12345), "unknown error code") == 0);
    CHECK(strcmp(mtmux_strerror(-9), "unknown error code") == 0);
    for (int32_t code = MTMUX_ERR_SESSION_EXPIRED; code <= 0; code++)
        CHECK(mtmux_strerror(code) != NULL && mtmux_strerror(code)[0] != '\0');
out:;
}

/* The README's hello world, with per-tunnel statistics and addresses. */
static void test_hello_world(void) {
    pair p;
    mtmux_stream *cs = NULL, *ss = NULL;
    mtmux_config cfg = test_cfg(4);
    if (!pair_open(&p, &cfg))
        return;

    CHECK_OK(mtmux_session_open_stream(p.client, &cs));
    CHECK_OK(mtmux_stream_set_read_timeout(cs, 10000));
    CHECK_OK(mtmux_stream_write_all(cs, "world", 5));
    CHECK_OK(mtmux_stream_close_write(cs));

    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &ss));
    CHECK_OK(mtmux_stream_set_read_timeout(ss, 10000));
    uint32_t cid = 0, sid = 0;
    CHECK_OK(mtmux_stream_id(cs, &cid));
    CHECK_OK(mtmux_stream_id(ss, &sid));
    CHECK_EQ(sid, cid);
    CHECK_EQ(cid % 2, 1); /* client ids are odd */

    char msg[64];
    ptrdiff_t n = read_to_end(ss, msg, sizeof msg - 1);
    CHECK_EQ(n, 5);
    msg[n] = '\0';
    char reply[80];
    int len = snprintf(reply, sizeof reply, "hello, %s", msg);
    CHECK_OK(mtmux_stream_write_all(ss, reply, (size_t)len));
    CHECK_OK(mtmux_stream_close_write(ss));

    char got[80];
    n = read_to_end(cs, got, sizeof got - 1);
    CHECK_EQ(n, 12);
    got[n] = '\0';
    CHECK(strcmp(got, "hello, world") == 0);

    size_t tunnels = 0, count = 0;
    CHECK_OK(mtmux_session_num_tunnels(p.client, &tunnels));
    CHECK_EQ(tunnels, 4);
    mtmux_tunnel_stats stats[8];
    CHECK_OK(mtmux_session_tunnel_stats(p.client, stats, 8, &count));
    CHECK_EQ(count, 4);
    uint64_t sent = 0;
    for (size_t i = 0; i < count; i++) {
        CHECK_EQ(stats[i].index, i);
        CHECK_EQ(stats[i].alive, 1);
        sent += stats[i].bytes_sent;
    }
    CHECK(sent >= 5 + 16);
    CHECK_OK(mtmux_session_tunnel_stats(p.server, NULL, 0, &count));
    CHECK_EQ(count, 4);

    /* The client's tunnel 0 goes to the listener's base port. */
    char peer[MTMUX_ADDR_STRLEN], local[MTMUX_ADDR_STRLEN];
    CHECK_OK(mtmux_session_peer_addr(p.client, 0, peer, sizeof peer));
    CHECK(strcmp(peer, p.addr) == 0);
    CHECK_OK(mtmux_session_local_addr(p.server, 0, local, sizeof local));
    CHECK(strcmp(local, p.addr) == 0);
    int closed = -1;
    CHECK_OK(mtmux_session_is_closed(p.client, &closed));
    CHECK_EQ(closed, 0);
out:
    mtmux_stream_free(cs);
    mtmux_stream_free(ss);
    pair_free(&p);
}

/* ---- Many concurrent streams from several C threads, echoed and verified byte for byte --- */

#define CONC_THREADS 8
#define CONC_STREAMS_PER_THREAD 4
#define CONC_STREAMS (CONC_THREADS * CONC_STREAMS_PER_THREAD)

static void *echo_stream(void *arg) {
    mtmux_stream *s = arg;
    unsigned char buf[16384];
    if (!check_eq(mtmux_stream_set_read_timeout(s, 30000), MTMUX_OK, "set_read_timeout", __FILE__,
                  __LINE__))
        goto out;
    for (;;) {
        ptrdiff_t n = mtmux_stream_read(s, buf, sizeof buf);
        if (n == 0)
            break;
        if (!check(n > 0, "echo read", __FILE__, __LINE__))
            goto out;
        if (!check_eq(mtmux_stream_write_all(s, buf, (size_t)n), MTMUX_OK, "echo write", __FILE__,
                      __LINE__))
            goto out;
    }
    check_eq(mtmux_stream_close_write(s), MTMUX_OK, "echo close_write", __FILE__, __LINE__);
out:
    mtmux_stream_free(s);
    return NULL;
}

typedef struct {
    const mtmux_session *session;
    pthread_t threads[CONC_STREAMS];
    int started;
} echo_server;

static void *echo_acceptor(void *arg) {
    echo_server *e = arg;
    for (int i = 0; i < CONC_STREAMS; i++) {
        mtmux_stream *s = NULL;
        CHECK_OK(mtmux_session_accept_stream_timeout(e->session, 30000, &s));
        if (pthread_create(&e->threads[e->started], NULL, echo_stream, s) != 0) {
            mtmux_stream_free(s);
            CHECK(!"pthread_create");
        }
        e->started++;
    }
out:
    return NULL;
}

typedef struct {
    const mtmux_session *session;
    int index;
    size_t bytes; /* verified */
} client_job;

static size_t conc_size(int thread, int k) {
    return 16384 + (size_t)(thread * 7919 + k * 104729) % 200000;
}

static void *client_worker(void *arg) {
    client_job *job = arg;
    mtmux_stream *streams[CONC_STREAMS_PER_THREAD] = {0};
    unsigned char *want[CONC_STREAMS_PER_THREAD] = {0};
    unsigned char *got = NULL;
    size_t size[CONC_STREAMS_PER_THREAD];

    /* Several streams open at once per thread, all written before any is read back. */
    for (int k = 0; k < CONC_STREAMS_PER_THREAD; k++) {
        size[k] = conc_size(job->index, k);
        want[k] = malloc(size[k]);
        CHECK(want[k] != NULL);
        fill_pattern(want[k], size[k], (uint64_t)(job->index * 100 + k + 1));
        CHECK_OK(mtmux_session_open_stream(job->session, &streams[k]));
        CHECK_OK(mtmux_stream_set_read_timeout(streams[k], 30000));
        CHECK_OK(mtmux_stream_set_write_timeout(streams[k], 30000));
    }
    for (int k = 0; k < CONC_STREAMS_PER_THREAD; k++) {
        CHECK_OK(mtmux_stream_write_all(streams[k], want[k], size[k]));
        CHECK_OK(mtmux_stream_close_write(streams[k]));
    }
    for (int k = 0; k < CONC_STREAMS_PER_THREAD; k++) {
        got = malloc(size[k]);
        CHECK(got != NULL);
        CHECK_EQ(read_to_end(streams[k], got, size[k]), (ptrdiff_t)size[k]);
        CHECK(memcmp(got, want[k], size[k]) == 0);
        job->bytes += size[k];
        free(got);
        got = NULL;
    }
out:
    free(got);
    for (int k = 0; k < CONC_STREAMS_PER_THREAD; k++) {
        mtmux_stream_free(streams[k]);
        free(want[k]);
    }
    return NULL;
}

static void test_concurrent_streams_from_threads(void) {
    pair p;
    mtmux_config cfg = test_cfg(4);
    echo_server echo = {0};
    pthread_t acceptor, workers[CONC_THREADS];
    client_job jobs[CONC_THREADS];
    int acceptor_started = 0, workers_started = 0;
    if (!pair_open(&p, &cfg))
        return;

    echo.session = p.server;
    CHECK(pthread_create(&acceptor, NULL, echo_acceptor, &echo) == 0);
    acceptor_started = 1;
    for (int t = 0; t < CONC_THREADS; t++) {
        jobs[t] = (client_job){.session = p.client, .index = t, .bytes = 0};
        CHECK(pthread_create(&workers[t], NULL, client_worker, &jobs[t]) == 0);
        workers_started++;
    }
out:
    for (int t = 0; t < workers_started; t++)
        pthread_join(workers[t], NULL);
    if (acceptor_started)
        pthread_join(acceptor, NULL);
    for (int i = 0; i < echo.started; i++)
        pthread_join(echo.threads[i], NULL);
    size_t total = 0;
    for (int t = 0; t < workers_started; t++)
        total += jobs[t].bytes;
    size_t expected = 0;
    for (int t = 0; t < CONC_THREADS; t++)
        for (int k = 0; k < CONC_STREAMS_PER_THREAD; k++)
            expected += conc_size(t, k);
    check_eq((long long)total, (long long)expected, "bytes verified", __FILE__, __LINE__);
    check_eq(echo.started, CONC_STREAMS, "streams echoed", __FILE__, __LINE__);
    pair_free(&p);
}

/* ---- Half-close, reset, timeouts --------------------------------------------------------- */

static void test_half_close(void) {
    pair p;
    mtmux_stream *cs = NULL, *ss = NULL;
    mtmux_config cfg = test_cfg(2);
    char buf[64];
    if (!pair_open(&p, &cfg))
        return;
    CHECK_OK(mtmux_session_open_stream(p.client, &cs));
    CHECK_OK(mtmux_stream_set_read_timeout(cs, 10000));
    CHECK_OK(mtmux_stream_write_all(cs, "ping", 4));
    CHECK_OK(mtmux_stream_close_write(cs));
    CHECK_OK(mtmux_stream_close_write(cs)); /* idempotent */
    CHECK_EQ(mtmux_stream_write(cs, "x", 1), MTMUX_ERR_WRITE_CLOSED);
    CHECK_EQ(mtmux_stream_write_all(cs, "x", 1), MTMUX_ERR_WRITE_CLOSED);

    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &ss));
    CHECK_OK(mtmux_stream_set_read_timeout(ss, 10000));
    CHECK_EQ(read_to_end(ss, buf, sizeof buf), 4);
    CHECK(memcmp(buf, "ping", 4) == 0);
    CHECK_EQ(mtmux_stream_read(ss, buf, sizeof buf), 0); /* EOF stays EOF */

    /* The other direction is still open. */
    CHECK_OK(mtmux_stream_write_all(ss, "pong", 4));
    CHECK_OK(mtmux_stream_shutdown(ss, MTMUX_SHUT_WRITE));
    CHECK_EQ(read_to_end(cs, buf, sizeof buf), 4);
    CHECK(memcmp(buf, "pong", 4) == 0);
out:
    mtmux_stream_free(cs);
    mtmux_stream_free(ss);
    pair_free(&p);
}

static void test_reset(void) {
    pair p;
    mtmux_stream *cs = NULL, *ss = NULL;
    mtmux_config cfg = test_cfg(2);
    char buf[4096];
    if (!pair_open(&p, &cfg))
        return;
    CHECK_OK(mtmux_session_open_stream(p.client, &cs));
    CHECK_OK(mtmux_stream_write_all(cs, "doomed", 6));
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &ss));
    CHECK_OK(mtmux_stream_set_read_timeout(ss, 10000));
    CHECK_OK(mtmux_stream_reset(cs));

    /* Locally: reads and writes fail at once. */
    CHECK_EQ(mtmux_stream_write(cs, "x", 1), MTMUX_ERR_STREAM_RESET);
    CHECK_EQ(mtmux_stream_read(cs, buf, sizeof buf), MTMUX_ERR_STREAM_RESET);
    CHECK(strstr(mtmux_last_error(), "reset") != NULL);

    /* At the peer: data that arrived first may be read, then the reset shows. */
    ptrdiff_t n;
    int reads = 0;
    while ((n = mtmux_stream_read(ss, buf, sizeof buf)) > 0 && reads++ < 100) {
    }
    CHECK_EQ(n, MTMUX_ERR_STREAM_RESET);
    CHECK(strstr(mtmux_last_error(), "reset by the peer") != NULL);
out:
    mtmux_stream_free(cs);
    mtmux_stream_free(ss);
    pair_free(&p);
}

/* A config with small windows, so that a writer blocks once the peer stops reading. */
static mtmux_config small_window_cfg(void) {
    mtmux_config cfg = test_cfg(2);
    cfg.max_frame_size = 16384;
    cfg.stream_window = 2 * (16384 + 64);
    cfg.max_stream_window = cfg.stream_window;
    return cfg;
}

static void test_timeouts(void) {
    pair p;
    mtmux_stream *cs = NULL, *ss = NULL, *none = (mtmux_stream *)&p;
    mtmux_session *no_session = (mtmux_session *)&p;
    mtmux_config cfg = small_window_cfg();
    unsigned char *big = NULL;
    char buf[16];
    if (!pair_open(&p, &cfg))
        return;

    /* Accepts. */
    double t0 = now_ms();
    CHECK_EQ(mtmux_session_accept_stream_timeout(p.server, 100, &none), MTMUX_ERR_TIMED_OUT);
    CHECK(now_ms() - t0 >= 90);
    CHECK(none == (mtmux_stream *)&p); /* outputs untouched on failure */
    CHECK_EQ(mtmux_listener_accept_timeout(p.listener, 0, &no_session), MTMUX_ERR_TIMED_OUT);
    CHECK(no_session == (mtmux_session *)&p);
    CHECK_EQ(mtmux_session_accept_stream_timeout(p.server, MTMUX_TIMEOUT_MAX_MS + 1, &ss),
             MTMUX_ERR_INVALID_ARGUMENT);

    /* Read timeout. */
    CHECK_OK(mtmux_session_open_stream(p.client, &cs));
    uint64_t ms = 1;
    CHECK_OK(mtmux_stream_read_timeout(cs, &ms));
    CHECK_EQ(ms, 0);
    CHECK_OK(mtmux_stream_set_read_timeout(cs, 150));
    CHECK_OK(mtmux_stream_read_timeout(cs, &ms));
    CHECK_EQ(ms, 150);
    t0 = now_ms();
    CHECK_EQ(mtmux_stream_read(cs, buf, sizeof buf), MTMUX_ERR_TIMED_OUT);
    double waited = now_ms() - t0;
    CHECK(waited >= 140 && waited < 10000);
    CHECK(strstr(mtmux_last_error(), "timed out") != NULL);
    CHECK_EQ(mtmux_stream_set_read_timeout(cs, MTMUX_TIMEOUT_MAX_MS + 1), MTMUX_ERR_INVALID_ARGUMENT);

    /* Write timeout: the server never reads, so the small window fills. */
    CHECK_OK(mtmux_stream_set_write_timeout(cs, 200));
    CHECK_OK(mtmux_stream_write_timeout(cs, &ms));
    CHECK_EQ(ms, 200);
    size_t chunk = 64 * 1024;
    big = calloc(1, chunk);
    CHECK(big != NULL);
    ptrdiff_t n = 0;
    size_t total = 0;
    for (int i = 0; i < 1000 && (n = mtmux_stream_write(cs, big, chunk)) > 0; i++)
        total += (size_t)n;
    CHECK_EQ(n, MTMUX_ERR_TIMED_OUT);
    CHECK(total < 16u * 1024 * 1024);
    /* The stream still works: the peer reads what was written. */
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &ss));
    CHECK_OK(mtmux_stream_set_read_timeout(ss, 10000));
    CHECK(mtmux_stream_read(ss, big, chunk) > 0);
    /* 0 means no timeout again. */
    CHECK_OK(mtmux_stream_set_write_timeout(cs, 0));
    CHECK_OK(mtmux_stream_write_timeout(cs, &ms));
    CHECK_EQ(ms, 0);
out:
    free(big);
    mtmux_stream_free(cs);
    mtmux_stream_free(ss);
    pair_free(&p);
}

/* ---- Error paths ------------------------------------------------------------------------- */

static void test_null_arguments(void) {
    pair p;
    mtmux_stream *s = NULL;
    mtmux_config cfg = test_cfg(1);
    char buf[MTMUX_ADDR_STRLEN];
    size_t count;
    uint32_t id;
    uint64_t ms;
    int closed;
    mtmux_close_reason reason;

    /* _free(NULL) does nothing. */
    mtmux_listener_free(NULL);
    mtmux_session_free(NULL);
    mtmux_stream_free(NULL);

    /* NULL handles. */
    mtmux_session *sess = NULL;
    CHECK_EQ(mtmux_listener_accept(NULL, &sess), MTMUX_ERR_NULL);
    CHECK(strstr(mtmux_last_error(), "mtmux_listener_accept: listener is NULL") != NULL);
    CHECK_EQ(mtmux_listener_accept_timeout(NULL, 10, &sess), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_listener_local_addr(NULL, buf, sizeof buf), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_listener_close(NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_open_stream(NULL, &s), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_accept_stream(NULL, &s), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_accept_stream_timeout(NULL, 10, &s), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_close(NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_is_closed(NULL, &closed), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_close_reason(NULL, &reason), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_num_streams(NULL, &count), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_num_tunnels(NULL, &count), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_tunnel_stats(NULL, NULL, 0, &count), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_local_addr(NULL, 0, buf, sizeof buf), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_peer_addr(NULL, 0, buf, sizeof buf), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_read(NULL, buf, sizeof buf), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_write(NULL, buf, sizeof buf), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_write_all(NULL, buf, sizeof buf), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_close_write(NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_close(NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_shutdown(NULL, MTMUX_SHUT_BOTH), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_reset(NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_set_read_timeout(NULL, 1), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_set_write_timeout(NULL, 1), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_read_timeout(NULL, &ms), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_write_timeout(NULL, &ms), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_id(NULL, &id), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_config_init(NULL), MTMUX_ERR_NULL);
    CHECK_OK(mtmux_config_validate(NULL)); /* NULL means the defaults */
    CHECK(s == NULL && sess == NULL);

    /* NULL strings and outputs. */
    mtmux_listener *l = NULL;
    CHECK_EQ(mtmux_listen(NULL, &cfg, &l), MTMUX_ERR_NULL);
    CHECK(strstr(mtmux_last_error(), "addr is NULL") != NULL);
    CHECK_EQ(mtmux_listen("127.0.0.1:0", &cfg, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_dial(NULL, &cfg, &sess), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_dial("127.0.0.1:1", &cfg, NULL), MTMUX_ERR_NULL);
    CHECK(l == NULL && sess == NULL);

    /* NULL outputs and buffers on live handles. */
    if (!pair_open(&p, &cfg))
        return;
    CHECK_EQ(mtmux_listener_accept_timeout(p.listener, 0, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_listener_local_addr(p.listener, NULL, 64), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_open_stream(p.client, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_accept_stream_timeout(p.server, 0, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_is_closed(p.client, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_close_reason(p.client, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_num_streams(p.client, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_num_tunnels(p.client, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_tunnel_stats(p.client, NULL, 0, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_tunnel_stats(p.client, NULL, 4, &count), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_local_addr(p.client, 0, NULL, 64), MTMUX_ERR_NULL);
    CHECK_OK(mtmux_session_open_stream(p.client, &s));
    CHECK_EQ(mtmux_stream_read(s, NULL, 16), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_write(s, NULL, 16), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_write_all(s, NULL, 16), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_read_timeout(s, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_write_timeout(s, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_stream_id(s, NULL), MTMUX_ERR_NULL);
out:
    mtmux_stream_free(s);
    pair_free(&p);
}

static void test_invalid_arguments(void) {
    pair p;
    mtmux_stream *s = NULL;
    mtmux_config cfg = test_cfg(2);
    char buf[MTMUX_ADDR_STRLEN];
    size_t count = 0;
    if (!pair_open(&p, &cfg))
        return;
    CHECK_OK(mtmux_session_open_stream(p.client, &s));
    /* Zero lengths: a read of 0 would look like end of stream. */
    CHECK_EQ(mtmux_stream_read(s, buf, 0), MTMUX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mtmux_last_error(), "length is 0") != NULL);
    CHECK_EQ(mtmux_stream_write(s, buf, 0), MTMUX_ERR_INVALID_ARGUMENT);
    CHECK_OK(mtmux_stream_write_all(s, NULL, 0)); /* nothing to write is fine */
    CHECK_EQ(mtmux_stream_read(s, buf, (size_t)PTRDIFF_MAX + 1), MTMUX_ERR_INVALID_ARGUMENT);
    /* Integers that select something are validated. */
    CHECK_EQ(mtmux_stream_shutdown(s, 3), MTMUX_ERR_INVALID_ARGUMENT);
    CHECK_EQ(mtmux_stream_shutdown(s, -1), MTMUX_ERR_INVALID_ARGUMENT);
    CHECK_EQ(mtmux_session_local_addr(p.client, 2, buf, sizeof buf), MTMUX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mtmux_last_error(), "tunnel 2 does not exist") != NULL);
    /* Buffers too small for an address. */
    CHECK_EQ(mtmux_listener_local_addr(p.listener, buf, 4), MTMUX_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(mtmux_session_peer_addr(p.client, 1, buf, 0), MTMUX_ERR_INVALID_ARGUMENT);
    /* Stats into a smaller array: the count says how many exist. */
    mtmux_tunnel_stats one;
    CHECK_OK(mtmux_session_tunnel_stats(p.client, &one, 1, &count));
    CHECK_EQ(count, 2);
    CHECK_EQ(one.index, 0);
    /* An unknown code has a name too. */
    CHECK(strcmp(mtmux_strerror(-1000), "unknown error code") == 0);
out:
    mtmux_stream_free(s);
    pair_free(&p);
}

static void test_bad_addresses(void) {
    mtmux_listener *l = NULL;
    mtmux_session *s = NULL;
    mtmux_config cfg = test_cfg(1);
    const char bad_utf8[] = {'1', '2', '7', '.', '0', '.', '0', '.', '1', ':', (char)0xff, '0', 0};
    CHECK_EQ(mtmux_listen(bad_utf8, &cfg, &l), MTMUX_ERR_UTF8);
    CHECK(strstr(mtmux_last_error(), "UTF-8") != NULL);
    CHECK_EQ(mtmux_dial(bad_utf8, &cfg, &s), MTMUX_ERR_UTF8);
    const char *bad[] = {"", "nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "[::1", ":80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(mtmux_listen(bad[i], &cfg, &l), MTMUX_ERR_ADDRESS);
        CHECK(strstr(mtmux_last_error(), "bad address") != NULL);
        CHECK_EQ(mtmux_dial(bad[i], &cfg, &s), MTMUX_ERR_ADDRESS);
    }
    CHECK(l == NULL && s == NULL);
out:
    mtmux_listener_free(l);
    mtmux_session_free(s);
}

static void test_connection_refused(void) {
    mtmux_session *s = NULL;
    mtmux_config cfg = test_cfg(1);
    char addr[64];
    /* A port that is bound but not listening refuses connections, and nobody can take it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
    CHECK_EQ(mtmux_dial(addr, &cfg, &s), MTMUX_ERR_CONNECTION_REFUSED);
    CHECK(strstr(mtmux_last_error(), "mtmux_dial: ") != NULL);
    CHECK(s == NULL);
out:
    if (fd >= 0)
        close(fd);
    mtmux_session_free(s);
}

static void test_handshake_refused(void) {
    mtmux_listener *l = NULL;
    mtmux_session *s = NULL;
    char addr[MTMUX_ADDR_STRLEN];
    /* The server takes bundles of at most 2 tunnels; the client brings 4. */
    mtmux_config server = test_cfg(2), client = test_cfg(4);
    server.single_port = client.single_port = 1;
    CHECK_OK(mtmux_listen("127.0.0.1:0", &server, &l));
    CHECK_OK(mtmux_listener_local_addr(l, addr, sizeof addr));
    CHECK_EQ(mtmux_dial(addr, &client, &s), MTMUX_ERR_REFUSED);
    CHECK(strstr(mtmux_last_error(), "refused by the server") != NULL);
    CHECK(s == NULL);
out:
    mtmux_session_free(s);
    mtmux_listener_free(l);
}

static void test_session_limit(void) {
    mtmux_listener *l = NULL;
    mtmux_session *first = NULL, *second = NULL, *served = NULL;
    char addr[MTMUX_ADDR_STRLEN];
    mtmux_config cfg = test_cfg(2);
    CHECK_OK(mtmux_listen("127.0.0.1:0", &cfg, &l));
    CHECK_OK(mtmux_listener_set_max_sessions(l, 1));
    CHECK_OK(mtmux_listener_local_addr(l, addr, sizeof addr));
    CHECK_OK(mtmux_dial(addr, &cfg, &first));
    /* At the limit (the first session counts before it is accepted): refused, and told why. */
    CHECK_EQ(mtmux_dial(addr, &cfg, &second), MTMUX_ERR_REFUSED);
    CHECK(strstr(mtmux_last_error(), "session limit (1)") != NULL);
    CHECK(second == NULL);
    CHECK_OK(mtmux_listener_accept_timeout(l, 10000, &served));
    /* 0: no limit. */
    CHECK_OK(mtmux_listener_set_max_sessions(l, 0));
    CHECK_OK(mtmux_dial(addr, &cfg, &second));
    CHECK_EQ(mtmux_listener_set_max_sessions(NULL, 1), MTMUX_ERR_NULL);
out:
    mtmux_session_free(second);
    mtmux_session_free(served);
    mtmux_session_free(first);
    mtmux_listener_free(l);
}

static void test_bad_config(void) {
    mtmux_listener *l = NULL;
    mtmux_session *s = NULL;
    mtmux_config cfg;
    CHECK_OK(mtmux_config_init(&cfg));
    CHECK_EQ(cfg.size, sizeof cfg);
    CHECK_EQ(cfg.tunnels, 8);
    CHECK_EQ(cfg.keepalive_interval_ms, 10000);
    CHECK_EQ(cfg.stream_window, 1 << 20);
    CHECK_EQ(cfg.max_handshakes_per_source, 0); /* derived from tunnels and the total */
    CHECK_OK(mtmux_config_validate(&cfg));

    /* Each change alone makes the config invalid, with a message naming the field. */
    for (int i = 0; i < 12; i++) {
        mtmux_config c = cfg;
        const char *field = "";
        int32_t want = MTMUX_ERR_INVALID_CONFIG;
        switch (i) {
        case 0: c.tunnels = 0; field = "tunnels"; break;
        case 1: c.tunnels = 300; field = "tunnels"; break;
        case 2: c.single_port = 2; field = "single_port"; break;
        case 3: c.keepalive_timeout_ms = c.keepalive_interval_ms; field = "keepalive_timeout"; break;
        case 4: c.keepalive_interval_ms = 0; field = "keepalive_interval"; break;
        case 5: c.reorder_timeout_ms = MTMUX_TIMEOUT_MAX_MS + 1; field = "reorder_timeout_ms"; break;
        case 6: c.max_frame_size = 10; field = "max_frame_size"; break;
        case 7: c.session_window = 1; field = "session_window"; break;
        case 8: c.accept_backlog = MTMUX_BACKLOG_MAX + 1; field = "accept_backlog"; break;
        case 9: c.max_streams = 0; field = "max_streams"; break;
        case 10: c.size = 8; field = "sizeof(mtmux_config)"; want = MTMUX_ERR_INVALID_ARGUMENT; break;
        case 11:
            c.max_handshakes_per_source = MTMUX_BACKLOG_MAX + 1;
            field = "max_handshakes_per_source";
            break;
        }
        CHECK_EQ(mtmux_config_validate(&c), want);
        if (!check(strstr(mtmux_last_error(), field) != NULL, field, __FILE__, __LINE__))
            goto out;
        CHECK_EQ(mtmux_listen("127.0.0.1:0", &c, &l), want);
        CHECK_EQ(mtmux_dial("127.0.0.1:1", &c, &s), want);
        CHECK(l == NULL && s == NULL);
    }
    /* NULL means the defaults: 8 tunnels on 8 consecutive ports. */
    CHECK_OK(mtmux_listen("127.0.0.1:0", NULL, &l));
out:
    mtmux_listener_free(l);
    mtmux_session_free(s);
}

static void test_closed_session(void) {
    pair p;
    mtmux_stream *cs = NULL, *ss = NULL, *late = NULL;
    mtmux_session *more = NULL;
    mtmux_config cfg = test_cfg(2);
    char buf[16];
    if (!pair_open(&p, &cfg))
        return;
    CHECK_OK(mtmux_session_open_stream(p.client, &cs));
    CHECK_OK(mtmux_stream_set_read_timeout(cs, 10000));
    CHECK_OK(mtmux_stream_write_all(cs, "x", 1));
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &ss));
    CHECK_OK(mtmux_stream_set_read_timeout(ss, 10000));
    CHECK_EQ(mtmux_stream_read(ss, buf, sizeof buf), 1);
    mtmux_close_reason reason = -1;
    CHECK_OK(mtmux_session_close_reason(p.client, &reason));
    CHECK_EQ(reason, MTMUX_CLOSE_NONE);

    CHECK_OK(mtmux_session_close(p.client));
    CHECK_OK(mtmux_session_close(p.client)); /* idempotent */
    int closed = 0;
    CHECK_OK(mtmux_session_is_closed(p.client, &closed));
    CHECK_EQ(closed, 1);
    CHECK_OK(mtmux_session_close_reason(p.client, &reason));
    CHECK_EQ(reason, MTMUX_CLOSE_LOCAL);
    CHECK_EQ(mtmux_session_open_stream(p.client, &late), MTMUX_ERR_SESSION_CLOSED);
    CHECK(strstr(mtmux_last_error(), "session closed") != NULL);
    CHECK_EQ(mtmux_session_accept_stream_timeout(p.client, 10000, &late), MTMUX_ERR_SESSION_CLOSED);
    CHECK_EQ(mtmux_stream_write(cs, "x", 1), MTMUX_ERR_SESSION_CLOSED);
    CHECK_EQ(mtmux_stream_read(cs, buf, sizeof buf), MTMUX_ERR_SESSION_CLOSED);
    CHECK(late == NULL);

    /* The server sees its peer leave: no more streams, and once its tunnels have ended its
     * streams fail and the reason is known. */
    CHECK_EQ(mtmux_session_accept_stream_timeout(p.server, 10000, &late), MTMUX_ERR_SESSION_CLOSED);
    CHECK_EQ(mtmux_stream_read(ss, buf, sizeof buf), MTMUX_ERR_SESSION_CLOSED);
    CHECK(strstr(mtmux_last_error(), "closed by the peer") != NULL);
    CHECK_OK(mtmux_session_close_reason(p.server, &reason));
    CHECK_EQ(reason, MTMUX_CLOSE_PEER);
    size_t n = 1;
    CHECK_OK(mtmux_session_num_streams(p.server, &n));
    CHECK_EQ(n, 0);

    /* A closed listener. */
    CHECK_OK(mtmux_listener_close(p.listener));
    CHECK_OK(mtmux_listener_close(p.listener));
    CHECK_EQ(mtmux_listener_accept(p.listener, &more), MTMUX_ERR_LISTENER_CLOSED);
    CHECK_EQ(mtmux_listener_accept_timeout(p.listener, 10000, &more), MTMUX_ERR_LISTENER_CLOSED);
    CHECK(more == NULL);
out:
    mtmux_stream_free(cs);
    mtmux_stream_free(ss);
    mtmux_stream_free(late);
    pair_free(&p);
}

static void test_too_many_streams(void) {
    pair p;
    mtmux_stream *s[3] = {0};
    mtmux_config cfg = test_cfg(1);
    cfg.max_streams = 2;
    if (!pair_open(&p, &cfg))
        return;
    CHECK_OK(mtmux_session_open_stream(p.client, &s[0]));
    CHECK_OK(mtmux_session_open_stream(p.client, &s[1]));
    CHECK_EQ(mtmux_session_open_stream(p.client, &s[2]), MTMUX_ERR_TOO_MANY_STREAMS);
    CHECK(s[2] == NULL);
    size_t n = 0;
    CHECK_OK(mtmux_session_num_streams(p.client, &n));
    CHECK_EQ(n, 2);
out:
    for (int i = 0; i < 3; i++)
        mtmux_stream_free(s[i]);
    pair_free(&p);
}

/* ---- Close from another thread wakes blocked calls --------------------------------------- */

typedef enum { BLOCK_READ, BLOCK_WRITE, BLOCK_ACCEPT_STREAM, BLOCK_ACCEPT_SESSION } block_kind;

typedef struct {
    block_kind kind;
    const void *handle;
    latch started;
    long long result;
    double elapsed_ms;
} blocked_call;

static void *run_blocked(void *arg) {
    blocked_call *b = arg;
    static unsigned char big[256 * 1024];
    char buf[64];
    mtmux_stream *st = NULL;
    mtmux_session *se = NULL;
    latch_set(&b->started);
    double t0 = now_ms();
    switch (b->kind) {
    case BLOCK_READ:
        b->result = mtmux_stream_read(b->handle, buf, sizeof buf);
        break;
    case BLOCK_WRITE:
        /* More than the peer's window: blocks until the peer reads (it never does). */
        b->result = mtmux_stream_write_all(b->handle, big, sizeof big);
        break;
    case BLOCK_ACCEPT_STREAM:
        b->result = mtmux_session_accept_stream_timeout(b->handle, 30000, &st);
        break;
    case BLOCK_ACCEPT_SESSION:
        b->result = mtmux_listener_accept_timeout(b->handle, 30000, &se);
        break;
    }
    b->elapsed_ms = now_ms() - t0;
    mtmux_stream_free(st);
    mtmux_session_free(se);
    return NULL;
}

/* Start `b` on a thread and wait until it is about to block. */
static int start_blocked(pthread_t *t, blocked_call *b, block_kind kind, const void *handle) {
    b->kind = kind;
    b->handle = handle;
    b->result = 1;
    latch_init(&b->started);
    if (pthread_create(t, NULL, run_blocked, b) != 0) {
        latch_destroy(&b->started);
        return 0;
    }
    return latch_wait(&b->started, 10000);
}

static void finish_blocked(pthread_t t, blocked_call *b) {
    pthread_join(t, NULL);
    latch_destroy(&b->started);
}

static void test_close_from_another_thread_wakes_blocked_calls(void) {
    pair p;
    mtmux_stream *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL, *peer_c = NULL, *peer_e = NULL;
    mtmux_config cfg = small_window_cfg();
    pthread_t t1, t2, t3, t4, t5, t6, t7;
    blocked_call r1, r2, r3, r4, r5, r6, r7;
    int n1 = 0, n2 = 0, n3 = 0, n4 = 0, n5 = 0, n6 = 0, n7 = 0;
    if (!pair_open(&p, &cfg))
        return;
    /* Every blocked call is bounded by a 30 s timeout; a wake-up must come well before.
     * The streams are opened in the order they are first used: the server accepts streams in
     * the order they were opened, and one opened but not used yet holds the later ones back
     * (up to reorder_timeout). */
    CHECK_OK(mtmux_session_open_stream(p.client, &a));
    CHECK_OK(mtmux_session_open_stream(p.client, &c));
    CHECK_OK(mtmux_session_open_stream(p.client, &e));
    CHECK_OK(mtmux_session_open_stream(p.client, &b));
    CHECK_OK(mtmux_session_open_stream(p.client, &d));
    CHECK_OK(mtmux_stream_set_write_timeout(e, 30000));
    CHECK_OK(mtmux_stream_set_read_timeout(a, 30000));
    CHECK_OK(mtmux_stream_set_read_timeout(b, 30000));
    CHECK_OK(mtmux_stream_set_write_timeout(c, 30000));
    CHECK_OK(mtmux_stream_set_write_timeout(d, 30000));

    /* Closing a stream wakes its reader with end of stream. */
    CHECK((n1 = start_blocked(&t1, &r1, BLOCK_READ, a)));
    CHECK_OK(mtmux_stream_close(a));
    finish_blocked(t1, &r1);
    n1 = 0;
    CHECK_EQ(r1.result, 0);
    CHECK(r1.elapsed_ms < 20000);

    /* Resetting a stream wakes its blocked writer. */
    CHECK((n2 = start_blocked(&t2, &r2, BLOCK_WRITE, c)));
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &peer_c));
    CHECK_OK(mtmux_stream_reset(c));
    finish_blocked(t2, &r2);
    n2 = 0;
    CHECK_EQ(r2.result, MTMUX_ERR_STREAM_RESET);
    CHECK(r2.elapsed_ms < 20000);

    /* Half-closing a stream wakes its writer blocked on flow control (regression: it slept
     * until its write timeout). */
    CHECK((n7 = start_blocked(&t7, &r7, BLOCK_WRITE, e)));
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &peer_e));
    CHECK_OK(mtmux_stream_close_write(e));
    finish_blocked(t7, &r7);
    n7 = 0;
    CHECK_EQ(r7.result, MTMUX_ERR_WRITE_CLOSED);
    CHECK(r7.elapsed_ms < 20000);

    /* Closing the session wakes a reader, a writer and an acceptor on it; closing the
     * listener wakes its acceptor. */
    CHECK((n3 = start_blocked(&t3, &r3, BLOCK_READ, b)));
    CHECK((n4 = start_blocked(&t4, &r4, BLOCK_ACCEPT_STREAM, p.client)));
    CHECK((n5 = start_blocked(&t5, &r5, BLOCK_ACCEPT_SESSION, p.listener)));
    CHECK((n6 = start_blocked(&t6, &r6, BLOCK_WRITE, d)));
    CHECK_OK(mtmux_session_close(p.client));
    CHECK_OK(mtmux_listener_close(p.listener));
    finish_blocked(t3, &r3);
    finish_blocked(t4, &r4);
    finish_blocked(t5, &r5);
    finish_blocked(t6, &r6);
    n3 = n4 = n5 = n6 = 0;
    CHECK_EQ(r3.result, MTMUX_ERR_SESSION_CLOSED);
    CHECK_EQ(r4.result, MTMUX_ERR_SESSION_CLOSED);
    CHECK_EQ(r5.result, MTMUX_ERR_LISTENER_CLOSED);
    CHECK_EQ(r6.result, MTMUX_ERR_SESSION_CLOSED);
    CHECK(r3.elapsed_ms < 20000 && r4.elapsed_ms < 20000 && r5.elapsed_ms < 20000);
    CHECK(r6.elapsed_ms < 20000);
out:
    /* On a failed check, wake whatever still waits before joining it. */
    mtmux_session_close(p.client);
    mtmux_listener_close(p.listener);
    mtmux_stream_reset(c);
    mtmux_stream_reset(e);
    if (n1)
        finish_blocked(t1, &r1);
    if (n2)
        finish_blocked(t2, &r2);
    if (n3)
        finish_blocked(t3, &r3);
    if (n4)
        finish_blocked(t4, &r4);
    if (n5)
        finish_blocked(t5, &r5);
    if (n6)
        finish_blocked(t6, &r6);
    if (n7)
        finish_blocked(t7, &r7);
    mtmux_stream_free(a);
    mtmux_stream_free(b);
    mtmux_stream_free(c);
    mtmux_stream_free(d);
    mtmux_stream_free(e);
    mtmux_stream_free(peer_c);
    mtmux_stream_free(peer_e);
    pair_free(&p);
}

int main(int argc, char **argv) {
    static const test_case tests[] = {

        {"version_and_strerror", test_version_and_strerror},
        {"hello_world", test_hello_world},
        {"concurrent_streams_from_threads", test_concurrent_streams_from_threads},
        {"half_close", test_half_close},
        {"reset", test_reset},
        {"timeouts", test_timeouts},
        {"null_arguments", test_null_arguments},
        {"invalid_arguments", test_invalid_arguments},
        {"bad_addresses", test_bad_addresses},
        {"connection_refused", test_connection_refused},
        {"handshake_refused", test_handshake_refused},
        {"session_limit", test_session_limit},
        {"bad_config", test_bad_config},
        {"closed_session", test_closed_session},
        {"too_many_streams", test_too_many_streams},
        {"close_from_another_thread_wakes_blocked_calls",
         test_close_from_another_thread_wakes_blocked_calls},
    };
    return run_tests("C ABI tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
