#!/usr/bin/env python3
"""Resident memory per idle connection and per open stream.

Opens N keep-alive connections (one /healthz request each, then idle) or N
SSE streams (kept open by a mock deployment with a long chunk_interval)
against a running Sluice, and prints the growth of its VmRSS divided by N.

    scripts/conn-rss.py --pid PID --addr 127.0.0.1:8080 --mode idle --n 10000
    scripts/conn-rss.py --pid PID --addr 127.0.0.1:8080 --mode stream --n 10000
"""

import argparse
import asyncio
import resource
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


STREAM = (
    b'{"model":"gpt-4o","stream":true,'
    b'"messages":[{"role":"user","content":"Say hello"}]}'
)


def request(mode):
    if mode == "idle":
        return b"GET /healthz HTTP/1.1\r\nhost: sluice\r\n\r\n"
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: sluice\r\n"
        b"content-type: application/json\r\n"
        + b"content-length: %d\r\n\r\n" % len(STREAM)
        + STREAM
    )


async def open_one(host, port, mode, held):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request(mode))
    # The response head (idle) or the first SSE bytes (stream).
    data = await asyncio.wait_for(reader.read(4096), 30)
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(data[:200])
    held.append(writer)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--addr", default="127.0.0.1:8080")
    parser.add_argument("--mode", choices=["idle", "stream"], default="idle")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = args.addr.rsplit(":", 1)
    before = rss_kib(args.pid)
    held = []
    for start in range(0, args.n, args.batch):
        count = min(args.batch, args.n - start)
        await asyncio.gather(
            *(open_one(host, int(port), args.mode, held) for _ in range(count))
        )
    time.sleep(2)
    after = rss_kib(args.pid)
    per = (after - before) / args.n
    print(
        f"{args.mode}: {args.n} open, RSS {before} KiB -> {after} KiB, "
        f"{per:.1f} KiB per {'connection' if args.mode == 'idle' else 'stream'}"
    )
    for writer in held:
        writer.close()


asyncio.run(main())
