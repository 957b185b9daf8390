"""The official OpenAI Python SDK against Sluice's Files and Batch API.

Usage: python batch_smoke.py BASE_URL KEY OTHER_KEY
Sluice runs the batches itself on a mock deployment serving gpt-4o-mini and
text-embedding-3-small, with a short `[batch] poll_interval` (see
scripts/sdk-smoke.sh). OTHER_KEY is a second key, which must not see the
first key's files or batches. Exits non-zero on the first failed check;
prints 'N passed, 0 failed' at the end.
"""

import json
import os
import sys
import tempfile
import time

import openai
from openai import OpenAI

from compat_checks import FailFast

base_url, key, other_key = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
other = OpenAI(base_url=base_url, api_key=other_key, max_retries=0, timeout=20)
check = FailFast()
work = tempfile.mkdtemp(prefix="sluice-batch-smoke-")

# Every wait below is bounded: a batch that does not settle in time fails.
DEADLINE_SECONDS = 90
CLOSED = {"completed", "failed", "expired", "cancelled"}


def chat_line(custom_id, text, **body):
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **body},
    }


def write_jsonl(name, lines):
    """Writes `lines` (dicts, or raw strings kept as they are) to a file."""
    path = os.path.join(work, name)
    with open(path, "w", encoding="utf-8") as out:
        for line in lines:
            out.write(line if isinstance(line, str) else json.dumps(line))
            out.write("\n")
    return path


def upload(path):
    with open(path, "rb") as handle:
        return client.files.create(file=handle, purpose="batch")


