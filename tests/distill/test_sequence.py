"""Sequence distillation on a few hundred characters of made-up text, tiny models."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edge_distill.distill.sequence import CharGRU, SequenceSettings, bits_per_character, distill_sequence, encode


@pytest.mark.slow
def test_kd_student_learns_the_teachers_distribution_and_exports(tmp_path):
    text_file = tmp_path / "text.txt"
    text_file.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    settings = SequenceSettings(teacher_hidden=32, student_hidden=8, steps=60, batch_size=8, length=16, alpha=0.9)
    report = distill_sequence(tmp_path / "out", settings, text_file)
    models = report["models"]
    assert models["teacher"]["params"] > 5 * models["student_kd"]["params"]
    # A repeated sentence is easy: every model must beat a uniform guess over the vocabulary.
    uniform = np.log2(report["vocab_size"])
    assert all(m["held_out_bits_per_char"] < uniform for m in models.values())
    # KD's claim: the KD student predicts like the teacher, closer than the same student trained alone.
    assert models["student_kd"]["held_out_kl_to_teacher_bits"] < models["student_scratch"]["held_out_kl_to_teacher_bits"]
    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text())
    session = ort.InferenceSession(str(tmp_path / "out" / "student.onnx"))
    tokens = np.array([[vocab.index(c) for c in "the quick brown "]], dtype=np.int64)
    logits = session.run(None, {"tokens": tokens})[0]
    assert logits.shape == (1, 16, len(vocab))


def test_bits_per_character_of_a_uniform_model():
    tokens, vocab = encode("abcd" * 100)
    model = CharGRU(len(vocab), 4)
    torch.nn.init.zeros_(model.out.weight)
    torch.nn.init.zeros_(model.out.bias)
    assert bits_per_character(model, tokens, length=16) == pytest.approx(2.0)  # log2(4)
