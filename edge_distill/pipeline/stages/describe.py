"""The describe stage: the shipped model with labels, preprocessing and build id inside, so that the
benchmark measures the exact bytes that ship."""

from __future__ import annotations

import dataclasses

from edge_distill.pipeline.stages.base import ConfiguredStage, read_json


class DescribeStage(ConfiguredStage):
    name = "describe"
    description = "Embed labels, preprocessing and a build id in the int8 model's metadata."
    version = 2
    inputs = ("selected.onnx", "dataset.json", "quantize.json")
    outputs = ("shipped_model.onnx",)

    def params(self):
        return {"profile": self.config.profile, "device": dataclasses.asdict(self.config.device)}

    def run(self, inputs, out, progress):
        from edge_distill.bundle.writer import embed_metadata

        progress("embedding labels, preprocessing and build id in the model")
        variant = read_json(inputs["quantize.json"])["selected"]["variant"]
        embed_metadata(inputs["selected.onnx"], out / "shipped_model.onnx", self.config,
                       read_json(inputs["dataset.json"]), variant)
