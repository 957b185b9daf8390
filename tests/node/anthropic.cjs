// The official Anthropic TypeScript SDK (@anthropic-ai/sdk) against a
// running Sluice's Messages API, onto whichever upstream serves gpt-4o-mini.
//
// Usage: node anthropic.cjs BASE_URL KEY
// Prints `ok   <what>` / `FAIL <what>: <why>` per check and ends with
// `N passed, N failed`; exits non-zero on any failure.
"use strict";

const Anthropic = require("@anthropic-ai/sdk");

const [root, apiKey] = process.argv.slice(2);
const baseURL = root.replace(/\/v1$/, "");
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 10_000 });
const model = "gpt-4o-mini";
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
    console.log(`FAIL ${name}: ${error}`);
  }
}

(async () => {
  await check("messages.create", async () => {
    const message = await client.messages.create({ model, max_tokens: 64, messages });
    return [message.type === "message" && message.content[0]?.text?.length > 0
      && message.usage.output_tokens > 0, message];
  });
  await check("messages.stream with finalMessage", async () => {
    let text = "";
    const stream = client.messages.stream({ model, max_tokens: 64, messages });
    stream.on("text", (delta) => { text += delta; });
    const final = await stream.finalMessage();
    return [text.length > 0 && final.content[0].text === text && final.stop_reason === "end_turn", final];
  });
  await check("raw stream events in order", async () => {
    const kinds = [];
    const stream = await client.messages.create({ model, max_tokens: 64, messages, stream: true });
    for await (const event of stream) kinds.push(event.type);
    return [kinds[0] === "message_start" && kinds.at(-1) === "message_stop"
      && kinds.includes("content_block_delta"), kinds];
  });
  await check("countTokens", async () => {
    const counted = await client.messages.countTokens({ model, messages });
    return [counted.input_tokens > 0, counted];
  });
  await check("a wrong key is AuthenticationError", async () => {
    const wrong = new Anthropic({ baseURL, apiKey: "sk-wrong-key", maxRetries: 0 });
    const error = await wrong.messages.create({ model, max_tokens: 8, messages }).catch((e) => e);
    return [error instanceof Anthropic.AuthenticationError, String(error)];
  });
  await check("an unknown model is NotFoundError", async () => {
    const error = await client.messages.create({ model: "no-such-model", max_tokens: 8, messages }).catch((e) => e);
    return [error instanceof Anthropic.NotFoundError, String(error)];
  });
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
})();
