#!/usr/bin/env python3
"""The benchmark of issue 4, end to end: writes BENCHMARKS.md and bench/plots/*.svg.

    python3 bench/run.py                      # from the repository root; ~15 minutes
    python3 bench/run.py --quick              # one short round of everything; ~4 minutes
    python3 bench/run.py --shared ../shared --runs 3 --skip contract,profile

Only the contract step needs the shared folder (--shared, default ../shared): it holds the
think-cluster contract driver and the reference node app, which are not part of this
repository. Without it, that step alone is skipped (said in the log and in BENCHMARKS.md, whose
comparison with think-cluster is then marked as not measured) and everything else runs from a
clone alone.

Steps (each can be skipped with --skip):
  install   wrk and nats-server (apt-get), and the reference app's node_modules (npm ci) when missing and the
            shared folder is there
  build     cargo build --release of the examples it runs
  contract  the shared driver (SHARED/bench/run.py) on examples/demo-cluster and on the
            think-cluster app, alternating, --runs times each; medians (needs --shared)
  machine   the machine baselines in the same session: baseline-relay against bench-cluster
            (one at a time and 64 in flight), baseline-hyper against demo-cluster (wrk /hello),
            alternating, --runs times; medians
  scaling   bench-cluster with 1, 2, 4, 8, 16 workers (map latency, broadcast deliveries,
            master CPU per routed message) and the payload sweep 64 B .. 1 MiB (cluster and
            relay)
  profile   callgrind on the master of bench-cluster: instructions per routed message and the
            top functions
  hosts     calls across hosts (feature nats): a NATS server of its own (nats-server -js, on a
            free port, its store in a temporary directory), baseline-nats (a bare async-nats
            request/reply between two processes) against bench-hosts (two clusters joined over
            it), alternating, --runs times; medians

Python 3.11 standard library only; the plots are SVG written by hand. Every process it starts
runs in its own session and is killed with its whole group on the way out, whatever happened.
Raw results go to bench/results/ (JSON), the report to BENCHMARKS.md.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, 'target', 'release', 'examples')
RESULTS = os.path.join(ROOT, 'bench', 'results')
PLOTS = os.path.join(ROOT, 'bench', 'plots')
ANALYSIS = os.path.join(ROOT, 'bench', 'ANALYSIS.md')
STEPS = ['install', 'build', 'contract', 'machine', 'scaling', 'profile', 'hosts']
SIZES = [64, 1024, 16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024]
SCALE_WORKERS = [1, 2, 4, 8, 16]

COMMANDS = []  # every command run, for the report
LIVE = []  # process groups to kill on the way out


def log(msg):
    print(f'[bench {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def rel(path):
    return os.path.relpath(path, ROOT)


def note(cmd, cwd=None):
    base = os.path.abspath(cwd or ROOT)

    def show(arg):
        arg = str(arg)
        if arg == sys.executable:
            return 'python3'
        # Paths relative to where the command runs, as a reader would type them.
        return os.path.relpath(arg, base) if os.path.isabs(arg) else arg

    text = ' '.join(show(c) for c in cmd)
    if base != ROOT:
        text = f'(cd {rel(base)} && {text})'
    COMMANDS.append(text)


def run(cmd, cwd=None, timeout=600, env=None, check=True, quiet=False):
    """Runs cmd in its own session; kills its group on timeout. Returns (status, stdout)."""
    note(cmd, cwd)
    proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if quiet else None,
                            start_new_session=True)
    LIVE.append(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise RuntimeError(f'timed out after {timeout} s: {" ".join(map(str, cmd))}')
    finally:
        kill_group(proc)
    text = out.decode('utf-8', 'replace')
    if check and proc.returncode != 0:
        raise RuntimeError(f'exit status {proc.returncode}: {" ".join(map(str, cmd))}\n{text[-2000:]}')
    return proc.returncode, text


def kill_group(proc, grace=0.0):
    """SIGTERM (when grace > 0) then SIGKILL to the process group of proc, then reap it."""
    if proc in LIVE:
        LIVE.remove(proc)
    try:
        if grace > 0 and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def json_line(text):
    """The last line of text that parses as a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise RuntimeError(f'no JSON in output: {text[-500:]}')


def median(values):
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(values) if values else None


def save(name, data):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name), 'w') as f:
        json.dump(data, f, indent=1)
        f.write('\n')


def port_free(port):
    import socket
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(('127.0.0.1', port)) != 0


# ---------------------------------------------------------------------------------------------
# install, build

def shared_driver(a):
    """The shared contract driver, or None when the shared folder is not there."""
    path = os.path.join(a.shared, 'bench', 'run.py')
    return path if os.path.isfile(path) else None


def step_install(a):
    if not shutil.which('wrk'):
        log('installing wrk')
        run(['apt-get', 'install', '-y', 'wrk'], timeout=600)
    if not nats_server():
        log('installing nats-server')
        run(['apt-get', 'install', '-y', 'nats-server'], timeout=600)
    if not shared_driver(a):
        return  # the reference app is only for the contract step, skipped without it
    node_dir = os.path.join(a.shared, 'bench', 'node')
    if not os.path.isdir(os.path.join(node_dir, 'node_modules', 'think-cluster')):
        log('installing the reference app (npm ci)')
        run(['npm', 'ci'], cwd=node_dir, timeout=600)


def step_build(a):
    run(['cargo', 'build', '--release', '--example', 'demo-cluster', '--example', 'bench-cluster',
         '--example', 'baseline-relay', '--example', 'baseline-hyper'], timeout=1800)
    run(['cargo', 'build', '--release', '--features', 'nats', '--example', 'bench-hosts',
         '--example', 'baseline-nats'], timeout=1800)


# ---------------------------------------------------------------------------------------------
# contract

