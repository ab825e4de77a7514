"""Messages the queue dead-letters by itself (a worker killed on a message's last delivery: SQS's redrive moves
it at the next receive) must still end their object, as failed with the reason: otherwise the object stays
`queued` for ever and a `once` task never completes. On moto's SQS and DynamoDB, and on the SQLite pair."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from dth.devtools.moto import MotoServer
from dth.devtools.sites import S3Site
from dth.s3.copier import ObjectCopier
from dth.s3.sides import connect
from dth.s3.work import WorkItem
from dth.s3.worker import RetryPolicy, Worker
from dth.spec.model import S3Destination, S3Options, S3Source, StorageProvider, TransferCounters
from dth.state.dynamodb import DynamoStatusStore, create_table
from dth.state.queue import SqliteQueue, WorkQueue
from dth.state.sqlite import SqliteDatabase
from dth.state.sqs import SqsQueue, create_queues
from dth.state.store import ObjectState, Operation, PlannedObject, SqliteStatusStore, StatusStore


@dataclass
class State:
    queue: WorkQueue
    store: StatusStore


@pytest.fixture(params=["aws", "sqlite"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[State]:
    """A queue whose redrive moves a message after one receive, and its status store."""
    if request.param == "sqlite":
        database = SqliteDatabase(tmp_path / "state.db")
        yield State(SqliteQueue(database, max_receive_count=1), SqliteStatusStore(database))
        return
    server: MotoServer = request.getfixturevalue("moto_server")
    session = boto3.Session(server.access_key, server.secret_key, region_name="us-east-1")
    sqs = session.client("sqs", endpoint_url=server.endpoint_url)
    dynamodb = session.client("dynamodb", endpoint_url=server.endpoint_url)
    name = f"t-{uuid.uuid4().hex[:8]}"
    queue_url, dlq_url = create_queues(sqs, name, max_receive_count=1)
    create_table(dynamodb, name)
    yield State(SqsQueue(sqs, queue_url, dlq_url), DynamoStatusStore(dynamodb, name))


def copier_for(site: S3Site, bucket: str, pool: ThreadPoolExecutor) -> ObjectCopier:
    session = boto3.Session(site.access_key, site.secret_key, region_name="us-east-1")
    common: dict[str, Any] = {"type": StorageProvider.S3_COMPATIBLE, "endpoint": site.url, "bucket": bucket}
    source = connect("source", S3Source(**common), session=session)
    destination = connect("destination", S3Destination(**{**common, "prefix": "copy/"}), session=session)
    return ObjectCopier(source, destination, S3Options(), pool)


def test_a_message_the_queue_dead_letters_itself_is_recorded_failed_with_the_reason(
    state: State, moto_site: S3Site, unique_name: str
) -> None:
    moto_site.client().create_bucket(Bucket=unique_name)
    run = state.store.start_run("task")
    state.store.plan(run, [PlannedObject("lost.bin", Operation.COPY, 10, "etag")])
    state.queue.send([WorkItem(run=run, op=Operation.COPY, key="lost.bin", size=10, etag="etag").to_body()])
    # A worker received it and was killed: its only delivery is spent, the next receive moves it away.
    assert len(state.queue.receive(10, visibility_timeout=0)) == 1
    assert state.queue.receive(10, visibility_timeout=0) == []
    with ThreadPoolExecutor(max_workers=2) as pool:
        worker = Worker(
            copier_for(moto_site, unique_name, pool), state.queue, state.store, workers=2, retry=RetryPolicy()
        )
        worker.run(done=lambda: True)
        assert state.store.counters(run) == TransferCounters(found=1, failed=1, bytes_found=10)
        (failed,) = state.store.records(run, [ObjectState.FAILED])
        assert (failed.key, failed.reason) == ("lost.bin", "received too many times without success")
        # Recorded once; the dead letter stays where an operator finds it (and may redrive it).
        worker.run(done=lambda: True)
    assert state.store.counters(run) == TransferCounters(found=1, failed=1, bytes_found=10)
    assert [letter.body for letter in state.queue.dead_letters()] == [
        WorkItem(run=run, op=Operation.COPY, key="lost.bin", size=10, etag="etag").to_body()
    ]
