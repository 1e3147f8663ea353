/**
 * The model executor: one forward step over the rows of any number of sequences. It owns the
 * backend's KV storage and the block pool, and turns "these tokens for these sequences" into the
 * positions, cache slots and block tables the forward pass needs.
 */
import type { Backend, CapturedGraph, DeviceDraw, KvStorage, StepRows, Tensor } from "../backends/backend.js";
import type { ModelConfig } from "../model/config.js";
import { mtpHidden, mtpLogits } from "../model/mtp.js";
import { forwardHidden, outputLogits, type ModelWeights } from "../model/transformer.js";
import { BlockAllocator, SequenceKv } from "./kv-cache.js";

/** Prompt rows per forward step: bounds activation memory on long prompts. */
export const prefillChunk = 256;

/** Steps of at most this many rows (decode, speculative verification) are replayed as graphs. */
const maxGraphRows = 16;

/**
 * Last-layer hidden states (before the final norm) of a step's rows, which the MTP modules read.
 * They live among the step's activations, so they are valid only until the next step starts.
 */
export interface Hidden {
  readonly tensor: Tensor;
  /** The step they belong to (ModelExecutor counts steps). */
  readonly step: number;
}

/** What a (possibly replayed) graph produced: its output and the hidden states it kept. */
interface Produced {
  output: Tensor;
  hidden: Tensor;
}

export interface StepInput {
  seq: SequenceKv;
  tokens: readonly number[];
  /** Return logits for every row of this input, not only the last (verification, scoring). */
  allLogits?: boolean;
}

/**
 * How an input's tokens are chosen after a step: not at all (a prompt chunk with more to come),
 * by an argmax (of every row with allLogits: a greedy verification) or a draw on the device, or
 * on the host from the logits (host sampling, speculative sampling, logprobs).
 */
export type TokenChoice =
  { by: "none" } | { by: "argmax" } | { by: "draw"; draw: DeviceDraw } | { by: "host" };

/**
 * What a step gives an input: the tokens chosen on the device, or the logits when chosen on the
 * host, one per output row (its last row, or every row with allLogits); and its rows' hidden states.
 */
export interface ChoiceResult {
  tokens?: number[];
  /** [outputRows * vocab]. */
  logits?: Float32Array;
  /** The main model's last-layer states of every row of this input, for the MTP modules. */
  hidden: Hidden;
}

const choiceOrder = { argmax: 0, draw: 1, host: 2, none: 3 } as const;

export interface KvCacheOptions {
  /** Total token slots across all sequences. */
  maxTokens: number;
  /** Longest sequence allowed (prompt + generated), at most the model's max_position_embeddings. */
  contextLength: number;
  blockSize?: number;
}

