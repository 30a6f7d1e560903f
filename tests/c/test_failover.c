/*
 * Tests of the failover part of the mtmux C ABI (issue 8): the config fields, tunnel and
 * session statistics, failover events, MTMUX_ERR_SESSION_EXPIRED, and transfers that lose
 * tunnels on the way, cut by a TCP relay written here.
 *
 *   test_failover [NAME-SUBSTRING]   run all tests, or those whose name contains the argument
 *
 * Environment: MTMUX_TEST_TIMEOUT=S is the per-test watchdog in seconds (default 120);
 * MTMUX_TEST_FAILOVER_MB=N is the size of each failover transfer in MiB (default 64; `make
 * valgrind` uses less). Prints "N passed, N failed" and exits non-zero if any test failed.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- A TCP relay whose connections can be cut -------------------------------------------- */
/*
 * The relay listens on `n` consecutive loopback ports and forwards relay port base + i to
 * the server's port target + i, so a client dialing the relay gets one relay connection
 * per tunnel, and a new one each time it re-dials. `relay_kill(r, i)` resets tunnel i's
 * current connection on both sides (SO_LINGER 0 and close: an RST to the client and to the
 * server), which is how a tunnel dies on a broken path. Each connection has one pump thread
 * that owns both sockets (non-blocking, poll), so a kill never races a blocked call on a
 * closed descriptor: the killer asks through a pipe and waits until the pump has closed.
 */

#define RELAY_MAX_TUNNELS 8
#define RELAY_MAX_CONNS 64
#define RELAY_BUF 65536

typedef struct {
    int fd[2];   /* 0: from the client (accepted), 1: to the server */
    int wake[2]; /* a byte written to wake[1] asks the pump to reset both sides */
    pthread_t thread;
    latch closed; /* set once the pump has closed both sockets */
} relay_conn;

typedef struct {
    int n;
    int base; /* first relay port */
    int target; /* first server port */
    int listen_fd[RELAY_MAX_TUNNELS];
    int stop[2]; /* a byte written to stop[1] ends the acceptor */
    pthread_t acceptor;
    int acceptor_started;
    pthread_mutex_t mu;
    relay_conn *conns[RELAY_MAX_CONNS]; /* every connection, for the final join */
    int nconns;
    relay_conn *current[RELAY_MAX_TUNNELS]; /* the latest connection of each tunnel */
    int accepted[RELAY_MAX_TUNNELS]; /* connections accepted per tunnel */
    int refuse; /* 1: reset new connections at once (re-dials fail) */
} relay;

static void set_linger0(int fd) {
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

static void *relay_pump(void *arg) {
    relay_conn *c = arg;
    /* Direction d copies fd[d] to fd[1 - d] through buf[d]. */
    unsigned char(*buf)[RELAY_BUF] = malloc(2 * RELAY_BUF);
    size_t len[2] = {0, 0}, off[2] = {0, 0};
    int reading[2] = {1, 1};
    int reset = 0;
    if (!buf || !set_nonblocking(c->fd[0]) || !set_nonblocking(c->fd[1]))
        reset = 1;
    while (!reset && (reading[0] || reading[1] || len[0] || len[1])) {
        struct pollfd p[3];
        for (int s = 0; s < 2; s++) {
            /* Socket s is read by direction s and written by direction 1 - s. */
            short ev = 0;
            if (reading[s] && len[s] == 0)
                ev |= POLLIN;
            if (len[1 - s] > 0)
                ev |= POLLOUT;
            p[s].fd = ev ? c->fd[s] : -1;
            p[s].events = ev;
            p[s].revents = 0;
        }
        p[2].fd = c->wake[0];
        p[2].events = POLLIN;
        p[2].revents = 0;
        if (poll(p, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            reset = 1;
            break;
        }
        if (p[2].revents) {
            reset = 1;
            break;
        }
        for (int d = 0; d < 2 && !reset; d++) {
            if (reading[d] && len[d] == 0 && p[d].revents) {
                ssize_t n = recv(c->fd[d], buf[d], RELAY_BUF, 0);
                if (n > 0) {
                    len[d] = (size_t)n;
                    off[d] = 0;
                } else if (n == 0) {
                    reading[d] = 0; /* pass the FIN on */
                    shutdown(c->fd[1 - d], SHUT_WR);
                } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    reset = 1; /* an RST on one side becomes an RST on the other */
                }
            }
            if (!reset && len[d] > 0 && p[1 - d].revents) {
                ssize_t n = send(c->fd[1 - d], buf[d] + off[d], len[d] - off[d], MSG_NOSIGNAL);
                if (n > 0) {
                    off[d] += (size_t)n;
                    if (off[d] == len[d])
                        len[d] = off[d] = 0;
                } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    reset = 1;
                }
            }
        }
    }
    if (reset) {
        set_linger0(c->fd[0]);
        set_linger0(c->fd[1]);
    }
    close(c->fd[0]);
    close(c->fd[1]);
    free(buf);
    latch_set(&c->closed);
    return NULL;
}

