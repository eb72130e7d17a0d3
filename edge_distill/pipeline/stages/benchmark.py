"""The benchmark stage: accuracy and latency of teacher, fp32 student and int8 student (the shipped
variant from its exact bytes), with the roofline estimate beside each."""

from __future__ import annotations

import dataclasses

from edge_distill.pipeline.stages.base import ConfiguredStage, read_json, write_json


class BenchmarkStage(ConfiguredStage):
    name = "benchmark"
    description = "Measure accuracy and latency of teacher, fp32 student and int8 student."
    version = 4
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
        from edge_distill.data.dataset import Dataset
        from edge_distill.measure.harness import add_estimates, benchmark_variants
        from edge_distill.measure.warnings import measurement_warnings

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
        report["warnings"] = measurement_warnings(report, self.config.device)
        add_estimates(report, {name: model for name, (model, _) in variants.items()}, self.config.device,
                      self.config.benchmark.batch_size)
        write_json(out / "benchmark.json", report)
