"""Typed errors. Library code raises these; the CLI renders them once as `Error:` / `Hint:`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeDistillError(Exception):
    """A failure the user can act on: a one-line message, a hint and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(EdgeDistillError):
    """A config or profile file, key or value is wrong."""

    exit_code = 2


class ProfileNotFoundError(ConfigError):
    """No shipped profile and no file has the given name."""


class InputFileError(EdgeDistillError):
    """A file the user named is missing, unreadable or not what it should be."""

    exit_code = 3


class DataError(InputFileError):
    """The dataset is empty, malformed or holds NaN/inf."""


class FileSystemError(InputFileError):
    """Reading or writing a path failed: permission, a full or read-only disk, a file where a folder should be."""

    @classmethod
    def from_os_error(cls, error: OSError) -> "FileSystemError":
        import errno

        path = _user_folder(error.filename) if error.filename else "a file"
        reason = error.strerror or type(error).__name__
        hints = {errno.ENOSPC: "free space on that disk, or choose a folder on another one",
                 errno.EROFS: "choose a folder on a writable disk",
                 errno.EACCES: "choose a folder you can write to, or fix its permissions",
                 errno.ENOTDIR: "a part of that path is a file: choose another path"}
        return cls(f"{path}: {reason}", hints.get(error.errno, "check the path and the disk"))


def _user_folder(filename) -> str:
    """The path a user knows: a file in our staging or scratch folders (.tmp-123-abc, .scratch-...,
    .bundle.tmp-...) is named by the folder above them, the one the user chose."""
    import re
    from pathlib import PurePath

    path = PurePath(str(filename))
    for depth, part in enumerate(path.parts):
        if re.match(r"\.(tmp-|scratch-|.+\.tmp-|.+\.old-)", part):
            return f"{PurePath(*path.parts[:depth])} (while writing {path.name})"
    return str(path)


class BundleError(InputFileError):
    """A bundle cannot be verified: its manifest or golden files are unreadable or inconsistent."""


class ModelError(EdgeDistillError):
    """A teacher or student cannot be built, loaded or does not fit the data."""

    exit_code = 4


class ExportParityError(EdgeDistillError):
    """ONNX Runtime outputs differ from the reference beyond tolerance."""

    exit_code = 5


class SimplifyError(EdgeDistillError):
    """onnxsim failed or changed the model's outputs."""

    exit_code = 5


class QuantizeError(EdgeDistillError):
    """Quantization failed, or no recipe fits the accuracy budget when int8 is required."""

    exit_code = 5


class ProviderUnavailableError(EdgeDistillError):
    """The profile asks for an execution provider this onnxruntime does not have."""

    exit_code = 6


class BudgetExceededError(EdgeDistillError):
    """No candidate meets the device's budgets."""

    exit_code = 7


class RemoteError(EdgeDistillError):
    """The device cannot be reached, refuses us, or lacks what the runner needs."""

    exit_code = 8


class EmulationError(EdgeDistillError):
    """qemu or the emulated aarch64 userland is missing or failed."""

    exit_code = 9


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice closest to `name`, for 'did you mean' hints."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A hint sentence naming the closest choice, else listing them all."""
    choices = sorted(choices)
    match = closest(name, choices)
    if match:
        return f"did you mean '{match}'? Valid: {', '.join(choices)}"
    return f"valid: {', '.join(choices)}"


def describe(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, short enough for a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