CONTRACT_TARGETS = [
    # figure, label, better, target ratio rust/node
    ('map_ops_s', 'map ops/s', 'higher', 3.0),
    ('broadcast_ops_s', 'broadcast ops/s', 'higher', 10.0),
    ('master_ops_s', 'master echo ops/s', 'higher', 2.0),
    ('hello_rps', '/hello req/s', 'higher', 3.0),
    ('memory_rss_mib', 'idle RSS master+workers, MiB', 'lower', 1 / 10),
    ('startup_s', 'start-up to ready, s', 'lower', 1 / 5),
    ('crash_recovery_s', 'crash to recovered, s', 'lower', 1 / 3),
]


def step_contract(a, report):
    bench_dir = os.path.join(a.shared, 'bench')
    driver = 'run.py'
    impls = [('rust', [os.path.join(EXAMPLES, 'demo-cluster')]), ('node', ['node', 'node/app.js'])]
    extra = []
    if a.quick:
        extra = ['--wrk-duration', '3', '--bench-seconds', '1', '--reload-duration', '6',
                 '--crash-duration', '4', '--settle', '1']
    runs = {'rust': [], 'node': []}
    for i in range(a.runs):
        for name, cmd in impls:
            if not port_free(a.port):
                raise RuntimeError(f'port {a.port} is in use')
            out = os.path.join(RESULTS, f'contract-{name}-{i + 1}.json')
            log(f'contract run {i + 1}/{a.runs}: {name}')
            os.makedirs(RESULTS, exist_ok=True)
            argv = [sys.executable, driver, '--name', name, '--workers', str(a.workers), '--port',
                    str(a.port), '--out', out, *extra, '--', *cmd]
            try:
                run(argv, cwd=bench_dir, timeout=900, quiet=True)
            except RuntimeError as e:
                # A run killed from outside (status 130: the driver got SIGTERM) is retried once.
                log(f'contract run {i + 1} of {name} failed, retrying once: {str(e)[:200]}')
                report.setdefault('notes', []).append(f'contract run {i + 1} of {name} retried: {str(e)[:200]}')
                if not port_free(a.port):
                    raise RuntimeError(f'port {a.port} is in use') from e
                run(argv, cwd=bench_dir, timeout=900, quiet=True)
            with open(out) as f:
                runs[name].append(json.load(f))
    med = {}
    for name, results in runs.items():
        keys = sorted({k for r in results for k in r.get('figures', {})})
        med[name] = {k: median([r['figures'].get(k) for r in results]) for k in keys}
    checks = {}
    for name, results in runs.items():
        for r in results:
            for k, v in r.get('checks', {}).items():
                checks.setdefault(name, {}).setdefault(k, []).append(v)
    report['contract'] = {'runs': a.runs, 'median': med, 'checks': checks,
                          'per_run': {n: [r.get('figures') for r in rs] for n, rs in runs.items()}}


# ---------------------------------------------------------------------------------------------
# machine baselines

def relay(a, seconds, sizes):
    args = [os.path.join(EXAMPLES, 'baseline-relay'), '--seconds', str(seconds), '--in-flight', '64']
    if sizes:
        args += ['--sizes', ','.join(map(str, sizes))]
    _, out = run(args, timeout=120 + 10 * seconds * (2 + len(sizes)))
    return json_line(out)


def cluster(a, workers, tests, seconds, sizes=None):
    args = [os.path.join(EXAMPLES, 'bench-cluster'), '--workers', str(workers), '--seconds',
            str(seconds), '--tests', ','.join(tests)]
    if sizes:
        args += ['--sizes', ','.join(map(str, sizes))]
    limit = 60 + seconds * 4 * (len(tests) + len(sizes or []))
    args += ['--limit', str(limit)]
    _, out = run(args, timeout=limit + 30, quiet=True)
    data = json_line(out)
    if data.get('error'):
        raise RuntimeError(f'bench-cluster: {data["error"]}')
    return data


def wait_http(port, path, deadline, accept):
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=1)
            conn.request('GET', path)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if resp.status == 200 and accept(body):
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    return False


def wrk(a, port, duration):
    _, out = run(['wrk', f'-t{a.wrk_threads}', f'-c{a.wrk_connections}', f'-d{duration}s',
                  '--timeout', '5s', f'http://127.0.0.1:{port}/hello'], timeout=duration + 30)
    m = re.search(r'Requests/sec:\s+([\d.]+)', out)
    if not m:
        raise RuntimeError(f'no result from wrk: {out[-500:]}')
    errors = sum(int(x) for x in re.findall(r'(?:connect|read|write|timeout) (\d+)', out))
    non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    return {'requests_per_s': float(m.group(1)), 'errors': errors + (int(non2xx.group(1)) if non2xx else 0)}


