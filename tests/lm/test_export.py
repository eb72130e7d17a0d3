"""The KV-cache decoder: parity with transformers on a prefill and 32 greedy decode steps, for the
teacher's whole vocabulary and for a student with a cut vocabulary; left padding in a batch."""

import numpy as np
import pytest

from edge_distill.errors import ExportParityError


@pytest.fixture(scope="module")
def teacher(tiny_llama):
    from edge_distill.lm.teacher import TeacherSource, load_teacher

    return load_teacher(TeacherSource(tiny_llama))


def test_whole_vocabulary_decoder_matches_transformers_over_32_steps(teacher, tmp_path):
    from edge_distill.lm.export import check_parity, export_decoder

    export_decoder(teacher.model, tmp_path / "d.onnx")
    worst = check_parity(teacher.model, tmp_path / "d.onnx", [5, 6, 7, 8])
    assert worst["steps"] == 32 and max(worst["prefill"], worst["decode"], worst["transformers"]) < 1e-4


def test_cut_vocabulary_student_scores_every_teacher_token(teacher, tmp_path):
    import torch

    from edge_distill.device.decoder import Decoder
    from edge_distill.lm.export import check_parity, export_decoder
    from edge_distill.lm.student import LMTrainingSettings, make_student
    from edge_distill.sessions import open_session

    vocab = teacher.facts.vocab_size
    kept = np.arange(3, 60, dtype=np.int64)
    student = make_student(teacher.model, kept, LMTrainingSettings(layers=2)).eval()
    export_decoder(student, tmp_path / "s.onnx", kept, vocab)
    check_parity(student, tmp_path / "s.onnx", [5, 6, 7], kept)
    logits = Decoder(open_session(tmp_path / "s.onnx")).start(np.asarray([[5, 6, 7, 200]])).logits[0]
    assert logits.shape == (vocab,)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    unkept = np.setdiff1d(np.arange(vocab), kept)
    # The left-out tokens share the "other" row's probability evenly, and everything sums to one.
    assert np.allclose(probabilities[unkept], probabilities[unkept[0]])
    with torch.no_grad():
        own = student(input_ids=torch.tensor([[5 - 3, 6 - 3, 7 - 3, len(kept)]])).logits[0, -1].softmax(-1).numpy()
    assert probabilities[unkept].sum() == pytest.approx(own[-1], rel=1e-4)
    assert probabilities[kept] == pytest.approx(own[:-1], rel=1e-3, abs=1e-7)


def test_left_padded_batch_gives_each_row_its_own_logits(teacher, tmp_path):
    from edge_distill.device.decoder import Decoder
    from edge_distill.lm.export import export_decoder
    from edge_distill.sessions import open_session

    export_decoder(teacher.model, tmp_path / "d.onnx")
    decoder = Decoder(open_session(tmp_path / "d.onnx"))
    alone = decoder.start(np.asarray([[9, 10]])).logits[0]
    batch = decoder.start(np.asarray([[5, 6, 7, 8], [0, 0, 9, 10]]), np.asarray([[1, 1, 1, 1], [0, 0, 1, 1]]))
    assert np.abs(batch.logits[1] - alone).max() < 1e-4
    step_alone = decoder.advance(decoder.start(np.asarray([[9, 10]])), np.asarray([[11]])).logits[0]
    assert np.abs(decoder.advance(batch, np.asarray([[11], [11]])).logits[1] - step_alone).max() < 1e-4


def test_a_decoder_that_drifts_from_pytorch_is_refused(teacher, tmp_path):
    import torch

    from edge_distill.lm.export import check_parity, export_decoder

    export_decoder(teacher.model, tmp_path / "d.onnx")
    changed = type(teacher.model)(teacher.model.config).eval()
    changed.load_state_dict(teacher.model.state_dict())
    with torch.no_grad():
        changed.model.norm.weight.mul_(1.5)
    with pytest.raises(ExportParityError, match="prefill step 0"):
        check_parity(changed, tmp_path / "d.onnx", [5, 6, 7])
