/**
 * A bounded load test on loopback (the full-size one is bench/load-test.ts): 64 concurrent
 * streaming clients, every request completes whole, none fails or is lost, and every KV block is
 * back in the pool at the end; the same with every request speculating.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { kvBlocksInUse, runLoad } from "../bench/load-test.js";
import { draftDir, startTestServer } from "./server-harness.js";

test("64 concurrent streams, 256 requests: all complete, no block leaks", async () => {
  const t = await startTestServer({ models: [{ name: "draft", dir: draftDir }] });
  try {
    const r = await runLoad({ url: t.url, model: "draft", concurrency: 64, requests: 256, maxTokens: 4 });
    assert.deepEqual(r.errors, []);
    assert.equal(r.completed, 256);
    assert.equal(r.incomplete, 0);
    assert.ok(r.completion_tokens > 256, "streams generated tokens");
    assert.deepEqual(await kvBlocksInUse(t.url), { draft: 0 });
    assert.equal(await t.metric('tachyon_running_requests{model="draft"}'), 0);
    assert.equal(await t.metric('tachyon_queue_depth{model="draft"}'), 0);
  } finally {
    await t.close();
  }
});

test("32 concurrent speculating streams: all complete with their counts, no block leaks", async () => {
  const t = await startTestServer({ models: [{ name: "draft", dir: draftDir }] });
  try {
    const r = await runLoad({
      url: t.url,
      model: "draft",
      concurrency: 32,
      requests: 64,
      maxTokens: 12,
      ignoreEos: true,
      speculation: { method: "ngram" },
    });
    assert.deepEqual(r.errors, []);
    assert.equal(r.completed, 64, "each with its usage's speculation counts");
    assert.equal(r.completion_tokens, 64 * 12);
    assert.ok(r.speculation!.proposed_tokens > 0);
    assert.deepEqual(await kvBlocksInUse(t.url), { draft: 0 });
  } finally {
    await t.close();
  }
});
