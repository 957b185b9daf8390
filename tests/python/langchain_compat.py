"""langchain-openai against a running Sluice.

Usage: python langchain_compat.py BASE_URL KEY DEPLOYMENT
DEPLOYMENT is the deployment expected to serve the requests ("mock" or
"spelled"). Covers ChatOpenAI invoke, stream (with and without usage),
with_structured_output (Pydantic), bind_tools and OpenAIEmbeddings.
"""

import sys

from langchain_core.messages import ToolMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

from compat_checks import Checks

base_url, key, deployment = sys.argv[1], sys.argv[2], sys.argv[3]
checks = Checks()
chat = ChatOpenAI(
    model="gpt-4o-mini", base_url=base_url, api_key=key, max_retries=0, timeout=10, stream_usage=True
)


class City(BaseModel):
    """A city and where it is."""

    name: str
    country: str
    population: int = Field(description="people living there")


class GetWeather(BaseModel):
    """Weather in a city."""

    city: str
    unit: str = Field(description="c or f")


def invoke():
    with_headers = ChatOpenAI(
        model="gpt-4o-mini", base_url=base_url, api_key=key, max_retries=0, timeout=10, include_response_headers=True
    )
    reply = with_headers.invoke("Say hello")
    served = reply.response_metadata.get("headers", {}).get("x-sluice-deployment")
    return bool(reply.content) and reply.usage_metadata["total_tokens"] > 0 and served == deployment, reply


reference = checks.check("ChatOpenAI.invoke", invoke)


def stream(usage):
    def body():
        model = chat if usage else ChatOpenAI(
            model="gpt-4o-mini", base_url=base_url, api_key=key, max_retries=0, timeout=10, stream_usage=False
        )
        total, text = None, ""
        for chunk in model.stream("Say hello"):
            text += chunk.content
            total = total + chunk if total is not None else chunk
        ok = reference is not None and text == reference.content
        if usage:
            ok = ok and total.usage_metadata and total.usage_metadata["total_tokens"] > 0
        return ok, (text, total.usage_metadata)

    return body


checks.check("ChatOpenAI.stream with usage (stream_usage)", stream(True))
checks.check("ChatOpenAI.stream without usage", stream(False))


def structured():
    city = chat.with_structured_output(City).invoke("Describe a large city")
    return isinstance(city, City) and city.name, city


checks.check("with_structured_output(Pydantic)", structured)


def structured_tool_calling():
    city = chat.with_structured_output(City, method="function_calling").invoke("Describe a large city")
    return isinstance(city, City), city


checks.check("with_structured_output(method='function_calling')", structured_tool_calling)


def tools():
    bound = chat.bind_tools([GetWeather])
    reply = bound.invoke("Weather in Paris?")
    calls = reply.tool_calls
    ok = len(calls) == 1 and calls[0]["name"] == "GetWeather" and "city" in calls[0]["args"]
    if not ok:
        return False, reply
    answer = bound.invoke(
        ["Weather in Paris?", reply, ToolMessage(content="18 degrees", tool_call_id=calls[0]["id"])]
    )
    return bool(answer.content) and not answer.tool_calls, answer


checks.check("bind_tools: a call, then the tool's result answered", tools)


def streamed_tools():
    total = None
    for chunk in chat.bind_tools([GetWeather], tool_choice="GetWeather").stream("Weather in Paris?"):
        total = total + chunk if total is not None else chunk
    calls = total.tool_calls
    return len(calls) == 1 and calls[0]["name"] == "GetWeather" and "unit" in calls[0]["args"], total


checks.check("bind_tools streamed tool call chunks", streamed_tools)


def embeddings():
    # check_embedding_ctx_length=False sends strings: the default tokenizes
    # with tiktoken, whose files come from the network.
    embedder = OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=base_url,
        api_key=key,
        max_retries=0,
        check_embedding_ctx_length=False,
    )
    vectors = embedder.embed_documents(["hello world", "bye"])
    query = embedder.embed_query("hello")
    return len(vectors) == 2 and len(vectors[0]) == 1536 and len(query) == 1536, len(vectors)


checks.check("OpenAIEmbeddings embed_documents / embed_query", embeddings)

checks.finish()
