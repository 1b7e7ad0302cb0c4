#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the programs the tests use besides the
# project's own binaries, from Debian's packages, if missing: promtool (Prometheus's parser,
# which checks the metrics endpoint's output: package `prometheus`) and nats-server (the tests
# of the uplink between hosts start their own, on free ports: package `nats-server`). Then runs
# `cargo test --workspace --all-features` (every optional part, the NATS uplink included) with
# any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian puts nats-server in /usr/sbin, which a normal user's PATH may lack.
export PATH="$PATH:/usr/sbin"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
updated=""
# install PROGRAM PACKAGE SERVICE: the package, if PROGRAM is missing. A package that starts a
# server where an init system runs (SERVICE) has it stopped: the tests start their own.
install() {
  command -v "$1" >/dev/null && return
  echo "installing $1 (Debian's $2 package) for the tests" >&2
  [ -n "$updated" ] || { $sudo apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$3" 2>/dev/null; then
    $sudo systemctl disable --now "$3" >/dev/null 2>&1 || true
  fi
}
install promtool prometheus prometheus
install nats-server nats-server nats-server
promtool --version >/dev/null
nats-server --version >/dev/null

exec cargo test --workspace --all-features "$@"
