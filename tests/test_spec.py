"""Manifests and specs: what loads, and errors that name the field at fault."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from dth.errors import SpecError
from dth.spec.load import load_manifest, parse_manifest, parse_task_spec
from dth.spec.model import (
    CannedAcl,
    CompareMode,
    EventsMode,
    S3Location,
    SseMode,
    StorageClass,
    StorageProvider,
    parse_byte_size,
)

MiB = 1024 * 1024

FULL_MANIFEST = """\
apiVersion: dth.io/v1alpha1
kind: TransferTask
metadata:
  name: copy-photos
  namespace: transfers
  labels:
    team: media
spec:
  type: S3
  source:
    type: Aliyun_OSS
    bucket: photos-src
    prefix: 2024/
    region: cn-hangzhou
    requesterPays: false
    credentials:
      secretName: oss-keys
  destination:
    type: Amazon_S3
    bucket: photos-dst
    prefix: archive/2024/
    region: us-west-2
    storageClass: STANDARD_IA
    acl: bucket-owner-full-control
    sse: AWS_KMS
    kmsKeyId: alias/dth
    credentials:
      secretsManagerArn: arn:aws:secretsmanager:us-west-2:123456789012:secret:dth-keys
  options:
    compare: checksum
    include: ["*.jpg", "*.png"]
    exclude: ["*/tmp/*"]
    deleteExtraneous: true
    copyMetadata: true
    copyTags: true
    multipartThreshold: 64Mi
    chunkSize: 16MiB
    giantFileThreshold: 2GiB
    maxRetries: 3
    workers: 64
    concurrency: 8
    listDepth: 2
    dryRun: false
  schedule: "0 */6 * * *"
  events: CreateAndDelete
  suspend: false
status:
  phase: Running
  objects: {found: 3}
