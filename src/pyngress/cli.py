"""The `pyngress` command: wiring only. Each subcommand hands over to the package that does the work."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pyngress import __version__
from pyngress.cli_streams import stream_options as _stream_options  # issue 9 (L4)

if TYPE_CHECKING:
    from pyngress.config import CompileOptions
    from pyngress.config.streams import StreamOptions

F = TypeVar("F", bound=Callable[..., Any])

PATH_HELP = "Manifest file or directory (read recursively: *.yaml, *.yml, *.json). Repeatable."


def _compile_options(ingress_class: str, watch_without_class: bool, configmap: str,
                     default_ssl_certificate: str = "", streams: StreamOptions | None = None) -> CompileOptions:
    from pyngress.config import CompileOptions
    from pyngress.config.streams import NO_STREAMS

    return CompileOptions(ingress_class=ingress_class, watch_without_class=watch_without_class,
                          configmap=configmap, default_ssl_certificate=default_ssl_certificate,
                          streams=streams or NO_STREAMS)


# -- TLS (issue 4) ----------------------------------------------------------------------------------------
DEFAULT_CERT_HELP = ("Secret (NAMESPACE/NAME, type kubernetes.io/tls) served when no certificate matches the SNI "
                     "name; default: a generated self-signed certificate.")


def _default_cert_option(f: F) -> F:
    return click.option("--default-ssl-certificate", default="", metavar="NAMESPACE/NAME",
                        help=DEFAULT_CERT_HELP)(f)


def _https_options(f: F) -> F:
    f = click.option("--https-redirect-port", default=0, type=click.IntRange(0, 65535),
                     help="Port in the Location of redirects to HTTPS (443 is left out)  [default: the HTTPS "
                          "port]")(f)
    return click.option("--https-port", default=8443, show_default=True, type=click.IntRange(0, 65535),
                        help="TLS port: certificates by SNI, ssl-passthrough.")(f)


def _class_options(f: F, *, paths_required: bool = True) -> F:
    f = click.option("--configmap", default="pyngress", show_default=True,
                     help="Controller settings ConfigMap: NAMESPACE/NAME, or NAME in any namespace.")(f)
    f = click.option("--watch-ingress-without-class", "watch_without_class", is_flag=True,
                     help="Also serve Ingresses that name no class.")(f)
    f = click.option("--ingress-class", default="pyngress", show_default=True,
                     help="Serve the Ingresses of this class.")(f)
    return click.option("-f", "--filename", "paths", multiple=True, required=paths_required,
                        type=click.Path(exists=True), help=PATH_HELP)(f)


def _admin_options(f: F) -> F:  # issue 8: the admin listener and the access log
    f = click.option("--no-access-log", is_flag=True,
                     help="Write no access log (the ConfigMap's enable-access-log does this per config).")(f)
    f = click.option("--no-admin", is_flag=True, help="No admin listener.")(f)
    f = click.option("--admin-address", default="127.0.0.1", show_default=True,
                     help="Address of the admin listener (it exposes the configuration: keep it private).")(f)
    return click.option("--admin-port", default=10254, show_default=True, type=click.IntRange(0, 65535),
                        help="Admin listener: /metrics, /healthz, /readyz, /status, /config, / (dashboard). "
                             "0 picks a free port.")(f)
# -- issue 6: cluster mode -----------------------------------------------------------------------------------
_KUBE_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--kubernetes",), {"is_flag": True, "help": "Read the API server instead of files (in-cluster service "
                         "account, or --kubeconfig / $KUBECONFIG outside)."}),
    (("--kubeconfig",), {"type": click.Path(exists=True, dir_okay=False), "help": "kubeconfig file."}),
    (("--kube-context",), {"help": "kubeconfig context (default: its current-context)."}),
    (("--namespace",), {"default": "", "help": "Watch only this namespace (default: all)."}),
    (("--election-id",), {"default": "pyngress-leader", "show_default": True,
                          "help": "Lease name for the leader election that decides who writes status."}),
    (("--election-namespace",), {"default": "", "help": "Lease namespace (default: the Pod's own)."}),
    (("--publish-service",), {"default": "", "metavar": "NS/NAME",
                              "help": "Write this Service's LoadBalancer address to served Ingresses."}),
    (("--publish-status-address",), {"default": "", "metavar": "ADDR,...",
                                     "help": "Write these addresses (IPs or host names) to served Ingresses."}),
    (("--update-status/--no-update-status",), {"default": True, "show_default": True,
                                               "help": "Write Ingress status (leader only)."}),
    (("--update-status-on-shutdown/--no-update-status-on-shutdown",), {
        "default": True, "show_default": True,
        "help": "On shutdown of the last controller Pod, remove its address from the status it wrote."}),
]


def _kube_options(f: F) -> F:
    for names, kwargs in reversed(_KUBE_OPTIONS):
        f = click.option(*names, **kwargs)(f)
    return f


def _kube_run_options(kw: dict[str, Any]) -> Any:
    """Pop the cluster-mode options out of `kw`; KubeRunOptions when --kubernetes, else None."""
    from pyngress.runtime.cluster import KubeRunOptions

    values = {name: kw.pop(name) for name in ("kubernetes", "kubeconfig", "kube_context", "namespace",
                                               "election_id", "election_namespace", "publish_service",
                                               "publish_status_address", "update_status",
                                               "update_status_on_shutdown")}
    if not values["kubernetes"]:
        return None
    addresses = tuple(a.strip() for a in values["publish_status_address"].split(",") if a.strip())
    return KubeRunOptions(kubeconfig=values["kubeconfig"], context=values["kube_context"],
                          namespace=values["namespace"], election_id=values["election_id"],
                          election_namespace=values["election_namespace"],
                          publish_service=values["publish_service"], publish_status_address=addresses,
                          update_status=values["update_status"],
                          update_status_on_shutdown=values["update_status_on_shutdown"])


@click.group()
@click.version_option(__version__, prog_name="pyngress")
def main() -> None:
    """pyngress: a load balancer and Kubernetes Ingress controller."""


@main.command()
@lambda f: _class_options(f, paths_required=False)
@_stream_options
@_kube_options
@click.option("--http-port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes sharing the port (SO_REUSEPORT).")
@click.option("--shutdown-grace", default=30.0, show_default=True, type=float,
              help="Seconds to finish in-flight requests on SIGTERM.")
@click.option("--shutdown-grace-period", type=click.FloatRange(0), default=None,
              help="Seconds between SIGTERM (readiness fails) and the listeners closing [default: the "
                   "ConfigMap's shutdown-grace-period, 5].")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@_https_options
@_default_cert_option
@_admin_options
# flow control (issue 5)
@click.option("--redis-url", default="", metavar="URL",
              help="Redis for global-rate-limit counters shared by replicas (redis://host:6379/0).")
def run(paths: tuple[str, ...], ingress_class: str, watch_without_class: bool, configmap: str,
        http_port: int, address: str, workers: int, shutdown_grace: float, log_level: str,
        https_port: int, https_redirect_port: int, default_ssl_certificate: str, streams: StreamOptions,
        shutdown_grace_period: float | None, admin_port: int, admin_address: str, no_admin: bool,
        no_access_log: bool, redis_url: str, **kube: Any) -> None:
    """Serve the Ingresses described by Kubernetes manifests (reloaded when they change, or on SIGHUP), or
    with --kubernetes the ones in a cluster."""
    from pyngress.runtime.app import RunOptions, paths_of
    from pyngress.runtime.app import run as run_app

    kube_options = _kube_run_options(kube)
    if bool(paths) == (kube_options is not None):
        raise click.UsageError("give manifests with -f/--filename, or --kubernetes (not both)")

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    options = RunOptions(paths=paths_of(paths), compile=_compile_options(ingress_class, watch_without_class,
                         configmap, default_ssl_certificate, streams), host=address, http_port=http_port,
                         workers=workers, grace=shutdown_grace, https_port=https_port,
                         https_redirect_port=https_redirect_port, shutdown_grace_period=shutdown_grace_period,
                         kube=kube_options, admin_host=admin_address, admin_port=None if no_admin else admin_port,
                         access_log=not no_access_log, redis_url=redis_url)
    sys.exit(run_app(options))


@main.command()
@lambda f: _class_options(f, paths_required=False)
@_stream_options
@_default_cert_option
@click.option("--kubernetes", is_flag=True, help="Check what the cluster holds instead of files (issue 6).")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="kubeconfig file.")
@click.option("--kube-context", help="kubeconfig context.")
@click.option("--namespace", default="", help="Only this namespace (default: all).")
def check(paths: tuple[str, ...], ingress_class: str, watch_without_class: bool, configmap: str,
          default_ssl_certificate: str, kubernetes: bool, kubeconfig: str | None, kube_context: str | None,
          namespace: str, streams: StreamOptions) -> None:
    """Validate manifests as the API server would and print the routing table. Exit 1 on any error.
    With --kubernetes: the same for what the cluster holds now, as `run --kubernetes` would serve it."""
    import time

    from pyngress.config import build_from_paths, format_check

    options = _compile_options(ingress_class, watch_without_class, configmap, default_ssl_certificate, streams)
    if bool(paths) == kubernetes:
        raise click.UsageError("give manifests with -f/--filename, or --kubernetes (not both)")
    if kubernetes:  # issue 6
        snapshot = _cluster_snapshot(options, kubeconfig, kube_context, namespace)
    else:  # now: certificates must not have expired
        snapshot = build_from_paths(list(paths), options, now=time.time())
    click.echo(format_check(snapshot))
    sys.exit(1 if any(p.severity == "error" for p in snapshot.problems) else 0)


def _cluster_snapshot(options: CompileOptions, kubeconfig: str | None, context: str | None,
                      namespace: str) -> Any:
    import asyncio

    from pyngress.sources.kubernetes.once import snapshot_of_cluster

    try:
        return asyncio.run(snapshot_of_cluster(options, kubeconfig=kubeconfig, context=context,
                                               namespace=namespace))
    except Exception as exc:  # no credentials, cluster unreachable: the reason, not a traceback
        raise click.ClickException(f"cannot read the cluster: {exc!r}") from None


def _cpus(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    from pyngress.runtime.demo import parse_cpus

    try:
        cpus = None if value is None else parse_cpus(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if cpus is not None and len(cpus) > 100:
        raise click.BadParameter(f"{len(cpus)} pods: at most 100")
    return cpus


@main.command()
@click.option("--pods", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--requests", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.option("--cpus", callback=_cpus, metavar="N,N,...",
              help="Cores each pod requests, e.g. 1,1,2,4 (decimals allowed): one pod per value (overrides "
                   "--pods), weighted by CPU. With --requests 80, 1,1,2,4 get exactly 10/10/20/40.")
@click.option("--once", is_flag=True, help="Print the table and exit instead of serving.")
@click.option("--http-port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--https-port", default=None, type=click.IntRange(0, 65535),
              help="Also serve over TLS on this port, with a generated self-signed certificate.")
@click.option("--admin-port", default=10254, show_default=True, type=click.IntRange(0, 65535),
              help="The dashboard and metrics (0 picks a free port).")
def demo(pods: int, requests: int, cpus: list[float] | None, once: bool, http_port: int,
         https_port: int | None, admin_port: int) -> None:
    """Start demo pods behind the balancer, send requests through it, show how they spread."""
    from pyngress.runtime.demo import run_demo

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(run_demo(pods=pods, requests=requests, once=once, http_port=http_port, cpus=cpus,
                      https_port=https_port, admin_port=admin_port))


@main.command()
@click.option("--admin", "admin_url", default="http://127.0.0.1:10254", show_default=True,
              help="The admin listener of a running pyngress.")
@click.option("--json", "as_json", is_flag=True, help="Print /status as JSON instead of tables.")
def status(admin_url: str, as_json: bool) -> None:
    """Show a running pyngress's routes, endpoints, health and traffic share (from its /status)."""
    from pyngress.observability.statuscli import show_status

    sys.exit(show_status(admin_url, as_json=as_json))


if __name__ == "__main__":
    main()
