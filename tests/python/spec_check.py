"""Validates the mock provider's answers, through a running Sluice, against
the component schemas of OpenAI's published OpenAPI description.

Usage: python spec_check.py BASE_URL KEY SPEC_YAML
Exits non-zero on the first failed check; prints 'N passed, 0 failed' at the end.

The spec says OpenAPI 3.1 but still uses the 3.0 keyword `nullable: true`;
it is rewritten into a JSON Schema `null` alternative before validating.
Streamed completions chunks reuse the whole-answer schemas, so a chunk's
`finish_reason: null` is a gap in the spec, bridged where noted.
"""

import base64
import json
import struct
import sys
import urllib.error
import urllib.request

import jsonschema
import yaml

from compat_checks import FailFast

base_url, key, spec_path = sys.argv[1], sys.argv[2], sys.argv[3]
check = FailFast()


def with_nullable(node):
    """The spec with every `nullable: true` turned into a JSON Schema null."""
    if isinstance(node, list):
        return [with_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: with_nullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is not True:
        return node
    kind = node.get("type")
    if isinstance(kind, str) and "$ref" not in node:
        node["type"] = [kind, "null"]
        if "enum" in node:
            node["enum"] = [*node["enum"], None]
        return node
    return {"anyOf": [node, {"type": "null"}]}


with open(spec_path) as f:
    spec = with_nullable(yaml.safe_load(f))
schemas = spec["components"]["schemas"]


def errors(value, schema_name):
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(value)]


def valid(name, value, schema_name):
    problems = errors(value, schema_name)
    check(f"{name} is a valid {schema_name}", not problems, problems)


def request(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base_url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post(path, body):
    status, text = request("POST", path, body)
    check(f"POST {path} answers 200", status == 200, f"{status} {text}")
    return json.loads(text)


def sse(path, body):
    """The JSON data of each event of a streamed answer, [DONE] left out."""
    status, text = request("POST", path, {**body, "stream": True})
    check(f"POST {path} streams", status == 200, f"{status} {text}")
    events = []
    for block in text.split("\n\n"):
        data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
        if data and data[0] != "[DONE]":
            events.append(json.loads("\n".join(data)))
    return events


# The validator itself must be able to fail, or every check below is hollow.
broken = {"id": "x", "object": "chat.completion", "created": 1, "model": "m"}
check("a chat answer without choices is rejected", errors(broken, "CreateChatCompletionResponse"))
check("a null where the spec allows none is rejected", errors({"object": "list", "data": None}, "ListModelsResponse"))
check("nullable allows null", not errors({"content": None, "role": "assistant", "refusal": None},
                                          "ChatCompletionResponseMessage"))

chat_model, embedding_model = "gpt-4o-mini", "text-embedding-3-small"
messages = [{"role": "user", "content": "Say hello"}]
weather = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "when": {"anyOf": [{"$ref": "#/$defs/Slot"}, {"type": "null"}]},
    },
    "required": ["city", "unit", "days", "when"],
    "additionalProperties": False,
    "$defs": {"Slot": {"type": "object", "properties": {"hours": {"type": "array", "items": {"type": "number"}}},
                       "required": ["hours"], "additionalProperties": False}},
}
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": weather}}]
person = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                                           "emails": {"type": "array", "items": {"type": "string", "format": "email"}}},
          "required": ["name", "age", "emails"], "additionalProperties": False}
structured = {"type": "json_schema", "json_schema": {"name": "person", "schema": person, "strict": True}}

# Chat, whole answers.
plain = post("/chat/completions", {"model": chat_model, "messages": messages})
valid("chat", plain, "CreateChatCompletionResponse")
again = post("/chat/completions", {"model": chat_model, "messages": messages})
check("chat content is deterministic, ids unique",
      again["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"] and again["id"] != plain["id"])

called = post("/chat/completions", {"model": chat_model, "messages": messages, "tools": tools, "tool_choice": "required"})
valid("chat tool call", called, "CreateChatCompletionResponse")
call = called["choices"][0]
check("tool call finishes with tool_calls and no content",
      call["finish_reason"] == "tool_calls" and call["message"]["content"] is None, call)
arguments = json.loads(call["message"]["tool_calls"][0]["function"]["arguments"])
check("tool arguments satisfy the tool's schema", not list(jsonschema.Draft202012Validator(weather).iter_errors(arguments)),
      arguments)

shaped = post("/chat/completions", {"model": chat_model, "messages": messages, "response_format": structured})
valid("chat json_schema", shaped, "CreateChatCompletionResponse")
content = json.loads(shaped["choices"][0]["message"]["content"])
check("structured content satisfies the schema", not list(jsonschema.Draft202012Validator(person).iter_errors(content)),
      content)

many = post("/chat/completions", {"model": chat_model, "messages": messages, "n": 3, "logprobs": True, "top_logprobs": 2})
valid("chat n=3 with logprobs", many, "CreateChatCompletionResponse")
texts = [c["message"]["content"] for c in many["choices"]]
check("n choices, indexed and distinct", [c["index"] for c in many["choices"]] == [0, 1, 2] and len(set(texts)) == 3, texts)
tokens = many["choices"][0]["logprobs"]["content"]
check("logprobs spell the content", "".join(t["token"] for t in tokens) == texts[0]
      and all(len(t["top_logprobs"]) == 2 for t in tokens), tokens)

