"""`dth s3 sync` and `dth run`: flags and manifests become the same spec model, run by the same engine."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dth.cli.interrupt import EXIT_INTERRUPTED, first_interrupt_stops
from dth.errors import DthError, SpecError
from dth.spec.load import load_manifest, parse_s3_task_spec
from dth.spec.model import (
    CannedAcl,
    CompareMode,
    S3TaskSpec,
    SseMode,
    StorageClass,
    StorageProvider,
)
from dth.state.store import DEFAULT_KEEP_RUNS

if TYPE_CHECKING:
    from dth.s3.sync import SyncResult

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_ERROR = 2

SYNC_EXAMPLES = """\
examples:
  # Copy what differs between two AWS buckets; a path after the bucket is a folder.
  dth s3 sync s3://my-logs/app s3://my-logs-copy/app --region eu-west-1

  # From Aliyun OSS (keys in profile "aliyun") to S3 in China (profile "china").
  dth s3 sync s3://oss-bucket s3://s3-bucket --source-type Aliyun_OSS --source-region cn-hangzhou \\
      --source-profile aliyun --dest-region cn-north-1 --dest-profile china

  # Mirror, leaving temporary files out; show the plan first, then run it.
  dth s3 sync s3://raw-data/2026 s3://archive-data/2026 --delete --exclude '*.tmp' --dry-run
  dth s3 sync s3://raw-data/2026 s3://archive-data/2026 --delete --exclude '*.tmp'

  # An S3-compatible server (MinIO, Ceph); the report as JSON for scripts.
  dth s3 sync s3://src s3://dst --endpoint http://127.0.0.1:9000 --output json

Exit codes: 0 every object copied or already there; 1 some objects failed (listed); 2 bad input or an
unusable bucket, endpoint or credential; 130 stopped with Ctrl-C (run it again to finish).
"""


def parse_s3_uri(uri: str, role: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"): a path names a folder, as in aws s3 sync."""
    if not uri.startswith("s3://"):
        raise SpecError(f"{role} {uri!r} is not an S3 URI (expected s3://bucket[/prefix])")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise SpecError(f"{role} {uri!r} names no bucket")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="s3://bucket[/prefix]")
    parser.add_argument("destination", help="s3://bucket[/prefix]")
    where = parser.add_argument_group("where")
    where.add_argument("--endpoint", help="endpoint URL for both sides (S3-compatible services)")
    where.add_argument("--source-endpoint", help="endpoint URL of the source")
    where.add_argument("--dest-endpoint", help="endpoint URL of the destination")
    where.add_argument("--region", help="region of both sides")
    where.add_argument("--source-region")
    where.add_argument("--dest-region")
    providers = [p.value for p in StorageProvider]
    where.add_argument("--source-type", choices=providers, help="source service (default Amazon_S3)")
    where.add_argument("--dest-type", choices=providers, help="destination service (default Amazon_S3)")
    who = parser.add_argument_group("credentials (default: the environment, as boto3 finds it)")
    who.add_argument("--profile", help="AWS profile for both sides")
    who.add_argument("--source-profile")
    who.add_argument("--dest-profile")
    what = parser.add_argument_group("what to copy")
    what.add_argument("--compare", choices=[m.value for m in CompareMode], help="default size-etag")
    what.add_argument("--include", action="append", default=[], metavar="GLOB")
    what.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    what.add_argument("--delete", action="store_true", help="mirror: delete destination keys not in the source")
    what.add_argument("--prefix-list-file", help="copy only these prefixes (local file or s3://)")
    what.add_argument("--requester-pays", action="store_true")
    how = parser.add_argument_group("how to write")
    how.add_argument("--no-metadata", action="store_true", help="do not copy content headers and user metadata")
    how.add_argument("--copy-tags", action="store_true")
    how.add_argument("--storage-class", choices=[c.value for c in StorageClass])
    how.add_argument("--acl", choices=[a.value for a in CannedAcl])
    how.add_argument("--sse", choices=[s.value for s in SseMode])
    how.add_argument("--sse-kms-key-id")
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument("--multipart-threshold", help="e.g. 32MiB")
    tuning.add_argument("--chunk-size", help="e.g. 8MiB")
    tuning.add_argument("--giant-file-threshold", help="objects above this are copied part by part by all workers")
    tuning.add_argument("--max-retries", type=int)
    tuning.add_argument("--workers", type=int, help="objects in flight")
    tuning.add_argument("--concurrency", type=int, help="multipart parts in flight")
    tuning.add_argument("--list-depth", type=int, help="prefix depth at which listings run in parallel")
    tuning.add_argument(
        "--abort-stale-uploads",
        action="store_true",
        help="abort the multipart uploads an earlier run of this sync left unfinished instead of resuming them",
    )
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print the plan, copy nothing")
    parser.add_argument("--output", choices=["text", "json"], default="text")
    parser.add_argument("--state", type=Path, help="SQLite file for the queue and status (default: per task)")
    parser.add_argument(
        "--keep-runs",
        type=_positive,
        default=os.environ.get("DTH_KEEP_RUNS") or str(DEFAULT_KEEP_RUNS),  # argparse converts string defaults
        metavar="N",
        help=f"runs of the task the state file keeps (default {DEFAULT_KEEP_RUNS}, or $DTH_KEEP_RUNS)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _side(
    args: argparse.Namespace, role: str, uri: str, endpoint: str | None, region: str | None, provider: str | None
) -> dict[str, Any]:
    bucket, prefix = parse_s3_uri(uri, role)
    side: dict[str, Any] = {"bucket": bucket, "prefix": prefix}
    if endpoint:
        side["endpoint"] = endpoint
    if region:
        side["region"] = region
    if provider:
        side["type"] = provider
    elif endpoint:
        side["type"] = StorageProvider.S3_COMPATIBLE.value
    profile = getattr(args, f"{'source' if role == 'source' else 'dest'}_profile") or args.profile
    if profile:
        side["credentials"] = {"profile": profile}
    return side


