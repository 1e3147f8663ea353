/**
 * The server as OpenAI's own client sees it, on the embedded models (CPU): chat and completions,
 * streamed and not, n > 1, logprobs, stop strings, seeds, several models, and the engine's
 * promises behind them: batching never changes greedy output, speculation neither, shared prefixes
 * are computed once, and a client that disconnects frees its KV blocks.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { CompletionUsage } from "openai/resources/completions";
import { loadModel } from "../src/index.js";
import { draftDir, eventually, startTestServer, tinyDir, type TestServer } from "./server-harness.js";

let t: TestServer;
before(async () => {
  t = await startTestServer({
    models: [
      { name: "tiny", dir: tinyDir, draft: draftDir },
      { name: "draft", dir: draftDir },
    ],
  });
});
after(() => t.close());

test("GET /v1/models lists both models", async () => {
  const list = await t.client().models.list();
  assert.deepEqual(
    list.data.map((m) => m.id),
    ["tiny", "draft"],
  );
  assert.equal((await t.client().models.retrieve("draft")).id, "draft");
});

test("a chat completion has OpenAI's shape and the engine's greedy reply", async () => {
  const messages = [{ role: "user" as const, content: "Add two numbers" }];
  const r = await t
    .client()
    .chat.completions.create({ model: "tiny", messages, max_tokens: 8, temperature: 0 });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, "chat.completion");
  assert.equal(r.model, "tiny");
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, "assistant");
  const model = await loadModel(tinyDir, { device: "cpu" });
  const expected = await model.complete(model.tokenizer.encodeChat(messages), {
    maxTokens: 8,
    temperature: 0,
  });
  assert.equal(r.choices[0].message.content, expected.text);
  assert.equal(r.choices[0].finish_reason, expected.finishReason);
  assert.deepEqual(r.usage, {
    prompt_tokens: expected.promptTokens,
    completion_tokens: expected.completionTokens,
    total_tokens: expected.promptTokens + expected.completionTokens,
  });
});

test("a streamed chat adds up to the same reply, ends with a finish reason, then usage", async () => {
  const body = {
    model: "tiny",
    messages: [{ role: "user" as const, content: "Sort a list" }],
    max_tokens: 10,
    temperature: 0,
  };
  const whole = await t.client().chat.completions.create(body);
  const stream = await t.client().chat.completions.create({
    ...body,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  const finishes: (string | null)[] = [];
  let usage = null;
  let role = "";
  for await (const chunk of stream) {
    if (chunk.usage) {
      usage = chunk.usage;
      assert.equal(chunk.choices.length, 0, "the usage chunk has no choices");
      continue;
    }
    assert.equal(chunk.object, "chat.completion.chunk");
    assert.equal(chunk.usage, null, "with include_usage every other chunk says usage: null");
    role ||= chunk.choices[0].delta.role ?? "";
    text += chunk.choices[0].delta.content ?? "";
    finishes.push(chunk.choices[0].finish_reason);
  }
  assert.equal(role, "assistant");
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finishes.at(-1), whole.choices[0].finish_reason);
  assert.ok(finishes.slice(0, -1).every((f) => f === null));
  assert.deepEqual(usage, whole.usage);
});

test("completions: text, streaming and token-id prompts agree", async () => {
  const c = t.client();
  const prompt = "def fibonacci(n):\n";
  const whole = await c.completions.create({ model: "tiny", prompt, max_tokens: 12, temperature: 0 });
  assert.equal(whole.object, "text_completion");
  assert.match(whole.id, /^cmpl-/);
  let streamed = "";
  for await (const chunk of await c.completions.create({
    model: "tiny",
    prompt,
    max_tokens: 12,
    temperature: 0,
    stream: true,
  })) {
    streamed += chunk.choices[0]?.text ?? "";
  }
  assert.equal(streamed, whole.choices[0].text);
  const model = await loadModel(tinyDir, { device: "cpu" });
  const ids = await c.completions.create({
    model: "tiny",
    prompt: model.tokenizer.encode(prompt),
    max_tokens: 12,
    temperature: 0,
  });
  assert.equal(ids.choices[0].text, whole.choices[0].text);
  const fallback = await c.completions.create({ model: "tiny", prompt, temperature: 0 });
  assert.equal(fallback.usage?.completion_tokens, 16, "completions default to 16 tokens, as OpenAI's do");
});

test("n > 1 gives n indexed choices; a seed makes them reproducible, and they differ", async () => {
  const body = {
    model: "tiny",
    prompt: "import",
    max_tokens: 12,
    temperature: 1.2,
    n: 3,
    seed: 11,
  };
  const a = await t.client().completions.create(body);
  const b = await t.client().completions.create(body);
  assert.deepEqual(
    a.choices.map((ch) => ch.index),
    [0, 1, 2],
  );
  assert.deepEqual(
    a.choices.map((ch) => ch.text),
    b.choices.map((ch) => ch.text),
  );
  assert.ok(new Set(a.choices.map((ch) => ch.text)).size > 1, "siblings draw from different streams");
  assert.equal(a.usage?.prompt_tokens, 1, "the prompt counts once");
  const c = await t.client().completions.create({ ...body, n: 1, seed: 12 });
  assert.notEqual(c.choices[0].text, a.choices[0].text, "another seed, another text");

  let streamedChoices = new Set<number>();
  for await (const chunk of await t.client().chat.completions.create({
    model: "tiny",
    messages: [{ role: "user", content: "hi" }],
    max_tokens: 4,
    n: 2,
    stream: true,
  })) {
    streamedChoices = streamedChoices.add(chunk.choices[0].index);
  }
  assert.deepEqual([...streamedChoices].sort(), [0, 1]);
});

test("logprobs: chat top_logprobs and completion logprobs match the greedy choice", async () => {
  const chat = await t.client().chat.completions.create({
    model: "tiny",
    messages: [{ role: "user", content: "Print hello" }],
    max_tokens: 5,
    temperature: 0,
    logprobs: true,
    top_logprobs: 3,
  });
  const content = chat.choices[0].logprobs!.content!;
  assert.equal(content.length, chat.usage!.completion_tokens);
  for (const entry of content) {
    assert.equal(entry.top_logprobs.length, 3);
    assert.equal(entry.top_logprobs[0].token, entry.token, "greedy takes the most likely token");
    assert.ok(Math.abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-9);
    assert.ok(entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob);
    assert.deepEqual(entry.bytes, [...Buffer.from(entry.token)]);
  }
  assert.equal(content.map((e) => e.token).join(""), chat.choices[0].message.content);

  const text = await t.client().completions.create({
    model: "tiny",
    prompt: "x = ",
    max_tokens: 4,
    temperature: 0,
    logprobs: 2,
  });
  const lp = text.choices[0].logprobs!;
  assert.equal(lp.tokens!.length, 4);
  assert.equal(lp.token_logprobs!.length, 4);
  assert.equal(Object.keys(lp.top_logprobs![0]).length, 2);
  assert.deepEqual(lp.text_offset![0], 0);
  assert.equal(lp.tokens!.join(""), text.choices[0].text);
});

test("a stop string ends the text before it, with finish_reason stop", async () => {
  const body = { model: "tiny", prompt: "def fibonacci(n):\n", max_tokens: 24, temperature: 0 };
  const free = (await t.client().completions.create(body)).choices[0].text;
  const stop = free.slice(6, 9);
  assert.ok(stop.trim().length > 0, `a usable stop string in ${JSON.stringify(free)}`);
  const r = await t.client().completions.create({ ...body, stop: [stop] });
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.equal(r.choices[0].text, free.slice(0, free.indexOf(stop)));
});

test("requests are routed by model; an unknown model is a 404 naming the served ones", async () => {
  const body = { prompt: "class ", max_tokens: 8, temperature: 0 };
  const tiny = await t.client().completions.create({ ...body, model: "tiny" });
  const draft = await t.client().completions.create({ ...body, model: "draft" });
  assert.equal(draft.model, "draft");
  const model = await loadModel(draftDir, { device: "cpu" });
  assert.equal(
    draft.choices[0].text,
    (await model.complete("class ", { maxTokens: 8, temperature: 0 })).text,
  );
  assert.notEqual(tiny.choices[0].text, draft.choices[0].text);
  await assert.rejects(t.client().completions.create({ ...body, model: "gpt-4" }), (e: unknown) => {
    const err = e as { status: number; code: string; message: string };
    return err.status === 404 && err.code === "model_not_found" && /tiny, draft/.test(err.message);
  });
});

test("batching never changes greedy output: each request alone equals it among others", async () => {
  const prompts = [
    "def add(a, b):",
    "import numpy as np\n",
    "# read a file\n",
    "while True:",
    "x = [",
    "class A:",
  ];
  const ask = (prompt: string, max_tokens: number) =>
    t.client().completions.create({ model: "tiny", prompt, max_tokens, temperature: 0 });
  const alone: string[] = [];
  for (const p of prompts) alone.push((await ask(p, 10)).choices[0].text);
  // Staggered: requests join while others decode, and a long one runs beside them.
  const batched = await Promise.all(
    prompts.map(async (p, i) => {
      await new Promise((r) => setTimeout(r, i * 15));
      return (await ask(p, 10)).choices[0].text;
    }),
  );
  assert.deepEqual(batched, alone);
});

test("a repeated prompt prefix comes from the prefix cache and gives the same output", async () => {
  const prompt =
    "def merge_sort(items):\n    if len(items) <= 1:\n        return items\n    middle = len(items) // 2\n" +
    "    left = merge_sort(items[:middle])\n    right = merge_sort(items[middle:])\n";
  const hits = () => t.metric('tachyon_prefix_cache_hit_tokens{model="tiny"}');
  const before = await hits();
  const a = await t.client().completions.create({ model: "tiny", prompt, max_tokens: 6, temperature: 0 });
  const b = await t.client().completions.create({ model: "tiny", prompt, max_tokens: 6, temperature: 0 });
  assert.equal(b.choices[0].text, a.choices[0].text);
  const promptTokens = a.usage!.prompt_tokens;
  assert.equal(
    await hits(),
    before + Math.floor((promptTokens - 1) / 16) * 16,
    "every full block was reused",
  );
});

test("a client that disconnects mid-stream cancels its generation and frees its blocks", async () => {
  const stream = await t.client().completions.create({
    model: "tiny",
    prompt: "def main():\n",
    max_tokens: 1000,
    temperature: 0,
    stream: true,
  });
  let chunks = 0;
  for await (const chunk of stream) {
    if (chunk.choices[0].text && ++chunks < 3) continue;
    const tiny = (await t.health()).find((m) => m.id === "tiny")!;
    assert.equal(tiny.running, 1);
    assert.ok(tiny.kv_blocks_used > 0);
    break; // closes the connection
  }
  await eventually(async () => {
    const tiny = (await t.health()).find((m) => m.id === "tiny")!;
    return tiny.running === 0 && tiny.kv_blocks_used === 0;
  });
  const ok = await t.client().completions.create({ model: "tiny", prompt: "x", max_tokens: 2 });
  assert.equal(ok.choices.length, 1, "and the server goes on serving");
});

/** The usage of a request that asked for speculation (tachyon's extension). */
type SpeculationUsage = CompletionUsage & {
  speculation: { proposed_tokens: number; accepted_tokens: number };
};

