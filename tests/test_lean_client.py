"""The lean client against real servers (radosgw and moto): for every hot operation its answers, errors and
retries are boto3's, for odd keys too."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import boto3
import botocore.exceptions
import pytest

from dth.devtools.faultproxy import Fault, FaultProxy
from dth.devtools.sites import S3Site
from dth.s3.lean import LeanS3Client
from dth.s3.sides import CLIENT_SWITCH, connect
from dth.spec.model import S3Location

ODD_KEYS = [
    "plain.txt",
    "with space",
    "plus+sign",
    "percent%41",
    "unicodé/ü/日本",
    "question?mark",
    "hash#tag",
    "double//slash",
    "./dot/x",
    "trailing/",
    "amp&lt;tag>",
    "mixed/ +%?#=&;,$@!'()*~\"quote",
]
PART = 5 * 1024 * 1024


def _clients(site: S3Site, max_attempts: int = 3) -> tuple[Any, LeanS3Client]:
    """The engine's boto3 client for the site (dth.s3.sides.connect) and the lean client wrapping it."""
    session = boto3.Session(
        aws_access_key_id=site.access_key, aws_secret_access_key=site.secret_key, region_name="us-east-1"
    )
    location = S3Location.model_validate({"type": "S3_Compatible", "endpoint": site.url, "bucket": "unused"})
    with mock.patch.dict(os.environ, {CLIENT_SWITCH: "lean"}):
        lean = connect("destination", location, session=session, max_attempts=max_attempts).client
    assert isinstance(lean, LeanS3Client)
    return lean.boto3_client, lean


@pytest.fixture(params=["rgw_site", "moto_site"])
def site(request: pytest.FixtureRequest) -> S3Site:
    found: S3Site = request.getfixturevalue(request.param)
    return found


@pytest.fixture
def bucket(site: S3Site, unique_name: str) -> Iterator[str]:
    boto = site.client()
    boto.create_bucket(Bucket=unique_name)
    yield unique_name
    for page in boto.get_paginator("list_objects_v2").paginate(Bucket=unique_name):
        for entry in page.get("Contents", []):
            boto.delete_object(Bucket=unique_name, Key=entry["Key"])
    for upload in boto.list_multipart_uploads(Bucket=unique_name).get("Uploads", []):
        boto.abort_multipart_upload(Bucket=unique_name, Key=upload["Key"], UploadId=upload["UploadId"])
    boto.delete_bucket(Bucket=unique_name)


def _plain(answer: dict[str, Any], *volatile: str) -> dict[str, Any]:
    """An answer without what differs between two calls (request ids, dates, the volatile members)."""
    result = {name: value for name, value in answer.items() if name not in volatile and name != "Body"}
    status = answer["ResponseMetadata"]["HTTPStatusCode"]
    result["ResponseMetadata"] = {"HTTPStatusCode": status}
    for name in ("CopyObjectResult", "CopyPartResult"):
        if name in result:
            result[name] = {k: v for k, v in result[name].items() if k not in volatile}
    return result


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def test_reads_answer_as_boto3_answers(site: S3Site, bucket: str) -> None:
    boto, lean = _clients(site)
    for number, key in enumerate(ODD_KEYS):
        boto.put_object(
            Bucket=bucket,
            Key=key,
            Body=f"content {number}".encode() * 10,
            ContentType="text/plain",
            CacheControl="no-cache",
            Metadata={"colour": "blue", "n": str(number)},
            Expires=datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        )
    for key in ODD_KEYS:
        head = boto.head_object(Bucket=bucket, Key=key)
        assert _plain(lean.head_object(Bucket=bucket, Key=key)) == _plain(head), key
        arguments = {"Bucket": bucket, "Key": key, "Range": "bytes=2-11", "IfMatch": head["ETag"]}
        expected = boto.get_object(**arguments)
        got = lean.get_object(**arguments)
        assert _plain(got) == _plain(expected), key
        with got["Body"] as body:
            assert body.read() == expected["Body"].read()
        assert (
            lean.get_object(Bucket=bucket, Key=key)["Body"].read()
            == boto.get_object(Bucket=bucket, Key=key)["Body"].read()
        )
    for arguments in ({"Bucket": bucket, "MaxKeys": 4}, {"Bucket": bucket, "Delimiter": "/", "MaxKeys": 3}):
        expected_pages = list(boto.get_paginator("list_objects_v2").paginate(**arguments))
        got_pages = list(lean.get_paginator("list_objects_v2").paginate(**arguments))
        assert [_plain(p) for p in got_pages] == [_plain(p) for p in expected_pages]
        assert sum(len(p.get("Contents", [])) for p in got_pages) > 0
    keys = [e["Key"] for p in lean.get_paginator("list_objects_v2").paginate(Bucket=bucket) for e in p["Contents"]]
    assert sorted(keys) == sorted(ODD_KEYS)
    prefixed = lean.list_objects_v2(Bucket=bucket, Prefix="unicodé/")
    assert _plain(prefixed) == _plain(boto.list_objects_v2(Bucket=bucket, Prefix="unicodé/"))


