"""Whether this controller Pod is the last one running: status is cleared on shutdown only then.

As ingress-nginx does (`--update-status-on-shutdown`): the Pods of the controller are the Pods of our own
namespace carrying all of our own Pod's labels (those of the Deployment's template), less the labels that
differ between revisions or Pods (`pod-template-hash`: during a rolling update the new ReplicaSet's Pods
are the ones that keep the status). Unlike ingress-nginx, Pods being deleted (a `deletionTimestamp`) do not
count: when the Deployment is scaled to zero or deleted, every Pod terminates at once, and counting the
others would leave the address behind for good. Our Pod comes from the downward API (`POD_NAME`,
`POD_NAMESPACE`). Outside a cluster (no `POD_NAME`) the process is taken to be the only replica. When the
API cannot say (an error), the answer is yes, like ingress-nginx: the worst case is a status cleared during
a rolling update, which the next leader writes back within a couple of seconds."""

from __future__ import annotations

import logging
import os

from pyngress.sources.kubernetes.client import ApiError, KubeClient
from pyngress.sources.kubernetes.resources import POD

PER_REVISION = ("pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name")


async def last_replica(client: KubeClient, log: logging.Logger) -> bool:
    name, namespace = os.environ.get("POD_NAME", ""), os.environ.get("POD_NAMESPACE", "")
    if not name or not namespace:
        return True
    try:
        pod = await client.request("GET", POD.object_path(namespace, name))
        labels = {k: v for k, v in ((pod.get("metadata") or {}).get("labels") or {}).items()
                  if k not in PER_REVISION}
        if not labels:
            return True  # nothing ties us to other Pods
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        listed = await client.request("GET", POD.collection_path(namespace), params={"labelSelector": selector})
    except ApiError as exc:
        log.warning("cannot tell whether other controller Pods run (%s): taking this one as the last", exc)
        return True
    others = [meta for p in listed.get("items") or [] if (meta := p.get("metadata") or {}).get("name") != name
              and not meta.get("deletionTimestamp")]  # terminating too (scale to 0): not going to keep status
    return not others
