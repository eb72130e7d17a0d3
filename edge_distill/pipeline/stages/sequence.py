"""The stage of `edge-distill sequence`: teacher, scratch student and KD student trained on the
text, the KD student exported (distill/sequence.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge_distill.pipeline.stage import Stage


class SequenceStage(Stage):
    name = "sequence"
    description = "Train a character-level GRU teacher, a student from scratch and a KD student; export the KD student."
    version = 1
    outputs = ("student.onnx", "vocab.json", "sequence.json")
    trains = True

    def __init__(self, settings, text: Path | None):
        self.settings, self.text = settings, text  # settings: distill.sequence_settings.SequenceSettings

    def params(self):
        # The default text is scikit-learn's installed descriptions: its version is in every key.
        return {"settings": dataclasses.asdict(self.settings), "text": "default" if self.text is None else "--text"}

    def external_files(self):
        return {} if self.text is None else {"--text": self.text}

    def run(self, inputs, out, progress):
        from edge_distill.distill.sequence import distill_sequence

        distill_sequence(out, self.settings, self.text, progress=progress)