def test_writes_answer_as_boto3_answers(site: S3Site, bucket: str) -> None:
    boto, lean = _clients(site)
    for key in ODD_KEYS:
        data = key.encode() * 3
        arguments = {"Bucket": bucket, "Body": data, "ContentMD5": _md5(data), "Metadata": {"m": "v"}}
        put = lean.put_object(Key=f"lean/{key}", **arguments)
        assert _plain(put) == _plain(boto.put_object(Key=f"boto/{key}", **arguments)), key
        assert lean.get_object(Bucket=bucket, Key=f"lean/{key}")["Body"].read() == data
        copy = {"CopySource": {"Bucket": bucket, "Key": f"lean/{key}"}, "CopySourceIfMatch": put["ETag"]}
        copied = lean.copy_object(Bucket=bucket, Key=f"lean-copy/{key}", **copy)
        expected = boto.copy_object(Bucket=bucket, Key=f"boto-copy/{key}", **copy)
        assert _plain(copied, "LastModified") == _plain(expected, "LastModified"), key
        assert boto.head_object(Bucket=bucket, Key=f"lean-copy/{key}")["Metadata"] == {"m": "v"}
        deleted = lean.delete_object(Bucket=bucket, Key=f"lean-copy/{key}")
        assert _plain(deleted) == _plain(boto.delete_object(Bucket=bucket, Key=f"boto-copy/{key}"))
        with pytest.raises(botocore.exceptions.ClientError):
            boto.head_object(Bucket=bucket, Key=f"lean-copy/{key}")


@pytest.mark.parametrize("key", ["big file+%41/./ü", "plain-big"])
def test_multipart_answers_as_boto3_answers(site: S3Site, bucket: str, key: str) -> None:
    boto, lean = _clients(site)
    first = b"a" * PART
    boto.put_object(Bucket=bucket, Key="source", Body=b"b" * 1000)
    results: dict[str, dict[str, Any]] = {}
    for name, client in (("lean", lean), ("boto", boto)):
        target = f"{name}/{key}"
        created = client.create_multipart_upload(Bucket=bucket, Key=target, Metadata={"m": "v"})
        assert set(created) >= {"Bucket", "Key", "UploadId"} and created["Key"] == target
        part = client.upload_part(
            Bucket=bucket, Key=target, UploadId=created["UploadId"], PartNumber=1, Body=first, ContentMD5=_md5(first)
        )
        copied = client.upload_part_copy(
            Bucket=bucket,
            Key=target,
            UploadId=created["UploadId"],
            PartNumber=2,
            CopySource={"Bucket": bucket, "Key": "source"},
            CopySourceRange="bytes=0-99",
        )
        parts = [{"ETag": part["ETag"], "PartNumber": 1}, {"ETag": copied["CopyPartResult"]["ETag"], "PartNumber": 2}]
        completed = client.complete_multipart_upload(
            Bucket=bucket, Key=target, UploadId=created["UploadId"], MultipartUpload={"Parts": parts}
        )
        results[name] = {
            "created": _plain(created, "UploadId", "Key"),
            "part": _plain(part),
            "copied": _plain(copied, "LastModified"),
            "completed": _plain(completed, "Key", "Location"),
        }
        aborted = client.create_multipart_upload(Bucket=bucket, Key=f"{target}-aborted")
        results[name]["aborted"] = _plain(
            client.abort_multipart_upload(Bucket=bucket, Key=f"{target}-aborted", UploadId=aborted["UploadId"])
        )
    assert results["lean"] == results["boto"]
    assert boto.head_object(Bucket=bucket, Key=f"lean/{key}")["ContentLength"] == PART + 100
    assert not boto.list_multipart_uploads(Bucket=bucket).get("Uploads")


def _error(client: Any, method: str, arguments: dict[str, Any]) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        getattr(client, method)(**arguments)
    return raised.value


