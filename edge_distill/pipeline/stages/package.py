"""The package stage: the bundle's files, in the cache (`build` publishes them)."""

from __future__ import annotations

from edge_distill.pipeline.stages.base import ConfiguredStage


class PackageStage(ConfiguredStage):
    name = "package"
    description = "Assemble model.onnx, manifest.json and README.md (in the cache; `build` publishes them)."
    version = 3  # 3: the manifest names its command (build)
    inputs = ("shipped_model.onnx", "dataset.npz", "dataset.json", "teacher.json", "distill.json", "export.json",
              "simplify.json", "quantize.json", "benchmark.json")
    outputs = ("model.onnx", "manifest.json", "README.md", "golden.npz", "golden.json",
               "report.json", "report.csv", "report.md", "report.html")

    def params(self):
        return {"config": self.config.to_dict()}

    def run(self, inputs, out, progress):
        from edge_distill.bundle.kinds.classifier import write_bundle

        write_bundle(self.config, inputs, out)
