/*
 * echo_client: send messages to echo_server, one stream each, and print the replies.
 *
 *   usage: echo_client ADDR [TUNNELS] [MESSAGE...]
 *
 * Dials ADDR over TUNNELS tunnels (default 4; must match the server). Each MESSAGE (or, if
 * there is none, each line of standard input) goes on its own stream: written, half-closed,
 * and the echo read back to end of stream. Prints per-tunnel statistics at the end.
 */
#include "mtmux.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Send one message on a new stream and print its echo; returns 0 on success. */
static const char *tunnel_state_name(mtmux_tunnel_state state) {
    switch (state) {
    case MTMUX_TUNNEL_LIVE: return "live";
    case MTMUX_TUNNEL_STALE: return "stale";
    case MTMUX_TUNNEL_DEAD: return "dead";
    case MTMUX_TUNNEL_REJOINING: return "rejoining";
    }
    return "unknown";
}

static int echo(const mtmux_session *session, const char *msg, size_t len) {
    mtmux_stream *stream;
    if (mtmux_session_open_stream(session, &stream) != MTMUX_OK) {
        fprintf(stderr, "open: %s\n", mtmux_last_error());
        return 1;
    }
    int rc = 1;
    mtmux_stream_set_read_timeout(stream, 10000);
    if (mtmux_stream_write_all(stream, msg, len) != MTMUX_OK ||
        mtmux_stream_close_write(stream) != MTMUX_OK) {
        fprintf(stderr, "write: %s\n", mtmux_last_error());
        goto out;
    }
    char buf[4096];
    ptrdiff_t n;
    while ((n = mtmux_stream_read(stream, buf, sizeof buf)) > 0)
        fwrite(buf, 1, (size_t)n, stdout);
    if (n < 0) {
        fprintf(stderr, "read: %s\n", mtmux_last_error());
        goto out;
    }
    rc = 0;
out:
    mtmux_stream_free(stream);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s ADDR [TUNNELS] [MESSAGE...]\n"
                        "  echo each MESSAGE (or each line of stdin) through echo_server\n",
                argv[0]);
        return 2;
    }
    mtmux_config cfg;
    mtmux_config_init(&cfg);
    cfg.tunnels = argc > 2 ? (uint32_t)atoi(argv[2]) : 4;

    mtmux_session *session;
    if (mtmux_dial(argv[1], &cfg, &session) != MTMUX_OK) {
        fprintf(stderr, "dial: %s\n", mtmux_last_error());
        return 1;
    }
    int failed = 0;
    if (argc > 3) {
        for (int i = 3; i < argc && !failed; i++) {
            failed = echo(session, argv[i], strlen(argv[i]));
            putchar('\n');
        }
    } else {
        char line[4096];
        while (!failed && fgets(line, sizeof line, stdin))
            failed = echo(session, line, strlen(line));
    }

    mtmux_tunnel_stats stats[256];
    size_t tunnels = 0;
    mtmux_session_tunnel_stats(session, stats, 256, &tunnels);
    for (size_t i = 0; i < tunnels && i < 256; i++)
        fprintf(stderr,
                "tunnel %u: %s, generation %u, %llu bytes sent, %llu received, rtt %llu us, "
                "%llu frames re-sent\n",
                stats[i].index, tunnel_state_name(stats[i].state), stats[i].generation,
                (unsigned long long)stats[i].bytes_sent,
                (unsigned long long)stats[i].bytes_received,
                (unsigned long long)stats[i].rtt_us,
                (unsigned long long)stats[i].frames_resent);
    mtmux_session_close(session);
    mtmux_session_free(session);
    return failed;
}
