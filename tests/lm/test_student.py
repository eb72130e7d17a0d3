"""The student: the tokens it keeps, the layers it takes, and training that learns."""

import numpy as np
import pytest

from edge_distill.errors import ConfigError
from edge_distill.lm.student import LMTrainingSettings, kept_vocabulary, layer_choice, student_map


def test_kept_vocabulary_is_the_most_frequent_tokens_plus_eos():
    train = np.asarray([[5, 5, 5, 6, 6, 7, 9, 9, 9, 9]])
    assert kept_vocabulary(train, 12, keep=2, min_count=1, always=(2,)).tolist() == [2, 5, 9]
    assert kept_vocabulary(train, 12, keep=0, min_count=2, always=(2,)).tolist() == [2, 5, 6, 9]


def test_student_map_sends_left_out_tokens_to_the_other_row():
    kept = np.asarray([2, 5, 9])
    assert student_map(kept, 11).tolist() == [3, 3, 0, 3, 3, 1, 3, 3, 3, 2, 3]


def test_layers_are_the_first_ones_and_the_last():
    assert layer_choice(30, 4) == [0, 1, 2, 29]
    assert layer_choice(30, 1) == [0]
    assert layer_choice(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="--layers 31: the teacher has 30"):
        layer_choice(30, 31)


def test_bad_training_settings_name_the_flag():
    with pytest.raises(ConfigError, match="--kd 'sequence'"):
        LMTrainingSettings(kd="sequence")
    with pytest.raises(ConfigError, match="--alpha"):
        LMTrainingSettings(alpha=1.5)


def test_student_starts_from_the_teachers_layers_and_rows(tiny_llama):
    import torch

    from edge_distill.lm.student import make_student
    from edge_distill.lm.teacher import TeacherSource, load_teacher

    teacher = load_teacher(TeacherSource(tiny_llama)).model
    kept = np.asarray([3, 4, 10])
    student = make_student(teacher, kept, LMTrainingSettings(layers=2))
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    assert torch.equal(student.model.embed_tokens.weight[:3], teacher.model.embed_tokens.weight[kept])
    random = make_student(teacher, kept, LMTrainingSettings(layers=2, init="random"))
    assert not torch.equal(random.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)


def test_token_kd_moves_the_student_towards_the_teachers_distribution(tiny_llama):
    """Trained on the teacher's top-k targets alone (alpha 1), the student's cross-entropy against
    those targets falls: the KD term is wired to the right ids and probabilities."""
    import torch

    from edge_distill.lm.student import make_student, train_student
    from edge_distill.lm.teacher import TeacherSource, load_teacher

    teacher = load_teacher(TeacherSource(tiny_llama)).model
    vocab = teacher.config.vocab_size
    train = np.random.default_rng(0).integers(3, vocab, (16, 9)).astype(np.int32)
    with torch.no_grad():
        values, ids = teacher(torch.from_numpy(train[:, :-1].astype(np.int64))).logits.log_softmax(-1).topk(8, -1)
    targets = (ids.numpy().astype(np.int32), values.numpy().astype(np.float16))
    kept = np.arange(vocab)
    settings = LMTrainingSettings(layers=1, alpha=1.0, epochs=40, learning_rate=1e-2, init="random")
    student = make_student(teacher, kept, settings)

    def kd_loss():
        with torch.no_grad():
            logq = student(input_ids=torch.from_numpy(train[:, :-1].astype(np.int64))).logits.log_softmax(-1)
        p = torch.from_numpy(targets[1].astype(np.float32)).exp()
        return float((-(p * logq.gather(-1, torch.from_numpy(targets[0].astype(np.int64)))).sum(-1) / p.sum(-1)).mean())

    before = kd_loss()
    train_student(student, train, targets, student_map(kept, vocab), settings, lambda _: None)
    assert kd_loss() < 0.7 * before
