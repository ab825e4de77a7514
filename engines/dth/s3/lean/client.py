"""LeanS3Client: the boto3 S3 client's methods for the hot data-path operations, on the lean stack; every
other attribute is the wrapped boto3 client's, so the engine needs no change.

What boto3 still provides: the credentials (botocore's provider chain, refreshed when they expire) unless the
environment gives static keys, the endpoint rules (which host and region a bucket is served from) unless the
endpoint is path-style at a given URL, every operation the lean client does not serve, and the exception
classes. The service model (arguments and answer shapes) is botocore's data file, read by dth.s3.lean.model.
Errors are raised as boto3 raises them: ClientError subclasses with the same response dict, BotoCoreError
subclasses for connection failures.

The boto3 client is built on first need (a call the lean client does not serve, an error answer, a bucket whose
route needs the endpoint rules): a sync whose requests all succeed on a path-style endpoint never builds it,
and so never imports botocore's session, client or urllib3 (a third of a second of start-up).
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import botocore.exceptions

from dth.s3.lean import xml
from dth.s3.lean.body import StreamingBody
from dth.s3.lean.http import ConnectionPools, HttpSettings, StaleConnection, send
from dth.s3.lean.model import s3_service_model
from dth.s3.lean.operations import DELEGATED_ARGUMENTS, ERRORS_IN_200, OPERATIONS, Operation, encode_key
from dth.s3.lean.retries import RetryQuota, backoff, retryable_error
from dth.s3.lean.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, SigV4Signer

_DEFAULT_PORTS = {"http": 80, "https": 443}
UNSIGNED_BODY_ARGUMENT = "UnsignedBody"
_REDIRECT_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"})


@dataclass(frozen=True)
class Route:
    """Where a bucket's requests go and how they are signed."""

    scheme: str
    host: str
    port: int
    host_header: str
    base_path: str  # "/bucket" for path-style addressing, "" for virtual-hosted
    region: str
    endpoint_url: str


@dataclass(frozen=True)
class PathStyleEndpoint:
    """A given endpoint URL addressed path-style: every bucket at URL/bucket, signed for `region` (what S3's
    endpoint rules give for a custom endpoint with path-style addressing; tests/test_lean_client.py checks)."""

    url: str
    region: str


@dataclass(frozen=True)
class PreparedRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: Any


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    response: http.client.HTTPResponse | None = None  # an unread streaming body (GetObject)


class _PooledBody:
    """A response body that hands its connection back to the pool once read to the end."""

    def __init__(self, response: http.client.HTTPResponse, release: Callable[[], None]) -> None:
        self._response = response
        self._release: Callable[[], None] | None = release

    def read(self, amt: int | None = None) -> bytes:
        data = self._response.read(amt)
        if (amt is None or not data) and self._release is not None:
            self._finish(reuse=True)
        return data

    def readinto(self, buffer: Any) -> int:
        count = self._response.readinto(buffer)
        if (not count or self._response.isclosed()) and self._release is not None:
            self._finish(reuse=True)  # the last byte read: http.client has closed the response, not the socket
        return count

    def _finish(self, reuse: bool) -> None:
        release, self._release = self._release, None
        if release is not None and reuse and self._response.isclosed():
            release()

    def close(self) -> None:
        if self._release is not None:
            self._release = None
            self._response.close()


def _translate(error: BaseException, url: str) -> Exception:
    """A connection failure as botocore reports it."""
    kind: Any = botocore.exceptions.ConnectionClosedError
    if isinstance(error, TimeoutError):
        kind = botocore.exceptions.ReadTimeoutError
    elif isinstance(error, ConnectionRefusedError | socket.gaierror):
        kind = botocore.exceptions.EndpointConnectionError
    translated: Exception = kind(endpoint_url=url, error=error)
    return translated