"""


def write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def spec(**changes: Any) -> dict[str, Any]:
    """A minimal valid S3 spec, with top-level sections replaced or merged."""
    raw: dict[str, Any] = {
        "type": "S3",
        "source": {"bucket": "src-bucket", "region": "us-east-1"},
        "destination": {"bucket": "dst-bucket", "region": "us-east-1"},
    }
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **value}
        else:
            raw[section] = value
    return raw


def spec_error(raw: Any) -> str:
    with pytest.raises(SpecError) as caught:
        parse_task_spec(raw)
    return str(caught.value)


# --- a full manifest ----------------------------------------------------------------------------


def test_full_manifest_loads(tmp_path: Path) -> None:
    task = load_manifest(write(tmp_path, FULL_MANIFEST))
    assert task.api_version == "dth.io/v1alpha1"
    assert task.kind == "TransferTask"
    assert (task.metadata.name, task.metadata.namespace, task.metadata.labels) == (
        "copy-photos",
        "transfers",
        {"team": "media"},
    )
    s = task.spec
    assert s.type == "S3"
    assert s.source.type is StorageProvider.ALIYUN_OSS
    assert (s.source.bucket, s.source.prefix, s.source.region) == ("photos-src", "2024/", "cn-hangzhou")
    assert s.source.credentials is not None and s.source.credentials.secret_name == "oss-keys"
    assert s.destination.type is StorageProvider.AMAZON_S3
    assert s.destination.storage_class is StorageClass.STANDARD_IA
    assert s.destination.acl is CannedAcl.BUCKET_OWNER_FULL_CONTROL
    assert (s.destination.sse, s.destination.kms_key_id) == (SseMode.AWS_KMS, "alias/dth")
    assert s.destination.credentials is not None
    assert s.destination.credentials.secrets_manager_arn == (
        "arn:aws:secretsmanager:us-west-2:123456789012:secret:dth-keys"
    )
    o = s.options
    assert o.compare is CompareMode.CHECKSUM
    assert (o.include, o.exclude) == (["*.jpg", "*.png"], ["*/tmp/*"])
    assert (o.delete_extraneous, o.copy_metadata, o.copy_tags, o.dry_run) == (True, True, True, False)
    assert (o.multipart_threshold, o.chunk_size, o.giant_file_threshold) == (64 * MiB, 16 * MiB, 2 * 1024 * MiB)
    assert (o.max_retries, o.workers, o.concurrency, o.list_depth) == (3, 64, 8, 2)
    assert (s.schedule, s.events, s.suspend) == ("0 */6 * * *", EventsMode.CREATE_AND_DELETE, False)
    assert s.source.endpoint_url() == "https://oss-cn-hangzhou.aliyuncs.com"
    assert s.destination.endpoint_url() is None


def test_defaults() -> None:
    parsed = parse_task_spec(spec())
    assert parsed.options.compare is CompareMode.SIZE_ETAG
    assert (parsed.options.chunk_size, parsed.options.multipart_threshold) == (8 * MiB, 32 * MiB)
    assert parsed.options.delete_extraneous is False
    assert (parsed.schedule, parsed.events, parsed.suspend) == ("once", EventsMode.NONE, False)
    assert parsed.source.type is StorageProvider.AMAZON_S3
    assert parsed.destination.sse is SseMode.NONE


def test_snake_case_names_are_accepted_too() -> None:
    parsed = parse_task_spec(spec(options={"chunk_size": "6MiB", "delete_extraneous": True}))
    assert (parsed.options.chunk_size, parsed.options.delete_extraneous) == (6 * MiB, True)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("8MiB", 8 * MiB),
        ("8Mi", 8 * MiB),
        ("8 MiB", 8 * MiB),
        ("8mib", 8 * MiB),
        ("8MB", 8_000_000),
        ("8M", 8_000_000),
        ("1.5GiB", 1536 * MiB),
        ("5242880", 5 * MiB),
        ("1TiB", 1024**4),
        ("2KiB", 2048),
        ("10B", 10),
    ],
)
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_byte_size(text) == size


def test_sizes_in_a_spec() -> None:
    parsed = parse_task_spec(spec(options={"chunkSize": "8MiB", "multipartThreshold": 16 * MiB}))
    assert parsed.options.chunk_size == 8 * MiB
    assert parsed.options.multipart_threshold == 16 * MiB
    dumped = parsed.model_dump(by_alias=True, mode="json")
    assert dumped["options"]["chunkSize"] == 8 * MiB


# --- errors name the field ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        pytest.param(spec(options={"compres": "size"}), "spec.options.compres", "unknown field", id="unknown-field"),
        pytest.param(
            spec(source={"bucket": "src-bucket", "bukket": "x"}),
            "spec.source.bukket",
            "unknown field",
            id="unknown-nested",
        ),
        pytest.param(spec(options={"compare": "fast"}), "spec.options.compare", "'size-etag'", id="bad-enum"),
        pytest.param(
            spec(options={"chunkSize": "4MiB"}),
            "spec.options.chunkSize",
            "chunkSize must be at least 5 MiB",
            id="chunk-too-small",
        ),
        pytest.param(
            spec(options={"chunkSize": "6GiB"}), "spec.options.chunkSize", "at most 5 GiB", id="chunk-too-large"
        ),
        pytest.param(spec(options={"chunkSize": "8 parsecs"}), "spec.options.chunkSize", "unit", id="bad-size-unit"),
        pytest.param(spec(options={"chunkSize": "lots"}), "spec.options.chunkSize", "not a size", id="not-a-size"),
        pytest.param(
            spec(options={"chunkSize": "16MiB", "multipartThreshold": "8MiB"}),
            "spec.options",
            "multipartThreshold must be at least chunkSize",
            id="threshold-below-chunk",
        ),
        pytest.param(
            spec(options={"workers": 0}),
            "spec.options.workers",
            "workers must be a whole number from 1 to 512",
            id="no-workers",
        ),
        pytest.param(spec(source={"bucket": None}), "spec.source.bucket", "", id="null-bucket"),
        pytest.param(
            spec(destination={"bucket": "a"}),
            "spec.destination.bucket",
            "bucket names are 3 to 255 characters",
            id="short-bucket",
        ),
        pytest.param(spec(source={"prefix": "/photos"}), "spec.source.prefix", "leading slash", id="leading-slash"),
        pytest.param(
            spec(source={"credentials": {"secretName": "keys", "profile": "dev"}}),
            "spec.source.credentials",
            "exactly one of secretName, secretsManagerArn or profile (got secretName, profile)",
            id="two-credential-sources",
        ),
        pytest.param(
            spec(source={"credentials": {}}), "spec.source.credentials", "exactly one of", id="no-credential-source"
        ),
        pytest.param(
            spec(destination={"credentials": {"secretsManagerArn": "keys"}}),
            "spec.destination.credentials.secretsManagerArn",
            "secretsManagerArn must be the ARN of a Secrets Manager secret",
            id="bad-arn",
        ),
        pytest.param(
            spec(source={"type": "S3_Compatible"}), "spec.source", "S3_Compatible needs an endpoint", id="no-endpoint"
        ),
        pytest.param(
            spec(destination={"type": "Aliyun_OSS", "region": None}),
            "spec.destination",
            "Aliyun_OSS needs a region",
            id="aliyun-no-region",
        ),
        pytest.param(spec(source={"type": "Azure_Blob"}), "spec.source.type", "'Amazon_S3'", id="bad-provider"),
        pytest.param(
            spec(destination={"kmsKeyId": "alias/x", "sse": "AES256"}),
            "spec.destination",
            "kmsKeyId is only used with sse AWS_KMS",
            id="kms-key-without-kms",
        ),
        pytest.param(
            spec(destination={"endpoint": "ftp://example.com"}),
            "spec.destination.endpoint",
            "endpoint must be an http:// or https:// URL",
            id="bad-endpoint",
        ),
        pytest.param(
            spec(schedule="every hour"),
            "spec.schedule",
            "schedule must be `once` or a five-field cron expression",
            id="bad-schedule",
        ),
        pytest.param(spec(events="Sometimes"), "spec.events", "'CreateAndDelete'", id="bad-events"),
        pytest.param(spec(type="Ftp"), "spec.type", "must be one of S3, Image", id="bad-type"),
        pytest.param(spec(destination="dst-bucket"), "spec.destination", "", id="destination-not-a-mapping"),
    ],
)
def test_errors_name_the_field(raw: dict[str, Any], field: str, words: str) -> None:
    message = spec_error(raw)
    assert message.startswith(f"{field}: "), message
    assert words in message


def test_missing_bucket_is_named() -> None:
    raw = spec()
    del raw["source"]["bucket"]
    assert spec_error(raw) == "spec.source.bucket: Field required"


def test_several_problems_are_all_reported() -> None:
    message = spec_error(spec(options={"compare": "fast", "workers": 0}))
    assert "spec.options.compare: " in message
    assert "spec.options.workers: " in message
    assert message.count("; ") == 1


def test_spec_that_is_not_a_mapping() -> None:
    assert spec_error(["S3"]) == "spec: expected a mapping, got list"
    assert spec_error(None) == "spec: expected a mapping, got NoneType"


# --- overlapping source and destination ---------------------------------------------------------


@pytest.mark.parametrize(
    ("source_prefix", "destination_prefix"),
    [("data/", "data/backup/"), ("data/backup/", "data/"), ("", "copy/"), ("same/", "same/"), ("data", "data2/")],
)
def test_overlap_in_one_bucket_is_refused(source_prefix: str, destination_prefix: str) -> None:
    raw = spec(
        source={"bucket": "one-bucket", "prefix": source_prefix},
        destination={"bucket": "one-bucket", "prefix": destination_prefix},
    )
    message = spec_error(raw)
    assert message.startswith("spec: source and destination overlap")


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        ({"bucket": "one-bucket", "prefix": "a/"}, {"bucket": "one-bucket", "prefix": "b/"}),
        ({"bucket": "one-bucket", "prefix": "data/"}, {"bucket": "one-bucket", "prefix": "data2/"}),
        ({"bucket": "src-bucket"}, {"bucket": "dst-bucket"}),
        (
            {"bucket": "one-bucket", "type": "S3_Compatible", "endpoint": "https://a.example.com"},
            {"bucket": "one-bucket", "type": "S3_Compatible", "endpoint": "https://b.example.com"},
        ),
        (
            {"bucket": "one-bucket", "type": "Aliyun_OSS", "region": "cn-hangzhou"},
            {"bucket": "one-bucket", "type": "Aliyun_OSS", "region": "cn-beijing"},
        ),
    ],
)
def test_disjoint_locations_are_allowed(source: dict[str, Any], destination: dict[str, Any]) -> None:
    parsed = parse_task_spec({"type": "S3", "source": source, "destination": destination})
    assert parsed.source.bucket == source["bucket"]
    assert parsed.destination.prefix == destination.get("prefix", "")


def test_overlap_through_the_same_explicit_endpoint_is_refused() -> None:
    endpoint = "https://minio.example.com"
    raw = {
        "type": "S3",
        "source": {"bucket": "one-bucket", "type": "S3_Compatible", "endpoint": endpoint},
        "destination": {"bucket": "one-bucket", "type": "S3_Compatible", "endpoint": endpoint + "/", "prefix": "x/"},
    }
    assert spec_error(raw).startswith("spec: source and destination overlap")


OSS_BY_REGION = {"bucket": "one-bucket", "type": "Aliyun_OSS", "region": "cn-hangzhou", "prefix": "in/"}
OSS_BY_ENDPOINT = {"bucket": "one-bucket", "type": "Aliyun_OSS", "endpoint": "https://oss-cn-hangzhou.aliyuncs.com"}


def test_overlap_is_refused_when_the_source_names_the_endpoint() -> None:
    raw = {"type": "S3", "source": OSS_BY_ENDPOINT, "destination": OSS_BY_REGION}
    assert spec_error(raw).startswith("spec: source and destination overlap")


def test_overlap_is_refused_when_the_destination_names_the_endpoint() -> None:
    raw = {"type": "S3", "source": OSS_BY_REGION, "destination": OSS_BY_ENDPOINT}
    assert spec_error(raw).startswith("spec: source and destination overlap")


# --- manifests ----------------------------------------------------------------------------------


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    text = FULL_MANIFEST.replace("    prefix: 2024/\n", "    prefix: [2024/\n", 1)
    bad_line = text.splitlines().index("    prefix: [2024/") + 1
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_manifest(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML at line ")
    line = int(re.search(r"at line (\d+)", message).group(1))  # type: ignore[union-attr]
    assert bad_line <= line <= bad_line + 2


def test_bad_indentation_names_its_line(tmp_path: Path) -> None:
    text = "apiVersion: dth.io/v1alpha1\nkind: TransferTask\nmetadata:\n  name: x\nspec:\n  type: S3\n   source: 1\n"
    with pytest.raises(SpecError, match=r"not valid YAML at line 7, column \d+: mapping values are not allowed"):
        load_manifest(write(tmp_path, text))


def test_two_documents_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_MANIFEST + "---\n" + FULL_MANIFEST.replace("copy-photos", "copy-more"))
    with pytest.raises(SpecError) as caught:
        load_manifest(path)
    assert str(caught.value) == f"{path}: expected exactly one TransferTask document, found 2"


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing here\n")
    with pytest.raises(SpecError, match="found 0"):
        load_manifest(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(SpecError, match=re.escape(f"{path}: cannot read the manifest")):
        load_manifest(path)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("apiVersion: dth.io/v1alpha1", "apiVersion: dth.io/v1", "apiVersion"),
        ("kind: TransferTask", "kind: CopyJob", "kind"),
        ("  name: copy-photos", "  name: Copy_Photos", "metadata.name"),
    ],
)
def test_wrong_header_is_named(tmp_path: Path, old: str, new: str, field: str) -> None:
    path = write(tmp_path, FULL_MANIFEST.replace(old, new, 1))
    with pytest.raises(SpecError) as caught:
        load_manifest(path)
    assert str(caught.value).startswith(f"{path}: {field}: ")


def test_manifest_spec_errors_are_named_from_spec(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_MANIFEST.replace("    chunkSize: 16MiB", "    chunkSize: 1MiB"))
    with pytest.raises(SpecError) as caught:
        load_manifest(path)
    assert str(caught.value).startswith("spec.options.chunkSize: ")


def test_parse_manifest_needs_a_mapping() -> None:
    with pytest.raises(SpecError, match="manifest: expected a TransferTask mapping, got str"):
        parse_manifest("TransferTask")


# --- providers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "region", "endpoint", "style"),
    [
        ("Amazon_S3", "us-east-1", None, "virtual"),
        ("Amazon_S3", "cn-north-1", None, "virtual"),
        ("Aliyun_OSS", "cn-hangzhou", "https://oss-cn-hangzhou.aliyuncs.com", "virtual"),
        ("Tencent_COS", "ap-guangzhou", "https://cos.ap-guangzhou.myqcloud.com", "virtual"),
        ("Qiniu_Kodo", "cn-east-1", "https://s3-cn-east-1.qiniucs.com", "path"),
        ("Google_GCS", None, "https://storage.googleapis.com", "path"),
        ("Google_GCS", "us-central1", "https://storage.googleapis.com", "path"),
    ],
)
def test_provider_endpoints_and_addressing(provider: str, region: str | None, endpoint: str | None, style: str) -> None:
    location = S3Location.model_validate({"type": provider, "bucket": "my-bucket", "region": region})
    assert location.endpoint_url() == endpoint
    assert location.addressing_style() == style


@pytest.mark.parametrize("provider", ["Tencent_COS", "Qiniu_Kodo"])
def test_regional_providers_need_a_region(provider: str) -> None:
    message = spec_error(spec(source={"type": provider, "region": None}))
    assert message == f"spec.source: type {provider} needs a region to find its endpoint"


def test_explicit_endpoint_wins_and_uses_path_style() -> None:
    location = S3Location.model_validate(
        {"type": "S3_Compatible", "bucket": "my-bucket", "endpoint": "http://127.0.0.1:9000/"}
    )
    assert location.endpoint_url() == "http://127.0.0.1:9000"
    assert location.addressing_style() == "path"
    assert location.describe() == "s3://my-bucket/ at http://127.0.0.1:9000"
    aws = S3Location.model_validate({"bucket": "my-bucket", "prefix": "p/", "region": "us-east-1"})
    assert aws.describe() == "s3://my-bucket/p/"


def test_describe_never_shows_credentials() -> None:
    location = S3Location.model_validate(
        {"bucket": "my-bucket", "credentials": {"profile": "secret-profile-name"}, "region": "us-east-1"}
    )
    assert "secret-profile-name" not in location.describe()


def test_spec_is_immutable() -> None:
    parsed = parse_task_spec(spec())
    with pytest.raises(ValueError, match="frozen"):
        parsed.source.bucket = "other"  # type: ignore[misc]
    raw = spec()
    before = copy.deepcopy(raw)
    parse_task_spec(raw)
    assert raw == before
