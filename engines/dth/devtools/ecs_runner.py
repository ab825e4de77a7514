"""A local stand-in for ECS and EventBridge's ECS targets, against moto: `dth dev ecs-runner`.

moto keeps ECS clusters, task definitions, services and tasks, but never runs a container. This runner plays
that part, so that a test can prove that the task definitions of a CloudFormation plugin really run the
engines:

- **Services**: for every ACTIVE service it keeps `desiredCount` processes of the service's task definition
  running: it starts missing ones, restarts those that exit, stops extra ones when the count drops, replaces
  them when the service moves to another task definition, and stops all of them when the service goes away.
  moto keeps ECS resources after their stack is deleted, so a service also counts as gone once the
  CloudFormation stack that created it no longer lists it (deleted, or removed by an update).
- **Tasks started by RunTask** (`desiredStatus` RUNNING, not yet run here): each container runs once; when
  all have exited the task is stopped in moto (`StopTask`, with the exit codes as the reason). A task stopped
  in moto while it runs has its processes stopped.
- **EventBridge rules with ECS targets**: the runner calls RunTask for them, as EventBridge would.
  CloudFormation "Stack Status Change" patterns fire once for each stack status they match (a stack created
  or updated before the runner started counts: its event is delivered once). `rate(...)` schedules fire at
  their rate and `cron(...)` schedules at the minutes they match; with `fire_schedules_now` each scheduled
  rule also fires once as soon as it is seen (for tests).

A container runs as a local process from its task definition: `command` after the image's entrypoint, which
is `dth` (run as `python -m dth`), or after the container's own `entryPoint`; the environment is the
container's `environment` plus RunTask overrides, with `AWS_REGION`/`AWS_DEFAULT_REGION` as Fargate sets
them. Volumes are folders, not mounts: each task gets a folder per volume (or the volume's host path), a
variable holding a path inside a mounted volume is pointed at that folder, and a volume mounted at /tmp
becomes the process's TMPDIR. No variable of this process's own AWS_* or DTH_* environment leaks in: what a task needs must be in
its task definition. The one deviation from ECS: `AWS_ENDPOINT_URL` (moto) and moto's dummy access keys are
added, so that the engines' SQS, DynamoDB and Secrets Manager calls reach moto; an S3 endpoint in the task's
spec still wins for S3. Images, CPU and memory, networking, IAM roles and log drivers are ignored (output
goes to files under `log_dir`).

**Pod mode** (`pods=PodLauncher(...)`, `dth.devtools.ecs_pods`): on a cluster with a real node
(`LocalKubernetes(node=True)`), each container runs instead as a Pod of the task definition's image, with
exactly its command (after the image's entrypoint), environment, user, read-only root and volumes (emptyDir
mounts): the engine image is then proven to run what the templates say. The same deviation for reaching AWS.

moto never deletes ECS resources, and listing the resources of a deleted stack makes moto create them again,
so the runner only knows a stack's services while the stack lives: a runner started after a stack was
deleted would run the services it left behind. Give it the clusters to watch (`clusters`, `--cluster`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self

from dth.devtools.ecs_pods import PodContainer, PodLauncher, PodProcess
from dth.devtools.moto import MOTO_ACCESS_KEY, MOTO_SECRET_KEY

log = logging.getLogger(__name__)

#: Seconds ECS waits after SIGTERM before SIGKILL when a container definition does not say (stopTimeout).
DEFAULT_STOP_TIMEOUT = 30.0
#: The image entrypoint every task definition is assumed to have.
IMAGE_ENTRYPOINT = "dth"
#: Seconds before a service's exited process is started again; doubles with each quick failure, up to the cap.
RESTART_DELAY = 1.0
RESTART_DELAY_CAP = 30.0
#: Stack statuses after which a stack's resources are gone (or going).
_GONE_STACK_STATUSES = frozenset({"DELETE_COMPLETE", "DELETE_IN_PROGRESS"})
_STACK_EVENT_SOURCE = "aws.cloudformation"
_STACK_EVENT_TYPE = "CloudFormation Stack Status Change"
#: Labels of the pods the pod mode starts.
POD_LABELS = {"app.kubernetes.io/managed-by": "dth-ecs-runner"}


def _lower_first(key: str) -> str:
    return key[:1].lower() + key[1:]


def _camel_keys(value: Any) -> Any:
    """Container definitions with camelCase keys (moto stores them PascalCase after some CloudFormation
    updates); environment values and log options are left alone."""
    if isinstance(value, list):
        return [_camel_keys(item) for item in value]
    if isinstance(value, dict):
        return {
            _lower_first(key): (item if key in ("options", "Options") else _camel_keys(item))
            for key, item in value.items()
        }
    return value


@dataclass(frozen=True)
class ContainerSpec:
    """What the runner needs of one container definition."""

    name: str
    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    essential: bool
    stop_timeout: float
    mounts: tuple[tuple[str, str], ...] = ()  # (volume name, container path)
    # As the definition says them, for the pod mode (argv above is the local process's).
    image: str = ""
    command: tuple[str, ...] = ()
    entry_point: tuple[str, ...] | None = None
    user: str | None = None
    read_only_root: bool = False

    @classmethod
    def from_definition(
        cls, definition: Mapping[str, Any], python: str, override: Mapping[str, Any] | None = None
    ) -> ContainerSpec:
        definition = _camel_keys(dict(definition))
        override = _camel_keys(dict(override or {}))
        name = str(definition.get("name", "container"))
        command = [str(part) for part in (override.get("command") or definition.get("command") or [])]
        entrypoint = [str(part) for part in (definition.get("entryPoint") or [IMAGE_ENTRYPOINT])]
        if entrypoint[0] == IMAGE_ENTRYPOINT:
            entrypoint = [python, "-m", "dth", *entrypoint[1:]]
        environment = {str(item["name"]): str(item.get("value", "")) for item in definition.get("environment") or []}
        environment.update(
            {str(item["name"]): str(item.get("value", "")) for item in override.get("environment") or []}
        )
        if definition.get("secrets"):
            log.warning(
                "container secrets (valueFrom) are not supported by the local runner", extra={"container": name}
            )
        mounts = tuple(
            (str(item.get("sourceVolume", "")), str(item.get("containerPath", "")).rstrip("/") or "/")
            for item in definition.get("mountPoints") or []
        )
        own_entry_point = definition.get("entryPoint")
        return cls(
            name=name,
            argv=(*entrypoint, *command),
            environment=tuple(environment.items()),
            essential=bool(definition.get("essential", True)),
            stop_timeout=float(definition.get("stopTimeout") or DEFAULT_STOP_TIMEOUT),
            mounts=mounts,
            image=str(definition.get("image", "")),
            command=tuple(command),
            entry_point=tuple(str(part) for part in own_entry_point) if own_entry_point else None,
            user=str(definition["user"]) if definition.get("user") else None,
            read_only_root=bool(definition.get("readonlyRootFilesystem", False)),
        )

    def in_pod(self) -> PodContainer:
        return PodContainer(
            name=self.name,
            image=self.image,
            command=self.command,
            entry_point=self.entry_point,
            environment=self.environment,
            user=self.user,
            read_only_root=self.read_only_root,
            mounts=self.mounts,
            stop_timeout=self.stop_timeout,
        )


class ContainerProcess(Protocol):
    """A local process (subprocess.Popen) or a pod (ecs_pods.PodProcess)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class RunningContainer:
    """One local process standing in for one container."""

    owner: str  # "service:<service arn>" or "task:<task arn>"
    container: str
    process: ContainerProcess
    log_path: Path
    stop_timeout: float
    essential: bool = True
    started: float = field(default_factory=time.monotonic)
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        return self.process.poll()

    def signal(self, sig: signal.Signals) -> None:
        if isinstance(self.process, PodProcess):
            self.process.send_signal(sig)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


