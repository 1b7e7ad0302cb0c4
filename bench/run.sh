#!/usr/bin/env bash
# The benchmark of issue 4, end to end (see bench/README.md): installs what is missing, builds in
# release, runs the contract driver on both implementations, the machine baselines and the
# scaling runs, and writes BENCHMARKS.md. Arguments go to bench/run.py (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/run.py "$@"
