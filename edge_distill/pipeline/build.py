"""The image build: the stages a target needs (skipping what the user provides), run by
pipeline/runner, and the bundle published."""

from __future__ import annotations

from pathlib import Path

from edge_distill.config import BuildConfig
from edge_distill.errors import ConfigError, InputFileError, did_you_mean
from edge_distill.files import regular_file
from edge_distill.pipeline.registry import ARTIFACTS, PRODUCER, STAGE_NAMES, STAGES
from edge_distill.pipeline.runner import PipelineRun, run_stages
from edge_distill.progress import Progress


def plan(target: str, provided: set[str]) -> list[type]:
    """The stages needed for `target`, in build order, skipping what the user provided."""
    if target not in STAGE_NAMES:
        raise ConfigError(f"unknown stage '{target}'", did_you_mean(target, STAGE_NAMES))
    needed: set[type] = set()

    def need(stage: type) -> None:
        if stage not in needed:
            needed.add(stage)
            for name in stage.inputs:
                if name not in provided:
                    need(PRODUCER[name])

    need(next(s for s in STAGES if s.name == target))
    return [s for s in STAGES if s in needed]


def parse_provided(items: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """`--input ARTIFACT=PATH` values -> {artifact: path}."""
    pairs = {}
    for item in items:
        artifact, sep, path = item.partition("=")
        if not sep or not artifact or not path:
            raise ConfigError(f"--input {item!r}: expected ARTIFACT=PATH", "e.g. --input student_fp32.onnx=my.onnx")
        pairs[artifact] = Path(path)
    return pairs


def planned_stages(config: BuildConfig, target: str = "package", provided: dict[str, Path] | None = None) -> list:
    """The stages `target` needs, built from `config`; `provided` maps artifact names to the
    user's own files, checked here: each must exist and be read by a planned stage."""
    provided = dict(provided or {})
    for name, path in provided.items():
        if name not in ARTIFACTS:
            raise ConfigError(f"--input {name}: no stage consumes an artifact of that name", did_you_mean(name, ARTIFACTS))
        if not path.exists():
            raise InputFileError(f"--input {name}: {path} not found", "check the path")
        regular_file(path, f"--input {name}")
    stages = [stage_cls(config) for stage_cls in plan(target, set(provided))]
    read = {name for stage in stages for name in stage.inputs}
    for name in provided:
        if name not in read:  # ignoring it would silently build something else than the user asked for
            raise ConfigError(f"--input {name}: the {target} stage does not read it",
                              f"it reads {', '.join(sorted(read))}" if read else f"the {target} stage reads no artifact")
    return stages


def run_pipeline(
    config: BuildConfig,
    cache_dir: Path,
    target: str = "package",
    force: bool = False,
    provided: dict[str, Path] | None = None,
    progress: Progress = lambda _: None,
) -> PipelineRun:
    """Run the stages `target` needs. `provided` maps artifact names to the user's own files."""
    return run_stages(planned_stages(config, target, provided), cache_dir, force, provided, progress)
