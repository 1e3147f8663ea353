"""Byte-level BPE tokenizer for the tachyon code models (Llama-3 / Qwen2 structure).

Same pipeline as the `bytelevel` fixture tokenizer of scripts/fixtures/make_fixtures.py: no
normalizer; pre-tokenizer Split(GPT-4 regex, isolated) then ByteLevel(no prefix space, no regex);
ByteLevel decoder and post-processor (which adds nothing). Special tokens <|endoftext|> = 0
(document separator and EOS), <|im_start|> = 1, <|im_end|> = 2; 8192 entries in all.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB_SIZE = 8192
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOT = 0

# GPT-4 / Llama-3 pre-tokenization pattern (as in make_fixtures.py).
GPT4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML, identical to the fixture's: a default system message when the first one is not a system
# message. '\n' inside the Jinja string literals is an escape that Jinja itself resolves.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "{%- if loop.first and message['role'] != 'system' -%}\n"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}\n"
    "{%- endif -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}\n"
)


def train_tokenizer(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIALS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    vocab = tok.get_vocab(with_added_tokens=True)
    assert len(vocab) == VOCAB_SIZE, f"vocab size {len(vocab)}"
    assert [vocab[t] for t in SPECIALS] == [0, 1, 2], "special token ids"
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> None:
    """tokenizer.json (compact) + tokenizer_config.json with the chat template inside it."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:  # transformers 5 alias
        from transformers import TokenizersBackend as PreTrainedTokenizerFast  # type: ignore

    out_dir.mkdir(parents=True, exist_ok=True)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    hf.chat_template = CHATML_TEMPLATE
    hf.save_pretrained(str(out_dir))
    # transformers 5 writes the template to chat_template.jinja; keep it in tokenizer_config.json.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    jinja = out_dir / "chat_template.jinja"
    if jinja.exists():
        cfg["chat_template"] = jinja.read_text(encoding="utf-8")
        jinja.unlink()
    else:
        cfg.setdefault("chat_template", CHATML_TEMPLATE)
    assert cfg["chat_template"] == CHATML_TEMPLATE, "chat template changed on save"
    cfg.pop("add_bos_token", None)
    cfg.pop("add_eos_token", None)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for extra in ("special_tokens_map.json",):
        if (out_dir / extra).exists():
            (out_dir / extra).unlink()
    # Compact tokenizer.json (the pretty one is twice the size); same content.
    Tokenizer.from_file(str(out_dir / "tokenizer.json")).save(str(out_dir / "tokenizer.json"), pretty=False)


def corpus_encoder(tok: Tokenizer) -> Tokenizer:
    """A copy that encodes special-token strings found in source files as plain text, so that a
    literal "<|endoftext|>" in a file never becomes the separator id."""
    enc = Tokenizer.from_str(tok.to_str())
    try:
        enc.encode_special_tokens = True
    except AttributeError:  # very old tokenizers: fine, just less exact
        pass
    return enc


def encode_docs(enc: Tokenizer, texts: list[str], chunk: int = 512):
    """Token ids of each text (no special tokens added), as numpy uint16 arrays."""
    import numpy as np

    fast = getattr(enc, "encode_batch_fast", enc.encode_batch)
    out = []
    for i in range(0, len(texts), chunk):
        for e in fast(texts[i : i + chunk], add_special_tokens=False):
            out.append(np.asarray(e.ids, dtype=np.uint16))
    return out
