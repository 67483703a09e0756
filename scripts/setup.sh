#!/usr/bin/env bash
# Installs what a fresh machine needs to build and test Aegis-Flow. Idempotent.
# The toolchain comes from rust-toolchain.toml via rustup; aws-lc-sys needs a C compiler and cmake-free gcc build.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}"; else sudo apt-get install -y -qq "${need[@]}"; fi
fi
rustup show active-toolchain >/dev/null
