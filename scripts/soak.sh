#!/usr/bin/env bash
# Soak, one command: ten minutes of steady HTTP load on the demo cluster (4 workers, 16
# keep-alive clients) with a chaos action only every 5-15 s (SIGKILL, SIGSTOP, rolling reload,
# unhealthy report), the master's RSS and descriptor count sampled every 10 s; then the same
# checks as scripts/chaos.sh, and the trend of the master's memory and descriptors over the run.
# Exit status 0 = pass.
#
# Arguments go to the driver and override the defaults (`--seconds 300` for a shorter soak;
# `--help` lists them). See scripts/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example chaos --example demo-cluster
target_dir=$(cargo metadata --format-version 1 --no-deps |
  grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
exec "$target_dir/release/examples/chaos" --seconds 600 --interval 5-15 --clients 16 \
  --sample-secs 10 "$@"
