"""The stages of `edge-distill llm` (lm/build.py): thin, each settings -> library call -> files.
The text is keyed without reading it (lm/build.LMData.key, and --text hashed as an external file),
so a no-op rebuild reads neither the text nor the teacher."""

from __future__ import annotations


from typing import Any

from edge_distill.errors import ConfigError
from edge_distill.lm.settings import (CONTINUATION_FILES, GENAI_CONFIG, GENAI_TOKENIZER_CONFIG, LMBuildSettings,
                                      LMData)
from edge_distill.lm.quantize import TEACHER_VARIANTS, VARIANTS
from edge_distill.lm.student import CONTINUING
from edge_distill.lm.teacher import FOLDER_HINT, TeacherSource, default_teacher
from edge_distill.pipeline.stage import Stage

TEACHER_FILES = ("train.npy", "held_out.npy", "teacher_topk_ids.npy", "teacher_topk_logprobs.npy",
                 "teacher_top1.npy", "tokenizer.json", "teacher.json")
STUDENT_FILES = ("student/config.json", "student/model.safetensors", "student/vocab.npy", "student.json")
DECODERS = tuple(f"decoder_{name}.onnx" for name in VARIANTS)
TEACHER_DECODERS = tuple(f"decoder_{name}.onnx" for name in TEACHER_VARIANTS)


class _LMStage(Stage):
    reads_teacher = False  # the teacher's weights are part of its key

    def __init__(self, settings: LMBuildSettings, source: TeacherSource, data: LMData):
        self.settings, self.source, self.data = settings, source, data

    def external_files(self):
        return {"--teacher": self.source.path} if self.reads_teacher else {}

    def text_files(self):
        return {"--text": self.data.text} if self.data.text is not None else {}


class LMTeacher(_LMStage):
    name = "llm-teacher"
    description = "Tokenize the text into windows; the teacher's top-k next-token targets and held-out figures."
    version = 1
    outputs = TEACHER_FILES
    reads_teacher = True

    def external_files(self):
        return {**super().external_files(), **self.text_files()}

    def params(self):
        s = self.settings
        return {**self.data.key, "context": s.context,
                "train_windows": s.train_windows, "held_out_windows": s.held_out_windows, "top_k": s.top_k,
                "threads": s.threads}

    def check_inputs(self):
        from edge_distill.lm.build import check_teacher_and_text

        check_teacher_and_text(self.source, self.settings, self.data)

    def run(self, inputs, out, progress):
        from edge_distill.lm.build import score_with_teacher

        score_with_teacher(self.source, self.settings, self.data, out, progress)


class LMTeacherText(_LMStage):
    name = "llm-teacher-text"
    description = "Sequence-level KD's text: the teacher's own continuations of the training windows' openings."
    version = 1
    inputs = ("train.npy",)
    outputs = CONTINUATION_FILES
    reads_teacher = True

    def params(self):
        s = self.settings
        return {"prompt_tokens": s.training.prompt_tokens, "top_k": s.top_k, "seed": s.training.seed,
                "threads": s.threads}

    def run(self, inputs, out, progress):
        from edge_distill.lm.build import write_continuations

        write_continuations(self.source, self.settings, inputs, out, progress)


class LMTeacherExport(_LMStage):
    name = "llm-teacher-export"
    description = "The teacher itself at 8 and 4 bits (onnxruntime-genai's builder): the candidates a student must beat."
    version = 1
    inputs = ("tokenizer.json",)
    outputs = (*TEACHER_DECODERS, f"teacher_{GENAI_CONFIG}", "teacher_export.json")
    reads_teacher = True

    def params(self):
        return {}

    def run(self, inputs, out, progress):
        from edge_distill.lm.build import export_teacher

        export_teacher(self.source, inputs, out, progress)


class LMStudent(_LMStage):
    name = "llm-student"
    description = "Make the student from the teacher's layers and the text's tokens, and distil it."
    version = 2
    inputs = ("train.npy", "teacher_topk_ids.npy", "teacher_topk_logprobs.npy", "teacher.json")
    outputs = STUDENT_FILES
    trains = True
    reads_teacher = True

    def __init__(self, settings: LMBuildSettings, source: TeacherSource, data: LMData):
        super().__init__(settings, source, data)
        if settings.training.kd in CONTINUING:
            self.inputs = (*type(self).inputs, *CONTINUATION_FILES)

    def params(self):
        # Several processes train the same steps on shares of each batch: close to one process's
        # student, not the same bits. Where they run (node rank, rendezvous) changes nothing.
        processes = self.settings.launch.processes
        return {"training": self.settings.training.key(), **({"processes": processes} if processes > 1 else {})}

    def check_inputs(self):
        from edge_distill.distill.distributed import check_gpus

        check_gpus(self.settings.launch)

    def run(self, inputs, out, progress):
        if self.settings.launch.processes > 1:
            import dataclasses

            from edge_distill.distill.distributed import run_distributed

            run_distributed("llm-student", {"teacher": str(self.source.path), "out": str(out),
                                            "training": dataclasses.asdict(self.settings.training),
                                            "inputs": {k: str(v) for k, v in inputs.items()}},
                            self.settings.launch, progress)
            return
        from edge_distill.lm.build import distil_student

        distil_student(self.source, self.settings.training, inputs, out, progress)


