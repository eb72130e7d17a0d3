"""Quantization recipes, streamed calibration, per-node fallback and measured selection."""

import json

import numpy as np
import onnx
import pytest
import torch

from edge_distill.config import BenchmarkConfig, DeviceConfig, QuantizeConfig
from edge_distill.errors import ConfigError, QuantizeError
from edge_distill.export.onnx_export import export_onnx
from edge_distill.export.onnx_io import run_onnx
from edge_distill.export.quantize import (
    QuantRecipe,
    StreamedCalibration,
    apply_recipe,
    count_ops,
    prepare,
    quantize_model,
    quantized_node_count,
)
from edge_distill.export.search import candidate_recipes, search_quantization, select_recipe
from edge_distill.export.sensitivity import layer_sensitivity, sensitivity_table
from edge_distill.models.families import ConvNet


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    torch.manual_seed(0)
    model = ConvNet((1, 8, 8), 10, 8, 2).eval()
    work = tmp_path_factory.mktemp("quant")
    x = np.random.default_rng(0).standard_normal((48, 1, 8, 8)).astype(np.float32)
    export_onnx(model, x, work / "fp32.onnx", opset=18)
    prepare(work / "fp32.onnx", work / "prepared.onnx")
    return work, x


EXPECTED_OPS = {
    QuantRecipe("static", "QDQ"): "QuantizeLinear",
    QuantRecipe("static", "QOperator"): "QLinearConv",
    QuantRecipe("static", "QDQ", activation_type="QInt8", calibrate_method="Entropy"): "QuantizeLinear",
    QuantRecipe("static", "QDQ", per_channel=False, calibrate_method="Percentile", reduce_range=True): "QuantizeLinear",
    QuantRecipe("dynamic", weight_type="QUInt8", per_channel=False): "ConvInteger",
    QuantRecipe("fp16"): "Cast",
}


@pytest.mark.parametrize("recipe", list(EXPECTED_OPS), ids=lambda r: r.name)
def test_every_recipe_kind_gives_a_valid_model_with_the_expected_ops(fp32, recipe, tmp_path):
    work, x = fp32
    out = tmp_path / "q.onnx"
    report = apply_recipe(recipe, work / "prepared.onnx", out, StreamedCalibration(work / "prepared.onnx", x, tmp_path))
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert report["op_counts"] == count_ops(model) and report["op_counts"].get(EXPECTED_OPS[recipe], 0) > 0
    if recipe.kind == "fp16":
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        return  # fp16 kernels are a GPU matter; the CPU provider need not run it
    assert quantized_node_count(report["op_counts"]) > 0
    assert out.stat().st_size < (work / "prepared.onnx").stat().st_size
    agreement = (run_onnx(out, x)["logits"].argmax(1) == run_onnx(work / "prepared.onnx", x)["logits"].argmax(1)).mean()
    assert agreement >= 0.8  # int8 keeps the float model's decisions


def test_per_channel_setting_reaches_the_quantizer(fp32, tmp_path):
    work, x = fp32
    scales = {}
    for per_channel in (True, False):
        out = tmp_path / f"pc{per_channel}.onnx"
        quantize_model(work / "fp32.onnx", out, x, QuantRecipe("static", per_channel=per_channel), tmp_path)
        model = onnx.load(str(out))
        scales[per_channel] = sum(1 for i in model.graph.initializer if "scale" in i.name and len(i.dims) == 1)
    assert scales[True] > scales[False]  # per-channel weights carry one scale per output channel


def test_streamed_calibration_matches_one_pass_minmax(fp32, tmp_path):
    work, x = fp32
    streamed = StreamedCalibration(work / "prepared.onnx", x, tmp_path / "a", chunk=8)
    whole = StreamedCalibration(work / "prepared.onnx", x, tmp_path / "b", chunk=len(x))
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = json.loads(streamed.ranges_file("MinMax").read_text())
    b = json.loads(whole.ranges_file("MinMax").read_text())
    assert a == b  # min/max over chunks is the min/max over the set


