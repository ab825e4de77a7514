"""The Image task's spec, names, tag filters and the pieces of the engine that need no server."""

from __future__ import annotations

import itertools
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from dth.errors import AccessError, SpecError
from dth.image.auth import login_from_docker_config, login_from_env
from dth.image.errors import NotFoundError, RegistryAuthError
from dth.image.refs import (
    ImageName,
    api_host,
    api_repository,
    ecr_host,
    parse_ecr_host,
    parse_image_entry,
    split_image_list,
)
from dth.image.registry import Login, next_link, parse_challenge
from dth.image.retry import RetriesExhaustedError, RetryPolicy, retrying
from dth.image.semver import parse_range, parse_version
from dth.image.skopeo import Platform, Skopeo, classify, skopeo_message
from dth.spec.crd import render_crd
from dth.spec.image import ImageTaskSpec, MultiArch, RegistryType
from dth.spec.load import parse_manifest, parse_task_spec


def image_spec(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "Image",
        "source": {"type": "Registry", "registry": "quay.io", "images": {"names": ["coreos/etcd:v3.5.0"]}},
        "destination": {"type": "Amazon_ECR", "accountId": "123456789012", "region": "us-west-2"},
    }
    for section, value in changes.items():
        raw[section] = {**raw[section], **value} if isinstance(value, dict) and section in raw else value
    return raw


def spec_error(raw: Any) -> str:
    with pytest.raises(SpecError) as caught:
        parse_task_spec(raw)
    return str(caught.value)


# --------------------------------------------------------------------------------------------------
# the spec


def test_defaults_and_derived_hosts() -> None:
    spec = parse_task_spec(image_spec())
    assert isinstance(spec, ImageTaskSpec)
    assert spec.source.type is RegistryType.REGISTRY and spec.source.host() == "quay.io"
    assert spec.destination.host() == "123456789012.dkr.ecr.us-west-2.amazonaws.com"
    o = spec.options
    assert (o.multi_arch, o.concurrency, o.max_retries, o.create_repositories, o.dry_run) == (
        MultiArch.ALL,
        10,
        3,
        True,
        False,
    )
    assert (spec.schedule, spec.suspend, spec.destination.prefix) == ("once", False, "")
    assert spec.source.images.entries() == [ImageName("coreos/etcd", "v3.5.0")]


def test_china_partition_ecr_host() -> None:
    spec = parse_task_spec(image_spec(destination={"region": "cn-north-1"}))
    assert spec.destination.host() == "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"  # type: ignore[union-attr]
    assert ecr_host("111122223333", "cn-northwest-1") == "111122223333.dkr.ecr.cn-northwest-1.amazonaws.com.cn"
    assert parse_ecr_host("111122223333.dkr.ecr.cn-northwest-1.amazonaws.com.cn") == ("111122223333", "cn-northwest-1")
    assert parse_ecr_host("111122223333.dkr.ecr.eu-west-1.amazonaws.com") == ("111122223333", "eu-west-1")
    assert parse_ecr_host("111122223333.dkr.ecr.eu-west-1.amazonaws.com.cn") is None  # not a China region
    assert parse_ecr_host("quay.io") is None


