"""File mode: manifests on disk -> Snapshots, reloaded when the files change or on SIGHUP.

Theory of operation. `load_initial()` builds version 1 synchronously at start-up. `run()` then polls: every
`interval` seconds it takes a cheap signature of the inputs (path, mtime_ns, size and inode of every manifest
file; a new or deleted file changes it too), and only when that differs does it rebuild. `request_reload()`
(the SIGHUP handler) wakes the loop through an asyncio.Event and forces a rebuild now. Polling rather than
inotify: it works the same on every platform, in containers and on network file systems, and one stat per
file per second costs nothing.

A rebuild reads and compiles in a worker thread (`asyncio.to_thread`): compiling may take milliseconds to
seconds and must never stall the event loop that forwards traffic. The loop is level-triggered and coalesces:
the signature is taken *before* reading, so a change made during a rebuild is seen at the next poll, and any
number of wake-ups during a rebuild collapse into one rerun.

A rebuild that compiles to the same Snapshot as the one serving (ignoring `version`) is a no-op: an editor
rewriting a file with the same content does not swap anything. Otherwise the new Snapshot gets the next
version and is handed to `apply` (the server's swap). **The last good configuration keeps serving** when the
new one cannot be trusted as a whole: a manifest file that could not be read or parsed (its objects would
silently vanish, taking their routes down), or an exception from the compiler (a bug). Per-object problems
are not a reason to reject: the compiler already leaves out just the bad objects and reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path

from pyngress.config import CompileOptions, build_from_paths
from pyngress.model import Problem, Snapshot
from pyngress.observability import events

SUFFIXES = (".yaml", ".yml", ".json")

Signature = tuple[tuple[str, int, int, int], ...]


class Outcome(Enum):
    """What one poll did."""

    UNCHANGED_FILES = "unchanged files"
    UNCHANGED_CONFIG = "unchanged configuration"
    APPLIED = "applied"
    REJECTED = "rejected"


def is_unreadable_input(problem: Problem) -> bool:
    """A load problem that means part of the input is missing, not just one bad object.

    `config.load_paths` reports these without a namespace, as kind "file" (cannot read the file or JSON
    syntax error, which loses the whole file) or as kind "document" with a YAML syntax error (the documents
    after the error are lost). A document that parsed but is not an object is a per-object problem.
    """
    if problem.namespace:
        return False
    if problem.kind in ("", "file", "File"):
        return True
    return problem.kind == "document" and "syntax error" in problem.message


def signature(paths: Sequence[Path]) -> Signature:
    """(path, mtime_ns, size, inode) of every input file, sorted: what `load_paths` would read.

    A file that vanishes between listing and stat, or a path that does not exist, is simply absent (its
    disappearance is the change). The inode catches an editor's save-by-rename that keeps mtime and size.
    """
    found: list[tuple[str, int, int, int]] = []
    for root in paths:
        files = root.rglob("*") if root.is_dir() else (root,)
        for file in files:
            if root.is_dir() and file.suffix not in SUFFIXES:
                continue
            try:
                st = os.stat(file)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((str(file), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(sorted(found))


class FileSource:
    def __init__(self, paths: Sequence[Path], options: CompileOptions, apply: Callable[[Snapshot], None], *,
                 interval: float = 1.0, log: logging.Logger | None = None) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self.options = options
        self.apply = apply
        self.interval = interval
        self.log = log or logging.getLogger(__name__)
        self.current: Snapshot | None = None
        self._signature: Signature = ()
        self._wake: asyncio.Event | None = None  # created in run(): it belongs to the running loop
        self._pending_reload = False

    def load_initial(self) -> Snapshot:
        """Build version 1 now (start-up: nothing serves yet, so even a partial config is better than none)."""
        self._signature = signature(self.paths)
        snapshot = build_from_paths(self.paths, self.options, version=1, now=time.time())  # certificate expiry
        for problem in snapshot.problems:
            self.log.warning("%s", problem)
        self._log_applied(snapshot)
        self.current = snapshot
        events.config_loaded(snapshot.version)
        return snapshot

    def request_reload(self) -> None:
        """Rebuild as soon as possible, whatever the signature says (SIGHUP). Safe to call from any callback."""
        self._pending_reload = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Poll forever (until cancelled). Call `load_initial()` first."""
        self._wake = asyncio.Event()
        if self._pending_reload:
            self._wake.set()
        while True:
            with contextlib.suppress(TimeoutError):  # the interval passed: poll
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            forced, self._pending_reload = self._pending_reload, False
            await self.poll(force=forced)

    async def poll(self, *, force: bool = False) -> Outcome:
        """One step of `run`: rebuild if the files changed (or `force`), and apply what changed."""
        latest = await asyncio.to_thread(signature, self.paths)
        if latest == self._signature and not force:
            return Outcome.UNCHANGED_FILES
        self._signature = latest  # before reading: a change made while we build is caught by the next poll
        return await self._rebuild()

    async def _rebuild(self) -> Outcome:
        assert self.current is not None, "load_initial() first"
        old = self.current
        try:
            new = await asyncio.to_thread(build_from_paths, self.paths, self.options, version=old.version + 1,
                                          now=time.time())
        except Exception as exc:  # a compiler bug must not take the proxy down with it
            return self._reject(f"internal error while compiling ({exc!r})", exc)
        unreadable = [p for p in new.problems if is_unreadable_input(p)]
        if unreadable:
            return self._reject("; ".join(map(str, unreadable)))
        if dataclasses.replace(new, version=old.version) == old:
            self.log.debug("files changed, configuration did not: still serving version %d", old.version)
            return Outcome.UNCHANGED_CONFIG
        try:
            self.apply(new)
        except Exception as exc:
            return self._reject(f"internal error while applying ({exc!r})", exc)
        self.current = new
        events.config_reload(True, new.version)
        for problem in sorted(set(new.problems) - set(old.problems), key=new.problems.index):
            self.log.warning("%s", problem)
        self._log_applied(new)
        return Outcome.APPLIED

    def _reject(self, reason: str, exc: BaseException | None = None) -> Outcome:
        assert self.current is not None
        events.config_reload(False, self.current.version)
        self.log.error("rejected configuration: %s; still serving version %d", reason, self.current.version,
                       exc_info=exc)
        return Outcome.REJECTED

    def _log_applied(self, snapshot: Snapshot) -> None:
        self.log.info("configuration version %d applied: %d routes, %d backends, %d problems", snapshot.version,
                      len(snapshot.routes), len(snapshot.backends), len(snapshot.problems))
