"""Copying one object, server side where the destination can read the source, streamed otherwise,
and verified either way.

Every read of the source is conditional on the ETag the finder listed, so an object that changes
mid-copy is detected, never mixed. A multipart source is copied with its own part layout, so the
destination's ETag equals the source's and proves the copy; where that cannot be, the destination
records the source ETag in its metadata for later compares.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import botocore.exceptions

from dth.s3.buffers import SMALL_READ, BufferPool, MemoryBudget, pool_size
from dth.s3.compare import SOURCE_ETAG_METADATA, ObjectDetails
from dth.s3.lean.client import UNSIGNED_BODY_ARGUMENT
from dth.s3.listing import normalize_etag
from dth.s3.parts import PartRange, guess_part_size, multipart_etag, parts_count, plan_parts, ranges_of
from dth.s3.sides import S3Side, error_code, shares_service
from dth.s3.uploads import StoredPart, UploadLedger
from dth.spec.model import S3Destination, S3Options, SseMode

# Headers that travel with an object's content, as GET/HEAD return them and PUT takes them.
CONTENT_HEADERS = ("ContentType", "CacheControl", "ContentEncoding", "ContentDisposition", "ContentLanguage")
MAX_KEY_BYTES = 1024
MAX_COPY_OBJECT_BYTES = 5 * 1024**3  # S3's limit for a single CopyObject
CHECKSUM_FIELDS = {
    "ChecksumCRC32": "CRC32",
    "ChecksumCRC32C": "CRC32C",
    "ChecksumCRC64NVME": "CRC64NVME",
    "ChecksumSHA1": "SHA1",
    "ChecksumSHA256": "SHA256",
}


class CopyError(Exception):
    """A copy that did not produce a verified object; `retryable` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SourceChangedError(CopyError):
    """The source no longer has the ETag the finder saw: it changed (or vanished) after listing."""


