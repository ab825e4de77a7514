"""The local test servers are real S3 services, and what they do differently from AWS.

Besides proving the fixtures work, the tests marked "quirk" pin down measured behaviour of
the radosgw (Ceph 16.2.15) and moto (5.2) in use here. If one fails after an upgrade, the
server changed: update the test and whatever in the engines works around the quirk.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dth.devtools.moto import MotoServer
from dth.devtools.ports import port_is_open
from dth.devtools.radosgw import RadosGateway
from dth.devtools.sites import S3Site

MiB = 1024 * 1024


def _error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _multipart_etag(parts: list[bytes]) -> str:
    digests = b"".join(hashlib.md5(part).digest() for part in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def _upload_two_parts(client: Any, bucket: str, key: str) -> list[bytes]:
    parts = [b"a" * (5 * MiB), b"b" * (5 * MiB)]
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = []
    for number, body in enumerate(parts, 1):
        result = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
        done.append({"PartNumber": number, "ETag": result["ETag"]})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done})
    return parts


# -- radosgw ---------------------------------------------------------------------------------


@pytest.mark.radosgw
def test_rgw_endpoints_serve_the_same_data(rgw_site: S3Site, rgw_site2: S3Site, unique_name: str) -> None:
    assert rgw_site.url != rgw_site2.url
    one, two = rgw_site.client(), rgw_site2.client()
    one.create_bucket(Bucket=unique_name)
    one.put_object(Bucket=unique_name, Key="hello.txt", Body=b"hello radosgw")
    assert two.get_object(Bucket=unique_name, Key="hello.txt")["Body"].read() == b"hello radosgw"
    assert unique_name in {b["Name"] for b in two.list_buckets()["Buckets"]}


@pytest.mark.radosgw
def test_rgw_multipart_upload_etag(rgw_site: S3Site, unique_name: str) -> None:
    client = rgw_site.client()
    client.create_bucket(Bucket=unique_name)
    parts = _upload_two_parts(client, unique_name, "big")
    head = client.head_object(Bucket=unique_name, Key="big")
    assert head["ContentLength"] == 10 * MiB
    assert head["ETag"].endswith('-2"')
    assert head["ETag"] == _multipart_etag(parts)


@pytest.mark.radosgw
def test_rgw_upload_part_copy_with_range(rgw_site: S3Site, unique_name: str) -> None:
    client = rgw_site.client()
    client.create_bucket(Bucket=unique_name)
    source = bytes(range(256)) * 4096  # 1 MiB
    client.put_object(Bucket=unique_name, Key="src", Body=source)
    upload_id = client.create_multipart_upload(Bucket=unique_name, Key="dst")["UploadId"]
    result = client.upload_part_copy(
        Bucket=unique_name,
        Key="dst",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": unique_name, "Key": "src"},
        CopySourceRange="bytes=1000-200999",
    )
    client.complete_multipart_upload(
        Bucket=unique_name,
        Key="dst",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": result["CopyPartResult"]["ETag"]}]},
    )
    assert client.get_object(Bucket=unique_name, Key="dst")["Body"].read() == source[1000:201000]


@pytest.mark.radosgw
def test_rgw_rejects_wrong_credentials(rgw_site: S3Site, unique_name: str) -> None:
    rgw_site.client().create_bucket(Bucket=unique_name)
    with pytest.raises(ClientError) as wrong_secret:
        rgw_site.with_keys(rgw_site.access_key, "not-the-secret").client(max_attempts=1).list_objects_v2(
            Bucket=unique_name
        )
    assert _error_code(wrong_secret) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as unknown_key:
        rgw_site.with_keys("NOSUCHACCESSKEY", "whatever").client(max_attempts=1).list_objects_v2(Bucket=unique_name)
    assert _error_code(unknown_key) == "InvalidAccessKeyId"


@pytest.mark.radosgw
def test_rgw_second_user_is_someone_else(radosgw: RadosGateway, rgw_site: S3Site, unique_name: str) -> None:
    rgw_site.client().create_bucket(Bucket=unique_name)
    radosgw.create_user(f"user-{unique_name}", f"AK{unique_name}", f"SK{unique_name}")
    radosgw.create_user(f"user-{unique_name}", f"AK{unique_name}", f"SK{unique_name}")  # idempotent
    other = rgw_site.with_keys(f"AK{unique_name}", f"SK{unique_name}").client(max_attempts=1)
    assert other.list_buckets()["Buckets"] == []
    with pytest.raises(ClientError) as denied:
        other.list_objects_v2(Bucket=unique_name)
    assert _error_code(denied) == "AccessDenied"


@pytest.mark.radosgw
def test_rgw_start_and_stop_leave_nothing_behind(radosgw: RadosGateway, tmp_path: Path) -> None:
    # A second cluster beside the session's one (the fixture only checks the binaries exist).
    workdir = tmp_path / "cluster"
    with RadosGateway(workdir, endpoints=1, memstore_bytes=512 * MiB) as gateway:
        assert len(gateway.endpoint_urls) == 1
        assert gateway.running
        port = int(gateway.endpoint_urls[0].rsplit(":", 1)[1])
        site = S3Site(gateway.endpoint_urls[0], gateway.access_key, gateway.secret_key)
        site.client().create_bucket(Bucket="scratch")
        assert (workdir / "ceph.conf").is_file()
    assert not gateway.running
    assert not port_is_open(port)
    assert workdir.is_dir()  # a workdir given by the caller is kept, with the logs


# -- radosgw quirks (measured) ---------------------------------------------------------------


@pytest.mark.radosgw
def test_quirk_rgw_ignores_part_number(rgw_site: S3Site, unique_name: str) -> None:
    """radosgw 16 ignores ?partNumber= on HEAD and GET: the whole object, no PartsCount."""
    client = rgw_site.client()
    client.create_bucket(Bucket=unique_name)
    _upload_two_parts(client, unique_name, "big")
    head = client.head_object(Bucket=unique_name, Key="big", PartNumber=1)
    assert head["ContentLength"] == 10 * MiB
    assert "PartsCount" not in head


@pytest.mark.radosgw
def test_quirk_rgw_lists_keys_in_utf8_byte_order(rgw_site: S3Site, unique_name: str) -> None:
    client = rgw_site.client()
    client.create_bucket(Bucket=unique_name)
    keys = ["a", "B", "z", "~", "\u00e9", "\u00e4", "\u4e2d", "\U0001f600", "\uff21", "\ufffd", "a/b", "a-b"]
    for key in keys:
        client.put_object(Bucket=unique_name, Key=key, Body=b"")
    listed: list[str] = []
    kwargs: dict[str, Any] = {"Bucket": unique_name, "MaxKeys": 5}
    while True:
        page = client.list_objects_v2(**kwargs)
        listed += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))
    assert listed != sorted(keys, key=lambda k: k.encode("utf-16-be"))  # U+FF21 vs U+1F600


ODD_KEYS = [
    "plus+sign",
    "per%cent",
    "a%41b",
    "q?mark",
    "hash#tag",
    "sp ace",
    "two  spaces ",
    "amp&x=y",
    "uni \u00e9 \u4e2d",
    "back\\slash",
    "a//b",
    "k" * 1024,
]


@pytest.mark.radosgw
def test_quirk_rgw_odd_keys_and_copy_object(rgw_site: S3Site, unique_name: str) -> None:
    client = rgw_site.client()
    client.create_bucket(Bucket=unique_name)
    for key in ODD_KEYS:
        client.put_object(Bucket=unique_name, Key=key, Body=key.encode())
        copy = key[:-4] + ".cpy" if len(key) == 1024 else key + ".cpy"
        client.copy_object(Bucket=unique_name, Key=copy, CopySource={"Bucket": unique_name, "Key": key})
        assert client.get_object(Bucket=unique_name, Key=copy)["Body"].read() == key.encode()
    with pytest.raises(ClientError) as too_long:
        client.put_object(Bucket=unique_name, Key="k" * 1025, Body=b"")
    assert _error_code(too_long) == "InvalidObjectName"


@pytest.mark.radosgw
def test_quirk_rgw_upload_part_copy_decodes_copy_source_twice(rgw_site: S3Site, unique_name: str) -> None:
    """UploadPartCopy URL-decodes x-amz-copy-source twice (CopyObject once).

    With the standard encoding a source key holding "%XX" silently names another key
    ("a%41b" reads "aAb") and a lone "%" gives NoSuchKey. Keys without "%" are unaffected.
    """
    client = rgw_site.client()
    client.create_bucket(Bucket=unique_name)
    for key in ("a%41b", "aAb", "per%cent"):
        client.put_object(Bucket=unique_name, Key=key, Body=key.encode().ljust(8, b"."))

    def part_copy(key: str) -> bytes:
        upload_id = client.create_multipart_upload(Bucket=unique_name, Key="dst")["UploadId"]
        try:
            result = client.upload_part_copy(
                Bucket=unique_name,
                Key="dst",
                UploadId=upload_id,
                PartNumber=1,
                CopySource={"Bucket": unique_name, "Key": key},
                CopySourceRange="bytes=0-7",
            )
            etag = result["CopyPartResult"]["ETag"]
            client.complete_multipart_upload(
                Bucket=unique_name,
                Key="dst",
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
            )
        except ClientError:
            client.abort_multipart_upload(Bucket=unique_name, Key="dst", UploadId=upload_id)
            raise
        body: bytes = client.get_object(Bucket=unique_name, Key="dst")["Body"].read()
        return body

    assert part_copy("a%41b") == b"aAb....."  # the wrong object
    with pytest.raises(ClientError) as missing:
        part_copy("per%cent")
    assert _error_code(missing) == "NoSuchKey"
    # Encoding the key once more (boto3 encodes the dict's key, so pass it pre-encoded) works here.
    assert part_copy("a%2541b") == b"a%41b..."
    assert part_copy("per%25cent") == b"per%cent"


# -- moto ------------------------------------------------------------------------------------


def test_moto_bucket_put_list(moto_site: S3Site, unique_name: str) -> None:
    client = moto_site.client()
    client.create_bucket(Bucket=unique_name)
    for key in ("b", "a", "c/d"):
        client.put_object(Bucket=unique_name, Key=key, Body=key.encode())
    listing = client.list_objects_v2(Bucket=unique_name)
    assert [o["Key"] for o in listing["Contents"]] == ["a", "b", "c/d"]
    assert client.get_object(Bucket=unique_name, Key="c/d")["Body"].read() == b"c/d"


def test_quirk_moto_part_number(moto_site: S3Site, unique_name: str) -> None:
    """moto answers HEAD ?partNumber= like AWS (part size, PartsCount); GET ignores it."""
    client = moto_site.client()
    client.create_bucket(Bucket=unique_name)
    parts = _upload_two_parts(client, unique_name, "big")
    head = client.head_object(Bucket=unique_name, Key="big", PartNumber=1)
    assert head["ContentLength"] == len(parts[0])
    assert head["PartsCount"] == 2
    assert client.head_object(Bucket=unique_name, Key="big")["ETag"] == _multipart_etag(parts)
    assert client.get_object(Bucket=unique_name, Key="big", PartNumber=1)["ContentLength"] == 10 * MiB


def test_moto_reset_and_stop(moto_server: MotoServer) -> None:
    # A second server beside the session's one, which other tests share and must not reset.
    with MotoServer() as server:
        site = S3Site(server.endpoint_url, server.access_key, server.secret_key)
        site.client().create_bucket(Bucket="before-reset")
        server.reset()
        assert site.client().list_buckets()["Buckets"] == []
        port = server.port
    assert not server.running
    assert not port_is_open(port)


def test_moto_reads_of_a_stack_being_created_do_not_build_it_twice(moto_server: MotoServer) -> None:
    """moto builds a stack's resources lazily, so a DescribeStacks racing CreateStack used to build some twice
    ("log group already exists", returned as the describe's answer and the stack's failure). The launcher's
    application takes CloudFormation requests one at a time."""
    from dth.devtools.stacks import LocalStacks
    from dth.spec.cfn import PluginSettings, s3_stack_parameters, template_path
    from dth.spec.model import S3TaskSpec

    stacks = LocalStacks(moto_server.endpoint_url)
    network = stacks.network("race")
    settings = PluginSettings(image="dth:test", subnets=network.subnets, security_groups=network.security_groups)
    spec = S3TaskSpec.model_validate(
        {"type": "S3", "source": {"bucket": "race-a"}, "destination": {"bucket": "race-b"}}
    )
    errors: list[BaseException] = []
    names = [f"race-{n}" for n in range(4)]

    def create_all() -> None:
        try:
            for name in names:
                stacks.create(name, template_path("s3-plugin.yaml"), s3_stack_parameters(name, spec, settings))
        except BaseException as error:
            errors.append(error)

    creating = threading.Thread(target=create_all)
    creating.start()
    reader = stacks.client("cloudformation")
    while creating.is_alive():
        try:
            reader.describe_stacks()
        except Exception as error:
            errors.append(error)
    creating.join()
    assert errors == []
    for name in names:
        assert stacks.describe(name)["StackStatus"] == "CREATE_COMPLETE"
