"""Where configuration comes from. Each source turns its input into Snapshots and hands them to `apply`.

- `files.FileSource`: manifests on disk, polled for changes, reloaded on SIGHUP (`pyngress run -f`).
"""

from pyngress.sources.files import FileSource, Outcome, is_unreadable_input

__all__ = ["FileSource", "Outcome", "is_unreadable_input"]
