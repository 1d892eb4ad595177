"""/metrics: the merged worker state (`observability.export`) as Prometheus metric families, at scrape time.

Names. Where the meaning is the same as ingress-nginx's, the name and labels are ingress-nginx's
(`nginx_ingress_controller_*`, labels namespace, ingress, service, path, host, method, status, plus the
controller_class / controller_namespace / controller_pod labels its dashboards filter on), so existing
Grafana dashboards and alerts keep working. What ingress-nginx has no metric for is `pyngress_*`.
`nginx_ingress_controller_requests`, `_success` and `_errors` are counters without the `_total` suffix in
ingress-nginx; prometheus-client's text format would append one to a counter, so they are exposed untyped
under the exact name (PromQL's rate() and increase() do not look at the type).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from pyngress.observability.export import State
from pyngress.observability.recorder import DURATION_BUCKETS, SIZE_BUCKETS

NGINX = "nginx_ingress_controller_"
ROUTE_LABELS = ("namespace", "ingress", "service", "path", "host")
CELL_LABELS = (*ROUTE_LABELS, "method", "status")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def controller_labels(ingress_class: str) -> dict[str, str]:
    """The labels ingress-nginx puts on every series; in a pod, POD_NAME / POD_NAMESPACE (downward API)."""
    return {"controller_class": ingress_class, "controller_namespace": os.environ.get("POD_NAMESPACE", ""),
            "controller_pod": os.environ.get("POD_NAME", socket.gethostname())}


class StateCollector(Collector):
    def __init__(self, state: State, constant: dict[str, str]) -> None:
        self.state = state
        self.constant = constant

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._endpoints()
        yield from self._connections()
        yield from self._config()
        yield from self._events()

    def _labels(self, names: Sequence[str]) -> list[str]:
        return [*self.constant, *names]

    def _values(self, values: Sequence[Any]) -> list[str]:
        return [*self.constant.values(), *(str(v) for v in values)]

    def _requests(self) -> Iterator[Metric]:
        requests = Metric(NGINX + "requests", "The total number of client requests", "unknown")
        duration = _histogram(NGINX + "request_duration_seconds",
                              "The request processing time in seconds (head parsed to response complete)")
        upstream = _histogram(NGINX + "response_duration_seconds",
                              "The time spent on receiving the response from the upstream server in seconds")
        req_size = _histogram(NGINX + "request_size", "The request length (including request line, header, "
                              "and request body)")
        resp_size = _histogram(NGINX + "response_size", "The response length (including request line, header, "
                               "and request body)")
        names = self._labels(CELL_LABELS)
        for labels, rows in self.state["series"]:
            for status, method, count, dur, dur_sum, up, up_sum, up_count, rq, rq_sum, rs, rs_sum in rows:
                values = self._values([*labels, method, status])
                label_map = dict(zip(names, values, strict=True))
                requests.add_sample(NGINX + "requests", label_map, count)
                _observe(duration, label_map, DURATION_BUCKETS, dur, dur_sum)
                if up_count:
                    _observe(upstream, label_map, DURATION_BUCKETS, up, up_sum)
                _observe(req_size, label_map, SIZE_BUCKETS, rq, rq_sum)
                _observe(resp_size, label_map, SIZE_BUCKETS, rs, rs_sum)
        yield from (requests, duration, upstream, req_size, resp_size)

    def _endpoints(self) -> Iterator[Metric]:
        names = self._labels(("namespace", "service", "endpoint", "pod"))
        served = CounterMetricFamily("pyngress_endpoint_responses", "Responses forwarded from each endpoint, "
                                     "by status class", labels=[*names, "code"])
        failures = CounterMetricFamily("pyngress_endpoint_failed_attempts", "Attempts on each endpoint that "
                                       "ended without a response (connect error, reset, timeout)", labels=names)
        inflight = GaugeMetricFamily("pyngress_endpoint_inflight_requests", "Requests sent to each endpoint "
                                     "and not yet answered", labels=names)
        up = GaugeMetricFamily("pyngress_endpoint_up", "1 when the endpoint may receive traffic (ready in its "
                               "EndpointSlice and, with health checks, healthy and not ejected)", labels=names)
        ejected = GaugeMetricFamily("pyngress_endpoint_ejected", "1 while the endpoint is ejected by passive "
                                    "health checking (outlier detection)", labels=names)
        ejections = CounterMetricFamily("pyngress_endpoint_ejections", "Times the endpoint was ejected",
                                        labels=names)
        for key, e in self.state["endpoints"].items():
            values = self._values([e["namespace"], e["service"], key, e["pod"]])
            for klass, n in enumerate(e["codes"]):
                if n:
                    served.add_metric([*values, f"{klass}xx"], n)
            failures.add_metric(values, e["failures"])
            inflight.add_metric(values, e["inflight"])
            healthy = e["serving"] and e["health"] != "unhealthy" and not e["ejected"]
            up.add_metric(values, 1.0 if healthy else 0.0)
            ejected.add_metric(values, 1.0 if e["ejected"] else 0.0)
            ejections.add_metric(values, e["ejections"])
        yield from (served, failures, inflight, up, ejected, ejections)

    def _connections(self) -> Iterator[Metric]:
        listeners = self.state["listeners"]
        accepted = CounterMetricFamily("pyngress_connections_accepted", "Client connections accepted, per "
                                       "listener", labels=self._labels(["listener"]))
        active = GaugeMetricFamily("pyngress_connections_active", "Client connections open, per listener",
                                   labels=self._labels(["listener"]))
        nginx_total = CounterMetricFamily(NGINX + "nginx_process_connections", "total number of connections "
                                          "with state {accepted, handled}", labels=self._labels(["state"]))
        nginx_now = GaugeMetricFamily(NGINX + "nginx_process_connections", "current number of client "
                                      "connections with state {active}", labels=self._labels(["state"]))
        for name, counts in listeners.items():
            accepted.add_metric(self._values([name]), counts["accepted"])
            active.add_metric(self._values([name]), counts["active"])
        total = sum(c["accepted"] for c in listeners.values())
        nginx_total.add_metric(self._values(["accepted"]), total)
        nginx_total.add_metric(self._values(["handled"]), total)
        nginx_now.add_metric(self._values(["active"]), sum(c["active"] for c in listeners.values()))
        yield from (accepted, active, nginx_now, nginx_total)

    def _config(self) -> Iterator[Metric]:
        config, reloads = self.state["config"], dict((k[0], n) for k, n in self.state["events"]["reloads"])
        labels = self._labels(())
        values = self._values(())
        gauges = [
            (NGINX + "config_last_reload_successful", "Whether the last configuration reload attempt was "
             "successful", 1.0 if config["last_reload_ok"] else 0.0),
            (NGINX + "config_last_reload_successful_timestamp_seconds", "Timestamp of the last successful "
             "configuration reload", config["last_success"]),
            ("pyngress_config_generation", "Version of the configuration being served", config["generation"]),
            ("pyngress_workers", "Worker processes answering this scrape", len(self.state.get("workers", [1]))),
        ]
        for name, doc, value in gauges:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(values, value)
            yield g
        for name, doc, n in ((NGINX + "success", "Cumulative number of Ingress controller reload operations",
                              reloads.get("applied", 0)),
                             (NGINX + "errors", "Cumulative number of Ingress controller errors during reload "
                              "operations", reloads.get("rejected", 0))):
            m = Metric(name, doc, "unknown")
            m.add_sample(name, dict(zip(labels, values, strict=True)), n)
            yield m
        log = self.state["access_log"]
        for name, doc, n in (("pyngress_access_log_lines", "Access log lines written", log["lines"]),
                             ("pyngress_access_log_dropped_lines", "Access log lines dropped because stdout "
                              "was not keeping up", log["dropped"])):
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(values, n)
            yield c

    def _events(self) -> Iterator[Metric]:
        events = self.state["events"]
        table = [
            ("pyngress_tls_handshakes", "TLS handshakes by result", ["result"], "tls_handshakes"),
            ("pyngress_tls_handshake_failures", "Failed TLS handshakes by reason", ["reason"], "tls_failures"),
            ("pyngress_rate_limited_requests", "Requests refused by a rate or connection limit",
             ["namespace", "ingress", "limit"], "rate_limited"),
            ("pyngress_config_reloads", "Configuration reloads by result", ["result"], "reloads"),
            ("pyngress_kube_watch_events", "Kubernetes watch events received", ["resource", "type"],
             "kube_events"),
            ("pyngress_kube_relists", "Kubernetes list requests (start, expired watch, reconnect)",
             ["resource"], "kube_relists"),
            ("pyngress_kube_watch_errors", "Failed Kubernetes list or watch requests", ["resource"],
             "kube_errors"),
        ]
        for name, doc, label_names, key in table:
            c = CounterMetricFamily(name, doc, labels=self._labels(label_names))
            for labels, n in events[key]:
                c.add_metric(self._values(labels), n)
            yield c


def _histogram(name: str, doc: str) -> Metric:
    return Metric(name, doc, "histogram")


def _observe(metric: Metric, labels: dict[str, str], bounds: Sequence[float], counts: Sequence[int],
             total: float) -> None:
    """Add one labelled histogram: cumulative buckets, +Inf, _count and _sum."""
    cumulative = 0
    for bound, n in zip(bounds, counts, strict=False):
        cumulative += n
        metric.add_sample(metric.name + "_bucket", {**labels, "le": _le(bound)}, cumulative)
    cumulative += counts[-1]
    metric.add_sample(metric.name + "_bucket", {**labels, "le": "+Inf"}, cumulative)
    metric.add_sample(metric.name + "_count", labels, cumulative)
    metric.add_sample(metric.name + "_sum", labels, total)


def _le(bound: float) -> str:
    return repr(float(bound))


def render(state: State, ingress_class: str = "pyngress") -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state, controller_labels(ingress_class)))
    return generate_latest(registry)

