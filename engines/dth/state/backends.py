"""Which queue and status store to use: the embedded SQLite file, or SQS and DynamoDB on AWS.

`StateConfig.from_environment()` reads what an ECS task definition passes (`DTH_QUEUE_URL`, `DTH_DLQ_URL`,
`DTH_TABLE_NAME`, `AWS_REGION`, optional `AWS_ENDPOINT_URL`); without `DTH_QUEUE_URL` it is the SQLite
file at `DTH_STATE_PATH`. History: `DTH_KEEP_RUNS` (runs per task the SQLite store keeps, 20) and
`DTH_HISTORY_DAYS` (days DynamoDB keeps the store's items, 90). `open_state(config)` connects to them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dth.errors import SpecError
from dth.state.queue import SqliteQueue, WorkQueue
from dth.state.sqlite import SqliteDatabase
from dth.state.store import DEFAULT_KEEP_RUNS, SqliteStatusStore, StatusStore

#: Days DynamoDB keeps the store's items (dth.state.dynamodb.DEFAULT_HISTORY_DAYS; that module imports boto3).
DEFAULT_HISTORY_DAYS = 90.0

#: Connections per client: one per worker thread and part copier is plenty.
POOL_CONNECTIONS = 64


def default_state_path(environ: Mapping[str, str] | None = None) -> Path:
    """The SQLite file when neither DTH_STATE_PATH nor a config names one: under $DTH_STATE_DIR, else the
    XDG state directory."""
    env = os.environ if environ is None else environ
    base = env.get("DTH_STATE_DIR") or os.path.join(  # noqa: PTH118 - env strings
        env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state", "dth"
    )
    return Path(base) / "state.sqlite"


class StateConfig(BaseModel):
    """Where the work queue and the status store live."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["sqlite", "aws"] = "sqlite"
    # sqlite
    path: Path | None = Field(None, description="the SQLite file (kind sqlite)")
    max_receive_count: int = Field(6, ge=1, description="receives before the SQLite queue dead-letters a message")
    keep_runs: int = Field(DEFAULT_KEEP_RUNS, ge=1, description="runs of a task the SQLite store keeps")
    # aws
    queue_url: str | None = None
    dead_letter_queue_url: str | None = None
    table_name: str | None = None
    region: str | None = None
    endpoint_url: str | None = Field(None, description="another endpoint for SQS and DynamoDB (tests, VPC endpoints)")
    history_days: float = Field(DEFAULT_HISTORY_DAYS, gt=0, description="days DynamoDB keeps the store's items")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.kind == "sqlite":
            if self.path is None:
                raise ValueError("a sqlite state needs a path")
        else:
            missing = [
                name
                for name in ("queue_url", "dead_letter_queue_url", "table_name", "region")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"an aws state needs {', '.join(missing)}")
        return self

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> StateConfig:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return (env.get(name) or "").strip() or None

        queue_url = get("DTH_QUEUE_URL")
        history: dict[str, Any] = {}
        for name, field in (("DTH_KEEP_RUNS", "keep_runs"), ("DTH_HISTORY_DAYS", "history_days")):
            if (value := get(name)) is not None:
                history[field] = value
        try:
            if queue_url is None:
                path = get("DTH_STATE_PATH")
                return cls(kind="sqlite", path=Path(path) if path else default_state_path(env), **history)
            missing = [name for name in ("DTH_DLQ_URL", "DTH_TABLE_NAME") if get(name) is None]
            region = get("AWS_REGION") or get("AWS_DEFAULT_REGION")
            if region is None:
                missing.append("AWS_REGION")
            if missing:
                raise SpecError(f"DTH_QUEUE_URL is set, but not {', '.join(missing)}")
            return cls(
                kind="aws",
                queue_url=queue_url,
                dead_letter_queue_url=get("DTH_DLQ_URL"),
                table_name=get("DTH_TABLE_NAME"),
                region=region,
                endpoint_url=get("AWS_ENDPOINT_URL"),
                **history,
            )
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise SpecError(f"state configuration: {where + ': ' if where else ''}{first['msg']}") from None


def open_state(
    config: StateConfig, run_queue_name: str | None = None, *, session: Any = None
) -> tuple[WorkQueue, StatusStore]:
    """Connect to the queue and the store. `run_queue_name` names the queue inside the SQLite file (one per
    run, say); on AWS there is one queue, whose URL the config gives, and the name is not used. On AWS the
    clients come from `session` (a boto3 Session), by default one with the usual credential chain; without
    `endpoint_url` botocore still honours `AWS_ENDPOINT_URL_SQS` and `AWS_ENDPOINT_URL_DYNAMODB`."""
    if config.kind == "sqlite":
        assert config.path is not None  # checked by the model
        database = SqliteDatabase(config.path)
        queue = SqliteQueue(database, name=run_queue_name or "work", max_receive_count=config.max_receive_count)
        return queue, SqliteStatusStore(database, keep_runs=config.keep_runs)

    import boto3
    from botocore.config import Config

    from dth.state.dynamodb import DynamoStatusStore
    from dth.state.sqs import SqsQueue

    assert config.queue_url and config.dead_letter_queue_url and config.table_name  # checked by the model
    client_config = Config(
        region_name=config.region,
        retries={"mode": "standard", "max_attempts": 8},
        max_pool_connections=POOL_CONNECTIONS,
        connect_timeout=10,
        read_timeout=60,  # above SQS's longest long poll (20 s)
    )
    session = session or boto3.session.Session()
    sqs = session.client("sqs", endpoint_url=config.endpoint_url, config=client_config)
    dynamodb = session.client("dynamodb", endpoint_url=config.endpoint_url, config=client_config)
    return (
        SqsQueue(sqs, config.queue_url, config.dead_letter_queue_url, close_client=True),
        DynamoStatusStore(dynamodb, config.table_name, close_client=True, history_days=config.history_days),
    )
