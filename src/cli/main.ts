#!/usr/bin/env node
/**
 * The `tachyon` command. Subcommands live in their own files; this one dispatches and turns
 * input errors into one clear line (no stack trace) with a non-zero exit code.
 */
import { TachyonError } from "../errors.js";
import { benchCommand } from "./bench.js";
import { evalCommand } from "./eval.js";
import { infoCommand } from "./info.js";
import { quantizeCommand } from "./quantize.js";
import { runCommand } from "./run.js";
import { serveCommand } from "./serve.js";

const usage = `tachyon — fast LLM inference for Node.js

Usage:
  tachyon run  [--model DIR] [--prompt TEXT | --chat] [options]   generate text (streams to stdout)
  tachyon info [--model DIR]                                      architecture, parameters, memory
  tachyon eval [--model DIR] --file TEXT                          held-out perplexity (+ MTP acceptance)
  tachyon bench [--shape NAME] [--weights W] [--device D] [--out F] batch-1 decode speed on random weights
  tachyon serve [--model [NAME=]DIR ...] [--port N] [--host H]    OpenAI-compatible server (continuous batching)
  tachyon quantize [--model DIR] --to FORMAT --out DIR [options]  fp8/int8/int4/int2 copy of a 16-bit model

Run options:
  --model DIR              Hugging Face model folder (default: the embedded tachyon-code-tiny)
  --prompt TEXT            text to continue (default: "def fibonacci(n):\n")
  --chat                   chat through the model's template; with --prompt, one turn, else interactive
  --system TEXT            system message for --chat
  --max-tokens N           most tokens to generate (default 128)
  --temperature T          0 = greedy (default 0.7)
  --top-k K  --top-p P  --min-p P
  --repetition-penalty R  --presence-penalty P  --frequency-penalty F
  --seed N                 reproducible sampling
  --stop TEXT              stop string (repeatable)
  --logprobs N             print each token's log-probability and N alternatives
  --json                   print one JSON document (text, tokens, logprobs, statistics) instead of text
  --spec mtp|draft|ngram|none  speculative decoding (same output, more tokens per step): the model's
                           MTP modules, a draft model, or n-gram lookup in the text so far (default none)
  --spec-k N               most tokens proposed per step (default 4; MTP: its module count)
  --spec-fixed             propose --spec-k tokens every step instead of adapting to acceptance
  --draft-model DIR        draft model for --spec draft, same tokenizer (default with the embedded
                           model: the embedded tachyon-code-draft)
  --device auto|cpu|cuda   where to run (default auto)
  --max-context N          KV cache reserved for prompt + completion (default: model's, up to 4096)
  --gpu-memory-fraction F  share of the GPU's memory tachyon may use (default 0.9)

Bench options (speculation):
  --spec oracle            also measure speculation at fixed accepted lengths: the target's own
                           greedy tokens are proposed, all accepted (random weights accept nothing)
  --spec-accepted L,...    accepted lengths to measure (default 1,2,3,4)

Serve options (and --device, --max-context, --gpu-memory-fraction as above):
  --model [NAME=]DIR       a model to serve, requested as NAME (default: the folder's name); repeatable
  --shape NAME             also serve a random-weight model of a bench shape (e.g. llama-3-8b), named NAME
  --draft-model DIR        draft model for requests with speculation {"method": "draft"} (same tokenizer)
  --host H  --port N       where to listen (default 127.0.0.1:8000; port 0 picks a free one)
  --api-key KEY            require "Authorization: Bearer KEY" on /v1 routes; repeatable
  --kv-cache-tokens N      KV-cache token slots per model, shared by all requests (default 16384)
  --max-batch-tokens N     tokens per batched step: decode rows, prompt chunks, then speculation's
                           proposed tokens (default 256)
  --max-running N          sequences generated at once (default 64)
  --max-queue N            sequences waiting before requests get 429 (default 256)
  --max-body-bytes N       largest request body (default 4194304)
  --shutdown-timeout S     on SIGINT/SIGTERM, seconds to let requests finish (default 30)

Quantize options (formats: docs/QUANTIZATION.md):
  --to fp8|int8|int4|int2  fp8: e4m3, 128×128 block scales (DeepSeek-V3 layout); int8: symmetric, one
                           scale per row; int4/int2: scale + offset per group of inputs
  --group-size 128|64|32   inputs per scale for int4 (default 128), int2 (default 32), int8
  --method rtn|gptq        round-to-nearest (default), or GPTQ (int4/int2; needs --calibration)
  --calibration FILE       text like what the model will see, for GPTQ (repeatable)
  --calibration-tokens N   calibration tokens used (default 1024)
  --keep PATTERN           leave modules whose name contains PATTERN in 16 bits (repeatable),
                           e.g. --keep model.layers.0. --keep mlp.down_proj
  --quantize-lm-head       quantize the LM head too (default: kept in 16 bits, like the embeddings)
  --out DIR                the new model folder (must not exist; written completely or not at all)
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "run":
      return runCommand(rest);
    case "info":
      return infoCommand(rest);
    case "bench":
      return benchCommand(rest);
    case "eval":
      return evalCommand(rest);
    case "serve":
      return serveCommand(rest);
    case "quantize":
      return quantizeCommand(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(usage);
      return 0;
    default:
      throw new TachyonError(`unknown command "${command}"; try "tachyon help"`, "argument");
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (
      err instanceof TachyonError ||
      String((err as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS")
    ) {
      process.stderr.write(`tachyon: ${(err as Error).message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(
        `tachyon: internal error (please report): ${(err as Error).stack ?? String(err)}\n`,
      );
      process.exitCode = 1;
    }
  },
);
