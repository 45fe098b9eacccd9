#!/usr/bin/env python3
"""Portcullis vs HAProxy vs nginx, same box, same jobs, same pass.

Four jobs per proxy: plain HTTP, TLS terminate, TLS pass-through (by SNI) and re-encrypt
(verified), plus full TLS handshakes per second (h2load, one request per fresh client: wrk
resumes sessions, so it cannot measure full handshakes).

The proxy under test is pinned to CPU 0; the backend (nginx, one worker) and the load
generators to CPU 1. The figure that holds between runs on shared cores is work per proxy
CPU-second ("per core"), read from /proc/<pid>/stat before and after each load run; the same
reading, split into user and kernel time per request, shows where a proxy's time goes.

Every number is the median of --runs passes; the spread (min-max) is shown beside it.
"""

import argparse
import datetime
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_CPU = "0"
LOAD_CPU = "1"
# Extra command-line arguments for Portcullis (--portcullis-args).
PORTCULLIS_ARGS = []
# Where Portcullis's stderr (the access log, when on) goes (--log-sink): "file", written by the
# proxy itself, or "pipe", read by a `cat` on the load CPUs into that file, as a container
# runtime reads a container's stdout and stderr.
LOG_SINK = "file"

BACKEND_HTTP = 19080
BACKEND_HTTPS = 19443

HOSTS = {"terminate": "app.bench.test", "passthrough": "pass.bench.test", "reencrypt": "re.bench.test"}

# Ports of each proxy per job. Portcullis serves all TLS modes on one port (its design);
# HAProxy and nginx get one port per job, their best case (no chaining of frontends). All are
# below the ephemeral range (32768+ on Linux): a listener there can collide with a client port
# of an earlier job's connections that are still closing.
PORTS = {
    "portcullis": {"http": 18080, "terminate": 18443, "passthrough": 18443, "reencrypt": 18443},
    # The same binary with its access log on (its default posture), written to a file.
    "portcullis-log": {"http": 18080, "terminate": 18443, "passthrough": 18443, "reencrypt": 18443},
    "haproxy": {"http": 28080, "terminate": 28443, "passthrough": 28444, "reencrypt": 28445},
    "nginx": {"http": 26080, "terminate": 26443, "passthrough": 26444, "reencrypt": 26445},
}


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_pki(d):
    """CA, a leaf per host, and the backend's certificate (SAN = pass + re hosts)."""
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "3650", "-subj", "/CN=bench CA", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt"])

    def leaf(name, sans):
        sh(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={sans[0]}", "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr"])
        ext = f"{d}/{name}.ext"
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join(f"DNS:{s}" for s in sans) + "\n")
        sh(["openssl", "x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key",
            "-CAcreateserial", "-days", "3650", "-extfile", ext, "-out", f"{d}/{name}.crt"])
        with open(f"{d}/{name}.pem", "w") as f:
            f.write(open(f"{d}/{name}.crt").read() + open(f"{d}/{name}.key").read())

    leaf("app", [HOSTS["terminate"]])
    leaf("re", [HOSTS["reencrypt"]])
    leaf("backend", [HOSTS["passthrough"], HOSTS["reencrypt"]])


def backend_conf(d):
    return textwrap.dedent(f"""
        worker_processes 1;
        pid {d}/backend.pid;
        error_log {d}/backend.err;
        events {{ worker_connections 16384; }}
        http {{
            access_log off;
            keepalive_requests 1000000;
            server {{
                listen 127.0.0.1:{BACKEND_HTTP};
                location / {{ return 200 "ok\\n"; }}
                location /bulk/ {{ root {d}/www; }}
            }}
            server {{
                listen 127.0.0.1:{BACKEND_HTTPS} ssl;
                ssl_certificate {d}/backend.crt; ssl_certificate_key {d}/backend.key;
                location / {{ return 200 "ok\\n"; }}
                location /bulk/ {{ root {d}/www; }}
            }}
        }}
    """)


