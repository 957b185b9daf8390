"""Checks receiver.py: python selftest.py, in a venv with opentelemetry-proto and grpcio. Exports over
HTTP (protobuf, gzip, OTLP/JSON) and gRPC, then tries the refuse, reject and slow modes and the exit at EOF."""

import gzip, json, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

def kv(key, **value):
    return KeyValue(key=key, value=AnyValue(**value))

TRACE, ROOT, CHILD = bytes(range(16)), bytes.fromhex("aa" * 8), bytes.fromhex("bb" * 8)
attrs = [kv("s", string_value="x"), kv("i", int_value=7), kv("f", double_value=1.5), kv("b", bool_value=True),
         kv("a", array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="y")])),
         kv("raw", bytes_value=b"\x01\xff")]
root = Span(trace_id=TRACE, span_id=ROOT, name="root", kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=10,
            end_time_unix_nano=20, attributes=attrs, flags=257, status=Status(code=2, message="boom"),
            events=[Span.Event(name="ev", time_unix_nano=15, attributes=[kv("k", string_value="v")])],
            links=[Span.Link(trace_id=TRACE[::-1], span_id=CHILD[::-1], attributes=[kv("l", int_value=1)])])
child = Span(trace_id=TRACE, span_id=CHILD, parent_span_id=ROOT, name="child")
request = service.ExportTraceServiceRequest(resource_spans=[{
    "resource": {"attributes": [kv("service.name", string_value="sluice")]},
    "scope_spans": [{"scope": {"name": "sluice"}, "spans": [root, child]}]}])
body = request.SerializeToString()

proc = subprocess.Popen([sys.executable, Path(__file__).with_name("receiver.py"), "--grpc"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
ports = json.loads(proc.stdout.readline())
stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}"))

def call(path, data=None, content_type="application/x-protobuf", **headers):
    url = f"http://127.0.0.1:{ports['http']}{path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, {"Content-Type": content_type, **headers})) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()

def get(path):
    return json.loads(call(path)[1])

assert call("/v1/traces", body) == (200, b"")
assert call("/v1/traces", gzip.compress(body), **{"Content-Encoding": "gzip"}) == (200, b"")
stub.Export(request, metadata=[("x-test", "1")])
assert call("/v1/traces", b"not protobuf")[0] == 400 and call("/v1/traces", body, "text/plain")[0] == 415
spans, requests = get("/spans"), get("/requests")
assert spans == [spans[0], spans[1]] * 3 and spans[1]["parent_span_id"] == "aa" * 8, spans
assert spans[0] == {"trace_id": TRACE.hex(), "span_id": "aa" * 8, "parent_span_id": "", "trace_state": "",
    "name": "root", "kind": "SPAN_KIND_SERVER", "start": 10, "end": 20, "flags": 257,
    "attributes": {"s": "x", "i": 7, "f": 1.5, "b": True, "a": [1, "y"], "raw": "01ff"},
    "events": [{"name": "ev", "time": 15, "attributes": {"k": "v"}}], "resource": {"service.name": "sluice"},
    "links": [{"trace_id": TRACE[::-1].hex(), "span_id": "bb" * 8, "attributes": {"l": 1}}],
    "status": {"code": "STATUS_CODE_ERROR", "message": "boom"}, "scope": "sluice"}, spans[0]
assert [r["transport"] for r in requests] == ["http"] * 2 + ["grpc"] and requests[2]["headers"]["x-test"] == "1"
assert requests[1]["headers"]["content-encoding"] == "gzip" and requests[0]["path"] == "/v1/traces"
otlp_json = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TRACE.hex(), "spanId": "cc" * 8,
                                                          "parentSpanId": ROOT.hex(), "kind": 3}]}]}]}
assert call("/v1/traces", json.dumps(otlp_json).encode(), "application/json") == (200, b"{}")
assert get("/spans")[-1]["parent_span_id"] == "aa" * 8 and get("/spans")[-1]["kind"] == "SPAN_KIND_CLIENT"
call("/reset", b"{}")
for mode, http_code, grpc_code in [("refuse", 503, "UNAVAILABLE"), ("reject", 400, "INVALID_ARGUMENT")]:
    call("/mode", json.dumps({"mode": mode}).encode())
    assert call("/v1/traces", body)[0] == http_code
    assert stub.Export.future(request).exception().code().name == grpc_code
assert get("/refused") == 4 and get("/spans") == [] and get("/requests") == []
call("/mode", json.dumps({"mode": "slow", "seconds": 2}).encode())
started, slow = time.monotonic(), stub.Export.future(request)
time.sleep(0.3)
assert get("/spans") == [] and time.monotonic() - started < 1, "control endpoints blocked while slow"
slow.result()
assert len(get("/spans")) == 2 and time.monotonic() - started >= 2
stub.Export.future(request)
time.sleep(0.3)  # an export sleeping in slow mode must not delay the exit
proc.stdin.close()
assert proc.wait(timeout=2) == 0
print("ok")