class LMExport(_LMStage):
    name = "llm-export"
    description = ("Export the student as a KV-cache ONNX decoder with onnxruntime-genai's builder; check a prefill "
                   "and 32 decode steps against PyTorch.")
    version = 3  # 2: onnxruntime-genai's model builder, not a traced forward; 3: one int32 vocabulary table
    inputs = (*STUDENT_FILES, "teacher.json", "held_out.npy", "tokenizer.json")
    outputs = ("decoder_fp32.onnx", GENAI_CONFIG, "export.json")

    def params(self):
        return {}

    def run(self, inputs, out, progress):
        from edge_distill.lm.build import export_student

        export_student(inputs, out, progress)


class LMQuantize(_LMStage):
    name = "llm-quantize"
    description = ("Make the student's weight-only int8/int4 variants with the same builder; judge and time them and "
                   "the teacher's; choose one.")
    # 2: each variant's quantized nodes counted (export/quantize.apply_recipe)
    # 3: timed side by side in interleaved rounds, chosen by quickest_beyond_noise
    # 4: the variants by onnxruntime-genai's builder from the student's folder, the teacher's beside them
    version = 5  # 5: one int32 vocabulary table
    inputs = (*STUDENT_FILES, "decoder_fp32.onnx", *TEACHER_DECODERS, "teacher_export.json", "held_out.npy",
              "teacher_top1.npy", "teacher.json", "tokenizer.json")
    outputs = (*DECODERS[1:], "variants.json")

    def params(self):
        rounds = self.settings.timing_rounds
        return {"max_perplexity_ratio": self.settings.max_perplexity_ratio, "threads": self.settings.threads,
                **({"timing_rounds": rounds} if rounds != 5 else {})}  # 5: as before the setting existed

    def run(self, inputs, out, progress):
        from edge_distill.lm.build import quantize_and_judge

        quantize_and_judge(inputs, self.settings, out, progress)


class LMPackage(_LMStage):
    name = "llm-package"
    description = ("Write the bundle: the chosen decoder, tokenizer.json, generation settings, genai_config.json, "
                   "golden generations, manifest.")
    version = 3  # 2: genai_config.json; 3: frontier.svg with tick labels
    inputs = (*DECODERS, *TEACHER_DECODERS, "variants.json", "tokenizer.json", "teacher.json", "student.json",
              "export.json", GENAI_CONFIG, f"teacher_{GENAI_CONFIG}", "student/vocab.npy")
    outputs = ("model.onnx", "tokenizer.json", "generation.json", GENAI_CONFIG, GENAI_TOKENIZER_CONFIG, "golden.npz",
               "golden.json", "frontier.svg", "README.md", "manifest.json")

    def external_files(self):
        return self.text_files()  # the golden prompts are held-out passages
    def params(self):
        s = self.settings
        return {**self.data.key, "new_tokens": s.new_tokens,
                "profile": s.profile.to_dict() if s.profile else None, "threads": s.threads,
                "context": s.context}

    def run(self, inputs, out, progress):
        from edge_distill.lm.bundle import write_generator_bundle

        write_generator_bundle(inputs, self.settings, self.data, out)


def llm_stages(settings: LMBuildSettings, source: TeacherSource, data: LMData) -> list[Stage]:
    """The stages in order; the teacher's continuations only for sequence-level KD."""
    sequence = (LMTeacherText,) if settings.training.kd in CONTINUING else ()
    return [stage(settings, source, data) for stage in (LMTeacher, *sequence, LMTeacherExport, LMStudent, LMExport,
                                                        LMQuantize, LMPackage)]


def llm_pipeline(settings: LMBuildSettings) -> list[Stage]:
    """The llm stages of one build, for its teacher (the default where none is given)."""
    source = TeacherSource(settings.teacher) if settings.teacher else default_teacher()
    if not source.path.exists():
        raise ConfigError(f"--teacher {source.path}: not found", FOLDER_HINT)
    return llm_stages(settings, source, LMData(settings.text))


def generator_row(manifest: dict[str, Any]) -> dict[str, Any]:
    """A generator's sweep row: its shipped variant's file and time per decoded token."""
    shipped = manifest["metrics"]["variants"][manifest["model"]["precision"]]
    return {"params": manifest["model"]["parameters"], "size_bytes": manifest["model"]["size_bytes"],
            "status": "measured", "p50_ms": 1e3 / shipped["decode_tokens_per_s"]}


def generator_quality(manifest: dict[str, Any]) -> tuple[str, float]:
    return "agreement with the teacher", manifest["metrics"]["variants"][manifest["model"]["precision"]][
        "agreement_with_teacher"]
