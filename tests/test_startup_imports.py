"""`dth s3 sync` loads only what it uses: no boto3; on static keys from the environment and a path-style
endpoint not even botocore's session, client, credential chain or urllib3 (only botocore's exception classes,
which the engine catches); no rich without a terminal bar, no image command or task (its spec models or its
engine), no development tools. Start-up was a quarter of a small sync's CPU and most of a no-op re-sync's
(issue #12); these tests fail when an eager import comes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dth.devtools.sites import S3Site

# Packages and modules `dth s3 sync` must not import, with the reason.
NOT_ON_THE_S3_PATH = {
    "boto3": "the S3 data path needs botocore only",
    "s3transfer": "boto3's transfer manager",
    "rich": "only a terminal progress bar uses it",
    "dth.spec.image": "the image task's models",
    "dth.spec.task": "the union of every task type (manifests only)",
    "dth.image": "the image engine",
    "yaml": "only manifests are YAML",
    "dth.cli.image": "the image command",
    "dth.devtools.ecs_runner": "a development tool",
    "botocore.session": "botocore's session: static keys and a path-style endpoint need none",
    "botocore.client": "botocore's client: built only for what the lean client does not serve",
    "botocore.credentials": "botocore's credential chain: static keys come from the environment",
    "botocore.loaders": "the service model is read from botocore's data file directly",
    "urllib3": "the lean client speaks http.client",
}

# Runs the command in this interpreter (without arguments: only builds the parser), then names every module
# above that got imported.
PROBE = """
import json, sys
from dth.cli.main import build_parser, main
code = main(sys.argv[1:]) if sys.argv[1:] else (build_parser() and 0)
loaded = sorted(name for name in NAMES if name in sys.modules)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def probe(*args: str, site: S3Site | None = None) -> tuple[int, list[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if site is not None:
        env.update(
            AWS_ACCESS_KEY_ID=site.access_key, AWS_SECRET_ACCESS_KEY=site.secret_key, AWS_DEFAULT_REGION=site.region
        )
    script = PROBE.replace("NAMES", repr(sorted(NOT_ON_THE_S3_PATH)))
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    lines = done.stderr.strip().splitlines()
    assert lines, f"no output: {done.stdout!r}"
    result = json.loads(lines[-1])
    return int(result["code"]), list(result["loaded"]), done.stdout + done.stderr


def explain(loaded: list[str]) -> str:
    return "; ".join(f"{name} ({NOT_ON_THE_S3_PATH[name]})" for name in loaded)


def test_the_dth_parser_imports_no_engine_and_no_sdk() -> None:
    code, loaded, output = probe()
    assert code == 0, output
    assert loaded == [], f"`dth`'s parser loaded {explain(loaded)}"


@pytest.mark.parametrize("endpoints", ["one", "two"], ids=["server-side", "streamed"])
def test_s3_sync_on_static_keys_copies_and_resyncs_without_botocore_sessions_or_the_image_task(
    rgw_site: S3Site, rgw_site2: S3Site, unique_name: str, tmp_path: Path, endpoints: str
) -> None:
    client = rgw_site.client()
    source, destination = f"{unique_name}-src", f"{unique_name}-dst"
    client.create_bucket(Bucket=source)
    client.create_bucket(Bucket=destination)
    for index in range(5):
        client.put_object(Bucket=source, Key=f"k/{index}", Body=b"x" * index)
    state = tmp_path / "state.sqlite"
    where = (
        ("--endpoint", rgw_site.url)
        if endpoints == "one"
        else ("--source-endpoint", rgw_site.url, "--dest-endpoint", rgw_site2.url)
    )
    arguments = ("s3", "sync", f"s3://{source}", f"s3://{destination}", *where)
    for run in ("first sync", "no-op re-sync"):
        code, loaded, output = probe(*arguments, "--output", "json", "--state", str(state), site=rgw_site)
        assert code == 0, output
        assert loaded == [], f"{run}: `dth s3 sync` loaded {explain(loaded)}"
    copied = client.list_objects_v2(Bucket=destination)["KeyCount"]
    assert copied == 5
