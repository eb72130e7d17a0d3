"""The training loop's distillation objectives, on tiny models and random data."""

import numpy as np
import pytest
import torch

from edge_distill.distill.augment import Augment, mixup, shift
from edge_distill.data.dataset import UNLABELED
from edge_distill.distill.teachers import Teacher, TeacherEnsemble, from_module
from edge_distill.distill.trainer import Distillation, FitSettings, fit
from edge_distill.errors import ConfigError
from edge_distill.models.families import ConvNet

SHAPE = (1, 8, 8)
SETTINGS = FitSettings(epochs=2, batch_size=16, lr=1e-3, seed=0)


def _data(n=48, shape=SHAPE):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = (np.arange(n) % 10).astype(np.int64)
    y[n // 2:] = UNLABELED  # half the samples form an unlabeled transfer set
    return x, y


def _models(shape=SHAPE):
    torch.manual_seed(0)
    return ConvNet(shape, 10, 4, 1), ConvNet(shape, 10, 8, 2).eval()


def test_teacher_labels_exactly_the_augmented_batch_the_student_sees():
    student, teacher_module = _models()
    seen = {"student": [], "teacher": []}
    student.register_forward_pre_hook(lambda _m, args: seen["student"].append(args[0].clone()) if student.training else None)
    recording = Teacher("teacher", "onnx", lambda x: (seen["teacher"].append(x.clone()), teacher_module(x))[1])
    x, y = _data()
    objective = Distillation(student, TeacherEnsemble([recording]), SHAPE, 4.0, 0.9)
    fit(student, x, y, x[:8], np.zeros(8, np.int64), SETTINGS, objective, Augment("image", seed=0))
    assert len(seen["student"]) == len(seen["teacher"]) == 2 * 3  # 2 epochs of 3 batches
    for s, t in zip(seen["student"], seen["teacher"]):
        torch.testing.assert_close(s, t)
    # ...and the batches were augmented: none equals a plain batch of the data.
    plain = {tuple(row.flatten()[:4].tolist()) for row in torch.from_numpy(x)}
    assert sum(tuple(row.flatten()[:4].tolist()) in plain for b in seen["student"] for row in b) < len(x)


def test_unknown_hint_layer_lists_the_valid_ones():
    student, teacher = _models()
    with pytest.raises(ConfigError, match="the teacher has no layer 'features.99'; valid layers: features, features.0"):
        Distillation(student, TeacherEnsemble([from_module(teacher)]), SHAPE, 4.0, 0.9,
                     hint_layers={"features.2": "features.99"})
    with pytest.raises(ConfigError, match="distill.self_heads: the student has no layer 'head.7'"):
        Distillation(student, TeacherEnsemble([from_module(teacher)]), SHAPE, 4.0, 0.9, self_heads=["head.7"])


def test_hints_need_a_python_teacher():
    student, teacher = _models()
    black_box = Teacher("teacher", "onnx", teacher)
    with pytest.raises(ConfigError, match="needs a teacher built from Python code; teacher is a onnx file"):
        Distillation(student, TeacherEnsemble([black_box]), SHAPE, 4.0, 0.9, hint_layers={"features.2": "features.2"})


@pytest.mark.parametrize("shape", [SHAPE, (2, 32)])
def test_feature_hints_train_an_adapter_and_leave_no_hooks(shape):
    student, teacher = _models(shape)
    objective = Distillation(student, TeacherEnsemble([from_module(teacher)]), shape, 4.0, 0.9,
                             hint_layers={"features.2": "features.5"}, attention_weight=1.0, self_heads=["features.2"])
    adapter = objective.adapters["features/2"]
    assert isinstance(adapter, (torch.nn.Conv2d, torch.nn.Conv1d)) and adapter.in_channels == 4
    assert adapter.out_channels == 8  # student width 4 -> teacher width 8
    before = adapter.weight.detach().clone()
    head_before = objective.heads["features/2"][2].weight.detach().clone()
    x, y = _data(shape=shape)
    fit(student, x, y, x[:8], np.zeros(8, np.int64), SETTINGS, objective)
    assert not torch.equal(before, adapter.weight)
    assert not torch.equal(head_before, objective.heads["features/2"][2].weight)
    assert all(not m._forward_hooks for m in [*student.modules(), *teacher.modules()])


def test_shift_translates_and_mixup_drops_the_hard_label_of_mixed_samples():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 16)  # (B, C, L) signals
    moved = shift(x, torch.Generator().manual_seed(3))
    for original, out in zip(x, moved):
        # A shift by d keeps a run of consecutive values: the middle of the window is in the original.
        assert out[0, 4:12].tolist() == original[0, int(out[0, 4] - original[0, 0]):][:8].tolist()
    y = torch.tensor([3, 4])
    mixed_x, mixed_y = mixup(x, y, fraction=1.0, generator=torch.Generator().manual_seed(0))
    assert mixed_y.tolist() == [UNLABELED, UNLABELED]
    kept_x, kept_y = mixup(x, y, fraction=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kept_x, x) and kept_y.tolist() == [3, 4]


