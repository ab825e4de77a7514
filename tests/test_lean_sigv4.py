"""The lean client's requests are signed byte for byte as botocore's S3SigV4Auth signs boto3's own: the same
URL, the same signed headers and the same Authorization, for odd keys, queries and continuation tokens.

A narrow unit test: boto3's request is captured before it is sent, and botocore's clock is fixed."""

from __future__ import annotations

import datetime
from typing import Any
from unittest import mock

import boto3
import botocore.auth
import botocore.config
import pytest
from botocore.awsrequest import AWSRequest, AWSResponse

from dth.s3.environment_keys import FrozenKeys, StaticCredentials
from dth.s3.lean import LeanS3Client
from dth.s3.lean.client import PathStyleEndpoint

AMZ_DATE = "20260102T030405Z"
ODD_KEYS = [
    "plain.txt",
    "with space",
    "plus+sign",
    "percent%41%2F",
    "unicodé/ü/日本",
    "question?mark",
    "hash#tag",
    "double//slash",
    "./dot/x",
    "../up",
    "trailing/",
    "~tilde and=equals&amp;",
    "*star:colon;semi,comma'quote\"",
]
ODD_TOKENS = ["1/abc+def==", "tok en%2F?&=#"]


class _FixedDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> _FixedDatetime:
        return cls(2026, 1, 2, 3, 4, 5, tzinfo=tz)

    @classmethod
    def utcnow(cls) -> _FixedDatetime:
        return cls(2026, 1, 2, 3, 4, 5)


def _clients(endpoint: str | None, style: str, region: str, token: str | None) -> tuple[Any, LeanS3Client]:
    session = boto3.Session(
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token=token,
        region_name=region,
    )
    config = botocore.config.Config(
        s3={"addressing_style": style},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 1},
    )
    client = session.client("s3", endpoint_url=endpoint, config=config)
    return client, LeanS3Client(client, session.get_credentials())


def _botocore_request(client: Any, method: str, arguments: dict[str, Any]) -> AWSRequest:
    captured: list[AWSRequest] = []

    def capture(request: AWSRequest, **_: Any) -> AWSResponse:
        captured.append(request)
        raise _CapturedError

    client.meta.events.register_first("before-send.s3", capture)
    with mock.patch.object(botocore.auth.datetime, "datetime", _FixedDatetime), pytest.raises(_CapturedError):
        getattr(client, method)(**arguments)
    client.meta.events.unregister("before-send.s3", capture)
    return captured[0]


class _CapturedError(Exception):
    pass


def _calls(key: str, token: str) -> list[tuple[str, dict[str, Any]]]:
    bucket = "bucket-name"
    return [
        ("head_object", {"Bucket": bucket, "Key": key, "IfMatch": '"0123"', "PartNumber": 1}),
        ("get_object", {"Bucket": bucket, "Key": key, "Range": "bytes=0-9", "IfMatch": '"0123"'}),
        (
            "put_object",
            {
                "Bucket": bucket,
                "Key": key,
                "Body": b"hello",
                "ContentMD5": "XUFAKrxLKna5cZ2REBfFkg==",
                "ContentType": "text/plain; charset=utf-8",
                "Metadata": {"dth-source-etag": "abc", "odd": "a  b"},
                "StorageClass": "STANDARD_IA",
                "Tagging": "a=b&c=d%20e",
                "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": "key-1",
                "ACL": "private",
            },
        ),
        (
            "copy_object",
            {
                "Bucket": bucket,
                "Key": key,
                "CopySource": {"Bucket": "src-bucket", "Key": key},
                "CopySourceIfMatch": '"0123"',
                "MetadataDirective": "REPLACE",
                "TaggingDirective": "REPLACE",
                "Metadata": {"m": "v"},
                "RequestPayer": "requester",
            },
        ),
        (
            "upload_part",
            {"Bucket": bucket, "Key": key, "UploadId": "up+id/=", "PartNumber": 3, "Body": b"x" * 10},
        ),
        (
            "upload_part_copy",
            {
                "Bucket": bucket,
                "Key": key,
                "UploadId": "up+id/=",
                "PartNumber": 2,
                "CopySource": {"Bucket": "src-bucket", "Key": key},
                "CopySourceRange": "bytes=0-99",
                "CopySourceIfMatch": '"0123"',
            },
        ),
        ("create_multipart_upload", {"Bucket": bucket, "Key": key, "Metadata": {"m": "v"}}),
        (
            "complete_multipart_upload",
            {
                "Bucket": bucket,
                "Key": key,
                "UploadId": "up+id/=",
                "MultipartUpload": {"Parts": [{"ETag": '"a&b"', "PartNumber": 1}, {"ETag": '"c"', "PartNumber": 2}]},
            },
        ),
        ("abort_multipart_upload", {"Bucket": bucket, "Key": key, "UploadId": "up+id/="}),
        ("delete_object", {"Bucket": bucket, "Key": key}),
        (
            "list_objects_v2",
            {"Bucket": bucket, "Prefix": key, "Delimiter": "/", "ContinuationToken": token, "StartAfter": key},
        ),
        ("list_objects_v2", {"Bucket": bucket, "Prefix": key, "MaxKeys": 7}),
    ]


