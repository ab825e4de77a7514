"""`dth s3 finder` and `dth s3 worker`: the programs the S3 plugin's ECS tasks run.

They read their whole configuration from environment variables, exactly as a task definition
passes it, and log JSON lines:

- `DTH_TASK_NAME`: the task's identity (runs, scan lock), e.g. `namespace-name`.
- `DTH_TASK_SPEC`: the S3 task spec as JSON (the TransferTask's `spec`, camelCase); without it, one
  `DTH_SPEC_*` variable per field, as the CloudFormation plugin passes it (`dth.spec.environment`).
- `DTH_QUEUE_URL`, `DTH_DLQ_URL`, `DTH_TABLE_NAME`, `AWS_REGION`, optional `AWS_ENDPOINT_URL`: the
  SQS queues and DynamoDB table (without `DTH_QUEUE_URL`, the SQLite file at `DTH_STATE_PATH`).
- Operational settings with defaults, read however the spec is given: `DTH_VISIBILITY_TIMEOUT`
  (seconds a received message stays hidden, kept hidden by heartbeats while its copy runs; 300; the
  template passes its queue's visibility timeout), `DTH_SCAN_LOCK_SECONDS` (how long a scan lock
  outlives a finder that stopped renewing it; 300), `DTH_RETRY_BASE_DELAY` (0.5).
- History (`dth.state.backends`): `DTH_KEEP_RUNS` (SQLite: runs kept per task, 20), `DTH_HISTORY_DAYS`
  (DynamoDB: days before items expire, 90).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dth.errors import DthError, SpecError
from dth.s3.copier import ObjectCopier
from dth.s3.events import EventTranslator
from dth.s3.finder import Finder
from dth.s3.sides import S3Side, check_bucket, connect_pair
from dth.s3.uploads import UploadLedger
from dth.s3.worker import RetryPolicy, Worker
from dth.spec.environment import ENV_PREFIX, spec_from_environment
from dth.spec.load import describe_validation_error
from dth.spec.model import EventsMode, S3TaskSpec
from dth.state.backends import StateConfig, open_state
from dth.state.queue import WorkQueue
from dth.state.scanlock import ScanLock
from dth.state.store import StatusStore

log = logging.getLogger(__name__)


def _seconds(environ: Mapping[str, str], name: str) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise SpecError(f"{name} must be positive, got {raw!r}")
    return value


class EngineEnvironment(BaseModel):
    """Everything `dth s3 finder` and `dth s3 worker` are configured with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The operational settings: {environment variable: field}.
    SETTINGS: ClassVar[dict[str, str]] = {
        "DTH_VISIBILITY_TIMEOUT": "visibility_timeout",
        "DTH_SCAN_LOCK_SECONDS": "scan_lock_seconds",
        "DTH_RETRY_BASE_DELAY": "retry_base_delay",
    }

    task_name: str = Field(min_length=1)
    spec: S3TaskSpec
    state: StateConfig
    visibility_timeout: float = Field(300.0, gt=0, description="seconds a received message stays hidden")
    scan_lock_seconds: float = Field(300.0, gt=0, description="how long a scan lock outlives its finder")
    retry_base_delay: float = Field(0.5, gt=0, description="the first retry's delay, doubled on each retry")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> EngineEnvironment:
        env = os.environ if environ is None else environ
        task_name = env.get("DTH_TASK_NAME", "").strip()
        if not task_name:
            raise SpecError("DTH_TASK_NAME is not set")
        settings = {field: value for name, field in cls.SETTINGS.items() if (value := _seconds(env, name)) is not None}
        return cls(task_name=task_name, spec=_spec(env), state=StateConfig.from_environment(env), **settings)


def _spec(env: Mapping[str, str]) -> S3TaskSpec:
    """The spec from DTH_TASK_SPEC (JSON) or, as the CloudFormation plugin passes it, one variable per field."""
    raw = env.get("DTH_TASK_SPEC")
    if not raw:
        if not any(name.startswith(ENV_PREFIX) for name in env):
            raise SpecError(f"neither DTH_TASK_SPEC (the task spec as JSON) nor {ENV_PREFIX}* variables are set")
        return spec_from_environment(env)
    try:
        return S3TaskSpec.model_validate(json.loads(raw))
    except json.JSONDecodeError as error:
        raise SpecError(f"DTH_TASK_SPEC is not JSON: {error.msg} at character {error.pos}") from None
    except ValidationError as error:
        raise SpecError(f"DTH_TASK_SPEC: {describe_validation_error(error, S3TaskSpec, 'spec')}") from None


