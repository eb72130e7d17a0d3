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
from edge_distill.errors import ConfigError


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

    def check(self) -> None:
        pass

    def external_files(self) -> Mapping[str, Path]:
        return {}


def _factory_files(*factories: tuple[str, str]) -> dict[str, Path]:
    from edge_distill.models.factory import factory_source

    files = {}
    for role, spec in factories:
        source = factory_source(spec, role)
        if source is not None:
            files[f"{role}.factory"] = source
    return files


def _build_model(config: BuildConfig, role: str, dataset):
    import torch

    from edge_distill.models.loading import build_model, check_output_size

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
    version = 2
    outputs = ("dataset.npz", "dataset.json")

    def params(self):
        return {"data": dataclasses.asdict(self.config.data), "seed": self.config.seed}

    def external_files(self):
        from edge_distill.data.dataset import source_path

        path = source_path(self.config.data)
        files = {"data.source": path} if path is not None and path.exists() else {}
        if self.config.data.transfer:  # the runner reports a missing one before any stage runs
            files["data.transfer"] = Path(self.config.data.transfer)
        return files

    def run(self, inputs, out, progress):
        from edge_distill.data.dataset import load_dataset

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
                "split_sizes": {split: len(x) for split, x in dataset.x.items()},
            },
        )


def _teacher_files(config: BuildConfig) -> dict[str, Path]:
    files = {f"teacher.ensemble[{i}]": Path(f) for i, f in enumerate(config.teacher.ensemble)}
    for key in ("file", "checkpoint"):
        if getattr(config.teacher, key):
            files[f"teacher.{key}"] = Path(getattr(config.teacher, key))
    return files


def _load_main_teacher(config: BuildConfig, dataset, teacher_model: Path, name: str = "teacher"):
    """The teacher in a file of whichever format (a state_dict loads into the configured model)."""
    from edge_distill.distill.teachers import load_teacher_file

    return load_teacher_file(teacher_model, name, dataset.input_shape, dataset.num_classes,
                             lambda: _build_model(config, "teacher", dataset))


def _load_ensemble_members(config: BuildConfig, dataset) -> list:
    """The teacher.ensemble files, each checked against the data."""
    from edge_distill.distill.teachers import load_teacher_file

    return [load_teacher_file(Path(f), f"teacher.ensemble[{i}] ({f})", dataset.input_shape, dataset.num_classes)
            for i, f in enumerate(config.teacher.ensemble)]


def _load_teachers(config: BuildConfig, dataset, teacher_model: Path, name: str = "teacher", members=None):
    """The main teacher (`name` for errors) and the ensemble files (`members` if already loaded)."""
    from edge_distill.distill.teachers import TeacherEnsemble

    members = _load_ensemble_members(config, dataset) if members is None else members
    return TeacherEnsemble([_load_main_teacher(config, dataset, teacher_model, name), *members],
                           config.teacher.ensemble_weights)


def _transfer_train_set(dataset):
    """Labeled training samples, then the transfer set with label -1: (x, y)."""
    import numpy as np

    from edge_distill.distill.losses import UNLABELED

    x = np.concatenate([dataset.x["train"], dataset.x["transfer"]])
    y = np.concatenate([dataset.y["train"], np.full(len(dataset.x["transfer"]), UNLABELED, dtype=np.int64)])
    return x, y


