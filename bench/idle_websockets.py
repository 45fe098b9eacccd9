"""Memory per idle upgraded (websocket) connection through Portcullis's :80.

Usage: python3 bench/idle_websockets.py BINARY [CONNECTIONS]

A backend on 127.0.0.1:19080 (bench.py's plain HTTP backend port) answers every request with
101 Switching Protocols and echoes what follows; the proxy runs bench.py's manifests. Each
connection upgrades, exchanges one message, and stays open; the proxy's RSS before and after,
divided by the connections, is printed. Raise the descriptor limit first (`ulimit -n`).
"""
import asyncio
import os
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
BACKEND = r'''
import asyncio
async def serve(r, w):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await r.read(4096)
        if not chunk: return
        head += chunk
    w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    await w.drain()
    while True:
        data = await r.read(4096)
        if not data: break
        w.write(data); await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(serve, "127.0.0.1", 19080, backlog=4096)
    await s.serve_forever()
asyncio.run(main())
'''
async def one(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /ws HTTP/1.1\r\nHost: app.bench.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += await r.read(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    w.write(b"ping"); await w.drain()
    got = b""
    while len(got) < 4:
        got += await r.read(4)
    return r, w
async def main(binary, n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    d = tempfile.mkdtemp()
    bench.make_pki(d)
    be = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", BACKEND])
    bench.wait_port(19080)
    proc = bench.start_proxy("portcullis", d, os.path.abspath(binary))
    try:
        pids = bench.pids_of(proc)
        before = bench.rss_kib(pids)
        conns = []
        for i in range(0, n, 200):
            conns += await asyncio.gather(*[one(18080) for _ in range(min(200, n - i))])
        await asyncio.sleep(1)
        after = bench.rss_kib(pids)
        print(f"{binary}: {(after - before) / n:.1f} KiB per idle upgraded connection (RSS {before:,} -> {after:,} KiB, {n} conns)")
        for r, w in conns:
            w.close()
    finally:
        bench.stop(proc); be.terminate(); be.wait()
if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4000))
