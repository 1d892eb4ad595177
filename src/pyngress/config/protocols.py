"""`backend-protocol`: how the proxy talks to the pods of an Ingress (ingress-nginx's annotation, issue 4).

- `HTTP` (default): HTTP/1.1 over the keep-alive pool, whatever the client speaks;
- `GRPC`: HTTP/2 in clear text (h2c, prior knowledge) to the pod, stream to stream, trailers kept;
- `GRPCS`: the same over TLS (ALPN h2), with the `proxy-ssl-*` settings `config.tls` reads for it;
- `HTTPS`: HTTP/1.1 over TLS (re-encryption, `config.tls`).
`config.tls` reads the same annotation for the TLS side and reports values that are not ingress-nginx's; this
module reports ingress-nginx's values we do not serve (`AUTO_HTTP`, `FCGI`: an error, the Ingress is served
with `HTTP`). Values are case-insensitive, as ingress-nginx reads them.
"""

from __future__ import annotations

from pyngress.config.annotations import Annotations
from pyngress.config.tls_upstream import BACKEND_PROTOCOLS as KNOWN
from pyngress.model import Ingress, Problem

SERVED = ("HTTP", "HTTPS", "GRPC", "GRPCS")


def backend_protocol(ingress: Ingress) -> tuple[str, list[Problem]]:
    # config.tls reads the same annotation and reports what is wrong with it in general (unknown values, both
    # prefixes set): here only what is ours to say, so that nothing is reported twice
    found = Annotations(ingress).get("backend-protocol")
    value = found[1].strip().upper() if found is not None else "HTTP"
    if value in SERVED:
        return value, []
    if found is None or value not in KNOWN:
        return "HTTP", []
    return "HTTP", [Problem("Ingress", ingress.meta.namespace, ingress.meta.name,
                            f"metadata.annotations[{found[0]}]",
                            f"{found[1]!r} is not supported (only {', '.join(SERVED)}); using HTTP",
                            ingress.meta.source)]
