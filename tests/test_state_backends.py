"""Choosing and opening the queue and store: SQLite by default, SQS and DynamoDB from an ECS task's environment."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from dth.devtools.moto import MotoServer
from dth.errors import SpecError
from dth.state.backends import StateConfig, open_state
from dth.state.dynamodb import DynamoStatusStore, create_table
from dth.state.queue import QueueDepth, SqliteQueue
from dth.state.sqs import SqsQueue, create_queues
from dth.state.store import ObjectResult, ObjectState, Operation, PlannedObject, SqliteStatusStore


def test_without_a_queue_url_the_environment_means_sqlite(tmp_path: Path) -> None:
    config = StateConfig.from_environment({"DTH_STATE_PATH": str(tmp_path / "state.db"), "DTH_TABLE_NAME": "t"})
    assert config == StateConfig(kind="sqlite", path=tmp_path / "state.db")
    default = StateConfig.from_environment({"DTH_STATE_DIR": str(tmp_path / "dir"), "DTH_QUEUE_URL": " "})
    assert default.kind == "sqlite"
    assert default.path is not None and default.path.parent == tmp_path / "dir"


def test_an_ecs_task_environment_means_aws() -> None:
    environment = {
        "DTH_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123/work",
        "DTH_DLQ_URL": "https://sqs.eu-west-1.amazonaws.com/123/work-dlq",
        "DTH_TABLE_NAME": "dth-state",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    config = StateConfig.from_environment(environment)
    assert config == StateConfig(
        kind="aws",
        queue_url="https://sqs.eu-west-1.amazonaws.com/123/work",
        dead_letter_queue_url="https://sqs.eu-west-1.amazonaws.com/123/work-dlq",
        table_name="dth-state",
        region="eu-west-1",
    )
    del environment["AWS_REGION"]
    environment["AWS_ENDPOINT_URL"] = "http://127.0.0.1:5000"
    config = StateConfig.from_environment(environment)
    assert (config.region, config.endpoint_url) == ("us-east-1", "http://127.0.0.1:5000")


def test_an_incomplete_aws_environment_names_what_is_missing() -> None:
    with pytest.raises(SpecError, match="DTH_QUEUE_URL is set, but not DTH_DLQ_URL, AWS_REGION"):
        StateConfig.from_environment({"DTH_QUEUE_URL": "https://q", "DTH_TABLE_NAME": "t"})
    with pytest.raises(ValidationError, match="an aws state needs dead_letter_queue_url, table_name"):
        StateConfig(kind="aws", queue_url="https://q", region="us-east-1")
    with pytest.raises(ValidationError, match="a sqlite state needs a path"):
        StateConfig(kind="sqlite")
    with pytest.raises(ValidationError):
        StateConfig(kind="redis", path=Path("x"))


def test_open_sqlite_state(tmp_path: Path) -> None:
    config = StateConfig(kind="sqlite", path=tmp_path / "state.db", max_receive_count=2)
    queue, store = open_state(config, run_queue_name="run-1")
    other_queue, other_store = open_state(config)
    try:
        assert isinstance(queue, SqliteQueue) and isinstance(store, SqliteStatusStore)
        queue.send(["a"])
        assert other_queue.depth() == QueueDepth(0, 0, 0)  # another queue ("work") in the same file
        assert queue.receive(1, visibility_timeout=0)[0].receive_count == 1
        assert queue.receive(1, visibility_timeout=0)[0].receive_count == 2
        assert queue.receive(1, visibility_timeout=0) == []  # max_receive_count=2
        assert queue.depth().dead == 1
        run = store.start_run("task")
        assert other_store.latest_run("task") == run  # the same file
    finally:
        for closing in (queue, store, other_queue, other_store):
            closing.close()


def test_open_aws_state_from_the_environment(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    setup: dict[str, Any] = {
        "endpoint_url": moto_server.endpoint_url,
        "region_name": "us-east-1",
        "aws_access_key_id": moto_server.access_key,
        "aws_secret_access_key": moto_server.secret_key,
    }
    name = f"t-{uuid.uuid4().hex[:8]}"
    queue_url, dlq_url = create_queues(boto3.client("sqs", **setup), name)
    create_table(boto3.client("dynamodb", **setup), name)
    config = StateConfig.from_environment(
        {
            "DTH_QUEUE_URL": queue_url,
            "DTH_DLQ_URL": dlq_url,
            "DTH_TABLE_NAME": name,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        }
    )
    session = boto3.Session(moto_server.access_key, moto_server.secret_key)
    queue, store = open_state(config, run_queue_name="ignored on AWS", session=session)
    try:
        assert isinstance(queue, SqsQueue) and isinstance(store, DynamoStatusStore)
        for client in (queue._client, store._client):
            assert client.meta.config.retries["mode"] == "standard"
            assert client.meta.region_name == "us-east-1"
        run = store.start_run("task")
        store.plan(run, [PlannedObject("a", Operation.COPY, 5, "etag")])
        queue.send([f'{{"run": "{run}", "key": "a"}}'])
        (message,) = queue.receive(10, visibility_timeout=30)
        store.complete(run, [ObjectResult("a", Operation.COPY, ObjectState.COPIED, 5)])
        queue.delete([message])
        assert queue.depth() == QueueDepth(0, 0, 0)
        assert store.counters(run).copied == 1
        assert store.latest_run("task") == run
    finally:
        queue.close()
        store.close()
    # Without a session: the usual credential chain (here the environment).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.secret_key)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    queue, store = open_state(config)
    try:
        assert queue.depth() == QueueDepth(0, 0, 0)
        assert store.latest_run("task") == run
    finally:
        queue.close()
        store.close()


def test_how_much_history_is_kept_is_configured_by_the_environment(tmp_path: Path) -> None:
    config = StateConfig.from_environment({"DTH_STATE_PATH": str(tmp_path / "state.db"), "DTH_KEEP_RUNS": "5"})
    assert config.keep_runs == 5
    assert StateConfig.from_environment({"DTH_STATE_PATH": str(tmp_path / "state.db")}).keep_runs == 20
    aws = {
        "DTH_QUEUE_URL": "https://q",
        "DTH_DLQ_URL": "https://dlq",
        "DTH_TABLE_NAME": "t",
        "AWS_REGION": "eu-west-1",
        "DTH_HISTORY_DAYS": "7",
    }
    assert StateConfig.from_environment(aws).history_days == 7
    with pytest.raises(SpecError, match="keep_runs"):
        StateConfig.from_environment({"DTH_STATE_PATH": str(tmp_path / "state.db"), "DTH_KEEP_RUNS": "0"})
    with pytest.raises(SpecError, match="history_days"):
        StateConfig.from_environment({**aws, "DTH_HISTORY_DAYS": "soon"})
    queue, store = open_state(StateConfig(kind="sqlite", path=tmp_path / "state.db", keep_runs=1))
    try:
        first = store.start_run("task")
        second = store.start_run("task")
        with pytest.raises(KeyError):
            store.counters(first)
        assert store.latest_run("task") == second
    finally:
        queue.close()
        store.close()
