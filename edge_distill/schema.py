"""Declared shapes of the files the project reads (bundle manifests, device inventories, a text
teacher's config files): one schema per file kind, checked once where the file is read, so every
command that reads it gets the same one-line error naming the file and the key, never a traceback
halfway through.

    MANIFEST = Obj({"model": Obj({"file": Str()}, required={"file"}), ...}, required={...})
    check(value, MANIFEST, "bundle/manifest.json", BundleError, hint="rebuild the bundle")

A low module: it imports nothing of ours but errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_distill.errors import EdgeDistillError


class Schema:
    expected: str = "a value"

    def problem(self, value: Any, key: str) -> tuple[str, str, Any] | None:
        """(key, what was expected, the value found) for the first value that does not fit; else None."""
        raise NotImplementedError


@dataclass(frozen=True)
class Any_(Schema):
    expected: str = "a value"

    def problem(self, value, key):
        return None


@dataclass(frozen=True)
class Str(Schema):
    nonempty: bool = False
    max_length: int = 4096
    expected: str = "a string"

    def problem(self, value, key):
        fits = (isinstance(value, str) and "\0" not in value and len(value) <= self.max_length
                and (value or not self.nonempty))
        return None if fits else (key, self.expected + ("" if self.expected != "a string" else
                                                        f" (no NUL bytes, at most {self.max_length} characters)"), value)


@dataclass(frozen=True)
class Int(Schema):
    min: int | None = None
    max: int | None = None
    expected: str = ""

    def __post_init__(self):
        if not self.expected:
            bounds = (f" from {self.min} to {self.max}" if self.min is not None and self.max is not None else
                      f" >= {self.min}" if self.min is not None else f" <= {self.max}" if self.max is not None else "")
            object.__setattr__(self, "expected", f"an integer{bounds}")

    def problem(self, value, key):
        fits = (isinstance(value, int) and not isinstance(value, bool) and (self.min is None or value >= self.min)
                and (self.max is None or value <= self.max))
        return None if fits else (key, self.expected, value)


@dataclass(frozen=True)
class Num(Schema):
    """A finite number (int or float, not bool), optionally bounded."""
    min: float | None = None
    positive: bool = False
    expected: str = ""

    def __post_init__(self):
        if not self.expected:
            bound = " > 0" if self.positive else "" if self.min is None else f" >= {self.min:g}"
            object.__setattr__(self, "expected", f"a finite number{bound}")

    def problem(self, value, key):
        fits = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and (self.min is None or value >= self.min) and (not self.positive or value > 0))
        return None if fits else (key, self.expected, value)


@dataclass(frozen=True)
class Bool(Schema):
    expected: str = "true or false"

    def problem(self, value, key):
        return None if isinstance(value, bool) else (key, self.expected, value)


@dataclass(frozen=True)
class OneOf(Schema):
    choices: tuple = ()

    def problem(self, value, key):
        return None if value in self.choices else (key, "one of " + ", ".join(map(repr, self.choices)), value)


@dataclass(frozen=True)
class Null(Schema):
    expected: str = "null"

    def problem(self, value, key):
        return None if value is None else (key, self.expected, value)


@dataclass(frozen=True)
class Either(Schema):
    """The first of `options` that fits; the error names them all."""
    options: tuple = ()

    def __init__(self, *options: Schema):
        object.__setattr__(self, "options", options)

    @property
    def expected(self) -> str:
        return " or ".join(option.expected for option in self.options)

    def problem(self, value, key):
        if any(option.problem(value, key) is None for option in self.options):
            return None
        return key, self.expected, value


@dataclass(frozen=True)
class ListOf(Schema):
    item: Schema = Any_()
    min_length: int = 0
    max_length: int = 1_000_000
    expected: str = ""

    def problem(self, value, key):
        if not isinstance(value, list) or not self.min_length <= len(value) <= self.max_length:
            size = "a non-empty list" if self.min_length == 1 else "a list"
            return key, self.expected or f"{size} of {self.item.expected}", value
        return next((found for i, v in enumerate(value) if (found := self.item.problem(v, f"{key}[{i}]"))), None)


@dataclass(frozen=True)
class MapOf(Schema):
    """An object whose keys are free (file names, output names) and whose values share a schema."""
    value: Schema = Any_()
    nonempty: bool = False
    key_schema: Schema = Str()
    expected: str = ""

    def problem(self, value, key):
        if not isinstance(value, dict) or (self.nonempty and not value):
            return key, self.expected or f"{'a non-empty' if self.nonempty else 'an'} object of name -> " \
                                         f"{self.value.expected}", value
        for name, item in value.items():
            found = self.key_schema.problem(name, f"{key} key") or self.value.problem(item, f"{key}.{name}")
            if found:
                return found
        return None


@dataclass(frozen=True)
class Obj(Schema):
    """An object with known keys; `required` must be there, others may be; unknown keys are allowed
    (a newer writer may add some) unless `closed`."""
    fields: Mapping[str, Schema] = field(default_factory=dict)
    required: frozenset | set = frozenset()
    closed: bool = False
    expected: str = "an object"

    def problem(self, value, key):
        if not isinstance(value, dict):
            return key, self.expected, value
        missing = sorted(set(self.required) - set(value))
        if missing:
            return _join(key, missing[0]), "present", _MISSING
        if self.closed and set(value) - set(self.fields):
            extra = sorted(map(str, set(value) - set(self.fields)))[0]
            return _join(key, extra), f"absent (known keys: {', '.join(sorted(self.fields))})", value[extra]
        return next((found for name, schema in self.fields.items()
                     if name in value and (found := schema.problem(value[name], _join(key, name)))), None)


class _Missing:
    def __repr__(self) -> str:
        return "nothing"


_MISSING = _Missing()


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error message quotes it: short, on one line, NULs visible."""
    text = repr(value)
    if isinstance(value, (dict, list)):
        text = f"{'an object' if isinstance(value, dict) else 'a list'} of {len(value)} item(s)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check(value: Any, schema: Schema, where: str, error: type[EdgeDistillError], hint: str | None = None) -> Any:
    """`value` if it fits `schema`; else `error("<where>: '<key>' must be <expected>, got <value>")`."""
    found = schema.problem(value, "")
    if found is None:
        return value
    key, expected, got = found
    if got is _MISSING:
        raise error(f"{where}: missing '{key}'", hint)
    subject = f"'{key}'" if key else "the file"
    raise error(f"{where}: {subject} must be {expected}, got {shown(got)}", hint)
