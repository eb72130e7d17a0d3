"""The generator kind of bundle (edge-distill llm) as every command that uses one reads it.

`generation_checks` are the kind's cheap checks: no decoding, only reading. `verify` lists them
beside its other checks. `generate`, `bench` and emulation run them before any use, through
`open_generator`, which refuses the bundle at the first failure. So a bundle `verify` refuses is
never run by another command. The checks:
- generation.json: bounded in size, typed (finite sampling values, a chat template that is a
  string, a list of named templates as transformers writes them, or null), and agreeing with the
  manifest on eos ids and max_length;
- tokenizer.json: bounded in size, and read by the tokenizers library without failing (its Rust
  panics included);
- the vocabulary: the tokenizer's ids, the eos ids and the golden ids all lie inside the model's
  logits;
- the golden generations: as many as golden.count and golden.prompts say, of the stated shapes,
  and the golden prompts tokenize to their stored ids.

Also what only this kind writes: the golden generations (`write_golden_generations`) and the
model card (`render_card`). Needs numpy and tokenizers (onnxruntime to write); no torch, no onnx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.bundle.integrity import Check, inside
from edge_distill.bundle.reader import MAX_TOKENIZER_BYTES, Bundle, tokenizer_errors
from edge_distill.bundle.writer import GOLDEN_ATOL_SHARE
from edge_distill.errors import BundleError, InputFileError
from edge_distill.files import read_json
from edge_distill.schema import Bool, Either, Int, ListOf, Null, Num, Obj, Str, check

MAX_SETTINGS_BYTES = 4 * 1024**2  # generation.json: the largest chat templates are tens of KB
MAX_TEMPLATE_CHARS = 1_000_000
TEMPLATE = Obj({"name": Str(nonempty=True), "template": Str(max_length=MAX_TEMPLATE_CHARS)},
               required={"name", "template"}, expected='an object with "name" and "template" strings')
TEMPLATES = ListOf(TEMPLATE, min_length=1, max_length=64, expected='a list of {"name", "template"} objects')
SETTINGS = Obj({
    "eos_token_ids": ListOf(Int(0), min_length=1, max_length=64),
    "max_length": Int(1, 10_000_000),
    # transformers writes a chat model's templates as one string, or as a list of named ones.
    "chat_template": Either(Null(), Str(max_length=MAX_TEMPLATE_CHARS), TEMPLATES),
    "sampling": Obj({"temperature": Num(min=0), "top_k": Int(0), "top_p": Num(positive=True)}),
    "add_special_tokens": Bool(),
    "do_sample": Bool(),
}, required={"eos_token_ids", "max_length"})
REBUILD = "rebuild the bundle with edge-distill llm"


@dataclass
class Generator:
    """A generator bundle whose cheap checks passed: its settings and its tokenizer, read once."""

    bundle: Bundle
    settings: dict[str, Any]
    tokenizer: Any  # tokenizers.Tokenizer, or None where verify runs without the tokenizers package
    vocab_size: int  # the model's logits
    golden: dict[str, np.ndarray]  # the golden generations, read (and checked) once

    @property
    def path(self) -> Path:
        return self.bundle.path

    @property
    def max_length(self) -> int:
        return self.settings["max_length"]

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return tuple(self.settings["eos_token_ids"])

    @property
    def settings_path(self) -> Path:
        return self.path / self.bundle.manifest["generation"]["settings"]

    def chat_template(self) -> str | None:
        """The template a chat is rendered with: the string, or the one named "default" of a list."""
        template = self.settings.get("chat_template")
        if not isinstance(template, list):
            return template
        named = {entry["name"]: entry["template"] for entry in template}
        if "default" not in named:
            raise BundleError(f"{self.settings_path}: chat_template holds templates named {', '.join(named)}, "
                              "none named 'default'", "rename the one to use 'default', or rebuild the bundle")
        return named["default"]

    def encode(self, text: str) -> list[int]:
        """`text`'s ids as the bundle's tokenizer gives them (special tokens as generation.json says)."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputFileError(f"the prompt is not valid UTF-8 (position {e.start})",
                                 "give the prompt as UTF-8 text") from None
        with tokenizer_errors(str(self.tokenizer_path), BundleError, REBUILD):
            return self.tokenizer.encode(text, add_special_tokens=bool(self.settings.get("add_special_tokens", True))).ids

    def decode(self, ids: list[int]) -> str:
        with tokenizer_errors(str(self.tokenizer_path), BundleError, REBUILD):
            return self.tokenizer.decode(ids)

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.bundle.manifest["generation"]["tokenizer"]

    def golden_prompts(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.golden["prompt_ids"], self.golden["prompt_lengths"])]

    @property
    def atol(self) -> float:
        return float(self.bundle.manifest["golden"]["tolerance"]["first_logits_atol"])


