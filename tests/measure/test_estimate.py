"""The MAC/FLOP counter on small graphs with hand-computed counts, and the roofline."""

import json

import numpy as np
import pytest

from tests import handmade
from onnx import TensorProto, helper, numpy_helper, save

from edge_distill.measure.estimate import count_costs, estimate_latency, estimate_table
from edge_distill.config import DeviceConfig


def save_graph(tmp_path, nodes, inputs, output, initializers):
    """inputs: (name, shape) float, or (name, shape, TensorProto type); float weights as float32."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(name, kind[0] if kind else TensorProto.FLOAT, shape)
         for name, shape, *kind in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(array.astype(np.float32) if array.dtype.kind == "f" else array, name)
         for name, array in initializers.items()],
    )
    path = tmp_path / "g.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def by_op(costs):
    return {c.op_type: c for c in costs}


def test_conv_depthwise_conv_and_pooling(tmp_path):
    path = save_graph(tmp_path, [
        helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),                    # (1,4,8,8)
        helper.make_node("Conv", ["a", "dw"], ["b"], pads=[1, 1, 1, 1], group=4),          # depthwise
        helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),    # (1,4,4,4)
    ], [("x", ["batch", 3, 8, 8])], "c", {"w": np.zeros((4, 3, 3, 3)), "dw": np.zeros((4, 1, 3, 3))})
    costs, int8, shape = count_costs(path)
    assert shape == [1, 3, 8, 8]
    assert not int8
    conv, depthwise = costs[0], costs[1]
    assert conv.macs == 4 * 8 * 8 * (3 * 3 * 3)          # C_out x H x W x (C_in x kH x kW) = 6912
    assert depthwise.macs == 4 * 8 * 8 * (1 * 3 * 3)     # one input channel per group = 2304
    assert conv.flops == 2 * 6912
    assert costs[2].macs == 0 and costs[2].flops == 4 * 4 * 4 * 4  # 64 outputs x 2x2 window
    # bytes: weights + input + output, fp32
    assert conv.bytes_moved == 4 * 3 * 3 * 3 * 4 + (3 * 64 + 4 * 64) * 4
    # batch scales activations, not weights
    assert count_costs(path, batch=5)[0][0].macs == 5 * 6912


def test_gemm_and_batched_matmul(tmp_path):
    path = save_graph(tmp_path, [
        helper.make_node("MatMul", ["x", "w"], ["a"]),               # (2,5,16) @ (16,4) -> (2,5,4)
        helper.make_node("Reshape", ["a", "shape"], ["b"]),          # (10, 4)
        helper.make_node("Gemm", ["b", "g", "bias"], ["c"]),         # (10,4) @ (4,3) + bias
        helper.make_node("Relu", ["c"], ["d"]),
    ], [("x", [2, 5, 16])], "d", {"w": np.zeros((16, 4)), "g": np.zeros((4, 3)), "bias": np.zeros(3)} | {})
    # Reshape needs an int64 shape tensor
    import onnx

    model = onnx.load(str(path))
    model.graph.initializer.append(numpy_helper.from_array(np.array([10, 4], dtype=np.int64), "shape"))
    onnx.save(model, str(path))
    ops = by_op(count_costs(path)[0])
    assert ops["MatMul"].macs == 2 * 5 * 4 * 16
    assert ops["Gemm"].macs == 10 * 3 * 4 and ops["Gemm"].flops == 2 * 120 + 30  # + bias adds
    assert ops["Reshape"].flops == 0 and ops["Relu"].flops == 30


def test_roofline_takes_the_slower_of_compute_and_memory(tmp_path):
    path = save_graph(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"])], [("x", [1, 64, 32, 32])], "y",
                      {"w": np.zeros((64, 64, 3, 3))})
    slow_compute = DeviceConfig(name="d", cores=1, peak_fp32_gflops=1.0, memory_bandwidth_gbs=1000.0, dispatch_us_per_node=0, run_overhead_us=0)
    slow_memory = DeviceConfig(name="d", cores=1, peak_fp32_gflops=1e6, memory_bandwidth_gbs=0.001, dispatch_us_per_node=0, run_overhead_us=0)
    cost = count_costs(path)[0][0]
    compute = estimate_latency(path, slow_compute, threads=1)
    memory = estimate_latency(path, slow_memory, threads=1)
    assert compute["nodes"][0]["bound"] == "compute"
    assert compute["estimate_ms"] == pytest.approx(cost.flops / 1e9 * 1e3)
    assert memory["nodes"][0]["bound"] == "memory"
    assert memory["estimate_ms"] == pytest.approx(cost.bytes_moved / 1e6 * 1e3)
    # half the cores, half the compute peak
    two_cores = DeviceConfig(name="d", cores=2, peak_fp32_gflops=2.0, memory_bandwidth_gbs=1000.0, dispatch_us_per_node=0, run_overhead_us=0)
    assert estimate_latency(path, two_cores, threads=1)["estimate_ms"] == pytest.approx(compute["estimate_ms"])
    measured = {**compute, "measured_p50_ms": 2 * compute["estimate_ms"], "measured_over_estimate": 2.0}
    assert "measured / estimate = 2.00" in estimate_table(measured)
    assert "no ratio" in estimate_table({**measured, "measured_over_estimate": None})  # another architecture


def test_int8_models_count_the_float_ops_once(tiny_artifacts):
    fp32, fp32_int8 = count_costs(tiny_artifacts["student_fp32.onnx"]), count_costs(tiny_artifacts["student_int8.onnx"])
    assert fp32[1] is False and fp32_int8[1] is True
    assert sum(c.macs for c in fp32[0]) == sum(c.macs for c in fp32_int8[0]) > 0
    assert sum(c.bytes_moved for c in fp32_int8[0]) < sum(c.bytes_moved for c in fp32[0])


def test_weights_that_fit_in_cache_stream_from_it(tmp_path):
    path = save_graph(tmp_path, [helper.make_node("Gemm", ["x", "w"], ["y"])], [("x", [1, 256])], "y",
                      {"w": np.zeros((256, 256))})  # 256 KiB of fp32 weights, 128 MACs... memory bound
    dram = DeviceConfig(name="d", cores=1, peak_fp32_gflops=1e6, memory_bandwidth_gbs=1.0, dispatch_us_per_node=0, run_overhead_us=0)
    cached = DeviceConfig(name="d", cores=1, peak_fp32_gflops=1e6, memory_bandwidth_gbs=1.0, dispatch_us_per_node=0, run_overhead_us=0,
                          cache_bytes=1 << 20, cache_bandwidth_gbs=10.0)
    too_small = DeviceConfig(name="d", cores=1, peak_fp32_gflops=1e6, memory_bandwidth_gbs=1.0,
                             dispatch_us_per_node=0, run_overhead_us=0, cache_bytes=1 << 10, cache_bandwidth_gbs=10.0)
    assert estimate_latency(path, cached, 1)["estimate_ms"] == pytest.approx(
        estimate_latency(path, dram, 1)["estimate_ms"] / 10)
    assert estimate_latency(path, too_small, 1)["estimate_ms"] == pytest.approx(estimate_latency(path, dram, 1)["estimate_ms"])
    with_overhead = DeviceConfig(name="d", cores=1, peak_fp32_gflops=1e6, memory_bandwidth_gbs=1.0,
                                 dispatch_us_per_node=0, run_overhead_us=7.0)
    assert estimate_latency(path, with_overhead, 1)["estimate_ms"] == pytest.approx(
        estimate_latency(path, dram, 1)["estimate_ms"] + 0.007)


def test_minus_one_sizes_are_symbolic_as_paddle_writes_them(tmp_path):
    """Paddle's exporter writes -1 for "any": a batch of -1 takes --batch, other -1 sizes need --shape."""
    from edge_distill.errors import ModelError

    path = handmade.linear_classifier(tmp_path / "m.onnx", (-1, 1, 8, -1))
    with pytest.raises(ModelError, match=r"input 'x' has symbolic size\(s\) \? \(axis 3\): concrete shapes") as error:
        count_costs(path)
    assert "--shape x:1x1x8x1" in error.value.hint  # the batch became 1; the other -1 is asked for
    costs, _, shape = count_costs(path, batch=2, shapes={"x": [2, 1, 8, 8]})
    assert shape == [2, 1, 8, 8] and by_op(costs)["MatMul"].macs == 2 * 64 * 3


