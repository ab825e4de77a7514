"""An image task in one process: list, compare digests, copy what differs with skopeo, record everything.

1. Both registries are checked (GET /v2/ with the credentials). One that cannot be reached ends the run
   (AccessError); one that refuses the credentials fails every image with that reason, listed.
2. The selection is expanded to images (repo:tag): ECR's API or the registry's catalog and tag lists.
3. Each image's digests are read, two HEAD requests (more of these run at once than copies): the source
   tag's (in `system` mode, the digest of this platform's image inside an index) and what the destination
   tag points at. Equal digests: already there, skipped.
4. Every image is planned in the status store with its source digest; the rest are copied by skopeo *by
   digest* (so the copy is exactly what was compared, even if the tag moves meanwhile) with
   --preserve-digests, `concurrency` at once.
5. Failures that may pass (network, 5xx, 429) are retried with exponential backoff and jitter; others
   (credentials, no such image) fail at once. Counters are exact: found = copied + skipped + failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dth.errors import AccessError
from dth.image.errors import NotFoundError, RegistryAuthError, RegistryError
from dth.image.plan import ImageJob, Planner, read_ssm_parameter
from dth.image.retry import RetriesExhaustedError, RetryPolicy, retrying
from dth.image.sides import Side, connect
from dth.image.skopeo import Endpoint, Platform, Skopeo, system_platform
from dth.spec.image import ImageTaskSpec, MultiArch
from dth.spec.model import TransferCounters
from dth.state.store import ObjectResult, ObjectState, Operation, PlannedObject, SqliteStatusStore, StatusStore

log = logging.getLogger(__name__)

ProgressCallback = Callable[[TransferCounters, bool], None]

COPIED = "copied"
SKIPPED = "skipped"
FAILED = "failed"
TO_COPY = "to-copy"  # dry runs only


@dataclass
class ImageOutcome:
    """What happened to one image (or to an entry that never became one)."""

    key: str
    destination: str
    state: str
    source_digest: str = ""
    destination_digest: str = ""
    attempts: int = 0
    seconds: float = 0.0
    reason: str = ""


@dataclass
class ImageSyncResult:
    run_id: str
    counters: TransferCounters
    elapsed: float
    dry_run: bool = False
    images: list[ImageOutcome] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> list[ImageOutcome]:
        return [i for i in self.images if i.state == FAILED]

    @property
    def copied(self) -> list[ImageOutcome]:
        return [i for i in self.images if i.state == COPIED]

    @property
    def to_copy(self) -> list[ImageOutcome]:
        return [i for i in self.images if i.state == TO_COPY]

    @property
    def accounted(self) -> bool:
        """Every image found ended copied or skipped: the only outcome that counts as success."""
        c = self.counters
        return self.error is None and c.failed == 0 and c.found == c.copied + c.skipped


@dataclass(frozen=True)
class _Checked:
    """An image whose digests were read: the source's, and what the destination's tag points at now."""

    job: ImageJob
    source_digest: str  # the tag's manifest (an index for multi-platform images)
    copy_digest: str  # what lands at the destination: the same, or this platform's image in `system` mode
    destination_digest: str | None  # None: the destination has no such tag
    attempts: int

    @property
    def unchanged(self) -> bool:
        return self.destination_digest == self.copy_digest


def check_threads(concurrency: int) -> int:
    """Digest checks are two HEAD requests each: cheap for both sides, so more of them run at once than
    copies (three per copy slot, at most 64)."""
    return max(1, min(64, 3 * concurrency))


class ImageSync:
    def __init__(
        self,
        spec: ImageTaskSpec,
        *,
        task_name: str,
        state_path: Path | None = None,
        store: StatusStore | None = None,
        namespace: str = "default",
        on_progress: ProgressCallback | None = None,
        on_image: Callable[[ImageOutcome], None] | None = None,
        retry: RetryPolicy | None = None,
        skopeo: str = "skopeo",
        platform: Platform | None = None,
        ssm_reader: Callable[[str], str] = read_ssm_parameter,
    ) -> None:
        self.spec = spec
        self.options = spec.options
        self.task_name = task_name
        if state_path is None:
            from dth.s3.sync import default_state_path  # the S3 engine's rule for where state lives

            state_path = default_state_path(task_name)
        self.state_path = state_path
        self._store = store
        self.namespace = namespace
        self.on_progress = on_progress
        self.on_image = on_image
        self.retry = retry or RetryPolicy(max_retries=self.options.max_retries)
        self.skopeo_binary = skopeo
        self.platform = platform or system_platform()
        self.ssm_reader = ssm_reader
        self._lock = threading.Lock()
        self._repository_locks: dict[str, threading.Lock] = {}

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> ImageSyncResult:
        started = time.monotonic()
        pool = check_threads(self.options.concurrency) + 4
        # Before any registry request: a missing skopeo is an error of this machine, not of the images.
        with contextlib.ExitStack() as cleanup:
            skopeo = None if self.options.dry_run else Skopeo(self.skopeo_binary)
            if skopeo is not None:
                cleanup.callback(skopeo.close)
            source = connect("source", self.spec.source, namespace=self.namespace, pool_size=pool)
            cleanup.callback(source.close)
            destination = connect("destination", self.spec.destination, namespace=self.namespace, pool_size=pool)
            cleanup.callback(destination.close)
            source_blocked = self._preflight(source)
            destination_blocked = self._preflight(destination)
            planner = Planner(
                self.spec, source, retry=self.retry, source_blocked=source_blocked, ssm_reader=self.ssm_reader
            )
            expansion = planner.expand(threads=check_threads(self.options.concurrency))
            blocked = source_blocked or destination_blocked
            early = [ImageOutcome(f.key, "", FAILED, attempts=f.attempts, reason=f.reason) for f in expansion.failures]
            checked, unchecked = self._check_all(source, destination, expansion.jobs, blocked)
            early += unchecked
            if skopeo is None:
                return self._dry_run(checked, early, blocked, started)
            return self._transfer(source, destination, skopeo, checked, early, blocked, started)

    def _preflight(self, side: Side) -> str | None:
        """None when the registry answers and takes the credentials; the reason when it refuses them.
        An unreachable registry (after retries) ends the run."""
        try:
            retrying(side.client.ping, self.retry, on_retry=lambda e: log.warning("%s", e))
        except RetriesExhaustedError as gave_up:
            if isinstance(gave_up.error, RegistryAuthError):
                log.info("%s", gave_up.error)
                return str(gave_up.error)
            raise AccessError(str(gave_up.error)) from None
        return None

    # -- digests ---------------------------------------------------------------------------------

    def _source_digests(self, source: Side, job: ImageJob) -> tuple[str, str]:
        """(the tag's digest, the digest to copy): in `system` mode, this platform's image in an index."""
        repository, tag = job.source.repository, job.source.tag
        head = source.client.head_manifest(repository, tag)
        if head is None:
            raise NotFoundError(f"{source.name} has no image {job.key}")
        if self.options.multi_arch is MultiArch.ALL or not head.is_index:
            return head.digest, head.digest
        found = source.client.get_manifest(repository, head.digest)
        if found is None:
            raise NotFoundError(f"{source.name} has no manifest {head.digest} for {job.key}", retryable=True)
        _, body = found
        for entry in json.loads(body).get("manifests") or []:
            if isinstance(entry, dict) and self.platform.matches(entry.get("platform") or {}):
                return head.digest, str(entry["digest"])
        raise NotFoundError(f"{job.key} is a multi-platform image without a {self.platform} image")

    def _check_all(
        self, source: Side, destination: Side, jobs: list[ImageJob], blocked: str | None
    ) -> tuple[list[_Checked], list[ImageOutcome]]:
        if blocked:
            return [], [ImageOutcome(j.key, j.destination, FAILED, attempts=1, reason=blocked) for j in jobs]

        def check(job: ImageJob) -> _Checked | ImageOutcome:
            def attempt() -> tuple[str, str, str | None]:
                source_digest, copy_digest = self._source_digests(source, job)
                head = destination.client.head_manifest(job.destination_repository, job.source.tag)
                return source_digest, copy_digest, head.digest if head else None

            try:
                (source_digest, copy_digest, current), attempts = retrying(attempt, self.retry)
            except RetriesExhaustedError as gave_up:
                return ImageOutcome(
                    job.key, job.destination, FAILED, attempts=gave_up.attempts, reason=str(gave_up.error)
                )
            return _Checked(job, source_digest, copy_digest, current, attempts)

        checked: list[_Checked] = []
        failed: list[ImageOutcome] = []
        threads = check_threads(self.options.concurrency)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="check") as pool:
            for outcome in pool.map(check, jobs):
                if isinstance(outcome, _Checked):
                    checked.append(outcome)
                else:
                    failed.append(outcome)
        return checked, failed

    # -- copies ----------------------------------------------------------------------------------

    def _transfer(
        self,
        source: Side,
        destination: Side,
        skopeo: Skopeo,
        checked: list[_Checked],
        early: list[ImageOutcome],
        blocked: str | None,
        started: float,
    ) -> ImageSyncResult:
        store = self._store or SqliteStatusStore(self.state_path)
        run_id = store.start_run(self.task_name)
        finished = threading.Event()
        planned = threading.Event()

        def report_progress() -> None:
            while not finished.wait(0.25):
                if self.on_progress:
                    self.on_progress(store.counters(run_id), planned.is_set())

        reporter = threading.Thread(target=report_progress, name="progress", daemon=True)
        reporter.start()
        outcomes: list[ImageOutcome] = []
        try:
            store.plan(
                run_id,
                [PlannedObject(o.key, Operation.COPY, 0, o.source_digest) for o in early]
                + [PlannedObject(c.job.key, Operation.COPY, 0, c.source_digest) for c in checked],
            )
            store.finish_scan(run_id)
            planned.set()
            unchanged = [
                ImageOutcome(
                    c.job.key,
                    c.job.destination,
                    SKIPPED,
                    c.source_digest,
                    c.copy_digest,
                    c.attempts,
                    reason="unchanged",
                )
                for c in checked
                if c.unchanged
            ]
            for outcome in early + unchanged:
                self._record(store, run_id, outcome)
            outcomes.extend(early + unchanged)

            def work(item: _Checked) -> ImageOutcome:
                outcome = self._copy(source, destination, skopeo, item, store, run_id)
                self._record(store, run_id, outcome, retries_recorded=True)
                return outcome

            with ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="copy") as pool:
                outcomes.extend(pool.map(work, [c for c in checked if not c.unchanged]))
        finally:
            finished.set()
            reporter.join()
        counters = store.counters(run_id)
        if self.on_progress:
            self.on_progress(counters, True)
        if self._store is None:
            store.close()
        outcomes.sort(key=lambda o: o.key)
        return ImageSyncResult(run_id, counters, time.monotonic() - started, images=outcomes, error=blocked)

    def _copy(
        self, source: Side, destination: Side, skopeo: Skopeo, item: _Checked, store: StatusStore, run_id: str
    ) -> ImageOutcome:
        job = item.job
        began = time.monotonic()
        first = True
        copied_now = False

        def attempt() -> str:
            nonlocal first, copied_now
            if not first:  # a retry: an earlier attempt may have got further than it seemed
                head = destination.client.head_manifest(job.destination_repository, job.source.tag)
                if head is not None and head.digest == item.copy_digest:
                    return head.digest
            first = False
            self._ensure_repository(destination, job.destination_repository)
            digest = skopeo.copy(
                self._endpoint(skopeo, source),
                f"{job.source.repository}@{item.copy_digest}",
                self._endpoint(skopeo, destination),
                job.destination,
                all_platforms=self.options.multi_arch is MultiArch.ALL,
                platform_=self.platform,
            )
            if digest and digest != item.copy_digest:
                raise RegistryError(f"the destination holds {digest}, not the source's {item.copy_digest}")
            copied_now = True
            return digest or item.copy_digest

        def on_retry(error: RegistryError) -> None:
            log.info("retrying %s: %s", job.key, error, extra={"image": job.key})
            store.record_attempt(run_id, job.key, Operation.COPY, str(error))

        try:
            digest, attempts = retrying(attempt, self.retry, on_retry=on_retry)
        except RetriesExhaustedError as gave_up:
            return ImageOutcome(
                job.key,
                job.destination,
                FAILED,
                item.source_digest,
                attempts=gave_up.attempts,
                seconds=time.monotonic() - began,
                reason=str(gave_up.error),
            )
        # Copied, or (after a failed attempt) found there already: either way, it is there now.
        return ImageOutcome(
            job.key, job.destination, COPIED, item.source_digest, digest, attempts, time.monotonic() - began
        )

    def _endpoint(self, skopeo: Skopeo, side: Side) -> Endpoint:
        authfile = skopeo.authfile(side.role, side.host, side.login())
        return Endpoint(side.host, side.location.insecure, authfile)

    def _ensure_repository(self, destination: Side, repository: str) -> None:
        if destination.ecr is None or not self.options.create_repositories:
            return
        with self._lock:
            lock = self._repository_locks.setdefault(repository, threading.Lock())
        with lock:
            if destination.ecr.ensure_repository(repository):
                log.info("created ECR repository %s", repository, extra={"repository": repository})

    def _record(
        self, store: StatusStore, run_id: str, outcome: ImageOutcome, *, retries_recorded: bool = False
    ) -> None:
        state = {COPIED: ObjectState.COPIED, SKIPPED: ObjectState.SKIPPED}.get(outcome.state, ObjectState.FAILED)
        if not retries_recorded:  # a copy's retries are recorded as they happen; a check's before planning cannot be
            for _ in range(outcome.attempts - 1):
                store.record_attempt(run_id, outcome.key, Operation.COPY, "")
        # The store has no duration field: a copy's duration goes in its reason.
        reason = {COPIED: f"copied in {outcome.seconds:.2f} s", SKIPPED: "unchanged"}.get(outcome.state, outcome.reason)
        store.complete(
            run_id, [ObjectResult(outcome.key, Operation.COPY, state, 0, outcome.destination_digest, reason)]
        )
        # INFO even for failures: the run's report lists them; the container entrypoint logs INFO.
        log.info(
            "%s %s%s",
            outcome.state,
            outcome.key,
            f": {outcome.reason}" if outcome.reason and outcome.state == FAILED else "",
            extra={
                "image": outcome.key,
                "digest": outcome.destination_digest,
                "attempts": outcome.attempts,
                "seconds": round(outcome.seconds, 3),
            },
        )
        if self.on_image:
            self.on_image(outcome)

    # -- dry run ---------------------------------------------------------------------------------

    def _dry_run(
        self, checked: list[_Checked], early: list[ImageOutcome], blocked: str | None, started: float
    ) -> ImageSyncResult:
        outcomes = list(early)
        for c in checked:
            job = c.job
            if c.unchanged:
                outcomes.append(
                    ImageOutcome(job.key, job.destination, SKIPPED, c.source_digest, c.copy_digest, c.attempts)
                )
            else:
                reason = (
                    "not at the destination"
                    if c.destination_digest is None
                    else f"the destination has {c.destination_digest}"
                )
                outcomes.append(
                    ImageOutcome(
                        job.key,
                        job.destination,
                        TO_COPY,
                        c.source_digest,
                        c.destination_digest or "",
                        c.attempts,
                        reason=reason,
                    )
                )
        outcomes.sort(key=lambda o: o.key)
        for outcome in outcomes:
            if self.on_image:
                self.on_image(outcome)
        counters = TransferCounters(
            found=len(outcomes),
            skipped=sum(o.state == SKIPPED for o in outcomes),
            failed=sum(o.state == FAILED for o in outcomes),
        )
        return ImageSyncResult("dry-run", counters, time.monotonic() - started, True, outcomes, blocked)