@dataclass(frozen=True)
class ContainerExit:
    """A container process that ended: who it was and how."""

    owner: str
    container: str
    exit_code: int
    log_path: Path
    stopped_by_runner: bool


@dataclass
class _Service:
    arn: str
    cluster: str
    task_definition: str
    tasks: list[list[RunningContainer]] = field(default_factory=list)  # one list of containers per task
    restarts: int = 0
    failures_in_a_row: int = 0
    next_start: float = 0.0

    def containers(self) -> list[RunningContainer]:
        return [container for task in self.tasks for container in task]


@dataclass
class _Task:
    arn: str
    cluster: str
    containers: list[RunningContainer]
    exits: dict[str, int] = field(default_factory=dict)


class EcsRunner:
    """Runs moto's ECS services, RunTask tasks and EventBridge ECS targets as local processes.

    `poll_once()` does one pass; `start()` polls in a background thread until `stop()`, which also stops every
    process. Use it as a context manager in tests.
    """

    def __init__(
        self,
        endpoint_url: str,
        *,
        region: str = "us-east-1",
        access_key: str = MOTO_ACCESS_KEY,
        secret_key: str = MOTO_SECRET_KEY,
        log_dir: Path | None = None,
        poll_interval: float = 1.0,
        fire_schedules_now: bool = False,
        python: str = sys.executable,
        max_stop_timeout: float | None = None,
        clusters: Sequence[str] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        pods: PodLauncher | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint_url = endpoint_url
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.poll_interval = poll_interval
        self.fire_schedules_now = fire_schedules_now
        self.python = python
        self.pods = pods
        self.max_stop_timeout = max_stop_timeout
        # Only these clusters (names or ARNs), and rules whose targets are in them; None: every cluster.
        self.clusters = None if clusters is None else frozenset(clusters)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._owns_log_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix="dth-ecs-runner-")) if log_dir is None else log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)
        self._ecs = session.client("ecs", endpoint_url=endpoint_url, config=config)
        self._events = session.client("events", endpoint_url=endpoint_url, config=config)
        self._cloudformation = session.client("cloudformation", endpoint_url=endpoint_url, config=config)
        self._lock = threading.RLock()
        self._services: dict[str, _Service] = {}
        self._tasks: dict[str, _Task] = {}
        self._seen_tasks: set[str] = set()
        self._exits: list[ContainerExit] = []
        self._task_definitions: dict[str, dict[str, Any]] = {}
        self._service_owner: dict[str, str] = {}  # service ARN -> stack id that created it
        self._fired: set[tuple[str, ...]] = set()
        self._last_schedule_check: dict[str, dt.datetime] = {}
        self._counter = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.errors: list[str] = []  # why poll passes failed (the last 20 different reasons), for diagnostics

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the runner is already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ecs-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling, then stop every process (SIGTERM, SIGKILL after their stop timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        with self._lock:
            containers = [c for s in self._services.values() for c in s.containers()]
            containers += [c for t in self._tasks.values() for c in t.containers]
            self._terminate(containers, timeout)
            for task in list(self._tasks.values()):
                self._finish_task(task)
            self._services.clear()

    def close(self) -> None:
        self.stop()
        if self._owns_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def run_forever(self) -> None:
        """Poll in this thread until SIGINT or SIGTERM, then stop every process."""
        signals = {signal.SIGINT, signal.SIGTERM}
        previous = {sig: signal.getsignal(sig) for sig in signals}
        for sig in signals:
            signal.signal(sig, lambda *_: self._stop.set())
        try:
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as error:  # keep running: moto may be restarting, a stack half-created
                message = f"{type(error).__name__}: {error}"
                if not self.errors or self.errors[-1] != message:
                    self.errors.append(message)
                    del self.errors[:-20]
                    log.warning("ecs runner pass failed", extra={"error": message})
            self._stop.wait(self.poll_interval)

    # --- what is running, for tests and the CLI ----------------------------------------------------

    def running(self) -> list[RunningContainer]:
        with self._lock:
            containers = [c for s in self._services.values() for c in s.containers()]
            containers += [c for t in self._tasks.values() for c in t.containers]
            return [c for c in containers if c.exit_code() is None]

    def service_processes(self, service: str) -> list[RunningContainer]:
        """The live processes of a service, by ARN or name."""
        with self._lock:
            return [
                c
                for arn, state in self._services.items()
                if arn == service or arn.rsplit("/", 1)[-1] == service
                for c in state.containers()
                if c.exit_code() is None
            ]

    def service_restarts(self, service: str) -> int:
        with self._lock:
            return sum(s.restarts for arn, s in self._services.items() if service in (arn, arn.rsplit("/", 1)[-1]))

    def exits(self) -> list[ContainerExit]:
        with self._lock:
            return list(self._exits)

    def wait_until(self, condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
        """Wait for `condition()` (which may read the runner's state); False when it did not come true."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    # --- one pass ----------------------------------------------------------------------------------

    def poll_once(self) -> None:
        with self._lock:
            clusters = self._clusters()
            stacks = self._stack_resources()
            self._fire_rules(stacks)
            self._reconcile_services(clusters, stacks)
            self._reconcile_tasks(clusters)

    def _watched(self, cluster_arn: str) -> bool:
        return self.clusters is None or bool({cluster_arn, cluster_arn.rsplit("/", 1)[-1]} & self.clusters)

    def _clusters(self) -> list[str]:
        arns: list[str] = []
        for page in self._ecs.get_paginator("list_clusters").paginate():
            arns.extend(arn for arn in page.get("clusterArns", []) if self._watched(arn))
        return arns

    def _stack_resources(self) -> dict[str, dict[str, list[str]]]:
        """For every live stack: its resources' physical ids by type."""
        stacks: dict[str, dict[str, list[str]]] = {}
        for page in self._cloudformation.get_paginator("list_stacks").paginate():
            for summary in page.get("StackSummaries", []):
                if summary.get("StackStatus") in _GONE_STACK_STATUSES:
                    continue
                stack_id = summary["StackId"]
                by_type: dict[str, list[str]] = {}
                for resource_page in self._cloudformation.get_paginator("list_stack_resources").paginate(
                    StackName=stack_id
                ):
                    for resource in resource_page.get("StackResourceSummaries", []):
                        physical = resource.get("PhysicalResourceId")
                        if physical:
                            by_type.setdefault(resource.get("ResourceType", ""), []).append(physical)
                stacks[stack_id] = by_type
        return stacks

    # --- services ----------------------------------------------------------------------------------

    def _reconcile_services(self, clusters: Sequence[str], stacks: Mapping[str, Mapping[str, list[str]]]) -> None:
        owned_now = {
            arn: stack_id for stack_id, by_type in stacks.items() for arn in by_type.get("AWS::ECS::Service", [])
        }
        for arn, stack_id in owned_now.items():
            self._service_owner.setdefault(arn, stack_id)
        live: dict[str, dict[str, Any]] = {}
        for cluster in clusters:
            arns: list[str] = []
            for page in self._ecs.get_paginator("list_services").paginate(cluster=cluster):
                arns.extend(page.get("serviceArns", []))
            for start in range(0, len(arns), 10):
                described = self._ecs.describe_services(cluster=cluster, services=arns[start : start + 10])
                for service in described.get("services", []):
                    if service.get("status") != "ACTIVE":
                        continue
                    owner = self._service_owner.get(service["serviceArn"])
                    if owner is not None and owned_now.get(service["serviceArn"]) != owner:
                        continue  # its stack is gone, or no longer has it: moto just did not delete it
                    live[service["serviceArn"]] = dict(service, clusterArn=service.get("clusterArn", cluster))
        for arn in [arn for arn in self._services if arn not in live]:
            log.info("service gone: stopping its processes", extra={"service": arn})
            state = self._services.pop(arn)
            self._terminate(state.containers())
        for arn, service in live.items():
            self._reconcile_service(arn, service)

    def _reconcile_service(self, arn: str, service: Mapping[str, Any]) -> None:
        task_definition = str(service["taskDefinition"])
        state = self._services.get(arn)
        if state is None:
            state = self._services[arn] = _Service(arn, str(service["clusterArn"]), task_definition)
        elif state.task_definition != task_definition:
            log.info("service moved to another task definition: replacing its tasks", extra={"service": arn})
            self._terminate(state.containers())
            state.tasks = []
            state.task_definition = task_definition
        # A task ends when an essential container ends (ECS then stops the others); the service starts another.
        for task in list(state.tasks):
            ended = [c for c in task if c.exit_code() is not None and c.essential]
            if not ended:
                continue
            self._terminate(task)
            state.tasks.remove(task)
            if any(c.stopping for c in ended):
                continue
            state.restarts += 1
            quick = time.monotonic() - min(c.started for c in task) < 10
            state.failures_in_a_row = state.failures_in_a_row + 1 if quick else 0
            state.next_start = time.monotonic() + min(
                RESTART_DELAY_CAP, RESTART_DELAY * 2 ** max(0, state.failures_in_a_row - 1)
            )
            log.info(
                "service task ended: ECS would start another",
                extra={"service": arn, "exit_codes": {c.container: c.exit_code() for c in task}},
            )
        desired = int(service.get("desiredCount") or 0)
        if len(state.tasks) > desired:
            extra = state.tasks[desired:]
            state.tasks = state.tasks[:desired]
            self._terminate([c for task in extra for c in task])
        elif len(state.tasks) < desired and time.monotonic() >= state.next_start:
            for _ in range(desired - len(state.tasks)):
                state.tasks.append(self._start(f"service:{arn}", task_definition, None))

    # --- tasks started by RunTask -------------------------------------------------------------------

    def _reconcile_tasks(self, clusters: Sequence[str]) -> None:
        wanted: dict[str, dict[str, Any]] = {}
        for cluster in clusters:
            arns: list[str] = []
            for page in self._ecs.get_paginator("list_tasks").paginate(cluster=cluster, desiredStatus="RUNNING"):
                arns.extend(page.get("taskArns", []))
            for start in range(0, len(arns), 100):
                for task in self._ecs.describe_tasks(cluster=cluster, tasks=arns[start : start + 100]).get("tasks", []):
                    if task.get("desiredStatus", "RUNNING") == "RUNNING":
                        wanted[task["taskArn"]] = dict(task, clusterArn=task.get("clusterArn", cluster))
        for arn, task in wanted.items():
            if arn in self._seen_tasks or str(task.get("startedBy", "")).startswith("ecs-svc/"):
                continue
            self._seen_tasks.add(arn)
            overrides = {
                str(item.get("name")): item for item in (task.get("overrides") or {}).get("containerOverrides", [])
            }
            containers = self._start(f"task:{arn}", str(task["taskDefinitionArn"]), overrides)
            self._tasks[arn] = _Task(arn, str(task["clusterArn"]), containers)
            log.info("task started", extra={"task": arn, "containers": [c.container for c in containers]})
        for arn, state in list(self._tasks.items()):
            essential_ended = any(c.essential and c.exit_code() is not None for c in state.containers)
            if arn not in wanted or essential_ended:  # stopped in ECS, or an essential container ended
                self._terminate(state.containers)
            for container in state.containers:
                code = container.exit_code()
                if code is not None and container.container not in state.exits:
                    state.exits[container.container] = code
                    self._record_exit(container)
            if len(state.exits) == len(state.containers):
                self._finish_task(state)

    def _finish_task(self, state: _Task) -> None:
        for container in state.containers:
            code = container.exit_code()
            if code is not None and container.container not in state.exits:
                state.exits[container.container] = code
                self._record_exit(container)
        self._tasks.pop(state.arn, None)
        reason = "containers exited: " + ", ".join(f"{name} {code}" for name, code in sorted(state.exits.items()))
        with contextlib.suppress(Exception):  # the cluster or task may be gone
            self._ecs.stop_task(cluster=state.cluster, task=state.arn, reason=reason[:255])
        log.info("task stopped", extra={"task": state.arn, "reason": reason})

    # --- EventBridge ------------------------------------------------------------------------------

    def _fire_rules(self, stacks: Mapping[str, Any]) -> None:
        now = self._clock()
        for page in self._events.get_paginator("list_rules").paginate():
            for rule in page.get("Rules", []):
                if rule.get("State") != "ENABLED":
                    continue
                targets = [
                    target
                    for target in self._events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", [])
                    if ":ecs:" in target.get("Arn", "")
                    and ":cluster/" in target.get("Arn", "")
                    and self._watched(target["Arn"])
                ]
                if not targets:
                    continue
                for key in self._rule_firings(rule, targets, now, stacks):
                    if key in self._fired:
                        continue
                    for target in targets:
                        self._run_target(rule["Name"], target)
                    self._fired.add(key)  # only once RunTask worked: a failed firing is tried again
                self._last_schedule_check[rule["Arn"]] = now

    def _rule_firings(
        self, rule: Mapping[str, Any], targets: Sequence[Mapping[str, Any]], now: dt.datetime, stacks: Mapping[str, Any]
    ) -> Iterator[tuple[str, ...]]:
        """Keys of the firings due now (each fires once)."""
        identity = (rule["Arn"], *sorted(json.dumps(t, sort_keys=True, default=str) for t in targets))
        expression = rule.get("ScheduleExpression")
        if expression:
            if self.fire_schedules_now:
                yield ("now", *identity)
            last = self._last_schedule_check.get(rule["Arn"])
            if last is not None:
                for moment in _due(expression, last, now):
                    yield ("at", moment.isoformat(), *identity)
            return
        pattern = json.loads(rule.get("EventPattern") or "{}")
        if _STACK_EVENT_SOURCE not in pattern.get("source", []) or _STACK_EVENT_TYPE not in pattern.get(
            "detail-type", []
        ):
            return
        statuses = set(pattern.get("detail", {}).get("status-details", {}).get("status", []))
        for stack_id in pattern.get("resources", []):
            if stack_id not in stacks:
                continue
            described = self._cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]
            status = described.get("StackStatus", "")
            if statuses and status not in statuses:
                continue
            when = described.get("LastUpdatedTime") or described.get("CreationTime")
            yield ("stack", stack_id, status, str(when), *identity)

    def _run_target(self, rule_name: str, target: Mapping[str, Any]) -> None:
        parameters = target.get("EcsParameters") or {}
        arguments: dict[str, Any] = {
            "cluster": target["Arn"],
            "taskDefinition": parameters["TaskDefinitionArn"],
            "count": int(parameters.get("TaskCount") or 1),
            "launchType": parameters.get("LaunchType") or "FARGATE",
            "startedBy": f"events-rule/{rule_name}"[:36],
        }
        network = _camel_keys(parameters.get("NetworkConfiguration") or {})
        if network.get("awsvpcConfiguration"):
            arguments["networkConfiguration"] = network
        if target.get("Input"):
            overrides = json.loads(target["Input"])
            if isinstance(overrides, dict) and overrides.get("containerOverrides"):
                arguments["overrides"] = {"containerOverrides": overrides["containerOverrides"]}
        response = self._ecs.run_task(**arguments)
        log.info(
            "rule fired: task started",
            extra={"rule": rule_name, "tasks": [task["taskArn"] for task in response.get("tasks", [])]},
        )

    # --- processes ---------------------------------------------------------------------------------

    def _task_definition(self, task_definition: str) -> dict[str, Any]:
        definition = self._task_definitions.get(task_definition)
        if definition is None:
            definition = self._ecs.describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
            if ":" in task_definition.rsplit("/", 1)[-1]:  # a revision never changes; a family's latest may
                self._task_definitions[task_definition] = definition
        return definition

    def _containers_of(self, task_definition: str, overrides: Mapping[str, Any] | None) -> list[ContainerSpec]:
        return [
            ContainerSpec.from_definition(item, self.python, (overrides or {}).get(str(item.get("name"))))
            for item in self._task_definition(task_definition).get("containerDefinitions", [])
        ]

    def _volumes(self, task_definition: str, workdir: Path) -> dict[str, Path]:
        """A folder per volume of one task: a volume's host path when it has one, else a fresh folder (as
        Fargate's task-scoped storage)."""
        folders: dict[str, Path] = {}
        for volume in _camel_keys(self._task_definition(task_definition).get("volumes") or []):
            name = str(volume.get("name", ""))
            host_path = (volume.get("host") or {}).get("sourcePath")
            folders[name] = Path(host_path) if host_path else workdir / "volumes" / name
            folders[name].mkdir(parents=True, exist_ok=True)
        return folders

    def _environment(self, container: ContainerSpec, volumes: Mapping[str, Path]) -> dict[str, str]:
        base = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AWS_", "DTH_")) and name != "PYTHONSTARTUP"
        }
        base.update({"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region})  # as Fargate sets them
        environment = dict(container.environment)
        # Volumes are folders here, not mounts: a path into a mounted volume in the environment points to its
        # folder, and a volume mounted at /tmp becomes TMPDIR.
        for volume, container_path in container.mounts:
            folder = volumes.get(volume)
            if folder is None:
                continue
            for name, value in environment.items():
                if value == container_path or value.startswith(container_path + "/"):
                    environment[name] = str(folder) + value[len(container_path) :]
            if container_path == "/tmp":
                environment.setdefault("TMPDIR", str(folder))
        base.update(environment)
        # The runner's one deviation from ECS: reach moto, with moto's keys.
        base.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
            }
        )
        return base

    def _start(self, owner: str, task_definition: str, overrides: Mapping[str, Any] | None) -> list[RunningContainer]:
        started: list[RunningContainer] = []
        self._counter += 1
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", owner.rsplit("/", 1)[-1])
        workdir = self.log_dir / f"{self._counter:04d}-{name}"
        workdir.mkdir(parents=True, exist_ok=True)
        volumes = self._volumes(task_definition, workdir)
        for container in self._containers_of(task_definition, overrides):
            log_path = self.log_dir / f"{self._counter:04d}-{name}-{container.name}.log"
            if self.pods is not None:
                pod = self.pods.launch(owner, container.in_pod(), self.region, log_path, POD_LABELS)
                started.append(
                    RunningContainer(
                        owner, container.name, pod, log_path, self._stop_timeout(container), container.essential
                    )
                )
                log.info(
                    "container started as a pod",
                    extra={"owner": owner, "container": container.name, "pod": pod.name, "image": container.image},
                )
                continue
            setpriv = shutil.which("setpriv")
            guard = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
            handle: IO[bytes]
            with log_path.open("wb") as handle:
                process = subprocess.Popen(
                    [*guard, *container.argv],
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env=self._environment(container, volumes),
                    cwd=workdir,
                    start_new_session=True,
                )
            timeout = self._stop_timeout(container)
            started.append(RunningContainer(owner, container.name, process, log_path, timeout, container.essential))
            log.info(
                "container started",
                extra={"owner": owner, "container": container.name, "pid": process.pid, "argv": container.argv},
            )
        return started

    def _stop_timeout(self, container: ContainerSpec) -> float:
        if self.max_stop_timeout is not None:
            return min(container.stop_timeout, self.max_stop_timeout)
        return container.stop_timeout

    def _terminate(self, containers: Sequence[RunningContainer], timeout: float | None = None) -> None:
        """SIGTERM to each process group, then SIGKILL to those still there after their stop timeout."""
        live = [c for c in containers if c.exit_code() is None]
        for container in live:
            container.stopping = True
            container.signal(signal.SIGTERM)
        for container in live:
            try:
                container.process.wait(timeout if timeout is not None else container.stop_timeout)
            except subprocess.TimeoutExpired:
                container.signal(signal.SIGKILL)
                container.process.wait()
        for container in containers:
            if container.exit_code() is not None and container.owner.startswith("service:"):
                self._record_exit(container)

    def _record_exit(self, container: RunningContainer) -> None:
        code = container.exit_code()
        if code is None:
            return
        record = ContainerExit(container.owner, container.container, code, container.log_path, container.stopping)
        if not any(e.log_path == record.log_path for e in self._exits):
            self._exits.append(record)


