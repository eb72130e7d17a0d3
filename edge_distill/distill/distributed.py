"""Training under torchrun, for every pipeline that trains: `Launch.nproc` processes per node on
`Launch.nnodes` nodes, DistributedDataParallel over gloo (CPU) or nccl (CUDA). Each worker runs one
of `WORKERS` (the image, language-model or text student) on the same spec; each node's first
process writes the outputs.

The launch passes the rendezvous address explicitly (127.0.0.1 and a free port, with
--local-addr): `torchrun --standalone` resolves the host name, and hangs where it does not resolve.
It is (and the log prints it)
    python -m torch.distributed.run --nnodes 1 --nproc-per-node N --master-addr 127.0.0.1 \
        --master-port <free> --local-addr 127.0.0.1 -m edge_distill.distill.distributed SPEC.json
with SPEC.json naming the worker and holding what it reads: its settings, the stage's input files
and its output folder.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill import errors
from edge_distill.progress import Progress

# Lines a node's first process prints for the launching process: progress, and a user error as JSON.
PROGRESS_PREFIX = "edge-distill progress: "
ERROR_PREFIX = "edge-distill error: "

# What a worker may run: name -> "module:function", called as function(spec, progress, writer) in
# every process, after the process group is up.
WORKERS = {
    "image-student": "edge_distill.distill.student:train_student_worker",
    "llm-student": "edge_distill.lm.build:distil_student_worker",
    "text-student": "edge_distill.text.build:make_student_worker",
}


@dataclass(frozen=True)
class Launch:
    """Where training runs: `nproc` processes on each of `nnodes` nodes; this one is `node_rank`,
    and node 0 listens at `rendezvous` (HOST:PORT, the same on every node) when there are several."""
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rendezvous: str = ""

    @property
    def processes(self) -> int:
        return self.nproc * self.nnodes

    def check(self, config_keys: bool = False) -> None:
        """One-line errors for a launch that cannot meet, before any work; named as the build's
        config keys (distill.node_rank = 2) or as flags (--node-rank 2)."""
        def named(key: str, value) -> str:
            return f"distill.{key} = {value!r}" if config_keys else f"--{key.replace('_', '-')} {value}"

        if self.node_rank >= self.nnodes:
            raise errors.ConfigError(f"{named('node_rank', self.node_rank)} with {named('nnodes', self.nnodes)}",
                                     f"number the nodes 0..{self.nnodes - 1}")
        if self.nnodes > 1 and not re.fullmatch(r"[^\s:]+:\d+", self.rendezvous):
            raise errors.ConfigError(f"{named('nnodes', self.nnodes)} needs {'distill.rendezvous' if config_keys else '--rendezvous'}, "
                                     f"node 0's HOST:PORT (given {self.rendezvous!r})",
                                     "e.g. --rendezvous 10.0.0.1:29500, the same on every node")


def check_gpus(launch: Launch) -> None:
    """Where there are GPUs, each process trains on its own (NCCL takes one process per GPU): more
    processes than GPUs is one line. Imports torch: call it only when training will run."""
    gpus = cuda_device_count() if launch.processes > 1 else 0
    if gpus and launch.nproc > gpus:
        raise errors.ConfigError(f"--nproc {launch.nproc}: this machine has {gpus} GPU(s), and each process trains "
                                 "on its own", f"use --nproc {gpus} or less")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(launch: Launch, spec: Path) -> list[str]:
    """The torchrun launch: one node on 127.0.0.1 and a free port, or node `node_rank` of `nnodes`
    meeting at node 0's `rendezvous` (static rendezvous: every node gives the same HOST:PORT)."""
    if launch.nnodes > 1:
        host, port = launch.rendezvous.rsplit(":", 1)
        where = ["--nnodes", str(launch.nnodes), "--node-rank", str(launch.node_rank), "--master-addr", host,
                 "--master-port", port]
    else:
        where = ["--nnodes", "1", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                 "--local-addr", "127.0.0.1"]
    return [sys.executable, "-m", "torch.distributed.run", *where, "--nproc-per-node", str(launch.nproc),
            "-m", "edge_distill.distill.distributed", str(spec)]


