"""The layer 4 flags of `pyngress run` and `pyngress check` (issue 9), kept out of cli.py: one decorator that
adds them and hands the command a single `streams` argument (a `config.streams.StreamOptions`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def stream_options(f: F) -> F:
    """Issue 9 (L4): the layer 4 flags, handed to the command as one `streams` argument (StreamOptions)."""

    @functools.wraps(f)
    def wrapper(*args: Any, tcp_services_configmap: str, udp_services_configmap: str,
                serve_load_balancer_services: bool, lb_port_offset: int, **kwargs: Any) -> Any:
        from pyngress.config.streams import StreamOptions

        kwargs["streams"] = StreamOptions(tcp_services_configmap, udp_services_configmap,
                                          serve_load_balancer_services, lb_port_offset)
        return f(*args, **kwargs)

    options = [
        click.option("--lb-port-offset", default=0, show_default=True, type=click.IntRange(0, 65535),
                     help="Added to a LoadBalancer Service's ports to get the listen ports (run unprivileged)."),
        click.option("--serve-load-balancer-services", is_flag=True,
                     help="Give every Service of type LoadBalancer a TCP/UDP listener per port."),
        click.option("--udp-services-configmap", default="", metavar="NAMESPACE/NAME",
                     help="ConfigMap of UDP services: listen port -> namespace/service:port."),
        click.option("--tcp-services-configmap", default="", metavar="NAMESPACE/NAME",
                     help="ConfigMap of TCP services: listen port -> namespace/service:port[:PROXY][:PROXY]."),
    ]
    for option in options:
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