export class ModelExecutor {
  readonly kv: KvStorage;
  readonly allocator: BlockAllocator;
  readonly blockSize: number;
  readonly contextLength: number;
  private readonly graphs = new Map<string, { graph: CapturedGraph; hidden: Tensor }>();
  /** Steps started so far: tells whether a Hidden is still valid. */
  private steps = 0;
  /**
   * Everything issued since the activations were last reset, as a graph key, or null once
   * something of variable size was. A graph's activation addresses depend on what ran before it
   * in the step, so work that continues a step (the MTP modules after a verification) is captured
   * under this whole history.
   */
  private trail: string | null = "";

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    private readonly weights: ModelWeights,
    cache: KvCacheOptions,
  ) {
    this.blockSize = cache.blockSize ?? 16;
    this.contextLength = Math.min(cache.contextLength, config.maxPositions);
    const numBlocks = Math.ceil(cache.maxTokens / this.blockSize);
    this.allocator = new BlockAllocator(numBlocks);
    this.kv = backend.createKvCache({
      // MTP modules attend like one more layer each, at the same positions.
      numLayers: config.numLayers + config.numMtpModules,
      numBlocks,
      blockSize: this.blockSize,
      numKvHeads: config.numKvHeads,
      headDim: config.headDim,
    });
  }

  /** A new, empty sequence; it shares cached prefix blocks only with sequences of its `prefixFamily`. */
  newSequence(prefixFamily = ""): SequenceKv {
    return new SequenceKv(this.allocator, this.blockSize, prefixFamily);
  }

  /**
   * Appends each input's tokens to its sequence and returns, per input, the logits of its last row
   * ([vocab]) or of all its rows ([rows * vocab]) when allLogits is set.
   */
  step(inputs: readonly StepInput[]): Float32Array[] {
    const logits = this.backend.read(this.run(this.rows(inputs)).output);
    for (const inp of inputs) inp.seq.length += inp.tokens.length;

    const vocab = this.config.vocabSize;
    const out: Float32Array[] = [];
    let row = 0;
    for (const inp of inputs) {
      const n = inp.allLogits ? inp.tokens.length : 1;
      out.push(logits.subarray(row * vocab, (row + n) * vocab));
      row += n;
    }
    return out;
  }

  /** Positions, cache slots and block tables of the inputs' new tokens (reserving blocks). */
  private rows(inputs: readonly StepInput[]): StepRows {
    let count = 0;
    for (const inp of inputs) count += inp.tokens.length;
    const rows: StepRows = {
      tokens: new Int32Array(count),
      positions: new Int32Array(count),
      slots: new Int32Array(count),
      blockTables: new Array<Int32Array>(count),
      outputRows: new Int32Array(0),
    };
    const outputRows: number[] = []; // increasing: a graph keyed by row counts relies on it
    let r = 0;
    for (const { seq, tokens, allLogits } of inputs) {
      seq.reserve(seq.length + tokens.length);
      for (let i = 0; i < tokens.length; i++, r++) {
        rows.tokens[r] = tokens[i];
        rows.positions[r] = seq.length + i;
        rows.slots[r] = seq.slot(seq.length + i);
        (rows.blockTables as Int32Array[])[r] = seq.blockTable;
        if (allLogits || i === tokens.length - 1) outputRows.push(r);
      }
    }
    rows.outputRows = Int32Array.from(outputRows);
    return rows;
  }

  /**
   * Like step, but returns the greedy (argmax) token of each output row, chosen on the device: each
   * input's last row, or all its rows with allLogits (a greedy verification), in input order.
   */
  stepGreedy(inputs: readonly StepInput[]): number[] {
    const rows = this.rows(inputs);
    const ids = this.argmax(this.run(rows).output);
    for (const inp of inputs) inp.seq.length += inp.tokens.length;
    return Array.from(ids);
  }

  /**
   * One step over inputs that choose their tokens in different ways (a server's batch). The
   * forward pass runs once; then each group of output rows goes to its own mechanism, so a
   * sequence's tokens never depend on what it is batched with. A device draw chooses one token,
   * so its input has one output row (no allLogits).
   */
  stepChoosing(inputs: readonly StepInput[], choices: readonly TokenChoice[]): ChoiceResult[] {
    const outputRows = (i: number) => (inputs[i].allLogits ? inputs[i].tokens.length : 1);
    if (inputs.some((_, i) => choices[i].by === "draw" && outputRows(i) > 1)) {
      throw new Error(
        "stepChoosing: a device draw chooses one token; verify proposals by argmax or on the host",
      );
    }
    // Inputs grouped by mechanism (stable order within a group): each group is one slice of the logits.
    const order = [...inputs.keys()].sort((a, b) => choiceOrder[choices[a].by] - choiceOrder[choices[b].by]);
    const { output: logits, hidden } = this.run(this.rows(order.map((i) => inputs[i])));
    for (const inp of inputs) inp.seq.length += inp.tokens.length;
    // Continuations (MTP) of a step of several sequences would multiply graph keys without bound.
    if (inputs.length > 1) this.trail = null;

    const b = this.backend;
    const results = new Array<ChoiceResult>(inputs.length);
    let hiddenRow = 0;
    for (const i of order) {
      const n = inputs[i].tokens.length;
      results[i] = { hidden: { tensor: b.sliceRows(hidden, hiddenRow, n), step: this.steps } };
      hiddenRow += n;
    }
    let row = 0;
    /** The group's inputs and its slice of the logits, each input's output rows in turn. */
    const group = (by: TokenChoice["by"]) => {
      const members = order.filter((i) => choices[i].by === by);
      const counts = members.map(outputRows);
      const total = counts.reduce((n, c) => n + c, 0);
      const slice = b.sliceRows(logits, row, total);
      row += total;
      let at = 0;
      const spans = members.map((i, j) => {
        const from = at;
        at += counts[j];
        return { i, from, to: at };
      });
      return { spans, slice, empty: total === 0 };
    };
    const argmax = group("argmax");
    if (!argmax.empty) {
      const ids = Array.from(this.argmax(argmax.slice));
      for (const { i, from, to } of argmax.spans) results[i].tokens = ids.slice(from, to);
    }
    const draw = group("draw");
    if (!draw.empty) {
      if (!b.sampleRows) throw new Error(`the ${b.name} backend cannot sample on the device`);
      const draws = draw.spans.map(({ i }) => (choices[i] as { draw: DeviceDraw }).draw);
      const ids = b.sampleRows(draw.slice, draws);
      this.trail = null; // the draws' histories decide how much it allocated
      for (const { i, from } of draw.spans) results[i].tokens = [ids[from]];
    }
    const host = group("host");
    if (!host.empty) {
      const all = b.read(host.slice);
      const vocab = this.config.vocabSize;
      for (const { i, from, to } of host.spans) results[i].logits = all.subarray(from * vocab, to * vocab);
    }
    return results;
  }

  /**
   * Continues the latest step with MTP module `depth` over `tokens.length` rows at positions
   * start, start + 1, … of `seq` (already in the main model's cache): row i reads row i of `prev`
   * (depth − 1's hidden states, the main model's for depth 1) and tokens[i], and writes the
   * module's KV-cache layer. With `propose`, also returns the module's greedy token at the last
   * row, chosen on the device. Only ids cross to the host.
   */
  mtpStep(
    seq: SequenceKv,
    depth: number,
    prev: Hidden,
    start: number,
    tokens: readonly number[],
    propose: boolean,
  ): { hidden: Hidden; proposal: number | null } {
    if (prev.step !== this.steps) throw new Error("mtpStep: the hidden states belong to an earlier step");
    const n = tokens.length;
    if (n < 1 || n > prev.tensor.rows || start + n > seq.length) {
      throw new RangeError(`mtpStep: rows [${start}, ${start + n}) are not in the step or the sequence`);
    }
    const b = this.backend;
    const positions = Int32Array.from({ length: n }, (_, i) => start + i);
    const step = b.prepareStep({
      tokens: Int32Array.from(tokens),
      positions,
      slots: positions.map((p) => seq.slot(p)),
      blockTables: new Array<Int32Array>(n).fill(seq.blockTable),
      outputRows: new Int32Array(0),
    });
    const { output, hidden } = this.graphed(`mtp${depth}:${n}:${propose ? 1 : 0}`, n, () => {
      const h = mtpHidden(b, this.weights, this.config, this.kv, depth, b.sliceRows(prev.tensor, 0, n), step);
      const output = propose ? mtpLogits(b, this.weights, this.config, depth, b.sliceRows(h, n - 1, 1)) : h;
      return { output, hidden: h };
    });
    return {
      hidden: { tensor: hidden, step: this.steps },
      proposal: propose ? this.argmax(output)[0] : null,
    };
  }

  /**
   * One forward step. Small steps (decode, verification) on a backend that captures graphs are
   * recorded once per shape and replayed after: the host then issues one launch per step. With
   * `fedFrom`, the step's tokens are the arg-max of those logits, chosen on the device
   * (prepareFedStep), and `ids` waits for them. Such a step has a graph of its own: the backend
   * may have embedded its tokens already, and then its graph starts at the first layer.
   */
  private run(rows: StepRows, fedFrom?: Tensor): Produced & { ids?: () => Int32Array } {
    const b = this.backend;
    b.resetActivations();
    this.steps++;
    this.trail = "";
    const { step, ids } = fedFrom
      ? b.prepareFedStep(rows, fedFrom, this.weights.embed)
      : { step: b.prepareStep(rows), ids: undefined };
    const key = `${rows.tokens.length}:${rows.outputRows.length}${fedFrom ? ":fed" : ""}`;
    const produced = this.graphed(key, rows.tokens.length, () => {
      const hidden = forwardHidden(b, this.weights, this.config, this.kv, step);
      return { output: outputLogits(b, this.weights, this.config, hidden, step), hidden };
    });
    return { ...produced, ids };
  }

  /** Runs `body`, or replays its graph (captured on first use) when it is small and its place in the step is known. */
  private graphed(key: string, rows: number, body: () => Produced): Produced {
    const b = this.backend;
    if (!b.captureGraph || !b.replayGraph || rows > maxGraphRows || this.trail === null) {
      this.trail = null;
      return body();
    }
    this.trail += `>${key}`;
    let entry = this.graphs.get(this.trail);
    if (!entry) {
      let hidden: Tensor | undefined;
      const graph = b.captureGraph(() => {
        const produced = body();
        hidden = produced.hidden;
        return produced.output;
      });
      entry = { graph, hidden: hidden! };
      this.graphs.set(this.trail, entry);
    }
    return { output: b.replayGraph(entry.graph), hidden: entry.hidden };
  }

  /**
   * Enqueues a one-token step of `seq` and reads nothing back: the token is `token`, or with
   * `from` (the one-row logits of the step enqueued just before, nothing between them) its
   * argmax, chosen and fed on the device; `previous` then waits for that argmax. Returns the
   * step's logits, valid until the next step runs. GreedyPipeline drives it.
   */
  enqueueGreedy(
    seq: SequenceKv,
    token: number,
    from?: Tensor,
  ): { logits: Tensor; previous: (() => number) | null } {
    const { output, ids } = this.run(this.rows([{ seq, tokens: [token] }]), from);
    seq.length += 1;
    return { logits: output, previous: ids ? () => ids()[0] : null };
  }

  /** Backend.argmaxRows, noting its fixed-size allocation in the step's trail. */
  argmax(x: Tensor): Int32Array {
    if (this.trail !== null) this.trail += `>argmax${x.rows}`;
    return this.backend.argmaxRows(x);
  }

  /**
   * Scores a whole sequence teacher-forced, in a scratch sequence: the logits at every position
   * ([T * vocab]) and, for MTP depths 1..mtpDepths, the depth-k logits at positions 0..T-1-k
   * ([(T - k) * vocab]; row i predicts token i + k + 1 from token i + k).
   */
  score(tokens: readonly number[], mtpDepths = 0): { logits: Float32Array; mtpLogits: Float32Array[] } {
    if (mtpDepths > this.config.numMtpModules) {
      throw new RangeError(`the model has ${this.config.numMtpModules} MTP modules, asked for ${mtpDepths}`);
    }
    const b = this.backend;
    this.steps++;
    this.trail = null;
    const T = tokens.length;
    const V = this.config.vocabSize;
    const seq = this.newSequence();
    try {
      seq.reserve(T);
      // Rows at positions [start, end) reading toks[start, end); every row is an output row.
      const step = (toks: readonly number[], start: number, end: number) => {
        const positions = Int32Array.from({ length: end - start }, (_, i) => start + i);
        return b.prepareStep({
          tokens: Int32Array.from(toks.slice(start, end)),
          positions,
          slots: positions.map((p) => seq.slot(p)),
          blockTables: new Array<Int32Array>(end - start).fill(seq.blockTable),
          outputRows: positions.map((_, i) => i),
        });
      };
      const logits = new Float32Array(T * V);
      const mtpLogitsOut = Array.from(
        { length: Math.min(mtpDepths, T - 1) },
        (_, k) => new Float32Array((T - k - 1) * V),
      );
      // Chunks of at most the backend's step size, each through the main model and then every
      // depth (depth k at position i reads token i + k: its tokens are the sequence shifted by k).
      const chunk = b.maxStepRows ?? T;
      for (let start = 0; start < T; start += chunk) {
        const end = Math.min(T, start + chunk);
        b.resetActivations();
        const main = step(tokens, start, end);
        let hidden = forwardHidden(b, this.weights, this.config, this.kv, main);
        logits.set(b.read(outputLogits(b, this.weights, this.config, hidden, main)), start * V);
        mtpLogitsOut.forEach((out, k) => {
          const depth = k + 1;
          const n = Math.min(end, T - depth) - start;
          if (n <= 0) return;
          const rows = step(tokens.slice(depth), start, start + n);
          hidden = mtpHidden(b, this.weights, this.config, this.kv, depth, b.sliceRows(hidden, 0, n), rows);
          out.set(b.read(mtpLogits(b, this.weights, this.config, depth, hidden)), start * V);
        });
      }
      return { logits, mtpLogits: mtpLogitsOut };
    } finally {
      seq.free();
    }
  }
}
