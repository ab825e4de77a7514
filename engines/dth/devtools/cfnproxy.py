"""A CloudFormation that behaves like CloudFormation, for tests: a stateful HTTP proxy in front of moto server.

moto creates, updates and deletes a stack synchronously and never fails one the way AWS does. This proxy
speaks CloudFormation's query protocol (form-encoded POSTs with `Action=...`, XML answers), forwards to moto,
and keeps its own state machine per stack:

- every CreateStack, UpdateStack and DeleteStack holds the stack in `*_IN_PROGRESS` for `hold` seconds (or
  until `release`), and DescribeStacks/ListStacks answers carry the proxy's status, not moto's;
- while a stack is in progress, UpdateStack and DeleteStack are refused with AWS's ValidationError texts;
- scripted failures drive a stack to `ROLLBACK_COMPLETE`, `UPDATE_ROLLBACK_COMPLETE`, `UPDATE_ROLLBACK_FAILED`
  or `DELETE_FAILED`, with stack events that name the failing resource and its reason (DescribeStackEvents
  answers come from the proxy for the stacks it tracks);
- ContinueUpdateRollback (which moto does not implement) is answered here.

What AWS does, and what the proxy models (texts as AWS returns them):
- UpdateStack on a stack that is not CREATE_COMPLETE, UPDATE_COMPLETE or UPDATE_ROLLBACK_COMPLETE:
  "Stack:ARN is in STATUS state and can not be updated."; an update that changes nothing: "No updates are to be
  performed." (moto applies it anyway; the proxy compares with the stack's last request).
- DeleteStack while an update or a rollback is in progress: "Stack [ARN] cannot be deleted while in status
  STATUS". DeleteStack during CREATE_IN_PROGRESS is accepted: AWS cancels the create and deletes the stack.
  During DELETE_IN_PROGRESS it is accepted and changes nothing. In DELETE_FAILED it tries the delete again.
- ContinueUpdateRollback outside UPDATE_ROLLBACK_FAILED is refused (the text here is modelled on UpdateStack's;
  AWS's exact wording was not found).

A failed update is not forwarded to moto, so moto keeps the previous template and parameters, as a rolled-back
stack does. Requests for other services pass straight through (the Host header unchanged: signatures stay
valid).
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

NS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
ET.register_namespace("", NS)
_Q = f"{{{NS}}}"
_CLOUDFORMATION_SCOPE = "/cloudformation/aws4_request"
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "expect", "te"}

UPDATABLE = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"})
# DeleteStack is accepted in these in-progress states (and in every settled one).
DELETABLE_IN_PROGRESS = frozenset({"CREATE_IN_PROGRESS", "DELETE_IN_PROGRESS"})
# A stack in these states has no outputs on AWS (its create did not finish).
NO_OUTPUTS = frozenset({"CREATE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED"})
# Request fields that do not change what an update would do.
_NOT_CONTENT = frozenset({"Action", "Version", "StackName", "ClientRequestToken"})


@dataclass(frozen=True)
class StackEvent:
    logical_id: str
    resource_type: str
    status: str
    reason: str
    physical_id: str = ""
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class Failure:
    """A scripted failure: the resource that fails, CloudFormation's reason, and (for an update) whether the
    rollback fails too, and why."""

    resource: str
    reason: str
    resource_type: str = "AWS::ECS::Service"
    rollback_reason: str | None = None
    times: int = 1  # how many of the stack's next operations of this kind fail


@dataclass
class Step:
    """What the stack becomes when its current in-progress phase ends."""

    status: str
    reason: str = ""
    events: list[StackEvent] = field(default_factory=list)
    delete_upstream: bool = False  # replay the saved DeleteStack to moto at this step


@dataclass
class TrackedStack:
    name: str
    stack_id: str
    status: str
    reason: str = ""
    events: list[StackEvent] = field(default_factory=list)  # oldest first
    plan: list[Step] = field(default_factory=list)
    deadline: float = 0.0  # when the current phase ends and the plan's next step applies
    content: dict[str, list[str]] = field(default_factory=dict)  # the last accepted create/update fields
    delete_request: tuple[dict[str, str], bytes] | None = None

    def record(self, status: str, reason: str = "") -> None:
        self.status, self.reason = status, reason
        self.events.append(StackEvent(self.name, "AWS::CloudFormation::Stack", status, reason, self.stack_id))


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


class _QuietServer(ThreadingHTTPServer):
    """A client that goes away mid-request (an operator's pod killed by a test) is no error of the proxy's:
    not printed as a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class CfnProxy:
    """Start with `with CfnProxy(moto.endpoint_url, hold=1.0) as proxy:` and point clients at `proxy.url`."""

    def __init__(self, upstream: str, *, hold: float = 1.0, host: str = "127.0.0.1") -> None:
        target = urlsplit(upstream)
        self.upstream_host = target.hostname or "127.0.0.1"
        self.upstream_port = target.port or 80
        self.hold = hold
        self.calls: Counter[str] = Counter()  # CloudFormation actions received, by name
        self._stacks: dict[str, TrackedStack] = {}
        self._ids: dict[str, str] = {}  # stack ARN -> name
        self._failures: dict[tuple[str, str], Failure] = {}  # (operation, stack) -> the next one's failure
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._server = _QuietServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="cfn-proxy", daemon=True),
            threading.Thread(target=self._tick, name="cfn-proxy-clock", daemon=True),
        ]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- the test's controls --------------------------------------------------------------------------

    def fail_next_create(
        self, stack: str, resource: str, reason: str, resource_type: str = "AWS::ECS::Service", *, times: int = 1
    ) -> None:
        """The stack's next CreateStack (`times` of them) fails on `resource`: CREATE_IN_PROGRESS,
        ROLLBACK_IN_PROGRESS, then ROLLBACK_COMPLETE."""
        self._script("create", stack, Failure(resource, reason, resource_type, times=times))

    def fail_next_update(
        self,
        stack: str,
        resource: str,
        reason: str,
        *,
        rollback_reason: str | None = None,
        resource_type: str = "AWS::ECS::Service",
        times: int = 1,
    ) -> None:
        """The stack's next UpdateStack fails on `resource` and rolls back to UPDATE_ROLLBACK_COMPLETE, or, with a
        `rollback_reason`, the rollback fails too: UPDATE_ROLLBACK_FAILED."""
        self._script("update", stack, Failure(resource, reason, resource_type, rollback_reason, times))

    def fail_next_delete(
        self, stack: str, resource: str, reason: str, resource_type: str = "AWS::ECS::Service", *, times: int = 1
    ) -> None:
        """The stack's next DeleteStack (`times` of them) fails on `resource`: DELETE_FAILED, and the stack
        stays."""
        self._script("delete", stack, Failure(resource, reason, resource_type, times=times))

    def fail_next_continue_rollback(
        self, stack: str, resource: str, reason: str, resource_type: str = "AWS::ECS::Service", *, times: int = 1
    ) -> None:
        """The stack's next ContinueUpdateRollback (`times` of them) fails again: back to
        UPDATE_ROLLBACK_FAILED."""
        self._script("continue", stack, Failure(resource, reason, resource_type, times=times))

    def status(self, stack: str) -> str | None:
        """The stack's status as the proxy reports it; None for a stack it does not track (or deleted)."""
        with self._lock:
            tracked = self._stacks.get(stack)
            return tracked.status if tracked else None

    def events(self, stack: str) -> list[StackEvent]:
        with self._lock:
            tracked = self._stacks.get(stack)
            return list(tracked.events) if tracked else []

    def release(self, stack: str) -> str | None:
        """End the stack's current in-progress phase now; returns its new status."""
        with self._lock:
            tracked = self._stacks.get(stack)
            if tracked is not None and tracked.plan:
                tracked.deadline = 0.0
                self._advance(tracked)
            return self.status(stack)

    def settle(self, stack: str) -> str | None:
        """Release the stack until it is no longer in progress; returns its status."""
        with self._lock:
            while (tracked := self._stacks.get(stack)) is not None and tracked.plan:
                self.release(stack)
            return self.status(stack)

    def _script(self, operation: str, stack: str, failure: Failure) -> None:
        with self._lock:
            self._failures[(operation, stack)] = failure

    def _scripted(self, operation: str, stack: str) -> Failure | None:
        """The failure scripted for this operation on the stack, if any (counting it down)."""
        failure = self._failures.pop((operation, stack), None)
        if failure is not None and failure.times > 1:
            self._failures[(operation, stack)] = replace(failure, times=failure.times - 1)
        return failure

    # --- life cycle -----------------------------------------------------------------------------------

    def start(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _tick(self) -> None:
        """Phases end on time even when nobody asks (a deleted stack leaves moto when its delete completes)."""
        while not self._stop.wait(0.05):
            with self._lock:
                for tracked in list(self._stacks.values()):
                    self._advance(tracked)

    # --- the state machine ----------------------------------------------------------------------------

    def _advance(self, tracked: TrackedStack) -> None:
        """Apply the plan's next step when the current phase's time is up (one step per phase)."""
        if not tracked.plan or time.monotonic() < tracked.deadline:
            return
        step = tracked.plan.pop(0)
        tracked.events.extend(step.events)
        tracked.record(step.status, step.reason)
        tracked.deadline = time.monotonic() + self.hold
        if step.delete_upstream and tracked.delete_request is not None:
            headers, body = tracked.delete_request
            self._forward("POST", "/", headers, body)
            self._stacks.pop(tracked.name, None)
            self._ids.pop(tracked.stack_id, None)

    def _begin(self, tracked: TrackedStack, status: str, plan: list[Step]) -> None:
        tracked.record(status, "User Initiated")
        tracked.plan = plan
        tracked.deadline = time.monotonic() + self.hold

    def _create(self, tracked: TrackedStack) -> None:
        failure = self._scripted("create", tracked.name)
        if failure is None:
            self._begin(tracked, "CREATE_IN_PROGRESS", [Step("CREATE_COMPLETE")])
            return
        failed = f"The following resource(s) failed to create: [{failure.resource}]. Rollback requested by user."
        self._begin(
            tracked,
            "CREATE_IN_PROGRESS",
            [
                Step("ROLLBACK_IN_PROGRESS", failed, [_failed(failure, "CREATE_FAILED")]),
                Step("ROLLBACK_COMPLETE"),
            ],
        )

    def _update(self, tracked: TrackedStack, failure: Failure | None) -> None:
        if failure is None:
            self._begin(tracked, "UPDATE_IN_PROGRESS", [Step("UPDATE_COMPLETE")])
            return
        failed = f"The following resource(s) failed to update: [{failure.resource}]. "
        rolling_back = Step("UPDATE_ROLLBACK_IN_PROGRESS", failed, [_failed(failure, "UPDATE_FAILED")])
        if failure.rollback_reason is None:
            end = Step("UPDATE_ROLLBACK_COMPLETE")
        else:
            end = Step(
                "UPDATE_ROLLBACK_FAILED",
                f"The following resource(s) failed to update: [{failure.resource}].",
                [_failed(failure, "UPDATE_FAILED", failure.rollback_reason)],
            )
        self._begin(tracked, "UPDATE_IN_PROGRESS", [rolling_back, end])

    def _delete(self, tracked: TrackedStack, request: tuple[dict[str, str], bytes]) -> None:
        tracked.delete_request = request
        failure = self._scripted("delete", tracked.name)
        if failure is None:
            self._begin(tracked, "DELETE_IN_PROGRESS", [Step("DELETE_COMPLETE", delete_upstream=True)])
            return
        failed = f"The following resource(s) failed to delete: [{failure.resource}]. "
        self._begin(
            tracked,
            "DELETE_IN_PROGRESS",
            [Step("DELETE_FAILED", failed, [_failed(failure, "DELETE_FAILED")])],
        )

    def _continue_rollback(self, tracked: TrackedStack) -> None:
        failure = self._scripted("continue", tracked.name)
        if failure is None:
            end = Step("UPDATE_ROLLBACK_COMPLETE")
        else:
            end = Step(
                "UPDATE_ROLLBACK_FAILED",
                f"The following resource(s) failed to update: [{failure.resource}].",
                [_failed(failure, "UPDATE_FAILED")],
            )
        self._begin(tracked, "UPDATE_ROLLBACK_IN_PROGRESS", [end])

    # --- requests -------------------------------------------------------------------------------------

    def _find(self, name_or_id: str) -> TrackedStack | None:
        return self._stacks.get(self._ids.get(name_or_id, name_or_id))

    def _cloudformation(self, headers: dict[str, str], body: bytes) -> _Answer:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        action = fields.get("Action", [""])[0]
        stack_name = fields.get("StackName", [""])[0]
        self.calls[action] += 1
        with self._lock:
            for each in list(self._stacks.values()):
                self._advance(each)
            tracked = self._find(stack_name) if stack_name else None
            content = {key: value for key, value in fields.items() if key not in _NOT_CONTENT}
            if action == "CreateStack":
                answer = self._forward("POST", "/", headers, body)
                if answer.status == 200:
                    stack_id = _text(answer.body, "StackId")
                    tracked = TrackedStack(stack_name, stack_id, "CREATE_IN_PROGRESS", content=content)
                    self._stacks[stack_name], self._ids[stack_id] = tracked, stack_name
                    self._create(tracked)
                return answer
            if action == "UpdateStack" and tracked is not None:
                if tracked.status not in UPDATABLE:
                    return _error(f"Stack:{tracked.stack_id} is in {tracked.status} state and can not be updated.")
                if content == tracked.content:
                    return _error("No updates are to be performed.")
                failure = self._scripted("update", tracked.name)
                if failure is None:
                    answer = self._forward("POST", "/", headers, body)
                    if answer.status != 200:
                        return answer
                    tracked.content = content
                else:  # not forwarded: moto keeps the previous template and parameters, as after a rollback
                    answer = _result("UpdateStack", f"<StackId>{escape(tracked.stack_id)}</StackId>")
                self._update(tracked, failure)
                return answer
            if action == "DeleteStack" and tracked is not None:
                if tracked.status.endswith("_IN_PROGRESS") and tracked.status not in DELETABLE_IN_PROGRESS:
                    return _error(f"Stack [{tracked.stack_id}] cannot be deleted while in status {tracked.status}")
                if tracked.status != "DELETE_IN_PROGRESS":
                    self._delete(tracked, (headers, body))
                return _result("DeleteStack", "")
            if action == "ContinueUpdateRollback":
                if tracked is None:
                    return _error(f"Stack [{stack_name}] does not exist")
                if tracked.status != "UPDATE_ROLLBACK_FAILED":
                    return _error(
                        f"Stack:{tracked.stack_id} is in {tracked.status} state and can not continue update rollback."
                    )
                self._continue_rollback(tracked)
                return _result("ContinueUpdateRollback", "")
            if action == "DescribeStackEvents" and tracked is not None:
                return _result("DescribeStackEvents", f"<StackEvents>{_events_xml(tracked)}</StackEvents>")
            answer = self._forward("POST", "/", headers, body)
            if action in {"DescribeStacks", "ListStacks"} and answer.status == 200:
                answer.body = self._rewrite(answer.body)
            return answer

    def _rewrite(self, document: bytes) -> bytes:
        """Each stack in the answer gets the proxy's status and reason (and no outputs where AWS has none)."""
        root = ET.fromstring(document)
        for member in root.iter(f"{_Q}member"):
            name = member.find(f"{_Q}StackName")
            status = member.find(f"{_Q}StackStatus")
            if name is None or status is None:
                continue
            tracked = self._stacks.get(name.text or "")
            if tracked is None:
                continue
            status.text = tracked.status
            reason = member.find(f"{_Q}StackStatusReason")
            if reason is None and tracked.reason:
                reason = ET.Element(f"{_Q}StackStatusReason")
                member.insert(list(member).index(status) + 1, reason)
            if reason is not None:
                if tracked.reason:
                    reason.text = tracked.reason
                else:
                    member.remove(reason)
            outputs = member.find(f"{_Q}Outputs")
            if outputs is not None and tracked.status in NO_OUTPUTS:
                member.remove(outputs)
        return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False))

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Answer:
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            upstream.request(method, path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}]
        return _Answer(response.status, payload, kept)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the tests assert on outcomes, not on access logs."""

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if self.command == "POST" and _CLOUDFORMATION_SCOPE in self.headers.get("Authorization", ""):
                    answer = proxy._cloudformation(headers, body)
                else:
                    answer = proxy._forward(self.command, self.path, headers, body)
                self.send_response(answer.status)
                for name, value in answer.headers or [("Content-Type", "text/xml")]:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay  # noqa: N815 - http.server's names

        return Handler


def _failed(failure: Failure, status: str, reason: str | None = None) -> StackEvent:
    return StackEvent(failure.resource, failure.resource_type, status, reason or failure.reason)


def _text(document: bytes, tag: str) -> str:
    found = ET.fromstring(document).find(f".//{_Q}{tag}")
    return (found.text or "") if found is not None else ""


def _result(action: str, inner: str) -> _Answer:
    body = (
        f'<{action}Response xmlns="{NS}"><{action}Result>{inner}</{action}Result>'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
    )
    return _Answer(200, body.encode(), [("Content-Type", "text/xml")])


def _error(message: str, code: str = "ValidationError") -> _Answer:
    body = (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return _Answer(400, body.encode(), [("Content-Type", "text/xml")])


def _events_xml(tracked: TrackedStack) -> str:
    members = []
    for event in reversed(tracked.events):  # newest first, as AWS answers
        reason = f"<ResourceStatusReason>{escape(event.reason)}</ResourceStatusReason>" if event.reason else ""
        members.append(
            "<member>"
            f"<StackId>{escape(tracked.stack_id)}</StackId><EventId>{event.event_id}</EventId>"
            f"<StackName>{escape(tracked.name)}</StackName><LogicalResourceId>{escape(event.logical_id)}</LogicalResourceId>"
            f"<PhysicalResourceId>{escape(event.physical_id)}</PhysicalResourceId>"
            f"<ResourceType>{escape(event.resource_type)}</ResourceType>"
            f"<Timestamp>{event.timestamp.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}</Timestamp>"
            f"<ResourceStatus>{event.status}</ResourceStatus>{reason}"
            "</member>"
        )
    return "".join(members)