def wait_closed(batch_id):
    """Polls the batch until it is in a final status, within the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in CLOSED:
            return batch
        if time.monotonic() > deadline:
            check(f"batch {batch_id} settles", False, batch)
        time.sleep(0.1)


def lines_of(file_id):
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


created_batches = []

# A chat batch: upload, create with metadata, run, read the output by custom_id.
COUNT = 25
good_path = write_jsonl("good.jsonl", [chat_line(f"req-{n}", f"Say {n}") for n in range(COUNT)])
good_file = upload(good_path)
check("file upload", good_file.id.startswith("file-") and good_file.purpose == "batch", good_file)
check("file bytes", good_file.bytes == os.path.getsize(good_path), good_file)
check("file filename", good_file.filename == "good.jsonl", good_file)

batch = client.batches.create(
    input_file_id=good_file.id,
    endpoint="/v1/chat/completions",
    completion_window="24h",
    metadata={"job": "smoke", "owner": "tests"},
)
created_batches.append(batch.id)
check("batch create", batch.id.startswith("batch_") and batch.status == "validating", batch)
check("batch metadata", batch.metadata == {"job": "smoke", "owner": "tests"}, batch.metadata)
done = wait_closed(batch.id)
check("batch completed", done.status == "completed", done)
check("batch counts", (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (COUNT, COUNT, 0), done.request_counts)
check("batch timestamps", done.in_progress_at and done.finalizing_at and done.completed_at, done)
check("batch usage", done.usage is not None and done.usage.input_tokens > 0 and done.usage.output_tokens > 0, done.usage)
check("batch no error file", done.error_file_id is None, done)
output = lines_of(done.output_file_id)
by_id = {line["custom_id"]: line for line in output}
check("output has every custom_id once", len(output) == COUNT and set(by_id) == {f"req-{n}" for n in range(COUNT)}, [line["custom_id"] for line in output])
check(
    "output lines are chat completions",
    all(line["response"]["status_code"] == 200 and line["error"] is None
        and line["response"]["body"]["object"] == "chat.completion"
        and line["response"]["body"]["choices"][0]["message"]["content"]
        for line in output),
    output[:1],
)
output_file = client.files.retrieve(done.output_file_id)
check("output file object", output_file.purpose == "batch_output" and output_file.bytes > 0, output_file)

# An embeddings batch.
embed_path = write_jsonl(
    "embed.jsonl",
    [{"custom_id": f"emb-{n}", "method": "POST", "url": "/v1/embeddings",
      "body": {"model": "text-embedding-3-small", "input": f"text number {n}"}} for n in range(5)],
)
embed_batch = client.batches.create(
    input_file_id=upload(embed_path).id, endpoint="/v1/embeddings", completion_window="24h"
)
created_batches.append(embed_batch.id)
embed_done = wait_closed(embed_batch.id)
check("embeddings batch completed", embed_done.status == "completed" and embed_done.request_counts.completed == 5, embed_done)
embed_out = {line["custom_id"]: line for line in lines_of(embed_done.output_file_id)}
check(
    "embeddings output",
    set(embed_out) == {f"emb-{n}" for n in range(5)}
    and all(isinstance(line["response"]["body"]["data"][0]["embedding"], list)
            and len(line["response"]["body"]["data"][0]["embedding"]) > 0 for line in embed_out.values()),
    list(embed_out.values())[:1],
)

# An invalid file fails as a whole, each problem with its line number.
bad_path = write_jsonl(
    "bad.jsonl",
    [
        chat_line("ok-1", "fine"),
        '{"custom_id": "broken", "method": "POST",',
        chat_line("ok-1", "a duplicate custom_id"),
        {**chat_line("wrong-url", "x"), "url": "/v1/embeddings"},
        {**chat_line("unknown-model", "x"), "body": {"model": "no-such-model-xyz", "messages": []}},
        chat_line("streamed", "x", stream=True),
    ],
)
bad_batch = client.batches.create(
    input_file_id=upload(bad_path).id, endpoint="/v1/chat/completions", completion_window="24h"
)
created_batches.append(bad_batch.id)
failed = wait_closed(bad_batch.id)
check("invalid file fails the batch", failed.status == "failed" and failed.failed_at, failed)
errors = failed.errors.data if failed.errors else []
found = {(error.line, error.code) for error in errors}
expected = {
    (2, "invalid_json_line"),
    (3, "duplicate_custom_id"),
    (4, "invalid_url"),
    (5, "model_not_found"),
    (6, "invalid_body"),
}
check("errors name their lines", found == expected, [error.model_dump() for error in errors])
check("errors carry messages", all(error.message for error in errors), errors)
check("a failed batch has no output", failed.output_file_id is None, failed)

# Cancel: a batch big enough to be running when the cancel lands.
big_path = write_jsonl("big.jsonl", [chat_line(f"big-{n}", f"Count to {n}") for n in range(10000)])
big_batch = client.batches.create(
    input_file_id=upload(big_path).id, endpoint="/v1/chat/completions", completion_window="24h"
)
created_batches.append(big_batch.id)
cancelling = client.batches.cancel(big_batch.id)
check("cancel answers cancelling", cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at, cancelling)
cancelled = wait_closed(big_batch.id)
check("cancel ends cancelled", cancelled.status == "cancelled" and cancelled.cancelled_at, cancelled)
ran = cancelled.request_counts.completed + cancelled.request_counts.failed
check("cancel stops early", ran < 10000, cancelled.request_counts)
check("cancel output matches counts", len(lines_of(cancelled.output_file_id)) == cancelled.request_counts.completed, cancelled)
try:
    client.batches.cancel(done.id)
    check("cancelling a completed batch is refused", False)
except openai.APIStatusError as error:
    check("cancelling a completed batch is refused", error.status_code == 409, error)

# Another key sees none of it.
for what, call in [
    ("batch retrieve", lambda: other.batches.retrieve(done.id)),
    ("batch cancel", lambda: other.batches.cancel(big_batch.id)),
    ("file retrieve", lambda: other.files.retrieve(good_file.id)),
    ("file content", lambda: other.files.content(done.output_file_id)),
    ("file delete", lambda: other.files.delete(good_file.id)),
]:
    try:
        call()
        check(f"another key: {what} is not found", False, "answered")
    except openai.NotFoundError:
        check(f"another key: {what} is not found", True)
check("another key lists no batches", other.batches.list(limit=100).data == [])
check("another key lists no files", other.files.list(purpose="batch").data == [])

# Batch listing: newest first, page by page with `after`, and auto-paging.
seen, after, pages = [], None, 0
while pages < 20:
    page = client.batches.list(limit=2, after=after) if after else client.batches.list(limit=2)
    pages += 1
    seen.extend(item.id for item in page.data)
    check(f"batch page {pages} size", len(page.data) <= 2, page)
    if not page.has_more:
        break
    after = page.data[-1].id
# Newest first, even for batches made within one second.
check("batch pages cover every batch once, newest first", seen == list(reversed(created_batches)), (seen, created_batches))
check("batch pages count", pages == (len(created_batches) + 1) // 2 and pages > 1, pages)
auto = [item.id for item in client.batches.list(limit=2)]
check("batch auto-paging", auto == seen, auto)

# Files: list by purpose, retrieve, delete.
listed = client.files.list(purpose="batch")
listed_ids = [item.id for item in listed]
check("files list by purpose", good_file.id in listed_ids and done.output_file_id not in listed_ids, listed_ids)
outputs = [item.id for item in client.files.list(purpose="batch_output")]
check("output files listed", done.output_file_id in outputs, outputs)
check("file retrieve", client.files.retrieve(good_file.id).id == good_file.id)
deleted = client.files.delete(good_file.id)
check("file delete", deleted.deleted and deleted.id == good_file.id, deleted)
try:
    client.files.retrieve(good_file.id)
    check("deleted file is gone", False)
except openai.NotFoundError:
    check("deleted file is gone", True)
check("deleted file not listed", good_file.id not in [item.id for item in client.files.list(purpose="batch")])

check.finish()
