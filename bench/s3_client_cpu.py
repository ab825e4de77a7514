#!/usr/bin/env python3
"""Client CPU per S3 request: the engine's boto3 client (dth.s3.sides, DTH_S3_CLIENT=boto3) against the lean
client (dth.s3.lean), one thread, on a local radosgw. CPU is this process's (time.process_time), so the
server's share is left out; wall time is shown for information. A report, not a test.

    python3 bench/s3_client_cpu.py [--requests 500]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import boto3

from dth.devtools.radosgw import RadosGateway
from dth.s3.sides import CLIENT_SWITCH, connect
from dth.spec.model import S3Location

BUCKET = "cpu-bench"


def _client(gateway: RadosGateway, choice: str) -> Any:
    session = boto3.Session(
        aws_access_key_id=gateway.access_key, aws_secret_access_key=gateway.secret_key, region_name="us-east-1"
    )
    location = S3Location.model_validate(
        {"type": "S3_Compatible", "endpoint": gateway.endpoint_urls[0], "bucket": BUCKET}
    )
    with mock.patch.dict(os.environ, {CLIENT_SWITCH: choice}):
        return connect("destination", location, session=session).client


def _measure(call: Callable[[int], Any], count: int) -> tuple[float, float]:
    call(0)  # connections, endpoint resolution
    cpu, wall = time.process_time(), time.perf_counter()
    for number in range(count):
        call(number)
    return (time.process_time() - cpu) / count * 1000, (time.perf_counter() - wall) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions of the lean calls")
    arguments = parser.parse_args()
    count = arguments.requests
    profiler = cProfile.Profile() if arguments.profile else None
    data = os.urandom(4096)
    md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
    with tempfile.TemporaryDirectory() as workdir:
        gateway = RadosGateway(Path(workdir) / "radosgw", endpoints=1, memstore_bytes=512 * 1024**2)
        gateway.start(timeout=120)
        try:
            setup = _client(gateway, "boto3")
            setup.create_bucket(Bucket=BUCKET)
            for number in range(1000):
                setup.put_object(Bucket=BUCKET, Key=f"list/{number:05d} key", Body=b"x")
            setup.put_object(Bucket=BUCKET, Key="source", Body=data)
            rows: dict[str, dict[str, tuple[float, float]]] = {}
            for choice in ("boto3", "lean"):
                client = _client(gateway, choice)
                calls: dict[str, Callable[[int], Any]] = {
                    "HeadObject": lambda n, c=client: c.head_object(Bucket=BUCKET, Key="source"),
                    "GetObject 4 KiB": lambda n, c=client: c.get_object(Bucket=BUCKET, Key="source")["Body"].read(),
                    "PutObject 4 KiB": lambda n, c=client, t=choice: c.put_object(
                        Bucket=BUCKET, Key=f"put/{t}/{n}", Body=data, ContentMD5=md5
                    ),
                    "CopyObject": lambda n, c=client, t=choice: c.copy_object(
                        Bucket=BUCKET, Key=f"copy/{t}/{n}", CopySource={"Bucket": BUCKET, "Key": "source"}
                    ),
                    "ListObjectsV2 page of 1,000": lambda n, c=client: c.list_objects_v2(Bucket=BUCKET, Prefix="list/"),
                }
                if profiler and choice == "lean":
                    profiler.enable()
                rows[choice] = {
                    name: _measure(call, max(20, count // 20) if name.startswith("List") else count)
                    for name, call in calls.items()
                }
                if profiler:
                    profiler.disable()
        finally:
            gateway.stop()
    print(f"{'request':30} {'boto3 CPU ms':>13} {'lean CPU ms':>12} {'ratio':>6}   wall ms boto3 / lean")
    for name in rows["boto3"]:
        (boto_cpu, boto_wall), (lean_cpu, lean_wall) = rows["boto3"][name], rows["lean"][name]
        print(
            f"{name:30} {boto_cpu:13.3f} {lean_cpu:12.3f} {boto_cpu / lean_cpu:5.1f}x   {boto_wall:.2f} / {lean_wall:.2f}"
        )
    print(f"load average: {os.getloadavg()}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
