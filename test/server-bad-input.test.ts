/**
 * Bad requests, over raw HTTP: each gets the right status and an OpenAI-style error body
 * ({error: {message, type, param, code}}) saying what is wrong, and the server keeps serving.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "./server-harness.js";

const key = "sk-test-key";
let t: TestServer;
before(async () => {
  t = await startTestServer({ apiKeys: [key], bodyLimit: 64 * 1024 });
});
after(() => t.close());

interface Reply {
  status: number;
  headers: Headers;
  body: { error?: { message: unknown; type: unknown; param: unknown; code: unknown } } & Record<
    string,
    unknown
  >;
}

async function call(
  path: string,
  body: unknown,
  headers: Record<string, string> = { authorization: `Bearer ${key}`, "content-type": "application/json" },
): Promise<Reply> {
  const res = await fetch(`${t.url}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Reply["body"] };
}

function assertError(
  r: Reply,
  status: number,
  expect: { code?: string | null; param?: string | null; message?: RegExp },
) {
  assert.equal(r.status, status, JSON.stringify(r.body));
  const e = r.body.error;
  assert.ok(e, `an error body: ${JSON.stringify(r.body)}`);
  assert.deepEqual(Object.keys(e).sort(), ["code", "message", "param", "type"]);
  assert.equal(typeof e.message, "string");
  assert.ok((e.message as string).length > 10, "the message says what is wrong");
  assert.equal(typeof e.type, "string");
  if (expect.code !== undefined) assert.equal(e.code, expect.code);
  if (expect.param !== undefined) assert.equal(e.param, expect.param);
  if (expect.message) assert.match(e.message as string, expect.message);
}

const chat = (extra: Record<string, unknown>) => ({
  model: "tiny",
  messages: [{ role: "user", content: "hi" }],
  max_tokens: 2,
  ...extra,
});
const completion = (extra: Record<string, unknown>) => ({
  model: "tiny",
  prompt: "x",
  max_tokens: 2,
  ...extra,
});

const badChats: [string, unknown, string | null, string | null][] = [
  // [what, body, param, code]
  ["an array body", [1, 2], "body", "invalid_type"],
  ["no model", { messages: [{ role: "user", content: "hi" }] }, "model", "missing_required_parameter"],
  ["a numeric model", chat({ model: 7 }), "model", "invalid_type"],
  ["no messages", { model: "tiny" }, "messages", "missing_required_parameter"],
  ["messages as a string", chat({ messages: "hi" }), "messages", "invalid_type"],
  ["no message", chat({ messages: [] }), "messages", "invalid_value"],
  [
    "an unknown role",
    chat({ messages: [{ role: "robot", content: "x" }] }),
    "messages[0].role",
    "invalid_value",
  ],
  [
    "an image part",
    chat({ messages: [{ role: "user", content: [{ type: "image_url" }] }] }),
    "messages[0].content[0]",
    "invalid_value",
  ],
  ["a string temperature", chat({ temperature: "hot" }), "temperature", "invalid_type"],
  ["temperature above 2", chat({ temperature: 3 }), "temperature", "invalid_value"],
  ["top_p 0", chat({ top_p: 0 }), "top_p", "invalid_value"],
  ["top_p above 1", chat({ top_p: 1.5 }), "top_p", "invalid_value"],
  ["min_p above 1", chat({ min_p: 2 }), "min_p", "invalid_value"],
  ["a fractional top_k", chat({ top_k: 2.5 }), "top_k", "invalid_type"],
  ["max_tokens 0", chat({ max_tokens: 0 }), "max_tokens", "invalid_value"],
  ["fractional max_tokens", chat({ max_tokens: 1.5 }), "max_tokens", "invalid_type"],
  [
    "negative max_completion_tokens",
    chat({ max_completion_tokens: -1 }),
    "max_completion_tokens",
    "invalid_value",
  ],
  ["n 0", chat({ n: 0 }), "n", "invalid_value"],
  ["n 100", chat({ n: 100 }), "n", "invalid_value"],
  ["a numeric stop", chat({ stop: 5 }), "stop", "invalid_type"],
  ["an empty stop string", chat({ stop: [""] }), "stop", "invalid_value"],
  ["presence_penalty 5", chat({ presence_penalty: 5 }), "presence_penalty", "invalid_value"],
  ["repetition_penalty 0", chat({ repetition_penalty: 0 }), "repetition_penalty", "invalid_value"],
  ["a fractional seed", chat({ seed: 1.5 }), "seed", "invalid_type"],
  ["top_logprobs without logprobs", chat({ top_logprobs: 2 }), "top_logprobs", "invalid_value"],
  ["top_logprobs 50", chat({ logprobs: true, top_logprobs: 50 }), "top_logprobs", "invalid_value"],
  ["logprobs as a string", chat({ logprobs: "yes" }), "logprobs", "invalid_type"],
  ["stream as a string", chat({ stream: "yes" }), "stream", "invalid_type"],
  [
    "stream_options without stream",
    chat({ stream_options: { include_usage: true } }),
    "stream_options",
    "invalid_value",
  ],
  [
    "an unknown speculation method",
    chat({ speculation: { method: "magic" } }),
    "speculation.method",
    "invalid_value",
  ],
  ["speculation k 0", chat({ speculation: { method: "mtp", k: 0 } }), "k", "invalid_value"],
  [
    "tools",
    chat({ tools: [{ type: "function", function: { name: "f" } }] }),
    "tools",
    "unsupported_parameter",
  ],
  ["a max_tokens beyond the context", chat({ max_tokens: 5000 }), "messages", "context_length_exceeded"],
];

for (const [what, body, param, code] of badChats) {
  test(`chat with ${what}: 400`, async () => {
    assertError(await call("/v1/chat/completions", body), 400, { param, code });
  });
}

const badCompletions: [string, unknown, string | null, string | null][] = [
  ["no prompt", { model: "tiny" }, "prompt", "missing_required_parameter"],
  ["an object prompt", completion({ prompt: { text: "x" } }), "prompt", "invalid_type"],
  ["an empty prompt list", completion({ prompt: [] }), "prompt", "invalid_type"],
  ["a token id outside the vocabulary", completion({ prompt: [1, 99999] }), "prompt", "invalid_value"],
  [
    "a prompt longer than the context",
    completion({ prompt: new Array(2100).fill(5) }),
    "prompt",
    "context_length_exceeded",
  ],
  ["logprobs as a boolean", completion({ logprobs: true }), "logprobs", "invalid_type"],
  ["echo", completion({ echo: true }), "echo", "unsupported_parameter"],
];

for (const [what, body, param, code] of badCompletions) {
  test(`completion with ${what}: 400`, async () => {
    assertError(await call("/v1/completions", body), 400, { param, code });
  });
}

test("malformed and empty JSON: 400 invalid_json", async () => {
  assertError(await call("/v1/chat/completions", '{"model": "tiny", '), 400, { code: "invalid_json" });
  assertError(await call("/v1/chat/completions", ""), 400, { code: "invalid_json" });
});

test("a body that is not JSON: 415", async () => {
  const r = await call("/v1/completions", "<prompt/>", {
    authorization: `Bearer ${key}`,
    "content-type": "application/xml",
  });
  assertError(r, 415, { code: "unsupported_media_type" });
});

test("a body over the limit: 413", async () => {
  const r = await call("/v1/completions", completion({ prompt: "x".repeat(100 * 1024) }));
  assertError(r, 413, { code: "request_too_large" });
});

test("an unknown model: 404 model_not_found", async () => {
  assertError(await call("/v1/chat/completions", chat({ model: "gpt-5" })), 404, {
    param: "model",
    code: "model_not_found",
    message: /serves: tiny/,
  });
});

test("an unknown route: 404", async () => {
  assertError(await call("/v1/embeddings", { model: "tiny", input: "x" }), 404, { code: "unknown_url" });
});

test("a missing, wrong or malformed API key: 401 on /v1, while health and metrics stay open", async () => {
  const json = { "content-type": "application/json" };
  assertError(await call("/v1/completions", completion({}), json), 401, {
    code: "invalid_api_key",
    message: /Bearer/,
  });
  assertError(
    await call("/v1/completions", completion({}), { ...json, authorization: "Bearer sk-wrong" }),
    401,
    {
      code: "invalid_api_key",
    },
  );
  assertError(await call("/v1/completions", completion({}), { ...json, authorization: key }), 401, {
    code: "invalid_api_key",
  });
  assertError(await call("/v1/models", undefined, {}), 401, { code: "invalid_api_key" });
  await assert.rejects(
    t.client("sk-wrong").models.list(),
    (e: unknown) => (e as { status: number }).status === 401,
  );
  assert.equal((await fetch(`${t.url}/health`)).status, 200);
  assert.equal((await fetch(`${t.url}/metrics`)).status, 200);
});

test("unknown fields are ignored and null means absent, as in OpenAI's API", async () => {
  const r = await call(
    "/v1/chat/completions",
    chat({ user: "u1", metadata: { a: 1 }, temperature: null, stop: null }),
  );
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.object, "chat.completion");
});

test("after every bad request the server still serves", async () => {
  const r = await t.client(key).completions.create({ model: "tiny", prompt: "def", max_tokens: 3 });
  assert.equal(r.usage?.completion_tokens, 3);
  const [tiny] = await t.health();
  assert.equal(tiny.kv_blocks_used, 0);
});