class SourceVanishedError(CopyError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class _GuessedLayoutMismatchError(CopyError):
    """Unhashed parts of a guessed layout whose ETags do not add up to the source's: the guess was wrong, or
    bytes changed on the way. The copy is done again with every part hashed."""


class CopyCancelled(Exception):  # noqa: N818 - not an error: the user asked to stop
    """The run was stopped (Ctrl-C): the copy was given up, and its multipart upload aborted."""


@dataclass(frozen=True)
class CopyResult:
    dest_etag: str
    size: int
    method: str


def _read_into(body: Any, view: memoryview) -> memoryview:
    """Fill `view` from a response body until the body ends (or the view is full): the part of it filled."""
    filled = 0
    while filled < len(view):
        count = body.readinto(view[filled:])
        if not count:
            break
        filled += count
    return view[:filled]


def _md5(data: bytes | memoryview) -> hashlib._Hash:
    return hashlib.md5(data, usedforsecurity=False)


def _quoted(etag: str) -> str:
    """HTTP conditions compare entity tags in their quoted form; some servers insist on it."""
    return f'"{etag}"'


def _is_md5(etag: str) -> bool:
    return len(etag) == 32 and "-" not in etag


def _etag_md5(etag: str) -> bytes | None:
    """The MD5 a single-part ETag spells, or None where it is no MD5."""
    if not _is_md5(etag):
        return None
    try:
        return bytes.fromhex(etag)
    except ValueError:
        return None


def reusable_parts(layout: list[PartRange], stored: dict[int, StoredPart]) -> dict[int, str]:
    """The ETags of the stored parts that are parts of this layout (same number, same size)."""
    return {
        part.number: stored[part.number].etag
        for part in layout
        if part.number in stored and stored[part.number].size == part.size and stored[part.number].etag
    }


def _not_found(error: botocore.exceptions.ClientError) -> bool:
    return error_code(error) in {"NoSuchKey", "404", "NotFound"}


def _precondition_failed(error: botocore.exceptions.ClientError) -> bool:
    return error_code(error) in {"PreconditionFailed", "412"}


class ObjectCopier:
    def __init__(
        self,
        source: S3Side,
        destination: S3Side,
        options: S3Options,
        part_pool: Executor,
        memory: MemoryBudget | None = None,
        uploads: UploadLedger | None = None,
        buffers: BufferPool | None = None,
    ) -> None:
        self.source = source
        self.destination = destination
        self.options = options
        assert isinstance(destination.location, S3Destination)
        self.dest_spec: S3Destination = destination.location
        self.server_side = shares_service(source, destination)
        self._parts = part_pool
        # Streamed parts are read into these reusable buffers (the bound on buffers in flight), and the budget
        # bounds every streamed byte but small reads: the pool's bytes, or one object up to the multipart
        # threshold. Small reads add at most one SMALL_READ per worker.
        self.buffers = buffers or BufferPool(pool_size(options.concurrency, options.chunk_size), options.chunk_size)
        self._memory = memory or MemoryBudget(max(self.buffers.count * self.buffers.size, options.multipart_threshold))
        # The lean client sends a view of a buffer as it is; botocore wants bytes.
        self._sends_views = bool(getattr(type(destination.client), "sends_memoryview", False))
        self._unsigned_bodies = bool(getattr(type(destination.client), "accepts_unsigned_body", False))
        # KMS-encrypted objects have ETags that are not MD5s: nothing to compare them with.
        self._etags_are_md5 = self.dest_spec.sse is not SseMode.AWS_KMS
        # Whether this service's CopyObject keeps a multipart source's ETag (Ceph clones the object; AWS writes
        # a new single-part one): unknown until the first multipart source is copied.
        self._copy_keeps_multipart_etag: bool | None = None
        self._clone_answer = threading.Condition()
        self._clone_asking = False
        # Where the uploads this copier starts are recorded, to be resumed or aborted after a crash.
        self.uploads = uploads
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Start no more copies or parts: in-flight requests end, multipart uploads are aborted."""
        self._cancelled.set()

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise CopyCancelled("the run was stopped")

    # --- reading the source ---------------------------------------------------------------

    def _guard(self, key: str, etag: str, call: Callable[[], Any]) -> Any:
        """Run a source read, turning 412/404 into SourceChangedError/SourceVanishedError."""
        try:
            return call()
        except botocore.exceptions.ClientError as error:
            if _precondition_failed(error):
                raise SourceChangedError(f"source object changed since it was listed (ETag was {etag})") from None
            if _not_found(error):
                raise SourceVanishedError("source object was deleted after it was listed") from None
            raise

    def head_source(self, key: str, etag: str | None = None, part_number: int | None = None) -> dict[str, Any]:
        arguments: dict[str, Any] = {"Bucket": self.source.bucket, "Key": self.source.key_for(key)}
        if etag:
            arguments["IfMatch"] = _quoted(etag)
        if part_number:
            arguments["PartNumber"] = part_number
        return dict(
            self._guard(
                key,
                etag or "",
                lambda: self.source.client.head_object(**arguments, **self.source.request_payer),
            )
        )

    def _source_part_size(self, key: str, etag: str) -> int | None:
        """The part size the source was uploaded with, from a HEAD of its first part."""
        try:
            # No If-Match here: some servers (moto) compare it with the part's ETag, not the object's.
            head = self.head_source(key, part_number=1)
        except botocore.exceptions.ClientError:
            return None  # servers without part HEADs: fall back to our own layout
        return int(head["ContentLength"]) if head.get("ContentLength") else None

    def _content_arguments(self, head: dict[str, Any]) -> dict[str, Any]:
        """Content headers and user metadata to write, from a GET or HEAD of the source."""
        if not self.options.copy_metadata:
            return {}
        arguments = {name: head[name] for name in CONTENT_HEADERS if head.get(name)}
        if head.get("Expires") is not None and not isinstance(head["Expires"], str):
            arguments["Expires"] = head["Expires"]
        metadata = {k: v for k, v in (head.get("Metadata") or {}).items() if k != SOURCE_ETAG_METADATA}
        if metadata:
            arguments["Metadata"] = metadata
        return arguments

    def _tagging(self, key: str) -> str | None:
        if not self.options.copy_tags:
            return None
        response = self.source.client.get_object_tagging(
            Bucket=self.source.bucket, Key=self.source.key_for(key), **self.source.request_payer
        )
        return urlencode([(tag["Key"], tag["Value"]) for tag in response.get("TagSet", [])])

    # --- writing the destination ----------------------------------------------------------

    def _write_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        if self.dest_spec.storage_class:
            arguments["StorageClass"] = self.dest_spec.storage_class.value
        if self.dest_spec.acl:
            arguments["ACL"] = self.dest_spec.acl.value
        if self.dest_spec.sse is SseMode.AES256:
            arguments["ServerSideEncryption"] = "AES256"
        elif self.dest_spec.sse is SseMode.AWS_KMS:
            arguments["ServerSideEncryption"] = "aws:kms"
            if self.dest_spec.kms_key_id:
                arguments["SSEKMSKeyId"] = self.dest_spec.kms_key_id
        return arguments

    def _new_object_arguments(self, key: str, head: dict[str, Any], source_etag: str, mark: bool) -> dict[str, Any]:
        arguments = {**self._write_arguments(), **self._content_arguments(head)}
        if mark:
            arguments["Metadata"] = {**arguments.get("Metadata", {}), SOURCE_ETAG_METADATA: source_etag}
        tagging = self._tagging(key)
        if tagging:
            arguments["Tagging"] = tagging
        return arguments

    # --- the copy ---------------------------------------------------------------------------

    def copy(self, key: str, size: int, etag: str) -> CopyResult:
        self._check_cancelled()
        dest_key_bytes = len(self.destination.key_for(key).encode())
        if dest_key_bytes > MAX_KEY_BYTES:
            # Checked here, not left to the server: some S3 look-alikes hang on such a request.
            raise CopyError(
                f"destination key would be {dest_key_bytes} bytes; S3 keys are at most {MAX_KEY_BYTES}",
                retryable=False,
            )
        cloned = self.try_clone(key, size, etag)
        if cloned is not None:
            return cloned
        layout, mark = self._layout(key, size, etag)
        mark = mark or not self._etags_are_md5
        if layout is None:
            if self.server_side:
                return self._copy_object(key, size, etag, mark)
            return self._put_object(key, size, etag, mark)
        return self._multipart(key, size, etag, layout, mark)

    def _layout(self, key: str, size: int, etag: str) -> tuple[list[PartRange] | None, bool]:
        """The parts to copy in (None: one request) and whether the result's ETag may differ from
        the source's, so that the destination must record the source ETag."""
        source_parts = parts_count(etag)
        if source_parts is not None:
            part_size = self._source_part_size(key, etag)
            if part_size and len(ranges_of(size, part_size)) == source_parts:
                return ranges_of(size, part_size), False
            guess = guess_part_size(size, source_parts)
            if guess:
                # Most likely the uploader's layout (then the ETags match), but only a guess: mark it.
                return ranges_of(size, guess), True
            if size <= self.options.multipart_threshold:
                return None, True
            return plan_parts(size, self.options.chunk_size), True
        if size <= self.options.multipart_threshold:
            return None, False
        return plan_parts(size, self.options.chunk_size), True

    def _copy_object_arguments(self, key: str, etag: str) -> dict[str, Any]:
        """A CopyObject of the listed version, with the destination's write settings; tags dropped unless
        they are to be copied."""
        arguments: dict[str, Any] = {
            "Bucket": self.destination.bucket,
            "Key": self.destination.key_for(key),
            "CopySource": {"Bucket": self.source.bucket, "Key": self.source.key_for(key)},
            "CopySourceIfMatch": _quoted(etag),
            **self._write_arguments(),
            **self.source.request_payer,
        }
        if not self.options.copy_tags:
            arguments["TaggingDirective"] = "REPLACE"
        return arguments

    def _copy_object(self, key: str, size: int, etag: str, mark: bool) -> CopyResult:
        arguments = self._copy_object_arguments(key, etag)
        if mark or not self.options.copy_metadata:
            head = self.head_source(key, etag)
            arguments["MetadataDirective"] = "REPLACE"
            arguments.update(self._content_arguments(head))
            if mark:
                arguments["Metadata"] = {**arguments.get("Metadata", {}), SOURCE_ETAG_METADATA: etag}
        response = self._guard(key, etag, lambda: self.destination.client.copy_object(**arguments))
        dest_etag = normalize_etag(response.get("CopyObjectResult", {}).get("ETag"))
        if self._etags_are_md5 and _is_md5(etag) and dest_etag:
            if dest_etag != etag:
                self._source_etag_must_be_md5(
                    key, etag, f"copied object's ETag {dest_etag} differs from the source's {etag}"
                )
                if not mark:
                    # An SSE-KMS source: the copy's ETag can never match, so it must record the source's, or
                    # every later run would copy it again. Copied once more, server side, with the record.
                    return self._copy_object(key, size, etag, mark=True)
        else:
            # Nothing to compare the copy with: at least make sure it was made from the listed version.
            self._source_unchanged(key, etag)
        return CopyResult(dest_etag or etag, size, "copy-object")

    def try_clone(self, key: str, size: int, etag: str) -> CopyResult | None:
        """One CopyObject for a multipart source on the same service, where that keeps its ETag; None when it
        does not apply or did not keep the ETag (then copy it part by part). Until the service has answered
        whether it keeps the ETag, one thread asks and the others wait for its answer: on AWS every asker's
        object is copied twice."""
        if not self._may_clone(size, etag):
            return None
        with self._clone_answer:
            while self._copy_keeps_multipart_etag is None and self._clone_asking:
                self._clone_answer.wait()
            if self._copy_keeps_multipart_etag is False:
                return None
            asking = self._copy_keeps_multipart_etag is None
            self._clone_asking = asking
        try:
            return self._clone_multipart(key, size, etag)
        finally:
            if asking:  # answered, or failed without an answer: then the next thread asks
                with self._clone_answer:
                    self._clone_asking = False
                    self._clone_answer.notify_all()

    def _may_clone(self, size: int, etag: str) -> bool:
        return (
            self.server_side and self._etags_are_md5 and parts_count(etag) is not None and size <= MAX_COPY_OBJECT_BYTES
        )

    def _clone_multipart(self, key: str, size: int, etag: str) -> CopyResult | None:
        """One CopyObject for a multipart source, kept when the copy has the source's ETag (the same parts, so
        the same bytes); None when the service gave it a new ETag: then it is copied again part by part, whose
        ETag matches on every service, and CopyObject is not tried again for this task's other objects."""
        arguments = self._copy_object_arguments(key, etag)
        if not self.options.copy_metadata:
            arguments["MetadataDirective"] = "REPLACE"
        response = self._guard(key, etag, lambda: self.destination.client.copy_object(**arguments))
        dest_etag = normalize_etag(response.get("CopyObjectResult", {}).get("ETag"))
        if dest_etag != etag:
            self._copy_keeps_multipart_etag = False
            return None
        self._copy_keeps_multipart_etag = True
        return CopyResult(dest_etag, size, "copy-object")

    def _source_unchanged(self, key: str, etag: str) -> None:
        """Copy conditions (x-amz-copy-source-if-match) are not honoured everywhere (Ceph ignores them):
        confirm after a server-side copy that the source still is the version it was meant to be."""
        if normalize_etag(self.head_source(key).get("ETag")) != etag:
            raise SourceChangedError(f"source object changed during the copy (ETag was {etag})")

    def _source_etag_must_be_md5(self, key: str, etag: str, mismatch: str) -> None:
        """Raise unless the mismatch has an innocent cause: the source's ETag is no MD5 to begin with
        (SSE-KMS objects). A source that changed meanwhile raises SourceChangedError."""
        head = self.head_source(key)
        if normalize_etag(head.get("ETag")) != etag:
            raise SourceChangedError(f"source object changed during the copy (ETag was {etag})")
        if head.get("ServerSideEncryption") != "aws:kms":
            raise CopyError(mismatch)

    def _read_source(
        self, key: str, etag: str, part: PartRange | None = None, into: bytearray | None = None
    ) -> tuple[bytes | memoryview, dict[str, Any]]:
        """The object's (or part's) bytes: new `bytes`, or a view of `into` filled from the response."""
        arguments: dict[str, Any] = {
            "Bucket": self.source.bucket,
            "Key": self.source.key_for(key),
            "IfMatch": _quoted(etag),
        }
        if part is not None:
            arguments["Range"] = part.http_range
        response = self._guard(
            key, etag, lambda: self.source.client.get_object(**arguments, **self.source.request_payer)
        )
        data: bytes | memoryview
        with response["Body"] as body:
            data = body.read() if into is None else _read_into(body, memoryview(into))
        expected = part.size if part is not None else int(response.get("ContentLength", len(data)))
        if len(data) != expected:
            raise CopyError(f"short read from the source: {len(data)} of {expected} bytes")
        return data, response

    @contextlib.contextmanager
    def _buffer_for(self, length: int) -> Iterator[bytearray | None]:
        """A pooled buffer for a read of `length` bytes, or None where a plain read is better (small or larger
        than a part). Small reads (at most one per worker, each under SMALL_READ) are outside the budget: part
        buffers fill it, and a small object waiting behind them left the link idle between parts; every other
        read is counted in it."""
        if length < SMALL_READ:
            yield None
            return
        reserved = self._memory.acquire(length)
        try:
            if self.buffers.fits(length):
                with self.buffers.lend() as buffer:
                    yield buffer
            else:
                yield None
        finally:
            self._memory.release(reserved)

    def _body(self, data: bytes | memoryview) -> bytes | memoryview:
        return data if self._sends_views or isinstance(data, bytes) else bytes(data)

    def _put_object(self, key: str, size: int, etag: str, mark: bool) -> CopyResult:
        with self._buffer_for(size) as buffer:
            data, response = self._read_source(key, etag, into=buffer)
            source_kms = response.get("ServerSideEncryption") == "aws:kms"
            # A plain single-part source's ETag is the MD5 of its content: sent as Content-MD5, the destination
            # checks the bytes against it (and refuses any changed on the way), with no hashing here. Other
            # sources' bytes are hashed, to send what was read.
            md5 = (None if source_kms else _etag_md5(etag)) or _md5(data).digest()
            # An SSE-KMS source's ETag is no MD5: the copy's cannot equal it, so the copy records it.
            arguments = self._new_object_arguments(key, response, etag, mark or source_kms)
            result = self.destination.client.put_object(
                Bucket=self.destination.bucket,
                Key=self.destination.key_for(key),
                Body=self._body(data),
                ContentMD5=base64.b64encode(md5).decode(),
                **arguments,
            )
        dest_etag = normalize_etag(result.get("ETag"))
        if self._etags_are_md5 and dest_etag and dest_etag != md5.hex():
            raise CopyError(f"destination ETag {dest_etag} differs from the MD5 of what was sent")
        return CopyResult(dest_etag, size, "put")

    def _multipart(self, key: str, size: int, etag: str, layout: list[PartRange], mark: bool) -> CopyResult:
        # Streamed parts whose ETags can add up to the source's (its own layout, or a guess of it) are checked
        # that way before the upload completes, and are not hashed one by one: MD5 was half of a streamed big
        # object's CPU.
        unhashed = self._parts_add_up_to_the_source(key, etag, layout)
        try:
            return self._upload_parts(key, size, etag, layout, mark, unhashed)
        except _GuessedLayoutMismatchError:
            # Not the uploader's layout after all, or bytes changed on the way: once more, every part hashed.
            return self._upload_parts(key, size, etag, layout, mark, unhashed=False)

    def _parts_add_up_to_the_source(self, key: str, etag: str, layout: list[PartRange]) -> bool:
        if self._copies_parts_server_side(key) or not self._etags_are_md5 or parts_count(etag) != len(layout):
            return False
        # An SSE-KMS source's ETag is no MD5 of anything: its parts are hashed.
        return self.head_source(key, etag).get("ServerSideEncryption") != "aws:kms"

    def _upload_parts(
        self, key: str, size: int, etag: str, layout: list[PartRange], mark: bool, unhashed: bool
    ) -> CopyResult:
        resumed = self.resume_upload(key, etag, mark)
        upload_id = resumed[0] if resumed else self.start_upload(key, etag, mark)
        stored = reusable_parts(layout, resumed[1]) if resumed else {}
        futures: dict[int, Future[str]] = {}
        try:
            futures = {
                part.number: self._parts.submit(self.copy_part, key, etag, upload_id, part, unhashed)
                for part in layout
                if part.number not in stored
            }
            part_etags = [(number, future.result()) for number, future in futures.items()]
            parts = [*stored.items(), *part_etags]
            return self.finish_upload(key, size, etag, upload_id, parts, mark, must_add_up=unhashed)
        except BaseException:
            for future in futures.values():
                future.cancel()
            self.abort_upload(key, upload_id)
            raise

    # --- multipart steps, also used one message per part for giant objects -----------------

    def plan_upload(self, key: str, size: int, etag: str) -> tuple[list[PartRange], bool]:
        """The part layout for a multipart copy, and whether the source ETag must be recorded."""
        layout, mark = self._layout(key, size, etag)
        if layout is None:
            layout = plan_parts(size, self.options.chunk_size)
            mark = mark or parts_count(etag) != len(layout)
        return layout, mark or not self._etags_are_md5

    def start_upload(self, key: str, etag: str, mark: bool) -> str:
        head = self.head_source(key, etag)
        dest_key = self.destination.key_for(key)
        source_kms = head.get("ServerSideEncryption") == "aws:kms"  # its ETag is no MD5: the copy records it
        response = self.destination.client.create_multipart_upload(
            Bucket=self.destination.bucket,
            Key=dest_key,
            **self._new_object_arguments(key, head, etag, mark or source_kms),
        )
        upload_id = str(response["UploadId"])
        if self.uploads is not None:
            try:
                self.uploads.started(key, upload_id, self.destination.bucket, dest_key, etag, mark)
            except BaseException:
                self.abort_upload(key, upload_id)  # an upload nobody knows of must not get parts
                raise
        return upload_id

    def resume_upload(self, key: str, etag: str, mark: bool) -> tuple[str, dict[int, StoredPart]] | None:
        """An upload of this source version that an earlier attempt recorded and left (it was killed), and the
        parts it stored; None when there is none, or it no longer exists."""
        if self.uploads is None:
            return None
        dest_key = self.destination.key_for(key)
        upload = self.uploads.resumable(self.destination.bucket, dest_key, etag, mark)
        if upload is None:
            return None
        stored: dict[int, StoredPart] = {}
        try:
            paginator = self.destination.client.get_paginator("list_parts")
            for page in paginator.paginate(Bucket=upload.bucket, Key=dest_key, UploadId=upload.upload_id):
                for part in page.get("Parts", []):
                    stored[int(part["PartNumber"])] = StoredPart(normalize_etag(part.get("ETag")), int(part["Size"]))
        except botocore.exceptions.ClientError as error:
            if error_code(error) != "NoSuchUpload":
                raise
            self.uploads.ended(upload.upload_id)  # completed or aborted by someone else meanwhile
            return None
        return upload.upload_id, stored

    def copy_part(self, key: str, etag: str, upload_id: str, part: PartRange, unhashed: bool = False) -> str:
        """Copy one part; returns its ETag. Server side where possible, streamed otherwise. `unhashed`: a
        streamed part need not be hashed, because its upload is completed only if all parts' ETags add up to
        the source's ETag (finish_upload's `must_add_up`)."""
        self._check_cancelled()
        # Ceph decodes UploadPartCopy's copy source twice, so `a%41b` would silently copy `aAb`:
        # keys with `%` are streamed, which is correct on every service.
        if self._copies_parts_server_side(key):
            return self._copy_part(key, etag, upload_id, part)
        return self._stream_part(key, etag, upload_id, part, unhashed)

    def _copies_parts_server_side(self, key: str) -> bool:
        return self.server_side and "%" not in self.source.key_for(key)

    def finish_upload(
        self,
        key: str,
        size: int,
        etag: str,
        upload_id: str,
        part_etags: list[tuple[int, str]],
        mark: bool,
        *,
        must_add_up: bool = False,
    ) -> CopyResult:
        """Complete the upload and verify the result; an upload completed before (by a worker that
        died before recording it) is verified the same way. `must_add_up`: parts sent unhashed in a guessed
        layout, completed only if their ETags add up to the source's (else _GuessedLayoutMismatchError)."""
        dest_key = self.destination.key_for(key)
        ordered = sorted(part_etags)
        expected = multipart_etag([part_etag for _, part_etag in ordered])
        # Verify before completing: a completed upload replaces what the destination held.
        try:
            if must_add_up and mark and expected != etag:
                raise _GuessedLayoutMismatchError(f"the parts' ETag {expected} differs from the source's {etag}")
            if not mark and self._etags_are_md5:
                if expected != etag:
                    self._source_etag_must_be_md5(
                        key, etag, f"copied object's ETag {expected} differs from the source's {etag}"
                    )
            elif self._copies_parts_server_side(key):
                # Part copies are conditional on the source's ETag, but not every service honours that
                # (Ceph does not): never complete an upload that may hold parts of two versions.
                self._source_unchanged(key, etag)
        except CopyError:
            self.abort_upload(key, upload_id)
            raise
        try:
            response = self.destination.client.complete_multipart_upload(
                Bucket=self.destination.bucket,
                Key=dest_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"ETag": f'"{e}"', "PartNumber": n} for n, e in ordered]},
            )
            dest_etag = normalize_etag(response.get("ETag"))
        except botocore.exceptions.ClientError as error:
            if error_code(error) != "NoSuchUpload":
                raise
            dest_etag = ""
        if self.uploads is not None:
            self.uploads.ended(upload_id)
        if not dest_etag:  # Ceph answers CompleteMultipartUpload without an ETag; or it was completed before
            dest_etag = normalize_etag(
                self.destination.client.head_object(Bucket=self.destination.bucket, Key=dest_key).get("ETag")
            )
        if self._etags_are_md5 and dest_etag != expected:
            raise CopyError(f"destination ETag {dest_etag} differs from the parts' ETag {expected}")
        return CopyResult(dest_etag, size, "part-copy" if self.server_side else "multipart-put")

    def abort_upload(self, key: str, upload_id: str, bucket: str | None = None, dest_key: str | None = None) -> None:
        """Abort an upload (by default this copier's for the key); where the abort fails, its record stays, and
        the next scan tries again."""
        try:
            self.destination.client.abort_multipart_upload(
                Bucket=bucket or self.destination.bucket,
                Key=self.destination.key_for(key) if dest_key is None else dest_key,
                UploadId=upload_id,
            )
        except botocore.exceptions.ClientError as error:
            if error_code(error) != "NoSuchUpload":
                return
        except botocore.exceptions.BotoCoreError:
            return
        if self.uploads is not None:
            with contextlib.suppress(Exception):
                self.uploads.ended(upload_id)

    def _copy_part(self, key: str, etag: str, upload_id: str, part: PartRange) -> str:
        response = self._guard(
            key,
            etag,
            lambda: self.destination.client.upload_part_copy(
                Bucket=self.destination.bucket,
                Key=self.destination.key_for(key),
                UploadId=upload_id,
                PartNumber=part.number,
                CopySource={"Bucket": self.source.bucket, "Key": self.source.key_for(key)},
                CopySourceRange=part.http_range,
                CopySourceIfMatch=_quoted(etag),
                **self.source.request_payer,
            ),
        )
        return normalize_etag(response["CopyPartResult"]["ETag"])

    def _stream_part(self, key: str, etag: str, upload_id: str, part: PartRange, unhashed: bool = False) -> str:
        with self._buffer_for(part.size) as buffer:
            data, read = self._read_source(key, etag, part, into=buffer)
            arguments: dict[str, Any] = {
                "Bucket": self.destination.bucket,
                "Key": self.destination.key_for(key),
                "UploadId": upload_id,
                "PartNumber": part.number,
                "Body": self._body(data),
            }
            # Verified with all the others through the multipart ETag before the upload completes: not hashed
            # here, and sent unsigned where the client can. Other parts carry their MD5.
            verified_later = unhashed and read.get("ServerSideEncryption") != "aws:kms"
            digest = None if verified_later and self._unsigned_bodies else _md5(data)
            if digest is None:
                arguments[UNSIGNED_BODY_ARGUMENT] = True
            else:
                arguments["ContentMD5"] = base64.b64encode(digest.digest()).decode()
            response = self.destination.client.upload_part(**arguments)
        part_etag = normalize_etag(response.get("ETag"))
        if digest is not None and self._etags_are_md5 and part_etag != digest.hexdigest():
            raise CopyError(f"part {part.number}: destination ETag {part_etag} differs from the MD5 sent")
        return part_etag

    # --- other operations ---------------------------------------------------------------------

    def delete(self, key: str) -> None:
        self.destination.client.delete_object(Bucket=self.destination.bucket, Key=self.destination.key_for(key))

    def details(self, side: S3Side, key: str) -> ObjectDetails | None:
        """A HEAD of the object for compares that the listing cannot settle; None if it is gone."""
        try:
            head = side.client.head_object(
                Bucket=side.bucket, Key=side.key_for(key), ChecksumMode="ENABLED", **side.request_payer
            )
        except botocore.exceptions.ClientError as error:
            if _not_found(error):
                return None
            raise
        checksums = {name: str(head[field]) for field, name in CHECKSUM_FIELDS.items() if head.get(field)}
        if head.get("ChecksumType") == "COMPOSITE":
            checksums = {}  # a checksum of part checksums depends on the layout: not comparable
        return ObjectDetails(
            size=int(head.get("ContentLength", 0)),
            etag=normalize_etag(head.get("ETag")),
            metadata=dict(head.get("Metadata") or {}),
            checksums=checksums,
            kms=head.get("ServerSideEncryption") == "aws:kms",
        )
