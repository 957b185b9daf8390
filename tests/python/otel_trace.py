"""An application traced with the official OpenTelemetry Python SDK calls
Sluice with the official OpenAI SDK (its httpx client instrumented, so it
sends `traceparent`); both export to the same OTLP receiver. The app's
trace must continue through Sluice: each call's server span a child of the
app's HTTP client span, each upstream attempt a child of that server span,
with the GenAI attributes, for a plain and a streamed chat call.

Usage: otel_trace.py BASE_URL KEY RECEIVER_URL
"""

import json
import sys
import time
import urllib.request

import openai
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

base, key, receiver = sys.argv[1:4]

provider = TracerProvider(resource=Resource.create({"service.name": "smoke-app"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver}/v1/traces")))
trace.set_tracer_provider(provider)
HTTPXClientInstrumentor().instrument()

client = openai.OpenAI(base_url=base, api_key=key)
messages = [{"role": "user", "content": "Say hello"}]
with trace.get_tracer("smoke").start_as_current_span("answer a question") as root:
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    assert sum(1 for _ in stream) > 0
provider.force_flush()
trace_id = format(root.get_span_context().trace_id, "032x")


def spans_of_trace():
    with urllib.request.urlopen(f"{receiver}/spans", timeout=5) as answer:
        return [s for s in json.load(answer) if s["trace_id"] == trace_id]


def of(spans, service, kind):
    return [s for s in spans if s["resource"].get("service.name") == service and s["kind"] == kind]


deadline = time.monotonic() + 15
while True:
    spans = spans_of_trace()
    servers = of(spans, "sluice", "SPAN_KIND_SERVER")
    attempts = of(spans, "sluice", "SPAN_KIND_CLIENT")
    if (len(servers), len(attempts)) == (2, 2) or time.monotonic() > deadline:
        break
    time.sleep(0.1)

app_calls = {s["span_id"] for s in of(spans, "smoke-app", "SPAN_KIND_CLIENT")}
assert len(app_calls) == 2, [s["name"] for s in spans]
assert len(servers) == 2 and len(attempts) == 2, [s["name"] for s in spans]
server_ids = {s["span_id"] for s in servers}
for server in servers:
    assert server["parent_span_id"] in app_calls, server
    assert server["name"] == "POST /v1/chat/completions", server["name"]
for attempt in attempts:
    assert attempt["parent_span_id"] in server_ids, attempt
    assert attempt["name"] == "chat gpt-4o-mini", attempt["name"]
    assert attempt["attributes"]["gen_ai.provider.name"] == "sluice.mock", attempt
    assert attempt["attributes"]["gen_ai.usage.output_tokens"] > 0, attempt
streamed = [s for s in servers if s["attributes"].get("sluice.stream.outcome") == "completed"]
assert len(streamed) == 1, servers
print(f"otel: the app's trace {trace_id} continues through sluice (2 calls, 2 attempts)")
