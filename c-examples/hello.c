/*
 * hello: the README's hello world in C. A server thread answers "hello, <message>" on the
 * first stream of the first session; the client sends "world" over 4 tunnels.
 *
 *   usage: hello        (listens on free loopback ports)
 */
#include "mtmux.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void *server(void *listener) {
    mtmux_session *session;
    mtmux_stream *stream;
    if (mtmux_listener_accept(listener, &session) != MTMUX_OK) /* one client's whole bundle */
        return NULL;
    if (mtmux_session_accept_stream(session, &stream) == MTMUX_OK) {
        char msg[64] = "hello, ";
        size_t len = strlen(msg);
        ptrdiff_t n; /* read until the client's half-close (0) */
        while ((n = mtmux_stream_read(stream, msg + len, sizeof msg - len)) > 0)
            len += (size_t)n;
        mtmux_stream_write_all(stream, msg, len);
        mtmux_stream_free(stream); /* closes it: the client reads end-of-stream */
    }
    mtmux_session_free(session);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) {
        fprintf(stderr, "usage: %s\n  say hello over 4 loopback tunnels\n", argv[0]);
        return 2;
    }
    mtmux_config cfg;
    mtmux_config_init(&cfg);
    cfg.tunnels = 4;

    /* Server: listens on 4 consecutive free ports, one per tunnel. */
    mtmux_listener *listener;
    char addr[MTMUX_ADDR_STRLEN];
    if (mtmux_listen("127.0.0.1:0", &cfg, &listener) != MTMUX_OK) {
        fprintf(stderr, "listen: %s\n", mtmux_last_error());
        return 1;
    }
    mtmux_listener_local_addr(listener, addr, sizeof addr);
    pthread_t t;
    pthread_create(&t, NULL, server, listener);

    /* Client: opens 4 tunnels and completes the handshake. */
    mtmux_session *session;
    mtmux_stream *stream;
    if (mtmux_dial(addr, &cfg, &session) != MTMUX_OK) {
        fprintf(stderr, "dial: %s\n", mtmux_last_error());
        return 1;
    }
    mtmux_session_open_stream(session, &stream);
    mtmux_stream_write_all(stream, "world", 5);
    mtmux_stream_close_write(stream); /* the server reads end-of-stream */
    char reply[64];
    size_t len = 0;
    ptrdiff_t n;
    while ((n = mtmux_stream_read(stream, reply + len, sizeof reply - 1 - len)) > 0)
        len += (size_t)n;
    reply[len] = '\0';
    printf("%s\n", reply);

    pthread_join(t, NULL);
    mtmux_stream_free(stream);
    mtmux_session_close(session);
    mtmux_session_free(session);
    mtmux_listener_free(listener);
    return n == 0 && strcmp(reply, "hello, world") == 0 ? 0 : 1;
}
