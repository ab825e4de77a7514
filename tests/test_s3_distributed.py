"""The finder and workers as separate processes (`dth s3 finder`, `dth s3 worker`, configured by
environment as ECS runs them), on both state backends: the embedded SQLite file, and SQS + DynamoDB on
moto server. Objects live in radosgw. The fault suite: workers killed with SIGKILL mid-multipart, a
finder killed mid-scan, a visibility timeout running out mid-copy, a source changing during a copy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from dth.devtools.faultproxy import Fault, FaultProxy
from dth.devtools.moto import MotoServer
from dth.devtools.sites import S3Site
from dth.devtools.waiting import wait_for
from dth.spec.model import TransferCounters
from dth.state.backends import StateConfig, open_state
from dth.state.dynamodb import create_table
from dth.state.sqs import create_queues
from dth.state.store import ObjectState, StatusStore

MiB = 1024 * 1024


@dataclass
class Deployment:
    """One task's engines, as their task definitions would configure them."""

    env: dict[str, str]
    state: StateConfig
    task: str

    def start(self, command: str, *args: str, **extra_env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "dth", "s3", command, *args],
            env={**self.env, **extra_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, command: str, *args: str, timeout: float = 240, **extra_env: str) -> str:
        process = self.start(command, *args, **extra_env)
        output, _ = process.communicate(timeout=timeout)
        assert process.returncode == 0, output
        return output

    def with_spec(self, spec: dict[str, Any]) -> Deployment:
        """The same task and state with another spec (say, an endpoint through a fault proxy)."""
        return Deployment({**self.env, "DTH_TASK_SPEC": json.dumps(spec)}, self.state, self.task)

    def store(self) -> StatusStore:
        return open_state(self.state)[1]

    def counters(self) -> TransferCounters:
        store = self.store()
        run = store.latest_run(self.task)
        assert run is not None
        return store.counters(run)


@pytest.fixture(params=["sqlite", "aws"])
def deploy(
    request: pytest.FixtureRequest,
    rgw_site: S3Site,
    moto_server: MotoServer,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Deployment]:
    # The test reads the status store itself, with keys moto takes.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    def make(spec: dict[str, Any], **settings: str) -> Deployment:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DTH_")) or k == "AWS_CA_BUNDLE"}
        env.update(
            AWS_ACCESS_KEY_ID=rgw_site.access_key,
            AWS_SECRET_ACCESS_KEY=rgw_site.secret_key,
            AWS_REGION="us-east-1",
            DTH_TASK_NAME=unique_name,
            DTH_TASK_SPEC=json.dumps(spec),
            DTH_RETRY_BASE_DELAY="0.1",
            **settings,
        )
        if request.param == "sqlite":
            env["DTH_STATE_PATH"] = str(tmp_path / "state.db")
        else:
            # SQS and DynamoDB on moto; moto takes any keys, so the radosgw ones serve for both.
            session = boto3.Session(rgw_site.access_key, rgw_site.secret_key, region_name="us-east-1")
            queue_url, dlq_url = create_queues(
                session.client("sqs", endpoint_url=moto_server.endpoint_url), unique_name, max_receive_count=8
            )
            create_table(session.client("dynamodb", endpoint_url=moto_server.endpoint_url), unique_name)
            env.update(
                DTH_QUEUE_URL=queue_url,
                DTH_DLQ_URL=dlq_url,
                DTH_TABLE_NAME=unique_name,
                AWS_ENDPOINT_URL_SQS=moto_server.endpoint_url,
                AWS_ENDPOINT_URL_DYNAMODB=moto_server.endpoint_url,
            )
        state_env = {k: v for k, v in env.items() if k.startswith("DTH_") or k.startswith("AWS_")}
        if request.param == "aws":
            state_env["AWS_ENDPOINT_URL"] = moto_server.endpoint_url
        return Deployment(env, StateConfig.from_environment(state_env), unique_name)

    return make


def task_spec(site: S3Site, source: str, destination: str, **options: Any) -> dict[str, Any]:
    return {
        "type": "S3",
        "source": {"type": "S3_Compatible", "endpoint": site.url, "bucket": source},
        "destination": {"type": "S3_Compatible", "endpoint": site.url, "bucket": destination},
        "options": {"workers": 4, "concurrency": 4, "maxRetries": 3, **options},
    }


def buckets(site: S3Site, name: str) -> Any:
    client = site.client()
    client.create_bucket(Bucket=f"{name}-src")
    client.create_bucket(Bucket=f"{name}-dst")
    return client


def objects(client: Any, bucket: str) -> dict[str, bytes]:
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listing}


