"""The student: the tokens it keeps, the layers it takes, and training that learns."""

import json

import numpy as np
import pytest

from edge_distill.errors import ConfigError
from edge_distill.lm.student import LMTrainingSettings, kept_vocabulary, layer_choice, student_map
from tests.lm.conftest import tiny_settings


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


def test_layers_by_influence_are_the_most_influential_in_order():
    influence = np.asarray([0.9, 0.01, 0.3, 0.02, 0.5])
    assert layer_choice(5, 3, influence) == [0, 2, 4]
    assert layer_choice(5, 1, influence) == [0]


def test_block_influence_measures_how_far_each_layer_turns_its_input(tiny_llama):
    """ShortGPT's block influence, 1 - cos(a layer's input, its output): zero for a layer made to
    pass its input through (its output projections zeroed), above zero for the others."""
    import copy

    import torch

    from edge_distill.lm.student import block_influence
    from edge_distill.lm.teacher import TeacherSource, load_teacher

    teacher = copy.deepcopy(load_teacher(TeacherSource(tiny_llama)).model)
    with torch.no_grad():  # layer 2 adds nothing to the residual stream
        teacher.model.layers[2].self_attn.o_proj.weight.zero_()
        teacher.model.layers[2].mlp.down_proj.weight.zero_()
    influence = block_influence(teacher, np.random.default_rng(0).integers(3, 200, size=(4, 17)))
    assert influence.shape == (4,) and abs(influence[2]) < 1e-7 and (np.delete(influence, 2) > 1e-4).all()


def test_early_stopping_keeps_the_best_epochs_student_judged_on_held_back_windows(tiny_llama, tiny_text):
    """--patience: the last windows are judged after each epoch, not trained on; training stops
    after `patience` epochs without gain, and the student returned is the best epoch's (its
    perplexity on those windows is the lowest judged)."""
    from edge_distill.lm.data import split_windows
    from edge_distill.lm.student import make_student, student_perplexity, train_student
    from edge_distill.lm.teacher import TeacherSource, load_teacher, load_tokenizer
    from edge_distill.text.corpus import read_passages

    source = TeacherSource(tiny_llama)
    passages = read_passages(tiny_text)
    text, _ = split_windows(load_tokenizer(source), passages, passages, 2, 16, 24, 8, "test")
    teacher = load_teacher(source).model
    # The 8 windows held back are random ids, unlike the text: the student's score on them stops
    # improving well before the 12 epochs asked (measured: at epoch 8).
    noise = np.random.default_rng(0).integers(3, teacher.config.vocab_size, size=(8, text.shape[1]))
    train = np.concatenate([text, noise]).astype(text.dtype)
    kept = np.arange(teacher.config.vocab_size - 20)
    settings = LMTrainingSettings(layers=2, kd="none", epochs=12, patience=1)
    student = make_student(teacher, kept, settings)
    report = train_student(student, train, None, kept, teacher.config.vocab_size, settings, lambda _: None)
    stopped = report["early_stopping"]
    assert stopped["held_back_windows"] == 8 and len(stopped["perplexity_per_epoch"]) == stopped["epochs_run"]
    assert stopped["epochs_run"] < 12 and stopped["epochs_run"] - stopped["best_epoch"] == 1
    best = min(stopped["perplexity_per_epoch"])
    assert student_perplexity(student, train[-8:], kept, teacher.config.vocab_size) == pytest.approx(best, rel=1e-4)


def test_bad_training_settings_name_the_flag():
    with pytest.raises(ConfigError, match="--kd 'sequences'"):
        LMTrainingSettings(kd="sequences")
    with pytest.raises(ConfigError, match="--alpha"):
        LMTrainingSettings(alpha=1.5)
    with pytest.raises(ConfigError, match="--divergence 'kl': unknown"):
        LMTrainingSettings(divergence="kl")
    with pytest.raises(ConfigError, match="--on-policy-share"):
        LMTrainingSettings(on_policy_share=2.0)
    with pytest.raises(ConfigError, match="--layer-choice 'middle': unknown"):
        LMTrainingSettings(layer_choice="middle")
    with pytest.raises(ConfigError, match="--patience -1"):
        LMTrainingSettings(patience=-1)


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
    train_student(student, train, targets, kept, vocab, settings, lambda _: None)
    assert kd_loss() < 0.7 * before


