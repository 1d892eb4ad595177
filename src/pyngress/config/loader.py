"""Read manifests from files and directories: `load_paths(paths) -> (objects, problems)`.

Each path is a file or a directory; a directory is read recursively and only its *.yaml, *.yml and *.json files
are used (a file named explicitly is read whatever its suffix). Files are read in sorted order so that the
result, and so the Snapshot, is the same on every run.

A file holds one or more YAML documents (JSON is read as JSON for its better error messages); a document of kind
`List` (what `kubectl get -o yaml` prints) or `<Kind>List` contributes its `items`. Empty documents are skipped.
What becomes a Problem (named after the file, and the document when there is no object to name): an unreadable
file, a YAML/JSON syntax error (documents before the error are kept), a document that is not a mapping, a
mapping without `kind`, and whatever `manifests.parse_manifest` finds wrong in a known kind.

YAML timestamps are left as strings: `creationTimestamp: 2024-01-01T00:00:00Z` written without quotes must
compare as the same RFC 3339 text the API server would return.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from pyngress.config.manifests import parse_manifest
from pyngress.model import KubeObject, Problem

SUFFIXES = (".yaml", ".yml", ".json")

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type, misc]
    """SafeLoader without the implicit timestamp type (see the module docstring)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def load_paths(paths: Sequence[str | Path]) -> tuple[list[KubeObject], list[Problem]]:
    objects: list[KubeObject] = []
    problems: list[Problem] = []
    for file in _files(paths, problems):
        for where, doc in _documents(file, problems):
            _collect(doc, str(file), where, objects, problems)
    return objects, problems


def _files(paths: Sequence[str | Path], problems: list[Problem]) -> Iterator[Path]:
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.is_file():
            yield path
        else:
            problems.append(_problem(str(path), "file", path.name, "no such file or directory"))


def _documents(file: Path, problems: list[Problem]) -> Iterator[tuple[str, Any]]:
    """(document number as text, decoded document) for each document of `file`."""
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(_problem(source, "file", file.name, f"cannot read: {e}"))
        return
    if file.suffix == ".json":
        try:
            yield "1", json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(_problem(source, "file", file.name, f"JSON syntax error: {e}"))
        return
    index = 0
    try:
        for index, doc in enumerate(yaml.load_all(text, Loader=_Loader), start=1):
            yield str(index), doc
    except yaml.YAMLError as e:
        problems.append(_problem(source, "document", str(index + 1), _yaml_message(e)))


def _collect(doc: Any, source: str, where: str, objects: list[KubeObject], problems: list[Problem]) -> None:
    """Parse one document (or List item; `where` is its number in its file or List) into `objects`."""
    if doc is None:
        return
    if not isinstance(doc, dict):
        problems.append(_problem(source, "document", where, "not a mapping (a Kubernetes object)"))
        return
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        problems.append(_problem(source, "document", where, "no kind: not a Kubernetes object"))
        return
    if kind.endswith("List") and isinstance(doc.get("items"), list):
        for i, item in enumerate(doc["items"]):
            _collect(item, source, f"{where}.items[{i}]", objects, problems)
        return
    obj, found = parse_manifest(doc, source)
    problems.extend(found)
    if obj is not None:
        objects.append(obj)


def _yaml_message(error: yaml.YAMLError) -> str:
    """ "YAML syntax error at line 8, column 1: did not find expected ',' (while parsing a flow sequence)"."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return f"YAML syntax error: {' '.join(str(error).split())}"
    context = getattr(error, "context", None)
    return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}" + (
        f" ({context})" if context else ""
    )


def _problem(source: str, kind: str, name: str, message: str) -> Problem:
    # no Kubernetes object to name: str() reads "a.yaml: document 2: not a mapping (a Kubernetes object)"
    return Problem(kind, "", name, "", message, source)
