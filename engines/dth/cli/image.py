"""`dth image sync` (standalone), `dth image sync-env` (the container entrypoint) and `dth run` of an Image
task: flags, environment and manifests become the same spec model, run by the same engine.

`dth image sync-env` reads: DTH_TASK_SPEC (the Image task's spec as JSON or YAML; or DTH_TASK_SPEC_FILE),
DTH_TASK_NAME, DTH_NAMESPACE, DTH_DRY_RUN, and where to record status: DTH_TABLE_NAME with AWS_REGION (and
optional AWS_ENDPOINT_URL) for DynamoDB, else the SQLite file DTH_STATE_PATH (default under DTH_STATE_DIR).
It prints the JSON report on stdout and logs JSON lines on stderr.

Exit codes as for S3: 0 when every image found was copied or skipped (already there); 1 when some failed
(listed, with the reason); 2 for bad input, or a registry that is unreachable or refuses the credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dth.errors import DthError, SpecError
from dth.spec.image_kinds import RegistryType
from dth.spec.load import parse_task_spec

if TYPE_CHECKING:
    from dth.cli.live import LiveProgress
    from dth.image.sync import ImageOutcome, ImageSyncResult
    from dth.spec.image import ImageTaskSpec
    from dth.spec.model import TransferCounters
    from dth.spec.task import TransferTask
    from dth.state.store import StatusStore

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_ERROR = 2
MAX_LISTED = 50


def _side(args: argparse.Namespace, flag: str, text: str, role: str) -> dict[str, Any]:
    host, _, prefix = text.strip().removeprefix("docker://").partition("/")
    if not host:
        raise SpecError(f"{role} {text!r} names no registry host")
    if prefix and role == "source":
        raise SpecError(f"source {text!r}: name the registry host only; images go in --image")
    from dth.image.refs import parse_ecr_host  # the image engine loads only for image commands

    side: dict[str, Any] = {"registry": host}
    kind = getattr(args, f"{flag}_type")
    side["type"] = kind or (RegistryType.AMAZON_ECR.value if parse_ecr_host(host) else RegistryType.REGISTRY.value)
    for option, field in (("account_id", "accountId"), ("region", "region"), ("endpoint", "endpoint")):
        value = getattr(args, f"{flag}_{option}")
        if value:
            side[field] = value
    if getattr(args, f"{flag}_insecure") or args.insecure:
        side["insecure"] = True
    credentials = {
        field: getattr(args, f"{flag}_{option}")
        for option, field in (
            ("profile", "profile"),
            ("credentials_env", "env"),
            ("secrets_manager_arn", "secretsManagerArn"),
        )
        if getattr(args, f"{flag}_{option}")
    }
    if credentials:
        side["credentials"] = credentials
    if prefix:
        side["prefix"] = prefix if prefix.endswith("/") else prefix + "/"
    return side


def spec_from_arguments(args: argparse.Namespace) -> ImageTaskSpec:
    source = _side(args, "source", args.source, "source")
    destination = _side(args, "dest", args.destination, "destination")
    images: dict[str, Any] = {}
    if args.all:
        images["all"] = True
    names = [part.strip() for entry in args.images for part in entry.split(",") if part.strip()]
    if names:
        images["names"] = names
    if args.ssm_parameter:
        images["ssmParameter"] = args.ssm_parameter
    if args.tag_regex:
        images["tagRegex"] = args.tag_regex
    if args.semver:
        images["semver"] = args.semver
    source["images"] = images
    options: dict[str, Any] = {"dryRun": args.dry_run, "createRepositories": not args.no_create_repositories}
    for flag, field in (("multi_arch", "multiArch"), ("concurrency", "concurrency"), ("max_retries", "maxRetries")):
        if getattr(args, flag) is not None:
            options[field] = getattr(args, flag)
    from dth.spec.image import ImageTaskSpec

    spec = parse_task_spec({"type": "Image", "source": source, "destination": destination, "options": options})
    assert isinstance(spec, ImageTaskSpec)
    return spec


# --------------------------------------------------------------------------------------------------
# running and reporting


def progress_display(stream: TextIO | None = None) -> LiveProgress:
    """The bar of an image sync: images done of found, and how each ended."""
    from dth.cli.live import Frame, LiveProgress

    def frame(counters: TransferCounters, planned: bool) -> Frame:
        done = counters.copied + counters.skipped + counters.failed
        return Frame(
            phase="copying" if planned else "listing",
            completed=done,
            total=counters.found if planned else None,
            count=f"{done}/{counters.found} images" if planned else f"{counters.found} found",
            detail=f"{counters.copied} copied, {counters.skipped} unchanged, {counters.failed} failed",
        )

    return LiveProgress("listing", frame, stream)


def summary_line(result: ImageSyncResult) -> str:
    c = result.counters
    if result.dry_run:
        return (
            f"dry run: {len(result.to_copy)} to copy, {c.skipped} unchanged, {c.failed} failed, "
            f"of {c.found} found in {result.elapsed:.1f} s"
        )
    return (
        f"{'done' if result.accounted else 'INCOMPLETE'}: copied {c.copied}, skipped {c.skipped} (unchanged), "
        f"failed {c.failed}, of {c.found} images in {result.elapsed:.1f} s"
    )


def print_text(result: ImageSyncResult, out: TextIO = sys.stdout) -> None:
    print(summary_line(result), file=out)
    if result.error:
        print(f"error: {result.error}", file=out)
    failed = result.failed
    for outcome in failed[:MAX_LISTED]:
        tries = f" ({outcome.attempts} attempts)" if outcome.attempts > 1 else ""
        print(f"failed: {outcome.key}: {outcome.reason}{tries}", file=out)
    if len(failed) > MAX_LISTED:
        print(f"... and {len(failed) - MAX_LISTED} more (see --output json)", file=out)


def print_plan_line(outcome: ImageOutcome, out: TextIO = sys.stdout) -> None:
    """A dry run's plan, one image per line."""
    from dth.image.sync import FAILED, TO_COPY

    if outcome.state == TO_COPY:
        print(f"copy {outcome.key} -> {outcome.destination} ({outcome.source_digest}; {outcome.reason})", file=out)
    elif outcome.state == FAILED:
        print(f"fail {outcome.key}: {outcome.reason}", file=out)


