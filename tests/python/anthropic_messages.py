"""The official `anthropic` Python SDK against Sluice's Messages API, on the
mock provider: create, the stream helper and raw events, a tool round trip,
count_tokens, and errors surfacing as the SDK's error classes.

    python anthropic_messages.py BASE_URL API_KEY LIMITED_KEY
"""

import sys

import anthropic

BASE, KEY, LIMITED = sys.argv[1:4]
MODEL = "gpt-4o-mini"
client = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
HELLO = [{"role": "user", "content": "Say hello"}]


def create():
    message = client.messages.create(
        model=MODEL, max_tokens=64, system="Be brief.", messages=HELLO,
        stop_sequences=["\n\n"], metadata={"user_id": "u-1"},
        # Recent SDKs dropped the sampling parameters (older clients send
        # them) and added a top-level cache_control (older ones lack it).
        extra_body={"temperature": 0.2, "top_p": 0.9, "cache_control": {"type": "ephemeral"}},
    )
    assert message.type == "message" and message.role == "assistant", message
    assert message.content[0].type == "text" and message.content[0].text, message
    assert message.stop_reason == "end_turn", message
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message
    assert message.id.startswith("msg_"), message


def stream_helper():
    with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text, (text, final)
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0, final
    assert final.usage.input_tokens > 0, final.usage


def raw_events():
    kinds = [event.type for event in client.messages.create(
        model=MODEL, max_tokens=64, messages=HELLO, stream=True)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    assert "content_block_delta" in kinds and "message_delta" in kinds, kinds


WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]},
}


def tools_round_trip():
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(model=MODEL, max_tokens=128, tools=[WEATHER],
                                   tool_choice={"type": "any"}, messages=asked)
    assert first.stop_reason == "tool_use", first
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict), call
    answered = asked + [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}]},
    ]
    second = client.messages.create(model=MODEL, max_tokens=128, tools=[WEATHER],
                                    messages=answered)
    assert second.stop_reason == "end_turn" and second.content[0].type == "text", second
    # The same call streamed: the tool's input arrives as input_json_delta.
    with client.messages.stream(model=MODEL, max_tokens=128, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather"},
                                messages=asked) as stream:
        final = stream.get_final_message()
    streamed = next(block for block in final.content if block.type == "tool_use")
    assert streamed.name == "get_weather" and isinstance(streamed.input, dict), final


def count_tokens():
    counted = client.messages.count_tokens(model=MODEL, messages=HELLO, system="Be brief.")
    assert counted.input_tokens > 0, counted


def errors():
    bad_key = anthropic.Anthropic(base_url=BASE, api_key="sk-wrong-key", max_retries=0)
    expect(anthropic.AuthenticationError,
           lambda: bad_key.messages.create(model=MODEL, max_tokens=8, messages=HELLO))
    expect(anthropic.BadRequestError, lambda: client.messages.create(
        model=MODEL, max_tokens=8, messages=HELLO, extra_body={"top_k": 5}))
    expect(anthropic.NotFoundError,
           lambda: client.messages.create(model="no-such-model", max_tokens=8, messages=HELLO))
    limited = anthropic.Anthropic(base_url=BASE, api_key=LIMITED, max_retries=0)
    limited.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    error = expect(anthropic.RateLimitError,
                   lambda: limited.messages.create(model=MODEL, max_tokens=8, messages=HELLO))
    assert error.response.headers.get("retry-after"), error.response.headers
    assert error.body["error"]["type"] == "rate_limit_error", error.body


def expect(kind, call):
    try:
        call()
    except kind as error:
        return error
    raise AssertionError(f"expected {kind.__name__}")


for check in (create, stream_helper, raw_events, tools_round_trip, count_tokens, errors):
    check()
print("anthropic SDK: create, stream, events, tools, count_tokens and errors passed")
