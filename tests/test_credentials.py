"""Credentials from Secrets Manager (moto server) used against radosgw's real authentication:
read at start, and read again when the service rejects them (a rotated secret)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from dth.devtools.sites import S3Site
from dth.s3.copier import ObjectCopier
from dth.s3.sides import connect
from dth.s3.work import WorkItem
from dth.s3.worker import RetryPolicy, Worker
from dth.spec.load import parse_task_spec
from dth.spec.model import S3TaskSpec
from dth.state.queue import SqliteQueue
from dth.state.store import ObjectState, Operation, PlannedObject, SqliteStatusStore


@pytest.fixture
def secrets(moto_site: S3Site, monkeypatch: pytest.MonkeyPatch) -> object:
    """Secrets Manager on moto, reached the way an engine on ECS would: by the environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_site.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_site.url)


def test_keys_rejected_after_rotation_are_read_again(
    rgw_site: S3Site, secrets: object, unique_name: str, tmp_path: Path
) -> None:
    client = rgw_site.client()
    client.create_bucket(Bucket=f"{unique_name}-a")
    client.create_bucket(Bucket=f"{unique_name}-b")
    for number in range(3):
        client.put_object(Bucket=f"{unique_name}-a", Key=f"k{number}", Body=b"x" * number)
    stale = {"access_key_id": rgw_site.access_key, "secret_access_key": "rotated-away"}
    arn = secrets.create_secret(Name=unique_name, SecretString=json.dumps(stale))["ARN"]  # type: ignore[attr-defined]
    location = {"type": "S3_Compatible", "endpoint": rgw_site.url, "credentials": {"secretsManagerArn": arn}}
    spec = parse_task_spec(
        {
            "type": "S3",
            "source": {**location, "bucket": f"{unique_name}-a"},
            "destination": {**location, "bucket": f"{unique_name}-b"},
        }
    )
    assert isinstance(spec, S3TaskSpec)
    source = connect("source", spec.source)
    destination = connect("destination", spec.destination)
    # The secret is rotated after the engine read it: its keys are now the valid ones.
    fresh = {"access_key_id": rgw_site.access_key, "secret_access_key": rgw_site.secret_key}
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(fresh))  # type: ignore[attr-defined]

    state = tmp_path / "state.db"
    store, queue = SqliteStatusStore(state), SqliteQueue(state)
    run = store.start_run("rotation")
    planned = [PlannedObject(f"k{n}", Operation.COPY, n, "") for n in range(3)]
    heads = [client.head_object(Bucket=f"{unique_name}-a", Key=p.key)["ETag"].strip('"') for p in planned]
    store.plan(run, planned)
    queue.send(
        [
            WorkItem(run=run, op=Operation.COPY, key=p.key, size=p.size, etag=e).to_body()
            for p, e in zip(planned, heads, strict=True)
        ]
    )
    with ThreadPoolExecutor(max_workers=2) as parts:
        worker = Worker(
            ObjectCopier(source, destination, spec.options, parts),
            queue,
            store,
            workers=1,
            retry=RetryPolicy(max_retries=2, base_delay=0.05),
        )
        worker.run(done=lambda: True)
    counters = store.counters(run)
    assert (counters.copied, counters.failed) == (3, 0)
    records = store.records(run, [ObjectState.COPIED])
    # The first attempt met the rotated-away keys; the keys were read again and the retry worked.
    assert any(r.attempts >= 2 and "SignatureDoesNotMatch" in r.last_error for r in records), records
    assert sorted(o["Key"] for o in client.list_objects_v2(Bucket=f"{unique_name}-b")["Contents"]) == ["k0", "k1", "k2"]
    assert "rotated-away" not in repr(source) + repr(destination)
