"""`dth s3 finder` and `dth s3 worker`: the programs the S3 plugin's ECS tasks run.

They read their whole configuration from environment variables, exactly as a task definition
passes it, and log JSON lines:

- `DTH_TASK_NAME`: the task's identity (runs, scan lock), e.g. `namespace-name`.
- `DTH_TASK_SPEC`: the S3 task spec as JSON (the TransferTask's `spec`, camelCase); without it, one
  `DTH_SPEC_*` variable per field, as the CloudFormation plugin passes it (`dth.spec.environment`).
- `DTH_QUEUE_URL`, `DTH_DLQ_URL`, `DTH_TABLE_NAME`, `AWS_REGION`, optional `AWS_ENDPOINT_URL`: the
  SQS queues and DynamoDB table (without `DTH_QUEUE_URL`, the SQLite file at `DTH_STATE_PATH`).
- Operational settings with defaults: `DTH_VISIBILITY_TIMEOUT` (seconds a received message stays
  hidden, kept hidden by heartbeats while its copy runs; 300), `DTH_SCAN_LOCK_SECONDS` (how long a
  scan lock outlives a finder that stopped renewing it; 300), `DTH_RETRY_BASE_DELAY` (0.5).
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydantic import ValidationError

from dth.errors import DthError, SpecError
from dth.s3.copier import ObjectCopier
from dth.s3.events import EventTranslator
from dth.s3.finder import Finder
from dth.s3.sides import S3Side, check_bucket, connect
from dth.s3.uploads import UploadLedger
from dth.s3.worker import RetryPolicy, Worker
from dth.spec.environment import ENV_PREFIX, spec_from_environment
from dth.spec.load import describe_validation_error
from dth.spec.model import EventsMode, S3TaskSpec
from dth.state.backends import StateConfig, open_state
from dth.state.queue import WorkQueue
from dth.state.store import StatusStore

log = logging.getLogger(__name__)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise SpecError(f"{name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class EngineEnvironment:
    task_name: str
    spec: S3TaskSpec
    state: StateConfig
    visibility_timeout: float = 300.0
    scan_lock_seconds: float = 300.0
    retry_base_delay: float = 0.5

    @classmethod
    def from_environment(cls) -> EngineEnvironment:
        task_name = os.environ.get("DTH_TASK_NAME", "").strip()
        if not task_name:
            raise SpecError("DTH_TASK_NAME is not set")
        raw = os.environ.get("DTH_TASK_SPEC")
        if not raw:
            # The CloudFormation plugin passes one variable per field instead (dth.spec.environment).
            if not any(name.startswith(ENV_PREFIX) for name in os.environ):
                raise SpecError(f"neither DTH_TASK_SPEC (the task spec as JSON) nor {ENV_PREFIX}* variables are set")
            return cls(task_name, spec_from_environment(os.environ), StateConfig.from_environment())
        try:
            spec = S3TaskSpec.model_validate(json.loads(raw))
        except json.JSONDecodeError as error:
            raise SpecError(f"DTH_TASK_SPEC is not JSON: {error.msg} at character {error.pos}") from None
        except ValidationError as error:
            raise SpecError(f"DTH_TASK_SPEC: {describe_validation_error(error, 'spec')}") from None
        return cls(
            task_name,
            spec,
            StateConfig.from_environment(),
            visibility_timeout=_seconds("DTH_VISIBILITY_TIMEOUT", 300.0),
            scan_lock_seconds=_seconds("DTH_SCAN_LOCK_SECONDS", 300.0),
            retry_base_delay=_seconds("DTH_RETRY_BASE_DELAY", 0.5),
        )


def _sides(environment: EngineEnvironment) -> tuple[S3Side, S3Side]:
    options = environment.spec.options
    pool = options.workers + options.concurrency + 16
    source = connect("source", environment.spec.source, pool_size=pool)
    destination = connect("destination", environment.spec.destination, pool_size=pool)
    return source, destination


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def run_finder(environment: EngineEnvironment) -> int:
    """One scan of the task: refuses to start while another scan of the same task holds the lock."""
    queue, store = open_state(environment.state)
    owner = _owner()
    lock_seconds = environment.scan_lock_seconds
    if not store.acquire_scan_lock(environment.task_name, owner, lock_seconds):
        log.warning(
            "a scan of this task is already running; not starting another", extra={"task": environment.task_name}
        )
        return 0
    stop_renewing = threading.Event()

    def renew() -> None:
        while not stop_renewing.wait(lock_seconds / 3):
            store.acquire_scan_lock(environment.task_name, owner, lock_seconds)

    renewer = threading.Thread(target=renew, name="scan-lock", daemon=True)
    renewer.start()
    run_id = store.start_run(environment.task_name)
    try:
        _scan(environment, queue, store, run_id)
    except Exception as error:
        # Recorded on the run, so that the operator's status names the problem, not just a stopped task.
        reason = str(error) if isinstance(error, DthError) else f"{type(error).__name__}: {error}"
        store.fail_scan(run_id, reason)
        raise
    finally:
        stop_renewing.set()
        store.release_scan_lock(environment.task_name, owner)
    return 0


def _scan(environment: EngineEnvironment, queue: WorkQueue, store: StatusStore, run_id: str) -> None:
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
        report = finder.scan(run_id)
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
