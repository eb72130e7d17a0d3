"""The stage protocol: a small unit with declared inputs, outputs and the config that affects them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from edge_distill.progress import Progress


class Stage(Protocol):
    name: ClassVar[str]  # "quantize"
    version: ClassVar[int]  # bump when output semantics change: invalidates cached results
    inputs: ClassVar[tuple[str, ...]]  # artifact file names produced by earlier stages
    outputs: ClassVar[tuple[str, ...]]  # file names this stage writes into `out`

    def params(self) -> Mapping[str, Any]:
        """The config slice that affects the outputs (JSON-serializable)."""

    def check(self) -> None:
        """Raise a typed error for a config this stage cannot run; called for every planned stage
        before any stage runs, so a mistake costs no training. Cheap: no heavy imports."""

    def external_files(self) -> Mapping[str, Path]:
        """User files outside the pipeline (data, checkpoints, factory sources) that affect the outputs."""

    def run(self, inputs: Mapping[str, Path], out: Path, progress: Progress) -> None:
        """Read `inputs`, write every name in `outputs` into the directory `out`."""