def nginx_conf(d):
    p = PORTS["nginx"]
    fwd = """
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_set_header Host $host;
                proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                proxy_set_header X-Forwarded-Proto $scheme;
                proxy_set_header X-Forwarded-Port $server_port;
                proxy_set_header X-Forwarded-Host $host;"""
    return textwrap.dedent(f"""
        load_module /usr/lib/nginx/modules/ngx_stream_module.so;
        worker_processes 1;
        pid {d}/nginx.pid;
        error_log {d}/nginx.err;
        events {{ worker_connections 16384; }}
        http {{
            access_log off;
            keepalive_requests 1000000;
            upstream be_http {{ server 127.0.0.1:{BACKEND_HTTP}; keepalive 128; }}
            upstream be_https {{ server 127.0.0.1:{BACKEND_HTTPS}; keepalive 128; }}
            server {{ listen 127.0.0.1:{p['http']}; location / {{ proxy_pass http://be_http; {fwd} }} }}
            server {{
                listen 127.0.0.1:{p['terminate']} ssl;
                ssl_certificate {d}/app.crt; ssl_certificate_key {d}/app.key;
                location / {{ proxy_pass http://be_http; {fwd} }}
            }}
            server {{
                listen 127.0.0.1:{p['reencrypt']} ssl;
                ssl_certificate {d}/re.crt; ssl_certificate_key {d}/re.key;
                location / {{
                    proxy_pass https://be_https; {fwd}
                    proxy_ssl_verify on; proxy_ssl_trusted_certificate {d}/ca.crt;
                    proxy_ssl_server_name on; proxy_ssl_name {HOSTS['reencrypt']};
                    proxy_ssl_session_reuse on;
                }}
            }}
        }}
        stream {{
            map $ssl_preread_server_name $pass_upstream {{ {HOSTS['passthrough']} 127.0.0.1:{BACKEND_HTTPS}; }}
            server {{ listen 127.0.0.1:{p['passthrough']}; ssl_preread on; proxy_pass $pass_upstream; }}
        }}
    """)


def haproxy_conf(d):
    """The article's configuration: forwardfor, X-Forwarded-Port/Proto, roundrobin; mode tcp
    with req_ssl_sni for pass-through."""
    p = PORTS["haproxy"]
    return textwrap.dedent(f"""
        global
            nbthread 1
            maxconn 9000
            tune.ssl.default-dh-param 2048
        defaults
            mode http
            timeout connect 5s
            timeout client 60s
            timeout server 60s
            option http-keep-alive
        frontend http
            bind 127.0.0.1:{p['http']}
            option forwardfor
            http-request set-header X-Forwarded-Port %[dst_port]
            http-request set-header X-Forwarded-Host %[req.hdr(host)]
            default_backend be_http
        frontend terminate
            bind 127.0.0.1:{p['terminate']} ssl crt {d}/app.pem alpn http/1.1
            option forwardfor
            http-request set-header X-Forwarded-Port %[dst_port]
            http-request add-header X-Forwarded-Proto https if {{ ssl_fc }}
            http-request set-header X-Forwarded-Host %[req.hdr(host)]
            default_backend be_http
        frontend reencrypt
            bind 127.0.0.1:{p['reencrypt']} ssl crt {d}/re.pem alpn http/1.1
            option forwardfor
            http-request set-header X-Forwarded-Port %[dst_port]
            http-request add-header X-Forwarded-Proto https if {{ ssl_fc }}
            http-request set-header X-Forwarded-Host %[req.hdr(host)]
            default_backend be_re
        frontend passthrough
            mode tcp
            bind 127.0.0.1:{p['passthrough']}
            tcp-request inspect-delay 5s
            tcp-request content accept if {{ req_ssl_hello_type 1 }}
            use_backend be_pass if {{ req_ssl_sni -i {HOSTS['passthrough']} }}
        backend be_http
            balance roundrobin
            server web01 127.0.0.1:{BACKEND_HTTP}
        backend be_re
            balance roundrobin
            server web01 127.0.0.1:{BACKEND_HTTPS} ssl verify required ca-file {d}/ca.crt sni str({HOSTS['reencrypt']})
        backend be_pass
            mode tcp
            balance roundrobin
            server web01 127.0.0.1:{BACKEND_HTTPS}
    """)


def indent(text, n):
    return "\n".join(" " * n + line for line in text.splitlines())


