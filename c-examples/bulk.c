/*
 * bulk: send a file or generated data over one stream striped across N tunnels, and print
 * the throughput.
 *
 *   usage: bulk recv ADDR [TUNNELS]
 *          bulk send ADDR [TUNNELS] [MIB | FILE]
 *          bulk self [TUNNELS] [MIB]
 *
 * `recv` listens at ADDR, receives one transfer, answers with its byte count and checksum
 * and exits. `send` dials ADDR (default 4 tunnels), sends MIB mebibytes of generated data
 * (default 256) or the contents of FILE, half-closes, and checks the receiver's answer.
 * `self` runs both ends in one process over loopback.
 */
#include "mtmux.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK (1 << 20)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* An order-sensitive checksum over a byte stream cut into arbitrary pieces. */
typedef struct {
    uint64_t h, total;
    unsigned char part[8];
    size_t n;
} checksum;

static void mix(checksum *c, const unsigned char *word) {
    uint64_t w;
    memcpy(&w, word, 8);
    c->h = (c->h ^ w) * 0x100000001b3ull;
}

static void checksum_update(checksum *c, const unsigned char *p, size_t len) {
    c->total += len;
    while (len > 0 && c->n > 0) {
        c->part[c->n++] = *p++;
        len--;
        if (c->n == 8) {
            mix(c, c->part);
            c->n = 0;
        }
    }
    for (; len >= 8; p += 8, len -= 8)
        mix(c, p);
    while (len > 0) {
        c->part[c->n++] = *p++;
        len--;
    }
}

static uint64_t checksum_final(checksum *c) {
    memset(c->part + c->n, 0, 8 - c->n);
    mix(c, c->part);
    return c->h ^ c->total;
}

static void die(const char *what) {
    fprintf(stderr, "bulk: %s: %s\n", what, mtmux_last_error());
    exit(1);
}

static mtmux_config config(uint32_t tunnels) {
    mtmux_config cfg;
    mtmux_config_init(&cfg);
    cfg.tunnels = tunnels;
    return cfg;
}

static void print_rate(const char *role, uint64_t bytes, double seconds, uint32_t tunnels) {
    double mib = bytes / 1048576.0;
    printf("%s %.1f MiB in %.3f s: %.1f MiB/s (%.2f Gbit/s) over %u tunnels\n", role, mib,
           seconds, mib / seconds, bytes * 8 / seconds / 1e9, tunnels);
    fflush(stdout);
}

/* Receive one transfer on `listener`, answer "<bytes> <checksum>\n". */
static int receive(mtmux_listener *listener, uint32_t tunnels) {
    mtmux_session *session;
    mtmux_stream *stream;
    if (mtmux_listener_accept(listener, &session) != MTMUX_OK)
        die("accept");
    if (mtmux_session_accept_stream(session, &stream) != MTMUX_OK)
        die("accept stream");
    unsigned char *buf = malloc(CHUNK);
    if (!buf)
        return 1;
    checksum c = {.h = 0xcbf29ce484222325ull};
    double start = now_s();
    ptrdiff_t n;
    while ((n = mtmux_stream_read(stream, buf, CHUNK)) > 0)
        checksum_update(&c, buf, (size_t)n);
    if (n < 0)
        die("read");
    double elapsed = now_s() - start;
    uint64_t total = c.total, sum = checksum_final(&c);
    char answer[64];
    int len = snprintf(answer, sizeof answer, "%" PRIu64 " %016" PRIx64 "\n", total, sum);
    if (mtmux_stream_write_all(stream, answer, (size_t)len) != MTMUX_OK ||
        mtmux_stream_close_write(stream) != MTMUX_OK)
        die("answer");
    print_rate("received", total, elapsed, tunnels);
    /* Wait for the sender to read the answer and leave, then close. */
    mtmux_stream_set_read_timeout(stream, 30000);
    mtmux_stream_read(stream, buf, 1);
    free(buf);
    mtmux_stream_free(stream);
    mtmux_session_close(session);
    mtmux_session_free(session);
    return 0;
}