def test_ecr_account_and_region_come_from_an_ecr_host_too() -> None:
    spec = parse_task_spec(
        image_spec(
            destination={"accountId": None, "region": None, "registry": "210987654321.dkr.ecr.eu-west-1.amazonaws.com"}
        )
    )
    assert isinstance(spec, ImageTaskSpec)
    assert (spec.destination.ecr_account(), spec.destination.ecr_region()) == ("210987654321", "eu-west-1")


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        pytest.param(
            image_spec(source={"images": {}}),
            "spec.source.images",
            "exactly one of all: true, names or ssmParameter",
            id="no-images",
        ),
        pytest.param(
            image_spec(source={"images": {"all": True, "names": ["a"]}}),
            "spec.source.images",
            "(got all, names)",
            id="two-lists",
        ),
        pytest.param(
            image_spec(source={"images": {"names": ["Bad/Name"]}}),
            "spec.source.images.names",
            "not a repository name",
            id="bad-name",
        ),
        pytest.param(
            image_spec(source={"images": {"names": ["a:-x"]}}), "spec.source.images.names", "not a tag", id="bad-tag"
        ),
        pytest.param(
            image_spec(source={"images": {"names": ["quay.io/a/b:1"]}}),
            "spec.source.images.names",
            "names a registry host",
            id="host-in-entry",
        ),
        pytest.param(
            image_spec(source={"images": {"names": ["a@sha256:00"]}}), "spec.source.images.names", "digest", id="digest"
        ),
        pytest.param(
            image_spec(source={"images": {"all": True, "tagRegex": "(("}}),
            "spec.source.images.tagRegex",
            "regular expression",
            id="bad-regex",
        ),
        pytest.param(
            image_spec(source={"images": {"all": True, "semver": ">=one"}}),
            "spec.source.images.semver",
            "comparator",
            id="bad-semver",
        ),
        pytest.param(
            image_spec(source={"registry": None}), "spec.source", "Registry needs a registry host", id="no-host"
        ),
        pytest.param(
            image_spec(source={"registry": "https://quay.io"}),
            "spec.source.registry",
            "without a scheme or path",
            id="url-not-host",
        ),
        pytest.param(
            image_spec(destination={"region": None}),
            "spec.destination",
            "Amazon_ECR needs accountId and region",
            id="ecr-no-region",
        ),
        pytest.param(
            image_spec(destination={"accountId": "12345"}),
            "spec.destination.accountId",
            "12 digits",
            id="short-account",
        ),
        pytest.param(
            image_spec(source={"accountId": "123456789012"}),
            "spec.source",
            "accountId only apply to type Amazon_ECR",
            id="account-on-registry",
        ),
        pytest.param(image_spec(source={"type": "Docker"}), "spec.source.type", "'Amazon_ECR'", id="bad-type"),
        pytest.param(
            image_spec(source={"credentials": {"profile": "dev"}}),
            "spec.source",
            "profile names an AWS profile",
            id="profile-on-registry",
        ),
        pytest.param(
            image_spec(destination={"credentials": {"env": "X"}}),
            "spec.destination",
            "credentials.env is for a Registry",
            id="env-on-ecr",
        ),
        pytest.param(
            image_spec(source={"credentials": {"env": "X", "secretName": "y"}}),
            "spec.source.credentials",
            "exactly one of secretName, secretsManagerArn, profile or env (got secretName, env)",
            id="two-credentials",
        ),
        pytest.param(
            image_spec(destination={"prefix": "/abs"}),
            "spec.destination.prefix",
            "the start of a repository name",
            id="bad-prefix",
        ),
        pytest.param(
            image_spec(options={"multiArch": "arm"}), "spec.options.multiArch", "'all' or 'system'", id="bad-multiarch"
        ),
        pytest.param(
            image_spec(options={"concurrency": 0}), "spec.options.concurrency", "from 1 to 256", id="no-concurrency"
        ),
        pytest.param(image_spec(options={"bucket": "x"}), "spec.options.bucket", "unknown field", id="s3-option"),
        pytest.param(
            image_spec(schedule="daily"),
            "spec.schedule",
            "five-field cron expression such as `0 2 * * *`",
            id="bad-schedule",
        ),
    ],
)
def test_errors_name_the_field(raw: dict[str, Any], field: str, words: str) -> None:
    message = spec_error(raw)
    assert message.startswith(f"{field}: "), message
    assert words in message, message


def test_copy_onto_itself_is_refused() -> None:
    images = {"names": ["a"]}
    same = {"type": "Registry", "registry": "registry.example.com"}
    raw = {"type": "Image", "source": {**same, "images": images}, "destination": same}
    assert spec_error(raw).startswith("spec: source and destination are the same registry")
    docker_hub = {"type": "Image", "source": {"type": "Registry", "registry": "docker.io", "images": images}}
    raw = {**docker_hub, "destination": {"type": "Registry", "registry": "registry-1.docker.io"}}
    assert spec_error(raw).startswith("spec: source and destination are the same registry")
    raw["destination"]["prefix"] = "copy/"
    assert isinstance(parse_task_spec(raw), ImageTaskSpec)


def test_manifest_round_trip_and_crd(tmp_path: Path) -> None:
    manifest = {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {"name": "images"},
        "spec": image_spec(
            source={"credentials": {"secretName": "quay-login"}, "images": {"names": ["a:ALL_TAGS"], "semver": "^1"}},
            options={"multiArch": "system", "concurrency": 20, "maxRetries": 5, "createRepositories": False},
            schedule="0 3 * * *",
        ),
    }
    task = parse_manifest(manifest)
    assert isinstance(task.spec, ImageTaskSpec)
    dumped = task.spec.model_dump(mode="json", by_alias=True)
    assert dumped["source"]["images"]["all"] is False and dumped["options"]["multiArch"] == "system"
    assert parse_task_spec(dumped) == task.spec
    # the CRD's schema accepts it (the cluster tests check with a real apiserver)
    jsonschema = pytest.importorskip("jsonschema")
    crd = yaml.safe_load(render_crd())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    image = schema["properties"]["source"]["properties"]["images"]
    assert set(image["properties"]) == {"all", "names", "ssmParameter", "tagRegex", "semver"}
    assert schema["properties"]["options"]["properties"]["multiArch"]["enum"] == ["all", "system"]
    jsonschema.Draft4Validator(_openapi_to_jsonschema(schema)).validate(json.loads(json.dumps(dumped)))


