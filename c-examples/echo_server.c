/*
 * echo_server: echo every stream of every session, one thread per stream.
 *
 *   usage: echo_server ADDR [TUNNELS] [SESSIONS]
 *
 * Listens at ADDR (e.g. 127.0.0.1:7000; port 0 picks free ports) on ports ADDR .. ADDR +
 * TUNNELS - 1 (default 4 tunnels) and sends back whatever each stream receives, then
 * half-closes it. Exits after SESSIONS sessions have ended (default 0: runs until killed).
 */
#include "mtmux.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static void *echo_stream(void *arg) {
    mtmux_stream *stream = arg;
    char buf[65536];
    ptrdiff_t n;
    while ((n = mtmux_stream_read(stream, buf, sizeof buf)) > 0) {
        if (mtmux_stream_write_all(stream, buf, (size_t)n) != MTMUX_OK)
            break;
    }
    if (n < 0 && n != MTMUX_ERR_SESSION_CLOSED)
        fprintf(stderr, "stream: %s\n", mtmux_last_error());
    mtmux_stream_close_write(stream);
    mtmux_stream_free(stream);
    return NULL;
}

/* Accept the session's streams until it ends, then report and release it. */
static void *serve_session(void *arg) {
    mtmux_session *session = arg;
    char peer[MTMUX_ADDR_STRLEN] = "?";
    mtmux_session_peer_addr(session, 0, peer, sizeof peer);
    printf("session from %s\n", peer);
    fflush(stdout);

    pthread_t *threads = NULL;
    size_t count = 0, cap = 0;
    mtmux_stream *stream;
    while (mtmux_session_accept_stream(session, &stream) == MTMUX_OK) {
        if (count == cap) {
            cap = cap ? 2 * cap : 16;
            pthread_t *grown = realloc(threads, cap * sizeof *threads);
            if (!grown) {
                mtmux_stream_free(stream);
                break;
            }
            threads = grown;
        }
        if (pthread_create(&threads[count], NULL, echo_stream, stream) != 0) {
            mtmux_stream_free(stream);
            continue;
        }
        count++;
    }
    for (size_t i = 0; i < count; i++)
        pthread_join(threads[i], NULL);
    free(threads);

    mtmux_tunnel_stats stats[256];
    size_t tunnels = 0;
    mtmux_session_tunnel_stats(session, stats, 256, &tunnels);
    unsigned long long received = 0;
    for (size_t i = 0; i < tunnels && i < 256; i++)
        received += stats[i].bytes_received;
    printf("session from %s ended: %zu streams, %llu bytes received over %zu tunnels\n", peer,
           count, received, tunnels);
    fflush(stdout);
    mtmux_session_close(session);
    mtmux_session_free(session);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s ADDR [TUNNELS] [SESSIONS]\n"
                        "  echo every stream; exit after SESSIONS sessions (0: never)\n",
                argv[0]);
        return 2;
    }
    mtmux_config cfg;
    mtmux_config_init(&cfg);
    cfg.tunnels = argc > 2 ? (uint32_t)atoi(argv[2]) : 4;
    int sessions = argc > 3 ? atoi(argv[3]) : 0;

    mtmux_listener *listener;
    if (mtmux_listen(argv[1], &cfg, &listener) != MTMUX_OK) {
        fprintf(stderr, "listen: %s\n", mtmux_last_error());
        return 1;
    }
    char addr[MTMUX_ADDR_STRLEN];
    mtmux_listener_local_addr(listener, addr, sizeof addr);
    printf("listening on %s (%u tunnels)\n", addr, cfg.tunnels);
    fflush(stdout);

    pthread_t threads[64];
    int running = 0;
    for (int served = 0; sessions == 0 || served < sessions; served++) {
        mtmux_session *session;
        if (mtmux_listener_accept(listener, &session) != MTMUX_OK) {
            fprintf(stderr, "accept: %s\n", mtmux_last_error());
            break;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, serve_session, session) != 0) {
            mtmux_session_free(session);
            continue;
        }
        if (sessions > 0 && running < 64)
            threads[running++] = t; /* joined before exiting */
        else
            pthread_detach(t);
    }
    for (int i = 0; i < running; i++)
        pthread_join(threads[i], NULL);
    mtmux_listener_free(listener);
    return 0;
}
