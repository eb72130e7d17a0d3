"""Per-layer quantization sensitivity with ONNX Runtime's QDQ debugging helpers.

For each node of the float model that was quantized, three signal-to-quantization-noise ratios
(dB; higher is better) on real samples:
- activation: its output before vs after its own QuantizeLinear/DequantizeLinear pair (the error
  this tensor's int8 range adds locally);
- cumulative: its output in the QDQ model vs the float model (the error accumulated up to here);
- weight: its weight tensor vs the dequantized int8 weight.
The lowest of activation and weight SNR ranks the node: keeping the top-ranked nodes in float is
the cheapest repair of an int8 model that misses its accuracy budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_activation_error,
    compute_weight_error,
    create_activation_matching,
    create_weight_matching,
    modify_model_output_intermediate_tensors,
)

from edge_distill.export.onnx_io import quiet_libraries
from edge_distill.export.quantize import ArrayCalibrationReader, FeedReader


def layer_sensitivity(float_model: Path, qdq_model: Path, x, workdir: Path) -> list[dict]:
    """Rows per quantized node, most sensitive first. `float_model` is the pre-processed fp32 model
    the QDQ model was made from (their tensor names match); `x`: an array of samples of its only
    input, or a sequence of feeds of every input by name."""
    graph = onnx.load(str(float_model)).graph

    def reader():
        return ArrayCalibrationReader(graph.input[0].name, x) if isinstance(x, np.ndarray) else FeedReader(x)

    with quiet_libraries():
        activations = {}
        for role, model in (("float", float_model), ("qdq", qdq_model)):
            augmented = workdir / f"debug-{role}.onnx"
            modify_model_output_intermediate_tensors(str(model), str(augmented))
            activations[role] = collect_activations(str(augmented), reader())
        activation_error = compute_activation_error(create_activation_matching(activations["qdq"], activations["float"]))
        # ORT's SNR helper takes len() of each weight: scalar weights (a real graph's 0-d Mul
        # constants) would crash it, and one scalar says little about a layer anyway.
        matching = {name: pair for name, pair in create_weight_matching(str(float_model), str(qdq_model)).items()
                    if np.ndim(pair["float"]) > 0}
        weight_error = compute_weight_error(matching)
    rows = []
    for node in graph.node:
        errors = [activation_error[t] for t in node.output if t in activation_error]
        weights = [weight_error[t] for t in node.input if t in weight_error]
        if not errors and not weights:
            continue  # left in float by the quantizer
        activation_snr = min((e["qdq_err"] for e in errors if "qdq_err" in e), default=None)
        cumulative_snr = min((e["xmodel_err"] for e in errors if "xmodel_err" in e), default=None)
        weight_snr = min(weights, default=None)
        scores = [v for v in (activation_snr, weight_snr) if v is not None]
        rows.append({
            "node": node.name,
            "op_type": node.op_type,
            "activation_snr_db": _round(activation_snr),
            "cumulative_snr_db": _round(cumulative_snr),
            "weight_snr_db": _round(weight_snr),
            "score_db": _round(min(scores)) if scores else None,
        })
    return sorted(rows, key=lambda r: (r["score_db"] is None, r["score_db"] if r["score_db"] is not None else 0.0))


def sensitivity_table(rows: list[dict]) -> str:
    """A readable table of `layer_sensitivity` rows."""
    def cell(value):
        return "-" if value is None else f"{value:.1f}"

    lines = [f"{'node':<28}{'op':<12}{'act SNR dB':>11}{'cumul. dB':>11}{'weight dB':>11}"]
    lines += [f"{r['node'][:27]:<28}{r['op_type']:<12}{cell(r['activation_snr_db']):>11}"
              f"{cell(r['cumulative_snr_db']):>11}{cell(r['weight_snr_db']):>11}" for r in rows]
    return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)
