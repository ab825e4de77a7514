"""`dth s3 sync` end to end against real servers: Ceph radosgw (two endpoints) and moto server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dth.devtools.faultproxy import Fault, FaultProxy
from dth.devtools.sites import S3Site

MiB = 1024 * 1024
ODD_KEYS = [
    "unicode/数据/ünïcødé.txt",
    "spaces/a key with  spaces ",
    "plus/a+b+c",
    "percent/100%25%",
    "query/what?x=1&y=2",
    "hash/#fragment#",
    "mixed/ +%?#=&;,$@!'()*~",
    "deep/" + "k" * (1024 - len("deep/")),  # the longest key S3 allows
]


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout.strip().splitlines()[-1]))


def dth(*args: str, site: S3Site | None = None, state: Path | None = None, timeout: float = 300) -> Outcome:
    """Run the real command line in a child process, with the site's credentials in its environment."""
    kept = {"AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_CA_BUNDLE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k in kept}
    if site:
        env.update(
            AWS_ACCESS_KEY_ID=site.access_key, AWS_SECRET_ACCESS_KEY=site.secret_key, AWS_DEFAULT_REGION=site.region
        )
    extra = ["--state", str(state)] if state and args and args[0] in {"s3", "run"} else []
    done = subprocess.run(
        [sys.executable, "-m", "dth", *args, *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def sync(source: str, destination: str, *flags: str, site: S3Site, state: Path, **endpoints: str) -> Outcome:
    endpoint_flags: list[str] = []
    for name, url in endpoints.items():
        endpoint_flags += [f"--{name.replace('_', '-')}", url]
    if not endpoints:
        endpoint_flags = ["--endpoint", site.url]
    return dth("s3", "sync", source, destination, *endpoint_flags, "--output", "json", *flags, site=site, state=state)


def make_bucket(site: S3Site, name: str) -> Any:
    client = site.client()
    client.create_bucket(Bucket=name)
    return client


def contents(client: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listing: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            listing[key[len(prefix) :]] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return listing


def etags(client: Any, bucket: str) -> dict[str, str]:
    return {
        item["Key"]: item["ETag"].strip('"')
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    }


def upload_multipart(client: Any, bucket: str, key: str, parts: list[bytes]) -> str:
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    done = [
        {
            "ETag": client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=n, Body=body)[
                "ETag"
            ],
            "PartNumber": n,
        }
        for n, body in enumerate(parts, start=1)
    ]
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )
    return str(client.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')


@pytest.fixture
def buckets(rgw_site: S3Site, unique_name: str) -> tuple[Any, str, str]:
    client = make_bucket(rgw_site, f"{unique_name}-src")
    client.create_bucket(Bucket=f"{unique_name}-dst")
    return client, f"{unique_name}-src", f"{unique_name}-dst"


def test_first_sync_is_byte_identical_with_metadata_and_resync_copies_nothing(
    rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    client, src, dst = buckets
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    client.put_object(
        Bucket=src,
        Key="docs/report.html",
        Body=b"<html>hello</html>",
        ContentType="text/html; charset=utf-8",
        CacheControl="max-age=3600",
        ContentEncoding="identity",
        ContentDisposition='attachment; filename="report.html"',
        ContentLanguage="de-CH",
        Expires=expires,
        Metadata={"owner": "team-a", "checksum-note": "x"},
    )
    for number in range(40):
        client.put_object(Bucket=src, Key=f"data/{number:03d}.bin", Body=os.urandom(number * 101))
    client.put_object(Bucket=src, Key="empty", Body=b"")

    first = sync(f"s3://{src}", f"s3://{dst}", site=rgw_site, state=tmp_path / "s.db")
    assert first.code == 0, first.stderr + first.stdout
    assert first.report["counters"]["found"] == 42
    assert first.report["counters"]["copied"] == 42
    assert contents(client, dst) == contents(client, src)
    head = client.head_object(Bucket=dst, Key="docs/report.html")
    assert head["ContentType"] == "text/html; charset=utf-8"
    assert head["CacheControl"] == "max-age=3600"
    assert head["ContentEncoding"] == "identity"
    assert head["ContentDisposition"] == 'attachment; filename="report.html"'
    assert head["ContentLanguage"] == "de-CH"
    assert head["Metadata"] == {"owner": "team-a", "checksum-note": "x"}
    assert etags(client, dst) == etags(client, src)

    again = sync(f"s3://{src}", f"s3://{dst}", site=rgw_site, state=tmp_path / "s.db")
    assert again.code == 0, again.stderr
    assert again.report["counters"] == {**again.report["counters"], "found": 42, "copied": 0, "skipped": 42}


def test_same_size_change_is_found_by_size_etag_but_not_by_size(
    rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    client, src, dst = buckets
    client.put_object(Bucket=src, Key="a.txt", Body=b"version-1")
    client.put_object(Bucket=src, Key="b.txt", Body=b"unchanged")
    assert sync(f"s3://{src}", f"s3://{dst}", site=rgw_site, state=tmp_path / "s.db").code == 0
    client.put_object(Bucket=src, Key="a.txt", Body=b"version-2")  # same size, new content

    by_size = sync(f"s3://{src}", f"s3://{dst}", "--compare", "size", site=rgw_site, state=tmp_path / "s.db")
    assert by_size.report["counters"]["copied"] == 0
    assert client.get_object(Bucket=dst, Key="a.txt")["Body"].read() == b"version-1"

    by_etag = sync(f"s3://{src}", f"s3://{dst}", site=rgw_site, state=tmp_path / "s.db")
    assert by_etag.code == 0
    assert by_etag.report["counters"]["copied"] == 1
    assert client.get_object(Bucket=dst, Key="a.txt")["Body"].read() == b"version-2"

    always = sync(f"s3://{src}", f"s3://{dst}", "--compare", "none", site=rgw_site, state=tmp_path / "s.db")
    assert always.report["counters"]["copied"] == 2


def test_mirror_deletes_extraneous_keys_but_not_excluded_ones(
    rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    client, src, dst = buckets
    client.put_object(Bucket=src, Key="keep/1", Body=b"1")
    client.put_object(Bucket=dst, Key="keep/1", Body=b"1")
    client.put_object(Bucket=dst, Key="stale/2", Body=b"2")
    client.put_object(Bucket=dst, Key="stale/odd key+%#", Body=b"3")
    client.put_object(Bucket=dst, Key="protected/3.log", Body=b"3")

    without = sync(f"s3://{src}", f"s3://{dst}", site=rgw_site, state=tmp_path / "s.db")
    assert without.report["counters"]["deleted"] == 0
    assert len(etags(client, dst)) == 4

    mirror = sync(
        f"s3://{src}", f"s3://{dst}", "--delete", "--exclude", "*.log", site=rgw_site, state=tmp_path / "s.db"
    )
    assert mirror.code == 0, mirror.stderr
    assert mirror.report["counters"]["deleted"] == 2
    assert sorted(etags(client, dst)) == ["keep/1", "protected/3.log"]


def test_multipart_with_small_thresholds_keeps_source_layout_and_etag(
    rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    client, src, dst = buckets
    plain = os.urandom(17 * MiB)
    client.put_object(Bucket=src, Key="plain-17MiB", Body=plain)
    layered_etag = upload_multipart(
        client, src, "multipart-8MiB-parts", [os.urandom(8 * MiB), os.urandom(8 * MiB), b"tail"]
    )
    # An unusual layout that a server without HEAD-by-part-number cannot reveal: copied by a guess.
    upload_multipart(client, src, "multipart-6MiB-parts", [os.urandom(6 * MiB), os.urandom(6 * MiB), b"end"])
    assert layered_etag.endswith("-3")

    result = sync(
        f"s3://{src}",
        f"s3://{dst}",
        "--multipart-threshold",
        "5MiB",
        "--chunk-size",
        "5MiB",
        "--concurrency",
        "4",
        site=rgw_site,
        state=tmp_path / "s.db",
    )
    assert result.code == 0, result.stderr + result.stdout
    assert contents(client, dst) == contents(client, src)
    copied = etags(client, dst)
    assert copied["multipart-8MiB-parts"] == layered_etag  # same parts, same ETag: verified end to end
    assert copied["plain-17MiB"].endswith("-4")  # 5+5+5+2 MiB parts
    head = client.head_object(Bucket=dst, Key="plain-17MiB")
    assert head["Metadata"]["dth-source-etag"] == hashlib.md5(plain).hexdigest()

    again = sync(
        f"s3://{src}",
        f"s3://{dst}",
        "--multipart-threshold",
        "5MiB",
        "--chunk-size",
        "5MiB",
        site=rgw_site,
        state=tmp_path / "s.db",
    )
    assert again.report["counters"]["copied"] == 0, "multipart copies must compare as current"


def test_cross_endpoint_streaming_copies_multipart_and_small_objects(
    rgw_site: S3Site, rgw_site2: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    client, src, dst = buckets
    for number in range(20):
        client.put_object(Bucket=src, Key=f"small/{number}", Body=os.urandom(1000 + number))
    client.put_object(Bucket=src, Key="large", Body=os.urandom(11 * MiB + 7))
    layered = upload_multipart(client, src, "layered", [os.urandom(5 * MiB), os.urandom(MiB)])

    result = sync(
        f"s3://{src}",
        f"s3://{dst}",
        "--multipart-threshold",
        "5MiB",
        "--chunk-size",
        "5MiB",
        site=rgw_site,
        state=tmp_path / "s.db",
        source_endpoint=rgw_site.url,
        dest_endpoint=rgw_site2.url,
    )
    assert result.code == 0, result.stderr + result.stdout
    assert result.report["counters"]["copied"] == 22
    assert contents(client, dst) == contents(client, src)
    assert etags(client, dst)["layered"] == layered


def test_moto_to_radosgw_across_servers(moto_site: S3Site, rgw_site: S3Site, unique_name: str, tmp_path: Path) -> None:
    """Two different servers, so two different credentials: the source's come from a profile file."""
    source = make_bucket(moto_site, unique_name)
    destination = make_bucket(rgw_site, unique_name)
    for key in ODD_KEYS[:-1]:  # the 1024-byte key would not fit under the destination prefix
        source.put_object(Bucket=unique_name, Key=key, Body=key.encode() * 3)
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[moto]\naws_access_key_id = {moto_site.access_key}\naws_secret_access_key = {moto_site.secret_key}\n"
    )
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials)
    try:
        result = sync(
            f"s3://{unique_name}",
            f"s3://{unique_name}/copy",
            "--source-profile",
            "moto",
            site=rgw_site,
            state=tmp_path / "s.db",
            source_endpoint=moto_site.url,
            dest_endpoint=rgw_site.url,
        )
    finally:
        del os.environ["AWS_SHARED_CREDENTIALS_FILE"]
    assert result.code == 0, result.stderr + result.stdout
    assert contents(destination, unique_name, "copy/") == contents(source, unique_name)


@pytest.mark.parametrize("cross_endpoint", [False, True], ids=["server-side", "streamed"])
def test_odd_keys_and_empty_objects(
    rgw_site: S3Site, rgw_site2: S3Site, buckets: tuple[Any, str, str], tmp_path: Path, cross_endpoint: bool
) -> None:
    client, src, dst = buckets
    for key in ODD_KEYS:
        client.put_object(Bucket=src, Key=key, Body=hashlib.sha256(key.encode()).digest())
    client.put_object(Bucket=src, Key="zero-bytes", Body=b"")
    endpoints = {"source_endpoint": rgw_site.url, "dest_endpoint": rgw_site2.url if cross_endpoint else rgw_site.url}
    result = sync(f"s3://{src}", f"s3://{dst}", site=rgw_site, state=tmp_path / "s.db", **endpoints)
    assert result.code == 0, result.stderr + result.stdout
    assert contents(client, dst) == contents(client, src)
    again = sync(f"s3://{src}", f"s3://{dst}", site=rgw_site, state=tmp_path / "s.db", **endpoints)
    assert again.report["counters"]["copied"] == 0

    # Under a destination prefix the 1024-byte key no longer fits: that key fails at once, with the
    # reason, and every other key still arrives.
    nested = sync(f"s3://{src}", f"s3://{dst}/prefix with space+", site=rgw_site, state=tmp_path / "s.db", **endpoints)
    assert nested.code == 1
    assert [failure["key"] for failure in nested.report["failed"]] == [ODD_KEYS[-1]]
    assert nested.report["failed"][0]["attempts"] == 1, nested.stdout + nested.stderr
    assert nested.report["failed"][0]["reason"] == "destination key would be 1043 bytes; S3 keys are at most 1024"
    assert nested.report["counters"]["copied"] == len(ODD_KEYS)
    assert "INCOMPLETE" not in nested.stdout  # JSON output only


def test_include_exclude_and_prefix_list(rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path) -> None:
    client, src, dst = buckets
    for key in ["a/1.txt", "a/2.log", "b/3.txt", "c/4.txt", "c/sub/5.txt"]:
        client.put_object(Bucket=src, Key=key, Body=key.encode())
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("a/\nc/sub/\n\n")
    result = sync(
        f"s3://{src}",
        f"s3://{dst}",
        "--prefix-list-file",
        str(prefixes),
        "--exclude",
        "*.log",
        site=rgw_site,
        state=tmp_path / "s.db",
    )
    assert result.code == 0, result.stderr
    assert sorted(etags(client, dst)) == ["a/1.txt", "c/sub/5.txt"]
    included = sync(f"s3://{src}", f"s3://{dst}", "--include", "b/*", site=rgw_site, state=tmp_path / "s.db")
    assert included.report["counters"]["copied"] == 1
    assert sorted(etags(client, dst)) == ["a/1.txt", "b/3.txt", "c/sub/5.txt"]


def test_dry_run_prints_the_plan_and_copies_nothing(
    rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    client, src, dst = buckets
    client.put_object(Bucket=src, Key="new file", Body=b"x")
    client.put_object(Bucket=dst, Key="extra", Body=b"y")
    result = dth(
        "s3",
        "sync",
        f"s3://{src}",
        f"s3://{dst}",
        "--endpoint",
        rgw_site.url,
        "--delete",
        "--dry-run",
        site=rgw_site,
        state=tmp_path / "s.db",
    )
    assert result.code == 0, result.stderr
    assert "copy new file (1 B)" in result.stdout
    assert "delete extra" in result.stdout
    assert "dry run: 1 to copy" in result.stdout
    assert sorted(etags(client, dst)) == ["extra"]


def test_archived_objects_are_reported_as_skipped_with_reason(
    moto_site: S3Site, unique_name: str, tmp_path: Path
) -> None:
    client = make_bucket(moto_site, unique_name)
    client.create_bucket(Bucket=f"{unique_name}-dst")
    client.put_object(Bucket=unique_name, Key="cold", Body=b"frozen", StorageClass="GLACIER")
    client.put_object(Bucket=unique_name, Key="warm", Body=b"ok")
    result = sync(f"s3://{unique_name}", f"s3://{unique_name}-dst", site=moto_site, state=tmp_path / "s.db")
    assert result.code == 0, result.stderr
    assert result.report["counters"]["copied"] == 1
    assert result.report["counters"]["skipped"] == 1
    assert result.report["skipped"] == [
        {"key": "cold", "reason": "storage class GLACIER: restore the object before it can be copied"}
    ]


def test_storage_class_sse_and_tags_are_applied(moto_site: S3Site, unique_name: str, tmp_path: Path) -> None:
    client = make_bucket(moto_site, unique_name)
    client.create_bucket(Bucket=f"{unique_name}-dst")
    client.put_object(Bucket=unique_name, Key="tagged", Body=b"t", Tagging="team=a&env=prod")
    result = sync(
        f"s3://{unique_name}",
        f"s3://{unique_name}-dst",
        "--storage-class",
        "STANDARD_IA",
        "--sse",
        "AES256",
        "--copy-tags",
        "--compare",
        "none",
        site=moto_site,
        state=tmp_path / "s.db",
    )
    assert result.code == 0, result.stderr
    head = client.head_object(Bucket=f"{unique_name}-dst", Key="tagged")
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"
    tags = client.get_object_tagging(Bucket=f"{unique_name}-dst", Key="tagged")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "a", "env": "prod"}


# --- bad input: one clear line, a non-zero exit, nothing lost --------------------------------------


def test_missing_bucket_is_named(rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path) -> None:
    _, src, _ = buckets
    result = sync(f"s3://{src}", "s3://no-such-bucket-here", site=rgw_site, state=tmp_path / "s.db")
    assert result.code == 2
    assert "destination bucket 'no-such-bucket-here' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_credentials_are_reported_without_the_secret(
    rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    _, src, dst = buckets
    wrong = rgw_site.with_keys(rgw_site.access_key, "not-the-secret-at-all")
    result = sync(f"s3://{src}", f"s3://{dst}", site=wrong, state=tmp_path / "s.db")
    assert result.code == 2
    assert "source credentials were rejected" in result.stderr
    assert "not-the-secret-at-all" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_unreachable_endpoint_and_malformed_uri(rgw_site: S3Site, tmp_path: Path) -> None:
    unreachable = sync(
        "s3://a-bucket", "s3://b-bucket", site=rgw_site, state=tmp_path / "s.db", endpoint="http://127.0.0.1:9"
    )
    assert unreachable.code == 2
    assert "cannot reach the source endpoint http://127.0.0.1:9" in unreachable.stderr
    malformed = dth("s3", "sync", "bucket-without-scheme", "s3://b", "--endpoint", rgw_site.url, site=rgw_site)
    assert malformed.code == 2
    assert "is not an S3 URI" in malformed.stderr
    bad_size = dth("s3", "sync", "s3://abc", "s3://def", "--chunk-size", "1KiB", site=rgw_site)
    assert bad_size.code == 2
    assert "spec.options.chunkSize" in bad_size.stderr


def test_run_manifest_and_manifest_errors(rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path) -> None:
    client, src, dst = buckets
    client.put_object(Bucket=src, Key="in/one", Body=b"1")
    client.put_object(Bucket=src, Key="in/two", Body=b"22")
    manifest = tmp_path / "task.yaml"
    manifest.write_text(
        f"""apiVersion: dth.io/v1alpha1
kind: TransferTask
metadata:
  name: nightly-copy
spec:
  type: S3
  source: {{type: S3_Compatible, endpoint: "{rgw_site.url}", bucket: {src}, prefix: in/}}
  destination: {{type: S3_Compatible, endpoint: "{rgw_site.url}", bucket: {dst}, prefix: out/}}
  options: {{compare: size-etag, workers: 4}}
"""
    )
    result = dth("run", str(manifest), "--output", "json", site=rgw_site, state=tmp_path / "s.db")
    assert result.code == 0, result.stderr
    assert result.report["counters"]["copied"] == 2
    assert sorted(etags(client, dst)) == ["out/one", "out/two"]

    manifest.write_text(manifest.read_text().replace("compare: size-etag", "compare: fastest"))
    invalid = dth("run", str(manifest), site=rgw_site)
    assert invalid.code == 2
    assert "spec.options.compare" in invalid.stderr
    manifest.write_text("apiVersion: dth.io/v1alpha1\nkind: TransferTask\nspec: [unclosed\n")
    broken = dth("run", str(manifest), site=rgw_site)
    assert broken.code == 2
    assert "not valid YAML at line" in broken.stderr


def test_percent_keys_are_not_confused_by_ceph_part_copy(
    rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    """Ceph decodes UploadPartCopy's copy source twice: `a%41b` would be read as `aAb`."""
    client, src, dst = buckets
    client.put_object(Bucket=src, Key="a%41b", Body=os.urandom(6 * MiB))
    client.put_object(Bucket=src, Key="aAb", Body=os.urandom(6 * MiB))
    result = sync(
        f"s3://{src}",
        f"s3://{dst}",
        "--multipart-threshold",
        "5MiB",
        "--chunk-size",
        "5MiB",
        site=rgw_site,
        state=tmp_path / "s.db",
    )
    assert result.code == 0, result.stderr + result.stdout
    assert contents(client, dst) == contents(client, src)


def test_multipart_source_layout_read_from_part_heads_on_moto(
    moto_site: S3Site, unique_name: str, tmp_path: Path
) -> None:
    """moto answers HEAD by part number, so an unusual layout is copied exactly, not guessed."""
    client = make_bucket(moto_site, unique_name)
    client.create_bucket(Bucket=f"{unique_name}-dst")
    source_etag = upload_multipart(client, unique_name, "odd-layout", [os.urandom(7 * MiB), os.urandom(MiB)])
    result = sync(f"s3://{unique_name}", f"s3://{unique_name}-dst", site=moto_site, state=tmp_path / "s.db")
    assert result.code == 0, result.stderr + result.stdout
    head = client.head_object(Bucket=f"{unique_name}-dst", Key="odd-layout")
    assert head["ETag"].strip('"') == source_etag
    assert "dth-source-etag" not in head.get("Metadata", {})


def test_multipart_sources_are_cloned_with_one_copy_object_where_the_server_keeps_their_etag(
    rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    """Ceph's CopyObject clones a multipart object, ETag and all: no need to copy it part by part."""
    client, src, dst = buckets
    client.create_bucket(Bucket=f"{dst}-giant")
    etags_before = {
        name: upload_multipart(client, src, name, [os.urandom(5 * MiB), os.urandom(MiB)]) for name in ("m1", "m2")
    }
    with FaultProxy(rgw_site.url) as proxy:
        part_copies = proxy.add(Fault(method="PUT", query_contains="partNumber", delay=0.001))
        uploads = proxy.add(Fault(method="POST", query_contains="uploads", delay=0.001))
        result = sync(f"s3://{src}", f"s3://{dst}", site=rgw_site, state=tmp_path / "s.db", endpoint=proxy.url)
        assert result.code == 0, result.stderr + result.stdout
        assert contents(client, dst) == contents(client, src)
        assert etags(client, dst) == etags_before
        assert part_copies.hits == 0 and uploads.hits == 0
        # Above the giant-object threshold too: cloned, not split into parts for several workers.
        giant = sync(
            f"s3://{src}",
            f"s3://{dst}-giant",
            "--giant-file-threshold",
            "5MiB",
            site=rgw_site,
            state=tmp_path / "giant.db",
            endpoint=proxy.url,
        )
    assert giant.code == 0, giant.stderr + giant.stdout
    assert etags(client, f"{dst}-giant") == etags_before
    assert part_copies.hits == 0 and uploads.hits == 0


def test_multipart_sources_fall_back_to_part_copies_where_copy_object_gives_a_new_etag(
    moto_site: S3Site, unique_name: str, tmp_path: Path
) -> None:
    """moto, like AWS, gives a CopyObject result an ETag of its own: the copy is redone part by part."""
    client = make_bucket(moto_site, unique_name)
    client.create_bucket(Bucket=f"{unique_name}-dst")
    sources = {
        name: upload_multipart(client, unique_name, name, [os.urandom(5 * MiB), os.urandom(MiB)])
        for name in ("first", "second")
    }
    result = sync(f"s3://{unique_name}", f"s3://{unique_name}-dst", site=moto_site, state=tmp_path / "s.db")
    assert result.code == 0, result.stderr + result.stdout
    assert etags(client, f"{unique_name}-dst") == sources
    assert contents(client, f"{unique_name}-dst") == contents(client, unique_name)


def test_the_state_file_keeps_only_the_last_runs(moto_site: S3Site, unique_name: str, tmp_path: Path) -> None:
    import sqlite3

    client = make_bucket(moto_site, f"{unique_name}-a")
    make_bucket(moto_site, f"{unique_name}-b")
    client.put_object(Bucket=f"{unique_name}-a", Key="k", Body=b"x")
    state = tmp_path / "s.db"
    runs = []
    for _ in range(4):
        outcome = sync(
            f"s3://{unique_name}-a", f"s3://{unique_name}-b", "--keep-runs", "2", site=moto_site, state=state
        )
        assert outcome.code == 0, outcome.stderr
        runs.append(outcome.report["run"])
    with sqlite3.connect(state) as db:
        kept = {row[0] for row in db.execute("SELECT run_id FROM runs")}
        queues = {row[0] for row in db.execute("SELECT DISTINCT queue FROM queue_messages")}
    assert kept == set(runs[-2:])
    assert queues <= kept


def test_the_folder_marker_at_the_source_prefix_becomes_the_destination_prefix_marker_or_is_skipped(
    rgw_site: S3Site, buckets: tuple[Any, str, str], tmp_path: Path
) -> None:
    client, src, dst = buckets
    client.put_object(Bucket=src, Key="app/", Body=b"")
    client.put_object(Bucket=src, Key="app/x", Body=b"x")
    into_root = sync(f"s3://{src}/app/", f"s3://{dst}/", site=rgw_site, state=tmp_path / "a.db")
    assert into_root.code == 0, into_root.stderr
    assert into_root.report["counters"]["copied"] == 1
    (skipped,) = into_root.report["skipped"]
    assert skipped["key"] == ""
    assert "'app/' is the source prefix itself, and the destination has no prefix" in skipped["reason"]
    into_prefix = sync(f"s3://{src}/app/", f"s3://{dst}/backup", site=rgw_site, state=tmp_path / "b.db")
    assert into_prefix.code == 0, into_prefix.stderr
    assert into_prefix.report["counters"]["copied"] == 2
    assert contents(client, dst) == {"x": b"x", "backup/": b"", "backup/x": b"x"}


def test_whether_copy_object_keeps_a_multipart_etag_is_asked_once_not_by_every_worker(
    moto_site: S3Site, unique_name: str, tmp_path: Path
) -> None:
    """On AWS (and moto) CopyObject gives a multipart source a new ETag, so its copy is redone part by part: the
    question must be asked by one object while the other workers wait for the answer, or up to `workers` big
    objects are copied twice."""
    client = make_bucket(moto_site, unique_name)
    client.create_bucket(Bucket=f"{unique_name}-dst")
    sources = {
        f"m{n}": upload_multipart(client, unique_name, f"m{n}", [os.urandom(5 * MiB), os.urandom(1024)])
        for n in range(6)
    }
    with FaultProxy(moto_site.url) as proxy:
        proxy.add(Fault(method="PUT", query_contains="partNumber", delay=0.001))
        # Every other PUT to the destination is a CopyObject: slowed, so that all workers are ready to ask at once.
        copy_objects = proxy.add(Fault(method="PUT", path_contains=f"{unique_name}-dst/", delay=0.5))
        result = sync(
            f"s3://{unique_name}",
            f"s3://{unique_name}-dst",
            "--workers",
            "6",
            site=moto_site,
            state=tmp_path / "s.db",
            endpoint=proxy.url,
        )
    assert result.code == 0, result.stderr + result.stdout
    assert etags(client, f"{unique_name}-dst") == sources
    assert copy_objects.hits == 1
