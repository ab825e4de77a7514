"""The plugin templates deployed on moto server: create, update, delete, and the resources as the spec asked.

moto emulates a part of CloudFormation (see /work/shared/notes/aws-local.md and the notes here): alarms,
scaling, queue policies, table SSE and point-in-time recovery are skipped or ignored by it and are checked
as written in test_cfn_templates.py; an update only touches resources that name a changed parameter, and
re-registers task definitions without their containers, so updates are checked on what moto does update.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dth.devtools.moto import MotoServer
from dth.devtools.stacks import LocalStacks
from dth.spec.cfn import (
    PluginSettings,
    image_stack_parameters,
    parameter_keys,
    queue_visibility_timeout,
    s3_stack_parameters,
    stack_spec,
    template_path,
)
from dth.spec.environment import spec_from_environment
from dth.spec.image import ImageTaskSpec
from dth.spec.load import parse_task_spec
from dth.spec.model import MiB, S3TaskSpec

S3_OUTPUTS = {
    "QueueUrl",
    "DeadLetterQueueUrl",
    "TableName",
    "Cluster",
    "FinderTaskDefinition",
    "WorkerService",
    "LogGroup",
    "AlarmTopic",
}
IMAGE_OUTPUTS = {"TableName", "Cluster", "TaskDefinition", "LogGroup", "AlarmTopic"}


@pytest.fixture
def stacks(moto_server: MotoServer) -> LocalStacks:
    return LocalStacks(moto_server.endpoint_url)


def container(stacks: LocalStacks, task_definition: str) -> dict[str, Any]:
    (definition,) = stacks.ecs.describe_task_definition(taskDefinition=task_definition)["taskDefinition"][
        "containerDefinitions"
    ]
    return dict(definition)


def role_policies(stacks: LocalStacks, role: str) -> dict[str, str]:
    """{policy name: its document as JSON text} of a role's inline policies (AWS::IAM::Policy attaches so)."""
    iam = stacks.client("iam")
    return {
        name: json.dumps(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
    }


def environment_of(definition: dict[str, Any]) -> dict[str, str]:
    # moto returns a Number parameter's value as a number; ECS (and the local runner) pass text.
    return {item["name"]: str(item["value"]) for item in definition["environment"]}


def test_s3_plugin_stack_create_update_delete(stacks: LocalStacks, unique_name: str) -> None:
    secrets = stacks.client("secretsmanager")
    arn = secrets.create_secret(Name=f"{unique_name}/keys", SecretString="{}")["ARN"]
    spec = parse_task_spec(
        {
            "type": "S3",
            "source": {"bucket": "src-bucket", "prefix": "in/", "credentials": {"secretName": "keys"}},
            "destination": {"bucket": "dst-bucket", "prefix": "out/", "storageClass": "STANDARD_IA"},
            "options": {"maxRetries": 3, "exclude": ["*.tmp", "a,b"], "deleteExtraneous": True},
            "events": "Create",
        }
    )
    assert isinstance(spec, S3TaskSpec)
    network = stacks.network(unique_name)
    settings = PluginSettings(image="dth:test", subnets=network.subnets, security_groups=network.security_groups)
    name = f"{unique_name}-s3"
    task_name = f"default-{unique_name}"
    parameters = s3_stack_parameters(task_name, spec, settings, secret_arns={"keys": arn})
    assert stacks.create(name, template_path("s3-plugin.yaml"), parameters)["StackStatus"] == "CREATE_COMPLETE"
    outputs = stacks.outputs(name)
    assert set(outputs) == S3_OUTPUTS

    # The queue and its dead-letter queue: redrive after maxRetries + 1 receives, SSE, visibility from chunkSize.
    sqs = stacks.client("sqs")
    queue = sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(queue["RedrivePolicy"])
    assert (redrive["deadLetterTargetArn"], int(redrive["maxReceiveCount"])) == (dlq["QueueArn"], 4)
    assert queue["SqsManagedSseEnabled"] == dlq["SqsManagedSseEnabled"] == "true"
    assert queue["VisibilityTimeout"] == str(queue_visibility_timeout(spec.options.chunk_size))
    assert queue["MessageRetentionPeriod"] == "1209600"

    # The status table has the store's keys (dth.state.dynamodb) and is billed on demand.
    table = stacks.client("dynamodb").describe_table(TableName=outputs["TableName"])["Table"]
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    # The task definitions run the entrypoints, and their environment is the spec as the stack runs it.
    finder = container(stacks, outputs["FinderTaskDefinition"])
    services = stacks.ecs.describe_services(cluster=outputs["Cluster"], services=[outputs["WorkerService"]])["services"]
    (service,) = services
    worker = container(stacks, service["taskDefinition"])
    assert (finder["command"], worker["command"]) == (["s3", "finder"], ["s3", "worker"])
    assert finder["image"] == worker["image"] == "dth:test"
    expected = stack_spec(spec, {"keys": arn})
    for definition in (finder, worker):
        environment = environment_of(definition)
        assert spec_from_environment(environment) == expected
        assert environment["DTH_SPEC_SOURCE_CREDENTIALS_SECRETS_MANAGER_ARN"] == arn
        assert environment["DTH_QUEUE_URL"] == outputs["QueueUrl"]
        assert environment["DTH_DLQ_URL"] == outputs["DeadLetterQueueUrl"]
        assert environment["DTH_TABLE_NAME"] == outputs["TableName"]
        assert environment["DTH_TASK_NAME"] == task_name
        assert definition["logConfiguration"]["logDriver"] == "awslogs"
    assert service["desiredCount"] == 1

    # The finder runs once, when the stack is created or updated.
    events = stacks.client("events")
    rules = [stacks.resources(name)[logical]["PhysicalResourceId"] for logical in ("FinderOnceRule",)]
    (rule,) = [events.describe_rule(Name=rule) for rule in rules]
    pattern = json.loads(rule["EventPattern"])
    assert pattern["resources"] == [stacks.describe(name)["StackId"]]
    assert rule["State"] == "ENABLED"
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["EcsParameters"]["TaskDefinitionArn"] == outputs["FinderTaskDefinition"]
    assert "FinderScheduleRule" not in stacks.resources(name)

    # Least privilege, as deployed: the secret's ARN (the Kubernetes Secret's copy) and the buckets.
    role = stacks.resources(name)["TaskRole"]["PhysicalResourceId"]
    policies = role_policies(stacks, role)
    assert set(policies) == {"transfer", "transfer-source-credentials", "transfer-delete-from-destination"}
    assert arn in policies["transfer-source-credentials"]
    assert "arn:aws:s3:::dst-bucket/out/*" in policies["transfer"]
    assert "s3:DeleteObject" in policies["transfer-delete-from-destination"]  # deleteExtraneous is on

    # Update: a larger chunk size lengthens the queue's visibility timeout, suspending takes the workers away,
    # and a new copy of the Kubernetes Secret is what the task role may read. (moto only updates resources
    # that `Ref` a changed parameter: a bucket named in an Fn::Sub would stay as it was.)
    rotated = secrets.create_secret(Name=f"{unique_name}/keys-2", SecretString="{}")["ARN"]
    changed = spec.model_copy(
        update={
            "options": spec.options.model_copy(update={"chunk_size": 512 * MiB, "multipart_threshold": 512 * MiB}),
            "suspend": True,
        }
    )
    parameters = s3_stack_parameters(task_name, changed, settings, secret_arns={"keys": rotated})
    assert parameter_keys(parameters)["QueueVisibilityTimeout"] == "1536"
    assert stacks.update(name, template_path("s3-plugin.yaml"), parameters)["StackStatus"] == "UPDATE_COMPLETE"
    queue = sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert queue["VisibilityTimeout"] == "1536"
    (service,) = stacks.ecs.describe_services(cluster=outputs["Cluster"], services=[outputs["WorkerService"]])[
        "services"
    ]
    assert service["desiredCount"] == 0
    policies = role_policies(stacks, role)
    assert rotated in policies["transfer-source-credentials"] and arn not in json.dumps(policies)
    assert stacks.parameters(name)["OptionsChunkSize"] == str(512 * MiB)

    # Delete: the queues and the table go (moto keeps ECS services: LocalStacks removes them, as CloudFormation would).
    stack_id = stacks.describe(name)["StackId"]
    stacks.delete(name)
    assert stacks.describe(stack_id)["StackStatus"] == "DELETE_COMPLETE"
    assert outputs["QueueUrl"].rsplit("/", 1)[-1] not in json.dumps(sqs.list_queues().get("QueueUrls", []))
    assert outputs["TableName"] not in stacks.client("dynamodb").list_tables()["TableNames"]


def test_image_plugin_stack_create_update_delete(stacks: LocalStacks, unique_name: str) -> None:
    secrets = stacks.client("secretsmanager")
    first = secrets.create_secret(Name=f"{unique_name}/one", SecretString="{}")["ARN"]
    second = secrets.create_secret(Name=f"{unique_name}/two", SecretString="{}")["ARN"]
    spec = ImageTaskSpec.model_validate(
        {
            "type": "Image",
            "source": {"type": "Registry", "registry": "quay.io", "images": {"names": ["coreos/etcd:v3.5.0"]}},
            "destination": {
                "type": "Amazon_ECR",
                "accountId": "123456789012",
                "region": "us-east-1",
                "prefix": "mirror/",
                "credentials": {"secretsManagerArn": first},
            },
            "schedule": "0 3 * * *",
        }
    )
    network = stacks.network(unique_name)
    settings = PluginSettings(image="dth:test", subnets=network.subnets, security_groups=network.security_groups)
    name = f"{unique_name}-image"
    parameters = image_stack_parameters(f"default-{unique_name}", spec, settings)
    assert stacks.create(name, template_path("image-plugin.yaml"), parameters)["StackStatus"] == "CREATE_COMPLETE"
    outputs = stacks.outputs(name)
    assert set(outputs) == IMAGE_OUTPUTS

    sync = container(stacks, outputs["TaskDefinition"])
    assert sync["command"] == ["image", "sync-env"]
    environment = environment_of(sync)
    assert ImageTaskSpec.model_validate(json.loads(environment["DTH_TASK_SPEC"])) == spec
    assert environment["DTH_TABLE_NAME"] == outputs["TableName"]
    table = stacks.client("dynamodb").describe_table(TableName=outputs["TableName"])["Table"]
    assert [key["AttributeName"] for key in table["KeySchema"]] == ["pk", "sk"]

    events = stacks.client("events")
    resources = stacks.resources(name)
    schedule = events.describe_rule(Name=resources["SyncScheduleRule"]["PhysicalResourceId"])
    assert (schedule["ScheduleExpression"], schedule["State"]) == ("cron(0 3 * * ? *)", "ENABLED")
    (target,) = events.list_targets_by_rule(Rule=schedule["Name"])["Targets"]
    assert target["EcsParameters"]["TaskDefinitionArn"] == outputs["TaskDefinition"]
    assert "SyncOnceRule" not in resources
    failed = events.describe_rule(Name=resources["TaskFailedRule"]["PhysicalResourceId"])
    assert json.loads(failed["EventPattern"])["detail"]["taskDefinitionArn"] == [outputs["TaskDefinition"]]
    (target,) = events.list_targets_by_rule(Rule=failed["Name"])["Targets"]
    assert target["Arn"] == outputs["AlarmTopic"]

    role = resources["TaskRole"]["PhysicalResourceId"]
    policies = role_policies(stacks, role)
    assert set(policies) == {
        "sync-images",
        "sync-images-ecr-login",
        "sync-images-push-under-destination-prefix",
        "sync-images-destination-credentials",
    }
    push = policies["sync-images-push-under-destination-prefix"]
    assert "repository/mirror/*" in push and "ecr:CreateRepository" in push
    assert first in policies["sync-images-destination-credentials"]

    # Update: other destination credentials are what the task role may read.
    changed = spec.model_copy(
        update={
            "destination": spec.destination.model_copy(
                update={"credentials": spec.destination.credentials.model_copy(update={"secrets_manager_arn": second})}  # type: ignore[union-attr]
            )
        }
    )
    parameters = image_stack_parameters(f"default-{unique_name}", changed, settings)
    assert stacks.update(name, template_path("image-plugin.yaml"), parameters)["StackStatus"] == "UPDATE_COMPLETE"
    policies = role_policies(stacks, role)
    assert second in policies["sync-images-destination-credentials"] and first not in json.dumps(policies)

    stack_id = stacks.describe(name)["StackId"]
    stacks.delete(name)
    assert stacks.describe(stack_id)["StackStatus"] == "DELETE_COMPLETE"
    assert outputs["TableName"] not in stacks.client("dynamodb").list_tables()["TableNames"]


def test_a_permissions_boundary_bounds_every_role_of_both_stacks(stacks: LocalStacks, unique_name: str) -> None:
    iam = stacks.client("iam")
    boundary = iam.create_policy(
        PolicyName=f"{unique_name}-boundary",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )["Policy"]["Arn"]
    network = stacks.network(unique_name)
    settings = PluginSettings(
        image="dth:test",
        subnets=network.subnets,
        security_groups=network.security_groups,
        permissions_boundary=boundary,
    )
    s3 = parse_task_spec({"type": "S3", "source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}})
    image = ImageTaskSpec.model_validate(
        {
            "type": "Image",
            "source": {"type": "Registry", "registry": "quay.io", "images": {"all": True}},
            "destination": {"type": "Registry", "registry": "r.example"},
        }
    )
    assert isinstance(s3, S3TaskSpec)
    for template, parameters in (
        ("s3-plugin.yaml", s3_stack_parameters(f"default-{unique_name}", s3, settings)),
        ("image-plugin.yaml", image_stack_parameters(f"default-{unique_name}", image, settings)),
    ):
        name = f"{unique_name}-{template.split('.')[0]}"
        assert stacks.create(name, template_path(template), parameters)["StackStatus"] == "CREATE_COMPLETE"
        roles = [r for r in stacks.resources(name).values() if r["ResourceType"] == "AWS::IAM::Role"]
        assert len(roles) == 3
        for role in roles:
            found = iam.get_role(RoleName=role["PhysicalResourceId"])["Role"]
            assert found["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary, role["LogicalResourceId"]
        stacks.delete(name)