def portcullis_manifests(d):
    m = f"{d}/manifests"
    os.makedirs(m, exist_ok=True)
    app_crt, app_key = open(f"{d}/app.crt").read(), open(f"{d}/app.key").read()
    re_crt, re_key = open(f"{d}/re.crt").read(), open(f"{d}/re.key").read()
    ca = open(f"{d}/ca.crt").read()
    doc = f"""
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portcullis
  annotations: {{ingressclass.kubernetes.io/is-default-class: "true"}}
spec:
  controller: portcullis.io/ingress-controller
---
apiVersion: v1
kind: Secret
metadata: {{name: app-tls, namespace: bench}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{indent(app_crt, 4)}
  tls.key: |
{indent(app_key, 4)}
---
apiVersion: v1
kind: Secret
metadata: {{name: re-tls, namespace: bench}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{indent(re_crt, 4)}
  tls.key: |
{indent(re_key, 4)}
---
apiVersion: v1
kind: Secret
metadata: {{name: backend-ca, namespace: bench}}
type: Opaque
stringData:
  ca.crt: |
{indent(ca, 4)}
---
apiVersion: v1
kind: Service
metadata: {{name: be-http, namespace: bench}}
spec:
  ports: [{{name: http, port: 80, targetPort: {BACKEND_HTTP}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: be-http-1
  namespace: bench
  labels: {{kubernetes.io/service-name: be-http}}
addressType: IPv4
ports: [{{name: http, port: {BACKEND_HTTP}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: be-https, namespace: bench}}
spec:
  ports: [{{name: https, port: 443, targetPort: {BACKEND_HTTPS}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: be-https-1
  namespace: bench
  labels: {{kubernetes.io/service-name: be-https}}
addressType: IPv4
ports: [{{name: https, port: {BACKEND_HTTPS}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
  namespace: bench
  annotations: {{portcullis.io/health-check: "none"}}
spec:
  tls: [{{hosts: [{HOSTS['terminate']}], secretName: app-tls}}]
  rules:
  - host: {HOSTS['terminate']}
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: be-http, port: {{name: http}}}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: pass
  namespace: bench
  annotations: {{portcullis.io/tls-mode: passthrough, portcullis.io/health-check: "none"}}
spec:
  rules:
  - host: {HOSTS['passthrough']}
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: be-https, port: {{number: 443}}}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: re
  namespace: bench
  annotations:
    portcullis.io/tls-mode: reencrypt
    portcullis.io/backend-ca: backend-ca
    portcullis.io/health-check: "none"
spec:
  tls: [{{hosts: [{HOSTS['reencrypt']}], secretName: re-tls}}]
  rules:
  - host: {HOSTS['reencrypt']}
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: be-https, port: {{number: 443}}}}}}}}]
"""
    with open(f"{m}/bench.yaml", "w") as f:
        f.write(doc)
    return m


def wait_port(port, timeout=15):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def pids_of(proc):
    """The process and its children (nginx workers)."""
    pids = [proc.pid]
    try:
        out = sh(["pgrep", "-P", str(proc.pid)]).stdout.split()
        pids += [int(p) for p in out]
    except subprocess.CalledProcessError:
        pass
    return pids


def cpu_split(pids):
    """CPU seconds the processes spent in user space and in the kernel (utime, stime)."""
    user = kernel = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            kernel += int(fields[12])
        except FileNotFoundError:
            pass
    return user / CLK_TCK, kernel / CLK_TCK


