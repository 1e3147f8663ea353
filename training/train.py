#!/usr/bin/env python3
"""Train a tachyon code model on one GPU, on a wall-clock budget.

    python3 training/train.py --kind main  --out models/tachyon-code-tiny  --seconds 300
    python3 training/train.py --kind draft --out models/tachyon-code-draft --seconds 150 \
        --tokenizer models/tachyon-code-tiny

Steps: build the corpus (corpus.py) and write data-manifest.json; train the BPE tokenizer on a
~100 MB sample of the training split (or reuse --tokenizer); encode the training split into one
stream of documents joined by <|endoftext|>; train; save the folder (model.py); check that
transformers loads it and reproduces the training model's logits; score the held-out set.

Training: bf16 autocast, AdamW (0.9, 0.95, wd 0.1 on matrices), linear warmup then cosine decay
to 10% of the peak, 512-token windows of the packed stream in a seeded random order (epochs
without replacement), gradient clipping at 1. The number of steps is set after timing the first
steps so that the loop takes --seconds; the cosine ends exactly at that step.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bpe  # noqa: E402
import corpus as corpus_mod  # noqa: E402
from model import SHAPES, causal_mask, count_params, load_model, new_model, save_model  # noqa: E402

TOKENIZER_SAMPLE_BYTES = 100_000_000
MTP_WEIGHT = 0.3
HYPER = {
    # peak lr, warmup steps
    "main": (3e-3, 150),
    "draft": (4e-3, 150),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def prepare_data(args) -> tuple[np.ndarray, Tokenizer, dict]:
    """Corpus → manifest, tokenizer, packed training stream; held-out docs saved for evaluate.py."""
    t0 = time.time()
    c = corpus_mod.build_corpus(log)
    manifest = corpus_mod.manifest(c)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "data-manifest.json").write_text(corpus_mod.dump_manifest(manifest), encoding="utf-8")
    train_docs = c.train()
    held = c.heldout()
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "heldout.json").write_text(json.dumps([[d.path_id, d.text] for d in held]), encoding="utf-8")
    log(f"data: {len(train_docs)} train files, {len(held)} held-out files ({time.time() - t0:.1f}s)")

    info: dict = {}
    if args.tokenizer and (args.tokenizer / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
        for f in ("tokenizer.json", "tokenizer_config.json"):
            if args.tokenizer.resolve() != args.out.resolve():
                shutil.copy2(args.tokenizer / f, args.out / f)
        log(f"tokenizer: reused {args.tokenizer}")
    else:
        t1 = time.time()
        total = sum(len(d.text) for d in train_docs)
        frac = min(1.0, TOKENIZER_SAMPLE_BYTES / max(1, total))
        sample = [d.text for d in train_docs if corpus_mod.path_hash(d.path_id, "tokenizer") / 2**64 < frac]
        info["tokenizer_sample"] = {"files": len(sample), "chars": sum(map(len, sample))}
        tok = bpe.train_tokenizer(sample)
        bpe.save_tokenizer(tok, args.out)
        tok = Tokenizer.from_file(str(args.out / "tokenizer.json"))
        log(f"tokenizer: trained on {len(sample)} files / {info['tokenizer_sample']['chars'] / 1e6:.1f}M chars "
            f"({time.time() - t1:.1f}s)")

    t2 = time.time()
    ids = bpe.encode_docs(bpe.corpus_encoder(tok), [d.text for d in train_docs])
    eot = np.array([bpe.EOT], dtype=np.uint16)
    stream = np.concatenate([x for a in ids for x in (a, eot)])
    chars = sum(len(d.text) for d in train_docs)
    info["train_tokens"] = int(stream.size)
    info["chars_per_token"] = round(chars / stream.size, 3)
    log(f"encode: {stream.size / 1e6:.1f}M tokens, {chars / stream.size:.2f} chars/token ({time.time() - t2:.1f}s)")
    return stream, tok, info


class Batches:
    """Windows of `length` tokens starting at multiples of `stride`, in a seeded random order,
    reshuffled every epoch."""

    def __init__(self, stream: np.ndarray, length: int, stride: int, batch: int, seed: int, device):
        self.data = torch.from_numpy(stream.astype(np.int32)).to(device)
        self.n = (len(stream) - length) // stride + 1
        self.stride, self.batch = stride, batch
        self.offsets = torch.arange(length, device=device)
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch, self.cursor = 0, 0
        self.order = torch.randperm(self.n, generator=self.gen)

    def next(self) -> torch.Tensor:
        if self.cursor + self.batch > self.n:
            self.order = torch.randperm(self.n, generator=self.gen)
            self.cursor = 0
            self.epoch += 1
        starts = self.order[self.cursor : self.cursor + self.batch].to(self.data.device) * self.stride
        self.cursor += self.batch
        return self.data[starts[:, None] + self.offsets[None]].long()


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then cosine from peak to 0.1 × peak at step `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * p)))


def train(args, stream: np.ndarray) -> tuple[torch.nn.Module, dict]:
    dev = torch.device("cuda")
    seed_all(args.seed)
    model = new_model(args.kind).to(dev)
    main_p, mtp_p = count_params(model)
    n_mtp = len(model.mtp)
    log(f"model {args.kind}: {main_p / 1e6:.3f}M main params, {mtp_p / 1e6:.3f}M MTP params, "
        f"attn {model.lm.config._attn_implementation}")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.0, betas=(0.9, 0.95), eps=1e-8, fused=True,
    )
    peak, warmup = HYPER[args.kind]
    seq, bsz = args.seq, args.batch
    batches = Batches(stream, seq + 1 + n_mtp, seq, bsz, args.seed, dev)

    measure_from, measure_to = 5, 30
    total = 10**9  # until measured
    log_every = 10
    history = []
    acc = torch.zeros(1 + n_mtp, device=dev)
    acc_n = 0
    t_start = time.time()
    budget = min(args.seconds, args.end_by - t_start) if args.end_by else args.seconds
    step = 0
    model.train()
    while step < total:
        lr = lr_at(step, peak, warmup, total)
        for g in opt.param_groups:
            g["lr"] = lr
        x = batches.next()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses = model.losses(x, seq)
        loss = losses[0] + (MTP_WEIGHT * sum(losses[1:]) / n_mtp if n_mtp else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc += torch.stack([l.detach() for l in losses])
        acc_n += 1
        step += 1

        if step in (measure_from, measure_to):
            torch.cuda.synchronize()
            if step == measure_from:
                t_measure = time.time()
            else:
                sec = (time.time() - t_measure) / (measure_to - measure_from)
                left = budget - (time.time() - t_start)
                total = max(warmup + 50, measure_to + int(left / sec))
                log_every = max(10, total // 150)
                log(f"throughput: {sec * 1000:.1f} ms/step = {bsz * seq / sec / 1e6:.2f}M tokens/s; "
                    f"budget {budget:.0f}s -> {total} steps ({total * bsz * seq / 1e6:.0f}M tokens)")
        if step % log_every == 0 or step == total or step == 1:
            vals = (acc / acc_n).tolist()
            entry = {"step": step, "tokens": step * bsz * seq, "lr": round(lr, 7),
                     "loss": round(vals[0], 4), "elapsed_s": round(time.time() - t_start, 1)}
            if n_mtp:
                entry["loss_mtp"] = [round(v, 4) for v in vals[1:]]
            history.append(entry)
            acc.zero_()
            acc_n = 0
            if step % (log_every * 10) == 0 or step == total or step <= 1:
                log(f"step {step}/{total} lr {lr:.2e} loss {vals[0]:.4f}"
                    + (f" mtp {[round(v, 3) for v in vals[1:]]}" if n_mtp else "")
                    + f" epoch {batches.epoch} {time.time() - t_start:.0f}s")
            if not math.isfinite(vals[0]):
                raise RuntimeError("loss is not finite")
        if args.end_by and time.time() > args.end_by + 20:
            log(f"WARNING: wall clock exceeded; stopping at step {step} of {total}")
            break
    torch.cuda.synchronize()
    elapsed = time.time() - t_start
    tokens = step * bsz * seq
    stats = {
        "kind": args.kind,
        "shape": dict(zip(["hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "mtp"], SHAPES[args.kind])),
        "params_main": main_p,
        "params_mtp": mtp_p,
        "seed": args.seed,
        "batch": bsz,
        "seq_len": seq,
        "peak_lr": peak,
        "min_lr": peak * 0.1,
        "warmup_steps": warmup,
        "planned_steps": total,
        "steps": step,
        "epochs_seen": round(step * bsz / batches.n, 3),
        "train_tokens_seen": tokens,
        "train_seconds": round(elapsed, 1),
        "tokens_per_second": round(tokens / elapsed),
        "mtp_loss_weight": MTP_WEIGHT if n_mtp else None,
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "log": history,
    }
    log(f"trained {step} steps, {tokens / 1e6:.0f}M tokens in {elapsed:.0f}s ({tokens / elapsed / 1e6:.2f}M tok/s)")
    return model, stats


# --------------------------------------------------------------------------------------------
# Checks and held-out scoring
# --------------------------------------------------------------------------------------------


def heldout_stream(args, tok: Tokenizer) -> np.ndarray:
    docs = json.loads((args.work / "heldout.json").read_text(encoding="utf-8"))
    ids = bpe.encode_docs(bpe.corpus_encoder(tok), [t for _, t in docs])
    eot = np.array([bpe.EOT], dtype=np.uint16)
    return np.concatenate([x for a in ids for x in (a, eot)])


@torch.no_grad()
def score(model, stream: np.ndarray, seq: int, batch: int = 64) -> dict:
    """Teacher-forced CE and top-1 accuracy per depth over non-overlapping windows of
    seq + 1 + n_mtp tokens (bf16 autocast, as in training)."""
    dev = next(model.parameters()).device
    n_mtp = len(model.mtp)
    length = seq + 1 + n_mtp
    data = torch.from_numpy(stream.astype(np.int64))
    nwin = (len(data) - length) // seq + 1
    ce = torch.zeros(1 + n_mtp, dtype=torch.float64)
    hit = torch.zeros(1 + n_mtp, dtype=torch.float64)
    count = 0
    model.eval()
    for i in range(0, nwin, batch):
        idx = torch.arange(i, min(nwin, i + batch))[:, None] * seq + torch.arange(length)[None]
        x = data[idx].to(dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lgs = model.logits(model.hidden(x), rows=seq)
        for k, lg in enumerate(lgs):
            tgt = x[:, k + 1 : k + 1 + seq]
            ce[k] += torch.nn.functional.cross_entropy(lg.float().flatten(0, 1), tgt.flatten(), reduction="sum").item()
            hit[k] += (lg.argmax(-1) == tgt).sum().item()
        count += x.shape[0] * seq
    out = {"windows": nwin, "scored_tokens_per_depth": count, "ce": [round(v / count, 4) for v in ce.tolist()],
           "top1": [round(v / count, 4) for v in hit.tolist()]}
    out["perplexity_main"] = round(math.exp(out["ce"][0]), 3)
    return out


@torch.no_grad()
def verify(model, out_dir: Path, probe: torch.Tensor) -> dict:
    """transformers loads the folder (only mtp.* unexpected) and reproduces our main logits;
    our loader reproduces the MTP logits. Both sides use the stored bf16 weights in fp32."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = probe.device
    ref = copy.deepcopy(model).float()
    for p in ref.parameters():
        p.data = p.data.to(torch.bfloat16).float()
    for m in ref.modules():
        if hasattr(m, "config"):
            m.config._attn_implementation = "eager"
    ref.eval()
    mask = causal_mask(probe.shape[1], dev)
    ours = ref.logits(ref.hidden(probe, mask))

    loaded, info = load_model(out_dir, torch.float32, "eager", dev)
    unexpected = sorted(info.get("unexpected_keys") or [])
    missing = sorted(info.get("missing_keys") or [])
    bad_unexpected = [k for k in unexpected if not k.startswith("mtp.")]
    hf_logits = loaded.lm(input_ids=probe).logits
    theirs = loaded.logits(loaded.hidden(probe, mask))
    res = {
        "transformers_class": type(loaded.lm).__name__,
        "unexpected_keys": len(unexpected),
        "unexpected_non_mtp": bad_unexpected,
        "missing_keys": missing,
        "tied": loaded.lm.lm_head.weight.data_ptr() == loaded.lm.model.embed_tokens.weight.data_ptr(),
        "max_abs_diff_main_vs_transformers": float((ours[0] - hf_logits).abs().max()),
        "max_abs_diff_depths_reloaded": [float((a - b).abs().max()) for a, b in zip(ours, theirs)],
        "max_abs_diff_vs_fp32_master": None,
    }
    model.eval()
    res["max_abs_diff_vs_fp32_master"] = float(
        (model.float().logits(model.hidden(probe))[0] - hf_logits).abs().max()
    )
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    ok = (not bad_unexpected and not missing and res["tied"]
          and res["max_abs_diff_main_vs_transformers"] < 1e-3
          and all(d < 1e-3 for d in res["max_abs_diff_depths_reloaded"]))
    res["ok"] = bool(ok)
    log(f"verify: {json.dumps(res)}")
    return res


