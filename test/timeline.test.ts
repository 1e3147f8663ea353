/**
 * The kernel timeline's summary (src/backends/cuda/timeline.ts): a kernel's cost is the time from
 * its pass of the wait to the next kernel's, within one graph replay.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { summarise, type TimelineEvent } from "../src/backends/cuda/timeline.js";

/** A replay `run` of kernels passing their waits at `leave` (µs), each having waited `waited` µs. */
function replay(run: number, kernels: [string, number][], waited = 1): TimelineEvent[] {
  return kernels.map(([what, leave]) => ({
    what,
    blocks: 1,
    run,
    arriveNs: (leave - waited) * 1000,
    leaveNs: leave * 1000,
  }));
}

test("timeline: a kernel costs the time to the next kernel's pass, named with the kernel before it", () => {
  const outside = (leave: number) => ({
    what: "argmax_rows",
    blocks: 1,
    run: -1,
    arriveNs: 0,
    leaveNs: leave * 1000,
  });
  const events = [
    { what: "embed", blocks: 1, run: -1, arriveNs: 0, leaveNs: 0 }, // launched outside a graph: not timed
    ...replay(0, [
      ["rmsnorm", 100],
      ["qgemv_m1", 103],
      ["attention_decode", 110],
      ["qgemv_m1", 118],
      ["lm_head", 121],
    ]),
    outside(190), // between the replays, outside any graph
    ...replay(
      1,
      [
        ["rmsnorm", 200],
        ["qgemv_m1", 203],
        ["attention_decode", 212],
        ["qgemv_m1", 220],
        ["lm_head", 225],
      ],
      2,
    ),
  ];
  const { rows, runUs, runs, periodUs, betweenUs, lastUs } = summarise(events);
  assert.equal(runs, 2);
  const by = new Map(rows.map((r) => [r.kernel, r]));
  assert.deepEqual([...by.keys()].sort(), [
    "attention_decode after qgemv",
    "qgemv after attention_decode",
    "qgemv after rmsnorm",
    "rmsnorm (first)",
  ]);
  const qkv = by.get("qgemv after rmsnorm")!;
  assert.equal(qkv.perRun, 1);
  assert.equal(qkv.meanUs, 8); // (7 + 9) / 2
  assert.equal(by.get("qgemv after attention_decode")!.meanUs, 4); // (3 + 5) / 2: lm_head, the last, untimed
  assert.equal(by.get("rmsnorm (first)")!.waitedUs, 1.5);
  assert.equal(rows[0].kernel, "qgemv after rmsnorm", "sorted by share of the step");
  assert.equal(runUs, (21 + 25) / 2);
  assert.equal(periodUs, 100, "one replay's first pass to the next one's");
  assert.equal(betweenUs, 79, "the last pass of replay 0 (121) to the first of replay 1 (200)");
  assert.equal(
    lastUs,
    69,
    "replay 0's last kernel: its pass (121) to the next recorded one, outside the graph (190)",
  );
});

test("timeline: replays that do not follow each other have no period", () => {
  const events = [
    ...replay(0, [
      ["a", 0],
      ["b", 5],
    ]),
    ...replay(2, [
      ["a", 50],
      ["b", 55],
    ]),
  ];
  const { periodUs, betweenUs, lastUs, runs } = summarise(events);
  assert.equal(runs, 2);
  assert.equal(periodUs, null);
  assert.equal(betweenUs, null);
  assert.equal(lastUs, null);
});

test("timeline: nothing replayed, nothing timed", () => {
  assert.deepEqual(summarise([]), {
    rows: [],
    runUs: 0,
    runs: 0,
    periodUs: null,
    betweenUs: null,
    lastUs: null,
  });
});
