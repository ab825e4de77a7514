"""The S3 spec as one environment variable per field (what the CloudFormation plugin's containers get), and
back; and the S3 entrypoints reading it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dth.errors import SpecError
from dth.s3.entrypoints import EngineEnvironment
from dth.spec.environment import ENV_PREFIX, spec_environment, spec_from_environment, spec_leaves
from dth.spec.model import (
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    CannedAcl,
    CompareMode,
    EventsMode,
    S3TaskSpec,
    StorageClass,
    StorageProvider,
)

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:dth/keys-AbCdEf"
buckets = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True)
# Keys and patterns: anything printable, commas, quotes and non-ASCII included.
texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=24)
prefixes = texts.filter(lambda p: not p.startswith("/"))
credentials = st.one_of(
    st.none(),
    st.builds(lambda name: {"secretName": name}, st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)),
    st.just({"secretsManagerArn": ARN}),
    st.builds(lambda name: {"profile": name}, st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,10}", fullmatch=True)),
)


@st.composite
def locations(draw: st.DrawFn, destination: bool) -> dict[str, Any]:
    provider = draw(st.sampled_from(StorageProvider))
    location: dict[str, Any] = {"type": provider.value, "bucket": draw(buckets), "prefix": draw(prefixes)}
    if provider is not StorageProvider.AMAZON_S3 or draw(st.booleans()):
        location["endpoint"] = draw(st.sampled_from(["http://127.0.0.1:7480", "https://oss.example.com/base/"]))
    if draw(st.booleans()):
        location["region"] = draw(st.from_regex(r"[a-z]{2}-[a-z]+-[0-9]", fullmatch=True))
    location["credentials"] = draw(credentials)
    if destination:
        location["storageClass"] = draw(st.none() | st.sampled_from(StorageClass))
        location["acl"] = draw(st.none() | st.sampled_from(CannedAcl))
        if draw(st.booleans()):
            location["sse"] = "AWS_KMS"
            location["kmsKeyId"] = draw(st.none() | st.just("arn:aws:kms:us-east-1:123456789012:key/k-1"))
        else:
            location["sse"] = draw(st.sampled_from(["None", "AES256"]))
    else:
        location["requesterPays"] = draw(st.booleans())
        location["prefixListFile"] = draw(st.none() | st.just("s3://lists/prefixes.txt"))
    return location


@st.composite
def specs(draw: st.DrawFn) -> S3TaskSpec:
    chunk = draw(st.integers(MIN_PART_SIZE, MAX_PART_SIZE))
    options = {
        "compare": draw(st.sampled_from(CompareMode)),
        "include": draw(st.lists(texts, max_size=3)),
        "exclude": draw(st.lists(texts, max_size=3)),
        "deleteExtraneous": draw(st.booleans()),
        "copyMetadata": draw(st.booleans()),
        "copyTags": draw(st.booleans()),
        "chunkSize": chunk,
        "multipartThreshold": draw(st.integers(chunk, 2 * MAX_PART_SIZE)),
        "giantFileThreshold": draw(st.integers(MIN_PART_SIZE, 10 * MAX_PART_SIZE)),
        "maxRetries": draw(st.integers(0, 100)),
        "workers": draw(st.integers(1, 512)),
        "concurrency": draw(st.integers(1, 512)),
        "listDepth": draw(st.integers(0, 8)),
        "dryRun": draw(st.booleans()),
    }
    raw = {
        "type": "S3",
        "source": draw(locations(destination=False)),
        "destination": draw(locations(destination=True)),
        # Some options set, some left to their defaults (the two sizes together: one bounds the other).
        "options": {
            key: value
            for key, value in options.items()
            if key in ("chunkSize", "multipartThreshold") or draw(st.booleans())
        },
        "schedule": draw(st.sampled_from(["once", "0 2 * * *", "*/5 * * * MON-FRI"])),
        "events": draw(st.sampled_from(EventsMode)),
        "suspend": draw(st.booleans()),
    }
    # Overlapping source and destination are refused by the model: make the destination bucket differ.
    raw["destination"]["bucket"] = "d" + raw["destination"]["bucket"]
    return S3TaskSpec.model_validate(raw)


@settings(max_examples=150, deadline=None)
@given(specs())
def test_every_spec_survives_the_round_trip_through_the_environment(spec: S3TaskSpec) -> None:
    environment = spec_environment(spec)
    assert set(environment) == {leaf.env_name for leaf in spec_leaves()}
    assert all(isinstance(value, str) for value in environment.values())
    assert spec_from_environment(environment) == spec


def test_unset_means_the_model_default_and_only_required_fields_are_needed() -> None:
    spec = spec_from_environment(
        {"DTH_SPEC_SOURCE_BUCKET": "src-b", "DTH_SPEC_DESTINATION_BUCKET": "dst-b", "HOME": "/"}
    )
    assert spec == S3TaskSpec.model_validate(
        {"type": "S3", "source": {"bucket": "src-b"}, "destination": {"bucket": "dst-b"}}
    )
    empty = {name: "" for name in spec_environment(spec)}
    empty.update(DTH_SPEC_SOURCE_BUCKET="src-b", DTH_SPEC_DESTINATION_BUCKET="dst-b")
    assert spec_from_environment(empty) == spec
    assert spec.source.credentials is None  # an optional block with no field set is absent


def test_sizes_may_be_written_with_units() -> None:
    spec = spec_from_environment(
        {
            "DTH_SPEC_SOURCE_BUCKET": "src-b",
            "DTH_SPEC_DESTINATION_BUCKET": "dst-b",
            "DTH_SPEC_OPTIONS_CHUNK_SIZE": "16MiB",
            "DTH_SPEC_OPTIONS_MULTIPART_THRESHOLD": "64MiB",
        }
    )
    assert (spec.options.chunk_size, spec.options.multipart_threshold) == (16 << 20, 64 << 20)


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("DTH_SPEC_OPTIONS_WORKERS", "many", "DTH_SPEC_OPTIONS_WORKERS: must be a whole number"),
        ("DTH_SPEC_OPTIONS_WORKERS", "0", "DTH_SPEC_OPTIONS_WORKERS (options.workers): Input should be greater"),
        ("DTH_SPEC_OPTIONS_DRY_RUN", "yes", "DTH_SPEC_OPTIONS_DRY_RUN: must be true or false"),
        ("DTH_SPEC_OPTIONS_EXCLUDE", "*.tmp", "DTH_SPEC_OPTIONS_EXCLUDE: must be a JSON array of strings"),
        ("DTH_SPEC_OPTIONS_EXCLUDE", "[1]", "DTH_SPEC_OPTIONS_EXCLUDE: must be a JSON array of strings"),
        ("DTH_SPEC_DESTINATION_SSE", "KMS", "DTH_SPEC_DESTINATION_SSE (destination.sse): Input should be"),
        ("DTH_SPEC_OPTIONS_CHUNKSIZE", "8MiB", "DTH_SPEC_OPTIONS_CHUNKSIZE: no such field"),
        ("DTH_SPEC_TYPE", "Image", "DTH_SPEC_TYPE (type): Input should be 'S3'"),
        ("DTH_SPEC_DESTINATION_KMS_KEY_ID", "k", "spec.destination: kmsKeyId is only used with sse AWS_KMS"),
    ],
)
def test_a_wrong_variable_is_named(variable: str, value: str, message: str) -> None:
    environment = {"DTH_SPEC_SOURCE_BUCKET": "src-b", "DTH_SPEC_DESTINATION_BUCKET": "dst-b", variable: value}
    with pytest.raises(SpecError) as raised:
        spec_from_environment(environment)
    assert message in str(raised.value)


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(SpecError) as raised:
        spec_from_environment({})
    assert "spec.source: Field required" in str(raised.value)


def test_the_s3_entrypoints_read_the_per_field_variables_or_the_json_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in __import__("os").environ if name.startswith(("DTH_", "AWS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DTH_TASK_NAME", "ns-task")
    monkeypatch.setenv("DTH_STATE_PATH", "/nonexistent/state.sqlite")
    with pytest.raises(SpecError, match=f"neither DTH_TASK_SPEC .* nor {ENV_PREFIX}"):
        EngineEnvironment.from_environment()
    spec = S3TaskSpec.model_validate(
        {
            "type": "S3",
            "source": {"bucket": "src-b", "prefix": "a, b/", "credentials": {"secretsManagerArn": ARN}},
            "destination": {"bucket": "dst-b", "storageClass": "STANDARD_IA"},
            "options": {"exclude": ["*.tmp", "x,y"], "maxRetries": 2},
        }
    )
    for name, value in spec_environment(spec).items():
        monkeypatch.setenv(name, value)
    assert EngineEnvironment.from_environment().spec == spec
    monkeypatch.setenv("DTH_SPEC_OPTIONS_MAX_RETRIES", "many")
    with pytest.raises(SpecError, match="DTH_SPEC_OPTIONS_MAX_RETRIES"):
        EngineEnvironment.from_environment()
    # DTH_TASK_SPEC, when set, is the spec (the per-field variables are then not read).
    monkeypatch.setenv("DTH_TASK_SPEC", spec.model_dump_json(by_alias=True))
    assert EngineEnvironment.from_environment().spec == spec
