"""The cost of the distributed path: `dth s3 finder` + N `dth s3 worker` processes on SQS and DynamoDB (moto
server), against the embedded default (`dth s3 sync`, SQLite) on the same objects in radosgw.

Each run copies into a fresh bucket and is verified (every key and size) before its time counts. The
workers are started with `--exit-when-idle 2`; those 2 idle seconds are taken off their time.
moto's SQS answers about 40 receive+delete per second on this machine (see the notes), so the figures
say what the orchestration costs here, not what SQS costs on AWS.

    python3 bench/distributed.py [--objects 300] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3

from dth.devtools.moto import MotoServer
from dth.devtools.radosgw import RadosGateway
from dth.devtools.sites import S3Site
from dth.state.dynamodb import create_table
from dth.state.sqs import create_queues

IDLE_SECONDS = 2.0


def spec(site: S3Site, source: str, destination: str) -> dict[str, Any]:
    return {
        "type": "S3",
        "source": {"type": "S3_Compatible", "endpoint": site.url, "bucket": source},
        "destination": {"type": "S3_Compatible", "endpoint": site.url, "bucket": destination},
        "options": {"workers": 16},
    }


def base_env(site: S3Site) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DTH_")) or k == "AWS_CA_BUNDLE"}
    env.update(AWS_ACCESS_KEY_ID=site.access_key, AWS_SECRET_ACCESS_KEY=site.secret_key, AWS_REGION="us-east-1")
    return env


def verify(client: Any, source: str, destination: str) -> bool:
    def listing(bucket: str) -> dict[str, int]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    return listing(source) == listing(destination)


def run_embedded(site: S3Site, source: str, destination: str) -> float:
    with tempfile.TemporaryDirectory() as state:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dth",
                "s3",
                "sync",
                f"s3://{source}",
                f"s3://{destination}",
                "--endpoint",
                site.url,
                "--workers",
                "16",
                "--state",
                f"{state}/s.db",
                "--output",
                "json",
            ],
            env=base_env(site),
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started


def run_distributed(site: S3Site, moto: MotoServer, source: str, destination: str, workers: int) -> float:
    session = boto3.Session("testing", "testing", region_name="us-east-1")
    name = f"bench-{destination}"
    queue_url, dlq_url = create_queues(session.client("sqs", endpoint_url=moto.endpoint_url), name)
    create_table(session.client("dynamodb", endpoint_url=moto.endpoint_url), name)
    env = base_env(site)
    env.update(
        DTH_TASK_NAME=name,
        DTH_TASK_SPEC=json.dumps(spec(site, source, destination)),
        DTH_QUEUE_URL=queue_url,
        DTH_DLQ_URL=dlq_url,
        DTH_TABLE_NAME=name,
        AWS_ENDPOINT_URL_SQS=moto.endpoint_url,
        AWS_ENDPOINT_URL_DYNAMODB=moto.endpoint_url,
    )
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "dth", "s3", "worker", "--exit-when-idle", str(IDLE_SECONDS)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    subprocess.run([sys.executable, "-m", "dth", "s3", "finder"], env=env, check=True, capture_output=True)
    for process in processes:
        process.wait(timeout=1800)
    return time.perf_counter() - started - IDLE_SECONDS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    with RadosGateway(endpoints=1) as gateway, MotoServer() as moto:
        site = S3Site(gateway.endpoint_urls[0], gateway.access_key, gateway.secret_key)
        client = site.client(max_pool_connections=32)
        client.create_bucket(Bucket="dist-source")
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda n: client.put_object(Bucket="dist-source", Key=f"k/{n:05d}", Body=os.urandom(4096)),
                    range(args.objects),
                )
            )
        print(
            f"distributed path vs embedded default: {args.objects} x 4 KiB on radosgw, SQS+DynamoDB on moto "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )
        print(f"{'run':<28} {'seconds':>8} {'objects/s':>10} {'vs embedded':>12}  verified")
        client.create_bucket(Bucket="dist-embedded")
        embedded = run_embedded(site, "dist-source", "dist-embedded")
        ok = verify(client, "dist-source", "dist-embedded")
        print(f"{'dth s3 sync (SQLite)':<28} {embedded:>8.2f} {args.objects / embedded:>10.0f} {'1.00x':>12}  {ok}")
        for workers in (int(w) for w in args.workers.split(",")):
            bucket = f"dist-{workers}w"
            client.create_bucket(Bucket=bucket)
            seconds = run_distributed(site, moto, "dist-source", bucket, workers)
            ok = verify(client, "dist-source", bucket)
            label = f"finder + {workers} worker process{'es' if workers > 1 else ''}"
            print(f"{label:<28} {seconds:>8.2f} {args.objects / seconds:>10.0f} {embedded / seconds:>11.2f}x  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