@pytest.fixture
def source_and_destination(rgw_site: S3Site, unique_name: str) -> Iterator[Any]:
    yield buckets(rgw_site, unique_name)


def test_finder_then_two_workers_copy_everything_with_exact_counts(
    deploy: Callable[..., Deployment], rgw_site: S3Site, source_and_destination: Any, unique_name: str
) -> None:
    client = source_and_destination
    for number in range(30):
        client.put_object(Bucket=f"{unique_name}-src", Key=f"k/{number:02d} odd+key%", Body=os.urandom(100 + number))
    deployment = deploy(task_spec(rgw_site, f"{unique_name}-src", f"{unique_name}-dst"))
    log = deployment.run("finder")
    assert '"message": "scan done"' in log
    workers = [deployment.start("worker", "--exit-when-idle", "2") for _ in range(2)]
    for worker in workers:
        output, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, output
    assert objects(client, f"{unique_name}-dst") == objects(client, f"{unique_name}-src")
    counters = deployment.counters()
    assert (counters.found, counters.copied, counters.skipped, counters.failed) == (30, 30, 0, 0)


def test_second_finder_refuses_while_a_scan_holds_the_lock(
    deploy: Callable[..., Deployment], rgw_site: S3Site, source_and_destination: Any, unique_name: str
) -> None:
    deployment = deploy(task_spec(rgw_site, f"{unique_name}-src", f"{unique_name}-dst"))
    store = deployment.store()
    assert store.acquire_scan_lock(unique_name, "another-finder", 60)
    log = deployment.run("finder")
    assert "a scan of this task is already running" in log
    assert store.latest_run(unique_name) is None


def test_worker_killed_mid_multipart_then_another_completes_the_giant_object(
    deploy: Callable[..., Deployment], rgw_site: S3Site, source_and_destination: Any, unique_name: str
) -> None:
    client = source_and_destination
    body = os.urandom(64 * MiB)
    client.put_object(Bucket=f"{unique_name}-src", Key="giant.bin", Body=body)
    spec = task_spec(
        rgw_site,
        f"{unique_name}-src",
        f"{unique_name}-dst",
        multipartThreshold="5MiB",
        chunkSize="5MiB",
        giantFileThreshold="8MiB",
        workers=2,
        concurrency=2,
    )
    with FaultProxy(rgw_site.url) as proxy:
        # Parts go through a slow proxy, so that the first worker is surely killed in the middle.
        proxy.add(Fault(method="PUT", query_contains="partNumber", delay=0.4))
        spec["destination"]["endpoint"] = proxy.url
        deployment = deploy(spec, DTH_VISIBILITY_TIMEOUT="3")
        deployment.run("finder")
        first = deployment.start("worker")
        wait_for(lambda: proxy.faults[0].hits >= 3, what="the first parts to be copied")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second = deployment.start("worker", "--exit-when-idle", "5")
        output, _ = second.communicate(timeout=300)
        assert second.returncode == 0, output
    copied = client.get_object(Bucket=f"{unique_name}-dst", Key="giant.bin")["Body"].read()
    assert copied == body
    counters = deployment.counters()
    assert (counters.found, counters.copied, counters.failed) == (1, 1, 0)
    assert counters.bytes_copied == len(body)
    assert client.list_multipart_uploads(Bucket=f"{unique_name}-dst").get("Uploads", []) == []


def test_finder_killed_mid_scan_and_restarted_misses_nothing_and_counts_once(
    deploy: Callable[..., Deployment], rgw_site: S3Site, source_and_destination: Any, unique_name: str
) -> None:
    client = source_and_destination
    keys = [f"d{d}/k{n:03d}" for d in range(4) for n in range(60)]
    for key in keys:
        client.put_object(Bucket=f"{unique_name}-src", Key=key, Body=key.encode())
    with FaultProxy(rgw_site.url) as proxy:
        # Slow listings of the source, so that the scan is surely interrupted halfway.
        proxy.add(Fault(method="GET", path_contains=f"{unique_name}-src", query_contains="list-type=2", delay=0.7))
        spec = task_spec(rgw_site, f"{unique_name}-src", f"{unique_name}-dst", listDepth=1)
        spec["source"]["endpoint"] = proxy.url
        deployment = deploy(spec, DTH_SCAN_LOCK_SECONDS="2")
        finder = deployment.start("finder")
        wait_for(lambda: proxy.faults[0].hits >= 3, what="the scan to be under way")
        finder.send_signal(signal.SIGKILL)
        finder.wait(timeout=30)
        interrupted = deployment.store().latest_run(unique_name)
        assert interrupted is not None
        # Work the half-scan's queue, then scan again once the dead finder's lock has expired.
        deployment.run("worker", "--exit-when-idle", "2")
        time.sleep(2.5)
        proxy.clear()
        deployment.run("finder")
        deployment.run("worker", "--exit-when-idle", "2")
    assert objects(client, f"{unique_name}-dst") == objects(client, f"{unique_name}-src")
    # The killed finder's run is not left "scanning" for ever: the next scan closed it, saying why.
    store = deployment.store()
    assert store.latest_run(unique_name) != interrupted
    assert store.scan_finished(interrupted)
    assert "interrupted" in (store.scan_error(interrupted) or "")
    counters = deployment.counters()  # of the complete, second run
    assert counters.found == len(keys)
    assert counters.copied + counters.skipped == len(keys)
    assert counters.failed == 0


