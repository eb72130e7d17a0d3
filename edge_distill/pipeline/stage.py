"""The stage: a small unit with declared inputs, outputs and the settings that affect them. Every
pipeline (build, optimize, text, sequence) is a list of stages that pipeline/runner.run_stages runs:
one cache, one plan line, one progress, one record of steps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from edge_distill.progress import Progress


class Stage:
    name: ClassVar[str]  # "quantize"; also its folder in the cache
    description: ClassVar[str]  # one line: the stage's command help and docs
    version: ClassVar[int]  # bump when output semantics change: invalidates cached results
    inputs: ClassVar[tuple[str, ...]] = ()  # artifact file names produced by earlier stages
    outputs: ClassVar[tuple[str, ...]]  # file names this stage writes into `out`
    optional_outputs: ClassVar[tuple[str, ...]] = ()  # written when there is one (optimize's int8 model)
    trains: ClassVar[bool] = False  # the plan line names stages that train: they take the time

    def params(self) -> Mapping[str, Any]:
        """The settings that affect the outputs (JSON-serializable): part of the cache key."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise a typed error for settings this stage cannot run with; called for every planned
        stage before any stage runs, so a mistake costs no training. Cheap: no heavy imports."""

    def check_inputs(self) -> None:
        """Read the user's inputs far enough to refuse bad ones in one line (a model ONNX Runtime
        cannot load, samples of the wrong shape); called only when some stage will run, before
        anything is written, so a bad input leaves no cache behind and a no-op rerun reads nothing."""

    def external_files(self) -> Mapping[str, Path]:
        """User files outside the pipeline (data, models, teacher folders, factory sources) that
        affect the outputs: hashed into the cache key."""
        return {}

    def run(self, inputs: Mapping[str, Path], out: Path, progress: Progress) -> None:
        """Read `inputs`, write every name in `outputs` into the directory `out`."""
        raise NotImplementedError
