#!/usr/bin/env bash
# A/B check of the proxy's CPU per request over TLS for two (or more) aegis-proxy binaries, run
# alternately: nginx origin (the peer harness's config) and the client on CPU 0, the proxy
# pinned to CPU 1 with one worker. Modes:
#   h2    h2load -c50 -m10 over TLS 1.3 (the harness's h2 scenario): req/s, proxy CPU us/req
#   hspq  pqload full handshakes offering only X25519MLKEM768, one GET each, 20 in flight
#         (the harness's hs-mlkem scenario): handshakes/s, proxy CPU us per handshake
# Needs nginx, h2load, openssl (scripts/bench-peers.sh installs them) and, for hspq, the
# harness's pqload build (PQLOAD=..., default: its cache).
# Usage: bash scripts/bench-tls-ab.sh h2|h2post|hspq BIN_A BIN_B [MORE_BINS...] [ROUNDS]
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 h2|h2post|hspq BIN_A BIN_B [MORE_BINS...] [ROUNDS]" >&2; exit 2; }
MODE=$1; shift
BINS=("$@") ROUNDS=2
if [[ ${BINS[-1]} =~ ^[0-9]+$ ]]; then ROUNDS=${BINS[-1]}; unset 'BINS[-1]'; fi
PQLOAD=${PQLOAD:-${XDG_CACHE_HOME:-$HOME/.cache}/aegis-peer-bench/pqload-target/release/pqload}
ORIGIN_PORT=9100 PROXY_PORT=27300 SECONDS_PER_RUN=6
dir=$(mktemp -d)
sed -e "s#{dir}#$dir#g" -e "s#{upstream}#$ORIGIN_PORT#g" \
  "$(dirname "$0")/../../shared/bench/peers/origin-nginx.conf" > "$dir/origin.conf"
taskset -c 0 nginx -c "$dir/origin.conf" & ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null; rm -rf "$dir"' EXIT

# ECDSA P-256 CA and leaf, as the peer harness makes them.
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key"
openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 1 -subj /CN=ab-ca -out "$dir/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$dir/key.pem"
openssl req -new -key "$dir/key.pem" -subj /CN=localhost -out "$dir/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$dir/ext.cnf"
openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 1 -sha256 -extfile "$dir/ext.cnf" -out "$dir/cert.pem" 2>/dev/null

cpu_ticks() { local s; s=$(cut -d' ' -f14,15 "/proc/$1/stat"); echo $(( ${s% *} + ${s#* } )); }
load() {   # load SECONDS: prints the number of requests (h2) or handshakes (hspq) done
  local url=https://127.0.0.1:$PROXY_PORT/
  case $MODE in
    h2) taskset -c 0 h2load -t1 -c50 -m10 -D"$1" "$url" 2>&1 | grep -o '[0-9]* succeeded' | cut -d' ' -f1 ;;
    h2post) head -c 1024 /dev/zero > "$dir/body"
        taskset -c 0 h2load -t1 -c50 -m10 -D"$1" -d "$dir/body" "$url" 2>&1 |
          grep -o '[0-9]* succeeded' | cut -d' ' -f1 ;;
    hspq) taskset -c 0 "$PQLOAD" handshakes --url "$url" --ca "$dir/ca.pem" --groups pq \
            --concurrency 20 --threads 1 --duration "$1" 2>/dev/null |
          python3 -c 'import json,sys; print(json.load(sys.stdin)["handshakes"])' ;;
    *) echo "unknown mode $MODE" >&2; exit 2 ;;
  esac
}
one() {
  taskset -c 1 "$1" reverse-proxy --from 127.0.0.1:$PROXY_PORT --to 127.0.0.1:$ORIGIN_PORT \
    --workers 1 --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" > /dev/null 2>&1 & local pid=$!
  for _ in $(seq 50); do curl -sk -o /dev/null https://127.0.0.1:$PROXY_PORT/ && break; sleep 0.1; done
  load 2 > /dev/null   # warm-up
  local before n ticks; before=$(cpu_ticks "$pid")
  n=$(load $SECONDS_PER_RUN)
  ticks=$(( $(cpu_ticks "$pid") - before ))
  awk -v b="$1" -v n="$n" -v s=$SECONDS_PER_RUN -v t="$ticks" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%s %.0f/s cpu %.1f us each\n", b, n / s, t / hz * 1e6 / n}'
  kill $pid; wait $pid 2>/dev/null || true
}
for _ in $(seq "$ROUNDS"); do for bin in "${BINS[@]}"; do one "$bin"; done; done