static int connect_loopback(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Start a pump for an accepted connection of tunnel i; resets it when that is not possible. */
static void relay_start_conn(relay *r, int i, int client_fd) {
    int server_fd = r->refuse ? -1 : connect_loopback(r->target + i);
    relay_conn *c = server_fd >= 0 ? calloc(1, sizeof *c) : NULL;
    if (c && pipe(c->wake) != 0) {
        free(c);
        c = NULL;
    }
    pthread_mutex_lock(&r->mu);
    if (c && r->nconns < RELAY_MAX_CONNS) {
        c->fd[0] = client_fd;
        c->fd[1] = server_fd;
        latch_init(&c->closed);
        if (pthread_create(&c->thread, NULL, relay_pump, c) == 0) {
            r->conns[r->nconns++] = c;
            r->current[i] = c;
            r->accepted[i]++;
            pthread_mutex_unlock(&r->mu);
            return;
        }
        latch_destroy(&c->closed);
    }
    pthread_mutex_unlock(&r->mu);
    if (c) {
        close(c->wake[0]);
        close(c->wake[1]);
        free(c);
    }
    set_linger0(client_fd);
    close(client_fd);
    if (server_fd >= 0) {
        set_linger0(server_fd);
        close(server_fd);
    }
}

static void *relay_accept_loop(void *arg) {
    relay *r = arg;
    for (;;) {
        struct pollfd p[RELAY_MAX_TUNNELS + 1];
        for (int i = 0; i < r->n; i++)
            p[i] = (struct pollfd){.fd = r->listen_fd[i], .events = POLLIN};
        p[r->n] = (struct pollfd){.fd = r->stop[0], .events = POLLIN};
        if (poll(p, (nfds_t)r->n + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        if (p[r->n].revents)
            return NULL;
        for (int i = 0; i < r->n; i++) {
            if (!p[i].revents)
                continue;
            int fd = accept(r->listen_fd[i], NULL, NULL);
            if (fd >= 0)
                relay_start_conn(r, i, fd);
        }
    }
}

/* Bind `n` consecutive loopback ports; returns the first, or -1. The range is taken below
 * the ephemeral ports (as mtmux's own listener does): ephemeral ports come and go with every
 * outgoing connection and linger in TIME_WAIT, which blocks binding them. */
static int bind_port_range(int n, int *fds) {
    int low = 32768;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d", &low) != 1)
            low = 32768;
        fclose(f);
    }
    if (low - n <= 10000)
        low = 65536;
    unsigned seed = (unsigned)now_ms() ^ (unsigned)getpid() * 2654435761u;
    for (int attempt = 0; attempt < 200; attempt++) {
        int base = 10000 + (int)(rand_r(&seed) % (unsigned)(low - n - 10000)), ok = 1;
        for (int i = 0; i < n; i++)
            fds[i] = -1;
        for (int i = 0; i < n && ok; i++) {
            int one = 1;
            struct sockaddr_in sin = {0};
            sin.sin_family = AF_INET;
            sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            sin.sin_port = htons((uint16_t)(base + i));
            fds[i] = socket(AF_INET, SOCK_STREAM, 0);
            ok = fds[i] >= 0 && setsockopt(fds[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
                 bind(fds[i], (struct sockaddr *)&sin, sizeof sin) == 0 && listen(fds[i], 16) == 0;
        }
        if (ok)
            return base;
        for (int i = 0; i < n; i++) {
            if (fds[i] >= 0)
                close(fds[i]);
            fds[i] = -1;
        }
    }
    return -1;
}

/* A relay that does nothing yet; relay_stop may be called on it. */
static void relay_init(relay *r) {
    memset(r, 0, sizeof *r);
    r->stop[0] = r->stop[1] = -1;
    for (int i = 0; i < RELAY_MAX_TUNNELS; i++)
        r->listen_fd[i] = -1;
    pthread_mutex_init(&r->mu, NULL);
}

/* Start an initialised relay of `n` tunnels to the server ports target .. target + n - 1. */
static int relay_start(relay *r, int n, int target) {
    r->target = target;
    if (n < 1 || n > RELAY_MAX_TUNNELS || pipe(r->stop) != 0)
        return 0;
    r->n = n;
    r->base = bind_port_range(n, r->listen_fd);
    if (r->base < 0)
        return 0;
    r->acceptor_started = pthread_create(&r->acceptor, NULL, relay_accept_loop, r) == 0;
    return r->acceptor_started;
}

/* Reset tunnel i's current connection on both sides; returns 1 once its pump has closed it. */
static int relay_kill(relay *r, int i) {
    pthread_mutex_lock(&r->mu);
    relay_conn *c = r->current[i];
    pthread_mutex_unlock(&r->mu);
    if (!c || write(c->wake[1], "x", 1) != 1)
        return 0;
    return latch_wait(&c->closed, 10000);
}

static void relay_set_refuse(relay *r, int refuse) {
    pthread_mutex_lock(&r->mu);
    r->refuse = refuse;
    pthread_mutex_unlock(&r->mu);
}

static int relay_accepted(relay *r, int i) {
    pthread_mutex_lock(&r->mu);
    int n = r->accepted[i];
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Stop accepting, reset every connection still open and release everything. */
static void relay_stop(relay *r) {
    if (r->acceptor_started) {
        ssize_t w = write(r->stop[1], "x", 1);
        (void)w;
        pthread_join(r->acceptor, NULL);
    }
    for (int k = 0; k < r->nconns; k++) {
        relay_conn *c = r->conns[k];
        ssize_t w = write(c->wake[1], "x", 1);
        (void)w;
        pthread_join(c->thread, NULL);
        latch_destroy(&c->closed);
        close(c->wake[0]);
        close(c->wake[1]);
        free(c);
    }
    for (int i = 0; i < r->n; i++)
        if (r->listen_fd[i] >= 0)
            close(r->listen_fd[i]);
    if (r->stop[0] >= 0) {
        close(r->stop[0]);
        close(r->stop[1]);
    }
    pthread_mutex_destroy(&r->mu);
    memset(r, 0, sizeof *r);
}

/* A listener, a relay in front of its ports, and a client that dialed the relay. */
static int relay_pair_open(pair *p, relay *r, const mtmux_config *server_cfg,
                           const mtmux_config *client_cfg) {
    char addr[MTMUX_ADDR_STRLEN];
    memset(p, 0, sizeof *p);
    relay_init(r);
    CHECK_OK(mtmux_listen("127.0.0.1:0", server_cfg, &p->listener));
    CHECK_OK(mtmux_listener_local_addr(p->listener, p->addr, sizeof p->addr));
    CHECK(relay_start(r, (int)client_cfg->tunnels, atoi(strrchr(p->addr, ':') + 1)));
    snprintf(addr, sizeof addr, "127.0.0.1:%d", r->base);
    CHECK_OK(mtmux_dial(addr, client_cfg, &p->client));
    CHECK_OK(mtmux_listener_accept_timeout(p->listener, 10000, &p->server));
    return 1;
out:
    pair_free(p);
    relay_stop(r);
    return 0;
}

/* ---- Helpers ----------------------------------------------------------------------------- */

/* The pattern of fill_pattern as a stream: any chunking of it gives the same bytes. */
typedef struct {
    uint64_t x;
} pattern;

static void pattern_init(pattern *p, uint64_t seed) {
    p->x = seed * 0x9E3779B97F4A7C15ull | 1;
}

static void pattern_next(pattern *p, unsigned char *buf, size_t len) {
    uint64_t x = p->x;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    p->x = x;
}

/* A failover test config: `tunnels`, quick re-dials. */
static mtmux_config failover_cfg(uint32_t tunnels) {
    mtmux_config cfg = test_cfg(tunnels);
    cfg.rejoin_backoff_max_ms = 200;
    return cfg;
}

static uint64_t transfer_bytes(void) {
    uint64_t mb = env_u64("MTMUX_TEST_FAILOVER_MB", 64);
    return (mb ? mb : 1) << 20;
}

/* Poll until every slot in `mask` of `s` has generation >= 1 and is live, or `ms` pass. */
static int wait_rejoined(const mtmux_session *s, unsigned mask, int ms, mtmux_tunnel_stats *out,
                         size_t cap) {
    double deadline = now_ms() + ms;
    for (;;) {
        size_t count = 0;
        int done = mtmux_session_tunnel_stats(s, out, cap, &count) == MTMUX_OK;
        for (size_t i = 0; done && i < count && i < cap; i++)
            if ((mask >> i) & 1)
                done = out[i].generation >= 1 && out[i].state == MTMUX_TUNNEL_LIVE;
        if (done)
            return 1;
        if (now_ms() > deadline)
            return 0;
        nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
    }
}

/* ---- Config ------------------------------------------------------------------------------ */

static void test_config_failover_defaults(void) {
    mtmux_config cfg;
    memset(&cfg, 0xA5, sizeof cfg);
    CHECK_OK(mtmux_config_init(&cfg));
    CHECK_EQ(cfg.size, sizeof cfg);
    CHECK_EQ(cfg.rejoin, 1);
    CHECK_EQ(cfg.stale_timeout_ms, 0); /* derived from the round trip */
    CHECK_EQ(cfg.resume_timeout_ms, 30000);
    CHECK_EQ(cfg.rejoin_backoff_max_ms, 5000);
    CHECK_OK(mtmux_config_validate(&cfg));
    /* The boundaries themselves are valid. */
    cfg.rejoin = 0;
    cfg.stale_timeout_ms = MTMUX_STALE_TIMEOUT_MIN_MS;
    cfg.resume_timeout_ms = 0; /* resumption off */
    cfg.rejoin_backoff_max_ms = MTMUX_REJOIN_BACKOFF_MIN_MS;
    CHECK_OK(mtmux_config_validate(&cfg));
    cfg.stale_timeout_ms = MTMUX_TIMEOUT_MAX_MS;
    cfg.resume_timeout_ms = MTMUX_TIMEOUT_MAX_MS;
    cfg.rejoin_backoff_max_ms = MTMUX_TIMEOUT_MAX_MS;
    CHECK_OK(mtmux_config_validate(&cfg));
out:;
}

static void test_config_failover_fields_are_validated(void) {
    mtmux_listener *l = NULL;
    mtmux_session *s = NULL;
    mtmux_config cfg;
    CHECK_OK(mtmux_config_init(&cfg));
    /* Each change alone makes the config invalid, with a message naming the field. */
    for (int i = 0; i < 9; i++) {
        mtmux_config c = cfg;
        const char *field = "";
        switch (i) {
        case 0: c.rejoin = 2; field = "rejoin must be 0 or 1"; break;
        case 1: c.rejoin = UINT32_MAX; field = "rejoin must be 0 or 1"; break;
        case 2: c.stale_timeout_ms = 1; field = "stale_timeout_ms"; break;
        case 3: c.stale_timeout_ms = MTMUX_STALE_TIMEOUT_MIN_MS - 1; field = "stale_timeout_ms"; break;
        case 4: c.stale_timeout_ms = MTMUX_TIMEOUT_MAX_MS + 1; field = "stale_timeout_ms"; break;
        case 5: c.resume_timeout_ms = MTMUX_TIMEOUT_MAX_MS + 1; field = "resume_timeout_ms"; break;
        case 6: c.rejoin_backoff_max_ms = 0; field = "rejoin_backoff_max_ms"; break;
        case 7: c.rejoin_backoff_max_ms = MTMUX_REJOIN_BACKOFF_MIN_MS - 1; field = "rejoin_backoff_max_ms"; break;
        case 8: c.rejoin_backoff_max_ms = UINT64_MAX; field = "rejoin_backoff_max_ms"; break;
        }
        CHECK_EQ(mtmux_config_validate(&c), MTMUX_ERR_INVALID_CONFIG);
        if (!check(strstr(mtmux_last_error(), field) != NULL, field, __FILE__, __LINE__))
            goto out;
        CHECK_EQ(mtmux_listen("127.0.0.1:0", &c, &l), MTMUX_ERR_INVALID_CONFIG);
        CHECK_EQ(mtmux_dial("127.0.0.1:1", &c, &s), MTMUX_ERR_INVALID_CONFIG);
        CHECK(l == NULL && s == NULL);
    }
out:
    mtmux_listener_free(l);
    mtmux_session_free(s);
}

/* A program built against the first header passes a shorter struct: mtmux reads only its
 * `size` bytes (ASan would see a read past this allocation) and uses the new defaults. */
static void test_config_of_the_first_layout_is_still_accepted(void) {
    const size_t align = _Alignof(mtmux_config);
    const size_t v1_size = (offsetof(mtmux_config, rejoin) + align - 1) / align * align;
    unsigned char *v1 = NULL; /* a struct of the first layout, exactly as long */
    mtmux_listener *l = NULL;
    mtmux_session *s = NULL;
    char addr[MTMUX_ADDR_STRLEN];
    size_t tunnels = 0;
    mtmux_config cfg;
    CHECK_OK(mtmux_config_init(&cfg));
    CHECK(v1_size < sizeof cfg);
    cfg.size = v1_size;
    cfg.tunnels = 2;
    cfg.handshake_timeout_ms = 10000;
    v1 = malloc(v1_size);
    CHECK(v1 != NULL);
    memcpy(v1, &cfg, v1_size);
    CHECK_OK(mtmux_config_validate((const mtmux_config *)v1));
    CHECK_OK(mtmux_listen("127.0.0.1:0", (const mtmux_config *)v1, &l));
    CHECK_OK(mtmux_listener_local_addr(l, addr, sizeof addr));
    CHECK_OK(mtmux_dial(addr, (const mtmux_config *)v1, &s));
    CHECK_OK(mtmux_session_num_tunnels(s, &tunnels));
    CHECK_EQ(tunnels, 2);
    /* Its own fields are still checked. */
    uint32_t zero = 0;
    memcpy(v1 + offsetof(mtmux_config, tunnels), &zero, sizeof zero);
    CHECK_EQ(mtmux_config_validate((const mtmux_config *)v1), MTMUX_ERR_INVALID_CONFIG);
    CHECK(strstr(mtmux_last_error(), "tunnels") != NULL);
    /* Sizes that are neither layout are refused. */
    cfg.size = v1_size + align;
    CHECK_EQ(mtmux_config_validate(&cfg), MTMUX_ERR_INVALID_ARGUMENT);
    CHECK(strstr(mtmux_last_error(), "sizeof(mtmux_config)") != NULL);
    cfg.size = sizeof cfg + align;
    CHECK_EQ(mtmux_config_validate(&cfg), MTMUX_ERR_INVALID_ARGUMENT);
out:
    mtmux_session_free(s);
    mtmux_listener_free(l);
    free(v1);
}

/* ---- Statistics, events, codes ----------------------------------------------------------- */

static void test_expired_code_has_its_own_text(void) {
    CHECK_EQ(MTMUX_ERR_SESSION_EXPIRED, -23);
    CHECK_EQ(MTMUX_CLOSE_EXPIRED, 5);
    CHECK(strstr(mtmux_strerror(MTMUX_ERR_SESSION_EXPIRED), "expired") != NULL);
    CHECK(strcmp(mtmux_strerror(MTMUX_ERR_SESSION_EXPIRED), mtmux_strerror(MTMUX_ERR_SESSION_CLOSED)) != 0);
    CHECK(strcmp(mtmux_strerror(MTMUX_ERR_AUTH - 1), "unknown error code") == 0);
out:;
}

static void test_stats_of_a_healthy_session(void) {
    pair p;
    mtmux_stream *cs = NULL, *ss = NULL;
    mtmux_config cfg = test_cfg(4);
    unsigned char data[100000], got[100000];
    if (!pair_open(&p, &cfg))
        return;
    fill_pattern(data, sizeof data, 7);
    CHECK_OK(mtmux_session_open_stream(p.client, &cs));
    CHECK_OK(mtmux_stream_write_all(cs, data, sizeof data));
    CHECK_OK(mtmux_stream_close_write(cs));
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &ss));
    CHECK_OK(mtmux_stream_set_read_timeout(ss, 10000));
    CHECK_EQ(read_to_end(ss, got, sizeof got), (ptrdiff_t)sizeof got);
    CHECK(memcmp(got, data, sizeof data) == 0);

    const mtmux_session *sides[2] = {p.client, p.server};
    for (int side = 0; side < 2; side++) {
        mtmux_tunnel_stats t[4];
        size_t count = 0;
        CHECK_OK(mtmux_session_tunnel_stats(sides[side], t, 4, &count));
        CHECK_EQ(count, 4);
        for (size_t i = 0; i < count; i++) {
            CHECK_EQ(t[i].index, i);
            CHECK_EQ(t[i].alive, 1);
            CHECK_EQ(t[i].state, MTMUX_TUNNEL_LIVE);
            CHECK_EQ(t[i].generation, 0);
            CHECK_EQ(t[i].rejoins, 0);
            CHECK_EQ(t[i].frames_resent, 0);
            CHECK_EQ(t[i].bytes_resent, 0);
        }
        mtmux_session_statistics st;
        memset(&st, 0xA5, sizeof st);
        CHECK_OK(mtmux_session_stats(sides[side], &st));
        CHECK_EQ(st.tunnels, 4);
        CHECK_EQ(st.live_tunnels, 4);
        CHECK_EQ(st.in_outage, 0);
        CHECK_EQ(st.outage_ms, 0);
        CHECK_EQ(st.resumes, 0);
        CHECK_EQ(st.events_dropped, 0);
        CHECK(st.ack_bytes_sent >= st.acks_sent);
        CHECK(st.unacked_bytes <= cfg.session_window);
    }
    /* The enum's values are distinct and stable. */
    CHECK_EQ(MTMUX_TUNNEL_LIVE, 0);
    CHECK_EQ(MTMUX_TUNNEL_STALE, 1);
    CHECK_EQ(MTMUX_TUNNEL_DEAD, 2);
    CHECK_EQ(MTMUX_TUNNEL_REJOINING, 3);
out:
    mtmux_stream_free(cs);
    mtmux_stream_free(ss);
    pair_free(&p);
}

static void test_stats_and_events_argument_checks(void) {
    pair p;
    mtmux_config cfg = test_cfg(2);
    mtmux_session_statistics st;
    mtmux_event ev, untouched;
    char reason[32] = "untouched";
    memset(&untouched, 0x5A, sizeof untouched);
    ev = untouched;
    CHECK_EQ(mtmux_session_stats(NULL, &st), MTMUX_ERR_NULL);
    CHECK(strstr(mtmux_last_error(), "mtmux_session_stats: session is NULL") != NULL);
    CHECK_EQ(mtmux_session_next_event(NULL, 0, &ev, reason, sizeof reason), MTMUX_ERR_NULL);
    if (!pair_open(&p, &cfg))
        return;
    CHECK_EQ(mtmux_session_stats(p.client, NULL), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_next_event(p.client, 0, NULL, reason, sizeof reason), MTMUX_ERR_NULL);
    CHECK_EQ(mtmux_session_next_event(p.client, 0, &ev, NULL, 16), MTMUX_ERR_NULL);
    CHECK(strstr(mtmux_last_error(), "reason is NULL") != NULL);
    CHECK_EQ(mtmux_session_next_event(p.client, MTMUX_TIMEOUT_MAX_MS + 1, &ev, NULL, 0),
             MTMUX_ERR_INVALID_ARGUMENT);
    /* A healthy session has no event: the wait times out, outputs untouched. */
    CHECK_EQ(mtmux_session_next_event(p.client, 0, &ev, reason, sizeof reason), MTMUX_ERR_TIMED_OUT);
    double t0 = now_ms();
    CHECK_EQ(mtmux_session_next_event(p.server, 100, &ev, NULL, 0), MTMUX_ERR_TIMED_OUT);
    CHECK(now_ms() - t0 < 5000);
    CHECK(memcmp(&ev, &untouched, sizeof ev) == 0);
    CHECK(strcmp(reason, "untouched") == 0);
    /* Once the session has ended, waiting for events says so. */
    CHECK_OK(mtmux_session_close(p.client));
    CHECK_EQ(mtmux_session_next_event(p.client, 1000, &ev, NULL, 0), MTMUX_ERR_SESSION_CLOSED);
    CHECK_OK(mtmux_session_stats(p.client, &st));
    CHECK_EQ(st.tunnels, 2);
out:
    pair_free(&p);
}

/* ---- Tunnels killed under a running transfer --------------------------------------------- */

typedef struct {
    const mtmux_session *session;
    int accept; /* 1: accept the stream, 0: `stream` is already open */
    const mtmux_stream *stream;
    uint64_t total;
    uint64_t seed;
    latch half; /* set once half of the data has arrived */
    atomic_ullong received;
    long long result; /* MTMUX_OK, a negative code, or 1 for a mismatch */
    uint64_t mismatch_at;
    mtmux_stream *accepted;
} receiver;

static void *receive_and_verify(void *arg) {
    receiver *r = arg;
    enum { CHUNK = 1 << 16 };
    unsigned char *buf = malloc(2 * CHUNK), *want = buf + CHUNK;
    pattern pat;
    pattern_init(&pat, r->seed);
    const mtmux_stream *s = r->stream;
    r->result = buf ? MTMUX_OK : MTMUX_ERR_IO;
    if (r->result == MTMUX_OK && r->accept) {
        r->result = mtmux_session_accept_stream_timeout(r->session, 30000, &r->accepted);
        s = r->accepted;
    }
    if (r->result == MTMUX_OK)
        r->result = mtmux_stream_set_read_timeout(s, 30000);
    while (r->result == MTMUX_OK) {
        ptrdiff_t n = mtmux_stream_read(s, buf, CHUNK);
        if (n < 0) {
            r->result = n;
            break;
        }
        if (n == 0)
            break;
        uint64_t before = atomic_load(&r->received);
        pattern_next(&pat, want, (size_t)n);
        if (memcmp(buf, want, (size_t)n) != 0) {
            size_t i = 0;
            while (buf[i] == want[i])
                i++;
            r->mismatch_at = before + i;
            r->result = 1;
            break;
        }
        atomic_store(&r->received, before + (uint64_t)n);
        if (before + (uint64_t)n >= r->total / 2)
            latch_set(&r->half);
    }
    latch_set(&r->half); /* never leave the killer waiting */
    free(buf);
    return NULL;
}

typedef struct {
    const mtmux_stream *stream;
    uint64_t total;
    uint64_t seed;
    long long result;
} sender;

static void *send_pattern(void *arg) {
    sender *w = arg;
    enum { CHUNK = 1 << 18 };
    unsigned char *buf = malloc(CHUNK);
    pattern pat;
    pattern_init(&pat, w->seed);
    w->result = buf ? mtmux_stream_set_write_timeout(w->stream, 30000) : MTMUX_ERR_IO;
    for (uint64_t sent = 0; w->result == MTMUX_OK && sent < w->total; sent += CHUNK) {
        size_t n = w->total - sent < CHUNK ? (size_t)(w->total - sent) : CHUNK;
        pattern_next(&pat, buf, n);
        w->result = mtmux_stream_write_all(w->stream, buf, n);
    }
    if (w->result == MTMUX_OK)
        w->result = mtmux_stream_close_write(w->stream);
    free(buf);
    return NULL;
}

/* What the failover events of a session said. */
typedef struct {
    unsigned lost;     /* slots with a TUNNEL_LOST event (with a reason) */
    unsigned rejoined; /* slots with a TUNNEL_REJOINED event of generation >= 1 */
    int outage_started, resumed;
} event_log;

/* Read events into `log` until every slot of `slots` was reported lost and re-joined and,
 * with `want_resumed`, the session has resumed; returns 0 if that has not happened within
 * `ms`. (Events of different slots, and a slot's loss and its re-join, may come in any
 * order: several threads report them.) */
static int collect_events(const mtmux_session *s, event_log *log, unsigned slots,
                          int want_resumed, int ms) {
    double deadline = now_ms() + ms;
    while ((log->rejoined & slots) != slots || (log->lost & slots) != slots ||
           (want_resumed && !log->resumed)) {
        mtmux_event ev;
        char reason[128];
        double left = deadline - now_ms();
        if (left <= 0 ||
            mtmux_session_next_event(s, (uint64_t)left, &ev, reason, sizeof reason) != MTMUX_OK)
            return 0;
        switch (ev.kind) {
        case MTMUX_EVENT_TUNNEL_LOST: {
            /* The whole reason when it fits, else as much as fits. */
            size_t shown = strlen(reason);
            if (ev.reason_len > 0 &&
                (ev.reason_len < sizeof reason ? shown == ev.reason_len : shown < sizeof reason))
                log->lost |= 1u << ev.index;
            break;
        }
        case MTMUX_EVENT_TUNNEL_REJOINED:
            if (ev.generation >= 1)
                log->rejoined |= 1u << ev.index;
            break;
        case MTMUX_EVENT_OUTAGE_STARTED:
            log->outage_started = 1;
            break;
        case MTMUX_EVENT_RESUMED:
            log->resumed = 1;
            break;
        default:
            break;
        }
    }
    return 1;
}

/* Poll until `in_outage` of `s` is `want`, or `ms` pass. */
static int wait_outage(const mtmux_session *s, uint32_t want, int ms) {
    double deadline = now_ms() + ms;
    for (;;) {
        mtmux_session_statistics st;
        if (mtmux_session_stats(s, &st) == MTMUX_OK && st.in_outage == want)
            return 1;
        if (now_ms() > deadline)
            return 0;
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    }
}

/*
 * Send `total` bytes of a known pattern on one stream (client to server, or back with
 * `from_server`) through the relay; when half has arrived, reset the tunnels in `kill_mask`
 * on both sides. With `outage`, the relay refuses re-dials until both sides are in an
 * outage (every tunnel lost), then lets them through: the session must resume. Every byte
 * must arrive intact, and each killed slot must come back live as generation >= 1 through a
 * new relay connection, with the matching events.
 */
static void transfer_through_kills(int from_server, unsigned kill_mask, int outage) {
    pair p;
    relay r;
    mtmux_stream *opened = NULL, *peer = NULL;
    pthread_t rt, wt;
    int r_started = 0, w_started = 0;
    receiver rx = {0};
    sender tx = {0};
    mtmux_config cfg = failover_cfg(4);
    mtmux_tunnel_stats t[4];
    mtmux_session_statistics st;
    event_log log = {0};
    latch_init(&rx.half);
    atomic_init(&rx.received, 0);
    rx.total = tx.total = transfer_bytes();
    rx.seed = tx.seed = 11;
    if (!relay_pair_open(&p, &r, &cfg, &cfg)) {
        latch_destroy(&rx.half);
        return;
    }

    /* The client opens the stream; the server learns of it with its first byte. */
    CHECK_OK(mtmux_session_open_stream(p.client, &opened));
    if (from_server) {
        char one;
        CHECK_OK(mtmux_stream_write_all(opened, "!", 1));
        CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &peer));
        CHECK_OK(mtmux_stream_set_read_timeout(peer, 10000));
        CHECK_EQ(mtmux_stream_read(peer, &one, 1), 1);
        tx.stream = peer;
        rx.stream = opened;
    } else {
        tx.stream = opened;
        rx.session = p.server;
        rx.accept = 1;
    }
    CHECK((r_started = pthread_create(&rt, NULL, receive_and_verify, &rx) == 0));
    CHECK((w_started = pthread_create(&wt, NULL, send_pattern, &tx) == 0));

    CHECK(latch_wait(&rx.half, 60000));
    if (outage)
        relay_set_refuse(&r, 1);
    for (int i = 0; i < 4; i++)
        if ((kill_mask >> i) & 1)
            CHECK(relay_kill(&r, i));
    if (outage) {
        CHECK(wait_outage(p.client, 1, 10000));
        CHECK(wait_outage(p.server, 1, 10000));
        relay_set_refuse(&r, 0);
    }

    pthread_join(wt, NULL);
    w_started = 0;
    pthread_join(rt, NULL);
    r_started = 0;
    CHECK_EQ(tx.result, MTMUX_OK);
    if (rx.result == 1)
        fprintf(stderr, "    first wrong byte at offset %llu\n", (unsigned long long)rx.mismatch_at);
    CHECK_EQ(rx.result, MTMUX_OK);
    CHECK_EQ(atomic_load(&rx.received), rx.total);

    /* Each killed slot came back through a new relay connection, on both sides, and every
     * slot is live. */
    CHECK(wait_rejoined(p.client, kill_mask, 20000, t, 4));
    for (int i = 0; i < 4; i++) {
        if ((kill_mask >> i) & 1) {
            CHECK(t[i].rejoins >= 1);
            CHECK(relay_accepted(&r, i) >= 2);
        }
    }
    CHECK(wait_rejoined(p.server, kill_mask, 20000, t, 4));
    CHECK(collect_events(p.client, &log, kill_mask, outage, 10000));
    CHECK_EQ(log.lost & kill_mask, kill_mask);
    CHECK_OK(mtmux_session_stats(p.client, &st));
    CHECK_EQ(st.live_tunnels, 4);
    CHECK_EQ(st.in_outage, 0);
    CHECK_EQ(st.outage_ms, 0);
    /* Killed one by one, every tunnel may or may not all be down at once. */
    if (outage)
        CHECK(log.outage_started && st.resumes >= 1);
    else if (kill_mask != 0xF)
        CHECK(!log.outage_started && st.resumes == 0);
    /* The receiver acknowledged what it got (what the re-sends were chosen by). */
    CHECK_OK(mtmux_session_stats(from_server ? p.client : p.server, &st));
    CHECK(kill_mask == 0 || (st.acks_sent > 0 && st.ack_bytes_sent > st.acks_sent));
out:
    if (w_started || r_started) {
        /* A check failed mid-transfer: end the session so that both threads return. */
        mtmux_session_close(p.client);
        mtmux_session_close(p.server);
    }
    if (w_started)
        pthread_join(wt, NULL);
    if (r_started)
        pthread_join(rt, NULL);
    mtmux_stream_free(opened);
    mtmux_stream_free(peer);
    mtmux_stream_free(rx.accepted);
    pair_free(&p);
    relay_stop(&r);
    latch_destroy(&rx.half);
}

/* The relay itself loses and reorders nothing (else the tests below would prove nothing). */
static void test_transfer_through_the_relay_without_kills(void) {
    transfer_through_kills(0, 0, 0);
}

static void test_kill_one_tunnel_client_to_server(void) {
    transfer_through_kills(0, 1u << 1, 0);
}

static void test_kill_one_tunnel_server_to_client(void) {
    transfer_through_kills(1, 1u << 2, 0);
}

static void test_kill_every_tunnel_one_by_one(void) {
    transfer_through_kills(0, 0xF, 0);
}

static void test_outage_of_every_tunnel_then_resume(void) {
    transfer_through_kills(1, 0xF, 1);
}

/* ---- Every tunnel lost for good ---------------------------------------------------------- */

/* With no tunnel able to come back, blocked reads on both sides end after resume_timeout
 * with MTMUX_ERR_SESSION_EXPIRED (or, with resumption off, at once with _SESSION_CLOSED). */
static void lose_every_tunnel(uint64_t resume_timeout_ms, int32_t want_code,
                              mtmux_close_reason want_reason) {
    pair p;
    relay r;
    mtmux_stream *cs = NULL, *ss = NULL;
    mtmux_config cfg = failover_cfg(2);
    char buf[16];
    cfg.resume_timeout_ms = resume_timeout_ms;
    if (!relay_pair_open(&p, &r, &cfg, &cfg))
        return;
    CHECK_OK(mtmux_session_open_stream(p.client, &cs));
    CHECK_OK(mtmux_stream_write_all(cs, "x", 1));
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &ss));
    CHECK_OK(mtmux_stream_set_read_timeout(ss, 30000));
    CHECK_OK(mtmux_stream_set_read_timeout(cs, 30000));
    CHECK_EQ(mtmux_stream_read(ss, buf, sizeof buf), 1);

    relay_set_refuse(&r, 1);
    CHECK(relay_kill(&r, 0));
    CHECK(relay_kill(&r, 1));
    double t0 = now_ms();
    CHECK_EQ(mtmux_stream_read(ss, buf, sizeof buf), want_code);
    CHECK_EQ(mtmux_stream_read(cs, buf, sizeof buf), want_code);
    CHECK(now_ms() - t0 < 25000);
    if (want_code == MTMUX_ERR_SESSION_EXPIRED)
        CHECK(strstr(mtmux_last_error(), "expired") != NULL);
    mtmux_stream *late = NULL;
    CHECK_EQ(mtmux_session_open_stream(p.client, &late), want_code);
    CHECK(late == NULL);
    mtmux_close_reason reason = -1;
    CHECK_OK(mtmux_session_close_reason(p.client, &reason));
    CHECK_EQ(reason, want_reason);
    CHECK_OK(mtmux_session_close_reason(p.server, &reason));
    CHECK_EQ(reason, want_reason);
    /* Every slot ends up dead (a re-dial in flight when the session ended may show
     * REJOINING for a moment). */
    mtmux_tunnel_stats t[2];
    size_t count = 0;
    double deadline = now_ms() + 5000;
    do {
        CHECK_OK(mtmux_session_tunnel_stats(p.client, t, 2, &count));
        CHECK(t[0].alive == 0 && t[1].alive == 0);
    } while (!(t[0].state == MTMUX_TUNNEL_DEAD && t[1].state == MTMUX_TUNNEL_DEAD) &&
             now_ms() < deadline &&
             nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL) == 0);
    CHECK(t[0].state == MTMUX_TUNNEL_DEAD && t[1].state == MTMUX_TUNNEL_DEAD);
