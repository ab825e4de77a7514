"""The cost of the distributed path: `dth s3 finder` + N `dth s3 worker` processes on SQS and DynamoDB (moto
server), against the embedded default (`dth s3 sync`, SQLite) on the same objects in radosgw.

Each run copies into a fresh bucket and is verified (every key and size) before its time counts. The finder
fills the queue first, then the workers drain it (started together with the finder, workers on a loaded machine
gave up before moto took the first message: `--exit-when-idle` counts from the start). The workers are started
with `--exit-when-idle 2`; those 2 idle seconds are taken off their time.
moto's SQS answers about 40 receive+delete per second on this machine (see the notes), so the figures
say what the orchestration costs here, not what SQS costs on AWS.

Because moto's own speed hides the client's cost in the wall time, the workers' CPU (user + system, from the
kernel's resource usage of each worker process, `os.wait4`) is reported too, per object: the CPU an ECS task
spends per object, which is what Fargate bills. A worker that idles on an empty queue for the same time is
measured first; its CPU (interpreter start, imports, polling) is taken off each worker's before dividing.

    python3 bench/distributed.py [--objects 300] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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


def cpu_of(process: subprocess.Popen[bytes]) -> float:
    """Wait for the child; its user + system CPU seconds (its own and its children's, as the kernel counts)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def run_embedded(site: S3Site, source: str, destination: str) -> tuple[float, float]:
    """(seconds, CPU seconds) of `dth s3 sync`."""
    with tempfile.TemporaryDirectory() as state:
        started = time.perf_counter()
        process = subprocess.Popen(
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
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cpu = cpu_of(process)
        if process.returncode:
            raise SystemExit(f"dth s3 sync failed: exit {process.returncode}")
        return time.perf_counter() - started, cpu


def run_distributed(
    site: S3Site,
    moto: MotoServer,
    source: str,
    destination: str,
    workers: int,
    *,
    finder: bool = True,
    profile: Path | None = None,
) -> tuple[float, list[float]]:
    """(seconds, each worker's CPU seconds) of a finder and `workers` worker processes (without the finder:
    workers idling on an empty queue). With `profile`, the first worker runs under a profiler of every thread
    (its CPU is then the profiler's too: not comparable)."""
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
    if finder:
        subprocess.run([sys.executable, "-m", "dth", "s3", "finder"], env=env, check=True, capture_output=True)
    command = ["s3", "worker", "--exit-when-idle", str(IDLE_SECONDS)]
    profiler = ["-m", "dth.devtools.thread_profile", str(profile)] if profile else ["-m", "dth"]
    processes = [
        subprocess.Popen(
            [sys.executable, *(profiler if n == 0 else ["-m", "dth"]), *command],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in range(workers)
    ]
    cpus = [cpu_of(process) for process in processes]
    return time.perf_counter() - started - IDLE_SECONDS, cpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument(
        "--profile",
        type=Path,
        help="also run one worker under a profiler of every thread, write its statistics to this file and print "
        "where its CPU went",
    )
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
        # A worker that finds nothing: interpreter start, imports, connecting, polling for the idle time.
        client.create_bucket(Bucket="dist-idle")
        _, idle_cpus = run_distributed(site, moto, "dist-source", "dist-idle", 1, finder=False)
        idle = idle_cpus[0]
        print(f"an idle worker ({IDLE_SECONDS:.0f} s on an empty queue): {idle:.2f} s CPU (start-up and polling)")
        header = f"{'run':<28} {'seconds':>8} {'objects/s':>10} {'vs embedded':>12} {'CPU s':>7} {'CPU ms/object':>14}"
        print(f"{header}  verified")
        client.create_bucket(Bucket="dist-embedded")
        embedded, embedded_cpu = run_embedded(site, "dist-source", "dist-embedded")
        ok = verify(client, "dist-source", "dist-embedded")
        per_object = 1000 * embedded_cpu / args.objects
        print(
            f"{'dth s3 sync (SQLite)':<28} {embedded:>8.2f} {args.objects / embedded:>10.0f} {'1.00x':>12} "
            f"{embedded_cpu:>7.2f} {per_object:>14.2f}  {ok}"
        )
        for workers in (int(w) for w in args.workers.split(",")):
            bucket = f"dist-{workers}w"
            client.create_bucket(Bucket=bucket)
            seconds, cpus = run_distributed(site, moto, "dist-source", bucket, workers)
            ok = verify(client, "dist-source", bucket)
            label = f"finder + {workers} worker process{'es' if workers > 1 else ''}"
            worker_cpu = sum(cpus)
            # What the objects cost: each worker's CPU less an idle worker's (the finder's CPU is not counted).
            per_object = 1000 * max(0.0, worker_cpu - idle * workers) / args.objects
            print(
                f"{label:<28} {seconds:>8.2f} {args.objects / seconds:>10.0f} {embedded / seconds:>11.2f}x "
                f"{worker_cpu:>7.2f} {per_object:>14.2f}  {ok}"
            )
        print(
            "CPU s: the sync's, or all workers' (not the finder's); CPU ms/object: that CPU per object, less an idle "
            "worker's CPU per worker process for the distributed runs"
        )
        if args.profile:
            client.create_bucket(Bucket="dist-profiled")
            run_distributed(site, moto, "dist-source", "dist-profiled", 1, profile=args.profile)
            print(f"\nwhere one worker's CPU went ({args.profile}; every thread, by own time):")
            pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
