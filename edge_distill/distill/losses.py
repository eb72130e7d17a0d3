"""Distillation losses: pure functions of tensors.

Targets of -1 mark unlabeled samples (the transfer set): they take part in every soft term and in
no cross-entropy term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_distill.data.dataset import UNLABELED


def hard_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the labeled samples of the batch; 0 when it has none."""
    total = F.cross_entropy(logits, targets, ignore_index=UNLABELED, reduction="sum")
    return total / (targets != UNLABELED).sum().clamp(min=1)


def kd_loss(
    student_logits: torch.Tensor,  # (B, K)
    teacher_logits: torch.Tensor,  # (B, K)
    targets: torch.Tensor,  # (B,) int64, -1 = unlabeled
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, y).

    The T^2 factor keeps the soft term's gradient scale independent of T.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard_loss(student_logits, targets)


def combine_teachers(
    teacher_logits: torch.Tensor,  # (M, B, K): M teachers
    weights: torch.Tensor,  # (M,), summing to 1
    temperature: float,
) -> torch.Tensor:
    """Logits whose softmax at `temperature` is the weighted mean of the teachers' softened
    distributions (You et al. 2017): T * log(sum_m w_m softmax(t_m / T)). Averaging
    probabilities, not logits, keeps a confident teacher from drowning out the others' ranking."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=2)  # (M, B, K)
    log_w = torch.log(weights)[:, None, None]  # (M, 1, 1)
    return temperature * torch.logsumexp(log_w + log_p, dim=0)  # (B, K)


def match_size(feature: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Average-pool a (B, C, *spatial) feature map down to `size`; unchanged if it already fits."""
    if tuple(feature.shape[2:]) == tuple(size):
        return feature
    pool = F.adaptive_avg_pool2d if feature.dim() == 4 else F.adaptive_avg_pool1d
    return pool(feature, size)


def common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...]:
    """The smaller of two feature maps' spatial sizes, per axis."""
    return tuple(min(x, y) for x, y in zip(a.shape[2:], b.shape[2:]))


def hint_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets (Romero et al. 2015): mean squared error between the student's feature map,
    already mapped to the teacher's channels by a learned adapter, and the teacher's.
    Both (B, C, *spatial); the larger map is pooled to the smaller's size."""
    size = common_size(student_feature, teacher_feature)
    return F.mse_loss(match_size(student_feature, size), match_size(teacher_feature, size))


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, prod(spatial)): channel mean of squared activations, L2-normalized."""
    return F.normalize(feature.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis 2017): squared distance between the normalized
    spatial attention maps. Channel counts may differ, so no adapter is needed."""
    size = common_size(student_feature, teacher_feature)
    s = attention_map(match_size(student_feature, size))
    t = attention_map(match_size(teacher_feature, size))
    return (s - t).pow(2).mean()


def token_kd_loss(
    student_logits: torch.Tensor,  # (B, L, V)
    teacher_logits: torch.Tensor,  # (B, L, V)
    targets: torch.Tensor,  # (B, L) next tokens
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Token-level sequence KD (Kim & Rush 2016): the KD loss at every position, averaged."""
    vocab = student_logits.shape[-1]
    return kd_loss(student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab), targets.reshape(-1),
                   temperature, alpha)
