"""The ECR path: moto server answers the ECR API (DescribeRepositories, DescribeImages,
GetAuthorizationToken, CreateRepository) and SSM; a local docker-registry stands in for the account's
registry host, since moto has no /v2/ endpoint. The stand-in only accepts user `AWS` with the token moto
hands out, so a passing test shows the engine exchanged its AWS keys for the token and used it.

moto's DescribeImages digests are not the manifests' digests (here: the SHA-256 of nothing), so the engine
takes every digest from the registry (HEAD on the manifest), never from DescribeImages.

What these tests do not show: real ECR's /v2/ endpoint and TLS, its manifest and media-type quirks, token
expiry, IAM permissions, or throttling.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from dth.devtools.moto import MotoServer
from dth.devtools.oci import Pusher, build_image
from dth.devtools.registry import DockerRegistry
from dth.image.retry import RetryPolicy
from dth.image.skopeo import Platform
from dth.image.sync import COPIED, SKIPPED, ImageSync, ImageSyncResult
from dth.spec.image import ImageTaskSpec

ACCOUNT = "123456789012"  # moto's default account
FAST_RETRY = RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.02)


@pytest.fixture
def region() -> str:
    """Overridden per test (parametrize) with a region of its own: moto's session-wide ECR state, which
    `all` lists whole, stays apart between tests."""
    return "us-west-1"


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Ambient AWS credentials (any will do for moto), and nothing from ~/.aws."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.secret_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    yield


def ecr_client(moto_server: MotoServer, region: str) -> Any:
    return boto3.client(
        "ecr",
        endpoint_url=moto_server.endpoint_url,
        region_name=region,
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
    )


@pytest.fixture
def ecr_registry(moto_server: MotoServer, region: str, tmp_path: Path) -> Iterator[DockerRegistry]:
    """The ECR registry host's stand-in: basic auth with exactly the login GetAuthorizationToken gives."""
    token = ecr_client(moto_server, region).get_authorization_token(registryIds=[ACCOUNT])["authorizationData"][0]
    user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
    assert user == "AWS" and password
    server = DockerRegistry(tmp_path / "ecr", htpasswd_user=user, htpasswd_password=password)
    server.start()
    try:
        yield server
    finally:
        server.close()


def ecr_side(moto_server: MotoServer, region: str, registry: DockerRegistry, **extra: Any) -> dict[str, Any]:
    return {
        "type": "Amazon_ECR",
        "accountId": ACCOUNT,
        "region": region,
        "endpoint": moto_server.endpoint_url,
        "registry": registry.host,  # the stand-in instead of ACCOUNT.dkr.ecr.REGION.amazonaws.com
        "insecure": True,
        **extra,
    }


def run(spec: dict[str, Any], tmp_path: Path) -> ImageSyncResult:
    return ImageSync(
        ImageTaskSpec.model_validate(spec),
        task_name="ecr",
        state_path=tmp_path / "state.sqlite",
        retry=FAST_RETRY,
        platform=Platform("linux", "amd64"),
    ).run()


def put_in_ecr(
    moto_server: MotoServer, region: str, registry: DockerRegistry, images: dict[str, str]
) -> dict[str, str]:
    """Each "repo:tag": the image bytes in the stand-in registry, the repository and tag in moto's ECR."""
    ecr = ecr_client(moto_server, region)
    pusher = Pusher(registry.url, username=registry.username, password=registry.password)
    digests = {}
    for name, seed in images.items():
        repository, tag = name.rsplit(":", 1)
        image = build_image(seed)
        digests[name] = pusher.push(repository, tag, image)
        with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
            ecr.create_repository(repositoryName=repository)
        ecr.put_image(repositoryName=repository, imageManifest=image.manifest.decode(), imageTag=tag)
    return digests


