"""The distillation methods, one entry each: when the config turns it on, how the model card names
it, what it cannot be combined with, and the loss term (a function in losses.py) it adds. The
distill stage checks every entry before any stage runs, and the report lists the active ones.

Adding a method: its config field in `config.DistillConfig`, an entry here, and (for a per-batch
term) its loss function in losses.py, called from `trainer.Distillation.loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edge_distill.config import BuildConfig
from edge_distill.errors import ConfigError


@dataclass(frozen=True)
class Method:
    name: str
    active: Callable[[BuildConfig], bool]
    describe: Callable[[BuildConfig], str]
    loss_term: str  # the function in losses.py, or where the method acts instead
    conflicts: Callable[[BuildConfig], str] = lambda _: ""  # why this config cannot run it ("" if it can)


def _hint_conflict(config: BuildConfig) -> str:
    cfg = config.distill
    if cfg.hint_layers and (cfg.assistants or cfg.generations > 1):
        return ("distill.hint_layers name layers of the teacher and the student, so they cannot be combined with "
                "distill.assistants or distill.generations > 1")
    return ""


METHODS = (
    Method("logit KD", lambda c: c.distill.alpha > 0, lambda c: "logit KD (Hinton et al. 2015)", "kd_loss"),
    Method("labels only", lambda c: c.distill.alpha == 0,
           lambda c: "no distillation: labels only (distill.alpha = 0, the scratch baseline)", "hard_loss"),
    Method("multi-teacher", lambda c: bool(c.teacher.ensemble),
           lambda c: f"multi-teacher: {1 + len(c.teacher.ensemble)} teachers, "
                     f"{'weighted mean' if c.teacher.ensemble_weights else 'mean'} of softened distributions",
           "combine_teachers (the soft target)"),
    Method("feature hints", lambda c: bool(c.distill.hint_layers and c.distill.hint_weight),
           lambda c: f"feature hints (FitNets) on {c.distill.hint_layers}, weight {c.distill.hint_weight}",
           "hint_loss", _hint_conflict),
    Method("attention transfer", lambda c: bool(c.distill.hint_layers and c.distill.attention_weight),
           lambda c: f"attention transfer on {c.distill.hint_layers}, weight {c.distill.attention_weight}",
           "attention_loss", _hint_conflict),
    Method("self-distillation", lambda c: bool(c.distill.self_heads),
           lambda c: f"self-distillation: auxiliary heads on {c.distill.self_heads} taught by the final head",
           "kd_loss on each auxiliary head"),
    Method("born-again", lambda c: c.distill.generations > 1,
           lambda c: f"born-again: {c.distill.generations} generations", "chain.train_chain (one link per generation)"),
    Method("progressive", lambda c: bool(c.distill.assistants),
           lambda c: f"progressive: teacher -> {len(c.distill.assistants)} assistant(s) -> student",
           "chain.train_chain (one link per assistant)"),
    Method("consistent augmentation", lambda c: c.distill.augment,
           lambda c: "consistent augmentation (function matching)", "augment.Augment (on each batch)"),
    Method("transfer set", lambda c: bool(c.data.transfer or c.data.labeled_samples),
           lambda c: "unlabeled transfer set labeled by the teacher", "kd_loss on samples labeled -1"),
)


def check_methods(config: BuildConfig) -> None:
    """Raise a ConfigError for the first method this config asks for but cannot run."""
    for method in METHODS:
        problem = method.conflicts(config)
        if problem:
            raise ConfigError(problem, "drop one of them")


def describe_methods(config: BuildConfig) -> list[str]:
    """The active methods, as the model card and distill.json name them."""
    return [method.describe(config) for method in METHODS if method.active(config)]
