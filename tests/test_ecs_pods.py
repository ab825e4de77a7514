"""The ECS runner's pod mode: a task definition's container becomes a Pod that runs exactly what it says."""

from __future__ import annotations

from typing import Any, cast

from dth.devtools.ecs_pods import PodLauncher
from dth.devtools.ecs_runner import ContainerSpec

DEFINITION = {
    "name": "worker",
    "image": "localhost/dth/engine:abc",
    "command": ["s3", "worker"],
    "user": "10001:10001",
    "readonlyRootFilesystem": True,
    "mountPoints": [{"sourceVolume": "tmp", "containerPath": "/tmp"}],
    "environment": [{"name": "DTH_TASK_NAME", "value": "copy"}, {"name": "DTH_LOG_FORMAT", "value": "json"}],
    "stopTimeout": 40,
}


def manifest(definition: dict[str, Any], override: dict[str, Any] | None = None) -> dict[str, Any]:
    container = ContainerSpec.from_definition(definition, "/usr/bin/python3", override).in_pod()
    launcher = PodLauncher(
        cast(Any, None), "ns", aws_endpoint="http://10.244.0.1:5000", access_key="key", secret_key="secret"
    )
    return launcher.pod_manifest("pod-1", container, "eu-west-1", {"app": "x"})


def test_the_pod_runs_the_definitions_image_command_environment_user_and_volumes() -> None:
    pod = manifest(DEFINITION)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "localhost/dth/engine:abc"
    assert container["imagePullPolicy"] == "Never"
    assert "command" not in container  # the image's entrypoint (dth) stays
    assert container["args"] == ["s3", "worker"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == {
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "DTH_TASK_NAME": "copy",
        "DTH_LOG_FORMAT": "json",
        "AWS_ENDPOINT_URL": "http://10.244.0.1:5000",
    }
    # The keys come from a Secret, never from the pod's spec.
    assert container["envFrom"] == [{"secretRef": {"name": PodLauncher.credentials_secret}}]
    assert "secret" not in str(env)
    assert container["securityContext"] == {"readOnlyRootFilesystem": True, "runAsUser": 10001, "runAsGroup": 10001}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 40


def test_an_entry_point_and_overrides_are_the_definitions_own() -> None:
    definition = {**DEFINITION, "entryPoint": ["/bin/sh", "-c"], "user": None, "readonlyRootFilesystem": False}
    override = {"command": ["echo hi"], "environment": [{"name": "DTH_TASK_NAME", "value": "other"}]}
    (container,) = manifest(definition, override)["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    assert container["args"] == ["echo hi"]
    assert {item["name"]: item["value"] for item in container["env"]}["DTH_TASK_NAME"] == "other"
    assert container["securityContext"] == {"readOnlyRootFilesystem": False}  # the image's own user


def test_volume_names_are_valid_dns_labels() -> None:
    from dth.devtools.ecs_pods import _volume_name

    assert _volume_name("My_Volume.1") == "my-volume-1"