def hello_server(a, which, port, duration):
    """Starts baseline-hyper or demo-cluster on port, runs wrk on /hello, stops it."""
    env = dict(os.environ, PORT=str(port), WORKERS=str(a.workers), RUST_LOG='warn')
    exe = os.path.join(EXAMPLES, 'baseline-hyper' if which == 'bare' else 'demo-cluster')
    if not port_free(port):
        raise RuntimeError(f'port {port} is in use')
    note([f'PORT={port}', f'WORKERS={a.workers}', exe])
    proc = subprocess.Popen([exe], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    LIVE.append(proc)
    try:
        if which == 'bare':
            ok = wait_http(port, '/hello', time.monotonic() + 30, lambda b: b == b'hello world')
        else:
            ok = wait_http(port, '/map', time.monotonic() + 30,
                           lambda b: len(json.loads(b).get('pids', [])) == a.workers)
        if not ok:
            raise RuntimeError(f'{which} server not ready on port {port}')
        return wrk(a, port, duration)
    finally:
        kill_group(proc, grace=5)


def step_machine(a, report):
    secs = 1 if a.quick else 2
    duration = 3 if a.quick else a.wrk_duration
    relays, clusters, bare, rust = [], [], [], []
    for i in range(a.runs):
        log(f'machine round {i + 1}/{a.runs}: relay, cluster, bare /hello, cluster /hello')
        relays.append(relay(a, secs, []))
        clusters.append(cluster(a, a.workers, ['consume', 'master', 'consume64', 'map64'], secs))
        bare.append(hello_server(a, 'bare', a.hello_port, duration))
        rust.append(hello_server(a, 'cluster', a.hello_port, duration))
    save('machine.json', {'relay': relays, 'cluster': clusters, 'hello_bare': bare, 'hello_cluster': rust})

    def relay_rate(mode):
        return median([next(t['per_s'] for t in r['tests'] if t['mode'] == mode and t['size'] == 64)
                       for r in relays])

    def cluster_rate(test):
        return median([c['results'][test]['ops_per_s'] for c in clusters])

    report['machine'] = {
        'relay_serial': relay_rate('serial'),
        'relay_pipelined': relay_rate('pipelined'),
        'relay_cpu_us_per_frame': median([r['middle_cpu_us_per_frame'] for r in relays]),
        'consume': cluster_rate('consume'),
        'master': cluster_rate('master'),
        'consume64': cluster_rate('consume64'),
        'map64': cluster_rate('map64'),
        'cluster_detail': {t: {k: median([c['results'][t].get(k) for c in clusters])
                               for k in ('ops_per_s', 'master_cpu_us_per_op', 'master_cpu_us_per_routed',
                                         'worker0_cpu_us_per_op', 'master_cpu_share')}
                           | {'p50_us': median([c['results'][t]['latency_us']['p50'] for c in clusters]),
                              'p99_us': median([c['results'][t]['latency_us']['p99'] for c in clusters])}
                           for t in ('consume', 'master', 'consume64', 'map64')},
        'hello_bare': median([r['requests_per_s'] for r in bare]),
        'hello_cluster': median([r['requests_per_s'] for r in rust]),
        'hello_errors': [r['errors'] for r in bare + rust],
        'wrk': f'wrk -t{a.wrk_threads} -c{a.wrk_connections} -d{duration}s',
        'runs': a.runs,
    }


# ---------------------------------------------------------------------------------------------
# scaling

def step_scaling(a, report):
    secs = 1 if a.quick else 2
    rounds = 1 if a.quick else a.runs
    by_n = {n: [] for n in SCALE_WORKERS}
    payload, relay_sizes = [], []
    for i in range(rounds):
        for n in SCALE_WORKERS:
            log(f'scaling round {i + 1}/{rounds}: {n} workers')
            by_n[n].append(cluster(a, n, ['map', 'broadcast'], secs))
        log(f'scaling round {i + 1}/{rounds}: payload sweep')
        payload.append(cluster(a, 2, ['payload'], secs, SIZES))
        relay_sizes.append(relay(a, 0.5 if a.quick else 1, SIZES))
    save('scaling.json', {'by_workers': by_n, 'payload': payload, 'relay': relay_sizes})
    rows = []
    for n, results in by_n.items():
        m = [r['results']['map'] for r in results]
        b = [r['results']['broadcast'] for r in results]
        rows.append({
            'workers': n,
            'map_ops_s': median([x['ops_per_s'] for x in m]),
            'map_p50_us': median([x['latency_us']['p50'] for x in m]),
            'map_mean_us': median([x['latency_us']['mean'] for x in m]),
            'map_p99_us': median([x['latency_us']['p99'] for x in m]),
            'map_master_us_per_op': median([x['master_cpu_us_per_op'] for x in m]),
            'map_master_us_per_routed': median([x['master_cpu_us_per_routed'] for x in m]),
            'broadcast_deliveries_s': median([x['deliveries_per_s'] for x in b]),
            'broadcast_master_us_per_routed': median([x['master_cpu_us_per_routed'] for x in b]),
            'startup_s': median([r.get('startup_to_ready_s') for r in results]),
        })
    sizes = []
    for idx, size in enumerate(SIZES):
        c = [p['results']['payload'][idx] for p in payload]
        # the relay's list starts with its own 64-byte serial test: take the sweep's (last match)
        r = [[t for t in rr['tests'] if t['mode'] == 'serial' and t['size'] == size][-1] for rr in relay_sizes]
        sizes.append({
            'size': size,
            'cluster_rt_s': median([x['ops_per_s'] for x in c]),
            'cluster_p50_us': median([x['latency_us']['p50'] for x in c]),
            'cluster_mib_s': median([x['mib_per_s_each_way'] for x in c]),
            'cluster_master_us_per_op': median([x['master_cpu_us_per_op'] for x in c]),
            'cluster_master_faults': median([x.get('master_faults_per_op') for x in c]),
            'cluster_worker0_us_per_op': median([x.get('worker0_cpu_us_per_op') for x in c]),
            'relay_rt_s': median([x['per_s'] for x in r]),
            'relay_mib_s': median([x['per_s'] * size / 1048576 for x in r]),
        })
    report['scaling'] = {'workers': rows, 'payload': sizes, 'rounds': rounds, 'seconds': secs}


# ---------------------------------------------------------------------------------------------
# profile

def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith('summary:') or line.startswith('totals:'):
                return int(line.split()[1])
    return None


# ---------------------------------------------------------------------------------------------
# hosts

def nats_server():
    """nats-server on the PATH, or Debian's /usr/sbin/nats-server."""
    found = shutil.which('nats-server')
    if found:
        return found
    return '/usr/sbin/nats-server' if os.path.exists('/usr/sbin/nats-server') else None


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def step_hosts(a, report):
    server = nats_server()
    if not server:
        report['hosts'] = {'skipped': 'nats-server is not installed (Debian: apt-get install nats-server)'}
        return
    import tempfile
    secs = 1 if a.quick else 2
    store = tempfile.mkdtemp(prefix='bench-nats-')
    port = free_port()
    cmd = [server, '-a', '127.0.0.1', '-p', str(port), '-js', '-sd', store]
    note(cmd)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    LIVE.append(proc)
    url = f'nats://127.0.0.1:{port}'
    try:
        deadline = time.time() + 20
        while port_free(port) and time.time() < deadline:
            time.sleep(0.05)
        bare, ours = [], []
        for i in range(a.runs):
            log(f'hosts round {i + 1}/{a.runs}: baseline-nats, bench-hosts')
            _, text = run([os.path.join(EXAMPLES, 'baseline-nats'), '--url', url, '--seconds', str(secs)],
                          timeout=120)
            bare.append(json_line(text))
            _, text = run([os.path.join(EXAMPLES, 'bench-hosts'), '--url', url, '--seconds', str(secs)],
                          timeout=300)
            data = json_line(text)
            if 'error' in data:
                raise RuntimeError(f'bench-hosts: {data["error"]}')
            ours.append(data)
    finally:
        kill_group(proc)
        shutil.rmtree(store, ignore_errors=True)
    save('hosts.json', {'bare': bare, 'ours': ours})

    def mine(test, key='ops_per_s'):
        return median([o['results'][test][key] for o in ours])

    report['hosts'] = {
        'bare_serial': median([b['serial'] for b in bare]),
        'bare_pipelined': median([b['pipelined'] for b in bare]),
        'tests': {t: {'ops_per_s': mine(t),
                      'p50_us': median([o['results'][t]['latency_us']['p50'] for o in ours]),
                      'p99_us': median([o['results'][t]['latency_us']['p99'] for o in ours])}
                  for t in ('consume', 'consume64', 'map', 'map64')},
        'broadcast_deliveries_per_s': mine('broadcast', 'deliveries_per_s'),
        'workers_b': ours[0]['workers_b'] if ours else None,
        'runs': a.runs,
        'seconds': secs,
    }


def step_profile(a, report):
    if not shutil.which('valgrind'):
        report['profile'] = {'skipped': 'valgrind is not installed'}
        return
    os.makedirs(RESULTS, exist_ok=True)
    points = []
    # Two runs of different lengths: the difference in instructions over the difference in
    # operations cancels start-up and shutdown.
    for secs in (2, 6):
        out = os.path.join(RESULTS, f'callgrind.master.{secs}s.out')
        _, text = run(['valgrind', '--tool=callgrind', f'--callgrind-out-file={out}',
                       os.path.join(EXAMPLES, 'bench-cluster'), '--workers', '2', '--tests',
                       'consume64', '--seconds', str(secs), '--limit', '200'], timeout=400, quiet=True)
        data = json_line(text)
        if data.get('error'):
            raise RuntimeError(f'bench-cluster under callgrind: {data["error"]}')
        res = data['results']['consume64']
        points.append({'seconds': secs, 'ops': res['ops'], 'instructions': callgrind_total(out), 'file': out})
    d_ops = points[1]['ops'] - points[0]['ops']
    d_ir = points[1]['instructions'] - points[0]['instructions']
    per_op = d_ir / d_ops if d_ops > 0 else None
    top = []
    if shutil.which('callgrind_annotate'):
        _, text = run(['callgrind_annotate', '--threshold=99', points[1]['file']], timeout=120, quiet=True)
        for line in text.splitlines():
            m = re.match(r'\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)', line)
            if m and len(top) < 15 and not m.group(3).startswith('PROGRAM TOTALS'):
                name = re.sub(r'\s+\[[^\]]*\]$', '', m.group(3)).removeprefix('???:')
                top.append({'ir': int(m.group(1).replace(',', '')), 'pct': float(m.group(2)),
                            'function': name[:140]})
    for p in points:
        p['file'] = rel(p['file'])
    # consume with 2 workers routes 2 - 1/2 frames per call on average (see bench-cluster).
    report['profile'] = {'points': points, 'instructions_per_op': per_op, 'routed_per_op': 1.5,
                         'instructions_per_routed': per_op / 1.5 if per_op else None, 'top': top}


# ---------------------------------------------------------------------------------------------
# SVG plots, by hand

COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd']


def nice_ticks(lo, hi, log_scale):
    import math
    if log_scale:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        return [10 ** e for e in range(a, b + 1)]
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2)]


