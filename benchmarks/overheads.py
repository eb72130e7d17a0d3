"""Measure ONNX Runtime's costs on this host that no datasheet gives, the constants of the latency
estimate: the cost of one run (`device.run_overhead_us`: an Identity model), of one kernel (the
slope over chains of 1 to 129 nodes whose arithmetic is negligible), and the bandwidth of an
elementwise kernel on activations that stay in cache (`device.cache_bandwidth_gbs`). Two kinds of
chain bracket the dispatch: 1x1 Conv 8->8 on 4x4 (a compute kernel, handed to the thread pool:
`device.dispatch_us_per_node`) and Relu on 8 floats (a light kernel, run on the calling thread:
`device.light_dispatch_share` of the former). The bandwidth comes from a chain of Relu on 64 Ki
floats (256 KB read and 256 KB written per node), its slope less the small Relu's. Each model is
timed with the runner, interleaved, at the profile's threads; the table is printed and written as
JSON.

    python benchmarks/overheads.py --json benchmarks/results/overheads.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_distill.config import load_config
from edge_distill.device.runner import compare_latency, describe_host, usable_threads

CHAINS = (1, 33, 65, 129)


SHAPES = {"Relu": [1, 8], "Conv": [1, 8, 4, 4], "Relu 256 KB": [1, 65536]}


def chain(path: Path, length: int, kind: str = "Relu") -> Path:
    """x -> `length` nodes of the kind's op (its first word), at the kind's shape -> y; length 0
    is an Identity model."""
    op, shape = kind.split()[0], SHAPES[kind]
    names = ["x", *[f"t{i}" for i in range(length - 1)], "y"] if length else ["x", "y"]
    inputs = ["w"] if op == "Conv" else []
    nodes = ([helper.make_node(op, [names[i], *inputs], [names[i + 1]]) for i in range(length)] if length
             else [helper.make_node("Identity", ["x"], ["y"])])
    weights = [numpy_helper.from_array(np.full((8, 8, 1, 1), 0.1, np.float32), "w")] if inputs and length else []
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="x86-avx512")
    parser.add_argument("--seconds", type=float, default=5.0, help="Timed seconds per model, over 5 rounds.")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    config = load_config(args.profile)
    threads = usable_threads(config.benchmark.threads)
    p50_us, slopes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for op in SHAPES:
            models = {length: chain(Path(tmp) / f"{op.replace(' ', '_')}{length}.onnx", length, op) for length in (0, *CHAINS)}
            # ORT's optimizer leaves these chains alone (nothing to fuse or fold): every node is a kernel.
            latency = compare_latency({str(k): v for k, v in models.items()}, np.ones(SHAPES[op], np.float32),
                                      ["CPUExecutionProvider"], threads, args.seconds)
            p50_us[op] = {int(k): v["p50"] * 1e3 for k, v in latency.items()}
            slopes[op] = float(np.polyfit(CHAINS, [p50_us[op][k] for k in CHAINS], 1)[0])
    print(f"{'nodes':>6s} " + " ".join(f"{op + ' p50 us':>19s}" for op in SHAPES))
    for length in (0, *CHAINS):
        print(f"{length:6d} " + " ".join(f"{p50_us[op][length]:19.2f}" for op in SHAPES))
    run_overhead = float(np.median([p50_us[op][0] for op in ("Relu", "Conv")]))
    bandwidth = 2 * 4 * int(np.prod(SHAPES["Relu 256 KB"])) / ((slopes["Relu 256 KB"] - slopes["Relu"]) * 1e-6) / 1e9
    light_share = slopes["Relu"] / slopes["Conv"]
    print(f"run overhead (Identity model): {run_overhead:.2f} us, {threads} thread(s); per kernel: "
          + ", ".join(f"{op} {slope:.2f} us" for op, slope in slopes.items())
          + f"; light kernel share {light_share:.2f}; elementwise bandwidth in cache {bandwidth:.0f} GB/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": describe_host(), "threads": threads, "p50_us": p50_us,
                                         "run_overhead_us": run_overhead, "us_per_kernel": slopes,
                                         "light_dispatch_share": light_share, "cache_bandwidth_gbs": bandwidth},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