def cpu_seconds(pids):
    return sum(cpu_split(pids))


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def start_proxy(name, d, binary):
    pin = ["taskset", "-c", PROXY_CPU]
    if name.startswith("portcullis"):
        m = portcullis_manifests(d)
        p = PORTS[name]
        # `warn` turns the `access` target off; `info` is the default, access log on.
        level = "info" if name == "portcullis-log" else "warn"
        reader = None
        if LOG_SINK == "pipe":
            reader = subprocess.Popen(["taskset", "-c", LOAD_CPU, "sh", "-c", f"exec cat > {d}/{name}.err"],
                                      stdin=subprocess.PIPE)
            sink = reader.stdin
        else:
            sink = open(f"{d}/{name}.err", "w")
        proc = subprocess.Popen(pin + [binary, "standalone", "--manifests", m,
                                       "--http-addr", f"127.0.0.1:{p['http']}",
                                       "--https-addr", f"127.0.0.1:{p['terminate']}",
                                       "--admin-addr", "127.0.0.1:18254", "--log-level", level]
                                + PORTCULLIS_ARGS,
                                stdout=subprocess.DEVNULL, stderr=sink)
        # The proxy holds the write end now; `stop` waits for the reader to drain it.
        sink.close()
        proc.log_reader = reader
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if urllib.request.urlopen("http://127.0.0.1:18254/readyz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("portcullis did not become ready: " + open(f"{d}/{name}.err").read())
    elif name == "haproxy":
        with open(f"{d}/haproxy.cfg", "w") as f:
            f.write(haproxy_conf(d))
        proc = subprocess.Popen(pin + ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"],
                                stdout=subprocess.DEVNULL, stderr=open(f"{d}/haproxy.err", "w"))
    else:
        with open(f"{d}/nginx.conf", "w") as f:
            f.write(nginx_conf(d))
        proc = subprocess.Popen(pin + ["nginx", "-c", f"{d}/nginx.conf", "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=open(f"{d}/nginx.stderr", "w"))
    for port in set(PORTS[name].values()):
        wait_port(port)
    return proc


def stop(proc):
    """Stops a proxy and its children (nginx workers), and waits until they are gone: a worker
    outliving a killed master would keep the listening ports of the next start busy."""
    children = pids_of(proc)[1:]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader = getattr(proc, "log_reader", None)
    if reader is not None:
        reader.wait(timeout=10)
    deadline = time.time() + 10
    for pid in children:
        while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
            try:
                os.kill(pid, signal.SIGKILL if time.time() > deadline - 5 else signal.SIGTERM)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def parse_latency(text, pct):
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v if unit == "ms" else v * 1000


def run_wrk(url, pids, duration, connections):
    user_before, kernel_before = cpu_split(pids)
    out = sh(["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]).stdout
    user_after, kernel_after = cpu_split(pids)
    user, kernel = user_after - user_before, kernel_after - kernel_before
    cpu = user + kernel
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {
        "rps": rps,
        "per_core": requests / cpu if cpu > 0 else float("nan"),
        # Where the proxy's time per request went (clock ticks, so ±10 ms a run).
        "user_us": user / requests * 1e6 if requests else float("nan"),
        "kernel_us": kernel / requests * 1e6 if requests else float("nan"),
        "p50_ms": parse_latency(out, 50),
        "p99_ms": parse_latency(out, 99),
        "errors": errors,
    }


def run_handshakes(url, pids, clients):
    """h2load with fresh clients: each client makes one TLS connection (a full handshake, no
    resumption) and one request."""
    before = cpu_seconds(pids)
    out = sh(["taskset", "-c", LOAD_CPU, "h2load", "--h1", "-t1", f"-c{clients}", f"-n{clients}", url]).stdout
    cpu = cpu_seconds(pids) - before
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    done = int(m.group(2)) if m else 0
    secs = float(re.search(r"finished in ([\d.]+)(ms|s)", out).group(1))
    if re.search(r"finished in [\d.]+ms", out):
        secs /= 1000
    return {"hs_per_s": done / secs if secs else float("nan"),
            "hs_per_core": done / cpu if cpu > 0 else float("nan"), "failed": clients - done}


def idle_tls_memory(proxy, pids, ca, n, mode="terminate"):
    """Memory per idle keep-alive TLS connection: open `n` TLS connections to the `mode` host
    (terminate or passthrough), one request each (so each has done a full handshake and served
    HTTP), keep them all open, and compare the proxy's RSS before and after. Returns KiB per
    connection."""
    import resource
    import socket
    import ssl
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    host, port = HOSTS[mode], PORTS[proxy][mode]
    req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    before = rss_kib(pids)
    conns = []
    try:
        for _ in range(n):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname=host)
            s.sendall(req)
            got = b""
            while not got.endswith(b"ok\n"):
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError(f"{proxy}: connection closed during the idle-memory test")
                got += chunk
            conns.append(s)
        time.sleep(1)
        after = rss_kib(pids)
    finally:
        for s in conns:
            try:
                s.close()
            except OSError:
                pass
    return (after - before) / n, before, after


# Jobs beyond the four keep-alive ones: (the mode whose host and port they use, the path). The
# bulk jobs download a 1 MiB file: they measure the byte path (copies, or splice(2) in
# pass-through) rather than the per-message one; their "requests" are MiB. `http-1m` streams
# the body through both of Portcullis's HTTP/1 connections in plain text: it is what showed
# that flattening writes (hyper's `writev(false)`) costs 8-12 % on large bodies.
EXTRA_JOBS = {
    "passthrough-1m": ("passthrough", "/bulk/1m"),
    "http-1m": ("http", "/bulk/1m"),
}

# Modes of the idle-connection memory test. A pass-through connection is the client's TLS
# connection too, only the pod holds its TLS state.
IDLE_MODES = ["terminate", "passthrough"]


def url_for(proxy, job):
    mode, path = EXTRA_JOBS.get(job, (job, "/"))
    port = PORTS[proxy][mode]
    if mode == "http":
        return f"http://{HOSTS['terminate']}:{port}{path}"
    return f"https://{HOSTS[mode]}:{port}{path}"


def median_spread(values):
    vals = [v for v in values if v == v]
    if not vals:
        return "n/a", float("nan")
    med = statistics.median(vals)
    return f"{med:,.0f} ({min(vals):,.0f}–{max(vals):,.0f})", med


def median_ms(values):
    vals = [v for v in values if v == v]
    if not vals:
        return "n/a", float("nan")
    med = statistics.median(vals)
    return f"{med:.2f} ({min(vals):.2f}–{max(vals):.2f})", med


def versions(binary):
    hv = sh(["haproxy", "-v"]).stdout.splitlines()[0]
    nv = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    pv = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return hv, nv, f"portcullis {pv}"


def main():
    global PROXY_CPU, LOAD_CPU, PORTCULLIS_ARGS, LOG_SINK
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--handshake-clients", type=int, default=1000)
    ap.add_argument("--proxies", default="portcullis,portcullis-log,haproxy,nginx")
    ap.add_argument("--idle-connections", type=int, default=8000,
                    help="TLS connections held open for the memory-per-connection test "
                         "(client, proxy and backend each need one fd per connection)")
    ap.add_argument("--scale-binary", help="the bench_scale example (config-change and scale benchmarks)")
    ap.add_argument("--output", default="bench/RESULTS.md")
    ap.add_argument("--jobs", default="http,terminate,passthrough,reencrypt",
                    help="subset of jobs to run (a quick look; RESULTS.md wants all four); "
                         "also passthrough-1m and http-1m (1 MiB downloads through pass-through, plain HTTP)")
    ap.add_argument("--handshakes", type=int, default=1, help="0 skips the full-handshake job")
    ap.add_argument("--proxy-cpus", default=PROXY_CPU,
                    help="CPUs the proxy may run on (taskset list); Portcullis runs one worker per CPU. "
                         "Two-core scaling: --proxy-cpus 0,1 --load-cpus 0,1 (the per-core figures "
                         "then say what a second worker costs; the load shares the cores)")
    ap.add_argument("--load-cpus", default=LOAD_CPU, help="CPUs of the backend and the load generators")
    ap.add_argument("--portcullis-args", default="",
                    help="extra arguments for Portcullis, e.g. --passthrough-splice")
    ap.add_argument("--log-sink", choices=["file", "pipe"], default="file",
                    help="Portcullis's stderr (its access log when on): a file it writes itself, or a "
                         "pipe read by a cat on the load CPUs, as a container runtime reads it")
    args = ap.parse_args()
    PORTCULLIS_ARGS = args.portcullis_args.split()
    LOG_SINK = args.log_sink
    PROXY_CPU, LOAD_CPU = args.proxy_cpus, args.load_cpus
    binary = os.path.abspath(args.binary)
    proxies = args.proxies.split(",")
    jobs = args.jobs.split(",")

    d = tempfile.mkdtemp(prefix="portcullis-bench-")
    make_pki(d)
    os.makedirs(f"{d}/www/bulk")
    with open(f"{d}/www/bulk/1m", "wb") as f:
        f.write(os.urandom(1 << 20))
    # nginx's workers drop root: they read the bulk file as another user.
    for path in [d, f"{d}/www", f"{d}/www/bulk"]:
        os.chmod(path, 0o755)
    os.chmod(f"{d}/www/bulk/1m", 0o644)
    with open(f"{d}/backend.conf", "w") as f:
        f.write(backend_conf(d))
    backend = subprocess.Popen(["taskset", "-c", LOAD_CPU, "nginx", "-c", f"{d}/backend.conf", "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {p: {j: [] for j in jobs + ["handshake"]} for p in proxies}
    idle_rss = {p: [] for p in proxies}
    conn_mem = {p: {} for p in proxies}
    try:
        wait_port(BACKEND_HTTP)
        wait_port(BACKEND_HTTPS)
        for run in range(args.runs):
            for proxy in proxies:
                proc = start_proxy(proxy, d, binary)
                try:
                    pids = pids_of(proc)
                    idle_rss[proxy].append(rss_kib(pids))
                    for job in jobs:
                        # Warm up pools and session caches, then measure.
                        run_wrk(url_for(proxy, job), pids, 1, args.connections)
                        r = run_wrk(url_for(proxy, job), pids, args.duration, args.connections)
                        results[proxy][job].append(r)
                        print(f"run {run + 1} {proxy:10} {job:11} {r['rps']:>10,.0f} req/s "
                              f"{r['per_core']:>10,.0f} req/core-s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
                              f"errors {r['errors']}", flush=True)
                    if not args.handshakes:
                        continue
                    h = run_handshakes(url_for(proxy, "terminate"), pids, args.handshake_clients)
                    results[proxy]["handshake"].append(h)
                    print(f"run {run + 1} {proxy:10} handshakes  {h['hs_per_s']:>10,.0f} /s "
                          f"{h['hs_per_core']:>10,.0f} /core-s failed {h['failed']}", flush=True)
                    # Idle connections log nothing: measured once, with the access log off.
                    if args.idle_connections and run == 0 and proxy != "portcullis-log":
                        for i, mode in enumerate(IDLE_MODES):
                            if i > 0:
                                # A fresh process: memory the last test's connections freed
                                # would otherwise be reused and hide this test's.
                                stop(proc)
                                proc = start_proxy(proxy, d, binary)
                                pids = pids_of(proc)
                            per, before, after = idle_tls_memory(proxy, pids, f"{d}/ca.crt",
                                                                 args.idle_connections, mode)
                            conn_mem[proxy][mode] = (per, before, after)
                            print(f"run {run + 1} {proxy:10} idle {mode:11} {per:>7.1f} KiB/conn "
                                  f"(RSS {before:,} -> {after:,} KiB, {args.idle_connections} conns)", flush=True)
                finally:
                    stop(proc)
    finally:
        stop(backend)

    hv, nv, pv = versions(binary)
    lines = [
        "# Benchmark results",
        "",
        f"Date: {datetime.date.today().isoformat()} · {pv} · {hv} · {nv} · {os.cpu_count()} cores",
        "",
        f"Method: `bench/run.sh` ({args.runs} runs, wrk -t1 -c{args.connections} -d{args.duration}s keep-alive; "
        f"h2load --h1 with {args.handshake_clients} fresh clients for full handshakes). Proxy pinned to CPU(s) {PROXY_CPU}, "
        f"backend (nginx, 1 worker) and load generators to CPU(s) {LOAD_CPU}. HAProxy nbthread 1, nginx 1 worker, "
        "each on one port per job (their best case); Portcullis serves all TLS modes on one port. "
        "**per core** = requests (or handshakes) ÷ CPU seconds the proxy process used. "
        "Median (min–max) of the runs. Logging posture: HAProxy has no `log` target, nginx "
        "`access_log off`; `portcullis` runs with `--log-level warn` (its `access` target off) and "
        "`portcullis-log` with `--log-level info` (its default: one access line per request, "
        "or per connection for pass-through, "
        + ("to a pipe read by a `cat` on the load CPUs" if LOG_SINK == "pipe" else "to a file")
        + "); errors always logged.",
        "",
        "| job | proxy | req/s | req per core-second | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    med = {}
    for job in jobs:
        for proxy in proxies:
            rs = results[proxy][job]
            rps, _ = median_spread([r["rps"] for r in rs])
            pc, pcm = median_spread([r["per_core"] for r in rs])
            p50, _ = median_ms([r["p50_ms"] for r in rs])
            p99, p99m = median_ms([r["p99_ms"] for r in rs])
            med[(proxy, job)] = (pcm, p99m)
            lines.append(f"| {job} | {proxy} | {rps} | {pc} | {p50} | {p99} | {sum(r['errors'] for r in rs)} |")
    lines += ["", "| job | proxy | CPU µs per request: user | kernel |", "|---|---|---|---|"]
    for job in jobs:
        for proxy in proxies:
            rs = results[proxy][job]
            user = statistics.median(r["user_us"] for r in rs)
            kernel = statistics.median(r["kernel_us"] for r in rs)
            lines.append(f"| {job} | {proxy} | {user:.2f} | {kernel:.2f} |")
    lines += ["", "| full TLS handshakes | proxy | handshakes/s | per core-second | failed |", "|---|---|---|---|---|"]
    for proxy in proxies:
        hs = results[proxy]["handshake"]
        hps, _ = median_spread([h["hs_per_s"] for h in hs])
        hpc, hpcm = median_spread([h["hs_per_core"] for h in hs])
        med[(proxy, "handshake")] = (hpcm, float("nan"))
        lines.append(f"| terminate | {proxy} | {hps} | {hpc} | {sum(h['failed'] for h in hs)} |")
    for ours, target in [("portcullis", 1.15), ("portcullis-log", 1.05)]:
        if ours not in proxies or "haproxy" not in proxies:
            continue
        posture = "access log off" if ours == "portcullis" else "access log on (HAProxy's off)"
        lines += ["", f"| job | {ours} / haproxy, per core ({posture}) | target | p99 {ours} ≤ haproxy |",
                  "|---|---|---|---|"]
        for job in jobs + ["handshake"]:
            (pc, p99), (hc, h99) = med[(ours, job)], med[("haproxy", job)]
            goal = 1.8 if job == "handshake" else target
            ratio = pc / hc if hc else float("nan")
            p99ok = "—" if job == "handshake" else ("yes" if p99 <= h99 else "no")
            lines.append(f"| {job} | **{ratio:.2f}×** | ≥ {goal}× | {p99ok} |")
    if "portcullis" in proxies and "portcullis-log" in proxies:
        lines += ["", "| job | cost of Portcullis's access log (per core, on ÷ off) | target |", "|---|---|---|"]
        for job in jobs:
            on, off = med[("portcullis-log", job)][0], med[("portcullis", job)][0]
            lines.append(f"| {job} | **{on / off:.2f}×** | ≥ 0.90× |")
    lines += ["", "| idle RSS (KiB, after start) | " + " | ".join(proxies) + " |",
              "|---|" + "---|" * len(proxies),
              "| median | " + " | ".join(f"{statistics.median(idle_rss[p]):,.0f}" for p in proxies) + " |", ""]
    if args.idle_connections:
        lines += [f"| memory per idle keep-alive TLS connection ({args.idle_connections} open, one request each) | "
                  + " | ".join(proxies) + " |",
                  "|---|" + "---|" * len(proxies)]
        for mode in IDLE_MODES:
            lines += [f"| {mode}: KiB per connection (RSS after − before) ÷ connections | "
                      + " | ".join(f"{conn_mem[p][mode][0]:.1f}" if mode in conn_mem[p] else "n/a"
                                   for p in proxies) + " |",
                      f"| {mode}: RSS before → after (KiB) | "
                      + " | ".join(f"{conn_mem[p][mode][1]:,} → {conn_mem[p][mode][2]:,}"
                                   if mode in conn_mem[p] else "n/a" for p in proxies) + " |"]
        lines += [""]
    if args.scale_binary:
        for what in ["scale", "scale-heap", "change-internal", "change-file", "swap-load", "cluster-churn"]:
            print(f"bench_scale {what} ...", flush=True)
            out = sh(["taskset", "-c", f"{PROXY_CPU},{LOAD_CPU}", os.path.abspath(args.scale_binary), what]).stdout
            lines += [out]
    report = "\n".join(lines)
    print()
    print(report)
    with open(args.output, "w") as f:
        f.write(report)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