def open_generator(path: Path) -> Generator:
    """The generator bundle at `path`, refused (one BundleError) unless its integrity and the kind's
    cheap checks pass: what `generate`, `bench` and emulation run a generator bundle through."""
    bundle = Bundle.open_checked(path)
    if bundle.kind != "generation":
        raise BundleError(f"{path}: not a text generator bundle (its golden kind is "
                          f"{bundle.manifest['golden'].get('kind', 'classifier')!r})", "build one with edge-distill llm")
    checks, generator = generation_checks(bundle)
    failed = [c for c in checks if not c.passed]
    if failed:
        raise BundleError(f"{path}: refused: {failed[0].name}: {failed[0].detail}"
                          + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
                          f"edge-distill verify {path} lists every check; {REBUILD}")
    assert generator is not None
    return generator


def generation_checks(bundle: Bundle, need_tokenizer: bool = True) -> tuple[list[Check], Generator | None]:
    """The kind's cheap checks, in order, and the Generator where every one passed. Without
    `need_tokenizer` (verify on a device with numpy and onnxruntime only), the tokenizer's checks
    pass as not made where the tokenizers package is not installed."""
    from importlib.util import find_spec

    manifest, section = bundle.manifest, bundle.manifest["generation"]
    settings, problem = _settings(bundle)
    checks = [Check("generation settings", problem is None, problem or f"{section['settings']}: eos ids "
                    f"{settings['eos_token_ids']}, max_length {settings['max_length']}, as the manifest says")]
    if not need_tokenizer and find_spec("tokenizers") is None:
        tokenizer, problem = None, None
        checks.append(Check("tokenizer", True, "not checked here: the tokenizers package is not installed"))
    else:
        tokenizer, problem = _tokenizer(bundle)
        checks.append(Check("tokenizer", problem is None,
                            problem or f"{section['tokenizer']}: {tokenizer.get_vocab_size(True):,} tokens"))
    if problem is not None or not checks[0].passed:
        return checks, None
    vocab_size = _model_vocabulary(manifest)
    arrays, problem = _golden(bundle, vocab_size)
    checks.append(Check("golden generations", problem is None,
                        problem or f"{manifest['golden']['count']} prompts of {arrays['greedy_ids'].shape[1]} tokens"))
    largest = tokenizer.get_vocab_size(with_added_tokens=True) - 1 if tokenizer is not None else -1
    beyond = ([f"the tokenizer's id {largest}"] if vocab_size and largest >= vocab_size else []) + \
             [f"eos id {i}" for i in settings["eos_token_ids"] if vocab_size and i >= vocab_size]
    checks.append(Check("vocabulary", not beyond, f"{', '.join(beyond)} beyond the model's {vocab_size:,} logits"
                        if beyond else f"every id within the model's {vocab_size:,} logits"))
    if problem is None and tokenizer is not None:
        checks.append(_golden_tokenization(bundle, tokenizer, arrays))
    if not all(c.passed for c in checks):
        return checks, None
    return checks, Generator(bundle, settings, tokenizer, vocab_size, arrays)


