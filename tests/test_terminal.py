"""Every command a person types, run on a real terminal (a tmux pane), with assertions on what the
screen shows: the bar moves, the counts, the summary, and never a traceback.

These exist because 594 tests that ran the CLI through pipes never saw `dth s3 sync` crash on every
terminal: rich draws its live bar only when standard error is a TTY.
"""

from __future__ import annotations

import io
import re
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from dth.devtools.faultproxy import Fault, FaultProxy
from dth.devtools.oci import build_image
from dth.devtools.registry import DockerRegistry
from dth.devtools.sites import S3Site
from dth.devtools.terminal import Terminal, tmux_available
from dth.spec.model import MiB

pytestmark = pytest.mark.skipif(not tmux_available(), reason="tmux is not installed (apt-get install tmux)")

DTH = [sys.executable, "-m", "dth"]
COUNT = re.compile(r"(\d+)/(\d+) objects")


@pytest.fixture
def buckets(rgw_site: S3Site, unique_name: str) -> Iterator[tuple[str, str]]:
    client = rgw_site.client()
    source, destination = f"{unique_name}-src", f"{unique_name}-dst"
    for bucket in (source, destination):
        client.create_bucket(Bucket=bucket)
    yield source, destination


def fill(site: S3Site, bucket: str, count: int, size: int = 1024) -> None:
    client = site.client(max_pool_connections=16)
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda n: client.put_object(Bucket=bucket, Key=f"logs/{n:05d}.log", Body=b"x" * size), range(count)
            )
        )


def keys_and_etags(site: S3Site, bucket: str) -> dict[str, str]:
    pages = site.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents", [])}


def assert_no_traceback(*screens: str) -> None:
    for screen in screens:
        assert "Traceback" not in screen, screen


def counts_seen(frames: list[str]) -> set[tuple[int, int]]:
    return {(int(done), int(total)) for frame in frames for done, total in COUNT.findall(frame)}


def test_s3_sync_on_a_terminal_shows_a_moving_bar_and_the_summary(rgw_site: S3Site, buckets: tuple[str, str]) -> None:
    source, destination = buckets
    fill(rgw_site, source, 1500)
    command = [
        *DTH,
        "s3",
        "sync",
        f"s3://{source}",
        f"s3://{destination}",
        "--endpoint",
        rgw_site.url,
        "--workers",
        "8",
    ]
    with Terminal(command, environment=_keys(rgw_site)) as terminal:
        frames = terminal.frames_until_exit(timeout=180)
        status = terminal.exit_status()
    last = frames[-1]
    assert_no_traceback(*frames)
    assert status == 0, last
    assert "done: copied 1500" in last and "failed 0, of 1500 found" in last, last
    seen = counts_seen(frames)
    # The bar moved: it showed at least two different counts on its way, and it ended full.
    assert len({done for done, _ in seen}) >= 2, frames
    assert (1500, 1500) in seen, last
    assert "━" in last  # rich's bar, drawn on the terminal and left in place
    assert len(keys_and_etags(rgw_site, destination)) == 1500


def test_ctrl_c_mid_multipart_reports_exits_130_and_leaves_nothing_a_rerun_does_not_finish(
    rgw_site: S3Site, rgw_site2: S3Site, buckets: tuple[str, str]
) -> None:
    source, destination = buckets
    client = rgw_site.client()
    # Multipart sources of 5 MiB parts: copied in their own layout, their ETags must come out equal.
    parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    for number in range(4):
        body = io.BytesIO(bytes([number]) * (12 * MiB))
        client.upload_fileobj(body, source, f"big/{number}.bin", Config=parts)
    fill(rgw_site, source, 20)
    # Through two endpoints the copy streams, part by part; every part upload waits a second in the
    # proxy, so Ctrl-C lands while multipart uploads are open.
    with FaultProxy(rgw_site2.url) as proxy:
        proxy.add(Fault(method="PUT", query_contains="partNumber", delay=1.0))
        command = [
            *DTH, "s3", "sync", f"s3://{source}", f"s3://{destination}",
            "--source-endpoint", rgw_site.url, "--dest-endpoint", proxy.url,
            "--multipart-threshold", "5MiB", "--chunk-size", "5MiB", "--workers", "2", "--concurrency", "2",
        ]  # fmt: skip
        with Terminal(command, environment=_keys(rgw_site)) as terminal:
            terminal.wait_for_screen(lambda s: "objects" in s, timeout=60, what="the bar")
            _wait_for_open_uploads(rgw_site, destination)
            terminal.send_keys("C-c")
            status = terminal.wait_for_exit(timeout=60)
            screen = terminal.screen()
    assert_no_traceback(screen)
    assert status == 130, screen
    assert "dth: stopping" in screen
    summary = re.search(r"interrupted: copied (\d+) .* of (\d+) found so far", screen)
    assert summary, screen
    uploads = rgw_site.client().list_multipart_uploads(Bucket=destination).get("Uploads", [])
    assert uploads == [], "an interrupted sync left multipart uploads open"

    # The same command again, without the proxy's delay, finishes the job.
    again = [*DTH, "s3", "sync", f"s3://{source}", f"s3://{destination}", "--endpoint", rgw_site.url]
    with Terminal([*again, "--multipart-threshold", "5MiB", "--chunk-size", "5MiB"], environment=_keys(rgw_site)) as t:
        assert t.wait_for_exit(timeout=120) == 0, t.screen()
        assert "done: copied" in t.screen()
    assert keys_and_etags(rgw_site, destination) == keys_and_etags(rgw_site, source)


