"""Sluice meters what an upstream that spells its streams differently reports.

Usage: python metered_check.py GATEWAY_URL UPSTREAM_STATS_URL DEPLOYMENT KEY
Reads `sluice_tokens_total` for DEPLOYMENT from GATEWAY_URL/metrics and the
totals tests/python/spelled_upstream.py put in its answers (GET /stats):

- after the clients' run, the deployment's prompt and completion tokens moved;
- a chat stream with include_usage, one without it (the gateway asks the
  upstream and hides the usage chunk) and a Responses stream, each read to the
  end over a raw connection, are metered with exactly the upstream's numbers.

- a chat stream whose client closes the connection right after `[DONE]` (the
  openai Python SDK does, often before the upstream's body has ended) is
  metered with the upstream's numbers too.

A client that closes before the usage chunk has passed the gateway (litellm
may stop at the finish chunk) cannot be metered from the upstream's usage;
the ledger estimates those. So the run's totals may fall short of what the
upstream reported: that is printed as a note, not counted.
"""

import http.client
import json
import re
import sys
import time
import urllib.parse
import urllib.request

from compat_checks import Checks

gateway, stats_url, deployment, key = sys.argv[1:5]
checks = Checks()


def metered():
    text = urllib.request.urlopen(f"{gateway}/metrics", timeout=10).read().decode()
    totals = {"prompt": 0.0, "completion": 0.0}
    pattern = re.compile(r"^sluice_tokens_total\{([^}]*)\} (\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("deployment") == deployment and labels.get("type") in totals:
                totals[labels["type"]] += float(match.group(2))
    return totals


def reported():
    return {k: float(v) for k, v in json.loads(urllib.request.urlopen(stats_url, timeout=10).read()).items()}


def stream(path, body, close_after_done=False):
    """POSTs a stream and reads it to the end (or to [DONE]); returns its bytes."""
    target = urllib.parse.urlsplit(gateway)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    connection.request(
        "POST",
        path,
        json.dumps(body),
        {"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    response = connection.getresponse()
    seen = b""
    while True:
        line = response.readline()
        seen += line
        if not line or (close_after_done and b"[DONE]" in line):
            break
    connection.close()
    return seen


def same_as_upstream(run):
    """A client that closes right after [DONE] may read the metrics before
    the gateway has seen the close and settled the stream: the numbers are
    read again, for up to 5 s, until they match."""

    def body():
        before_metered, before_reported = metered(), reported()
        detail = run()
        deadline = time.monotonic() + 5
        while True:
            got, sent = metered(), reported()
            delta = {k: got[k] - before_metered[k] for k in got}
            expected = {k: sent[k] - before_reported[k] for k in sent}
            if (delta == expected and expected["prompt"] > 0) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return delta == expected and expected["prompt"] > 0, {"metered": delta, "reported": expected, **detail}

    return body


run_totals = (metered(), reported())
checks.check(
    f"sluice_tokens_total moved for deployment {deployment} during the clients' run",
    lambda: (run_totals[0]["prompt"] > 0 and run_totals[0]["completion"] > 0, run_totals[0]),
)
if run_totals[0] != run_totals[1]:
    print(
        f"note: metered {run_totals[0]} of reported {run_totals[1]} "
        "(streams whose clients left before the usage chunk are estimated by the ledger)"
    )

chat = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Say hello"}]}
checks.check(
    "chat stream with include_usage metered as reported",
    same_as_upstream(lambda: {"bytes": len(stream("/v1/chat/completions", dict(chat, stream_options={"include_usage": True})))}),
)


def without_usage():
    seen = stream("/v1/chat/completions", chat)
    events = [line[5:].strip() for line in seen.split(b"\n") if line.startswith(b"data:")]
    chunks = [json.loads(e) for e in events if e != b"[DONE]"]
    if not chunks or not all(c.get("choices") for c in chunks) or any(c.get("usage") for c in chunks):
        raise AssertionError(f"a chunk without choices or with usage reached the client: {seen[-400:]!r}")
    return {"chunks": len(chunks)}


checks.check("chat stream without include_usage metered as reported, usage hidden", same_as_upstream(without_usage))
checks.check(
    "responses stream metered as reported",
    same_as_upstream(lambda: {"bytes": len(stream("/v1/responses", {"model": "gpt-4o-mini", "input": "Say hello", "stream": True}))}),
)
checks.check(
    "chat stream closed right after [DONE] metered as reported",
    same_as_upstream(lambda: {"bytes": len(stream("/v1/chat/completions", chat, close_after_done=True))}),
)
checks.finish()
