"""Endpoint weights from capacity: what share of a Service's traffic each of its endpoints gets.

Every `Endpoint` has a weight (default 1) that all balancers honour (smooth weighted round robin, random,
p2c, ewma, least_conn and the hash tables). Two annotations **on the Service** set it, read by
`weigh_endpoints` for each backend when it is resolved (`endpoints.resolve_backend`). They are ours only:
ingress-nginx has no per-endpoint weights, so there is no `nginx.ingress.kubernetes.io/` form.

1. `pyngress.io/endpoint-weights: "web-0=3, web-1=1, 10.0.0.7=0"`: explicit weights, keyed by an endpoint's
   EndpointSlice targetRef name (the Pod name) or by its address; the address wins when both name one
   endpoint (a dual-stack Pod has two addresses under one name). Weights are whole numbers 0..MAX_WEIGHT.
   **0 means drained**: the endpoint takes no new requests, and affinity cookies or client-IP entries that
   name it are re-pinned (nginx has no weight 0, its `down` flag is the equivalent; HAProxy's weight 0 is).
   Endpoints not listed keep their weight (1, or their CPU weight with rule 2): listing one pod is the
   normal way to weight one pod. An entry that is not `name=integer` within range, an empty name, or a name
   given twice makes the whole annotation an error Problem on the Service, and it is ignored (weights are
   all-or-nothing: half a table would skew the rest). A name that matches no ready endpoint (while some
   are ready) is a warning: Pod
   names change when a Deployment replaces its Pods, so explicit names suit StatefulSets (web-0, web-1).
2. `pyngress.io/weight-by: cpu`: the weight of each endpoint not named by rule 1 is its Pod's CPU request
   (`Pod.cpu_millis`: found by the targetRef name in the Service's namespace; Pod manifests in file mode,
   the Pod object in a cluster), divided by the greatest common divisor over those endpoints: 1,1,2,4
   cores -> 1,1,2,4; 500m,1 -> 1,2; 500m,1,1.5 -> 1,2,3. An endpoint whose Pod is unknown or requests no
   CPU gets the weight of the median of the others' requests (the lower middle one for an even count, so
   an unknown pod never weighs more than a typical one; 1 when no endpoint has a request), and a warning
   Problem on the Service names the endpoint. Other values of weight-by are an error and weight-by is
   ignored.
3. The cap: after the gcd reduction no weight exceeds MAX_WEIGHT. Larger ones (1m next to 4 cores: 1:4000)
   are all scaled in proportion so the largest is MAX_WEIGHT, rounded, at least 1, and reduced by their gcd
   again. 1000 keeps ratios to 0.1 % while bounding what weights cost: the ring hash puts 160 points per
   unit of weight on its circle, and smooth weighted round robin's period is the sum of the weights.

Deterministic: the result depends only on the objects (the median and gcd are order-free, the endpoints keep
their sorted order), so equal inputs give equal Backends and an unchanged config stays an unchanged Snapshot.
Weights are part of the frozen Endpoint, so a weight change is an ordinary reload.

CPU quantities follow Kubernetes' resource.Quantity grammar: a decimal number (`2`, `1.5`, `.25`) with an
optional suffix, decimal SI (`n u m k M G T P E`), binary SI (`Ki Mi Gi Ti Pi Ei`) or an exponent (`1e3`);
unquoted YAML numbers are accepted as the API server accepts them. The value is rounded up to whole
millicores, as Quantity.MilliValue does (`100u` is 1m). Negative values and anything else are errors.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from pyngress.model import Endpoint, Pod, Problem, Service

ENDPOINT_WEIGHTS = "pyngress.io/endpoint-weights"
WEIGHT_BY = "pyngress.io/weight-by"
WEIGHT_BY_VALUES = ("cpu",)
MAX_WEIGHT = 1000
MAX_EXPONENT = 30  # 10^30 cores is already absurd; bounds the arithmetic on hostile input

# re.ASCII: \d alone would accept other scripts' digits (fullwidth, Arabic-Indic...), which the API refuses
_QUANTITY = re.compile(r"([+-]?)(\d+\.?\d*|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?\d+))?", re.ASCII)
_SUFFIX = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
    "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}

PodIndex = Mapping[tuple[str, str], Pod]  # (namespace, name) -> Pod


def cpu_millicores(value: Any) -> int:
    """A CPU quantity ("500m", "2", "1.5", 0.25) in whole millicores, rounded up. ValueError when malformed."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a quantity (like 500m, 2 or 1.5)")
    text = value.strip() if isinstance(value, str) else repr(value)
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a quantity (like 500m, 2 or 1.5)")
    sign, number, suffix, exponent = match.groups()
    if exponent is not None and abs(int(exponent)) > MAX_EXPONENT:
        raise ValueError(f"{text!r} is out of range")
    scale = Fraction(10) ** int(exponent) if exponent is not None else _SUFFIX[suffix or ""]
    cores = Fraction(number) * scale  # exact: in floats 2.007 cores is 2007.0000000000002m, rounded up to 2008m
    if sign == "-" and cores:
        raise ValueError(f"{text!r} is negative")
    return math.ceil(cores * 1000)


