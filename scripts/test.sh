#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the one program the tests use besides the
# project's own binaries (promtool, Prometheus's parser, which checks the metrics endpoint's
# output: Debian's `prometheus` package), then runs `cargo test --workspace` with any
# arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  echo "installing promtool (Debian's prometheus package) for tests/metrics.rs" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a Prometheus server where an init system runs; the tests need none.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
promtool --version >/dev/null

exec cargo test --workspace "$@"
