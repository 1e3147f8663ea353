"""Training corpus: permissively licensed Python source already installed on the machine.

Sources, in this order:
  1. the running interpreter's standard library (PSF licence), every *.py below
     sysconfig's "stdlib" path (site-packages / dist-packages subtrees excluded);
  2. every distribution installed in site.getsitepackages(), sorted by name, kept only when
     its metadata names a permissive licence (see `licence_verdict`); its *.py files come from
     the distribution's RECORD (importlib.metadata `files`).

Files are skipped when larger than 1 MB or not valid UTF-8, and deduplicated by the SHA-256 of
their bytes (the first occurrence in the order above wins). About 1% of the kept files, chosen
by the hash of their path id ("<source>/<relative path>"), form the held-out set, which is never
trained on. Everything is sorted, so the same installation gives the same corpus.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform
import re
import site
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE_BYTES = 1_000_000
HELDOUT_PERCENT = 1  # files whose path hash is 0 mod 100

# Licence vocabulary. Names are matched case-insensitively against SPDX ids, trove classifiers
# and free-text License fields.
PERMISSIVE = re.compile(
    r"\bMIT\b|\bBSD\b|0BSD|Apache|\bPSF\b|Python Software Foundation|Python-2\.0|\bISC\b|\bZlib\b"
    r"|Unlicense|CNRI-Python|\bHPND\b|Historical Permission|\bCC0\b|\bX11\b|\bNCSA\b|\bBSL-1\.0\b|Boost Software"
    r"|Permission is hereby granted, free of charge|Redistribution and use in source and binary forms",
    re.I,
)
# Copyleft or restrictive names; checked everywhere, including full licence texts.
COPYLEFT = re.compile(
    r"GPL|General Public Licen[cs]e|\bGNU\b|Mozilla Public|\bMPL\b|\bEUPL\b|\bCDDL\b|Eclipse Public|\bEPL\b"
    r"|\bSSPL\b|Server Side Public|Proprietary|CC-BY-SA|CC-BY-NC|ShareAlike|NonCommercial",
    re.I,
)
# Vague names; checked only in SPDX ids and classifiers (full texts say "other" and "commercial").
UNCLEAR = re.compile(r"\bOther\b|Commercial|Artistic|LicenseRef", re.I)


def _short_permissive(name: str) -> bool:
    """A licence name (SPDX id or classifier) that is permissive and nothing else."""
    return bool(PERMISSIVE.search(name)) and not COPYLEFT.search(name) and not UNCLEAR.search(name)


@dataclass
class Doc:
    """One kept source file."""

    path_id: str  # "<source>/<relative path>", the key of the held-out split
    text: str
    heldout: bool


@dataclass
class Source:
    """A distribution (or the standard library) and what it contributed."""

    name: str
    version: str
    licence: str
    files: int = 0
    bytes: int = 0
    heldout_files: int = 0


@dataclass
class Corpus:
    docs: list[Doc]
    sources: list[Source]
    excluded: list[dict]
    skipped: dict = field(default_factory=dict)

    def train(self) -> list[Doc]:
        return [d for d in self.docs if not d.heldout]

    def heldout(self) -> list[Doc]:
        return [d for d in self.docs if d.heldout]


def path_hash(path_id: str, salt: str = "") -> int:
    """A stable 64-bit hash of a path id (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256((salt + path_id).encode()).digest()[:8], "big")


def is_heldout(path_id: str) -> bool:
    return path_hash(path_id) % 100 < HELDOUT_PERCENT


# --------------------------------------------------------------------------------------------
# Licences
# --------------------------------------------------------------------------------------------


def _spdx_permissive(expr: str) -> bool:
    """Evaluate an SPDX licence expression: OR needs one permissive side, AND needs both.

    `X WITH exception` counts as X. AND binds tighter than OR; parentheses are honoured."""
    tokens = re.findall(r"\(|\)|[^\s()]+", expr)
    pos = 0

    def atom() -> bool:
        nonlocal pos
        if pos < len(tokens) and tokens[pos] == "(":
            pos += 1
            v = disjunction()
            pos += 1  # ")"
            return v
        ident = tokens[pos] if pos < len(tokens) else ""
        pos += 1
        if pos < len(tokens) and tokens[pos].upper() == "WITH":
            pos += 2
        return _short_permissive(ident)

    def conjunction() -> bool:
        nonlocal pos
        v = atom()
        while pos < len(tokens) and tokens[pos].upper() == "AND":
            pos += 1
            v = atom() and v
        return v

    def disjunction() -> bool:
        nonlocal pos
        v = conjunction()
        while pos < len(tokens) and tokens[pos].upper() == "OR":
            pos += 1
            v = conjunction() or v
        return v

    return bool(tokens) and disjunction()


def licence_verdict(meta) -> tuple[bool, str]:
    """(keep?, licence string) from a distribution's metadata.

    Precedence: License-Expression (SPDX) alone decides when present; else the
    `License ::` classifiers (all specific ones must be permissive); else a License field that
    names a permissive licence and nothing copyleft or unclear. Anything else is excluded."""
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        return _spdx_permissive(expr), expr
    classifiers = [
        c.split("::")[-1].strip()
        for c in (meta.get_all("Classifier") or [])
        if c.startswith("License ::") and c.strip() != "License :: OSI Approved"
    ]
    if classifiers:
        ok = all(_short_permissive(c) for c in classifiers)
        return ok, "; ".join(classifiers)
    text = (meta.get("License") or "").strip()
    first = text.splitlines()[0].strip()[:100] if text else ""
    if text and PERMISSIVE.search(text) and not COPYLEFT.search(text):
        return True, first
    return False, first or "unknown"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _stdlib_files() -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    skip = {"site-packages", "dist-packages", "__pycache__"}
    files = [
        p
        for p in root.rglob("*.py")
        if p.is_file() and not skip.intersection(p.relative_to(root).parts)
    ]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _site_distributions() -> list[md.Distribution]:
    dirs = {Path(d).resolve() for d in site.getsitepackages() if Path(d).is_dir()}
    seen: set[str] = set()
    out = []
    for dist in md.distributions():
        name = (dist.metadata.get("Name") or "").strip()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if not name or key in seen:
            continue
        try:
            base = Path(dist.locate_file("")).resolve()
        except Exception:
            continue
        if base not in dirs:
            continue
        seen.add(key)
        out.append(dist)
    return sorted(out, key=lambda d: re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower())


