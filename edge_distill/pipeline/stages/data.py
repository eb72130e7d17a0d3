"""The data stage: the configured source read, checked, split and normalized (data.dataset)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge_distill.pipeline.stages.base import ConfiguredStage, write_json


class DataStage(ConfiguredStage):
    name = "data"
    description = "Load, check and split the dataset."
    version = 3
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
        from edge_distill.data.loader import set_loader_workers

        set_loader_workers(self.config.distill.loader_workers)
        progress(f"loading {self.config.data.source}")
        dataset = load_dataset(self.config.data, self.config.seed, progress)
        dataset.save(out / "dataset.npz")
        write_json(out / "dataset.json", {
            "source": dataset.source,
            "labels": dataset.labels,
            "input_shape": list(dataset.input_shape),
            "preprocessing": dataset.preprocessing,
            "split_sizes": {split: len(x) for split, x in dataset.x.items()},
            "split": dataset.split,
            "raw_input": dataset.raw_input,
        })
