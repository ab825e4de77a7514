"""A server that returns errors: a fault-injecting proxy in front of radosgw (500s, 503 SlowDown,
connection resets, slow answers). Transient faults are retried away; permanent ones end in a clear,
exact report, and nothing already at the destination is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dth.devtools.faultproxy import Fault, FaultProxy
from dth.devtools.sites import S3Site
from dth.devtools.waiting import wait_for

MiB = 1024 * 1024


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


def test_source_bytes_corrupted_in_transit_never_land(
    rgw_site: S3Site, proxy: FaultProxy, unique_name: str, tmp_path: Path
) -> None:
    """A streamed copy sends the source's own MD5 (its ETag) as Content-MD5 instead of hashing what it read:
    bytes changed on the way are refused by the destination, and retried from a fresh read."""
    keys = ["flaky", "broken", "fine"]
    client = fill(rgw_site, f"{unique_name}-a", keys)
    client.create_bucket(Bucket=f"{unique_name}-b")
    # The body of "flaky" is changed once, that of "broken" on every read (same length, other bytes).
    proxy.add(Fault(method="GET", path_contains="flaky", rewrite=("flaky", "FLAKY"), times=1))
    proxy.add(Fault(method="GET", path_contains="broken", rewrite=("broken", "BROKEN")))
    code, report, _ = sync(
        rgw_site,
        tmp_path / "s.db",
        f"s3://{unique_name}-a",
        f"s3://{unique_name}-b",
        "--source-endpoint",
        proxy.url,
        "--dest-endpoint",
        rgw_site.url,
    )
    assert code == 1
    assert [f["key"] for f in report["failed"]] == ["broken"]
    copied = {
        o["Key"]: client.get_object(Bucket=f"{unique_name}-b", Key=o["Key"])["Body"].read()
        for o in client.list_objects_v2(Bucket=f"{unique_name}-b")["Contents"]
    }
    assert copied == {"flaky": b"flaky" * 100, "fine": b"fine" * 100}


def test_parts_changed_in_transit_never_complete_an_upload(moto_site: S3Site, unique_name: str, tmp_path: Path) -> None:
    """Parts of a multipart source copied in its own layout are sent without an MD5 of their own (on the lean
    client: unsigned, no Content-MD5); their ETags must add up to the source's ETag before the upload is
    completed, so bytes changed on the way are caught there, and the object is copied again. On moto, which
    tells a part's size (radosgw does not: its multipart sources are copied in a guessed layout, part MD5s
    and all)."""
    client = moto_site.client()
    client.create_bucket(Bucket=f"{unique_name}-a")
    client.create_bucket(Bucket=f"{unique_name}-b")
    for key in ("flaky", "broken"):
        upload = client.create_multipart_upload(Bucket=f"{unique_name}-a", Key=key)["UploadId"]
        parts = []
        for number in (1, 2):
            body = key.encode() * (5 * MiB // len(key) + 1)
            answer = client.upload_part(
                Bucket=f"{unique_name}-a", Key=key, UploadId=upload, PartNumber=number, Body=body
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})
        client.complete_multipart_upload(
            Bucket=f"{unique_name}-a", Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )
    with FaultProxy(moto_site.url) as source, FaultProxy(moto_site.url, record=True) as destination:
        # The first read of "flaky" is changed once; every read of "broken" is.
        source.add(Fault(method="GET", path_contains="flaky", rewrite=("flaky", "FLAKY"), times=1))
        source.add(Fault(method="GET", path_contains="broken", rewrite=("broken", "BROKEN")))
        code, report, _ = sync(
            moto_site,
            tmp_path / "s.db",
            f"s3://{unique_name}-a",
            f"s3://{unique_name}-b",
            "--source-endpoint",
            source.url,
            "--dest-endpoint",
            destination.url,
        )
        part_uploads = [r for r in destination.recorded if r.method == "PUT" and "partNumber=" in r.query]
    assert code == 1
    assert [f["key"] for f in report["failed"]] == ["broken"]
    assert client.list_objects_v2(Bucket=f"{unique_name}-b").get("KeyCount") == 1
    copied = client.get_object(Bucket=f"{unique_name}-b", Key="flaky")
    assert copied["ETag"] == client.head_object(Bucket=f"{unique_name}-a", Key="flaky")["ETag"]
    assert copied["Body"].read() == b"flaky" * (5 * MiB // 5 + 1) * 2
    assert not client.list_multipart_uploads(Bucket=f"{unique_name}-b").get("Uploads")
    assert part_uploads and all(5 * MiB < len(r.body) < 6 * MiB for r in part_uploads)  # the source's layout
    if os.environ.get("DTH_S3_CLIENT", "lean") == "lean":
        sent = [{name.lower(): value for name, value in r.headers.items()} for r in part_uploads]
        assert all("content-md5" not in headers for headers in sent)
        assert all(headers.get("x-amz-content-sha256") == "UNSIGNED-PAYLOAD" for headers in sent)


def _multipart_source(client: Any, bucket: str, key: str, part_size: int, parts: int) -> bytes:
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    pattern = key.encode() * (part_size // len(key) + 1)
    done = []
    for number in range(1, parts + 1):
        answer = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=pattern[:part_size]
        )
        done.append({"ETag": answer["ETag"], "PartNumber": number})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})
    return pattern[:part_size] * parts


def test_parts_in_a_guessed_layout_are_checked_and_copied_again_hashed_when_they_do_not_add_up(
    rgw_site: S3Site, proxy: FaultProxy, unique_name: str, tmp_path: Path
) -> None:
    """radosgw cannot tell a part's size: its multipart sources are copied in a guessed layout (aws-cli's 8 MiB
    parts here). Streamed unhashed, the parts must add up to the source's ETag; where they do not (a wrong
    guess, or bytes changed on the way) the object is copied once more with every part hashed."""
    client = rgw_site.client()
    client.create_bucket(Bucket=f"{unique_name}-a")
    client.create_bucket(Bucket=f"{unique_name}-b")
    right = _multipart_source(client, f"{unique_name}-a", "right", 8 * MiB, 2)  # the guess: 8 MiB parts
    wrong = _multipart_source(client, f"{unique_name}-a", "wrong", 6 * MiB, 2)  # guessed as 8 MiB too
    proxy.add(Fault(method="GET", path_contains="right", rewrite=("right", "RIGHT"), times=1))
    with FaultProxy(rgw_site.url, record=True) as destination:
        code, report, stderr = sync(
            rgw_site,
            tmp_path / "s.db",
            f"s3://{unique_name}-a",
            f"s3://{unique_name}-b",
            "--source-endpoint",
            proxy.url,
            "--dest-endpoint",
            destination.url,
        )
        part_uploads = [r for r in destination.recorded if r.method == "PUT" and "partNumber=" in r.query]
    assert code == 0, stderr
    assert report["counters"]["copied"] == 2
    for key, content in (("right", right), ("wrong", wrong)):
        assert client.get_object(Bucket=f"{unique_name}-b", Key=key)["Body"].read() == content, key
    assert not client.list_multipart_uploads(Bucket=f"{unique_name}-b").get("Uploads")
    if os.environ.get("DTH_S3_CLIENT", "lean") == "lean":
        hashed = {
            (r.path.rsplit("/", 1)[-1], "content-md5" in {name.lower() for name in r.headers}) for r in part_uploads
        }
        # Each object: first unhashed parts that did not add up, then hashed ones.
        assert hashed == {("right", False), ("right", True), ("wrong", False), ("wrong", True)}


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


def stored_uploads(client: Any, bucket: str) -> dict[str, int]:
    """The multipart uploads in progress in the bucket: upload id -> bytes of parts stored."""
    return {
        upload["UploadId"]: sum(
            part["Size"]
            for part in client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get(
                "Parts", []
            )
        )
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    }


@dataclass
class KilledSync:
    client: Any
    src: str
    dst: str
    bodies: dict[str, bytes]
    foreign: str  # an upload another tool started under the destination prefix
    arguments: list[str]


def kill_mid_multipart(site: S3Site, proxy: FaultProxy, name: str, state: Path, *flags: str) -> KilledSync:
    """A `dth s3 sync` of three 20 MiB objects (4 parts each, slowed down) killed with SIGKILL mid-copy."""
    src, dst = f"{name}-a", f"{name}-b"
    bodies = {f"big-{n}.bin": os.urandom(20 * MiB) for n in range(3)}
    client = fill(site, src, [])
    for key, body in bodies.items():
        client.put_object(Bucket=src, Key=key, Body=body)
    client.create_bucket(Bucket=dst)
    foreign = client.create_multipart_upload(Bucket=dst, Key="another-tool.bin")["UploadId"]
    arguments = [f"s3://{src}", f"s3://{dst}", "--multipart-threshold", "5MiB", "--chunk-size", "5MiB"]
    arguments += ["--workers", "3", "--concurrency", "3", "--source-endpoint", site.url, "--dest-endpoint", proxy.url]
    arguments += flags
    parts = proxy.add(Fault(method="PUT", query_contains="partNumber", delay=0.5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    env.update(AWS_ACCESS_KEY_ID=site.access_key, AWS_SECRET_ACCESS_KEY=site.secret_key)
    killed = subprocess.Popen(
        [sys.executable, "-m", "dth", "s3", "sync", *arguments, "--state", str(state)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def under_way() -> bool:
        uploads = stored_uploads(client, dst)
        return len(uploads) == 4 and sum(uploads.values()) > 0  # the foreign one and ours, some parts stored

    wait_for(under_way, what="every object's upload to have started and parts to be stored", interval=0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    left = stored_uploads(client, dst)
    assert len(left) == 4 and sum(left.values()) > 0, left  # what the kill leaves: uploads with stored parts
    assert parts.hits < 12  # killed mid-copy
    proxy.clear()
    return KilledSync(client, src, dst, bodies, foreign, arguments)


@pytest.mark.parametrize("giant", [False, True], ids=["multipart", "giant"])
def test_a_sync_killed_mid_multipart_resumes_its_uploads_when_run_again(
    rgw_site: S3Site, proxy: FaultProxy, unique_name: str, tmp_path: Path, giant: bool
) -> None:
    """SIGKILL leaves the uploads it started, with their parts: the next run resumes them (ListParts: the
    stored parts are not sent again), whether one worker copies the parts or every worker takes a share (giant
    objects); another tool's upload under the prefix is left alone."""
    flags = ["--giant-file-threshold", "8MiB"] if giant else []
    killed = kill_mid_multipart(rgw_site, proxy, unique_name, tmp_path / "s.db", *flags)
    counted = proxy.add(Fault(method="PUT", query_contains="partNumber", delay=0.01))
    code, report, stderr = sync(rgw_site, tmp_path / "s.db", *killed.arguments)
    assert code == 0, stderr
    assert report["counters"]["copied"] == 3
    assert list(stored_uploads(killed.client, killed.dst)) == [killed.foreign]
    assert {key: killed.client.get_object(Bucket=killed.dst, Key=key)["Body"].read() for key in killed.bodies} == (
        killed.bodies
    )
    assert counted.hits < 12  # 3 x 4 parts: the parts stored before the kill were not sent again


