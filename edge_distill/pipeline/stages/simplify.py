"""The simplify stage: onnxsim on the exported student, checked on real samples (or an explicit,
recorded opt-out)."""

from __future__ import annotations

import dataclasses
import shutil

from edge_distill.pipeline.stages.base import ConfiguredStage, write_json


class SimplifyStage(ConfiguredStage):
    name = "simplify"
    description = "Simplify the student with onnxsim, checked on real samples."
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
        export = self.config.export
        samples = Dataset.load(inputs["dataset.npz"]).x["val"][: export.parity_samples]
        report = simplify_onnx(inputs["student_exported.onnx"], out / "student_fp32.onnx", samples,
                               export.parity_atol, export.parity_rtol)
        write_json(out / "simplify.json", {"enabled": True, **report})
