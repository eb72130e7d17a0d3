"""Batches of samples by index, through `torch.utils.data.DataLoader` worker processes when reading
means decoding files (data.samples.ImageFiles), in this process when it means slicing memory.

The caller chooses the order (a seeded permutation, a rank's share of each global batch), so a
run reads the same batches with any number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edge_distill.data.samples import is_lazy
from edge_distill.device.runner import usable_cores
from edge_distill.errors import EdgeDistillError

_workers = 0  # this process's data-loader workers (set_loader_workers)


def set_loader_workers(requested: int, processes: int = 1) -> int:
    """Worker processes that decode files for each loader of this process: `requested`, or (-1)
    this machine's usable cores divided among `processes`. Returns the number, for the report."""
    global _workers
    _workers = requested if requested >= 0 else max(1, usable_cores() // processes)
    return _workers


class _Failure:
    """A user-facing error raised in a worker, carried back whole (DataLoader would re-raise it with
    the worker's traceback in its message)."""

    def __init__(self, error: EdgeDistillError):
        self.kind, self.message, self.hint = type(error), error.message, error.hint


class _ByIndex(Dataset):
    def __init__(self, x):
        self.x = x

    def __getitem__(self, indices: np.ndarray):
        try:
            return torch.from_numpy(self.x[indices]), torch.from_numpy(indices)
        except EdgeDistillError as e:
            return _Failure(e)


def _as_is(batch):
    return batch


def read_batches(x, batches: Sequence[np.ndarray], workers: int | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(samples, their indices) for each index array in `batches`, in order: decoded by `workers`
    processes (default: set_loader_workers) when `x` holds files, sliced here when it is in memory."""
    workers = _workers if workers is None else workers
    if workers == 0 or not is_lazy(x):
        for indices in batches:
            yield torch.from_numpy(np.ascontiguousarray(x[indices])), torch.from_numpy(indices)
        return
    loader = DataLoader(_ByIndex(x), sampler=batches, batch_size=None, collate_fn=_as_is, num_workers=workers)
    iterator = iter(loader)
    try:
        for item in iterator:
            if isinstance(item, _Failure):
                raise item.kind(item.message, item.hint)
            yield item
    finally:
        del iterator  # stops the workers now, also when an error or the caller ends the pass early


def in_order(x, batch_size: int = 0, workers: int | None = None) -> Iterator[torch.Tensor]:
    """Every sample of `x` once, in order, `batch_size` at a time; by default batches of about 16 MB
    (512 digits, 145 RGB images at 96x96): the workers hold a few batches ahead, so the batch size,
    not the dataset, sets the memory."""
    batch_size = batch_size or int(np.clip(16 * 2**20 // (4 * int(np.prod(x.shape[1:]))), 1, 512))
    batches = [np.arange(i, min(i + batch_size, len(x))) for i in range(0, len(x), batch_size)]
    for samples, _ in read_batches(x, batches, workers):
        yield samples
