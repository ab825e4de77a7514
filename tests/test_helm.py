"""The Helm chart (helm/dth-operator): linted and rendered with several sets of values (the objects read back as
YAML), then installed, upgraded and uninstalled on the session's real kube-apiserver (v1.20), where the
operator's ServiceAccount is asked, object by object, what it may and may not do.

The API server has no kubelet and no scheduler: the operator's pod is stored but never runs, so these tests
check what the chart creates, not the running operator (tests/kind/ does that where Docker and kind exist).
helm and kubectl are the ones `bash .ci/kubernetes.sh` caches (dth.devtools.kubernetes.find_binary).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from dth.devtools.kubernetes import LocalKubernetes, find_binary
from dth_operator.admission import WEBHOOK_PATH, webhook_configuration
from dth_operator.policy import DEFAULT_POLICY, TenantPolicy
from dth_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "dth-operator"
KUBE_VERSION = "1.20.2"  # the test server's: the chart must render for it
RELEASE = "dth"
NAMESPACE = "dth-system"
FULLNAME = "dth-dth-operator"
ROLE_ARN = "arn:aws:iam::123456789012:role/dth-operator"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the test tools are required)", pytrace=False)
    pytest.skip(reason)


class Helm:
    """The helm binary, with its caches and configuration in a folder of the test session's own."""

    def __init__(self, binary: str, home: Path, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.home = home
        self.kubeconfig = kubeconfig
        self._values = 0

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
        env.update(
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_DATA_HOME=str(self.home / "data"),
        )
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        done = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
        return done

    def values_file(self, values: Mapping[str, Any]) -> str:
        self._values += 1
        path = self.home / f"values-{self._values}.yaml"
        path.write_text(yaml.safe_dump(dict(values)), encoding="utf-8")
        return str(path)

    def template(
        self, values: Mapping[str, Any] | None = None, *, namespace: str = NAMESPACE, check: bool = True
    ) -> Rendered | subprocess.CompletedProcess[str]:
        done = self.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "--values",
            self.values_file(values or {}),
            check=check,
        )
        if not check:
            return done
        return Rendered([doc for doc in yaml.safe_load_all(done.stdout) if doc])


@dataclass
class Rendered:
    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        found = [
            o
            for o in self.all(kind)
            if (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]
        assert len(found) == 1, f"{len(found)} {kind} named {name} in {namespace}: {self.kinds()}"
        return found[0]

    def kinds(self) -> list[tuple[str, str, str | None]]:
        return sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in self.objects)

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        return dict(container)

    @property
    def env(self) -> dict[str, Any]:
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in self.container["env"]}


def rendered(helm: Helm, values: Mapping[str, Any] | None = None, namespace: str = NAMESPACE) -> Rendered:
    result = helm.template(values, namespace=namespace)
    assert isinstance(result, Rendered)
    return result


def refused(helm: Helm, values: Mapping[str, Any]) -> str:
    """helm template's error for values the chart must refuse."""
    done = helm.template(values, check=False)
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode != 0, f"the chart accepted {values}"
    return done.stderr


def rules(role: Mapping[str, Any]) -> dict[tuple[str, str], set[str]]:
    """{(apiGroup, resource): verbs} of a Role or ClusterRole."""
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


TASK_RULES = {
    ("dth.io", "transfertasks"): {"get", "list", "watch", "patch", "update"},
    ("dth.io", "transfertasks/status"): {"get", "patch", "update"},
    ("", "events"): {"create", "patch"},
    ("", "secrets"): {"get", "list", "watch"},
}
PEERING_RULE = {"get", "list", "watch", "patch"}


@pytest.fixture(scope="module")
def helm_binary() -> str:
    binary = find_binary("helm")
    if binary is None:
        _unavailable("helm is not installed (run bash .ci/kubernetes.sh: it caches helm beside kubectl)")
    return binary


@pytest.fixture(scope="module")
def helm(helm_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary, tmp_path_factory.mktemp("helm"))


# --- the chart's files ------------------------------------------------------------------------------


def test_chart_crd_is_the_generated_one() -> None:
    assert (CHART / "crds" / "transfertask.yaml").read_bytes() == (ROOT / "crds" / "transfertask.yaml").read_bytes(), (
        "helm/dth-operator/crds/transfertask.yaml differs from crds/transfertask.yaml: copy it"
    )


