#!/usr/bin/env bash
# A/B check of HTTP/1.1 keep-alive throughput for two (or more) aegis-proxy binaries, run
# alternately on this machine: nginx origin (the peer harness's config) on CPU 0 with wrk,
# the proxy pinned to CPU 1 with one worker. Needs nginx and wrk (scripts/bench-peers.sh
# installs both). Usage: bash scripts/bench-h1-ab.sh OLD_BIN NEW_BIN [ROUNDS]
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 OLD_BIN NEW_BIN [ROUNDS]" >&2; exit 2; }
OLD=$1 NEW=$2 ROUNDS=${3:-2}
ORIGIN_PORT=9100 PROXY_PORT=27200
dir=$(mktemp -d)
sed -e "s#{dir}#$dir#g" -e "s#{upstream}#$ORIGIN_PORT#g" \
  "$(dirname "$0")/../../shared/bench/peers/origin-nginx.conf" > "$dir/origin.conf"
taskset -c 0 nginx -c "$dir/origin.conf" & ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null; rm -rf "$dir"' EXIT
one() {
  taskset -c 1 "$1" reverse-proxy --from 127.0.0.1:$PROXY_PORT --to 127.0.0.1:$ORIGIN_PORT \
    --workers 1 > /dev/null 2>&1 & local pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null 127.0.0.1:$PROXY_PORT/ && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c50 -d2s http://127.0.0.1:$PROXY_PORT/ > /dev/null   # warm-up
  taskset -c 0 wrk -t1 -c50 -d8s --latency http://127.0.0.1:$PROXY_PORT/ \
    | awk -v b="$1" '/Requests\/sec/ {rps=$2} / 99%/ {p99=$2} END {print b, rps " req/s", "p99 " p99}'
  kill $pid; wait $pid 2>/dev/null || true
}
for _ in $(seq "$ROUNDS"); do one "$OLD"; one "$NEW"; done