def test_sampled_continuations_carry_the_models_own_top_k_at_every_position(tiny_llama):
    """The top-k kept while sampling through the KV cache is what one full forward pass over the
    sampled ids gives (sequence-level KD's targets line up with its tokens), the prompt is kept, and
    a banned id is never sampled."""
    import torch

    from edge_distill.lm.student import sample_continuation
    from edge_distill.lm.teacher import TeacherSource, load_teacher

    teacher = load_teacher(TeacherSource(tiny_llama)).model
    prompt = torch.from_numpy(np.random.default_rng(1).integers(3, 300, (3, 5)))
    tokens, (values, ids) = sample_continuation(teacher, prompt, 7, torch.Generator().manual_seed(0), banned=7,
                                                top_k=4)
    assert tokens.shape == (3, 12) and torch.equal(tokens[:, :5], prompt) and values.shape == ids.shape == (3, 11, 4)
    with torch.no_grad():
        full_values, full_ids = teacher(input_ids=tokens[:, :-1]).logits.log_softmax(-1).topk(4, -1)
    assert torch.equal(ids, full_ids) and torch.allclose(values, full_values, atol=1e-4)
    flatter = type(teacher)(teacher.config).eval()  # the same model with softer logits, to sample widely
    flatter.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        flatter.lm_head.weight.div_(10)
    many, _ = sample_continuation(flatter, prompt.repeat(20, 1), 20, torch.Generator().manual_seed(0), banned=7)
    assert 7 not in many[:, 5:] and len(many[:, 5:].unique()) > 20  # sampled, not greedy


def test_generalized_jsd_is_forward_kl_reverse_kl_and_between_them_symmetric_at_one_half():
    import torch

    from edge_distill.lm.student import generalized_jsd

    p = torch.tensor([[0.7, 0.2, 0.1]]).log()
    q = torch.tensor([[0.2, 0.5, 0.3]]).log()
    forward = float((p.exp() * (p - q)).sum())  # KL(teacher || student)
    assert float(generalized_jsd(q, p, 0.0)) == pytest.approx(forward)
    assert float(generalized_jsd(q, p, 1.0)) == pytest.approx(float((q.exp() * (q - p)).sum()))
    jsd = float(generalized_jsd(q, p, 0.5))
    assert 0 < jsd < min(forward, float((q.exp() * (q - p)).sum())) and jsd == pytest.approx(float(generalized_jsd(p, q, 0.5)))
    assert float(generalized_jsd(p, p, 0.5)) == pytest.approx(0.0, abs=1e-7)


def test_the_teachers_distribution_in_the_students_space_gives_the_tokens_left_out_to_the_other_row():
    import torch

    from edge_distill.lm.student import teacher_in_student_space

    teacher = torch.tensor([[0.1, 0.4, 0.2, 0.3]]).log()
    projected = teacher_in_student_space(teacher, torch.tensor([1, 3]), torch.tensor([0, 2])).exp()
    assert projected.tolist()[0] == pytest.approx([0.4, 0.3, 0.3])
    every = teacher_in_student_space(teacher, torch.arange(4), torch.tensor([], dtype=torch.long))
    assert every.exp().sum() == pytest.approx(1.0) and torch.isfinite(every).all()


def test_on_policy_kd_moves_the_student_towards_the_teacher_on_its_own_samples(tiny_llama):
    """Every batch on-policy (share 1): the student samples, the teacher scores, and the forward KL
    from the teacher on fresh samples falls; the report counts the on-policy batches."""
    import torch

    from edge_distill.lm.student import generalized_jsd, make_student, sample_continuation, teacher_in_student_space, \
        train_student
    from edge_distill.lm.teacher import TeacherSource, load_teacher

    teacher = load_teacher(TeacherSource(tiny_llama)).model
    vocab = teacher.config.vocab_size
    kept = np.arange(3, vocab)  # the special tokens share the other row
    train = np.random.default_rng(0).integers(3, vocab, (16, 13)).astype(np.int32)
    train[:, 0] = 1  # an opening with a token left out: the teacher reads it as itself
    settings = LMTrainingSettings(layers=1, kd="on-policy", on_policy_share=1.0, divergence="forward", prompt_tokens=4,
                                  epochs=30, learning_rate=1e-2, init="random")
    student = make_student(teacher, kept, settings)
    mapping = torch.from_numpy(student_map(kept, vocab))
    prompts = mapping[torch.from_numpy(train[:, :4].astype(np.int64))][:, 1:]

    def divergence():
        sampled, _ = sample_continuation(student, prompts, 8, torch.Generator().manual_seed(5), banned=len(kept))
        with torch.no_grad():
            teacher_logp = teacher(input_ids=torch.from_numpy(kept)[sampled[:, :-1]]).logits.log_softmax(-1)
            logq = student(input_ids=sampled[:, :-1]).logits.log_softmax(-1)
        return float(generalized_jsd(logq[:, 2:], teacher_in_student_space(
            teacher_logp[:, 2:], torch.from_numpy(kept), torch.arange(3)), 0.0))

    before = divergence()
    report = train_student(student, train, None, kept, vocab, settings, lambda _: None, teacher=teacher)
    assert report["on_policy_steps"] == report["steps"] == 60
    assert divergence() < 0.25 * before  # measured 4.9 -> 0.36; the teacher fed unmapped ids: 2.4


