"""The image engine end to end on real registries: two Debian docker-registry servers on 127.0.0.1 (one
behind htpasswd basic auth) and Debian skopeo. Images are built in Python (dth.devtools.oci) and pushed
over the registry API; every assertion on the destination reads it back with digests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from dth.devtools.oci import Image, Index, Pusher, build_image, build_multiarch
from dth.devtools.registry import DockerRegistry
from dth.image.retry import RetryPolicy
from dth.image.skopeo import Platform
from dth.image.sync import COPIED, FAILED, SKIPPED, ImageOutcome, ImageSync, ImageSyncResult
from dth.spec.image import ImageTaskSpec
from dth.state.store import ObjectState, SqliteStatusStore

REGISTRY_USER = "dth-user"
REGISTRY_PASSWORD = "s3cret-Registry-Pass"  # as in conftest.py
FAST_RETRY = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05)
AMD64 = Platform("linux", "amd64")
REPO_ROOT = Path(__file__).resolve().parents[1]


def pusher(registry: DockerRegistry) -> Pusher:
    return Pusher(registry.url, username=registry.username, password=registry.password)


def fill(registry: DockerRegistry, images: dict[str, Image | Index]) -> dict[str, str]:
    """Push {"repo:tag": image}; returns {"repo:tag": digest}."""
    client = pusher(registry)
    digests = {}
    for name, artifact in images.items():
        repository, tag = name.rsplit(":", 1)
        digests[name] = client.push(repository, tag, artifact)
    return digests


def destination_digests(registry: DockerRegistry, names: Sequence[str], prefix: str = "") -> dict[str, str | None]:
    client = pusher(registry)
    out = {}
    for name in names:
        repository, tag = name.rsplit(":", 1)
        out[name] = client.digest(prefix + repository, tag)
    return out


def side(registry: DockerRegistry, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "Registry", "registry": registry.host, "insecure": True, **extra}
    if registry.username:
        out["credentials"] = {"env": "DTH_TEST_REGISTRY"}
    return out


def make_spec(
    source: DockerRegistry, destination: DockerRegistry, images: dict[str, Any], *, prefix: str = "", **options: Any
) -> ImageTaskSpec:
    return ImageTaskSpec.model_validate(
        {
            "type": "Image",
            "source": {**side(source), "images": images},
            "destination": side(destination, prefix=prefix),
            "options": options,
        }
    )


def run(
    spec: ImageTaskSpec,
    tmp_path: Path,
    *,
    on_image: Callable[[ImageOutcome], None] | None = None,
    retry: RetryPolicy = FAST_RETRY,
) -> ImageSyncResult:
    return ImageSync(
        spec,
        task_name="test",
        state_path=tmp_path / "state.sqlite",
        on_image=on_image,
        retry=retry,
        platform=AMD64,
    ).run()


def states(result: ImageSyncResult) -> dict[str, str]:
    return {outcome.key: outcome.state for outcome in result.images}


@pytest.fixture(autouse=True)
def _registry_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTH_TEST_REGISTRY_USERNAME", REGISTRY_USER)
    monkeypatch.setenv("DTH_TEST_REGISTRY_PASSWORD", REGISTRY_PASSWORD)


SIX = {
    "team/api:1.0.0": build_image("api-1.0.0"),
    "team/api:1.1.0": build_image("api-1.1.0", layers=2),
    "team/api:latest": build_image("api-1.1.0", layers=2),  # the same image under two tags
    "team/web:2.0": build_image("web-2.0", fmt="docker"),
    "tools:latest": build_image("tools"),
    "deep/path/to/repo:v3": build_image("deep"),
}


# --------------------------------------------------------------------------------------------------
# copy, then nothing, then only what changed


def test_first_sync_copies_everything_with_identical_digests_then_nothing(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    sources = fill(registry, SIX)
    spec = make_spec(registry, auth_registry, {"all": True}, prefix="mirror/")

    first = run(spec, tmp_path)
    assert first.error is None and first.accounted
    assert states(first) == dict.fromkeys(SIX, COPIED)
    assert (first.counters.found, first.counters.copied, first.counters.skipped, first.counters.failed) == (6, 6, 0, 0)
    assert destination_digests(auth_registry, list(SIX), "mirror/") == sources
    for outcome in first.images:
        assert outcome.source_digest == outcome.destination_digest == sources[outcome.key]
        assert outcome.destination == f"mirror/{outcome.key}"
    assert pusher(auth_registry).catalog() == [
        "mirror/deep/path/to/repo",
        "mirror/team/api",
        "mirror/team/web",
        "mirror/tools",
    ]

    second = run(spec, tmp_path)
    assert second.accounted
    assert states(second) == dict.fromkeys(SIX, SKIPPED)
    assert (second.counters.found, second.counters.copied, second.counters.skipped) == (6, 0, 6)

    # The status store has a record per image: key repo:tag, source digest, copied digest, outcome.
    store = SqliteStatusStore(tmp_path / "state.sqlite")
    try:
        records = {r.key: r for r in store.records(first.run_id, [ObjectState.COPIED])}
        assert set(records) == set(SIX)
        assert all(records[k].etag == sources[k] and records[k].attempts == 1 for k in SIX)
        assert all(records[k].reason.startswith("copied in ") for k in SIX)
        assert store.counters(second.run_id).skipped == 6
        assert {r.key for r in store.records(second.run_id, [ObjectState.SKIPPED])} == set(SIX)
        # the store keeps the copied digest as dest_etag
        row = store._db._connection.execute(
            "SELECT dest_etag FROM objects WHERE run_id = ? AND key = ?", (first.run_id, "tools:latest")
        ).fetchone()
        assert row == (sources["tools:latest"],)
    finally:
        store.close()


def test_a_changed_and_a_retagged_image_are_the_only_ones_copied(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    fill(registry, SIX)
    spec = make_spec(registry, auth_registry, {"all": True})
    assert run(spec, tmp_path).counters.copied == 6

    changed = fill(registry, {"team/web:2.0": build_image("web-2.0-rebuilt"), "tools:latest": SIX["team/api:1.0.0"]})
    result = run(spec, tmp_path)
    assert result.accounted
    assert {k for k, v in states(result).items() if v == COPIED} == {"team/web:2.0", "tools:latest"}
    assert result.counters.skipped == 4
    after = destination_digests(auth_registry, ["team/web:2.0", "tools:latest"])
    assert after == changed


def test_all_tags_and_tag_regex_and_semver(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    tags = ["1.0.0", "1.2.0", "1.10.3", "2.0.0", "2.0.0-rc.1", "latest", "dev-abc"]
    fill(registry, {f"app:{t}": build_image(f"app-{t}") for t in tags} | {"other:1.5.0": build_image("other")})

    every = run(make_spec(registry, auth_registry, {"names": ["app:ALL_TAGS"]}, dryRun=True), tmp_path)
    assert sorted(states(every)) == sorted(f"app:{t}" for t in tags)

    regex = run(
        make_spec(registry, auth_registry, {"names": ["app:ALL_TAGS", "other:1.5.0"], "tagRegex": r"^1\."}), tmp_path
    )
    # The filter applies to tags that were listed; a tag named outright is always copied.
    assert states(regex) == {"app:1.0.0": COPIED, "app:1.2.0": COPIED, "app:1.10.3": COPIED, "other:1.5.0": COPIED}

    semver = run(make_spec(registry, auth_registry, {"names": ["app:ALL_TAGS"], "semver": ">=1.2 <3"}), tmp_path)
    assert states(semver) == {"app:1.2.0": SKIPPED, "app:1.10.3": SKIPPED, "app:2.0.0": COPIED}
    assert sorted(pusher(auth_registry).tags("app")) == ["1.0.0", "1.10.3", "1.2.0", "2.0.0"]


def test_a_tag_defaults_to_latest_and_a_missing_image_fails_alone(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    fill(registry, {"tools:latest": build_image("tools"), "app:1": build_image("app")})
    result = run(make_spec(registry, auth_registry, {"names": ["tools", "app:2", "nothing:ALL_TAGS"]}), tmp_path)
    assert states(result) == {"tools:latest": COPIED, "app:2": FAILED, "nothing:ALL_TAGS": FAILED}
    failed = {o.key: o for o in result.failed}
    assert "has no image app:2" in failed["app:2"].reason
    assert failed["app:2"].attempts == 1  # not found: not worth retrying
    assert "no repository nothing" in failed["nothing:ALL_TAGS"].reason
    assert (result.counters.found, result.counters.copied, result.counters.failed) == (3, 1, 2)
    assert not result.accounted and result.error is None


# --------------------------------------------------------------------------------------------------
# multi-platform images


def test_multi_arch_all_copies_the_index_and_system_only_this_platform(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    index = build_multiarch("multi", [("linux", "amd64"), ("linux", "arm64"), ("linux", "s390x")])
    fill(registry, {"multi:1.0": index, "single:1.0": build_image("single")})
    names = {"names": ["multi:1.0", "single:1.0"]}

    everything = run(make_spec(registry, auth_registry, names, prefix="all/", multiArch="all"), tmp_path)
    assert everything.accounted and states(everything) == {"multi:1.0": COPIED, "single:1.0": COPIED}
    found = pusher(auth_registry).manifest("all/multi", "1.0")
    assert found is not None and json.loads(found[1])["mediaType"] == index.media_type
    assert pusher(auth_registry).digest("all/multi", "1.0") == index.digest
    for image in index.images:  # every platform's image is there, by digest
        assert pusher(auth_registry).digest("all/multi", image.digest) == image.digest

    amd64 = index.image_for("linux", "amd64")
    system = run(make_spec(registry, auth_registry, names, prefix="sys/", multiArch="system"), tmp_path)
    assert system.accounted and states(system) == {"multi:1.0": COPIED, "single:1.0": COPIED}
    assert pusher(auth_registry).digest("sys/multi", "1.0") == amd64.digest
    assert pusher(auth_registry).digest("sys/multi", index.images[1].digest) is None  # no arm64 image
    outcome = next(o for o in system.images if o.key == "multi:1.0")
    assert (outcome.source_digest, outcome.destination_digest) == (index.digest, amd64.digest)

    again = run(make_spec(registry, auth_registry, names, prefix="sys/", multiArch="system"), tmp_path)
    assert states(again) == {"multi:1.0": SKIPPED, "single:1.0": SKIPPED}


def test_system_mode_fails_an_index_without_this_platform(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    fill(registry, {"arm:1": build_multiarch("arm", [("linux", "arm64")])})
    result = run(make_spec(registry, auth_registry, {"names": ["arm:1"]}, multiArch="system"), tmp_path)
    (outcome,) = result.failed
    assert "without a linux/amd64 image" in outcome.reason


# --------------------------------------------------------------------------------------------------
# failures


def test_wrong_credentials_fail_every_image_with_one_clear_reason(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(registry, {"tools:latest": build_image("tools"), "app:1": build_image("app")})
    monkeypatch.setenv("DTH_TEST_REGISTRY_PASSWORD", "not-the-password")
    result = run(make_spec(registry, auth_registry, {"names": ["tools", "app:1"]}), tmp_path)
    assert result.error == f"destination registry {auth_registry.host} rejected the credentials (HTTP 401 unauthorized)"
    assert states(result) == {"tools:latest": FAILED, "app:1": FAILED}
    assert all(o.reason == result.error for o in result.failed)
    assert (result.counters.found, result.counters.failed) == (2, 2)
    assert pusher(auth_registry).catalog() == []


def test_source_without_credentials_names_the_source(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    spec = ImageTaskSpec.model_validate(
        {
            "type": "Image",
            "source": {
                "type": "Registry",
                "registry": auth_registry.host,
                "insecure": True,
                "images": {"names": ["a"]},
            },
            "destination": side(registry),
        }
    )
    result = run(spec, tmp_path)
    assert result.error == f"source registry {auth_registry.host} requires credentials (HTTP 401 unauthorized)"
    assert [o.key for o in result.failed] == ["a:latest"]


def test_a_registry_that_stops_mid_sync_ends_with_retries_and_an_exact_failed_list(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    images = {f"app{n}:v1": build_image(f"app{n}") for n in range(5)}
    fill(registry, images)
    spec = make_spec(registry, auth_registry, {"all": True}, concurrency=1, maxRetries=2)

    def stop_after_first_copy(outcome: ImageOutcome) -> None:
        if outcome.state == COPIED and auth_registry.running:
            auth_registry.stop()

    result = run(spec, tmp_path, on_image=stop_after_first_copy)
    assert result.error is None and not result.accounted
    assert states(result) == {"app0:v1": COPIED} | {f"app{n}:v1": FAILED for n in range(1, 5)}
    for outcome in result.failed:
        assert outcome.attempts == 3  # the first and maxRetries more
        assert "is unreachable" in outcome.reason and "connection refused" in outcome.reason.lower()
    assert (result.counters.found, result.counters.copied, result.counters.failed) == (5, 1, 4)
    store = SqliteStatusStore(tmp_path / "state.sqlite")
    try:
        failed = store.records(result.run_id, [ObjectState.FAILED])
        assert [(r.key, r.attempts) for r in failed] == [(f"app{n}:v1", 3) for n in range(1, 5)]
        assert all("unreachable" in r.last_error for r in failed)
    finally:
        store.close()

    auth_registry.start()  # same port, same storage: the next run copies exactly what failed
    again = run(spec, tmp_path)
    assert again.accounted
    assert states(again) == {"app0:v1": SKIPPED} | {f"app{n}:v1": COPIED for n in range(1, 5)}


def test_an_unreachable_registry_at_the_start_is_an_error(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    from dth.errors import AccessError

    auth_registry.stop()
    with pytest.raises(AccessError, match=f"destination registry {auth_registry.host} is unreachable"):
        run(make_spec(registry, auth_registry, {"names": ["a"]}, maxRetries=1), tmp_path)


def test_dry_run_copies_nothing(registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path) -> None:
    fill(registry, {"a:1": build_image("a"), "b:1": build_image("b")})
    fill(auth_registry, {"a:1": build_image("a")})
    result = run(make_spec(registry, auth_registry, {"all": True}, dryRun=True), tmp_path)
    assert result.dry_run and result.run_id == "dry-run"
    assert states(result) == {"a:1": SKIPPED, "b:1": "to-copy"}
    assert pusher(auth_registry).catalog() == ["a"]


# --------------------------------------------------------------------------------------------------
# the command line


def dth(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "engines"), str(REPO_ROOT / "operator")])
    return subprocess.run(
        [sys.executable, "-m", "dth", *args], capture_output=True, text=True, env=environment, timeout=300, check=False
    )


def test_cli_sync_progress_json_and_exit_codes(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    fill(registry, {"team/a:1": build_image("a1"), "team/a:2": build_image("a2"), "b:latest": build_image("b")})
    env = {"DTH_STATE_DIR": str(tmp_path / "state"), "DST_USERNAME": REGISTRY_USER, "DST_PASSWORD": REGISTRY_PASSWORD}
    base = [
        "-vv",
        "image",
        "sync",
        registry.host,
        f"{auth_registry.host}/mirror",
        "--insecure",
        "--dest-credentials-env",
        "DST",
    ]

    first = dth(*base, "--image", "team/a:ALL_TAGS,b", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("done: copied 3, skipped 0 (unchanged), failed 0, of 3 images")

    second = dth(*base, "--all", "--output", "json", env=env)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["ok"] is True and report["counters"] == {"found": 3, "copied": 0, "skipped": 3, "failed": 0}
    assert {i["image"]: i["destination"] for i in report["images"]} == {
        "b:latest": "mirror/b:latest",
        "team/a:1": "mirror/team/a:1",
        "team/a:2": "mirror/team/a:2",
    }

    missing = dth(*base, "--image", "b,ghost:1", "--max-retries", "0", env=env)
    assert missing.returncode == 1
    assert "failed: ghost:1: " in missing.stdout and "INCOMPLETE" in missing.stdout

    wrong = dth(*base, "--image", "b", env={**env, "DST_PASSWORD": "bad-password-123"})
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1] == (
        f"dth: error: destination registry {auth_registry.host} rejected the credentials (HTTP 401 unauthorized)"
    )
    assert "failed: b:latest: " in wrong.stdout

    bad = dth("image", "sync", registry.host, auth_registry.host, "--image", "UPPER:case", env=env)
    assert bad.returncode == 2 and "spec.source.images.names" in bad.stderr

    # -vv logs debug lines from every part; the password never shows, not even in skopeo's command line.
    for done in (first, second, missing, wrong):
        assert REGISTRY_PASSWORD not in done.stdout + done.stderr
        assert "bad-password-123" not in done.stdout + done.stderr


def test_cli_dry_run_prints_the_plan(registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path) -> None:
    fill(registry, {"a:1": build_image("a")})
    env = {"DTH_STATE_DIR": str(tmp_path), "DST_USERNAME": REGISTRY_USER, "DST_PASSWORD": REGISTRY_PASSWORD}
    done = dth(
        "image",
        "sync",
        registry.host,
        auth_registry.host,
        "--insecure",
        "--dest-credentials-env",
        "DST",
        "--all",
        "--dry-run",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("copy a:1 -> a:1 (sha256:")
    assert "dry run: 1 to copy, 0 unchanged, 0 failed, of 1 found" in done.stdout
    assert pusher(auth_registry).catalog() == []


def test_dth_run_and_validate_an_image_manifest(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    fill(registry, {"a:1": build_image("a"), "m:1": build_multiarch("m", [("linux", "amd64"), ("linux", "arm64")])})
    manifest = tmp_path / "task.yaml"
    manifest.write_text(
        f"""\
