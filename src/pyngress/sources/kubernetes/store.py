"""One kind's cache, fed by list and watch: objects by namespace/name, and the resourceVersion reached. Pure.

An `Entry` keeps what the controller needs of one object: the parsed model object (None when the object is
malformed: its Problems say why), its resourceVersion, and the raw `status` (status publishing compares it
with what it would write). `apply` takes one watch event, `replace` takes a full relist; both return the
`Change`s they made, so the caller sees exactly what happened, including the deletes that happened while a
watch was down (a relist after 410 Gone finds them missing, and `replace` reports them as DELETED).

`Change.spec_changed` is false when only the resourceVersion or the status moved: a status write (ours, or a
LoadBalancer controller's) must not trigger a rebuild, or two replicas would keep each other busy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyngress.model import KubeObject, Problem

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(frozen=True, slots=True)
class Entry:
    resource_version: str
    obj: KubeObject | None
    problems: tuple[Problem, ...] = ()
    status: Any = None  # the raw status (Ingress, Service): compared by status publishing


@dataclass(frozen=True, slots=True)
class Change:
    type: str  # ADDED, MODIFIED or DELETED
    kind: str
    key: str  # namespace/name ("/name" for cluster-scoped objects)
    old: Entry | None
    new: Entry | None

    @property
    def spec_changed(self) -> bool:
        """Whether the parsed object (what routing reads) differs, not just resourceVersion or status."""
        old_obj = (self.old.obj, self.old.problems) if self.old else None
        new_obj = (self.new.obj, self.new.problems) if self.new else None
        return old_obj != new_obj


@dataclass(slots=True)
class Store:
    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)
    resource_version: str = ""  # the last one seen in a list, event or bookmark; "" before the first list

    def apply(self, event_type: str, key: str, entry: Entry) -> Change | None:
        """Apply one ADDED/MODIFIED/DELETED watch event; None when it changes nothing we hold."""
        self.resource_version = entry.resource_version or self.resource_version
        old = self.entries.get(key)
        if event_type == DELETED:
            if old is None:
                return None
            del self.entries[key]
            return Change(DELETED, self.kind, key, old, None)
        if old == entry:
            return None  # a replayed event we already hold
        self.entries[key] = entry
        return Change(MODIFIED if old is not None else ADDED, self.kind, key, old, entry)

    def bookmark(self, resource_version: str) -> None:
        self.resource_version = resource_version

    def replace(self, listed: Mapping[str, Entry], resource_version: str) -> list[Change]:
        """Make the cache equal to a full list; the changes are what the watch missed (or everything, at first)."""
        changes = [Change(DELETED, self.kind, k, old, None) for k, old in self.entries.items() if k not in listed]
        for key, entry in listed.items():
            old = self.entries.get(key)
            if old != entry:
                changes.append(Change(MODIFIED if old is not None else ADDED, self.kind, key, old, entry))
        self.entries = dict(listed)
        self.resource_version = resource_version
        return changes

    def objects(self) -> Iterable[KubeObject]:
        return (e.obj for e in self.entries.values() if e.obj is not None)

    def problems(self) -> Iterable[Problem]:
        return (p for e in self.entries.values() for p in e.problems)
