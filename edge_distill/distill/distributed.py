"""Student training under torchrun: `distill.nproc` processes, DistributedDataParallel over gloo
(CPU) or nccl (CUDA), the same config; each worker calls `student.train_student`, rank 0 writes
the outputs.

The launch passes the rendezvous address explicitly (127.0.0.1 and a free port, with
--local-addr): `torchrun --standalone` resolves the host name, and hangs where it does not resolve.
It is (and the log prints it)
    python -m torch.distributed.run --nnodes 1 --nproc-per-node N --master-addr 127.0.0.1 \
        --master-port <free> --local-addr 127.0.0.1 -m edge_distill.distill.distributed SPEC.json
with SPEC.json holding the resolved config, the stage's input files and its output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from edge_distill import errors
from edge_distill.config import BuildConfig, config_from_dict
from edge_distill.progress import Progress

# Lines rank 0 prints for the launching process: progress, and a user error as JSON.
PROGRESS_PREFIX = "edge-distill progress: "
ERROR_PREFIX = "edge-distill error: "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(config: BuildConfig, spec: Path) -> list[str]:
    """The torchrun launch: one node on 127.0.0.1 and a free port, or node `node_rank` of `nnodes`
    meeting at node 0's `rendezvous` (static rendezvous: every node gives the same HOST:PORT)."""
    cfg = config.distill
    if cfg.nnodes > 1:
        host, port = cfg.rendezvous.rsplit(":", 1)
        where = ["--nnodes", str(cfg.nnodes), "--node-rank", str(cfg.node_rank), "--master-addr", host,
                 "--master-port", port]
    else:
        where = ["--nnodes", "1", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                 "--local-addr", "127.0.0.1"]
    return [sys.executable, "-m", "torch.distributed.run", *where, "--nproc-per-node", str(cfg.nproc),
            "-m", "edge_distill.distill.distributed", str(spec)]


def run_distributed(config: BuildConfig, inputs: Mapping[str, Path], out: Path, progress: Progress) -> None:
    """`train_student` in `config.distill.nproc` processes on this node, of `nnodes` (`inputs`: its
    dataset.npz, teacher.model and teacher_logits.npy); this node's first process fills `out` with
    the student every node shares."""
    nproc = config.distill.nproc * config.distill.nnodes
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"config": config.to_dict(), "inputs": {k: str(v) for k, v in inputs.items()},
                                    "out": str(out)}))
        command = launch_command(config, spec)
        progress(f"distill: {nproc} processes on {config.distill.nnodes} node(s) under torchrun (DistributedDataParallel, "
                 f"{'nccl' if _cuda() else 'gloo'}): {' '.join(command[1:])}")
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))  # train_student sets torch's
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
            raise errors.ModelError(f"torchrun with {nproc} processes failed (exit {proc.returncode}): "
                                    + " | ".join(tail[-4:]), "run with distill.nproc = 1 to see the error directly")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _say(line: str) -> None:
    # One write() per line: the workers share the launcher's stdout pipe, and print() writes the
    # text and the newline separately, so two ranks' lines could interleave into one.
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def main(spec_path: str) -> int:
    import torch.distributed as dist

    from edge_distill.distill.student import train_student

    spec = json.loads(Path(spec_path).read_text())
    dist.init_process_group("nccl" if _cuda() else "gloo")
    # Each node's first process writes this node's copy of the outputs (the same on every node).
    writer = int(os.environ.get("LOCAL_RANK", "0")) == 0
    inputs = {k: Path(v) for k, v in spec["inputs"].items()}
    out = Path(spec["out"]) if writer else Path(tempfile.mkdtemp())
    try:
        train_student(config_from_dict(spec["config"]), inputs["dataset.npz"], inputs["teacher.model"],
                      inputs["teacher_logits.npy"], out,
                      lambda message: _say(PROGRESS_PREFIX + message) if writer else None, writer=writer)
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
