"""The official OpenAI Python SDK against a running Sluice.

Usage: python sdk_smoke.py BASE_URL KEY [DEPLOYMENT]
DEPLOYMENT is the deployment expected to serve gpt-4o-mini (default "mock"; the
compatibility suite also runs this against an `openai` deployment on
tests/python/spelled_upstream.py).
Exits non-zero on the first failed check; prints 'N passed, 0 failed' at the end.
"""

import json
import sys
import time

import httpx
import openai
from openai import OpenAI
from pydantic import BaseModel

from compat_checks import FailFast

base_url, key = sys.argv[1], sys.argv[2]
deployment = sys.argv[3] if len(sys.argv) > 3 else "mock"
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=10)
check = FailFast()


messages = [{"role": "user", "content": "Say hello"}]

reply = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
completion = reply.parse()
check("chat", completion.choices[0].message.content, completion)
check("chat usage", completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens)
check("deployment header", reply.headers.get("x-sluice-deployment") == deployment, dict(reply.headers))
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

# The README's loop: a client that did not ask for usage never sees a chunk
# without choices.
text = ""
for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True):
    text += chunk.choices[0].delta.content or ""
check("README stream loop (chunk.choices[0]) without include_usage", text == completion.choices[0].message.content, text)


class City(BaseModel):
    name: str
    country: str
    population: int


parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
parsed = parse(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Describe a large city"}],
    response_format=City,
)
city = parsed.choices[0].message.parsed
check("chat.completions.parse() with a Pydantic model", isinstance(city, City), parsed)

weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
tool_reply = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[weather]
)
calls = tool_reply.choices[0].message.tool_calls or []
check(
    "tool call",
    tool_reply.choices[0].finish_reason == "tool_calls"
    and len(calls) == 1
    and calls[0].function.name == "get_weather"
    and json.loads(calls[0].function.arguments)["unit"] in ("c", "f"),
    tool_reply,
)
followup = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[
        {"role": "user", "content": "Weather in Paris?"},
        tool_reply.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18 degrees"},
    ],
    tools=[weather],
)
check("tool result answered with text", followup.choices[0].message.content, followup)

arguments, name = "", None
for chunk in client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[weather], stream=True
):
    for delta in chunk.choices[0].delta.tool_calls or []:
        name = name or delta.function.name
        arguments += delta.function.arguments or ""
check("streamed tool call deltas", name == "get_weather" and "city" in json.loads(arguments), arguments)

typed = parse(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Look up a city"}],
    tools=[openai.pydantic_function_tool(City)],
)
typed_calls = typed.choices[0].message.tool_calls or []
check(
    "parse() with pydantic_function_tool",
    len(typed_calls) == 1 and isinstance(typed_calls[0].function.parsed_arguments, City),
    typed,
)

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

# Asynchronous requests: the 202 is not a completion, so read it raw, then
# poll until the stored answer is one.
accepted = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=messages, extra_headers={"Prefer": "respond-async"}
)
job = json.loads(accepted.http_response.text)
check("respond-async answers 202", accepted.http_response.status_code == 202, job)
check("202 Location names the job", accepted.headers.get("location") == f"/v1/async/{job['id']}", dict(accepted.headers))
deadline = time.monotonic() + 10
while True:
    polled = client.get(f"/async/{job['id']}", cast_to=httpx.Response)
    if polled.status_code != 202 or time.monotonic() > deadline:
        break
    time.sleep(0.05)
stored = openai.types.chat.ChatCompletion.model_validate(polled.json())
check("the stored async answer is a completion", polled.status_code == 200 and stored.choices[0].message.content, polled.text)

try:
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_body={"stream": "yes"})
    check("bad field raises", False)
except openai.BadRequestError as error:
    check("bad JSON field raises BadRequestError", error.status_code == 400, error)

# Rate limits: 60 RPM starts with 60 available, then refills one a second.
limited = OpenAI(base_url=base_url, api_key="sk-smoke-limited-01", max_retries=0, timeout=10)
first = limited.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
check("rate-limit headers", first.headers.get("x-ratelimit-limit-requests") == "60", dict(first.headers))
# Spend the bucket; it refills one a second, so a slow upstream may admit a
# few more than 59 before the refusal.
admitted, refusal = 1, None
while admitted < 200 and refusal is None:
    try:
        limited.embeddings.create(model="text-embedding-3-small", input="x")
        admitted += 1
    except openai.RateLimitError as error:
        refusal = error
check("over the limit raises RateLimitError", refusal is not None and admitted >= 60, admitted)
check("429 code is rate_limit_exceeded", refusal.code == "rate_limit_exceeded", refusal)
retry_ms = float(refusal.response.headers["retry-after-ms"])
check("429 carries retry-after-ms", 0 < retry_ms <= 1000, retry_ms)
check("429 carries retry-after in whole seconds", refusal.response.headers["retry-after"] == "1")

patient = OpenAI(base_url=base_url, api_key="sk-smoke-limited-01", max_retries=3, timeout=10)
started = time.monotonic()
patient.chat.completions.create(model="gpt-4o-mini", messages=messages)
waited = time.monotonic() - started
# Sent right after the 429 above, so its own hint is at most that one's.
check("the SDK's own retry waits out retry-after-ms and succeeds", waited < 3, waited)

check.finish()
