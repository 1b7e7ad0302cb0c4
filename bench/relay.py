#!/usr/bin/env python3
"""What relaying the workers' output costs the master (`Builder::prefix_worker_output`): one
worker of the release test cluster (`examples/cluster-helper`) prints N lines as fast as it can,
once written straight to the master's stdout and once relayed by the master with a prefix; the
master's CPU is read from /proc/<pid>/stat before and after.

    cargo build --release --example cluster-helper && python3 bench/relay.py [N]
"""
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

EXE = os.path.join(os.path.dirname(__file__), "..", "target", "release", "examples", "cluster-helper")
HZ = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(n, prefix):
    env = dict(os.environ, WORKERS="1", PORT="0", RUST_LOG="warn")
    if prefix:
        env["HELPER_PREFIX_OUTPUT"] = "1"
    p = subprocess.Popen([EXE], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port = int(p.stdout.readline().decode().rsplit(":", 1)[1])
        seen = [0]

        def drain():
            for _ in p.stdout:
                seen[0] += 1

        threading.Thread(target=drain, daemon=True).start()
        time.sleep(1)
        t0, w0 = ticks(p.pid), time.time()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/print?n={n}", timeout=300).read()
        deadline = time.time() + 300
        while seen[0] < n:
            if time.time() > deadline or p.poll() is not None:
                raise RuntimeError(f"only {seen[0]} of {n} lines came through")
            time.sleep(0.01)
        w1, t1 = time.time(), ticks(p.pid)
        cpu = (t1 - t0) / HZ
        print(f"{'relayed' if prefix else 'direct '}: {n} lines in {w1 - w0:.2f}s ({n / (w1 - w0):,.0f}/s), "
              f"master CPU {cpu:.2f}s = {cpu / n * 1e6:.2f} us/line")
    finally:
        # The whole group, whatever happened above: the master and its worker.
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    for prefix in (False, True):
        run(n, prefix)
