"""The config core: manifests -> model objects -> Snapshot, plus the `pyngress check` report. Pure: no I/O
except `load_paths` / `build_from_paths` reading files, no asyncio, no clock.

    objects, problems = load_paths(["manifests/"])        # loader + manifests/ingress (validation)
    snapshot = compile_snapshot(objects, CompileOptions(), version=1, problems=problems)
    print(format_check(snapshot))

`parse_manifest(doc, source)` turns one decoded object (a YAML document, or a JSON object from the API server)
into a model object plus Problems; the cluster source can use it to get the same validation as file mode.
"""

from pyngress.config.compile import build_from_paths, compile_snapshot
from pyngress.config.loader import load_paths
from pyngress.config.manifests import parse_manifest
from pyngress.config.report import format_check
from pyngress.config.selection import CompileOptions
from pyngress.config.settings import parse_settings

__all__ = [
    "CompileOptions",
    "build_from_paths",
    "compile_snapshot",
    "format_check",
    "load_paths",
    "parse_manifest",
    "parse_settings",
]