def fmt_num(v):
    if v >= 1e6:
        return f'{v / 1e6:g}M'
    if v >= 1e3:
        return f'{v / 1e3:g}k'
    return f'{v:g}'


def svg_plot(path, title, xlabel, ylabel, series, logx=False, logy=False, xticks=None, xtick_fmt=None):
    """A line chart: series is [(label, [(x, y), ...])]. Writes an SVG file."""
    import math
    W, H, L, R, T, B = 640, 400, 80, 170, 40, 55
    pts = [(x, y) for _, s in series for x, y in s if y is not None]
    if not pts:
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    ylo = min(ys) if logy else 0
    yt = nice_ticks(max(ylo, 1e-9) if logy else 0, max(ys) * 1.05, logy)
    ylo, yhi = (yt[0], yt[-1])
    xt = xticks or nice_ticks(min(xs), max(xs), logx)
    xlo, xhi = min(xt[0], min(xs)), max(xt[-1], max(xs))
    tx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    ty = (lambda v: math.log10(v)) if logy else (lambda v: v)

    def X(v):
        return L + (tx(v) - tx(xlo)) / ((tx(xhi) - tx(xlo)) or 1) * (W - L - R)

    def Y(v):
        return H - B - (ty(v) - ty(ylo)) / ((ty(yhi) - ty(ylo)) or 1) * (H - T - B)

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>']
    for v in yt:
        o.append(f'<line x1="{L}" x2="{W - R}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{fmt_num(v)}</text>')
    for v in xt:
        o.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{T}" y2="{H - B}" stroke="#eee"/>')
        label = xtick_fmt(v) if xtick_fmt else fmt_num(v)
        o.append(f'<text x="{X(v):.1f}" y="{H - B + 16}" text-anchor="middle">{label}</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#444"/>')
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - 15}" text-anchor="middle">{xlabel}</text>')
    o.append(f'<text transform="translate(18,{(T + H - B) / 2}) rotate(-90)" text-anchor="middle">{ylabel}</text>')
    for i, (label, s) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        s = [(x, y) for x, y in s if y is not None and (not logy or y > 0)]
        if not s:
            continue
        o.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                 + ' '.join(f'{X(x):.1f},{Y(y):.1f}' for x, y in s) + '"/>')
        for x, y in s:
            o.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{c}"/>')
        ly = T + 14 + 18 * i
        o.append(f'<line x1="{W - R + 10}" x2="{W - R + 30}" y1="{ly - 4}" y2="{ly - 4}" stroke="{c}" stroke-width="2"/>')
        o.append(f'<text x="{W - R + 35}" y="{ly}">{label}</text>')
    o.append('</svg>')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(o) + '\n')