class TeacherStage(ConfiguredStage):
    """The teacher, ready to distill from: trained here, loaded from factory + checkpoint, or the
    user's TorchScript / torch.export / ONNX file as is. Also computes every teacher's logits on
    the training and transfer samples once, so that builds that only change how the student
    learns (temperature, epochs, method) reuse them."""

    name = "teacher"
    version = 2
    inputs = ("dataset.npz",)
    # teacher.model: a state_dict, TorchScript, torch.export or ONNX file (read by its contents).
    outputs = ("teacher.model", "teacher.json", "teacher_logits.npy")

    def params(self):
        return {"teacher": dataclasses.asdict(self.config.teacher), "seed": self.config.seed}

    def check(self):
        cfg = self.config.teacher
        if cfg.file and (cfg.checkpoint or cfg.factory):
            given = " and ".join(f"teacher.{k}" for k in ("factory", "checkpoint") if getattr(cfg, k))
            raise ConfigError(f"teacher.file and {given} both name a teacher", "give either a whole-model file "
                              "(teacher.file) or a factory and its checkpoint")

    def external_files(self):
        return _factory_files(("teacher", self.config.teacher.factory)) | _teacher_files(self.config)

    def run(self, inputs, out, progress):
        import numpy as np
        import torch

        from edge_distill.data.dataset import Dataset
        from edge_distill.distill.trainer import FitSettings, fit
        from edge_distill.models.loading import count_params, load_checkpoint

        cfg = self.config.teacher
        dataset = Dataset.load(inputs["dataset.npz"])
        report: dict[str, Any] = {}
        members = _load_ensemble_members(self.config, dataset)  # a bad ensemble file costs no training
        if cfg.file:
            progress(f"loading the teacher from {cfg.file}")
            teachers = _load_teachers(self.config, dataset, Path(cfg.file), "teacher.file", members)
            shutil.copyfile(cfg.file, out / "teacher.model")
            report |= {"source": cfg.file, "format": teachers.teachers[0].format, "trained_here": False}
        else:
            model = _build_model(self.config, "teacher", dataset)
            report["source"] = cfg.factory or f"built-in {cfg.family}(width={cfg.width}, depth={cfg.depth})"
            if cfg.checkpoint:
                progress(f"loading teacher weights from {cfg.checkpoint}")
                load_checkpoint(model, Path(cfg.checkpoint), "teacher")
                report["trained_here"] = False
            else:
                settings = FitSettings(cfg.epochs, cfg.batch_size, cfg.lr, self.config.seed)
                history = fit(model, dataset.x["train"], dataset.y["train"], dataset.x["val"], dataset.y["val"],
                              settings, progress=progress, label="teacher")
                report |= {"trained_here": True, "epochs": cfg.epochs, "best_epoch": history.best_epoch}
            torch.save(model.state_dict(), out / "teacher.model")
            report |= {"format": "state_dict", "params": count_params(model)}
            teachers = _load_teachers(self.config, dataset, out / "teacher.model", members=members)
        progress(f"computing the outputs of {len(teachers.teachers)} teacher(s) on "
                 f"{len(dataset.x['train'])} labeled + {len(dataset.x['transfer'])} transfer samples")
        x_train, _ = _transfer_train_set(dataset)
        np.save(out / "teacher_logits.npy", np.stack([t.logits(x_train) for t in teachers.teachers]))  # (M, N, K)
        report["members"] = [
            {"name": t.name, "format": t.format,
             "val_accuracy": float((t.logits(dataset.x["val"]).argmax(1) == dataset.y["val"]).mean()),
             "test_accuracy": float((t.logits(dataset.x["test"]).argmax(1) == dataset.y["test"]).mean())}
            for t in teachers.teachers
        ]
        report |= {"val_accuracy": report["members"][0]["val_accuracy"],
                   "test_accuracy": report["members"][0]["test_accuracy"]}
        write_json(out / "teacher.json", report)


