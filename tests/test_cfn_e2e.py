"""End to end: a plugin stack on moto server, its tasks run by the local ECS runner, the data on real servers.

The S3 plugin's buckets are on Ceph radosgw; its queue, table, secrets and ECS resources on moto. Nothing but
the stack's task definitions tells the runner what to run: if they do not carry the configuration, nothing
arrives.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dth.devtools.ecs_runner import EcsRunner
from dth.devtools.moto import MotoServer
from dth.devtools.sites import S3Site
from dth.devtools.stacks import LocalStacks
from dth.spec.cfn import PluginSettings, TaskSize, s3_stack_parameters, template_path
from dth.spec.load import parse_task_spec
from dth.spec.model import MiB, S3TaskSpec
from dth.state.dynamodb import DynamoStatusStore

pytestmark = pytest.mark.slow


@pytest.fixture
def stacks(moto_server: MotoServer) -> LocalStacks:
    return LocalStacks(moto_server.endpoint_url)


def container_logs(runner: EcsRunner) -> str:
    """Every container's output, for failure messages."""
    parts = []
    for path in sorted(runner.log_dir.glob("*.log")):
        text = path.read_text(errors="replace")
        parts.append(f"--- {path.name}\n{text[-3000:]}")
    return "\n".join(parts) + (f"\n--- runner errors: {runner.errors}" if runner.errors else "")


@pytest.fixture
def runner_factory(moto_server: MotoServer, tmp_path: Path) -> Iterator[Any]:
    runners: list[EcsRunner] = []

    def make(clusters: list[str]) -> EcsRunner:
        runner = EcsRunner(
            moto_server.endpoint_url,
            clusters=clusters,
            log_dir=tmp_path / f"ecs-{len(runners)}",
            poll_interval=0.3,
            max_stop_timeout=20,
        )
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


