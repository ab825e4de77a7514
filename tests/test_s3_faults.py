"""A server that returns errors: a fault-injecting proxy in front of radosgw (500s, 503 SlowDown,
connection resets, slow answers). Transient faults are retried away; permanent ones end in a clear,
exact report, and nothing already at the destination is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dth.devtools.faultproxy import Fault, FaultProxy
from dth.devtools.sites import S3Site


@pytest.fixture
def proxy(rgw_site: S3Site) -> Iterator[FaultProxy]:
    with FaultProxy(rgw_site.url) as running:
        yield running


def sync(site: S3Site, state: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    env.update(AWS_ACCESS_KEY_ID=site.access_key, AWS_SECRET_ACCESS_KEY=site.secret_key)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dth",
            "s3",
            "sync",
            *args,
            "--output",
            "json",
            "--state",
            str(state),
            "--max-retries",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    return done.returncode, report, done.stderr


def fill(site: S3Site, bucket: str, keys: list[str]) -> Any:
    client = site.client()
    client.create_bucket(Bucket=bucket)
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode() * 100)
    return client


def test_transient_errors_resets_and_slow_answers_are_retried_to_success(
    rgw_site: S3Site, proxy: FaultProxy, unique_name: str, tmp_path: Path
) -> None:
    keys = [f"obj-{n:02d}" for n in range(20)]
    client = fill(rgw_site, f"{unique_name}-a", keys)
    client.create_bucket(Bucket=f"{unique_name}-b")
    proxy.add(Fault(method="PUT", code="SlowDown", status=503, times=6))
    proxy.add(Fault(method="PUT", reset=True, times=3))
    proxy.add(Fault(method="PUT", path_contains="obj-05", delay=1.5, times=1))
    with FaultProxy(rgw_site.url) as source_proxy:
        source_proxy.add(Fault(method="GET", path_contains="obj-1", status=500, times=4))
        source_proxy.add(Fault(method="GET", path_contains="obj-0", reset=True, times=2))
        code, report, stderr = sync(
            rgw_site,
            tmp_path / "s.db",
            f"s3://{unique_name}-a",
            f"s3://{unique_name}-b",
            "--source-endpoint",
            source_proxy.url,
            "--dest-endpoint",
            proxy.url,
        )
    assert all(f.hits == f.times for f in source_proxy.faults), [(f.code, f.hits) for f in source_proxy.faults]
    assert code == 0, stderr
    assert report["counters"]["copied"] == 20
    assert report["counters"]["failed"] == 0
    copied = {
        o["Key"]: client.get_object(Bucket=f"{unique_name}-b", Key=o["Key"])["Body"].read()
        for o in client.list_objects_v2(Bucket=f"{unique_name}-b")["Contents"]
    }
    assert copied == {key: key.encode() * 100 for key in keys}
    assert all(f.hits == f.times for f in proxy.faults), [(f.code, f.hits) for f in proxy.faults]


def test_an_object_the_server_always_refuses_is_reported_and_the_rest_arrive(
    rgw_site: S3Site, proxy: FaultProxy, unique_name: str, tmp_path: Path
) -> None:
    keys = ["good-1", "poison-pill", "good-2"]
    client = fill(rgw_site, f"{unique_name}-a", keys)
    client.create_bucket(Bucket=f"{unique_name}-b")
    proxy.add(Fault(method="PUT", path_contains="poison", status=500, code="InternalError"))
    code, report, _ = sync(
        rgw_site,
        tmp_path / "s.db",
        f"s3://{unique_name}-a",
        f"s3://{unique_name}-b",
        "--source-endpoint",
        rgw_site.url,
        "--dest-endpoint",
        proxy.url,
    )
    assert code == 1
    assert report["counters"] == {**report["counters"], "found": 3, "copied": 2, "failed": 1}
    assert [f["key"] for f in report["failed"]] == ["poison-pill"]
    assert report["failed"][0]["reason"].startswith("InternalError")
    assert report["failed"][0]["attempts"] == 3  # the first try and --max-retries 2
    assert sorted(o["Key"] for o in client.list_objects_v2(Bucket=f"{unique_name}-b")["Contents"]) == [
        "good-1",
        "good-2",
    ]


def test_a_failing_source_listing_deletes_nothing_in_mirror_mode(
    rgw_site: S3Site, proxy: FaultProxy, unique_name: str, tmp_path: Path
) -> None:
    client = fill(rgw_site, f"{unique_name}-a", [f"dir-{n}/x" for n in range(5)])
    client.create_bucket(Bucket=f"{unique_name}-b")
    for n in range(5):
        client.put_object(Bucket=f"{unique_name}-b", Key=f"dir-{n}/x", Body=b"old")
        client.put_object(Bucket=f"{unique_name}-b", Key=f"dir-{n}/only-here", Body=b"keep unless mirrored")
    # Listings of one source prefix fail every time: the scan cannot know what the source holds there.
    proxy.add(Fault(method="GET", path_contains=f"{unique_name}-a", query_contains="prefix=dir-3", status=500))
    code, report, stderr = sync(
        rgw_site,
        tmp_path / "s.db",
        f"s3://{unique_name}-a",
        f"s3://{unique_name}-b",
        "--delete",
        "--source-endpoint",
        proxy.url,
        "--dest-endpoint",
        rgw_site.url,
    )
    assert code == 1
    assert "source listing failed: InternalError" in report["error"], stderr
    assert report["counters"]["deleted"] == 0
    remaining = {o["Key"] for o in client.list_objects_v2(Bucket=f"{unique_name}-b")["Contents"]}
    assert {f"dir-{n}/only-here" for n in range(5)} <= remaining


@pytest.mark.parametrize("list_depth", ["0", "1"])
def test_a_truncated_listing_page_without_a_continuation_token_fails_the_sync(
    moto_site: S3Site, unique_name: str, tmp_path: Path, list_depth: str
) -> None:
    """A page that says more keys follow but gives no token to fetch them must not end the listing: the keys
    after it would be taken for absent (skipped, or deleted in mirror mode) and the run would report success."""
    client = fill(moto_site, f"{unique_name}-a", [f"dir-{n}/x" for n in range(5)])
    client.create_bucket(Bucket=f"{unique_name}-b")
    for n in range(5):
        client.put_object(Bucket=f"{unique_name}-b", Key=f"dir-{n}/only-here", Body=b"keep unless mirrored")
    with FaultProxy(moto_site.url) as source_proxy:
        # Only the listing pages of one prefix lie (flat: the whole bucket's single page).
        truncated = Fault(
            method="GET",
            path_contains=f"{unique_name}-a",
            query_contains="list-type=2" if list_depth == "0" else "prefix=dir-3",
            rewrite=("<IsTruncated>false</IsTruncated>", "<IsTruncated>true</IsTruncated>"),
        )
        source_proxy.add(truncated)
        code, report, stderr = sync(
            moto_site,
            tmp_path / "s.db",
            f"s3://{unique_name}-a",
            f"s3://{unique_name}-b",
            "--delete",
            "--list-depth",
            list_depth,
            "--source-endpoint",
            source_proxy.url,
            "--dest-endpoint",
            moto_site.url,
        )
    assert truncated.hits >= 1
    assert code == 1, stderr
    expected_prefix = "" if list_depth == "0" else "dir-3/"
    assert f"truncated listing of s3://{unique_name}-a/{expected_prefix}" in report["error"], report
    assert report["counters"]["deleted"] == 0
    remaining = {o["Key"] for o in client.list_objects_v2(Bucket=f"{unique_name}-b")["Contents"]}
    assert {f"dir-{n}/only-here" for n in range(5)} <= remaining