class DistillStage(ConfiguredStage):
    """The student, by the configured method: logit KD (always), feature hints and attention
    transfer, deep-head self-distillation, born-again generations, a chain of assistants, an
    ensemble of teachers, consistent augmentation, on the labeled and transfer samples; in one
    process or several under torchrun."""

    name = "distill"
    version = 2
    inputs = ("dataset.npz", "teacher.model", "teacher_logits.npy")
    outputs = ("student.pt", "distill.json")

    def params(self):
        params = {
            "teacher": architecture(self.config.teacher),
            "ensemble_weights": self.config.teacher.ensemble_weights,
            "student": dataclasses.asdict(self.config.student),
            "distill": dataclasses.asdict(self.config.distill),
            "seed": self.config.seed,
        }
        if self.config.distill.qat_epochs:  # QAT trains in the profile's int8 scheme
            quantize = self.config.quantize
            params["qat_scheme"] = {"per_channel": quantize.per_channel, "activation_type": quantize.activation_type}
        return params

    def external_files(self):
        files = _factory_files(("teacher", self.config.teacher.factory), ("student", self.config.student.factory))
        return files | {k: v for k, v in _teacher_files(self.config).items() if k.startswith("teacher.ensemble")}

    def check(self):
        cfg = self.config.distill
        if cfg.hint_layers and (cfg.assistants or cfg.generations > 1):
            raise ConfigError("distill.hint_layers name layers of the teacher and the student, so they cannot be "
                              "combined with distill.assistants or distill.generations > 1",
                              "drop one of them")
        self.teacher_outputs_mode()

    def run(self, inputs, out, progress):
        from edge_distill.distill.trainer import world

        if self.config.distill.nproc > 1 and world()[1] == 1:
            from edge_distill.pipeline.distributed import run_distributed

            run_distributed(self.config, inputs, out, progress)
        else:
            self.train(inputs, out, progress)

    def teacher_outputs_mode(self) -> tuple[str, str]:
        """("cached" | "per_step", why), resolving distill.teacher_outputs = "auto"."""
        cfg = self.config.distill
        live_reason = ("augmentation is on: the teacher labels each augmented batch" if cfg.augment else
                       "feature hints need the teacher's layers on each batch" if cfg.hint_layers else "")
        if cfg.teacher_outputs == "cached" and live_reason:
            raise ConfigError(f"distill.teacher_outputs = 'cached' cannot be used: {live_reason}",
                              "set distill.teacher_outputs = 'auto'")
        if cfg.teacher_outputs == "per_step":
            return "per_step", "distill.teacher_outputs = 'per_step'"
        if live_reason:
            return "per_step", live_reason
        return "cached", "inputs are not augmented: teacher outputs computed once by the teacher stage, reused every epoch"

    def train(self, inputs, out, progress):
        """Train in this process (one of several under torchrun); rank 0 writes the outputs."""
        import numpy as np
        import torch

        from edge_distill.data.dataset import Dataset
        from edge_distill.distill.augment import augmentation_kind
        from edge_distill.distill.chain import Link, train_chain
        from edge_distill.distill.trainer import accuracy, world
        from edge_distill.models.loading import count_params

        cfg = self.config.distill
        dataset = Dataset.load(inputs["dataset.npz"])
        x_train, y_train = _transfer_train_set(dataset)
        mode, why = self.teacher_outputs_mode()
        progress(f"teacher outputs: {mode} ({why})")
        rank = world()[0]
        teachers = _load_teachers(self.config, dataset, inputs["teacher.model"])
        cached = np.load(inputs["teacher_logits.npy"]) if mode == "cached" else None  # (M, N, K)
        # Each assistant, then the student once per born-again generation; a fresh seed per link.
        sizes = [(f"assistant {i + 1} ({a['width']}x{a['depth']})", a) for i, a in enumerate(cfg.assistants)]
        sizes += [("student" if cfg.generations == 1 else f"student generation {g + 1}", None)
                  for g in range(cfg.generations)]
        links = [Link(label, lambda size=size, step=step: self._build_student(dataset, size, step))
                 for step, (label, size) in enumerate(sizes)]
        result = train_chain(links, teachers, cached, x_train, y_train, dataset.x["val"], dataset.y["val"],
                             dataset.input_shape, cfg, self.config.seed, progress)
        student, history = result.student, result.history
        report = {}
        if cfg.qat_epochs:
            report["qat"] = self._fine_tune_quant_aware(result, dataset, x_train, y_train, progress)
        if rank != 0:
            return
        torch.save(student.state_dict(), out / "student.pt")
        write_json(out / "distill.json", {
            **report,
            "methods": self.describe_methods(),
            "loss": "alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y) [+ the methods' terms]",
            "temperature": cfg.temperature,
            "alpha": cfg.alpha,
            "epochs": cfg.epochs,
            "best_epoch": history.best_epoch,
            "teacher_outputs": {"mode": mode, "why": why},
            "augmentation": augmentation_kind(dataset.input_shape) if cfg.augment else "none",
            "samples": {"labeled": len(dataset.y["train"]), "transfer": len(dataset.x["transfer"])},
            "processes": world()[1],
            "chain": result.report,
            "student": self.config.student.factory
            or (f"built-in {self.config.student.family}(width={self.config.student.width}, "
                f"depth={self.config.student.depth})"),
            "params": count_params(student),
            "val_accuracy": accuracy(student, dataset.x["val"], dataset.y["val"]),
            "test_accuracy": accuracy(student, dataset.x["test"], dataset.y["test"]),
        })

    def describe_methods(self) -> list[str]:
        cfg = self.config.distill
        methods = ["logit KD (Hinton et al. 2015)"]
        if self.config.teacher.ensemble:
            methods.append(f"multi-teacher: {1 + len(self.config.teacher.ensemble)} teachers, "
                           f"{'weighted mean' if self.config.teacher.ensemble_weights else 'mean'} of softened distributions")
        if cfg.hint_layers and cfg.hint_weight:
            methods.append(f"feature hints (FitNets) on {cfg.hint_layers}, weight {cfg.hint_weight}")
        if cfg.hint_layers and cfg.attention_weight:
            methods.append(f"attention transfer on {cfg.hint_layers}, weight {cfg.attention_weight}")
        if cfg.self_heads:
            methods.append(f"self-distillation: auxiliary heads on {cfg.self_heads} taught by the final head")
        if cfg.generations > 1:
            methods.append(f"born-again: {cfg.generations} generations")
        if cfg.assistants:
            methods.append(f"progressive: teacher -> {len(cfg.assistants)} assistant(s) -> student")
        if cfg.augment:
            methods.append("consistent augmentation (function matching)")
        if self.config.data.transfer or self.config.data.labeled_samples:
            methods.append("unlabeled transfer set labeled by the teacher")
        return methods

    def _build_student(self, dataset, size: dict | None, step: int):
        """The student (size None) or an assistant of the student's family; a fresh seed per link."""
        config = dataclasses.replace(self.config, seed=self.config.seed + step)
        if size is not None:
            config = dataclasses.replace(config, student=dataclasses.replace(config.student, factory="", **size))
        return _build_model(config, "student", dataset)

    def _fine_tune_quant_aware(self, chain, dataset, x_train, y_train, progress) -> dict:
        """Fake-quant KD fine-tuning of the chain's student, from the teachers that taught it."""
        from edge_distill.distill.qat import prepare_qat, strip_qat
        from edge_distill.distill.trainer import Distillation, FitSettings, fit

        cfg, quantize = self.config.distill, self.config.quantize
        student, teachers, kd_history = chain.student, chain.teachers, chain.history
        soft = chain.soft_targets if chain.soft_targets is not None else teachers.logits(x_train, cfg.temperature)
        prepare_qat(student, quantize.per_channel, signed_activations=quantize.activation_type == "QInt8")
        objective = Distillation(student, teachers, dataset.input_shape, cfg.temperature, cfg.alpha, cached=soft)
        settings = FitSettings(cfg.qat_epochs, cfg.batch_size, cfg.qat_lr, self.config.seed)
        history = fit(student, x_train, y_train, dataset.x["val"], dataset.y["val"], settings, objective,
                      progress=progress, label="qat")
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
    version = 2
    inputs = ("dataset.npz", "teacher.model", "student.pt")
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
        import numpy as np

        from edge_distill.data.dataset import Dataset
        from edge_distill.export.onnx_export import check_export_parity, export_onnx
        from edge_distill.export.onnx_io import load_onnx
        from edge_distill.models.loading import count_params

        cfg = self.config.export
        dataset = Dataset.load(inputs["dataset.npz"])
        samples = dataset.x["val"][: cfg.parity_samples]
        report: dict[str, Any] = {"exporter": "torch.onnx.export(dynamo=True)", "opset": cfg.opset}
        teacher = _load_main_teacher(self.config, dataset, inputs["teacher.model"])
        if teacher.format == "onnx":  # a black-box teacher is measured as the user gave it
            shutil.copyfile(inputs["teacher.model"], out / "teacher_fp32.onnx")
            params = sum(int(np.prod(t.dims)) for t in load_onnx(out / "teacher_fp32.onnx").graph.initializer)
            report["teacher"] = {"params": params, "format": "onnx", "exported": False}
        else:
            progress(f"exporting the teacher to ONNX (opset {cfg.opset})")
            module = teacher.module
            export_onnx(module, samples, out / "teacher_fp32.onnx", cfg.opset)
            diffs = check_export_parity(module, out / "teacher_fp32.onnx", samples, cfg.parity_atol, cfg.parity_rtol)
            report["teacher"] = {"params": count_params(module), "format": teacher.format,
                                 "parity_max_abs_diff": diffs, "parity_samples": len(samples)}
        progress(f"exporting the student to ONNX (opset {cfg.opset})")
        student = _load_trained(self.config, "student", dataset, inputs["student.pt"])
        export_onnx(student, samples, out / "student_exported.onnx", cfg.opset)
        diffs = check_export_parity(student, out / "student_exported.onnx", samples, cfg.parity_atol, cfg.parity_rtol)
        report["student"] = {"params": count_params(student), "parity_max_abs_diff": diffs, "parity_samples": len(samples)}
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
        from edge_distill.data.dataset import Dataset
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
            from edge_distill.device.runner import describe_host

            params |= {"device": dataclasses.asdict(self.config.device), "host": describe_host(),
                       "benchmark": dataclasses.asdict(self.config.benchmark)}
        return params

    def run(self, inputs, out, progress):
        import tempfile

        import numpy as np
        import onnx

        from edge_distill.data.dataset import Dataset
        from edge_distill.errors import QuantizeError
        from edge_distill.export.quantize import QuantRecipe, count_ops, quantize_model, quantized_node_count
        from edge_distill.export.search import search_quantization

        cfg = self.config.quantize
        dataset = Dataset.load(inputs["dataset.npz"])
        # Real training inputs, labeled and transfer (calibration needs no labels): a seeded random
        # subset, so every class is likely represented.
        train = np.concatenate([dataset.x["train"], dataset.x["transfer"]])
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
        from edge_distill.bundle.writer import embed_metadata

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

    def check(self):
        from edge_distill.measure.harness import check_providers

        check_providers(self.config.benchmark.providers, self.config.benchmark.allow_cpu_fallback)

    def params(self):
        from edge_distill.device.runner import describe_host

        # The host is part of the key: figures cached on one machine are not this machine's.
        return {"benchmark": dataclasses.asdict(self.config.benchmark), "device": dataclasses.asdict(self.config.device),
                "host": describe_host()}

    def run(self, inputs, out, progress):
        from edge_distill.measure.estimate import estimate_latency
        from edge_distill.measure.harness import benchmark_variants
        from edge_distill.data.dataset import Dataset

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
        from edge_distill.bundle.writer import write_bundle

        write_bundle(self.config, inputs, out)


STAGES: tuple[type[ConfiguredStage], ...] = (
    DataStage, TeacherStage, DistillStage, ExportStage, SimplifyStage, QuantizeStage, DescribeStage, BenchmarkStage,
    PackageStage,
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
