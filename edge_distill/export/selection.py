"""The int8 model and the model to ship: the profile's recipe as it is, or (quantize.search) the
fastest candidate within the accuracy budget, which may be fp32 (or fp16 on a GPU)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.config import BenchmarkConfig, DeviceConfig, QuantizeConfig
from edge_distill.errors import QuantizeError

VARIANT_OF_KIND = {"fp32": "student_fp32", "fp16": "student_fp16"}  # every other kind is an int8 recipe


@dataclass
class Selection:
    int8_recipe: str  # the recipe of the int8 model written
    variant: str  # what ships: "student_int8", "student_fp32" or "student_fp16"
    recipe: str  # the shipped candidate's recipe name
    why: str
    search: dict[str, Any] = field(default_factory=dict)  # candidates, sensitivity, ... when searched

    def as_report(self) -> dict[str, Any]:
        return {"variant": self.variant, "recipe": self.recipe, "why": self.why, **self.search}


def quantize_and_select(fp32_model: Path, calibration: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                        cfg: QuantizeConfig, device: DeviceConfig, bench: BenchmarkConfig, int8_out: Path,
                        selected_out: Path, progress: Callable[[str], None]) -> Selection:
    """Write the int8 model to `int8_out` and the model to ship to `selected_out`."""
    from edge_distill.export.quantize import QuantRecipe, quantize_model
    from edge_distill.export.search import search_quantization

    with tempfile.TemporaryDirectory() as tmp:
        if not cfg.search:
            recipe = QuantRecipe.from_config(cfg)
            progress(f"calibrating on {len(calibration)} training samples ({cfg.calibrate_method}), "
                     f"quantizing to int8 {recipe.name}")
            quantize_model(fp32_model, int8_out, calibration, recipe, Path(tmp), progress)
            shutil.copyfile(int8_out, selected_out)
            return Selection(recipe.name, "student_int8", recipe.name, "the profile's recipe (quantize.search = false)")
        found = search_quantization(fp32_model, calibration, x_val, y_val, cfg, device, bench, Path(tmp), progress)
        if found["best_int8"] is None:
            raise QuantizeError("no int8 recipe could be built for this model", "see quantize.json candidates")
        winner = found["winner"]
        shutil.copyfile(found["best_int8"]["file"], int8_out)
        shutil.copyfile(winner["file"], selected_out)
        return Selection(found["best_int8"]["name"], VARIANT_OF_KIND.get(winner["kind"], "student_int8"),
                         winner["name"], found["why"], {
                             "candidates": [{k: v for k, v in row.items() if k != "file"} for row in found["rows"]],
                             "sensitivity": found["sensitivity"],
                             "reference_val_accuracy": found["reference_accuracy"],
                             "latency_measured_on": found["measured_on"],
                             "threads": found["threads"],
                         })