# --- schedules ------------------------------------------------------------------------------------

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def _field_values(text: str, low: int, high: int, names: Sequence[str] = ()) -> set[int] | None:
    """The values an EventBridge cron field allows; None for what this runner does not evaluate (L, W, #)."""
    if text in ("*", "?"):
        return set(range(low, high + 1))
    values: set[int] = set()
    for token in text.split(","):
        base, _, step_text = token.partition("/")
        step = int(step_text) if step_text else 1
        if any(mark in base for mark in ("L", "W", "#")) and base.upper() not in names:
            return None
        if base in ("*", "?"):
            start, end = low, high
        else:
            first, _, last = base.partition("-")

            def number(value: str) -> int:
                upper = value.upper()
                return names.index(upper) + low if upper in names else int(value)

            start = number(first)
            end = number(last) if last else (high if step_text else start)
        values.update(range(start, end + 1, step))
    return values


def cron_matches(expression: str, moment: dt.datetime) -> bool:
    """Whether an EventBridge `cron(min hour day month weekday year)` fires at `moment`'s minute (UTC)."""
    match = _CRON.match(expression.strip())
    if not match:
        return False
    fields = match.group(1).split()
    if len(fields) != 6:
        return False
    minute, hour, day, month, weekday, year = fields
    checks = [
        (_field_values(minute, 0, 59), moment.minute),
        (_field_values(hour, 0, 23), moment.hour),
        (_field_values(day, 1, 31), moment.day),
        (_field_values(month, 1, 12, _MONTHS), moment.month),
        (_field_values(weekday, 1, 7, _DAYS), (moment.isoweekday() % 7) + 1),
        (_field_values(year, 1970, 2199), moment.year),
    ]
    return all(allowed is not None and value in allowed for allowed, value in checks)