def test_chart_ships_the_kopf_peering_crds() -> None:
    chart_copy = CHART / "crds" / "kopf-peering.yaml"
    documents = [d for d in yaml.safe_load_all(chart_copy.read_text(encoding="utf-8")) if d]
    scopes = {d["metadata"]["name"]: d["spec"]["scope"] for d in documents}
    assert scopes == {"clusterkopfpeerings.kopf.dev": "Cluster", "kopfpeerings.kopf.dev": "Namespaced"}
    for document in documents:
        (version,) = document["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
    repository_copy = ROOT / "crds" / "kopf-peering.yaml"
    if repository_copy.exists():  # the operator's own copy (for runs without Helm): the two must agree
        assert chart_copy.read_bytes() == repository_copy.read_bytes(), "crds/kopf-peering.yaml differs: copy it"
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["kopf-peering.yaml", "transfertask.yaml"]


#: The least a console needs: an OIDC client (its secrets in an existing Secret) and the address users open.
CONSOLE_OIDC: dict[str, Any] = {
    "publicUrl": "https://dth.example.com",
    "oidc": {"issuer": "https://login.example.com/realms/dth", "clientId": "dth-console", "existingSecret": "oidc"},
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watch": {"mode": "namespaced", "namespaces": ["team-a", "team-b"]}},
    "cluster-wide": {"watch": {"mode": "clusterWide"}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "irsa": {"aws": {"region": "eu-west-1", "roleArn": ROLE_ARN}},
    "credentials-secret": {"aws": {"region": "cn-north-1", "credentialsSecret": {"name": "aws-keys"}}},
    "replicas-2": {"replicaCount": 2},
    "standalone": {"peering": {"enabled": False}},
    "no-metrics": {"metrics": {"port": 0}},
    "webhook-cert-manager": {"webhook": {"certManager": {"enabled": True}}},
    "no-webhook": {"webhook": {"enabled": False}},
    "boundary": {"plugin": {"permissionsBoundary": "arn:aws:iam::123456789012:policy/dth-boundary"}},
    "console": {"console": {"enabled": True, **CONSOLE_OIDC}},
    "console-ingress-namespaced": {
        "console": {
            "enabled": True,
            **CONSOLE_OIDC,
            "namespaces": ["team-a", "team-b"],
            "ingress": {"enabled": True, "className": "nginx", "host": "dth.example.com", "tls": {"secretName": "t"}},
        }
    },
}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint(helm: Helm, name: str) -> None:
    done = helm.run("lint", "--strict", str(CHART), "--values", helm.values_file(VALUE_SETS[name]))
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


# --- rendering ---------------------------------------------------------------------------------------


def test_defaults_watch_the_release_namespace_with_least_privilege(helm: Helm) -> None:
    out = rendered(helm)
    assert out.kinds() == [
        ("ClusterRole", f"{FULLNAME}-{NAMESPACE}", None),
        ("ClusterRoleBinding", f"{FULLNAME}-{NAMESPACE}", None),
        ("ConfigMap", f"{FULLNAME}-tenancy", NAMESPACE),
        ("Deployment", FULLNAME, NAMESPACE),
        ("KopfPeering", "dth-operator", NAMESPACE),
        ("Role", FULLNAME, NAMESPACE),
        ("RoleBinding", FULLNAME, NAMESPACE),
        ("Secret", f"{FULLNAME}-webhook-tls", NAMESPACE),
        ("Service", f"{FULLNAME}-metrics", NAMESPACE),
        ("Service", f"{FULLNAME}-webhook", NAMESPACE),
        ("ServiceAccount", FULLNAME, NAMESPACE),
        ("ValidatingWebhookConfiguration", f"{FULLNAME}-{NAMESPACE}", None),
    ]
    deployment = out.one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME
    container = out.container
    assert container["image"] == "public.ecr.aws/dth/operator:0.1.0"
    assert container["command"] == ["python", "-m", "dth_operator"]
    assert container["args"] == [
        f"--namespace={NAMESPACE}",
        "--peering=dth-operator",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--log-format=json",
    ]
    # Hardened: non-root, read-only root filesystem with /tmp an emptyDir, no privilege escalation, no
    # capabilities, the runtime's default seccomp profile.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert set(tmp) == {"name", "emptyDir"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # Plugin templates: the image's own (its ENV) unless a value names others.
    assert "DTH_S3_TEMPLATE" not in out.env and "DTH_IMAGE_TEMPLATE" not in out.env
    assert "AWS_ACCESS_KEY_ID" not in out.env and "AWS_ENDPOINT_URL" not in out.env
    assert out.env["DTH_METRICS_PORT"] == "8080"
    # RBAC: the namespace's Role has exactly the tasks' rules and the peering; cluster-wide only CRDs and
    # namespaces, read-only.
    assert rules(out.one("Role")) == {**TASK_RULES, ("kopf.dev", "kopfpeerings"): PEERING_RULE}
    assert rules(out.one("ClusterRole")) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
    }
    binding = out.one("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    assert out.one("ClusterRoleBinding")["subjects"] == binding["subjects"]
    service = out.one("Service", f"{FULLNAME}-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert "annotations" not in out.one("ServiceAccount")["metadata"]


def test_namespaced_mode_gets_a_role_and_a_peering_in_each_namespace(helm: Helm) -> None:
    out = rendered(helm, VALUE_SETS["namespaced"])
    assert out.container["args"][:2] == ["--namespace=team-a", "--namespace=team-b"]
    for namespace in ("team-a", "team-b"):
        assert rules(out.one("Role", namespace=namespace)) == {**TASK_RULES, ("kopf.dev", "kopfpeerings"): PEERING_RULE}
        binding = out.one("RoleBinding", namespace=namespace)
        # The operator's account lives in the release's namespace.
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
        assert out.one("KopfPeering", "dth-operator", namespace)["apiVersion"] == "kopf.dev/v1"
    assert not out.all("Role") or {r["metadata"]["namespace"] for r in out.all("Role")} == {"team-a", "team-b"}
    # The release's own namespace is not watched: no access to its Secrets.
    assert not [r for r in out.all("Role") if r["metadata"]["namespace"] == NAMESPACE]


def test_cluster_wide_mode_uses_a_cluster_role_and_a_cluster_peering(helm: Helm) -> None:
    out = rendered(helm, VALUE_SETS["cluster-wide"])
    assert out.container["args"][0] == "--all-namespaces"
    assert not any(a.startswith("--namespace") for a in out.container["args"])
    assert out.all("Role") == [] and out.all("RoleBinding") == [] and out.all("KopfPeering") == []
    assert out.one("ClusterKopfPeering", "dth-operator")["apiVersion"] == "kopf.dev/v1"
    # kopf lists namespaces only to resolve the ones it serves: not needed cluster-wide.
    assert rules(out.one("ClusterRole")) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        **TASK_RULES,
        ("kopf.dev", "clusterkopfpeerings"): PEERING_RULE,
    }


def test_service_monitor(helm: Helm) -> None:
    assert rendered(helm).all("ServiceMonitor") == []
    out = rendered(helm, VALUE_SETS["service-monitor"])
    monitor = out.one("ServiceMonitor", FULLNAME, NAMESPACE)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    service = out.one("Service", f"{FULLNAME}-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert "metrics.port is 0" in refused(helm, {"serviceMonitor": {"enabled": True}, "metrics": {"port": 0}})


def test_irsa_annotates_the_service_account_and_sets_no_keys(helm: Helm) -> None:
    out = rendered(helm, VALUE_SETS["irsa"])
    account = out.one("ServiceAccount", FULLNAME, NAMESPACE)
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE_ARN}
    assert "AWS_ACCESS_KEY_ID" not in out.env and "AWS_SECRET_ACCESS_KEY" not in out.env
    assert out.env["AWS_REGION"] == out.env["DTH_AWS_REGION"] == "eu-west-1"
    # The projected web identity token must be readable by the non-root user.
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 10001
    # Other annotations are kept beside the role.
    out = rendered(helm, {**VALUE_SETS["irsa"], "serviceAccount": {"annotations": {"team": "data"}}})
    assert out.one("ServiceAccount")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": ROLE_ARN,
        "team": "data",
    }


def test_credentials_come_from_an_existing_secret(helm: Helm) -> None:
    out = rendered(helm, VALUE_SETS["credentials-secret"])
    assert out.env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "aws-keys", "key": "AWS_ACCESS_KEY_ID"}}
    assert out.env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "aws-keys", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert "annotations" not in out.one("ServiceAccount")["metadata"]
    # The chart never holds keys itself: its one Secret is the webhook's serving certificate.
    assert [(x["type"], x["metadata"]["name"]) for x in out.all("Secret")] == [
        ("kubernetes.io/tls", f"{FULLNAME}-webhook-tls")
    ]
    out = rendered(
        helm,
        {"aws": {"credentialsSecret": {"name": "k", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"}}},
    )
    assert out.env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "k", "key": "id"}}
    assert out.env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "k", "key": "secret"}}
    message = refused(helm, {"aws": {"roleArn": ROLE_ARN, "credentialsSecret": {"name": "aws-keys"}}})
    assert "either aws.roleArn (IRSA) or aws.credentialsSecret.name" in message


