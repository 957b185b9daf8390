"""A fake Realtime upstream written with the `websockets` package (a
server Sluice did not write): it takes only the provider key it is given,
answers `session.created`, echoes `session.update` as `session.updated`,
and answers each `response.create` with text deltas and a `response.done`
carrying usage (11 input, 7 output, 3 cached tokens).

Usage: python realtime_upstream.py PORT_FILE PROVIDER_KEY
Writes the port it listens on to PORT_FILE.
"""

import asyncio
import json
import sys

from websockets.asyncio.server import serve
from websockets.http11 import Response
from websockets.datastructures import Headers

port_file, provider_key = sys.argv[1], sys.argv[2]
counter = 0


def event(kind, **fields):
    global counter
    counter += 1
    return json.dumps({"type": kind, "event_id": f"event_{counter}", **fields})


def check_key(connection, request):
    if request.headers.get("Authorization") != f"Bearer {provider_key}":
        body = b'{"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}}'
        return Response(401, "Unauthorized", Headers([("Content-Type", "application/json")]), body)
    if not request.path.startswith("/v1/realtime?model="):
        return Response(404, "Not Found", Headers(), b"")
    return None


async def session(socket):
    await socket.send(event("session.created", session={"id": "sess_fake", "object": "realtime.session",
                                                        "type": "realtime", "model": "gpt-realtime"}))
    async for message in socket:
        request = json.loads(message)
        if request.get("type") == "session.update":
            await socket.send(event("session.updated", session=request.get("session", {})))
        elif request.get("type") == "response.create":
            ids = {"response_id": "resp_fake", "item_id": "item_fake", "output_index": 0, "content_index": 0}
            await socket.send(event("response.created", response={"id": "resp_fake", "object": "realtime.response",
                                                                  "status": "in_progress", "output": []}))
            for piece in ["Hello ", "from the fake."]:
                await socket.send(event("response.output_text.delta", delta=piece, **ids))
            usage = {"total_tokens": 18, "input_tokens": 11, "output_tokens": 7,
                     "input_token_details": {"cached_tokens": 3, "text_tokens": 11, "audio_tokens": 0},
                     "output_token_details": {"text_tokens": 7, "audio_tokens": 0}}
            await socket.send(event("response.done", response={"id": "resp_fake", "object": "realtime.response",
                                                               "status": "completed", "output": [], "usage": usage}))
        else:
            await socket.send(event("conversation.item.added", item=request.get("item", {}), previous_item_id=None))


async def main():
    async with serve(session, "127.0.0.1", 0, process_request=check_key) as server:
        port = server.sockets[0].getsockname()[1]
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port))
        import os
        os.replace(port_file + ".tmp", port_file)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
