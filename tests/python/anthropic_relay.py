"""The official SDKs against Sluice on an Anthropic deployment: a fake of
Anthropic's Messages API (this script serves it, on the port Sluice's
config names) speaking its JSON and SSE (CRLF line ends, thinking blocks
with signatures, cache counts in the usage).

- The `anthropic` SDK: create, the stream helper and a tool call, with
  extended thinking and `top_k` (which no chat completion can say). The
  fake must receive the SDK's bytes unchanged but for the key, and the SDK
  must get the fake's answer as written (its thinking signature included);
  the fake's 400 reaches it as `BadRequestError` with the fake's body.
- The `openai` SDK on the same deployment: chat, a stream with usage, a
  tool call, and the fake's 400 as `BadRequestError` (translated both
  ways).

    python anthropic_relay.py SLUICE_URL KEY FAKE_PORT MODEL
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai

BASE, KEY, FAKE_PORT, MODEL = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
RECEIVED = []
SIGNATURE = "EqQBCgIYAhIMrelaysignature"
USAGE = {"input_tokens": 21, "output_tokens": 9, "cache_read_input_tokens": 4,
         "cache_creation_input_tokens": 0}


def message(body):
    if body.get("tools"):
        content = [{"type": "tool_use", "id": "toolu_relay", "name": "weather",
                    "input": {"city": "Paris"}}]
        stop = "tool_use"
    else:
        content = [{"type": "thinking", "thinking": "Short answer.", "signature": SIGNATURE},
                   {"type": "text", "text": "Tea is a drink."}]
        stop = "end_turn"
    return {"id": "msg_relay01", "type": "message", "role": "assistant",
            "model": body.get("model"), "content": content, "stop_reason": stop,
            "stop_sequence": None, "usage": USAGE}


def events(body):
    """Anthropic's events for `message(body)`, CRLF line ends, a ping."""
    whole = message(body)
    start = dict(whole, content=[], stop_reason=None, usage=dict(USAGE, output_tokens=1))
    out = [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
    for index, block in enumerate(whole["content"]):
        if block["type"] == "thinking":
            out += [("content_block_start", {"type": "content_block_start", "index": index,
                     "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                    ("content_block_delta", {"type": "content_block_delta", "index": index,
                     "delta": {"type": "thinking_delta", "thinking": block["thinking"]}}),
                    ("content_block_delta", {"type": "content_block_delta", "index": index,
                     "delta": {"type": "signature_delta", "signature": SIGNATURE}})]
        elif block["type"] == "text":
            out.append(("content_block_start", {"type": "content_block_start", "index": index,
                        "content_block": {"type": "text", "text": ""}}))
            for word in block["text"].split(" "):
                piece = word if word.endswith(".") else word + " "
                out.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                            "delta": {"type": "text_delta", "text": piece}}))
        else:
            out += [("content_block_start", {"type": "content_block_start", "index": index,
                     "content_block": dict(block, input={})}),
                    ("content_block_delta", {"type": "content_block_delta", "index": index,
                     "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}})]
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    out += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": whole["stop_reason"],
             "stop_sequence": None}, "usage": {"output_tokens": USAGE["output_tokens"]}}),
            ("message_stop", {"type": "message_stop"})]
    return "".join(f"event: {name}\r\ndata: {json.dumps(data)}\r\n\r\n" for name, data in out)


class FakeAnthropic(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        RECEIVED.append((self.path, dict(self.headers), raw))
        body = json.loads(raw)
        if "FAIL" in json.dumps(body.get("messages")):
            error = {"type": "error", "error": {"type": "invalid_request_error",
                     "message": "messages: the fake refuses FAIL"}, "request_id": "req_fake"}
            return self.answer(400, "application/json", json.dumps(error).encode())
        if body.get("stream"):
            return self.answer(200, "text/event-stream", events(body).encode())
        self.answer(200, "application/json", json.dumps(message(body)).encode())

    def answer(self, status, kind, payload):
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


SENT = []
http_client = anthropic.DefaultHttpxClient(event_hooks={"request": [lambda request: SENT.append(request.read())]})
claude = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0, http_client=http_client)
THINKING = {"type": "enabled", "budget_tokens": 1024}
ASK = [{"role": "user", "content": "What is tea?"}]


def relayed_create():
    raw_answer = claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=2048, thinking=THINKING, messages=ASK, extra_body={"top_k": 5})
    path, headers, raw = RECEIVED[-1]
    assert path == "/v1/messages", path
    assert raw == SENT[-1], (raw, SENT[-1])
    assert headers["x-api-key"] == "sk-ant-fake" and "authorization" not in headers, headers
    assert headers["anthropic-version"] == "2023-06-01", headers
    assert raw_answer.http_response.content == json.dumps(message(json.loads(raw))).encode()
    answer = raw_answer.parse()
    assert answer.content[0].type == "thinking" and answer.content[0].signature == SIGNATURE, answer
    assert answer.content[1].text == "Tea is a drink.", answer
    assert answer.usage.cache_read_input_tokens == 4, answer.usage


def relayed_stream():
    with claude.messages.stream(model=MODEL, max_tokens=2048, thinking=THINKING,
                                messages=ASK) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert RECEIVED[-1][2] == SENT[-1]
    assert "thinking" in kinds and "signature" in kinds, kinds
    assert final.content[0].signature == SIGNATURE, final
    assert final.content[1].text == "Tea is a drink.", final
    assert final.usage.output_tokens == 9 and final.usage.input_tokens == 21, final.usage


def relayed_tool_and_error():
    tools = [{"name": "weather", "description": "Weather of a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    answer = claude.messages.create(model=MODEL, max_tokens=256, tools=tools,
                                    messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert answer.stop_reason == "tool_use" and answer.content[0].input == {"city": "Paris"}, answer
    try:
        claude.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "FAIL"}])
        raise AssertionError("the fake's 400 did not reach the SDK")
    except anthropic.BadRequestError as error:
        assert error.body["error"]["message"] == "messages: the fake refuses FAIL", error.body
        assert error.body["request_id"] == "req_fake", error.body


gpt = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0)


def openai_sdk():
    answer = gpt.chat.completions.create(model=MODEL, messages=ASK)
    assert answer.choices[0].message.content == "Tea is a drink.", answer
    assert answer.usage.prompt_tokens == 25 and answer.usage.completion_tokens == 9, answer.usage
    sent = json.loads(RECEIVED[-1][2])
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "What is tea?"}]}] or \
        sent["messages"] == [{"role": "user", "content": "What is tea?"}], sent
    chunks = list(gpt.chat.completions.create(model=MODEL, messages=ASK, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Tea is a drink.", text
    assert chunks[-1].usage.completion_tokens == 9, chunks[-1]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    answer = gpt.chat.completions.create(model=MODEL, messages=ASK, tools=tools)
    call = answer.choices[0].message.tool_calls[0]
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert answer.choices[0].finish_reason == "tool_calls", answer
    try:
        gpt.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "FAIL"}])
        raise AssertionError("the fake's 400 did not reach the SDK")
    except openai.BadRequestError as error:
        assert "the fake refuses FAIL" in str(error), error


def main():
    server = ThreadingHTTPServer(("127.0.0.1", FAKE_PORT), FakeAnthropic)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for check in [relayed_create, relayed_stream, relayed_tool_and_error, openai_sdk]:
        check()
        print(f"anthropic relay: {check.__name__} ok")
    server.shutdown()


main()
