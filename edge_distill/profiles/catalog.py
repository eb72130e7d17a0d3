"""The device profiles shipped with the package (one TOML file per device, beside this module),
and resolving a profile name or path."""

from __future__ import annotations

from pathlib import Path

from edge_distill.errors import ProfileNotFoundError, did_you_mean
from edge_distill.files import regular_file

PROFILE_DIR = Path(__file__).parent


def list_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def profile_path(name_or_path: str) -> tuple[str, Path]:
    """A shipped profile's name, or a path to the user's own .toml -> (name, file)."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.exists():
            raise ProfileNotFoundError(f"{candidate}: profile file not found", "check the path")
        regular_file(candidate, "profile", ProfileNotFoundError)
        return candidate.stem, candidate
    if name_or_path in list_profiles():
        return name_or_path, PROFILE_DIR / f"{name_or_path}.toml"
    raise ProfileNotFoundError(
        f"unknown profile '{name_or_path}'",
        did_you_mean(name_or_path, list_profiles()) + "; or pass a path to your own .toml",
    )