def run_distributed(worker: str, spec: dict[str, Any], launch: Launch, progress: Progress) -> None:
    """`WORKERS[worker]` in `launch.nproc` processes on this node, of `launch.nnodes`, each given
    `spec` (JSON: settings, input and output paths as strings)."""
    check_gpus(launch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps({"worker": worker, **spec}))
        command = launch_command(launch, path)
        progress(f"{worker}: {launch.processes} processes on {launch.nnodes} node(s) under torchrun "
                 f"(DistributedDataParallel, {'nccl' if cuda_available() else 'gloo'}): {' '.join(command[1:])}")
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))  # the workers set torch's
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
            tail: list[str] = []
            reported: list[str] = []
            for line in proc.stdout:
                if line.startswith(PROGRESS_PREFIX):
                    progress(line[len(PROGRESS_PREFIX):].rstrip())
                elif line.startswith(ERROR_PREFIX):
                    reported.append(line[len(ERROR_PREFIX):])
                else:
                    tail = (tail + [line.rstrip()])[-15:]
        if proc.returncode != 0:
            for line in reported:  # a user error inside a worker: raise it here as it was raised there
                try:
                    error = json.loads(line)
                except json.JSONDecodeError:  # not expected (one write() per line), but never a traceback
                    continue
                raise getattr(errors, error["type"], errors.EdgeDistillError)(error["message"], error["hint"])
            raise errors.ModelError(f"torchrun with {launch.processes} processes failed (exit {proc.returncode}): "
                                    + " | ".join(tail[-4:]), "run with one process (--nproc 1) to see the error directly")


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside torchrun."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def threads_per_process(threads: int) -> int:
    """A node's `threads` shared among its torchrun processes (LOCAL_WORLD_SIZE), at least 1 each."""
    return max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cuda_device_count() -> int:
    """GPUs torch can use here (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def training_device():
    """The torch device this process trains on: its own GPU under torchrun (LOCAL_RANK), the GPU
    outside it, else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def training_precision(device) -> str:
    """"bf16" autocast on a GPU that supports it (Ampere and later); "fp32" elsewhere, the CPU
    included (bf16 matmuls on a CPU without AMX are slower than fp32, not faster)."""
    import torch

    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(device):
    """The forward passes' autocast context for `device` (training_precision)."""
    import contextlib

    import torch

    if training_precision(device) == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _say(line: str) -> None:
    # One write() per line: the workers share the launcher's stdout pipe, and print() writes the
    # text and the newline separately, so two ranks' lines could interleave into one.
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def main(spec_path: str) -> int:
    import torch.distributed as dist

    spec = json.loads(Path(spec_path).read_text())
    module, function = WORKERS[spec["worker"]].split(":")
    work = getattr(importlib.import_module(module), function)
    if cuda_available():
        import torch

        torch.cuda.set_device(training_device())
    dist.init_process_group("nccl" if cuda_available() else "gloo")
    # Each node's first process writes this node's copy of the outputs (the same on every node).
    writer = int(os.environ.get("LOCAL_RANK", "0")) == 0
    out = Path(spec["out"]) if writer else Path(tempfile.mkdtemp())
    try:
        work({**spec, "out": str(out)}, lambda message: _say(PROGRESS_PREFIX + message) if writer else None, writer)
        # Leave together: a process that tears its connections down while a peer is still in its
        # last collective makes gloo abort that peer (SIGABRT).
        dist.barrier()
    except errors.EdgeDistillError as e:
        _say(ERROR_PREFIX + json.dumps({"type": type(e).__name__, "message": e.message, "hint": e.hint}))
        return 1
    finally:
        if not writer:
            shutil.rmtree(out, ignore_errors=True)
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