def _wait_for_open_uploads(site: S3Site, bucket: str) -> None:
    from dth.devtools.waiting import wait_for

    client = site.client()
    wait_for(lambda: client.list_multipart_uploads(Bucket=bucket).get("Uploads"), timeout=60, what="an open upload")


def test_run_of_a_manifest_on_a_terminal(rgw_site: S3Site, buckets: tuple[str, str], tmp_path: Path) -> None:
    source, destination = buckets
    fill(rgw_site, source, 300)
    manifest = tmp_path / "task.yaml"
    manifest.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: dth.io/v1alpha1
            kind: TransferTask
            metadata: {{name: terminal-run}}
            spec:
              type: S3
              source: {{type: S3_Compatible, endpoint: "{rgw_site.url}", bucket: {source}}}
              destination: {{type: S3_Compatible, endpoint: "{rgw_site.url}", bucket: {destination}}}
            """
        ),
        encoding="utf-8",
    )
    with Terminal(
        [*DTH, "run", str(manifest), "--state", str(tmp_path / "state.sqlite")], environment=_keys(rgw_site)
    ) as t:
        frames = t.frames_until_exit(timeout=120)
        status = t.exit_status()
    assert_no_traceback(*frames)
    assert status == 0, frames[-1]
    assert "done: copied 300" in frames[-1]
    assert (300, 300) in counts_seen(frames)


def test_validate_on_a_terminal_says_what_is_wrong_in_words(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "apiVersion: dth.io/v1alpha1\nkind: TransferTask\nmetadata: {name: ok}\n"
        "spec: {type: S3, source: {bucket: src-bucket}, destination: {bucket: dst-bucket}}\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: dth.io/v1alpha1\nkind: TransferTask\nmetadata: {name: bad}\n"
        "spec: {type: S3, schedule: nightly, source: {bucket: 'my bucket!'}, destination: {bucket: dst-bucket},"
        " options: {chunkSize: 1MiB}}\n",
        encoding="utf-8",
    )
    with Terminal([*DTH, "validate", str(good)]) as t:
        assert t.wait_for_exit(timeout=60) == 0
        assert "valid S3 TransferTask default/ok" in t.screen()
    with Terminal([*DTH, "validate", str(bad)], width=200) as t:
        assert t.wait_for_exit(timeout=60) == 2
        screen = t.screen()
    assert_no_traceback(screen)
    assert "schedule must be `once` or a five-field cron expression such as `0 2 * * *`" in screen, screen
    assert "chunkSize must be at least 5 MiB" in screen, screen
    assert "spec.source.bucket" in screen and "bucket names are" in screen, screen
    assert "pattern" not in screen and "5242880" not in screen, screen


def test_image_sync_on_a_terminal(registry: DockerRegistry, auth_registry: DockerRegistry) -> None:
    from dth.devtools.oci import Pusher

    pusher = Pusher(registry.url, username=registry.username, password=registry.password)
    for number in range(3):
        pusher.push("team/app", f"v{number}", build_image(f"terminal-{number}"))
    command = [
        *DTH, "image", "sync", registry.host, f"{auth_registry.host}/mirror", "--insecure",
        "--image", "team/app:ALL_TAGS", "--dest-credentials-env", "DST",
    ]  # fmt: skip
    environment = {"DST_USERNAME": auth_registry.username or "", "DST_PASSWORD": auth_registry.password or ""}
    with Terminal(command, environment=environment) as t:
        frames = t.frames_until_exit(timeout=120)
        status = t.exit_status()
    assert_no_traceback(*frames)
    assert status == 0, frames[-1]
    assert "done: copied 3, skipped 0 (unchanged), failed 0, of 3 images" in frames[-1]
    assert any("3/3 images" in frame for frame in frames), frames[-1]
    assert (auth_registry.password or "-") not in "".join(frames)


def test_demo_on_a_terminal(moto_server: object) -> None:
    """The README's first command, as a newcomer types it."""
    with Terminal([*DTH, "demo", "--objects", "200"], height=50) as t:
        frames = t.frames_until_exit(timeout=300)
        status = t.exit_status()
    assert_no_traceback(*frames)
    last = frames[-1]
    assert status == 0, last
    assert "demo: verified: 208 objects with identical keys, sizes and ETags" in last, last
    assert "done: copied 208" in last and "done: copied 0 " in last, last
    assert (208, 208) in counts_seen(frames)


def _keys(site: S3Site) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": site.access_key,
        "AWS_SECRET_ACCESS_KEY": site.secret_key,
        "AWS_DEFAULT_REGION": site.region,
    }


@pytest.mark.parametrize("command", [["s3", "sync"], ["image", "sync"]], ids=["s3", "image"])
def test_help_ends_with_examples_that_are_valid_commands(command: list[str]) -> None:
    import shlex

    from dth.cli import image, s3
    from dth.cli.main import build_parser

    with Terminal([*DTH, *command, "--help"], height=200) as t:
        assert t.wait_for_exit(timeout=60) == 0
        screen = t.screen()
    assert_no_traceback(screen)
    examples = screen[screen.index("examples:") :]
    lines = examples.replace("\\\n", " ").splitlines()
    typed = [shlex.split(line)[1:] for line in lines if line.strip().startswith("dth ")]
    assert len(typed) >= 3, examples
    to_spec = {"s3": s3.spec_from_arguments, "image": image.spec_from_arguments}[command[0]]
    for argv in typed:
        assert argv[:2] == command
        to_spec(build_parser().parse_args(argv))  # every example is a valid command: no SpecError