def test_replicas_peer_and_roll(helm: Helm) -> None:
    out = rendered(helm, VALUE_SETS["replicas-2"])
    deployment = out.one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--peering=dth-operator" in out.container["args"] and "--standalone" not in out.container["args"]
    assert out.one("KopfPeering", "dth-operator", NAMESPACE)
    message = refused(helm, {"replicaCount": 2, "peering": {"enabled": False}})
    assert "replicaCount > 1 needs peering.enabled" in message


def test_standalone_has_no_peering(helm: Helm) -> None:
    out = rendered(helm, VALUE_SETS["standalone"])
    assert "--standalone" in out.container["args"]
    assert not any(a.startswith("--peering") for a in out.container["args"])
    assert out.all("KopfPeering") == [] and out.all("ClusterKopfPeering") == []
    assert ("kopf.dev", "kopfpeerings") not in rules(out.one("Role"))


def test_no_metrics_no_service(helm: Helm) -> None:
    out = rendered(helm, VALUE_SETS["no-metrics"])
    assert [x["metadata"]["name"] for x in out.all("Service")] == [f"{FULLNAME}-webhook"]
    assert out.env["DTH_METRICS_PORT"] == "0"
    assert [p["name"] for p in out.container["ports"]] == ["healthz", "webhook"]


FULL_PLUGIN_VALUES: dict[str, Any] = {
    "aws": {"region": "ap-northeast-1", "endpointUrl": "http://moto.aws.svc:5000"},
    "plugin": {
        "engineImage": {"repository": "registry.example/dth/engine", "tag": "1.2.3"},
        "s3Template": "/etc/dth/s3-plugin.yaml",
        "imageTemplate": "/etc/dth/image-plugin.yaml",
        "subnets": ["subnet-1", "subnet-2"],
        "securityGroups": ["sg-1", "sg-2"],
        "cluster": "transfers",
        "assignPublicIp": True,
        "alarmEmail": "ops@example.com",
        "permissionsBoundary": "arn:aws:iam::123456789012:policy/dth-boundary",
    },
    "operator": {
        "observeInterval": 12.5,
        "stackRetryDelay": 2.5,
        "failuresLimit": 5,
        "clusterId": "eu-prod-2",
        "verbose": True,
        "logFormat": "text",
        "extraArgs": ["--priority=5"],
    },
    "metrics": {"port": 9100},
    "image": {"repository": "registry.example/dth/operator", "tag": "1.2.3", "pullPolicy": "Always"},
}