# Chat, streamed.
for name, body in [("plain", {}), ("tools", {"tools": tools, "tool_choice": "required"}),
                   ("json_schema", {"response_format": structured}),
                   ("n and logprobs", {"n": 2, "logprobs": True, "top_logprobs": 1})]:
    chunks = sse("/chat/completions", {"model": chat_model, "messages": messages,
                                       "stream_options": {"include_usage": True}, **body})
    bad = [(i, e) for i, chunk in enumerate(chunks) for e in errors(chunk, "CreateChatCompletionStreamResponse")]
    check(f"chat stream ({name}): {len(chunks)} chunks are valid", not bad, bad[:5])
    check(f"chat stream ({name}) ends with usage", chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0)

chunks = sse("/chat/completions", {"model": chat_model, "messages": messages, "tools": tools, "tool_choice": "required"})
first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
streamed = "".join(c["choices"][0]["delta"].get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
                   for c in chunks if c["choices"])
check("tool call stream: id, type and name first, then argument fragments",
      first["id"].startswith("call_") and first["function"] == {"name": "get_weather", "arguments": ""}
      and json.loads(streamed) is not None, first)


# Completions: a streamed chunk reuses the whole-answer schema, whose
# finish_reason has no null (the spec gap); the bridge is "stop".
def bridged(chunk):
    for choice in chunk.get("choices", []):
        if choice.get("finish_reason") is None:
            choice["finish_reason"] = "stop"
    return chunk


legacy = post("/completions", {"model": chat_model, "prompt": "Say hello", "n": 2, "logprobs": 2})
valid("completion", legacy, "CreateCompletionResponse")
chunks = sse("/completions", {"model": chat_model, "prompt": "Say hello", "logprobs": 1})
bad = [e for chunk in chunks for e in errors(bridged(chunk), "CreateCompletionResponse")]
check(f"completion stream: {len(chunks)} chunks are valid", not bad, bad[:5])

# Embeddings: base64 is a string where the spec says array; checked by decoding.
floats = post("/embeddings", {"model": embedding_model, "input": ["hello world", "bye"], "dimensions": 64})
valid("embeddings", floats, "CreateEmbeddingResponse")
packed = post("/embeddings", {"model": embedding_model, "input": ["hello world", "bye"], "dimensions": 64,
                              "encoding_format": "base64"})
decoded = [list(struct.unpack(f"<{64}f", base64.b64decode(d["embedding"]))) for d in packed["data"]]
check("base64 embeddings decode to the float ones",
      all(abs(a - b) < 1e-6 for row, d in zip(decoded, floats["data"]) for a, b in zip(row, d["embedding"])))
for row, item in zip(decoded, packed["data"]):
    item["embedding"] = row
valid("embeddings (base64, decoded)", packed, "CreateEmbeddingResponse")

# Responses, whole and streamed; each event against its own schema.
event_schemas = {}
for ref in schemas["ResponseStreamEvent"]["anyOf"]:
    name = ref["$ref"].rsplit("/", 1)[1]
    for kind in schemas[name].get("properties", {}).get("type", {}).get("enum", []):
        event_schemas[kind] = name
response_tools = [{"type": "function", "name": "get_weather", "parameters": weather, "strict": True}]
for name, body in [("plain", {}), ("function call", {"tools": response_tools, "tool_choice": "required"}),
                   ("json_schema", {"text": {"format": {"type": "json_schema", "name": "person", "schema": person}}}),
                   ("logprobs", {"top_logprobs": 2, "include": ["message.output_text.logprobs"]})]:
    body = {"model": chat_model, "input": "Say hello", "instructions": "Be brief", **body}
    whole = post("/responses", body)
    valid(f"response ({name})", whole, "Response")
    events = sse("/responses", body)
    bad = [(e["type"], problem) for e in events
           for problem in (errors(e, event_schemas[e["type"]]) if e["type"] in event_schemas else ["unknown event"])]
    check(f"response stream ({name}): {len(events)} events are valid", not bad, bad[:5])
    kinds = [i["type"] for i in whole["output"]]
    check(f"response stream ({name}) completes with the same output", events[-1]["type"] == "response.completed"
          and [i["type"] for i in events[-1]["response"]["output"]] == kinds, kinds)
    item = whole["output"][0]
    if item["type"] == "function_call":
        args = json.loads(item["arguments"])
        check("response function arguments satisfy the schema",
              not list(jsonschema.Draft202012Validator(weather).iter_errors(args)), args)

# Models.
status, text = request("GET", "/models")
valid("models list", json.loads(text), "ListModelsResponse")
check("models have a creation time", all(m["created"] > 1_600_000_000 for m in json.loads(text)["data"]))
status, text = request("GET", f"/models/{chat_model}")
valid("model", json.loads(text), "Model")

