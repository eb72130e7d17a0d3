"""Latency estimate from the graph: MACs, FLOPs and bytes per node, and a roofline.

The nodes costed are those of the graph ONNX Runtime runs, at the optimization level that keeps
standard ONNX ops (basic: constants folded, BatchNorm fused into Conv, no-op nodes removed); the
file's own nodes where ONNX Runtime cannot load it. Per node, time = max(FLOPs / peak compute,
bytes moved / bandwidth), where the bandwidth is the cache's when all weights fit in it (warm runs),
else DRAM's. Nodes whose inputs are all constant (weights, Constant nodes, the Shape of a
fixed-size tensor) are folded away at load and cost nothing. On top come a fixed dispatch cost per
kernel, counted in the graph ONNX Runtime runs after all its optimizations (fused, with any layout
conversions it adds; a light kernel costs a share of a compute kernel's), and one fixed cost per run. Control flow is costed through its subgraphs: an
If by the branch a constant condition picks, else the costlier one (an upper bound); a Loop by its
body times a constant trip count; a Scan by its body times the scanned length; where a count is
known only at run time, one iteration is costed and the node counts as not covered. The device's
figures come from its profile (`[device]` peak_*, with their sources). The estimate is a guide for
choosing sizes before training, not a measurement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from edge_distill.config import DeviceConfig
from edge_distill.errors import ConfigError
from edge_distill.onnx_model import fix_shapes, model_tensors

# Weight input index of the ops that carry weights, per op type.
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3, "Gemm": 1, "MatMul": 1, "MatMulInteger": 1,
                "QGemm": 3, "QLinearMatMul": 3}
CONV_OPS = ("Conv", "ConvInteger", "QLinearConv")
MATMUL_OPS = ("Gemm", "MatMul", "MatMulInteger", "QGemm", "QLinearMatMul")
POOL_OPS = ("MaxPool", "AveragePool")
REDUCE_OPS = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum")
# Bookkeeping nodes: no arithmetic worth counting, but each still costs a dispatch.
FREE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Constant", "Transpose")
# Recurrent layers: per step and direction, gates x hidden x (input + hidden) MACs (W and R).
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
# A few operations per output element: the cost model counts one FLOP each. An op in none of these
# lists has no cost model, and never counts as covered.
ELEMENTWISE_OPS = (
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Gelu",
    "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Pow", "Clip", "Floor", "Ceil", "Round", "Sign",
    "Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Mean", "Sum", "Where", "Equal", "Less", "LessOrEqual",
    "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Cast", "CastLike", "Softmax", "LogSoftmax",
    "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "ScatterND", "Pad", "Expand", "Tile",
    "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "ConstantOfShape", "Range", "NonZero", "ArgMax",
    "ArgMin", "TopK", "CumSum", "LayerNormalization", "BatchNormalization", "InstanceNormalization",
    "ReduceL2", "ReduceProd", "ReduceMin", "ReduceLogSumExp", "ReduceSumSquare", "QuantizeLinear",
    "DequantizeLinear", "DynamicQuantizeLinear",
)


@dataclass
class NodeCost:
    name: str
    op_type: str
    macs: int
    flops: int  # 2 per MAC plus every other arithmetic operation
    bytes_moved: int  # weights read + activations read and written
    weight_bytes: int
    estimate_ms: float = 0.0
    bound: str = ""  # "compute" or "memory"
    costed: bool = True  # False: its output size is unknown, or its subgraph's repeat count
    detail: str = ""  # for control flow: which subgraph was costed, how many times
    kernels: int = 1  # kernel runs it stands for (a Loop's body nodes times its iterations)


def fix_input_shapes(model: onnx.ModelProto, batch: int, shapes: dict[str, tuple[int, ...]]) -> None:
    """Make every input shape of `model` concrete, in place (onnx_model.fix_shapes: a symbolic
    first axis becomes `batch`, any other symbolic size needs --shape)."""
    if batch < 1:
        raise ConfigError(f"batch {batch}: must be at least 1")
    inputs, _ = model_tensors(model, "the model")
    fixed = fix_shapes(inputs, shapes, "the model", batch)
    for graph_input in model.graph.input:
        if graph_input.name in fixed:
            for dim, size in zip(graph_input.type.tensor_type.shape.dim, fixed[graph_input.name]):
                dim.dim_value = size


def known(shape: list[int] | None) -> bool:
    """The shape is inferred and every size concrete (a scalar's [] is): 0 is what ONNX reads for a
    missing size, -1 what some exporters write; None, a tensor shape inference could not reach."""
    return shape is not None and all(d > 0 for d in shape)


def concrete_model(model_path: Path, batch: int = 1, shapes: dict[str, list[int]] | None = None) -> onnx.ModelProto:
    """The model with every input shape concrete (`fix_input_shapes`)."""
    model = onnx.load(str(model_path))
    fix_input_shapes(model, batch, shapes or {})
    for value in model.graph.output:  # a declared -1 ("any", as Paddle writes it) would hide the inferred size
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_value <= 0 and not dim.dim_param:
                dim.Clear()
    return model


# Ops whose work lies in subgraphs (control_flow_cost).
CONTROL_FLOW_OPS = ("If", "Loop", "Scan")
# A Loop's trip count above this is the "no limit" that exporters pair with a run-time condition.
MAX_TRIP_COUNT = 1_000_000
# Ops whose output is not a function of their inputs: never folded.
NONDETERMINISTIC_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                        "Bernoulli", "Dropout")


def folded_nodes(graph: onnx.GraphProto, shapes: dict[str, list[int]]) -> set[int]:
    """Indices of the nodes ONNX Runtime folds into constants at load: every input is a weight, a
    Constant, or computed from those; a Shape of a tensor whose size is fixed is constant too."""
    constant = {t.name for t in graph.initializer} | {""}
    folded = set()
    for index, node in enumerate(graph.node):
        if node.op_type in NONDETERMINISTIC_OPS or node.op_type in CONTROL_FLOW_OPS:
            continue  # a subgraph reads outer values that are not among the node's inputs
        if (node.op_type == "Constant" or all(i in constant for i in node.input)
                or (node.op_type in ("Shape", "Size") and known(shapes.get(node.input[0])))):
            folded.add(index)
            constant.update(node.output)
    return folded


def ort_optimized(model: onnx.ModelProto, level: str) -> tuple[onnx.ModelProto | None, str]:
    """(ONNX Runtime's optimized graph of `model` at `level`, or None where it cannot load the
    model, and a note saying which). "basic" keeps standard ONNX ops (constant folding, Conv with
    BatchNorm fused, no-op nodes removed), so its shapes can be inferred; "extended" adds fused
    contrib kernels; "all" adds this CPU's layout conversions."""
    import tempfile

    from edge_distill.device.runner import create_session
    from edge_distill.errors import describe

    with tempfile.TemporaryDirectory() as tmp:
        source, optimized = Path(tmp) / "model.onnx", Path(tmp) / "optimized.onnx"
        onnx.save(model, str(source))
        try:
            # log_level 3: ORT warns that an ALL-level model fits only this CPU: known, intended.
            create_session(source, optimized_to=optimized, level=level, log_level=3)
            return onnx.load(str(optimized)), f"ONNX Runtime's optimized graph ({level} optimizations)"
        except Exception as e:
            return None, f"the file's nodes (ONNX Runtime cannot load it: {describe(e, 120)})"


def is_compute_kernel(op_type: str) -> bool:
    """Convolutions and matrix products (plain, fused, quantized, NCHWc), which ONNX Runtime hands
    to its thread pool; every other kernel is light."""
    return any(word in op_type for word in ("Conv", "MatMul", "Gemm", "Attention"))


def runtime_kernels(model: onnx.ModelProto, level: str) -> tuple[int, int, str]:
    """(compute kernels, light kernels, where the count comes from): the nodes of the graph ONNX
    Runtime runs for `model` after its optimizations at `level` ("all" adds this CPU's layout
    conversions; "extended" is portable), or the file's own nodes where it cannot load the model."""
    optimized, where = ort_optimized(model, level)
    compute = sum(is_compute_kernel(node.op_type) for node in (optimized or model).graph.node)
    return compute, len((optimized or model).graph.node) - compute, where


def count_costs(model_path: Path, batch: int = 1, shapes: dict[str, list[int]] | None = None
                ) -> tuple[list[NodeCost], bool, list[int]]:
    """Per-node costs at `batch` of the nodes that run (not folded), whether the model is int8 (QDQ
    or QOperator), and its input shape."""
    return costs_of(concrete_model(model_path, batch, shapes))


def costs_of(model: onnx.ModelProto) -> tuple[list[NodeCost], bool, list[int]]:
    """`count_costs` of a model whose input shapes are concrete (`concrete_model`)."""
    graph = shape_inference.infer_shapes(model).graph
    int8 = any(n.op_type in ("QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger", "QGemm")
               for n in graph.node)
    shapes = _value_shapes(graph)
    return graph_costs(graph, shapes, {}, 1 if int8 else 4), int8, shapes.get(graph.input[0].name) or []


def _value_shapes(graph: onnx.GraphProto) -> dict[str, list[int]]:
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in
            [*graph.input, *graph.value_info, *graph.output] if v.type.tensor_type.HasField("shape")}