def test_every_operator_setting_has_a_value_and_the_operator_reads_them_back(helm: Helm) -> None:
    out = rendered(helm, FULL_PLUGIN_VALUES)
    env = {name: value for name, value in out.env.items() if isinstance(value, str)}
    # Every variable the operator reads (settings.py) is set by the chart, and the chart sets no DTH_ variable
    # the operator would not read.
    read = set(re.findall(r'"(DTH_[A-Z0-9_]+)"', (ROOT / "operator" / "dth_operator" / "settings.py").read_text()))
    assert read, "settings.py names no DTH_ variable"
    assert {name for name in env if name.startswith("DTH_")} == read
    settings = OperatorSettings.from_environment(env)
    assert settings.region == "ap-northeast-1"
    assert settings.engine_image == "registry.example/dth/engine:1.2.3"
    assert settings.subnets == ("subnet-1", "subnet-2")
    assert settings.security_groups == ("sg-1", "sg-2")
    assert settings.cluster == "transfers"
    assert settings.assign_public_ip is True
    assert str(settings.s3_template) == "/etc/dth/s3-plugin.yaml"
    assert str(settings.image_template) == "/etc/dth/image-plugin.yaml"
    assert settings.observe_interval == 12.5
    assert settings.metrics_port == 9100
    assert settings.alarm_email == "ops@example.com"
    assert settings.permissions_boundary == "arn:aws:iam::123456789012:policy/dth-boundary"
    assert str(settings.tenant_policy) == "/etc/dth/tenancy/policy.yaml"
    assert settings.webhook_port == 9443 and str(settings.webhook_cert_dir) == "/etc/dth/webhook"
    assert settings.cluster_id == "eu-prod-2"
    assert settings.stack_retry_delay == 2.5
    assert settings.failures_limit == 5
    assert env["AWS_ENDPOINT_URL"] == "http://moto.aws.svc:5000"
    assert out.container["image"] == "registry.example/dth/operator:1.2.3"
    assert out.container["imagePullPolicy"] == "Always"
    assert out.container["args"][-3:] == ["--log-format=text", "--verbose", "--priority=5"]
    assert out.one("Service", f"{FULLNAME}-metrics")["spec"]["ports"][0]["port"] == 9100
    # The defaults read back as the operator's own defaults where the chart does not choose otherwise.
    defaults = OperatorSettings.from_environment({k: v for k, v in rendered(helm).env.items() if isinstance(v, str)})
    assert defaults.subnets == () and defaults.cluster == "" and defaults.assign_public_ip is False
    assert defaults.observe_interval == 30 and defaults.metrics_port == 8080
    assert defaults.cluster_id == "default" and defaults.stack_retry_delay == 10
    assert defaults.failures_limit == 20


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"watch": {"mode": "everywhere"}}, "watch.mode"),
        ({"watch": {"mode": "namespaced", "namespaces": ["Not_A_Namespace"]}}, "watch.namespaces.0"),
        ({"metrics": {"port": "http"}}, "metrics.port"),
        ({"aws": {"region": "us-east-1", "roleArn": "my-role"}}, "aws.roleArn"),
        ({"plugin": {"subnets": ["subnet-1,subnet-2"]}}, "plugin.subnets.0"),
        ({"operator": {"observeInterval": 0}}, "operator.observeInterval"),
        ({"operator": {"logFormat": "yaml"}}, "operator.logFormat"),
        ({"operator": {"clusterId": "Prod_EU"}}, "operator.clusterId"),
        ({"operator": {"stackRetryDelay": 0}}, "operator.stackRetryDelay"),
        ({"operator": {"failuresLimit": -1}}, "operator.failuresLimit"),
        ({"replicas": 2}, "Additional property replicas is not allowed"),
        ({"watch": {"mode": "clusterWide", "namespaces": ["a"]}}, "watch.namespaces is for watch.mode namespaced"),
    ],
)
def test_bad_values_are_refused(helm: Helm, values: dict[str, Any], complaint: str) -> None:
    assert complaint in refused(helm, values)


# --- tenancy and the admission webhook -------------------------------------------------------------------


def test_the_default_tenant_policy_is_the_operators_and_is_mounted(helm: Helm) -> None:
    out = rendered(helm)
    policy = yaml.safe_load(out.one("ConfigMap", f"{FULLNAME}-tenancy")["data"]["policy.yaml"])
    assert TenantPolicy.model_validate(policy) == DEFAULT_POLICY
    assert out.env["DTH_TENANT_POLICY"] == "/etc/dth/tenancy/policy.yaml"
    assert {"name": "tenancy", "mountPath": "/etc/dth/tenancy", "readOnly": True} in out.container["volumeMounts"]
    checksum = "dth.io/tenant-policy-checksum"
    before = out.one("Deployment")["spec"]["template"]["metadata"]["annotations"][checksum]
    rules = [{"name": "team-a", "namespaces": ["team-a"], "sourceBuckets": ["{namespace}-*"], "providers": ["*"]}]
    changed = rendered(helm, {"tenancy": {"rules": rules}})
    policy = yaml.safe_load(changed.one("ConfigMap", f"{FULLNAME}-tenancy")["data"]["policy.yaml"])
    assert TenantPolicy.model_validate(policy).rules[0].source_buckets == ("{namespace}-*",)
    # A new policy rolls the pods: the operator reads it once.
    assert changed.one("Deployment")["spec"]["template"]["metadata"]["annotations"][checksum] != before
    assert "providers.0" in refused(
        helm, {"tenancy": {"rules": [{"name": "x", "namespaces": ["a"], "providers": ["Dropbox"]}]}}
    )
    assert "ssmParameterPaths.0" in refused(
        helm, {"tenancy": {"rules": [{"name": "x", "namespaces": ["a"], "ssmParameterPaths": ["team-a"]}]}}
    )


