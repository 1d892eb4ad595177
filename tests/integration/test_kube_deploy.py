"""deploy/ against the test API server: kubectl accepts every manifest (client dry run, then for real)."""

from __future__ import annotations

import json
from pathlib import Path

from kube_support import fake_cluster, needs_kubectl

MANIFEST = Path(__file__).parents[2] / "deploy" / "kubernetes" / "pyngress.yaml"
EXPECTED = {"namespace/pyngress", "serviceaccount/pyngress", "clusterrole.rbac.authorization.k8s.io/pyngress",
            "clusterrolebinding.rbac.authorization.k8s.io/pyngress", "ingressclass.networking.k8s.io/pyngress",
            "configmap/pyngress", "deployment.apps/pyngress", "poddisruptionbudget.policy/pyngress",
            "service/pyngress"}


@needs_kubectl
async def test_kubectl_apply_accepts_the_manifests() -> None:
    async with fake_cluster() as cluster:
        k = cluster.kubectl
        dry = await k("apply", "--dry-run=client", "--validate=false", "-f", str(MANIFEST))
        assert {line.split()[0] for line in dry.splitlines()} == EXPECTED
        assert all(line.endswith("(dry run)") for line in dry.splitlines())
        assert cluster.api.objects == {}  # a client dry run writes nothing
        applied = await k("apply", "--validate=false", "-f", str(MANIFEST))
        assert {line.split()[0] for line in applied.splitlines()} == EXPECTED
        deployment = json.loads(await k("get", "deployment", "pyngress", "-n", "pyngress", "-o", "json"))
        assert deployment["spec"]["replicas"] == 2
        rv = cluster.api.rv
        again = await k("apply", "--validate=false", "-f", str(MANIFEST))
        # kubectl >= 1.21 always re-sends a policy/v1 PodDisruptionBudget's selector (its patch strategy is
        # "replace"), so it reports "configured" against any server; the write changes nothing
        assert {line for line in again.splitlines() if not line.endswith("unchanged")} <= {
            "poddisruptionbudget.policy/pyngress configured"}
        assert cluster.api.rv == rv