def _settings(bundle: Bundle) -> tuple[dict[str, Any], str | None]:
    section = bundle.manifest["generation"]
    path = inside(bundle.path, section["settings"])
    if path is None or section["settings"] not in bundle.manifest["files"]:
        return {}, "generation.settings is not a file the bundle lists"
    try:
        settings = read_json(path, max_bytes=MAX_SETTINGS_BYTES, error=BundleError)
        check(settings, SETTINGS, str(path), BundleError)
    except BundleError as e:
        return {}, e.message
    top_p = settings.get("sampling", {}).get("top_p", 1.0)
    disagree = [f"{key} {settings[key]} (manifest: {section[key]})" for key in ("eos_token_ids", "max_length")
                if settings[key] != section[key]]
    if disagree:
        return {}, f"{section['settings']} disagrees with the manifest: {'; '.join(disagree)}"
    if top_p > 1:
        return {}, f"{section['settings']}: 'sampling.top_p' must be in (0, 1], got {top_p}"
    return settings, None


def _tokenizer(bundle: Bundle):
    section = bundle.manifest["generation"]
    path = inside(bundle.path, section["tokenizer"])
    if path is None or section["tokenizer"] not in bundle.manifest["files"]:
        return None, "generation.tokenizer is not a file the bundle lists"
    size = path.stat().st_size
    if size > MAX_TOKENIZER_BYTES:
        return None, f"{section['tokenizer']}: {size:,} bytes, more than the {MAX_TOKENIZER_BYTES:,} a tokenizer may hold"
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None, "the tokenizers package is not installed (pip install tokenizers)"
    try:
        with tokenizer_errors(str(path), BundleError, REBUILD):
            tokenizer = Tokenizer.from_file(str(path))
            tokenizer.encode("Hello, world.")  # a tokenizer that fails on every input fails here
    except BundleError as e:
        return None, e.message
    return tokenizer, None


def _model_vocabulary(manifest: dict[str, Any]) -> int:
    """The size of the model's logits as the manifest states it (verify checks the model agrees)."""
    logits = next((t for t in manifest["outputs"] if t["name"] == "logits"), manifest["outputs"][0])
    size = logits["shape"][-1] if logits["shape"] else 0
    return size if isinstance(size, int) else 0


def _golden(bundle: Bundle, vocab_size: int):
    golden = bundle.manifest["golden"]
    try:
        arrays = bundle.golden()
    except BundleError as e:
        return None, e.message
    prompts, lengths = arrays["prompt_ids"], arrays["prompt_lengths"]
    count = len(prompts)
    texts = golden.get("prompts")
    if not (golden.get("count") == count == len(lengths) == len(arrays["greedy_ids"]) == len(arrays["first_logits"])):
        return None, (f"golden.count is {golden.get('count')}, golden.npz holds {count} prompts, "
                      f"{len(arrays['greedy_ids'])} generations")
    if not isinstance(texts, list) or len(texts) != count or not all(isinstance(t, str) for t in texts):
        return None, "golden.prompts is not one string per stored prompt"
    if prompts.ndim != 2 or arrays["greedy_ids"].ndim != 2 or lengths.ndim != 1 \
            or not ((lengths >= 1) & (lengths <= prompts.shape[1])).all():
        return None, "golden prompt_ids, prompt_lengths and greedy_ids are not of matching shapes"
    if vocab_size and (arrays["first_logits"].ndim != 2 or arrays["first_logits"].shape[1] != vocab_size):
        return None, (f"golden first_logits have {arrays['first_logits'].shape[1:]} values per prompt, the model "
                      f"{vocab_size}")
    used = np.concatenate([np.concatenate([row[:n] for row, n in zip(prompts, lengths)]), arrays["greedy_ids"].ravel()])
    if used.size and (used.min() < 0 or (vocab_size and used.max() >= vocab_size)):
        return None, f"golden ids hold {int(used.min() if used.min() < 0 else used.max())}, outside the model's vocabulary"
    return arrays, None


def _golden_tokenization(bundle: Bundle, tokenizer, arrays) -> Check:
    """The golden prompts tokenize to the stored ids: what an app's tokenizer must match."""
    texts = bundle.manifest["golden"]["prompts"]
    stored = [row[:n].tolist() for row, n in zip(arrays["prompt_ids"], arrays["prompt_lengths"])]
    path = bundle.path / bundle.manifest["generation"]["tokenizer"]
    try:
        with tokenizer_errors(str(path), BundleError, REBUILD):
            produced = [e.ids for e in tokenizer.encode_batch(texts)]
    except BundleError as e:
        return Check("golden tokenization", False, e.message)
    same = sum(a == b for a, b in zip(produced, stored))
    return Check("golden tokenization", same == len(stored), f"{same}/{len(stored)} golden prompts tokenize to their "
                 "stored ids")


