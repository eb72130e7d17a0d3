"""The runner: plans the stages a target needs, restores cache hits, runs misses, publishes the bundle."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_distill.config import BuildConfig
from edge_distill.errors import ConfigError, InputFileError, did_you_mean
from edge_distill.files import regular_file
from edge_distill.hashing import hash_path
from edge_distill.pipeline.cache import StageCache, library_versions
from edge_distill.pipeline.publish import check_out, publish
from edge_distill.pipeline.stage import Progress
from edge_distill.pipeline.registry import ARTIFACTS, PRODUCER, STAGE_NAMES, STAGES
from edge_distill.pipeline.stages.package import PackageStage


@dataclass
class StepRecord:
    stage: str
    key: str
    cached: bool
    seconds: float
    outputs: dict[str, str]


@dataclass
class PipelineRun:
    artifacts: dict[str, Path] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)


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


def run_pipeline(
    config: BuildConfig,
    cache_dir: Path,
    target: str = "package",
    force: bool = False,
    provided: dict[str, Path] | None = None,
    progress: Progress = lambda _: None,
) -> PipelineRun:
    """Run the stages `target` needs. `provided` maps artifact names to the user's own files."""
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
    for stage in stages:
        stage.check()
    cache = StageCache(cache_dir)
    removed = cache.prepare()
    if removed:
        progress(f"removed {len(removed)} staging folder(s) left in the cache by an interrupted build")
    keys = _CacheKeys(cache, library_versions())
    line, verified = _plan(stages, provided, keys, force)
    progress(line)
    run = PipelineRun(artifacts=provided)
    for index, stage in enumerate(stages, 1):
        started = time.perf_counter()
        inputs = {name: run.artifacts[name] for name in stage.inputs}
        external = dict(stage.external_files())
        for key, path in external.items():
            if not path.exists():
                raise InputFileError(f"{key}: {path} not found", "check the path in your config")
            if not path.is_dir():
                regular_file(path, key)  # a FIFO would block the stage's read forever
        description = keys.describe(stage, inputs, external)
        key = cache.key(description)
        found = None if force else verified.get((stage.name, key)) or cache.lookup(stage.name, key, stage.outputs)
        entry = found.entry if found else None
        prefix = f"[{index}/{len(stages)}] {stage.name}"
        cached = entry is not None
        if cached:
            progress(f"{prefix}: cached")
        else:
            if found and found.damage:
                progress(f"{prefix}: the cached result is damaged ({found.damage}): running again")
            progress(f"{prefix}: running")
            entry = cache.build(stage.name, key, description, stage.outputs,
                                lambda staged: stage.run(inputs, staged, progress))
        outputs = {name: entry / name for name in stage.outputs}
        run.artifacts.update(outputs)
        run.steps.append(StepRecord(stage.name, key, cached, time.perf_counter() - started,
                                    {k: str(v) for k, v in outputs.items()}))
    return run


class _CacheKeys:
    """A stage's cache-key description: (name, version, params, hashes of its input and external
    files, library versions); file hashes are computed once per build."""

    def __init__(self, cache: StageCache, libraries: dict[str, str]):
        self.cache, self.libraries = cache, libraries
        self.hashes: dict[Path, str] = {}

    def digest(self, path: Path) -> str:
        if path not in self.hashes:
            self.hashes[path] = hash_path(path)
        return self.hashes[path]

    def describe(self, stage, inputs: dict[str, Path], external: dict[str, Path]) -> dict:
        return {
            "stage": stage.name,
            "version": stage.version,
            "params": stage.params(),
            "inputs": {name: self.digest(path) for name, path in inputs.items()},
            "external": {name: self.digest(path) for name, path in external.items()},
            "libraries": self.libraries,
        }


def _plan(stages: list, provided: dict[str, Path], keys: _CacheKeys, force: bool) -> tuple[str, dict]:
    """A line saying up front which stages come from the cache and which will run (training
    included), as far as can be known before running: after the first stage that runs, every later
    one runs too. Also the cache hits it verified, {(stage, key): Lookup}, so they are not verified twice."""
    known, cached, verified = dict(provided), [], {}
    for stage in stages:
        external = dict(stage.external_files())
        if force or not all(path.exists() for path in external.values()):
            break
        key = keys.cache.key(keys.describe(stage, {name: known[name] for name in stage.inputs}, external))
        found = keys.cache.lookup(stage.name, key, stage.outputs)
        if found.entry is None:
            break
        verified[(stage.name, key)] = found
        cached.append(stage.name)
        known.update({name: found.entry / name for name in stage.outputs})
    running = [stage.name for stage in stages[len(cached):]]
    if not running:
        return f"plan: all {len(stages)} stage(s) cached", verified
    training = [name for name in running if name in ("teacher", "distill")]
    return (f"plan: {len(running)} of {len(stages)} stage(s) will run: {', '.join(running)}"
            + (f" (training: {' and '.join(training)})" if training else "")
            + (f"; cached: {', '.join(cached)}" if cached else "")), verified


def build(
    config: BuildConfig, out: Path, cache_dir: Path, force: bool = False, progress: Progress = lambda _: None
) -> PipelineRun:
    """The whole chain, then the bundle published at `out` (checked first, so a bad `out` costs no training)."""
    check_out(out)
    run = run_pipeline(config, cache_dir, PackageStage.name, force=force, progress=progress)
    publish({name: run.artifacts[name] for name in PackageStage.outputs}, out)
    progress(f"bundle written to {out}")
    return run
