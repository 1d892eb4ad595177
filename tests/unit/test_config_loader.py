"""load_paths: files and directories, YAML and JSON, Lists, and a Problem for every unreadable document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyngress.config import load_paths
from pyngress.model import ConfigMap, Ingress, Service

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: %s}
spec: {ports: [{port: 80}]}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def names(objects: list[object]) -> list[str]:
    return [o.meta.name for o in objects]  # type: ignore[attr-defined]


def test_directory_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", SERVICE % "b")
    write(tmp_path / "a" / "z.yml", SERVICE % "az")
    write(tmp_path / "c.json", json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c"}}))
    write(tmp_path / "notes.txt", SERVICE % "ignored")
    objects, problems = load_paths([tmp_path])
    assert problems == []
    assert names(objects) == ["az", "b", "c"]
    assert objects[0].meta.source == str(tmp_path / "a" / "z.yml")


def test_file_named_explicitly_is_read_whatever_its_suffix(tmp_path: Path) -> None:
    objects, _ = load_paths([str(write(tmp_path / "svc.txt", SERVICE % "web"))])
    assert names(objects) == ["web"]


def test_multi_document_yaml_and_empty_documents(tmp_path: Path) -> None:
    text = f"---\n{SERVICE % 'one'}---\n---\n{SERVICE % 'two'}"
    objects, problems = load_paths([write(tmp_path / "m.yaml", text)])
    assert problems == [] and names(objects) == ["one", "two"]


def test_list_documents_contribute_their_items(tmp_path: Path) -> None:
    items = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}} for n in ("x", "y")]
    doc = {"apiVersion": "v1", "kind": "List", "items": [*items, {"kind": "Namespace", "metadata": {"name": "p"}}]}
    objects, problems = load_paths([write(tmp_path / "list.json", json.dumps(doc))])
    assert problems == [] and names(objects) == ["x", "y"]


def test_unknown_kinds_are_ignored_silently(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: p}\n---\napiVersion: apps/v1\nkind: Deployment\n"
    assert load_paths([write(tmp_path / "pods.yaml", text)]) == ([], [])


def test_yaml_syntax_error_is_a_problem_and_earlier_documents_are_kept(tmp_path: Path) -> None:
    text = f"{SERVICE % 'kept'}---\nkind: Service\nmetadata: {{name: [unclosed\n"
    path = write(tmp_path / "broken.yaml", text)
    objects, problems = load_paths([path])
    assert names(objects) == ["kept"]
    assert len(problems) == 1
    assert (problems[0].source, problems[0].kind, problems[0].name) == (str(path), "document", "2")
    assert problems[0].message.startswith("YAML syntax error at line 8, column 1: did not find expected")


def test_json_syntax_error_is_a_problem(tmp_path: Path) -> None:
    objects, problems = load_paths([write(tmp_path / "bad.json", "{nope")])
    assert objects == [] and "JSON syntax error" in problems[0].message


@pytest.mark.parametrize(
    ("text", "message"),
    [("- a\n- b\n", "not a mapping"), ("just text\n", "not a mapping"), ("metadata: {name: x}\n", "no kind")],
)
def test_documents_that_are_not_objects_are_problems(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "odd.yaml", f"{SERVICE % 'ok'}---\n{text}")
    objects, problems = load_paths([path])
    assert names(objects) == ["ok"]
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"{path}: document 2: {message}")


def test_missing_path_is_a_problem(tmp_path: Path) -> None:
    objects, problems = load_paths([tmp_path / "nothing-here"])
    assert objects == [] and problems[0].message == "no such file or directory"


def test_malformed_known_object_names_file_object_and_field(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: http}]}\n"
    path = write(tmp_path / "svc.yaml", text)
    objects, problems = load_paths([path])
    assert objects == []
    assert str(problems[0]) == f"{path}: Service shop/web: spec.ports[0].port: must be an integer, not a string"


def test_unsupported_api_version_is_a_problem(tmp_path: Path) -> None:
    text = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\nspec: {}\n"
    objects, problems = load_paths([write(tmp_path / "old.yaml", text)])
    assert objects == []
    assert problems[0].field == "apiVersion" and "unsupported apiVersion" in problems[0].message


def test_unquoted_timestamp_stays_rfc3339_text(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, creationTimestamp: 2024-01-02T03:04:05Z}\n"
    objects, _ = load_paths([write(tmp_path / "c.yaml", text)])
    assert isinstance(objects[0], ConfigMap)
    assert objects[0].meta.creation_timestamp == "2024-01-02T03:04:05Z"


def test_loading_twice_gives_equal_results(tmp_path: Path) -> None:
    write(tmp_path / "s.yaml", SERVICE % "web")
    write(tmp_path / "i.yaml", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec: {}\n")
    first, second = load_paths([tmp_path]), load_paths([tmp_path])
    assert first == second
    assert [type(o) for o in first[0]] == [Ingress, Service]