out:
    mtmux_stream_free(cs);
    mtmux_stream_free(ss);
    pair_free(&p);
    relay_stop(&r);
}

static void test_every_tunnel_lost_without_resumption_closes(void) {
    lose_every_tunnel(0, MTMUX_ERR_SESSION_CLOSED, MTMUX_CLOSE_TUNNELS_LOST);
}

static void test_every_tunnel_lost_for_longer_than_resume_timeout_expires(void) {
    lose_every_tunnel(500, MTMUX_ERR_SESSION_EXPIRED, MTMUX_CLOSE_EXPIRED);
}

/* ---- Runner ------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    static const test_case tests[] = {
        {"config_failover_defaults", test_config_failover_defaults},
        {"config_failover_fields_are_validated", test_config_failover_fields_are_validated},
        {"config_of_the_first_layout_is_still_accepted",
         test_config_of_the_first_layout_is_still_accepted},
        {"expired_code_has_its_own_text", test_expired_code_has_its_own_text},
        {"stats_of_a_healthy_session", test_stats_of_a_healthy_session},
        {"stats_and_events_argument_checks", test_stats_and_events_argument_checks},
        {"every_tunnel_lost_without_resumption_closes",
         test_every_tunnel_lost_without_resumption_closes},
        {"transfer_through_the_relay_without_kills", test_transfer_through_the_relay_without_kills},
        {"kill_one_tunnel_client_to_server", test_kill_one_tunnel_client_to_server},
        {"kill_one_tunnel_server_to_client", test_kill_one_tunnel_server_to_client},
        {"kill_every_tunnel_one_by_one", test_kill_every_tunnel_one_by_one},
        {"outage_of_every_tunnel_then_resume", test_outage_of_every_tunnel_then_resume},
        {"every_tunnel_lost_for_longer_than_resume_timeout_expires",
         test_every_tunnel_lost_for_longer_than_resume_timeout_expires},
    };
    return run_tests("C ABI failover tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