class LeanS3Client:
    # Bodies may be memoryviews (of a reused buffer): sent as they are, never copied (dth.s3.buffers).
    sends_memoryview = True
    # PutObject and UploadPart take UnsignedBody=True (not a boto3 argument): the body is sent without
    # Content-MD5 and without a SHA-256 of it in the signature, as botocore sends bodies over https. Only for a
    # caller that verifies the bytes otherwise: the copier, for parts whose ETags must add up to the source's
    # multipart ETag before the upload is completed.
    accepts_unsigned_body = True

    def __init__(
        self,
        boto_client: Any,
        credentials: Any,
        *,
        max_attempts: int = 3,
        http_settings: HttpSettings | None = None,
        regional_client: Callable[[str], Any] | None = None,
        path_style: PathStyleEndpoint | None = None,
    ) -> None:
        """`boto_client`: the boto3 S3 client, or a function that builds it (called once, on first need).
        `path_style`: route buckets without the endpoint rules."""
        self._boto: Any = None if callable(boto_client) else boto_client
        self._boto_factory: Callable[[], Any] | None = boto_client if callable(boto_client) else None
        self._boto_lock = threading.Lock()
        self._credentials = credentials
        self._max_attempts = max(1, max_attempts)
        self._pools = ConnectionPools(http_settings or HttpSettings())
        self._signer = SigV4Signer("s3")
        self._quota = RetryQuota()
        self._regional_client = regional_client
        self._path_style = path_style
        model = s3_service_model()
        self._operations = {
            method: Operation.from_model(model.operation_model(op)) for method, op in OPERATIONS.items()
        }
        self._routes: dict[str, Route] = {}
        self._routes_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not yet set in __init__, or a private name: never the boto3 client's
            raise AttributeError(name)
        return getattr(self.boto3_client, name)

    @property
    def boto3_client(self) -> Any:
        if self._boto is None:
            with self._boto_lock:
                if self._boto is None:
                    assert self._boto_factory is not None
                    self._boto = self._boto_factory()
        return self._boto

    # --- the operations, with boto3's names and arguments --------------------------------

    def head_object(self, **arguments: Any) -> dict[str, Any]:
        return self._call("head_object", arguments)

    def get_object(self, **arguments: Any) -> dict[str, Any]:
        return self._call("get_object", arguments)

    def put_object(self, **arguments: Any) -> dict[str, Any]:
        return self._call("put_object", arguments)

    def copy_object(self, **arguments: Any) -> dict[str, Any]:
        return self._call("copy_object", arguments)

    def upload_part(self, **arguments: Any) -> dict[str, Any]:
        return self._call("upload_part", arguments)

    def upload_part_copy(self, **arguments: Any) -> dict[str, Any]:
        return self._call("upload_part_copy", arguments)

    def create_multipart_upload(self, **arguments: Any) -> dict[str, Any]:
        return self._call("create_multipart_upload", arguments)

    def complete_multipart_upload(self, **arguments: Any) -> dict[str, Any]:
        return self._call("complete_multipart_upload", arguments)

    def abort_multipart_upload(self, **arguments: Any) -> dict[str, Any]:
        return self._call("abort_multipart_upload", arguments)

    def list_objects_v2(self, **arguments: Any) -> dict[str, Any]:
        return self._call("list_objects_v2", arguments)

    def delete_object(self, **arguments: Any) -> dict[str, Any]:
        return self._call("delete_object", arguments)

    def get_paginator(self, operation_name: str) -> Any:
        if operation_name == "list_objects_v2":
            return _ListObjectsV2Paginator(self)
        return self.boto3_client.get_paginator(operation_name)

    # --- one call ----------------------------------------------------------------------------

    def _call(self, method: str, arguments: dict[str, Any]) -> dict[str, Any]:
        # Not a boto3 argument (see accepts_unsigned_body): taken out before anything else sees the arguments.
        unsigned = bool(arguments.pop(UNSIGNED_BODY_ARGUMENT, False))
        body_argument = arguments.get("Body")
        if DELEGATED_ARGUMENTS.intersection(arguments) or not (
            body_argument is None or isinstance(body_argument, bytes | bytearray | memoryview)
        ):
            result: dict[str, Any] = getattr(self.boto3_client, method)(**arguments)
            return result
        operation = self._operations[method]
        bucket = arguments.get("Bucket")
        if not bucket:
            raise botocore.exceptions.ParamValidationError(report="Missing required parameter: Bucket")
        key = arguments.get("Key")
        query, headers, body = operation.serialize(arguments)
        auto_encoding = method == "list_objects_v2"
        if auto_encoding:
            query.append(("encoding-type", "url"))
        answer, attempts = self._send(operation, bucket, key, query, headers, body, unsigned)
        return self._parse(operation, answer, attempts, auto_encoding)

    def route(self, bucket: str, region: str | None = None) -> Route:
        cached = self._routes.get(bucket)
        if cached is not None and (region is None or cached.region == region):
            return cached
        if region is None and self._path_style is not None:
            url, signing_region = f"{self._path_style.url.rstrip('/')}/{bucket}", self._path_style.region
        else:
            client = (
                self.boto3_client if region is None or self._regional_client is None else self._regional_client(region)
            )
            url, signing_region = _resolve(client, bucket)
        parts = urlsplit(url)
        scheme = parts.scheme
        port = parts.port or _DEFAULT_PORTS[scheme]
        host = parts.hostname or ""
        host_header = host if port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
        route = Route(scheme, host, port, host_header, parts.path.rstrip("/"), region or signing_region, url)
        with self._routes_lock:
            self._routes[bucket] = route
        return route

    def _send(
        self,
        operation: Operation,
        bucket: str,
        key: str | None,
        query: list[tuple[str, str | None]],
        headers: dict[str, str],
        body: Any,
        unsigned: bool = False,
    ) -> tuple[_Answer, int]:
        route = self.route(bucket)
        redirected = False
        attempt = 1
        taken = 0
        while True:
            answer: _Answer | None = None
            error: BaseException | None = None
            code: str | None = None
            try:
                answer = self._attempt(operation, route, key, query, dict(headers), body, unsigned)
            except (OSError, http.client.HTTPException) as failure:
                error = failure
            if answer is not None:
                if answer.status < 300 and not _error_in_200(operation, answer):
                    self._quota.release(taken)
                    return answer, attempt - 1
                code = _error_code(answer)
                region = _redirect_region(answer, code)
                if region and not redirected and region != route.region:
                    redirected = True
                    route = self.route(bucket, region)
                    continue
                if answer.status < 300:
                    answer.status = 500  # botocore reports an error document in a 200 as a 500
            retry = answer is None or retryable_error(answer.status, code)
            if retry and attempt < self._max_attempts:
                cost = self._quota.acquire(timeout=isinstance(error, TimeoutError))
                if cost:
                    taken = cost
                    time.sleep(backoff(attempt))
                    attempt += 1
                    continue
            if answer is None:
                assert error is not None
                raise _translate(error, route.endpoint_url) from error
            raise self._client_error(operation, answer, attempt - 1)

    def _attempt(
        self,
        operation: Operation,
        route: Route,
        key: str | None,
        query: list[tuple[str, str | None]],
        headers: dict[str, str],
        body: Any,
        unsigned: bool = False,
    ) -> _Answer:
        target = self._sign(operation, route, key, query, headers, body, unsigned=unsigned)
        connection, reused, prefix = self._pools.acquire(route.scheme, route.host, route.port)
        try:
            response = send(connection, operation.method, (prefix or "") + target, headers, body, reused)
        except StaleConnection:
            # Once more on a new connection, not counted as a retry: urllib3 (under botocore) checks a pooled
            # connection before reusing it; this finds out by trying.
            self._pools.discard_idle(route.scheme, route.host, route.port)
            connection, _, prefix = self._pools.acquire(route.scheme, route.host, route.port)
            response = send(connection, operation.method, (prefix or "") + target, headers, body, False)
        answer_headers = {name.lower(): value for name, value in response.getheaders()}
        if operation.name == "GetObject" and response.status < 300:

            def release() -> None:
                self._pools.release(route.scheme, route.host, route.port, connection)

            return _Answer(response.status, answer_headers, b"", _PooledBody(response, release))  # type: ignore[arg-type]
        try:
            data = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._pools.release(route.scheme, route.host, route.port, connection)
        return _Answer(response.status, answer_headers, data)

    def _sign(
        self,
        operation: Operation,
        route: Route,
        key: str | None,
        query: list[tuple[str, str | None]],
        headers: dict[str, str],
        body: Any,
        amz_date: str | None = None,
        *,
        unsigned: bool = False,
    ) -> str:
        """Sign the request in place (headers); returns the request target, path and query."""
        path = route.base_path + "/" + encode_key(key) if key is not None else (route.base_path or "/")
        credentials = self._credentials.get_frozen_credentials() if self._credentials is not None else None
        if credentials is None:
            raise botocore.exceptions.NoCredentialsError()
        self._signer.sign(
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            token=credentials.token,
            region=route.region,
            method=operation.method,
            host=route.host_header,
            path=path,
            query=query,
            headers=headers,
            payload_hash=UNSIGNED_PAYLOAD if unsigned and body else _payload_hash(headers, body),
            amz_date=amz_date,
        )
        headers["Host"] = route.host_header
        if body is not None or operation.method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body) if body is not None else 0)
        return path + ("?" + "&".join(k if v is None else f"{k}={v}" for k, v in query) if query else "")

    def prepare(self, method: str, amz_date: str | None = None, **arguments: Any) -> PreparedRequest:
        """The signed request a call would send (first attempt), without sending it."""
        operation = self._operations[method]
        query, headers, body = operation.serialize(arguments)
        if method == "list_objects_v2":
            query.append(("encoding-type", "url"))
        route = self.route(arguments["Bucket"])
        target = self._sign(operation, route, arguments.get("Key"), query, headers, body, amz_date)
        return PreparedRequest(operation.method, f"{route.scheme}://{route.host_header}{target}", headers, body)

    # --- answers -----------------------------------------------------------------------------

    def _parse(self, operation: Operation, answer: _Answer, attempts: int, auto_encoding: bool) -> dict[str, Any]:
        result = operation.parse_headers(answer.headers)
        if "Expires" in result:  # botocore keeps the text, and drops an Expires that is no timestamp
            result["ExpiresString"] = result["Expires"]
            import botocore.utils  # rare: only answers that carry an Expires header

            try:
                botocore.utils.parse_timestamp(result["Expires"])
            except (ValueError, RuntimeError):
                del result["Expires"]
        output = operation.model.output_shape
        if operation.name == "GetObject":
            length = answer.headers.get("content-length")
            result["Body"] = StreamingBody(answer.response, int(length) if length else None)
        elif operation.name == "ListObjectsV2":
            result.update(xml.parse_list_objects_v2(output, answer.body, auto_encoding))
        elif operation.output_payload and answer.body:
            shape = output.members[operation.output_payload]
            result[operation.output_payload] = xml.parse_structure(shape, xml.document_body(answer.body))
        elif output is not None and answer.body:
            result.update(xml.parse_structure(output, xml.document_body(answer.body)))
        result["ResponseMetadata"] = _metadata(answer, attempts)
        return result

    def _client_error(self, operation: Operation, answer: _Answer, attempts: int) -> botocore.exceptions.ClientError:
        error: dict[str, Any] = {}
        metadata = _metadata(answer, attempts)
        if answer.body and xml.root_tag(answer.body) == "Error":
            for name, text in xml.children(xml.document_body(answer.body)):
                if name in ("RequestId", "HostId"):
                    metadata[name] = xml.unescape(text)
                else:
                    error[name] = xml.unescape(text) if text else None  # ElementTree's text of <Message/>
        if "Code" not in error:
            error = {"Code": str(answer.status), "Message": http.client.responses.get(answer.status, "")}
        response = {"Error": error, "ResponseMetadata": metadata}
        kind = self.boto3_client.exceptions.from_code(error["Code"])
        exception: botocore.exceptions.ClientError = kind(response, operation.name)
        return exception