def weigh_endpoints(service: Service, endpoints: Sequence[Endpoint],
                    pods: PodIndex) -> tuple[tuple[Endpoint, ...], list[Problem]]:
    """`endpoints` (of one backend of `service`) with the weights the Service's annotations ask for."""
    notes = _Notes(service)
    explicit = notes.explicit_weights()
    by_cpu = notes.weight_by() == "cpu"
    if explicit is None and not by_cpu:
        return tuple(endpoints), notes.problems
    named = {e.key: w for e in endpoints if (w := _explicit(e, explicit or {})) is not None}
    if explicit and endpoints:  # none ready (scaled to zero, rolling out) is not a naming mistake
        notes.unmatched(explicit, endpoints)
    rest = [e for e in endpoints if e.key not in named]
    weights = dict.fromkeys((e.key for e in rest), 1)
    if by_cpu:
        weights = notes.cpu_weights(rest, pods)
    weights.update(named)
    weighed = tuple(Endpoint(e.address, e.port, weights[e.key], e.name, e.terminating) for e in endpoints)
    return weighed, notes.problems


def _explicit(endpoint: Endpoint, table: Mapping[str, int]) -> int | None:
    if endpoint.address in table:
        return table[endpoint.address]
    return table.get(endpoint.name) if endpoint.name else None


def parse_endpoint_weights(text: str) -> dict[str, int]:
    """ "a=3, b=1" -> {"a": 3, "b": 1}; empty items (a trailing comma) are skipped. ValueError when malformed."""
    table: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, eq, number = (s.strip() for s in item.partition("="))
        if not eq or not name:
            raise ValueError(f"{item!r} is not name=weight")
        if not number.isdigit() or not number.isascii() or int(number) > MAX_WEIGHT:
            raise ValueError(f"{item!r}: the weight must be a whole number from 0 to {MAX_WEIGHT}")
        if name in table:
            raise ValueError(f"{name!r} is given twice")
        table[name] = int(number)
    return table


def reduce_weights(millis: Sequence[int]) -> list[int]:
    """Positive capacities -> weights: divided by their gcd, then scaled down to at most MAX_WEIGHT."""
    divisor = math.gcd(*millis) or 1
    weights = [m // divisor for m in millis]
    top = max(weights, default=0)
    if top <= MAX_WEIGHT:
        return weights
    scaled = [max(1, round(Fraction(w * MAX_WEIGHT, top))) for w in weights]
    divisor = math.gcd(*scaled)
    return [w // divisor for w in scaled]


class _Notes:
    """The weight annotations of one Service, collecting Problems on it as they are read."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self.problems: list[Problem] = []

    def explicit_weights(self) -> dict[str, int] | None:
        text = self._service.meta.annotations.get(ENDPOINT_WEIGHTS)
        if text is None:
            return None
        try:
            return parse_endpoint_weights(text)
        except ValueError as exc:
            self._problem(ENDPOINT_WEIGHTS, f"{exc}; the annotation is ignored")
            return None

    def weight_by(self) -> str:
        value = self._service.meta.annotations.get(WEIGHT_BY)
        if value is None:
            return ""
        if value.strip().lower() not in WEIGHT_BY_VALUES:
            self._problem(WEIGHT_BY, f"{value!r} is not one of {', '.join(WEIGHT_BY_VALUES)}; ignored")
            return ""
        return value.strip().lower()

    def unmatched(self, table: Mapping[str, int], endpoints: Iterable[Endpoint]) -> None:
        known = {e.address for e in endpoints} | {e.name for e in endpoints if e.name}
        for name in sorted(table.keys() - known):
            self._problem(ENDPOINT_WEIGHTS, f"{name!r} names no ready endpoint, by Pod name or address (Pod "
                          "names change when Pods are replaced)", "warning")

    def cpu_weights(self, endpoints: Sequence[Endpoint], pods: PodIndex) -> dict[str, int]:
        namespace = self._service.meta.namespace
        millis = {e.key: _pod_millis(pods, namespace, e) for e in endpoints}
        known = [m for m in millis.values() if m]
        fill = statistics.median_low(known) if known else 1
        weights = dict(zip(millis, reduce_weights([m or fill for m in millis.values()]), strict=True))
        for e in endpoints:
            if not millis[e.key]:
                self._unknown_capacity(e, pods, weights[e.key], bool(known))
        return weights

    def _unknown_capacity(self, endpoint: Endpoint, pods: PodIndex, weight: int, median: bool) -> None:
        pod = pods.get((self._service.meta.namespace, endpoint.name)) if endpoint.name else None
        if not endpoint.name:
            why = "has no targetRef, so no Pod"
        elif pod is None:
            why = f"names Pod {endpoint.name}, which was not found"
        else:
            why = f"names Pod {endpoint.name}, which requests no CPU"
        given = "the median of the others" if median else "no endpoint has a CPU request"
        self._problem(WEIGHT_BY, f"endpoint {endpoint.address} {why}: weight {weight} ({given})", "warning")

    def _problem(self, annotation: str, message: str, severity: str = "error") -> None:
        meta = self._service.meta
        self.problems.append(Problem("Service", meta.namespace, meta.name, f"metadata.annotations[{annotation}]",
                                     message, meta.source, severity))


def _pod_millis(pods: PodIndex, namespace: str, endpoint: Endpoint) -> int:
    pod = pods.get((namespace, endpoint.name)) if endpoint.name else None
    return pod.cpu_millis if pod is not None else 0
