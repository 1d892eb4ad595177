"""The access-log annotation of an Ingress (issue 8): `enable-access-log`, as ingress-nginx reads it.

`pyngress.io/enable-access-log` or `nginx.ingress.kubernetes.io/enable-access-log: "false"` turns the access
log off for the paths of that Ingress (typically a health-check or metrics endpoint that would drown the log);
their requests are still counted in the metrics. The ConfigMap's `enable-access-log` / `disable-access-log`
is the controller-wide switch: an Ingress cannot turn the log on when the ConfigMap turned it off.
"""

from __future__ import annotations

from pyngress.config.annotations import Annotations
from pyngress.config.settings import parse_bool
from pyngress.model import Ingress, Problem


def access_log_enabled(ingress: Ingress) -> tuple[bool, list[Problem]]:
    notes = Annotations(ingress)
    value = notes.parsed("enable-access-log", "true", lambda v: str(parse_bool(v)).lower())
    return value == "true", notes.problems