def graph_costs(graph: onnx.GraphProto, outer_shapes: dict[str, list[int]], outer_weights: dict[str, np.ndarray],
                activation_bytes: int) -> list[NodeCost]:
    """Per-node costs of the nodes of `graph` that run (not folded); a subgraph sees its outer
    scope's shapes and weights."""
    shapes = outer_shapes | _value_shapes(graph)
    initializers = outer_weights | {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # Weights held in Constant nodes (Paddle's exporter writes them so) are weights all the same.
    initializers |= {n.output[0]: numpy_helper.to_array(a.t) for n in graph.node if n.op_type == "Constant"
                     for a in n.attribute if a.name == "value"}
    # In a QDQ graph a weight reaches its Conv through DequantizeLinear: follow it to the int8 tensor.
    dequantized = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    costs = []
    folded = folded_nodes(graph, shapes)
    for index, node in enumerate(graph.node):
        if index in folded or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue  # computed once at load; Q/DQ are fused into the quantized kernels (or counted as kernels)
        if node.op_type in CONTROL_FLOW_OPS:
            costs.append(control_flow_cost(node, shapes, initializers, activation_bytes))
            continue
        out_shape = shapes.get(node.output[0])
        out_elems = math.prod(int(d) for d in out_shape) if known(out_shape) else 0
        if node.op_type in RECURRENT_OPS:
            costs.append(recurrent_cost(node, shapes, initializers, dequantized, activation_bytes))
            continue
        weight = _weight(node, initializers, dequantized)
        macs = _macs(node, shapes, weight, out_elems)
        other = _other_flops(node, shapes, out_elems)
        modelled = node.op_type in (*CONV_OPS, *MATMUL_OPS, *POOL_OPS, *FREE_OPS, *ELEMENTWISE_OPS, *REDUCE_OPS,
                                    "ConvTranspose") or is_compute_kernel(node.op_type) and macs > 0
        activation_in = sum(math.prod(int(d) for d in shapes[i]) for i in node.input
                            if i in shapes and known(shapes[i]) and i not in initializers
                            and i not in dequantized)
        weight_bytes = weight.nbytes if weight is not None else 0
        # Unknown sizes count as nothing (never as a negative figure).
        macs, other = max(macs, 0), max(other, 0)
        moved = max(weight_bytes + (activation_in + out_elems) * activation_bytes, 0)
        costs.append(NodeCost(node.name or node.op_type, node.op_type, macs, 2 * macs + other, moved, weight_bytes,
                              costed=known(out_shape) and modelled,
                              detail="" if modelled else f"no cost model for {node.op_type}"))
    return costs


def recurrent_cost(node: onnx.NodeProto, shapes: dict[str, list[int]], weights: dict[str, np.ndarray],
                   dequantized: dict[str, str], activation_bytes: int) -> NodeCost:
    """An LSTM, GRU or RNN: per step, batch row and direction, W (gates x hidden, input) and R
    (gates x hidden, hidden) multiply-adds plus about ten operations per gate value; times the
    sequence length (X is (seq, batch, input), or (batch, seq, input) with layout 1)."""
    x = shapes.get(node.input[0])
    w, r = (weights.get(dequantized.get(name, name)) for name in node.input[1:3])
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    if not known(x) or len(x) != 3 or w is None or r is None:
        return NodeCost(node.name or node.op_type, node.op_type, 0, 0, 0, 0, costed=False,
                        detail="sequence length or weights unknown")
    steps, batch = (x[1], x[0]) if layout else (x[0], x[1])
    directions, gate_values, inputs = w.shape
    hidden = r.shape[2]
    macs = steps * batch * directions * gate_values * (inputs + hidden)
    elementwise = 10 * steps * batch * directions * gate_values
    moved = w.nbytes + r.nbytes + steps * batch * directions * (inputs + hidden) * activation_bytes
    return NodeCost(node.name or node.op_type, node.op_type, macs, 2 * macs + elementwise, moved,
                    w.nbytes + r.nbytes, detail=f"{steps} step(s) x {directions} direction(s)", kernels=1)


def control_flow_cost(node: onnx.NodeProto, shapes: dict[str, list[int]], weights: dict[str, np.ndarray],
                      activation_bytes: int) -> NodeCost:
    """An If, Loop or Scan as the cost of the subgraph that runs, times how often it runs."""
    bodies = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
    counted = {name: graph_costs(body, shapes, weights, activation_bytes) for name, body in bodies.items()}
    repeats, count_known = 1, True
    if node.op_type == "If":
        condition = weights.get(node.input[0])
        if condition is not None:
            chosen = "then_branch" if bool(condition) else "else_branch"
            detail = f"{chosen}: the condition is constant"
        else:
            chosen = max(counted, key=lambda name: (sum(c.flops for c in counted[name]), name == "then_branch"))
            other = "else_branch" if chosen == "then_branch" else "then_branch"
            detail = (f"{chosen}, the costlier branch ({sum(c.flops for c in counted[chosen]):,} vs "
                      f"{sum(c.flops for c in counted[other]):,} FLOPs): the condition is known only at run time")
    elif node.op_type == "Loop":
        chosen = "body"
        trip = weights.get(node.input[0]) if node.input and node.input[0] else None
        count_known = trip is not None and 0 <= int(trip) <= MAX_TRIP_COUNT
        repeats = int(trip) if count_known else 1
        detail = (f"body x {repeats} (constant trip count)" if count_known else
                  "one iteration of body: the trip count is known only at run time")
    else:  # Scan: the scanned length is the first scan input's size along its axis
        chosen = "body"
        scan_inputs = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
        axes = next((list(a.ints) for a in node.attribute if a.name == "scan_input_axes"), [0])
        scanned = shapes.get(node.input[len(node.input) - scan_inputs])
        count_known = known(scanned) and bool(scanned)
        repeats = scanned[axes[0]] if count_known else 1
        detail = (f"body x {repeats} (the scanned length)" if count_known else
                  "one iteration of body: the scanned length is unknown")
    body = counted[chosen]
    return NodeCost(node.name or node.op_type, node.op_type, repeats * sum(c.macs for c in body),
                    repeats * sum(c.flops for c in body), repeats * sum(c.bytes_moved for c in body),
                    sum(c.weight_bytes for c in body), costed=count_known and all(c.costed for c in body),
                    detail=detail, kernels=repeats * sum(c.kernels for c in body))


def _weight(node, initializers: dict, dequantized: dict) -> np.ndarray | None:
    index = WEIGHT_INPUT.get(node.op_type)
    if index is None or index >= len(node.input):
        return None
    name = dequantized.get(node.input[index], node.input[index])
    return initializers.get(name)


def _macs(node, shapes: dict, weight: np.ndarray | None, out_elems: int) -> int:
    if node.op_type == "ConvTranspose":
        # Each input element: C_out/groups x kH x kW multiply-adds; weight is (C_in, C_out/groups, kH, kW).
        x = shapes.get(node.input[0])
        return math.prod(int(d) for d in x) * math.prod(weight.shape[1:]) if known(x) and weight is not None else 0
    if node.op_type in CONV_OPS and weight is not None:
        # Each output element: C_in/groups x kH x kW multiply-adds; weight is (C_out, C_in/groups, kH, kW).
        return out_elems * math.prod(int(d) for d in weight.shape[1:])
    if node.op_type in MATMUL_OPS:
        a = shapes.get(node.input[0])
        if not known(a) or not a:
            return 0
        transposed = node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute)
        k = a[0] if transposed else a[-1]  # (M, K) @ (K, N): M x N outputs, K MACs each
        return out_elems * k
    return 0


