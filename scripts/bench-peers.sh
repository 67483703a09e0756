#!/usr/bin/env bash
# Head-to-head: Aegis-Flow next to Envoy, nginx, HAProxy and Caddy in the workplace's peer
# harness (../shared/bench/peers.sh, which installs the peers and its clients itself).
# Every knob of that script passes through, e.g.:
#   SCENARIOS="h1 h1tls" DURATION=5 REPS=1 bash scripts/bench-peers.sh
#   OUT=bench-results.jsonl bash scripts/bench-peers.sh        # all scenarios, medians of 3
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS="${HARNESS:-../shared/bench/peers.sh}"
[[ -f "$HARNESS" ]] || { echo "peer harness not found at $HARNESS (set HARNESS=)" >&2; exit 2; }

cargo build --release --locked -p aegis-proxy >&2
BIN="$(pwd)/target/release/aegis-proxy"
PROXY="$BIN reverse-proxy --from 127.0.0.1:{port} --to 127.0.0.1:{upstream} --workers 1"

export CANDIDATE_NAME="${CANDIDATE_NAME:-aegis}"
export CANDIDATE_CMD="$PROXY"
export CANDIDATE_TLS_CMD="$PROXY --tls-cert {cert} --tls-key {key}"
export CANDIDATE_H3_CMD="$PROXY --tls-cert {cert} --tls-key {key} --h3"
export SCENARIOS="${SCENARIOS:-h1 h2 h1tls hs hspq mem h3}"
exec bash "$HARNESS"
