import { test } from "node:test";
import assert from "node:assert/strict";
import { StopStringMatcher } from "../src/engine/stop-strings.js";

/** Feeds deltas and returns everything shown plus whether it stopped. */
function run(stops: string[], deltas: string[]): { shown: string; stopped: boolean } {
  const m = new StopStringMatcher(stops);
  let shown = "";
  for (const d of deltas) {
    const r = m.push(d);
    shown += r.text;
    if (r.stopped) return { shown, stopped: true };
  }
  return { shown: shown + m.flush(), stopped: false };
}

test("no stop strings passes text through", () => {
  assert.deepEqual(run([], ["a", "b"]), { shown: "ab", stopped: false });
});

test("a stop string split across deltas is cut, with nothing after it shown", () => {
  assert.deepEqual(run(["\n\n"], ["def f():", "\n", "\n", "print()"]), { shown: "def f():", stopped: true });
  assert.deepEqual(run(["END"], ["abcE", "N", "Dxyz"]), { shown: "abc", stopped: true });
});

test("held-back prefixes are released when they turn out not to be a stop string", () => {
  const m = new StopStringMatcher(["STOP"]);
  assert.equal(m.push("xxST").text, "xx");
  assert.equal(m.push("Ay").text, "STAy");
  assert.equal(m.flush(), "");
});

test("the earliest of several stop strings wins", () => {
  assert.deepEqual(run(["cd", "b"], ["abcd"]), { shown: "a", stopped: true });
});

test("random deltas: shown text equals the text before the first stop occurrence", () => {
  for (let iter = 0; iter < 300; iter++) {
    const alphabet = "abc\n";
    let full = "";
    for (let i = 0; i < 40; i++) full += alphabet[Math.floor(Math.random() * alphabet.length)];
    const stops = ["ab", "c\nc", "aaa"];
    const deltas: string[] = [];
    for (let i = 0; i < full.length;) {
      const n = 1 + Math.floor(Math.random() * 4);
      deltas.push(full.slice(i, i + n));
      i += n;
    }
    const first = Math.min(...stops.map((s) => (full.includes(s) ? full.indexOf(s) : Infinity)));
    const expected = Number.isFinite(first) ? full.slice(0, first) : full;
    assert.deepEqual(
      run(stops, deltas),
      { shown: expected, stopped: Number.isFinite(first) },
      JSON.stringify(deltas),
    );
  }
});