def _openapi_to_jsonschema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {
            k: _openapi_to_jsonschema(v)
            for k, v in node.items()
            if not k.startswith("x-kubernetes-") and k != "nullable"
        }
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


# --------------------------------------------------------------------------------------------------
# names and lists


@pytest.mark.parametrize(
    ("entry", "name"),
    [
        ("nginx", ImageName("nginx", "latest")),
        ("library/nginx:1.27", ImageName("library/nginx", "1.27")),
        ("team/app:ALL_TAGS", ImageName("team/app", "ALL_TAGS")),
        (" a-b_c/d__e.f:v1.0_rc ", ImageName("a-b_c/d__e.f", "v1.0_rc")),
        ("a.b/c:1", None),  # a host, as docker reads it
        ("my.app:1", ImageName("my.app", "1")),  # one component: a repository, not a host
    ],
)
def test_image_entries(entry: str, name: ImageName | None) -> None:
    if name is None:
        with pytest.raises(ValueError, match="names a registry host"):
            parse_image_entry(entry)
    else:
        assert parse_image_entry(entry) == name


@pytest.mark.parametrize(
    "entry", ["", "UPPER", "a:b:c", "localhost:5000/a", "registry.io/a", "a//b", "a:.x", "a@sha256:1"]
)
def test_bad_image_entries(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_image_entry(entry)


def test_image_list_text_as_dth_keeps_it() -> None:
    text = "ubuntu:ALL_TAGS,nginx:latest\n# copied nightly\nalpine:3.19  team/app # trailing\n\n,"
    assert split_image_list(text) == ["ubuntu:ALL_TAGS", "nginx:latest", "alpine:3.19", "team/app"]


def test_docker_hub_names() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_repository("docker.io", "nginx") == "library/nginx"
    assert api_repository("docker.io", "bitnami/redis") == "bitnami/redis"
    assert api_repository("quay.io", "nginx") == "nginx"


# --------------------------------------------------------------------------------------------------
# semver


@pytest.mark.parametrize(
    ("range_", "matching", "not_matching"),
    [
        (">=1.2.0 <2", ["1.2.0", "v1.9.9", "1.10.0"], ["1.1.9", "2.0.0", "2.0.0-rc.1", "latest"]),
        ("^1.4", ["1.4.0", "1.99.0"], ["1.3.9", "2.0.0", "1.5.0-beta"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
        ("~2.3.1", ["2.3.1", "2.3.9"], ["2.4.0", "2.3.0"]),
        ("1.x", ["1.0.0", "1.27", "1"], ["2.0.0", "0.9.0"]),
        ("*", ["0.0.1", "10.2.3"], ["nightly", "1.2.3-alpine"]),
        ("=3.0.0", ["3.0.0", "v3.0.0+build.5"], ["3.0.1"]),
        (">1.2", ["1.3.0"], ["1.2.9"]),
        ("<=1.2", ["1.2.9", "0.1.0"], ["1.3.0"]),
        ("<1.2 || >=3", ["1.1.0", "3.0.0"], ["2.0.0", "1.2.0"]),
        (">=2.0.0-rc.1 <2.1", ["2.0.0-rc.1", "2.0.0-rc.2", "2.0.0"], ["2.0.0-beta.9", "2.1.0"]),
        (">= 1.2, < 1.3", ["1.2.5"], ["1.3.0"]),
    ],
)
def test_semver_ranges(range_: str, matching: list[str], not_matching: list[str]) -> None:
    parsed = parse_range(range_)
    for tag in matching:
        assert parsed.matches(tag), f"{range_} should match {tag}"
    for tag in not_matching:
        assert not parsed.matches(tag), f"{range_} should not match {tag}"


def test_semver_precedence() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    versions = [parse_version(t) for t in ordered]
    assert all(v is not None for v in versions)
    assert all(a < b for a, b in itertools.pairwise(versions))  # type: ignore[operator]


@pytest.mark.parametrize("text", ["", "x.1", ">=", "1.x.3", "||"])
def test_bad_semver_ranges(text: str) -> None:
    with pytest.raises(ValueError):
        parse_range(text)


# --------------------------------------------------------------------------------------------------
# registry protocol details, skopeo, credentials, retries


def test_auth_challenges_and_pagination_links() -> None:
    assert parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"'
    ) == (
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:library/nginx:pull",
        },
    )
    assert parse_challenge("Basic realm=dth") == ("basic", {"realm": "dth"})
    assert next_link('</v2/_catalog?last=b&n=2>; rel="next"') == "/v2/_catalog?last=b&n=2"
    assert next_link(None) is None


def test_skopeo_errors_are_sorted_into_retryable_and_not() -> None:
    stderr = (
        'time="2026" level=fatal msg="reading manifest 1 in 127.0.0.1:5000/a: manifest unknown: manifest unknown"\n'
    )
    assert skopeo_message(stderr) == "reading manifest 1 in 127.0.0.1:5000/a: manifest unknown: manifest unknown"
    assert isinstance(classify(skopeo_message(stderr)), NotFoundError)
    denied = classify("checking whether a blob exists in 127.0.0.1:5000/x: unauthorized: authentication required")
    assert isinstance(denied, RegistryAuthError) and not denied.retryable
    assert classify(
        'pinging container registry 127.0.0.1:1: Get "http://127.0.0.1:1/v2/": dial tcp: connect: connection refused'
    ).retryable
    assert classify("received unexpected HTTP status: 503 Service Unavailable").retryable
    assert classify("something nobody has seen before").retryable


def test_skopeo_auth_files_are_private_and_rewritten_when_the_login_changes() -> None:
    skopeo = Skopeo()
    try:
        path = skopeo.authfile("destination", "registry.example.com", Login("AWS", "token-one"))
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert login_from_docker_config(json.loads(path.read_text()), "registry.example.com") == Login(
            "AWS", "token-one"
        )
        skopeo.authfile("destination", "registry.example.com", Login("AWS", "token-two"))
        assert login_from_docker_config(json.loads(path.read_text()), "registry.example.com") == Login(
            "AWS", "token-two"
        )
        assert skopeo.authfile("source", "quay.io", None) is None
        assert "token" not in repr(Login("AWS", "token-two"))
    finally:
        skopeo.close()
    assert not path.exists()


def test_docker_config_logins() -> None:
    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
            "quay.io": {"username": "q", "password": "p"},
        }
    }
    assert login_from_docker_config(config, "docker.io") == Login("user", "pass")
    assert login_from_docker_config(config, "quay.io") == Login("q", "p")
    assert login_from_docker_config(config, "ghcr.io") is None


