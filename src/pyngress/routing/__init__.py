"""Request routing: `RouteTable.match(host, normalize_path(path))` -> Route or None. Pure, no I/O.

The runtime builds one RouteTable per Snapshot (`RouteTable(snapshot.routes)`) and calls, per request,
`table.match(host_header, normalize_path(path_without_query))`; None means `snapshot.default_backend`, or 404.
"""

from pyngress.routing.normalize import normalize_path
from pyngress.routing.table import RouteTable, canonical_host

__all__ = ["RouteTable", "canonical_host", "normalize_path"]
