"""ONNX Runtime on a user's model from the host side: every failure of onnxruntime (a custom-op
domain it lacks, a graph with no outputs, an input type it has no kernel for, an allocation of
160 GB, a run stopped at its time limit) becomes one ModelError naming the model and what was
being done, instead of onnxruntime's own exception types and a traceback.

Low module: errors and, when called, onnxruntime and device/runner (numpy + onnxruntime only).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_distill.errors import EdgeDistillError, ModelError

TIME_LIMIT_SETTING = "benchmark.time_limit_s (--time-limit)"


@contextmanager
def onnxruntime_errors(what: str, hint: str = "check the model with onnxruntime directly, or re-export it") -> Iterator[None]:
    """Within the block, an onnxruntime failure is a ModelError "<what>: <its first line>"."""
    from edge_distill.device.runner import TimeLimitExceeded

    try:
        yield
    except EdgeDistillError:
        raise
    except TimeLimitExceeded as e:
        raise ModelError(f"{what}: {e} ({TIME_LIMIT_SETTING})",
                         "raise the limit with --time-limit (or --set benchmark.time_limit_s=...), "
                         "or check the model's loops") from e
    except MemoryError as e:
        raise ModelError(f"{what}: out of memory", "check the input sizes the model allocates for") from e
    except Exception as e:  # onnxruntime's Fail, InvalidGraph, InvalidArgument, NotImplemented, ...
        raise ModelError(f"{what}: {first_line(e)}", hint) from e


def first_line(error: BaseException, limit: int = 300) -> str:
    """onnxruntime's message without its "[ONNXRuntimeError] : 1 : FAIL :" prefix, on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(":", 3)[-1].strip()
    return text[:limit]


def open_session(model: Path | bytes, what: str = "", providers: list | None = None, threads: int | None = None,
                 config: dict[str, str] | None = None):
    """device.runner.create_session (CPU unless `providers`; threads pinned when given; its warnings
    quiet unless --debug), or a ModelError naming the model (`what`)."""
    import onnxruntime as ort

    from edge_distill.device.runner import create_session

    # Its own error lines would repeat, unformatted, what the ModelError says.
    ort.set_default_logger_severity(2 if os.environ.get("EDGE_DISTILL_DEBUG") else 4)
    with onnxruntime_errors(f"{what or model}: ONNX Runtime cannot load it"):
        return create_session(model, providers, threads, require_first=False, config=config)


def run_session(session, feed: dict, what: str, time_limit_s: float | None = None,
                names: list[str] | None = None) -> list:
    """`session.run(names, feed)`, stopped past `time_limit_s`, or a ModelError saying what was being run."""
    from edge_distill.device.runner import TimeLimit

    limit = TimeLimit(time_limit_s)
    try:
        with onnxruntime_errors(f"{what}: ONNX Runtime cannot run it"):
            return limit.run(session, feed, names)
    finally:
        limit.close()


def run_model(model: Path, feeds) -> dict:
    """Every output of `model` on every feed, stacked (device.runner.run_feeds), on the CPU provider;
    an onnxruntime failure is one ModelError naming the model."""
    from edge_distill.device.runner import run_feeds

    session = open_session(model, model.name)
    with onnxruntime_errors(f"{model.name}: ONNX Runtime cannot run it on the samples"):
        return run_feeds(session, feeds)