def test_a_finder_that_lost_its_scan_lock_queues_nothing_more_and_fails_its_run(
    deploy: Callable[..., Deployment], rgw_site: S3Site, source_and_destination: Any, unique_name: str
) -> None:
    client = source_and_destination
    keys = [f"d{d}/k{n:03d}" for d in range(4) for n in range(30)]
    for key in keys:
        client.put_object(Bucket=f"{unique_name}-src", Key=key, Body=key.encode())
    with FaultProxy(rgw_site.url) as proxy:
        # Slow listings of the source, so that the scan is surely stopped halfway.
        proxy.add(Fault(method="GET", path_contains=f"{unique_name}-src", query_contains="list-type=2", delay=0.7))
        spec = task_spec(rgw_site, f"{unique_name}-src", f"{unique_name}-dst", listDepth=1)
        spec["source"]["endpoint"] = proxy.url
        deployment = deploy(spec, DTH_SCAN_LOCK_SECONDS="1")
        store = deployment.store()
        finder = deployment.start("finder")
        wait_for(lambda: proxy.faults[0].hits >= 3, what="the scan to be under way")
        # The finder stalls (paused) past its lock's expiry, and another finder takes the lock meanwhile.
        finder.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: store.acquire_scan_lock(unique_name, "finder-b", 60), what="the stalled lock to expire")
        finally:
            finder.send_signal(signal.SIGCONT)
        output, _ = finder.communicate(timeout=120)
    assert finder.returncode != 0, output
    assert "scan lock lost" in output
    run = store.latest_run(unique_name)
    assert run is not None
    assert "another scan of task" in (store.scan_error(run) or "")
    assert deployment.counters().found == 0  # nothing was queued after the lock was gone
    assert not store.acquire_scan_lock(unique_name, "finder-c", 60)  # finder-b's lock was not released


def test_visibility_timeout_running_out_mid_copy_gives_duplicates_but_exact_counts(
    deploy: Callable[..., Deployment], rgw_site: S3Site, source_and_destination: Any, unique_name: str
) -> None:
    client = source_and_destination
    for number in range(6):
        client.put_object(Bucket=f"{unique_name}-src", Key=f"obj-{number}", Body=os.urandom(2000))
    deployment = deploy(task_spec(rgw_site, f"{unique_name}-src", f"{unique_name}-dst"), DTH_VISIBILITY_TIMEOUT="2")
    deployment.run("finder")
    with FaultProxy(rgw_site.url) as proxy:
        copies = proxy.add(Fault(method="PUT", delay=0.1))
        spec = task_spec(rgw_site, f"{unique_name}-src", f"{unique_name}-dst")
        spec["destination"]["endpoint"] = proxy.url
        first = deployment.with_spec(spec).start("worker")
        wait_for(lambda: copies.hits >= 1, what="the first worker to start copying")
        # Frozen mid-copy (a long GC pause, a stalled host): no heartbeat, so its messages come back.
        first.send_signal(signal.SIGSTOP)
        time.sleep(3)
        deployment.run("worker", "--exit-when-idle", "2")
        first.send_signal(signal.SIGCONT)
        time.sleep(2)
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=60)
    assert objects(client, f"{unique_name}-dst") == objects(client, f"{unique_name}-src")
    counters = deployment.counters()
    assert (counters.found, counters.copied, counters.failed) == (6, 6, 0)
    assert '"message": "worker stopped"' in output


