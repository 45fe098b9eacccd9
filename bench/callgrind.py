#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: a repeatable number on a noisy box.

wrk's requests per second move by 10 % between passes when anything else runs on the machine;
the number of instructions the proxy executes per request does not (a few tenths of a percent
between runs of the same binary). This script runs Portcullis in standalone mode under
`valgrind --tool=callgrind` with the manifests of bench/bench.py (its nginx backend, its
hosts), opens a few keep-alive connections, sends warm-up requests with instrumentation off
(startup, TLS handshakes and first-use allocations are not counted), then counts exactly
--requests requests per case and prints instructions per request for:

    http  logs off   plain HTTP on the :80 listener, `--log-level warn` (no access log)
    http  logs on    the same, `--log-level info` (one access line per request, to a file)
    terminate off    TLS terminate on the :443 listener, no access log
    terminate on     the same with the access log
    reencrypt off    TLS terminate and a TLS connection of our own to the pod (re.bench.test)
    reencrypt on     the same with the access log

Each proxy process serves the three modes of one logging posture, one after the other. Start-up
runs with instrumentation off; it is switched on (`callgrind_control -i on`) before the first
mode. Each mode's connections are opened and warmed up, the counters are dumped and the dump
thrown away (a dump zeroes them: handshakes and first-use allocations are not counted), the
counted requests are sent and the counters dumped again (`callgrind_control -d`), so that dump
holds exactly that mode's requests (plus whatever the runtime's timers did meanwhile, which is
small next to thousands of requests).

With --haproxy, HAProxy runs the same three modes the same way, under the configuration of
bench.py (`nbthread 1`, no `log` target; it adds three forwarded headers, four over TLS,
where Portcullis adds six and an `X-Request-ID`): the number of instructions per request the
comparison is about.

Usage:
    python3 bench/callgrind.py --binary target/release/portcullis [--binary OTHER ...]
        [--haproxy] [--requests 20000] [--connections 4] [--keep DIR]

With --keep, the callgrind dumps stay in DIR (`<name>.<posture>.<mode>.out`) for
`callgrind_annotate --inclusive=yes DIR/<file>`. The ports (19180, 19543 for the backend,
18180, 18543, 18354 for the proxy, 28180, 28543 and 28545 for HAProxy) differ from bench.py's, so
both can run at once.
"""

import argparse
import glob
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import http.client
import urllib.request

sys.dont_write_bytecode = True  # no bench/__pycache__ left in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (its PKI, backend and manifests)

bench.BACKEND_HTTP = 19180
bench.BACKEND_HTTPS = 19543
HTTP_PORT, HTTPS_PORT, ADMIN_PORT = 18180, 18543, 18354
HOST = bench.HOSTS["terminate"]
# HAProxy's frontends, moved off bench.py's ports like the others.
bench.PORTS["haproxy"] = {"http": 28180, "terminate": 28543, "passthrough": 28544, "reencrypt": 28545}
MODES = ("http", "terminate", "reencrypt")
PROXY_PORTS = {
    "portcullis": {"http": HTTP_PORT, "terminate": HTTPS_PORT, "reencrypt": HTTPS_PORT},
    "haproxy": bench.PORTS["haproxy"],
}


def start_backend(d):
    with open(f"{d}/backend.conf", "w") as f:
        f.write(bench.backend_conf(d))
    proc = subprocess.Popen(["nginx", "-c", f"{d}/backend.conf", "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=open(f"{d}/backend.stderr", "w"))
    bench.wait_port(bench.BACKEND_HTTP)
    bench.wait_port(bench.BACKEND_HTTPS)
    return proc


def start_proxy(d, binary, out, logs):
    m = bench.portcullis_manifests(d)
    err = open(f"{d}/proxy.{os.path.basename(out)}.stderr", "w")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         f"--log-file={out}.valgrind.log",
         binary, "standalone", "--manifests", m,
         "--http-addr", f"127.0.0.1:{HTTP_PORT}", "--https-addr", f"127.0.0.1:{HTTPS_PORT}",
         "--admin-addr", f"127.0.0.1:{ADMIN_PORT}", "--log-level", "info" if logs else "warn"],
        stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"portcullis exited: {open(err.name).read()}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/readyz", timeout=5).status == 200:
                return proc, err.name
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("portcullis did not become ready under valgrind")


def start_haproxy(d, out):
    with open(f"{d}/haproxy.cfg", "w") as f:
        f.write(bench.haproxy_conf(d))
    err = open(f"{d}/haproxy.{os.path.basename(out)}.stderr", "w")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         f"--log-file={out}.valgrind.log", "haproxy", "-db", "-f", f"{d}/haproxy.cfg"],
        stdout=subprocess.DEVNULL, stderr=err)
    for mode in MODES:
        bench.wait_port(PROXY_PORTS["haproxy"][mode], timeout=300)
    return proc, err.name


def connect(mode, ca, ports):
    port = ports[mode]
    if mode == "http":
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.bench_host = HOST
        return conn
    host = bench.HOSTS[mode]
    ctx = ssl.create_default_context(cafile=ca)
    # SNI and verification for the bench host, without needing it in /etc/hosts: the TCP
    # connection goes to the loopback address whatever the name.
    conn = http.client.HTTPSConnection(host, port, timeout=120, context=ctx)
    conn._create_connection = lambda addr, timeout, src: socket.create_connection(
        ("127.0.0.1", port), timeout)
    conn.bench_host = host
    return conn


def request(conn):
    conn.request("GET", "/", headers={"Host": conn.bench_host, "User-Agent": "callgrind-bench"})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200 or body != b"ok\n":
        raise RuntimeError(f"unexpected answer {resp.status} {body[:80]!r}")


def drive(conns, n):
    """Exactly n requests spread over the connections, one thread per connection."""
    per = [n // len(conns) + (1 if i < n % len(conns) else 0) for i in range(len(conns))]
    errors = []

    def run(conn, k):
        try:
            for _ in range(k):
                request(conn)
        except Exception as e:  # reported below, after every thread stopped
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c, k)) for c, k in zip(conns, per)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def total_ir(path):
    for line in open(path):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def dump(pid, out, seen):
    """Dumps the counters (which also zeroes them) and returns the new dump file."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        new = sorted(set(glob.glob(f"{out}.*[0-9]")) - seen, key=os.path.getmtime)
        if new and os.path.getsize(new[-1]) > 0 and "totals:" in open(new[-1]).read()[-4000:]:
            seen.update(new)
            return new[-1]
        time.sleep(0.2)
    raise RuntimeError("callgrind_control -d produced no dump")