class _ListObjectsV2Paginator:
    """Pages of list_objects_v2, following continuation tokens (PaginationConfig goes to boto3's paginator)."""

    def __init__(self, client: LeanS3Client) -> None:
        self._client = client

    def paginate(self, **arguments: Any) -> Iterator[dict[str, Any]]:
        if "PaginationConfig" in arguments or DELEGATED_ARGUMENTS.intersection(arguments):
            pages: Iterator[dict[str, Any]] = iter(
                self._client.boto3_client.get_paginator("list_objects_v2").paginate(**arguments)
            )
            return pages
        return self._pages(arguments)

    def _pages(self, arguments: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            page = self._client.list_objects_v2(**arguments)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            arguments = {**arguments, "ContinuationToken": token}


def _resolve(client: Any, bucket: str) -> tuple[str, str]:
    """The URL and signing region botocore's endpoint rules give for a bucket."""
    resolver = getattr(client, "_ruleset_resolver", None)  # botocore internals; the fallback is path-style
    region = client.meta.region_name or "us-east-1"
    if resolver is None:
        return f"{client.meta.endpoint_url.rstrip('/')}/{bucket}", region
    endpoint = resolver.construct_endpoint(
        operation_model=client.meta.service_model.operation_model("HeadObject"),
        call_args={"Bucket": bucket},
        request_context={},
    )
    schemes = endpoint.properties.get("authSchemes") or [{}]
    return str(endpoint.url), str(schemes[0].get("signingRegion") or region)


def _payload_hash(headers: dict[str, str], body: Any) -> str:
    """Content-MD5 already protects a body: then it is not hashed again for the signature (botocore does so
    over http, a SHA-256 pass over every byte for nothing); other bodies are signed, as botocore signs them."""
    if not body:
        return EMPTY_SHA256
    if "Content-MD5" in headers:
        return UNSIGNED_PAYLOAD
    return hashlib.sha256(body).hexdigest()


def _error_in_200(operation: Operation, answer: _Answer) -> bool:
    """botocore's test: a body that is no XML document (empty or cut short), or an error document."""
    return operation.name in ERRORS_IN_200 and xml.root_tag(answer.body) in ("Error", None)


def _error_code(answer: _Answer) -> str | None:
    if answer.body and xml.root_tag(answer.body) == "Error":
        for name, text in xml.children(xml.document_body(answer.body)):
            if name == "Code":
                return text
    return None


def _redirect_region(answer: _Answer, code: str | None) -> str | None:
    if answer.status not in (301, 307, 400) or (answer.body and code not in _REDIRECT_CODES):
        return None
    region = answer.headers.get("x-amz-bucket-region")
    if region:
        return region
    for name, text in xml.children(xml.document_body(answer.body)) if answer.body else ():
        if name == "Region":
            return text
    return None


def _metadata(answer: _Answer, attempts: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if "x-amz-request-id" in answer.headers:
        metadata["RequestId"] = answer.headers["x-amz-request-id"]
    if "x-amz-id-2" in answer.headers:
        metadata["HostId"] = answer.headers["x-amz-id-2"]
    metadata["HTTPStatusCode"] = answer.status
    metadata["HTTPHeaders"] = answer.headers
    metadata["RetryAttempts"] = attempts
    return metadata
