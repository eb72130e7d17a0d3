"""Walking ONNX graphs with their subgraphs: every node, the names a graph reads from its outer
scope, and a node order that respects both."""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from edge_distill.errors import QuantizeError


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs `node` holds (If branches, Loop and Scan bodies)."""
    return [g for a in node.attribute for g in ([a.g] if a.HasField("g") else []) + list(a.graphs)]


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of `graph` and of the subgraphs its nodes hold, depth first."""
    for node in graph.node:
        yield node
        for subgraph in subgraphs(node):
            yield from all_nodes(subgraph)


def node_reads(node: onnx.NodeProto) -> set[str]:
    """What `node` needs computed before it runs: its inputs and what its subgraphs read from outside."""
    return {name for name in node.input if name}.union(*(used_names(g) for g in subgraphs(node)))


def used_names(graph: onnx.GraphProto) -> set[str]:
    """Names `graph` reads from its outer scope: what its nodes (nested subgraphs included) read
    that none of its nodes, inputs or initializers defines."""
    defined = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    read: set[str] = set()
    for node in graph.node:
        read |= node_reads(node)
        defined.update(node.output)
    return read - defined


def ordered_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """`graph`'s nodes, each after the producers of everything it reads, its subgraphs' reads
    included (ORT's quantizer sorts by explicit inputs only). Names no node of `graph` produces
    come from its inputs, initializers or outer scope."""
    produced = {name for node in graph.node for name in node.output}
    available: set[str] = set()
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available or name not in produced for name in node_reads(n))]
        if not ready:
            raise QuantizeError("the graph has a cycle")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        placed = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in placed]
    return ordered
