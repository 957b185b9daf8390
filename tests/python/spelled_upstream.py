"""A fake OpenAI upstream that spells its streams differently from the API.

Usage: python spelled_upstream.py PORT_FILE
Listens on a free 127.0.0.1 port and writes it to PORT_FILE once ready.

It answers /v1/chat/completions (streamed or not; tool calls when tools are
offered; `json_schema` response formats with content that fits the schema),
/v1/completions, /v1/embeddings (floats or base64) and /v1/responses (streamed
or not) like the API does, but in spellings the SSE grammar allows and real
OpenAI-compatible servers emit (see "Server-sent events: the grammar" in the
shared reference):

- JSON written by `json.dumps` with its default separators (`"usage": null`),
  and `"usage": null` on every chunk, as vLLM-style servers do;
- `data:` with no space after the colon, `event:` lines on Responses events;
- CRLF line ends;
- a `: keep-alive` comment before the first event and between some events;
- each event split across several writes (and so several HTTP chunks), cut
  inside the JSON and between the CR and the LF.

The usage it reports is counted; GET /stats answers the totals, per type, so a
test can compare them with what the gateway metered.
"""

import base64
import json
import math
import os
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOTALS = {"prompt": 0, "completion": 0}
LOCK = threading.Lock()
DIMENSIONS = 1536


def words(text):
    return [w for w in str(text).replace("\n", " ").split(" ") if w]


def text_of(content):
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return json.dumps(content)


