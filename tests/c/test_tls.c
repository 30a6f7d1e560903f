/*
 * TLS through the C ABI (the library built with the cargo feature `tls`, as `make lib-c`
 * does): a session with TLS and a pre-shared key, a wrong CA refused with MTMUX_ERR_AUTH,
 * fingerprint pinning, mutual TLS, and bad TLS settings.
 *
 *   test_tls [NAME-SUBSTRING]
 *
 * The PEM files come from tests/c/make-certs.sh (the Makefile writes them to build/tls);
 * MTMUX_TEST_TLS_DIR names another directory. Environment as in harness.h.
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_dir[512];

/* The path of `name` in the certificate directory (a static buffer per call site slot). */
static const char *file(const char *name) {
    static char paths[8][600];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", g_dir, name);
    return p;
}

/* The same 32-byte pre-shared key on both ends. */
static const unsigned char KEY[] = "0123456789abcdef0123456789abcdef";

static mtmux_config server_cfg(void) {
    mtmux_config c = test_cfg(4);
    c.key = KEY;
    c.key_len = 32;
    c.tls_cert_file = file("server.pem");
    c.tls_key_file = file("server.key");
    return c;
}

static mtmux_config client_cfg(const char *ca) {
    mtmux_config c = test_cfg(4);
    c.key = KEY;
    c.key_len = 32;
    c.tls_ca_file = ca ? file(ca) : NULL;
    return c;
}

/* A writer thread: `len` bytes of `buf` to `s`, then the write side closed. */
typedef struct {
    mtmux_stream *s;
    const unsigned char *buf;
    size_t len;
    int32_t result;
} writer;

static void *write_all_then_close(void *arg) {
    writer *w = arg;
    w->result = mtmux_stream_write_all(w->s, w->buf, w->len);
    if (w->result == MTMUX_OK)
        w->result = mtmux_stream_close_write(w->s);
    return NULL;
}

/* Send `len` bytes from `out` on `from` (its own thread: more than a window's worth) and read
 * them on `to`; returns 1 if they arrived intact. */
static int one_way(mtmux_stream *from, mtmux_stream *to, const unsigned char *out,
                   unsigned char *in, size_t len) {
    int ok = 0, started = 0;
    pthread_t t;
    writer w = {from, out, len, -1};
    CHECK(pthread_create(&t, NULL, write_all_then_close, &w) == 0);
    started = 1;
    memset(in, 0, len);
    CHECK_EQ(read_to_end(to, in, len), (long long)len);
    CHECK(memcmp(in, out, len) == 0);
    ok = 1;
out:
    if (started) {
        pthread_join(t, NULL);
        ok = ok && check_eq(w.result, MTMUX_OK, "writer", __FILE__, __LINE__);
    }
    return ok;
}

/* A verified exchange: `len` pattern bytes each way on one stream. */
static int exchange(pair *p, size_t len) {
    int ok = 0;
    mtmux_stream *cs = NULL, *ss = NULL;
    unsigned char *out = malloc(len), *in = malloc(len);
    CHECK(out && in);
    fill_pattern(out, len, 42);
    CHECK_OK(mtmux_session_open_stream(p->client, &cs));
    CHECK_OK(mtmux_stream_set_read_timeout(cs, 30000));
    /* The first write makes the stream known to the server. */
    CHECK_OK(mtmux_stream_write_all(cs, out, 1));
    CHECK_OK(mtmux_session_accept_stream_timeout(p->server, 10000, &ss));
    CHECK_OK(mtmux_stream_set_read_timeout(ss, 30000));
    unsigned char first = 0;
    CHECK_EQ(mtmux_stream_read(ss, &first, 1), 1);
    CHECK_EQ(first, out[0]);
    CHECK(one_way(cs, ss, out + 1, in, len - 1));
    CHECK(one_way(ss, cs, out, in, len));
    ok = 1;
out:
    mtmux_stream_free(cs);
    mtmux_stream_free(ss);
    free(out);
    free(in);
    return ok;
}

/* Dial a TLS listener with `client`; expects `want`, and `says` in the message. */
static void dial_fails(const mtmux_config *server, const mtmux_config *client, int32_t want,
                       const char *says) {
    mtmux_listener *l = NULL;
    mtmux_session *s = NULL;
    char addr[MTMUX_ADDR_STRLEN];
    CHECK_OK(mtmux_listen("127.0.0.1:0", server, &l));
    CHECK_OK(mtmux_listener_local_addr(l, addr, sizeof addr));
    CHECK_EQ(mtmux_dial(addr, client, &s), want);
    CHECK(s == NULL);
    if (!check(strstr(mtmux_last_error(), says) != NULL, says, __FILE__, __LINE__))
        fprintf(stderr, "      message: %s\n", mtmux_last_error());
out:
    mtmux_session_free(s);
    mtmux_listener_free(l);
}

/* ---- Tests ------------------------------------------------------------------------------- */

