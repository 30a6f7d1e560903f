/* The TCP relay of the C tests: see relay.h. Each connection has one pump thread that owns
 * both sockets (non-blocking, poll), so a kill never races a blocked call on a closed
 * descriptor: the killer asks through a pipe and waits until the pump has closed. */
#include "relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

int connect_loopback(int port) {
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
            p[i] = (struct pollfd){.fd = r->silent[i] ? -1 : r->listen_fd[i], .events = POLLIN};
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
int bind_port_range(int n, int *fds) {
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
void relay_init(relay *r) {
    memset(r, 0, sizeof *r);
    r->stop[0] = r->stop[1] = -1;
    for (int i = 0; i < RELAY_MAX_TUNNELS; i++)
        r->listen_fd[i] = -1;
    pthread_mutex_init(&r->mu, NULL);
}

/* Start an initialised relay of `n` tunnels to the server ports target .. target + n - 1. */
int relay_start(relay *r, int n, int target) {
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
int relay_kill(relay *r, int i) {
    pthread_mutex_lock(&r->mu);
    relay_conn *c = r->current[i];
    pthread_mutex_unlock(&r->mu);
    if (!c || write(c->wake[1], "x", 1) != 1)
        return 0;
    return latch_wait(&c->closed, 10000);
}

void relay_set_refuse(relay *r, int refuse) {
    pthread_mutex_lock(&r->mu);
    r->refuse = refuse;
    pthread_mutex_unlock(&r->mu);
}

int relay_accepted(relay *r, int i) {
    pthread_mutex_lock(&r->mu);
    int n = r->accepted[i];
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Stop accepting, reset every connection still open and release everything. */
void relay_stop(relay *r) {
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
int relay_pair_open(pair *p, relay *r, const mtmux_config *server_cfg,
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
