"""What a model file holds, read from its contents (suffixes vary: .pt, .pth, .pt2, .onnx).
Standard library only: the cache key of a no-op rebuild asks this without importing torch."""

from __future__ import annotations

import zipfile
from pathlib import Path


def sniff_format(path: Path) -> str:
    """What a teacher file holds, from its contents (suffixes vary: .pt, .pth, .pt2, .onnx)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        # Both archives hold one top-level folder: torch.export's has archive_format (PT2 archive
        # format), TorchScript's has constants.pkl beside its code/ folder.
        top_level = {name.split("/", 1)[1] for name in names if "/" in name}
        if "archive_format" in top_level:
            return "torch.export"
        if "constants.pkl" in top_level:
            return "torchscript"
        return "state_dict"
    return "onnx"