/* TLS and a pre-shared key together: 4 MiB each way over 4 tunnels, intact. */
static void test_tls_session_with_a_key(void) {
    pair p;
    mtmux_config s = server_cfg(), c = client_cfg("ca.pem");
    if (!pair_open_with(&p, &s, &c))
        return;
    CHECK(exchange(&p, (size_t)env_u64("MTMUX_TEST_TLS_MB", 4) << 20));
    mtmux_tunnel_stats stats[4];
    size_t n = 0;
    CHECK_OK(mtmux_session_tunnel_stats(p.client, stats, 4, &n));
    CHECK_EQ(n, 4);
    for (size_t i = 0; i < n; i++)
        CHECK_EQ(stats[i].alive, 1);
out:
    pair_free(&p);
}

/* The server's certificate is signed by a CA the client does not trust. */
static void test_wrong_ca_is_refused(void) {
    mtmux_config s = server_cfg(), c = client_cfg("other-ca.pem");
    dial_fails(&s, &c, MTMUX_ERR_AUTH, "not signed by a trusted CA");
}

/* Pinning the server certificate's fingerprint instead of a CA; a wrong pin is refused. */
static void test_fingerprint_pinning(void) {
    pair p;
    char fp[160] = {0};
    FILE *f = fopen(file("server.fp"), "r");
    CHECK(f != NULL);
    CHECK(fgets(fp, sizeof fp, f) != NULL);
    fclose(f);
    fp[strcspn(fp, "\r\n")] = '\0';
    mtmux_config s = server_cfg(), c = client_cfg(NULL);
    c.tls_fingerprint = fp;
    if (!pair_open_with(&p, &s, &c))
        return;
    int ok = exchange(&p, 64 << 10);
    pair_free(&p);
    CHECK(ok);

    /* The same pin with its last byte changed. */
    size_t len = strlen(fp);
    fp[len - 1] = fp[len - 1] == '0' ? '1' : '0';
    dial_fails(&s, &c, MTMUX_ERR_AUTH, "fingerprint mismatch");
out:;
}

/* Mutual TLS: a client without a certificate is refused; one with a certificate of the CA
 * gets in. */
static void test_mutual_tls(void) {
    pair p;
    mtmux_config s = server_cfg(), c = client_cfg("ca.pem");
    s.tls_ca_file = file("ca.pem");
    dial_fails(&s, &c, MTMUX_ERR_AUTH, "requires a client certificate");
    c.tls_cert_file = file("client.pem");
    c.tls_key_file = file("client.key");
    if (!pair_open_with(&p, &s, &c))
        return;
    int ok = exchange(&p, 64 << 10);
    pair_free(&p);
    CHECK(ok);
out:;
}

/* Bad settings are refused before any connection, naming the file or the field. */
static void test_bad_tls_settings(void) {
    mtmux_listener *l = NULL;
    mtmux_config s = server_cfg();
    s.tls_cert_file = file("missing.pem");
    CHECK_EQ(mtmux_listen("127.0.0.1:0", &s, &l), MTMUX_ERR_INVALID_CONFIG);
    CHECK(strstr(mtmux_last_error(), "missing.pem") != NULL);
    CHECK_EQ(mtmux_config_validate(&s), MTMUX_ERR_INVALID_CONFIG);

    s = server_cfg();
    s.tls_key_file = NULL;
    CHECK_EQ(mtmux_listen("127.0.0.1:0", &s, &l), MTMUX_ERR_INVALID_CONFIG);
    CHECK(strstr(mtmux_last_error(), "tls_key_file") != NULL);

    s = server_cfg();
    s.tls_fingerprint = "00";
    CHECK_EQ(mtmux_listen("127.0.0.1:0", &s, &l), MTMUX_ERR_INVALID_CONFIG);
    CHECK(strstr(mtmux_last_error(), "tls_fingerprint") != NULL);

    /* A key file that holds a certificate. */
    s = server_cfg();
    s.tls_key_file = file("server.pem");
    CHECK_EQ(mtmux_config_validate(&s), MTMUX_ERR_INVALID_CONFIG);
    CHECK(strstr(mtmux_last_error(), "holds no private key") != NULL);

    mtmux_config c = client_cfg("ca.pem");
    c.tls_fingerprint = "00";
    mtmux_session *sess = NULL;
    CHECK_EQ(mtmux_dial("127.0.0.1:9", &c, &sess), MTMUX_ERR_INVALID_CONFIG);
    CHECK(strstr(mtmux_last_error(), "not both") != NULL);
    CHECK(sess == NULL);

    s = server_cfg();
    CHECK_OK(mtmux_config_validate(&s));
    c = client_cfg("ca.pem");
    CHECK_OK(mtmux_config_validate(&c));
out:
    mtmux_listener_free(l);
}

int main(int argc, char **argv) {
    const char *dir = getenv("MTMUX_TEST_TLS_DIR");
    snprintf(g_dir, sizeof g_dir, "%s", dir && *dir ? dir : "build/tls");
    static const test_case tests[] = {
        {"tls_session_with_a_key", test_tls_session_with_a_key},
        {"wrong_ca_is_refused", test_wrong_ca_is_refused},
        {"fingerprint_pinning", test_fingerprint_pinning},
        {"mutual_tls", test_mutual_tls},
        {"bad_tls_settings", test_bad_tls_settings},
    };
    return run_tests("C TLS tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
