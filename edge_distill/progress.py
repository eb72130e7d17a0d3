"""Progress: messages, and bars for the long loops (training, teacher outputs, calibration,
benchmarking).

Library code takes a `progress` callable (message -> None). A caller that can draw bars passes an
object that also has `bar(total, label)`; `progress_bar(progress, ...)` gives a bar when it can and
a no-op otherwise, so domain code never asks. The CLI draws tqdm bars on a terminal (not with
--json or --quiet, nor when stderr is not a terminal); the library's default reports through the
`logging` module, as libraries should.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

Progress = Callable[[str], None]
LOGGER = logging.getLogger("edge_distill")


def log_progress(message: str) -> None:
    """The library's default: progress as INFO records of the "edge_distill" logger."""
    LOGGER.info(message)


class _NoBar:
    active = False

    def update(self, n: int = 1, **postfix: Any) -> None:
        pass


@contextmanager
def progress_bar(progress: Progress, total: int, label: str):
    """A bar with rate and ETA from `progress` if it draws bars, else a no-op bar (`active` False,
    so the caller can print its own per-step lines instead)."""
    make = getattr(progress, "bar", None)
    if make is None:
        yield _NoBar()
        return
    with make(total, label) as bar:
        yield bar


class _TqdmBar:
    active = True

    def __init__(self, bar):
        self._bar = bar

    def update(self, n: int = 1, **postfix: Any) -> None:
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(n)


class TerminalProgress:
    """Timestamped lines on stderr and, on a terminal, tqdm bars (lines print above them)."""

    def __init__(self, bars: bool | None = None, quiet: bool = False):
        self.bars = sys.stderr.isatty() if bars is None else bars
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        tqdm.write(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr)

    @contextmanager
    def bar(self, total: int, label: str):
        if self.quiet or not self.bars:
            yield _NoBar()
            return
        from tqdm import tqdm

        with tqdm(total=total, desc=label, unit="step", file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
            yield _TqdmBar(bar)
