"""The stages of `edge-distill text` (text/build.py): thin, each settings -> library call -> files.
The text itself is read before the stages run (cheap, no torch); its digests are in the keys."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_distill import __version__
from edge_distill.errors import ConfigError
from edge_distill.pipeline.stage import Stage
from edge_distill.text.settings import (INT8, STUDENT_FILES, TEACHER_FILES, TextBuildSettings, TextData,
                                        default_teacher_folder)


def digest(texts: list[str]) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


class _TextStage(Stage):
    reads_teacher = False  # the teacher folder's files, or the fine-tuned teacher's, are part of its key

    def __init__(self, settings: TextBuildSettings, folder: Path, data: TextData, fine_tune_on):
        self.settings, self.folder, self.data, self.fine_tune_on = settings, folder, data, fine_tune_on
        if self.reads_teacher and fine_tune_on is not None:  # the teacher is the one fine-tuned here
            self.inputs = (*TEACHER_FILES, *type(self).inputs)

    def external_files(self):
        return {"--teacher-folder": self.folder} if self.reads_teacher and self.fine_tune_on is None else {}

    def teacher_folder(self, inputs) -> Path:
        return inputs["teacher/config.json"].parent if self.fine_tune_on is not None else self.folder

    def text_params(self) -> dict:
        return {"task": self.settings.task, "texts": digest(self.data.texts), "max_length": self.settings.max_length,
                "version": __version__}


class TextClassifier(_TextStage):
    name = "text-classifier"
    description = "Fine-tune the teacher folder's encoder with a new classification head on the labeled text."
    version = 1
    outputs = TEACHER_FILES
    trains = True

    def external_files(self):
        return {"--teacher-folder": self.folder}  # the encoder it fine-tunes

    def training(self):
        return dataclasses.replace(self.settings.fine_tune, threads=self.settings.distill.threads)

    def params(self):
        task = self.fine_tune_on
        return {"train": digest([f"{label}\t{text}" for text, label in task.train]), "names": task.names,
                "max_length": self.settings.max_length, "settings": dataclasses.asdict(self.training())}

    def run(self, inputs, out, progress):
        from edge_distill.text.build import fine_tune_teacher

        fine_tune_teacher(self.folder, self.settings.max_length, self.training(), self.fine_tune_on, out, progress)


class TextTeacher(_TextStage):
    name = "text-teacher"
    description = "Run the teacher on the training text: its embeddings or logits, the student's targets."
    version = 1
    outputs = ("teacher_outputs.npy",)
    reads_teacher = True

    def params(self):
        return self.text_params()

    def run(self, inputs, out, progress):
        from edge_distill.text.build import teacher_outputs

        teacher_outputs(self.teacher_folder(inputs), self.settings, self.data.texts, out, progress)


class TextTeacherExport(_TextStage):
    name = "text-teacher-export"
    description = "Export the teacher as ONNX, the reference the student is judged and timed against."
    version = 1
    outputs = ("teacher_fp32.onnx",)
    reads_teacher = True

    def params(self):
        return {"task": self.settings.task, "max_length": self.settings.max_length, "version": __version__}

    def run(self, inputs, out, progress):
        from edge_distill.text.build import export_teacher

        export_teacher(self.teacher_folder(inputs), self.settings, out, progress)


class TextStudent(_TextStage):
    name = "text-student"
    description = "Make the student from the teacher's layers and the text's vocabulary, distil it and export it."
    # 2: tokenizer.json never pads; 3: positions cut to max_length, classification; 4: student_int8.onnx;
    # 5: the int8 recipe recorded
    version = 6  # 6: int8, judging and timing are stages of their own
    inputs = ("teacher_outputs.npy",)
    outputs = STUDENT_FILES
    trains = True
    reads_teacher = True

    def params(self):
        # Not what a student is made of: where things are, how it is timed, and a sweep's budget (each
        # student of a sweep is this stage with its own `layers`; `threads` is in `distill`).
        settings = {k: v for k, v in dataclasses.asdict(self.settings).items()
                    if k not in ("teacher_folder", "text", "labeled", "benchmark_seconds", "profile", "budget",
                                 "sweep_layers", "threads", "launch")}
        data = self.data
        # Several processes train the same steps on shares of each batch: close to one process's
        # student, not the same bits.
        processes = self.settings.launch.processes
        return {**self.text_params(), "held_out": digest(data.held_out[:8]), "settings": settings,
                "labels": digest([repr([data.labels, data.names])]),
                **({"processes": processes} if processes > 1 else {})}

    def check_inputs(self):
        from edge_distill.distill.distributed import check_gpus

        check_gpus(self.settings.launch)

    def run(self, inputs, out, progress):
        if self.settings.launch.processes > 1:
            from edge_distill.distill.distributed import run_distributed

            s = self.settings
            made_of = {"task": s.task, "max_length": s.max_length, "layers": s.layers,
                       "min_token_count": s.min_token_count, "embedding_rank": s.embedding_rank}
            run_distributed("text-student", {"teacher": str(self.teacher_folder(inputs)), "settings": made_of,
                                             "distill": dataclasses.asdict(s.distill),
                                             "data": dataclasses.asdict(self.data),
                                             "targets": str(inputs["teacher_outputs.npy"]), "out": str(out)},
                            s.launch, progress)
            return
        from edge_distill.text.build import make_student

        make_student(self.teacher_folder(inputs), self.settings, self.data, inputs["teacher_outputs.npy"], out, progress)


class TextQuantize(_TextStage):
    name = "text-quantize"
    description = "Make the student int8 (the recipe's quantized nodes counted); judge teacher, float and int8 on held-out text."
    version = 1
    inputs = (*STUDENT_FILES, "teacher_fp32.onnx")
    outputs = ("student_int8.onnx", "judged.json")
    reads_teacher = True  # its tokenizer, for the teacher's figures

    def params(self):
        data = self.data
        return {"recipe": INT8.name, "max_quality_drop": self.settings.max_quality_drop,
                "held_out": digest(data.held_out), "queries": data.queries,
                "labels": digest([repr([data.held_out_labels, data.names])]), "version": __version__}

    def run(self, inputs, out, progress):
        from edge_distill.text.build import quantize_and_judge

        quantize_and_judge(self.teacher_folder(inputs), self.settings, self.data, inputs, out, progress)


class TextBenchmark(_TextStage):
    name = "text-benchmark"
    description = ("Time float against int8 side by side at each thread count and choose what ships; time teacher "
                   "and student at each sequence length.")
    version = 1
    inputs = ("teacher_fp32.onnx", "student_fp32.onnx", "student_int8.onnx", "tokenizer.json", "judged.json")
    outputs = ("timing.json",)

    def params(self):
        settings = self.settings
        return {"lengths": list(settings.lengths), "benchmark": dataclasses.asdict(settings.benchmark),
                "device": dataclasses.asdict(settings.device), "seconds": settings.benchmark_seconds,
                "text": digest(self.data.held_out[:8]), "version": __version__}

    def run(self, inputs, out, progress):
        from edge_distill.text.build import time_and_choose

        time_and_choose(self.settings, self.data, inputs, out, progress)


class TextPackage(_TextStage):
    name = "text-package"
    description = ("Write the bundle: the chosen student labelled, tokenizer.json, golden vectors and strings, the "
                   "model card, the manifest.")
    version = 2  # 2: ships the measured choice, float or int8; README.md
    inputs = (*STUDENT_FILES, "student_int8.onnx", "judged.json", "timing.json")
    outputs = ("model.onnx", "tokenizer.json", "golden.npz", "golden.json", "golden_text.json", "README.md",
               "manifest.json")

    def params(self):
        return {"source": self.data.source, "golden": self.data.golden, "held_out": len(self.data.held_out),
                "profile": self.settings.profile.to_dict() if self.settings.profile else None,
                "benchmark": dataclasses.asdict(self.settings.benchmark), "max_length": self.settings.max_length,
                "task": self.settings.task, "names": self.data.names}

    def run(self, inputs, out, progress):
        from edge_distill.text.bundle import write_text_bundle

        write_text_bundle(inputs, self.data, self.settings, out)


def text_stages(settings: TextBuildSettings, folder: Path, data: TextData, fine_tune_on) -> list[Stage]:
    """The stages of a text build; the classifier stage only where the teacher has no classification head."""
    stages = [TextTeacher, TextTeacherExport, TextStudent, TextQuantize, TextBenchmark, TextPackage]
    if fine_tune_on is not None:
        stages.insert(0, TextClassifier)
    return [stage(settings, folder, data, fine_tune_on) for stage in stages]


def text_pipeline(settings: TextBuildSettings, progress: Callable[[str], None] = lambda _: None) -> list[Stage]:
    """The text stages of one build, after their prelude: the teacher folder found and checked (every
    file it reads, code refused) and the text read and split, before any work."""
    from edge_distill.text.build import text_data
    from edge_distill.text.teacher import check_teacher_folder

    folder = settings.teacher_folder or default_teacher_folder()
    if not folder.is_dir():
        raise ConfigError(f"--teacher-folder {folder}: not found, or not a folder",
                          "give a local model folder with config.json, the weights and tokenizer.json")
    check_teacher_folder(folder)
    data, fine_tune_on = text_data(settings, folder)
    progress(f"text: {data.source}: {len(data.texts)} training texts, {len(data.held_out)} held-out texts")
    return text_stages(settings, folder, data, fine_tune_on)


def text_row(manifest: dict[str, Any]) -> dict[str, Any]:
    """A text student's sweep row: its shipped model's size and p50 at the longest length timed."""
    shipped = manifest["model"]["variant"]
    length = list(manifest["metrics"]["p50_ms"])[-1]
    p50 = manifest["metrics"]["p50_ms"][length][shipped]
    return {"params": manifest["model"]["parameters"], "size_bytes": manifest["metrics"]["size_bytes"][shipped],
            "length": int(length),
            **({"status": "measured", "p50_ms": p50} if isinstance(p50, float) else {"status": f"not timed: {p50}"})}
