"""Who may do what, asked of the API server with SubjectAccessReviews and remembered briefly.

The list page asks, per namespace, whether the user may list TransferTasks there; the wizard asks whether
they may create them. Answers are cached for `ttl` seconds per (user, groups, verb, resource, namespace), so
a page of 1,000 tasks in 20 namespaces costs at most 20 reviews, and a changed RoleBinding is seen within
`ttl`. In local mode (no impersonation) the kubeconfig's own identity asks with SelfSubjectAccessReviews.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dth.console.kube import Identity, Kube, KubeError
from dth.spec.model import API_GROUP, PLURAL

_Key = tuple[str, tuple[str, ...], str, str, str, str]


class AccessReviews:
    def __init__(self, kube: Kube, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self._ttl = ttl
        self._clock = clock
        self._answers: dict[_Key, tuple[float, bool]] = {}
        self.reviews_sent = 0  # for tests and the benchmark: how many reviews reached the API server

    async def allowed(
        self,
        who: Identity | None,
        verb: str,
        namespace: str,
        resource: str = PLURAL,
        group: str = API_GROUP,
    ) -> bool:
        key: _Key = (who.user if who else "", who.groups if who else (), verb, group, resource, namespace)
        now = self._clock()
        cached = self._answers.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        answer = await self._review(who, verb, namespace, resource, group)
        self._answers[key] = (now, answer)
        return answer

    async def _review(self, who: Identity | None, verb: str, namespace: str, resource: str, group: str) -> bool:
        attributes = {"namespace": namespace, "verb": verb, "group": group, "resource": resource}
        spec: dict[str, Any] = {"resourceAttributes": attributes}
        if who is not None and self._kube.impersonate:
            kind, path = "SubjectAccessReview", "/apis/authorization.k8s.io/v1/subjectaccessreviews"
            spec.update(user=who.user, groups=list(who.groups))
        else:
            kind, path = "SelfSubjectAccessReview", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec}
        self.reviews_sent += 1
        try:
            answer = await self._kube.request("POST", path, body=body, what="subjectaccessreviews")
        except KubeError:
            return False  # cannot ask: show nothing rather than guess
        return bool((answer or {}).get("status", {}).get("allowed"))