# The rest of the surface: counts, compaction, stored objects, uploads,
# Realtime client secrets and image edits, each against its own schema.
valid("input token count", post("/responses/input_tokens", {"model": chat_model, "input": "Tell me a joke."}),
      "TokenCountsResource")
valid("compaction", post("/responses/compact", {"model": chat_model, "input": "Say hello"}), "CompactResource")

conversation = post("/conversations", {"metadata": {"topic": "spec"},
                                       "items": [{"type": "message", "role": "user", "content": "hello"}]})
valid("conversation", conversation, "ConversationResource")
conv = conversation["id"]
added = post(f"/conversations/{conv}/items",
             {"items": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "more"}]}]})
valid("conversation items added", added, "ConversationItemList")
post("/responses", {"model": chat_model, "input": "In the conversation", "conversation": conv})
status, text = request("GET", f"/conversations/{conv}/items?order=asc")
items = json.loads(text)
valid("conversation items", items, "ConversationItemList")
check("a response in a conversation adds its input and output", len(items["data"]) == 4, items)
status, text = request("DELETE", f"/conversations/{conv}")
valid("conversation deleted", json.loads(text), "DeletedConversationResource")
status, text = request("GET", f"/conversations/{conv}")
check("a deleted conversation is gone", status == 404, text)

kept = post("/chat/completions", {"model": chat_model, "messages": messages, "store": True})
status, text = request("GET", f"/chat/completions/{kept['id']}")
valid("stored chat completion", json.loads(text), "CreateChatCompletionResponse")
status, text = request("GET", f"/chat/completions/{kept['id']}/messages")
stored_messages = json.loads(text)
check("stored messages are listed as the API's example lists them",
      [(m["id"], m["role"], m["content"]) for m in stored_messages["data"]] == [(f"{kept['id']}-0", "user", "Say hello")],
      stored_messages)
# The spec's list reuses the assistant message schema; the API's own example
# lists the request's messages with their roles. Bridged: the role.
for message in stored_messages["data"]:
    message["role"] = "assistant"
valid("stored chat messages", stored_messages, "ChatCompletionMessageList")
status, text = request("GET", "/chat/completions")
listed = json.loads(text)
valid("stored chat list", listed, "ChatCompletionList")
check("the stored completion is listed", kept["id"] in [c["id"] for c in listed["data"]], listed)
status, text = request("DELETE", f"/chat/completions/{kept['id']}")
valid("stored chat deleted", json.loads(text), "ChatCompletionDeleted")

for path, body, schema in [("/vector_stores", {"name": "docs"}, "VectorStoreObject"),
                           ("/containers", {"name": "box"}, "ContainerResource"),
                           ("/fine_tuning/jobs", {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-abc"},
                            "FineTuningJob")]:
    valid(path, post(path, body), schema)
status, text = request("GET", "/vector_stores")
valid("vector store list", json.loads(text), "ListVectorStoresResponse")
store_id = json.loads(text)["data"][0]["id"]
status, text = request("DELETE", f"/vector_stores/{store_id}")
valid("vector store deleted", json.loads(text), "DeleteVectorStoreResponse")

data = b"hello uploads\n"
upload = post("/uploads", {"filename": "a.txt", "purpose": "user_data", "bytes": len(data), "mime_type": "text/plain"})
valid("upload", upload, "Upload")


def multipart(path, fields, files):
    """A multipart POST; its status and parsed body."""
    boundary = "sluice-spec-boundary"
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, content) in files.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(base_url + path, data=body, method="POST")
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


status, part = multipart(f"/uploads/{upload['id']}/parts", {}, {"data": ("part", data)})
check("a part is taken", status == 200, part)
valid("upload part", part, "UploadPart")
completed = post(f"/uploads/{upload['id']}/complete", {"part_ids": [part["id"]]})
valid("completed upload", completed, "Upload")
status, text = request("GET", f"/files/{completed['file']['id']}")
valid("uploaded file", json.loads(text), "OpenAIFile")
check("a completed upload names its file", completed["status"] == "completed" and completed["file"]["bytes"] == len(data),
      completed)

valid("realtime client secret",
      post("/realtime/client_secrets", {"session": {"type": "realtime", "model": chat_model}}),
      "RealtimeCreateClientSecretResponse")
for path in ["/images/edits", "/images/variations"]:
    status, image = multipart(path, {"model": chat_model, "prompt": "make it blue"}, {"image": ("a.png", b"\x89PNG")})
    check(f"{path} answers 200", status == 200, image)
    valid(path, image, "ImagesResponse")

# Refusals are the API's error shape.
status, text = request("POST", "/chat/completions", {"model": chat_model, "messages": messages, "n": 0})
check("n=0 is a 400 naming n", status == 400 and json.loads(text)["error"]["param"] == "n", text)
valid("error", json.loads(text), "ErrorResponse")
status, text = request("POST", "/chat/completions", {"model": embedding_model, "messages": messages})
check("chat with an embedding model is a 404", status == 404, text)
valid("error", json.loads(text), "ErrorResponse")

check.finish()