def _other_flops(node, shapes: dict, out_elems: int) -> int:
    if node.op_type in POOL_OPS:
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [1])
        return out_elems * math.prod(int(d) for d in kernel)  # one comparison or add per window element
    if node.op_type in REDUCE_OPS:
        first = shapes.get(node.input[0])
        return math.prod(int(d) for d in first) if known(first) else 0
    if node.op_type in FREE_OPS or node.op_type in CONV_OPS or node.op_type in MATMUL_OPS:
        bias = 0
        if node.op_type in CONV_OPS + ("Gemm",) and len(node.input) > 2:
            bias = out_elems  # one add per output for the bias
        return bias
    return out_elems  # elementwise: Relu, Add, Mul, Clip, Sigmoid ...


def estimate_latency(
    model_path: Path, device: DeviceConfig, threads: int, batch: int = 1, assume_int8: bool = False,
    shapes: dict[str, list[int]] | None = None,
) -> dict:
    """Roofline estimate of one run for `device` with `threads` cores busy. `assume_int8` estimates
    a float graph as its int8 version will run (for sizing students before they are quantized);
    `shapes` fixes input shapes by name (needed where sizes other than the batch are symbolic)."""
    model = concrete_model(model_path, batch, shapes)
    # Arithmetic is costed on the graph ONNX Runtime runs, at the level that keeps standard ops.
    basic, costed_on = ort_optimized(model, "basic")
    costs, int8, input_shape = costs_of(basic or model)
    # This CPU's own optimizations (layout conversions) only where it has the device's architecture.
    level = "all" if device.is_host_arch else "extended"
    compute_kernels, light_kernels, kernels_from = runtime_kernels(model, level)
    if assume_int8 and not int8:
        int8 = True
        for cost in costs:
            cost.bytes_moved //= 4  # int8 weights and activations: a quarter of the fp32 bytes
            cost.weight_bytes //= 4
    cores = min(threads, device.cores)
    peak_gops = (device.peak_int8_gops if int8 else device.peak_fp32_gflops) * cores / device.cores
    weights = sum(c.weight_bytes for c in costs)
    in_cache = device.cache_bytes and weights <= device.cache_bytes
    bandwidth = device.cache_bandwidth_gbs if in_cache else device.memory_bandwidth_gbs
    for cost in costs:
        compute_ms = cost.flops / (peak_gops * 1e9) * 1e3
        memory_ms = cost.bytes_moved / (bandwidth * 1e9) * 1e3
        cost.estimate_ms = max(compute_ms, memory_ms)
        cost.bound = "compute" if compute_ms >= memory_ms else "memory"
    # ONNX Runtime's optimized graph holds a control-flow node's subgraphs, not the runs of their
    # kernels: those are counted as costed, as compute kernels (an upper bound).
    in_subgraphs = sum(c.kernels for c in costs if c.op_type in CONTROL_FLOW_OPS)
    compute_kernels += in_subgraphs
    if in_subgraphs:
        kernels_from += f", plus {in_subgraphs} kernel runs inside control-flow subgraphs (as costed)"
    dispatch_ms = (compute_kernels + light_kernels * device.light_dispatch_share) * device.dispatch_us_per_node * 1e-3
    return {
        "device": device.name,
        "precision": "int8" if int8 else "fp32",
        "threads": cores,
        "batch": batch,
        "input_shape": input_shape,
        "macs": sum(c.macs for c in costs),
        "flops": sum(c.flops for c in costs),
        "bytes_moved": sum(c.bytes_moved for c in costs),
        "estimate_ms": sum(c.estimate_ms for c in costs) + dispatch_ms + device.run_overhead_us * 1e-3,
        "run_overhead_ms": device.run_overhead_us * 1e-3,
        "dispatch": {"kernels": compute_kernels + light_kernels, "compute_kernels": compute_kernels,
                     "light_kernels": light_kernels, "counted_in": kernels_from, "ms": dispatch_ms},
        "costed_on": costed_on,
        "coverage": coverage(costs),
        "nodes": [asdict(c) for c in costs],
        "weight_bytes": weights,
        "peaks": {"gops": peak_gops, "bandwidth_gbs": bandwidth, "weights_in_cache": bool(in_cache),
                  "dispatch_us_per_node": device.dispatch_us_per_node,
                  "light_dispatch_share": device.light_dispatch_share, "sources": device.peak_sources},
    }


