"""The validating admission webhook: the API server asks the operator before it stores a TransferTask, and a
task outside the tenant policy (or whose spec does not parse) is refused at `kubectl apply`, with the rule
named. The reconcile handler keeps the same check, so the policy holds when the webhook is not installed.

The operator serves HTTPS on DTH_WEBHOOK_PORT (0: no webhook) with the certificate in DTH_WEBHOOK_CERT_DIR
(tls.crt, tls.key: from the chart's Secret, made by Helm or cert-manager; kopf restarts the server when the
files change). The ValidatingWebhookConfiguration is the installer's (the chart's), not the operator's: the
operator needs no permission to write cluster-wide webhook configurations. It sends requests to the path
`/tenant-policy` (WEBHOOK_PATH). Every replica serves it: peering pauses handlers, not the webhook server.
"""

from __future__ import annotations

from typing import Any

import kopf

from dth.errors import SpecError
from dth.spec.load import parse_task_spec
from dth.spec.model import API_GROUP, API_VERSION, PLURAL
from dth_operator.policy import PolicyViolationError, configured_policy
from dth_operator.settings import OperatorSettings

WEBHOOK_ID = "tenant-policy"
WEBHOOK_PATH = f"/{WEBHOOK_ID}"  # kopf's server routes /<handler id> to the handler
SETTINGS = OperatorSettings.from_environment()
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def webhook_configuration(
    name: str, client_config: dict[str, Any], namespaces: list[str] | None, failure_policy: str = "Fail"
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration that sends TransferTask creates and updates here (the chart renders
    the same, tests/test_helm.py compares them). `namespaces`: only those (by the name label Kubernetes 1.21+
    puts on every namespace; on 1.20, label them kubernetes.io/metadata.name=NAME); None: every namespace."""
    webhook: dict[str, Any] = {
        "name": f"{WEBHOOK_ID}.{API_GROUP}",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "timeoutSeconds": 10,
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [API_GROUP],
                "apiVersions": [API_VERSION],
                "resources": [PLURAL],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Namespaced",
            }
        ],
    }
    if namespaces is not None:
        webhook["namespaceSelector"] = {
            "matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(namespaces)}]
        }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }


def review(*, spec: kopf.Spec, namespace: str | None, **kwargs: Any) -> None:
    """Allow, or raise an AdmissionError the API server returns to the client."""
    old, new = kwargs.get("old"), kwargs.get("new")
    if (
        kwargs.get("operation") == "UPDATE"
        and old is not None
        and new is not None
        and old.get("spec") == new.get("spec")
    ):
        return  # finalizers, annotations, labels: never refused, or a task could not even be deleted
    try:
        task = parse_task_spec(dict(spec))
    except SpecError as error:
        raise kopf.AdmissionError(f"invalid TransferTask spec: {error}", code=422) from None
    try:
        configured_policy().check(namespace or "default", task)
    except PolicyViolationError as error:
        raise kopf.AdmissionError(str(error), code=403) from None


@kopf.on.startup()
def serve(settings: kopf.OperatorSettings, **_: Any) -> None:
    if not SETTINGS.webhook_port:
        return
    certificate, key = SETTINGS.webhook_cert_dir / "tls.crt", SETTINGS.webhook_cert_dir / "tls.key"
    if not certificate.is_file() or not key.is_file():
        # kopf would fall back to generating a certificate the API server does not trust.
        raise kopf.PermanentError(f"the webhook needs {certificate} and {key} (DTH_WEBHOOK_CERT_DIR)")
    settings.admission.server = kopf.WebhookServer(
        addr="0.0.0.0", port=SETTINGS.webhook_port, certfile=str(certificate), pkeyfile=str(key)
    )
    settings.admission.managed = None


# Registered only with a server to answer it: kopf refuses to start with admission handlers and no server.
if SETTINGS.webhook_port:
    kopf.on.validate(API_GROUP, API_VERSION, PLURAL, id=WEBHOOK_ID, operations=["CREATE", "UPDATE"])(review)