def test_the_students_cache_key_holds_only_the_settings_its_kd_reads():
    token = LMTrainingSettings(kd="token")
    assert token.key() == LMTrainingSettings(kd="token", divergence="reverse", prompt_tokens=8).key()
    assert token.key() != LMTrainingSettings(kd="token", alpha=0.9).key()
    assert LMTrainingSettings(kd="sequence").key() != LMTrainingSettings(kd="sequence", prompt_tokens=8).key()
    assert LMTrainingSettings(kd="token+sequence").key() != LMTrainingSettings(kd="token+sequence",
                                                                                prompt_tokens=8).key()
    assert LMTrainingSettings(kd="on-policy").key() != LMTrainingSettings(kd="on-policy", divergence="reverse").key()


@pytest.mark.slow  # two torchrun processes import torch and transformers: about 15 s here
def test_two_torchrun_processes_train_the_student_one_process_trains(tiny_llama, tiny_text, tmp_path):
    """`llm --nproc 2`: DistributedDataParallel over gloo on 127.0.0.1, each process half of every
    batch; on-policy GKD, so both kinds of batch run (the student's own samples, and the teacher's
    top-k on the text). The student is close to the one-process student (same steps, same
    schedule): far closer than either is to where training started."""
    import dataclasses

    import numpy as np
    from safetensors.torch import load_file

    from edge_distill.distill.distributed import Launch
    from edge_distill.lm.student import make_student
    from edge_distill.lm.teacher import TeacherSource, load_teacher
    from edge_distill.pipeline.runner import run_stages
    from edge_distill.pipeline.stages.llm import llm_pipeline

    students = {}
    for processes in (1, 2):
        settings = dataclasses.replace(tiny_settings(tiny_llama, tiny_text, kd="on-policy", epochs=2, prompt_tokens=8),
                                       launch=Launch(nproc=processes))
        stages = [s for s in llm_pipeline(settings) if s.name in ("llm-teacher", "llm-student")]
        run = run_stages(stages, tmp_path / "cache")
        report = json.loads(run.artifacts["student.json"].read_text())
        assert report["processes"] == processes and report["device"] == "cpu" and report["precision"] == "fp32"
        assert 0 < report["on_policy_steps"] < report["steps"]
        students[processes] = load_file(run.artifacts["student/model.safetensors"])
    kept = np.load(run.artifacts["student/vocab.npy"])
    start = make_student(load_teacher(TeacherSource(tiny_llama)).model, kept, settings.training).state_dict()

    def furthest(a, b):
        return max((a[k] - b[k]).abs().max().item() for k in a)

    gap, moved = furthest(students[1], students[2]), furthest(students[1], start)
    # Not the same bits: each process sums half a batch (and, on-policy, samples its own continuations).
    # Unsynchronized processes would each keep half the batches' updates: a gap near `moved` / 2.
    assert 0 < gap < 0.1 * moved, (gap, moved)


@pytest.mark.gpu
def test_the_student_trains_on_the_gpu_where_there_is_one(tiny_llama, tiny_text, tmp_path):
    """With CUDA, the teacher scores and the student trains on the GPU (bf16 autocast where the GPU
    has it); the student saved is on the CPU and learned as the CPU one does."""
    import dataclasses

    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU for torch here")
    from safetensors.torch import load_file

    from edge_distill.distill.distributed import Launch
    from edge_distill.pipeline.runner import run_stages
    from edge_distill.pipeline.stages.llm import llm_pipeline

    settings = tiny_settings(tiny_llama, tiny_text, epochs=2)
    run = run_stages([s for s in llm_pipeline(settings) if s.name in ("llm-teacher", "llm-student")], tmp_path / "a")
    report = json.loads(run.artifacts["student.json"].read_text())
    assert report["device"] == "cuda" and report["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert report["final_loss"] < 0.9 * report["first_loss"]
    assert all(t.device.type == "cpu" for t in load_file(run.artifacts["student/model.safetensors"]).values())
    # More processes than GPUs: one line, before any work.
    many = dataclasses.replace(settings, launch=Launch(nproc=torch.cuda.device_count() + 1))
    with pytest.raises(ConfigError, match="GPU"):
        run_stages([s for s in llm_pipeline(many) if s.name in ("llm-teacher", "llm-student")], tmp_path / "b")
    assert not (tmp_path / "b").exists()