def as_json(result: ImageSyncResult) -> dict[str, Any]:
    def image(o: ImageOutcome) -> dict[str, Any]:
        return {
            "image": o.key,
            "destination": o.destination,
            "state": o.state,
            "sourceDigest": o.source_digest,
            "destinationDigest": o.destination_digest,
            "attempts": o.attempts,
            "seconds": round(o.seconds, 3),
            "reason": o.reason,
        }

    c = result.counters
    return {
        "run": result.run_id,
        "ok": result.error is None and (result.accounted or (result.dry_run and c.failed == 0)),
        "dryRun": result.dry_run,
        "elapsedSeconds": round(result.elapsed, 3),
        "counters": {"found": c.found, "copied": c.copied, "skipped": c.skipped, "failed": c.failed},
        "error": result.error,
        "failed": [image(o) for o in result.failed],
        "images": [image(o) for o in result.images],
    }


def exit_code(result: ImageSyncResult) -> int:
    if result.error:
        return EXIT_ERROR
    if result.dry_run:
        return EXIT_OK if result.counters.failed == 0 else EXIT_INCOMPLETE
    return EXIT_OK if result.accounted else EXIT_INCOMPLETE


def execute(
    spec: ImageTaskSpec,
    task_name: str,
    args: argparse.Namespace,
    namespace: str = "default",
    store: StatusStore | None = None,
) -> int:
    output = getattr(args, "output", "text")
    dry_run = spec.options.dry_run
    show_bar = output == "text" and not args.no_progress and sys.stderr.isatty() and not dry_run
    display = progress_display() if show_bar else None
    from dth.image.sync import ImageSync

    sync = ImageSync(
        spec,
        task_name=task_name,
        state_path=getattr(args, "state", None),
        namespace=namespace,
        store=store,
        on_progress=display.update if display else None,
        on_image=print_plan_line if dry_run and output == "text" else None,
    )
    try:
        if display:
            with display:
                result = sync.run()
        else:
            result = sync.run()
    except DthError as error:
        print(f"dth: error: {error}", file=sys.stderr)
        if store is not None:  # a run that could not start, recorded so that the task's status names why
            store.fail_scan(store.start_run(task_name), str(error))
        return EXIT_ERROR
    if output == "json":
        print(json.dumps(as_json(result), ensure_ascii=False))
    else:
        print_text(result)
    if result.error:
        print(f"dth: error: {result.error}", file=sys.stderr)
    return exit_code(result)


