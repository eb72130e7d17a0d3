"""How closely a quantized model reproduces its float original, output by output, without labels.

Per output, over held-out samples: signal-to-noise ratio in dB (10 log10 of the reference's energy
over the error's; None when the outputs are identical), the largest absolute error, the mean
cosine similarity per sample where a sample's output has more than one value (over one value it is
always 1), and, where an output is a score vector over a fixed number of classes (its last axis) and
not a recurrent state the model hands back to itself, how often the top-1 class agrees.
"""

from __future__ import annotations

import numpy as np

from edge_distill.onnx_model import TensorSpec


def output_fidelity(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                    outputs: list[TensorSpec], inputs: list[TensorSpec] = ()) -> dict[str, dict]:
    """`reference`, `candidate`: output name -> (N, ...) stacked over the samples; `inputs`: the
    model's, so that an output shaped as one of them counts as a carried state."""
    report = {}
    for spec in outputs:
        ref, got = reference[spec.name].astype(np.float64), candidate[spec.name].astype(np.float64)
        error = np.sum((ref - got) ** 2)
        signal = np.sum(ref ** 2)
        flat_ref, flat_got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
        norms = np.linalg.norm(flat_ref, axis=1) * np.linalg.norm(flat_got, axis=1)
        cosine = np.where(norms > 0, np.sum(flat_ref * flat_got, axis=1) / np.maximum(norms, 1e-300), 1.0)
        row = {
            # None where the outputs are identical: JSON has no infinity.
            "snr_db": None if error == 0 else float(10 * np.log10(max(signal, 1e-300) / error)),
            "max_abs_error": float(np.abs(ref - got).max()) if ref.size else 0.0,
        }
        if flat_ref.shape[1] > 1:
            row["cosine"] = float(cosine.mean())
        if is_class_scores(spec, inputs):
            row["top1_agreement"] = float((ref.argmax(axis=-1) == got.argmax(axis=-1)).mean())
        report[spec.name] = row
    return report


def is_class_scores(spec: TensorSpec, inputs: list[TensorSpec] = ()) -> bool:
    """(batch, classes) or (batch, steps, classes) with a fixed number of classes: a detector's
    (batch, 1, H, W) map or an embedding of symbolic width is not, and neither is a recurrent state
    (an output declared with the shape of one of the inputs, which the caller feeds back)."""
    carried = any(len(i.dims) == len(spec.dims) and all(a == b or not isinstance(a, int) or not isinstance(b, int)
                                                          for a, b in zip(i.dims, spec.dims)) for i in inputs)
    return (spec.is_float and len(spec.dims) in (2, 3) and isinstance(spec.dims[-1], int) and spec.dims[-1] > 1
            and not carried)


def worst_snr(report: dict[str, dict]) -> float:
    """The lowest SNR over the outputs; inf when every output is identical."""
    return min(float("inf") if row["snr_db"] is None else row["snr_db"] for row in report.values())
