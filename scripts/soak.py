#!/usr/bin/env python3
"""A soak: Sluice's resident memory under steady mixed traffic for a long run.

Starts Debian's nginx answering a fixed chat completion and a fixed stream
(`scripts/bench-deps.sh` installs it) and the Sluice binary in front of it
with the default config's layers (a required key, metrics, the access log to
a file, request ids, the SQLite ledger). Then it sends a steady rate of
mixed calls over keep-alive connections: chat completions, streams, a bad
key (half a call per second, under the failed-key throttle), a bad body,
and a share of calls on a fresh connection that closes
after it. Every answer's status is checked. VmRSS, open files and threads
are sampled every `--sample` seconds.

    scripts/soak.py --binary target/release/sluice --minutes 60

It prints a line per sample and, at the end, the RSS of each quarter of the
run and its drift: the last quarter's median against the second quarter's
(the first is warm-up). Exits 1 if any answer was not the expected one or
the drift exceeds `--max-drift` (10% by default).
"""

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

KEY = "sk-soak-0123456789abcdef"
CHAT = b'{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}'
STREAM = (
    b'{"model":"gpt-4o-stream","stream":true,'
    b'"messages":[{"role":"user","content":"Say hello"}]}'
)
ANSWER = (
    '{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,'
    '"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant",'
    '"content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,'
    '"completion_tokens":2,"total_tokens":11}}'
)