def _same_error(lean_error: botocore.exceptions.ClientError, boto_error: botocore.exceptions.ClientError) -> None:
    assert type(lean_error) is type(boto_error)
    assert lean_error.operation_name == boto_error.operation_name
    assert lean_error.response["Error"] == boto_error.response["Error"] | (
        {"RequestId": lean_error.response["Error"]["RequestId"]} if "RequestId" in boto_error.response["Error"] else {}
    )
    lean_status = lean_error.response["ResponseMetadata"]["HTTPStatusCode"]
    assert lean_status == boto_error.response["ResponseMetadata"]["HTTPStatusCode"]
    assert str(lean_error).split("(")[0] == str(boto_error).split("(")[0]


def test_errors_are_boto3s(site: S3Site, bucket: str, unique_name: str) -> None:
    boto, lean = _clients(site)
    put = boto.put_object(Bucket=bucket, Key="there", Body=b"x")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_object", {"Bucket": bucket, "Key": "missing key"}),
        ("head_object", {"Bucket": bucket, "Key": "missing key"}),
        ("get_object", {"Bucket": f"{unique_name}-none", "Key": "k"}),
        ("list_objects_v2", {"Bucket": f"{unique_name}-none"}),
        ("head_object", {"Bucket": bucket, "Key": "there", "IfMatch": '"0123"'}),
        ("get_object", {"Bucket": bucket, "Key": "there", "IfMatch": '"0123"'}),
        ("copy_object", {"Bucket": bucket, "Key": "copy", "CopySource": {"Bucket": bucket, "Key": "missing"}}),
        ("upload_part", {"Bucket": bucket, "Key": "k", "UploadId": "nope", "PartNumber": 1, "Body": b"x"}),
        (
            "complete_multipart_upload",
            {
                "Bucket": bucket,
                "Key": "k",
                "UploadId": "nope",
                "MultipartUpload": {"Parts": [{"ETag": put["ETag"], "PartNumber": 1}]},
            },
        ),
    ]
    for method, arguments in calls:
        lean_error = _error(lean, method, arguments)
        boto_error = _error(boto, method, arguments)
        _same_error(lean_error, boto_error)


def test_rejected_credentials_are_boto3s_errors(rgw_site: S3Site, unique_name: str) -> None:
    rgw_site.client().create_bucket(Bucket=unique_name)
    for wrong in (rgw_site.with_keys(rgw_site.access_key, "wrong-secret"), rgw_site.with_keys("NOSUCHKEY", "x")):
        boto, lean = _clients(wrong, max_attempts=1)
        for method, arguments in (
            ("put_object", {"Bucket": unique_name, "Key": "k", "Body": b"x", "ContentMD5": _md5(b"x")}),
            ("list_objects_v2", {"Bucket": unique_name}),
            ("get_object", {"Bucket": unique_name, "Key": "k"}),
        ):
            _same_error(_error(lean, method, arguments), _error(boto, method, arguments))
    rgw_site.client().delete_bucket(Bucket=unique_name)


@pytest.fixture
def proxied(rgw_site: S3Site, unique_name: str) -> Iterator[tuple[FaultProxy, S3Site, str]]:
    rgw_site.client().create_bucket(Bucket=unique_name)
    rgw_site.client().put_object(Bucket=unique_name, Key="source key", Body=b"s" * 100)
    with FaultProxy(rgw_site.url) as proxy:
        yield proxy, S3Site(proxy.url, rgw_site.access_key, rgw_site.secret_key), unique_name


def test_faults_are_retried_as_boto3_retries_them(proxied: tuple[FaultProxy, S3Site, str]) -> None:
    proxy, site, bucket = proxied
    _, lean = _clients(site)
    data = b"payload"
    put = {"Bucket": bucket, "Key": "a key", "Body": data, "ContentMD5": _md5(data)}
    proxy.add(Fault(method="PUT", status=503, code="SlowDown", times=2))
    assert lean.put_object(**put)["ResponseMetadata"]["RetryAttempts"] == 2
    proxy.add(Fault(method="PUT", reset=True, times=2))
    assert lean.put_object(**put)["ResponseMetadata"]["RetryAttempts"] >= 1
    proxy.add(Fault(method="GET", status=500, times=1))
    assert lean.get_object(Bucket=bucket, Key="a key")["Body"].read() == data
    copy = {"Bucket": bucket, "Key": "copied", "CopySource": {"Bucket": bucket, "Key": "source key"}}
    proxy.add(Fault(method="PUT", status=200, code="InternalError", times=1))
    copied = lean.copy_object(**copy)
    assert copied["ResponseMetadata"]["RetryAttempts"] == 1 and copied["CopyObjectResult"]["ETag"]