def usage(prompt, completion):
    with LOCK:
        TOTALS["prompt"] += prompt
        TOTALS["completion"] += completion
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def instance(schema, root, depth=0):
    """A value that satisfies the (simple, Pydantic-made) JSON schema."""
    if depth > 8:
        return None
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return instance(target, root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return instance(schema[key][0], root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {
            name: instance(sub, root, depth + 1) for name, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        return [instance(schema.get("items", {}), root, depth + 1)]
    if kind == "integer":
        return max(int(schema.get("minimum", 3)), 3)
    if kind == "number":
        return 2.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "Paris"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    # ---- plumbing ----

    def body(self):
        length = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def send_json(self, status, document):
        raw = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def start_stream(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.write_piece(b": keep-alive\r\n\r\n")

    def write_piece(self, piece):
        if piece:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()

    def send_event(self, data, event=None, number=0):
        raw = b""
        if event:
            raw += b"event:" + event.encode() + b"\r\n"
        raw += b"data:" + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\r\n\r\n"
        # Cut inside the payload and between the last CR and LF.
        cuts = sorted({len(raw) // 3, (2 * len(raw)) // 3, len(raw) - 1})
        start = 0
        for cut in cuts + [len(raw)]:
            self.write_piece(raw[start:cut])
            start = cut
            # Give the gateway a chance to read each piece on its own.
            time.sleep(0.001)
        if number % 3 == 1:
            self.write_piece(b": keep-alive\r\n\r\n")

    def end_stream(self):
        self.write_piece(b"data:[DONE]\r\n\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # ---- routes ----

    def do_GET(self):
        if self.path == "/stats":
            with LOCK:
                self.send_json(200, dict(TOTALS))
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": []})
        else:
            self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        try:
            request = self.body()
        except ValueError:
            return self.send_json(400, {"error": {"message": "bad JSON", "type": "invalid_request_error"}})
        route = {
            "/v1/chat/completions": self.chat,
            "/v1/completions": self.completions,
            "/v1/embeddings": self.embeddings,
            "/v1/responses": self.responses_api,
        }.get(self.path.split("?")[0])
        print(
            f"POST {self.path} stream={request.get('stream')} stream_options={request.get('stream_options')}",
            file=sys.stderr,
            flush=True,
        )
        if route is None:
            return self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        route(request)

    def chat(self, request):
        model = request.get("model", "gpt-4o-mini")
        messages = request.get("messages", [])
        prompt = sum(len(words(text_of(m.get("content")))) + 3 for m in messages) + 3
        created = int(time.time())
        ident = f"chatcmpl-spelled{time.monotonic_ns()}"
        tool_call = None
        tools = request.get("tools") or []
        choice = request.get("tool_choice", "auto")
        last_role = messages[-1].get("role") if messages else "user"
        if tools and choice != "none" and last_role != "tool":
            tool = tools[0]["function"]
            if isinstance(choice, dict):
                name = choice["function"]["name"]
                tool = next(t["function"] for t in tools if t["function"]["name"] == name)
            schema = tool.get("parameters") or {"type": "object", "properties": {}}
            arguments = json.dumps(instance(schema, schema))
            tool_call = {
                "id": f"call_spelled{time.monotonic_ns()}",
                "type": "function",
                "function": {"name": tool["name"], "arguments": arguments},
            }
            content = None
            pieces = [arguments[i : i + 7] for i in range(0, len(arguments), 7)]
        else:
            form = request.get("response_format") or {}
            if form.get("type") == "json_schema":
                schema = form["json_schema"].get("schema", {})
                content = json.dumps(instance(schema, schema))
                pieces = [content[i : i + 5] for i in range(0, len(content), 5)]
            else:
                content = "Hello from the spelled upstream, the one that writes its streams differently."
                pieces = [w + " " for w in content.split(" ")]
                pieces[-1] = pieces[-1].rstrip()
        completion = len(pieces)
        finish = "tool_calls" if tool_call else "stop"

        if not request.get("stream"):
            message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
            if tool_call:
                message["tool_calls"] = [tool_call]
            return self.send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                    "usage": usage(prompt, completion),
                    "system_fingerprint": None,
                },
            )

        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish_reason=None):
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
                "usage": None,
            }

        self.start_stream()
        number = 0
        if tool_call:
            first = dict(tool_call, function={"name": tool_call["function"]["name"], "arguments": ""})
            self.send_event(chunk({"role": "assistant", "content": None, "tool_calls": [dict(first, index=0)]}))
            for piece in pieces:
                number += 1
                self.send_event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), number=number)
        else:
            self.send_event(chunk({"role": "assistant", "content": "", "refusal": None}))
            for piece in pieces:
                number += 1
                self.send_event(chunk({"content": piece}), number=number)
        self.send_event(chunk({}, finish))
        if include_usage:
            self.send_event(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage(prompt, completion),
                }
            )
        self.end_stream()

    def completions(self, request):
        prompt = len(words(request.get("prompt", ""))) + 1
        text = "Hello from the spelled upstream."
        self.send_json(
            200,
            {
                "id": f"cmpl-spelled{time.monotonic_ns()}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": request.get("model"),
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                "usage": usage(prompt, len(words(text))),
            },
        )

    def embeddings(self, request):
        inputs = request.get("input", "")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dims = int(request.get("dimensions") or DIMENSIONS)
        data, prompt = [], 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            prompt += max(len(words(text)), 1)
            seed = sum(text.encode()) + 1
            vector = [math.sin(seed * (i + 1)) for i in range(dims)]
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vector = [v / norm for v in vector]
            if request.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        use = usage(prompt, 0)
        self.send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": request.get("model"),
                "usage": {"prompt_tokens": use["prompt_tokens"], "total_tokens": use["total_tokens"]},
            },
        )

    def responses_api(self, request):
        given = request.get("input", "")
        if isinstance(given, list):
            given = " ".join(text_of(item.get("content")) for item in given if isinstance(item, dict))
        prompt = len(words(given)) + 2
        text = "Hello from the spelled upstream."
        pieces = [w + " " for w in text.split(" ")]
        pieces[-1] = pieces[-1].rstrip()
        ident = f"resp_spelled{time.monotonic_ns()}"
        item_id = f"msg_spelled{time.monotonic_ns()}"
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}

        def response(status, output, use=None):
            return {
                "id": ident,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "error": None,
                "incomplete_details": None,
                "instructions": None,
                "model": request.get("model"),
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "text": {"format": {"type": "text"}},
                "usage": use,
                "metadata": {},
            }

        def response_usage():
            use = usage(prompt, len(pieces))
            return {
                "input_tokens": use["prompt_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": use["completion_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": use["total_tokens"],
            }

        if not request.get("stream"):
            return self.send_json(200, response("completed", [item], response_usage()))

        self.start_stream()
        sequence = iter(range(1000))

        def event(kind, **fields):
            number = next(sequence)
            self.send_event(dict(type=kind, sequence_number=number, **fields), event=kind, number=number)

        event("response.created", response=response("in_progress", []))
        event("response.in_progress", response=response("in_progress", []))
        pending = dict(item, status="in_progress", content=[])
        event("response.output_item.added", output_index=0, item=pending)
        event("response.content_part.added", item_id=item_id, output_index=0, content_index=0,
              part=dict(part, text=""))
        for piece in pieces:
            event("response.output_text.delta", item_id=item_id, output_index=0, content_index=0,
                  delta=piece, logprobs=[])
        event("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text, logprobs=[])
        event("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=part)
        event("response.output_item.done", output_index=0, item=item)
        event("response.completed", response=response("completed", [item], response_usage()))
        # The Responses API ends without [DONE].
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