def size_label(v):
    return f'{int(v) // 1048576}M' if v >= 1048576 else f'{int(v) // 1024}K' if v >= 1024 else f'{int(v)}'


def plots(report):
    made = []
    s = report.get('scaling')
    if s:
        w = s['workers']
        ns = [r['workers'] for r in w]
        p = os.path.join(PLOTS, 'map-latency-vs-workers.svg')
        svg_plot(p, 'map(pid) latency, one call at a time', 'workers', 'microseconds',
                 [('p50', [(r['workers'], r['map_p50_us']) for r in w]),
                  ('mean', [(r['workers'], r['map_mean_us']) for r in w]),
                  ('p99', [(r['workers'], r['map_p99_us']) for r in w])], xticks=ns)
        made.append(p)
        p = os.path.join(PLOTS, 'broadcast-vs-workers.svg')
        svg_plot(p, 'broadcast deliveries per second', 'workers', 'deliveries/s',
                 [('deliveries/s', [(r['workers'], r['broadcast_deliveries_s']) for r in w])], xticks=ns)
        made.append(p)
        p = os.path.join(PLOTS, 'master-cpu-vs-workers.svg')
        svg_plot(p, "master CPU per routed message", 'workers', 'microseconds',
                 [('map, serial', [(r['workers'], r['map_master_us_per_routed']) for r in w]),
                  ('broadcast', [(r['workers'], r['broadcast_master_us_per_routed']) for r in w])],
                 xticks=ns)
        made.append(p)
        pl = s['payload']
        p = os.path.join(PLOTS, 'payload-throughput.svg')
        svg_plot(p, 'request/reply one at a time: MiB/s each way', 'payload bytes', 'MiB/s',
                 [('cluster request', [(r['size'], r['cluster_mib_s']) for r in pl]),
                  ('bare relay', [(r['size'], r['relay_mib_s']) for r in pl])],
                 logx=True, logy=True, xticks=[r['size'] for r in pl], xtick_fmt=size_label)
        made.append(p)
        p = os.path.join(PLOTS, 'payload-roundtrips.svg')
        svg_plot(p, 'request/reply one at a time: round trips/s', 'payload bytes', 'round trips/s',
                 [('cluster request', [(r['size'], r['cluster_rt_s']) for r in pl]),
                  ('bare relay', [(r['size'], r['relay_rt_s']) for r in pl])],
                 logx=True, logy=True, xticks=[r['size'] for r in pl], xtick_fmt=size_label)
        made.append(p)
    return made


# ---------------------------------------------------------------------------------------------
# BENCHMARKS.md

def f(v, digits=3):
    if v is None:
        return 'n/a'
    if isinstance(v, float):
        if abs(v) >= 100:
            return f'{v:,.0f}'
        return f'{v:.{digits}g}'
    return f'{v:,}' if isinstance(v, int) else str(v)


def verdict(ok):
    return 'n/a' if ok is None else ('**pass**' if ok else '**FAIL**')


def growth(rows, xkey, ykey):
    """Per step, how much y grew against how much x grew; the worst step."""
    out = []
    for a, b in zip(rows, rows[1:]):
        ya, yb = a.get(ykey), b.get(ykey)
        if ya and yb:
            out.append((a[xkey], b[xkey], (yb / ya) / (b[xkey] / a[xkey])))
    return out


