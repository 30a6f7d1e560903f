// The header compiles as C++ and links from C++: extern "C" names, typed enums, RAII handles.
#include "mtmux.h"

#include <cstdio>
#include <cstring>
#include <memory>

using listener_ptr = std::unique_ptr<mtmux_listener, decltype(&mtmux_listener_free)>;

int main() {
    mtmux_config cfg;
    mtmux_result r = mtmux_config_init(&cfg);
    if (r != MTMUX_OK || cfg.size != sizeof cfg)
        return 1;
    cfg.tunnels = 2;

    mtmux_listener *raw = nullptr;
    if (mtmux_listen("127.0.0.1:0", &cfg, &raw) != MTMUX_OK) {
        std::fprintf(stderr, "listen: %s\n", mtmux_last_error());
        return 1;
    }
    listener_ptr listener(raw, &mtmux_listener_free);
    char addr[MTMUX_ADDR_STRLEN];
    if (mtmux_listener_local_addr(listener.get(), addr, sizeof addr) != MTMUX_OK)
        return 1;

    mtmux_stream *none = nullptr;
    ptrdiff_t n = mtmux_stream_read(none, addr, sizeof addr);
    if (n != MTMUX_ERR_NULL || std::strstr(mtmux_last_error(), "stream is NULL") == nullptr)
        return 1;
    std::printf("C++: mtmux %s, listening on %s, %s\n", mtmux_version(), addr,
                mtmux_strerror(MTMUX_OK));
    return 0;
}
