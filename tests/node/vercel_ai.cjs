// The Vercel AI SDK (`ai` with `@ai-sdk/openai`) against a running Sluice:
// text, streams, tools, structured output and embeddings, on the
// Responses API (the provider's default) and on chat completions.
//
// Usage: node vercel_ai.cjs BASE_URL KEY MODE
// MODE "spelled" (an upstream that only answers text) skips the checks that
// need a model's structured answers. Prints `ok   <what>` / `FAIL <what>: <why>` per check and ends with
// `N passed, N failed`; exits non-zero on any failure.
"use strict";

const { generateText, streamText, Output, embedMany, tool, stepCountIs } = require("ai");
const { createOpenAI } = require("@ai-sdk/openai");
const { z } = require("zod");

const [baseURL, apiKey, mode] = process.argv.slice(2);
const modelLike = mode !== "spelled";
const openai = createOpenAI({ baseURL, apiKey });
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
    console.log(`FAIL ${name}: ${error && error.stack ? error.stack.split("\n").slice(0, 3).join(" ") : error}`);
  }
}

const person = z.object({ name: z.string(), age: z.number().int(), tags: z.array(z.string()) });
const weather = tool({
  description: "Weather in a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => ({ city, forecast: "sunny" }),
});

async function main() {
  for (const [api, model] of [
    ["responses", openai("gpt-4o-mini")],
    ["chat", openai.chat("gpt-4o-mini")],
  ]) {
    await check(`${api}: generateText`, async () => {
      const result = await generateText({ model, prompt: "Say hello", maxRetries: 0 });
      return [result.text.length > 0 && result.usage.inputTokens > 0, result.usage];
    });
    await check(`${api}: streamText`, async () => {
      const result = streamText({ model, prompt: "Say hello", maxRetries: 0 });
      let text = "";
      for await (const delta of result.textStream) text += delta;
      const usage = await result.usage;
      return [text.length > 0 && usage.outputTokens > 0, { text, usage }];
    });
    if (!modelLike) continue;
    await check(`${api}: structured output`, async () => {
      const result = await generateText({
        model,
        prompt: "Describe a person",
        output: Output.object({ schema: person }),
        maxRetries: 0,
      });
      return [person.safeParse(result.output).success, result.output];
    });
    await check(`${api}: a tool call and its result`, async () => {
      const result = await generateText({
        model,
        prompt: "What is the weather in Paris?",
        tools: { weather },
        toolChoice: "required",
        stopWhen: stepCountIs(1),
        maxRetries: 0,
      });
      const call = result.toolCalls[0];
      return [call && call.toolName === "weather" && typeof call.input.city === "string", result.toolCalls];
    });
  }
  await check("embedMany", async () => {
    const { embeddings } = await embedMany({
      model: openai.embedding("text-embedding-3-small"),
      values: ["hello", "world"],
      maxRetries: 0,
    });
    return [embeddings.length === 2 && embeddings[0].length > 0, embeddings.map((e) => e.length)];
  });
  await check("a wrong key is an API error, not a crash", async () => {
    const wrong = createOpenAI({ baseURL, apiKey: "sk-wrong-000000000" });
    try {
      await generateText({ model: wrong("gpt-4o-mini"), prompt: "hi", maxRetries: 0 });
      return [false, "no error"];
    } catch (error) {
      return [error.statusCode === 401, { status: error.statusCode, message: error.message }];
    }
  });
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