def test_fallback_keeps_named_nodes_in_float(fp32, tmp_path):
    work, x = fp32
    conv = next(n.name for n in onnx.load(str(work / "prepared.onnx")).graph.node if n.op_type == "Conv")
    out = tmp_path / "q.onnx"
    apply_recipe(QuantRecipe("static", "QOperator", exclude_nodes=(conv,)), work / "prepared.onnx", out,
                 StreamedCalibration(work / "prepared.onnx", x, tmp_path))
    nodes = {n.name: n.op_type for n in onnx.load(str(out)).graph.node}
    assert nodes[conv] == "Conv"  # still the float op
    assert "QLinearConv" in nodes.values()  # the others are quantized


def test_unknown_node_to_exclude_is_a_config_error(fp32, tmp_path):
    work, x = fp32
    with pytest.raises(ConfigError, match="quantize.exclude_nodes: conv_99 not in the graph") as e:
        apply_recipe(QuantRecipe("static", exclude_nodes=("conv_99",)), work / "prepared.onnx", tmp_path / "q.onnx",
                     StreamedCalibration(work / "prepared.onnx", x, tmp_path))
    convs = [n.name for n in onnx.load(str(work / "prepared.onnx")).graph.node if n.op_type == "Conv"]
    assert convs and all(name in e.value.hint for name in convs)  # the names the user can choose from


def test_sensitivity_ranks_quantized_nodes(fp32, tmp_path):
    work, x = fp32
    qdq = tmp_path / "qdq.onnx"
    apply_recipe(QuantRecipe("static"), work / "prepared.onnx", qdq, StreamedCalibration(work / "prepared.onnx", x, tmp_path))
    rows = layer_sensitivity(work / "prepared.onnx", qdq, x[:16], tmp_path)
    ops = {r["op_type"] for r in rows}
    assert "Conv" in ops and "Gemm" in ops
    scores = [r["score_db"] for r in rows if r["score_db"] is not None]
    assert scores == sorted(scores) and all(s > 0 for s in scores)  # int8 keeps signal above noise
    assert rows[0]["node"] in sensitivity_table(rows)


def row(name, kind, drop, p50, accuracy=None):
    return {"name": name, "kind": kind, "accuracy_drop": drop, "p50_ms": p50, "error": None,
            "accuracy": accuracy if accuracy is not None else 0.99 - drop / 100}


SYNTHETIC = [
    row("fp32", "fp32", 0.0, 1.00),
    row("QDQ-fast-but-lossy", "static", 3.0, 0.20),
    row("QDQ-ok", "static", 0.4, 0.45),
    row("QOperator-ok-slower", "static", 0.1, 0.60),
    {"name": "broken", "kind": "static", "error": "no kernel"},
]


def test_selection_picks_the_fastest_within_budget():
    winner, best_int8, why = select_recipe(SYNTHETIC, max_drop=0.5, require_int8=False)
    assert winner["name"] == "QDQ-ok" and best_int8["name"] == "QDQ-ok"
    assert "fastest within the 0.5-point budget" in why
    assert select_recipe(SYNTHETIC, max_drop=5.0, require_int8=False)[0]["name"] == "QDQ-fast-but-lossy"


def test_selection_ships_fp32_when_nothing_beats_it():
    rows = [row("fp32", "fp32", 0.0, 0.10), row("QDQ", "static", 0.0, 0.12)]
    winner, best_int8, why = select_recipe(rows, max_drop=1.0, require_int8=False)
    assert winner["name"] == "fp32" and best_int8["name"] == "QDQ" and why.startswith("fp32 ships")


def test_a_recipe_quicker_by_its_median_but_not_in_every_round_ties_with_fp32_and_fp32_ships():
    fp32 = row("fp32", "fp32", 0.0, 0.50) | {"round_p50s": [0.50, 0.49, 0.51, 0.50, 0.50]}
    noisy = row("QDQ", "static", 0.1, 0.48) | {"round_p50s": [0.47, 0.52, 0.48, 0.48, 0.47]}
    winner, _, why = select_recipe([fp32, noisy], max_drop=1.0, require_int8=False)
    assert winner["name"] == "fp32" and "tied with QDQ" in why
    steady = noisy | {"round_p50s": [0.47, 0.48, 0.48, 0.48, 0.47]}
    assert select_recipe([fp32, steady], max_drop=1.0, require_int8=False)[0]["name"] == "QDQ"


