// A fake OpenAI upstream for the console test, on a port the script chose:
// it answers chat completions (after `delayMs`) until told to fail, then
// 500s, so a deployment can be seen turning unhealthy in the console and
// coming back, and a slow call be cancelled there.
"use strict";

const http = require("node:http");

function completion(model) {
  return JSON.stringify({
    id: "chatcmpl-console", object: "chat.completion", created: 1, model,
    choices: [{ index: 0, message: { role: "assistant", content: "hello" }, finish_reason: "stop" }],
    usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
  });
}

/** Starts the upstream; `failing` switches it between healthy and 500s,
 * `delayMs` holds each answer back; `dropped` counts the calls the gateway
 * gave up on before their answer. */
function start(port) {
  const state = { failing: false, calls: 0, delayMs: 0, dropped: 0 };
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      state.calls += 1;
      if (state.failing) {
        response.writeHead(500, { "content-type": "application/json" });
        return response.end('{"error":{"message":"upstream down","type":"server_error","param":null,"code":null}}');
      }
      let model = "gpt-4o";
      try { model = JSON.parse(Buffer.concat(chunks).toString()).model ?? model; } catch { /* keep */ }
      const answer = setTimeout(() => {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(completion(model));
      }, state.delayMs);
      answer.unref();
      response.on("close", () => {
        if (!response.writableFinished) {
          clearTimeout(answer);
          state.dropped += 1;
        }
      });
    });
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve({ state, server })));
}

module.exports = { start };