def test_the_webhook_is_the_operators_configuration_with_a_certificate_that_verifies(
    helm: Helm, tmp_path: Path
) -> None:
    out = rendered(helm, VALUE_SETS["namespaced"])
    configuration = out.one("ValidatingWebhookConfiguration")
    (webhook,) = configuration["webhooks"]
    ca = base64.b64decode(webhook["clientConfig"].pop("caBundle"))
    service = {"name": f"{FULLNAME}-webhook", "namespace": NAMESPACE, "path": WEBHOOK_PATH, "port": 443}
    expected = webhook_configuration(f"{FULLNAME}-{NAMESPACE}", {"service": service}, ["team-a", "team-b"])
    assert configuration["webhooks"] == expected["webhooks"]
    assert configuration["metadata"]["name"] == expected["metadata"]["name"]
    assert out.one("Service", f"{FULLNAME}-webhook")["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in out.container["ports"]
    assert (out.env["DTH_WEBHOOK_PORT"], out.env["DTH_WEBHOOK_CERT_DIR"]) == ("9443", "/etc/dth/webhook")
    assert out.container["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    assert {"name": "webhook-tls", "secret": {"secretName": f"{FULLNAME}-webhook-tls"}} in pod["volumes"]
    # Helm's certificate: signed by the CA in the caBundle, for the Service's DNS name.
    tls = out.one("Secret", f"{FULLNAME}-webhook-tls")["data"]
    assert base64.b64decode(tls["ca.crt"]) == ca
    (tmp_path / "ca.crt").write_bytes(ca)
    (tmp_path / "tls.crt").write_bytes(base64.b64decode(tls["tls.crt"]))
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            "ca.crt",
            "-verify_hostname",
            f"{FULLNAME}-webhook.{NAMESPACE}.svc",
            "tls.crt",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Cluster-wide: every namespace's tasks.
    (everywhere,) = rendered(helm, VALUE_SETS["cluster-wide"]).one("ValidatingWebhookConfiguration")["webhooks"]
    assert "namespaceSelector" not in everywhere


def test_the_webhook_with_cert_manager_or_none(helm: Helm) -> None:
    out = rendered(helm, {"webhook": {"certManager": {"enabled": True}}})
    configuration = out.one("ValidatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-webhook"
    }
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    certificate = out.one("Certificate", f"{FULLNAME}-webhook")
    assert certificate["spec"]["secretName"] == f"{FULLNAME}-webhook-tls"
    assert f"{FULLNAME}-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"name": f"{FULLNAME}-webhook", "kind": "Issuer"}
    assert out.one("Issuer")["spec"] == {"selfSigned": {}}
    assert out.all("Secret") == []
    own = {"name": "company-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    out = rendered(helm, {"webhook": {"certManager": {"enabled": True, "issuerRef": own}}})
    assert out.one("Certificate")["spec"]["issuerRef"] == own and out.all("Issuer") == []
    off = rendered(helm, {"webhook": {"enabled": False}})
    assert off.all("ValidatingWebhookConfiguration") == [] and off.all("Secret") == []
    assert "DTH_WEBHOOK_PORT" not in off.env and "readinessProbe" not in off.container
    assert [x["metadata"]["name"] for x in off.all("Service")] == [f"{FULLNAME}-metrics"]


# --- on the API server -------------------------------------------------------------------------------


@pytest.fixture
def cluster_helm(helm_binary: str, kubernetes: LocalKubernetes, transfertask_crd: str, tmp_path: Path) -> Helm:
    return Helm(helm_binary, tmp_path, kubernetes.kubeconfig)


@pytest.fixture
def namespaces(kubernetes: LocalKubernetes, unique_name: str) -> Iterator[list[str]]:
    """Three fresh namespaces: the release's, a second watched one, and one the operator must not touch."""
    names = [unique_name, f"{unique_name}-tasks", f"{unique_name}-other"]
    for name in names:
        kubernetes.kubectl("create", "namespace", name)
    yield names
    for name in names:
        kubernetes.kubectl("delete", "namespace", name, "--wait=false", check=False)


def get(kubernetes: LocalKubernetes, *args: str) -> dict[str, Any] | None:
    done = kubernetes.kubectl("get", *args, "-o", "json", check=False)
    if done.returncode != 0:
        assert "NotFound" in done.stderr, done.stderr
        return None
    return dict(json.loads(done.stdout))


def can(kubernetes: LocalKubernetes, account: str, verb: str, resource: str, *args: str) -> bool:
    done = kubernetes.kubectl("auth", "can-i", verb, resource, f"--as={account}", *args, check=False)
    answer = done.stdout.strip()
    assert answer in {"yes", "no"}, f"can-i {verb} {resource} {args}: {done.stdout}{done.stderr}"
    return answer == "yes"


def assert_permissions(
    kubernetes: LocalKubernetes, account: str, allowed: list[tuple[str, ...]], denied: list[tuple[str, ...]]
) -> None:
    wrong = [f"may not: {' '.join(c)}" for c in allowed if not can(kubernetes, account, *c)]
    wrong += [f"may: {' '.join(c)}" for c in denied if can(kubernetes, account, *c)]
    assert not wrong, f"{account}:\n" + "\n".join(wrong)


def test_install_upgrade_uninstall_namespaced(
    cluster_helm: Helm, kubernetes: LocalKubernetes, namespaces: list[str], unique_name: str
) -> None:
    home, tasks, other = namespaces
    release = f"r{unique_name[2:]}"
    fullname = f"{release}-dth-operator"
    values = {
        "watch": {"mode": "namespaced", "namespaces": [home, tasks]},
        "aws": {"region": "eu-central-1", "credentialsSecret": {"name": "aws-keys"}},
        "plugin": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"]},
        "peering": {"name": f"peering-{unique_name}"},
    }
    install = cluster_helm.run(
        "install", release, str(CHART), "--namespace", home, "--values", cluster_helm.values_file(values)
    )
    # NOTES.txt: what to apply next, in the watched namespace.
    assert f"kubectl -n {home} create secret generic source-keys" in install.stdout
    assert "kind: TransferTask" in install.stdout and f"kubectl -n {home} get tt" in install.stdout
    # Two namespaces served under the single-tenant default policy: the notes say what that means.
    assert "WARNING: the tenant policy (tenancy.rules) lets tasks in every namespace" in install.stdout

    deployment = get(kubernetes, "-n", home, "deployment", fullname)
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == [f"--namespace={home}", f"--namespace={tasks}", f"--peering=peering-{unique_name}"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DTH_OBSERVE_INTERVAL"]["value"] == "30"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "aws-keys", "key": "AWS_ACCESS_KEY_ID"}
    # The API server kept the hardening (it drops fields it does not know).
    assert container["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert get(kubernetes, "-n", home, "serviceaccount", fullname) is not None
    assert get(kubernetes, "-n", home, "service", f"{fullname}-metrics") is not None
    for namespace in (home, tasks):
        assert get(kubernetes, "-n", namespace, "role", fullname) is not None
        assert get(kubernetes, "-n", namespace, "rolebinding", fullname) is not None
        assert get(kubernetes, "-n", namespace, "kopfpeerings.kopf.dev", f"peering-{unique_name}") is not None
    assert get(kubernetes, "-n", other, "role", fullname) is None
    assert get(kubernetes, "clusterrole", f"{fullname}-{home}") is not None

    account = f"system:serviceaccount:{home}:{fullname}"
    allowed: list[tuple[str, ...]] = [("list", "customresourcedefinitions.apiextensions.k8s.io")]
    allowed += [("watch", "customresourcedefinitions.apiextensions.k8s.io"), ("list", "namespaces")]
    for namespace in (home, tasks):
        n = ("-n", namespace)
        allowed += [(verb, "transfertasks.dth.io", *n) for verb in ("get", "list", "watch", "patch", "update")]
        allowed += [(verb, "transfertasks.dth.io", "--subresource=status", *n) for verb in ("get", "patch", "update")]
        allowed += [("create", "events", *n), ("patch", "events", *n)]
        allowed += [("get", "secrets", *n), ("list", "secrets", *n), ("watch", "secrets", *n)]
        allowed += [(verb, "kopfpeerings.kopf.dev", *n) for verb in ("get", "list", "watch", "patch")]
    denied: list[tuple[str, ...]] = [
        ("get", "secrets", "-n", other),
        ("list", "secrets", "-n", other),
        ("watch", "secrets", "-n", other),
        ("list", "transfertasks.dth.io", "-n", other),
        ("create", "events", "-n", other),
        ("list", "transfertasks.dth.io", "--all-namespaces"),
        ("get", "secrets", "--all-namespaces"),
        ("delete", "secrets", "-n", tasks),
        ("create", "secrets", "-n", tasks),
        ("update", "secrets", "-n", tasks),
        ("create", "transfertasks.dth.io", "-n", tasks),
        ("delete", "transfertasks.dth.io", "-n", tasks),
        ("create", "pods", "-n", tasks),
        ("create", "pods", "-n", home),
        ("update", "deployments.apps", "-n", home),
        ("delete", "deployments.apps", "-n", home),
        ("create", "roles.rbac.authorization.k8s.io", "-n", tasks),
        ("create", "kopfpeerings.kopf.dev", "-n", tasks),
        ("delete", "kopfpeerings.kopf.dev", "-n", tasks),
        ("patch", "clusterkopfpeerings.kopf.dev"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ("get", "configmaps", "-n", tasks),
        ("create", "namespaces"),
        ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
        ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    ]
    assert_permissions(kubernetes, account, allowed, denied)
    # The webhook: registered with Helm's CA, for the watched namespaces (which 1.20 does not label).
    webhook = get(kubernetes, "validatingwebhookconfiguration", f"{fullname}-{home}")
    assert webhook is not None
    (registered,) = webhook["webhooks"]
    assert registered["clientConfig"]["service"] == {
        "name": f"{fullname}-webhook",
        "namespace": home,
        "path": WEBHOOK_PATH,
        "port": 443,
    }
    ca_bundle = registered["clientConfig"]["caBundle"]
    tls = get(kubernetes, "-n", home, "secret", f"{fullname}-webhook-tls")
    assert tls is not None and tls["data"]["ca.crt"] == ca_bundle

    # Upgrade: one value changes, the others stay.
    generation = deployment["metadata"]["generation"]
    cluster_helm.run(
        "upgrade", release, str(CHART), "--namespace", home, "--reuse-values", "--set", "operator.observeInterval=7"
    )
    upgraded = get(kubernetes, "-n", home, "deployment", fullname)
    assert upgraded is not None
    assert upgraded["metadata"]["generation"] > generation
    (container,) = upgraded["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DTH_OBSERVE_INTERVAL"]["value"] == "7"
    assert env["DTH_AWS_REGION"]["value"] == "eu-central-1"
    assert env["DTH_SUBNETS"]["value"] == "subnet-1"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "aws-keys"
    # The upgrade kept the certificate (a new CA would break the webhook until every pod restarted).
    webhook = get(kubernetes, "validatingwebhookconfiguration", f"{fullname}-{home}")
    assert webhook is not None and webhook["webhooks"][0]["clientConfig"]["caBundle"] == ca_bundle
    tls_after = get(kubernetes, "-n", home, "secret", f"{fullname}-webhook-tls")
    assert tls_after is not None and tls_after["data"]["tls.crt"] == tls["data"]["tls.crt"]
    history = json.loads(cluster_helm.run("history", release, "--namespace", home, "-o", "json").stdout)
    assert [entry["revision"] for entry in history] == [1, 2]

    cluster_helm.run("uninstall", release, "--namespace", home)
    assert get(kubernetes, "-n", home, "deployment", fullname) is None
    assert get(kubernetes, "-n", home, "serviceaccount", fullname) is None
    assert get(kubernetes, "-n", tasks, "role", fullname) is None
    assert get(kubernetes, "-n", tasks, "kopfpeerings.kopf.dev", f"peering-{unique_name}") is None
    assert get(kubernetes, "clusterrole", f"{fullname}-{home}") is None
    assert get(kubernetes, "clusterrolebinding", f"{fullname}-{home}") is None
    assert get(kubernetes, "validatingwebhookconfiguration", f"{fullname}-{home}") is None
    assert not can(kubernetes, account, "get", "secrets", "-n", tasks)
    # Helm never deletes the CRDs of crds/: the tasks outlive the operator.
    assert get(kubernetes, "crd", "transfertasks.dth.io") is not None
    assert get(kubernetes, "crd", "kopfpeerings.kopf.dev") is not None


def test_install_cluster_wide_with_irsa(
    cluster_helm: Helm, kubernetes: LocalKubernetes, namespaces: list[str], unique_name: str
) -> None:
    home, tasks, _ = namespaces
    release = f"c{unique_name[2:]}"
    fullname = f"{release}-dth-operator"
    peering = f"peering-{unique_name}"  # a ClusterKopfPeering is cluster-wide: one name per test
    values = {"watch": {"mode": "clusterWide"}, "aws": {"roleArn": ROLE_ARN}, "peering": {"name": peering}}
    cluster_helm.run("install", release, str(CHART), "--namespace", home, "--values", cluster_helm.values_file(values))
    try:
        account_object = get(kubernetes, "-n", home, "serviceaccount", fullname)
        assert account_object is not None
        assert account_object["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == ROLE_ARN
        assert get(kubernetes, "clusterkopfpeerings.kopf.dev", peering) is not None
        assert get(kubernetes, "-n", home, "role", fullname) is None
        deployment = get(kubernetes, "-n", home, "deployment", fullname)
        assert deployment is not None
        assert "--all-namespaces" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]

        account = f"system:serviceaccount:{home}:{fullname}"
        allowed: list[tuple[str, ...]] = [
            ("list", "transfertasks.dth.io", "--all-namespaces"),
            ("watch", "transfertasks.dth.io", "--all-namespaces"),
            ("patch", "transfertasks.dth.io", "-n", tasks),
            ("update", "transfertasks.dth.io", "-n", "default"),
            ("patch", "transfertasks.dth.io", "--subresource=status", "-n", tasks),
            ("get", "secrets", "-n", tasks),
            ("get", "secrets", "-n", "default"),
            ("list", "secrets", "--all-namespaces"),
            ("watch", "secrets", "--all-namespaces"),
            ("create", "events", "-n", tasks),
            ("list", "clusterkopfpeerings.kopf.dev"),
            ("watch", "clusterkopfpeerings.kopf.dev"),
            ("patch", "clusterkopfpeerings.kopf.dev"),
            ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ]
        denied: list[tuple[str, ...]] = [
            ("delete", "secrets", "-n", tasks),
            ("create", "secrets", "-n", tasks),
            ("create", "pods", "-n", tasks),
            ("update", "deployments.apps", "-n", home),
            ("create", "transfertasks.dth.io", "-n", tasks),
            ("delete", "transfertasks.dth.io", "-n", tasks),
            ("delete", "clusterkopfpeerings.kopf.dev"),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
            ("patch", "kopfpeerings.kopf.dev", "-n", tasks),
            ("list", "namespaces"),
        ]
        assert_permissions(kubernetes, account, allowed, denied)
    finally:
        cluster_helm.run("uninstall", release, "--namespace", home, check=False)
    assert get(kubernetes, "clusterkopfpeerings.kopf.dev", peering) is None
    assert get(kubernetes, "clusterrole", f"{fullname}-{home}") is None


# --- the web console (console.*) ---------------------------------------------------------------------------

CONSOLE = f"{FULLNAME}-console"
#: What the console's own ServiceAccount may do: impersonate, read tasks and Events, ask SubjectAccessReviews.
CONSOLE_READ_RULES = {("dth.io", "transfertasks"): {"get", "list", "watch"}, ("", "events"): {"get", "list", "watch"}}
CONSOLE_CLUSTER_RULES = {
    ("", "users"): {"impersonate"},
    ("", "groups"): {"impersonate"},
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
}


def test_the_console_is_off_by_default(helm: Helm) -> None:
    assert not [kind for kind in rendered(helm).kinds() if "console" in kind[1]]


def test_the_console_runs_the_operator_image_hardened_with_its_secrets_from_the_secret(helm: Helm) -> None:
    values = {
        "console": {
            "enabled": True,
            **CONSOLE_OIDC,
            "oidc": {**CONSOLE_OIDC["oidc"], "usernameClaim": "preferred_username", "groupsPrefix": "oidc:"},
            "prometheus": {"url": "http://prometheus.monitoring:9090"},
        },
        "image": {"repository": "registry.example/dth/operator", "tag": "1.2.3"},
    }
    out = rendered(helm, values)
    console = out.one("Deployment", CONSOLE)
    operator = out.one("Deployment", FULLNAME)
    pod = console["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/dth/operator:1.2.3"  # the operator's image holds the dth CLI
    assert container["command"] == ["dth", "console", "--host", "0.0.0.0", "--port", "8080"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env == {
        "DTH_CONSOLE_OIDC_ISSUER": "https://login.example.com/realms/dth",
        "DTH_CONSOLE_OIDC_CLIENT_ID": "dth-console",
        "DTH_CONSOLE_OIDC_CLIENT_SECRET": {"secretKeyRef": {"name": "oidc", "key": "client-secret"}},
        "DTH_CONSOLE_SESSION_SECRET": {"secretKeyRef": {"name": "oidc", "key": "session-secret"}},
        "DTH_CONSOLE_PUBLIC_URL": "https://dth.example.com",
        "DTH_CONSOLE_USERNAME_CLAIM": "preferred_username",
        "DTH_CONSOLE_GROUPS_CLAIM": "groups",
        "DTH_CONSOLE_GROUPS_PREFIX": "oidc:",
        "DTH_CONSOLE_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
        "DTH_CONSOLE_NAMESPACES": "",
        "DTH_CONSOLE_SECURE_COOKIES": "true",
    }
    # Probes on /healthz (no sign-in), hardened like the operator, its own ServiceAccount.
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == CONSOLE
    assert out.one("ServiceAccount", CONSOLE)
    # Neither Deployment's selector matches the other's pods; the Service reaches the console's only.
    console_labels = console["spec"]["template"]["metadata"]["labels"]
    operator_labels = operator["spec"]["template"]["metadata"]["labels"]
    assert not operator["spec"]["selector"]["matchLabels"].items() <= console_labels.items()
    assert not console["spec"]["selector"]["matchLabels"].items() <= operator_labels.items()
    service = out.one("Service", CONSOLE)
    assert service["spec"]["selector"].items() <= console_labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert not out.all("Ingress")
    # RBAC: cluster-wide reads (no console.namespaces), impersonation, SubjectAccessReviews; never Secrets.
    role = out.one("ClusterRole", f"{CONSOLE}-{NAMESPACE}")
    assert rules(role) == {**CONSOLE_CLUSTER_RULES, **CONSOLE_READ_RULES, ("", "namespaces"): {"list"}}
    binding = out.one("ClusterRoleBinding", f"{CONSOLE}-{NAMESPACE}")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": CONSOLE, "namespace": NAMESPACE}]
    # No secret value anywhere in what the chart renders for the console.
    assert "session-secret" in json.dumps(console) and "client-secret" in json.dumps(console)
    assert not [o for o in out.all("Secret") if "console" in o["metadata"]["name"]]


def test_the_console_ingress_and_namespaces(helm: Helm) -> None:
    out = rendered(helm, VALUE_SETS["console-ingress-namespaced"])
    ingress = out.one("Ingress", CONSOLE)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["dth.example.com"], "secretName": "t"}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "dth.example.com"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": CONSOLE, "port": {"name": "http"}}}
    # Reads only in the listed namespaces; impersonation and reviews stay cluster-wide (they have no namespace).
    assert rules(out.one("ClusterRole", f"{CONSOLE}-{NAMESPACE}")) == CONSOLE_CLUSTER_RULES
    for namespace in ("team-a", "team-b"):
        assert rules(out.one("Role", CONSOLE, namespace)) == CONSOLE_READ_RULES
        assert out.one("RoleBinding", CONSOLE, namespace)["subjects"][0]["name"] == CONSOLE
    (container,) = out.one("Deployment", CONSOLE)["spec"]["template"]["spec"]["containers"]
    assert {"name": "DTH_CONSOLE_NAMESPACES", "value": "team-a,team-b"} in container["env"]


@pytest.mark.parametrize(
    ("console", "complaint"),
    [
        ({"publicUrl": "https://x.example"}, "console.oidc.issuer"),
        ({**CONSOLE_OIDC, "oidc": {"issuer": "https://i.example", "existingSecret": "s"}}, "console.oidc.clientId"),
        ({**CONSOLE_OIDC, "oidc": {"issuer": "https://i.example", "clientId": "c"}}, "console.oidc.existingSecret"),
        ({"oidc": CONSOLE_OIDC["oidc"]}, "console.publicUrl"),
        ({**CONSOLE_OIDC, "ingress": {"enabled": True}}, "console.ingress.host"),
        ({**CONSOLE_OIDC, "oidc": {**CONSOLE_OIDC["oidc"], "clientSecret": "x"}}, "clientSecret"),
        ({**CONSOLE_OIDC, "namespaces": ["Team_A"]}, "console.namespaces.0"),
    ],
)
def test_incomplete_console_values_are_refused(helm: Helm, console: dict[str, Any], complaint: str) -> None:
    assert complaint in refused(helm, {"console": {"enabled": True, **console}})


def test_install_with_the_console_and_ask_its_service_account(
    cluster_helm: Helm, kubernetes: LocalKubernetes, namespaces: list[str], unique_name: str
) -> None:
    home, tasks, other = namespaces
    release = f"r{unique_name[2:]}"
    console = f"{release}-dth-operator-console"
    values = {
        "watch": {"mode": "namespaced", "namespaces": [home, tasks]},
        "peering": {"name": f"peering-{unique_name}"},
        "webhook": {"enabled": False},
        "console": {"enabled": True, **CONSOLE_OIDC, "ingress": {"enabled": True, "host": "dth.example.com"}},
    }
    install = cluster_helm.run(
        "install", release, str(CHART), "--namespace", home, "--values", cluster_helm.values_file(values)
    )
    # NOTES.txt: the redirect URI to register and the Secret's keys.
    assert "https://dth.example.com/auth/callback as a redirect URI" in install.stdout
    assert "client-secret and session-secret" in install.stdout
    deployment = get(kubernetes, "-n", home, "deployment", console)
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The API server kept the hardening and the probes.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert get(kubernetes, "-n", home, "service", console) is not None
    assert get(kubernetes, "-n", home, "ingress.networking.k8s.io", console) is not None
    account = f"system:serviceaccount:{home}:{console}"
    allowed: list[tuple[str, ...]] = [
        ("impersonate", "users"),
        ("impersonate", "groups"),
        ("create", "subjectaccessreviews.authorization.k8s.io"),
        ("list", "transfertasks.dth.io", "--all-namespaces"),
        ("watch", "transfertasks.dth.io", "--all-namespaces"),
        ("get", "transfertasks.dth.io", "-n", other),
        ("list", "events", "--all-namespaces"),
        ("watch", "events", "-n", tasks),
        ("list", "namespaces"),
    ]
    denied: list[tuple[str, ...]] = [
        ("get", "secrets", "-n", tasks),
        ("list", "secrets", "--all-namespaces"),
        ("create", "secrets", "-n", tasks),
        ("create", "transfertasks.dth.io", "-n", tasks),
        ("patch", "transfertasks.dth.io", "-n", tasks),
        ("update", "transfertasks.dth.io", "-n", tasks),
        ("delete", "transfertasks.dth.io", "-n", tasks),
        ("patch", "transfertasks.dth.io", "--subresource=status", "-n", tasks),
        ("create", "events", "-n", tasks),
        ("impersonate", "serviceaccounts", "-n", tasks),
        ("create", "pods", "-n", home),
        ("get", "configmaps", "-n", home),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", tasks),
        ("create", "tokenreviews.authentication.k8s.io"),
        ("delete", "namespaces"),
        ("create", "namespaces"),
    ]
    assert_permissions(kubernetes, account, allowed, denied)
    cluster_helm.run("uninstall", release, "--namespace", home)
    assert get(kubernetes, "-n", home, "deployment", console) is None
    assert get(kubernetes, "clusterrole", f"{console}-{home}") is None
    assert not can(kubernetes, account, "impersonate", "users")
