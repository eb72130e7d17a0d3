"""Post-training int8 inside `If` branches, which ONNX Runtime's static quantizer does not enter.

A model such as silero-vad v5 keeps all its compute in the two branches of an `If` on an input
(the sample rate). Each branch of a top-level `If` that holds convolutions or matrix products, and
that the calibration samples take, is cut out as a model of its own (the outer values it reads
become its inputs), calibrated on the values it sees when the whole model runs on the samples,
quantized with the same recipe, and put back. A branch no sample takes stays in float, and the
model keeps every branch, so it answers every input as the float model does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import helper

from edge_distill.errors import QuantizeError, describe
from edge_distill.export.graphs import all_nodes, ordered_nodes, used_names

COMPUTE_OPS = ("Conv", "MatMul", "Gemm", "ConvTranspose")


def has_compute(graph: onnx.GraphProto) -> bool:
    return any(node.op_type in COMPUTE_OPS for node in all_nodes(graph))


def branch_model(branch: onnx.GraphProto, outer: dict[str, onnx.ValueInfoProto], weights: dict[str, onnx.TensorProto],
                 opsets) -> onnx.ModelProto:
    """`branch` as a model: the outer values it reads are its inputs; outer weights are copied in."""
    reads = sorted(used_names(branch))
    inputs = [outer[name] for name in reads if name in outer]
    graph = helper.make_graph(list(branch.node), branch.name or "branch", inputs, list(branch.output),
                              [*branch.initializer, *(weights[name] for name in reads if name in weights)])
    model = helper.make_model(graph, opset_imports=list(opsets))
    model.ir_version = 8
    return model


def quantize_branches(int8: Path, feeds: list[dict], quantize: Callable[[Path, list[dict], Path], dict],
                      work: Path, notes: list[str]) -> None:
    """Quantize, in place in `int8`, the branches of its top-level Ifs that hold compute and that
    `feeds` take; `quantize(model, branch_feeds, dst)` applies the recipe. Failures are noted and
    leave the branch in float."""
    from edge_distill.device.runner import create_session

    model = onnx.load(str(int8))
    ifs = [node for node in model.graph.node if node.op_type == "If"
           and any(has_compute(a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH)]
    if not ifs:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference fails on: the declared inputs and outputs still type what they name
        inferred = model
    outer = {v.name: v for v in [*inferred.graph.value_info, *model.graph.input, *model.graph.output]}
    weights = {t.name: t for t in model.graph.initializer}
    needed = sorted({name for node in ifs for name in [node.input[0], *set().union(*(
        used_names(a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH))]} - set(weights))
    untyped = [name for name in needed if name not in outer]
    if untyped:
        notes.append(f"If branches kept in float: the types of {', '.join(untyped[:5])} are unknown")
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared = {o.name for o in probe.graph.output}
    probe.graph.output.extend(outer[name] for name in needed if name not in declared)
    session = create_session(probe.SerializeToString())
    seen = [dict(zip(needed, session.run(needed, feed))) for feed in feeds]
    done = []
    for node in ifs:
        for attribute in node.attribute:
            if attribute.type != onnx.AttributeProto.GRAPH or not has_compute(attribute.g):
                continue
            taken = [values for values in seen if bool(values[node.input[0]]) == (attribute.name == "then_branch")]
            where = f"{node.name or 'If'}.{attribute.name}"
            if not taken:
                notes.append(f"{where} kept in float: no calibration sample takes it")
                continue
            cut = branch_model(attribute.g, outer, weights, model.opset_import)
            source, dst = work / f"branch-{len(done)}.onnx", work / f"branch-{len(done)}-int8.onnx"
            onnx.save(cut, str(source))
            reads = [i.name for i in cut.graph.input]
            try:
                quantize(source, [{name: values[name] for name in reads} for values in taken], dst)
                quantized = onnx.load(str(dst)).graph
            except (QuantizeError, OSError, ValueError) as e:
                notes.append(f"{where} kept in float: {getattr(e, 'message', None) or describe(e, 200)}")
                continue
            outer_weights = {name for name in used_names(attribute.g) if name in weights}
            before = onnx.GraphProto()
            before.CopyFrom(attribute.g)
            attribute.g.CopyFrom(helper.make_graph(
                ordered_nodes(quantized), attribute.g.name, [], list(attribute.g.output),
                [t for t in quantized.initializer if t.name not in outer_weights]))
            try:  # the model with this branch put back still loads
                create_session(model.SerializeToString())
            except Exception as e:
                attribute.g.CopyFrom(before)
                notes.append(f"{where} kept in float: ONNX Runtime cannot load it quantized ({describe(e, 200)})")
                continue
            done.append(f"{where} ({len(taken)} of {len(feeds)} samples)")
    if done:
        onnx.save(model, str(int8))
        notes.append(f"quantized inside If branches, which ONNX Runtime's quantizer skips: {', '.join(done)}")
