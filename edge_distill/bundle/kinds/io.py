"""The io kind (`edge-distill optimize`, and the io golden vectors a text bundle holds): a model
with any inputs and outputs; golden vectors are held-out feeds with the shipped model's outputs
(`verify` requires every output within its tolerance), and the manifest says which variant ships
and why, with both variants' figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_distill import __version__
from edge_distill.bundle.writer import GOLDEN_ATOL_SHARE, profile_section
from edge_distill.config import BuildConfig
from edge_distill.hashing import sha256

if TYPE_CHECKING:
    from edge_distill.export.budget import Budget, Judgement

# Hashed in manifest["files"] with README.md.
BUNDLE_FILES = ("model.onnx", "golden.npz", "golden.json")
GOLDEN_COUNT = 8  # held-out feeds in the golden vectors (optimize's samples, text's strings)


def write_io_golden(model: Path, feeds: list[dict], outputs, out: Path) -> dict[str, Any]:
    """Held-out feeds and the shipped model's outputs on them, for `verify` anywhere: arrays named
    input:NAME and output:NAME, one row per sample."""
    import numpy as np

    from edge_distill.sessions import run_model

    produced = run_model(model, feeds)
    arrays = {f"input:{name}": np.stack([f[name] for f in feeds]) for name in feeds[0]}
    arrays |= {f"output:{name}": values for name, values in produced.items()}
    atol = {spec.name: (GOLDEN_ATOL_SHARE * float(np.abs(produced[spec.name]).max()) if spec.is_float else 0.0)
            for spec in outputs}
    np.savez(out / "golden.npz", **arrays)
    (out / "golden.json").write_text(json.dumps({name: a.tolist() for name, a in arrays.items()}) + "\n")
    return {
        "kind": "io",
        "npz": "golden.npz",
        "json": "golden.json",
        "count": len(feeds),
        "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.name} for name, a in arrays.items()},
        "tolerance": {"atol": atol, "why": f"{GOLDEN_ATOL_SHARE:.1%} of each float output's largest |value|; "
                                            "integer outputs exact"},
        "source": "held-out calibration samples; outputs from ONNX Runtime's CPU provider on this machine",
    }


def io_manifest(config: BuildConfig, source: Path, model: Path, fixed: dict[str, tuple[int, ...]], golden: dict,
                variants: dict[str, Path], timing: dict, budget: Budget, judgement: Judgement, threads: int,
                decision: dict) -> dict[str, Any]:
    """The manifest of an optimize bundle (docs/manifest.md), but for its file hashes: the shipped
    `model`'s inputs and outputs with the `fixed` shapes used, both variants' figures (latency at
    the shipped thread count), the thread count to run it with, and the `decision` (precision, why,
    quantization, notes)."""
    from edge_distill.export.budget import default_opset
    from edge_distill.onnx_model import model_tensors
    from edge_distill.onnx_model import load_onnx
    from edge_distill.measure.harness import measurement_note

    inputs, outputs = model_tensors(load_onnx(model), "the shipped model")
    at_threads = {row["variant"]: row for row in timing["rows"] if row["threads"] == threads}
    return {
        "generator": {"name": "edge-distill", "version": __version__, "command": "optimize"},
        # The benchmark settings `edge-distill bench` times the bundle with, here or on the device.
        "profile": profile_section(config),
        "model": {"file": "model.onnx", "sha256": sha256(model), "size_bytes": model.stat().st_size, **decision,
                  "source": {"file": source.name, "sha256": sha256(source), "opset": default_opset(source)}},
        "inputs": [t.as_manifest(fixed[t.name]) for t in inputs],
        "outputs": [t.as_manifest() for t in outputs],
        "labels": [],
        "golden": golden,
        # What the app sets (SessionOptions.intra_op_num_threads), and `bench` times with.
        "runtime": {"intra_op_threads": threads,
                    "why": (f"fastest of {', '.join(map(str, timing['threads']))} thread(s) measured on "
                            f"{timing['where']}" if timing["for_device"] else
                            "the profile's benchmark.threads: not measured on the device")},
        "metrics": [{"variant": name, "size_bytes": path.stat().st_size,
                     "latency_ms": {k: v for k, v in at_threads.get(name, {}).items() if k not in ("variant", "threads")},
                     "fidelity": judgement.fidelity if name == "int8" else None,
                     "accuracy": judgement.accuracy[name] if judgement.accuracy else None}
                    for name, path in variants.items()],
        "judgement": {"int8_within_budget": judgement.ok, "summary": judgement.summary,
                      "rule": "accuracy" if judgement.accuracy else "snr"}
                     | ({"accuracy": judgement.accuracy, "max_accuracy_drop": budget.max_accuracy_drop}
                        if judgement.accuracy else {"min_snr_db": budget.min_snr_db}),
        "measurement": {"host": timing["host"], "where": timing["where"], "threads": threads,
                        "provider": config.benchmark.providers[0],
                        "interleaved": "fp32 and int8 at each thread count timed in alternating rounds on one sample",
                        "candidates": timing["rows"],
                        "measured_on": (f"measured on the device ({timing['where']})" if timing["where"] != "this host"
                                        else measurement_note(timing["host"], config.device))},
    }


def tensor_lines(tensors: list[dict[str, Any]]) -> list[str]:
    """Markdown table rows of a manifest's inputs or outputs: name, dtype, shape, and the shape fed
    here where one was fixed."""
    fixed = any("fixed_shape" in t for t in tensors)

    def shape(dims: list) -> str:
        return " x ".join(map(str, dims)) or "scalar"

    rows = ["| name | dtype | shape |" + (" fed here |" if fixed else ""), "|---|---|---|" + ("---|" if fixed else "")]
    return rows + [f"| `{t['name']}` | {t['dtype']} | {shape(t['shape'])} |"
                   + (f" {shape(t.get('fixed_shape', t['shape']))} |" if fixed else "") for t in tensors]


def tensor_sections(manifest: dict[str, Any]) -> list[str]:
    """A model card's "Inputs" and "Outputs" sections (the io and text kinds' cards)."""
    return ["## Inputs", "", *tensor_lines(manifest["inputs"]), "",
            "## Outputs", "", *tensor_lines(manifest["outputs"]), ""]


def render_card(manifest: dict[str, Any]) -> str:
    """The README.md of an optimize bundle, in plain words, from the manifest alone."""
    model, device = manifest["model"], manifest["profile"]["device"]
    golden, measurement = manifest["golden"], manifest["measurement"]
    variants = ["| variant | file | p50 ms | worst output SNR dB | accuracy |", "|---|---:|---:|---:|---:|"]
    for row in manifest["metrics"]:
        snr = [f["snr_db"] for f in (row["fidelity"] or {}).values() if f.get("snr_db") is not None]
        p50 = row["latency_ms"].get("p50")
        variants.append(f"| {row['variant']}{' (shipped)' if row['variant'] == model['precision'] else ''} | "
                        f"{row['size_bytes'] / 2**20:.2f} MB | {f'{p50:.4f}' if p50 is not None else '-'} | "
                        f"{f'{min(snr):.1f}' if snr else '-'} | "
                        f"{row['accuracy'] if row['accuracy'] is not None else '-'} |")
    return "\n".join([
        f"# {model['source']['file']}, {model['precision']} for {device.get('description') or device['name']}",
        "",
        f"Made by edge-distill {manifest['generator']['version']} (`optimize`, profile "
        f"`{manifest['profile']['name']}`) from `{model['source']['file']}` (sha256 `{model['source']['sha256']}`, "
        f"opset {model['source']['opset']}).",
        "",
        *tensor_sections(manifest),
        "## How to run it",
        f"ONNX Runtime with `{measurement['provider']}`, `SessionOptions.intra_op_num_threads = "
        f"{manifest['runtime']['intra_op_threads']}` ({manifest['runtime']['why']}).",
        "",
        "## Measured figures",
        f"{measurement['measured_on']} Float and int8 timed side by side in interleaved rounds on one sample, at "
        f"{measurement['threads']} thread(s):",
        "", *variants, "",
        f"Shipped: {model['precision']}: {model['why']}.",
        f"int8 judged by {manifest['judgement']['rule']}: {manifest['judgement']['summary']}.",
        *(["", "Notes:", *(f"- {note}" for note in model.get("notes", []))] if model.get("notes") else []),
        "",
        "## Checking it",
        f"`golden.npz` / `golden.json` hold {golden['count']} held-out feeds (`input:NAME`) and the outputs this "
        f"model gave (`output:NAME`); every output must come within its tolerance ({golden['tolerance']['why']}). "
        "`edge-distill verify .` checks them, and `edge-distill bench . --remote HOST` on a device.",
        "",
        f"`model.onnx` sha256: `{model['sha256']}`",
        "",
    ])
