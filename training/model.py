"""The tachyon code models: a transformers Qwen3ForCausalLM plus optional MTP modules.

Multi-token prediction (DeepSeek-V3 / MiMo style), depth k = 1..n, at position i:

    h_0[i]      = output of the last decoder layer of the main model (before model.norm)
    x           = proj_k( concat(hidden_norm_k(h_{k-1}[i]), embed_norm_k(E[t[i+k]])) )
    h_k         = DecoderLayer_k(x)          causal attention, rotary position i, q/k norm
    logits_k[i] = lm_head(final_norm_k(h_k[i]))      shared head (= tied embedding), predicts t[i+k+1]

proj_k is a bias-free Linear(2H -> H), the norms are RMSNorm(H, eps 1e-6) and DecoderLayer_k is a
transformers Qwen3DecoderLayer with the main config. In model.safetensors the module of depth k
is stored under `mtp.{k-1}.` (hidden_norm, embed_norm, proj, final_norm, layer.*); transformers
ignores those tensors when loading the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm

SHAPES = {
    # name: (hidden, layers, heads, kv heads, head_dim, intermediate, mtp modules)
    "main": (256, 8, 8, 4, 32, 768, 2),
    "draft": (128, 2, 4, 2, 32, 384, 0),
}


def make_config(kind: str, vocab_size: int = 8192) -> Qwen3Config:
    h, layers, heads, kv, hd, inter, _ = SHAPES[kind]
    common = dict(
        vocab_size=vocab_size,
        hidden_size=h,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=hd,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=0,
        pad_token_id=None,
        use_sliding_window=False,
    )
    try:
        return Qwen3Config(**common, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    except TypeError:  # transformers 4.x
        return Qwen3Config(**common, rope_theta=10000.0)


def causal_mask(t: int, device, dtype=torch.float32) -> torch.Tensor:
    """Additive [1, 1, t, t] mask (works with eager and sdpa attention)."""
    m = torch.full((t, t), torch.finfo(dtype).min, device=device, dtype=dtype).triu(1)
    return m[None, None]


class MTPModule(nn.Module):
    def __init__(self, config: Qwen3Config, index: int):
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.hidden_norm = Qwen3RMSNorm(h, eps)
        self.embed_norm = Qwen3RMSNorm(h, eps)
        self.proj = nn.Linear(2 * h, h, bias=False)
        self.layer = Qwen3DecoderLayer(config, layer_idx=index)
        self.final_norm = Qwen3RMSNorm(h, eps)

    def forward(self, h_prev, emb, pos_emb, pos_ids, mask):
        x = self.proj(torch.cat([self.hidden_norm(h_prev), self.embed_norm(emb)], dim=-1))
        out = self.layer(x, attention_mask=mask, position_embeddings=pos_emb, position_ids=pos_ids)
        return out[0] if isinstance(out, tuple) else out


class CodeLM(nn.Module):
    """Qwen3ForCausalLM (`self.lm`) + `n_mtp` MTP modules (`self.mtp`)."""

    def __init__(self, lm: Qwen3ForCausalLM, n_mtp: int):
        super().__init__()
        self.lm = lm
        self.mtp = nn.ModuleList([MTPModule(lm.config, k) for k in range(n_mtp)])
        for m in self.mtp.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=lm.config.initializer_range)

    def hidden(self, tokens: torch.Tensor, mask=None) -> list[torch.Tensor]:
        """[h_0, h_1, ..., h_n] for tokens [B, T]; h_k has T - k rows (row i = position i).

        mask=None uses sdpa's built-in causal mask (training); pass causal_mask(T) otherwise."""
        base = self.lm.model
        t = tokens.shape[1]
        emb = base.embed_tokens(tokens)
        pos = torch.arange(t, device=tokens.device)[None]
        cos, sin = base.rotary_emb(emb, pos)
        h = emb
        for layer in base.layers:
            h = layer(h, attention_mask=mask, position_embeddings=(cos, sin), position_ids=pos)
            h = h[0] if isinstance(h, tuple) else h
        out = [h]
        for k, m in enumerate(self.mtp, start=1):
            n = t - k
            sub = None if mask is None else mask[..., :n, :n]
            h = m(h[:, :n], emb[:, k : k + n], (cos[:, :n], sin[:, :n]), pos[:, :n], sub)
            out.append(h)
        return out

    def logits(self, hs: list[torch.Tensor], rows: int | None = None) -> list[torch.Tensor]:
        """Logits of each depth (first `rows` rows of each, or all)."""
        norms = [self.lm.model.norm] + [m.final_norm for m in self.mtp]
        return [self.lm.lm_head(norm(h[:, :rows])) for norm, h in zip(norms, hs)]

    def losses(self, tokens: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Mean CE per depth on a batch [B, n + 1 + n_mtp]: depth k predicts tokens[:, k+1 : k+1+n]."""
        out = []
        for k, lg in enumerate(self.logits(self.hidden(tokens), rows=n)):
            tgt = tokens[:, k + 1 : k + 1 + n]
            out.append(F.cross_entropy(lg.float().reshape(-1, lg.shape[-1]), tgt.reshape(-1)))
        return out


def new_model(kind: str, vocab_size: int = 8192) -> CodeLM:
    cfg = make_config(kind, vocab_size)
    cfg._attn_implementation = "sdpa"
    lm = Qwen3ForCausalLM(cfg)
    if lm.lm_head.weight is not lm.model.embed_tokens.weight:
        lm.lm_head.weight = lm.model.embed_tokens.weight
    return CodeLM(lm, SHAPES[kind][6])


def mtp_state_dict(model: CodeLM) -> dict[str, torch.Tensor]:
    return {f"mtp.{k}": v for k, v in model.mtp.state_dict().items()}


def save_model(model: CodeLM, out_dir: Path) -> None:
    """save_pretrained (bf16) of the Qwen3 part, then the MTP tensors added to model.safetensors."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = make_config("main" if model.mtp else "draft", model.lm.config.vocab_size)
    cfg._attn_implementation = "sdpa"
    lm = Qwen3ForCausalLM(cfg)
    lm.load_state_dict(model.lm.state_dict())
    lm = lm.to(torch.bfloat16)
    lm.save_pretrained(str(out_dir))
    st = out_dir / "model.safetensors"
    tensors = load_file(str(st))
    assert "lm_head.weight" not in tensors, "tied model saved lm_head.weight"
    if model.mtp:
        for name, t in mtp_state_dict(model).items():
            tensors[name] = t.detach().to("cpu", torch.bfloat16).contiguous()
        save_file(tensors, str(st), metadata={"format": "pt"})
        cfg_path = out_dir / "config.json"
        c = json.loads(cfg_path.read_text())
        c["num_nextn_predict_layers"] = len(model.mtp)
        cfg_path.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")


def load_model(model_dir: Path, dtype=torch.float32, attn: str = "eager", device="cpu"):
    """(CodeLM, loading info) from a saved folder: transformers loads the Qwen3 part, the MTP
    modules come from the `mtp.*` tensors of the same file."""
    lm, info = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=dtype, attn_implementation=attn, output_loading_info=True
    )
    n_mtp = int(json.loads((model_dir / "config.json").read_text()).get("num_nextn_predict_layers", 0))
    model = CodeLM(lm, n_mtp)
    if n_mtp:
        stored = load_file(str(model_dir / "model.safetensors"))
        sd = {k[len("mtp.") :]: v for k, v in stored.items() if k.startswith("mtp.")}
        model.mtp.load_state_dict(sd, strict=True)
    return model.to(device=device, dtype=dtype).eval(), info


def count_params(model: CodeLM) -> tuple[int, int]:
    """(main model parameters with the tied head counted once, MTP parameters)."""
    main = sum(p.numel() for p in model.lm.parameters())
    mtp = sum(p.numel() for p in model.mtp.parameters())
    return main, mtp