def write_golden_generations(model: Path, tokenizer_path: Path, prompts: list[str], new_tokens: int, out: Path,
                             threads: int) -> dict[str, Any]:
    """Each prompt's ids (tokenizer.json, special tokens as it adds them), greedy tokens and first-step
    logits from the shipped model, as golden.npz and its JSON copy; returns the manifest's `golden`."""
    from tokenizers import Tokenizer

    from edge_distill.device.decoder import Decoder, greedy
    from edge_distill.sessions import open_session

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ids = [tokenizer.encode(prompt).ids for prompt in prompts]
    decoder = Decoder(open_session(model, "the shipped model", threads=threads))
    runs = [greedy(decoder, row, new_tokens) for row in ids]
    longest = max(map(len, ids))
    arrays = {"prompt_ids": np.asarray([row + [-1] * (longest - len(row)) for row in ids], dtype=np.int64),
              "prompt_lengths": np.asarray([len(row) for row in ids], dtype=np.int64),
              "greedy_ids": np.asarray([tokens for tokens, _ in runs], dtype=np.int64),
              "first_logits": np.stack([logits for _, logits in runs]).astype(np.float32)}
    np.savez(out / "golden.npz", **arrays)
    (out / "golden.json").write_text(json.dumps({name: a.tolist() for name, a in arrays.items()}) + "\n")
    return {"kind": "generation", "npz": "golden.npz", "json": "golden.json", "count": len(prompts),
            "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.name} for name, a in arrays.items()},
            "prompts": prompts, "new_tokens": new_tokens,
            "tolerance": {"first_logits_atol": GOLDEN_ATOL_SHARE * float(np.abs(arrays["first_logits"]).max()),
                          "greedy_ids": "exact",
                          "why": f"{GOLDEN_ATOL_SHARE:.1%} of the largest |logit|: quantized kernels differ slightly "
                                 "across CPUs"},
            "source": "openings of held-out passages; prompt_ids padded with -1 to the longest; outputs from "
                      "ONNX Runtime's CPU provider on the build machine"}


def render_card(manifest: dict[str, Any]) -> str:
    model, teacher = manifest["model"], manifest["teacher"]
    return "\n".join([
        f"# On-device text generator ({model['precision']} ONNX, {model['parameters']:,} parameters)",
        "",
        f"Distilled by edge-distill {manifest['generator']['version']} from {teacher['source']} "
        f"({teacher['parameters']:,} parameters) on {manifest['training']['data']}.",
        "",
        "## How to run it",
        manifest["generation"]["how"] + ".",
        "",
        f"Stop at any of the ids {manifest['generation']['eos_token_ids']}, or at {manifest['generation']['max_length']} "
        "tokens in all. `edge-distill generate . \"prompt\"` does it here.",
        "",
        "## Measured figures",
        "",
        render_variants(manifest),
        "",
        f"Shipped: {model['precision']}: {model['why']}.",
        "",
        "![decode speed against perplexity](frontier.svg)",
        "",
        *(["## Warnings", "", *(f"- {w['message']}" for w in manifest.get("warnings", [])), ""]
          if manifest.get("warnings") else []),
        f"`model.onnx` sha256: `{model['sha256']}`",
        "",
    ])


