"""A text model to ONNX: inputs `input_ids` and `attention_mask` (int64, batch x sequence, both
dynamic); output `sentence_embedding` (batch x hidden), pooled and normalized in the graph as the
teacher does, or for a classifier `logits` (batch x classes), so that an app feeds token ids and
gets what it needs. Checked against PyTorch at two sequence lengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_distill.errors import ExportParityError, ModelError, describe
from edge_distill.text.teacher import Pooling, batch_ids

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"  # as sentence-transformers names it
LOGITS = "logits"  # as transformers' classifiers name it


def output_name(pooling: Pooling | None) -> str:
    """The model's output: a sentence embedding when it pools, a classifier's logits when not."""
    return LOGITS if pooling is None else OUTPUT_NAME


def sentence_encoder(model, pooling: Pooling | None):
    """`model` (a transformers encoder) with its pooling, or (pooling None) a transformers
    classifier's logits, as one torch module of (ids, mask)."""
    import torch

    from edge_distill.text.teacher import pool

    class SentenceEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = model

        def forward(self, input_ids, attention_mask):  # (B, L) int64, (B, L) int64 -> (B, H) or (B, K)
            outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            return outputs.logits if pooling is None else pool(outputs.last_hidden_state, attention_mask, pooling)

    return SentenceEncoder().eval()


def export_text_encoder(model, pooling: Pooling | None, tokenizer, path: Path, opset: int = 18) -> None:
    """Export with the dynamo exporter, batch and sequence length dynamic."""
    import torch

    from edge_distill.export.onnx_io import quiet_libraries

    encoder = sentence_encoder(model, pooling)
    ids, mask = (torch.from_numpy(a) for a in batch_ids(tokenizer, ["an example sentence", "a second, longer one."]))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    try:
        with quiet_libraries(), torch.no_grad():
            program = torch.onnx.export(encoder, (ids, mask), dynamo=True, input_names=list(INPUT_NAMES),
                                        output_names=[output_name(pooling)], opset_version=opset, verbose=False,
                                        dynamic_shapes=({0: batch, 1: sequence}, {0: batch, 1: sequence}))
            program.save(str(path))
    except OSError:  # a full or read-only disk: its own error, not the model's
        raise
    except Exception as e:
        raise ModelError(f"torch.onnx.export failed for {type(model).__name__}: {describe(e)}",
                         "the encoder must be traceable by torch.export") from e


def check_text_parity(model, pooling: Pooling | None, tokenizer, path: Path, texts: list[str], atol: float = 1e-4
                      ) -> dict[str, float]:
    """Max abs difference between ONNX Runtime and PyTorch on `texts` cut at two lengths (16
    tokens and the tokenizer's own cut), batched with padding: {"16": d, "full": d}."""
    import torch

    from edge_distill.sessions import open_session

    encoder = sentence_encoder(model, pooling)
    session = open_session(path)
    report = {}
    for label, cut in (("16", 16), ("full", None)):
        ids, mask = batch_ids(tokenizer, texts)
        if cut:
            ids, mask = ids[:, :cut], mask[:, :cut]
        with torch.no_grad():
            reference = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        produced = session.run([output_name(pooling)], {"input_ids": ids, "attention_mask": mask})[0]
        report[label] = float(np.abs(produced - reference).max())
        if report[label] > atol:
            raise ExportParityError(f"{path.name}: ONNX Runtime differs from PyTorch by {report[label]:.2e} at "
                                    f"length {ids.shape[1]} (tolerance {atol:g})",
                                    "report it with the model folder: an op exported differently")
    return report
