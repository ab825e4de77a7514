"""The local ECS runner against moto server: services kept at their desired count, RunTask tasks run once,
EventBridge ECS targets fired; containers as local processes (`sh -c` ones here, the engines in
test_cfn_e2e.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dth.devtools.ecs_runner import EcsRunner, cron_matches
from dth.devtools.moto import MotoServer
from dth.devtools.stacks import LocalStacks

MINIMAL_STACK = """
Parameters:
  Value: {Type: Number}
Resources:
  Marker:
    Type: AWS::SQS::Queue
    Properties: {VisibilityTimeout: !Ref Value}
"""


@pytest.fixture
def aws(moto_server: MotoServer) -> LocalStacks:
    return LocalStacks(moto_server.endpoint_url)


@pytest.fixture
def cluster(aws: LocalStacks, unique_name: str) -> str:
    arn: str = aws.ecs.create_cluster(clusterName=unique_name)["cluster"]["clusterArn"]
    return arn


@pytest.fixture
def runner(moto_server: MotoServer, cluster: str, tmp_path: Path) -> Iterator[EcsRunner]:
    runner = EcsRunner(
        moto_server.endpoint_url, clusters=[cluster], log_dir=tmp_path / "ecs", poll_interval=0.2, max_stop_timeout=5
    )
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def shell_task(aws: LocalStacks, family: str, script: str, **container: Any) -> str:
    # No networkMode awsvpc: moto's RunTask fails on those (its network interfaces lack privateDnsName). The
    # plugins' task definitions come from CloudFormation, where moto does not record the network mode.
    arn: str = aws.ecs.register_task_definition(
        family=family,
        containerDefinitions=[
            {
                "name": "main",
                "image": "busybox",
                "memory": 512,
                "entryPoint": ["sh", "-c"],
                "command": [script],
                **container,
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    return arn


def logs(runner: EcsRunner) -> str:
    return "\n".join(f"{p.name}: {p.read_text()}" for p in sorted(runner.log_dir.glob("*.log"))) + str(runner.errors)


def test_a_service_is_kept_at_its_desired_count_restarted_replaced_and_stopped(
    aws: LocalStacks, cluster: str, runner: EcsRunner, unique_name: str
) -> None:
    first = shell_task(
        aws,
        f"{unique_name}-svc",
        "echo revision one $GREETING; exec sleep 600",
        environment=[{"name": "GREETING", "value": "hello"}],
    )
    service = aws.ecs.create_service(cluster=cluster, serviceName="svc", taskDefinition=first, desiredCount=2)[
        "service"
    ]["serviceArn"]
    assert runner.wait_until(lambda: len(runner.service_processes(service)) == 2, 30), logs(runner)
    assert runner.wait_until(lambda: "revision one hello" in logs(runner), 10)

    aws.ecs.update_service(cluster=cluster, service=service, desiredCount=1)
    assert runner.wait_until(lambda: len(runner.service_processes(service)) == 1, 30), logs(runner)

    # A process that dies is replaced, as ECS replaces a stopped task.
    (victim,) = runner.service_processes(service)
    os.kill(victim.pid, signal.SIGKILL)
    assert runner.wait_until(
        lambda: (
            runner.service_restarts(service) == 1
            and [c.pid for c in runner.service_processes(service)] not in ([], [victim.pid])
        ),
        30,
    ), logs(runner)

    # A new task definition replaces the processes.
    second = shell_task(aws, f"{unique_name}-svc", "echo revision two; exec sleep 600")
    aws.ecs.update_service(cluster=cluster, service=service, taskDefinition=second)
    assert runner.wait_until(lambda: "revision two" in logs(runner), 30), logs(runner)
    assert runner.wait_until(lambda: len(runner.service_processes(service)) == 1, 30)

    aws.ecs.delete_service(cluster=cluster, service=service, force=True)
    assert runner.wait_until(lambda: not runner.service_processes(service), 30), logs(runner)
    assert not runner.running()


def test_a_run_task_runs_each_container_once_with_overrides_and_stops_the_task(
    aws: LocalStacks, cluster: str, runner: EcsRunner, unique_name: str, moto_server: MotoServer
) -> None:
    script = 'echo "greeting=$GREETING region=$AWS_REGION endpoint=$AWS_ENDPOINT_URL leak=${DTH_LEAK:-none} state=$DTH_STATE_PATH tmp=$TMPDIR"; exit 3'
    definition = aws.ecs.register_task_definition(
        family=f"{unique_name}-once",
        volumes=[{"name": "scratch"}],
        containerDefinitions=[
            {
                "name": "main",
                "image": "busybox",
                "memory": 512,
                "entryPoint": ["sh", "-c"],
                "command": [script],
                "environment": [
                    {"name": "GREETING", "value": "from the task definition"},
                    {"name": "DTH_STATE_PATH", "value": "/tmp/dth/state.sqlite"},
                ],
                "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/tmp"}],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    os.environ["DTH_LEAK"] = "the runner's own environment"
    try:
        task = aws.ecs.run_task(
            cluster=cluster,
            taskDefinition=definition,
            launchType="FARGATE",
            overrides={
                "containerOverrides": [{"name": "main", "environment": [{"name": "GREETING", "value": "overridden"}]}]
            },
        )["tasks"][0]["taskArn"]
        assert runner.wait_until(lambda: any(e.owner == f"task:{task}" for e in runner.exits()), 30), logs(runner)
    finally:
        del os.environ["DTH_LEAK"]
    (exit_,) = [e for e in runner.exits() if e.owner == f"task:{task}"]
    assert exit_.exit_code == 3
    output = exit_.log_path.read_text()
    assert f"greeting=overridden region=us-east-1 endpoint={moto_server.endpoint_url} leak=none" in output
    # The /tmp volume is a folder of the task's own: TMPDIR, and paths into it in the environment, point there.
    tmp = output.split("tmp=")[1].strip()
    assert tmp.startswith(str(runner.log_dir)) and f"state={tmp}/dth/state.sqlite" in output
    assert runner.wait_until(
        lambda: aws.ecs.describe_tasks(cluster=cluster, tasks=[task])["tasks"][0]["lastStatus"] == "STOPPED", 10
    )
    assert (
        aws.ecs.describe_tasks(cluster=cluster, tasks=[task])["tasks"][0]["stoppedReason"]
        == "containers exited: main 3"
    )
    assert runner.wait_until(lambda: not runner.running(), 5)


def test_rules_fire_their_ecs_targets_once_per_stack_event_and_schedules_on_demand(
    aws: LocalStacks, cluster: str, moto_server: MotoServer, unique_name: str, tmp_path: Path
) -> None:
    events = aws.client("events")
    definition = shell_task(aws, f"{unique_name}-rule", "echo fired $FIRED_BY")
    network = aws.network(unique_name)
    stack_id = aws.cloudformation.create_stack(
        StackName=f"{unique_name}-marker",
        TemplateBody=MINIMAL_STACK,
        Parameters=[{"ParameterKey": "Value", "ParameterValue": "1"}],
    )["StackId"]

    def target(fired_by: str) -> dict[str, Any]:
        overrides = {"containerOverrides": [{"name": "main", "environment": [{"name": "FIRED_BY", "value": fired_by}]}]}
        return {
            "Id": "t",
            "Arn": cluster,
            "RoleArn": "arn:aws:iam::123456789012:role/events",
            "Input": json.dumps(overrides),
            "EcsParameters": {
                "TaskDefinitionArn": definition,
                "TaskCount": 1,
                "LaunchType": "FARGATE",
                "NetworkConfiguration": {
                    "awsvpcConfiguration": {
                        "Subnets": list(network.subnets),
                        "SecurityGroups": list(network.security_groups),
                    }
                },
            },
        }

    pattern = {
        "source": ["aws.cloudformation"],
        "detail-type": ["CloudFormation Stack Status Change"],
        "resources": [stack_id],
        "detail": {"status-details": {"status": ["CREATE_COMPLETE", "UPDATE_COMPLETE"]}},
    }
    events.put_rule(Name=f"{unique_name}-stack", EventPattern=json.dumps(pattern), State="ENABLED")
    events.put_targets(Rule=f"{unique_name}-stack", Targets=[target("stack")])
    events.put_rule(Name=f"{unique_name}-cron", ScheduleExpression="cron(0 3 * * ? *)", State="ENABLED")
    events.put_targets(Rule=f"{unique_name}-cron", Targets=[target("schedule")])
    events.put_rule(Name=f"{unique_name}-off", ScheduleExpression="rate(1 minute)", State="DISABLED")
    events.put_targets(Rule=f"{unique_name}-off", Targets=[target("disabled")])

    def fired() -> list[str]:
        return sorted(
            line for e in runner.exits() for line in e.log_path.read_text().splitlines() if line.startswith("fired")
        )

    runner = EcsRunner(
        moto_server.endpoint_url,
        clusters=[cluster],
        log_dir=tmp_path / "ecs",
        poll_interval=0.2,
        fire_schedules_now=True,
    )
    with runner:
        assert runner.wait_until(lambda: len(fired()) == 2, 30), logs(runner)
        assert fired() == ["fired schedule", "fired stack"]
        # An update is another stack event; the schedule does not fire again before its time.
        aws.cloudformation.update_stack(
            StackName=stack_id,
            TemplateBody=MINIMAL_STACK,
            Parameters=[{"ParameterKey": "Value", "ParameterValue": "2"}],
        )
        assert runner.wait_until(lambda: len(fired()) == 3, 30), logs(runner)
        runner.poll_once()
        assert fired() == ["fired schedule", "fired stack", "fired stack"]


def test_cron_expressions_match_the_minutes_eventbridge_would_fire() -> None:
    tuesday_0230 = dt.datetime(2026, 11, 24, 2, 30, tzinfo=dt.UTC)
    assert cron_matches("cron(30 2 * * ? *)", tuesday_0230)
    assert cron_matches("cron(*/15 * ? * 3 *)", tuesday_0230)  # EventBridge: 1 is Sunday, 3 Tuesday
    assert cron_matches("cron(30 2 ? * TUE *)", tuesday_0230)
    assert cron_matches("cron(0,30 1-3 24 NOV ? 2026)", tuesday_0230)
    assert not cron_matches("cron(31 2 * * ? *)", tuesday_0230)
    assert not cron_matches("cron(30 2 ? * 2 *)", tuesday_0230)  # Monday
    assert not cron_matches("cron(30 2 L * ? *)", tuesday_0230)  # L, W and # are not evaluated here
    assert not cron_matches("rate(5 minutes)", tuesday_0230)


def test_the_command_runs_until_sigterm_and_then_stops_its_processes(
    aws: LocalStacks, moto_server: MotoServer, unique_name: str, tmp_path: Path
) -> None:
    import subprocess
    import sys
    import time

    cluster = aws.ecs.create_cluster(clusterName=f"{unique_name}-cli")["cluster"]["clusterArn"]
    marker = tmp_path / "pid"
    definition = shell_task(aws, f"{unique_name}-cli", f"echo $$ > {marker}; exec sleep 600")
    aws.ecs.create_service(cluster=cluster, serviceName="svc", taskDefinition=definition, desiredCount=1)
    command = [
        sys.executable,
        "-m",
        "dth",
        "dev",
        "ecs-runner",
        "--endpoint-url",
        moto_server.endpoint_url,
        "--cluster",
        cluster,
        "--poll-interval",
        "0.2",
        "--max-stop-timeout",
        "5",
        "--log-dir",
        str(tmp_path / "ecs"),
    ]
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None
        started = json.loads(runner.stdout.readline())
        assert started["endpoint_url"] == moto_server.endpoint_url
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = int(marker.read_text())
        os.kill(pid, 0)  # the service's container runs
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(30) == 0, runner.stderr.read() if runner.stderr else ""
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        aws.ecs.delete_service(cluster=cluster, service="svc", force=True)