def preflight(args) -> None:
    """Seconds-long end-to-end check on random tokens (forward, backward, save, reload, compare)
    before the minutes of data preparation, so that an API mismatch fails fast."""
    seed_all(args.seed)
    model = new_model(args.kind).cuda()
    n_mtp = len(model.mtp)
    x = torch.randint(3, 8192, (2, 64 + 1 + n_mtp), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses = model.losses(x, 64)
    sum(losses).backward()
    d = args.work / f"preflight-{args.kind}"
    save_model(model, d)
    res = verify(model, d, x[:, :40])
    if not res["ok"]:
        raise SystemExit(f"preflight failed: {res}")
    log(f"preflight ok: losses {[round(float(l), 3) for l in losses]}, files {sorted(p.name for p in d.iterdir())}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, default=None, help="folder with tokenizer.json to reuse")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tachyon-work"))
    ap.add_argument("--seconds", type=float, default=300.0, help="training loop budget")
    ap.add_argument("--end-by", type=float, default=0.0, help="unix time by which the loop must end")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    import tokenizers
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
        f"gpu {torch.cuda.get_device_name(0)}")
    preflight(args)
    t0 = time.time()
    stream, tok, data_info = prepare_data(args)
    data_seconds = time.time() - t0
    model, stats = train(args, stream)
    stats["data"] = data_info
    stats["data_prep_seconds"] = round(data_seconds, 1)

    save_model(model, args.out)
    log(f"saved {sorted(p.name for p in args.out.iterdir())}")
    held = heldout_stream(args, tok)
    stats["heldout_tokens"] = int(held.size)
    try:
        probe = torch.from_numpy(held[:300].astype(np.int64))[None].cuda()
        stats["verify"] = verify(model, args.out, probe)
    except Exception as e:  # keep the weights even if a check breaks
        import traceback

        traceback.print_exc()
        stats["verify"] = {"ok": False, "error": repr(e)}
    try:
        stats["heldout_bf16"] = score(model, held, args.seq)
        log(f"held-out (bf16, teacher-forced): {json.dumps(stats['heldout_bf16'])}")
    except Exception as e:
        import traceback

        traceback.print_exc()
        stats["heldout_bf16"] = {"error": repr(e)}
    (args.out / "training-log.json").write_text(corpus_mod.dump_manifest(stats), encoding="utf-8")
    return 0 if stats["verify"].get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
