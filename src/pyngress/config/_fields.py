"""Typed access to the untyped dicts of a manifest, with the field path of every value.

A manifest is whatever YAML or JSON gave us: any key may be missing or of the wrong type. The parsers in
`manifests` and `ingress` read it through these helpers, which either return a value of the promised type or
raise `ManifestError(field, message)`; the caller decides how much of the object that error takes down (one
path, one rule, or the whole object) and turns it into a `Problem`.

Field paths are written the way `kubectl explain` and the API server write them: `spec.rules[0].http.paths[1]`.

Scalars in string maps (labels, annotations, ConfigMap data) are coerced: `replicas: 3` or `enabled: true`
written without quotes is a common slip that the API server rejects; we accept it as the string the user meant
("3", "true"), because refusing a whole ConfigMap for a missing pair of quotes helps nobody.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


class ManifestError(Exception):
    """A value of a manifest is missing or malformed. `field` is its path inside the object."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def mapping(value: Any, field: str, *, required: bool = False) -> Mapping[str, Any]:
    """A mapping, or an empty one when absent (null counts as absent, as in the API)."""
    if value is None:
        if required:
            raise ManifestError(field, "required value")
        return {}
    if not isinstance(value, Mapping):
        raise ManifestError(field, f"must be a mapping, not {_type_name(value)}")
    return value


def sequence(value: Any, field: str) -> list[Any]:
    """A list, or an empty one when absent."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(field, f"must be a list, not {_type_name(value)}")
    return value


def string(value: Any, field: str, *, default: str | None = None) -> str:
    if value is None:
        if default is None:
            raise ManifestError(field, "required value")
        return default
    if not isinstance(value, str):
        raise ManifestError(field, f"must be a string, not {_type_name(value)}")
    return value


def optional_string(value: Any, field: str) -> str | None:
    return None if value is None else string(value, field)


def integer(value: Any, field: str, *, low: int, high: int) -> int:
    # bool is an int subclass in Python: `port: true` must not become port 1
    if isinstance(value, bool) or not isinstance(value, int):
        if value is None:
            raise ManifestError(field, "required value")
        raise ManifestError(field, f"must be an integer, not {_type_name(value)}")
    if not low <= value <= high:
        raise ManifestError(field, f"must be between {low} and {high}, not {value}")
    return value


def boolean(value: Any, field: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ManifestError(field, f"must be true or false, not {value!r}")
    return value


def string_map(value: Any, field: str) -> Mapping[str, str]:
    """labels, annotations, ConfigMap data: str -> str, scalars coerced (see the module docstring)."""
    items = mapping(value, field)
    out: dict[str, str] = {}
    for key in sorted(items, key=str):
        out[str(key)] = _scalar_text(items[key], f"{field}.{key}")
    return MappingProxyType(out)


def _scalar_text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return ""
    raise ManifestError(field, f"must be a string, not {_type_name(value)}")


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}
    for cls, name in names.items():
        if isinstance(value, cls):
            return name
    return "null" if value is None else type(value).__name__