def _sides(environment: EngineEnvironment) -> tuple[S3Side, S3Side]:
    options = environment.spec.options
    pool = options.workers + options.concurrency + 16
    return connect_pair(environment.spec.source, environment.spec.destination, pool_size=pool)


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


#: The reason recorded on a run whose finder died mid-scan, when the next scan closes it.
INTERRUPTED_SCAN = "the scan was interrupted: its finder stopped before finishing (its scan lock expired)"


def run_finder(environment: EngineEnvironment) -> int:
    """One scan of the task: refuses to start while another scan of the same task holds the lock, and stops
    (failing its run) when the lock stops being its own."""
    queue, store = open_state(environment.state)
    lock = ScanLock(store, environment.task_name, _owner(), environment.scan_lock_seconds)
    if not lock.acquire():
        log.warning(
            "a scan of this task is already running; not starting another", extra={"task": environment.task_name}
        )
        return 0
    with lock.renewing():
        # The lock is ours, so an unfinished scan of the task is one whose finder died: not "scanning" for ever.
        for stale in store.close_unfinished_scans(environment.task_name, INTERRUPTED_SCAN):
            log.warning("closed an interrupted scan", extra={"task": environment.task_name, "run": stale})
        run_id = store.start_run(environment.task_name)
        try:
            _scan(environment, queue, store, run_id, lock)
        except Exception as error:
            # Recorded on the run, so that the operator's status names the problem, not just a stopped task.
            reason = str(error) if isinstance(error, DthError) else f"{type(error).__name__}: {error}"
            store.fail_scan(run_id, reason)
            raise
    return 0


def _scan(environment: EngineEnvironment, queue: WorkQueue, store: StatusStore, run_id: str, lock: ScanLock) -> None:
    source, destination = _sides(environment)
    check_bucket(source)
    check_bucket(destination)
    log.info("scan started", extra={"task": environment.task_name, "run": run_id})
    with ThreadPoolExecutor(max_workers=1) as unused_parts:
        inspector = ObjectCopier(
            source,
            destination,
            environment.spec.options,
            unused_parts,
            uploads=UploadLedger(store, environment.task_name),
        )
        finder = Finder(source, destination, environment.spec, queue, store, inspector)
        report = finder.scan(run_id, guard=lock.check)
    log.info(
        "scan done",
        extra={
            "task": environment.task_name,
            "run": run_id,
            "found": report.found,
            "to_copy": report.to_copy,
            "unchanged": report.unchanged,
            "to_delete": report.to_delete,
        },
    )


def run_worker(environment: EngineEnvironment, *, exit_when_idle: float | None = None) -> int:
    """Work the queue until SIGTERM (as ECS scales in), finishing in-flight objects first; with
    `exit_when_idle`, also stop after the queue has been empty that many seconds."""
    queue, store = open_state(environment.state)
    source, destination = _sides(environment)
    options = environment.spec.options
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    idle_since: list[float] = []

    def idle_long_enough() -> bool:
        if exit_when_idle is None:
            return False
        if queue.depth().pending:
            idle_since.clear()
            return False
        if not idle_since:
            idle_since.append(time.monotonic())
        return time.monotonic() - idle_since[0] >= exit_when_idle

    with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="part") as parts:
        copier = ObjectCopier(source, destination, options, parts, uploads=UploadLedger(store, environment.task_name))
        events = None
        if environment.spec.events is not EventsMode.NONE:
            events = EventTranslator(environment.task_name, environment.spec, store)
        worker = Worker(
            copier,
            queue,
            store,
            workers=options.workers,
            retry=RetryPolicy(max_retries=options.max_retries, base_delay=environment.retry_base_delay),
            visibility_timeout=environment.visibility_timeout,
            events=events,
        )
        log.info("worker started", extra={"task": environment.task_name, "workers": options.workers})
        worker.run(done=idle_long_enough, stop=stop)
    log.info("worker stopped", extra={"task": environment.task_name, "signalled": stop.is_set()})
    return 0
