"""The official OpenAI Python SDK's Azure client against a running Sluice (mock upstream).

Usage: python azure_smoke.py ENDPOINT KEY
`ENDPOINT` is the gateway's root (no /v1): AzureOpenAI builds
/openai/deployments/{model}/... and /openai/responses from it.
Exits non-zero on the first failed check; prints 'N passed, 0 failed' at the end.
"""

import sys

import openai
from openai import AzureOpenAI, OpenAI

from compat_checks import FailFast

endpoint, key = sys.argv[1], sys.argv[2]
classic = AzureOpenAI(
    azure_endpoint=endpoint, api_key=key, api_version="2024-10-21", max_retries=0, timeout=10
)
preview = AzureOpenAI(
    azure_endpoint=endpoint, api_key=key, api_version="2025-04-01-preview", max_retries=0, timeout=10
)
v1 = OpenAI(base_url=f"{endpoint}/openai/v1/", api_key=key, max_retries=0, timeout=10)
check = FailFast()


messages = [{"role": "user", "content": "Say hello"}]

reply = classic.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
completion = reply.parse()
check("azure chat", completion.choices[0].message.content, completion)
check("azure chat deployment header", reply.headers.get("x-sluice-deployment") == "mock")

stream = classic.chat.completions.create(
    model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
)
text, usage = "", None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
check("azure streaming chat", text == completion.choices[0].message.content, text)
check("azure streaming usage", usage is not None and usage.total_tokens > 0)

embedding = classic.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
check("azure embeddings", len(embedding.data) == 2 and len(embedding.data[0].embedding) > 0)

response = preview.responses.create(model="gpt-4o-mini", input="Say hello")
check("azure responses", response.output_text, response)
follow = preview.responses.create(
    model="gpt-4o-mini", input="And again", previous_response_id=response.id
)
check("azure previous_response_id", follow.output_text and follow.id != response.id)
check("azure retrieve", preview.responses.retrieve(response.id).id == response.id)
items = preview.responses.input_items.list(response.id)
check("azure input_items", items.data and items.data[0].content[0].text == "Say hello", items)

streamed = preview.responses.create(model="gpt-4o-mini", input="Stream it", stream=True)
created = None
for event in streamed:
    if event.type == "response.created":
        created = event.response.id
check("azure streamed responses", created)
check("streamed response retrievable", preview.responses.retrieve(created).id == created)

v1_chat = v1.chat.completions.create(model="gpt-4o-mini", messages=messages)
check("azure v1 chat", v1_chat.choices[0].message.content)
v1_models = [m.id for m in v1.models.list()]
check("azure v1 models", "gpt-4o-mini" in v1_models, v1_models)

preview.responses.delete(response.id)
try:
    preview.responses.retrieve(response.id)
    check("deleted response is gone", False, "no error")
except openai.NotFoundError as error:
    check("deleted response is gone", error.status_code == 404)

try:
    preview.responses.retrieve("resp_unknown")
    check("unknown response 404", False, "no error")
except openai.NotFoundError as error:
    check("unknown response 404", "not found" in str(error))

try:
    classic.chat.completions.create(model="no-such-deployment", messages=messages)
    check("unknown deployment", False, "no error")
except openai.NotFoundError as error:
    check("unknown deployment", error.status_code == 404)

moderation = classic.moderations.create(model="omni-moderation-latest", input="hello")
check("azure moderations", len(moderation.results) == 1)
image = classic.images.generate(model="gpt-image-1", prompt="a lighthouse")
check("azure images", image.data[0].b64_json)
speech = classic.audio.speech.create(model="tts-1", voice="alloy", input="Hello there")
check("azure speech", len(speech.content) > 100)
transcript = classic.audio.transcriptions.create(
    model="whisper-1", file=("hello.wav", b"RIFF0000WAVEfmt ", "audio/wav")
)
check("azure transcription", transcript.text.startswith("Mock transcript"), transcript)

check.finish()
