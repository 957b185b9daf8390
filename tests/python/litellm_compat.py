"""The litellm SDK as a client of a running Sluice.

Usage: python litellm_compat.py BASE_URL KEY DEPLOYMENT
litellm.completion(model="openai/...", api_base=..., api_key=...) treats Sluice
as an OpenAI-compatible server: chat, streaming (with and without usage), tool
calls, embeddings and an error mapped to litellm's exception class.
Run with LITELLM_LOCAL_MODEL_COST_MAP=True (no network fetch of its price map).
"""

import json
import sys

import litellm

from compat_checks import Checks

base_url, key, deployment = sys.argv[1], sys.argv[2], sys.argv[3]
litellm.suppress_debug_info = True
checks = Checks()
common = {"api_base": base_url, "api_key": key, "num_retries": 0, "timeout": 10}
messages = [{"role": "user", "content": "Say hello"}]


def completion():
    reply = litellm.completion(model="openai/gpt-4o-mini", messages=messages, **common)
    served = (reply._hidden_params.get("additional_headers") or {}).get("llm_provider-x-sluice-deployment")
    ok = reply.choices[0].message.content and reply.usage.total_tokens > 0 and served == deployment
    return ok, (reply, served)


reference = checks.check("litellm.completion", completion)


def stream(include_usage):
    def body():
        extra = {"stream_options": {"include_usage": True}} if include_usage else {}
        chunks = list(litellm.completion(model="openai/gpt-4o-mini", messages=messages, stream=True, **extra, **common))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        ok = reference is not None and text == reference[0].choices[0].message.content
        usage = next((c.usage for c in chunks if getattr(c, "usage", None)), None)
        if include_usage:
            ok = ok and usage is not None and usage.total_tokens > 0
        # stream_chunk_builder rebuilds the whole answer from the chunks.
        rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
        return ok and rebuilt.choices[0].message.content == text, (text, usage)

    return body


checks.check("litellm.completion stream with include_usage", stream(True))
checks.check("litellm.completion stream", stream(False))

weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def tools():
    reply = litellm.completion(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[weather],
        tool_choice="required",
        **common,
    )
    call = reply.choices[0].message.tool_calls[0]
    return call.function.name == "get_weather" and "city" in json.loads(call.function.arguments), reply


checks.check("litellm tool call", tools)


def embedding():
    result = litellm.embedding(model="openai/text-embedding-3-small", input=["hello world", "bye"], **common)
    return len(result.data) == 2 and len(result.data[0]["embedding"]) == 1536, len(result.data)


checks.check("litellm.embedding", embedding)


def unknown_model():
    try:
        litellm.completion(model="openai/gpt-9", messages=messages, **common)
        return False, "no error"
    except litellm.NotFoundError as error:
        return True, error


checks.check("unknown model raises litellm.NotFoundError", unknown_model)


def bad_key():
    try:
        litellm.completion(model="openai/gpt-4o-mini", messages=messages, **dict(common, api_key="sk-wrong-key-0000"))
        return False, "no error"
    except litellm.AuthenticationError as error:
        return True, error


checks.check("bad key raises litellm.AuthenticationError", bad_key)

checks.finish()
