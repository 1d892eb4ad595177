"""Layer 4: TCP and UDP services (issue 9). `StreamRuntime` is what `ProxyServer` talks to; see its module."""

from pyngress.runtime.l4.config import StreamConfig
from pyngress.runtime.l4.runtime import StreamRuntime

__all__ = ["StreamConfig", "StreamRuntime"]
