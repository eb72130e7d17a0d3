"""Distillation losses: pure functions of tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,  # (B, K)
    teacher_logits: torch.Tensor,  # (B, K)
    targets: torch.Tensor,  # (B,) int64
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, y).

    The T^2 factor keeps the soft term's gradient scale independent of T.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, targets)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard
