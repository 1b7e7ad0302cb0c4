#!/usr/bin/env python3
"""What the control socket and the metrics endpoint cost the data path: the release demo cluster
(2 workers) under `wrk` on `/hello` and on `/consume`, alternating rounds without and with
an operator polling both (a scrape of `/metrics` and a `multiprocess status` every `--every`
seconds: 1 by default, 15 times Prometheus's default scrape interval), medians and each round's
difference; and the CPU time the master and the workers spent per poll (their CPU in the
polled rounds less the quiet ones, over the polls).

    cargo build --release --example demo-cluster --bin multiprocess
    python3 bench/scrape_cost.py --rounds 5 [--every 0.1]

Every cluster runs in a process group of its own, killed however the script ends.
"""
import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, 'target', 'release', 'examples', 'demo-cluster')
CLI = os.path.join(ROOT, 'target', 'release', 'multiprocess')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_http(url, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f'{url} never answered')


def wrk(port, path, seconds):
    out = subprocess.run(['wrk', '-t2', '-c32', f'-d{seconds}s', f'http://127.0.0.1:{port}{path}'],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
    errors = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    return rps, int(errors.group(1)) if errors else 0


def poll(stop, metrics_port, sock, counts, every):
    while not stop.is_set():
        with urllib.request.urlopen(f'http://127.0.0.1:{metrics_port}/metrics', timeout=10) as r:
            r.read()
        subprocess.run([CLI, '--socket', sock, 'status'], capture_output=True, check=True)
        counts[0] += 1
        stop.wait(every)


def cpu_seconds(pids):
    ticks = 0
    for pid in pids:
        try:
            with open(f'/proc/{pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return ticks / os.sysconf('SC_CLK_TCK')


def group(pgid):
    pids = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--seconds', type=int, default=8)
    parser.add_argument('--every', type=float, default=1.0)
    args = parser.parse_args()
    port, metrics_port = free_port(), free_port()
    tmp = tempfile.mkdtemp()
    sock = os.path.join(tmp, 'ctl', 'control.sock')
    env = dict(os.environ, PORT=str(port), WORKERS='2', METRICS_ADDR=f'127.0.0.1:{metrics_port}',
               CONTROL_SOCKET=sock, RUST_LOG='warn')
    cluster = subprocess.Popen([DEMO], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    try:
        wait_http(f'http://127.0.0.1:{port}/map')
        workers = [p for p in group(cluster.pid) if p != cluster.pid]
        for path in ('/hello', '/consume'):
            rows = {'quiet': [], 'polled': []}
            cpu = {'quiet': [0.0, 0.0], 'polled': [0.0, 0.0]}
            for _ in range(args.rounds):
                for side in ('quiet', 'polled'):
                    stop, counts = threading.Event(), [0]
                    poller = None
                    if side == 'polled':
                        poller = threading.Thread(target=poll, args=(stop, metrics_port, sock, counts, args.every))
                        poller.start()
                    before = cpu_seconds([cluster.pid]), cpu_seconds(workers)
                    rps, errors = wrk(port, path, args.seconds)
                    stop.set()
                    if poller:
                        poller.join()
                    cpu[side][0] += cpu_seconds([cluster.pid]) - before[0]
                    cpu[side][1] += cpu_seconds(workers) - before[1]
                    assert errors == 0, f'{errors} failed requests'
                    rows[side].append((rps, counts[0]))
            quiet = statistics.median(r for r, _ in rows['quiet'])
            polled = statistics.median(r for r, _ in rows['polled'])
            diffs = ' '.join(f'{(p / q - 1) * 100:+.1f}' for (q, _), (p, _) in zip(rows['quiet'], rows['polled']))
            polls = sum(c for _, c in rows['polled'])
            master_ms = (cpu['polled'][0] - cpu['quiet'][0]) / max(polls, 1) * 1000
            print(f'{path:20} quiet {quiet:9.0f}/s  polled {polled:9.0f}/s  {(polled / quiet - 1) * 100:+5.1f}%  '
                  f'rounds: {diffs}  ({polls} polls; master CPU {cpu["quiet"][0]:.2f} s quiet, '
                  f'{cpu["polled"][0]:.2f} s polled: {master_ms:+.2f} ms per poll)', flush=True)
    finally:
        try:
            os.killpg(cluster.pid, signal.SIGTERM)
            cluster.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(cluster.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            cluster.wait()
        subprocess.run(['rm', '-rf', tmp])


if __name__ == '__main__':
    main()
