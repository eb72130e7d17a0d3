"""Users' model factories ("package.module:function"), found without importing torch, so that
computing a cache key (a no-op rebuild) stays cheap."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from edge_distill.errors import ModelError


def import_factory(spec: str, role: str):
    """Resolve "package.module:function"; the working directory is importable, as for `python -m`."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"{role}.factory '{spec}' is not of the form 'package.module:function'")
    _importable_cwd()
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelError(f"{role}.factory: cannot import module '{module_name}' ({e})", "check the name and PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelError(f"{role}.factory: '{module_name}' has no callable '{attr}'")
    return fn


def factory_source(spec: str, role: str) -> Path | None:
    """The source file behind a factory, so a change to the user's code invalidates the cache.
    Found without running the module (its parent packages are imported, as Python must)."""
    if not spec:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"{role}.factory '{spec}' is not of the form 'package.module:function'")
    _importable_cwd()
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as e:
        found, reason = None, str(e)
    else:
        reason = f"No module named '{module_name}'"
    if found is None:
        raise ModelError(f"{role}.factory: cannot import module '{module_name}' ({reason})", "check the name and PYTHONPATH")
    return Path(found.origin) if found.origin and found.has_location else None


def _importable_cwd() -> None:
    """The working directory is importable, as for `python -m`."""
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