def frontier_svg(manifest: dict[str, Any]) -> str:
    """Decode speed (x) against perplexity as a multiple of the teacher's (y) for every candidate:
    the frontier joined by a line, the budget dashed, the shipped one ringed."""
    from html import escape

    metrics = manifest["metrics"]
    rows, teacher = metrics["variants"], metrics["teacher"]["perplexity"]
    budget, frontier = metrics["max_perplexity_ratio"], metrics.get("frontier", [])
    width, height, margin = 640, 400, 60
    speeds = [row["decode_tokens_per_s"] for row in rows.values()]
    ratios = [row["perplexity"] / teacher for row in rows.values()] + [budget, 1.0]
    x_top, y_top = max(speeds) * 1.15, max(ratios) * 1.1

    def at(speed: float, ratio: float) -> tuple[float, float]:
        return (margin + speed / x_top * (width - 2 * margin),
                height - margin - (ratio - 1.0) / max(y_top - 1.0, 1e-9) * (height - 2 * margin))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>',
             f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>',
             f'<text x="{width / 2}" y="{height - 20}" text-anchor="middle">decode tokens/s (batch 1, '
             f'{metrics["threads"]} thread(s))</text>',
             f'<text x="16" y="{height / 2}" transform="rotate(-90 16 {height / 2})" text-anchor="middle">'
             'perplexity / teacher fp32</text>']
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):  # tick labels: tokens/s below, multiples of the teacher beside
        x, _ = at(x_top * share, 1.0)
        _, y = at(0, 1.0 + (y_top - 1.0) * share)
        parts.append(f'<text x="{x:.1f}" y="{height - margin + 16}" text-anchor="middle">{x_top * share:.0f}</text>'
                     f'<text x="{margin - 6}" y="{y + 4:.1f}" text-anchor="end">{1.0 + (y_top - 1.0) * share:.2f}x</text>')
    _, budget_y = at(0, budget)
    parts.append(f'<line x1="{margin}" y1="{budget_y:.1f}" x2="{width - margin}" y2="{budget_y:.1f}" stroke="gray" '
                 f'stroke-dasharray="4 4"/><text x="{width - margin}" y="{budget_y - 4:.1f}" text-anchor="end" '
                 f'fill="gray">budget {budget:g}x</text>')
    line = " ".join("{:.1f},{:.1f}".format(*at(rows[name]["decode_tokens_per_s"], rows[name]["perplexity"] / teacher))
                    for name in sorted(frontier, key=lambda name: rows[name]["decode_tokens_per_s"]))
    if line:
        parts.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4"/>')
    for name, row in rows.items():
        x, y = at(row["decode_tokens_per_s"], row["perplexity"] / teacher)
        colour = "#d62728" if row.get("model") == "teacher" else "#1f77b4"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>'
                     f'<text x="{x + 6:.1f}" y="{y - 6:.1f}">{escape(name)}</text>')
        if name == manifest["model"]["precision"]:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="black"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def render_variants(manifest: dict[str, Any]) -> str:
    """The table `edge-distill llm` prints: each candidate's file, quality and speed, the teacher's
    own beside the student's, and which lie on the frontier of speed against perplexity."""
    metrics = manifest["metrics"]
    teacher = metrics["teacher"]["perplexity"]
    frontier = metrics.get("frontier", [])
    lines = [f"teacher fp32 perplexity on {metrics['held_out_tokens']:,} held-out tokens: {teacher:.2f}; "
             f"budget {metrics['max_perplexity_ratio']:g}x",
             f"{'candidate':21s} {'file MB':>8s} {'ppl':>7s} {'x teach':>7s} {'agree':>6s} {'TTFT@64':>8s} "
             f"{'TTFT@256':>8s} {'tok/s':>7s} {'peak MB':>8s}  frontier"]
    for name, row in sorted(metrics["variants"].items(), key=lambda item: -item[1]["decode_tokens_per_s"]):
        ttft = {t["prompt_tokens"]: t["time_to_first_token_ms"] for t in row["timing"]}
        shipped = " (ships)" if name == manifest["model"]["precision"] else ""
        lines.append(f"{name:21s} {row['size_bytes'] / 2**20:8.2f} {row['perplexity']:7.2f} "
                     f"{row['perplexity'] / teacher:7.2f} {row['agreement_with_teacher']:6.3f} "
                     + " ".join(f"{ttft.get(n, float('nan')):8.1f}" for n in (64, 256))
                     + f" {row['decode_tokens_per_s']:7.1f} {row['peak_rss_mb'] or 0:8.0f}  "
                     + ("yes" if name in frontier else "") + shipped)
    lines.append(f"agree: next-token top-1 agreement with the teacher; TTFT in ms; batch 1, {metrics['threads']} "
                 "thread(s); frontier: no other candidate is both quicker and closer to the teacher")
    return "\n".join(lines)
