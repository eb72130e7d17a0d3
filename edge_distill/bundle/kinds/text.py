"""The text kind (`edge-distill text`): a sentence-embedding or text-classification student with its
tokenizer.json. Its golden vectors are the io kind's (ids and masks in, embeddings or logits out,
each output within its tolerance), plus golden_text.json, the strings and the ids they must
tokenize to (`verify` re-tokenizes them). Written by text/bundle.py; its model card is here."""

from __future__ import annotations

from typing import Any

from edge_distill.bundle.kinds.io import tensor_sections


def render_card(manifest: dict[str, Any]) -> str:
    """The README.md of a text bundle, in plain words, from the manifest alone."""
    model, metrics, text = manifest["model"], manifest["metrics"], manifest["text"]
    classifier = manifest["task"] == "text-classification"
    measures = ("accuracy", "teacher_agreement") if classifier else ("recall@10", "ndcg@10", "cosine_to_teacher")
    lengths = list(metrics["p50_ms"])
    table = ["| model | file | " + " | ".join(measures) + " | " + " | ".join(f"p50 ms @{n}" for n in lengths) + " |",
             "|---|---:|" + "---:|" * (len(measures) + len(lengths))]
    for name, quality in metrics["quality"].items():
        p50 = [metrics["p50_ms"][n].get(name) for n in lengths]
        table.append(f"| {name}{' (shipped)' if name == model['variant'] else ''} | "
                     f"{metrics['size_bytes'][name] / 2**20:.2f} MB | "
                     + " | ".join(f"{quality[k]:.4f}" if k in quality else "-" for k in measures) + " | "
                     + " | ".join(f"{v:.3f}" if isinstance(v, float) else "-" for v in p50) + " |")
    device = manifest["profile"]["device"]
    where = device if isinstance(device, str) else device.get("description") or device["name"]
    return "\n".join([
        f"# {'Text classifier' if classifier else 'Sentence embeddings'} ({model['precision']} ONNX, "
        f"{model['parameters']:,} parameters) for {where}",
        "",
        f"Distilled by edge-distill {manifest['generator']['version']} from {manifest['teacher']['folder']} "
        f"({model['teacher_parameters']:,} parameters, {model['teacher_parameters'] / model['parameters']:.1f}x more) "
        f"on {manifest['training']['data']}." + (f" Classes: {', '.join(manifest['labels'])}." if classifier else ""),
        "",
        "## How to run it",
        f"{text['how'][0].upper()}{text['how'][1:]}. At most {text['max_length']} tokens; ONNX Runtime with "
        f"`SessionOptions.intra_op_num_threads = {manifest['runtime']['intra_op_threads']}`.",
        "",
        *tensor_sections(manifest),
        "## Measured figures",
        f"{metrics['task'][0].upper()}{metrics['task'][1:]}; p50 at batch 1, {metrics['threads']} thread(s), teacher "
        "and student timed side by side."
        + (f" {manifest['measurement']['measured_on']}" if "measured_on" in manifest["measurement"] else ""),
        "", *table, "",
        f"Shipped: {model['variant']}: {model['why']}.",
        *(["", "## Warnings", *(f"- {w['message']}" for w in manifest.get("warnings", []))]
          if manifest.get("warnings") else []),
        "",
        "## Checking it",
        f"`golden_text.json` holds {manifest['golden']['count']} held-out strings and the ids tokenizer.json must "
        "give them; `golden.npz` / `golden.json` hold those ids and the outputs this model gave, each within its "
        "tolerance. `edge-distill verify .` checks both.",
        "",
        f"`model.onnx` sha256: `{model['sha256']}`",
        "",
    ])
