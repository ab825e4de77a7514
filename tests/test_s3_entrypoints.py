"""`dth s3 finder` and `dth s3 worker` read what the S3 plugin's task definitions give them: every DTH_*
variable the template sets reaches the engine, with the per-field spec variables as with DTH_TASK_SPEC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import boto3
import pytest

from dth.devtools.faultproxy import FaultProxy
from dth.devtools.moto import MotoServer
from dth.errors import SpecError
from dth.s3.entrypoints import EngineEnvironment
from dth.spec.cfn import (
    PluginSettings,
    load_template,
    parameter_keys,
    queue_visibility_timeout,
    s3_stack_parameters,
    stack_spec,
)
from dth.spec.environment import spec_environment
from dth.spec.load import parse_task_spec
from dth.spec.model import MiB, S3TaskSpec
from dth.state.sqs import create_queues

SETTINGS = PluginSettings(image="registry.example/dth:1", subnets=["subnet-1"], security_groups=["sg-1"])
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:dth/src-AbCdEf"
# What the template's resources resolve to (Ref of the queues and the table).
RESOURCES = {
    "Queue": "https://sqs.us-east-1.amazonaws.com/123456789012/work",
    "DeadLetterQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/work-dlq",
    "StatusTable": "work-status",
}


def s3_spec(*, secret: bool = True, **options: Any) -> S3TaskSpec:
    spec = parse_task_spec(
        {
            "type": "S3",
            "source": {"bucket": "src-bucket", **({"credentials": {"secretsManagerArn": SECRET}} if secret else {})},
            "destination": {"bucket": "dst-bucket"},
            "options": options,
        }
    )
    assert isinstance(spec, S3TaskSpec)
    return spec


def container_environment(container: str, spec: S3TaskSpec) -> dict[str, str]:
    """A container's environment as ECS would give it for this spec: every Ref resolved."""
    template = load_template("s3-plugin.yaml")
    parameters = parameter_keys(s3_stack_parameters("ns-task", spec, SETTINGS))
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::ECS::TaskDefinition":
            continue
        for definition in resource["Properties"]["ContainerDefinitions"]:
            if definition["Name"] != container:
                continue
            resolved: dict[str, str] = {}
            for item in definition["Environment"]:
                value = item["Value"]
                if isinstance(value, dict):
                    name = value["Ref"]
                    value = parameters[name] if name in parameters else RESOURCES[name]
                resolved[item["Name"]] = str(value)
            return resolved
    raise AssertionError(f"no container {container!r} in the S3 template")


def clean_environment(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name in [name for name in os.environ if name.startswith(("DTH_", "AWS_"))]:
        monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.mark.parametrize("container", ["finder", "worker"])
def test_every_variable_the_template_sets_reaches_the_engine(monkeypatch: pytest.MonkeyPatch, container: str) -> None:
    spec = s3_spec(chunkSize="512MiB", multipartThreshold="512MiB")
    environment = container_environment(container, spec)
    clean_environment(monkeypatch, environment)
    engine = EngineEnvironment.from_environment()
    assert engine.task_name == "ns-task"
    assert engine.spec == stack_spec(spec)
    assert engine.state.queue_url == RESOURCES["Queue"]
    assert engine.state.dead_letter_queue_url == RESOURCES["DeadLetterQueue"]
    assert engine.state.table_name == RESOURCES["StatusTable"]
    assert environment["DTH_LOG_FORMAT"] == "json"  # read by the command line (dth.cli.main)
    if container == "worker":
        # Receives hide a message as long as the queue the template made does by default, not a fixed 300 s.
        assert engine.visibility_timeout == queue_visibility_timeout(512 * MiB) == 1536
    read = {"DTH_TASK_NAME", "DTH_QUEUE_URL", "DTH_DLQ_URL", "DTH_TABLE_NAME", "DTH_LOG_FORMAT"}
    read |= set(spec_environment(spec)) | set(EngineEnvironment.SETTINGS)
    assert {name for name in environment if name.startswith("DTH_")} <= read


@pytest.mark.parametrize("spec_by", ["per-field variables", "DTH_TASK_SPEC"])
def test_the_engine_settings_are_read_however_the_spec_is_given(monkeypatch: pytest.MonkeyPatch, spec_by: str) -> None:
    spec = s3_spec()
    given = (
        spec_environment(spec)
        if spec_by == "per-field variables"
        else {"DTH_TASK_SPEC": spec.model_dump_json(by_alias=True)}
    )
    clean_environment(
        monkeypatch,
        {
            **given,
            "DTH_TASK_NAME": "ns-task",
            "DTH_STATE_PATH": "/nonexistent/state.sqlite",
            "DTH_VISIBILITY_TIMEOUT": "7",
            "DTH_SCAN_LOCK_SECONDS": "42",
            "DTH_RETRY_BASE_DELAY": "0.25",
        },
    )
    engine = EngineEnvironment.from_environment()
    assert (engine.visibility_timeout, engine.scan_lock_seconds, engine.retry_base_delay) == (7, 42, 0.25)
    monkeypatch.setenv("DTH_SCAN_LOCK_SECONDS", "-1")
    with pytest.raises(SpecError, match="DTH_SCAN_LOCK_SECONDS must be positive"):
        EngineEnvironment.from_environment()
    monkeypatch.setenv("DTH_SCAN_LOCK_SECONDS", "soon")
    with pytest.raises(SpecError, match="DTH_SCAN_LOCK_SECONDS must be a number of seconds"):
        EngineEnvironment.from_environment()


def test_the_worker_receives_with_the_visibility_timeout_it_is_given(moto_server: MotoServer, unique_name: str) -> None:
    """Through a recording proxy in front of moto's SQS: the ReceiveMessage requests `dth s3 worker` sends,
    started with the per-field variables as the template starts it, ask for DTH_VISIBILITY_TIMEOUT."""
    session = boto3.Session("testing", "testing", region_name="us-east-1")
    queue_url, dlq_url = create_queues(session.client("sqs", endpoint_url=moto_server.endpoint_url), unique_name)
    spec = s3_spec(secret=False)  # the keys come from the environment: no Secrets Manager here
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DTH_")) or k == "AWS_CA_BUNDLE"}
    with FaultProxy(moto_server.endpoint_url, record=True) as proxy:
        env.update(
            spec_environment(spec),
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION="us-east-1",
            AWS_ENDPOINT_URL_SQS=proxy.url,
            AWS_ENDPOINT_URL_DYNAMODB=moto_server.endpoint_url,
            DTH_TASK_NAME=unique_name,
            DTH_QUEUE_URL=queue_url,
            DTH_DLQ_URL=dlq_url,
            DTH_TABLE_NAME=unique_name,
            DTH_VISIBILITY_TIMEOUT="7",
        )
        done = subprocess.run(
            [sys.executable, "-m", "dth", "s3", "worker", "--exit-when-idle", "0.5"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        # The work queue's receives: an idle worker also sweeps the dead-letter queue, with its own timeout.
        receives = [
            body
            for body in (
                json.loads(request.body)
                for request in proxy.recorded
                if request.headers.get("x-amz-target") == "AmazonSQS.ReceiveMessage"
            )
            if body.get("QueueUrl") == queue_url
        ]
    assert receives, [request.headers.get("x-amz-target") for request in proxy.recorded]
    assert {receive["VisibilityTimeout"] for receive in receives} == {7}
