"""The status store on Amazon DynamoDB: one table, string keys `pk` (partition) and `sk` (sort).

Item layout (single-table design; `<run>` is a run id, `<task>` a task name, `<key>` an object key):

| item                  | pk                      | sk                              | attributes                            |
| --------------------- | ----------------------- | ------------------------------- | ------------------------------------- |
| run, and its counters | `RUN#<run>`             | `RUN`                           | task, started, scan_finished (once    |
|                       |                         |                                 | finished), found, copied, skipped,    |
|                       |                         |                                 | deleted, failed, bytes_found,         |
|                       |                         |                                 | bytes_copied, bytes_skipped           |
| a task's runs         | `TASK#<task>`           | `RUN#<started>#<run>`           | run_id (started: seconds, 17 chars,   |
|                       |                         |                                 | zero-padded: sorts as time)           |
| scan lock             | `TASK#<task>`           | `LOCK`                          | owner, expires                        |
| object record         | `OBJ#<run>#<operation>` | `<key>`                         | operation, state, size, etag,         |
|                       |                         |                                 | dest_etag, attempts, reason,          |
|                       |                         |                                 | last_error, updated                   |
| giant-object upload   | `UPLOAD#<run>`          | `<key>`                         | upload_id, total_parts, parts_done,   |
|                       |                         |                                 | completed_by (once claimed), aborted  |
| one part of it        | `PART#<run>#<key>`      | part number, 5 digits           | part_number, etag                     |
| S3 event sequencer    | `EVENT#<task>`          | `<key>`                         | sequencer, seq_order                  |
| upload in progress    | `UPLOADS#<task>`        | `<upload id>`                   | key, bucket, dest_key, etag, mark,    |
|                       |                         |                                 | started                               |

The object key is a whole sort key (S3 keys reach 1024 bytes, DynamoDB's limit for a sort key), and each
operation has its own partition, so `records` reads the copy and delete partitions in key order and
merges them. Run ids never contain `#`. The one key that cannot be a sort key is the empty one (the
folder marker `app/` at a task's prefix `app/`; DynamoDB refuses empty key strings): its object record and
upload item live alone in the partition of the others plus a trailing `#`, under the sort key `ROOT`.

Exact counters: the run item holds them, and every change of a record that moves them is one
TransactWriteItems with the counter update: a record is put only if it does not exist (`plan`), or
finished only while still `queued` (`complete`), and the counters move in the same transaction or not at
all. A redelivered message, a replayed request or a worker racing another cannot count twice. Each
transaction gets a fresh ClientRequestToken, so botocore's retries of it are idempotent too.
`counters` is one strongly consistent GetItem.

History: items carry `expires_at` (epoch seconds, `history_days` after it was written), the table's
TimeToLiveSpecification attribute, so DynamoDB deletes runs, records, uploads, event sequencers and stale locks
by itself once they are that old, without costing a write. A task's latest run (its run item and its entry in
the task's runs) gets its expiry only when a newer run starts: a task that ran once keeps its outcome, which
the operator shows, however long ago that was.

All reads that decide something are strongly consistent. Every write to a run's counters goes to its
one item: DynamoDB takes about 1,000 writes a second on one item, and transactions touching it at the
same moment conflict (TransactionConflict); conflicts are retried with backoff.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from botocore.exceptions import ClientError

from dth.spec.model import TransferCounters
from dth.state.store import (
    FINAL_STATES,
    ObjectRecord,
    ObjectResult,
    ObjectState,
    Operation,
    PlannedObject,
    StatusStore,
    UploadRecord,
)

log = logging.getLogger(__name__)

#: Records per transaction (DynamoDB allows 100 actions; one is the counter update). Smaller batches
#: conflict less with other writers of the run's counters.
BATCH_RECORDS = 25
#: Rounds of retries after transaction conflicts or throttling before giving up.
CONFLICT_ATTEMPTS = 10
#: Reasons and errors are kept to this many characters (an item holds at most 400 KB).
MAX_TEXT = 16_384
#: The table's time-to-live attribute: DynamoDB deletes an item once this time (epoch seconds) has passed.
EXPIRY_ATTRIBUTE = "expires_at"
#: Days the store's items live by default.
DEFAULT_HISTORY_DAYS = 90.0

_COUNTER_NAMES = ("found", "copied", "skipped", "deleted", "failed", "bytes_found", "bytes_copied", "bytes_skipped")

# Which counter, and which byte counter, a final state moves (as in the SQLite store).
_STATE_COUNTERS: dict[ObjectState, tuple[str, str | None]] = {
    ObjectState.COPIED: ("copied", "bytes_copied"),
    ObjectState.SKIPPED: ("skipped", "bytes_skipped"),
    ObjectState.DELETED: ("deleted", None),
    ObjectState.FAILED: ("failed", None),
}

# Cancellation reasons (and error codes) worth another attempt.
_RETRYABLE = frozenset(
    {
        "TransactionConflict",
        "TransactionConflictException",
        "TransactionInProgressException",
        "ThrottlingError",
        "ThrottlingException",
        "ProvisionedThroughputExceeded",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
    }
)
_CONDITION_FAILED = "ConditionalCheckFailed"


# --- attribute values -------------------------------------------------------------------------


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _text(value: str) -> dict[str, str]:
    return {"S": value[:MAX_TEXT]}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _str(item: dict[str, Any], name: str, default: str = "") -> str:
    value = item.get(name)
    return str(value["S"]) if value else default


def _int(item: dict[str, Any], name: str, default: int = 0) -> int:
    value = item.get(name)
    return int(value["N"]) if value else default


def _float(item: dict[str, Any], name: str) -> float:
    value = item.get(name)
    return float(value["N"]) if value else 0.0


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def sequencer_key(sequencer: str) -> str:
    """A string that sorts as `store.sequencer_order` compares: S3 sequencers are hex of varying length,
    and DynamoDB compares strings, so store the number of significant digits (zero-padded) first."""
    digits = sequencer.lstrip("0").lower()
    return f"{len(digits):06d}:{digits}"


# --- keys ---------------------------------------------------------------------------------------


def _run_key(run_id: str) -> dict[str, Any]:
    return {"pk": _s(f"RUN#{run_id}"), "sk": _s("RUN")}


def _object_pk(run_id: str, operation: Operation) -> str:
    return f"OBJ#{run_id}#{operation.value}"


#: The sort key of the item of the empty object key, in a partition of its own (see the module's docstring).
EMPTY_KEY_SORT = "ROOT"


def _keyed(partition: str, key: str) -> dict[str, Any]:
    """The item key of an object key within a partition; the empty key has a partition of its own."""
    if key:
        return {"pk": _s(partition), "sk": _s(key)}
    return {"pk": _s(f"{partition}#"), "sk": _s(EMPTY_KEY_SORT)}


def _object_key(run_id: str, key: str, operation: Operation) -> dict[str, Any]:
    return _keyed(_object_pk(run_id, operation), key)


def _upload_key(run_id: str, key: str) -> dict[str, Any]:
    return _keyed(f"UPLOAD#{run_id}", key)


def _parts_pk(run_id: str, key: str) -> str:
    return f"PART#{run_id}#{key}"


class _CancelledError(Exception):
    """A transaction was cancelled: the reason code of each action, in order ("None" where it passed)."""

    def __init__(self, error: ClientError, reasons: list[str]) -> None:
        super().__init__(", ".join(reasons))
        self.error = error
        self.reasons = reasons


class DynamoStatusStore(StatusStore):
    """The status store in one DynamoDB table, built from a boto3 DynamoDB client and the table name.

    boto3 clients are thread-safe: one store serves every worker thread.
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        retry_delay: float = 0.05,
        close_client: bool = False,
        history_days: float = DEFAULT_HISTORY_DAYS,
    ) -> None:
        if history_days <= 0:
            raise ValueError(f"history_days must be positive, got {history_days}")
        self._client = client
        self.table_name = table_name
        self._history_seconds = history_days * 86400
        self._retry_delay = retry_delay
        self._close_client = close_client

    # --- plumbing ---------------------------------------------------------------------------

    def _expiry(self) -> dict[str, str]:
        """The time-to-live value for an item written now."""
        return _n(int(time.time() + self._history_seconds))

    def _sleep(self, attempt: int) -> None:
        time.sleep(min(2.0, self._retry_delay * 2**attempt) * random.uniform(0.5, 1.0))

    def _transact(self, actions: list[dict[str, Any]]) -> None:
        """One TransactWriteItems; raises `_CancelledError` with the reasons when it is cancelled."""
        try:
            self._client.transact_write_items(TransactItems=actions, ClientRequestToken=uuid.uuid4().hex)
        except ClientError as error:
            if _code(error) != "TransactionCanceledException":
                raise
            reasons = [str(reason.get("Code") or "None") for reason in error.response.get("CancellationReasons", [])]
            raise _CancelledError(error, reasons) from error

    def _retrying(self, call: Callable[[], Any]) -> Any:
        """A single-item write, retried while it conflicts with a transaction on the same item."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                return call()
            except ClientError as error:
                if _code(error) not in _RETRYABLE or attempt == CONFLICT_ATTEMPTS - 1:
                    raise
            self._sleep(attempt)
        raise AssertionError("unreachable")

    def _update(self, key: dict[str, Any], expression: str, **kwargs: Any) -> dict[str, Any] | None:
        """UpdateItem; None when its condition fails."""
        try:
            response: dict[str, Any] = self._retrying(
                lambda: self._client.update_item(
                    TableName=self.table_name, Key=key, UpdateExpression=expression, **kwargs
                )
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return response

    def _get(self, key: dict[str, Any], projection: Sequence[str] = ()) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {}
        if projection:
            kwargs["ProjectionExpression"] = ", ".join(f"#p{i}" for i in range(len(projection)))
            kwargs["ExpressionAttributeNames"] = {f"#p{i}": name for i, name in enumerate(projection)}
        response = self._client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True, **kwargs)
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a Query, page after page, strongly consistent."""
        start: dict[str, Any] | None = None
        while True:
            page = self._client.query(
                TableName=self.table_name,
                ConsistentRead=True,
                **kwargs,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            yield from page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def _counter_update(self, run_id: str, increments: dict[str, int]) -> dict[str, Any]:
        names = [name for name, amount in increments.items() if amount]
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": _run_key(run_id),
                "UpdateExpression": "ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(names))),
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeNames": {f"#c{i}": name for i, name in enumerate(names)},
                "ExpressionAttributeValues": {f":c{i}": _n(increments[name]) for i, name in enumerate(names)},
            }
        }

    def _counted_batch(
        self,
        run_id: str,
        entries: list[Any],
        record_action: Callable[[Any], dict[str, Any]],
        increments_of: Callable[[Any], dict[str, int]],
    ) -> None:
        """Apply conditional record actions together with the counter update they add up to, in one
        transaction. Records whose condition fails (they exist, or are final already) are left out and the
        rest tried again; conflicts are retried with backoff."""
        pending = list(entries)
        conflicts = 0
        while pending:
            increments: dict[str, int] = dict.fromkeys(_COUNTER_NAMES, 0)
            for entry in pending:
                for name, amount in increments_of(entry).items():
                    increments[name] += amount
            actions = [record_action(entry) for entry in pending]
            counted = any(increments.values())
            if counted:
                actions.append(self._counter_update(run_id, increments))
            try:
                self._transact(actions)
                return
            except _CancelledError as cancelled:
                reasons = cancelled.reasons
                if counted and len(reasons) == len(actions) and reasons[-1] == _CONDITION_FAILED:
                    raise KeyError(run_id) from None
                failed = {i for i, reason in enumerate(reasons[: len(pending)]) if reason == _CONDITION_FAILED}
                if failed:
                    pending = [entry for i, entry in enumerate(pending) if i not in failed]
                    continue
                if not reasons and len(pending) > 1:
                    # No reasons to go by: one record at a time.
                    for entry in pending:
                        self._counted_batch(run_id, [entry], record_action, increments_of)
                    return
                conflicts += 1
                if conflicts >= CONFLICT_ATTEMPTS or (reasons and not set(reasons) <= _RETRYABLE | {"None"}):
                    raise cancelled.error from None
                log.debug("transaction conflict, retrying", extra={"run": run_id, "reasons": reasons})
                self._sleep(conflicts)

    # --- runs ---------------------------------------------------------------------------------

    def start_run(self, task: str) -> str:
        started = time.time()
        run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(started))}-{uuid.uuid4().hex[:8]}"
        run_item = {**_run_key(run_id), "task": _s(task), "started": _n(started)}
        run_item.update({name: _n(0) for name in _COUNTER_NAMES})
        self._transact(
            [
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": run_item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": {
                            "pk": _s(f"TASK#{task}"),
                            "sk": _s(f"RUN#{started:017.6f}#{run_id}"),
                            "run_id": _s(run_id),
                        },
                    }
                },
            ]
        )
        self._expire_earlier_runs(task, run_id)
        return run_id

    def _expire_earlier_runs(self, task: str, latest: str) -> None:
        """Stamp the expiry on the task's runs that have none but are no longer its latest (usually just the one
        before; after a crash between a run's start and this, a few)."""
        expiry = self._expiry()
        for entry in self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :runs)",
            FilterExpression="attribute_not_exists(#expires)",
            ExpressionAttributeNames={"#expires": EXPIRY_ATTRIBUTE},
            ExpressionAttributeValues={":pk": _s(f"TASK#{task}"), ":runs": _s("RUN#")},
        ):
            run_id = _str(entry, "run_id")
            if run_id == latest:
                continue
            for key in (_run_key(run_id), {"pk": entry["pk"], "sk": entry["sk"]}):
                self._update(
                    key,
                    "SET #expires = :expires",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames={"#expires": EXPIRY_ATTRIBUTE},
                    ExpressionAttributeValues={":expires": expiry},
                )

    def plan(self, run_id: str, objects: Sequence[PlannedObject]) -> None:
        # One action per item in a transaction: a key planned twice in one call is planned once (the first).
        first: dict[tuple[str, Operation], PlannedObject] = {}
        for item in objects:
            first.setdefault((item.key, item.operation), item)
        unique = list(first.values())
        now = time.time()
        expiry = self._expiry()

        def put(item: PlannedObject) -> dict[str, Any]:
            state = ObjectState.SKIPPED if item.skip_reason else ObjectState.QUEUED
            return {
                "Put": {
                    "TableName": self.table_name,
                    "Item": {
                        **_object_key(run_id, item.key, item.operation),
                        "operation": _s(item.operation.value),
                        "state": _s(state.value),
                        "size": _n(item.size),
                        "etag": _s(item.etag),
                        "dest_etag": _s(""),
                        "attempts": _n(0),
                        "reason": _text(item.skip_reason or ""),
                        "last_error": _s(""),
                        "updated": _n(now),
                        EXPIRY_ATTRIBUTE: expiry,
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }

        def increments(item: PlannedObject) -> dict[str, int]:
            if item.operation is not Operation.COPY:
                return {}
            counts = {"found": 1, "bytes_found": item.size}
            if item.skip_reason:
                counts.update(skipped=1, bytes_skipped=item.size)
            return counts

        for start in range(0, len(unique), BATCH_RECORDS):
            self._counted_batch(run_id, unique[start : start + BATCH_RECORDS], put, increments)

    def count_unchanged(self, run_id: str, objects: int, size: int) -> None:
        if not objects and not size:
            return
        increments = {"found": objects, "skipped": objects, "bytes_found": size, "bytes_skipped": size}
        # A transaction for its ClientRequestToken: a retried ADD must not add twice.
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                self._transact([self._counter_update(run_id, increments)])
                return
            except _CancelledError as cancelled:
                if _CONDITION_FAILED in cancelled.reasons:
                    raise KeyError(run_id) from None
                if attempt == CONFLICT_ATTEMPTS - 1 or not set(cancelled.reasons) <= _RETRYABLE | {"None"}:
                    raise cancelled.error from None
            self._sleep(attempt)

    def record_attempt(self, run_id: str, key: str, operation: Operation, error: str) -> None:
        self._update(
            _object_key(run_id, key, operation),
            "SET last_error = :error, updated = :now ADD attempts :one",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":error": _text(error), ":now": _n(time.time()), ":one": _n(1)},
        )

    def complete(self, run_id: str, results: Sequence[ObjectResult]) -> None:
        for result in results:
            if result.state not in FINAL_STATES:
                raise ValueError(f"not a final state: {result.state}")
        first: dict[tuple[str, Operation], ObjectResult] = {}
        for result in results:
            first.setdefault((result.key, result.operation), result)
        unique = list(first.values())
        now = time.time()

        def finish(result: ObjectResult) -> dict[str, Any]:
            values = {
                ":state": _s(result.state.value),
                ":dest_etag": _s(result.dest_etag),
                ":reason": _text(result.reason),
                ":now": _n(now),
                ":one": _n(1),
                ":queued": _s(ObjectState.QUEUED.value),
            }
            expression = "SET #state = :state, dest_etag = :dest_etag, reason = :reason, updated = :now"
            if result.state is ObjectState.FAILED:
                expression += ", last_error = :reason"
            return {
                "Update": {
                    "TableName": self.table_name,
                    "Key": _object_key(run_id, result.key, result.operation),
                    "UpdateExpression": expression + " ADD attempts :one",
                    "ConditionExpression": "#state = :queued",
                    "ExpressionAttributeNames": {"#state": "state"},
                    "ExpressionAttributeValues": values,
                }
            }

        def increments(result: ObjectResult) -> dict[str, int]:
            counter, byte_counter = _STATE_COUNTERS[result.state]
            counts = {counter: 1}
            if byte_counter:
                counts[byte_counter] = result.size if result.operation is Operation.COPY else 0
            return counts

        for start in range(0, len(unique), BATCH_RECORDS):
            self._counted_batch(run_id, unique[start : start + BATCH_RECORDS], finish, increments)

    def finish_scan(self, run_id: str) -> None:
        self._update(
            _run_key(run_id),
            "SET scan_finished = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": _n(time.time())},
        )

    def scan_finished(self, run_id: str) -> bool:
        item = self._get(_run_key(run_id), ["scan_finished"])
        return bool(item and "scan_finished" in item)

    def fail_scan(self, run_id: str, reason: str) -> None:
        self._update(
            _run_key(run_id),
            "SET scan_finished = :now, scan_error = :reason",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": _n(time.time()), ":reason": _text(reason)},
        )

    def scan_error(self, run_id: str) -> str | None:
        item = self._get(_run_key(run_id), ["scan_error"])
        if not item or "scan_error" not in item:
            return None
        return str(item["scan_error"].get("S", "")) or None

    def close_unfinished_scans(self, task: str, reason: str) -> list[str]:
        # Newest first, down to the first finished scan: every finder closes the unfinished ones before it
        # starts its own run, so none is older than a finished one.
        closed: list[str] = []
        for entry in self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :runs)",
            ExpressionAttributeValues={":pk": _s(f"TASK#{task}"), ":runs": _s("RUN#")},
            ProjectionExpression="run_id",
            ScanIndexForward=False,
        ):
            run_id = _str(entry, "run_id")
            ended = self._update(
                _run_key(run_id),
                "SET scan_finished = :now, scan_error = :reason",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(scan_finished)",
                ExpressionAttributeValues={":now": _n(time.time()), ":reason": _text(reason)},
            )
            if ended is None:
                break
            closed.append(run_id)
        return closed[::-1]

    def counters(self, run_id: str) -> TransferCounters:
        item = self._get(_run_key(run_id))
        if item is None:
            raise KeyError(run_id)
        return TransferCounters(**{name: _int(item, name) for name in _COUNTER_NAMES})

    def records(self, run_id: str, states: Sequence[ObjectState], limit: int = 1000) -> list[ObjectRecord]:
        if not states or limit < 1:
            return []
        wanted = list(dict.fromkeys(ObjectState(state) for state in states))
        filter_values = {f":s{i}": _s(state.value) for i, state in enumerate(wanted)}

        def partition(pk: str) -> Iterator[dict[str, Any]]:
            return self._query(
                KeyConditionExpression="pk = :pk",
                FilterExpression=f"#state IN ({', '.join(filter_values)})",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":pk": _s(pk), **filter_values},
            )

        def of(operation: Operation) -> Iterator[ObjectRecord]:
            empty_key = _object_key(run_id, "", operation)["pk"]["S"]
            # The empty key sorts first.
            for item in itertools.chain(partition(empty_key), partition(_object_pk(run_id, operation))):
                yield ObjectRecord(
                    key="" if item["pk"]["S"] == empty_key else _str(item, "sk"),
                    operation=operation,
                    state=ObjectState(_str(item, "state")),
                    size=_int(item, "size"),
                    etag=_str(item, "etag"),
                    attempts=_int(item, "attempts"),
                    reason=_str(item, "reason"),
                    last_error=_str(item, "last_error"),
                    updated=_float(item, "updated"),
                )

        # Both partitions are in key order (DynamoDB sorts strings by their UTF-8 bytes, as Python compares
        # code points): merge them.
        merged = heapq.merge(of(Operation.COPY), of(Operation.DELETE), key=lambda record: record.key)
        return list(itertools.islice(merged, limit))

    def latest_run(self, task: str) -> str | None:
        response = self._client.query(
            TableName=self.table_name,
            ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :runs)",
            ExpressionAttributeValues={":pk": _s(f"TASK#{task}"), ":runs": _s("RUN#")},
            ScanIndexForward=False,
            Limit=1,
        )
        items = response.get("Items", [])
        return _str(items[0], "run_id") if items else None

    # --- one scan at a time per task ------------------------------------------------------

    def acquire_scan_lock(self, task: str, owner: str, ttl_seconds: float) -> bool:
        now = time.time()
        try:
            self._retrying(
                lambda: self._client.put_item(
                    TableName=self.table_name,
                    Item={
                        "pk": _s(f"TASK#{task}"),
                        "sk": _s("LOCK"),
                        "owner": _s(owner),
                        "expires": _n(now + ttl_seconds),
                        EXPIRY_ATTRIBUTE: self._expiry(),  # a lock its finder never released goes too
                    },
                    ConditionExpression="attribute_not_exists(pk) OR #owner = :owner OR #expires <= :now",
                    ExpressionAttributeNames={"#owner": "owner", "#expires": "expires"},
                    ExpressionAttributeValues={":owner": _s(owner), ":now": _n(now)},
                )
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release_scan_lock(self, task: str, owner: str) -> None:
        try:
            self._client.delete_item(
                TableName=self.table_name,
                Key={"pk": _s(f"TASK#{task}"), "sk": _s("LOCK")},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": _s(owner)},
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise

    # --- giant objects, copied part by part by many workers ----------------------------------

    def start_parts(self, run_id: str, key: str, upload_id: str, total_parts: int) -> str:
        response = self._update(
            _upload_key(run_id, key),
            "SET upload_id = if_not_exists(upload_id, :upload), total_parts = if_not_exists(total_parts, :total), "
            "parts_done = if_not_exists(parts_done, :zero), #expires = if_not_exists(#expires, :expires)",
            ExpressionAttributeNames={"#expires": EXPIRY_ATTRIBUTE},
            ExpressionAttributeValues={
                ":upload": _s(upload_id),
                ":total": _n(total_parts),
                ":zero": _n(0),
                ":expires": self._expiry(),
            },
            ReturnValues="ALL_NEW",
        )
        if response is None:  # it has no condition
            raise RuntimeError("UpdateItem without a condition failed its condition")
        return _str(response["Attributes"], "upload_id")

    def finish_part(self, run_id: str, key: str, part_number: int, etag: str) -> list[tuple[int, str]] | None:
        upload = _upload_key(run_id, key)
        # The part and the count of parts done move together: a part is counted exactly once.
        record = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": {
                        "pk": _s(_parts_pk(run_id, key)),
                        "sk": _s(f"{part_number:05d}"),
                        "part_number": _n(part_number),
                        "etag": _s(etag),
                        EXPIRY_ATTRIBUTE: self._expiry(),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": upload,
                    "UpdateExpression": "ADD parts_done :one",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": {":one": _n(1)},
                }
            },
        ]
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                self._transact(record)
                break
            except _CancelledError as cancelled:
                reasons = cancelled.reasons
                if len(reasons) == 2 and reasons[1] == _CONDITION_FAILED:
                    raise KeyError(f"no multipart upload registered for {key!r} in run {run_id}") from None
                if reasons[:1] == [_CONDITION_FAILED]:
                    break  # recorded before: a redelivery, counted already
                if attempt == CONFLICT_ATTEMPTS - 1 or not set(reasons) <= _RETRYABLE | {"None"}:
                    raise cancelled.error from None
            self._sleep(attempt)
        state = self._get(upload, ["total_parts", "parts_done", "completed_by"])
        if state is None:
            raise KeyError(f"no multipart upload registered for {key!r} in run {run_id}")
        if _int(state, "parts_done") < _int(state, "total_parts"):
            return None
        if "completed_by" in state and _int(state, "completed_by") != part_number:
            return None
        # Every part is in: the first to claim the upload completes it (and a redelivery of that same part
        # may claim it again, in case its worker died before completing).
        claimed = self._update(
            upload,
            "SET completed_by = :part",
            ConditionExpression="parts_done >= total_parts AND "
            "(attribute_not_exists(completed_by) OR completed_by = :part)",
            ExpressionAttributeValues={":part": _n(part_number)},
        )
        if claimed is None:
            return None
        parts = self._query(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": _s(_parts_pk(run_id, key))}
        )
        return sorted((_int(item, "part_number"), _str(item, "etag")) for item in parts)

    def abort_parts(self, run_id: str, key: str) -> None:
        self._update(
            _upload_key(run_id, key),
            "SET aborted = :yes",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":yes": {"BOOL": True}},
        )

    def parts_aborted(self, run_id: str, key: str) -> bool:
        item = self._get(_upload_key(run_id, key), ["aborted"])
        return bool(item and item.get("aborted", {}).get("BOOL"))

    # --- multipart uploads in progress, per task ------------------------------------------------

    def record_upload(self, task: str, upload: UploadRecord) -> None:
        self._retrying(
            lambda: self._client.put_item(
                TableName=self.table_name,
                Item={
                    "pk": _s(f"UPLOADS#{task}"),
                    "sk": _s(upload.upload_id),
                    "key": _s(upload.key),
                    "bucket": _s(upload.bucket),
                    "dest_key": _s(upload.dest_key),
                    "etag": _s(upload.etag),
                    "mark": {"BOOL": upload.mark},
                    "started": _n(upload.started),
                },
            )
        )

    def forget_upload(self, task: str, upload_id: str) -> None:
        self._retrying(
            lambda: self._client.delete_item(
                TableName=self.table_name, Key={"pk": _s(f"UPLOADS#{task}"), "sk": _s(upload_id)}
            )
        )

    def uploads(self, task: str) -> list[UploadRecord]:
        found = [
            UploadRecord(
                key=_str(item, "key"),
                upload_id=_str(item, "sk"),
                bucket=_str(item, "bucket"),
                dest_key=_str(item, "dest_key"),
                etag=_str(item, "etag"),
                mark=bool(item.get("mark", {}).get("BOOL")),
                started=_float(item, "started"),
            )
            for item in self._query(
                KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": _s(f"UPLOADS#{task}")}
            )
        ]
        return sorted(found, key=lambda upload: (upload.started, upload.upload_id))

    # --- S3 event notifications ---------------------------------------------------------------

    def newer_event(self, task: str, key: str, sequencer: str) -> bool:
        return (
            self._update(
                {"pk": _s(f"EVENT#{task}"), "sk": _s(key)},
                "SET sequencer = :sequencer, seq_order = :order, #expires = :expires",
                # Not older than any seen: the same sequencer again is a redelivery of the same event.
                ConditionExpression="attribute_not_exists(pk) OR seq_order <= :order",
                ExpressionAttributeNames={"#expires": EXPIRY_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":sequencer": _s(sequencer),
                    ":order": _s(sequencer_key(sequencer)),
                    ":expires": self._expiry(),
                },
            )
            is not None
        )

    def close(self) -> None:
        if self._close_client:
            self._client.close()


def create_table(client: Any, name: str) -> None:
    """Create the store's table (on-demand capacity) and wait until it is active. For tests and standalone
    use: in production the CloudFormation template creates it."""
    client.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": EXPIRY_ATTRIBUTE}
    )
