"""The build's stages, in order. Heavy libraries are imported inside `run`, so planning a build
and checking its cache (a no-op rebuild) never pays for importing torch."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_distill.config import BuildConfig, StudentConfig, TeacherConfig


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def architecture(cfg: TeacherConfig | StudentConfig) -> dict[str, Any]:
    """The part of a model config that fixes its architecture (not how it is trained)."""
    return {"factory": cfg.factory, "family": cfg.family, "width": cfg.width, "depth": cfg.depth}


class ConfiguredStage:
    """Base for stages built from the whole BuildConfig; each picks its slice in `params`."""

    inputs: tuple[str, ...] = ()

    def __init__(self, config: BuildConfig):
        self.config = config

    def external_files(self) -> Mapping[str, Path]:
        return {}


def _factory_files(*factories: tuple[str, str]) -> dict[str, Path]:
    from edge_distill.models import factory_source

    files = {}
    for role, spec in factories:
        source = factory_source(spec)
        if source is not None:
            files[f"{role}.factory"] = source
    return files


def _build_model(config: BuildConfig, role: str, dataset):
    import torch

    from edge_distill.models import build_model, check_output_size

    cfg = config.teacher if role == "teacher" else config.student
    torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
    model = build_model(cfg.factory, cfg.family, dataset.input_shape, dataset.num_classes, cfg.width, cfg.depth, role)
    check_output_size(model, dataset.input_shape, dataset.num_classes, role)
    return model


def _load_trained(config: BuildConfig, role: str, dataset, weights: Path):
    import torch

    model = _build_model(config, role, dataset)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


class DataStage(ConfiguredStage):
    name = "data"
    version = 1
    outputs = ("dataset.npz", "dataset.json")

    def params(self):
        return {"data": dataclasses.asdict(self.config.data), "seed": self.config.seed}

    def external_files(self):
        from edge_distill.data import source_path

        path = source_path(self.config.data)
        return {"data.source": path} if path is not None and path.exists() else {}

    def run(self, inputs, out, progress):
        from edge_distill.data import load_dataset

        progress(f"loading {self.config.data.source}")
        dataset = load_dataset(self.config.data, self.config.seed)
        dataset.save(out / "dataset.npz")
        write_json(
            out / "dataset.json",
            {
                "source": dataset.source,
                "labels": dataset.labels,
                "input_shape": list(dataset.input_shape),
                "preprocessing": dataset.preprocessing,
                "split_sizes": {split: len(y) for split, y in dataset.y.items()},
            },
        )


class TeacherStage(ConfiguredStage):
    name = "teacher"
    version = 1
    inputs = ("dataset.npz",)
    outputs = ("teacher.pt", "teacher.json")

    def params(self):
        return {"teacher": dataclasses.asdict(self.config.teacher), "seed": self.config.seed}

    def external_files(self):
        files = _factory_files(("teacher", self.config.teacher.factory))
        if self.config.teacher.checkpoint:
            files["teacher.checkpoint"] = Path(self.config.teacher.checkpoint)
        return files

    def run(self, inputs, out, progress):
        import torch

        from edge_distill.data import Dataset
        from edge_distill.distill.trainer import FitSettings, accuracy, fit
        from edge_distill.models import count_params, load_checkpoint

        cfg = self.config.teacher
        dataset = Dataset.load(inputs["dataset.npz"])
        model = _build_model(self.config, "teacher", dataset)
        report: dict[str, Any] = {"source": cfg.factory or f"built-in {cfg.family}(width={cfg.width}, depth={cfg.depth})"}
        if cfg.checkpoint:
            progress(f"loading teacher weights from {cfg.checkpoint}")
            load_checkpoint(model, Path(cfg.checkpoint), "teacher")
            report["trained_here"] = False
        else:
            settings = FitSettings(cfg.epochs, cfg.batch_size, cfg.lr, self.config.seed)
            history = fit(model, dataset.x["train"], dataset.y["train"], dataset.x["val"], dataset.y["val"],
                          settings, progress=progress, label="teacher")
            report |= {"trained_here": True, "epochs": cfg.epochs, "best_epoch": history.best_epoch}
        report |= {
            "params": count_params(model),
            "val_accuracy": accuracy(model, dataset.x["val"], dataset.y["val"]),
            "test_accuracy": accuracy(model, dataset.x["test"], dataset.y["test"]),
        }
        torch.save(model.state_dict(), out / "teacher.pt")
        write_json(out / "teacher.json", report)


class DistillStage(ConfiguredStage):
    name = "distill"
    version = 1
    inputs = ("dataset.npz", "teacher.pt")
    outputs = ("student.pt", "distill.json")

    def params(self):
        params = {
            "teacher": architecture(self.config.teacher),
            "student": dataclasses.asdict(self.config.student),
            "distill": dataclasses.asdict(self.config.distill),
            "seed": self.config.seed,
        }
        if self.config.distill.qat_epochs:  # QAT trains in the profile's int8 scheme
            quantize = self.config.quantize
            params["qat_scheme"] = {"per_channel": quantize.per_channel, "activation_type": quantize.activation_type}
        return params

    def external_files(self):
        return _factory_files(("teacher", self.config.teacher.factory), ("student", self.config.student.factory))

    def run(self, inputs, out, progress):
        import torch

        from edge_distill.data import Dataset
        from edge_distill.distill.trainer import FitSettings, accuracy, fit, predict_logits
        from edge_distill.models import count_params

        cfg = self.config.distill
        dataset = Dataset.load(inputs["dataset.npz"])
        teacher = _load_trained(self.config, "teacher", dataset, inputs["teacher.pt"])
        student = _build_model(self.config, "student", dataset)
        teacher_logits = predict_logits(teacher, dataset.x["train"])  # (N, K), once: inputs are not augmented
        settings = FitSettings(cfg.epochs, cfg.batch_size, cfg.lr, self.config.seed, cfg.temperature, cfg.alpha)
        history = fit(student, dataset.x["train"], dataset.y["train"], dataset.x["val"], dataset.y["val"],
                      settings, teacher_logits=teacher_logits, progress=progress, label="distill")
        report = {}
        if cfg.qat_epochs:
            report["qat"] = self._fine_tune_quant_aware(student, dataset, teacher_logits, history, progress)
        torch.save(student.state_dict(), out / "student.pt")
        write_json(
            out / "distill.json",
            {
                **report,
                "method": "logit KD (Hinton et al. 2015)",
                "loss": "alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)",
                "temperature": cfg.temperature,
                "alpha": cfg.alpha,
                "epochs": cfg.epochs,
                "best_epoch": history.best_epoch,
                "teacher_outputs": "computed once and reused every epoch (no augmentation)",
                "student": self.config.student.factory
                or (f"built-in {self.config.student.family}(width={self.config.student.width}, "
                    f"depth={self.config.student.depth})"),
                "params": count_params(student),
                "val_accuracy": accuracy(student, dataset.x["val"], dataset.y["val"]),
                "test_accuracy": accuracy(student, dataset.x["test"], dataset.y["test"]),
            },
        )

    def _fine_tune_quant_aware(self, student, dataset, teacher_logits, kd_history, progress) -> dict:
        from edge_distill.distill.qat import prepare_qat, strip_qat
        from edge_distill.distill.trainer import FitSettings, fit

        cfg, quantize = self.config.distill, self.config.quantize
        prepare_qat(student, quantize.per_channel, signed_activations=quantize.activation_type == "QInt8")
        settings = FitSettings(cfg.qat_epochs, cfg.batch_size, cfg.qat_lr, self.config.seed, cfg.temperature, cfg.alpha)
        history = fit(student, dataset.x["train"], dataset.y["train"], dataset.x["val"], dataset.y["val"],
                      settings, teacher_logits=teacher_logits, progress=progress, label="qat")
        strip_qat(student)
        return {
            "epochs": cfg.qat_epochs,
            "lr": cfg.qat_lr,
            "scheme": {"per_channel": quantize.per_channel, "activation_type": quantize.activation_type,
                       "weights": "symmetric int8"},
            "val_accuracy_before": kd_history.best_val_accuracy,
            "val_accuracy_fake_quant": history.best_val_accuracy,
        }


class ExportStage(ConfiguredStage):
    name = "export"
    version = 1
    inputs = ("dataset.npz", "teacher.pt", "student.pt")
    outputs = ("teacher_fp32.onnx", "student_exported.onnx", "export.json")

    def params(self):
        return {
            "export": dataclasses.asdict(self.config.export),
            "teacher": architecture(self.config.teacher),
            "student": architecture(self.config.student),
        }

    def external_files(self):
        return _factory_files(("teacher", self.config.teacher.factory), ("student", self.config.student.factory))

    def run(self, inputs, out, progress):
        from edge_distill.data import Dataset
        from edge_distill.export.onnx_export import check_export_parity, export_onnx
        from edge_distill.models import count_params

        cfg = self.config.export
        dataset = Dataset.load(inputs["dataset.npz"])
        samples = dataset.x["val"][: cfg.parity_samples]
        report: dict[str, Any] = {"exporter": "torch.onnx.export(dynamo=True)", "opset": cfg.opset}
        for role, weights, target in (
            ("teacher", "teacher.pt", "teacher_fp32.onnx"),
            ("student", "student.pt", "student_exported.onnx"),
        ):
            progress(f"exporting {role} to ONNX (opset {cfg.opset})")
            model = _load_trained(self.config, role, dataset, inputs[weights])
            export_onnx(model, samples, out / target, cfg.opset)
            diffs = check_export_parity(model, out / target, samples, cfg.parity_atol, cfg.parity_rtol)
            report[role] = {"params": count_params(model), "parity_max_abs_diff": diffs, "parity_samples": len(samples)}
        write_json(out / "export.json", report)


class SimplifyStage(ConfiguredStage):
    name = "simplify"
    version = 1
    inputs = ("dataset.npz", "student_exported.onnx")
    outputs = ("student_fp32.onnx", "simplify.json")

    def params(self):
        export = self.config.export
        return {"simplify": dataclasses.asdict(self.config.simplify), "atol": export.parity_atol,
                "rtol": export.parity_rtol, "samples": export.parity_samples}

    def run(self, inputs, out, progress):
        from edge_distill.data import Dataset
        from edge_distill.export.simplify import simplify_onnx

        if not self.config.simplify.enabled:
            progress("simplify skipped: simplify.enabled = false (recorded in the manifest)")
            shutil.copyfile(inputs["student_exported.onnx"], out / "student_fp32.onnx")
            write_json(out / "simplify.json", {"enabled": False, "reason": "opted out: simplify.enabled = false"})
            return
        progress("simplifying with onnxsim")
        samples = Dataset.load(inputs["dataset.npz"]).x["val"][: self.config.export.parity_samples]
        report = simplify_onnx(inputs["student_exported.onnx"], out / "student_fp32.onnx", samples,
                               self.config.export.parity_atol, self.config.export.parity_rtol)
        write_json(out / "simplify.json", {"enabled": True, **report})


class QuantizeStage(ConfiguredStage):
    """The profile's int8 recipe, or (quantize.search) the fastest recipe within the accuracy budget.

    Writes the best int8 model (reported as student_int8) and the model selected to ship, which
    is the int8 one unless the search found fp32 (or fp16 on a GPU) faster within budget."""

    name = "quantize"
    version = 2
    inputs = ("dataset.npz", "student_fp32.onnx")
    outputs = ("student_int8.onnx", "selected.onnx", "quantize.json")

    def params(self):
        params = {"quantize": dataclasses.asdict(self.config.quantize), "seed": self.config.seed}
        if self.config.quantize.search:  # the search measures latency: it depends on where it runs
            from edge_distill.benchmarks.runner import describe_host

            params |= {"device": dataclasses.asdict(self.config.device), "host": describe_host(),
                       "benchmark": dataclasses.asdict(self.config.benchmark)}
        return params

    def run(self, inputs, out, progress):
        import tempfile

        import numpy as np
        import onnx

        from edge_distill.data import Dataset
        from edge_distill.errors import QuantizeError
        from edge_distill.export.quantize import QuantRecipe, count_ops, quantize_model, quantized_node_count
        from edge_distill.export.search import search_quantization

        cfg = self.config.quantize
        dataset = Dataset.load(inputs["dataset.npz"])
        train = dataset.x["train"]
        # Real training samples, a seeded random subset so every class is likely represented.
        picked = np.random.default_rng(self.config.seed).permutation(len(train))[: cfg.calibration_samples]
        calibration = train[np.sort(picked)]
        with tempfile.TemporaryDirectory() as tmp:
            if cfg.search:
                found = search_quantization(inputs["student_fp32.onnx"], calibration, dataset.x["val"],
                                            dataset.y["val"], cfg, self.config.device, self.config.benchmark,
                                            Path(tmp), progress)
                if found["best_int8"] is None:
                    raise QuantizeError("no int8 recipe could be built for this model", "see quantize.json candidates")
                int8_recipe, winner = found["best_int8"]["name"], found["winner"]
                shutil.copyfile(found["best_int8"]["file"], out / "student_int8.onnx")
                shutil.copyfile(winner["file"], out / "selected.onnx")
                selection = {
                    "variant": {"fp32": "student_fp32", "fp16": "student_fp16"}.get(winner["kind"], "student_int8"),
                    "recipe": winner["name"],
                    "why": found["why"],
                    "candidates": [{k: v for k, v in row.items() if k != "file"} for row in found["rows"]],
                    "sensitivity": found["sensitivity"],
                    "reference_val_accuracy": found["reference_accuracy"],
                    "latency_measured_on": found["measured_on"],
                    "threads": found["threads"],
                }
            else:
                recipe = QuantRecipe.from_config(cfg)
                progress(f"calibrating on {len(calibration)} training samples ({cfg.calibrate_method}), "
                         f"quantizing to int8 {recipe.name}")
                quantize_model(inputs["student_fp32.onnx"], out / "student_int8.onnx", calibration, recipe, Path(tmp))
                shutil.copyfile(out / "student_int8.onnx", out / "selected.onnx")
                int8_recipe = recipe.name
                selection = {"variant": "student_int8", "recipe": recipe.name,
                             "why": "the profile's recipe (quantize.search = false)"}
        op_counts = count_ops(onnx.load(str(out / "student_int8.onnx")))
        if quantized_node_count(op_counts) == 0:
            raise QuantizeError("quantization left the model without any int8 node", "check that the model has Conv/Gemm/MatMul layers")
        write_json(out / "quantize.json", {**dataclasses.asdict(cfg), "int8_recipe": int8_recipe, "op_counts": op_counts,
                                           "quantized_nodes": quantized_node_count(op_counts),
                                           "calibration_samples": len(calibration), "selected": selection})


class DescribeStage(ConfiguredStage):
    """Writes the shipped model: the int8 student with labels, preprocessing and build id inside,
    so that the benchmark measures the exact bytes that ship."""

    name = "describe"
    version = 2
    inputs = ("selected.onnx", "dataset.json", "quantize.json")
    outputs = ("shipped_model.onnx",)

    def params(self):
        return {"profile": self.config.profile, "device": dataclasses.asdict(self.config.device)}

    def run(self, inputs, out, progress):
        from edge_distill.pipeline.package import embed_metadata

        progress("embedding labels, preprocessing and build id in the model")
        variant = read_json(inputs["quantize.json"])["selected"]["variant"]
        embed_metadata(inputs["selected.onnx"], out / "shipped_model.onnx", self.config, read_json(inputs["dataset.json"]),
                       variant)


class BenchmarkStage(ConfiguredStage):
    name = "benchmark"
    version = 3
    inputs = ("dataset.npz", "teacher_fp32.onnx", "student_fp32.onnx", "student_int8.onnx", "shipped_model.onnx",
              "export.json", "quantize.json")
    outputs = ("benchmark.json",)

    def params(self):
        from edge_distill.benchmarks.runner import describe_host

        # The host is part of the key: figures cached on one machine are not this machine's.
        return {"benchmark": dataclasses.asdict(self.config.benchmark), "device": dataclasses.asdict(self.config.device),
                "host": describe_host()}

    def run(self, inputs, out, progress):
        from edge_distill.benchmarks.estimate import estimate_latency
        from edge_distill.benchmarks.harness import benchmark_variants
        from edge_distill.data import Dataset

        dataset = Dataset.load(inputs["dataset.npz"])
        params = read_json(inputs["export.json"])
        shipped = read_json(inputs["quantize.json"])["selected"]["variant"]
        variants = {
            "teacher_fp32": (inputs["teacher_fp32.onnx"], params["teacher"]["params"]),
            "student_fp32": (inputs["student_fp32.onnx"], params["student"]["params"]),
            "student_int8": (inputs["student_int8.onnx"], params["student"]["params"]),
        }
        # The shipped variant is measured from the exact bytes that ship.
        variants[shipped] = (inputs["shipped_model.onnx"], params["student"]["params"])
        report = benchmark_variants(variants, dataset.x["test"], dataset.y["test"], self.config.benchmark,
                                    self.config.device, progress)
        report["shipped_variant"] = shipped
        for metric in report["metrics"]:
            estimate = estimate_latency(variants[metric["variant"]][0], self.config.device, report["method"]["threads"],
                                        self.config.benchmark.batch_size)
            metric["estimate_ms"] = estimate["estimate_ms"]
            if report["host"]["arch"] == self.config.device.arch:  # a ratio to another machine's figure means nothing
                metric["measured_over_estimate"] = metric["latency_ms"]["p50"] / estimate["estimate_ms"]
        write_json(out / "benchmark.json", report)


class PackageStage(ConfiguredStage):
    name = "package"
    version = 2
    inputs = ("shipped_model.onnx", "dataset.npz", "dataset.json", "teacher.json", "distill.json", "export.json",
              "simplify.json", "quantize.json", "benchmark.json")
    outputs = ("model.onnx", "manifest.json", "README.md", "golden.npz", "golden.json",
               "report.json", "report.csv", "report.md", "report.html")

    def params(self):
        return {"config": self.config.to_dict()}

    def run(self, inputs, out, progress):
        from edge_distill.pipeline.package import write_bundle

        write_bundle(self.config, inputs, out)


STAGES: tuple[type[ConfiguredStage], ...] = (
    DataStage, TeacherStage, DistillStage, ExportStage, SimplifyStage, QuantizeStage, DescribeStage, BenchmarkStage,
    PackageStage,
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
