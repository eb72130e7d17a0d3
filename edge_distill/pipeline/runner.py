"""The one runner every pipeline goes through: a list of stages, planned against the cache (a line
saying what will run), each stage's cache key (name, version, params, hashes of its input and
external files, library versions), cache hits verified and reused, misses built in a staging folder
and committed. `build`, `optimize`, `text` and `sequence` differ only in their lists of stages."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_distill.files import regular_file
from edge_distill.hashing import hash_path, library_versions
from edge_distill.pipeline.cache import StageCache
from edge_distill.pipeline.stage import Stage
from edge_distill.progress import Progress


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

    def outputs(self, stage: type[Stage]) -> dict[str, Path]:
        """The files `stage` produced in this run (its optional outputs where it wrote them)."""
        return {name: self.artifacts[name] for name in (*stage.outputs, *stage.optional_outputs)
                if name in self.artifacts}


def run_stages(stages: Sequence[Stage], cache_dir: Path, force: bool = False, provided: dict[str, Path] | None = None,
               progress: Progress = lambda _: None) -> PipelineRun:
    """Run `stages` in order; `provided` maps artifact names to files given instead of made."""
    for stage in stages:
        stage.check()
    externals = [_external_files(stage) for stage in stages]  # all found and regular before any stage runs
    cache = StageCache(cache_dir)
    keys = _CacheKeys(cache, library_versions())
    line, verified = _plan(stages, externals, dict(provided or {}), keys, force)
    if len(verified) < len(stages):  # something will run: its inputs are read first, before the cache is written
        for stage in stages:
            stage.check_inputs()
    removed = cache.prepare()
    if removed:
        progress(f"removed {len(removed)} staging folder(s) left in the cache by an interrupted run")
    progress(line)
    run = PipelineRun(artifacts=dict(provided or {}))
    for index, (stage, external) in enumerate(zip(stages, externals), 1):
        started = time.perf_counter()
        inputs = {name: run.artifacts[name] for name in stage.inputs if name in run.artifacts}
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
                                lambda staged: stage.run(inputs, staged, progress), stage.optional_outputs)
        outputs = {name: entry / name for name in (*stage.outputs, *stage.optional_outputs)
                   if name in stage.outputs or (entry / name).is_file()}
        run.artifacts.update(outputs)
        run.steps.append(StepRecord(stage.name, key, cached, time.perf_counter() - started,
                                    {k: str(v) for k, v in outputs.items()}))
    return run


@dataclass
class PipelineResult:
    """A pipeline run and the output it published."""
    run: PipelineRun
    out: Path
    manifest: dict | None  # the published bundle's manifest; None for an output without one (sequence)

    @property
    def steps(self) -> list[dict]:
        """Each stage's record: name, cache key, whether it came from the cache, its seconds."""
        return [dataclasses.asdict(step) for step in self.run.steps]

    def report(self) -> dict:
        """The manifest with the stages' records under "steps" (what --json prints)."""
        return (self.manifest or {}) | {"steps": self.steps}


def run_and_publish(stages: Sequence[Stage], out: Path, cache_dir: Path, force: bool = False,
                    progress: Progress = lambda _: None, kind=None) -> PipelineResult:
    """What every command that makes an output folder does: check `out` before any stage runs, run
    `stages`, publish the last stage's files at `out` (kind: pipeline.publish.OutputKind, a bundle
    by default). api.py is its one caller: each pipeline's stages come from pipeline/stages/."""
    import json

    from edge_distill.pipeline.publish import BUNDLE, check_out, publish

    kind = kind or BUNDLE
    check_out(out, kind)
    run = run_stages(stages, cache_dir, force, progress=progress)
    publish(run.outputs(type(stages[-1])), out, kind)
    manifest = json.loads((out / "manifest.json").read_text()) if kind is BUNDLE else None
    progress(f"{kind.what} written to {out}")
    return PipelineResult(run, out, manifest)


def _external_files(stage: Stage) -> dict[str, Path]:
    """The user's files `stage` reads, each there and a folder or a regular file (a FIFO would
    block the stage's read forever)."""
    external = dict(stage.external_files())
    for key, path in external.items():
        if not path.is_dir():
            regular_file(path, key)
    return external


class _CacheKeys:
    """A stage's cache-key description: (name, version, params, hashes of its input and external
    files, library versions); file hashes are computed once per run."""

    def __init__(self, cache: StageCache, libraries: dict[str, str]):
        self.cache, self.libraries = cache, libraries
        self.hashes: dict[Path, str] = {}

    def digest(self, path: Path) -> str:
        if path not in self.hashes:
            self.hashes[path] = hash_path(path)
        return self.hashes[path]

    def describe(self, stage: Stage, inputs: dict[str, Path], external: dict[str, Path]) -> dict:
        return {
            "stage": stage.name,
            "version": stage.version,
            "params": stage.params(),
            "inputs": {name: self.digest(path) for name, path in inputs.items()},
            "external": {name: self.digest(path) for name, path in external.items()},
            "libraries": self.libraries,
        }


def _plan(stages: Sequence[Stage], externals: list[dict[str, Path]], provided: dict[str, Path], keys: _CacheKeys,
          force: bool) -> tuple[str, dict]:
    """A line saying up front which stages come from the cache and which will run (training
    included), as far as can be known before running: after the first stage that runs, every later
    one runs too. Also the cache hits it verified, {(stage, key): Lookup}, so they are not verified twice."""
    known, cached, verified = dict(provided), [], {}
    for stage, external in zip(stages, externals):
        if force:
            break
        inputs = {name: known[name] for name in stage.inputs if name in known}
        key = keys.cache.key(keys.describe(stage, inputs, external))
        found = keys.cache.lookup(stage.name, key, stage.outputs)
        if found.entry is None:
            break
        verified[(stage.name, key)] = found
        cached.append(stage.name)
        known.update({name: found.entry / name for name in (*stage.outputs, *stage.optional_outputs)
                      if (found.entry / name).is_file()})
    running = stages[len(cached):]
    if not running:
        return f"plan: all {len(stages)} stage(s) cached", verified
    training = [stage.name for stage in running if stage.trains]
    return (f"plan: {len(running)} of {len(stages)} stage(s) will run: {', '.join(s.name for s in running)}"
            + (f" (training: {' and '.join(training)})" if training else "")
            + (f"; cached: {', '.join(cached)}" if cached else "")), verified
