"""Typed dataclass fields and their rules (`choice`, `at_least`, `between`, `positive_ints`), and a
dict checked into such a dataclass (`build_dataclass`): each error names the dotted key, the file
or flag it came from (`origins`), what was expected, and the closest valid key. config.py declares
its sections with these."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import field
from typing import Any

from edge_distill.errors import ConfigError, did_you_mean


def choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


def at_least(default: float, minimum: float) -> Any:
    return field(default=default, metadata={"min": minimum})


def between(default: float, low: float, high: float) -> Any:
    return field(default=default, metadata={"min": low, "max": high})


def positive_ints(default: list[int], lengths: tuple[int, ...] | None = None, example: str = "") -> Any:
    """A list of positive integers; `lengths` lists the allowed lengths (None: any non-empty)."""
    return field(default_factory=lambda: list(default),
                 metadata={"item_min": 1, "lengths": lengths, **({"example": example} if example else {})})


def build_dataclass(cls: type, raw: dict[str, Any], origins: dict[str, str], prefix: list[str]) -> Any:
    """`cls` made from `raw` (nested dataclasses from tables), every value checked by its type and
    its field's rules; `prefix` is the dotted path of `raw` itself."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        path = prefix + [key]
        dotted = ".".join(path)
        if key not in fields:
            where = origins.get(dotted, "config")
            kind = "section" if not prefix else "key"
            raise ConfigError(f"{where}: unknown {kind} '{dotted}'", did_you_mean(key, fields))
        expected = hints[key]
        if dataclasses.is_dataclass(expected):
            if not isinstance(value, dict):
                raise ConfigError(f"{origins.get(dotted, 'config')}: '{dotted}' must be a table [{dotted}]")
            values[key] = build_dataclass(expected, value, origins, path)
        else:
            values[key] = _check_value(dotted, value, expected, fields[key].metadata, origins)
    return cls(**values)


def _check_value(dotted: str, value: Any, expected: Any, meta: Any, origins: dict[str, str]) -> Any:
    where = origins.get(dotted, "config")
    origin = typing.get_origin(expected)
    if origin is dict:
        value_type = typing.get_origin(typing.get_args(expected)[1]) or typing.get_args(expected)[1]
        if not isinstance(value, dict) or not all(_is_type(v, value_type) for v in value.values()):
            what = "table of tables" if value_type is dict else f"table of {value_type.__name__} values"
            raise ConfigError(f"{where}: '{dotted}' must be a {what}, got {value!r}", _example(meta))
        return dict(value)
    if origin is list:
        (item_type,) = typing.get_args(expected)
        if not isinstance(value, list) or not all(_is_type(v, item_type) for v in value):
            raise ConfigError(f"{where}: '{dotted}' must be a list of {item_type.__name__}, got {value!r}", _example(meta))
        for i, item in enumerate(value):
            if "table" in meta:
                _check_table(f"{dotted}[{i}]", item, meta["table"], where, _example(meta))
            if item_type is float and not math.isfinite(item):
                raise ConfigError(f"{where}: '{dotted}[{i}]' = {item!r} is not a finite number")
            if "item_min" in meta and item < meta["item_min"]:
                raise ConfigError(f"{where}: '{dotted}[{i}]' = {item!r} is below the minimum {meta['item_min']}",
                                  _example(meta))
        if "lengths" in meta:
            lengths = meta["lengths"]
            if (lengths is None and not value) or (lengths is not None and len(value) not in lengths):
                expected_len = "at least 1" if lengths is None else " or ".join(map(str, lengths))
                raise ConfigError(f"{where}: '{dotted}' has {len(value)} item(s), expected {expected_len}",
                                  _example(meta))
        return [float(v) for v in value] if item_type is float else list(value)
    if not _is_type(value, expected):
        raise ConfigError(f"{where}: '{dotted}' must be {expected.__name__}, got {value!r}")
    if expected is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: '{dotted}' = {value!r} is not a finite number", "give a real number")
    if "pattern" in meta and not re.fullmatch(meta["pattern"][0], value):
        raise ConfigError(f"{where}: '{dotted}' = {value!r} is not valid: expected {meta['pattern'][1]}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where}: '{dotted}' = {value!r} is not valid", did_you_mean(str(value), meta["choices"]))
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{where}: '{dotted}' = {value!r} is below the minimum {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{where}: '{dotted}' = {value!r} is above the maximum {meta['max']}")
    return value


def _example(meta: Any) -> str | None:
    return f"e.g. {meta['example']}" if "example" in meta else None


def _check_table(dotted: str, item: dict, keys: dict[str, type], where: str, hint: str | None) -> None:
    """A small inline table such as {width = 32, depth = 2}: exactly these keys, positive integers."""
    for key in item:
        if key not in keys:
            raise ConfigError(f"{where}: unknown key '{key}' in '{dotted}'", did_you_mean(key, keys))
    for key, kind in keys.items():
        if key not in item or not _is_type(item[key], kind) or item[key] < 1:
            raise ConfigError(f"{where}: '{dotted}.{key}' must be a positive integer, got {item.get(key)!r}", hint)


def _is_type(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)
