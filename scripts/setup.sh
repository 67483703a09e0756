#!/usr/bin/env bash
# Installs what a fresh machine needs to build and test Aegis-Flow. Idempotent.
# Needs: the Rust toolchain pinned in rust-toolchain.toml, and a C compiler for aws-lc-sys.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
# `ss` (iproute2): tests read the kernel's listen backlog with it.
command -v ss >/dev/null 2>&1 || need+=(iproute2)
# `systemd-analyze`: tests verify the systemd unit in packaging/ with it.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# `chromium`: the admin /ui page is tested in a real headless browser.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# `curl`: tests run the README's metrics check as written.
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}"; else sudo apt-get install -y -qq "${need[@]}"; fi
fi
# The pinned channel: when it is not installed under its own name but the installed stable is
# that very version (machines that cannot download toolchains), link it instead of fetching.
pinned=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup toolchain list | grep -q "^${pinned}-"; then
  stable_version=$(rustup run stable rustc --version 2>/dev/null | awk '{print $2}')
  if [ "$stable_version" = "$pinned" ]; then
    rustup toolchain link "$pinned" "$(rustup run stable rustc --print sysroot)"
  fi
fi
rustc --version