def test_objective_adds_each_methods_term_to_kd():
    """The composed loss on fixed inputs equals the sum of the pure loss functions."""
    from edge_distill.distill.losses import attention_loss, hint_loss, kd_loss

    student, teacher = _models()
    objective = Distillation(student, TeacherEnsemble([from_module(teacher)]), SHAPE, 3.0, 0.7,
                             hint_layers={"features.2": "features.5"}, hint_weight=0.5, attention_weight=2.0,
                             self_heads=["features.2"], self_head_weight=0.25)
    x = torch.from_numpy(_data(8)[0])
    y = torch.tensor([1, 2, 3, UNLABELED, 5, 6, UNLABELED, 8])
    student.eval()
    got = objective.loss(student, x, y, torch.arange(8))
    with torch.no_grad():
        s_feat = student.features[:3](x)
        t_feat = teacher.features[:6](x)
        logits, soft = student(x), teacher(x)
        aux = objective.heads["features/2"](s_feat)
        expected = (kd_loss(logits, soft, y, 3.0, 0.7)
                    + 0.5 * hint_loss(objective.adapters["features/2"](s_feat), t_feat)
                    + 2.0 * attention_loss(s_feat, t_feat)
                    + 0.25 * kd_loss(aux, logits, y, 3.0, 0.7))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    objective.close()


def test_a_hooked_layer_keeps_its_output_before_an_in_place_relu():
    student, teacher = _models()
    objective = Distillation(student, TeacherEnsemble([from_module(teacher)]), SHAPE, 4.0, 0.9,
                             hint_layers={"features.1": "features.1"})  # BatchNorm, then ReLU(inplace=True)
    x = torch.from_numpy(_data(8)[0])
    student.eval()
    objective.loss(student, x, torch.zeros(8, dtype=torch.long), torch.arange(8))
    kept = objective._student_features["features.1"]
    torch.testing.assert_close(kept, student.features[:2](x))
    assert (kept < 0).any()  # not overwritten by the ReLU
    objective.close()


def test_image_files_train_the_same_student_with_or_without_loader_workers(tmp_path):
    """Workers decode, the training process draws the order: the trained weights cannot depend on
    how many workers there are, and match training on the same pixels held in memory."""
    from PIL import Image

    from edge_distill.data.loader import set_loader_workers
    from edge_distill.data.samples import ImageFiles, Normalization

    rng = np.random.default_rng(0)
    files = []
    for i in range(40):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(files[-1])
    images = ImageFiles(files, "grayscale", (), SHAPE, Normalization(1 / 255, (0.5,), (0.25,)))
    y = (np.arange(40) % 10).astype(np.int64)
    weights = {}
    for name, x, workers in (("in memory", np.asarray(images), 0), ("files, 0 workers", images, 0),
                             ("files, 2 workers", images, 2)):
        set_loader_workers(workers)
        student, teacher = _models()
        objective = Distillation(student, TeacherEnsemble([from_module(teacher)]), SHAPE, 2.0, 0.5)
        fit(student, x, y, x, y, SETTINGS, objective)
        weights[name] = student.state_dict()
    set_loader_workers(0)
    for name in ("files, 0 workers", "files, 2 workers"):
        for key, value in weights["in memory"].items():
            torch.testing.assert_close(weights[name][key], value, msg=f"{name}: {key}")
