"""Publishing an output folder (a bundle, a sequence-distillation output) without ever losing a
user's files: a folder is replaced only when it is provably one of ours and holds nothing else,
and the new one appears whole or not at all (built beside it, then renamed into place)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_distill.errors import FileSystemError, InputFileError
from edge_distill.staging import make_staging, remove_leftovers


@dataclass(frozen=True)
class OutputKind:
    what: str  # "bundle", for messages
    marker: str  # the file that says a folder is ours
    owned: Callable[[Path], set[str] | None]  # the files an earlier output of this kind may hold; None: not ours


def _bundle_files(folder: Path) -> set[str] | None:
    from edge_distill.bundle.integrity import UNHASHED_FILES

    manifest = _read_json_object(folder / "manifest.json")
    generator = manifest.get("generator") if manifest else None
    files = manifest.get("files") if manifest else None
    ours = (isinstance(generator, dict) and generator.get("name") == "edge-distill"
            and isinstance(manifest.get("schema_version"), int) and isinstance(files, dict))
    return set(files) | set(UNHASHED_FILES) if ours else None


def _sequence_files(folder: Path) -> set[str] | None:
    from edge_distill.distill.sequence_settings import OUTPUTS

    report = _read_json_object(folder / "sequence.json")
    return set(OUTPUTS) if report and isinstance(report.get("models"), dict) else None


def _read_json_object(path: Path) -> dict | None:
    from edge_distill.errors import EdgeDistillError
    from edge_distill.files import read_json

    if not path.is_file():
        return None
    try:
        value = read_json(path)
    except EdgeDistillError:
        return None
    return value if isinstance(value, dict) else None


BUNDLE = OutputKind("bundle", "manifest.json", _bundle_files)
SEQUENCE_OUTPUT = OutputKind("sequence-distillation output", "sequence.json", _sequence_files)
OUTPUT_KINDS = (BUNDLE, SEQUENCE_OUTPUT)


def enclosing_output(path: Path) -> tuple[Path, OutputKind] | None:
    """The output of ours (a bundle, a sequence output) that a folder above `path` is, if any:
    writing below it would add files its manifest does not list, and `verify` would fail it."""
    for parent in Path(os.path.abspath(path)).parents:
        for kind in OUTPUT_KINDS:
            if (parent / kind.marker).is_file() and kind.owned(parent) is not None:
                return parent, kind
    return None


def check_out(out: Path, kind: OutputKind = BUNDLE) -> None:
    """Raise unless `out` can be written: absent (below a writable folder), empty, or an earlier
    output of `kind` holding only the files that output lists. Called before any work starts."""
    inside = enclosing_output(out)
    if inside is not None:
        raise InputFileError(f"--out {out}: inside the edge-distill {inside[1].what} {inside[0]}, which it would "
                             "change (its manifest lists every file); nothing was changed",
                             "choose an --out outside it")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputFileError(f"--out {out}: {parent} is a file, not a folder", "choose another --out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputFileError(f"--out {out}: cannot write in {parent} (permission denied)",
                                     "choose a folder you can write to")
            break
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise InputFileError(f"--out {out}: exists and is not a folder", "choose another --out")
    if next(out.iterdir(), None) is None:
        return
    owned = kind.owned(out)
    if owned is None:
        raise InputFileError(f"--out {out}: exists and is not an edge-distill {kind.what} "
                             f"(no edge-distill {kind.marker}); nothing was changed",
                             "choose another --out, or empty that folder yourself")
    # Walked without following symlinks, and only once the folder is ours. A symlink is always the
    # user's (we never write one), even under a name the earlier output lists.
    entries, links = [], []
    for folder, subfolders, names in os.walk(out):
        for name in [*subfolders, *names]:
            relative = (Path(folder) / name).relative_to(out).as_posix()
            (links if (Path(folder) / name).is_symlink() else entries).append(relative)
    folders = {parent.as_posix() for name in owned for parent in Path(name).parents}
    # Foreign files, and foreign folders only when empty (a folder with files is named by its files).
    foreign = sorted(links + [name for name in entries if name not in owned and name not in folders
                              and not ((out / name).is_dir() and any((out / name).iterdir()))])
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputFileError(f"--out {out}: holds files the earlier {kind.what} does not list: {shown}; "
                             "nothing was changed", "move those files out of the folder, or choose another --out")


def publish(files: dict[str, Path], out: Path, kind: OutputKind = BUNDLE) -> None:
    """Copy `files` into `out` so that it appears whole or not at all (temp folder, then rename).
    An existing `out` is replaced only if `check_out` allows it."""
    check_out(out, kind)
    if out.parent.is_dir():
        for prefix in (f".{out.name}.tmp-", f".{out.name}.old-"):  # what a killed publish left beside `out`
            remove_leftovers(out.parent, prefix)
    staged = make_staging(out.parent, f".{out.name}.tmp-")
    staged.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        for name, source in files.items():
            try:
                shutil.copyfile(source, staged / name)
            except OSError as e:  # its filename may be the cache file read, not the folder that is full
                raise FileSystemError.from_os_error(OSError(e.errno, e.strerror, str(staged / name))) from None
        if out.exists():
            retired = make_staging(out.parent, f".{out.name}.old-")
            out.rename(retired / out.name)
            try:
                staged.rename(out)
            except OSError:
                (retired / out.name).rename(out)  # the earlier bundle goes back where it was
                retired.rmdir()
                raise
            shutil.rmtree(retired)
        else:
            staged.rename(out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