@pytest.mark.parametrize("region", ["eu-west-3"])
def test_ecr_source_all_lists_repositories_and_tags_through_the_api(
    moto_server: MotoServer,
    aws_env: None,
    region: str,
    ecr_registry: DockerRegistry,
    registry: DockerRegistry,
    tmp_path: Path,
) -> None:
    digests = put_in_ecr(
        moto_server, region, ecr_registry, {"team/api:1.0": "api1", "team/api:1.1": "api11", "web:latest": "web"}
    )
    # In the stand-in registry but not in ECR: `all` must list through the ECR API, not the catalog.
    Pusher(ecr_registry.url, username=ecr_registry.username, password=ecr_registry.password).push(
        "not-in-ecr", "1", build_image("stray")
    )
    spec = {
        "type": "Image",
        "source": {**ecr_side(moto_server, region, ecr_registry), "images": {"all": True}},
        "destination": {"type": "Registry", "registry": registry.host, "insecure": True, "prefix": "from-ecr/"},
    }
    first = run(spec, tmp_path)
    assert first.error is None and first.accounted
    assert {o.key: o.state for o in first.images} == dict.fromkeys(digests, COPIED)
    pusher = Pusher(registry.url)
    for name, digest in digests.items():
        repository, tag = name.rsplit(":", 1)
        assert pusher.digest(f"from-ecr/{repository}", tag) == digest
    second = run(spec, tmp_path)
    assert {o.key: o.state for o in second.images} == dict.fromkeys(digests, SKIPPED)


@pytest.mark.parametrize("region", ["ap-south-1"])
def test_ecr_destination_creates_repositories_and_uses_the_token(
    moto_server: MotoServer,
    aws_env: None,
    region: str,
    ecr_registry: DockerRegistry,
    registry: DockerRegistry,
    tmp_path: Path,
) -> None:
    source = Pusher(registry.url)
    digests = {name: source.push(*name.rsplit(":", 1), build_image(name)) for name in ("lib/a:1", "lib/b:2")}
    prefix = f"mirror-{uuid.uuid4().hex[:6]}/"
    spec = {
        "type": "Image",
        "source": {"type": "Registry", "registry": registry.host, "insecure": True, "images": {"names": list(digests)}},
        "destination": {**ecr_side(moto_server, region, ecr_registry), "prefix": prefix},
    }
    result = run(spec, tmp_path)
    assert result.accounted, result.failed
    repositories = {
        r["repositoryName"] for r in ecr_client(moto_server, region).describe_repositories()["repositories"]
    }
    assert {f"{prefix}lib/a", f"{prefix}lib/b"} <= repositories
    target = Pusher(ecr_registry.url, username=ecr_registry.username, password=ecr_registry.password)
    assert target.digest(f"{prefix}lib/a", "1") == digests["lib/a:1"]
    assert target.digest(f"{prefix}lib/b", "2") == digests["lib/b:2"]
    assert {o.state for o in run(spec, tmp_path).images} == {SKIPPED}


@pytest.mark.parametrize("region", ["sa-east-1"])
def test_ecr_destination_without_create_repositories_leaves_ecr_alone(
    moto_server: MotoServer,
    aws_env: None,
    region: str,
    ecr_registry: DockerRegistry,
    registry: DockerRegistry,
    tmp_path: Path,
) -> None:
    Pusher(registry.url).push("solo", "1", build_image("solo"))
    prefix = f"nocreate-{uuid.uuid4().hex[:6]}/"
    spec = {
        "type": "Image",
        "source": {"type": "Registry", "registry": registry.host, "insecure": True, "images": {"names": ["solo:1"]}},
        "destination": {**ecr_side(moto_server, region, ecr_registry), "prefix": prefix},
        "options": {"createRepositories": False},
    }
    result = run(spec, tmp_path)
    # The stand-in registry creates repositories on push, as real ECR would not: only ECR's side is checked.
    assert result.accounted
    repositories = {
        r["repositoryName"] for r in ecr_client(moto_server, region).describe_repositories()["repositories"]
    }
    assert f"{prefix}solo" not in repositories


