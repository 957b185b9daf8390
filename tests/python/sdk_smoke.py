"""The official OpenAI Python SDK against a running Sluice (mock upstream).

Usage: python sdk_smoke.py BASE_URL KEY
Exits non-zero on the first failed check; prints 'N passed, 0 failed' at the end.
"""

import sys
import time

import openai
from openai import OpenAI

base_url, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=10)
passed = 0


def check(name, condition, detail=""):
    global passed
    if not condition:
        print(f"FAIL {name}: {detail}")
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}")


messages = [{"role": "user", "content": "Say hello"}]

reply = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
completion = reply.parse()
check("chat", completion.choices[0].message.content, completion)
check("chat usage", completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens)
check("deployment header", reply.headers.get("x-sluice-deployment") == "mock", dict(reply.headers))
check("request id header", reply.headers.get("x-request-id", "").startswith("req_"))

stream = client.chat.completions.create(
    model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
)
text, usage = "", None
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
check("chat stream text matches non-stream", text == completion.choices[0].message.content, text)
check("chat stream usage chunk", usage is not None and usage.total_tokens > 0)

embedding = client.embeddings.create(model="text-embedding-3-small", input=["hello world", "bye"])
check("embeddings", len(embedding.data) == 2 and len(embedding.data[0].embedding) == 1536)

response = client.responses.create(model="gpt-4o-mini", input="Say hello")
check("responses", response.output_text and response.usage.total_tokens > 0, response)

events = [event.type for event in client.responses.create(model="gpt-4o-mini", input="Say hello", stream=True)]
check("responses stream order", events[0] == "response.created" and events[-1] == "response.completed", events)

legacy = client.completions.create(model="gpt-4o-mini", prompt="Say hello")
check("completions", legacy.choices[0].text)

models = [m.id for m in client.models.list()]
check("models list", models == sorted(models) and {"gpt-4o-mini", "text-embedding-3-small"} <= set(models), models)

try:
    client.chat.completions.create(model="gpt-9", messages=messages)
    check("unknown model raises", False)
except openai.NotFoundError as error:
    check("unknown model raises NotFoundError", error.code == "model_not_found", error)

try:
    OpenAI(base_url=base_url, api_key="sk-wrong-key-0000", max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=messages
    )
    check("bad key raises", False)
except openai.AuthenticationError as error:
    check("bad key raises AuthenticationError", error.code == "invalid_api_key", error)

try:
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_body={"stream": "yes"})
    check("bad field raises", False)
except openai.BadRequestError as error:
    check("bad JSON field raises BadRequestError", error.status_code == 400, error)

# Rate limits: 60 RPM starts with 60 available, then refills one a second.
limited = OpenAI(base_url=base_url, api_key="sk-smoke-limited-01", max_retries=0, timeout=10)
first = limited.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
check("rate-limit headers", first.headers.get("x-ratelimit-limit-requests") == "60", dict(first.headers))
for _ in range(59):
    limited.embeddings.create(model="text-embedding-3-small", input="x")
try:
    limited.chat.completions.create(model="gpt-4o-mini", messages=messages)
    check("over the limit raises", False)
except openai.RateLimitError as error:
    check("over the limit raises RateLimitError", error.code == "rate_limit_exceeded", error)
    retry_ms = float(error.response.headers["retry-after-ms"])
    check("429 carries retry-after-ms", 0 < retry_ms <= 1000, retry_ms)
    check("429 carries retry-after in whole seconds", error.response.headers["retry-after"] == "1")

patient = OpenAI(base_url=base_url, api_key="sk-smoke-limited-01", max_retries=3, timeout=10)
started = time.monotonic()
patient.chat.completions.create(model="gpt-4o-mini", messages=messages)
waited = time.monotonic() - started
# Sent right after the 429 above, so its own hint is at most that one's.
check("the SDK's own retry waits out retry-after-ms and succeeds", waited < 3, waited)

print(f"{passed} passed, 0 failed")