def git_commit():
    """HEAD, and whether tracked files differ from it (read before the run writes its results)."""
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, timeout=10).stdout.decode().strip()
        except (OSError, subprocess.TimeoutExpired):
            return ''
    commit = out(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'])
    dirty = out(['git', '-C', ROOT, 'status', '--porcelain', '--untracked-files=no'])
    return commit + (' (with uncommitted changes)' if dirty else '') if commit else None


def machine_info():
    model = None
    try:
        with open('/proc/cpuinfo') as fh:
            for line in fh:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open('/proc/meminfo') as fh:
            mem = round(int(fh.readline().split()[1]) / 1048576, 1)
    except (OSError, ValueError, IndexError):
        pass

    def version(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=10)
            text = (out.stdout or out.stderr).decode('utf-8', 'replace').strip()
            return text.splitlines()[0] if text else None
        except (OSError, subprocess.TimeoutExpired):
            return None

    return {
        'nproc': os.cpu_count(), 'cpu': model, 'mem_gib': mem, 'kernel': platform.release(),
        'rustc': version(['rustc', '--version']), 'node': version(['node', '--version']),
        'wrk': version(['wrk', '--version']), 'valgrind': version(['valgrind', '--version']),
        'loadavg': os.getloadavg(),
    }


def write_markdown(a, report, made, started, finished):
    L = []
    m = report['machine_info']
    L += ['# Benchmarks', '',
          'Written by `bench/run.py` (see `bench/README.md`); do not edit by hand: rerun it. The '
          'machine is shared and noisy: read ratios taken in the same session rather than the '
          'figures alone.', '',
          f'- date: {started} to {finished} (UTC)',
          f'- machine: {m["nproc"]} CPUs, {m["cpu"]}, {m["mem_gib"]} GiB, Linux {m["kernel"]}; '
          f'load average at the end {", ".join(f"{x:.2f}" for x in m["loadavg"])}',
          f'- tools: {m["rustc"]}, node {m["node"]}, {m["wrk"]}',
          f'- commit: {report.get("commit") or m.get("commit")} (when the run started)',
          f'- command: `{" ".join(report["argv"])}`', '']

    # targets
    L += ['## Issue 4 targets', '']
    rows = []
    c = report.get('contract')
    if not c:
        why = report.get('contract_skipped') or 'not run this time (`--skip contract`)'
        rows.append(('think-cluster side by side (the contract driver)', 'n/a', 'n/a', 'n/a', '',
                     f'not measured: {why}'))
    if c:
        rust, node = c['median']['rust'], c['median']['node']
        for key, label, better, target in CONTRACT_TARGETS:
            rv, nv = rust.get(key), node.get(key)
            ratio = rv / nv if rv is not None and nv else None
            ok = None if ratio is None else (ratio >= target if better == 'higher' else ratio <= target)
            want = f'>= {target:g}x' if better == 'higher' else f'<= 1/{round(1 / target):d}'
            rows.append((f'{label} vs think-cluster', f(rv), f(nv), f'{ratio:.3g}x' if ratio else 'n/a', want, verdict(ok)))
    mc = report.get('machine')
    if mc:
        for key, label, base, bl, target in [
            ('consume', 'consume, one at a time', 'relay_serial', 'relay one at a time', 0.7),
            ('master', 'worker-to-master request, one at a time', 'relay_serial', 'relay one at a time', 0.7),
            ('consume64', 'consume, 64 in flight', 'relay_pipelined', 'relay 64 in flight', 0.5),
            ('map64', 'map (2 workers), 64 in flight', 'relay_pipelined', 'relay 64 in flight', 0.5),
            ('hello_cluster', '/hello through the cluster', 'hello_bare', 'bare 2-process axum', 0.9),
        ]:
            v, b = mc.get(key), mc.get(base)
            ratio = v / b if v is not None and b else None
            rows.append((f'{label} vs {bl}', f(v), f(b), f'{ratio:.0%}' if ratio else 'n/a', f'>= {target:.0%}',
                         verdict(None if ratio is None else ratio >= target)))
    L += ['| target | ours | reference | ratio | wanted | |', '|---|---:|---:|---:|---:|---|']
    L += [f'| {" | ".join(r)} |' for r in rows]
    L += ['']
    if c:
        L += [f'Contract figures: medians of {c["runs"]} runs of each implementation, alternating, '
              f'{a.workers} workers, with `{rel(os.path.join(a.shared, "bench", "run.py"))}`'
              + (' (quick settings)' if a.quick else ' (its default settings)') + '. '
              'Machine figures: medians of the rounds below.', '']
        failed = {n: sorted(k for k, vs in ch.items() if any(v is False for v in vs))
                  for n, ch in c['checks'].items()}
        L += ['Contract checks failed in any run: '
              + '; '.join(f'{n}: {", ".join(ks) if ks else "none"}' for n, ks in failed.items()), '']
        L += ['<details><summary>All contract figures (medians)</summary>', '',
              '| figure | rust | node | rust/node |', '|---|---:|---:|---:|']
        for k in sorted(set(rust) | set(node)):
            rv, nv = rust.get(k), node.get(k)
            ratio = f'{rv / nv:.3g}' if isinstance(rv, (int, float)) and isinstance(nv, (int, float)) and nv else ''
            L.append(f'| `{k}` | {f(rv)} | {f(nv)} | {ratio} |')
        L += ['', '</details>', '']

    if mc:
        L += ['## Messaging against the machine', '',
              f'Cluster: `bench-cluster --workers {a.workers}`, tests run from worker 0; relay: '
              '`baseline-relay` (client and server processes exchanging 64-byte length-prefixed frames '
              'through a middle process that parses and forwards whole frames). '
              f'{mc["runs"]} rounds, medians. `/hello`: `{mc["wrk"]}` on `baseline-hyper` and '
              f'on `demo-cluster`, alternating.', '',
              '| measure | ops/s | p50 µs | p99 µs | master CPU µs/op | master CPU µs/routed msg | master CPU share | worker 0 CPU µs/op |',
              '|---|---:|---:|---:|---:|---:|---:|---:|']
        names = {'consume': 'consume, one at a time', 'master': 'request_master(echo), one at a time',
                 'consume64': 'consume, 64 in flight', 'map64': 'map (2 workers), 64 in flight'}
        for t, d in mc['cluster_detail'].items():
            L.append(f'| {names[t]} | {f(d["ops_per_s"])} | {f(d["p50_us"])} | {f(d["p99_us"])} | '
                     f'{f(d["master_cpu_us_per_op"])} | {f(d["master_cpu_us_per_routed"])} | '
                     f'{f(d["master_cpu_share"])} | {f(d["worker0_cpu_us_per_op"])} |')
        L += [f'| bare relay, one at a time | {f(mc["relay_serial"])} | | | | | | |',
              f'| bare relay, 64 in flight | {f(mc["relay_pipelined"])} | | | | '
              f'{f(mc["relay_cpu_us_per_frame"])} (middle, per frame) | | |',
              f'| /hello, bare 2-process axum (req/s) | {f(mc["hello_bare"])} | | | | | | |',
              f'| /hello, demo-cluster (req/s) | {f(mc["hello_cluster"])} | | | | | | |', '',
              'A routed message is one frame the Hub writes to a worker: consume 2 − 1/N on average (request and reply; on the caller\'s own turn, one frame telling it to run the handler itself), '
              'request_master 1 (the reply; the request goes to the master\'s own Messenger in '
              'process), map 2N − 1 (the fan-out list, then a request and a reply for each other worker: the calling worker runs its own share), broadcast N. The '
              'master CPU is utime + stime of its `/proc/<pid>/stat` (10 ms ticks) over the measured '
              'interval; one at a time it includes the cost of waking up for every frame.', '']

    s = report.get('scaling')
    if s:
        w = s['workers']
        L += ['## How costs grow', '',
              f'`bench-cluster --workers N --tests map,broadcast --seconds {s["seconds"]}` for each N; '
              f'{s["rounds"]} round(s), medians. The machine has {m["nproc"]} CPUs: beyond that, '
              'workers share cores.', '',
              '| workers | map ops/s | map p50 µs | map mean µs | map p99 µs | master µs per map | '
              'master µs per routed msg (map) | broadcast deliveries/s | master µs per delivery | start-up to Ready, s |',
              '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in w:
            L.append(f'| {r["workers"]} | {f(r["map_ops_s"])} | {f(r["map_p50_us"])} | {f(r["map_mean_us"])} | '
                     f'{f(r["map_p99_us"])} | {f(r["map_master_us_per_op"])} | {f(r["map_master_us_per_routed"])} | '
                     f'{f(r["broadcast_deliveries_s"])} | {f(r["broadcast_master_us_per_routed"])} | '
                     f'{f(r["startup_s"])} |')
        L += ['']
        steps = growth(w, 'workers', 'map_mean_us')
        # With one worker, a map from that worker runs its own share at home (only the fan-out
        # list travels): the first step adds the first remote worker, so it is not judged.
        judged = [t for t in steps if t[0] >= 2]
        if judged:
            worst = max(judged, key=lambda t: t[2])
            L += ['Growth of the mean map latency per step, relative to the growth of N (1.0 = linear, '
                  'above 1 = worse than linear): '
                  + ', '.join(f'{x}→{y}: {g:.2f}' for x, y, g in steps)
                  + '. With 1 worker the caller runs the whole map itself (only the fan-out list goes '
                  'through the Hub), so 1→2 adds the first remote worker and is not judged; from 2 '
                  f'workers on, the worst step is {worst[0]}→{worst[1]}: '
                  f'{"no worse than linear" if worst[2] <= 1.1 else "WORSE than linear"}.', '']
        pl = s['payload']
        L += [f'Request/reply against payload size: `bench-cluster --workers 2 --tests payload` '
              '(worker 0 `request`s slot 1, whose handler echoes the bytes: the payload crosses the '
              'Hub twice each way), one at a time; the relay sends the same frame sizes to its echo '
              'server.', '',
              '| payload | cluster round trips/s | p50 µs | MiB/s each way | master CPU µs/op | master page faults/op | worker 0 CPU µs/op | relay round trips/s | relay MiB/s | cluster/relay |',
              '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in pl:
            ratio = r['cluster_rt_s'] / r['relay_rt_s'] if r['cluster_rt_s'] and r['relay_rt_s'] else None
            L.append(f'| {size_label(r["size"])} | {f(r["cluster_rt_s"])} | {f(r["cluster_p50_us"])} | '
                     f'{f(r["cluster_mib_s"])} | {f(r["cluster_master_us_per_op"])} | '
                     f'{f(r.get("cluster_master_faults"))} | {f(r.get("cluster_worker0_us_per_op"))} | {f(r["relay_rt_s"])} | '
                     f'{f(r["relay_mib_s"])} | {f"{ratio:.0%}" if ratio else "n/a"} |')
        L += ['']
        t = [{'size': r['size'], 'us': 1e6 / r['cluster_rt_s'] if r['cluster_rt_s'] else None} for r in pl]
        steps = growth(t, 'size', 'us')
        if steps:
            L += ['Growth of the time per round trip per step, relative to the growth of the payload: '
                  + ', '.join(f'{size_label(x)}→{size_label(y)}: {g:.2f}' for x, y, g in steps) + '.', '']
    if made:
        L += ['### Plots', '']
        L += [f'![{os.path.basename(p)}]({rel(p)})' for p in made]
        L += ['']
    if os.path.exists(ANALYSIS):
        with open(ANALYSIS) as fh:
            L += [fh.read().strip(), '']

    pr = report.get('profile')
    L += ['## Profile', '']
    if not pr:
        L += ['Not run this time (`--skip profile`).', '']
    elif pr.get('skipped'):
        L += [f'Skipped: {pr["skipped"]}.', '']
    else:
        L += ['`valgrind --tool=callgrind` on the master of `bench-cluster --workers 2 --tests consume64` '
              '(the workers run natively), once for 2 s and once for 6 s: the difference in '
              'instructions over the difference in operations cancels start-up and shutdown. Under '
              'callgrind the master is the bottleneck, so operations are few; instructions, unlike '
              'time, are repeatable.', '',
              '| run | consume ops | master instructions |', '|---|---:|---:|']
        for p in pr['points']:
            L.append(f'| {p["seconds"]} s | {f(p["ops"])} | {f(p["instructions"])} |')
        L += ['', f'**Master instructions per consume: {f(pr["instructions_per_op"])}; per routed message: '
              f'{f(pr["instructions_per_routed"])}** ({pr.get("routed_per_op", 2)} routed messages per consume).', '']
        if pr.get('top'):
            L += ['Top functions by own (exclusive) instructions in the 6 s run:', '',
                  '| instructions | % | function |', '|---:|---:|---|']
            L += [f'| {f(t["ir"])} | {t["pct"]:.1f} | `{t["function"]}` |' for t in pr['top']]
            L += ['']
    h = report.get('hosts')
    if h:
        L += ['## Across hosts (NATS)', '']
        if h.get('skipped'):
            L += [f'Skipped: {h["skipped"]}.', '']
        else:
            local = (report.get('machine') or {}).get('cluster_detail', {})
            L += [f'`bench-hosts --seconds {h["seconds"]}`: host a (a master and one worker, which makes '
                  f'the calls) and host b (a master and {h["workers_b"]} workers) on this machine, joined '
                  'over one `nats-server -js`; every call crosses hosts (a `map` is the caller\'s own share '
                  'and one request to b). The limit: `baseline-nats`, a bare async-nats request/reply between '
                  'two processes through the same server. The local Hub: the machine step above (one host). '
                  f'{h["runs"]} rounds, alternating, medians.', '',
                  '| measure | across hosts ops/s | p50 µs | p99 µs | bare async-nats ops/s | ratio | wanted | one host ops/s |',
                  '|---|---:|---:|---:|---:|---:|---:|---:|']
            for t, label, base in [('consume', 'consume, one at a time', 'bare_serial'),
                                   ('consume64', 'consume, 64 in flight', 'bare_pipelined'),
                                   ('map', 'map (1 + 2 workers), one at a time', 'bare_serial'),
                                   ('map64', 'map (1 + 2 workers), 64 in flight', 'bare_pipelined')]:
                v, b = h['tests'][t]['ops_per_s'], h[base]
                ratio = v / b if b else None
                want = '>= 50%' if t.startswith('consume') else ''
                ok = verdict(ratio >= 0.5) if want and ratio is not None else ''
                L.append(f'| {label} | {f(v)} | {f(h["tests"][t]["p50_us"])} | {f(h["tests"][t]["p99_us"])} | '
                         f'{f(b)} | {f"{ratio:.0%}" if ratio else "n/a"} | {want} {ok} | '
                         f'{f(local.get(t, {}).get("ops_per_s"))} |')
            L += ['', f'Broadcast across hosts: {f(h["broadcast_deliveries_per_s"])} deliveries/s to host b\'s '
                  f'{h["workers_b"]} workers.', '']
    if report.get('errors'):
        L += ['## Errors of this run', ''] + [f'- {e}' for e in report['errors']] + ['']
    if report.get('notes'):
        L += ['## Notes on this run', ''] + [f'- {n}' for n in report['notes']] + ['']
    L += ['## Commands', '', 'Run by `bench/run.py`, step by step in this order (UTC start times; paths '
          'relative to where each command runs):', '']
    for step, cmds in report.get('step_commands', {}).items():
        if cmds:
            L += [f'{step} ({report["step_times"].get(step)}):', '', '```sh', *cmds, '```', '']
    with open(os.path.join(ROOT, 'BENCHMARKS.md'), 'w') as fh:
        fh.write('\n'.join(L))


# ---------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--shared', default=os.environ.get('SHARED', os.path.join(ROOT, '..', 'shared')),
                   help='the shared folder holding bench/run.py (default ../shared, or $SHARED)')
    p.add_argument('--runs', type=int, default=3, help='runs of each contract driver and machine round')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--port', type=int, default=3300, help='port of the contract runs')
    p.add_argument('--hello-port', type=int, default=3301, help='port of the machine /hello runs')
    p.add_argument('--wrk-threads', type=int, default=2)
    p.add_argument('--wrk-connections', type=int, default=64)
    p.add_argument('--wrk-duration', type=int, default=10)
    p.add_argument('--quick', action='store_true', help='one short round of everything')
    p.add_argument('--skip', default='', help='comma separated steps to skip: ' + ','.join(STEPS))
    p.add_argument('--render', action='store_true',
                   help='run nothing: rewrite BENCHMARKS.md and the plots from bench/results/report.json')
    p.add_argument('--dry-run', action='store_true',
                   help='run nothing: print which steps would run (e.g. whether --shared is found)')
    p.add_argument('--reuse', action='store_true',
                   help='for skipped steps, keep the results of the previous run (bench/results/report.json)')
    a = p.parse_args()
    a.shared = os.path.abspath(a.shared)
    if a.quick:
        a.runs = 1
    skip = {s for s in a.skip.split(',') if s}
    if skip - set(STEPS):
        p.error(f'unknown steps: {skip - set(STEPS)}')
    started = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')
    report = {'argv': ['python3', 'bench/run.py', *sys.argv[1:]], 'commit': git_commit()}
    if 'contract' not in skip and not shared_driver(a):
        # The side-by-side with think-cluster needs the shared driver and reference app; the
        # project's own benchmarks do not.
        why = (f'the shared folder with the contract driver ({os.path.join(a.shared, "bench", "run.py")}) '
               'is not there; give it with --shared or $SHARED')
        log(f'skipping the contract step (side by side with think-cluster): {why}; '
            'every other step runs')
        skip.add('contract')
        report['contract_skipped'] = why
    if a.dry_run:
        log('dry run: steps ' + ', '.join(s for s in STEPS if s not in skip)
            + (f'; skipped: {", ".join(s for s in STEPS if s in skip)}' if skip else ''))
        return 0
    if a.render:
        with open(os.path.join(RESULTS, 'report.json')) as fh:
            report = json.load(fh)
        write_markdown(a, report, plots(report), report.get('started', '?'), report.get('finished', '?'))
        log('rewrote BENCHMARKS.md from bench/results/report.json')
        return 0

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f'signal {signum}')

    signal.signal(signal.SIGTERM, on_signal)
    errors = []
    previous = {}
    if a.reuse and os.path.exists(os.path.join(RESULTS, 'report.json')):
        with open(os.path.join(RESULTS, 'report.json')) as fh:
            previous = json.load(fh)
    report['step_times'] = {}
    report['step_commands'] = {}
    try:
        for step in STEPS:
            if step in skip:
                if step in previous and step in ('contract', 'machine', 'scaling', 'profile', 'hosts'):
                    report[step] = previous[step]
                    report['step_times'][step] = previous.get('step_times', {}).get(step, 'earlier')
                    report['step_commands'][step] = previous.get('step_commands', {}).get(step, [])
                    report.setdefault('notes', []).append(
                        f'{step}: kept from the previous run ({report["step_times"][step]})')
                continue
            log(f'step {step}')
            first_command = len(COMMANDS)
            report['step_times'][step] = datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M')
            try:
                fn = globals()[f'step_{step}']
                fn(a) if step in ('install', 'build') else fn(a, report)
            except Exception as e:  # record, go on with the next step
                if step in ('install', 'build'):
                    raise
                errors.append(f'{step}: {type(e).__name__}: {str(e)[:500]}')
                log(f'step {step} failed: {str(e)[:500]}')
            report['step_commands'][step] = COMMANDS[first_command:]
    finally:
        for proc in list(LIVE):
            kill_group(proc)
    report['errors'] = errors
    report['machine_info'] = machine_info()
    made = plots(report)
    finished = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')
    report['started'], report['finished'] = started, finished
    save('report.json', report)
    write_markdown(a, report, made, started, finished)
    if errors:
        log('errors: ' + '; '.join(errors))
    log('wrote BENCHMARKS.md')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