REAL_MODELS = ("ch_ppocr_mobile_v2.0_cls_infer", "x:1x3x48x192"), ("ch_PP-OCRv4_rec_infer", "x:1x3x48x320")


@pytest.mark.real
@pytest.mark.skipif(handmade.rapidocr_models() is None, reason="pip install --no-deps rapidocr-onnxruntime (.ci/run does)")
@pytest.mark.parametrize("name, shape", REAL_MODELS)
def test_estimates_of_real_pretrained_models_need_their_shapes_and_are_never_negative(name, shape):
    from tests.test_cli import assert_user_error, invoke

    model = handmade.rapidocr_models() / f"{name}.onnx"
    assert_user_error(invoke("estimate", str(model), "-p", "x86-avx512"), 4, "input 'x' has symbolic size(s)", "--shape x:")
    result = invoke("estimate", str(model), "-p", "x86-avx512", "--shape", shape, "--json")
    assert result.exit_code == 0, result.output
    estimate = __import__("json").loads(result.stdout)
    assert estimate["input_shape"] == [int(d) for d in shape.split(":")[1].split("x")]
    assert estimate["macs"] > 1e6 and estimate["flops"] > 2 * estimate["macs"] and estimate["estimate_ms"] > 0
    assert estimate["weight_bytes"] > 1e5  # its weights, held in Constant nodes, are counted
    assert all(n["macs"] >= 0 and n["flops"] >= 0 and n["bytes_moved"] >= 0 for n in estimate["nodes"])