def sync_command(args: argparse.Namespace) -> int:
    spec = spec_from_arguments(args)
    name = f"image-{spec.source.host()}-{spec.destination.host()}{spec.destination.prefix}"
    return execute(spec, name.replace("/", "_").replace(":", "_"), args)


def run_task(task: TransferTask, args: argparse.Namespace) -> int:
    """`dth run task.yaml` for an Image task."""
    from dth.spec.image import ImageTaskSpec

    spec = task.spec
    assert isinstance(spec, ImageTaskSpec)
    if args.dry_run:
        spec = spec.model_copy(update={"options": spec.options.model_copy(update={"dry_run": True})})
    return execute(spec, f"{task.metadata.namespace}-{task.metadata.name}", args, task.metadata.namespace)


# --------------------------------------------------------------------------------------------------
# container entrypoint


def spec_from_environment(environ: dict[str, str] | None = None) -> tuple[ImageTaskSpec, str, str, Path | None]:
    """(spec, task name, namespace, state file) from DTH_TASK_SPEC (JSON or YAML; or DTH_TASK_SPEC_FILE),
    DTH_TASK_NAME, DTH_NAMESPACE, DTH_STATE_PATH (the SQLite file, unless DTH_TABLE_NAME names a DynamoDB
    table) and DTH_DRY_RUN."""
    import yaml

    from dth.spec.image import ImageTaskSpec

    env = dict(os.environ if environ is None else environ)
    raw = env.get("DTH_TASK_SPEC", "").strip()
    where = "DTH_TASK_SPEC"
    if not raw and env.get("DTH_TASK_SPEC_FILE"):
        where = env["DTH_TASK_SPEC_FILE"]
        try:
            raw = Path(where).read_text(encoding="utf-8")
        except OSError as error:
            raise SpecError(f"DTH_TASK_SPEC_FILE {where}: cannot read it ({error.strerror})") from None
    if not raw:
        raise SpecError("DTH_TASK_SPEC is not set (the Image task's spec, as JSON or YAML)")
    try:
        data = yaml.safe_load(raw)  # JSON is YAML
    except yaml.YAMLError as error:
        raise SpecError(f"{where} is neither JSON nor YAML: {getattr(error, 'problem', None) or error}") from None
    if isinstance(data, dict) and "spec" in data and "type" not in data:
        data = data["spec"]  # a whole TransferTask is fine too
    spec = parse_task_spec(data)
    if not isinstance(spec, ImageTaskSpec):
        raise SpecError(f"{where}: spec.type is {spec.type}, this entrypoint runs Image tasks")
    if env.get("DTH_DRY_RUN", "").strip().lower() in ("1", "true", "yes"):
        spec = spec.model_copy(update={"options": spec.options.model_copy(update={"dry_run": True})})
    name = env.get("DTH_TASK_NAME", "").strip() or "image-sync"
    namespace = env.get("DTH_NAMESPACE", "").strip() or "default"
    state = env.get("DTH_STATE_PATH", "").strip()
    return spec, name, namespace, Path(state) if state else None


def store_from_environment(environ: dict[str, str] | None = None) -> StatusStore | None:
    """The DynamoDB status store when DTH_TABLE_NAME names one (on AWS: AWS_REGION, optional
    AWS_ENDPOINT_URL); None for the SQLite default."""
    env = dict(os.environ if environ is None else environ)
    table = env.get("DTH_TABLE_NAME", "").strip()
    if not table:
        return None
    import boto3

    from dth.state.dynamodb import DynamoStatusStore

    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        raise SpecError("DTH_TABLE_NAME is set, but not AWS_REGION")
    client = boto3.client("dynamodb", region_name=region, endpoint_url=env.get("AWS_ENDPOINT_URL") or None)
    return DynamoStatusStore(client, table, close_client=True)


def env_command(args: argparse.Namespace) -> int:
    spec, name, namespace, state = spec_from_environment()
    store = store_from_environment()
    started = time.monotonic()
    run_args = argparse.Namespace(output="json", state=state, no_progress=True)
    try:
        code = execute(spec, name, run_args, namespace, store)
    finally:
        if store is not None:
            store.close()
    print(f"dth image sync-env: exit {code} after {time.monotonic() - started:.1f} s", file=sys.stderr)
    return code
