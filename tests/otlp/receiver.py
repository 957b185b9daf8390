"""An OTLP trace receiver for Sluice's integration tests: it decodes what
Sluice exports with the official `opentelemetry-proto` definitions and
hands it back as JSON, so a test can check the spans Sluice sent.

Usage: python receiver.py [--grpc]   (with stdin a pipe that stays open)
Listens on 127.0.0.1, OS-chosen ports: OTLP/HTTP (POST on any path,
protobuf or OTLP/JSON, maybe gzipped) and, with --grpc, insecure OTLP/gRPC.
When ready it prints one line such as {"http": 40123, "grpc": 40124}
("grpc": null without --grpc); it exits when its stdin reaches EOF.

Control endpoints on the HTTP port, JSON in and out: GET /spans,
GET /requests, GET /refused (a count), POST /reset (clears all three) and
POST /mode with {"mode": "ok" | "refuse" | "reject" | "slow", "seconds": N}.
A mode applies to exports received after it is set: refuse answers 503 or
UNAVAILABLE, reject 400 or INVALID_ARGUMENT (neither stores anything, both
count in /refused), slow waits N seconds, then stores and answers as ok.
"""

import argparse
import base64
import gzip
import json
import os
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as service_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

GRPC_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MODES = ("ok", "refuse", "reject", "slow")
HTTP_CODES = {"refuse": 503, "reject": 400}
GRPC_CODES = {"refuse": grpc.StatusCode.UNAVAILABLE, "reject": grpc.StatusCode.INVALID_ARGUMENT}
ID_FIELDS = ("traceId", "spanId", "parentSpanId")

lock = threading.Lock()
state = {"spans": [], "requests": [], "refused": 0, "mode": {"mode": "ok"}}


def value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind) if kind else None


def enum_name(enum, number):
    return enum.Name(number) if number in enum.values() else number


def attributes(key_values):
    return {kv.key: value(kv.value) for kv in key_values}


def flatten(span, resource, scope):
    return {
        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(), "trace_state": span.trace_state,
        "name": span.name, "kind": enum_name(trace_pb2.Span.SpanKind, span.kind),
        "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
        "attributes": attributes(span.attributes),
        "events": [{"name": event.name, "time": event.time_unix_nano, "attributes": attributes(event.attributes)}
                   for event in span.events],
        "links": [{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                   "attributes": attributes(link.attributes)} for link in span.links],
        "status": {"code": enum_name(trace_pb2.Status.StatusCode, span.status.code), "message": span.status.message},
        "resource": resource, "scope": scope, "flags": span.flags,
    }


def export(request, transport, path, headers):
    """Stores one export unless the mode says otherwise; returns the mode."""
    with lock:
        mode = state["mode"]
        if mode["mode"] in ("refuse", "reject"):
            state["refused"] += 1
            return mode["mode"]
    if mode["mode"] == "slow":
        time.sleep(float(mode.get("seconds", 1)))
    spans = [flatten(span, attributes(rs.resource.attributes), ss.scope.name)
             for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    with lock:
        state["spans"].extend(spans)
        state["requests"].append({"transport": transport, "path": path, "headers": headers, "spans": len(spans)})
    return mode["mode"]


def hex_ids_to_base64(node):
    """OTLP/JSON writes ids in hex where the protobuf JSON mapping wants base64."""
    if isinstance(node, dict):
        return {key: base64.b64encode(bytes.fromhex(item)).decode()
                if key in ID_FIELDS and isinstance(item, str) else hex_ids_to_base64(item)
                for key, item in node.items()}
    if isinstance(node, list):
        return [hex_ids_to_base64(item) for item in node]
    return node


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        key = self.path.strip("/")
        if key not in ("spans", "requests", "refused"):
            return self.reply(404)
        with lock:
            body = json.dumps(state[key]).encode()
        self.reply(200, body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/mode":
            mode = json.loads(body)
            if mode.get("mode") not in MODES:
                return self.reply(400)
            with lock:
                state["mode"] = mode
            return self.reply(200, b"{}")
        if self.path == "/reset":
            with lock:
                state.update(spans=[], requests=[], refused=0)
            return self.reply(200, b"{}")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in ("application/x-protobuf", "application/json"):
            return self.reply(415)
        try:
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            if content_type == "application/json":
                request = json_format.ParseDict(hex_ids_to_base64(json.loads(body)),
                                                service.ExportTraceServiceRequest())
            else:
                request = service.ExportTraceServiceRequest.FromString(body)
        except Exception:  # whatever fails to decode is a bad request
            return self.reply(400, content_type=content_type)
        headers = {name.lower(): item for name, item in self.headers.items()}
        outcome = export(request, "http", self.path, headers)
        if outcome in HTTP_CODES:
            return self.reply(HTTP_CODES[outcome], content_type=content_type)
        response = service.ExportTraceServiceResponse()
        encoded = b"{}" if content_type == "application/json" else response.SerializeToString()
        self.reply(200, encoded, content_type)


class TraceService(service_grpc.TraceServiceServicer):
    def Export(self, request, context):
        headers = {name.lower(): item.hex() if isinstance(item, bytes) else item
                   for name, item in context.invocation_metadata()}
        outcome = export(request, "grpc", GRPC_PATH, headers)
        if outcome in GRPC_CODES:
            context.abort(GRPC_CODES[outcome], f"mode {outcome}")
        return service.ExportTraceServiceResponse()


def exit_at_stdin_eof():
    sys.stdin.buffer.read()
    os._exit(0)  # at once, even with exports still sleeping in slow mode


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc", action="store_true", help="also serve OTLP/gRPC")
    args = parser.parse_args()
    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    grpc_port = None
    if args.grpc:
        grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        service_grpc.add_TraceServiceServicer_to_server(TraceService(), grpc_server)
        grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
        grpc_server.start()
    print(json.dumps({"http": http.server_address[1], "grpc": grpc_port}), flush=True)
    threading.Thread(target=exit_at_stdin_eof, daemon=True).start()
    http.serve_forever()


if __name__ == "__main__":
    main()
