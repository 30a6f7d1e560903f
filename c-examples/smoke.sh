#!/usr/bin/env bash
# Runs the C examples once over loopback (part of `make test-c`): hello and bulk in one
# process each, then echo_server and echo_client as two processes.
# Usage: c-examples/smoke.sh BUILD_DIR
set -euo pipefail
bin=${1:?usage: smoke.sh BUILD_DIR}
work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Usage lines.
for e in echo_server echo_client bulk; do
    if "$bin/$e" >/dev/null 2>"$work/usage"; then echo "smoke: $e without arguments succeeded" >&2; exit 1; fi
    grep -q '^usage:' "$work/usage" || { echo "smoke: $e printed no usage line" >&2; exit 1; }
done

[ "$(timeout 60 "$bin/hello")" = "hello, world" ] || { echo "smoke: hello failed" >&2; exit 1; }

timeout 60 "$bin/bulk" self 4 64 | tee "$work/bulk"
grep -q '^sent 64.0 MiB' "$work/bulk"

# The server prints its address first; a FIFO hands it over without polling.
mkfifo "$work/out"
timeout 60 "$bin/echo_server" 127.0.0.1:0 3 1 >"$work/out" &
server=$!
exec 3<"$work/out"
read -r -t 30 line <&3
addr=${line#listening on }
addr=${addr%% *}
reply=$(timeout 30 "$bin/echo_client" "$addr" 3 hello world 2>/dev/null)
[ "$reply" = $'hello\nworld' ] || { echo "smoke: echo_client got '$reply'" >&2; exit 1; }
wait "$server"
server=
cat <&3
echo "smoke: C examples ok"