@pytest.mark.parametrize("why", ["--abort-stale-uploads", "the sources changed"])
def test_uploads_left_by_a_killed_sync_that_cannot_be_resumed_are_aborted(
    rgw_site: S3Site, proxy: FaultProxy, unique_name: str, tmp_path: Path, why: str
) -> None:
    killed = kill_mid_multipart(rgw_site, proxy, unique_name, tmp_path / "s.db")
    flags = [why] if why.startswith("--") else []
    if not flags:
        for key in killed.bodies:
            killed.bodies[key] = os.urandom(20 * MiB)
            killed.client.put_object(Bucket=killed.src, Key=key, Body=killed.bodies[key])
    counted = proxy.add(Fault(method="PUT", query_contains="partNumber", delay=0.01))
    code, report, stderr = sync(rgw_site, tmp_path / "s.db", *killed.arguments, *flags)
    assert code == 0, stderr
    assert report["counters"]["copied"] == 3
    assert list(stored_uploads(killed.client, killed.dst)) == [killed.foreign]
    assert {key: killed.client.get_object(Bucket=killed.dst, Key=key)["Body"].read() for key in killed.bodies} == (
        killed.bodies
    )
    assert counted.hits == 12  # nothing resumed: every part sent again


def test_the_parts_of_a_giant_object_whose_upload_was_aborted_are_dropped_at_once(
    rgw_site: S3Site, proxy: FaultProxy, unique_name: str, tmp_path: Path
) -> None:
    """A part refused for good aborts the giant object's upload: each remaining part message used to fail with
    NoSuchUpload until it was dead-lettered (parts x (maxRetries + 1) receives), and now is dropped unsent."""
    src, dst = f"{unique_name}-a", f"{unique_name}-b"
    client = fill(rgw_site, src, [])
    client.put_object(Bucket=src, Key="giant.bin", Body=os.urandom(40 * MiB))
    client.create_bucket(Bucket=dst)
    refused = proxy.add(Fault(method="PUT", query_contains="partNumber=2", status=403, code="AccessDenied"))
    parts = proxy.add(Fault(method="PUT", query_contains="partNumber", delay=0.01))
    code, report, stderr = sync(
        rgw_site,
        tmp_path / "s.db",
        f"s3://{src}",
        f"s3://{dst}",
        *["--multipart-threshold", "5MiB", "--chunk-size", "5MiB", "--giant-file-threshold", "8MiB"],
        *["--workers", "2", "--concurrency", "2", "--source-endpoint", rgw_site.url, "--dest-endpoint", proxy.url],
    )
    assert code == 1, stderr
    assert report["counters"] == {**report["counters"], "found": 1, "copied": 0, "failed": 1}
    (failed,) = report["failed"]
    assert (failed["key"], failed["reason"]) == ("giant.bin", "part 2: AccessDenied: injected by the test proxy")
    assert refused.hits == 1
    assert parts.hits <= 7  # 8 parts: at most the others already under way are sent, none again
    assert stored_uploads(client, dst) == {}
