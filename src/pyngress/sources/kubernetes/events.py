"""Watch stream decoding and object-to-entry conversion. Pure.

A watch response is one JSON object per line: `{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR",
"object": {...}}`. A BOOKMARK carries only `metadata.resourceVersion` (the API server's promise that every
event up to it was sent). An ERROR carries a `Status`; code 410 (Gone, "too old resource version") means the
history we asked to resume from was compacted: the only way on is a fresh list.

Objects from a list have no `kind`/`apiVersion` (the List has them), so `to_entry` sets them from the
Resource before parsing with the same `parse_manifest` file mode uses: a cluster object gets exactly the
validation, defaults and Problems a file would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pyngress.config import parse_manifest
from pyngress.sources.kubernetes.resources import Resource
from pyngress.sources.kubernetes.store import Entry

BOOKMARK, ERROR = "BOOKMARK", "ERROR"
STATUS_KINDS = ("Ingress", "Service")  # kinds whose raw status we keep (status publishing reads them)
SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt", "auth"}  # a Secret with one of these may be used (see below)


class WatchDecodeError(ValueError):
    """A line of the watch stream that is not a watch event: the stream cannot be trusted past it."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))

    @property
    def error_code(self) -> int:
        """The Status code of an ERROR event (410 for Gone); 0 otherwise."""
        code = self.object.get("code", 0) if self.type == ERROR else 0
        return code if isinstance(code, int) else 0


def decode_event(line: bytes) -> WatchEvent:
    try:
        doc = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WatchDecodeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str) or not isinstance(doc.get("object"),
                                                                                            dict):
        raise WatchDecodeError("not a watch event")
    return WatchEvent(doc["type"], doc["object"])


def object_key(raw: dict[str, Any]) -> str:
    meta = raw.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def to_entry(resource: Resource, raw: dict[str, Any]) -> Entry:
    rv = str((raw.get("metadata") or {}).get("resourceVersion", ""))
    if resource.kind == "Secret" and not is_useful_secret(raw):
        return Entry(rv, None)  # remembered by version only: its data is never decoded nor held
    doc = {**raw, "kind": resource.kind, "apiVersion": resource.api_version}
    obj, problems = parse_manifest(doc)
    status = raw.get("status") if resource.kind in STATUS_KINDS else None
    return Entry(rv, obj, tuple(problems), status)


def is_useful_secret(raw: dict[str, Any]) -> bool:
    """TLS certificates (`kubernetes.io/tls`, or any Secret with tls.crt/tls.key), CA bundles (ca.crt, for
    client certificate checks) and basic-auth files (`auth`), as ingress-nginx reads them. Service account
    tokens, docker configs and application Secrets are not kept: in a big cluster they are most of the
    Secrets, and nothing in pyngress reads them."""
    if raw.get("type") == "kubernetes.io/tls":
        return True
    keys = {*(raw.get("data") or {}), *(raw.get("stringData") or {})}
    return bool(keys & SECRET_KEYS)