/* Send `mib` MiB of generated data (or `file`) to `addr` and check the answer. */
static int send_to(const char *addr, uint32_t tunnels, long mib, const char *file) {
    mtmux_config cfg = config(tunnels);
    mtmux_session *session;
    mtmux_stream *stream;
    FILE *in = NULL;
    if (file && !(in = fopen(file, "rb"))) {
        perror(file);
        return 1;
    }
    if (mtmux_dial(addr, &cfg, &session) != MTMUX_OK)
        die("dial");
    if (mtmux_session_open_stream(session, &stream) != MTMUX_OK)
        die("open stream");
    unsigned char *buf = malloc(CHUNK);
    if (!buf)
        return 1;
    for (size_t i = 0; i < CHUNK; i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 11));
    checksum c = {.h = 0xcbf29ce484222325ull};
    double start = now_s();
    for (long i = 0; in || i < mib; i++) {
        size_t len = CHUNK;
        if (in && (len = fread(buf, 1, CHUNK, in)) == 0)
            break;
        checksum_update(&c, buf, len);
        if (mtmux_stream_write_all(stream, buf, len) != MTMUX_OK)
            die("write");
    }
    if (mtmux_stream_close_write(stream) != MTMUX_OK)
        die("close_write");
    char answer[64] = {0};
    ptrdiff_t n, got = 0;
    while ((n = mtmux_stream_read(stream, answer + got, sizeof answer - 1 - (size_t)got)) > 0)
        got += n;
    if (n < 0)
        die("read answer");
    double elapsed = now_s() - start;
    uint64_t total = c.total, sum = checksum_final(&c), their_total = 0, their_sum = 0;
    if (sscanf(answer, "%" SCNu64 " %" SCNx64, &their_total, &their_sum) != 2 ||
        their_total != total || their_sum != sum) {
        fprintf(stderr, "bulk: the receiver got different data: %s", answer);
        return 1;
    }
    print_rate("sent", total, elapsed, tunnels);
    mtmux_tunnel_stats stats[256];
    size_t count = 0;
    mtmux_session_tunnel_stats(session, stats, 256, &count);
    for (size_t i = 0; i < count && i < 256; i++)
        printf("  tunnel %u: %5.1f%% of the bytes\n", stats[i].index,
               100.0 * stats[i].bytes_sent / (total ? total : 1));
    free(buf);
    if (in)
        fclose(in);
    mtmux_stream_free(stream);
    mtmux_session_close(session);
    mtmux_session_free(session);
    return 0;
}

typedef struct {
    mtmux_listener *listener;
    uint32_t tunnels;
} receiver;

static void *receiver_thread(void *arg) {
    receiver *r = arg;
    receive(r->listener, r->tunnels);
    return NULL;
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s recv ADDR [TUNNELS]\n"
            "       %s send ADDR [TUNNELS] [MIB | FILE]\n"
            "       %s self [TUNNELS] [MIB]\n",
            argv0, argv0, argv0);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return usage(argv[0]);
    const char *mode = argv[1];
    if (strcmp(mode, "recv") == 0 && (argc == 3 || argc == 4)) {
        uint32_t tunnels = argc > 3 ? (uint32_t)atoi(argv[3]) : 4;
        mtmux_config cfg = config(tunnels);
        mtmux_listener *listener;
        if (mtmux_listen(argv[2], &cfg, &listener) != MTMUX_OK)
            die("listen");
        char addr[MTMUX_ADDR_STRLEN];
        mtmux_listener_local_addr(listener, addr, sizeof addr);
        printf("receiving on %s\n", addr);
        fflush(stdout);
        int rc = receive(listener, tunnels);
        mtmux_listener_free(listener);
        return rc;
    }
    if (strcmp(mode, "send") == 0 && argc >= 3 && argc <= 5) {
        uint32_t tunnels = argc > 3 ? (uint32_t)atoi(argv[3]) : 4;
        const char *what = argc > 4 ? argv[4] : "256";
        char *end;
        long mib = strtol(what, &end, 10);
        return send_to(argv[2], tunnels, mib, *end == '\0' ? NULL : what);
    }
    if (strcmp(mode, "self") == 0 && argc <= 4) {
        receiver r = {NULL, argc > 2 ? (uint32_t)atoi(argv[2]) : 4};
        long mib = argc > 3 ? atol(argv[3]) : 256;
        mtmux_config cfg = config(r.tunnels);
        if (mtmux_listen("127.0.0.1:0", &cfg, &r.listener) != MTMUX_OK)
            die("listen");
        char addr[MTMUX_ADDR_STRLEN];
        mtmux_listener_local_addr(r.listener, addr, sizeof addr);
        pthread_t t;
        if (pthread_create(&t, NULL, receiver_thread, &r) != 0)
            return 1;
        int rc = send_to(addr, r.tunnels, mib, NULL);
        pthread_join(t, NULL);
        mtmux_listener_free(r.listener);
        return rc;
    }
    return usage(argv[0]);
}
