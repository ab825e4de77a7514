"""Requests and responses of S3's hot operations, built from botocore's own service model, so that every
keyword argument maps to the header, query parameter or XML element boto3 would send, and answers have
boto3's shapes."""

from __future__ import annotations

import datetime
import email.utils
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

# boto3 method name -> S3 operation served by the lean client.
OPERATIONS = {
    "head_object": "HeadObject",
    "get_object": "GetObject",
    "put_object": "PutObject",
    "copy_object": "CopyObject",
    "upload_part": "UploadPart",
    "upload_part_copy": "UploadPartCopy",
    "create_multipart_upload": "CreateMultipartUpload",
    "complete_multipart_upload": "CompleteMultipartUpload",
    "abort_multipart_upload": "AbortMultipartUpload",
    "list_objects_v2": "ListObjectsV2",
    "delete_object": "DeleteObject",
}
# Arguments that need botocore's own handlers (customer-provided keys are hashed and encoded, checksums
# computed, EncodingType changes how keys come back): calls with them go to boto3.
DELEGATED_ARGUMENTS = frozenset(
    {
        "SSECustomerKey",
        "SSECustomerKeyMD5",
        "CopySourceSSECustomerKey",
        "CopySourceSSECustomerKeyMD5",
        "ChecksumAlgorithm",
        "EncodingType",
    }
)
# Operations whose 200 answer can carry an error document (botocore turns those into 500s and retries).
ERRORS_IN_200 = frozenset({"CopyObject", "UploadPartCopy", "CompleteMultipartUpload"})


def encode_query_value(value: str) -> str:
    return quote(value, safe="-_.~")


def encode_key(key: str) -> str:
    return quote(key, safe="/~")


def copy_source(value: Any) -> str:
    """x-amz-copy-source as botocore writes it: bucket/percent-encoded key[?versionId=...]."""
    if isinstance(value, str):
        return quote(value, safe="/~") if "?versionId=" not in value else value
    bucket = value["Bucket"]
    text = f"{bucket}/{quote(value['Key'], safe='-._~/')}"
    if value.get("VersionId"):
        text += f"?versionId={value['VersionId']}"
    return text


def _header_value(kind: str, value: Any) -> str:
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp":
        if isinstance(value, datetime.datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
            return email.utils.formatdate(moment.timestamp(), usegmt=True)
        return str(value)
    return str(value)


@dataclass
class Operation:
    """One operation's request and response layout, read once from the model."""

    name: str
    model: Any
    method: str
    fixed_query: list[tuple[str, str | None]]
    query_members: dict[str, tuple[str, str]] = field(default_factory=dict)  # argument -> (name, type)
    header_members: dict[str, tuple[str, str]] = field(default_factory=dict)
    prefixed_headers: dict[str, str] = field(default_factory=dict)  # argument -> header prefix
    payload: str | None = None
    output_headers: dict[str, tuple[str, str]] = field(default_factory=dict)  # header -> (member, type)
    output_prefixed: dict[str, str] = field(default_factory=dict)  # header prefix -> member
    output_payload: str | None = None

    @classmethod
    def from_model(cls, operation_model: Any) -> Operation:
        http = operation_model.http
        _, _, query_text = http["requestUri"].partition("?")
        fixed: list[tuple[str, str | None]] = []
        for pair in filter(None, query_text.split("&")):
            key, equals, value = pair.partition("=")
            if key != "x-id":  # botocore drops the x-id routing hint
                fixed.append((key, value if equals else None))
        operation = cls(operation_model.name, operation_model, http["method"], fixed)
        input_shape = operation_model.input_shape
        for member, shape in input_shape.members.items():
            location = shape.serialization.get("location")
            name = shape.serialization.get("name", member)
            if location == "querystring":
                operation.query_members[member] = (name, shape.type_name)
            elif location == "header":
                operation.header_members[member] = (name, shape.type_name)
            elif location == "headers":
                operation.prefixed_headers[member] = name
        operation.payload = input_shape.serialization.get("payload")
        output = operation_model.output_shape
        if output is not None:
            for member, shape in output.members.items():
                location = shape.serialization.get("location")
                name = shape.serialization.get("name", member)
                if location == "header":
                    operation.output_headers[name.lower()] = (member, shape.type_name)
                elif location == "headers":
                    operation.output_prefixed[name.lower()] = member
            operation.output_payload = output.serialization.get("payload")
        return operation

    def serialize(self, arguments: dict[str, Any]) -> tuple[list[tuple[str, str | None]], dict[str, str], Any]:
        """Query pairs (encoded), headers and body for the arguments other than Bucket and Key."""
        query = list(self.fixed_query)
        headers: dict[str, str] = {}
        body: Any = None
        for member, value in arguments.items():
            if member in ("Bucket", "Key") or value is None:
                continue
            if member in self.header_members:
                name, kind = self.header_members[member]
                headers[name] = copy_source(value) if member == "CopySource" else _header_value(kind, value)
            elif member in self.query_members:
                name, kind = self.query_members[member]
                query.append((encode_query_value(name), encode_query_value(_header_value(kind, value))))
            elif member in self.prefixed_headers:
                prefix = self.prefixed_headers[member]
                for key, item in value.items():
                    headers[prefix + key] = str(item)
            elif member == self.payload:
                body = value
            else:
                raise TypeError(f"{self.name}: unexpected argument {member!r}")
        if self.payload and body is not None and not isinstance(body, bytes | bytearray | memoryview):
            body = xml_document(self.model.input_shape.members[self.payload], body)
        return query, headers, body

    def parse_headers(self, headers: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        prefixed: dict[str, dict[str, str]] = {}
        for name, value in headers.items():
            target = self.output_headers.get(name)
            if target is not None:
                member, kind = target
                if kind in ("integer", "long"):
                    result[member] = int(value)
                elif kind == "boolean":
                    result[member] = value.lower() == "true"
                else:
                    result[member] = value
                continue
            for prefix, member in self.output_prefixed.items():
                if name.startswith(prefix):
                    prefixed.setdefault(member, {})[name[len(prefix) :]] = value
        for member in self.output_prefixed.values():
            result[member] = prefixed.get(member, {})
        return result


def xml_document(shape: Any, value: dict[str, Any]) -> bytes:
    """An XML request body for a structure payload, as botocore's RestXMLSerializer writes it."""
    name = shape.serialization.get("name", shape.name)
    namespace = shape.serialization.get("xmlNamespace")
    attributes = ""
    if namespace:
        uri = namespace["uri"] if isinstance(namespace, dict) else namespace
        attributes = f' xmlns="{uri}"'
    return f"<{name}{attributes}>{_xml_members(shape, value)}</{name}>".encode()


def _xml_members(shape: Any, value: dict[str, Any]) -> str:
    parts: list[str] = []
    for member, member_shape in shape.members.items():
        if member not in value or value[member] is None:
            continue
        parts.append(_xml_value(member_shape, member_shape.serialization.get("name", member), value[member]))
    return "".join(parts)


def _xml_value(shape: Any, name: str, value: Any) -> str:
    kind = shape.type_name
    if kind == "structure":
        return f"<{name}>{_xml_members(shape, value)}</{name}>"
    if kind == "list":
        element = shape.member
        if shape.serialization.get("flattened"):
            return "".join(_xml_value(element, name, item) for item in value)
        inner = element.serialization.get("name", "member")
        return f"<{name}>{''.join(_xml_value(element, inner, item) for item in value)}</{name}>"
    text = ("true" if value else "false") if kind == "boolean" else escape(str(value))
    return f"<{name}>{text}</{name}>"
