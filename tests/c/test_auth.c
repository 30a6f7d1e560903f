/* Pre-shared key authentication through the C ABI: the same key on both ends carries data; a
 * wrong or missing key fails at once with MTMUX_ERR_AUTH and a message naming the mismatch;
 * the key bytes are copied (the caller may wipe them right after the call); bad key fields
 * are refused with MTMUX_ERR_INVALID_CONFIG. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

static const char KEY[] = "a pre-shared key for the C tests";
static const char OTHER[] = "another key, of the same length!";

static mtmux_config keyed(uint32_t tunnels, const char *key) {
    mtmux_config c = test_cfg(tunnels);
    c.single_port = 1;
    c.key = (const uint8_t *)key;
    c.key_len = strlen(key);
    return c;
}

static void test_same_key_carries_data(void) {
    pair p;
    mtmux_stream *cs = NULL, *ss = NULL;
    /* The key lives in a buffer the caller wipes once the configs have been used. */
    char buf[64];
    strcpy(buf, KEY);
    mtmux_config cfg = keyed(3, buf);
    if (!pair_open(&p, &cfg))
        return;
    memset(buf, 0, sizeof buf);

    static unsigned char data[256 << 10], got[256 << 10];
    fill_pattern(data, sizeof data, 9);
    CHECK_OK(mtmux_session_open_stream(p.client, &cs));
    CHECK_OK(mtmux_stream_write_all(cs, data, sizeof data));
    CHECK_OK(mtmux_stream_close_write(cs));
    CHECK_OK(mtmux_session_accept_stream_timeout(p.server, 10000, &ss));
    CHECK_OK(mtmux_stream_set_read_timeout(ss, 10000));
    CHECK_EQ(read_to_end(ss, got, sizeof got), (long long)sizeof got);
    CHECK(memcmp(data, got, sizeof data) == 0);
out:
    mtmux_stream_free(cs);
    mtmux_stream_free(ss);
    pair_free(&p);
}

/* Dial a listener configured with `server_key` using `client_key` (NULL: none) and expect
 * MTMUX_ERR_AUTH with `want` in the message, quickly. */
static void expect_auth_failure(const char *server_key, const char *client_key, const char *want) {
    mtmux_listener *l = NULL;
    mtmux_session *s = NULL;
    char addr[MTMUX_ADDR_STRLEN];
    mtmux_config server = server_key ? keyed(2, server_key) : test_cfg(2);
    mtmux_config client = client_key ? keyed(2, client_key) : test_cfg(2);
    server.single_port = client.single_port = 1;
    CHECK_OK(mtmux_listen("127.0.0.1:0", &server, &l));
    CHECK_OK(mtmux_listener_local_addr(l, addr, sizeof addr));
    double start = now_ms();
    CHECK_EQ(mtmux_dial(addr, &client, &s), MTMUX_ERR_AUTH);
    CHECK(now_ms() - start < 3000); /* an answer, not the handshake timeout */
    if (!check(strstr(mtmux_last_error(), want) != NULL, want, __FILE__, __LINE__))
        fprintf(stderr, "      message: %s\n", mtmux_last_error());
    CHECK(s == NULL);
    CHECK_EQ(MTMUX_ERR_AUTH, -24);
    CHECK(strstr(mtmux_strerror(MTMUX_ERR_AUTH), "authentication") != NULL);
out:
    mtmux_session_free(s);
    mtmux_listener_free(l);
}

static void test_wrong_and_missing_keys(void) {
    expect_auth_failure(KEY, OTHER, "different pre-shared key");
    expect_auth_failure(KEY, NULL, "requires a pre-shared key");
    expect_auth_failure(NULL, KEY, "server has none");
}

static void test_bad_key_fields(void) {
    mtmux_config c = keyed(2, "short");
    CHECK_EQ(mtmux_config_validate(&c), MTMUX_ERR_INVALID_CONFIG);
    CHECK(strstr(mtmux_last_error(), "16 to 1024") != NULL);
    c = test_cfg(2);
    c.key_len = 32; /* NULL key with a length */
    CHECK_EQ(mtmux_config_validate(&c), MTMUX_ERR_INVALID_CONFIG);
    CHECK(strstr(mtmux_last_error(), "key") != NULL);
    c = keyed(2, KEY);
    c.key_len = MTMUX_KEY_MAX_LEN + 1;
    static uint8_t big[MTMUX_KEY_MAX_LEN + 1];
    c.key = big;
    CHECK_EQ(mtmux_config_validate(&c), MTMUX_ERR_INVALID_CONFIG);
    c.key_len = MTMUX_KEY_MIN_LEN;
    CHECK_OK(mtmux_config_validate(&c));
out:;
}

int main(int argc, char **argv) {
    static const test_case tests[] = {
        {"same_key_carries_data", test_same_key_carries_data},
        {"wrong_and_missing_keys", test_wrong_and_missing_keys},
        {"bad_key_fields", test_bad_key_fields},
    };
    return run_tests("C pre-shared key tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