test("speculation (an extra body field) keeps the greedy text and reports its counts in usage and /metrics", async () => {
  const ratio = () => t.metric('tachyon_speculation_acceptance_ratio{model="tiny"}');
  const proposed = () => t.metric('tachyon_speculation_proposed_tokens_total{model="tiny"}');
  const accepted = () => t.metric('tachyon_speculation_accepted_tokens_total{model="tiny"}');
  const before = { proposed: await proposed(), accepted: await accepted() };
  const messages = [
    { role: "user" as const, content: "Repeat: x = [1, 2, 3]; x = [1, 2, 3]; x = [1, 2, 3]" },
  ];
  const body = { model: "tiny", messages, max_tokens: 16, temperature: 0 };
  const plain = await t.client().chat.completions.create(body);
  assert.equal((plain.usage as { speculation?: unknown }).speculation, undefined, "no extension unasked");
  const counts = { proposed: 0, accepted: 0 };
  for (const method of ["ngram", "mtp", "draft"]) {
    // Beside a plain request, so the speculating one is verified in a batch.
    const [spec] = await Promise.all([
      t.client().chat.completions.create({ ...body, ...{ speculation: { method } } }),
      t.client().chat.completions.create(body),
    ]);
    assert.equal(spec.choices[0].message.content, plain.choices[0].message.content, method);
    const usage = spec.usage as SpeculationUsage;
    assert.equal(usage.completion_tokens, plain.usage!.completion_tokens);
    assert.ok(usage.speculation.accepted_tokens > 0, `${method}: ${JSON.stringify(usage)}`);
    assert.ok(usage.speculation.accepted_tokens <= usage.speculation.proposed_tokens);
    counts.proposed += usage.speculation.proposed_tokens;
    counts.accepted += usage.speculation.accepted_tokens;
  }

  // Streamed with include_usage: the same text, and the last chunk's usage has the counts.
  const stream = await t.client().chat.completions.create({
    ...body,
    stream: true,
    stream_options: { include_usage: true },
    ...{ speculation: { method: "ngram", k: 6 } },
  });
  let text = "";
  let usage: SpeculationUsage | null = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    usage = (chunk.usage as SpeculationUsage | null) ?? usage;
  }
  assert.equal(text, plain.choices[0].message.content);
  assert.ok(usage!.speculation.accepted_tokens > 0);
  counts.proposed += usage!.speculation.proposed_tokens;
  counts.accepted += usage!.speculation.accepted_tokens;

  assert.equal((await proposed()) - before.proposed, counts.proposed, "every proposed token counted");
  assert.equal((await accepted()) - before.accepted, counts.accepted);
  const r = await ratio();
  assert.ok(r > 0 && r <= 1, `acceptance ratio ${r}`);
  assert.equal(r, (await accepted()) / (await proposed()));
});