def coverage(costs: list[NodeCost]) -> dict:
    """The share of the nodes that run whose cost the estimate could count, and the others by op type."""
    missed: dict[str, int] = {}
    why: dict[str, str] = {}
    for cost in costs:
        if not cost.costed:
            missed[cost.op_type] = missed.get(cost.op_type, 0) + 1
            why[cost.op_type] = cost.detail or "size unknown"
    share = 1.0 - sum(missed.values()) / len(costs) if costs else 1.0
    return {"share": share, "not_costed": missed,
            "control_flow": {cost.name: cost.detail for cost in costs if cost.op_type in CONTROL_FLOW_OPS},
            "note": "" if not missed else
            "not costed: " + ", ".join(f"{op} x{n} ({why[op]})" for op, n in sorted(missed.items()))
            + ": the estimate is low by their work"}


def estimate_table(estimate: dict) -> str:
    """Per-node and total estimate, with the measurement when there is one (`estimate_model`), and
    its ratio to the estimate where the host has the device's architecture."""
    lines = [f"{'node':<28}{'op':<14}{'MACs':>12}{'bytes':>12}{'est. ms':>10}  bound"]
    for node in estimate["nodes"]:
        lines.append(f"{node['name'][:27]:<28}{node['op_type']:<14}{node['macs']:>12,}{node['bytes_moved']:>12,}"
                     f"{node['estimate_ms']:>10.4f}  {node['bound']}")
    dispatch = estimate["dispatch"]
    lines.append(f"{'dispatch: ' + str(dispatch['kernels']) + ' kernels':<28}{'':<14}{'':>12}{'':>12}"
                 f"{dispatch['ms']:>10.4f}  {dispatch['compute_kernels']} compute, {dispatch['light_kernels']} light, "
                 f"counted in {dispatch['counted_in']}")
    lines.append(f"{'run overhead':<28}{'':<14}{'':>12}{'':>12}{estimate['run_overhead_ms']:>10.4f}")
    lines.append(f"{'total (' + estimate['precision'] + ', ' + str(estimate['threads']) + ' thread(s))':<42}"
                 f"{estimate['macs']:>12,}{estimate['bytes_moved']:>12,}{estimate['estimate_ms']:>10.4f}")
    covered = estimate["coverage"]
    lines += [f"{name}: costed {detail}" for name, detail in covered["control_flow"].items()]
    lines.append(f"coverage: {covered['share']:.0%} of the {len(estimate['nodes'])} nodes that run"
                 + (f"; Warning: {covered['note']}" if covered["note"] else ""))
    if "measured_p50_ms" in estimate:
        ratio = estimate["measured_over_estimate"]
        threads = estimate.get("measured_threads", estimate["threads"])
        lines.append(f"measured p50 {estimate['measured_p50_ms']:.4f} ms at {threads} thread(s)"
                     + (f" (this host's cores; the estimate is for {estimate['threads']})"
                        if threads != estimate["threads"] else "") + "; " + (
            f"measured / estimate = {ratio:.2f}" if ratio is not None
            else "no ratio: this host is not of the device's architecture"))
    return "\n".join(lines)
