"""The quantize stage: the int8 student and the model selected to ship (export/selection.py)."""

from __future__ import annotations

import dataclasses

from edge_distill.pipeline.stages.base import ConfiguredStage, write_json


class QuantizeStage(ConfiguredStage):
    """Writes the best int8 model (reported as student_int8) and the model selected to ship, which
    is the int8 one unless the search found fp32 (or fp16 on a GPU) faster within budget."""

    name = "quantize"
    description = ("Quantize the student to int8 (the profile's recipe, shipped if measured faster than fp32 "
                   "beyond noise on the device (--remote) or where this host has the device's architecture, with "
                   "the fastest thread count; or the fastest within budget with --search-quantization).")
    version = 5  # 5: the measured choice by optimize's rule (export/selection.choose), candidates fp32 and int8
    inputs = ("dataset.npz", "student_fp32.onnx")
    outputs = ("student_int8.onnx", "selected.onnx", "quantize.json")

    def params(self):
        params = {"quantize": dataclasses.asdict(self.config.quantize), "seed": self.config.seed}
        device = self.config.device
        if self.config.quantize.search or device.is_host_arch or device.host:
            # What ships was measured: it depends on where it ran.
            from edge_distill.device.runner import describe_host

            params |= {"device": dataclasses.asdict(self.config.device), "host": describe_host(),
                       "benchmark": dataclasses.asdict(self.config.benchmark)}
        return params

    def run(self, inputs, out, progress):
        import onnx

        from edge_distill.data.dataset import Dataset
        from edge_distill.errors import QuantizeError
        from edge_distill.export.quantize import count_ops, quantized_node_count
        from edge_distill.export.selection import quantize_and_select

        cfg = self.config.quantize
        dataset = Dataset.load(inputs["dataset.npz"])
        calibration = dataset.calibration_sample(cfg.calibration_samples, self.config.seed)
        selection = quantize_and_select(inputs["student_fp32.onnx"], calibration, dataset.x["val"], dataset.y["val"],
                                        cfg, self.config.device, self.config.benchmark, out / "student_int8.onnx",
                                        out / "selected.onnx", progress)
        op_counts = count_ops(onnx.load(str(out / "student_int8.onnx")))
        if quantized_node_count(op_counts) == 0:
            raise QuantizeError("quantization left the model without any int8 node",
                                "check that the model has Conv/Gemm/MatMul layers")
        write_json(out / "quantize.json", {**dataclasses.asdict(cfg), "int8_recipe": selection.int8_recipe,
                                           "op_counts": op_counts, "quantized_nodes": quantized_node_count(op_counts),
                                           "calibration_samples": len(calibration), "selected": selection.as_report()})
