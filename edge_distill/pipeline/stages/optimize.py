"""The stages of `edge-distill optimize` (pipeline/optimize.py): thin, each settings -> library
call -> files. Every stage reads the user's model and samples (their hashes are in its key),
loaded once per run and shared."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path


from edge_distill.pipeline.optimize import OptimizeSettings, Samples, load_samples
from edge_distill.pipeline.stage import Stage


class _OptimizeStage(Stage):
    def __init__(self, settings: OptimizeSettings, cache_dir: Path, samples: Callable[[], Samples]):
        # samples: pipeline.optimize.load_samples for this run, read once and shared by its stages
        self.settings, self.cache_dir, self.samples = settings, cache_dir, samples

    def external_files(self):
        return {"model": self.settings.model, "--calibration": self.settings.calibration}


class OptimizeSimplify(_OptimizeStage):
    name = "optimize-simplify"
    description = "Run the model on the first sample, then simplify it with onnxsim (kept as given where that fails)."
    version = 1
    outputs = ("fp32.onnx", "simplify.json")

    def params(self):
        return {"shapes": self.settings.sample_params()["shapes"]}

    def check_inputs(self):
        """The model loads, every sample fits its inputs, and the first runs through the model as
        given, so its failures name it, not a work copy later."""
        from edge_distill.sessions import open_session, run_session

        s = self.settings
        samples = self.samples()
        run_session(open_session(s.model, str(s.model)), samples.held_out[0],
                    f"{s.model} on the first sample of {s.calibration}", s.config.benchmark.time_limit_s)

    def run(self, inputs, out, progress):
        from edge_distill.export.simplify import simplified_or_source

        s = self.settings
        samples = self.samples()
        progress(f"{s.model.name}: {len(samples.inputs)} input(s) "
                 + ", ".join(f"{t.name} {t.dtype} {'x'.join(map(str, samples.fixed[t.name])) or 'scalar'}"
                             for t in samples.inputs)
                 + f"; {len(samples.calibrate_on)} calibration and {len(samples.held_out)} held-out samples")
        notes: list[str] = []
        simplified_or_source(s.model, samples.held_out[0], out / "fp32.onnx", notes, progress)
        (out / "simplify.json").write_text(json.dumps({"notes": notes}))


class OptimizeQuantize(_OptimizeStage):
    name = "optimize-quantize"
    description = ("Quantize to int8 with the profile's recipe, judge it on the held-out samples, and repair it "
                   "where it misses the budget (compute ops only, --distill, nodes kept in float).")
    version = 1
    inputs = ("fp32.onnx",)
    outputs = ("quantize.json",)
    optional_outputs = ("int8.onnx",)  # none where no int8 model could be made: float ships, saying why

    def params(self):
        return {**self.settings.sample_params(), "quantize": dataclasses.asdict(self.settings.config.quantize)}

    def run(self, inputs, out, progress):
        from edge_distill.export.budget import quantize_within_budget
        from edge_distill.pipeline.cache import StageCache

        samples = self.samples()
        notes: list[str] = []
        cache = StageCache(self.cache_dir)  # its int8-distill entries, and a scratch folder for the attempts
        with cache.staging_folder(self.name + "-work") as work:
            int8, recipe, judgement = quantize_within_budget(
                inputs["fp32.onnx"], samples.calibrate_on, samples.held_out, (samples.inputs, samples.outputs),
                self.settings.config, samples.budget, work, notes, progress, cache)
            if int8 is not None:
                shutil.copyfile(int8, out / "int8.onnx")
        (out / "quantize.json").write_text(json.dumps({"recipe": recipe, "judgement": dataclasses.asdict(judgement),
                                                       "notes": notes}))


class OptimizeSelect(_OptimizeStage):
    name = "optimize-select"
    description = ("Time float and int8 side by side at each candidate thread count, on the device or where this "
                   "host stands for it, and choose what ships.")
    version = 1
    inputs = ("fp32.onnx", "int8.onnx", "quantize.json")  # int8.onnx where one was made
    outputs = ("selection.json",)

    def params(self):
        config = self.settings.config
        return {"shapes": self.settings.sample_params()["shapes"], "benchmark": dataclasses.asdict(config.benchmark),
                "device": dataclasses.asdict(config.device), "search_min_seconds": config.quantize.search_min_seconds}

    def run(self, inputs, out, progress):
        from edge_distill.export.budget import Judgement
        from edge_distill.export.selection import choose, time_candidates

        samples = self.samples()
        judgement = Judgement(**json.loads(inputs["quantize.json"].read_text())["judgement"])
        variants = {name: inputs[f"{name}.onnx"] for name in ("fp32", "int8") if f"{name}.onnx" in inputs}
        config = self.settings.config
        timing = time_candidates(variants, samples.held_out[0], config.benchmark, config.device,
                                 config.quantize.search_min_seconds, progress)
        shipped, threads, why = choose(judgement, timing, config.device.arch)
        progress(f"shipping {shipped} at {threads} thread(s): {why}")
        (out / "selection.json").write_text(json.dumps({"timing": timing, "shipped": shipped, "threads": threads,
                                                        "why": why}))


class OptimizePackage(_OptimizeStage):
    name = "optimize-package"
    description = ("Write the bundle: the shipped model labelled, golden vectors from held-out samples, the model card, "
                   "the manifest.")
    version = 2  # 2: README.md, the io kind's model card
    inputs = ("fp32.onnx", "int8.onnx", "simplify.json", "quantize.json", "selection.json")
    outputs = ("model.onnx", "golden.npz", "golden.json", "README.md", "manifest.json")

    def params(self):
        return {**self.settings.sample_params(), "config": self.settings.config.to_dict()}

    def run(self, inputs, out, progress):
        from edge_distill.bundle.kinds.io import BUNDLE_FILES, GOLDEN_COUNT, io_manifest, render_card, write_io_golden
        from edge_distill.bundle.writer import finish_bundle, label_model
        from edge_distill.export.budget import Judgement

        s = self.settings
        samples = self.samples()
        quantized = json.loads(inputs["quantize.json"].read_text())
        selection = json.loads(inputs["selection.json"].read_text())
        judgement = Judgement(**quantized["judgement"])
        variants = {name: inputs[f"{name}.onnx"] for name in ("fp32", "int8") if f"{name}.onnx" in inputs}
        model = out / "model.onnx"
        label_model(variants[selection["shipped"]], model, precision=selection["shipped"], profile=s.config.profile)
        golden = write_io_golden(model, samples.held_out[:GOLDEN_COUNT], samples.outputs, out)
        notes = json.loads(inputs["simplify.json"].read_text())["notes"] + quantized["notes"]
        manifest = io_manifest(s.config, s.model, model, samples.fixed, golden, variants, selection["timing"],
                               samples.budget, judgement, selection["threads"],
                               {"precision": selection["shipped"], "why": selection["why"],
                                "quantization": quantized["recipe"], "notes": notes})
        finish_bundle(manifest, out, BUNDLE_FILES, render_card)


OPTIMIZE_STAGES = (OptimizeSimplify, OptimizeQuantize, OptimizeSelect, OptimizePackage)


def optimize_stages(settings: OptimizeSettings, cache_dir: Path) -> list:
    """The stages of one optimize run; the samples are read once, when the first stage asks."""
    import functools

    samples = functools.cache(lambda: load_samples(settings))
    return [stage(settings, cache_dir, samples) for stage in OPTIMIZE_STAGES]