def stream_answer(chunks=20):
    head = (
        'data: {"id":"chatcmpl-1","object":"chat.completion.chunk",'
        '"created":1700000000,"model":"gpt-4o","choices":['
    )
    text = ""
    for index in range(chunks):
        finish = '"stop"' if index + 1 == chunks else "null"
        text += (
            head + '{"index":0,"delta":{"content":"w%d "},"finish_reason":%s}]}\n\n'
        ) % (index, finish)
    text += (
        head + '],"usage":{"prompt_tokens":9,"completion_tokens":20,'
        '"total_tokens":29}}\n\n'
    )
    return text + "data: [DONE]\n\n"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_nginx(root):
    ports = [free_port(), free_port()]
    servers = ""
    for port, kind, body in (
        (ports[0], "application/json", ANSWER),
        (ports[1], "text/event-stream", stream_answer()),
    ):
        body = body.replace("\n", "\\n").replace("'", "\\'")
        servers += (
            f"server {{ listen 127.0.0.1:{port}; location / {{ "
            f"default_type {kind}; return 200 '{body}'; }} }}\n"
        )
    config = (
        f"daemon off;\nworker_processes 1;\npid {root}/nginx.pid;\n"
        f"error_log {root}/nginx-error.log warn;\nevents {{ worker_connections 4096; }}\n"
        f"http {{ access_log off; client_body_temp_path {root}/body;\n{servers}}}\n"
    )
    path = os.path.join(root, "nginx.conf")
    with open(path, "w") as out:
        out.write(config)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    child = subprocess.Popen(
        [nginx, "-c", path, "-e", os.path.join(root, "nginx-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return child, ports


def start_sluice(binary, root, ports):
    port = free_port()
    config = f"""[server]
listen = "127.0.0.1:{port}"
[auth]
required = true
[usage]
store = "sqlite"
data_dir = "{root}/data"
[[keys]]
name = "soak"
key = "{KEY}"
[[deployments]]
name = "json"
provider = "openai"
base_url = "http://127.0.0.1:{ports[0]}/v1"
api_key = "upstream-key"
models = ["gpt-4o"]
[[deployments]]
name = "stream"
provider = "openai"
base_url = "http://127.0.0.1:{ports[1]}/v1"
api_key = "upstream-key"
models = ["gpt-4o-stream"]
"""
    path = os.path.join(root, "sluice.toml")
    with open(path, "w") as out:
        out.write(config)
    log = open(os.path.join(root, "sluice.log"), "wb")
    child = subprocess.Popen(
        [binary, "--config", path], stdout=log, stderr=log, cwd=root
    )
    return child, port


def proc_sample(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    files = len(os.listdir(f"/proc/{pid}/fd"))
    return int(fields["VmRSS"].split()[0]) // 1024, files, int(fields["Threads"])


async def read_response(reader):
    """Status and body of one HTTP/1.1 answer (content-length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return status, headers.get("connection") == "close", body


def request(kind, close):
    key = "sk-wrong-key-000000000000" if kind == "bad_key" else KEY
    body = {"chat": CHAT, "stream": STREAM, "bad_key": CHAT, "bad_body": b'{"model":'}[
        kind
    ]
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: sluice\r\n"
        + f"authorization: Bearer {key}\r\n".encode()
        + b"content-type: application/json\r\n"
        + (b"connection: close\r\n" if close else b"")
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


EXPECTED = {"chat": 200, "stream": 200, "bad_key": 401, "bad_body": 400}
KINDS = ["chat"] * 60 + ["stream"] * 35 + ["bad_body"] * 5
# Refused keys count against the caller's address (`failed_auth_per_minute`,
# 120 by default): half a call per second stays well under it.
BAD_KEYS_PER_SECOND = 0.5


class Tally:
    def __init__(self):
        self.sent = 0
        self.wrong = {}

    def miss(self, what):
        self.wrong[what] = self.wrong.get(what, 0) + 1


async def one_call(conn, port, kind, close, tally):
    if conn is None:
        conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
    reader, writer = conn
    writer.write(request(kind, close))
    status, closed, body = await asyncio.wait_for(read_response(reader), 30)
    tally.sent += 1
    if status != EXPECTED[kind]:
        tally.miss(f"{kind}: {status}")
    elif kind == "stream" and not body.rstrip().endswith(b"data: [DONE]"):
        tally.miss("stream: cut short")
    if close or closed:
        writer.close()
        return None
    return conn


async def client(port, interval, bad_key_share, deadline, tally, rng):
    conn = None
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        kind = "bad_key" if rng.random() < bad_key_share else rng.choice(KINDS)
        # One call in twenty opens a connection of its own and closes it.
        close = rng.random() < 0.05
        try:
            fresh = None if close else conn
            kept = await one_call(fresh, port, kind, close, tally)
            if not close:
                conn = kept
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as error:
            tally.miss(f"{kind}: {type(error).__name__}")
            conn = None
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def sampler(pid, every, deadline, tally, samples):
    started = time.monotonic()
    while time.monotonic() < deadline:
        rss, files, threads = proc_sample(pid)
        minute = (time.monotonic() - started) / 60
        samples.append((minute, rss))
        print(
            f"{minute:6.1f} min  RSS {rss:4d} MB  files {files:5d}  "
            f"threads {threads:3d}  calls {tally.sent:9d}  wrong {sum(tally.wrong.values())}",
            flush=True,
        )
        await asyncio.sleep(every)


def report(samples, max_drift):
    count = len(samples)
    if count < 4:
        print("too short for quarters: run for at least four samples")
        return False
    quarters = [samples[i * count // 4 : (i + 1) * count // 4] for i in range(4)]
    medians = [statistics.median(rss for _, rss in quarter) for quarter in quarters]
    for index, value in enumerate(medians):
        print(f"quarter {index + 1}: median RSS {value} MB")
    drift = (medians[3] - medians[1]) / max(medians[1], 1)
    print(f"drift, last quarter against the second: {drift * 100:+.1f}%")
    return abs(drift) <= max_drift


async def run(args, port, pid):
    deadline = time.monotonic() + args.minutes * 60
    tally = Tally()
    samples = []
    interval = args.connections / args.rate
    bad_key_share = BAD_KEYS_PER_SECOND / args.rate
    rng = random.Random(7)
    await asyncio.gather(
        sampler(pid, args.sample, deadline, tally, samples),
        *(
            client(port, interval, bad_key_share, deadline, tally, random.Random(rng.random()))
            for _ in range(args.connections)
        ),
    )
    print(f"calls: {tally.sent}, wrong answers: {tally.wrong or 'none'}")
    flat = report(samples, args.max_drift)
    return flat and not tally.wrong


def wait_ready(port, child):
    for _ in range(200):
        if child.poll() is not None:
            sys.exit(f"sluice exited with {child.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2) as probe:
                probe.sendall(b"GET /readyz HTTP/1.1\r\nhost: s\r\nconnection: close\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("sluice did not become ready")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/sluice")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=400, help="calls per second")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sample", type=float, default=30, help="seconds")
    parser.add_argument("--max-drift", type=float, default=0.10)
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    root = tempfile.mkdtemp(prefix="sluice-soak-")
    nginx, ports = start_nginx(root)
    sluice, port = start_sluice(binary, root, ports)
    try:
        wait_ready(port, sluice)
        ok = asyncio.run(run(args, port, sluice.pid))
    finally:
        for child in (sluice, nginx):
            child.send_signal(signal.SIGTERM)
            child.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
