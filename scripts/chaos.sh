#!/usr/bin/env bash
# Chaos, one command: two minutes of SIGKILL, SIGSTOP, rolling reloads and unhealthy reports at
# random (every 0.5-3 s) under steady HTTP load on the demo cluster (4 workers, 32 keep-alive
# clients), then the checks: every slot has a Ready worker again, the master's descriptors and
# memory are back where they started, the cluster stops cleanly, and the only failed requests
# are those a SIGKILL cut. Prints a summary and a JSON line; exit status 0 = pass.
#
# Arguments go to the driver and override the defaults (`--seconds 300`, `--seed 42`, ...;
# `--help` lists them). See scripts/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example chaos --example demo-cluster
target_dir=$(cargo metadata --format-version 1 --no-deps |
  grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
exec "$target_dir/release/examples/chaos" --seconds 120 "$@"
