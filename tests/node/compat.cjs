// The official `openai` npm package against a running Sluice.
//
// Usage: node compat.cjs BASE_URL KEY DEPLOYMENT
// DEPLOYMENT is the deployment expected in x-sluice-deployment ("mock" or
// "spelled"). Prints `ok   <what>` / `FAIL <what>: <why>` per check and ends
// with `N passed, N failed`; exits non-zero on any failure.
// scripts/compat.sh installs the package (tests/node/package-lock.json) under
// target/ and sets NODE_PATH to it.
"use strict";

const OpenAI = require("openai");

const [baseURL, apiKey, deployment] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 10_000 });
const messages = [{ role: "user", content: "Say hello" }];
let passed = 0;
let failed = 0;

async function check(name, body) {
  try {
    const [ok, detail] = await body();
    if (ok) {
      passed += 1;
      console.log(`ok   ${name}`);
    } else {
      failed += 1;
      console.log(`FAIL ${name}: ${JSON.stringify(detail)}`);
    }
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name}: ${error && error.stack ? error.stack.split("\n")[0] : error}`);
  }
}

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" }, unit: { type: "string", enum: ["c", "f"] } },
      required: ["city", "unit"],
    },
  },
};

async function main() {
  let reference = null;

  await check("chat", async () => {
    const { data, response } = await client.chat.completions
      .create({ model: "gpt-4o-mini", messages })
      .withResponse();
    reference = data.choices[0].message.content;
    return [
      reference && data.usage.total_tokens > 0 && response.headers.get("x-sluice-deployment") === deployment,
      { data, deployment: response.headers.get("x-sluice-deployment") },
    ];
  });

  await check("streaming chat with include_usage", async () => {
    const stream = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.choices.length) text += chunk.choices[0].delta.content || "";
      if (chunk.usage) usage = chunk.usage;
    }
    return [text === reference && usage && usage.total_tokens > 0, { text, usage }];
  });

  await check("streaming chat without include_usage: every chunk has a choice", async () => {
    const stream = await client.chat.completions.create({ model: "gpt-4o-mini", messages, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0].delta.content || "";
    return [text === reference, text];
  });

  await check("chat.completions.stream() helper final completion", async () => {
    const runner = client.chat.completions.stream({ model: "gpt-4o-mini", messages });
    const final = await runner.finalChatCompletion();
    return [final.choices[0].message.content === reference, final];
  });

  await check("embeddings (the package's default base64)", async () => {
    const result = await client.embeddings.create({
      model: "text-embedding-3-small",
      input: ["hello world", "bye"],
    });
    const vector = result.data[0].embedding;
    return [
      result.data.length === 2 && vector.length === 1536 && vector.every(Number.isFinite),
      { count: result.data.length, dims: vector.length },
    ];
  });

  await check("tool call", async () => {
    const reply = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Weather in Paris?" }],
      tools: [weather],
      tool_choice: "required",
    });
    const call = (reply.choices[0].message.tool_calls || [])[0];
    const args = call && JSON.parse(call.function.arguments);
    return [
      reply.choices[0].finish_reason === "tool_calls" && call.function.name === "get_weather" && ["c", "f"].includes(args.unit),
      reply,
    ];
  });

  await check("streamed tool call", async () => {
    const runner = client.chat.completions.stream({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Weather in Paris?" }],
      tools: [weather],
      tool_choice: "required",
    });
    const final = await runner.finalChatCompletion();
    const call = final.choices[0].message.tool_calls[0];
    return [call.function.name === "get_weather" && "city" in JSON.parse(call.function.arguments), final];
  });

  await check("responses", async () => {
    const response = await client.responses.create({ model: "gpt-4o-mini", input: "Say hello" });
    return [response.output_text && response.usage.total_tokens > 0, response];
  });

  await check("responses stream", async () => {
    const stream = await client.responses.create({ model: "gpt-4o-mini", input: "Say hello", stream: true });
    const types = [];
    let text = "";
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "response.output_text.delta") text += event.delta;
    }
    return [types[0] === "response.created" && types.at(-1) === "response.completed" && text, types];
  });

  await check("files and batches", async () => {
    const lines = [0, 1, 2].map((n) =>
      JSON.stringify({
        custom_id: `node-${n}`,
        method: "POST",
        url: "/v1/chat/completions",
        body: { model: "gpt-4o-mini", messages: [{ role: "user", content: `Say ${n}` }] },
      }),
    );
    const file = await client.files.create({
      file: await OpenAI.toFile(Buffer.from(lines.join("\n") + "\n"), "node.jsonl"),
      purpose: "batch",
    });
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: "/v1/chat/completions",
      completion_window: "24h",
      metadata: { client: "node" },
    });
    // Bounded poll: the gateway runs the batch itself.
    let batch = created;
    const deadline = Date.now() + 60_000;
    while (!["completed", "failed", "expired", "cancelled"].includes(batch.status)) {
      if (Date.now() > deadline) return [false, batch];
      await new Promise((resolve) => setTimeout(resolve, 100));
      batch = await client.batches.retrieve(created.id);
    }
    const text = await (await client.files.content(batch.output_file_id)).text();
    const outputs = text.trim().split("\n").map((line) => JSON.parse(line));
    const ids = outputs.map((line) => line.custom_id).sort();
    const listed = [];
    for await (const item of client.batches.list({ limit: 1 })) {
      listed.push(item.id);
      if (listed.length > 100) break;
    }
    const deleted = await client.files.delete(file.id);
    return [
      batch.status === "completed" &&
        batch.metadata.client === "node" &&
        batch.request_counts.completed === 3 &&
        JSON.stringify(ids) === JSON.stringify(["node-0", "node-1", "node-2"]) &&
        outputs.every((line) => line.response.status_code === 200 && line.response.body.choices.length > 0) &&
        listed.includes(created.id) &&
        new Set(listed).size === listed.length &&
        deleted.deleted === true,
      { batch, ids, listed },
    ];
  });

  await check("unknown model raises NotFoundError", async () => {
    try {
      await client.chat.completions.create({ model: "gpt-9", messages });
      return [false, "no error"];
    } catch (error) {
      return [error instanceof OpenAI.NotFoundError && error.code === "model_not_found", String(error)];
    }
  });

  await check("bad key raises AuthenticationError", async () => {
    const wrong = new OpenAI({ baseURL, apiKey: "sk-wrong-key-0000", maxRetries: 0 });
    try {
      await wrong.chat.completions.create({ model: "gpt-4o-mini", messages });
      return [false, "no error"];
    } catch (error) {
      return [error instanceof OpenAI.AuthenticationError && error.status === 401, String(error)];
    }
  });

  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((error) => {
  console.log(`FAIL node runner: ${error}`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exitCode = 1;
});