def test_nodes_folded_at_load_cost_nothing_and_dispatch_counts_the_kernels_ort_runs(tmp_path):
    """A reshape target computed from the input's (fixed) shape is folded by ONNX Runtime at load,
    and Conv + Relu run as one fused kernel: the estimate charges the arithmetic of Conv, Relu and
    the Reshape's data, and dispatch for the kernels of ONNX Runtime's optimized graph."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["r"], ["shape"]),
        helper.make_node("Gather", ["shape", "index"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"),
         numpy_helper.from_array(np.array(0, np.int64), "index"),
         numpy_helper.from_array(np.array([0], np.int64), "zero"),
         numpy_helper.from_array(np.array([-1], np.int64), "minus_one")])
    path = tmp_path / "g.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    assert [c.op_type for c in count_costs(path)[0]] == ["Conv", "Relu", "Reshape"]  # the shape arithmetic folds
    device = DeviceConfig(name="d", arch="aarch64", cores=1, peak_fp32_gflops=1.0, memory_bandwidth_gbs=1.0,
                          dispatch_us_per_node=10.0, run_overhead_us=0)  # another architecture: portable optimizations
    estimate = estimate_latency(path, device, threads=1)
    assert estimate["dispatch"]["kernels"] == 2 and "optimized graph (extended" in estimate["dispatch"]["counted_in"]
    arithmetic = sum(n["estimate_ms"] for n in estimate["nodes"])
    assert (estimate["dispatch"]["compute_kernels"], estimate["dispatch"]["light_kernels"]) == (1, 1)
    # FusedConv at the full 10 us, the Reshape at the light share of it.
    assert estimate["estimate_ms"] == pytest.approx(arithmetic + 0.010 + device.light_dispatch_share * 0.010)


def test_measure_feeds_every_input_at_its_estimated_shape(tmp_path):
    """--measure on a model with three inputs (one an int64 scalar): zeros of each input's dtype
    and fixed shape, timed here, with the ratio to the estimate."""
    from edge_distill.config import load_config
    from edge_distill.measure.harness import estimate_model

    model = handmade.three_input_model(tmp_path / "vad.onnx")
    result = estimate_model(model, load_config("x86-avx512", None, ["benchmark.min_seconds=0.05"]), measure=True)
    assert result["measured_p50_ms"] > 0 and result["dispatch"]["kernels"] > 0
    assert (result["measured_over_estimate"] is None) == (__import__("platform").machine() != "x86_64")


def test_a_measurement_here_never_runs_more_threads_than_this_host_has(tmp_path):
    """rpi4 estimates for 4 threads; timed on a host with fewer cores, it runs at most as many as
    the host has (more would time contention), and the table says so."""
    from edge_distill.config import load_config
    from edge_distill.device.runner import usable_cores
    from edge_distill.measure.estimate import estimate_table
    from edge_distill.measure.harness import estimate_model

    model = handmade.three_input_model(tmp_path / "vad.onnx")
    result = estimate_model(model, load_config("rpi4", None, ["benchmark.min_seconds=0.05"]), measure=True)
    assert result["threads"] == 4 and result["measured_threads"] == min(4, usable_cores())
    if usable_cores() < 4:
        assert f"at {usable_cores()} thread(s) (this host's cores; the estimate is for 4)" in estimate_table(result)


def branches():
    """(then: x (1, 4) @ w (4, 4), 16 MACs; else: Relu of x)"""
    matmul = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["then_out"])], "then", [],
                               [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1, 4])])
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["else_out"])], "else", [],
                             [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, 4])])
    return matmul, relu


def test_an_if_costs_the_branch_a_constant_condition_picks_else_the_costlier(tmp_path):
    matmul, relu = branches()
    weights = {"zero": np.zeros(()), "w": np.ones((4, 4)), "no": np.array(False)}
    runtime = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
               helper.make_node("Greater", ["s", "zero"], ["positive"]),
               helper.make_node("If", ["positive"], ["y"], then_branch=matmul, else_branch=relu, name="if")]
    estimate = estimate_latency(save_graph(tmp_path, runtime, [("x", [1, 4])], "y", weights), DeviceConfig(name="d"),
                                threads=1)
    (branch,) = [n for n in estimate["nodes"] if n["op_type"] == "If"]
    assert branch["macs"] == 16 and branch["costed"] and estimate["coverage"]["share"] == 1.0
    assert "if: costed then_branch, the costlier branch (32 vs 4 FLOPs)" in estimate_table(estimate)
    constant = [helper.make_node("If", ["no"], ["y"], then_branch=matmul, else_branch=relu, name="if")]
    estimate = estimate_latency(save_graph(tmp_path, constant, [("x", [1, 4])], "y", weights), DeviceConfig(name="d"),
                                threads=1)
    # ONNX Runtime inlines the branch a constant condition picks: what runs is else_branch's Relu.
    assert [(n["op_type"], n["macs"], n["flops"]) for n in estimate["nodes"]] == [("Relu", 0, 4)]


def loop_model(tmp_path, trip_count: str, weights: dict):
    """y = x @ w, repeated trip_count times (a carried (1, 4) value): 16 MACs per iteration."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("MatMul", ["h", "w"], ["h_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 4])])
    nodes = [helper.make_node("Loop", [trip_count, "yes", "x"], ["y"], body=body, name="loop")]
    return save_graph(tmp_path, nodes, [("x", [1, 4]), *([("n", [], TensorProto.INT64)] if trip_count == "n" else [])], "y",
                      {"w": np.ones((4, 4)), "yes": np.array(True), **weights})