def _due(expression: str, since: dt.datetime, now: dt.datetime) -> Iterator[dt.datetime]:
    """The minutes in (since, now] at which a schedule fires."""
    rate = _RATE.match(expression.strip())
    minute = since.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    if rate:
        count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
        period = count * {"minute": 1, "hour": 60, "day": 1440}[unit]
        epoch_minutes = int(minute.timestamp() // 60)
        while minute <= now:
            if (epoch_minutes % period) == 0:
                yield minute
            minute += dt.timedelta(minutes=1)
            epoch_minutes += 1
        return
    while minute <= now:
        if cron_matches(expression, minute):
            yield minute
        minute += dt.timedelta(minutes=1)


# --- command line ------------------------------------------------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    from dth.errors import DthError

    if not args.endpoint_url:
        raise DthError("no moto endpoint: pass --endpoint-url or set AWS_ENDPOINT_URL")
    runner = EcsRunner(
        args.endpoint_url,
        region=args.region,
        log_dir=args.log_dir,
        poll_interval=args.poll_interval,
        fire_schedules_now=args.fire_schedules_now,
        max_stop_timeout=args.max_stop_timeout,
        clusters=args.clusters,
    )
    print(json.dumps({"endpoint_url": args.endpoint_url, "log_dir": str(runner.log_dir)}), flush=True)
    runner.run_forever()
    return 0