def test_faults_that_last_fail_as_boto3_fails(proxied: tuple[FaultProxy, S3Site, str]) -> None:
    proxy, site, bucket = proxied
    boto, lean = _clients(site, max_attempts=2)
    copy = {"Bucket": bucket, "Key": "copied", "CopySource": {"Bucket": bucket, "Key": "source key"}}
    for fault, method, arguments in (
        (Fault(method="PUT", status=503, code="SlowDown"), "put_object", {"Bucket": bucket, "Key": "k", "Body": b"x"}),
        (Fault(method="PUT", status=200, code="InternalError"), "copy_object", copy),
        (Fault(method="HEAD", status=503, code="SlowDown"), "head_object", {"Bucket": bucket, "Key": "source key"}),
    ):
        proxy.clear()
        proxy.add(fault)
        lean_error = _error(lean, method, arguments)
        assert fault.hits == 2
        _same_error(lean_error, _error(boto, method, arguments))
        assert lean_error.response["ResponseMetadata"]["RetryAttempts"] == 1
    proxy.clear()
    proxy.add(Fault(method="GET", reset=True))
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        boto.get_object(Bucket=bucket, Key="source key")
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        lean.get_object(Bucket=bucket, Key="source key")


def test_requests_go_through_the_proxy_from_the_environment(rgw_site: S3Site, unique_name: str) -> None:
    rgw_site.client().create_bucket(Bucket=unique_name)
    with FaultProxy(rgw_site.url) as proxy, mock.patch.dict(os.environ, {"HTTP_PROXY": proxy.url, "NO_PROXY": ""}):
        _, lean = _clients(rgw_site)
        lean.put_object(Bucket=unique_name, Key="via proxy", Body=b"x", ContentMD5=_md5(b"x"))
        assert lean.get_object(Bucket=unique_name, Key="via proxy")["Body"].read() == b"x"
        assert proxy.requests == 2
    rgw_site.client().delete_object(Bucket=unique_name, Key="via proxy")
    rgw_site.client().delete_bucket(Bucket=unique_name)


class _RegionalServer(ThreadingHTTPServer):
    """Answers like S3 for a bucket in eu-west-1: a request signed for another region gets AWS's 400
    AuthorizationHeaderMalformed naming the right region; one signed for eu-west-1 gets the object."""

    signed_regions: list[str]


class _RegionalHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        region = self.headers["Authorization"].split("/")[2]
        assert isinstance(self.server, _RegionalServer)
        self.server.signed_regions.append(region)
        if region == "eu-west-1":
            body = b"regional"
            self.send_response(200)
            self.send_header("ETag", '"abc"')
        else:
            body = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AuthorizationHeaderMalformed</Code>"
                b"<Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message>"
                b"<Region>eu-west-1</Region><RequestId>1</RequestId></Error>"
            )
            self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_bucket_in_another_region_is_signed_again_for_it() -> None:
    server = _RegionalServer(("127.0.0.1", 0), _RegionalHandler)
    server.signed_regions = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        site = S3Site(f"http://127.0.0.1:{server.server_address[1]}", "AKID", "secret")
        _, lean = _clients(site)
        assert lean.get_object(Bucket="eu-bucket", Key="k")["Body"].read() == b"regional"
        assert lean.get_object(Bucket="eu-bucket", Key="k")["Body"].read() == b"regional"
        assert server.signed_regions == ["us-east-1", "eu-west-1", "eu-west-1"]  # the region is remembered
    finally:
        server.shutdown()
        server.server_close()


class _ClosingHandler(BaseHTTPRequestHandler):
    """Closes every connection after its answer without saying so, as a server whose keep-alive timed out."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.send_header("ETag", '"abc"')
        self.end_headers()
        self.close_connection = True


def test_connections_closed_by_the_server_are_replaced_without_a_retry() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ClosingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _, lean = _clients(S3Site(f"http://127.0.0.1:{server.server_address[1]}", "AKID", "secret"), max_attempts=1)
        for _ in range(3):
            head = lean.head_object(Bucket="bucket", Key="k")
            assert (head["ETag"], head["ResponseMetadata"]["RetryAttempts"]) == ('"abc"', 0)
    finally:
        server.shutdown()
        server.server_close()
