"""The KV-cache decoder onnxruntime-genai's builder writes: parity with transformers on a prefill
and 32 greedy decode steps, for the teacher's whole vocabulary and for a student with a cut
vocabulary (our graph edit); the builder's failures as one line."""

import numpy as np
import pytest

from edge_distill.errors import ExportParityError, ModelError


@pytest.fixture(scope="module")
def teacher(tiny_llama):
    from edge_distill.lm.teacher import TeacherSource, load_teacher

    return load_teacher(TeacherSource(tiny_llama))


@pytest.fixture(scope="module")
def whole(tiny_llama, tmp_path_factory):
    """The tiny teacher's fp32 decoder, the teacher's whole vocabulary."""
    from edge_distill.lm.export import build_decoder

    path = tmp_path_factory.mktemp("whole") / "d.onnx"
    config = build_decoder(tiny_llama, tiny_llama / "tokenizer.json", path, "fp32")
    return path, config


def test_whole_vocabulary_decoder_matches_transformers_over_32_steps(teacher, whole):
    import onnx

    from edge_distill.lm.export import check_parity

    worst = check_parity(teacher.model, whole[0], [5, 6, 7, 8])
    assert worst["steps"] == 32 and max(worst["prefill"], worst["decode"]) < 1e-4
    ops = {node.op_type for node in onnx.load(str(whole[0])).graph.node}
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= ops  # the builder's fused graph
    assert whole[1]["model"]["decoder"]["filename"] == "model.onnx" and whole[1]["model"]["vocab_size"] == 300


def test_cut_vocabulary_student_scores_every_teacher_token(teacher, tiny_llama, tmp_path):
    import torch

    from edge_distill.device.decoder import Decoder
    from edge_distill.lm.export import build_decoder, check_parity
    from edge_distill.lm.student import LMTrainingSettings, make_student, save_student
    from edge_distill.sessions import open_session

    vocab = teacher.facts.vocab_size
    kept = np.arange(3, 60, dtype=np.int64)
    student = make_student(teacher.model, kept, LMTrainingSettings(layers=2)).eval()
    save_student(student, kept, tmp_path / "student")
    config = build_decoder(tmp_path / "student", tiny_llama / "tokenizer.json", tmp_path / "s.onnx", "fp32", kept, vocab)
    assert config["model"]["vocab_size"] == vocab  # genai reads and writes the teacher's ids too
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


def test_a_batch_of_equal_rows_gives_each_row_its_own_logits(whole):
    """held_out_quality reads held-out windows in batches of one prefill each."""
    from edge_distill.device.decoder import Decoder
    from edge_distill.sessions import open_session

    decoder = Decoder(open_session(whole[0]))
    alone = decoder.start(np.asarray([[9, 10, 11, 12]])).logits[0]
    batch = decoder.start(np.asarray([[5, 6, 7, 8], [9, 10, 11, 12]]))
    assert np.abs(batch.logits[1] - alone).max() < 1e-4
    step_alone = decoder.advance(decoder.start(np.asarray([[9, 10, 11, 12]])), np.asarray([[13]])).logits[0]
    assert np.abs(decoder.advance(batch, np.asarray([[13], [13]])).logits[1] - step_alone).max() < 1e-4


def test_a_decoder_that_drifts_from_pytorch_is_refused(teacher, whole):
    import torch

    from edge_distill.lm.export import check_parity

    changed = type(teacher.model)(teacher.model.config).eval()
    changed.load_state_dict(teacher.model.state_dict())
    with torch.no_grad():
        changed.model.norm.weight.mul_(1.5)
    with pytest.raises(ExportParityError, match="prefill step 0"):
        check_parity(changed, whole[0], [5, 6, 7])


def test_a_head_size_the_cpu_attention_cannot_run_is_one_line(tmp_path):
    """onnxruntime's GroupQueryAttention on CPU needs a head size that is a multiple of 16."""
    from edge_distill.lm.export import build_decoder
    from tests.lm.conftest import tiny_llama_folder

    folder = tiny_llama_folder(tmp_path / "narrow", layers=1, hidden_size=32)  # 4 heads of 8
    with pytest.raises(ModelError, match="head_dim is 8, not a multiple of 16"):
        build_decoder(folder, folder / "tokenizer.json", tmp_path / "d.onnx", "fp32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["narrow"]  # nothing half-written
