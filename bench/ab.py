#!/usr/bin/env python3
"""Two builds of `bench-cluster` side by side: the messenger's figures of each, the two binaries
alternating round by round (so that a drift of the machine hits both), medians and each round's
difference. For a change on a hot path, against the build before it:

    git worktree add /tmp/before HEAD~1 && (cd /tmp/before && cargo build --release --example bench-cluster)
    cargo build --release --example bench-cluster
    python3 bench/ab.py /tmp/before/target/release/examples/bench-cluster \\
        target/release/examples/bench-cluster --rounds 5
"""
import argparse
import json
import statistics
import subprocess

TESTS = "broadcast,consume,consume64,map,map64,master"


def run(binary, workers, seconds, tests):
    out = subprocess.run(
        [binary, "--workers", str(workers), "--seconds", str(seconds), "--tests", tests],
        capture_output=True, text=True, check=True,
    ).stdout
    report = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    return {name: r.get("broadcasts_per_s") or r["ops_per_s"] for name, r in report["results"].items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--tests", default=TESTS)
    args = parser.parse_args()
    figures = {"before": {}, "after": {}}
    for _ in range(args.rounds):
        for side in ("before", "after"):
            for name, value in run(getattr(args, side), args.workers, args.seconds, args.tests).items():
                figures[side].setdefault(name, []).append(value)
    for name, before in figures["before"].items():
        after = figures["after"][name]
        b, a = statistics.median(before), statistics.median(after)
        rounds = " ".join(f"{100 * (x / y - 1):+.1f}" for x, y in zip(after, before))
        print(f"{name:10} before {b:12.0f}/s  after {a:12.0f}/s  {100 * (a / b - 1):+6.1f}%  rounds: {rounds}")


if __name__ == "__main__":
    main()