def _bytes(body: Any) -> bytes:
    if hasattr(body, "getvalue"):
        return bytes(body.getvalue())
    return bytes(body)


def _signed(headers: Any) -> dict[str, str]:
    ignored = {"user-agent", "amz-sdk-invocation-id", "amz-sdk-request", "expect", "content-length", "host"}
    return {
        name.lower(): value.decode() if isinstance(value, bytes) else value
        for name, value in headers.items()
        if name.lower() not in ignored
    }


@pytest.mark.parametrize(
    ("endpoint", "style", "region", "token"),
    [
        ("https://s3.example.com:8443", "path", "us-east-1", None),
        ("https://objects.example.com", "virtual", "eu-west-1", "session/token+=="),
        (None, "virtual", "eu-central-1", None),
        (None, "path", "us-east-1", "tok"),
    ],
)
def test_requests_are_signed_as_botocore_signs_them(
    endpoint: str | None, style: str, region: str, token: str | None
) -> None:
    boto_client, lean = _clients(endpoint, style, region, token)
    compared = 0
    for key in ODD_KEYS:
        # Each key in every operation; each continuation token in the listings.
        calls = [
            call
            for token in ODD_TOKENS
            for call in _calls(key, token)
            if token == ODD_TOKENS[0] or call[0] == "list_objects_v2"
        ]
        for method, arguments in calls:
            expected = _botocore_request(boto_client, method, arguments)
            prepared = lean.prepare(method, AMZ_DATE, **arguments)
            where = f"{method} {key!r}"
            assert prepared.method == expected.method, where
            assert prepared.url == expected.url, where
            assert _signed(prepared.headers) == _signed(expected.headers), where
            if prepared.body or expected.body:
                assert bytes(prepared.body) == _bytes(expected.body), where
            compared += 1
    assert compared == len(ODD_KEYS) * (12 + 2 * (len(ODD_TOKENS) - 1))


def test_bodies_protected_by_content_md5_are_not_hashed_again_over_http() -> None:
    """Over plain http botocore SHA-256-signs every body; Content-MD5 already protects it."""
    _, lean = _clients("http://127.0.0.1:9", "path", "us-east-1", None)
    arguments = {"Bucket": "b", "Key": "k", "Body": b"hello", "ContentMD5": "XUFAKrxLKna5cZ2REBfFkg=="}
    prepared = lean.prepare("put_object", AMZ_DATE, **arguments)
    assert prepared.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert "Expect" not in prepared.headers
    unprotected = lean.prepare("upload_part", AMZ_DATE, Bucket="b", Key="k", UploadId="u", PartNumber=1, Body=b"hi")
    assert unprotected.headers["X-Amz-Content-SHA256"] != "UNSIGNED-PAYLOAD"


def _unused_boto3_client() -> Any:
    raise AssertionError("a path-style endpoint on static keys needs no boto3 client to sign")


@pytest.mark.parametrize(
    ("endpoint", "region", "token"),
    [
        ("https://s3.example.com:8443", "us-east-1", None),
        ("https://127.0.0.1:7480", "eu-west-1", "session/token+=="),
        ("https://objects.example.com/", "cn-north-1", None),
    ],
)
def test_path_style_requests_without_botocore_are_signed_as_botocore_signs_them(
    endpoint: str, region: str, token: str | None
) -> None:
    """The side `dth s3 sync` builds on static keys and a path-style endpoint: routes without the endpoint
    rules, the service model from the data file, keys without botocore's credential chain (https: over http the
    lean client leaves a body with Content-MD5 unsigned, by design)."""
    boto_client, _ = _clients(endpoint, "path", region, token)
    keys = StaticCredentials(FrozenKeys("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token))
    lean = LeanS3Client(
        _unused_boto3_client, keys, path_style=PathStyleEndpoint(endpoint.rstrip("/"), region), max_attempts=1
    )
    for key in ODD_KEYS:
        for method, arguments in _calls(key, ODD_TOKENS[1]):
            expected = _botocore_request(boto_client, method, arguments)
            prepared = lean.prepare(method, AMZ_DATE, **arguments)
            where = f"{method} {key!r}"
            assert prepared.url == expected.url, where
            assert _signed(prepared.headers) == _signed(expected.headers), where