def test_s3_plugin_stack_copies_radosgw_buckets_through_its_own_task_definitions(
    stacks: LocalStacks, rgw_site: S3Site, unique_name: str, runner_factory: Any
) -> None:
    # Source data on radosgw: small objects with awkward keys, an empty one, and a multipart one.
    s3 = rgw_site.client()
    source, destination = f"{unique_name}-src", f"{unique_name}-dst"
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=destination)
    objects: dict[str, bytes] = {
        f"data/dir {i % 3}/obj+{i}.bin": hashlib.sha256(str(i).encode()).digest() * (i + 1) for i in range(12)
    }
    objects["data/empty"] = b""
    objects["data/big/multipart.bin"] = bytes(range(256)) * (12 * MiB // 256 + 7)
    for key, body in objects.items():
        s3.put_object(Bucket=source, Key=key, Body=body)
    s3.put_object(Bucket=source, Key="elsewhere/not-copied", Body=b"outside the prefix")

    # The radosgw keys reach the engines only through Secrets Manager (on moto), as the operator would put them.
    secrets = stacks.client("secretsmanager")
    arn = secrets.create_secret(
        Name=f"{unique_name}/radosgw",
        SecretString=json.dumps({"access_key_id": rgw_site.access_key, "secret_access_key": rgw_site.secret_key}),
    )["ARN"]
    credentials = {"secretsManagerArn": arn}
    spec = parse_task_spec(
        {
            "type": "S3",
            "source": {
                "type": "S3_Compatible",
                "endpoint": rgw_site.url,
                "bucket": source,
                "prefix": "data/",
                "credentials": credentials,
            },
            "destination": {
                "type": "S3_Compatible",
                "endpoint": rgw_site.url,
                "bucket": destination,
                "prefix": "copy/",
                "credentials": credentials,
            },
            # One object at a time: moto server is not safe under concurrent DynamoDB transactions (one that
            # fails restores a copy of the whole table taken when it began, erasing what others wrote meanwhile).
            "options": {"chunkSize": "5MiB", "multipartThreshold": "5MiB", "workers": 1, "concurrency": 2},
        }
    )
    assert isinstance(spec, S3TaskSpec)
    network = stacks.network(unique_name)
    settings = PluginSettings(
        image="dth:e2e",
        subnets=network.subnets,
        security_groups=network.security_groups,
        finder=TaskSize(512, 1024),
        worker=TaskSize(512, 1024),
    )
    task_name = f"default-{unique_name}"
    stack = f"{unique_name}-s3"
    created = stacks.create(stack, template_path("s3-plugin.yaml"), s3_stack_parameters(task_name, spec, settings))
    assert created["StackStatus"] == "CREATE_COMPLETE"
    outputs = stacks.outputs(stack)

    runner = runner_factory([outputs["Cluster"]])
    runner.start()
    store = DynamoStatusStore(stacks.client("dynamodb"), outputs["TableName"])

    def finished() -> bool:
        run = store.latest_run(task_name)
        if run is None or not store.scan_finished(run):
            return False
        counters = store.counters(run)
        return counters.copied + counters.skipped + counters.failed >= counters.found > 0

    # Long enough for a redelivery: a message whose receive moto answered with an error comes back after the
    # workers' visibility timeout (300 s). It usually takes seconds.
    assert runner.wait_until(finished, timeout=420), container_logs(runner)
    run = store.latest_run(task_name)
    assert run is not None
    counters = store.counters(run)
    total = sum(len(body) for body in objects.values())
    assert (counters.found, counters.copied, counters.skipped, counters.failed, counters.deleted) == (
        len(objects),
        len(objects),
        0,
        0,
        0,
    ), container_logs(runner)
    assert (counters.bytes_found, counters.bytes_copied) == (total, total)

    # Byte-identical, under the destination prefix, and nothing else copied.
    listed = s3.list_objects_v2(Bucket=destination)
    copied = {item["Key"] for item in listed.get("Contents", [])}
    assert copied == {"copy/" + key.removeprefix("data/") for key in objects}
    for key, body in objects.items():
        assert s3.get_object(Bucket=destination, Key="copy/" + key.removeprefix("data/"))["Body"].read() == body

    # The finder ran once, from the stack's "once" rule, and succeeded; the worker service runs one worker.
    def finder_exits() -> list[int]:
        return [e.exit_code for e in runner.exits() if e.container == "finder"]

    assert runner.wait_until(lambda: bool(finder_exits()), timeout=60), container_logs(runner)
    assert finder_exits() == [0], container_logs(runner)
    assert len(runner.service_processes(outputs["WorkerService"])) == 1

    # Deleting the stack takes the worker service away (moto keeps it: the runner goes by the stack).
    services = stacks.delete(stack, remove_services=False)
    assert runner.wait_until(lambda: not runner.service_processes(outputs["WorkerService"]), timeout=60)
    stacks.remove_services(services)
    # How the worker ended is moto's doing: it deletes the queue while it keeps the service (and so the worker).
    assert [e.stopped_by_runner for e in runner.exits() if e.container == "worker"] == [True], container_logs(runner)


def test_image_plugin_stack_copies_between_two_registries_through_its_own_task_definition(
    stacks: LocalStacks, registry: Any, auth_registry: Any, unique_name: str, runner_factory: Any
) -> None:
    from dth.devtools.oci import Pusher, build_image, build_multiarch
    from dth.spec.cfn import image_stack_parameters
    from dth.spec.image import ImageTaskSpec

    source = Pusher(registry.url)
    images = {
        "app/web:1.0": build_image(f"{unique_name}-web", layers=2),
        "lib/base:2": build_multiarch(f"{unique_name}-base", [("linux", "amd64"), ("linux", "arm64")]),
    }
    digests = {name: source.push(*name.split(":"), artifact) for name, artifact in images.items()}

    # The destination's password reaches the engine only through Secrets Manager (on moto).
    arn = stacks.client("secretsmanager").create_secret(
        Name=f"{unique_name}/registry",
        SecretString=json.dumps({"username": auth_registry.username, "password": auth_registry.password}),
    )["ARN"]
    spec = ImageTaskSpec.model_validate(
        {
            "type": "Image",
            "source": {
                "type": "Registry",
                "registry": registry.host,
                "insecure": True,
                "images": {"names": sorted(images)},
            },
            "destination": {
                "type": "Registry",
                "registry": auth_registry.host,
                "insecure": True,
                "prefix": "mirror/",
                "credentials": {"secretsManagerArn": arn},
            },
        }
    )
    network = stacks.network(unique_name)
    settings = PluginSettings(image="dth:e2e", subnets=network.subnets, security_groups=network.security_groups)
    task_name = f"default-{unique_name}"
    stack = f"{unique_name}-image"
    created = stacks.create(
        stack, template_path("image-plugin.yaml"), image_stack_parameters(task_name, spec, settings)
    )
    assert created["StackStatus"] == "CREATE_COMPLETE"
    outputs = stacks.outputs(stack)

    runner = runner_factory([outputs["Cluster"]])
    runner.start()
    assert runner.wait_until(lambda: any(e.container == "sync" for e in runner.exits()), timeout=180), container_logs(
        runner
    )
    (sync,) = [e for e in runner.exits() if e.container == "sync"]
    assert sync.exit_code == 0, container_logs(runner)

    destination = Pusher(auth_registry.url, username=auth_registry.username, password=auth_registry.password)
    for name, digest in digests.items():
        repository, tag = name.split(":")
        assert destination.digest(f"mirror/{repository}", tag) == digest

    # The run's exact summary: the engine's JSON line, and the stack's status table (what the operator reads).
    summaries = [
        json.loads(line)
        for line in sync.log_path.read_text().splitlines()
        if line.startswith("{") and '"counters"' in line
    ]
    assert [s["counters"] for s in summaries] == [{"found": 2, "copied": 2, "skipped": 0, "failed": 0}]
    from dth.state.dynamodb import DynamoStatusStore

    table = DynamoStatusStore(stacks.client("dynamodb"), outputs["TableName"])
    run = table.latest_run(task_name)
    assert run is not None and table.scan_finished(run)
    counters = table.counters(run)
    assert (counters.found, counters.copied, counters.failed) == (2, 2, 0)
    stacks.delete(stack)
