"""The OpenAI Agents SDK and pydantic-ai against a running Sluice: an agent
run, a session kept in a Conversation (`OpenAIConversationsSession`: the
conversation made through Sluice, its items listed, added and popped on the
deployment that holds it), tools and structured output, pydantic-ai's
`count_tokens_before_request` (the Responses API's `input_tokens`), and the
official SDK's Realtime helper (through Sluice to the mock, or to a fake
Realtime upstream written with the `websockets` package).

Usage: python agents_compat.py BASE_URL KEY OTHER_KEY MODE
MODE "spelled" (an upstream that only answers text, with no Conversations
API) runs the checks that need nothing more: a run, the token count (which
Sluice makes itself when the upstream has no `input_tokens`) and Realtime.
"""

import asyncio
import sys

import httpx2 as httpx

from agents import (
    Agent,
    OpenAIConversationsSession,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from pydantic import BaseModel
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import UsageLimits

from compat_checks import Checks

base_url, key, other_key, mode = sys.argv[1:5]
model_like = mode != "spelled"
checks = Checks()
client = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=10)
set_default_openai_client(client, use_for_tracing=False)
set_default_openai_api("responses")
set_tracing_disabled(True)
loop = asyncio.new_event_loop()


def run(coroutine):
    return loop.run_until_complete(coroutine)


class City(BaseModel):
    name: str
    country: str
    population: int


@function_tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    return f"sunny in {city}"


assistant = Agent(name="assistant", instructions="Be brief.", model="gpt-4o-mini")


def agent_run():
    result = run(Runner.run(assistant, "Say hello"))
    return bool(result.final_output), result.final_output


def conversation_session():
    session = OpenAIConversationsSession(openai_client=client)
    first = run(Runner.run(assistant, "Remember the word teal.", session=session))
    second = run(Runner.run(assistant, "Which word?", session=session))
    conversation = run(session._get_session_id())
    items = run(session.get_items())
    popped = run(session.pop_item())
    after = run(session.get_items())
    ok = (
        conversation.startswith("conv_")
        and bool(first.final_output and second.final_output)
        and len(items) == 4
        and popped is not None
        and len(after) == 3
    )
    run(session.clear_session())
    return ok, {"conversation": conversation, "items": len(items), "after_pop": len(after)}


def a_strangers_conversation_is_not_found():
    session = OpenAIConversationsSession(openai_client=client)
    run(session.add_items([{"role": "user", "content": "mine"}]))
    stranger = AsyncOpenAI(base_url=base_url, api_key=other_key, max_retries=0)
    try:
        run(stranger.conversations.retrieve(run(session._get_session_id())))
        return False, "another key read the conversation"
    except Exception as error:  # noqa: BLE001 - the SDK's NotFoundError
        return getattr(error, "status_code", None) == 404, repr(error)


def agent_tools_and_output():
    with_tool = Agent(name="weather", instructions="Use the tool.", model="gpt-4o-mini", tools=[get_weather])
    called = run(Runner.run(with_tool, "Weather in Paris?", max_turns=3))
    typed = Agent(name="typed", instructions="Answer with a city.", model="gpt-4o-mini", output_type=City)
    city = run(Runner.run(typed, "Name a city")).final_output
    tool_ran = any(getattr(item, "type", "") == "tool_call_output_item" for item in called.new_items)
    return tool_ran and isinstance(city, City), {"city": city, "items": [i.type for i in called.new_items]}


def pydantic_ai_counts_before_the_request():
    asked = []

    async def record(request):
        asked.append(request.url.path)

    recording = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0,
                            http_client=httpx.AsyncClient(event_hooks={"request": [record]}))
    provider = OpenAIProvider(openai_client=recording)
    agent = PydanticAgent(OpenAIResponsesModel("gpt-4o-mini", provider=provider), instructions="Be brief.")
    limits = UsageLimits(count_tokens_before_request=True, input_tokens_limit=10_000)
    result = run(agent.run("Say hello", usage_limits=limits))
    counted = any(path.endswith("/responses/input_tokens") for path in asked)
    return bool(result.output) and counted and result.usage.input_tokens > 0, asked


def pydantic_ai_limit_refuses_before_the_request():
    provider = OpenAIProvider(openai_client=client)
    agent = PydanticAgent(OpenAIResponsesModel("gpt-4o-mini", provider=provider))
    limits = UsageLimits(count_tokens_before_request=True, input_tokens_limit=3)
    try:
        run(agent.run("This prompt is longer than three tokens, surely.", usage_limits=limits))
        return False, "the limit did not apply"
    except Exception as error:  # noqa: BLE001 - pydantic-ai's UsageLimitExceeded
        return type(error).__name__ == "UsageLimitExceeded", repr(error)


def pydantic_ai_chat_structured():
    provider = OpenAIProvider(openai_client=client)
    agent = PydanticAgent(OpenAIChatModel("gpt-4o-mini", provider=provider), output_type=City)
    result = run(agent.run("Name a city"))
    return isinstance(result.output, City), result.output


async def realtime_session():
    async with client.realtime.connect(model="gpt-realtime") as connection:
        first = await connection.recv()
        await connection.session.update(session={"type": "realtime", "instructions": "be brief",
                                                 "output_modalities": ["text"]})
        await connection.conversation.item.create(item={"type": "message", "role": "user",
                                                        "content": [{"type": "input_text", "text": "Say hello"}]})
        await connection.response.create()
        text = ""
        async for event in connection:
            if event.type == "response.output_text.delta":
                text += event.delta
            if event.type == "response.done":
                return first.type == "session.created" and bool(text) and event.response.usage.total_tokens > 0, {
                    "text": text, "usage": event.response.usage.model_dump()}
    return False, "the session ended without response.done"


checks.check("agents: a run", agent_run)
if model_like:
    checks.check("agents: a session kept in a Conversation", conversation_session)
    checks.check("agents: another key cannot read the conversation", a_strangers_conversation_is_not_found)
    checks.check("agents: a tool call and typed output", agent_tools_and_output)
    checks.check("pydantic-ai: structured output over chat completions", pydantic_ai_chat_structured)
checks.check("pydantic-ai: count_tokens_before_request", pydantic_ai_counts_before_the_request)
checks.check("pydantic-ai: an input limit stops the run before the request", pydantic_ai_limit_refuses_before_the_request)
checks.check("openai realtime helper: a text session", lambda: run(realtime_session()))
checks.finish()
