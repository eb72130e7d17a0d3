import math

import pytest
import torch

from edge_distill.distill.losses import (
    UNLABELED,
    attention_loss,
    combine_teachers,
    hint_loss,
    kd_loss,
    token_kd_loss,
)

STUDENT = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]])
TARGETS = torch.tensor([0, 2])


def _softmax(row, t):
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def _hand_kd(temperature, alpha):
    """The formula written out with floats, independently of torch.nn.functional."""
    kl = 0.0
    for s_row, t_row in zip(STUDENT.tolist(), TEACHER.tolist()):
        p_t, p_s = _softmax(t_row, temperature), _softmax(s_row, temperature)
        kl += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    kl /= len(STUDENT)
    ce = -sum(math.log(_softmax(row, 1.0)[y]) for row, y in zip(STUDENT.tolist(), TARGETS.tolist())) / len(STUDENT)
    return alpha * temperature**2 * kl + (1 - alpha) * ce


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (4.0, 0.9), (2.0, 0.0), (3.0, 1.0)])
def test_kd_loss_matches_hand_computed_value(temperature, alpha):
    got = kd_loss(STUDENT, TEACHER, TARGETS, temperature, alpha).item()
    assert got == pytest.approx(_hand_kd(temperature, alpha), rel=1e-5)


def test_kd_loss_golden_value():
    # Computed once by hand (the helper above) and frozen: catches a silent change of the formula.
    assert kd_loss(STUDENT, TEACHER, TARGETS, 4.0, 0.9).item() == pytest.approx(0.9 * 16 * 0.02960516 + 0.1 * 0.76512634, rel=1e-4)


def test_soft_term_is_zero_when_student_equals_teacher():
    assert kd_loss(TEACHER, TEACHER, TARGETS, 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_gradient_flows_to_student_only():
    student = STUDENT.clone().requires_grad_()
    teacher = TEACHER.clone().requires_grad_()
    kd_loss(student, teacher.detach(), TARGETS, 4.0, 0.9).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_unlabeled_samples_take_no_cross_entropy():
    targets = torch.tensor([0, UNLABELED])
    only_first = kd_loss(STUDENT[:1], TEACHER[:1], TARGETS[:1], 4.0, 0.0).item()
    assert kd_loss(STUDENT, TEACHER, targets, 4.0, 0.0).item() == pytest.approx(only_first, rel=1e-6)
    # A batch without any label: the soft term alone, and still a graph to backpropagate through.
    unlabeled = torch.full((2,), UNLABELED)
    student = STUDENT.clone().requires_grad_()
    loss = kd_loss(student, TEACHER, unlabeled, 4.0, 0.5)
    assert loss.item() == pytest.approx(0.5 * kd_loss(STUDENT, TEACHER, TARGETS, 4.0, 1.0).item(), rel=1e-6)
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_combined_teachers_soften_to_the_weighted_mean_distribution():
    other = torch.tensor([[0.0, 3.0, 1.0], [1.0, 0.0, 0.0]])
    weights = torch.tensor([0.25, 0.75])
    combined = combine_teachers(torch.stack([TEACHER, other]), weights, 2.0)
    for row in range(2):
        expected = [0.25 * a + 0.75 * b for a, b in zip(_softmax(TEACHER[row].tolist(), 2.0),
                                                         _softmax(other[row].tolist(), 2.0))]
        assert _softmax(combined[row].tolist(), 2.0) == pytest.approx(expected, rel=1e-5)
    # Golden value, frozen once the hand check above passed: the first row of the combined logits.
    assert combined[0].tolist() == pytest.approx([-2.9237, -1.2022, -3.0283], abs=1e-3)
    # One teacher with all the weight is that teacher (up to a constant shift, which softmax ignores).
    alone = combine_teachers(torch.stack([TEACHER, other]), torch.tensor([1.0, 0.0]), 2.0)
    torch.testing.assert_close(torch.softmax(alone / 2, 1), torch.softmax(TEACHER / 2, 1))


def test_hint_loss_golden_value_and_pooling_to_the_smaller_map():
    student = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    teacher = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # The 4x4 map average-pools to [[2.5, 4.5], [10.5, 12.5]]; MSE against the teacher's 2x2 map:
    expected = ((2.5 - 1) ** 2 + (4.5 - 2) ** 2 + (10.5 - 3) ** 2 + (12.5 - 4) ** 2) / 4
    assert hint_loss(student, teacher).item() == pytest.approx(expected)
    assert hint_loss(teacher, teacher).item() == 0.0


def test_attention_loss_golden_value_ignores_channel_count_and_scale():
    student = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])  # (B=1, C=1, L=4): all attention on position 0
    teacher = torch.tensor([[[0.0, 2.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]])  # C=2, all on position 1
    # Normalized maps are one-hot at 0 and at 1: squared distance 2, mean over 4 positions.
    assert attention_loss(student, teacher).item() == pytest.approx(0.5)
    assert attention_loss(3.0 * teacher[:, :1], teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_token_kd_loss_is_kd_over_every_position():
    student = torch.stack([STUDENT, TEACHER])  # (B=2, L=2, V=3)
    teacher = torch.stack([TEACHER, STUDENT])
    targets = torch.tensor([[0, 2], [1, 1]])
    by_hand = kd_loss(torch.cat([STUDENT, TEACHER]), torch.cat([TEACHER, STUDENT]), targets.reshape(-1), 2.0, 0.7)
    assert token_kd_loss(student, teacher, targets, 2.0, 0.7).item() == pytest.approx(by_hand.item())


def test_the_methods_table_names_what_the_config_turns_on():
    from edge_distill.distill.methods import describe_methods
    from tests.conftest import tiny_config

    assert describe_methods(tiny_config()) == ["logit KD (Hinton et al. 2015)"]
    scratch = describe_methods(tiny_config("distill.alpha=0"))
    assert scratch == ["no distillation: labels only (distill.alpha = 0, the scratch baseline)"]
    both = describe_methods(tiny_config("distill.augment=true", "distill.generations=2"))
    assert both[1:] == ["born-again: 2 generations", "consistent augmentation (function matching)"]