apiVersion: dth.io/v1alpha1
kind: TransferTask
metadata:
  name: mirror-images
spec:
  type: Image
  source:
    type: Registry
    registry: "{registry.host}"
    insecure: true
    images:
      names: ["a:1", "m:ALL_TAGS"]
  destination:
    type: Registry
    registry: "{auth_registry.host}"
    insecure: true
    prefix: copy/
    credentials: {{env: DST}}
  options:
    multiArch: all
    concurrency: 4
  schedule: "0 2 * * *"
""",
        encoding="utf-8",
    )
    env = {"DTH_STATE_DIR": str(tmp_path), "DST_USERNAME": REGISTRY_USER, "DST_PASSWORD": REGISTRY_PASSWORD}
    valid = dth("validate", str(manifest), env=env)
    assert valid.returncode == 0 and "valid Image TransferTask default/mirror-images" in valid.stdout
    done = dth("run", str(manifest), "--output", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counters"] == {"found": 2, "copied": 2, "skipped": 0, "failed": 0}
    assert (tmp_path / "default-mirror-images.sqlite").exists()


def test_container_entrypoint_reads_its_config_from_the_environment(
    registry: DockerRegistry, auth_registry: DockerRegistry, tmp_path: Path
) -> None:
    fill(registry, {"a:1": build_image("a")})
    spec = {
        "type": "Image",
        "source": {"type": "Registry", "registry": registry.host, "insecure": True, "images": {"all": True}},
        "destination": {**side(auth_registry), "credentials": {"env": "DST"}},
    }
    env = {
        "DTH_TASK_SPEC": json.dumps(spec),
        "DTH_TASK_NAME": "ns-mirror",
        "DTH_STATE_PATH": str(tmp_path / "entry.sqlite"),
        "DST_USERNAME": REGISTRY_USER,
        "DST_PASSWORD": REGISTRY_PASSWORD,
    }
    done = dth("image", "sync-env", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counters"]["copied"] == 1
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(entry.get("image") == "a:1" and entry["message"] == "copied a:1" for entry in logged)
    assert (tmp_path / "entry.sqlite").exists()

    broken = dth("image", "sync-env", env={**env, "DTH_TASK_SPEC": '{"type": "Image"'})
    assert broken.returncode == 2 and "DTH_TASK_SPEC" in broken.stderr


def test_container_entrypoint_records_a_run_that_could_not_start_in_the_status_table(
    registry: DockerRegistry, moto_server: Any, unique_name: str, tmp_path: Path
) -> None:
    """The operator reads the stack's status table: a registry that cannot be reached must show there."""
    import boto3

    from dth.devtools.ports import free_port
    from dth.state.dynamodb import DynamoStatusStore, create_table

    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=moto_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
    )
    create_table(dynamodb, unique_name)
    nowhere = f"127.0.0.1:{free_port()}"
    spec = {
        "type": "Image",
        "source": {"type": "Registry", "registry": registry.host, "insecure": True, "images": {"all": True}},
        "destination": {"type": "Registry", "registry": nowhere, "insecure": True},
        "options": {"maxRetries": 0},
    }
    env = {
        "DTH_TASK_SPEC": json.dumps(spec),
        "DTH_TASK_NAME": "ns-unreachable",
        "DTH_TABLE_NAME": unique_name,
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": moto_server.access_key,
        "AWS_SECRET_ACCESS_KEY": moto_server.secret_key,
    }
    done = dth("image", "sync-env", env=env)
    assert done.returncode == 2 and nowhere in done.stderr
    table = DynamoStatusStore(dynamodb, unique_name)
    run = table.latest_run("ns-unreachable")
    assert run is not None and table.scan_finished(run)
    assert nowhere in (table.scan_error(run) or "")
