"""What one `edge-distill sequence` run is (distill/sequence.py trains it): apart, so that the
command and a no-op rerun read it without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

OUTPUTS = ("student.onnx", "vocab.json", "sequence.json")  # what a run writes (publish knows an earlier one by them)


@dataclass(frozen=True)
class SequenceSettings:
    teacher_hidden: int = 256
    student_hidden: int = 48
    steps: int = 400
    batch_size: int = 32
    length: int = 64
    lr: float = 3e-3
    temperature: float = 1.0
    alpha: float = 0.5
    seed: int = 0
