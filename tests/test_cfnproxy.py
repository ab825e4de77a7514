"""The CloudFormation stand-in (dth.devtools.cfnproxy) with boto3, in front of the real moto server: stacks held
in progress, AWS's refusals, and scripted failures with their events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest

from dth.devtools.cfnproxy import CfnProxy
from dth.devtools.moto import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, MotoServer
from dth.devtools.waiting import wait_for

TEMPLATE = json.dumps(
    {
        "Parameters": {"Size": {"Type": "String"}},
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"QueueUrl": {"Value": {"Ref": "Queue"}}, "Size": {"Value": {"Ref": "Size"}}},
    }
)


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[CfnProxy]:
    # A long hold: every phase ends when the test releases it, never by the clock (except where a test says).
    with CfnProxy(moto_server.endpoint_url, hold=600) as running:
        yield running


def client(endpoint: str, service: str = "cloudformation") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
    )


def create(cloudformation: Any, name: str, size: str = "1") -> str:
    return str(
        cloudformation.create_stack(
            StackName=name, TemplateBody=TEMPLATE, Parameters=[{"ParameterKey": "Size", "ParameterValue": size}]
        )["StackId"]
    )


def update(cloudformation: Any, name: str, size: str) -> None:
    cloudformation.update_stack(
        StackName=name, TemplateBody=TEMPLATE, Parameters=[{"ParameterKey": "Size", "ParameterValue": size}]
    )


def stack(cloudformation: Any, name: str) -> dict[str, Any]:
    return dict(cloudformation.describe_stacks(StackName=name)["Stacks"][0])


def refusal(call: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call()
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    return str(raised.value.response["Error"]["Message"])


def failed_events(cloudformation: Any, name: str) -> list[tuple[str, str, str]]:
    """The failed resources' events, newest first (the stack's own events left out)."""
    events = cloudformation.describe_stack_events(StackName=name)["StackEvents"]
    return [
        (e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason", ""))
        for e in events
        if e["ResourceStatus"].endswith("_FAILED") and e["LogicalResourceId"] != name
    ]


def test_create_and_update_are_held_in_progress_and_refuse_updates_and_deletes(
    proxy: CfnProxy, moto_server: MotoServer, unique_name: str
) -> None:
    cloudformation = client(proxy.url)
    stack_id = create(cloudformation, unique_name)
    held = stack(cloudformation, unique_name)
    assert held["StackStatus"] == "CREATE_IN_PROGRESS"
    assert "Outputs" not in held  # AWS has outputs only once the create is complete
    assert refusal(lambda: update(cloudformation, unique_name, "2")) == (
        f"Stack:{stack_id} is in CREATE_IN_PROGRESS state and can not be updated."
    )
    assert proxy.release(unique_name) == "CREATE_COMPLETE"
    assert stack(cloudformation, unique_name)["Outputs"]

    update(cloudformation, unique_name, "2")
    assert stack(cloudformation, unique_name)["StackStatus"] == "UPDATE_IN_PROGRESS"
    assert refusal(lambda: update(cloudformation, unique_name, "3")) == (
        f"Stack:{stack_id} is in UPDATE_IN_PROGRESS state and can not be updated."
    )
    assert refusal(lambda: cloudformation.delete_stack(StackName=unique_name)) == (
        f"Stack [{stack_id}] cannot be deleted while in status UPDATE_IN_PROGRESS"
    )
    assert proxy.release(unique_name) == "UPDATE_COMPLETE"
    assert refusal(lambda: update(cloudformation, unique_name, "2")) == "No updates are to be performed."

    cloudformation.delete_stack(StackName=unique_name)
    assert stack(cloudformation, unique_name)["StackStatus"] == "DELETE_IN_PROGRESS"
    cloudformation.delete_stack(StackName=unique_name)  # accepted again, changes nothing
    assert proxy.release(unique_name) is None
    assert "does not exist" in refusal(lambda: stack(client(moto_server.endpoint_url), unique_name))


def test_a_delete_during_create_cancels_it(proxy: CfnProxy, moto_server: MotoServer, unique_name: str) -> None:
    cloudformation = client(proxy.url)
    create(cloudformation, unique_name)
    cloudformation.delete_stack(StackName=unique_name)  # AWS accepts it: the create is cancelled
    assert stack(cloudformation, unique_name)["StackStatus"] == "DELETE_IN_PROGRESS"
    assert proxy.settle(unique_name) is None
    assert "does not exist" in refusal(lambda: stack(cloudformation, unique_name))


def test_a_failed_create_rolls_back_and_names_the_resource(proxy: CfnProxy, unique_name: str) -> None:
    cloudformation = client(proxy.url)
    proxy.fail_next_create(unique_name, "WorkerService", "Resource handler returned message: subnet not found")
    stack_id = create(cloudformation, unique_name)
    assert proxy.release(unique_name) == "ROLLBACK_IN_PROGRESS"
    assert refusal(lambda: cloudformation.delete_stack(StackName=unique_name)).startswith("Stack [")
    assert proxy.release(unique_name) == "ROLLBACK_COMPLETE"
    rolled_back = stack(cloudformation, unique_name)
    assert rolled_back["StackStatus"] == "ROLLBACK_COMPLETE" and "Outputs" not in rolled_back
    assert failed_events(cloudformation, unique_name) == [
        ("WorkerService", "CREATE_FAILED", "Resource handler returned message: subnet not found")
    ]
    assert refusal(lambda: update(cloudformation, unique_name, "2")) == (
        f"Stack:{stack_id} is in ROLLBACK_COMPLETE state and can not be updated."
    )
    cloudformation.delete_stack(StackName=unique_name)
    assert proxy.release(unique_name) is None
    create(cloudformation, unique_name)  # the name is free again, and the next create succeeds
    assert proxy.release(unique_name) == "CREATE_COMPLETE"


def test_a_failed_update_rolls_back_to_the_previous_parameters(
    proxy: CfnProxy, moto_server: MotoServer, unique_name: str
) -> None:
    cloudformation = client(proxy.url)
    create(cloudformation, unique_name, size="1")
    proxy.settle(unique_name)
    proxy.fail_next_update(unique_name, "WorkerService", "Invalid request provided: CPU too small")
    update(cloudformation, unique_name, "2")
    assert proxy.settle(unique_name) == "UPDATE_ROLLBACK_COMPLETE"
    statuses = [status for _, status, _ in failed_events(cloudformation, unique_name)]
    assert statuses == ["UPDATE_FAILED"]
    parameters = stack(client(moto_server.endpoint_url), unique_name)["Parameters"]
    assert parameters == [{"ParameterKey": "Size", "ParameterValue": "1"}]
    update(cloudformation, unique_name, "2")  # an updatable state: the same change is tried again
    assert proxy.settle(unique_name) == "UPDATE_COMPLETE"
    assert stack(cloudformation, unique_name)["Parameters"] == [{"ParameterKey": "Size", "ParameterValue": "2"}]


def test_a_failed_rollback_waits_for_continue_update_rollback(proxy: CfnProxy, unique_name: str) -> None:
    cloudformation = client(proxy.url)
    stack_id = create(cloudformation, unique_name)
    proxy.settle(unique_name)
    assert "can not continue update rollback" in refusal(
        lambda: cloudformation.continue_update_rollback(StackName=unique_name)
    )
    proxy.fail_next_update(unique_name, "Table", "update failed", rollback_reason="Table was changed outside")
    update(cloudformation, unique_name, "2")
    assert proxy.settle(unique_name) == "UPDATE_ROLLBACK_FAILED"
    described = stack(cloudformation, unique_name)
    assert described["StackStatusReason"] == "The following resource(s) failed to update: [Table]."
    assert failed_events(cloudformation, unique_name) == [
        ("Table", "UPDATE_FAILED", "Table was changed outside"),
        ("Table", "UPDATE_FAILED", "update failed"),
    ]
    assert refusal(lambda: update(cloudformation, unique_name, "3")) == (
        f"Stack:{stack_id} is in UPDATE_ROLLBACK_FAILED state and can not be updated."
    )
    proxy.fail_next_continue_rollback(unique_name, "Table", "still changed outside")
    cloudformation.continue_update_rollback(StackName=unique_name)
    assert stack(cloudformation, unique_name)["StackStatus"] == "UPDATE_ROLLBACK_IN_PROGRESS"
    assert proxy.settle(unique_name) == "UPDATE_ROLLBACK_FAILED"
    cloudformation.continue_update_rollback(StackName=unique_name)
    assert proxy.settle(unique_name) == "UPDATE_ROLLBACK_COMPLETE"


def test_a_failed_delete_keeps_the_stack_until_a_delete_succeeds(
    proxy: CfnProxy, moto_server: MotoServer, unique_name: str
) -> None:
    cloudformation = client(proxy.url)
    create(cloudformation, unique_name)
    proxy.settle(unique_name)
    proxy.fail_next_delete(
        unique_name, "DestinationBucketPolicy", "The bucket you tried to delete is not empty", times=2
    )
    cloudformation.delete_stack(StackName=unique_name)
    assert proxy.release(unique_name) == "DELETE_FAILED"
    cloudformation.delete_stack(StackName=unique_name)  # tried again: fails the second time too
    assert proxy.release(unique_name) == "DELETE_FAILED"
    assert stack(client(moto_server.endpoint_url), unique_name)  # still in moto
    assert (
        failed_events(cloudformation, unique_name)
        == [("DestinationBucketPolicy", "DELETE_FAILED", "The bucket you tried to delete is not empty")] * 2
    )
    assert stack(cloudformation, unique_name)["StackStatusReason"].startswith(
        "The following resource(s) failed to delete: [DestinationBucketPolicy]."
    )
    cloudformation.delete_stack(StackName=unique_name)
    assert proxy.release(unique_name) is None
    assert "does not exist" in refusal(lambda: stack(client(moto_server.endpoint_url), unique_name))


def test_phases_end_on_their_own_and_other_services_pass_through(moto_server: MotoServer, unique_name: str) -> None:
    with CfnProxy(moto_server.endpoint_url, hold=0.2) as proxy:
        cloudformation = client(proxy.url)
        create(cloudformation, unique_name)
        wait_for(lambda: stack(cloudformation, unique_name)["StackStatus"] == "CREATE_COMPLETE", what="the create")
        listed = cloudformation.list_stacks()["StackSummaries"]
        assert {s["StackName"]: s["StackStatus"] for s in listed}[unique_name] == "CREATE_COMPLETE"
        cloudformation.delete_stack(StackName=unique_name)
        moto = client(moto_server.endpoint_url)
        wait_for(lambda: proxy.status(unique_name) is None, what="the delete")
        assert "does not exist" in refusal(lambda: stack(moto, unique_name))
        url = client(proxy.url, "sqs").create_queue(QueueName=unique_name)["QueueUrl"]
        assert url.endswith(unique_name)
        assert proxy.calls["CreateStack"] == 1 and proxy.calls["DeleteStack"] == 1
