"""`dth demo`: the main job end to end on a laptop. Starts a local S3 server (moto, or Ceph radosgw
where installed), fills a bucket with awkward keys and a multipart object, syncs it on the embedded
default, checks the copy, then syncs again to show that nothing is copied twice."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import botocore.config

from dth.cli import s3 as s3_cli
from dth.spec.load import parse_task_spec
from dth.spec.model import MiB, S3TaskSpec

SOURCE_BUCKET = "demo-source"
DESTINATION_BUCKET = "demo-destination"
ODD_KEYS = ["unicode/数据-ü.txt", "spaces/a key with spaces", "plus/a+b=c", "percent/100%", "query/what?", "hash/#1"]


@contextmanager
def _server(kind: str) -> Iterator[tuple[str, str, str]]:
    """(endpoint URL, access key, secret key) of a local S3 server for the demo's lifetime."""
    if kind == "radosgw":
        from dth.devtools.radosgw import RadosGateway

        with RadosGateway(endpoints=1) as gateway:
            yield gateway.endpoint_urls[0], gateway.access_key, gateway.secret_key
    else:
        from dth.devtools.moto import MotoServer

        with MotoServer() as server:
            yield server.endpoint_url, "demo", "demo-secret"


def _fill(client: object, objects: int) -> int:
    put = client.put_object  # type: ignore[attr-defined]
    total = 0
    for number in range(objects):
        body = os.urandom(1024 + number * 37 % 8192)
        put(Bucket=SOURCE_BUCKET, Key=f"logs/{number // 100:03d}/{number:05d}.log", Body=body, ContentType="text/plain")
        total += len(body)
    for key in ODD_KEYS:
        put(Bucket=SOURCE_BUCKET, Key=key, Body=key.encode(), Metadata={"origin": "demo"})
    put(Bucket=SOURCE_BUCKET, Key="empty-object", Body=b"")
    # A multipart object, uploaded in 8 MiB parts: its copy must carry the same multipart ETag.
    big = client.create_multipart_upload(Bucket=SOURCE_BUCKET, Key="video/big.bin")  # type: ignore[attr-defined]
    parts = []
    for number in range(1, 4):
        part = client.upload_part(  # type: ignore[attr-defined]
            Bucket=SOURCE_BUCKET,
            Key="video/big.bin",
            UploadId=big["UploadId"],
            PartNumber=number,
            Body=os.urandom(8 * MiB),
        )
        parts.append({"ETag": part["ETag"], "PartNumber": number})
    client.complete_multipart_upload(  # type: ignore[attr-defined]
        Bucket=SOURCE_BUCKET, Key="video/big.bin", UploadId=big["UploadId"], MultipartUpload={"Parts": parts}
    )
    return objects + len(ODD_KEYS) + 2


def _listing(client: object, bucket: str) -> dict[str, tuple[int, str]]:
    paginator = client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
    return {
        item["Key"]: (item["Size"], item["ETag"])
        for page in paginator.paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    }


def run_demo(objects: int = 300, server: str = "moto") -> int:
    with _server(server) as (endpoint, access_key, secret_key), tempfile.TemporaryDirectory() as state:
        os.environ.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client(
            "s3", endpoint_url=endpoint, config=botocore.config.Config(s3={"addressing_style": "path"})
        )
        for bucket in (SOURCE_BUCKET, DESTINATION_BUCKET):
            client.create_bucket(Bucket=bucket)
        count = _fill(client, objects)
        print(f"demo: {server} S3 at {endpoint}; filled s3://{SOURCE_BUCKET} with {count} objects")
        spec = parse_task_spec(
            {
                "type": "S3",
                "source": {"type": "S3_Compatible", "endpoint": endpoint, "bucket": SOURCE_BUCKET},
                "destination": {"type": "S3_Compatible", "endpoint": endpoint, "bucket": DESTINATION_BUCKET},
                "options": {"multipartThreshold": "8MiB", "chunkSize": "8MiB"},
            }
        )
        assert isinstance(spec, S3TaskSpec)
        args = argparse.Namespace(output="text", no_progress=False, state=Path(state) / "demo.sqlite")
        for attempt in ("first sync", "second sync (nothing to copy)"):
            print(f"demo: {attempt}: dth s3 sync s3://{SOURCE_BUCKET} s3://{DESTINATION_BUCKET} --endpoint {endpoint}")
            code = s3_cli.execute(spec, "demo", args)
            if code != s3_cli.EXIT_OK:
                return code
        source, destination = _listing(client, SOURCE_BUCKET), _listing(client, DESTINATION_BUCKET)
        if source != destination:
            missing = sorted(set(source) ^ set(destination))[:5]
            print(f"demo: FAILED: destination differs from source (e.g. {missing})")
            return s3_cli.EXIT_INCOMPLETE
        print(f"demo: verified: {len(destination)} objects with identical keys, sizes and ETags")
    return s3_cli.EXIT_OK
