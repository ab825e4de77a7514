"""The `dth` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dth import __version__, logs
from dth.cli import image_flags, s3
from dth.errors import DthError


def _crd(_: argparse.Namespace) -> int:
    from dth.spec.crd import render_crd

    sys.stdout.write(render_crd())
    return 0


def _validate(args: argparse.Namespace) -> int:
    from dth.spec.load import load_manifest

    task = load_manifest(args.manifest)
    print(f"{args.manifest}: valid {task.spec.type} TransferTask {task.metadata.namespace}/{task.metadata.name}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from dth.cli.demo import run_demo

    return run_demo(objects=args.objects, server=args.server)


def _finder(_: argparse.Namespace) -> int:
    from dth.s3.entrypoints import EngineEnvironment, run_finder

    return run_finder(EngineEnvironment.from_environment())


def _worker(args: argparse.Namespace) -> int:
    from dth.s3.entrypoints import EngineEnvironment, run_worker

    return run_worker(EngineEnvironment.from_environment(), exit_when_idle=args.exit_when_idle)


def _add_ecs_runner_arguments(parser: argparse.ArgumentParser) -> None:
    from dth.devtools.ecs_runner_flags import add_arguments

    add_arguments(parser)


def _ecs_runner(args: argparse.Namespace) -> int:
    from dth.devtools.ecs_runner import run_command

    return run_command(args)


def _add_console_arguments(parser: argparse.ArgumentParser) -> None:
    from dth.console.serve import add_arguments

    add_arguments(parser)


def _console(args: argparse.Namespace) -> int:
    from dth.console.serve import run  # starlette and uvicorn are imported only here

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dth", description="Data Transfer Hub: move object storage and images.")
    parser.add_argument("--version", action="version", version=f"dth {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("DTH_LOG_FORMAT"),
        help="default: text, json for the container entrypoints (or $DTH_LOG_FORMAT)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s3_parser = commands.add_parser("s3", help="S3 transfers")
    s3_commands = s3_parser.add_subparsers(dest="s3_command", required=True, metavar="COMMAND")
    sync = s3_commands.add_parser(
        "sync",
        help="copy what differs from one bucket/prefix to another",
        description="Copy every object of SOURCE that DESTINATION lacks or holds in another version, verified "
        "(Content-MD5, ETags), on the embedded default: one SQLite file per task under $DTH_STATE_DIR.",
        epilog=s3.SYNC_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s3.add_sync_arguments(sync)
    sync.set_defaults(handler=s3.sync_command)

    finder = s3_commands.add_parser("finder", help="container entrypoint: one scan, config from DTH_* variables")
    finder.set_defaults(handler=_finder, log_format_default="json")
    worker = s3_commands.add_parser("worker", help="container entrypoint: work the queue until SIGTERM")
    worker.add_argument("--exit-when-idle", type=float, metavar="SECONDS", help="also stop once idle this long")
    worker.set_defaults(handler=_worker, log_format_default="json")

    image_flags.register(commands)

    run = commands.add_parser("run", help="run a TransferTask manifest locally on the embedded default")
    run.add_argument("manifest", type=Path)
    s3.add_run_arguments(run)
    run.set_defaults(handler=s3.run_command)

    validate = commands.add_parser("validate", help="check a TransferTask manifest")
    validate.add_argument("manifest", type=Path)
    validate.set_defaults(handler=_validate)

    crd = commands.add_parser("crd", help="print the TransferTask CustomResourceDefinition")
    crd.set_defaults(handler=_crd)

    dev = commands.add_parser("dev", help="development tools")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    ecs_runner = dev_commands.add_parser(
        "ecs-runner", help="run moto's ECS services, RunTask tasks and EventBridge ECS targets as local processes"
    )
    _add_ecs_runner_arguments(ecs_runner)
    ecs_runner.set_defaults(handler=_ecs_runner)

    console = commands.add_parser(
        "console", help="serve the web console (local mode with --kubeconfig, else in-cluster with OIDC)"
    )
    _add_console_arguments(console)
    console.set_defaults(handler=_console)

    demo = commands.add_parser("demo", help="start a local S3 server, fill a bucket and sync it")
    demo.add_argument("--objects", type=int, default=300)
    demo.add_argument("--server", choices=["moto", "radosgw"], default="moto")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Container entrypoints log their progress; interactive commands only what needs attention.
    quiet_level = logging.INFO if getattr(args, "log_format_default", None) else logging.WARNING
    level = {0: quiet_level, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    log_format = args.log_format or getattr(args, "log_format_default", "text")
    logs.configure(level, json_lines=log_format == "json")
    try:
        code: int = args.handler(args)
    except DthError as error:
        print(f"dth: error: {error}", file=sys.stderr)
        return s3.EXIT_ERROR
    except KeyboardInterrupt:
        print("dth: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