def _dist_files(dist: md.Distribution) -> list[tuple[str, Path]]:
    out = []
    for f in dist.files or []:
        rel = f.as_posix()
        if not rel.endswith(".py") or rel.startswith("..") or "/../" in rel:
            continue
        out.append((rel, Path(dist.locate_file(f))))
    return sorted(out)


def build_corpus(log=print) -> Corpus:
    """Collect, filter, deduplicate and split the corpus (see the module docstring)."""
    docs: list[Doc] = []
    sources: list[Source] = []
    excluded: list[dict] = []
    seen_hashes: set[bytes] = set()
    skipped = {"too_large": 0, "not_utf8": 0, "duplicate": 0, "unreadable": 0}

    def add(src: Source, rel: str, path: Path) -> None:
        try:
            if not path.is_file():
                return
            if path.stat().st_size > MAX_FILE_BYTES:
                skipped["too_large"] += 1
                return
            raw = path.read_bytes()
        except OSError:
            skipped["unreadable"] += 1
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            skipped["not_utf8"] += 1
            return
        digest = hashlib.sha256(raw).digest()
        if digest in seen_hashes:
            skipped["duplicate"] += 1
            return
        seen_hashes.add(digest)
        path_id = f"{src.name}/{rel}"
        held = is_heldout(path_id)
        docs.append(Doc(path_id, text, held))
        src.files += 1
        src.bytes += len(raw)
        src.heldout_files += held

    root, files = _stdlib_files()
    std = Source("python-stdlib", platform.python_version(), "PSF-2.0")
    for p in files:
        add(std, p.relative_to(root).as_posix(), p)
    sources.append(std)
    log(f"corpus: stdlib {root}: {std.files} files, {std.bytes / 1e6:.1f} MB")

    for dist in _site_distributions():
        meta = dist.metadata
        name, version = meta["Name"], meta.get("Version") or "?"
        keep, lic = licence_verdict(meta)
        if not keep:
            excluded.append({"name": name, "version": version, "licence": lic})
            continue
        src = Source(name, version, lic)
        for rel, path in _dist_files(dist):
            add(src, rel, path)
        if src.files:
            sources.append(src)
    total = sum(s.bytes for s in sources)
    log(
        f"corpus: {len(sources)} sources, {len(docs)} files, {total / 1e6:.1f} MB; "
        f"{len(excluded)} distributions excluded by licence; skipped {skipped}"
    )
    return Corpus(docs, sources, excluded, skipped)


def manifest(c: Corpus) -> dict:
    """The data-manifest.json content."""
    train = c.train()
    held = c.heldout()
    return {
        "description": (
            "Python source files used to train the tachyon code models: the CPython standard library "
            "and permissively licensed distributions installed with PyTorch (see training/corpus.py)."
        ),
        "selection": {
            "permissive_licences": "MIT, BSD, 0BSD, Apache-2.0, PSF/Python, ISC, Zlib, Unlicense, HPND, CC0, X11, NCSA, BSL-1.0",
            "rule": "License-Expression if present, else all specific 'License ::' classifiers, else the License field",
            "max_file_bytes": MAX_FILE_BYTES,
            "dedup": "sha256 of file bytes, first occurrence kept",
            "heldout": f"path id sha256 (first 8 bytes, big-endian) mod 100 < {HELDOUT_PERCENT}",
        },
        "totals": {
            "sources": len(c.sources),
            "files": len(c.docs),
            "bytes": sum(len(d.text.encode()) for d in c.docs),
            "train_files": len(train),
            "train_bytes": sum(len(d.text.encode()) for d in train),
            "heldout_files": len(held),
            "heldout_bytes": sum(len(d.text.encode()) for d in held),
            "skipped": c.skipped,
        },
        "distributions": [
            {
                "name": s.name,
                "version": s.version,
                "licence": s.licence,
                "files": s.files,
                "bytes": s.bytes,
                "heldout_files": s.heldout_files,
            }
            for s in c.sources
        ],
        "excluded": c.excluded,
    }


def dump_manifest(m: dict) -> str:
    """Compact JSON with one distribution per line (keeps the committed file small and diffable)."""
    import json

    lines = ["{"]
    keys = list(m)
    for i, k in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        v = m[k]
        if isinstance(v, list):
            items = [json.dumps(x, ensure_ascii=False) for x in v]
            body = ",\n".join("    " + s for s in items)
            lines.append(f'  "{k}": [\n{body}\n  ]{comma}' if items else f'  "{k}": []{comma}')
        else:
            lines.append(f'  "{k}": {json.dumps(v, ensure_ascii=False)}{comma}')
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import json
    import sys

    c = build_corpus()
    m = manifest(c)
    json.loads(dump_manifest(m))
    sys.stdout.write(dump_manifest(m))
