"""Reading a user's files: every path the project reads goes through `regular_file` first, so a
folder, a FIFO, a socket or a device file is a one-line error instead of a misleading message or a
read that never ends; JSON and text come through `read_json` and `read_text`, bounded in size and
nesting, naming the file in every error.

A low module: it imports nothing of ours but errors.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from edge_distill.errors import EdgeDistillError, InputFileError

MAX_JSON_DEPTH = 100  # our files nest about 6 levels; tokenizer.json about 5
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
MAX_JSON_BYTES = 256 * 1024**2  # manifests, golden copies, tokenizer.json (a 250k vocabulary is ~20 MB)
# A model folder's config.json, tokenizer_config.json and generation_config.json: tens of KB in real
# models (Gemma 3's tokenizer_config.json, with every added token, is 1.2 MB). Python's json holds a
# file of small values at 50 to 100 times its size: a 200 MB config.json took 22 GB.
MAX_CONFIG_BYTES = 16 * 1024**2

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def regular_file(path: Path, what: str = "", error: type[EdgeDistillError] = InputFileError) -> Path:
    """`path` if it is a regular file (symlinks followed); else `error` naming `what` and the path.
    Checked without opening it: opening a FIFO would wait for a writer forever."""
    named = f"{what} {path}" if what else str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{named}: file not found", "check the path") from None
    except OSError as e:
        raise error(f"{named}: cannot read it ({e.strerror})", "check the path and its permissions") from None
    if stat.S_ISDIR(mode):
        raise error(f"{named}: is a folder, expected a file", "give the file itself")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise error(f"{named}: is {kind}, not a regular file", "give a regular file")
    return path


def nesting_depth(text: str) -> int:
    """How deep JSON text nests its arrays and objects (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _BRACKETS.finditer(_STRINGS.sub('""', text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                break
    return deepest


def is_regular_file(path: Path) -> bool:
    """Whether `path` is a regular file (symlinks followed), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_text(path: Path, what: str = "", max_bytes: int = MAX_JSON_BYTES,
              error: type[EdgeDistillError] = InputFileError) -> str:
    """A regular UTF-8 text file of at most `max_bytes`."""
    named = f"{what} {path}" if what else str(path)
    size = regular_file(path, what, error).stat().st_size
    if size > max_bytes:
        raise error(f"{named}: {size:,} bytes, more than the {max_bytes:,} this file may hold", "check the file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{named}: not UTF-8 (byte {e.start}: {e.reason})", "convert it to UTF-8, e.g. iconv -f latin1 -t utf-8") from None


def read_json(path: Path, what: str = "", max_bytes: int = MAX_JSON_BYTES,
              error: type[EdgeDistillError] = InputFileError) -> Any:
    """A regular JSON file, bounded in size and nesting depth."""
    named = f"{what} {path}" if what else str(path)
    text = read_text(path, what, max_bytes, error)
    return parse_json(text, named, error)


def parse_json(text: str, named: str, error: type[EdgeDistillError] = InputFileError) -> Any:
    """JSON text, refused past MAX_JSON_DEPTH levels before the parser sees it: json.loads on
    200,000 levels exhausts the recursion limit, and freeing what it built can fail again inside
    Python's own error reporting, which then writes to stderr past any handler."""
    if nesting_depth(text) > MAX_JSON_DEPTH:
        raise error(f"{named}: nested too deeply to read (over {MAX_JSON_DEPTH} levels)", "check the file")
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{named}: nested too deeply to read", "check the file") from None
    except ValueError as e:
        raise error(f"{named}: not valid JSON ({e})", "check the file") from None


def allocated_memmap(path: Path, dtype, shape: tuple[int, ...]):
    """numpy's open_memmap for writing (an .npy file), with every block of the file allocated on
    disk first. The file numpy makes is sparse: on a disk that fills up while the array is written,
    the first page the disk cannot back kills the process with SIGBUS and no message. Allocated
    first, a full disk is an OSError (ENOSPC) naming the file, before anything is written."""
    import numpy as np

    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as e:
        path.unlink(missing_ok=True)  # the mapping goes with `array`, which nothing returns
        raise OSError(e.errno, e.strerror, str(path)) from None
    return array