def test_budget_nothing_meets_errors_or_ships_fp32_as_configured():
    rows = [row("fp32", "fp32", 0.0, 1.0), row("QDQ", "static", 2.0, 0.2), row("QOp", "static", 1.5, 0.3)]
    with pytest.raises(QuantizeError, match=r"no int8 recipe stays within .* 0.5 points; the closest, QOp, drops 1.50"):
        select_recipe(rows, max_drop=0.5, require_int8=True)
    winner, best_int8, _ = select_recipe(rows, max_drop=0.5, require_int8=False)
    assert winner["name"] == "fp32" and best_int8["name"] == "QOp"  # the most accurate int8 is still reported


def test_candidates_follow_the_device():
    vnni = candidate_recipes(QuantizeConfig(), DeviceConfig(arch="x86_64", isa=["avx512_vnni"]), ["CPUExecutionProvider"])
    old_x86 = candidate_recipes(QuantizeConfig(), DeviceConfig(arch="x86_64", isa=["avx2"]), ["CPUExecutionProvider"])
    gpu = candidate_recipes(QuantizeConfig(), DeviceConfig(), ["CUDAExecutionProvider"])
    assert not any(r.reduce_range for r in vnni) and any(r.reduce_range for r in old_x86)
    assert "fp16" in {r.kind for r in gpu} and "fp16" not in {r.kind for r in vnni}
    assert {r.kind for r in vnni} == {"fp32", "static", "dynamic"}
    assert {r.format for r in vnni if r.kind == "static"} == {"QDQ", "QOperator"}
    assert {r.calibrate_method for r in vnni} == {"MinMax", "Entropy", "Percentile"}


@pytest.mark.slow
def test_search_repairs_an_over_budget_recipe_and_records_every_candidate(tiny_artifacts, tmp_path):
    from edge_distill.data.dataset import Dataset

    model = tiny_artifacts["student_fp32.onnx"]  # a trained tiny student: its decisions vary
    pool = np.concatenate(list(Dataset.load(tiny_artifacts["dataset.npz"]).x.values()))
    # Samples on the fp32 model's decision boundaries: int8 rounding flips some of them.
    logits = run_onnx(model, pool)["logits"]
    top2 = np.sort(logits, axis=1)[:, -2:]
    x = pool[np.argsort(top2[:, 1] - top2[:, 0])[:64]]
    y = run_onnx(model, x)["logits"].argmax(1)  # fp32 is exactly right on these labels
    cfg = QuantizeConfig(search=True, max_accuracy_drop=0.0, fallback_max_nodes=2, search_min_seconds=0.0)
    bench = BenchmarkConfig(threads=1, timed_runs=5, warmup_runs=0)
    report = search_quantization(model, pool[:128], x, y, cfg, DeviceConfig(), bench, tmp_path)
    names = [r["name"] for r in report["rows"]]
    assert len(names) == len(set(names)) and names[0] == "fp32"
    assert report["reference_accuracy"] == 1.0
    over = [r for r in report["rows"] if r["kind"] == "static" and r["error"] is None and r["accuracy_drop"] > 0]
    assert over  # the boundary samples put int8 recipes over the zero budget
    repaired = [r for r in report["rows"] if "repaired_from" in r]
    assert repaired and set(report["sensitivity"]) == {r["repaired_from"] for r in repaired}
    for row in repaired:
        first_nodes = [s["node"] for s in report["sensitivity"][row["repaired_from"]]]
        kept = row["recipe"]["exclude_nodes"]
        assert list(kept) == first_nodes[: len(kept)]  # the most sensitive nodes, in rank order
    assert report["winner"]["accuracy_drop"] <= 0.0


def test_the_builds_recipe_quantizes_past_onnx_runtimes_int32_bias_failure(tmp_path):
    """The build's static recipe goes through the same retry as optimize: a (1, N) Gemm bias
    (magika's layout) breaks ONNX Runtime's weight-scale adjustment, and the model is quantized
    without it, saying so."""
    from tests import handmade

    model = handmade.gemm_2d_bias_model(tmp_path / "gemm.onnx")
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)  # the model's batch is 1
    report = quantize_model(model, tmp_path / "int8.onnx", x, QuantRecipe("static", per_channel=True), tmp_path)
    assert report["extra_options"] == {"QDQDisableWeightAdjustForInt32Bias": True}
    assert quantized_node_count(report["op_counts"]) > 0
