/**
 * The server under pressure and at its end: a full queue answers 429 with Retry-After; shutting
 * down lets streams in flight finish, or ends them cleanly at the deadline; `tachyon serve` exits
 * cleanly on SIGTERM after finishing its requests.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServe } from "../bench/load-test.js";
import { draftDir, startTestServer } from "./server-harness.js";

/** Reads a raw SSE completion stream to its end: the data lines, [DONE] included. */
async function sseEvents(url: string, body: object): Promise<string[]> {
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...body, stream: true }),
  });
  assert.equal(res.status, 200);
  const text = await res.text();
  return text
    .split("\n\n")
    .filter((e) => e.startsWith("data: "))
    .map((e) => e.slice(6));
}

const finishReason = (events: string[]): string =>
  (JSON.parse(events.at(-2)!) as { choices: { finish_reason: string }[] }).choices[0].finish_reason;

test("a full queue answers 429 with Retry-After, and the requests it took all complete", async () => {
  const t = await startTestServer({
    models: [{ name: "draft", dir: draftDir }],
    scheduler: { maxRunning: 1, maxWaiting: 1 },
  });
  try {
    const replies = await Promise.all(
      Array.from({ length: 6 }, () =>
        fetch(`${t.url}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "draft", prompt: "def", max_tokens: 8 }),
        }),
      ),
    );
    const statuses = replies.map((r) => r.status);
    assert.ok(statuses.includes(429), `some refused: ${statuses}`);
    assert.ok(statuses.includes(200), `some served: ${statuses}`);
    for (const r of replies) {
      const body = (await r.json()) as { error?: { code: string }; choices?: unknown[] };
      if (r.status === 429) {
        assert.equal(r.headers.get("retry-after"), "1");
        assert.equal(body.error?.code, "rate_limit_exceeded");
      } else {
        assert.equal(body.choices?.length, 1);
      }
    }
  } finally {
    await t.close();
  }
});

test("shutdown lets a stream in flight finish and refuses new requests", async () => {
  const t = await startTestServer({ models: [{ name: "draft", dir: draftDir }] });
  const events = sseEvents(t.url, { model: "draft", prompt: "import", max_tokens: 40, ignore_eos: true });
  await new Promise((r) => setTimeout(r, 100));
  const closed = t.server.shutdown(10_000);
  const refused = await fetch(`${t.url}/v1/completions`, { method: "POST", body: "{}" }).then(
    (r) => r.status,
    () => "connection refused",
  );
  assert.ok(refused === 503 || refused === "connection refused", `refused: ${refused}`);
  const done = await events;
  assert.equal(done.at(-1), "[DONE]");
  assert.equal(finishReason(done), "length");
  await closed;
});

test("at the shutdown deadline, streams still running end cleanly with finish_reason abort", async () => {
  const t = await startTestServer({ models: [{ name: "draft", dir: draftDir }] });
  const events = sseEvents(t.url, { model: "draft", prompt: "import", max_tokens: 1500, ignore_eos: true });
  await new Promise((r) => setTimeout(r, 100));
  await t.server.shutdown(50);
  const done = await events;
  assert.equal(done.at(-1), "[DONE]");
  assert.equal(finishReason(done), "abort");
  assert.equal(t.models.get("draft").scheduler.stats().kvBlocksUsed, 0);
});

test("tachyon serve finishes its requests on SIGTERM, then exits 0", async () => {
  // The model is its own draft model here: a request speculating with it runs as any other.
  const { url, child } = await startServe(["--model", `draft=${draftDir}`, "--draft-model", draftDir]);
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  const events = sseEvents(url, {
    model: "draft",
    prompt: "def",
    max_tokens: 30,
    ignore_eos: true,
    speculation: { method: "draft" },
  });
  await new Promise((r) => setTimeout(r, 100));
  child.kill("SIGTERM");
  const done = await events;
  assert.equal(finishReason(done), "length");
  assert.equal(await exited, 0);
});