def spec_from_arguments(args: argparse.Namespace) -> S3TaskSpec:
    source = _side(
        args,
        "source",
        args.source,
        args.source_endpoint or args.endpoint,
        args.source_region or args.region,
        args.source_type,
    )
    destination = _side(
        args,
        "destination",
        args.destination,
        args.dest_endpoint or args.endpoint,
        args.dest_region or args.region,
        args.dest_type,
    )
    if args.requester_pays:
        source["requesterPays"] = True
    if args.prefix_list_file:
        source["prefixListFile"] = args.prefix_list_file
    for flag, field in (
        ("storage_class", "storageClass"),
        ("acl", "acl"),
        ("sse", "sse"),
        ("sse_kms_key_id", "kmsKeyId"),
    ):
        if getattr(args, flag):
            destination[field] = getattr(args, flag)
    options: dict[str, Any] = {
        "include": args.include,
        "exclude": args.exclude,
        "deleteExtraneous": args.delete,
        "copyMetadata": not args.no_metadata,
        "copyTags": args.copy_tags,
        "dryRun": args.dry_run,
        "abortStaleUploads": args.abort_stale_uploads,
    }
    for flag, field in (
        ("compare", "compare"),
        ("multipart_threshold", "multipartThreshold"),
        ("chunk_size", "chunkSize"),
        ("giant_file_threshold", "giantFileThreshold"),
        ("max_retries", "maxRetries"),
        ("workers", "workers"),
        ("concurrency", "concurrency"),
        ("list_depth", "listDepth"),
    ):
        if getattr(args, flag) is not None:
            options[field] = getattr(args, flag)
    return parse_s3_task_spec({"type": "S3", "source": source, "destination": destination, "options": options})


def execute(spec: S3TaskSpec, task_name: str, args: argparse.Namespace, namespace: str = "default") -> int:
    # The engine and the report load here, when a sync runs: `dth`'s parser needs neither.
    from dth.cli.report import print_change, progress_display
    from dth.s3.sync import StandaloneSync

    show_bar = args.output == "text" and not args.no_progress and sys.stderr.isatty() and not spec.options.dry_run
    display = progress_display() if show_bar else None
    sync = StandaloneSync(
        spec,
        task_name=task_name,
        state_path=args.state,
        keep_runs=getattr(args, "keep_runs", DEFAULT_KEEP_RUNS),  # the demo builds its own arguments
        namespace=namespace,
        on_progress=display.update if display else None,
        on_change=print_change if spec.options.dry_run and args.output == "text" else None,
    )
    try:
        with first_interrupt_stops(sync.interrupt, "aborting uploads in flight, no new copies"):
            if display:
                with display:
                    result = sync.run()
            else:
                result = sync.run()
    except DthError as error:
        print(f"dth: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return report(result, args.output)


def report(result: SyncResult, output: str) -> int:
    from dth.cli.report import print_json, print_text

    if output == "json":
        print_json(result)
    else:
        print_text(result)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.dry_run:
        return EXIT_OK
    return EXIT_OK if result.accounted else EXIT_INCOMPLETE


def sync_command(args: argparse.Namespace) -> int:
    spec = spec_from_arguments(args)
    name = f"sync-{spec.source.bucket}-{spec.destination.bucket}"
    return execute(spec, name, args)


def run_command(args: argparse.Namespace) -> int:
    task = load_manifest(args.manifest)
    spec = task.spec
    if not isinstance(spec, S3TaskSpec):  # an Image task: the image engine
        from dth.cli.image import run_task

        return run_task(task, args)
    if args.dry_run:
        spec = spec.model_copy(update={"options": spec.options.model_copy(update={"dry_run": True})})
    return execute(spec, f"{task.metadata.namespace}-{task.metadata.name}", args, task.metadata.namespace)
