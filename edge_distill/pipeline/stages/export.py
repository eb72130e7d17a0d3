"""The export stage: teacher and student to ONNX, each checked against PyTorch on real samples."""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

from edge_distill.pipeline.stages.base import ConfiguredStage, architecture, factory_files, write_json


class ExportStage(ConfiguredStage):
    name = "export"
    description = "Export teacher and student to ONNX and check parity with PyTorch."
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
        return factory_files(("teacher", self.config.teacher.factory), ("student", self.config.student.factory))

    def run(self, inputs, out, progress):
        import numpy as np
        import torch

        from edge_distill.data.dataset import Dataset
        from edge_distill.distill.teachers import WithInput, load_main_teacher, teacher_input
        from edge_distill.export.onnx_export import check_export_parity, export_onnx, prepend_onnx
        from edge_distill.onnx_model import load_onnx
        from edge_distill.models.loading import build_from_config, count_params

        cfg, seed = self.config.export, self.config.seed
        dataset = Dataset.load(inputs["dataset.npz"])
        shape, classes = dataset.input_shape, dataset.num_classes
        samples = dataset.x["val"][: cfg.parity_samples]
        report: dict[str, Any] = {"exporter": "torch.onnx.export(dynamo=True)", "opset": cfg.opset}
        prepare = teacher_input(self.config.teacher, dataset.preprocessing, shape)
        teacher = load_main_teacher(self.config.teacher, seed, shape, classes, inputs["teacher.model"], prepare=prepare)
        if teacher.format == "onnx":  # a black-box teacher is measured as the user gave it
            if prepare is None:
                shutil.copyfile(inputs["teacher.model"], out / "teacher_fp32.onnx")
            else:  # ... behind its own input conversion, so that it takes the build's inputs like the students
                progress("putting teacher.input's conversion in front of the ONNX teacher")
                prepend_onnx(prepare, samples, inputs["teacher.model"], out / "teacher_fp32.onnx", cfg.opset)
            params = sum(int(np.prod(t.dims)) for t in load_onnx(out / "teacher_fp32.onnx").graph.initializer
                         if not t.name.startswith("prepare/"))
            report["teacher"] = {"params": params, "format": "onnx", "exported": False}
        else:
            progress(f"exporting the teacher to ONNX (opset {cfg.opset})")
            module = teacher.module if prepare is None else WithInput(prepare, teacher.module)
            if prepare is not None and teacher.format == "torchscript":  # the TorchScript exporter takes it traced
                module = torch.jit.trace(module, torch.from_numpy(samples[:2]))
            export_onnx(module, samples, out / "teacher_fp32.onnx", cfg.opset)
            diffs = check_export_parity(module, out / "teacher_fp32.onnx", samples, cfg.parity_atol, cfg.parity_rtol)
            report["teacher"] = {"params": count_params(teacher.module), "format": teacher.format,
                                 "parity_max_abs_diff": diffs, "parity_samples": len(samples)}
        progress(f"exporting the student to ONNX (opset {cfg.opset})")
        student = build_from_config(self.config.student, "student", seed, shape, classes)
        student.load_state_dict(torch.load(inputs["student.pt"], map_location="cpu", weights_only=True))
        student.eval()
        export_onnx(student, samples, out / "student_exported.onnx", cfg.opset)
        diffs = check_export_parity(student, out / "student_exported.onnx", samples, cfg.parity_atol, cfg.parity_rtol)
        report["student"] = {"params": count_params(student), "parity_max_abs_diff": diffs, "parity_samples": len(samples)}
        write_json(out / "export.json", report)