test("speculation a model cannot do is refused with a 400 naming the field", async () => {
  const ask = (model: string, method: string) =>
    t.client().completions.create({ model, prompt: "x", max_tokens: 2, ...{ speculation: { method } } });
  for (const [model, method, why] of [
    ["draft", "mtp", /no MTP modules/],
    ["draft", "draft", /no draft model/],
  ] as const) {
    await assert.rejects(ask(model, method), (e: unknown) => {
      const err = e as { status: number; param: string; message: string };
      return err.status === 400 && err.param === "speculation.method" && why.test(err.message);
    });
  }
});

test("GET /metrics exposes queue, batch, latency, KV-cache and speculation figures", async () => {
  const text = await (await fetch(`${t.url}/metrics`)).text();
  for (const name of [
    "tachyon_queue_depth",
    "tachyon_running_requests",
    "tachyon_generated_tokens_per_second",
    "tachyon_generated_tokens_total",
    "tachyon_time_to_first_token_seconds_bucket",
    "tachyon_inter_token_latency_seconds_bucket",
    "tachyon_kv_cache_usage_ratio",
    "tachyon_prefix_cache_hit_tokens",
    "tachyon_speculation_acceptance_ratio",
    "tachyon_speculation_proposed_tokens_total",
    "tachyon_speculation_accepted_tokens_total",
  ]) {
    assert.match(text, new RegExp(`^${name}\\{[^}]*model="tiny"`, "m"), name);
  }
  assert.ok((await t.metric('tachyon_time_to_first_token_seconds_count{model="tiny"}')) > 0);
});