def test_a_loop_costs_its_body_times_a_constant_trip_count_and_says_when_it_cannot(tmp_path):
    from edge_distill.measure.estimate import estimate_table

    estimate = estimate_latency(loop_model(tmp_path, "five", {"five": np.array(5, np.int64)}), DeviceConfig(name="d"),
                                threads=1)
    (loop,) = estimate["nodes"]
    assert loop["macs"] == 5 * 16 and loop["costed"] and loop["detail"] == "body x 5 (constant trip count)"
    assert loop["kernels"] == 10 and "plus 10 kernel runs inside control-flow subgraphs" in \
        estimate["dispatch"]["counted_in"]
    estimate = estimate_latency(loop_model(tmp_path, "n", {}), DeviceConfig(name="d"), threads=1)
    (loop,) = estimate["nodes"]
    assert loop["macs"] == 16 and not loop["costed"] and estimate["coverage"]["share"] == 0.0
    assert ("Warning: not costed: Loop x1 (one iteration of body: the trip count is known only at run time)"
            in estimate_table(estimate))

def test_an_lstm_costs_its_gates_at_every_step_and_an_unknown_op_is_never_covered(tmp_path):
    """silero-vad's LSTM was counted as one elementwise node with the coverage line at 100%."""
    steps, batch, inputs, hidden = 20, 1, 16, 32
    rng = np.random.default_rng(0)
    lstm = save_graph(tmp_path, [helper.make_node("LSTM", ["x", "w", "r"], ["", "y_h"], hidden_size=hidden)],
                      [("x", [steps, batch, inputs])], "y_h",
                      {"w": rng.standard_normal((1, 4 * hidden, inputs)), "r": rng.standard_normal((1, 4 * hidden, hidden))})
    (cost,) = count_costs(lstm)[0]
    assert cost.macs == steps * batch * 4 * hidden * (inputs + hidden) and cost.costed
    estimate = estimate_latency(lstm, DeviceConfig(), 1)
    assert estimate["coverage"]["share"] == 1.0
    (tmp_path / "g.onnx").unlink()
    einsum = save_graph(tmp_path, [helper.make_node("Einsum", ["x", "w"], ["y"], equation="ij,jk->ik")],
                        [("x", [4, 8])], "y", {"w": rng.standard_normal((8, 8))})
    estimate = estimate_latency(einsum, DeviceConfig(), 1)
    assert estimate["coverage"]["share"] == 0.0 and "no cost model for Einsum" in estimate["coverage"]["note"]


def test_measure_on_a_calibration_sample_takes_the_branch_the_real_input_takes(tmp_path):
    """A model that branches on its sample rate: zeros (sr=0) would time the other branch."""
    from tests.test_cli import invoke

    model = handmade.three_input_model(tmp_path / "vad.onnx")
    samples = handmade.three_input_samples(tmp_path / "samples.npz")
    result = invoke("estimate", str(model), "-p", "x86-avx512", "--measure", "--calibration", str(samples),
                    "--min-seconds", "0.05", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["measured_p50_ms"] > 0
    result = invoke("estimate", str(model), "-p", "x86-avx512", "--calibration", str(samples))
    assert result.exit_code == 2 and "--calibration: only --measure runs the model" in result.output
    np.savez(tmp_path / "short.npz", audio=np.zeros((3, 16), np.float32))
    result = invoke("estimate", str(model), "-p", "x86-avx512", "--measure", "--calibration", str(tmp_path / "short.npz"))
    assert result.exit_code != 0 and "short.npz" in result.output and "Traceback" not in result.output
