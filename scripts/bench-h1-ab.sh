#!/usr/bin/env bash
# A/B check of HTTP/1.1 keep-alive throughput for two (or more) aegis-proxy binaries, run
# alternately on this machine: nginx origin (the peer harness's config) on CPU 0 with wrk,
# the proxy pinned to CPU 1 with one worker. Needs nginx and wrk (scripts/bench-peers.sh
# installs both). Any executable taking `reverse-proxy --from A --to B --workers 1` can be
# compared. Usage: bash scripts/bench-h1-ab.sh BIN_A BIN_B [MORE_BINS...] [ROUNDS]
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 BIN_A BIN_B [MORE_BINS...] [ROUNDS]" >&2; exit 2; }
BINS=("$@") ROUNDS=2
if [[ ${BINS[-1]} =~ ^[0-9]+$ ]]; then ROUNDS=${BINS[-1]}; unset 'BINS[-1]'; fi
ORIGIN_PORT=9100 PROXY_PORT=27200
dir=$(mktemp -d)
sed -e "s#{dir}#$dir#g" -e "s#{upstream}#$ORIGIN_PORT#g" \
  "$(dirname "$0")/../../shared/bench/peers/origin-nginx.conf" > "$dir/origin.conf"
taskset -c 0 nginx -c "$dir/origin.conf" & ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null; rm -rf "$dir"' EXIT
# utime + stime of a process (all threads) and its children, in clock ticks: nginx serves from
# a worker child of its master.
cpu_ticks() {
  local total=0 stat
  for p in "$1" $(pgrep -P "$1"); do
    stat=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
    total=$(( total + ${stat% *} + ${stat#* } ))
  done
  echo "$total"
}
one() {
  taskset -c 1 "$1" reverse-proxy --from 127.0.0.1:$PROXY_PORT --to 127.0.0.1:$ORIGIN_PORT \
    --workers 1 > /dev/null 2>&1 & local pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null 127.0.0.1:$PROXY_PORT/ && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c50 -d2s http://127.0.0.1:$PROXY_PORT/ > /dev/null   # warm-up
  local before; before=$(cpu_ticks "$pid")
  taskset -c 0 wrk -t1 -c50 -d8s --latency http://127.0.0.1:$PROXY_PORT/ > "$dir/wrk.txt"
  local ticks=$(( $(cpu_ticks "$pid") - before ))
  awk -v b="$1" -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" '
    / requests in / {n=$1} /Requests\/sec/ {rps=$2} / 99%/ {p99=$2}
    END {printf "%s %s req/s p99 %s cpu %.1f us/req\n", b, rps, p99, ticks / hz * 1e6 / n}' "$dir/wrk.txt"
  kill $pid; wait $pid 2>/dev/null || true
}
for _ in $(seq "$ROUNDS"); do for bin in "${BINS[@]}"; do one "$bin"; done; done