def measure(d, binary, name, logs, args, keep):
    """One proxy process (`binary`, or HAProxy when it is None) under callgrind."""
    posture = "logs-on" if logs else "logs-off"
    out = f"{d}/{name}.{posture}"
    if binary is None:
        proc, stderr_path = start_haproxy(d, out)
        ports = PROXY_PORTS["haproxy"]
    else:
        proc, stderr_path = start_proxy(d, binary, out, logs)
        ports = PROXY_PORTS["portcullis"]
    results = {}
    try:
        lines_before = sum(1 for _ in open(stderr_path))
        seen = set(glob.glob(f"{out}.*[0-9]"))
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        # One mode after the other, each on connections opened and warmed up just before it:
        # under valgrind one mode's counted requests take longer than the keep-alive timeout
        # (30 s), which would close the other mode's connections while they wait. A dump zeroes
        # the counters, so the one after the warm-up discards it (handshakes included).
        for mode in MODES:
            conns = [connect(mode, f"{d}/ca.crt", ports) for _ in range(args.connections)]
            drive(conns, args.warmup * args.connections)
            os.remove(dump(proc.pid, out, seen))
            drive(conns, args.requests)
            path = dump(proc.pid, out, seen)
            results[mode] = total_ir(path) / args.requests
            if keep:
                os.replace(path, f"{keep}/{name}.{posture}.{mode}.out")
            for c in conns:
                c.close()
        lines = sum(1 for _ in open(stderr_path)) - lines_before
        expected = len(MODES) * args.requests if logs and binary is not None else 0
        if lines < expected:
            print(f"  warning: {lines} log lines for {expected} requests", file=sys.stderr)
    finally:
        bench.stop(proc)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", default=[],
                    help="a portcullis binary; repeat to compare (name = file name)")
    ap.add_argument("--haproxy", action="store_true",
                    help="also count HAProxy's instructions per request (no access log)")
    ap.add_argument("--requests", type=int, default=20000, help="counted requests per case")
    ap.add_argument("--connections", type=int, default=4, help="keep-alive connections per mode")
    ap.add_argument("--warmup", type=int, default=50, help="uncounted requests per connection first")
    ap.add_argument("--postures", default="off,on", help="access log postures to measure")
    ap.add_argument("--keep", help="directory for the callgrind dumps")
    args = ap.parse_args()
    if not args.binary and not args.haproxy:
        ap.error("give --binary, --haproxy or both")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="portcullis-callgrind-") as d:
        bench.make_pki(d)
        backend = start_backend(d)
        try:
            for binary in args.binary:
                name = os.path.basename(binary)
                for posture in args.postures.split(","):
                    logs = posture == "on"
                    r = measure(d, os.path.abspath(binary), name, logs, args, args.keep)
                    for mode, ir in r.items():
                        rows.append((name, mode, posture, ir))
                        print(f"{name:28} {mode:10} logs {posture:3}  {ir:10,.0f} instructions/request",
                              flush=True)
            if args.haproxy:
                for mode, ir in measure(d, None, "haproxy", False, args, args.keep).items():
                    rows.append(("haproxy", mode, "off", ir))
                    print(f"{'haproxy':28} {mode:10} logs off  {ir:10,.0f} instructions/request",
                          flush=True)
        finally:
            bench.stop(backend)
    print()
    print("| binary | mode | access log | instructions per request |")
    print("|---|---|---|---:|")
    for name, mode, posture, ir in rows:
        print(f"| {name} | {mode} | {posture} | {ir:,.0f} |")


if __name__ == "__main__":
    main()
