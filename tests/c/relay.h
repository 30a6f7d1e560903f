/*
 * A TCP relay for the C tests (test_failover.c, test_contract.c), in front of an mtmux
 * listener in port-range mode.
 *
 * The relay listens on `n` consecutive loopback ports and forwards relay port base + i to
 * the server's port target + i, so a client dialing the relay gets one relay connection
 * per tunnel, and a new one each time it re-dials. `relay_kill(r, i)` resets tunnel i's
 * current connection on both sides (SO_LINGER 0 and close: an RST to the client and to the
 * server), which is how a tunnel dies on a broken path. A port marked silent
 * (`r->silent[i] = 1` between relay_init and relay_start) is never accepted: its
 * connections complete in the kernel and are never answered (a tunnel that never arrives).
 */
#ifndef MTMUX_TEST_RELAY_H
#define MTMUX_TEST_RELAY_H

#include "harness.h"

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
    int silent[RELAY_MAX_TUNNELS]; /* 1: never accept on this port (set before relay_start) */
} relay;

/* A relay that does nothing yet; relay_stop may be called on it. */
void relay_init(relay *r);
/* Start an initialised relay of `n` tunnels to the server ports target .. target + n - 1. */
int relay_start(relay *r, int n, int target);
/* Reset tunnel i's current connection on both sides; returns 1 once its pump has closed it. */
int relay_kill(relay *r, int i);
/* 1: reset new connections at once (re-dials fail). */
void relay_set_refuse(relay *r, int refuse);
/* Connections of tunnel i accepted and connected to the server so far. */
int relay_accepted(relay *r, int i);
/* Stop accepting, reset every connection still open and release everything. */
void relay_stop(relay *r);
/* A listener, a relay in front of its ports, and a client that dialed the relay. */
int relay_pair_open(pair *p, relay *r, const mtmux_config *server_cfg,
                    const mtmux_config *client_cfg);

/* A blocking connection to 127.0.0.1:port, or -1. */
int connect_loopback(int port);
/* Bind `n` consecutive loopback ports (listening); returns the first, or -1. */
int bind_port_range(int n, int *fds);

#endif
