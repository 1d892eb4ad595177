"""Session-affinity cookies: reading one from a request, writing the Set-Cookie that names the endpoint.

Pure functions. The attributes follow ingress-nginx's annotations (session-cookie-*): Path (the route's path
by default), Domain, Expires, Max-Age, Secure, SameSite, and HttpOnly always (the value is for us, never for
scripts). With `session-cookie-conditional-samesite-none`, SameSite=None is left out for the clients that
are known to reject or misread it (the list Chromium published with the SameSite change: iOS 12, Safari on
macOS 10.14, Chrome/Chromium 51 to 66, UC Browser before 12.13.2), so they keep their session.
"""

from __future__ import annotations

import re
from email.utils import formatdate

from pyngress.model import AffinitySpec


def cookie_value(header: bytes | None, name: bytes) -> bytes | None:
    """The value of cookie `name` in a Cookie header ("a=1; b=2"), or None. Per request on affinity routes:
    a search for "name=" at a pair boundary, no splitting of the whole header."""
    if not header:
        return None
    prefix = name + b"="
    at = header.find(prefix)
    while at > 0 and header[at - 1] not in b"; \t":  # "xname=" is another cookie: look further
        at = header.find(prefix, at + 1)
    if at < 0:
        return None
    start = at + len(prefix)
    end = header.find(b";", start)
    return (header[start:] if end < 0 else header[start:end]).strip().strip(b'"')


def set_cookie(spec: AffinitySpec, token: bytes, route_path: str, now: float, user_agent: bytes | None,
               https: bool = False) -> bytes:
    """The whole `Set-Cookie: ...\\r\\n` line. `now` is the wall clock (epoch seconds), for Expires.
    On an HTTPS connection the cookie is always `Secure` (it was set over TLS: keep it there)."""
    parts = [b"Set-Cookie: %s=%s; Path=%s" % (spec.cookie_name.encode(), token,
                                              (spec.cookie_path or route_path or "/").encode())]
    if spec.cookie_domain:
        parts.append(b"Domain=" + spec.cookie_domain.encode())
    if spec.expires:
        parts.append(b"Expires=" + formatdate(now + spec.expires, usegmt=True).encode())
    if spec.max_age:
        parts.append(b"Max-Age=%d" % spec.max_age)
    if spec.secure or https:
        parts.append(b"Secure")
    parts.append(b"HttpOnly")
    samesite = spec.samesite
    if samesite and not (samesite == "None" and spec.conditional_samesite_none
                         and samesite_none_incompatible(user_agent or b"")):
        parts.append(b"SameSite=" + samesite.encode())
    return b"; ".join(parts) + b"\r\n"


_IOS_12 = re.compile(rb"\(iP.+; CPU .*OS 12[_\d]*.*\) AppleWebKit/")
_MACOS_10_14 = re.compile(rb"\(Macintosh;.*Mac OS X 10_14[_\d]*.*\) AppleWebKit/")
_SAFARI = re.compile(rb"Version/.* Safari/")
_EMBEDDED_MAC = re.compile(
    rb"^Mozilla/[.\d]+ \(Macintosh;.*Mac OS X [_\d]+\) AppleWebKit/[.\d]+ \(KHTML, like Gecko\)$")
_CHROME_51_66 = re.compile(rb"Chrom(?:e|ium)/(5[1-9]|6[0-6])\.")
_UC = re.compile(rb"UCBrowser/(\d+)\.(\d+)\.(\d+)")


def samesite_none_incompatible(user_agent: bytes) -> bool:
    if _IOS_12.search(user_agent):
        return True
    if _MACOS_10_14.search(user_agent) and (_SAFARI.search(user_agent) or _EMBEDDED_MAC.search(user_agent)):
        return True
    if _CHROME_51_66.search(user_agent):
        return True
    uc = _UC.search(user_agent)
    return uc is not None and tuple(int(x) for x in uc.groups()) < (12, 13, 2)