def test_env_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAY_USERNAME", "robot")
    monkeypatch.delenv("QUAY_PASSWORD", raising=False)
    with pytest.raises(AccessError, match="QUAY_PASSWORD is not set"):
        login_from_env("QUAY")
    monkeypatch.setenv("QUAY_PASSWORD", "pw")
    assert login_from_env("QUAY") == Login("robot", "pw")


def test_retries_back_off_and_stop() -> None:
    from dth.image.errors import RegistryError

    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RegistryError("503", retryable=True)
        return "ok"

    policy = RetryPolicy(max_retries=3, base_delay=1.0, max_delay=30.0)
    assert retrying(flaky, policy, sleep=sleeps.append) == ("ok", 3)
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0  # exponential, with jitter

    def broken() -> str:
        raise RegistryError("down", retryable=True)

    with pytest.raises(RetriesExhaustedError) as caught:
        retrying(broken, RetryPolicy(max_retries=2), sleep=lambda _: None)
    assert caught.value.attempts == 3

    def denied() -> str:
        raise RegistryAuthError("no")

    with pytest.raises(RetriesExhaustedError) as refused:
        retrying(denied, RetryPolicy(max_retries=5), sleep=lambda _: None)
    assert refused.value.attempts == 1


def test_platform_matching() -> None:
    amd64 = Platform("linux", "amd64")
    assert amd64.matches({"os": "linux", "architecture": "amd64"})
    assert not amd64.matches({"os": "linux", "architecture": "arm64"})
    arm = Platform("linux", "arm", "v7")
    assert arm.matches({"os": "linux", "architecture": "arm", "variant": "v7"})
    assert not arm.matches({"os": "linux", "architecture": "arm", "variant": "v6"})


def test_progress_display_renders_before_and_after_planning() -> None:
    import io

    from dth.cli.image import progress_display
    from dth.spec.model import TransferCounters

    stream = io.StringIO()
    with progress_display(stream) as display:
        display.update(TransferCounters(), False)  # nothing found yet: no total
        display.update(TransferCounters(found=3, copied=1, skipped=1), True)
    assert "2/3 images" in stream.getvalue()