def test_objects_changed_after_the_scan_are_copied_as_they_are_now(
    deploy: Callable[..., Deployment], rgw_site: S3Site, source_and_destination: Any, unique_name: str
) -> None:
    client = source_and_destination
    client.put_object(Bucket=f"{unique_name}-src", Key="giant.bin", Body=b"A" * (12 * MiB))
    client.put_object(Bucket=f"{unique_name}-src", Key="small.txt", Body=b"version 1")
    spec = task_spec(
        rgw_site,
        f"{unique_name}-src",
        f"{unique_name}-dst",
        multipartThreshold="5MiB",
        chunkSize="5MiB",
        giantFileThreshold="6MiB",
    )
    deployment = deploy(spec)
    deployment.run("finder")
    # Both change after the scan listed them, before any worker copies them: the copies follow.
    client.put_object(Bucket=f"{unique_name}-src", Key="giant.bin", Body=b"B" * (13 * MiB))
    client.put_object(Bucket=f"{unique_name}-src", Key="small.txt", Body=b"version 2!")
    deployment.run("worker", "--exit-when-idle", "2")
    assert objects(client, f"{unique_name}-dst") == {"giant.bin": b"B" * (13 * MiB), "small.txt": b"version 2!"}
    store = deployment.store()
    run = store.latest_run(unique_name)
    assert run is not None
    assert store.records(run, [ObjectState.FAILED]) == []


def test_a_source_changing_while_its_parts_are_copied_is_never_mixed(
    deploy: Callable[..., Deployment], rgw_site: S3Site, source_and_destination: Any, unique_name: str
) -> None:
    client = source_and_destination
    client.put_object(Bucket=f"{unique_name}-src", Key="moving.bin", Body=b"A" * (40 * MiB))
    spec = task_spec(
        rgw_site,
        f"{unique_name}-src",
        f"{unique_name}-dst",
        multipartThreshold="5MiB",
        chunkSize="5MiB",
        giantFileThreshold="6MiB",
        concurrency=1,
        workers=1,
    )
    with FaultProxy(rgw_site.url) as proxy:
        parts = proxy.add(Fault(method="PUT", query_contains="partNumber", delay=0.5))
        spec["destination"]["endpoint"] = proxy.url
        deployment = deploy(spec)
        deployment.run("finder")
        worker = deployment.start("worker", "--exit-when-idle", "2")
        wait_for(lambda: parts.hits >= 2, what="the first parts to be copied")
        client.put_object(Bucket=f"{unique_name}-src", Key="moving.bin", Body=b"B" * (40 * MiB))
        output, _ = worker.communicate(timeout=240)
    assert worker.returncode == 0, output
    # No object made of parts of both versions: the upload was abandoned and the failure says why.
    assert "moving.bin" not in objects(client, f"{unique_name}-dst")
    assert client.list_multipart_uploads(Bucket=f"{unique_name}-dst").get("Uploads", []) == []
    store = deployment.store()
    run = store.latest_run(unique_name)
    assert run is not None
    (failed,) = store.records(run, [ObjectState.FAILED])
    assert failed.key == "moving.bin"
    assert "changed while its parts were being copied" in failed.reason


def test_the_folder_marker_at_the_source_prefix_becomes_the_destination_prefix_marker_or_is_skipped(
    deploy: Callable[..., Deployment], rgw_site: S3Site, source_and_destination: Any, unique_name: str
) -> None:
    """`app/` at the prefix `app/` has the relative key "": DynamoDB refused it as a sort key (the whole task
    failed), and a destination without a prefix has no key for it."""
    client = source_and_destination
    client.put_object(Bucket=f"{unique_name}-src", Key="app/", Body=b"")
    client.put_object(Bucket=f"{unique_name}-src", Key="app/x", Body=b"x")
    spec = task_spec(rgw_site, f"{unique_name}-src", f"{unique_name}-dst")
    spec["source"]["prefix"] = "app/"
    spec["destination"]["prefix"] = "backup/"
    deployment = deploy(spec)
    deployment.run("finder")
    deployment.run("worker", "--exit-when-idle", "2")
    assert objects(client, f"{unique_name}-dst") == {"backup/": b"", "backup/x": b"x"}
    counters = deployment.counters()
    assert (counters.found, counters.copied, counters.skipped, counters.failed) == (2, 2, 0, 0)

    spec["destination"]["prefix"] = ""
    deployment = deployment.with_spec(spec)
    deployment.run("finder")
    deployment.run("worker", "--exit-when-idle", "2")
    assert objects(client, f"{unique_name}-dst") == {"backup/": b"", "backup/x": b"x", "x": b"x"}
    counters = deployment.counters()
    assert (counters.found, counters.copied, counters.skipped, counters.failed) == (2, 1, 1, 0)
    store = deployment.store()
    run = store.latest_run(unique_name)
    assert run is not None
    (skipped,) = store.records(run, [ObjectState.SKIPPED])
    assert skipped.key == ""
    assert "'app/' is the source prefix itself, and the destination has no prefix" in skipped.reason
