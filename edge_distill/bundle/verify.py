"""Verify a bundle: hashes, containment, the model's spec, and its golden vectors.

Like device/runner.py, this runs where the model runs: it needs only the standard library, numpy
and onnxruntime (plus edge_distill's errors, hashing and bundle reader, themselves torch-free). Usable as
`python -m edge_distill.bundle.verify DIR [--json]` on a device without torch or onnx.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.bundle.integrity import Check, integrity_checks
from edge_distill.bundle.integrity import inside
from edge_distill.bundle.reader import METADATA_PREFIX, RAW_GOLDEN, Bundle, normalize, read_tokenizer
from edge_distill.errors import BundleError, describe
from edge_distill.files import read_json
from edge_distill.schema import Int, ListOf, Obj, Str, check

# mean and std are stated to 6 decimals: an app repeating the formula lands this close to the inputs.
PREPROCESSING_ATOL = 1e-3


def verify_bundle(path: Path, providers: list[str] | None = None) -> list[Check]:
    """Run every check; a bundle that cannot be read at all raises BundleError instead."""
    bundle = Bundle.open(path)
    checks = integrity_checks(path, bundle.manifest, bundle.model_path)
    if bundle.kind == "generation" and all(c.passed for c in checks):
        checks += check_generation(bundle, providers)
        return checks
    if not all(c.passed for c in checks):
        return checks  # never run a model whose bytes are not vouched for
    from edge_distill.errors import ModelError
    from edge_distill.sessions import open_session

    try:
        session = open_session(bundle.model_path, bundle.model_path.name, providers)
    except ModelError as e:
        return [*checks, Check("model loads", False, e.message[:400])]
    checks += check_spec(session, bundle.manifest)
    if all(c.passed for c in checks):  # golden inputs fit only the model the manifest describes
        checks += check_golden(bundle, session)
    if bundle.kind == "text":
        checks.append(check_text_tokenizer(path, bundle.manifest, bundle.golden()))
    if str(bundle.manifest.get("raw_input", {}).get("kind", "")).startswith("image file"):
        stated = "color_mode" in bundle.manifest.get("preprocessing", {})
        checks.append(Check("image conversion stated", stated, "preprocessing.color_mode says how an image file "
                            "becomes the raw sample" if stated else "preprocessing.color_mode is missing: an app "
                            "cannot know how to convert an image file"))
    return checks


# golden_text.json: the golden strings and the ids tokenizer.json gives them.
GOLDEN_TEXT = Obj({"texts": ListOf(Str(max_length=1_000_000), min_length=1),
                   "input_ids": ListOf(ListOf(Int(0), max_length=1_000_000))}, required={"texts", "input_ids"})


def check_text_tokenizer(bundle: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Check:
    """A text bundle's tokenizer.json turns each golden string into the ids stored beside it, and
    those are the golden vectors' ids (where their mask is 1): what an app's tokenizer must match."""
    from importlib.util import find_spec

    if find_spec("tokenizers") is None:  # a device with numpy and onnxruntime only: the model checks above still ran
        return Check("golden tokenization", True, "not checked here: the tokenizers package is not installed")
    text = manifest["text"]
    paths = [inside(bundle, text[key]) for key in ("tokenizer", "golden_text")]
    if None in paths or any(text[key] not in manifest["files"] for key in ("tokenizer", "golden_text")):
        return Check("golden tokenization", False, "text.tokenizer or text.golden_text is not a file the bundle lists")
    if not {"input:input_ids", "input:attention_mask"} <= set(arrays):
        return Check("golden tokenization", False, "the golden vectors hold no input:input_ids and input:attention_mask")
    try:
        golden = check(read_json(paths[1], error=BundleError), GOLDEN_TEXT, str(paths[1]), BundleError)
        tokenizer = read_tokenizer(paths[0], text["max_length"])
        produced = [encoding.ids for encoding in tokenizer.encode_batch(golden["texts"])]
    except BundleError as e:
        return Check("golden tokenization", False, e.message)
    except BaseException as e:  # noqa: B036 - the tokenizers library's Rust panics are BaseExceptions
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return Check("golden tokenization", False, f"{paths[0].name}: the tokenizers library failed ({describe(e)})")
    rows = len(produced)
    if arrays["input:input_ids"].size % rows or len(golden["input_ids"]) != rows:
        return Check("golden tokenization", False, f"{rows} golden strings, but the stored ids do not hold {rows} rows")
    stored = [row[mask == 1].tolist() for row, mask in
              zip(arrays["input:input_ids"].reshape(rows, -1), arrays["input:attention_mask"].reshape(rows, -1))]
    wrong = [i for i, (ids, expected, vector) in enumerate(zip(produced, golden["input_ids"], stored))
             if ids != expected or ids != vector]
    return Check("golden tokenization", not wrong,
                 f"{rows - len(wrong)}/{rows} golden strings tokenize to their stored ids"
                 + (f"; first mismatch: string {wrong[0]} {golden['texts'][wrong[0]][:60]!r}" if wrong else ""))


def check_generation(bundle: Bundle, providers: list[str] | None = None) -> list[Check]:
    """A generator bundle: the kind's cheap checks (bundle/kinds/generation.py), the model loads as a
    KV-cache decoder of the stated inputs and outputs, and decoding along each golden prompt's stored
    greedy tokens, every step's choice is the stored one or within the logit tolerance of it (a near
    tie: device/decoder.follow); its first-step logits within the tolerance."""
    from edge_distill.bundle.kinds.generation import generation_checks
    from edge_distill.device.decoder import Decoder, describe_divergence, follow
    from edge_distill.errors import ModelError
    from edge_distill.sessions import open_session

    checks, generator = generation_checks(bundle, need_tokenizer=False)
    if generator is None:
        return checks
    try:
        session = open_session(bundle.model_path, bundle.model_path.name, providers)
        decoder = Decoder(session)
    except (ModelError, ValueError) as e:
        return [*checks, Check("model loads", False, (e.message if isinstance(e, ModelError) else str(e))[:400])]
    checks += check_spec(session, bundle.manifest)
    if not all(c.passed for c in checks):
        return checks
    arrays, atol = generator.golden, generator.atol
    try:
        runs = [follow(decoder, prompt, expected.tolist(), atol)
                for prompt, expected in zip(generator.golden_prompts(), arrays["greedy_ids"])]
    except Exception as e:  # onnxruntime's own error types
        return [*checks, Check("golden generation", False, f"the model cannot run the golden prompts: {str(e)[:300]}")]
    same = sum(run["same"] for run in runs)
    ties = sum(run["same"] and not run["exact"] for run in runs)
    failed = [describe_divergence(i, run, atol) for i, run in enumerate(runs) if not run["same"]]
    diff = max(float(np.abs(run["first_logits"] - expected).max()) for run, expected in zip(runs, arrays["first_logits"]))
    checks += [Check("golden greedy ids", not failed, f"{same}/{len(runs)} prompts generate their "
                     f"{arrays['greedy_ids'].shape[1]} stored tokens" + (f" ({ties} through a near tie)" if ties else "")
                     + (f"; {failed[0]}" if failed else "")),
               Check("golden first logits", diff <= atol, f"max abs diff {diff:.3g} (tolerance {atol:.3g})")]
    return checks


def check_spec(session, manifest: dict[str, Any]) -> list[Check]:
    checks = []
    for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        expected = [(t["name"], t["shape"]) for t in manifest[kind]]
        # onnxruntime reports a size declared as neither a number nor a name (or as -1) as None.
        got = [(t.name, [d if isinstance(d, int) else "?" if d is None else str(d) for d in t.shape]) for t in actual]
        shown = "; ".join(f"{name}: {' x '.join(map(str, shape)) or 'scalar'}" for name, shape in got)
        wanted = "; ".join(f"{name}: {' x '.join(map(str, shape)) or 'scalar'}" for name, shape in expected)
        checks.append(Check(f"model {kind}", got == expected,
                            shown if got == expected else f"model has {shown}, manifest says {wanted}"))
    labels = session.get_modelmeta().custom_metadata_map.get(METADATA_PREFIX + "labels")
    try:
        ok = labels is not None and json.loads(labels) == manifest["labels"]
        why = "model metadata_props labels differ or are absent"
    except ValueError:
        ok, why = False, f"model metadata_props {METADATA_PREFIX}labels is not JSON: {labels[:60]!r}"
    checks.append(Check("model metadata labels", ok, "match manifest" if ok else why))
    return checks


def check_golden(bundle: Bundle, session) -> list[Check]:
    manifest = bundle.manifest
    golden = manifest["golden"]
    arrays = bundle.golden()
    if bundle.any_io:
        return check_io_golden(arrays, manifest, session)
    input_name, output_name = manifest["inputs"][0]["name"], manifest["outputs"][0]["name"]
    try:
        logits = session.run([output_name], {input_name: arrays["inputs"]})[0]
    except Exception as e:  # onnxruntime's own error types: wrong shape or dtype for this model
        return [Check("golden logits", False, f"the model cannot run the golden inputs: {str(e).strip()[:300]}")]
    diff = float(np.abs(logits - arrays["logits"]).max())
    atol = float(golden["tolerance"]["logits_atol"])
    agree = int((logits.argmax(axis=1) == arrays["top1"]).sum())
    count = len(arrays["top1"])
    checks = [
        Check("golden logits", diff <= atol, f"max abs diff {diff:.3g} (tolerance {atol:.3g}) on {count} samples"),
        Check("golden top-1", agree == count, f"{agree}/{count} match"),
    ]
    if RAW_GOLDEN in arrays:
        checks.append(check_documented_preprocessing(arrays, manifest))
    return checks


def check_io_golden(arrays: dict[str, np.ndarray], manifest: dict[str, Any], session) -> list[Check]:
    """Golden vectors of a model with any inputs and outputs (`edge-distill optimize`): every
    output within its tolerance, over every sample."""
    from edge_distill.device.runner import golden_differences, golden_feeds

    atol, count = manifest["golden"]["tolerance"]["atol"], manifest["golden"]["count"]
    try:
        diffs = golden_differences(session, *golden_feeds(arrays))
    except Exception as e:  # onnxruntime's own error types: wrong shape or dtype for this model
        return [Check("golden outputs", False, f"the model cannot run the golden inputs: {str(e).strip()[:300]}")]
    return [Check(f"golden {name}", diff <= float(atol[name]),
                  f"max abs diff {diff:.3g} (tolerance {float(atol[name]):.3g}) on {count} samples")
            for name, diff in diffs.items()]


def check_documented_preprocessing(arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> Check:
    """The manifest's preprocessing, applied to the raw golden samples as an app would, must give
    the model inputs: the documented recipe is the one the model was trained with."""
    try:
        derived = normalize(arrays[RAW_GOLDEN], manifest.get("preprocessing", {}))
        diff = float(np.abs(derived - arrays["inputs"]).max())
    except (KeyError, TypeError, ValueError) as e:
        return Check("documented preprocessing", False, f"cannot apply manifest preprocessing ({e})")
    return Check("documented preprocessing", diff <= PREPROCESSING_ATOL,
                 f"raw golden samples through manifest.preprocessing: max abs diff {diff:.2g} "
                 f"(tolerance {PREPROCESSING_ATOL:g})")


def render(checks: list[Check]) -> str:
    lines = [f"{'PASS' if c.passed else 'FAIL'}  {c.name:<24} {c.detail}" for c in checks]
    failed = sum(not c.passed for c in checks)
    lines.append(f"bundle FAILED {failed} of {len(checks)} checks" if failed else f"bundle OK: all {len(checks)} checks passed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify an edge-distill bundle with numpy + onnxruntime only.")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    try:
        checks = verify_bundle(args.bundle)
    except BundleError as e:
        if args.json:
            print(json.dumps({"error": e.message, "hint": e.hint, "exit_code": e.exit_code, "type": type(e).__name__}))
        print(f"Error: {e.message}" + (f"\nHint: {e.hint}" if e.hint else ""), file=sys.stderr)
        return e.exit_code
    ok = all(c.passed for c in checks)
    if args.json:
        print(json.dumps({"bundle": str(args.bundle), "passed": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(render(checks))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