@pytest.mark.parametrize("region", ["ca-central-1"])
def test_ecr_all_tags_entry_lists_tags_with_describe_images(
    moto_server: MotoServer,
    aws_env: None,
    region: str,
    ecr_registry: DockerRegistry,
    registry: DockerRegistry,
    tmp_path: Path,
) -> None:
    put_in_ecr(moto_server, region, ecr_registry, {"svc:v1": "v1", "svc:v2": "v2", "svc:dev": "dev"})
    spec = {
        "type": "Image",
        "source": {
            **ecr_side(moto_server, region, ecr_registry),
            "images": {"names": ["svc:ALL_TAGS", "ghost:ALL_TAGS"], "tagRegex": "^v"},
        },
        "destination": {"type": "Registry", "registry": registry.host, "insecure": True},
    }
    result = run(spec, tmp_path)
    states = {o.key: o.state for o in result.images}
    assert states == {"svc:v1": COPIED, "svc:v2": COPIED, "ghost:ALL_TAGS": "failed"}
    (ghost,) = result.failed
    assert "RepositoryNotFoundException" in ghost.reason


@pytest.mark.parametrize("region", ["eu-north-1"])
def test_image_list_from_an_ssm_parameter(
    moto_server: MotoServer,
    aws_env: None,
    region: str,
    registry: DockerRegistry,
    auth_registry: DockerRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pusher = Pusher(registry.url)
    for name in ("a:1", "a:2", "b:latest"):
        pusher.push(*name.rsplit(":", 1), build_image(name))
    ssm = boto3.client(
        "ssm",
        endpoint_url=moto_server.endpoint_url,
        region_name=region,
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
    )
    parameter = f"/dth/images-{uuid.uuid4().hex[:6]}"
    ssm.put_parameter(Name=parameter, Value="a:ALL_TAGS, b\n# a comment\n", Type="String")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("DST_USERNAME", auth_registry.username or "")
    monkeypatch.setenv("DST_PASSWORD", auth_registry.password or "")
    spec = {
        "type": "Image",
        "source": {
            "type": "Registry",
            "registry": registry.host,
            "insecure": True,
            "images": {"ssmParameter": parameter},
        },
        "destination": {
            "type": "Registry",
            "registry": auth_registry.host,
            "insecure": True,
            "credentials": {"env": "DST"},
        },
    }
    result = run(spec, tmp_path)
    assert {o.key: o.state for o in result.images} == {"a:1": COPIED, "a:2": COPIED, "b:latest": COPIED}


@pytest.mark.parametrize("region", ["us-west-2"])
def test_container_entrypoint_records_status_in_dynamodb(
    moto_server: MotoServer, aws_env: None, region: str, registry: DockerRegistry, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from dth.state.dynamodb import DynamoStatusStore, create_table
    from dth.state.store import ObjectState

    source = Pusher(registry.url)
    digest = source.push("svc", "1", build_image("svc-1"))
    client = boto3.client(
        "dynamodb",
        endpoint_url=moto_server.endpoint_url,
        region_name=region,
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
    )
    table = f"dth-images-{uuid.uuid4().hex[:6]}"
    create_table(client, table)
    spec = {
        "type": "Image",
        "source": {"type": "Registry", "registry": registry.host, "insecure": True, "images": {"names": ["svc:1"]}},
        "destination": {"type": "Registry", "registry": registry.host, "insecure": True, "prefix": "copy/"},
    }
    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": f"{repo / 'engines'}{os.pathsep}{repo / 'operator'}",
        "DTH_TASK_SPEC": json.dumps(spec),
        "DTH_TASK_NAME": "ns-images",
        "DTH_TABLE_NAME": table,
        "AWS_REGION": region,
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        "DTH_STATE_PATH": str(tmp_path / "unused.sqlite"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "dth", "image", "sync-env"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "unused.sqlite").exists()
    store = DynamoStatusStore(client, table)
    run = store.latest_run("ns-images")
    assert run is not None
    assert store.counters(run).copied == 1
    (record,) = store.records(run, [ObjectState.COPIED])
    assert (record.key, record.etag, record.attempts) == ("svc:1", digest, 1)
    assert Pusher(registry.url).digest("copy/svc", "1") == digest
