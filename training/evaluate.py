#!/usr/bin/env python3
"""Score a saved tachyon code model on the held-out set and (optionally) write the engine's
reference fixtures.

    python3 training/evaluate.py --model models/tachyon-code-tiny --fixtures test/fixtures/embedded \
        --results /tmp/eval-tiny.json
    python3 training/evaluate.py --model models/tachyon-code-draft --results /tmp/eval-draft.json

Needs the held-out files that train.py left in --work (heldout.json). Every number comes from the
saved folder reloaded by transformers in fp32 with eager attention (TF32 off), so it is fp32 math
on exactly the stored bf16 weights:

- heldout_full: the held-out files, each followed by <|endoftext|> (special-token strings inside
  files encoded as text, as in training), cut into non-overlapping 512-token windows (the last one
  shorter); perplexity = exp(mean next-token CE over every prediction inside a window).
- heldout_sample: heldout-sample.txt (~4 KB prefix of one held-out file) encoded with the model's
  tokenizer, no BOS, scored as one sequence (it is longer than the 512 tokens seen in training).
- MTP (models with mtp.* tensors): teacher-forced top-1 accuracy and CE of each depth on the same
  windows; depth k at position i reads t[i+k] and predicts t[i+k+1], both inside the window.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bpe  # noqa: E402
from corpus import path_hash  # noqa: E402
from model import causal_mask, load_model  # noqa: E402

WINDOW = 512
SAMPLE_CHARS = 4096
PROMPT_TARGETS = (20, 60)
GREEDY_STEPS = 32
FIB = "def fibonacci(n):"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def usable(text: str) -> bool:
    return text.isascii() and "<|" not in text and "\t" not in text


def pick_texts(docs: list[list[str]], tok: Tokenizer) -> tuple[str, list[str]]:
    """Deterministic held-out sample (~4 KB file prefix) and two code prompts (~20 and ~60 tokens,
    from the first top-level def/class of two other held-out files)."""
    order = sorted(docs, key=lambda d: path_hash(d[0], "sample"))
    sample, used = None, set()
    for pid, text in order:
        if usable(text) and len(text) >= SAMPLE_CHARS and "def " in text:
            cut = text[:SAMPLE_CHARS]
            sample = cut[: cut.rfind("\n") + 1]
            used.add(pid)
            log(f"sample: {len(sample)} chars from {pid}")
            break
    if sample is None:  # no single file is long enough: whole files, then a prefix of the last
        sample = ""
        for pid, text in order:
            if usable(text) and len(sample) < SAMPLE_CHARS:
                sample += text[: SAMPLE_CHARS - len(sample)]
                used.add(pid)
        sample = sample[: sample.rfind("\n") + 1]
        log(f"sample: {len(sample)} chars from {len(used)} files")
    prompts = []
    for target in PROMPT_TARGETS:
        for pid, text in order:
            if pid in used or not usable(text):
                continue
            m = re.search(r"^(def|class) ", text, re.M)
            if not m:
                continue
            src = text[m.start() :]
            snippet = None
            for w in re.finditer(r"\s*\S+", src):
                cand = src[: w.end()]
                if len(tok.encode(cand, add_special_tokens=False).ids) >= target:
                    snippet = cand
                    break
            if snippet:
                prompts.append(snippet)
                used.add(pid)
                log(f"prompt ~{target} tokens from {pid}")
                break
    return sample, prompts


@torch.no_grad()
def windows_eval(model, stream: np.ndarray, dev, batch: int = 32) -> dict:
    """Perplexity (transformers logits) and per-depth MTP CE / top-1 over 512-token windows."""
    n_mtp = len(model.mtp)
    ce = [0.0] * (1 + n_mtp)
    hit = [0] * (1 + n_mtp)
    cnt = [0] * (1 + n_mtp)
    starts = list(range(0, len(stream) - 1, WINDOW))
    for b in range(0, len(starts), batch):
        group = [stream[s : s + WINDOW] for s in starts[b : b + batch]]
        for length in sorted({len(g) for g in group}):  # the last window is shorter
            x = torch.tensor(np.stack([g for g in group if len(g) == length]).astype(np.int64), device=dev)
            hf = model.lm(input_ids=x).logits
            lgs = model.logits(model.hidden(x, causal_mask(length, dev)))
            lgs[0] = hf
            for k, lg in enumerate(lgs):
                rows = length - k - 1  # positions whose target t[i+k+1] is inside the window
                if rows <= 0:
                    continue
                pred, tgt = lg[:, :rows], x[:, k + 1 : k + 1 + rows]
                ce[k] += F.cross_entropy(pred.flatten(0, 1), tgt.flatten(), reduction="sum").item()
                hit[k] += (pred.argmax(-1) == tgt).sum().item()
                cnt[k] += tgt.numel()
    out = {
        "windows": len(starts),
        "stream_tokens": int(len(stream)),
        "scored": cnt[0],
        "perplexity": math.exp(ce[0] / cnt[0]),
        "ce_main": ce[0] / cnt[0],
        "top1_main": hit[0] / cnt[0],
    }
    if n_mtp:
        out["mtp"] = [
            {"depth": k, "ce": ce[k] / cnt[k], "top1": hit[k] / cnt[k], "scored": cnt[k]} for k in range(1, 1 + n_mtp)
        ]
    return out


@torch.no_grad()
def greedy(lm, ids: list[int], steps: int) -> tuple[list[int], float]:
    """Greedy continuation with a full forward at every step (no cache); min top1-top2 margin."""
    seq, out, margin = list(ids), [], float("inf")
    dev = next(lm.parameters()).device
    for _ in range(steps):
        logits = lm(input_ids=torch.tensor([seq], device=dev)).logits[0, -1]
        top = torch.topk(logits, 2)
        margin = min(margin, float(top.values[0] - top.values[1]))
        seq.append(int(top.indices[0]))
        out.append(seq[-1])
    return out, margin


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tachyon-work"))
    ap.add_argument("--fixtures", type=Path, default=None, help="write heldout-sample.txt + reference.* here")
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    hf_tok = AutoTokenizer.from_pretrained(str(args.model))
    docs = json.loads((args.work / "heldout.json").read_text(encoding="utf-8"))
    ids = bpe.encode_docs(bpe.corpus_encoder(tok), [t for _, t in docs])
    eot = np.array([bpe.EOT], dtype=np.uint16)
    stream = np.concatenate([x for a in ids for x in (a, eot)])

    model, info = load_model(args.model, torch.float32, "eager", dev)
    log(f"{args.model.name}: {type(model.lm).__name__}, {len(model.mtp)} MTP modules, tokenizer "
        f"{type(hf_tok).__name__}, unexpected keys {len(info.get('unexpected_keys') or [])}")
    t0 = time.time()
    res: dict = {"model": args.model.name, "transformers": transformers.__version__,
                 "torch": torch.__version__.split("+")[0]}
    res["heldout_full"] = windows_eval(model, stream, dev)
    log(f"held-out full ({time.time() - t0:.1f}s): {json.dumps(res['heldout_full'])}")

    sample, prompt_texts = pick_texts(docs, tok)
    sample_ids = tok.encode(sample, add_special_tokens=False).ids
    if [int(i) for i in hf_tok(sample, add_special_tokens=False)["input_ids"]] != sample_ids:
        log("SURPRISE: AutoTokenizer and tokenizer.json differ on the sample")
    x = torch.tensor([sample_ids], device=dev)
    lg = model.lm(input_ids=x).logits[0, :-1]
    res["heldout_sample"] = {
        "tokens": len(sample_ids),
        "perplexity": math.exp(F.cross_entropy(lg, x[0, 1:]).item()),
        "perplexity_512_windows": windows_eval(model, np.array(sample_ids), dev)["perplexity"],
    }
    log(f"held-out sample: {json.dumps(res['heldout_sample'])}")

    fib_ids = tok.encode(FIB, add_special_tokens=False).ids
    g, _ = greedy(model.lm, fib_ids, 100)
    res["fibonacci_greedy_100"] = tok.decode(fib_ids + g, skip_special_tokens=False)
    log("greedy 100 tokens after 'def fibonacci(n):':\n" + res["fibonacci_greedy_100"])

    if args.fixtures:
        # The reference tensors are computed on the CPU, like the other fixtures.
        cpu_model, _ = load_model(args.model, torch.float32, "eager", "cpu")
        prompts = []
        tensors = {}
        greedy_ids, margins = [], []
        for p, text in enumerate([FIB] + prompt_texts):
            pids = [int(i) for i in hf_tok(text, add_special_tokens=True)["input_ids"]]
            if pids != tok.encode(text).ids:
                log(f"SURPRISE: AutoTokenizer and tokenizer.json differ on prompt {p}")
            prompts.append({"text": text, "ids": pids})
            t = torch.tensor([pids])
            tensors[f"logits.{p}"] = cpu_model.lm(input_ids=t).logits[0].float().contiguous()
            hs = cpu_model.hidden(t, causal_mask(len(pids), "cpu"))
            for k, lgk in enumerate(cpu_model.logits(hs)[1:], start=1):
                tensors[f"mtp_logits.{k}.{p}"] = lgk[0].float().contiguous()
            gi, mm = greedy(cpu_model.lm, pids, GREEDY_STEPS)
            greedy_ids.append(gi)
            margins.append(round(mm, 6))
            log(f"prompt {p}: {len(pids)} tokens, greedy margin {mm:.4f}: {tok.decode(gi)!r}")
        full = res["heldout_full"]
        ref = {
            "model": args.model.name,
            "perplexity": {
                "heldout_full": full["perplexity"],
                "heldout_sample": res["heldout_sample"]["perplexity"],
                "tokens_full": full["stream_tokens"],
                "tokens_sample": res["heldout_sample"]["tokens"],
                "method_full": "held-out files each followed by <|endoftext|>, non-overlapping 512-token "
                "windows (last one shorter), every next-token prediction inside a window; "
                f"{full['scored']} predictions",
                "method_sample": "heldout-sample.txt encoded without special tokens as one sequence; "
                f"{res['heldout_sample']['tokens'] - 1} predictions",
            },
            "prompts": prompts,
            "greedy": greedy_ids,
            "greedy_min_margin": margins,
            "mtp": {
                "depths": len(cpu_model.mtp),
                "tensors": "mtp_logits.{k}.{p}: [T-k, vocab], row i = logits_k at position i (input t[i+k])",
                "heldout_top1": [m["top1"] for m in full.get("mtp", [])],
            },
            "dtype": "bfloat16 weights, fp32 eager reference",
            "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
        }
        args.fixtures.mkdir(parents=True, exist_ok=True)
        (args.fixtures / "heldout-sample.txt").write_text(sample, encoding="utf-8")
        (args.fixtures / "reference.json").write_text(json.dumps(ref, indent=1) + "\n", encoding="utf-8")
        save_file(tensors, str(args.fixtures / "reference.safetensors"), metadata={"format": "pt"})
        log(f"fixtures: {sorted(p.name for p in args.fixtures.iterdir())}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
